//! Extractors that turn every malformed input into a clear 4xx problem instead of axum's
//! plain-text rejections: JSON bodies (content type, size, syntax, unknown fields, wrong
//! types, with the offending field's path), path ids, query strings and `If-Match`.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use domain::code::Code;
use domain::FieldError;
use serde::de::DeserializeOwned;

use crate::problem::ApiError;

/// A JSON request body.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(|mime| {
                let mime = mime.trim().to_ascii_lowercase();
                mime == "application/json" || mime.ends_with("+json")
            })
            .unwrap_or(false);
        if !is_json {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "Unsupported media type",
            )
            .detail("send the body as JSON with Content-Type: application/json"));
        }
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(body_rejection)?;
        if bytes.trim_ascii_start().first() != Some(&b'{') {
            // Serde would read an array into a struct field by field; bodies are objects.
            return Err(
                match serde_json::from_slice::<serde::de::IgnoredAny>(&bytes) {
                    Ok(_) => ApiError::validation(vec![FieldError::new(
                        "",
                        "invalid_type",
                        "the body must be a JSON object",
                    )]),
                    Err(e) => {
                        ApiError::new(StatusCode::BAD_REQUEST, "malformed_json", "Malformed JSON")
                            .detail(e.to_string())
                    }
                },
            );
        }
        parse_json(&bytes).map(ApiJson)
    }
}

fn body_rejection(r: BytesRejection) -> ApiError {
    if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "Payload too large",
        )
        .detail("the request body exceeds the configured limit")
    } else {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "unreadable_body",
            "Unreadable body",
        )
        .detail("the request body could not be read")
    }
}

/// Deserialises JSON, reporting the path of the offending field. A number with a zero
/// fraction (`3.0`) is the integer it equals, as JSON Schema's `integer` says.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    // Most bodies hold no fraction, exponent or escaped NUL: for them the general path
    // below changes nothing, so they are read directly, without building a tree first.
    // Anything the direct read refuses takes the general path, for its precise errors.
    if is_plain(bytes) {
        if let Ok(parsed) = serde_json::from_slice(bytes) {
            return Ok(parsed);
        }
    }
    let mut value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| {
        ApiError::new(StatusCode::BAD_REQUEST, "malformed_json", "Malformed JSON")
            .detail(e.to_string())
    })?;
    integral_floats_to_integers(&mut value);
    if let Some(field) = nul_at(&value, "") {
        return Err(ApiError::validation(vec![FieldError::new(
            field,
            "nul_character",
            "must not contain the NUL character (U+0000)",
        )]));
    }
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        match inner.classify() {
            serde_json::error::Category::Data => {
                let message = strip_position(&inner.to_string());
                let mut field = if path == "." { String::new() } else { path };
                // "missing field `email`" is reported at the object that lacks it.
                let missing = message
                    .strip_prefix("missing field `")
                    .and_then(|m| m.strip_suffix('`'));
                if let Some(name) = missing {
                    if !field.is_empty() {
                        field.push('.');
                    }
                    field.push_str(name);
                    return ApiError::validation(vec![FieldError::new(
                        field,
                        "required",
                        "is required",
                    )]);
                }
                ApiError::validation(vec![FieldError::new(field, "invalid_value", message)])
            }
            _ => ApiError::new(StatusCode::BAD_REQUEST, "malformed_json", "Malformed JSON")
                .detail(inner.to_string()),
        }
    })
}

/// Whether a JSON text has no number with a fraction or an exponent and no `\u0000`
/// escape: what [`parse_json`] would change or refuse. (JSON allows letters outside strings
/// only in `true`, `false` and `null`, so an `e` after a digit is an exponent.)
fn is_plain(bytes: &[u8]) -> bool {
    let mut in_string = false;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if in_string {
            match b {
                b'\\' => {
                    if bytes[i + 1..].starts_with(b"u0000") {
                        return false;
                    }
                    i += 1;
                }
                b'"' => in_string = false,
                _ => {}
            }
        } else {
            match b {
                b'"' => in_string = true,
                b'.' => return false,
                b'e' | b'E' if i > 0 && bytes[i - 1].is_ascii_digit() => return false,
                _ => {}
            }
        }
        i += 1;
    }
    true
}

/// Where a string or key holding U+0000 is, if one does: no backend stores it (PostgreSQL's
/// text and jsonb cannot), so both refuse it alike.
fn nul_at(value: &serde_json::Value, path: &str) -> Option<String> {
    use serde_json::Value;
    let join = |key: &str| {
        if path.is_empty() {
            key.to_owned()
        } else {
            format!("{path}.{key}")
        }
    };
    match value {
        Value::String(s) if s.contains('\0') => Some(path.to_owned()),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, v)| nul_at(v, &format!("{path}[{i}]"))),
        Value::Object(map) => map.iter().find_map(|(k, v)| {
            if k.contains('\0') {
                Some(path.to_owned())
            } else {
                nul_at(v, &join(k))
            }
        }),
        _ => None,
    }
}

fn integral_floats_to_integers(value: &mut serde_json::Value) {
    use serde_json::Value;
    match value {
        Value::Number(n) if n.is_f64() => {
            if let Some(f) = n.as_f64() {
                // Within ±2^53 an f64 holds every integer exactly.
                if f.fract() == 0.0 && f.abs() <= 9_007_199_254_740_992.0 {
                    *value = Value::from(f as i64);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(integral_floats_to_integers),
        Value::Object(map) => map.values_mut().for_each(integral_floats_to_integers),
        _ => {}
    }
}

/// serde_json appends " at line 1 column 42" to data errors; the field path says more.
fn strip_position(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_owned(),
        None => msg.to_owned(),
    }
}

/// A path parameter parsed with `FromStr` (e.g. a typed UUID id).
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: std::str::FromStr> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let axum::extract::Path(raw): axum::extract::Path<String> =
            axum::extract::Path::from_request_parts(parts, state)
                .await
                .map_err(|_| ApiError::not_found("no such resource"))?;
        // Ids are UUIDs: a path with anything else names no resource.
        raw.parse::<T>()
            .map(ApiPath)
            .map_err(|_| ApiError::not_found("no such resource: ids are UUIDs"))
    }
}

/// Two path parameters parsed with `FromStr` (e.g. a user id and a session id).
pub struct ApiPath2<A, B>(pub A, pub B);

impl<S: Send + Sync, A: std::str::FromStr, B: std::str::FromStr> FromRequestParts<S>
    for ApiPath2<A, B>
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let axum::extract::Path((a, b)): axum::extract::Path<(String, String)> =
            axum::extract::Path::from_request_parts(parts, state)
                .await
                .map_err(|_| ApiError::not_found("no such resource"))?;
        let invalid = || ApiError::not_found("no such resource: ids are UUIDs");
        Ok(ApiPath2(
            a.parse::<A>().map_err(|_| invalid())?,
            b.parse::<B>().map_err(|_| invalid())?,
        ))
    }
}

/// Query-string parameters; unknown parameters are refused.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        let query = parts.uri.query().unwrap_or_default();
        if let Some((name, _)) =
            form_urlencoded::parse(query.as_bytes()).find(|(_, v)| v.contains('\0'))
        {
            return Err(ApiError::invalid_request(vec![FieldError::new(
                name.into_owned(),
                "nul_character",
                "must not contain the NUL character (U+0000)",
            )]));
        }
        let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(de)
            .map(ApiQuery)
            .map_err(|e| {
                let path = e.path().to_string();
                ApiError::invalid_request(vec![FieldError::new(
                    if path == "." { String::new() } else { path },
                    "invalid_parameter",
                    e.into_inner().to_string(),
                )])
            })
    }
}

/// The version named by `If-Match`; `None` when absent or `*`.
///
/// The header holds `*` or a list of entity tags (RFC 9110 §13.1.1); this API's ETags are
/// versions (`"7"`, or weak `W/"7"`). A header that names no version this API issues (any
/// other tag, or nothing that parses as one) can never match, so the request fails its
/// precondition (412). Naming several versions is refused as ambiguous (400): each change
/// is judged against one.
pub struct IfMatch(pub Option<i64>);

impl<S: Send + Sync> FromRequestParts<S> for IfMatch {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        let Some(value) = parts.headers.get(header::IF_MATCH) else {
            return Ok(IfMatch(None));
        };
        let raw = String::from_utf8_lossy(value.as_bytes());
        let mut versions = Vec::new();
        for tag in raw.split(',').map(str::trim) {
            if tag == "*" {
                return Ok(IfMatch(None));
            }
            let version = tag
                .strip_prefix("W/")
                .unwrap_or(tag)
                .strip_prefix('"')
                .and_then(|t| t.strip_suffix('"'))
                .filter(|t| t.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|t| t.parse::<i64>().ok());
            versions.extend(version);
        }
        match versions.as_slice() {
            [] => Err(ApiError::of(Code::UnknownEtag)),
            [one] => Ok(IfMatch(Some(*one))),
            _ => Err(ApiError::of(Code::InvalidIfMatch)),
        }
    }
}

/// The ETag of a versioned entity.
pub fn etag(version: i64) -> header::HeaderValue {
    header::HeaderValue::from_str(&format!("\"{version}\""))
        .unwrap_or(header::HeaderValue::from_static("\"0\""))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use serde_json::{json, Value};

    #[derive(Debug, Deserialize, PartialEq)]
    struct Body {
        count: i64,
        name: String,
        #[serde(default)]
        extra: Option<Value>,
    }

    #[test]
    fn plain_texts_are_told_apart_from_those_the_general_path_changes() {
        for plain in [
            r#"{"count": 3, "name": "Zoë e.g. 1.5 \"q\" \\u0000"}"#,
            r#"{"a": [true, false, null, -12], "b": {"c": "3.0e5"}}"#,
            r#"{"escaped": "\\\\u0000"}"#,
        ] {
            assert!(is_plain(plain.as_bytes()), "{plain}");
        }
        for changed in [
            r#"{"count": 3.0}"#,
            r#"{"count": 1e3}"#,
            r#"{"count": 2E1}"#,
            r#"{"count": -1.5}"#,
            r#"{"name": "a\u0000b"}"#,
            r#"{"a\u0000": 1}"#,
        ] {
            assert!(!is_plain(changed.as_bytes()), "{changed}");
        }
    }

    #[test]
    fn both_paths_answer_alike() {
        let direct: Body = parse_json(br#"{"count": 3, "name": "x", "extra": {"n": 2}}"#).unwrap();
        let general: Body =
            parse_json(br#"{"count": 3.0, "name": "x", "extra": {"n": 2.0}}"#).unwrap();
        assert_eq!(direct, general);
        assert_eq!(general.extra, Some(json!({"n": 2})));
        // A duplicate key fails the direct read and takes the general path: the last wins.
        let dup: Body = parse_json(br#"{"count": 1, "count": 2, "name": "x"}"#).unwrap();
        assert_eq!(dup.count, 2);
        let err = parse_json::<Body>(br#"{"count": 1}"#).unwrap_err();
        assert!(format!("{err:?}").contains("name"), "{err:?}");
        let err = parse_json::<Body>(br#"{"count": 1, "name": "a\u0000"}"#).unwrap_err();
        assert!(format!("{err:?}").contains("nul_character"), "{err:?}");
    }
}
