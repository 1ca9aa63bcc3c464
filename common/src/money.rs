//! Exact prices.
//!
//! A [`Price`] is a whole number of cents. On the wire it is a JSON number in major
//! units (`20`, `12.5`), as the original service sends it; requests may also send a
//! numeric string (`"12.50"`). Parsing is exact: a price with more than two decimal
//! places, zero, a negative number or more than [`Price::MAX`] is refused rather than
//! rounded.

use std::fmt;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Price(i64);

impl Price {
    /// 1,000,000 in major units.
    pub const MAX: Price = Price(100_000_000);

    /// A price from cents, if it is within (0, MAX].
    pub fn from_cents(cents: i64) -> Option<Self> {
        (cents > 0 && cents <= Self::MAX.0).then_some(Self(cents))
    }

    pub fn cents(self) -> i64 {
        self.0
    }

    /// Major units with exactly two decimals, as a price tag shows it: `12.50`.
    pub fn two_decimals(self) -> String {
        format!("{}.{:02}", self.0 / 100, self.0 % 100)
    }

    /// Parses a price from decimal text such as `12`, `12.5`, `"12.50"` or `1.25e1`.
    pub fn parse_decimal(text: &str) -> Option<Self> {
        Self::from_cents(decimal_to_cents(text.trim())?)
    }

    /// Parses the raw JSON of a request's price field: a number, or a string holding one.
    pub fn from_json(raw: &RawValue) -> Option<Self> {
        let text = raw.get();
        if text.starts_with('"') {
            let inner: String = serde_json::from_str(text).ok()?;
            Self::parse_decimal(&inner)
        } else {
            Self::parse_decimal(text)
        }
    }
}

/// Converts decimal text (JSON number grammar, without the sign for negatives being
/// accepted) to an exact number of cents. `None` if it is not a number, negative,
/// has a non-zero digit beyond the second decimal place, or does not fit in an i64.
fn decimal_to_cents(text: &str) -> Option<i64> {
    let (mantissa, exponent) = match text.find(['e', 'E']) {
        Some(at) => (&text[..at], text[at + 1..].parse::<i32>().ok()?),
        None => (text, 0),
    };
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() && fraction.is_empty() || !all_digits(whole) || !all_digits(fraction) {
        return None;
    }
    // value = digits × 10^(exponent − fraction.len()); cents = value × 100.
    let digits = format!("{whole}{fraction}");
    let digits = digits.trim_start_matches('0');
    let significant = digits.trim_end_matches('0');
    let trailing_zeros = i64::try_from(digits.len() - significant.len()).ok()?;
    let fraction_len = i64::try_from(fraction.len()).ok()?;
    let scale = i64::from(exponent) - fraction_len + 2 + trailing_zeros;
    if significant.is_empty() {
        return Some(0);
    }
    if scale < 0 || significant.len() > 18 || scale > 18 {
        return None; // finer than a cent, or far out of range
    }
    let base: i64 = significant.parse().ok()?;
    base.checked_mul(10_i64.checked_pow(u32::try_from(scale).ok()?)?)
}

/// Reading a stored amount of cents back; out-of-range values are an error.
impl TryFrom<i64> for Price {
    type Error = String;

    fn try_from(cents: i64) -> Result<Self, Self::Error> {
        Price::from_cents(cents).ok_or_else(|| format!("{cents} cents is not a valid price"))
    }
}

/// Stored as a `BIGINT` number of cents; a stored value outside (0, MAX] does not decode.
#[cfg(feature = "sqlx")]
impl sqlx::Type<sqlx::Postgres> for Price {
    fn type_info() -> sqlx::postgres::PgTypeInfo {
        <i64 as sqlx::Type<sqlx::Postgres>>::type_info()
    }
}

#[cfg(feature = "sqlx")]
impl sqlx::Encode<'_, sqlx::Postgres> for Price {
    fn encode_by_ref(
        &self,
        buf: &mut sqlx::postgres::PgArgumentBuffer,
    ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
        <i64 as sqlx::Encode<sqlx::Postgres>>::encode_by_ref(&self.0, buf)
    }
}

#[cfg(feature = "sqlx")]
impl sqlx::Decode<'_, sqlx::Postgres> for Price {
    fn decode(value: sqlx::postgres::PgValueRef<'_>) -> Result<Self, sqlx::error::BoxDynError> {
        let cents = <i64 as sqlx::Decode<sqlx::Postgres>>::decode(value)?;
        Self::from_cents(cents).ok_or_else(|| format!("{cents} cents is not a valid price").into())
    }
}

impl fmt::Display for Price {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (units, cents) = (self.0 / 100, self.0 % 100);
        match cents {
            0 => write!(f, "{units}"),
            c if c % 10 == 0 => write!(f, "{units}.{}", c / 10),
            c => write!(f, "{units}.{c:02}"),
        }
    }
}

impl Serialize for Price {
    /// A JSON number in major units: `20`, `12.5`, `0.05`.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if self.0 % 100 == 0 {
            serializer.serialize_i64(self.0 / 100)
        } else {
            // The nearest double to a two-decimal value prints back as that value.
            #[allow(clippy::cast_precision_loss)] // at most 1e8 cents: exact in an f64
            serializer.serialize_f64(self.0 as f64 / 100.0)
        }
    }
}

impl<'de> Deserialize<'de> for Price {
    /// Reads a price from an event or a stored document: a number or numeric string.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = Box::<RawValue>::deserialize(deserializer)?;
        Price::from_json(&raw)
            .ok_or_else(|| D::Error::custom(format!("invalid price {}", raw.get())))
    }
}

impl utoipa::PartialSchema for Price {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::Number)
            .description(Some(
                "Price in major currency units, > 0, at most 1,000,000, at most 2 decimals",
            ))
            .examples([serde_json::json!(12.5)])
            .into()
    }
}

impl utoipa::ToSchema for Price {}

#[cfg(test)]
mod tests {
    use super::*;

    fn cents(text: &str) -> Option<i64> {
        Price::parse_decimal(text).map(Price::cents)
    }

    #[test]
    fn parses_exact_decimals() {
        assert_eq!(cents("20"), Some(2000));
        assert_eq!(cents("12.5"), Some(1250));
        assert_eq!(cents("12.50"), Some(1250));
        assert_eq!(cents(" 12.50 "), Some(1250));
        assert_eq!(cents("0.01"), Some(1));
        assert_eq!(
            cents("12.500"),
            Some(1250),
            "trailing zeros are not extra precision"
        );
        assert_eq!(cents("1.25e1"), Some(1250));
        assert_eq!(cents("125E-1"), Some(1250));
        assert_eq!(cents("1e6"), Some(100_000_000));
        assert_eq!(cents(".5"), Some(50));
        assert_eq!(cents("5."), Some(500));
    }

    #[test]
    fn refuses_what_it_would_have_to_round_or_cannot_read() {
        for bad in [
            "12.345",
            "0.001",
            "0",
            "0.00",
            "-5",
            "1000000.01",
            "1e7",
            "",
            ".",
            "abc",
            "1,5",
            "NaN",
            "Infinity",
            "1e",
            "0x10",
            "+5",
            "1e999999999999",
            "99999999999999999999999",
        ] {
            assert_eq!(cents(bad), None, "{bad:?} must be refused");
        }
    }

    #[test]
    fn reads_numbers_and_numeric_strings_from_json() {
        let parse = |json: &str| {
            let raw: Box<RawValue> = serde_json::from_str(json).unwrap();
            Price::from_json(&raw).map(Price::cents)
        };
        assert_eq!(parse("12.5"), Some(1250));
        assert_eq!(parse("\"12.50\""), Some(1250));
        assert_eq!(parse("true"), None);
        assert_eq!(parse("null"), None);
        assert_eq!(parse("[1]"), None);
        assert_eq!(parse("\"\""), None);
    }

    #[test]
    fn writes_json_numbers_in_major_units() {
        let json = |c| serde_json::to_string(&Price::from_cents(c).unwrap()).unwrap();
        assert_eq!(json(2000), "20");
        assert_eq!(json(1250), "12.5");
        assert_eq!(json(1), "0.01");
        assert_eq!(json(1999), "19.99");
        assert_eq!(json(100_000_000), "1000000");
        assert_eq!(Price::from_cents(1250).unwrap().to_string(), "12.5");
        assert_eq!(Price::from_cents(1205).unwrap().to_string(), "12.05");
    }

    #[test]
    fn every_cent_value_round_trips_through_json() {
        for c in (1..200_000).chain(99_990_000..=100_000_000) {
            let price = Price::from_cents(c).unwrap();
            let back: Price =
                serde_json::from_str(&serde_json::to_string(&price).unwrap()).unwrap();
            assert_eq!(back, price);
        }
    }
}
