//! Administration of sign-in: a user's password and sessions, invitations, and the
//! tenant's sign-in settings.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use domain::auth::{AuthSettings, PasswordStatus, Session};
use domain::values::Email;
use domain::{FieldError, SessionId, UserId};
use portcullis_auth::passwords::import_keycloak;
use portcullis_services::signin::PasswordInput;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Caller;
use crate::extract::{ApiJson, ApiPath, ApiPath2};
use crate::me::Revoked;
use crate::problem::{ApiError, ApiResult, Problem};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_password, set_password))
        .routes(routes!(list_user_sessions, revoke_user_sessions))
        .routes(routes!(revoke_user_session))
        .routes(routes!(create_invitation))
        .routes(routes!(get_settings, put_settings))
}

/// A password given by an administrator: exactly one of `password` (checked against the
/// tenant's policy) and `password_hash` (imported from another system).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetPassword {
    #[schema(value_type = Option<String>)]
    pub password: Option<SecretString>,
    /// A hash exported from another system, kept until the user's next sign-in re-hashes
    /// it to argon2id: bcrypt (`$2a$`/`$2b$`/`$2y$`), Django (`pbkdf2_sha256$…`,
    /// `argon2$…`, `bcrypt_sha256$…`), a PHC argon2 string, or a Keycloak credential object
    /// `{"algorithm": "pbkdf2-sha256", "hashIterations": 27500, "salt": "…", "value": "…"}`.
    #[schema(value_type = Option<Object>)]
    pub password_hash: Option<Value>,
    /// Require a new password at the next sign-in.
    #[serde(default)]
    pub must_change_password: bool,
}

/// Turns the password fields of a request into the service's input.
pub fn password_input(
    password: Option<SecretString>,
    password_hash: Option<Value>,
) -> ApiResult<Option<PasswordInput>> {
    match (password, password_hash) {
        (Some(_), Some(_)) => Err(ApiError::validation(vec![FieldError::new(
            "password_hash",
            "conflicting",
            "give either password or password_hash, not both",
        )])),
        (Some(p), None) if p.expose_secret().len() > 1024 => {
            Err(ApiError::validation(vec![FieldError::new(
                "password",
                "too_long",
                "is too long",
            )]))
        }
        (Some(p), None) => Ok(Some(PasswordInput::Plain(p))),
        (None, Some(Value::String(h))) => Ok(Some(PasswordInput::Imported(h))),
        (None, Some(Value::Object(o))) => {
            let bad = |m: String| {
                ApiError::validation(vec![FieldError::new(
                    "password_hash",
                    domain::Code::UnsupportedHash.as_str(),
                    m,
                )])
            };
            let text = |k: &str| o.get(k).and_then(Value::as_str);
            let (Some(alg), Some(salt), Some(value)) =
                (text("algorithm"), text("salt"), text("value"))
            else {
                return Err(bad(
                    "a Keycloak credential needs algorithm, hashIterations, salt and value".into(),
                ));
            };
            let iterations = o
                .get("hashIterations")
                .and_then(Value::as_u64)
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| bad("hashIterations must be a positive integer".into()))?;
            let canonical = import_keycloak(alg, iterations, salt, value).map_err(bad)?;
            Ok(Some(PasswordInput::Imported(canonical)))
        }
        (None, Some(_)) => Err(ApiError::validation(vec![FieldError::new(
            "password_hash",
            "invalid_type",
            "must be a hash string or a Keycloak credential object",
        )])),
        (None, None) => Ok(None),
    }
}

/// A user's password state.
#[utoipa::path(get, path = "/api/v1/users/{id}/password", tag = "users",
    params(("id" = uuid::Uuid, Path, description = "User id")),
    security(("bearer" = [])),
    responses(
        (status = 403, description = "Not allowed", body = Problem, content_type = "application/problem+json"),
        (status = 200, description = "Password state", body = PasswordStatus),
        (status = 404, description = "No such user in this tenant", body = Problem, content_type = "application/problem+json"),
    ))]
async fn get_password(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<UserId>,
) -> ApiResult<Json<PasswordStatus>> {
    Ok(Json(state.services.password_status(&caller, id).await?))
}

/// Set a user's password (or import a hash). Every session of the user ends.
#[utoipa::path(put, path = "/api/v1/users/{id}/password", tag = "users", request_body = SetPassword,
    params(("id" = uuid::Uuid, Path, description = "User id")),
    security(("bearer" = [])),
    responses(
        (status = 403, description = "Not allowed", body = Problem, content_type = "application/problem+json"),
        (status = 200, description = "Password set", body = PasswordStatus),
        (status = 404, description = "No such user in this tenant", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The policy refuses the password, or the hash is not supported", body = Problem, content_type = "application/problem+json"),
    ))]
async fn set_password(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<UserId>,
    ApiJson(body): ApiJson<SetPassword>,
) -> ApiResult<Json<PasswordStatus>> {
    let input = password_input(body.password, body.password_hash)?.ok_or_else(|| {
        ApiError::validation(vec![FieldError::new(
            "password",
            "required",
            "give password or password_hash",
        )])
    })?;
    Ok(Json(
        state
            .services
            .set_password(&caller, id, input, body.must_change_password)
            .await?,
    ))
}

/// A user's active sessions, newest first.
#[utoipa::path(get, path = "/api/v1/users/{id}/sessions", tag = "users",
    params(("id" = uuid::Uuid, Path, description = "User id")),
    security(("bearer" = [])),
    responses(
        (status = 403, description = "Not allowed", body = Problem, content_type = "application/problem+json"),
        (status = 200, description = "Active sessions", body = [Session]),
        (status = 404, description = "No such user in this tenant", body = Problem, content_type = "application/problem+json"),
    ))]
async fn list_user_sessions(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<UserId>,
) -> ApiResult<Json<Vec<Session>>> {
    Ok(Json(state.services.list_sessions(&caller, id).await?))
}

/// Revoke every session of a user.
#[utoipa::path(delete, path = "/api/v1/users/{id}/sessions", tag = "users",
    params(("id" = uuid::Uuid, Path, description = "User id")),
    security(("bearer" = [])),
    responses(
        (status = 403, description = "Not allowed", body = Problem, content_type = "application/problem+json"),
        (status = 200, description = "Revoked", body = Revoked),
        (status = 404, description = "No such user in this tenant", body = Problem, content_type = "application/problem+json"),
    ))]
async fn revoke_user_sessions(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<UserId>,
) -> ApiResult<Json<Revoked>> {
    let revoked = state.services.revoke_sessions(&caller, id, None).await?;
    Ok(Json(Revoked { revoked }))
}

/// Revoke one session of a user.
#[utoipa::path(delete, path = "/api/v1/users/{id}/sessions/{session_id}", tag = "users",
    params(("id" = uuid::Uuid, Path, description = "User id"),
           ("session_id" = uuid::Uuid, Path, description = "Session id")),
    security(("bearer" = [])),
    responses(
        (status = 403, description = "Not allowed", body = Problem, content_type = "application/problem+json"),
        (status = 204, description = "Revoked"),
        (status = 404, description = "No such active session of this user", body = Problem, content_type = "application/problem+json"),
    ))]
async fn revoke_user_session(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath2(id, session): ApiPath2<UserId, SessionId>,
) -> ApiResult<StatusCode> {
    state
        .services
        .revoke_sessions(&caller, id, Some(session))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateInvitation {
    pub email: String,
}

/// An invitation on its way.
#[derive(Debug, Serialize, ToSchema)]
pub struct Invitation {
    pub email: String,
    pub expires_at: chrono::DateTime<chrono::Utc>,
}

/// Email a single-use invitation to register (valid 7 days). It admits its addressee
/// whatever the tenant's registration mode, and proves the address.
#[utoipa::path(post, path = "/api/v1/invitations", tag = "users", request_body = CreateInvitation,
    security(("bearer" = [])),
    responses(
        (status = 403, description = "Not allowed", body = Problem, content_type = "application/problem+json"),
        (status = 201, description = "Sent", body = Invitation),
        (status = 422, description = "Invalid email", body = Problem, content_type = "application/problem+json"),
    ))]
async fn create_invitation(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<CreateInvitation>,
) -> ApiResult<(StatusCode, Json<Invitation>)> {
    let email = Email::parse("email", &body.email).map_err(|e| ApiError::validation(vec![e]))?;
    let expires_at = state.services.invite(&caller, &email).await?;
    Ok((
        StatusCode::CREATED,
        Json(Invitation {
            email: email.as_str().to_owned(),
            expires_at,
        }),
    ))
}

/// The tenant's sign-in settings.
#[utoipa::path(get, path = "/api/v1/settings/auth", tag = "tenants", security(("bearer" = [])),
    responses(
        (status = 200, description = "Settings", body = AuthSettings),
        (status = 403, description = "Not allowed", body = Problem, content_type = "application/problem+json"),
    ))]
async fn get_settings(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<AuthSettings>> {
    Ok(Json(state.services.auth_settings(&caller).await?))
}

/// Replace the tenant's sign-in settings (absent fields take their defaults).
#[utoipa::path(put, path = "/api/v1/settings/auth", tag = "tenants", request_body = AuthSettings,
    security(("bearer" = [])),
    responses(
        (status = 403, description = "Not allowed", body = Problem, content_type = "application/problem+json"),
        (status = 200, description = "Settings", body = AuthSettings),
        (status = 422, description = "Invalid settings", body = Problem, content_type = "application/problem+json"),
    ))]
async fn put_settings(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<AuthSettings>,
) -> ApiResult<Json<AuthSettings>> {
    Ok(Json(state.services.put_auth_settings(&caller, body).await?))
}
