//! Test support: real PostgreSQL, real NATS, services in-process.
//!
//! - [`TestDatabase`]: a fresh, empty database per test on the local PostgreSQL
//!   cluster that `make test` starts (`TEST_DATABASE_URL`), dropped afterwards;
//! - [`TestNats`]: a private JetStream-enabled `nats-server` per test, on its own
//!   port and store, which a test can stop and start again;
//! - [`TestServer`]: a service's `run` function serving on a random local port;
//! - [`EventProbe`] and [`eventually`]: waiting for an event or for a condition;
//! - [`session_cookie`]: a `Cookie` header for a user, signed with the test key.
//!
//! With the `testcontainers` feature, PostgreSQL and NATS run in containers instead
//! (for machines with a Docker engine; see [`containers`]).
#![allow(clippy::unwrap_used, clippy::expect_used)] // test support: failing loudly is the point

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sqlx::{Connection, PgConnection};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::config::Secret;
use crate::events::{Event, Subject};
use crate::session::{SessionKeys, encode_cookie};

/// The JWT key every test service is started with.
pub const JWT_KEY: &str = "test-jwt-key";

/// Where the local cluster of `make test` listens, unless `TEST_DATABASE_URL` says otherwise.
const DEFAULT_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:55432/postgres";

/// The repository root (where `.stack/` lives).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// `TEST_DATABASE_URL` if set; else a PostgreSQL container (with the `testcontainers`
/// feature) or the local cluster of `scripts/stack.sh`.
async fn admin_url() -> String {
    if let Ok(url) = std::env::var("TEST_DATABASE_URL") {
        return url;
    }
    #[cfg(feature = "testcontainers")]
    return containers::postgres_admin_url().await;
    #[allow(unreachable_code)]
    DEFAULT_ADMIN_URL.to_owned()
}

fn with_database(url: &str, database: &str) -> String {
    let (server, _) = url.rsplit_once('/').unwrap();
    format!("{server}/{database}")
}

/// A fresh, empty database, dropped when this value is.
pub struct TestDatabase {
    pub url: String,
    admin_url: String,
    name: String,
}

impl TestDatabase {
    pub async fn create() -> Self {
        let admin_url = admin_url().await;
        let name = format!("t_{}", Uuid::new_v4().simple());
        let mut admin = connect_admin(&admin_url).await;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await
            .unwrap();
        Self {
            url: with_database(&admin_url, &name),
            admin_url,
            name,
        }
    }
}

async fn connect_admin(url: &str) -> PgConnection {
    let mut attempts = 0;
    loop {
        match PgConnection::connect(url).await {
            Ok(connection) => return connection,
            Err(error) if attempts < 30 => {
                attempts += 1;
                if attempts == 1 {
                    eprintln!(
                        "waiting for PostgreSQL at {url}: {error} (start it with `make test` or scripts/stack.sh start-postgres)"
                    );
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(error) => panic!("PostgreSQL at {url} is not reachable: {error}"),
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        // Drop runs outside async context; use a private runtime on a plain thread.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let mut admin = PgConnection::connect(&admin_url).await?;
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                )))
                .execute(&mut admin)
                .await
                .map(drop)
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("could not drop test database {}", self.name);
        }
    }
}

/// A private NATS server with JetStream for one test.
pub struct TestNats {
    pub url: String,
    port: u16,
    dir: PathBuf,
    process: Option<std::process::Child>,
    #[cfg(feature = "testcontainers")]
    container: Option<containers::Nats>,
}

impl TestNats {
    pub async fn start() -> Self {
        let dir = std::env::temp_dir().join(format!("ticketing-nats-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut nats = Self {
            url: String::new(),
            port: 0,
            dir,
            process: None,
            #[cfg(feature = "testcontainers")]
            container: None,
        };
        nats.launch().await;
        nats
    }

    /// Stops the server (its stored messages are kept for [`TestNats::restart`]).
    pub async fn stop(&mut self) {
        #[cfg(feature = "testcontainers")]
        if let Some(container) = &self.container {
            container.stop().await;
            return;
        }
        if let Some(mut process) = self.process.take() {
            let _ = process.kill();
            let _ = process.wait();
        }
    }

    /// Starts the server again on the same port and store.
    pub async fn restart(&mut self) {
        self.stop().await;
        self.launch().await;
    }

    async fn launch(&mut self) {
        #[cfg(feature = "testcontainers")]
        {
            match &self.container {
                Some(container) => container.resume().await,
                None => {
                    let container = containers::Nats::start().await;
                    self.port = container.port;
                    self.container = Some(container);
                }
            }
            self.url = format!("nats://127.0.0.1:{}", self.port);
            return;
        }
        #[allow(unreachable_code)]
        {
            let listen = if self.port == 0 {
                "127.0.0.1:-1".to_owned()
            } else {
                format!("127.0.0.1:{}", self.port)
            };
            let config = self.dir.join("nats.conf");
            let ports_dir = self.dir.join("ports");
            let _ = std::fs::remove_dir_all(&ports_dir);
            std::fs::create_dir_all(&ports_dir).unwrap();
            std::fs::write(
                &config,
                format!(
                    "listen: {listen}\nports_file_dir: \"{ports}\"\nlog_file: \"{log}\"\n\
                     jetstream {{ store_dir: \"{store}\", sync_interval: always }}\n",
                    ports = ports_dir.display(),
                    log = self.dir.join("nats.log").display(),
                    store = self.dir.join("jetstream").display(),
                ),
            )
            .unwrap();
            let process = std::process::Command::new(nats_server_binary())
                .arg("-c")
                .arg(&config)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap_or_else(|e| {
                    panic!("cannot start nats-server ({e}); run `make test` or scripts/stack.sh install")
                });
            self.process = Some(process);
            self.port = wait_for_ports_file(&ports_dir).await;
            self.url = format!("nats://127.0.0.1:{}", self.port);
        }
    }
}

/// `NATS_SERVER_BIN`, else the one `scripts/stack.sh install` put in `.stack/bin`, else `PATH`.
pub fn nats_server_binary() -> PathBuf {
    if let Ok(path) = std::env::var("NATS_SERVER_BIN") {
        return path.into();
    }
    let local = workspace_root().join(".stack/bin/nats-server");
    if local.exists() {
        local
    } else {
        "nats-server".into()
    }
}

async fn wait_for_ports_file(dir: &Path) -> u16 {
    let read_port = || -> Option<u16> {
        let entry = std::fs::read_dir(dir).ok()?.flatten().next()?;
        let ports: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(entry.path()).ok()?).ok()?;
        ports["nats"][0].as_str()?.rsplit(':').next()?.parse().ok()
    };
    for _ in 0..200 {
        if let Some(port) = read_port() {
            return port;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!(
        "nats-server did not start (see its log in {})",
        dir.display()
    );
}

impl Drop for TestNats {
    fn drop(&mut self) {
        if let Some(mut process) = self.process.take() {
            let _ = process.kill();
            let _ = process.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A service running in this process on a random local port.
pub struct TestServer {
    pub address: SocketAddr,
    pub client: reqwest::Client,
    shutdown: CancellationToken,
    handle: Option<JoinHandle<anyhow::Result<()>>>,
}

impl TestServer {
    /// Starts `run(listener, shutdown)` (a service's `run` with its configuration bound).
    pub async fn start<F, Fut>(run: F) -> Self
    where
        F: FnOnce(TcpListener, CancellationToken) -> Fut,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        crate::telemetry::init();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let handle = tokio::spawn(run(listener, shutdown.clone()));
        Self {
            address,
            client: http_client(),
            shutdown,
            handle: Some(handle),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    /// Waits until `/readyz` answers 200 (migrations done, NATS connected).
    pub async fn ready(&self) {
        let ready = eventually(Duration::from_secs(30), || async {
            matches!(self.client.get(self.url("/readyz")).send().await, Ok(r) if r.status() == 200)
        })
        .await;
        assert!(ready, "{} never became ready", self.address);
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
    async fn read(response: reqwest::Response) -> Self {
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

/// A service binary running as a real process, for tests that kill it (SIGKILL) or
/// stop it (SIGTERM). Its output goes to a log file that [`ServiceProcess::logs`] reads.
pub struct ServiceProcess {
    binary: PathBuf,
    env: Vec<(String, String)>,
    pub port: u16,
    log: PathBuf,
    child: Option<std::process::Child>,
}

impl ServiceProcess {
    /// Starts `binary` on a free port with only `env` (and `PORT`) in its environment.
    pub fn start(binary: &str, env: &[(&str, &str)]) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log =
            std::env::temp_dir().join(format!("ticketing-process-{}.log", Uuid::new_v4().simple()));
        let env = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let mut process = Self {
            binary: binary.into(),
            env,
            port,
            log,
            child: None,
        };
        process.restart();
        process
    }

    /// Starts it again (after [`Self::kill`]) on the same port with the same settings.
    pub fn restart(&mut self) {
        self.kill();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = std::process::Command::new(&self.binary)
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env("PORT", self.port.to_string())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Waits until `/readyz` answers 200.
    pub async fn ready(&self) {
        let client = http_client();
        let ready = eventually(Duration::from_secs(30), || async {
            client
                .get(self.url("/readyz"))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200)
        })
        .await;
        assert!(
            ready,
            "{} never became ready; its log:\n{}",
            self.binary.display(),
            self.logs()
        );
    }

    /// SIGKILL: no chance to clean up.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then waits for it to exit; returns its exit code.
    pub async fn terminate(&mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        std::process::Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        tokio::task::spawn_blocking(move || child.wait().unwrap().code())
            .await
            .unwrap()
    }

    /// Everything it has written so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// An HTTP client for tests (30 s timeout). Use it rather than `reqwest::Client::new()`:
/// reqwest is built without a default TLS provider (see [`crate::install_tls_provider`]).
pub fn http_client() -> reqwest::Client {
    crate::install_tls_provider();
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

/// Polls `condition` every 20 ms until it holds (true) or `timeout` passes (false).
pub async fn eventually<F, Fut>(timeout: Duration, mut condition: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if condition().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sees the events published on one subject from the moment it subscribes.
///
/// It is a plain NATS subscription, so it sees every publish, including a copy that
/// JetStream discarded as a duplicate (a relay that published, then died before
/// recording it, publishes again).
pub struct EventProbe {
    subscriber: async_nats::Subscriber,
}

/// One observed event: its `Nats-Msg-Id` and payload.
#[derive(Debug, Clone)]
pub struct Observed<E> {
    pub id: String,
    pub event: E,
}

impl EventProbe {
    pub async fn subscribe(nats_url: &str, subject: Subject) -> Self {
        let client = async_nats::connect(nats_url).await.unwrap();
        let subscriber = client.subscribe(subject.as_str()).await.unwrap();
        client.flush().await.unwrap();
        Self { subscriber }
    }

    /// The next event, or `None` if none comes within `timeout`.
    pub async fn next<E: Event>(&mut self, timeout: Duration) -> Option<Observed<E>> {
        use futures::StreamExt;
        let message = tokio::time::timeout(timeout, self.subscriber.next())
            .await
            .ok()??;
        let id = message
            .headers
            .as_ref()
            .and_then(|h| h.get(async_nats::header::NATS_MESSAGE_ID))
            .map(|v| v.as_str().to_owned())
            .unwrap_or_default();
        let event = serde_json::from_slice(&message.payload)
            .unwrap_or_else(|e| panic!("bad {} payload: {e}", E::SUBJECT));
        Some(Observed { id, event })
    }

    /// The first event matching `predicate` within `timeout`; panics if none does.
    pub async fn wait_for<E: Event>(
        &mut self,
        timeout: Duration,
        predicate: impl Fn(&E) -> bool,
    ) -> Observed<E> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next::<E>(left).await {
                Some(observed) if predicate(&observed.event) => return observed,
                Some(_) => {}
                None => panic!("no matching {} event within {timeout:?}", E::SUBJECT),
            }
        }
    }

    /// Asserts that no event arrives within `window`.
    pub async fn assert_quiet<E: Event + std::fmt::Debug>(&mut self, window: Duration) {
        if let Some(observed) = self.next::<E>(window).await {
            panic!("unexpected {} event: {:?}", E::SUBJECT, observed.event);
        }
    }
}

/// Publishes a raw event straight to JetStream with the given `Nats-Msg-Id`, as a
/// publisher's relay would (for tests that need exact control over delivery).
pub async fn publish_raw<E: Event>(nats_url: &str, id: &str, event: &E) {
    let client = async_nats::connect(nats_url).await.unwrap();
    let jetstream = async_nats::jetstream::new(client);
    crate::events::stream::ensure_stream(&jetstream)
        .await
        .unwrap();
    let payload = serde_json::to_vec(event).unwrap();
    let publish = async_nats::jetstream::message::PublishMessage::build()
        .payload(payload.into())
        .message_id(id);
    jetstream
        .send_publish(E::SUBJECT.as_str(), publish)
        .await
        .unwrap()
        .await
        .unwrap();
}

#[cfg(feature = "testcontainers")]
pub mod containers {
    //! PostgreSQL and NATS in containers, for machines with a Docker engine:
    //! `cargo nextest run --features common/testcontainers`.

    use testcontainers::core::{ContainerPort, WaitFor};
    use testcontainers::runners::AsyncRunner;
    use testcontainers::{ContainerAsync, GenericImage, ImageExt};
    use tokio::sync::OnceCell;

    static POSTGRES: OnceCell<(ContainerAsync<GenericImage>, String)> = OnceCell::const_new();

    /// One PostgreSQL container per test process; tests create databases in it.
    pub async fn postgres_admin_url() -> String {
        let (_, url) = POSTGRES
            .get_or_init(|| async {
                let container = GenericImage::new("postgres", "16-alpine")
                    .with_exposed_port(ContainerPort::Tcp(5432))
                    .with_wait_for(WaitFor::message_on_stderr(
                        "database system is ready to accept connections",
                    ))
                    .with_env_var("POSTGRES_HOST_AUTH_METHOD", "trust")
                    .start()
                    .await
                    .expect("starting a PostgreSQL container");
                let port = container
                    .get_host_port_ipv4(5432)
                    .await
                    .expect("PostgreSQL port");
                (
                    container,
                    format!("postgres://postgres@127.0.0.1:{port}/postgres"),
                )
            })
            .await;
        url.clone()
    }

    /// A NATS container with JetStream, published on a fixed host port so that it
    /// keeps its address across a stop and start.
    pub struct Nats {
        container: ContainerAsync<GenericImage>,
        pub port: u16,
    }

    impl Nats {
        pub async fn start() -> Self {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map(|a| a.port())
                .expect("a free port");
            let container = GenericImage::new("nats", "2-alpine")
                .with_wait_for(WaitFor::message_on_stderr("Server is ready"))
                .with_mapped_port(port, ContainerPort::Tcp(4222))
                .with_cmd(["-js", "-sd", "/data"])
                .start()
                .await
                .expect("starting a NATS container");
            Self { container, port }
        }

        pub async fn stop(&self) {
            self.container.stop().await.expect("stopping NATS");
        }

        pub async fn resume(&self) {
            self.container.start().await.expect("starting NATS again");
        }
    }
}
