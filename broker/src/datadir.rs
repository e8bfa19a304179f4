//! The data directory: created and checked at startup, and held with an
//! exclusive `flock` for the broker's lifetime so two brokers never share
//! it. Also where the broker publishes its address (`broker.addr`), and
//! whose node it is (`meta.properties`, Kafka's name and format): a data
//! dir written as one node is never served as another, whose replicas and
//! epochs it does not hold.

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
/// The data dir's identity: `version=1` and `node.id=N` (Kafka's keys).
pub const META_FILE: &str = "meta.properties";

/// The identity a data dir holds, as `meta.properties` spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetaProperties {
    pub node_id: u32,
}

impl MetaProperties {
    pub fn encode(&self) -> String {
        format!(
            "# Written by fjord when it first served this data dir; do not edit.\nversion=1\nnode.id={}\n",
            self.node_id
        )
    }

    /// Parses `key=value` lines (`#` comments and blank lines skipped);
    /// `version` must be 1 and `node.id` present; unknown keys are kept
    /// for later versions (issue 13 adds `cluster.id`) and ignored here.
    pub fn decode(text: &str) -> Result<MetaProperties, String> {
        let mut version = None;
        let mut node_id = None;
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                return Err(format!("line {line:?} is not key=value"));
            };
            match key.trim() {
                "version" => version = Some(value.trim().to_owned()),
                "node.id" => {
                    let id = value
                        .trim()
                        .parse::<u32>()
                        .map_err(|e| format!("node.id {value:?}: {e}"))?;
                    node_id = Some(id);
                }
                _ => {}
            }
        }
        match version.as_deref() {
            Some("1") => {}
            Some(other) => return Err(format!("version {other} is not known to this fjord")),
            None => return Err("no version".to_owned()),
        }
        let node_id = node_id.ok_or("no node.id")?;
        Ok(MetaProperties { node_id })
    }
}

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

    /// Checks that this data dir is node `node_id`'s, recording it on
    /// first use (a data dir from before `meta.properties` existed is
    /// claimed by the node that opens it). Blocking: startup only.
    pub fn claim_for_node(&self, node_id: u32) -> Result<(), BrokerError> {
        let path = self.path.join(META_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let found = MetaProperties::decode(&text)
                    .map_err(|reason| BrokerError::MetaPropertiesInvalid {
                        path: path.clone(),
                        reason,
                    })?
                    .node_id;
                if found != node_id {
                    return Err(BrokerError::DataDirOfAnotherNode {
                        path: self.path.clone(),
                        found,
                        configured: node_id,
                    });
                }
                Ok(())
            }
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                let meta = MetaProperties { node_id };
                crate::durable_file::write_atomically(&path, meta.encode().as_bytes()).map_err(
                    |source| BrokerError::DataDirUnusable {
                        path: path.clone(),
                        source,
                    },
                )
            }
            Err(source) => Err(BrokerError::DataDirUnusable { path, source }),
        }
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

    #[test]
    fn meta_properties_round_trip_and_refuse_what_they_cannot_read() {
        let meta = MetaProperties { node_id: 7 };
        assert_eq!(MetaProperties::decode(&meta.encode()), Ok(meta));
        // Kafka's own file (other keys, other order) reads the same.
        let kafka = "#Fri Dec 05\ncluster.id=abc\nnode.id=3\nversion=1\n";
        assert_eq!(
            MetaProperties::decode(kafka),
            Ok(MetaProperties { node_id: 3 })
        );
        for bad in [
            "version=1\n",
            "node.id=1\n",
            "version=2\nnode.id=1\n",
            "version=1\nnode.id=x\n",
            "junk\n",
        ] {
            assert!(MetaProperties::decode(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_data_dir_is_claimed_once_and_refused_to_another_node() {
        let root = tempfile::tempdir().expect("tempdir");
        {
            let dir = DataDir::open(root.path()).expect("open");
            dir.claim_for_node(2).expect("first use claims it");
            dir.claim_for_node(2).expect("same node");
            let error = dir.claim_for_node(5).expect_err("another node");
            let text = error.to_string();
            assert!(text.contains("belongs to node 2"), "{text}");
            assert!(text.contains("--node-id 2"), "{text}");
        }
        std::fs::write(root.path().join(META_FILE), "garbage").expect("write");
        let dir = DataDir::open(root.path()).expect("open");
        let error = dir.claim_for_node(2).expect_err("invalid");
        assert!(
            matches!(error, BrokerError::MetaPropertiesInvalid { .. }),
            "{error}"
        );
    }
}
