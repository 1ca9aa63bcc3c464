//! Traces, with OpenTelemetry's conventions: on when `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set and `OTEL_SDK_DISABLED` is not `true`;
//! off otherwise, and then nothing here is on a request's or an event's path but one
//! relaxed load ([`enabled`]).
//!
//! When on, spans are exported in batches over OTLP/HTTP with protobuf, from a thread
//! of their own; `OTEL_SERVICE_NAME` (default: the service), `OTEL_RESOURCE_ATTRIBUTES`,
//! `OTEL_TRACES_SAMPLER` / `OTEL_TRACES_SAMPLER_ARG` (default: parent-based, always on)
//! and `OTEL_EXPORTER_OTLP_HEADERS` / `_TIMEOUT` are read as the specification says.
//! The W3C `traceparent` carries the context: in HTTP headers, in the outbox row of an
//! event, and in the NATS message the relay publishes.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::Duration;

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator as _};
use opentelemetry::trace::{TraceContextExt as _, TracerProvider as _};
use opentelemetry_otlp::{WithExportConfig as _, WithHttpConfig as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::registry::LookupSpan;

/// The header (and outbox column) that carries a span's context.
pub const TRACEPARENT: &str = "traceparent";

static ENABLED: AtomicBool = AtomicBool::new(false);
static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();

/// Whether spans are exported (see the module's documentation).
#[inline]
pub fn enabled() -> bool {
    ENABLED.load(Relaxed)
}

/// Where a test's receiver takes spans, in place of the environment's endpoint.
static TEST_ENDPOINT: OnceLock<String> = OnceLock::new();

/// Exports to `endpoint` (a traces URL, `.../v1/traces`) whatever the environment says,
/// if set before the subscriber is installed (see `telemetry::install_exporting_traces_to`).
pub(super) fn export_to(endpoint: &str) {
    let _ = TEST_ENDPOINT.set(endpoint.to_owned());
}

/// Whether the environment asks for traces.
pub(super) fn wanted() -> bool {
    if TEST_ENDPOINT.get().is_some() {
        return true;
    }
    let set = |name| std::env::var(name).is_ok_and(|value| !value.trim().is_empty());
    let disabled = std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v.eq_ignore_ascii_case("true"));
    !disabled && (set("OTEL_EXPORTER_OTLP_ENDPOINT") || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
}

/// The layer that turns `tracing` spans into OpenTelemetry spans of `service`, if the
/// environment asks for traces; `None` (and tracing stays off) otherwise or when the
/// exporter cannot be built (said on stderr: logging is not up yet).
pub(super) fn layer<S>(service: &str) -> Option<impl tracing_subscriber::Layer<S>>
where
    S: tracing::Subscriber + for<'span> LookupSpan<'span>,
{
    if !wanted() {
        return None;
    }
    let mut builder = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(Client::new());
    if let Some(endpoint) = TEST_ENDPOINT.get() {
        builder = builder.with_endpoint(endpoint);
    }
    let exporter = match builder.build() {
        Ok(exporter) => exporter,
        Err(error) => {
            eprintln!("traces are off: the OTLP exporter could not be built: {error}");
            return None;
        }
    };
    let mut resource = opentelemetry_sdk::Resource::builder();
    let named = std::env::var("OTEL_SERVICE_NAME").is_ok()
        || std::env::var("OTEL_RESOURCE_ATTRIBUTES").is_ok_and(|a| a.contains("service.name="));
    if !named {
        resource = resource.with_service_name(service.to_owned());
    }
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build())
        .build();
    let tracer = provider.tracer("ticketing");
    let _ = PROVIDER.set(provider);
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    ENABLED.store(true, Relaxed);
    Some(tracing_opentelemetry::layer().with_tracer(tracer))
}

/// Exports what has been recorded so far (before exit, and in tests).
pub fn flush() {
    if let Some(provider) = PROVIDER.get() {
        let _ = provider.force_flush();
    }
}

/// Makes `span` the child of the context `traceparent` names (an incoming request's
/// header, an event's), if it names one.
pub fn continue_from(span: &tracing::Span, traceparent: Option<&str>) {
    let Some(traceparent) = traceparent else {
        return;
    };
    let carrier = One(traceparent);
    let parent = TraceContextPropagator::new().extract(&carrier);
    if parent.span().span_context().is_valid() {
        let _ = span.set_parent(parent);
    }
}

/// The `traceparent` of `span`, if traces are on and it is being recorded.
pub fn traceparent_of(span: &tracing::Span) -> Option<String> {
    if !enabled() {
        return None;
    }
    let mut carrier = Captured(None);
    TraceContextPropagator::new().inject_context(&span.context(), &mut carrier);
    carrier.0
}

/// The current span's `traceparent` (see [`traceparent_of`]).
pub fn current_traceparent() -> Option<String> {
    if !enabled() {
        return None;
    }
    traceparent_of(&tracing::Span::current())
}

/// The trace and span ids of `span`, as lower-case hex, if it is being recorded.
pub fn ids_of(span: &tracing::Span) -> Option<(String, String)> {
    if !enabled() {
        return None;
    }
    let context = span.context();
    let span_context = context.span().span_context().clone();
    span_context.is_valid().then(|| {
        (
            span_context.trace_id().to_string(),
            span_context.span_id().to_string(),
        )
    })
}

/// A carrier holding one `traceparent`.
struct One<'a>(&'a str);

impl Extractor for One<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        (key == TRACEPARENT).then_some(self.0)
    }

    fn keys(&self) -> Vec<&str> {
        vec![TRACEPARENT]
    }
}

/// A carrier that keeps the `traceparent` injected into it.
struct Captured(Option<String>);

impl Injector for Captured {
    fn set(&mut self, key: &str, value: String) {
        if key == TRACEPARENT {
            self.0 = Some(value);
        }
    }
}

/// The exporter's HTTP client: the workspace's reqwest, on a small runtime of its own
/// (the batch processor exports from its own thread, outside the service's runtime).
#[derive(Debug)]
struct Client {
    http: reqwest::Client,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Client {
    fn new() -> Self {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|error| eprintln!("traces: no runtime for the exporter: {error}"))
            .ok();
        crate::install_tls_provider();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap_or_default();
        Self { http, runtime }
    }
}

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for Client {
    async fn send_bytes(
        &self,
        request: axum::http::Request<axum::body::Bytes>,
    ) -> Result<axum::http::Response<axum::body::Bytes>, opentelemetry_http::HttpError> {
        let runtime = self.runtime.as_ref().ok_or("the exporter has no runtime")?;
        let request = reqwest::Request::try_from(request)?;
        let http = self.http.clone();
        let (status, headers, body) = runtime.block_on(async move {
            let response = http.execute(request).await?;
            let status = response.status();
            let headers = response.headers().clone();
            let body = response.bytes().await?;
            Ok::<_, reqwest::Error>((status, headers, body))
        })?;
        let mut response = axum::http::Response::new(body);
        *response.status_mut() = status;
        *response.headers_mut() = headers;
        Ok(response)
    }
}
