//! What a burst of work costs the whole machine, per unit of work: the CPU every
//! process spent (`/proc/stat`, so PostgreSQL, NATS and the services alike) and, when
//! the stack's PostgreSQL loads `pg_stat_statements` (`PG_STATEMENT_STATS=on
//! scripts/stack.sh up`), the statements each database ran and how many explicit
//! transactions they committed.
//!
//! A measurement is two snapshots around the work plus an idle interval just before
//! it: what the stack does when nothing happens (the relays' polls, the bench's own
//! queries) is subtracted at the idle rate, so the figures are the work's own.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sqlx::PgPool;

/// The cost of one unit of work, all processes together.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Cost {
    /// CPU time of every process on the machine, per unit.
    pub cpu_ms: f64,
    /// Per database (by name): statements per unit, `BEGIN`/`COMMIT` not counted.
    /// Empty when `pg_stat_statements` is not loaded.
    #[serde(default)]
    pub statements: BTreeMap<String, f64>,
    /// Per database: explicit transactions (`COMMIT`s) per unit.
    #[serde(default)]
    pub transactions: BTreeMap<String, f64>,
    /// The statements run most often per unit: (database, statement, calls per unit).
    #[serde(default)]
    pub top: Vec<(String, String, f64)>,
}

/// Counters at one moment.
#[derive(Debug, Clone)]
pub struct Snapshot {
    at: Instant,
    /// Busy CPU time of the whole machine, in clock ticks.
    busy_ticks: u64,
    /// Calls per (database, statement).
    calls: BTreeMap<(String, String), i64>,
}

/// The clock ticks `/proc/stat` counts in: `USER_HZ`, 100 on every Linux the stack runs on.
const TICKS_PER_SECOND: f64 = 100.0;

fn busy_ticks() -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let line = stat
        .lines()
        .next()
        .filter(|l| l.starts_with("cpu "))
        .ok_or_else(|| anyhow::anyhow!("/proc/stat has no cpu line"))?;
    // user nice system idle iowait irq softirq steal ...: all but idle and iowait.
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    Ok(fields
        .iter()
        .enumerate()
        .filter(|(i, _)| !matches!(i, 3 | 4) && *i < 8)
        .map(|(_, v)| v)
        .sum())
}

/// Takes a snapshot; `pg` is any database of the stack's PostgreSQL.
pub async fn snapshot(pg: &PgPool) -> anyhow::Result<Snapshot> {
    let loaded: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_stat_statements')",
    )
    .fetch_one(pg)
    .await?;
    let mut calls = BTreeMap::new();
    if loaded {
        let rows: Vec<(String, String, i64)> = sqlx::query_as(
            "SELECT d.datname::text, s.query, s.calls
             FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid
             WHERE s.query NOT LIKE '%pg_stat_statements%' AND s.query NOT LIKE '%loadgen%'",
        )
        .fetch_all(pg)
        .await?;
        for (db, query, n) in rows {
            *calls.entry((db, query)).or_insert(0) += n;
        }
    }
    Ok(Snapshot {
        at: Instant::now(),
        busy_ticks: busy_ticks()?,
        calls,
    })
}

/// Loads `pg_stat_statements` into `pg`'s database if the server preloads the library;
/// false if it does not.
pub async fn enable(pg: &PgPool) -> anyhow::Result<bool> {
    let preloaded: String =
        sqlx::query_scalar("SELECT current_setting('shared_preload_libraries')")
            .fetch_one(pg)
            .await?;
    if !preloaded.contains("pg_stat_statements") {
        return Ok(false);
    }
    sqlx::query("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        .execute(pg)
        .await?;
    Ok(true)
}

/// An idle interval measured before the work starts.
pub async fn idle(pg: &PgPool, length: Duration) -> anyhow::Result<(Snapshot, Snapshot)> {
    let before = snapshot(pg).await?;
    tokio::time::sleep(length).await;
    Ok((before, snapshot(pg).await?))
}

/// The cost per unit of `units` of work done between `start` and `end`, less what the
/// idle interval (`idle.0` → `idle.1`) would have done in the same time.
#[allow(clippy::cast_precision_loss)]
pub fn cost(idle: &(Snapshot, Snapshot), start: &Snapshot, end: &Snapshot, units: u64) -> Cost {
    let units = units.max(1) as f64;
    let idle_s = (idle.1.at - idle.0.at).as_secs_f64().max(1e-3);
    let work_s = (end.at - start.at).as_secs_f64();
    let scale = work_s / idle_s;
    let idle_ticks = idle.1.busy_ticks.saturating_sub(idle.0.busy_ticks) as f64;
    let ticks = end.busy_ticks.saturating_sub(start.busy_ticks) as f64 - idle_ticks * scale;
    let delta = |from: &Snapshot, to: &Snapshot, key: &(String, String)| {
        (to.calls.get(key).copied().unwrap_or(0) - from.calls.get(key).copied().unwrap_or(0)) as f64
    };
    let mut out = Cost {
        cpu_ms: (ticks.max(0.0) / TICKS_PER_SECOND * 1000.0) / units,
        ..Cost::default()
    };
    let mut per_statement = Vec::new();
    for key in end.calls.keys() {
        let n = (delta(start, end, key) - delta(&idle.0, &idle.1, key) * scale).max(0.0) / units;
        if n < 0.005 {
            continue;
        }
        let (db, query) = key;
        let verb = query.trim().to_ascii_uppercase();
        if verb.starts_with("COMMIT") {
            *out.transactions.entry(db.clone()).or_default() += n;
        } else if !(verb.starts_with("BEGIN") || verb.starts_with("ROLLBACK")) {
            *out.statements.entry(db.clone()).or_default() += n;
            let short: String = query.split_whitespace().collect::<Vec<_>>().join(" ");
            per_statement.push((db.clone(), short.chars().take(90).collect(), n));
        }
    }
    per_statement.sort_by(|a, b| b.2.total_cmp(&a.2));
    per_statement.truncate(25);
    out.top = per_statement;
    out
}

impl Cost {
    /// Lines for the console: the CPU, then each database's statements and commits.
    pub fn print(&self, unit: &str) {
        println!("  CPU of all processes: {:.2} ms per {unit}", self.cpu_ms);
        if self.statements.is_empty() {
            println!("  (statements not counted: run the stack with PG_STATEMENT_STATS=on)");
            return;
        }
        for (db, n) in &self.statements {
            let commits = self.transactions.get(db).copied().unwrap_or(0.0);
            println!("  {db:<12} {n:>5.2} statements, {commits:>4.2} commits per {unit}");
        }
        for (db, query, n) in &self.top {
            println!("    {n:>5.2}  {db:<12} {query}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(base: Instant, ms: u64, ticks: u64, calls: &[(&str, &str, i64)]) -> Snapshot {
        Snapshot {
            at: base + Duration::from_millis(ms),
            busy_ticks: ticks,
            calls: calls
                .iter()
                .map(|(db, q, n)| (((*db).to_owned(), (*q).to_owned()), *n))
                .collect(),
        }
    }

    #[test]
    fn the_idle_rate_is_subtracted_and_commits_are_counted_apart() {
        let t = Instant::now();
        // Idle: 1 s, 10 ticks and 4 polls.
        let idle = (
            at(t, 0, 100, &[("orders", "SELECT poll", 0)]),
            at(t, 1000, 110, &[("orders", "SELECT poll", 4)]),
        );
        // The work: 2 s, 220 ticks, 8 polls (idle's rate), 20 updates in 10 commits.
        let start = at(t, 1000, 110, &[("orders", "SELECT poll", 4)]);
        let end = at(
            t,
            3000,
            330,
            &[
                ("orders", "SELECT poll", 12),
                ("orders", "UPDATE orders SET x", 20),
                ("orders", "COMMIT", 10),
                ("orders", "BEGIN", 10),
            ],
        );
        let cost = cost(&idle, &start, &end, 10);
        // (220 − 10 × 2) ticks of 10 ms over 10 units.
        assert!((cost.cpu_ms - 200.0).abs() < 1e-6, "{}", cost.cpu_ms);
        assert_eq!(cost.statements.get("orders").copied(), Some(2.0));
        assert_eq!(cost.transactions.get("orders").copied(), Some(1.0));
        assert_eq!(
            cost.top.len(),
            1,
            "idle polls and BEGIN left out: {:?}",
            cost.top
        );
    }
}
