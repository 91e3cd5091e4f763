//! `lookd run` as systemd starts it: the notify protocol seen from a listener on NOTIFY_SOCKET
//! (READY at once, with STATUS saying the catalog is being built beside the loop; WATCHDOG at the
//! interval derived from WATCHDOG_USEC, throughout; STOPPING), and the MQTT password read from
//! systemd's credentials directory. The tiny or the committed model and synthesized photos: no shared data.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::{
    default_model, free_port, have, notify_listener as listen, notify_until as until, s, synth_catalog,
};
use crate::{tiny_model, wait_port, KillOnDrop};

/// A config for the synthetic camera and `model`, with `mqtt` as its broker sections.
fn config(dir: &Path, model: &Path, products: usize, mqtt: &str) -> PathBuf {
    let csv = synth_catalog(dir, products);
    let path = dir.join("lookd.toml");
    let text = format!(
        "device-id = \"t\"\nmodel = {model:?}\n[catalog]\ncsv = {csv:?}\ncache = {cache:?}\n\
         [camera]\nsource = \"synthetic\"\nwidth = 64\nheight = 48\nrate = 10.0\n\
         [pipeline]\ncategory = \"shoes\"\nhold-off-ms = 0\n{mqtt}\n",
        cache = dir.join("catalog.cache"),
    );
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn a_first_start_is_ready_at_once_and_builds_its_catalog_beside_the_loop_fed_watchdog_and_stopping() {
    if !have("mosquitto_sub") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // The committed model on 150 photos: a cache build of a few seconds, several progress steps.
    let products = 150;
    let port = free_port();
    let mqtt = format!("[mqtt]\nbroker = \"embedded\"\n[broker]\nlisten = \"127.0.0.1:{port}\"");
    let config = config(dir.path(), &default_model(), products, &mqtt);
    let socket = dir.path().join("notify");
    let rx = listen(&socket);
    let start = Instant::now();
    let mut daemon = KillOnDrop(
        crate::lookd_command()
            .args(["run", "--config", s(&config)])
            .env("NOTIFY_SOCKET", &socket)
            .env("WATCHDOG_USEC", "2000000")
            .env("RUST_LOG", "warn")
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // READY as soon as lookd serves, with STATUS saying that the catalog is being built: before
    // the cache exists, so systemd's start timeout never meets the build.
    let started = until(&rx, "READY=1", Duration::from_secs(30));
    let ready_after = start.elapsed();
    let status = started.iter().rev().find_map(|(_, t)| t.strip_prefix("STATUS=")).map(str::to_string);
    let catalog = dir.path().join("catalog.cache");
    assert!(!catalog.exists(), "READY came only once the cache was written");
    assert!(status.as_deref().is_some_and(|t| t.contains("catalog building")), "STATUS: {status:?}");
    // The build's progress on MQTT, rising, then ready; the watchdog fed from the loop meanwhile.
    wait_port(port);
    let sub = Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-t", "lookd/t/catalog/state", "-W", "120"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut sub = KillOnDrop(sub);
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(sub.0.stdout.take().unwrap()));
    let mut progress = Vec::new();
    loop {
        let line = lines.next().expect("catalog/state ended before ready").unwrap();
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        if v["state"] == "ready" && v["products"].as_u64() == Some(products as u64) {
            break;
        }
        if let Some(done) = v["progress"]["done"].as_u64() {
            progress.push(done);
        }
    }
    let built_after = start.elapsed();
    let mut pings = Vec::new();
    while let Ok((at, text)) = rx.try_recv() {
        if text == "WATCHDOG=1" {
            pings.push(at);
        }
    }
    eprintln!(
        "first start: READY after {ready_after:?}, catalog ready after {built_after:?}; progress {progress:?}; {} watchdog pings during the build",
        pings.len()
    );
    assert!(ready_after < Duration::from_secs(10), "READY after {ready_after:?}");
    assert!(progress.len() >= 3 && progress.windows(2).all(|w| w[0] <= w[1]), "{progress:?}");
    assert!(catalog.exists(), "the catalog was not written");
    let gaps: Vec<f64> = pings.windows(2).map(|w| (w[1] - w[0]).as_secs_f64()).collect();
    assert!(gaps.len() >= 2, "the watchdog was not fed during the build: {gaps:?}");
    assert!(
        gaps.iter().all(|g| (0.9..1.8).contains(g)),
        "WATCHDOG_USEC=2 s wants a ping every 1 s: {gaps:?}"
    );
    // SIGTERM: STOPPING, then a clean exit.
    let _ = Command::new("kill").args(["-TERM", &daemon.0.id().to_string()]).status();
    until(&rx, "STOPPING=1", Duration::from_secs(5));
    assert!(daemon.0.wait().unwrap().success());
}

#[test]
fn a_relative_password_file_is_read_from_the_credentials_directory() {
    if !have("mosquitto") || !have("mosquitto_sub") || !have("mosquitto_passwd") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let secret = "cr3dential pass";
    let st = Command::new("mosquitto_passwd")
        .args(["-c", "-b", s(&root.join("passwd")), "lookd", secret])
        .status();
    assert!(st.unwrap().success());
    let port = free_port();
    let conf = root.join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!(
            "{user}allow_anonymous false\npassword_file {passwd}\npersistence false\nlistener {port} 127.0.0.1\n",
            user = if crate::running_as_root() { "user root\n" } else { "" },
            passwd = s(&root.join("passwd")),
        ),
    )
    .unwrap();
    let _broker = KillOnDrop(
        Command::new("mosquitto")
            .args(["-c", s(&conf)])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_port(port);
    // What LoadCredential=mqtt-password:... leaves: a file in a directory systemd names.
    let creds = root.join("credentials");
    std::fs::create_dir(&creds).unwrap();
    std::fs::write(creds.join("mqtt-password"), format!("{secret}\n")).unwrap();
    let mqtt = format!(
        "[mqtt]\nbroker = \"mqtt://127.0.0.1:{port}\"\nusername = \"lookd\"\npassword-file = \"mqtt-password\""
    );
    let config = config(root, &tiny_model(), 6, &mqtt);
    // Started elsewhere than the credentials: the path is not merely relative to the cwd.
    let daemon = KillOnDrop(
        crate::lookd_command()
            .args(["run", "--config", s(&config)])
            .env("CREDENTIALS_DIRECTORY", &creds)
            .env("RUST_LOG", "warn")
            .current_dir(std::env::temp_dir())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let sub = Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-u", "lookd", "-P", secret])
        .args(["-t", "lookd/t/status", "-C", "1", "-W", "20"])
        .output()
        .unwrap();
    drop(daemon);
    assert_eq!(
        String::from_utf8_lossy(&sub.stdout).trim(),
        "online",
        "lookd did not log in with the credential"
    );
    // Without the directory a relative password file is a configuration error (78, no restart loop).
    let o = crate::lookd_command()
        .args(["run", "--config", s(&config)])
        .env_remove("CREDENTIALS_DIRECTORY")
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let err = crate::stderr(&o);
    assert_eq!(o.status.code(), Some(78), "{err}");
    assert!(err.contains("mqtt.password-file") && err.contains("CREDENTIALS_DIRECTORY"), "{err}");
}
