//! Limits on guessing and on floods (`docs/api.md` § Auth, limits).
//!
//! - **Sign-in failures per account**: the first `SIGNIN_FAILURES_PER_ACCOUNT` (5) are
//!   free; each further one blocks the account's sign-ins for twice as long as the
//!   last (1 s, 2 s, 4 s, ... up to `SIGNIN_BLOCK_MAX_SECONDS`, 900): 429 with
//!   `Retry-After`, answered before any hashing. A success resets the count; so does a
//!   day without failures.
//! - **Sign-in failures per client address**: the same, from
//!   `SIGNIN_FAILURES_PER_ADDRESS` (20) on, over every account tried from it.
//! - **Failed sign-ups per client address** (`Email in use`, which tells that an
//!   account exists): the same, from `SIGNUP_FAILURES_PER_ADDRESS` (20) on.
//! - **Hashing per client address**: at most `HASHING_PER_ADDRESS` (8) passwords of
//!   one address are hashed or wait for a hashing thread at a time, per replica; more
//!   are answered 429 at once, so that a flood from one address cannot take the
//!   hashing threads from everyone else.
//!
//! The counts live in the database (`attempts`), where every replica sees them. The
//! client address is the one the trusted ingress saw (`TRUSTED_PROXY_HOPS`, see
//! `kit::http::client_address`). `RATE_LIMITS=off` turns off the per-address limits,
//! for load tests driven from one machine; the per-account ones stay.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use common::{Error, Result};
use kit::config::{ConfigError, Env};
use sha2::{Digest, Sha256};
use sqlx::PgPool;

/// The settings of the limits.
#[derive(Debug, Clone)]
pub struct LimitConfig {
    /// `RATE_LIMITS` (`on`, the default, or `off`): the per-address limits.
    pub per_address: bool,
    /// `SIGNIN_FAILURES_PER_ACCOUNT` (5): failures before the account is slowed.
    pub failures_per_account: i32,
    /// `SIGNIN_FAILURES_PER_ADDRESS` (20): failures before the address is slowed.
    pub failures_per_address: i32,
    /// `SIGNIN_BLOCK_MAX_SECONDS` (900): the longest a block lasts.
    pub block_max: Duration,
    /// `SIGNUP_FAILURES_PER_ADDRESS` (20): sign-ups answered `Email in use` before
    /// the address is slowed.
    pub signup_failures_per_address: i32,
    /// `HASHING_PER_ADDRESS` (8): passwords of one address being hashed or waiting
    /// for a hashing thread, per replica.
    pub hashing_per_address: usize,
    /// `TRUSTED_PROXY_HOPS` (1): proxies in front of auth that append to
    /// `X-Forwarded-For` (the ingress).
    pub trusted_proxy_hops: usize,
}

impl LimitConfig {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let per_address = kit::limits::rate_limits_on(env)?;
        Ok(Self {
            per_address,
            failures_per_account: env.optional("SIGNIN_FAILURES_PER_ACCOUNT", 5)?,
            failures_per_address: env.optional("SIGNIN_FAILURES_PER_ADDRESS", 20)?,
            block_max: env.seconds("SIGNIN_BLOCK_MAX_SECONDS", 900)?,
            signup_failures_per_address: env.optional("SIGNUP_FAILURES_PER_ADDRESS", 20)?,
            hashing_per_address: env.optional("HASHING_PER_ADDRESS", 8)?,
            trusted_proxy_hops: env.optional("TRUSTED_PROXY_HOPS", 1)?,
        })
    }

    /// The production defaults, with the per-address limits off (tests share one
    /// address).
    pub fn for_tests() -> Self {
        Self {
            per_address: false,
            failures_per_account: 5,
            failures_per_address: 20,
            block_max: Duration::from_secs(900),
            signup_failures_per_address: 20,
            hashing_per_address: 8,
            trusted_proxy_hops: 1,
        }
    }
}

/// The limits, shared by the handlers; cheap to clone.
#[derive(Clone)]
pub struct Limits {
    pool: PgPool,
    pub config: LimitConfig,
    hashing: Hashing,
}

/// The account key of an email: its SHA-256, so that the table (and the logs) hold no
/// address a stranger typed.
pub fn account_hash(email: &str) -> String {
    Sha256::digest(email.as_bytes())
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

const TOO_MANY_SIGNINS: &str = "Too many failed sign-ins; try again later";
const TOO_MANY_SIGNUPS: &str = "Too many failed sign-ups; try again later";

impl Limits {
    pub fn new(pool: PgPool, config: LimitConfig) -> Self {
        // Counted from zero, so that the first failure shows as an increase.
        metrics::counter!("auth_signin_failures_total").increment(0);
        Self {
            pool,
            config,
            hashing: Arc::default(),
        }
    }

    fn signin_keys(&self, account: &str, address: Option<IpAddr>) -> Vec<String> {
        let mut keys = vec![format!("signin:account:{account}")];
        if let Some(address) = address.filter(|_| self.config.per_address) {
            keys.push(format!("signin:address:{address}"));
        }
        keys
    }

    /// Refuses a sign-in while its account or its address is blocked.
    pub async fn check_signin(&self, account: &str, address: Option<IpAddr>) -> Result<()> {
        let keys = self.signin_keys(account, address);
        self.refuse_while_blocked(&keys, TOO_MANY_SIGNINS).await
    }

    async fn refuse_while_blocked(&self, keys: &[String], message: &str) -> Result<()> {
        let wait = sqlx::query_scalar!(
            r#"SELECT extract(epoch FROM max(blocked_until) - now())::float8 AS "wait"
               FROM attempts WHERE key = ANY($1) AND blocked_until > now()"#,
            keys,
        )
        .fetch_one(&self.pool)
        .await?;
        match wait {
            Some(wait) if wait > 0.0 => {
                Err(Error::too_many(message, Duration::from_secs_f64(wait)))
            }
            _ => Ok(()),
        }
    }

    /// Counts a failed sign-in against its account and its address; once past the
    /// free failures, each blocks for twice as long as the one before.
    pub async fn signin_failed(&self, account: &str, address: Option<IpAddr>) -> Result<()> {
        let account_key = format!("signin:account:{account}");
        self.count_failure(&account_key, self.config.failures_per_account)
            .await?;
        if let Some(address) = address.filter(|_| self.config.per_address) {
            let address_key = format!("signin:address:{address}");
            self.count_failure(&address_key, self.config.failures_per_address)
                .await?;
        }
        metrics::counter!("auth_signin_failures_total").increment(1);
        Ok(())
    }

    async fn count_failure(&self, key: &str, free: i32) -> Result<()> {
        let max = self.config.block_max.as_secs_f64();
        sqlx::query!(
            r#"INSERT INTO attempts AS a (key, count, blocked_until)
               VALUES ($1, 1, CASE WHEN 1 > $2 THEN now() + make_interval(secs => 1) ELSE '-infinity' END)
               ON CONFLICT (key) DO UPDATE SET
                 count = CASE WHEN a.last_at < now() - interval '1 day' THEN 1 ELSE a.count + 1 END,
                 last_at = clock_timestamp(),
                 blocked_until = CASE
                   WHEN (CASE WHEN a.last_at < now() - interval '1 day' THEN 1 ELSE a.count + 1 END) > $2
                   THEN now() + make_interval(secs => least(
                     power(2, (CASE WHEN a.last_at < now() - interval '1 day' THEN 1 ELSE a.count + 1 END) - $2 - 1),
                     $3::float8))
                   ELSE a.blocked_until END"#,
            key,
            free,
            max,
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// A success forgets the account's failures, and the address's.
    pub async fn signin_succeeded(&self, account: &str, address: Option<IpAddr>) -> Result<()> {
        let keys = self.signin_keys(account, address);
        sqlx::query!("DELETE FROM attempts WHERE key = ANY($1)", &keys)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Refuses a sign-up while its address is blocked for failed sign-ups.
    pub async fn check_signup(&self, address: Option<IpAddr>) -> Result<()> {
        let Some(address) = address.filter(|_| self.config.per_address) else {
            return Ok(());
        };
        let keys = vec![format!("signup:address:{address}")];
        self.refuse_while_blocked(&keys, TOO_MANY_SIGNUPS).await
    }

    /// Counts a failed sign-up (`Email in use`) against its address.
    pub async fn signup_failed(&self, address: Option<IpAddr>) -> Result<()> {
        if let Some(address) = address.filter(|_| self.config.per_address) {
            let key = format!("signup:address:{address}");
            self.count_failure(&key, self.config.signup_failures_per_address)
                .await?;
        }
        Ok(())
    }

    /// A place among the passwords being hashed for `address`, or 429 when its share
    /// is taken. Released when dropped.
    pub fn hashing(&self, address: Option<IpAddr>) -> Result<HashingSlot> {
        let Some(address) = address.filter(|_| self.config.per_address) else {
            return Ok(HashingSlot(None));
        };
        let mut busy = self.hashing.lock().unwrap_or_else(PoisonError::into_inner);
        let count = busy.entry(address).or_default();
        if *count >= self.config.hashing_per_address {
            return Err(Error::too_many(
                "Too many sign-ins from this address at once; try again",
                Duration::from_secs(1),
            ));
        }
        *count += 1;
        Ok(HashingSlot(Some((Arc::clone(&self.hashing), address))))
    }

    /// Removes what no window or block needs any more.
    pub async fn prune(&self) -> anyhow::Result<u64> {
        let removed = sqlx::query!(
            "DELETE FROM attempts WHERE last_at < now() - interval '1 day' AND blocked_until < now()"
        )
        .execute(&self.pool)
        .await?;
        Ok(removed.rows_affected())
    }
}

/// Passwords being hashed, per client address.
type Hashing = Arc<Mutex<HashMap<IpAddr, usize>>>;

/// See [`Limits::hashing`].
pub struct HashingSlot(Option<(Hashing, IpAddr)>);

impl Drop for HashingSlot {
    fn drop(&mut self) {
        if let Some((busy, address)) = self.0.take() {
            let mut busy = busy.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(count) = busy.get_mut(&address) {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    busy.remove(&address);
                }
            }
        }
    }
}
