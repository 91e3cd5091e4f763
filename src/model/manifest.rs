//! The model folder's `manifest.toml`: parsed and checked here, with no knowledge of tract.
//!
//! The contract is written out in models/README.md; this is its one reader. It must not open
//! the graphs themselves: `model` does that and checks them against what is declared here.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::embedding::AttentionMode;

/// The only manifest format this build reads.
pub const FORMAT: u32 = 1;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Manifest {
    pub format: u32,
    pub name: String,
    pub backbone: String,
    pub trained: bool,
    pub precision: String,
    pub attention: AttentionMode,
    pub dim: usize,
    pub regions: usize,
    pub input: InputSpec,
    pub scene: SceneGraph,
    pub product: ProductGraph,
    /// Category path -> key file, only in the category-key attention mode.
    #[serde(default)]
    pub category_keys: Option<String>,
    /// A JSON array of `dim` floats: the mean over the training scenes of their global embedding
    /// plus their mean region embedding, for the ranking's hubness correction
    /// (`rank::correct_hubs`). Optional: without it lists are ranked by distance alone.
    #[serde(default)]
    pub mean_scene: Option<String>,
    /// The training scenes' embeddings (`scenes` module's format), which `lookd catalog build`
    /// ranks a catalog against to cap each product's exposure (`rank::exposure_offsets`).
    /// Optional: without it no product's exposure is capped.
    #[serde(default)]
    pub reference_scenes: Option<String>,
    /// Free-form facts about training (data, split, metrics); shown by `lookd model info`.
    #[serde(default)]
    pub training: BTreeMap<String, toml::Value>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct InputSpec {
    pub name: String,
    pub width: usize,
    pub height: usize,
    /// Only "rgb-0-255" (plain RGB as f32, normalisation folded into the graph) for now.
    pub pixels: String,
    /// Only "stretch" (resize to width x height ignoring aspect) for now.
    pub resize: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct SceneGraph {
    pub graph: String,
    pub sha256: String,
    pub global: String,
    pub regions: String,
    pub keys: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ProductGraph {
    pub graph: String,
    pub sha256: String,
    pub global: String,
    /// The product's attention key output; required in the product-key mode.
    #[serde(default)]
    pub key: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

impl Manifest {
    pub fn load(dir: &Path) -> Result<Manifest, ManifestError> {
        let path = dir.join("manifest.toml");
        let text = std::fs::read_to_string(&path)
            .map_err(|source| ManifestError::Read { path: path.clone(), source })?;
        Manifest::parse(&text).map_err(|message| match message {
            Problem::Syntax(message) => ManifestError::Parse { path: path.clone(), message },
            Problem::Contract(message) => ManifestError::Invalid { path, message },
        })
    }

    pub fn parse(text: &str) -> Result<Manifest, Problem> {
        let manifest: Manifest = toml::from_str(text).map_err(|e| Problem::Syntax(e.to_string()))?;
        manifest.validate().map_err(Problem::Contract)?;
        Ok(manifest)
    }

    fn validate(&self) -> Result<(), String> {
        if self.format != FORMAT {
            return Err(format!(
                "manifest format {} is not supported (this lookd reads {FORMAT})",
                self.format
            ));
        }
        if self.dim == 0 || self.regions == 0 || self.input.width == 0 || self.input.height == 0 {
            return Err("dim, regions and the input size must be positive".into());
        }
        if self.input.pixels != "rgb-0-255" {
            return Err(format!(
                "input.pixels = {:?} is not supported (only \"rgb-0-255\")",
                self.input.pixels
            ));
        }
        if self.input.resize != "stretch" {
            return Err(format!(
                "input.resize = {:?} is not supported (only \"stretch\")",
                self.input.resize
            ));
        }
        match (self.attention, &self.product.key, &self.category_keys) {
            (AttentionMode::Product, None, _) => Err("attention = \"product\" needs product.key".into()),
            (AttentionMode::Category, _, None) => Err("attention = \"category\" needs category-keys".into()),
            _ => Ok(()),
        }
    }

    /// A short identity for caches and payloads: name plus the first bytes of the product graph hash.
    pub fn model_id(&self) -> String {
        format!("{}@{}", self.name, &self.product.sha256[..self.product.sha256.len().min(12)])
    }
}

/// Why a manifest text was refused: its TOML, or the contract.
#[derive(Debug)]
pub enum Problem {
    Syntax(String),
    Contract(String),
}
