//! Logs and metrics.
//!
//! [`init`] installs a tracing subscriber (human-readable, or one JSON object per
//! line with `LOG_FORMAT=json`; filtered by `RUST_LOG`, default `info`) and the
//! Prometheus recorder behind `GET /metrics`. [`observe`] is the middleware that
//! gives every request a span and writes one log line and two metrics for it.

use std::sync::OnceLock;
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing::Instrument;
use tracing_subscriber::EnvFilter;

static PROMETHEUS: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs logging and metrics for this process. Safe to call more than once (tests
/// run several services in one process); only the first call takes effect.
pub fn init() {
    static LOGS: OnceLock<()> = OnceLock::new();
    LOGS.get_or_init(|| {
        let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
        let builder = tracing_subscriber::fmt().with_env_filter(filter);
        // Failing here only means a subscriber is already installed (e.g. by a test harness).
        let _ = if std::env::var("LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json")) {
            builder
                .json()
                .flatten_event(true)
                .with_current_span(true)
                .with_span_list(false)
                .try_init()
        } else {
            builder.with_target(false).try_init()
        };
    });
    prometheus();
}

fn prometheus() -> Option<&'static PrometheusHandle> {
    PROMETHEUS
        .get_or_init(|| {
            const LATENCY: &[f64] = &[
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ];
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY)
                .ok()?;
            match builder.install_recorder() {
                Ok(handle) => Some(handle),
                Err(error) => {
                    tracing::warn!(%error, "metrics recorder not installed");
                    None
                }
            }
        })
        .as_ref()
}

/// The metrics of this process in Prometheus text format.
pub fn render_metrics() -> String {
    prometheus()
        .map(PrometheusHandle::render)
        .unwrap_or_default()
}

/// Middleware: a span per request, one log line with method, route, status and
/// latency, and `http_requests_total` / `http_request_duration_seconds` by route and
/// status. The route is the matched pattern (`/api/tickets/{id}`), never the raw path,
/// so ids do not explode the metric's cardinality.
pub async fn observe(request: Request, next: Next) -> Response {
    let method = request.method().to_string();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |path| path.as_str().to_owned());
    let span = tracing::info_span!("request", %method, %route);
    let started = Instant::now();
    let response = next.run(request).instrument(span.clone()).await;
    let latency = started.elapsed();
    let status = response.status().as_u16();

    let latency_ms = latency.as_secs_f64() * 1e3;
    span.in_scope(|| tracing::info!(%method, %route, status, latency_ms, "handled"));
    let labels = [
        ("method", method),
        ("route", route),
        ("status", status.to_string()),
    ];
    metrics::counter!("http_requests_total", &labels).increment(1);
    metrics::histogram!("http_request_duration_seconds", &labels).record(latency.as_secs_f64());
    response
}
