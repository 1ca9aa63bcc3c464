use axum::extract::State;
use bus::Tx;
use bus::append;
use common::{AuthUser, Error, Json, Result, UncheckedId};

use super::TicketInput;
use crate::AppState;
use crate::ticket::Ticket;

/// Edits title and price; publishes `ticket.updated`.
///
/// Checks run in the documented order: session, validation, existence, ownership,
/// reservation.
#[utoipa::path(
    put,
    path = "/api/tickets/{id}",
    params(("id" = String, Path, description = "Ticket id")),
    request_body = TicketInput,
    responses(
        (status = 200, description = "Edited; version + 1", body = Ticket),
        (status = 400, description = "Validation failed, or `Cannot edit a reserved ticket`", body = common::ErrorBody),
        (status = 401, description = "Not signed in, or not the owner", body = common::ErrorBody),
        (status = 404, description = "No such ticket", body = common::ErrorBody),
    )
)]
pub async fn update(
    State(app): State<AppState>,
    AuthUser(user): AuthUser,
    id: UncheckedId,
    Json(input): Json<TicketInput>,
) -> Result<Json<Ticket>> {
    let (title, price) = input.validate()?;
    let id = id.check()?;

    let mut tx = Tx::begin(&app.pool).await?;
    let ticket = Ticket::lock(&mut tx, id).await?.ok_or(Error::NotFound)?;
    if ticket.user_id != user.id {
        return Err(Error::NotAuthorized);
    }
    if ticket.order_id.is_some() {
        return Err(Error::bad_request("Cannot edit a reserved ticket"));
    }
    let ticket = Ticket::edit(&mut tx, id, &title, price).await?;
    append(&mut tx, &ticket.updated_event()).await?;
    tx.commit().await?;
    Ok(Json(ticket))
}
