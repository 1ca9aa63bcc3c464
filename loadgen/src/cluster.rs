//! Journeys through the cluster of `make cluster` while its faults run in turn (the
//! fault library, `scripts/cluster fault`), measured, then the invariant checker
//! across every primary with what a cluster adds: no acknowledged write lost, the
//! same stream on every NATS node, every standby equal to its primary.
//!
//! Besides the journeys, three probes run throughout, so that each fault's effect
//! can be measured against it:
//!
//! - writes: every 250 ms a purchase (list a ticket, order it, pay), each step timed
//!   and attributed to its service's database; ordering waits for the ticket's event
//!   to reach orders, paying for the order's to reach payments (events flowing);
//! - the bus: every bus database's outbox is read for its oldest event (how long
//!   writes wait for the bus);
//! - readiness: the supervisor's events (`.cluster/run/events.jsonl`), for when a
//!   replica left or rejoined the ingress's rotation.
//!
//! A run passes when no invariant is violated, every kind of journey that moves money
//! succeeded outside the faults' windows, and every fault met its target (see
//! [`Measured::target`]).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::chaos::{self, KindCounts, Window};
use crate::client::{Api, when_known};
use crate::invariants::{self, Findings, Violation};
use crate::journeys::{self, Attempt, Report};
use crate::stack::Stack;
use crate::stats::Recorder;

/// One fault of a plan, as `scripts/cluster fault` takes it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "fault", rename_all = "kebab-case")]
pub enum Fault {
    /// Each replica of a service in turn, as a Deployment's rollout.
    RollingRestart { app: &'static str },
    /// The stream's leader lost, back after 10 s: SIGKILLed (a crash), or stopped
    /// gracefully (lame duck first, as a StatefulSet rollout stops it).
    NatsLeader { graceful: bool },
    /// Stop (lame duck, SIGTERM) a node following the stream; back after 10 s.
    NatsFollower,
    /// SIGKILL a container; started again a second later.
    Kill { name: &'static str },
    /// Kill a database's primary, promote its standby, rejoin the old one.
    Failover { app: &'static str },
    /// A replica cut off from both instances of its database.
    PartitionFromDatabase {
        name: &'static str,
        database: &'static str,
    },
    /// A replica cut off from every NATS node.
    PartitionFromNats { name: &'static str },
    /// A NATS node cut off from one peer (or from every other container).
    PartitionNats {
        node: &'static str,
        from: Option<&'static str>,
    },
    /// Packets dropped at random between a container and its peers.
    Lossy {
        name: &'static str,
        peers: &'static str,
        probability: f64,
    },
    /// SIGSTOP, then SIGCONT.
    Stall { name: &'static str, seconds: u32 },
}

/// How long a partition or a lossy link lasts.
const CUT_SECONDS: u32 = 20;

impl Fault {
    fn args(&self) -> Vec<String> {
        let cut = CUT_SECONDS.to_string();
        let v = |parts: &[&str]| parts.iter().map(|p| (*p).to_owned()).collect::<Vec<_>>();
        match *self {
            Fault::RollingRestart { app } => v(&["rolling-restart", app]),
            Fault::NatsLeader { graceful: false } => v(&["nats-leader"]),
            Fault::NatsLeader { graceful: true } => v(&["nats-leader", "--graceful"]),
            Fault::NatsFollower => v(&["nats-follower"]),
            Fault::Kill { name } => v(&["kill", name]),
            Fault::Failover { app } => v(&["failover", app]),
            Fault::PartitionFromDatabase { name, database } => {
                v(&["partition", name, "--from", database, "--seconds", &cut])
            }
            Fault::PartitionFromNats { name } => {
                v(&["partition", name, "--from", "nats", "--seconds", &cut])
            }
            Fault::PartitionNats { node, from } => match from {
                Some(peer) => v(&["partition", node, "--from", peer, "--seconds", &cut]),
                None => v(&["partition", node, "--seconds", &cut]),
            },
            Fault::Lossy {
                name,
                peers,
                probability,
            } => v(&[
                "lossy",
                name,
                "--from",
                peers,
                "--probability",
                &probability.to_string(),
                "--seconds",
                &cut,
            ]),
            Fault::Stall { name, seconds } => {
                v(&["stall", name, "--seconds", &seconds.to_string()])
            }
        }
    }

    pub fn label(&self) -> String {
        match *self {
            Fault::RollingRestart { app } => format!("rolling restart of {app}"),
            Fault::NatsLeader { graceful: false } => "NATS stream leader killed".to_owned(),
            Fault::NatsLeader { graceful: true } => "NATS stream leader stopped".to_owned(),
            Fault::NatsFollower => "NATS follower stopped".to_owned(),
            Fault::Kill { name } => format!("{name} killed"),
            Fault::Failover { app } => format!("{app}-db failover"),
            Fault::PartitionFromDatabase { name, database } => {
                format!("{name} partitioned from {database}")
            }
            Fault::PartitionFromNats { name } => format!("{name} partitioned from NATS"),
            Fault::PartitionNats { node, from } => match from {
                Some(peer) => format!("{node} partitioned from {peer}"),
                None => format!("{node} partitioned from all"),
            },
            Fault::Lossy {
                name,
                peers,
                probability,
            } => format!("{name}–{peers} dropping {:.0} %", probability * 100.0),
            Fault::Stall { name, seconds } => format!("{name} stalled {seconds} s"),
        }
    }

    /// How long after the fault's end its effects may still show.
    fn aftermath(&self) -> Duration {
        match self {
            Fault::Failover { .. } | Fault::Stall { .. } => Duration::from_secs(10),
            _ => Duration::from_secs(5),
        }
    }
}

/// The full plan of `make cluster-chaos`: every kind of fault, on every kind of part.
pub const FULL: [Fault; 21] = [
    Fault::RollingRestart { app: "auth" },
    Fault::RollingRestart { app: "tickets" },
    Fault::RollingRestart { app: "orders" },
    Fault::RollingRestart { app: "payments" },
    Fault::RollingRestart { app: "expiration" },
    Fault::RollingRestart { app: "client" },
    Fault::NatsLeader { graceful: true },
    Fault::NatsLeader { graceful: false },
    Fault::NatsFollower,
    Fault::Kill { name: "orders-0" },
    Fault::Kill { name: "payments-1" },
    Fault::Failover { app: "orders" },
    Fault::Failover { app: "payments" },
    Fault::Failover { app: "tickets" },
    Fault::PartitionFromDatabase {
        name: "orders-0",
        database: "orders-db",
    },
    Fault::PartitionFromNats { name: "tickets-1" },
    Fault::PartitionNats {
        node: "nats-1",
        from: Some("nats-2"),
    },
    Fault::PartitionNats {
        node: "nats-2",
        from: None,
    },
    Fault::Lossy {
        name: "nats-0",
        peers: "nats",
        probability: 0.3,
    },
    Fault::Stall {
        name: "expiration-0",
        seconds: 40,
    },
    Fault::Stall {
        name: "payments-db-1",
        seconds: 15,
    },
];

/// The shortened plan `make test` runs: one fault of each kind the targets name.
pub const SHORT: [Fault; 8] = [
    Fault::RollingRestart { app: "orders" },
    Fault::NatsLeader { graceful: true },
    Fault::NatsLeader { graceful: false },
    Fault::Failover { app: "orders" },
    Fault::PartitionFromDatabase {
        name: "tickets-0",
        database: "tickets-db",
    },
    Fault::PartitionFromNats { name: "orders-1" },
    Fault::Lossy {
        name: "nats-1",
        peers: "nats",
        probability: 0.3,
    },
    Fault::Stall {
        name: "payments-1",
        seconds: 40,
    },
];

/// One step of a probe purchase: which database it wrote to, when, and whether the
/// API acknowledged it.
#[derive(Debug, Clone, Copy)]
struct Step {
    database: &'static str,
    sent: Instant,
    answered: Instant,
    ok: bool,
}

#[derive(Default)]
struct Probes {
    steps: Mutex<Vec<Step>>,
    /// (when, database, the age of its oldest outbox event in seconds).
    outbox: Mutex<Vec<(Instant, &'static str, f64)>>,
}

fn locked<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Wall-clock seconds (what the fault library and the supervisor report) as
/// instants of this run.
#[derive(Clone, Copy)]
struct Clock {
    instant: Instant,
    epoch: f64,
}

impl Clock {
    fn now() -> Self {
        Self {
            instant: Instant::now(),
            epoch: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
        }
    }

    fn at(&self, epoch: f64) -> Instant {
        let offset = epoch - self.epoch;
        if offset >= 0.0 {
            self.instant + Duration::from_secs_f64(offset)
        } else {
            self.instant
                .checked_sub(Duration::from_secs_f64(-offset))
                .unwrap_or(self.instant)
        }
    }
}

/// What the fault library answered.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct FaultReport {
    pub at: f64,
    #[serde(flatten)]
    pub rest: BTreeMap<String, Value>,
}

impl FaultReport {
    fn time(&self, key: &str) -> Option<f64> {
        self.rest.get(key).and_then(Value::as_f64)
    }
}

async fn inject(root: &Path, fault: &Fault) -> anyhow::Result<FaultReport> {
    println!("cluster chaos: {}", fault.label());
    let output = tokio::process::Command::new(root.join("scripts/cluster"))
        .arg("fault")
        .args(fault.args())
        .output()
        .await
        .context("running scripts/cluster fault")?;
    if !output.status.success() {
        bail!(
            "scripts/cluster fault {} failed: {}",
            fault.args().join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let last = stdout
        .lines()
        .rev()
        .find(|line| line.starts_with('{'))
        .context("the fault reported nothing")?;
    serde_json::from_str(last).with_context(|| format!("reading the fault's report: {last}"))
}

/// A supervisor event: a container became ready or not, restarted, ...
#[derive(Debug, Deserialize)]
struct Event {
    t: f64,
    name: String,
    event: String,
}

fn supervisor_events(root: &Path) -> Vec<Event> {
    let dir = std::env::var("CLUSTER_DIR").map_or_else(|_| root.join(".cluster"), Into::into);
    std::fs::read_to_string(Path::new(&dir).join("run/events.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect()
}

/// What one fault did, measured.
#[derive(Debug, Clone, Serialize)]
pub struct Measured {
    pub fault: Fault,
    pub label: String,
    /// Journeys that overlapped its window, and of those the failed.
    pub journeys: u64,
    pub journeys_failed: u64,
    /// From the fault to the end of the first successful journey started after it.
    pub recovery_s: Option<f64>,
    /// Probe writes in the window that the API did not acknowledge.
    pub writes_failed: u64,
    /// Of a failover: from the promotion to the first acknowledged write to that
    /// database sent after the fault began.
    pub writes_again_s: Option<f64>,
    /// Of a NATS fault: the longest any event waited in an outbox during the window.
    pub bus_wait_max_s: Option<f64>,
    /// Of a NATS fault: the longest a probe's order or payment waited for the event
    /// before it (the ticket reaching orders, the order reaching payments), end to end,
    /// counted from the fault, or from the election for a killed leader.
    pub events_flow_s: Option<f64>,
    /// Of a NATS leader lost: from the fault until every group it led (the stream,
    /// consumers) had a leader again, as a survivor saw it.
    pub elected_s: Option<f64>,
    /// Of a replica's partition: from the fault until it left the rotation (and
    /// whether it ever did), and the readiness probe's budget for that.
    pub left_rotation_s: Option<f64>,
    pub readiness_budget_s: Option<f64>,
    /// The target this fault must meet, and whether it did.
    pub target: Option<String>,
    pub met: bool,
    pub report: FaultReport,
}

/// The outcome of a run.
#[derive(Debug, Serialize)]
pub struct Outcome {
    pub plan: String,
    /// Journeys started per second during the faults.
    pub rate: f64,
    pub journeys: Report,
    pub kinds: BTreeMap<&'static str, KindCounts>,
    pub faults: Vec<Measured>,
    pub findings: Findings,
    pub cluster_violations: Vec<Violation>,
    /// Closed-loop journeys per second before the faults, if measured.
    pub throughput: Option<Throughput>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Throughput {
    pub concurrency: usize,
    pub seconds: f64,
    pub journeys: u64,
    pub failed: u64,
    pub per_second: f64,
}

impl Throughput {
    pub fn of(report: &Report, concurrency: usize) -> Self {
        let journeys = report.journeys.values().map(|o| o.ok + o.failed).sum();
        let failed = report.journeys.values().map(|o| o.failed).sum();
        #[allow(clippy::cast_precision_loss)]
        let per_second =
            report.journeys.values().map(|o| o.ok).sum::<u64>() as f64 / report.seconds.max(0.001);
        Self {
            concurrency,
            seconds: report.seconds,
            journeys,
            failed,
            per_second,
        }
    }
}

impl Outcome {
    pub fn passed(&self) -> bool {
        self.findings.violations.is_empty()
            && self.cluster_violations.is_empty()
            && self.faults.iter().all(|f| f.met)
            && chaos::REQUIRED
                .iter()
                .all(|kind| self.kinds.get(kind.name()).is_some_and(KindCounts::passes))
    }
}

/// Closed-loop journeys for `seconds` at `concurrency`: the throughput of `base`.
pub async fn throughput(
    base: &str,
    concurrency: usize,
    duration: Duration,
) -> anyhow::Result<Throughput> {
    let report = journeys::run(journeys::Config {
        base: base.to_owned(),
        rate: None,
        concurrency,
        duration,
        count: None,
        users: 20,
        only: None,
        stop: None,
    })
    .await?;
    Ok(Throughput::of(&report, concurrency))
}

/// Probe purchases: every 250 ms, list a ticket, order it and pay, each step timed.
async fn write_probe(
    base: String,
    probes: Arc<Probes>,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<()> {
    let api = Api::new(&base, Recorder::default())?;
    let seller = api
        .sign_up(&format!("probe-{}@loadgen.test", Uuid::new_v4().simple()))
        .await?;
    let buyer = api
        .sign_up(&format!("probe-{}@loadgen.test", Uuid::new_v4().simple()))
        .await?;
    let mut ticker = tokio::time::interval(Duration::from_millis(250));
    let slots = Arc::new(tokio::sync::Semaphore::new(8));
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        ticker.tick().await;
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            continue;
        };
        n += 1;
        let (api, probes, seller, buyer) = (
            api.clone(),
            Arc::clone(&probes),
            seller.clone(),
            buyer.clone(),
        );
        tokio::spawn(async move {
            probe_purchase(&api, &probes, &seller, &buyer, n).await;
            drop(slot);
        });
    }
    Ok(())
}

async fn probe_purchase(api: &Api, probes: &Probes, seller: &str, buyer: &str, n: u64) {
    let step = |database, sent: Instant, ok| {
        locked(&probes.steps).push(Step {
            database,
            sent,
            answered: Instant::now(),
            ok,
        });
    };
    let sent = Instant::now();
    let listed = api.sell(seller, &format!("Probe {n}"), "1.00").await;
    let Some(ticket) = listed
        .as_ref()
        .ok()
        .and_then(|t| t["id"].as_str())
        .and_then(|id| Uuid::parse_str(id).ok())
    else {
        step("tickets", sent, false);
        return;
    };
    step("tickets", sent, true);
    let sent = Instant::now();
    let ticket = ticket.to_string();
    let ordered = when_known(Duration::from_secs(20), || api.order(buyer, &ticket)).await;
    let Some(order) = ordered
        .ok()
        .filter(|a| a.status == reqwest::StatusCode::CREATED)
        .and_then(|a| a.body["id"].as_str().map(str::to_owned))
    else {
        step("orders", sent, false);
        return;
    };
    step("orders", sent, true);
    let sent = Instant::now();
    let paid = when_known(Duration::from_secs(20), || {
        api.pay(buyer, &order, "tok_visa")
    })
    .await;
    step(
        "payments",
        sent,
        paid.is_ok_and(|a| a.status == reqwest::StatusCode::CREATED),
    );
}

/// Every 250 ms, the age of the oldest event in each bus database's outbox.
async fn outbox_probe(stack: Arc<Mutex<Stack>>, probes: Arc<Probes>, stop: Arc<AtomicBool>) {
    let mut pools: HashMap<&'static str, (String, sqlx::PgPool)> = HashMap::new();
    while !stop.load(Ordering::Relaxed) {
        for name in crate::stack::ON_THE_BUS {
            let url = locked(&stack).database(name);
            if pools.get(name).is_none_or(|(known, _)| *known != url) {
                let pool = sqlx::postgres::PgPoolOptions::new()
                    .max_connections(1)
                    .acquire_timeout(Duration::from_secs(1))
                    .connect_lazy(&url);
                if let Ok(pool) = pool {
                    pools.insert(name, (url, pool));
                }
            }
            let Some((_, pool)) = pools.get(name) else {
                continue;
            };
            let age = tokio::time::timeout(
                Duration::from_secs(1),
                sqlx::query_scalar::<_, f64>(
                    "SELECT coalesce(extract(epoch FROM now() - min(created_at))::float8, 0) FROM outbox",
                )
                .fetch_one(pool),
            )
            .await;
            if let Ok(Ok(age)) = age {
                locked(&probes.outbox).push((Instant::now(), name, age));
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Runs the journeys at `rate` while the faults of `plan` run one after another,
/// `gap` apart, quiet at both ends; heals the cluster, waits for quiet, checks.
pub async fn run(
    plan_name: &str,
    plan: &[Fault],
    rate: f64,
    gap: Duration,
    throughput_for: Option<Duration>,
) -> anyhow::Result<Outcome> {
    let stack = Stack::cluster()?;
    let root = stack.root().to_path_buf();
    let throughput = match throughput_for {
        Some(duration) => {
            println!("cluster chaos: throughput, closed loop, 32 at a time, {duration:?}");
            let measured = throughput(&stack.ingress(), 32, duration).await?;
            println!("cluster chaos: {:.1} journeys/s", measured.per_second);
            Some(measured)
        }
        None => None,
    };

    let stop = Arc::new(AtomicBool::new(false));
    let probes = Arc::new(Probes::default());
    let shared = Arc::new(Mutex::new(stack.clone()));
    let background = vec![
        tokio::spawn(write_probe(
            stack.ingress(),
            Arc::clone(&probes),
            Arc::clone(&stop),
        )),
        tokio::spawn({
            let (shared, probes, stop) =
                (Arc::clone(&shared), Arc::clone(&probes), Arc::clone(&stop));
            async move {
                outbox_probe(shared, probes, stop).await;
                Ok(())
            }
        }),
    ];
    let journeys = journeys::run(journeys::Config {
        base: stack.ingress(),
        rate: Some(rate),
        concurrency: 64,
        duration: Duration::from_secs(24 * 3600),
        count: None,
        users: 20,
        only: None,
        stop: Some(Arc::clone(&stop)),
    });
    let quiet = chaos::seconds("EXPIRATION_WINDOW_SECONDS", 15) + Duration::from_secs(10);
    let clock = Clock::now();
    let faults = async {
        tokio::time::sleep(quiet).await;
        let mut done = Vec::new();
        for fault in plan {
            let report = inject(&root, fault).await;
            let report = match report {
                Ok(report) => report,
                Err(error) => {
                    stop.store(true, Ordering::Relaxed);
                    return Err(error);
                }
            };
            // A failover moved a primary: the outbox probe follows it.
            if matches!(fault, Fault::Failover { .. })
                && let Ok(Ok(fresh)) = tokio::task::spawn_blocking(Stack::cluster).await
            {
                *locked(&shared) = fresh;
            }
            done.push((*fault, report, Instant::now()));
            tokio::time::sleep(gap).await;
        }
        tokio::time::sleep(quiet).await;
        stop.store(true, Ordering::Relaxed);
        anyhow::Ok(done)
    };
    let (report, done) = tokio::join!(journeys, faults);
    stop.store(true, Ordering::Relaxed);
    let (report, done) = (report?, done?);
    for task in background {
        task.abort();
    }

    println!("cluster chaos: load over; healing, then waiting for quiet");
    heal(&root).await?;
    let stack = Stack::cluster()?;
    invariants::wait_for_open_orders(&stack, Duration::from_secs(180)).await?;
    invariants::quiesce(&stack, Duration::from_secs(180)).await?;
    let findings = invariants::check(&stack, Some(&report.acknowledged)).await?;
    let endpoints = stack.cluster.clone().context("the cluster's endpoints")?;
    let cluster_violations = invariants::check_cluster(&endpoints).await?;

    let events = supervisor_events(&root);
    let windows: Vec<Window> = done
        .iter()
        .map(|(_, report, ended)| Window {
            from: clock.at(report.at),
            until: *ended,
        })
        .collect();
    let faults = done
        .iter()
        .zip(&windows)
        .map(|((fault, fault_report, ended), window)| {
            measure(
                fault,
                fault_report,
                *ended,
                window,
                &report.attempts,
                &probes,
                &events,
                &clock,
            )
        })
        .collect();
    let kinds = chaos::counts(&report.attempts, &windows_with_aftermath(&done, &windows));
    Ok(Outcome {
        plan: plan_name.to_owned(),
        rate,
        journeys: report,
        kinds,
        faults,
        findings,
        cluster_violations,
        throughput,
    })
}

fn windows_with_aftermath(
    done: &[(Fault, FaultReport, Instant)],
    windows: &[Window],
) -> Vec<Window> {
    done.iter()
        .zip(windows)
        .map(|((fault, _, _), w)| Window {
            from: w.from,
            until: w.until + fault.aftermath(),
        })
        .collect()
}

async fn heal(root: &Path) -> anyhow::Result<()> {
    let status = tokio::process::Command::new(root.join("scripts/cluster"))
        .args(["fault", "heal"])
        .stdout(std::process::Stdio::null())
        .status()
        .await?;
    if !status.success() {
        bail!("scripts/cluster fault heal failed");
    }
    let status = tokio::process::Command::new(root.join("scripts/cluster"))
        .arg("wait-ready")
        .status()
        .await?;
    if !status.success() {
        bail!("the cluster is not ready again after the faults");
    }
    Ok(())
}

fn secs(from: Instant, to: Instant) -> f64 {
    to.saturating_duration_since(from).as_secs_f64()
}

#[allow(clippy::too_many_arguments)]
fn measure(
    fault: &Fault,
    report: &FaultReport,
    ended: Instant,
    window: &Window,
    attempts: &[Attempt],
    probes: &Probes,
    events: &[Event],
    clock: &Clock,
) -> Measured {
    let (from, until) = (window.from, ended + fault.aftermath());
    let overlapping: Vec<&Attempt> = attempts
        .iter()
        .filter(|a| a.started < until && a.ended > from)
        .collect();
    let recovery_s = attempts
        .iter()
        .filter(|a| a.ok && a.started >= from)
        .map(|a| a.ended)
        .min()
        .map(|t| secs(from, t));
    let steps = locked(&probes.steps).clone();
    let writes_failed = steps
        .iter()
        .filter(|s| !s.ok && s.sent < until && s.answered > from)
        .count() as u64;
    let mut measured = Measured {
        fault: *fault,
        label: fault.label(),
        journeys: overlapping.len() as u64,
        journeys_failed: overlapping.iter().filter(|a| !a.ok).count() as u64,
        recovery_s,
        writes_failed,
        writes_again_s: None,
        bus_wait_max_s: None,
        events_flow_s: None,
        elected_s: None,
        left_rotation_s: None,
        readiness_budget_s: None,
        target: None,
        met: true,
        report: report.clone(),
    };
    match *fault {
        Fault::RollingRestart { .. } => {
            measured.target = Some("no journey fails".to_owned());
            measured.met = measured.journeys_failed == 0;
        }
        Fault::NatsLeader { .. } | Fault::NatsFollower => {
            let outbox = locked(&probes.outbox);
            measured.bus_wait_max_s = outbox
                .iter()
                .filter(|(t, _, _)| *t >= from && *t <= until)
                .map(|(_, _, age)| *age)
                .reduce(f64::max);
            let elected = report.time("elected").map(|t| clock.at(t));
            measured.elected_s = elected.map(|t| secs(from, t));
            // A killed leader's followers wait out Raft's election timeout (4-9 s in
            // nats-server, not configurable) before they elect: the wait is counted
            // from the election. A graceful stop hands the leaderships over at once.
            let killed = matches!(fault, Fault::NatsLeader { graceful: false });
            let reference = if killed { elected } else { Some(from) };
            measured.events_flow_s = reference.and_then(|reference| {
                steps
                    .iter()
                    .filter(|s| {
                        s.ok && s.database != "tickets" && s.sent < until && s.answered > from
                    })
                    .map(|s| secs(s.sent.max(reference), s.answered))
                    .reduce(f64::max)
            });
            measured.target = Some(if killed {
                "no write refused; events flow again within 5 s of the election".to_owned()
            } else {
                "no write refused; events flow again within 5 s".to_owned()
            });
            measured.met =
                measured.writes_failed == 0 && measured.events_flow_s.is_some_and(|s| s <= 5.0);
        }
        Fault::Failover { app } => {
            let promoted = report.time("promoted").map(|t| clock.at(t)).unwrap_or(from);
            measured.writes_again_s = steps
                .iter()
                .filter(|s| s.database == app && s.ok && s.sent >= from && s.answered >= promoted)
                .map(|s| s.answered)
                .min()
                .map(|t| secs(promoted, t));
            measured.target = Some("writes succeed again within 10 s of the promotion".to_owned());
            measured.met = measured.writes_again_s.is_some_and(|s| s <= 10.0);
        }
        Fault::PartitionFromDatabase { name, .. } => {
            // Out of the rotation: not ready, or restarted (a liveness failure takes it
            // out as well).
            let out = ["not-ready", "liveness-failed", "restarting"];
            let left = events
                .iter()
                .filter(|e| {
                    e.name == name && out.contains(&e.event.as_str()) && clock.at(e.t) >= from
                })
                .map(|e| clock.at(e.t))
                .min();
            measured.left_rotation_s = left.map(|t| secs(from, t));
            measured.readiness_budget_s = report.rest.get("readiness").and_then(|r| {
                Some(
                    r["period"].as_f64()? * r["failure_threshold"].as_f64()?
                        + r["timeout"].as_f64()?,
                )
            });
            measured.target = Some("leaves the rotation within its readiness period".to_owned());
            measured.met = match (measured.left_rotation_s, measured.readiness_budget_s) {
                (Some(left), Some(budget)) => left <= budget + 1.0,
                _ => false,
            };
        }
        Fault::PartitionFromNats { name } => {
            let left = events.iter().any(|e| {
                e.name == name
                    && e.event == "not-ready"
                    && clock.at(e.t) >= from
                    && clock.at(e.t) <= until
            });
            measured.target = Some("keeps serving: stays in the rotation".to_owned());
            measured.met = !left;
        }
        _ => {}
    }
    measured
}

/// The per-fault figures of a run's results (its JSON), as rows of text.
pub fn fault_rows(results: &Value) -> Vec<[String; 9]> {
    let seconds = |v: &Value| {
        v.as_f64()
            .map_or_else(|| "–".to_owned(), |s| format!("{s:.1} s"))
    };
    results["faults"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|f| {
            let rotation = match (
                f["left_rotation_s"].as_f64(),
                f["readiness_budget_s"].as_f64(),
            ) {
                (Some(left), Some(budget)) => format!("{left:.1} s (budget {budget:.0} s)"),
                (None, Some(budget)) => format!("never (budget {budget:.0} s)"),
                _ => "–".to_owned(),
            };
            [
                f["label"].as_str().unwrap_or_default().to_owned(),
                format!(
                    "{} of {}",
                    f["journeys_failed"].as_u64().unwrap_or_default(),
                    f["journeys"].as_u64().unwrap_or_default()
                ),
                seconds(&f["recovery_s"]),
                f["writes_failed"].as_u64().unwrap_or_default().to_string(),
                seconds(&f["writes_again_s"]),
                seconds(&f["bus_wait_max_s"]),
                match f["elected_s"].as_f64() {
                    Some(elected) => format!(
                        "{} (leaders elected after {elected:.1} s)",
                        seconds(&f["events_flow_s"])
                    ),
                    None => seconds(&f["events_flow_s"]),
                },
                rotation,
                match (f["target"].as_str(), f["met"].as_bool()) {
                    (Some(target), Some(true)) => format!("met: {target}"),
                    (Some(target), _) => format!("MISSED: {target}"),
                    (None, _) => "–".to_owned(),
                },
            ]
        })
        .collect()
}

pub const FAULT_COLUMNS: [&str; 9] = [
    "fault",
    "journeys failed",
    "first success after",
    "writes failed",
    "writes again after promotion",
    "longest wait for the bus",
    "longest wait for an event",
    "left the rotation after",
    "target",
];

pub fn print(outcome: &Outcome) {
    let results = serde_json::to_value(outcome).unwrap_or_default();
    println!("\nfaults ({} plan)", outcome.plan);
    for row in fault_rows(&results) {
        println!(
            "  {:<34} journeys failed {:<10} first ok after {:<8} writes failed {:<3} writes again {:<8} bus wait {:<8} events flow {:<8} rotation {:<22} {}",
            row[0], row[1], row[2], row[3], row[4], row[5], row[6], row[7], row[8]
        );
    }
    println!("\njourneys by kind (outside the faults' windows):");
    for (kind, counts) in &outcome.kinds {
        println!(
            "  {kind:<22} ok {:>5}  failed {:>4}   outside: ok {:>5}  failed {:>4}",
            counts.ok, counts.failed, counts.outside_ok, counts.outside_failed
        );
    }
    if let Some(throughput) = &outcome.throughput {
        println!(
            "\nthroughput before the faults: {:.1} journeys/s ({} at a time)",
            throughput.per_second, throughput.concurrency
        );
    }
    let findings = &outcome.findings;
    println!(
        "\ncluster chaos summary: {} journeys ({} failed), {} faults ({} missed their target), {} events handled, {} tickets, {} orders, {} charges, {} violations",
        outcome.kinds.values().map(|k| k.ok + k.failed).sum::<u64>(),
        outcome.kinds.values().map(|k| k.failed).sum::<u64>(),
        outcome.faults.len(),
        outcome.faults.iter().filter(|f| !f.met).count(),
        findings.events_handled,
        findings.tickets,
        findings.orders,
        findings.charges,
        findings.violations.len() + outcome.cluster_violations.len(),
    );
    for violation in findings
        .violations
        .iter()
        .chain(&outcome.cluster_violations)
    {
        println!("  VIOLATION: {violation}");
    }
    for kind in chaos::REQUIRED {
        if !outcome
            .kinds
            .get(kind.name())
            .is_some_and(KindCounts::passes)
        {
            println!("  TOO FEW SUCCEEDED outside the faults: {}", kind.name());
        }
    }
}
