//! A fresh, empty database per test.

use std::time::Duration;

use kit::retry::Patience;
use sqlx::migrate::MigrateDatabase;
use sqlx::{Connection, PgConnection, Postgres};
use uuid::Uuid;

use super::infrastructure::Infrastructure;

/// Where the local cluster of `make test` listens, unless `TEST_DATABASE_URL` says otherwise.
const LOCAL_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:55432/postgres";

/// A fresh, empty database, dropped when this value is.
pub struct TestDatabase {
    pub url: String,
    name: String,
}

impl TestDatabase {
    pub async fn create() -> Self {
        let admin_url = admin_url().await;
        let name = format!("t_{}", Uuid::new_v4().simple());
        let (server, _) = admin_url.rsplit_once('/').unwrap();
        let url = format!("{server}/{name}");
        wait_for(&admin_url).await;
        Postgres::create_database(&url).await.unwrap();
        Self { url, name }
    }

    /// A pool on this database for the test's own queries.
    pub async fn pool(&self) -> sqlx::PgPool {
        sqlx::PgPool::connect(&self.url).await.unwrap()
    }
}

/// `TEST_DATABASE_URL` if set, else the chosen infrastructure's server.
async fn admin_url() -> String {
    if let Ok(url) = std::env::var("TEST_DATABASE_URL") {
        return url;
    }
    match Infrastructure::current() {
        Infrastructure::Local => LOCAL_ADMIN_URL.to_owned(),
        #[cfg(feature = "testcontainers")]
        Infrastructure::Containers => super::containers::postgres_admin_url().await,
    }
}

/// Waits until the server at `url` accepts connections.
async fn wait_for(url: &str) {
    let patience = Patience {
        attempts: 30,
        pause: Duration::from_millis(500),
    };
    match patience
        .connect(&format!("PostgreSQL at {url}"), || {
            PgConnection::connect(url)
        })
        .await
    {
        Ok(connection) => drop(connection.close().await),
        Err(error) => {
            panic!("{error:#} (start it with `make test` or scripts/stack.sh start-postgres)")
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let url = self.url.clone();
        // Drop runs outside async context; use a private runtime on a plain thread.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(Postgres::force_drop_database(&url))
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("could not drop test database {}", self.name);
        }
    }
}
