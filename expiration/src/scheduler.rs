//! The loop that fires due entries.

use std::time::Duration;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::schedule::{self, BATCH, SCHEDULED};

/// The longest sleep: a safety net for entries this process was not told of.
const MAX_SLEEP: Duration = Duration::from_secs(30);

/// Fires due entries, then sleeps until the next one is due or a new entry arrives,
/// until `stop` is cancelled.
pub async fn run(pool: PgPool, stop: CancellationToken) {
    // Counted from zero, so that the first expiry shows as an increase.
    metrics::counter!("expirations_fired_total").increment(0);
    while !stop.is_cancelled() {
        let scheduled = SCHEDULED.listen();
        let sleep = match schedule::fire_due(&pool).await {
            Ok(fired) if fired == BATCH => continue,
            Ok(_) => match schedule::next_due_in(&pool).await {
                // A millisecond of margin so we wake after, not just before, the due time.
                Ok(Some(due_in)) => (due_in + Duration::from_millis(1)).min(MAX_SLEEP),
                Ok(None) => MAX_SLEEP,
                Err(error) => {
                    tracing::warn!(%error, "scheduler: reading the next due time failed");
                    Duration::from_secs(1)
                }
            },
            Err(error) => {
                tracing::warn!(
                    error = format!("{error:#}"),
                    "scheduler: firing due entries failed; retrying"
                );
                Duration::from_secs(1)
            }
        };
        tokio::select! {
            () = stop.cancelled() => {}
            () = scheduled.wait(sleep) => {}
        }
    }
}
