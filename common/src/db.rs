//! Database connection and migrations.

use std::time::Duration;

use anyhow::Context;
use sqlx::PgPool;
use sqlx::migrate::Migrator;
use sqlx::postgres::PgPoolOptions;

use crate::config::HttpConfig;

/// Connects to the service's database, waiting up to 30 s for it to come up.
pub async fn connect(config: &HttpConfig) -> anyhow::Result<PgPool> {
    let options =
        PgPoolOptions::new().max_connections(config.database_max_connections).acquire_timeout(Duration::from_secs(5));
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
    migrator.run(pool).await.context("running event-bus migrations")
}

/// A transaction on a pooled connection: what event handlers and the outbox work in.
pub type Tx = sqlx::Transaction<'static, sqlx::Postgres>;
