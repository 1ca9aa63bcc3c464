//! Configuration from environment variables.
//!
//! Each service describes its settings as a struct built from an [`Env`]: reads with
//! [`Env::required`], [`Env::optional`] and [`Env::seconds`]. A missing or unreadable
//! variable is a [`ConfigError`] naming it, and [`load_or_exit`] turns that into a
//! one-line message and exit code 1.
//!
//! An [`Env`] remembers every variable it was asked for, so the code that loads a
//! service's configuration is also the list of the variables it reads:
//! [`describe`] runs a loader against an empty environment and reports them, and each
//! service binary prints that list with `<service> env` (the Kubernetes manifests are
//! checked against it).
//!
//! A variable that was renamed is still read under its old name ([`RENAMED`]), with a
//! warning, so that an existing deployment keeps working until it is updated.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::time::Duration;

use serde::Serialize;

pub use common::Secret;

/// Variables that were renamed: (the name now, the name before). The old name is read
/// when the new one is not set.
pub const RENAMED: &[(&str, &str)] = &[("DATABASE_HTTP_CONNECTIONS", "DATABASE_MAX_CONNECTIONS")];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration error: environment variable {0} is required but not set")]
    Missing(&'static str),
    #[error("configuration error: environment variable {name} is invalid: {problem}")]
    Invalid { name: &'static str, problem: String },
}

/// One variable a configuration reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Variable {
    pub name: &'static str,
    pub required: bool,
    /// The value used when it is not set (optional variables only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
    /// The name it had before, still read (see [`RENAMED`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub formerly: Option<&'static str>,
}

/// Where settings come from: the process environment, or a fixed set of pairs (tests,
/// [`describe`]). Records every variable read, and what it read under an old name.
pub struct Env {
    values: Option<HashMap<String, String>>,
    read: RefCell<Vec<Variable>>,
    warnings: RefCell<Vec<String>>,
}

impl Env {
    /// The process environment.
    pub fn process() -> Self {
        Self {
            values: None,
            read: RefCell::default(),
            warnings: RefCell::default(),
        }
    }

    /// Exactly these variables and no others.
    pub fn from_pairs<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        let values = pairs
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        Self {
            values: Some(values),
            read: RefCell::default(),
            warnings: RefCell::default(),
        }
    }

    fn raw(&self, name: &str) -> Option<String> {
        let value = match &self.values {
            Some(values) => values.get(name).cloned(),
            None => std::env::var(name).ok(),
        };
        value.filter(|value| !value.trim().is_empty())
    }

    /// The value of `name`, or of its old name if only that is set.
    fn get(&self, name: &str) -> Option<String> {
        if let Some(value) = self.raw(name) {
            return Some(value);
        }
        let old = former_name(name)?;
        let value = self.raw(old)?;
        self.warnings
            .borrow_mut()
            .push(format!("{old} is deprecated: it was renamed {name}"));
        Some(value)
    }

    fn note(&self, name: &'static str, required: bool, default: Option<String>) {
        let mut read = self.read.borrow_mut();
        if !read.iter().any(|v| v.name == name) {
            read.push(Variable {
                name,
                required,
                default,
                formerly: former_name(name),
            });
        }
    }

    /// A variable that must be set and parse as `T`.
    pub fn required<T: FromStr>(&self, name: &'static str) -> Result<T, ConfigError>
    where
        T::Err: fmt::Display,
    {
        self.note(name, true, None);
        parse(name, &self.get(name).ok_or(ConfigError::Missing(name))?)
    }

    /// A variable that falls back to `default` when unset or empty.
    pub fn optional<T: FromStr + fmt::Display>(
        &self,
        name: &'static str,
        default: T,
    ) -> Result<T, ConfigError>
    where
        T::Err: fmt::Display,
    {
        self.note(name, false, Some(default.to_string()));
        self.get(name).map_or(Ok(default), |raw| parse(name, &raw))
    }

    /// A variable that may be absent, with no default (`None`).
    pub fn maybe<T: FromStr>(&self, name: &'static str) -> Result<Option<T>, ConfigError>
    where
        T::Err: fmt::Display,
    {
        self.note(name, false, None);
        self.get(name).map(|raw| parse(name, &raw)).transpose()
    }

    /// A duration given in whole seconds.
    pub fn seconds(&self, name: &'static str, default: u64) -> Result<Duration, ConfigError> {
        self.optional(name, default).map(Duration::from_secs)
    }

    /// A duration given in (possibly fractional) seconds, such as `0.5`.
    pub fn fractional_seconds(
        &self,
        name: &'static str,
        default: f64,
    ) -> Result<Duration, ConfigError> {
        let seconds = self.optional(name, default)?;
        Duration::try_from_secs_f64(seconds).map_err(|e| ConfigError::Invalid {
            name,
            problem: e.to_string(),
        })
    }

    /// The variables read so far.
    pub fn variables(&self) -> Vec<Variable> {
        self.read.borrow().clone()
    }

    /// What was read under a deprecated name, one sentence each.
    pub fn warnings(&self) -> Vec<String> {
        self.warnings.borrow().clone()
    }
}

fn former_name(name: &str) -> Option<&'static str> {
    RENAMED
        .iter()
        .find(|(now, _)| *now == name)
        .map(|(_, before)| *before)
}

fn parse<T: FromStr>(name: &'static str, raw: &str) -> Result<T, ConfigError>
where
    T::Err: fmt::Display,
{
    raw.trim()
        .parse()
        .map_err(|e: T::Err| ConfigError::Invalid {
            name,
            problem: e.to_string(),
        })
}

/// At least `minimum`, or an error naming the variable.
pub fn at_least(minimum: u32, name: &'static str, value: u32) -> Result<(), ConfigError> {
    if value < minimum {
        return Err(ConfigError::Invalid {
            name,
            problem: format!("must be at least {minimum}"),
        });
    }
    Ok(())
}

/// The variables a configuration loader reads: it is run against an empty
/// environment, given a placeholder for each required variable it misses, until it
/// succeeds.
pub fn describe<T>(load: impl Fn(&Env) -> Result<T, ConfigError>) -> Vec<Variable> {
    let mut given: BTreeMap<&'static str, &'static str> = BTreeMap::new();
    loop {
        let env = Env::from_pairs(given.iter().map(|(k, v)| (*k, *v)));
        match load(&env) {
            Err(ConfigError::Missing(name)) if !given.contains_key(name) => {
                // Long enough for any length rule (`JWT_KEY`'s 32 bytes).
                given.insert(name, "placeholder-long-enough-for-any-length-rule");
            }
            _ => return env.variables(),
        }
    }
}

/// Builds the configuration from the process environment, with a warning for each
/// variable read under a deprecated name (logged when logging is set up, else on
/// stderr); or prints the one-line error and exits with status 1.
pub fn load_or_exit<T>(load: impl FnOnce(&Env) -> Result<T, ConfigError>) -> T {
    let env = Env::process();
    let loaded = load(&env).unwrap_or_else(|error| {
        eprintln!("{error}");
        std::process::exit(1)
    });
    for warning in env.warnings() {
        if tracing::dispatcher::has_been_set() {
            tracing::warn!("{warning}");
        } else {
            eprintln!("warning: {warning}");
        }
    }
    loaded
}

/// Settings every HTTP service shares.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// `BIND_ADDRESS` (default `0.0.0.0`, every interface, as a container needs; the
    /// local stack binds `127.0.0.1`).
    pub bind_address: IpAddr,
    /// `PORT` (default 3000): the API, where the ingress routes.
    pub port: u16,
    /// `OPS_PORT` (default 9000): `/healthz`, `/readyz` and `/metrics`, for the probes
    /// and Prometheus; no ingress routes here.
    pub ops_port: u16,
    /// `REQUEST_TIMEOUT_SECONDS` (default 30): a request still running after this long
    /// is abandoned (its transaction rolled back) and answered 503.
    pub request_timeout: Duration,
    /// `SHUTDOWN_GRACE_SECONDS` (default 20): how long a stop may take.
    pub shutdown_grace: Duration,
}

impl HttpConfig {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let config = Self {
            bind_address: env.optional("BIND_ADDRESS", IpAddr::from([0, 0, 0, 0]))?,
            port: env.optional("PORT", 3000)?,
            ops_port: env.optional("OPS_PORT", 9000)?,
            request_timeout: env.seconds("REQUEST_TIMEOUT_SECONDS", 30)?,
            shutdown_grace: env.seconds("SHUTDOWN_GRACE_SECONDS", 20)?,
        };
        if config.ops_port == config.port && config.port != 0 {
            return Err(ConfigError::Invalid {
                name: "OPS_PORT",
                problem: "must differ from PORT: the ingress must not reach it".into(),
            });
        }
        Ok(config)
    }

    /// Defaults for tests: loopback, any port, a short grace.
    pub fn for_tests() -> Self {
        Self {
            bind_address: IpAddr::from([127, 0, 0, 1]),
            port: 0,
            ops_port: 0,
            request_timeout: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(5),
        }
    }
}

/// The JWT key of `for_tests` configurations (and of the test toolkit's sessions).
pub const TEST_JWT_KEY: &str = "test-jwt-key-for-the-test-suites-only";

/// The shortest `JWT_KEY` a service accepts: HS256's own output size. A shorter
/// secret can be searched for offline from any one token.
pub const MIN_JWT_KEY_BYTES: usize = 32;

/// Keys that begin with this are for development only (the dev overlay's): a service
/// that marks its cookies `Secure` (production) refuses them.
pub const DEV_ONLY_KEY_PREFIX: &str = "dev-only-";

/// `JWT_KEY` (required by every service that reads sessions): the shared secret that
/// signs them, at least [`MIN_JWT_KEY_BYTES`] long.
pub fn jwt_key(env: &Env) -> Result<Secret, ConfigError> {
    let key: Secret = env.required("JWT_KEY")?;
    let length = key.expose().len();
    if length < MIN_JWT_KEY_BYTES {
        return Err(ConfigError::Invalid {
            name: "JWT_KEY",
            problem: format!(
                "it is {length} bytes long; at least {MIN_JWT_KEY_BYTES} are required \
                 (`openssl rand -hex 32` makes one)"
            ),
        });
    }
    Ok(key)
}

/// Refuses a development-only key where sessions are for real (`Secure` cookies).
pub fn refuse_dev_key_when_secure(key: &Secret, secure: bool) -> Result<(), ConfigError> {
    if secure && key.expose().starts_with(DEV_ONLY_KEY_PREFIX) {
        return Err(ConfigError::Invalid {
            name: "JWT_KEY",
            problem: format!(
                "keys beginning with `{DEV_ONLY_KEY_PREFIX}` are for development only, \
                 and COOKIE_SECURE is on"
            ),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_variable() {
        assert_eq!(
            ConfigError::Missing("JWT_KEY").to_string(),
            "configuration error: environment variable JWT_KEY is required but not set"
        );
        let env = Env::from_pairs([("PORT", "eighty")]);
        let invalid = env.optional::<u16>("PORT", 3000).unwrap_err();
        assert!(invalid.to_string().contains("PORT is invalid"), "{invalid}");
    }

    #[test]
    fn a_jwt_key_shorter_than_32_bytes_is_refused() {
        for short in ["asdf", "local-development-jwt-key", &"k".repeat(31)] {
            let env = Env::from_pairs([("JWT_KEY", short)]);
            let refused = jwt_key(&env).unwrap_err().to_string();
            assert!(
                refused.contains("JWT_KEY is invalid") && refused.contains("at least 32"),
                "{refused}"
            );
            assert!(!refused.contains(short), "the key itself is never shown");
        }
        let env = Env::from_pairs([("JWT_KEY", "k".repeat(32))]);
        assert_eq!(jwt_key(&env).unwrap().expose().len(), 32);
    }

    #[test]
    fn a_development_key_is_refused_with_secure_cookies_only() {
        let key = Secret::new("dev-only-jwt-key-do-not-use-in-prod-0123456789");
        assert!(refuse_dev_key_when_secure(&key, false).is_ok());
        let refused = refuse_dev_key_when_secure(&key, true).unwrap_err();
        assert!(
            refused.to_string().contains("development only"),
            "{refused}"
        );
        let real = Secret::new("0123456789abcdef0123456789abcdef");
        assert!(refuse_dev_key_when_secure(&real, true).is_ok());
    }

    #[test]
    fn describe_lists_every_variable_a_loader_reads() {
        let variables = describe(|env| {
            HttpConfig::from_env(env)?;
            jwt_key(env)
        });
        let required: Vec<_> = variables
            .iter()
            .filter(|v| v.required)
            .map(|v| v.name)
            .collect();
        assert_eq!(required, ["JWT_KEY"]);
        let port = variables.iter().find(|v| v.name == "PORT").unwrap();
        assert_eq!(port.default.as_deref(), Some("3000"));
        let ops = variables.iter().find(|v| v.name == "OPS_PORT").unwrap();
        assert_eq!(ops.default.as_deref(), Some("9000"));
        assert!(variables.iter().any(|v| v.name == "SHUTDOWN_GRACE_SECONDS"));
    }

    #[test]
    fn a_renamed_variable_is_still_read_under_its_old_name_with_a_warning() {
        let read = |env: &Env| env.optional::<u32>("DATABASE_HTTP_CONNECTIONS", 10);
        let old = Env::from_pairs([("DATABASE_MAX_CONNECTIONS", "7")]);
        assert_eq!(read(&old), Ok(7));
        assert_eq!(
            old.warnings(),
            ["DATABASE_MAX_CONNECTIONS is deprecated: it was renamed DATABASE_HTTP_CONNECTIONS"]
        );
        let both = Env::from_pairs([
            ("DATABASE_HTTP_CONNECTIONS", "3"),
            ("DATABASE_MAX_CONNECTIONS", "7"),
        ]);
        assert_eq!(read(&both), Ok(3), "the new name wins");
        assert!(both.warnings().is_empty());
        let listed = describe(|env| read(env));
        assert_eq!(listed[0].formerly, Some("DATABASE_MAX_CONNECTIONS"));
    }
}
