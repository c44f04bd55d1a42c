//! The one bound of every step of a check: the check's deadline, after which the step fails
//! with the words it was given.

use std::future::Future;

use tokio::time::Instant;

use super::outcome::Failure;

/// Runs `step` until `deadline`: its output, or the failure `late` makes when time ran out.
pub(super) async fn within<T>(
    deadline: Instant,
    step: impl Future<Output = T>,
    late: impl FnOnce() -> Failure,
) -> Result<T, Failure> {
    tokio::time::timeout_at(deadline, step)
        .await
        .map_err(|_| late())
}
