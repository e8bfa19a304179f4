//! `fjord repair`: the operator's explicit acceptance of a loss after
//! recovery took a partition offline for damaged data. Runs with the broker
//! stopped (it takes the data-dir lock), truncates the partition's log at
//! the given offset (`fjord_storage::repair_truncate`) and says what it
//! cut. Nothing else ever cuts acknowledged data.

use std::path::Path;

use fjord_schema::{Offset, PartitionId};
use fjord_storage::layout::partition_dir_name;
use fjord_storage::{repair_truncate, LogConfig, Repaired};
use glommio::{LocalExecutorBuilder, Placement};

use crate::datadir::DataDir;
use crate::error::BrokerError;

/// io_uring memory of the one-off repair executor.
const REPAIR_IO_MEMORY_BYTES: usize = 1 << 20;

/// Truncates `topic`-`partition` in `data_dir` at `offset` (everything at
/// and after it goes). Fails while a broker holds the data dir.
pub fn repair(
    data_dir: &Path,
    topic: &str,
    partition: PartitionId,
    offset: Offset,
) -> Result<Repaired, BrokerError> {
    let data = DataDir::open(data_dir)?;
    let dir = data.path().join(partition_dir_name(topic, partition));
    if !dir.is_dir() {
        return Err(BrokerError::Repair(format!(
            "{} does not exist: no partition {partition} of topic {topic} in this data dir",
            dir.display()
        )));
    }
    let config = LogConfig::default();
    let handle = LocalExecutorBuilder::new(Placement::Unbound)
        .name("fjord-repair")
        .io_memory(REPAIR_IO_MEMORY_BYTES)
        .spawn(move || async move { repair_truncate(&dir, offset, &config).await })
        .map_err(|e| BrokerError::Executor {
            shard: 0,
            reason: e.to_string(),
        })?;
    let result = handle
        .join()
        .map_err(|e| BrokerError::Repair(format!("the repair executor failed: {e}")))?;
    drop(data);
    result.map_err(|e| BrokerError::Repair(e.to_string()))
}
