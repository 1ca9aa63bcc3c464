//! Latency histograms (HdrHistogram), per endpoint and per journey.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Histograms by name; cheap to clone and share between tasks.
#[derive(Clone, Default)]
pub struct Recorder {
    inner: Arc<Mutex<BTreeMap<String, Series>>>,
}

struct Series {
    latencies: Histogram<u64>,
    errors: u64,
}

/// What one series came to.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub name: String,
    pub count: u64,
    pub errors: u64,
    pub per_second: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Recorder {
    /// Records one observation of `name`; `ok` false counts it as an error too.
    pub fn record(&self, name: &str, took: Duration, ok: bool) {
        let mut series = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let entry = series.entry(name.to_owned()).or_insert_with(|| Series {
            latencies: new_histogram(),
            errors: 0,
        });
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX).max(1);
        let _ = entry.latencies.record(micros.min(3_600_000_000));
        if !ok {
            entry.errors += 1;
        }
    }

    /// Every series over a run of `elapsed`.
    pub fn summaries(&self, elapsed: Duration) -> Vec<Summary> {
        let series = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        series
            .iter()
            .map(|(name, series)| summary(name, &series.latencies, series.errors, elapsed))
            .collect()
    }
}

/// Microseconds, up to an hour, 3 significant digits.
#[allow(clippy::expect_used)] // constant bounds that are valid
fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

#[allow(clippy::cast_precision_loss)]
pub fn summary(name: &str, latencies: &Histogram<u64>, errors: u64, elapsed: Duration) -> Summary {
    let ms = |micros: u64| micros as f64 / 1000.0;
    Summary {
        name: name.to_owned(),
        count: latencies.len(),
        errors,
        per_second: latencies.len() as f64 / elapsed.as_secs_f64().max(1e-9),
        p50_ms: ms(latencies.value_at_quantile(0.50)),
        p99_ms: ms(latencies.value_at_quantile(0.99)),
        max_ms: ms(latencies.max()),
    }
}

/// A histogram of values already in microseconds (database timestamps' differences).
pub fn histogram_of(micros: impl IntoIterator<Item = i64>) -> Histogram<u64> {
    let mut histogram = new_histogram();
    for value in micros {
        let _ = histogram.record(u64::try_from(value.max(1)).unwrap_or(1).min(3_600_000_000));
    }
    histogram
}

pub fn print(summaries: &[Summary]) {
    println!(
        "{:<34} {:>8} {:>7} {:>9} {:>9} {:>9} {:>9}",
        "", "count", "errors", "per s", "p50 ms", "p99 ms", "max ms"
    );
    for s in summaries {
        println!(
            "{:<34} {:>8} {:>7} {:>9.1} {:>9.2} {:>9.2} {:>9.2}",
            s.name, s.count, s.errors, s.per_second, s.p50_ms, s.p99_ms, s.max_ms
        );
    }
}
