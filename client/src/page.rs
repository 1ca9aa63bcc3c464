//! What every page shares: the visitor (their session and who they are), rendering,
//! and the pages shown when something goes wrong.

use askama::Template;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use serde::Deserialize;

use crate::AppState;
use crate::api::{ApiError, Area, Message};

/// The signed-in user, as auth reports it.
#[derive(Debug, Clone, Deserialize)]
pub struct User {
    pub id: String,
    pub email: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CurrentUser {
    current_user: Option<User>,
}

/// Whoever is looking at the page: their session cookie (to call the API with) and,
/// if it is valid, their user.
pub struct Visitor {
    pub session: Option<HeaderValue>,
    pub user: Option<User>,
    /// The browser's address, as the ingress in front of the client saw it.
    pub address: Option<std::net::IpAddr>,
}

/// Proxies in front of the client that append to `X-Forwarded-For`: the ingress.
const TRUSTED_PROXY_HOPS: usize = 1;

/// The `session` cookie of a request, as a `Cookie` header to forward.
fn session_of(parts: &Parts) -> Option<HeaderValue> {
    let cookies = parts.headers.get_all(axum::http::header::COOKIE);
    cookies
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .map(str::trim)
        .find(|pair| pair.starts_with("session="))
        .and_then(|pair| HeaderValue::from_str(pair).ok())
}

impl FromRequestParts<AppState> for Visitor {
    type Rejection = PageError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, PageError> {
        let address =
            kit::http::client_address(&parts.headers, &parts.extensions, TRUSTED_PROXY_HOPS);
        let Some(session) = session_of(parts) else {
            return Ok(Self {
                session: None,
                user: None,
                address,
            });
        };
        let answer: CurrentUser = state
            .api
            .get(Area::Auth, "/api/users/currentuser", Some(&session))
            .await?;
        Ok(Self {
            session: Some(session),
            user: answer.current_user,
            address,
        })
    }
}

/// A visitor who must be signed in; anyone else is sent to the sign-in page.
pub struct SignedIn {
    pub session: HeaderValue,
    pub user: User,
}

impl FromRequestParts<AppState> for SignedIn {
    type Rejection = PageError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, PageError> {
        match Visitor::from_request_parts(parts, state).await? {
            Visitor {
                session: Some(session),
                user: Some(user),
                ..
            } => Ok(Self { session, user }),
            _ => Err(PageError::SignIn),
        }
    }
}

/// Renders a page.
pub fn render(status: StatusCode, page: &impl Template) -> Response {
    match page.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(error) => PageError::Internal(anyhow::Error::new(error)).into_response(),
    }
}

/// Why a page cannot be shown.
#[derive(Debug, thiserror::Error)]
pub enum PageError {
    #[error("the page does not exist")]
    NotFound,
    #[error("signing in is required")]
    SignIn,
    #[error("the API is unavailable: {0}")]
    Unavailable(String),
    #[error("a form was posted from another site")]
    CrossSite,
    #[error("the API refused a request it should have taken: {0:?}")]
    Unexpected(Vec<Message>),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<ApiError> for PageError {
    fn from(error: ApiError) -> Self {
        match error {
            ApiError::Unavailable(cause) => Self::Unavailable(cause),
            ApiError::Refused { status, .. } if status == StatusCode::UNAUTHORIZED => Self::SignIn,
            ApiError::Refused { status, .. } if status == StatusCode::NOT_FOUND => Self::NotFound,
            ApiError::Refused { messages, .. } => Self::Unexpected(messages),
        }
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    user: Option<User>,
    title: &'a str,
    text: &'a str,
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let (status, title, text) = match &self {
            Self::SignIn => return Redirect::to("/auth/signin").into_response(),
            Self::CrossSite => (
                StatusCode::FORBIDDEN,
                "Refused",
                "This form was sent from another site, so it was refused. Please use the form on this site.",
            ),
            Self::NotFound => (
                StatusCode::NOT_FOUND,
                "Not found",
                "There is nothing here. It may have been sold, or never existed.",
            ),
            Self::Unavailable(cause) => {
                tracing::warn!(%cause, "the API is unavailable");
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "We can't reach the ticket service",
                    "Something on our side is not answering right now. Please try again in a moment.",
                )
            }
            Self::Unexpected(_) | Self::Internal(_) => {
                tracing::error!(error = format!("{self:#}"), "page failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Something went wrong",
                    "We could not show this page. Please try again.",
                )
            }
        };
        let page = ErrorPage {
            user: None,
            title,
            text,
        };
        match page.render() {
            Ok(html) => (status, Html(html)).into_response(),
            Err(_) => (status, text.to_owned()).into_response(),
        }
    }
}
