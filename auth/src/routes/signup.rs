use axum::extract::State;
use axum::http::StatusCode;
use axum::http::header::SET_COOKIE;
use axum::response::IntoResponse;
use common::validate::{self, all, field};
use common::{Error, Json, Result};

use super::{Client, Credentials, User};
use crate::AppState;
use crate::user::StoredUser;

/// Creates an account and signs it in.
#[utoipa::path(
    post,
    path = "/api/users/signup",
    request_body = Credentials,
    responses(
        (status = 201, description = "Signed up; the session cookie is set", body = User),
        (status = 400, description = "`Email must be valid`, `Password must be between 4 and 20 characters` or `Email in use`", body = common::ErrorBody),
        (status = 429, description = "`Too many failed sign-ups; try again later` (an address that keeps hearing `Email in use`), or too many from one address at once; `Retry-After` says when", body = common::ErrorBody),
    )
)]
pub async fn signup(
    State(app): State<AppState>,
    Client(client): Client,
    Json(body): Json<Credentials>,
) -> Result<impl IntoResponse> {
    let email = field(
        "email",
        validate::email(body.email.as_ref()),
        "Email must be valid",
    );
    let password = field(
        "password",
        validate::text_with_length(body.password.as_ref(), 4, 20),
        "Password must be between 4 and 20 characters",
    );
    let (email, password) = all((email, password))?;

    // "Email in use" tells whether an account exists: an address that keeps hearing
    // it is slowed down, as for failed sign-ins.
    app.limits.check_signup(client).await?;
    // A cheap early answer; the unique index is what makes it race-free.
    if StoredUser::email_taken(&app.pool, &email).await? {
        app.limits.signup_failed(client).await?;
        return Err(Error::bad_request("Email in use"));
    }
    let slot = app.limits.hashing(client)?;
    let password_hash = app.hasher.hash(password).await?;
    drop(slot);
    let inserted = StoredUser::insert(&app.pool, &email, &password_hash).await;
    if inserted.is_err() {
        app.limits.signup_failed(client).await?;
    }
    let id = inserted?;
    tracing::info!(user_id = %id, "signed up");

    let (token, _) = app.keys.issue(id, &email)?;
    let cookie = app.keys.cookie(&token)?;
    Ok((
        StatusCode::CREATED,
        [(SET_COOKIE, cookie)],
        Json(User { id, email }),
    ))
}
