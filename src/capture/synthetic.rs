//! Synthesized frames for tests and benchmarks: RGB24 colour fields that change "scene" every
//! `scene_every` frames, at a set rate. Deterministic for a given seed.

use std::time::SystemTime;

use super::{CaptureError, Frame, FrameSource, Pacer, PixelFormat};
use crate::rng::SplitMix64;

pub struct SyntheticSource {
    width: u32,
    height: u32,
    scene_every: u64,
    pacer: Pacer,
    seq: u64,
    colour: [u8; 3],
    rng: SplitMix64,
}

impl SyntheticSource {
    pub fn new(width: u32, height: u32, rate: f64, scene_every: u64) -> SyntheticSource {
        SyntheticSource {
            width: width.max(2),
            height: height.max(2),
            scene_every: scene_every.max(1),
            pacer: Pacer::new(rate),
            seq: 0,
            colour: [128; 3],
            rng: SplitMix64::new(7),
        }
    }
}

impl FrameSource for SyntheticSource {
    fn next_frame(&mut self) -> Result<Frame, CaptureError> {
        self.pacer.wait();
        if self.seq.is_multiple_of(self.scene_every) {
            self.colour = [0, 1, 2].map(|_| self.rng.below(256) as u8);
        }
        self.seq += 1;
        let (w, h) = (self.width as usize, self.height as usize);
        let mut pixels = Vec::with_capacity(w * h * 3);
        for y in 0..h {
            for x in 0..w {
                let shade = ((x * 255 / w) as u8) / 2;
                let [r, g, b] = self.colour;
                pixels.extend_from_slice(&[r.wrapping_add(shade), g, b.wrapping_add((y * 64 / h) as u8)]);
            }
        }
        Ok(Frame {
            pixels,
            format: PixelFormat::Rgb24,
            width: self.width,
            height: self.height,
            seq: self.seq,
            ts: SystemTime::now(),
        })
    }

    fn describe(&self) -> String {
        format!("synthetic {}x{}", self.width, self.height)
    }
}
