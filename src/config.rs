//! The daemon's configuration: TOML, kebab-case, every field documented and defaulted.
//!
//! Two steps, as ripgrep parses arguments: `RawConfig` is what the file says (serde, unknown
//! keys rejected with their line), `Config` is what it means, checked. Secrets never live here:
//! the MQTT password comes from a file or systemd's credentials directory. No I/O but reading
//! the one file.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// The annotated default, printed by `lookd config default`; `RawConfig::default()` equals it.
pub const DEFAULT_TOML: &str = include_str!("../systemd/lookd.toml");

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config {path}: {key}: {message}")]
    Invalid { path: PathBuf, key: &'static str, message: String },
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct RawConfig {
    pub device_id: String,
    pub model: PathBuf,
    pub catalog: RawCatalog,
    pub camera: RawCamera,
    pub pipeline: RawPipeline,
    pub mqtt: RawMqtt,
    pub broker: RawBroker,
    pub kiosk: RawKiosk,
    pub fleet: RawFleet,
    pub privacy: RawPrivacy,
    pub metrics: RawMetrics,
}

/// `[metrics]`: `GET /metrics` for Prometheus on the kiosk listener (docs/metrics.md).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct RawMetrics {
    pub enabled: bool,
}

/// `[privacy]`: what lookd keeps of, and says about, the shopper in front of the mirror
/// (docs/privacy.md).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct RawPrivacy {
    /// Publish each ranked product's exact distances (`distance`, `global`, `local`). Off by
    /// default: with them, a listener can solve for the shopper's scene embedding.
    pub exact_scores: bool,
    /// Seconds after the last scene was embedded until it is forgotten.
    pub forget_after_s: u64,
    /// The kiosk page's notice that a camera is in use ("" shows none).
    pub notice: String,
}

/// The kiosk page's notice, by default.
pub const DEFAULT_NOTICE: &str =
    "This mirror has a camera: it suggests products that go with your outfit. No image is stored or sent.";

impl Default for RawPrivacy {
    fn default() -> Self {
        RawPrivacy { exact_scores: false, forget_after_s: 60, notice: DEFAULT_NOTICE.into() }
    }
}

/// `[privacy]`, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Privacy {
    pub exact_scores: bool,
    pub forget_after: Duration,
    pub notice: String,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct RawFleet {
    pub topic: Option<String>,
    pub max_bytes: u64,
    pub timeout_s: u64,
    pub ca_file: Option<PathBuf>,
}

impl Default for RawFleet {
    fn default() -> Self {
        RawFleet { topic: None, max_bytes: 256 << 20, timeout_s: 120, ca_file: None }
    }
}

/// `[fleet]`: the catalog comes from the chain's central build.
#[derive(Debug, Clone, PartialEq)]
pub struct Fleet {
    pub topic: String,
    pub max_bytes: u64,
    pub timeout: Duration,
    pub ca_file: Option<PathBuf>,
}

impl Default for Fleet {
    fn default() -> Self {
        let raw = RawFleet::default();
        Fleet {
            topic: String::new(),
            max_bytes: raw.max_bytes,
            timeout: Duration::from_secs(raw.timeout_s),
            ca_file: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct RawCatalog {
    pub csv: PathBuf,
    pub images: Option<PathBuf>,
    pub cache: PathBuf,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct RawCamera {
    pub source: String,
    pub device: PathBuf,
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    pub format: String,
    pub path: PathBuf,
    pub rate: f64,
    pub rotate: u32,
    pub mirror: bool,
    pub roi: Option<[f32; 4]>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct RawPipeline {
    pub category: String,
    pub top: usize,
    pub diversity: f32,
    pub correct_hubs: bool,
    pub cap_exposure: bool,
    pub max_share: f32,
    pub share_looks: usize,
    pub max_rate: f64,
    pub change_threshold: f32,
    pub hold_off_ms: u64,
    pub stats_interval_s: u64,
    pub threads: usize,
    pub filter: crate::stock::Filter,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct RawMqtt {
    pub broker: String,
    pub prefix: String,
    pub client_id: String,
    pub qos: u8,
    pub keep_alive_s: u64,
    pub username: Option<String>,
    pub password_file: Option<PathBuf>,
    pub ca_file: Option<PathBuf>,
    pub max_payload: usize,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct RawBroker {
    pub listen: String,
    pub websocket: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct RawKiosk {
    pub listen: Option<String>,
    pub websocket: Option<String>,
}

impl Default for RawConfig {
    fn default() -> Self {
        RawConfig {
            device_id: "mirror".into(),
            model: "/usr/share/lookd/models/default".into(),
            catalog: RawCatalog::default(),
            camera: RawCamera::default(),
            pipeline: RawPipeline::default(),
            mqtt: RawMqtt::default(),
            broker: RawBroker::default(),
            kiosk: RawKiosk::default(),
            fleet: RawFleet::default(),
            privacy: RawPrivacy::default(),
            metrics: RawMetrics::default(),
        }
    }
}

impl Default for RawCatalog {
    fn default() -> Self {
        RawCatalog {
            csv: "/etc/lookd/catalog.csv".into(),
            images: None,
            cache: "/var/lib/lookd/catalog.cache".into(),
        }
    }
}

impl Default for RawCamera {
    fn default() -> Self {
        RawCamera {
            source: "v4l".into(),
            device: "/dev/video0".into(),
            width: 1280,
            height: 720,
            fps: 15,
            format: "auto".into(),
            path: PathBuf::new(),
            rate: 2.0,
            rotate: 0,
            mirror: true,
            roi: None,
        }
    }
}

impl Default for RawPipeline {
    fn default() -> Self {
        RawPipeline {
            category: "shoes".into(),
            top: 10,
            diversity: crate::rank::DEFAULT_DIVERSITY,
            correct_hubs: true,
            cap_exposure: true,
            max_share: crate::rotation::DEFAULT_MAX_SHARE,
            share_looks: crate::rotation::DEFAULT_LOOKS,
            max_rate: 4.0,
            change_threshold: 0.06,
            hold_off_ms: 2000,
            stats_interval_s: 10,
            threads: 1,
            filter: Default::default(),
        }
    }
}

impl Default for RawMqtt {
    fn default() -> Self {
        RawMqtt {
            broker: "embedded".into(),
            prefix: "lookd/{device-id}".into(),
            client_id: "lookd-{device-id}".into(),
            qos: 1,
            keep_alive_s: 15,
            username: None,
            password_file: None,
            ca_file: None,
            max_payload: 4096,
        }
    }
}

impl Default for RawBroker {
    fn default() -> Self {
        RawBroker { listen: "127.0.0.1:1883".into(), websocket: None }
    }
}

/// Where frames come from.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    V4l {
        device: PathBuf,
        width: u32,
        height: u32,
        fps: u32,
        format: Option<String>,
    },
    /// A folder of images (or one image) replayed at `rate` frames per second, in a loop.
    Folder {
        path: PathBuf,
        rate: f64,
    },
    /// Synthesized frames, for tests and benchmarks.
    Synthetic {
        width: u32,
        height: u32,
        rate: f64,
    },
}

/// The broker to talk to.
#[derive(Debug, Clone, PartialEq)]
pub enum Broker {
    /// lookd starts its own, in-process, listening on `listen` (and `websocket`).
    Embedded {
        listen: String,
        websocket: Option<String>,
    },
    External {
        host: String,
        port: u16,
        tls: bool,
    },
}

/// The kiosk page's HTTP listener (`[kiosk]`), when configured.
#[derive(Debug, Clone, PartialEq)]
pub struct Kiosk {
    pub listen: String,
    /// The MQTT-over-WebSocket URL the page connects to; None: the embedded broker's WebSocket
    /// port, on the host the page was loaded from.
    pub websocket: Option<String>,
}

/// Whether a listener bound to `addr` can be reached from beyond this machine. Only 127.0.0.1
/// and ::1 count as private: the rest of 127.0.0.0/8 counts as exposed too, deliberately, so
/// that a test on 127.0.0.2 stands for the store's network. What does not parse counts as
/// exposed.
pub fn exposed(addr: &str) -> bool {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    match addr.parse::<std::net::SocketAddr>() {
        Ok(a) => a.ip() != IpAddr::V4(Ipv4Addr::LOCALHOST) && a.ip() != IpAddr::V6(Ipv6Addr::LOCALHOST),
        Err(_) => true,
    }
}

/// The checked configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub device_id: String,
    pub model: PathBuf,
    pub catalog_csv: PathBuf,
    pub catalog_images: Option<PathBuf>,
    pub cache: PathBuf,
    pub source: Source,
    pub rotate: u32,
    pub mirror: bool,
    pub roi: Option<[f32; 4]>,
    pub category: String,
    pub top: usize,
    pub diversity: f32,
    pub correct_hubs: bool,
    pub cap_exposure: bool,
    /// The share cap (`rotation::Rotation`): 0 is off.
    pub max_share: f32,
    pub share_looks: usize,
    pub min_interval: Duration,
    pub change_threshold: f32,
    pub hold_off: Duration,
    pub stats_interval: Duration,
    pub threads: usize,
    pub broker: Broker,
    pub prefix: String,
    pub client_id: String,
    pub qos: u8,
    pub keep_alive: Duration,
    pub username: Option<String>,
    pub password_file: Option<PathBuf>,
    pub ca_file: Option<PathBuf>,
    pub max_payload: usize,
    pub kiosk: Option<Kiosk>,
    pub filter: crate::stock::Filter,
    pub fleet: Option<Fleet>,
    pub privacy: Privacy,
    /// Serve `GET /metrics` on the kiosk listener.
    pub metrics: bool,
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.into(), source })?;
        Config::parse(&text, path)
    }

    /// Parses and checks `text`; `path` only names the file in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.into(),
            message: e.to_string().trim_end().to_string(),
        })?;
        raw.resolve().map_err(|(key, message)| ConfigError::Invalid { path: path.into(), key, message })
    }
}

type Invalid = (&'static str, String);

impl RawConfig {
    pub fn resolve(self) -> Result<Config, Invalid> {
        let id = self.device_id.trim().to_string();
        if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric() || "-_".contains(c)) {
            return Err(("device-id", format!("{id:?} must be letters, digits, '-' or '_'")));
        }
        let p = &self.pipeline;
        check(p.top > 0 && p.top <= 100, "pipeline.top", "must be 1 to 100")?;
        check(
            crate::rank::DIVERSITY.contains(&p.diversity),
            "pipeline.diversity",
            "must be at least 0 and under 1",
        )?;
        check((0.0..=1.0).contains(&p.max_share), "pipeline.max-share", "must be 0 (off) to 1")?;
        check((1..=100_000).contains(&p.share_looks), "pipeline.share-looks", "must be 1 to 100000")?;
        check(p.max_rate > 0.0 && p.max_rate.is_finite(), "pipeline.max-rate", "must be positive")?;
        check((0.0..=1.0).contains(&p.change_threshold), "pipeline.change-threshold", "must be 0 to 1")?;
        check(p.stats_interval_s > 0, "pipeline.stats-interval-s", "must be positive")?;
        check((1..=64).contains(&p.threads), "pipeline.threads", "must be 1 to 64")?;
        check(!p.category.trim().is_empty(), "pipeline.category", "must name a category")?;
        let c = &self.camera;
        check([0, 90, 180, 270].contains(&c.rotate), "camera.rotate", "must be 0, 90, 180 or 270")?;
        if let Some([x, y, w, h]) = c.roi {
            let ok = x >= 0.0 && y >= 0.0 && w > 0.0 && h > 0.0 && x + w <= 1.0 && y + h <= 1.0;
            check(ok, "camera.roi", "must be [x, y, width, height] inside [0, 1]")?;
        }
        let m = &self.mqtt;
        check(m.qos <= 2, "mqtt.qos", "must be 0, 1 or 2")?;
        check(m.max_payload >= 64, "mqtt.max-payload", "must be at least 64 bytes")?;
        check(
            !m.prefix.is_empty() && !m.prefix.contains(['#', '+']),
            "mqtt.prefix",
            "must be a topic without wildcards",
        )?;
        let source = resolve_source(c)?;
        let broker = resolve_broker(&self)?;
        let kiosk = resolve_kiosk(&self, &broker)?;
        let fleet = resolve_fleet(&self.fleet)?;
        for (field, values) in &p.filter {
            check(
                !field.trim().is_empty() && !values.is_empty(),
                "pipeline.filter",
                "each field needs at least one value: filter = { department = [\"women\"] }",
            )?;
        }
        let v = &self.privacy;
        check(
            (1..=86_400).contains(&v.forget_after_s),
            "privacy.forget-after-s",
            "must be 1 to 86400 seconds",
        )?;
        check(
            v.notice.chars().count() <= 300 && !v.notice.chars().any(char::is_control),
            "privacy.notice",
            "must be one line of at most 300 characters",
        )?;
        let privacy = Privacy {
            exact_scores: v.exact_scores,
            forget_after: Duration::from_secs(v.forget_after_s),
            notice: v.notice.trim().to_string(),
        };
        check(
            !self.metrics.enabled || kiosk.is_some(),
            "metrics.enabled",
            "/metrics is served on the kiosk listener: set [kiosk] listen too",
        )?;
        let expand = |s: &str| s.replace("{device-id}", &id);
        Ok(Config {
            prefix: expand(m.prefix.trim_end_matches('/')),
            client_id: expand(&m.client_id),
            device_id: id,
            model: self.model,
            catalog_csv: self.catalog.csv,
            catalog_images: self.catalog.images,
            cache: self.catalog.cache,
            source,
            rotate: c.rotate,
            mirror: c.mirror,
            roi: c.roi,
            category: p.category.clone(),
            top: p.top,
            diversity: p.diversity,
            correct_hubs: p.correct_hubs,
            cap_exposure: p.cap_exposure,
            max_share: p.max_share,
            share_looks: p.share_looks,
            min_interval: Duration::from_secs_f64(1.0 / p.max_rate),
            change_threshold: p.change_threshold,
            hold_off: Duration::from_millis(p.hold_off_ms),
            stats_interval: Duration::from_secs(p.stats_interval_s),
            threads: p.threads,
            broker,
            qos: m.qos,
            keep_alive: Duration::from_secs(m.keep_alive_s.max(5)),
            username: m.username.clone(),
            password_file: m.password_file.clone(),
            ca_file: m.ca_file.clone(),
            max_payload: m.max_payload,
            kiosk,
            filter: p.filter.clone(),
            fleet,
            privacy,
            metrics: self.metrics.enabled,
        })
    }
}

/// Where a secret file named in the config is: an absolute path as written; a relative one inside
/// systemd's credentials directory (`$CREDENTIALS_DIRECTORY`, filled by the unit's
/// `LoadCredential=`), which must then be given. Pure: the caller reads the environment.
pub fn secret_path(path: &Path, credentials_dir: Option<&Path>) -> Result<PathBuf, String> {
    if path.is_absolute() {
        return Ok(path.to_path_buf());
    }
    match credentials_dir {
        Some(dir) if !dir.as_os_str().is_empty() => Ok(dir.join(path)),
        _ => Err(format!(
            "{} is relative, so it names a systemd credential, but CREDENTIALS_DIRECTORY is not set \
             (run under the unit, which has LoadCredential=, or give an absolute path)",
            path.display()
        )),
    }
}

fn check(ok: bool, key: &'static str, message: &str) -> Result<(), Invalid> {
    if ok {
        Ok(())
    } else {
        Err((key, message.to_string()))
    }
}

fn resolve_source(c: &RawCamera) -> Result<Source, Invalid> {
    let rate_ok = c.rate > 0.0 && c.rate.is_finite();
    match c.source.as_str() {
        "v4l" => {
            check(
                c.width > 0 && c.height > 0 && c.fps > 0,
                "camera",
                "width, height and fps must be positive",
            )?;
            let formats = ["auto", "mjpg", "yuyv", "nv12", "yu12", "rgb24"];
            check(
                formats.contains(&c.format.as_str()),
                "camera.format",
                &format!("must be one of {formats:?}"),
            )?;
            let format = (c.format != "auto").then(|| c.format.clone());
            Ok(Source::V4l { device: c.device.clone(), width: c.width, height: c.height, fps: c.fps, format })
        }
        "folder" => {
            check(!c.path.as_os_str().is_empty(), "camera.path", "the folder source needs a path")?;
            check(rate_ok, "camera.rate", "must be positive")?;
            Ok(Source::Folder { path: c.path.clone(), rate: c.rate })
        }
        "synthetic" => {
            check(rate_ok, "camera.rate", "must be positive")?;
            Ok(Source::Synthetic { width: c.width, height: c.height, rate: c.rate })
        }
        other => {
            Err(("camera.source", format!("{other:?} is not one of \"v4l\", \"folder\", \"synthetic\"")))
        }
    }
}

fn resolve_broker(raw: &RawConfig) -> Result<Broker, Invalid> {
    let url = raw.mqtt.broker.trim();
    if url == "embedded" {
        check(
            raw.broker.listen.parse::<std::net::SocketAddr>().is_ok(),
            "broker.listen",
            "must be host:port",
        )?;
        return Ok(Broker::Embedded {
            listen: raw.broker.listen.clone(),
            websocket: raw.broker.websocket.clone(),
        });
    }
    let (tls, rest) = if let Some(r) = url.strip_prefix("mqtts://") {
        (true, r)
    } else if let Some(r) = url.strip_prefix("mqtt://") {
        (false, r)
    } else {
        return Err((
            "mqtt.broker",
            format!("{url:?} must be \"embedded\", mqtt://host:port or mqtts://host:port"),
        ));
    };
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) => (h, p.parse::<u16>().map_err(|_| ("mqtt.broker", format!("bad port in {url:?}")))?),
        None => (rest, if tls { 8883 } else { 1883 }),
    };
    check(!host.is_empty(), "mqtt.broker", "needs a host")?;
    check(!tls || raw.mqtt.ca_file.is_some(), "mqtt.ca-file", "mqtts:// needs a CA file")?;
    Ok(Broker::External { host: host.to_string(), port, tls })
}

fn resolve_fleet(f: &RawFleet) -> Result<Option<Fleet>, Invalid> {
    let Some(topic) = &f.topic else { return Ok(None) };
    check(
        !topic.is_empty() && !topic.contains(['#', '+']) && !topic.starts_with('/'),
        "fleet.topic",
        "must be a topic without wildcards, such as \"lookd/fleet/catalog\"",
    )?;
    check(f.max_bytes >= 1024, "fleet.max-bytes", "must be at least 1024")?;
    check(f.timeout_s > 0, "fleet.timeout-s", "must be positive")?;
    Ok(Some(Fleet {
        topic: topic.clone(),
        max_bytes: f.max_bytes,
        timeout: Duration::from_secs(f.timeout_s),
        ca_file: f.ca_file.clone(),
    }))
}

fn resolve_kiosk(raw: &RawConfig, broker: &Broker) -> Result<Option<Kiosk>, Invalid> {
    let k = &raw.kiosk;
    let mut listening: Vec<(&'static str, &str)> = Vec::new();
    if let Broker::Embedded { listen, websocket } = broker {
        listening.push(("broker.listen", listen));
        if let Some(ws) = websocket {
            check(ws.parse::<std::net::SocketAddr>().is_ok(), "broker.websocket", "must be host:port")?;
            listening.push(("broker.websocket", ws));
        }
    }
    if let Some(listen) = &k.listen {
        check(listen.parse::<std::net::SocketAddr>().is_ok(), "kiosk.listen", "must be host:port")?;
        listening.push(("kiosk.listen", listen));
    }
    if let Some((key, addr)) = listening.iter().find(|(_, a)| exposed(a)) {
        let m = &raw.mqtt;
        check(
            m.username.is_some() && m.password_file.is_some(),
            "mqtt.password-file",
            &format!(
                "{key} = {addr:?} is reachable beyond this machine (only 127.0.0.1 and ::1 are not): \
                 set mqtt.username and mqtt.password-file, so that nobody on that network reads \
                 lookd's topics or commands it without them"
            ),
        )?;
    }
    let Some(listen) = k.listen.clone() else { return Ok(None) };
    if let Some(url) = &k.websocket {
        check(
            url.starts_with("ws://") || url.starts_with("wss://"),
            "kiosk.websocket",
            "must be a ws:// or wss:// URL",
        )?;
    } else {
        check(
            matches!(broker, Broker::Embedded { websocket: Some(_), .. }),
            "kiosk.websocket",
            "the kiosk page talks MQTT over WebSocket: set broker.websocket (the embedded broker) \
             or kiosk.websocket (an external broker's ws:// URL)",
        )?;
    }
    Ok(Some(Kiosk { listen, websocket: k.websocket.clone() }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_error(toml: &str, expected: &str) {
        let err = Config::parse(toml, Path::new("t.toml")).unwrap_err().to_string();
        assert!(err.contains(expected), "{err}");
    }

    #[test]
    fn the_documented_default_parses_to_the_built_in_default() {
        let raw: RawConfig = toml::from_str(DEFAULT_TOML).unwrap();
        assert_eq!(raw, RawConfig::default());
        let c = Config::parse(DEFAULT_TOML, Path::new("d.toml")).unwrap();
        assert_eq!((c.prefix.as_str(), c.client_id.as_str()), ("lookd/mirror", "lookd-mirror"));
    }

    #[test]
    fn only_127_0_0_1_and_ipv6_loopback_are_private() {
        for private in ["127.0.0.1:8080", "[::1]:8080"] {
            assert!(!exposed(private), "{private}");
        }
        for open in ["0.0.0.0:8080", "192.168.1.20:8080", "127.0.0.2:8080", "[::]:8080", "mirror:8080", ""] {
            assert!(exposed(open), "{open}");
        }
    }

    #[test]
    fn an_exposed_listener_needs_the_broker_password() {
        let creds = "[mqtt]\nusername = \"kiosk\"\npassword-file = \"/etc/lookd/pw\"\n";
        let kiosk = |listen: &str| {
            format!("[broker]\nwebsocket = \"127.0.0.1:9001\"\n[kiosk]\nlisten = \"{listen}\"\n")
        };
        // On loopback, no password is needed; the page takes the embedded broker's WebSocket.
        let c = Config::parse(&kiosk("127.0.0.1:8080"), Path::new("k.toml")).unwrap();
        assert_eq!(c.kiosk, Some(Kiosk { listen: "127.0.0.1:8080".into(), websocket: None }));
        check_error(
            &kiosk("0.0.0.0:8080"),
            "mqtt.password-file: kiosk.listen = \"0.0.0.0:8080\" is reachable",
        );
        check_error(&kiosk("127.0.0.2:8080"), "set mqtt.username and mqtt.password-file");
        check_error("[broker]\nlisten = \"0.0.0.0:1883\"", "mqtt.password-file: broker.listen");
        check_error("[broker]\nwebsocket = \"192.168.1.5:9001\"", "mqtt.password-file: broker.websocket");
        assert!(Config::parse(&format!("{creds}{}", kiosk("0.0.0.0:8080")), Path::new("k.toml")).is_ok());
        // The page needs MQTT over WebSocket from somewhere.
        check_error(
            "[kiosk]\nlisten = \"127.0.0.1:8080\"",
            "kiosk.websocket: the kiosk page talks MQTT over WebSocket",
        );
        check_error(
            "[kiosk]\nlisten = \"127.0.0.1:8080\"\nwebsocket = \"http://x\"",
            "kiosk.websocket: must be a ws://",
        );
        check_error("[kiosk]\nlisten = \"8080\"", "kiosk.listen: must be host:port");
        let external = "[mqtt]\nbroker = \"mqtt://127.0.0.1:1883\"\n[kiosk]\nlisten = \"127.0.0.1:8080\"\nwebsocket = \"ws://127.0.0.1:9001\"\n";
        let c = Config::parse(external, Path::new("k.toml")).unwrap();
        assert_eq!(c.kiosk.unwrap().websocket.as_deref(), Some("ws://127.0.0.1:9001"));
    }

    #[test]
    fn empty_file_is_the_default() {
        assert_eq!(Config::parse("", Path::new("e.toml")).unwrap(), RawConfig::default().resolve().unwrap());
    }

    #[test]
    fn unknown_keys_are_named_with_their_line() {
        check_error("device-id = \"a\"\n\n[camera]\nfsp = 30\n", "line 4");
        check_error("device-id = \"a\"\n\n[camera]\nfsp = 30\n", "unknown field `fsp`");
    }

    #[test]
    fn bad_values_name_the_key() {
        check_error("[camera]\nrotate = 45", "camera.rotate: must be 0, 90, 180 or 270");
        check_error("[mqtt]\nbroker = \"http://x\"", "mqtt.broker:");
        check_error("[mqtt]\nbroker = \"mqtts://x\"", "mqtt.ca-file: mqtts:// needs a CA file");
        check_error("[mqtt]\nqos = 3", "mqtt.qos");
        check_error("[camera]\nsource = \"folder\"", "camera.path");
        check_error("device-id = \"a b\"", "device-id");
        check_error("[pipeline]\nmax-rate = 0.0", "pipeline.max-rate");
        check_error("[pipeline]\ndiversity = 1.0", "pipeline.diversity: must be at least 0 and under 1");
        check_error("[pipeline]\ndiversity = -0.1", "pipeline.diversity");
        check_error("[pipeline]\ndiversity = nan", "pipeline.diversity");
        check_error("[pipeline]\nmax-share = 1.5", "pipeline.max-share: must be 0 (off) to 1");
        check_error("[pipeline]\nmax-share = nan", "pipeline.max-share");
        check_error("[pipeline]\nshare-looks = 0", "pipeline.share-looks");
        let c = Config::parse("[pipeline]\nmax-share = 0.0\nshare-looks = 50", Path::new("t")).unwrap();
        assert_eq!((c.max_share, c.share_looks), (0.0, 50), "0 turns the share cap off");
        let c = Config::parse("[pipeline]\ndiversity = 0.0", Path::new("t")).unwrap();
        assert_eq!(c.diversity, 0.0, "0 turns the re-rank off");
        check_error("[camera]\nroi = [0.5, 0.5, 0.6, 0.1]", "camera.roi");
        check_error("[mqtt]\nprefix = \"a/#\"", "mqtt.prefix");
    }

    #[test]
    fn external_broker_urls() {
        let c = Config::parse("[mqtt]\nbroker = \"mqtt://10.0.0.5\"", Path::new("t")).unwrap();
        assert_eq!(c.broker, Broker::External { host: "10.0.0.5".into(), port: 1883, tls: false });
        let c = Config::parse("[mqtt]\nbroker = \"mqtts://b:1\"\nca-file = \"/ca\"", Path::new("t")).unwrap();
        assert_eq!(c.broker, Broker::External { host: "b".into(), port: 1, tls: true });
    }

    #[test]
    fn a_relative_secret_is_a_systemd_credential() {
        let creds = Path::new("/run/credentials/lookd.service");
        let check = |path: &str, dir: Option<&Path>| secret_path(Path::new(path), dir);
        assert_eq!(check("/etc/lookd/pw", Some(creds)).unwrap(), Path::new("/etc/lookd/pw"));
        assert_eq!(check("/etc/lookd/pw", None).unwrap(), Path::new("/etc/lookd/pw"));
        assert_eq!(check("mqtt-password", Some(creds)).unwrap(), creds.join("mqtt-password"));
        let err = check("mqtt-password", None).unwrap_err();
        assert!(err.contains("CREDENTIALS_DIRECTORY is not set"), "{err}");
        assert!(check("mqtt-password", Some(Path::new(""))).is_err());
    }
}
