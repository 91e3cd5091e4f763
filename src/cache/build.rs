//! `lookd catalog build`: embeds a catalog's images into a new cache file.
//!
//! Incremental: a product whose image bytes hash the same as in the previous cache (for the
//! same model) is copied, not re-embedded. A row whose image is missing or undecodable is
//! reported and skipped. The new file is written beside the old one and renamed over it only
//! when complete, so a crash or kill midway leaves the previous cache intact. Every
//! `checkpoint_every` new embeddings the work so far is also saved, atomically, as a partial
//! cache beside it (`.<name>.partial`): a build killed midway (systemd's start timeout on a slow
//! board) starts again from there, not from nothing. The partial file goes once the cache is written.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::codec::{self, Record, StoredProduct};
use super::{CacheError, ProductCache};
use crate::catalog::{Catalog, CatalogEntry, RowProblem};
use crate::embedding::AttentionMode;
use crate::model::{hex, ModelFolder, ProductModel};
use crate::preprocess;
use crate::rank::{self, Keys, Products};

pub struct BuildPlan<'a> {
    pub folder: &'a ModelFolder,
    pub catalog: &'a Path,
    /// Where the CSV's image paths are relative to; default: the CSV's folder.
    pub images: Option<&'a Path>,
    pub out: &'a Path,
    /// Images per product-graph call.
    pub batch: usize,
    /// Save the work so far after this many new embeddings (0: never).
    pub checkpoint_every: usize,
}

/// New embeddings between two saves of a partial cache, by default: a few seconds of work on a
/// Raspberry Pi, a few hundred KB to write.
pub const CHECKPOINT_EVERY: usize = 200;

#[derive(Debug, Default)]
pub struct BuildReport {
    pub rows: usize,
    pub embedded: usize,
    pub reused: usize,
    /// Rows skipped: the catalog's own problems, then unreadable or undecodable images.
    pub skipped: Vec<RowProblem>,
    /// With the model's reference scenes: how many there were, and how many products were given
    /// an exposure offset (`rank::exposure_offsets`).
    pub exposure: Option<(usize, usize)>,
}

/// Progress as (rows done, rows in all).
pub type Progress<'p> = &'p mut dyn FnMut(usize, usize);

pub fn build(plan: &BuildPlan, progress: Progress) -> Result<BuildReport, CacheError> {
    let catalog = Catalog::read(plan.catalog)?;
    remove_leftover_temps(plan.out);
    let base = crate::catalog::images_dir(plan.catalog, plan.images);
    let fingerprint = plan.folder.product_fingerprint();
    let partial = partial_path(plan.out);
    let mut previous = previous_embeddings(&partial, &fingerprint);
    previous.extend(previous_embeddings(plan.out, &fingerprint));
    let mut report =
        BuildReport { rows: catalog.entries.len(), skipped: catalog.problems.clone(), ..Default::default() };
    let mut embedder = Embedder::new(plan.folder, plan.batch);
    let mut records = Vec::with_capacity(catalog.entries.len());
    let (mut saved, m) = (0, &plan.folder.manifest);
    for (done, entry) in catalog.entries.into_iter().enumerate() {
        progress(done, report.rows);
        let embedded = records.len() - report.reused;
        if plan.checkpoint_every > 0 && embedded >= saved + plan.checkpoint_every {
            let bytes =
                codec::encode(records.clone(), m.dim, m.attention, m.regions, fingerprint, &m.model_id());
            match write_atomically(&partial, &bytes) {
                Ok(()) => log::debug!("saved {embedded} new embeddings to {}", partial.display()),
                Err(e) => log::warn!("{e}: an interrupted build will start again from the last save"),
            }
            saved = embedded;
        }
        let bytes = match std::fs::read(base.join(&entry.image)) {
            Ok(b) => b,
            Err(e) => {
                report.skipped.push(problem(&entry, format!("cannot read image {}: {e}", entry.image)));
                continue;
            }
        };
        let image_sha256 = hex(&Sha256::digest(&bytes));
        if let Some((global, key)) = previous.get(&image_sha256) {
            let product = StoredProduct { entry, image_sha256 };
            records.push(Record { product, global: global.clone(), key: key.clone() });
            report.reused += 1;
            continue;
        }
        match preprocess::decode(&bytes) {
            Ok(img) => embedder.push(StoredProduct { entry, image_sha256 }, &img, &mut records)?,
            Err(e) => report.skipped.push(problem(&entry, format!("image {}: {e}", entry.image))),
        }
    }
    embedder.flush(&mut records)?;
    report.embedded = records.len() - report.reused;
    progress(report.rows, report.rows);
    if records.is_empty() {
        return Err(CacheError::Empty { catalog: plan.catalog.to_path_buf() });
    }
    codec::sort_records(&mut records);
    let exposure = exposure(plan.folder, &records)?;
    report.exposure = exposure.as_ref().map(|e| (e.scenes, e.offsets.iter().filter(|&&o| o > 0.0).count()));
    let bytes =
        codec::encode_with(records, m.dim, m.attention, m.regions, fingerprint, &m.model_id(), exposure);
    write_atomically(plan.out, &bytes)?;
    remove_if_there(&partial);
    report.skipped.sort_by_key(|p| p.line);
    Ok(report)
}

/// Each category's exposure offsets against the model's reference scenes (`rank::EXPOSURE`),
/// ranked as the mirror ranks them: hub-corrected where the model has a mean scene. `records`
/// are in stored order. `None` when the model has no reference scenes.
fn exposure(folder: &ModelFolder, records: &[Record]) -> Result<Option<codec::Exposure>, CacheError> {
    let Some(scenes) = folder.reference_scenes()? else { return Ok(None) };
    let plan = rank::EXPOSURE;
    let d = folder.manifest.dim;
    let mut offsets = Vec::with_capacity(records.len());
    let started = std::time::Instant::now();
    for block in records.chunk_by(|a, b| a.product.entry.category == b.product.entry.category) {
        let globals: Vec<f32> = block.iter().flat_map(|r| r.global.iter().copied()).collect();
        let per_product: Vec<f32> = block.iter().flat_map(|r| r.key.iter().copied()).collect();
        let category = &block[0].product.entry.category;
        let keys = match folder.manifest.attention {
            AttentionMode::Product => Keys::PerProduct(&per_product),
            AttentionMode::Category => match folder.category_key(category) {
                Some(key) => Keys::Category(key),
                // Not ranked at all on the mirror (recommend refuses it): nothing to cap.
                None => {
                    offsets.extend(std::iter::repeat_n(0.0, block.len()));
                    continue;
                }
            },
        };
        let products = Products { globals: &globals, keys };
        let scored: Vec<Vec<rank::Score>> = (0..scenes.len())
            .map(|i| {
                let mut s = rank::score(&scenes.scene(i), &products);
                if let Some(mean) = folder.mean_scene() {
                    rank::correct_hubs(&mut s, &globals, d, mean);
                }
                s
            })
            .collect();
        let (found, rounds) = rank::exposure_offsets(&scored, &globals, d, &plan);
        if rounds == plan.rounds {
            log::warn!("exposure of {category}: still over the cap after {rounds} rounds");
        }
        offsets.extend(found);
    }
    log::info!(
        "exposure capped against {} reference scenes in {:.1} s",
        scenes.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(Some(codec::Exposure {
        scenes: scenes.len(),
        top: plan.top,
        diversity: plan.diversity,
        cap: plan.cap,
        spread: plan.spread,
        offsets,
    }))
}

fn problem(entry: &CatalogEntry, reason: String) -> RowProblem {
    RowProblem { line: entry.line, id: Some(entry.id.clone()), reason }
}

/// image sha256 -> (global, key) from the previous cache, if it is readable and for this model.
fn previous_embeddings(out: &Path, fingerprint: &[u8; 32]) -> HashMap<String, (Vec<f32>, Vec<f32>)> {
    let cache = match ProductCache::open(out, Some(fingerprint)) {
        Ok(c) => c,
        Err(CacheError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            return HashMap::new()
        }
        Err(e) => {
            log::warn!("previous cache not reused, every product is embedded again: {e}");
            return HashMap::new();
        }
    };
    let mut map = HashMap::new();
    for block in cache.categories() {
        let globals = cache.globals(block);
        let keys = cache.keys(block);
        let d = cache.dim();
        for (j, p) in cache.products()[block.start..block.start + block.len].iter().enumerate() {
            let key = keys.map(|k| k[j * d..(j + 1) * d].to_vec()).unwrap_or_default();
            map.insert(p.image_sha256.clone(), (globals[j * d..(j + 1) * d].to_vec(), key));
        }
    }
    map
}

/// Collects preprocessed images into batches for the product graph, loaded on first use so a
/// rebuild with nothing new never pays for it.
struct Embedder<'a> {
    folder: &'a ModelFolder,
    batch: usize,
    model: Option<ProductModel>,
    pending: Vec<StoredProduct>,
    pixels: Vec<f32>,
    one: Vec<f32>,
}

impl<'a> Embedder<'a> {
    fn new(folder: &'a ModelFolder, batch: usize) -> Embedder<'a> {
        Embedder {
            folder,
            batch: batch.max(1),
            model: None,
            pending: Vec::new(),
            pixels: Vec::new(),
            one: Vec::new(),
        }
    }

    fn push(
        &mut self,
        product: StoredProduct,
        img: &image::RgbImage,
        out: &mut Vec<Record>,
    ) -> Result<(), CacheError> {
        let input = &self.folder.manifest.input;
        // A decoded image always fits the model input, so this cannot fail without a crop.
        if preprocess::to_model_input(img, None, input.width, input.height, &mut self.one).is_ok() {
            self.pixels.extend_from_slice(&self.one);
            self.pending.push(product);
        }
        if self.pending.len() == self.batch {
            self.flush(out)?;
        }
        Ok(())
    }

    fn flush(&mut self, out: &mut Vec<Record>) -> Result<(), CacheError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        if self.model.is_none() {
            self.model = Some(ProductModel::load(self.folder, self.batch)?);
        }
        let n = self.pending.len();
        // The graph's batch is fixed: pad a short last batch by repeating its first image.
        let per_image = self.folder.input_len();
        while self.pixels.len() < self.batch * per_image {
            self.pixels.extend_from_within(..per_image);
        }
        let embeddings = self.model.as_mut().map(|m| m.embed(&self.pixels)).transpose()?.unwrap_or_default();
        for (product, e) in self.pending.drain(..).zip(embeddings.into_iter().take(n)) {
            out.push(Record { product, global: e.global, key: e.key });
        }
        self.pixels.clear();
        Ok(())
    }
}

/// The folder a file lives in; "." for a bare file name.
fn dir_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Where a build saves its work so far: `.<name>.partial` beside the cache.
pub fn partial_path(out: &Path) -> PathBuf {
    sibling(out, "partial")
}

/// `.<name>.<what>` beside `path`: where a cache's companions live (its partial build, a fleet
/// fetch in progress, the fleet's version).
pub fn sibling(path: &Path, what: &str) -> PathBuf {
    dir_of(path).join(format!(".{}.{what}", file_name(path)))
}

/// Removes `path`; one already gone is fine, any other failure is logged.
pub fn remove_if_there(path: &Path) {
    if let Err(e) = std::fs::remove_file(path) {
        if e.kind() != std::io::ErrorKind::NotFound {
            log::warn!("cannot remove {}: {e}", path.display());
        }
    }
}

fn temp_prefix(path: &Path) -> String {
    format!(".{}.tmp-", file_name(path))
}

fn file_name(path: &Path) -> String {
    path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

/// Deletes temp files that a killed build left beside `out`.
fn remove_leftover_temps(out: &Path) {
    let prefix = temp_prefix(out);
    let Ok(entries) = std::fs::read_dir(dir_of(out)) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with(&prefix) {
            log::info!("removing {}, left by an interrupted build", entry.path().display());
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Writes `bytes` to a temp file beside `path`, syncs it, and renames it over `path`.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), CacheError> {
    let fail = |source| CacheError::Write { path: path.to_path_buf(), source };
    let dir = dir_of(path);
    std::fs::create_dir_all(&dir).map_err(fail)?;
    let tmp = dir.join(format!("{}{}", temp_prefix(path), std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(&dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(fail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failing_rename_leaves_the_target_and_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        // The target is a non-empty directory: the temp file is written, then the rename fails.
        let target = dir.path().join("c.cache");
        std::fs::create_dir(&target).unwrap();
        std::fs::write(target.join("inside"), b"kept").unwrap();
        let err = write_atomically(&target, b"new contents").unwrap_err().to_string();
        assert!(err.contains("c.cache"), "the error names the file: {err}");
        assert_eq!(std::fs::read(target.join("inside")).unwrap(), b"kept");
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, ["c.cache"], "the temp file is removed");
    }

    #[test]
    fn a_reader_never_sees_a_half_written_file() {
        // Two 4 MiB contents written over and over while another thread reads the file: every
        // read is wholly one or the other. Writing in place (truncate, then write) is caught at
        // once: a read lands between the truncation and the last byte.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.cache");
        let (a, b) = (vec![b'a'; 4 << 20], vec![b'b'; 4 << 20]);
        write_atomically(&path, &a).unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (reader_path, reader_stop) = (path.clone(), stop.clone());
        let reader = std::thread::spawn(move || {
            let mut reads = 0;
            while !reader_stop.load(std::sync::atomic::Ordering::Relaxed) {
                let got = std::fs::read(&reader_path).unwrap();
                let whole = got.len() == 4 << 20
                    && (got.iter().all(|&c| c == b'a') || got.iter().all(|&c| c == b'b'));
                assert!(whole, "a read saw {} bytes, not one whole version", got.len());
                reads += 1;
            }
            reads
        });
        for i in 0..40 {
            write_atomically(&path, if i % 2 == 0 { &b } else { &a }).unwrap();
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        assert!(reader.join().unwrap() > 0);
    }
}
