//! From sqlx errors to domain errors: what a failed statement means for the caller.

use domain::{Code, Error};
use sqlx::error::ErrorKind;

pub(crate) type Result<T, E = Error> = std::result::Result<T, E>;

/// A sqlx error that no domain rule explains: unavailable if the database cannot be
/// reached or stays locked, internal otherwise.
pub(crate) fn db_err(e: sqlx::Error) -> Error {
    let unavailable = match &e {
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => true,
        sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(d) => d
            .code()
            .and_then(|c| c.parse::<i32>().ok())
            // SQLITE_BUSY (5) and SQLITE_LOCKED (6), with any extended code.
            .is_some_and(|c| matches!(c & 0xff, 5 | 6)),
        _ => false,
    };
    if unavailable {
        Error::Unavailable(Box::new(e))
    } else {
        Error::Internal(Box::new(e))
    }
}

/// Maps the constraint violations a write may hit to the domain errors they mean.
pub(crate) fn write_err(e: sqlx::Error) -> Error {
    if let sqlx::Error::Database(d) = &e {
        let msg = d.message();
        match d.kind() {
            ErrorKind::UniqueViolation => {
                if msg.contains("email_lower") {
                    return Error::refused_field(domain::Code::EmailTaken, "email");
                }
                if msg.contains("username_lower") {
                    return Error::refused_field(domain::Code::UsernameTaken, "username");
                }
                if msg.contains("tenants.slug") {
                    return Error::refused_field(domain::Code::SlugTaken, "slug");
                }
                if msg.contains("users.id") || msg.contains("users.tenant_id, users.id") {
                    return Error::refused_field(domain::Code::IdTaken, "id");
                }
            }
            ErrorKind::ForeignKeyViolation => {
                // The only foreign key a caller can break: tenants are checked before every
                // write, so this is a manager outside the tenant (seeded batches).
                return unknown_manager();
            }
            _ => {}
        }
    }
    db_err(e)
}

pub(crate) fn unknown_manager() -> Error {
    Error::rule("manager_id", Code::UnknownManager)
}

pub(crate) fn corrupt(what: impl std::fmt::Display) -> Error {
    Error::internal(format!("unexpected stored value: {what}"))
}
