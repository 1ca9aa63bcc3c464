//! Logs and metrics.
//!
//! [`init`] installs a tracing subscriber (human-readable, or one JSON object per
//! line with `LOG_FORMAT=json`; filtered by `RUST_LOG`, default `info`) and the
//! Prometheus recorder behind `GET /metrics`. Log lines are written to stdout by
//! threads of their own, so a slow terminal or collector never holds up a request (if
//! they fall far behind, lines are dropped rather than requests slowed). The
//! recorder's upkeep runs every few seconds, so the histograms' memory stays flat
//! whether or not anything scrapes `/metrics`. [`observe`] is the middleware that
//! bounds every request's time and writes one log line ([`requests`]) and two metrics
//! for it.

mod requests;

use std::collections::HashMap;
use std::io::IsTerminal as _;
use std::sync::{Mutex, OnceLock, PoisonError, RwLock};
use std::time::{Duration, Instant, SystemTime};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse as _, Response};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
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
        // The log thread writes what it has gathered in one go, then flushes.
        let stdout = std::io::BufWriter::with_capacity(64 * 1024, std::io::stdout());
        let (writer, guard) = tracing_appender::non_blocking(stdout);
        let builder = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(std::io::stdout().is_terminal())
            .with_writer(writer);
        let json = std::env::var("LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json"));
        requests::start(json);
        // Failing here only means a subscriber is already installed (e.g. by a test harness).
        let installed = if json {
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

/// Writes out what the log writers still hold (before the process exits).
pub fn flush() {
    requests::flush();
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

/// The metric handles of one (method, route, status), registered once and reused: a
/// request then costs one map lookup instead of building and hashing label sets.
#[derive(Clone)]
struct RequestMetrics {
    count: metrics::Counter,
    latency: metrics::Histogram,
}

/// Handles by route, then by method and status.
type Handles = HashMap<String, HashMap<(Method, StatusCode), RequestMetrics>>;

fn request_metrics(method: &Method, route: &str, status: StatusCode) -> RequestMetrics {
    static HANDLES: OnceLock<RwLock<Handles>> = OnceLock::new();
    let handles = HANDLES.get_or_init(RwLock::default);
    let key = (method.clone(), status);
    let known = handles
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .get(route)
        .and_then(|by_status| by_status.get(&key).cloned());
    if let Some(known) = known {
        return known;
    }
    let labels = [
        ("method", method.to_string()),
        ("route", route.to_owned()),
        ("status", status.as_u16().to_string()),
    ];
    let made = RequestMetrics {
        count: metrics::counter!("http_requests_total", &labels),
        latency: metrics::histogram!("http_request_duration_seconds", &labels),
    };
    handles
        .write()
        .unwrap_or_else(PoisonError::into_inner)
        .entry(route.to_owned())
        .or_default()
        .insert(key, made.clone());
    made
}

/// Middleware: bounds the request's time (`REQUEST_TIMEOUT_SECONDS`: a request still
/// running then is abandoned, its transaction rolled back, and answered 503), then
/// writes one log line with method, route, status and latency and records
/// `http_requests_total` / `http_request_duration_seconds` by route and status. The
/// route is the matched pattern (`/api/tickets/{id}`), never the raw path, so ids do
/// not explode the metric's cardinality.
///
/// It is on every request's path, so it is kept cheap: no span (what happens inside a
/// request is logged with its own context), metric handles registered once, and the
/// line formatted and written by the log thread.
pub async fn observe(State(limit): State<Duration>, request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let route = request.extensions().get::<MatchedPath>().cloned();
    let started = Instant::now();
    let response = match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            tracing::warn!(
                limit_ms = limit.as_millis(),
                route = route.as_ref().map(MatchedPath::as_str),
                "request timed out"
            );
            crate::Error::Unavailable("The request took too long; please try again".into())
                .into_response()
        }
    };
    let latency = started.elapsed();
    let status = response.status();

    let metrics = request_metrics(
        &method,
        route.as_ref().map_or("unmatched", MatchedPath::as_str),
        status,
    );
    metrics.count.increment(1);
    metrics.latency.record(latency.as_secs_f64());
    if tracing::enabled!(tracing::Level::INFO) {
        requests::log(requests::Record {
            at: SystemTime::now(),
            method,
            route,
            status,
            latency,
        });
    }
    response
}
