//! The `lookd` binary: parse the command line, set up logging, run one command, and turn its
//! error into a message and a distinct exit code. Everything else lives in the library.

mod cli;

use clap::Parser;

fn main() {
    let args = cli::Args::parse();
    // `lookd model info | head` must end quietly when the reader goes away, not panic in println.
    // Not the daemon: a journald restart must give it EPIPE on stderr, never kill it.
    #[cfg(unix)]
    if !args.is_daemon() {
        // SAFETY: restores the default action for one signal before any thread is started.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
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
            eprintln!("lookd: {}", cli::error_text(&err));
            cli::exit_code(&err)
        }
    };
    std::process::exit(code);
}
