use axum::extract::State;
use axum::http::header::SET_COOKIE;
use axum::response::IntoResponse;
use common::validate::{self, all, field};
use common::{Error, Json, Result};
use uuid::Uuid;

use super::{Credentials, User};
use crate::{AppState, password};

/// Signs in with email and password.
#[utoipa::path(
    post,
    path = "/api/users/signin",
    request_body = Credentials,
    responses(
        (status = 200, description = "Signed in; the session cookie is set", body = User),
        (status = 400, description = "`Email must be valid`, `You must supply a password` or `Invalid credentials`", body = common::ErrorBody),
    )
)]
pub async fn signin(
    State(app): State<AppState>,
    Json(body): Json<Credentials>,
) -> Result<impl IntoResponse> {
    let email = field(
        "email",
        validate::email(body.email.as_ref()),
        "Email must be valid",
    );
    let password = field(
        "password",
        validate::text(body.password.as_ref()),
        "You must supply a password",
    );
    let (email, password) = all((email, password))?;

    let user: Option<(Uuid, String, String)> =
        sqlx::query_as("SELECT id, email, password_hash FROM users WHERE lower(email) = $1")
            .bind(&email)
            .fetch_optional(&app.pool)
            .await?;
    let (id, email, hash) = match user {
        Some((id, email, hash)) => (Some(id), email, Some(hash)),
        None => (None, email, None),
    };
    // Unknown email and wrong password take the same time and get the same answer.
    let matches = password::verify(password, hash).await?;
    let Some(id) = id.filter(|_| matches) else {
        return Err(Error::bad_request("Invalid credentials"));
    };

    let (token, _) = app.keys.issue(id, &email)?;
    let cookie = app.keys.cookie(&token)?;
    Ok(([(SET_COOKIE, cookie)], Json(User { id, email })))
}
