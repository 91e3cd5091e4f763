//! The daemon's loop: capture -> one-slot latest-wins hand-off -> inference -> publisher.
//!
//! Capture runs on its own thread and never waits for inference: a frame not yet taken is
//! replaced by the next, and the replacement counted as a drop. Inference skips frames whose
//! scene has not changed (a cheap thumbnail difference), waits until a change has lasted the
//! hold-off (no flicker), and respects a maximum rate. Publishing never blocks (the publisher
//! keeps the latest message per topic while the broker is away). Every failure in the loop is
//! logged, counted and survived; nothing here exits the process.

//!
//! Its parts: `handoff` (the capture thread, feeding the slot), `engine` (the model, the cache
//! and what may be recommended), `frames` (the loop: a frame to a published ranking, stats, the
//! watchdog, forgetting the scene), `commands` (the MQTT commands and the catalog's updates),
//! `memory` (the process's heap and resident size).

mod commands;
mod engine;
mod frames;
mod handoff;
mod memory;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use crate::capture::{Frame, FrameSource};
use crate::publish::{Mqtt, Received};

pub use crate::slot::Slot;
pub use engine::{Engine, KioskProducts};
pub use memory::{peak_rss_kb, proc_status_kb, release_free_memory, rss_kb, use_one_heap};

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

/// Told each embedded frame's time per stage (`convert`, `embed`, `rank`, `total`), in ms:
/// `metrics::Metrics` keeps them as histograms for `GET /metrics`.
pub trait StageObserver: Send + Sync {
    fn observe(&self, stage: &'static str, ms: f32);
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
    /// The broker link as the loop last saw it (for `GET /metrics`).
    pub broker_connected: AtomicBool,
    pub reconnects: AtomicU64,
    /// The catalog served: its version and product count, and the model it was made with (its
    /// id and product fingerprint), for `GET /metrics`.
    pub catalog: Mutex<Served>,
    /// Set when the capture thread has stopped (after `max_frames`, or at shutdown).
    pub capture_done: AtomicBool,
}

/// What the loop serves, as `GET /metrics` reports it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Served {
    pub version: String,
    pub products: u64,
    pub model: String,
    pub fingerprint: String,
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
    /// Variety re-rank of each ranking's head (`recommend`'s `diversity`).
    pub diversity: f32,
    /// Rank by the hub-corrected distance when the model has a mean scene (`recommend::Ranking`).
    pub correct_hubs: bool,
    /// Add the cache's exposure offsets, when it has them (`recommend::Ranking::exposure`).
    pub cap_exposure: bool,
    /// No product on the screen for more than this share of the last `share_looks` shoppers
    /// (`rotation::Rotation`); 0: off.
    pub max_share: f32,
    pub share_looks: usize,
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
            diversity: c.diversity,
            correct_hubs: c.correct_hubs,
            cap_exposure: c.cap_exposure,
            max_share: c.max_share,
            share_looks: c.share_looks,
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
    let counters = engine.counters.clone();
    let slot: Arc<Slot<Frame>> = Arc::default();
    {
        let (counters, slot, shutdown) = (counters.clone(), slot.clone(), shutdown.clone());
        let max = opts.max_frames;
        let spawned = std::thread::Builder::new()
            .name("capture".into())
            .spawn(move || handoff::capture_loop(source.as_mut(), &slot, &counters, &shutdown, max));
        if let Err(e) = spawned {
            log::error!("cannot start the capture thread: {e}");
        }
    }
    frames::Loop::new(engine, publisher, opts, counters.clone()).run(&slot, shutdown, supervisor);
    counters
}
