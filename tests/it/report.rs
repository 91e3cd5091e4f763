//! `lookd report`: contact sheets and the HTML page, checked pixel by pixel against the
//! products the ranking listed.

use std::path::Path;

use lookd::report::{thumbnail, Layout};

use crate::{lookd, s, shared_data, stderr, tiny_model};

fn report_json(out: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap()
}

#[test]
fn one_scene_sheet_has_the_layouts_size_and_every_listed_product_in_its_slot() {
    let dir = tempfile::tempdir().unwrap();
    let cache = crate::tiny_cache(dir.path(), 12);
    let scene = dir.path().join("shopper.png");
    image::RgbImage::from_fn(120, 200, |x, y| image::Rgb([(x * 2) as u8, (y + 30) as u8, 90]))
        .save(&scene)
        .unwrap();
    let out = dir.path().join("report");
    let csv = dir.path().join("catalog.csv");
    let o = lookd(&[
        "report",
        s(&scene),
        "--catalog",
        s(&csv),
        "--cache",
        s(&cache),
        "--model",
        s(&tiny_model()),
        "--top",
        "3",
        "--out",
        s(&out),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let r = report_json(&out);
    assert_eq!(r.as_array().unwrap().len(), 1);
    let categories = r[0]["categories"].as_array().unwrap();
    assert_eq!(categories.len(), 2, "both categories of the cache");
    let sheet = image::open(out.join("sheets/shopper.png")).unwrap().to_rgb8();
    let layout = Layout { top: 3, ..Layout::default() };
    let sw = layout.scene_width(120, 200);
    assert_eq!(sheet.dimensions(), layout.size(sw, 2));
    let html = std::fs::read_to_string(out.join("index.html")).unwrap();
    let mut listed = 0;
    for (row, c) in categories.iter().enumerate() {
        assert_eq!(c["attention"].as_array().unwrap().len(), 4, "the tiny model has 4 regions");
        let items = c["items"].as_array().unwrap();
        assert_eq!(items.len(), 3);
        for (k, item) in items.iter().enumerate() {
            let id = item["id"].as_str().unwrap();
            let product = image::open(dir.path().join(item["image"].as_str().unwrap())).unwrap().to_rgb8();
            let want = thumbnail(&product, layout.thumb);
            let (x, y) = layout.slot(sw, row, k + 1);
            let got = image::imageops::crop_imm(&sheet, x, y, layout.thumb, layout.thumb).to_image();
            assert!(got == want, "{id} is not drawn at row {row}, place {}", k + 1);
            assert!(
                html.contains(id) && out.join(format!("thumbs/{id}.jpg")).exists(),
                "{id} missing from the page"
            );
            listed += 1;
        }
    }
    assert_eq!(listed, 6);
    assert!(!html.contains("http://") && !html.contains("https://"), "the page must open offline");
}

#[test]
fn a_missing_scene_is_skipped_and_no_scenes_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let cache = crate::tiny_cache(dir.path(), 4);
    let csv = dir.path().join("catalog.csv");
    let out = dir.path().join("report");
    let tiny = tiny_model();
    let args = ["--catalog", s(&csv), "--cache", s(&cache), "--model", s(&tiny), "--out", s(&out)];
    let good = dir.path().join("images/p000.png");
    let o = lookd(&[&["report", s(&good), "/nonexistent/scene.jpg"][..], &args[..]].concat());
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("/nonexistent/scene.jpg"), "{}", stderr(&o));
    assert_eq!(report_json(&out).as_array().unwrap().len(), 1);
    let o = lookd(&[&["report"][..], &args[..]].concat());
    assert_eq!(o.status.code(), Some(65), "{}", stderr(&o));
    assert!(stderr(&o).contains("no scenes"), "{}", stderr(&o));
}

#[test]
fn standard_report_covers_its_24_scenes_every_category_and_light_and_dark() {
    let Some(data) = shared_data() else { return };
    let ids: Vec<&str> = lookd::report::standard_scenes().collect();
    assert_eq!(ids.len(), 24);
    for tone in ["# dark", "# light"] {
        assert_eq!(lookd::report::STANDARD_SCENES.matches(tone).count(), 12, "12 {tone} outfits");
    }
    let mut categories = std::collections::BTreeSet::new();
    let set = lookd::dataset::Dataset::open(&data.join("ccp")).unwrap();
    for p in &set.pairs {
        if ids.contains(&p.scene.as_str()) {
            categories.insert(p.category.clone());
        }
    }
    let all: std::collections::BTreeSet<String> = set.pairs.iter().map(|p| p.category.clone()).collect();
    assert_eq!(categories, all, "the standard scenes cover every category");
    assert!(ids.iter().all(|id| lookd::dataset::Split::of_scene(id) != lookd::dataset::Split::Train));
    // The one command, with the tiny model and a small real catalog to keep it quick.
    let dir = tempfile::tempdir().unwrap();
    let csv = crate::real_catalog(&data, dir.path(), 3);
    let out = dir.path().join("report");
    let o = lookd(&[
        "report",
        "--standard",
        "--data",
        s(&data.join("ccp")),
        "--catalog",
        s(&csv),
        "--images",
        s(&data.join("catalog")),
        "--cache",
        s(&dir.path().join("c.cache")),
        "--model",
        s(&tiny_model()),
        "--out",
        s(&out),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let r = report_json(&out);
    let scenes: Vec<&str> = r.as_array().unwrap().iter().map(|x| x["scene"].as_str().unwrap()).collect();
    assert_eq!(scenes, ids);
    for id in ids {
        assert!(out.join(format!("sheets/{id}.png")).exists());
    }
}
