//! Transactions that wake background work when they commit.

use std::ops::{Deref, DerefMut};
use std::pin::Pin;
use std::time::Duration;

use sqlx::{PgConnection, PgPool};
use tokio::sync::{Notify, futures::Notified};

/// A transaction on a pooled connection: what handlers, event handlers and the outbox
/// work in. It dereferences to the connection (`&mut **tx` runs a query in it) and, once
/// it commits, raises the [`Signal`]s its work asked for.
pub struct Tx {
    tx: sqlx::Transaction<'static, sqlx::Postgres>,
    wake: Vec<&'static Signal>,
}

impl Tx {
    pub async fn begin(pool: &PgPool) -> sqlx::Result<Self> {
        Ok(Self {
            tx: pool.begin().await?,
            wake: Vec::new(),
        })
    }

    /// Raises `signal` if, and once, this transaction commits.
    pub fn wake_on_commit(&mut self, signal: &'static Signal) {
        if !self.wake.iter().any(|s| std::ptr::eq(*s, signal)) {
            self.wake.push(signal);
        }
    }

    /// Commits, then raises the signals.
    pub async fn commit(self) -> sqlx::Result<()> {
        self.tx.commit().await?;
        for signal in self.wake {
            signal.raise();
        }
        Ok(())
    }

    /// Rolls back (as dropping it does, without waiting) and raises nothing.
    pub async fn rollback(self) -> sqlx::Result<()> {
        self.tx.rollback().await
    }
}

impl Deref for Tx {
    type Target = PgConnection;
    fn deref(&self) -> &PgConnection {
        &self.tx
    }
}

impl DerefMut for Tx {
    fn deref_mut(&mut self) -> &mut PgConnection {
        &mut self.tx
    }
}

/// Wakes a background loop of this process (the outbox relay, the expiration
/// scheduler, the refund reconciler) when a transaction with work for it commits.
///
/// It replaces `LISTEN`/`NOTIFY`, which PostgreSQL serialises: a transaction that
/// notifies holds one cluster-wide lock from before its commit record until after it
/// is flushed, so every writing request waited for the previous one's disk flush, one
/// at a time (docs/benchmarks.md). The loop a commit must wake always runs in the
/// process that commits (a service appends to its own outbox, schedules its own
/// timers), and any replica's loop can do the work, so an in-process wake-up is
/// enough; each loop still polls slowly in case a row comes from elsewhere (an
/// operator's `parked redrive`).
pub struct Signal(Notify);

impl Signal {
    pub const fn new() -> Self {
        Self(Notify::const_new())
    }

    pub(crate) fn raise(&self) {
        self.0.notify_waiters();
    }

    /// Starts listening. Call it before reading the state a raise announces: a commit in
    /// between still ends the [`Listening::wait`] that follows.
    pub fn listen(&self) -> Listening<'_> {
        let mut notified = Box::pin(self.0.notified());
        notified.as_mut().enable();
        Listening(notified)
    }
}

impl Default for Signal {
    fn default() -> Self {
        Self::new()
    }
}

/// A [`Signal`] being listened to.
pub struct Listening<'a>(Pin<Box<Notified<'a>>>);

impl Listening<'_> {
    /// Returns when the signal is raised or after `timeout`, whichever comes first.
    pub async fn wait(self, timeout: Duration) {
        let _ = tokio::time::timeout(timeout, self.0).await;
    }
}
