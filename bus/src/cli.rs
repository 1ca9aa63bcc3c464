//! The command line of a service on the bus: the kit's commands, and the parked
//! events.
//!
//! ```text
//! <service> parked list [--json]     events that could not be handled
//! <service> parked redrive ID...     apply them again (after fixing the cause)
//! <service> parked redrive --all
//! ```
//!
//! The `parked` commands read only the database and bus settings (`DATABASE_URL`,
//! `EVENT_*`...) and talk to the service's database only, so they run beside a live
//! service, e.g. with `kubectl exec deploy/tickets -- tickets parked list`.

use std::process::ExitCode;

use clap::Subcommand;
use kit::db::{DatabaseConfig, Pools};

use crate::config::BusConfig;
use crate::consumer::Consumers;
use crate::parked::Redriven;
use crate::service::OnBus;

#[derive(Debug, Subcommand)]
enum Command {
    #[command(flatten)]
    Service(kit::cli::Command),
    /// Events that could not be handled, and applying them again.
    #[command(subcommand)]
    Parked(Parked),
}

#[derive(Debug, Subcommand)]
enum Parked {
    /// The parked events, oldest first, with the reason each was parked.
    List {
        /// As JSON.
        #[arg(long)]
        json: bool,
    },
    /// Applies parked events again through the service's listeners (after fixing
    /// what made them fail); what still fails stays parked.
    #[command(group(clap::ArgGroup::new("which").required(true).args(["ids", "all"])))]
    Redrive {
        /// The parked events' ids (see `parked list`).
        ids: Vec<i64>,
        /// Every parked event.
        #[arg(long)]
        all: bool,
    },
}

/// The whole of a bus service binary's `main`: parses the arguments and runs the
/// command they name (serving when they name none).
pub fn main<S: OnBus>() -> ExitCode {
    kit::cli::main_with::<S, Command>(async |command| match command {
        None => kit::cli::Command::Serve.run::<S>().await,
        Some(Command::Service(command)) => command.run::<S>().await,
        Some(Command::Parked(Parked::List { json })) => list::<S>(json).await,
        Some(Command::Parked(Parked::Redrive { ids, all })) => {
            redrive::<S>((!all).then_some(ids)).await
        }
    })
}

/// The service's listeners, on a small pool of their own.
async fn consumers<S: OnBus>() -> anyhow::Result<Consumers> {
    let (database, bus) = kit::config::load_or_exit(|env| {
        Ok((DatabaseConfig::from_env(env)?, BusConfig::from_env(env)?))
    });
    let pools = Pools::connect(&database.for_a_command()).await?;
    Ok(Consumers::new(S::NAME, pools.events, &bus, S::listeners()))
}

async fn list<S: OnBus>(json: bool) -> anyhow::Result<()> {
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

async fn redrive<S: OnBus>(ids: Option<Vec<i64>>) -> anyhow::Result<()> {
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
        still_parked += usize::from(matches!(result, Redriven::NotYet(_) | Redriven::Failed(_)));
    }
    anyhow::ensure!(still_parked == 0, "{still_parked} event(s) still parked");
    Ok(())
}
