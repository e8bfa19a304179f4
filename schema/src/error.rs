//! The one error-code enum carried in every response.
//!
//! Codes use Kafka's numeric values where Kafka has the same error, so the
//! Kafka listener maps them 1:1 and operators recognise them. Fjord-only
//! codes live at 10_000 and above.

/// Error code on the wire (`i16`, little-endian), shared by all responses.
#[repr(i16)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    UnknownServerError = -1,
    None = 0,
    OffsetOutOfRange = 1,
    CorruptMessage = 2,
    UnknownTopicOrPartition = 3,
    InvalidFetchSize = 4,
    LeaderNotAvailable = 5,
    NotLeaderOrFollower = 6,
    RequestTimedOut = 7,
    MessageTooLarge = 10,
    InvalidTopicException = 17,
    RecordListTooLarge = 18,
    NotEnoughReplicas = 19,
    NotEnoughReplicasAfterAppend = 20,
    InvalidRequiredAcks = 21,
    IllegalGeneration = 22,
    UnsupportedVersion = 35,
    TopicAlreadyExists = 36,
    InvalidPartitions = 37,
    InvalidReplicationFactor = 38,
    InvalidReplicaAssignment = 39,
    InvalidConfig = 40,
    InvalidRequest = 42,
    OutOfOrderSequenceNumber = 45,
    DuplicateSequenceNumber = 46,
    InvalidProducerEpoch = 47,
    InvalidTimestamp = 32,
    UnsupportedCompressionType = 76,
    KafkaStorageError = 56,
    PolicyViolation = 44,
    ThrottlingQuotaExceeded = 89,
    CoordinatorLoadInProgress = 14,
    CoordinatorNotAvailable = 15,
    NotCoordinator = 16,
    OffsetMetadataTooLarge = 12,
    InconsistentGroupProtocol = 23,
    InvalidGroupId = 24,
    UnknownMemberId = 25,
    InvalidSessionTimeout = 26,
    RebalanceInProgress = 27,
    InvalidCommitOffsetSize = 28,
    NonEmptyGroup = 68,
    GroupIdNotFound = 69,
    MemberIdRequired = 79,
    GroupMaxSizeReached = 81,
    FencedInstanceId = 82,
    InvalidProducerIdMapping = 49,
    UnknownProducerId = 59,
    ProducerFenced = 90,
    /// A leader's high watermark has not reached the start of its leader
    /// epoch yet (just elected, or just restarted): ListOffsets cannot
    /// promise an offset that never goes back, so the client retries.
    OffsetNotAvailable = 78,
    /// The request's leader epoch is older than the partition's.
    FencedLeaderEpoch = 74,
    /// The request's leader epoch is newer than the partition's.
    UnknownLeaderEpoch = 75,
    UnsupportedEndpointType = 119,
    /// The request went to a node that is not the active controller (or
    /// named epochs newer than the controller's image: it was deposed).
    NotController = 41,
    /// A preferred-leader election was asked but the preferred replica is
    /// not live or not in the ISR.
    PreferredLeaderNotAvailable = 80,
    /// An election was asked but no replica may lead.
    EligibleLeadersNotAvailable = 83,
    /// An election was asked but the partition already has the leader
    /// asked for.
    ElectionNotNeeded = 84,
    /// An AlterPartition named an ISR member that may not join it (not
    /// registered, or fenced).
    IneligibleReplica = 107,
    /// An AlterPartition's partition epoch is not the current one.
    InvalidUpdateVersion = 108,
    /// The broker is out of its in-flight memory budget; retry later.
    BrokerBusy = 10_000,
}

impl ErrorCode {
    const ALL: [ErrorCode; 60] = [
        ErrorCode::UnknownServerError,
        ErrorCode::None,
        ErrorCode::OffsetOutOfRange,
        ErrorCode::CorruptMessage,
        ErrorCode::UnknownTopicOrPartition,
        ErrorCode::InvalidFetchSize,
        ErrorCode::LeaderNotAvailable,
        ErrorCode::NotLeaderOrFollower,
        ErrorCode::RequestTimedOut,
        ErrorCode::MessageTooLarge,
        ErrorCode::InvalidTopicException,
        ErrorCode::RecordListTooLarge,
        ErrorCode::NotEnoughReplicas,
        ErrorCode::NotEnoughReplicasAfterAppend,
        ErrorCode::InvalidRequiredAcks,
        ErrorCode::IllegalGeneration,
        ErrorCode::UnsupportedVersion,
        ErrorCode::TopicAlreadyExists,
        ErrorCode::InvalidPartitions,
        ErrorCode::InvalidReplicationFactor,
        ErrorCode::InvalidReplicaAssignment,
        ErrorCode::InvalidConfig,
        ErrorCode::InvalidRequest,
        ErrorCode::OutOfOrderSequenceNumber,
        ErrorCode::DuplicateSequenceNumber,
        ErrorCode::InvalidProducerEpoch,
        ErrorCode::InvalidTimestamp,
        ErrorCode::UnsupportedCompressionType,
        ErrorCode::KafkaStorageError,
        ErrorCode::PolicyViolation,
        ErrorCode::ThrottlingQuotaExceeded,
        ErrorCode::CoordinatorLoadInProgress,
        ErrorCode::CoordinatorNotAvailable,
        ErrorCode::NotCoordinator,
        ErrorCode::OffsetMetadataTooLarge,
        ErrorCode::InconsistentGroupProtocol,
        ErrorCode::InvalidGroupId,
        ErrorCode::UnknownMemberId,
        ErrorCode::InvalidSessionTimeout,
        ErrorCode::RebalanceInProgress,
        ErrorCode::InvalidCommitOffsetSize,
        ErrorCode::NonEmptyGroup,
        ErrorCode::GroupIdNotFound,
        ErrorCode::MemberIdRequired,
        ErrorCode::GroupMaxSizeReached,
        ErrorCode::FencedInstanceId,
        ErrorCode::InvalidProducerIdMapping,
        ErrorCode::UnknownProducerId,
        ErrorCode::ProducerFenced,
        ErrorCode::FencedLeaderEpoch,
        ErrorCode::UnknownLeaderEpoch,
        ErrorCode::UnsupportedEndpointType,
        ErrorCode::NotController,
        ErrorCode::PreferredLeaderNotAvailable,
        ErrorCode::EligibleLeadersNotAvailable,
        ErrorCode::ElectionNotNeeded,
        ErrorCode::IneligibleReplica,
        ErrorCode::InvalidUpdateVersion,
        ErrorCode::BrokerBusy,
        ErrorCode::OffsetNotAvailable,
    ];

    #[inline]
    pub const fn code(self) -> i16 {
        self as i16
    }

    /// Decodes a wire code. Unknown codes (from a newer peer) become
    /// `UnknownServerError` rather than an error, as Kafka clients do.
    pub fn from_code(code: i16) -> ErrorCode {
        ErrorCode::ALL
            .iter()
            .copied()
            .find(|e| e.code() == code)
            .unwrap_or(ErrorCode::UnknownServerError)
    }

    /// Whether a client may retry the same request and expect success.
    pub const fn is_retriable(self) -> bool {
        matches!(
            self,
            ErrorCode::CorruptMessage
                | ErrorCode::UnknownTopicOrPartition
                | ErrorCode::LeaderNotAvailable
                | ErrorCode::NotLeaderOrFollower
                | ErrorCode::RequestTimedOut
                | ErrorCode::NotEnoughReplicas
                | ErrorCode::NotEnoughReplicasAfterAppend
                | ErrorCode::KafkaStorageError
                | ErrorCode::ThrottlingQuotaExceeded
                | ErrorCode::BrokerBusy
                | ErrorCode::CoordinatorLoadInProgress
                | ErrorCode::CoordinatorNotAvailable
                | ErrorCode::NotCoordinator
                | ErrorCode::FencedLeaderEpoch
                | ErrorCode::UnknownLeaderEpoch
                | ErrorCode::NotController
                | ErrorCode::PreferredLeaderNotAvailable
                | ErrorCode::EligibleLeadersNotAvailable
                | ErrorCode::OffsetNotAvailable
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_are_unique() {
        for (i, e) in ErrorCode::ALL.iter().enumerate() {
            assert_eq!(ErrorCode::from_code(e.code()), *e);
            for other in &ErrorCode::ALL[i + 1..] {
                assert_ne!(e.code(), other.code(), "{e:?} and {other:?} share a code");
            }
        }
        assert_eq!(ErrorCode::from_code(12345), ErrorCode::UnknownServerError);
    }
}
