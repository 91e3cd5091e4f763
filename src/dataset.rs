//! Reads a folder in Shop-the-Look layout: `fashion.json` (one JSON object per line: product,
//! scene, bbox, label), `fashion-cat.json` ({product: category path}), `scenes/<scene>.jpg` and
//! `products/<product>.jpg`. Pinterest's own data has this layout, and so does ../shared/data/ccp.
//!
//! It reads the two JSON files only; images are opened by whoever needs them. A malformed line
//! is reported and skipped.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// One (scene, product) pair: the product is worn in the scene inside `bbox`.
#[derive(Debug, Clone, PartialEq)]
pub struct Pair {
    pub scene: String,
    pub product: String,
    /// left, top, right, bottom, normalised to [0, 1] from the top left.
    pub bbox: [f32; 4],
    pub label: String,
    pub category: String,
}

/// Which scenes a pair belongs to: a split by scene (never by pair), from a hash of the scene id
/// so that Rust and the Python trainer agree without sharing state. The first 8 bytes of
/// sha256(scene id), big-endian, modulo 100: 0-69 train, 70-84 dev, 85-99 test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Split {
    All,
    Train,
    Dev,
    Test,
}

impl Split {
    pub fn of_scene(scene: &str) -> Split {
        use sha2::{Digest, Sha256};
        let digest = Sha256::digest(scene.as_bytes());
        let bucket = u64::from_be_bytes(digest[..8].try_into().unwrap_or_default()) % 100;
        match bucket {
            0..70 => Split::Train,
            70..85 => Split::Dev,
            _ => Split::Test,
        }
    }

    pub fn contains(self, scene: &str) -> bool {
        self == Split::All || Split::of_scene(scene) == self
    }
}

#[derive(Debug)]
pub struct Dataset {
    pub dir: PathBuf,
    pub pairs: Vec<Pair>,
    /// (line of fashion.json, reason) for each line skipped.
    pub problems: Vec<(usize, String)>,
}

#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    #[error("cannot read {path}: {message}")]
    Read { path: PathBuf, message: String },
}

#[derive(Deserialize)]
struct Line {
    product: String,
    scene: String,
    bbox: [f32; 4],
    #[serde(default)]
    label: String,
}

impl Dataset {
    pub fn open(dir: &Path) -> Result<Dataset, DatasetError> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read_to_string(&path).map_err(|e| DatasetError::Read { path, message: e.to_string() })
        };
        let categories: HashMap<String, String> = serde_json::from_str(&read("fashion-cat.json")?)
            .map_err(|e| DatasetError::Read { path: dir.join("fashion-cat.json"), message: e.to_string() })?;
        let (pairs, problems) = parse_pairs(&read("fashion.json")?, &categories);
        Ok(Dataset { dir: dir.to_path_buf(), pairs, problems })
    }

    /// Keeps the pairs of one split only, as if the folder held nothing else.
    pub fn restrict(mut self, split: Split) -> Dataset {
        self.pairs.retain(|p| split.contains(&p.scene));
        self
    }

    pub fn scene_path(&self, scene: &str) -> PathBuf {
        self.dir.join("scenes").join(format!("{scene}.jpg"))
    }

    pub fn product_path(&self, product: &str) -> PathBuf {
        self.dir.join("products").join(format!("{product}.jpg"))
    }
}

pub fn parse_pairs(text: &str, categories: &HashMap<String, String>) -> (Vec<Pair>, Vec<(usize, String)>) {
    let (mut pairs, mut problems) = (Vec::new(), Vec::new());
    for (i, raw) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let line: Line = match serde_json::from_str(raw) {
            Ok(l) => l,
            Err(e) => {
                problems.push((i + 1, e.to_string()));
                continue;
            }
        };
        let [l, t, r, b] = line.bbox;
        if !(0.0 <= l && l < r && r <= 1.0 && 0.0 <= t && t < b && b <= 1.0) {
            problems.push((i + 1, format!("bbox {:?} is not inside [0, 1]", line.bbox)));
            continue;
        }
        let Some(category) = categories.get(&line.product) else {
            problems.push((i + 1, format!("product {} has no category in fashion-cat.json", line.product)));
            continue;
        };
        pairs.push(Pair {
            scene: line.scene,
            product: line.product,
            bbox: line.bbox,
            label: line.label,
            category: category.clone(),
        });
    }
    (pairs, problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_is_by_scene_hash() {
        // Values the Python trainer (models/ctl.py) asserts too.
        // Buckets 20, 70, 89 (computed with Python's hashlib, as models/ctl.py does).
        let got = ["ccp-0002", "ccp-0005", "ccp-0006"].map(Split::of_scene);
        assert_eq!(got, [Split::Train, Split::Dev, Split::Test]);
        assert!(Split::All.contains("ccp-0002") && !Split::Dev.contains("ccp-0002"));
    }

    #[test]
    fn bad_lines_are_reported() {
        let cats: HashMap<String, String> = [("p1".to_string(), "Shoes".to_string())].into();
        let text = r#"{"product": "p1", "scene": "s1", "bbox": [0.1, 0.2, 0.3, 0.4], "label": "shoe"}
not json
{"product": "p2", "scene": "s1", "bbox": [0.1, 0.2, 0.3, 0.4]}
{"product": "p1", "scene": "s2", "bbox": [0.5, 0.2, 0.3, 0.4]}
"#;
        let (pairs, problems) = parse_pairs(text, &cats);
        assert_eq!(pairs.len(), 1);
        assert_eq!(problems.iter().map(|p| p.0).collect::<Vec<_>>(), [2, 3, 4]);
    }
}
