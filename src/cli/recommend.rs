//! `lookd recommend`: rank one category of the cache for a photo.

use std::path::PathBuf;

use anyhow::Context;
use lookd::cache::ProductCache;
use lookd::model::SceneModel;
use lookd::preprocess;
use lookd::recommend::recommend;

use super::{code, ModelArg, UserError};

#[derive(clap::Args)]
pub struct Args {
    /// Photo of the shopper (JPEG or PNG)
    #[arg(long)]
    scene: PathBuf,
    /// Category: full path, its last part ("shoes"), its slug ("coats-jackets", as in the MQTT topics), or a unique prefix
    #[arg(long)]
    category: String,
    /// How many products to list
    #[arg(long, default_value_t = 10)]
    top: usize,
    #[command(flatten)]
    rank: super::RankArgs,
    #[command(flatten)]
    model: ModelArg,
    /// Product cache built by `lookd catalog build`
    #[arg(long, default_value = "out/catalog.cache")]
    cache: PathBuf,
    /// Print JSON instead of a table
    #[arg(long)]
    json: bool,
}

#[derive(serde::Serialize)]
struct Output<'a> {
    model: String,
    trained: bool,
    scene: String,
    category: &'a str,
    items: Vec<lookd::recommend::Recommendation>,
}

pub fn run(a: Args) -> anyhow::Result<i32> {
    let folder = a.model.open()?;
    let cache = ProductCache::open(&a.cache, Some(&folder.product_fingerprint()))?;
    let category = cache.find_category(&a.category).map_err(UserError)?;
    // Out of stock by the catalog's own `available` column: never recommended.
    let (in_stock, _) = lookd::stock::Stock::default().mask(cache.products());
    let bytes = std::fs::read(&a.scene).with_context(|| format!("reading scene {}", a.scene.display()))?;
    let img =
        preprocess::decode(&bytes).map_err(|e| UserError(format!("scene {}: {e}", a.scene.display())))?;
    let input = &folder.manifest.input;
    let mut pixels = Vec::new();
    preprocess::to_model_input(&img, None, input.width, input.height, &mut pixels)
        .map_err(|e| UserError(e.to_string()))?;
    let scene = SceneModel::load(&folder).context("loading the scene graph")?.embed(&pixels)?;
    let items = recommend(
        &scene,
        &cache,
        folder.category_keys(),
        category,
        &a.rank.ranking(a.top, &folder),
        Some(&in_stock),
    )
    .map_err(|e| UserError(e.to_string()))?;
    let m = &folder.manifest;
    if a.json {
        let out = Output {
            model: m.model_id(),
            trained: m.trained,
            scene: a.scene.display().to_string(),
            category: &category.path,
            items,
        };
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(code::OK);
    }
    if !m.trained {
        println!("note: model {} has untrained heads: it ranks with ImageNet features only", m.model_id());
    }
    println!("{} -> {} ({} products)", a.scene.display(), category.path, category.len);
    println!("{:>4}  {:>8}  {:>8}  {:>8}  id", "rank", "distance", "global", "local");
    for r in &items {
        let label = r
            .fields
            .get("title")
            .or_else(|| r.fields.get("label"))
            .map(|l| format!("  {l}"))
            .unwrap_or_default();
        println!("{:>4}  {:>8.4}  {:>8.4}  {:>8.4}  {}{label}", r.rank, r.distance, r.global, r.local, r.id);
    }
    Ok(code::OK)
}
