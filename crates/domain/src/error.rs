//! The errors the domain and the storage layer report. The interface layer maps each kind
//! to a problem+json status and code; the internal causes only ever reach the log.

use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

use crate::code::Code;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One offending field of a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    /// The field's path in the request, e.g. `email` or `custom_attributes`.
    pub field: String,
    /// A stable machine-readable code, e.g. `invalid_email`.
    pub code: String,
    /// A human-readable explanation.
    pub message: String,
}

impl FieldError {
    /// A field that broke the rule `code`, explained by the catalogue's message.
    pub fn rule(field: impl Into<String>, code: Code) -> Self {
        Self::new(field, code.as_str(), code.message())
    }

    pub fn new(
        field: impl Into<String>,
        code: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            field: field.into(),
            code: code.into(),
            message: message.into(),
        }
    }
}

/// Collects every field error of a request, so that a client learns all of them at once.
#[derive(Debug, Default)]
pub struct ValidationErrors(Vec<FieldError>);

impl ValidationErrors {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, e: FieldError) {
        self.0.push(e);
    }

    /// Runs a parse step, recording its error under `field` and returning the value if any.
    pub fn check<T>(&mut self, r: std::result::Result<T, FieldError>) -> Option<T> {
        match r {
            Ok(v) => Some(v),
            Err(e) => {
                self.0.push(e);
                None
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `Ok(())` when nothing was recorded, else the validation error.
    pub fn finish(self) -> Result<()> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(Error::Validation(self.0))
        }
    }
}

type Cause = Box<dyn std::error::Error + Send + Sync + 'static>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request's content is invalid; every offending field is listed.
    #[error("validation failed")]
    Validation(Vec<FieldError>),
    /// The entity does not exist in the caller's tenant (or at all).
    #[error("{entity} not found")]
    NotFound { entity: &'static str },
    /// A rule refuses the request: a conflict with stored data, a missing permission, a
    /// credential that does not authenticate, a token that does not work. The code (from
    /// the catalogue) says which and how it is answered; `fields` name the request fields
    /// it is about, `reason` carries structured details (e.g. an authorization decision).
    #[error("{}", code.message())]
    Refused {
        code: Code,
        fields: Vec<&'static str>,
        reason: Option<Box<Value>>,
    },
    /// `If-Match` named a version that is no longer current.
    #[error("the {entity} was modified since version {expected}; current version is {current}")]
    PreconditionFailed {
        entity: &'static str,
        expected: i64,
        current: i64,
    },
    /// Too many attempts; retry after the delay.
    #[error("too many requests")]
    RateLimited { retry_after: Duration },
    /// The password-hashing pool is saturated; retry after the delay.
    #[error("busy")]
    Busy { retry_after: Duration },
    /// The database cannot be reached or timed out.
    #[error("storage unavailable")]
    Unavailable(#[source] Cause),
    /// Anything else: a bug or an unexpected storage failure.
    #[error("internal error")]
    Internal(#[source] Cause),
}

impl Error {
    pub fn internal(e: impl Into<Cause>) -> Self {
        Error::Internal(e.into())
    }

    pub fn field(field: &str, code: &str, message: impl Into<String>) -> Self {
        Error::Validation(vec![FieldError::new(field, code, message)])
    }

    /// A refusal by the rule `code`.
    pub fn refused(code: Code) -> Self {
        Error::Refused {
            code,
            fields: Vec::new(),
            reason: None,
        }
    }

    /// A refusal by the rule `code` about the request field `field`.
    pub fn refused_field(code: Code, field: &'static str) -> Self {
        Error::Refused {
            code,
            fields: vec![field],
            reason: None,
        }
    }

    /// A refusal by the rule `code` about several request fields.
    pub fn refused_fields(code: Code, fields: Vec<&'static str>) -> Self {
        Error::Refused {
            code,
            fields,
            reason: None,
        }
    }

    /// A field of the request broke the rule `code` (answered as a validation failure).
    pub fn rule(field: &str, code: Code) -> Self {
        Error::Validation(vec![FieldError::rule(field, code)])
    }

    /// Adds structured details to a refusal (other errors are returned unchanged).
    pub fn with_reason(self, reason: Value) -> Self {
        match self {
            Error::Refused { code, fields, .. } => Error::Refused {
                code,
                fields,
                reason: Some(Box::new(reason)),
            },
            other => other,
        }
    }

    /// The refusal's code, if the error is one.
    pub fn code(&self) -> Option<Code> {
        match self {
            Error::Refused { code, .. } => Some(*code),
            _ => None,
        }
    }
}

impl From<FieldError> for Error {
    fn from(e: FieldError) -> Self {
        Error::Validation(vec![e])
    }
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

impl std::error::Error for FieldError {}
