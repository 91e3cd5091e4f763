//! A running mirror's new catalogs: rebuilt from the catalog CSV (SIGHUP, `catalog/reload`) or
//! fetched from the fleet, on a thread of their own beside the inference loop. The worker makes
//! and checks the new cache file and hands it, opened, to the loop, which swaps it in between two
//! frames; on any failure nothing is swapped and the old catalog keeps serving.
//!
//! A fetched file is written beside the cache (`.<name>.fetch`), checked (size, sha256, then the
//! cache's own magic, CRC and model fingerprint) and only then renamed over it; the fleet's
//! version is remembered beside it (`.<name>.version`), so a restarted mirror still knows which
//! version it holds.
//!
//! An announcement may bring a model with its catalog. The model's archive is fetched and checked
//! the same way, unpacked into `.<name>.models/<sha256 prefix>.incoming`, opened (the manifest,
//! the graphs against the manifest's hashes) and run on its reference input (`model check`); the
//! catalog must carry its fingerprint. Only when both pass is the folder renamed into place,
//! recorded (`.<name>.model`) and the cache renamed over the old one: a restart then finds the
//! pair again (`last_model`). The loop swaps model, cache and kiosk table together.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use sha2::{Digest, Sha256};

use crate::cache::build::{build, remove_if_there, sibling, BuildPlan};
use crate::cache::ProductCache;
use crate::fetch::{fetch_to, Limits};
use crate::model::{check_reference_with, hex, ModelFolder, SceneModel};
use crate::publish::payload::{FleetCatalog, FleetModel, Progress};
use crate::slot::Slot;

/// Where catalogs come from and go to.
#[derive(Clone)]
pub struct Sources {
    /// The model running: the one products are embedded with and caches must match.
    pub folder: ModelFolder,
    /// The sha256 of the fleet archive `folder` came from; `None`: the configured model.
    pub model_archive: Option<String>,
    pub catalog_csv: PathBuf,
    pub catalog_images: Option<PathBuf>,
    pub cache: PathBuf,
    pub limits: Limits,
}

/// Which catalog a cache file is.
#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    /// The fleet's version, or `local`.
    pub version: String,
    pub sha256: String,
    pub built_ms: u64,
}

/// `Job::Rebuild`'s reason at a first start: the daemon serves from an empty catalog meanwhile.
pub const FIRST_START: &str = "first start";

#[derive(Debug, Clone)]
pub enum Job {
    /// From the catalog CSV, incrementally (unchanged images are not embedded again).
    Rebuild {
        why: String,
    },
    Fetch(FleetCatalog),
}

pub enum Event {
    Progress(Progress),
    Ready(Box<NewCatalog>),
    /// `topic`: what asked (the command's topic, `SIGHUP`, or the fleet topic).
    Failed {
        topic: String,
        error: String,
    },
}

pub struct NewCatalog {
    pub cache: ProductCache,
    pub identity: Identity,
    /// What made it, for the log: `rebuilt: 3 embedded, 21 reused` or `fleet version v2`.
    pub how: String,
    /// The model the cache was made with, when it is a new one (from the fleet).
    pub model: Option<Box<NewModel>>,
}

/// A fleet model, checked and loaded: swapped in with its catalog.
pub struct NewModel {
    pub folder: ModelFolder,
    pub scene: SceneModel,
    /// The sha256 of the archive it came from.
    pub archive_sha256: String,
}

/// The largest difference from its reference outputs a fleet model may show (`model check`'s
/// default tolerance).
pub const REFERENCE_TOLERANCE: f32 = 1e-4;

/// The first of `check_reference`'s outputs that differs by more than `REFERENCE_TOLERANCE`
/// (a NaN difference counts).
pub fn beyond_tolerance(outputs: Vec<(String, f32)>) -> Option<(String, f32)> {
    outputs.into_iter().find(|(_, diff)| diff.is_nan() || *diff > REFERENCE_TOLERANCE)
}

/// The worker's handle: jobs in (latest wins while one runs), events out, never blocking.
pub struct Updater {
    jobs: Arc<Slot<(Job, String)>>,
    events: Receiver<Event>,
    /// Set by SIGHUP's handler; taken by the loop.
    pub reload: Arc<AtomicBool>,
    pub fleet_topic: Option<String>,
}

impl Updater {
    pub fn start(sources: Sources, fleet_topic: Option<String>) -> Updater {
        let jobs: Arc<Slot<(Job, String)>> = Arc::default();
        let (tx, events) = channel();
        let worker_jobs = jobs.clone();
        let spawned = std::thread::Builder::new()
            .name("catalog".into())
            .spawn(move || worker(sources, &worker_jobs, &tx));
        if let Err(e) = spawned {
            log::error!("cannot start the catalog thread: {e}");
        }
        Updater { jobs, events, reload: Arc::default(), fleet_topic }
    }

    /// Queues `job`, asked for on `topic`; a job still waiting is replaced by this one.
    pub fn submit(&self, job: Job, topic: &str) {
        if self.jobs.put((job, topic.to_string())) {
            log::info!("catalog: a waiting update was replaced by a newer one ({topic})");
        }
    }

    pub fn events(&self) -> Vec<Event> {
        self.events.try_iter().collect()
    }

    /// Whether SIGHUP came since the last call.
    pub fn take_reload_signal(&self) -> bool {
        self.reload.swap(false, Ordering::Relaxed)
    }
}

fn worker(mut sources: Sources, jobs: &Slot<(Job, String)>, events: &Sender<Event>) {
    loop {
        let Some((job, topic)) = jobs.take(Duration::from_secs(3600)) else { continue };
        let started = Instant::now();
        // Each job runs on a thread of its own that ends with it: what the product graph left in
        // thread-local scratch space and on the stack goes with the thread, so the daemon's
        // memory settles back where it was. A bug in a job (a panic) ends only that thread.
        let (s, tx) = (sources.clone(), events.clone());
        let run = std::thread::Builder::new().name("catalog-job".into()).spawn(move || match &job {
            Job::Rebuild { why } => rebuild(&s, why, &tx),
            Job::Fetch(f) => fetch(&s, f, &tx),
        });
        let failed = || "the catalog update failed unexpectedly (a bug: see the log)".to_string();
        let result = match run {
            Ok(handle) => handle.join().unwrap_or_else(|_| Err(failed())),
            Err(e) => Err(format!("cannot start the catalog job: {e}")),
        };
        let event = match result {
            Ok(new) => {
                log::info!("catalog: {} in {:.1} s", new.how, started.elapsed().as_secs_f64());
                if let Some(m) = &new.model {
                    // What comes next (a reload, the next announcement) is made with this model.
                    sources.folder = m.folder.clone();
                    sources.model_archive = Some(m.archive_sha256.clone());
                }
                Event::Ready(Box::new(new))
            }
            Err(error) => {
                log::warn!("catalog update ({topic}) failed, the old catalog keeps serving: {error}");
                Event::Failed { topic, error }
            }
        };
        if events.send(event).is_err() {
            return; // the loop is gone
        }
    }
}

fn rebuild(s: &Sources, why: &str, events: &Sender<Event>) -> Result<NewCatalog, String> {
    log::info!("catalog: rebuilding from {} ({why})", s.catalog_csv.display());
    let plan = BuildPlan {
        folder: &s.folder,
        catalog: &s.catalog_csv,
        images: s.catalog_images.as_deref(),
        out: &s.cache,
        batch: 1,
        checkpoint_every: crate::cache::build::CHECKPOINT_EVERY,
    };
    let what = if why == FIRST_START { "first build" } else { "reload" };
    let (started, mut last) = (Instant::now(), Instant::now() - Duration::from_secs(1));
    let report = build(&plan, &mut |done, total| {
        if last.elapsed() >= Duration::from_millis(500) || done == total {
            last = Instant::now();
            let eta_s =
                (done > 0).then(|| started.elapsed().as_secs_f64() / done as f64 * (total - done) as f64);
            let _ = events.send(Event::Progress(Progress { what: what.into(), done, total, eta_s }));
        }
    })
    .map_err(|e| e.to_string())?;
    for p in &report.skipped {
        log::warn!("catalog line {}: skipped: {}", p.line, p.reason);
    }
    remove_if_there(&version_path(&s.cache));
    let cache =
        ProductCache::open(&s.cache, Some(&s.folder.product_fingerprint())).map_err(|e| e.to_string())?;
    let identity = identity_of(&s.cache).map_err(|e| e.to_string())?;
    let how = format!(
        "rebuilt: {} products ({} embedded, {} reused, {} rows skipped)",
        cache.len(),
        report.embedded,
        report.reused,
        report.skipped.len()
    );
    Ok(NewCatalog { cache, identity, how, model: None })
}

/// The fleet's catalog fetched, checked and put in place now, on the caller's thread (start-up).
pub fn fetch_now(s: &Sources, f: &FleetCatalog) -> Result<NewCatalog, String> {
    let (events, _) = channel();
    fetch(s, f, &events)
}

fn fetch(s: &Sources, f: &FleetCatalog, events: &Sender<Event>) -> Result<NewCatalog, String> {
    // A model already running (the same archive) is not fetched again.
    let new_model = f.model.as_ref().filter(|m| s.model_archive.as_ref() != Some(&m.sha256));
    if let Some(n) = f.bytes.filter(|&n| n > s.limits.max_bytes) {
        return Err(format!(
            "fleet catalog {} is {n} bytes, over the {}-byte limit ([fleet] max-bytes): refused",
            f.version, s.limits.max_bytes
        ));
    }
    if new_model.is_none() {
        let ours = hex(&s.folder.product_fingerprint());
        if f.fingerprint != ours {
            return Err(format!(
                "fleet catalog {} was built for another model (fingerprint {}), this mirror's is {}: refused",
                f.version,
                &f.fingerprint[..16],
                &ours[..16]
            ));
        }
    }
    let _ = events.send(Event::Progress(Progress { what: "fleet".into(), done: 0, total: 0, eta_s: None }));
    let staged = match new_model {
        Some(m) => Some(stage_model(s, f, m)?),
        None => None,
    };
    log::info!("catalog: fetching fleet version {} from {}", f.version, f.url);
    let temp = sibling(&s.cache, "fetch");
    let incoming = staged.as_ref().map(|m| m.folder.dir.clone());
    let checked = fetch_checked(s, f, staged.as_ref().map_or(&s.folder, |m| &m.folder), &temp);
    let result = checked.and_then(|c| commit(s, f, &temp, c, staged));
    if result.is_err() {
        remove_if_there(&temp);
        if let Some(dir) = incoming {
            remove_dir_if_there(&dir);
        }
    }
    result
}

/// Fetches the announced model's archive, unpacks it and checks it: the name announced, the
/// graphs' hashes (as it loads), the catalog's fingerprint, its reference outputs. Left in its
/// `.incoming` folder; removed on any failure.
fn stage_model(s: &Sources, f: &FleetCatalog, m: &FleetModel) -> Result<NewModel, String> {
    let refused = |why: String| {
        format!("fleet model {} (version {}) from {}: {why}: refused", m.name, f.version, m.url)
    };
    if let Some(n) = m.bytes.filter(|&n| n > s.limits.max_bytes) {
        return Err(refused(format!(
            "{n} bytes, over the {}-byte limit ([fleet] max-bytes)",
            s.limits.max_bytes
        )));
    }
    log::info!("catalog: fetching fleet model {} from {}", m.name, m.url);
    let archive = sibling(&s.cache, "model.fetch");
    let dir = models_dir(&s.cache).join(format!("{}.incoming", &m.sha256[..16]));
    remove_dir_if_there(&dir);
    let staged = (|| {
        let got = fetch_to(&m.url, &archive, &s.limits).map_err(|e| refused(e.to_string()))?;
        check_fetched(got.bytes, &got.sha256, m.bytes, &m.sha256).map_err(refused)?;
        crate::archive::unpack(&archive, &dir, s.limits.max_bytes).map_err(|e| refused(e.to_string()))?;
        let folder = ModelFolder::open(&dir).map_err(|e| refused(e.to_string()))?;
        let id = folder.manifest.model_id();
        if id != m.name {
            return Err(refused(format!("the archive holds model {id}")));
        }
        let fingerprint = hex(&folder.product_fingerprint());
        if fingerprint != f.fingerprint {
            return Err(refused(format!(
                "the catalog is announced for fingerprint {}, this model's is {}",
                &f.fingerprint[..16],
                &fingerprint[..16]
            )));
        }
        // The scene graph is loaded once: checked on the reference input, then kept to serve.
        let mut scene = SceneModel::load(&folder).map_err(|e| refused(e.to_string()))?;
        let outputs = check_reference_with(&folder, &mut scene).map_err(|e| refused(e.to_string()))?;
        if let Some((output, diff)) = beyond_tolerance(outputs) {
            return Err(refused(format!(
                "its reference check fails: {output} differs by {diff:.2e} (tolerance {REFERENCE_TOLERANCE:.0e})"
            )));
        }
        Ok(NewModel { folder, scene, archive_sha256: m.sha256.clone() })
    })();
    remove_if_there(&archive);
    if staged.is_err() {
        remove_dir_if_there(&dir);
    }
    staged
}

/// A fetched file's size and sha256 against what the announcement says.
fn check_fetched(
    bytes: u64,
    sha256: &[u8; 32],
    want_bytes: Option<u64>,
    want_sha: &str,
) -> Result<(), String> {
    if let Some(n) = want_bytes.filter(|&n| n != bytes) {
        return Err(format!("{bytes} bytes arrived, the announcement says {n}"));
    }
    let sha = hex(sha256);
    if sha != want_sha {
        return Err(format!("its sha256 is {}, the announcement says {}", &sha[..16], &want_sha[..16]));
    }
    Ok(())
}

/// A fetched cache file, checked, not yet in place.
struct Checked {
    sha256: String,
    bytes: u64,
}

fn fetch_checked(
    s: &Sources,
    f: &FleetCatalog,
    folder: &ModelFolder,
    temp: &Path,
) -> Result<Checked, String> {
    let refused = |why: String| format!("fleet catalog {} from {}: {why}: refused", f.version, f.url);
    let got = fetch_to(&f.url, temp, &s.limits).map_err(|e| refused(e.to_string()))?;
    check_fetched(got.bytes, &got.sha256, f.bytes, &f.sha256).map_err(refused)?;
    // The cache's own checks: magic, version, CRC, layout, and the model it was built for.
    drop(ProductCache::open(temp, Some(&folder.product_fingerprint())).map_err(|e| refused(e.to_string()))?);
    Ok(Checked { sha256: hex(&got.sha256), bytes: got.bytes })
}

/// Puts a checked catalog (and its model) in place: the model folder first, then its record, then
/// the cache, so that a restart at any point finds a cache and a model that match (`last_model`).
fn commit(
    s: &Sources,
    f: &FleetCatalog,
    temp: &Path,
    c: Checked,
    model: Option<NewModel>,
) -> Result<NewCatalog, String> {
    let refused = |why: String| format!("fleet catalog {} from {}: {why}: refused", f.version, f.url);
    let model = match model {
        None => None,
        Some(m) => {
            let incoming = m.folder.dir.clone();
            let dir = incoming.with_extension("");
            remove_dir_if_there(&dir);
            std::fs::rename(&incoming, &dir)
                .map_err(|e| refused(format!("cannot move the model into {}: {e}", dir.display())))?;
            let folder = ModelFolder::open(&dir).map_err(|e| refused(e.to_string()))?;
            let record = serde_json::json!({ "dir": dir, "sha256": m.archive_sha256, "name": folder.manifest.model_id() });
            write_atomically(&model_path(&s.cache), record.to_string().as_bytes()).map_err(refused)?;
            Some(Box::new(NewModel { folder, ..m }))
        }
    };
    std::fs::rename(temp, &s.cache)
        .map_err(|e| refused(format!("cannot replace {}: {e}", s.cache.display())))?;
    let record = serde_json::json!({ "version": f.version, "sha256": c.sha256 });
    if let Err(e) = write_atomically(&version_path(&s.cache), record.to_string().as_bytes()) {
        log::warn!("{e}: after a restart this catalog's version will read `local`");
    }
    let folder = model.as_ref().map_or(&s.folder, |m| &m.folder);
    let cache =
        ProductCache::open(&s.cache, Some(&folder.product_fingerprint())).map_err(|e| e.to_string())?;
    let identity = Identity { version: f.version.clone(), sha256: c.sha256, built_ms: modified_ms(&s.cache) };
    let mut how = format!("fleet version {} ({} bytes)", f.version, c.bytes);
    if let Some(m) = &model {
        how.push_str(&format!(" with model {}", m.folder.manifest.model_id()));
        prune_models(&s.cache, &m.folder.dir);
    }
    Ok(NewCatalog { cache, identity, how, model })
}

/// The fleet model this mirror last took, if the cache at `cache` is still its catalog: its
/// folder and the archive's sha256. `None`: run the configured model.
pub fn last_model(cache: &Path) -> Option<(ModelFolder, String)> {
    let text = std::fs::read_to_string(model_path(cache)).ok()?;
    let record: serde_json::Value = serde_json::from_str(&text).ok()?;
    let (dir, sha) = (record["dir"].as_str()?, record["sha256"].as_str()?);
    let folder = match ModelFolder::open(Path::new(dir)) {
        Ok(folder) => folder,
        Err(e) => {
            log::warn!("the fleet model last taken cannot be opened ({e}): running the configured one");
            return None;
        }
    };
    ProductCache::open(cache, Some(&folder.product_fingerprint())).ok()?;
    Some((folder, sha.to_string()))
}

/// Where fleet models are unpacked: `.<cache name>.models/` beside the cache.
fn models_dir(cache: &Path) -> PathBuf {
    sibling(cache, "models")
}

fn model_path(cache: &Path) -> PathBuf {
    sibling(cache, "model")
}

/// Removes every fleet model folder but `keep` (the running models stay in memory).
fn prune_models(cache: &Path, keep: &Path) {
    let Ok(entries) = std::fs::read_dir(models_dir(cache)) else { return };
    for entry in entries.flatten() {
        if entry.path() != keep {
            remove_dir_if_there(&entry.path());
        }
    }
}

fn remove_dir_if_there(dir: &Path) {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            log::warn!("cannot remove {}: {e}", dir.display())
        }
        _ => {}
    }
}

/// Which catalog the file at `cache` is: its sha256, when it was written, and the fleet's
/// version if the file is the one the fleet sent (else `local`).
pub fn identity_of(cache: &Path) -> std::io::Result<Identity> {
    let (sha256, _) = sha256_of(cache)?;
    let recorded = std::fs::read_to_string(version_path(cache)).ok().and_then(|t| {
        let v: serde_json::Value = serde_json::from_str(&t).ok()?;
        (v["sha256"] == sha256.as_str()).then(|| v["version"].as_str().map(str::to_string))?
    });
    Ok(Identity { version: recorded.unwrap_or_else(|| "local".into()), sha256, built_ms: modified_ms(cache) })
}

/// A file's sha256 (hex) and size, read once: what an announcement says of it.
pub fn sha256_of(path: &Path) -> std::io::Result<(String, u64)> {
    let mut file = std::fs::File::open(path)?;
    let mut hash = Sha256::new();
    let bytes = std::io::copy(&mut file, &mut hash)?;
    Ok((hex(&hash.finalize()), bytes))
}

fn modified_ms(path: &Path) -> u64 {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_millis() as u64)
}

fn version_path(cache: &Path) -> PathBuf {
    sibling(cache, "version")
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), String> {
    crate::cache::build::write_atomically(path, bytes).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_version_is_the_fleets_only_for_the_file_it_sent() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("c.cache");
        std::fs::write(&cache, b"one").unwrap();
        let one = identity_of(&cache).unwrap();
        assert_eq!(one.version, "local");
        assert_eq!(one.sha256, hex(&Sha256::digest(b"one")));
        let record = serde_json::json!({ "version": "v7", "sha256": one.sha256 });
        write_atomically(&version_path(&cache), record.to_string().as_bytes()).unwrap();
        assert_eq!(identity_of(&cache).unwrap().version, "v7");
        std::fs::write(&cache, b"two").unwrap(); // rebuilt locally since
        assert_eq!(identity_of(&cache).unwrap().version, "local");
        assert_eq!(version_path(&cache), dir.path().join(".c.cache.version"));
    }
}
