//! The service's database: its two connection pools, migrations, and transactions
//! that wake background work when they commit.

use std::ops::{Deref, DerefMut};
use std::pin::Pin;
use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection as _, PgConnection, PgPool};
use tokio::sync::{Notify, futures::Notified};

use crate::config::DatabaseConfig;

/// A transaction on a pooled connection: what handlers, event handlers and the outbox
/// work in. It dereferences to the connection (`&mut **tx` runs a query in it) and, once
/// it commits, raises the [`Signal`]s its work asked for.
pub struct Tx {
    tx: sqlx::Transaction<'static, sqlx::Postgres>,
    wake: Vec<&'static Signal>,
}

impl Tx {
    pub async fn begin(pool: &PgPool) -> sqlx::Result<Self> {
        Ok(Self {
            tx: pool.begin().await?,
            wake: Vec::new(),
        })
    }

    /// Raises `signal` if, and once, this transaction commits.
    pub fn wake_on_commit(&mut self, signal: &'static Signal) {
        if !self.wake.iter().any(|s| std::ptr::eq(*s, signal)) {
            self.wake.push(signal);
        }
    }

    /// Commits, then raises the signals.
    pub async fn commit(self) -> sqlx::Result<()> {
        self.tx.commit().await?;
        for signal in self.wake {
            signal.raise();
        }
        Ok(())
    }

    /// Rolls back (as dropping it does, without waiting) and raises nothing.
    pub async fn rollback(self) -> sqlx::Result<()> {
        self.tx.rollback().await
    }
}

impl Deref for Tx {
    type Target = PgConnection;
    fn deref(&self) -> &PgConnection {
        &self.tx
    }
}

impl DerefMut for Tx {
    fn deref_mut(&mut self) -> &mut PgConnection {
        &mut self.tx
    }
}

/// Wakes a background loop of this process (the outbox relay, the expiration
/// scheduler, the refund reconciler) when a transaction with work for it commits.
///
/// It replaces `LISTEN`/`NOTIFY`, which PostgreSQL serialises: a transaction that
/// notifies holds one cluster-wide lock from before its commit record until after it
/// is flushed, so every writing request waited for the previous one's disk flush, one
/// at a time (docs/benchmarks.md). The loop a commit must wake always runs in the
/// process that commits (a service appends to its own outbox, schedules its own
/// timers), and any replica's loop can do the work, so an in-process wake-up is
/// enough; each loop still polls slowly in case a row comes from elsewhere (an
/// operator's `parked redrive`).
pub struct Signal(Notify);

impl Signal {
    pub const fn new() -> Self {
        Self(Notify::const_new())
    }

    pub(crate) fn raise(&self) {
        self.0.notify_waiters();
    }

    /// Starts listening. Call it before reading the state a raise announces: a commit in
    /// between still ends the [`Listening::wait`] that follows.
    pub fn listen(&self) -> Listening<'_> {
        let mut notified = Box::pin(self.0.notified());
        notified.as_mut().enable();
        Listening(notified)
    }
}

impl Default for Signal {
    fn default() -> Self {
        Self::new()
    }
}

/// A [`Signal`] being listened to.
pub struct Listening<'a>(Pin<Box<Notified<'a>>>);

impl Listening<'_> {
    /// Returns when the signal is raised or after `timeout`, whichever comes first.
    pub async fn wait(self, timeout: Duration) {
        let _ = tokio::time::timeout(timeout, self.0).await;
    }
}

/// The connection pools of a service (see [`DatabaseConfig`]): one for HTTP requests,
/// one for background work, so that neither can starve the other.
#[derive(Clone)]
pub struct Pools {
    /// For HTTP handlers.
    pub http: PgPool,
    /// For event handlers, the outbox relay and timers.
    pub events: PgPool,
}

impl Pools {
    /// Connects to the service's database, waiting up to 30 s for it to come up.
    pub async fn connect(config: &DatabaseConfig) -> anyhow::Result<Self> {
        let options = PgConnectOptions::from_str(config.url.expose())
            .context("DATABASE_URL is not a valid PostgreSQL URL")?;
        let http = pool_options()
            .max_connections(config.http_connections)
            .acquire_timeout(config.acquire_timeout)
            .connect_lazy_with(options.clone());
        // Background work may queue for a connection: nobody is waiting on an answer,
        // and failing instead would only count against the event.
        let events = pool_options()
            .max_connections(config.event_connections)
            .acquire_timeout(Duration::from_secs(60))
            .connect_lazy_with(options);
        let pools = Self { http, events };
        pools.wait_until_reachable().await?;
        Ok(pools)
    }

    async fn wait_until_reachable(&self) -> anyhow::Result<()> {
        let mut attempt = 1;
        loop {
            match self.http.acquire().await {
                Ok(_) => return Ok(()),
                Err(error) if attempt < 30 => {
                    tracing::warn!(%error, attempt, "database not reachable yet; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    attempt += 1;
                }
                Err(error) => return Err(error).context("connecting to the database"),
            }
        }
    }

    /// Runs the event-bus migrations, then the service's own.
    pub async fn migrate(&self, migrator: &Migrator, on_bus: bool) -> anyhow::Result<()> {
        if on_bus {
            migrate_bus(&self.events).await?;
        }
        migrator
            .run(&self.events)
            .await
            .context("running migrations")
    }

    pub async fn close(&self) {
        self.http.close().await;
        self.events.close().await;
    }
}

/// A connection that sat idle longer than this is pinged before it is handed out.
const PING_AFTER_IDLE: Duration = Duration::from_secs(1);

/// Pool settings both pools share. sqlx pings every connection it hands out by
/// default: a second round trip to PostgreSQL for each one-query request. Here only a
/// connection that sat idle for [`PING_AFTER_IDLE`] is pinged (one that just served a
/// request is known to be alive), as HikariCP's `aliveBypassWindowMs` does; a
/// connection that breaks while busy fails its query, is discarded, and the request
/// answers 500 or the event is redelivered.
fn pool_options() -> PgPoolOptions {
    PgPoolOptions::new()
        .test_before_acquire(false)
        .before_acquire(|connection, meta| {
            Box::pin(async move {
                if meta.idle_for > PING_AFTER_IDLE {
                    connection.ping().await?;
                }
                Ok(true)
            })
        })
}

/// Creates the event-bus tables (outbox, processed, failing and parked events) in a
/// service's database. They are versioned in their own table, `_bus_migrations`, so
/// that they never clash with the service's own migrations.
pub async fn migrate_bus(pool: &PgPool) -> anyhow::Result<()> {
    let mut migrator = sqlx::migrate!("./migrations");
    migrator.dangerous_set_table_name("_bus_migrations");
    migrator
        .run(pool)
        .await
        .context("running event-bus migrations")
}
