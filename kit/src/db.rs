//! The service's database: its settings, its two connection pools, its migrations,
//! and the readiness check `/readyz` runs on it.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use anyhow::Context as _;
use futures::future::BoxFuture;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgSslMode};
use sqlx::{Connection as _, PgPool};
use tokio_util::sync::CancellationToken;

use crate::config::{ConfigError, Env, Secret, at_least};
use crate::retry::Patience;
use crate::service::{Part, Readiness};
use crate::supervisor::Workers;

/// The service's database and how its connections are shared.
///
/// HTTP handlers and background work (event handlers, the outbox relay, timers) draw
/// from two separate pools, so that a burst of events can never leave a request
/// waiting for a connection.
#[derive(Debug, Clone)]
pub struct DatabaseConfig {
    /// `DATABASE_URL` (required).
    pub url: Secret,
    /// `DATABASE_HTTP_CONNECTIONS` (default 10; formerly `DATABASE_MAX_CONNECTIONS`):
    /// connections for HTTP requests.
    pub http_connections: u32,
    /// `DATABASE_EVENT_CONNECTIONS` (default 8): connections for background work. Event
    /// handlers of all subjects together use all but one of them at a time, leaving one
    /// for the relay and timers. (8 rather than 4 replicated a burst of 10,000 tickets
    /// about 15 % sooner; see docs/benchmarks.md.)
    pub event_connections: u32,
    /// `DATABASE_ACQUIRE_TIMEOUT_SECONDS` (default 5): how long a request waits for a
    /// connection before it fails.
    pub acquire_timeout: Duration,
    /// `PGSSLMODE` (default `prefer`, as libpq's): TLS to the database. In production
    /// `verify-full`, with the server's certificate checked against `PGSSLROOTCERT`.
    pub ssl_mode: PgSslMode,
    /// `PGSSLROOTCERT` (optional): the CA that signed the database's certificate
    /// (CloudNativePG's `<cluster>-ca` secret).
    pub ssl_root_cert: Option<PathBuf>,
}

impl DatabaseConfig {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let config = Self {
            url: env.required("DATABASE_URL")?,
            http_connections: env.optional("DATABASE_HTTP_CONNECTIONS", 10)?,
            event_connections: env.optional("DATABASE_EVENT_CONNECTIONS", 8)?,
            acquire_timeout: env.seconds("DATABASE_ACQUIRE_TIMEOUT_SECONDS", 5)?,
            ssl_mode: ssl_mode(env)?,
            ssl_root_cert: env.maybe("PGSSLROOTCERT")?,
        };
        if matches!(config.ssl_mode, PgSslMode::VerifyCa | PgSslMode::VerifyFull)
            && config.ssl_root_cert.is_none()
        {
            return Err(ConfigError::Missing("PGSSLROOTCERT"));
        }
        at_least(1, "DATABASE_HTTP_CONNECTIONS", config.http_connections)?;
        at_least(2, "DATABASE_EVENT_CONNECTIONS", config.event_connections)?;
        Ok(config)
    }

    pub fn for_tests(url: &str) -> Self {
        Self {
            url: Secret::new(url),
            http_connections: 5,
            event_connections: 4,
            acquire_timeout: Duration::from_secs(5),
            ssl_mode: PgSslMode::Prefer,
            ssl_root_cert: None,
        }
    }

    /// The same database with few connections, for a command run beside a live
    /// service (`<service> parked list`).
    pub fn for_a_command(&self) -> Self {
        Self {
            http_connections: 1,
            event_connections: 2,
            ..self.clone()
        }
    }
}

/// The connection pools of a service (see [`DatabaseConfig`]): one for HTTP requests,
/// one for background work, so that neither can starve the other.
///
/// As a [`Part`] of a service it makes `/readyz` follow the database, and it is
/// closed last, once everything else has stopped.
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
        let mut options = PgConnectOptions::from_str(config.url.expose())
            .context("DATABASE_URL is not a valid PostgreSQL URL")?
            .ssl_mode(config.ssl_mode);
        if let Some(ca) = &config.ssl_root_cert {
            options = options.ssl_root_cert(ca);
        }
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
        Patience::CONNECT
            .connect("the database", || pools.http.acquire())
            .await?;
        Ok(pools)
    }

    /// Runs `migrator`'s migrations that have not run yet.
    pub async fn migrate(&self, migrator: &Migrator) -> anyhow::Result<()> {
        migrator
            .run(&self.events)
            .await
            .context("running migrations")
    }

    /// Every few seconds until `stop`: each pool's connections in use and idle
    /// (`db_pool_connections{pool, state}`) and its bound (`db_pool_max_connections`).
    async fn report_usage(self, stop: CancellationToken) {
        let mut every = tokio::time::interval(POOL_GAUGES_EVERY);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = every.tick() => {}
            }
            for (name, pool) in [("http", &self.http), ("events", &self.events)] {
                let idle = u32::try_from(pool.num_idle()).unwrap_or(u32::MAX);
                let in_use = pool.size().saturating_sub(idle);
                let max = pool.options().get_max_connections();
                metrics::gauge!("db_pool_connections", "pool" => name, "state" => "in_use")
                    .set(f64::from(in_use));
                metrics::gauge!("db_pool_connections", "pool" => name, "state" => "idle")
                    .set(f64::from(idle));
                metrics::gauge!("db_pool_max_connections", "pool" => name).set(f64::from(max));
            }
        }
    }

    pub async fn close(&self) {
        self.http.close().await;
        self.events.close().await;
    }
}

impl Part for Pools {
    fn readiness(&self) -> Option<Readiness> {
        Some(database_answers(self.http.clone()))
    }

    fn start(&mut self, workers: &Workers, stop: &CancellationToken) {
        let pools = self.clone();
        workers.supervise("pool-gauges", stop.clone(), move |stop| {
            pools.clone().report_usage(stop)
        });
    }

    fn finish(self: Box<Self>) -> BoxFuture<'static, ()> {
        Box::pin(async move { self.close().await })
    }
}

fn ssl_mode(env: &Env) -> Result<PgSslMode, ConfigError> {
    let mode: String = env.optional("PGSSLMODE", "prefer".to_owned())?;
    mode.parse().map_err(|_| ConfigError::Invalid {
        name: "PGSSLMODE",
        problem: format!(
            "{mode:?} is not one of disable, allow, prefer, require, verify-ca, verify-full"
        ),
    })
}

/// `/readyz`: the service can serve HTTP while `pool`'s database answers (within 2 s).
pub fn database_answers(pool: PgPool) -> Readiness {
    Readiness::new(move || {
        let pool = pool.clone();
        async move {
            let answered = tokio::time::timeout(
                Duration::from_secs(2),
                sqlx::query("SELECT 1").execute(&pool),
            );
            match answered.await {
                Ok(Ok(_)) => Ok(()),
                _ => Err("the database does not answer".to_owned()),
            }
        }
    })
}

/// How often the pools' usage is reported.
const POOL_GAUGES_EVERY: Duration = Duration::from_secs(5);

/// A connection that sat idle longer than this is pinged before it is handed out.
const PING_AFTER_IDLE: Duration = Duration::from_secs(1);

/// Pool settings both pools share. sqlx pings every connection it hands out by
/// default: a second round trip to PostgreSQL for each one-query request. Here only a
/// connection that sat idle for [`PING_AFTER_IDLE`] is pinged (one that just served a
/// request is known to be alive), as HikariCP's `aliveBypassWindowMs` does; a
/// connection that breaks while busy fails its query, is discarded, and the request
/// answers 500 or the event is redelivered.
///
/// sqlx also pings every connection *returned* to the pool, in a task of its own, and
/// that ping is what discards a connection whose query failed because the connection
/// broke (PostgreSQL restarted, the network dropped it). It stays on: the patched
/// sqlx-core in vendor/ can turn it off (`test_on_release(false)`, PATCHES.md there),
/// but then a broken connection that was busy goes back to the idle queue and fails
/// every request it is handed until it sits idle long enough to be pinged, which the
/// chaos run's PostgreSQL restart showed (45 s of 500s from tickets). The option waits
/// for sqlx to mark a connection broken on an I/O error.
fn pool_options() -> PgPoolOptions {
    PgPoolOptions::new()
        .test_before_acquire(false)
        .test_on_release(true)
        .before_acquire(|connection, meta| {
            Box::pin(async move {
                if meta.idle_for > PING_AFTER_IDLE {
                    connection.ping().await?;
                }
                Ok(true)
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::describe;

    #[test]
    fn the_database_settings_are_listed_with_the_old_name_of_the_http_pool() {
        let variables = describe(DatabaseConfig::from_env);
        let required: Vec<_> = variables
            .iter()
            .filter(|v| v.required)
            .map(|v| v.name)
            .collect();
        assert_eq!(required, ["DATABASE_URL"]);
        let http = variables
            .iter()
            .find(|v| v.name == "DATABASE_HTTP_CONNECTIONS")
            .unwrap();
        assert_eq!(http.formerly, Some("DATABASE_MAX_CONNECTIONS"));
        assert!(
            variables
                .iter()
                .any(|v| v.name == "DATABASE_EVENT_CONNECTIONS")
        );
    }

    #[test]
    fn verifying_the_database_needs_its_ca() {
        let with = |pairs: &[(&str, &str)]| {
            let mut pairs = pairs.to_vec();
            pairs.push(("DATABASE_URL", "postgres://db/x"));
            DatabaseConfig::from_env(&Env::from_pairs(pairs))
        };
        assert!(matches!(with(&[]).unwrap().ssl_mode, PgSslMode::Prefer));
        assert!(matches!(
            with(&[("PGSSLMODE", "verify-full")]),
            Err(ConfigError::Missing("PGSSLROOTCERT"))
        ));
        let verified = with(&[("PGSSLMODE", "verify-full"), ("PGSSLROOTCERT", "/ca.crt")]).unwrap();
        assert!(matches!(verified.ssl_mode, PgSslMode::VerifyFull));
        assert!(matches!(
            with(&[("PGSSLMODE", "sometimes")]),
            Err(ConfigError::Invalid {
                name: "PGSSLMODE",
                ..
            })
        ));
    }
}
