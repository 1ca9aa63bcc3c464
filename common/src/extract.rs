//! Extractors that answer bad input with the error body of
//! `docs/api.md` § Errors.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::header::CONTENT_TYPE;
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::error::Category;
use uuid::Uuid;

use crate::Error;

/// A JSON body (request) or JSON answer (response).
///
/// Unlike `axum::Json`, a body that cannot be read answers with the API's error
/// body: 400 for malformed JSON or a body that is not an object, 413 when it is larger
/// than the limit, 415 when it is not declared as JSON. Request types are meant to be
/// lenient (every field optional, see [`crate::validate`]) so that wrong or missing
/// fields are reported per field by validation rather than here.
#[derive(Debug, Clone, Copy, Default)]
pub struct Json<T>(pub T);

impl<S, T> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Error;

    async fn from_request(req: Request, state: &S) -> Result<Self, Error> {
        if !is_json(req.headers()) {
            return Err(Error::UnsupportedMediaType);
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                Error::PayloadTooLarge
            } else {
                Error::bad_request("Request body could not be read")
            }
        })?;
        parse(&bytes).map(Self)
    }
}

/// `application/json`, or any `application/*+json`, with any parameters.
fn is_json(headers: &HeaderMap) -> bool {
    let Some(content_type) = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// Parses a body that must be a JSON object.
fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    if first.is_some_and(|&b| b != b'{') {
        return Err(
            match serde_json::from_slice::<serde::de::IgnoredAny>(bytes) {
                Ok(_) => Error::bad_request("Request body must be a JSON object"),
                Err(_) => Error::bad_request("Request body is not valid JSON"),
            },
        );
    }
    serde_json::from_slice(bytes).map_err(|error| match error.classify() {
        Category::Data => Error::bad_request("Request body must be a JSON object"),
        Category::Syntax | Category::Eof | Category::Io => {
            Error::bad_request("Request body is not valid JSON")
        }
    })
}

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// The `{id}` segment of a path, as a UUID. Anything else is a 404, as an id that
/// does not exist would be (`docs/api.md` § Values).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Id(pub Uuid);

impl<S: Send + Sync> FromRequestParts<S> for Id {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Error> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|_| Error::NotFound)?;
        Uuid::try_parse(&raw).map(Id).map_err(|_| Error::NotFound)
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize)]
    struct Body {
        #[allow(dead_code)]
        a: Option<serde_json::Value>,
    }

    fn message(body: &str) -> String {
        match parse::<Body>(body.as_bytes()) {
            Err(Error::BadRequest(message)) => message,
            other => panic!("{body}: {other:?}"),
        }
    }

    #[test]
    fn only_objects_are_bodies() {
        assert!(parse::<Body>(br#" {"a": 1} "#).is_ok());
        assert!(parse::<Body>(b"{}").is_ok());
        for not_object in ["[1,2]", "\"text\"", "12", "null", "true"] {
            assert_eq!(
                message(not_object),
                "Request body must be a JSON object",
                "{not_object}"
            );
        }
        for not_json in ["", "   ", "{", "{not json", "[1,", "nul"] {
            assert_eq!(
                message(not_json),
                "Request body is not valid JSON",
                "{not_json}"
            );
        }
    }

    #[test]
    fn json_content_types() {
        let with = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(CONTENT_TYPE, value.parse().unwrap());
            is_json(&headers)
        };
        assert!(with("application/json"));
        assert!(with("Application/JSON; charset=utf-8"));
        assert!(with("application/merge-patch+json"));
        assert!(!with("text/plain"));
        assert!(!with("application/x-www-form-urlencoded"));
        assert!(!is_json(&HeaderMap::new()));
    }
}

/// The `{id}` segment of a path, checked only when the handler asks: for routes whose
/// API validates the body before looking the id up (`PUT /api/tickets/{id}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UncheckedId(Option<Uuid>);

impl UncheckedId {
    /// The id, or 404 if it did not parse.
    pub fn check(self) -> Result<Uuid, Error> {
        self.0.ok_or(Error::NotFound)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for UncheckedId {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(
            Id::from_request_parts(parts, state)
                .await
                .ok()
                .map(|Id(id)| id),
        ))
    }
}
