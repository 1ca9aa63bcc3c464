use axum::extract::State;
use axum::http::StatusCode;
use common::{AuthUser, Json, Result};

use super::TicketInput;
use crate::AppState;
use crate::ticket::Ticket;

/// Lists a ticket for sale; publishes `ticket.created`.
#[utoipa::path(
    post,
    path = "/api/tickets",
    request_body = TicketInput,
    responses(
        (status = 201, description = "Created (version 0)", body = Ticket),
        (status = 400, description = "`Title is required`, `Title must be at most 200 characters`, `Title must not contain control or text-direction characters`, or `Price must be greater than 0`", body = common::ErrorBody),
        (status = 401, description = "Not signed in", body = common::ErrorBody),
        (status = 429, description = "More than `TICKETS_PER_MINUTE_PER_USER` tickets a minute; with `Retry-After`", body = common::ErrorBody),
    )
)]
pub async fn create(
    State(app): State<AppState>,
    AuthUser(user): AuthUser,
    Json(input): Json<TicketInput>,
) -> Result<(StatusCode, Json<Ticket>)> {
    let (title, price) = input.validate()?;
    app.listing_rate.check(user.id)?;
    let ticket = Ticket::create(&app.pool, title, price, user.id).await?;
    Ok((StatusCode::CREATED, Json(ticket)))
}
