//! A stand-in for the part of Stripe's REST API that Ticketing uses.
//!
//! - `POST /v1/charges` (form: `amount`, `currency`, `source`) and
//!   `POST /v1/refunds` (form: `charge`), with Stripe's response and error shapes;
//! - a bearer key is required;
//! - test tokens: `tok_visa` (and `tok_mastercard`, `tok_amex`) succeed; `tok_chargeDeclined` is declined with 402
//!   `card_declined` / `Your card was declined.`; any other token is unknown;
//! - `Idempotency-Key`: the same key returns the same response and never charges
//!   twice; concurrent requests with one key are serialised, the later one gets the
//!   saved response; reusing a key with other parameters is an `idempotency_error`;
//! - faults for tests, set through [`StandIn::set_fault`] or `POST /__control/fault`:
//!   fail (503 before the request runs, nothing saved), hang (never answer), or hang
//!   after charging (the charge happens, the answer never comes);
//! - `GET /__control/charges` and `GET /__control/refunds` show what was done: each
//!   charge with the `Idempotency-Key` it was made with and its `metadata[...]`
//!   parameters (payments sends the order and the attempt), as Stripe's dashboard does;
//!   `DELETE /__control/charges/{id}` forgets a charge and its refunds (tests that plant
//!   one clean up after themselves).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// A charge as the stand-in recorded it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Charge {
    pub id: String,
    pub amount: i64,
    pub currency: String,
    pub source: String,
    /// `succeeded` or `failed`.
    pub status: String,
    pub refunded: bool,
    /// The `Idempotency-Key` of the request that made it, if any.
    #[serde(default)]
    pub idempotency_key: Option<String>,
    /// The request's `metadata[name]=value` parameters.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refund {
    pub id: String,
    pub charge: String,
    pub amount: i64,
}

/// What the next requests to `/v1/*` suffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultMode {
    /// Answer normally.
    None,
    /// 503 before doing anything (as a failing load balancer would); nothing is saved.
    Fail,
    /// Never answer, doing nothing.
    Hang,
    /// Do the work (charge, refund, save the idempotent response), then never answer.
    HangAfterCharge,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Fault {
    pub mode: FaultMode,
    /// How many requests it applies to.
    pub times: u32,
}

#[derive(Clone)]
struct Saved {
    fingerprint: String,
    status: StatusCode,
    body: Value,
}

#[derive(Default)]
struct Ledger {
    charges: Vec<Charge>,
    refunds: Vec<Refund>,
    fault: Option<Fault>,
}

type Slot = Arc<tokio::sync::Mutex<Option<Saved>>>;

/// The stand-in's state; cheap to clone.
#[derive(Clone)]
pub struct StandIn {
    key: Option<String>,
    ledger: Arc<Mutex<Ledger>>,
    idempotency: Arc<Mutex<HashMap<String, Slot>>>,
}

impl StandIn {
    /// `key`: the only accepted bearer key; `None` accepts any `sk_test_` key.
    pub fn new(key: Option<String>) -> Self {
        Self {
            key,
            ledger: Arc::default(),
            idempotency: Arc::default(),
        }
    }

    pub fn router(&self) -> Router {
        Router::new()
            .route("/v1/charges", post(charges))
            .route("/v1/refunds", post(refunds))
            .route("/healthz", get(|| async { "ok" }))
            .route("/readyz", get(|| async { "ok" }))
            .route(
                "/__control/charges",
                get(|State(s): State<StandIn>| async move { axum::Json(s.charges()) }),
            )
            .route(
                "/__control/charges/{id}",
                axum::routing::delete(
                    |State(s): State<StandIn>,
                     axum::extract::Path(id): axum::extract::Path<String>| async move {
                        if s.forget_charge(&id) {
                            StatusCode::NO_CONTENT
                        } else {
                            StatusCode::NOT_FOUND
                        }
                    },
                ),
            )
            .route(
                "/__control/refunds",
                get(|State(s): State<StandIn>| async move { axum::Json(s.refunds()) }),
            )
            .route(
                "/__control/fault",
                post(
                    |State(s): State<StandIn>, axum::Json(fault): axum::Json<Fault>| async move {
                        s.set_fault(fault);
                        StatusCode::NO_CONTENT
                    },
                ),
            )
            .with_state(self.clone())
    }

    /// Serves the stand-in on `listener` until `shutdown` completes.
    pub async fn serve(
        &self,
        listener: tokio::net::TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        axum::serve(listener, self.router())
            .with_graceful_shutdown(shutdown)
            .await
    }

    /// Forgets charge `id` and its refunds; whether there was one.
    pub fn forget_charge(&self, id: &str) -> bool {
        let mut ledger = self.ledger();
        let before = ledger.charges.len();
        ledger.charges.retain(|charge| charge.id != id);
        ledger.refunds.retain(|refund| refund.charge != id);
        ledger.charges.len() < before
    }

    pub fn charges(&self) -> Vec<Charge> {
        self.ledger().charges.clone()
    }

    pub fn refunds(&self) -> Vec<Refund> {
        self.ledger().refunds.clone()
    }

    pub fn set_fault(&self, fault: Fault) {
        self.ledger().fault = (fault.mode != FaultMode::None && fault.times > 0).then_some(fault);
    }

    fn ledger(&self) -> MutexGuard<'_, Ledger> {
        self.ledger
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Takes one use of the current fault, if any.
    fn take_fault(&self) -> FaultMode {
        let mut ledger = self.ledger();
        let Some(fault) = ledger.fault.as_mut() else {
            return FaultMode::None;
        };
        let mode = fault.mode;
        fault.times -= 1;
        if fault.times == 0 {
            ledger.fault = None;
        }
        mode
    }

    fn slot(&self, key: &str) -> Slot {
        let mut slots = self
            .idempotency
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Arc::clone(slots.entry(key.to_owned()).or_default())
    }

    fn authorised(&self, headers: &HeaderMap) -> bool {
        let bearer = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default();
        match &self.key {
            Some(key) => bearer == key,
            None => bearer.starts_with("sk_test_") && bearer.len() > "sk_test_".len(),
        }
    }
}

fn error(
    status: StatusCode,
    kind: &str,
    code: Option<&str>,
    message: &str,
    param: Option<&str>,
) -> (StatusCode, Value) {
    let mut body = json!({ "type": kind, "message": message });
    if let Some(code) = code {
        body["code"] = json!(code);
    }
    if let Some(param) = param {
        body["param"] = json!(param);
    }
    (status, json!({ "error": body }))
}

fn random_id(prefix: &str) -> String {
    format!(
        "{prefix}_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..24]
    )
}

/// Runs a `/v1` request: authentication, faults, then idempotency around `work`.
async fn handle(
    standin: &StandIn,
    headers: &HeaderMap,
    path: &str,
    body: &Bytes,
    work: impl FnOnce(&StandIn, &HashMap<String, String>, Option<&str>) -> (StatusCode, Value),
) -> Response {
    if !standin.authorised(headers) {
        let (status, body) = error(
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            None,
            "Invalid API Key provided.",
            None,
        );
        return (status, axum::Json(body)).into_response();
    }
    let fault = standin.take_fault();
    match fault {
        FaultMode::Fail => {
            let (status, body) = error(
                StatusCode::SERVICE_UNAVAILABLE,
                "api_error",
                None,
                "Injected failure.",
                None,
            );
            return (status, axum::Json(body)).into_response();
        }
        FaultMode::Hang => std::future::pending::<()>().await,
        FaultMode::None | FaultMode::HangAfterCharge => {}
    }
    let params: HashMap<String, String> = serde_urlencoded::from_bytes(body).unwrap_or_default();
    let mut sorted: Vec<_> = params.iter().collect();
    sorted.sort();
    let fingerprint = format!("{path}?{sorted:?}");

    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let (status, body) = match key {
        None => work(standin, &params, None),
        Some(key) => {
            let slot = standin.slot(&key);
            let mut saved = slot.lock().await; // serialises requests with one key
            match saved.as_ref() {
                Some(previous) if previous.fingerprint == fingerprint => {
                    (previous.status, previous.body.clone())
                }
                Some(_) => error(
                    StatusCode::BAD_REQUEST,
                    "idempotency_error",
                    None,
                    "Keys for idempotent requests can only be used with the same parameters they were first used with.",
                    None,
                ),
                None => {
                    let (status, body) = work(standin, &params, Some(&key));
                    *saved = Some(Saved {
                        fingerprint,
                        status,
                        body: body.clone(),
                    });
                    (status, body)
                }
            }
        }
    };
    if fault == FaultMode::HangAfterCharge {
        std::future::pending::<()>().await;
    }
    (status, axum::Json(body)).into_response()
}

async fn charges(State(standin): State<StandIn>, headers: HeaderMap, body: Bytes) -> Response {
    handle(&standin, &headers, "/v1/charges", &body, |standin, params, key| {
        let Some(amount) = params.get("amount").and_then(|a| a.parse::<i64>().ok()).filter(|a| *a > 0) else {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                Some("parameter_missing"),
                "Missing required param: amount.",
                Some("amount"),
            );
        };
        let Some(currency) = params.get("currency").filter(|c| !c.is_empty()) else {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                Some("parameter_missing"),
                "Missing required param: currency.",
                Some("currency"),
            );
        };
        let source = params.get("source").cloned().unwrap_or_default();
        let succeeded = match source.as_str() {
            "tok_visa" | "tok_mastercard" | "tok_amex" => true,
            "tok_chargeDeclined" => false,
            other => {
                let message = format!("No such token: '{other}'");
                return error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request_error",
                    Some("resource_missing"),
                    &message,
                    Some("source"),
                );
            }
        };
        let charge = Charge {
            id: random_id("ch"),
            amount,
            currency: currency.clone(),
            source,
            status: if succeeded { "succeeded" } else { "failed" }.into(),
            refunded: false,
            idempotency_key: key.map(str::to_owned),
            metadata: params
                .iter()
                .filter_map(|(name, value)| {
                    let name = name.strip_prefix("metadata[")?.strip_suffix(']')?;
                    Some((name.to_owned(), value.clone()))
                })
                .collect(),
        };
        standin.ledger().charges.push(charge.clone());
        if !succeeded {
            let (status, mut body) = error(
                StatusCode::PAYMENT_REQUIRED,
                "card_error",
                Some("card_declined"),
                "Your card was declined.",
                None,
            );
            body["error"]["decline_code"] = json!("generic_decline");
            body["error"]["charge"] = json!(charge.id);
            return (status, body);
        }
        (
            StatusCode::OK,
            json!({
                "id": charge.id, "object": "charge", "amount": amount, "amount_refunded": 0,
                "currency": charge.currency, "captured": true, "paid": true, "refunded": false,
                "status": "succeeded", "livemode": false,
                "source": { "id": random_id("card"), "object": "card", "brand": "Visa", "last4": "4242" },
            }),
        )
    })
    .await
}

async fn refunds(State(standin): State<StandIn>, headers: HeaderMap, body: Bytes) -> Response {
    handle(&standin, &headers, "/v1/refunds", &body, |standin, params, _key| {
        let charge_id = params.get("charge").cloned().unwrap_or_default();
        let mut ledger = standin.ledger();
        let Some(charge) = ledger.charges.iter_mut().find(|c| c.id == charge_id && c.status == "succeeded") else {
            let message = format!("No such charge: '{charge_id}'");
            return error(StatusCode::BAD_REQUEST, "invalid_request_error", Some("resource_missing"), &message, Some("charge"));
        };
        if charge.refunded {
            let message = format!("Charge {charge_id} has already been refunded.");
            return error(StatusCode::BAD_REQUEST, "invalid_request_error", Some("charge_already_refunded"), &message, None);
        }
        charge.refunded = true;
        let refund = Refund { id: random_id("re"), charge: charge_id, amount: charge.amount };
        ledger.refunds.push(refund.clone());
        (
            StatusCode::OK,
            json!({ "id": refund.id, "object": "refund", "amount": refund.amount, "charge": refund.charge, "status": "succeeded" }),
        )
    })
    .await
}
