//! The product cache reader: any bytes are refused with a reason or read in full, never a panic
//! or an out-of-bounds slice.
//!
//! A mutated file almost never keeps a valid length field and CRC, so on its own the fuzzer
//! would only ever test those two checks. When bit 0 of the first byte is set, the harness
//! drops that byte and fixes both up (bytes 96..104 = the length, the last 4 = the CRC-32), so
//! the input reaches the header, layout and metadata checks behind them.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let mut bytes = rest.to_vec();
    if mode & 1 == 1 && bytes.len() >= 128 + 4 {
        let n = bytes.len();
        bytes[96..104].copy_from_slice(&(n as u64).to_le_bytes());
        let crc = crc32fast::hash(&bytes[..n - 4]);
        bytes[n - 4..].copy_from_slice(&crc.to_le_bytes());
    }
    let Ok(cache) = lookd::cache::ProductCache::from_bytes(&bytes, None) else { return };
    let d = cache.dim();
    for block in cache.categories() {
        let globals = cache.globals(block);
        assert_eq!(globals.len(), block.len * d);
        if let Some(keys) = cache.keys(block) {
            assert_eq!(keys.len(), block.len * d);
        }
        let _ = cache.find_category(&block.path);
    }
    let _ = cache.find_category("shoes");
});
