//! `/api/v1/me*`: the signed-in user's own profile, password, sessions and second factor.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use domain::auth::{ProfileField, Session};
use domain::users::{User, UserPatch};
use domain::values::{AvatarUrl, DisplayName, Label, Language, Phone, Username};
use domain::{FieldError, SessionId, ValidationErrors};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::UserCaller;
use crate::extract::{ApiJson, ApiPath};
use crate::parse::{patch, required_patch};
use crate::problem::{ApiError, ApiResult, Problem};
use crate::state::AppState;
use portcullis_services::users::Profile;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_me, update_me))
        .routes(routes!(change_password))
        .routes(routes!(list_sessions, revoke_other_sessions))
        .routes(routes!(revoke_session))
        .routes(routes!(enrol_totp, remove_totp))
        .routes(routes!(confirm_totp))
        .routes(routes!(regenerate_recovery_codes))
}

/// The signed-in user.
#[derive(Debug, Serialize, ToSchema)]
pub struct Me {
    pub user: User,
    /// Profile fields the tenant asks for that are still empty.
    pub missing_profile_fields: Vec<ProfileField>,
    pub email_verified: bool,
    pub mfa_enabled: bool,
    /// Unused recovery codes, when TOTP is enrolled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recovery_codes_left: Option<u32>,
    pub password_changed_at: Option<chrono::DateTime<chrono::Utc>>,
    /// The session of this request.
    pub session_id: SessionId,
}

fn me(caller: &UserCaller, p: Profile) -> Me {
    Me {
        user: p.user,
        missing_profile_fields: p.missing_profile_fields,
        email_verified: p.email_verified,
        mfa_enabled: p.mfa_enabled,
        recovery_codes_left: p.recovery_codes_left,
        password_changed_at: p.password_changed_at,
        session_id: session_id(caller),
    }
}

/// The session of the request.
fn session_id(caller: &UserCaller) -> SessionId {
    caller.session.session_id
}

/// The signed-in user's profile.
#[utoipa::path(get, path = "/api/v1/me", tag = "me", security(("bearer" = [])),
    responses(
        (status = 200, description = "Profile", body = Me),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
    ))]
async fn get_me(State(state): State<AppState>, caller: UserCaller) -> ApiResult<Json<Me>> {
    let profile = state.services.profile(&caller).await?;
    Ok(Json(me(&caller, profile)))
}

/// Changes to one's own profile. `full_name`, `username`, `phone`, `language` and
/// `avatar_url` are always the user's to change; `employee_id` and `cost_center` only when
/// the tenant asks for them in its profile fields, and only to fill them in while empty.
/// `department` and `job_title` feed authorization decisions: an administrator sets them
/// (refused here with `field_not_self_service`, like email changes).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateMe {
    #[serde(default, with = "::serde_with::rust::double_option")]
    #[schema(value_type = String, required = false)]
    pub full_name: Option<Option<String>>,
    #[serde(default, with = "::serde_with::rust::double_option")]
    #[schema(value_type = Option<String>, nullable)]
    pub username: Option<Option<String>>,
    #[serde(default, with = "::serde_with::rust::double_option")]
    #[schema(value_type = Option<String>, nullable)]
    pub phone: Option<Option<String>>,
    #[serde(default, with = "::serde_with::rust::double_option")]
    #[schema(value_type = Option<String>, nullable)]
    pub language: Option<Option<String>>,
    #[serde(default, with = "::serde_with::rust::double_option")]
    #[schema(value_type = Option<String>, nullable)]
    pub avatar_url: Option<Option<String>>,
    #[serde(default, with = "::serde_with::rust::double_option")]
    #[schema(value_type = Option<String>, nullable)]
    pub department: Option<Option<String>>,
    #[serde(default, with = "::serde_with::rust::double_option")]
    #[schema(value_type = Option<String>, nullable)]
    pub job_title: Option<Option<String>>,
    #[serde(default, with = "::serde_with::rust::double_option")]
    #[schema(value_type = Option<String>, nullable)]
    pub employee_id: Option<Option<String>>,
    #[serde(default, with = "::serde_with::rust::double_option")]
    #[schema(value_type = Option<String>, nullable)]
    pub cost_center: Option<Option<String>>,
}

/// Update one's own profile.
#[utoipa::path(patch, path = "/api/v1/me", tag = "me", request_body = UpdateMe,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The updated profile", body = Me),
        (status = 403, description = "A field the tenant does not let users change", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Username taken", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields", body = Problem, content_type = "application/problem+json"),
    ))]
async fn update_me(
    State(state): State<AppState>,
    caller: UserCaller,
    ApiJson(body): ApiJson<UpdateMe>,
) -> ApiResult<Json<Me>> {
    let mut errs = ValidationErrors::new();
    let p = UserPatch {
        full_name: required_patch(&mut errs, "full_name", body.full_name, DisplayName::parse),
        username: patch(&mut errs, "username", body.username, Username::parse),
        phone: patch(&mut errs, "phone", body.phone, Phone::parse),
        language: patch(&mut errs, "language", body.language, Language::parse),
        avatar_url: patch(&mut errs, "avatar_url", body.avatar_url, AvatarUrl::parse),
        department: patch(&mut errs, "department", body.department, Label::parse),
        job_title: patch(&mut errs, "job_title", body.job_title, Label::parse),
        employee_id: patch(&mut errs, "employee_id", body.employee_id, Label::parse),
        cost_center: patch(&mut errs, "cost_center", body.cost_center, Label::parse),
        ..UserPatch::default()
    };
    errs.finish()?;
    let profile = state.services.update_profile(&caller, p).await?;
    Ok(Json(me(&caller, profile)))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangePassword {
    #[schema(value_type = String)]
    pub current_password: SecretString,
    #[schema(value_type = String)]
    pub new_password: SecretString,
}

/// Change one's own password; the other sessions end.
#[utoipa::path(post, path = "/api/v1/me/password", tag = "me", request_body = ChangePassword,
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Changed"),
        (status = 422, description = "Wrong current password, or the policy refuses the new one", body = Problem, content_type = "application/problem+json"),
    ))]
async fn change_password(
    State(state): State<AppState>,
    caller: UserCaller,
    ApiJson(body): ApiJson<ChangePassword>,
) -> ApiResult<StatusCode> {
    if body.current_password.expose_secret().len() > 1024
        || body.new_password.expose_secret().len() > 1024
    {
        return Err(ApiError::validation(vec![FieldError::new(
            "new_password",
            "too_long",
            "is too long",
        )]));
    }
    state
        .services
        .change_own_password(&caller, body.current_password, body.new_password)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A session as its owner or an administrator sees it.
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionView {
    #[serde(flatten)]
    pub session: Session,
    /// Whether this is the session of the request.
    pub current: bool,
}

/// The caller's active sessions, newest first.
#[utoipa::path(get, path = "/api/v1/me/sessions", tag = "me", security(("bearer" = [])),
    responses((status = 200, description = "Active sessions", body = [SessionView])))]
async fn list_sessions(
    State(state): State<AppState>,
    caller: UserCaller,
) -> ApiResult<Json<Vec<SessionView>>> {
    let sessions = state.services.my_sessions(&caller).await?;
    let current = session_id(&caller);
    Ok(Json(
        sessions
            .into_iter()
            .map(|s| SessionView {
                current: s.id == current,
                session: s,
            })
            .collect(),
    ))
}

/// How many sessions were revoked.
#[derive(Debug, Serialize, ToSchema)]
pub struct Revoked {
    pub revoked: u64,
}

/// Sign out every other session of the caller.
#[utoipa::path(delete, path = "/api/v1/me/sessions", tag = "me", security(("bearer" = [])),
    responses((status = 200, description = "Revoked", body = Revoked)))]
async fn revoke_other_sessions(
    State(state): State<AppState>,
    caller: UserCaller,
) -> ApiResult<Json<Revoked>> {
    let revoked = state.services.revoke_my_sessions(&caller, None).await?;
    Ok(Json(Revoked { revoked }))
}

/// Sign out one of the caller's sessions (the current one too).
#[utoipa::path(delete, path = "/api/v1/me/sessions/{id}", tag = "me",
    params(("id" = uuid::Uuid, Path, description = "Session id")),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Revoked"),
        (status = 404, description = "No such active session of the caller", body = Problem, content_type = "application/problem+json"),
    ))]
async fn revoke_session(
    State(state): State<AppState>,
    caller: UserCaller,
    ApiPath(id): ApiPath<SessionId>,
) -> ApiResult<StatusCode> {
    state.services.revoke_my_sessions(&caller, Some(id)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A TOTP enrolment to scan.
#[derive(Serialize, ToSchema)]
pub struct TotpEnrolmentView {
    /// `otpauth://totp/…` for authenticator apps (contains the secret).
    pub otpauth_uri: String,
    /// The same URI as a QR code, an SVG document.
    pub qr_svg: String,
}

/// Start a TOTP enrolment; confirm it with a first code. Restarting replaces an
/// unconfirmed enrolment.
#[utoipa::path(post, path = "/api/v1/me/mfa/totp", tag = "me", security(("bearer" = [])),
    responses(
        (status = 200, description = "Scan this", body = TotpEnrolmentView),
        (status = 409, description = "TOTP already enrolled", body = Problem, content_type = "application/problem+json"),
    ))]
async fn enrol_totp(
    State(state): State<AppState>,
    caller: UserCaller,
) -> ApiResult<Json<TotpEnrolmentView>> {
    let e = state.services.enrol_totp(&caller).await?;
    Ok(Json(TotpEnrolmentView {
        otpauth_uri: e.otpauth_uri,
        qr_svg: e.qr_svg,
    }))
}

/// Remove TOTP (and its recovery codes). Needs a session signed in with the second factor.
#[utoipa::path(delete, path = "/api/v1/me/mfa/totp", tag = "me", security(("bearer" = [])),
    responses(
        (status = 204, description = "Removed"),
        (status = 403, description = "The session did not use the second factor", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No TOTP enrolled", body = Problem, content_type = "application/problem+json"),
    ))]
async fn remove_totp(State(state): State<AppState>, caller: UserCaller) -> ApiResult<StatusCode> {
    state.services.remove_totp(&caller).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfirmTotp {
    /// The current 6-digit code.
    #[schema(value_type = String)]
    pub code: SecretString,
}

/// Recovery codes, shown once: each signs in once in place of a TOTP code.
#[derive(Serialize, ToSchema)]
pub struct RecoveryCodes {
    pub recovery_codes: Vec<String>,
}

/// Confirm a TOTP enrolment with a first code; answers the ten recovery codes.
#[utoipa::path(post, path = "/api/v1/me/mfa/totp/confirm", tag = "me", request_body = ConfirmTotp,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Enrolled", body = RecoveryCodes),
        (status = 409, description = "No enrolment pending", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Wrong code", body = Problem, content_type = "application/problem+json"),
    ))]
async fn confirm_totp(
    State(state): State<AppState>,
    caller: UserCaller,
    ApiJson(body): ApiJson<ConfirmTotp>,
) -> ApiResult<Json<RecoveryCodes>> {
    let recovery_codes = state
        .services
        .confirm_totp(&caller, body.code.expose_secret())
        .await?;
    Ok(Json(RecoveryCodes { recovery_codes }))
}

/// Replace the recovery codes. Needs a session signed in with the second factor.
#[utoipa::path(post, path = "/api/v1/me/mfa/recovery-codes", tag = "me", security(("bearer" = [])),
    responses(
        (status = 200, description = "New codes; the old ones no longer work", body = RecoveryCodes),
        (status = 403, description = "The session did not use the second factor", body = Problem, content_type = "application/problem+json"),
    ))]
async fn regenerate_recovery_codes(
    State(state): State<AppState>,
    caller: UserCaller,
) -> ApiResult<Json<RecoveryCodes>> {
    let recovery_codes = state.services.regenerate_recovery_codes(&caller).await?;
    Ok(Json(RecoveryCodes { recovery_codes }))
}
