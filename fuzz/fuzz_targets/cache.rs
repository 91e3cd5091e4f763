//! The product cache reader: any bytes are refused with a reason or read in full, never a panic
//! or an out-of-bounds slice.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(cache) = lookd::cache::ProductCache::from_bytes(data, None) else { return };
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
