//! Journeys under faults: while the load runs, each service is killed (SIGKILL) and
//! restarted in turn, NATS is stopped for ten seconds, PostgreSQL is restarted, and the
//! Stripe stand-in fails and hangs. Then, once everything is quiet, the invariant
//! checker reads every database.

use std::time::Duration;

use serde::Serialize;
use serde_json::json;

use crate::invariants::{self, Findings};
use crate::journeys::{self, Report};
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

#[derive(Debug, Serialize)]
pub struct Outcome {
    pub journeys: Report,
    pub faults: Vec<Fault>,
    pub findings: Findings,
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
    };
    let faults = async {
        let gap = duration / u32::try_from(PLAN.len() + 1).unwrap_or(1);
        let mut injected = Vec::new();
        for fault in PLAN {
            tokio::time::sleep(gap).await;
            inject(stack, fault).await?;
            injected.push(fault);
        }
        anyhow::Ok(injected)
    };
    let (report, faults) = tokio::join!(journeys::run(config), faults);
    let (report, faults) = (report?, faults?);
    println!("chaos: load over; waiting for the system to settle");
    // Every order open now expires within the window; the check runs once all have
    // and every event they caused has been handled.
    invariants::wait_for_open_orders(stack, Duration::from_secs(180)).await?;
    invariants::quiesce(stack, Duration::from_secs(180)).await?;
    let findings = invariants::check(stack).await?;
    Ok(Outcome {
        journeys: report,
        faults,
        findings,
    })
}
