//! The one log line per request, written off the request path.
//!
//! It is the hottest log line of every service: formatted by tracing-subscriber's
//! general formatter on the request's thread it cost about a sixth of a small
//! request's CPU (docs/benchmarks.md). So a request only appends a small record to a
//! queue (no allocation beyond the queue's, no system call, no wake-up), and a thread
//! of its own takes the whole queue every few milliseconds, formats it (the same text
//! or JSON layout as the other log lines) and writes it at once. If that thread ever
//! falls far behind, records are dropped and counted (`log_lines_dropped_total`)
//! rather than requests slowed.

use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::MatchedPath;
use axum::http::{HeaderValue, Method, StatusCode};
use chrono::{DateTime, Utc};

/// Records waiting for the log thread.
const QUEUE: usize = 64 * 1024;
/// How often the log thread writes what has queued up.
const PERIOD: Duration = Duration::from_millis(10);

/// One request, as it is logged.
pub(super) struct Record {
    pub at: SystemTime,
    pub method: Method,
    pub route: Option<MatchedPath>,
    pub status: StatusCode,
    pub latency: Duration,
    /// The ingress's `X-Request-Id`, if it gave one.
    pub request_id: Option<HeaderValue>,
    /// The request's trace and span ids, while traces are on.
    pub trace: Option<(String, String)>,
}

struct Queue {
    records: Mutex<Vec<Record>>,
    json: bool,
    /// Serialises writing, for `flush`.
    writing: Mutex<String>,
}

static QUEUED: OnceLock<Queue> = OnceLock::new();

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Starts the thread that writes request lines (`json`: one JSON object per line).
pub(super) fn start(json: bool) {
    let mut started = false;
    let queue = QUEUED.get_or_init(|| {
        started = true;
        Queue {
            records: Mutex::new(Vec::with_capacity(1024)),
            json,
            writing: Mutex::new(String::with_capacity(64 * 1024)),
        }
    });
    if started {
        let spawned = std::thread::Builder::new()
            .name("request-log".into())
            .spawn(move || {
                let mut clock = Clock::default();
                loop {
                    std::thread::sleep(PERIOD);
                    write_queued(queue, &mut clock);
                }
            });
        if let Err(error) = spawned {
            tracing::warn!(%error, "request log thread not started; request lines are lost");
        }
    }
}

/// Whether request lines are logged (`RUST_LOG` lets `info` through). The filter is
/// fixed for the life of the process, so it is asked once.
pub(super) fn enabled() -> bool {
    static ENABLED: OnceLock<bool> = OnceLock::new();
    *ENABLED.get_or_init(|| tracing::enabled!(tracing::Level::INFO))
}

/// Queues a request's record for the log thread.
pub(super) fn log(record: Record) {
    let Some(queue) = QUEUED.get() else { return };
    let mut records = lock(&queue.records);
    if records.len() < QUEUE {
        records.push(record);
    } else {
        drop(records);
        metrics::counter!("log_lines_dropped_total").increment(1);
    }
}

/// Writes out every line queued so far.
pub(super) fn flush() {
    if let Some(queue) = QUEUED.get() {
        write_queued(queue, &mut Clock::default());
    }
}

fn write_queued(queue: &Queue, clock: &mut Clock) {
    let mut batch = lock(&queue.writing);
    let records = std::mem::take(&mut *lock(&queue.records));
    if records.is_empty() {
        return;
    }
    for record in &records {
        format(&mut batch, clock, record, queue.json);
    }
    let mut stdout = std::io::stdout().lock();
    // Nothing to do if stdout is gone.
    let _ = stdout.write_all(batch.as_bytes());
    let _ = stdout.flush();
    batch.clear();
}

/// `2026-11-27T01:55:12` of the current second, remembered between lines.
#[derive(Default)]
struct Clock {
    second: u64,
    prefix: String,
}

impl Clock {
    fn timestamp(&mut self, at: SystemTime, out: &mut String) {
        let since = at.duration_since(UNIX_EPOCH).unwrap_or_default();
        if since.as_secs() != self.second || self.prefix.is_empty() {
            self.second = since.as_secs();
            let date = DateTime::<Utc>::from(at);
            self.prefix = date.format("%Y-%m-%dT%H:%M:%S").to_string();
        }
        let _ = write!(out, "{}.{:06}Z", self.prefix, since.subsec_micros());
    }
}

fn format(out: &mut String, clock: &mut Clock, record: &Record, json: bool) {
    let route = record
        .route
        .as_ref()
        .map_or("unmatched", MatchedPath::as_str);
    let latency_ms = record.latency.as_secs_f64() * 1e3;
    if json {
        out.push_str("{\"timestamp\":\"");
        clock.timestamp(record.at, out);
        out.push_str("\",\"level\":\"INFO\",\"message\":\"handled\",\"method\":\"");
        out.push_str(record.method.as_str());
        out.push_str("\",\"route\":\"");
        escape_json(route, out);
        let _ = write!(
            out,
            "\",\"status\":{},\"latency_ms\":{latency_ms:.3}",
            record.status.as_u16()
        );
        if let Some(id) = record.request_id.as_ref().and_then(|id| id.to_str().ok()) {
            out.push_str(",\"request_id\":\"");
            escape_json(id, out);
            out.push('"');
        }
        if let Some((trace_id, span_id)) = &record.trace {
            let _ = write!(
                out,
                ",\"trace_id\":\"{trace_id}\",\"span_id\":\"{span_id}\""
            );
        }
        out.push_str("}\n");
    } else {
        clock.timestamp(record.at, out);
        let _ = write!(
            out,
            "  INFO handled method={} route={route} status={} latency_ms={latency_ms:.3}",
            record.method,
            record.status.as_u16()
        );
        if let Some(id) = record.request_id.as_ref().and_then(|id| id.to_str().ok()) {
            let _ = write!(out, " request_id={id}");
        }
        if let Some((trace_id, _)) = &record.trace {
            let _ = write!(out, " trace_id={trace_id}");
        }
        out.push('\n');
    }
}

fn escape_json(text: &str, out: &mut String) {
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> Record {
        Record {
            at: UNIX_EPOCH + Duration::from_micros(1_795_000_000_123_456),
            method: Method::GET,
            route: None,
            status: StatusCode::NOT_FOUND,
            latency: Duration::from_micros(1234),
            request_id: None,
            trace: None,
        }
    }

    #[test]
    fn lines_in_the_text_layout() {
        let mut line = String::new();
        format(&mut line, &mut Clock::default(), &record(), false);
        assert_eq!(
            line,
            "2026-11-18T11:06:40.123456Z  INFO handled method=GET route=unmatched status=404 latency_ms=1.234\n"
        );
    }

    #[test]
    fn lines_as_json_objects() {
        let mut line = String::new();
        format(&mut line, &mut Clock::default(), &record(), true);
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(value["message"], "handled");
        assert_eq!(value["method"], "GET");
        assert_eq!(value["route"], "unmatched");
        assert_eq!(value["status"], 404);
        assert_eq!(value["latency_ms"].as_f64(), Some(1.234));
        assert_eq!(value["timestamp"], "2026-11-18T11:06:40.123456Z");
    }
}
