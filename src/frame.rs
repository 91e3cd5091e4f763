//! A camera frame as plain data, and how its bytes are laid out: what the capture sources make
//! and the pure pixel conversions read. It knows no camera.

use std::time::SystemTime;

/// How a frame's bytes are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PixelFormat {
    /// Motion JPEG: each frame a JPEG (the folder source also sends PNG files as this).
    Mjpg,
    /// Packed 4:2:2: Y0 U Y1 V per two pixels.
    Yuyv,
    /// Planar Y, then interleaved U V at half width and height.
    Nv12,
    /// Planar Y, then U, then V, each at half width and height (I420).
    Yu12,
    /// Packed R G B.
    Rgb24,
}

impl PixelFormat {
    /// The exact byte count of a `width` x `height` frame, or `None` for compressed formats.
    /// Saturating: a size whose byte count overflows gives `usize::MAX`, which no buffer has.
    pub fn frame_len(self, width: u32, height: u32) -> Option<usize> {
        let (w, h) = (width as usize, height as usize);
        match self {
            PixelFormat::Mjpg => None,
            PixelFormat::Nv12 | PixelFormat::Yu12 => {
                let chroma = w.div_ceil(2).saturating_mul(h.div_ceil(2)).saturating_mul(2);
                Some(w.saturating_mul(h).saturating_add(chroma))
            }
            PixelFormat::Yuyv | PixelFormat::Rgb24 => self.row_len(width).map(|row| row.saturating_mul(h)),
        }
    }

    /// The unpadded byte length of one row of a packed format (YUYV, RGB24), else `None`.
    pub fn row_len(self, width: u32) -> Option<usize> {
        let w = width as usize;
        match self {
            // A row holds whole Y U Y V groups: an odd width is padded to the next pair.
            PixelFormat::Yuyv => Some(w.div_ceil(2) * 4),
            PixelFormat::Rgb24 => Some(w.saturating_mul(3)),
            PixelFormat::Mjpg | PixelFormat::Nv12 | PixelFormat::Yu12 => None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Frame {
    pub pixels: Vec<u8>,
    pub format: PixelFormat,
    pub width: u32,
    pub height: u32,
    pub seq: u64,
    pub ts: SystemTime,
}
