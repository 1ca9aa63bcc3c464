use axum::extract::State;
use common::{Json, Result};

use crate::AppState;
use crate::ticket::Ticket;

/// Tickets that are not reserved, newest first.
#[utoipa::path(
    get,
    path = "/api/tickets",
    responses((status = 200, description = "Unreserved tickets, newest first", body = [Ticket]))
)]
pub async fn list(State(app): State<AppState>) -> Result<Json<Vec<Ticket>>> {
    Ok(Json(Ticket::list_available(&app.pool).await?))
}
