//! Where the tests' PostgreSQL and NATS come from.

/// The source of test infrastructure, chosen by `TEST_INFRA`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Infrastructure {
    /// The local PostgreSQL cluster of `scripts/stack.sh` (or `TEST_DATABASE_URL`) and
    /// a `nats-server` process per test. The default; what `make test` uses.
    Local,
    /// Containers started with testcontainers (`TEST_INFRA=containers`; needs the
    /// `testcontainers` feature and a Docker engine).
    #[cfg(feature = "testcontainers")]
    Containers,
}

impl Infrastructure {
    pub fn current() -> Self {
        match std::env::var("TEST_INFRA").as_deref() {
            Ok("containers") => Self::containers(),
            Ok("local") | Err(_) => Self::Local,
            Ok(other) => panic!("TEST_INFRA={other}: expected `local` or `containers`"),
        }
    }

    #[cfg(feature = "testcontainers")]
    fn containers() -> Self {
        Self::Containers
    }

    #[cfg(not(feature = "testcontainers"))]
    fn containers() -> Self {
        panic!("TEST_INFRA=containers needs the `testcontainers` feature of `common`")
    }
}
