//! Mapping `sqlx` errors to domain errors.

use domain::Code;
use domain::Error;

/// SQLSTATEs meaning the database cannot serve the request right now (connection failures,
/// shutdown, overload, timeouts, and the transient failures of concurrent transactions).
fn is_transient_sqlstate(code: &str) -> bool {
    code.starts_with("08") // connection exception
        || matches!(
            code,
            "53300" // too_many_connections
                | "57014" // query_canceled (statement_timeout)
                | "57P01" // admin_shutdown
                | "57P02" // crash_shutdown
                | "57P03" // cannot_connect_now
                | "40001" // serialization_failure
                | "40P01" // deadlock_detected
        )
}

/// Any database error that has no more specific meaning: unavailability or a bug.
pub(crate) fn db(e: sqlx::Error) -> Error {
    let unavailable = match &e {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(d) => d.code().is_some_and(|c| is_transient_sqlstate(&c)),
        _ => false,
    };
    if unavailable {
        Error::Unavailable(Box::new(e))
    } else {
        Error::Internal(Box::new(e))
    }
}

/// Like [`db`], but turning violations of the named constraints into the domain's
/// conflicts (duplicate slug, email, username, secret, key id, role, group or policy name,
/// permission, group grant) and unknown tenants, users, sessions, groups and roles.
pub(crate) fn write(e: sqlx::Error) -> Error {
    if let sqlx::Error::Database(d) = &e {
        let constraint = d.constraint().unwrap_or_default();
        if d.is_unique_violation() {
            match constraint {
                "tenants_slug_key" => return conflict(Code::SlugTaken, Some("slug")),
                "users_tenant_email_key" => return conflict(Code::EmailTaken, Some("email")),
                "users_tenant_username_key" => {
                    return conflict(Code::UsernameTaken, Some("username"))
                }
                "sessions_pkey" => return Error::internal("unexpected duplicate: session_exists"),
                "sessions_cookie_hash_key" | "refresh_tokens_pkey" | "one_time_tokens_pkey" => {
                    return Error::internal("unexpected duplicate: secret_exists")
                }
                "signing_keys_pkey" => return Error::internal("unexpected duplicate: kid_taken"),
                "roles_tenant_name_key" => return role_name_taken(),
                "groups_tenant_name_key" => return conflict(Code::GroupNameTaken, Some("name")),
                "policies_tenant_name_key" => return conflict(Code::PolicyNameTaken, Some("name")),
                "permissions_pkey" => return conflict(Code::PermissionExists, Some("permission")),
                "group_roles_pkey" => return conflict(Code::AlreadyGranted, Some("role_id")),
                _ => {}
            }
        }
        if d.is_foreign_key_violation() {
            // Foreign keys are named `<table>_<column>_fkey` (PostgreSQL's default, spelled
            // out in the migrations).
            if constraint == "groups_parent_id_fkey" {
                return unknown_group();
            }
            if constraint.ends_with("_role_id_fkey") {
                return unknown_role();
            }
            if constraint.ends_with("_group_id_fkey") {
                return Error::NotFound { entity: "group" };
            }
            if constraint.ends_with("_tenant_id_fkey") {
                return Error::NotFound { entity: "tenant" };
            }
            if constraint.ends_with("_user_id_fkey") {
                return Error::NotFound { entity: "user" };
            }
            if constraint.ends_with("_session_id_fkey") {
                return Error::NotFound { entity: "session" };
            }
        }
    }
    db(e)
}

pub(crate) fn conflict(code: Code, field: Option<&'static str>) -> Error {
    Error::Refused {
        code,
        fields: field.into_iter().collect(),
        reason: None,
    }
}

pub(crate) fn role_name_taken() -> Error {
    conflict(Code::RoleNameTaken, Some("name"))
}

/// A parent group that is not a group of the tenant.
pub(crate) fn unknown_group() -> Error {
    Error::rule("parent_id", Code::UnknownGroup)
}

/// A role given to a user or a group that is neither the tenant's nor the super
/// administrator role.
pub(crate) fn unknown_role() -> Error {
    Error::rule("role_id", Code::UnknownRole)
}

/// A stored value the domain does not accept: the schema and the code disagree.
pub(crate) fn corrupt(what: &str, value: &str) -> Error {
    Error::internal(format!("stored {what} {value:?} is not valid"))
}

pub(crate) fn invalid_cursor() -> Error {
    Error::field(
        "cursor",
        "invalid_cursor",
        "is not a cursor returned by this endpoint for this sort order",
    )
}
