//! The topic registry: shard 0's owner of the metadata image and this
//! node's shard table, persisted in the data dir.
//!
//! Files (each replaced atomically: spare or temporary file, fdatasync,
//! rename, directory fsync; see [`crate::durable_file`]):
//! - `<data>/topics.toml`: the image (cluster facts: topic ids, names,
//!   configs, partitions with replicas / ISR / leader / epochs), `version
//!   = 2`. Issue 13 replaces it by the metadata log's snapshots.
//! - `<data>/shards.toml`: the shard table (node facts: which local shard
//!   holds each partition replica, by topic id). It stays when the image
//!   comes from the metadata log, so it has its own file.
//!
//! A change is durable before it is visible: it is staged (a new image
//! and table, nothing changed yet), written, then committed in memory. A
//! change that adds replicas writes the table first, one that removes
//! them writes the image first, so at any crash every partition of the
//! durable image has a durable shard; entries the image lacks (a crash
//! between the two writes) are dropped at open, and a partition the table
//! lacks is placed then. Each file has a preallocated spare
//! (`topics.spare`, `shards.spare`), so deleting a topic works on a full
//! disk.
//!
//! `topics.toml` as written before issue 12 (no `version`; per topic its
//! `shards`) is read and converted at open: each topic gets a topic id,
//! one replica (this node), and its shards go to `shards.toml`.
//!
//! Lives on: the main thread at startup (blocking writes are fine there),
//! then shard 0 through [`AsyncRegistry`], which writes on glommio's
//! blocking thread pool so the shard's executor never waits on fsync.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use fjord_schema::{ErrorCode, LeaderEpoch, NodeId};
use glommio::sync::Semaphore;
use serde::{Deserialize, Serialize};

use super::catalog::{Catalog, TopicMeta};
use super::image::{MetadataImage, PartitionImage, TopicId, TopicImage};
use super::shard_table::{ShardTable, SHARD_TABLE_FILE, SHARD_TABLE_SPARE_FILE};
use crate::durable_file::SparedFile;
use crate::topic::{validate_topic_name, TopicConfig, TopicError};

pub const REGISTRY_FILE: &str = "topics.toml";
/// The next registry write goes into this preallocated file (never read).
pub const REGISTRY_SPARE_FILE: &str = "topics.spare";
/// The `version` of `topics.toml` written now; files without one are the
/// layout before issue 12.
const IMAGE_VERSION: u32 = 2;

/// `topics.toml`, version 2.
#[derive(Serialize, Deserialize)]
struct ImageFile {
    version: u32,
    #[serde(default)]
    topics: Vec<TopicRecord>,
}

#[derive(Serialize, Deserialize)]
struct TopicRecord {
    id: TopicId,
    name: String,
    created_ms: i64,
    config: TopicConfig,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    overrides: Option<BTreeMap<String, String>>,
    #[serde(default)]
    partitions: Vec<PartitionRecord>,
}

#[derive(Serialize, Deserialize)]
struct PartitionRecord {
    replicas: Vec<u32>,
    isr: Vec<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    leader: Option<u32>,
    leader_epoch: u32,
    partition_epoch: u32,
}

/// Only the version, to tell the layouts apart.
#[derive(Deserialize)]
struct VersionProbe {
    version: Option<u32>,
}

/// `topics.toml` before issue 12: one table of topics and their shards.
#[derive(Debug, Default, Serialize, Deserialize)]
struct LegacyFile {
    #[serde(default)]
    topics: Vec<LegacyTopic>,
}

#[derive(Debug, Serialize, Deserialize)]
struct LegacyTopic {
    name: String,
    /// `shards[p]` owns partition `p`.
    shards: Vec<u16>,
    config: TopicConfig,
    created_ms: i64,
    #[serde(default)]
    overrides: Option<BTreeMap<String, String>>,
}

fn encode_image(image: &MetadataImage) -> Result<String, toml::ser::Error> {
    let ids = |nodes: &[NodeId]| nodes.iter().map(|n| n.get()).collect();
    toml::to_string(&ImageFile {
        version: IMAGE_VERSION,
        topics: image
            .topics()
            .map(|t| TopicRecord {
                id: t.id,
                name: t.name.clone(),
                created_ms: t.created_ms,
                config: t.config.clone(),
                overrides: t.overrides.clone(),
                partitions: t
                    .partitions
                    .iter()
                    .map(|p| PartitionRecord {
                        replicas: ids(&p.replicas),
                        isr: ids(&p.isr),
                        leader: p.leader.map(|n| n.get()),
                        leader_epoch: p.leader_epoch.get(),
                        partition_epoch: p.partition_epoch,
                    })
                    .collect(),
            })
            .collect(),
    })
}

fn decode_image(file: ImageFile) -> Result<MetadataImage, String> {
    let nodes = |ids: Vec<u32>| ids.into_iter().map(NodeId).collect();
    let mut image = MetadataImage::default();
    for t in file.topics {
        validate_topic_name(&t.name).map_err(|e| e.message)?;
        if image.get(&t.name).is_some() {
            return Err("a topic is listed twice".to_owned());
        }
        if image.by_id(t.id).is_some() {
            return Err(format!("topic id {} is listed twice", t.id));
        }
        image = image.with_topic(TopicImage {
            id: t.id,
            name: t.name,
            config: t.config,
            created_ms: t.created_ms,
            overrides: t.overrides,
            partitions: t
                .partitions
                .into_iter()
                .map(|p| PartitionImage {
                    replicas: nodes(p.replicas),
                    isr: nodes(p.isr),
                    leader: p.leader.map(NodeId),
                    leader_epoch: LeaderEpoch(p.leader_epoch),
                    partition_epoch: p.partition_epoch,
                })
                .collect(),
        });
    }
    Ok(image)
}

/// The image and shard table of a pre-issue-12 registry: every topic gets
/// a fresh id and one replica, `node`; its shards move to the table.
fn convert_legacy(file: LegacyFile, node: NodeId) -> Result<(MetadataImage, ShardTable), String> {
    let mut image = MetadataImage::default();
    let mut table = ShardTable::default();
    for topic in file.topics {
        validate_topic_name(&topic.name).map_err(|e| e.message)?;
        if image.get(&topic.name).is_some() {
            return Err("a topic is listed twice".to_owned());
        }
        let id = TopicId::random();
        image = image.with_topic(TopicImage {
            id,
            name: topic.name,
            config: topic.config,
            created_ms: topic.created_ms,
            overrides: topic.overrides,
            partitions: vec![PartitionImage::single(node); topic.shards.len()],
        });
        table.insert(id, topic.shards);
    }
    Ok((image, table))
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

impl RegistryError {
    fn storage(self) -> TopicError {
        TopicError::new(ErrorCode::KafkaStorageError, self.to_string())
    }
}

/// The registry's two files.
#[derive(Clone, Debug)]
struct RegistryFiles {
    image: SparedFile,
    table: SparedFile,
}

impl RegistryFiles {
    fn in_dir(data_dir: &Path) -> RegistryFiles {
        RegistryFiles {
            image: SparedFile::new(
                data_dir.join(REGISTRY_FILE),
                data_dir.join(REGISTRY_SPARE_FILE),
            ),
            table: SparedFile::new(
                data_dir.join(SHARD_TABLE_FILE),
                data_dir.join(SHARD_TABLE_SPARE_FILE),
            ),
        }
    }
}

/// The writes of one staged change, in order; owns what it writes, so it
/// can run on another thread ([`Persist::run`] blocks).
#[derive(Debug)]
struct Persist {
    files: RegistryFiles,
    image: Option<Arc<MetadataImage>>,
    table: Option<ShardTable>,
    /// Write the table before the image (the change adds replicas).
    table_first: bool,
}

impl Persist {
    fn run(self) -> Result<(), RegistryError> {
        let write_image =
            |image: &MetadataImage| write_encoded(&self.files.image, encode_image(image));
        let write_table = |table: &ShardTable| write_encoded(&self.files.table, table.encode());
        if self.table_first {
            self.table.as_ref().map_or(Ok(()), write_table)?;
        }
        self.image.as_deref().map_or(Ok(()), write_image)?;
        if !self.table_first {
            // Replicas removed: the image is durable, so the change is;
            // entries the image lacks are dropped at the next open.
            if let Err(error) = self.table.as_ref().map_or(Ok(()), write_table) {
                tracing::warn!(%error, "the shard table keeps entries of removed replicas until the next write or start");
            }
        }
        Ok(())
    }
}

/// A partition this node holds is on shard `shard`, which a process of
/// `shard_count` shards does not have: its log would be orphaned.
fn too_few_shards(
    path: &Path,
    image: &MetadataImage,
    id: TopicId,
    shard: u16,
    shard_count: u16,
) -> RegistryError {
    let name = image.by_id(id).map_or("?", |t| t.name.as_str());
    RegistryError::Invalid {
        path: path.to_owned(),
        reason: format!(
            "topic {name} has a partition on shard {shard}, but the broker runs {shard_count} \
             shards: start it with --shards {} or more",
            shard + 1
        ),
    }
}

/// Writes one registry file's encoding atomically; an encoding failure is
/// the file's `Invalid`, a write failure its `Write`.
fn write_encoded<E: std::fmt::Display>(
    file: &SparedFile,
    text: Result<String, E>,
) -> Result<(), RegistryError> {
    let text = text.map_err(|e| RegistryError::Invalid {
        path: file.path.clone(),
        reason: e.to_string(),
    })?;
    file.write(text.as_bytes())
        .map_err(|source| RegistryError::Write {
            path: file.path.clone(),
            source,
        })
}

/// A registry change computed but not yet durable nor visible.
#[derive(Debug)]
struct Staged {
    image: Arc<MetadataImage>,
    table: ShardTable,
    persist: Option<Persist>,
    /// What the change returns: the new topic for a create or a growth,
    /// the old one for a config change or a delete.
    result: TopicMeta,
}

/// The metadata image and this node's shard table, persisted in the data
/// dir (see the module docs).
#[derive(Debug)]
pub struct TopicRegistry {
    files: RegistryFiles,
    /// This node: the one replica of every partition, for now.
    node: NodeId,
    shard_count: u16,
    partitions_max: u32,
    image: Arc<MetadataImage>,
    table: ShardTable,
}

fn read_optional(path: &Path) -> Result<Option<String>, RegistryError> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(RegistryError::Read {
            path: path.to_owned(),
            source,
        }),
    }
}

impl TopicRegistry {
    /// Loads `<data_dir>/topics.toml` and `shards.toml` (absent files are
    /// an empty registry), converting the pre-issue-12 layout (and then
    /// writing the new one, before returning). Partitions placed on shards
    /// this process does not have (the broker was restarted with fewer
    /// `--shards`) are an error: their logs would be orphaned.
    pub fn open(
        data_dir: &Path,
        node: NodeId,
        shard_count: u16,
        partitions_max: u32,
    ) -> Result<TopicRegistry, RegistryError> {
        assert!(shard_count > 0);
        let files = RegistryFiles::in_dir(data_dir);
        let invalid = |path: &Path| {
            let path = path.to_owned();
            move |reason: String| RegistryError::Invalid { path, reason }
        };
        let image_path = &files.image.path;
        let read_table = || -> Result<ShardTable, RegistryError> {
            read_optional(&files.table.path)?.map_or(Ok(ShardTable::default()), |text| {
                ShardTable::decode(&text).map_err(invalid(&files.table.path))
            })
        };
        let (image, mut table, converted) = match read_optional(image_path)? {
            None => (MetadataImage::default(), read_table()?, false),
            Some(text) => {
                let probe: VersionProbe =
                    toml::from_str(&text).map_err(|e| invalid(image_path)(e.to_string()))?;
                match probe.version {
                    None => {
                        let legacy: LegacyFile = toml::from_str(&text)
                            .map_err(|e| invalid(image_path)(e.to_string()))?;
                        let (image, table) =
                            convert_legacy(legacy, node).map_err(invalid(image_path))?;
                        (image, table, true)
                    }
                    Some(IMAGE_VERSION) => {
                        let file: ImageFile = toml::from_str(&text)
                            .map_err(|e| invalid(image_path)(e.to_string()))?;
                        let image = decode_image(file).map_err(invalid(image_path))?;
                        (image, read_table()?, false)
                    }
                    Some(version) => {
                        return Err(invalid(image_path)(format!(
                            "version {version} (this broker reads version {IMAGE_VERSION})"
                        )))
                    }
                }
            }
        };
        // Entries of topics the image lacks are leftovers of a crash
        // between the two writes of a create or a delete.
        table = image
            .topics()
            .filter_map(|t| Some((t.id, table.shards(t.id)?.to_vec())))
            .fold(ShardTable::default(), |mut kept, (id, shards)| {
                kept.insert(id, shards);
                kept
            });
        if let Some((id, shard)) = table.shard_max().filter(|(_, s)| *s >= shard_count) {
            return Err(too_few_shards(image_path, &image, id, shard, shard_count));
        }
        let placed = table.reconcile(&image, shard_count);
        if placed {
            tracing::warn!(path = %files.table.path.display(), "partitions without a shard in the shard table were placed");
        }
        files.image.reserve();
        files.table.reserve();
        let registry = TopicRegistry {
            files,
            node,
            shard_count,
            partitions_max,
            image: Arc::new(image),
            table,
        };
        if converted || placed {
            Persist {
                files: registry.files.clone(),
                image: converted.then(|| registry.image.clone()),
                table: Some(registry.table.clone()),
                table_first: true,
            }
            .run()?;
            if converted {
                tracing::info!(path = %registry.files.image.path.display(), "topic registry converted to the image + shard table layout");
            }
        }
        Ok(registry)
    }

    /// Opens this node's shard table (`shards.toml`) for `image`, the
    /// metadata log's (issue 13: the image comes from the controller,
    /// `topics.toml` is read only to import a pre-cluster data dir). The
    /// table is made to fit the image (`ShardTable::reconcile_hosted`) and
    /// written back if that changed it. Partitions on shards this process
    /// does not have are an error, as in [`Self::open`].
    pub fn open_following(
        data_dir: &Path,
        node: NodeId,
        shard_count: u16,
        partitions_max: u32,
        image: Arc<MetadataImage>,
    ) -> Result<TopicRegistry, RegistryError> {
        assert!(shard_count > 0);
        let files = RegistryFiles::in_dir(data_dir);
        let path = &files.table.path;
        let mut table = read_optional(path)?.map_or(Ok(ShardTable::default()), |text| {
            ShardTable::decode(&text).map_err(|reason| RegistryError::Invalid {
                path: path.clone(),
                reason,
            })
        })?;
        let changed = table.reconcile_hosted(&image, shard_count, node);
        if let Some((id, shard)) = table
            .held_shard_max(&image, node)
            .filter(|(_, s)| *s >= shard_count)
        {
            return Err(too_few_shards(path, &image, id, shard, shard_count));
        }
        files.table.reserve();
        let registry = TopicRegistry {
            files,
            node,
            shard_count,
            partitions_max,
            image,
            table,
        };
        if changed {
            registry.table_write().run()?;
        }
        Ok(registry)
    }

    /// Makes `image` (a newer one from the metadata log) this registry's,
    /// with the shard table fitted to it; the table write to run (before
    /// the new partitions' logs open) if the table changed.
    fn stage_follow(&mut self, image: Arc<MetadataImage>) -> Option<Persist> {
        let changed = self
            .table
            .reconcile_hosted(&image, self.shard_count, self.node);
        self.image = image;
        changed.then(|| self.table_write())
    }

    fn table_write(&self) -> Persist {
        Persist {
            files: self.files.clone(),
            image: None,
            table: Some(self.table.clone()),
            table_first: true,
        }
    }

    pub fn node(&self) -> NodeId {
        self.node
    }

    pub fn image(&self) -> &Arc<MetadataImage> {
        &self.image
    }

    pub fn shard_table(&self) -> &ShardTable {
        &self.table
    }

    /// The catalog shards route with, as of now.
    pub fn catalog(&self) -> Catalog {
        Catalog::new(self.image.clone(), &self.table)
    }

    fn meta(&self, topic: &Arc<TopicImage>) -> TopicMeta {
        TopicMeta::new(topic.clone(), &self.table)
    }

    pub fn get(&self, name: &str) -> Option<TopicMeta> {
        self.image.get(name).map(|t| self.meta(t))
    }

    pub fn topics(&self) -> impl Iterator<Item = TopicMeta> + '_ {
        self.image.topics().map(|t| self.meta(t))
    }

    pub fn partition_total(&self) -> u64 {
        self.image.partition_total()
    }

    fn missing(name: &str) -> TopicError {
        TopicError::new(
            ErrorCode::UnknownTopicOrPartition,
            format!("topic {name:?} does not exist"),
        )
    }

    /// Makes `staged` the registry's state; returns its result.
    fn commit(&mut self, staged: Staged) -> TopicMeta {
        assert!(staged.persist.is_none(), "committed before it was written");
        self.image = staged.image;
        self.table = staged.table;
        staged.result
    }

    /// Writes `staged` here (blocking) and commits it.
    fn apply(&mut self, mut staged: Staged) -> Result<TopicMeta, TopicError> {
        if let Some(persist) = staged.persist.take() {
            persist.run().map_err(RegistryError::storage)?;
        }
        Ok(self.commit(staged))
    }

    /// A change to `image` (and `table`, if given) returning `result`.
    /// `table_first`: the change adds replicas, so the table is written
    /// before the image; otherwise after it.
    fn stage(
        &self,
        image: MetadataImage,
        table: Option<ShardTable>,
        table_first: bool,
        result: TopicMeta,
    ) -> Staged {
        let image = Arc::new(image);
        Staged {
            persist: Some(Persist {
                files: self.files.clone(),
                image: Some(image.clone()),
                table: table.clone(),
                table_first,
            }),
            image,
            table: table.unwrap_or_else(|| self.table.clone()),
            result,
        }
    }

    /// Places a new topic's partitions on the least-loaded shards (ties to
    /// the lowest shard id, so placement is deterministic) and persists the
    /// registry before returning. Blocking: on a shard, use
    /// [`AsyncRegistry::create`].
    pub fn create(
        &mut self,
        name: &str,
        partitions: u32,
        config: TopicConfig,
        overrides: BTreeMap<String, String>,
        now_ms: i64,
    ) -> Result<TopicMeta, TopicError> {
        let staged = self.stage_create(name, partitions, config, overrides, now_ms)?;
        self.apply(staged)
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
        Ok(self
            .stage_create(name, partitions, config, overrides, now_ms)?
            .result)
    }

    fn stage_create(
        &self,
        name: &str,
        partitions: u32,
        config: TopicConfig,
        overrides: BTreeMap<String, String>,
        now_ms: i64,
    ) -> Result<Staged, TopicError> {
        validate_topic_name(name)?;
        if self.image.get(name).is_some() {
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
        let topic = Arc::new(TopicImage {
            id: TopicId::random(),
            name: name.to_owned(),
            config,
            created_ms: now_ms,
            overrides: Some(overrides),
            partitions: vec![PartitionImage::single(self.node); partitions as usize],
        });
        let table = self.table.grown(topic.id, partitions, self.shard_count);
        let result = TopicMeta::new(topic.clone(), &table);
        let image = self.image.with_topic(Arc::unwrap_or_clone(topic));
        Ok(self.stage(image, Some(table), true, result))
    }

    fn room_for(&self, partitions: u32) -> bool {
        self.partition_total() + u64::from(partitions) <= u64::from(self.partitions_max)
    }

    /// Grows `name` to `count` partitions (CreatePartitions): the new ones
    /// are placed as at creation; persisted before returning. Returns the
    /// new meta; the caller opens the new partitions' logs afterwards.
    /// Blocking: on a shard, use [`AsyncRegistry::add_partitions`].
    pub fn add_partitions(&mut self, name: &str, count: u32) -> Result<TopicMeta, TopicError> {
        let staged = self.stage_add_partitions(name, count)?;
        self.apply(staged)
    }

    /// Everything `add_partitions` checks, without changing anything (also
    /// serves `validate_only`).
    pub fn plan_add_partitions(&self, name: &str, count: u32) -> Result<TopicMeta, TopicError> {
        Ok(self.stage_add_partitions(name, count)?.result)
    }

    fn stage_add_partitions(&self, name: &str, count: u32) -> Result<Staged, TopicError> {
        let Some(topic) = self.image.get(name) else {
            return Err(Self::missing(name));
        };
        let current = topic.partition_count();
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
        let mut grown = TopicImage::clone(topic);
        grown
            .partitions
            .resize(count as usize, PartitionImage::single(self.node));
        let grown = Arc::new(grown);
        let table = self.table.grown(grown.id, count, self.shard_count);
        let result = TopicMeta::new(grown.clone(), &table);
        assert_eq!(result.partition_count(), count);
        let image = self.image.with_topic(Arc::unwrap_or_clone(grown));
        Ok(self.stage(image, Some(table), true, result))
    }

    /// Replaces a topic's config and its explicitly set keys; persisted
    /// before returning. Returns the previous meta. Blocking: on a shard,
    /// use [`AsyncRegistry::set_config`].
    pub fn set_config(
        &mut self,
        name: &str,
        config: TopicConfig,
        overrides: BTreeMap<String, String>,
    ) -> Result<TopicMeta, TopicError> {
        let staged = self.stage_set_config(name, config, overrides)?;
        self.apply(staged)
    }

    fn stage_set_config(
        &self,
        name: &str,
        config: TopicConfig,
        overrides: BTreeMap<String, String>,
    ) -> Result<Staged, TopicError> {
        let Some(topic) = self.image.get(name) else {
            return Err(Self::missing(name));
        };
        let old = self.meta(topic);
        let mut changed = TopicImage::clone(topic);
        changed.config = config;
        changed.overrides = Some(overrides);
        let image = self.image.with_topic(changed);
        Ok(self.stage(image, None, false, old))
    }

    /// Registries written before explicit keys were tracked: takes the
    /// keys whose value differs from the broker's `defaults` as set on the
    /// topic (what was given at creation, as far as it can be told). Kept
    /// in memory; written with the next registry change.
    pub fn adopt_untracked_overrides(&mut self, defaults: &TopicConfig) {
        let default_entries: BTreeMap<&str, String> = defaults.entries().into_iter().collect();
        let mut image = MetadataImage::clone(&self.image);
        for topic in self.image.topics() {
            if topic.overrides.is_some() {
                continue;
            }
            let differing = topic
                .config
                .entries()
                .into_iter()
                .filter(|(key, value)| default_entries.get(key) != Some(value))
                .map(|(key, value)| (key.to_owned(), value))
                .collect();
            let mut adopted = TopicImage::clone(topic);
            adopted.overrides = Some(differing);
            image = image.with_topic(adopted);
        }
        self.image = Arc::new(image);
    }

    /// Removes a topic from the registry (persisted before returning). The
    /// caller deletes its partition directories afterwards: a crash in
    /// between leaves orphan directories, never a registered topic with
    /// missing logs. Blocking: on a shard, use [`AsyncRegistry::delete`].
    pub fn delete(&mut self, name: &str) -> Result<TopicMeta, TopicError> {
        let staged = self.stage_delete(name)?;
        self.apply(staged)
    }

    fn stage_delete(&self, name: &str) -> Result<Staged, TopicError> {
        let Some(topic) = self.image.get(name) else {
            return Err(Self::missing(name));
        };
        let old = self.meta(topic);
        let table = self.table.without(topic.id);
        let image = self.image.without_topic(name);
        Ok(self.stage(image, Some(table), false, old))
    }
}

/// Shard 0's registry (see [`crate::service::TopicAdmin`]): reads answer
/// at once; each change is staged, written on glommio's blocking thread
/// pool (`spawn_blocking`: the fsyncs never stall the shard's executor),
/// and becomes visible only once durable. Changes run one at a time, so
/// the files are written in the order the changes commit.
#[derive(Debug)]
pub struct AsyncRegistry {
    registry: RefCell<TopicRegistry>,
    writer: Semaphore,
}

impl AsyncRegistry {
    pub fn new(registry: TopicRegistry) -> AsyncRegistry {
        AsyncRegistry {
            registry: RefCell::new(registry),
            writer: Semaphore::new(1),
        }
    }

    pub fn get(&self, name: &str) -> Option<TopicMeta> {
        self.registry.borrow().get(name)
    }

    pub fn catalog(&self) -> Catalog {
        self.registry.borrow().catalog()
    }

    /// See [`TopicRegistry::plan_create`].
    pub fn plan_create(
        &self,
        name: &str,
        partitions: u32,
        config: TopicConfig,
        overrides: BTreeMap<String, String>,
        now_ms: i64,
    ) -> Result<TopicMeta, TopicError> {
        self.registry
            .borrow()
            .plan_create(name, partitions, config, overrides, now_ms)
    }

    /// See [`TopicRegistry::plan_add_partitions`].
    pub fn plan_add_partitions(&self, name: &str, count: u32) -> Result<TopicMeta, TopicError> {
        self.registry.borrow().plan_add_partitions(name, count)
    }

    /// See [`TopicRegistry::create`].
    pub async fn create(
        &self,
        name: &str,
        partitions: u32,
        config: TopicConfig,
        overrides: BTreeMap<String, String>,
        now_ms: i64,
    ) -> Result<TopicMeta, TopicError> {
        self.change(|r| r.stage_create(name, partitions, config, overrides, now_ms))
            .await
    }

    /// See [`TopicRegistry::add_partitions`].
    pub async fn add_partitions(&self, name: &str, count: u32) -> Result<TopicMeta, TopicError> {
        self.change(|r| r.stage_add_partitions(name, count)).await
    }

    /// See [`TopicRegistry::set_config`].
    pub async fn set_config(
        &self,
        name: &str,
        config: TopicConfig,
        overrides: BTreeMap<String, String>,
    ) -> Result<TopicMeta, TopicError> {
        self.change(|r| r.stage_set_config(name, config, overrides))
            .await
    }

    /// Follows the metadata log: `image` becomes the registry's, the
    /// shard table is fitted to it and, if that changed it, written (on
    /// the blocking pool) before this returns, so the logs of newly
    /// placed partitions open only once their shard is durable.
    pub async fn follow(&self, image: Arc<MetadataImage>) -> Result<(), RegistryError> {
        let _writing = self
            .writer
            .acquire_permit(1)
            .await
            .map_err(|e| RegistryError::Write {
                path: PathBuf::from(SHARD_TABLE_FILE),
                source: std::io::Error::other(format!("registry closed: {e}")),
            })?;
        let persist = self.registry.borrow_mut().stage_follow(image);
        if let Some(persist) = persist {
            glommio::executor()
                .spawn_blocking(move || persist.run())
                .await?;
        }
        Ok(())
    }

    pub fn node(&self) -> NodeId {
        self.registry.borrow().node()
    }

    pub fn shard_table(&self) -> ShardTable {
        self.registry.borrow().shard_table().clone()
    }

    pub fn image(&self) -> Arc<MetadataImage> {
        self.registry.borrow().image().clone()
    }

    /// See [`TopicRegistry::delete`].
    pub async fn delete(&self, name: &str) -> Result<TopicMeta, TopicError> {
        self.change(|r| r.stage_delete(name)).await
    }

    async fn change(
        &self,
        stage: impl FnOnce(&TopicRegistry) -> Result<Staged, TopicError>,
    ) -> Result<TopicMeta, TopicError> {
        let _writing = self.writer.acquire_permit(1).await.map_err(|e| {
            TopicError::new(
                ErrorCode::KafkaStorageError,
                format!("registry closed: {e}"),
            )
        })?;
        let mut staged = stage(&self.registry.borrow())?;
        if let Some(persist) = staged.persist.take() {
            glommio::executor()
                .spawn_blocking(move || persist.run())
                .await
                .map_err(RegistryError::storage)?;
        }
        Ok(self.registry.borrow_mut().commit(staged))
    }
}

#[cfg(test)]
mod tests {
    use fjord_schema::{PartitionId, ShardId};
    use fjord_storage::LogConfig;

    use super::*;
    use crate::durable_file::SPARE_BYTES_MIN;

    const NODE: NodeId = NodeId(1);

    fn defaults() -> TopicConfig {
        TopicConfig::from_log_config(&LogConfig::default())
    }

    #[test]
    fn registry_writes_go_through_a_preallocated_spare() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let spare = dir.path().join(REGISTRY_SPARE_FILE);
        let allocated = |path: &Path| fs::metadata(path).map_or(0, |m| m.blocks() * 512);
        let mut registry = TopicRegistry::open(dir.path(), NODE, 1, 100).unwrap();
        assert!(allocated(&spare) >= SPARE_BYTES_MIN, "reserved at open");
        assert!(
            allocated(&dir.path().join(SHARD_TABLE_SPARE_FILE)) >= SPARE_BYTES_MIN,
            "the shard table's too"
        );
        let spare_inode = fs::metadata(&spare).unwrap().ino();
        registry
            .create("a", 1, defaults(), BTreeMap::new(), 1)
            .unwrap();
        // The write went into the spare (now the registry), and a new
        // spare was reserved for the next one.
        let registry_file = dir.path().join(REGISTRY_FILE);
        assert_eq!(fs::metadata(&registry_file).unwrap().ino(), spare_inode);
        assert!(allocated(&spare) >= SPARE_BYTES_MIN, "reserved again");
        let text = fs::read_to_string(&registry_file).unwrap();
        assert_eq!(
            fs::metadata(&registry_file).unwrap().len(),
            text.len() as u64
        );
        registry.delete("a").unwrap();
        let reopened = TopicRegistry::open(dir.path(), NODE, 1, 100).unwrap();
        assert!(reopened.get("a").is_none());
        // A spare too small (or missing) is not used; writes still work.
        fs::remove_file(&spare).unwrap();
        registry
            .create("b", 1, defaults(), BTreeMap::new(), 2)
            .unwrap();
        assert!(TopicRegistry::open(dir.path(), NODE, 1, 100)
            .unwrap()
            .get("b")
            .is_some());
    }

    #[test]
    fn placement_balances_shards_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut registry = TopicRegistry::open(dir.path(), NODE, 3, 100).unwrap();
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

        let reopened = TopicRegistry::open(dir.path(), NODE, 3, 100).unwrap();
        assert_eq!(reopened.get("a").unwrap().shards, a);
        assert_eq!(
            reopened.get("b").unwrap().shard_of(PartitionId(1)),
            Some(ShardId(2))
        );
        assert_eq!(reopened.get("b").unwrap().shard_of(PartitionId(2)), None);

        let error = TopicRegistry::open(dir.path(), NODE, 2, 100).unwrap_err();
        assert!(error.to_string().contains("--shards 3"), "{error}");

        let mut registry = reopened;
        registry.delete("a").unwrap();
        assert_eq!(
            registry.delete("a").unwrap_err().code,
            ErrorCode::UnknownTopicOrPartition
        );
        let reopened = TopicRegistry::open(dir.path(), NODE, 3, 100).unwrap();
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
        let mut registry = TopicRegistry::open(dir.path(), NODE, 3, 10).unwrap();
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

        let reopened = TopicRegistry::open(dir.path(), NODE, 3, 10).unwrap();
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
        let text = toml::to_string(&LegacyFile {
            topics: vec![LegacyTopic {
                name: "old".into(),
                shards: vec![0],
                config,
                created_ms: 1,
                overrides: None,
            }],
        })
        .unwrap();
        fs::write(dir.path().join(REGISTRY_FILE), text).unwrap();
        let mut registry = TopicRegistry::open(dir.path(), NODE, 1, 10).unwrap();
        assert!(!registry.get("old").unwrap().is_override("retention.bytes"));
        registry.adopt_untracked_overrides(&defaults());
        let old = registry.get("old").unwrap();
        assert_eq!(old.overrides, Some(set(&[("retention.bytes", "4096")])));
    }

    #[test]
    fn a_corrupt_registry_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(REGISTRY_FILE), "topics = 7").unwrap();
        let error = TopicRegistry::open(dir.path(), NODE, 1, 10).unwrap_err();
        assert!(matches!(error, RegistryError::Invalid { .. }), "{error}");
    }

    #[test]
    fn corrupt_new_layout_files_are_clear_errors() {
        for (file, text, reason) in [
            (REGISTRY_FILE, "version = 3", "version 3"),
            (
                REGISTRY_FILE,
                "version = 2\n[[topics]]\nname = \"a\"\n",
                "missing field",
            ),
            (SHARD_TABLE_FILE, "version = 1\ntopics = 7", "shards.toml"),
        ] {
            let dir = tempfile::tempdir().unwrap();
            TopicRegistry::open(dir.path(), NODE, 1, 10)
                .unwrap()
                .create("a", 1, defaults(), BTreeMap::new(), 1)
                .unwrap();
            fs::write(dir.path().join(file), text).unwrap();
            let error = TopicRegistry::open(dir.path(), NODE, 1, 10).unwrap_err();
            assert!(matches!(error, RegistryError::Invalid { .. }), "{error}");
            let message = error.to_string();
            assert!(
                message.contains(reason) || message.contains(file),
                "{message}"
            );
        }
    }

    /// `topics.toml` exactly as the broker before issue 12 wrote it (made
    /// by that code: `__consumer_offsets` with 2 partitions, `orders` with
    /// 4, `logs.v1` with 1, on 3 shards).
    const LEGACY_REGISTRY: &str = include_str!("testdata/topics-0ef4d7e.toml");

    #[test]
    fn a_registry_written_before_issue_12_is_converted_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(REGISTRY_FILE), LEGACY_REGISTRY).unwrap();
        let registry = TopicRegistry::open(dir.path(), NODE, 3, 100).unwrap();
        let shards = |r: &TopicRegistry, name: &str| r.get(name).unwrap().shards.clone();
        assert_eq!(shards(&registry, "__consumer_offsets"), vec![0, 1]);
        assert_eq!(shards(&registry, "orders"), vec![2, 0, 1, 2]);
        assert_eq!(shards(&registry, "logs.v1"), vec![0]);
        let orders = registry.get("orders").unwrap();
        assert_eq!(orders.created_ms, 1733400001000);
        assert_eq!(orders.config.compression_type.name(), "zstd");
        assert_eq!(orders.config.inert["preallocate"], "true");
        assert!(orders.is_override("compression.type"));
        assert!(!orders.is_override("retention.ms"));
        assert_eq!(orders.partitions, vec![PartitionImage::single(NODE); 4]);
        let offsets = registry.get("__consumer_offsets").unwrap();
        assert_eq!(offsets.config.retention_ms, None);
        assert!(offsets.config.flush_before_ack);
        let ids: Vec<TopicId> = registry.image().topics().map(|t| t.id).collect();
        assert!(ids
            .iter()
            .all(|id| ids.iter().filter(|i| *i == id).count() == 1));

        // Converted on open: the new layout is on disk, and reopening
        // (twice: the first reopen must not rewrite anything) gives the
        // same image, ids included, and the same shard table.
        let text = fs::read_to_string(dir.path().join(REGISTRY_FILE)).unwrap();
        assert!(text.starts_with("version = 2"), "{text}");
        assert!(dir.path().join(SHARD_TABLE_FILE).exists());
        for _ in 0..2 {
            let reopened = TopicRegistry::open(dir.path(), NODE, 3, 100).unwrap();
            assert_eq!(reopened.image(), registry.image());
            assert_eq!(reopened.shard_table(), registry.shard_table());
            assert_eq!(reopened.catalog(), registry.catalog());
        }
        assert_eq!(
            fs::read_to_string(dir.path().join(REGISTRY_FILE)).unwrap(),
            text
        );
        // Placement goes on balancing from the converted table: loads are
        // [3, 2, 2], so a new topic's 4 partitions go to 1, 2, 0, 1.
        let mut registry = TopicRegistry::open(dir.path(), NODE, 3, 100).unwrap();
        let created = registry
            .create("new", 4, defaults(), BTreeMap::new(), 5)
            .unwrap();
        assert_eq!(created.shards, vec![1, 2, 0, 1]);
        // Fewer shards than the converted table uses is refused as before.
        let error = TopicRegistry::open(dir.path(), NODE, 2, 100).unwrap_err();
        assert!(error.to_string().contains("--shards 3"), "{error}");
    }

    #[test]
    fn topic_ids_are_stable_and_a_recreated_topic_gets_a_new_one() {
        let dir = tempfile::tempdir().unwrap();
        let mut registry = TopicRegistry::open(dir.path(), NODE, 2, 100).unwrap();
        let first = registry
            .create("a", 2, defaults(), BTreeMap::new(), 1)
            .unwrap()
            .id;
        registry.add_partitions("a", 3).unwrap();
        registry
            .set_config("a", defaults(), set(&[("retention.ms", "5")]))
            .unwrap();
        let reopened = TopicRegistry::open(dir.path(), NODE, 2, 100).unwrap();
        assert_eq!(reopened.get("a").unwrap().id, first);
        assert_eq!(reopened.image(), registry.image());
        assert_eq!(reopened.shard_table(), registry.shard_table());
        registry.delete("a").unwrap();
        assert_eq!(registry.shard_table().shards(first), None);
        let second = registry
            .create("a", 1, defaults(), BTreeMap::new(), 2)
            .unwrap()
            .id;
        assert_ne!(first, second);
        let reopened = TopicRegistry::open(dir.path(), NODE, 2, 100).unwrap();
        assert_eq!(reopened.get("a").unwrap().id, second);
        let p = reopened.image().get("a").unwrap().partitions[0].clone();
        assert_eq!(p, PartitionImage::single(NODE));
    }

    #[test]
    fn a_crash_between_the_two_files_is_repaired_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let mut registry = TopicRegistry::open(dir.path(), NODE, 2, 100).unwrap();
        registry
            .create("a", 2, defaults(), BTreeMap::new(), 1)
            .unwrap();
        let table_before = fs::read(dir.path().join(SHARD_TABLE_FILE)).unwrap();
        let image_before = fs::read(dir.path().join(REGISTRY_FILE)).unwrap();
        // A create that wrote the table but not the image: the extra entry
        // is dropped.
        registry
            .create("b", 3, defaults(), BTreeMap::new(), 2)
            .unwrap();
        fs::write(dir.path().join(REGISTRY_FILE), &image_before).unwrap();
        let reopened = TopicRegistry::open(dir.path(), NODE, 2, 100).unwrap();
        assert!(reopened.get("b").is_none());
        assert_eq!(
            reopened.shard_table(),
            &ShardTable::decode(std::str::from_utf8(&table_before).unwrap()).unwrap()
        );
        // A table lost or behind the image: the missing partitions are
        // placed (a partition's log does not depend on its shard).
        fs::remove_file(dir.path().join(SHARD_TABLE_FILE)).unwrap();
        let reopened = TopicRegistry::open(dir.path(), NODE, 2, 100).unwrap();
        assert_eq!(reopened.get("a").unwrap().shards, vec![0, 1]);
        assert!(dir.path().join(SHARD_TABLE_FILE).exists(), "written");
    }

    #[test]
    fn shard_zero_writes_the_registry_off_its_executor() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_owned();
        let registry = TopicRegistry::open(&path, NODE, 2, 100).unwrap();
        let executor = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .make()
            .unwrap();
        let (image, table) = executor.run(async move {
            let registry = AsyncRegistry::new(registry);
            let a = registry
                .create("a", 3, defaults(), BTreeMap::new(), 1)
                .await
                .unwrap();
            assert_eq!(a.shards, vec![0, 1, 0]);
            assert_eq!(registry.get("a").unwrap(), a);
            let grown = registry.add_partitions("a", 4).await.unwrap();
            assert_eq!(grown.shards, vec![0, 1, 0, 1]);
            assert_eq!(
                registry.plan_add_partitions("a", 5).unwrap().shards.len(),
                5
            );
            assert_eq!(
                registry.get("a").unwrap().partition_count(),
                4,
                "a plan only"
            );
            registry
                .create("b", 1, defaults(), BTreeMap::new(), 1)
                .await
                .unwrap();
            let old = registry
                .set_config("b", defaults(), set(&[("retention.ms", "7")]))
                .await
                .unwrap();
            assert!(!old.is_override("retention.ms"));
            assert_eq!(
                registry.delete("nope").await.unwrap_err().code,
                ErrorCode::UnknownTopicOrPartition
            );
            registry.delete("a").await.unwrap();
            let catalog = registry.catalog();
            assert!(catalog.get("a").is_none());
            assert!(catalog.get("b").unwrap().is_override("retention.ms"));
            let registry = registry.registry.into_inner();
            (registry.image().clone(), registry.shard_table().clone())
        });
        let reopened = TopicRegistry::open(&path, NODE, 2, 100).unwrap();
        assert_eq!(reopened.image(), &image);
        assert_eq!(reopened.shard_table(), &table);
    }

    #[test]
    fn a_failed_table_write_fails_an_addition_but_not_a_removal() {
        let dir = tempfile::tempdir().unwrap();
        let mut registry = TopicRegistry::open(dir.path(), NODE, 2, 100).unwrap();
        let a = registry
            .create("a", 2, defaults(), BTreeMap::new(), 1)
            .unwrap();
        // Directories where the table's spare and temporary file go: every
        // shard table write fails (even as root).
        fs::remove_file(dir.path().join(SHARD_TABLE_SPARE_FILE)).unwrap();
        fs::create_dir(dir.path().join(SHARD_TABLE_SPARE_FILE)).unwrap();
        fs::create_dir(dir.path().join("shards.tmp")).unwrap();
        let error = registry
            .create("b", 1, defaults(), BTreeMap::new(), 2)
            .unwrap_err();
        assert_eq!(error.code, ErrorCode::KafkaStorageError);
        assert!(
            error.message.contains(SHARD_TABLE_FILE),
            "{}",
            error.message
        );
        assert!(registry.get("b").is_none(), "not visible");
        // The image was not written: b does not come back.
        assert!(TopicRegistry::open(dir.path(), NODE, 2, 100)
            .unwrap()
            .get("b")
            .is_none());
        // A delete is durable once the image is: it succeeds, and the
        // table's stale entry is dropped at the next open.
        registry.delete("a").unwrap();
        assert!(registry.get("a").is_none());
        fs::remove_dir(dir.path().join(SHARD_TABLE_SPARE_FILE)).unwrap();
        fs::remove_dir(dir.path().join("shards.tmp")).unwrap();
        let reopened = TopicRegistry::open(dir.path(), NODE, 2, 100).unwrap();
        assert!(reopened.get("a").is_none());
        assert_eq!(reopened.shard_table().shards(a.id), None);
    }
}
