//! MQTT: the only module that knows rumqttc (and rumqttd, the embedded broker).
//!
//! rumqttc's event loop only moves while polled, never backs off and never re-subscribes, so a
//! network thread does all three: it blocks in `recv()`, and after an error it waits (`Backoff`:
//! 250 ms doubling to 3 s, plus up to 20% jitter) and builds a fresh client, so nothing rumqttc
//! held for the dead connection is replayed. On every ConnAck it re-subscribes and re-publishes
//! `online` and all retained state. Publishing never blocks (`try_publish`): rumqttc holds at
//! most `CLIENT_QUEUE` requests, and beyond that, or while the broker is away, lookd's `Outbox`
//! keeps only the latest message per topic and offers it again as the client's queue moves. It
//! must not rank, decode frames or decide policy: commands are decoded here and handed to the
//! pipeline.

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
    /// The fleet's catalog topic (absolute, not under the prefix), when the mirror follows one.
    pub fleet_topic: Option<String>,
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
    outbox: Outbox,
}

/// The topics under the prefix lookd takes commands on (`payload::decode_command`).
pub const COMMAND_TOPICS: [&str; 4] = ["category/set", "catalog/reload", "catalog/unavailable", "filter/set"];

/// Requests rumqttc may hold for a connection before `try_publish` refuses: a bound on what
/// waits behind a slow link (FIFO) before lookd's own latest-per-topic outbox takes over.
const CLIENT_QUEUE: usize = 16;

/// What lookd still has to hand to the client: the latest message per topic only, so a broker
/// that is away or slow costs one message per topic, never a backlog. Pure: `send` stands for
/// the client's `try_publish`, false when it refused (no connection, or its queue full).
#[derive(Default)]
struct Outbox {
    /// Latest per topic, not yet handed to a connected client.
    pending: BTreeMap<String, Message>,
    /// Current retained state, re-published on every connect.
    retained: BTreeMap<String, Message>,
}

impl Outbox {
    /// A new message: remembered if retained; what waits is offered first (it is older), then
    /// this one; whatever the client refuses waits, replacing an older one of its topic.
    fn offer(&mut self, topic: String, msg: Message, mut send: impl FnMut(&str, &Message) -> bool) {
        if msg.retain {
            self.retained.insert(topic.clone(), msg.clone());
        }
        self.pending.remove(&topic); // superseded
        self.flush(&mut send);
        if !(self.pending.is_empty() && send(&topic, &msg)) {
            self.pending.insert(topic, msg);
        }
    }

    /// Offers what waits, in topic order, until the client refuses one.
    fn flush(&mut self, mut send: impl FnMut(&str, &Message) -> bool) {
        while let Some((topic, msg)) = self.pending.pop_first() {
            if !send(&topic, &msg) {
                self.pending.insert(topic, msg);
                break;
            }
        }
    }

    /// A new connection (the broker may have lost everything): all retained state, then what
    /// passing messages wait; what the client refuses waits.
    fn on_connect(&mut self, mut send: impl FnMut(&str, &Message) -> bool) {
        let passing: Vec<_> =
            std::mem::take(&mut self.pending).into_iter().filter(|(_, m)| !m.retain).collect();
        let all: Vec<(String, Message)> =
            self.retained.iter().map(|(t, m)| (t.clone(), m.clone())).chain(passing).collect();
        for (topic, msg) in all {
            if !self.pending.is_empty() || !send(&topic, &msg) {
                self.pending.insert(topic, msg);
            }
        }
    }
}

/// Reconnect delays: 250 ms doubling to 3 s, each plus up to 20% jitter; back to 250 ms once
/// a connection is made.
struct Backoff {
    delay: Duration,
    rng: SplitMix64,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(250);
    const MAX: Duration = Duration::from_secs(3);

    fn new(seed: u64) -> Backoff {
        Backoff { delay: Self::FIRST, rng: SplitMix64::new(seed) }
    }

    /// How long to wait before the next attempt.
    fn next(&mut self) -> Duration {
        let jitter = self.delay.mul_f64(0.2 * (self.rng.below(1000) as f64 / 1000.0));
        let wait = self.delay + jitter;
        self.delay = (self.delay * 2).min(Self::MAX);
        wait
    }

    fn reset(&mut self) {
        self.delay = Self::FIRST;
    }
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
        let connected = self.is_connected();
        let mut guard = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        let Shared { client, outbox } = &mut *guard;
        let client = client.as_ref().filter(|_| connected);
        outbox.offer(topic, msg, |t, m| try_send(client, t, m));
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

/// A client whose queue holds at most `CLIENT_QUEUE` requests, and its connection.
fn bounded_client(options: MqttOptions) -> (Client, rumqttc::Connection) {
    Client::new(options, CLIENT_QUEUE)
}

/// Hands one message to the client without blocking; false when there is none or it refused.
fn try_send(client: Option<&Client>, topic: &str, m: &Message) -> bool {
    client.is_some_and(|c| c.try_publish(topic, m.qos, m.retain, m.payload.clone()).is_ok())
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
    let mut o = base_options(s, &s.client_id);
    o.set_last_will(LastWill::new(format!("{}/status", s.prefix), "offline", QoS::AtLeastOnce, true));
    o
}

/// The same without a last will, under another client id.
fn base_options(s: &Settings, client_id: &str) -> MqttOptions {
    let mut o = MqttOptions::new(client_id, s.host.clone(), s.port);
    o.set_keep_alive(s.keep_alive);
    o.set_clean_session(true);
    // Incoming: room for the largest stock list lookd accepts, so that one over its limit is
    // refused on `/error`, not by dropping the connection (a retained one would come back on
    // every reconnect). The broker should cap messages on these topics as well (docs/fleet.md).
    o.set_max_packet_size(s.max_payload.max(2 * payload::MAX_UNAVAILABLE_BYTES), 256 * 1024);
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
        let mut backoff = Backoff::new(std::process::id() as u64);
        let mut ever_connected = false;
        let mut last_error = String::new();
        while !self.stop.load(Ordering::Relaxed) {
            let (client, mut connection) = bounded_client(mqtt_options(&self.settings));
            self.shared.lock().unwrap_or_else(|e| e.into_inner()).client = Some(client);
            loop {
                match connection.recv() {
                    Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => {
                        if ever_connected {
                            self.reconnects.fetch_add(1, Ordering::Relaxed);
                        }
                        ever_connected = true;
                        backoff.reset();
                        last_error.clear();
                        self.on_connect();
                        log::info!("mqtt: connected to {}:{}", self.settings.host, self.settings.port);
                    }
                    Ok(Ok(Event::Incoming(Packet::Publish(p)))) => self.on_command(&p.topic, &p.payload),
                    // The client's queue moves (a packet went out, an ack came in): what waits
                    // in the outbox goes next, so a slow link never strands the latest ranking.
                    Ok(Ok(_)) => self.flush(),
                    Ok(Err(_)) if self.stop.load(Ordering::Relaxed) => break,
                    Ok(Err(e)) => {
                        let e = e.to_string();
                        if e != last_error {
                            let (host, port) = (&self.settings.host, self.settings.port);
                            log::warn!("mqtt: {host}:{port}: {e}{}; retrying", tls_hint(&self.settings, &e));
                            last_error = e;
                        }
                        break;
                    }
                    Err(_) => break,
                }
            }
            self.connected.store(false, Ordering::Relaxed);
            self.shared.lock().unwrap_or_else(|e| e.into_inner()).client = None;
            sleep_unless(&self.stop, backoff.next());
        }
    }

    fn on_connect(&self) {
        let mut guard = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        let Shared { client, outbox } = &mut *guard;
        let Some(client) = client.as_ref() else { return };
        let prefix = &self.settings.prefix;
        for command in COMMAND_TOPICS {
            let _ = client.try_subscribe(format!("{prefix}/{command}"), QoS::AtLeastOnce);
        }
        if let Some(fleet) = &self.settings.fleet_topic {
            let _ = client.try_subscribe(fleet.clone(), QoS::AtLeastOnce);
        }
        let _ = client.try_publish(format!("{prefix}/status"), QoS::AtLeastOnce, true, "online");
        outbox.on_connect(|t, m| try_send(Some(client), t, m));
        self.connected.store(true, Ordering::Relaxed);
    }

    fn flush(&self) {
        if !self.connected.load(Ordering::Relaxed) {
            return;
        }
        let mut guard = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        let Shared { client, outbox } = &mut *guard;
        outbox.flush(|t, m| try_send(client.as_ref(), t, m));
    }

    fn on_command(&self, topic: &str, payload: &[u8]) {
        let (suffix, command) = if self.settings.fleet_topic.as_deref() == Some(topic) {
            (topic.to_string(), payload::decode_fleet(payload))
        } else {
            let suffix =
                topic.strip_prefix(&format!("{}/", self.settings.prefix)).unwrap_or(topic).to_string();
            let command = payload::decode_command(&suffix, payload, self.settings.max_payload);
            (suffix, command)
        };
        if self.commands.try_send(Received { suffix, command }).is_err() {
            log::warn!("mqtt: command queue full, a command on {topic} was dropped");
        }
    }
}

/// Why a TLS connection may fail where a plaintext one would not: said once, with the error.
fn tls_hint(s: &Settings, error: &str) -> &'static str {
    if s.ca.is_some() && error.starts_with("TLS") {
        " (the config asks for TLS with a CA file; if this port speaks plaintext, lookd refuses it and never falls back)"
    } else {
        ""
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

/// The retained message on `topic`, if the broker has one within `wait` (start-up: a new fleet
/// mirror asks for the chain's catalog before it would embed one itself). A client of its own,
/// without a last will, so it says nothing about the mirror's status.
pub fn retained(settings: &Settings, topic: &str, wait: Duration) -> Option<Vec<u8>> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let options = base_options(settings, &format!("{}-boot", settings.client_id));
    let (client, mut connection) = Client::new(options, 4);
    let end = std::time::Instant::now() + wait;
    let mut got = None;
    while let Some(left) = end.checked_duration_since(std::time::Instant::now()) {
        match connection.recv_timeout(left) {
            Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => {
                let _ = client.try_subscribe(topic, QoS::AtLeastOnce);
            }
            Ok(Ok(Event::Incoming(Packet::Publish(p)))) if p.topic == topic => {
                got = Some(p.payload.to_vec());
                break;
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                log::info!("fleet: cannot ask {}:{} for {topic}: {e}", settings.host, settings.port);
                std::thread::sleep(Duration::from_millis(250).min(left));
            }
            Err(_) => break,
        }
    }
    let _ = client.try_disconnect();
    got
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
                        let (host, port) = (&settings.host, settings.port);
                        log::warn!(
                            "watch: cannot reach the broker at {host}:{port}: {e}{}; retrying every second \
                             (is lookd running, with this config? Ctrl-C stops)",
                            tls_hint(settings, &e.to_string())
                        );
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
///
/// With `login` (user, password), both listeners refuse any client that does not give them.
pub fn start_embedded_broker(
    listen: &str,
    websocket: Option<&str>,
    login: Option<(&str, &str)>,
) -> Result<(), PublishError> {
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
    let mut config: rumqttd::Config =
        toml::from_str(&text).map_err(|e| PublishError::Broker(e.to_string()))?;
    if let Some((user, password)) = login {
        let users: std::collections::HashMap<String, String> =
            [(user.to_string(), password.to_string())].into_iter().collect();
        for servers in [config.v4.as_mut(), config.ws.as_mut()].into_iter().flatten() {
            for server in servers.values_mut() {
                server.connections.auth = Some(users.clone());
            }
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(payload: &str, retain: bool) -> Message {
        Message { payload: payload.as_bytes().to_vec(), retain, qos: QoS::AtMostOnce }
    }

    /// A client whose queue takes `room` more messages, recording them.
    struct FakeClient {
        room: usize,
        got: Vec<(String, String)>,
    }

    impl FakeClient {
        fn send(&mut self, t: &str, m: &Message) -> bool {
            if self.room == 0 {
                return false;
            }
            self.room -= 1;
            self.got.push((t.to_string(), String::from_utf8_lossy(&m.payload).into_owned()));
            true
        }
    }

    #[test]
    fn the_client_holds_at_most_16_requests_then_refuses_without_blocking() {
        // No connection is ever polled: nothing leaves the queue, as behind a stalled link.
        let (client, _connection) = bounded_client(MqttOptions::new("t", "127.0.0.1", 1));
        let accepted = (0..1000)
            .take_while(|i| {
                client.try_publish(format!("t/{i}"), QoS::AtMostOnce, false, vec![0u8; 8]).is_ok()
            })
            .count();
        assert_eq!(accepted, 16, "docs/reliability.md promises rumqttc holds at most 16 requests");
    }

    #[test]
    fn outbox_keeps_the_latest_message_per_topic_while_the_client_refuses() {
        let mut out = Outbox::default();
        let mut client = FakeClient { room: 0, got: Vec::new() };
        for i in 0..1000 {
            out.offer("p/stats".into(), msg(&format!("s{i}"), false), |t, m| client.send(t, m));
            out.offer("p/rec".into(), msg(&format!("r{i}"), true), |t, m| client.send(t, m));
        }
        assert_eq!(out.pending.len(), 2, "one per topic, not a backlog");
        assert_eq!(out.pending["p/stats"].payload, b"s999");
        assert_eq!(out.retained["p/rec"].payload, b"r999");
        // The queue moves: what waits goes, oldest topic order first, then the new message.
        client.room = 10;
        out.flush(|t, m| client.send(t, m));
        assert!(out.pending.is_empty());
        let want = [("p/rec", "r999"), ("p/stats", "s999")].map(|(t, p)| (t.to_string(), p.to_string()));
        assert_eq!(client.got, want);
    }

    #[test]
    fn outbox_never_sends_a_newer_message_before_an_older_one_that_waits() {
        let mut out = Outbox::default();
        let mut client = FakeClient { room: 0, got: Vec::new() };
        out.offer("p/a".into(), msg("a1", false), |t, m| client.send(t, m));
        client.room = 1;
        // b1 finds a1 waiting: a1 goes first, and b1 waits for the next room.
        out.offer("p/b".into(), msg("b1", false), |t, m| client.send(t, m));
        assert_eq!(client.got, [("p/a".to_string(), "a1".to_string())]);
        assert_eq!(out.pending.keys().collect::<Vec<_>>(), ["p/b"]);
        // A newer message of a waiting topic replaces it.
        client.room = 5;
        out.offer("p/b".into(), msg("b2", false), |t, m| client.send(t, m));
        assert_eq!(client.got.last().unwrap(), &("p/b".to_string(), "b2".to_string()));
        assert!(out.pending.is_empty() && client.got.len() == 2, "{:?}", client.got);
    }

    #[test]
    fn outbox_resends_all_retained_state_on_connect_and_the_passing_messages_once() {
        let mut out = Outbox::default();
        let mut client = FakeClient { room: 100, got: Vec::new() };
        out.offer("p/state".into(), msg("shoes", true), |t, m| client.send(t, m));
        out.offer("p/rec".into(), msg("r1", true), |t, m| client.send(t, m));
        client.got.clear();
        client.room = 0; // the broker went away
        out.offer("p/rec".into(), msg("r2", true), |t, m| client.send(t, m));
        out.offer("p/error".into(), msg("e1", false), |t, m| client.send(t, m));
        client.room = 100; // a new connection to a broker that lost everything
        out.on_connect(|t, m| client.send(t, m));
        let mut got = client.got.clone();
        got.sort();
        let want = [("p/error", "e1"), ("p/rec", "r2"), ("p/state", "shoes")];
        assert_eq!(got, want.map(|(t, p)| (t.to_string(), p.to_string())));
        assert!(out.pending.is_empty());
        // The next connection again restores the retained state, but not the old error.
        client.got.clear();
        out.on_connect(|t, m| client.send(t, m));
        assert!(client.got.iter().all(|(t, _)| t != "p/error"), "{:?}", client.got);
        assert_eq!(client.got.len(), 2);
    }

    #[test]
    fn backoff_doubles_from_250_ms_to_3_s_with_at_most_20_percent_jitter_and_resets() {
        let mut b = Backoff::new(7);
        let base = [250, 500, 1000, 2000, 3000, 3000, 3000];
        for ms in base {
            let wait = b.next();
            let low = Duration::from_millis(ms);
            assert!(wait >= low && wait <= low.mul_f64(1.2), "{wait:?} outside {ms} ms + 20%");
        }
        b.reset();
        assert!(b.next() < Duration::from_millis(301));
        // Jitter differs from seed to seed, so a fleet's mirrors do not reconnect in step.
        let waits = |seed| {
            let mut b = Backoff::new(seed);
            (0..5).map(|_| b.next()).collect::<Vec<_>>()
        };
        assert_ne!(waits(1), waits(2));
    }

    /// Against a real socket that hangs up on every connection: the client's attempts follow
    /// the backoff (5 in the first 4.5 s), instead of spinning.
    #[test]
    fn a_broker_that_hangs_up_is_retried_with_backoff() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let attempts = Arc::new(Mutex::new(Vec::new()));
        let seen = attempts.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().map_while(Result::ok) {
                seen.lock().unwrap().push(std::time::Instant::now());
                drop(conn);
            }
        });
        let started = std::time::Instant::now();
        let mqtt = Mqtt::start(Settings {
            host: "127.0.0.1".into(),
            port,
            ca: None,
            client_id: "backoff-test".into(),
            credentials: None,
            keep_alive: Duration::from_secs(30),
            qos: 1,
            prefix: "t".into(),
            max_payload: 4096,
            fleet_topic: None,
        });
        std::thread::sleep(Duration::from_millis(4500));
        let at: Vec<Duration> = attempts.lock().unwrap().iter().map(|t| *t - started).collect();
        mqtt.shutdown(Duration::from_secs(1));
        assert!((4..=6).contains(&at.len()), "attempts at {at:?}");
        let gaps: Vec<Duration> = at.windows(2).map(|w| w[1] - w[0]).collect();
        for (i, g) in gaps.iter().enumerate() {
            let low = Duration::from_millis(250 << i).min(Duration::from_secs(3));
            assert!(*g >= low, "gap {i} {g:?} shorter than {low:?}: attempts at {at:?}");
        }
    }
}
