//! The frame path before the model, and start-up's cache load. `cargo bench --bench frame`.
//!
//! - a 1280x720 camera frame (YUYV, NV12, YU12, and MJPG from a real photo) to RGB, then to the
//!   model's 224x224 planar input, both ways: converted whole then stretched (before #15), and
//!   resized in YUV then converted (the daemon's camera path now);
//! - opening (mmap, checksum, metadata) a product cache of 3,781 and 100,000 products.

use std::time::SystemTime;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use lookd::cache::codec::{encode, Record};
use lookd::cache::{ProductCache, StoredProduct};
use lookd::capture::{Frame, PixelFormat};
use lookd::catalog::CatalogEntry;
use lookd::embedding::AttentionMode;
use lookd::preprocess::{self, pixel};
use lookd::rng::SplitMix64;

const W: u32 = 1280;
const H: u32 = 720;

fn photo() -> image::RgbImage {
    // A real photo when the shared data is there (JPEG statistics matter for decode time).
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/ccp/scenes/ccp-0002.jpg");
    let img = std::fs::read(path).ok().and_then(|b| preprocess::decode(&b).ok()).unwrap_or_else(|| {
        image::RgbImage::from_fn(640, 480, |x, y| image::Rgb([x as u8, y as u8, (x ^ y) as u8]))
    });
    image::imageops::resize(&img, W, H, image::imageops::FilterType::Triangle)
}

fn frames(c: &mut Criterion) {
    let rgb = photo();
    let mut jpeg = Vec::new();
    rgb.write_to(&mut std::io::Cursor::new(&mut jpeg), image::ImageFormat::Jpeg).unwrap();
    let yuyv: Vec<u8> = rgb
        .pixels()
        .collect::<Vec<_>>()
        .chunks_exact(2)
        .flat_map(|p| {
            let y = |q: &image::Rgb<u8>| {
                (16 + (66 * q[0] as u32 + 129 * q[1] as u32 + 25 * q[2] as u32) / 256) as u8
            };
            [y(p[0]), 128, y(p[1]), 128]
        })
        .collect();
    // 4:2:0 frames of the same photo: its luma, then grey chroma (the timing does not depend on it).
    let luma: Vec<u8> = yuyv.iter().step_by(2).copied().collect();
    let chroma = (W as usize / 2) * (H as usize / 2);
    let nv12: Vec<u8> = luma.iter().copied().chain(std::iter::repeat_n(128, 2 * chroma)).collect();
    let yu12 = nv12.clone();
    let mut group = c.benchmark_group("frame-1280x720");
    group.sample_size(20);
    for (name, format, pixels) in [
        ("yuyv", PixelFormat::Yuyv, yuyv),
        ("nv12", PixelFormat::Nv12, nv12),
        ("yu12", PixelFormat::Yu12, yu12),
        ("mjpg", PixelFormat::Mjpg, jpeg),
    ] {
        let frame = Frame { pixels, format, width: W, height: H, seq: 0, ts: SystemTime::UNIX_EPOCH };
        let mut input = Vec::new();
        group.bench_function(BenchmarkId::new("to-rgb", name), |b| b.iter(|| pixel::to_rgb(&frame).unwrap()));
        // What lookd did before #15: the whole frame to RGB, then stretched to the model's input.
        group.bench_function(BenchmarkId::new("to-model-input-224", name), |b| {
            b.iter(|| {
                let img = pixel::to_rgb(&frame).unwrap();
                preprocess::to_model_input(&img, None, 224, 224, &mut input).unwrap();
            })
        });
        // What the daemon does now: YUV resized before it is converted (pixel::model_image).
        group.bench_function(BenchmarkId::new("camera-to-model-input-224", name), |b| {
            b.iter(|| {
                let img = pixel::model_image(&frame, None, false, 224, 224).unwrap();
                preprocess::to_model_input(&img, None, 224, 224, &mut input).unwrap();
            })
        });
    }
    group.finish();
}

fn cache_file(dir: &std::path::Path, n: usize) -> std::path::PathBuf {
    let mut rng = SplitMix64::new(7);
    let records = (0..n)
        .map(|i| Record {
            product: StoredProduct {
                entry: CatalogEntry {
                    id: format!("p{i:06}"),
                    category: ["Apparel & Accessories|Shoes", "Apparel & Accessories|Clothing|Pants"][i % 2]
                        .into(),
                    image: format!("images/p{i:06}.jpg"),
                    line: 0,
                    fields: [("title".to_string(), format!("Product {i}"))].into(),
                },
                image_sha256: format!("{:064x}", i),
            },
            global: (0..128).map(|_| rng.unit()).collect(),
            key: (0..128).map(|_| rng.unit()).collect(),
        })
        .collect();
    let path = dir.join(format!("{n}.cache"));
    std::fs::write(&path, encode(records, 128, AttentionMode::Product, 49, [1; 32], "bench")).unwrap();
    path
}

fn cache_load(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let mut group = c.benchmark_group("cache-open");
    group.sample_size(10);
    for n in [3_781, 100_000] {
        let path = cache_file(dir.path(), n);
        group.bench_with_input(BenchmarkId::from_parameter(n), &path, |b, p| {
            b.iter(|| ProductCache::open(p, None).unwrap())
        });
    }
    group.finish();
}

criterion_group!(benches, frames, cache_load);
criterion_main!(benches);
