//! lookd's integration tests: one binary, one module per area. Helpers live here.
//!
//! Tests that need the shared photos look for them in `LOOKD_DATA` (default ../shared/data), and
//! tests that need a program (mosquitto, openssl, ...) look for it on the PATH. Where a piece is
//! missing such a test says so on stderr and checks nothing; under CI, or with
//! `LOOKD_REQUIRE_DATA=1`, it fails instead (`required`), so no skip passes for a pass there.

mod cache;
mod cli;
mod daemon;
mod deploy;
mod faults;
mod fleet;
mod kiosk;
mod metrics;
mod model;
mod privacy;
mod report;
mod startup;

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn tiny_model() -> PathBuf {
    repo().join("tests/data/tiny")
}

pub fn default_model() -> PathBuf {
    repo().join("models/default")
}

/// The shipped model's float copy (the same heads; models/ship.sh makes both).
pub fn f32_model() -> PathBuf {
    repo().join("models/default-f32")
}

/// The shipped model's int8 copy, run on lookd's integer kernels (models/ship.sh keeps it beside
/// models/default whichever precision the card's rule ships).
pub fn int8_model() -> PathBuf {
    repo().join("models/default-int8")
}

/// Whether a missing real part (the shared photos, a program) must fail the test rather than
/// skip it: under CI, and wherever `LOOKD_REQUIRE_DATA=1`.
pub fn required() -> bool {
    std::env::var_os("CI").is_some() || std::env::var_os("LOOKD_REQUIRE_DATA").is_some_and(|v| v == "1")
}

/// Says that a test checked nothing, and why: on stderr (which cargo shows only for failing
/// tests) and, when `LOOKD_SKIPS` names a file, as a line there, which `tests/run` prints after
/// the run where the person running it looks.
pub fn skipped(why: &str) {
    eprintln!("{why}: test skipped");
    if let Some(path) = std::env::var_os("LOOKD_SKIPS") {
        use std::io::Write;
        let test = std::thread::current().name().unwrap_or("?").to_string();
        if let Ok(mut f) = std::fs::OpenOptions::new().append(true).create(true).open(path) {
            let _ = writeln!(f, "{test}: {why}");
        }
    }
}

/// The shared photo folder, or `None` (after saying so) when this machine lacks it; a panic
/// where it is `required`.
pub fn shared_data() -> Option<PathBuf> {
    let dir =
        std::env::var_os("LOOKD_DATA").map(PathBuf::from).unwrap_or_else(|| repo().join("../shared/data"));
    if dir.join("catalog/catalog.csv").exists() && dir.join("ccp/fashion.json").exists() {
        Some(dir)
    } else {
        assert!(
            !required(),
            "shared data not found at {}: required under CI and LOOKD_REQUIRE_DATA=1",
            dir.display()
        );
        skipped(&format!("shared data not found at {}", dir.display()));
        None
    }
}

/// A command that runs the lookd binary under test. Cross-built test suites run under qemu
/// (cross/check): `LOOKD_TEST_RUNNER` names the emulator, which then also runs the binary.
pub fn lookd_command() -> Command {
    match std::env::var_os("LOOKD_TEST_RUNNER") {
        Some(runner) if !runner.is_empty() => {
            let mut c = Command::new(runner);
            c.arg(env!("CARGO_BIN_EXE_lookd"));
            c
        }
        _ => Command::new(env!("CARGO_BIN_EXE_lookd")),
    }
}

pub fn lookd<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Output {
    lookd_command().args(args).env("RUST_LOG", "warn").output().expect("run lookd")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// Writes `n` synthesized product photos (distinct colour patterns) and a catalog CSV for them,
/// spread over two categories; returns the CSV's path.
pub fn synth_catalog(dir: &Path, n: usize) -> PathBuf {
    std::fs::create_dir_all(dir.join("images")).unwrap();
    let mut csv = String::from("id,category,image,title,price,currency\n");
    for i in 0..n {
        let img = image::RgbImage::from_fn(40, 48, |x, y| {
            image::Rgb([(x * 5 + i as u32 * 37) as u8, (y * 4 + i as u32 * 11) as u8, (i as u32 * 53) as u8])
        });
        img.save(dir.join(format!("images/p{i:03}.png"))).unwrap();
        let category =
            if i % 2 == 0 { "Apparel & Accessories|Shoes" } else { "Apparel & Accessories|Clothing|Pants" };
        csv.push_str(&format!(
            "p{i:03},{category},images/p{i:03}.png,Product {i},{}.{:02},EUR\n",
            10 + i,
            i % 100
        ));
    }
    let path = dir.join("catalog.csv");
    std::fs::write(&path, csv).unwrap();
    path
}

/// `synth_catalog(dir, n)` embedded with the tiny model by `lookd catalog build`; returns the
/// cache's path (`dir/c.cache`).
pub fn tiny_cache(dir: &Path, n: usize) -> PathBuf {
    let csv = synth_catalog(dir, n);
    let cache = dir.join("c.cache");
    let o =
        lookd(&["catalog", "build", "--catalog", s(&csv), "--model", s(&tiny_model()), "--out", s(&cache)]);
    assert!(o.status.success(), "{}", stderr(&o));
    cache
}

/// A catalog CSV of the first `per_category` rows of each category of the shared catalog,
/// with the images left where they are (pass `--images <data>/catalog`).
pub fn real_catalog(data: &Path, dir: &Path, per_category: usize) -> PathBuf {
    let text = std::fs::read_to_string(data.join("catalog/catalog.csv")).unwrap();
    let mut counts = std::collections::HashMap::new();
    let mut csv = String::new();
    for (i, line) in text.lines().enumerate() {
        let category = line.split(',').nth(1).unwrap_or("").to_string();
        let n = counts.entry(category).or_insert(0);
        if i == 0 || *n < per_category {
            csv.push_str(line);
            csv.push('\n');
            *n += 1;
        }
    }
    let path = dir.join("catalog.csv");
    std::fs::write(&path, csv).unwrap();
    path
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub fn running_as_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

/// Whether an external program is installed; where it is `required` a missing one fails the
/// test, elsewhere its tests are skipped (and say so).
pub fn have(program: &str) -> bool {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            !required(),
            "{program} is missing: .ci/run must install it (required under CI and LOOKD_REQUIRE_DATA=1)"
        );
        skipped(&format!("{program} not installed"));
    }
    found
}

/// Waits for a listener on 127.0.0.1:`port`: 60 s, since the embedded broker starts only once the
/// daemon has built its cache, which on a loaded machine took more than 10 s (and more than 30 s
/// for 12 catalog photos beside the soak test, on a 2-core AMD EPYC).
pub fn wait_port(port: u16) {
    wait_port_on("127.0.0.1", port)
}

/// The same for a listener on another loopback address (127.0.0.2 stands for a store network).
pub fn wait_port_on(host: &str, port: u16) {
    let end = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while std::net::TcpStream::connect((host, port)).is_err() {
        assert!(std::time::Instant::now() < end, "nothing listens on {host}:{port}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Kills a helper process (a daemon, a broker) when the test ends, passed or failed, so a
/// panicking test leaves nothing behind holding the test runner's pipes.
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A stand-in for systemd's end of NOTIFY_SOCKET, bound at `path`: every assignment sent to it
/// (a datagram may hold several, a line each, as systemd reads them), with when it came.
pub fn notify_listener(path: &Path) -> Receiver<(Instant, String)> {
    let socket = UnixDatagram::bind(path).unwrap();
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = socket.recv(&mut buf) {
            let at = Instant::now();
            for line in String::from_utf8_lossy(&buf[..n]).lines() {
                if tx.send((at, line.to_string())).is_err() {
                    return;
                }
            }
        }
    });
    rx
}

/// The first notify message that `pred` accepts within `limit` (those before it are dropped).
pub fn notify_until_match(
    rx: &Receiver<(Instant, String)>,
    pred: impl Fn(&str) -> bool,
    limit: Duration,
) -> String {
    let end = Instant::now() + limit;
    loop {
        let left = end.saturating_duration_since(Instant::now());
        let Ok((_, line)) = rx.recv_timeout(left) else { panic!("no such notify message in {limit:?}") };
        if pred(&line) {
            return line;
        }
    }
}

/// Notify messages until one equals `last` (included), within `limit`.
pub fn notify_until(rx: &Receiver<(Instant, String)>, last: &str, limit: Duration) -> Vec<(Instant, String)> {
    let end = Instant::now() + limit;
    let mut seen = Vec::new();
    loop {
        let left = end.saturating_duration_since(Instant::now());
        let Ok(m) = rx.recv_timeout(left) else { panic!("no {last} in {limit:?}; got {seen:?}") };
        let done = m.1 == last;
        seen.push(m);
        if done {
            return seen;
        }
    }
}
