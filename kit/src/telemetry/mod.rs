//! Logs and metrics.
//!
//! [`init`] installs a tracing subscriber (human-readable, or one JSON object per
//! line with `LOG_FORMAT=json`; filtered by `RUST_LOG`, default `info`) and the
//! Prometheus recorder behind `GET /metrics`. Log lines are written to stdout by
//! threads of their own, so a slow terminal or collector never holds up a request (if
//! they fall far behind, lines are dropped rather than requests slowed). The
//! recorder's upkeep runs every few seconds, so the histograms' memory stays flat
//! whether or not anything scrapes `/metrics`. [`Observe`] is the middleware that
//! bounds every request's time and writes one log line (`requests.rs`) and two metrics
//! for it.

mod http_metrics;
mod ids;
mod observe;
mod requests;
pub mod trace;

pub use observe::Observe;

use std::io::IsTerminal as _;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::EnvFilter;

static PROMETHEUS: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
static LOG_WRITER: Mutex<Option<WorkerGuard>> = Mutex::new(None);

/// Upper bounds of `event_lag_seconds`' buckets: an event's way from its commit to its
/// handling takes milliseconds when all is well and minutes when a consumer is
/// behind or NATS was away, so the buckets reach further than the requests' (the
/// `Full` matcher sorts before the `_seconds` suffix, so these win).
const EVENT_LAG: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

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

/// Installs logging, traces and metrics for this process of `service`. Safe to call
/// more than once (tests run several services in one process); only the first call
/// takes effect. Keep the returned value until the process exits: dropping it flushes
/// the logs and the spans not yet exported.
pub fn init(service: &'static str) -> FlushOnDrop {
    install_as(service);
    FlushOnDrop
}

/// [`init`] for processes that never exit on their own (tests): nothing to keep.
pub fn install() {
    install_as("ticketing-test");
}

/// [`install`], with spans exported to `endpoint` (an OTLP/HTTP traces URL) whatever
/// the environment says: for tests that receive them. Only the first install counts.
pub fn install_exporting_traces_to(endpoint: &str) {
    trace::export_to(endpoint);
    install();
}

fn install_as(service: &'static str) {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;

    static LOGS: OnceLock<()> = OnceLock::new();
    LOGS.get_or_init(|| {
        let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
        // The log thread writes what it has gathered in one go, then flushes.
        let stdout = std::io::BufWriter::with_capacity(64 * 1024, std::io::stdout());
        let (writer, guard) = tracing_appender::non_blocking(stdout);
        let json = std::env::var("LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json"));
        let registry = tracing_subscriber::registry()
            .with(filter)
            .with(trace::layer(service));
        requests::start(json);
        // Failing here only means a subscriber is already installed (e.g. by a test harness).
        let installed = if json {
            let format = tracing_subscriber::fmt::format()
                .json()
                .flatten_event(true)
                .with_current_span(true)
                .with_span_list(false);
            let layer = tracing_subscriber::fmt::layer()
                .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
                .event_format(ids::WithTraceIds(format))
                .with_writer(writer);
            registry.with(layer).try_init()
        } else {
            let layer = tracing_subscriber::fmt::layer()
                .with_ansi(std::io::stdout().is_terminal())
                .with_target(false)
                .with_writer(writer);
            registry.with(layer).try_init()
        };
        if installed.is_ok() {
            *lock_writer() = Some(guard);
            ids::remember_subscriber();
        }
    });
    prometheus();
}

/// Writes out what the log writers still hold, and exports the spans recorded so far
/// (before the process exits).
pub fn flush() {
    trace::flush();
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
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &http_metrics::LATENCY)
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Full("event_lag_seconds".into()), &EVENT_LAG)
                })
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
    let mut text = prometheus()
        .map(PrometheusHandle::render)
        .unwrap_or_default();
    http_metrics::render(&mut text);
    text
}
