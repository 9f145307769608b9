//! Request authentication. The tenant always comes from the credential, never from the
//! request. Two extractors, each yielding the acting principal ([`Actor`]) that service
//! operations take:
//! - `Caller`: a caller of the administrative API: an API key (`pcs_…`) or a signed-in
//!   user; what it may do is decided by the services.
//! - `UserCaller`: a signed-in user, by an access token (`Authorization: Bearer <JWT>`) or a
//!   browser-session cookie (with the `X-CSRF-Token` header on state-changing requests).
//!
//! `ClientMeta` gives unauthenticated endpoints the same request circumstances (IP, user
//! agent, request id) for audit records and rate limits.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::header;
use axum::http::request::Parts;
use portcullis_services::{Actor, RequestMeta, SessionPrincipal};

use crate::middleware::RequestId;
use crate::problem::ApiError;
use crate::state::AppState;

/// An authenticated caller of the administrative API: an API key or a signed-in user (the
/// acting principal every service operation takes).
#[derive(Debug, Clone)]
pub struct Caller(pub Actor);

impl std::ops::Deref for Caller {
    type Target = Actor;
    fn deref(&self) -> &Actor {
        &self.0
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
        if parts.headers.contains_key(header::AUTHORIZATION) {
            let token = bearer(parts)?;
            if token.starts_with(domain::api_keys::KEY_PREFIX) {
                let meta = request_meta(parts);
                return Ok(Caller(
                    state
                        .services
                        .authenticate_api_key(token, meta)
                        .await
                        .map_err(unauthorized)?,
                ));
            }
        }
        let user = UserCaller::from_request_parts(parts, state).await?;
        Ok(Caller(user.actor))
    }
}

/// Refusals of a credential are 401 `unauthorized` (with the reason in the detail), as
/// RFC 6750 asks; other errors pass through.
fn unauthorized(e: domain::Error) -> ApiError {
    match e {
        domain::Error::Refused { code, .. } if code.kind() == domain::Kind::Unauthenticated => {
            ApiError::unauthorized(code.message())
        }
        other => other.into(),
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

/// A signed-in user: the actor, and the session of the request.
#[derive(Debug, Clone)]
pub struct UserCaller {
    pub actor: Actor,
    pub session: SessionPrincipal,
}

impl std::ops::Deref for UserCaller {
    type Target = Actor;
    fn deref(&self) -> &Actor {
        &self.actor
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
                return Err(domain::Error::refused(domain::Code::UserSessionRequired).into());
            }
            state
                .services
                .signin()
                .authenticate_access_token(token)
                .await?
        } else if let Some(value) = cookie(parts, SESSION_COOKIE) {
            let state_changing = !parts.method.is_safe();
            let csrf = parts.headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok());
            state
                .services
                .signin()
                .authenticate_cookie(value, csrf, state_changing)
                .await?
        } else {
            return Err(ApiError::unauthorized(
                "sign in and send the access token as 'Authorization: Bearer <token>'",
            ));
        };
        Ok(UserCaller {
            actor: Actor::user(session.clone(), meta),
            session,
        })
    }
}
