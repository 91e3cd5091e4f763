//! Pixel formats to RGB. Pure: frame bytes in, an `RgbImage` out, sizes checked first.
//!
//! YUV uses BT.601 limited range (what USB and CSI cameras send), in integer arithmetic.

use image::RgbImage;

use super::PreprocessError;
use crate::capture::{Frame, PixelFormat};

/// Converts any supported frame to 8-bit RGB.
pub fn to_rgb(frame: &Frame) -> Result<RgbImage, PreprocessError> {
    let (w, h) = (frame.width, frame.height);
    if frame.pixels.is_empty() {
        return Err(PreprocessError::Frame("empty frame (0 bytes)".into()));
    }
    if frame.format == PixelFormat::Mjpg {
        let img = super::decode(&frame.pixels)?;
        if (img.width(), img.height()) != (w, h) && w != 0 {
            log::debug!("jpeg frame is {}x{}, the stream said {w}x{h}", img.width(), img.height());
        }
        return Ok(img);
    }
    if w == 0 || h == 0 {
        return Err(PreprocessError::Empty { width: w, height: h });
    }
    if w > super::MAX_SIDE || h > super::MAX_SIDE {
        return Err(PreprocessError::Frame(format!(
            "{:?} frame of {w}x{h} is over the {} px limit a side",
            frame.format,
            super::MAX_SIDE
        )));
    }
    let expected = frame.format.frame_len(w, h).unwrap_or(0);
    if frame.pixels.len() < expected {
        return Err(PreprocessError::Frame(format!(
            "{:?} frame of {}x{} needs {expected} bytes, got {}",
            frame.format,
            w,
            h,
            frame.pixels.len()
        )));
    }
    let p = &frame.pixels;
    let (wu, hu) = (w as usize, h as usize);
    let (cw, ch) = (wu.div_ceil(2), hu.div_ceil(2));
    let mut out = RgbImage::new(w, h);
    // Row by row, a pair of pixels at a time: the two share their chroma, whose terms are worked
    // out once, and fixed-size chunks let the compiler drop the bounds checks (a 1280x720 YUYV
    // frame: 1.7 ms instead of 4.2 a pixel at a time, `cargo bench --bench frame`; the same bytes).
    let planes = wu * hu;
    let row_bytes = wu * 3;
    match frame.format {
        PixelFormat::Rgb24 => out.copy_from_slice(&p[..expected]),
        PixelFormat::Yuyv => {
            let stride = frame.format.row_len(w).unwrap_or(0);
            for (y, out_row) in out.chunks_exact_mut(row_bytes).enumerate() {
                let row = &p[y * stride..(y + 1) * stride];
                // Whole pairs as fixed-size chunks (the compiler drops the bounds checks), then
                // an odd last pixel.
                let (whole, last) = out_row.split_at_mut(row_bytes / 6 * 6);
                for (px, q) in whole.chunks_exact_mut(6).zip(row.chunks_exact(4)) {
                    pair(px, q[0], q[2], q[1], q[3]);
                }
                if !last.is_empty() {
                    let q = &row[row.len() - 4..];
                    last.copy_from_slice(&yuv_to_rgb(q[0], q[1], q[3]));
                }
            }
        }
        PixelFormat::Nv12 => {
            for (y, out_row) in out.chunks_exact_mut(row_bytes).enumerate() {
                let (luma, uv) = (&p[y * wu..(y + 1) * wu], &p[planes + (y / 2) * cw * 2..]);
                let (whole, last) = out_row.split_at_mut(row_bytes / 6 * 6);
                for ((px, l), c) in
                    whole.chunks_exact_mut(6).zip(luma.chunks_exact(2)).zip(uv.chunks_exact(2))
                {
                    pair(px, l[0], l[1], c[0], c[1]);
                }
                if !last.is_empty() {
                    let (l, c) = (luma[wu - 1], wu / 2 * 2);
                    last.copy_from_slice(&yuv_to_rgb(l, uv[c], uv[c + 1]));
                }
            }
        }
        PixelFormat::Yu12 => {
            for (y, out_row) in out.chunks_exact_mut(row_bytes).enumerate() {
                let luma = &p[y * wu..(y + 1) * wu];
                let u = &p[planes + (y / 2) * cw..planes + (y / 2 + 1) * cw];
                let v = &p[planes + cw * ch + (y / 2) * cw..planes + cw * ch + (y / 2 + 1) * cw];
                let (whole, last) = out_row.split_at_mut(row_bytes / 6 * 6);
                let chroma = u.iter().zip(v);
                for ((px, l), (&u, &v)) in whole.chunks_exact_mut(6).zip(luma.chunks_exact(2)).zip(chroma) {
                    pair(px, l[0], l[1], u, v);
                }
                if !last.is_empty() {
                    let (l, c) = (luma[wu - 1], wu / 2);
                    last.copy_from_slice(&yuv_to_rgb(l, u[c], v[c]));
                }
            }
        }
        PixelFormat::Mjpg => unreachable!("handled above"),
    }
    Ok(out)
}

/// Two RGB pixels (6 bytes) from their lumas and shared chroma.
#[inline(always)]
fn pair(px: &mut [u8], y0: u8, y1: u8, u: u8, v: u8) {
    let (d, e) = (u as i32 - 128, v as i32 - 128);
    let (r, g, b) = (409 * e, -100 * d - 208 * e, 516 * d);
    let (c0, c1) = (298 * (y0 as i32 - 16), 298 * (y1 as i32 - 16));
    px[..6].copy_from_slice(&[
        clamp8(c0 + r),
        clamp8(c0 + g),
        clamp8(c0 + b),
        clamp8(c1 + r),
        clamp8(c1 + g),
        clamp8(c1 + b),
    ]);
}

#[inline(always)]
fn clamp8(x: i32) -> u8 {
    ((x + 128) >> 8).clamp(0, 255) as u8
}

/// BT.601 limited range to RGB, in 8.8 fixed point.
pub fn yuv_to_rgb(y: u8, u: u8, v: u8) -> [u8; 3] {
    let (c, d, e) = (298 * (y as i32 - 16), u as i32 - 128, v as i32 - 128);
    [clamp8(c + 409 * e), clamp8(c - 100 * d - 208 * e), clamp8(c + 516 * d)]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(format: PixelFormat, width: u32, height: u32, pixels: Vec<u8>) -> Frame {
        Frame { pixels, format, width, height, seq: 0, ts: std::time::SystemTime::UNIX_EPOCH }
    }

    #[test]
    fn a_declared_size_whose_byte_count_overflows_is_refused_not_wrapped() {
        // u32::MAX squared overflows usize: wrapped, the product would be small enough for this
        // 16-byte buffer, and the image allocation that follows would abort the process.
        for format in [PixelFormat::Yuyv, PixelFormat::Nv12, PixelFormat::Yu12, PixelFormat::Rgb24] {
            assert_eq!(format.frame_len(u32::MAX, u32::MAX), Some(usize::MAX), "{format:?}");
            for (w, h) in [(u32::MAX, u32::MAX), (u32::MAX, 1), (1, 1 << 31), (8193, 1)] {
                let err = to_rgb(&frame(format, w, h, vec![0; 16])).unwrap_err().to_string();
                assert!(err.contains("over the 8192 px limit"), "{format:?} {w}x{h}: {err}");
            }
        }
        // At the limit the size is checked against the buffer as before.
        let err = to_rgb(&frame(PixelFormat::Rgb24, 8192, 8192, vec![0; 16])).unwrap_err().to_string();
        assert!(err.contains("needs 201326592 bytes, got 16"), "{err}");
    }

    fn check(f: Frame, expected: &[[u8; 3]]) {
        let img = to_rgb(&f).unwrap();
        let got: Vec<[u8; 3]> = img.pixels().map(|p| p.0).collect();
        assert_eq!(got, expected, "{:?}", f.format);
    }

    const BLACK: [u8; 3] = [0, 0, 0];
    const WHITE: [u8; 3] = [255, 255, 255];
    const RED: [u8; 3] = [255, 0, 0];
    const BLUE: [u8; 3] = [0, 0, 255];

    #[test]
    fn bt601_reference_colours() {
        assert_eq!(yuv_to_rgb(16, 128, 128), BLACK);
        assert_eq!(yuv_to_rgb(235, 128, 128), WHITE);
        assert_eq!(yuv_to_rgb(81, 90, 240), RED);
        assert_eq!(yuv_to_rgb(41, 240, 110), BLUE);
        assert_eq!(yuv_to_rgb(126, 128, 128), [128, 128, 128]);
    }

    #[test]
    fn yuyv_pairs_share_chroma() {
        // Two pixel pairs: black|white (grey chroma), then a red pair.
        check(
            frame(PixelFormat::Yuyv, 4, 1, vec![16, 128, 235, 128, 81, 90, 81, 240]),
            &[BLACK, WHITE, RED, RED],
        );
    }

    #[test]
    fn yuyv_of_odd_width_pads_its_rows_to_whole_pairs() {
        // Found by the `frame` fuzz target: 3 pixels wide, each row is 2 groups (8 bytes).
        let row = [16, 128, 235, 128, 81, 90, 0, 240];
        check(frame(PixelFormat::Yuyv, 3, 2, [row, row].concat()), &[BLACK, WHITE, RED, BLACK, WHITE, RED]);
        let short = frame(PixelFormat::Yuyv, 3, 2, vec![0; 12]);
        assert!(to_rgb(&short).is_err(), "12 bytes are 3x2 at 2 bytes a pixel, but not whole pairs");
    }

    #[test]
    fn nv12_and_yu12_share_chroma_per_2x2_block() {
        // 4x2: left block red, right block blue.
        let y = vec![81, 81, 41, 41, 81, 81, 41, 41];
        let expected = [RED, RED, BLUE, BLUE, RED, RED, BLUE, BLUE];
        check(frame(PixelFormat::Nv12, 4, 2, [y.clone(), vec![90, 240, 240, 110]].concat()), &expected);
        check(frame(PixelFormat::Yu12, 4, 2, [y, vec![90, 240], vec![240, 110]].concat()), &expected);
    }

    #[test]
    fn odd_sizes_round_chroma_up() {
        // 3x1 NV12: chroma for 2 columns.
        check(frame(PixelFormat::Nv12, 3, 1, vec![81, 81, 41, 90, 240, 240, 110]), &[RED, RED, BLUE]);
    }

    /// The conversion a pixel at a time, as lookd did it before the row-wise one.
    fn reference(f: &Frame) -> Vec<[u8; 3]> {
        let (w, h) = (f.width as usize, f.height as usize);
        let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
        let p = &f.pixels;
        let stride = f.format.row_len(f.width).unwrap_or(0);
        let mut out = Vec::new();
        for y in 0..h {
            for x in 0..w {
                let (l, u, v) = match f.format {
                    PixelFormat::Yuyv => {
                        let pair = y * stride + (x & !1) * 2;
                        (p[y * stride + x * 2], p[pair + 1], p[pair + 3])
                    }
                    PixelFormat::Nv12 => {
                        let c = w * h + (y / 2) * cw * 2 + (x / 2) * 2;
                        (p[y * w + x], p[c], p[c + 1])
                    }
                    _ => {
                        let c = (y / 2) * cw + x / 2;
                        (p[y * w + x], p[w * h + c], p[w * h + cw * ch + c])
                    }
                };
                out.push(yuv_to_rgb(l, u, v));
            }
        }
        out
    }

    #[test]
    fn the_row_wise_conversion_gives_the_pixel_wise_bytes() {
        let mut rng = crate::rng::SplitMix64::new(7);
        for format in [PixelFormat::Yuyv, PixelFormat::Nv12, PixelFormat::Yu12] {
            for (w, h) in [(1, 1), (2, 2), (3, 1), (5, 3), (16, 9), (33, 17), (64, 48)] {
                let n = format.frame_len(w, h).unwrap();
                let pixels: Vec<u8> = (0..n).map(|_| rng.next_u64() as u8).collect();
                let f = frame(format, w, h, pixels);
                let got: Vec<[u8; 3]> = to_rgb(&f).unwrap().pixels().map(|p| p.0).collect();
                assert_eq!(got, reference(&f), "{format:?} {w}x{h}");
            }
        }
    }

    #[test]
    fn rgb24_is_copied() {
        check(frame(PixelFormat::Rgb24, 2, 1, vec![1, 2, 3, 4, 5, 6]), &[[1, 2, 3], [4, 5, 6]]);
    }

    #[test]
    fn mjpg_decodes() {
        let img = RgbImage::from_pixel(8, 8, image::Rgb([200, 30, 30]));
        let mut jpeg = Vec::new();
        img.write_to(&mut std::io::Cursor::new(&mut jpeg), image::ImageFormat::Jpeg).unwrap();
        let rgb = to_rgb(&frame(PixelFormat::Mjpg, 8, 8, jpeg)).unwrap();
        let p = rgb.get_pixel(4, 4).0;
        assert!(p[0] > 180 && p[1] < 60 && p[2] < 60, "{p:?}");
    }

    #[test]
    fn bad_frames_are_errors_not_panics() {
        let cases = [
            (frame(PixelFormat::Yuyv, 4, 2, vec![0; 10]), "needs 16 bytes, got 10"),
            (frame(PixelFormat::Nv12, 4, 4, vec![]), "empty frame"),
            (frame(PixelFormat::Mjpg, 8, 8, vec![0xff, 0xd8, 0xff, 0xe0, 0, 16]), "cannot decode image"),
            (frame(PixelFormat::Rgb24, 0, 5, vec![1, 2, 3]), "image is empty"),
        ];
        for (f, expected) in cases {
            let err = to_rgb(&f).unwrap_err().to_string();
            assert!(err.contains(expected), "{:?}: {err}", f.format);
        }
    }
}
