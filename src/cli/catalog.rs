//! `lookd catalog build`: embed a catalog CSV into the product cache.

use std::path::PathBuf;

use anyhow::Context;
use lookd::cache::build::{build, BuildPlan};

use super::{code, progress, ModelArg};

#[derive(clap::Subcommand)]
pub enum Command {
    /// Embed every product image (incrementally) into one cache file
    Build(BuildArgs),
    /// Print the fleet message that hands a built cache to every mirror (publish it retained)
    Announce(AnnounceArgs),
}

#[derive(clap::Args)]
pub struct AnnounceArgs {
    /// The cache file, as built by `lookd catalog build`
    #[arg(long)]
    cache: PathBuf,
    /// Where the mirrors fetch it: http(s)://... or file:/absolute/path
    #[arg(long)]
    url: String,
    /// The chain's name for this catalog (default: the first 12 hex digits of its sha256)
    #[arg(long)]
    version: Option<String>,
    /// A new model for the mirrors, as packed by `lookd model pack`: the cache must have been
    /// built with it. Mirrors take both together, or neither
    #[arg(long, requires = "model_url")]
    model_archive: Option<PathBuf>,
    /// Where the mirrors fetch the model archive: http(s)://... or file:/absolute/path
    #[arg(long, requires = "model_archive")]
    model_url: Option<String>,
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
    let a = match cmd {
        Command::Build(a) => a,
        Command::Announce(a) => return announce(a),
    };
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
        "wrote {}: {} products ({} embedded, {} unchanged and reused, {} rows skipped) in {:.1} s; {}",
        a.out.display(),
        report.embedded + report.reused,
        report.embedded,
        report.reused,
        report.skipped.len(),
        started.elapsed().as_secs_f64(),
        match report.exposure {
            Some((scenes, pushed)) => {
                format!("exposure capped against the model's {scenes} reference scenes ({pushed} products pushed down)")
            }
            None => "exposure not capped (the model has no reference scenes)".to_string(),
        }
    );
    Ok(code::OK)
}

/// The fleet message for `a.cache`: checked as a mirror would check it (the cache opens, the URL
/// is one lookd fetches), so what is announced is what the mirrors accept.
fn announce(a: AnnounceArgs) -> anyhow::Result<i32> {
    use lookd::model::hex;
    let cache = lookd::cache::ProductCache::open(&a.cache, None)?;
    let identity =
        lookd::update::identity_of(&a.cache).with_context(|| format!("reading {}", a.cache.display()))?;
    let model = match (&a.model_archive, a.model_url) {
        (Some(archive), Some(url)) => Some(announced_model(archive, url, cache.fingerprint())?),
        _ => None,
    };
    let message = lookd::publish::payload::FleetCatalog {
        version: a.version.unwrap_or_else(|| identity.sha256[..12].to_string()),
        url: a.url,
        sha256: identity.sha256,
        fingerprint: hex(cache.fingerprint()),
        bytes: Some(std::fs::metadata(&a.cache)?.len()),
        model,
    };
    let json = serde_json::to_string(&message)?;
    lookd::publish::payload::decode_fleet(json.as_bytes()).map_err(super::UserError)?;
    println!("{json}");
    log::info!(
        "{} products of model {}; publish it retained on the fleet topic, e.g. mosquitto_pub -r -t lookd/fleet/catalog -m '<this line>'",
        cache.len(),
        cache.model_id()
    );
    Ok(code::OK)
}

/// The model half of an announcement: the archive unpacked and checked as a mirror checks it (it
/// opens, its graphs match their hashes, it passes its reference check, and the cache was built
/// with it), then described by its sha256 and size.
fn announced_model(
    archive: &std::path::Path,
    url: String,
    cache_fingerprint: &[u8; 32],
) -> anyhow::Result<lookd::publish::payload::FleetModel> {
    use lookd::model::hex;
    let dir = std::env::temp_dir().join(format!("lookd-announce-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let checked = (|| {
        lookd::archive::unpack(archive, &dir, u64::MAX)?;
        let folder = lookd::model::ModelFolder::open(&dir)?;
        if folder.product_fingerprint() != *cache_fingerprint {
            anyhow::bail!(super::UserError(format!(
                "the cache was built with another model (fingerprint {}) than {}'s ({} {}): a mirror would refuse the pair",
                &hex(cache_fingerprint)[..16],
                archive.display(),
                folder.manifest.model_id(),
                &hex(&folder.product_fingerprint())[..16]
            )));
        }
        if let Some((output, diff)) = lookd::update::beyond_tolerance(lookd::model::check_reference(&folder)?)
        {
            anyhow::bail!(super::UserError(format!(
                "{}: {output} differs from its reference output by {diff:.2e}: a mirror would refuse it",
                archive.display()
            )));
        }
        Ok(folder.manifest.model_id())
    })();
    let _ = std::fs::remove_dir_all(&dir);
    let name = checked?;
    let (sha256, bytes) =
        lookd::update::sha256_of(archive).with_context(|| format!("reading {}", archive.display()))?;
    Ok(lookd::publish::payload::FleetModel { name, url, sha256, bytes: Some(bytes) })
}
