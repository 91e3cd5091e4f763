//! `GET /metrics` in the Prometheus text format (OpenMetrics), `[metrics] enabled`: the only
//! module that knows prometheus-client. Counters and gauges are read when Prometheus scrapes
//! (a `Reading`, from the loop's own counters); the stages' latencies are histograms the loop
//! feeds with each frame (`pipeline::StageObserver`). Nothing here is derived from a shopper:
//! counts, latencies, states and the catalog's and model's names (docs/metrics.md).

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

/// What a scrape reports besides the latencies: the loop's counters and the daemon's state.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Reading {
    pub frames_in: u64,
    pub frames_dropped: u64,
    pub frames_skipped: u64,
    pub frames_bad: u64,
    pub inferences: u64,
    pub camera_errors: u64,
    pub camera_ok: bool,
    pub broker_connected: bool,
    pub reconnects: u64,
    pub catalog_version: String,
    pub catalog_products: u64,
    pub model: String,
    pub fingerprint: String,
    pub rss_bytes: u64,
    pub uptime_s: f64,
}

type Read = dyn Fn() -> Reading + Send + Sync;

/// The registry, and the latency histograms the loop feeds.
pub struct Metrics {
    registry: Registry,
    latency: Family<Vec<(String, String)>, Histogram>,
}

impl Metrics {
    /// `read` is called on each scrape.
    pub fn new(read: impl Fn() -> Reading + Send + Sync + 'static) -> Arc<Metrics> {
        let mut registry = Registry::default();
        let latency: Family<Vec<(String, String)>, Histogram> =
            Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.001, 2.0, 13)));
        registry.register(
            "lookd_stage_latency_seconds",
            "Time per stage of a frame that was embedded: convert, embed, rank, and total (frame conversion to ranking done)",
            latency.clone(),
        );
        registry.register_collector(Box::new(Live(Box::new(read))));
        Arc::new(Metrics { registry, latency })
    }

    /// Everything, as Prometheus reads it.
    pub fn text(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            log::warn!("metrics: cannot encode: {e}");
        }
        out
    }

    /// The content type of `text`.
    pub const CONTENT_TYPE: &'static str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
}

impl crate::pipeline::StageObserver for Metrics {
    fn observe(&self, stage: &'static str, ms: f32) {
        self.latency
            .get_or_create(&vec![("stage".to_string(), stage.to_string())])
            .observe(f64::from(ms) / 1e3);
    }
}

/// The scrape-time part: counters and gauges from a `Reading`.
struct Live(Box<Read>);

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Live")
    }
}

fn counter(e: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> std::fmt::Result {
    let m = ConstCounter::new(v);
    m.encode(e.encode_descriptor(name, help, None, m.metric_type())?)
}

fn gauge(e: &mut DescriptorEncoder, name: &str, help: &str, v: f64) -> std::fmt::Result {
    let m = ConstGauge::new(v);
    m.encode(e.encode_descriptor(name, help, None, m.metric_type())?)
}

fn info(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    labels: Vec<(String, String)>,
) -> std::fmt::Result {
    let m = Info::new(labels);
    m.encode(e.encode_descriptor(name, help, None, m.metric_type())?)
}

impl Collector for Live {
    fn encode(&self, mut e: DescriptorEncoder) -> std::fmt::Result {
        let r = (self.0)();
        counter(&mut e, "lookd_frames_in", "Frames read from the camera", r.frames_in)?;
        counter(
            &mut e,
            "lookd_frames_dropped",
            "Frames replaced in the hand-off before the loop took them",
            r.frames_dropped,
        )?;
        counter(
            &mut e,
            "lookd_frames_skipped",
            "Frames seen but not embedded (scene unchanged, hold-off, rate limit)",
            r.frames_skipped,
        )?;
        counter(&mut e, "lookd_frames_bad", "Frames that could not be converted", r.frames_bad)?;
        counter(&mut e, "lookd_inferences", "Scenes embedded and ranked", r.inferences)?;
        counter(&mut e, "lookd_camera_errors", "Camera open or read failures", r.camera_errors)?;
        counter(
            &mut e,
            "lookd_broker_reconnects",
            "Connections to the broker after the first",
            r.reconnects,
        )?;
        gauge(
            &mut e,
            "lookd_camera_up",
            "1 while the camera delivers frames, 0 while it fails",
            f64::from(u8::from(r.camera_ok)),
        )?;
        gauge(
            &mut e,
            "lookd_broker_connected",
            "1 while connected to the MQTT broker",
            f64::from(u8::from(r.broker_connected)),
        )?;
        gauge(&mut e, "lookd_catalog_products", "Products in the catalog served", r.catalog_products as f64)?;
        gauge(&mut e, "lookd_resident_memory_bytes", "Resident memory of the process", r.rss_bytes as f64)?;
        gauge(&mut e, "lookd_uptime_seconds", "Seconds since lookd started", r.uptime_s)?;
        info(
            &mut e,
            "lookd_catalog",
            "The catalog served: the fleet's version, or local",
            vec![("version".into(), r.catalog_version)],
        )?;
        info(
            &mut e,
            "lookd_model",
            "The model loaded: its name and product fingerprint (caches are tied to it)",
            vec![("name".into(), r.model), ("fingerprint".into(), r.fingerprint)],
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::StageObserver;

    #[test]
    fn a_scrape_says_each_counter_gauge_label_and_histogram() {
        let m = Metrics::new(|| Reading {
            frames_in: 42,
            inferences: 7,
            camera_ok: true,
            catalog_version: "v2".into(),
            model: "ctl@5b7c".into(),
            fingerprint: "306e74e8".into(),
            ..Reading::default()
        });
        m.observe("embed", 25.0);
        m.observe("embed", 3000.0);
        let text = m.text();
        for line in [
            "lookd_frames_in_total 42",
            "lookd_inferences_total 7",
            "lookd_camera_up 1.0",
            "lookd_catalog_info{version=\"v2\"} 1",
            "lookd_model_info{name=\"ctl@5b7c\",fingerprint=\"306e74e8\"} 1",
            "lookd_stage_latency_seconds_count{stage=\"embed\"} 2",
            "lookd_stage_latency_seconds_bucket{le=\"0.032\",stage=\"embed\"} 1",
            "lookd_stage_latency_seconds_bucket{le=\"+Inf\",stage=\"embed\"} 2",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
