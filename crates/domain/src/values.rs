//! Validated value types. Parse, don't validate: a request field becomes one of these
//! through its constructor, and once code holds an `Email` it knows the value is valid.
//! Each constructor names the request field in its error so that callers can report every
//! offending field at once.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::FieldError;

fn has_control(s: &str) -> bool {
    s.chars().any(char::is_control)
}

/// Trims and checks a single-line text of 1..=max characters.
fn text(field: &str, raw: &str, max: usize) -> Result<String, FieldError> {
    let s = raw.trim();
    if s.is_empty() {
        return Err(FieldError::new(field, "required", "must not be empty"));
    }
    if s.chars().count() > max {
        return Err(FieldError::new(
            field,
            "too_long",
            format!("must be at most {max} characters"),
        ));
    }
    if has_control(s) {
        return Err(FieldError::new(
            field,
            "invalid_characters",
            "must not contain control characters",
        ));
    }
    Ok(s.to_owned())
}

macro_rules! string_value {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }

            pub fn into_inner(self) -> String {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

string_value!(
    /// A short single-line label (department, job title, cost center, key name, …).
    Label
);

impl Label {
    /// A label of at most 100 characters.
    pub fn parse(field: &str, raw: &str) -> Result<Self, FieldError> {
        text(field, raw, 100).map(Self)
    }
}

string_value!(
    /// A person's or organisation's display name, 1..=200 characters.
    DisplayName
);

impl DisplayName {
    pub fn parse(field: &str, raw: &str) -> Result<Self, FieldError> {
        text(field, raw, 200).map(Self)
    }
}

string_value!(
    /// An email address as the user wrote it (trimmed); compare with [`Email::normalized`].
    Email
);

impl Email {
    /// Accepts `local@domain` where the domain has at least one dot, within RFC 5321 sizes.
    /// Deliberately not the full RFC 5322 grammar: quoted local parts and IP literals are
    /// refused, as most identity providers do.
    pub fn parse(field: &str, raw: &str) -> Result<Self, FieldError> {
        let s = raw.trim();
        let invalid = || {
            FieldError::new(
                field,
                "invalid_email",
                "must be an email address like name@example.com",
            )
        };
        if s.is_empty() {
            return Err(FieldError::new(field, "required", "must not be empty"));
        }
        if s.len() > 254 {
            return Err(FieldError::new(
                field,
                "too_long",
                "must be at most 254 characters",
            ));
        }
        let (local, domain) = s.split_once('@').ok_or_else(invalid)?;
        let local_ok = !local.is_empty()
            && local.len() <= 64
            && !local.starts_with('.')
            && !local.ends_with('.')
            && !local.contains("..")
            && local
                .chars()
                .all(|c| c.is_alphanumeric() || "!#$%&'*+-/=?^_`{|}~.".contains(c));
        let domain_ok = domain.contains('.')
            && domain.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && !label.starts_with('-')
                    && !label.ends_with('-')
                    && label.chars().all(|c| c.is_alphanumeric() || c == '-')
            });
        if local_ok && domain_ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(invalid())
        }
    }

    /// The form uniqueness is decided on: lower-cased.
    pub fn normalized(&self) -> String {
        self.0.to_lowercase()
    }
}

string_value!(
    /// A login name: 3..=64 of letters, digits, `.`, `_`, `-`, starting with a letter or digit.
    Username
);

impl Username {
    pub fn parse(field: &str, raw: &str) -> Result<Self, FieldError> {
        let s = raw.trim();
        let len = s.chars().count();
        if !(3..=64).contains(&len) {
            return Err(FieldError::new(
                field,
                "invalid_length",
                "must be 3 to 64 characters",
            ));
        }
        let first_ok = s.chars().next().is_some_and(char::is_alphanumeric);
        if !first_ok || !s.chars().all(|c| c.is_alphanumeric() || "._-".contains(c)) {
            return Err(FieldError::new(
                field,
                "invalid_username",
                "may contain letters, digits, '.', '_' and '-', and must start with a letter or digit",
            ));
        }
        Ok(Self(s.to_owned()))
    }

    /// The form uniqueness is decided on: lower-cased.
    pub fn normalized(&self) -> String {
        self.0.to_lowercase()
    }
}

string_value!(
    /// A telephone number: an optional leading `+`, then 6 to 20 digits with optional
    /// spaces, dashes, dots and parentheses.
    Phone
);

impl Phone {
    pub fn parse(field: &str, raw: &str) -> Result<Self, FieldError> {
        let s = raw.trim();
        let body = s.strip_prefix('+').unwrap_or(s);
        let digits = body.chars().filter(char::is_ascii_digit).count();
        let chars_ok = body
            .chars()
            .all(|c| c.is_ascii_digit() || " -.()".contains(c));
        if chars_ok && (6..=20).contains(&digits) && s.len() <= 32 {
            Ok(Self(s.to_owned()))
        } else {
            Err(FieldError::new(
                field,
                "invalid_phone",
                "must be a telephone number such as +44 20 7946 0958",
            ))
        }
    }
}

string_value!(
    /// A BCP 47 language tag, stored in its canonical case (e.g. `en-GB`).
    Language
);

impl Language {
    pub fn parse(field: &str, raw: &str) -> Result<Self, FieldError> {
        let invalid = || {
            FieldError::new(
                field,
                "invalid_language",
                "must be a BCP 47 language tag such as en or pt-BR",
            )
        };
        let tag = language_tags::LanguageTag::parse(raw.trim()).map_err(|_| invalid())?;
        tag.validate().map_err(|_| invalid())?;
        let canonical = tag.canonicalize().map_err(|_| invalid())?;
        Ok(Self(canonical.to_string()))
    }
}

string_value!(
    /// An absolute http(s) URL of at most 2048 characters.
    AvatarUrl
);

impl AvatarUrl {
    pub fn parse(field: &str, raw: &str) -> Result<Self, FieldError> {
        let s = raw.trim();
        let rest = s
            .strip_prefix("https://")
            .or_else(|| s.strip_prefix("http://"));
        let host_ok = rest.is_some_and(|r| {
            let host = r.split(['/', '?', '#']).next().unwrap_or("");
            !host.is_empty() && !host.contains('@')
        });
        if host_ok && s.len() <= 2048 && !s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            Ok(Self(s.to_owned()))
        } else {
            Err(FieldError::new(
                field,
                "invalid_url",
                "must be an absolute http or https URL",
            ))
        }
    }
}

/// A clearance level from 0 (none) to 10.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ClearanceLevel(i16);

impl ClearanceLevel {
    pub const MAX: i64 = 10;

    pub fn parse(field: &str, n: i64) -> Result<Self, FieldError> {
        if (0..=Self::MAX).contains(&n) {
            Ok(Self(n as i16))
        } else {
            Err(FieldError::new(
                field,
                "out_of_range",
                format!("must be between 0 and {}", Self::MAX),
            ))
        }
    }

    pub fn get(self) -> i16 {
        self.0
    }
}

/// A JSON object of caller-defined attributes: at most 100 keys of 1..=64 characters and
/// 16 KiB serialised, so that one user cannot bloat every list response.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
#[serde(transparent)]
pub struct JsonObject(Map<String, Value>);

impl JsonObject {
    pub const MAX_KEYS: usize = 100;
    pub const MAX_BYTES: usize = 16 * 1024;

    pub fn parse(field: &str, map: Map<String, Value>) -> Result<Self, FieldError> {
        if map.len() > Self::MAX_KEYS {
            return Err(FieldError::new(
                field,
                "too_many_keys",
                format!("must have at most {} keys", Self::MAX_KEYS),
            ));
        }
        if let Some(k) = map.keys().find(|k| k.is_empty() || k.chars().count() > 64) {
            return Err(FieldError::new(
                format!("{field}.{k}"),
                "invalid_key",
                "keys must be 1 to 64 characters",
            ));
        }
        let size = serde_json::to_vec(&map)
            .map(|v| v.len())
            .unwrap_or(usize::MAX);
        if size > Self::MAX_BYTES {
            return Err(FieldError::new(
                field,
                "too_large",
                format!("must be at most {} bytes as JSON", Self::MAX_BYTES),
            ));
        }
        Ok(Self(map))
    }

    pub fn as_map(&self) -> &Map<String, Value> {
        &self.0
    }

    pub fn into_map(self) -> Map<String, Value> {
        self.0
    }
}

/// A full-text search: the lower-cased alphanumeric terms of `q`, each matched as a prefix
/// of a word in a user's name, username or email.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchQuery(Vec<String>);

impl SearchQuery {
    pub const MAX_TERMS: usize = 8;

    pub fn parse(field: &str, raw: &str) -> Result<Self, FieldError> {
        let terms: Vec<String> = raw
            .split(|c: char| !c.is_alphanumeric())
            .filter(|t| !t.is_empty())
            .map(|t| {
                // Lower-casing may add a combining mark (İ → i̇): keep letters and digits.
                let lower = t.chars().take(64).collect::<String>().to_lowercase();
                lower
                    .chars()
                    .filter(|c| c.is_alphanumeric())
                    .collect::<String>()
            })
            .filter(|t| !t.is_empty())
            .collect();
        if terms.is_empty() {
            return Err(FieldError::new(
                field,
                "invalid_query",
                "must contain a letter or digit",
            ));
        }
        if terms.len() > Self::MAX_TERMS {
            return Err(FieldError::new(
                field,
                "too_many_terms",
                format!("must have at most {} words", Self::MAX_TERMS),
            ));
        }
        Ok(Self(terms))
    }

    /// The terms: non-empty, lower-case, letters and digits only, so safe to embed in a
    /// full-text query syntax.
    pub fn terms(&self) -> &[String] {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn emails() {
        assert!(Email::parse("email", " Alice@Example.COM ").is_ok());
        assert_eq!(
            Email::parse("email", "Alice@Example.COM")
                .unwrap()
                .normalized(),
            "alice@example.com"
        );
        for bad in [
            "",
            "a",
            "a@b",
            "@b.com",
            "a@.com",
            "a..b@c.com",
            "a b@c.com",
            "a@b_c.com",
        ] {
            assert!(Email::parse("email", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn languages_are_canonical() {
        assert_eq!(
            Language::parse("language", "EN-gb").unwrap().as_str(),
            "en-GB"
        );
        assert!(Language::parse("language", "english please").is_err());
    }

    #[test]
    fn search_terms() {
        let q = SearchQuery::parse("q", "  Ali.SMI@ex  ").unwrap();
        assert_eq!(q.terms(), ["ali", "smi", "ex"]);
        assert!(SearchQuery::parse("q", " *:&\" ").is_err());
    }

    proptest! {
        #[test]
        fn search_terms_are_always_safe(raw in "(.|[İ ])*") {
            let words = raw
                .split(|c: char| !c.is_alphanumeric())
                .filter(|t| !t.is_empty())
                .count();
            match SearchQuery::parse("q", &raw) {
                Ok(q) => {
                    prop_assert!((1..=SearchQuery::MAX_TERMS).contains(&words), "{words} words");
                    prop_assert_eq!(q.terms().len(), words);
                    for t in q.terms() {
                        prop_assert!(!t.is_empty());
                        prop_assert!(t.chars().all(char::is_alphanumeric), "{t:?}");
                    }
                }
                Err(e) => {
                    let code = if words == 0 { "invalid_query" } else { "too_many_terms" };
                    prop_assert_eq!(e.code.as_str(), code, "{} words", words);
                }
            }
        }

        #[test]
        fn parsed_emails_round_trip(
            raw in "[a-z0-9][a-z0-9_%+-]{0,19}(\\.[a-z0-9]{1,5})?@[a-z0-9]{1,10}\\.[a-z]{2,6}"
        ) {
            let e = Email::parse("email", &raw);
            prop_assert!(e.is_ok(), "{raw}: {e:?}");
            let e = e.unwrap();
            prop_assert_eq!(e.as_str(), raw.as_str());
            prop_assert_eq!(Email::parse("email", e.as_str()).unwrap(), e);
        }
    }
}

string_value!(
    /// A free-text description of at most 1,000 characters (line breaks allowed).
    Description
);

impl Description {
    pub fn parse(field: &str, raw: &str) -> Result<Self, FieldError> {
        let s = raw.trim();
        if s.chars().count() > 1000 {
            return Err(FieldError::new(
                field,
                "too_long",
                "must be at most 1000 characters",
            ));
        }
        if s.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
            return Err(FieldError::new(
                field,
                "invalid_characters",
                "must not contain control characters other than line breaks and tabs",
            ));
        }
        Ok(Self(s.to_owned()))
    }
}

string_value!(
    /// A machine name: a lower-case ASCII letter, then up to 63 lower-case letters, digits,
    /// `_` or `-` (role names, group names, permission resources and actions).
    Identifier
);

impl Identifier {
    pub const MAX_LEN: usize = 64;

    pub fn parse(field: &str, raw: &str) -> Result<Self, FieldError> {
        if Self::is_valid(raw) {
            Ok(Self(raw.to_owned()))
        } else {
            Err(FieldError::new(
                field,
                "invalid_identifier",
                "must start with a lower-case letter and contain only a-z, 0-9, '_' and '-' (at most 64 characters)",
            ))
        }
    }

    pub fn is_valid(raw: &str) -> bool {
        let mut chars = raw.chars();
        matches!(chars.next(), Some('a'..='z'))
            && raw.len() <= Self::MAX_LEN
            && chars.all(|c| matches!(c, 'a'..='z' | '0'..='9' | '_' | '-'))
    }
}
