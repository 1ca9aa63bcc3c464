use serde_json::{Value, json};
use testkit::TestResponse;

use crate::Auth;

#[tokio::test]
async fn unknown_routes_are_json_404s() {
    let auth = Auth::start().await;
    let not_found = vec![json!({"message": "Not Found"})];
    for path in ["/api/users/nope", "/", "/api/tickets"] {
        let response = auth.server.get(path, None).await;
        assert_eq!(response.errors(404), not_found, "{path}");
    }
    // A known route with another method is unknown too, as in the original.
    let response = auth.server.delete("/api/users/signup", None).await;
    assert_eq!(response.errors(404), not_found);
}

#[tokio::test]
async fn malformed_bodies_are_json_400s() {
    let auth = Auth::start().await;
    let client = &auth.server.client;
    let send = |body: &'static str| {
        client
            .post(auth.server.url("/api/users/signup"))
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    for body in [
        "{not json",
        "",
        "[1,2]",
        "\"text\"",
        "{\"email\": \"a@b.co\"",
    ] {
        let list = TestResponse::read(send(body).await.unwrap())
            .await
            .errors(400);
        assert_eq!(list.len(), 1, "{body}");
        assert!(list[0].get("field").is_none());
        let message = list[0]["message"].as_str().unwrap();
        assert!(message.starts_with("Request body"), "{body}: {message}");
        assert!(!message.contains("line"), "no parser internals: {message}");
    }
}

#[tokio::test]
async fn wrong_content_type_and_oversized_bodies_get_the_error_body() {
    let auth = Auth::start().await;
    let client = &auth.server.client;
    let response = client
        .post(auth.server.url("/api/users/signup"))
        .header("content-type", "text/plain")
        .body(r#"{"email":"a@b.co","password":"password"}"#)
        .send()
        .await
        .unwrap();
    let list = TestResponse::read(response).await.errors(415);
    assert_eq!(
        list,
        vec![json!({"message": "Content-Type must be application/json"})]
    );

    let huge = json!({"email": "a@b.co", "password": "x".repeat(20 * 1024)});
    let response = client
        .post(auth.server.url("/api/users/signup"))
        .json(&huge)
        .send()
        .await
        .unwrap();
    let list = TestResponse::read(response).await.errors(413);
    assert_eq!(list, vec![json!({"message": "Request body is too large"})]);
}

#[tokio::test]
async fn operations_endpoints_and_openapi() {
    let auth = Auth::start().await;
    let client = &auth.server.client;
    let get = |path: &str| client.get(auth.server.url(path)).send();
    assert_eq!(auth.server.ops("/healthz").await.status, 200);
    assert_eq!(auth.server.ops("/readyz").await.status, 200);
    for path in ["/healthz", "/readyz", "/metrics"] {
        let on_api = get(path).await.unwrap().status();
        assert_eq!(on_api, 404, "{path} is not served where the ingress routes");
    }

    auth.signup("metrics@test.com", "password").await;
    let metrics = auth.server.metrics().await;
    assert!(metrics.contains("http_requests_total"), "{metrics}");
    assert!(metrics.contains("route=\"/api/users/signup\""), "{metrics}");
    assert!(
        metrics.contains("http_request_duration_seconds_bucket"),
        "{metrics}"
    );

    let doc: Value = get("/api/users/openapi.json")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for path in [
        "/api/users/signup",
        "/api/users/signin",
        "/api/users/signout",
        "/api/users/currentuser",
    ] {
        assert!(doc["paths"].get(path).is_some(), "{path} is documented");
    }
}

/// A stop lets the requests in flight finish (sign-ins, each hashing for a while on
/// the two hashing threads, queued behind one another) and returns Ok.
#[tokio::test]
async fn stops_gracefully_finishing_the_requests_in_flight() {
    let auth = Auth::start().await;
    assert_eq!(auth.signup("before@test.com", "password").await.status, 201);
    let signins: Vec<_> = (0..8)
        .map(|_| {
            let request = auth
                .server
                .client
                .post(auth.server.url("/api/users/signin"))
                .json(&json!({"email": "before@test.com", "password": "password"}));
            tokio::spawn(async move { request.send().await.map(|r| r.status()) })
        })
        .collect();
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let Auth {
        server, database, ..
    } = auth;
    server.stop().await.expect("a graceful stop returns Ok");
    for signin in signins {
        let status = signin.await.unwrap().expect("answered, not cut off");
        assert_eq!(status, 200, "a sign-in in flight at the stop finishes");
    }
    drop(database);
}

/// `/readyz` is 200 while the database answers and 503 once it does not; `/healthz`
/// stays 200 (the process itself is fine).
#[tokio::test]
async fn readiness_follows_the_database() {
    let Auth {
        server,
        database,
        nats: _nats,
    } = Auth::start().await;
    server.ready().await;
    assert_eq!(server.ops("/readyz").await.status, 200);
    drop(database); // dropped WITH (FORCE): its connections are cut, and it is gone
    testkit::wait_until("/readyz to fail without the database", || async {
        server.ops("/readyz").await.status == 503
    })
    .await;
    assert_eq!(server.ops("/healthz").await.status, 200);
}
