//! Replays a folder of images (or one image) at a set rate, in a loop, in name order: the demo's
//! and the tests' camera. The folder is listed again whenever it runs out, so files can be added
//! or removed while it runs; a missing or empty folder is reported and retried, like an unplugged
//! camera.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::{CaptureError, Frame, FrameSource, Pacer, PixelFormat};

pub struct FolderSource {
    path: PathBuf,
    files: Vec<PathBuf>,
    next: usize,
    pacer: Pacer,
    seq: u64,
}

impl FolderSource {
    pub fn new(path: &Path, rate: f64) -> FolderSource {
        FolderSource { path: path.to_path_buf(), files: Vec::new(), next: 0, pacer: Pacer::new(rate), seq: 0 }
    }

    fn list(&self) -> Result<Vec<PathBuf>, CaptureError> {
        if self.path.is_file() {
            return Ok(vec![self.path.clone()]);
        }
        let entries = std::fs::read_dir(&self.path)
            .map_err(|e| CaptureError::Unavailable(format!("{}: {e}", self.path.display())))?;
        let mut files: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                let ext = p.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
                matches!(ext.as_str(), "jpg" | "jpeg" | "png")
            })
            .collect();
        files.sort();
        if files.is_empty() {
            return Err(CaptureError::Unavailable(format!("{}: no .jpg or .png files", self.path.display())));
        }
        Ok(files)
    }
}

impl FrameSource for FolderSource {
    fn next_frame(&mut self) -> Result<Frame, CaptureError> {
        self.pacer.wait();
        if self.next >= self.files.len() {
            self.files = self.list()?;
            self.next = 0;
        }
        let path = &self.files[self.next];
        self.next += 1;
        let pixels =
            std::fs::read(path).map_err(|e| CaptureError::Read(format!("{}: {e}", path.display())))?;
        self.seq += 1;
        Ok(Frame {
            pixels,
            format: PixelFormat::Mjpg,
            width: 0,
            height: 0,
            seq: self.seq,
            ts: SystemTime::now(),
        })
    }

    fn describe(&self) -> String {
        format!("folder {}", self.path.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replays_in_name_order_and_loops() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["b.png", "a.jpg", "notes.txt"] {
            std::fs::write(dir.path().join(name), name).unwrap();
        }
        let mut s = FolderSource::new(dir.path(), 1000.0);
        let got: Vec<Vec<u8>> = (0..3).map(|_| s.next_frame().unwrap().pixels).collect();
        assert_eq!(got, [b"a.jpg".to_vec(), b"b.png".to_vec(), b"a.jpg".to_vec()]);
    }

    #[test]
    fn missing_folder_is_unavailable_then_recovers() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("cam");
        let mut s = FolderSource::new(&sub, 1000.0);
        assert!(matches!(s.next_frame(), Err(CaptureError::Unavailable(m)) if m.contains("cam")));
        std::fs::create_dir(&sub).unwrap();
        assert!(matches!(s.next_frame(), Err(CaptureError::Unavailable(m)) if m.contains("no .jpg or .png")));
        std::fs::write(sub.join("x.jpg"), b"x").unwrap();
        assert_eq!(s.next_frame().unwrap().pixels, b"x");
    }
}
