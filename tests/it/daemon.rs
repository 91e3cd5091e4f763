//! `lookd run` end to end: frames through a real (tiny) model against a synthesized catalog,
//! published to a real broker (mosquitto started here on 127.0.0.1, or lookd's embedded one)
//! and read by mosquitto_sub. The shipped model on real photos is `cli`'s and `report`'s part.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

use crate::{free_port, have, lookd, s, stdout, synth_catalog, tiny_model, wait_port, KillOnDrop};

pub(crate) struct Mosquitto {
    child: Child,
    pub(crate) port: u16,
    conf: PathBuf,
    /// Everything the broker did (`log_type all`): who published what, who disconnected how.
    log: PathBuf,
}

impl Mosquitto {
    pub(crate) fn start(dir: &Path, port: u16) -> Mosquitto {
        Mosquitto::start_with(dir, port, "")
    }
    /// With more configuration after the MQTT listener's (another listener, say).
    pub(crate) fn start_with(dir: &Path, port: u16, extra: &str) -> Mosquitto {
        let conf = dir.join(format!("mosquitto-{port}.conf"));
        let log = dir.join(format!("mosquitto-{port}.log"));
        std::fs::write(
            &conf,
            format!(
                "per_listener_settings false\nallow_anonymous true\npersistence false\nlog_dest stderr\nlog_type all\n\
                 listener {port} 127.0.0.1\n{extra}"
            ),
        )
        .unwrap();
        let child = Command::new("mosquitto")
            .args(["-c", s(&conf)])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        wait_port(port);
        Mosquitto { child, port, conf, log }
    }
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
    pub(crate) fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
    pub(crate) fn restart(&mut self) {
        let log = std::fs::OpenOptions::new().append(true).open(&self.log).unwrap();
        self.child = Command::new("mosquitto")
            .args(["-c", s(&self.conf)])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        wait_port(self.port);
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        self.stop();
    }
}

/// mosquitto_sub on `<prefix>/#`: each line "topic payload" arrives on a channel.
pub(crate) struct Sub {
    child: Child,
    lines: Receiver<(String, String)>,
    /// Received, not yet matched by an `expect`, in arrival order.
    unmatched: std::cell::RefCell<Vec<(String, serde_json::Value)>>,
}

impl Sub {
    pub(crate) fn start(port: u16, prefix: &str) -> Sub {
        let mut sub = Command::new("mosquitto_sub");
        sub.args(["-h", "127.0.0.1", "-p", &port.to_string(), "-t", &format!("{prefix}/#"), "-v"]);
        Sub::spawn(sub)
    }

    /// The same for a mosquitto_sub command the caller made (in a network namespace, say).
    pub(crate) fn spawn(mut sub: Command) -> Sub {
        let mut child = sub.stdout(Stdio::piped()).spawn().unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            // Lossy: the commands a test sends on purpose may be binary.
            for raw in BufReader::new(out).split(b'\n').map_while(Result::ok) {
                let line = String::from_utf8_lossy(&raw);
                let (topic, payload) = line.split_once(' ').unwrap_or((&line, ""));
                if tx.send((topic.to_string(), payload.to_string())).is_err() {
                    break;
                }
            }
        });
        Sub { child, lines, unmatched: Default::default() }
    }

    /// The first message on `topic` (after the prefix) that `pred` accepts, within `limit`;
    /// earlier messages it does not match stay for later calls.
    pub(crate) fn expect(
        &self,
        topic: &str,
        limit: Duration,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let matches = |t: &str, v: &serde_json::Value| t.ends_with(&format!("/{topic}")) && pred(v);
        let mut unmatched = self.unmatched.borrow_mut();
        if let Some(i) = unmatched.iter().position(|(t, v)| matches(t, v)) {
            return unmatched.remove(i).1;
        }
        let end = Instant::now() + limit;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            let (t, payload) =
                self.lines.recv_timeout(left).unwrap_or_else(|_| panic!("nothing on {topic} in {limit:?}"));
            let v = serde_json::from_str(&payload).unwrap_or(serde_json::Value::String(payload));
            if matches(&t, &v) {
                return v;
            }
            unmatched.push((t, v));
        }
    }
}

impl Sub {
    /// Forgets what came so far (after a moment for what is on its way), so the next `expect`
    /// sees only what follows.
    pub(crate) fn clear(&self) {
        std::thread::sleep(Duration::from_millis(300));
        while self.lines.try_recv().is_ok() {}
        self.unmatched.borrow_mut().clear();
    }

    /// The next message on `topic` within `limit`, if one comes (others are kept for later).
    /// The next message on any topic, in arrival order (what `expect` left unmatched first):
    /// (topic suffix after the prefix, payload).
    pub(crate) fn next(&self, limit: Duration) -> Option<(String, serde_json::Value)> {
        let mut unmatched = self.unmatched.borrow_mut();
        if !unmatched.is_empty() {
            return Some(unmatched.remove(0));
        }
        let (t, payload) = self.lines.recv_timeout(limit).ok()?;
        let v = serde_json::from_str(&payload).unwrap_or(serde_json::Value::String(payload));
        Some((t, v))
    }

    pub(crate) fn try_expect(&self, topic: &str, limit: Duration) -> Option<serde_json::Value> {
        let end = Instant::now() + limit;
        while let Ok((t, payload)) = self.lines.recv_timeout(end.saturating_duration_since(Instant::now())) {
            let v = serde_json::from_str(&payload).unwrap_or(serde_json::Value::String(payload));
            if t.ends_with(&format!("/{topic}")) {
                return Some(v);
            }
            self.unmatched.borrow_mut().push((t, v));
        }
        None
    }
}

impl Drop for Sub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) struct Daemon {
    child: Child,
}

impl Daemon {
    pub(crate) fn start(config: &Path) -> Daemon {
        Daemon::spawn(config, "warn", Stdio::null())
    }
    /// The same with its stderr (RUST_LOG=info) in `log`.
    pub(crate) fn start_logged(config: &Path, log: &Path) -> Daemon {
        Daemon::spawn(config, "info", std::fs::File::create(log).unwrap().into())
    }
    /// `start_logged`, telling systemd's notify protocol to a listener at `socket`.
    pub(crate) fn start_notified(config: &Path, log: &Path, socket: &Path) -> Daemon {
        let stderr = std::fs::File::create(log).unwrap();
        let child = crate::lookd_command()
            .args(["run", "--config", s(config)])
            .env("RUST_LOG", "info")
            .env("NOTIFY_SOCKET", socket)
            .stderr(stderr)
            .spawn()
            .unwrap();
        Daemon { child }
    }
    fn spawn(config: &Path, rust_log: &str, stderr: Stdio) -> Daemon {
        let child = crate::lookd_command()
            .args(["run", "--config", s(config)])
            .env("RUST_LOG", rust_log)
            .stderr(stderr)
            .spawn()
            .unwrap();
        Daemon { child }
    }
    /// Its exit status, if it exits within `limit` (killed otherwise).
    pub(crate) fn wait(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let end = Instant::now() + limit;
        while Instant::now() < end {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
    /// SIGKILL: no goodbye, so only the broker's last will says `offline`.
    pub(crate) fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
    /// Sends `signal` (`HUP`, ...).
    pub(crate) fn signal(&self, signal: &str) {
        let st = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(st.success());
    }
    /// SIGTERM, and the exit status within `limit`.
    pub(crate) fn terminate(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        self.wait(limit)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) struct Setup {
    _dir: tempfile::TempDir,
    pub(crate) root: PathBuf,
}

/// A synthesized street scene: a figure in two colours on a backdrop, each seed its own; scenes
/// of consecutive seeds differ by more than the change gate's default threshold.
fn synth_scene(path: &Path, seed: u32) {
    let img = image::RgbImage::from_fn(320, 480, |x, y| {
        let figure = (110..210).contains(&x) && (60..440).contains(&y);
        let top = y < 250;
        match (figure, top) {
            (true, true) => image::Rgb([(seed * 71) as u8, 40 + (seed * 23) as u8, (x / 4) as u8]),
            (true, false) => image::Rgb([30, (seed * 97) as u8, 200 - (y / 4) as u8]),
            // The backdrops differ in brightness from seed to seed, past the change gate.
            _ => {
                let light = if seed.is_multiple_of(2) { 200 } else { 60 };
                image::Rgb([light - (y / 12) as u8, light, (seed * 41 + x / 8) as u8])
            }
        }
    });
    img.save(path).unwrap();
}

/// Products in a test's synthesized catalog, shoes and pants, unless the test asks for more.
const PRODUCTS: usize = 24;

/// A temp folder with a synthesized catalog (`PRODUCTS`), its cache built with the tiny model,
/// and `scenes/` holding `scenes` synthesized scenes named 0.jpg, 1.jpg, ...
/// No shared photo is needed: what these tests check is the daemon, not the model.
pub(crate) fn setup(scenes: u32) -> Setup {
    let setup = setup_without_cache(scenes, PRODUCTS);
    let (csv, cache) = (setup.root.join("catalog.csv"), setup.root.join("catalog.cache"));
    let o =
        lookd(&["catalog", "build", "--catalog", s(&csv), "--model", s(&tiny_model()), "--out", s(&cache)]);
    assert!(o.status.success(), "{}", crate::stderr(&o));
    setup
}

/// The same with `products` products, but the daemon (or the test) must build the cache.
pub(crate) fn setup_without_cache(scenes: u32, products: usize) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    synth_catalog(&root, products);
    std::fs::create_dir(root.join("scenes")).unwrap();
    for i in 0..scenes {
        synth_scene(&root.join(format!("scenes/{i}.jpg")), i + 1);
    }
    Setup { _dir: dir, root }
}

pub(crate) fn write_config(s: &Setup, broker: &str, extra: &str) -> PathBuf {
    let config = s.root.join("lookd.toml");
    let text = format!(
        "device-id = \"t\"\nmodel = {model:?}\n[catalog]\ncsv = {csv:?}\nimages = {images:?}\ncache = {cache:?}\n\
         [camera]\nsource = \"folder\"\npath = {scenes:?}\nrate = 10.0\nmirror = false\n\
         [pipeline]\ncategory = \"shoes\"\nhold-off-ms = 0\nmax-rate = 20.0\nstats-interval-s = 1\n{extra}\n{broker}\n",
        model = tiny_model(),
        csv = s.root.join("catalog.csv"),
        images = s.root,
        cache = s.root.join("catalog.cache"),
        scenes = s.root.join("scenes"),
    );
    std::fs::write(&config, text).unwrap();
    config
}

pub(crate) fn ids(v: &serde_json::Value) -> Vec<String> {
    v["items"].as_array().unwrap().iter().map(|i| i["id"].as_str().unwrap().to_string()).collect()
}

/// What `lookd recommend` says for the same scene and cache.
fn recommend_ids(s: &Setup, scene: &str, category: &str) -> Vec<String> {
    let scene = s.root.join("scenes").join(scene);
    let cache = s.root.join("catalog.cache");
    let o = lookd(&[
        "recommend",
        "--scene",
        crate::s(&scene),
        "--category",
        category,
        "--model",
        crate::s(&tiny_model()),
        "--cache",
        crate::s(&cache),
        "--json",
    ]);
    assert!(o.status.success());
    ids(&serde_json::from_str(&stdout(&o)).unwrap())
}

const WAIT: Duration = Duration::from_secs(20);

/// The kiosk's view of one daemon: status, state, recommendations, a category command, a bad one.
fn check_topics(setup: &Setup, port: u16) {
    let sub = Sub::start(port, "lookd/t");
    sub.expect("status", WAIT, |v| v == "online");
    let state = sub.expect("category/state", WAIT, |_| true);
    assert_eq!(state["slug"], "shoes");
    let rec = sub.expect("recommendations/shoes", WAIT, |_| true);
    assert_eq!(ids(&rec), recommend_ids(setup, "0.jpg", "shoes"));

    let publish = |payload: &str| {
        let st = Command::new("mosquitto_pub")
            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-t", "lookd/t/category/set", "-m", payload])
            .status()
            .unwrap();
        assert!(st.success());
    };
    publish("pants");
    sub.expect("category/state", WAIT, |v| v["slug"] == "pants");
    let pants = sub.expect("recommendations/pants", WAIT, |_| true);
    assert_eq!(ids(&pants), recommend_ids(setup, "0.jpg", "pants"));

    publish("{\"category\": \"spacesuits\"}");
    let err = sub.expect("error", WAIT, |_| true);
    assert!(err["error"].as_str().unwrap().contains("unknown category \"spacesuits\""), "{err}");
    // Malformed, oversized and binary payloads: each refused on the error topic, by name.
    publish("{\"category\": ");
    let err = sub.expect("error", WAIT, |_| true);
    assert!(err["error"].as_str().unwrap().contains("bad JSON"), "{err}");
    publish(&"x".repeat(5000));
    let err = sub.expect("error", WAIT, |_| true);
    assert!(err["error"].as_str().unwrap().contains("over the 4096-byte limit"), "{err}");
    let bin = setup.root.join("binary-command");
    std::fs::write(&bin, [0xff, 0xfe, 0x00, 0x01, 0x80]).unwrap();
    let st = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-t", "lookd/t/category/set", "-f", s(&bin)])
        .status()
        .unwrap();
    assert!(st.success());
    let err = sub.expect("error", WAIT, |_| true);
    assert!(err["error"].as_str().unwrap().contains("not UTF-8"), "{err}");
    // Nothing changed: a fresh subscriber still sees pants as the retained state.
    let late = Sub::start(port, "lookd/t");
    late.expect("category/state", WAIT, |v| v["slug"] == "pants");
    // Retained: the status, the category and the rankings; never an error or the stats, which
    // would greet every new kiosk with an old complaint or old numbers.
    sub.expect("stats", WAIT, |_| true);
    let o = Command::new("mosquitto_sub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-t",
            "lookd/t/#",
            "-v",
            "--retained-only",
            "-W",
            "2",
        ])
        .output()
        .unwrap();
    let retained: Vec<String> =
        stdout(&o).lines().map(|l| l.split(' ').next().unwrap_or("").to_string()).collect();
    for topic in ["lookd/t/status", "lookd/t/category/state", "lookd/t/recommendations/pants"] {
        assert!(retained.iter().any(|t| t == topic), "{topic} not retained: {retained:?}");
    }
    for topic in ["lookd/t/error", "lookd/t/stats"] {
        assert!(!retained.iter().any(|t| t == topic), "{topic} retained: {retained:?}");
    }
}

#[test]
fn daemon_publishes_to_mosquitto_and_obeys_commands() {
    if !have("mosquitto") || !have("mosquitto_sub") {
        return;
    }
    let setup = setup(1);
    let port = free_port();
    let broker = Mosquitto::start(&setup.root, port);
    let config = write_config(&setup, &format!("[mqtt]\nbroker = \"mqtt://127.0.0.1:{port}\""), "");
    let mut daemon = Daemon::start(&config);
    check_topics(&setup, port);
    // SIGTERM: offline first, then a clean exit within 2 s.
    let sub = Sub::start(port, "lookd/t");
    sub.expect("status", WAIT, |v| v == "online");
    let status = daemon.terminate(Duration::from_secs(2)).expect("stopped within 2 s");
    assert!(status.success(), "{status}");
    sub.expect("status", Duration::from_secs(2), |v| v == "offline");
    // That `offline` was lookd's own (7 bytes on its status topic), followed by a clean
    // DISCONNECT, which cancels the last will: the broker did not publish it for lookd.
    let log = broker.log();
    let said = log.rfind("Received PUBLISH from lookd-t (d0, q1, r1").map(|i| &log[i..]).unwrap_or("");
    assert!(
        said.contains("'lookd/t/status', ... (7 bytes))"),
        "lookd did not publish offline itself:\n{log}"
    );
    assert!(said.contains("Received DISCONNECT from lookd-t"), "no clean disconnect after offline:\n{log}");
    // Killed instead: no DISCONNECT, the connection just closes, and the broker's last will says
    // `offline` on lookd's behalf.
    let daemon = Daemon::start(&config);
    let sub = Sub::start(port, "lookd/t");
    sub.expect("status", WAIT, |v| v == "online");
    sub.unmatched.borrow_mut().clear(); // the first daemon's retained offline
    let connected_at = broker.log().len();
    drop(daemon); // SIGKILL
    sub.expect("status", Duration::from_secs(5), |v| v == "offline");
    let after = broker.log()[connected_at..].to_string();
    assert!(after.contains("Client lookd-t closed its connection."), "{after}");
    assert!(!after.contains("Received DISCONNECT from lookd-t"), "{after}");
}

#[test]
fn daemon_with_its_embedded_broker_builds_its_cache_and_serves_websocket() {
    if !have("mosquitto_sub") {
        return;
    }
    let setup = setup_without_cache(1, PRODUCTS);
    let (port, ws) = (free_port(), free_port());
    let broker =
        format!("[mqtt]\nbroker = \"embedded\"\n[broker]\nlisten = \"127.0.0.1:{port}\"\nwebsocket = \"127.0.0.1:{ws}\"");
    let config = write_config(&setup, &broker, "");
    let _daemon = Daemon::start(&config);
    wait_port(port);
    // The broker is up from the start; the cache is built beside the loop (a first start).
    check_topics(&setup, port);
    // MQTT over WebSocket for a kiosk browser: the listener accepts the upgrade.
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", ws)).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let key = "dGhlIHNhbXBsZSBub25jZQ==";
    write!(
        conn,
        "GET /mqtt HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n"
    )
    .unwrap();
    // The upgrade's reply ends with a blank line; then MQTT in binary WebSocket frames.
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        conn.read_exact(&mut b).unwrap();
        head.push(b[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&head));
    // CONNECT (MQTT 3.1.1, clean session, keep-alive 30 s, client id "ws-kiosk").
    let mut connect = vec![0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x02, 0x00, 0x1e, 0x00, 0x08];
    connect.extend_from_slice(b"ws-kiosk");
    ws_send(&mut conn, &mqtt_packet(0x10, &connect));
    let mut buf = Vec::new();
    let (kind, body) = mqtt_read(&mut conn, &mut buf);
    assert_eq!((kind, body.as_slice()), (0x20, &[0x00, 0x00][..]), "CONNACK, accepted");
    // SUBSCRIBE to the status (packet id 1, QoS 0): the retained `online` comes back.
    let topic = b"lookd/t/status";
    let mut subscribe = vec![0x00, 0x01, 0x00, topic.len() as u8];
    subscribe.extend_from_slice(topic);
    subscribe.push(0x00);
    ws_send(&mut conn, &mqtt_packet(0x82, &subscribe));
    let mut got = None;
    for _ in 0..4 {
        let (kind, body) = mqtt_read(&mut conn, &mut buf);
        if kind & 0xf0 == 0x30 {
            let n = u16::from_be_bytes([body[0], body[1]]) as usize;
            got = Some((body[2..2 + n].to_vec(), body[2 + n..].to_vec()));
            break;
        }
    }
    let (t, payload) = got.expect("a PUBLISH on the status topic over WebSocket");
    assert_eq!((t.as_slice(), payload.as_slice()), (&topic[..], &b"online"[..]));
}

/// An MQTT 3.1.1 CONNECT over a fresh WebSocket to `host:port`, with or without a login: Ok when
/// the broker accepts it (CONNACK 0), else what happened instead.
pub(crate) fn ws_connect(host: &str, port: u16, login: Option<(&str, &str)>) -> Result<(), String> {
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect((host, port)).map_err(|e| e.to_string())?;
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        conn,
        "GET /mqtt HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        conn.read_exact(&mut b).map_err(|e| format!("upgrade: {e}"))?;
        head.push(b[0]);
    }
    if !head.starts_with(b"HTTP/1.1 101") {
        return Err(String::from_utf8_lossy(&head).into_owned());
    }
    let flags = if login.is_some() { 0xc2 } else { 0x02 };
    let mut connect = vec![0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, flags, 0x00, 0x1e];
    let mut field = |f: &[u8]| {
        connect.extend_from_slice(&(f.len() as u16).to_be_bytes());
        connect.extend_from_slice(f);
    };
    field(b"ws-probe");
    if let Some((user, password)) = login {
        field(user.as_bytes());
        field(password.as_bytes());
    }
    ws_send(&mut conn, &mqtt_packet(0x10, &connect));
    let mut reply = [0u8; 6];
    match conn.read(&mut reply) {
        Ok(0) => Err("the broker closed the connection".into()),
        Ok(n) if n >= 6 && reply[2..6] == [0x20, 0x02, 0x00, 0x00] => Ok(()),
        Ok(n) => Err(format!("replied {:02x?}", &reply[..n])),
        Err(e) => Err(format!("no CONNACK: {e}")),
    }
}

/// An MQTT control packet: its first byte, the remaining length (variable-length encoded), `body`.
fn mqtt_packet(first: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![first];
    let mut n = body.len();
    loop {
        let byte = (n % 128) as u8;
        n /= 128;
        out.push(if n > 0 { byte | 0x80 } else { byte });
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(body);
    out
}

/// One binary WebSocket frame from a client (masked, as RFC 6455 requires of clients).
fn ws_send(conn: &mut std::net::TcpStream, data: &[u8]) {
    use std::io::Write;
    let mask = [0x37, 0xfa, 0x21, 0x3d];
    let mut frame = vec![0x82];
    match data.len() {
        n if n < 126 => frame.push(0x80 | n as u8),
        n => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
    }
    frame.extend_from_slice(&mask);
    frame.extend(data.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    conn.write_all(&frame).unwrap();
}

/// The payload of the next data frame from the server (unmasked; pings and pongs skipped).
fn ws_read(conn: &mut std::net::TcpStream) -> Vec<u8> {
    use std::io::Read;
    loop {
        let mut h = [0u8; 2];
        conn.read_exact(&mut h).unwrap();
        let mut n = (h[1] & 0x7f) as usize;
        if n == 126 {
            let mut l = [0u8; 2];
            conn.read_exact(&mut l).unwrap();
            n = u16::from_be_bytes(l) as usize;
        } else if n == 127 {
            let mut l = [0u8; 8];
            conn.read_exact(&mut l).unwrap();
            n = u64::from_be_bytes(l) as usize;
        }
        let mut data = vec![0u8; n];
        conn.read_exact(&mut data).unwrap();
        if matches!(h[0] & 0x0f, 0x0..=0x2) {
            return data;
        }
    }
}

/// The next MQTT packet from the WebSocket: (first byte, body). Frames and packets need not
/// line up (a frame may hold several packets, or part of one): `buf` keeps what is left over.
fn mqtt_read(conn: &mut std::net::TcpStream, buf: &mut Vec<u8>) -> (u8, Vec<u8>) {
    loop {
        // The remaining length: up to 4 bytes of 7 bits, the high bit saying "more".
        let mut len = 0usize;
        let mut header = None;
        for (k, b) in buf.iter().enumerate().skip(1).take(4) {
            len += ((b & 0x7f) as usize) << (7 * (k - 1));
            if b & 0x80 == 0 {
                header = Some(k + 1);
                break;
            }
        }
        if let Some(h) = header.filter(|h| buf.len() >= h + len) {
            let packet: Vec<u8> = buf.drain(..h + len).collect();
            return (packet[0], packet[h..].to_vec());
        }
        buf.extend(ws_read(conn));
    }
}

/// Broker restarts in one run: 20 by default (CI), `LOOKD_RESTART_TRIALS` for more or fewer.
fn restart_trials() -> usize {
    std::env::var("LOOKD_RESTART_TRIALS").ok().and_then(|v| v.parse().ok()).unwrap_or(20)
}

#[test]
fn broker_restart_reconnects_within_5_s_and_sends_nothing_stale() {
    if !have("mosquitto") || !have("mosquitto_sub") {
        return;
    }
    let setup = setup(2);
    let port = free_port();
    let mut broker = Mosquitto::start(&setup.root, port);
    let config = write_config(&setup, &format!("[mqtt]\nbroker = \"mqtt://127.0.0.1:{port}\""), "");
    let _daemon = Daemon::start(&config);
    let sub = Sub::start(port, "lookd/t");
    let mut before = sub.expect("recommendations/shoes", WAIT, |_| true)["frame"].as_u64().unwrap();
    drop(sub);
    let mut took = Vec::new();
    for trial in 0..restart_trials() {
        broker.stop();
        // Frames keep coming and being ranked meanwhile; the first outage is the longest.
        std::thread::sleep(Duration::from_millis(if trial == 0 { 2000 } else { 300 }));
        broker.restart(); // no persistence: the broker lost every retained message
        let back = Instant::now();
        let sub = Sub::start(port, "lookd/t");
        sub.expect("status", Duration::from_secs(5), |v| v == "online");
        let first = sub.expect("recommendations/shoes", Duration::from_secs(5), |_| true);
        took.push(back.elapsed());
        assert!(
            back.elapsed() < Duration::from_secs(5),
            "trial {trial}: reconnect took {:?}",
            back.elapsed()
        );
        sub.expect("category/state", Duration::from_secs(5), |_| true);
        // Nothing stale: what arrives is newer than what was sent before the outage, and later
        // messages never go back in time.
        let mut last = first["frame"].as_u64().unwrap();
        assert!(last > before, "trial {trial}: frame {last} is not newer than {before}");
        for _ in 0..2 {
            let next = sub.expect("recommendations/shoes", WAIT, |_| true)["frame"].as_u64().unwrap();
            assert!(next > last, "trial {trial}: frame {next} after {last}");
            last = next;
        }
        before = last;
    }
    // Re-subscribed after every restart (rumqttc does not, and the broker forgot the old
    // subscription): a category command sent now is obeyed.
    let sub = Sub::start(port, "lookd/t");
    let st = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-t", "lookd/t/category/set", "-m", "pants"])
        .status()
        .unwrap();
    assert!(st.success());
    sub.expect("category/state", Duration::from_secs(5), |v| v["slug"] == "pants");
    sub.expect("recommendations/pants", Duration::from_secs(5), |_| true);
    took.sort();
    eprintln!(
        "broker restarts: {} of {} back within 5 s; reconnect + first message: median {:?}, max {:?}",
        took.len(),
        restart_trials(),
        took[took.len() / 2],
        took[took.len() - 1]
    );
}

/// Carries `client` <-> `server` each way in its own thread with `carry(from, into)`, then shuts
/// the receiving side down, so a close on one end reaches the other.
fn pipe_both_ways(
    client: std::net::TcpStream,
    server: std::net::TcpStream,
    carry: impl Fn(&mut std::net::TcpStream, &mut std::net::TcpStream) + Clone + Send + 'static,
) {
    for (mut from, mut into) in [(client.try_clone().unwrap(), server.try_clone().unwrap()), (server, client)]
    {
        let carry = carry.clone();
        std::thread::spawn(move || {
            carry(&mut from, &mut into);
            let _ = into.shutdown(std::net::Shutdown::Both);
        });
    }
}

/// A TCP relay on loopback to `to` that the test opens and closes: closed, it cuts every
/// connection through it and refuses new ones (accepts and hangs up), as a dead link would.
fn gate_relay(to: u16) -> (u16, std::sync::Arc<std::sync::atomic::AtomicBool>) {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let open = Arc::new(AtomicBool::new(true));
    let live: Arc<Mutex<Vec<std::net::TcpStream>>> = Arc::default();
    let (gate, conns) = (open.clone(), live.clone());
    std::thread::spawn(move || loop {
        std::thread::sleep(Duration::from_millis(10));
        if !gate.load(Ordering::Relaxed) {
            for c in conns.lock().unwrap().drain(..) {
                let _ = c.shutdown(std::net::Shutdown::Both);
            }
        }
    });
    let gate = open.clone();
    std::thread::spawn(move || {
        for client in listener.incoming().map_while(Result::ok) {
            if !gate.load(Ordering::Relaxed) {
                continue; // dropped: hung up at once
            }
            let Ok(server) = std::net::TcpStream::connect(("127.0.0.1", to)) else { continue };
            live.lock().unwrap().extend([client.try_clone().unwrap(), server.try_clone().unwrap()]);
            pipe_both_ways(client, server, |from, into| {
                let _ = std::io::copy(from, into);
            });
        }
    });
    (port, open)
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

#[test]
fn after_an_outage_the_kiosk_gets_the_latest_ranking_once_not_the_backlog() {
    use std::sync::atomic::Ordering;
    if !have("mosquitto") || !have("mosquitto_sub") {
        return;
    }
    let setup = setup(2);
    let port = free_port();
    let _broker = Mosquitto::start(&setup.root, port);
    // lookd reaches the broker through the gate; the kiosk stays connected to the broker
    // itself, so it sees everything lookd sends once the link is back.
    let (relay, open) = gate_relay(port);
    let config = write_config(&setup, &format!("[mqtt]\nbroker = \"mqtt://127.0.0.1:{relay}\""), "");
    let _daemon = Daemon::start(&config);
    let sub = Sub::start(port, "lookd/t");
    // Rankings carry whole seconds only (docs/privacy.md), so the frame number tells the time: the
    // folder camera takes 10 frames a second, every one embedded, and frame `f` was taken about
    // (f - f0) / 10 s after the frame f0 of a ranking received before the outage.
    let before = sub.expect("recommendations/shoes", WAIT, |_| true);
    let (f0, t0) = (before["frame"].as_u64().unwrap(), now_ms());
    // 3 s without a link: about 30 frames ranked meanwhile (10 a second, each scene changed).
    open.store(false, Ordering::Relaxed);
    std::thread::sleep(Duration::from_secs(3));
    // What was in flight when the link went down has arrived by now; forget it.
    while sub.lines.try_recv().is_ok() {}
    sub.unmatched.borrow_mut().clear();
    let back = now_ms();
    // The frame being taken when the link came back, by that clock (an overestimate if the camera
    // runs a little slow, so 3 frames, 0.3 s, are allowed for).
    let frame_back = f0 + (back - t0) / 100;
    open.store(true, Ordering::Relaxed);
    let mut got = Vec::new();
    let end = Instant::now() + Duration::from_secs(8);
    while got.len() < 12 && Instant::now() < end {
        let v = sub.expect("recommendations/shoes", WAIT, |_| true);
        got.push(v["frame"].as_u64().unwrap());
    }
    eprintln!("after the outage, frames {got:?}; the link came back at about frame {frame_back}");
    // Of the frames taken while the link was down, one ranking at most: the latest, retained
    // for the kiosk; no burst of the backlog.
    let old: Vec<_> = got.iter().filter(|f| **f + 3 < frame_back).collect();
    assert!(old.len() <= 1, "{} rankings from the outage were sent after it: {got:?}", old.len());
    assert!(got.len() >= 10, "the rankings did not resume: {got:?}");
    assert!(got.windows(2).all(|w| w[1] > w[0]), "frames out of order: {got:?}");
}

#[test]
fn broker_absent_at_start_daemon_serves_and_connects_when_it_appears() {
    if !have("mosquitto") || !have("mosquitto_sub") {
        return;
    }
    let setup = setup(1);
    let port = free_port();
    let config = write_config(&setup, &format!("[mqtt]\nbroker = \"mqtt://127.0.0.1:{port}\""), "");
    let log_path = setup.root.join("lookd.log");
    let notify = setup.root.join("notify.sock");
    let ready = crate::notify_listener(&notify);
    let started = Instant::now();
    let daemon = KillOnDrop(
        crate::lookd_command()
            .args(["run", "--config", s(&config)])
            .env("RUST_LOG", "info,rumqttd=off,tracing=off")
            .env("NOTIFY_SOCKET", &notify)
            .stderr(std::fs::File::create(&log_path).unwrap())
            .spawn()
            .unwrap(),
    );
    // No broker: systemd still hears READY (within READY_WITHIN, 5 s, of the loop's start), so
    // the unit's start does not time out waiting for a broker.
    crate::notify_until(&ready, "READY=1", Duration::from_secs(15));
    eprintln!("READY with no broker after {:?}", started.elapsed());
    std::thread::sleep(Duration::from_secs(2));
    let broker = Mosquitto::start(&setup.root, port);
    let back = Instant::now();
    let sub = Sub::start(port, "lookd/t");
    let rec = sub.expect("recommendations/shoes", Duration::from_secs(6), |_| true);
    eprintln!("broker appeared after 7 s; first recommendation {:?} later", back.elapsed());
    assert_eq!(ids(&rec), recommend_ids(&setup, "0.jpg", "shoes"));
    drop(broker);
    let log = stop_and_read_log(daemon, &log_path);
    assert!(log.contains("broker not connected (retrying)"), "{log}");
}

/// A TCP relay on loopback that passes chunks of at most `chunk` bytes, holding each for `delay`
/// plus its size at `rate` bytes a second, one after another, each way: a broker behind a slow,
/// laggy link of `chunk / (delay + chunk / rate)` bytes a second.
fn slow_relay(to: u16, delay: Duration, rate: usize, chunk: usize) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for client in listener.incoming().map_while(Result::ok) {
            let Ok(server) = std::net::TcpStream::connect(("127.0.0.1", to)) else { continue };
            pipe_both_ways(client, server, move |from, into| {
                use std::io::{Read, Write};
                let mut buf = vec![0u8; chunk];
                while let Ok(n) = from.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    std::thread::sleep(delay + Duration::from_secs_f64(n as f64 / rate as f64));
                    if into.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    port
}

/// The inferences of the last `stats:` line in a daemon's log (0 before the first).
fn logged_inferences(log: &Path) -> u64 {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let line = text.lines().rev().find(|l| l.contains("] stats: ")).unwrap_or("");
    line.split(", ").find_map(|f| f.strip_suffix(" inferences")).and_then(|n| n.parse().ok()).unwrap_or(0)
}

#[test]
fn slow_broker_link_delays_but_never_blocks_or_grows_the_daemon() {
    if !have("mosquitto") || !have("mosquitto_sub") {
        return;
    }
    // 200 products with a long description each, the top 100 of a category per ranking: each
    // message is over 100 KB, so a queue that kept every message would grow by megabytes a
    // second while the link is slow.
    let setup = setup_without_cache(2, 200);
    let csv = setup.root.join("catalog.csv");
    let text = std::fs::read_to_string(&csv).unwrap();
    let long: String = (0..1200).map(|i| (b'a' + (i % 26) as u8) as char).collect();
    let rows: Vec<String> = text
        .lines()
        .enumerate()
        .map(|(i, l)| if i == 0 { format!("{l},description") } else { format!("{l},{long}") })
        .collect();
    std::fs::write(&csv, rows.join("\n") + "\n").unwrap();
    let port = free_port();
    let _broker = Mosquitto::start(&setup.root, port);
    // 16 KB chunks, each held 200 ms plus 16 KB at 64 KB/s: about 36 KB/s each way, a fraction
    // of what the daemon publishes (a ranking per frame).
    let (delay, rate, chunk) = (Duration::from_millis(200), 65536, 16384);
    let link = chunk as f64 / (delay.as_secs_f64() + chunk as f64 / rate as f64);
    let relay = slow_relay(port, delay, rate, chunk);
    let config = write_config(&setup, &format!("[mqtt]\nbroker = \"mqtt://127.0.0.1:{relay}\""), "top = 100");
    let text = std::fs::read_to_string(&config).unwrap().replace("rate = 10.0", "rate = 20.0");
    std::fs::write(&config, text).unwrap();
    let log = setup.root.join("lookd.log");
    let daemon = run_logged(&config, "info,rumqttd=off,tracing=off", &log);
    // Memory is read from /proc, and the rate from the daemon's stats in its log: what goes
    // over the slow link arrives late.
    let rss = || lookd::pipeline::proc_status_kb(&daemon.0.id().to_string(), "VmRSS");
    let sub = Sub::start(port, "lookd/t");
    let rec = sub.expect("recommendations/shoes", 3 * WAIT, |_| true);
    assert_eq!(ids(&rec).len(), 100);
    let message_bytes = serde_json::to_vec(&rec).unwrap().len();
    // Warm-up, and time for every buffer on the way (the client's queue, the kernel's socket
    // buffers) to fill: after that a publisher that blocked would rank at the link's pace.
    let end = Instant::now() + 3 * WAIT;
    while logged_inferences(&log) < 20 {
        assert!(Instant::now() < end, "fewer than 20 inferences in {:?}", 3 * WAIT);
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(10));
    let (n0, t0) = (logged_inferences(&log), Instant::now());
    // RSS once a second for 20 s. A leak behind the link grows for as long as the link is slow;
    // a one-off step (say, an allocator arena touched late) does not. Two single samples could not
    // tell them apart (one CI run: +15 MB between two samples 15 s apart). So the second 10 s must
    // not rise above the first's peak.
    let samples: Vec<u64> = (0..20)
        .map(|_| {
            std::thread::sleep(Duration::from_secs(1));
            rss()
        })
        .collect();
    let rate = (logged_inferences(&log) - n0) as f64 / t0.elapsed().as_secs_f64();
    assert!(samples.iter().all(|&kb| kb > 0), "no VmRSS for the daemon in /proc");
    let (early, late) = samples.split_at(10);
    let first = *early.iter().max().unwrap();
    let last = *late.iter().max().unwrap();
    // A blocking publisher would rank at most one message per `message_bytes / link` seconds;
    // a queue of every unsent message would add this much over the second 10 s.
    let blocking_rate = link / message_bytes as f64;
    let queue_kb = (rate * 10.0 * message_bytes as f64 / 1024.0) as u64;
    let allowed_kb = first / 20 + 2048;
    eprintln!(
        "slow link of {:.0} KB/s: {rate:.1} inferences/s (a blocking publisher: {blocking_rate:.2}/s); messages of \
         {message_bytes} B, a per-message queue would add {queue_kb} KiB in 10 s; RSS peak {first} KiB in the \
         first 10 s, {last} KiB in the next 10 s (samples {samples:?})",
        link / 1000.0
    );
    // rumqttc gives up on a flush that takes over 5 s (one ranking at this link's pace takes about
    // 4 s): lookd then reconnects, and what rumqttc held is dropped. Counted, for the record.
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    let flush_timeouts = log_text.lines().filter(|l| l.contains("Flush timeout")).count();
    eprintln!("slow link: {flush_timeouts} reconnects after a flush timeout");
    assert!(
        rate >= 1.0 && rate >= 5.0 * blocking_rate,
        "the loop ranked {rate:.2} frames/s behind the slow link"
    );
    assert!(
        queue_kb > 2 * allowed_kb,
        "the test cannot tell a queue from noise: {queue_kb} vs {allowed_kb} KiB"
    );
    assert!(
        last <= first + allowed_kb,
        "RSS grew behind a slow broker: peak {first} -> {last} KiB; samples {samples:?}"
    );
}

#[test]
fn failing_camera_is_reported_and_recovers() {
    if !have("mosquitto_sub") {
        return;
    }
    let setup = setup(1);
    let scenes = setup.root.join("scenes");
    let parked = setup.root.join("parked");
    std::fs::rename(&scenes, &parked).unwrap(); // the "camera" is unplugged at start
    let port = free_port();
    let config = write_config(
        &setup,
        &format!("[mqtt]\nbroker = \"embedded\"\n[broker]\nlisten = \"127.0.0.1:{port}\""),
        "",
    );
    let _daemon = Daemon::start(&config);
    wait_port(port);
    let sub = Sub::start(port, "lookd/t");
    let stats = sub.expect("stats", WAIT, |v| v["camera"].as_str().is_some_and(|c| c.starts_with("error")));
    assert!(stats["camera_errors"].as_u64().unwrap() > 0);
    std::fs::rename(&parked, &scenes).unwrap(); // plugged back in
    sub.expect("recommendations/shoes", WAIT, |_| true);
    sub.expect("stats", WAIT, |v| v["camera"].as_str().is_some_and(|c| c.starts_with("ok")));
}

#[test]
fn docs_examples_parse_as_the_published_types() {
    use lookd::publish::payload::{
        decode_command, decode_fleet, CatalogState, CategoryState, Command, CommandError, Recommendations,
        Stats,
    };
    let doc = std::fs::read_to_string(crate::repo().join("docs/mqtt.md")).unwrap();
    let blocks: Vec<&str> = doc.split("```json").skip(1).map(|b| b.split("```").next().unwrap()).collect();
    assert_eq!(blocks.len(), 10);
    let plain: Recommendations = serde_json::from_str(blocks[0]).expect("recommendations example");
    assert!(plain.items.iter().all(|i| i.distance.is_none() && i.global.is_none() && i.local.is_none()));
    let exact: Recommendations = serde_json::from_str(blocks[1]).expect("exact-scores example");
    assert!(exact.items.iter().all(|i| i.distance.is_some() && i.global.is_some() && i.local.is_some()));
    serde_json::from_str::<CategoryState>(blocks[2]).expect("category/state example");
    serde_json::from_str::<CatalogState>(blocks[3]).expect("catalog/state example");
    let unavailable = decode_command("catalog/unavailable", blocks[4].as_bytes(), 4096);
    assert!(matches!(unavailable, Ok(Command::Unavailable(ref ids)) if ids.len() == 2), "{unavailable:?}");
    let filter = decode_command("filter/set", blocks[5].as_bytes(), 4096);
    assert!(matches!(filter, Ok(Command::SetFilter(ref f)) if f["department"].len() == 2), "{filter:?}");
    assert!(matches!(decode_fleet(blocks[6].as_bytes()), Ok(Command::Fleet(_))), "fleet example");
    let with_model = decode_fleet(blocks[7].as_bytes());
    assert!(matches!(with_model, Ok(Command::Fleet(ref f)) if f.model.is_some()), "{with_model:?}");
    serde_json::from_str::<CommandError>(blocks[8]).expect("error example");
    serde_json::from_str::<Stats>(blocks[9]).expect("stats example");
}

/// Frames in the soak run: 3,000 by default (CI), `LOOKD_SOAK_FRAMES=20000` for the full one.
fn soak_frames() -> u64 {
    std::env::var("LOOKD_SOAK_FRAMES").ok().and_then(|v| v.parse().ok()).unwrap_or(3000)
}

#[test]
fn soak_replay_keeps_memory_flat_and_accounts_for_every_frame() {
    if !have("mosquitto_sub") {
        return;
    }
    let frames = soak_frames();
    let setup = setup(1);
    let port = free_port();
    let broker = format!("[mqtt]\nbroker = \"embedded\"\n[broker]\nlisten = \"127.0.0.1:{port}\"");
    // Synthesized 640x480 frames as fast as they come, a new scene every 10 frames.
    let camera = "[camera]\nsource = \"synthetic\"\nwidth = 640\nheight = 480\nrate = 5000.0\n";
    let config = write_config(&setup, &broker, "");
    let text = std::fs::read_to_string(&config).unwrap();
    let start = text.find("[camera]").unwrap();
    let end = text.find("[pipeline]").unwrap();
    std::fs::write(&config, format!("{}{camera}{}", &text[..start], &text[end..])).unwrap();
    let mut child = crate::lookd_command()
        .args(["run", "--config", s(&config), "--max-frames", &frames.to_string()])
        .env("RUST_LOG", "warn")
        .spawn()
        .unwrap();
    wait_port(port);
    let sub = Sub::start(port, "lookd/t");
    // RSS per stats message (every second), with the frame count it was taken at.
    let mut samples: Vec<(u64, u64)> = Vec::new();
    let mut last = serde_json::Value::Null;
    let limit = Duration::from_secs(60 + frames / 50);
    let end = Instant::now() + limit;
    while last["frames_in"].as_u64() != Some(frames) {
        assert!(Instant::now() < end, "soak did not finish in {limit:?}: {last}");
        last = sub.expect("stats", limit, |_| true);
        samples.push((last["frames_in"].as_u64().unwrap(), last["rss_kb"].as_u64().unwrap()));
    }
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
    // A periodic message can catch the last frame in flight; the daemon's final stats, sent as
    // it stops, are exact: drain what is left and take the last one.
    while let Ok((topic, payload)) = sub.lines.recv_timeout(Duration::from_secs(3)) {
        if topic.ends_with("/stats") {
            last = serde_json::from_str(&payload).unwrap();
        }
    }
    let n = |k: &str| last[k].as_u64().unwrap();
    let accounted = n("frames_dropped") + n("frames_skipped") + n("frames_bad") + n("inferences");
    assert_eq!(accounted, frames, "every frame dropped, skipped, bad or embedded: {last}");
    assert!(n("inferences") > 0 && n("frames_bad") == 0, "{last}");
    // Drift: the end against the first sample after a tenth of the run (warm-up). Enough samples
    // must lie between the two for a drift to be seen at all (one stats message a second; CI's
    // 3,000 frames gave 8 here, Intel Xeon, 2 cores): fewer means the run must be longer.
    let after_warm_up = samples.iter().filter(|(f, _)| *f >= frames / 10).count();
    assert!(
        after_warm_up >= 4,
        "only {after_warm_up} RSS samples after the warm-up: too short a run to see a drift"
    );
    let warm = samples.iter().find(|(f, _)| *f >= frames / 10).copied().unwrap_or(samples[0]);
    let end_rss = samples.last().unwrap().1;
    let drift = (end_rss as f64 - warm.1 as f64) / warm.1 as f64;
    eprintln!(
        "soak: {frames} frames, rss {} KiB after warm-up, {end_rss} KiB at the end, drift {:.2}%",
        warm.1,
        drift * 100.0
    );
    for (f, rss) in &samples {
        eprintln!("soak: frames {f:>6} rss {rss} KiB");
    }
    assert!(drift <= 0.05, "RSS grew {:.1}% from {} to {end_rss} KiB", drift * 100.0, warm.1);
}

/// A CA and a server certificate for 127.0.0.1, made here with openssl (no key is committed).
pub(crate) fn make_certs(dir: &Path) {
    let run = |args: &[&str]| {
        let o = Command::new("openssl").args(args).current_dir(dir).output().unwrap();
        assert!(o.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&o.stderr));
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=lookd test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    ]);
    std::fs::write(dir.join("san.ext"), "subjectAltName = IP:127.0.0.1\n").unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "san.ext",
        "-out",
        "server.pem",
    ]);
}

#[test]
fn tls_with_password_and_acl_works_and_plaintext_is_never_used() {
    if !have("mosquitto") || !have("openssl") || !have("mosquitto_passwd") {
        return;
    }
    let setup = setup(1);
    let root = &setup.root;
    make_certs(root);
    let secret = "s3cret-Ünïcode pass";
    let st = Command::new("mosquitto_passwd")
        .args(["-c", "-b", s(&root.join("passwd")), "lookd", secret])
        .status();
    assert!(st.unwrap().success());
    let st =
        Command::new("mosquitto_passwd").args(["-b", s(&root.join("passwd")), "admin", "admin-pw"]).status();
    assert!(st.unwrap().success());
    // The ACL: lookd may use its own prefixes only; admin reads everything.
    std::fs::write(
        root.join("acl"),
        "user lookd\ntopic readwrite lookd/t/#\ntopic readwrite lookd/plain/#\n\nuser admin\ntopic read #\n",
    )
    .unwrap();
    std::fs::write(root.join("mqtt-password"), format!("{secret}\n")).unwrap();
    let (tls_port, plain_port) = (free_port(), free_port());
    let conf = root.join("tls.conf");
    std::fs::write(
        &conf,
        format!(
            "{user}per_listener_settings false\nallow_anonymous false\npassword_file {passwd}\nacl_file {acl}\npersistence false\n\
             listener {tls_port} 127.0.0.1\ncafile {ca}\ncertfile {cert}\nkeyfile {key}\n\
             listener {plain_port} 127.0.0.1\n",
            // As root, mosquitto would switch to its own user and lose the test's private files.
            user = if crate::running_as_root() { "user root\n" } else { "" },
            passwd = s(&root.join("passwd")),
            acl = s(&root.join("acl")),
            ca = s(&root.join("ca.pem")),
            cert = s(&root.join("server.pem")),
            key = s(&root.join("server.key")),
        ),
    )
    .unwrap();
    let mut broker = Command::new("mosquitto");
    broker.args(["-c", s(&conf)]).stdout(Stdio::null()).stderr(Stdio::null());
    let _broker = KillOnDrop(broker.spawn().unwrap());
    wait_port(tls_port);
    let mqtt = format!(
        "[mqtt]\nbroker = \"mqtts://127.0.0.1:{tls_port}\"\nca-file = {ca:?}\nusername = \"lookd\"\npassword-file = {pw:?}",
        ca = root.join("ca.pem"),
        pw = root.join("mqtt-password"),
    );
    let config = write_config(&setup, &mqtt, "");
    let log_path = root.join("lookd-tls.log");
    let daemon = run_logged(&config, "debug,rumqttd=off,tracing=off", &log_path);
    // A kiosk on the TLS listener, with the password, sees the recommendations.
    let mut sub = Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &tls_port.to_string(), "--cafile", s(&root.join("ca.pem"))])
        .args(["-u", "lookd", "-P", secret, "-t", "lookd/t/recommendations/shoes", "-C", "1", "-W", "20"])
        .output()
        .unwrap();
    assert!(sub.status.success(), "no recommendation over TLS: {}", String::from_utf8_lossy(&sub.stderr));
    let rec: serde_json::Value = serde_json::from_slice(&sub.stdout).unwrap();
    assert_eq!(ids(&rec), recommend_ids(&setup, "0.jpg", "shoes"));
    // The same client without the password is refused: the broker really checks.
    sub = Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &tls_port.to_string(), "--cafile", s(&root.join("ca.pem"))])
        .args(["-t", "lookd/#", "-C", "1", "-W", "3"])
        .output()
        .unwrap();
    assert!(!sub.status.success());
    // Everything lookd published sits under its prefix: admin, reading '#', sees nothing else.
    let all = Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &tls_port.to_string(), "--cafile", s(&root.join("ca.pem"))])
        .args(["-u", "admin", "-P", "admin-pw", "-t", "#", "-v", "-W", "4"])
        .output()
        .unwrap();
    let topics: Vec<String> = String::from_utf8_lossy(&all.stdout)
        .lines()
        .map(|l| l.split(' ').next().unwrap_or("").to_string())
        .filter(|t| !t.starts_with("$SYS"))
        .collect();
    assert!(topics.iter().any(|t| t == "lookd/t/recommendations/shoes"), "{topics:?}");
    assert!(topics.iter().all(|t| t.starts_with("lookd/t/")), "outside the prefix: {topics:?}");
    let log = stop_and_read_log(daemon, &log_path);
    assert!(!log.contains("s3cret"), "the password reached the log");
    assert!(log.contains(&format!("connected to 127.0.0.1:{tls_port}")), "{log}");

    // TLS configured but the port speaks plaintext: lookd must not fall back, so it never
    // connects and publishes nothing there.
    // Its own prefix: both listeners are one broker, which still holds the first daemon's state.
    let mqtt = mqtt.replace(&tls_port.to_string(), &plain_port.to_string()) + "\nprefix = \"lookd/plain\"";
    let config = write_config(&setup, &mqtt, "");
    let log_path = root.join("lookd-plain.log");
    let daemon = run_logged(&config, "info,rumqttd=off,tracing=off", &log_path);
    let seen = Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &plain_port.to_string(), "-u", "lookd", "-P", secret])
        .args(["-t", "lookd/plain/#", "-C", "1", "-W", "6"])
        .output()
        .unwrap();
    assert!(seen.stdout.is_empty(), "published in plaintext: {}", String::from_utf8_lossy(&seen.stdout));
    // Refusing is not dying: the daemon still runs, it did try the port, and it says why.
    let mut daemon = daemon;
    assert!(daemon.0.try_wait().unwrap().is_none(), "the daemon died instead of refusing plaintext");
    let log = stop_and_read_log(daemon, &log_path);
    assert!(!log.contains("mqtt: connected"), "{log}");
    let said = format!("mqtt: 127.0.0.1:{plain_port}: TLS");
    assert!(log.contains(&said) && log.contains("never falls back"), "no {said:?} and why:\n{log}");
}

/// `lookd run` logging to a file: a pipe nobody reads would fill up and block the daemon.
fn run_logged(config: &Path, rust_log: &str, log: &Path) -> KillOnDrop {
    let child = crate::lookd_command()
        .args(["run", "--config", s(config)])
        .env("RUST_LOG", rust_log)
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    KillOnDrop(child)
}

/// SIGTERM, wait, and the whole log.
fn stop_and_read_log(mut daemon: KillOnDrop, log: &Path) -> String {
    let _ = Command::new("kill").args(["-TERM", &daemon.0.id().to_string()]).status();
    let _ = daemon.0.wait();
    std::fs::read_to_string(log).unwrap()
}

/// `lookd watch --count N` stops after N rankings, not N messages: a first start's catalog
/// progress (or the retained states a new subscriber gets first) would otherwise use it up.
#[test]
fn watch_counts_rankings_not_messages() {
    if !have("mosquitto") {
        return;
    }
    let setup = setup(2);
    let port = free_port();
    let _broker = Mosquitto::start(&setup.root, port);
    let config = write_config(&setup, &format!("[mqtt]\nbroker = \"mqtt://127.0.0.1:{port}\""), "");
    let _daemon = Daemon::start(&config);
    let o = Command::new("timeout")
        .arg("30")
        .arg(env!("CARGO_BIN_EXE_lookd"))
        .args(["watch", "--config", s(&config), "--count", "3"])
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "watch did not stop after 3 rankings: {out}");
    let rankings = out.lines().filter(|l| l.starts_with("lookd/t/recommendations/")).count();
    assert_eq!(rankings, 3, "{out}");
    assert!(out.lines().count() > 3, "the other messages are printed too: {out}");
}
