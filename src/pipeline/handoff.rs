//! The capture thread: frames from the source into the slot (latest wins; a replaced frame
//! counted as dropped), camera errors counted and retried with backoff.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::{Counters, Frame, FrameSource, Slot};

pub(super) fn capture_loop(
    source: &mut dyn FrameSource,
    slot: &Slot<Frame>,
    c: &Counters,
    shutdown: &AtomicBool,
    max_frames: Option<u64>,
) {
    let mut backoff = Duration::from_millis(250);
    let mut failing = false;
    while !shutdown.load(Ordering::Relaxed) && max_frames.is_none_or(|m| Counters::get(&c.frames_in) < m) {
        match source.next_frame() {
            Ok(frame) => {
                if failing {
                    log::info!("camera back: {}", source.describe());
                    failing = false;
                }
                backoff = Duration::from_millis(250);
                *c.camera.lock().unwrap_or_else(|e| e.into_inner()) = format!("ok: {}", source.describe());
                Counters::bump(&c.frames_in);
                if slot.put(frame) {
                    Counters::bump(&c.frames_dropped);
                }
            }
            Err(e) => {
                Counters::bump(&c.camera_errors);
                if !failing {
                    log::warn!("{e}; retrying");
                    failing = true;
                }
                *c.camera.lock().unwrap_or_else(|e| e.into_inner()) = format!("error: {e}");
                let end = Instant::now() + backoff;
                while Instant::now() < end && !shutdown.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(20));
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
    c.capture_done.store(true, Ordering::Release);
}
