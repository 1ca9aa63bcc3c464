use axum::extract::State;
use axum::http::StatusCode;
use common::validate::{self, all, field};
use common::{AuthUser, FieldError, Json, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::AppState;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NewPayment {
    /// A card token from Stripe.js (`tok_visa` in test mode).
    #[schema(value_type = String, example = "tok_visa")]
    pub token: Option<Value>,
    #[schema(value_type = String, format = Uuid)]
    pub order_id: Option<Value>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Payment {
    /// The payment (charge) id.
    pub id: Uuid,
}

/// Pays for one of the caller's orders; publishes `payment.created`.
#[utoipa::path(
    post,
    path = "/api/payments",
    request_body = NewPayment,
    responses(
        (status = 201, description = "Paid", body = Payment),
        (status = 400, description = "`Token is required`, `Token is not a payment token`, `Order ID is required`, `Cannot pay for an cancelled order`, `Order has already been paid`, or the provider's decline message", body = common::ErrorBody),
        (status = 401, description = "Not signed in, or not the buyer", body = common::ErrorBody),
        (status = 404, description = "No such order", body = common::ErrorBody),
        (status = 502, description = "The payment provider is unavailable; retrying the same request is safe", body = common::ErrorBody),
    )
)]
pub async fn create(
    State(app): State<AppState>,
    AuthUser(user): AuthUser,
    Json(input): Json<NewPayment>,
) -> Result<(StatusCode, Json<Payment>)> {
    let token = match validate::text(input.token.as_ref()) {
        None => Err(FieldError::new("token", "Token is required")),
        Some(_) => field(
            "token",
            validate::provider_token(input.token.as_ref()),
            "Token is not a payment token",
        ),
    };
    let order_id = field(
        "orderId",
        validate::uuid(input.order_id.as_ref()),
        "Order ID is required",
    );
    let (token, order_id) = all((token, order_id))?;

    let id = app.payments.pay(user.id, order_id, &token).await?;
    Ok((StatusCode::CREATED, Json(Payment { id })))
}
