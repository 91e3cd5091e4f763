//! The evaluation protocol of ../shared/data/README.md, on any Shop-the-Look-layout folder.
//!
//! * Query: the largest of the four rectangles of the scene that do not overlap the product box
//!   (left, right, above, below; the first wins a tie); the pair is dropped below 10% of the image.
//! * FITB-4: the positive and 3 products of the same category path from other scenes, drawn with
//!   SplitMix64 seeded with `seed`; dropped when fewer than 3 exist. Correct when the positive's
//!   hybrid distance is strictly the smallest.
//! * AUC: per kept pair, one more same-category negative from the same stream; a win counts 1, a
//!   tie 1/2.
//!
//! Pairs are visited in file order and the stream is drawn from only for kept pairs (3 FITB
//! draws by partial Fisher-Yates, then 1 AUC draw), so the Python twin gets the same trials.
//! Planning and scoring are pure; `run` does the image I/O and inference. Beside the plain
//! numbers `run` reports the leakage checks of `crate::leakage`: the same trials with every
//! candidate photometrically changed, and, given a catalog cache, the catalog rank check.

pub mod variety;

use std::collections::{BTreeMap, HashMap};

use crate::cache::ProductCache;
use crate::dataset::{Dataset, Pair};
use crate::embedding::{AttentionMode, ProductEmbedding};
use crate::leakage::{self, Photometric};
use crate::model::{ModelError, ModelFolder, ProductModel, SceneModel};
use crate::preprocess::{self, Rect};
use crate::rank::{self, Keys, Products, Score};
use crate::recommend::{ranked_head, recommend, share_cap, Look, Ranking};
use crate::rng::SplitMix64;
use crate::rotation::{self, Rotation};

/// Smallest share of the image a query rectangle may cover.
pub const MIN_QUERY_AREA: f32 = 0.10;

/// The scene rectangle (normalised left, top, right, bottom) used as the query for `bbox`.
pub fn query_rect(bbox: [f32; 4]) -> Option<[f32; 4]> {
    let [l, t, r, b] = bbox;
    let sides = [
        (l, [0.0, 0.0, l, 1.0]),
        (1.0 - r, [r, 0.0, 1.0, 1.0]),
        (t, [0.0, 0.0, 1.0, t]),
        (1.0 - b, [0.0, b, 1.0, 1.0]),
    ];
    let mut best = sides[0];
    for s in &sides[1..] {
        if s.0 > best.0 {
            best = *s;
        }
    }
    (best.0 >= MIN_QUERY_AREA).then_some(best.1)
}

/// The normalised rectangle in pixels of a `width` x `height` image (rounded, at least 1 px).
pub fn to_pixels(rect: [f32; 4], width: u32, height: u32) -> Rect {
    let px = |v: f32, n: u32| ((v * n as f32).round() as u32).min(n);
    let (x0, y0) = (px(rect[0], width).min(width - 1), px(rect[1], height).min(height - 1));
    let (x1, y1) = (px(rect[2], width).max(x0 + 1), px(rect[3], height).max(y0 + 1));
    Rect { x: x0, y: y0, width: x1 - x0, height: y1 - y0 }
}

/// One FITB question: pair index, its query rectangle, 3 negatives and the AUC negative.
#[derive(Debug, Clone, PartialEq)]
pub struct Trial {
    pub pair: usize,
    pub query: [f32; 4],
    pub negatives: [usize; 3],
    pub auc_negative: usize,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    pub trials: Vec<Trial>,
    pub dropped_small_query: usize,
    pub dropped_few_candidates: usize,
}

pub fn plan(pairs: &[Pair], seed: u64) -> Plan {
    let mut by_category: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, p) in pairs.iter().enumerate() {
        by_category.entry(&p.category).or_default().push(i);
    }
    let mut rng = SplitMix64::new(seed);
    let mut out = Plan::default();
    for (i, pair) in pairs.iter().enumerate() {
        let Some(query) = query_rect(pair.bbox) else {
            out.dropped_small_query += 1;
            continue;
        };
        let pool: Vec<usize> = by_category[pair.category.as_str()]
            .iter()
            .copied()
            .filter(|&j| pairs[j].scene != pair.scene)
            .collect();
        if pool.len() < 3 {
            out.dropped_few_candidates += 1;
            continue;
        }
        let drawn = rng.sample(pool.len(), 3);
        let auc_negative = pool[rng.below(pool.len())];
        out.trials.push(Trial {
            pair: i,
            query,
            negatives: [pool[drawn[0]], pool[drawn[1]], pool[drawn[2]]],
            auc_negative,
        });
    }
    out
}

/// Each trial's outcome of one distance (hybrid, global-only or local-only), with its scene for
/// the bootstrap; the counts are read from them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tally {
    pub outcomes: Vec<Outcome>,
}

/// One trial's result: its scene (any number that is the same for the same scene), whether the
/// positive won FITB-4, and its AUC win (1, 1/2 or 0).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Outcome {
    pub scene: u32,
    pub correct: bool,
    pub auc: f64,
}

impl Tally {
    /// `d[0]` is the positive, `d[1..4]` the FITB negatives, `d[4]` the AUC negative.
    pub fn add(&mut self, scene: u32, d: [f32; 5]) {
        let correct = d[1..4].iter().all(|&n| d[0] < n);
        let auc = if d[0] < d[4] {
            1.0
        } else if d[0] == d[4] {
            0.5
        } else {
            0.0
        };
        self.outcomes.push(Outcome { scene, correct, auc });
    }
    pub fn trials(&self) -> usize {
        self.outcomes.len()
    }
    pub fn fitb_correct(&self) -> usize {
        self.outcomes.iter().filter(|o| o.correct).count()
    }
    pub fn auc_wins(&self) -> f64 {
        self.outcomes.iter().map(|o| o.auc).sum()
    }
    pub fn fitb(&self) -> f64 {
        self.fitb_correct() as f64 / self.trials().max(1) as f64
    }
    pub fn auc(&self) -> f64 {
        self.auc_wins() / self.trials().max(1) as f64
    }
}

/// Resamples of the scene bootstrap.
pub const BOOTSTRAP_RESAMPLES: usize = 1000;
/// The bootstrap's own SplitMix64 seed, fixed so that every report's intervals can be reproduced
/// (models/ctl.py `bootstrap` draws the same resamples).
pub const BOOTSTRAP_SEED: u64 = 2019;

/// 95% intervals of FITB-4 and AUC by the percentile bootstrap over scenes: the trials' scenes
/// (in order of first appearance) are drawn with replacement, as many as there are, each bringing
/// all of its trials; 1,000 resamples; the 2.5th and 97.5th percentiles by nearest rank (the 25th
/// and 975th smallest). Scenes, not trials, because trials of one scene share its query and are
/// not independent. Empty input gives `[0, 0]` twice.
pub fn bootstrap(outcomes: &[Outcome]) -> ([f64; 2], [f64; 2]) {
    let mut index: HashMap<u32, usize> = HashMap::new();
    // Per scene: FITB-4 wins, AUC wins, trials.
    let mut per: Vec<[f64; 3]> = Vec::new();
    for o in outcomes {
        let i = *index.entry(o.scene).or_insert_with(|| {
            per.push([0.0; 3]);
            per.len() - 1
        });
        per[i][0] += o.correct as u8 as f64;
        per[i][1] += o.auc;
        per[i][2] += 1.0;
    }
    if per.is_empty() {
        return ([0.0; 2], [0.0; 2]);
    }
    let mut rng = SplitMix64::new(BOOTSTRAP_SEED);
    let (mut fitb, mut auc) =
        (Vec::with_capacity(BOOTSTRAP_RESAMPLES), Vec::with_capacity(BOOTSTRAP_RESAMPLES));
    for _ in 0..BOOTSTRAP_RESAMPLES {
        let mut sum = [0.0; 3];
        for _ in 0..per.len() {
            let s = &per[rng.below(per.len())];
            (0..3).for_each(|k| sum[k] += s[k]);
        }
        fitb.push(sum[0] / sum[2]);
        auc.push(sum[1] / sum[2]);
    }
    let interval = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        let at = |p: f64| v[((p * v.len() as f64).ceil() as usize).max(1) - 1];
        [at(0.025), at(0.975)]
    };
    (interval(fitb), interval(auc))
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Report {
    pub pairs_in_file: usize,
    pub pairs_used: usize,
    pub dropped_small_query: usize,
    pub dropped_few_candidates: usize,
    pub dropped_unreadable: usize,
    pub hybrid: Metrics,
    pub global_only: Metrics,
    pub local_only: Metrics,
    /// Hybrid distance per category (the last part of its path).
    pub per_category: BTreeMap<String, CategoryMetrics>,
    /// The same trials with every candidate product photometrically changed.
    pub photometric: Option<Distances>,
    pub catalog: Option<CatalogReport>,
    /// The variety check, one entry per diversity setting asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub variety: Option<Vec<variety::Variety>>,
}

/// The three distances' metrics over one set of trials.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Distances {
    pub hybrid: Metrics,
    pub global_only: Metrics,
    pub local_only: Metrics,
}

/// The catalog check (see `crate::leakage`): ranks are 1-based over the whole catalog.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct CatalogReport {
    pub catalog_products: usize,
    /// Trials whose removed item has a coarse label the catalog holds in its category.
    pub trials: usize,
    pub median_rank: f64,
    /// Median over the same trials of random's expected rank, (N + 1) / (M + 1).
    pub random_median_rank: f64,
    /// Share of trials ranked better than random's expectation.
    pub better_than_random: f64,
    /// Median rank by coarse label: (trials, model, random).
    pub per_label: BTreeMap<String, (usize, f64, f64)>,
}

/// What `run` measures beside plain FITB/AUC.
#[derive(Clone, Copy, Default)]
pub struct Checks<'a> {
    /// Also score every trial with photometrically changed candidates (seeded by the eval seed).
    pub photometric: bool,
    /// A cache of the store catalog built with the same model, with a `label` column.
    pub catalog: Option<&'a ProductCache>,
    /// With `catalog`: the variety check (`variety`) at each of these diversity settings: every
    /// scene of the trials ranked whole against each of the catalog's categories, top
    /// `VARIETY_TOP`.
    pub variety: Option<&'a [f32]>,
}

/// The list length the variety check looks at: the kiosk's default top.
pub const VARIETY_TOP: usize = 10;

#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct CategoryMetrics {
    pub pairs: usize,
    pub fitb4: f64,
    pub auc: f64,
    /// 95% scene-bootstrap intervals (see [`bootstrap`]).
    pub fitb4_ci: [f64; 2],
    pub auc_ci: [f64; 2],
}

#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Metrics {
    pub fitb4: f64,
    pub auc: f64,
    /// 95% scene-bootstrap intervals (see [`bootstrap`]).
    pub fitb4_ci: [f64; 2],
    pub auc_ci: [f64; 2],
}

impl From<Tally> for Metrics {
    fn from(t: Tally) -> Metrics {
        let (fitb4_ci, auc_ci) = bootstrap(&t.outcomes);
        Metrics { fitb4: t.fitb(), auc: t.auc(), fitb4_ci, auc_ci }
    }
}

impl From<Tally> for CategoryMetrics {
    fn from(t: Tally) -> CategoryMetrics {
        let pairs = t.trials();
        let m = Metrics::from(t);
        CategoryMetrics { pairs, fitb4: m.fitb4, auc: m.auc, fitb4_ci: m.fitb4_ci, auc_ci: m.auc_ci }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("category {0:?} has no key in the model (category-key attention)")]
    NoCategoryKey(String),
    #[error("catalog check: {0}")]
    Catalog(#[from] crate::recommend::RecommendError),
    #[error("catalog check: the cache has no `label` column (build it from a catalog CSV that has one)")]
    NoLabels,
}

/// Embeds and scores every trial (at most `limit`). Unreadable images drop their trial.
pub fn run(
    data: &Dataset,
    folder: &ModelFolder,
    seed: u64,
    limit: Option<usize>,
    checks: Checks,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Report, EvalError> {
    let planned = plan(&data.pairs, seed);
    let trials = &planned.trials[..planned.trials.len().min(limit.unwrap_or(usize::MAX))];
    let mut scenes = SceneModel::load(folder)?;
    let mut products = ProductLookup {
        model: ProductModel::load(folder, 1)?,
        data,
        folder,
        photometric: checks.photometric.then_some(seed),
        memo: HashMap::new(),
    };
    let (mut hybrid, mut global, mut local) = (Tally::default(), Tally::default(), Tally::default());
    let mut photo: [Tally; 3] = Default::default();
    let mut scene_numbers: HashMap<&str, u32> = HashMap::new();
    let mut per_category: BTreeMap<String, Tally> = BTreeMap::new();
    let mut catalog = checks.catalog.map(CatalogCheck::new).transpose()?;
    let mut report = Report {
        pairs_in_file: data.pairs.len(),
        dropped_small_query: planned.dropped_small_query,
        dropped_few_candidates: planned.dropped_few_candidates,
        ..Default::default()
    };
    let mut pixels = Vec::new();
    for (n, trial) in trials.iter().enumerate() {
        progress(n, trials.len());
        let pair = &data.pairs[trial.pair];
        let ids =
            [trial.pair, trial.negatives[0], trial.negatives[1], trial.negatives[2], trial.auc_negative];
        let looked_up: Vec<Option<Candidate>> =
            ids.iter().map(|&i| products.get(&data.pairs[i].product)).collect::<Result<_, _>>()?;
        let candidates: Option<Vec<Candidate>> = looked_up.into_iter().collect();
        let scene =
            std::fs::read(data.scene_path(&pair.scene)).ok().and_then(|b| preprocess::decode(&b).ok());
        let (Some(candidates), Some(scene)) = (candidates, scene) else {
            report.dropped_unreadable += 1;
            continue;
        };
        let crop = to_pixels(trial.query, scene.width(), scene.height());
        let input = &folder.manifest.input;
        if preprocess::to_model_input(&scene, Some(crop), input.width, input.height, &mut pixels).is_err() {
            report.dropped_unreadable += 1;
            continue;
        }
        let embedding = scenes.embed(&pixels)?;
        let next = scene_numbers.len() as u32;
        let sn = *scene_numbers.entry(pair.scene.as_str()).or_insert(next);
        let plain: Vec<&ProductEmbedding> = candidates.iter().map(|c| &c.plain).collect();
        let scores = score_candidates(folder, &pair.category, &embedding, &plain)?;
        hybrid.add(sn, scores.map(|s| s.distance));
        let name = pair.category.rsplit('|').next().unwrap_or(&pair.category).to_string();
        per_category.entry(name).or_default().add(sn, scores.map(|s| s.distance));
        global.add(sn, scores.map(|s| s.global));
        local.add(sn, scores.map(|s| s.local));
        let changed: Option<Vec<&ProductEmbedding>> = candidates.iter().map(|c| c.changed.as_ref()).collect();
        if let Some(changed) = changed {
            let s = score_candidates(folder, &pair.category, &embedding, &changed)?;
            photo[0].add(sn, s.map(|s| s.distance));
            photo[1].add(sn, s.map(|s| s.global));
            photo[2].add(sn, s.map(|s| s.local));
        }
        if let Some(c) = catalog.as_mut() {
            c.add(pair, &embedding, folder)?;
        }
    }
    progress(trials.len(), trials.len());
    report.pairs_used = hybrid.trials();
    (report.hybrid, report.global_only, report.local_only) = (hybrid.into(), global.into(), local.into());
    report.per_category = per_category.into_iter().map(|(c, t)| (c, CategoryMetrics::from(t))).collect();
    report.photometric = checks.photometric.then(|| {
        let [hybrid, global_only, local_only] = photo.map(Metrics::from);
        Distances { hybrid, global_only, local_only }
    });
    report.catalog = catalog.map(CatalogCheck::finish);
    if let (Some(settings), Some(cache)) = (checks.variety, checks.catalog) {
        // The scenes in the order the trials first met them (their numbers).
        let mut scene_order: Vec<&str> = scene_numbers.keys().copied().collect();
        scene_order.sort_by_key(|s| scene_numbers[s]);
        report.variety =
            Some(variety_check(data, folder, &mut scenes, cache, &scene_order, settings, progress)?);
    }
    Ok(report)
}

/// `Checks::variety`: each scene whole, each category of `cache`, the top `VARIETY_TOP` at each
/// diversity setting; unreadable scenes are left out.
fn variety_check(
    data: &Dataset,
    folder: &ModelFolder,
    model: &mut SceneModel,
    cache: &ProductCache,
    scenes: &[&str],
    settings: &[f32],
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Vec<variety::Variety>, EvalError> {
    let blocks = cache.categories();
    // Every setting by distance; where the model has a mean scene, hub-corrected; where the cache
    // has exposure offsets, with them too (hub-corrected when the model can be).
    /// A ranking: its mean scene (hub correction), and whether it adds the exposure offsets.
    type How<'m> = (Option<&'m [f32]>, bool);
    let mut means: Vec<How> = vec![(None, false)];
    means.extend(folder.mean_scene().map(|m| (Some(m), false)));
    if cache.exposure().is_some() {
        means.push((folder.mean_scene(), true));
    }
    let runs: Vec<(How, f32)> = means.iter().flat_map(|&m| settings.iter().map(move |&d| (m, d))).collect();
    // The share-capped runs (`rotation`, at the daemon's default), one per setting, on the
    // daemon's default ranking: hub-corrected where the model can be, with the exposure offsets
    // where the cache has them.
    let shared_how: How = (folder.mean_scene(), cache.exposure().is_some());
    struct Shared<'c> {
        rotation: Rotation,
        rows: HashMap<&'c str, usize>,
        lists: Vec<Vec<usize>>,
        replaced: usize,
        places: usize,
        merged: usize,
    }
    let mut shared: Vec<Vec<Shared>> = settings
        .iter()
        .map(|_| {
            blocks
                .iter()
                .map(|block| Shared {
                    rotation: Rotation::new(rotation::DEFAULT_MAX_SHARE, rotation::DEFAULT_LOOKS)
                        .expect("the default share cap is on"),
                    rows: cache.products()[block.start..block.start + block.len]
                        .iter()
                        .enumerate()
                        .map(|(j, p)| (p.entry.id.as_str(), j))
                        .collect(),
                    lists: Vec::new(),
                    replaced: 0,
                    places: 0,
                    merged: 0,
                })
                .collect()
        })
        .collect();
    // lists[run][block] = one list of block rows per scene
    let mut lists: Vec<Vec<Vec<Vec<usize>>>> = vec![vec![Vec::new(); blocks.len()]; runs.len()];
    let (input, mut pixels) = (&folder.manifest.input, Vec::new());
    for (n, id) in scenes.iter().enumerate() {
        progress(n, scenes.len());
        let Some(scene) = std::fs::read(data.scene_path(id)).ok().and_then(|b| preprocess::decode(&b).ok())
        else {
            continue;
        };
        if preprocess::to_model_input(&scene, None, input.width, input.height, &mut pixels).is_err() {
            continue;
        }
        let embedding = model.embed(&pixels)?;
        for (b, block) in blocks.iter().enumerate() {
            for (m, &(mean_scene, exposure)) in means.iter().enumerate() {
                let ranking = Ranking { top: VARIETY_TOP, diversity: 0.0, mean_scene, exposure };
                let head = ranked_head(&embedding, cache, folder.category_keys(), block, &ranking, None)?;
                for (k, &d) in settings.iter().enumerate() {
                    let picked = rank::diversify(&head, VARIETY_TOP, d, cache.globals(block), cache.dim());
                    lists[m * settings.len() + k][b].push(picked.iter().map(|s| s.index).collect());
                }
            }
            // The daemon's whole ranking, share cap included: each scene a new shopper.
            for (k, &d) in settings.iter().enumerate() {
                let ranking = Ranking {
                    top: VARIETY_TOP,
                    diversity: d,
                    mean_scene: shared_how.0,
                    exposure: shared_how.1,
                };
                let keys = folder.category_keys();
                let unshared = recommend(&embedding, cache, keys, block, &ranking, None)?;
                let own: Vec<String> = unshared.iter().map(|r| r.id.clone()).collect();
                let s = &mut shared[k][b];
                s.merged += usize::from(s.rotation.same_look(&own));
                let shown = share_cap(
                    unshared,
                    &embedding,
                    cache,
                    keys,
                    block,
                    &ranking,
                    None,
                    &mut s.rotation,
                    Look::New,
                )?;
                s.replaced += shown.iter().filter(|r| !own.contains(&r.id)).count();
                s.places += shown.len();
                s.lists.push(shown.iter().filter_map(|r| s.rows.get(r.id.as_str()).copied()).collect());
            }
        }
    }
    progress(scenes.len(), scenes.len());
    Ok(runs
        .iter()
        .zip(lists)
        .map(|(&((mean, exposure), d), per_block)| {
            let per = blocks.iter().zip(per_block).map(|(block, lists)| {
                let name = block.path.rsplit('|').next().unwrap_or(&block.path).to_string();
                let l = variety::Lists { globals: cache.globals(block), dim: cache.dim(), lists };
                (name, variety::category(&l))
            });
            variety::summarise(d, mean.is_some(), exposure, per.collect())
        })
        .chain(settings.iter().zip(shared).map(|(&d, per_block)| {
            let per = blocks.iter().zip(per_block).map(|(block, s)| {
                let name = block.path.rsplit('|').next().unwrap_or(&block.path).to_string();
                let l = variety::Lists { globals: cache.globals(block), dim: cache.dim(), lists: s.lists };
                let c = variety::category(&l);
                let replaced = s.replaced as f64 / s.places.max(1) as f64;
                (name, variety::CategoryVariety { replaced, merged: s.merged, ..c })
            });
            let v = variety::summarise(d, shared_how.0.is_some(), shared_how.1, per.collect());
            variety::Variety { max_share: Some(rotation::DEFAULT_MAX_SHARE), ..v }
        }))
        .collect())
}

/// The catalog check's running state: the cache, its labels, and one rank per trial.
struct CatalogCheck<'a> {
    cache: &'a ProductCache,
    labels: Vec<&'a str>,
    distances: Vec<f32>,
    /// (coarse label, model's rank, random's expected rank)
    ranks: Vec<(&'static str, f64, f64)>,
}

impl<'a> CatalogCheck<'a> {
    fn new(cache: &'a ProductCache) -> Result<CatalogCheck<'a>, EvalError> {
        let labels: Vec<&str> =
            cache.products().iter().map(|p| p.entry.fields.get("label").map_or("", String::as_str)).collect();
        if labels.iter().all(|l| l.is_empty()) {
            return Err(EvalError::NoLabels);
        }
        Ok(CatalogCheck { cache, labels, distances: vec![0.0; cache.len()], ranks: Vec::new() })
    }

    fn add(
        &mut self,
        pair: &Pair,
        scene: &crate::embedding::SceneEmbedding,
        folder: &ModelFolder,
    ) -> Result<(), EvalError> {
        let Some(coarse) = leakage::coarse_label(&pair.label) else { return Ok(()) };
        let products = self.cache.products();
        let matches: Vec<bool> = products
            .iter()
            .zip(&self.labels)
            .map(|(p, &l)| p.entry.category == pair.category && l == coarse)
            .collect();
        if !matches.contains(&true) {
            return Ok(());
        }
        for block in self.cache.categories() {
            let scores = crate::recommend::score_block(scene, self.cache, folder.category_keys(), block)?;
            for s in scores {
                self.distances[block.start + s.index] = s.distance;
            }
        }
        if let Some((rank, random)) = leakage::first_match_rank(&self.distances, &matches) {
            self.ranks.push((coarse, rank as f64, random));
        }
        Ok(())
    }

    fn finish(self) -> CatalogReport {
        // (trials, model's median rank, random's median expected rank)
        let summary = |label: Option<&str>| {
            let (model, random): (Vec<f64>, Vec<f64>) =
                self.ranks.iter().filter(|r| label.is_none_or(|l| l == r.0)).map(|r| (r.1, r.2)).unzip();
            (model.len(), leakage::median(&model), leakage::median(&random))
        };
        let labels: std::collections::BTreeSet<&str> = self.ranks.iter().map(|r| r.0).collect();
        let (trials, median_rank, random_median_rank) = summary(None);
        let better = self.ranks.iter().filter(|r| r.1 < r.2).count();
        CatalogReport {
            catalog_products: self.cache.len(),
            trials,
            median_rank,
            random_median_rank,
            better_than_random: better as f64 / trials.max(1) as f64,
            per_label: labels.into_iter().map(|l| (l.to_string(), summary(Some(l)))).collect(),
        }
    }
}

fn score_candidates(
    folder: &ModelFolder,
    category: &str,
    scene: &crate::embedding::SceneEmbedding,
    candidates: &[&ProductEmbedding],
) -> Result<[Score; 5], EvalError> {
    let globals: Vec<f32> = candidates.iter().flat_map(|c| c.global.iter().copied()).collect();
    let per_product: Vec<f32> = candidates.iter().flat_map(|c| c.key.iter().copied()).collect();
    let keys = match folder.manifest.attention {
        AttentionMode::Product => Keys::PerProduct(&per_product),
        AttentionMode::Category => Keys::Category(
            folder.category_key(category).ok_or_else(|| EvalError::NoCategoryKey(category.into()))?,
        ),
    };
    let s = rank::score(scene, &Products { globals: &globals, keys });
    Ok([s[0], s[1], s[2], s[3], s[4]])
}

/// A candidate product's embeddings: of its photo, and of the photo under the photometric
/// check when that check runs.
#[derive(Clone)]
struct Candidate {
    plain: ProductEmbedding,
    changed: Option<ProductEmbedding>,
}

/// Product embeddings, each product decoded and embedded once; `None` for an unreadable image.
struct ProductLookup<'a> {
    model: ProductModel,
    data: &'a Dataset,
    folder: &'a ModelFolder,
    /// `Some(seed)`: also embed the photometrically changed photo.
    photometric: Option<u64>,
    memo: HashMap<String, Option<Candidate>>,
}

impl ProductLookup<'_> {
    fn get(&mut self, id: &str) -> Result<Option<Candidate>, ModelError> {
        if let Some(e) = self.memo.get(id) {
            return Ok(e.clone());
        }
        let img = std::fs::read(self.data.product_path(id)).ok().and_then(|b| preprocess::decode(&b).ok());
        let input = &self.folder.manifest.input;
        let mut pixels = Vec::new();
        let candidate = match img {
            Some(img)
                if preprocess::to_model_input(&img, None, input.width, input.height, &mut pixels).is_ok() =>
            {
                let plain = self.model.embed(&pixels)?.remove(0);
                let changed = match self.photometric {
                    Some(seed) => {
                        Photometric::for_product(id, seed).apply(&mut pixels);
                        Some(self.model.embed(&pixels)?.remove(0))
                    }
                    None => None,
                };
                Some(Candidate { plain, changed })
            }
            _ => None,
        };
        self.memo.insert(id.to_string(), candidate.clone());
        Ok(candidate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_query(bbox: [f32; 4], expected: Option<[f32; 4]>) {
        assert_eq!(query_rect(bbox), expected);
    }

    #[test]
    fn query_is_the_largest_free_side() {
        check_query([0.2, 0.3, 0.6, 0.7], Some([0.6, 0.0, 1.0, 1.0])); // right: 0.4
        check_query([0.1, 0.6, 0.9, 0.9], Some([0.0, 0.0, 1.0, 0.6])); // above: 0.6
        check_query([0.05, 0.05, 0.95, 0.95], None); // every side under 10%
        check_query([0.3, 0.0, 0.7, 1.0], Some([0.0, 0.0, 0.3, 1.0])); // left wins the tie with right
    }

    #[test]
    fn pixels_round_and_stay_inside() {
        assert_eq!(to_pixels([0.6, 0.0, 1.0, 1.0], 100, 50), Rect { x: 60, y: 0, width: 40, height: 50 });
        assert_eq!(to_pixels([0.999, 0.0, 1.0, 0.001], 10, 10), Rect { x: 9, y: 0, width: 1, height: 1 });
    }

    fn pair(scene: &str, category: &str, bbox: [f32; 4]) -> Pair {
        Pair {
            scene: scene.into(),
            product: format!("{scene}-{category}"),
            bbox,
            label: String::new(),
            category: category.into(),
        }
    }

    #[test]
    fn plan_draws_from_other_scenes_of_the_category() {
        let ok = [0.5, 0.5, 0.9, 0.9];
        let mut pairs: Vec<Pair> = (0..6).map(|i| pair(&format!("s{i}"), "shoes", ok)).collect();
        pairs.push(pair("s0", "hats", ok)); // alone in its category
        pairs.push(pair("s1", "shoes", [0.02, 0.02, 0.98, 0.98])); // query too small
        let p = plan(&pairs, 0);
        assert_eq!((p.trials.len(), p.dropped_few_candidates, p.dropped_small_query), (6, 1, 1));
        for t in &p.trials {
            let scene = &pairs[t.pair].scene;
            let others = t.negatives.iter().chain([&t.auc_negative]);
            assert!(others.clone().all(|&n| &pairs[n].scene != scene && pairs[n].category == "shoes"));
            let mut n = t.negatives.to_vec();
            n.dedup();
            assert_eq!(n.len(), 3);
        }
        assert_eq!(plan(&pairs, 0), p, "same seed, same trials");
        assert_ne!(plan(&pairs, 1).trials, p.trials);
    }

    #[test]
    fn tally_counts_strict_wins_and_half_ties() {
        let mut t = Tally::default();
        t.add(0, [0.1, 0.2, 0.3, 0.4, 0.5]); // correct, auc win
        t.add(0, [0.2, 0.2, 0.3, 0.4, 0.2]); // tie: not correct, auc 1/2
        t.add(1, [0.5, 0.2, 0.3, 0.4, 0.1]); // wrong, auc loss
        assert_eq!((t.fitb_correct(), t.auc_wins(), t.trials()), (1, 1.5, 3));
    }

    fn outcomes(pattern: &[(u32, bool)]) -> Vec<Outcome> {
        pattern
            .iter()
            .map(|&(scene, correct)| Outcome { scene, correct, auc: correct as u8 as f64 })
            .collect()
    }

    #[test]
    fn bootstrap_brackets_the_estimate_and_narrows_with_more_scenes() {
        // 40 of 100 scenes right, one trial each.
        let few: Vec<(u32, bool)> = (0..100).map(|s| (s, s % 5 < 2)).collect();
        let (f, a) = bootstrap(&outcomes(&few));
        assert!(f[0] < 0.4 && 0.4 < f[1] && f[0] > 0.25 && f[1] < 0.55, "{f:?}");
        assert_eq!(f, a, "the same outcomes give the same interval");
        let many: Vec<(u32, bool)> = (0..1000).map(|s| (s, s % 5 < 2)).collect();
        let (g, _) = bootstrap(&outcomes(&many));
        assert!(g[0] < 0.4 && 0.4 < g[1] && g[1] - g[0] < (f[1] - f[0]) / 2.0, "{g:?} against {f:?}");
        assert_eq!(bootstrap(&outcomes(&[(3, true), (9, true)])).0, [1.0, 1.0]);
        assert_eq!(bootstrap(&[]), ([0.0; 2], [0.0; 2]));
    }

    #[test]
    fn bootstrap_resamples_scenes_not_trials() {
        // The same 40% of trials right, but in 20 scenes of 5 trials that agree: fewer independent
        // draws, so a wider interval than 100 scenes of one trial.
        let single: Vec<(u32, bool)> = (0..100).map(|s| (s, s % 5 < 2)).collect();
        let grouped: Vec<(u32, bool)> = (0..100).map(|t| (t / 5, (t / 5) % 5 < 2)).collect();
        let (a, b) = (bootstrap(&outcomes(&single)).0, bootstrap(&outcomes(&grouped)).0);
        assert!(b[1] - b[0] > 1.5 * (a[1] - a[0]), "grouped {b:?}, single {a:?}");
    }

    #[test]
    fn bootstrap_matches_its_python_twin() {
        // models/ctl.py asserts the same interval for the same outcomes (`bootstrap`).
        let pattern: Vec<(u32, bool)> = (0..60).map(|t| (t / 3, (t * 7) % 11 < 5)).collect();
        let (f, _) = bootstrap(&outcomes(&pattern));
        assert_eq!(f, [23.0 / 60.0, 31.0 / 60.0]);
    }
}
