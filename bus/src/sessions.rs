//! Following sign-outs (`session.revoked`, `docs/api.md` § Session cookie): every
//! replica of a service that reads sessions learns of every revoked token and refuses
//! it until the token expires.
//!
//! Not with a durable consumer that the replicas share (each event would reach only
//! one of them): each replica reads the subject with an ordered consumer of its own,
//! from the start of the stream. [`catch_up`] reads what is there before the service
//! serves, so a replica started after a sign-out refuses the token from its first
//! request; [`follow`] then applies each new revocation as the stream delivers it,
//! milliseconds after auth's relay publishes it. If NATS goes away, it reads again
//! from the start once NATS is back (applying a revocation twice changes nothing).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_nats::jetstream::consumer::{DeliverPolicy, pull};
use async_nats::jetstream::{self, Message};
use common::SessionKeys;
use common::events::{STREAM, SessionRevoked, Subject};
use futures::StreamExt as _;
use kit::retry::Backoff;
use tokio_util::sync::CancellationToken;

/// Pauses before reading again after NATS failed.
const BACKOFF: Backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
/// The longest a service's start waits to read the revocations already published.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(5);

/// The revocations being read, handed from [`catch_up`] to the first run of [`follow`].
pub type Reading = Arc<Mutex<Option<pull::Ordered>>>;

/// Reads every revocation already in the stream into `keys`, waiting at most a few
/// seconds; returns the reading, for [`follow`] to go on with. A failure is logged,
/// not fatal: [`follow`] tries again.
pub async fn catch_up(
    jetstream: &jetstream::Context,
    service: &str,
    keys: &SessionKeys,
) -> Reading {
    let started = Instant::now();
    let read = async {
        let (mut messages, pending) = open(jetstream, service).await?;
        for _ in 0..pending {
            let message = messages
                .next()
                .await
                .context("the revocations ended")?
                .context("reading revocations")?;
            apply(keys, &message);
        }
        anyhow::Ok((messages, pending))
    };
    match tokio::time::timeout(CATCH_UP_TIMEOUT, read).await {
        Ok(Ok((messages, pending))) => {
            tracing::info!(
                revocations = pending,
                elapsed_ms = started.elapsed().as_millis(),
                "read the revoked sessions"
            );
            Arc::new(Mutex::new(Some(messages)))
        }
        Ok(Err(error)) => {
            tracing::warn!(
                error = format!("{error:#}"),
                "reading the revoked sessions failed; retrying in the background"
            );
            Reading::default()
        }
        Err(_) => {
            tracing::warn!(
                "reading the revoked sessions took too long; going on in the background"
            );
            Reading::default()
        }
    }
}

/// Applies revocations as they come until `stop`; when the reading fails, opens a
/// new one from the start of the stream.
pub async fn follow(
    jetstream: jetstream::Context,
    service: &'static str,
    keys: SessionKeys,
    reading: Reading,
    stop: CancellationToken,
) {
    let mut failures = 0;
    loop {
        let handed = reading
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let started = Instant::now();
        let outcome = tokio::select! {
            () = stop.cancelled() => return,
            outcome = read(&jetstream, service, &keys, handed) => outcome,
        };
        failures = if started.elapsed() > Duration::from_secs(30) {
            1
        } else {
            failures + 1
        };
        let error = outcome
            .err()
            .map(|error| format!("{error:#}"))
            .unwrap_or_default();
        tracing::warn!(
            error,
            "following revoked sessions failed; reading them again shortly"
        );
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(BACKOFF.after(failures)) => {}
        }
    }
}

async fn read(
    jetstream: &jetstream::Context,
    service: &str,
    keys: &SessionKeys,
    handed: Option<pull::Ordered>,
) -> anyhow::Result<()> {
    let mut messages = match handed {
        Some(messages) => messages,
        None => open(jetstream, service).await?.0,
    };
    while let Some(message) = messages.next().await {
        apply(keys, &message.context("reading revocations")?);
    }
    anyhow::bail!("the revocations ended")
}

/// An ordered consumer of `session.revoked` from the start, and how many
/// revocations it had to deliver when it was made. It is named (`<service>_sessions_<id>`)
/// so that its creation names its filter, which is what a service's NATS user may
/// create consumers for ([`crate::permissions`]).
async fn open(
    jetstream: &jetstream::Context,
    service: &str,
) -> anyhow::Result<(pull::Ordered, u64)> {
    let consumer = jetstream
        .create_consumer_on_stream(
            pull::OrderedConfig {
                name: Some(format!(
                    "{service}_sessions_{}",
                    uuid::Uuid::new_v4().simple()
                )),
                filter_subject: Subject::SessionRevoked.as_str().to_owned(),
                deliver_policy: DeliverPolicy::All,
                ..Default::default()
            },
            STREAM,
        )
        .await
        .context("creating the consumer of revoked sessions")?;
    let pending = consumer.cached_info().num_pending;
    let messages = consumer
        .messages()
        .await
        .context("reading revoked sessions")?;
    Ok((messages, pending))
}

fn apply(keys: &SessionKeys, message: &Message) {
    match serde_json::from_slice::<SessionRevoked>(&message.payload) {
        Ok(revoked) => {
            keys.revoke(&revoked.token_id, revoked.exp);
            metrics::counter!("session_revocations_applied_total").increment(1);
        }
        // Not this replica's to fix, and never worth stopping for.
        Err(error) => tracing::warn!(%error, "ignored a malformed session.revoked"),
    }
}
