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

use std::time::{Duration, Instant};

pub use crate::frame::{Frame, PixelFormat};

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
