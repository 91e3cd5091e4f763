//! `lookd model info|check|bench|input`: show a model folder, compare tract with the reference
//! outputs, time it, and write the pictures it sees.

use std::path::PathBuf;

use anyhow::Context;
use lookd::model::{check_reference, Kernels, ModelFolder, ProductModel, SceneModel};

use super::{code, quantile};

#[derive(clap::Subcommand)]
pub enum Command {
    /// Print the manifest and check that the graphs load with the declared shapes
    Info { dir: PathBuf },
    /// Run reference.json's input through tract and compare with onnxruntime's outputs
    Check {
        dir: PathBuf,
        /// Largest absolute difference allowed
        #[arg(long, default_value_t = 1e-4)]
        tolerance: f32,
    },
    /// Pack a model folder into one archive for the fleet (`lookd catalog announce --model-archive`),
    /// after checking it as a mirror will: graphs against their hashes, the reference outputs
    Pack {
        dir: PathBuf,
        /// The archive to write (a plain tar of the folder's files)
        #[arg(long)]
        out: PathBuf,
    },
    /// Time the scene graph in tract: median, p95 and min over --runs calls
    Bench {
        dir: PathBuf,
        #[arg(long, default_value_t = 30)]
        runs: usize,
        /// Threads for the graph's matrix products
        #[arg(long, default_value_t = 1)]
        threads: usize,
        /// Also time each operator (as tract runs the optimised graph) and print the heaviest
        #[arg(long)]
        profile: bool,
        /// With --profile, also print the N heaviest nodes
        #[arg(long, default_value_t = 0)]
        nodes: usize,
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
        /// `lookd`: lookd's own depthwise and squared-distance kernels swapped in (the default on
        /// x86-64); `tract-depthwise`: tract's depthwise, lookd's squared distances;
        /// `tract`: tract's alone
        #[arg(long, env = "LOOKD_KERNELS", default_value = Kernels::DEFAULT.name())]
        kernels: Kernels,
    },
    /// Embed one split's scenes of a Shop-the-Look folder, each whole, and write them into the
    /// model folder as its reference scenes (`reference_scenes.bin`, named in the manifest as
    /// `reference-scenes`): `lookd catalog build` ranks every catalog against them to cap how
    /// often one product reaches the screen (docs/variety.md)
    Scenes {
        dir: PathBuf,
        /// The Shop-the-Look folder whose scenes are embedded (ccp or ccp-studio: same scenes)
        #[arg(long)]
        data: PathBuf,
        /// The split whose scenes are embedded: the model's training scenes by default
        #[arg(long, value_enum, default_value = "train")]
        split: lookd::dataset::Split,
    },
    /// Write the picture the model sees for each photo (lookd's JPEG/PNG decoding, crop and
    /// stretch), as PNGs, so that training and other tools can use lookd's exact pixels.
    /// JOBS: one line per picture, tab-separated: SOURCE, DESTINATION.png and optionally
    /// X,Y,W,H (a crop in pixels) or `decoded` (the decoded photo, not resized).
    Input {
        /// The model folder whose input size applies
        #[arg(long, default_value = "models/default")]
        model: PathBuf,
        jobs: PathBuf,
    },
}

pub fn run(cmd: Command) -> anyhow::Result<i32> {
    match cmd {
        Command::Info { dir } => info(&dir),
        Command::Check { dir, tolerance } => check(&dir, tolerance),
        Command::Pack { dir, out } => pack(&dir, &out),
        Command::Bench { dir, runs, threads, profile, nodes, json, kernels } => {
            lookd::model::set_threads(threads.max(1));
            bench(&dir, runs, profile.then_some(nodes), json, kernels)
        }
        Command::Input { model, jobs } => input(&model, &jobs),
        Command::Scenes { dir, data, split } => scenes(&dir, &data, split),
    }
}

/// The manifest line that names the reference scenes.
const SCENES_KEY: &str = "reference-scenes";
const SCENES_FILE: &str = "reference_scenes.bin";

fn scenes(
    dir: &std::path::Path,
    data: &std::path::Path,
    split: lookd::dataset::Split,
) -> anyhow::Result<i32> {
    let folder = ModelFolder::open(dir)?;
    let data = lookd::dataset::Dataset::open(data)?.restrict(split);
    let mut ids: Vec<&str> = data.pairs.iter().map(|p| p.scene.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    anyhow::ensure!(!ids.is_empty(), "{} has no scene in the {split:?} split", data.dir.display());
    let mut model = SceneModel::load(&folder)?;
    let (input, mut pixels, mut embedded) = (&folder.manifest.input, Vec::new(), Vec::new());
    for id in &ids {
        let path = data.scene_path(id);
        let bytes = std::fs::read(&path).with_context(|| format!("reading scene {}", path.display()))?;
        let img =
            lookd::preprocess::decode(&bytes).with_context(|| format!("decoding {}", path.display()))?;
        lookd::preprocess::to_model_input(&img, None, input.width, input.height, &mut pixels)?;
        embedded.push(model.embed(&pixels)?);
    }
    let m = &folder.manifest;
    let bytes = lookd::model::scenes::encode(&embedded, m.dim, m.regions);
    lookd::cache::build::write_atomically(&dir.join(SCENES_FILE), &bytes)?;
    let manifest_path = dir.join("manifest.toml");
    let text = std::fs::read_to_string(&manifest_path)?;
    if m.reference_scenes.as_deref() != Some(SCENES_FILE) {
        let text = with_top_level_line(&text, SCENES_KEY, &format!("{SCENES_KEY} = \"{SCENES_FILE}\""));
        lookd::cache::build::write_atomically(&manifest_path, text.as_bytes())?;
    }
    ModelFolder::open(dir)?.reference_scenes().context("reading back what was written")?;
    println!(
        "wrote {}: {} {split:?} scenes of {}, {} bytes",
        dir.join(SCENES_FILE).display(),
        embedded.len(),
        data.dir.display(),
        bytes.len()
    );
    Ok(0)
}

/// `text` (a manifest) with `line` as its top-level `key`: replacing the key's line, or added
/// before the first table.
fn with_top_level_line(text: &str, key: &str, line: &str) -> String {
    let mut out = Vec::new();
    let (mut placed, mut in_table) = (false, false);
    for l in text.lines() {
        let t = l.trim_start();
        if t.starts_with('[') {
            if !placed {
                // After the last top-level line, before the blank lines that end the block.
                let blanks = out.iter().rev().take_while(|l: &&String| l.trim().is_empty()).count();
                out.insert(out.len() - blanks, line.to_string());
                placed = true;
            }
            in_table = true;
        }
        let is_key = t.strip_prefix(key).is_some_and(|rest| rest.trim_start().starts_with('='));
        if !in_table && is_key {
            if !placed {
                out.push(line.to_string());
                placed = true;
            }
            continue;
        }
        out.push(l.to_string());
    }
    if !placed {
        out.push(line.to_string());
    }
    out.join("\n") + "\n"
}

/// What one line of `model input`'s jobs file asks for.
#[derive(Debug, PartialEq)]
enum Picture {
    Model(Option<lookd::preprocess::Rect>),
    Decoded,
}

fn parse_job(line: &str) -> anyhow::Result<(PathBuf, PathBuf, Picture)> {
    let fields: Vec<&str> = line.split('\t').collect();
    let picture = match fields.get(2).copied() {
        None | Some("") => Picture::Model(None),
        Some("decoded") => Picture::Decoded,
        Some(crop) => {
            let n: Vec<u32> = crop
                .split(',')
                .map(|v| v.trim().parse())
                .collect::<Result<_, _>>()
                .with_context(|| format!("crop {crop:?} is not X,Y,W,H in pixels"))?;
            let [x, y, width, height] = n[..] else {
                anyhow::bail!("crop {crop:?} is not X,Y,W,H in pixels")
            };
            Picture::Model(Some(lookd::preprocess::Rect { x, y, width, height }))
        }
    };
    match fields[..] {
        [src, dst, ..] if !src.is_empty() && !dst.is_empty() && fields.len() <= 3 => {
            Ok((src.into(), dst.into(), picture))
        }
        _ => anyhow::bail!("expected SOURCE<tab>DESTINATION[<tab>X,Y,W,H|decoded], got {line:?}"),
    }
}

fn input(model: &std::path::Path, jobs: &std::path::Path) -> anyhow::Result<i32> {
    use lookd::preprocess;
    let folder = ModelFolder::open(model)?;
    let (w, h) = (folder.manifest.input.width, folder.manifest.input.height);
    let text = std::fs::read_to_string(jobs).with_context(|| format!("reading {}", jobs.display()))?;
    let mut written = 0;
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let at = || format!("{} line {}", jobs.display(), i + 1);
        let (src, dst, picture) = parse_job(line).with_context(at)?;
        let bytes = std::fs::read(&src).with_context(|| format!("{}: reading {}", at(), src.display()))?;
        let img = preprocess::decode(&bytes).with_context(|| format!("{}: {}", at(), src.display()))?;
        let img = match picture {
            Picture::Decoded => img,
            Picture::Model(crop) => preprocess::model_image(&img, crop, w, h).with_context(at)?,
        };
        let mut png = std::io::Cursor::new(Vec::new());
        img.write_to(&mut png, image::ImageFormat::Png).with_context(at)?;
        lookd::cache::build::write_atomically(&dst, &png.into_inner()).with_context(at)?;
        written += 1;
    }
    eprintln!("wrote {written} pictures ({w}x{h} model inputs or decoded photos)");
    Ok(code::OK)
}

fn info(dir: &std::path::Path) -> anyhow::Result<i32> {
    let folder = ModelFolder::open(dir)?;
    let m = &folder.manifest;
    println!("model      {}", m.model_id());
    println!("backbone   {} (trained heads: {})", m.backbone, m.trained);
    println!("precision  {}", m.precision);
    println!("attention  {}", m.attention.as_str());
    println!("embedding  D = {}, R = {} regions", m.dim, m.regions);
    println!(
        "input      {} {}x{} {} ({})",
        m.input.name, m.input.width, m.input.height, m.input.pixels, m.input.resize
    );
    println!("scene      {} sha256 {}", m.scene.graph, m.scene.sha256);
    println!("product    {} sha256 {}", m.product.graph, m.product.sha256);
    for (k, v) in &m.training {
        println!("training   {k} = {v}");
    }
    SceneModel::load(&folder).context("scene graph")?;
    ProductModel::load(&folder, 1).context("product graph")?;
    println!("graphs     ok: hashes match, shapes as declared");
    if !m.trained {
        println!("note       untrained heads: lookd ranks with ImageNet features only");
    }
    Ok(code::OK)
}

fn check(dir: &std::path::Path, tolerance: f32) -> anyhow::Result<i32> {
    let folder = ModelFolder::open(dir)?;
    let mut ok = true;
    for (name, err) in check_reference(&folder)? {
        println!("{name:<12} max abs diff tract vs onnxruntime {err:.2e}");
        // Written so that NaN fails: NaN <= tolerance is false.
        ok &= err <= tolerance;
    }
    println!("{} (tolerance {tolerance:.0e})", if ok { "ok" } else { "FAILED" });
    Ok(if ok { code::OK } else { code::CHECK_FAILED })
}

fn pack(dir: &std::path::Path, out: &std::path::Path) -> anyhow::Result<i32> {
    let folder = ModelFolder::open(dir)?;
    if let Some((name, err)) = lookd::update::beyond_tolerance(check_reference(&folder)?) {
        anyhow::bail!(super::UserError(format!(
            "{name} differs from its reference output by {err:.2e}: mirrors would refuse this model"
        )));
    }
    // Written beside `out` and renamed: a half-written archive is never at `out`.
    let temp = lookd::cache::build::sibling(out, "packing");
    let names = lookd::archive::pack(dir, &temp);
    let names = match names {
        Ok(names) => names,
        Err(e) => {
            lookd::cache::build::remove_if_there(&temp);
            return Err(e.into());
        }
    };
    std::fs::rename(&temp, out).with_context(|| format!("writing {}", out.display()))?;
    let (sha256, bytes) =
        lookd::update::sha256_of(out).with_context(|| format!("reading {}", out.display()))?;
    println!("{}", out.display());
    println!("model      {}", folder.manifest.model_id());
    println!("files      {}", names.join(", "));
    println!("bytes      {bytes}");
    println!("sha256     {sha256}");
    Ok(code::OK)
}

fn bench(
    dir: &std::path::Path,
    runs: usize,
    profile: Option<usize>,
    json: bool,
    kernels: Kernels,
) -> anyhow::Result<i32> {
    let folder = ModelFolder::open(dir)?;
    let m = &folder.manifest;
    let started = std::time::Instant::now();
    let mut scene = SceneModel::load_with(&folder, kernels).context("scene graph")?;
    let load_ms = started.elapsed().as_secs_f64() * 1e3;
    let pixels = lookd::model::reference_pixels(m.input.width, m.input.height);
    for _ in 0..3 {
        scene.embed(&pixels)?;
    }
    let mut ms: Vec<f64> = (0..runs.max(1))
        .map(|_| {
            let t = std::time::Instant::now();
            scene.embed(&pixels).map(|_| t.elapsed().as_secs_f64() * 1e3)
        })
        .collect::<Result<_, _>>()?;
    ms.sort_by(f64::total_cmp);
    let (p50, p95, min) = (quantile(&ms, 0.5), quantile(&ms, 0.95), ms[0]);
    if json {
        let out = serde_json::json!({"model": m.model_id(), "precision": m.precision, "runs": ms.len(),
            "kernels": kernels.name(), "load_ms": load_ms, "p50_ms": p50, "p95_ms": p95, "min_ms": min});
        println!("{out}");
    } else {
        println!("{} ({}, {} kernels): load + optimise {load_ms:.0} ms; scene graph over {} runs: p50 {p50:.1} ms, p95 {p95:.1} ms, min {min:.1} ms",
            m.model_id(), m.precision, kernels.name(), ms.len());
    }
    if let Some(nodes) = profile {
        print_profile(&mut scene, &pixels, runs, nodes)?;
    }
    Ok(code::OK)
}

/// Times each operator type over `runs` more calls of the already warm `scene`.
fn print_profile(scene: &mut SceneModel, pixels: &[f32], runs: usize, nodes: usize) -> anyhow::Result<()> {
    let mut per_op = std::collections::BTreeMap::new();
    let mut per_node = std::collections::BTreeMap::new();
    let runs = runs.max(1);
    for _ in 0..runs {
        scene.profile(pixels, &mut per_op, &mut per_node)?;
    }
    let total: f64 = per_op.values().map(|v| v.0).sum::<f64>() / runs as f64;
    let mut rows: Vec<_> = per_op.into_iter().collect();
    rows.sort_by(|a, b| b.1 .0.total_cmp(&a.1 .0));
    println!("per operator, mean over {runs} runs (total {total:.1} ms, with timing overhead):");
    for (name, (ms, calls)) in rows.iter().take(15) {
        let per_run = ms / runs as f64;
        println!(
            "{name:<28} {per_run:>8.2} ms {:>5.1}%  {} nodes",
            100.0 * per_run / total,
            calls / runs as u32
        );
    }
    if nodes > 0 {
        let mut rows: Vec<_> = per_node.into_iter().collect();
        rows.sort_by(|a, b| b.1 .0.total_cmp(&a.1 .0));
        println!("heaviest nodes, mean over {runs} runs:");
        for (name, (ms, _)) in rows.iter().take(nodes) {
            println!("{:>8.3} ms  {name}", ms / runs as f64);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reference_scenes_line_goes_at_the_top_level_once() {
        let text = "format = 1\nregions = 49\n\n[input]\nname = \"image\"\n";
        let line = "reference-scenes = \"r.bin\"";
        let added = with_top_level_line(text, "reference-scenes", line);
        assert_eq!(
            added,
            "format = 1\nregions = 49\nreference-scenes = \"r.bin\"\n\n[input]\nname = \"image\"\n"
        );
        let again = with_top_level_line(&added, "reference-scenes", "reference-scenes = \"s.bin\"");
        assert_eq!(again, added.replace("r.bin", "s.bin"));
        assert_eq!(with_top_level_line("a = 1", "b", "b = 2"), "a = 1\nb = 2\n");
    }

    #[test]
    fn input_jobs_parse_whole_cropped_and_decoded() {
        let rect = lookd::preprocess::Rect { x: 1, y: 2, width: 30, height: 40 };
        assert_eq!(
            parse_job("a.jpg\tb.png").unwrap(),
            ("a.jpg".into(), "b.png".into(), Picture::Model(None))
        );
        assert_eq!(parse_job("a.jpg\tb.png\t1,2,30,40").unwrap().2, Picture::Model(Some(rect)));
        assert_eq!(parse_job("a.jpg\tb.png\tdecoded").unwrap().2, Picture::Decoded);
        for bad in
            ["a.jpg", "a.jpg\t", "a.jpg\tb.png\t1,2,3", "a.jpg\tb.png\t1,2,3,x", "a\tb\tdecoded\textra"]
        {
            let err = parse_job(bad).unwrap_err();
            assert!(
                format!("{err:#}").contains("expected") || format!("{err:#}").contains("crop"),
                "{bad:?}: {err:#}"
            );
        }
    }
}
