//! [`retry_until_stopped`]: the one way the sink waits out an outage. Kafka and PostgreSQL may
//! be away for any length of time; every operation that needs one of them is tried again,
//! with [`Backoff`] between attempts, until it succeeds or the sink is told to stop.

use std::future::Future;

use monitor_core::runtime::backoff::Backoff;
use tokio_util::sync::CancellationToken;

/// Runs `attempt` until it succeeds and returns its value, or `None` once `stop` has fired.
/// Each failure is handed to `failed` (to log and count it), then the next attempt waits a
/// [`Backoff`] delay. An attempt that has started is not interrupted by `stop`: it ends, and
/// only the wait after a failure is cut short. An error the caller must not retry is returned
/// as a success of its own (`T` being a `Result`).
pub async fn retry_until_stopped<T, E, F>(
    stop: &CancellationToken,
    mut attempt: impl FnMut() -> F,
    mut failed: impl FnMut(E),
) -> Option<T>
where
    F: Future<Output = Result<T, E>>,
{
    let mut backoff = Backoff::default();
    loop {
        match attempt().await {
            Ok(value) => return Some(value),
            Err(e) => failed(e),
        }
        if !backoff.sleep(stop.cancelled()).await {
            return None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn failures_are_retried_until_one_succeeds() {
        let stop = CancellationToken::new();
        let mut attempts = 0;
        let mut failures = Vec::new();
        let value = retry_until_stopped(
            &stop,
            || {
                attempts += 1;
                std::future::ready(if attempts < 3 {
                    Err(attempts)
                } else {
                    Ok("done")
                })
            },
            |e| failures.push(e),
        )
        .await;
        assert_eq!(value, Some("done"));
        assert_eq!(failures, [1, 2]);
    }

    #[tokio::test]
    async fn a_stop_ends_the_wait_after_a_failure() {
        let stop = CancellationToken::new();
        stop.cancel();
        let mut attempts = 0;
        let value: Option<()> = retry_until_stopped(
            &stop,
            || {
                attempts += 1;
                std::future::ready(Err(()))
            },
            |()| {},
        )
        .await;
        assert_eq!(value, None);
        assert_eq!(attempts, 1, "the attempt under way ends, no other starts");
    }
}
