use axum::extract::State;
use common::{AuthUser, Json, Result};

use crate::AppState;
use crate::order::Order;

/// The caller's orders, newest first, each with its ticket.
#[utoipa::path(
    get,
    path = "/api/orders",
    responses(
        (status = 200, description = "The caller's orders, newest first", body = [Order]),
        (status = 401, description = "Not signed in", body = common::ErrorBody),
    )
)]
pub async fn list(
    State(app): State<AppState>,
    AuthUser(user): AuthUser,
) -> Result<Json<Vec<Order>>> {
    Ok(Json(Order::of_user(&app.pool, user.id).await?))
}
