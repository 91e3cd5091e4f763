//! `lookd report`: what the mirror would show for a list of scenes, as an HTML page and one PNG
//! contact sheet per scene, rendered from the store catalog.
//!
//! Everything lands in `--out`: index.html, report.json (the rankings), sheets/<scene>.png, and
//! the small JPEG copies the page shows (scenes/, thumbs/). The page links nothing outside that
//! folder, so it opens with no network; the source photos are never copied full size.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context;
use image::RgbImage;
use lookd::cache::ProductCache;
use lookd::model::SceneModel;
use lookd::preprocess;
use lookd::recommend::{block_keys, recommend, Recommendation};
use lookd::report::{self, Layout, Row};

use super::{code, open_or_build_cache, progress, ModelArg, UserError};

#[derive(clap::Args)]
pub struct Args {
    /// Scene photos, or folders of them (JPEG or PNG)
    scenes: Vec<PathBuf>,
    /// The standard report: the 24 scenes listed in docs/report-scenes.txt, from --data
    #[arg(long)]
    standard: bool,
    /// Shop-the-Look folder the standard scenes are read from
    #[arg(long, default_value = "../shared/data/ccp")]
    data: PathBuf,
    /// Catalog CSV the cache is built from when it is missing or made by another model
    #[arg(long, default_value = "../shared/data/catalog/catalog.csv")]
    catalog: PathBuf,
    /// Folder the CSV's image paths are relative to (default: the CSV's folder)
    #[arg(long)]
    images: Option<PathBuf>,
    /// Product cache (built from --catalog when missing or stale)
    #[arg(long, default_value = "out/report/catalog.cache")]
    cache: PathBuf,
    /// Categories to show (full path, last part, slug or unique prefix); default: all in the cache
    #[arg(long, value_delimiter = ',')]
    categories: Vec<String>,
    /// Products per category
    #[arg(long, default_value_t = 5)]
    top: usize,
    #[command(flatten)]
    rank: super::RankArgs,
    #[command(flatten)]
    model: ModelArg,
    /// Output folder
    #[arg(long, default_value = "out/report")]
    out: PathBuf,
}

#[derive(serde::Serialize)]
struct SceneReport {
    scene: String,
    sheet: String,
    categories: Vec<CategoryReport>,
}

#[derive(serde::Serialize)]
struct CategoryReport {
    category: String,
    /// Attention weights over the scene's regions (row-major grid) for the top product.
    attention: Vec<f32>,
    items: Vec<Recommendation>,
}

pub fn run(a: Args) -> anyhow::Result<i32> {
    let scenes = scene_files(&a)?;
    if scenes.is_empty() {
        return Err(UserError("no scenes: give photos or folders, or --standard".into()).into());
    }
    let folder = a.model.open()?;
    let cache = open_or_build_cache(&a.cache, &a.catalog, a.images.as_deref(), &folder, &mut |_, _| {})?;
    let (in_stock, _) = lookd::stock::Stock::default().mask(cache.products());
    let images =
        a.images.clone().unwrap_or_else(|| a.catalog.parent().unwrap_or(Path::new(".")).to_path_buf());
    let blocks = if a.categories.is_empty() {
        cache.categories().to_vec()
    } else {
        a.categories
            .iter()
            .map(|c| cache.find_category(c).cloned().map_err(UserError))
            .collect::<Result<_, _>>()?
    };
    let mut scene_model = SceneModel::load(&folder).context("loading the scene graph")?;
    for dir in ["sheets", "scenes", "thumbs"] {
        std::fs::create_dir_all(a.out.join(dir)).with_context(|| format!("creating {}", a.out.display()))?;
    }
    let layout = Layout { top: a.top, ..Layout::default() };
    let mut decoded: BTreeMap<String, Option<RgbImage>> = BTreeMap::new();
    let mut reports = Vec::new();
    let mut tick = progress("rendering");
    for (n, path) in scenes.iter().enumerate() {
        tick(n, scenes.len());
        let name = path.file_stem().map_or("scene".into(), |s| s.to_string_lossy().into_owned());
        let img =
            std::fs::read(path).with_context(|| format!("reading scene {}", path.display())).and_then(|b| {
                preprocess::decode(&b).map_err(|e| UserError(format!("scene {}: {e}", path.display())).into())
            });
        let img = match img {
            Ok(img) => img,
            Err(e) => {
                log::warn!("{e:#}: skipped");
                continue;
            }
        };
        let input = &folder.manifest.input;
        let mut pixels = Vec::new();
        preprocess::to_model_input(&img, None, input.width, input.height, &mut pixels)
            .map_err(|e| UserError(e.to_string()))?;
        let embedding = scene_model.embed(&pixels)?;
        let mut categories = Vec::new();
        for block in &blocks {
            let items = recommend(
                &embedding,
                &cache,
                folder.category_keys(),
                block,
                &a.rank.ranking(a.top, &folder),
                Some(&in_stock),
            )
            .map_err(|e| UserError(e.to_string()))?;
            for r in &items {
                decoded.entry(r.id.clone()).or_insert_with(|| {
                    std::fs::read(images.join(&r.image)).ok().and_then(|b| preprocess::decode(&b).ok())
                });
            }
            let attention = items.first().map(|top| attention_for(&cache, &folder, block, top, &embedding));
            categories.push(CategoryReport {
                category: block.path.clone(),
                attention: attention.transpose()?.unwrap_or_default(),
                items,
            });
        }
        let rows: Vec<Row> = categories
            .iter()
            .map(|c| Row {
                category: &c.category,
                attention: (!c.attention.is_empty()).then_some(c.attention.as_slice()),
                items: c.items.iter().map(|r| (r, decoded.get(&r.id).and_then(Option::as_ref))).collect(),
            })
            .collect();
        let title = format!("{name}  model {}", folder.manifest.model_id());
        let sheet = report::render(&title, &img, &rows, &layout);
        let sheet_name = format!("sheets/{}.png", file_safe(&name));
        write_image(&a.out.join(&sheet_name), &sheet, image::ImageFormat::Png)?;
        write_image(
            &a.out.join(format!("scenes/{}.jpg", file_safe(&name))),
            &report::thumbnail(&img, layout.scene_height),
            image::ImageFormat::Jpeg,
        )?;
        reports.push(SceneReport { scene: name, sheet: sheet_name, categories });
    }
    tick(scenes.len(), scenes.len());
    for (id, img) in &decoded {
        if let Some(img) = img {
            write_image(
                &a.out.join(format!("thumbs/{}.jpg", file_safe(id))),
                &report::thumbnail(img, layout.thumb),
                image::ImageFormat::Jpeg,
            )?;
        }
    }
    let json = serde_json::to_vec_pretty(&reports)?;
    write_file(&a.out.join("report.json"), &json)?;
    write_file(&a.out.join("index.html"), html(&reports, &folder.manifest.model_id(), &decoded).as_bytes())?;
    println!("wrote {} ({} scenes)", a.out.join("index.html").display(), reports.len());
    Ok(code::OK)
}

/// The listed scene files: the standard list, or the given files and every image in given folders.
fn scene_files(a: &Args) -> anyhow::Result<Vec<PathBuf>> {
    let mut out: Vec<PathBuf> = Vec::new();
    if a.standard {
        out.extend(report::standard_scenes().map(|id| a.data.join("scenes").join(format!("{id}.jpg"))));
    }
    for p in &a.scenes {
        if p.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(p)
                .with_context(|| format!("reading {}", p.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| {
                    let ext = f.extension().map(|e| e.to_string_lossy().to_ascii_lowercase());
                    matches!(ext.as_deref(), Some("jpg" | "jpeg" | "png"))
                })
                .collect();
            found.sort();
            out.extend(found);
        } else {
            out.push(p.clone());
        }
    }
    Ok(out)
}

fn attention_for(
    cache: &ProductCache,
    folder: &lookd::model::ModelFolder,
    block: &lookd::cache::CategoryBlock,
    top: &Recommendation,
    scene: &lookd::embedding::SceneEmbedding,
) -> anyhow::Result<Vec<f32>> {
    let rows = &cache.products()[block.start..block.start + block.len];
    let i = rows.iter().position(|p| p.entry.id == top.id).context("top product not in its block")?;
    let keys = block_keys(cache, folder.category_keys(), block).map_err(|e| UserError(e.to_string()))?;
    Ok(lookd::rank::attention(&scene.keys, keys.of(i, cache.dim())))
}

/// A name safe as one path component (ids come from the catalog).
fn file_safe(id: &str) -> String {
    id.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect()
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn html(reports: &[SceneReport], model: &str, decoded: &BTreeMap<String, Option<RgbImage>>) -> String {
    let mut h = String::new();
    let _ = write!(
        h,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>lookd report</title>\n\
         <style>body{{font-family:sans-serif;margin:1em}}table{{border-collapse:collapse;margin:.5em 0}}\
         td,th{{border:1px solid #ccc;padding:3px 6px;font-size:13px;text-align:left}}img.t{{width:96px}}\
         section{{margin-bottom:2em}}</style></head><body>\n<h1>What the mirror would show</h1>\n\
         <p>Model <code>{}</code>. Each sheet: the scene, then per category the scene shaded by attention \
         for the top product (where the model looked) and the top products, with hybrid distance d = (g + l) / 2.</p>\n",
        escape(model)
    );
    for r in reports {
        let scene = escape(&r.scene);
        let _ = write!(
            h,
            "<section id=\"{scene}\"><h2>{scene}</h2>\n<img src=\"scenes/{}.jpg\" alt=\"{scene}\" height=\"256\"> \
             <a href=\"{}\">contact sheet (PNG)</a>\n",
            file_safe(&r.scene),
            escape(&r.sheet)
        );
        for c in &r.categories {
            let _ = write!(
                h,
                "<table><tr><th colspan=\"6\">{}</th></tr>\n<tr><th>rank</th><th>product</th><th>id</th>\
                 <th>distance</th><th>global</th><th>local</th></tr>\n",
                escape(&c.category)
            );
            for i in &c.items {
                let img = match decoded.get(&i.id) {
                    Some(Some(_)) => {
                        format!("<img class=\"t\" src=\"thumbs/{}.jpg\" alt=\"\">", file_safe(&i.id))
                    }
                    _ => "(unreadable)".into(),
                };
                let _ = writeln!(
                    h,
                    "<tr><td>{}</td><td>{img}</td><td>{}</td><td>{:.4}</td><td>{:.4}</td><td>{:.4}</td></tr>",
                    i.rank,
                    escape(&i.id),
                    i.distance,
                    i.global,
                    i.local
                );
            }
            h.push_str("</table>\n");
        }
        h.push_str("</section>\n");
    }
    h.push_str("</body></html>\n");
    h
}

fn write_image(path: &Path, img: &RgbImage, format: image::ImageFormat) -> anyhow::Result<()> {
    let mut bytes = std::io::Cursor::new(Vec::new());
    img.write_to(&mut bytes, format).with_context(|| format!("encoding {}", path.display()))?;
    write_file(path, &bytes.into_inner())
}

fn write_file(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    lookd::cache::build::write_atomically(path, bytes)?;
    Ok(())
}
