//! Frames and where they come from.
//!
//! `Frame` is plain data: bytes as the source delivered them (copied out of any driver buffer
//! at once), their format, size, sequence number and capture time. A `FrameSource` is anything
//! that yields frames: a V4L2 camera (`v4l`, the only code that knows the v4l crate), a folder of
//! images replayed at a set rate, or synthesized test frames. Sources never decode or wait for
//! inference; a failure is reported as an error and the caller retries.

pub mod folder;
pub mod synthetic;
#[cfg(target_os = "linux")]
pub mod v4l;

use std::time::{Duration, Instant, SystemTime};

/// Anything that yields frames. `next_frame` blocks until a frame is due (sources pace
/// themselves) and returns an error, never panics, when the device or files fail; the caller
/// retries with backoff, and the source reopens what it needs on the next call.
pub trait FrameSource: Send {
    fn next_frame(&mut self) -> Result<Frame, CaptureError>;
    /// A short description for logs and stats ("/dev/video0 1280x720 MJPG").
    fn describe(&self) -> String;
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CaptureError {
    /// The device or folder is not there, or cannot be opened (yet).
    #[error("camera unavailable: {0}")]
    Unavailable(String),
    /// It was open, and reading from it failed; it will be reopened.
    #[error("camera read failed: {0}")]
    Read(String),
}

/// Keeps a source at its rate: `wait` sleeps until the next frame is due.
#[derive(Debug)]
pub struct Pacer {
    interval: Duration,
    next: Option<Instant>,
}

impl Pacer {
    pub fn new(rate: f64) -> Pacer {
        Pacer { interval: Duration::from_secs_f64(1.0 / rate.max(1e-3)), next: None }
    }

    pub fn wait(&mut self) {
        let now = Instant::now();
        let due = self.next.unwrap_or(now);
        if due > now {
            std::thread::sleep(due - now);
        }
        // Never bank time: after a stall the source resumes at its rate, it does not burst.
        self.next = Some(due.max(now) + self.interval);
    }
}

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
