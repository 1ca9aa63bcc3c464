use serde_json::{Value, json};

use testkit::cookie_of;

use crate::Auth;

#[tokio::test]
async fn signin_with_the_right_password_sets_the_session() {
    let auth = Auth::start().await;
    auth.signup("test@test.com", "password").await;
    let response = auth.signin("test@test.com", "password").await;
    assert_eq!(response.status, 200);
    let cookie = cookie_of(&response.headers);
    assert!(cookie.starts_with("session="));
    let user: Value = response.body.clone();
    assert_eq!(user["email"], "test@test.com");
    assert_eq!(
        auth.current_user(Some(&cookie)).await["currentUser"]["email"],
        "test@test.com"
    );
}

#[tokio::test]
async fn signin_gives_one_answer_for_unknown_email_and_wrong_password() {
    let auth = Auth::start().await;
    auth.signup("test@test.com", "password").await;
    let invalid = vec![json!({"message": "Invalid credentials"})];
    let unknown = auth.signin("nobody@test.com", "password").await;
    assert!(unknown.headers.get("set-cookie").is_none());
    assert_eq!(unknown.errors(400), invalid);
    assert_eq!(
        auth.signin("test@test.com", "wrong-password")
            .await
            .errors(400),
        invalid
    );
}

#[tokio::test]
async fn signin_validates_each_field() {
    let auth = Auth::start().await;
    assert_eq!(
        auth.signin("not-an-email", "password").await.errors(400),
        vec![json!({"message": "Email must be valid", "field": "email"})]
    );
    for empty in [json!(""), json!("   "), json!(null)] {
        let response = auth
            .post(
                "/api/users/signin",
                json!({"email": "test@test.com", "password": empty}),
            )
            .await;
        assert_eq!(
            response.errors(400),
            vec![json!({"message": "You must supply a password", "field": "password"})]
        );
    }
    assert_eq!(
        auth.post("/api/users/signin", json!({})).await.errors(400),
        vec![
            json!({"message": "Email must be valid", "field": "email"}),
            json!({"message": "You must supply a password", "field": "password"})
        ]
    );
}
