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
/// The data dir's identity: `version=1`, `node.id=N` and, once the node
/// has joined a cluster, `cluster.id=UUID` (Kafka's keys).
pub const META_FILE: &str = "meta.properties";

/// The node id the single-node releases before issue 13 defaulted to: a
/// data dir they wrote as node 0 (and no cluster yet) is adopted by
/// whatever node id opens it, so it opens unchanged under the new default
/// (1). See [`DataDir::claim_for_node`].
pub const LEGACY_NODE_ID: u32 = 0;

/// The identity a data dir holds, as `meta.properties` spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetaProperties {
    pub node_id: u32,
    /// The cluster whose metadata log this node follows; `None` until it
    /// first learned it (and in files of releases before issue 13).
    pub cluster_id: Option<[u8; 16]>,
}

/// A cluster id as `meta.properties` and messages spell it (uuid text).
pub fn cluster_id_text(id: [u8; 16]) -> String {
    uuid::Uuid::from_bytes(id).hyphenated().to_string()
}

impl MetaProperties {
    pub fn encode(&self) -> String {
        let mut text = format!(
            "# Written by fjord when it first served this data dir; do not edit.\nversion=1\nnode.id={}\n",
            self.node_id
        );
        if let Some(id) = self.cluster_id {
            text.push_str(&format!("cluster.id={}\n", cluster_id_text(id)));
        }
        text
    }

    /// Parses `key=value` lines (`#` comments and blank lines skipped);
    /// `version` must be 1 and `node.id` present, `cluster.id` is optional
    /// (uuid text); unknown keys are kept for later versions and ignored
    /// here.
    pub fn decode(text: &str) -> Result<MetaProperties, String> {
        let mut version = None;
        let mut node_id = None;
        let mut cluster_id = None;
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
                "cluster.id" => {
                    let id = uuid::Uuid::parse_str(value.trim())
                        .map_err(|e| format!("cluster.id {value:?}: {e}"))?;
                    cluster_id = Some(id.into_bytes());
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
        Ok(MetaProperties {
            node_id,
            cluster_id,
        })
    }
}

/// An exclusively locked data directory. The lock is released when this is
/// dropped or the process exits (the kernel drops `flock`s with the file).
#[derive(Debug)]
pub struct DataDir {
    path: PathBuf,
    _lock: File,
}

/// A locked data dir's `meta.properties` (see [`DataDir::meta_file`]).
#[derive(Debug, Clone)]
pub struct MetaFile {
    dir: PathBuf,
}

impl MetaFile {
    /// Checks that this data dir belongs to cluster `cluster_id` (the id
    /// the metadata log starts with), recording it the first time; a data
    /// dir of another cluster is refused, naming both ids. Call after
    /// [`DataDir::claim_for_node`]. Blocking: once, when the id is known.
    pub fn check_cluster(&self, cluster_id: [u8; 16]) -> Result<(), BrokerError> {
        let path = self.dir.join(META_FILE);
        let Some(meta) = self.read()? else {
            return Err(BrokerError::MetaPropertiesInvalid {
                path,
                reason: "missing: the node id must be recorded before the cluster id".into(),
            });
        };
        match meta.cluster_id {
            Some(found) if found == cluster_id => Ok(()),
            Some(found) => Err(BrokerError::DataDirOfAnotherCluster {
                path: self.dir.clone(),
                found: cluster_id_text(found),
                configured: cluster_id_text(cluster_id),
            }),
            None => self.write(&MetaProperties {
                cluster_id: Some(cluster_id),
                ..meta
            }),
        }
    }

    fn read(&self) -> Result<Option<MetaProperties>, BrokerError> {
        let path = self.dir.join(META_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => MetaProperties::decode(&text)
                .map(Some)
                .map_err(|reason| BrokerError::MetaPropertiesInvalid { path, reason }),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(BrokerError::DataDirUnusable { path, source }),
        }
    }

    fn write(&self, meta: &MetaProperties) -> Result<(), BrokerError> {
        let path = self.dir.join(META_FILE);
        crate::durable_file::write_atomically(&path, meta.encode().as_bytes())
            .map_err(|source| BrokerError::DataDirUnusable { path, source })
    }
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
    /// claimed by the node that opens it). A data dir the single-node
    /// releases wrote as node [`LEGACY_NODE_ID`] that has joined no
    /// cluster yet is adopted: rewritten as `node_id`'s, so it opens
    /// unchanged under the new default node id. Blocking: startup only.
    pub fn claim_for_node(&self, node_id: u32) -> Result<(), BrokerError> {
        match self.read_meta()? {
            Some(meta) if meta.node_id == node_id => Ok(()),
            Some(meta) if meta.node_id == LEGACY_NODE_ID && meta.cluster_id.is_none() => {
                tracing::info!(
                    data_dir = %self.path.display(),
                    node_id,
                    "adopting a single-node data dir written as node {LEGACY_NODE_ID}"
                );
                self.write_meta(&MetaProperties { node_id, ..meta })
            }
            Some(meta) => Err(BrokerError::DataDirOfAnotherNode {
                path: self.path.clone(),
                found: meta.node_id,
                configured: node_id,
            }),
            None => self.write_meta(&MetaProperties {
                node_id,
                cluster_id: None,
            }),
        }
    }

    /// Checks that this data dir belongs to cluster `cluster_id`; see
    /// [`MetaFile::check_cluster`].
    pub fn check_cluster(&self, cluster_id: [u8; 16]) -> Result<(), BrokerError> {
        self.meta_file().check_cluster(cluster_id)
    }

    /// The data dir's `meta.properties`; `None` if it has none yet.
    pub fn meta(&self) -> Result<Option<MetaProperties>, BrokerError> {
        self.read_meta()
    }

    /// This data dir's `meta.properties`, to check from a shard (the
    /// lock stays with the main thread's `DataDir`).
    pub fn meta_file(&self) -> MetaFile {
        MetaFile {
            dir: self.path.clone(),
        }
    }

    fn read_meta(&self) -> Result<Option<MetaProperties>, BrokerError> {
        self.meta_file().read()
    }

    fn write_meta(&self, meta: &MetaProperties) -> Result<(), BrokerError> {
        self.meta_file().write(meta)
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

    const CLUSTER_A: [u8; 16] = [
        10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25,
    ];
    const CLUSTER_B: [u8; 16] = [7; 16];

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
        let meta = MetaProperties {
            node_id: 7,
            cluster_id: None,
        };
        assert_eq!(MetaProperties::decode(&meta.encode()), Ok(meta));
        let joined = MetaProperties {
            node_id: 7,
            cluster_id: Some(CLUSTER_A),
        };
        assert!(joined
            .encode()
            .contains("cluster.id=0a0b0c0d-0e0f-1011-1213-141516171819\n"));
        assert_eq!(MetaProperties::decode(&joined.encode()), Ok(joined));
        // Kafka's file layout (other keys, other order) reads the same.
        let kafka = "#Fri Dec 05\nbroker.id=3\ncluster.id=0a0b0c0d-0e0f-1011-1213-141516171819\nnode.id=3\nversion=1\n";
        assert_eq!(
            MetaProperties::decode(kafka),
            Ok(MetaProperties {
                node_id: 3,
                cluster_id: Some(CLUSTER_A)
            })
        );
        for bad in [
            "version=1\n",
            "node.id=1\n",
            "version=2\nnode.id=1\n",
            "version=1\nnode.id=x\n",
            "version=1\nnode.id=1\ncluster.id=not-a-uuid\n",
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

    /// A data dir the single-node release wrote (node 0, no cluster) opens
    /// as the configured node; once it has a cluster, or for any other
    /// node id, a mismatch is refused as before.
    #[test]
    fn a_single_node_data_dir_of_node_0_is_adopted_until_it_joins_a_cluster() {
        let root = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            root.path().join(META_FILE),
            "# Written by fjord when it first served this data dir; do not edit.\nversion=1\nnode.id=0\n",
        )
        .expect("write");
        let dir = DataDir::open(root.path()).expect("open");
        dir.claim_for_node(1).expect("adopted by the new default");
        assert_eq!(
            dir.meta().expect("readable"),
            Some(MetaProperties {
                node_id: 1,
                cluster_id: None
            })
        );
        let error = dir.claim_for_node(0).expect_err("now node 1's");
        assert!(error.to_string().contains("belongs to node 1"), "{error}");

        // Node 0 of a cluster is a node like any other.
        std::fs::write(
            root.path().join(META_FILE),
            MetaProperties {
                node_id: 0,
                cluster_id: Some(CLUSTER_A),
            }
            .encode(),
        )
        .expect("write");
        let error = dir.claim_for_node(1).expect_err("a cluster's node 0");
        assert!(
            matches!(
                error,
                BrokerError::DataDirOfAnotherNode {
                    found: 0,
                    configured: 1,
                    ..
                }
            ),
            "{error}"
        );
        dir.claim_for_node(0).expect("its own node");
    }

    #[test]
    fn the_cluster_id_is_recorded_once_and_another_cluster_is_refused() {
        let root = tempfile::tempdir().expect("tempdir");
        let dir = DataDir::open(root.path()).expect("open");
        assert!(
            matches!(
                dir.check_cluster(CLUSTER_A),
                Err(BrokerError::MetaPropertiesInvalid { .. })
            ),
            "the node id comes first"
        );
        dir.claim_for_node(3).expect("claims");
        dir.check_cluster(CLUSTER_A).expect("recorded");
        dir.check_cluster(CLUSTER_A).expect("same cluster");
        dir.claim_for_node(3).expect("the node id is kept");
        let text = std::fs::read_to_string(root.path().join(META_FILE)).expect("read");
        assert!(text.contains("node.id=3\n"), "{text}");
        assert!(
            text.contains("cluster.id=0a0b0c0d-0e0f-1011-1213-141516171819\n"),
            "{text}"
        );
        let error = dir.check_cluster(CLUSTER_B).expect_err("another cluster");
        let message = error.to_string();
        assert!(
            message.contains("belongs to cluster 0a0b0c0d-0e0f-1011-1213-141516171819"),
            "{message}"
        );
        assert!(
            message.contains("of cluster 07070707-0707-0707-0707-070707070707"),
            "{message}"
        );
        drop(dir);
        // And after a restart.
        let dir = DataDir::open(root.path()).expect("reopen");
        dir.claim_for_node(3).expect("same node");
        assert!(matches!(
            dir.check_cluster(CLUSTER_B),
            Err(BrokerError::DataDirOfAnotherCluster { .. })
        ));
        dir.check_cluster(CLUSTER_A).expect("its cluster");
    }
}
