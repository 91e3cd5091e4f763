//! The `lookd` binary: parse the command line, set up logging, run one command, and turn its
//! error into a message and a distinct exit code. Everything else lives in the library.

mod cli;

use clap::Parser;

fn main() {
    let args = cli::Args::parse();
    env_logger::Builder::from_env(
        env_logger::Env::default().default_filter_or("info,rumqttd=off,tracing=off"),
    )
    .format_timestamp(None)
    .init();
    let code = match cli::run(args) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("lookd: {err:#}");
            cli::exit_code(&err)
        }
    };
    std::process::exit(code);
}
