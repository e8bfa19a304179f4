//! Durable small files: replaced atomically (a crash leaves the old or the
//! new content), optionally through a preallocated spare so the write needs
//! no free block. Blocking `std::fs` + fsync: call these on a thread that
//! may block (the main thread at startup, glommio's blocking pool through
//! `glommio::executor().spawn_blocking` on a shard), never on a shard's
//! executor thread directly.

use std::fs;
use std::io::Write;
use std::path::Path;

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
