//! The trace and span ids in JSON log lines: every line written inside a recorded span
//! (a request's, an event's) carries `trace_id` and `span_id`, so a line found in the
//! logs leads to its trace and back.

use std::fmt;
use std::sync::OnceLock;

use opentelemetry::trace::TraceContextExt as _;
use tracing::{Dispatch, Event, Subscriber};
use tracing_subscriber::fmt::FmtContext;
use tracing_subscriber::fmt::format::{FormatEvent, FormatFields, Writer};
use tracing_subscriber::registry::LookupSpan;

use super::trace;

/// A JSON event format with the current span's trace and span ids added.
pub(super) struct WithTraceIds<F>(pub F);

impl<S, N, F> FormatEvent<S, N> for WithTraceIds<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let ids = if trace::enabled() {
            // Not `Span::current()`: inside the subscriber, the current dispatcher is
            // none (tracing refuses re-entry), so the subscriber is looked up directly.
            let id = ctx.lookup_current().map(|span| span.id());
            id.and_then(|id| ids_of(&id))
        } else {
            None
        };
        let Some((trace_id, span_id)) = ids else {
            return self.0.format_event(ctx, writer, event);
        };
        let mut line = String::with_capacity(256);
        self.0.format_event(ctx, Writer::new(&mut line), event)?;
        // The line is one JSON object and a newline: the ids go before its last brace.
        match line.rfind('}') {
            Some(end) => {
                let (object, rest) = line.split_at(end);
                write!(
                    writer,
                    "{object},\"trace_id\":\"{trace_id}\",\"span_id\":\"{span_id}\"{rest}"
                )
            }
            None => writer.write_str(&line),
        }
    }
}

/// The process's subscriber, remembered once it is installed.
static DISPATCH: OnceLock<Dispatch> = OnceLock::new();

/// Remembers the subscriber just installed (see [`WithTraceIds`]).
pub(super) fn remember_subscriber() {
    tracing::dispatcher::get_default(|dispatch| {
        let _ = DISPATCH.set(dispatch.clone());
    });
}

fn ids_of(id: &tracing::span::Id) -> Option<(String, String)> {
    let context = tracing_opentelemetry::get_otel_context(id, DISPATCH.get()?)?;
    let span = context.span();
    let span_context = span.span_context();
    span_context.is_valid().then(|| {
        (
            span_context.trace_id().to_string(),
            span_context.span_id().to_string(),
        )
    })
}
