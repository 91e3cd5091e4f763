//! The model folder: tract against onnxruntime's reference outputs, and refusing bad folders.

use std::path::Path;

use lookd::model::{check_reference, Kernels, ModelFolder, SceneModel};

use crate::tiny_model;

fn copy_tiny(to: &Path) {
    for f in ["manifest.toml", "embed.onnx", "reference.json"] {
        std::fs::copy(tiny_model().join(f), to.join(f)).unwrap();
    }
}

fn load_error(dir: &Path) -> String {
    match ModelFolder::open(dir).and_then(|f| SceneModel::load(&f).map(|_| ())) {
        Ok(()) => panic!("{} loaded", dir.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn tiny_model_agrees_with_onnxruntime() {
    let folder = ModelFolder::open(&tiny_model()).unwrap();
    let diffs = check_reference(&folder).unwrap();
    assert_eq!(diffs.len(), 4, "{diffs:?}");
    for (name, err) in diffs {
        assert!(err <= 1e-4, "{name}: {err}");
    }
}

#[test]
fn graph_not_matching_its_manifest_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    copy_tiny(dir.path());
    let mut bytes = std::fs::read(dir.path().join("embed.onnx")).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(dir.path().join("embed.onnx"), bytes).unwrap();
    let err = load_error(dir.path());
    assert!(err.contains("does not match its manifest: sha256 is"), "{err}");
}

#[test]
fn manifest_shapes_are_checked_against_the_graph() {
    let dir = tempfile::tempdir().unwrap();
    copy_tiny(dir.path());
    let m = std::fs::read_to_string(dir.path().join("manifest.toml")).unwrap();
    std::fs::write(dir.path().join("manifest.toml"), m.replace("regions = 4", "regions = 9")).unwrap();
    let err = load_error(dir.path());
    assert!(err.contains("output regions has shape [1, 4, 8], the manifest implies [1, 9, 8]"), "{err}");
}

/// The hubness correction's mean scene: read with the folder, its width and numbers checked, and
/// the shipped model carries one of the model's width.
#[test]
fn a_mean_scene_is_read_with_the_folder_and_a_bad_one_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    copy_tiny(dir.path());
    let path = dir.path().join("manifest.toml");
    let m = std::fs::read_to_string(&path).unwrap();
    assert_eq!(ModelFolder::open(dir.path()).unwrap().mean_scene(), None, "optional");
    std::fs::write(&path, m.replace("regions = 4\n", "regions = 4\nmean-scene = \"mean.json\"\n")).unwrap();
    let mean = dir.path().join("mean.json");
    std::fs::write(&mean, "[0.5, 0, 0, 0, 0, 0, 0, -0.25]").unwrap();
    let folder = ModelFolder::open(dir.path()).unwrap();
    assert_eq!(folder.mean_scene().unwrap(), [0.5, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -0.25]);
    for (text, expected) in [
        (None, "No such file"),
        (Some("[0.5, 0.1]"), "2 values, dim is 8"),
        (Some("{\"mean\": 1}"), "invalid type"),
        (Some("[1e39, 0, 0, 0, 0, 0, 0, 0]"), "inf is not a finite number"),
    ] {
        match text {
            Some(t) => std::fs::write(&mean, t).unwrap(),
            None => std::fs::remove_file(&mean).unwrap(),
        }
        let err = load_error(dir.path());
        assert!(err.contains("mean scene") && err.contains("mean.json") && err.contains(expected), "{err}");
    }
    let shipped = ModelFolder::open(&crate::default_model()).unwrap();
    assert_eq!(shipped.mean_scene().map(<[f32]>::len), Some(shipped.manifest.dim));
}

#[test]
fn manifest_errors_name_the_file_and_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    copy_tiny(dir.path());
    let path = dir.path().join("manifest.toml");
    let m = std::fs::read_to_string(&path).unwrap();
    for (text, expected) in [
        (m.replace("precision = \"f32\"", "precision = \"f32\"\ncolour = \"red\""), "unknown field `colour`"),
        (m.replace("attention = \"product\"", "attention = \"sideways\""), "unknown variant `sideways`"),
        (m.replace("format = 1", "format = 2"), "manifest format 2 is not supported"),
        (m.replace("key = \"key\"", ""), "attention = \"product\" needs product.key"),
    ] {
        std::fs::write(&path, text).unwrap();
        let err = load_error(dir.path());
        assert!(err.contains("manifest.toml") && err.contains(expected), "{err}");
    }
}

/// Every output of the folder's graph within 1e-4 of onnxruntime's reference outputs.
fn assert_agrees_with_onnxruntime(folder: &ModelFolder) {
    for (name, err) in check_reference(folder).unwrap() {
        assert!(err <= 1e-4, "{name}: {err}");
    }
}

#[test]
fn default_model_agrees_with_onnxruntime() {
    let folder = ModelFolder::open(&crate::default_model()).unwrap();
    assert_agrees_with_onnxruntime(&folder);
}

#[test]
fn the_f32_copy_agrees_with_onnxruntime() {
    let folder = ModelFolder::open(&crate::f32_model()).unwrap();
    assert_eq!(folder.manifest.precision, "f32");
    assert_agrees_with_onnxruntime(&folder);
}

/// The int8 copy of the shipped model (#28), run by lookd's integer kernels: it agrees with
/// onnxruntime's reference outputs (to 1e-4: in practice about 1e-7, the same integers as
/// onnxruntime's), and every vector unit this CPU has gives the same embeddings to the bit on a
/// real photo (the integer sums are exact and rounded alike).
#[test]
fn the_int8_copy_gives_the_same_embeddings_on_every_vector_unit() {
    let folder = ModelFolder::open(&crate::int8_model()).unwrap();
    assert_eq!(folder.manifest.precision, "int8");
    assert_agrees_with_onnxruntime(&folder);
    let pixels = lookd::model::reference_pixels(folder.manifest.input.width, folder.manifest.input.height);
    let isas = lookd::model::int8::Isa::available();
    assert!(!isas.is_empty());
    let mut first: Option<lookd::embedding::SceneEmbedding> = None;
    for isa in isas {
        let e = SceneModel::load_with_int8(&folder, Kernels::Lookd, isa).unwrap().embed(&pixels).unwrap();
        match &first {
            None => first = Some(e),
            Some(f) => {
                assert_eq!(f.global, e.global, "{}", isa.name());
                assert_eq!(f.regions, e.regions, "{}", isa.name());
                assert_eq!(f.keys, e.keys, "{}", isa.name());
            }
        }
    }
}

/// lookd's kernels (depthwise, squared distances) give the scene graph tract's own outputs, on a
/// real photo's pixels: to 1e-5 (the embeddings are unit vectors).
#[test]
fn lookds_kernels_give_the_outputs_of_tracts_own() {
    let folder = ModelFolder::open(&crate::f32_model()).unwrap();
    let m = &folder.manifest;
    let Some(data) = crate::shared_data() else { return };
    let scenes = data.join("ccp/scenes");
    let mut photos: Vec<_> = std::fs::read_dir(&scenes).unwrap().map(|e| e.unwrap().path()).collect();
    photos.sort();
    let img = lookd::preprocess::decode(&std::fs::read(&photos[0]).unwrap()).unwrap();
    let mut pixels = Vec::new();
    lookd::preprocess::to_model_input(&img, None, m.input.width, m.input.height, &mut pixels).unwrap();
    let ours = SceneModel::load_with(&folder, Kernels::Lookd).unwrap().embed(&pixels).unwrap();
    let tracts = SceneModel::load_with(&folder, Kernels::Tract).unwrap().embed(&pixels).unwrap();
    for (name, a, b) in [
        ("global", &ours.global, &tracts.global),
        ("regions", &ours.regions, &tracts.regions),
        ("keys", &ours.keys, &tracts.keys),
    ] {
        assert_eq!(a.len(), b.len());
        let worst = lookd::model::max_abs_diff(b, a);
        assert!(worst <= 1e-5, "{name}: {worst:e}");
    }
}
