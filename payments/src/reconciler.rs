//! Repairs what an outage left behind, so that money always ends up following the
//! orders' fate:
//!
//! - attempts interrupted between the Stripe call and the database (a crash, a lost
//!   connection): Stripe's idempotency returns what the interrupted call did, and the
//!   reconciler records it, refunding it if the order can no longer take the money;
//! - cancelled orders that still keep a charge because Stripe could not be reached
//!   when the cancellation arrived: refunded now.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::model::Charge;
use crate::settle::Payments;

/// Every `after / 2` (at least a second), settles attempts unsettled for longer than `after`.
pub async fn run(payments: Payments, after: Duration, stop: CancellationToken) {
    let period = (after / 2).max(Duration::from_secs(1));
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(period) => {}
        }
        match Charge::unsettled(payments.pool(), after.as_secs_f64()).await {
            Ok(charges) => {
                for charge in charges {
                    match payments.settle(&charge).await {
                        Ok(settled) => {
                            tracing::info!(charge_id = %charge.id, ?settled, "reconciled an interrupted charge")
                        }
                        Err(error) => {
                            tracing::warn!(charge_id = %charge.id, %error, "could not reconcile a charge yet")
                        }
                    }
                }
            }
            Err(error) => tracing::warn!(%error, "reconciler: reading unsettled charges failed"),
        }
        match Charge::unrefunded_cancelled_orders(payments.pool()).await {
            Ok(orders) => {
                for order_id in orders {
                    if let Err(error) = payments.refund_cancelled(order_id).await {
                        tracing::warn!(%order_id, %error, "could not refund a cancelled order's charge yet");
                    }
                }
            }
            Err(error) => tracing::warn!(%error, "reconciler: reading cancelled orders failed"),
        }
    }
}
