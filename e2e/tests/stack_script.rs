//! `scripts/stack.sh` itself: how `make down` and `make test` stop what they started.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn stack(dir: &Path, env: &[(&str, &str)], args: &[&str]) -> std::process::Output {
    let root = testkit::workspace_root();
    Command::new(root.join("scripts/stack.sh"))
        .args(args)
        .env("STACK_DIR", dir)
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

fn temp_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("stack-script-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(dir.join("run")).unwrap();
    dir
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
}

/// A service that takes 12 s to shut down (more than the 10 s the script used to
/// give) is left to finish: SIGKILL only comes after the services' shutdown grace.
#[test]
fn stopping_waits_for_the_shutdown_grace_before_killing() {
    let dir = temp_dir();
    let service = dir.join("auth");
    let done = dir.join("stopped-gracefully");
    std::fs::write(
        &service,
        format!(
            "trap 'sleep 12; touch {}; exit 0' TERM\nwhile true; do sleep 0.1; done\n",
            done.display()
        ),
    )
    .unwrap();
    let mut child = Command::new("bash")
        .arg(&service)
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    std::fs::write(dir.join("run/auth.pid"), child.id().to_string()).unwrap();
    std::thread::sleep(Duration::from_millis(200));

    let started = Instant::now();
    let output = stack(&dir, &[], &["stop", "auth"]);
    assert!(output.status.success(), "{output:?}");
    assert!(started.elapsed() >= Duration::from_secs(11), "it waited");
    assert!(
        done.exists(),
        "the service finished its shutdown; it was not killed"
    );
    assert!(child.wait().unwrap().success());
    assert!(!dir.join("run/auth.pid").exists());
    let _ = std::fs::remove_dir_all(&dir);
}

/// A pid file whose process is not the program it names (a stale file, the pid
/// reused since) is not signalled.
#[test]
fn a_stale_pid_file_never_gets_another_program_killed() {
    let dir = temp_dir();
    let mut unrelated = Command::new("sleep").arg("30").spawn().unwrap();
    std::fs::write(dir.join("run/tickets.pid"), unrelated.id().to_string()).unwrap();
    let output = stack(&dir, &[], &["stop", "tickets"]);
    assert!(output.status.success(), "{output:?}");
    assert!(alive(unrelated.id()), "the unrelated process lives");
    assert!(String::from_utf8_lossy(&output.stderr).contains("not ours"));
    unrelated.kill().unwrap();
    unrelated.wait().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

/// `make test` leaves no PostgreSQL behind that it started (a second checkout's
/// `make up` would find the port taken).
#[test]
fn with_postgres_stops_the_cluster_it_started() {
    let dir = temp_dir();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
        .to_string();
    let env = [("PG_PORT", port.as_str())];
    let probe = format!("exec 3<>/dev/tcp/127.0.0.1/{port}");
    let output = stack(&dir, &env, &["with-postgres", "bash", "-c", &probe]);
    assert!(
        output.status.success(),
        "PostgreSQL was up during the command: {output:?}"
    );
    let after = Command::new("bash").args(["-c", &probe]).output().unwrap();
    assert!(!after.status.success(), "and is stopped afterwards");
    let _ = std::fs::remove_dir_all(&dir);
}
