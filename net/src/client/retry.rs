//! Whether and when a failed produce is tried again. Pure: the caller passes
//! the time, so the decisions are testable without a clock.

use std::time::{Duration, Instant};

use fjord_schema::ErrorCode;

/// Why an attempt failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptFailure {
    /// The broker answered with this error for the partition.
    Broker(ErrorCode),
    /// The connection failed or closed before the answer arrived.
    Disconnected,
    /// No answer within the request timeout.
    TimedOut,
}

impl AttemptFailure {
    pub fn is_retriable(self) -> bool {
        match self {
            AttemptFailure::Broker(code) => code.is_retriable(),
            AttemptFailure::Disconnected | AttemptFailure::TimedOut => true,
        }
    }

    /// Errors that mean our idea of the partition's leader is stale.
    pub fn invalidates_metadata(self) -> bool {
        matches!(
            self,
            AttemptFailure::Broker(
                ErrorCode::NotLeaderOrFollower
                    | ErrorCode::UnknownTopicOrPartition
                    | ErrorCode::LeaderNotAvailable
            ) | AttemptFailure::Disconnected
                | AttemptFailure::TimedOut
        )
    }
}

/// Retry settings (Kafka's `retries`, `retry.backoff.ms`,
/// `retry.backoff.max.ms`, `delivery.timeout.ms`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt, at most.
    pub retries_max: u32,
    /// Wait before the first retry; doubles each retry.
    pub backoff: Duration,
    pub backoff_max: Duration,
    /// From the first send to giving up, whatever the retry count.
    pub delivery_timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            retries_max: u32::MAX,
            backoff: Duration::from_millis(100),
            backoff_max: Duration::from_secs(1),
            delivery_timeout: Duration::from_secs(120),
        }
    }
}

/// What to do with a batch after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryDecision {
    /// Send again, not before `at`.
    Retry { at: Instant, refresh_metadata: bool },
    /// Report the failure to the records' senders.
    Fail { refresh_metadata: bool },
}

impl RetryPolicy {
    /// `attempts`: attempts made so far (at least 1); `created`: when the
    /// batch's first record was appended.
    pub fn decide(
        &self,
        failure: AttemptFailure,
        attempts: u32,
        created: Instant,
        now: Instant,
    ) -> RetryDecision {
        assert!(attempts >= 1, "a failure follows an attempt");
        let refresh_metadata = failure.invalidates_metadata();
        if !failure.is_retriable() || attempts > self.retries_max {
            return RetryDecision::Fail { refresh_metadata };
        }
        let at = now + self.backoff_for(attempts);
        if at.saturating_duration_since(created) >= self.delivery_timeout {
            return RetryDecision::Fail { refresh_metadata };
        }
        RetryDecision::Retry {
            at,
            refresh_metadata,
        }
    }

    /// Backoff before retry number `attempts` (1-based): `backoff * 2^(n-1)`,
    /// capped at `backoff_max`.
    pub fn backoff_for(&self, attempts: u32) -> Duration {
        let shift = attempts.saturating_sub(1).min(20);
        self.backoff
            .saturating_mul(1u32 << shift)
            .min(self.backoff_max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            retries_max: 3,
            backoff: Duration::from_millis(100),
            backoff_max: Duration::from_millis(350),
            delivery_timeout: Duration::from_secs(10),
        }
    }

    #[test]
    fn retriable_broker_errors_retry_with_exponential_capped_backoff() {
        let created = Instant::now();
        let now = created + Duration::from_millis(5);
        let p = policy();
        let expected = [100, 200, 350];
        for (attempt, ms) in (1..=3).zip(expected) {
            assert_eq!(
                p.decide(
                    AttemptFailure::Broker(ErrorCode::RequestTimedOut),
                    attempt,
                    created,
                    now
                ),
                RetryDecision::Retry {
                    at: now + Duration::from_millis(ms),
                    refresh_metadata: false
                }
            );
        }
    }

    #[test]
    fn retries_run_out() {
        let created = Instant::now();
        assert_eq!(
            policy().decide(AttemptFailure::Disconnected, 4, created, created),
            RetryDecision::Fail {
                refresh_metadata: true
            }
        );
    }

    #[test]
    fn non_retriable_errors_fail_at_once() {
        let created = Instant::now();
        for code in [
            ErrorCode::MessageTooLarge,
            ErrorCode::InvalidRequest,
            ErrorCode::OutOfOrderSequenceNumber,
        ] {
            assert_eq!(
                policy().decide(AttemptFailure::Broker(code), 1, created, created),
                RetryDecision::Fail {
                    refresh_metadata: false
                },
                "{code:?}"
            );
        }
    }

    #[test]
    fn leadership_errors_refresh_metadata() {
        let created = Instant::now();
        for code in [
            ErrorCode::NotLeaderOrFollower,
            ErrorCode::UnknownTopicOrPartition,
            ErrorCode::LeaderNotAvailable,
        ] {
            let decision = policy().decide(AttemptFailure::Broker(code), 1, created, created);
            assert!(
                matches!(
                    decision,
                    RetryDecision::Retry {
                        refresh_metadata: true,
                        ..
                    }
                ),
                "{code:?}: {decision:?}"
            );
        }
    }

    #[test]
    fn delivery_timeout_bounds_retries() {
        let created = Instant::now();
        let late = created + Duration::from_millis(9_950);
        assert_eq!(
            policy().decide(AttemptFailure::TimedOut, 1, created, late),
            RetryDecision::Fail {
                refresh_metadata: true
            }
        );
    }
}
