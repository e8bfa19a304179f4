//! CreateTopics with explicit replica assignments: the checks Kafka's
//! controller makes.

use std::collections::BTreeMap;

use fjord_schema::ErrorCode;

use super::TopicError;

/// The partition count a CreateTopics entry with explicit replica
/// assignments asks for, checked as Kafka's controller does
/// (`ReplicationControlManager`): the count and replication factor must
/// then be -1 (INVALID_REQUEST); each partition once, ids `0..n`, each with
/// a non-empty replica list naming only live brokers, none twice, and all
/// with the same number of replicas (INVALID_REPLICA_ASSIGNMENT). `live`
/// are the brokers that may hold replicas (this node, on a single node).
pub fn partitions_from_assignments(
    num_partitions: i32,
    replication_factor: i16,
    assignments: &[(i32, Vec<i32>)],
    live: &[i32],
) -> Result<u32, TopicError> {
    assert!(!assignments.is_empty());
    let invalid = |message: String| {
        Err(TopicError::new(
            ErrorCode::InvalidReplicaAssignment,
            message,
        ))
    };
    if replication_factor != -1 {
        return Err(TopicError::new(
            ErrorCode::InvalidRequest,
            "A manual partition assignment was specified, but replication factor was not set to -1.",
        ));
    }
    if num_partitions != -1 {
        return Err(TopicError::new(
            ErrorCode::InvalidRequest,
            "A manual partition assignment was specified, but numPartitions was not set to -1.",
        ));
    }
    let mut seen: BTreeMap<i32, usize> = BTreeMap::new();
    for (partition, replicas) in assignments {
        if seen.contains_key(partition) {
            return invalid(format!(
                "Found multiple manual partition assignments for partition {partition}"
            ));
        }
        if replicas.is_empty() {
            return invalid(
                "The manual partition assignment includes an empty replica list.".to_owned(),
            );
        }
        let mut sorted = replicas.clone();
        sorted.sort_unstable();
        for (i, broker) in sorted.iter().enumerate() {
            if !live.contains(broker) {
                return invalid(format!(
                    "The manual partition assignment includes broker {broker}, but no such broker is registered."
                ));
            }
            if i > 0 && sorted[i - 1] == *broker {
                return invalid(format!(
                    "The manual partition assignment includes the broker {broker} more than once."
                ));
            }
        }
        if let Some(first) = seen.values().next().filter(|n| **n != replicas.len()) {
            return invalid(format!(
                "The manual partition assignment includes a partition with {} replica(s), but this is \
                 not consistent with previous partitions, which have {first} replica(s).",
                replicas.len()
            ));
        }
        seen.insert(*partition, replicas.len());
    }
    let count = seen.len();
    if !seen.keys().copied().eq((0..count).map(|p| p as i32)) {
        return invalid("partitions should be a consecutive 0-based integer sequence".to_owned());
    }
    u32::try_from(count).or_else(|_| invalid(format!("{count} partitions")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replica_assignments_follow_kafkas_controller_rules() {
        let live = [1];
        let a = |list: &[(i32, &[i32])]| -> Vec<(i32, Vec<i32>)> {
            list.iter().map(|(p, r)| (*p, r.to_vec())).collect()
        };
        assert_eq!(
            partitions_from_assignments(-1, -1, &a(&[(1, &[1]), (0, &[1]), (2, &[1])]), &live),
            Ok(3)
        );
        type Assignments = Vec<(i32, Vec<i32>)>;
        let cases: [(i32, i16, Assignments, ErrorCode, &str); 8] = [
            (
                3,
                -1,
                a(&[(0, &[1])]),
                ErrorCode::InvalidRequest,
                "numPartitions",
            ),
            (
                -1,
                1,
                a(&[(0, &[1])]),
                ErrorCode::InvalidRequest,
                "replication factor",
            ),
            (
                -1,
                -1,
                a(&[(0, &[])]),
                ErrorCode::InvalidReplicaAssignment,
                "empty replica list",
            ),
            (
                -1,
                -1,
                a(&[(0, &[2])]),
                ErrorCode::InvalidReplicaAssignment,
                "broker 2, but no such broker",
            ),
            (
                -1,
                -1,
                a(&[(0, &[1, 1])]),
                ErrorCode::InvalidReplicaAssignment,
                "broker 1 more than once",
            ),
            (
                -1,
                -1,
                a(&[(0, &[1]), (0, &[1])]),
                ErrorCode::InvalidReplicaAssignment,
                "multiple",
            ),
            (
                -1,
                -1,
                a(&[(0, &[1]), (2, &[1])]),
                ErrorCode::InvalidReplicaAssignment,
                "consecutive 0-based",
            ),
            (
                -1,
                -1,
                a(&[(-1, &[1])]),
                ErrorCode::InvalidReplicaAssignment,
                "consecutive 0-based",
            ),
        ];
        for (count, factor, assignments, code, text) in cases {
            let error =
                partitions_from_assignments(count, factor, &assignments, &live).unwrap_err();
            assert_eq!(error.code, code, "{assignments:?}");
            assert!(error.message.contains(text), "{}", error.message);
        }
    }
}
