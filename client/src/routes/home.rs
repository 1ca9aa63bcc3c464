use askama::Template;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;

use super::tickets::Ticket;
use crate::AppState;
use crate::api::Area;
use crate::page::{PageError, User, Visitor, render};

/// Tickets per page.
const PAGE: usize = 20;

#[derive(Debug, Deserialize)]
pub struct Paging {
    before: Option<String>,
    after: Option<String>,
}

#[derive(Template)]
#[template(path = "home.html")]
struct Home {
    user: Option<User>,
    tickets: Vec<Ticket>,
    /// Query strings of the older and newer pages.
    older: Option<String>,
    newer: Option<String>,
}

/// `/`: the tickets for sale, newest first, a page at a time.
pub async fn home(
    State(app): State<AppState>,
    visitor: Visitor,
    Query(paging): Query<Paging>,
) -> Result<Response, PageError> {
    // A cursor is a ticket id; anything else starts from the newest.
    let id = |cursor: &Option<String>| {
        cursor
            .as_deref()
            .and_then(|c| uuid::Uuid::try_parse(c).ok())
    };
    let cursor = match (id(&paging.before), id(&paging.after)) {
        (Some(before), _) => format!("&before={before}"),
        (None, Some(after)) => format!("&after={after}"),
        (None, None) => String::new(),
    };
    let path = format!("/api/tickets?limit={PAGE}{cursor}");
    let answer = app
        .api
        .get_with_links::<Vec<Ticket>>(Area::Tickets, &path, visitor.session.as_ref())
        .await?;
    let page_of = |rel: &str| {
        answer
            .links
            .iter()
            .find(|(r, _)| r == rel)
            .and_then(|(_, target)| target.split_once('?'))
            .map(|(_, query)| query.replace(&format!("limit={PAGE}&"), ""))
    };
    let page = Home {
        user: visitor.user,
        older: page_of("next"),
        newer: page_of("prev"),
        tickets: answer.body,
    };
    Ok(render(StatusCode::OK, &page))
}
