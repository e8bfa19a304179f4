//! The topic registry, persisted in the data dir.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use fjord_schema::{ErrorCode, PartitionId, ShardId};
use serde::{Deserialize, Serialize};

use crate::durable_file::write_atomically;
use crate::topic::{validate_topic_name, TopicConfig, TopicError};

pub const REGISTRY_FILE: &str = "topics.toml";
/// The next registry write goes into this preallocated file (never read).
pub const REGISTRY_SPARE_FILE: &str = "topics.spare";
/// The spare holds at least this much, and at least twice the registry.
const REGISTRY_SPARE_BYTES_MIN: u64 = 64 << 10;

/// One topic: its partitions' shards (index = partition id) and config.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicMeta {
    pub name: String,
    /// `shards[p]` owns partition `p`.
    pub shards: Vec<u16>,
    pub config: TopicConfig,
    pub created_ms: i64,
    /// The configs set explicitly on the topic (at creation or by an
    /// alter), as given; the other keys of `config` are broker defaults.
    /// `None` only in registries written before this was tracked (see
    /// [`TopicRegistry::adopt_untracked_overrides`]).
    #[serde(default)]
    pub overrides: Option<BTreeMap<String, String>>,
}

impl TopicMeta {
    /// Whether `key` was set on the topic (Kafka's DYNAMIC_TOPIC_CONFIG)
    /// rather than taken from the broker's defaults.
    pub fn is_override(&self, key: &str) -> bool {
        self.overrides.as_ref().is_some_and(|o| o.contains_key(key))
    }

    pub fn partition_count(&self) -> u32 {
        self.shards.len() as u32
    }

    pub fn shard_of(&self, partition: PartitionId) -> Option<ShardId> {
        self.shards
            .get(partition.get() as usize)
            .map(|s| ShardId(*s))
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct RegistryFile {
    #[serde(default)]
    topics: Vec<TopicMeta>,
}

/// The topic registry and placement table, persisted in the data dir.
#[derive(Debug)]
pub struct TopicRegistry {
    path: PathBuf,
    shard_count: u16,
    topics: BTreeMap<String, TopicMeta>,
    partitions_max: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("cannot read the topic registry {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write the topic registry {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the topic registry {path} is not valid: {reason}")]
    Invalid { path: PathBuf, reason: String },
}

impl TopicRegistry {
    /// Loads `<data_dir>/topics.toml` (an absent file is an empty
    /// registry). Partitions placed on shards this process does not have
    /// (the broker was restarted with fewer `--shards`) are an error: their
    /// logs would be orphaned.
    pub fn open(
        data_dir: &Path,
        shard_count: u16,
        partitions_max: u32,
    ) -> Result<TopicRegistry, RegistryError> {
        assert!(shard_count > 0);
        let path = data_dir.join(REGISTRY_FILE);
        let file = match fs::read_to_string(&path) {
            Ok(text) => {
                toml::from_str::<RegistryFile>(&text).map_err(|e| RegistryError::Invalid {
                    path: path.clone(),
                    reason: e.to_string(),
                })?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => RegistryFile::default(),
            Err(source) => return Err(RegistryError::Read { path, source }),
        };
        let mut topics = BTreeMap::new();
        for topic in file.topics {
            let invalid = |reason: String| RegistryError::Invalid {
                path: path.clone(),
                reason,
            };
            validate_topic_name(&topic.name).map_err(|e| invalid(e.message))?;
            if let Some(shard) = topic.shards.iter().find(|s| **s >= shard_count) {
                return Err(invalid(format!(
                    "topic {} has a partition on shard {shard}, but the broker runs {shard_count} shards: \
                     start it with --shards {} or more",
                    topic.name,
                    shard + 1
                )));
            }
            if topics.insert(topic.name.clone(), topic).is_some() {
                return Err(invalid("a topic is listed twice".to_owned()));
            }
        }
        let registry = TopicRegistry {
            path,
            shard_count,
            topics,
            partitions_max,
        };
        let len = fs::metadata(&registry.path).map_or(0, |m| m.len());
        if !spare_holds(&registry.spare_path(), spare_bytes(len)) {
            reserve_spare(&registry.spare_path(), spare_bytes(len));
        }
        Ok(registry)
    }

    fn spare_path(&self) -> PathBuf {
        self.path.with_file_name(REGISTRY_SPARE_FILE)
    }

    pub fn get(&self, name: &str) -> Option<&TopicMeta> {
        self.topics.get(name)
    }

    pub fn topics(&self) -> impl Iterator<Item = &TopicMeta> {
        self.topics.values()
    }

    pub fn partition_total(&self) -> u64 {
        self.topics.values().map(|t| t.shards.len() as u64).sum()
    }

    /// Places a new topic's partitions on the least-loaded shards (ties to
    /// the lowest shard id, so placement is deterministic) and persists the
    /// registry before returning.
    pub fn create(
        &mut self,
        name: &str,
        partitions: u32,
        config: TopicConfig,
        overrides: BTreeMap<String, String>,
        now_ms: i64,
    ) -> Result<&TopicMeta, TopicError> {
        let meta = self.plan_create(name, partitions, config, overrides, now_ms)?;
        self.topics.insert(name.to_owned(), meta);
        if let Err(e) = self.persist() {
            self.topics.remove(name);
            return Err(TopicError::new(ErrorCode::KafkaStorageError, e.to_string()));
        }
        Ok(&self.topics[name])
    }

    /// Everything `create` checks, without changing anything (also serves
    /// `validate_only`).
    pub fn plan_create(
        &self,
        name: &str,
        partitions: u32,
        config: TopicConfig,
        overrides: BTreeMap<String, String>,
        now_ms: i64,
    ) -> Result<TopicMeta, TopicError> {
        validate_topic_name(name)?;
        if self.topics.contains_key(name) {
            return Err(TopicError::new(
                ErrorCode::TopicAlreadyExists,
                format!("topic {name:?} already exists"),
            ));
        }
        if partitions == 0 {
            return Err(TopicError::new(
                ErrorCode::InvalidPartitions,
                "a topic needs at least one partition",
            ));
        }
        if !self.room_for(partitions) {
            return Err(TopicError::new(
                ErrorCode::PolicyViolation,
                format!(
                    "creating {partitions} partitions would exceed the broker's limit of {} partitions",
                    self.partitions_max
                ),
            ));
        }
        Ok(TopicMeta {
            name: name.to_owned(),
            shards: self.place(partitions),
            config,
            created_ms: now_ms,
            overrides: Some(overrides),
        })
    }

    fn room_for(&self, partitions: u32) -> bool {
        self.partition_total() + u64::from(partitions) <= u64::from(self.partitions_max)
    }

    /// Shards for `partitions` new partitions: each on the least-loaded
    /// shard at that point (ties to the lowest shard id, so placement is
    /// deterministic). Topic creation and partition growth both use it.
    fn place(&self, partitions: u32) -> Vec<u16> {
        let mut load = vec![0u64; usize::from(self.shard_count)];
        for topic in self.topics.values() {
            for shard in &topic.shards {
                load[usize::from(*shard)] += 1;
            }
        }
        (0..partitions)
            .map(|_| {
                let (shard, _) = load
                    .iter()
                    .enumerate()
                    .min_by_key(|(shard, count)| (**count, *shard))
                    .expect("at least one shard");
                load[shard] += 1;
                shard as u16
            })
            .collect()
    }

    /// Grows `name` to `count` partitions (CreatePartitions): the new ones
    /// are placed as at creation; persisted before returning. Returns the
    /// new meta; the caller opens the new partitions' logs afterwards.
    pub fn add_partitions(&mut self, name: &str, count: u32) -> Result<&TopicMeta, TopicError> {
        let grown = self.plan_add_partitions(name, count)?;
        let old = self
            .topics
            .insert(name.to_owned(), grown)
            .expect("planned on an existing topic");
        if let Err(e) = self.persist() {
            self.topics.insert(name.to_owned(), old);
            return Err(TopicError::new(ErrorCode::KafkaStorageError, e.to_string()));
        }
        Ok(&self.topics[name])
    }

    /// Everything `add_partitions` checks, without changing anything (also
    /// serves `validate_only`).
    pub fn plan_add_partitions(&self, name: &str, count: u32) -> Result<TopicMeta, TopicError> {
        let Some(meta) = self.topics.get(name) else {
            return Err(TopicError::new(
                ErrorCode::UnknownTopicOrPartition,
                format!("topic {name:?} does not exist"),
            ));
        };
        let current = meta.partition_count();
        if count <= current {
            return Err(TopicError::new(
                ErrorCode::InvalidPartitions,
                format!(
                    "topic {name:?} has {current} partitions; the new count {count} must be larger"
                ),
            ));
        }
        let added = count - current;
        if !self.room_for(added) {
            return Err(TopicError::new(
                ErrorCode::InvalidPartitions,
                format!(
                    "adding {added} partitions would exceed the broker's limit of {} partitions",
                    self.partitions_max
                ),
            ));
        }
        let mut grown = meta.clone();
        grown.shards.extend(self.place(added));
        assert_eq!(grown.partition_count(), count);
        Ok(grown)
    }

    /// Replaces a topic's config and its explicitly set keys; persisted
    /// before returning. Returns the previous meta.
    pub fn set_config(
        &mut self,
        name: &str,
        config: TopicConfig,
        overrides: BTreeMap<String, String>,
    ) -> Result<TopicMeta, TopicError> {
        let Some(meta) = self.topics.get_mut(name) else {
            return Err(TopicError::new(
                ErrorCode::UnknownTopicOrPartition,
                format!("topic {name:?} does not exist"),
            ));
        };
        let old = meta.clone();
        meta.config = config;
        meta.overrides = Some(overrides);
        if let Err(e) = self.persist() {
            self.topics.insert(name.to_owned(), old);
            return Err(TopicError::new(ErrorCode::KafkaStorageError, e.to_string()));
        }
        Ok(old)
    }

    /// Registries written before explicit keys were tracked: takes the
    /// keys whose value differs from the broker's `defaults` as set on the
    /// topic (what was given at creation, as far as it can be told). Kept
    /// in memory; written with the next registry change.
    pub fn adopt_untracked_overrides(&mut self, defaults: &TopicConfig) {
        let default_entries: BTreeMap<&str, String> = defaults.entries().into_iter().collect();
        for meta in self.topics.values_mut() {
            if meta.overrides.is_some() {
                continue;
            }
            let differing = meta
                .config
                .entries()
                .into_iter()
                .filter(|(key, value)| default_entries.get(key) != Some(value))
                .map(|(key, value)| (key.to_owned(), value))
                .collect();
            meta.overrides = Some(differing);
        }
    }

    /// Removes a topic from the registry (persisted before returning). The
    /// caller deletes its partition directories afterwards: a crash in
    /// between leaves orphan directories, never a registered topic with
    /// missing logs.
    pub fn delete(&mut self, name: &str) -> Result<TopicMeta, TopicError> {
        let Some(meta) = self.topics.remove(name) else {
            return Err(TopicError::new(
                ErrorCode::UnknownTopicOrPartition,
                format!("topic {name:?} does not exist"),
            ));
        };
        if let Err(e) = self.persist() {
            self.topics.insert(name.to_owned(), meta);
            return Err(TopicError::new(ErrorCode::KafkaStorageError, e.to_string()));
        }
        Ok(meta)
    }

    fn persist(&self) -> Result<(), RegistryError> {
        let file = RegistryFile {
            topics: self.topics.values().cloned().collect(),
        };
        let text = toml::to_string(&file).map_err(|e| RegistryError::Invalid {
            path: self.path.clone(),
            reason: e.to_string(),
        })?;
        write_through_spare(&self.path, &self.spare_path(), text.as_bytes()).map_err(|source| {
            RegistryError::Write {
                path: self.path.clone(),
                source,
            }
        })
    }
}

/// Size of the spare for a registry of `len` bytes.
fn spare_bytes(len: u64) -> u64 {
    REGISTRY_SPARE_BYTES_MIN.max(len.saturating_mul(2))
}

/// Whether `spare` has `len` bytes allocated (by `reserve_spare`).
fn spare_holds(spare: &Path, len: u64) -> bool {
    use std::os::unix::fs::MetadataExt;
    fs::metadata(spare).is_ok_and(|m| m.is_file() && m.len() >= len && m.blocks() * 512 >= len)
}

/// Preallocates `spare` (best effort: a full disk leaves none, and the
/// next registry write then needs free space as any file does).
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
            "cannot preallocate the topic registry's spare file; deleting a topic on a full disk may fail until it can be"
        );
        let _ = fs::remove_file(spare);
    }
}

/// [`write_atomically`] through the preallocated `spare` when it holds
/// `bytes`: writing inside allocated blocks and cutting the file needs no
/// free space, and the rename frees the old registry's blocks. Then a new
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
    use fjord_storage::LogConfig;

    use super::*;

    fn defaults() -> TopicConfig {
        TopicConfig::from_log_config(&LogConfig::default())
    }

    #[test]
    fn registry_writes_go_through_a_preallocated_spare() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let spare = dir.path().join(REGISTRY_SPARE_FILE);
        let allocated = |path: &Path| fs::metadata(path).map_or(0, |m| m.blocks() * 512);
        let mut registry = TopicRegistry::open(dir.path(), 1, 100).unwrap();
        assert!(
            allocated(&spare) >= REGISTRY_SPARE_BYTES_MIN,
            "reserved at open"
        );
        let spare_inode = fs::metadata(&spare).unwrap().ino();
        registry
            .create("a", 1, defaults(), BTreeMap::new(), 1)
            .unwrap();
        // The write went into the spare (now the registry), and a new
        // spare was reserved for the next one.
        let registry_file = dir.path().join(REGISTRY_FILE);
        assert_eq!(fs::metadata(&registry_file).unwrap().ino(), spare_inode);
        assert!(
            allocated(&spare) >= REGISTRY_SPARE_BYTES_MIN,
            "reserved again"
        );
        let text = fs::read_to_string(&registry_file).unwrap();
        assert_eq!(
            fs::metadata(&registry_file).unwrap().len(),
            text.len() as u64
        );
        registry.delete("a").unwrap();
        let reopened = TopicRegistry::open(dir.path(), 1, 100).unwrap();
        assert!(reopened.get("a").is_none());
        // A spare too small (or missing) is not used; writes still work.
        fs::remove_file(&spare).unwrap();
        registry
            .create("b", 1, defaults(), BTreeMap::new(), 2)
            .unwrap();
        assert!(TopicRegistry::open(dir.path(), 1, 100)
            .unwrap()
            .get("b")
            .is_some());
    }

    #[test]
    fn placement_balances_shards_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut registry = TopicRegistry::open(dir.path(), 3, 100).unwrap();
        let a = registry
            .create("a", 4, defaults(), BTreeMap::new(), 1)
            .unwrap()
            .shards
            .clone();
        assert_eq!(a, vec![0, 1, 2, 0]);
        let b = registry
            .create("b", 2, defaults(), BTreeMap::new(), 2)
            .unwrap()
            .shards
            .clone();
        assert_eq!(b, vec![1, 2]);
        assert_eq!(
            registry
                .create("a", 1, defaults(), BTreeMap::new(), 3)
                .unwrap_err()
                .code,
            ErrorCode::TopicAlreadyExists
        );
        assert_eq!(
            registry
                .create("c", 0, defaults(), BTreeMap::new(), 3)
                .unwrap_err()
                .code,
            ErrorCode::InvalidPartitions
        );
        assert_eq!(
            registry
                .create("c", 95, defaults(), BTreeMap::new(), 3)
                .unwrap_err()
                .code,
            ErrorCode::PolicyViolation
        );

        let reopened = TopicRegistry::open(dir.path(), 3, 100).unwrap();
        assert_eq!(reopened.get("a").unwrap().shards, a);
        assert_eq!(
            reopened.get("b").unwrap().shard_of(PartitionId(1)),
            Some(ShardId(2))
        );
        assert_eq!(reopened.get("b").unwrap().shard_of(PartitionId(2)), None);

        let error = TopicRegistry::open(dir.path(), 2, 100).unwrap_err();
        assert!(error.to_string().contains("--shards 3"), "{error}");

        let mut registry = reopened;
        registry.delete("a").unwrap();
        assert_eq!(
            registry.delete("a").unwrap_err().code,
            ErrorCode::UnknownTopicOrPartition
        );
        let reopened = TopicRegistry::open(dir.path(), 3, 100).unwrap();
        assert!(reopened.get("a").is_none());
        assert_eq!(reopened.topics().count(), 1);
    }

    fn set(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn partitions_grow_with_the_create_placement_and_persist() {
        let dir = tempfile::tempdir().unwrap();
        let mut registry = TopicRegistry::open(dir.path(), 3, 10).unwrap();
        registry
            .create("a", 2, defaults(), BTreeMap::new(), 1)
            .unwrap();
        registry
            .create("b", 1, defaults(), BTreeMap::new(), 1)
            .unwrap();
        // Loads [1, 1, 1]: the new partitions go to shards 0, 1, 2, 0.
        let plan = registry.plan_add_partitions("a", 6).unwrap();
        assert_eq!(plan.shards, vec![0, 1, 0, 1, 2, 0]);
        assert_eq!(
            registry.get("a").unwrap().partition_count(),
            2,
            "a plan only"
        );
        assert_eq!(
            registry.add_partitions("a", 6).unwrap().shards,
            vec![0, 1, 0, 1, 2, 0]
        );
        for (name, count, code) in [
            ("a", 6, ErrorCode::InvalidPartitions),
            ("a", 3, ErrorCode::InvalidPartitions),
            ("a", 10, ErrorCode::InvalidPartitions),
            ("nope", 3, ErrorCode::UnknownTopicOrPartition),
        ] {
            let error = registry.add_partitions(name, count).unwrap_err();
            assert_eq!(error.code, code, "{name} to {count}: {}", error.message);
        }

        let mut config = defaults();
        config.apply([("retention.ms", "1000")]).unwrap();
        registry
            .set_config("b", config.clone(), set(&[("retention.ms", "1000")]))
            .unwrap();
        assert_eq!(
            registry
                .set_config("nope", config.clone(), BTreeMap::new())
                .unwrap_err()
                .code,
            ErrorCode::UnknownTopicOrPartition
        );

        let reopened = TopicRegistry::open(dir.path(), 3, 10).unwrap();
        assert_eq!(reopened.get("a").unwrap().shards, vec![0, 1, 0, 1, 2, 0]);
        let b = reopened.get("b").unwrap();
        assert_eq!(b.config, config);
        assert!(b.is_override("retention.ms"));
        assert!(!b.is_override("retention.bytes"));
    }

    #[test]
    fn untracked_overrides_are_inferred_from_the_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = defaults();
        config.apply([("retention.bytes", "4096")]).unwrap();
        let text = toml::to_string(&RegistryFile {
            topics: vec![TopicMeta {
                name: "old".into(),
                shards: vec![0],
                config,
                created_ms: 1,
                overrides: None,
            }],
        })
        .unwrap();
        fs::write(dir.path().join(REGISTRY_FILE), text).unwrap();
        let mut registry = TopicRegistry::open(dir.path(), 1, 10).unwrap();
        assert!(!registry.get("old").unwrap().is_override("retention.bytes"));
        registry.adopt_untracked_overrides(&defaults());
        let old = registry.get("old").unwrap();
        assert_eq!(old.overrides, Some(set(&[("retention.bytes", "4096")])));
    }

    #[test]
    fn a_corrupt_registry_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(REGISTRY_FILE), "topics = 7").unwrap();
        let error = TopicRegistry::open(dir.path(), 1, 10).unwrap_err();
        assert!(matches!(error, RegistryError::Invalid { .. }), "{error}");
    }
}
