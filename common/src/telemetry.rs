//! Logs and metrics.
//!
//! [`init`] installs a tracing subscriber (human-readable, or one JSON object per
//! line with `LOG_FORMAT=json`; filtered by `RUST_LOG`, default `info`) and the
//! Prometheus recorder behind `GET /metrics`. Log lines are formatted on the calling
//! thread but written to stdout by a thread of their own, so a slow terminal or
//! collector never holds up a request (if it falls far behind, lines are dropped
//! rather than requests slowed). The recorder's upkeep runs every few seconds, so the
//! histograms' memory stays flat whether or not anything scrapes `/metrics`.
//! [`observe`] is the middleware that gives every request a span and writes one log
//! line and two metrics for it.

use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing::Instrument;
use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::EnvFilter;

static PROMETHEUS: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
static LOG_WRITER: Mutex<Option<WorkerGuard>> = Mutex::new(None);

/// How often the metrics recorder drains recorded histogram samples into buckets.
pub const METRICS_UPKEEP: Duration = Duration::from_secs(5);

/// Flushes the log writer when dropped (see [`init`]).
#[must_use = "logs written just before exit are lost unless this is kept until then"]
pub struct FlushOnDrop;

impl Drop for FlushOnDrop {
    fn drop(&mut self) {
        flush();
    }
}

/// Installs logging and metrics for this process. Safe to call more than once (tests
/// run several services in one process); only the first call takes effect. Keep the
/// returned value until the process exits: dropping it flushes the logs.
pub fn init() -> FlushOnDrop {
    install();
    FlushOnDrop
}

/// [`init`] for processes that never exit on their own (tests): nothing to keep.
pub fn install() {
    static LOGS: OnceLock<()> = OnceLock::new();
    LOGS.get_or_init(|| {
        let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
        let (writer, guard) = tracing_appender::non_blocking(std::io::stdout());
        let builder = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(writer);
        // Failing here only means a subscriber is already installed (e.g. by a test harness).
        let installed = if std::env::var("LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json"))
        {
            builder
                .json()
                .flatten_event(true)
                .with_current_span(true)
                .with_span_list(false)
                .try_init()
        } else {
            builder.with_target(false).try_init()
        };
        if installed.is_ok() {
            *lock_writer() = Some(guard);
        }
    });
    prometheus();
}

/// Writes out what the log writer still holds (before the process exits).
pub fn flush() {
    drop(lock_writer().take());
}

fn lock_writer() -> std::sync::MutexGuard<'static, Option<WorkerGuard>> {
    LOG_WRITER
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
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
                Ok(handle) => {
                    let upkeep = handle.clone();
                    let spawned = std::thread::Builder::new()
                        .name("metrics-upkeep".into())
                        .spawn(move || {
                            loop {
                                std::thread::sleep(METRICS_UPKEEP);
                                upkeep.run_upkeep();
                            }
                        });
                    if let Err(error) = spawned {
                        tracing::warn!(%error, "metrics upkeep not started");
                    }
                    Some(handle)
                }
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
