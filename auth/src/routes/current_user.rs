use common::{CurrentUser, Json, UserClaims};
use serde::Serialize;
use utoipa::ToSchema;

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CurrentUserBody {
    /// The signed-in user, or null.
    current_user: Option<UserClaims>,
}

/// Who is signed in, if anyone. Never fails: a missing or invalid session is null.
#[utoipa::path(
    get,
    path = "/api/users/currentuser",
    responses((status = 200, description = "The current user or null", body = CurrentUserBody))
)]
pub async fn current_user(CurrentUser(user): CurrentUser) -> Json<CurrentUserBody> {
    Json(CurrentUserBody { current_user: user })
}
