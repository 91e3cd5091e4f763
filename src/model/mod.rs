//! The model: a folder with `manifest.toml` and ONNX graph(s), run through tract.
//!
//! This is the only module that knows tract. Each graph is loaded, shape-fixed, optimised and
//! made runnable once; its `SimpleState` is reused for every call. It must not decode images
//! (that is `preprocess`) nor rank anything (that is `rank`).

pub mod depthwise;
pub mod int8;
pub mod manifest;
mod ops;
pub mod qconv;
pub mod qdq;
pub mod scenes;
pub mod sqdist;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use tract_onnx::prelude::*;

pub use manifest::Manifest;
use manifest::ManifestError;

use crate::embedding::{AttentionMode, CategoryKeys, ProductEmbedding, SceneEmbedding};

/// Bumped whenever `preprocess` changes what pixels a graph sees, so old caches are refused.
pub const PREPROCESS_VERSION: u32 = 2;

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error("cannot read graph {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("graph {path} does not match its manifest: sha256 is {actual}, manifest says {expected}")]
    HashMismatch { path: PathBuf, expected: String, actual: String },
    #[error("graph {path}: {message}")]
    Graph { path: PathBuf, message: String },
    #[error("graph {path}: output {output} has shape {actual:?}, the manifest implies {expected:?}")]
    Shape { path: PathBuf, output: String, expected: Vec<usize>, actual: Vec<usize> },
    #[error("category keys {path}: {message}")]
    CategoryKeys { path: PathBuf, message: String },
    #[error("mean scene {path}: {message}")]
    MeanScene { path: PathBuf, message: String },
    #[error("reference scenes {path}: {message}")]
    ReferenceScenes { path: PathBuf, message: String },
    #[error("input has {actual} values, the model takes {expected} ({what})")]
    Input { expected: usize, actual: usize, what: String },
    #[error("inference failed: {0}")]
    Run(String),
    #[error("reference check {path}: {message}")]
    Reference { path: PathBuf, message: String },
}

/// The folder: manifest, the per-category keys (category mode) and the graphs' location.
#[derive(Debug, Clone)]
pub struct ModelFolder {
    pub dir: PathBuf,
    pub manifest: Manifest,
    category_keys: CategoryKeys,
    mean_scene: Option<Vec<f32>>,
    /// The reference scenes' path and count.
    reference_scenes: Option<(PathBuf, usize)>,
}

impl ModelFolder {
    pub fn open(dir: &Path) -> Result<ModelFolder, ModelError> {
        let manifest = Manifest::load(dir)?;
        let category_keys = match &manifest.category_keys {
            Some(file) => read_category_keys(&dir.join(file), manifest.dim)?,
            None => BTreeMap::new(),
        };
        let mean_scene = match &manifest.mean_scene {
            Some(file) => Some(read_mean_scene(&dir.join(file), manifest.dim)?),
            None => None,
        };
        let reference_scenes = match &manifest.reference_scenes {
            Some(file) => Some(check_reference_scenes(&dir.join(file), &manifest)?),
            None => None,
        };
        Ok(ModelFolder { dir: dir.to_path_buf(), manifest, category_keys, mean_scene, reference_scenes })
    }

    /// The reference scenes' file and count (the manifest's `reference-scenes`), checked as far as
    /// its header and length when the folder was opened.
    pub fn reference_scenes_file(&self) -> Option<(&Path, usize)> {
        self.reference_scenes.as_ref().map(|(p, n)| (p.as_path(), *n))
    }

    /// Reads and fully checks the reference scenes (`None` when the folder has none).
    pub fn reference_scenes(&self) -> Result<Option<scenes::ReferenceScenes>, ModelError> {
        let Some((path, _)) = self.reference_scenes_file() else { return Ok(None) };
        let fail = |message: String| ModelError::ReferenceScenes { path: path.to_path_buf(), message };
        let bytes = std::fs::read(path).map_err(|e| fail(e.to_string()))?;
        let m = &self.manifest;
        scenes::ReferenceScenes::decode(bytes, m.dim, m.regions).map(Some).map_err(|e| fail(e.to_string()))
    }

    /// The training scenes' mean (the manifest's `mean-scene`), for `rank::correct_hubs`.
    pub fn mean_scene(&self) -> Option<&[f32]> {
        self.mean_scene.as_deref()
    }

    /// The learned key of a category (category mode); `None` for an unknown category.
    pub fn category_key(&self, category: &str) -> Option<&[f32]> {
        self.category_keys.get(category).map(Vec::as_slice)
    }

    /// Every category's learned key (empty for a product-key model), as the ranking takes them.
    pub fn category_keys(&self) -> &CategoryKeys {
        &self.category_keys
    }

    /// Identifies everything that shapes a cached product embedding: a cache built under another
    /// fingerprint must be rebuilt.
    pub fn product_fingerprint(&self) -> [u8; 32] {
        let m = &self.manifest;
        let mut h = Sha256::new();
        for part in [
            m.product.sha256.as_str(),
            m.product.global.as_str(),
            m.product.key.as_deref().unwrap_or(""),
            m.attention.as_str(),
            m.input.pixels.as_str(),
            m.input.resize.as_str(),
        ] {
            h.update(part.as_bytes());
            h.update([0]);
        }
        h.update((m.input.width as u64).to_le_bytes());
        h.update((m.input.height as u64).to_le_bytes());
        h.update((m.dim as u64).to_le_bytes());
        h.update(PREPROCESS_VERSION.to_le_bytes());
        h.finalize().into()
    }

    /// Values in one image of model input: 3 x height x width.
    pub fn input_len(&self) -> usize {
        3 * self.manifest.input.width * self.manifest.input.height
    }

    fn graph_path(&self, file: &str, sha256: &str) -> Result<PathBuf, ModelError> {
        let path = self.dir.join(file);
        let bytes = std::fs::read(&path).map_err(|source| ModelError::Read { path: path.clone(), source })?;
        let actual = hex(&Sha256::digest(&bytes));
        if !actual.eq_ignore_ascii_case(sha256) {
            return Err(ModelError::HashMismatch { path, expected: sha256.to_string(), actual });
        }
        Ok(path)
    }
}

fn read_category_keys(path: &Path, dim: usize) -> Result<BTreeMap<String, Vec<f32>>, ModelError> {
    let fail = |message: String| ModelError::CategoryKeys { path: path.to_path_buf(), message };
    let keys: BTreeMap<String, Vec<f32>> = read_json(path).map_err(fail)?;
    if let Some((cat, k)) = keys.iter().find(|(_, k)| k.len() != dim) {
        return Err(fail(format!("key of {cat:?} has {} values, dim is {dim}", k.len())));
    }
    Ok(keys)
}

fn check_reference_scenes(path: &Path, m: &Manifest) -> Result<(PathBuf, usize), ModelError> {
    use std::io::Read;
    let fail = |message: String| ModelError::ReferenceScenes { path: path.to_path_buf(), message };
    let mut file = std::fs::File::open(path).map_err(|e| fail(e.to_string()))?;
    let len = file.metadata().map_err(|e| fail(e.to_string()))?.len() as usize;
    let mut head = Vec::with_capacity(64);
    file.by_ref().take(64).read_to_end(&mut head).map_err(|e| fail(e.to_string()))?;
    let count = scenes::check_header(&head, len, m.dim, m.regions).map_err(|e| fail(e.to_string()))?;
    Ok((path.to_path_buf(), count))
}

fn read_mean_scene(path: &Path, dim: usize) -> Result<Vec<f32>, ModelError> {
    let fail = |message: String| ModelError::MeanScene { path: path.to_path_buf(), message };
    let mean: Vec<f32> = read_json(path).map_err(fail)?;
    if mean.len() != dim {
        return Err(fail(format!("{} values, dim is {dim}", mean.len())));
    }
    if let Some(v) = mean.iter().find(|v| !v.is_finite()) {
        return Err(fail(format!("{v} is not a finite number")));
    }
    Ok(mean)
}

/// A model folder's JSON data file, or why it cannot be read (the caller names the file).
fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    serde_json::from_str(&text).map_err(|e| e.to_string())
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Runs every graph's matrix products on `n` threads from now on (1: on the calling thread).
/// Process-wide: call it once, before the first inference.
pub fn set_threads(n: usize) {
    use tract_linalg::multithread::{set_default_executor, Executor};
    set_default_executor(if n > 1 {
        Executor::multithread_with_name(n, "lookd-infer")
    } else {
        Executor::SingleThread
    });
}

/// Whose kernels a loaded graph runs where lookd has its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernels {
    /// lookd's: [`depthwise`] (with the clip after it folded in) and [`sqdist`], swapped in
    /// after decluttering; tract optimises the rest.
    Lookd,
    /// lookd's squared distances, tract's depthwise convolution (on aarch64 tract runs it
    /// channel-last with its own NEON kernel).
    TractDepthwise,
    /// tract's alone, as tract optimises the graph.
    Tract,
}

impl Kernels {
    /// What lookd runs unless told otherwise. On x86-64, lookd's kernels (BENCHMARKS.md: the
    /// depthwise layers in under a third of tract's time). On aarch64, tract's own depthwise
    /// path, which runs channel-last with its NEON kernel there: without an ARM board, the
    /// instructions one inference executes under qemu as a Cortex-A72 decided it
    /// (`bench/aarch64-insns`: 201.9 M against 215.9 M with lookd's NEON kernel on all 16
    /// layers, 240.9 M with tract's kernels alone). lookd's squared distances run on both.
    #[cfg(not(target_arch = "aarch64"))]
    pub const DEFAULT: Kernels = Kernels::Lookd;
    #[cfg(target_arch = "aarch64")]
    pub const DEFAULT: Kernels = Kernels::TractDepthwise;

    /// The environment's choice (`LOOKD_KERNELS=lookd|tract-depthwise|tract`, to compare on a
    /// board), else [`Kernels::DEFAULT`]. A value that is none of those is an error.
    pub fn configured() -> Result<Kernels, ModelError> {
        match std::env::var("LOOKD_KERNELS") {
            Ok(v) if !v.is_empty() => v.parse().map_err(|e| ModelError::Run(format!("LOOKD_KERNELS: {e}"))),
            _ => Ok(Kernels::DEFAULT),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Kernels::Lookd => "lookd",
            Kernels::TractDepthwise => "tract-depthwise",
            Kernels::Tract => "tract",
        }
    }
}

impl std::str::FromStr for Kernels {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        [Kernels::Lookd, Kernels::TractDepthwise, Kernels::Tract]
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| format!("kernels are `lookd`, `tract-depthwise` or `tract`, not {s:?}"))
    }
}

/// One optimised graph with its reusable state.
struct Runner {
    path: PathBuf,
    state: TypedSimpleState,
    batch: usize,
    per_image: usize,
    shape: [usize; 4],
}

/// The ONNX file at `path` as tract reads it, its quantized convolutions folded to integers when
/// `int8` says so. The file's protobuf (27 MB for the shipped model) is dropped on return, before
/// the graph is typed and optimised: held until then, it raised `lookd run`'s peak memory from 95
/// to 120 MiB.
fn parse(path: &Path, int8: qconv::Int8Conv) -> TractResult<InferenceModel> {
    let onnx = tract_onnx::onnx();
    let mut proto = onnx.proto_model_for_path(path)?;
    if int8 != qconv::Int8Conv::Float {
        if let Some(g) = proto.graph.as_mut() {
            let folded = qconv::fold(g, int8 == qconv::Int8Conv::Lookd);
            if !folded.convs.is_empty() {
                log::debug!("{}: {} convolutions run as integers", path.display(), folded.convs.len());
            }
        }
    }
    onnx.model_for_proto_model(&proto)
}

impl Runner {
    fn load(
        path: PathBuf,
        input: &manifest::InputSpec,
        batch: usize,
        outputs: &[&str],
        (kernel, isa): (Kernels, int8::Isa),
    ) -> Result<Runner, ModelError> {
        let fail = |e: TractError| ModelError::Graph { path: path.clone(), message: format!("{e:#}") };
        let shape = [batch, 3, input.height, input.width];
        let int8 = qconv::Int8Conv::configured()?;
        let mut graph = parse(&path, int8).map_err(fail)?;
        graph.set_input_fact(0, InferenceFact::dt_shape(f32::datum_type(), shape)).map_err(fail)?;
        graph.select_outputs_by_name(outputs).map_err(fail)?;
        let mut typed = graph.into_typed().map_err(fail)?;
        // Before anything declutters: tract 0.23.9 folds a Softmax or Pad between quantisation
        // nodes as if it were element-wise (qdq.rs, docs/tract-qdq.md).
        let guarded = qdq::guard(&mut typed).map_err(fail)?;
        if guarded > 0 {
            log::debug!(
                "{}: {guarded} dequantisations kept out of tract's lookup-table fold",
                path.display()
            );
        }
        if int8 == qconv::Int8Conv::Lookd {
            let swapped = int8::swap_in(&mut typed, isa, depthwise::Isa::detect()).map_err(fail)?;
            if swapped.dense + swapped.depthwise > 0 {
                log::debug!("{}: lookd's int8 kernels run {swapped:?}", path.display());
            }
        }
        if kernel == Kernels::Lookd {
            depthwise::declutter_channels_first(&mut typed).map_err(fail)?;
            depthwise::swap_in(&mut typed, depthwise::Isa::detect()).map_err(fail)?;
        } else {
            typed.declutter().map_err(fail)?;
        }
        if kernel != Kernels::Tract {
            sqdist::swap_in(&mut typed).map_err(fail)?;
        }
        let plan = typed.into_optimized().map_err(fail)?.into_runnable().map_err(fail)?;
        let state = TypedSimpleState::new(&plan).map_err(fail)?;
        Ok(Runner { path, state, batch, per_image: 3 * input.height * input.width, shape })
    }

    fn output_shapes(&self) -> Vec<Vec<usize>> {
        let model = self.state.model();
        (0..model.outputs.len())
            .map(|i| {
                model
                    .output_fact(i)
                    .ok()
                    .and_then(|f| f.shape.as_concrete().map(|s| s.to_vec()))
                    .unwrap_or_default()
            })
            .collect()
    }

    fn check_shapes(&self, names: &[&str], expected: &[Vec<usize>]) -> Result<(), ModelError> {
        for ((name, want), got) in names.iter().zip(expected).zip(self.output_shapes()) {
            if *want != got {
                return Err(ModelError::Shape {
                    path: self.path.clone(),
                    output: name.to_string(),
                    expected: want.clone(),
                    actual: got,
                });
            }
        }
        Ok(())
    }

    /// Runs `pixels` (`batch` images, NCHW, RGB 0..255) and returns each output as flat f32.
    fn run(&mut self, pixels: &[f32]) -> Result<Vec<Vec<f32>>, ModelError> {
        let input = self.input(pixels)?;
        let outputs = self.state.run(input).map_err(|e| ModelError::Run(format!("{e:#}")))?;
        outputs
            .iter()
            .map(|t| {
                t.try_as_plain_ram()
                    .and_then(|v| v.as_slice::<f32>().map(<[f32]>::to_vec))
                    .map_err(|e| ModelError::Run(format!("{e:#}")))
            })
            .collect()
    }

    /// `pixels` as the graph's input, after checking there are exactly `batch` images.
    fn input(&self, pixels: &[f32]) -> Result<TVec<TValue>, ModelError> {
        if pixels.len() != self.batch * self.per_image {
            return Err(ModelError::Input {
                expected: self.batch * self.per_image,
                actual: pixels.len(),
                what: format!("{} image(s) of {:?}", self.batch, &self.shape[1..]),
            });
        }
        let input = Tensor::from_shape(&self.shape, pixels).map_err(|e| ModelError::Run(format!("{e:#}")))?;
        Ok(tvec!(input.into()))
    }

    /// [`Runner::run`], adding each operator's time to `per_op` (name -> total ms, calls).
    fn profile(
        &mut self,
        pixels: &[f32],
        per_op: &mut BTreeMap<String, (f64, u32)>,
        per_node: &mut BTreeMap<String, (f64, u32)>,
    ) -> Result<(), ModelError> {
        let input = self.input(pixels)?;
        self.state
            .run_plan_with_eval(input, |ctx, op_state, node, inputs| {
                let t = std::time::Instant::now();
                let out = tract_onnx::tract_core::plan::eval(ctx, op_state, node, inputs);
                let ms = t.elapsed().as_secs_f64() * 1e3;
                let e = per_op.entry(node.op().name().to_string()).or_default();
                e.0 += ms;
                e.1 += 1;
                let e = per_node.entry(format!("{} {}", node.op().name(), node.name)).or_default();
                e.0 += ms;
                e.1 += 1;
                out
            })
            .map_err(|e| ModelError::Run(format!("{e:#}")))?;
        Ok(())
    }
}

/// The scene graph, fixed at one image per call.
pub struct SceneModel {
    runner: Runner,
    dim: usize,
}

impl SceneModel {
    pub fn load(folder: &ModelFolder) -> Result<SceneModel, ModelError> {
        SceneModel::load_with(folder, Kernels::configured()?)
    }

    pub fn load_with(folder: &ModelFolder, kernel: Kernels) -> Result<SceneModel, ModelError> {
        SceneModel::load_with_int8(folder, kernel, int8::Isa::configured()?)
    }

    /// With the vector unit of lookd's int8 convolutions chosen (an int8 model's).
    pub fn load_with_int8(
        folder: &ModelFolder,
        kernel: Kernels,
        isa: int8::Isa,
    ) -> Result<SceneModel, ModelError> {
        let m = &folder.manifest;
        let path = folder.graph_path(&m.scene.graph, &m.scene.sha256)?;
        let names = [m.scene.global.as_str(), m.scene.regions.as_str(), m.scene.keys.as_str()];
        let runner = Runner::load(path, &m.input, 1, &names, (kernel, isa))?;
        let (d, r) = (m.dim, m.regions);
        runner.check_shapes(&names, &[vec![1, d], vec![1, r, d], vec![1, r, d]])?;
        Ok(SceneModel { runner, dim: d })
    }

    /// Embeds one preprocessed image (3 x H x W floats, RGB 0..255).
    pub fn embed(&mut self, pixels: &[f32]) -> Result<SceneEmbedding, ModelError> {
        let mut out = self.runner.run(pixels)?.into_iter();
        let mut next = || out.next().unwrap_or_default();
        Ok(SceneEmbedding { dim: self.dim, global: next(), regions: next(), keys: next() })
    }

    /// Runs one image and adds each operator's time to `per_op` (name -> total ms, calls): where
    /// the scene graph's time goes, as tract runs it after optimisation.
    /// The same per node (`"op node-name"`) into `per_node`.
    pub fn profile(
        &mut self,
        pixels: &[f32],
        per_op: &mut BTreeMap<String, (f64, u32)>,
        per_node: &mut BTreeMap<String, (f64, u32)>,
    ) -> Result<(), ModelError> {
        self.runner.profile(pixels, per_op, per_node)
    }
}

/// The product graph, fixed at `batch` images per call.
pub struct ProductModel {
    runner: Runner,
    dim: usize,
    with_key: bool,
}

impl ProductModel {
    pub fn load(folder: &ModelFolder, batch: usize) -> Result<ProductModel, ModelError> {
        let m = &folder.manifest;
        let path = folder.graph_path(&m.product.graph, &m.product.sha256)?;
        let with_key = m.attention == AttentionMode::Product;
        let mut names = vec![m.product.global.as_str()];
        if with_key {
            names.extend(m.product.key.as_deref());
        }
        let runner = Runner::load(
            path,
            &m.input,
            batch.max(1),
            &names,
            (Kernels::configured()?, int8::Isa::configured()?),
        )?;
        let expected = vec![vec![batch.max(1), m.dim]; names.len()];
        runner.check_shapes(&names, &expected)?;
        Ok(ProductModel { runner, dim: m.dim, with_key })
    }

    pub fn batch(&self) -> usize {
        self.runner.batch
    }

    /// Embeds exactly `batch()` preprocessed images laid one after another.
    pub fn embed(&mut self, pixels: &[f32]) -> Result<Vec<ProductEmbedding>, ModelError> {
        let out = self.runner.run(pixels)?;
        let d = self.dim;
        Ok((0..self.runner.batch)
            .map(|i| ProductEmbedding {
                global: out[0][i * d..(i + 1) * d].to_vec(),
                key: if self.with_key { out[1][i * d..(i + 1) * d].to_vec() } else { Vec::new() },
            })
            .collect())
    }
}

/// The pixel pattern models/build_model.py feeds to onnxruntime for reference.json.
pub fn reference_pixels(width: usize, height: usize) -> Vec<f32> {
    let mut v = Vec::with_capacity(3 * width * height);
    for c in 0..3 {
        for y in 0..height {
            for x in 0..width {
                v.push(((x * 7 + y * 13 + c * 29) % 256) as f32);
            }
        }
    }
    v
}

/// Per-output largest absolute difference between tract and the folder's reference.json.
pub fn check_reference(folder: &ModelFolder) -> Result<Vec<(String, f32)>, ModelError> {
    check_reference_with(folder, &mut SceneModel::load(folder)?)
}

/// `check_reference` on a scene graph already loaded from `folder` (one that is then kept, so it
/// is not loaded twice).
pub fn check_reference_with(
    folder: &ModelFolder,
    scene: &mut SceneModel,
) -> Result<Vec<(String, f32)>, ModelError> {
    let path = folder.dir.join("reference.json");
    let fail = |message: String| ModelError::Reference { path: path.clone(), message };
    let text = std::fs::read_to_string(&path).map_err(|e| fail(e.to_string()))?;
    let reference: serde_json::Value = serde_json::from_str(&text).map_err(|e| fail(e.to_string()))?;
    let m = &folder.manifest;
    let pixels = reference_pixels(m.input.width, m.input.height);
    let scene = scene.embed(&pixels)?;
    let mut got: Vec<(&str, Vec<f32>)> =
        vec![(&m.scene.global, scene.global), (&m.scene.regions, scene.regions), (&m.scene.keys, scene.keys)];
    if let Some(key) = &m.product.key {
        let product = ProductModel::load(folder, 1)?.embed(&pixels)?.remove(0);
        got.push((key, product.key));
        // A product global of its own (heads that pool the regions) is checked too.
        if m.product.global != m.scene.global {
            got.push((&m.product.global, product.global));
        }
    }
    got.into_iter()
        .map(|(name, values)| {
            let want = flatten(&reference["outputs"][name]);
            if want.len() != values.len() {
                return Err(fail(format!(
                    "{name}: reference has {} values, tract gave {}",
                    want.len(),
                    values.len()
                )));
            }
            Ok((name.to_string(), max_abs_diff(&want, &values)))
        })
        .collect()
}

/// The largest |a - b|; NaN when either side has a NaN (`f32::max` would skip it, and a graph
/// that outputs NaN would pass its check).
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, |m, d| {
        if m.is_nan() || d.is_nan() {
            f32::NAN
        } else {
            m.max(d)
        }
    })
}

fn flatten(v: &serde_json::Value) -> Vec<f32> {
    match v {
        serde_json::Value::Array(items) => items.iter().flat_map(flatten).collect(),
        serde_json::Value::Number(n) => vec![n.as_f64().unwrap_or(f64::NAN) as f32],
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::max_abs_diff;

    #[test]
    fn a_nan_output_is_never_within_tolerance() {
        assert_eq!(max_abs_diff(&[1.0, 2.0], &[1.5, 2.0]), 0.5);
        assert!(max_abs_diff(&[1.0, f32::NAN], &[1.0, 2.0]).is_nan());
        assert!(max_abs_diff(&[f32::NAN, 1.0], &[1.0, 2.0]).is_nan(), "a NaN first is kept too");
        let within = max_abs_diff(&[1.0], &[f32::NAN]) <= 1e-4;
        assert!(!within, "NaN compares false with any tolerance");
    }
}
