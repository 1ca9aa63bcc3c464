//! Realistic journeys through the ingress: browsing, signing up, selling, ordering,
//! paying (the stand-in's test cards), cancelling, and orders left to expire.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::future::join_all;
use reqwest::StatusCode;
use serde::Serialize;
use tokio::sync::Semaphore;
use uuid::Uuid;

use crate::client::{Api, when_known};
use crate::stats::{Recorder, Summary};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// The tickets page, then a ticket or two.
    Browse,
    /// A new account.
    SignUp,
    /// Sell, order, pay with a good card, see the order complete.
    Purchase,
    /// Sell, order, a declined card, then a good one.
    Declined,
    /// Sell, order, cancel.
    Cancel,
    /// Sell, order, and walk away: the order expires.
    Expire,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Browse => "browse",
            Kind::SignUp => "sign up",
            Kind::Purchase => "purchase and pay",
            Kind::Declined => "declined, then paid",
            Kind::Cancel => "order and cancel",
            Kind::Expire => "order and let expire",
        }
    }
}

/// Relative weights of the journeys.
const MIX: [(Kind, u32); 6] = [
    (Kind::Browse, 40),
    (Kind::SignUp, 5),
    (Kind::Purchase, 30),
    (Kind::Declined, 5),
    (Kind::Cancel, 10),
    (Kind::Expire, 10),
];

pub struct Config {
    pub base: String,
    /// Journeys started per second; `None`: flat out, `concurrency` at a time.
    pub rate: Option<f64>,
    pub concurrency: usize,
    pub duration: Duration,
    pub count: Option<u64>,
    /// Accounts signed up before the run and shared by its journeys.
    pub users: usize,
    /// Only this journey (flat-out throughput of one kind).
    pub only: Option<Kind>,
    /// Set to end the run before its duration is over (no new journey starts).
    pub stop: Option<Arc<AtomicBool>>,
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct Outcomes {
    pub ok: u64,
    pub failed: u64,
    pub first_error: Option<String>,
}

/// One journey: what it was, when it ran, and whether it succeeded.
#[derive(Debug, Clone, Copy)]
pub struct Attempt {
    pub kind: Kind,
    pub started: Instant,
    pub ended: Instant,
    pub ok: bool,
}

/// Every write the API acknowledged during a run (answered 201 or 204), with the state
/// it implies: what the checker expects to find afterwards, whatever failed meanwhile
/// (a database failover must lose none of them).
#[derive(Debug, Default, Clone)]
pub struct Acknowledged {
    /// Tickets listed.
    pub tickets: Vec<Uuid>,
    /// Orders placed, with the last transition acknowledged for each.
    pub orders: HashMap<Uuid, Fate>,
    /// Payments made: the payment (charge) and its order.
    pub payments: Vec<(Uuid, Uuid)>,
}

/// What was last acknowledged of an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// Placed: afterwards complete (paid by a retry) or cancelled (expired), never lost.
    Placed,
    /// Cancelled by its buyer (204): it stays cancelled.
    Cancelled,
    /// Paid (201): complete, its charge kept.
    Paid,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub seconds: f64,
    pub journeys: BTreeMap<&'static str, Outcomes>,
    pub endpoints: Vec<Summary>,
    pub journey_times: Vec<Summary>,
    /// Every journey, for placing them against the faults of a chaos run.
    #[serde(skip)]
    pub attempts: Vec<Attempt>,
    #[serde(skip)]
    pub acknowledged: Acknowledged,
}

impl Report {
    pub fn print(&self) {
        println!("{:.1} s", self.seconds);
        for (kind, outcome) in &self.journeys {
            println!(
                "  {kind:<22} ok {:>6}  failed {:>4}{}",
                outcome.ok,
                outcome.failed,
                outcome
                    .first_error
                    .as_ref()
                    .map(|e| format!("  (first: {e})"))
                    .unwrap_or_default()
            );
        }
        println!("\nendpoints");
        crate::stats::print(&self.endpoints);
        println!("\njourneys, end to end");
        crate::stats::print(&self.journey_times);
    }
}

struct Run {
    api: Api,
    users: Vec<String>,
    journey_times: Recorder,
    outcomes: Mutex<BTreeMap<&'static str, Outcomes>>,
    attempts: Mutex<Vec<Attempt>>,
    acknowledged: Mutex<Acknowledged>,
    sequence: AtomicU64,
}

pub async fn run(config: Config) -> anyhow::Result<Report> {
    // The accounts are made first; their sign-ups are not part of the run's figures.
    let users = sign_up_users(&Api::new(&config.base, Recorder::default())?, config.users).await?;
    let stats = Recorder::default();
    let run = Arc::new(Run {
        api: Api::new(&config.base, stats.clone())?,
        users,
        journey_times: Recorder::default(),
        outcomes: Mutex::default(),
        attempts: Mutex::default(),
        acknowledged: Mutex::default(),
        sequence: AtomicU64::new(0),
    });

    let started = Instant::now();
    let deadline = started + config.duration;
    let limit = config.count.unwrap_or(u64::MAX);
    let stop = config.stop.clone().unwrap_or_default();
    let going = move |run: &Run| {
        Instant::now() < deadline
            && run.sequence.load(Ordering::Relaxed) < limit
            && !stop.load(Ordering::Relaxed)
    };
    match config.rate {
        Some(rate) => {
            let slots = Arc::new(Semaphore::new(config.concurrency));
            let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / rate.max(0.001)));
            let mut tasks = Vec::new();
            while going(&run) {
                ticker.tick().await;
                let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
                    continue; // saturated: the target rate is beyond what the system serves
                };
                let run = Arc::clone(&run);
                let only = config.only;
                tasks.push(tokio::spawn(async move {
                    run.one(only).await;
                    drop(slot);
                }));
            }
            join_all(tasks).await;
        }
        None => {
            let workers = (0..config.concurrency).map(|_| {
                let run = Arc::clone(&run);
                let only = config.only;
                let going = going.clone();
                async move {
                    while going(&run) {
                        run.one(only).await;
                    }
                }
            });
            join_all(workers).await;
        }
    }
    let elapsed = started.elapsed();
    let journeys = run
        .outcomes
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    let attempts = std::mem::take(
        &mut *run
            .attempts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    );
    let acknowledged = std::mem::take(
        &mut *run
            .acknowledged
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    );
    Ok(Report {
        seconds: elapsed.as_secs_f64(),
        journeys,
        endpoints: stats.summaries(elapsed),
        journey_times: run.journey_times.summaries(elapsed),
        attempts,
        acknowledged,
    })
}

async fn sign_up_users(api: &Api, count: usize) -> anyhow::Result<Vec<String>> {
    let slots = Semaphore::new(16);
    let signups = (0..count.max(2)).map(|_| async {
        let _slot = slots.acquire().await;
        api.sign_up(&unique_email()).await
    });
    join_all(signups).await.into_iter().collect()
}

fn unique_email() -> String {
    format!("load-{}@loadgen.test", uuid::Uuid::new_v4().simple())
}

impl Run {
    fn pick(&self, n: u64) -> Kind {
        // A fixed, well-spread sequence: the mix is exact over any long run.
        let total: u32 = MIX.iter().map(|(_, w)| w).sum();
        let mut slot = u32::try_from(n.wrapping_mul(2_654_435_761) % u64::from(total)).unwrap_or(0);
        for (kind, weight) in MIX {
            if slot < weight {
                return kind;
            }
            slot -= weight;
        }
        Kind::Browse
    }

    fn acknowledge(&self, record: impl FnOnce(&mut Acknowledged)) {
        record(
            &mut self
                .acknowledged
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
    }

    fn user(&self, n: u64) -> &str {
        let index = usize::try_from(n).unwrap_or(0) % self.users.len();
        &self.users[index]
    }

    async fn one(&self, only: Option<Kind>) {
        let n = self.sequence.fetch_add(1, Ordering::Relaxed);
        let kind = only.unwrap_or_else(|| self.pick(n));
        let started = Instant::now();
        let result = self.journey(kind, n).await;
        self.journey_times
            .record(kind.name(), started.elapsed(), result.is_ok());
        self.attempts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(Attempt {
                kind,
                started,
                ended: Instant::now(),
                ok: result.is_ok(),
            });
        let mut outcomes = self
            .outcomes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let outcome = outcomes.entry(kind.name()).or_default();
        match result {
            Ok(()) => outcome.ok += 1,
            Err(error) => {
                outcome.failed += 1;
                outcome
                    .first_error
                    .get_or_insert_with(|| format!("{error:#}"));
            }
        }
    }

    async fn journey(&self, kind: Kind, n: u64) -> anyhow::Result<()> {
        let (seller, buyer) = (self.user(n), self.user(n + 1));
        match kind {
            Kind::Browse => {
                let tickets = self.api.browse().await?;
                for ticket in tickets.iter().take(2) {
                    self.api
                        .ticket(ticket["id"].as_str().unwrap_or_default())
                        .await?;
                }
            }
            Kind::SignUp => {
                self.api.sign_up(&unique_email()).await?;
            }
            Kind::Purchase => {
                let order = self.ordered(seller, buyer, n).await?;
                self.pay(buyer, &order, "tok_visa", StatusCode::CREATED)
                    .await?;
                self.until_status(buyer, &order, "complete").await?;
            }
            Kind::Declined => {
                let order = self.ordered(seller, buyer, n).await?;
                self.pay(buyer, &order, "tok_chargeDeclined", StatusCode::BAD_REQUEST)
                    .await?;
                self.pay(buyer, &order, "tok_visa", StatusCode::CREATED)
                    .await?;
                self.until_status(buyer, &order, "complete").await?;
            }
            Kind::Cancel => {
                let order = self.ordered(seller, buyer, n).await?;
                let answer = self.api.cancel(buyer, &order).await?;
                if answer.status != StatusCode::NO_CONTENT {
                    bail!("cancelling answered {}", answer.status);
                }
                if let Ok(id) = Uuid::parse_str(&order) {
                    self.acknowledge(|a| {
                        a.orders.insert(id, Fate::Cancelled);
                    });
                }
            }
            Kind::Expire => {
                self.ordered(seller, buyer, n).await?;
            }
        }
        Ok(())
    }

    /// A ticket the seller lists and the buyer orders; returns the order id.
    async fn ordered(&self, seller: &str, buyer: &str, n: u64) -> anyhow::Result<String> {
        let title = format!("Load {n}");
        let cents = 500 + (n % 10_000);
        let price = format!("{}.{:02}", cents / 100, cents % 100);
        let ticket = self.api.sell(seller, &title, &price).await?;
        let ticket_id = ticket["id"]
            .as_str()
            .context("a ticket without id")?
            .to_owned();
        if let Ok(id) = Uuid::parse_str(&ticket_id) {
            self.acknowledge(|a| a.tickets.push(id));
        }
        let answer = when_known(Duration::from_secs(20), || {
            self.api.order(buyer, &ticket_id)
        })
        .await?;
        if answer.status != StatusCode::CREATED {
            bail!("ordering answered {}: {}", answer.status, answer.body);
        }
        let order = answer.body["id"]
            .as_str()
            .map(str::to_owned)
            .context("an order without id")?;
        if let Ok(id) = Uuid::parse_str(&order) {
            self.acknowledge(|a| {
                a.orders.entry(id).or_insert(Fate::Placed);
            });
        }
        Ok(order)
    }

    async fn pay(
        &self,
        buyer: &str,
        order: &str,
        token: &str,
        expected: StatusCode,
    ) -> anyhow::Result<()> {
        let answer = when_known(Duration::from_secs(20), || {
            self.api.pay(buyer, order, token)
        })
        .await?;
        if answer.status != expected {
            bail!(
                "paying with {token} answered {}: {}",
                answer.status,
                answer.body
            );
        }
        if answer.status == StatusCode::CREATED {
            let payment = answer.body["id"]
                .as_str()
                .and_then(|id| Uuid::parse_str(id).ok());
            if let (Some(payment), Ok(order)) = (payment, Uuid::parse_str(order)) {
                self.acknowledge(|a| {
                    a.payments.push((payment, order));
                    a.orders.insert(order, Fate::Paid);
                });
            }
        }
        Ok(())
    }

    async fn until_status(&self, buyer: &str, order: &str, status: &str) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if self.api.order_status(buyer, order).await? == status {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("the order never became {status}");
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}
