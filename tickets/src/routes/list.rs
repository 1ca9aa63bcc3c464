use axum::extract::{Query, State};
use axum::http::HeaderValue;
use axum::http::header::LINK;
use axum::response::{IntoResponse, Response};
use common::validate::{all, field};
use common::{FieldError, Json, Result};
use serde::Deserialize;
use utoipa::IntoParams;
use uuid::Uuid;

use crate::AppState;
use crate::ticket::Ticket;

/// Optional paging. Without any parameter the newest `TICKETS_LIST_LIMIT` (1,000) are
/// answered in one list, as the original API answers the whole list (its web client
/// expects one array), with a `Link` to the rest when there are more.
#[derive(Debug, Deserialize, IntoParams)]
pub struct Paging {
    /// Tickets per page, 1 to 100 (default 20 when paging).
    limit: Option<String>,
    /// A ticket id: the page of tickets listed after it (older).
    before: Option<String>,
    /// A ticket id: the page of tickets listed before it (newer).
    after: Option<String>,
}

/// Where a page starts.
enum From {
    Newest,
    Before(Uuid),
    After(Uuid),
}

impl Paging {
    /// `None` when no paging was asked for.
    fn page(&self) -> Result<Option<(i64, From)>> {
        if self.limit.is_none() && self.before.is_none() && self.after.is_none() {
            return Ok(None);
        }
        let limit = self
            .limit
            .as_deref()
            .map_or(Some(20), |l| l.trim().parse().ok())
            .filter(|l| (1..=100).contains(l));
        let cursor = |name: &str, value: &Option<String>| match value.as_deref() {
            None => Ok(None),
            Some(id) => Uuid::try_parse(id.trim())
                .map(Some)
                .map_err(|_| FieldError::new(name, "Must be a ticket id")),
        };
        let (limit, before, after) = all((
            field("limit", limit, "Limit must be between 1 and 100"),
            cursor("before", &self.before),
            cursor("after", &self.after),
        ))?;
        let from = match (before, after) {
            (Some(id), _) => From::Before(id),
            (None, Some(id)) => From::After(id),
            (None, None) => From::Newest,
        };
        Ok(Some((limit, from)))
    }
}

/// Tickets that are not reserved, newest first.
#[utoipa::path(
    get,
    path = "/api/tickets",
    params(Paging),
    responses(
        (status = 200, description = "Unreserved tickets, newest first: without paging at most `TICKETS_LIST_LIMIT` (1,000), with a `Link` header (`rel=\"next\"`) when there are more; with paging, one page, and a `Link` header naming the `next` (older) and `prev` (newer) pages", body = [Ticket]),
        (status = 400, description = "`Limit must be between 1 and 100`, or `before`/`after` is not a ticket id", body = common::ErrorBody),
    )
)]
pub async fn list(State(app): State<AppState>, Query(paging): Query<Paging>) -> Result<Response> {
    let Some((limit, from)) = paging.page()? else {
        return unpaged(&app).await;
    };
    let page = match from {
        From::Newest => Ticket::first_page(&app.pool, limit).await?,
        From::Before(id) => Ticket::page_before(&app.pool, id, limit).await?,
        From::After(id) => {
            let mut page = Ticket::page_after(&app.pool, id, limit).await?;
            page.reverse();
            page
        }
    };
    let mut links = Vec::new();
    if let Some(last) = page.last()
        && !Ticket::page_before(&app.pool, last.id, 1).await?.is_empty()
    {
        links.push(format!(
            "</api/tickets?limit={limit}&before={}>; rel=\"next\"",
            last.id
        ));
    }
    if let Some(first) = page.first()
        && !Ticket::page_after(&app.pool, first.id, 1).await?.is_empty()
    {
        links.push(format!(
            "</api/tickets?limit={limit}&after={}>; rel=\"prev\"",
            first.id
        ));
    }
    with_links(Json(page).into_response(), &links)
}

/// Pages that follow an unpaged list are this long (the most a page may be).
const PAGE_AFTER_UNPAGED: i64 = 100;

/// The newest unreserved tickets, at most the configured bound: one more is read to
/// tell whether a `next` link is due. Memory stays bounded whatever the table holds.
async fn unpaged(app: &AppState) -> Result<Response> {
    let mut tickets = Ticket::first_page(&app.pool, app.list_limit.saturating_add(1)).await?;
    let more = usize::try_from(app.list_limit).is_ok_and(|bound| tickets.len() > bound);
    let mut links = Vec::new();
    if more {
        tickets.truncate(usize::try_from(app.list_limit).unwrap_or(usize::MAX));
        if let Some(last) = tickets.last() {
            links.push(format!(
                "</api/tickets?limit={PAGE_AFTER_UNPAGED}&before={}>; rel=\"next\"",
                last.id
            ));
        }
    }
    with_links(Json(tickets).into_response(), &links)
}

fn with_links(mut response: Response, links: &[String]) -> Result<Response> {
    if !links.is_empty() {
        let links = HeaderValue::from_str(&links.join(", ")).map_err(anyhow::Error::from)?;
        response.headers_mut().insert(LINK, links);
    }
    Ok(response)
}
