//! Paying for an order, and keeping money in line with the order's fate.
//!
//! An attempt is recorded first (status `created`), then charged at Stripe with no
//! lock held, then settled under the order's row lock:
//!
//! - declined: the attempt is `failed` and the order stays payable;
//! - succeeded and the order still payable: `completed`, and `payment.created` goes
//!   to the outbox in the same transaction;
//! - succeeded but the order was cancelled meanwhile, or another attempt was kept
//!   first: refunded at once, recorded `completed` with its refund.
//!
//! The `order.cancelled` listener takes the same lock and refunds a kept charge. So
//! whichever comes first, no cancelled order keeps money. Every Stripe call carries an
//! idempotency key derived from the attempt, so repeating any step (a retried
//! request, a redelivered event, the reconciler after a crash) never charges or
//! refunds twice.

use anyhow::Context;
use common::db::Tx;
use common::events::{OrderStatus, PaymentCreated, append};
use sqlx::PgPool;
use uuid::Uuid;

use crate::model::{Charge, ChargeStatus, Order};
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
    /// Charged, but the order could not take it, so it was refunded.
    Refunded { reason: Refusal },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The order was cancelled (expired) first.
    Cancelled,
    /// Another attempt was kept first.
    AlreadyPaid,
}

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

impl From<SettleError> for common::Error {
    fn from(error: SettleError) -> Self {
        match error {
            SettleError::Stripe(StripeError::Unavailable(cause)) => {
                tracing::warn!(%cause, "payment provider unavailable");
                common::Error::BadGateway(
                    "The payment provider is unavailable; please try again".into(),
                )
            }
            SettleError::Stripe(other) => common::Error::Internal(other.into()),
            SettleError::Internal(other) => common::Error::Internal(other),
        }
    }
}

impl Payments {
    pub fn new(pool: PgPool, stripe: Stripe) -> Self {
        Self { pool, stripe }
    }

    /// Checks that `user_id` may pay for `order_id` now and records the attempt (or
    /// finds the one this same request recorded before).
    pub async fn begin(
        &self,
        user_id: Uuid,
        order_id: Uuid,
        source: &str,
    ) -> common::Result<Charge> {
        let mut tx = self.pool.begin().await?;
        let order = Order::lock(&mut tx, order_id)
            .await?
            .ok_or(common::Error::NotFound)?;
        if order.user_id != user_id {
            return Err(common::Error::NotAuthorized);
        }
        if order.status == OrderStatus::Cancelled {
            return Err(common::Error::bad_request(
                "Cannot pay for an cancelled order",
            ));
        }
        if Charge::kept(&mut *tx, order.id).await?.is_some() {
            return Err(common::Error::bad_request("Order has already been paid"));
        }
        let charge = Charge::start(&mut tx, &order, source).await?;
        tx.commit().await?;
        Ok(charge)
    }

    /// Charges an attempt at Stripe (again, if it was interrupted: the idempotency
    /// key makes that safe) and records the outcome.
    pub async fn settle(&self, charge: &Charge) -> Result<Settled, SettleError> {
        if charge.status != ChargeStatus::Created {
            return self.recorded(charge).await;
        }
        let outcome = self
            .stripe
            .charge(charge.amount_cents, &charge.source, &charge.charge_key())
            .await?;

        let mut tx = self.pool.begin().await?;
        let order = Order::lock(&mut tx, charge.order_id)
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
                self.keep_or_refund(&mut tx, &order, charge, &stripe_id)
                    .await?
            }
        };
        tx.commit().await?;
        metrics::counter!("charges_settled_total", "outcome" => outcome_label(&settled))
            .increment(1);
        Ok(settled)
    }

    async fn keep_or_refund(
        &self,
        tx: &mut Tx,
        order: &Order,
        charge: &Charge,
        stripe_id: &str,
    ) -> Result<Settled, SettleError> {
        let refusal = if order.status == OrderStatus::Cancelled {
            Some(Refusal::Cancelled)
        } else if Charge::kept(&mut **tx, order.id).await?.is_some() {
            Some(Refusal::AlreadyPaid)
        } else {
            None
        };
        match refusal {
            None => {
                Charge::mark_completed(tx, charge.id, stripe_id, None).await?;
                let payment = PaymentCreated {
                    id: charge.id,
                    order_id: order.id,
                    stripe_id: stripe_id.to_owned(),
                };
                append(tx, &payment).await?;
                Ok(Settled::Paid {
                    charge_id: charge.id,
                })
            }
            Some(reason) => {
                let refund_id = self.stripe.refund(stripe_id, &charge.refund_key()).await?;
                Charge::mark_completed(tx, charge.id, stripe_id, Some(&refund_id)).await?;
                tracing::info!(order_id = %order.id, charge_id = %charge.id, ?reason, "charge refunded: the order could not take it");
                Ok(Settled::Refunded { reason })
            }
        }
    }

    /// What an already settled attempt came to.
    async fn recorded(&self, charge: &Charge) -> Result<Settled, SettleError> {
        Ok(match (charge.status, &charge.stripe_refund_id) {
            (ChargeStatus::Completed, None) => Settled::Paid {
                charge_id: charge.id,
            },
            (ChargeStatus::Completed, Some(_)) => {
                let status: String = sqlx::query_scalar("SELECT status FROM orders WHERE id = $1")
                    .bind(charge.order_id)
                    .fetch_one(&self.pool)
                    .await?;
                let reason = if status == OrderStatus::Cancelled.as_str() {
                    Refusal::Cancelled
                } else {
                    Refusal::AlreadyPaid
                };
                Settled::Refunded { reason }
            }
            (ChargeStatus::Failed | ChargeStatus::Created, _) => Settled::Declined {
                message: charge
                    .failure_message
                    .clone()
                    .unwrap_or_else(|| "Payment failed".into()),
            },
        })
    }

    /// Refunds the kept charge of an order being cancelled, inside the caller's
    /// transaction (which holds the order's lock).
    pub async fn refund_kept(&self, tx: &mut Tx, order_id: Uuid) -> Result<(), SettleError> {
        let Some(charge) = Charge::kept(&mut **tx, order_id).await? else {
            return Ok(());
        };
        let stripe_id = charge
            .stripe_id
            .as_deref()
            .context("a completed charge without a Stripe id")?;
        let refund_id = self.stripe.refund(stripe_id, &charge.refund_key()).await?;
        Charge::mark_refunded(tx, charge.id, &refund_id).await?;
        metrics::counter!("charges_refunded_total", "reason" => "order_cancelled").increment(1);
        tracing::info!(%order_id, charge_id = %charge.id, "refunded the charge of a cancelled order");
        Ok(())
    }

    /// Refunds, under its lock, the kept charge of a cancelled order whose refund
    /// failed before.
    pub async fn refund_cancelled(&self, order_id: Uuid) -> Result<(), SettleError> {
        let mut tx = self.pool.begin().await?;
        let order = Order::lock(&mut tx, order_id)
            .await?
            .context("the order is gone")?;
        if order.status == OrderStatus::Cancelled {
            self.refund_kept(&mut tx, order_id).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

fn outcome_label(settled: &Settled) -> &'static str {
    match settled {
        Settled::Paid { .. } => "paid",
        Settled::Declined { .. } => "declined",
        Settled::Refunded { .. } => "refunded",
    }
}
