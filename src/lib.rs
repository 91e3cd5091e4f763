//! lookd: a smart-mirror stylist. It embeds the shopper's scene with a Complete-the-Look model,
//! ranks the store's products by hybrid distance, and (in the daemon) publishes the ranking.
//!
//! The library holds every stage; the `lookd` binary only parses arguments and dispatches.
//! See ARCHITECTURE.md for the map and the invariants each module keeps.

#[cfg(target_endian = "big")]
compile_error!("lookd's cache format is little-endian and is memory-mapped as is");

pub mod archive;
pub mod cache;
pub mod capture;
pub mod catalog;
pub mod config;
pub mod dataset;
pub mod embedding;
pub mod eval;
pub mod fetch;
pub mod frame;
pub mod kiosk;
pub mod leakage;
pub mod metrics;
pub mod model;
pub mod pipeline;
pub mod preprocess;
pub mod publish;
pub mod rank;
pub mod recommend;
pub mod report;
pub mod rng;
pub mod rotation;
pub mod slot;
pub mod stock;
pub mod systemd;
pub mod update;

/// The modules from the bottom up (ARCHITECTURE.md, "Layers"): each may use only those before it.
pub const LAYERS: &[&str] = &[
    "rng",
    "frame",
    "embedding",
    "slot",
    "systemd",
    "catalog",
    "dataset",
    "leakage",
    "preprocess",
    "rank",
    "rotation",
    "model",
    "cache",
    "stock",
    "config",
    "recommend",
    "publish",
    "archive",
    "fetch",
    "kiosk",
    "capture",
    "eval",
    "report",
    "update",
    "pipeline",
    "metrics",
];

#[cfg(test)]
mod layering {
    use std::collections::BTreeSet;
    use std::path::Path;

    /// The `crate::<module>` paths a source file uses, its tests left out.
    fn uses(text: &str) -> BTreeSet<String> {
        let code = text.split("#[cfg(test)]\nmod tests").next().unwrap_or(text);
        code.match_indices("crate::")
            .map(|(i, _)| code[i + 7..].chars().take_while(|c| c.is_ascii_lowercase() || *c == '_').collect())
            .collect()
    }

    fn files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap().map(Result::unwrap) {
            let p = e.path();
            if p.is_dir() {
                files(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }

    #[test]
    fn no_module_uses_one_above_it() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut all = Vec::new();
        files(&src, &mut all);
        let mut checked = BTreeSet::new();
        for path in all {
            let rel = path.strip_prefix(&src).unwrap().to_string_lossy().to_string();
            let module = rel.split(['/', '.']).next().unwrap().to_string();
            if ["lib", "main", "cli"].contains(&module.as_str()) {
                continue;
            }
            let at = super::LAYERS.iter().position(|m| *m == module);
            let at = at.unwrap_or_else(|| panic!("src/{rel}: module {module} is not in LAYERS"));
            for used in uses(&std::fs::read_to_string(&path).unwrap()) {
                if used == module {
                    continue;
                }
                let below = super::LAYERS.iter().position(|m| *m == used);
                let below = below.unwrap_or_else(|| panic!("src/{rel} uses crate::{used}, not in LAYERS"));
                assert!(below < at, "src/{rel} ({module}) uses crate::{used}, which is above it in LAYERS");
            }
            checked.insert(module);
        }
        assert_eq!(checked.len(), super::LAYERS.len(), "every layer has its module: {checked:?}");
    }
}
