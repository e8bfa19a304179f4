//! The data directory: created and checked at startup, and held with an
//! exclusive `flock` for the broker's lifetime so two brokers never share
//! it. Also where the broker publishes its address (`broker.addr`).

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use crate::error::BrokerError;

pub const LOCK_FILE: &str = "fjord.lock";
/// Holds the shared native-protocol address (`HOST:PORT` and a newline)
/// while the broker serves; removed on clean shutdown.
pub const ADDR_FILE: &str = "broker.addr";
/// The bound Kafka listener address, for tests and scripts.
pub const KAFKA_ADDR_FILE: &str = "kafka.addr";

/// An exclusively locked data directory. The lock is released when this is
/// dropped or the process exits (the kernel drops `flock`s with the file).
#[derive(Debug)]
pub struct DataDir {
    path: PathBuf,
    _lock: File,
}

impl DataDir {
    /// Creates `path` if needed, checks it is writable and takes the lock.
    pub fn open(path: &Path) -> Result<DataDir, BrokerError> {
        let unusable = |source: io::Error| BrokerError::DataDirUnusable {
            path: path.to_owned(),
            source,
        };
        std::fs::create_dir_all(path).map_err(unusable)?;
        // Absolute from here on: glommio opens directories through io_uring,
        // where a relative path fails with EBADF (the default data dir is
        // the relative `./fjord-data`).
        let path = &std::fs::canonicalize(path).map_err(unusable)?;
        let mut lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path.join(LOCK_FILE))
            .map_err(unusable)?;
        // SAFETY: `lock` owns an open descriptor for the whole call; flock
        // neither retains nor closes it.
        let rc = unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let error = io::Error::last_os_error();
            if error.raw_os_error() == Some(libc::EWOULDBLOCK) {
                let mut holder = String::new();
                let _ = lock.read_to_string(&mut holder);
                let holder = match holder.trim() {
                    "" => String::new(),
                    pid => format!(" (pid {pid})"),
                };
                return Err(BrokerError::DataDirLocked {
                    path: path.to_owned(),
                    holder,
                });
            }
            return Err(unusable(error));
        }
        // We hold the lock: record who does, for the next one's message.
        lock.set_len(0).map_err(unusable)?;
        lock.rewind().map_err(unusable)?;
        writeln!(lock, "{}", std::process::id()).map_err(unusable)?;
        lock.sync_all().map_err(unusable)?;
        Ok(DataDir {
            path: path.to_owned(),
            _lock: lock,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Publishes the address atomically (write then rename), so a reader
    /// never sees a partial line.
    pub fn write_addr(&self, addr: SocketAddr) -> Result<PathBuf, BrokerError> {
        self.write_addr_file(ADDR_FILE, addr)
    }

    /// Writes `addr` to `<data>/<file>` (atomically: temp file + rename).
    pub fn write_addr_file(&self, file: &str, addr: SocketAddr) -> Result<PathBuf, BrokerError> {
        let path = self.path.join(file);
        let tmp = self.path.join(format!("{file}.tmp"));
        let error = |source| BrokerError::AddrFile {
            path: path.clone(),
            source,
        };
        std::fs::write(&tmp, format!("{addr}\n")).map_err(error)?;
        std::fs::rename(&tmp, &path).map_err(error)?;
        Ok(path)
    }

    /// Removes `<data>/<file>` if present.
    pub fn remove_addr_file(&self, file: &str) {
        let _ = std::fs::remove_file(self.path.join(file));
    }

    pub fn remove_addr(&self) {
        let _ = std::fs::remove_file(self.path.join(ADDR_FILE));
        let _ = std::fs::remove_file(self.path.join(KAFKA_ADDR_FILE));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_open_of_a_locked_dir_names_the_holder() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = DataDir::open(dir.path()).expect("first lock");
        let error = DataDir::open(dir.path()).expect_err("second must fail");
        let message = error.to_string();
        assert!(
            message.contains(&format!("pid {}", std::process::id())),
            "{message}"
        );
        drop(first);
        DataDir::open(dir.path()).expect("free again after drop");
    }

    #[test]
    fn addr_file_round_trips() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = DataDir::open(dir.path()).expect("lock");
        let addr: SocketAddr = "127.0.0.1:4242".parse().expect("literal");
        let path = data.write_addr(addr).expect("write");
        assert_eq!(
            std::fs::read_to_string(&path).expect("read"),
            "127.0.0.1:4242\n"
        );
        data.remove_addr();
        assert!(!path.exists());
    }

    #[test]
    fn unwritable_path_is_reported() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("a-file");
        std::fs::write(&file, b"x").expect("write");
        let error = DataDir::open(&file.join("sub")).expect_err("not a dir");
        assert!(matches!(error, BrokerError::DataDirUnusable { .. }));
    }
}
