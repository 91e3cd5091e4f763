//! The embeddings that flow between the model, the cache and the ranking.
//!
//! Plain owned data, no I/O and no knowledge of tract: `model` produces these, `cache` stores
//! the product side, `rank` consumes both.

/// What the scene graph says about one scene: rows are `dim` floats each.
#[derive(Debug, Clone, PartialEq)]
pub struct SceneEmbedding {
    pub dim: usize,
    /// `[D]`: the whole scene.
    pub global: Vec<f32>,
    /// `[R, D]`: one embedding per region of the scene.
    pub regions: Vec<f32>,
    /// `[R, D]`: one attention key per region.
    pub keys: Vec<f32>,
}

impl SceneEmbedding {
    pub fn region_count(&self) -> usize {
        self.regions.len() / self.dim.max(1)
    }
}

/// What the product graph says about one product image.
#[derive(Debug, Clone, PartialEq)]
pub struct ProductEmbedding {
    /// `[D]`
    pub global: Vec<f32>,
    /// `[D]` in the product-key attention mode; empty in the category-key mode.
    pub key: Vec<f32>,
}

/// Where the product's attention key comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AttentionMode {
    /// The tutorial's: the attention head applied to the product image (one key per product).
    Product,
    /// The paper's: one learned key per category.
    Category,
}

impl AttentionMode {
    pub fn as_str(self) -> &'static str {
        match self {
            AttentionMode::Product => "product",
            AttentionMode::Category => "category",
        }
    }
}

/// A category-key model's learned attention key of each category, by the category's full path
/// (the model folder's `category-keys` file). Data: the ranking takes it as it takes the cache.
pub type CategoryKeys = std::collections::BTreeMap<String, Vec<f32>>;
