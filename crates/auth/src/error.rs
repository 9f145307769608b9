//! Errors of the authentication mechanisms and flows are the domain's ([`domain::Error`]),
//! with codes from its catalogue: one error type from the store to the response. Messages
//! never say whether an account exists.

pub type AuthError = domain::Error;

impl From<crate::passwords::HashError> for domain::Error {
    fn from(e: crate::passwords::HashError) -> Self {
        match e {
            crate::passwords::HashError::Busy { retry_after } => Self::Busy { retry_after },
            crate::passwords::HashError::TooCostly => {
                Self::internal("a stored password hash is above the cost bounds")
            }
            crate::passwords::HashError::Internal(m) => Self::internal(m),
        }
    }
}

impl From<crate::keys::KeyError> for domain::Error {
    fn from(e: crate::keys::KeyError) -> Self {
        Self::internal(e.to_string())
    }
}

pub type AuthResult<T> = Result<T, AuthError>;
