//! The one error type of every service and the JSON error body of
//! `docs/api.md` § Errors.
//!
//! Handlers return [`Result<T>`](crate::Result); whatever goes wrong becomes an
//! [`Error`], and every [`Error`] answers with
//! `{"errors": [{"message": "...", "field": "..."}]}`. Unexpected failures are
//! logged with their full chain of causes and answered with a bare
//! `Something went wrong`, so internals never reach the client.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

/// One entry of the error body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct FieldError {
    pub message: String,
    /// Present only for validation errors: the request field that failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl FieldError {
    pub fn new(field: &str, message: &str) -> Self {
        Self {
            message: message.to_owned(),
            field: Some(field.to_owned()),
        }
    }
}

/// The body of every non-2xx answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub errors: Vec<FieldError>,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// One or more request fields failed validation (400, one entry per field).
    #[error("validation failed: {0:?}")]
    Validation(Vec<FieldError>),
    /// A business rule was broken, or the body could not be read (400).
    #[error("{0}")]
    BadRequest(String),
    /// No valid session where one is required, or not the owner (401).
    #[error("Not authorized")]
    NotAuthorized,
    /// A request another site made a browser send (a foreign `Origin`) (403).
    #[error("Cross-site request refused")]
    CrossSite,
    /// Unknown route, or an id that does not exist or does not parse (404).
    #[error("Not Found")]
    NotFound,
    /// The body is larger than the limit (413).
    #[error("Request body is too large")]
    PayloadTooLarge,
    /// The body is not declared as JSON (415).
    #[error("Content-Type must be application/json")]
    UnsupportedMediaType,
    /// Too many attempts (sign-in failures, sign-ups, orders or tickets per user) (429,
    /// with `Retry-After` in whole seconds).
    #[error("{message}")]
    TooManyRequests { message: String, retry_after: u64 },
    /// A service we depend on (the payment provider) failed or timed out (502).
    #[error("{0}")]
    BadGateway(String),
    /// The request ran out of time, or the service cannot serve it now (503).
    #[error("{0}")]
    Unavailable(String),
    /// A database query failed (500), or the database could not be reached or would
    /// not serve now (503, as `unreachable` below decides: a retry, or another replica, may
    /// succeed). The cause is logged, never sent.
    /// Kept apart from [`Error::Internal`] so that a constraint violation can still be
    /// told apart (see [`ResultExt::on_constraint`]).
    #[cfg(feature = "sqlx")]
    #[error("database query failed")]
    Database(#[from] sqlx::Error),
    /// Anything unexpected (500); the cause is logged, never sent.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl Error {
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::BadRequest(message.into())
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::Validation(_) | Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::NotAuthorized => StatusCode::UNAUTHORIZED,
            Self::CrossSite => StatusCode::FORBIDDEN,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::BadGateway(_) => StatusCode::BAD_GATEWAY,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            #[cfg(feature = "sqlx")]
            Self::Database(cause) if unreachable(cause) => StatusCode::SERVICE_UNAVAILABLE,
            #[cfg(feature = "sqlx")]
            Self::Database(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The entries of the error body.
    pub fn body(&self) -> ErrorBody {
        let errors = match self {
            Self::Validation(fields) => fields.clone(),
            #[cfg(feature = "sqlx")]
            Self::Database(cause) if unreachable(cause) => vec![message(UNREACHABLE)],
            #[cfg(feature = "sqlx")]
            Self::Database(_) => vec![message("Something went wrong")],
            Self::Internal(_) => vec![message("Something went wrong")],
            other => vec![message(&other.to_string())],
        };
        ErrorBody { errors }
    }
}

/// What a client is told when the database cannot be reached: the words the ingress
/// uses for a service without a ready replica.
#[cfg(feature = "sqlx")]
const UNREACHABLE: &str = "The service is unavailable; please try again";

/// Whether the database could not be reached or would not serve us now, as opposed
/// to a query that failed on a working connection: no connection within the pool's
/// timeout, a closed pool, a broken socket, or one of these SQLSTATEs: class 08
/// (connection exception), class 53 (insufficient resources: too many connections,
/// disk full), 55000 (the database does not accept connections), 57P01-57P03 (the
/// server shut down, crashed, or is not accepting connections yet: a failover).
#[cfg(feature = "sqlx")]
fn unreachable(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            code.starts_with("08")
                || code.starts_with("53")
                || matches!(&*code, "55000" | "57P01" | "57P02" | "57P03")
        }),
        _ => false,
    }
}

fn message(text: &str) -> FieldError {
    FieldError {
        message: text.to_owned(),
        field: None,
    }
}

/// Why a request failed with a 5xx, carried in its answer's extensions to the
/// middleware that logs it (`kit::telemetry::Observe`), which knows the request's
/// method, route, id and trace; the cause never reaches the client.
#[derive(Debug, Clone)]
pub struct Failure(pub String);

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let failure = match &self {
            // `{:#}` prints the whole chain of contexts on one line.
            Self::Internal(cause) => Some(format!("{cause:#}")),
            #[cfg(feature = "sqlx")]
            Self::Database(cause) => Some(format!("database query failed: {cause}")),
            _ => None,
        };
        let mut response = (self.status(), axum::Json(self.body())).into_response();
        if let Some(failure) = failure {
            response.extensions_mut().insert(Failure(failure));
        }
        if let Self::TooManyRequests { retry_after, .. } = &self {
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from(retry_after.max(&1).to_owned()),
            );
        }
        response
    }
}

impl Error {
    /// 429 with `message`, to be retried after `wait` (rounded up to whole seconds).
    pub fn too_many(message: impl Into<String>, wait: std::time::Duration) -> Self {
        let whole = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        Self::TooManyRequests {
            message: message.into(),
            retry_after: whole.max(1),
        }
    }
}

/// Maps the violation of a named constraint to an error of the caller's choosing, in
/// one line:
///
/// ```ignore
/// insert.await.on_constraint("users_email_key", |_| Error::bad_request("Email in use"))?;
/// ```
#[cfg(feature = "sqlx")]
pub trait ResultExt<T> {
    fn on_constraint(
        self,
        name: &str,
        map: impl FnOnce(Box<dyn sqlx::error::DatabaseError>) -> Error,
    ) -> Result<T, Error>;
}

#[cfg(feature = "sqlx")]
impl<T> ResultExt<T> for Result<T, sqlx::Error> {
    fn on_constraint(
        self,
        name: &str,
        map: impl FnOnce(Box<dyn sqlx::error::DatabaseError>) -> Error,
    ) -> Result<T, Error> {
        self.map_err(|error| match error {
            sqlx::Error::Database(db) if db.constraint() == Some(name) => map(db),
            other => Error::Database(other),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_errors_hide_their_cause() {
        let error = Error::Internal(anyhow::anyhow!("password=hunter2 leaked"));
        let body = serde_json::to_string(&error.body()).unwrap();
        assert_eq!(body, r#"{"errors":[{"message":"Something went wrong"}]}"#);
        assert_eq!(error.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }

    #[cfg(feature = "sqlx")]
    #[test]
    fn an_unreachable_database_is_a_503_and_a_failed_query_a_500() {
        let broken = || std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        for cause in [
            sqlx::Error::PoolTimedOut,
            sqlx::Error::PoolClosed,
            sqlx::Error::Io(broken()),
        ] {
            let response = Error::Database(cause).into_response();
            assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
            // Logged by the middleware, as every 5xx is.
            assert!(response.extensions().get::<Failure>().is_some());
        }
        let body = serde_json::to_value(Error::Database(sqlx::Error::PoolTimedOut).body());
        assert_eq!(
            body.unwrap(),
            serde_json::json!({"errors": [{"message": "The service is unavailable; please try again"}]})
        );
        let failed = Error::Database(sqlx::Error::RowNotFound);
        assert_eq!(failed.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(failed.body().errors[0].message, "Something went wrong");
    }

    #[test]
    fn validation_errors_name_their_fields() {
        let error = Error::Validation(vec![FieldError::new("email", "Email must be valid")]);
        let body = serde_json::to_string(&error.body()).unwrap();
        assert_eq!(
            body,
            r#"{"errors":[{"message":"Email must be valid","field":"email"}]}"#
        );
    }

    #[test]
    fn business_errors_carry_their_message_without_field() {
        let body = serde_json::to_value(Error::bad_request("Email in use").body()).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"errors": [{"message": "Email in use"}]})
        );
        assert_eq!(Error::NotFound.body().errors[0].message, "Not Found");
        assert_eq!(
            Error::NotAuthorized.body().errors[0].message,
            "Not authorized"
        );
    }
}
