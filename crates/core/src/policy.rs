//! The retry policy, in one place: what follows a failed attempt. Both the
//! partition workers (`eddy run`) and the direct runner (`eddy test`,
//! `eddy replay`) ask [`next`]; only how they wait differs.

use std::time::Duration;

use rand::Rng;

use crate::outcome::{Failure, FailureKind};

/// First retry delay; it doubles per attempt up to [`MAX_BACKOFF`], with jitter.
const BASE_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Longest a record waits for the schema registry before asking it again.
const MAX_SCHEMA_WAIT: Duration = Duration::from_secs(5);

/// What follows a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Try again after this delay; the attempt counts.
    Retry(Duration),
    /// The schema registry did not answer: not the event's fault, so the
    /// attempt is made again after this delay, uncounted.
    WaitForRegistry(Duration),
    /// Give the record up: dead-letter it.
    DeadLetter,
}

/// What follows attempt `attempt` (1-based) failing with `failure`, for a
/// plugin allowed `max_retries` retries, after `registry_waits` waits in a
/// row for the schema registry (this one not counted).
pub fn next(failure: &Failure, attempt: u32, max_retries: u32, registry_waits: u32) -> Next {
    if failure.kind == FailureKind::SchemaUnavailable {
        Next::WaitForRegistry(registry_wait(registry_waits + 1))
    } else if failure.retryable() && attempt <= max_retries {
        Next::Retry(backoff(attempt))
    } else {
        Next::DeadLetter
    }
}

/// How long a record waits for the schema registry before asking it again,
/// the `n`th time in a row (1-based): the retry backoff, at most 5 s.
pub fn registry_wait(n: u32) -> Duration {
    backoff(n).min(MAX_SCHEMA_WAIT)
}

/// Exponential backoff for attempt `n` (1-based) with ±25 % jitter.
pub fn backoff(n: u32) -> Duration {
    let exponential = BASE_BACKOFF.saturating_mul(1 << n.saturating_sub(1).min(16));
    let capped = exponential.min(MAX_BACKOFF);
    capped.mul_f64(rand::rng().random_range(0.75..=1.25))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed(kind: FailureKind) -> Failure {
        Failure {
            kind,
            message: String::new(),
        }
    }

    #[test]
    fn a_retryable_failure_is_retried_max_retries_times_then_dead_lettered() {
        let trap = failed(FailureKind::Trap);
        assert!(matches!(next(&trap, 1, 3, 0), Next::Retry(_)));
        assert!(matches!(next(&trap, 3, 3, 0), Next::Retry(_)));
        assert_eq!(next(&trap, 4, 3, 0), Next::DeadLetter);
        assert_eq!(next(&trap, 1, 0, 0), Next::DeadLetter);
    }

    #[test]
    fn a_rejection_or_a_refused_follow_up_is_never_retried() {
        assert_eq!(
            next(&failed(FailureKind::Reject), 1, 3, 0),
            Next::DeadLetter
        );
        let refused = failed(FailureKind::FollowUpRefused);
        assert_eq!(next(&refused, 1, 3, 0), Next::DeadLetter);
    }

    #[test]
    fn a_registry_away_is_waited_for_uncounted_and_at_most_five_seconds_at_a_time() {
        let away = failed(FailureKind::SchemaUnavailable);
        assert!(
            matches!(next(&away, 9, 0, 0), Next::WaitForRegistry(d) if d <= Duration::from_millis(125))
        );
        assert!(matches!(next(&away, 1, 3, 40), Next::WaitForRegistry(d) if d == MAX_SCHEMA_WAIT));
    }

    #[test]
    fn backoff_doubles_with_jitter_and_is_capped() {
        for n in 1..=4 {
            let nominal = BASE_BACKOFF * (1 << (n - 1));
            let d = backoff(n);
            assert!(
                d >= nominal.mul_f64(0.75) && d <= nominal.mul_f64(1.25),
                "{n}: {d:?}"
            );
        }
        assert!(backoff(60) <= MAX_BACKOFF.mul_f64(1.25));
    }
}
