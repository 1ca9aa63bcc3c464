use axum::extract::State;
use axum::http::StatusCode;
use axum::http::header::SET_COOKIE;
use axum::response::IntoResponse;
use common::error::is_unique_violation;
use common::validate::{self, all, field};
use common::{Error, Json, Result};
use uuid::Uuid;

use super::{Credentials, User};
use crate::{AppState, password};

/// Creates an account and signs it in.
#[utoipa::path(
    post,
    path = "/api/users/signup",
    request_body = Credentials,
    responses(
        (status = 201, description = "Signed up; the session cookie is set", body = User),
        (status = 400, description = "`Email must be valid`, `Password must be between 4 and 20 characters` or `Email in use`", body = common::ErrorBody),
    )
)]
pub async fn signup(
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
        validate::text_with_length(body.password.as_ref(), 4, 20),
        "Password must be between 4 and 20 characters",
    );
    let (email, password) = all((email, password))?;

    // Cheap early answer; the unique index below is what makes it race-free.
    let taken: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM users WHERE lower(email) = $1)")
            .bind(&email)
            .fetch_one(&app.pool)
            .await?;
    if taken {
        return Err(Error::bad_request("Email in use"));
    }

    let password_hash = password::hash(password).await?;
    let id = Uuid::new_v4();
    sqlx::query("INSERT INTO users (id, email, password_hash) VALUES ($1, $2, $3)")
        .bind(id)
        .bind(&email)
        .bind(&password_hash)
        .execute(&app.pool)
        .await
        .map_err(
            |error| match is_unique_violation(&error, Some("users_email_key")) {
                true => Error::bad_request("Email in use"),
                false => error.into(),
            },
        )?;
    tracing::info!(user_id = %id, "signed up");

    let (token, _) = app.keys.issue(id, &email)?;
    let cookie = app.keys.cookie(&token)?;
    Ok((
        StatusCode::CREATED,
        [(SET_COOKIE, cookie)],
        Json(User { id, email }),
    ))
}
