//! Connecting to NATS and declaring the `TICKETING` stream.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::{self, stream};
use common::Secret;
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

/// The stream's size: its copies and its limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamSettings {
    /// `STREAM_REPLICAS` (default 1): copies JetStream keeps of the stream (3 in a
    /// three-node cluster).
    pub replicas: usize,
    /// `STREAM_MAX_BYTES` (default 1 GiB): the most the stream may hold on each node;
    /// past it the oldest events are dropped (never a refused publish). Size it with
    /// the volume: below the server's `max_file_store`, which is below the volume.
    pub max_bytes: i64,
    /// `STREAM_MAX_AGE_DAYS` (default 30): events older than this are dropped. It must
    /// outlast the longest a consumer may be away (a service down, a new one catching
    /// up from the start).
    pub max_age: Duration,
}

impl Default for StreamSettings {
    fn default() -> Self {
        Self {
            replicas: 1,
            max_bytes: 1 << 30,
            max_age: Duration::from_secs(30 * 24 * 3600),
        }
    }
}

/// How a service reaches NATS and who it is there.
#[derive(Debug, Clone, Default)]
pub struct Access {
    pub url: String,
    /// User and password, if the server has users (it then refuses anonymous clients).
    pub credentials: Option<(String, Secret)>,
    /// The CA of the servers' certificates: TLS is required and checked against it.
    pub ca_file: Option<PathBuf>,
}

impl Access {
    /// Anonymous, plain: what a test's private server accepts.
    pub fn anonymous(url: &str) -> Self {
        Self {
            url: url.to_owned(),
            ..Self::default()
        }
    }
}

/// Connects anonymously (a test's private server) to `url`; see [`connect_with`].
pub async fn connect(
    url: &str,
    client_name: &str,
    settings: &StreamSettings,
) -> anyhow::Result<Nats> {
    connect_with(&Access::anonymous(url), client_name, settings).await
}

/// Connects to NATS (waiting up to 30 s for it to come up) as `access` says, and
/// makes sure the stream exists as `settings` say. Replies and deliveries come to
/// inboxes under `_INBOX_<client_name>` (the only subjects a service's user may
/// receive on: [`crate::permissions`]). Once connected, the client reconnects on its
/// own for as long as it lives; the connection state is logged and exported as the
/// `nats_connected` gauge.
pub async fn connect_with(
    access: &Access,
    client_name: &str,
    settings: &StreamSettings,
) -> anyhow::Result<Nats> {
    let client = Patience::CONNECT
        .connect("NATS", || {
            let mut options = async_nats::ConnectOptions::new()
                .name(client_name)
                .custom_inbox_prefix(crate::permissions::inbox_prefix(client_name))
                .connection_timeout(Duration::from_secs(2))
                .max_reconnects(None)
                .event_callback(|event| async move { report(&event) });
            if let Some((user, password)) = &access.credentials {
                options = options.user_and_password(user.clone(), password.expose().to_owned());
            }
            if let Some(ca_file) = &access.ca_file {
                options = options
                    .add_root_certificates(ca_file.clone())
                    .require_tls(true);
            }
            options.connect(access.url.as_str())
        })
        .await?;
    metrics::gauge!("nats_connected").set(1.0);
    let jetstream = jetstream::new(client.clone());
    ensure_stream(&jetstream, settings).await?;
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
/// Retention is by limits, generous ones: a consumer created later (a new service, or
/// a new replica's durable) can still read every event within them from the start.
/// Past them the oldest events go first, so a full volume never refuses a publish.
/// Messages carrying a `Nats-Msg-Id` seen within the duplicate window are stored once.
/// Atomic batches are allowed: the relay publishes each outbox batch as one.
pub fn stream_config(settings: &StreamSettings) -> stream::Config {
    stream::Config {
        name: STREAM.to_owned(),
        subjects: Subject::ALL.iter().map(|s| s.as_str().to_owned()).collect(),
        storage: stream::StorageType::File,
        retention: stream::RetentionPolicy::Limits,
        discard: stream::DiscardPolicy::Old,
        max_bytes: settings.max_bytes,
        max_age: settings.max_age,
        duplicate_window: DUPLICATE_WINDOW,
        num_replicas: settings.replicas.max(1),
        // The relay publishes each outbox batch as one atomic batch (outbox::Relay).
        allow_atomic_publish: true,
        ..Default::default()
    }
}

/// Creates the stream if it does not exist yet, and updates it when its subjects,
/// duplicate window, replica count, limits or atomic batches differ from what this
/// version wants.
pub async fn ensure_stream(
    jetstream: &jetstream::Context,
    settings: &StreamSettings,
) -> anyhow::Result<stream::Stream> {
    let wanted = stream_config(settings);
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
        || current.subjects != wanted.subjects
        || current.max_bytes != wanted.max_bytes
        || current.max_age != wanted.max_age
        || current.allow_atomic_publish != wanted.allow_atomic_publish;
    if differs {
        tracing::info!(
            replicas = wanted.num_replicas,
            "updating the {STREAM} stream to the configured settings"
        );
        let mut updated = current.clone();
        updated.num_replicas = wanted.num_replicas;
        updated.duplicate_window = wanted.duplicate_window;
        updated.subjects = wanted.subjects;
        updated.max_bytes = wanted.max_bytes;
        updated.max_age = wanted.max_age;
        updated.allow_atomic_publish = wanted.allow_atomic_publish;
        jetstream
            .update_stream(updated)
            .await
            .with_context(|| format!("updating the {STREAM} stream"))?;
        stream = jetstream.get_stream(STREAM).await?;
    }
    Ok(stream)
}
