//! Extractors that turn every malformed input into a clear 4xx problem instead of axum's
//! plain-text rejections: JSON bodies (content type, size, syntax, unknown fields, wrong
//! types, with the offending field's path), path ids, query strings and `If-Match`.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
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

/// Deserialises JSON, reporting the path of the offending field.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        match inner.classify() {
            serde_json::error::Category::Data => {
                let field = if path == "." { String::new() } else { path };
                ApiError::validation(vec![FieldError::new(
                    field,
                    "invalid_value",
                    strip_position(&inner.to_string()),
                )])
            }
            _ => ApiError::new(StatusCode::BAD_REQUEST, "malformed_json", "Malformed JSON")
                .detail(inner.to_string()),
        }
    })
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
        raw.parse::<T>().map(ApiPath).map_err(|_| {
            ApiError::invalid_request(vec![FieldError::new("id", "invalid_id", "must be a UUID")])
        })
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
        let invalid = || {
            ApiError::invalid_request(vec![FieldError::new("id", "invalid_id", "must be a UUID")])
        };
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

/// The version named by `If-Match` (`"7"`, `W/"7"` or `*`); `None` when absent or `*`.
pub struct IfMatch(pub Option<i64>);

impl<S: Send + Sync> FromRequestParts<S> for IfMatch {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        let Some(value) = parts.headers.get(header::IF_MATCH) else {
            return Ok(IfMatch(None));
        };
        let invalid = || {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_if_match",
                "Invalid If-Match",
            )
            .detail("If-Match must be an ETag returned by this API, such as \"3\", or *")
        };
        let raw = value.to_str().map_err(|_| invalid())?.trim();
        if raw == "*" {
            return Ok(IfMatch(None));
        }
        let tag = raw.strip_prefix("W/").unwrap_or(raw);
        let version = tag
            .strip_prefix('"')
            .and_then(|t| t.strip_suffix('"'))
            .and_then(|t| t.parse::<i64>().ok())
            .ok_or_else(invalid)?;
        Ok(IfMatch(Some(version)))
    }
}

/// The ETag of a versioned entity.
pub fn etag(version: i64) -> header::HeaderValue {
    header::HeaderValue::from_str(&format!("\"{version}\""))
        .unwrap_or(header::HeaderValue::from_static("\"0\""))
}
