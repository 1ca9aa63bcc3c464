//! The routes of `/api/tickets`, one file each.

mod create;
mod list;
mod show;
mod update;

use axum::Router;
use axum::routing::get;
use common::Result;
use common::money::Price;
use common::validate::{self, all, field};
use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;
use utoipa::{OpenApi, ToSchema};

use crate::AppState;
use crate::ticket::Ticket;

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/api/tickets", get(list::list).post(create::create))
        .route("/api/tickets/{id}", get(show::show).put(update::update))
        .route(
            "/api/tickets/openapi.json",
            get(|| async { axum::Json(ApiDoc::openapi()) }),
        )
        .with_state(state)
}

/// The body of create and update, read loosely and checked field by field.
#[derive(Debug, Deserialize, ToSchema)]
pub struct TicketInput {
    #[schema(value_type = String, example = "Concert")]
    pub title: Option<Value>,
    /// A number, or a numeric string such as "12.50".
    #[schema(value_type = f64, example = 12.5)]
    pub price: Option<Box<RawValue>>,
}

impl TicketInput {
    /// The trimmed title and the exact price, or one error per failed field.
    pub fn validate(&self) -> Result<(String, Price)> {
        let title = validate::typed_text(
            "title",
            "Title",
            self.title.as_ref(),
            validate::TITLE_MAX_CHARS,
            "Title is required",
        );
        let price = field(
            "price",
            validate::price(self.price.as_deref()),
            "Price must be greater than 0",
        );
        all((title, price))
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Ticketing tickets",
        description = "List, show, create and edit tickets."
    ),
    paths(create::create, list::list, show::show, update::update),
    components(schemas(Ticket, common::ErrorBody))
)]
pub struct ApiDoc;
