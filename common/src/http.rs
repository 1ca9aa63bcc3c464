//! The router scaffolding every service shares.
//!
//! [`app`] takes a service's API routes and adds the operational routes of contract
//! §8 (`/healthz`, `/readyz`, `/metrics`), the JSON 404 for unknown routes, the
//! body-size limit, panic recovery and request observation.

use std::any::Any;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sqlx::PgPool;
use tower_http::catch_panic::CatchPanicLayer;

use crate::{Error, telemetry};

/// Request bodies larger than this are refused with 413.
pub const BODY_LIMIT: usize = 16 * 1024;

/// What `/readyz` checks: the database, and NATS for services on the bus.
#[derive(Clone)]
pub struct Readiness {
    pub pool: PgPool,
    pub nats: Option<async_nats::Client>,
}

impl Readiness {
    /// Whether the database answers and NATS is connected.
    pub async fn check(&self) -> bool {
        let database = tokio::time::timeout(
            Duration::from_secs(2),
            sqlx::query("SELECT 1").execute(&self.pool),
        );
        let nats_ok = self
            .nats
            .as_ref()
            .is_none_or(|nats| nats.connection_state() == async_nats::connection::State::Connected);
        nats_ok && matches!(database.await, Ok(Ok(_)))
    }
}

/// Wraps a service's API routes into the complete application.
pub fn app(api: Router, readiness: Readiness) -> Router {
    api.route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready).with_state(readiness))
        .route("/metrics", get(|| async { telemetry::render_metrics() }))
        .fallback(not_found)
        .method_not_allowed_fallback(not_found)
        .layer(CatchPanicLayer::custom(on_panic))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(axum::middleware::from_fn(telemetry::observe))
}

async fn ready(State(readiness): State<Readiness>) -> Response {
    if readiness.check().await {
        (StatusCode::OK, "ready").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready").into_response()
    }
}

/// Unknown routes, and known routes with another method (as the original's catch-all).
async fn not_found() -> Error {
    Error::NotFound
}

fn on_panic(panic: Box<dyn Any + Send + 'static>) -> Response {
    let message = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_owned());
    Error::Internal(anyhow::anyhow!("handler panicked: {message}")).into_response()
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

    fn test_app() -> Router {
        let api = Router::new()
            .route("/api/boom", get(boom))
            .route("/api/fine", get(|| async { "fine" }));
        let pool = sqlx::postgres::PgPoolOptions::new()
            .connect_lazy("postgres://nobody@127.0.0.1:1/none")
            .unwrap();
        app(api, Readiness { pool, nats: None })
    }

    async fn call(path: &str) -> (StatusCode, String) {
        let response = test_app()
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
    async fn readiness_fails_without_a_database() {
        assert_eq!(call("/healthz").await.0, StatusCode::OK);
        assert_eq!(call("/readyz").await.0, StatusCode::SERVICE_UNAVAILABLE);
    }
}
