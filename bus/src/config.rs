//! The bus's settings, from the environment.

use std::path::PathBuf;
use std::time::Duration;

use common::Secret;
use kit::config::{ConfigError, Env};
use kit::retry::Backoff;

pub use crate::stream::StreamSettings;

/// Settings of services on the event bus.
#[derive(Debug, Clone)]
pub struct BusConfig {
    /// `NATS_URL` (required).
    pub nats_url: String,
    /// Who the service is on the bus: `NATS_USER` (default: the service's name) and
    /// `NATS_PASSWORD`, without which it connects anonymously (tests; a NATS with
    /// users refuses that). See [`crate::permissions`] for what each user may do.
    pub nats_user: Option<String>,
    pub nats_password: Option<Secret>,
    /// `NATS_CA_FILE`: the CA that signed the NATS servers' certificates; when set,
    /// the connection must be TLS and the server's certificate is checked against it.
    pub nats_ca_file: Option<PathBuf>,
    /// `STREAM_REPLICAS`, `STREAM_MAX_BYTES`, `STREAM_MAX_AGE_DAYS`: the stream's
    /// copies and limits (see [`StreamSettings`]). An existing stream is updated to them.
    pub stream: StreamSettings,
    /// `EVENT_MAX_FAILURES` (default 50): failed attempts at handling one event before
    /// it is parked. An event that only waits (its predecessor has not arrived) is
    /// never parked.
    pub max_failures: i64,
    /// `EVENT_RETRY_MAX_DELAY_SECONDS` (default 5): redelivery delays start at 50 ms
    /// and double up to this.
    pub retry_max_delay: Duration,
    /// `EVENT_WAIT_WARN_SECONDS` (default 60): an event still waiting for its
    /// predecessor after this long is logged as a warning.
    pub wait_warn_after: Duration,
    /// `EVENT_CONCURRENCY` (default 8): transactions of events one consumer runs at a
    /// time.
    pub concurrency: usize,
    /// `EVENT_BATCH` (default 1: every event in a transaction of its own): at most this
    /// many of the deliveries a consumer has already received are applied in one
    /// transaction, one commit for all of them. Nothing waits to fill a batch: at low
    /// load it holds one event. Off by default: on two cores a backlog then drains
    /// faster but takes the CPU that HTTP requests answered during it would have had
    /// (docs/benchmarks.md § 7).
    pub batch: usize,
    /// `EVENT_ACK_WAIT_SECONDS` (default 3, at least 1): how long a delivery that is
    /// neither acknowledged nor reported in progress waits before JetStream redelivers
    /// it, to another replica if need be: after a crash, when the replica that took it
    /// is cut off from NATS, or when the delivery itself was lost on its way (the
    /// connection it went out on dropped with a NATS node). A delivery being handled is
    /// reported in progress every half of this, so a slow one is not redelivered while
    /// it runs; were it redelivered all the same, the second delivery would find its
    /// event id taken and change nothing.
    pub ack_wait: Duration,
    /// `RETENTION_HOURS` (default 168, a week): how long handled event ids, parked
    /// events and other bookkeeping are kept. At least an hour: longer than the
    /// stream's duplicate window plus the longest redelivery.
    pub retention: Duration,
    /// `PRUNE_INTERVAL_SECONDS` (default 3600): how often old bookkeeping is pruned.
    pub prune_interval: Duration,
}

/// `EVENT_ACK_WAIT_SECONDS`'s default.
pub const DEFAULT_ACK_WAIT: Duration = Duration::from_secs(3);

impl BusConfig {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let defaults = StreamSettings::default();
        let config = Self {
            nats_url: env.required("NATS_URL")?,
            nats_user: env.maybe("NATS_USER")?,
            nats_password: env.maybe::<String>("NATS_PASSWORD")?.map(Secret::new),
            nats_ca_file: env.maybe::<String>("NATS_CA_FILE")?.map(PathBuf::from),
            stream: StreamSettings {
                replicas: env.optional("STREAM_REPLICAS", defaults.replicas)?,
                max_bytes: env.optional("STREAM_MAX_BYTES", defaults.max_bytes)?,
                max_age: days(env.optional("STREAM_MAX_AGE_DAYS", 30_u64)?),
            },
            max_failures: env.optional("EVENT_MAX_FAILURES", 50)?,
            retry_max_delay: env.fractional_seconds("EVENT_RETRY_MAX_DELAY_SECONDS", 5.0)?,
            wait_warn_after: env.seconds("EVENT_WAIT_WARN_SECONDS", 60)?,
            concurrency: env.optional("EVENT_CONCURRENCY", 8)?,
            batch: env.optional("EVENT_BATCH", 1_usize)?.max(1),
            ack_wait: env.seconds("EVENT_ACK_WAIT_SECONDS", DEFAULT_ACK_WAIT.as_secs())?,
            retention: env.optional("RETENTION_HOURS", 168_u64).map(hours)?,
            prune_interval: env.seconds("PRUNE_INTERVAL_SECONDS", 3600)?,
        };
        if config.ack_wait < Duration::from_secs(1) {
            return Err(ConfigError::Invalid {
                name: "EVENT_ACK_WAIT_SECONDS",
                problem: "must be at least 1".into(),
            });
        }
        if config.retention < Duration::from_secs(3600) {
            return Err(ConfigError::Invalid {
                name: "RETENTION_HOURS",
                problem: "must be at least 1 (longer than the duplicate window)".into(),
            });
        }
        Ok(config)
    }

    pub fn for_tests(nats_url: &str) -> Self {
        Self {
            nats_url: nats_url.to_owned(),
            nats_user: None,
            nats_password: None,
            nats_ca_file: None,
            stream: StreamSettings::default(),
            max_failures: 50,
            retry_max_delay: Duration::from_secs(5),
            wait_warn_after: Duration::from_secs(60),
            concurrency: 8,
            batch: 1,
            ack_wait: Duration::from_secs(2),
            retention: hours(168),
            prune_interval: Duration::from_secs(3600),
        }
    }
}

impl BusConfig {
    /// How `service` reaches NATS: as the user `NATS_USER` (its own name unless
    /// told otherwise) when a password is given.
    pub fn access(&self, service: &str) -> crate::stream::Access {
        crate::stream::Access {
            url: self.nats_url.clone(),
            credentials: self.nats_password.as_ref().map(|password| {
                let user = self.nats_user.clone().unwrap_or_else(|| service.to_owned());
                (user, password.clone())
            }),
            ca_file: self.nats_ca_file.clone(),
        }
    }

    /// Redelivery delays of a failed or waiting event: 50 ms, doubling up to
    /// `EVENT_RETRY_MAX_DELAY_SECONDS`.
    pub fn retry_backoff(&self) -> Backoff {
        Backoff::new(Duration::from_millis(50), self.retry_max_delay)
    }
}

fn hours(hours: u64) -> Duration {
    Duration::from_secs(hours * 3600)
}

fn days(days: u64) -> Duration {
    hours(days * 24)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_retention_must_outlast_the_duplicate_window() {
        let env = Env::from_pairs([("NATS_URL", "nats://x"), ("RETENTION_HOURS", "0")]);
        assert!(matches!(
            BusConfig::from_env(&env),
            Err(ConfigError::Invalid {
                name: "RETENTION_HOURS",
                ..
            })
        ));
    }

    #[test]
    fn the_ack_wait_is_at_least_a_second() {
        let env = Env::from_pairs([("NATS_URL", "nats://x"), ("EVENT_ACK_WAIT_SECONDS", "0")]);
        assert!(matches!(
            BusConfig::from_env(&env),
            Err(ConfigError::Invalid {
                name: "EVENT_ACK_WAIT_SECONDS",
                ..
            })
        ));
        let env = Env::from_pairs([("NATS_URL", "nats://x")]);
        let config = BusConfig::from_env(&env).map(|config| config.ack_wait);
        assert_eq!(config.ok(), Some(DEFAULT_ACK_WAIT));
    }

    #[test]
    fn retries_back_off_to_the_cap() {
        let mut config = BusConfig::for_tests("nats://x");
        let cap = Duration::from_secs(5);
        config.retry_max_delay = cap;
        let backoff = config.retry_backoff();
        assert_eq!(backoff.after(1), Duration::from_millis(50));
        assert_eq!(backoff.after(2), Duration::from_millis(100));
        assert_eq!(backoff.after(50), cap);
        config.retry_max_delay = Duration::from_millis(120);
        assert_eq!(config.retry_backoff().after(3), Duration::from_millis(120));
    }
}
