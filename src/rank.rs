//! Pure ranking: a scene embedding against a category's product embeddings, by hybrid distance.
//!
//! global(p) = |g_s - g_p|^2
//! local(p)  = sum_i a_i(p) |f_i - g_p|^2, a(p) = softmax_i(-|k_i - key(p)|^2)
//! hybrid(p) = (global(p) + local(p)) / 2, ranked ascending, ties broken by id.
//!
//! The negative sign makes the regions closest to the product's key weigh most. Every squared
//! distance is expanded as |a|^2 + |b|^2 - 2 a.b (exact for any vectors; the norms are 1 for the
//! model's normalised outputs), so the work is dot products over contiguous rows: one fused
//! pass per product with a category key, two GEMMs per chunk with per-product keys. No I/O here.

use crate::embedding::SceneEmbedding;

/// Products handled per GEMM: bounds the scratch space at any catalog size.
const CHUNK: usize = 1024;

/// Where the products' attention keys come from.
#[derive(Debug, Clone, Copy)]
pub enum Keys<'a> {
    /// `[P, D]`: one key per product (the tutorial's attention).
    PerProduct(&'a [f32]),
    /// `[D]`: one key for the whole category (the paper's attention).
    Category(&'a [f32]),
}

impl<'a> Keys<'a> {
    /// The attention key of product `i` (rows of `dim` floats).
    pub fn of(&self, i: usize, dim: usize) -> &'a [f32] {
        match *self {
            Keys::PerProduct(keys) => &keys[i * dim..(i + 1) * dim],
            Keys::Category(key) => key,
        }
    }
}

/// The candidates: `P` rows of `D` floats, and their keys.
#[derive(Debug, Clone, Copy)]
pub struct Products<'a> {
    pub globals: &'a [f32],
    pub keys: Keys<'a>,
}

/// One product's distances; `index` is its row in `Products`.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Score {
    pub index: usize,
    pub distance: f32,
    pub global: f32,
    pub local: f32,
}

/// Scores every product of `products` (in row order).
pub fn score(scene: &SceneEmbedding, products: &Products) -> Vec<Score> {
    let d = scene.dim;
    let p = products.globals.len() / d.max(1);
    match products.keys {
        Keys::Category(key) => score_category(scene, products.globals, key),
        Keys::PerProduct(keys) => score_per_product(scene, &products.globals[..p * d], &keys[..p * d]),
    }
}

/// The `k` best of `scores`: ascending distance, ties by `id`.
pub fn top_k<'s>(mut scores: Vec<Score>, k: usize, id: impl Fn(usize) -> &'s str) -> Vec<Score> {
    keep_best(&mut scores, k, |a, b| {
        a.distance.total_cmp(&b.distance).then_with(|| id(a.index).cmp(id(b.index)))
    });
    scores
}

/// Keeps the `k` first of `scores` by `order`, sorted by it.
fn keep_best(scores: &mut Vec<Score>, k: usize, mut order: impl FnMut(&Score, &Score) -> std::cmp::Ordering) {
    if k < scores.len() {
        if k == 0 {
            scores.clear();
            return;
        }
        scores.select_nth_unstable_by(k - 1, &mut order);
        scores.truncate(k);
    }
    scores.sort_by(order);
}

/// Hubness correction: adds `g_p . mean_scene` to each product's distance, where `mean_scene` is
/// the mean over a model's training scenes of their global embedding plus their mean region
/// embedding (the model folder's `mean-scene`). A product's mean hybrid distance to scenes is
/// about `2 - g_p . mean_scene` (the global term exactly, the local one with flat attention), so
/// this subtracts that mean, up to a constant: the distance-form of CSLS (Conneau et al. 2018)
/// over all reference scenes, with no weight to tune. Products close to every scene (hubs, the
/// same shoe in every list) move down. `global` and `local` keep the plain distances, so
/// `plain_distance` gets the model's distance back exactly.
pub fn correct_hubs(scores: &mut [Score], globals: &[f32], dim: usize, mean_scene: &[f32]) {
    for s in scores {
        s.distance += dot(&globals[s.index * dim..(s.index + 1) * dim], mean_scene);
    }
}

/// The model's hybrid distance of a score, whatever ranking key `distance` holds now.
pub fn plain_distance(s: &Score) -> f32 {
    0.5 * (s.global + s.local)
}

/// `[pipeline] diversity`'s default, and `lookd recommend`'s and `lookd report`'s: measured on the
/// dev scenes with the shipped model (docs/variety.md, `lookd eval --variety`).
pub const DEFAULT_DIVERSITY: f32 = 0.3;

/// The diversity settings there are (`[pipeline] diversity`, `--diversity`, `--variety`).
pub const DIVERSITY: std::ops::Range<f32> = 0.0..1.0;

/// How far past the top `k` the variety re-rank looks: the best `HEAD * k` products. Twice `k`:
/// a wider head lets the re-rank reach products unlike the first but far from the scene, and the
/// same few of those then come up for every scene (docs/variety.md).
pub const HEAD: usize = 2;

/// Maximal marginal relevance over the head of a ranking, so that `k` near-identical products
/// do not fill the screen. `ranked` is best first (as `top_k` returns it, `HEAD * k` long or
/// less); `globals` holds each product's global embedding at `index * dim`. The best product stays
/// first; each next pick maximises
///
/// `(1 - diversity) * (1 - distance / 2) - diversity * max over picked j of cos(g_i, g_j)`
///
/// where `1 - distance / 2` is the hybrid distance read as a cosine (for unit vectors
/// |a - b|^2 = 2 - 2 cos), so both terms are on one scale. `diversity` 0 keeps the order of
/// `ranked`; ties go to the earlier product. Products repeat nowhere; fewer than `k` in gives
/// them all back. The cost is `k * HEAD * k` dot products.
pub fn diversify(ranked: &[Score], k: usize, diversity: f32, globals: &[f32], dim: usize) -> Vec<Score> {
    if diversity <= 0.0 || ranked.len() <= 1 {
        return ranked.iter().take(k).copied().collect();
    }
    let row = |s: &Score| &globals[s.index * dim..(s.index + 1) * dim];
    let relevance: Vec<f32> = ranked.iter().map(|s| (1.0 - diversity) * (1.0 - s.distance / 2.0)).collect();
    // Largest cosine of each candidate to the picks so far; None once it is picked.
    let mut closest: Vec<Option<f32>> = vec![Some(f32::NEG_INFINITY); ranked.len()];
    let mut out = Vec::with_capacity(k.min(ranked.len()));
    let mut next = 0;
    while out.len() < k.min(ranked.len()) {
        closest[next] = None;
        let picked = ranked[next];
        out.push(picked);
        let mut best: Option<(usize, f32)> = None;
        for (i, c) in closest.iter_mut().enumerate() {
            let Some(c) = c else { continue };
            *c = c.max(dot(row(&ranked[i]), row(&picked)));
            let value = relevance[i] - diversity * *c;
            if best.is_none_or(|(_, b)| value > b) {
                best = Some((i, value));
            }
        }
        match best {
            Some((i, _)) => next = i,
            None => break,
        }
    }
    out
}

/// How `exposure_offsets` caps exposure: the lists it simulates and the cap it enforces.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ExposurePlan {
    /// Products per simulated list, and the variety re-rank's setting (`diversify`).
    pub top: usize,
    pub diversity: f32,
    /// The share of reference scenes whose list may hold one product: at least `cap`, and at
    /// least `spread` times the share a product would have if every product were listed equally
    /// often (`top / products`), which a small category cannot go under.
    pub cap: f64,
    pub spread: f64,
    /// How far an offset moves per round for each multiple of the cap a product is over (in units
    /// of the head's spread, `exposure_offsets`), and the most rounds.
    pub step: f32,
    pub rounds: usize,
}

/// The defaults `lookd catalog build` uses: lists of 10 at the default diversity; 4% of the
/// reference scenes, or 1.25 x the even share in a category of fewer than 313 products (chosen
/// with models/hubness.py's simulation on the dev scenes; the measure is docs/variety.md's).
pub const EXPOSURE: ExposurePlan =
    ExposurePlan { top: 10, diversity: DEFAULT_DIVERSITY, cap: 0.04, spread: 1.25, step: 0.05, rounds: 400 };

impl ExposurePlan {
    /// The number of lists out of `scenes` that one of `products` may be in.
    pub fn allowed(&self, scenes: usize, products: usize) -> usize {
        let even = self.top as f64 / products.max(1) as f64;
        (self.cap.max(self.spread * even) * scenes as f64).floor() as usize
    }
}

/// Per-product offsets that cap how often one product reaches the screen (#29, docs/variety.md).
/// `scenes` holds, for each reference scene, every product of one category scored against it
/// (`distance` the ranking key, hub-corrected where the mirror corrects it; `index` the row in
/// `globals`). The lists are made as the mirror makes them (the best `HEAD * top` by key plus
/// offset, then `diversify`). Each round, each offset moves by `plan.step` times the product's
/// lists over `plan.allowed`, relative to it, in units of the head's mean spread (its last
/// product's key less its first's): up for a product listed too often, back towards 0 for one
/// under the cap. It stops when no product is over; where `plan.rounds` rounds do not get there,
/// it keeps the offsets of the round whose most listed product was least listed (best effort).
/// Returns the offsets (one per row, 0 for most) and the rounds taken. Ties go to the lower row.
pub fn exposure_offsets(
    scenes: &[Vec<Score>],
    globals: &[f32],
    dim: usize,
    plan: &ExposurePlan,
) -> (Vec<f32>, usize) {
    let products = globals.len() / dim.max(1);
    let mut offsets = vec![0.0f32; products];
    let allowed = plan.allowed(scenes.len(), products);
    let head = plan.top.saturating_mul(HEAD);
    let mut counts = vec![0usize; products];
    // The offsets with the fewest lists for the most listed product so far.
    let mut best = (usize::MAX, offsets.clone());
    // The step's unit: how far the head's last product lies behind its first, on average, so
    // that the same plan suits a model whose distances spread little (an untrained one) or much.
    let order = |a: &Score, b: &Score| a.distance.total_cmp(&b.distance).then(a.index.cmp(&b.index));
    // One scene's head, reused from scene to scene and round to round.
    let mut keyed: Vec<Score> = Vec::with_capacity(products);
    let spread = scenes
        .iter()
        .map(|scores| {
            keyed.clone_from(scores);
            keep_best(&mut keyed, head, order);
            keyed.last().zip(keyed.first()).map_or(0.0, |(last, first)| last.distance - first.distance)
        })
        .sum::<f32>()
        / scenes.len().max(1) as f32;
    let step = plan.step * spread;
    for round in 0..plan.rounds {
        counts.iter_mut().for_each(|c| *c = 0);
        for scores in scenes {
            keyed.clear();
            keyed.extend(scores.iter().map(|s| Score { distance: s.distance + offsets[s.index], ..*s }));
            keep_best(&mut keyed, head, order);
            for s in diversify(&keyed, plan.top, plan.diversity, globals, dim) {
                counts[s.index] += 1;
            }
        }
        let most = counts.iter().copied().max().unwrap_or(0);
        if most <= allowed {
            return (offsets, round);
        }
        if most < best.0 {
            best = (most, offsets.clone());
        }
        // Each offset moves by its excess over the cap, relative to the cap: up for a product
        // listed too often, back down (never under 0) for one pushed further than it needed.
        for (o, &c) in offsets.iter_mut().zip(&counts) {
            let excess = (c as f32 - allowed as f32) / allowed.max(1) as f32;
            *o = (*o + step * excess).max(0.0);
        }
    }
    (best.1, plan.rounds)
}

/// Adds each product's exposure offset (`exposure_offsets`, one per row) to its ranking key.
pub fn add_offsets(scores: &mut [Score], offsets: &[f32]) {
    for s in scores {
        s.distance += offsets.get(s.index).copied().unwrap_or(0.0);
    }
}

/// The attention weights over regions for one product key: softmax of minus the squared distance.
pub fn attention(region_keys: &[f32], key: &[f32]) -> Vec<f32> {
    let logits: Vec<f32> = region_keys.chunks_exact(key.len()).map(|k| -squared_distance(k, key)).collect();
    softmax(&logits)
}

fn score_category(scene: &SceneEmbedding, globals: &[f32], key: &[f32]) -> Vec<Score> {
    let d = scene.dim;
    let a = attention(&scene.keys, key);
    // local(p) = sum_i a_i |f_i|^2 + |g_p|^2 - 2 (sum_i a_i f_i) . g_p
    let mut pooled = vec![0.0; d];
    let mut region_norms = 0.0;
    for (w, f) in a.iter().zip(scene.regions.chunks_exact(d)) {
        region_norms += w * dot(f, f);
        pooled.iter_mut().zip(f).for_each(|(u, x)| *u += w * x);
    }
    let scene_norm = dot(&scene.global, &scene.global);
    // One pass over the products' rows: memory-bound, so each row is read once for all three dots.
    globals
        .chunks_exact(d)
        .enumerate()
        .map(|(index, g)| {
            let [gn, gs, gl] = dot3(g, &scene.global, &pooled);
            let global = scene_norm + gn - 2.0 * gs;
            let local = region_norms + gn - 2.0 * gl;
            Score { index, distance: 0.5 * (global + local), global, local }
        })
        .collect()
}

/// `[g.g, g.x, g.y]` in one pass, in eight independent lanes the compiler keeps in registers.
fn dot3(g: &[f32], x: &[f32], y: &[f32]) -> [f32; 3] {
    const L: usize = 8;
    let (mut gg, mut gx, mut gy) = ([0.0f32; L], [0.0f32; L], [0.0f32; L]);
    let (gc, xc, yc) = (g.chunks_exact(L), x.chunks_exact(L), y.chunks_exact(L));
    let (gr, xr, yr) = (gc.remainder(), xc.remainder(), yc.remainder());
    for ((g, x), y) in gc.zip(xc).zip(yc) {
        for k in 0..L {
            gg[k] += g[k] * g[k];
            gx[k] += g[k] * x[k];
            gy[k] += g[k] * y[k];
        }
    }
    let mut out = [gg.iter().sum::<f32>(), gx.iter().sum::<f32>(), gy.iter().sum::<f32>()];
    for ((g, x), y) in gr.iter().zip(xr).zip(yr) {
        out[0] += g * g;
        out[1] += g * x;
        out[2] += g * y;
    }
    out
}

fn score_per_product(scene: &SceneEmbedding, globals: &[f32], keys: &[f32]) -> Vec<Score> {
    let d = scene.dim;
    let r = scene.region_count();
    // Queries for the globals: the R regions, then the scene's global.
    let queries = [scene.regions.as_slice(), &scene.global].concat(); // [R + 1, D]
    let region_norms: Vec<f32> = scene.regions.chunks_exact(d).map(|f| dot(f, f)).collect();
    let key_norms: Vec<f32> = scene.keys.chunks_exact(d).map(|k| dot(k, k)).collect();
    let scene_norm = dot(&scene.global, &scene.global);
    let (mut sims, mut key_dots, mut logits) = (Vec::new(), Vec::new(), vec![0.0; r]);
    let mut scores = Vec::with_capacity(globals.len() / d);
    for (c, (g_chunk, k_chunk)) in globals.chunks(CHUNK * d).zip(keys.chunks(CHUNK * d)).enumerate() {
        gemm_nt(g_chunk, &queries, d, &mut sims); // [c, R + 1]
        gemm_nt(k_chunk, &scene.keys, d, &mut key_dots); // [c, R]
        for (j, g) in g_chunk.chunks_exact(d).enumerate() {
            let gn = dot(g, g);
            let (s, t) = (&sims[j * (r + 1)..(j + 1) * (r + 1)], &key_dots[j * r..(j + 1) * r]);
            // -|k_i - key|^2 up to the key's own norm, which the softmax cancels.
            logits.iter_mut().zip(t.iter().zip(&key_norms)).for_each(|(l, (t, kn))| *l = 2.0 * t - kn);
            let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            logits.iter_mut().for_each(|l| *l = exp_nonpositive(*l - max));
            let (mut num, mut den) = (0.0, 0.0);
            for i in 0..r {
                num += logits[i] * (region_norms[i] + gn - 2.0 * s[i]);
                den += logits[i];
            }
            let global = scene_norm + gn - 2.0 * s[r];
            let local = num / den;
            scores.push(Score { index: c * CHUNK + j, distance: 0.5 * (global + local), global, local });
        }
    }
    scores
}

/// e^x for x <= 0, in plain arithmetic the compiler vectorises (the libm call it replaces was
/// most of the product-key mode's time). Relative error under 5e-6 (the f32 argument
/// reduction loses a few ulps for large |x|, where softmax weights are tiny anyway). Below -87
/// it returns e^-87 (~1.6e-38), which a softmax weight cannot tell from 0.
fn exp_nonpositive(x: f32) -> f32 {
    let t = x.max(-87.0) * std::f32::consts::LOG2_E; // e^x = 2^t, t in [-125.6, 0]
    let n = t as i32; // toward zero: n = ceil(t), so f = t - n is in (-1, 0]
    let f = t - n as f32;
    // 2^f = e^(f ln 2), Taylor to degree 7 (remainder < 1.3e-6 of the value for |f| < 1)
    let y = f * std::f32::consts::LN_2;
    let p = 1.0
        + y * (1.0
            + y * (1.0 / 2.0
                + y * (1.0 / 6.0
                    + y * (1.0 / 24.0 + y * (1.0 / 120.0 + y * (1.0 / 720.0 + y * (1.0 / 5040.0)))))));
    f32::from_bits(((n + 127) as u32) << 23) * p
}

/// out[m, n] = a[m, :] . b[n, :] for row-major `a` ([M, D]) and `b` ([N, D]).
fn gemm_nt(a: &[f32], b: &[f32], d: usize, out: &mut Vec<f32>) {
    let (m, n) = (a.len() / d, b.len() / d);
    out.clear();
    out.resize(m * n, 0.0);
    if m == 0 || n == 0 {
        return;
    }
    // SAFETY: a is m x d with row stride d; b read as d x n (b transposed) with row stride 1 and
    // column stride d; out is m x n with row stride n. All three slices hold exactly that many.
    unsafe {
        matrixmultiply::sgemm(
            m,
            d,
            n,
            1.0,
            a.as_ptr(),
            d as isize,
            1,
            b.as_ptr(),
            1,
            d as isize,
            0.0,
            out.as_mut_ptr(),
            n as isize,
            1,
        );
    }
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn squared_distance(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
}

fn softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let e: Vec<f32> = logits.iter().map(|l| (l - max).exp()).collect();
    let sum: f32 = e.iter().sum();
    e.iter().map(|x| x / sum).collect()
}

/// The definition written out pair by pair, in f64: the yardstick the fast path is tested against.
pub fn reference(scene: &SceneEmbedding, products: &Products) -> Vec<Score> {
    let d = scene.dim;
    let sq =
        |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| (*x as f64 - *y as f64).powi(2)).sum::<f64>();
    products
        .globals
        .chunks_exact(d)
        .enumerate()
        .map(|(p, g)| {
            let key = match products.keys {
                Keys::PerProduct(k) => &k[p * d..(p + 1) * d],
                Keys::Category(k) => k,
            };
            let neg: Vec<f64> = scene.keys.chunks_exact(d).map(|k| -sq(k, key)).collect();
            let max = neg.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let den: f64 = neg.iter().map(|l| (l - max).exp()).sum();
            let local: f64 =
                scene.regions.chunks_exact(d).zip(&neg).map(|(f, l)| (l - max).exp() / den * sq(f, g)).sum();
            let global = sq(&scene.global, g);
            Score {
                index: p,
                distance: (0.5 * (global + local)) as f32,
                global: global as f32,
                local: local as f32,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SplitMix64;

    /// Products on the unit circle at these angles (radians), ranked by the given distances.
    fn circle(angles: &[f32], distances: &[f32]) -> (Vec<f32>, Vec<Score>) {
        let globals = angles.iter().flat_map(|a| [a.cos(), a.sin()]).collect();
        let ranked = distances
            .iter()
            .enumerate()
            .map(|(index, &distance)| Score { index, distance, global: distance, local: distance })
            .collect();
        (globals, ranked)
    }

    fn indices(s: &[Score]) -> Vec<usize> {
        s.iter().map(|s| s.index).collect()
    }

    #[test]
    fn diversify_spreads_a_head_of_near_copies() {
        // Five near-identical products (angles 0..0.04) rank first, then three others, each a
        // little farther from the scene.
        let (g, ranked) = circle(
            &[0.0, 0.01, 0.02, 0.03, 0.04, 1.5, 3.0, 4.5],
            &[0.50, 0.51, 0.52, 0.53, 0.54, 0.60, 0.62, 0.64],
        );
        assert_eq!(indices(&diversify(&ranked, 4, 0.0, &g, 2)), [0, 1, 2, 3], "0 keeps the order");
        let got = diversify(&ranked, 4, 0.3, &g, 2);
        // The opposite of the first (angle 3.0) next, then the nearer of two equally unlike.
        assert_eq!(indices(&got), [0, 6, 5, 7], "the best stays first; the copies give way");
        assert_eq!(got[1], ranked[6], "scores travel unchanged");
        // Once the distinct ones are used, the copies come back, best first.
        assert_eq!(indices(&diversify(&ranked, 6, 0.3, &g, 2)), [0, 6, 5, 7, 1, 2]);
        // Fewer products than asked: all of them, each once.
        let mut all = indices(&diversify(&ranked, 20, 0.3, &g, 2));
        all.sort();
        assert_eq!(all, (0..8).collect::<Vec<_>>());
    }

    #[test]
    fn exposure_offsets_push_a_hub_down_until_no_product_tops_too_many_lists() {
        // 30 products, 20 scenes: product 0 is the closest to every scene, products 1..=3 come
        // next everywhere, each scene has one product of its own, 4 + s, and the rest lie far, in an
        // order that differs from scene to scene.
        let scenes: Vec<Vec<Score>> = (0..20)
            .map(|s| {
                (0..30)
                    .map(|i| {
                        let distance = match i {
                            0 => 0.1,
                            1..=3 => 0.2 + 0.01 * i as f32,
                            _ if i == 4 + s % 26 => 0.3,
                            _ => 1.0 + 0.01 * ((i * 7 + s * 13) % 29) as f32,
                        };
                        Score { index: i, distance, global: distance, local: distance }
                    })
                    .collect()
            })
            .collect();
        let globals: Vec<f32> = (0..30).flat_map(|i| [(i as f32).cos(), (i as f32).sin()]).collect();
        let plan = ExposurePlan { top: 3, diversity: 0.0, cap: 0.15, spread: 1.0, step: 0.05, rounds: 100 };
        assert_eq!(plan.allowed(20, 30), 3, "15% of 20 lists, above the even share (3 / 30)");
        assert_eq!(ExposurePlan { cap: 0.01, ..plan }.allowed(20, 30), 2, "the even share: 10% of 20");
        let lists = |offsets: &[f32]| -> Vec<usize> {
            let mut counts = vec![0; 30];
            for scores in &scenes {
                let mut keyed = scores.clone();
                add_offsets(&mut keyed, offsets);
                for s in top_k(keyed, plan.top, |_| "") {
                    counts[s.index] += 1;
                }
            }
            counts
        };
        assert_eq!(&lists(&[0.0; 30])[..4], [20, 20, 20, 0], "three hubs fill every list");
        let (offsets, rounds) = exposure_offsets(&scenes, &globals, 2, &plan);
        assert!(rounds < plan.rounds, "it converged: {rounds} {offsets:?} {:?}", lists(&offsets));
        let counts = lists(&offsets);
        assert!(counts.iter().all(|&c| c <= 3), "{counts:?}");
        assert!(offsets[0] > 0.0 && offsets[1] > 0.0, "{offsets:?}");
        assert!(offsets[4..].iter().all(|&o| o == 0.0), "a scene's own product is never pushed: {offsets:?}");
        // An impossible cap stops at the round limit instead of looping.
        let tight = ExposurePlan { cap: 0.0, spread: 0.0, rounds: 7, ..plan };
        assert_eq!(exposure_offsets(&scenes, &globals, 2, &tight).1, 7);
    }

    #[test]
    fn correct_hubs_moves_down_the_products_near_the_mean_scene_and_keeps_the_distance() {
        // Product 0 lies along the mean scene (close to every scene), product 1 across it.
        let (g, mut ranked) = circle(&[0.0, std::f32::consts::FRAC_PI_2], &[0.50, 0.52]);
        for s in &mut ranked {
            (s.global, s.local) = (s.distance, s.distance);
        }
        correct_hubs(&mut ranked, &g, 2, &[0.4, 0.0]);
        assert!(
            (ranked[0].distance - 0.90).abs() < 1e-4 && (ranked[1].distance - 0.52).abs() < 1e-4,
            "{ranked:?}"
        );
        let order = top_k(ranked.clone(), 2, |i| ["a", "b"][i]);
        assert_eq!(indices(&order), [1, 0], "the hub gives way");
        assert_eq!(
            ranked.iter().map(plain_distance).collect::<Vec<_>>(),
            [0.50, 0.52],
            "the model's distance"
        );
    }

    #[test]
    fn diversify_weighs_distance_against_likeness() {
        // A near copy that is much closer to the scene beats a distinct product far from it.
        let (g, ranked) = circle(&[0.0, 0.05, 1.5], &[0.2, 0.21, 2.0]);
        assert_eq!(indices(&diversify(&ranked, 2, 0.3, &g, 2)), [0, 1]);
        assert_eq!(indices(&diversify(&ranked, 2, 0.9, &g, 2)), [0, 2]);
        assert!(diversify(&[], 3, 0.3, &g, 2).is_empty());
    }

    fn scene(global: &[f32], regions: &[&[f32]], keys: &[&[f32]]) -> SceneEmbedding {
        SceneEmbedding {
            dim: global.len(),
            global: global.to_vec(),
            regions: regions.concat(),
            keys: keys.concat(),
        }
    }

    /// Ranks `globals` (one per id, ids "p0", "p1", ...) and compares the order of ids.
    fn check(s: &SceneEmbedding, globals: &[&[f32]], keys: Keys, expected: &[&str]) {
        let ids: Vec<String> = (0..globals.len()).map(|i| format!("p{i}")).collect();
        let flat = globals.concat();
        let scores = score(s, &Products { globals: &flat, keys });
        let ranked: Vec<&str> =
            top_k(scores, expected.len(), |i| &ids[i]).iter().map(|s| ids[s.index].as_str()).collect();
        assert_eq!(ranked, expected);
    }

    #[test]
    fn nearest_first_when_regions_and_global_agree() {
        let s = scene(&[1.0, 0.0], &[&[1.0, 0.0]], &[&[1.0, 0.0]]);
        check(&s, &[&[0.0, 1.0], &[1.0, 0.0], &[0.6, 0.8]], Keys::Category(&[1.0, 0.0]), &["p1", "p2", "p0"]);
    }

    #[test]
    fn hybrid_halves_global_and_local() {
        // p0: global 2, local 0 -> 1; p1: global 0, local 2 -> 1; p2: 0.8 and 0.4 -> 0.6.
        let s = scene(&[1.0, 0.0], &[&[0.0, 1.0]], &[&[1.0, 0.0]]);
        check(&s, &[&[0.0, 1.0], &[1.0, 0.0], &[0.6, 0.8]], Keys::Category(&[1.0, 0.0]), &["p2", "p0", "p1"]);
    }

    #[test]
    fn attended_region_decides() {
        // The global is equidistant from both products; region 0 (the attended one) points at p1.
        let s = scene(&[0.0, 0.0], &[&[0.0, 1.0], &[1.0, 0.0]], &[&[1.0, 0.0], &[-1.0, 0.0]]);
        let globals: [&[f32]; 2] = [&[1.0, 0.0], &[0.0, 1.0]];
        check(&s, &globals, Keys::Category(&[1.0, 0.0]), &["p1", "p0"]);
        check(&s, &globals, Keys::Category(&[-1.0, 0.0]), &["p0", "p1"]);
        check(&s, &globals, Keys::PerProduct(&[1.0, 0.0, 1.0, 0.0]), &["p1", "p0"]);
    }

    #[test]
    fn ties_are_broken_by_id() {
        let s = scene(&[1.0, 0.0], &[&[1.0, 0.0]], &[&[1.0, 0.0]]);
        check(&s, &[&[0.0, 1.0], &[0.0, 1.0], &[0.0, 1.0]], Keys::Category(&[1.0, 0.0]), &["p0", "p1", "p2"]);
    }

    #[test]
    fn top_k_larger_than_the_category_returns_all() {
        let s = scene(&[1.0, 0.0], &[&[1.0, 0.0]], &[&[1.0, 0.0]]);
        check(&s, &[&[0.0, 1.0], &[1.0, 0.0]], Keys::Category(&[1.0, 0.0]), &["p1", "p0"]);
    }

    #[test]
    fn closest_region_gets_the_largest_weight() {
        let keys = [[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.6, 0.8]].concat();
        for (key, closest) in [([1.0, 0.1], 0), ([0.1, 1.0], 1), ([-1.0, 0.0], 2), ([0.55, 0.85], 3)] {
            let a = attention(&keys, &key);
            let best = (0..4).max_by(|&i, &j| a[i].total_cmp(&a[j])).unwrap();
            assert_eq!(best, closest, "weights {a:?}");
            assert!((a.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        }
    }

    fn random_unit(rng: &mut SplitMix64, n: usize, d: usize) -> Vec<f32> {
        let mut v: Vec<f32> = (0..n * d).map(|_| rng.unit()).collect();
        for row in v.chunks_exact_mut(d) {
            let norm = dot(row, row).sqrt();
            row.iter_mut().for_each(|x| *x /= norm);
        }
        v
    }

    #[test]
    fn fast_exp_is_close_to_libm_over_its_range() {
        let mut worst = 0.0f64;
        for i in 0..=200_000 {
            let x = -(i as f32) * 90.0 / 200_000.0;
            let (fast, exact) = (exp_nonpositive(x) as f64, (x as f64).exp());
            if x > -87.0 {
                worst = worst.max((fast - exact).abs() / exact);
            } else {
                assert!(fast < 2e-38);
            }
        }
        assert!(worst < 5e-6, "relative error {worst:e}");
    }

    #[test]
    fn agrees_with_the_reference_to_1e5() {
        let mut rng = SplitMix64::new(3);
        // Also a width that is not a multiple of the kernels' lane count.
        for (d, r, p) in [(16, 9, CHUNK + 37), (13, 5, 300)] {
            let s = SceneEmbedding {
                dim: d,
                global: random_unit(&mut rng, 1, d),
                regions: random_unit(&mut rng, r, d),
                keys: random_unit(&mut rng, r, d),
            };
            let globals = random_unit(&mut rng, p, d);
            let per_product = random_unit(&mut rng, p, d);
            let category = random_unit(&mut rng, 1, d);
            for keys in [Keys::PerProduct(&per_product), Keys::Category(&category)] {
                let products = Products { globals: &globals, keys };
                let (fast, slow) = (score(&s, &products), reference(&s, &products));
                assert_eq!(fast.len(), p);
                for (a, b) in fast.iter().zip(&slow) {
                    assert_eq!(a.index, b.index);
                    for (x, y) in [(a.distance, b.distance), (a.global, b.global), (a.local, b.local)] {
                        assert!((x - y).abs() < 1e-5, "{d} {keys:?}: {a:?} vs {b:?}");
                    }
                }
            }
        }
    }
}
