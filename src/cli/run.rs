//! `lookd run`: the daemon. Start-up problems exit with a meaningful code (78 for the config);
//! once running, everything is logged, counted and retried, and SIGTERM/SIGINT stop it in order.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use lookd::capture::folder::FolderSource;
use lookd::capture::synthetic::SyntheticSource;
use lookd::capture::FrameSource;
use lookd::config::{Broker, Config, Source};
use lookd::model::{ModelFolder, SceneModel};
use lookd::pipeline::{self, Engine, Notice, Options};
use lookd::publish::{self, Mqtt, Settings};
use lookd::systemd::notify;
use lookd::update::{Sources, Updater};

use super::code;

#[derive(clap::Args)]
pub struct Args {
    /// Configuration file
    #[arg(long, default_value = "/etc/lookd/lookd.toml")]
    config: PathBuf,
    /// Stop after this many frames (soak tests and benchmarks)
    #[arg(long)]
    max_frames: Option<u64>,
}

pub fn run(a: Args) -> anyhow::Result<i32> {
    let started = Instant::now();
    pipeline::use_one_heap(); // before any thread: what a reload leaves must be trimmable
    let config = Config::load(&a.config)?;
    lookd::model::set_threads(config.threads);
    // The fleet's model when this mirror took one and its cache is still that model's catalog
    // (docs/fleet.md); else the configured one.
    let (folder, model_archive) = match lookd::update::last_model(&config.cache) {
        Some((folder, sha)) => {
            log::info!(
                "running the fleet's model {} from {} (the configured one is {})",
                folder.manifest.model_id(),
                folder.dir.display(),
                config.model.display()
            );
            (folder, Some(sha))
        }
        None => (ModelFolder::open(&config.model).context("loading the model")?, None),
    };
    if !folder.manifest.trained {
        log::warn!(
            "model {} has untrained heads: ranking with ImageNet features only",
            folder.manifest.model_id()
        );
    }
    let settings = mqtt_settings(&config, &a.config)?;
    let mut sources = Sources {
        folder: folder.clone(),
        model_archive,
        catalog_csv: config.catalog_csv.clone(),
        catalog_images: config.catalog_images.clone(),
        cache: config.cache.clone(),
        limits: fleet_limits(&config)?,
    };
    // A usable cache (or the fleet's catalog) serves at once. Without one the daemon serves
    // anyway, from an empty catalog, and builds its own beside the loop (`catalog/state` says
    // `building`, with progress): broker, kiosk page and MQTT are up from the first second.
    let mut taken = None;
    let (cache, identity, first_build) = match first_fleet_catalog(&config, &settings, &sources) {
        Some(new) => {
            taken = new.model;
            (new.cache, new.identity, None)
        }
        None => match super::open_cache(&config.cache, &config.catalog_csv, &folder) {
            Some(cache) => {
                let identity = lookd::update::identity_of(&config.cache)
                    .with_context(|| format!("reading {}", config.cache.display()))?;
                (cache, identity, None)
            }
            None => {
                let catalog = lookd::catalog::Catalog::read(&config.catalog_csv)
                    .with_context(|| "the product cache must be built, from the catalog CSV".to_string())?;
                let identity =
                    lookd::update::Identity { version: "local".into(), sha256: String::new(), built_ms: 0 };
                (lookd::cache::ProductCache::empty(&folder), identity, Some(catalog))
            }
        },
    };
    // A model that came with the fleet's first catalog is loaded already, and runs from now on.
    let (folder, scene) = match taken {
        Some(m) => {
            sources.folder = m.folder.clone();
            sources.model_archive = Some(m.archive_sha256);
            (m.folder, m.scene)
        }
        None => {
            let scene = SceneModel::load(&folder).context("loading the scene graph")?;
            (folder, scene)
        }
    };
    let category = match &first_build {
        Some(catalog) => super::category_in_catalog(catalog, &config.category),
        None => cache.find_category(&config.category).map(drop),
    };
    if let Err(message) = category {
        anyhow::bail!(lookd::config::ConfigError::Invalid {
            path: a.config,
            key: "pipeline.category",
            message
        });
    }
    // `GET /metrics`: the loop's counters (shared before it starts), the broker's state, the
    // catalog the loop reports, this process's memory.
    let counters: std::sync::Arc<pipeline::Counters> = Default::default();
    let metrics = config.metrics.then(|| {
        let c = counters.clone();
        lookd::metrics::Metrics::new(move || {
            let get = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
            let served = c.catalog.lock().unwrap_or_else(|e| e.into_inner()).clone();
            lookd::metrics::Reading {
                frames_in: get(&c.frames_in),
                frames_dropped: get(&c.frames_dropped),
                frames_skipped: get(&c.frames_skipped),
                frames_bad: get(&c.frames_bad),
                inferences: get(&c.inferences),
                camera_errors: get(&c.camera_errors),
                camera_ok: c.camera.lock().unwrap_or_else(|e| e.into_inner()).starts_with("ok"),
                broker_connected: c.broker_connected.load(Ordering::Relaxed),
                reconnects: get(&c.reconnects),
                catalog_version: served.version,
                catalog_products: served.products,
                model: served.model,
                fingerprint: served.fingerprint,
                rss_bytes: pipeline::rss_kb() * 1024,
                uptime_s: started.elapsed().as_secs_f64(),
            }
        })
    });
    if let Broker::Embedded { listen, websocket } = &config.broker {
        let login = settings.credentials.as_ref().map(|(u, p)| (u.as_str(), p.as_str()));
        publish::start_embedded_broker(listen, websocket.as_deref(), login)?;
        log::info!(
            "embedded broker on {listen}{}{}",
            websocket.as_ref().map(|w| format!(", websocket on {w}")).unwrap_or_default(),
            if login.is_some() { ", login required" } else { "" }
        );
    }
    let mut kiosk_products = None;
    if let Some(kiosk) = &config.kiosk {
        let mut site = kiosk_site(&config, kiosk, &cache, settings.credentials.is_some());
        if let Some(m) = &metrics {
            let m = m.clone();
            site.metrics =
                Some((std::sync::Arc::new(move || m.text()), lookd::metrics::Metrics::CONTENT_TYPE));
        }
        let table = site.products.clone();
        let addr = lookd::kiosk::start(&kiosk.listen, site)?;
        log::info!("kiosk page on http://{addr}/ ({} products)", cache.len());
        let images = lookd::catalog::images_dir(&config.catalog_csv, config.catalog_images.as_deref());
        kiosk_products = Some(pipeline::KioskProducts { table, images });
    }
    let mqtt = Mqtt::start(settings);
    let shutdown = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, shutdown.clone()).context("installing signal handlers")?;
    }
    let sources_model = sources.model_archive.clone();
    let updates = Updater::start(sources, config.fleet.as_ref().map(|f| f.topic.clone()));
    // SIGHUP (`systemctl reload lookd`): a new catalog, made beside the loop.
    signal_hook::flag::register(signal_hook::consts::SIGHUP, updates.reload.clone())
        .context("installing signal handlers")?;
    if let Some(catalog) = &first_build {
        log::info!(
            "no product cache at {}: serving now, and building it from {} products beside the loop",
            config.cache.display(),
            catalog.entries.len()
        );
        updates.submit(lookd::update::Job::Rebuild { why: lookd::update::FIRST_START.into() }, "catalog");
    }
    wait_for(&mqtt, Duration::from_secs(5));
    let mut engine = Engine::new(folder, scene, cache);
    engine.model_archive = sources_model;
    engine.building = first_build.map(|c| lookd::publish::payload::Progress {
        what: "first build".into(),
        done: 0,
        total: c.entries.len(),
        eta_s: None,
    });
    engine.identity = identity;
    engine.updates = Some(updates);
    engine.kiosk = kiosk_products;
    engine.counters = counters;
    engine.observer = metrics.map(|m| m as std::sync::Arc<dyn pipeline::StageObserver>);
    if let Err(message) = engine.set_filter(config.filter.clone()) {
        anyhow::bail!(lookd::config::ConfigError::Invalid {
            path: a.config,
            key: "pipeline.filter",
            message
        });
    }
    let opts = Options::from_config(&config, a.max_frames);
    let products = engine.cache.len();
    let mut supervisor = |notice: Notice| {
        let what = match notice {
            Notice::Ready(what) => what,
            Notice::Watchdog => return notify("WATCHDOG=1"),
            Notice::Reloading => return notify("RELOADING=1\nSTATUS=making a new catalog"),
            Notice::Reloaded => return notify("READY=1"),
        };
        notify(&format!("STATUS=ready: {what}\nREADY=1"));
        let secs = started.elapsed().as_secs_f64();
        log::info!("ready in {secs:.2} s: {products} products, {what}, publishing under {}/", config.prefix);
    };
    let counters = pipeline::run(source(&config), &mut engine, &mqtt, &opts, &shutdown, &mut supervisor);
    notify("STOPPING=1");
    log::info!("stopping after {} frames", counters.frames_in.load(Ordering::Relaxed));
    mqtt.shutdown(Duration::from_millis(1500));
    Ok(code::OK)
}

/// What the kiosk listener serves: the cache's products (their images where the catalog puts
/// them) and the page's settings.
fn kiosk_site(
    config: &Config,
    kiosk: &lookd::config::Kiosk,
    cache: &lookd::cache::ProductCache,
    login: bool,
) -> lookd::kiosk::Site {
    let images = lookd::catalog::images_dir(&config.catalog_csv, config.catalog_images.as_deref());
    let ws_port = match &config.broker {
        Broker::Embedded { websocket: Some(ws), .. } => {
            ws.parse::<std::net::SocketAddr>().ok().map(|a| a.port())
        }
        _ => None,
    };
    lookd::kiosk::Site {
        products: std::sync::Arc::new(std::sync::RwLock::new(lookd::kiosk::ProductTable::new(
            cache.products(),
            &images,
        ))),
        page: lookd::kiosk::PageSettings {
            device: config.device_id.clone(),
            prefix: config.prefix.clone(),
            ws_url: kiosk.websocket.clone(),
            ws_port,
            login,
            username: if login { config.username.clone() } else { None },
            top: config.top,
            notice: config.privacy.notice.clone(),
        },
        metrics: None,
    }
}

/// How long a fleet mirror without a usable cache waits at its first start for the fleet's
/// retained announcement before it embeds its own catalog instead.
const FIRST_FLEET_WAIT: Duration = Duration::from_secs(10);

/// A fleet mirror without a usable cache (a new one, or a new model) takes the chain's catalog
/// rather than embedding its own: minutes on a Pi, and maybe no catalog CSV at all. None: no
/// fleet, a cache already there, no announcement within FIRST_FLEET_WAIT, or a fetch that
/// failed (said in the log); the caller then opens or builds the cache as ever.
fn first_fleet_catalog(
    config: &Config,
    settings: &Settings,
    sources: &Sources,
) -> Option<lookd::update::NewCatalog> {
    let fleet = config.fleet.as_ref()?;
    // The embedded broker starts later and holds nothing retained yet.
    if matches!(config.broker, Broker::Embedded { .. }) {
        return None;
    }
    let fingerprint = sources.folder.product_fingerprint();
    if lookd::cache::ProductCache::open(&config.cache, Some(&fingerprint)).is_ok() {
        return None;
    }
    log::info!(
        "no usable product cache at {}: asking the fleet ({}) first",
        config.cache.display(),
        fleet.topic
    );
    notify("STATUS=asking the fleet for the catalog");
    let Some(payload) = publish::retained(settings, &fleet.topic, FIRST_FLEET_WAIT) else {
        log::info!(
            "no fleet catalog announced within {} s: using the local catalog",
            FIRST_FLEET_WAIT.as_secs()
        );
        return None;
    };
    let announced = match lookd::publish::payload::decode_fleet(&payload) {
        Ok(lookd::publish::Command::Fleet(f)) => f,
        Ok(_) => return None,
        Err(e) => {
            log::warn!(
                "the fleet's announcement on {} is refused: {e}; using the local catalog",
                fleet.topic
            );
            return None;
        }
    };
    // The fetch may take up to its timeout: systemd is told to wait that long.
    notify(&format!("EXTEND_TIMEOUT_USEC={}", (fleet.timeout + EXTEND_BY).as_micros()));
    notify(&format!("STATUS=fetching the fleet's catalog {}", announced.version));
    match lookd::update::fetch_now(sources, &announced) {
        Ok(new) => {
            log::info!("catalog: {} taken at start, nothing embedded here", new.how);
            Some(new)
        }
        Err(e) => {
            log::warn!("{e}; using the local catalog");
            None
        }
    }
}

/// The fleet fetch's bounds (`[fleet]`; the defaults where no fleet is set, for a reload).
fn fleet_limits(config: &Config) -> anyhow::Result<lookd::fetch::Limits> {
    let f = config.fleet.clone().unwrap_or_default();
    let ca = match &f.ca_file {
        Some(path) => {
            Some(std::fs::read(path).with_context(|| format!("reading fleet CA file {}", path.display()))?)
        }
        None => None,
    };
    Ok(lookd::fetch::Limits {
        max_bytes: f.max_bytes,
        connect: Duration::from_secs(10).min(f.timeout),
        total: f.timeout,
        ca,
    })
}

/// How much longer systemd is asked to wait for a first start that fetches the fleet's catalog,
/// beyond the fetch's own timeout.
const EXTEND_BY: Duration = Duration::from_secs(60);

fn wait_for(mqtt: &Mqtt, limit: Duration) {
    let end = Instant::now() + limit;
    while !mqtt.is_connected() && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn source(config: &Config) -> Box<dyn FrameSource> {
    match &config.source {
        Source::Folder { path, rate } => Box::new(FolderSource::new(path, *rate)),
        Source::Synthetic { width, height, rate } => {
            Box::new(SyntheticSource::new(*width, *height, *rate, 10))
        }
        #[cfg(target_os = "linux")]
        Source::V4l { device, width, height, fps, format } => {
            let wanted = format.as_deref().and_then(lookd::capture::v4l::parse_format);
            Box::new(lookd::capture::v4l::V4lSource::new(device.clone(), *width, *height, *fps, wanted))
        }
        #[cfg(not(target_os = "linux"))]
        Source::V4l { .. } => Box::new(FolderSource::new(Path::new("/nonexistent-v4l-needs-linux"), 1.0)),
    }
}

/// The client's settings; `path` (the config file) only names it in errors.
pub fn mqtt_settings(config: &Config, path: &Path) -> anyhow::Result<Settings> {
    let (host, port, tls) = match &config.broker {
        Broker::Embedded { listen, .. } => {
            let addr: std::net::SocketAddr = listen.parse().context("broker.listen")?;
            let host =
                if addr.ip().is_unspecified() { "127.0.0.1".to_string() } else { addr.ip().to_string() };
            (host, addr.port(), false)
        }
        Broker::External { host, port, tls } => (host.clone(), *port, *tls),
    };
    let ca = match (&config.ca_file, tls) {
        (Some(path), true) => {
            Some(std::fs::read(path).with_context(|| format!("reading CA file {}", path.display()))?)
        }
        _ => None,
    };
    let credentials_dir = std::env::var_os("CREDENTIALS_DIRECTORY").map(PathBuf::from);
    let password = match config.password_file.as_deref() {
        Some(file) => {
            let file = lookd::config::secret_path(file, credentials_dir.as_deref()).map_err(|message| {
                lookd::config::ConfigError::Invalid { path: path.into(), key: "mqtt.password-file", message }
            })?;
            Some(publish::read_secret("MQTT password file", &file)?)
        }
        None => None,
    };
    let credentials = match (&config.username, password) {
        (Some(u), Some(p)) => Some((u.clone(), p)),
        (Some(u), None) => Some((u.clone(), String::new())),
        _ => None,
    };
    Ok(Settings {
        host,
        port,
        ca,
        client_id: config.client_id.clone(),
        credentials,
        keep_alive: config.keep_alive,
        qos: config.qos,
        prefix: config.prefix.clone(),
        max_payload: config.max_payload,
        fleet_topic: config.fleet.as_ref().map(|f| f.topic.clone()),
    })
}

/// Used by `watch`: the same settings with another client id.
pub fn watcher_settings(config_path: &Path) -> anyhow::Result<Settings> {
    let config = Config::load(config_path)?;
    let mut s = mqtt_settings(&config, config_path)?;
    s.client_id = format!("{}-watch-{}", s.client_id, std::process::id());
    Ok(s)
}
