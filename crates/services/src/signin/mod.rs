//! Sign-in: every flow by which a person proves who they are, the tokens and sessions it
//! hands out, and the checks of presented credentials. It owns the rules (what a locked
//! account answers, when MFA is asked, which sessions a password change ends, how failures
//! are counted); the store owns persistence and atomicity; `portcullis-auth` the
//! mechanisms (hashing, keys, TOTP, mail, rate limits).
//!
//! The flows, by module: `password` (the first factor, sessions, refresh, sign-out), `mfa`
//! (the second factor, required password changes, TOTP enrolment), `links` (magic links,
//! password resets, email verification), `registration` (self-service registration and
//! invitations), `passwords` (new passwords: policy, history, imported hashes).

mod links;
mod mfa;
mod password;
mod passwords;
mod registration;

use std::net::IpAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::TimeDelta;
use domain::api_keys::{GeneratedKey, KeyHash};
use domain::audit::{actions, Actor, AuditContext, AuditEvent, EntityRef};
use domain::auth::{
    AuthSettings, Credentials, NewPassword, NewSession, OneTimeToken, PasswordStatus, ProfileField,
    RefreshOutcome, RegistrationMode, RevokeScope, Session, SessionKind, TokenPurpose,
};
use domain::tenants::{Tenant, TenantSlug, TenantStatus};
use domain::time::{now, Timestamp};
use domain::users::{NewUser, User, UserStatus};
use domain::values::Email;
use domain::Code;
use domain::{SessionId, Store, TenantId, UserId};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{json, Value};
use subtle::ConstantTimeEq;
use tracing::{info, warn};

use crate::background::Background;
use portcullis_auth::config::AuthConfig;
use portcullis_auth::error::{AuthError, AuthResult};
use portcullis_auth::keys::{generate_signing_key, AccessClaims, Keyring, MasterKey, TokenError};
use portcullis_auth::mailer::{render, MailKind, Mailer, TemplateContext};
use portcullis_auth::passwords::{check_policy, import_hash, ImportError, PasswordHasher};
use portcullis_auth::ratelimit::{progressive_delay, IpRateLimiter, WindowCounter};
use portcullis_auth::secrets::{digest_of, keyed_digest, REFRESH_PREFIX};
use portcullis_auth::totp;

pub use crate::actor::{RequestMeta, SessionPrincipal};
use crate::Core;

/// The `aud` of access tokens for Portcullis's own API.
pub const AUDIENCE: &str = "portcullis";
/// Wrong codes an MFA challenge survives.
const MFA_MAX_ATTEMPTS: u32 = 5;
/// How long a password-change step of a sign-in stays open.
const PASSWORD_CHANGE_TTL: TimeDelta = TimeDelta::minutes(10);

/// How the client wants to hold the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionMode {
    /// Access and refresh tokens in the response body.
    Token,
    /// An HttpOnly cookie plus a CSRF token.
    Browser,
}

impl SessionMode {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            SessionMode::Token => "token",
            SessionMode::Browser => "browser",
        }
    }
    pub(super) fn parse(s: Option<&str>) -> Self {
        match s {
            Some("browser") => SessionMode::Browser,
            _ => SessionMode::Token,
        }
    }
}

/// The secrets of a new session.
pub enum GrantSecrets {
    Bearer {
        access_token: String,
        refresh_token: SecretString,
        expires_in: i64,
    },
    Browser {
        cookie: SecretString,
        csrf_token: SecretString,
    },
}

/// A completed sign-in.
pub struct Grant {
    pub session: Session,
    pub secrets: GrantSecrets,
    pub missing_profile_fields: Vec<ProfileField>,
}

/// Where a sign-in stands after its first factor.
pub enum Step {
    Complete(Box<Grant>),
    /// A second factor is needed: present it with this token at `/auth/mfa`.
    MfaRequired {
        mfa_token: SecretString,
        expires_in: i64,
    },
    /// The password must be changed first: present a new one with this token.
    PasswordChangeRequired {
        token: SecretString,
        expires_in: i64,
    },
}

/// Access and refresh tokens after a refresh.
pub struct Refreshed {
    pub access_token: String,
    pub refresh_token: SecretString,
    pub expires_in: i64,
}

/// An initial password given when an administrator creates a user or sets a password.
pub enum PasswordInput {
    /// A password in clear, checked against the tenant's policy and hashed.
    Plain(SecretString),
    /// A hash exported from another system (bcrypt, Django, Keycloak, PHC argon2).
    Imported(String),
}

/// A registration request, parsed.
pub struct Registration {
    pub tenant: String,
    pub new_user: NewUser,
    pub password: SecretString,
    pub invitation_token: Option<SecretString>,
}

/// A TOTP enrolment to show the user.
pub struct TotpEnrolment {
    pub otpauth_uri: String,
    pub qr_svg: String,
}

pub struct SignIn {
    core: Arc<Core>,
    store: Arc<dyn Store>,
    hasher: PasswordHasher,
    master: MasterKey,
    recovery_key: [u8; 32],
    keys: RwLock<Arc<Keyring>>,
    mailer: Arc<dyn Mailer>,
    config: AuthConfig,
    ip_limiter: IpRateLimiter,
    ip_failures: WindowCounter<IpAddr>,
    unknown_login_failures: WindowCounter<(TenantId, String)>,
    mail_throttle: WindowCounter<(TenantId, String)>,
    background: Background,
}

impl SignIn {
    /// Builds the service: starts the hashing pool and loads the signing keys, creating the
    /// first one on first start.
    pub(crate) async fn start(
        core: Arc<Core>,
        master: MasterKey,
        mailer: Arc<dyn Mailer>,
        config: AuthConfig,
    ) -> AuthResult<Arc<Self>> {
        let store = core.store.clone();
        let hasher = PasswordHasher::new(config.argon2, config.hash_threads, config.hash_queue)?;
        let keyring = load_keyring(store.as_ref(), &master, &config, true).await?;
        let recovery_key = master.derive("portcullis recovery codes");
        let lockout_window = config
            .lockout
            .window
            .to_std()
            .unwrap_or(Duration::from_secs(900));
        Ok(Arc::new(Self {
            core,
            store,
            hasher,
            master,
            recovery_key,
            keys: RwLock::new(Arc::new(keyring)),
            mailer,
            ip_limiter: IpRateLimiter::new(config.ip_requests_per_minute),
            ip_failures: WindowCounter::new(lockout_window),
            unknown_login_failures: WindowCounter::new(lockout_window),
            mail_throttle: WindowCounter::new(Duration::from_secs(3600)),
            background: Background::default(),
            config,
        }))
    }

    /// Waits until the emails and re-hashes started so far are done.
    pub async fn settle(&self) {
        self.background.settle().await;
    }

    pub fn config(&self) -> &AuthConfig {
        &self.config
    }

    pub fn hasher(&self) -> &PasswordHasher {
        &self.hasher
    }

    pub(crate) fn master(&self) -> &MasterKey {
        &self.master
    }

    // ------------------------------------------------------------------------------------
    // Keys and tokens
    // ------------------------------------------------------------------------------------

    pub(super) fn keyring(&self) -> Arc<Keyring> {
        self.keys.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Re-reads the signing keys (another replica or `portcullis keys rotate` may have added
    /// one). The server calls this periodically.
    pub async fn reload_keys(&self) -> AuthResult<()> {
        let keyring = load_keyring(self.store.as_ref(), &self.master, &self.config, false).await?;
        *self.keys.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(keyring);
        Ok(())
    }

    /// Checks that `tenant` exists: its issuer publishes the keys (`jwks`).
    pub async fn tenant_keys(&self, tenant: TenantId) -> AuthResult<()> {
        self.store.get_tenant(tenant).await.map(|_| ())
    }

    /// The JWKS document of the keys in use.
    pub fn jwks(&self) -> Value {
        self.keyring().jwks()
    }

    /// The issuer of a tenant's tokens.
    pub fn issuer(&self, tenant: TenantId) -> String {
        format!(
            "{}/t/{}",
            self.config.public_url.trim_end_matches('/'),
            tenant
        )
    }

    pub(super) fn access_token(&self, session: &Session) -> AuthResult<(String, i64)> {
        let iat = now().timestamp();
        let ttl = self.config.access_token_ttl.num_seconds();
        // A token never outlives its session.
        let exp = (iat + ttl).min(session.expires_at.timestamp());
        let claims = AccessClaims {
            iss: self.issuer(session.tenant_id),
            sub: session.user_id.to_string(),
            aud: AUDIENCE.to_owned(),
            tid: session.tenant_id.to_string(),
            sid: session.id.to_string(),
            amr: session.amr.clone(),
            iat,
            exp,
            jti: uuid::Uuid::now_v7().to_string(),
        };
        Ok((self.keyring().sign(&claims)?, exp - iat))
    }

    /// Checks an access token and that its session is still active: a revoked session's
    /// tokens stop working on this API at once.
    pub async fn authenticate_access_token(&self, token: &str) -> AuthResult<SessionPrincipal> {
        let invalid = || AuthError::refused(Code::InvalidToken);
        // The tenant (hence the expected issuer) comes from the payload; the signature
        // check below covers it.
        let tid = unverified_tenant(token).ok_or_else(invalid)?;
        let claims = self
            .keyring()
            .verify(token, &self.issuer(tid), AUDIENCE)
            .map_err(|e| match e {
                TokenError::Expired => AuthError::refused(Code::TokenExpired),
                TokenError::Invalid => invalid(),
            })?;
        let sid = claims
            .sid
            .parse::<uuid::Uuid>()
            .map(SessionId::from_uuid)
            .map_err(|_| invalid())?;
        let session = match self.store.get_session(tid, sid).await {
            Ok(s) => s,
            Err(domain::Error::NotFound { .. }) => return Err(invalid()),
            Err(e) => return Err(e),
        };
        if !session.is_active(now()) || session.user_id.to_string() != claims.sub {
            return Err(AuthError::refused(Code::SessionRevoked));
        }
        Ok(principal(&session))
    }

    /// Checks a browser-session cookie; for requests that change state, also the CSRF
    /// token the page sends in a header.
    pub async fn authenticate_cookie(
        &self,
        cookie: &str,
        csrf: Option<&str>,
        state_changing: bool,
    ) -> AuthResult<SessionPrincipal> {
        let unauthenticated = || AuthError::refused(Code::InvalidSession);
        let hash = digest_of(cookie).ok_or_else(unauthenticated)?;
        let found = self
            .store
            .find_browser_session(&hash, now())
            .await?
            .ok_or_else(unauthenticated)?;
        if state_changing {
            let ok = csrf
                .and_then(digest_of)
                .map(|h| {
                    bool::from(
                        h.as_str()
                            .as_bytes()
                            .ct_eq(found.csrf_hash.as_str().as_bytes()),
                    )
                })
                .unwrap_or(false);
            if !ok {
                return Err(AuthError::refused(Code::CsrfFailed));
            }
        }
        let at = now();
        if at - found.session.last_seen_at > TimeDelta::minutes(1) {
            self.store
                .touch_session(found.session.tenant_id, found.session.id, at)
                .await?;
        }
        Ok(principal(&found.session))
    }

    /// Per-IP request limit of the sign-in endpoints.
    pub fn check_ip_rate(&self, ip: Option<IpAddr>) -> AuthResult<()> {
        match ip {
            Some(ip) => self
                .ip_limiter
                .check(ip)
                .map_err(|retry_after| AuthError::RateLimited { retry_after }),
            None => Ok(()),
        }
    }

    /// Deletes sessions that ended and single-use tokens that expired more than a day
    /// ago; the server calls this hourly.
    pub async fn prune(&self) -> AuthResult<u64> {
        self.store
            .prune_auth_records(now() - TimeDelta::days(1))
            .await
    }

    /// Forgets idle rate-limit state; the server calls this periodically.
    pub fn prune_rate_limits(&self) {
        self.ip_limiter.prune();
    }
}

fn principal(session: &Session) -> SessionPrincipal {
    SessionPrincipal {
        tenant_id: session.tenant_id,
        user_id: session.user_id,
        session_id: session.id,
        kind: session.kind,
        amr: session.amr.clone(),
        mfa_level: session.mfa_level,
    }
}

fn check_can_sign_in(user: &User) -> AuthResult<()> {
    match user.status {
        _ if user.is_deleted() => Err(AuthError::refused(Code::InvalidCredentials)),
        UserStatus::Active => Ok(()),
        UserStatus::Pending => Err(AuthError::refused(Code::AccountPending)),
        _ => Err(AuthError::refused(Code::AccountDisabled)),
    }
}

fn require_mfa_session(who: &SessionPrincipal) -> AuthResult<()> {
    if who.mfa_level >= 2 {
        Ok(())
    } else {
        Err(AuthError::refused(Code::MfaSessionRequired))
    }
}

fn invalid_link(code: Code) -> AuthError {
    AuthError::refused(code)
}

fn totp_aad(user: UserId) -> Vec<u8> {
    format!("totp:{user}").into_bytes()
}

/// The tenant id in an access token's payload, read without verification (only to choose
/// the expected issuer; the signature check follows).
fn unverified_tenant(token: &str) -> Option<TenantId> {
    let mut parts = token.split('.');
    let (_, payload) = (parts.next()?, parts.next()?);
    let bytes = URL_SAFE_NO_PAD.decode(payload).ok()?;
    let value: Value = serde_json::from_slice(&bytes).ok()?;
    value["tid"]
        .as_str()?
        .parse::<uuid::Uuid>()
        .ok()
        .map(TenantId::from_uuid)
}

async fn load_keyring(
    store: &dyn Store,
    master: &MasterKey,
    config: &AuthConfig,
    create: bool,
) -> AuthResult<Keyring> {
    let mut records = store.list_signing_keys().await?;
    if records.is_empty() && create {
        let key = generate_signing_key(config.signing_algorithm, master, now())?;
        store.add_signing_key(&key, &[]).await?;
        info!(kid = %key.kid, algorithm = %key.algorithm, "generated the first token-signing key");
        records = store.list_signing_keys().await?;
    }
    Ok(Keyring::load(
        &records,
        master,
        config.access_token_ttl,
        now(),
    )?)
}
