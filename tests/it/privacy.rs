//! What lookd lets out about the shopper in front of the mirror (docs/privacy.md): what it
//! publishes, what it writes, whom it talks to, and what it keeps. A real mosquitto, the tiny
//! model, a synthesized catalog and scenes, on 127.0.0.1 (and in a network namespace of its own).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::daemon::{setup, write_config, Daemon, Mosquitto, Sub};
use crate::fleet::publish;
use crate::{free_port, have, s, tiny_model, KillOnDrop};

const WAIT: Duration = Duration::from_secs(20);

/// The scene's global embedding as lookd computes it from `scene` (a photo): decoded, stretched
/// to the model's input, run through the scene graph.
fn scene_global(model: &Path, scene: &Path) -> Vec<f32> {
    let folder = lookd::model::ModelFolder::open(model).unwrap();
    let img = lookd::preprocess::decode(&std::fs::read(scene).unwrap()).unwrap();
    let i = &folder.manifest.input;
    let mut pixels = Vec::new();
    lookd::preprocess::to_model_input(&img, None, i.width, i.height, &mut pixels).unwrap();
    let mut model = lookd::model::SceneModel::load(&folder).unwrap();
    model.embed(&pixels).unwrap().global
}

/// Every product's global embedding in the cache at `path`, by id.
fn product_globals(path: &Path) -> std::collections::HashMap<String, Vec<f32>> {
    let cache = lookd::cache::ProductCache::open(path, None).unwrap();
    let mut out = std::collections::HashMap::new();
    for block in cache.categories() {
        let globals = cache.globals(block);
        let d = globals.len() / block.len;
        for (i, row) in globals.chunks_exact(d).enumerate() {
            out.insert(cache.products()[block.start + i].entry.id.clone(), row.to_vec());
        }
    }
    out
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| f64::from(*x) * f64::from(*y)).sum();
    let norm = |v: &[f32]| v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    dot / (norm(a) * norm(b)).max(1e-12)
}

/// The least-squares attack: each published `global` distance is |s|² + |p|² − 2 s·p, one linear
/// equation in the unknowns (|s|², s) once the product's embedding p is known (from the cache, or
/// the public model run on the catalog's photos). `None` when there are too few equations.
fn solve_for_scene(equations: &[(Vec<f32>, f32)]) -> Option<Vec<f32>> {
    let d = equations.first()?.0.len();
    if equations.len() < d + 1 {
        return None;
    }
    // Rows [1, -2p] x = global - |p|², solved through the normal equations (d + 1 unknowns).
    let n = d + 1;
    let mut ata = vec![0f64; n * n];
    let mut atb = vec![0f64; n];
    for (p, g) in equations {
        let row: Vec<f64> = std::iter::once(1.0).chain(p.iter().map(|x| -2.0 * f64::from(*x))).collect();
        let rhs = f64::from(*g) - p.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>();
        for i in 0..n {
            atb[i] += row[i] * rhs;
            for j in 0..n {
                ata[i * n + j] += row[i] * row[j];
            }
        }
    }
    // Gaussian elimination with partial pivoting.
    for c in 0..n {
        let pivot = (c..n).max_by(|&a, &b| ata[a * n + c].abs().total_cmp(&ata[b * n + c].abs()))?;
        if ata[pivot * n + c].abs() < 1e-12 {
            return None;
        }
        for j in 0..n {
            ata.swap(c * n + j, pivot * n + j);
        }
        atb.swap(c, pivot);
        for r in c + 1..n {
            let f = ata[r * n + c] / ata[c * n + c];
            for j in c..n {
                ata[r * n + j] -= f * ata[c * n + j];
            }
            atb[r] -= f * atb[c];
        }
    }
    let mut x = vec![0f64; n];
    for r in (0..n).rev() {
        let tail: f64 = (r + 1..n).map(|j| ata[r * n + j] * x[j]).sum();
        x[r] = (atb[r] - tail) / ata[r * n + r];
    }
    Some(x[1..].iter().map(|v| *v as f32).collect())
}

/// What a listener on the topics gathers while the kiosk (or anyone with its login) steps every
/// category and pages through a stock list: each ranked item's published JSON, and whether it
/// came on the category's first page (the scene's true top K).
fn gather(port: u16, prefix: &str, categories: &[&str]) -> Vec<(bool, serde_json::Value)> {
    let sub = Sub::start(port, prefix);
    let mut items = Vec::new();
    let mut take_page = |v: serde_json::Value, first: bool| {
        items.extend(v["items"].as_array().unwrap().iter().map(|i| (first, i.clone())))
    };
    sub.expect("recommendations/shoes", WAIT, |_| true);
    for category in categories {
        publish(port, &format!("{prefix}/category/set"), category, false);
        let first = sub.expect(&format!("recommendations/{category}"), WAIT, |_| true);
        let mut seen: Vec<String> = crate::daemon::ids(&first);
        take_page(first, true);
        // Page through the category: mark what was shown unavailable, and the rest come up.
        for _ in 0..2 {
            publish(
                port,
                &format!("{prefix}/catalog/unavailable"),
                &serde_json::to_string(&seen).unwrap(),
                false,
            );
            let next = sub.expect(&format!("recommendations/{category}"), WAIT, |v| {
                crate::daemon::ids(v).iter().all(|id| !seen.contains(id))
            });
            seen.extend(crate::daemon::ids(&next));
            take_page(next, false);
        }
        publish(port, &format!("{prefix}/catalog/unavailable"), "[]", false);
    }
    items
}

/// The inversion of issue #32, as a test: with exact scores a listener solves for the shopper's
/// scene embedding; by default there is nothing to solve with.
#[test]
fn exact_scores_let_a_listener_solve_for_the_scene_and_the_default_does_not() {
    if !have("mosquitto") || !have("mosquitto_sub") || !have("mosquitto_pub") {
        return;
    }
    let setup = setup(1);
    let truth = scene_global(&tiny_model(), &setup.root.join("scenes/0.jpg"));
    let products = product_globals(&setup.root.join("catalog.cache"));
    // Cosines are taken about the catalog's mean: the tiny model's embeddings all point much the
    // same way, so that any average of products would look "close" to the scene uncentred.
    let centre: Vec<f32> = (0..truth.len())
        .map(|k| products.values().map(|p| p[k]).sum::<f32>() / products.len() as f32)
        .collect();
    let centred = |v: &[f32]| v.iter().zip(&centre).map(|(a, c)| a - c).collect::<Vec<f32>>();
    let similarity = |v: &[f32]| cosine(&centred(v), &centred(&truth));
    let mut results = Vec::new();
    for exact in [false, true] {
        let port = free_port();
        let _broker = Mosquitto::start(&setup.root, port);
        // The default is what a mirror runs: no [privacy] section at all.
        let privacy = if exact { "[privacy]\nexact-scores = true\n" } else { "" };
        let config = write_config(&setup, &format!("[mqtt]\nbroker = \"mqtt://127.0.0.1:{port}\""), privacy);
        // `write_config` puts `extra` inside [pipeline]: the section header starts a new table.
        let _daemon = Daemon::start(&config);
        let pages = gather(port, "lookd/t", &["shoes", "pants"]);
        let items: Vec<serde_json::Value> = pages.iter().map(|(_, i)| i.clone()).collect();
        let with_scores: Vec<(Vec<f32>, f32)> = items
            .iter()
            .filter_map(|i| Some((products[i["id"].as_str()?].clone(), i["global"].as_f64()? as f32)))
            .collect();
        let solved = solve_for_scene(&with_scores);
        let lsq = solved.as_deref().map_or(0.0, similarity);
        // What ranks alone give away: the rank-weighted mean of each category's top K (reported).
        let mut mean = vec![0f32; truth.len()];
        let top: Vec<&serde_json::Value> = pages.iter().filter(|(first, _)| *first).map(|(_, i)| i).collect();
        for i in &top {
            let w = 1.0 / i["rank"].as_f64().unwrap() as f32;
            for (m, p) in mean.iter_mut().zip(&products[i["id"].as_str().unwrap()]) {
                *m += w * p;
            }
        }
        let total: f32 = top.iter().map(|i| 1.0 / i["rank"].as_f64().unwrap() as f32).sum();
        mean.iter_mut().for_each(|m| *m /= total);
        let ranks = similarity(&mean);
        eprintln!(
            "exact-scores = {exact}: {} items heard, {} with a distance; least squares: cosine {lsq:.4}; \
             rank-weighted mean of the top 10s: cosine {ranks:.3} (about the catalog's mean; dim {})",
            items.len(),
            with_scores.len(),
            truth.len()
        );
        results.push((exact, items, with_scores.len(), lsq));
    }
    let (_, default_items, default_scores, default_lsq) = &results[0];
    assert!(default_items.len() >= 20, "too little was ranked to try: {}", default_items.len());
    assert_eq!(*default_scores, 0, "a distance was published by default");
    for i in default_items {
        for key in ["distance", "global", "local"] {
            assert!(i.get(key).is_none(), "{key} published by default: {i}");
        }
    }
    assert!(*default_lsq < 0.5, "by default the scene was recovered at cosine {default_lsq}");
    let (_, _, exact_scores, exact_lsq) = &results[1];
    assert!(*exact_scores > truth.len(), "only {exact_scores} distances with exact scores on");
    assert!(*exact_lsq > 0.99, "exact scores should give the scene away: cosine {exact_lsq}");
}

/// A forgotten scene: the camera dies with a shopper's scene as the last one; after
/// `forget-after-s` the retained ranking is deleted and a command re-ranks nothing.
#[test]
fn a_forgotten_scene_leaves_nothing_to_re_rank() {
    if !have("mosquitto") || !have("mosquitto_sub") || !have("mosquitto_pub") {
        return;
    }
    let setup = setup(1);
    let port = free_port();
    let _broker = Mosquitto::start(&setup.root, port);
    let config = write_config(
        &setup,
        &format!("[mqtt]\nbroker = \"mqtt://127.0.0.1:{port}\""),
        "[privacy]\nforget-after-s = 2\n",
    );
    let log = setup.root.join("lookd.log");
    let daemon = Daemon::start_logged(&config, &log);
    let sub = Sub::start(port, "lookd/t");
    sub.expect("recommendations/shoes", WAIT, |v| v["items"].as_array().is_some_and(|a| !a.is_empty()));
    // The camera goes: no new scene will replace the shopper's.
    std::fs::rename(setup.root.join("scenes"), setup.root.join("gone")).unwrap();
    let gone = Instant::now();
    // The retained ranking is deleted: an empty message on its topic.
    // (mosquitto_sub -v shows an empty message as "(null)".)
    sub.expect("recommendations/shoes", Duration::from_secs(10), |v| v == "" || v == "(null)");
    let took = gone.elapsed();
    eprintln!("forgotten {took:?} after the camera went (forget-after-s = 2)");
    assert!(took <= Duration::from_secs(2 + 3), "forgotten only after {took:?}");
    // A category change, a stock list and a filter: the state changes, no ranking comes.
    sub.clear();
    publish(port, "lookd/t/category/set", "pants", false);
    sub.expect("category/state", WAIT, |v| v["slug"] == "pants");
    publish(port, "lookd/t/catalog/unavailable", "[\"p001\"]", false);
    publish(port, "lookd/t/category/set", "shoes", false);
    sub.expect("category/state", WAIT, |v| v["slug"] == "shoes");
    let end = Instant::now() + Duration::from_secs(3);
    while let Some((topic, v)) = sub.next(end.saturating_duration_since(Instant::now())) {
        assert!(!topic.contains("/recommendations/"), "a ranking after the scene was forgotten: {topic} {v}");
    }
    // Nothing retained for a kiosk that connects now.
    let retained = Command::new("mosquitto_sub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-t",
            "lookd/t/recommendations/#",
            "--retained-only",
        ])
        .args(["-v", "-W", "2"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&retained.stdout), "", "a ranking is still retained");
    drop(daemon);
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(text.contains("forgot the last scene"), "{text}");
}

/// A network namespace of the test's own, removed when it goes.
struct Netns(String);

impl Netns {
    fn new() -> Option<Netns> {
        let name = format!("lookd-privacy-{}", std::process::id());
        let ok = Command::new("ip").args(["netns", "add", &name]).status().is_ok_and(|s| s.success());
        let ns = Netns(name);
        (ok && ns.command("ip").args(["link", "set", "lo", "up"]).status().is_ok_and(|s| s.success()))
            .then_some(ns)
    }
    /// `program` run inside the namespace.
    fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.0, program]);
        c
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "delete", &self.0]).status();
    }
}

/// `payload` read as the type lookd publishes on `topic` (after its prefix), whose fields are
/// exactly those docs/mqtt.md shows (each type refuses unknown fields, and a test parses the
/// page's examples as these types); an error for a topic lookd does not document.
fn documented(topic: &str, payload: &str) -> Result<(), String> {
    use lookd::publish::payload::{CatalogState, CategoryState, CommandError, Recommendations, Stats};
    let e = |e: serde_json::Error| format!("{topic}: {e}");
    match topic {
        "status" if payload == "online" || payload == "offline" => Ok(()),
        "category/state" => serde_json::from_str::<CategoryState>(payload).map(drop).map_err(e),
        "catalog/state" => serde_json::from_str::<CatalogState>(payload).map(drop).map_err(e),
        "stats" => serde_json::from_str::<Stats>(payload).map(drop).map_err(e),
        "error" => serde_json::from_str::<CommandError>(payload).map(drop).map_err(e),
        t if t.starts_with("recommendations/") => {
            let r = serde_json::from_str::<Recommendations>(payload).map_err(e)?;
            match r.items.iter().find(|i| i.distance.or(i.global).or(i.local).is_some()) {
                Some(i) => Err(format!("{topic}: a distance published for {}", i.id)),
                None => Ok(()),
            }
        }
        _ => Err(format!("an undocumented topic {topic:?}")),
    }
}

/// The longest run of numbers in an array anywhere in `v`.
fn longest_numeric_array(v: &serde_json::Value) -> usize {
    match v {
        serde_json::Value::Array(a) => {
            let own = if a.iter().all(serde_json::Value::is_number) { a.len() } else { 0 };
            a.iter().map(longest_numeric_array).max().unwrap_or(0).max(own)
        }
        serde_json::Value::Object(o) => o.values().map(longest_numeric_array).max().unwrap_or(0),
        _ => 0,
    }
}

/// lookd in a network namespace of its own with its broker and its fleet's file server, under
/// strace, while a listener on `#` hears everything: the camera, the kiosk listener, every
/// command, a reload and a fleet catalog in use. Its only peers are the broker and the fleet
/// server; every file it opens for writing is its cache's (or one of the cache's companions), and
/// none holds the scene's pixels or embedding; every message is on a documented topic with
/// documented fields, no distance and no long array of numbers.
#[test]
fn lookd_talks_only_to_its_broker_and_fleet_writes_only_its_cache_and_publishes_only_the_screen() {
    if !crate::running_as_root() {
        assert!(!crate::required(), "the network namespace needs root (CI runs as root)");
        crate::skipped("not root: no network namespace");
        return;
    }
    for program in ["ip", "strace", "mosquitto", "mosquitto_sub", "mosquitto_pub", "python3"] {
        if !have(program) {
            return;
        }
    }
    let setup = setup(2);
    let root = setup.root.clone();
    let Some(ns) = Netns::new() else {
        assert!(!crate::required(), "ip netns add failed");
        crate::skipped("ip netns add failed");
        return;
    };
    // Fixed ports: nothing else lives in this namespace.
    let (broker, files, kiosk) = (1883u16, 8080u16, 8081u16);
    std::fs::write(
        root.join("ns-mosquitto.conf"),
        format!("allow_anonymous true\npersistence false\nlistener {broker} 127.0.0.1\n"),
    )
    .unwrap();
    let _mosquitto = KillOnDrop(
        ns.command("mosquitto")
            .args(["-c", s(&root.join("ns-mosquitto.conf"))])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // The fleet's catalog, served by a plain file server in the namespace.
    let v2 = crate::fleet::central_catalog(&setup, "v2", 2);
    let _server = KillOnDrop(
        ns.command("python3")
            .args(["-m", "http.server", &files.to_string(), "--bind", "127.0.0.1", "--directory"])
            .arg(v2.parent().unwrap())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let in_ns = |program: &str, args: &[&str]| ns.command(program).args(args).output().unwrap();
    let wait_in_ns = |port: u16| {
        let end = Instant::now() + Duration::from_secs(30);
        while !in_ns(
            "python3",
            &["-c", &format!("import socket; socket.create_connection(('127.0.0.1', {port}), 1)")],
        )
        .status
        .success()
        {
            assert!(Instant::now() < end, "nothing listens on {port} in the namespace");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    wait_in_ns(broker);
    wait_in_ns(files);
    let extra = format!(
        "[kiosk]\nlisten = \"127.0.0.1:{kiosk}\"\nwebsocket = \"ws://127.0.0.1:9\"\n[fleet]\ntopic = \"lookd/fleet/catalog\"\n"
    );
    let config = crate::fleet::mirror_config(&setup, "p", broker, "", &extra);
    let cache = root.join("p.cache");
    // Everything the listener hears, from before lookd starts.
    let mut hear = ns.command("mosquitto_sub");
    hear.args(["-h", "127.0.0.1", "-p", &broker.to_string(), "-t", "#", "-v"]);
    let hear = Sub::spawn(hear);
    let trace = root.join("strace.txt");
    let lookd_bin = env!("CARGO_BIN_EXE_lookd");
    let strace = ns
        .command("strace")
        .args(["-f", "-qq", "-s", "256", "-o", s(&trace)])
        .args([
            "-e",
            "trace=open,openat,creat,rename,renameat,renameat2,link,linkat,symlink,truncate,connect",
        ])
        .args([lookd_bin, "run", "--config", s(&config)])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(root.join("p.log")).unwrap())
        .spawn()
        .unwrap();
    let mut strace = KillOnDrop(strace);
    let pub_ns = |topic: &str, payload: &str, retain: bool| {
        let port = broker.to_string();
        let mut args = vec!["-h", "127.0.0.1", "-p", &port, "-t", topic, "-m", payload];
        if retain {
            args.push("-r");
        }
        assert!(in_ns("mosquitto_pub", &args).status.success());
    };
    let state = |what: &str, limit: Duration| {
        let end = Instant::now() + limit;
        loop {
            let o = in_ns(
                "mosquitto_sub",
                &[
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &broker.to_string(),
                    "-t",
                    "lookd/p/catalog/state",
                    "-C",
                    "1",
                    "-W",
                    "3",
                ],
            );
            let text = String::from_utf8_lossy(&o.stdout).to_string();
            if text.contains(what) {
                return text;
            }
            assert!(Instant::now() < end, "catalog/state never said {what}: {text}");
        }
    };
    wait_in_ns(kiosk);
    state("\"ready\"", Duration::from_secs(60));
    // The kiosk's page, a product and its photo, over HTTP in the namespace.
    let get = |path: &str| {
        in_ns(
            "python3",
            &[
                "-c",
                &format!(
                    "import urllib.request; urllib.request.urlopen('http://127.0.0.1:{kiosk}{path}').read()"
                ),
            ],
        )
    };
    for path in ["/", "/kiosk.json", "/products/p000", "/images/p000"] {
        assert!(get(path).status.success(), "GET {path}");
    }
    // Every command, then a reload, then the fleet's catalog; each waited for.
    let mut live = ns.command("mosquitto_sub");
    live.args(["-h", "127.0.0.1", "-p", &broker.to_string(), "-t", "lookd/p/#", "-v"]);
    let live = Sub::spawn(live);
    live.expect("status", WAIT, |v| v == "online");
    pub_ns("lookd/p/category/set", "pants", false);
    live.expect("recommendations/pants", WAIT, |_| true);
    pub_ns("lookd/p/catalog/unavailable", "[\"p001\", \"p003\"]", false);
    live.expect("recommendations/pants", WAIT, |v| !crate::daemon::ids(v).contains(&"p001".to_string()));
    pub_ns("lookd/p/filter/set", "{}", false);
    pub_ns("lookd/p/category/set", "nothing-like-this", false);
    live.expect("error", WAIT, |v| v["topic"] == "category/set");
    pub_ns("lookd/p/category/set", "shoes", false);
    live.expect("category/state", WAIT, |v| v["slug"] == "shoes");
    pub_ns("lookd/p/catalog/reload", "", false);
    live.expect("catalog/state", Duration::from_secs(60), |v| v["state"] == "building");
    live.expect("catalog/state", Duration::from_secs(60), |v| v["state"] == "ready");
    let url = format!("http://127.0.0.1:{files}/v2.cache");
    pub_ns("lookd/fleet/catalog", &crate::fleet::announce(&v2, &url, "v2"), true);
    state("\"v2\"", Duration::from_secs(60));
    std::thread::sleep(Duration::from_secs(2));
    // SIGTERM to lookd itself (strace's child), then strace ends with it.
    let children =
        std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", strace.0.id())).unwrap_or_default();
    let ip_child = children.split_whitespace().next().map(str::to_string);
    // `ip netns exec` runs strace in its own process (exec): strace's pid is the child's.
    let pid = ip_child.unwrap_or_else(|| strace.0.id().to_string());
    let lookd_pid = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .ok()
        .and_then(|c| c.split_whitespace().next().map(str::to_string))
        .unwrap_or(pid);
    let _ = Command::new("kill").args(["-TERM", &lookd_pid]).status();
    let end = Instant::now() + Duration::from_secs(10);
    while strace.0.try_wait().unwrap().is_none() && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(100));
    }
    // Everything the listener heard, read as it came (each message a line: topic, payload).
    let mut heard = Vec::new();
    while let Some((topic, v)) = hear.next(Duration::from_secs(1)) {
        let payload = match &v {
            serde_json::Value::String(text) => text.clone(),
            other => other.to_string(),
        };
        heard.push(format!("{topic} {payload}"));
    }
    let heard = heard.join("\n");
    // 2. The peers: every connect() to an address is to the broker or the fleet server.
    let trace_text = std::fs::read_to_string(&trace).unwrap();
    let mut peers = std::collections::BTreeSet::new();
    for line in trace_text.lines().filter(|l| l.contains("connect(")) {
        if line.contains("sa_family=AF_INET") {
            let port = line.split("htons(").nth(1).and_then(|r| r.split(')').next()).unwrap_or("?");
            let addr = line.split("inet_addr(\"").nth(1).and_then(|r| r.split('"').next()).unwrap_or("?");
            peers.insert(format!("{addr}:{port}"));
        } else if line.contains("sa_family=AF_INET6") || line.contains("sa_family=AF_UNIX") {
            peers.insert(line.split("connect(").nth(1).unwrap_or(line).to_string());
        }
    }
    eprintln!("lookd's peers: {peers:?}");
    let allowed_peers = [format!("127.0.0.1:{broker}"), format!("127.0.0.1:{files}")];
    for p in &peers {
        assert!(allowed_peers.contains(p), "lookd connected to {p}; only {allowed_peers:?} are its peers");
    }
    assert!(peers.contains(&allowed_peers[0]) && peers.contains(&allowed_peers[1]), "{peers:?}");

    // 1. The topics: documented ones only, with documented fields; no distance, no long array.
    let dim = lookd::model::ModelFolder::open(&tiny_model()).unwrap().manifest.dim;
    let mut topics = std::collections::BTreeSet::new();
    for line in heard.lines() {
        let (topic, payload) = line.split_once(' ').unwrap_or((line, ""));
        if topic.starts_with("lookd/fleet/") {
            continue; // the chain's announcement, not lookd's
        }
        let suffix = topic.strip_prefix("lookd/p/").unwrap_or_else(|| panic!("outside the prefix: {line}"));
        if ["category/set", "catalog/unavailable", "filter/set", "catalog/reload"].contains(&suffix) {
            continue; // the commands the test sent
        }
        topics.insert(suffix.to_string());
        if payload.is_empty() || payload == "(null)" {
            assert!(suffix.starts_with("recommendations/"), "an empty message on {suffix}");
            continue; // a forgotten ranking, deleted
        }
        documented(suffix, payload).unwrap_or_else(|e| panic!("{e}: {line}"));
        if suffix == "status" {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(payload).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(longest_numeric_array(&v) < dim, "{suffix}: an array of {dim} or more numbers: {line}");
        if let Some(ts) = v.get("ts") {
            assert!(
                ts.as_u64().is_some_and(|t| t < 10_000_000_000),
                "{suffix}: ts finer than seconds: {line}"
            );
        }
    }
    for needed in [
        "status",
        "category/state",
        "catalog/state",
        "stats",
        "error",
        "recommendations/shoes",
        "recommendations/pants",
    ] {
        assert!(
            topics.contains(needed),
            "nothing heard on {needed}: {topics:?}; lookd's log:\n{}",
            std::fs::read_to_string(root.join("p.log")).unwrap_or_default()
        );
    }

    // 3. The files: every path opened for writing, created or renamed to is the cache's.
    let cache_name = cache.file_name().unwrap().to_str().unwrap().to_string();
    let allowed_file = |path: &str| {
        let p = Path::new(path);
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
        // The cache, and its companions: `.<cache>.tmp-<pid>`, `.<cache>.partial`, `.<cache>.fetch`,
        // `.<cache>.version` (and that one's own temp file, `..<cache>.version.tmp-<pid>`).
        p.parent() == cache.parent() && name.trim_start_matches('.').starts_with(&cache_name)
            || path == "/dev/null"
    };
    let mut written = std::collections::BTreeSet::new();
    for line in trace_text.lines() {
        let quoted: Vec<&str> = line.split('"').skip(1).step_by(2).collect();
        let writes = (line.contains("openat(") || line.contains("open("))
            && (line.contains("O_WRONLY") || line.contains("O_RDWR") || line.contains("O_CREAT"));
        let named =
            ["creat(", "rename(", "renameat(", "renameat2(", "link(", "linkat(", "symlink(", "truncate("]
                .iter()
                .any(|c| line.contains(c));
        if writes || named {
            for q in quoted.iter().filter(|q| q.starts_with('/')) {
                written.insert(q.to_string());
            }
        }
    }
    eprintln!("written: {written:?}");
    for path in &written {
        assert!(allowed_file(path), "lookd wrote {path}, not its cache");
    }
    // And none of what stays holds the scene: its photo's bytes, its pixels, its embedding.
    let scene_photo = std::fs::read(root.join("scenes/0.jpg")).unwrap();
    let pixels = lookd::preprocess::decode(&scene_photo).unwrap().into_raw();
    let embedding: Vec<u8> = scene_global(&tiny_model(), &root.join("scenes/0.jpg"))
        .iter()
        .take(4)
        .flat_map(|x| x.to_le_bytes())
        .collect();
    let needles: [(&str, &[u8]); 3] = [
        ("the photo", &scene_photo[scene_photo.len() / 2..scene_photo.len() / 2 + 64]),
        ("its pixels", &pixels[pixels.len() / 2..pixels.len() / 2 + 64]),
        ("its embedding", &embedding),
    ];
    for path in written.iter().filter(|p| Path::new(p).is_file()) {
        let bytes = std::fs::read(path).unwrap();
        for (what, needle) in &needles {
            assert!(!bytes.windows(needle.len()).any(|w| w == *needle), "{path} holds the scene's {what}");
        }
    }
}
