//! Timestamps as the API writes them: RFC 3339 in UTC with milliseconds and a
//! `Z` (`2026-11-26T17:02:12.286Z`), the format of JavaScript's `toISOString()`.

use chrono::{DateTime, SecondsFormat, SubsecRound, Utc};

pub type Timestamp = DateTime<Utc>;

/// Now, truncated to whole milliseconds so that what is stored, sent in an event and
/// returned by the API are the same instant.
pub fn now() -> Timestamp {
    Utc::now().trunc_subsecs(3)
}

pub fn to_iso(at: &Timestamp) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// `#[serde(with = "common::time::iso")]` for a [`Timestamp`] field.
pub mod iso {
    use serde::{Deserialize, Deserializer, Serializer};

    use super::Timestamp;

    pub fn serialize<S: Serializer>(at: &Timestamp, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&super::to_iso(at))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Timestamp, D::Error> {
        let text = std::borrow::Cow::<str>::deserialize(deserializer)?;
        chrono::DateTime::parse_from_rfc3339(&text)
            .map(|at| at.to_utc())
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_like_javascript() {
        let at = DateTime::parse_from_rfc3339("2026-11-26T17:02:12.286123+02:00")
            .unwrap()
            .to_utc()
            .trunc_subsecs(3);
        assert_eq!(to_iso(&at), "2026-11-26T15:02:12.286Z");
        assert_eq!(now().timestamp_subsec_nanos() % 1_000_000, 0);
    }
}
