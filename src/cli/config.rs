//! `lookd config default|check`: print the annotated default, or validate a file.

use std::path::PathBuf;

use lookd::config::{Config, DEFAULT_TOML};

use super::code;

#[derive(clap::Subcommand)]
pub enum Command {
    /// Print the default configuration, every key documented
    Default,
    /// Validate a configuration file (exit 78 when it is bad)
    Check {
        #[arg(long, default_value = "/etc/lookd/lookd.toml")]
        config: PathBuf,
    },
}

pub fn run(cmd: Command) -> anyhow::Result<i32> {
    match cmd {
        Command::Default => {
            print!("{DEFAULT_TOML}");
            Ok(code::OK)
        }
        Command::Check { config } => {
            let c = Config::load(&config)?;
            println!("{}: ok (device {}, topics under {}/)", config.display(), c.device_id, c.prefix);
            Ok(code::OK)
        }
    }
}
