//! `/orders` (the buyer's orders) and `/orders/{id}` (time left, and paying).

use askama::Template;
use axum::extract::{Form, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use common::money::Price;
use common::time::Timestamp;
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::AppState;
use crate::api::{ApiError, Area, Message};
use crate::page::{PageError, SignedIn, User, render};

/// An order as the orders API shows it.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Order {
    pub id: Uuid,
    pub status: String,
    #[serde(with = "common::time::iso")]
    pub expires_at: Timestamp,
    pub ticket: OrderedTicket,
}

#[derive(Debug, Clone, Deserialize)]
pub struct OrderedTicket {
    pub title: String,
    pub price: Price,
}

impl Order {
    /// Whole seconds left to pay (0 once past `expiresAt`).
    pub fn seconds_left(&self) -> i64 {
        (self.expires_at - chrono::Utc::now()).num_seconds().max(0)
    }

    /// Whether it can still be paid for.
    pub fn payable(&self) -> bool {
        matches!(self.status.as_str(), "created" | "awaiting:payment") && self.seconds_left() > 0
    }

    /// `expiresAt` as the countdown script reads it.
    pub fn expires_at_iso(&self) -> String {
        common::time::to_iso(&self.expires_at)
    }
}

#[derive(Template)]
#[template(path = "orders.html")]
struct Orders {
    user: Option<User>,
    orders: Vec<Order>,
}

pub async fn list(State(app): State<AppState>, visitor: SignedIn) -> Result<Response, PageError> {
    let orders = app
        .api
        .get(Area::Orders, "/api/orders", Some(&visitor.session))
        .await?;
    let page = Orders {
        user: Some(visitor.user),
        orders,
    };
    Ok(render(StatusCode::OK, &page))
}

#[derive(Template)]
#[template(path = "order_show.html")]
struct ShowOrder {
    user: Option<User>,
    order: Order,
    errors: Vec<Message>,
    /// With a publishable key, the card form is Stripe Elements.
    stripe_key: Option<String>,
    /// Without one, the Stripe stand-in's test cards.
    test_cards: &'static [(&'static str, &'static str)],
}

const TEST_CARDS: &[(&str, &str)] = &[
    ("tok_visa", "Visa (succeeds)"),
    ("tok_chargeDeclined", "Declined card"),
];

async fn order(app: &AppState, visitor: &SignedIn, id: Uuid) -> Result<Order, PageError> {
    let path = format!("/api/orders/{id}");
    Ok(app
        .api
        .get(Area::Orders, &path, Some(&visitor.session))
        .await?)
}

fn order_page(app: &AppState, user: User, order: Order, errors: Vec<Message>) -> ShowOrder {
    ShowOrder {
        user: Some(user),
        order,
        errors,
        stripe_key: app.stripe_publishable_key.clone(),
        test_cards: TEST_CARDS,
    }
}

pub async fn show(
    State(app): State<AppState>,
    visitor: SignedIn,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    let id = Uuid::try_parse(&id).map_err(|_| PageError::NotFound)?;
    let order = order(&app, &visitor, id).await?;
    let page = order_page(&app, visitor.user, order, Vec::new());
    Ok(render(StatusCode::OK, &page))
}

#[derive(Debug, Deserialize)]
pub struct Payment {
    /// A card token: from Stripe Elements, or a test card's.
    #[serde(default)]
    token: String,
}

/// Pays for the order and goes to the orders, once the order reads complete (or
/// after 3 s); declined (or refused), the order page comes back with the reason, and
/// the order stays payable.
pub async fn pay(
    State(app): State<AppState>,
    visitor: SignedIn,
    Path(id): Path<String>,
    Form(payment): Form<Payment>,
) -> Result<Response, PageError> {
    let id = Uuid::try_parse(&id).map_err(|_| PageError::NotFound)?;
    let body = json!({"token": payment.token, "orderId": id});
    let mut attempts = 0;
    let paid = loop {
        let paid = app
            .api
            .post::<Value>(
                Area::Payments,
                "/api/payments",
                Some(&visitor.session),
                body.clone(),
            )
            .await;
        // Just ordered: payments may not have heard of the order yet.
        match paid {
            Err(ApiError::Refused { status, .. })
                if status == StatusCode::NOT_FOUND && attempts < 30 =>
            {
                attempts += 1;
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            other => break other,
        }
    };
    match paid {
        Ok(_) => {
            // Paid. The order turns complete a moment later, once orders has the
            // payment's event; wait for that (briefly) so the orders page shows it.
            for _ in 0..30 {
                match order(&app, &visitor, id).await {
                    Ok(order) if order.status == "complete" => break,
                    _ => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
                }
            }
            Ok(Redirect::to("/orders").into_response())
        }
        Err(ApiError::Refused { status, messages })
            if status == StatusCode::BAD_REQUEST || status == StatusCode::NOT_FOUND =>
        {
            let order = order(&app, &visitor, id).await?;
            let page = order_page(&app, visitor.user, order, messages);
            Ok(render(StatusCode::BAD_REQUEST, &page))
        }
        Err(other) => Err(other.into()),
    }
}
