//! `lookd eval`: the evaluation protocol on a Shop-the-Look-layout folder, through tract.

use std::path::PathBuf;

use anyhow::Context;
use lookd::dataset::{Dataset, Split};
use lookd::eval;

use super::{code, progress, ModelArg};

#[derive(clap::Args)]
pub struct Args {
    /// Folder with fashion.json, fashion-cat.json, scenes/ and products/
    #[arg(long)]
    data: PathBuf,
    #[command(flatten)]
    model: ModelArg,
    /// Seed of the candidate draws
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Evaluate one split of the folder only (by scene hash; see `Split`), as if it held nothing else
    #[arg(long, value_enum, default_value_t = Split::All)]
    split: Split,
    /// Score only the first N trials (the draws stay those of the full run)
    #[arg(long)]
    limit: Option<usize>,
    /// Print JSON instead of a table
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> anyhow::Result<i32> {
    let folder = a.model.open()?;
    let data = Dataset::open(&a.data)?.restrict(a.split);
    for (line, why) in &data.problems {
        log::warn!("{}/fashion.json line {line}: skipped: {why}", a.data.display());
    }
    let r = eval::run(&data, &folder, a.seed, a.limit, &mut progress("evaluating")).context("evaluating")?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(code::OK);
    }
    println!(
        "eval {} ({:?} split) with {} (seed {})",
        a.data.display(),
        a.split,
        folder.manifest.model_id(),
        a.seed
    );
    println!(
        "pairs: {} in file, {} used (dropped: {} query under 10%, {} with under 3 candidates, {} unreadable)",
        r.pairs_in_file, r.pairs_used, r.dropped_small_query, r.dropped_few_candidates, r.dropped_unreadable
    );
    println!("{:<12} {:>7} {:>7}", "distance", "FITB-4", "AUC");
    for (name, m) in [("hybrid", r.hybrid), ("global only", r.global_only), ("local only", r.local_only)] {
        println!("{name:<12} {:>7.4} {:>7.4}", m.fitb4, m.auc);
    }
    println!("\nhybrid by category:\n{:<28} {:>6} {:>7} {:>7}", "category", "pairs", "FITB-4", "AUC");
    for (c, m) in &r.per_category {
        println!("{c:<28} {:>6} {:>7.4} {:>7.4}", m.pairs, m.fitb4, m.auc);
    }
    Ok(code::OK)
}
