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

/// A page on another site posting a plain-text form here (no preflight) must not sign
/// the user out; the site's own pages, and callers without an `Origin`, may.
#[tokio::test]
async fn signout_refuses_a_foreign_origin() {
    let auth = Auth::start().await;
    let cookie = cookie_of(&auth.signup("origin@test.com", "password").await.headers);
    let url = auth.server.url("/api/users/signout");
    let host = url
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    let post = |origin: Option<String>| {
        let mut request = auth
            .server
            .client
            .post(&url)
            .header("cookie", &cookie)
            .header("content-type", "text/plain")
            .body("x");
        if let Some(origin) = origin {
            request = request.header("origin", origin);
        }
        request.send()
    };
    let refused = post(Some("https://evil.example".into())).await.unwrap();
    assert_eq!(refused.status(), 403);
    assert!(refused.headers().get("set-cookie").is_none());
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(
        body,
        json!({"errors": [{"message": "Cross-site request refused"}]})
    );
    for origin in [Some(format!("http://{host}")), None] {
        let answer = post(origin.clone()).await.unwrap();
        assert_eq!(answer.status(), 200, "{origin:?}");
        assert!(answer.headers().get("set-cookie").is_some());
    }
}
