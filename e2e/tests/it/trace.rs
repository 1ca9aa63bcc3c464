//! One trace per purchase: spans exported over OTLP to a receiver inside the test.
//!
//! An order placed and left to expire: the request, each publish and each handling, in
//! every service the events reach, are one trace, each span the child of the one that
//! caused it. `UPDATE_DOCS=1` writes the tree into the README.

use std::time::Duration;

use e2e::{Options, Stack};
use serde_json::json;
use testkit::otlp::{OtlpReceiver, ReceivedSpan, SpanKind};

/// `child`'s parent among `spans`.
fn parent<'a>(spans: &'a [ReceivedSpan], child: &ReceivedSpan) -> Option<&'a ReceivedSpan> {
    spans.iter().find(|s| s.span_id == child.parent_span_id)
}

/// The spans named `name` whose parent is `of` (and, if given, of `service`).
fn children<'a>(spans: &'a [ReceivedSpan], of: &ReceivedSpan, name: &str) -> Vec<&'a ReceivedSpan> {
    spans
        .iter()
        .filter(|s| s.parent_span_id == of.span_id && s.name == name)
        .collect()
}

fn one<'a>(
    spans: &'a [ReceivedSpan],
    of: &ReceivedSpan,
    name: &str,
    service: Option<&str>,
) -> &'a ReceivedSpan {
    let found: Vec<_> = children(spans, of, name)
        .into_iter()
        .filter(|s| service.is_none_or(|service| s.attribute("service") == Some(service)))
        .collect();
    assert!(
        !found.is_empty(),
        "no {name} ({service:?}) under {} ({})",
        of.name,
        of.span_id
    );
    found[0]
}

/// The trace as a tree: name, kind and service of each span; siblings sorted, identical
/// ones (a redelivery) shown once.
fn tree(spans: &[ReceivedSpan], root: &ReceivedSpan) -> String {
    fn lines(spans: &[ReceivedSpan], of: &ReceivedSpan, prefix: &str, out: &mut Vec<String>) {
        let mut below: Vec<(String, &ReceivedSpan)> = spans
            .iter()
            .filter(|s| s.parent_span_id == of.span_id)
            .map(|s| (label(s), s))
            .collect();
        below.sort_by(|a, b| a.0.cmp(&b.0));
        below.dedup_by(|a, b| a.0 == b.0);
        let count = below.len();
        for (index, (text, span)) in below.into_iter().enumerate() {
            let last = index + 1 == count;
            out.push(format!(
                "{prefix}{}{text}",
                if last { "└─ " } else { "├─ " }
            ));
            let deeper = format!("{prefix}{}", if last { "   " } else { "│  " });
            lines(spans, span, &deeper, out);
        }
    }
    fn label(span: &ReceivedSpan) -> String {
        let kind = match span.kind {
            SpanKind::Server => "SERVER",
            SpanKind::Producer => "PRODUCER",
            SpanKind::Consumer => "CONSUMER",
            SpanKind::Client => "CLIENT",
            _ => "INTERNAL",
        };
        let service = span.attribute("service").unwrap_or("");
        format!("{} [{kind}] {service}", span.name)
            .trim_end()
            .to_owned()
    }
    let mut out = vec![format!("{} [SERVER] orders", root.name)];
    lines(spans, root, "", &mut out);
    out.join("\n")
}

#[tokio::test]
async fn an_order_left_to_expire_is_one_trace_across_every_service_and_the_bus() {
    let receiver = OtlpReceiver::start().await;
    kit::telemetry::install_exporting_traces_to(&receiver.url);
    let stack = Stack::start(Options {
        expiration_window: Duration::from_secs(2),
    })
    .await;
    let seller = stack.sign_up("seller@test.com").await;
    let buyer = stack.sign_up("buyer@test.com").await;
    let ticket = stack.create_ticket(&seller, "Traced", json!(20)).await;
    stack.wait_for_replica_version(&ticket["id"], 0).await;
    let order = stack.order(&buyer, &ticket["id"]).await.expect(201);
    stack
        .wait_for_order_status(&buyer, &order["id"], "cancelled")
        .await;
    stack
        .wait_for_ticket(&ticket["id"], |t| t["orderId"].is_null())
        .await;

    // Every span of the order's trace: the request, and the events it caused.
    let spans = receiver
        .wait_for("the whole trace of the order", |spans| {
            let Some(request) = spans.iter().find(|s| s.name == "POST /api/orders") else {
                return false;
            };
            let of_trace = spans.iter().filter(|s| s.trace_id == request.trace_id);
            // Both releases of the ticket reach orders' replica.
            of_trace
                .filter(|s| s.name == "process ticket.updated")
                .count()
                >= 2
                && spans.iter().any(|s| {
                    s.trace_id == request.trace_id
                        && s.name == "process order.cancelled"
                        && s.attribute("service") == Some("payments")
                })
        })
        .await;
    let request = spans.iter().find(|s| s.name == "POST /api/orders").unwrap();
    let spans: Vec<ReceivedSpan> = spans
        .iter()
        .filter(|s| s.trace_id == request.trace_id)
        .cloned()
        .collect();
    assert_eq!(request.kind, SpanKind::Server);
    assert_eq!(request.attribute("http.route"), Some("/api/orders"));
    assert_eq!(request.attribute("http.request.method"), Some("POST"));
    assert_eq!(request.attribute("http.response.status_code"), Some("201"));
    assert_eq!(request.parent_span_id, "", "the request starts the trace");

    // The request appends order.created; tickets, expiration and payments handle it.
    let created = one(&spans, request, "publish order.created", None);
    assert_eq!(created.kind, SpanKind::Producer);
    assert_eq!(created.attribute("messaging.system"), Some("nats"));
    assert_eq!(
        created.attribute("messaging.destination.name"),
        Some("order.created")
    );
    for service in ["tickets", "expiration", "payments"] {
        let handled = one(&spans, created, "process order.created", Some(service));
        assert_eq!(handled.kind, SpanKind::Consumer);
        assert_eq!(
            handled.attribute("messaging.message.id"),
            created.attribute("messaging.message.id")
        );
    }
    // Tickets reserves, and orders' replica learns of it.
    let reserving = one(&spans, created, "process order.created", Some("tickets"));
    let reserved = one(&spans, reserving, "publish ticket.updated", None);
    one(&spans, reserved, "process ticket.updated", Some("orders"));
    // Expiration schedules; the expiry fires in the same trace, and orders cancels.
    let scheduling = one(&spans, created, "process order.created", Some("expiration"));
    let expiry = one(&spans, scheduling, "expire", None);
    let complete = one(&spans, expiry, "publish expiration.complete", None);
    let cancelling = one(
        &spans,
        complete,
        "process expiration.complete",
        Some("orders"),
    );
    let cancelled = one(&spans, cancelling, "publish order.cancelled", None);
    // Tickets releases the ticket (and orders' replica follows); payments' replica too.
    let releasing = one(
        &spans,
        cancelled,
        "process order.cancelled",
        Some("tickets"),
    );
    let released = one(&spans, releasing, "publish ticket.updated", None);
    one(&spans, released, "process ticket.updated", Some("orders"));
    one(
        &spans,
        cancelled,
        "process order.cancelled",
        Some("payments"),
    );
    // No span of the trace hangs loose.
    for span in &spans {
        if span.span_id != request.span_id {
            assert!(
                parent(&spans, span).is_some(),
                "{} has no parent in the trace",
                span.name
            );
        }
    }

    // The README shows this tree, as this test saw it.
    let rendered = format!("```text\n{}\n```\n", tree(&spans, request));
    let path = testkit::workspace_root().join("README.md");
    let readme = std::fs::read_to_string(&path).unwrap();
    let start = "<!-- generated: trace -->\n";
    let end = "<!-- end generated -->";
    let from = readme.find(start).expect("README has a trace section") + start.len();
    let to = from + readme[from..].find(end).unwrap();
    if std::env::var_os("UPDATE_DOCS").is_some() {
        let updated = format!("{}{rendered}{}", &readme[..from], &readme[to..]);
        std::fs::write(&path, updated).unwrap();
    } else {
        assert_eq!(
            &readme[from..to],
            rendered,
            "the README's span tree is out of date; UPDATE_DOCS=1 cargo nextest run -p e2e -E 'test(one_trace)'"
        );
    }
}
