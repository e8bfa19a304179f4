//! `kafka_listen = "off"` runs the broker without a Kafka listener: no
//! `kafka.addr`, the native protocol serves as usual.

mod common;

use common::Broker;

#[test]
fn kafka_listener_can_be_turned_off() {
    let broker = Broker::start(&["--kafka-listen", "off"]);
    assert!(
        !broker.data_dir().join("kafka.addr").exists(),
        "no Kafka address is published"
    );
    let mut conn = broker.conn();
    let created = conn.create_topic("native-only", 1, &[]);
    assert_eq!(created, fjord_schema::ErrorCode::None);
    let meta = conn.metadata(Some(&["native-only"]));
    assert_eq!(meta.topics[0].partitions.len(), 1);
}
