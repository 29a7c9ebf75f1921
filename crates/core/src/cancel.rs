//! Stopping by cancellation: a worker's waits `select!` on its token.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// The worker was told to stop (revoke or shutdown) before this finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cancelled;

/// Waits `delay`, unless `token` is cancelled first.
pub async fn pause(token: &CancellationToken, delay: Duration) -> Result<(), Cancelled> {
    tokio::select! {
        _ = token.cancelled() => Err(Cancelled),
        _ = tokio::time::sleep(delay) => Ok(()),
    }
}
