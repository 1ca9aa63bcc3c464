//! The pages, one file per area, at the original app's paths.

mod assets;
mod auth;
mod home;
mod orders;
mod tickets;

use axum::Router;
use axum::http::Uri;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::AppState;
use crate::page::PageError;
use crate::security;

pub fn router(state: AppState) -> Router {
    let policy = security::content_security_policy(state.stripe_publishable_key.is_some());
    Router::new()
        .route("/", get(home::home))
        .route("/auth/signup", get(auth::signup_form).post(auth::signup))
        .route("/auth/signin", get(auth::signin_form).post(auth::signin))
        .route("/auth/signout", get(auth::signout_form).post(auth::signout))
        .route("/tickets/new", get(tickets::new_form).post(tickets::create))
        .route("/tickets/{id}", get(tickets::show))
        .route(
            "/tickets/{id}/purchase",
            axum::routing::post(tickets::purchase),
        )
        .route("/orders", get(orders::list))
        .route("/orders/{id}", get(orders::show))
        .route("/orders/{id}/pay", axum::routing::post(orders::pay))
        .route("/assets/{file}", get(assets::asset))
        .route("/{*rest}", get(not_found))
        .layer(axum::middleware::from_fn(security::same_origin))
        .layer(axum::middleware::from_fn_with_state(
            policy,
            security::headers,
        ))
        .with_state(state)
}

/// An unknown page; under `/api/` the API's JSON 404, as every service answers it.
async fn not_found(uri: Uri) -> Response {
    if uri.path().starts_with("/api/") {
        common::Error::NotFound.into_response()
    } else {
        PageError::NotFound.into_response()
    }
}
