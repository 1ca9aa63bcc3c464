//! A service on the bus: what it adds to the service kit's [`Service`], and the
//! [`Backend`] that connects it.

use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use futures::future::BoxFuture;
use kit::App;
use kit::db::{DatabaseConfig, Pools};
use kit::service::{Part, Readiness, Service};
use kit::supervisor::Workers;
use sqlx::PgPool;
use sqlx::migrate::Migrator;
use tokio_util::sync::CancellationToken;

use crate::config::BusConfig;
use crate::consumer::{Consumers, Listeners};
use crate::outbox::Relay;
use crate::prune::{BUS_TABLES, Pruner};
use crate::stream::{self, Nats};

/// A service on the event bus: a [`Service`] with a database holding the bus's
/// tables beside its own, an outbox, and listeners. Its [`Service::start`] connects
/// with [`Backend::connect`]; its binary's `main` is [`crate::main`].
pub trait OnBus: Service {
    /// The service's own migrations; the bus's run first.
    const MIGRATOR: &'static Migrator;

    /// Tables of its own that are pruned with the bus's bookkeeping: (table, the
    /// timestamp column past the retention horizon of which a row goes).
    const PRUNED: &'static [(&'static str, &'static str)] = &[];

    /// The listeners: one per subject the service consumes.
    fn listeners() -> Listeners;
}

/// The connections of a service on the bus, ready to serve: its database (migrated)
/// and NATS (the stream declared).
pub struct Backend {
    /// Its two pools: HTTP handlers take [`Pools::http`], background tasks
    /// [`Pools::events`].
    pub pools: Pools,
    bus: Bus,
}

impl Backend {
    /// Connects service `S` to its database and runs the bus's migrations, then its
    /// own; then connects to NATS and makes sure the stream exists.
    pub async fn connect<S: OnBus>(
        database: &DatabaseConfig,
        config: &BusConfig,
    ) -> anyhow::Result<Self> {
        let pools = Pools::connect(database).await?;
        migrate(&pools.events).await?;
        pools.migrate(S::MIGRATOR).await?;
        let nats = stream::connect_with(&config.access(S::NAME), S::NAME, &config.stream).await?;
        let consumers = Consumers::new(S::NAME, pools.events.clone(), config, S::listeners());
        let pruner = BUS_TABLES.iter().chain(S::PRUNED).fold(
            Pruner::new(pools.events.clone(), config.retention),
            |pruner, &(table, column)| pruner.table(table, column),
        );
        let bus = Bus {
            #[cfg(feature = "sessions")]
            service: S::NAME,
            pools: pools.clone(),
            nats,
            consumers,
            pruner,
            prune_interval: config.prune_interval,
            relay: None,
            #[cfg(feature = "sessions")]
            sessions: None,
        };
        Ok(Self { pools, bus })
    }

    /// Makes `keys` refuse every session signed out anywhere: reads the revocations
    /// already published (a few seconds at most) before the service serves, then
    /// follows new ones in the background ([`crate::sessions`]).
    #[cfg(feature = "sessions")]
    pub async fn follow_sessions(&mut self, keys: &common::SessionKeys) {
        let reading =
            crate::sessions::catch_up(&self.bus.nats.jetstream, self.bus.service, keys).await;
        self.bus.sessions = Some((keys.clone(), reading));
    }

    /// The app serving `api` on this backend: `/readyz` follows the database, the
    /// outbox is relayed, the listeners consume, the bookkeeping is pruned; on
    /// shutdown the outbox is flushed and the pools closed last.
    pub fn app(self, api: Router) -> App {
        App::new(api).with_part(self.bus)
    }
}

/// Creates the event bus's tables (outbox, processed, failing and parked events) in a
/// service's database. They are versioned in their own table, `_bus_migrations`, so
/// that they never clash with the service's own migrations.
pub async fn migrate(pool: &PgPool) -> anyhow::Result<()> {
    let mut migrator = sqlx::migrate!("./migrations");
    migrator.dangerous_set_table_name("_bus_migrations");
    migrator
        .run(pool)
        .await
        .context("running event-bus migrations")
}

/// The bus as a part of the service.
struct Bus {
    #[cfg(feature = "sessions")]
    service: &'static str,
    pools: Pools,
    nats: Nats,
    consumers: Consumers,
    pruner: Pruner,
    prune_interval: Duration,
    /// The relay's workers and their token, once started: the relay outlives the
    /// rest, to publish what they committed while stopping.
    relay: Option<(Workers, CancellationToken)>,
    /// The keys that follow sign-outs, and the reading of them begun before serving.
    #[cfg(feature = "sessions")]
    sessions: Option<(common::SessionKeys, crate::sessions::Reading)>,
}

/// How long a stopping service may spend publishing what its outbox still holds.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

impl Part for Bus {
    fn readiness(&self) -> Option<Readiness> {
        Some(kit::db::database_answers(self.pools.http.clone()))
    }

    fn start(&mut self, workers: &Workers, stop: &CancellationToken) {
        self.pools.start(workers, stop); // the pools' usage gauges
        self.consumers.spawn(workers, &self.nats, stop);
        #[cfg(feature = "sessions")]
        if let Some((keys, reading)) = self.sessions.clone() {
            let (jetstream, service) = (self.nats.jetstream.clone(), self.service);
            workers.supervise("sessions", stop.clone(), move |stop| {
                let (keys, reading) = (keys.clone(), reading.clone());
                crate::sessions::follow(jetstream.clone(), service, keys, reading, stop)
            });
        }
        let (pruner, interval) = (self.pruner.clone(), self.prune_interval);
        workers.supervise("pruner", stop.clone(), move |stop| {
            pruner.clone().run(interval, stop)
        });
        let relays = Workers::new(workers.service(), workers.health().clone());
        let stop_relay = CancellationToken::new();
        let relay = Relay::new(self.pools.events.clone(), self.nats.jetstream.clone());
        relays.supervise("relay", stop_relay.clone(), move |stop| {
            relay.clone().run(stop, FLUSH_TIMEOUT)
        });
        self.relay = Some((relays, stop_relay));
    }

    fn finish(self: Box<Self>) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            if let Some((relays, stop)) = &self.relay {
                stop.cancel();
                relays.wait().await;
            }
            self.pools.close().await;
        })
    }
}
