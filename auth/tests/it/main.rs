//! Auth against a real PostgreSQL, served in-process on a random port.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: failing loudly is the point

mod config;
mod current_user;
mod errors;
mod signin;
mod signout;
mod signup;

use common::testing::{JWT_KEY, TestDatabase, TestServer};
use reqwest::Response;
use serde_json::{Value, json};

/// A running auth service with its own fresh database.
pub struct Auth {
    pub server: TestServer,
    _database: TestDatabase,
}

impl Auth {
    pub async fn start() -> Self {
        let database = TestDatabase::create().await;
        let config = auth::Config {
            http: common::config::HttpConfig::new(&database.url),
            jwt_key: common::config::Secret::new(JWT_KEY),
            session_ttl: std::time::Duration::from_secs(3600),
            cookie_secure: false,
        };
        let server =
            TestServer::start(move |listener, shutdown| auth::run(config, listener, shutdown))
                .await;
        Self {
            server,
            _database: database,
        }
    }

    pub async fn post(&self, path: &str, body: Value) -> Response {
        self.server
            .client
            .post(self.server.url(path))
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    pub async fn signup(&self, email: &str, password: &str) -> Response {
        self.post(
            "/api/users/signup",
            json!({ "email": email, "password": password }),
        )
        .await
    }

    pub async fn signin(&self, email: &str, password: &str) -> Response {
        self.post(
            "/api/users/signin",
            json!({ "email": email, "password": password }),
        )
        .await
    }

    pub async fn current_user(&self, cookie: Option<&str>) -> Value {
        let mut request = self
            .server
            .client
            .get(self.server.url("/api/users/currentuser"));
        if let Some(cookie) = cookie {
            request = request.header("cookie", cookie);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 200);
        response.json().await.unwrap()
    }
}

/// The `name=value` part of the response's `Set-Cookie`, ready to send back.
pub fn cookie_of(response: &Response) -> String {
    let header = response.headers()["set-cookie"].to_str().unwrap();
    header.split(';').next().unwrap().to_owned()
}

/// The error body, asserting its status.
pub async fn errors(response: Response, status: u16) -> Vec<Value> {
    assert_eq!(response.status(), status);
    let body: Value = response.json().await.unwrap();
    body["errors"].as_array().unwrap().clone()
}
