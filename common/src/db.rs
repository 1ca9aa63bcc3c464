//! Database connection and migrations.

use std::time::Duration;

use anyhow::Context;
use sqlx::PgPool;
use sqlx::migrate::Migrator;
use sqlx::postgres::PgPoolOptions;

use crate::config::HttpConfig;

/// Connects to the service's database, waiting up to 30 s for it to come up.
pub async fn connect(config: &HttpConfig) -> anyhow::Result<PgPool> {
    let options = PgPoolOptions::new()
        .max_connections(config.database_max_connections)
        .acquire_timeout(Duration::from_secs(5));
    let url = config.database_url.expose();
    let mut attempt = 1;
    loop {
        match options.clone().connect(url).await {
            Ok(pool) => return Ok(pool),
            Err(error) if attempt < 30 => {
                tracing::warn!(%error, attempt, "database not reachable yet; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                attempt += 1;
            }
            Err(error) => return Err(error).context("connecting to the database"),
        }
    }
}

/// Runs the service's own migrations.
pub async fn migrate(pool: &PgPool, migrator: &Migrator) -> anyhow::Result<()> {
    migrator.run(pool).await.context("running migrations")
}

/// Creates the event-bus tables (outbox, processed and parked events) in a service's
/// database. They are versioned in their own table, `_bus_migrations`, so that they
/// never clash with the service's own migrations.
pub async fn migrate_bus(pool: &PgPool) -> anyhow::Result<()> {
    let mut migrator = sqlx::migrate!("./migrations");
    migrator.dangerous_set_table_name("_bus_migrations");
    migrator
        .run(pool)
        .await
        .context("running event-bus migrations")
}

/// A transaction on a pooled connection: what event handlers and the outbox work in.
pub type Tx = sqlx::Transaction<'static, sqlx::Postgres>;

/// Wakes a background loop when a transaction that issued `NOTIFY <channel>` commits.
///
/// The connection is made lazily and remade after it drops; while it is down, waits
/// simply last their full timeout, so callers keep working by polling.
pub struct Notifications {
    pool: PgPool,
    channel: &'static str,
    listener: Option<sqlx::postgres::PgListener>,
}

impl Notifications {
    pub fn new(pool: PgPool, channel: &'static str) -> Self {
        Self {
            pool,
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
            let mut listener = sqlx::postgres::PgListener::connect_with(&self.pool).await?;
            listener.listen(self.channel).await?;
            Ok::<_, sqlx::Error>(listener)
        };
        match connected.await {
            Ok(listener) => self.listener = Some(listener),
            Err(error) => {
                tracing::warn!(%error, channel = self.channel, "cannot LISTEN; polling instead")
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
