//! Journeys under faults: while the load runs, each service is killed (SIGKILL) and
//! restarted in turn, NATS is stopped for ten seconds, PostgreSQL is restarted, and the
//! Stripe stand-in fails and hangs. Then, once everything is quiet, the invariant
//! checker reads every database.
//!
//! The faults come between a quiet start and a quiet end, each as long as an order
//! takes to expire, so that every kind of journey also runs with nothing broken. A run
//! passes when no invariant is violated *and* every kind of journey that moves money
//! or an order (paid, declined then paid, cancelled, left to expire) completed, outside
//! the faults' windows, at least [`MIN_OUTSIDE`] times and [`MIN_SHARE`] of the times it
//! was tried: a stack whose payments answered 502 throughout would pass the invariants
//! (there would be no money to get wrong), not this.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::json;

use crate::invariants::{self, Findings};
use crate::journeys::{self, Attempt, Kind, Report};
use crate::stack::Stack;

#[derive(Debug, Clone, Copy, Serialize)]
#[serde(tag = "fault", content = "target", rename_all = "snake_case")]
pub enum Fault {
    Kill(&'static str),
    NatsOutage,
    RestartPostgres,
    StripeFails,
    StripeHangs,
}

pub const PLAN: [Fault; 10] = [
    Fault::Kill("auth"),
    Fault::Kill("tickets"),
    Fault::NatsOutage,
    Fault::Kill("orders"),
    Fault::StripeFails,
    Fault::Kill("payments"),
    Fault::RestartPostgres,
    Fault::Kill("expiration"),
    Fault::StripeHangs,
    Fault::Kill("client"),
];

/// The journeys each run must see succeed with nothing broken.
pub const REQUIRED: [Kind; 4] = [Kind::Purchase, Kind::Declined, Kind::Cancel, Kind::Expire];
/// How many of each must have run (and succeeded, in the share below) outside faults.
pub const MIN_OUTSIDE: u64 = 3;
/// The share of those that must have succeeded.
pub const MIN_SHARE: f64 = 0.9;

/// How a kind of journey fared.
#[derive(Debug, Default, Clone, Copy, Serialize)]
pub struct KindCounts {
    pub ok: u64,
    pub failed: u64,
    /// Of those, the journeys that overlapped no fault's window.
    pub outside_ok: u64,
    pub outside_failed: u64,
}

impl KindCounts {
    /// Enough succeeded outside the faults.
    pub fn passes(&self) -> bool {
        let outside = self.outside_ok + self.outside_failed;
        #[allow(clippy::cast_precision_loss)]
        let share = if outside == 0 {
            0.0
        } else {
            self.outside_ok as f64 / outside as f64
        };
        self.outside_ok >= MIN_OUTSIDE && share >= MIN_SHARE
    }
}

/// When a fault was in force, and a little after (services reconnect, retries land).
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub from: Instant,
    pub until: Instant,
}

#[derive(Debug, Serialize)]
pub struct Outcome {
    pub journeys: Report,
    pub faults: Vec<Fault>,
    pub findings: Findings,
    pub kinds: BTreeMap<&'static str, KindCounts>,
}

impl Outcome {
    /// No violation, and every required journey fared well enough outside the faults.
    pub fn passed(&self) -> bool {
        self.findings.violations.is_empty()
            && REQUIRED
                .iter()
                .all(|kind| self.kinds.get(kind.name()).is_some_and(KindCounts::passes))
    }

    pub fn journeys_failed(&self) -> u64 {
        self.kinds.values().map(|k| k.failed).sum()
    }
}

/// Per kind of journey: how many succeeded and failed, in all and outside `windows`.
pub fn counts(attempts: &[Attempt], windows: &[Window]) -> BTreeMap<&'static str, KindCounts> {
    let mut kinds: BTreeMap<&'static str, KindCounts> = BTreeMap::new();
    for attempt in attempts {
        let during = windows
            .iter()
            .any(|w| attempt.started < w.until && attempt.ended > w.from);
        let counts = kinds.entry(attempt.kind.name()).or_default();
        match (attempt.ok, during) {
            (true, false) => {
                counts.ok += 1;
                counts.outside_ok += 1;
            }
            (true, true) => counts.ok += 1,
            (false, false) => {
                counts.failed += 1;
                counts.outside_failed += 1;
            }
            (false, true) => counts.failed += 1,
        }
    }
    kinds
}

/// Seconds from an environment variable the chaos scripts set, or a default.
pub(crate) fn seconds(name: &str, default: u64) -> Duration {
    Duration::from_secs(
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default),
    )
}

/// How long after a fault ends its effects may still show: retries, reconnections, the
/// requests a hanging Stripe held (each for the payments service's Stripe timeout).
fn aftermath(fault: Fault) -> Duration {
    let settle = Duration::from_secs(3);
    match fault {
        Fault::StripeHangs => settle + seconds("STRIPE_TIMEOUT_SECONDS", 15) * 3,
        Fault::StripeFails => settle + Duration::from_secs(5),
        _ => settle,
    }
}

async fn inject(stack: &Stack, fault: Fault) -> anyhow::Result<()> {
    println!("chaos: {fault:?}");
    let standin_fault = |mode: &str, times: u32| {
        let url = format!("{}/__control/fault", stack.standin());
        let body = json!({"mode": mode, "times": times});
        async move { reqwest::Client::new().post(url).json(&body).send().await }
    };
    match fault {
        Fault::Kill(service) => {
            stack.script(&["kill", service])?;
            tokio::time::sleep(Duration::from_secs(1)).await;
            stack.script(&["start", service])?;
        }
        Fault::NatsOutage => {
            stack.script(&["stop", "nats"])?;
            tokio::time::sleep(Duration::from_secs(10)).await;
            stack.script(&["start", "nats"])?;
        }
        Fault::RestartPostgres => stack.script(&["restart", "postgres"])?,
        Fault::StripeFails => {
            standin_fault("fail", 20).await?;
        }
        Fault::StripeHangs => {
            standin_fault("hang", 3).await?;
        }
    }
    Ok(())
}

/// Runs the journeys for `duration` while the faults of [`PLAN`] are injected one
/// after another, waits for quiet, and checks the invariants.
pub async fn run(stack: &Stack, duration: Duration, rate: f64) -> anyhow::Result<Outcome> {
    let config = journeys::Config {
        base: stack.ingress(),
        rate: Some(rate),
        concurrency: 64,
        duration,
        count: None,
        users: 20,
        only: None,
        stop: None,
    };
    // Quiet at both ends, each long enough for an order left alone to expire.
    let quiet =
        (seconds("EXPIRATION_WINDOW_SECONDS", 15) + Duration::from_secs(10)).min(duration / 3);
    let faults = async {
        tokio::time::sleep(quiet).await;
        let gap = duration.saturating_sub(quiet * 2) / u32::try_from(PLAN.len()).unwrap_or(1);
        let mut windows = Vec::new();
        for fault in PLAN {
            let from = Instant::now();
            inject(stack, fault).await?;
            windows.push((
                fault,
                Window {
                    from,
                    until: Instant::now() + aftermath(fault),
                },
            ));
            tokio::time::sleep(gap.saturating_sub(from.elapsed())).await;
        }
        anyhow::Ok(windows)
    };
    let (report, windows) = tokio::join!(journeys::run(config), faults);
    let (report, windows) = (report?, windows?);
    let spans: Vec<Window> = windows.iter().map(|(_, w)| *w).collect();
    let kinds = counts(&report.attempts, &spans);
    println!("chaos: load over; waiting for the system to settle");
    // Every order open now expires within the window; the check runs once all have
    // and every event they caused has been handled.
    invariants::wait_for_open_orders(stack, Duration::from_secs(180)).await?;
    invariants::quiesce(stack, Duration::from_secs(180)).await?;
    let findings = invariants::check(stack, Some(&report.acknowledged)).await?;
    Ok(Outcome {
        journeys: report,
        faults: windows.iter().map(|(fault, _)| *fault).collect(),
        findings,
        kinds,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attempt(kind: Kind, start: Instant, from: u64, to: u64, ok: bool) -> Attempt {
        Attempt {
            kind,
            started: start + Duration::from_secs(from),
            ended: start + Duration::from_secs(to),
            ok,
        }
    }

    #[test]
    fn only_journeys_clear_of_every_fault_count_as_outside() {
        let start = Instant::now();
        let window = Window {
            from: start + Duration::from_secs(10),
            until: start + Duration::from_secs(20),
        };
        let attempts = [
            attempt(Kind::Purchase, start, 0, 5, true),
            attempt(Kind::Purchase, start, 5, 12, false),
            attempt(Kind::Purchase, start, 15, 25, true),
            attempt(Kind::Purchase, start, 21, 30, false),
        ];
        let kinds = counts(&attempts, &[window]);
        let purchase = kinds[Kind::Purchase.name()];
        assert_eq!((purchase.ok, purchase.failed), (2, 2));
        assert_eq!((purchase.outside_ok, purchase.outside_failed), (1, 1));
    }

    #[test]
    fn a_kind_passes_only_with_enough_successes_outside_the_faults() {
        let counts = |outside_ok, outside_failed| KindCounts {
            ok: outside_ok,
            failed: outside_failed,
            outside_ok,
            outside_failed,
        };
        assert!(counts(9, 1).passes());
        assert!(!counts(8, 2).passes(), "80 % is not enough");
        assert!(!counts(2, 0).passes(), "too few to tell");
        assert!(
            !KindCounts::default().passes(),
            "a kind that never ran fails the run"
        );
    }
}
