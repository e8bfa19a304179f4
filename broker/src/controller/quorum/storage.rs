//! The Raft log of the metadata quorum on disk, under
//! `<data>/__cluster_metadata-0/`:
//!
//! - `entries.log`: append-only, one record per Raft entry:
//!   `[len u32 LE][crc32c u32 LE][protobuf eraftpb::Entry]`. A torn or
//!   corrupt tail (a crash mid-append) is cut at recovery, never a panic.
//!   After a snapshot the file is rewritten with the entries it keeps
//!   (temp file + rename).
//! - `raft.state`: the hard state (term, vote, commit), the conf state
//!   (voters, learners) and the index the conf state reflects, CRC'd,
//!   replaced atomically (`durable_file::write_atomically`).
//! - `raft.snapshot`: the latest snapshot (its metadata and the encoded
//!   metadata image), CRC'd, replaced atomically.
//!
//! Every entry is also kept in memory (the metadata log is small and
//! compacted to the latest snapshot), which is what `raft::Storage` reads.
//!
//! Durability contract: after [`DiskStorage::append`] returns the entries
//! are fdatasynced; after [`DiskStorage::set_hard_state`] the hard state
//! is. After any write error the storage's memory may be ahead of its
//! files (a hard state set but not written): its owner drops it and opens
//! the log again, as at startup (the driver's reopen after a storage
//! error, `controller/driver.rs`). Blocking `std::fs`: see the driver for
//! where it runs.

use std::fs::{self, File, OpenOptions};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use protobuf::Message as _;
use raft::eraftpb::{ConfState, Entry, HardState, Snapshot};
use raft::{GetEntriesContext, RaftState, StorageError as RaftStorageError};

use crate::durable_file::{write_atomically, SparedFile};

/// The entries file.
pub const ENTRIES_FILE: &str = "entries.log";
/// Hard state + conf state.
pub const STATE_FILE: &str = "raft.state";
/// The latest snapshot.
pub const SNAPSHOT_FILE: &str = "raft.snapshot";
/// Largest entry record accepted when reading the entries file: a longer
/// length prefix is a torn or corrupt tail (the controller never proposes
/// an entry near this size; `CreateTopics` of thousands of partitions is a
/// few hundred KiB).
pub const ENTRY_BYTES_MAX: usize = 64 << 20;
/// Bytes of an entry record's header (length + CRC).
const RECORD_HEADER_LEN: usize = 8;

/// Why the metadata log could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is corrupt: {reason}")]
    Corrupt { path: PathBuf, reason: String },
}

/// A switch that makes the metadata log's writes fail as on a full disk
/// (`ENOSPC`) while it is on: an append writes half its bytes (a torn
/// tail, as a write cut short by a full disk leaves) and fails; a hard
/// state, conf state or snapshot write fails before it starts. Reads and
/// truncations (cutting a torn tail at open) still work, as on a real
/// full disk. The injection point for the driver's tests
/// (`controller/driver/tests.rs`) and the simulation's full-disk fault
/// (`fjord-sim`, `world.rs`); the broker never turns it on. Shared
/// (`Arc`): the one switch outlives every reopen of the log.
#[derive(Clone, Debug, Default)]
pub struct WriteFault(Arc<AtomicBool>);

impl WriteFault {
    /// Turns the fault on (every write fails) or off.
    pub fn set(&self, on: bool) {
        self.0.store(on, Ordering::Relaxed);
    }

    pub fn is_on(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    fn check(&self, path: &Path) -> Result<(), StorageError> {
        if self.is_on() {
            return Err(io(path)(full_disk()));
        }
        Ok(())
    }
}

/// The error a write on a full disk gets.
fn full_disk() -> std::io::Error {
    std::io::Error::from_raw_os_error(libc::ENOSPC)
}

/// The metadata quorum's Raft storage: files under `dir` and every entry
/// since the latest snapshot in memory. Lives on: shard 0, inside the
/// `RawNode` (and briefly on the main thread for `recover`).
#[derive(Debug)]
pub struct DiskStorage {
    dir: PathBuf,
    hard_state: HardState,
    conf_state: ConfState,
    /// The log index `conf_state` reflects (conf changes up to it applied).
    conf_index: u64,
    /// The latest snapshot; index 0 and no data when there is none.
    snapshot: Snapshot,
    /// Entries `snapshot.index + 1 ..`, consecutive.
    entries: Vec<Entry>,
    /// File offset of each entry's record in `entries.log`.
    offsets: Vec<u64>,
    file: File,
    file_len: u64,
    /// Allocated (preallocated past the size) up to here.
    allocated_end: u64,
    /// Injected write failures ([`WriteFault`]); off unless a test or the
    /// simulation set one ([`DiskStorage::set_write_fault`]).
    fault: WriteFault,
}

impl DiskStorage {
    /// Opens the log under `dir` (creating it). An empty log starts with
    /// `voters` as its conf state (every node of a new cluster starts from
    /// the same one); an existing log keeps the conf state it holds.
    pub fn open(dir: &Path, voters: &[u64]) -> Result<DiskStorage, StorageError> {
        fs::create_dir_all(dir).map_err(io(dir))?;
        let snapshot = read_snapshot(&dir.join(SNAPSHOT_FILE))?;
        let state = read_state(&dir.join(STATE_FILE))?;
        let fresh = state.is_none() && snapshot.get_metadata().index == 0;
        let (mut hard_state, mut conf_state, mut conf_index) = state.unwrap_or_else(|| {
            let mut conf = ConfState::default();
            conf.set_voters(voters.to_vec());
            (HardState::default(), conf, 0)
        });
        let meta = snapshot.get_metadata();
        if meta.index > conf_index {
            conf_state = meta.get_conf_state().clone();
            conf_index = meta.index;
        }
        if hard_state.commit < meta.index {
            hard_state.commit = meta.index;
        }
        if hard_state.term < meta.term {
            hard_state.term = meta.term;
        }
        let path = dir.join(ENTRIES_FILE);
        let (entries, offsets, file_len) = read_entries(&path, meta.index)?;
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io(&path))?;
        if file.metadata().map_err(io(&path))?.len() != file_len {
            tracing::warn!(
                path = %path.display(),
                valid_bytes = file_len,
                "metadata log: cutting a torn or corrupt tail of the entries file"
            );
            file.set_len(file_len).map_err(io(&path))?;
            file.sync_data().map_err(io(&path))?;
        }
        let last_index = entries.last().map_or(meta.index, |e: &Entry| e.index);
        if hard_state.commit > last_index {
            // Only entries fdatasynced before the hard state naming them
            // can be committed, so this means lost bytes: take what is
            // there (Raft refuses a commit past the log) and say so.
            tracing::warn!(
                commit = hard_state.commit,
                last_index,
                "metadata log: the hard state's commit index is past the last entry on disk; using the last entry"
            );
            hard_state.commit = last_index;
        }
        let mut storage = DiskStorage {
            dir: dir.to_path_buf(),
            hard_state,
            conf_state,
            conf_index,
            snapshot,
            entries,
            offsets,
            file,
            file_len,
            allocated_end: file_len,
            fault: WriteFault::default(),
        };
        if fresh {
            storage.write_state()?;
        }
        spared(&dir.join(STATE_FILE)).reserve();
        spared(&dir.join(SNAPSHOT_FILE)).reserve();
        storage.keep_headroom();
        Ok(storage)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Makes this storage's writes fail while `fault` is on (see
    /// [`WriteFault`]).
    pub fn set_write_fault(&mut self, fault: WriteFault) {
        self.fault = fault;
    }

    pub fn hard_state(&self) -> &HardState {
        &self.hard_state
    }

    pub fn conf_state(&self) -> &ConfState {
        &self.conf_state
    }

    /// The index the stored conf state reflects.
    pub fn conf_index(&self) -> u64 {
        self.conf_index
    }

    /// The latest snapshot (index 0 when none).
    pub fn latest_snapshot(&self) -> &Snapshot {
        &self.snapshot
    }

    pub fn first_index(&self) -> u64 {
        self.snapshot.get_metadata().index + 1
    }

    pub fn last_index(&self) -> u64 {
        self.entries
            .last()
            .map_or(self.snapshot.get_metadata().index, |e| e.index)
    }

    /// The entries after the snapshot up to the commit index, in order
    /// (what a restart folds on top of the snapshot).
    pub fn committed_entries(&self) -> impl Iterator<Item = &Entry> {
        let commit = self.hard_state.commit;
        self.entries.iter().take_while(move |e| e.index <= commit)
    }

    /// Appends `entries` (consecutive), first cutting every stored entry
    /// at or after the first one's index (a new leader overwriting an
    /// uncommitted tail). fdatasynced before it returns.
    pub fn append(&mut self, entries: &[Entry]) -> Result<(), StorageError> {
        let Some(first) = entries.first() else {
            return Ok(());
        };
        assert!(
            first.index > self.snapshot.get_metadata().index,
            "append at {} over the snapshot at {}",
            first.index,
            self.snapshot.get_metadata().index
        );
        assert!(
            first.index <= self.last_index() + 1,
            "append at {} leaves a gap after {}",
            first.index,
            self.last_index()
        );
        let path = self.dir.join(ENTRIES_FILE);
        let keep = (first.index - self.first_index()) as usize;
        if keep < self.entries.len() {
            self.file_len = self.offsets[keep];
            self.entries.truncate(keep);
            self.offsets.truncate(keep);
            self.file.set_len(self.file_len).map_err(io(&path))?;
        }
        let before = self.entries.len();
        let mut bytes = Vec::new();
        for entry in entries {
            assert_eq!(
                entry.index,
                self.last_index() + 1,
                "entries not consecutive"
            );
            self.offsets.push(self.file_len + bytes.len() as u64);
            encode_record(&mut bytes, entry);
            self.entries.push(entry.clone());
        }
        let written = if self.fault.is_on() {
            // A full disk cuts the write short: half of it lands (a torn
            // tail for the next open to cut).
            write_at(&self.file, self.file_len, &bytes[..bytes.len() / 2])
                .and_then(|()| Err(full_disk()))
        } else {
            write_at(&self.file, self.file_len, &bytes).and_then(|()| self.file.sync_data())
        };
        if let Err(error) = written {
            // Memory keeps what the file durably holds. The file may end
            // in a torn tail past `file_len`: the owner drops this storage
            // and opens the log again, which cuts it (the driver's
            // reopen after a storage error).
            self.entries.truncate(before);
            self.offsets.truncate(before);
            return Err(io(&path)(error));
        }
        self.file_len += bytes.len() as u64;
        self.keep_headroom();
        Ok(())
    }

    /// Stores `hard_state` (fdatasynced, atomically) if it differs.
    pub fn set_hard_state(&mut self, hard_state: &HardState) -> Result<(), StorageError> {
        if *hard_state == self.hard_state {
            return Ok(());
        }
        self.hard_state = hard_state.clone();
        self.write_state()
    }

    /// Stores a new commit index (from a `LightReady`).
    pub fn set_commit(&mut self, commit: u64) -> Result<(), StorageError> {
        if commit <= self.hard_state.commit {
            return Ok(());
        }
        self.hard_state.commit = commit;
        self.write_state()
    }

    /// Stores the conf state as of `index` (a conf change applied).
    pub fn set_conf_state(
        &mut self,
        conf_state: ConfState,
        index: u64,
    ) -> Result<(), StorageError> {
        self.conf_state = conf_state;
        self.conf_index = index;
        self.write_state()
    }

    /// Installs a snapshot received from the leader: it replaces the whole
    /// log (entries past it are dropped; the leader sends them next).
    pub fn apply_snapshot(&mut self, snapshot: &Snapshot) -> Result<(), StorageError> {
        let meta = snapshot.get_metadata();
        self.fault.check(&self.dir.join(SNAPSHOT_FILE))?;
        write_snapshot(&self.dir.join(SNAPSHOT_FILE), snapshot)?;
        self.rewrite_entries(Vec::new())?;
        self.snapshot = snapshot.clone();
        self.hard_state.commit = self.hard_state.commit.max(meta.index);
        self.hard_state.term = self.hard_state.term.max(meta.term);
        self.conf_state = meta.get_conf_state().clone();
        self.conf_index = meta.index;
        self.write_state()
    }

    /// Takes a snapshot at `index` (applied, so committed and stored) with
    /// the image encoded as `data`, and drops the entries it covers.
    pub fn compact(&mut self, index: u64, data: Vec<u8>) -> Result<(), StorageError> {
        assert!(
            index <= self.hard_state.commit,
            "snapshot past the commit index"
        );
        if index <= self.snapshot.get_metadata().index {
            return Ok(());
        }
        let term = self.term_of(index).map_err(|e| StorageError::Corrupt {
            path: self.dir.join(ENTRIES_FILE),
            reason: format!("no term for index {index}: {e}"),
        })?;
        let mut snapshot = Snapshot::default();
        snapshot.set_data(data.into());
        let meta = snapshot.mut_metadata();
        meta.index = index;
        meta.term = term;
        meta.set_conf_state(self.conf_state.clone());
        self.fault.check(&self.dir.join(SNAPSHOT_FILE))?;
        write_snapshot(&self.dir.join(SNAPSHOT_FILE), &snapshot)?;
        // A failure from here leaves memory as it was: the entries file
        // still holds the entries the snapshot covers (recovery skips
        // them), and the next compaction tries again.
        let drop = (index + 1 - self.first_index()) as usize;
        let kept = self.entries[drop.min(self.entries.len())..].to_vec();
        self.rewrite_entries(kept)?;
        self.snapshot = snapshot;
        Ok(())
    }

    fn term_of(&self, index: u64) -> raft::Result<u64> {
        let meta = self.snapshot.get_metadata();
        if index == meta.index {
            return Ok(meta.term);
        }
        if index < self.first_index() {
            return Err(raft::Error::Store(RaftStorageError::Compacted));
        }
        if index > self.last_index() {
            return Err(raft::Error::Store(RaftStorageError::Unavailable));
        }
        Ok(self.entries[(index - self.first_index()) as usize].term)
    }

    /// Rewrites `entries.log` with the entries in memory (after a
    /// snapshot): temp file, fdatasync, rename, fsync the directory.
    fn rewrite_entries(&mut self, entries: Vec<Entry>) -> Result<(), StorageError> {
        let path = self.dir.join(ENTRIES_FILE);
        let mut bytes = Vec::new();
        let mut offsets = Vec::with_capacity(entries.len());
        for entry in &entries {
            offsets.push(bytes.len() as u64);
            encode_record(&mut bytes, entry);
        }
        write_atomically(&path, &bytes).map_err(io(&path))?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io(&path))?;
        self.file = file;
        self.entries = entries;
        self.offsets = offsets;
        self.file_len = bytes.len() as u64;
        self.allocated_end = self.file_len;
        self.keep_headroom();
        Ok(())
    }

    fn write_state(&mut self) -> Result<(), StorageError> {
        let path = self.dir.join(STATE_FILE);
        self.fault.check(&path)?;
        let bytes = encode_state(&self.hard_state, &self.conf_state, self.conf_index);
        spared(&path).write(&bytes).map_err(io(&path))
    }

    /// Tops up the allocated headroom past the end of `entries.log`.
    fn keep_headroom(&mut self) {
        if self.allocated_end < self.file_len + ENTRIES_HEADROOM_MIN_BYTES {
            self.allocated_end = reserve_headroom(&self.file, self.file_len).max(self.file_len);
        }
    }
}

impl raft::Storage for DiskStorage {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(RaftState::new(
            self.hard_state.clone(),
            self.conf_state.clone(),
        ))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        if low < self.first_index() {
            return Err(raft::Error::Store(RaftStorageError::Compacted));
        }
        if high > self.last_index() + 1 || low > high {
            return Err(raft::Error::Store(RaftStorageError::Unavailable));
        }
        let first = self.first_index();
        let mut entries = self.entries[(low - first) as usize..(high - first) as usize].to_vec();
        raft::util::limit_size(&mut entries, max_size.into());
        Ok(entries)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        self.term_of(idx)
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(DiskStorage::first_index(self))
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(DiskStorage::last_index(self))
    }

    fn snapshot(&self, request_index: u64, to: u64) -> raft::Result<Snapshot> {
        let meta = self.snapshot.get_metadata();
        let conf = meta.get_conf_state();
        // A node missing from the snapshot's conf state refuses it (a
        // learner added after it): wait for the next snapshot, which the
        // driver takes once the membership change is applied.
        let member = conf.voters.contains(&to) || conf.learners.contains(&to);
        if meta.index < request_index || meta.index == 0 || !member {
            return Err(raft::Error::Store(
                RaftStorageError::SnapshotTemporarilyUnavailable,
            ));
        }
        Ok(self.snapshot.clone())
    }
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> StorageError + '_ {
    move |source| StorageError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn write_at(file: &File, offset: u64, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    file.write_all_at(bytes, offset)
}

fn encode_record(out: &mut Vec<u8>, entry: &Entry) {
    let payload = entry.write_to_bytes().expect("a raft entry always encodes");
    let len = u32::try_from(payload.len()).expect("entry under 4 GiB");
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
}

/// Reads the entries file: the valid entries after `snapshot_index`, their
/// offsets, and the length of the valid prefix (the rest is a torn or
/// corrupt tail to cut).
fn read_entries(
    path: &Path,
    snapshot_index: u64,
) -> Result<(Vec<Entry>, Vec<u64>, u64), StorageError> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(io(path)(e)),
    };
    let mut entries: Vec<Entry> = Vec::new();
    let mut offsets = Vec::new();
    let mut at = 0usize;
    while let Some((entry, next)) = decode_record(&bytes, at) {
        // A rewrite interrupted before its rename leaves entries the
        // snapshot already covers: skip them (they are dropped at the next
        // rewrite).
        if entry.index > snapshot_index {
            let expected = entries.last().map_or(snapshot_index + 1, |e| e.index + 1);
            if entry.index != expected {
                tracing::warn!(
                    path = %path.display(),
                    index = entry.index,
                    expected,
                    "metadata log: entries file not consecutive; cutting it here"
                );
                break;
            }
            offsets.push(at as u64);
            entries.push(entry);
        }
        at = next;
    }
    Ok((entries, offsets, at as u64))
}

/// The entry record at `at` and where the next one starts, or `None` at
/// the end or at a torn or corrupt record.
fn decode_record(bytes: &[u8], at: usize) -> Option<(Entry, usize)> {
    let header = bytes.get(at..at.checked_add(RECORD_HEADER_LEN)?)?;
    let len = u32::from_le_bytes(header[0..4].try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(header[4..8].try_into().ok()?);
    if len > ENTRY_BYTES_MAX {
        return None;
    }
    let start = at + RECORD_HEADER_LEN;
    let payload = bytes.get(start..start.checked_add(len)?)?;
    if crc32c::crc32c(payload) != crc {
        return None;
    }
    let entry = Entry::parse_from_bytes(payload).ok()?;
    Some((entry, start + len))
}

/// `[crc32c u32 LE][body]` where body = `[hard state len u32][hard
/// state][conf state len u32][conf state][conf index u64]`.
fn encode_state(hard_state: &HardState, conf_state: &ConfState, conf_index: u64) -> Vec<u8> {
    let hs = hard_state.write_to_bytes().expect("hard state encodes");
    let cs = conf_state.write_to_bytes().expect("conf state encodes");
    let mut body = Vec::with_capacity(hs.len() + cs.len() + 16);
    body.extend_from_slice(&(hs.len() as u32).to_le_bytes());
    body.extend_from_slice(&hs);
    body.extend_from_slice(&(cs.len() as u32).to_le_bytes());
    body.extend_from_slice(&cs);
    body.extend_from_slice(&conf_index.to_le_bytes());
    let mut out = crc32c::crc32c(&body).to_le_bytes().to_vec();
    out.extend_from_slice(&body);
    out
}

type State = (HardState, ConfState, u64);

fn read_state(path: &Path) -> Result<Option<State>, StorageError> {
    let Some(body) = read_checked(path)? else {
        return Ok(None);
    };
    let corrupt = |reason: &str| StorageError::Corrupt {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    };
    let mut cursor = &body[..];
    let hs = take_prefixed(&mut cursor).ok_or_else(|| corrupt("hard state cut short"))?;
    let hard_state = HardState::parse_from_bytes(hs).map_err(|e| corrupt(&e.to_string()))?;
    let cs = take_prefixed(&mut cursor).ok_or_else(|| corrupt("conf state cut short"))?;
    let conf_state = ConfState::parse_from_bytes(cs).map_err(|e| corrupt(&e.to_string()))?;
    let index: [u8; 8] = cursor
        .try_into()
        .map_err(|_| corrupt("conf index cut short"))?;
    Ok(Some((hard_state, conf_state, u64::from_le_bytes(index))))
}

fn take_prefixed<'a>(cursor: &mut &'a [u8]) -> Option<&'a [u8]> {
    let len = u32::from_le_bytes(cursor.get(..4)?.try_into().ok()?) as usize;
    let value = cursor.get(4..4usize.checked_add(len)?)?;
    *cursor = &cursor[4 + len..];
    Some(value)
}

fn write_snapshot(path: &Path, snapshot: &Snapshot) -> Result<(), StorageError> {
    let body = snapshot.write_to_bytes().expect("snapshot encodes");
    let mut out = crc32c::crc32c(&body).to_le_bytes().to_vec();
    out.extend_from_slice(&body);
    spared(path).write(&out).map_err(io(path))
}

/// `path` replaced through a preallocated spare beside it, so the write
/// needs no free block (a full disk must not stop the metadata quorum:
/// deleting a topic is how an operator gets space back).
fn spared(path: &Path) -> SparedFile {
    let mut spare = path.as_os_str().to_owned();
    spare.push(".spare");
    SparedFile::new(path.to_owned(), PathBuf::from(spare))
}

/// Bytes kept allocated past the end of `entries.log` (`fallocate` with
/// `KEEP_SIZE`), so appends need no free block until they are used up.
const ENTRIES_HEADROOM_BYTES: u64 = 4 << 20;
/// The headroom is topped up when less than this is left.
const ENTRIES_HEADROOM_MIN_BYTES: u64 = 1 << 20;

/// Allocates `[from, from + ENTRIES_HEADROOM_BYTES)` of `file` without
/// changing its size; returns the allocated end, or `from` if the disk has
/// no room (best effort: the appends then need free space as any write).
fn reserve_headroom(file: &File, from: u64) -> u64 {
    use std::os::fd::AsRawFd;
    let (Ok(offset), Ok(len)) = (
        libc::off_t::try_from(from),
        libc::off_t::try_from(ENTRIES_HEADROOM_BYTES),
    ) else {
        return from;
    };
    // SAFETY: fallocate on a descriptor we own; no memory is passed.
    let done = unsafe { libc::fallocate(file.as_raw_fd(), libc::FALLOC_FL_KEEP_SIZE, offset, len) };
    if done == 0 {
        from + ENTRIES_HEADROOM_BYTES
    } else {
        from
    }
}

fn read_snapshot(path: &Path) -> Result<Snapshot, StorageError> {
    let Some(body) = read_checked(path)? else {
        return Ok(Snapshot::default());
    };
    Snapshot::parse_from_bytes(&body).map_err(|e| StorageError::Corrupt {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// A file written atomically with a CRC prefix: its body, `None` when it
/// does not exist. A bad CRC is corruption (atomic replacement never
/// leaves a torn file), reported, never guessed around.
fn read_checked(path: &Path) -> Result<Option<Vec<u8>>, StorageError> {
    let mut bytes = Vec::new();
    match File::open(path) {
        Ok(mut file) => {
            file.read_to_end(&mut bytes).map_err(io(path))?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(path)(e)),
    }
    let corrupt = |reason: String| StorageError::Corrupt {
        path: path.to_path_buf(),
        reason,
    };
    let crc: [u8; 4] = bytes
        .get(..4)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| corrupt(format!("{} bytes, shorter than its CRC", bytes.len())))?;
    let body = bytes.split_off(4);
    if crc32c::crc32c(&body) != u32::from_le_bytes(crc) {
        return Err(corrupt("CRC mismatch".to_string()));
    }
    Ok(Some(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u64, term: u64, data: &[u8]) -> Entry {
        Entry {
            index,
            term,
            data: data.to_vec().into(),
            ..Default::default()
        }
    }

    fn indexes(s: &DiskStorage) -> Vec<(u64, u64)> {
        s.entries.iter().map(|e| (e.index, e.term)).collect()
    }

    #[test]
    fn entries_hard_state_and_snapshot_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = DiskStorage::open(dir.path(), &[1, 2, 3]).unwrap();
        assert_eq!(s.conf_state().voters, vec![1, 2, 3]);
        s.append(&[entry(1, 1, b"a"), entry(2, 1, b"b"), entry(3, 1, b"c")])
            .unwrap();
        // A new leader overwrites the uncommitted tail from index 3.
        s.append(&[entry(3, 2, b"x"), entry(4, 2, b"y")]).unwrap();
        let hs = HardState {
            term: 2,
            vote: 2,
            commit: 3,
            ..Default::default()
        };
        s.set_hard_state(&hs).unwrap();
        drop(s);
        // Another voter list in the config does not override the log's.
        let s = DiskStorage::open(dir.path(), &[9]).unwrap();
        assert_eq!(indexes(&s), vec![(1, 1), (2, 1), (3, 2), (4, 2)]);
        assert_eq!(s.hard_state(), &hs);
        assert_eq!(s.conf_state().voters, vec![1, 2, 3]);
        let committed: Vec<_> = s.committed_entries().map(|e| e.data.to_vec()).collect();
        assert_eq!(committed, vec![b"a".to_vec(), b"b".to_vec(), b"x".to_vec()]);

        let mut s = s;
        s.compact(2, b"image@2".to_vec()).unwrap();
        assert_eq!(s.first_index(), 3);
        drop(s);
        let s = DiskStorage::open(dir.path(), &[1, 2, 3]).unwrap();
        assert_eq!(s.latest_snapshot().get_metadata().index, 2);
        assert_eq!(s.latest_snapshot().get_metadata().term, 1);
        assert_eq!(&s.latest_snapshot().data[..], b"image@2");
        assert_eq!(indexes(&s), vec![(3, 2), (4, 2)]);
        assert_eq!(raft::Storage::term(&s, 2).unwrap(), 1);
        assert!(raft::Storage::term(&s, 1).is_err());
    }

    #[test]
    fn a_torn_entries_tail_is_cut_at_recovery() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = DiskStorage::open(dir.path(), &[1]).unwrap();
        s.append(&[entry(1, 1, b"a"), entry(2, 1, b"bbbb")])
            .unwrap();
        drop(s);
        let path = dir.path().join(ENTRIES_FILE);
        let whole = fs::read(&path).unwrap();
        // Every cut inside the second record leaves exactly the first.
        let first_len =
            whole.len() - (RECORD_HEADER_LEN + entry(2, 1, b"bbbb").compute_size() as usize);
        for cut in first_len..whole.len() {
            fs::write(&path, &whole[..cut]).unwrap();
            let mut s = DiskStorage::open(dir.path(), &[1]).unwrap();
            assert_eq!(indexes(&s), vec![(1, 1)], "cut at {cut}");
            assert_eq!(fs::metadata(&path).unwrap().len(), first_len as u64);
            // And the log goes on from there.
            s.append(&[entry(2, 2, b"z")]).unwrap();
            drop(s);
            let s = DiskStorage::open(dir.path(), &[1]).unwrap();
            assert_eq!(indexes(&s), vec![(1, 1), (2, 2)]);
        }
        // A flipped bit in the last record: cut too.
        let mut bytes = fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x40;
        fs::write(&path, &bytes).unwrap();
        let s = DiskStorage::open(dir.path(), &[1]).unwrap();
        assert_eq!(indexes(&s), vec![(1, 1)]);
    }

    #[test]
    fn a_corrupt_state_file_is_an_error_not_a_guess() {
        let dir = tempfile::tempdir().unwrap();
        drop(DiskStorage::open(dir.path(), &[1]).unwrap());
        let path = dir.path().join(STATE_FILE);
        let mut bytes = fs::read(&path).unwrap();
        bytes[5] ^= 1;
        fs::write(&path, &bytes).unwrap();
        assert!(matches!(
            DiskStorage::open(dir.path(), &[1]),
            Err(StorageError::Corrupt { .. })
        ));
    }

    #[test]
    fn an_installed_snapshot_replaces_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = DiskStorage::open(dir.path(), &[1, 2]).unwrap();
        s.append(&[entry(1, 1, b"a")]).unwrap();
        let mut snap = Snapshot::default();
        snap.set_data(b"img".to_vec().into());
        snap.mut_metadata().index = 7;
        snap.mut_metadata().term = 3;
        snap.mut_metadata().mut_conf_state().set_voters(vec![1, 2]);
        snap.mut_metadata().mut_conf_state().set_learners(vec![4]);
        s.apply_snapshot(&snap).unwrap();
        s.append(&[entry(8, 3, b"h")]).unwrap();
        drop(s);
        let s = DiskStorage::open(dir.path(), &[1, 2]).unwrap();
        assert_eq!(s.first_index(), 8);
        assert_eq!(indexes(&s), vec![(8, 3)]);
        assert_eq!(s.hard_state().commit, 7);
        assert_eq!(s.conf_state().learners, vec![4]);
    }
}
