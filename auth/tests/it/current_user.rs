use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use common::session::{SessionKeys, UserClaims};
use jsonwebtoken::{EncodingKey, Header};
use kit::config::Secret;
use serde_json::{Value, json};
use std::time::Duration;
use testkit::JWT_KEY;
use uuid::Uuid;

use testkit::cookie_of;

use crate::Auth;

#[tokio::test]
async fn current_user_reports_the_signed_in_user_with_iat_and_exp() {
    let auth = Auth::start().await;
    let signup = auth.signup("test@test.com", "password").await;
    let cookie = cookie_of(&signup.headers);
    let user: Value = signup.body.clone();
    let current = &auth.current_user(Some(&cookie)).await["currentUser"];
    assert_eq!(current["id"], user["id"]);
    assert_eq!(current["email"], "test@test.com");
    let (iat, exp) = (
        current["iat"].as_i64().unwrap(),
        current["exp"].as_i64().unwrap(),
    );
    assert_eq!(exp - iat, 3600, "the configured session lifetime");
    assert!((chrono::Utc::now().timestamp() - iat).abs() < 60);
}

#[tokio::test]
async fn current_user_is_null_without_a_valid_session() {
    let auth = Auth::start().await;
    let null = json!({"currentUser": null});
    assert_eq!(auth.current_user(None).await, null);
    for garbage in [
        "session=",
        "session=garbage",
        "session=%%%",
        "other=1",
        "session=eyJqd3QiOjF9",
    ] {
        assert_eq!(auth.current_user(Some(garbage)).await, null, "{garbage}");
    }

    let id = Uuid::new_v4();
    let now = chrono::Utc::now().timestamp();
    let claims = UserClaims {
        id,
        email: "a@b.co".into(),
        iat: now - 7200,
        exp: now - 3600,
    };
    let keys = SessionKeys::new(&Secret::new(JWT_KEY), Duration::from_secs(60), false);
    let expired = keys.sign(&claims).unwrap();
    let cookie = format!("session={}", common::session::encode_cookie(&expired));
    assert_eq!(auth.current_user(Some(&cookie)).await, null, "expired");

    let other_keys = SessionKeys::new(&Secret::new("another-key"), Duration::from_secs(60), false);
    let (foreign, _) = other_keys.issue(id, "a@b.co").unwrap();
    let cookie = format!("session={}", common::session::encode_cookie(&foreign));
    assert_eq!(
        auth.current_user(Some(&cookie)).await,
        null,
        "signed with another key"
    );

    let (token, _) = keys.issue(id, "a@b.co").unwrap();
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    let forged_claims =
        json!({"id": Uuid::new_v4(), "email": "evil@b.co", "iat": now, "exp": now + 3600});
    parts[1] = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(forged_claims.to_string());
    let cookie = format!(
        "session={}",
        common::session::encode_cookie(&parts.join("."))
    );
    assert_eq!(
        auth.current_user(Some(&cookie)).await,
        null,
        "tampered payload"
    );
}

/// The original service (Node.js, `cookie-session` + `jsonwebtoken`) writes
/// base64(JSON.stringify({jwt})) with an HS256 token; such a cookie must be accepted,
/// and ours must decode to that same format.
#[tokio::test]
async fn cookies_interoperate_with_the_original_format() {
    let auth = Auth::start().await;
    let id = Uuid::new_v4();
    let now = chrono::Utc::now().timestamp();
    let claims = json!({"id": id, "email": "node@test.com", "iat": now, "exp": now + 600});
    let token = jsonwebtoken::encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(JWT_KEY.as_bytes()),
    )
    .unwrap();
    let node_cookie = format!(
        "session={}",
        STANDARD.encode(format!("{{\"jwt\":\"{token}\"}}"))
    );
    let current = &auth.current_user(Some(&node_cookie)).await["currentUser"];
    assert_eq!(current["id"], json!(id));
    assert_eq!(current["email"], "node@test.com");

    let ours = cookie_of(&auth.signup("rust@test.com", "password").await.headers);
    let value = ours.strip_prefix("session=").unwrap();
    let decoded: Value = serde_json::from_slice(&STANDARD.decode(value).unwrap()).unwrap();
    let jwt = decoded["jwt"].as_str().unwrap();
    assert_eq!(decoded.as_object().unwrap().len(), 1);
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.validate_aud = false;
    let data = jsonwebtoken::decode::<Value>(
        jwt,
        &jsonwebtoken::DecodingKey::from_secret(JWT_KEY.as_bytes()),
        &validation,
    )
    .unwrap();
    assert_eq!(data.claims["email"], "rust@test.com");
    for claim in ["id", "iat", "exp"] {
        assert!(data.claims.get(claim).is_some(), "missing {claim}");
    }
}
