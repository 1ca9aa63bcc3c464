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

/// Signing out revokes the token: this replica refuses it at once, another replica
/// (same database and bus) within a second, and one started afterwards from its first
/// request; the user's other session is untouched.
#[tokio::test]
async fn signout_revokes_the_session_on_every_replica() {
    let auth = Auth::start().await;
    let other_replica =
        testkit::TestServer::serve(auth::Config::for_tests(&auth.database.url, &auth.nats.url))
            .await;
    let cookie = cookie_of(&auth.signup("revoked@test.com", "password").await.headers);
    let second = cookie_of(&auth.signin("revoked@test.com", "password").await.headers);
    assert!(
        !other_replica
            .get("/api/users/currentuser", Some(&cookie))
            .await
            .expect(200)["currentUser"]
            .is_null()
    );
    let signed_out = std::time::Instant::now();
    auth.server
        .post("/api/users/signout", Some(&cookie), json!({}))
        .await
        .expect(200);
    assert!(
        auth.current_user(Some(&cookie)).await["currentUser"].is_null(),
        "this replica"
    );
    loop {
        let seen = other_replica
            .get("/api/users/currentuser", Some(&cookie))
            .await
            .expect(200);
        if seen["currentUser"].is_null() {
            break;
        }
        assert!(
            signed_out.elapsed() < std::time::Duration::from_secs(1),
            "the other replica still accepts it"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let late =
        testkit::TestServer::serve(auth::Config::for_tests(&auth.database.url, &auth.nats.url))
            .await;
    assert!(
        late.get("/api/users/currentuser", Some(&cookie))
            .await
            .expect(200)["currentUser"]
            .is_null(),
        "a replica started afterwards"
    );
    for server in [&auth.server, &other_replica, &late] {
        let user = server
            .get("/api/users/currentuser", Some(&second))
            .await
            .expect(200);
        assert_eq!(
            user["currentUser"]["email"], "revoked@test.com",
            "the other session goes on"
        );
    }
}
