use futures::future::join_all;
use serde_json::{Value, json};

use testkit::cookie_of;

use crate::Auth;

#[tokio::test]
async fn signup_creates_a_user_and_sets_the_session() {
    let auth = Auth::start().await;
    let response = auth.signup("test@test.com", "password").await;
    assert_eq!(response.status, 201);
    let set_cookie = response.headers["set-cookie"].to_str().unwrap().to_owned();
    for attribute in ["session=", "Path=/", "HttpOnly", "SameSite=Lax"] {
        assert!(
            set_cookie.contains(attribute),
            "{set_cookie} lacks {attribute}"
        );
    }
    let cookie = cookie_of(&response.headers);
    let user: Value = response.body.clone();
    assert_eq!(user["email"], "test@test.com");
    assert!(uuid::Uuid::parse_str(user["id"].as_str().unwrap()).is_ok());
    assert_eq!(
        user.as_object().unwrap().len(),
        2,
        "only id and email: {user}"
    );

    let current = auth.current_user(Some(&cookie)).await;
    assert_eq!(current["currentUser"]["id"], user["id"]);
}

#[tokio::test]
async fn signup_validates_each_field() {
    let auth = Auth::start().await;
    let email_error = json!({"message": "Email must be valid", "field": "email"});
    let password_error =
        json!({"message": "Password must be between 4 and 20 characters", "field": "password"});

    for bad_email in [json!("alskdflaskjfd"), json!(""), json!(null), json!(12)] {
        let body = json!({"email": bad_email, "password": "password"});
        assert_eq!(
            auth.post("/api/users/signup", body).await.errors(400),
            vec![email_error.clone()]
        );
    }
    for bad_password in [
        json!("p"),
        json!("   pas   "),
        json!("a".repeat(21)),
        json!(null),
        json!(1234),
    ] {
        let body = json!({"email": "test@test.com", "password": bad_password});
        assert_eq!(
            auth.post("/api/users/signup", body).await.errors(400),
            vec![password_error.clone()]
        );
    }
    // Both fields wrong: one entry per field. Missing fields count as wrong.
    assert_eq!(
        auth.post("/api/users/signup", json!({})).await.errors(400),
        vec![email_error, password_error]
    );
    // Exactly 4 and 20 characters (after trimming) are fine.
    assert_eq!(auth.signup("four@test.com", "  abcd  ").await.status, 201);
    assert_eq!(
        auth.signup("twenty@test.com", &"x".repeat(20)).await.status,
        201
    );
}

#[tokio::test]
async fn emails_are_trimmed_and_case_insensitive() {
    let auth = Auth::start().await;
    let response = auth.signup("  Mixed.Case@Test.COM ", "password").await;
    assert_eq!(response.status, 201);
    let user: Value = response.body.clone();
    assert_eq!(user["email"], "mixed.case@test.com");

    let again = auth.signup("mixed.case@test.com", "password").await;
    assert_eq!(again.errors(400), vec![json!({"message": "Email in use"})]);
    let upper = auth.signup("MIXED.CASE@TEST.COM", "other-pass").await;
    assert_eq!(upper.errors(400), vec![json!({"message": "Email in use"})]);
    assert_eq!(
        auth.signin("MIXED.case@test.com", "password").await.status,
        200
    );
}

#[tokio::test]
async fn concurrent_signups_with_one_email_create_exactly_one_user() {
    let auth = Auth::start().await;
    for round in 0..3 {
        let email = format!("race{round}@test.com");
        let attempts = (0..20).map(|i| {
            // Vary the case so the race is decided by the case-insensitive index.
            let email = if i % 2 == 0 {
                email.clone()
            } else {
                email.to_uppercase()
            };
            let auth = &auth;
            async move { auth.signup(&email, "password").await }
        });
        let responses = join_all(attempts).await;
        let mut created = 0;
        for response in responses {
            match response.status {
                201 => created += 1,
                400 => assert_eq!(
                    response.errors(400),
                    vec![json!({"message": "Email in use"})]
                ),
                other => panic!("unexpected status {other}"),
            }
        }
        assert_eq!(created, 1, "round {round}: exactly one signup succeeds");
    }
}
