//! `lookd camera grab`: a few frames from a V4L2 camera through lookd's own capture path, and
//! what lookd makes of the last one: the bytes as handed to the pipeline, the RGB picture and
//! the model's input. For checking a camera (and lookd against it) before a mirror goes live.

use std::path::PathBuf;

use anyhow::Context;
use lookd::capture::FrameSource;

use super::code;

#[derive(clap::Subcommand)]
pub enum Command {
    /// Read frames from a V4L2 device and write the last one: frame.raw (the bytes lookd
    /// converts, row padding removed), frame.json (format and size), frame.ppm (its RGB) and
    /// input.ppm (the model's input)
    Grab {
        #[arg(long, default_value = "/dev/video0")]
        device: PathBuf,
        #[arg(long, default_value_t = 640)]
        width: u32,
        #[arg(long, default_value_t = 480)]
        height: u32,
        #[arg(long, default_value_t = 15)]
        fps: u32,
        /// auto, mjpg, yuyv, nv12, yu12 or rgb24 (as the config's camera.format)
        #[arg(long, default_value = "auto")]
        format: String,
        /// Frames to read; the last is written (the first ones may still be settling)
        #[arg(long, default_value_t = 5)]
        frames: usize,
        /// Model folder whose input size applies
        #[arg(long, default_value = "models/default")]
        model: PathBuf,
        #[arg(long)]
        out: PathBuf,
    },
}

pub fn run(cmd: Command) -> anyhow::Result<i32> {
    let Command::Grab { device, width, height, fps, format, frames, model, out } = cmd;
    grab(device, (width, height, fps), &format, frames, &model, &out)
}

#[cfg(target_os = "linux")]
fn grab(
    device: PathBuf,
    (width, height, fps): (u32, u32, u32),
    format: &str,
    frames: usize,
    model: &std::path::Path,
    out: &std::path::Path,
) -> anyhow::Result<i32> {
    use lookd::capture::v4l::{parse_format, V4lSource};
    use lookd::preprocess;
    let wanted = match format {
        "auto" => None,
        name => Some(
            parse_format(name).ok_or_else(|| super::UserError(format!("unknown camera format {name:?}")))?,
        ),
    };
    let folder = lookd::model::ModelFolder::open(model)?;
    let (w, h) = (folder.manifest.input.width, folder.manifest.input.height);
    let mut source = V4lSource::new(device, width, height, fps, wanted);
    let mut last = None;
    for _ in 0..frames.max(1) {
        last = Some(source.next_frame()?);
    }
    let frame = last.context("no frame")?;
    let rgb = preprocess::pixel::to_rgb(&frame)?;
    // The picture the daemon gives the model (YUV resized before it is converted), not a resize
    // of frame.ppm: tests/camera/vivid compares the two.
    let input = preprocess::pixel::model_image(&frame, None, false, w as u32, h as u32)?;
    let write = |name: &str, bytes: &[u8]| {
        lookd::cache::build::write_atomically(&out.join(name), bytes)
            .with_context(|| format!("writing {name}"))
    };
    write("frame.raw", &frame.pixels)?;
    let meta = serde_json::json!({"format": format!("{:?}", frame.format), "width": frame.width,
        "height": frame.height, "bytes": frame.pixels.len(), "source": source.describe()});
    write("frame.json", meta.to_string().as_bytes())?;
    write("frame.ppm", &ppm(&rgb))?;
    write("input.ppm", &ppm(&input))?;
    eprintln!("{}: frame {} written to {}", source.describe(), frame.seq, out.display());
    Ok(code::OK)
}

#[cfg(not(target_os = "linux"))]
fn grab(
    _: PathBuf,
    _: (u32, u32, u32),
    _: &str,
    _: usize,
    _: &std::path::Path,
    _: &std::path::Path,
) -> anyhow::Result<i32> {
    anyhow::bail!("V4L2 cameras exist on Linux only")
}

/// A binary PPM (P6): readable by anything, no codec needed.
fn ppm(img: &image::RgbImage) -> Vec<u8> {
    let mut out = format!("P6\n{} {}\n255\n", img.width(), img.height()).into_bytes();
    out.extend_from_slice(img.as_raw());
    out
}
