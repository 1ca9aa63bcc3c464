//! The command line every service binary shares.
//!
//! ```text
//! <service>                          serve (what the container runs)
//! <service> env [--json]             the environment variables it reads
//! <service> env --check              whether this environment is a valid configuration
//! <service> parked list [--json]     events that could not be handled
//! <service> parked redrive ID...     apply them again (after fixing the cause)
//! <service> parked redrive --all
//! ```
//!
//! The `parked` commands talk to the service's database only (`DATABASE_URL` and the
//! settings its listeners need), so they run beside a live service, e.g. with
//! `kubectl exec deploy/tickets -- tickets parked list`.

use std::future::Future;
use std::process::ExitCode;

use anyhow::Context as _;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::{self, ConfigError, DatabaseConfig, Env, HttpConfig};
use crate::db::Pools;
use crate::events::Consumers;

/// A service binary: its configuration, how it serves, and its event listeners.
pub trait ServiceMain: Sized + Send + 'static {
    /// The service's name (`tickets`), as in its consumers' durable names.
    const NAME: &'static str;

    fn from_env(env: &Env) -> Result<Self, ConfigError>;

    fn http(&self) -> &HttpConfig;

    /// The service's database, if it has one.
    fn database(&self) -> Option<&DatabaseConfig> {
        None
    }

    /// Connects, migrates and serves until `shutdown` is cancelled.
    fn run(
        self,
        listener: TcpListener,
        shutdown: CancellationToken,
    ) -> impl Future<Output = anyhow::Result<()>> + Send;

    /// The service's event listeners on `pool` (its background pool), or `None` for a
    /// service that is not on the bus.
    fn consumers(&self, pool: PgPool) -> anyhow::Result<Option<Consumers>> {
        let _ = pool;
        Ok(None)
    }
}

const USAGE: &str =
    "usage: SERVICE [env [--json] | parked list [--json] | parked redrive (ID... | --all)]";

/// Runs the command the arguments name; serving is the default.
pub async fn main<S: ServiceMain>() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let result = match args.as_slice() {
        [] | ["serve"] => serve::<S>().await,
        ["env"] => print_env::<S>(false),
        ["env", "--json"] => print_env::<S>(true),
        ["env", "--check"] => check_env::<S>(),
        ["parked", "list"] => list_parked::<S>(false).await,
        ["parked", "list", "--json"] => list_parked::<S>(true).await,
        ["parked", "redrive", "--all"] => redrive::<S>(None).await,
        ["parked", "redrive", ids @ ..] if !ids.is_empty() => {
            match ids.iter().map(|id| id.parse::<i64>()).collect() {
                Ok(ids) => redrive::<S>(Some(ids)).await,
                Err(_) => Err(anyhow::anyhow!("parked event ids are numbers\n{USAGE}")),
            }
        }
        _ => Err(anyhow::anyhow!("{}", USAGE.replace("SERVICE", S::NAME))),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("{}: {error:#}", S::NAME);
            ExitCode::FAILURE
        }
    }
}

async fn serve<S: ServiceMain>() -> anyhow::Result<()> {
    let config = config::load_or_exit(S::from_env);
    let http = config.http().clone();
    crate::server::launch(&http, |listener, shutdown| config.run(listener, shutdown)).await
}

fn print_env<S: ServiceMain>(json: bool) -> anyhow::Result<()> {
    let variables = config::describe(S::from_env);
    if json {
        println!("{}", serde_json::to_string_pretty(&variables)?);
        return Ok(());
    }
    for variable in variables {
        match (variable.required, variable.default) {
            (true, _) => println!("{:<36} required", variable.name),
            (false, Some(default)) => println!("{:<36} default {default}", variable.name),
            (false, None) => println!("{:<36} optional", variable.name),
        }
    }
    Ok(())
}

/// Loads the configuration from this environment, as serving would, and says whether
/// it is complete (the deployment manifests are checked with it).
fn check_env<S: ServiceMain>() -> anyhow::Result<()> {
    S::from_env(&Env::process())?;
    println!("{}: the configuration is complete", S::NAME);
    Ok(())
}

/// The service's listeners, on a small pool of their own.
async fn consumers<S: ServiceMain>() -> anyhow::Result<Consumers> {
    let config = config::load_or_exit(S::from_env);
    let mut database = config
        .database()
        .with_context(|| format!("{} has no database", S::NAME))?
        .clone();
    database.http_connections = 1;
    database.event_connections = 2;
    let pools = Pools::connect(&database).await?;
    config
        .consumers(pools.events)?
        .with_context(|| format!("{} does not listen to events", S::NAME))
}

async fn list_parked<S: ServiceMain>(json: bool) -> anyhow::Result<()> {
    let parked = consumers::<S>().await?.parked().await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&parked)?);
        return Ok(());
    }
    if parked.is_empty() {
        println!("no parked events");
    }
    for event in parked {
        println!(
            "{:>6}  {}  {:<20} {:<38} failures {}\n        error: {}\n        payload: {}",
            event.id,
            event.parked_at.format("%Y-%m-%d %H:%M:%S"),
            event.subject,
            event.event_id.as_deref().unwrap_or("(no id)"),
            event.failures,
            event.error,
            event.payload,
        );
    }
    Ok(())
}

async fn redrive<S: ServiceMain>(ids: Option<Vec<i64>>) -> anyhow::Result<()> {
    let consumers = consumers::<S>().await?;
    let results = match ids {
        None => consumers.redrive_all().await?,
        Some(ids) => {
            let mut results = Vec::with_capacity(ids.len());
            for id in ids {
                results.push((id, consumers.redrive(id).await?));
            }
            results
        }
    };
    if results.is_empty() {
        println!("no parked events");
    }
    let mut still_parked = 0;
    for (id, result) in results {
        println!("{id:>6}  {result}");
        still_parked += usize::from(matches!(
            result,
            crate::events::parked::Redriven::NotYet(_) | crate::events::parked::Redriven::Failed(_)
        ));
    }
    anyhow::ensure!(still_parked == 0, "{still_parked} event(s) still parked");
    Ok(())
}
