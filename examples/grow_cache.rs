//! Writes a product cache of N products by repeating a real cache's rows (ids get a `~k`
//! suffix), for memory and ranking benchmarks at catalog sizes the shared photos do not reach.
//!
//! `cargo run --release --example grow_cache -- IN.cache N OUT.cache`

use std::path::PathBuf;

use lookd::cache::build::write_atomically;
use lookd::cache::codec::{encode, Record};
use lookd::cache::ProductCache;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [input, n, output] = args.as_slice() else {
        anyhow::bail!("usage: grow_cache IN.cache N OUT.cache");
    };
    let n: usize = n.parse()?;
    let cache = ProductCache::open(&PathBuf::from(input), None)?;
    let d = cache.dim();
    let mut base = Vec::with_capacity(cache.len());
    for block in cache.categories() {
        let globals = cache.globals(block);
        let keys = cache.keys(block);
        for (j, p) in cache.products()[block.start..block.start + block.len].iter().enumerate() {
            let key = keys.map(|k| k[j * d..(j + 1) * d].to_vec()).unwrap_or_default();
            base.push((p.clone(), globals[j * d..(j + 1) * d].to_vec(), key));
        }
    }
    anyhow::ensure!(!base.is_empty(), "{input} holds no products");
    let records = (0..n)
        .map(|i| {
            let (p, global, key) = &base[i % base.len()];
            let mut product = p.clone();
            if i >= base.len() {
                product.entry.id = format!("{}~{}", product.entry.id, i / base.len());
            }
            Record { product, global: global.clone(), key: key.clone() }
        })
        .collect();
    let header = lookd::cache::codec::decode(&std::fs::read(input)?)?.0;
    let bytes = encode(records, d, cache.attention(), header.regions, *cache.fingerprint(), cache.model_id());
    write_atomically(&PathBuf::from(output), &bytes)?;
    println!("wrote {output}: {n} products, {} bytes", bytes.len());
    Ok(())
}
