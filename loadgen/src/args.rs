//! The command line, parsed with clap: `loadgen --help` lists the commands,
//! `loadgen <command> --help` their options; an unknown option or a bad value is
//! refused with a message naming it (exit code 2).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};

/// Load, measure and break the Ticketing stack (loopback only). The stack's ports come
/// from the same environment variables as scripts/stack.sh (INGRESS_PORT, PG_PORT,
/// NATS_PORT, SERVICE_PORT_BASE, STANDIN_PORT).
#[derive(Debug, Parser)]
#[command(name = "loadgen")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Realistic journeys (browse, buy and pay, cancel, let expire) through the ingress.
    Journeys {
        /// Journeys started per second (open loop); without it, `--concurrency` users
        /// each run one journey after another.
        #[arg(long)]
        rate: Option<f64>,
        /// Users running journeys at once, when no `--rate` is given.
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
        /// How long to run, e.g. `500ms`, `30s`, `2m`.
        #[arg(long, default_value = "30s", value_parser = parse_duration)]
        duration: Duration,
        /// Stop after this many journeys instead.
        #[arg(long)]
        count: Option<u64>,
        /// Distinct users the journeys sign in as.
        #[arg(long, default_value_t = 20)]
        users: usize,
        /// The ingress to go through (default: the local stack's).
        #[arg(long)]
        base: Option<String>,
    },
    /// Journeys while faults are injected in turn, then the invariant checker.
    Chaos {
        /// How long to run, e.g. `60s`, `3m`.
        #[arg(long, default_value = "3m", value_parser = parse_duration)]
        duration: Duration,
        /// Journeys started per second.
        #[arg(long, default_value_t = 20.0)]
        rate: f64,
    },
    /// Journeys through the cluster of `make cluster` while its faults run in turn
    /// (`scripts/cluster fault`), each measured; then the checker, with the cluster's
    /// own checks. Writes the results as JSON.
    ClusterChaos {
        /// `full` (every kind of fault on every kind of part) or `short` (make test).
        #[arg(long, default_value = "full", value_parser = ["full", "short"])]
        plan: String,
        /// Journeys started per second.
        #[arg(long, default_value_t = 8.0)]
        rate: f64,
        /// Quiet between two faults, e.g. `15s`.
        #[arg(long, default_value = "15s", value_parser = parse_duration)]
        gap: Duration,
        /// First measure closed-loop throughput through the cluster for this long.
        #[arg(long, value_parser = parse_duration)]
        throughput: Option<Duration>,
        /// Where the results go.
        #[arg(long, default_value = "target/cluster/results.json")]
        out: PathBuf,
    },
    /// Closed-loop journeys per second through an ingress, written as JSON (the
    /// single-node baseline of the cluster's figures).
    Throughput {
        /// The ingress (default: the local stack's).
        #[arg(long)]
        base: Option<String>,
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
        #[arg(long, default_value = "30s", value_parser = parse_duration)]
        duration: Duration,
        #[arg(long, default_value = "target/cluster/baseline.json")]
        out: PathBuf,
    },
    /// Writes the cluster's section of docs/benchmarks.md from a full run's results.
    ClusterReport {
        #[arg(long, default_value = "target/cluster/results.json")]
        results: PathBuf,
        /// The single-node stack's throughput, measured in the same run.
        #[arg(long, default_value = "target/cluster/baseline.json")]
        baseline: PathBuf,
        #[arg(long, default_value = "docs/benchmarks.md")]
        markdown: PathBuf,
    },
    /// The invariant checker alone, once the stack is quiet.
    Check,
    /// Every measurement of `make bench`, written as JSON.
    Bench {
        /// Where the results go.
        #[arg(long, default_value = "target/bench/results.json")]
        out: PathBuf,
    },
    /// Only bench's orders and expiration lateness.
    Lateness,
    /// Only bench's backlog: 10,000 `ticket.created` queued at once, drained into the
    /// orders replica.
    Backlog,
    /// Only bench's event propagation (tickets listed for 10 s), at one rate.
    Propagation {
        /// Tickets listed per second.
        #[arg(long, default_value_t = 1000.0)]
        rate: f64,
    },
    /// Writes docs/benchmarks.md from bench's results.
    Report {
        /// The results of `loadgen bench`, one file per run, oldest first (repeat the
        /// option for each).
        #[arg(long, default_value = "target/bench/results.json")]
        results: Vec<PathBuf>,
        /// The document to write.
        #[arg(long, default_value = "docs/benchmarks.md")]
        markdown: PathBuf,
    },
}

/// A duration such as `500ms`, `30s` or `2m` (a bare number is seconds).
pub fn parse_duration(raw: &str) -> anyhow::Result<Duration> {
    let (number, unit) = raw.split_at(raw.find(|c: char| c.is_alphabetic()).unwrap_or(raw.len()));
    let number: f64 = number
        .parse()
        .with_context(|| format!("{raw:?} is not a duration"))?;
    let seconds = match unit {
        "ms" => number / 1000.0,
        "s" | "" => number,
        "m" => number * 60.0,
        other => bail!("unknown unit {other:?} in {raw:?}"),
    };
    Duration::try_from_secs_f64(seconds).with_context(|| format!("{raw:?} is not a duration"))
}

#[cfg(test)]
mod tests {
    use clap::error::ErrorKind;

    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("3").unwrap(), Duration::from_secs(3));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("-1s").is_err());
    }

    #[test]
    fn options_parse_and_mistakes_are_refused_by_name() {
        let cli = Cli::try_parse_from(["loadgen", "journeys", "--duration", "5m"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Journeys { duration, rate: None, .. } if duration == Duration::from_secs(300)
        ));
        let typo = Cli::try_parse_from(["loadgen", "journeys", "--durtion", "5m"]).unwrap_err();
        assert_eq!(typo.kind(), ErrorKind::UnknownArgument);
        assert_eq!(typo.exit_code(), 2);
        assert!(typo.to_string().contains("--durtion"), "{typo}");
        let bad = Cli::try_parse_from(["loadgen", "chaos", "--rate", "fast"]).unwrap_err();
        assert_eq!(bad.kind(), ErrorKind::ValueValidation);
        assert!(bad.to_string().contains("--rate"), "{bad}");
        let unknown = Cli::try_parse_from(["loadgen", "stampede"]).unwrap_err();
        assert_eq!(unknown.kind(), ErrorKind::InvalidSubcommand);
        let help = Cli::try_parse_from(["loadgen", "--help"]).unwrap_err();
        assert_eq!(help.kind(), ErrorKind::DisplayHelp);
        assert!(help.to_string().contains("journeys"), "{help}");
    }
}
