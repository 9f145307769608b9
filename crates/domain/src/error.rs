//! The errors the domain and the storage layer report. The interface layer maps each kind
//! to a problem+json status and code; the internal causes only ever reach the log.

use serde::Serialize;

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
    /// The change conflicts with existing data, e.g. a duplicate email.
    #[error("{message}")]
    Conflict {
        code: &'static str,
        message: String,
        field: Option<&'static str>,
    },
    /// `If-Match` named a version that is no longer current.
    #[error("the {entity} was modified since version {expected}; current version is {current}")]
    PreconditionFailed {
        entity: &'static str,
        expected: i64,
        current: i64,
    },
    /// A plan quota would be exceeded.
    #[error("{message}")]
    QuotaExceeded { message: String },
    /// The action is not allowed in the current state, e.g. deactivating one's own tenant.
    #[error("{message}")]
    Forbidden { code: &'static str, message: String },
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
