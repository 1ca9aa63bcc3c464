//! `/tickets/new` (sell a ticket) and `/tickets/{id}` (view and purchase it).

use askama::Template;
use axum::extract::{Form, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use common::money::Price;
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::AppState;
use crate::api::{ApiError, Area, Message};
use crate::page::{PageError, SignedIn, User, Visitor, render};

/// A ticket as the tickets API shows it.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Ticket {
    pub id: Uuid,
    pub title: String,
    pub price: Price,
    #[serde(default)]
    pub order_id: Option<Uuid>,
}

#[derive(Template)]
#[template(path = "ticket_new.html")]
struct NewTicket {
    user: Option<User>,
    title: String,
    price: String,
    errors: Vec<Message>,
}

#[derive(Debug, Deserialize)]
pub struct TicketForm {
    #[serde(default)]
    title: String,
    #[serde(default)]
    price: String,
}

pub async fn new_form(visitor: SignedIn) -> Response {
    let page = NewTicket {
        user: Some(visitor.user),
        title: String::new(),
        price: String::new(),
        errors: Vec::new(),
    };
    render(StatusCode::OK, &page)
}

/// Lists the ticket and goes home; refused, the form comes back with the messages.
pub async fn create(
    State(app): State<AppState>,
    visitor: SignedIn,
    Form(form): Form<TicketForm>,
) -> Result<Response, PageError> {
    // The price goes as the typed text: the API reads numeric strings exactly.
    let body = json!({"title": form.title, "price": form.price.trim()});
    match app
        .api
        .post::<Value>(Area::Tickets, "/api/tickets", Some(&visitor.session), body)
        .await
    {
        Ok(_) => Ok(Redirect::to("/").into_response()),
        Err(ApiError::Refused { status, messages }) if status == StatusCode::BAD_REQUEST => {
            let page = NewTicket {
                user: Some(visitor.user),
                title: form.title,
                price: form.price,
                errors: messages,
            };
            Ok(render(status, &page))
        }
        Err(other) => Err(other.into()),
    }
}

#[derive(Template)]
#[template(path = "ticket_show.html")]
struct ShowTicket {
    user: Option<User>,
    ticket: Ticket,
    errors: Vec<Message>,
}

async fn ticket(app: &AppState, visitor: &Visitor, id: Uuid) -> Result<Ticket, PageError> {
    let path = format!("/api/tickets/{id}");
    Ok(app
        .api
        .get(Area::Tickets, &path, visitor.session.as_ref())
        .await?)
}

pub async fn show(
    State(app): State<AppState>,
    visitor: Visitor,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    let id = Uuid::try_parse(&id).map_err(|_| PageError::NotFound)?;
    let page = ShowTicket {
        ticket: ticket(&app, &visitor, id).await?,
        user: visitor.user,
        errors: Vec::new(),
    };
    Ok(render(StatusCode::OK, &page))
}

#[derive(Deserialize)]
struct Order {
    id: Uuid,
}

/// `Purchase`: orders the ticket and goes to the order; refused (already reserved,
/// say), the ticket page comes back with the reason.
pub async fn purchase(
    State(app): State<AppState>,
    visitor: Visitor,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    let id = Uuid::try_parse(&id).map_err(|_| PageError::NotFound)?;
    let Some(session) = visitor.session.as_ref().filter(|_| visitor.user.is_some()) else {
        return Err(PageError::SignIn);
    };
    let body = json!({"ticketId": id});
    match app
        .api
        .post::<Order>(Area::Orders, "/api/orders", Some(session), body)
        .await
    {
        Ok(answer) => Ok(Redirect::to(&format!("/orders/{}", answer.body.id)).into_response()),
        Err(ApiError::Refused { status, messages }) if status == StatusCode::BAD_REQUEST => {
            let page = ShowTicket {
                ticket: ticket(&app, &visitor, id).await?,
                user: visitor.user,
                errors: messages,
            };
            Ok(render(status, &page))
        }
        Err(other) => Err(other.into()),
    }
}
