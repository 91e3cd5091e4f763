//! `lookd run` as systemd starts it: the notify protocol seen from a listener on NOTIFY_SOCKET
//! (READY, STATUS with the cache build's progress, EXTEND_TIMEOUT_USEC, WATCHDOG at the interval
//! derived from WATCHDOG_USEC, STOPPING), and the MQTT password read from systemd's
//! credentials directory. The tiny or the committed model and synthesized photos: no shared data.

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
fn first_start_extends_the_start_timeout_with_progress_then_ready_watchdog_and_stopping() {
    let dir = tempfile::tempdir().unwrap();
    // The committed model on 150 photos: a cache build of a few seconds, several progress steps.
    let products = 150;
    let port = free_port();
    let mqtt = format!("[mqtt]\nbroker = \"embedded\"\n[broker]\nlisten = \"127.0.0.1:{port}\"");
    let config = config(dir.path(), &default_model(), products, &mqtt);
    let socket = dir.path().join("notify");
    let rx = listen(&socket);
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
    let started = until(&rx, "READY=1", Duration::from_secs(120));
    let texts: Vec<&str> = started.iter().map(|(_, t)| t.as_str()).collect();
    // Before READY: the start timeout extended, and the build's progress, rising to the end.
    assert!(texts.contains(&"EXTEND_TIMEOUT_USEC=60000000"), "{texts:?}");
    let progress: Vec<usize> = texts
        .iter()
        .filter_map(|t| t.strip_prefix("STATUS=building the product cache: "))
        .map(|p| p.split('/').next().unwrap().parse().unwrap())
        .collect();
    assert!(progress.len() >= 3, "too few progress messages: {texts:?}");
    assert!(progress.windows(2).all(|w| w[0] <= w[1]) && progress.last() == Some(&products), "{progress:?}");
    assert!(dir.path().join("catalog.cache").exists(), "READY before the cache was written");
    // After READY: the watchdog at half of WATCHDOG_USEC, from the running loop.
    let mut pings = Vec::new();
    let end = Instant::now() + Duration::from_secs(6);
    while let Ok((at, text)) = rx.recv_timeout(end.saturating_duration_since(Instant::now())) {
        if text == "WATCHDOG=1" {
            pings.push(at);
        }
    }
    let gaps: Vec<f64> = pings.windows(2).map(|w| (w[1] - w[0]).as_secs_f64()).collect();
    assert!(gaps.len() >= 3, "{gaps:?}");
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
