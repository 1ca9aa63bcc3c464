//! The client's own rules, with the API out of reach: what a browser gets when the
//! services are down, when it is not signed in, and when a form comes from elsewhere.
//! (The pages working against the real services are proven in a real browser:
//! e2e/browser/.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

use client::api::ApiUrls;
use reqwest::redirect::Policy;
use testkit::TestServer;

/// The client, calling an API on a port where nothing listens.
async fn client_without_api() -> (TestServer, reqwest::Client) {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let config = client::Config::for_tests(ApiUrls::all(&dead));
    let server = TestServer::serve(config).await;
    server.ready().await;
    kit::install_tls_provider();
    let http = reqwest::Client::builder()
        .redirect(Policy::none())
        .build()
        .unwrap();
    (server, http)
}

#[tokio::test]
async fn an_api_that_is_down_gives_a_friendly_page() {
    let (server, http) = client_without_api().await;
    let response = http
        .get(server.url("/"))
        .header("cookie", "session=abc")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let page = response.text().await.unwrap();
    assert!(page.contains("reach the ticket service"), "{page}");
    assert!(page.contains("GitTix"));
}

#[tokio::test]
async fn pages_that_need_a_user_send_visitors_to_sign_in() {
    let (server, http) = client_without_api().await;
    for path in [
        "/tickets/new",
        "/orders",
        "/orders/8d0e9a4c-43e4-4a6c-9b7b-2f5c2f7b7a10",
    ] {
        let response = http.get(server.url(path)).send().await.unwrap();
        assert_eq!(response.status(), 303, "{path}");
        assert_eq!(response.headers()["location"], "/auth/signin", "{path}");
    }
}

#[tokio::test]
async fn pages_carry_a_content_security_policy_of_their_own_assets() {
    let (server, http) = client_without_api().await;
    let response = http.get(server.url("/auth/signin")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let policy = response.headers()["content-security-policy"]
        .to_str()
        .unwrap();
    assert!(policy.contains("default-src 'self'"), "{policy}");
    assert!(policy.contains("script-src 'self';"), "{policy}");
    assert!(!policy.contains("unsafe-inline"), "{policy}");
    assert!(
        !policy.contains("stripe"),
        "no Stripe without a publishable key"
    );
    let page = response.text().await.unwrap();
    assert!(!page.contains("<script>"), "no inline script");
    for asset in ["/assets/app.css", "/assets/app.js"] {
        assert_eq!(
            http.get(server.url(asset)).send().await.unwrap().status(),
            200
        );
    }
}

#[tokio::test]
async fn a_form_posted_from_another_site_is_refused() {
    let (server, http) = client_without_api().await;
    let host = server.address.to_string();
    let post = |origin: Option<String>| {
        let mut request = http
            .post(server.url("/auth/signup"))
            .form(&[("email", "a@b.co"), ("password", "password")]);
        if let Some(origin) = origin {
            request = request.header("origin", origin);
        }
        request.send()
    };
    assert_eq!(post(None).await.unwrap().status(), 403, "no origin");
    let evil = post(Some("https://evil.example".into())).await.unwrap();
    assert_eq!(evil.status(), 403);
    assert!(
        evil.text()
            .await
            .unwrap()
            .contains("sent from another site")
    );
    // From this site it goes through (to the API, which is down here).
    let ours = post(Some(format!("http://{host}"))).await.unwrap();
    assert_eq!(ours.status(), 503);
}

#[tokio::test]
async fn unknown_pages_are_html_and_unknown_api_routes_json() {
    let (server, http) = client_without_api().await;
    let page = http.get(server.url("/no/such/page")).send().await.unwrap();
    assert_eq!(page.status(), 404);
    assert!(page.text().await.unwrap().contains("Not found"));
    let api = http.get(server.url("/api/nothing")).send().await.unwrap();
    assert_eq!(api.status(), 404);
    assert_eq!(
        api.text().await.unwrap(),
        r#"{"errors":[{"message":"Not Found"}]}"#
    );
}

/// A stand-in for auth that refuses every sign-in and records the value of `header` on
/// each one it gets; and the client, calling it.
async fn client_with_recording_auth(
    header: &'static str,
) -> (
    TestServer,
    TestServer,
    std::sync::Arc<std::sync::Mutex<Vec<String>>>,
) {
    use axum::http::HeaderMap;
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let recorded = std::sync::Arc::clone(&seen);
    let auth = TestServer::start(move |listener, stop| async move {
        let app = axum::Router::new().route(
            "/api/users/signin",
            axum::routing::post(move |headers: HeaderMap| async move {
                let value = headers
                    .get(header)
                    .map(|v| v.to_str().unwrap().to_owned())
                    .unwrap_or_default();
                recorded.lock().unwrap().push(value);
                (
                    axum::http::StatusCode::BAD_REQUEST,
                    axum::Json(serde_json::json!({"errors": [{"message": "Invalid credentials"}]})),
                )
            }),
        );
        axum::serve(listener, app)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await?;
        Ok(())
    })
    .await;
    let config = client::Config::for_tests(ApiUrls::all(&auth.url("")));
    let server = TestServer::serve(config).await;
    server.ready().await;
    kit::install_tls_provider();
    (server, auth, seen)
}

/// Sign-ins through the web client reach auth with the browser's address (the one the
/// ingress saw), not the client's own: auth's per-address limits count browsers.
#[tokio::test]
async fn sign_ins_are_sent_on_with_the_browsers_address() {
    let (server, _auth, seen) = client_with_recording_auth("x-forwarded-for").await;
    let http = reqwest::Client::new();
    let answer = http
        .post(server.url("/auth/signin"))
        .header("origin", server.url(""))
        .header("x-forwarded-for", "1.2.3.4, 203.0.113.5")
        .form(&[("email", "a@b.co"), ("password", "wrong")])
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 400);
    assert_eq!(*seen.lock().unwrap(), ["203.0.113.5"]);
}

/// With traces on, the client's calls to the API continue the page request's trace: the
/// API sees a `traceparent` of the browser's trace, whose parent is the client's span.
#[tokio::test]
async fn the_clients_api_calls_carry_the_page_requests_trace() {
    let receiver = testkit::otlp::OtlpReceiver::start().await;
    kit::telemetry::install_exporting_traces_to(&receiver.url);
    let (server, _auth, seen) = client_with_recording_auth("traceparent").await;
    let trace_id = "0af7651916cd43dd8448eb211c80319c";
    let answer = reqwest::Client::new()
        .post(server.url("/auth/signin"))
        .header("origin", server.url(""))
        .header("traceparent", format!("00-{trace_id}-b7ad6b7169203331-01"))
        .form(&[("email", "a@b.co"), ("password", "wrong")])
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 400);
    let spans = receiver
        .wait_for("the client's span", |spans| {
            spans.iter().any(|s| s.name == "POST /auth/signin")
        })
        .await;
    let page = spans
        .iter()
        .find(|s| s.name == "POST /auth/signin")
        .unwrap();
    assert_eq!(page.trace_id, trace_id);
    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        seen,
        [format!("00-{trace_id}-{}-01", page.span_id)],
        "the API call's parent is the client's span"
    );
}
