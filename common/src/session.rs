//! The session: a cookie named `session` holding base64(`{"jwt":"<HS256 token>"}`),
//! the format of the `cookie-session` npm package the original service used
//! ([docs/api.md § Session cookie](../../docs/api.md#session-cookie)).
//!
//! Any service reads it with [`CurrentUser`] (optional) or [`AuthUser`] (required);
//! only auth writes it, with [`SessionKeys::issue`] and [`SessionKeys::cookie`].
//! A missing, malformed, tampered, wrongly signed or expired session is simply "no
//! current user".

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{FromRef, FromRequestParts};
use axum::http::HeaderValue;
use axum::http::request::Parts;
use axum_extra::extract::CookieJar;
use axum_extra::extract::cookie::{Cookie, SameSite};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::Error;
use crate::config::Secret;

pub const COOKIE_NAME: &str = "session";

/// The `Set-Cookie` value that signs out, exactly as the original sends it.
pub const CLEAR_COOKIE: &str = "session=; path=/; expires=Thu, 01 Jan 1970 00:00:00 GMT; httponly";

/// The claims of a session token, and the `currentUser` of `GET /api/users/currentuser`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct UserClaims {
    pub id: Uuid,
    pub email: String,
    /// Issued at, seconds since the Unix epoch.
    pub iat: i64,
    /// Expires at, seconds since the Unix epoch.
    pub exp: i64,
}

#[derive(Serialize, Deserialize)]
struct CookieBody {
    jwt: String,
}

/// Everything needed to read and write sessions; cheap to clone.
#[derive(Clone)]
pub struct SessionKeys(Arc<Keys>);

struct Keys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    ttl: Duration,
    secure: bool,
}

impl SessionKeys {
    /// `secure` adds the `Secure` attribute to the cookie (off only for plain-http local use).
    pub fn new(jwt_key: &Secret, ttl: Duration, secure: bool) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 5;
        validation.set_required_spec_claims(&["exp"]);
        validation.validate_aud = false;
        Self(Arc::new(Keys {
            encoding: EncodingKey::from_secret(jwt_key.expose().as_bytes()),
            decoding: DecodingKey::from_secret(jwt_key.expose().as_bytes()),
            validation,
            ttl,
            secure,
        }))
    }

    /// Keys that only read sessions (every service but auth).
    pub fn reader(jwt_key: &Secret) -> Self {
        Self::new(jwt_key, Duration::ZERO, true)
    }

    /// Signs a token for this user, valid from now for the session lifetime.
    pub fn issue(&self, id: Uuid, email: &str) -> anyhow::Result<(String, UserClaims)> {
        let iat = chrono::Utc::now().timestamp();
        let ttl = i64::try_from(self.0.ttl.as_secs()).unwrap_or(i64::MAX);
        let claims = UserClaims {
            id,
            email: email.to_owned(),
            iat,
            exp: iat.saturating_add(ttl),
        };
        Ok((self.sign(&claims)?, claims))
    }

    /// Signs arbitrary claims (tests use it to forge expired sessions).
    pub fn sign(&self, claims: &UserClaims) -> anyhow::Result<String> {
        Ok(jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            claims,
            &self.0.encoding,
        )?)
    }

    /// Verifies a token: signature, algorithm and expiry.
    pub fn verify(&self, token: &str) -> Option<UserClaims> {
        jsonwebtoken::decode::<UserClaims>(token, &self.0.decoding, &self.0.validation)
            .ok()
            .map(|data| data.claims)
    }

    /// The `Set-Cookie` value that stores this token.
    pub fn cookie(&self, token: &str) -> anyhow::Result<HeaderValue> {
        let cookie = Cookie::build((COOKIE_NAME, encode_cookie(token)))
            .path("/")
            .http_only(true)
            .same_site(SameSite::Lax)
            .secure(self.0.secure)
            .build();
        Ok(HeaderValue::from_str(&cookie.to_string())?)
    }

    /// The user of a `session` cookie value, if it is valid.
    pub fn user_from_cookie(&self, value: &str) -> Option<UserClaims> {
        self.verify(&decode_cookie(value)?)
    }
}

/// base64(`{"jwt": token}`), as `cookie-session` stores it.
pub fn encode_cookie(token: &str) -> String {
    let body = serde_json::json!({ "jwt": token });
    STANDARD.encode(body.to_string())
}

/// The token inside a `session` cookie value.
pub fn decode_cookie(value: &str) -> Option<String> {
    let json = STANDARD.decode(value.trim()).ok()?;
    serde_json::from_slice::<CookieBody>(&json)
        .ok()
        .map(|body| body.jwt)
}

fn user_of(parts: &Parts, keys: &SessionKeys) -> Option<UserClaims> {
    let jar = CookieJar::from_headers(&parts.headers);
    keys.user_from_cookie(jar.get(COOKIE_NAME)?.value())
}

/// The signed-in user, if any. Never rejects.
#[derive(Debug, Clone)]
pub struct CurrentUser(pub Option<UserClaims>);

impl<S> FromRequestParts<S> for CurrentUser
where
    SessionKeys: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(user_of(parts, &SessionKeys::from_ref(state))))
    }
}

/// The signed-in user; without a valid session the request is refused with
/// 401 `Not authorized`.
#[derive(Debug, Clone)]
pub struct AuthUser(pub UserClaims);

impl<S> FromRequestParts<S> for AuthUser
where
    SessionKeys: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Error> {
        user_of(parts, &SessionKeys::from_ref(state))
            .map(Self)
            .ok_or(Error::NotAuthorized)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(secret: &str) -> SessionKeys {
        SessionKeys::new(&Secret::new(secret), Duration::from_secs(3600), true)
    }

    #[test]
    fn a_cookie_round_trips() {
        let keys = keys("k1");
        let id = Uuid::new_v4();
        let (token, claims) = keys.issue(id, "a@b.co").unwrap();
        assert_eq!(claims.exp - claims.iat, 3600);
        let user = keys.user_from_cookie(&encode_cookie(&token)).unwrap();
        assert_eq!(user, claims);
        assert_eq!(user.id, id);
    }

    #[test]
    fn the_cookie_is_the_cookie_session_format() {
        let encoded = encode_cookie("abc.def.ghi");
        let json = STANDARD.decode(&encoded).unwrap();
        assert_eq!(json, br#"{"jwt":"abc.def.ghi"}"#);
        assert_eq!(decode_cookie(&encoded).as_deref(), Some("abc.def.ghi"));
    }

    #[test]
    fn bad_sessions_are_no_user() {
        let keys = keys("k1");
        let (token, mut claims) = keys.issue(Uuid::new_v4(), "a@b.co").unwrap();
        let other = self::keys("k2");
        assert!(
            other.user_from_cookie(&encode_cookie(&token)).is_none(),
            "wrong key"
        );
        assert!(keys.user_from_cookie("garbage!").is_none());
        assert!(
            keys.user_from_cookie(&STANDARD.encode("{\"jwt\":5}"))
                .is_none()
        );
        let tampered = format!("{}x", token);
        assert!(keys.user_from_cookie(&encode_cookie(&tampered)).is_none());
        claims.exp = claims.iat - 60;
        let expired = keys.sign(&claims).unwrap();
        assert!(keys.user_from_cookie(&encode_cookie(&expired)).is_none());
    }

    #[test]
    fn set_cookie_has_the_documented_attributes() {
        let cookie = keys("k").cookie("t").unwrap();
        let text = cookie.to_str().unwrap();
        assert!(text.starts_with("session="));
        for attribute in ["Path=/", "HttpOnly", "SameSite=Lax", "Secure"] {
            assert!(text.contains(attribute), "{text} lacks {attribute}");
        }
        let plain = SessionKeys::new(&Secret::new("k"), Duration::from_secs(1), false);
        assert!(
            !plain
                .cookie("t")
                .unwrap()
                .to_str()
                .unwrap()
                .contains("Secure")
        );
    }
}
