//! A whole service built with the kit against a real PostgreSQL: health, readiness,
//! supervision of background work.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use axum::Router;
use axum::routing::get;
use kit::config::{ConfigError, Env, HttpConfig};
use kit::db::{DatabaseConfig, Pools};
use kit::{App, Service};
use testkit::{TestDatabase, TestServer, wait_until};

/// A service with a database, and optionally a background task that always panics.
struct Plain {
    http: HttpConfig,
    database: DatabaseConfig,
    /// Counts the runs of the panicking task, if it has one.
    poisoned: Option<Arc<AtomicU32>>,
}

impl Plain {
    fn new(database: &TestDatabase) -> Self {
        Self {
            http: HttpConfig::for_tests(),
            database: DatabaseConfig::for_tests(&database.url),
            poisoned: None,
        }
    }
}

impl Service for Plain {
    const NAME: &'static str = "plain";

    fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            http: HttpConfig::from_env(env)?,
            database: DatabaseConfig::from_env(env)?,
            poisoned: None,
        })
    }

    fn http(&self) -> &HttpConfig {
        &self.http
    }

    async fn start(self) -> anyhow::Result<App> {
        let pools = Pools::connect(&self.database).await?;
        let api = Router::new().route("/api/fine", get(|| async { "fine" }));
        let app = App::new(api).with_part(pools);
        Ok(match self.poisoned {
            None => app,
            Some(runs) => app.with_task("poisoned", move |_stop| {
                runs.fetch_add(1, Ordering::SeqCst);
                async { panic!("injected: the worker cannot run") }
            }),
        })
    }
}

#[tokio::test]
async fn a_crash_looping_worker_is_restarted_counted_and_fails_healthz() {
    let database = TestDatabase::create().await;
    let runs = Arc::new(AtomicU32::new(0));
    let service = Plain {
        poisoned: Some(Arc::clone(&runs)),
        ..Plain::new(&database)
    };
    let server = TestServer::serve(service).await;
    server.ready().await;

    // Restarted after 1 s and 2 s: the third failure in a row is a crash loop.
    wait_until("/healthz to report the crash loop", || async {
        server.ops("/healthz").await.status == 503
    })
    .await;
    assert!(runs.load(Ordering::SeqCst) >= 3);
    let health = server.ops("/healthz").await;
    assert_eq!(
        health.body, "failing background workers: poisoned",
        "it names the worker"
    );
    let metrics = server.ops("/metrics").await.body;
    let metrics = metrics.as_str().unwrap();
    assert!(
        metrics.contains(r#"worker_restarts_total{worker="poisoned"}"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"worker_up{worker="poisoned"} 0"#),
        "{metrics}"
    );
    // The process itself keeps serving.
    assert_eq!(server.get("/api/fine", None).await.status, 200);
    assert_eq!(server.ops("/readyz").await.status, 200);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn readiness_follows_the_database_only() {
    let database = TestDatabase::create().await;
    let server = TestServer::serve(Plain::new(&database)).await;
    server.ready().await;
    assert_eq!(server.ops("/healthz").await.status, 200);
    drop(database); // dropped WITH (FORCE): its connections are cut
    wait_until("/readyz to fail without its database", || async {
        server.ops("/readyz").await.status == 503
    })
    .await;
    assert_eq!(
        server.ops("/healthz").await.status,
        200,
        "alive all the same"
    );
}

/// A pooled connection is not pinged when it was just used, but one that sat idle is:
/// a connection the server closed meanwhile is replaced, never handed to a request.
#[tokio::test]
async fn a_connection_closed_while_idle_is_replaced_before_use() {
    let database = TestDatabase::create().await;
    let mut db = DatabaseConfig::for_tests(&database.url);
    db.http_connections = 1;
    let pools = Pools::connect(&db).await.unwrap();
    let backend = || async {
        sqlx::query_scalar::<_, i32>("SELECT pg_backend_pid()")
            .fetch_one(&pools.http)
            .await
    };
    let first = backend().await.unwrap();
    assert_eq!(
        backend().await.unwrap(),
        first,
        "the one connection is reused"
    );

    let admin = database.pool().await;
    let terminated: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
        .bind(first)
        .fetch_one(&admin)
        .await
        .unwrap();
    assert!(terminated);
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;

    let replaced = backend()
        .await
        .expect("the dead connection is found out before it is used");
    assert_ne!(replaced, first);
}

/// A connection returned to the pool goes straight back to its idle queue: no ping, no
/// task spawned for it (sqlx's default pings each one in a task of its own, a second
/// round trip per checkout). On this single-threaded runtime such a task could not
/// have run yet when the query's `.await` returns.
#[tokio::test]
async fn a_returned_connection_is_idle_again_without_a_round_trip() {
    let database = TestDatabase::create().await;
    // The vendored sqlx-core's option, which the kit leaves on (kit::db::pool_options).
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .test_on_release(false)
        .connect(&database.url)
        .await
        .unwrap();
    for round in 0..3 {
        let one: i32 = sqlx::query_scalar("SELECT 1")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(one, 1);
        assert_eq!(
            pool.num_idle(),
            1,
            "round {round}: the connection is idle as soon as its query is answered"
        );
    }
}

/// A connection that breaks while it is in use (PostgreSQL ended it) fails the query
/// that was using it and is discarded, so the queries after it, however soon, get a
/// working connection: one failed request, not a run of them.
#[tokio::test]
async fn a_connection_that_broke_in_use_fails_one_query_and_is_replaced() {
    let database = TestDatabase::create().await;
    let admin = database.pool().await;
    let mut db = DatabaseConfig::for_tests(&database.url);
    db.http_connections = 1;
    let pools = Pools::connect(&db).await.unwrap();
    for round in 0..3 {
        let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
            .fetch_one(&pools.http)
            .await
            .unwrap();
        wait_until("the connection to be back in the pool", || async {
            pools.http.num_idle() == 1
        })
        .await;
        sqlx::query("SELECT pg_terminate_backend($1)")
            .bind(pid)
            .execute(&admin)
            .await
            .unwrap();
        wait_until("its backend to have ended", || async {
            let alive: bool =
                sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = $1)")
                    .bind(pid)
                    .fetch_one(&admin)
                    .await
                    .unwrap();
            !alive
        })
        .await;
        // Within the idle time that skips the ping before use: the dead connection is
        // handed out, and fails.
        let broken = sqlx::query_scalar::<_, i32>("SELECT 1")
            .fetch_one(&pools.http)
            .await;
        assert!(broken.is_err(), "round {round}: the connection was ended");
        for attempt in 0..3 {
            let one: i32 = sqlx::query_scalar("SELECT 1")
                .fetch_one(&pools.http)
                .await
                .unwrap_or_else(|error| {
                    panic!("round {round}, query {attempt} after the failure: {error}")
                });
            assert_eq!(one, 1);
        }
    }
}

/// Without the ping on release, a transaction dropped uncommitted still ends at once:
/// its `ROLLBACK` is flushed when the connection is returned, so the rows it locked are
/// free for others rather than held until the connection's next use.
#[tokio::test]
async fn a_transaction_dropped_uncommitted_releases_its_locks_at_once() {
    let database = TestDatabase::create().await;
    let admin = database.pool().await;
    sqlx::query("CREATE TABLE seats (id int PRIMARY KEY)")
        .execute(&admin)
        .await
        .unwrap();
    sqlx::query("INSERT INTO seats VALUES (1)")
        .execute(&admin)
        .await
        .unwrap();
    let mut db = DatabaseConfig::for_tests(&database.url);
    db.http_connections = 2;
    let pools = Pools::connect(&db).await.unwrap();

    for round in 0..5 {
        let mut tx = pools.http.begin().await.unwrap();
        sqlx::query("SELECT id FROM seats WHERE id = 1 FOR UPDATE")
            .execute(&mut *tx)
            .await
            .unwrap();
        drop(tx);
        testkit::wait::wait_at_most(
            std::time::Duration::from_secs(2),
            &format!("round {round}: the dropped transaction's lock to be released"),
            || async {
                let mut other = admin.begin().await.unwrap();
                let locked = sqlx::query("SELECT id FROM seats WHERE id = 1 FOR UPDATE NOWAIT")
                    .execute(&mut *other)
                    .await;
                other.rollback().await.unwrap();
                locked.is_ok()
            },
        )
        .await;
        let open: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE datname = current_database() AND state LIKE 'idle in transaction%'",
        )
        .fetch_one(&admin)
        .await
        .unwrap();
        assert_eq!(open, 0, "round {round}: no transaction is left open");
    }
}

/// A query given up part-way (its future dropped by a timeout, or a stream dropped after
/// a few rows) leaves its connection to answer the next query, not the rest of the
/// old one, now that nothing pings the connection on its return.
#[tokio::test]
async fn a_query_given_up_part_way_leaves_its_connection_answering_the_next_one() {
    use futures::TryStreamExt;

    let database = TestDatabase::create().await;
    let mut db = DatabaseConfig::for_tests(&database.url);
    db.http_connections = 1;
    let pools = Pools::connect(&db).await.unwrap();

    for round in 0..3 {
        let slow = sqlx::query_scalar::<_, String>("SELECT 'late' FROM pg_sleep(0.3)")
            .fetch_one(&pools.http);
        let given_up = tokio::time::timeout(std::time::Duration::from_millis(50), slow).await;
        assert!(
            given_up.is_err(),
            "round {round}: the slow query was given up"
        );
        let next: String = sqlx::query_scalar("SELECT 'next'")
            .fetch_one(&pools.http)
            .await
            .unwrap();
        assert_eq!(next, "next", "round {round}");

        let mut rows =
            sqlx::query_scalar::<_, i32>("SELECT g FROM generate_series(1, 200000) AS g")
                .fetch(&pools.http);
        for expected in 1..=3 {
            assert_eq!(rows.try_next().await.unwrap(), Some(expected));
        }
        drop(rows);
        let count: i64 = sqlx::query_scalar("SELECT count(*) FROM generate_series(1, 7)")
            .fetch_one(&pools.http)
            .await
            .unwrap();
        assert_eq!(count, 7, "round {round}");
    }
}

/// A stop asked for while the service still waits for its database ends it at once,
/// with success, rather than after the database's 30 s of patience.
#[tokio::test]
async fn a_stop_while_connecting_ends_the_service_at_once() {
    let service = Plain {
        http: HttpConfig::for_tests(),
        database: DatabaseConfig::for_tests("postgres://nobody@127.0.0.1:1/nothing"),
        poisoned: None,
    };
    let server = TestServer::serve(service).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let started = std::time::Instant::now();
    server
        .stop()
        .await
        .expect("a stop while starting is a clean stop");
    assert!(started.elapsed() < std::time::Duration::from_secs(2));
}
