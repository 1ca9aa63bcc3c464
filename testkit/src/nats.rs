//! A private NATS server with JetStream per test.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use uuid::Uuid;

use super::infrastructure::Infrastructure;
use super::workspace_root;

/// A private NATS server with JetStream for one test, which the test can stop (to
/// simulate an outage) and restart on the same port with the same store.
pub struct TestNats {
    pub url: String,
    server: Server,
    users: Users,
}

/// Whether the server has users, as `make up` and the cluster run it
/// (`infra/k8s/base/nats-authorization.conf`, each with [`test_password`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Users {
    /// None: anyone may do anything (most tests).
    None,
    /// The services' users; anonymous connections are refused.
    Required,
    /// The services' users, and anonymous connections taken for the admin user: for
    /// a stack of services that must use their own users, watched by test tools that
    /// connect anonymously.
    AnonymousIsAdmin,
}

/// The password of `user` on a test server with users.
pub fn test_password(user: &str) -> String {
    format!("test-nats-password-of-{user}")
}

enum Server {
    Process {
        port: u16,
        dir: PathBuf,
        child: Option<Child>,
    },
    #[cfg(feature = "testcontainers")]
    Container(Box<super::containers::Nats>),
}

impl TestNats {
    pub async fn start() -> Self {
        Self::start_with(Users::None).await
    }

    /// A server with the services' users ([`Users`]).
    pub async fn start_with(users: Users) -> Self {
        let server = match Infrastructure::current() {
            Infrastructure::Local => {
                let dir = std::env::temp_dir()
                    .join(format!("ticketing-nats-{}", Uuid::new_v4().simple()));
                std::fs::create_dir_all(&dir).unwrap();
                Server::Process {
                    port: 0,
                    dir,
                    child: None,
                }
            }
            #[cfg(feature = "testcontainers")]
            Infrastructure::Containers => {
                Server::Container(Box::new(super::containers::Nats::start().await))
            }
        };
        let mut nats = Self {
            url: String::new(),
            server,
            users,
        };
        nats.launch().await;
        nats
    }

    /// Stops the server (its stored messages are kept for [`TestNats::restart`]).
    pub async fn stop(&mut self) {
        match &mut self.server {
            Server::Process { child, .. } => kill(child),
            #[cfg(feature = "testcontainers")]
            Server::Container(container) => container.stop().await,
        }
    }

    /// Freezes the server (SIGSTOP): connections stay open but nothing is answered, as
    /// with a stalled node. [`TestNats::thaw`] lets it go on.
    pub async fn freeze(&mut self) {
        match &mut self.server {
            Server::Process { child, .. } => signal(child, "-STOP"),
            #[cfg(feature = "testcontainers")]
            Server::Container(container) => container.freeze().await,
        }
    }

    /// Lets a frozen server go on (SIGCONT).
    pub async fn thaw(&mut self) {
        match &mut self.server {
            Server::Process { child, .. } => signal(child, "-CONT"),
            #[cfg(feature = "testcontainers")]
            Server::Container(container) => container.thaw().await,
        }
    }

    /// Starts the server again on the same port and store.
    pub async fn restart(&mut self) {
        self.stop().await;
        self.launch().await;
    }

    async fn launch(&mut self) {
        let port = match &mut self.server {
            Server::Process { port, dir, child } => {
                let ports_dir = dir.join("ports");
                *child = Some(spawn(*port, dir, &ports_dir, self.users));
                *port = wait_for_ports_file(&ports_dir).await;
                *port
            }
            #[cfg(feature = "testcontainers")]
            Server::Container(container) => {
                container.resume().await;
                container.port
            }
        };
        self.url = format!("nats://127.0.0.1:{port}");
    }
}

/// Starts `nats-server` on `port` (any free one for 0) with its store under `dir`.
fn spawn(port: u16, dir: &Path, ports_dir: &Path, users: Users) -> Child {
    let listen = if port == 0 {
        "127.0.0.1:-1".to_owned()
    } else {
        format!("127.0.0.1:{port}")
    };
    let config = dir.join("nats.conf");
    let _ = std::fs::remove_dir_all(ports_dir);
    std::fs::create_dir_all(ports_dir).unwrap();
    std::fs::write(
        &config,
        format!(
            "listen: {listen}\nports_file_dir: \"{ports}\"\nlog_file: \"{log}\"\n\
             jetstream {{ store_dir: \"{store}\", sync_interval: always }}\n",
            ports = ports_dir.display(),
            log = dir.join("nats.log").display(),
            store = dir.join("jetstream").display(),
        ) + &authorization(users),
    )
    .unwrap();
    let mut command = Command::new(nats_server_binary());
    for (user, _) in bus::permissions::SERVICES.iter().chain(&[("admin", false)]) {
        command.env(
            bus::permissions::password_variable(user),
            test_password(user),
        );
    }
    command
        .arg("-c")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot start nats-server ({e}); run `make test` or scripts/stack.sh install")
        })
}

/// The users' part of the configuration: the committed authorization block.
fn authorization(users: Users) -> String {
    let block = || {
        std::fs::read_to_string(workspace_root().join("infra/k8s/base/nats-authorization.conf"))
            .unwrap()
    };
    match users {
        Users::None => String::new(),
        Users::Required => block(),
        Users::AnonymousIsAdmin => format!("{}\nno_auth_user: admin\n", block()),
    }
}

fn signal(child: &Option<Child>, signal: &str) {
    let child = child.as_ref().expect("nats-server is running");
    let sent = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success(), "kill {signal} nats-server");
}

fn kill(child: &mut Option<Child>) {
    if let Some(mut process) = child.take() {
        let _ = process.kill();
        let _ = process.wait();
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
        match &mut self.server {
            Server::Process { dir, child, .. } => {
                kill(child);
                let _ = std::fs::remove_dir_all(dir);
            }
            #[cfg(feature = "testcontainers")]
            Server::Container(_) => {}
        }
    }
}

/// Three `nats-server` processes forming a JetStream cluster (file storage, fsync
/// before acknowledging), for tests of what losing a node does. Local processes
/// only: the container path has no cluster.
pub struct TestNatsCluster {
    /// Each node's client URL, by node.
    pub urls: Vec<String>,
    nodes: Vec<Node>,
    dir: PathBuf,
}

struct Node {
    name: String,
    config: PathBuf,
    child: Option<Child>,
}

/// A free port on the loopback interface (released again: the node binds it next).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .unwrap()
}

impl TestNatsCluster {
    pub async fn start() -> Self {
        let dir = std::env::temp_dir().join(format!(
            "ticketing-nats-cluster-{}",
            Uuid::new_v4().simple()
        ));
        let clients: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let routes: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let all_routes = routes
            .iter()
            .map(|port| format!("nats://127.0.0.1:{port}"))
            .collect::<Vec<_>>()
            .join(", ");
        let mut nodes = Vec::new();
        for (index, (client, route)) in clients.iter().zip(&routes).enumerate() {
            let name = format!("n{index}");
            let home = dir.join(&name);
            std::fs::create_dir_all(&home).unwrap();
            let config = home.join("nats.conf");
            std::fs::write(
                &config,
                format!(
                    "server_name: {name}\nlisten: 127.0.0.1:{client}\nlog_file: \"{log}\"\n\
                     jetstream {{ store_dir: \"{store}\", sync_interval: always }}\n\
                     cluster {{ name: test, listen: 127.0.0.1:{route}, routes: [{all_routes}] }}\n",
                    log = home.join("nats.log").display(),
                    store = home.join("jetstream").display(),
                ),
            )
            .unwrap();
            nodes.push(Node {
                name,
                config,
                child: None,
            });
        }
        let mut cluster = Self {
            urls: clients
                .iter()
                .map(|port| format!("nats://127.0.0.1:{port}"))
                .collect(),
            nodes,
            dir,
        };
        for index in 0..3 {
            cluster.launch(index);
        }
        cluster.wait_for_jetstream().await;
        cluster
    }

    fn launch(&mut self, index: usize) {
        let node = &mut self.nodes[index];
        node.child = Some(
            Command::new(nats_server_binary())
                .arg("-c")
                .arg(&node.config)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
    }

    /// Until every node answers for JetStream (the cluster has elected its leader).
    async fn wait_for_jetstream(&self) {
        for url in &self.urls {
            let mut answered = false;
            for _ in 0..200 {
                if let Ok(client) = async_nats::connect(url.as_str()).await {
                    let jetstream = async_nats::jetstream::new(client);
                    if jetstream.query_account().await.is_ok() {
                        answered = true;
                        break;
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            assert!(
                answered,
                "the NATS cluster did not form (logs in {})",
                self.dir.display()
            );
        }
    }

    fn index(&self, name: &str) -> usize {
        self.nodes
            .iter()
            .position(|node| node.name == name)
            .unwrap_or_else(|| panic!("no node {name}"))
    }

    /// SIGKILLs the node named `name` (its `server_name`, as JetStream reports leaders).
    pub fn kill(&mut self, name: &str) {
        let index = self.index(name);
        kill(&mut self.nodes[index].child);
    }

    /// Starts a killed node again, with its store.
    pub fn restart(&mut self, name: &str) {
        let index = self.index(name);
        self.launch(index);
    }
}

impl Drop for TestNatsCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            kill(&mut node.child);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
