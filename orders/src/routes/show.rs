use axum::extract::State;
use common::{AuthUser, Error, Id, Json, Result};

use super::owned_by;
use crate::AppState;
use crate::order::Order;

/// One of the caller's orders.
#[utoipa::path(
    get,
    path = "/api/orders/{id}",
    params(("id" = String, Path, description = "Order id")),
    responses(
        (status = 200, description = "The order", body = Order),
        (status = 401, description = "Not signed in, or not the buyer", body = common::ErrorBody),
        (status = 404, description = "No such order", body = common::ErrorBody),
    )
)]
pub async fn show(
    State(app): State<AppState>,
    AuthUser(user): AuthUser,
    Id(id): Id,
) -> Result<Json<Order>> {
    let order = Order::find(&app.pool, id).await?.ok_or(Error::NotFound)?;
    owned_by(order, &user).map(Json)
}
