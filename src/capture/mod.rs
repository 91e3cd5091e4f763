//! Frames and where they come from.
//!
//! `Frame` is plain data: bytes as the source delivered them (copied out of any driver buffer
//! at once), their format, size, sequence number and capture time. A `FrameSource` is anything
//! that yields frames: a V4L2 camera (`v4l`, the only code that knows the v4l crate), a folder of
//! images replayed at a set rate, or synthesized test frames. Sources never decode or wait for
//! inference; a failure is reported as an error and the caller retries.

use std::time::SystemTime;

/// How a frame's bytes are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PixelFormat {
    /// Motion JPEG: each frame a JPEG.
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
    pub fn frame_len(self, width: u32, height: u32) -> Option<usize> {
        let (w, h) = (width as usize, height as usize);
        match self {
            PixelFormat::Mjpg => None,
            PixelFormat::Yuyv => Some(w * h * 2),
            PixelFormat::Nv12 | PixelFormat::Yu12 => Some(w * h + 2 * w.div_ceil(2) * h.div_ceil(2)),
            PixelFormat::Rgb24 => Some(w * h * 3),
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
