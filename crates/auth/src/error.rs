//! What can go wrong in an authentication flow, in terms the interface layer maps to
//! problem responses. Messages never say whether an account exists.

use std::time::Duration;

use domain::FieldError;

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Wrong login or password, unknown tenant, or a locked account: one answer for all.
    #[error("the login or password is wrong, or the account is temporarily locked")]
    InvalidCredentials,
    /// The password was right but the account may not sign in.
    #[error("{message}")]
    AccountUnavailable { code: &'static str, message: String },
    /// A single-use token or code that is unknown, used, expired or wrong.
    #[error("{message}")]
    InvalidToken { code: &'static str, message: String },
    /// An access or refresh token that does not (or no longer) authenticate.
    #[error("{message}")]
    Unauthenticated { code: &'static str, message: String },
    #[error("{message}")]
    Forbidden { code: &'static str, message: String },
    /// The password does not satisfy the tenant's policy, or another field is invalid.
    #[error("invalid input")]
    Validation(Vec<FieldError>),
    #[error("too many requests")]
    RateLimited { retry_after: Duration },
    /// The password-hashing pool is saturated.
    #[error("busy")]
    Busy { retry_after: Duration },
    #[error(transparent)]
    Domain(#[from] domain::Error),
    #[error("{0}")]
    Internal(String),
}

impl AuthError {
    pub(crate) fn token(code: &'static str, message: &str) -> Self {
        Self::InvalidToken {
            code,
            message: message.to_owned(),
        }
    }

    pub(crate) fn field(field: &str, code: &str, message: impl Into<String>) -> Self {
        Self::Validation(vec![FieldError::new(field, code, message)])
    }
}

impl From<crate::passwords::HashError> for AuthError {
    fn from(e: crate::passwords::HashError) -> Self {
        match e {
            crate::passwords::HashError::Busy { retry_after } => Self::Busy { retry_after },
            crate::passwords::HashError::Internal(m) => Self::Internal(m),
        }
    }
}

impl From<crate::keys::KeyError> for AuthError {
    fn from(e: crate::keys::KeyError) -> Self {
        Self::Internal(e.to_string())
    }
}

pub type AuthResult<T> = Result<T, AuthError>;
