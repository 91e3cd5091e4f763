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

/// What `lookd run` refuses at start beyond the file itself: the model folder, the catalog CSV
/// (without it run would serve whatever old cache there is and never rebuild it) and the
/// configured category, looked up among the catalog's categories as run looks it up.
fn check_as_run(path: &std::path::Path, c: &Config) -> anyhow::Result<()> {
    use lookd::config::ConfigError::Invalid;
    let invalid = |key: &'static str, message: String| Invalid { path: path.to_path_buf(), key, message };
    lookd::model::ModelFolder::open(&c.model).map_err(|e| invalid("model", e.to_string()))?;
    if !c.catalog_csv.exists() {
        let message = format!(
            "{} does not exist (lookd run would serve only an existing cache and could never rebuild it)",
            c.catalog_csv.display()
        );
        return Err(invalid("catalog.csv", message).into());
    }
    let catalog =
        lookd::catalog::Catalog::read(&c.catalog_csv).map_err(|e| invalid("catalog.csv", e.to_string()))?;
    let mut paths: Vec<&str> = catalog.entries.iter().map(|e| e.category.as_str()).collect();
    paths.sort_unstable();
    paths.dedup();
    let blocks: Vec<lookd::cache::CategoryBlock> =
        paths.iter().map(|p| lookd::cache::CategoryBlock { path: p.to_string(), start: 0, len: 1 }).collect();
    lookd::cache::find_category(&blocks, &c.category)
        .map_err(|m| invalid("pipeline.category", m.replace("the cache has", "the catalog has")))?;
    Ok(())
}

pub fn run(cmd: Command) -> anyhow::Result<i32> {
    match cmd {
        Command::Default => {
            print!("{DEFAULT_TOML}");
            Ok(code::OK)
        }
        Command::Check { config } => {
            let c = Config::load(&config)?;
            check_as_run(&config, &c)?;
            println!("{}: ok (device {}, topics under {}/)", config.display(), c.device_id, c.prefix);
            Ok(code::OK)
        }
    }
}
