use axum::extract::State;
use common::{Error, Id, Json, Result};

use crate::AppState;
use crate::ticket::Ticket;

/// One ticket, reserved or not.
#[utoipa::path(
    get,
    path = "/api/tickets/{id}",
    params(("id" = String, Path, description = "Ticket id")),
    responses(
        (status = 200, description = "The ticket", body = Ticket),
        (status = 404, description = "No such ticket (or a malformed id)", body = common::ErrorBody),
    )
)]
pub async fn show(State(app): State<AppState>, Id(id): Id) -> Result<Json<Ticket>> {
    Ticket::find(&app.pool, id)
        .await?
        .map(Json)
        .ok_or(Error::NotFound)
}
