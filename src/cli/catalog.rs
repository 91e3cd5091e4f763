//! `lookd catalog build`: embed a catalog CSV into the product cache.

use std::path::PathBuf;

use anyhow::Context;
use lookd::cache::build::{build, BuildPlan};

use super::{code, progress, ModelArg};

#[derive(clap::Subcommand)]
pub enum Command {
    /// Embed every product image (incrementally) into one cache file
    Build(BuildArgs),
}

#[derive(clap::Args)]
pub struct BuildArgs {
    /// Catalog CSV: id, category, image (+ any extra columns, carried through)
    #[arg(long)]
    catalog: PathBuf,
    /// Folder the CSV's image paths are relative to (default: the CSV's folder)
    #[arg(long)]
    images: Option<PathBuf>,
    #[command(flatten)]
    model: ModelArg,
    /// The cache file to write (replaced atomically)
    #[arg(long)]
    out: PathBuf,
    /// Images per product-graph call
    #[arg(long, default_value_t = 1)]
    batch: usize,
}

pub fn run(cmd: Command) -> anyhow::Result<i32> {
    let Command::Build(a) = cmd;
    let folder = a.model.open()?;
    let plan = BuildPlan {
        folder: &folder,
        catalog: &a.catalog,
        images: a.images.as_deref(),
        out: &a.out,
        batch: a.batch,
        checkpoint_every: lookd::cache::build::CHECKPOINT_EVERY,
    };
    let started = std::time::Instant::now();
    let report = build(&plan, &mut progress("embedding products")).context("building the product cache")?;
    for p in &report.skipped {
        log::warn!(
            "catalog line {}{}: skipped: {}",
            p.line,
            p.id.as_ref().map(|i| format!(" ({i})")).unwrap_or_default(),
            p.reason
        );
    }
    log::info!(
        "wrote {}: {} products ({} embedded, {} unchanged and reused, {} rows skipped) in {:.1} s",
        a.out.display(),
        report.embedded + report.reused,
        report.embedded,
        report.reused,
        report.skipped.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(code::OK)
}
