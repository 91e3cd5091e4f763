//! The engine: the model, and the cache made with it, each replaced whole when a new catalog (or
//! the fleet's new model with its catalog) comes; the stock and filter deciding what may be
//! recommended from it.

use image::RgbImage;

use crate::cache::ProductCache;
use crate::embedding::SceneEmbedding;
use crate::model::{ModelError, ModelFolder, SceneModel};
use crate::preprocess;
use crate::stock::{Counts, Stock};
use crate::update::{Identity, Updater};

/// The kiosk listener's product table, replaced with each new catalog, and where the catalog's
/// images are.
pub struct KioskProducts {
    pub table: crate::kiosk::SharedTable,
    pub images: std::path::PathBuf,
}

/// The model and the cache made with it, each replaced whole when a new one comes; what may be
/// recommended from it.
pub struct Engine {
    /// The model running, replaced with its catalog when the fleet brings a new one.
    pub folder: ModelFolder,
    pub scene: SceneModel,
    /// The sha256 of the fleet archive the model came from; `None`: the configured model.
    pub model_archive: Option<String>,
    pub cache: ProductCache,
    /// Which catalog `cache` is.
    pub identity: Identity,
    pub(super) stock: Stock,
    /// One flag per cache row: may it be recommended (`stock`).
    pub(super) allowed: Vec<bool>,
    pub(super) counts: Counts,
    /// Makes new catalogs beside the loop (none: the catalog never changes).
    pub updates: Option<Updater>,
    pub kiosk: Option<KioskProducts>,
    /// A first start's catalog, being built beside the loop (the cache is empty meanwhile): the
    /// loop says so on `catalog/state` from its first message.
    pub building: Option<crate::publish::payload::Progress>,
    /// Told each frame's stage times (`GET /metrics`' histograms), if anyone listens.
    pub observer: Option<std::sync::Arc<dyn super::StageObserver>>,
    /// The loop's counters, shared with whoever reads them while it runs (`GET /metrics`).
    pub counters: std::sync::Arc<super::Counters>,
    pub(super) pixels: Vec<f32>,
}

impl Engine {
    pub fn new(folder: ModelFolder, scene: SceneModel, cache: ProductCache) -> Engine {
        let identity = Identity { version: "local".into(), sha256: String::new(), built_ms: 0 };
        let mut engine = Engine {
            folder,
            scene,
            model_archive: None,
            cache,
            identity,
            stock: Stock::default(),
            allowed: Vec::new(),
            counts: Counts::default(),
            updates: None,
            kiosk: None,
            building: None,
            observer: None,
            counters: Default::default(),
            pixels: Vec::new(),
        };
        engine.restock();
        engine
    }

    /// Restricts what may be recommended to products passing `filter` (`[pipeline] filter`);
    /// refused, naming the problem, when no product could pass.
    pub fn set_filter(&mut self, filter: crate::stock::Filter) -> Result<(), String> {
        crate::stock::check_filter(&filter, self.cache.products())?;
        self.stock.filter = filter;
        self.restock();
        Ok(())
    }

    pub(super) fn restock(&mut self) {
        (self.allowed, self.counts) = self.stock.mask(self.cache.products());
    }

    pub(super) fn embed(&mut self, img: &RgbImage) -> Result<SceneEmbedding, ModelError> {
        let i = &self.folder.manifest.input;
        preprocess::to_model_input(img, None, i.width, i.height, &mut self.pixels)
            .map_err(|e| ModelError::Run(e.to_string()))?;
        self.scene.embed(&self.pixels)
    }

    /// Drops the last scene's model input: its buffer is zeroed, and the model is run once on
    /// that blank input, so that the buffers the model reuses between runs hold nothing of it.
    pub(super) fn forget(&mut self) {
        self.pixels.fill(0.0);
        if !self.pixels.is_empty() {
            if let Err(e) = self.scene.embed(&self.pixels) {
                log::warn!("forgetting the scene: the blank run failed: {e}");
            }
        }
    }
}
