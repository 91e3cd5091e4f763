//! MQTT: the only module that knows rumqttc (and rumqttd, the embedded broker).
//!
//! rumqttc's event loop only moves while polled, never backs off and never re-subscribes, so a
//! network thread does all three: it blocks in `recv()`, and after an error it waits (250 ms
//! doubling to 3 s, plus up to 20% jitter) and builds a fresh client, so nothing rumqttc held
//! for the dead connection is replayed. On every ConnAck it re-subscribes and re-publishes
//! `online` and all retained state. While the broker is away, only the latest message per topic
//! is kept. Publishing never blocks (`try_publish`). It must not rank, decode frames or
//! decide policy: commands are decoded here and handed to the pipeline.

pub mod payload;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use rumqttc::{Client, Event, LastWill, MqttOptions, Packet, QoS, TlsConfiguration, Transport};

use crate::rng::SplitMix64;
pub use payload::Command;

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("cannot read {what} {path}: {source}")]
    Secret { what: &'static str, path: std::path::PathBuf, source: std::io::Error },
    #[error("embedded broker: {0}")]
    Broker(String),
}

/// How to reach the broker. Secrets are read by the caller from files, never from the config.
#[derive(Clone)]
pub struct Settings {
    pub host: String,
    pub port: u16,
    /// PEM CA certificate: connect with TLS (and never in plaintext).
    pub ca: Option<Vec<u8>>,
    pub client_id: String,
    pub credentials: Option<(String, String)>,
    pub keep_alive: Duration,
    pub qos: u8,
    pub prefix: String,
    pub max_payload: usize,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the password.
        f.debug_struct("Settings")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.ca.is_some())
            .field("client_id", &self.client_id)
            .field("username", &self.credentials.as_ref().map(|c| &c.0))
            .field("prefix", &self.prefix)
            .finish()
    }
}

#[derive(Clone)]
struct Message {
    payload: Vec<u8>,
    retain: bool,
    qos: QoS,
}

/// A command as received: its topic suffix and what decoding made of it.
#[derive(Debug, Clone, PartialEq)]
pub struct Received {
    pub suffix: String,
    pub command: Result<Command, String>,
}

#[derive(Default)]
struct Shared {
    client: Option<Client>,
    /// Latest per topic, not yet handed to a connected client.
    pending: BTreeMap<String, Message>,
    /// Current retained state, re-published on every connect.
    retained: BTreeMap<String, Message>,
}

/// The MQTT side of the daemon: publish without blocking, receive decoded commands.
pub struct Mqtt {
    settings: Settings,
    shared: Arc<Mutex<Shared>>,
    connected: Arc<AtomicBool>,
    reconnects: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    commands: Mutex<Receiver<Received>>,
    thread: Option<JoinHandle<()>>,
}

fn qos(n: u8) -> QoS {
    match n {
        0 => QoS::AtMostOnce,
        2 => QoS::ExactlyOnce,
        _ => QoS::AtLeastOnce,
    }
}

impl Mqtt {
    /// Starts the network thread; it connects (and reconnects) on its own.
    pub fn start(settings: Settings) -> Mqtt {
        // rustls needs a process-wide crypto provider; a second install is a harmless no-op.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let (tx, commands) = sync_channel(16);
        let mqtt = Mqtt {
            settings,
            shared: Arc::default(),
            connected: Arc::default(),
            reconnects: Arc::default(),
            stop: Arc::default(),
            commands: Mutex::new(commands),
            thread: None,
        };
        let net = Network {
            settings: mqtt.settings.clone(),
            shared: mqtt.shared.clone(),
            connected: mqtt.connected.clone(),
            reconnects: mqtt.reconnects.clone(),
            stop: mqtt.stop.clone(),
            commands: tx,
        };
        let thread = std::thread::Builder::new().name("mqtt".into()).spawn(move || net.run()).ok();
        Mqtt { thread, ..mqtt }
    }

    pub fn topic(&self, suffix: &str) -> String {
        format!("{}/{suffix}", self.settings.prefix)
    }

    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    /// Connections made after the first.
    pub fn reconnects(&self) -> u64 {
        self.reconnects.load(Ordering::Relaxed)
    }

    /// Retained state (status, category, recommendations): kept and re-sent on every reconnect.
    pub fn publish_retained(&self, suffix: &str, payload: Vec<u8>) {
        self.send(suffix, Message { payload, retain: true, qos: qos(self.settings.qos) });
    }

    /// A passing message (stats, errors): while offline only the latest per topic is kept.
    pub fn publish(&self, suffix: &str, payload: Vec<u8>) {
        self.send(suffix, Message { payload, retain: false, qos: QoS::AtMostOnce });
    }

    fn send(&self, suffix: &str, msg: Message) {
        let topic = self.topic(suffix);
        let mut s = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        if msg.retain {
            s.retained.insert(topic.clone(), msg.clone());
        }
        let sent = self.is_connected()
            && s.client.as_ref().is_some_and(|c| {
                c.try_publish(topic.clone(), msg.qos, msg.retain, msg.payload.clone()).is_ok()
            });
        if !sent {
            s.pending.insert(topic, msg);
        }
    }

    /// Commands received since the last call (never blocks).
    pub fn commands(&self) -> Vec<Received> {
        self.commands.lock().unwrap_or_else(|e| e.into_inner()).try_iter().collect()
    }

    /// Publishes `offline`, disconnects and stops the network thread (waits at most `wait`).
    pub fn shutdown(mut self, wait: Duration) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(client) = self.shared.lock().unwrap_or_else(|e| e.into_inner()).client.take() {
            let _ = client.try_publish(self.topic("status"), QoS::AtLeastOnce, true, "offline");
            let _ = client.try_disconnect();
        }
        if let Some(t) = self.thread.take() {
            let deadline = std::time::Instant::now() + wait;
            while !t.is_finished() && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            if t.is_finished() {
                let _ = t.join();
            }
        }
    }
}

struct Network {
    settings: Settings,
    shared: Arc<Mutex<Shared>>,
    connected: Arc<AtomicBool>,
    reconnects: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    commands: SyncSender<Received>,
}

/// The client options for `s`: keep-alive, last will `offline`, credentials, TLS.
fn mqtt_options(s: &Settings) -> MqttOptions {
    let mut o = MqttOptions::new(s.client_id.clone(), s.host.clone(), s.port);
    o.set_keep_alive(s.keep_alive);
    o.set_clean_session(true);
    o.set_max_packet_size(s.max_payload.max(256 * 1024), 256 * 1024);
    o.set_last_will(LastWill::new(format!("{}/status", s.prefix), "offline", QoS::AtLeastOnce, true));
    if let Some((user, pass)) = &s.credentials {
        o.set_credentials(user.clone(), pass.clone());
    }
    if let Some(ca) = &s.ca {
        o.set_transport(Transport::tls_with_config(TlsConfiguration::Simple {
            ca: ca.clone(),
            alpn: None,
            client_auth: None,
        }));
    }
    o
}

impl Network {
    fn run(self) {
        let mut rng = SplitMix64::new(std::process::id() as u64);
        let mut delay = Duration::from_millis(250);
        let mut ever_connected = false;
        let mut last_error = String::new();
        while !self.stop.load(Ordering::Relaxed) {
            let (client, mut connection) = Client::new(mqtt_options(&self.settings), 64);
            self.shared.lock().unwrap_or_else(|e| e.into_inner()).client = Some(client);
            loop {
                match connection.recv() {
                    Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => {
                        if ever_connected {
                            self.reconnects.fetch_add(1, Ordering::Relaxed);
                        }
                        ever_connected = true;
                        delay = Duration::from_millis(250);
                        last_error.clear();
                        self.on_connect();
                        log::info!("mqtt: connected to {}:{}", self.settings.host, self.settings.port);
                    }
                    Ok(Ok(Event::Incoming(Packet::Publish(p)))) => self.on_command(&p.topic, &p.payload),
                    Ok(Ok(_)) => {}
                    Ok(Err(_)) if self.stop.load(Ordering::Relaxed) => break,
                    Ok(Err(e)) => {
                        let e = e.to_string();
                        if e != last_error {
                            log::warn!("mqtt: {e}; retrying");
                            last_error = e;
                        }
                        break;
                    }
                    Err(_) => break,
                }
            }
            self.connected.store(false, Ordering::Relaxed);
            self.shared.lock().unwrap_or_else(|e| e.into_inner()).client = None;
            let jitter = delay.mul_f64(0.2 * (rng.below(1000) as f64 / 1000.0));
            sleep_unless(&self.stop, delay + jitter);
            delay = (delay * 2).min(Duration::from_secs(3));
        }
    }

    fn on_connect(&self) {
        let mut s = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        let Some(client) = s.client.clone() else { return };
        let prefix = &self.settings.prefix;
        let _ = client.try_subscribe(format!("{prefix}/category/set"), QoS::AtLeastOnce);
        let _ = client.try_publish(format!("{prefix}/status"), QoS::AtLeastOnce, true, "online");
        // The current retained state, then what passed while offline (latest per topic).
        let pending = std::mem::take(&mut s.pending);
        let retained = s.retained.clone();
        for (topic, m) in
            retained.iter().chain(pending.iter().filter(|(t, m)| !m.retain || !retained.contains_key(*t)))
        {
            if client.try_publish(topic.clone(), m.qos, m.retain, m.payload.clone()).is_err() {
                s.pending.insert(topic.clone(), m.clone());
            }
        }
        self.connected.store(true, Ordering::Relaxed);
    }

    fn on_command(&self, topic: &str, payload: &[u8]) {
        let suffix = topic.strip_prefix(&format!("{}/", self.settings.prefix)).unwrap_or(topic).to_string();
        let command = payload::decode_command(&suffix, payload, self.settings.max_payload);
        if self.commands.try_send(Received { suffix, command }).is_err() {
            log::warn!("mqtt: command queue full, a command on {topic} was dropped");
        }
    }
}

fn sleep_unless(stop: &AtomicBool, total: Duration) {
    let end = std::time::Instant::now() + total;
    while !stop.load(Ordering::Relaxed) {
        let now = std::time::Instant::now();
        if now >= end {
            break;
        }
        std::thread::sleep((end - now).min(Duration::from_millis(50)));
    }
}

/// Subscribes to everything under `prefix` and calls `each(topic, payload)` for every message,
/// until `each` returns false. For `lookd watch` and the tests.
pub fn watch(settings: &Settings, mut each: impl FnMut(&str, &[u8]) -> bool) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut options = mqtt_options(settings);
    options.set_last_will(LastWill::new(format!("{}/watchers", settings.prefix), "", QoS::AtMostOnce, false));
    let mut warned = false;
    loop {
        let (client, mut connection) = Client::new(options.clone(), 16);
        for event in connection.iter() {
            match event {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    let _ = client.try_subscribe(format!("{}/#", settings.prefix), QoS::AtLeastOnce);
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    if !each(&p.topic, &p.payload) {
                        let _ = client.try_disconnect();
                        return;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    if !warned {
                        log::warn!("watch: {e}; retrying every second");
                        warned = true;
                    }
                    break;
                }
            }
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// The embedded broker (rumqttd) on `listen`, and optionally MQTT over WebSocket on `websocket`,
/// in its own thread. rumqttd keeps each topic's recent messages in memory (its commit log);
/// two 256 KiB segments per topic bound that on a kiosk, which needs no history.
pub fn start_embedded_broker(listen: &str, websocket: Option<&str>) -> Result<(), PublishError> {
    let server = |name: &str, addr: &str| {
        format!(
            "[{name}.1]\nname = \"{name}\"\nlisten = \"{addr}\"\nnext_connection_delay_ms = 1\n\
             [{name}.1.connections]\nconnection_timeout_ms = 5000\nmax_payload_size = 262144\n\
             max_inflight_count = 100\ndynamic_filters = true\n"
        )
    };
    let mut text = String::from(
        "id = 0\n[router]\nid = 0\nmax_connections = 64\nmax_outgoing_packet_count = 200\n\
         max_segment_size = 262144\nmax_segment_count = 2\n",
    );
    text.push_str(&server("v4", listen));
    if let Some(ws) = websocket {
        text.push_str(&server("ws", ws));
    }
    let config: rumqttd::Config = toml::from_str(&text).map_err(|e| PublishError::Broker(e.to_string()))?;
    // Fail here, clearly, if the port is taken (rumqttd would only log it from its thread).
    std::net::TcpListener::bind(listen)
        .map_err(|e| PublishError::Broker(format!("cannot listen on {listen}: {e}")))?;
    let mut broker = rumqttd::Broker::new(config);
    std::thread::Builder::new()
        .name("broker".into())
        .spawn(move || {
            if let Err(e) = broker.start() {
                log::error!("embedded broker stopped: {e}");
            }
        })
        .map_err(|e| PublishError::Broker(e.to_string()))?;
    Ok(())
}

/// Reads a secret from a file, trimming one trailing newline. Never logged.
pub fn read_secret(what: &'static str, path: &std::path::Path) -> Result<String, PublishError> {
    let text = std::fs::read_to_string(path).map_err(|source| PublishError::Secret {
        what,
        path: path.into(),
        source,
    })?;
    Ok(text.strip_suffix('\n').unwrap_or(&text).to_string())
}
