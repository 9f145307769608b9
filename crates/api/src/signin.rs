//! `/api/v1/auth/*`: registration, sign-in (password, MFA, magic link, required password
//! change), token refresh, logout, password reset and email verification; and the JWKS of
//! the token-signing keys. Every endpoint here is rate-limited per IP address, and answers
//! about accounts never reveal whether one exists.

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use domain::auth::ProfileField;
use domain::users::{NewUser, UserStatus};
use domain::values::{DisplayName, Email, JsonObject, Username};
use domain::{SessionId, TenantId, UserId, ValidationErrors};
use portcullis_services::signin::{Grant, GrantSecrets, Registration, RequestMeta, Step};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{ClientMeta, UserCaller, CSRF_COOKIE, SESSION_COOKIE};
use crate::extract::ApiJson;
use crate::parse::optional;
use crate::problem::{ApiError, ApiResult, Problem};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(register))
        .routes(routes!(login))
        .routes(routes!(mfa))
        .routes(routes!(password_change))
        .routes(routes!(refresh))
        .routes(routes!(logout))
        .routes(routes!(magic_link))
        .routes(routes!(magic_link_confirm))
        .routes(routes!(password_reset))
        .routes(routes!(password_reset_confirm))
        .routes(routes!(verify_email))
        .routes(routes!(verify_email_resend))
        .routes(routes!(jwks))
        .routes(routes!(tenant_jwks))
}

/// Longest password accepted in a request (policies allow at most 128 characters; this
/// bounds the work of a hostile request before the policy check).
const MAX_PASSWORD_BYTES: usize = 1024;

fn secret(field: &str, value: SecretString) -> ApiResult<SecretString> {
    if value.expose_secret().len() > MAX_PASSWORD_BYTES {
        return Err(ApiError::validation(vec![domain::FieldError::new(
            field,
            "too_long",
            "is too long",
        )]));
    }
    Ok(value)
}
fn checked_ip(state: &AppState, meta: &RequestMeta) -> ApiResult<()> {
    Ok(state.services.signin().check_ip_rate(meta.ip)?)
}

/// How the client holds the session: `token` (default) or `browser` (cookie).
#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SessionModeParam {
    Token,
    Browser,
}

impl SessionModeParam {
    fn as_str(self) -> &'static str {
        match self {
            SessionModeParam::Token => "token",
            SessionModeParam::Browser => "browser",
        }
    }
}

/// The answer of every sign-in step. Exactly one of three shapes:
/// - signed in: `access_token`, `refresh_token`, `token_type`, `expires_in` (token
///   sessions) or `csrf_token` with the session cookie set (browser sessions), plus
///   `session_id` and `missing_profile_fields`;
/// - `mfa_required: true` with `mfa_token` (send it with a code to `/api/v1/auth/mfa`);
/// - `password_change_required: true` with `password_change_token` (send it with a new
///   password to `/api/v1/auth/password-change`).
#[derive(Default, Serialize, ToSchema)]
pub struct SignInResponse {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access_token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_type: Option<&'static str>,
    /// Seconds until the access token (or the MFA / password-change token) expires.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_in: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_id: Option<SessionId>,
    /// Browser sessions: repeat it in the `X-CSRF-Token` header of state-changing requests.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub csrf_token: Option<String>,
    pub mfa_required: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mfa_token: Option<String>,
    pub password_change_required: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_change_token: Option<String>,
    /// Profile fields the tenant asks for that the user has not filled in.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub missing_profile_fields: Vec<ProfileField>,
}

fn cookie_header(
    state: &AppState,
    name: &str,
    value: &str,
    http_only: bool,
    max_age: i64,
) -> Option<HeaderValue> {
    let secure = if state.services.signin().config().secure_cookies {
        "; Secure"
    } else {
        ""
    };
    let http_only = if http_only { "; HttpOnly" } else { "" };
    HeaderValue::from_str(&format!(
        "{name}={value}; Path=/; Max-Age={max_age}; SameSite=Lax{http_only}{secure}"
    ))
    .ok()
}

/// Renders a sign-in step; browser sessions get their cookies.
fn render(state: &AppState, step: Step) -> Response {
    match step {
        Step::MfaRequired {
            mfa_token,
            expires_in,
        } => Json(SignInResponse {
            mfa_required: true,
            mfa_token: Some(mfa_token.expose_secret().to_owned()),
            expires_in: Some(expires_in),
            ..Default::default()
        })
        .into_response(),
        Step::PasswordChangeRequired { token, expires_in } => Json(SignInResponse {
            password_change_required: true,
            password_change_token: Some(token.expose_secret().to_owned()),
            expires_in: Some(expires_in),
            ..Default::default()
        })
        .into_response(),
        Step::Complete(grant) => render_grant(state, *grant),
    }
}

fn render_grant(state: &AppState, grant: Grant) -> Response {
    let Grant {
        session,
        secrets,
        missing_profile_fields,
        ..
    } = grant;
    match secrets {
        GrantSecrets::Bearer {
            access_token,
            refresh_token,
            expires_in,
        } => Json(SignInResponse {
            access_token: Some(access_token),
            refresh_token: Some(refresh_token.expose_secret().to_owned()),
            token_type: Some("Bearer"),
            expires_in: Some(expires_in),
            session_id: Some(session.id),
            missing_profile_fields,
            ..Default::default()
        })
        .into_response(),
        GrantSecrets::Browser { cookie, csrf_token } => {
            let max_age = (session.expires_at - session.created_at).num_seconds();
            let mut headers = HeaderMap::new();
            for (name, value, http_only) in [
                (SESSION_COOKIE, cookie.expose_secret(), true),
                (CSRF_COOKIE, csrf_token.expose_secret(), false),
            ] {
                if let Some(v) = cookie_header(state, name, value, http_only, max_age) {
                    headers.append(header::SET_COOKIE, v);
                }
            }
            (
                headers,
                Json(SignInResponse {
                    session_id: Some(session.id),
                    csrf_token: Some(csrf_token.expose_secret().to_owned()),
                    missing_profile_fields,
                    ..Default::default()
                }),
            )
                .into_response()
        }
    }
}

/// Self-service registration.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    /// The tenant's slug.
    pub tenant: String,
    pub email: String,
    #[schema(value_type = String)]
    pub password: SecretString,
    pub full_name: String,
    pub username: Option<String>,
    /// The token of an emailed invitation (required when the tenant's registration mode is
    /// `invite`).
    #[schema(value_type = Option<String>)]
    pub invitation_token: Option<SecretString>,
}

/// A registered account.
#[derive(Debug, Serialize, ToSchema)]
pub struct Registered {
    pub id: UserId,
    pub email: String,
    /// `active`, or `pending` when the tenant approves registrations.
    pub status: UserStatus,
}

/// Register an account in a tenant, under its registration mode (`open`, `approval`,
/// `invite`, `closed`). A verification link is emailed unless an invitation proved the
/// address.
#[utoipa::path(post, path = "/api/v1/auth/register", tag = "authentication", request_body = RegisterRequest,
    responses(
        (status = 201, description = "Registered", body = Registered),
        (status = 403, description = "Registration closed, or an invitation is required", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Email or username taken", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields or a password the policy refuses", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many requests from this address", body = Problem, content_type = "application/problem+json"),
    ))]
async fn register(
    State(state): State<AppState>,
    ClientMeta(meta): ClientMeta,
    ApiJson(body): ApiJson<RegisterRequest>,
) -> ApiResult<(StatusCode, Json<Registered>)> {
    checked_ip(&state, &meta)?;
    let mut errs = ValidationErrors::new();
    let email = errs.check(Email::parse("email", &body.email));
    let full_name = errs.check(DisplayName::parse("full_name", &body.full_name));
    let username = optional(&mut errs, "username", body.username, Username::parse);
    errs.finish()?;
    let (Some(email), Some(full_name)) = (email, full_name) else {
        return Err(ApiError::internal());
    };
    let new_user = NewUser {
        email,
        username,
        full_name,
        phone: None,
        department: None,
        job_title: None,
        employee_id: None,
        manager_id: None,
        cost_center: None,
        clearance_level: None,
        language: None,
        avatar_url: None,
        custom_attributes: JsonObject::default(),
        status: UserStatus::Pending,
    };
    let user = state
        .services
        .signin()
        .register(
            Registration {
                tenant: body.tenant,
                new_user,
                password: secret("password", body.password)?,
                invitation_token: body.invitation_token,
            },
            &meta,
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(Registered {
            id: user.id,
            email: user.email,
            status: user.status,
        }),
    ))
}

/// Password sign-in.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    /// The tenant's slug.
    #[schema(example = "default")]
    pub tenant: String,
    /// Email address or username.
    pub login: String,
    #[schema(value_type = String)]
    pub password: SecretString,
    /// `token` (default): access and refresh tokens in the answer; `browser`: a session
    /// cookie and a CSRF token.
    pub session: Option<SessionModeParam>,
    /// A name for the device, shown in session lists.
    pub device_label: Option<String>,
}

/// Sign in with a login and password. Wrong login, wrong password, unknown tenant and
/// locked account all answer 401 `invalid_credentials`, after the same work.
#[utoipa::path(post, path = "/api/v1/auth/login", tag = "authentication", request_body = LoginRequest,
    responses(
        (status = 200, description = "Signed in, or the next step (MFA, password change)", body = SignInResponse),
        (status = 401, description = "Invalid credentials", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Right password, but the account is pending, disabled or its email unverified", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many requests or failures from this address", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Password hashing saturated; retry after `Retry-After`", body = Problem, content_type = "application/problem+json"),
    ))]
async fn login(
    State(state): State<AppState>,
    ClientMeta(meta): ClientMeta,
    ApiJson(body): ApiJson<LoginRequest>,
) -> ApiResult<Response> {
    checked_ip(&state, &meta)?;
    let step = state
        .services
        .signin()
        .login(
            &body.tenant,
            &body.login,
            secret("password", body.password)?,
            body.session.map(SessionModeParam::as_str),
            body.device_label,
            &meta,
        )
        .await?;
    Ok(render(&state, step))
}

/// The second factor of a sign-in.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MfaRequest {
    #[schema(value_type = String)]
    pub mfa_token: SecretString,
    /// A 6-digit TOTP code, or a recovery code.
    #[schema(value_type = String)]
    pub code: SecretString,
}

/// Complete a sign-in with a TOTP code or a recovery code. A TOTP code is accepted once;
/// five wrong codes end the challenge.
#[utoipa::path(post, path = "/api/v1/auth/mfa", tag = "authentication", request_body = MfaRequest,
    responses(
        (status = 200, description = "Signed in, or a required password change", body = SignInResponse),
        (status = 400, description = "Wrong or replayed code, or an invalid MFA token", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many requests from this address", body = Problem, content_type = "application/problem+json"),
    ))]
async fn mfa(
    State(state): State<AppState>,
    ClientMeta(meta): ClientMeta,
    ApiJson(body): ApiJson<MfaRequest>,
) -> ApiResult<Response> {
    checked_ip(&state, &meta)?;
    let step = state
        .services
        .signin()
        .complete_mfa(
            body.mfa_token.expose_secret(),
            body.code.expose_secret(),
            &meta,
        )
        .await?;
    Ok(render(&state, step))
}

/// The password change a sign-in requires.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordChangeRequest {
    #[schema(value_type = String)]
    pub password_change_token: SecretString,
    #[schema(value_type = String)]
    pub new_password: SecretString,
}

/// Complete a sign-in whose password must change (set by an administrator with
/// `must_change_password`, or expired under the tenant's policy).
#[utoipa::path(post, path = "/api/v1/auth/password-change", tag = "authentication", request_body = PasswordChangeRequest,
    responses(
        (status = 200, description = "Password changed and signed in", body = SignInResponse),
        (status = 400, description = "Invalid or expired token", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The policy refuses the password", body = Problem, content_type = "application/problem+json"),
    ))]
async fn password_change(
    State(state): State<AppState>,
    ClientMeta(meta): ClientMeta,
    ApiJson(body): ApiJson<PasswordChangeRequest>,
) -> ApiResult<Response> {
    checked_ip(&state, &meta)?;
    let step = state
        .services
        .signin()
        .complete_password_change(
            body.password_change_token.expose_secret(),
            secret("new_password", body.new_password)?,
            &meta,
        )
        .await?;
    Ok(render(&state, step))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    #[schema(value_type = String)]
    pub refresh_token: SecretString,
}

/// New tokens.
#[derive(Serialize, ToSchema)]
pub struct TokenResponse {
    pub access_token: String,
    /// The next refresh token; the one presented is now used up.
    pub refresh_token: String,
    pub token_type: &'static str,
    pub expires_in: i64,
}

/// Exchange a refresh token for new tokens. Refresh tokens rotate: each works once, and
/// presenting a used one revokes the whole session.
#[utoipa::path(post, path = "/api/v1/auth/refresh", tag = "authentication", request_body = RefreshRequest,
    responses(
        (status = 200, description = "New tokens", body = TokenResponse),
        (status = 401, description = "Invalid, revoked, expired or reused refresh token", body = Problem, content_type = "application/problem+json"),
    ))]
async fn refresh(
    State(state): State<AppState>,
    ClientMeta(meta): ClientMeta,
    ApiJson(body): ApiJson<RefreshRequest>,
) -> ApiResult<Json<TokenResponse>> {
    checked_ip(&state, &meta)?;
    let r = state
        .services
        .signin()
        .refresh(body.refresh_token.expose_secret(), &meta)
        .await?;
    Ok(Json(TokenResponse {
        access_token: r.access_token,
        refresh_token: r.refresh_token.expose_secret().to_owned(),
        token_type: "Bearer",
        expires_in: r.expires_in,
    }))
}

/// End the current session (its refresh token and, on this API, its access tokens stop
/// working at once); browser sessions also get their cookies cleared.
#[utoipa::path(post, path = "/api/v1/auth/logout", tag = "authentication",
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Signed out"),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
    ))]
async fn logout(State(state): State<AppState>, caller: UserCaller) -> ApiResult<Response> {
    state
        .services
        .signin()
        .logout(&caller.session, &caller.meta)
        .await?;
    let mut headers = HeaderMap::new();
    for (name, http_only) in [(SESSION_COOKIE, true), (CSRF_COOKIE, false)] {
        if let Some(v) = cookie_header(&state, name, "", http_only, 0) {
            headers.append(header::SET_COOKIE, v);
        }
    }
    Ok((StatusCode::NO_CONTENT, headers).into_response())
}

/// A request for an emailed link.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EmailLinkRequest {
    /// The tenant's slug.
    pub tenant: String,
    pub email: String,
}

impl EmailLinkRequest {
    /// Refuses an address that cannot be one (422): this says nothing about accounts.
    fn checked(self) -> Result<Self, ApiError> {
        domain::values::Email::parse("email", &self.email)
            .map_err(|e| ApiError::validation(vec![e]))?;
        Ok(self)
    }
}

/// The answer to a request for an emailed link: the same whether or not the address
/// belongs to an account.
#[derive(Debug, Serialize, ToSchema)]
pub struct Accepted {
    pub message: &'static str,
}

const LINK_ACCEPTED: &str =
    "if the address belongs to an account that can use it, a link is on its way";

/// Email a single-use sign-in link (valid 15 minutes). The answer never tells whether the
/// address belongs to an account.
#[utoipa::path(post, path = "/api/v1/auth/magic-link", tag = "authentication", request_body = EmailLinkRequest,
    responses(
        (status = 202, description = "Accepted", body = Accepted),
        (status = 429, description = "Too many requests from this address", body = Problem, content_type = "application/problem+json"),
    ))]
async fn magic_link(
    State(state): State<AppState>,
    ClientMeta(meta): ClientMeta,
    ApiJson(body): ApiJson<EmailLinkRequest>,
) -> ApiResult<(StatusCode, Json<Accepted>)> {
    checked_ip(&state, &meta)?;
    let body = body.checked()?;
    state
        .services
        .signin()
        .request_magic_link(&body.tenant, &body.email, &meta);
    Ok((
        StatusCode::ACCEPTED,
        Json(Accepted {
            message: LINK_ACCEPTED,
        }),
    ))
}

/// The token of an emailed link.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MagicLinkConfirm {
    #[schema(value_type = String)]
    pub token: SecretString,
    pub session: Option<SessionModeParam>,
    pub device_label: Option<String>,
}

/// Sign in with the token of a magic link (single use). A second factor is still asked
/// when enrolled.
#[utoipa::path(post, path = "/api/v1/auth/magic-link/confirm", tag = "authentication", request_body = MagicLinkConfirm,
    responses(
        (status = 200, description = "Signed in, or the next step", body = SignInResponse),
        (status = 400, description = "Invalid, used or expired link", body = Problem, content_type = "application/problem+json"),
    ))]
async fn magic_link_confirm(
    State(state): State<AppState>,
    ClientMeta(meta): ClientMeta,
    ApiJson(body): ApiJson<MagicLinkConfirm>,
) -> ApiResult<Response> {
    checked_ip(&state, &meta)?;
    let step = state
        .services
        .signin()
        .complete_magic_link(
            body.token.expose_secret(),
            body.session.map(SessionModeParam::as_str),
            body.device_label,
            &meta,
        )
        .await?;
    Ok(render(&state, step))
}

/// Email a single-use password-reset link (valid 15 minutes). The answer never tells
/// whether the address belongs to an account.
#[utoipa::path(post, path = "/api/v1/auth/password-reset", tag = "authentication", request_body = EmailLinkRequest,
    responses(
        (status = 202, description = "Accepted", body = Accepted),
        (status = 429, description = "Too many requests from this address", body = Problem, content_type = "application/problem+json"),
    ))]
async fn password_reset(
    State(state): State<AppState>,
    ClientMeta(meta): ClientMeta,
    ApiJson(body): ApiJson<EmailLinkRequest>,
) -> ApiResult<(StatusCode, Json<Accepted>)> {
    checked_ip(&state, &meta)?;
    let body = body.checked()?;
    state
        .services
        .signin()
        .request_password_reset(&body.tenant, &body.email, &meta);
    Ok((
        StatusCode::ACCEPTED,
        Json(Accepted {
            message: LINK_ACCEPTED,
        }),
    ))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordResetConfirm {
    #[schema(value_type = String)]
    pub token: SecretString,
    #[schema(value_type = String)]
    pub password: SecretString,
}

/// Set a new password with a reset link's token. Every session of the account ends and a
/// lock lifts. A password the policy refuses leaves the link usable.
#[utoipa::path(post, path = "/api/v1/auth/password-reset/confirm", tag = "authentication", request_body = PasswordResetConfirm,
    responses(
        (status = 204, description = "Password changed"),
        (status = 400, description = "Invalid, used or expired link", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The policy refuses the password", body = Problem, content_type = "application/problem+json"),
    ))]
async fn password_reset_confirm(
    State(state): State<AppState>,
    ClientMeta(meta): ClientMeta,
    ApiJson(body): ApiJson<PasswordResetConfirm>,
) -> ApiResult<StatusCode> {
    checked_ip(&state, &meta)?;
    state
        .services
        .signin()
        .complete_password_reset(
            body.token.expose_secret(),
            secret("password", body.password)?,
            &meta,
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyEmailRequest {
    #[schema(value_type = String)]
    pub token: SecretString,
}

/// Verify an email address with the token of its emailed link.
#[utoipa::path(post, path = "/api/v1/auth/verify-email", tag = "authentication", request_body = VerifyEmailRequest,
    responses(
        (status = 204, description = "Verified"),
        (status = 400, description = "Invalid, used or expired link", body = Problem, content_type = "application/problem+json"),
    ))]
async fn verify_email(
    State(state): State<AppState>,
    ClientMeta(meta): ClientMeta,
    ApiJson(body): ApiJson<VerifyEmailRequest>,
) -> ApiResult<StatusCode> {
    checked_ip(&state, &meta)?;
    state
        .services
        .signin()
        .verify_email(body.token.expose_secret(), &meta)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Email a new verification link (same answer whatever the address).
#[utoipa::path(post, path = "/api/v1/auth/verify-email/resend", tag = "authentication", request_body = EmailLinkRequest,
    responses(
        (status = 202, description = "Accepted", body = Accepted),
    ))]
async fn verify_email_resend(
    State(state): State<AppState>,
    ClientMeta(meta): ClientMeta,
    ApiJson(body): ApiJson<EmailLinkRequest>,
) -> ApiResult<(StatusCode, Json<Accepted>)> {
    checked_ip(&state, &meta)?;
    let body = body.checked()?;
    state
        .services
        .signin()
        .request_email_verification(&body.tenant, &body.email, &meta);
    Ok((
        StatusCode::ACCEPTED,
        Json(Accepted {
            message: LINK_ACCEPTED,
        }),
    ))
}

/// The public keys that verify access tokens (RFC 7517). Retired keys stay until the
/// tokens they signed have expired.
#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "authentication",
    responses((status = 200, description = "JSON Web Key Set", body = Object)))]
async fn jwks(State(state): State<AppState>) -> Response {
    jwks_response(&state)
}

/// The JWKS under a tenant's issuer (`{public_url}/t/{tenant_id}`).
#[utoipa::path(get, path = "/t/{tenant_id}/.well-known/jwks.json", tag = "authentication",
    params(("tenant_id" = uuid::Uuid, Path, description = "Tenant id")),
    responses(
        (status = 200, description = "JSON Web Key Set", body = Object),
        (status = 404, description = "No such tenant", body = Problem, content_type = "application/problem+json"),
    ))]
async fn tenant_jwks(
    State(state): State<AppState>,
    axum::extract::Path(tenant): axum::extract::Path<String>,
) -> ApiResult<Response> {
    // An issuer URL naming no tenant id names no issuer: 404, like an unknown one.
    let tenant: TenantId = tenant
        .parse()
        .map_err(|_| ApiError::not_found("no such tenant"))?;
    state.services.signin().tenant_keys(tenant).await?;
    Ok(jwks_response(&state))
}

fn jwks_response(state: &AppState) -> Response {
    let mut res = Json(state.services.signin().jwks()).into_response();
    res.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    res
}
