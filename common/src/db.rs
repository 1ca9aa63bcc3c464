//! The service's database: its two connection pools, migrations, and notifications.

use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use sqlx::PgPool;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};

use crate::config::DatabaseConfig;

/// A transaction on a pooled connection: what event handlers and the outbox work in.
pub type Tx = sqlx::Transaction<'static, sqlx::Postgres>;

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
        let http = PgPoolOptions::new()
            .max_connections(config.http_connections)
            .acquire_timeout(config.acquire_timeout)
            .connect_lazy_with(options.clone());
        // Background work may queue for a connection: nobody is waiting on an answer,
        // and failing instead would only count against the event.
        let events = PgPoolOptions::new()
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

/// Wakes a background loop when a transaction that issued `NOTIFY <channel>` commits.
///
/// It listens on a connection of its own (never one of the pools': that connection
/// would be held for good). The connection is made lazily and remade after it drops;
/// while it is down, waits simply last their full timeout, so callers keep working by
/// polling.
pub struct Notifications {
    options: PgConnectOptions,
    channel: &'static str,
    listener: Option<PgListener>,
}

impl Notifications {
    /// Listens on a new connection to `pool`'s database (not one of its connections).
    pub fn new(pool: &PgPool, channel: &'static str) -> Self {
        Self {
            options: (*pool.connect_options()).clone(),
            channel,
            listener: None,
        }
    }

    /// Makes sure we are listening; call before reading the state a notification
    /// announces, so that a commit in between still wakes the next [`Self::wait`].
    pub async fn listen(&mut self) {
        if self.listener.is_some() {
            return;
        }
        let connected = async {
            let pool = PgPoolOptions::new()
                .max_connections(1)
                .acquire_timeout(Duration::from_secs(5))
                .idle_timeout(None)
                .max_lifetime(None)
                .connect_lazy_with(self.options.clone());
            let mut listener = PgListener::connect_with(&pool).await?;
            listener.listen(self.channel).await?;
            Ok::<_, sqlx::Error>(listener)
        };
        match connected.await {
            Ok(listener) => self.listener = Some(listener),
            Err(error) => {
                tracing::warn!(%error, channel = self.channel, "cannot LISTEN; polling instead");
            }
        }
    }

    /// Returns at the next notification or after `timeout`, whichever comes first.
    pub async fn wait(&mut self, timeout: Duration) {
        let Some(listener) = self.listener.as_mut() else {
            tokio::time::sleep(timeout).await;
            return;
        };
        match tokio::time::timeout(timeout, listener.recv()).await {
            Ok(Ok(_)) | Err(_) => {}
            Ok(Err(error)) => {
                tracing::warn!(%error, channel = self.channel, "lost the LISTEN connection; polling until it is back");
                self.listener = None;
            }
        }
    }
}
