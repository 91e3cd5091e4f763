//! Ranking throughput: one scene against P products, D = 128, R = 49, both attention modes.
//! `cargo bench --bench rank`. Targets (issue #6): linear in P; 100k products in the
//! category-key mode under 10 ms on the 2-core dev machine.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use lookd::embedding::SceneEmbedding;
use lookd::rank::{score, Keys, Products};
use lookd::rng::SplitMix64;

const D: usize = 128;
const R: usize = 49;

fn unit_rows(rng: &mut SplitMix64, n: usize) -> Vec<f32> {
    let mut v: Vec<f32> = (0..n * D).map(|_| rng.unit()).collect();
    for row in v.chunks_exact_mut(D) {
        let norm = row.iter().map(|x| x * x).sum::<f32>().sqrt();
        row.iter_mut().for_each(|x| *x /= norm);
    }
    v
}

fn ranking(c: &mut Criterion) {
    let mut rng = SplitMix64::new(1);
    let scene = SceneEmbedding {
        dim: D,
        global: unit_rows(&mut rng, 1),
        regions: unit_rows(&mut rng, R),
        keys: unit_rows(&mut rng, R),
    };
    let category_key = unit_rows(&mut rng, 1);
    let mut group = c.benchmark_group("rank");
    group.sample_size(10);
    for p in [1_000, 10_000, 100_000, 1_000_000] {
        let globals = unit_rows(&mut rng, p);
        let keys = unit_rows(&mut rng, p);
        group.throughput(Throughput::Elements(p as u64));
        group.bench_with_input(BenchmarkId::new("category-key", p), &p, |b, _| {
            b.iter(|| score(&scene, &Products { globals: &globals, keys: Keys::Category(&category_key) }))
        });
        group.bench_with_input(BenchmarkId::new("product-key", p), &p, |b, _| {
            b.iter(|| score(&scene, &Products { globals: &globals, keys: Keys::PerProduct(&keys) }))
        });
    }
    group.finish();
}

criterion_group!(benches, ranking);
criterion_main!(benches);
