//! From a scene embedding to the published list: ranks one category of the cache and attaches
//! each product's catalog fields. Pure (the cache is already in memory); shared by the
//! `recommend` command and the daemon.

use crate::cache::{CategoryBlock, ProductCache};
use crate::catalog::Fields;
use crate::embedding::{AttentionMode, CategoryKeys, SceneEmbedding};
use crate::rank::{self, Keys, Products};
use crate::rotation::Rotation;

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
    #[error("the model's mean scene has width {mean}, the cache {cache}")]
    MeanScene { mean: usize, cache: usize },
}

/// The attention keys of one category block: each product's own (product-key models) or the
/// category's learned key (category-key models).
pub fn block_keys<'c>(
    cache: &'c ProductCache,
    category_keys: &'c CategoryKeys,
    category: &CategoryBlock,
) -> Result<Keys<'c>, RecommendError> {
    Ok(match (cache.attention(), cache.keys(category)) {
        (AttentionMode::Product, Some(k)) => Keys::PerProduct(k),
        _ => Keys::Category(
            category_keys
                .get(&category.path)
                .map(Vec::as_slice)
                .ok_or_else(|| RecommendError::NoCategoryKey(category.path.clone()))?,
        ),
    })
}

/// Every product of one category block of the cache, scored against `scene` (in block order).
pub fn score_block(
    scene: &SceneEmbedding,
    cache: &ProductCache,
    category_keys: &CategoryKeys,
    category: &CategoryBlock,
) -> Result<Vec<rank::Score>, RecommendError> {
    if scene.dim != cache.dim() {
        return Err(RecommendError::Width { scene: scene.dim, cache: cache.dim() });
    }
    let keys = block_keys(cache, category_keys, category)?;
    Ok(rank::score(scene, &Products { globals: cache.globals(category), keys }))
}

/// How a list is made from the distances (docs/variety.md).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ranking<'a> {
    /// Products per list.
    pub top: usize,
    /// Above 0: the best `rank::HEAD * top` are re-ranked for variety (`rank::diversify`).
    pub diversity: f32,
    /// The model's mean scene (`ModelFolder::mean_scene`): ranked by the hub-corrected distance
    /// (`rank::correct_hubs`); `None`: by the model's distance.
    pub mean_scene: Option<&'a [f32]>,
    /// Add the cache's exposure offsets (`ProductCache::offsets`, `rank::exposure_offsets`) to the
    /// ranking key, when the cache has them; they cap how often one product reaches the screen.
    pub exposure: bool,
}

impl Ranking<'_> {
    /// By distance alone: the first `top`, nothing re-ranked.
    pub fn plain(top: usize) -> Ranking<'static> {
        Ranking { top, diversity: 0.0, mean_scene: None, exposure: false }
    }
}

/// The `ranking.top` products of `category` that best complete `scene`, best first. With
/// `allowed` (one flag per cache row, `stock::Stock::mask`), only rows flagged true are
/// considered: a category still returns its `top` best allowed products. Each item's `distance`
/// is the model's hybrid distance, whatever the ranking corrected.
pub fn recommend(
    scene: &SceneEmbedding,
    cache: &ProductCache,
    category_keys: &CategoryKeys,
    category: &CategoryBlock,
    ranking: &Ranking,
    allowed: Option<&[bool]>,
) -> Result<Vec<Recommendation>, RecommendError> {
    let rows = &cache.products()[category.start..category.start + category.len];
    let head = ranked_head(scene, cache, category_keys, category, ranking, allowed)?;
    let best = rank::diversify(&head, ranking.top, ranking.diversity, cache.globals(category), cache.dim());
    Ok(best
        .iter()
        .enumerate()
        .map(|(n, s)| {
            let e = &rows[s.index].entry;
            Recommendation {
                id: e.id.clone(),
                rank: n + 1,
                distance: rank::plain_distance(s),
                global: s.global,
                local: s.local,
                category: e.category.clone(),
                image: e.image.clone(),
                fields: e.fields.clone(),
            }
        })
        .collect())
}

/// Whether a ranking is a new shopper (`Look::New`: the variety check, whose scenes are all
/// different photos) or may be the same one again (`Look::Guess`: the daemon, which embeds a
/// shopper again when they move; `Rotation::same_look`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Look {
    New,
    Guess,
}

/// `recommend`, then the share cap (`share_cap`). Without a rotation: `recommend`.
#[allow(clippy::too_many_arguments)]
pub fn recommend_shared(
    scene: &SceneEmbedding,
    cache: &ProductCache,
    category_keys: &CategoryKeys,
    category: &CategoryBlock,
    ranking: &Ranking,
    allowed: Option<&[bool]>,
    rotation: Option<&mut Rotation>,
    look: Look,
) -> Result<Vec<Recommendation>, RecommendError> {
    let unshared = recommend(scene, cache, category_keys, category, ranking, allowed)?;
    match rotation {
        Some(rotation) => {
            share_cap(unshared, scene, cache, category_keys, category, ranking, allowed, rotation, look)
        }
        None => Ok(unshared),
    }
}

/// The share cap (`rotation`) on `unshared`, the list `recommend` made with the same arguments:
/// products already shown to `max_share` of the last shoppers wait, and the list takes the best
/// of the others (in the same ranking, the stock mask kept). Where fewer than the list's length
/// are left, the best held ones fill it, in their order. The look's lists go into `rotation`.
#[allow(clippy::too_many_arguments)]
pub fn share_cap(
    unshared: Vec<Recommendation>,
    scene: &SceneEmbedding,
    cache: &ProductCache,
    category_keys: &CategoryKeys,
    category: &CategoryBlock,
    ranking: &Ranking,
    allowed: Option<&[bool]>,
    rotation: &mut Rotation,
    look: Look,
) -> Result<Vec<Recommendation>, RecommendError> {
    let ids: Vec<String> = unshared.iter().map(|r| r.id.clone()).collect();
    if look == Look::New || !rotation.same_look(&ids) {
        rotation.end_look();
    }
    let rows = &cache.products()[category.start..category.start + category.len];
    let held: Vec<usize> = (0..rows.len()).filter(|&j| rotation.held(&rows[j].entry.id)).collect();
    let shown = if held.is_empty() {
        unshared
    } else {
        // `recommend` has checked the mask's length.
        let mut mask = allowed.map_or_else(|| vec![true; cache.len()], <[bool]>::to_vec);
        for j in held {
            mask[category.start + j] = false;
        }
        let mut shared = recommend(scene, cache, category_keys, category, ranking, Some(&mask))?;
        for r in unshared.iter() {
            if shared.len() >= ids.len() {
                break;
            }
            if !shared.iter().any(|s| s.id == r.id) {
                shared.push(r.clone());
            }
        }
        for (n, r) in shared.iter_mut().enumerate() {
            r.rank = n + 1;
        }
        shared
    };
    rotation.show(ids, shown.iter().map(|r| r.id.clone()).collect());
    Ok(shown)
}

/// The best `rank::HEAD * top` allowed products of `category`, best first, by the distance
/// `ranking` asks for (hub-corrected with a mean scene, plus the exposure offsets, in `distance`): what `recommend`'s
/// variety re-rank chooses from (and the variety check, `eval::variety`).
pub fn ranked_head(
    scene: &SceneEmbedding,
    cache: &ProductCache,
    category_keys: &CategoryKeys,
    category: &CategoryBlock,
    ranking: &Ranking,
    allowed: Option<&[bool]>,
) -> Result<Vec<rank::Score>, RecommendError> {
    let rows = &cache.products()[category.start..category.start + category.len];
    let mut scores = score_block(scene, cache, category_keys, category)?;
    if let Some(mask) = allowed {
        let mask = mask
            .get(category.start..category.start + category.len)
            .filter(|_| mask.len() == cache.len())
            .ok_or(RecommendError::Mask { mask: mask.len(), cache: cache.len() })?;
        scores.retain(|s| mask[s.index]);
    }
    if let Some(mean) = ranking.mean_scene {
        if mean.len() != cache.dim() {
            return Err(RecommendError::MeanScene { mean: mean.len(), cache: cache.dim() });
        }
        rank::correct_hubs(&mut scores, cache.globals(category), cache.dim(), mean);
    }
    if let Some(offsets) = cache.offsets(category).filter(|_| ranking.exposure) {
        rank::add_offsets(&mut scores, offsets);
    }
    let top = ranking.top;
    Ok(rank::top_k(scores, top.saturating_mul(rank::HEAD), |i| rows[i].entry.id.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::codec::{encode, Record};
    use crate::cache::StoredProduct;
    use crate::catalog::CatalogEntry;
    use crate::model::ModelFolder;

    const DIM: usize = 2;
    const REGIONS: usize = 4;

    /// Twelve shoes at rising distance from the scene below: p00 closest, p11 farthest.
    fn cache() -> ProductCache {
        let records = (0..12)
            .map(|i| {
                let angle = i as f32 * 0.1;
                let entry = CatalogEntry {
                    line: i as u64 + 2,
                    id: format!("p{i:02}"),
                    category: "Apparel & Accessories|Shoes".into(),
                    image: format!("p{i:02}.jpg"),
                    fields: Default::default(),
                };
                Record {
                    product: StoredProduct { entry, image_sha256: "ab".into() },
                    global: vec![angle.cos(), angle.sin()],
                    key: vec![1.0, 0.0],
                }
            })
            .collect();
        let bytes = encode(records, DIM, AttentionMode::Product, REGIONS, [7; 32], "tiny@test");
        ProductCache::from_bytes(&bytes, None).unwrap()
    }

    fn scene() -> SceneEmbedding {
        SceneEmbedding {
            dim: DIM,
            global: vec![1.0, 0.0],
            regions: [1.0, 0.0].repeat(REGIONS),
            keys: [1.0, 0.0].repeat(REGIONS),
        }
    }

    fn folder() -> ModelFolder {
        ModelFolder::open(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/tiny")).unwrap()
    }

    fn ids(recs: &[Recommendation]) -> Vec<&str> {
        recs.iter().map(|r| r.id.as_str()).collect()
    }

    #[test]
    fn top_k_is_taken_among_the_allowed_products_not_before_the_filter() {
        let (cache, folder) = (cache(), folder());
        let shoes = cache.categories()[0].clone();
        let all =
            recommend(&scene(), &cache, folder.category_keys(), &shoes, &Ranking::plain(5), None).unwrap();
        assert_eq!(ids(&all), ["p00", "p01", "p02", "p03", "p04"]);
        // The three best and p05 are out of stock: five are still shown, the next best in order.
        let mut allowed = vec![true; cache.len()];
        for i in [0, 1, 2, 5] {
            allowed[i] = false;
        }
        let got =
            recommend(&scene(), &cache, folder.category_keys(), &shoes, &Ranking::plain(5), Some(&allowed))
                .unwrap();
        assert_eq!(ids(&got), ["p03", "p04", "p06", "p07", "p08"]);
        assert_eq!(got.iter().map(|r| r.rank).collect::<Vec<_>>(), [1, 2, 3, 4, 5]);
        // Fewer allowed than asked: all of them, none of the others.
        let few: Vec<bool> = (0..cache.len()).map(|i| i == 9 || i == 4).collect();
        let got = recommend(&scene(), &cache, folder.category_keys(), &shoes, &Ranking::plain(5), Some(&few))
            .unwrap();
        assert_eq!(ids(&got), ["p04", "p09"]);
    }

    #[test]
    fn diversity_reorders_within_the_head_of_the_allowed_products() {
        let (cache, folder) = (cache(), folder());
        let shoes = cache.categories()[0].clone();
        let mut allowed = vec![true; cache.len()];
        allowed[1] = false;
        let plain =
            recommend(&scene(), &cache, folder.category_keys(), &shoes, &Ranking::plain(4), Some(&allowed))
                .unwrap();
        assert_eq!(ids(&plain), ["p00", "p02", "p03", "p04"]);
        let varied = recommend(
            &scene(),
            &cache,
            folder.category_keys(),
            &shoes,
            &Ranking { diversity: 0.9, ..Ranking::plain(4) },
            Some(&allowed),
        )
        .unwrap();
        // The best stays first; the others come from the best 2 x 4 allowed (p00..p08 less p01),
        // spread out along the arc, each once, ranks renumbered.
        assert_eq!(ids(&varied)[0], "p00");
        assert_ne!(ids(&varied), ids(&plain));
        let head = ["p00", "p02", "p03", "p04", "p05", "p06", "p07", "p08"];
        assert!(varied.iter().all(|r| head.contains(&r.id.as_str())), "{:?}", ids(&varied));
        let mut unique = ids(&varied);
        unique.dedup();
        assert_eq!(unique.len(), 4);
        assert_eq!(varied.iter().map(|r| r.rank).collect::<Vec<_>>(), [1, 2, 3, 4]);
        assert!(varied.iter().any(|r| r.id == "p08"), "the far end of the arc: {:?}", ids(&varied));
    }

    #[test]
    fn a_mean_scene_reorders_by_the_corrected_distance_and_publishes_the_models() {
        let (cache, folder) = (cache(), folder());
        let shoes = cache.categories()[0].clone();
        let plain =
            recommend(&scene(), &cache, folder.category_keys(), &shoes, &Ranking::plain(12), None).unwrap();
        // The scene lies along p00, so its distance to p_i is 2 - 2 cos(angle_i). A mean scene
        // along p00 three times as strong adds 3 cos(angle_i): the products nearest this scene
        // are nearer still to every scene, and the far end of the arc comes first.
        let mean = [3.0, 0.0];
        let hub = Ranking { mean_scene: Some(&mean), ..Ranking::plain(12) };
        let got = recommend(&scene(), &cache, folder.category_keys(), &shoes, &hub, None).unwrap();
        assert_ne!(ids(&got)[..3], ids(&plain)[..3], "{:?}", ids(&got));
        for r in &got {
            let same = plain.iter().find(|p| p.id == r.id).unwrap();
            assert_eq!(r.distance, same.distance, "{}: the published distance is the model's", r.id);
        }
        let wide = [1.0, 0.0, 0.0];
        let bad = Ranking { mean_scene: Some(&wide), ..Ranking::plain(3) };
        let err = recommend(&scene(), &cache, folder.category_keys(), &shoes, &bad, None).unwrap_err();
        assert!(matches!(err, RecommendError::MeanScene { mean: 3, cache: 2 }), "{err}");
    }

    #[test]
    fn the_share_cap_holds_back_what_recent_shoppers_saw_but_not_their_own_list() {
        let (cache, folder) = (cache(), folder());
        let shoes = cache.categories()[0].clone();
        let mut rotation = Rotation::new(0.5, 4).unwrap();
        let shared = |top: usize, allowed: Option<&[bool]>, r: &mut Rotation, look: Look| {
            let ranking = Ranking::plain(top);
            recommend_shared(
                &scene(),
                &cache,
                folder.category_keys(),
                &shoes,
                &ranking,
                allowed,
                Some(r),
                look,
            )
            .unwrap()
        };
        // Two shoppers see the three best; each may be shown twice early on.
        for _ in 0..2 {
            assert_eq!(ids(&shared(3, None, &mut rotation, Look::New)), ["p00", "p01", "p02"]);
        }
        // A third: the three best were shown twice each and wait; the next three, ranks renumbered.
        let third = shared(3, None, &mut rotation, Look::New);
        assert_eq!(ids(&third), ["p03", "p04", "p05"]);
        assert_eq!(third.iter().map(|r| r.rank).collect::<Vec<_>>(), [1, 2, 3]);
        // The same shopper again (the same list before the cap): the same look, the same list.
        assert_eq!(ids(&shared(3, None, &mut rotation, Look::Guess)), ["p03", "p04", "p05"]);
        assert_eq!(rotation.len(), 3, "one look, not two");
        // The stock mask still applies to what replaces the held products.
        let mut allowed = vec![true; cache.len()];
        allowed[3] = false;
        assert_eq!(ids(&shared(3, Some(&allowed), &mut rotation, Look::Guess)), ["p04", "p05", "p06"]);
        // Everything held: the list is still full, in the distance order.
        let mut all = Rotation::new(0.5, 4).unwrap();
        for _ in 0..3 {
            assert_eq!(shared(12, None, &mut all, Look::New).len(), 12);
        }
        assert_eq!(ids(&shared(12, None, &mut all, Look::New))[..3], ["p00", "p01", "p02"]);
        // No rotation: `recommend`.
        let plain =
            recommend(&scene(), &cache, folder.category_keys(), &shoes, &Ranking::plain(3), None).unwrap();
        let none = recommend_shared(
            &scene(),
            &cache,
            folder.category_keys(),
            &shoes,
            &Ranking::plain(3),
            None,
            None,
            Look::New,
        )
        .unwrap();
        assert_eq!(none, plain);
    }

    #[test]
    fn a_mask_of_another_length_is_refused() {
        let (cache, folder) = (cache(), folder());
        let shoes = cache.categories()[0].clone();
        let short = vec![true; cache.len() - 1];
        let err =
            recommend(&scene(), &cache, folder.category_keys(), &shoes, &Ranking::plain(5), Some(&short))
                .unwrap_err();
        assert!(matches!(err, RecommendError::Mask { mask: 11, cache: 12 }), "{err}");
    }
}
