//! The `lookd` binary: parse the command line, set up logging, run one command, and turn its
//! error into a message and a distinct exit code. Everything else lives in the library.

mod cli;

use clap::Parser;

fn main() {
    let args = cli::Args::parse();
    // The embedded broker (rumqttd) logs every routed message as an error-level span; it stays
    // silent unless RUST_LOG names it.
    let mut filter = std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into());
    if !filter.contains("rumqttd") {
        filter.push_str(",rumqttd=off,tracing=off");
    }
    env_logger::Builder::new().parse_filters(&filter).format_timestamp(None).init();
    let code = match cli::run(args) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("lookd: {err:#}");
            cli::exit_code(&err)
        }
    };
    std::process::exit(code);
}
