//! The routes of `/api/payments`.

mod create;

use axum::Router;
use axum::routing::{get, post};
use common::Error;
use utoipa::OpenApi;

use crate::AppState;
use crate::settle::{PaymentError, SettleError};
use crate::stripe::StripeError;

pub use create::{NewPayment, Payment};

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/api/payments", post(create::create))
        .route(
            "/api/payments/openapi.json",
            get(|| async { axum::Json(ApiDoc::openapi()) }),
        )
        .with_state(state)
}

/// Every way a payment can fail, as the API answers it.
impl From<PaymentError> for Error {
    fn from(error: PaymentError) -> Self {
        match error {
            PaymentError::NoSuchOrder => Error::NotFound,
            PaymentError::NotTheBuyer => Error::NotAuthorized,
            PaymentError::Cancelled => Error::bad_request("Cannot pay for an cancelled order"),
            PaymentError::AlreadyPaid => Error::bad_request("Order has already been paid"),
            // The provider's own message, e.g. `Your card was declined.`
            PaymentError::Declined(message) => Error::BadRequest(message),
            PaymentError::Settle(SettleError::Stripe(StripeError::Unavailable(cause))) => {
                tracing::warn!(%cause, "payment provider unavailable");
                Error::BadGateway("The payment provider is unavailable; please try again".into())
            }
            PaymentError::Settle(SettleError::Stripe(other)) => Error::Internal(other.into()),
            PaymentError::Settle(SettleError::Internal(other)) => Error::Internal(other),
        }
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Ticketing payments",
        description = "Pay for an order with a card token."
    ),
    paths(create::create),
    components(schemas(Payment, NewPayment, common::ErrorBody))
)]
pub struct ApiDoc;
