//! `loadgen`: load, measure and break the Ticketing stack (loopback only).
//!
//! ```text
//! loadgen journeys [--rate 50 | --concurrency 32] [--duration 30s] [--count N] [--users 20]
//! loadgen chaos    [--duration 3m] [--rate 20]     journeys under faults, then the checker
//! loadgen check                                     the invariant checker alone
//! loadgen cluster-chaos [--plan full|short] [--rate 8] [--throughput 30s]
//!                                                   faults in the cluster of make cluster
//! loadgen throughput [--base URL] [--duration 30s]  closed-loop journeys per second
//! loadgen cluster-report                            the cluster's section of benchmarks.md
//! loadgen bench    [--out target/bench/results.json]  every measurement of make bench
//! loadgen lateness                                  only bench's orders and expiration lateness
//! loadgen backlog                                   only bench's backlog of 10,000 events
//! loadgen propagation [--rate 1000]                 only bench's event propagation, at one rate
//! loadgen report   --results FILE [--results FILE ...] [--markdown docs/benchmarks.md]
//! loadgen --help, loadgen <command> --help
//! ```
//!
//! The stack's ports come from the same environment variables as scripts/stack.sh
//! (INGRESS_PORT, PG_PORT, NATS_PORT, SERVICE_PORT_BASE, STANDIN_PORT).

mod args;
mod bench;
mod chaos;
mod client;
mod cluster;
mod fanout;
mod invariants;
mod journeys;
mod report;
mod stack;
mod stats;

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser as _;

use crate::args::{Cli, Command};
use crate::stack::Stack;

fn write_json(path: &std::path::Path, value: &impl serde::Serialize) -> anyhow::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(path, serde_json::to_string_pretty(value)?)
        .with_context(|| format!("writing {}", path.display()))
}

fn main() -> ExitCode {
    // Arguments first: `--help` and mistakes need no runtime and no stack.
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("loadgen: starting the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("loadgen: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> anyhow::Result<ExitCode> {
    // reqwest is built without a default TLS provider; every command's clients (the
    // invariant checker's Stripe ledger read included) need one installed first.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let stack = Stack::from_env()?;
    if matches!(
        command,
        Command::Journeys { .. } | Command::Chaos { .. } | Command::ClusterChaos { .. }
    ) {
        eprintln!(
            "loadgen: all its users come from one address and each does far more than a \
             person would; the stack must run with RATE_LIMITS=off and a high \
             MAX_ACTIVE_ORDERS_PER_USER (make bench, make chaos and make cluster-chaos \
             set both; `make up RATE_LIMITS=off MAX_ACTIVE_ORDERS_PER_USER=1000000`), or \
             auth answers 429 to more than 8 sign-ups at once, and orders refuses an 11th \
             unpaid order of one user"
        );
    }
    match command {
        Command::Journeys {
            rate,
            concurrency,
            duration,
            count,
            users,
            base,
        } => {
            let config = journeys::Config {
                base: base.unwrap_or_else(|| stack.ingress()),
                rate: rate.filter(|rate| *rate > 0.0),
                concurrency,
                duration,
                count: count.filter(|count| *count > 0),
                users,
                only: None,
                stop: None,
            };
            journeys::run(config).await?.print();
            Ok(ExitCode::SUCCESS)
        }
        Command::Backlog => {
            let backlog = bench::backlog(&stack, bench::BACKLOG).await?;
            println!(
                "backlog of {} ticket.created: outbox drained after {:.2} s; orders replica first to last {:.2} s, {:.0}/s",
                backlog.events, backlog.drained_s, backlog.replicated_s, backlog.per_second
            );
            if let Some(relay) = backlog.relay_per_second {
                println!("  the relay, from its first published batch to the last: {relay:.0}/s");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Propagation { rate } => {
            let delays = bench::propagation(&stack, rate).await?;
            println!(
                "propagation at {}: {} events, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
                delays.name, delays.count, delays.p50_ms, delays.p99_ms, delays.max_ms
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Lateness => {
            let http = reqwest::Client::new();
            let (orders, late, cost) = bench::orders_and_lateness(&stack, &http).await?;
            println!(
                "POST /api/orders: {:.0}/s, p50 {:.1} ms, p99 {:.1} ms",
                orders.per_second, orders.p50_ms, orders.p99_ms
            );
            println!(
                "expiration lateness, {} (due within {:.0} ms): p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
                late.name, late.spread_ms, late.p50_ms, late.p99_ms, late.max_ms
            );
            match cost {
                Some(cost) => cost.print("expiry"),
                None => println!(
                    "  (no idle second before the first order came due: cost not measured)"
                ),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Chaos { duration, rate } => {
            let outcome = chaos::run(&stack, duration, rate).await?;
            outcome.journeys.print();
            let findings = &outcome.findings;
            println!("\njourneys by kind (outside the faults' windows):");
            for (kind, counts) in &outcome.kinds {
                let required = chaos::REQUIRED.iter().any(|k| k.name() == *kind);
                println!(
                    "  {kind:<22} ok {:>5}  failed {:>4}   outside: ok {:>5}  failed {:>4}{}",
                    counts.ok,
                    counts.failed,
                    counts.outside_ok,
                    counts.outside_failed,
                    match (required, counts.passes()) {
                        (true, true) => "",
                        (true, false) => "   TOO FEW SUCCEEDED",
                        (false, _) => "   (not required)",
                    }
                );
            }
            println!(
                "\nchaos summary: {} journeys ({} failed), {} faults injected, {} events handled, {} tickets, {} orders, {} charges, {} violations",
                outcome.kinds.values().map(|k| k.ok + k.failed).sum::<u64>(),
                outcome.journeys_failed(),
                outcome.faults.len(),
                findings.events_handled,
                findings.tickets,
                findings.orders,
                findings.charges,
                findings.violations.len(),
            );
            for violation in &findings.violations {
                println!("  VIOLATION: {violation}");
            }
            Ok(if outcome.passed() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::ClusterChaos {
            plan,
            rate,
            gap,
            throughput,
            out,
        } => {
            let faults: &[cluster::Fault] = if plan == "short" {
                &cluster::SHORT
            } else {
                &cluster::FULL
            };
            let outcome = cluster::run(&plan, faults, rate, gap, throughput).await?;
            write_json(&out, &outcome)?;
            cluster::print(&outcome);
            println!("results written to {}", out.display());
            Ok(if outcome.passed() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Throughput {
            base,
            concurrency,
            duration,
            out,
        } => {
            let base = base.unwrap_or_else(|| stack.ingress());
            let measured = cluster::throughput(&base, concurrency, duration).await?;
            println!(
                "{:.1} journeys/s ({} journeys, {} failed, {concurrency} at a time)",
                measured.per_second, measured.journeys, measured.failed
            );
            write_json(&out, &measured)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::ClusterReport {
            results,
            baseline,
            markdown,
        } => {
            report::write_cluster(&results, &baseline, &markdown)?;
            println!("report written to {}", markdown.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Check => {
            invariants::quiesce(&stack, Duration::from_secs(120)).await?;
            let findings = invariants::check(&stack, None).await?;
            println!(
                "{} checks: {} tickets, {} orders, {} charges, {} events handled, {} violations",
                invariants::Check::ALL.len(),
                findings.tickets,
                findings.orders,
                findings.charges,
                findings.events_handled,
                findings.violations.len()
            );
            for violation in &findings.violations {
                println!("  VIOLATION: {violation}");
            }
            Ok(if findings.violations.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Bench { out } => {
            let results = bench::run(&stack).await?;
            if let Some(parent) = out.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(&out, serde_json::to_string_pretty(&results)?)?;
            println!("results written to {}", out.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Report { results, markdown } => {
            let runs = results
                .iter()
                .map(|path| {
                    let text = std::fs::read_to_string(path)
                        .with_context(|| format!("reading {}", path.display()))?;
                    serde_json::from_str(&text)
                        .with_context(|| format!("parsing {}", path.display()))
                })
                .collect::<anyhow::Result<Vec<bench::Results>>>()?;
            report::write(&runs, &markdown)?;
            println!("report written to {}", markdown.display());
            Ok(ExitCode::SUCCESS)
        }
    }
}
