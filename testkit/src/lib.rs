//! The test toolkit: real PostgreSQL, real NATS, services in-process or as processes.
//!
//! - [`database`]: a fresh, empty database per test, dropped afterwards;
//! - [`nats`]: a private JetStream-enabled NATS server per test, which a test can
//!   stop and start again;
//! - [`server`]: a service served in-process on a random local port, and the
//!   responses it gives;
//! - [`process`]: a service binary as a real process, to kill or stop;
//! - [`probe`]: seeing events on the bus, and publishing them as a relay would;
//! - [`wait`]: waiting for a condition, saying what was waited for;
//! - [`bus`]: looking inside a service's consumers;
//! - [`infrastructure`]: where PostgreSQL and NATS come from: the local cluster of
//!   `scripts/stack.sh` and `nats-server` processes, or (with the `testcontainers`
//!   feature and `TEST_INFRA=containers`) containers.
//!
//! Crates use it as a dev-dependency only (and `e2e`, whose library is test support).
#![allow(clippy::unwrap_used, clippy::expect_used)] // test support: failing loudly is the point

pub mod bus;
pub mod database;
pub mod infrastructure;
pub mod nats;
pub mod otlp;
pub mod probe;
pub mod process;
pub mod server;
pub mod wait;

#[cfg(feature = "testcontainers")]
pub mod containers;

use std::path::{Path, PathBuf};
use std::time::Duration;

use uuid::Uuid;

pub use database::TestDatabase;
pub use nats::{TestNats, TestNatsCluster, Users, test_password};
pub use probe::{EventProbe, Observed, publish_all, publish_raw};
pub use process::{ServiceProcess, run_command};
pub use server::{TestResponse, TestServer};
pub use wait::{WAIT, wait_until};

use common::Secret;
use common::session::{SessionKeys, encode_cookie};

/// The JWT key every test service is started with.
pub const JWT_KEY: &str = kit::config::TEST_JWT_KEY;

/// The repository root (where `.stack/` lives).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// An HTTP client for tests (30 s timeout). Use it rather than `reqwest::Client::new()`:
/// reqwest is built without a default TLS provider (see [`kit::install_tls_provider`]).
pub fn http_client() -> reqwest::Client {
    kit::install_tls_provider();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// A `Cookie` header value carrying a session for this user, signed with [`JWT_KEY`].
pub fn session_cookie(id: Uuid, email: &str) -> String {
    let keys = SessionKeys::new(&Secret::new(JWT_KEY), Duration::from_secs(3600), false);
    let (token, _) = keys.issue(id, email).unwrap();
    format!("session={}", encode_cookie(&token))
}

/// A session cookie for a new random user; returns the header value and the user id.
pub fn new_user_cookie() -> (String, Uuid) {
    let id = Uuid::new_v4();
    (session_cookie(id, &format!("{}@test.io", id.simple())), id)
}

/// The `id` of a JSON resource, as a UUID.
pub fn id_of(resource: &serde_json::Value) -> Uuid {
    let id = resource["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no id in {resource}"));
    Uuid::parse_str(id).unwrap()
}

/// The `name=value` part of a response's `Set-Cookie`, ready to send back.
pub fn cookie_of(headers: &reqwest::header::HeaderMap) -> String {
    let header = headers["set-cookie"].to_str().unwrap();
    header.split(';').next().unwrap().to_owned()
}
