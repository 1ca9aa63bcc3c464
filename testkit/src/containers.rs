//! PostgreSQL and NATS in containers, for machines with a Docker engine:
//! `TEST_INFRA=containers cargo nextest run --features common/testcontainers`.

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

    pub async fn freeze(&self) {
        self.container.pause().await.expect("pausing NATS");
    }

    pub async fn thaw(&self) {
        self.container.unpause().await.expect("unpausing NATS");
    }
}
