//! What a service is made of, and starting and stopping it.
//!
//! A service states, once, in its implementation of [`Service`]: its name, its
//! configuration ([`Service::from_env`]) and what it is made of ([`Service::start`]):
//! an [`App`], the router of its API plus its background tasks and its [`Part`]s (its
//! database, the event bus). [`serve`] then runs it: the API on one port with the
//! layers every route shares, `/healthz`, `/readyz` and `/metrics` on another
//! ([`crate::http`]); it supervises every background loop ([`crate::supervisor`]) and,
//! once the shutdown token is cancelled, stops in order: stop accepting and finish
//! in-flight requests; let tasks, consumers and timers finish their current unit of
//! work; let each part finish (the bus flushes its outbox) and close (the pools), the
//! last added first; then close the ops port. A stop asked for while the service is
//! still connecting (its database not up yet) ends it at once, with success.

use std::future::{Future, IntoFuture as _};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use futures::future::BoxFuture;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::{ConfigError, Env, HttpConfig};
use crate::supervisor::{Health, Workers};
use crate::telemetry;

/// A service: how it is configured and what it is made of. Its binary's `main` is
/// [`crate::main`] (or `bus::main` for a service on the event bus); tests run it
/// in-process with [`serve`].
pub trait Service: Sized + Send + 'static {
    /// The service's name (`tickets`): in its logs and metrics, and in its durable
    /// consumers' names.
    const NAME: &'static str;

    /// The configuration, from the environment. The code that reads it is also the
    /// list of the variables it reads (`<service> env`; see [`crate::config`]).
    fn from_env(env: &Env) -> Result<Self, ConfigError>;

    /// The HTTP settings within the configuration.
    fn http(&self) -> &HttpConfig;

    /// Connects to what the service needs and says what it serves and runs.
    fn start(self) -> impl Future<Output = anyhow::Result<App>> + Send;
}

/// A background loop that returns once its token is cancelled; it is started again
/// if it panics, so it makes a fresh future each time.
type Task = Box<dyn Fn(CancellationToken) -> BoxFuture<'static, ()> + Send + Sync>;

/// What a service serves and runs: its API, its background tasks and its parts.
#[must_use = "an app does nothing until it is returned from `Service::start` and served"]
pub struct App {
    api: Router,
    tasks: Vec<(&'static str, Task)>,
    parts: Vec<Box<dyn Part>>,
}

impl App {
    /// `api`: the service's routes; the operational routes and layers are added when
    /// it is served.
    pub fn new(api: Router) -> Self {
        Self {
            api,
            tasks: Vec::new(),
            parts: Vec::new(),
        }
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

    /// Something the service runs beside its routes: its database ([`crate::db::Pools`]),
    /// the event bus.
    pub fn with_part(mut self, part: impl Part) -> Self {
        self.parts.push(Box::new(part));
        self
    }
}

/// Something a service runs beside its routes, with a lifecycle of its own: it may
/// decide whether the service is ready, runs background work, and finishes once the
/// routes and every worker have stopped.
pub trait Part: Send + 'static {
    /// What `/readyz` asks of it, if anything.
    fn readiness(&self) -> Option<Readiness> {
        None
    }

    /// Starts its background work under `workers`; the work stops when `stop` is
    /// cancelled, before [`Part::finish`] is called.
    fn start(&mut self, workers: &Workers, stop: &CancellationToken) {
        let _ = (workers, stop);
    }

    /// Its last work once everything else has stopped (publishing what is left),
    /// then letting go of what it holds (closing its connections).
    fn finish(self: Box<Self>) -> BoxFuture<'static, ()>;
}

/// A check `/readyz` runs: `Err` says why the service cannot serve now.
#[derive(Clone)]
pub struct Readiness(Arc<dyn Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync>);

impl Readiness {
    pub fn new<F, Fut>(check: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        Self(Arc::new(move || Box::pin(check())))
    }

    pub async fn check(&self) -> Result<(), String> {
        (self.0)().await
    }
}

/// Where a service listens.
pub struct Listeners {
    /// Its API (`PORT`): what the ingress routes to.
    pub api: TcpListener,
    /// Its operational endpoints (`OPS_PORT`): probes and Prometheus.
    pub ops: TcpListener,
}

impl Listeners {
    /// Binds `BIND_ADDRESS:PORT` and `BIND_ADDRESS:OPS_PORT`.
    pub async fn bind(http: &HttpConfig) -> anyhow::Result<Self> {
        let bind = |port| async move {
            let address = SocketAddr::new(http.bind_address, port);
            TcpListener::bind(address)
                .await
                .with_context(|| format!("binding {address}"))
        };
        Ok(Self {
            api: bind(http.port).await?,
            ops: bind(http.ops_port).await?,
        })
    }
}

/// Starts `service` and serves it on `listeners` until `shutdown` is cancelled, then
/// stops gracefully.
pub async fn serve<S: Service>(
    service: S,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let timeout = service.http().request_timeout;
    let app = tokio::select! {
        app = service.start() => app?,
        () = shutdown.cancelled() => {
            tracing::info!(service = S::NAME, "stopped while starting");
            return Ok(());
        }
    };
    run(S::NAME, app, timeout, listeners, shutdown).await
}

async fn run(
    name: &'static str,
    app: App,
    request_timeout: Duration,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let App {
        api,
        tasks,
        mut parts,
    } = app;
    let address = listeners
        .api
        .local_addr()
        .context("reading the listening address")?;
    let ops_address = listeners
        .ops
        .local_addr()
        .context("reading the ops listening address")?;
    let health = Health::default();
    let probes = crate::http::Probes {
        readiness: parts.iter().filter_map(|part| part.readiness()).collect(),
        health: health.clone(),
    };
    let stop_ops = CancellationToken::new();
    let ops = tokio::spawn(
        axum::serve(listeners.ops, crate::http::ops(probes))
            .with_graceful_shutdown(stop_ops.clone().cancelled_owned())
            .into_future(),
    );
    let app = crate::http::app(api, request_timeout);
    let workers = Workers::new(name, health);
    let stop_work = shutdown.child_token();
    for (task_name, task) in tasks {
        workers.supervise(task_name, stop_work.clone(), task);
    }
    for part in &mut parts {
        part.start(&workers, &stop_work);
    }

    tracing::info!(service = name, %address, ops = %ops_address, "listening");
    // The peer's address reaches handlers (`http::client_address`).
    let app = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
    let served = axum::serve(listeners.api, app)
        .with_graceful_shutdown(shutdown.clone().cancelled_owned())
        .await
        .context("serving HTTP");

    stop_work.cancel();
    workers.wait().await;
    while let Some(part) = parts.pop() {
        part.finish().await;
    }
    stop_ops.cancel();
    let ops = ops.await.context("the ops server panicked")?;
    tracing::info!(service = name, "stopped");
    served.and(ops.context("serving the operational endpoints"))
}

/// Serves `service` as its binary does: logging and metrics, the listeners on
/// `BIND_ADDRESS:PORT` and `BIND_ADDRESS:OPS_PORT`, shutdown on SIGTERM or Ctrl-C
/// within the grace period.
pub(crate) async fn serve_from_main<S: Service>(service: S) -> anyhow::Result<()> {
    let http = service.http().clone();
    let listeners = Listeners::bind(&http).await?;
    let result = serve(service, listeners, shutdown_on_signal(http.shutdown_grace)).await;
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
        terminated().await;
        tracing::info!(grace_seconds = grace.as_secs(), "shutting down");
        cancel.cancel();
        tokio::time::sleep(grace).await;
        tracing::error!("shutdown took longer than the grace period; exiting");
        telemetry::flush();
        std::process::exit(1);
    });
    token
}

/// Returns on SIGTERM or SIGINT (Ctrl-C).
pub async fn terminated() {
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
}
