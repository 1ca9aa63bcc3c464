use serde_json::{Value, json};

use crate::{Auth, cookie_of};

#[tokio::test]
async fn signout_clears_the_cookie_exactly_as_the_original() {
    let auth = Auth::start().await;
    let cookie = cookie_of(&auth.signup("test@test.com", "password").await);
    let response = auth
        .server
        .client
        .post(auth.server.url("/api/users/signout"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["set-cookie"],
        "session=; path=/; expires=Thu, 01 Jan 1970 00:00:00 GMT; httponly"
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body, json!({}));
}
