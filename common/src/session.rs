//! The session: a cookie named `session` holding base64(`{"jwt":"<HS256 token>"}`),
//! the format of the `cookie-session` npm package the original service used
//! (`docs/api.md` § Session cookie).
//!
//! Any service reads it with [`CurrentUser`] (optional) or [`AuthUser`] (required);
//! only auth writes it, with [`SessionKeys::issue`] and [`SessionKeys::cookie`].
//! A missing, malformed, tampered, wrongly signed, expired, not yet valid (`nbf` in
//! the future, or issued in the future) or revoked session is simply "no current user".
//!
//! Signing out revokes the token: auth announces its id (`session.revoked`), every
//! replica of every service that reads sessions learns of it from the bus
//! ([`SessionKeys::revoke`]) and refuses the token, remembered or not, until it expires.
//!
//! Every request of a signed-in user carries the same cookie, so a verified session is
//! remembered by its exact cookie value (the signature, once checked, cannot change)
//! and later requests only check its expiry: verifying an HS256 token and parsing its
//! JSON cost about as much as the rest of a small request (docs/benchmarks.md).

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::{FromRef, FromRequestParts};
use axum::http::header::COOKIE;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue};
use axum_extra::extract::cookie::{Cookie, SameSite};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::Error;
use crate::Secret;

pub const COOKIE_NAME: &str = "session";

/// Seconds of clock skew tolerated on `exp`, `nbf` and `iat`.
const LEEWAY: u64 = 5;
/// Verified sessions remembered; the memory is forgotten all at once when full.
const REMEMBERED: usize = 4096;
/// Revocations held before the expired ones are first forgotten.
const REVOKED_PRUNE_FROM: usize = 1024;

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

/// The claims as signed: the user's, and the token's id (`jti`), by which signing out
/// revokes it. Tokens without one (signed by the original, or by a test) are accepted
/// and are revoked by their signature instead.
#[derive(Serialize, Deserialize)]
struct TokenClaims {
    #[serde(flatten)]
    user: UserClaims,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    jti: Option<String>,
}

/// A verified session: who it is, and the token's id (what a sign-out revokes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub user: UserClaims,
    pub token_id: String,
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
    /// Sessions already verified, by cookie value.
    verified: RwLock<HashMap<Box<str>, Session>>,
    /// Revoked token ids and their expiry.
    revoked: RwLock<Revoked>,
}

#[derive(Default)]
struct Revoked {
    expiries: HashMap<Box<str>, i64>,
    /// The size at which the expired ones are forgotten next.
    prune_at: usize,
}

impl SessionKeys {
    /// `secure` adds the `Secure` attribute to the cookie (off only for plain-http local use).
    pub fn new(jwt_key: &Secret, ttl: Duration, secure: bool) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = LEEWAY;
        validation.set_required_spec_claims(&["exp"]);
        validation.validate_aud = false;
        validation.validate_nbf = true;
        Self(Arc::new(Keys {
            encoding: EncodingKey::from_secret(jwt_key.expose().as_bytes()),
            decoding: DecodingKey::from_secret(jwt_key.expose().as_bytes()),
            validation,
            ttl,
            secure,
            verified: RwLock::default(),
            revoked: RwLock::default(),
        }))
    }

    /// Keys that only read sessions (every service but auth).
    pub fn reader(jwt_key: &Secret) -> Self {
        Self::new(jwt_key, Duration::ZERO, true)
    }

    /// Signs a token for this user, valid from now for the session lifetime, with a
    /// fresh token id.
    pub fn issue(&self, id: Uuid, email: &str) -> anyhow::Result<(String, UserClaims)> {
        let iat = chrono::Utc::now().timestamp();
        let ttl = i64::try_from(self.0.ttl.as_secs()).unwrap_or(i64::MAX);
        let claims = TokenClaims {
            user: UserClaims {
                id,
                email: email.to_owned(),
                iat,
                exp: iat.saturating_add(ttl),
            },
            jti: Some(Uuid::new_v4().simple().to_string()),
        };
        let token =
            jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.0.encoding)?;
        Ok((token, claims.user))
    }

    /// Signs arbitrary claims, without a token id (tests use it to forge sessions as
    /// the original signed them, or expired ones).
    pub fn sign(&self, claims: &UserClaims) -> anyhow::Result<String> {
        Ok(jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            claims,
            &self.0.encoding,
        )?)
    }

    /// Verifies a token: signature, algorithm, expiry, `nbf`, and an `iat` that is
    /// not in the future (a token from the future was not issued by this clock).
    /// Revocation is not checked here but by [`SessionKeys::session_from_cookie`].
    pub fn verify(&self, token: &str) -> Option<Session> {
        let claims =
            jsonwebtoken::decode::<TokenClaims>(token, &self.0.decoding, &self.0.validation)
                .ok()?
                .claims;
        let latest = i64::try_from(unix_now().saturating_add(LEEWAY)).unwrap_or(i64::MAX);
        if claims.user.iat > latest {
            return None;
        }
        let token_id = match claims.jti {
            Some(jti) => jti,
            None => token.rsplit('.').next().unwrap_or_default().to_owned(),
        };
        Some(Session {
            user: claims.user,
            token_id,
        })
    }

    /// Refuses the token `token_id` from now until `exp` (its own expiry), in this
    /// process: sessions remembered as verified included.
    pub fn revoke(&self, token_id: &str, exp: i64) {
        let mut revoked = self
            .0
            .revoked
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if revoked.expiries.len() >= revoked.prune_at.max(REVOKED_PRUNE_FROM) {
            let now = i64::try_from(unix_now().saturating_sub(LEEWAY)).unwrap_or(i64::MAX);
            revoked.expiries.retain(|_, exp| *exp >= now);
            revoked.prune_at = revoked.expiries.len() * 2;
        }
        revoked.expiries.insert(token_id.into(), exp);
    }

    /// Whether the token `token_id` was revoked.
    pub fn is_revoked(&self, token_id: &str) -> bool {
        self.0
            .revoked
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .expiries
            .contains_key(token_id)
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

    /// The user of a `session` cookie value, if it is valid and not revoked.
    pub fn user_from_cookie(&self, value: &str) -> Option<UserClaims> {
        self.session_from_cookie(value).map(|session| session.user)
    }

    /// The session of a `session` cookie value, if it is valid and not revoked.
    pub fn session_from_cookie(&self, value: &str) -> Option<Session> {
        let verified = &self.0.verified;
        let known = verified
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(value)
            .map(|session| (!is_expired(&session.user)).then(|| session.clone()));
        let session = match known {
            Some(session) => session?,
            None => {
                let session = self.verify(&decode_cookie(value)?)?;
                let mut verified = verified.write().unwrap_or_else(PoisonError::into_inner);
                if verified.len() >= REMEMBERED {
                    *verified = HashMap::new();
                }
                verified.insert(value.into(), session.clone());
                session
            }
        };
        (!self.is_revoked(&session.token_id)).then_some(session)
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

/// Whether `exp` has passed (with the leeway `verify` allows).
fn is_expired(claims: &UserClaims) -> bool {
    let now = i64::try_from(unix_now().saturating_sub(LEEWAY)).unwrap_or(i64::MAX);
    claims.exp < now
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
    keys.user_from_cookie(&session_cookie(&parts.headers)?)
}

/// The session of a request's cookie, if it is valid and not revoked (what sign-out
/// revokes).
pub fn session_of(headers: &HeaderMap, keys: &SessionKeys) -> Option<Session> {
    keys.session_from_cookie(&session_cookie(headers)?)
}

/// The value of a request's `session` cookie (the last one, as a cookie jar keeps it),
/// read without parsing the other cookies (or copying it, unless it is
/// percent-encoded).
fn session_cookie(headers: &HeaderMap) -> Option<Cow<'_, str>> {
    let (_, value) = headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.split_once('='))
        .rfind(|(name, _)| name.trim() == COOKIE_NAME)?;
    let value = value.trim();
    if value.contains('%') {
        let decoded = Cookie::parse_encoded(format!("{COOKIE_NAME}={value}")).ok()?;
        Some(Cow::Owned(decoded.value().to_owned()))
    } else {
        Some(Cow::Borrowed(value))
    }
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
        // Remembered by `keys` from now on: nothing below may be taken for it.
        assert!(keys.user_from_cookie(&encode_cookie(&token)).is_some());
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
    fn sessions_not_yet_valid_are_no_user() {
        let keys = keys("k1");
        let now = chrono::Utc::now().timestamp();
        let id = Uuid::new_v4();
        let sign = |claims: serde_json::Value| {
            let token =
                jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &keys.0.encoding)
                    .unwrap();
            encode_cookie(&token)
        };
        let claims = |iat: i64, nbf: Option<i64>| {
            let mut claims = serde_json::json!({
                "id": id, "email": "a@b.co", "iat": iat, "exp": now + 3600,
            });
            if let Some(nbf) = nbf {
                claims["nbf"] = nbf.into();
            }
            claims
        };
        // Valid from now (within the leeway): a user.
        assert!(
            keys.user_from_cookie(&sign(claims(now, Some(now + 3))))
                .is_some()
        );
        // Not before an hour from now, or issued 11.6 days from now: no user.
        let later = sign(claims(now, Some(now + 3600)));
        assert!(keys.user_from_cookie(&later).is_none(), "nbf in the future");
        let future = sign(claims(now + 1_000_000, None));
        assert!(
            keys.user_from_cookie(&future).is_none(),
            "iat in the future"
        );
    }

    #[test]
    fn the_session_is_found_among_other_cookies() {
        let mut headers = HeaderMap::new();
        assert_eq!(session_cookie(&headers), None);
        headers.append(COOKIE, HeaderValue::from_static("a=1; sessionx=2"));
        assert_eq!(session_cookie(&headers), None);
        headers.append(
            COOKIE,
            HeaderValue::from_static("b=2;  session=abc%3D%3D ; c=3"),
        );
        assert_eq!(session_cookie(&headers).as_deref(), Some("abc=="));
        headers.append(COOKIE, HeaderValue::from_static("session=last"));
        assert_eq!(session_cookie(&headers).as_deref(), Some("last"));
    }

    #[test]
    fn a_revoked_session_is_no_user_even_when_remembered() {
        let keys = keys("k1");
        let (token, claims) = keys.issue(Uuid::new_v4(), "a@b.co").unwrap();
        let cookie = encode_cookie(&token);
        let session = keys.session_from_cookie(&cookie).unwrap();
        assert_eq!(session.user, claims);
        assert_eq!(session.token_id.len(), 32, "a jti: {}", session.token_id);
        let (other, _) = keys.issue(claims.id, "a@b.co").unwrap();
        keys.revoke(&session.token_id, claims.exp);
        assert_eq!(
            keys.user_from_cookie(&cookie),
            None,
            "remembered, then revoked"
        );
        let fresh = self::keys("k1");
        fresh.revoke(&session.token_id, claims.exp);
        assert_eq!(
            fresh.user_from_cookie(&cookie),
            None,
            "revoked before first seen"
        );
        assert!(
            keys.user_from_cookie(&encode_cookie(&other)).is_some(),
            "the same user's other session is still valid"
        );
        // A token without a `jti` (as the original signed them) is revoked by its signature.
        let legacy = keys.sign(&claims).unwrap();
        let legacy_cookie = encode_cookie(&legacy);
        let id = keys.session_from_cookie(&legacy_cookie).unwrap().token_id;
        assert_eq!(Some(id.as_str()), legacy.rsplit('.').next());
        keys.revoke(&id, claims.exp);
        assert_eq!(keys.user_from_cookie(&legacy_cookie), None);
    }

    #[test]
    fn expired_revocations_are_forgotten_and_live_ones_kept() {
        let keys = keys("k1");
        let now = chrono::Utc::now().timestamp();
        keys.revoke("live", now + 3600);
        for n in 0..(2 * REVOKED_PRUNE_FROM) {
            keys.revoke(&format!("gone {n}"), now - 60);
        }
        let held = keys.0.revoked.read().unwrap().expiries.len();
        assert!(held <= REVOKED_PRUNE_FROM + 1, "{held} revocations held");
        assert!(keys.is_revoked("live"));
    }

    #[test]
    fn a_remembered_session_still_expires() {
        let keys = keys("k1");
        let now = chrono::Utc::now().timestamp();
        // Expired four seconds ago: still within the five seconds of leeway...
        let claims = UserClaims {
            id: Uuid::new_v4(),
            email: "a@b.co".into(),
            iat: now - 3600,
            exp: now - 4,
        };
        let cookie = encode_cookie(&keys.sign(&claims).unwrap());
        assert_eq!(keys.user_from_cookie(&cookie), Some(claims));
        // ...and past it two seconds later, although it was verified and remembered.
        std::thread::sleep(Duration::from_millis(2100));
        assert_eq!(keys.user_from_cookie(&cookie), None);
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
