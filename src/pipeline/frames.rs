//! The loop: a frame in, converted, gated (change, hold-off, rate), embedded, ranked and
//! published; stats; the watchdog, fed from here; the last scene forgotten when it is old.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use image::RgbImage;

use super::{
    ms, release_free_memory, rss_kb, unix_s, Counters, Engine, Frame, Notice, Options, Publisher, Slot,
    READY_WITHIN,
};
use crate::cache::{CategoryBlock, ProductCache};
use crate::embedding::SceneEmbedding;
use crate::preprocess::{self, pixel};
use crate::publish::payload::{
    self, CatalogState, CategoryState, FleetCatalog, Item, Progress, Recommendations, StageTimes, Stats,
};
use crate::recommend::{recommend_shared, Look, Ranking};
use crate::rotation::Rotation;

/// Recent latencies of one stage, for p50/p95 in the stats.
#[derive(Default)]
pub(super) struct Window(VecDeque<f32>);

impl Window {
    pub(super) fn push(&mut self, ms: f32) {
        if self.0.len() == 256 {
            self.0.pop_front();
        }
        self.0.push_back(ms);
    }
    pub(super) fn p50_p95(&self) -> [f32; 2] {
        let mut v: Vec<f32> = self.0.iter().copied().collect();
        if v.is_empty() {
            return [0.0; 2];
        }
        v.sort_by(f32::total_cmp);
        let at = |q: f32| v[((v.len() - 1) as f32 * q).round() as usize];
        [at(0.5), at(0.95)]
    }
}

/// The configured category `name` in `cache`, else the cache's first (none: an empty cache).
pub(super) fn configured_category(cache: &ProductCache, name: &str) -> Option<CategoryBlock> {
    cache.find_category(name).ok().or_else(|| cache.categories().first()).cloned()
}

pub(super) struct Loop<'a> {
    pub(super) engine: &'a mut Engine,
    pub(super) publisher: &'a dyn Publisher,
    pub(super) opts: &'a Options,
    pub(super) c: Arc<Counters>,
    pub(super) category: CategoryBlock,
    pub(super) last_thumb: Vec<u8>,
    pub(super) last_scene: Option<(SceneEmbedding, u64, SystemTime, StageTimes)>,
    /// The categories whose retained ranking comes from `last_scene`: deleted when it is forgotten.
    pub(super) published: std::collections::BTreeSet<String>,
    pub(super) changed_since: Option<Instant>,
    pub(super) last_embed: Option<Instant>,
    pub(super) windows: BTreeMap<&'static str, Window>,
    pub(super) started: Instant,
    pub(super) last_stats: (Instant, u64, u64),
    pub(super) last_watchdog: Instant,
    /// While a new catalog is made: what, and how far.
    pub(super) building: Option<Progress>,
    /// The last fleet announcement heard: a reload fetches it again.
    pub(super) last_fleet: Option<FleetCatalog>,
    pub(super) swap_ms: f32,
    /// Per category: what the screen showed the last shoppers (`[pipeline] max-share`).
    pub(super) rotations: BTreeMap<String, Rotation>,
}

impl<'a> Loop<'a> {
    pub(super) fn new(
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
        let building = engine.building.take();
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
            building,
            last_fleet: None,
            swap_ms: 0.0,
            rotations: BTreeMap::new(),
        }
    }

    pub(super) fn run(
        &mut self,
        slot: &Slot<Frame>,
        shutdown: &AtomicBool,
        supervisor: &mut dyn FnMut(Notice),
    ) {
        self.publish_category_state();
        self.publish_catalog_state();
        let mut announced = false;
        while !shutdown.load(Ordering::Relaxed) {
            if !announced && (Counters::get(&self.c.frames_in) > 0 || self.started.elapsed() >= READY_WITHIN)
            {
                let camera = self.c.camera.lock().unwrap_or_else(|e| e.into_inner()).clone();
                let broker =
                    if self.publisher.is_connected() { "connected" } else { "not connected (retrying)" };
                let catalog = match &self.building {
                    Some(p) => format!("; catalog building: {}/{}", p.done, p.total),
                    None => String::new(),
                };
                supervisor(Notice::Ready(&format!("camera {camera}; broker {broker}{catalog}")));
                announced = true;
            }
            self.ping_watchdog(supervisor);
            self.c.broker_connected.store(self.publisher.is_connected(), Ordering::Relaxed);
            self.c.reconnects.store(self.publisher.reconnects(), Ordering::Relaxed);
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
    pub(super) fn forget_if_stale(&mut self) {
        if self.last_scene.is_none() || self.last_embed.is_none_or(|t| t.elapsed() < self.opts.forget_after) {
            return;
        }
        self.last_scene = None;
        self.last_thumb = Vec::new();
        self.changed_since = None;
        self.engine.forget();
        // The shopper has gone: the next scene is a new look.
        self.rotations.values_mut().for_each(Rotation::end_look);
        for slug in std::mem::take(&mut self.published) {
            self.publisher.publish_retained(&format!("recommendations/{slug}"), Vec::new());
        }
        log::info!("forgot the last scene: none newer in {} s", self.opts.forget_after.as_secs());
    }

    pub(super) fn ping_watchdog(&mut self, supervisor: &mut dyn FnMut(Notice)) {
        if let Some(every) = self.opts.watchdog {
            if self.last_watchdog.elapsed() >= every {
                supervisor(Notice::Watchdog);
                self.last_watchdog = Instant::now();
            }
        }
    }

    /// Returns `Some(())` when the frame was embedded and published.
    pub(super) fn handle_frame(&mut self, frame: Frame) -> Option<()> {
        let t0 = Instant::now();
        if self.engine.cache.is_empty() {
            // A first start's catalog is still being built: nothing to rank against.
            Counters::bump(&self.c.frames_skipped);
            return None;
        }
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
    pub(super) fn convert(&self, frame: &Frame) -> Result<RgbImage, preprocess::PreprocessError> {
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

    pub(super) fn publish_recommendations(&mut self, started: Instant) {
        let Some((scene, seq, ts, mut times)) = self.last_scene.clone() else { return };
        let t = Instant::now();
        let ranking = Ranking {
            top: self.opts.top,
            diversity: self.opts.diversity,
            mean_scene: self.engine.folder.mean_scene().filter(|_| self.opts.correct_hubs),
            exposure: self.opts.cap_exposure,
        };
        let rotation = Rotation::new(self.opts.max_share, self.opts.share_looks)
            .map(|fresh| self.rotations.entry(self.category.path.clone()).or_insert(fresh));
        let items = match recommend_shared(
            &scene,
            &self.engine.cache,
            self.engine.folder.category_keys(),
            &self.category,
            &ranking,
            Some(&self.engine.allowed),
            rotation,
            Look::Guess,
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
            if let Some(o) = &self.engine.observer {
                o.observe(stage, v);
            }
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

    pub(super) fn publish_category_state(&self) {
        let available =
            self.engine.cache.categories().iter().map(|c| (payload::slug(&c.path), c.path.clone())).collect();
        let state = CategoryState {
            category: self.category.path.clone(),
            slug: payload::slug(&self.category.path),
            available,
        };
        self.publisher.publish_retained("category/state", serde_json::to_vec(&state).unwrap_or_default());
    }
}

impl<'a> Loop<'a> {
    pub(super) fn publish_catalog_state(&self) {
        let (e, cache) = (&self.engine, &self.engine.cache);
        *self.c.catalog.lock().unwrap_or_else(|e| e.into_inner()) = super::Served {
            version: e.identity.version.clone(),
            products: cache.len() as u64,
            model: e.folder.manifest.model_id(),
            fingerprint: crate::model::hex(&e.folder.product_fingerprint()),
        };
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

    pub(super) fn publish_stats(&mut self) {
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
            model: self.engine.folder.manifest.model_id(),
            fingerprint: crate::model::hex(&self.engine.folder.product_fingerprint()),
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
        let building = match &self.building {
            Some(p) if p.total > 0 => format!(" (a new one building: {}/{})", p.done, p.total),
            Some(p) => format!(" (a new one coming: {})", p.what),
            None => String::new(),
        };
        crate::systemd::notify(&format!(
            "STATUS={} inferences, {} frames, broker {}, catalog {}{building}, model {} ({})",
            stats.inferences,
            stats.frames_in,
            stats.broker,
            stats.catalog_version,
            stats.model,
            &stats.fingerprint[..16]
        ));
        self.publisher.publish("stats", serde_json::to_vec(&stats).unwrap_or_default());
        self.last_stats = (Instant::now(), frames, inferences);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    pub(super) fn percentiles() {
        let mut w = Window::default();
        (1..=100).for_each(|i| w.push(i as f32));
        assert_eq!(w.p50_p95(), [51.0, 95.0]);
        (0..300).for_each(|_| w.push(1.0));
        assert_eq!(w.p50_p95(), [1.0, 1.0], "only the last 256 count");
    }
}
