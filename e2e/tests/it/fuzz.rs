//! Every write route's fields given arbitrary bytes and Unicode: no answer is a 5xx
//! (a NUL byte in a title or a token once answered 500, PostgreSQL refusing it).
//!
//! The inputs come from a fixed seed, so a failure names an input that reproduces it.

use e2e::{Options, Stack};
use reqwest::Method;
use serde_json::{Value, json};
use testkit::TestServer;

/// A small deterministic generator (xorshift64*): reproducible, no dependency.
struct Inputs(u64);

impl Inputs {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// One character from a mix of the cases that break things: ASCII, controls,
    /// NUL, direction overrides, combining marks, the BMP, the astral planes.
    fn char(&mut self) -> char {
        let pick = match self.below(8) {
            0 => self.below(0x20) as u32,
            1 => 0,
            2 => [0x202A, 0x202B, 0x202C, 0x202D, 0x202E, 0x2066, 0x2069][self.below(7) as usize],
            3 => 0x300 + self.below(0x70) as u32,
            4 => 0x20 + self.below(0x5F) as u32,
            5 => self.below(0xD800) as u32,
            6 => 0xE000 + self.below(0x2000) as u32,
            _ => 0x1_0000 + self.below(0x10_0000) as u32,
        };
        char::from_u32(pick).unwrap_or('\u{FFFD}')
    }

    fn text(&mut self) -> String {
        let length = match self.below(10) {
            0 => 15_000,
            1 => 0,
            _ => self.below(40),
        };
        (0..length).map(|_| self.char()).collect()
    }

    /// A JSON value of any shape, strings most often.
    fn value(&mut self) -> Value {
        match self.below(10) {
            0 => Value::Null,
            1 => json!(self.below(2) == 0),
            2 => json!((self.next() as i64) as f64 / 1e6),
            3 => json!([self.text(), self.below(100)]),
            4 => json!({ "nested": self.text() }),
            5 => json!(format!(
                "{}.{}",
                self.below(1_000_000_000),
                self.below(1000)
            )),
            _ => json!(self.text()),
        }
    }

    /// Raw bytes for a body: invalid UTF-8, truncated JSON, anything.
    fn bytes(&mut self) -> Vec<u8> {
        let length = self.below(300);
        (0..length).map(|_| self.next() as u8).collect()
    }
}

/// The write routes and their fields: (server, method, path, fields).
type Route<'a> = (&'a TestServer, Method, String, &'static [&'static str]);

/// Sends `body`; a description of the exchange if the answer was a 5xx.
async fn server_error(
    server: &TestServer,
    method: Method,
    path: &str,
    cookie: &str,
    body: Vec<u8>,
) -> Option<String> {
    let response = server
        .client
        .request(method.clone(), server.url(path))
        .header("cookie", cookie)
        .header("content-type", "application/json")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let answer = response.text().await.unwrap_or_default();
    let sent: String = String::from_utf8_lossy(&body).chars().take(200).collect();
    (status >= 500).then(|| format!("{method} {path} answered {status} {answer} to {sent:?}"))
}

#[tokio::test]
async fn arbitrary_input_to_every_write_route_never_gets_a_5xx() {
    let stack = Stack::start(Options::default()).await;
    let seller = stack.sign_up("fuzz-seller@test.com").await;
    let buyer = stack.sign_up("fuzz-buyer@test.com").await;
    let ticket = stack.create_ticket(&seller, "Concert", json!(20)).await;
    let ticket_path = format!("/api/tickets/{}", ticket["id"].as_str().unwrap());
    let routes: Vec<(Route, &str)> = vec![
        (
            (
                &stack.auth.server,
                Method::POST,
                "/api/users/signup".into(),
                &["email", "password"],
            ),
            "",
        ),
        (
            (
                &stack.auth.server,
                Method::POST,
                "/api/users/signin".into(),
                &["email", "password"],
            ),
            "",
        ),
        (
            (
                &stack.tickets.server,
                Method::POST,
                "/api/tickets".into(),
                &["title", "price"],
            ),
            &seller,
        ),
        (
            (
                &stack.tickets.server,
                Method::PUT,
                ticket_path,
                &["title", "price"],
            ),
            &seller,
        ),
        (
            (
                &stack.orders.server,
                Method::POST,
                "/api/orders".into(),
                &["ticketId"],
            ),
            &buyer,
        ),
        (
            (
                &stack.payments.server,
                Method::POST,
                "/api/payments".into(),
                &["token", "orderId"],
            ),
            &buyer,
        ),
    ];
    let mut inputs = Inputs(0x5EED_1234_ABCD_0001);
    let mut server_errors = Vec::new();
    for ((server, method, path, fields), cookie) in &routes {
        for round in 0..150 {
            let body = if round % 5 == 0 {
                inputs.bytes()
            } else {
                let mut object = serde_json::Map::new();
                for field in *fields {
                    if inputs.below(6) != 0 {
                        object.insert((*field).to_owned(), inputs.value());
                    }
                }
                serde_json::to_vec(&Value::Object(object)).unwrap()
            };
            server_errors.extend(server_error(server, method.clone(), path, cookie, body).await);
        }
    }
    // A real order, so that fuzzed tokens reach the payment itself.
    stack.wait_for_replica_version(&ticket["id"], 0).await;
    let order = stack.order(&buyer, &ticket["id"]).await.expect(201);
    for _ in 0..150 {
        let body = json!({"token": inputs.value(), "orderId": order["id"]});
        let body = serde_json::to_vec(&body).unwrap();
        server_errors.extend(
            server_error(
                &stack.payments.server,
                Method::POST,
                "/api/payments",
                &buyer,
                body,
            )
            .await,
        );
    }
    assert!(server_errors.is_empty(), "{server_errors:#?}");
}
