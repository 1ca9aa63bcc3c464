//! Connecting to NATS and declaring the `TICKETING` stream.

use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::{self, stream};

use super::Subject;

/// The one stream that holds every subject.
pub const STREAM: &str = "TICKETING";

/// A connection to NATS and its JetStream context.
#[derive(Clone)]
pub struct Nats {
    pub client: async_nats::Client,
    pub jetstream: jetstream::Context,
}

/// Connects to NATS (waiting up to 30 s for it to come up) and makes sure the stream
/// exists. Once connected, the client reconnects on its own for as long as it lives.
pub async fn connect(url: &str, client_name: &str) -> anyhow::Result<Nats> {
    let mut attempt = 1;
    let client = loop {
        let options = async_nats::ConnectOptions::new()
            .name(client_name)
            .connection_timeout(Duration::from_secs(2))
            .max_reconnects(None);
        match options.connect(url).await {
            Ok(client) => break client,
            Err(error) if attempt < 30 => {
                tracing::warn!(%error, attempt, "NATS not reachable yet; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                attempt += 1;
            }
            Err(error) => return Err(error).context("connecting to NATS"),
        }
    };
    let jetstream = jetstream::new(client.clone());
    ensure_stream(&jetstream).await?;
    Ok(Nats { client, jetstream })
}

/// Creates the stream if it does not exist yet.
///
/// Retention is by limits, without an age limit: a consumer created later (a new
/// service, or a new replica's durable) can still read every event from the start.
/// Messages carrying a `Nats-Msg-Id` seen within the duplicate window are stored once.
pub async fn ensure_stream(jetstream: &jetstream::Context) -> anyhow::Result<stream::Stream> {
    let config = stream::Config {
        name: STREAM.to_owned(),
        subjects: Subject::ALL.iter().map(|s| s.as_str().to_owned()).collect(),
        storage: stream::StorageType::File,
        retention: stream::RetentionPolicy::Limits,
        duplicate_window: Duration::from_secs(10 * 60),
        ..Default::default()
    };
    // Several services start at once; if another one created it first, just fetch it.
    for _ in 0..3 {
        match jetstream.get_or_create_stream(config.clone()).await {
            Ok(stream) => return Ok(stream),
            Err(error) => tracing::debug!(%error, "creating the stream; retrying"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    jetstream
        .get_or_create_stream(config)
        .await
        .with_context(|| format!("creating the {STREAM} stream"))
}
