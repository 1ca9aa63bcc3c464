//! Starting and stopping a service.
//!
//! A [`Service`] is the router plus the background work (outbox relay, consumers,
//! timers, pruning), each supervised (see [`crate::supervisor`]). [`Service::run`]
//! serves until the shutdown token is cancelled, then stops in order: stop accepting
//! and finish in-flight requests; let consumers and timers finish their current unit
//! of work; flush the outbox; close the database pools.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use futures::future::BoxFuture;
use sqlx::migrate::Migrator;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::{BusConfig, DatabaseConfig, HttpConfig};
use crate::db::Pools;
use crate::events::stream::{self, Nats};
use crate::events::{Consumers, Relay};
use crate::http::Probes;
use crate::prune::{BUS_TABLES, Pruner};
use crate::supervisor::{Health, Workers};
use crate::telemetry;

type Task = Box<dyn Fn(CancellationToken) -> BoxFuture<'static, ()> + Send + Sync>;

/// A service ready to run.
pub struct Service {
    name: &'static str,
    api: Router,
    request_timeout: Duration,
    pools: Option<Pools>,
    health: Health,
    bus: Option<(Nats, Consumers)>,
    tasks: Vec<(&'static str, Task)>,
    pruner: Option<(Pruner, Duration)>,
}

impl Service {
    /// `api`: the service's routes; the operational routes and layers are added here.
    pub fn new(name: &'static str, api: Router, http: &HttpConfig) -> Self {
        Self {
            name,
            api,
            request_timeout: http.request_timeout,
            pools: None,
            health: Health::default(),
            bus: None,
            tasks: Vec::new(),
            pruner: None,
        }
    }

    /// The service's database: `/readyz` checks it, and it is closed last.
    pub fn with_pools(mut self, pools: Pools) -> Self {
        self.pools = Some(pools);
        self
    }

    /// Publishes the service's outbox from `pools`, runs its `consumers`, and prunes
    /// the bus tables (and any table added with [`Self::prune`]).
    pub fn with_bus(
        mut self,
        pools: Pools,
        nats: Nats,
        consumers: Consumers,
        config: &BusConfig,
    ) -> Self {
        let pruner = BUS_TABLES.iter().fold(
            Pruner::new(pools.events.clone(), config.retention),
            |pruner, &(table, column)| pruner.table(table, column),
        );
        self.pools = Some(pools);
        self.pruner = Some((pruner, config.prune_interval));
        self.bus = Some((nats, consumers));
        self
    }

    /// Also prunes rows of `table` whose timestamp `column` is past the retention.
    pub fn prune(mut self, table: &'static str, column: &'static str) -> Self {
        if let Some((pruner, interval)) = self.pruner.take() {
            self.pruner = Some((pruner.table(table, column), interval));
        }
        self
    }

    /// A supervised background loop that returns once its token is cancelled. It is
    /// started again if it panics, so `task` makes a fresh future each time.
    pub fn with_task<F, Fut>(mut self, name: &'static str, task: F) -> Self
    where
        F: Fn(CancellationToken) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.tasks
            .push((name, Box::new(move |stop| Box::pin(task(stop)))));
        self
    }

    /// Serves on `listener` until `shutdown` is cancelled, then stops gracefully.
    pub async fn run(
        self,
        listener: TcpListener,
        shutdown: CancellationToken,
    ) -> anyhow::Result<()> {
        let address = listener
            .local_addr()
            .context("reading the listening address")?;
        let probes = Probes {
            pool: self.pools.as_ref().map(|pools| pools.http.clone()),
            health: self.health.clone(),
        };
        let app = crate::http::app(self.api, probes, self.request_timeout);
        let workers = Workers::new(self.name, self.health.clone());
        let stop_work = shutdown.child_token();
        for (name, task) in self.tasks {
            workers.supervise(name, stop_work.clone(), task);
        }
        if let Some((pruner, interval)) = self.pruner {
            workers.supervise("pruner", stop_work.clone(), move |stop| {
                pruner.clone().run(interval, stop)
            });
        }
        // The relay outlives the rest: it publishes what they committed while stopping.
        let relays = Workers::new(self.name, self.health.clone());
        let stop_relay = CancellationToken::new();
        if let (Some((nats, consumers)), Some(pools)) = (&self.bus, &self.pools) {
            consumers.spawn(&workers, nats, &stop_work);
            let relay = Relay::new(pools.events.clone(), nats.jetstream.clone());
            relays.supervise("relay", stop_relay.clone(), move |stop| {
                relay.clone().run(stop, Duration::from_secs(5))
            });
        }

        tracing::info!(service = self.name, %address, "listening");
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.clone().cancelled_owned())
            .await
            .context("serving HTTP");

        stop_work.cancel();
        workers.wait().await;
        stop_relay.cancel();
        relays.wait().await;
        if let Some(pools) = &self.pools {
            pools.close().await;
        }
        tracing::info!(service = self.name, "stopped");
        served
    }
}

/// The connections of a service on the event bus, ready to serve.
pub struct Backend {
    pub pools: Pools,
    pub nats: Nats,
}

impl Backend {
    /// Connects to the database and runs the bus and the service's migrations, then
    /// connects to NATS and makes sure the stream exists.
    pub async fn connect(
        name: &str,
        database: &DatabaseConfig,
        bus: &BusConfig,
        migrator: &Migrator,
    ) -> anyhow::Result<Self> {
        let pools = Pools::connect(database).await?;
        pools.migrate(migrator, true).await?;
        let nats = stream::connect(&bus.nats_url, name, bus.stream_replicas).await?;
        Ok(Self { pools, nats })
    }

    /// A service on this backend, publishing its outbox and running `consumers`.
    pub fn service(
        self,
        name: &'static str,
        api: Router,
        http: &HttpConfig,
        bus: &BusConfig,
        consumers: Consumers,
    ) -> Service {
        Service::new(name, api, http).with_bus(self.pools, self.nats, consumers, bus)
    }
}

/// The body of a service's `main` when it serves: logging and metrics, the listener
/// on `BIND_ADDRESS:PORT`, shutdown on SIGTERM or Ctrl-C within the grace period,
/// then `run`.
pub async fn launch<F, Fut>(http: &HttpConfig, run: F) -> anyhow::Result<()>
where
    F: FnOnce(TcpListener, CancellationToken) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let _flush_logs_on_exit = telemetry::init();
    let address = SocketAddr::new(http.bind_address, http.port);
    let listener = TcpListener::bind(address)
        .await
        .with_context(|| format!("binding {address}"))?;
    let result = run(listener, shutdown_on_signal(http.shutdown_grace)).await;
    if let Err(error) = &result {
        tracing::error!(error = format!("{error:#}"), "service failed");
    }
    result
}

/// A token cancelled on SIGTERM or SIGINT. If stopping then takes longer than
/// `grace`, the process exits with status 1 rather than hang.
pub fn shutdown_on_signal(grace: Duration) -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        let terminate = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut signal) => {
                    signal.recv().await;
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot listen for SIGTERM");
                    std::future::pending::<()>().await;
                }
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            () = terminate => {}
        }
        tracing::info!(grace_seconds = grace.as_secs(), "shutting down");
        cancel.cancel();
        tokio::time::sleep(grace).await;
        tracing::error!("shutdown took longer than the grace period; exiting");
        telemetry::flush();
        std::process::exit(1);
    });
    token
}
