//! Password hashing with Argon2id.
//!
//! Hashing is deliberately slow (tens of milliseconds and 19 MiB per hash), so it
//! runs on the blocking thread pool, never on the async workers, and at most a few
//! hashes run at once so that a burst of sign-ups cannot exhaust memory.

use std::sync::LazyLock;

use anyhow::Context;
use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use tokio::sync::Semaphore;

static HASHING: LazyLock<Semaphore> = LazyLock::new(|| {
    let cores = std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
    Semaphore::new(cores * 2)
});

/// A hash, with the default parameters, of a random password nobody knows. Verifying
/// against it when the email is unknown makes "unknown email" and "wrong password"
/// take the same time, so timing does not reveal which emails have accounts.
static DUMMY_HASH: LazyLock<String> = LazyLock::new(|| {
    let unguessable = uuid::Uuid::new_v4().to_string();
    Argon2::default()
        .hash_password(unguessable.as_bytes())
        .map(|hash| hash.to_string())
        .unwrap_or_default()
});

async fn off_runtime<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> anyhow::Result<T> {
    let _permit = HASHING
        .acquire()
        .await
        .context("hashing semaphore closed")?;
    tokio::task::spawn_blocking(work)
        .await
        .context("password hashing task failed")
}

/// Hashes a password into a PHC string (`$argon2id$...`) with a random salt.
pub async fn hash(password: String) -> anyhow::Result<String> {
    off_runtime(move || {
        Argon2::default()
            .hash_password(password.as_bytes())
            .map(|hash| hash.to_string())
            .map_err(|e| anyhow::anyhow!("hashing a password: {e}"))
    })
    .await?
}

/// Whether `password` matches `hash`; with no hash (unknown user) it does the same
/// work and answers false.
pub async fn verify(password: String, hash: Option<String>) -> anyhow::Result<bool> {
    off_runtime(move || {
        let known = hash.is_some();
        let stored = hash.unwrap_or_else(|| DUMMY_HASH.clone());
        let parsed = PasswordHash::new(&stored)
            .map_err(|e| anyhow::anyhow!("stored hash is not valid: {e}"))?;
        let matches = Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok();
        Ok(known && matches)
    })
    .await?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_verify_and_are_salted() {
        let first = hash("secret".into()).await.unwrap();
        let second = hash("secret".into()).await.unwrap();
        assert!(first.starts_with("$argon2id$"));
        assert_ne!(first, second, "each hash has its own salt");
        assert!(verify("secret".into(), Some(first.clone())).await.unwrap());
        assert!(!verify("Secret".into(), Some(first)).await.unwrap());
        assert!(!verify("anything".into(), None).await.unwrap());
    }

    #[test]
    fn the_dummy_hash_is_a_valid_hash() {
        assert!(PasswordHash::new(&DUMMY_HASH).is_ok());
    }
}
