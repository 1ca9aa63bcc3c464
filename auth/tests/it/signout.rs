use serde_json::json;
use testkit::cookie_of;

use crate::Auth;

#[tokio::test]
async fn signout_clears_the_cookie_exactly_as_the_original() {
    let auth = Auth::start().await;
    let cookie = cookie_of(&auth.signup("test@test.com", "password").await.headers);
    let response = auth
        .server
        .call(
            reqwest::Method::POST,
            "/api/users/signout",
            Some(&cookie),
            None,
        )
        .await;
    assert_eq!(
        response.headers["set-cookie"],
        "session=; path=/; expires=Thu, 01 Jan 1970 00:00:00 GMT; httponly"
    );
    assert_eq!(response.expect(200), json!({}));
}
