//! `lookd bench`: the daemon's per-frame path, stage by stage, on real photos.
//!
//! The photos are read into memory first (disk is not a stage); then each frame is decoded,
//! preprocessed, embedded, ranked and serialised exactly as `lookd run` does, after a warm-up.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use lookd::cache::ProductCache;
use lookd::model::{Kernels, SceneModel};
use lookd::pipeline::{peak_rss_kb, rss_kb};
use lookd::preprocess;
use lookd::publish::payload::{Item, Recommendations, StageTimes};
use lookd::recommend::recommend;

use super::{code, quantile, ModelArg, UserError};

#[derive(clap::Args)]
pub struct Args {
    /// Folder of scene photos (JPEG or PNG), e.g. ../shared/data/ccp/scenes
    #[arg(long)]
    scenes: PathBuf,
    #[command(flatten)]
    model: ModelArg,
    /// Product cache built by `lookd catalog build`
    #[arg(long, default_value = "out/catalog.cache")]
    cache: PathBuf,
    /// Category to rank (default: the cache's largest)
    #[arg(long)]
    category: Option<String>,
    /// Frames timed after the warm-up (photos are cycled)
    #[arg(long, default_value_t = 100)]
    frames: usize,
    /// Untimed frames first
    #[arg(long, default_value_t = 5)]
    warmup: usize,
    /// Products per recommendation message
    #[arg(long, default_value_t = 10)]
    top: usize,
    #[command(flatten)]
    rank: super::RankArgs,
    /// Print JSON instead of a table
    #[arg(long)]
    json: bool,
    /// `lookd` (the default on x86-64), `tract-depthwise` (on aarch64) or `tract` (tract's
    /// kernels alone)
    #[arg(long, env = "LOOKD_KERNELS", default_value = Kernels::DEFAULT.name())]
    kernels: Kernels,
}

const STAGES: [&str; 6] = ["decode", "preprocess", "scene_graph", "ranking", "serialise", "total"];

#[derive(serde::Serialize)]
struct Summary {
    p50_ms: f64,
    p95_ms: f64,
    max_ms: f64,
}

#[derive(serde::Serialize)]
struct Report {
    model: String,
    precision: String,
    cache_products: usize,
    category: String,
    category_products: usize,
    photos: usize,
    frames: usize,
    /// Model and cache loaded, graph optimised: what `lookd run` does before the first frame.
    ready_ms: f64,
    /// From start to the first ranking published (cold caches, first inference).
    first_result_ms: f64,
    fps: f64,
    peak_rss_kb: u64,
    rss_kb: u64,
    stages: Vec<(String, Summary)>,
}

/// The first `n` photos of `dir` (by name), read into memory.
fn photos(dir: &Path, n: usize) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading scenes folder {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let ext = p.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
            matches!(ext.as_str(), "jpg" | "jpeg" | "png")
        })
        .collect();
    paths.sort();
    paths
        .into_iter()
        .take(n)
        .map(|p| Ok((p.display().to_string(), std::fs::read(&p).with_context(|| p.display().to_string())?)))
        .collect()
}

fn summary(mut v: Vec<f64>) -> Summary {
    v.sort_by(f64::total_cmp);
    Summary { p50_ms: quantile(&v, 0.5), p95_ms: quantile(&v, 0.95), max_ms: v[v.len() - 1] }
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

pub fn run(a: Args) -> anyhow::Result<i32> {
    lookd::pipeline::use_one_heap(); // as `lookd run` does, so the memory figures are the daemon's
    let start = Instant::now();
    let folder = a.model.open()?;
    let mut scene_model = SceneModel::load_with(&folder, a.kernels).context("loading the scene graph")?;
    let cache = ProductCache::open(&a.cache, Some(&folder.product_fingerprint()))?;
    let ready_ms = ms(start);
    let category = match &a.category {
        Some(name) => cache.find_category(name).map_err(UserError)?.clone(),
        None => cache
            .categories()
            .iter()
            .max_by_key(|c| c.len)
            .cloned()
            .ok_or_else(|| UserError(format!("cache {} holds no products", a.cache.display())))?,
    };
    let photos = photos(&a.scenes, a.warmup + a.frames.max(1))?;
    if photos.is_empty() {
        return Err(UserError(format!("no JPEG or PNG photos in {}", a.scenes.display())).into());
    }
    let m = &folder.manifest;
    let input = &m.input;
    let mut pixels = Vec::new();
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); STAGES.len()];
    let mut first_result_ms = 0.0;
    let timed_from = Instant::now();
    let mut timed_start = timed_from;
    for n in 0..a.warmup + a.frames.max(1) {
        if n == a.warmup {
            timed_start = Instant::now();
        }
        let (name, bytes) = &photos[n % photos.len()];
        let t0 = Instant::now();
        let img = preprocess::decode(bytes).map_err(|e| UserError(format!("{name}: {e}")))?;
        let decode = ms(t0);
        let t = Instant::now();
        preprocess::to_model_input(&img, None, input.width, input.height, &mut pixels)
            .map_err(|e| UserError(format!("{name}: {e}")))?;
        let prep = ms(t);
        let t = Instant::now();
        let scene = scene_model.embed(&pixels)?;
        let graph = ms(t);
        let t = Instant::now();
        let items = recommend(
            &scene,
            &cache,
            folder.category_keys(),
            &category,
            &a.rank.ranking(a.top, &folder),
            None,
        )
        .map_err(|e| UserError(e.to_string()))?;
        let rank = ms(t);
        let t = Instant::now();
        let msg = Recommendations {
            frame: n as u64,
            ts: 0,
            model: m.model_id(),
            trained: m.trained,
            category: category.path.clone(),
            items: items.into_iter().map(|r| Item::new(r, false)).collect(),
            latency_ms: StageTimes {
                convert: (decode + prep) as f32,
                embed: graph as f32,
                rank: rank as f32,
                total: 0.0,
            },
        };
        let payload = serde_json::to_vec(&msg)?;
        std::hint::black_box(&payload);
        let serialise = ms(t);
        if n == 0 {
            first_result_ms = ready_ms + timed_from.elapsed().as_secs_f64() * 1e3;
        }
        if n >= a.warmup {
            for (i, v) in [decode, prep, graph, rank, serialise, ms(t0)].into_iter().enumerate() {
                times[i].push(v);
            }
        }
    }
    let frames = times[0].len();
    let fps = frames as f64 / timed_start.elapsed().as_secs_f64();
    let report = Report {
        model: m.model_id(),
        precision: m.precision.clone(),
        cache_products: cache.len(),
        category: category.path.clone(),
        category_products: category.len,
        photos: photos.len(),
        frames,
        ready_ms,
        first_result_ms,
        fps,
        peak_rss_kb: peak_rss_kb(),
        rss_kb: rss_kb(),
        stages: STAGES.iter().zip(times).map(|(s, v)| (s.to_string(), summary(v))).collect(),
    };
    if a.json {
        println!("{}", serde_json::to_string(&report)?);
        return Ok(code::OK);
    }
    println!(
        "{} ({}), cache {} products, category {} ({} products), {} frames from {} photos after {} warm-up",
        report.model,
        report.precision,
        report.cache_products,
        report.category,
        report.category_products,
        report.frames,
        report.photos,
        a.warmup
    );
    println!("{:<12} {:>9} {:>9} {:>9}", "stage", "p50 ms", "p95 ms", "max ms");
    for (stage, s) in &report.stages {
        println!("{stage:<12} {:>9.3} {:>9.3} {:>9.3}", s.p50_ms, s.p95_ms, s.max_ms);
    }
    println!("end to end   {:.1} frames/s", report.fps);
    println!(
        "ready        {:.0} ms (model + cache loaded); first result {:.0} ms",
        report.ready_ms, report.first_result_ms
    );
    println!("memory       peak RSS {} KiB, now {} KiB", report.peak_rss_kb, report.rss_kb);
    Ok(code::OK)
}
