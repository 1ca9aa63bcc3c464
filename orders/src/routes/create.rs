use axum::extract::State;
use axum::http::StatusCode;
use bus::Tx;
use bus::append;
use common::validate::{self, all, field};
use common::{AuthUser, Error, Json, Result};

use super::NewOrder;
use crate::AppState;
use crate::order::Order;
use crate::replica::TicketReplica;

/// Reserves a ticket for the caller until the order expires; publishes `order.created`.
#[utoipa::path(
    post,
    path = "/api/orders",
    request_body = NewOrder,
    responses(
        (status = 201, description = "Ordered; the ticket is reserved until `expiresAt`", body = Order),
        (status = 400, description = "`TicketId must be provided`, `Ticket is already reserved`, or the caller already holds `MAX_ACTIVE_ORDERS_PER_USER` unpaid orders", body = common::ErrorBody),
        (status = 401, description = "Not signed in", body = common::ErrorBody),
        (status = 404, description = "No such ticket", body = common::ErrorBody),
        (status = 429, description = "More than `ORDERS_PER_MINUTE_PER_USER` orders a minute; with `Retry-After`", body = common::ErrorBody),
    )
)]
pub async fn create(
    State(app): State<AppState>,
    AuthUser(user): AuthUser,
    Json(input): Json<NewOrder>,
) -> Result<(StatusCode, Json<Order>)> {
    let (ticket_id,) = all((field(
        "ticketId",
        validate::uuid(input.ticket_id.as_ref()),
        "TicketId must be provided",
    ),))?;

    let mut tx = Tx::begin(&app.pool).await?;
    let ticket = TicketReplica::find(&mut *tx, ticket_id)
        .await?
        .ok_or(Error::NotFound)?;
    if Order::count_unpaid_locked(&mut tx, user.id).await? >= app.max_active_orders {
        return Err(Error::bad_request(format!(
            "You already have {} unpaid orders; pay for or cancel one first",
            app.max_active_orders
        )));
    }
    let expires_at = common::time::now() + app.expiration_window;
    let order = Order::reserve(&mut tx, user.id, &ticket, expires_at)
        .await?
        .ok_or_else(|| Error::bad_request("Ticket is already reserved"))?;
    // Only orders placed count against the rate: the losers of a race for a ticket
    // are told it is reserved. Under the user's lock, so the count is exact.
    app.order_rate.check(user.id)?;
    append(&mut tx, &order.created_event()).await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(order)))
}
