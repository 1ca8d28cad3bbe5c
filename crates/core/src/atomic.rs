//! Atomic file replacement: write to a temporary file beside the destination,
//! rename it into place on success.
//!
//! Every writer in weightkit goes through [`AtomicFile`], so a failed or
//! abandoned write never leaves a partial file at the destination and never
//! clobbers an existing file there (which may be the very input being read
//! through an mmap: a rename swaps the directory entry and leaves the old
//! inode intact for its readers).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A temporary file that becomes `dest` on [`AtomicFile::commit`] and is
/// deleted if dropped uncommitted.
#[derive(Debug)]
pub struct AtomicFile {
    // Field order matters: on drop the file closes before the guard deletes it.
    file: File,
    guard: TempGuard,
    dest: PathBuf,
}

/// Deletes the temporary file unless disarmed.
#[derive(Debug)]
struct TempGuard(Option<PathBuf>);

impl Drop for TempGuard {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = fs::remove_file(p);
        }
    }
}

impl AtomicFile {
    /// Creates a new temporary file in `dest`'s directory.
    pub fn create(dest: impl AsRef<Path>) -> io::Result<Self> {
        let dest = dest.as_ref().to_path_buf();
        let dir = match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let base = dest
            .file_name()
            .ok_or_else(|| {
                io::Error::new(io::ErrorKind::InvalidInput, "destination has no file name")
            })?
            .to_string_lossy()
            .into_owned();
        loop {
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let temp = dir.join(format!(".{base}.{}.{n}.tmp", std::process::id()));
            match OpenOptions::new().write(true).create_new(true).open(&temp) {
                Ok(file) => {
                    return Ok(AtomicFile {
                        file,
                        guard: TempGuard(Some(temp)),
                        dest,
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// The open temporary file.
    pub fn file(&mut self) -> &mut File {
        &mut self.file
    }

    /// The temporary path (in the destination's directory).
    pub fn temp_path(&self) -> &Path {
        self.guard.0.as_deref().unwrap_or(Path::new(""))
    }

    /// The final path.
    pub fn dest_path(&self) -> &Path {
        &self.dest
    }

    /// Flushes the data to disk and renames the file into place. On error the
    /// temporary file is removed and the destination is untouched.
    pub fn commit(self) -> io::Result<PathBuf> {
        let AtomicFile {
            mut file,
            mut guard,
            dest,
        } = self;
        file.flush()?;
        file.sync_all()?;
        drop(file);
        if let Some(temp) = guard.0.as_deref() {
            fs::rename(temp, &dest)?;
        }
        guard.0 = None;
        // Best effort: make the rename itself durable.
        let dir = match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(dest)
    }
}

impl Seek for AtomicFile {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        self.file.seek(pos)
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.write(buf)
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.file.write_all(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("wk-atomic-{}", std::process::id()));
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn commit_replaces_and_drop_discards() {
        let d = dir();
        let dest = d.join("out.bin");
        fs::write(&dest, b"old").unwrap();
        {
            let mut f = AtomicFile::create(&dest).unwrap();
            f.write_all(b"partial").unwrap();
            assert!(f.temp_path().exists());
        }
        assert_eq!(fs::read(&dest).unwrap(), b"old");
        let leftovers = fs::read_dir(&d).unwrap().count();
        assert_eq!(leftovers, 1);
        let mut f = AtomicFile::create(&dest).unwrap();
        f.write_all(b"new").unwrap();
        f.commit().unwrap();
        assert_eq!(fs::read(&dest).unwrap(), b"new");
        assert_eq!(fs::read_dir(&d).unwrap().count(), 1);
        fs::remove_dir_all(&d).unwrap();
    }
}
