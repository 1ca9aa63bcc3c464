//! `/auth/signup`, `/auth/signin`, `/auth/signout`: forms that call auth and hand its
//! `Set-Cookie` on to the browser. Signing out is a form post too, so that no link
//! or image on another site can do it.

use askama::Template;
use axum::extract::{Form, State};
use axum::http::header::SET_COOKIE;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::AppState;
use crate::api::{ApiError, Area, Message};
use crate::page::{PageError, User, Visitor, render};

#[derive(Template)]
#[template(path = "auth.html")]
struct AuthPage<'a> {
    user: Option<User>,
    title: &'a str,
    action: &'a str,
    email: String,
    errors: Vec<Message>,
}

#[derive(Debug, Deserialize)]
pub struct Credentials {
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
}

const SIGN_UP: (&str, &str) = ("Sign Up", "/auth/signup");
const SIGN_IN: (&str, &str) = ("Sign In", "/auth/signin");

fn form(
    (title, action): (&'static str, &'static str),
    visitor: Visitor,
    email: String,
    errors: Vec<Message>,
    status: StatusCode,
) -> Response {
    let page = AuthPage {
        user: visitor.user,
        title,
        action,
        email,
        errors,
    };
    render(status, &page)
}

pub async fn signup_form(visitor: Visitor) -> Response {
    form(SIGN_UP, visitor, String::new(), Vec::new(), StatusCode::OK)
}

pub async fn signin_form(visitor: Visitor) -> Response {
    form(SIGN_IN, visitor, String::new(), Vec::new(), StatusCode::OK)
}

pub async fn signup(
    State(app): State<AppState>,
    visitor: Visitor,
    Form(credentials): Form<Credentials>,
) -> Result<Response, PageError> {
    submit(&app, SIGN_UP, "/api/users/signup", visitor, credentials).await
}

pub async fn signin(
    State(app): State<AppState>,
    visitor: Visitor,
    Form(credentials): Form<Credentials>,
) -> Result<Response, PageError> {
    submit(&app, SIGN_IN, "/api/users/signin", visitor, credentials).await
}

/// Sends the credentials to auth: signed in, the browser gets the session and goes
/// home; refused, the form comes back with auth's messages.
async fn submit(
    app: &AppState,
    page: (&'static str, &'static str),
    path: &str,
    visitor: Visitor,
    credentials: Credentials,
) -> Result<Response, PageError> {
    let body = json!({"email": credentials.email, "password": credentials.password});
    let answer = app
        .api
        .call_for::<Value>(
            Area::Auth,
            reqwest::Method::POST,
            path,
            None,
            Some(body),
            visitor.address,
        )
        .await;
    match answer {
        Ok(answer) => Ok(home_with_cookies(answer.cookies)),
        Err(ApiError::Refused { status, messages }) if status == StatusCode::BAD_REQUEST => {
            Ok(form(page, visitor, credentials.email, messages, status))
        }
        Err(other) => Err(other.into()),
    }
}

#[derive(Template)]
#[template(path = "signout.html")]
struct SignOutPage {
    user: Option<User>,
}

/// `GET /auth/signout`: a link someone followed (perhaps from another site) signs
/// nobody out; it offers the form that does.
pub async fn signout_form(visitor: Visitor) -> Response {
    if visitor.user.is_none() {
        return Redirect::to("/").into_response();
    }
    render(StatusCode::OK, &SignOutPage { user: visitor.user })
}

/// `POST /auth/signout` (behind the Origin check of every form post): clears the
/// session and goes home.
pub async fn signout(State(app): State<AppState>, visitor: Visitor) -> Result<Response, PageError> {
    let answer = app
        .api
        .post::<Value>(
            Area::Auth,
            "/api/users/signout",
            visitor.session.as_ref(),
            json!({}),
        )
        .await?;
    Ok(home_with_cookies(answer.cookies))
}

fn home_with_cookies(cookies: Vec<axum::http::HeaderValue>) -> Response {
    let mut headers = HeaderMap::new();
    for cookie in cookies {
        headers.append(SET_COOKIE, cookie);
    }
    (headers, Redirect::to("/")).into_response()
}
