//! From a scene embedding to the published list: ranks one category of the cache and attaches
//! each product's catalog fields. Pure (the cache is already in memory); shared by the
//! `recommend` command and the daemon.

use crate::cache::{CategoryBlock, ProductCache};
use crate::catalog::Fields;
use crate::embedding::{AttentionMode, SceneEmbedding};
use crate::model::ModelFolder;
use crate::rank::{self, Keys, Products};

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Recommendation {
    pub id: String,
    pub rank: usize,
    pub distance: f32,
    pub global: f32,
    pub local: f32,
    pub category: String,
    pub image: String,
    /// The catalog's extra columns (title, price, url, ...).
    #[serde(default, skip_serializing_if = "Fields::is_empty")]
    pub fields: Fields,
}

#[derive(Debug, thiserror::Error)]
pub enum RecommendError {
    #[error("the scene embedding has width {scene}, the cache {cache}")]
    Width { scene: usize, cache: usize },
    #[error("category {0:?} has no key in the model (category-key attention)")]
    NoCategoryKey(String),
    #[error("the stock mask has {mask} rows, the cache {cache}")]
    Mask { mask: usize, cache: usize },
}

/// The attention keys of one category block: each product's own (product-key models) or the
/// category's learned key (category-key models).
pub fn block_keys<'c>(
    cache: &'c ProductCache,
    folder: &'c ModelFolder,
    category: &CategoryBlock,
) -> Result<Keys<'c>, RecommendError> {
    Ok(match (cache.attention(), cache.keys(category)) {
        (AttentionMode::Product, Some(k)) => Keys::PerProduct(k),
        _ => Keys::Category(
            folder
                .category_key(&category.path)
                .ok_or_else(|| RecommendError::NoCategoryKey(category.path.clone()))?,
        ),
    })
}

/// Every product of one category block of the cache, scored against `scene` (in block order).
pub fn score_block(
    scene: &SceneEmbedding,
    cache: &ProductCache,
    folder: &ModelFolder,
    category: &CategoryBlock,
) -> Result<Vec<rank::Score>, RecommendError> {
    if scene.dim != cache.dim() {
        return Err(RecommendError::Width { scene: scene.dim, cache: cache.dim() });
    }
    let keys = block_keys(cache, folder, category)?;
    Ok(rank::score(scene, &Products { globals: cache.globals(category), keys }))
}

/// The `top` products of `category` closest to `scene`, best first. With `allowed` (one flag per
/// cache row, `stock::Stock::mask`), only rows flagged true are considered: a category still
/// returns its `top` best allowed products.
pub fn recommend(
    scene: &SceneEmbedding,
    cache: &ProductCache,
    folder: &ModelFolder,
    category: &CategoryBlock,
    top: usize,
    allowed: Option<&[bool]>,
) -> Result<Vec<Recommendation>, RecommendError> {
    let rows = &cache.products()[category.start..category.start + category.len];
    let mut scores = score_block(scene, cache, folder, category)?;
    if let Some(mask) = allowed {
        let mask = mask
            .get(category.start..category.start + category.len)
            .filter(|_| mask.len() == cache.len())
            .ok_or(RecommendError::Mask { mask: mask.len(), cache: cache.len() })?;
        scores.retain(|s| mask[s.index]);
    }
    let best = rank::top_k(scores, top, |i| rows[i].entry.id.as_str());
    Ok(best
        .iter()
        .enumerate()
        .map(|(n, s)| {
            let e = &rows[s.index].entry;
            Recommendation {
                id: e.id.clone(),
                rank: n + 1,
                distance: s.distance,
                global: s.global,
                local: s.local,
                category: e.category.clone(),
                image: e.image.clone(),
                fields: e.fields.clone(),
            }
        })
        .collect())
}
