//! A model folder as one file, for the fleet: a plain (uncompressed) tar of the folder's files,
//! flat, as `tar -cf model.tar -C folder .` would make it. The only module that knows the `tar`
//! crate.
//!
//! Unpacking trusts nothing in the archive: only regular files with a plain name (no folder, no
//! `..`, no absolute path, no link or device) are written, each into the destination folder, and
//! the total is bounded, so a hostile archive cannot write outside it or fill the disk.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// The most files a model archive may hold (a model folder has a handful).
pub const MAX_FILES: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("{path}: not a model archive: {message}")]
    Bad { path: PathBuf, message: String },
}

/// Packs the regular files directly in `dir` (sorted by name; sub-folders and dot-files left out)
/// into a tar at `out`. Returns the names packed.
pub fn pack(dir: &Path, out: &Path) -> Result<Vec<String>, ArchiveError> {
    let read = |source| ArchiveError::Read { path: dir.to_path_buf(), source };
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(read)? {
        let entry = entry.map_err(read)?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if entry.file_type().map_err(read)?.is_file() && plain_name(&name) {
            names.push(name);
        }
    }
    names.sort();
    let write = |source| ArchiveError::Write { path: out.to_path_buf(), source };
    let file = std::fs::File::create(out).map_err(write)?;
    let mut tar = tar::Builder::new(std::io::BufWriter::new(file));
    tar.mode(tar::HeaderMode::Deterministic);
    for name in &names {
        let path = dir.join(name);
        let mut f = std::fs::File::open(&path).map_err(|source| ArchiveError::Read { path, source })?;
        tar.append_file(name, &mut f).map_err(write)?;
    }
    let mut inner = tar.into_inner().map_err(write)?;
    inner.flush().map_err(write)?;
    inner.into_inner().map_err(|e| write(e.into_error()))?.sync_all().map_err(write)?;
    Ok(names)
}

/// Unpacks `archive` into `dest` (created; it must not hold files of the same names), writing at
/// most `max_bytes` in all. Returns the names written. Anything but a plain file is refused.
pub fn unpack(archive: &Path, dest: &Path, max_bytes: u64) -> Result<Vec<String>, ArchiveError> {
    let bad = |message: String| ArchiveError::Bad { path: archive.to_path_buf(), message };
    let file =
        std::fs::File::open(archive).map_err(|source| ArchiveError::Read { path: archive.into(), source })?;
    std::fs::create_dir_all(dest).map_err(|source| ArchiveError::Write { path: dest.into(), source })?;
    let mut tar = tar::Archive::new(std::io::BufReader::new(file));
    let (mut names, mut total) = (Vec::<String>::new(), 0u64);
    for entry in tar.entries().map_err(|e| bad(e.to_string()))? {
        let mut entry = entry.map_err(|e| bad(e.to_string()))?;
        let kind = entry.header().entry_type();
        let raw = entry.path().map_err(|e| bad(e.to_string()))?.to_string_lossy().into_owned();
        // `tar -C folder .` writes `./` and `./name`: the folder itself, and names under it.
        let name = raw.strip_prefix("./").unwrap_or(&raw);
        if kind.is_dir() && name.is_empty() {
            continue;
        }
        if !kind.is_file() {
            return Err(bad(format!("{raw:?} is not a plain file ({kind:?})")));
        }
        if !plain_name(name) {
            return Err(bad(format!("{raw:?} is not a plain file name in the archive's top folder")));
        }
        if names.iter().any(|n| n == name) {
            return Err(bad(format!("{name:?} is in it twice")));
        }
        if names.len() == MAX_FILES {
            return Err(bad(format!("more than {MAX_FILES} files")));
        }
        total = total.saturating_add(entry.size());
        if total > max_bytes {
            return Err(bad(format!("its files hold more than {max_bytes} bytes")));
        }
        let path = dest.join(name);
        let write = |source| ArchiveError::Write { path: path.clone(), source };
        let mut out = std::fs::File::create_new(&path).map_err(write)?;
        let mut buf = vec![0u8; 1 << 16];
        let mut left = entry.size();
        while left > 0 {
            let n = entry.read(&mut buf).map_err(|e| bad(format!("{name}: {e}")))?;
            if n == 0 {
                return Err(bad(format!("{name}: the archive ends inside it")));
            }
            out.write_all(&buf[..n]).map_err(write)?;
            left = left.saturating_sub(n as u64);
        }
        out.sync_all().map_err(write)?;
        names.push(name.to_string());
    }
    if names.is_empty() {
        return Err(bad("it holds no files".into()));
    }
    Ok(names)
}

/// A file name that stays in its folder: no separator, not `.` or `..`, not hidden, not empty.
fn plain_name(name: &str) -> bool {
    !name.is_empty() && !name.starts_with('.') && !name.contains(['/', '\\', '\0']) && name.len() <= 200
}

#[cfg(test)]
mod tests {
    use super::*;

    fn folder(files: &[(&str, &[u8])]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (name, bytes) in files {
            std::fs::write(dir.path().join(name), bytes).unwrap();
        }
        dir
    }

    #[test]
    fn a_folder_packs_and_unpacks_to_the_same_files() {
        let src = folder(&[("manifest.toml", b"format = 1\n"), ("embed.onnx", &[0, 1, 2, 255])]);
        std::fs::create_dir(src.path().join("sub")).unwrap();
        std::fs::write(src.path().join(".hidden"), b"x").unwrap();
        let out = tempfile::tempdir().unwrap();
        let tar = out.path().join("m.tar");
        assert_eq!(pack(src.path(), &tar).unwrap(), ["embed.onnx", "manifest.toml"]);
        let dest = out.path().join("unpacked");
        assert_eq!(unpack(&tar, &dest, 1 << 20).unwrap(), ["embed.onnx", "manifest.toml"]);
        assert_eq!(std::fs::read(dest.join("embed.onnx")).unwrap(), [0, 1, 2, 255]);
        assert_eq!(std::fs::read(dest.join("manifest.toml")).unwrap(), b"format = 1\n");
        let again = out.path().join("again.tar");
        pack(src.path(), &again).unwrap();
        assert_eq!(std::fs::read(&tar).unwrap(), std::fs::read(&again).unwrap(), "deterministic");
    }

    /// One entry of a hand-made tar: name, type, content.
    type Entry<'a> = (&'a str, tar::EntryType, &'a [u8]);

    /// Builds a tar by hand: a header per entry, as a hostile centre (or a broken disk) could.
    fn hostile(entries: &[Entry]) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.tar");
        let mut tar = tar::Builder::new(std::fs::File::create(&path).unwrap());
        for (name, kind, bytes) in entries {
            let mut h = tar::Header::new_gnu();
            // Written raw: `set_path` itself refuses `..`, a hostile tool would not.
            h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
            h.set_entry_type(*kind);
            h.set_size(bytes.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            tar.append(&h, *bytes).unwrap();
        }
        tar.finish().unwrap();
        (dir, path)
    }

    #[test]
    fn an_archive_that_reaches_outside_its_folder_or_holds_too_much_is_refused_by_name() {
        use tar::EntryType::{Directory, Regular, Symlink};
        let cases: [(&[Entry], &str); 6] = [
            (&[("../evil", Regular, b"x")], "not a plain file name"),
            (&[("/etc/evil", Regular, b"x")], "not a plain file name"),
            (&[("sub/evil", Regular, b"x")], "not a plain file name"),
            (&[("link", Symlink, b"")], "is not a plain file"),
            (&[("d", Directory, b"")], "is not a plain file"),
            (&[("a", Regular, &[1; 600]), ("b", Regular, &[2; 600])], "more than 1000 bytes"),
        ];
        for (entries, why) in cases {
            let (dir, tar) = hostile(entries);
            let dest = dir.path().join("out");
            let e = unpack(&tar, &dest, 1000).unwrap_err().to_string();
            assert!(e.contains(why), "{entries:?}: {e}");
            assert!(!dir.path().join("evil").exists() && !Path::new("/etc/evil").exists());
        }
        let (dir, tar) = hostile(&[("a", Regular, b"1"), ("a", Regular, b"2")]);
        assert!(unpack(&tar, &dir.path().join("o"), 1000).unwrap_err().to_string().contains("twice"));
    }

    #[test]
    fn a_truncated_or_foreign_file_is_not_a_model_archive() {
        let src = folder(&[("embed.onnx", &[9; 5000])]);
        let out = tempfile::tempdir().unwrap();
        let tar = out.path().join("m.tar");
        pack(src.path(), &tar).unwrap();
        let bytes = std::fs::read(&tar).unwrap();
        std::fs::write(&tar, &bytes[..3000]).unwrap();
        let e = unpack(&tar, &out.path().join("a"), 1 << 20).unwrap_err().to_string();
        assert!(e.contains("not a model archive"), "{e}");
        std::fs::write(&tar, b"PK\x03\x04 a zip, not a tar").unwrap();
        let e = unpack(&tar, &out.path().join("b"), 1 << 20).unwrap_err().to_string();
        assert!(e.contains("not a model archive"), "{e}");
    }
}
