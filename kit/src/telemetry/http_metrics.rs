//! `http_requests_total` and `http_request_duration_seconds`, kept by hand.
//!
//! They are recorded on every request, so they skip the `metrics` facade: each
//! (method, route, status) owns a fixed set of atomic counters (a count, a latency
//! sum and one counter per bucket), found through a per-thread cache, and rendered in
//! the Prometheus text format next to the recorder's metrics. Recording is a few
//! relaxed atomic additions, and memory does not grow between scrapes.
//!
//! Label sets are bounded: the route is the matched pattern (`/api/tickets/{id}`, or
//! `unmatched`), the method one of the standard ones or `OTHER`, and the status one
//! the service itself chose.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use axum::http::{Method, StatusCode};

/// Upper bounds of the latency buckets, in seconds.
pub(super) const LATENCY: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// The counters of one (method, route, status).
#[derive(Default)]
struct Counters {
    count: AtomicU64,
    sum_nanos: AtomicU64,
    /// Requests per bucket (not cumulative); slower than the last bound: only `count`.
    buckets: [AtomicU64; LATENCY.len()],
}

type Key = (&'static str, String, StatusCode);

/// Every label set seen so far. Entries are never removed (the label sets are
/// bounded), so they are leaked once and shared as `&'static`.
static ALL: Mutex<BTreeMap<Key, &'static Counters>> = Mutex::new(BTreeMap::new());

thread_local! {
    /// This thread's view of `ALL`, so that a request takes no shared lock.
    static CACHE: RefCell<Vec<(Key, &'static Counters)>> = const { RefCell::new(Vec::new()) };
}

/// Counts one request.
pub(super) fn record(method: &Method, route: &str, status: StatusCode, latency: Duration) {
    let counters = counters(method_label(method), route, status);
    counters.count.fetch_add(1, Relaxed);
    let nanos = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
    counters.sum_nanos.fetch_add(nanos, Relaxed);
    let seconds = latency.as_secs_f64();
    if let Some(bucket) = LATENCY.iter().position(|&bound| seconds <= bound) {
        counters.buckets[bucket].fetch_add(1, Relaxed);
    }
}

fn counters(method: &'static str, route: &str, status: StatusCode) -> &'static Counters {
    CACHE.with_borrow_mut(|cache| {
        let found = cache
            .iter()
            .find(|((m, r, s), _)| *s == status && std::ptr::eq(*m, method) && r == route);
        if let Some((_, counters)) = found {
            return *counters;
        }
        let key: Key = (method, route.to_owned(), status);
        let counters = *ALL
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(key.clone())
            .or_insert_with(|| Box::leak(Box::default()));
        cache.push((key, counters));
        counters
    })
}

fn method_label(method: &Method) -> &'static str {
    const KNOWN: [Method; 7] = [
        Method::GET,
        Method::POST,
        Method::PUT,
        Method::PATCH,
        Method::DELETE,
        Method::HEAD,
        Method::OPTIONS,
    ];
    KNOWN
        .iter()
        .find(|known| *known == method)
        .map_or("OTHER", Method::as_str)
}

/// Both metrics in the Prometheus text format.
pub(super) fn render(out: &mut String) {
    let all: Vec<(Key, &'static Counters)> = ALL
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
        .map(|(key, counters)| (key.clone(), *counters))
        .collect();
    if all.is_empty() {
        return;
    }
    let labels = |(method, route, status): &Key| {
        format!(
            "method=\"{method}\",route=\"{}\",status=\"{}\"",
            escape(route),
            status.as_u16()
        )
    };
    out.push_str("# TYPE http_requests_total counter\n");
    for (key, counters) in &all {
        let count = counters.count.load(Relaxed);
        let _ = writeln!(out, "http_requests_total{{{}}} {count}", labels(key));
    }
    out.push_str("# TYPE http_request_duration_seconds histogram\n");
    for (key, counters) in &all {
        let labels = labels(key);
        let mut cumulative = 0;
        for (bound, bucket) in LATENCY.iter().zip(&counters.buckets) {
            cumulative += bucket.load(Relaxed);
            let _ = writeln!(
                out,
                "http_request_duration_seconds_bucket{{{labels},le=\"{bound}\"}} {cumulative}"
            );
        }
        let count = counters.count.load(Relaxed);
        #[allow(clippy::cast_precision_loss)]
        let sum = counters.sum_nanos.load(Relaxed) as f64 / 1e9;
        let _ = writeln!(
            out,
            "http_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {count}\n\
             http_request_duration_seconds_sum{{{labels}}} {sum}\n\
             http_request_duration_seconds_count{{{labels}}} {count}"
        );
    }
}

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rendered() -> String {
        let mut out = String::new();
        render(&mut out);
        out
    }

    #[test]
    fn requests_are_counted_in_cumulative_buckets() {
        let route = "/test/buckets/{id}";
        record(
            &Method::GET,
            route,
            StatusCode::OK,
            Duration::from_micros(800),
        );
        record(
            &Method::GET,
            route,
            StatusCode::OK,
            Duration::from_millis(7),
        );
        record(&Method::GET, route, StatusCode::OK, Duration::from_secs(9));
        let text = rendered();
        let labels = format!("method=\"GET\",route=\"{route}\",status=\"200\"");
        for line in [
            format!("http_requests_total{{{labels}}} 3"),
            format!("http_request_duration_seconds_bucket{{{labels},le=\"0.001\"}} 1"),
            format!("http_request_duration_seconds_bucket{{{labels},le=\"0.005\"}} 1"),
            format!("http_request_duration_seconds_bucket{{{labels},le=\"0.01\"}} 2"),
            format!("http_request_duration_seconds_bucket{{{labels},le=\"5\"}} 2"),
            format!("http_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} 3"),
            format!("http_request_duration_seconds_sum{{{labels}}} 9.0078"),
            format!("http_request_duration_seconds_count{{{labels}}} 3"),
        ] {
            assert!(text.lines().any(|l| l == line), "no `{line}` in\n{text}");
        }
    }

    #[test]
    fn unknown_methods_share_one_label() {
        for name in ["BREW", "WHEN", "PROPFIND"] {
            let method = Method::from_bytes(name.as_bytes()).unwrap();
            record(
                &method,
                "/test/methods",
                StatusCode::NOT_FOUND,
                Duration::ZERO,
            );
        }
        let text = rendered();
        assert!(text.contains(
            "http_requests_total{method=\"OTHER\",route=\"/test/methods\",status=\"404\"} 3"
        ));
        assert!(!text.contains("BREW"), "{text}");
    }
}
