//! A data dir whose `topics.toml` was written before issue 12 (one table
//! of topics and their shards) still serves: the broker converts it to the
//! image (`topics.toml` version 2) and the shard table (`shards.toml`) at
//! start, imports the topics into its new metadata log (issue 13), every
//! partition stays on its shard, and restarts keep that (the imported
//! `topics.toml` is then renamed, never read again).

mod common;

use common::{batch, now_ms, Broker};
use fjord_schema::ErrorCode;

/// `topics.toml` as the broker at 0ef4d7e wrote it (the unit tests'
/// fixture), with its shard numbers moved into 0..=1 so a 2-shard broker
/// can open it: `orders` on shards 1, 0, 1, 1.
fn legacy_registry() -> String {
    let text = include_str!("../src/metadata/testdata/topics-0ef4d7e.toml");
    assert!(text.contains("shards = [2, 0, 1, 2]"));
    assert!(!text.contains("version"));
    text.replace("shards = [2, 0, 1, 2]", "shards = [1, 0, 1, 1]")
}

fn placement(broker: &mut Broker, topic: &str) -> Vec<(u32, u16)> {
    let metadata = broker.conn().metadata(Some(&[topic]));
    assert_eq!(metadata.topics.len(), 1);
    assert_eq!(metadata.topics[0].error, ErrorCode::None, "{topic}");
    let mut partitions = metadata.topics[0].partitions.clone();
    partitions.sort_unstable();
    partitions
}

#[test]
fn a_data_dir_from_before_issue_12_is_converted_and_keeps_its_placement() {
    let mut broker = Broker::start(&["--shards", "2"]);
    let status = broker.terminate();
    assert!(status.success(), "{}", broker.logs());
    let data = broker.data_dir();
    for file in ["shards.toml", "shards.spare", "topics.spare"] {
        let _ = std::fs::remove_file(data.join(file));
    }
    // Nor had it a metadata log, nor a meta.properties.
    std::fs::remove_dir_all(data.join("__cluster_metadata-0")).expect("metadata log");
    std::fs::remove_file(data.join("meta.properties")).expect("meta.properties");
    std::fs::write(data.join("topics.toml"), legacy_registry()).expect("write");
    broker.restart();

    let expected = [
        ("orders", vec![(0, 1), (1, 0), (2, 1), (3, 1)]),
        ("logs.v1", vec![(0, 0)]),
        ("__consumer_offsets", vec![(0, 0), (1, 1)]),
    ];
    for (topic, shards) in &expected {
        assert_eq!(&placement(&mut broker, topic), shards, "{topic}");
    }
    let converted = std::fs::read_to_string(data.join("topics.toml")).expect("read");
    assert!(converted.starts_with("version = 2"), "{converted}");
    assert!(data.join("shards.toml").exists());

    let mut conn = broker.conn();
    let records = batch(&[(b"k", b"on shard 1")], now_ms());
    assert_eq!(
        conn.produce("orders", 3, &records, -1),
        (ErrorCode::None, 0)
    );

    broker.terminate_and_restart();
    for (topic, shards) in &expected {
        assert_eq!(&placement(&mut broker, topic), shards, "{topic}");
    }
    assert!(!data.join("topics.toml").exists(), "imported, then retired");
    assert_eq!(
        std::fs::read_to_string(data.join("topics.toml.imported")).expect("read"),
        converted,
        "kept for the operator as it was imported"
    );
    let read = broker.conn().read_all("orders", 3, 0);
    assert_eq!(read.len(), 1);
    assert_eq!(read[0].2.as_deref(), Some(&b"on shard 1"[..]));
}
