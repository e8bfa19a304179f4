//! `--embedded`: a `fjord` broker started for the run (a fresh data dir on
//! a real disk, `--listen 127.0.0.1:0`), found through
//! `<data>/broker.addr` (the Kafka listener, also on port 0, through
//! `<data>/kafka.addr`), and stopped with SIGTERM at the end; with
//! `--embedded-nodes N`, N of them forming one cluster (inter-node ports
//! picked free on 127.0.0.1, every node a voter).
//!
//! Lives on: the main thread. Owns: the child processes and, unless
//! `--data-dir` was given, their temporary directory.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// How long the broker may take to start or to stop.
const PATIENCE: Duration = Duration::from_secs(60);
const TMPFS_MAGIC: i64 = 0x0102_1994;

/// One node of a cluster started for the run: its id, its inter-node
/// port and every voter (`--controller-quorum-voters`).
#[derive(Debug, Clone)]
struct ClusterRole {
    node_id: u32,
    cluster_listen: String,
    voters: String,
}

/// The brokers started for the run: one `fjord` process, or
/// `--embedded-nodes` of them forming one cluster on 127.0.0.1 (ids
/// 1..=N, all voters; each in `<root>/node<N>/`).
#[derive(Debug)]
pub struct EmbeddedCluster {
    pub nodes: Vec<EmbeddedBroker>,
    _temp: Option<TempDir>,
}

impl EmbeddedCluster {
    pub fn start(
        fjord_bin: Option<&Path>,
        data_dir: Option<&Path>,
        shards: Option<usize>,
        count: u32,
    ) -> Result<EmbeddedCluster, String> {
        let bin = match fjord_bin {
            Some(bin) => bin.to_owned(),
            None => default_fjord_bin()?,
        };
        let (temp, root) = match data_dir {
            Some(dir) => {
                std::fs::create_dir_all(dir)
                    .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
                (None, dir.to_owned())
            }
            None => {
                let temp = tempfile::Builder::new()
                    .prefix("loadgen-")
                    .tempdir()
                    .map_err(|e| format!("cannot create a temporary data dir: {e}"))?;
                let root = temp.path().to_owned();
                (Some(temp), root)
            }
        };
        if is_tmpfs(&root) {
            eprintln!(
                "loadgen: warning: {} is on tmpfs, so disk figures mean nothing; pass --data-dir on the data disk",
                root.display()
            );
        }
        if count == 1 {
            let node = EmbeddedBroker::spawn(&bin, &root, shards, None)?;
            let mut cluster = EmbeddedCluster {
                nodes: vec![node],
                _temp: temp,
            };
            cluster.nodes[0].wait_serving()?;
            return Ok(cluster);
        }
        // Inter-node ports: free now; held until the spawns so that the
        // nodes do not get each other's.
        let mut held = Vec::new();
        for _ in 0..count {
            let listener = std::net::TcpListener::bind("127.0.0.1:0")
                .map_err(|e| format!("no free port for a cluster listener: {e}"))?;
            let port = listener.local_addr().map_err(|e| e.to_string())?.port();
            held.push((listener, port));
        }
        let voters = held
            .iter()
            .enumerate()
            .map(|(i, (_, port))| format!("{}@127.0.0.1:{port}", i + 1))
            .collect::<Vec<_>>()
            .join(",");
        let ports: Vec<u16> = held.iter().map(|(_, port)| *port).collect();
        drop(held);
        let mut cluster = EmbeddedCluster {
            nodes: Vec::new(),
            _temp: temp,
        };
        for (i, port) in ports.into_iter().enumerate() {
            let role = ClusterRole {
                node_id: i as u32 + 1,
                cluster_listen: format!("127.0.0.1:{port}"),
                voters: voters.clone(),
            };
            let dir = root.join(format!("node{}", role.node_id));
            let node = EmbeddedBroker::spawn(&bin, &dir, shards, Some(&role))?;
            cluster.nodes.push(node);
        }
        // Each writes its address once registered and caught up, which
        // needs a quorum: wait for them after all were started.
        for node in &mut cluster.nodes {
            node.wait_serving()?;
        }
        Ok(cluster)
    }

    /// Node 1's native listener (the bootstrap address).
    pub fn addr(&self) -> &str {
        &self.nodes[0].addr
    }

    /// Node 1's Kafka listener.
    pub fn kafka_addr(&self) -> &str {
        &self.nodes[0].kafka_addr
    }

    /// SIGTERM every node, then wait for each.
    pub fn stop(self) -> Result<(), String> {
        let EmbeddedCluster { nodes, _temp } = self;
        let mut errors = Vec::new();
        for node in &nodes {
            if let Err(error) = node.signal_term() {
                errors.push(error);
            }
        }
        for node in nodes {
            let log = node.log.clone();
            if let Err(error) = node.wait_stopped() {
                errors.push(format!("{error} (log: {})", log.display()));
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("; "))
        }
    }
}

#[derive(Debug)]
pub struct EmbeddedBroker {
    child: Child,
    pub addr: String,
    /// The Kafka listener.
    pub kafka_addr: String,
    pub data_dir: PathBuf,
    pub log: PathBuf,
}

impl EmbeddedBroker {
    /// Starts `fjord` on `<root>/data` (log `<root>/fjord.log`), alone or
    /// as one node of a cluster; [`EmbeddedBroker::wait_serving`] waits
    /// for its address.
    fn spawn(
        bin: &Path,
        root: &Path,
        shards: Option<usize>,
        role: Option<&ClusterRole>,
    ) -> Result<EmbeddedBroker, String> {
        std::fs::create_dir_all(root)
            .map_err(|e| format!("cannot create {}: {e}", root.display()))?;
        let data = root.join("data");
        let log = root.join("fjord.log");
        let log_file =
            File::create(&log).map_err(|e| format!("cannot create {}: {e}", log.display()))?;
        // A stale address from an earlier run must not be mistaken for ours.
        let _ = std::fs::remove_file(data.join("broker.addr"));
        let _ = std::fs::remove_file(data.join("kafka.addr"));
        let mut command = Command::new(bin);
        command.arg("start").arg("--data-dir").arg(&data).args([
            "--listen",
            "127.0.0.1:0",
            "--kafka-listen",
            "127.0.0.1:0",
        ]);
        if let Some(shards) = shards {
            command.args(["--shards", &shards.to_string()]);
        }
        if let Some(role) = role {
            command
                .args(["--node-id", &role.node_id.to_string()])
                .args(["--cluster-listen", &role.cluster_listen])
                .args(["--controller-quorum-voters", &role.voters]);
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e} (try --fjord-bin PATH)", bin.display()))?;
        Ok(EmbeddedBroker {
            child,
            addr: String::new(),
            kafka_addr: String::new(),
            data_dir: data,
            log,
        })
    }

    /// Waits until the broker wrote its addresses (it serves).
    fn wait_serving(&mut self) -> Result<(), String> {
        let addr_file = self.data_dir.join("broker.addr");
        // The broker writes it before broker.addr.
        let kafka_addr_file = self.data_dir.join("kafka.addr");
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Ok(text) = std::fs::read_to_string(&addr_file) {
                if text.trim().parse::<std::net::SocketAddr>().is_ok() {
                    let kafka = std::fs::read_to_string(&kafka_addr_file).map_err(|e| {
                        format!("fjord wrote no {}: {e}", kafka_addr_file.display())
                    })?;
                    self.addr = text.trim().to_owned();
                    self.kafka_addr = kafka.trim().to_owned();
                    return Ok(());
                }
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!(
                    "fjord exited with {status} before listening: {}",
                    self.log_tail()
                ));
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "fjord did not write {} within {PATIENCE:?}: {}",
                    addr_file.display(),
                    self.log_tail()
                ));
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let start = text.len().saturating_sub(2000);
        let start = (start..text.len())
            .find(|i| text.is_char_boundary(*i))
            .unwrap_or(text.len());
        text[start..].to_owned()
    }

    fn signal_term(&self) -> Result<(), String> {
        let pid = libc::pid_t::try_from(self.child.id()).map_err(|e| e.to_string())?;
        // SAFETY: kill(2) on the pid of a child we spawned and have not
        // reaped yet (so the pid cannot have been reused); no memory is
        // involved.
        let rc = unsafe { libc::kill(pid, libc::SIGTERM) };
        if rc != 0 {
            return Err(format!(
                "cannot signal fjord: {}",
                std::io::Error::last_os_error()
            ));
        }
        Ok(())
    }

    /// After [`EmbeddedBroker::signal_term`]: waits for the exit; SIGKILL
    /// if it does not stop in time.
    fn wait_stopped(mut self) -> Result<(), String> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) if status.success() => return Ok(()),
                Ok(Some(status)) => {
                    return Err(format!("fjord exited with {status}: {}", self.log_tail()))
                }
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
                Ok(None) | Err(_) => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    return Err("fjord did not stop after SIGTERM; killed it".into());
                }
            }
        }
    }
}

impl Drop for EmbeddedBroker {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `fjord` next to the loadgen executable (both land in the same target
/// directory), or one directory up (loadgen run from `target/*/deps`).
fn default_fjord_bin() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find loadgen's path: {e}"))?;
    let dir = exe.parent().unwrap_or(Path::new("."));
    let candidates = [dir.join("fjord"), dir.join("..").join("fjord")];
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .ok_or_else(|| {
            format!(
                "no fjord binary next to {} (build it: cargo build --release -p fjord-broker), or pass --fjord-bin PATH",
                exe.display()
            )
        })
}

fn is_tmpfs(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c_path) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    let mut stat = std::mem::MaybeUninit::<libc::statfs>::zeroed();
    // SAFETY: `c_path` is a NUL-terminated string that outlives the call
    // and `stat` points to writable memory of the right type.
    let rc = unsafe { libc::statfs(c_path.as_ptr(), stat.as_mut_ptr()) };
    if rc != 0 {
        return false;
    }
    // SAFETY: statfs returned 0, so it filled the struct (which was zeroed
    // anyway, a valid bit pattern for this plain C struct).
    let stat = unsafe { stat.assume_init() };
    #[allow(clippy::unnecessary_cast)]
    let kind = stat.f_type as i64;
    kind == TMPFS_MAGIC
}

/// The broker's resident memory, from `/proc/<pid>/status`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Memory {
    pub rss_bytes: u64,
    pub peak_rss_bytes: u64,
}

pub fn memory_of(pid: u32) -> Option<Memory> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        let kib: u64 = line[name.len()..]
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()?;
        Some(kib * 1024)
    };
    Some(Memory {
        rss_bytes: field("VmRSS:")?,
        peak_rss_bytes: field("VmHWM:").unwrap_or(0),
    })
}
