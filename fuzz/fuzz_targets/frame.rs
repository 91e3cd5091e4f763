//! Frame decoding and conversion: a camera buffer of any format, size and content becomes an
//! RGB image and a model input, or an error; never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lookd::capture::{Frame, PixelFormat};

fuzz_target!(|data: &[u8]| {
    if data.len() < 3 {
        return;
    }
    let format = [PixelFormat::Mjpg, PixelFormat::Yuyv, PixelFormat::Nv12, PixelFormat::Yu12, PixelFormat::Rgb24]
        [data[0] as usize % 5];
    // Small declared sizes (0..=63), so the fuzzer spends its time on content, not allocation.
    let (width, height) = (u32::from(data[1] % 64), u32::from(data[2] % 64));
    let frame = Frame {
        pixels: data[3..].to_vec(),
        format,
        width,
        height,
        seq: 0,
        ts: std::time::SystemTime::UNIX_EPOCH,
    };
    let Ok(img) = lookd::preprocess::pixel::to_rgb(&frame) else { return };
    let img = lookd::preprocess::orient(img, true, 90);
    let _ = lookd::preprocess::thumbnail(&img);
    let mut pixels = Vec::new();
    if lookd::preprocess::to_model_input(&img, None, 16, 16, &mut pixels).is_ok() {
        assert_eq!(pixels.len(), 3 * 16 * 16);
    }
});
