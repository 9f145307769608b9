//! Request authentication. The tenant always comes from the credential, never from the
//! request. Two extractors:
//! - `Caller`: a caller of the administrative API: an API key (`pcs_…`) or a signed-in user;
//!   what it may do is decided by `crate::guard`.
//! - `UserCaller`: a signed-in user, by an access token (`Authorization: Bearer <JWT>`) or a
//!   browser-session cookie (with the `X-CSRF-Token` header on state-changing requests).
//!
//! `ClientMeta` gives unauthenticated endpoints the same request circumstances (IP, user
//! agent, request id) for audit events and rate limits.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::header;
use axum::http::request::Parts;
use domain::api_keys::{ApiKeyAuth, KeyHash};
use domain::audit::{Actor, AuditContext};
use domain::tenants::TenantStatus;
use domain::{ApiKeyId, TenantId, UserId};
use portcullis_auth::service::{RequestMeta, SessionPrincipal};

use crate::middleware::RequestId;
use crate::problem::ApiError;
use crate::state::AppState;

/// How the caller proved who they are.
#[derive(Debug, Clone)]
pub enum Credential {
    /// An API key: the tenant's administrator credential, with every permission in its
    /// tenant (platform-admin keys also manage tenants). Policies do not apply to keys.
    ApiKey { id: ApiKeyId, platform_admin: bool },
    /// A signed-in user: what their roles and the tenant's policies allow.
    User(SessionPrincipal),
}

/// An authenticated caller of the administrative API (API key or signed-in user) and the
/// circumstances of the request.
#[derive(Debug, Clone)]
pub struct Caller {
    pub tenant_id: TenantId,
    pub credential: Credential,
    pub meta: RequestMeta,
}

impl Caller {
    pub fn actor(&self) -> Actor {
        match &self.credential {
            Credential::ApiKey { id, .. } => Actor::ApiKey(*id),
            Credential::User(s) => Actor::User(s.user_id),
        }
    }

    /// The audit context of changes this caller makes.
    pub fn audit(&self) -> AuditContext {
        self.meta.audit(self.actor())
    }

    /// The signed-in user, if the caller is one.
    pub fn user_id(&self) -> Option<UserId> {
        match &self.credential {
            Credential::User(s) => Some(s.user_id),
            Credential::ApiKey { .. } => None,
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
        let meta = request_meta(parts);
        if parts.headers.contains_key(header::AUTHORIZATION) {
            let token = bearer(parts)?;
            if token.starts_with(domain::api_keys::KEY_PREFIX) {
                return api_key_caller(token, state, meta).await;
            }
        }
        let user = UserCaller::from_request_parts(parts, state).await?;
        Ok(Caller {
            tenant_id: user.session.tenant_id,
            credential: Credential::User(user.session),
            meta: user.meta,
        })
    }
}

async fn api_key_caller(
    token: &str,
    state: &AppState,
    meta: RequestMeta,
) -> Result<Caller, ApiError> {
    // Keys are looked up by their SHA-256: the database compares digests, so neither
    // timing nor the error reveals anything about stored keys.
    let hash = KeyHash::of(token);
    let auth = match state.api_keys.get(&hash) {
        Some(auth) => auth,
        None => {
            let auth = state
                .store
                .authenticate_api_key(&hash)
                .await?
                .ok_or_else(|| ApiError::unauthorized("the API key is not valid or was revoked"))?;
            state.api_keys.put(hash, auth.clone());
            auth
        }
    };
    if auth.tenant_status != TenantStatus::Active {
        return Err(ApiError::forbidden(
            "tenant_suspended",
            "the tenant of this API key is suspended",
        ));
    }
    Ok(Caller {
        tenant_id: auth.key.tenant_id,
        credential: Credential::ApiKey {
            id: auth.key.id,
            platform_admin: auth.key.platform_admin,
        },
        meta,
    })
}

/// Most keys remembered; the cache is emptied when full.
const API_KEY_CACHE_MAX: usize = 10_000;

/// API keys authenticated recently, by digest, so that a busy client (e.g. an application
/// asking `/authz/check` thousands of times a second) does not cost a database query per
/// request. Only successful authentications are kept: unknown keys cannot fill it. A key
/// is trusted for `ttl` (`http.api_key_cache_seconds`): a key revoked elsewhere (the CLI,
/// another replica) stops working within that time; a tenant suspended through this
/// replica empties the cache at once.
#[derive(Default)]
pub struct ApiKeyCache {
    ttl: Duration,
    entries: RwLock<HashMap<KeyHash, (ApiKeyAuth, Instant)>>,
}

impl ApiKeyCache {
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            entries: RwLock::default(),
        }
    }

    fn get(&self, hash: &KeyHash) -> Option<ApiKeyAuth> {
        if self.ttl.is_zero() {
            return None;
        }
        let entries = self.entries.read().unwrap_or_else(|e| e.into_inner());
        entries
            .get(hash)
            .filter(|(_, at)| at.elapsed() < self.ttl)
            .map(|(auth, _)| auth.clone())
    }

    /// Forgets every key (after a change that affects keys, e.g. a tenant's status).
    pub fn clear(&self) {
        self.entries
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    fn put(&self, hash: KeyHash, auth: ApiKeyAuth) {
        if self.ttl.is_zero() {
            return;
        }
        let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= API_KEY_CACHE_MAX {
            entries.clear();
        }
        entries.insert(hash, (auth, Instant::now()));
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
