//! A service binary running as a real process.

use std::path::PathBuf;

use uuid::Uuid;

use super::{http_client, wait_until};

/// A service binary running as a real process, for tests that kill it (SIGKILL) or
/// stop it (SIGTERM). Its output goes to a log file that [`ServiceProcess::logs`] reads.
pub struct ServiceProcess {
    binary: PathBuf,
    env: Vec<(String, String)>,
    pub port: u16,
    /// Its `OPS_PORT`: `/healthz`, `/readyz`, `/metrics`.
    pub ops_port: u16,
    log: PathBuf,
    child: Option<std::process::Child>,
}

impl ServiceProcess {
    /// Starts `binary` on free ports with only `env` (and `PORT`, `OPS_PORT`) in its
    /// environment.
    pub fn start(binary: &str, env: &[(&str, &str)]) -> Self {
        let [port, ops_port] = free_ports();
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
            ops_port,
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
            .env("OPS_PORT", self.ops_port.to_string())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// A URL on its ops port.
    pub fn ops_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.ops_port)
    }

    /// Waits until `/readyz` answers 200.
    pub async fn ready(&self) {
        let client = http_client();
        let what = format!("{} to be ready", self.binary.display());
        wait_until(&what, || async {
            let ready = client
                .get(self.ops_url("/readyz"))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200);
            if !ready && self.exited() {
                panic!(
                    "{} exited; its log:\n{}",
                    self.binary.display(),
                    self.logs()
                );
            }
            ready
        })
        .await;
    }

    /// Whether the process has exited (or was never started).
    pub fn exited(&self) -> bool {
        self.child.as_ref().is_none_or(|child| {
            // A process that exited stays a zombie (state Z) until it is waited for.
            let stat = std::fs::read_to_string(format!("/proc/{}/stat", child.id()));
            stat.map_or(true, |stat| {
                stat.rsplit(')')
                    .next()
                    .is_some_and(|rest| rest.trim_start().starts_with('Z'))
            })
        })
    }

    /// Its process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(std::process::Child::id)
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

/// Ports nothing listens on now, all different.
fn free_ports<const N: usize>() -> [u16; N] {
    let listeners: [std::net::TcpListener; N] =
        std::array::from_fn(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap());
    listeners.map(|listener| listener.local_addr().unwrap().port())
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// Runs `binary` with `args` and only `env` in its environment, to completion.
pub fn run_command(binary: &str, args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    std::process::Command::new(binary)
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .output()
        .unwrap()
}
