//! Pure image preparation: frame bytes or encoded images in, model input out.
//!
//! Convert the camera's pixel format (`pixel`), mirror and rotate (mirrors hang portrait), crop
//! to a region, resize (stretch) to the model's input and lay the pixels out as planar RGB floats
//! in 0..255 (the graphs fold in their own normalisation). Also the cheap frame difference that
//! gates re-embedding. No file or device I/O happens here, so every function tests with plain data.

pub mod pixel;

use image::RgbImage;

#[derive(Debug, thiserror::Error)]
pub enum PreprocessError {
    #[error("cannot decode image: {0}")]
    Decode(String),
    #[error("image is empty ({width}x{height})")]
    Empty { width: u32, height: u32 },
    #[error("crop {crop:?} lies outside the {width}x{height} image")]
    Crop { crop: Rect, width: u32, height: u32 },
    #[error("bad frame: {0}")]
    Frame(String),
}

/// A pixel rectangle: columns `x..x + width`, rows `y..y + height`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rect {
    pub x: u32,
    pub y: u32,
    pub width: u32,
    pub height: u32,
}

/// The widest or tallest photo or frame lookd decodes (8K); a larger header is refused before
/// anything is allocated, so a hostile or corrupt file cannot exhaust memory.
pub const MAX_SIDE: u32 = 8192;

/// Decodes JPEG or PNG bytes to 8-bit RGB.
pub fn decode(bytes: &[u8]) -> Result<RgbImage, PreprocessError> {
    let fail = |e: image::ImageError| PreprocessError::Decode(e.to_string());
    let mut reader = image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| PreprocessError::Decode(e.to_string()))?;
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(u64::from(MAX_SIDE) * u64::from(MAX_SIDE) * 4);
    reader.limits(limits);
    let img = reader.decode().map_err(fail)?.to_rgb8();
    if img.width() == 0 || img.height() == 0 {
        return Err(PreprocessError::Empty { width: img.width(), height: img.height() });
    }
    Ok(img)
}

/// Crops `img` to `crop` (or keeps it whole), stretches it to `width` x `height` and writes
/// planar RGB (all R, then G, then B) as f32 0..255 into `out`, replacing its contents.
pub fn to_model_input(
    img: &RgbImage,
    crop: Option<Rect>,
    width: usize,
    height: usize,
    out: &mut Vec<f32>,
) -> Result<(), PreprocessError> {
    if crop.is_none() && (img.width() as usize, img.height() as usize) == (width, height) {
        // Already the model's picture (the camera path makes it so): nothing to resize.
        write_planar(img, out);
        return Ok(());
    }
    let resized = model_image(img, crop, width, height)?;
    write_planar(&resized, out);
    Ok(())
}

/// The picture the model sees: `img` cropped to `crop` (or whole) and stretched to `width` x
/// `height`, as 8-bit RGB. `to_model_input` lays exactly these pixels out as floats.
pub fn model_image(
    img: &RgbImage,
    crop: Option<Rect>,
    width: usize,
    height: usize,
) -> Result<RgbImage, PreprocessError> {
    if let Some(c) = crop {
        let inside =
            c.width > 0 && c.height > 0 && c.x + c.width <= img.width() && c.y + c.height <= img.height();
        if !inside {
            return Err(PreprocessError::Crop { crop: c, width: img.width(), height: img.height() });
        }
    }
    resize(img, crop, width as u32, height as u32)
}

thread_local! {
    /// One resizer per thread: its scratch buffers are reused from frame to frame.
    static RESIZER: std::cell::RefCell<fast_image_resize::Resizer> = std::cell::RefCell::new(fast_image_resize::Resizer::new());
}

/// Bilinear (convolution, as Pillow's) resize with SIMD, of `img` or of its `crop`.
fn resize(img: &RgbImage, crop: Option<Rect>, w: u32, h: u32) -> Result<RgbImage, PreprocessError> {
    use fast_image_resize::{FilterType as F, ResizeAlg, ResizeOptions};
    let mut options = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(F::Bilinear));
    if let Some(c) = crop {
        options = options.crop(c.x as f64, c.y as f64, c.width as f64, c.height as f64);
    }
    let mut dst = RgbImage::new(w, h);
    RESIZER
        .with(|r| r.borrow_mut().resize(img, &mut dst, &options))
        .map_err(|e| PreprocessError::Frame(format!("resize to {w}x{h}: {e}")))?;
    Ok(dst)
}

/// Pixels of 1, 2 or 4 bytes in a plain buffer (`width` x `height`, rows back to back), for
/// [`resize_raw`].
pub(crate) struct RawPlane<'a> {
    pub bytes: &'a [u8],
    pub width: u32,
    pub height: u32,
    pub channels: usize,
}

/// [`resize`]'s filter on a raw plane: its `crop` (left, top, width, height, in its own pixels,
/// fractions allowed) stretched to `w` x `h`; returns `w * h * channels` bytes. Every channel is
/// filtered alone (none is taken for alpha).
pub(crate) fn resize_raw(src: &RawPlane, crop: [f64; 4], w: u32, h: u32) -> Result<Vec<u8>, PreprocessError> {
    use fast_image_resize::images::{Image, ImageRef};
    use fast_image_resize::{FilterType as F, PixelType, ResizeAlg, ResizeOptions};
    let pixel_type = match src.channels {
        1 => PixelType::U8,
        2 => PixelType::U8x2,
        _ => PixelType::U8x4,
    };
    let fail = |e: String| PreprocessError::Frame(format!("resize to {w}x{h}: {e}"));
    let image =
        ImageRef::new(src.width, src.height, src.bytes, pixel_type).map_err(|e| fail(e.to_string()))?;
    let mut dst = Image::new(w, h, pixel_type);
    let options = ResizeOptions::new()
        .resize_alg(ResizeAlg::Convolution(F::Bilinear))
        .use_alpha(false)
        .crop(crop[0], crop[1], crop[2], crop[3]);
    RESIZER.with(|r| r.borrow_mut().resize(&image, &mut dst, &options)).map_err(|e| fail(e.to_string()))?;
    Ok(dst.into_vec())
}

/// Flips left-right when `mirror`, then rotates clockwise by `degrees` (0, 90, 180 or 270).
pub fn orient(img: RgbImage, mirror: bool, degrees: u32) -> RgbImage {
    use image::imageops::{flip_horizontal, rotate180, rotate270, rotate90};
    let img = if mirror { flip_horizontal(&img) } else { img };
    match degrees {
        90 => rotate90(&img),
        180 => rotate180(&img),
        270 => rotate270(&img),
        _ => img,
    }
}

/// The pixel rectangle of a region of interest given as fractions `[x, y, width, height]`.
pub fn roi_rect(roi: [f32; 4], width: u32, height: u32) -> Rect {
    let px = |v: f32, n: u32| ((v * n as f32).round() as u32).min(n);
    let (x, y) = (px(roi[0], width).min(width - 1), px(roi[1], height).min(height - 1));
    let (w, h) = (px(roi[2], width).clamp(1, width - x), px(roi[3], height).clamp(1, height - y));
    Rect { x, y, width: w, height: h }
}

/// Side of the grey thumbnail compared between frames.
pub const THUMB: u32 = 32;

/// A small grey thumbnail of `img`, for `difference`.
pub fn thumbnail(img: &RgbImage) -> Vec<u8> {
    let Ok(small) = resize(img, None, THUMB, THUMB) else { return Vec::new() };
    small.pixels().map(|p| ((p[0] as u32 * 77 + p[1] as u32 * 150 + p[2] as u32 * 29) >> 8) as u8).collect()
}

/// Mean absolute difference of two thumbnails, 0 (same) to 1; 1 when they cannot be compared.
pub fn difference(a: &[u8], b: &[u8]) -> f32 {
    if a.len() != b.len() || a.is_empty() {
        return 1.0;
    }
    let sum: u64 = a.iter().zip(b).map(|(x, y)| x.abs_diff(*y) as u64).sum();
    sum as f32 / (255.0 * a.len() as f32)
}

fn write_planar(img: &RgbImage, out: &mut Vec<f32>) {
    let plane = (img.width() * img.height()) as usize;
    out.clear();
    out.resize(3 * plane, 0.0);
    for (i, px) in img.pixels().enumerate() {
        out[i] = px[0] as f32;
        out[plane + i] = px[1] as f32;
        out[2 * plane + i] = px[2] as f32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(img: &RgbImage, crop: Option<Rect>, size: (usize, usize), expected: &[f32]) {
        let mut out = vec![9.0; 3];
        to_model_input(img, crop, size.0, size.1, &mut out).unwrap();
        assert_eq!(out, expected);
    }

    #[test]
    fn a_photo_wider_than_the_limit_is_refused_not_decoded() {
        let mut png = Vec::new();
        let wide = RgbImage::new(MAX_SIDE + 1, 1);
        wide.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png).unwrap();
        let err = decode(&png).unwrap_err().to_string();
        assert!(err.contains("limit"), "{err}");
        let mut ok = Vec::new();
        RgbImage::new(MAX_SIDE, 1)
            .write_to(&mut std::io::Cursor::new(&mut ok), image::ImageFormat::Png)
            .unwrap();
        assert_eq!(decode(&ok).unwrap().width(), MAX_SIDE);
    }

    fn two_by_two() -> RgbImage {
        RgbImage::from_fn(2, 2, |x, y| image::Rgb([(10 * x + 20 * y) as u8, 100, 200 + x as u8]))
    }

    #[test]
    fn planar_layout() {
        check(
            &two_by_two(),
            None,
            (2, 2),
            &[0., 10., 20., 30., 100., 100., 100., 100., 200., 201., 200., 201.],
        );
    }

    #[test]
    fn crop_picks_the_rectangle() {
        let crop = Rect { x: 1, y: 1, width: 1, height: 1 };
        check(&two_by_two(), Some(crop), (1, 1), &[30., 100., 201.]);
    }

    #[test]
    fn uniform_image_stays_uniform_after_resize() {
        let img = RgbImage::from_pixel(7, 5, image::Rgb([12, 34, 56]));
        let mut expected = vec![12.0; 9];
        expected.extend([34.0; 9]);
        expected.extend([56.0; 9]);
        check(&img, None, (3, 3), &expected);
    }

    #[test]
    fn a_picture_already_at_the_model_size_is_laid_out_as_it_is() {
        // to_model_input skips the resize for such a picture: the resize would have given the
        // same pixels (a product photo of exactly 224x224 embeds as it did before the shortcut).
        let mut rng = crate::rng::SplitMix64::new(9);
        let img =
            RgbImage::from_fn(224, 224, |_, _| image::Rgb([0, 0, 0].map(|_: u8| (rng.unit() * 255.0) as u8)));
        assert_eq!(resize(&img, None, 224, 224).unwrap(), img);
        let mut out = Vec::new();
        to_model_input(&img, None, 224, 224, &mut out).unwrap();
        assert_eq!(
            out[..3],
            [img.get_pixel(0, 0)[0] as f32, img.get_pixel(1, 0)[0] as f32, img.get_pixel(2, 0)[0] as f32]
        );
    }

    #[test]
    fn crop_outside_is_refused() {
        let crop = Rect { x: 1, y: 0, width: 2, height: 1 };
        let err = to_model_input(&two_by_two(), Some(crop), 1, 1, &mut Vec::new()).unwrap_err();
        assert!(err.to_string().contains("outside the 2x2 image"), "{err}");
    }

    #[test]
    fn orient_mirrors_then_rotates_clockwise() {
        // 2x1: a b. Mirrored: b a. Rotated 90 clockwise: b above a.
        let img = RgbImage::from_fn(2, 1, |x, _| image::Rgb([x as u8, 0, 0]));
        let check = |mirror, deg, expected: &[u8], size: (u32, u32)| {
            let o = orient(img.clone(), mirror, deg);
            assert_eq!((o.width(), o.height()), size);
            assert_eq!(
                o.pixels().map(|p| p[0]).collect::<Vec<_>>(),
                expected,
                "mirror {mirror} rotate {deg}"
            );
        };
        check(false, 0, &[0, 1], (2, 1));
        check(true, 0, &[1, 0], (2, 1));
        check(false, 90, &[0, 1], (1, 2));
        check(true, 90, &[1, 0], (1, 2));
        check(false, 180, &[1, 0], (2, 1));
        check(false, 270, &[1, 0], (1, 2));
    }

    #[test]
    fn roi_is_clamped_inside() {
        assert_eq!(roi_rect([0.25, 0.0, 0.5, 1.0], 100, 40), Rect { x: 25, y: 0, width: 50, height: 40 });
        assert_eq!(roi_rect([0.99, 0.99, 0.5, 0.5], 10, 10), Rect { x: 9, y: 9, width: 1, height: 1 });
    }

    #[test]
    fn difference_of_thumbnails() {
        let dark = thumbnail(&RgbImage::from_pixel(64, 48, image::Rgb([0, 0, 0])));
        let light = thumbnail(&RgbImage::from_pixel(64, 48, image::Rgb([255, 255, 255])));
        assert_eq!(difference(&dark, &dark), 0.0);
        assert!((difference(&dark, &light) - 1.0).abs() < 0.01);
        assert_eq!(difference(&dark, &[]), 1.0);
    }

    #[test]
    fn garbage_bytes_are_a_decode_error() {
        let err = decode(b"\xff\xd8\xff\xe0 not really a jpeg").unwrap_err();
        assert!(err.to_string().starts_with("cannot decode image"), "{err}");
    }
}
