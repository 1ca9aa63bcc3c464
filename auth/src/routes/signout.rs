use axum::http::HeaderValue;
use axum::http::header::SET_COOKIE;
use axum::response::IntoResponse;
use common::Json;
use common::session::CLEAR_COOKIE;

/// Signs out by clearing the session cookie.
#[utoipa::path(
    post,
    path = "/api/users/signout",
    responses((status = 200, description = "Signed out; the session cookie is cleared", body = Object))
)]
pub async fn signout() -> impl IntoResponse {
    (
        [(SET_COOKIE, HeaderValue::from_static(CLEAR_COOKIE))],
        Json(serde_json::json!({})),
    )
}
