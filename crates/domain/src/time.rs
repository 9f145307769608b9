//! Time. Every stored timestamp is UTC with microsecond precision, the finest both backends
//! keep, so that a value read back equals the value written on SQLite and PostgreSQL alike.

use chrono::{DateTime, DurationRound, TimeDelta, Utc};

pub type Timestamp = DateTime<Utc>;

/// The current time, truncated to whole microseconds.
pub fn now() -> Timestamp {
    truncate(Utc::now())
}

/// Truncates a timestamp to whole microseconds.
pub fn truncate(t: Timestamp) -> Timestamp {
    t.duration_trunc(TimeDelta::microseconds(1)).unwrap_or(t)
}

/// Microseconds since the Unix epoch: the SQLite representation, and the cursor encoding.
pub fn to_micros(t: Timestamp) -> i64 {
    t.timestamp_micros()
}

/// The inverse of [`to_micros`]; `None` for values outside chrono's range.
pub fn from_micros(us: i64) -> Option<Timestamp> {
    DateTime::from_timestamp_micros(us)
}
