//! Browser-facing protections: a Content-Security-Policy on every page, and an Origin
//! check on every form post (cross-site request forgery, beyond the `SameSite=Lax`
//! session cookie).

use axum::extract::{Request, State};
use axum::http::header::{HOST, ORIGIN, REFERER};
use axum::http::{HeaderMap, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::page::PageError;

/// The Content-Security-Policy: only the client's own scripts, styles and images, and
/// Stripe's when Stripe Elements is used.
pub fn content_security_policy(stripe: bool) -> HeaderValue {
    let (script, frame, connect) = if stripe {
        (
            "'self' https://js.stripe.com",
            "https://js.stripe.com https://hooks.stripe.com",
            "'self' https://api.stripe.com",
        )
    } else {
        ("'self'", "'none'", "'self'")
    };
    let policy = format!(
        "default-src 'self'; script-src {script}; style-src 'self'; img-src 'self' data:; \
         font-src 'self'; connect-src {connect}; frame-src {frame}; object-src 'none'; \
         base-uri 'self'; form-action 'self'; frame-ancestors 'none'"
    );
    HeaderValue::from_str(&policy)
        .unwrap_or_else(|_| HeaderValue::from_static("default-src 'self'"))
}

/// Middleware: the security headers on every answer.
pub async fn headers(State(policy): State<HeaderValue>, request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert("content-security-policy", policy);
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    headers.insert("referrer-policy", HeaderValue::from_static("same-origin"));
    headers.insert("x-frame-options", HeaderValue::from_static("DENY"));
    response
}

/// Middleware: a form post must come from a page of this site. Browsers send `Origin`
/// with every POST (`Referer` as a fallback); its host must be the one the request
/// was sent to.
pub async fn same_origin(request: Request, next: Next) -> Response {
    if request.method() == Method::POST && !from_this_site(request.headers()) {
        tracing::warn!("refused a cross-site form post");
        return PageError::CrossSite.into_response();
    }
    next.run(request).await
}

fn from_this_site(headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(HOST).and_then(|h| h.to_str().ok()) else {
        return false;
    };
    let source = headers
        .get(ORIGIN)
        .or_else(|| headers.get(REFERER))
        .and_then(|value| value.to_str().ok());
    source
        .and_then(authority)
        .is_some_and(|authority| authority.eq_ignore_ascii_case(host))
}

/// `localhost:8080` of `http://localhost:8080/path`.
fn authority(url: &str) -> Option<&str> {
    let (_, rest) = url.split_once("://")?;
    Some(rest.split(['/', '?', '#']).next().unwrap_or(rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| (k.parse().unwrap(), HeaderValue::from_static(v)))
            .collect()
    }

    #[test]
    fn only_posts_from_this_site_pass() {
        let ok = headers(&[
            ("host", "localhost:8080"),
            ("origin", "http://localhost:8080"),
        ]);
        assert!(from_this_site(&ok));
        let referer = headers(&[
            ("host", "ticketing.dev"),
            ("referer", "https://ticketing.dev/tickets/new"),
        ]);
        assert!(from_this_site(&referer));
        let evil = headers(&[
            ("host", "localhost:8080"),
            ("origin", "https://evil.example"),
        ]);
        assert!(!from_this_site(&evil));
        let other_port = headers(&[
            ("host", "localhost:8080"),
            ("origin", "http://localhost:9999"),
        ]);
        assert!(!from_this_site(&other_port));
        assert!(
            !from_this_site(&headers(&[("host", "localhost:8080")])),
            "no origin at all"
        );
        let null = headers(&[("host", "localhost:8080"), ("origin", "null")]);
        assert!(!from_this_site(&null));
    }

    #[test]
    fn stripe_is_allowed_only_when_used() {
        assert!(
            !content_security_policy(false)
                .to_str()
                .unwrap()
                .contains("stripe")
        );
        assert!(
            content_security_policy(true)
                .to_str()
                .unwrap()
                .contains("https://js.stripe.com")
        );
    }
}
