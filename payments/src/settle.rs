//! Paying for an order, and keeping money in line with the order's fate.
//!
//! No transaction or row lock is ever held while Stripe is called. Paying is:
//!
//! 1. **record the attempt** (status `created`) under the order's row lock, after
//!    checking the order may be paid for, and commit;
//! 2. **charge** at Stripe, with no lock held;
//! 3. **settle** under the order's lock: declined, the attempt is `failed` and the
//!    order stays payable; succeeded and the order still payable, `completed`, with
//!    `payment.created` in the outbox in the same transaction; succeeded but the order
//!    was cancelled meanwhile (or another attempt was kept first), `completed` with a
//!    refund due;
//! 4. **refund** what is due, again with no lock held, and record the refund.
//!
//! The `order.cancelled` listener takes the same lock and makes a kept charge due for
//! a refund; the [reconciler](crate::reconciler) makes the refunds that are due and
//! finishes attempts interrupted between two steps. So whichever comes first, no
//! cancelled order keeps money. Every Stripe call carries an idempotency key derived
//! from the attempt, so repeating any step (a retried request, a redelivered event,
//! the reconciler after a crash) never charges or refunds twice.

use anyhow::Context;
use bus::Tx;
use bus::append;
use common::events::{OrderStatus, PaymentCreated};
use sqlx::PgPool;
use uuid::Uuid;

use crate::charge::{Charge, ChargeStatus};
use crate::replica::OrderReplica;
use crate::stripe::{ChargeOutcome, Stripe, StripeError};

#[derive(Clone)]
pub struct Payments {
    pool: PgPool,
    stripe: Stripe,
}

/// What an attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settled {
    /// Charged and kept; `payment.created` is published.
    Paid { charge_id: Uuid },
    /// Declined by the provider (its message); the order is still payable.
    Declined { message: String },
    /// Charged, but the order could not take it, so it is refunded.
    Refunded { reason: Refusal },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The order was cancelled (expired) first.
    Cancelled,
    /// Another attempt was kept first.
    AlreadyPaid,
}

/// Why an order cannot be paid for now.
#[derive(Debug, thiserror::Error)]
pub enum PaymentError {
    #[error("no such order")]
    NoSuchOrder,
    #[error("the order is someone else's")]
    NotTheBuyer,
    #[error("the order is cancelled")]
    Cancelled,
    #[error("the order has been paid")]
    AlreadyPaid,
    #[error("the card was declined: {0}")]
    Declined(String),
    #[error(transparent)]
    Settle(#[from] SettleError),
}

/// A step that could not be completed; retrying it is safe.
#[derive(Debug, thiserror::Error)]
pub enum SettleError {
    #[error(transparent)]
    Stripe(#[from] StripeError),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<sqlx::Error> for SettleError {
    fn from(error: sqlx::Error) -> Self {
        Self::Internal(anyhow::Error::new(error).context("database query failed"))
    }
}

impl From<sqlx::Error> for PaymentError {
    fn from(error: sqlx::Error) -> Self {
        Self::Settle(error.into())
    }
}

impl Payments {
    /// `pool`: the pool of whoever uses it (HTTP handlers, or background work).
    pub fn new(pool: PgPool, stripe: Stripe) -> Self {
        // Counted from zero, so that the first charge or refund shows as an increase.
        for settled in ["paid", "declined", "refunded"] {
            metrics::counter!("charges_settled_total", "outcome" => settled).increment(0);
        }
        metrics::counter!("charges_refunded_total").increment(0);
        Self { pool, stripe }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Pays for `order_id` on behalf of `user_id` with the card token `source`;
    /// returns the charge id.
    pub async fn pay(
        &self,
        user_id: Uuid,
        order_id: Uuid,
        source: &str,
    ) -> Result<Uuid, PaymentError> {
        let charge = self.begin(user_id, order_id, source).await?;
        match self.settle(&charge).await? {
            Settled::Paid { charge_id } => Ok(charge_id),
            Settled::Declined { message } => Err(PaymentError::Declined(message)),
            Settled::Refunded {
                reason: Refusal::Cancelled,
            } => Err(PaymentError::Cancelled),
            Settled::Refunded {
                reason: Refusal::AlreadyPaid,
            } => Err(PaymentError::AlreadyPaid),
        }
    }

    /// Step 1: checks that `user_id` may pay for `order_id` now and records the
    /// attempt (or finds the one this same request recorded before).
    pub async fn begin(
        &self,
        user_id: Uuid,
        order_id: Uuid,
        source: &str,
    ) -> Result<Charge, PaymentError> {
        let mut tx = Tx::begin(&self.pool).await?;
        let order = OrderReplica::lock(&mut tx, order_id)
            .await?
            .ok_or(PaymentError::NoSuchOrder)?;
        if order.user_id != user_id {
            return Err(PaymentError::NotTheBuyer);
        }
        if order.status == OrderStatus::Cancelled {
            return Err(PaymentError::Cancelled);
        }
        if Charge::is_paid(&mut *tx, order.id).await? {
            return Err(PaymentError::AlreadyPaid);
        }
        let charge = Charge::start(&mut tx, &order, source).await?;
        tx.commit().await?;
        Ok(charge)
    }

    /// Steps 2 to 4: charges an attempt at Stripe (again, if it was interrupted: the
    /// idempotency key makes that safe), records the outcome, and refunds it if the
    /// order cannot take it.
    pub async fn settle(&self, charge: &Charge) -> Result<Settled, SettleError> {
        if charge.status != ChargeStatus::Created {
            return self.recorded(charge).await;
        }
        let outcome = self
            .stripe
            .charge(
                charge.amount_cents,
                &charge.source,
                &charge.charge_key(),
                &charge.metadata(),
            )
            .await?;

        let mut tx = Tx::begin(&self.pool).await?;
        let order = OrderReplica::lock(&mut tx, charge.order_id)
            .await?
            .context("the charged order is gone")?;
        let current = Charge::lock(&mut tx, charge.id).await?;
        if current.status != ChargeStatus::Created {
            drop(tx);
            return self.recorded(&current).await; // a concurrent retry settled it first
        }
        let settled = match outcome {
            ChargeOutcome::Declined { message } => {
                Charge::mark_failed(&mut tx, charge.id, &message).await?;
                Settled::Declined { message }
            }
            ChargeOutcome::Succeeded { stripe_id } => {
                let refusal = if order.status == OrderStatus::Cancelled {
                    Some(Refusal::Cancelled)
                } else if Charge::is_paid(&mut *tx, order.id).await? {
                    Some(Refusal::AlreadyPaid)
                } else {
                    None
                };
                Charge::mark_completed(&mut tx, charge.id, &stripe_id, refusal.is_some()).await?;
                match refusal {
                    None => {
                        let payment = PaymentCreated {
                            id: charge.id,
                            order_id: order.id,
                            stripe_id,
                        };
                        append(&mut tx, &payment).await?;
                        Settled::Paid {
                            charge_id: charge.id,
                        }
                    }
                    Some(reason) => Settled::Refunded { reason },
                }
            }
        };
        tx.commit().await?;
        metrics::counter!("charges_settled_total", "outcome" => outcome_label(&settled))
            .increment(1);

        if let Settled::Refunded { reason } = &settled {
            tracing::info!(order_id = %order.id, charge_id = %charge.id, ?reason, "charged, but the order cannot take it: refunding");
            if let Err(error) = self.refund(charge.id).await {
                // It is due; the reconciler makes it.
                tracing::warn!(charge_id = %charge.id, %error, "refund deferred to the reconciler");
            }
        }
        Ok(settled)
    }

    /// Step 4: makes the refund of a charge whose refund is due, with no lock held,
    /// then records it.
    pub async fn refund(&self, charge_id: Uuid) -> Result<(), SettleError> {
        let charge = Charge::find(&self.pool, charge_id).await?;
        if charge.stripe_refund_id.is_some() {
            return Ok(());
        }
        let stripe_id = charge
            .stripe_id
            .as_deref()
            .context("a refund is due on a charge Stripe never made")?;
        let refund_id = self.stripe.refund(stripe_id, &charge.refund_key()).await?;
        Charge::mark_refunded(&self.pool, charge.id, &refund_id).await?;
        metrics::counter!("charges_refunded_total").increment(1);
        tracing::info!(order_id = %charge.order_id, %charge_id, "refunded");
        Ok(())
    }

    /// What an already settled attempt came to.
    async fn recorded(&self, charge: &Charge) -> Result<Settled, SettleError> {
        Ok(match charge.status {
            ChargeStatus::Completed => {
                if !Charge::find(&self.pool, charge.id).await?.refund_due {
                    Settled::Paid {
                        charge_id: charge.id,
                    }
                } else {
                    let status = OrderReplica::status(&self.pool, charge.order_id).await?;
                    let reason = if status == Some(OrderStatus::Cancelled) {
                        Refusal::Cancelled
                    } else {
                        Refusal::AlreadyPaid
                    };
                    Settled::Refunded { reason }
                }
            }
            ChargeStatus::Failed | ChargeStatus::Created => Settled::Declined {
                message: charge
                    .failure_message
                    .clone()
                    .unwrap_or_else(|| "Payment failed".into()),
            },
        })
    }
}

fn outcome_label(settled: &Settled) -> &'static str {
    match settled {
        Settled::Paid { .. } => "paid",
        Settled::Declined { .. } => "declined",
        Settled::Refunded { .. } => "refunded",
    }
}
