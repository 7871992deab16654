//! Capped, jittered retries for control-plane calls, bounded by attempts and an optional
//! deadline, and stopped at once by a cancellation token.

use crate::control::error::{ControlError, chain};
use backon::{BackoffBuilder, ExponentialBuilder};
use std::future::Future;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How long and how often to retry a retryable failure ([`ControlError::is_retryable`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in total, the first included. At least 1.
    pub max_attempts: usize,
    /// Give up when the next attempt would start after this much time since the first one;
    /// an attempt in flight is cut short at the deadline. `None`: attempts alone bound it.
    pub deadline: Option<Duration>,
    /// First delay; each next one doubles, plus up to 100 % jitter.
    pub min_delay: Duration,
    /// Cap on any one delay (jitter included).
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    /// 5 attempts, 1 s → 30 s delays, no deadline.
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            deadline: None,
            min_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// Up to `n` attempts with the default delays.
    pub fn attempts(n: usize) -> Self {
        RetryPolicy {
            max_attempts: n.max(1),
            ..RetryPolicy::default()
        }
    }

    /// As many attempts as fit in `deadline`, with the default delays.
    pub fn until(deadline: Duration) -> Self {
        RetryPolicy {
            max_attempts: usize::MAX,
            deadline: Some(deadline),
            ..RetryPolicy::default()
        }
    }

    /// The same policy with other delays (tests use milliseconds).
    pub fn with_delays(self, min_delay: Duration, max_delay: Duration) -> Self {
        RetryPolicy {
            min_delay,
            max_delay: max_delay.max(min_delay),
            ..self
        }
    }

    fn delays(&self) -> impl Iterator<Item = Duration> + use<> {
        let cap = self.max_delay.max(self.min_delay);
        ExponentialBuilder::new()
            .with_jitter()
            .with_min_delay(self.min_delay)
            .with_max_delay(cap)
            .with_max_times(self.max_attempts.max(1) - 1)
            .build()
            .map(move |d| d.min(cap))
    }
}

/// Runs `op` until it succeeds, fails with a final error, or the policy is spent; returns the
/// last error then. `action` names the call in logs and in [`ControlError::Cancelled`].
pub async fn with_retry<T, F, Fut>(
    action: &str,
    policy: &RetryPolicy,
    cancel: &CancellationToken,
    mut op: F,
) -> Result<T, ControlError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, ControlError>>,
{
    let cancelled = || ControlError::Cancelled {
        action: action.to_owned(),
    };
    let started = Instant::now();
    let mut delays = policy.delays();
    let mut attempt = 1usize;
    loop {
        let result = match policy.deadline {
            None => tokio::select! {
                biased;
                _ = cancel.cancelled() => return Err(cancelled()),
                r = op() => r,
            },
            Some(deadline) => {
                let left = deadline.saturating_sub(started.elapsed());
                tokio::select! {
                    biased;
                    _ = cancel.cancelled() => return Err(cancelled()),
                    r = tokio::time::timeout(left, op()) => r.unwrap_or_else(|_| {
                        Err(ControlError::Timeout { action: action.to_owned(), after: deadline })
                    }),
                }
            }
        };
        let err = match result {
            Ok(value) => return Ok(value),
            Err(err) if !err.is_retryable() => return Err(err),
            Err(err) => err,
        };
        let Some(delay) = delays.next() else {
            return Err(err);
        };
        if policy
            .deadline
            .is_some_and(|deadline| started.elapsed() + delay >= deadline)
        {
            return Err(err);
        }
        tracing::warn!(
            action,
            attempt,
            retry_in = ?delay,
            error = %chain(&err),
            "control-plane request failed; retrying"
        );
        tokio::select! {
            biased;
            _ = cancel.cancelled() => return Err(cancelled()),
            _ = tokio::time::sleep(delay) => {}
        }
        attempt += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn unavailable() -> ControlError {
        ControlError::Status {
            action: "pull_task".into(),
            status: reqwest::StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    #[test]
    fn delays_grow_and_stay_capped() {
        let policy =
            RetryPolicy::attempts(8).with_delays(Duration::from_secs(1), Duration::from_secs(5));
        let delays: Vec<Duration> = policy.delays().collect();
        assert_eq!(delays.len(), 7);
        assert!(
            delays
                .iter()
                .all(|d| *d >= Duration::from_secs(1) && *d <= Duration::from_secs(5)),
            "{delays:?}"
        );
        assert!(delays[6] >= Duration::from_secs(4), "{delays:?}");
        assert_eq!(RetryPolicy::attempts(1).delays().count(), 0);
        assert_eq!(RetryPolicy::attempts(0).max_attempts, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn retries_until_success() {
        let calls = Arc::new(AtomicUsize::new(0));
        let c = calls.clone();
        let got = with_retry(
            "pull_task",
            &RetryPolicy::attempts(5),
            &CancellationToken::new(),
            || {
                let c = c.clone();
                async move {
                    if c.fetch_add(1, Ordering::SeqCst) < 2 {
                        Err(unavailable())
                    } else {
                        Ok(7)
                    }
                }
            },
        )
        .await;
        assert_eq!(got.unwrap(), 7);
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn stops_after_max_attempts_with_the_last_error() {
        let calls = AtomicUsize::new(0);
        let got: Result<(), _> = with_retry(
            "pull_task",
            &RetryPolicy::attempts(3),
            &CancellationToken::new(),
            || {
                calls.fetch_add(1, Ordering::SeqCst);
                async { Err(unavailable()) }
            },
        )
        .await;
        assert!(matches!(got, Err(ControlError::Status { .. })));
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn final_errors_are_not_retried() {
        let calls = AtomicUsize::new(0);
        let got: Result<(), _> = with_retry(
            "login",
            &RetryPolicy::attempts(5),
            &CancellationToken::new(),
            || {
                calls.fetch_add(1, Ordering::SeqCst);
                async {
                    Err(ControlError::LoginRefused {
                        code: 1,
                        reason: String::new(),
                    })
                }
            },
        )
        .await;
        assert!(matches!(got, Err(ControlError::LoginRefused { .. })));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn deadline_bounds_the_retries() {
        let calls = AtomicUsize::new(0);
        let policy = RetryPolicy::until(Duration::from_secs(10))
            .with_delays(Duration::from_secs(2), Duration::from_secs(2));
        let started = Instant::now();
        let got: Result<(), _> =
            with_retry("pull_task", &policy, &CancellationToken::new(), || {
                calls.fetch_add(1, Ordering::SeqCst);
                async { Err(unavailable()) }
            })
            .await;
        assert!(got.is_err());
        assert!(started.elapsed() < Duration::from_secs(10));
        let n = calls.load(Ordering::SeqCst);
        assert!((2..=5).contains(&n), "{n} attempts");
    }

    #[tokio::test(start_paused = true)]
    async fn deadline_cuts_a_hanging_attempt() {
        let policy = RetryPolicy::until(Duration::from_secs(3));
        let got: Result<(), _> =
            with_retry("login", &policy, &CancellationToken::new(), || async {
                std::future::pending::<()>().await;
                Ok(())
            })
            .await;
        assert!(matches!(got, Err(ControlError::Timeout { .. })), "{got:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn cancellation_stops_the_wait() {
        let cancel = CancellationToken::new();
        let policy = RetryPolicy::attempts(100)
            .with_delays(Duration::from_secs(60), Duration::from_secs(60));
        let c = cancel.clone();
        let calls = AtomicUsize::new(0);
        let got: Result<(), _> = with_retry("pull_task", &policy, &cancel, || {
            if calls.fetch_add(1, Ordering::SeqCst) == 1 {
                c.cancel();
            }
            async { Err(unavailable()) }
        })
        .await;
        assert!(
            matches!(got, Err(ControlError::Cancelled { .. })),
            "{got:?}"
        );
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }
}
