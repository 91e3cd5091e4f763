//! The systemd unit and the default configuration as shipped.

use std::process::Command;

use std::path::Path;

use crate::{have, lookd, repo, running_as_root, s, stderr};

#[test]
fn shipped_config_passes_its_own_check() {
    // As shipped it points at the installed model and at /etc/lookd/catalog.csv, which the
    // integrator provides: on a machine without them the check says what is missing.
    let shipped = repo().join("systemd/lookd.toml");
    let o = lookd(&["config", "check", "--config", s(&shipped)]);
    if !Path::new("/usr/share/lookd/models/default").exists() {
        assert_eq!(o.status.code(), Some(78), "{}", stderr(&o));
        assert!(stderr(&o).contains("model: "), "{}", stderr(&o));
    }
    // Every other key passes as shipped, once the model and a catalog are there.
    let dir = tempfile::tempdir().unwrap();
    let csv = crate::synth_catalog(dir.path(), 2);
    let text = std::fs::read_to_string(&shipped)
        .unwrap()
        .replace("\"/usr/share/lookd/models/default\"", &format!("{:?}", repo().join("models/default")))
        .replace("\"/etc/lookd/catalog.csv\"", &format!("{csv:?}"));
    let config = dir.path().join("lookd.toml");
    std::fs::write(&config, text).unwrap();
    let o = lookd(&["config", "check", "--config", s(&config)]);
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

/// Purges the test's install however the test ends.
struct Purge;

impl Drop for Purge {
    fn drop(&mut self) {
        let _ = Command::new("dpkg").args(["--purge", "lookd"]).output();
    }
}

fn run_ok(program: &str, args: &[&str]) -> String {
    let o = Command::new(program).args(args).output().unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success(), "{program} {args:?}: {said}");
    said
}

#[test]
fn deb_installs_binary_unit_config_and_model_and_removes_them() {
    if !have("dpkg-deb") || std::env::var_os("LOOKD_TEST_RUNNER").is_some() {
        return;
    }
    // Installing changes the machine (a package, a system user, /etc/lookd): only where asked,
    // with LOOKD_TEST_INSTALL=1; CI asks (.ci/run), and there a skip is a failure.
    if std::env::var_os("LOOKD_TEST_INSTALL").is_none_or(|v| v != "1") {
        assert!(!crate::required(), "CI must run the install test: set LOOKD_TEST_INSTALL=1 (.ci/run does)");
        crate::skipped("it installs lookd on this machine; LOOKD_TEST_INSTALL=1 runs it");
        return;
    }
    let host = run_ok("dpkg", &["--print-architecture"]);
    let installed = Command::new("dpkg").args(["-s", "lookd"]).output().is_ok_and(|o| o.status.success());
    if !running_as_root() || host.trim() != "amd64" || installed || Path::new("/usr/bin/lookd").exists() {
        // Never touch a lookd this machine already has; installing needs root. Under CI each of
        // those is a failure, not a skip: the test would check nothing.
        assert!(
            !crate::required(),
            "CI must run the install test as root on amd64 with no lookd installed (root {}, {host}, installed {installed})",
            running_as_root()
        );
        crate::skipped("not root on amd64, or lookd already installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let o = Command::new("bash")
        .arg(repo().join("cross/deb"))
        .args(["amd64", env!("CARGO_BIN_EXE_lookd")])
        .env("LOOKD_DEB_COMPRESSION", "gzip")
        .env("LOOKD_DEB_OUT", dir.path())
        .output()
        .unwrap();
    assert!(o.status.success(), "cross/deb: {}", String::from_utf8_lossy(&o.stderr));
    let deb = String::from_utf8_lossy(&o.stdout).trim().lines().last().unwrap().to_string();
    let _purge = Purge;
    run_ok("dpkg", &["-i", &deb]);
    // The shipped model's graph, whichever precision models/ship.sh shipped.
    let shipped = lookd::model::ModelFolder::open(&crate::default_model()).unwrap();
    let graph = format!("/usr/share/lookd/models/default/{}", shipped.manifest.scene.graph);
    let (other, other_dir) = match shipped.manifest.precision.as_str() {
        "int8" => (crate::f32_model(), "default-f32"),
        _ => (crate::int8_model(), "default-int8"),
    };
    let other = lookd::model::ModelFolder::open(&other).unwrap();
    let other_manifest = format!("/usr/share/lookd/models/{other_dir}/manifest.toml");
    let other_graph = format!("/usr/share/lookd/models/{other_dir}/{}", other.manifest.scene.graph);
    let files = [
        "/usr/bin/lookd",
        "/lib/systemd/system/lookd.service",
        "/etc/lookd/lookd.toml",
        "/usr/share/lookd/models/default/manifest.toml",
        graph.as_str(),
        // The other precision beside it, for a board that wants it.
        other_manifest.as_str(),
        other_graph.as_str(),
    ];
    for f in files {
        assert!(Path::new(f).exists(), "{f} not installed");
    }
    assert!(Path::new("/etc/lookd/mqtt-password").exists(), "the unit's credential file");
    // The camera's group: the README promises `lookd` (group `video`), which is what opens
    // /dev/video* where the unit's SupplementaryGroups= does not apply (lookd run by hand).
    let groups = run_ok("id", &["-nG", "lookd"]);
    let has_video = Command::new("getent").args(["group", "video"]).output().unwrap().status.success();
    assert!(has_video, "this machine has no group video to test against");
    for g in ["lookd", "video"] {
        assert!(groups.split_whitespace().any(|have| have == g), "lookd is not in group {g}: {groups}");
    }
    // The README's steps: the integrator's catalog in /etc/lookd, then the check.
    std::fs::write("/etc/lookd/catalog.csv", "id,category,image\np1,Apparel & Accessories|Shoes,p1.jpg\n")
        .unwrap();
    run_ok("/usr/bin/lookd", &["config", "check", "--config", "/etc/lookd/lookd.toml"]);
    std::fs::remove_file("/etc/lookd/catalog.csv").unwrap();
    run_ok("/usr/bin/lookd", &["model", "info", "/usr/share/lookd/models/default"]);
    run_ok("/usr/bin/lookd", &["model", "info", &format!("/usr/share/lookd/models/{other_dir}")]);
    // Not the shipped model twice.
    let twin = if other_dir == "default-f32" { "default-int8" } else { "default-f32" };
    assert!(!Path::new(&format!("/usr/share/lookd/models/{twin}")).exists(), "{twin}: a copy of the default");
    if have("systemd-analyze") {
        let said = run_ok("systemd-analyze", &["verify", "/lib/systemd/system/lookd.service"]);
        assert!(said.trim().is_empty(), "{said}");
    }
    std::fs::create_dir_all("/var/lib/lookd").unwrap();
    std::fs::write("/var/lib/lookd/catalog.cache", b"state").unwrap();
    run_ok("dpkg", &["-r", "lookd"]);
    for f in &files[..2] {
        assert!(!Path::new(f).exists(), "{f} left after dpkg -r");
    }
    assert!(!Path::new(files[4]).exists(), "the model is removed with the package");
    assert!(Path::new("/etc/lookd/lookd.toml").exists(), "dpkg -r keeps the edited configuration");
    // What the service wrote in its state directory (StateDirectory=lookd: the product cache),
    // as systemd would have made it; dpkg -r keeps it, --purge removes it.
    assert!(Path::new("/var/lib/lookd/catalog.cache").exists(), "dpkg -r keeps the state");
    run_ok("dpkg", &["--purge", "lookd"]);
    assert!(!Path::new("/etc/lookd").exists(), "purge removes /etc/lookd");
    assert!(!Path::new("/var/lib/lookd").exists(), "purge removes /var/lib/lookd");
    assert!(!Command::new("id").arg("lookd").output().unwrap().status.success(), "purge removes the user");
}
