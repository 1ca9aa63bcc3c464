use axum::extract::{Query, State};
use axum::http::HeaderValue;
use axum::http::header::LINK;
use axum::response::{IntoResponse, Response};
use common::validate::{all, field};
use common::{AuthUser, FieldError, Json, Result};
use serde::Deserialize;
use utoipa::IntoParams;
use uuid::Uuid;

use crate::AppState;
use crate::order::Order;

/// Optional paging. Without it the newest `ORDERS_LIST_LIMIT` (1,000) orders are
/// answered in one list, as the original answers all of them, with a `Link` to the
/// rest when there are more.
#[derive(Debug, Deserialize, IntoParams)]
pub struct Paging {
    /// Orders per page, 1 to 100 (default 20 when paging).
    limit: Option<String>,
    /// One of the caller's order ids: the page of orders placed before it (older).
    before: Option<String>,
}

/// Pages that follow an unpaged list are this long (the most a page may be).
const PAGE_AFTER_UNPAGED: i64 = 100;

/// The caller's orders, newest first, each with its ticket.
#[utoipa::path(
    get,
    path = "/api/orders",
    params(Paging),
    responses(
        (status = 200, description = "The caller's orders, newest first: without paging at most `ORDERS_LIST_LIMIT` (1,000), with a `Link` header (`rel=\"next\"`) when there are more; with paging, one page and a `next` link while older ones remain", body = [Order]),
        (status = 400, description = "`Limit must be between 1 and 100`, or `before` is not an order id", body = common::ErrorBody),
        (status = 401, description = "Not signed in", body = common::ErrorBody),
    )
)]
pub async fn list(
    State(app): State<AppState>,
    AuthUser(user): AuthUser,
    Query(paging): Query<Paging>,
) -> Result<Response> {
    let (limit, next_limit, before) = if paging.limit.is_none() && paging.before.is_none() {
        (app.list_limit, PAGE_AFTER_UNPAGED, None)
    } else {
        let limit = paging
            .limit
            .as_deref()
            .map_or(Some(20), |l| l.trim().parse().ok())
            .filter(|l| (1..=100).contains(l));
        let before = match paging.before.as_deref() {
            None => Ok(None),
            Some(id) => Uuid::try_parse(id.trim())
                .map(Some)
                .map_err(|_| FieldError::new("before", "Must be an order id")),
        };
        let (limit, before) = all((
            field("limit", limit, "Limit must be between 1 and 100"),
            before,
        ))?;
        (limit, limit, before)
    };
    // One more than asked for tells whether a `next` link is due; memory stays
    // bounded however many orders the user has placed.
    let mut orders = Order::of_user(&app.pool, user.id, before, limit.saturating_add(1)).await?;
    let bound = usize::try_from(limit).unwrap_or(usize::MAX);
    let response = if orders.len() > bound {
        orders.truncate(bound);
        let next = orders.last().map(|last| {
            format!(
                "</api/orders?limit={next_limit}&before={}>; rel=\"next\"",
                last.id
            )
        });
        let mut response = Json(orders).into_response();
        if let Some(next) = next {
            let link = HeaderValue::from_str(&next).map_err(anyhow::Error::from)?;
            response.headers_mut().insert(LINK, link);
        }
        response
    } else {
        Json(orders).into_response()
    };
    Ok(response)
}
