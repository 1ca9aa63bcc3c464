//! Per-field validation.
//!
//! Request bodies are read leniently (every field an `Option` of a loose type), then
//! each field is checked on its own with [`field`], and [`all`] gathers the results:
//! either every value, or one error entry per failed field.
//!
//! ```
//! use common::validate::{self, all, field};
//! # let (email, password) = (Some(serde_json::json!("a@b.co")), Some(serde_json::json!("pw")));
//! let email = field("email", validate::email(email.as_ref()), "Email must be valid");
//! let password = field("password", validate::text(password.as_ref()), "You must supply a password");
//! let (email, password) = all((email, password)).unwrap();
//! assert_eq!((email.as_str(), password.as_str()), ("a@b.co", "pw"));
//! ```

use serde_json::Value;
use serde_json::value::RawValue;
use unicode_normalization::UnicodeNormalization;
use uuid::Uuid;

use crate::money::Price;
use crate::{Error, FieldError};

/// The outcome of checking one field.
pub type Checked<T> = Result<T, FieldError>;

/// Names the field and the message to report if `value` is missing.
pub fn field<T>(name: &str, value: Option<T>, message: &str) -> Checked<T> {
    value.ok_or_else(|| FieldError::new(name, message))
}

/// Gathers checked fields: all their values, or a validation error listing every
/// field that failed, in order.
pub fn all<T: Fields>(checked: T) -> Result<T::Values, Error> {
    checked.collect()
}

/// A tuple of [`Checked`] fields (implemented for one to four fields).
pub trait Fields {
    type Values;
    fn collect(self) -> Result<Self::Values, Error>;
}

macro_rules! impl_fields {
    ($($name:ident: $ty:ident),+) => {
        impl<$($ty),+> Fields for ($(Checked<$ty>,)+) {
            type Values = ($($ty,)+);

            fn collect(self) -> Result<Self::Values, Error> {
                let ($($name,)+) = self;
                match ($($name,)+) {
                    ($(Ok($name),)+) => Ok(($($name,)+)),
                    ($($name,)+) => {
                        let failed = [$($name.err()),+].into_iter().flatten().collect();
                        Err(Error::Validation(failed))
                    }
                }
            }
        }
    };
}

impl_fields!(a: A);
impl_fields!(a: A, b: B);
impl_fields!(a: A, b: B, c: C);
impl_fields!(a: A, b: B, c: C, d: D);

/// A string field, trimmed; `None` if missing, not a string or empty after trimming.
pub fn text(value: Option<&Value>) -> Option<String> {
    let trimmed = value?.as_str()?.trim();
    (!trimmed.is_empty()).then(|| trimmed.to_owned())
}

/// A string field whose trimmed length (in characters) lies within `min..=max`.
pub fn text_with_length(value: Option<&Value>, min: usize, max: usize) -> Option<String> {
    let trimmed = value?.as_str()?.trim();
    let length = trimmed.chars().count();
    (min..=max).contains(&length).then(|| trimmed.to_owned())
}

/// The most characters a title may have.
pub const TITLE_MAX_CHARS: usize = 200;

/// Text a person typed for others to read (a ticket's title): trimmed and normalised
/// to NFC (one spelling for what reads the same). Refused with `missing` when absent
/// or empty, and refused when longer than `max` characters or holding control
/// characters (NUL, which PostgreSQL refuses, among them) or bidirectional overrides
/// and isolates (U+202A-U+202E, U+2066-U+2069: they make a title in a list read as
/// another). `label` names the field in the messages.
pub fn typed_text(
    name: &str,
    label: &str,
    value: Option<&Value>,
    max: usize,
    missing: &str,
) -> Checked<String> {
    let text: String = field(name, text(value), missing)?.nfc().collect();
    if text
        .chars()
        .any(|c| c.is_control() || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'))
    {
        return Err(FieldError::new(
            name,
            &format!("{label} must not contain control or text-direction characters"),
        ));
    }
    if text.chars().count() > max {
        return Err(FieldError::new(
            name,
            &format!("{label} must be at most {max} characters"),
        ));
    }
    Ok(text)
}

/// A token from a payment provider (`tok_visa`, `pm_...`): 1 to 255 ASCII letters,
/// digits, `_` and `-`, trimmed.
pub fn provider_token(value: Option<&Value>) -> Option<String> {
    let token = text(value)?;
    (token.len() <= 255
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'))
    .then_some(token)
}

/// An email address, trimmed and lower-cased so that comparisons ignore case.
///
/// The check is the practical one: one `@`, a non-empty local part, a domain of
/// dot-separated labels with a top-level label of at least two letters, no spaces,
/// and at most 254 characters.
pub fn email(value: Option<&Value>) -> Option<String> {
    let email = value?.as_str()?.trim().to_lowercase();
    let (local, domain) = email.split_once('@')?;
    let label_ok = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label.chars().all(|c| c.is_alphanumeric() || c == '-')
    };
    let labels: Vec<&str> = domain.split('.').collect();
    let tld = labels.last()?;
    let valid = email.len() <= 254
        && !local.is_empty()
        && local.len() <= 64
        && !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..")
        && local
            .chars()
            .all(|c| c.is_alphanumeric() || "!#$%&'*+-/=?^_`{|}~.".contains(c))
        && labels.len() >= 2
        && labels.iter().all(|label| label_ok(label))
        && tld.len() >= 2
        && tld.chars().all(char::is_alphabetic);
    valid.then_some(email)
}

/// A price field: a JSON number or numeric string, exact to the cent (see [`Price`]).
pub fn price(value: Option<&RawValue>) -> Option<Price> {
    Price::from_json(value?)
}

/// A UUID given as a string.
pub fn uuid(value: Option<&Value>) -> Option<Uuid> {
    Uuid::try_parse(value?.as_str()?.trim()).ok()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn typed_text_is_trimmed_normalised_and_bounded() {
        let check =
            |value: Value| typed_text("title", "Title", Some(&value), 10, "Title is required");
        assert_eq!(check(json!("  Concert ")).unwrap(), "Concert");
        // "é" as e + combining acute becomes the one precomposed character.
        assert_eq!(check(json!("Cafe\u{301}")).unwrap(), "Caf\u{e9}");
        assert_eq!(
            check(json!("   ")).unwrap_err().message,
            "Title is required"
        );
        assert_eq!(check(json!(5)).unwrap_err().message, "Title is required");
        for bad in ["a\u{0}b", "a\nb", "a\u{7}b", "abc\u{202E}cba", "x\u{2066}y"] {
            assert_eq!(
                check(json!(bad)).unwrap_err().message,
                "Title must not contain control or text-direction characters",
                "{bad:?}"
            );
        }
        assert_eq!(check(json!("ééééééééé\u{e9}")).unwrap(), "ééééééééé\u{e9}");
        assert_eq!(
            check(json!("12345678901")).unwrap_err().message,
            "Title must be at most 10 characters"
        );
    }

    #[test]
    fn provider_tokens_are_plain_ascii() {
        assert_eq!(
            provider_token(Some(&json!(" tok_visa "))).as_deref(),
            Some("tok_visa")
        );
        assert_eq!(
            provider_token(Some(&json!("pm_card-1"))).as_deref(),
            Some("pm_card-1")
        );
        for bad in ["tok\u{0}visa", "tok visa", "tök", "", &"t".repeat(256)] {
            assert_eq!(provider_token(Some(&json!(bad))), None, "{bad:?}");
        }
    }

    #[test]
    fn gathers_every_failed_field_in_order() {
        let a: Checked<i32> = field("a", None, "A is bad");
        let b: Checked<i32> = field("b", Some(2), "B is bad");
        let c: Checked<i32> = field("c", None, "C is bad");
        let Err(Error::Validation(failed)) = all((a, b, c)) else {
            panic!("expected a validation error")
        };
        assert_eq!(
            failed,
            vec![
                FieldError::new("a", "A is bad"),
                FieldError::new("c", "C is bad")
            ]
        );
        assert_eq!(
            all((field("x", Some(1), "m"), field("y", Some("z"), "m"))).unwrap(),
            (1, "z")
        );
    }

    #[test]
    fn emails() {
        let check = |v: Value| email(Some(&v));
        assert_eq!(
            check(json!("  Test@Example.COM ")),
            Some("test@example.com".into())
        );
        assert_eq!(
            check(json!("first.last+tag@sub.example.co")),
            Some("first.last+tag@sub.example.co".into())
        );
        for bad in [
            json!("plainaddress"),
            json!("a@b"),
            json!("@example.com"),
            json!("a@.com"),
            json!("a b@example.com"),
            json!("a@example.c"),
            json!("a@@example.com"),
            json!(""),
            json!(42),
            json!(null),
            json!("a..b@example.com"),
            json!("a@exa_mple.com"),
        ] {
            assert_eq!(check(bad.clone()), None, "{bad} must be refused");
        }
        assert_eq!(email(None), None);
    }

    #[test]
    fn texts() {
        assert_eq!(text(Some(&json!("  concert "))), Some("concert".into()));
        assert_eq!(text(Some(&json!("   "))), None);
        assert_eq!(text(Some(&json!(5))), None);
        assert_eq!(
            text_with_length(Some(&json!("  abcd  ")), 4, 20),
            Some("abcd".into())
        );
        assert_eq!(text_with_length(Some(&json!(" abc ")), 4, 20), None);
        assert_eq!(text_with_length(Some(&json!("a".repeat(21))), 4, 20), None);
        assert_eq!(
            text_with_length(Some(&json!("é".repeat(20))), 4, 20),
            Some("é".repeat(20))
        );
    }

    #[test]
    fn uuids() {
        let id = Uuid::new_v4();
        assert_eq!(uuid(Some(&json!(id.to_string()))), Some(id));
        assert_eq!(uuid(Some(&json!("not-an-id"))), None);
        assert_eq!(uuid(Some(&json!(7))), None);
    }
}
