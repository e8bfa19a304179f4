//! Durable small files: replaced atomically (a crash leaves the old or the
//! new content), optionally through a preallocated spare so the write needs
//! no free block. Blocking `std::fs` + fsync: call these on a thread that
//! may block (the main thread at startup, glommio's blocking pool through
//! `glommio::executor().spawn_blocking` on a shard), never on a shard's
//! executor thread directly.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

/// A spare holds at least this much, and at least twice its file.
pub const SPARE_BYTES_MIN: u64 = 64 << 10;

/// Replaces `path` with `bytes` so that a crash leaves either the old or
/// the new content: write a temporary file, fdatasync it, rename it over
/// `path`, fsync the directory.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = path.with_extension("tmp");
    {
        let mut file = fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_data()?;
    }
    fs::rename(&tmp, path)?;
    fs::File::open(dir)?.sync_all()
}

/// A small file replaced atomically through a preallocated spare
/// (`<name>.spare` beside it, never read): writing inside allocated blocks,
/// cutting the file and renaming it need no free block, so the file can
/// be rewritten (e.g. to give space back) on a full disk. The spare is
/// preallocated again after each write for the next one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SparedFile {
    pub path: PathBuf,
    pub spare: PathBuf,
}

impl SparedFile {
    pub fn new(path: PathBuf, spare: PathBuf) -> SparedFile {
        SparedFile { path, spare }
    }

    /// Preallocates the spare for the file's current size unless it is
    /// already (best effort, as [`reserve_spare`]).
    pub fn reserve(&self) {
        let len = fs::metadata(&self.path).map_or(0, |m| m.len());
        if !spare_holds(&self.spare, spare_bytes(len)) {
            reserve_spare(&self.spare, spare_bytes(len));
        }
    }

    /// Replaces the file with `bytes` (see [`write_through_spare`]).
    pub fn write(&self, bytes: &[u8]) -> std::io::Result<()> {
        write_through_spare(&self.path, &self.spare, bytes)
    }
}

/// Size of the spare for a file of `len` bytes.
fn spare_bytes(len: u64) -> u64 {
    SPARE_BYTES_MIN.max(len.saturating_mul(2))
}

/// Whether `spare` has `len` bytes allocated (by `reserve_spare`).
fn spare_holds(spare: &Path, len: u64) -> bool {
    use std::os::unix::fs::MetadataExt;
    fs::metadata(spare).is_ok_and(|m| m.is_file() && m.len() >= len && m.blocks() * 512 >= len)
}

/// Preallocates `spare` (best effort: a full disk leaves none, and the
/// next write then needs free space as any file does).
fn reserve_spare(spare: &Path, len: u64) {
    use std::os::fd::AsRawFd;
    let reserved = fs::File::create(spare).and_then(|file| {
        let len = libc::off_t::try_from(len).map_err(std::io::Error::other)?;
        // SAFETY: posix_fallocate on a descriptor we own; no memory passed.
        match unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, len) } {
            0 => Ok(()),
            errno => Err(std::io::Error::from_raw_os_error(errno)),
        }
    });
    if let Err(error) = reserved {
        tracing::warn!(
            path = %spare.display(),
            %error,
            "cannot preallocate a spare file; rewriting its file (e.g. deleting a topic) on a full disk may fail until it can be"
        );
        let _ = fs::remove_file(spare);
    }
}

/// [`write_atomically`] through the preallocated `spare` when it holds
/// `bytes`: writing inside allocated blocks and cutting the file needs no
/// free space, and the rename frees the old file's blocks. Then a new
/// spare is preallocated for the next write.
fn write_through_spare(path: &Path, spare: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let len = bytes.len() as u64;
    if spare_holds(spare, len) {
        let mut file = fs::OpenOptions::new().write(true).open(spare)?;
        file.write_all(bytes)?;
        file.set_len(len)?;
        file.sync_data()?;
        drop(file);
        fs::rename(spare, path)?;
        fs::File::open(path.parent().unwrap_or(Path::new(".")))?.sync_all()?;
    } else {
        write_atomically(path, bytes)?;
    }
    reserve_spare(spare, spare_bytes(len));
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;

    #[test]
    fn writes_replace_the_file_through_the_spare_when_it_holds_them() {
        let dir = tempfile::tempdir().unwrap();
        let file = SparedFile::new(dir.path().join("f.toml"), dir.path().join("f.spare"));
        write_atomically(&file.path, b"one").unwrap();
        assert_eq!(fs::read(&file.path).unwrap(), b"one");
        assert!(!file.path.with_extension("tmp").exists());
        file.reserve();
        let spare = fs::metadata(&file.spare).unwrap();
        assert!(spare.blocks() * 512 >= SPARE_BYTES_MIN);
        file.write(b"two").unwrap();
        assert_eq!(fs::read(&file.path).unwrap(), b"two");
        assert_eq!(fs::metadata(&file.path).unwrap().ino(), spare.ino());
        assert!(fs::metadata(&file.spare).unwrap().blocks() * 512 >= SPARE_BYTES_MIN);
        // Larger than the spare: written the plain atomic way, and the
        // next spare is sized for it.
        let big = vec![b'x'; (SPARE_BYTES_MIN + 1) as usize];
        file.write(&big).unwrap();
        assert_eq!(fs::read(&file.path).unwrap(), big);
        assert!(fs::metadata(&file.spare).unwrap().len() >= 2 * big.len() as u64);
    }
}
