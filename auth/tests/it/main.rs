//! Auth against a real PostgreSQL, served in-process on a random port.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: failing loudly is the point

mod config;
mod current_user;
mod errors;
mod limits;
mod memory;
mod signin;
mod signout;
mod signup;

use serde_json::{Value, json};
use testkit::{TestDatabase, TestNats, TestResponse, TestServer};

/// A running auth service with its own fresh database.
pub struct Auth {
    pub server: TestServer,
    pub database: TestDatabase,
    pub nats: TestNats,
}

impl Auth {
    pub async fn start() -> Self {
        let database = TestDatabase::create().await;
        let nats = TestNats::start().await;
        let config = auth::Config::for_tests(&database.url, &nats.url);
        let server = TestServer::serve(config).await;
        Self {
            server,
            database,
            nats,
        }
    }

    pub async fn post(&self, path: &str, body: Value) -> TestResponse {
        self.server.post(path, None, body).await
    }

    pub async fn signup(&self, email: &str, password: &str) -> TestResponse {
        self.post(
            "/api/users/signup",
            json!({ "email": email, "password": password }),
        )
        .await
    }

    pub async fn signin(&self, email: &str, password: &str) -> TestResponse {
        self.post(
            "/api/users/signin",
            json!({ "email": email, "password": password }),
        )
        .await
    }

    pub async fn current_user(&self, cookie: Option<&str>) -> Value {
        self.server
            .get("/api/users/currentuser", cookie)
            .await
            .expect(200)
    }
}
