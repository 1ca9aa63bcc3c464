//! `docs/benchmarks.md` from `make bench`'s runs: between its `generated` markers, the
//! targets as each run met them, then the last run's tables, and the chart
//! `docs/benchmarks.svg` of that run; the rest of the file (the profiling notes) is left
//! as written.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;

use crate::bench::{Results, Throughput};

/// A measured rate against its ceiling, with the target share.
struct Ratio<'a> {
    subject: &'a Throughput,
    ceiling: &'a Throughput,
    target: Option<f64>,
}

impl Ratio<'_> {
    fn share(&self) -> f64 {
        self.subject.per_second / self.ceiling.per_second.max(1e-9)
    }

    fn verdict(&self) -> &'static str {
        match self.target {
            Some(target) if self.share() >= target => "met",
            Some(_) => "missed",
            None => "",
        }
    }
}

/// The bus's ceilings (`bench::jetstream_publish_rates`, `bench::disk_sync_rate`).
pub(crate) const JETSTREAM_PUBLISH: &str = "JetStream acked publish";
pub(crate) const JETSTREAM_ATOMIC: &str = "JetStream atomic batches of 256";
pub(crate) const DISK_SYNC: &str = "disk: 200 B append + fdatasync";

fn find<'a>(list: &'a [Throughput], name: &str) -> anyhow::Result<&'a Throughput> {
    list.iter()
        .find(|t| t.name == name)
        .with_context(|| format!("no result for {name}"))
}

fn ratios(results: &Results) -> anyhow::Result<Vec<Ratio<'_>>> {
    let ceiling = |name| find(&results.ceilings, name);
    let ours = |name| find(&results.http, name);
    Ok(vec![
        Ratio {
            subject: ours("GET /healthz")?,
            ceiling: ceiling("hello")?,
            target: Some(0.85),
        },
        Ratio {
            subject: ours("GET /api/users/currentuser")?,
            ceiling: ceiling("hello")?,
            target: Some(0.75),
        },
        Ratio {
            subject: ours("GET /api/tickets/{id}")?,
            ceiling: ceiling("pgbench select by id")?,
            target: Some(0.50),
        },
        Ratio {
            subject: ours("GET /api/tickets?limit=20")?,
            ceiling: ceiling("pgbench list page")?,
            target: None,
        },
        Ratio {
            subject: ours("POST /api/tickets")?,
            ceiling: ceiling("pgbench insert")?,
            target: Some(0.50),
        },
        Ratio {
            subject: ours("POST /api/orders")?,
            ceiling: ceiling("pgbench insert")?,
            target: Some(0.25),
        },
    ])
}

fn tables(results: &Results) -> anyhow::Result<String> {
    let mut out = String::new();
    writeln!(
        out,
        "Measured {} on {} (release builds, default settings, the local stack of `make bench`).\n",
        results.date, results.machine
    )?;
    writeln!(
        out,
        "![Our throughput as a share of its ceiling](benchmarks.svg)\n"
    )?;
    writeln!(out, "### Ceilings\n")?;
    writeln!(
        out,
        "| ceiling | per second | p50 ms | runs |\n|---|---:|---:|---|"
    )?;
    for c in &results.ceilings {
        writeln!(
            out,
            "| {} | {:.0} | {:.2} | {} |",
            c.name,
            c.per_second,
            c.p50_ms,
            runs(c)
        )?;
    }
    writeln!(
        out,
        "\nHTTP rates: wrk -t2 -c64 -d5s (-c16 for inserts), median of three alternating runs; pgbench -M prepared, same clients, latency is its average.\n"
    )?;
    if let (Ok(pipelined), Ok(atomic)) = (
        find(&results.ceilings, JETSTREAM_PUBLISH),
        find(&results.ceilings, JETSTREAM_ATOMIC),
    ) {
        write!(
            out,
            "JetStream (file storage, `sync_interval: always`): atomic batches of 256 reach {:.1}× the acknowledged publishes with 256 in flight",
            atomic.per_second / pipelined.per_second
        )?;
        if let Ok(disk) = find(&results.ceilings, DISK_SYNC) {
            write!(
                out,
                "; the disk's own ceiling, one writer's 200-byte appends made durable one at a time with `fdatasync` in NATS's store directory ({:.2} ms each), is {:.1}× the acknowledged publishes",
                disk.p50_ms,
                disk.per_second / pipelined.per_second
            )?;
        }
        writeln!(out, ".\n")?;
    }
    writeln!(out, "### Ours, against the ceilings\n")?;
    writeln!(
        out,
        "| endpoint | req/s | p50 ms | p99 ms | ceiling | share | target | |\n|---|---:|---:|---:|---|---:|---:|---|"
    )?;
    for ratio in ratios(results)? {
        let s = ratio.subject;
        writeln!(
            out,
            "| `{}` | {:.0} | {:.2} | {:.2} | {} | {:.0} % | {} | {} |",
            s.name,
            s.per_second,
            s.p50_ms,
            s.p99_ms,
            ratio.ceiling.name,
            ratio.share() * 100.0,
            ratio
                .target
                .map(|t| format!("≥ {:.0} %", t * 100.0))
                .unwrap_or_default(),
            ratio.verdict()
        )?;
    }
    let j = &results.journeys;
    writeln!(
        out,
        "| full purchase journeys (sign-in pool, sell, order, pay, see it complete; 32 at a time, through the ingress) | {:.1} | {:.1} | {:.1} | | | | |",
        j.per_second, j.p50_ms, j.p99_ms
    )?;
    writeln!(
        out,
        "\n`POST /api/orders`: 1,000 orders of distinct tickets, 64 at a time, each of the 64 by a buyer of its own (one user's orders are placed one at a time: the cap on unpaid orders locks the user).\n"
    )?;

    writeln!(
        out,
        "### Event propagation\n\n`ticket.created` committed in tickets → the row in the orders replica (database timestamps, one clock).\n"
    )?;
    writeln!(
        out,
        "| load | events | p50 ms | p99 ms | max ms | target |\n|---|---:|---:|---:|---:|---|"
    )?;
    for p in &results.propagation {
        let (target, met) = propagation_target(p);
        writeln!(
            out,
            "| {} | {} | {:.1} | {:.1} | {:.1} | {target}: {} |",
            p.name,
            p.count,
            p.p50_ms,
            p.p99_ms,
            p.max_ms,
            if met { "met" } else { "missed" }
        )?;
    }
    if let Some(b) = &results.backlog {
        writeln!(
            out,
            "\n### A backlog of events\n\n{} `ticket.created` committed in one transaction, written straight into tickets' database: the relay finds them at its next poll (within 1 s) and publishes them; the orders replica's rate is from the first to the last replicated.\n",
            b.events
        )?;
        writeln!(
            out,
            "| events | outbox drained s | replica first to last s | into the replica /s | target |\n|---:|---:|---:|---:|---|"
        )?;
        writeln!(
            out,
            "| {} | {:.2} | {:.2} | {:.0} | ≥ 6000/s: {} |",
            b.events,
            b.drained_s,
            b.replicated_s,
            b.per_second,
            if b.per_second >= 6000.0 {
                "met"
            } else {
                "missed"
            }
        )?;
        let relayed = relay_rate(b);
        let share = |name| {
            find(&results.ceilings, name)
                .map(|c| format!("{:.0} %", 100.0 * relayed / c.per_second))
                .unwrap_or_else(|_| "–".into())
        };
        #[allow(clippy::cast_precision_loss)]
        let from_commit = b.events as f64 / b.drained_s.max(1e-3);
        writeln!(
            out,
            "\nThe relay published {relayed:.0} events/s {}: {} of JetStream's atomic batches above (the best publishing the bus offers), {} of its acknowledged publishes, {} of the disk's `fdatasync` rate. Counting from the commit, its poll's wait included: {from_commit:.0}/s.",
            if b.relay_per_second.is_some() {
                "from its first published batch to its last"
            } else {
                "counting from the commit (this run did not time its first batch)"
            },
            share(JETSTREAM_ATOMIC),
            share(JETSTREAM_PUBLISH),
            share(DISK_SYNC)
        )?;
    }
    let l = &results.lateness;
    writeln!(
        out,
        "\n### Expiration lateness\n\n{} (`expiresAt` within {:.0} ms of each other): `expiresAt` → order `cancelled` in the orders database.\n",
        l.name, l.spread_ms
    )?;
    writeln!(
        out,
        "| orders | p50 ms | p99 ms | max ms | target |\n|---:|---:|---:|---:|---|"
    )?;
    writeln!(
        out,
        "| {} | {:.0} | {:.0} | {:.0} | p99 < 500: {} |",
        l.count,
        l.p50_ms,
        l.p99_ms,
        l.max_ms,
        if l.p99_ms < 500.0 { "met" } else { "missed" }
    )?;
    if let Some(cost) = &results.expiry_cost {
        write_expiry_cost(&mut out, cost)?;
    }

    writeln!(
        out,
        "\n### Memory and start-up\n\nResident memory (RSS) of each service: idle after start, the peak during the run (`VmHWM`), and 15 s after the last burst.\n"
    )?;
    writeln!(
        out,
        "| service | idle MB | peak MB | after the burst MB | start-up to /readyz ms | idle < 20 MB |\n|---|---:|---:|---:|---:|---|"
    )?;
    for m in &results.memory {
        #[allow(clippy::cast_precision_loss)]
        let mb = |kb: u64| kb as f64 / 1024.0;
        writeln!(
            out,
            "| {} | {:.1} | {:.1} | {:.1} | {:.0} | {} |",
            m.service,
            mb(m.idle_kb),
            mb(m.peak_kb),
            mb(m.after_burst_kb),
            results
                .startup_ms
                .get(&m.service)
                .copied()
                .unwrap_or_default(),
            if mb(m.idle_kb) < 20.0 {
                "met"
            } else {
                "missed"
            }
        )?;
    }
    Ok(out)
}

fn runs(t: &Throughput) -> String {
    t.runs
        .iter()
        .map(|r| format!("{r:.0}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A horizontal bar per endpoint: its share of the ceiling, with the target marked.
fn chart(results: &Results) -> anyhow::Result<String> {
    let ratios = ratios(results)?;
    let (left, width, row) = (250.0, 420.0, 34.0);
    #[allow(clippy::cast_precision_loss)]
    let height = 60.0 + row * ratios.len() as f64;
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{height}\" viewBox=\"0 0 {w} {height}\" font-family=\"sans-serif\" font-size=\"13\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"#ffffff\"/>\n\
         <text x=\"12\" y=\"22\" font-size=\"15\" font-weight=\"bold\">Throughput as a share of its ceiling (same run)</text>\n",
        w = left + width + 90.0
    );
    for tick in [0.0, 0.25, 0.5, 0.75, 1.0] {
        let x = left + width * tick;
        let _ = writeln!(
            svg,
            "<line x1=\"{x}\" y1=\"36\" x2=\"{x}\" y2=\"{}\" stroke=\"#d0d7de\"/><text x=\"{x}\" y=\"{}\" text-anchor=\"middle\" fill=\"#656d76\">{:.0}%</text>",
            height - 18.0,
            height - 4.0,
            tick * 100.0
        );
    }
    for (index, ratio) in ratios.iter().enumerate() {
        #[allow(clippy::cast_precision_loss)]
        let y = 42.0 + row * index as f64;
        let share = ratio.share().min(1.2);
        let colour = match ratio.verdict() {
            "met" => "#1a7f37",
            "missed" => "#cf222e",
            _ => "#0969da",
        };
        let _ = write!(
            svg,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>\n<rect x=\"{left}\" y=\"{y}\" width=\"{}\" height=\"20\" fill=\"{colour}\"/>\n<text x=\"{}\" y=\"{}\">{:.0}%</text>\n",
            left - 8.0,
            y + 15.0,
            xml(&ratio.subject.name),
            width * share,
            left + width * share + 6.0,
            y + 15.0,
            ratio.share() * 100.0
        );
        if let Some(target) = ratio.target {
            let x = left + width * target;
            let _ = writeln!(
                svg,
                "<line x1=\"{x}\" y1=\"{}\" x2=\"{x}\" y2=\"{}\" stroke=\"#1f2328\" stroke-width=\"2\" stroke-dasharray=\"3,2\"/>",
                y - 3.0,
                y + 23.0
            );
        }
    }
    svg.push_str("</svg>\n");
    Ok(svg)
}

fn xml(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The relay's rate: from its first published batch when the run timed it, else from
/// the commit (the poll's wait included).
#[allow(clippy::cast_precision_loss)]
fn relay_rate(b: &crate::bench::Backlog) -> f64 {
    b.relay_per_second
        .unwrap_or(b.events as f64 / b.drained_s.max(1e-3))
}

/// Event propagation's target at its load (200 or 1,000 tickets a second), and whether
/// `p` met it.
fn propagation_target(p: &crate::bench::Delays) -> (&'static str, bool) {
    if p.name.starts_with("200") {
        ("p50 < 5, p99 < 25", p.p50_ms < 5.0 && p.p99_ms < 25.0)
    } else {
        ("p99 < 100", p.p99_ms < 100.0)
    }
}

/// One target as one run met it: the figure as written and whether it held (`None`
/// when the run did not measure it).
struct Verdict {
    measure: String,
    target: &'static str,
    figure: String,
    met: Option<bool>,
}

/// Every target of docs/benchmarks.md, as `results` met them.
fn verdicts(results: &Results) -> anyhow::Result<Vec<Verdict>> {
    let mut out = Vec::new();
    let backlog = results.backlog.as_ref();
    out.push(Verdict {
        measure: "10,000 queued `ticket.created` into the orders replica".into(),
        target: "≥ 6000/s",
        figure: backlog.map_or("–".into(), |b| format!("{:.0}/s", b.per_second)),
        met: backlog.map(|b| b.per_second >= 6000.0),
    });
    for p in &results.propagation {
        let (target, met) = propagation_target(p);
        out.push(Verdict {
            measure: format!("propagation at {}, p50 / p99 ms", p.name),
            target,
            figure: format!("{:.1} / {:.1}", p.p50_ms, p.p99_ms),
            met: Some(met),
        });
    }
    out.push(Verdict {
        measure: format!("{}: lateness p99", results.lateness.name),
        target: "< 500 ms",
        figure: format!("{:.0} ms", results.lateness.p99_ms),
        met: Some(results.lateness.p99_ms < 500.0),
    });
    let cost = results.expiry_cost.as_ref();
    out.push(Verdict {
        measure: "CPU per expiry, all processes".into(),
        target: "< 2 ms",
        figure: cost.map_or("–".into(), |c| format!("{:.2} ms", c.cpu_ms)),
        met: cost.map(|c| c.cpu_ms < 2.0),
    });
    let relay = backlog.and_then(|b| {
        let atomic = find(&results.ceilings, JETSTREAM_ATOMIC).ok()?;
        Some(relay_rate(b) / atomic.per_second.max(1e-9))
    });
    out.push(Verdict {
        measure: "relay: outbox → JetStream, of atomic batches".into(),
        target: "≥ 90 %",
        figure: relay.map_or("–".into(), |r| format!("{:.0} %", 100.0 * r)),
        met: relay.map(|r| r >= 0.9),
    });
    for ratio in ratios(results)? {
        let target = match ratio.target {
            Some(t) if t >= 0.85 => "≥ 85 %",
            Some(t) if t >= 0.75 => "≥ 75 %",
            Some(t) if t >= 0.5 => "≥ 50 %",
            Some(_) => "≥ 25 %",
            None => continue,
        };
        out.push(Verdict {
            measure: format!("`{}` / {}", ratio.subject.name, ratio.ceiling.name),
            target,
            figure: format!("{:.0} %", 100.0 * ratio.share()),
            met: Some(ratio.verdict() == "met"),
        });
    }
    Ok(out)
}

/// The targets, a column per run, and whether each held in every run.
fn targets_by_run(runs: &[Results]) -> anyhow::Result<String> {
    let per_run = runs
        .iter()
        .map(verdicts)
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut out = String::new();
    writeln!(
        out,
        "### Targets, run by run

{} consecutive runs, each on a fresh stack ({}); a target counts as held only if it held in every run.
",
        runs.len(),
        runs.iter()
            .map(|r| r.date.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    )?;
    write!(out, "| measure | target |")?;
    for n in 1..=runs.len() {
        write!(out, " run {n} |")?;
    }
    writeln!(out, " held in every run |")?;
    writeln!(out, "|---|---|{}---|", "---:|".repeat(runs.len()))?;
    let Some(first) = per_run.first() else {
        return Ok(out);
    };
    for (row, verdict) in first.iter().enumerate() {
        write!(out, "| {} | {} |", verdict.measure, verdict.target)?;
        let mut held = true;
        for run in &per_run {
            let cell = run.get(row);
            let mark = match cell.and_then(|c| c.met) {
                Some(true) => "",
                Some(false) => " ✗",
                None => " ?",
            };
            held &= cell.and_then(|c| c.met) == Some(true);
            write!(out, " {}{mark} |", cell.map_or("–", |c| c.figure.as_str()))?;
        }
        writeln!(out, " {} |", if held { "yes" } else { "no" })?;
    }
    writeln!(
        out,
        "
✗: missed in that run. The tables below are the last run's.
"
    )?;
    Ok(out)
}

/// Fills the generated part of `markdown` (between `<!-- generated: results -->` and
/// `<!-- end generated -->`) from every run, and writes the last run's chart beside it.
pub fn write(runs: &[Results], markdown: &Path) -> anyhow::Result<()> {
    let last = runs.last().context("no results")?;
    fill(
        markdown,
        "<!-- generated: results -->\n",
        "<!-- end generated -->",
        &format!("{}{}", targets_by_run(runs)?, tables(last)?),
    )?;
    std::fs::write(markdown.with_extension("svg"), chart(last)?)?;
    Ok(())
}

/// Replaces what lies between `start` and `end` in `markdown` with `text` (the
/// section is appended, with its markers, when the document has none).
fn fill(markdown: &Path, start: &str, end: &str, text: &str) -> anyhow::Result<()> {
    let mut document =
        std::fs::read_to_string(markdown).unwrap_or_else(|_| "# Benchmarks\n".to_owned());
    if !document.contains(start) {
        document = format!("{}\n\n{start}{end}\n", document.trim_end());
    }
    let from = document.find(start).context("no generated marker")? + start.len();
    let to = from + document[from..].find(end).context("no end marker")?;
    let filled = format!("{}{}{}", &document[..from], text, &document[to..]);
    std::fs::write(markdown, filled)?;
    Ok(())
}

/// The cluster's section: the figures of one full `make cluster-chaos` run, with the
/// single-node stack's throughput measured in the same run.
pub fn write_cluster(results: &Path, baseline: &Path, markdown: &Path) -> anyhow::Result<()> {
    let read = |path: &Path| -> anyhow::Result<serde_json::Value> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Ok(serde_json::from_str(&text)?)
    };
    let (results, baseline) = (read(results)?, read(baseline)?);
    let mut text = String::new();
    let cluster = results["throughput"]["per_second"]
        .as_f64()
        .unwrap_or_default();
    let single = baseline["per_second"].as_f64().unwrap_or_default();
    let _ = writeln!(
        text,
        "Throughput, closed loop ({} journeys at a time, the mix of `loadgen journeys`):\n\n\
         | | journeys/s | ratio |\n|---|---:|---:|\n\
         | the single-node stack (`make up`) | {single:.1} | 1.00 |\n\
         | the cluster (`make cluster`: two replicas, three NATS nodes, synchronous standbys) | {cluster:.1} | {:.2} |\n",
        baseline["concurrency"].as_u64().unwrap_or_default(),
        if single > 0.0 { cluster / single } else { 0.0 },
    );
    let _ = writeln!(
        text,
        "Each fault of the full plan, under journeys at {} per second:\n",
        results["rate"].as_f64().unwrap_or_default()
    );
    let _ = writeln!(text, "| {} |", crate::cluster::FAULT_COLUMNS.join(" | "));
    let _ = writeln!(
        text,
        "|{}|",
        crate::cluster::FAULT_COLUMNS
            .iter()
            .map(|_| "---")
            .collect::<Vec<_>>()
            .join("|")
    );
    for row in crate::cluster::fault_rows(&results) {
        let _ = writeln!(text, "| {} |", row.join(" | "));
    }
    let violations = results["findings"]["violations"]
        .as_array()
        .map_or(0, Vec::len)
        + results["cluster_violations"].as_array().map_or(0, Vec::len);
    let _ = writeln!(
        text,
        "\n{} journeys, {} events handled, {} tickets, {} orders, {} charges; {violations} invariant violations.\n",
        results["journeys"]["journeys"].as_object().map_or(0, |j| j
            .values()
            .map(|o| o["ok"].as_u64().unwrap_or(0) + o["failed"].as_u64().unwrap_or(0))
            .sum::<u64>()),
        results["findings"]["events_handled"],
        results["findings"]["tickets"],
        results["findings"]["orders"],
        results["findings"]["charges"],
    );
    fill(
        markdown,
        "<!-- generated: cluster -->\n",
        "<!-- end generated: cluster -->",
        &text,
    )
}

/// What one expiry cost, from the first order due until every consequence was in.
fn write_expiry_cost(out: &mut String, cost: &crate::fanout::Cost) -> std::fmt::Result {
    writeln!(
        out,
        "\nOne expiry's fan-out, from the first order due until every ticket was free again and both replicas had the cancellation (an idle second before it subtracted): **{:.2} CPU-ms** across all processes (target < 2: {}).",
        cost.cpu_ms,
        if cost.cpu_ms < 2.0 { "met" } else { "missed" }
    )?;
    if cost.statements.is_empty() {
        return writeln!(
            out,
            "Statements were not counted (the stack's PostgreSQL ran without `PG_STATEMENT_STATS=on`)."
        );
    }
    writeln!(
        out,
        "\n| database | statements per expiry | commits per expiry |\n|---|---:|---:|"
    )?;
    for (db, n) in &cost.statements {
        let commits = cost.transactions.get(db).copied().unwrap_or(0.0);
        writeln!(out, "| {db} | {n:.2} | {commits:.2} |")?;
    }
    Ok(())
}
