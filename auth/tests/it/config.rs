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
