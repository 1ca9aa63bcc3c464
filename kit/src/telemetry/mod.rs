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
mod observe;
mod requests;

pub use observe::Observe;

use std::io::IsTerminal as _;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

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
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &http_metrics::LATENCY)
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
