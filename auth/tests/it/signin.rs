use serde_json::{Value, json};

use crate::{Auth, cookie_of, errors};

#[tokio::test]
async fn signin_with_the_right_password_sets_the_session() {
    let auth = Auth::start().await;
    auth.signup("test@test.com", "password").await;
    let response = auth.signin("test@test.com", "password").await;
    assert_eq!(response.status(), 200);
    let cookie = cookie_of(&response);
    assert!(cookie.starts_with("session="));
    let user: Value = response.json().await.unwrap();
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
    assert!(unknown.headers().get("set-cookie").is_none());
    assert_eq!(errors(unknown, 400).await, invalid);
    assert_eq!(
        errors(auth.signin("test@test.com", "wrong-password").await, 400).await,
        invalid
    );
}

#[tokio::test]
async fn signin_validates_each_field() {
    let auth = Auth::start().await;
    assert_eq!(
        errors(auth.signin("not-an-email", "password").await, 400).await,
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
            errors(response, 400).await,
            vec![json!({"message": "You must supply a password", "field": "password"})]
        );
    }
    assert_eq!(
        errors(auth.post("/api/users/signin", json!({})).await, 400).await,
        vec![
            json!({"message": "Email must be valid", "field": "email"}),
            json!({"message": "You must supply a password", "field": "password"})
        ]
    );
}
