//! Background work that cannot die silently.
//!
//! Every long-running loop of a service (the outbox relay, each event consumer, the
//! timers) runs under [`Workers::supervise`]: if it panics, or returns before it was
//! told to stop, the panic is logged, `worker_restarts_total{worker}` goes up and the
//! loop is started again after a growing pause (1 s doubling to 30 s). A worker that
//! keeps failing, three times in a row without a minute of good running in between,
//! is *crash-looping*: `GET /healthz` then answers 503 naming it, so that an
//! orchestrator replaces the process, and `worker_up{worker}` is 0.

use std::any::Any;
use std::collections::BTreeMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt as _;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;

use crate::retry::Backoff;

/// Pauses before a failed worker is started again.
const RESTART: Backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
/// Consecutive failures after which a worker counts as crash-looping.
const CRASH_LOOP: u32 = 3;
/// A worker that has run this long since its last failure is healthy again.
const GOOD_RUN: Duration = Duration::from_secs(60);

/// What `/healthz` reads: the state of every supervised worker of the process.
#[derive(Clone, Default)]
pub struct Health {
    workers: Arc<Mutex<BTreeMap<String, WorkerState>>>,
}

#[derive(Debug, Clone, Copy)]
struct WorkerState {
    failures_in_a_row: u32,
    running_since: Option<Instant>,
}

impl Health {
    /// The workers that are crash-looping (empty when all is well).
    pub fn failing(&self) -> Vec<String> {
        let workers = self.lock();
        workers
            .iter()
            .filter(|(_, state)| state.is_failing())
            .map(|(name, _)| name.clone())
            .collect()
    }

    fn update(&self, worker: &str, change: impl FnOnce(&mut WorkerState)) {
        let mut workers = self.lock();
        let state = workers.entry(worker.to_owned()).or_insert(WorkerState {
            failures_in_a_row: 0,
            running_since: None,
        });
        change(state);
        let up = if state.is_failing() { 0.0 } else { 1.0 };
        metrics::gauge!("worker_up", "worker" => worker.to_owned()).set(up);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, WorkerState>> {
        // A panic while holding this lock cannot leave the map inconsistent.
        self.workers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl WorkerState {
    fn is_failing(&self) -> bool {
        let recovered = self
            .running_since
            .is_some_and(|since| since.elapsed() >= GOOD_RUN);
        self.failures_in_a_row >= CRASH_LOOP && !recovered
    }
}

/// The supervised background work of a service.
#[derive(Clone)]
pub struct Workers {
    service: &'static str,
    tasks: TaskTracker,
    health: Health,
}

impl Workers {
    pub fn new(service: &'static str, health: Health) -> Self {
        Self {
            service,
            tasks: TaskTracker::new(),
            health,
        }
    }

    pub fn health(&self) -> &Health {
        &self.health
    }

    /// The service they work for.
    pub fn service(&self) -> &'static str {
        self.service
    }

    /// Runs `work(stop)` until `stop` is cancelled, restarting it whenever it panics
    /// or returns early.
    pub fn supervise<F, Fut>(&self, name: impl Into<String>, stop: CancellationToken, work: F)
    where
        F: Fn(CancellationToken) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let name = name.into();
        let health = self.health.clone();
        let span = tracing::info_span!("worker", service = self.service, worker = %name);
        self.tasks
            .spawn(supervise(name, health, stop, work).instrument(span));
    }

    /// Waits until every worker has stopped (after their `stop` tokens were cancelled).
    pub async fn wait(&self) {
        self.tasks.close();
        self.tasks.wait().await;
    }
}

async fn supervise<F, Fut>(name: String, health: Health, stop: CancellationToken, work: F)
where
    F: Fn(CancellationToken) -> Fut,
    Fut: Future<Output = ()>,
{
    loop {
        health.update(&name, |state| state.running_since = Some(Instant::now()));
        let outcome = AssertUnwindSafe(work(stop.clone())).catch_unwind().await;
        if stop.is_cancelled() && outcome.is_ok() {
            return;
        }
        let failure = match outcome {
            Ok(()) => "returned before it was told to stop".to_owned(),
            Err(panic) => format!("panicked: {}", panic_message(panic.as_ref())),
        };
        let mut failures_in_a_row = 0;
        health.update(&name, |state| {
            let good_run = state
                .running_since
                .is_some_and(|since| since.elapsed() >= GOOD_RUN);
            state.failures_in_a_row = if good_run {
                1
            } else {
                state.failures_in_a_row + 1
            };
            state.running_since = None;
            failures_in_a_row = state.failures_in_a_row;
        });
        metrics::counter!("worker_restarts_total", "worker" => name.clone()).increment(1);
        let pause = RESTART.after(failures_in_a_row);
        tracing::error!(
            worker = %name,
            failures_in_a_row,
            restart_in_ms = pause.as_millis(),
            "background worker {failure}; restarting"
        );
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(pause) => {}
        }
    }
}

/// The message a panic carried, if it was a string.
pub fn panic_message(panic: &(dyn Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_owned())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_panicking_worker_is_restarted_and_then_reported() {
        let workers = Workers::new("test", Health::default());
        let stop = CancellationToken::new();
        let runs = Arc::new(AtomicU32::new(0));
        let counted = Arc::clone(&runs);
        workers.supervise("boom", stop.clone(), move |stop| {
            let counted = Arc::clone(&counted);
            async move {
                if counted.fetch_add(1, Ordering::SeqCst) < 5 {
                    panic!("injected");
                }
                stop.cancelled().await;
            }
        });
        // Restarted after 1 s, 2 s, 4 s...
        tokio::time::sleep(Duration::from_millis(3500)).await;
        assert_eq!(runs.load(Ordering::SeqCst), 3);
        assert_eq!(
            workers.health().failing(),
            ["boom"],
            "three failures in a row"
        );
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(
            runs.load(Ordering::SeqCst),
            6,
            "it runs again after the pauses"
        );
        tokio::time::sleep(Duration::from_secs(61)).await;
        assert!(
            workers.health().failing().is_empty(),
            "a good minute heals it"
        );
        stop.cancel();
        workers.wait().await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_worker_that_stops_when_told_is_not_restarted() {
        let workers = Workers::new("test", Health::default());
        let stop = CancellationToken::new();
        let runs = Arc::new(AtomicU32::new(0));
        let counted = Arc::clone(&runs);
        workers.supervise("calm", stop.clone(), move |stop| {
            counted.fetch_add(1, Ordering::SeqCst);
            async move { stop.cancelled().await }
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        stop.cancel();
        workers.wait().await;
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert!(workers.health().failing().is_empty());
    }
}
