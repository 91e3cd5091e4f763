//! The daemon's loop: capture -> one-slot latest-wins hand-off -> inference -> publisher.
//!
//! Capture runs on its own thread and never waits for inference: a frame not yet taken is
//! replaced by the next, and the replacement counted as a drop. Inference skips frames whose
//! scene has not changed (a cheap thumbnail difference), waits until a change has lasted the
//! hold-off (no flicker), and respects a maximum rate. Publishing never blocks (the publisher
//! keeps the latest message per topic while the broker is away). Every failure in the loop is
//! logged, counted and survived; nothing here exits the process.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime};

use image::RgbImage;

use crate::cache::{CategoryBlock, ProductCache};
use crate::capture::{Frame, FrameSource};
use crate::embedding::SceneEmbedding;
use crate::model::{ModelError, ModelFolder, SceneModel};
use crate::preprocess::{self, pixel};
use crate::publish::payload::{
    self, CatalogState, CategoryState, Command, CommandError, FleetCatalog, Item, Progress, Recommendations,
    StageTimes, Stats,
};
use crate::publish::{Mqtt, Received};
use crate::recommend::recommend;
use crate::stock::{Counts, Stock};
use crate::update::{Event, Identity, Job, NewCatalog, Updater};

/// What the pipeline needs from MQTT; `Mqtt` is the real one.
pub trait Publisher: Sync {
    fn publish_retained(&self, suffix: &str, payload: Vec<u8>);
    fn publish(&self, suffix: &str, payload: Vec<u8>);
    fn commands(&self) -> Vec<Received>;
    fn is_connected(&self) -> bool;
    fn reconnects(&self) -> u64;
}

impl Publisher for Mqtt {
    fn publish_retained(&self, suffix: &str, payload: Vec<u8>) {
        Mqtt::publish_retained(self, suffix, payload)
    }
    fn publish(&self, suffix: &str, payload: Vec<u8>) {
        Mqtt::publish(self, suffix, payload)
    }
    fn commands(&self) -> Vec<Received> {
        Mqtt::commands(self)
    }
    fn is_connected(&self) -> bool {
        Mqtt::is_connected(self)
    }
    fn reconnects(&self) -> u64 {
        Mqtt::reconnects(self)
    }
}

/// A one-value, latest-wins hand-off between two threads.
pub struct Slot<T> {
    value: Mutex<Option<T>>,
    ready: Condvar,
}

impl<T> Default for Slot<T> {
    fn default() -> Self {
        Slot { value: Mutex::new(None), ready: Condvar::new() }
    }
}

impl<T> Slot<T> {
    /// Puts `v`; returns true when it replaced a value nobody took (a drop).
    pub fn put(&self, v: T) -> bool {
        let replaced = self.value.lock().unwrap_or_else(|e| e.into_inner()).replace(v).is_some();
        self.ready.notify_one();
        replaced
    }

    /// Takes the value, waiting at most `timeout`.
    pub fn take(&self, timeout: Duration) -> Option<T> {
        let guard = self.value.lock().unwrap_or_else(|e| e.into_inner());
        let (mut guard, _) =
            self.ready.wait_timeout_while(guard, timeout, |v| v.is_none()).unwrap_or_else(|e| e.into_inner());
        guard.take()
    }
}

/// Counters shared by the capture thread and the loop; all monotonic.
#[derive(Default)]
pub struct Counters {
    pub frames_in: AtomicU64,
    pub frames_dropped: AtomicU64,
    pub frames_skipped: AtomicU64,
    pub frames_bad: AtomicU64,
    pub inferences: AtomicU64,
    pub camera_errors: AtomicU64,
    pub camera: Mutex<String>,
    /// Set when the capture thread has stopped (after `max_frames`, or at shutdown).
    pub capture_done: AtomicBool,
}

impl Counters {
    fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
    fn bump(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }
}

/// How the loop behaves (from `Config`).
#[derive(Debug, Clone)]
pub struct Options {
    pub category: String,
    pub top: usize,
    pub min_interval: Duration,
    pub change_threshold: f32,
    pub hold_off: Duration,
    pub stats_interval: Duration,
    pub rotate: u32,
    pub mirror: bool,
    pub roi: Option<[f32; 4]>,
    /// Stop after this many frames have been accounted for (soak tests); `None`: until shutdown.
    pub max_frames: Option<u64>,
    /// How often the loop says it is alive (`Notice::Watchdog`); `None`: never.
    pub watchdog: Option<Duration>,
    /// Publish each ranked product's distances (`[privacy] exact-scores`).
    pub exact_scores: bool,
    /// How long the last scene is kept after it was embedded (`[privacy] forget-after-s`).
    pub forget_after: Duration,
}

/// What the loop tells its supervisor (systemd, under `lookd run`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Notice<'a> {
    /// Start-up is over; the text says what is up.
    Ready(&'a str),
    /// The loop is alive. Sent from the loop itself, between frames: a hung inference, ranking
    /// or publish stops it, and the supervisor restarts the process.
    Watchdog,
    /// A new catalog is being made (systemd: RELOADING=1); the old one still serves.
    Reloading,
    /// It is in, or it failed and the old one stays (systemd: READY=1).
    Reloaded,
}

impl Options {
    pub fn from_config(c: &crate::config::Config, max_frames: Option<u64>) -> Options {
        Options {
            category: c.category.clone(),
            top: c.top,
            min_interval: c.min_interval,
            change_threshold: c.change_threshold,
            hold_off: c.hold_off,
            stats_interval: c.stats_interval,
            rotate: c.rotate,
            mirror: c.mirror,
            roi: c.roi,
            max_frames,
            watchdog: crate::systemd::watchdog_interval(),
            exact_scores: c.privacy.exact_scores,
            forget_after: c.privacy.forget_after,
        }
    }
}

/// The kiosk listener's product table, replaced with each new catalog, and where the catalog's
/// images are.
pub struct KioskProducts {
    pub table: crate::kiosk::SharedTable,
    pub images: std::path::PathBuf,
}

/// The model, loaded once; the cache, replaced whole when a new catalog comes; what may be
/// recommended from it.
pub struct Engine {
    pub folder: ModelFolder,
    pub scene: SceneModel,
    pub cache: ProductCache,
    /// Which catalog `cache` is.
    pub identity: Identity,
    stock: Stock,
    /// One flag per cache row: may it be recommended (`stock`).
    allowed: Vec<bool>,
    counts: Counts,
    /// Makes new catalogs beside the loop (none: the catalog never changes).
    pub updates: Option<Updater>,
    pub kiosk: Option<KioskProducts>,
    pixels: Vec<f32>,
}

impl Engine {
    pub fn new(folder: ModelFolder, scene: SceneModel, cache: ProductCache) -> Engine {
        let identity = Identity { version: "local".into(), sha256: String::new(), built_ms: 0 };
        let mut engine = Engine {
            folder,
            scene,
            cache,
            identity,
            stock: Stock::default(),
            allowed: Vec::new(),
            counts: Counts::default(),
            updates: None,
            kiosk: None,
            pixels: Vec::new(),
        };
        engine.restock();
        engine
    }

    /// Restricts what may be recommended to products passing `filter` (`[pipeline] filter`);
    /// refused, naming the problem, when no product could pass.
    pub fn set_filter(&mut self, filter: crate::stock::Filter) -> Result<(), String> {
        crate::stock::check_filter(&filter, self.cache.products())?;
        self.stock.filter = filter;
        self.restock();
        Ok(())
    }

    fn restock(&mut self) {
        (self.allowed, self.counts) = self.stock.mask(self.cache.products());
    }

    fn embed(&mut self, img: &RgbImage) -> Result<SceneEmbedding, ModelError> {
        let i = &self.folder.manifest.input;
        preprocess::to_model_input(img, None, i.width, i.height, &mut self.pixels)
            .map_err(|e| ModelError::Run(e.to_string()))?;
        self.scene.embed(&self.pixels)
    }

    /// Drops the last scene's model input: its buffer is zeroed, and the model is run once on
    /// that blank input, so that the buffers the model reuses between runs hold nothing of it.
    fn forget(&mut self) {
        self.pixels.fill(0.0);
        if !self.pixels.is_empty() {
            if let Err(e) = self.scene.embed(&self.pixels) {
                log::warn!("forgetting the scene: the blank run failed: {e}");
            }
        }
    }
}

/// Recent latencies of one stage, for p50/p95 in the stats.
#[derive(Default)]
struct Window(VecDeque<f32>);

impl Window {
    fn push(&mut self, ms: f32) {
        if self.0.len() == 256 {
            self.0.pop_front();
        }
        self.0.push_back(ms);
    }
    fn p50_p95(&self) -> [f32; 2] {
        let mut v: Vec<f32> = self.0.iter().copied().collect();
        if v.is_empty() {
            return [0.0; 2];
        }
        v.sort_by(f32::total_cmp);
        let at = |q: f32| v[((v.len() - 1) as f32 * q).round() as usize];
        [at(0.5), at(0.95)]
    }
}

/// Hands the allocator's free memory back to the system (glibc's `malloc_trim`). glibc serves
/// freed frame-sized buffers from a heap it does not shrink by itself, so without this a
/// daemon's resident memory steps up by megabytes some thousand frames in and stays there.
/// Called with each stats message, off the per-frame path (pinning glibc's mmap threshold
/// instead made every large tensor a fresh mmap and inference 1.8x slower). A no-op elsewhere.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free heap pages to the kernel; it takes the allocator's
    // own locks and is safe to call from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Makes every thread allocate from glibc's one main heap, so that [`release_free_memory`] can
/// hand back all the free memory there is. Without it glibc gives threads heaps of their own (up
/// to 8 per core), and `malloc_trim` never shrinks the top of such a heap: only the heap's own
/// frees do, past a threshold that grows to twice the largest freed tensor. A catalog rebuild's
/// thread left 6-13 MB resident that way after each reload (the SIGHUP test: "first reloads'
/// one-time cost" 6.0-7.8 MB and one run in six past +5% after the next reload; 0.6-0.8 MB and
/// +0.6-0.9% with one heap). The daemon's threads allocate little beside the loop's tensors, so
/// the shared lock costs nothing measurable (BENCHMARKS.md). Call before any thread starts; a
/// no-op off glibc.
pub fn use_one_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes a malloc tunable; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// A KiB field (`VmRSS`, `VmHWM`, ...) of `/proc/<pid>/status`, `pid` being a number or
/// `self`; 0 where /proc or the field is missing.
pub fn proc_status_kb(pid: &str, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let line =
        status.lines().find(|l| l.strip_prefix(field).is_some_and(|r| r.starts_with(':'))).unwrap_or("");
    line.split_whitespace().nth(1).and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// This process's resident memory in KiB (0 where /proc is missing).
pub fn rss_kb() -> u64 {
    proc_status_kb("self", "VmRSS")
}

/// This process's peak resident memory in KiB (0 where /proc is missing).
pub fn peak_rss_kb() -> u64 {
    proc_status_kb("self", "VmHWM")
}

fn ms(d: Duration) -> f32 {
    d.as_secs_f32() * 1e3
}

/// Whole seconds since the Unix epoch: the precision of every time lookd publishes.
fn unix_s(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// How long start-up waits for the first frame before declaring itself ready anyway.
pub const READY_WITHIN: Duration = Duration::from_secs(5);

/// Runs capture on its own thread and the loop on this one until `shutdown` (or `max_frames`).
/// `supervisor` hears `Notice::Ready` once, when the first frame has arrived or `READY_WITHIN`
/// has passed, and `Notice::Watchdog` every `opts.watchdog` while the loop turns. The capture
/// thread is not joined: a camera read can block for seconds, shutdown must not.
pub fn run(
    mut source: Box<dyn FrameSource>,
    engine: &mut Engine,
    publisher: &dyn Publisher,
    opts: &Options,
    shutdown: &Arc<AtomicBool>,
    supervisor: &mut dyn FnMut(Notice),
) -> Arc<Counters> {
    let counters = Arc::new(Counters::default());
    let slot: Arc<Slot<Frame>> = Arc::default();
    {
        let (counters, slot, shutdown) = (counters.clone(), slot.clone(), shutdown.clone());
        let max = opts.max_frames;
        let spawned = std::thread::Builder::new()
            .name("capture".into())
            .spawn(move || capture_loop(source.as_mut(), &slot, &counters, &shutdown, max));
        if let Err(e) = spawned {
            log::error!("cannot start the capture thread: {e}");
        }
    }
    Loop::new(engine, publisher, opts, counters.clone()).run(&slot, shutdown, supervisor);
    counters
}

fn capture_loop(
    source: &mut dyn FrameSource,
    slot: &Slot<Frame>,
    c: &Counters,
    shutdown: &AtomicBool,
    max_frames: Option<u64>,
) {
    let mut backoff = Duration::from_millis(250);
    let mut failing = false;
    while !shutdown.load(Ordering::Relaxed) && max_frames.is_none_or(|m| Counters::get(&c.frames_in) < m) {
        match source.next_frame() {
            Ok(frame) => {
                if failing {
                    log::info!("camera back: {}", source.describe());
                    failing = false;
                }
                backoff = Duration::from_millis(250);
                *c.camera.lock().unwrap_or_else(|e| e.into_inner()) = format!("ok: {}", source.describe());
                Counters::bump(&c.frames_in);
                if slot.put(frame) {
                    Counters::bump(&c.frames_dropped);
                }
            }
            Err(e) => {
                Counters::bump(&c.camera_errors);
                if !failing {
                    log::warn!("{e}; retrying");
                    failing = true;
                }
                *c.camera.lock().unwrap_or_else(|e| e.into_inner()) = format!("error: {e}");
                let end = Instant::now() + backoff;
                while Instant::now() < end && !shutdown.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(20));
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
    c.capture_done.store(true, Ordering::Release);
}

/// The configured category `name` in `cache`, else the cache's first (none: an empty cache).
fn configured_category(cache: &ProductCache, name: &str) -> Option<CategoryBlock> {
    cache.find_category(name).ok().or_else(|| cache.categories().first()).cloned()
}

struct Loop<'a> {
    engine: &'a mut Engine,
    publisher: &'a dyn Publisher,
    opts: &'a Options,
    c: Arc<Counters>,
    category: CategoryBlock,
    last_thumb: Vec<u8>,
    last_scene: Option<(SceneEmbedding, u64, SystemTime, StageTimes)>,
    /// The categories whose retained ranking comes from `last_scene`: deleted when it is forgotten.
    published: std::collections::BTreeSet<String>,
    changed_since: Option<Instant>,
    last_embed: Option<Instant>,
    windows: BTreeMap<&'static str, Window>,
    started: Instant,
    last_stats: (Instant, u64, u64),
    last_watchdog: Instant,
    /// While a new catalog is made: what, and how far.
    building: Option<Progress>,
    /// The last fleet announcement heard: a reload fetches it again.
    last_fleet: Option<FleetCatalog>,
    swap_ms: f32,
}

impl<'a> Loop<'a> {
    fn new(
        engine: &'a mut Engine,
        publisher: &'a dyn Publisher,
        opts: &'a Options,
        c: Arc<Counters>,
    ) -> Loop<'a> {
        let category = configured_category(&engine.cache, &opts.category).unwrap_or(CategoryBlock {
            path: opts.category.clone(),
            start: 0,
            len: 0,
        });
        let now = Instant::now();
        Loop {
            engine,
            publisher,
            opts,
            c,
            category,
            last_thumb: Vec::new(),
            last_scene: None,
            published: Default::default(),
            changed_since: None,
            last_embed: None,
            windows: BTreeMap::new(),
            started: now,
            last_stats: (now, 0, 0),
            last_watchdog: now,
            building: None,
            last_fleet: None,
            swap_ms: 0.0,
        }
    }

    fn run(&mut self, slot: &Slot<Frame>, shutdown: &AtomicBool, supervisor: &mut dyn FnMut(Notice)) {
        self.publish_category_state();
        self.publish_catalog_state();
        let mut announced = false;
        while !shutdown.load(Ordering::Relaxed) {
            if !announced && (Counters::get(&self.c.frames_in) > 0 || self.started.elapsed() >= READY_WITHIN)
            {
                let camera = self.c.camera.lock().unwrap_or_else(|e| e.into_inner()).clone();
                let broker =
                    if self.publisher.is_connected() { "connected" } else { "not connected (retrying)" };
                supervisor(Notice::Ready(&format!("camera {camera}; broker {broker}")));
                announced = true;
            }
            self.ping_watchdog(supervisor);
            self.handle_commands(supervisor);
            self.handle_updates(supervisor);
            self.forget_if_stale();
            if self.last_stats.0.elapsed() >= self.opts.stats_interval {
                self.publish_stats();
            }
            // Checked before the take: a frame put before capture ended is still handled below.
            let capture_over = self.c.capture_done.load(Ordering::Acquire);
            match slot.take(Duration::from_millis(100)) {
                Some(frame) => {
                    self.handle_frame(frame);
                }
                None if capture_over => break,
                None => {}
            }
        }
        self.publish_stats();
    }

    /// Forgets the last scene `forget_after` after it was embedded (docs/privacy.md): its
    /// embedding, its thumbnail and the model's input go, the retained rankings made from it are
    /// deleted (an empty retained message), and until a new scene is embedded a command re-ranks
    /// nothing. A scene still in front of the camera is embedded again from the next frame (no
    /// thumbnail to compare with: it counts as changed).
    fn forget_if_stale(&mut self) {
        if self.last_scene.is_none() || self.last_embed.is_none_or(|t| t.elapsed() < self.opts.forget_after) {
            return;
        }
        self.last_scene = None;
        self.last_thumb = Vec::new();
        self.changed_since = None;
        self.engine.forget();
        for slug in std::mem::take(&mut self.published) {
            self.publisher.publish_retained(&format!("recommendations/{slug}"), Vec::new());
        }
        log::info!("forgot the last scene: none newer in {} s", self.opts.forget_after.as_secs());
    }

    fn ping_watchdog(&mut self, supervisor: &mut dyn FnMut(Notice)) {
        if let Some(every) = self.opts.watchdog {
            if self.last_watchdog.elapsed() >= every {
                supervisor(Notice::Watchdog);
                self.last_watchdog = Instant::now();
            }
        }
    }

    /// Returns `Some(())` when the frame was embedded and published.
    fn handle_frame(&mut self, frame: Frame) -> Option<()> {
        let t0 = Instant::now();
        let img = match self.convert(&frame) {
            Ok(img) => img,
            Err(e) => {
                Counters::bump(&self.c.frames_bad);
                log::debug!("frame {} dropped: {e}", frame.seq);
                return None;
            }
        };
        let thumb = preprocess::thumbnail(&img);
        let convert = t0.elapsed();
        let changed = preprocess::difference(&thumb, &self.last_thumb) >= self.opts.change_threshold;
        if !changed {
            self.changed_since = None;
            Counters::bump(&self.c.frames_skipped);
            return None;
        }
        let since = *self.changed_since.get_or_insert_with(Instant::now);
        let rate_ok = self.last_embed.is_none_or(|t| t.elapsed() >= self.opts.min_interval);
        if since.elapsed() < self.opts.hold_off || !rate_ok {
            Counters::bump(&self.c.frames_skipped);
            return None;
        }
        let t1 = Instant::now();
        let scene = match self.engine.embed(&img) {
            Ok(s) => s,
            Err(e) => {
                Counters::bump(&self.c.frames_bad);
                log::warn!("frame {}: {e}", frame.seq);
                return None;
            }
        };
        let embed = t1.elapsed();
        Counters::bump(&self.c.inferences);
        self.last_thumb = thumb;
        self.last_embed = Some(Instant::now());
        self.changed_since = None;
        let times = StageTimes { convert: ms(convert), embed: ms(embed), rank: 0.0, total: 0.0 };
        self.last_scene = Some((scene, frame.seq, frame.ts, times));
        // Rankings of an earlier scene stay until this one's replace them, or until it is forgotten.
        self.publish_recommendations(t0);
        Some(())
    }

    /// The frame as the model sees it (the region of interest, stretched to the model's size).
    fn convert(&self, frame: &Frame) -> Result<RgbImage, preprocess::PreprocessError> {
        let i = &self.engine.folder.manifest.input;
        let (w, h) = (i.width as u32, i.height as u32);
        if self.opts.rotate == 0 {
            // YUV frames are resized before they are converted (pixel::model_image).
            return pixel::model_image(frame, self.opts.roi, self.opts.mirror, w, h);
        }
        let img = preprocess::orient(pixel::to_rgb(frame)?, self.opts.mirror, self.opts.rotate);
        let crop = self.opts.roi.map(|roi| preprocess::roi_rect(roi, img.width(), img.height()));
        preprocess::model_image(&img, crop, i.width, i.height)
    }

    fn publish_recommendations(&mut self, started: Instant) {
        let Some((scene, seq, ts, mut times)) = self.last_scene.clone() else { return };
        let t = Instant::now();
        let items = match recommend(
            &scene,
            &self.engine.cache,
            &self.engine.folder,
            &self.category,
            self.opts.top,
            Some(&self.engine.allowed),
        ) {
            Ok(items) => items,
            Err(e) => {
                log::warn!("ranking {}: {e}", self.category.path);
                return;
            }
        };
        times.rank = ms(t.elapsed());
        times.total = ms(started.elapsed());
        for (stage, v) in
            [("convert", times.convert), ("embed", times.embed), ("rank", times.rank), ("total", times.total)]
        {
            self.windows.entry(stage).or_default().push(v);
        }
        let m = &self.engine.folder.manifest;
        let msg = Recommendations {
            frame: seq,
            ts: unix_s(ts),
            model: m.model_id(),
            trained: m.trained,
            category: self.category.path.clone(),
            items: items.into_iter().map(|r| Item::new(r, self.opts.exact_scores)).collect(),
            latency_ms: times,
        };
        let slug = payload::slug(&self.category.path);
        self.publisher.publish_retained(
            &format!("recommendations/{slug}"),
            serde_json::to_vec(&msg).unwrap_or_default(),
        );
        self.published.insert(slug);
    }

    fn publish_category_state(&self) {
        let available =
            self.engine.cache.categories().iter().map(|c| (payload::slug(&c.path), c.path.clone())).collect();
        let state = CategoryState {
            category: self.category.path.clone(),
            slug: payload::slug(&self.category.path),
            available,
        };
        self.publisher.publish_retained("category/state", serde_json::to_vec(&state).unwrap_or_default());
    }

    fn handle_commands(&mut self, supervisor: &mut dyn FnMut(Notice)) {
        for Received { suffix, command } in self.publisher.commands() {
            let result = match command {
                Ok(Command::SetCategory(name)) => self.set_category(&name),
                Ok(Command::Reload) => self.reload(&suffix, supervisor),
                Ok(Command::Unavailable(ids)) => {
                    let n = ids.len();
                    self.engine.stock.unavailable = ids.into_iter().collect();
                    self.restocked();
                    log::info!("{n} products marked unavailable");
                    Ok(())
                }
                Ok(Command::SetFilter(filter)) => {
                    let said = format!("{filter:?}");
                    self.engine.set_filter(filter).map(|()| {
                        log::info!("filter set to {said}");
                        self.restocked();
                    })
                }
                Ok(Command::Fleet(f)) => self.fleet(f, &suffix, false, supervisor),
                Err(e) => Err(e),
            };
            if let Err(error) = result {
                self.refuse(&suffix, error);
            }
        }
    }

    /// Says on `<prefix>/error` what was refused, and why.
    fn refuse(&self, topic: &str, error: String) {
        log::warn!("{topic}: refused: {error}");
        let e = CommandError { topic: topic.to_string(), error, ts: unix_s(SystemTime::now()) };
        self.publisher.publish("error", serde_json::to_vec(&e).unwrap_or_default());
    }

    fn set_category(&mut self, name: &str) -> Result<(), String> {
        let block = self.engine.cache.find_category(name)?.clone();
        log::info!("category set to {}", block.path);
        self.category = block;
        self.publish_category_state();
        // Rank the scene we have for the new category at once: no new frame needed.
        self.publish_recommendations(Instant::now());
        Ok(())
    }

    /// The stock or the filter changed: the state says so, and the screen drops what left at once.
    fn restocked(&mut self) {
        self.engine.restock();
        self.publish_catalog_state();
        self.publish_recommendations(Instant::now());
    }

    /// A reload (SIGHUP, `catalog/reload`): the fleet's last catalog fetched again where the
    /// mirror follows a fleet, else a rebuild from the catalog CSV.
    fn reload(&mut self, topic: &str, supervisor: &mut dyn FnMut(Notice)) -> Result<(), String> {
        let Some(updates) = &self.engine.updates else {
            return Err("this lookd cannot reload its catalog".into());
        };
        if let (Some(_), Some(f)) = (&updates.fleet_topic, self.last_fleet.clone()) {
            // Fetched again even when it is the catalog served: a reload is how a store repairs
            // a mirror (docs/fleet.md).
            return self.fleet(f, topic, true, supervisor);
        }
        updates.submit(Job::Rebuild { why: topic.to_string() }, topic);
        supervisor(Notice::Reloading);
        Ok(())
    }

    /// A fleet announcement: fetched unless it is the catalog served already (a re-delivered
    /// message does nothing), or always when `again` (a reload).
    fn fleet(
        &mut self,
        f: FleetCatalog,
        topic: &str,
        again: bool,
        supervisor: &mut dyn FnMut(Notice),
    ) -> Result<(), String> {
        let Some(updates) = &self.engine.updates else {
            return Err("this lookd follows no fleet".into());
        };
        self.last_fleet = Some(f.clone());
        if !again && f.sha256 == self.engine.identity.sha256 {
            log::info!("fleet catalog {}: already serving it", f.version);
            return Ok(());
        }
        updates.submit(Job::Fetch(f), topic);
        supervisor(Notice::Reloading);
        Ok(())
    }

    fn handle_updates(&mut self, supervisor: &mut dyn FnMut(Notice)) {
        let Some(updates) = &self.engine.updates else { return };
        let signalled = updates.take_reload_signal();
        let events = updates.events();
        if signalled {
            if let Err(e) = self.reload("SIGHUP", supervisor) {
                self.refuse("SIGHUP", e);
            }
        }
        for event in events {
            match event {
                Event::Progress(p) => {
                    self.building = Some(p);
                    self.publish_catalog_state();
                }
                Event::Ready(new) => {
                    self.swap(*new);
                    supervisor(Notice::Reloaded);
                }
                Event::Failed { topic, error } => {
                    self.building = None;
                    self.publish_catalog_state();
                    self.refuse(&topic, error);
                    supervisor(Notice::Reloaded);
                }
            }
        }
    }

    /// Puts a new catalog in, between two frames. The old cache is dropped here (its map goes);
    /// the category, the stock and the filter carry over where the new catalog allows.
    fn swap(&mut self, new: NewCatalog) {
        let t = Instant::now();
        let NewCatalog { cache, identity, how } = new;
        self.engine.cache = cache;
        self.engine.identity = identity;
        self.building = None;
        let mut problems = Vec::new();
        if let Err(e) = crate::stock::check_filter(&self.engine.stock.filter, self.engine.cache.products()) {
            problems.push(format!("the filter was dropped: {e}"));
            self.engine.stock.filter.clear();
        }
        self.engine.restock();
        let cache = &self.engine.cache;
        match cache.find_category(&self.category.path) {
            Ok(same) => self.category = same.clone(),
            Err(_) => {
                if let Some(c) = configured_category(cache, &self.opts.category) {
                    problems.push(format!(
                        "category {:?} is not in the new catalog: showing {}",
                        self.category.path, c.path
                    ));
                    self.category = c;
                }
            }
        }
        if let Some(k) = &self.engine.kiosk {
            let table = crate::kiosk::ProductTable::new(self.engine.cache.products(), &k.images);
            *k.table.write().unwrap_or_else(|e| e.into_inner()) = table;
        }
        self.swap_ms = ms(t.elapsed());
        log::info!(
            "catalog swapped in ({how}): version {}, {} products, in {:.2} ms",
            self.engine.identity.version,
            self.engine.cache.len(),
            self.swap_ms
        );
        for p in problems {
            self.refuse("catalog", p);
        }
        self.publish_category_state();
        self.publish_catalog_state();
        self.publish_recommendations(Instant::now());
    }

    fn publish_catalog_state(&self) {
        let (e, cache) = (&self.engine, &self.engine.cache);
        let state = CatalogState {
            state: if self.building.is_some() { "building" } else { "ready" }.into(),
            version: e.identity.version.clone(),
            sha256: e.identity.sha256.clone(),
            products: cache.len(),
            categories: cache.categories().len(),
            model: cache.model_id().to_string(),
            fingerprint: crate::model::hex(cache.fingerprint()),
            built_ms: e.identity.built_ms,
            progress: self.building.clone(),
            unavailable: e.counts.unavailable,
            filter: e.stock.filter.clone(),
            recommendable: e.counts.allowed,
            swap_ms: self.swap_ms,
        };
        self.publisher.publish_retained("catalog/state", serde_json::to_vec(&state).unwrap_or_default());
    }

    fn publish_stats(&mut self) {
        let (then, frames_then, inf_then) = self.last_stats;
        let dt = then.elapsed().as_secs_f64().max(1e-3);
        let (frames, inferences) = (Counters::get(&self.c.frames_in), Counters::get(&self.c.inferences));
        release_free_memory(); // before measuring, so the stats report what the process holds
        let stats = Stats {
            uptime_s: self.started.elapsed().as_secs_f64(),
            fps_in: (frames - frames_then) as f64 / dt,
            fps_processed: (inferences - inf_then) as f64 / dt,
            frames_in: frames,
            frames_dropped: Counters::get(&self.c.frames_dropped),
            frames_skipped: Counters::get(&self.c.frames_skipped),
            frames_bad: Counters::get(&self.c.frames_bad),
            inferences,
            camera_errors: Counters::get(&self.c.camera_errors),
            camera: self.c.camera.lock().unwrap_or_else(|e| e.into_inner()).clone(),
            broker: if self.publisher.is_connected() { "connected" } else { "disconnected" }.into(),
            reconnects: self.publisher.reconnects(),
            category: self.category.path.clone(),
            cache_products: self.engine.cache.len(),
            catalog_version: self.engine.identity.version.clone(),
            rss_kb: rss_kb(),
            latency_ms: self.windows.iter().map(|(k, w)| (k.to_string(), w.p50_p95())).collect(),
        };
        log::info!(
            "stats: {} frames in ({} dropped, {} skipped, {} bad), {} inferences, camera {}, broker {}, rss {} KiB",
            stats.frames_in,
            stats.frames_dropped,
            stats.frames_skipped,
            stats.frames_bad,
            stats.inferences,
            stats.camera,
            stats.broker,
            stats.rss_kb
        );
        crate::systemd::notify(&format!(
            "STATUS={} inferences, {} frames, broker {}, catalog {}",
            stats.inferences, stats.frames_in, stats.broker, stats.catalog_version
        ));
        self.publisher.publish("stats", serde_json::to_vec(&stats).unwrap_or_default());
        self.last_stats = (Instant::now(), frames, inferences);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_keeps_only_the_latest_and_counts_replacements() {
        let slot = Slot::default();
        assert!(!slot.put(1));
        assert!(slot.put(2));
        assert_eq!(slot.take(Duration::ZERO), Some(2));
        assert_eq!(slot.take(Duration::from_millis(5)), None);
    }

    #[test]
    fn percentiles() {
        let mut w = Window::default();
        (1..=100).for_each(|i| w.push(i as f32));
        assert_eq!(w.p50_p95(), [51.0, 95.0]);
        (0..300).for_each(|_| w.push(1.0));
        assert_eq!(w.p50_p95(), [1.0, 1.0], "only the last 256 count");
    }
}
