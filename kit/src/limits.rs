//! Rate limits on what one user may create (`docs/api.md` § Errors, 429), and the
//! `RATE_LIMITS` switch that load tests driven from one machine turn off.
//!
//! [`UserRate`] lets each user make `per_minute` requests a minute, in bursts of up
//! to that many, and answers the next one 429 with `Retry-After`: the generic cell
//! rate algorithm, one instant per user (when their allowance is next whole). It is
//! kept in this replica's memory: a check costs no round trip on the write path, and
//! with N replicas behind the ingress a user gets at most N times the rate, which is
//! still bounded (auth's limits on guessing, which must hold exactly, are in its
//! database instead).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use common::Error;
use uuid::Uuid;

use crate::config::{ConfigError, Env};

/// Users remembered before those whose allowance is whole again are forgotten.
const REMEMBERED: usize = 100_000;

/// `RATE_LIMITS` (`on`, the default, or `off`): whether the limits meant for clients
/// (per address, per user) apply. Load tests from one machine turn them off and say
/// so; the limits on guessing one account's password, and the cap on a user's active
/// orders, stay on whatever it says.
pub fn rate_limits_on(env: &Env) -> Result<bool, ConfigError> {
    let switch: String = env.optional("RATE_LIMITS", "on".to_owned())?;
    match switch.as_str() {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => Err(ConfigError::Invalid {
            name: "RATE_LIMITS",
            problem: "must be on or off".into(),
        }),
    }
}

/// How many requests of one kind a user may make a minute; cheap to clone (the
/// clones share their memory).
#[derive(Clone)]
pub struct UserRate {
    /// `None`: unlimited (`RATE_LIMITS=off`, or a rate of 0).
    inner: Option<Arc<Inner>>,
}

struct Inner {
    /// What the limit is on, for the answer ("listing tickets").
    what: &'static str,
    /// Time between two requests at the sustained rate.
    interval: Duration,
    /// How far ahead of now a user's next-free instant may run: the burst.
    tolerance: Duration,
    /// Per user: the instant at which their allowance is whole again.
    next_free: Mutex<HashMap<Uuid, Instant>>,
}

impl UserRate {
    /// `per_minute` requests a minute (0: no limit), in bursts of as many.
    pub fn new(what: &'static str, per_minute: u32, on: bool) -> Self {
        if !on || per_minute == 0 {
            return Self::unlimited();
        }
        let interval = Duration::from_secs(60) / per_minute;
        Self {
            inner: Some(Arc::new(Inner {
                what,
                interval,
                tolerance: interval * (per_minute - 1),
                next_free: Mutex::default(),
            })),
        }
    }

    pub fn unlimited() -> Self {
        Self { inner: None }
    }

    /// Counts one request of `user`, or answers 429 (with when to try again) if they
    /// have used up their allowance.
    pub fn check(&self, user: Uuid) -> Result<(), Error> {
        let Some(inner) = &self.inner else {
            return Ok(());
        };
        let now = Instant::now();
        let mut next_free = inner
            .next_free
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if next_free.len() >= REMEMBERED && !next_free.contains_key(&user) {
            next_free.retain(|_, at| *at > now);
        }
        let theirs = next_free.get(&user).copied().unwrap_or(now).max(now);
        let ahead = theirs - now;
        if ahead > inner.tolerance {
            let wait = ahead - inner.tolerance;
            metrics::counter!("rate_limited_total", "what" => inner.what).increment(1);
            tracing::info!(%user, what = inner.what, "user rate limit reached");
            return Err(Error::too_many(
                format!(
                    "Too many requests: you are {} too fast; try again shortly",
                    inner.what
                ),
                wait,
            ));
        }
        next_free.insert(user, theirs + inner.interval);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_of_the_rate_passes_and_the_next_request_is_refused_with_a_wait() {
        let rate = UserRate::new("creating things", 6, true);
        let (user, other) = (Uuid::new_v4(), Uuid::new_v4());
        for n in 0..6 {
            assert!(rate.check(user).is_ok(), "request {n} of the burst");
        }
        let Err(Error::TooManyRequests {
            retry_after,
            message,
        }) = rate.check(user)
        else {
            panic!("the seventh request within the minute passed");
        };
        assert!((1..=10).contains(&retry_after), "Retry-After {retry_after}");
        assert!(message.contains("creating things"), "{message}");
        assert!(
            rate.check(other).is_ok(),
            "another user has their own allowance"
        );
    }

    #[test]
    fn off_or_zero_means_no_limit() {
        let user = Uuid::new_v4();
        for rate in [UserRate::new("x", 1, false), UserRate::new("x", 0, true)] {
            for _ in 0..100 {
                assert!(rate.check(user).is_ok());
            }
        }
    }
}
