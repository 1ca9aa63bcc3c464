//! Event payloads, field for field the JSON of the original service.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::{Event, Subject};
use crate::money::Price;
use crate::time::Timestamp;

/// The status of an order, shared by orders (which owns it) and payments (which
/// keeps a replica).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
pub enum OrderStatus {
    /// Created; the ticket is reserved while the buyer pays.
    #[serde(rename = "created")]
    Created,
    /// Cancelled by the buyer or expired; the ticket is free again.
    #[serde(rename = "cancelled")]
    Cancelled,
    /// Waiting for the payment to complete.
    #[serde(rename = "awaiting:payment")]
    AwaitingPayment,
    /// Paid.
    #[serde(rename = "complete")]
    Complete,
}

impl OrderStatus {
    pub const fn as_str(self) -> &'static str {
        match self {
            OrderStatus::Created => "created",
            OrderStatus::Cancelled => "cancelled",
            OrderStatus::AwaitingPayment => "awaiting:payment",
            OrderStatus::Complete => "complete",
        }
    }

    /// Created or awaiting payment: the order may still be paid for, cancelled or expire.
    pub const fn is_pending(self) -> bool {
        matches!(self, OrderStatus::Created | OrderStatus::AwaitingPayment)
    }

    pub fn parse(text: &str) -> Option<Self> {
        [
            Self::Created,
            Self::Cancelled,
            Self::AwaitingPayment,
            Self::Complete,
        ]
        .into_iter()
        .find(|status| status.as_str() == text)
    }
}

/// Stored as `TEXT`, in the same words as on the wire.
#[cfg(feature = "sqlx")]
impl sqlx::Type<sqlx::Postgres> for OrderStatus {
    fn type_info() -> sqlx::postgres::PgTypeInfo {
        <&str as sqlx::Type<sqlx::Postgres>>::type_info()
    }

    fn compatible(ty: &sqlx::postgres::PgTypeInfo) -> bool {
        <&str as sqlx::Type<sqlx::Postgres>>::compatible(ty)
    }
}

#[cfg(feature = "sqlx")]
impl sqlx::Encode<'_, sqlx::Postgres> for OrderStatus {
    fn encode_by_ref(
        &self,
        buf: &mut sqlx::postgres::PgArgumentBuffer,
    ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
        <&str as sqlx::Encode<sqlx::Postgres>>::encode_by_ref(&self.as_str(), buf)
    }
}

#[cfg(feature = "sqlx")]
impl sqlx::Decode<'_, sqlx::Postgres> for OrderStatus {
    fn decode(value: sqlx::postgres::PgValueRef<'_>) -> Result<Self, sqlx::error::BoxDynError> {
        let text = <&str as sqlx::Decode<sqlx::Postgres>>::decode(value)?;
        Self::parse(text).ok_or_else(|| format!("unknown order status {text:?}").into())
    }
}

/// A ticket was listed for sale.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TicketCreated {
    pub id: Uuid,
    /// Always 0.
    pub version: i64,
    pub title: String,
    pub price: Price,
    pub user_id: Uuid,
}

impl Event for TicketCreated {
    const SUBJECT: Subject = Subject::TicketCreated;
}

/// A ticket changed: edited by its seller, reserved by an order, or freed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TicketUpdated {
    pub id: Uuid,
    /// One more than the ticket's previous event.
    pub version: i64,
    pub title: String,
    pub price: Price,
    pub user_id: Uuid,
    /// The order reserving the ticket; absent when it is not reserved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_id: Option<Uuid>,
}

impl Event for TicketUpdated {
    const SUBJECT: Subject = Subject::TicketUpdated;
}

/// A buyer ordered a ticket: it is reserved until the order expires.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrderCreated {
    pub id: Uuid,
    /// Always 0.
    pub version: i64,
    pub status: OrderStatus,
    pub user_id: Uuid,
    /// When the order expires unless it is paid (RFC 3339, UTC, milliseconds).
    #[serde(with = "crate::time::iso")]
    #[schema(value_type = String, format = DateTime)]
    pub expires_at: Timestamp,
    pub ticket: OrderCreatedTicket,
}

/// The ordered ticket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct OrderCreatedTicket {
    pub id: Uuid,
    pub price: Price,
}

impl Event for OrderCreated {
    const SUBJECT: Subject = Subject::OrderCreated;
}

/// An order was cancelled, by its buyer or because it expired: its ticket is free.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct OrderCancelled {
    pub id: Uuid,
    /// One more than the order's previous event.
    pub version: i64,
    pub ticket: TicketRef,
}

/// The ticket an event is about.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TicketRef {
    pub id: Uuid,
}

impl Event for OrderCancelled {
    const SUBJECT: Subject = Subject::OrderCancelled;
}

/// An order's time to pay ran out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExpirationComplete {
    pub order_id: Uuid,
}

impl Event for ExpirationComplete {
    const SUBJECT: Subject = Subject::ExpirationComplete;
}

/// An order was paid for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PaymentCreated {
    /// The payment (charge) id.
    pub id: Uuid,
    pub order_id: Uuid,
    /// Stripe's id of the charge.
    pub stripe_id: String,
}

impl Event for PaymentCreated {
    const SUBJECT: Subject = Subject::PaymentCreated;
}

/// A session was signed out: every service refuses its token from now until the
/// token's own expiry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionRevoked {
    /// The token's id: its `jti` claim (or, for a token without one, its signature).
    pub token_id: String,
    /// When the token expires anyway (seconds since the Unix epoch): the refusal may
    /// be forgotten after it.
    pub exp: i64,
}

impl Event for SessionRevoked {
    const SUBJECT: Subject = Subject::SessionRevoked;
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn payloads_have_the_original_shapes() {
        let id = Uuid::nil();
        let price = Price::from_cents(1250).unwrap();
        let updated = TicketUpdated {
            id,
            version: 1,
            title: "t".into(),
            price,
            user_id: id,
            order_id: None,
        };
        assert_eq!(
            serde_json::to_value(&updated).unwrap(),
            json!({"id": id, "version": 1, "title": "t", "price": 12.5, "userId": id})
        );
        let at = crate::time::now();
        let created = OrderCreated {
            id,
            version: 0,
            status: OrderStatus::Created,
            user_id: id,
            expires_at: at,
            ticket: OrderCreatedTicket { id, price },
        };
        assert_eq!(
            serde_json::to_value(&created).unwrap(),
            json!({"id": id, "version": 0, "status": "created", "userId": id,
                   "expiresAt": crate::time::to_iso(&at), "ticket": {"id": id, "price": 12.5}})
        );
        let back: OrderCreated =
            serde_json::from_value(serde_json::to_value(&created).unwrap()).unwrap();
        assert_eq!(back, created);
        assert_eq!(
            serde_json::to_value(ExpirationComplete { order_id: id }).unwrap(),
            json!({"orderId": id})
        );
        assert_eq!(
            serde_json::to_value(PaymentCreated {
                id,
                order_id: id,
                stripe_id: "ch_1".into()
            })
            .unwrap(),
            json!({"id": id, "orderId": id, "stripeId": "ch_1"})
        );
        assert_eq!(
            serde_json::to_value(OrderStatus::AwaitingPayment).unwrap(),
            json!("awaiting:payment")
        );
        assert_eq!(
            OrderStatus::parse("awaiting:payment"),
            Some(OrderStatus::AwaitingPayment)
        );
    }
}
