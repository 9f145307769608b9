//! Request authentication. The `Caller` extractor turns the `Authorization` header into a
//! principal: who acts, for which tenant, with which powers. The tenant always comes from
//! the credential, never from the request. API keys are the first kind of credential;
//! sessions and access tokens will be further arms of `Credential`, beside them.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::header;
use axum::http::request::Parts;
use domain::api_keys::KeyHash;
use domain::audit::{Actor, AuditContext};
use domain::tenants::TenantStatus;
use domain::{ApiKeyId, TenantId};

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
const MAX_TOKEN_LEN: usize = 512;

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
        let ip = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip().to_string());
        let user_agent = parts
            .headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|s| s.chars().take(512).collect());
        let request_id = parts.extensions.get::<RequestId>().map(|r| r.0.clone());
        Ok(Caller {
            tenant_id: auth.key.tenant_id,
            credential: Credential::ApiKey(auth.key.id),
            platform_admin: auth.key.platform_admin,
            ip,
            user_agent,
            request_id,
        })
    }
}
