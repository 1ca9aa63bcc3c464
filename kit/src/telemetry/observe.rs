//! The middleware around every request: a time limit, panic recovery, one log line,
//! two metrics.
//!
//! It is on every request's path, so it is one plain tower layer rather than several
//! (axum wraps every route in each layer it is given, at the cost of a boxed clone and
//! a boxed future per request each) or `axum::middleware::from_fn` (which boxes a
//! future and clones the inner service per request). It creates the timer only once a
//! request has to wait (a request answered on its first poll never touches the timer
//! wheel), keeps its two metrics by hand ([`super::http_metrics`]), and leaves the log
//! line's formatting to the log
//! thread ([`super::requests`]).

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant, SystemTime};

use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderValue, Method};
use axum::response::{IntoResponse as _, Response};
use pin_project_lite::pin_project;
use tokio::time::Sleep;
use tower::{Layer, Service};

use super::{http_metrics, requests, trace};
use crate::supervisor::panic_message;
use common::Error;
use common::error::Failure;

/// Bounds each request's time (`REQUEST_TIMEOUT_SECONDS`: a request still running then
/// is abandoned, its transaction rolled back, and answered 503), answers a handler's
/// panic with 500 (the message only in the log), then writes one log
/// line with method, route, status and latency and records `http_requests_total` /
/// `http_request_duration_seconds` by route and status. The route is the matched
/// pattern (`/api/tickets/{id}`), never the raw path, so ids do not explode the
/// metric's cardinality.
#[derive(Debug, Clone, Copy)]
pub struct Observe {
    limit: Duration,
}

impl Observe {
    pub fn new(limit: Duration) -> Self {
        Self { limit }
    }
}

impl<S> Layer<S> for Observe {
    type Service = Observed<S>;

    fn layer(&self, inner: S) -> Observed<S> {
        Observed {
            inner,
            limit: self.limit,
        }
    }
}

/// A service wrapped by [`Observe`].
#[derive(Debug, Clone)]
pub struct Observed<S> {
    inner: S,
    limit: Duration,
}

impl<S, E> Service<Request> for Observed<S>
where
    S: Service<Request, Response = Response, Error = E>,
{
    type Response = Response;
    type Error = E;
    type Future = ObservedFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), E>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let method = request.method().clone();
        let route = request.extensions().get::<MatchedPath>().cloned();
        // Copied, not cloned: a header parsed by hyper shares the connection's read
        // buffer, and the record that carries it to the log thread would keep that
        // buffer from being reused for the next request.
        let request_id = request
            .headers()
            .get(REQUEST_ID)
            .and_then(|id| HeaderValue::from_bytes(id.as_bytes()).ok());
        let span = trace::enabled().then(|| request_span(&request, route.as_ref()));
        let inner = &mut self.inner;
        let (response, answer) =
            match std::panic::catch_unwind(AssertUnwindSafe(|| inner.call(request))) {
                Ok(future) => (Some(future), None),
                Err(panic) => (None, Some(panicked(panic.as_ref()))),
            };
        ObservedFuture {
            response,
            answer,
            timer: None,
            limit: self.limit,
            started: Instant::now(),
            method,
            route,
            request_id,
            span,
        }
    }
}

/// The header an ingress gives each request (ingress-nginx does; `make up`'s nginx too).
const REQUEST_ID: &str = "x-request-id";

/// A request's span, with OpenTelemetry's HTTP server conventions, continuing the
/// trace of its `traceparent` if it came with one (only made while traces are on).
fn request_span(request: &Request, route: Option<&MatchedPath>) -> tracing::Span {
    let method = request.method();
    let route = route.map_or("unmatched", MatchedPath::as_str);
    let span = tracing::info_span!(
        "request",
        otel.name = %format_args!("{method} {route}"),
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        http.request.method = %method,
        http.route = route,
        url.path = request.uri().path(),
        http.response.status_code = tracing::field::Empty,
    );
    let traceparent = request.headers().get(trace::TRACEPARENT);
    trace::continue_from(&span, traceparent.and_then(|v| v.to_str().ok()));
    span
}

pin_project! {
    /// The response future of [`Observed`].
    pub struct ObservedFuture<F> {
        #[pin]
        response: Option<F>,
        // The answer, when the handler panicked before it had a future.
        answer: Option<Response>,
        // Made on the first `Pending`, from the request's start.
        #[pin]
        timer: Option<Sleep>,
        limit: Duration,
        started: Instant,
        method: Method,
        route: Option<MatchedPath>,
        request_id: Option<HeaderValue>,
        // The request's span, while traces are on.
        span: Option<tracing::Span>,
    }
}

impl<F, E> Future for ObservedFuture<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let _entered = this.span.as_ref().map(tracing::Span::enter);
        let polled = match (this.answer.take(), this.response.as_mut().as_pin_mut()) {
            (Some(answer), _) => Poll::Ready(Ok(answer)),
            (None, Some(response)) => {
                std::panic::catch_unwind(AssertUnwindSafe(|| response.poll(cx)))
                    .unwrap_or_else(|panic| Poll::Ready(Ok(panicked(panic.as_ref()))))
            }
            (None, None) => Poll::Ready(Ok(unanswered())),
        };
        let response = match polled {
            Poll::Ready(Ok(response)) => response,
            Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
            Poll::Pending => {
                if this.timer.is_none() {
                    let deadline = *this.started + *this.limit;
                    this.timer
                        .set(Some(tokio::time::sleep_until(deadline.into())));
                }
                if let Some(timer) = this.timer.as_pin_mut() {
                    ready!(timer.poll(cx));
                }
                tracing::warn!(
                    limit_ms = this.limit.as_millis(),
                    route = this.route.as_ref().map(MatchedPath::as_str),
                    "request timed out"
                );
                Error::Unavailable("The request took too long; please try again".into())
                    .into_response()
            }
        };
        let mut response = response;
        protect(response.headers_mut());
        let latency = this.started.elapsed();
        let status = response.status();
        let route = this.route.take();
        let route_label = route.as_ref().map_or("unmatched", MatchedPath::as_str);
        http_metrics::record(this.method, route_label, status, latency);
        let trace = this.span.as_ref().and_then(|span| {
            span.record("http.response.status_code", status.as_u16());
            if status.is_server_error() {
                span.record("otel.status_code", "error");
            }
            trace::ids_of(span)
        });
        if let Some(Failure(cause)) = response.extensions_mut().remove::<Failure>() {
            // Rare, so made here: the id the ingress gave, or one of our own.
            let request_id = this.request_id.as_ref().and_then(|id| id.to_str().ok());
            let request_id =
                request_id.map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_owned);
            tracing::error!(
                error = cause,
                method = %this.method,
                route = route_label,
                status = status.as_u16(),
                request_id,
                "request failed"
            );
        }
        if requests::enabled() {
            requests::log(requests::Record {
                at: SystemTime::now(),
                method: std::mem::replace(this.method, Method::GET),
                route,
                status,
                latency,
                request_id: this.request_id.take(),
                trace,
            });
        }
        Poll::Ready(Ok(response))
    }
}

/// The answer to a request whose handler panicked: 500, the message only in the log.
fn panicked(panic: &(dyn std::any::Any + Send)) -> Response {
    let message = panic_message(panic);
    Error::Internal(anyhow::anyhow!("handler panicked: {message}")).into_response()
}

/// Polled again after it answered: a bug in the caller, not in the request.
fn unanswered() -> Response {
    Error::Internal(anyhow::anyhow!("a finished request was polled again")).into_response()
}

/// Headers every answer carries unless its handler set its own: no content-type
/// sniffing; no powerful browser features; and `Cache-Control: no-store`, since what
/// the services answer is personal (orders, the current user) or changes by the
/// second; an answer that may be cached (the client's assets) says so itself.
fn protect(headers: &mut axum::http::HeaderMap) {
    use axum::http::HeaderValue;
    use axum::http::header::{CACHE_CONTROL, X_CONTENT_TYPE_OPTIONS};
    headers
        .entry(X_CONTENT_TYPE_OPTIONS)
        .or_insert(HeaderValue::from_static("nosniff"));
    headers
        .entry("permissions-policy")
        .or_insert(HeaderValue::from_static(
            "camera=(), microphone=(), geolocation=(), usb=(), interest-cohort=()",
        ));
    headers
        .entry(CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
}
