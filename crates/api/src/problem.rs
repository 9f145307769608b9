//! RFC 9457 problem details. Every error the API returns is an `application/problem+json`
//! body with a stable `type` URI and `code`, the HTTP status, a human `title`/`detail`, and
//! for validation failures the list of offending fields. Internal causes are logged with
//! the request's span (which carries the request id) and never put in the response.

use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use domain::{Code, Error, FieldError, Kind};
use serde::Serialize;
use utoipa::ToSchema;

pub const PROBLEM_JSON: &str = "application/problem+json";

/// The problem document. `code` is the stable machine-readable identifier; `type` is the
/// same as a URN.
#[derive(Debug, Serialize, ToSchema)]
pub struct Problem {
    #[serde(rename = "type")]
    pub type_uri: String,
    pub title: String,
    pub status: u16,
    pub code: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// For validation failures: every offending field.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<FieldErrorSchema>)]
    pub errors: Vec<FieldError>,
    /// For authorization refusals: the structured reason of the decision.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub reason: Option<serde_json::Value>,
}

/// One offending request field.
#[derive(ToSchema)]
#[schema(as = FieldError)]
#[allow(dead_code)]
pub struct FieldErrorSchema {
    /// The field's path in the request, e.g. `email` or `custom_attributes.key`.
    field: String,
    /// Stable machine-readable code, e.g. `invalid_email`.
    code: String,
    message: String,
}

/// An error on its way to becoming a problem response.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    title: &'static str,
    detail: Option<String>,
    errors: Vec<FieldError>,
    reason: Option<Box<serde_json::Value>>,
    headers: Vec<(HeaderName, HeaderValue)>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, title: &'static str) -> Self {
        Self {
            status,
            code,
            title,
            detail: None,
            errors: Vec::new(),
            reason: None,
            headers: Vec::new(),
        }
    }

    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    pub fn errors(mut self, errors: Vec<FieldError>) -> Self {
        self.errors = errors;
        self
    }

    /// The structured reason of an authorization refusal.
    pub fn reason(mut self, reason: serde_json::Value) -> Self {
        self.reason = Some(Box::new(reason));
        self
    }

    pub fn header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    pub fn code(&self) -> &'static str {
        self.code
    }

    pub fn unauthorized(detail: &str) -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Authentication required",
        )
        .detail(detail)
        .header(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"))
    }

    pub fn forbidden(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, code, "Forbidden").detail(detail)
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", "Not found").detail(detail)
    }

    /// A query parameter or path segment could not be understood.
    pub fn invalid_request(errors: Vec<FieldError>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Invalid request parameters",
        )
        .detail("one or more parameters are invalid; see `errors`")
        .errors(errors)
    }

    /// The body is well-formed JSON but not an acceptable value.
    pub fn validation(errors: Vec<FieldError>) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
            "Validation failed",
        )
        .detail("one or more fields are invalid; see `errors`")
        .errors(errors)
    }

    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "Internal server error",
        )
        .detail("an unexpected error occurred; quote the X-Request-Id header when reporting it")
    }

    /// Turns domain validation errors into a 400 (for query/path input) instead of a 422.
    pub fn from_query_error(e: Error) -> Self {
        match e {
            Error::Validation(errors) => Self::invalid_request(errors),
            other => other.into(),
        }
    }
}

/// The status of a kind of refusal.
pub fn status_of(kind: Kind) -> StatusCode {
    match kind {
        Kind::BadRequest => StatusCode::BAD_REQUEST,
        Kind::Unauthenticated => StatusCode::UNAUTHORIZED,
        Kind::Forbidden => StatusCode::FORBIDDEN,
        Kind::NotFound => StatusCode::NOT_FOUND,
        Kind::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        Kind::Conflict => StatusCode::CONFLICT,
        Kind::PreconditionFailed => StatusCode::PRECONDITION_FAILED,
        Kind::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        Kind::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        Kind::Unprocessable => StatusCode::UNPROCESSABLE_ENTITY,
        Kind::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
        Kind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        Kind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
    }
}

fn title_of(kind: Kind) -> &'static str {
    match kind {
        Kind::BadRequest => "Bad request",
        Kind::Unauthenticated => "Authentication required",
        Kind::Forbidden => "Forbidden",
        Kind::NotFound => "Not found",
        Kind::MethodNotAllowed => "Method not allowed",
        Kind::Conflict => "Conflict",
        Kind::PreconditionFailed => "Precondition failed",
        Kind::PayloadTooLarge => "Payload too large",
        Kind::UnsupportedMediaType => "Unsupported media type",
        Kind::Unprocessable => "Validation failed",
        Kind::TooManyRequests => "Too many requests",
        Kind::Internal => "Internal server error",
        Kind::Unavailable => "Service unavailable",
    }
}

impl ApiError {
    /// The problem of a catalogue code, with its message as the detail.
    pub fn of(code: Code) -> Self {
        let kind = code.kind();
        let e = Self::new(status_of(kind), code.as_str(), title_of(kind)).detail(code.message());
        if kind == Kind::Unauthenticated {
            e.header(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"))
        } else {
            e
        }
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        match e {
            Error::Validation(errors) => Self::validation(errors),
            Error::NotFound { entity } => Self::not_found(format!("{entity} not found")),
            Error::Refused {
                code,
                fields,
                reason,
            } => {
                let mut out = Self::of(code);
                if !fields.is_empty() {
                    out = out.errors(fields.iter().map(|f| FieldError::rule(*f, code)).collect());
                }
                if let Some(r) = reason {
                    out = out.reason(*r);
                }
                out
            }
            e @ Error::PreconditionFailed { .. } => {
                Self::of(Code::PreconditionFailed).detail(e.to_string())
            }
            Error::RateLimited { retry_after: d } => {
                Self::of(Code::RateLimited).header(header::RETRY_AFTER, retry_after(d))
            }
            Error::Busy { retry_after: d } => {
                Self::of(Code::Busy).header(header::RETRY_AFTER, retry_after(d))
            }
            Error::Unavailable(cause) => {
                tracing::error!(error = %cause, "storage unavailable");
                Self::of(Code::ServiceUnavailable)
                    .header(header::RETRY_AFTER, HeaderValue::from_static("1"))
            }
            Error::Internal(cause) => {
                tracing::error!(error = %cause, "internal error");
                Self::internal()
            }
        }
    }
}

fn retry_after(d: std::time::Duration) -> HeaderValue {
    // Whole seconds, rounded up, at least one.
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    HeaderValue::from(secs.max(1))
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Problem {
            type_uri: format!("urn:portcullis:problem:{}", self.code),
            title: self.title.to_owned(),
            status: self.status.as_u16(),
            code: self.code.to_owned(),
            detail: self.detail,
            errors: self.errors,
            reason: self.reason.map(|r| *r),
        };
        let bytes = serde_json::to_vec(&body).unwrap_or_default();
        let mut res = (self.status, bytes).into_response();
        res.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        for (name, value) in self.headers {
            res.headers_mut().insert(name, value);
        }
        res
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
