use std::process::Command;

/// Runs the auth binary with only the given environment.
fn run_with(env: &[(&str, &str)]) -> (i32, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_auth"))
        .env_clear()
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn a_missing_jwt_key_stops_the_service_naming_it() {
    let (code, stderr) = run_with(&[("DATABASE_URL", "postgres://localhost/none")]);
    assert_ne!(code, 0);
    assert_eq!(
        stderr.trim(),
        "configuration error: environment variable JWT_KEY is required but not set"
    );
}

#[test]
fn a_missing_database_url_stops_the_service_naming_it() {
    let (code, stderr) = run_with(&[("JWT_KEY", "k")]);
    assert_ne!(code, 0);
    assert_eq!(
        stderr.trim(),
        "configuration error: environment variable DATABASE_URL is required but not set"
    );
}

#[test]
fn a_short_or_development_key_stops_the_service() {
    let (code, stderr) = run_with(&[
        ("DATABASE_URL", "postgres://x/y"),
        ("JWT_KEY", "local-development-jwt-key"),
    ]);
    assert_ne!(code, 0);
    assert!(
        stderr.trim().starts_with(
            "configuration error: environment variable JWT_KEY is invalid: it is 25 bytes long"
        ),
        "{stderr}"
    );
    assert!(!stderr.contains("local-development-jwt-key"), "{stderr}");
    let dev = ("JWT_KEY", "dev-only-jwt-key-do-not-use-in-prod-0123456789");
    // COOKIE_SECURE is on unless turned off: the development key is refused...
    let (code, stderr) = run_with(&[
        ("DATABASE_URL", "postgres://x/y"),
        ("NATS_URL", "nats://127.0.0.1:1"),
        dev,
    ]);
    assert_ne!(code, 0);
    assert!(stderr.contains("for development only"), "{stderr}");
    // ...and accepted for plain-http local use: the service starts (and keeps trying
    // to reach a database that is not there) instead of exiting.
    let mut accepted = Command::new(env!("CARGO_BIN_EXE_auth"))
        .env_clear()
        .envs([
            ("DATABASE_URL", "postgres://127.0.0.1:1/none"),
            dev,
            ("COOKIE_SECURE", "false"),
            ("NATS_URL", "nats://127.0.0.1:1"),
            ("PORT", "0"),
            ("OPS_PORT", "0"),
        ])
        .stderr(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let exited = accepted.try_wait().unwrap();
    let _ = accepted.kill();
    let _ = accepted.wait();
    assert_eq!(exited, None, "the configuration was accepted");
}

#[test]
fn an_invalid_port_stops_the_service_naming_it() {
    let (code, stderr) = run_with(&[
        ("JWT_KEY", "k"),
        ("DATABASE_URL", "postgres://x/y"),
        ("PORT", "eighty"),
    ]);
    assert_ne!(code, 0);
    assert!(
        stderr
            .trim()
            .starts_with("configuration error: environment variable PORT is invalid"),
        "{stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1);
}

#[test]
fn the_binary_lists_the_variables_it_reads() {
    let output = Command::new(env!("CARGO_BIN_EXE_auth"))
        .args(["env", "--json"])
        .env_clear()
        .output()
        .unwrap();
    assert!(output.status.success());
    let variables: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let required: Vec<&str> = variables
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["required"] == true)
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(required, ["DATABASE_URL", "JWT_KEY", "NATS_URL"]);
    let threads = variables
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "PASSWORD_HASHING_THREADS")
        .unwrap();
    assert_eq!(threads["default"], "2");
}
