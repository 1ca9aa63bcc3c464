//! Trying again: one backoff for everything that retries (a crashed worker, a failed
//! event, a relay that cannot reach NATS), and one loop for connecting to something
//! that may not be up yet (the database, NATS).

use std::future::Future;
use std::time::Duration;

use anyhow::Context as _;

/// A pause that starts at `first` and doubles with every failure in a row, up to `max`.
///
/// ```
/// # use std::time::Duration;
/// let backoff = kit::retry::Backoff::new(Duration::from_millis(50), Duration::from_secs(5));
/// assert_eq!(backoff.after(1), Duration::from_millis(50));
/// assert_eq!(backoff.after(3), Duration::from_millis(200));
/// assert_eq!(backoff.after(1000), Duration::from_secs(5));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    first: Duration,
    max: Duration,
}

impl Backoff {
    pub const fn new(first: Duration, max: Duration) -> Self {
        Self { first, max }
    }

    /// The pause after `failures` failures in a row (the first failure waits `first`).
    pub fn after(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(31);
        self.first.saturating_mul(1_u32 << doublings).min(self.max)
    }
}

/// How many times to try connecting, and how long to wait in between.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Patience {
    pub attempts: u32,
    pub pause: Duration,
}

impl Patience {
    /// Up to 30 attempts a second apart: long enough for a database or NATS that starts
    /// beside the service.
    pub const CONNECT: Self = Self {
        attempts: 30,
        pause: Duration::from_secs(1),
    };

    /// Calls `connect` until it succeeds, logging each failure as a warning; after the
    /// last attempt its error is returned, in the context `connecting to {what}`.
    pub async fn connect<T, E, F, Fut>(self, what: &str, mut connect: F) -> anyhow::Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: std::error::Error + Send + Sync + 'static,
    {
        let mut attempt = 1;
        loop {
            match connect().await {
                Ok(connected) => return Ok(connected),
                Err(error) if attempt < self.attempts => {
                    tracing::warn!(%error, attempt, "{what} not reachable yet; retrying");
                    tokio::time::sleep(self.pause).await;
                    attempt += 1;
                }
                Err(error) => return Err(error).with_context(|| format!("connecting to {what}")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_its_cap() {
        let backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
        let pauses: Vec<u64> = (1..=7).map(|n| backoff.after(n).as_secs()).collect();
        assert_eq!(pauses, [1, 2, 4, 8, 16, 30, 30]);
        assert_eq!(backoff.after(0), Duration::from_secs(1));
        assert_eq!(backoff.after(u32::MAX), Duration::from_secs(30));
    }

    #[tokio::test(start_paused = true)]
    async fn connecting_gives_up_after_its_attempts_with_the_last_error() {
        let patience = Patience {
            attempts: 3,
            pause: Duration::from_secs(1),
        };
        let mut tries = 0;
        let failed = patience
            .connect("the moon", || {
                tries += 1;
                async { Err::<(), _>(std::io::Error::other("too far")) }
            })
            .await
            .unwrap_err();
        assert_eq!(tries, 3);
        assert_eq!(format!("{failed:#}"), "connecting to the moon: too far");

        let mut tries = 0;
        let connected = patience
            .connect("the shop", || {
                tries += 1;
                let up = tries == 2;
                async move {
                    if up {
                        Ok(7)
                    } else {
                        Err(std::io::Error::other("closed"))
                    }
                }
            })
            .await
            .unwrap();
        assert_eq!((connected, tries), (7, 2));
    }
}
