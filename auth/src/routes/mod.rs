//! The routes of `/api/users`, one file each.

mod current_user;
mod signin;
mod signout;
mod signup;

use axum::Router;
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{OpenApi, ToSchema};
use uuid::Uuid;

use crate::AppState;

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/api/users/signup", post(signup::signup))
        .route("/api/users/signin", post(signin::signin))
        .route("/api/users/signout", post(signout::signout))
        .route("/api/users/currentuser", get(current_user::current_user))
        .route(
            "/api/users/openapi.json",
            get(|| async { axum::Json(ApiDoc::openapi()) }),
        )
        .with_state(state)
}

/// The address the request came from, as the trusted ingress saw it (`None` when it
/// cannot be told).
pub struct Client(pub Option<std::net::IpAddr>);

impl axum::extract::FromRequestParts<AppState> for Client {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        Ok(Self(kit::http::client_address(
            &parts.headers,
            &parts.extensions,
            state.limits.config.trusted_proxy_hops,
        )))
    }
}

/// The body of sign-up and sign-in. Fields are read loosely and checked one by one,
/// so that each wrong field gets its own message.
#[derive(Debug, Deserialize, ToSchema)]
pub struct Credentials {
    #[schema(value_type = String, example = "test@test.com")]
    pub email: Option<Value>,
    #[schema(value_type = String, example = "password")]
    pub password: Option<Value>,
}

/// A user as the API shows it (never the password hash).
#[derive(Debug, Serialize, ToSchema)]
pub struct User {
    pub id: Uuid,
    pub email: String,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Ticketing auth",
        description = "Sign up, sign in, sign out and the current user."
    ),
    paths(
        signup::signup,
        signin::signin,
        signout::signout,
        current_user::current_user
    ),
    components(schemas(common::ErrorBody, common::UserClaims))
)]
pub struct ApiDoc;
