//! The systemd unit and the default configuration as shipped.

use std::process::Command;

use crate::{have, lookd, repo, s, stderr};

#[test]
fn shipped_config_passes_its_own_check() {
    let o = lookd(&["config", "check", "--config", s(&repo().join("systemd/lookd.toml"))]);
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn unit_verifies_without_warnings_and_is_hardened() {
    if !have("systemd-analyze") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let unit = dir.path().join("lookd.service");
    let text = std::fs::read_to_string(repo().join("systemd/lookd.service")).unwrap();
    // The unit as installed runs /usr/bin/lookd; here the freshly built binary stands in.
    std::fs::write(&unit, text.replace("/usr/bin/lookd", env!("CARGO_BIN_EXE_lookd"))).unwrap();
    let verify = Command::new("systemd-analyze").args(["verify", s(&unit)]).output().unwrap();
    let said =
        format!("{}{}", String::from_utf8_lossy(&verify.stdout), String::from_utf8_lossy(&verify.stderr));
    assert!(verify.status.success() && said.trim().is_empty(), "systemd-analyze verify: {said}");
    let security =
        Command::new("systemd-analyze").args(["security", "--offline=true", s(&unit)]).output().unwrap();
    let out = String::from_utf8_lossy(&security.stdout);
    let line = out.lines().find(|l| l.contains("Overall exposure level")).expect("an exposure line");
    let score: f32 = line.split(':').nth(1).unwrap().split_whitespace().next().unwrap().parse().unwrap();
    eprintln!("systemd-analyze security: exposure {score}");
    assert!(score <= 2.0, "{line}");
}

#[test]
fn a_bad_config_exits_78_naming_the_key_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("lookd.toml");
    for (text, expected) in [
        ("[camera]\nfsp = 30\n", "line 2"),
        ("[camera]\nrotate = 45\n", "camera.rotate: must be 0, 90, 180 or 270"),
        ("device-id = [\n", "TOML parse error"),
    ] {
        std::fs::write(&config, text).unwrap();
        for command in ["check", "run"] {
            let args: &[&str] = if command == "check" {
                &["config", "check", "--config", s(&config)]
            } else {
                &["run", "--config", s(&config)]
            };
            let o = lookd(args);
            assert_eq!(o.status.code(), Some(78), "{command}: {}", stderr(&o));
            assert!(stderr(&o).contains(expected), "{command}: {}", stderr(&o));
        }
    }
}
