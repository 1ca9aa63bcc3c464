//! Pruning the tables that would otherwise only grow.
//!
//! Bookkeeping is needed only for a while: a handled event id only until no copy of
//! that event can arrive any more (JetStream drops copies published within its
//! duplicate window; a redelivery comes within the ack wait), a cancelled order only
//! until its late events are over. A [`Pruner`] deletes rows older than the retention
//! horizon (`RETENTION_HOURS`, a week by default, and never less than an hour) every
//! `PRUNE_INTERVAL_SECONDS`, in small batches so that it never holds long locks.

use std::time::Duration;

use anyhow::Context as _;
use sqlx::PgPool;
use sqlx::postgres::types::PgInterval;
use tokio_util::sync::CancellationToken;

/// Rows deleted per statement.
const BATCH: i32 = 5_000;

/// The tables of the event bus, by the column that dates their rows.
pub const BUS_TABLES: [(&str, &str); 3] = [
    ("processed_events", "processed_at"),
    ("event_failures", "last_failed_at"),
    ("parked_events", "parked_at"),
];

/// Deletes rows past the retention horizon from a set of tables.
#[derive(Clone)]
pub struct Pruner {
    pool: PgPool,
    retention: Duration,
    tables: Vec<(&'static str, &'static str)>,
}

impl Pruner {
    pub fn new(pool: PgPool, retention: Duration) -> Self {
        Self {
            pool,
            retention,
            tables: Vec::new(),
        }
    }

    /// Also prunes `table`, by the age its timestamp `column` gives (rows where it is
    /// null are kept).
    pub fn table(mut self, table: &'static str, column: &'static str) -> Self {
        self.tables.push((table, column));
        self
    }

    /// Prunes every table now; returns how many rows went, per table.
    pub async fn prune(&self) -> anyhow::Result<Vec<(&'static str, i64)>> {
        let horizon = PgInterval::try_from(self.retention)
            .map_err(|e| anyhow::anyhow!("retention out of range: {e}"))?;
        let mut deleted = Vec::with_capacity(self.tables.len());
        for &(table, column) in &self.tables {
            let mut total = 0;
            loop {
                let batch = sqlx::query_scalar!(
                    r#"SELECT prune($1::text::regclass, $2, $3, $4) AS "deleted!""#,
                    table,
                    column,
                    horizon.clone(),
                    BATCH,
                )
                .fetch_one(&self.pool)
                .await
                .with_context(|| format!("pruning {table}"))?;
                total += batch;
                if batch < i64::from(BATCH) {
                    break;
                }
            }
            metrics::counter!("pruned_rows_total", "table" => table)
                .increment(u64::try_from(total).unwrap_or(0));
            deleted.push((table, total));
        }
        Ok(deleted)
    }

    /// Prunes every `interval` until `stop` is cancelled.
    pub async fn run(self, interval: Duration, stop: CancellationToken) {
        loop {
            match self.prune().await {
                Ok(deleted) => {
                    let total: i64 = deleted.iter().map(|(_, n)| n).sum();
                    if total > 0 {
                        tracing::info!(?deleted, "pruned rows past the retention horizon");
                    }
                }
                Err(error) => tracing::warn!(error = format!("{error:#}"), "pruning failed"),
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(interval) => {}
            }
        }
    }
}
