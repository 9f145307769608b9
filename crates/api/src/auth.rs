//! Request authentication. The tenant always comes from the credential, never from the
//! request. Two extractors:
//! - `Caller`: an administrative caller, authenticated by an API key (`pcs_…`). Until roles
//!   arrive, user sessions may not use the administrative endpoints.
//! - `UserCaller`: a signed-in user, by an access token (`Authorization: Bearer <JWT>`) or a
//!   browser-session cookie (with the `X-CSRF-Token` header on state-changing requests).
//!
//! `ClientMeta` gives unauthenticated endpoints the same request circumstances (IP, user
//! agent, request id) for audit events and rate limits.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::header;
use axum::http::request::Parts;
use domain::api_keys::KeyHash;
use domain::audit::{Actor, AuditContext};
use domain::tenants::TenantStatus;
use domain::{ApiKeyId, TenantId, UserId};
use portcullis_auth::service::{RequestMeta, SessionPrincipal};

use crate::middleware::RequestId;
use crate::problem::ApiError;
use crate::state::AppState;

/// How the caller proved who they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential {
    ApiKey(ApiKeyId),
}

/// An authenticated caller and the circumstances of the request.
#[derive(Debug, Clone)]
pub struct Caller {
    pub tenant_id: TenantId,
    pub credential: Credential,
    pub platform_admin: bool,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub request_id: Option<String>,
}

impl Caller {
    pub fn actor(&self) -> Actor {
        match self.credential {
            Credential::ApiKey(id) => Actor::ApiKey(id),
        }
    }

    /// The audit context of changes this caller makes.
    pub fn audit(&self) -> AuditContext {
        AuditContext {
            actor: self.actor(),
            ip: self.ip.clone(),
            user_agent: self.user_agent.clone(),
            request_id: self.request_id.clone(),
        }
    }

    /// Tenant management is for platform administrators only.
    pub fn require_platform_admin(&self) -> Result<(), ApiError> {
        if self.platform_admin {
            Ok(())
        } else {
            Err(ApiError::forbidden(
                "platform_admin_required",
                "this operation needs a platform-admin API key",
            ))
        }
    }
}

/// Longest accepted bearer token; anything longer is not one of ours.
const MAX_TOKEN_LEN: usize = 4096;

fn bearer(parts: &Parts) -> Result<&str, ApiError> {
    let value = parts.headers.get(header::AUTHORIZATION).ok_or_else(|| {
        ApiError::unauthorized("send an API key as 'Authorization: Bearer <key>'")
    })?;
    let value = value
        .to_str()
        .map_err(|_| ApiError::unauthorized("the Authorization header is not valid"))?;
    let (scheme, token) = value.split_once(' ').ok_or_else(|| {
        ApiError::unauthorized("the Authorization header must use the Bearer scheme")
    })?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() || token.len() > MAX_TOKEN_LEN {
        return Err(ApiError::unauthorized(
            "the Authorization header must use the Bearer scheme",
        ));
    }
    Ok(token)
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer(parts)?;
        if !token.starts_with(domain::api_keys::KEY_PREFIX) {
            return Err(ApiError::forbidden(
                "api_key_required",
                "this endpoint needs an API key; user sessions can use /api/v1/me",
            ));
        }
        // Keys are looked up by their SHA-256: the database compares digests, so neither
        // timing nor the error reveals anything about stored keys.
        let auth = state
            .store
            .authenticate_api_key(&KeyHash::of(token))
            .await?
            .ok_or_else(|| ApiError::unauthorized("the API key is not valid or was revoked"))?;
        if auth.tenant_status != TenantStatus::Active {
            return Err(ApiError::forbidden(
                "tenant_suspended",
                "the tenant of this API key is suspended",
            ));
        }
        let meta = request_meta(parts);
        Ok(Caller {
            tenant_id: auth.key.tenant_id,
            credential: Credential::ApiKey(auth.key.id),
            platform_admin: auth.key.platform_admin,
            ip: meta.ip.map(|ip| ip.to_string()),
            user_agent: meta.user_agent,
            request_id: meta.request_id,
        })
    }
}

/// The circumstances of a request.
pub fn request_meta(parts: &Parts) -> RequestMeta {
    RequestMeta {
        ip: parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip()),
        user_agent: parts
            .headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|s| s.chars().take(512).collect()),
        request_id: parts.extensions.get::<RequestId>().map(|r| r.0.clone()),
    }
}

/// Request circumstances for endpoints without a credential.
pub struct ClientMeta(pub RequestMeta);

impl<S: Send + Sync> FromRequestParts<S> for ClientMeta {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(ClientMeta(request_meta(parts)))
    }
}

/// Name of the browser-session cookie (HttpOnly).
pub const SESSION_COOKIE: &str = "portcullis_session";
/// Name of the cookie carrying the CSRF token for the page's scripts (not HttpOnly).
pub const CSRF_COOKIE: &str = "portcullis_csrf";
/// Header in which state-changing browser requests repeat the CSRF token.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// A signed-in user.
#[derive(Debug, Clone)]
pub struct UserCaller {
    pub session: SessionPrincipal,
    pub meta: RequestMeta,
}

impl UserCaller {
    pub fn tenant_id(&self) -> TenantId {
        self.session.tenant_id
    }
    pub fn user_id(&self) -> UserId {
        self.session.user_id
    }
    pub fn audit(&self) -> AuditContext {
        self.meta.audit(Actor::User(self.session.user_id))
    }
}

fn cookie<'a>(parts: &'a Parts, name: &str) -> Option<&'a str> {
    parts
        .headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

impl FromRequestParts<AppState> for UserCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let meta = request_meta(parts);
        let session = if parts.headers.contains_key(header::AUTHORIZATION) {
            let token = bearer(parts)?;
            if token.starts_with(domain::api_keys::KEY_PREFIX) {
                return Err(ApiError::forbidden(
                    "user_session_required",
                    "this endpoint acts on the signed-in user; an API key has none",
                ));
            }
            state.auth.authenticate_access_token(token).await?
        } else if let Some(value) = cookie(parts, SESSION_COOKIE) {
            let state_changing = !parts.method.is_safe();
            let csrf = parts.headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok());
            state
                .auth
                .authenticate_cookie(value, csrf, state_changing)
                .await?
        } else {
            return Err(ApiError::unauthorized(
                "sign in and send the access token as 'Authorization: Bearer <token>'",
            ));
        };
        Ok(UserCaller { session, meta })
    }
}
