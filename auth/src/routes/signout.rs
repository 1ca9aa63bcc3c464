use axum::extract::State;
use axum::http::header::{HOST, ORIGIN, SET_COOKIE};
use axum::http::{HeaderMap, HeaderValue};
use axum::response::IntoResponse;
use bus::{Tx, append};
use common::events::SessionRevoked;
use common::session::{self, CLEAR_COOKIE};
use common::{Error, Json, Result};

use crate::AppState;

/// Signs out: revokes the session's token everywhere and clears the cookie.
///
/// The revocation (`session.revoked`, the token's id and expiry) goes through the
/// outbox, so it is published even if this replica stops right after answering;
/// every replica of every service that reads sessions refuses the token as soon as
/// it arrives (within milliseconds) until the token expires. This replica refuses it
/// at once. Without a valid session there is nothing to revoke, and the cookie is
/// cleared all the same. A browser sent here by another site (its `Origin` names
/// another host) is refused: no page elsewhere may sign a user out.
#[utoipa::path(
    post,
    path = "/api/users/signout",
    responses(
        (status = 200, description = "Signed out; the session cookie is cleared", body = Object),
        (status = 403, description = "`Cross-site request refused`: the `Origin` is another site's", body = common::ErrorBody),
    )
)]
pub async fn signout(State(app): State<AppState>, headers: HeaderMap) -> Result<impl IntoResponse> {
    if !same_site(&headers) {
        tracing::warn!("refused a cross-site sign-out");
        return Err(Error::CrossSite);
    }
    if let Some(signed_in) = session::session_of(&headers, &app.keys) {
        let revoked = SessionRevoked {
            token_id: signed_in.token_id,
            exp: signed_in.user.exp,
        };
        let mut tx = Tx::begin(&app.pool).await?;
        append(&mut tx, &revoked).await?;
        tx.commit().await?;
        app.keys.revoke(&revoked.token_id, revoked.exp);
        tracing::info!(user = %signed_in.user.id, "signed out; the session is revoked");
    }
    Ok((
        [(SET_COOKIE, HeaderValue::from_static(CLEAR_COOKIE))],
        Json(serde_json::json!({})),
    ))
}

/// No `Origin` (a server, curl, the web client's own call) or one whose host is the
/// host the request was sent to (`X-Forwarded-Host` when an ingress passed it on).
fn same_site(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(ORIGIN).and_then(|o| o.to_str().ok()) else {
        return true;
    };
    let origin_host = origin
        .split_once("://")
        .map_or(origin, |(_, rest)| rest)
        .trim_end_matches('/');
    ["x-forwarded-host", HOST.as_str()]
        .iter()
        .filter_map(|name| headers.get(*name).and_then(|h| h.to_str().ok()))
        .any(|host| host.eq_ignore_ascii_case(origin_host))
}
