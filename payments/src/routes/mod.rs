//! The routes of `/api/payments`.

mod create;

use axum::Router;
use axum::routing::{get, post};
use utoipa::OpenApi;

use crate::AppState;

pub use create::{NewPayment, Payment};

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/api/payments", post(create::create))
        .route(
            "/api/payments/openapi.json",
            get(|| async { axum::Json(ApiDoc::openapi()) }),
        )
        .with_state(state)
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Ticketing payments",
        description = "Pay for an order with a card token."
    ),
    paths(create::create),
    components(schemas(Payment, NewPayment, common::ErrorBody))
)]
pub struct ApiDoc;
