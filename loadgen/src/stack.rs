//! The system under load: the local stack (where its parts listen: the same settings
//! as `scripts/stack.sh`, from the environment, and how to start and stop them), or the
//! cluster of `make cluster` (where `scripts/cluster endpoints` says its parts answer).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, bail};
use serde::Deserialize;

#[derive(Debug, Clone)]
pub struct Stack {
    root: PathBuf,
    pub pg_port: u16,
    pub nats_port: u16,
    pub ingress_port: u16,
    pub service_port_base: u16,
    /// Where the services' `/healthz`, `/readyz` and `/metrics` answer (the same
    /// offsets from `OPS_PORT_BASE`).
    pub ops_port_base: u16,
    pub standin_port: u16,
    /// Set for the cluster: where its parts answer from this machine.
    pub cluster: Option<Endpoints>,
}

/// Where the cluster's parts answer from this machine (`scripts/cluster endpoints`):
/// the ingress, each database's current primary, the NATS nodes, the stand-in.
#[derive(Debug, Clone, Deserialize)]
pub struct Endpoints {
    pub ingress: String,
    pub databases: BTreeMap<String, String>,
    /// Each database's standby, for comparing it with its primary.
    #[serde(default)]
    pub standbys: BTreeMap<String, String>,
    pub nats: Vec<String>,
    pub nats_monitors: BTreeMap<String, String>,
    /// The admin user's NATS password (the cluster's `nats-credentials` Secret).
    #[serde(default)]
    pub nats_admin_password: Option<String>,
    pub standin: String,
}

/// The services with their port offsets (as scripts/stack.sh assigns them).
pub const SERVICES: [(&str, u16); 6] = [
    ("auth", 1),
    ("tickets", 2),
    ("orders", 3),
    ("payments", 4),
    ("expiration", 5),
    ("client", 6),
];

/// The services that keep a database, and those on the bus.
pub const DATABASES: [&str; 5] = ["auth", "tickets", "orders", "payments", "expiration"];
pub const ON_THE_BUS: [&str; 5] = ["auth", "tickets", "orders", "payments", "expiration"];

fn offset(service: &str) -> anyhow::Result<u16> {
    SERVICES
        .iter()
        .find(|(name, _)| *name == service)
        .map(|(_, offset)| *offset)
        .with_context(|| format!("no service {service}"))
}

fn port(name: &str, default: u16) -> anyhow::Result<u16> {
    std::env::var(name)
        .ok()
        .map(|p| p.parse().with_context(|| format!("{name}={p}")))
        .transpose()
        .map(|p| p.unwrap_or(default))
}

impl Stack {
    pub fn from_env() -> anyhow::Result<Self> {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .context("the workspace root")?
            .to_path_buf();
        let service_port_base = port("SERVICE_PORT_BASE", 3000)?;
        Ok(Self {
            root,
            pg_port: port("PG_PORT", 55432)?,
            nats_port: port("NATS_PORT", 4222)?,
            ingress_port: port("INGRESS_PORT", 8080)?,
            service_port_base,
            ops_port_base: port("OPS_PORT_BASE", service_port_base + 1000)?,
            standin_port: port("STANDIN_PORT", 12111)?,
            cluster: None,
        })
    }

    /// The cluster of `make cluster`, as it is now (a failover moves a primary: ask
    /// again after one).
    pub fn cluster() -> anyhow::Result<Self> {
        let mut stack = Self::from_env()?;
        stack.cluster = Some(stack.endpoints()?);
        Ok(stack)
    }

    /// What `scripts/cluster endpoints` answers.
    pub fn endpoints(&self) -> anyhow::Result<Endpoints> {
        let output = Command::new(self.root.join("scripts/cluster"))
            .arg("endpoints")
            .output()
            .context("running scripts/cluster endpoints")?;
        if !output.status.success() {
            bail!(
                "scripts/cluster endpoints failed: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        serde_json::from_slice(&output.stdout).context("reading scripts/cluster endpoints")
    }

    pub fn root(&self) -> &std::path::Path {
        &self.root
    }

    pub fn ingress(&self) -> String {
        match &self.cluster {
            Some(cluster) => cluster.ingress.clone(),
            None => format!("http://127.0.0.1:{}", self.ingress_port),
        }
    }

    /// A service's API.
    pub fn service(&self, name: &str) -> anyhow::Result<String> {
        Ok(format!(
            "http://127.0.0.1:{}",
            self.service_port_base + offset(name)?
        ))
    }

    /// A service's operational endpoints.
    pub fn ops(&self, name: &str) -> anyhow::Result<String> {
        Ok(format!(
            "http://127.0.0.1:{}",
            self.ops_port_base + offset(name)?
        ))
    }

    pub fn database(&self, name: &str) -> String {
        match self.cluster.as_ref().and_then(|c| c.databases.get(name)) {
            Some(url) => url.clone(),
            None => format!("postgres://postgres@127.0.0.1:{}/{name}", self.pg_port),
        }
    }

    /// The NATS servers (the cluster's three nodes).
    pub fn nats(&self) -> Vec<String> {
        match &self.cluster {
            Some(cluster) => cluster.nats.clone(),
            None => vec![format!("nats://127.0.0.1:{}", self.nats_port)],
        }
    }

    /// A client of any of the NATS servers, as the admin user (NATS refuses
    /// anonymous clients): its password is the cluster's, or the local stack's
    /// (`$STACK_DIR/nats/passwords/admin`, made by scripts/stack.sh).
    pub async fn nats_client(&self) -> anyhow::Result<async_nats::Client> {
        let servers = self
            .nats()
            .iter()
            .map(|url| url.parse::<async_nats::ServerAddr>())
            .collect::<Result<Vec<_>, _>>()?;
        let options = match self.nats_admin_password() {
            Some(password) => {
                async_nats::ConnectOptions::with_user_and_password("admin".into(), password)
            }
            None => async_nats::ConnectOptions::new(),
        };
        Ok(options.connect(servers).await?)
    }

    /// The local stack's state: its databases, NATS's store, generated secrets.
    pub fn state_dir(&self) -> PathBuf {
        std::env::var_os("STACK_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| self.root.join(".stack"))
    }

    fn nats_admin_password(&self) -> Option<String> {
        if let Some(cluster) = &self.cluster {
            return cluster.nats_admin_password.clone();
        }
        std::fs::read_to_string(self.state_dir().join("nats/passwords/admin"))
            .ok()
            .map(|password| password.trim().to_owned())
    }

    pub fn standin(&self) -> String {
        match &self.cluster {
            Some(cluster) => cluster.standin.clone(),
            None => format!("http://127.0.0.1:{}", self.standin_port),
        }
    }

    /// `scripts/stack.sh ARGS...`.
    pub fn script(&self, args: &[&str]) -> anyhow::Result<()> {
        let status = Command::new(self.root.join("scripts/stack.sh"))
            .args(args)
            .status()
            .context("running scripts/stack.sh")?;
        if !status.success() {
            bail!("scripts/stack.sh {} failed", args.join(" "));
        }
        Ok(())
    }

    /// The environment `scripts/stack.sh` starts a service with.
    pub fn service_env(&self, name: &str) -> anyhow::Result<Vec<(String, String)>> {
        let output = Command::new(self.root.join("scripts/stack.sh"))
            .args(["service-env", name])
            .output()?;
        if !output.status.success() {
            bail!("no environment for {name}");
        }
        Ok(String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter_map(|line| line.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect())
    }

    /// The resident memory of a running part, in kB (`VmRSS` or `VmHWM`).
    pub fn memory_kb(&self, name: &str, field: &str) -> anyhow::Result<u64> {
        let stack_dir =
            std::env::var("STACK_DIR").map_or_else(|_| self.root.join(".stack"), PathBuf::from);
        let pid = std::fs::read_to_string(stack_dir.join("run").join(format!("{name}.pid")))
            .with_context(|| format!("{name} is not running"))?;
        let status = std::fs::read_to_string(format!("/proc/{}/status", pid.trim()))?;
        status
            .lines()
            .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|value| value.trim().trim_end_matches(" kB").parse().ok())
            .with_context(|| format!("no {field} for {name}"))
    }
}
