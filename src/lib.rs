//! lookd: a smart-mirror stylist. It embeds the shopper's scene with a Complete-the-Look model,
//! ranks the store's products by hybrid distance, and (in the daemon) publishes the ranking.
//!
//! The library holds every stage; the `lookd` binary only parses arguments and dispatches.
//! See ARCHITECTURE.md for the map and the invariants each module keeps.

#[cfg(target_endian = "big")]
compile_error!("lookd's cache format is little-endian and is memory-mapped as is");

pub mod cache;
pub mod capture;
pub mod catalog;
pub mod config;
pub mod dataset;
pub mod embedding;
pub mod eval;
pub mod fetch;
pub mod kiosk;
pub mod leakage;
pub mod model;
pub mod pipeline;
pub mod preprocess;
pub mod publish;
pub mod rank;
pub mod recommend;
pub mod report;
pub mod rng;
pub mod stock;
pub mod systemd;
pub mod update;
