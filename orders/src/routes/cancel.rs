use axum::extract::State;
use axum::http::StatusCode;
use bus::Tx;
use common::events::OrderStatus;
use common::{AuthUser, Error, Id, Result};

use super::owned_by;
use crate::AppState;
use crate::order::Order;

/// Cancels one of the caller's orders, freeing its ticket; publishes `order.cancelled`.
/// Cancelling a cancelled order changes and publishes nothing.
#[utoipa::path(
    delete,
    path = "/api/orders/{id}",
    params(("id" = String, Path, description = "Order id")),
    responses(
        (status = 204, description = "Cancelled"),
        (status = 400, description = "`Cannot cancel a completed order`", body = common::ErrorBody),
        (status = 401, description = "Not signed in, or not the buyer", body = common::ErrorBody),
        (status = 404, description = "No such order", body = common::ErrorBody),
    )
)]
pub async fn cancel(
    State(app): State<AppState>,
    AuthUser(user): AuthUser,
    Id(id): Id,
) -> Result<StatusCode> {
    let mut tx = Tx::begin(&app.pool).await?;
    let order = owned_by(
        Order::lock(&mut tx, id).await?.ok_or(Error::NotFound)?,
        &user,
    )?;
    match order.status {
        OrderStatus::Complete => return Err(Error::bad_request("Cannot cancel a completed order")),
        OrderStatus::Cancelled => return Ok(StatusCode::NO_CONTENT),
        OrderStatus::Created | OrderStatus::AwaitingPayment => {}
    }
    Order::cancel(&mut tx, id).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}
