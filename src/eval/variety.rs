//! The variety check (#29): what a shopper would see on the screen, scene after scene. Each
//! scene of a split is ranked whole (as the mirror sees it) against every category of a catalog
//! cache, top-K per category, at one or more `diversity` settings (`rank::diversify`); this file
//! turns those lists into numbers. Pure: lists and embeddings in, statistics out.

use std::collections::{BTreeMap, HashMap, HashSet};

/// The top-K lists of one category at one diversity setting: one list per scene, each a list of
/// row indices into the category's globals (`[rows, dim]`), best first.
pub struct Lists<'a> {
    pub globals: &'a [f32],
    pub dim: usize,
    pub lists: Vec<Vec<usize>>,
}

/// What the screen shows a category over many scenes.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct CategoryVariety {
    pub scenes: usize,
    /// Mean over lists of the mean pairwise cosine of the listed products' global embeddings
    /// (intra-list similarity: 1 = ten copies of one product).
    pub intra_list_similarity: f64,
    /// How many different products are ranked first over the scenes.
    pub distinct_first: usize,
    /// How many different products appear in any list.
    pub distinct_listed: usize,
    /// The share of lists that hold the product listed most often.
    pub most_frequent_share: f64,
    /// The same share if each list were as many products drawn at random from the category: the
    /// floor that chance alone sets for a category this size over this many scenes (mean of
    /// `CHANCE_DRAWS` seeded draws).
    pub chance_share: f64,
    /// Share-capped runs: the share of list places the cap gave to another product than the
    /// ranking's own list (0 elsewhere).
    pub replaced: f64,
    /// Share-capped runs: how many scenes the daemon would have taken for the previous scene's
    /// shopper (`rotation::Rotation::same_look`; the check counts every scene as a new look).
    pub merged: usize,
}

/// Draws behind `CategoryVariety::chance_share`.
pub const CHANCE_DRAWS: usize = 200;

/// One diversity setting over every category: the per-category numbers and their summary.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Variety {
    pub diversity: f32,
    /// Ranked by the hub-corrected distance (`rank::correct_hubs`), not the model's.
    pub hub_correction: bool,
    /// Ranked with the cache's exposure offsets too (`rank::exposure_offsets`).
    pub exposure: bool,
    /// Through the share cap (`rotation`) at this `max_share`, the scenes one shopper after
    /// another in the split's order.
    pub max_share: Option<f32>,
    /// Mean of the categories' intra-list similarity.
    pub intra_list_similarity: f64,
    /// Sum over categories of the distinct first picks.
    pub distinct_first: usize,
    /// The largest `most_frequent_share` of any category (the acceptance's "at most 10%").
    pub most_frequent_share: f64,
    /// The categories' `most_frequent_share`, averaged.
    pub mean_most_frequent_share: f64,
    pub per_category: BTreeMap<String, CategoryVariety>,
}

pub fn category(l: &Lists) -> CategoryVariety {
    let row = |i: usize| &l.globals[i * l.dim..(i + 1) * l.dim];
    let mut similarity = 0.0;
    let mut counted = 0usize;
    let mut appearances: HashMap<usize, usize> = HashMap::new();
    let mut first = HashSet::new();
    for list in &l.lists {
        if let Some(&f) = list.first() {
            first.insert(f);
        }
        let unique: HashSet<usize> = list.iter().copied().collect();
        for i in unique {
            *appearances.entry(i).or_default() += 1;
        }
        if list.len() < 2 {
            continue;
        }
        let (mut sum, mut pairs) = (0.0f64, 0usize);
        for (a, &i) in list.iter().enumerate() {
            for &j in &list[a + 1..] {
                sum += row(i).iter().zip(row(j)).map(|(x, y)| x * y).sum::<f32>() as f64;
                pairs += 1;
            }
        }
        similarity += sum / pairs as f64;
        counted += 1;
    }
    let scenes = l.lists.len();
    let products = l.globals.len() / l.dim.max(1);
    let mut rng = crate::rng::SplitMix64::new(products as u64);
    let mut chance = 0usize;
    for _ in 0..CHANCE_DRAWS {
        let mut counts = vec![0usize; products];
        for list in &l.lists {
            for i in rng.sample(products, list.len().min(products)) {
                counts[i] += 1;
            }
        }
        chance += counts.iter().copied().max().unwrap_or(0);
    }
    CategoryVariety {
        chance_share: chance as f64 / (CHANCE_DRAWS * scenes.max(1)) as f64,
        scenes,
        intra_list_similarity: similarity / counted.max(1) as f64,
        distinct_first: first.len(),
        distinct_listed: appearances.len(),
        most_frequent_share: appearances.values().copied().max().unwrap_or(0) as f64 / scenes.max(1) as f64,
        replaced: 0.0,
        merged: 0,
    }
}

pub fn summarise(
    diversity: f32,
    hub_correction: bool,
    exposure: bool,
    per_category: BTreeMap<String, CategoryVariety>,
) -> Variety {
    let n = per_category.len().max(1) as f64;
    Variety {
        diversity,
        hub_correction,
        exposure,
        max_share: None,
        intra_list_similarity: per_category.values().map(|c| c.intra_list_similarity).sum::<f64>() / n,
        distinct_first: per_category.values().map(|c| c.distinct_first).sum(),
        most_frequent_share: per_category.values().map(|c| c.most_frequent_share).fold(0.0, f64::max),
        mean_most_frequent_share: per_category.values().map(|c| c.most_frequent_share).sum::<f64>() / n,
        per_category,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_copies_firsts_and_the_most_listed_product() {
        // Rows 0 and 1 are one direction, 2 another (orthogonal), 3 the opposite of 0.
        let globals = [1.0, 0.0, 1.0, 0.0, 0.0, 1.0, -1.0, 0.0];
        let l =
            Lists { globals: &globals, dim: 2, lists: vec![vec![0, 1], vec![0, 2], vec![2, 3], vec![1, 0]] };
        let c = category(&l);
        assert_eq!(c.scenes, 4);
        assert_eq!((c.distinct_first, c.distinct_listed), (3, 4));
        assert!((c.intra_list_similarity - (1.0 + 0.0 + 0.0 + 1.0) / 4.0).abs() < 1e-9, "{c:?}");
        assert_eq!(c.most_frequent_share, 0.75, "row 0 is in three of four lists");
        // Random pairs of 4 products over 4 scenes: some product is in at least 2 of 4 lists
        // (8 places, 4 products), and rarely in all 4.
        assert!(c.chance_share >= 0.5 && c.chance_share < 1.0, "{c:?}");
        let mut per = BTreeMap::new();
        per.insert("a".to_string(), c);
        per.insert("b".to_string(), CategoryVariety { most_frequent_share: 0.9, distinct_first: 2, ..c });
        let v = summarise(0.3, false, false, per);
        assert_eq!((v.distinct_first, v.most_frequent_share), (5, 0.9));
        assert!((v.mean_most_frequent_share - (0.75 + 0.9) / 2.0).abs() < 1e-12);
    }
}
