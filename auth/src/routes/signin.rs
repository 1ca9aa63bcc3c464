use axum::extract::State;
use axum::http::header::SET_COOKIE;
use axum::response::IntoResponse;
use common::validate::{self, all, field};
use common::{Error, Json, Result};

use super::{Client, Credentials, User};
use crate::AppState;
use crate::limits::account_hash;
use crate::user::StoredUser;

/// Signs in with email and password.
#[utoipa::path(
    post,
    path = "/api/users/signin",
    request_body = Credentials,
    responses(
        (status = 200, description = "Signed in; the session cookie is set", body = User),
        (status = 400, description = "`Email must be valid`, `You must supply a password` or `Invalid credentials`", body = common::ErrorBody),
        (status = 429, description = "`Too many failed sign-ins; try again later` (the account's or the address's failures), or too many sign-ins from one address at once; `Retry-After` says when", body = common::ErrorBody),
    )
)]
pub async fn signin(
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
        validate::text(body.password.as_ref()),
        "You must supply a password",
    );
    let (email, password) = all((email, password))?;

    // Blocked accounts and addresses are answered before any hashing.
    let account = account_hash(&email);
    app.limits.check_signin(&account, client).await?;
    let slot = app.limits.hashing(client)?;
    let user = StoredUser::find_by_email(&app.pool, &email).await?;
    // Unknown email and wrong password take the same time and get the same answer.
    let hash = user.as_ref().map(|user| user.password_hash.clone());
    let matches = app.hasher.verify(password, hash).await?;
    drop(slot);
    let Some(user) = user.filter(|_| matches) else {
        app.limits.signin_failed(&account, client).await?;
        tracing::warn!(
            client = client.map(|c| c.to_string()),
            account = &account[..16],
            "sign-in failed"
        );
        return Err(Error::bad_request("Invalid credentials"));
    };
    app.limits.signin_succeeded(&account, client).await?;

    let (token, _) = app.keys.issue(user.id, &user.email)?;
    let cookie = app.keys.cookie(&token)?;
    let user = User {
        id: user.id,
        email: user.email,
    };
    Ok(([(SET_COOKIE, cookie)], Json(user)))
}
