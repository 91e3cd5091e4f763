//! A V4L2 camera through the `v4l` crate: the only code that knows it.
//!
//! Opens the device on first use and after any failure (so an unplugged camera comes back when
//! it is plugged in again), negotiates size, rate and pixel format, and copies each buffer out
//! at once: the driver's buffers are borrowed and go back to the queue on the next read.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use v4l::buffer::Type;
use v4l::io::mmap::Stream;
use v4l::io::traits::CaptureStream;
use v4l::video::capture::Parameters;
use v4l::video::Capture;
use v4l::{Device, Format, FourCC};

use super::{CaptureError, Frame, FrameSource, PixelFormat};

/// The formats lookd reads, best first when the config says "auto": uncompressed ones cost no
/// decode, NV12/YU12 are what CSI cameras give natively, MJPG saves USB bandwidth.
pub const PREFERENCE: [PixelFormat; 5] =
    [PixelFormat::Nv12, PixelFormat::Yu12, PixelFormat::Yuyv, PixelFormat::Mjpg, PixelFormat::Rgb24];

pub fn from_fourcc(code: &[u8; 4]) -> Option<PixelFormat> {
    match code {
        b"MJPG" | b"JPEG" => Some(PixelFormat::Mjpg),
        b"YUYV" => Some(PixelFormat::Yuyv),
        b"NV12" => Some(PixelFormat::Nv12),
        b"YU12" => Some(PixelFormat::Yu12),
        b"RGB3" => Some(PixelFormat::Rgb24),
        _ => None,
    }
}

pub fn to_fourcc(format: PixelFormat) -> [u8; 4] {
    match format {
        PixelFormat::Mjpg => *b"MJPG",
        PixelFormat::Yuyv => *b"YUYV",
        PixelFormat::Nv12 => *b"NV12",
        PixelFormat::Yu12 => *b"YU12",
        PixelFormat::Rgb24 => *b"RGB3",
    }
}

/// Parses a config name ("mjpg", "yuyv", "nv12", "yu12", "rgb24").
pub fn parse_format(name: &str) -> Option<PixelFormat> {
    PREFERENCE.into_iter().find(|f| format!("{f:?}").eq_ignore_ascii_case(name))
}

/// The format to ask for: the wanted one if offered, else the best offered one we read.
pub fn choose(offered: &[PixelFormat], wanted: Option<PixelFormat>) -> Result<PixelFormat, String> {
    match wanted {
        Some(w) if offered.contains(&w) => Ok(w),
        Some(w) => Err(format!("the device does not offer {w:?} (it offers {offered:?})")),
        None => PREFERENCE
            .into_iter()
            .find(|f| offered.contains(f))
            .ok_or_else(|| format!("the device offers none of the formats lookd reads ({PREFERENCE:?})")),
    }
}

/// The format to ask for, and what to say about it: a wanted format the device does not offer
/// falls back to the best one it does (a camera that lacks MJPG still works), with a warning.
pub fn negotiate(
    offered: &[PixelFormat],
    wanted: Option<PixelFormat>,
) -> Result<(PixelFormat, Option<String>), String> {
    match choose(offered, wanted) {
        Ok(f) => Ok((f, None)),
        Err(why) if wanted.is_some() => {
            let f = choose(offered, None)?;
            Ok((f, Some(format!("{why}; using {f:?}"))))
        }
        Err(why) => Err(why),
    }
}

/// The format of the frames to come: what the driver says it set, which need not be what was
/// asked (a driver may answer an MJPG request with YUYV). `None` when lookd cannot read it.
/// What to say when the driver settles on another frame rate than the one asked (its frame
/// interval is numerator/denominator seconds); None when they agree to within 1%.
pub fn rate_warning(asked_fps: u32, numerator: u32, denominator: u32) -> Option<String> {
    if numerator == 0 || asked_fps == 0 {
        return None;
    }
    let got = f64::from(denominator) / f64::from(numerator);
    let asked = f64::from(asked_fps);
    ((got - asked).abs() > asked * 0.01)
        .then(|| format!("asked for {asked_fps} fps, the driver set {got:.2} fps"))
}

pub fn settled(asked: PixelFormat, driver: &[u8; 4]) -> Result<(PixelFormat, Option<String>), String> {
    match from_fourcc(driver) {
        Some(f) if f == asked => Ok((f, None)),
        Some(f) => Ok((f, Some(format!("asked for {asked:?}, the driver set {f:?}: reading {f:?}")))),
        None => Err(format!(
            "asked for {asked:?}, the driver set {:?}, which lookd does not read",
            String::from_utf8_lossy(driver)
        )),
    }
}

/// Removes row padding: `stride` bytes per row in, `row` bytes per row out.
pub fn unpad(bytes: &[u8], stride: usize, row: usize, rows: usize) -> Vec<u8> {
    if stride == row || stride == 0 {
        return bytes[..(row * rows).min(bytes.len())].to_vec();
    }
    bytes.chunks(stride).take(rows).flat_map(|r| &r[..row.min(r.len())]).copied().collect()
}

struct Open {
    stream: Stream<'static>,
    format: PixelFormat,
    width: u32,
    height: u32,
    stride: u32,
}

pub struct V4lSource {
    device: PathBuf,
    width: u32,
    height: u32,
    fps: u32,
    wanted: Option<PixelFormat>,
    open: Option<Open>,
    seq: u64,
}

impl V4lSource {
    pub fn new(device: PathBuf, width: u32, height: u32, fps: u32, wanted: Option<PixelFormat>) -> V4lSource {
        V4lSource { device, width, height, fps, wanted, open: None, seq: 0 }
    }

    fn open(&self) -> Result<Open, CaptureError> {
        let unavailable = |what: &str, e: std::io::Error| {
            CaptureError::Unavailable(format!("{} {what}: {e}", self.device.display()))
        };
        let dev = Device::with_path(&self.device).map_err(|e| unavailable("cannot be opened", e))?;
        let offered: Vec<PixelFormat> = dev
            .enum_formats()
            .map_err(|e| unavailable("lists no formats", e))?
            .iter()
            .filter_map(|d| from_fourcc(&d.fourcc.repr))
            .collect();
        let said = |m: String| CaptureError::Unavailable(format!("{}: {m}", self.device.display()));
        let (asked_format, warning) = negotiate(&offered, self.wanted).map_err(said)?;
        if let Some(w) = warning {
            log::warn!("{}: {w}", self.device.display());
        }
        let asked = Format::new(self.width, self.height, FourCC::new(&to_fourcc(asked_format)));
        let got = dev.set_format(&asked).map_err(|e| unavailable("refused the format", e))?;
        let (format, warning) = settled(asked_format, &got.fourcc.repr).map_err(said)?;
        if let Some(w) = warning {
            log::warn!("{}: {w}", self.device.display());
        }
        if (got.width, got.height) != (self.width, self.height) {
            log::warn!(
                "{}: asked for {}x{}, the driver set {}x{}: reading {}x{}",
                self.device.display(),
                self.width,
                self.height,
                got.width,
                got.height,
                got.width,
                got.height
            );
        }
        match dev.set_params(&Parameters::with_fps(self.fps)) {
            Err(e) => log::warn!("{}: cannot set {} fps: {e}", self.device.display(), self.fps),
            Ok(p) => {
                if let Some(w) = rate_warning(self.fps, p.interval.numerator, p.interval.denominator) {
                    log::warn!("{}: {w}", self.device.display());
                }
            }
        }
        let mut stream =
            Stream::with_buffers(&dev, Type::VideoCapture, 4).map_err(|e| unavailable("cannot stream", e))?;
        stream.set_timeout(Duration::from_secs(2));
        log::info!("{}: {}x{} {format:?}", self.device.display(), got.width, got.height);
        Ok(Open { stream, format, width: got.width, height: got.height, stride: got.stride })
    }
}

impl FrameSource for V4lSource {
    fn next_frame(&mut self) -> Result<Frame, CaptureError> {
        if self.open.is_none() {
            self.open = Some(self.open()?);
        }
        let Some(o) = self.open.as_mut() else { return Err(CaptureError::Unavailable("not open".into())) };
        let (format, width, height, stride) = (o.format, o.width, o.height, o.stride as usize);
        let read = o.stream.next().map(|(buf, meta)| {
            // Copy out now: the buffer goes back to the driver on the next read.
            let used = (meta.bytesused as usize).min(buf.len());
            let used = if used == 0 { buf.len() } else { used };
            match format.row_len(width) {
                Some(row) => unpad(&buf[..used], stride, row, height as usize),
                None => buf[..used].to_vec(),
            }
        });
        match read {
            Ok(pixels) => {
                self.seq += 1;
                Ok(Frame { pixels, format, width, height, seq: self.seq, ts: SystemTime::now() })
            }
            Err(e) => {
                // Drop the stream; the next call reopens the device (unplug, replug).
                self.open = None;
                Err(CaptureError::Read(format!("{}: {e}", self.device.display())))
            }
        }
    }

    fn describe(&self) -> String {
        match &self.open {
            Some(o) => format!("{} {}x{} {:?}", self.device.display(), o.width, o.height, o.format),
            None => format!("{} (closed)", self.device.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fourcc_round_trip() {
        for f in PREFERENCE {
            assert_eq!(from_fourcc(&to_fourcc(f)), Some(f));
        }
        assert_eq!(from_fourcc(b"H264"), None);
        assert_eq!(parse_format("mjpg"), Some(PixelFormat::Mjpg));
        assert_eq!(parse_format("rgb24"), Some(PixelFormat::Rgb24));
    }

    #[test]
    fn format_choice() {
        use PixelFormat::*;
        assert_eq!(choose(&[Mjpg, Yuyv], None), Ok(Yuyv));
        assert_eq!(choose(&[Mjpg, Yuyv], Some(Mjpg)), Ok(Mjpg));
        assert!(choose(&[Mjpg], Some(Nv12)).unwrap_err().contains("does not offer Nv12"));
        assert!(choose(&[], None).is_err());
    }

    #[test]
    fn a_wanted_format_the_device_lacks_falls_back_with_a_warning() {
        use PixelFormat::*;
        // vivid offers no compressed format: MJPG asked gives the best it does offer.
        let (f, warning) = negotiate(&[Yuyv, Nv12, Rgb24], Some(Mjpg)).unwrap();
        assert_eq!(f, Nv12);
        assert_eq!(
            warning.unwrap(),
            "the device does not offer Mjpg (it offers [Yuyv, Nv12, Rgb24]); using Nv12"
        );
        assert_eq!(negotiate(&[Yuyv, Mjpg], Some(Mjpg)).unwrap(), (Mjpg, None));
        assert!(negotiate(&[], Some(Mjpg)).is_err());
    }

    #[test]
    fn a_rate_the_driver_changed_is_said_and_an_agreeing_one_is_not() {
        assert_eq!(rate_warning(25, 1, 25), None);
        assert_eq!(rate_warning(30, 1001, 30000), None); // 29.97 is within 1% of 30
        assert_eq!(rate_warning(25, 1, 5).unwrap(), "asked for 25 fps, the driver set 5.00 fps");
        assert_eq!(rate_warning(25, 2, 25).unwrap(), "asked for 25 fps, the driver set 12.50 fps");
        assert_eq!(rate_warning(25, 0, 0), None); // a driver that says nothing
    }

    #[test]
    fn the_driver_s_answer_decides_the_conversion() {
        use PixelFormat::*;
        assert_eq!(settled(Yuyv, b"YUYV").unwrap(), (Yuyv, None));
        let (f, warning) = settled(Mjpg, b"YUYV").unwrap();
        assert_eq!(f, Yuyv, "frames are converted as what the driver sends");
        assert!(warning.unwrap().contains("asked for Mjpg, the driver set Yuyv"));
        assert!(settled(Yuyv, b"H264").unwrap_err().contains("\"H264\", which lookd does not read"));
    }

    #[test]
    fn padding_is_removed() {
        assert_eq!(unpad(&[1, 2, 0, 3, 4, 0], 3, 2, 2), [1, 2, 3, 4]);
        assert_eq!(unpad(&[1, 2, 3, 4], 2, 2, 2), [1, 2, 3, 4]);
    }

    #[test]
    fn a_missing_camera_is_a_clear_error() {
        let mut s = V4lSource::new("/dev/video-lookd-missing".into(), 640, 480, 15, None);
        let err = s.next_frame().unwrap_err();
        assert!(
            matches!(&err, CaptureError::Unavailable(m) if m.contains("/dev/video-lookd-missing cannot be opened")),
            "{err}"
        );
    }
}
