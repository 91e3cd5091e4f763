//! Command-line surface: the argument types, dispatch, and the exit-code policy.
//!
//! Each command is one file with the same shape: an `Args` struct and a `run` returning
//! `anyhow::Result<i32>`. Only this binary uses `anyhow`; the library has typed errors.

mod bench;
mod camera;
mod catalog;
mod config;
mod eval;
mod model;
mod recommend;
mod report;
mod run;
mod watch;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

/// Exit codes (sysexits.h): distinct for bad input, a missing file, and an internal failure.
pub mod code {
    pub const OK: i32 = 0;
    /// A check ran and failed (e.g. `model check` over tolerance).
    pub const CHECK_FAILED: i32 = 1;
    pub const DATA_ERR: i32 = 65;
    pub const NO_INPUT: i32 = 66;
    pub const SOFTWARE: i32 = 70;
    /// The configuration is unusable: systemd's RestartPreventExitStatus keeps it from looping.
    pub const CONFIG: i32 = 78;
}

#[derive(Parser)]
#[command(
    name = "lookd",
    version,
    about = "Smart-mirror stylist: ranks the products that complete a shopper's look"
)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Embed the store's catalog into the product cache
    #[command(subcommand)]
    Catalog(catalog::Command),
    /// Rank one category's products for a photo of a shopper
    Recommend(recommend::Args),
    /// Run the evaluation protocol (FITB-4, AUC) on a Shop-the-Look-layout folder
    Eval(eval::Args),
    /// Time the daemon's per-frame path stage by stage on a folder of photos
    Bench(bench::Args),
    /// Render what the mirror would show for a list of scenes: an HTML page and PNG contact sheets
    Report(report::Args),
    /// Inspect and check a model folder
    #[command(subcommand)]
    Model(model::Command),
    /// Print or check the daemon's configuration
    #[command(subcommand)]
    Config(config::Command),
    /// Run the daemon: camera in, recommendations out over MQTT
    Run(run::Args),
    /// Print what a running lookd publishes
    Watch(watch::Args),
    /// Check a V4L2 camera through lookd's capture path
    #[command(subcommand)]
    Camera(camera::Command),
}

impl Args {
    /// Whether this invocation is the long-running daemon (`lookd run`).
    pub fn is_daemon(&self) -> bool {
        matches!(self.command, Command::Run(_))
    }
}

/// Where the model folder is looked for when `--model` is not given.
#[derive(clap::Args, Debug, Clone)]
pub struct ModelArg {
    /// Model folder (manifest.toml + ONNX graphs)
    #[arg(long, env = "LOOKD_MODEL", default_value = "models/default")]
    pub model: PathBuf,
    /// Threads for the graphs' matrix products
    #[arg(long, env = "LOOKD_THREADS", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub threads: u16,
}

impl ModelArg {
    /// Sets the inference thread count and opens the model folder.
    pub fn open(&self) -> anyhow::Result<lookd::model::ModelFolder> {
        lookd::model::set_threads(self.threads as usize);
        lookd::model::ModelFolder::open(&self.model).context("loading the model")
    }
}

/// The cache, opened; or built first (progress logged and passed to `also`) when it is missing
/// or was made by another model.
/// Whether `name` finds a category of `catalog` as `lookd run` looks one up in its cache (full
/// path, last part, slug or unique prefix); the error names the catalog's categories.
pub fn category_in_catalog(catalog: &lookd::catalog::Catalog, name: &str) -> Result<(), String> {
    let mut paths: Vec<&str> = catalog.entries.iter().map(|e| e.category.as_str()).collect();
    paths.sort_unstable();
    paths.dedup();
    let blocks: Vec<lookd::cache::CategoryBlock> =
        paths.iter().map(|p| lookd::cache::CategoryBlock { path: p.to_string(), start: 0, len: 1 }).collect();
    lookd::cache::find_category(&blocks, name)
        .map(drop)
        .map_err(|m| m.replace("the cache has", "the catalog has"))
}

/// The cache at `cache` if it opens for `folder`'s model (said in the log when its catalog CSV is
/// gone); None when it is missing, or refused (said in the log): the caller builds it.
pub fn open_cache(
    cache: &std::path::Path,
    catalog: &std::path::Path,
    folder: &lookd::model::ModelFolder,
) -> Option<lookd::cache::ProductCache> {
    use lookd::cache::{CacheError, ProductCache};
    match ProductCache::open(cache, Some(&folder.product_fingerprint())) {
        Ok(c) => {
            if !catalog.exists() {
                log::warn!(
                    "the catalog {} does not exist: serving the {} products of {} as they are (a new catalog needs the file)",
                    catalog.display(),
                    c.len(),
                    cache.display()
                );
            }
            Some(c)
        }
        Err(CacheError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            log::warn!("{e}; building it again");
            None
        }
    }
}

pub fn open_or_build_cache(
    cache: &std::path::Path,
    catalog: &std::path::Path,
    images: Option<&std::path::Path>,
    folder: &lookd::model::ModelFolder,
    also: &mut dyn FnMut(usize, usize),
) -> anyhow::Result<lookd::cache::ProductCache> {
    use lookd::cache::build::{build, BuildPlan};
    use lookd::cache::ProductCache;
    if let Some(c) = open_cache(cache, catalog, folder) {
        return Ok(c);
    }
    if !cache.exists() {
        log::info!("no product cache at {}: building it", cache.display());
    }
    let plan = BuildPlan {
        folder,
        catalog,
        images,
        out: cache,
        batch: 1,
        checkpoint_every: lookd::cache::build::CHECKPOINT_EVERY,
    };
    let mut log_progress = progress("building the product cache");
    let report = build(&plan, &mut |done, total| {
        log_progress(done, total);
        also(done, total);
    })
    .context("building the product cache")?;
    log::info!("product cache: {} embedded, {} rows skipped", report.embedded, report.skipped.len());
    Ok(ProductCache::open(cache, Some(&folder.product_fingerprint()))?)
}

/// How `recommend`, `report` and `bench` rank, as `[pipeline] diversity`, `correct-hubs` and
/// `cap-exposure` do for the daemon (docs/variety.md).
#[derive(clap::Args)]
pub struct RankArgs {
    /// Variety re-rank of the head of each ranking (0 keeps the distance order; see `[pipeline] diversity`)
    #[arg(long, default_value_t = lookd::rank::DEFAULT_DIVERSITY, value_parser = diversity)]
    pub diversity: f32,
    /// Rank without the hubness correction of a model that has a mean scene
    /// (`[pipeline] correct-hubs = false`)
    #[arg(long)]
    pub no_hub_correction: bool,
    /// Rank without the exposure offsets of a cache built for a model with reference scenes
    /// (`[pipeline] cap-exposure = false`)
    #[arg(long)]
    pub no_exposure_cap: bool,
}

impl RankArgs {
    pub fn ranking<'a>(
        &self,
        top: usize,
        folder: &'a lookd::model::ModelFolder,
    ) -> lookd::recommend::Ranking<'a> {
        let mean_scene = if self.no_hub_correction { None } else { folder.mean_scene() };
        let exposure = !self.no_exposure_cap;
        lookd::recommend::Ranking { top, diversity: self.diversity, mean_scene, exposure }
    }
}

/// `--diversity` and `--variety`: a variety re-rank setting, at least 0 and under 1.
pub fn diversity(s: &str) -> Result<f32, String> {
    let v: f32 = s.trim().parse().map_err(|_| format!("{s:?} is not a number"))?;
    if lookd::rank::DIVERSITY.contains(&v) {
        Ok(v)
    } else {
        Err(format!("{v} must be at least 0 and under 1"))
    }
}

/// The nearest-rank `q` quantile of ascending, non-empty `sorted`.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

pub fn run(args: Args) -> anyhow::Result<i32> {
    match args.command {
        Command::Catalog(c) => catalog::run(c),
        Command::Recommend(a) => recommend::run(a),
        Command::Eval(a) => eval::run(a),
        Command::Bench(a) => bench::run(a),
        Command::Report(a) => report::run(a),
        Command::Model(c) => model::run(c),
        Command::Config(c) => config::run(c),
        Command::Run(a) => run::run(a),
        Command::Watch(a) => watch::run(a),
        Command::Camera(c) => camera::run(c),
    }
}

/// The error and its causes, each said once: a cause whose text the message already holds (our
/// errors name their OS error, and anyhow would print it again as the cause) is not repeated.
pub fn error_text(err: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in err.chain() {
        let c = cause.to_string();
        if !text.contains(&c) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&c);
        }
    }
    text
}

/// Bad input (a file we could read but not use) is 65, a missing file 66, anything else 70.
pub fn exit_code(err: &anyhow::Error) -> i32 {
    use lookd::cache::CacheError;
    use lookd::model::ModelError;
    for cause in err.chain() {
        if cause.downcast_ref::<lookd::config::ConfigError>().is_some() {
            return code::CONFIG;
        }
        if let Some(e) = cause.downcast_ref::<std::io::Error>() {
            return if e.kind() == std::io::ErrorKind::NotFound { code::NO_INPUT } else { code::DATA_ERR };
        }
        match cause.downcast_ref::<ModelError>() {
            Some(ModelError::Run(_)) => return code::SOFTWARE,
            Some(ModelError::Read { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                return code::NO_INPUT
            }
            Some(_) => return code::DATA_ERR,
            None => {}
        }
        match cause.downcast_ref::<CacheError>() {
            Some(CacheError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                return code::NO_INPUT
            }
            Some(CacheError::Write { .. }) => return code::SOFTWARE,
            Some(CacheError::Model(ModelError::Run(_))) => return code::SOFTWARE,
            Some(_) => return code::DATA_ERR,
            None => {}
        }
        if cause.downcast_ref::<UserError>().is_some() {
            return code::DATA_ERR;
        }
    }
    code::SOFTWARE
}

/// A problem with what the user asked for (an unknown category, an undecodable photo).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UserError(pub String);

/// A progress bar on a terminal; elsewhere a log line every tenth of the way.
pub fn progress(what: &'static str) -> impl FnMut(usize, usize) {
    use std::io::IsTerminal;
    let bar = indicatif::ProgressBar::new(0);
    let tty = std::io::stderr().is_terminal();
    if tty {
        bar.set_style(
            indicatif::ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} {per_sec} ETA {eta}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar.set_message(what);
    } else {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let mut last_tenth = usize::MAX;
    move |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
        let tenth = (done * 10).checked_div(total).unwrap_or(10);
        if !tty && tenth != last_tenth {
            last_tenth = tenth;
            let eta = bar.eta().as_secs();
            log::info!("{what}: {done}/{total} ({}%), ETA {eta} s", tenth * 10);
        }
        if done == total {
            bar.finish_and_clear();
        }
    }
}
