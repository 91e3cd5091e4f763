//! The model folder's reference scenes (`reference-scenes` in the manifest): the scene embeddings
//! of the model's training scenes, which `lookd catalog build` ranks each catalog against to cap
//! how often one product can reach the screen (`rank::exposure_offsets`, docs/variety.md).
//! Pure: bytes in, bytes out.
//!
//! Layout (little-endian): magic `LOOKDRS\0`; u32 format version (1); u32 D; u32 R; u32 S (the
//! scene count); then S scenes, each `1 + 2R` rows (the global, the R regions, the R keys), each
//! row an f32 scale and D signed bytes (value = byte x scale, scale = max |value| / 127); last, a
//! CRC-32 of everything before it. One byte per value keeps a folder's 551 scenes at 7 MB; the
//! rounding moves a squared distance by about 1e-4, far under what the calibration resolves.

use crate::embedding::SceneEmbedding;

pub const MAGIC: &[u8; 8] = b"LOOKDRS\0";
pub const VERSION: u32 = 1;
const HEADER: usize = 24;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ScenesError {
    #[error("not a lookd reference-scenes file (bad magic)")]
    Magic,
    #[error("format version {0} is not supported (this lookd reads {VERSION})")]
    Version(u32),
    #[error("it holds embeddings of width {file} with {file_regions} regions, the model's are {dim} and {regions}")]
    Shape { file: usize, file_regions: usize, dim: usize, regions: usize },
    #[error("truncated: {actual} bytes, {expected} expected for its {scenes} scenes")]
    Truncated { expected: usize, actual: usize, scenes: usize },
    #[error("checksum mismatch: the file is corrupt")]
    Checksum,
    #[error("it holds no scene")]
    Empty,
}

/// A checked file's bytes; scenes are dequantised one at a time, so the whole set never sits
/// in memory as floats (28 MB for 551 scenes).
pub struct ReferenceScenes {
    bytes: Vec<u8>,
    dim: usize,
    regions: usize,
    count: usize,
}

fn row_len(dim: usize) -> usize {
    4 + dim
}

fn expected_len(dim: usize, regions: usize, count: usize) -> Option<usize> {
    (1 + 2 * regions).checked_mul(row_len(dim))?.checked_mul(count)?.checked_add(HEADER + 4)
}

/// Encodes scenes (each of width `dim` with `regions` regions).
pub fn encode(scenes: &[SceneEmbedding], dim: usize, regions: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(expected_len(dim, regions, scenes.len()).unwrap_or(0));
    out.extend_from_slice(MAGIC);
    for v in [VERSION, dim as u32, regions as u32, scenes.len() as u32] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    for s in scenes {
        debug_assert_eq!(
            (s.global.len(), s.regions.len(), s.keys.len()),
            (dim, regions * dim, regions * dim)
        );
        for row in std::iter::once(&s.global[..]).chain(s.regions.chunks(dim)).chain(s.keys.chunks(dim)) {
            let largest = row.iter().fold(0f32, |m, v| m.max(v.abs()));
            let scale = if largest > 0.0 && largest.is_finite() { largest / 127.0 } else { 0.0 };
            out.extend_from_slice(&scale.to_le_bytes());
            out.extend(row.iter().map(|v| {
                let q = if scale > 0.0 { (v / scale).round().clamp(-127.0, 127.0) } else { 0.0 };
                q as i8 as u8
            }));
        }
    }
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Checks the header against the model's `dim` and `regions` and the length; `Ok(scene count)`.
/// Reads no more than the header, so a folder can be checked cheaply when it is opened.
pub fn check_header(head: &[u8], len: usize, dim: usize, regions: usize) -> Result<usize, ScenesError> {
    if head.len() < 8 || &head[..8] != MAGIC {
        return Err(ScenesError::Magic);
    }
    if head.len() < HEADER {
        return Err(ScenesError::Truncated { expected: HEADER + 4, actual: len, scenes: 0 });
    }
    let u32_at = |o: usize| u32::from_le_bytes([head[o], head[o + 1], head[o + 2], head[o + 3]]) as usize;
    let version = u32_at(8) as u32;
    if version != VERSION {
        return Err(ScenesError::Version(version));
    }
    let (file, file_regions, count) = (u32_at(12), u32_at(16), u32_at(20));
    if (file, file_regions) != (dim, regions) {
        return Err(ScenesError::Shape { file, file_regions, dim, regions });
    }
    if count == 0 {
        return Err(ScenesError::Empty);
    }
    let expected = expected_len(dim, regions, count).unwrap_or(usize::MAX);
    if len != expected {
        return Err(ScenesError::Truncated { expected, actual: len, scenes: count });
    }
    Ok(count)
}

impl ReferenceScenes {
    /// Checks every byte (header, length, checksum).
    pub fn decode(bytes: Vec<u8>, dim: usize, regions: usize) -> Result<ReferenceScenes, ScenesError> {
        let count = check_header(&bytes, bytes.len(), dim, regions)?;
        let (body, crc) = bytes.split_at(bytes.len() - 4);
        if crc32fast::hash(body).to_le_bytes() != crc {
            return Err(ScenesError::Checksum);
        }
        Ok(ReferenceScenes { bytes, dim, regions, count })
    }

    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Scene `i`, dequantised.
    pub fn scene(&self, i: usize) -> SceneEmbedding {
        let (d, r) = (self.dim, self.regions);
        let rows = 1 + 2 * r;
        let at = HEADER + i * rows * row_len(d);
        let mut values = Vec::with_capacity(rows * d);
        for row in self.bytes[at..at + rows * row_len(d)].chunks_exact(row_len(d)) {
            let scale = f32::from_le_bytes([row[0], row[1], row[2], row[3]]);
            values.extend(row[4..].iter().map(|&b| b as i8 as f32 * scale));
        }
        let keys = values.split_off((1 + r) * d);
        let regions = values.split_off(d);
        SceneEmbedding { dim: d, global: values, regions, keys }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scenes() -> Vec<SceneEmbedding> {
        (0..3)
            .map(|s| {
                let v =
                    |n: usize, k: usize| (0..n).map(|i| ((i * 7 + k * 3 + s) as f32 * 0.37).sin()).collect();
                SceneEmbedding { dim: 4, global: v(4, 0), regions: v(8, 1), keys: v(8, 2) }
            })
            .collect()
    }

    #[test]
    fn scenes_come_back_within_the_rounding_of_one_byte() {
        let original = scenes();
        let bytes = encode(&original, 4, 2);
        assert_eq!(bytes.len(), expected_len(4, 2, 3).unwrap());
        let back = ReferenceScenes::decode(bytes, 4, 2).unwrap();
        assert_eq!(back.len(), 3);
        for (i, s) in original.iter().enumerate() {
            let got = back.scene(i);
            for (a, b) in [(&s.global, &got.global), (&s.regions, &got.regions), (&s.keys, &got.keys)] {
                assert_eq!(a.len(), b.len());
                // |value| <= 1 here, so one step of the rounding is at most 1 / 254.
                assert!(
                    a.iter().zip(b.iter()).all(|(x, y)| (x - y).abs() <= 1.0 / 254.0 + 1e-6),
                    "{a:?} {b:?}"
                );
            }
        }
    }

    #[test]
    fn damaged_or_foreign_files_are_refused_by_name() {
        let bytes = encode(&scenes(), 4, 2);
        let refuse = |b: Vec<u8>, dim, regions| ReferenceScenes::decode(b, dim, regions).err().unwrap();
        assert_eq!(refuse(b"LOOKDPC\0rest".to_vec(), 4, 2), ScenesError::Magic);
        assert_eq!(
            refuse(bytes.clone(), 8, 2),
            ScenesError::Shape { file: 4, file_regions: 2, dim: 8, regions: 2 }
        );
        let short = bytes[..bytes.len() - 10].to_vec();
        assert!(matches!(refuse(short, 4, 2), ScenesError::Truncated { scenes: 3, .. }));
        let mut flipped = bytes.clone();
        flipped[HEADER + 9] ^= 1;
        assert_eq!(refuse(flipped, 4, 2), ScenesError::Checksum);
        let mut later = bytes;
        later[8] = 2;
        assert_eq!(refuse(later, 4, 2), ScenesError::Version(2));
        assert_eq!(refuse(encode(&[], 4, 2), 4, 2), ScenesError::Empty);
    }
}
