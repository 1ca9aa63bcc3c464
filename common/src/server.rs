//! Starting and stopping a service.
//!
//! A [`Service`] is the router plus the background work (outbox relay, consumers,
//! timers). [`Service::run`] serves until the shutdown token is cancelled, then stops
//! in order (contract §8): stop accepting and finish in-flight requests; let
//! consumers and timers finish their current unit of work; flush the outbox; close
//! the database pool.

use std::future::Future;
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use futures::future::BoxFuture;
use sqlx::PgPool;
use sqlx::migrate::Migrator;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{BusConfig, HttpConfig};
use crate::events::stream::{self, Nats};
use crate::events::{Consumers, Relay};
use crate::{db, telemetry};

type Task = Box<dyn FnOnce(CancellationToken) -> BoxFuture<'static, ()> + Send>;

pub struct Service {
    name: &'static str,
    router: Router,
    pool: PgPool,
    relay: Option<Relay>,
    consumers: Option<Consumers>,
    tasks: Vec<Task>,
    flush_timeout: Duration,
}

impl Service {
    pub fn new(name: &'static str, router: Router, pool: PgPool) -> Self {
        Self {
            name,
            router,
            pool,
            relay: None,
            consumers: None,
            tasks: Vec::new(),
            flush_timeout: Duration::from_secs(5),
        }
    }

    /// Publishes the service's outbox.
    pub fn with_relay(mut self, relay: Relay) -> Self {
        self.relay = Some(relay);
        self
    }

    pub fn with_consumers(mut self, consumers: Consumers) -> Self {
        self.consumers = Some(consumers);
        self
    }

    /// A background loop that returns once its token is cancelled.
    pub fn with_task<F, Fut>(mut self, task: F) -> Self
    where
        F: FnOnce(CancellationToken) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.tasks.push(Box::new(move |stop| Box::pin(task(stop))));
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
        let workers = TaskTracker::new();
        let stop_work = shutdown.child_token();
        if let Some(consumers) = self.consumers {
            consumers.spawn(&workers, &stop_work);
        }
        for task in self.tasks {
            workers.spawn(task(stop_work.clone()));
        }
        // The relay outlives the rest: it publishes what they committed while stopping.
        let stop_relay = CancellationToken::new();
        let relay = self
            .relay
            .map(|relay| tokio::spawn(relay.run(stop_relay.clone(), self.flush_timeout)));

        tracing::info!(service = self.name, %address, "listening");
        let served = axum::serve(listener, self.router)
            .with_graceful_shutdown(shutdown.clone().cancelled_owned())
            .await
            .context("serving HTTP");

        stop_work.cancel();
        workers.close();
        workers.wait().await;
        stop_relay.cancel();
        if let Some(relay) = relay {
            relay.await.context("the outbox relay panicked")?;
        }
        self.pool.close().await;
        tracing::info!(service = self.name, "stopped");
        served
    }
}

/// The connections of a service on the event bus, ready to serve.
pub struct Backend {
    pub pool: PgPool,
    pub nats: Nats,
}

impl Backend {
    /// Connects to the database and runs the bus and the service's migrations, then
    /// connects to NATS and makes sure the stream exists.
    pub async fn connect(
        name: &str,
        http: &HttpConfig,
        bus: &BusConfig,
        migrator: &Migrator,
    ) -> anyhow::Result<Self> {
        let pool = db::connect(http).await?;
        db::migrate_bus(&pool).await?;
        db::migrate(&pool, migrator).await?;
        let nats = stream::connect(&bus.nats_url, name).await?;
        Ok(Self { pool, nats })
    }

    /// What `/readyz` checks for this service.
    pub fn readiness(&self) -> crate::http::Readiness {
        crate::http::Readiness {
            pool: self.pool.clone(),
            nats: Some(self.nats.client.clone()),
        }
    }

    /// A service on this backend, publishing its outbox and running `consumers`.
    pub fn service(self, name: &'static str, router: Router, consumers: Consumers) -> Service {
        let relay = Relay::new(self.pool.clone(), self.nats.jetstream.clone());
        Service::new(name, router, self.pool)
            .with_relay(relay)
            .with_consumers(consumers)
    }

    /// The consumers of `service` on this backend.
    pub fn consumers(&self, service: &str, bus: &BusConfig) -> Consumers {
        Consumers::new(service, self.pool.clone(), self.nats.clone(), bus)
    }
}

/// The body of every service's `main`: logging and metrics, the listener on
/// `0.0.0.0:port`, shutdown on SIGTERM or Ctrl-C within `grace`, then `run`.
pub async fn launch<F, Fut>(port: u16, grace: Duration, run: F) -> anyhow::Result<()>
where
    F: FnOnce(TcpListener, CancellationToken) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    telemetry::init();
    let listener = TcpListener::bind(("0.0.0.0", port))
        .await
        .with_context(|| format!("binding port {port}"))?;
    let result = run(listener, shutdown_on_signal(grace)).await;
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
        std::process::exit(1);
    });
    token
}
