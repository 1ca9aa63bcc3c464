//! The waiting tracker: the events of one subject that wait for a predecessor, as
//! this process has seen them, for the `events_waiting*` gauges and the warning.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use common::events::Subject;

pub(crate) struct Waiting {
    subject: Subject,
    warn_after: Duration,
    events: Mutex<HashMap<String, WaitingEvent>>,
}

struct WaitingEvent {
    published: SystemTime,
    last_seen: Instant,
    warned: bool,
}

/// An entry not seen again for this long went to another replica, or away.
const FORGET_AFTER: Duration = Duration::from_secs(300);

impl Waiting {
    pub(crate) fn new(subject: Subject, warn_after: Duration) -> Self {
        Self {
            subject,
            warn_after,
            events: Mutex::default(),
        }
    }

    /// `event_id` (published at `published`) still waits, because of `reason`.
    pub(crate) fn note(&self, event_id: &str, published: SystemTime, reason: &str) {
        let mut events = self.lock();
        let event = events.entry(event_id.to_owned()).or_insert(WaitingEvent {
            published,
            last_seen: Instant::now(),
            warned: false,
        });
        event.last_seen = Instant::now();
        let age = event.published.elapsed().unwrap_or_default();
        if !event.warned && age >= self.warn_after {
            event.warned = true;
            tracing::warn!(
                waited_seconds = age.as_secs(),
                reason,
                "an event has been waiting for its predecessor for a long time"
            );
        }
        drop(events);
        self.report();
    }

    /// `event_id` waits no more (handled, or failed).
    pub(crate) fn forget(&self, event_id: &str) {
        let removed = self.lock().remove(event_id).is_some();
        if removed {
            self.report();
        }
    }

    /// Sets the gauges.
    pub(crate) fn report(&self) {
        let mut events = self.lock();
        events.retain(|_, event| event.last_seen.elapsed() < FORGET_AFTER);
        let oldest = events
            .values()
            .map(|event| event.published.elapsed().unwrap_or_default())
            .max()
            .unwrap_or_default();
        #[allow(clippy::cast_precision_loss)]
        let count = events.len() as f64;
        drop(events);
        let subject = self.subject.as_str();
        metrics::gauge!("events_waiting", "subject" => subject).set(count);
        metrics::gauge!("events_waiting_oldest_age_seconds", "subject" => subject)
            .set(oldest.as_secs_f64());
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, WaitingEvent>> {
        self.events
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
