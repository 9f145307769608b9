//! Small helpers for turning raw request fields into domain types while collecting every
//! field error of the request.

use chrono::{DateTime, Utc};
use domain::{FieldError, Patch, ValidationErrors};

pub type Parser<T> = fn(&str, &str) -> Result<T, FieldError>;

/// Parses an optional field.
pub fn optional<T>(
    errs: &mut ValidationErrors,
    field: &str,
    raw: Option<String>,
    parse: Parser<T>,
) -> Option<T> {
    raw.and_then(|v| errs.check(parse(field, &v)))
}

/// Parses a PATCH field of an optional attribute: absent keeps, `null` clears.
pub fn patch<T>(
    errs: &mut ValidationErrors,
    field: &str,
    raw: Option<Option<String>>,
    parse: Parser<T>,
) -> Patch<T> {
    match Patch::from(raw).try_map(|v| parse(field, &v)) {
        Ok(p) => p,
        Err(e) => {
            errs.push(e);
            Patch::Keep
        }
    }
}

/// Parses a PATCH field of a required attribute: absent keeps, `null` is an error.
pub fn required_patch<T>(
    errs: &mut ValidationErrors,
    field: &str,
    raw: Option<Option<String>>,
    parse: Parser<T>,
) -> Option<T> {
    match raw {
        None => None,
        Some(None) => {
            errs.push(FieldError::new(field, "not_nullable", "must not be null"));
            None
        }
        Some(Some(v)) => errs.check(parse(field, &v)),
    }
}

/// An RFC 3339 timestamp, truncated to microseconds.
pub fn timestamp(field: &str, raw: &str) -> Result<DateTime<Utc>, FieldError> {
    DateTime::parse_from_rfc3339(raw.trim())
        .map(|t| domain::time::truncate(t.with_timezone(&Utc)))
        .map_err(|_| {
            FieldError::new(
                field,
                "invalid_timestamp",
                "must be an RFC 3339 timestamp such as 2026-01-31T09:00:00Z",
            )
        })
}

/// A value of a string enum.
pub fn enum_value<T: std::str::FromStr<Err = String>>(
    field: &str,
    raw: &str,
) -> Result<T, FieldError> {
    raw.parse::<T>()
        .map_err(|msg| FieldError::new(field, "invalid_value", msg))
}

/// A typed id.
pub fn id<T: std::str::FromStr>(field: &str, raw: &str) -> Result<T, FieldError> {
    raw.trim()
        .parse::<T>()
        .map_err(|_| FieldError::new(field, "invalid_id", "must be a UUID"))
}

/// A page size.
pub fn limit(field: &str, raw: &str) -> Result<domain::page::PageSize, FieldError> {
    let n = raw
        .trim()
        .parse::<u32>()
        .map_err(|_| FieldError::new(field, "invalid_number", "must be a positive integer"))?;
    domain::page::PageSize::new(Some(n))
}
