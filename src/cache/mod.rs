//! The on-device product embedding cache: one versioned, checksummed file, memory-mapped.
//!
//! `codec` is the pure format; this module opens files and checks them against the model;
//! `build` embeds a catalog into a new file. Opening a cache never writes; building one never
//! touches the previous file until the new one is complete (temp file + rename).

pub mod build;
pub mod codec;

use std::path::{Path, PathBuf};

pub use codec::{CategoryBlock, Exposure, StoredProduct};
use codec::{CodecError, Header, Meta};

use crate::embedding::AttentionMode;
use crate::model::hex;

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("cannot read cache {path}: {source}{}", build_hint(.source, .path))]
    Io { path: PathBuf, source: std::io::Error },
    #[error("cache {path} refused: {reason}; rebuild it with `lookd catalog build --catalog <catalog.csv> --model <model dir> --out {path}`")]
    Refused { path: PathBuf, reason: String },
    #[error("cannot write cache {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Catalog(#[from] crate::catalog::CatalogError),
    #[error(transparent)]
    Model(#[from] crate::model::ModelError),
    #[error("no product of {catalog} could be embedded, so no cache was written")]
    Empty { catalog: PathBuf },
}

enum Backing {
    Mapped(memmap2::Mmap),
    /// u64 words keep the float blocks aligned when the bytes live on the heap.
    Heap(Vec<u64>, usize),
}

impl Backing {
    /// Drops this process's resident pages that lie wholly inside `at..at + len` (mapped files
    /// only); they stay in the page cache, so touching them again is a minor fault, not a read.
    fn release(&self, at: usize, len: usize) {
        const PAGE: usize = 4096;
        let (start, end) = (at.next_multiple_of(PAGE), at + len);
        if end <= start {
            return;
        }
        let (at, len) = (start, end - start);
        #[cfg(unix)]
        if let Backing::Mapped(map) = self {
            // SAFETY: a read-only, file-backed shared mapping: MADV_DONTNEED only drops page-table
            // entries; later reads fault the same file contents back in.
            let dropped = unsafe { map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, at, len) };
            if let Err(e) = dropped {
                log::debug!("madvise(DONTNEED): {e}");
            }
        }
    }

    fn bytes(&self) -> &[u8] {
        match self {
            Backing::Mapped(m) => m,
            Backing::Heap(words, len) => &bytemuck::cast_slice(words)[..*len],
        }
    }
}

/// An opened, fully checked cache.
pub struct ProductCache {
    path: PathBuf,
    backing: Backing,
    header: Header,
    meta: Meta,
}

impl ProductCache {
    /// Maps and checks `path`; with `fingerprint`, refuses a cache built for another model.
    pub fn open(path: &Path, fingerprint: Option<&[u8; 32]>) -> Result<ProductCache, CacheError> {
        let file =
            std::fs::File::open(path).map_err(|source| CacheError::Io { path: path.into(), source })?;
        // SAFETY: lookd replaces caches by rename, never in place, so the mapped inode does not
        // change under us; a foreign writer truncating it is outside what we can guard against.
        let map = unsafe { memmap2::Mmap::map(&file) }
            .map_err(|source| CacheError::Io { path: path.into(), source })?;
        ProductCache::from_backing(path, Backing::Mapped(map), fingerprint)
    }

    /// A cache of no product for `folder`'s model, in memory: what a first start serves while its
    /// catalog is built beside the loop.
    pub fn empty(folder: &crate::model::ModelFolder) -> ProductCache {
        let m = &folder.manifest;
        let bytes = codec::encode(
            Vec::new(),
            m.dim,
            m.attention,
            m.regions,
            folder.product_fingerprint(),
            &m.model_id(),
        );
        ProductCache::from_bytes(&bytes, None).expect("an empty cache encodes and decodes")
    }

    /// Checks bytes already in memory (tests, fuzzing).
    pub fn from_bytes(bytes: &[u8], fingerprint: Option<&[u8; 32]>) -> Result<ProductCache, CacheError> {
        let mut words = vec![0u64; bytes.len().div_ceil(8)];
        bytemuck::cast_slice_mut::<u64, u8>(&mut words)[..bytes.len()].copy_from_slice(bytes);
        ProductCache::from_backing(Path::new("<memory>"), Backing::Heap(words, bytes.len()), fingerprint)
    }

    fn from_backing(
        path: &Path,
        backing: Backing,
        fingerprint: Option<&[u8; 32]>,
    ) -> Result<ProductCache, CacheError> {
        let refused = |reason: String| CacheError::Refused { path: path.into(), reason };
        // The checksum pass reads every page: behind it, mapped pages are given back, so
        // resident memory (peak included) holds only the categories actually ranked.
        let (header, meta) = codec::decode_with(backing.bytes(), &mut |at, len| backing.release(at, len))
            .map_err(|e: CodecError| refused(e.to_string()))?;
        // The metadata is parsed into `meta` now: its mapped bytes are not read again.
        backing.release(header.meta_at(), header.meta_len());
        if let Some(expected) = fingerprint {
            if &header.fingerprint != expected {
                return Err(refused(format!(
                    "it was built for model {} (fingerprint {}), the loaded model's fingerprint is {}",
                    meta.model_id,
                    &hex(&header.fingerprint)[..16],
                    &hex(expected)[..16]
                )));
            }
        }
        let cache = ProductCache { path: path.into(), backing, header, meta };
        if bytemuck::try_cast_slice::<u8, f32>(cache.block(cache.header.globals_at)).is_err() {
            return Err(refused("float block is misaligned".into()));
        }
        Ok(cache)
    }

    fn block(&self, at: usize) -> &[u8] {
        &self.backing.bytes()[at..at + self.header.count * self.header.dim * 4]
    }

    fn floats(&self, at: usize, rows: &CategoryBlock) -> &[f32] {
        let all: &[f32] = bytemuck::cast_slice(self.block(at));
        let d = self.header.dim;
        &all[rows.start * d..(rows.start + rows.len) * d]
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
    pub fn len(&self) -> usize {
        self.header.count
    }
    pub fn is_empty(&self) -> bool {
        self.header.count == 0
    }
    pub fn dim(&self) -> usize {
        self.header.dim
    }
    pub fn attention(&self) -> AttentionMode {
        self.header.attention
    }
    pub fn fingerprint(&self) -> &[u8; 32] {
        &self.header.fingerprint
    }
    pub fn model_id(&self) -> &str {
        &self.meta.model_id
    }
    pub fn products(&self) -> &[StoredProduct] {
        &self.meta.products
    }
    pub fn categories(&self) -> &[CategoryBlock] {
        &self.meta.categories
    }

    /// How the products' exposure was capped at build time (`None`: it was not).
    pub fn exposure(&self) -> Option<&Exposure> {
        self.meta.exposure.as_ref()
    }

    /// The exposure offsets of one category's rows (`rank::exposure_offsets`), if built with them.
    pub fn offsets(&self, rows: &CategoryBlock) -> Option<&[f32]> {
        self.meta.exposure.as_ref().map(|e| &e.offsets[rows.start..rows.start + rows.len])
    }

    /// The globals (`[len, D]`) of one category's rows.
    pub fn globals(&self, rows: &CategoryBlock) -> &[f32] {
        self.floats(self.header.globals_at, rows)
    }

    /// The per-product keys of one category's rows; `None` in the category-key mode.
    pub fn keys(&self, rows: &CategoryBlock) -> Option<&[f32]> {
        (self.header.attention == AttentionMode::Product).then(|| self.floats(self.header.keys_at, rows))
    }

    /// Finds a category by its full path, or by a case-insensitive name of its last segment
    /// ("shoes" for `Apparel & Accessories|Shoes`), or by a unique prefix of that name.
    pub fn find_category(&self, name: &str) -> Result<&CategoryBlock, String> {
        find_category(&self.meta.categories, name)
    }
}

/// What a missing cache's error adds: how to make one.
fn build_hint(source: &std::io::Error, path: &std::path::Path) -> String {
    if source.kind() == std::io::ErrorKind::NotFound {
        format!(
            "; build it with `lookd catalog build --catalog <catalog.csv> --model <model dir> --out {}`",
            path.display()
        )
    } else {
        String::new()
    }
}

/// Finds a category by its full path, the name of its last segment ("shoes"), its slug (the
/// MQTT topic's name: "coats-jackets"), all case-insensitive, or a unique prefix of the name.
pub fn find_category<'c>(categories: &'c [CategoryBlock], name: &str) -> Result<&'c CategoryBlock, String> {
    let wanted = name.trim().to_lowercase();
    let last = |c: &CategoryBlock| c.path.rsplit('|').next().unwrap_or("").trim().to_lowercase();
    let exact: Vec<_> = categories
        .iter()
        .filter(|c| {
            c.path.to_lowercase() == wanted || last(c) == wanted || crate::catalog::slug(&c.path) == wanted
        })
        .collect();
    let found = if exact.is_empty() {
        categories.iter().filter(|c| !wanted.is_empty() && last(c).starts_with(&wanted)).collect()
    } else {
        exact
    };
    match found.as_slice() {
        [one] => Ok(one),
        [] => {
            let names: Vec<String> = categories.iter().map(last).collect();
            Err(format!("unknown category {name:?}; the cache has: {}", names.join(", ")))
        }
        many => {
            let names: Vec<String> = many.iter().map(|c| last(c)).collect();
            Err(format!("ambiguous category {name:?}: it begins {}; say which", names.join(", ")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blocks() -> Vec<CategoryBlock> {
        [
            "Apparel & Accessories|Shoes",
            "Apparel & Accessories|Clothing|Shirts & Tops",
            "Apparel & Accessories|Clothing|Shorts",
        ]
        .iter()
        .enumerate()
        .map(|(i, p)| CategoryBlock { path: p.to_string(), start: i, len: 1 })
        .collect()
    }

    fn check(name: &str, expected: Result<&str, &str>) {
        let b = blocks();
        let got = find_category(&b, name).map(|c| c.path.as_str());
        match expected {
            Ok(path) => assert_eq!(got, Ok(path)),
            Err(prefix) => assert!(got.as_ref().is_err_and(|e| e.starts_with(prefix)), "{name}: {got:?}"),
        }
    }

    #[test]
    fn category_names() {
        check("shoes", Ok("Apparel & Accessories|Shoes"));
        check("Apparel & Accessories|Shoes", Ok("Apparel & Accessories|Shoes"));
        check("shirts", Ok("Apparel & Accessories|Clothing|Shirts & Tops"));
        check("sh", Err("ambiguous category \"sh\": it begins shoes, shirts & tops, shorts; say which"));
        check("shi", Ok("Apparel & Accessories|Clothing|Shirts & Tops"));
        check("hats", Err("unknown category \"hats\"; the cache has: shoes, shirts & tops, shorts"));
        // The slugs of the MQTT topics, as `category/set` takes them.
        check("shirts-tops", Ok("Apparel & Accessories|Clothing|Shirts & Tops"));
        check("Shirts-Tops", Ok("Apparel & Accessories|Clothing|Shirts & Tops"));
    }
}
