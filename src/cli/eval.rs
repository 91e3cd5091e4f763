//! `lookd eval`: the evaluation protocol on a Shop-the-Look-layout folder, through tract.

use std::path::PathBuf;

use anyhow::Context;
use lookd::cache::ProductCache;
use lookd::dataset::{Dataset, Split};
use lookd::eval::{self, Checks};

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
    /// Skip the photometric check (every candidate's colour temperature, brightness and
    /// contrast changed, seeded by --seed), which doubles the product embeddings
    #[arg(long)]
    no_photometric: bool,
    /// Also run the catalog check against this product cache (`lookd catalog build` from a
    /// catalog CSV with a `label` column, with the same model)
    #[arg(long, value_name = "CACHE")]
    catalog_cache: Option<PathBuf>,
    /// With --catalog-cache: the variety check at these diversity settings (comma-separated,
    /// each 0 to under 1): every scene of the split ranked whole against each catalog category,
    /// top 10; intra-list similarity, distinct first picks, the most listed product's share
    #[arg(long, value_delimiter = ',', requires = "catalog_cache", value_parser = super::diversity)]
    variety: Vec<f32>,
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
    let cache = a
        .catalog_cache
        .as_ref()
        .map(|path| ProductCache::open(path, Some(&folder.product_fingerprint())))
        .transpose()?;
    let variety = (!a.variety.is_empty()).then_some(a.variety.as_slice());
    let checks = Checks { photometric: !a.no_photometric, catalog: cache.as_ref(), variety };
    let r = eval::run(&data, &folder, a.seed, a.limit, checks, &mut progress("evaluating"))
        .context("evaluating")?;
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
    let photo = r.photometric.unwrap_or_default();
    println!("95% intervals: {} resamples of the scenes (bootstrap)", eval::BOOTSTRAP_RESAMPLES);
    println!("{:<12} {:>21} {:>21} {:>21} {:>21}", "distance", "FITB-4", "AUC", "photo FITB-4", "photo AUC");
    let with_ci = |v: f64, ci: [f64; 2]| format!("{v:.3} [{:.3}, {:.3}]", ci[0], ci[1]);
    for (name, m, p) in [
        ("hybrid", r.hybrid, photo.hybrid),
        ("global only", r.global_only, photo.global_only),
        ("local only", r.local_only, photo.local_only),
    ] {
        let (pf, pa) = match r.photometric {
            Some(_) => (with_ci(p.fitb4, p.fitb4_ci), with_ci(p.auc, p.auc_ci)),
            None => ("-".into(), "-".into()),
        };
        println!(
            "{name:<12} {:>21} {:>21} {pf:>21} {pa:>21}",
            with_ci(m.fitb4, m.fitb4_ci),
            with_ci(m.auc, m.auc_ci)
        );
    }
    if let Some(c) = &r.catalog {
        println!(
            "\ncatalog check ({} products, {} scenes): median rank of the first right-label product {:.1}, random {:.1}; better than random in {:.1}%",
            c.catalog_products,
            c.trials,
            c.median_rank,
            c.random_median_rank,
            100.0 * c.better_than_random
        );
        for (label, (n, model, random)) in &c.per_label {
            println!("  {label:<12} {n:>4} scenes  median rank {model:>7.1}  random {random:>7.1}");
        }
    }
    for v in r.variety.iter().flatten() {
        println!(
            "\nvariety at diversity {}, {}{} ({} scenes whole, top {}): intra-list similarity {:.3}, distinct first picks {}, most listed product in {:.1}% of lists (categories' mean {:.1}%)",
            v.diversity,
            match (v.hub_correction, v.exposure) {
                (true, true) => "hub-corrected, exposure capped",
                (false, true) => "by distance, exposure capped",
                (true, false) => "hub-corrected",
                (false, false) => "by distance",
            },
            match v.max_share {
                Some(s) => format!(", share capped at {:.0}% (the daemon's default)", 100.0 * s),
                None => String::new(),
            },
            v.per_category.values().map(|c| c.scenes).max().unwrap_or(0),
            eval::VARIETY_TOP,
            v.intra_list_similarity,
            v.distinct_first,
            100.0 * v.most_frequent_share,
            100.0 * v.mean_most_frequent_share
        );
        for (c, m) in &v.per_category {
            println!(
                "  {c:<28} similarity {:.3}  first picks {:>4}  listed {:>4}  most listed {:>5.1}%  (random lists {:>5.1}%)",
                m.intra_list_similarity,
                m.distinct_first,
                m.distinct_listed,
                100.0 * m.most_frequent_share,
                100.0 * m.chance_share
            );
            if v.max_share.is_some() {
                println!(
                    "  {:<28} places given to another product {:.1}%, scenes the daemon would take for the last shopper {}",
                    "",
                    100.0 * m.replaced,
                    m.merged
                );
            }
        }
    }
    println!("\nhybrid by category:\n{:<28} {:>6} {:>21} {:>21}", "category", "pairs", "FITB-4", "AUC");
    for (c, m) in &r.per_category {
        println!(
            "{c:<28} {:>6} {:>21} {:>21}",
            m.pairs,
            with_ci(m.fitb4, m.fitb4_ci),
            with_ci(m.auc, m.auc_ci)
        );
    }
    Ok(code::OK)
}
