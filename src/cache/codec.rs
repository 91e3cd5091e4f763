//! The cache file format, version 1. Pure: bytes in, bytes out; the caller does the I/O.
//!
//! Layout (all little-endian):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | magic `LOOKDPC\0` |
//! | 8 | 4 | format version (1) |
//! | 12 | 4 | D, the embedding width |
//! | 16 | 4 | attention mode: 0 product key, 1 category key |
//! | 20 | 4 | P, the product count |
//! | 24 | 4 | R, the model's region count (informational) |
//! | 28 | 4 | reserved, 0 |
//! | 32 | 32 | the model's product fingerprint (`ModelFolder::product_fingerprint`) |
//! | 64 | 8 | offset of the globals, `[P, D]` f32 |
//! | 72 | 8 | offset of the keys, `[P, D]` f32, or 0 in the category mode |
//! | 80 | 8 | offset of the metadata (JSON) |
//! | 88 | 8 | length of the metadata |
//! | 96 | 8 | total file length |
//! | 104 | 24 | reserved, 0 |
//!
//! Float blocks start on 64-byte boundaries so a memory map can be read as `&[f32]` in place.
//! The last 4 bytes are a CRC-32 of everything before them. Products are stored sorted by
//! (category, id), so each category is one contiguous block of rows.

use serde::{Deserialize, Serialize};

use crate::catalog::CatalogEntry;
use crate::embedding::AttentionMode;

pub const MAGIC: &[u8; 8] = b"LOOKDPC\0";
pub const VERSION: u32 = 1;
const HEADER: usize = 128;
const ALIGN: usize = 64;

/// What the fixed header says.
#[derive(Debug, Clone, PartialEq)]
pub struct Header {
    pub dim: usize,
    pub attention: AttentionMode,
    pub count: usize,
    pub regions: usize,
    pub fingerprint: [u8; 32],
    pub globals_at: usize,
    pub keys_at: usize,
    meta_at: usize,
    meta_len: usize,
}

impl Header {
    /// Where the JSON metadata starts in the file, and its length.
    pub fn meta_at(&self) -> usize {
        self.meta_at
    }
    pub fn meta_len(&self) -> usize {
        self.meta_len
    }
}

/// One stored product: its catalog row plus the hash of the image bytes it was embedded from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredProduct {
    #[serde(flatten)]
    pub entry: CatalogEntry,
    pub image_sha256: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CategoryBlock {
    pub path: String,
    pub start: usize,
    pub len: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Meta {
    pub model_id: String,
    pub products: Vec<StoredProduct>,
    pub categories: Vec<CategoryBlock>,
    /// The products' exposure offsets (`rank::exposure_offsets`), when the model had reference
    /// scenes at build time. Older caches have none, and lookd before it ignores the field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exposure: Option<Exposure>,
}

/// How each product's exposure was capped: against how many reference scenes, with which plan
/// (`rank::ExposurePlan`), and the offset of each product in stored order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Exposure {
    pub scenes: usize,
    pub top: usize,
    pub diversity: f32,
    pub cap: f64,
    pub spread: f64,
    pub offsets: Vec<f32>,
}

/// Why bytes are not a usable cache.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CodecError {
    #[error("not a lookd product cache (bad magic)")]
    Magic,
    #[error("cache format version {0} is not supported (this lookd reads {VERSION})")]
    Version(u32),
    #[error("truncated: {actual} bytes, the header says {expected}")]
    Truncated { expected: usize, actual: usize },
    #[error("checksum mismatch: the file is corrupt")]
    Checksum,
    #[error("inconsistent: {0}")]
    Inconsistent(String),
}

/// One product to write: its row, image hash and embeddings (`key` empty in the category mode).
#[derive(Clone)]
pub struct Record {
    pub product: StoredProduct,
    pub global: Vec<f32>,
    pub key: Vec<f32>,
}

/// Encodes records; they are sorted by (category, id) on the way.
pub fn encode(
    records: Vec<Record>,
    dim: usize,
    attention: AttentionMode,
    regions: usize,
    fingerprint: [u8; 32],
    model_id: &str,
) -> Vec<u8> {
    encode_with(records, dim, attention, regions, fingerprint, model_id, None)
}

/// The order products are stored in: by (category, id).
pub fn sort_records(records: &mut [Record]) {
    records.sort_by(|a, b| {
        (&a.product.entry.category, &a.product.entry.id)
            .cmp(&(&b.product.entry.category, &b.product.entry.id))
    });
}

/// [`encode`] with the products' exposure offsets, given in the stored order (`sort_records`).
pub fn encode_with(
    mut records: Vec<Record>,
    dim: usize,
    attention: AttentionMode,
    regions: usize,
    fingerprint: [u8; 32],
    model_id: &str,
    exposure: Option<Exposure>,
) -> Vec<u8> {
    sort_records(&mut records);
    let p = records.len();
    let with_keys = attention == AttentionMode::Product;
    let block = p * dim * 4;
    let globals_at = HEADER.next_multiple_of(ALIGN);
    let keys_at = if with_keys { (globals_at + block).next_multiple_of(ALIGN) } else { 0 };
    let meta_at = if with_keys { keys_at + block } else { globals_at + block };
    let meta = Meta {
        model_id: model_id.to_string(),
        categories: category_blocks(&records),
        products: records.iter().map(|r| r.product.clone()).collect(),
        exposure,
    };
    let meta_bytes = serde_json::to_vec(&meta).unwrap_or_default();
    let total = meta_at + meta_bytes.len() + 4;

    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(MAGIC);
    for v in [VERSION, dim as u32, (attention == AttentionMode::Category) as u32, p as u32, regions as u32, 0]
    {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.extend_from_slice(&fingerprint);
    for v in [globals_at, keys_at, meta_at, meta_bytes.len(), total] {
        out.extend_from_slice(&(v as u64).to_le_bytes());
    }
    out.resize(globals_at, 0);
    write_rows(&mut out, records.iter().map(|r| &r.global), dim);
    if with_keys {
        out.resize(keys_at, 0);
        write_rows(&mut out, records.iter().map(|r| &r.key), dim);
    }
    out.extend_from_slice(&meta_bytes);
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

fn write_rows<'a>(out: &mut Vec<u8>, rows: impl Iterator<Item = &'a Vec<f32>>, dim: usize) {
    for row in rows {
        debug_assert_eq!(row.len(), dim);
        out.extend(row.iter().flat_map(|x| x.to_le_bytes()));
    }
}

fn category_blocks(records: &[Record]) -> Vec<CategoryBlock> {
    let mut blocks: Vec<CategoryBlock> = Vec::new();
    for (i, r) in records.iter().enumerate() {
        match blocks.last_mut() {
            Some(b) if b.path == r.product.entry.category => b.len += 1,
            _ => blocks.push(CategoryBlock { path: r.product.entry.category.clone(), start: i, len: 1 }),
        }
    }
    blocks
}

/// Checks `bytes` fully (magic, version, length, checksum, offsets, metadata) and reads the
/// header and metadata. The float blocks are left in place for the caller to view.
pub fn decode(bytes: &[u8]) -> Result<(Header, Meta), CodecError> {
    decode_with(bytes, &mut |_, _| {})
}

/// Bytes checksummed per step of [`decode_with`].
pub const CHECK_CHUNK: usize = 4 << 20;

/// [`decode`], calling `checked(offset, len)` after each `CHECK_CHUNK` of the checksum pass, so
/// a memory-mapped caller can release the pages it will not need (offsets are chunk-aligned).
pub fn decode_with(
    bytes: &[u8],
    checked: &mut dyn FnMut(usize, usize),
) -> Result<(Header, Meta), CodecError> {
    if bytes.len() < 8 || &bytes[..8] != MAGIC {
        return Err(CodecError::Magic);
    }
    if bytes.len() < HEADER {
        return Err(CodecError::Truncated { expected: HEADER, actual: bytes.len() });
    }
    let u32_at = |o: usize| u32::from_le_bytes(bytes[o..o + 4].try_into().unwrap_or_default()) as usize;
    let u64_at = |o: usize| u64::from_le_bytes(bytes[o..o + 8].try_into().unwrap_or_default()) as usize;
    let version = u32_at(8) as u32;
    if version != VERSION {
        return Err(CodecError::Version(version));
    }
    let total = u64_at(96);
    if bytes.len() != total {
        return Err(CodecError::Truncated { expected: total, actual: bytes.len() });
    }
    let (body, crc) = bytes.split_at(total - 4);
    let mut hasher = crc32fast::Hasher::new();
    for (i, chunk) in body.chunks(CHECK_CHUNK).enumerate() {
        hasher.update(chunk);
        checked(i * CHECK_CHUNK, chunk.len());
    }
    if hasher.finalize().to_le_bytes() != crc {
        return Err(CodecError::Checksum);
    }
    let attention = match u32_at(16) {
        0 => AttentionMode::Product,
        1 => AttentionMode::Category,
        m => return Err(CodecError::Inconsistent(format!("unknown attention mode {m}"))),
    };
    let mut fingerprint = [0; 32];
    fingerprint.copy_from_slice(&bytes[32..64]);
    let header = Header {
        dim: u32_at(12),
        attention,
        count: u32_at(20),
        regions: u32_at(24),
        fingerprint,
        globals_at: u64_at(64),
        keys_at: u64_at(72),
        meta_at: u64_at(80),
        meta_len: u64_at(88),
    };
    check_layout(&header, total)?;
    let meta: Meta = serde_json::from_slice(&bytes[header.meta_at..header.meta_at + header.meta_len])
        .map_err(|e| CodecError::Inconsistent(format!("metadata: {e}")))?;
    check_meta(&header, &meta)?;
    Ok((header, meta))
}

fn check_layout(h: &Header, total: usize) -> Result<(), CodecError> {
    let bad = |m: &str| Err(CodecError::Inconsistent(m.to_string()));
    let block = h.count.checked_mul(h.dim).and_then(|n| n.checked_mul(4)).unwrap_or(usize::MAX);
    let ends_before = |at: usize, len: usize, limit: usize| at.checked_add(len).is_some_and(|e| e <= limit);
    if h.dim == 0 {
        return bad("embedding width 0");
    }
    if !h.globals_at.is_multiple_of(ALIGN)
        || h.globals_at < HEADER
        || !ends_before(h.globals_at, block, total - 4)
    {
        return bad("globals block out of place");
    }
    let has_keys = h.attention == AttentionMode::Product;
    if has_keys
        && (!h.keys_at.is_multiple_of(ALIGN)
            || h.keys_at < h.globals_at + block
            || !ends_before(h.keys_at, block, total - 4))
    {
        return bad("keys block out of place");
    }
    if !has_keys && h.keys_at != 0 {
        return bad("keys block present in the category mode");
    }
    if !ends_before(h.meta_at, h.meta_len, total - 4) {
        return bad("metadata out of place");
    }
    Ok(())
}

fn check_meta(h: &Header, meta: &Meta) -> Result<(), CodecError> {
    if meta.products.len() != h.count {
        return Err(CodecError::Inconsistent(format!(
            "{} products listed, header says {}",
            meta.products.len(),
            h.count
        )));
    }
    let mut next = 0;
    for b in &meta.categories {
        let rows_agree = meta.products[b.start.min(h.count)..(b.start + b.len).min(h.count)]
            .iter()
            .all(|p| p.entry.category == b.path);
        if b.start != next || b.len == 0 || !rows_agree {
            return Err(CodecError::Inconsistent(format!("category index broken at {:?}", b.path)));
        }
        next += b.len;
    }
    if next != h.count {
        return Err(CodecError::Inconsistent("category index does not cover every product".into()));
    }
    if let Some(e) = &meta.exposure {
        if e.offsets.len() != h.count || e.offsets.iter().any(|o| !o.is_finite()) {
            return Err(CodecError::Inconsistent(format!(
                "{} exposure offsets for {} products, or one is not a finite number",
                e.offsets.len(),
                h.count
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, category: &str, x: f32) -> Record {
        let entry = CatalogEntry {
            line: 0,
            id: id.into(),
            category: category.into(),
            image: format!("{id}.jpg"),
            fields: Default::default(),
        };
        Record {
            product: StoredProduct { entry, image_sha256: "ab".into() },
            global: vec![x, -x],
            key: vec![x, x],
        }
    }

    fn sample(mode: AttentionMode) -> Vec<u8> {
        let records = vec![record("b", "Shoes", 1.0), record("a", "Hats", 2.0), record("c", "Shoes", 3.0)];
        encode(records, 2, mode, 4, [7; 32], "tiny@123")
    }

    fn check(bytes: &[u8], expected: Result<(), CodecError>) {
        assert_eq!(decode(bytes).map(|_| ()), expected);
    }

    #[test]
    fn exposure_offsets_round_trip_and_a_wrong_count_is_refused() {
        let records = vec![record("b", "Shoes", 1.0), record("a", "Hats", 2.0), record("c", "Shoes", 3.0)];
        let exposure = |offsets: Vec<f32>| Exposure {
            scenes: 5,
            top: 10,
            diversity: 0.3,
            cap: 0.04,
            spread: 1.25,
            offsets,
        };
        let mode = AttentionMode::Product;
        let bytes =
            encode_with(records.clone(), 2, mode, 4, [7; 32], "t@1", Some(exposure(vec![0.0, 0.5, 0.0])));
        let (_, meta) = decode(&bytes).unwrap();
        assert_eq!(meta.exposure, Some(exposure(vec![0.0, 0.5, 0.0])));
        assert_eq!(decode(&sample(mode)).unwrap().1.exposure, None, "a cache without offsets has none");
        let short = encode_with(records.clone(), 2, mode, 4, [7; 32], "t@1", Some(exposure(vec![0.0, 0.5])));
        assert!(
            matches!(decode(&short), Err(CodecError::Inconsistent(m)) if m.contains("2 exposure offsets for 3"))
        );
        let nan = encode_with(records, 2, mode, 4, [7; 32], "t@1", Some(exposure(vec![0.0, f32::NAN, 0.0])));
        assert!(matches!(decode(&nan), Err(CodecError::Inconsistent(_))));
    }

    #[test]
    fn the_checksum_pass_reports_every_byte_it_checked_in_order() {
        let records = (0..9000).map(|i| record(&format!("p{i}"), "Shoes", i as f32)).collect();
        let bytes = encode(records, 2, AttentionMode::Product, 4, [7; 32], "tiny@123");
        let mut seen = Vec::new();
        decode_with(&bytes, &mut |at, len| seen.push((at, len))).unwrap();
        let mut next = 0;
        for &(at, len) in &seen {
            assert_eq!(at, next, "{seen:?}");
            assert!(at % CHECK_CHUNK == 0 && len <= CHECK_CHUNK);
            next = at + len;
        }
        assert_eq!(next, bytes.len() - 4, "everything but the CRC itself");
    }

    #[test]
    fn round_trip_sorts_by_category_then_id() {
        let bytes = sample(AttentionMode::Product);
        let (h, meta) = decode(&bytes).unwrap();
        assert_eq!((h.dim, h.count, h.regions, h.fingerprint), (2, 3, 4, [7; 32]));
        let ids: Vec<&str> = meta.products.iter().map(|p| p.entry.id.as_str()).collect();
        assert_eq!(ids, ["a", "b", "c"]);
        let blocks: Vec<(&str, usize, usize)> =
            meta.categories.iter().map(|b| (b.path.as_str(), b.start, b.len)).collect();
        assert_eq!(blocks, [("Hats", 0, 1), ("Shoes", 1, 2)]);
        let first = f32::from_le_bytes(bytes[h.globals_at..h.globals_at + 4].try_into().unwrap());
        assert_eq!(first, 2.0);
    }

    #[test]
    fn category_mode_has_no_keys() {
        let (h, _) = decode(&sample(AttentionMode::Category)).unwrap();
        assert_eq!((h.attention, h.keys_at), (AttentionMode::Category, 0));
    }

    #[test]
    fn truncated_is_refused() {
        let bytes = sample(AttentionMode::Product);
        let n = bytes.len();
        check(&bytes[..n - 10], Err(CodecError::Truncated { expected: n, actual: n - 10 }));
        check(&bytes[..100], Err(CodecError::Truncated { expected: 128, actual: 100 }));
    }

    #[test]
    fn every_flipped_bit_is_caught() {
        let bytes = sample(AttentionMode::Product);
        for i in (0..bytes.len()).step_by(7) {
            let mut b = bytes.clone();
            b[i] ^= 0x10;
            assert!(decode(&b).is_err(), "flip at byte {i} went unnoticed");
        }
    }

    #[test]
    fn foreign_and_future_files_are_refused() {
        check(b"PK\x03\x04 a zip file, not a cache", Err(CodecError::Magic));
        let mut b = sample(AttentionMode::Product);
        b[8] = 2;
        check(&b, Err(CodecError::Version(2)));
    }

    /// Rewrites the CRC so a changed file passes the checksum and meets the checks behind it.
    fn with_crc(mut b: Vec<u8>) -> Vec<u8> {
        let n = b.len();
        let crc = crc32fast::hash(&b[..n - 4]);
        b[n - 4..].copy_from_slice(&crc.to_le_bytes());
        b
    }

    #[test]
    fn a_valid_checksum_over_a_broken_layout_or_index_is_refused_by_name() {
        let good = sample(AttentionMode::Product);
        let (h, meta) = decode(&good).unwrap();
        let set = |at: usize, v: u64, width: usize| {
            let mut b = good.clone();
            b[at..at + width].copy_from_slice(&v.to_le_bytes()[..width]);
            with_crc(b)
        };
        let refused = |b: Vec<u8>, says: &str| match decode(&b) {
            Err(CodecError::Inconsistent(m)) => assert!(m.contains(says), "{m:?} does not say {says:?}"),
            other => panic!("{says}: {other:?}"),
        };
        refused(set(12, 0, 4), "embedding width 0");
        refused(set(16, 7, 4), "unknown attention mode 7");
        refused(set(20, u32::MAX as u64, 4), "globals block out of place"); // P rows cannot fit
        refused(set(64, h.globals_at as u64 + 1, 8), "globals block out of place"); // misaligned
        refused(set(72, h.globals_at as u64, 8), "keys block out of place"); // overlaps the globals
        refused(set(88, u64::MAX, 8), "metadata out of place");
        refused(set(80, 0, 8), "metadata"); // points at the header: not JSON
                                            // The metadata itself rewritten, consistently framed: a product count the header does
                                            // not have, and a category index that skips a row.
        let reframe = |meta: &Meta| {
            let json = serde_json::to_vec(meta).unwrap();
            let mut b = good[..h.meta_at].to_vec();
            b.extend_from_slice(&json);
            b.extend_from_slice(&[0; 4]);
            let n = b.len() as u64;
            b[88..96].copy_from_slice(&(json.len() as u64).to_le_bytes());
            b[96..104].copy_from_slice(&n.to_le_bytes());
            with_crc(b)
        };
        assert!(decode(&reframe(&meta)).is_ok(), "the reframing itself keeps a good file good");
        let mut fewer = meta.clone();
        fewer.products.pop();
        refused(reframe(&fewer), "products listed, header says");
        let mut skipped = meta.clone();
        skipped.categories[0].start += 1;
        refused(reframe(&skipped), "category index broken");
    }
}
