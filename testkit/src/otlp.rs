//! An OTLP/HTTP trace receiver inside the test: the services export to it as they would
//! to a collector, and the test reads the spans it got. It decodes with the protocol's
//! own protobuf types (opentelemetry-proto), so what it accepts is what a collector
//! accepts.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use axum::body::Bytes;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
pub use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use prost::Message as _;

/// A span as received, ids in lower-case hex (the parent's empty for a root).
#[derive(Debug, Clone)]
pub struct ReceivedSpan {
    pub trace_id: String,
    pub span_id: String,
    pub parent_span_id: String,
    pub name: String,
    pub kind: SpanKind,
    /// Its attributes, values as text.
    pub attributes: BTreeMap<String, String>,
    /// `service.name` of the resource that sent it.
    pub service: String,
}

impl ReceivedSpan {
    pub fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }
}

/// The receiver: `url` takes `POST /v1/traces`.
pub struct OtlpReceiver {
    pub url: String,
    spans: Arc<Mutex<Vec<ReceivedSpan>>>,
}

impl OtlpReceiver {
    pub async fn start() -> Self {
        let spans: Arc<Mutex<Vec<ReceivedSpan>>> = Arc::default();
        let kept = spans.clone();
        let app = axum::Router::new().route(
            "/v1/traces",
            axum::routing::post(move |body: Bytes| {
                let kept = kept.clone();
                async move { receive(&kept, &body) }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|error| panic!("binding the OTLP receiver: {error}"));
        let address = listener
            .local_addr()
            .unwrap_or_else(|error| panic!("the OTLP receiver's address: {error}"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self {
            url: format!("http://{address}/v1/traces"),
            spans,
        }
    }

    /// Waits (up to [`crate::WAIT`]) until the spans received satisfy `done`, exporting
    /// what the process has recorded at each look; returns them.
    pub async fn wait_for(
        &self,
        what: &str,
        done: impl Fn(&[ReceivedSpan]) -> bool,
    ) -> Vec<ReceivedSpan> {
        let deadline = std::time::Instant::now() + crate::WAIT;
        loop {
            let _ = tokio::task::spawn_blocking(kit::telemetry::trace::flush).await;
            let spans = self.spans();
            if done(&spans) {
                return spans;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "timed out waiting for {what}; received: {spans:#?}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.spans
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

fn receive(kept: &Mutex<Vec<ReceivedSpan>>, body: &[u8]) -> impl IntoResponse + use<> {
    let Ok(request) = ExportTraceServiceRequest::decode(body) else {
        return (StatusCode::BAD_REQUEST, Vec::new()).into_response();
    };
    let mut received = Vec::new();
    for resource_spans in request.resource_spans {
        let resource = resource_spans.resource.unwrap_or_default();
        let service = attributes(&resource.attributes)
            .remove("service.name")
            .unwrap_or_default();
        for scope_spans in resource_spans.scope_spans {
            for span in scope_spans.spans {
                received.push(ReceivedSpan {
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent_span_id: hex(&span.parent_span_id),
                    kind: SpanKind::try_from(span.kind).unwrap_or(SpanKind::Unspecified),
                    attributes: attributes(&span.attributes),
                    name: span.name,
                    service: service.clone(),
                });
            }
        }
    }
    kept.lock()
        .unwrap_or_else(PoisonError::into_inner)
        .extend(received);
    let answer = ExportTraceServiceResponse::default().encode_to_vec();
    ([(header::CONTENT_TYPE, "application/x-protobuf")], answer).into_response()
}

fn attributes(
    list: &[opentelemetry_proto::tonic::common::v1::KeyValue],
) -> BTreeMap<String, String> {
    list.iter()
        .map(|kv| {
            let value = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(Value::StringValue(s)) => s.clone(),
                Some(Value::IntValue(i)) => i.to_string(),
                Some(Value::BoolValue(b)) => b.to_string(),
                Some(Value::DoubleValue(d)) => d.to_string(),
                Some(other) => format!("{other:?}"),
                None => String::new(),
            };
            (kv.key.clone(), value)
        })
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
