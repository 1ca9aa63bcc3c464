//! The routes of `/api/orders`, one file each.

mod cancel;
mod create;
mod list;
mod show;

use axum::Router;
use axum::routing::get;
use common::{Error, Result, UserClaims};
use serde::Deserialize;
use serde_json::Value;
use utoipa::{OpenApi, ToSchema};

use crate::AppState;
use crate::order::{Order, OrderedTicket};

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/api/orders", get(list::list).post(create::create))
        .route("/api/orders/{id}", get(show::show).delete(cancel::cancel))
        .route(
            "/api/orders/openapi.json",
            get(|| async { axum::Json(ApiDoc::openapi()) }),
        )
        .with_state(state)
}

/// The body of `POST /api/orders`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NewOrder {
    #[schema(value_type = String, format = Uuid)]
    pub ticket_id: Option<Value>,
}

/// Only the buyer may see or cancel an order.
fn owned_by(order: Order, user: &UserClaims) -> Result<Order> {
    if order.user_id == user.id {
        Ok(order)
    } else {
        Err(Error::NotAuthorized)
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Ticketing orders",
        description = "Order (reserve) tickets, list, show and cancel orders."
    ),
    paths(create::create, list::list, show::show, cancel::cancel),
    components(schemas(Order, OrderedTicket, common::events::OrderStatus, common::ErrorBody))
)]
pub struct ApiDoc;
