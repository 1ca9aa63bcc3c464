//! A service served in-process on a random local port, and its responses.

use std::future::Future;
use std::net::SocketAddr;

use kit::Service;
use kit::service::Listeners;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{http_client, wait_until};

/// A service running in this process on random local ports: its API and its
/// operational endpoints.
pub struct TestServer {
    pub address: SocketAddr,
    /// Where `/healthz`, `/readyz` and `/metrics` answer.
    pub ops_address: SocketAddr,
    pub client: reqwest::Client,
    shutdown: CancellationToken,
    handle: Option<JoinHandle<anyhow::Result<()>>>,
}

impl TestServer {
    /// Serves `service` (its configuration) as its binary would, without waiting for
    /// it to be ready (see [`TestServer::ready`]).
    pub async fn serve<S: Service>(service: S) -> Self {
        kit::telemetry::install();
        let listeners = Listeners {
            api: local_listener().await,
            ops: local_listener().await,
        };
        let ops_address = listeners.ops.local_addr().unwrap();
        let mut server = Self::spawn(listeners.api, move |api, shutdown| {
            kit::serve(service, Listeners { api, ..listeners }, shutdown)
        });
        server.ops_address = ops_address;
        server
    }

    /// Serves what `run(listener, shutdown)` serves (a stand-in, a hand-made server):
    /// one port, whose operational endpoints, if any, are on it too.
    pub async fn start<F, Fut>(run: F) -> Self
    where
        F: FnOnce(TcpListener, CancellationToken) -> Fut,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        kit::telemetry::install();
        Self::spawn(local_listener().await, run)
    }

    fn spawn<F, Fut>(listener: TcpListener, run: F) -> Self
    where
        F: FnOnce(TcpListener, CancellationToken) -> Fut,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let address = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let handle = tokio::spawn(run(listener, shutdown.clone()));
        Self {
            address,
            ops_address: address,
            client: http_client(),
            shutdown,
            handle: Some(handle),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    /// A URL on the ops port.
    pub fn ops_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.ops_address)
    }

    /// `GET path` on the ops port (`/healthz`, `/readyz`, `/metrics`).
    pub async fn ops(&self, path: &str) -> TestResponse {
        TestResponse::read(self.client.get(self.ops_url(path)).send().await.unwrap()).await
    }

    /// The metrics, as text.
    pub async fn metrics(&self) -> String {
        match self.ops("/metrics").await.expect(200) {
            serde_json::Value::String(text) => text,
            other => panic!("metrics are not text: {other}"),
        }
    }

    /// Waits until `/readyz` answers 200 (connected and migrated).
    pub async fn ready(&self) {
        let what = format!("{} to be ready", self.address);
        wait_until(&what, || async {
            matches!(self.client.get(self.ops_url("/readyz")).send().await, Ok(r) if r.status() == 200)
        })
        .await;
    }

    /// Sends a request with an optional session cookie and JSON body.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        cookie: Option<&str>,
        body: Option<&serde_json::Value>,
    ) -> TestResponse {
        let mut request = self.client.request(method, self.url(path));
        if let Some(cookie) = cookie {
            request = request.header("cookie", cookie);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        TestResponse::read(request.send().await.unwrap()).await
    }

    pub async fn get(&self, path: &str, cookie: Option<&str>) -> TestResponse {
        self.call(reqwest::Method::GET, path, cookie, None).await
    }

    pub async fn post(
        &self,
        path: &str,
        cookie: Option<&str>,
        body: serde_json::Value,
    ) -> TestResponse {
        self.call(reqwest::Method::POST, path, cookie, Some(&body))
            .await
    }

    pub async fn put(
        &self,
        path: &str,
        cookie: Option<&str>,
        body: serde_json::Value,
    ) -> TestResponse {
        self.call(reqwest::Method::PUT, path, cookie, Some(&body))
            .await
    }

    pub async fn delete(&self, path: &str, cookie: Option<&str>) -> TestResponse {
        self.call(reqwest::Method::DELETE, path, cookie, None).await
    }

    /// Stops gracefully and returns what `run` returned.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.handle.take().unwrap().await?
    }
}

async fn local_listener() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").await.unwrap()
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A response read whole: status, headers and the JSON body (`null` when empty, a
/// string when not JSON).
#[derive(Debug)]
pub struct TestResponse {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: serde_json::Value,
}

impl TestResponse {
    pub async fn read(response: reqwest::Response) -> Self {
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.unwrap();
        // Non-JSON bodies (health checks, metrics) are kept as a JSON string.
        let body = if bytes.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|_| {
                serde_json::Value::String(String::from_utf8_lossy(&bytes).into_owned())
            })
        };
        Self {
            status,
            headers,
            body,
        }
    }

    /// Asserts the status and returns the body.
    #[track_caller]
    pub fn expect(self, status: u16) -> serde_json::Value {
        assert_eq!(
            self.status, status,
            "unexpected status; body: {}",
            self.body
        );
        self.body
    }

    /// Asserts an error status and returns the entries of its error body.
    #[track_caller]
    pub fn errors(self, status: u16) -> Vec<serde_json::Value> {
        let body = self.expect(status);
        body["errors"]
            .as_array()
            .unwrap_or_else(|| panic!("not an error body: {body}"))
            .clone()
    }

    /// Asserts an error with exactly one message (and no field).
    #[track_caller]
    pub fn assert_error(self, status: u16, message: &str) {
        assert_eq!(
            self.errors(status),
            vec![serde_json::json!({ "message": message })]
        );
    }
}
