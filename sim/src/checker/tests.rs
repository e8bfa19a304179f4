//! Each rule of the checker, shown able to fail: a crafted history that
//! breaks it is reported, and the same history without the break is not.

use std::collections::BTreeMap;
use std::sync::Arc;

use fjord_broker::controller::records::MetadataRecord;
use fjord_broker::controller::state::{ControllerConfig, ControllerState, SeededIds};
use fjord_broker::metadata::image::{MetadataImage, TopicId};
use fjord_broker::topic::TopicConfig;
use fjord_schema::{LeaderEpoch, NodeId};
use fjord_storage::LogConfig;

use super::{Ack, Checker, FinalReplica};

fn config() -> ControllerConfig {
    let base = LogConfig::default();
    ControllerConfig {
        voters: vec![NodeId(1), NodeId(2), NodeId(3)],
        defaults: TopicConfig::from_log_config(&base),
        base,
        default_partitions: 1,
        default_replication_factor: 3,
        offsets_partitions: 1,
        offsets_replication_factor: 3,
        partitions_max: 8,
        session_timeout_ms: 1_000,
        producer_id_block_size: 10,
        leader_rebalance_interval_ms: 0,
    }
}

/// An image holding topic `t` (id 1) with one partition led by `leader`
/// at `epoch`.
fn image(leader: u32, epoch: u32) -> Arc<MetadataImage> {
    let mut state = ControllerState::with_ids(
        config(),
        Arc::new(MetadataImage::default()),
        Box::new(SeededIds::new(0)),
    );
    let id = TopicId([1; 16]);
    state.replay(&MetadataRecord::Topic {
        id,
        name: "t".to_owned(),
        created_ms: 0,
        overrides: BTreeMap::new(),
    });
    state.replay(&MetadataRecord::Partition {
        topic: id,
        partition: 0,
        replicas: vec![NodeId(1), NodeId(2), NodeId(3)],
        isr: vec![NodeId(1), NodeId(2), NodeId(3)],
        leader: Some(NodeId(leader)),
        leader_epoch: LeaderEpoch(epoch),
        partition_epoch: epoch,
    });
    state.image().clone()
}

#[test]
fn two_leaders_in_one_partition_epoch_are_reported() {
    let mut checker = Checker::default();
    checker.image_applied(1, NodeId(1), 5, &image(1, 3));
    checker.image_applied(2, NodeId(2), 6, &image(2, 4));
    assert!(
        checker.violations().is_empty(),
        "{:?}",
        checker.violations()
    );
    checker.image_applied(3, NodeId(3), 7, &image(3, 4));
    assert_eq!(checker.violations().len(), 1);
    assert!(checker.violations()[0].contains("two leaders"));
}

#[test]
fn different_images_at_one_index_are_reported() {
    let mut checker = Checker::default();
    checker.image_applied(1, NodeId(1), 5, &image(1, 3));
    checker.image_applied(2, NodeId(2), 5, &image(1, 3));
    assert!(checker.violations().is_empty());
    checker.image_applied(3, NodeId(3), 5, &image(1, 4));
    assert!(checker.violations()[0].contains("different images"));
}

fn ack(node: u32, epoch: u32, base: u64, values: &[&str]) -> Ack {
    Ack {
        topic: "t".to_owned(),
        partition: 0,
        base_offset: base,
        values: values.iter().map(|v| v.as_bytes().to_vec()).collect(),
        acks: -1,
        node: NodeId(node),
        leader_epoch: epoch,
    }
}

fn replica(node: u32, leader: bool, hw: u64, values: &[&str]) -> FinalReplica {
    FinalReplica {
        node: NodeId(node),
        leader,
        in_sync: true,
        high_watermark: hw,
        records: values
            .iter()
            .enumerate()
            .map(|(o, v)| (o as u64, v.as_bytes().to_vec()))
            .collect(),
    }
}

fn sent(checker: &mut Checker, values: &[&str]) {
    for v in values {
        checker.sent(v.as_bytes(), true);
    }
}

#[test]
fn an_acknowledged_record_lost_or_moved_is_reported() {
    let mut checker = Checker::default();
    sent(&mut checker, &["a", "b", "c"]);
    checker.acked(1, &ack(1, 0, 0, &["a", "b"]));
    checker.final_partition("t", 0, &[replica(1, true, 2, &["a", "b"])]);
    assert!(
        checker.violations().is_empty(),
        "{:?}",
        checker.violations()
    );
    // Lost: the log ends before it.
    checker.final_partition("t", 0, &[replica(1, true, 1, &["a"])]);
    assert!(checker.violations()[0].contains("lost or moved"));
    // Moved: another record at its offset.
    let mut checker = Checker::default();
    sent(&mut checker, &["a", "b", "c"]);
    checker.acked(1, &ack(1, 0, 0, &["a", "b"]));
    checker.final_partition("t", 0, &[replica(1, true, 3, &["a", "c", "b"])]);
    assert!(checker.violations()[0].contains("replaced by"));
}

#[test]
fn an_offset_acknowledged_or_read_twice_with_different_records_is_reported() {
    let mut checker = Checker::default();
    sent(&mut checker, &["a", "b"]);
    checker.acked(1, &ack(1, 0, 0, &["a"]));
    checker.read(2, "t", 0, 0, b"a");
    // A record read where nothing was acknowledged may be lost later.
    checker.read(2, "t", 0, 1, b"b");
    assert!(checker.violations().is_empty());
    checker.read(3, "t", 0, 0, b"b");
    assert!(checker.violations()[0].contains("offset reused"));
}

#[test]
fn two_nodes_acknowledging_in_one_epoch_are_reported() {
    let mut checker = Checker::default();
    sent(&mut checker, &["a", "b"]);
    checker.acked(1, &ack(1, 2, 0, &["a"]));
    checker.acked(2, &ack(1, 2, 1, &["b"]));
    assert!(checker.violations().is_empty());
    checker.acked(3, &ack(2, 2, 2, &["c"]));
    assert!(checker.violations()[0].contains("acknowledged by node 1 and by node 2"));
}

#[test]
fn a_replica_differing_below_the_high_watermark_is_reported() {
    let mut checker = Checker::default();
    sent(&mut checker, &["a", "b", "c"]);
    // Above the high watermark a follower may differ (not yet truncated).
    checker.final_partition(
        "t",
        0,
        &[
            replica(1, true, 2, &["a", "b", "c"]),
            replica(2, false, 2, &["a", "b"]),
        ],
    );
    assert!(
        checker.violations().is_empty(),
        "{:?}",
        checker.violations()
    );
    checker.final_partition(
        "t",
        0,
        &[
            replica(1, true, 2, &["a", "b"]),
            replica(2, false, 2, &["a", "c"]),
        ],
    );
    assert!(checker.violations()[0].contains("differs from the leader"));
}

#[test]
fn duplicates_of_an_idempotent_producer_and_phantoms_are_reported() {
    let mut checker = Checker::default();
    sent(&mut checker, &["a", "b"]);
    checker.sent(b"x", false);
    // A non-idempotent producer's retry may duplicate.
    checker.final_partition("t", 0, &[replica(1, true, 4, &["a", "x", "b", "x"])]);
    assert!(
        checker.violations().is_empty(),
        "{:?}",
        checker.violations()
    );
    checker.final_partition("t", 0, &[replica(1, true, 3, &["a", "b", "a"])]);
    assert!(checker.violations()[0].contains("written twice"));
    let mut checker = Checker::default();
    checker.final_partition("t", 0, &[replica(1, true, 1, &["ghost"])]);
    assert!(checker.violations()[0].contains("phantom"));
    checker.read(1, "t", 0, 0, b"ghost2");
    assert!(checker.violations()[1].contains("phantom"));
}

#[test]
fn overlapping_producer_id_blocks_are_reported() {
    let mut checker = Checker::default();
    checker.producer_ids(1, 0, 10);
    checker.producer_ids(2, 10, 10);
    assert!(checker.violations().is_empty());
    checker.producer_ids(3, 15, 10);
    assert!(checker.violations()[0].contains("overlap"));
}

/// Seed 452: a retried CreateTopics made the name again after a delete;
/// what was acknowledged under the old topic id is no longer promised.
#[test]
fn a_topic_created_again_forgets_what_its_name_acknowledged() {
    let mut checker = Checker::default();
    sent(&mut checker, &["a", "b"]);
    checker.image_applied(1, NodeId(1), 5, &image(1, 0));
    checker.acked(2, &ack(1, 0, 0, &["a"]));
    // The same name under another id: recreated.
    let mut state = ControllerState::with_ids(
        config(),
        Arc::new(MetadataImage::default()),
        Box::new(SeededIds::new(0)),
    );
    let id = TopicId([2; 16]);
    state.replay(&MetadataRecord::Topic {
        id,
        name: "t".to_owned(),
        created_ms: 0,
        overrides: BTreeMap::new(),
    });
    checker.image_applied(3, NodeId(1), 9, state.image());
    checker.acked(4, &ack(1, 0, 0, &["b"]));
    checker.final_partition("t", 0, &[replica(1, true, 1, &["b"])]);
    assert!(
        checker.violations().is_empty(),
        "{:?}",
        checker.violations()
    );
    assert_eq!(checker.topics_recreated, 1);
}
