//! The router scaffolding every service shares.
//!
//! A service listens on two ports. [`app`] takes its API routes (`PORT`, where the
//! ingress routes) and adds the JSON 404 for unknown routes, the body-size limit, the
//! request timeout, panic recovery and request observation. [`ops`] is the
//! operational side of `docs/api.md` § Operations (`/healthz`, `/readyz`, `/metrics`)
//! on a port of its own (`OPS_PORT`), which the probes and Prometheus use and no
//! ingress rule reaches: counters and health are nobody's business on the internet.

use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use common::Error;
use tower::ServiceBuilder;

use crate::service::Readiness;
use crate::supervisor::Health;
use crate::telemetry;

/// Request bodies larger than this are refused with 413.
pub const BODY_LIMIT: usize = 16 * 1024;

/// What the health routes look at.
#[derive(Clone)]
pub struct Probes {
    /// `/readyz`: the service can serve HTTP while every check passes (its database
    /// answers, if it has one). NATS is not checked: writes wait in the outbox while
    /// the bus is away, so a bus outage must not take every pod out of its Service.
    pub readiness: Vec<Readiness>,
    /// `/healthz`: the process is alive and no background worker is crash-looping.
    pub health: Health,
}

/// The address a request came from. Behind `hops` trusted proxies (an ingress adds
/// the address it saw to `X-Forwarded-For`; each proxy after it adds the one before),
/// it is the entry the outermost trusted proxy wrote, `hops` from the end: entries
/// before it are whatever the client sent. Without the header (or with `hops` 0), the
/// peer's address.
pub fn client_address(
    headers: &axum::http::HeaderMap,
    extensions: &axum::http::Extensions,
    hops: usize,
) -> Option<std::net::IpAddr> {
    let peer = extensions
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|info| info.0.ip());
    if hops == 0 {
        return peer;
    }
    let forwarded: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .collect();
    let written_by_trusted = forwarded.len().saturating_sub(hops);
    forwarded
        .get(written_by_trusted)
        .and_then(|address| address.parse().ok())
        .or(peer)
}

/// Wraps a service's API routes into the application its API port serves.
pub fn app(api: Router, request_timeout: Duration) -> Router {
    api.fallback(not_found)
        .method_not_allowed_fallback(not_found)
        // One layer of two: axum wraps every route in each `layer` it is given, and
        // each wrapping costs a boxed clone and a boxed future per request.
        .layer(
            ServiceBuilder::new()
                .layer(telemetry::Observe::new(request_timeout))
                .layer(DefaultBodyLimit::max(BODY_LIMIT)),
        )
}

/// The operational endpoints, for the ops port. Probes and scrapes are not counted
/// in the request metrics or logged line by line.
pub fn ops(probes: Probes) -> Router {
    Router::new()
        .route("/healthz", get(healthz).with_state(probes.health))
        .route("/readyz", get(readyz).with_state(probes.readiness))
        .route("/metrics", get(|| async { telemetry::render_metrics() }))
        .fallback(not_found)
        .method_not_allowed_fallback(not_found)
}

async fn healthz(State(health): State<Health>) -> Response {
    let failing = health.failing();
    if failing.is_empty() {
        (StatusCode::OK, "ok").into_response()
    } else {
        let body = format!("failing background workers: {}", failing.join(", "));
        (StatusCode::SERVICE_UNAVAILABLE, body).into_response()
    }
}

async fn readyz(State(checks): State<Vec<Readiness>>) -> Response {
    for check in &checks {
        if let Err(reason) = check.check().await {
            let body = format!("not ready: {reason}");
            return (StatusCode::SERVICE_UNAVAILABLE, body).into_response();
        }
    }
    (StatusCode::OK, "ready").into_response()
}

/// Unknown routes, and known routes with another method (as the original's catch-all).
async fn not_found() -> Error {
    Error::NotFound
}

#[cfg(test)]
mod tests {
    use axum::body::{Body, to_bytes};
    use axum::http::Request;
    use tower::ServiceExt;

    use super::*;

    async fn boom() -> &'static str {
        panic!("secret detail")
    }

    async fn stuck() -> &'static str {
        std::future::pending::<()>().await;
        "never"
    }

    fn test_app() -> Router {
        let api = Router::new()
            .route("/api/boom", get(boom))
            .route("/api/stuck", get(stuck))
            .route("/api/fine", get(|| async { "fine" }));
        app(api, Duration::from_millis(200))
    }

    fn test_ops() -> Router {
        let unreachable = Readiness::new(|| async { Err("nothing answers".to_owned()) });
        ops(Probes {
            readiness: vec![unreachable],
            health: Health::default(),
        })
    }

    async fn call(path: &str) -> (StatusCode, String) {
        call_on(test_app(), path).await
    }

    async fn call_on(router: Router, path: &str) -> (StatusCode, String) {
        let response = router
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let body = to_bytes(response.into_body(), 1 << 20).await.unwrap();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn panics_are_500_without_details() {
        let (status, body) = call("/api/boom").await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(body, r#"{"errors":[{"message":"Something went wrong"}]}"#);
        assert_eq!(
            call("/api/fine").await,
            (StatusCode::OK, "fine".to_owned()),
            "the app survives"
        );
    }

    #[tokio::test]
    async fn unknown_routes_are_404_json() {
        let (status, body) = call("/api/nothing/here").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(body, r#"{"errors":[{"message":"Not Found"}]}"#);
    }

    #[tokio::test]
    async fn a_request_that_runs_too_long_is_503_with_the_error_body() {
        let started = std::time::Instant::now();
        let (status, body) = call("/api/stuck").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            body,
            r#"{"errors":[{"message":"The request took too long; please try again"}]}"#
        );
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    /// docs/api.md § Errors: answers are not sniffed, not cached (they are personal or
    /// change by the second) unless a handler says so, and ask for no browser powers.
    #[tokio::test]
    async fn every_answer_carries_the_protective_headers_unless_its_handler_chose() {
        let cached = || async {
            (
                [(axum::http::header::CACHE_CONTROL, "public, max-age=300")],
                "asset",
            )
        };
        let api = Router::new()
            .route("/api/fine", get(|| async { "fine" }))
            .route("/asset.css", get(cached));
        let app = app(api, Duration::from_secs(1));
        for path in ["/api/fine", "/api/nothing/here", "/asset.css"] {
            let response = app
                .clone()
                .oneshot(Request::get(path).body(Body::empty()).unwrap())
                .await
                .unwrap();
            let header = |name: &str| {
                response
                    .headers()
                    .get(name)
                    .map(|v| v.to_str().unwrap().to_owned())
            };
            assert_eq!(header("x-content-type-options").as_deref(), Some("nosniff"));
            assert!(header("permissions-policy").is_some_and(|p| p.contains("camera=()")));
            let expected = if path == "/asset.css" {
                "public, max-age=300"
            } else {
                "no-store"
            };
            assert_eq!(header("cache-control").as_deref(), Some(expected), "{path}");
        }
    }

    #[test]
    fn the_client_address_is_the_one_the_outermost_trusted_proxy_saw() {
        use axum::http::{Extensions, HeaderMap, HeaderValue};
        let mut extensions = Extensions::new();
        extensions.insert(axum::extract::ConnectInfo(std::net::SocketAddr::from((
            [10, 0, 0, 9],
            443,
        ))));
        let with = |forwarded: &[&'static str]| {
            let mut headers = HeaderMap::new();
            for value in forwarded {
                headers.append("x-forwarded-for", HeaderValue::from_static(value));
            }
            headers
        };
        let address = |headers: &HeaderMap, hops| {
            client_address(headers, &extensions, hops).map(|a| a.to_string())
        };
        // The client forged the first entries; the ingress appended what it saw.
        let forged = with(&["1.1.1.1, 2.2.2.2", "203.0.113.7"]);
        assert_eq!(address(&forged, 1).as_deref(), Some("203.0.113.7"));
        assert_eq!(address(&forged, 2).as_deref(), Some("2.2.2.2"));
        assert_eq!(address(&forged, 0).as_deref(), Some("10.0.0.9"));
        assert_eq!(address(&with(&[]), 1).as_deref(), Some("10.0.0.9"));
        assert_eq!(address(&with(&["garbage"]), 1).as_deref(), Some("10.0.0.9"));
    }

    #[tokio::test]
    async fn readiness_fails_when_a_check_fails() {
        assert_eq!(call_on(test_ops(), "/healthz").await.0, StatusCode::OK);
        assert_eq!(
            call_on(test_ops(), "/readyz").await,
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "not ready: nothing answers".to_owned()
            )
        );
    }

    #[tokio::test]
    async fn the_operational_endpoints_are_only_on_the_ops_port() {
        for path in ["/healthz", "/readyz", "/metrics"] {
            assert_eq!(
                call(path).await.0,
                StatusCode::NOT_FOUND,
                "{path} on the API port"
            );
            assert_ne!(
                call_on(test_ops(), path).await.0,
                StatusCode::NOT_FOUND,
                "{path}"
            );
        }
        assert_eq!(
            call_on(test_ops(), "/api/fine").await.0,
            StatusCode::NOT_FOUND
        );
    }
}
