//! Camera faults and the watchdog, injected into the real pipeline in-process: a scripted frame
//! source (there is no camera on these machines) feeds the daemon's loop with the tiny model
//! and a real product cache; a recording publisher stands in for MQTT, which other tests cover.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use lookd::cache::ProductCache;
use lookd::capture::{CaptureError, Frame, FrameSource, PixelFormat};
use lookd::model::{ModelFolder, SceneModel};
use lookd::pipeline::{self, Counters, Engine, Notice, Options, Publisher};
use lookd::publish::Received;

use crate::{tiny_cache, tiny_model};

enum Step {
    Frame(PixelFormat, u32, u32, Vec<u8>),
    Fail(CaptureError),
    Stall(Duration),
}

/// Plays its steps in order, one every `gap` (so the loop takes each frame before the next).
struct Script {
    steps: std::vec::IntoIter<Step>,
    gap: Duration,
    seq: u64,
}

impl FrameSource for Script {
    fn next_frame(&mut self) -> Result<Frame, CaptureError> {
        std::thread::sleep(self.gap);
        loop {
            match self.steps.next() {
                Some(Step::Stall(d)) => std::thread::sleep(d),
                Some(Step::Fail(e)) => return Err(e),
                Some(Step::Frame(format, width, height, pixels)) => {
                    self.seq += 1;
                    return Ok(Frame { pixels, format, width, height, seq: self.seq, ts: SystemTime::now() });
                }
                None => return Err(CaptureError::Unavailable("script over".into())),
            }
        }
    }
    fn describe(&self) -> String {
        "script".into()
    }
}

/// Records what would go to the broker (and the camera frame of each recommendation);
/// `hang_on` makes the n-th recommendation take `hang`.
#[derive(Default)]
struct Recorder {
    sent: Mutex<Vec<String>>,
    frames: Mutex<Vec<u64>>,
    /// The product ids of each recommendation, in order.
    lists: Mutex<Vec<Vec<String>>>,
    hang_on: Option<(usize, Duration)>,
}

impl Publisher for Recorder {
    fn publish_retained(&self, suffix: &str, payload: Vec<u8>) {
        // An empty payload deletes the retained ranking (a forgotten scene): no list.
        if suffix.starts_with("recommendations/") && !payload.is_empty() {
            let v: serde_json::Value = serde_json::from_slice(&payload).unwrap();
            self.frames.lock().unwrap().push(v["frame"].as_u64().unwrap());
            let ids = v["items"].as_array().unwrap().iter().map(|i| i["id"].as_str().unwrap().to_string());
            self.lists.lock().unwrap().push(ids.collect());
        }
        let n = {
            let mut sent = self.sent.lock().unwrap();
            sent.push(suffix.to_string());
            sent.iter().filter(|s| s.starts_with("recommendations/")).count()
        };
        if let Some((at, hang)) = self.hang_on {
            if suffix.starts_with("recommendations/") && n == at {
                std::thread::sleep(hang);
            }
        }
    }
    fn publish(&self, suffix: &str, _: Vec<u8>) {
        self.sent.lock().unwrap().push(suffix.to_string());
    }
    fn commands(&self) -> Vec<Received> {
        Vec::new()
    }
    fn is_connected(&self) -> bool {
        true
    }
    fn reconnects(&self) -> u64 {
        0
    }
}

fn engine(dir: &std::path::Path) -> Engine {
    engine_of(dir, &tiny_model())
}

/// An engine on a model folder of the tiny model's graph (its fingerprint: the tiny cache fits).
fn engine_of(dir: &std::path::Path, model: &std::path::Path) -> Engine {
    let cache = tiny_cache(dir, 8);
    let folder = ModelFolder::open(model).unwrap();
    let scene = SceneModel::load(&folder).unwrap();
    let cache = ProductCache::open(&cache, Some(&folder.product_fingerprint())).unwrap();
    Engine::new(folder, scene, cache)
}

fn options(frames: u64) -> Options {
    Options {
        category: "shoes".into(),
        top: 3,
        diversity: lookd::rank::DEFAULT_DIVERSITY,
        correct_hubs: true,
        cap_exposure: true,
        max_share: lookd::rotation::DEFAULT_MAX_SHARE,
        share_looks: lookd::rotation::DEFAULT_LOOKS,
        min_interval: Duration::ZERO,
        change_threshold: 0.0, // every readable frame is embedded
        hold_off: Duration::ZERO,
        stats_interval: Duration::from_secs(3600),
        rotate: 0,
        mirror: false,
        roi: None,
        max_frames: Some(frames),
        watchdog: Some(Duration::from_millis(50)),
        exact_scores: false,
        forget_after: Duration::from_secs(3600),
    }
}

fn yuyv(width: u32, height: u32, seed: u8) -> Vec<u8> {
    (0..width * height * 2).map(|i| (i as u8).wrapping_mul(seed).wrapping_add(seed)).collect()
}

fn jpeg(width: u32, height: u32, seed: u8) -> Vec<u8> {
    let img = image::RgbImage::from_fn(width, height, |x, y| {
        image::Rgb([(x * 3) as u8 ^ seed, (y * 5) as u8, seed.wrapping_mul(7)])
    });
    let mut out = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Jpeg).unwrap();
    out
}

/// Runs the loop over `steps`; returns the counters, what was published and when each watchdog
/// notice came.
fn run(steps: Vec<Step>, publisher: &Recorder) -> (Arc<Counters>, Vec<Instant>) {
    let frames = steps.iter().filter(|s| matches!(s, Step::Frame(..))).count() as u64;
    run_with(steps, publisher, Duration::from_millis(120), &options(frames))
}

/// `run` with its frame gap and options.
fn run_with(
    steps: Vec<Step>,
    publisher: &Recorder,
    gap: Duration,
    opts: &Options,
) -> (Arc<Counters>, Vec<Instant>) {
    let dir = tempfile::tempdir().unwrap();
    run_engine(engine(dir.path()), steps, publisher, gap, opts)
}

/// `run_with` on a given engine.
fn run_engine(
    mut engine: Engine,
    steps: Vec<Step>,
    publisher: &Recorder,
    gap: Duration,
    opts: &Options,
) -> (Arc<Counters>, Vec<Instant>) {
    let source = Script { steps: steps.into_iter(), gap, seq: 0 };
    let shutdown = Arc::new(AtomicBool::new(false));
    let mut pings = Vec::new();
    let mut ready = 0;
    let mut supervisor = |n: Notice| match n {
        Notice::Watchdog => pings.push(Instant::now()),
        Notice::Ready(_) => ready += 1,
        Notice::Reloading | Notice::Reloaded => {}
    };
    let counters = pipeline::run(Box::new(source), &mut engine, publisher, opts, &shutdown, &mut supervisor);
    shutdown.store(true, Ordering::Relaxed);
    assert_eq!(ready, 1, "READY exactly once");
    (counters, pings)
}

fn get(c: &std::sync::atomic::AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

fn largest_gap(pings: &[Instant]) -> Duration {
    pings.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(Duration::MAX)
}

#[test]
fn camera_faults_are_counted_never_fatal_and_the_waiting_loop_keeps_the_watchdog_fed() {
    let truncated = jpeg(64, 48, 3)[..200].to_vec();
    let steps = vec![
        Step::Frame(PixelFormat::Yuyv, 64, 48, yuyv(64, 48, 1)),
        Step::Frame(PixelFormat::Mjpg, 64, 48, truncated),
        Step::Frame(PixelFormat::Yuyv, 64, 48, Vec::new()), // zero-length buffer
        Step::Frame(PixelFormat::Yuyv, 64, 48, vec![7; 100]), // shorter than 64x48 needs
        Step::Fail(CaptureError::Read("device vanished".into())),
        Step::Stall(Duration::from_millis(1500)), // no frame for a while: only waiting
        Step::Frame(PixelFormat::Yuyv, 32, 24, yuyv(32, 24, 5)), // resolution change
        Step::Frame(PixelFormat::Mjpg, 80, 60, jpeg(80, 60, 9)),
        Step::Frame(PixelFormat::Nv12, 33, 17, vec![90; 33 * 17 + 2 * 17 * 9]), // odd size
    ];
    let publisher = Recorder::default();
    let (c, pings) = run(steps, &publisher);
    assert_eq!(get(&c.frames_in), 7);
    assert_eq!(get(&c.frames_bad), 3, "truncated MJPG, empty buffer, short buffer");
    assert_eq!(get(&c.camera_errors), 1);
    assert_eq!(get(&c.frames_dropped), 0);
    assert_eq!(get(&c.inferences), 4, "every readable frame, whatever its size, was ranked");
    let sent = publisher.sent.lock().unwrap();
    assert_eq!(sent.iter().filter(|s| s.starts_with("recommendations/")).count(), 4);
    assert!(largest_gap(&pings) < Duration::from_millis(400), "watchdog gap {:?}", largest_gap(&pings));
}

#[test]
fn a_hung_loop_stops_feeding_the_watchdog_and_resumes_after() {
    // 16 frames, 120 ms apart: the capture outlasts the hang, so the loop turns again after it.
    let steps = (1..=16).map(|i| Step::Frame(PixelFormat::Yuyv, 32, 24, yuyv(32, 24, i * 13))).collect();
    let hang = Duration::from_millis(1200);
    let publisher = Recorder { hang_on: Some((2, hang)), ..Recorder::default() };
    let (c, pings) = run(steps, &publisher);
    // Frames that came while the loop hung replaced each other: counted as dropped, not lost.
    assert_eq!(get(&c.inferences) + get(&c.frames_dropped), 16);
    let gap = largest_gap(&pings);
    assert!(gap >= hang, "the watchdog was fed while the loop hung ({gap:?}): systemd could not restart it");
    let hung_at = pings.windows(2).position(|w| w[1] - w[0] == gap).unwrap();
    assert!(pings.len() > hung_at + 2, "pings resume after the hang");
}

/// A uniform grey YUYV frame of luma `y`: scenes of lumas 25 apart differ by 0.114 in the
/// change gate's measure, identical ones by 0.
fn grey(y: u8) -> Step {
    Step::Frame(PixelFormat::Yuyv, 32, 24, [y, 128].repeat(32 * 24))
}

#[test]
fn the_change_gate_and_hold_off_embed_a_scene_once_it_has_changed_and_stayed_changed() {
    // A frame every 200 ms; a scene must differ from the last embedded one by 0.05 and stay
    // so for 500 ms (frames 4 and 10 are the first to have waited that long).
    let (a, b, c) = (60, 110, 160);
    let lumas = [a, a, a, a, a, a, b, b, b, b, c, b, b, b];
    let opts = Options {
        change_threshold: 0.05,
        hold_off: Duration::from_millis(500),
        ..options(lumas.len() as u64)
    };
    let publisher = Recorder::default();
    let (counters, _) =
        run_with(lumas.iter().map(|&y| grey(y)).collect(), &publisher, Duration::from_millis(200), &opts);
    // 1-3: the first scene, changing (from nothing) for less than the hold-off; 4: embedded;
    // 5-6: unchanged; 7-9: the second scene, held off; 10: embedded; 11: a flicker (c) that
    // reverts (12-14 are b again, unchanged), so it is never embedded.
    assert_eq!(*publisher.frames.lock().unwrap(), [4, 10]);
    assert_eq!(get(&counters.inferences), 2);
    assert_eq!(get(&counters.frames_skipped), 12);
    assert_eq!(get(&counters.frames_dropped), 0);
}

#[test]
fn max_rate_embeds_at_most_once_per_interval_however_fast_the_scene_changes() {
    // Every frame a new scene, a frame every 200 ms, at most one embedding per 500 ms: frames
    // 1, 4 and 7 (0, 600 and 1200 ms); the others wait for the rate and are skipped.
    let lumas: Vec<u8> = (0..8).map(|k| 30 + 25 * k).collect();
    let opts = Options { change_threshold: 0.05, min_interval: Duration::from_millis(500), ..options(8) };
    let publisher = Recorder::default();
    let (counters, _) =
        run_with(lumas.iter().map(|&y| grey(y)).collect(), &publisher, Duration::from_millis(200), &opts);
    assert_eq!(*publisher.frames.lock().unwrap(), [1, 4, 7]);
    assert_eq!(get(&counters.inferences), 3);
    assert_eq!(get(&counters.frames_skipped), 5);
}

/// `[pipeline] diversity` and `correct-hubs` reach the loop: the same scene ranked by distance
/// (top 3 and top 6) and re-ranked for variety (top 3) keeps its first product, and the
/// re-ranked list holds other products, all from the distance order's best 2 x 3; with a model
/// that has a mean scene, the hub-corrected list is another order.
#[test]
fn the_loop_publishes_lists_made_as_its_ranking_settings_ask() {
    // The tiny model with a strong mean scene, for the hubness correction.
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    std::fs::create_dir(&model).unwrap();
    for f in ["embed.onnx", "reference.json"] {
        std::fs::copy(tiny_model().join(f), model.join(f)).unwrap();
    }
    let manifest = std::fs::read_to_string(tiny_model().join("manifest.toml")).unwrap();
    let manifest = manifest.replace("regions = 4\n", "regions = 4\nmean-scene = \"mean.json\"\n");
    std::fs::write(model.join("manifest.toml"), manifest).unwrap();
    std::fs::write(model.join("mean.json"), "[3, -3, 3, -3, 3, -3, 3, -3]").unwrap();
    let list = |top: usize, diversity: f32, correct_hubs: bool| {
        let publisher = Recorder::default();
        let opts = Options { top, diversity, correct_hubs, ..options(1) };
        let step = Step::Frame(PixelFormat::Mjpg, 64, 48, jpeg(64, 48, 11));
        let work = tempfile::tempdir().unwrap();
        run_engine(engine_of(work.path(), &model), vec![step], &publisher, Duration::from_millis(20), &opts);
        let lists = publisher.lists.lock().unwrap();
        assert_eq!(lists.len(), 1, "one scene, one list");
        lists[0].clone()
    };
    let (plain, head, varied) = (list(3, 0.0, false), list(6, 0.0, false), list(3, 0.9, false));
    assert_eq!(plain, head[..3], "the distance order");
    assert_eq!(varied[0], plain[0], "the closest product stays first");
    assert_ne!(varied, plain, "diversity 0.9 re-ranks");
    assert!(varied.iter().all(|id| head.contains(id)), "{varied:?} beyond the head {head:?}");
    // With the model's mean scene, `correct-hubs` (on by default) reorders the list.
    let corrected = list(8, 0.0, true);
    assert_ne!(corrected, list(8, 0.0, false), "the mean scene corrects the ranking");
}

/// `[pipeline] cap-exposure` reaches the loop: with a cache whose exposure offsets push the
/// distance order's first product far down, the loop's list loses it when the setting is on,
/// and keeps the distance order when it is off.
#[test]
fn the_loop_adds_the_caches_exposure_offsets_as_cap_exposure_asks() {
    use lookd::cache::codec::{encode_with, Exposure, Record};
    let list = |cap_exposure: bool, pushed: Option<&str>| {
        let work = tempfile::tempdir().unwrap();
        let path = tiny_cache(work.path(), 8);
        if let Some(id) = pushed {
            // The same cache, re-encoded with one product's offset at 10 (distances are at most 4).
            let cache = ProductCache::open(&path, None).unwrap();
            let (d, mut records, mut offsets) = (cache.dim(), Vec::new(), Vec::new());
            for block in cache.categories() {
                let (globals, keys) = (cache.globals(block), cache.keys(block).unwrap());
                for (j, p) in cache.products()[block.start..block.start + block.len].iter().enumerate() {
                    let (global, key) =
                        (globals[j * d..(j + 1) * d].to_vec(), keys[j * d..(j + 1) * d].to_vec());
                    records.push(Record { product: p.clone(), global, key });
                    offsets.push(if p.entry.id == id { 10.0 } else { 0.0 });
                }
            }
            let exposure = Exposure { scenes: 1, top: 10, diversity: 0.0, cap: 0.04, spread: 1.25, offsets };
            let folder = ModelFolder::open(&tiny_model()).unwrap();
            let m = &folder.manifest;
            let bytes = encode_with(
                records,
                d,
                m.attention,
                m.regions,
                folder.product_fingerprint(),
                &m.model_id(),
                Some(exposure),
            );
            std::fs::write(&path, bytes).unwrap();
        }
        let folder = ModelFolder::open(&tiny_model()).unwrap();
        let scene = SceneModel::load(&folder).unwrap();
        let cache = ProductCache::open(&path, Some(&folder.product_fingerprint())).unwrap();
        let engine = Engine::new(folder, scene, cache);
        let publisher = Recorder::default();
        let opts = Options { top: 3, diversity: 0.0, cap_exposure, ..options(1) };
        let step = Step::Frame(PixelFormat::Mjpg, 64, 48, jpeg(64, 48, 11));
        run_engine(engine, vec![step], &publisher, Duration::from_millis(20), &opts);
        let lists = publisher.lists.lock().unwrap();
        assert_eq!(lists.len(), 1, "one scene, one list");
        lists[0].clone()
    };
    let plain = list(true, None);
    let first = plain[0].clone();
    let capped = list(true, Some(&first));
    assert!(!capped.contains(&first), "{first} pushed out of {capped:?}");
    assert_eq!(capped[..2], plain[1..], "the rest keep their order");
    assert_eq!(list(false, Some(&first)), plain, "cap-exposure = false: the distance order");
}

/// `[pipeline] max-share` reaches the loop. Three shoppers in turn, the same photo each (the
/// scene forgotten in between, so each is a new look): each product may be shown twice early on,
/// so the third shopper gets the other two of the four shoes. The same photo without a pause is the same shopper
/// moving: one look, the same list. `max-share = 0`: the same list for everyone.
#[test]
fn the_share_cap_rotates_the_screen_between_shoppers_not_for_one() {
    let lists = |max_share: f32, forget_after: Duration| {
        let frame = || Step::Frame(PixelFormat::Mjpg, 64, 48, jpeg(64, 48, 11));
        let pause = || Step::Stall(Duration::from_millis(300));
        let steps = vec![frame(), pause(), frame(), pause(), frame()];
        let opts = Options { top: 2, diversity: 0.0, max_share, forget_after, ..options(3) };
        let publisher = Recorder::default();
        run_with(steps, &publisher, Duration::from_millis(20), &opts);
        let lists = publisher.lists.lock().unwrap().clone();
        assert_eq!(lists.len(), 3, "three scenes, three lists: {lists:?}");
        lists
    };
    let gone = Duration::from_millis(100);
    let shoppers = lists(0.1, gone);
    assert_eq!(shoppers[0], shoppers[1], "early on, a product may be shown twice");
    assert_eq!(shoppers[2].len(), 2);
    assert!(shoppers[2].iter().all(|id| !shoppers[0].contains(id)), "{shoppers:?}");
    let one = lists(0.1, Duration::from_secs(3600));
    assert!(one.iter().all(|l| *l == shoppers[0]), "one shopper, one look: {one:?}");
    let off = lists(0.0, gone);
    assert!(off.iter().all(|l| *l == shoppers[0]), "max-share = 0: {off:?}");
}

#[test]
fn grey_scenes_differ_by_what_the_gate_tests_assume() {
    use lookd::preprocess;
    let thumb = |y: u8| {
        let Step::Frame(format, width, height, pixels) = grey(y) else { unreachable!() };
        let frame = Frame { pixels, format, width, height, seq: 0, ts: SystemTime::now() };
        preprocess::thumbnail(&preprocess::pixel::to_rgb(&frame).unwrap())
    };
    assert_eq!(preprocess::difference(&thumb(60), &thumb(60)), 0.0);
    let d = preprocess::difference(&thumb(60), &thumb(85));
    assert!((0.10..0.13).contains(&d), "{d}");
}
