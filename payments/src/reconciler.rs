//! Makes money follow the orders' fate, whatever was interrupted:
//!
//! - refunds that are due (an order cancelled after it was paid, a charge that came
//!   back for an order that could not take it): made as soon as they are due, woken
//!   by the commit that makes them due, and retried while Stripe is unreachable;
//! - attempts interrupted between the Stripe call and the database (a crash, a lost
//!   connection), older than `CHARGE_RECONCILE_AFTER_SECONDS`: Stripe's idempotency
//!   returns what the interrupted call did, and it is settled now.
//!
//! Both read only unsettled work, through partial indexes (`charges_refund_pending`,
//! `charges_unsettled`), so a sweep costs nothing however many charges were made.

use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::charge::{Charge, REFUND_DUE};
use crate::settle::{Payments, SettleError};

/// Runs until `stop`: refunds as soon as they are due, and every `after / 2` (at least
/// a second) settles attempts unsettled for longer than `after` and retries refunds.
pub async fn run(payments: Payments, after: Duration, stop: CancellationToken) {
    let period = (after / 2).max(Duration::from_secs(1));
    let mut last_sweep: Option<Instant> = None;
    while !stop.is_cancelled() {
        let refund_due = REFUND_DUE.listen();
        make_due_refunds(&payments).await;
        if last_sweep.is_none_or(|at| at.elapsed() >= period) {
            settle_interrupted(&payments, after).await;
            last_sweep = Some(Instant::now());
        }
        tokio::select! {
            () = stop.cancelled() => {}
            () = refund_due.wait(period) => {}
        }
    }
}

/// Makes every refund that is due; stops at the first that Stripe cannot take now
/// (it is unreachable: the rest would wait just as long), to try again later.
async fn make_due_refunds(payments: &Payments) {
    loop {
        let due = match Charge::refunds_due(payments.pool()).await {
            Ok(due) => due,
            Err(error) => {
                tracing::warn!(%error, "reconciler: reading due refunds failed");
                return;
            }
        };
        let full = due.len() == 100;
        for charge_id in due {
            match payments.refund(charge_id).await {
                Ok(()) => {}
                Err(SettleError::Stripe(error)) => {
                    tracing::warn!(%charge_id, %error, "could not refund yet; retrying later");
                    return;
                }
                Err(SettleError::Internal(error)) => {
                    tracing::warn!(%charge_id, error = format!("{error:#}"), "could not refund yet");
                }
            }
        }
        if !full {
            return;
        }
    }
}

async fn settle_interrupted(payments: &Payments, after: Duration) {
    let charges = match Charge::unsettled(payments.pool(), after.as_secs_f64()).await {
        Ok(charges) => charges,
        Err(error) => {
            tracing::warn!(%error, "reconciler: reading unsettled charges failed");
            return;
        }
    };
    for charge in charges {
        match payments.settle(&charge).await {
            Ok(settled) => {
                tracing::info!(charge_id = %charge.id, ?settled, "reconciled an interrupted charge");
            }
            Err(error) => {
                tracing::warn!(charge_id = %charge.id, %error, "could not reconcile a charge yet");
            }
        }
    }
}
