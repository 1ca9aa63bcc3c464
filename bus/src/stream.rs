//! Connecting to NATS and declaring the `TICKETING` stream.

use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::{self, stream};
pub use common::events::STREAM;
use common::events::Subject;
use kit::retry::Patience;

/// How long JetStream remembers a `Nats-Msg-Id` to drop a second copy of a message.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(10 * 60);

/// A connection to NATS and its JetStream context.
#[derive(Clone)]
pub struct Nats {
    pub client: async_nats::Client,
    pub jetstream: jetstream::Context,
}

/// Connects to NATS (waiting up to 30 s for it to come up) and makes sure the stream
/// exists with `replicas` copies. Once connected, the client reconnects on its own
/// for as long as it lives; the connection state is logged and exported as the
/// `nats_connected` gauge.
pub async fn connect(url: &str, client_name: &str, replicas: usize) -> anyhow::Result<Nats> {
    let client = Patience::CONNECT
        .connect("NATS", || {
            async_nats::ConnectOptions::new()
                .name(client_name)
                .connection_timeout(Duration::from_secs(2))
                .max_reconnects(None)
                .event_callback(|event| async move { report(&event) })
                .connect(url)
        })
        .await?;
    metrics::gauge!("nats_connected").set(1.0);
    let jetstream = jetstream::new(client.clone());
    ensure_stream(&jetstream, replicas).await?;
    Ok(Nats { client, jetstream })
}

fn report(event: &async_nats::Event) {
    match event {
        async_nats::Event::Connected => {
            metrics::gauge!("nats_connected").set(1.0);
            tracing::info!("NATS connection restored");
        }
        async_nats::Event::Disconnected => {
            metrics::gauge!("nats_connected").set(0.0);
            tracing::warn!("NATS connection lost; events wait in the outbox until it is back");
        }
        other => tracing::info!(event = %other, "NATS"),
    }
}

/// What the stream should be.
///
/// Retention is by limits, without an age limit: a consumer created later (a new
/// service, or a new replica's durable) can still read every event from the start.
/// Messages carrying a `Nats-Msg-Id` seen within the duplicate window are stored once.
pub fn stream_config(replicas: usize) -> stream::Config {
    stream::Config {
        name: STREAM.to_owned(),
        subjects: Subject::ALL.iter().map(|s| s.as_str().to_owned()).collect(),
        storage: stream::StorageType::File,
        retention: stream::RetentionPolicy::Limits,
        duplicate_window: DUPLICATE_WINDOW,
        num_replicas: replicas.max(1),
        ..Default::default()
    }
}

/// Creates the stream if it does not exist yet, and updates it when its subjects,
/// duplicate window or replica count differ from what this version wants.
pub async fn ensure_stream(
    jetstream: &jetstream::Context,
    replicas: usize,
) -> anyhow::Result<stream::Stream> {
    let wanted = stream_config(replicas);
    // Several services start at once; if another one created it first, just fetch it.
    let mut attempt = 0;
    let mut stream = loop {
        match jetstream.get_or_create_stream(wanted.clone()).await {
            Ok(stream) => break stream,
            Err(error) if attempt < 3 => tracing::debug!(%error, "creating the stream; retrying"),
            Err(error) => {
                return Err(error).with_context(|| format!("creating the {STREAM} stream"));
            }
        }
        attempt += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let current = &stream.cached_info().config;
    let differs = current.num_replicas != wanted.num_replicas
        || current.duplicate_window != wanted.duplicate_window
        || current.subjects != wanted.subjects;
    if differs {
        tracing::info!(
            replicas = wanted.num_replicas,
            "updating the {STREAM} stream to the configured settings"
        );
        let mut updated = current.clone();
        updated.num_replicas = wanted.num_replicas;
        updated.duplicate_window = wanted.duplicate_window;
        updated.subjects = wanted.subjects;
        jetstream
            .update_stream(updated)
            .await
            .with_context(|| format!("updating the {STREAM} stream"))?;
        stream = jetstream.get_stream(STREAM).await?;
    }
    Ok(stream)
}
