//! `GET /metrics` scraped by a real Prometheus (Debian's `prometheus`), on 127.0.0.1: its targets
//! API says lookd is up, and its queries return lookd's frame counter and latency histogram with
//! the values lookd's own stats report around them.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::daemon::{setup, write_config, Daemon, Mosquitto, Sub};
use crate::{free_port, have, s, KillOnDrop};

const WAIT: Duration = Duration::from_secs(30);

/// A GET on 127.0.0.1:`port`, the body as JSON.
fn get_json(port: u16, path: &str) -> serde_json::Value {
    use std::io::{Read, Write};
    let Ok(mut c) = std::net::TcpStream::connect(("127.0.0.1", port)) else { return serde_json::Value::Null };
    let _ = write!(c, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    let mut reply = Vec::new();
    let _ = c.read_to_end(&mut reply);
    let text = String::from_utf8_lossy(&reply);
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    serde_json::from_str(body).unwrap_or(serde_json::Value::Null)
}

/// The value of the instant query `q` (one series), if Prometheus has it.
fn query(port: u16, q: &str) -> Option<f64> {
    let encoded: String = q
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"_.".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    let path = format!("/api/v1/query?query={encoded}");
    let v = get_json(port, &path);
    v["data"]["result"][0]["value"][1].as_str()?.parse().ok()
}

#[test]
fn prometheus_scrapes_lookd_and_reads_its_counters_and_latency_histogram() {
    if !have("mosquitto") || !have("mosquitto_sub") || !have("prometheus") {
        return;
    }
    let setup = setup(2);
    let port = free_port();
    let _broker = Mosquitto::start(&setup.root, port);
    let web = free_port();
    let config = write_config(
        &setup,
        &format!("[mqtt]\nbroker = \"mqtt://127.0.0.1:{port}\""),
        &format!("[kiosk]\nlisten = \"127.0.0.1:{web}\"\nwebsocket = \"ws://127.0.0.1:9\"\n[metrics]\nenabled = true\n"),
    );
    let _daemon = Daemon::start(&config);
    crate::wait_port(web);
    let sub = Sub::start(port, "lookd/t");
    // Prometheus, scraping every second.
    let prom = free_port();
    let conf = setup.root.join("prometheus.yml");
    std::fs::write(
        &conf,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: lookd\n    \
             static_configs:\n      - targets: ['127.0.0.1:{web}']\n"
        ),
    )
    .unwrap();
    let _prometheus = KillOnDrop(
        Command::new("prometheus")
            .arg(format!("--config.file={}", s(&conf)))
            .arg(format!("--storage.tsdb.path={}", s(&setup.root.join("tsdb"))))
            .arg(format!("--web.listen-address=127.0.0.1:{prom}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(setup.root.join("prometheus.log")).unwrap())
            .spawn()
            .unwrap(),
    );
    // Its targets API: lookd up.
    let end = Instant::now() + WAIT;
    let target = loop {
        let v = get_json(prom, "/api/v1/targets");
        let t = v["data"]["activeTargets"][0].clone();
        if t["health"] == "up" {
            break t;
        }
        assert!(
            Instant::now() < end,
            "lookd never up in Prometheus's targets: {v}; {}",
            std::fs::read_to_string(setup.root.join("prometheus.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    eprintln!("target: {} {} {}", target["scrapeUrl"], target["health"], target["lastScrapeDuration"]);
    // lookd's stats before and after; Prometheus's samples in between.
    let before = sub.expect("stats", WAIT, |v| v["inferences"].as_u64().is_some_and(|n| n > 0));
    std::thread::sleep(Duration::from_millis(2500)); // a scrape after `before`
    let frames = query(prom, "lookd_frames_in_total").expect("lookd_frames_in_total");
    let count =
        query(prom, "lookd_stage_latency_seconds_count{stage=\"embed\"}").expect("the histogram's count");
    let inf = query(prom, "lookd_stage_latency_seconds_bucket{stage=\"embed\",le=\"+Inf\"}")
        .expect("its +Inf bucket");
    let inferences = query(prom, "lookd_inferences_total").expect("lookd_inferences_total");
    let median = query(prom, "histogram_quantile(0.5, lookd_stage_latency_seconds_bucket{stage=\"embed\"})");
    let model = get_json(prom, "/api/v1/query?query=lookd_model_info");
    sub.clear();
    let after = sub.expect("stats", WAIT, |_| true);
    let n = |v: &serde_json::Value, k: &str| v[k].as_u64().unwrap() as f64;
    eprintln!(
        "stats before: {} frames, {} inferences; Prometheus: {frames} frames, {inferences} inferences, embed \
         histogram count {count} (median {median:?} s); stats after: {} frames, {} inferences",
        n(&before, "frames_in"),
        n(&before, "inferences"),
        n(&after, "frames_in"),
        n(&after, "inferences"),
    );
    assert!((n(&before, "frames_in")..=n(&after, "frames_in")).contains(&frames), "frames {frames}");
    assert!(
        (n(&before, "inferences")..=n(&after, "inferences")).contains(&inferences),
        "inferences {inferences}"
    );
    // Each embedded frame is one observation per stage (nothing here re-ranks without a frame).
    assert!((n(&before, "inferences")..=n(&after, "inferences")).contains(&count), "histogram count {count}");
    assert_eq!(count, inf, "the +Inf bucket holds every observation");
    assert!(median.is_some_and(|m| m > 0.0 && m < 5.0), "median {median:?}");
    let labels = &model["data"]["result"][0]["metric"];
    assert_eq!(labels["name"], "tiny-untrained-heads@0ee9be0de9b7", "{model}");
    assert_eq!(labels["fingerprint"].as_str().map(str::len), Some(64), "{model}");
}
