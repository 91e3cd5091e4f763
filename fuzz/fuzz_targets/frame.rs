//! Frame decoding and conversion: a camera buffer of any format, size and content becomes an
//! RGB image and a model input (both ways: converted whole, and the camera path's YUV resize),
//! or an error; never a panic, an overflow or a huge allocation.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lookd::capture::{Frame, PixelFormat};

fuzz_target!(|data: &[u8]| {
    if data.len() < 10 {
        return;
    }
    let format = [PixelFormat::Mjpg, PixelFormat::Yuyv, PixelFormat::Nv12, PixelFormat::Yu12, PixelFormat::Rgb24]
        [data[0] as usize % 5];
    // Any declared size: bit 7 of data[0] takes the full u32 range from data[1..9] (sizes no
    // buffer can hold, products that overflow); otherwise small ones (0..=63), so the fuzzer
    // also spends time on content.
    let word = |i: usize| u32::from_le_bytes([data[i], data[i + 1], data[i + 2], data[i + 3]]);
    let (width, height) = if data[0] & 0x80 != 0 {
        (word(1), word(5))
    } else {
        (u32::from(data[1] % 64), u32::from(data[2] % 64))
    };
    let frame = Frame {
        pixels: data[9..].to_vec(),
        format,
        width,
        height,
        seq: 0,
        ts: std::time::SystemTime::UNIX_EPOCH,
    };
    // The daemon's camera path: the region (any fractions; roi_rect clamps them) and mirror
    // from the input, resized in YUV for YUV frames.
    let frac = |b: u8| b as f32 / 128.0 - 0.5;
    let roi = (data[0] & 0x40 != 0).then(|| [frac(data[3]), frac(data[4]), frac(data[5]), frac(data[6])]);
    if let Ok(small) = lookd::preprocess::pixel::model_image(&frame, roi, data[0] & 0x20 != 0, 16, 16) {
        assert_eq!(small.dimensions(), (16, 16));
    }
    let Ok(img) = lookd::preprocess::pixel::to_rgb(&frame) else { return };
    let img = lookd::preprocess::orient(img, true, 90);
    let _ = lookd::preprocess::thumbnail(&img);
    let mut pixels = Vec::new();
    if lookd::preprocess::to_model_input(&img, None, 16, 16, &mut pixels).is_ok() {
        assert_eq!(pixels.len(), 3 * 16 * 16);
    }
});
