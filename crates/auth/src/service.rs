//! The authentication service: every sign-in flow, the tokens and sessions it hands out,
//! and the checks of presented credentials. It owns the rules (what a locked account
//! answers, when MFA is asked, which sessions a password change ends); the store owns
//! persistence and atomicity; the interface layer only parses and renders.

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

use crate::config::AuthConfig;
use crate::error::{AuthError, AuthResult};
use crate::keys::{generate_signing_key, AccessClaims, Keyring, MasterKey, TokenError};
use crate::mailer::{render, MailKind, Mailer, TemplateContext};
use crate::passwords::{check_policy, import_hash, PasswordHasher};
use crate::ratelimit::{progressive_delay, IpRateLimiter, WindowCounter};
use crate::secrets::{digest_of, keyed_digest, REFRESH_PREFIX};
use crate::totp;

/// The `aud` of access tokens for Portcullis's own API.
pub const AUDIENCE: &str = "portcullis";
/// Wrong codes an MFA challenge survives.
const MFA_MAX_ATTEMPTS: u32 = 5;
/// How long a password-change step of a sign-in stays open.
const PASSWORD_CHANGE_TTL: TimeDelta = TimeDelta::minutes(10);

/// Where a request comes from, for audit events and rate limits.
#[derive(Debug, Clone, Default)]
pub struct RequestMeta {
    pub ip: Option<IpAddr>,
    pub user_agent: Option<String>,
    pub request_id: Option<String>,
}

impl RequestMeta {
    pub fn audit(&self, actor: Actor) -> AuditContext {
        AuditContext {
            actor,
            ip: self.ip.map(|ip| ip.to_string()),
            user_agent: self.user_agent.clone(),
            request_id: self.request_id.clone(),
        }
    }
}

/// How the client wants to hold the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionMode {
    /// Access and refresh tokens in the response body.
    Token,
    /// An HttpOnly cookie plus a CSRF token.
    Browser,
}

impl SessionMode {
    fn as_str(self) -> &'static str {
        match self {
            SessionMode::Token => "token",
            SessionMode::Browser => "browser",
        }
    }
    fn parse(s: Option<&str>) -> Self {
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
pub enum SignIn {
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

/// The session behind a request authenticated by a user credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionPrincipal {
    pub tenant_id: TenantId,
    pub user_id: UserId,
    pub session_id: SessionId,
    pub kind: SessionKind,
    pub amr: Vec<String>,
    pub mfa_level: u8,
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

pub struct AuthService {
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
}

impl AuthService {
    /// Builds the service: starts the hashing pool and loads the signing keys, creating the
    /// first one on first start.
    pub async fn start(
        store: Arc<dyn Store>,
        master: MasterKey,
        mailer: Arc<dyn Mailer>,
        config: AuthConfig,
    ) -> AuthResult<Arc<Self>> {
        let hasher = PasswordHasher::new(config.argon2, config.hash_threads, config.hash_queue)?;
        let keyring = load_keyring(store.as_ref(), &master, &config, true).await?;
        let recovery_key = master.derive("portcullis recovery codes");
        let lockout_window = config
            .lockout
            .window
            .to_std()
            .unwrap_or(Duration::from_secs(900));
        Ok(Arc::new(Self {
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
            config,
        }))
    }

    pub fn config(&self) -> &AuthConfig {
        &self.config
    }

    pub fn hasher(&self) -> &PasswordHasher {
        &self.hasher
    }

    // ------------------------------------------------------------------------------------
    // Keys and tokens
    // ------------------------------------------------------------------------------------

    fn keyring(&self) -> Arc<Keyring> {
        self.keys.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Re-reads the signing keys (another replica or `portcullis keys rotate` may have added
    /// one). The server calls this periodically.
    pub async fn reload_keys(&self) -> AuthResult<()> {
        let keyring = load_keyring(self.store.as_ref(), &self.master, &self.config, false).await?;
        *self.keys.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(keyring);
        Ok(())
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

    fn access_token(&self, session: &Session) -> AuthResult<(String, i64)> {
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

    // ------------------------------------------------------------------------------------
    // Password sign-in
    // ------------------------------------------------------------------------------------

    /// Signs in with a login (email or username) and password. Unknown tenants, unknown
    /// logins, wrong passwords and locked accounts all get the same answer after the same
    /// work (an argon2 verification) and the same progressive delay.
    pub async fn login(
        self: &Arc<Self>,
        tenant_slug: &str,
        login: &str,
        password: SecretString,
        mode: Option<&str>,
        device_label: Option<String>,
        meta: &RequestMeta,
    ) -> AuthResult<SignIn> {
        self.check_ip_failures(meta)?;
        let tenant = self.active_tenant(tenant_slug).await?;
        let login = login.trim();
        let subject = match &tenant {
            Some(t) if !login.is_empty() && login.len() <= 320 => {
                self.store.find_login(t.id, login).await?
            }
            _ => None,
        };
        let stored = subject.as_ref().and_then(|(_, c)| c.password_hash.clone());
        let kept = password.clone();
        let verification = self.hasher.verify(password, stored.clone()).await?;
        let at = now();

        let Some((user, creds)) = subject else {
            let failures = self
                .unknown_login_failure(tenant.as_ref(), login, meta)
                .await?;
            return self.fail(failures, meta).await;
        };
        if !verification.matched || creds.is_locked(at) {
            let reason = if creds.is_locked(at) {
                "account_locked"
            } else {
                "wrong_password"
            };
            let failures = self.account_failure(&user, reason, meta).await?;
            return self.fail(failures, meta).await;
        }
        if verification.needs_rehash {
            if let Some(old) = stored {
                self.rehash_later(&user, old, kept);
            }
        }
        self.after_first_factor(
            user,
            creds,
            vec!["pwd".into()],
            SessionMode::parse(mode),
            device_label,
            meta,
        )
        .await
    }

    async fn active_tenant(&self, slug: &str) -> AuthResult<Option<Tenant>> {
        let Ok(slug) = TenantSlug::parse("tenant", slug) else {
            return Ok(None);
        };
        match self.store.get_tenant_by_slug(&slug).await {
            Ok(t) if t.status == TenantStatus::Active => Ok(Some(t)),
            Ok(_) | Err(domain::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn check_ip_failures(&self, meta: &RequestMeta) -> AuthResult<()> {
        let (Some(ip), limit) = (meta.ip, self.config.ip_failure_limit) else {
            return Ok(());
        };
        if limit == 0 {
            return Ok(());
        }
        let (count, remaining) = self.ip_failures.current(&ip);
        if count >= limit {
            return Err(AuthError::RateLimited {
                retry_after: remaining.max(Duration::from_secs(1)),
            });
        }
        Ok(())
    }

    /// Counts a failure against an account; returns the failures to base the delay on.
    async fn account_failure(
        &self,
        user: &User,
        reason: &str,
        meta: &RequestMeta,
    ) -> AuthResult<u32> {
        let t = self
            .store
            .record_login_failure(
                user.tenant_id,
                user.id,
                &self.config.lockout,
                reason,
                &meta.audit(Actor::User(user.id)),
            )
            .await?;
        if t.locked {
            info!(user_id = %user.id, "account locked after repeated sign-in failures");
        }
        Ok(if t.locked_until.is_some() {
            self.config.lockout.threshold
        } else {
            t.failed_count
        })
    }

    /// Counts a failure for a login that matches no account, the same way.
    async fn unknown_login_failure(
        &self,
        tenant: Option<&Tenant>,
        login: &str,
        meta: &RequestMeta,
    ) -> AuthResult<u32> {
        let Some(tenant) = tenant else {
            return Ok(0);
        };
        let login: String = login.to_lowercase().chars().take(320).collect();
        let count = self.unknown_login_failures.hit(&(tenant.id, login.clone()));
        let event = AuditEvent::record(
            &meta.audit(Actor::System),
            tenant.id,
            actions::AUTH_LOGIN_FAILURE,
            EntityRef::none("user"),
            (
                None,
                Some(json!({"reason": "unknown_login", "login": login})),
            ),
            now(),
        );
        self.store.append_audit_events(&[event]).await?;
        Ok(count.min(self.config.lockout.threshold))
    }

    /// Answers a failed sign-in: counts it against the IP, waits the progressive delay.
    async fn fail<T>(&self, account_failures: u32, meta: &RequestMeta) -> AuthResult<T> {
        self.penalise(account_failures, meta).await;
        Err(AuthError::refused(Code::InvalidCredentials))
    }

    /// Counts a failure against the IP and waits the progressive delay.
    async fn penalise(&self, account_failures: u32, meta: &RequestMeta) {
        let ip_failures = meta.ip.map(|ip| self.ip_failures.hit(&ip)).unwrap_or(0);
        // The IP's own delay starts later: many users may share an address.
        let delay = progressive_delay(account_failures).max(progressive_delay(ip_failures / 5));
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
    }

    fn rehash_later(self: &Arc<Self>, user: &User, old_hash: String, password: SecretString) {
        let this = Arc::clone(self);
        let (tenant, id) = (user.tenant_id, user.id);
        tokio::spawn(async move {
            let result = async {
                let new_hash = this.hasher.hash(password).await?;
                this.store
                    .rehash_password(tenant, id, &old_hash, &new_hash)
                    .await?;
                AuthResult::Ok(())
            }
            .await;
            if let Err(e) = result {
                warn!(user_id = %id, error = %e, "could not re-hash a password");
            }
        });
    }

    /// After a first factor (password or magic link): refuses accounts that may not sign
    /// in, asks for the second factor or a password change, or completes the sign-in.
    async fn after_first_factor(
        &self,
        user: User,
        creds: Credentials,
        amr: Vec<String>,
        mode: SessionMode,
        device_label: Option<String>,
        meta: &RequestMeta,
    ) -> AuthResult<SignIn> {
        check_can_sign_in(&user)?;
        let settings = self.store.get_auth_settings(user.tenant_id).await?;
        if settings.require_verified_email && creds.email_verified_at.is_none() {
            return Err(AuthError::refused(Code::EmailNotVerified));
        }
        let data = json!({"amr": amr, "mode": mode.as_str(), "device_label": device_label});
        if creds.totp_enabled {
            let token = self
                .issue_token(
                    &user,
                    TokenPurpose::MfaChallenge,
                    self.config.mfa_challenge_ttl,
                    data,
                    &[],
                )
                .await?;
            return Ok(SignIn::MfaRequired {
                mfa_token: token,
                expires_in: self.config.mfa_challenge_ttl.num_seconds(),
            });
        }
        self.after_all_factors(user, creds, &settings, data, meta)
            .await
    }

    /// Every factor passed: asks for a password change when one is due, or creates the
    /// session.
    async fn after_all_factors(
        &self,
        user: User,
        creds: Credentials,
        settings: &AuthSettings,
        data: Value,
        meta: &RequestMeta,
    ) -> AuthResult<SignIn> {
        let at = now();
        let change_due = creds.password_hash.is_some()
            && (creds.must_change_password
                || settings
                    .password_policy
                    .is_expired(creds.password_changed_at, at));
        if change_due {
            let token = self
                .issue_token(
                    &user,
                    TokenPurpose::PasswordChange,
                    PASSWORD_CHANGE_TTL,
                    data,
                    &[],
                )
                .await?;
            return Ok(SignIn::PasswordChangeRequired {
                token,
                expires_in: PASSWORD_CHANGE_TTL.num_seconds(),
            });
        }
        let grant = self.create_session(user, settings, &data, meta).await?;
        Ok(SignIn::Complete(Box::new(grant)))
    }

    async fn create_session(
        &self,
        user: User,
        settings: &AuthSettings,
        data: &Value,
        meta: &RequestMeta,
    ) -> AuthResult<Grant> {
        let amr: Vec<String> = data["amr"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        let mode = SessionMode::parse(data["mode"].as_str());
        let device_label = data["device_label"]
            .as_str()
            .map(|s| s.chars().take(100).collect());
        let mfa_level = if amr.iter().any(|m| m == "mfa") { 2 } else { 1 };
        let at = now();
        let session = Session {
            id: SessionId::new(),
            tenant_id: user.tenant_id,
            user_id: user.id,
            kind: match mode {
                SessionMode::Token => SessionKind::Token,
                SessionMode::Browser => SessionKind::Browser,
            },
            device_label,
            ip: meta.ip.map(|ip| ip.to_string()),
            user_agent: meta.user_agent.clone(),
            amr,
            mfa_level,
            created_at: at,
            last_seen_at: at,
            expires_at: at + self.config.session_ttl,
            revoked_at: None,
            revoke_reason: None,
        };
        let (new, secrets) = match mode {
            SessionMode::Token => {
                let refresh = GeneratedKey::with_prefix(REFRESH_PREFIX);
                let (access_token, expires_in) = self.access_token(&session)?;
                (
                    NewSession {
                        session,
                        refresh_hash: Some(refresh.hash.clone()),
                        cookie_hash: None,
                        csrf_hash: None,
                    },
                    GrantSecrets::Bearer {
                        access_token,
                        refresh_token: refresh.secret,
                        expires_in,
                    },
                )
            }
            SessionMode::Browser => {
                let cookie = GeneratedKey::with_prefix("");
                let csrf = GeneratedKey::with_prefix("");
                (
                    NewSession {
                        session,
                        refresh_hash: None,
                        cookie_hash: Some(cookie.hash.clone()),
                        csrf_hash: Some(csrf.hash.clone()),
                    },
                    GrantSecrets::Browser {
                        cookie: cookie.secret,
                        csrf_token: csrf.secret,
                    },
                )
            }
        };
        let session = self
            .store
            .create_session(new, &meta.audit(Actor::User(user.id)))
            .await?;
        if let Some(ip) = meta.ip {
            self.ip_failures.reset(&ip);
        }
        Ok(Grant {
            missing_profile_fields: settings.missing_profile_fields(&user),
            session,
            secrets,
        })
    }

    /// Completes a sign-in with a TOTP code or a recovery code.
    pub async fn complete_mfa(
        &self,
        mfa_token: &str,
        code: &str,
        meta: &RequestMeta,
    ) -> AuthResult<SignIn> {
        let bad = || AuthError::refused(Code::InvalidMfaToken);
        self.check_ip_failures(meta)?;
        let (hash, user) = self
            .peek_for_user(TokenPurpose::MfaChallenge, mfa_token, bad)
            .await?;
        check_can_sign_in(&user)?;
        let ctx = meta.audit(Actor::User(user.id));
        let code = code.trim();
        let accepted = if code.len() == totp::DIGITS && code.bytes().all(|b| b.is_ascii_digit()) {
            self.check_totp(&user, code).await?
        } else {
            let normalized = totp::normalize_recovery_code(code);
            let digest = keyed_digest(&self.recovery_key, &normalized);
            self.store
                .use_recovery_code(user.tenant_id, user.id, &digest, &ctx)
                .await?
        };
        if !accepted {
            self.store
                .fail_one_time_token(TokenPurpose::MfaChallenge, &hash, MFA_MAX_ATTEMPTS)
                .await?;
            let failures = self.account_failure(&user, "wrong_mfa_code", meta).await?;
            self.penalise(failures, meta).await;
            return Err(AuthError::refused(Code::InvalidMfaCode));
        }
        // Consuming is the commit point: of two requests with one token, one wins.
        let token = self
            .store
            .consume_one_time_token(TokenPurpose::MfaChallenge, &hash, now())
            .await?
            .ok_or_else(bad)?;
        let creds = self.store.get_credentials(user.tenant_id, user.id).await?;
        let settings = self.store.get_auth_settings(user.tenant_id).await?;
        let mut data = token.data;
        let mut amr: Vec<Value> = data["amr"].as_array().cloned().unwrap_or_default();
        amr.push(json!("otp"));
        amr.push(json!("mfa"));
        data["amr"] = Value::Array(amr);
        self.after_all_factors(user, creds, &settings, data, meta)
            .await
    }

    /// Whether `code` is a current TOTP code of the user, not used before.
    async fn check_totp(&self, user: &User, code: &str) -> AuthResult<bool> {
        let Some(enrolment) = self.store.get_totp(user.tenant_id, user.id).await? else {
            return Ok(false);
        };
        if enrolment.confirmed_at.is_none() {
            return Ok(false);
        }
        let secret = self
            .master
            .decrypt(&enrolment.secret_ciphertext, &totp_aad(user.id))?;
        let unix = u64::try_from(now().timestamp()).unwrap_or(0);
        match totp::verify_code(&secret, code, unix) {
            // The store accepts each step once: a replayed code fails here.
            Some(step) => Ok(self
                .store
                .use_totp_step(user.tenant_id, user.id, step)
                .await?),
            None => Ok(false),
        }
    }

    /// Completes a sign-in that had to change its password.
    pub async fn complete_password_change(
        &self,
        token: &str,
        new_password: SecretString,
        meta: &RequestMeta,
    ) -> AuthResult<SignIn> {
        let bad = || AuthError::refused(Code::InvalidPasswordChangeToken);
        let (hash, user) = self
            .peek_for_user(TokenPurpose::PasswordChange, token, bad)
            .await?;
        check_can_sign_in(&user)?;
        let (pending, settings, creds) = self
            .redeem_with_new_password(
                TokenPurpose::PasswordChange,
                &hash,
                &user,
                new_password,
                actions::PASSWORD_CHANGE,
                bad,
                meta,
            )
            .await?;
        self.after_all_factors(user, creds, &settings, pending.data, meta)
            .await
    }

    /// Reads a valid single-use token and the (non-deleted) user it belongs to.
    async fn peek_for_user(
        &self,
        purpose: TokenPurpose,
        token: &str,
        bad: impl Fn() -> AuthError,
    ) -> AuthResult<(KeyHash, User)> {
        let hash = digest_of(token).ok_or_else(&bad)?;
        let pending = self
            .store
            .peek_one_time_token(purpose, &hash, now())
            .await?
            .ok_or_else(&bad)?;
        let user_id = pending.user_id.ok_or_else(&bad)?;
        let user = self.store.get_user(pending.tenant_id, user_id).await?;
        if user.is_deleted() {
            return Err(bad());
        }
        Ok((hash, user))
    }

    /// Sets a new password with a single-use token: the password is checked against the
    /// policy and history *before* the token is spent, so a refused one can be retried with
    /// the same token. Every session of the user ends.
    #[allow(clippy::too_many_arguments)]
    async fn redeem_with_new_password(
        &self,
        purpose: TokenPurpose,
        hash: &KeyHash,
        user: &User,
        new_password: SecretString,
        action: &'static str,
        bad: impl Fn() -> AuthError,
        meta: &RequestMeta,
    ) -> AuthResult<(OneTimeToken, AuthSettings, Credentials)> {
        let settings = self.store.get_auth_settings(user.tenant_id).await?;
        let new_hash = self
            .checked_new_hash(user, &settings, new_password, true)
            .await?;
        let spent = self
            .store
            .consume_one_time_token(purpose, hash, now())
            .await?
            .ok_or_else(bad)?;
        let creds = self
            .store
            .set_password(
                user.tenant_id,
                user.id,
                NewPassword {
                    hash: new_hash,
                    must_change: false,
                    keep_history: settings.password_policy.history,
                },
                Some(RevokeScope::All),
                action,
                &meta.audit(Actor::User(user.id)),
            )
            .await?;
        Ok((spent, settings, creds))
    }

    // ------------------------------------------------------------------------------------
    // Refresh and logout
    // ------------------------------------------------------------------------------------

    /// Exchanges a refresh token for new tokens. A token presented twice revokes its
    /// session (reuse detection): whoever holds a copy loses it, and so does the user, who
    /// signs in again.
    pub async fn refresh(&self, refresh_token: &str, meta: &RequestMeta) -> AuthResult<Refreshed> {
        let invalid = || AuthError::refused(Code::InvalidRefreshToken);
        let presented = digest_of(refresh_token).ok_or_else(invalid)?;
        let next = GeneratedKey::with_prefix(REFRESH_PREFIX);
        let outcome = self
            .store
            .rotate_refresh_token(&presented, &next.hash, now(), &meta.audit(Actor::System))
            .await?;
        match outcome {
            RefreshOutcome::Rotated(session) => {
                let (access_token, expires_in) = self.access_token(&session)?;
                Ok(Refreshed {
                    access_token,
                    refresh_token: next.secret,
                    expires_in,
                })
            }
            RefreshOutcome::Reused(session) => {
                warn!(session_id = %session.id, "refresh token reused; session revoked");
                Err(AuthError::refused(Code::RefreshTokenReused))
            }
            RefreshOutcome::Invalid => Err(invalid()),
        }
    }

    /// Ends the caller's session.
    pub async fn logout(&self, who: &SessionPrincipal, meta: &RequestMeta) -> AuthResult<()> {
        match self
            .store
            .revoke_sessions(
                who.tenant_id,
                who.user_id,
                RevokeScope::One(who.session_id),
                "logout",
                &meta.audit(Actor::User(who.user_id)),
            )
            .await
        {
            Ok(_) | Err(domain::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    // ------------------------------------------------------------------------------------
    // Emailed links
    // ------------------------------------------------------------------------------------

    /// Emails a sign-in link if `email` belongs to an active user of the tenant. The work
    /// happens after the answer, so neither the answer nor its timing tells whether it did.
    pub fn request_magic_link(self: &Arc<Self>, tenant: &str, email: &str, meta: &RequestMeta) {
        self.email_link_later(tenant, email, TokenPurpose::MagicLink, meta);
    }

    /// Emails a password-reset link, under the same rules as magic links.
    pub fn request_password_reset(self: &Arc<Self>, tenant: &str, email: &str, meta: &RequestMeta) {
        self.email_link_later(tenant, email, TokenPurpose::PasswordReset, meta);
    }

    /// Emails a new verification link (answer and timing as for magic links).
    pub fn request_email_verification(
        self: &Arc<Self>,
        tenant: &str,
        email: &str,
        meta: &RequestMeta,
    ) {
        self.email_link_later(tenant, email, TokenPurpose::EmailVerification, meta);
    }

    fn email_link_later(
        self: &Arc<Self>,
        tenant: &str,
        email: &str,
        purpose: TokenPurpose,
        meta: &RequestMeta,
    ) {
        let this = Arc::clone(self);
        let (tenant, email, meta) = (tenant.to_owned(), email.to_owned(), meta.clone());
        tokio::spawn(async move {
            if let Err(e) = this.email_link(&tenant, &email, purpose, &meta).await {
                warn!(error = %e, purpose = purpose.as_str(), "could not send an emailed link");
            }
        });
    }

    async fn email_link(
        &self,
        tenant_slug: &str,
        email: &str,
        purpose: TokenPurpose,
        meta: &RequestMeta,
    ) -> AuthResult<()> {
        let Some(tenant) = self.active_tenant(tenant_slug).await? else {
            return Ok(());
        };
        let Ok(email) = Email::parse("email", email) else {
            return Ok(());
        };
        let Some((user, creds)) = self.store.find_login(tenant.id, email.as_str()).await? else {
            return Ok(());
        };
        // Only an exact address match: a username that looks like an address is not one.
        if user.email_normalized() != email.normalized() {
            return Ok(());
        }
        let usable = match purpose {
            TokenPurpose::EmailVerification => {
                creds.email_verified_at.is_none() && user.status != UserStatus::Blocked
            }
            _ => user.status == UserStatus::Active,
        };
        if !usable {
            return Ok(());
        }
        let count = self
            .mail_throttle
            .hit(&(tenant.id, user.email_normalized()));
        if count > self.config.emails_per_address_per_hour {
            info!(user_id = %user.id, "emailed-link limit reached for this address");
            return Ok(());
        }
        let (action, ttl, kind, path) = match purpose {
            TokenPurpose::MagicLink => (
                actions::AUTH_MAGIC_LINK_REQUEST,
                self.config.link_ttl,
                MailKind::MagicLink,
                "magic-link",
            ),
            TokenPurpose::PasswordReset => (
                actions::AUTH_PASSWORD_RESET_REQUEST,
                self.config.link_ttl,
                MailKind::PasswordReset,
                "password-reset",
            ),
            _ => (
                actions::AUTH_EMAIL_VERIFICATION_REQUEST,
                self.config.email_verification_ttl,
                MailKind::EmailVerification,
                "verify-email",
            ),
        };
        let event = AuditEvent::record(
            &meta.audit(Actor::User(user.id)),
            tenant.id,
            action,
            EntityRef::user(user.id),
            (None, None),
            now(),
        );
        let token = self
            .issue_token(&user, purpose, ttl, json!({}), &[event])
            .await?;
        self.send_link(
            &tenant,
            &user.email,
            Some(&user.full_name),
            kind,
            path,
            &token,
            ttl,
        )
        .await
    }

    #[allow(clippy::too_many_arguments)]
    async fn send_link(
        &self,
        tenant: &Tenant,
        to: &str,
        name: Option<&str>,
        kind: MailKind,
        path: &str,
        token: &SecretString,
        ttl: TimeDelta,
    ) -> AuthResult<()> {
        let link = format!(
            "{}/auth/{path}?tenant={}&token={}",
            self.config.public_url.trim_end_matches('/'),
            tenant.slug.as_str(),
            token.expose_secret()
        );
        let minutes = u32::try_from(ttl.num_minutes()).unwrap_or(u32::MAX);
        let message = render(
            kind,
            to,
            &TemplateContext {
                tenant_name: &tenant.display_name,
                recipient_name: name,
                link: Some(&link),
                expires_minutes: Some(minutes),
            },
        );
        self.mailer
            .send(message)
            .await
            .map_err(|e| AuthError::internal(format!("mail: {e}")))
    }

    /// Signs in with an emailed link (the second factor is still asked when enrolled).
    /// The link also proves the address.
    pub async fn complete_magic_link(
        &self,
        token: &str,
        mode: Option<&str>,
        device_label: Option<String>,
        meta: &RequestMeta,
    ) -> AuthResult<SignIn> {
        let token = self
            .consume(TokenPurpose::MagicLink, token, Code::InvalidMagicLink)
            .await?;
        let user_id = token
            .user_id
            .ok_or_else(|| AuthError::internal("token without user"))?;
        let user = self.store.get_user(token.tenant_id, user_id).await?;
        let ctx = meta.audit(Actor::User(user.id));
        self.store
            .mark_email_verified(user.tenant_id, user.id, &user.email, &ctx)
            .await?;
        let creds = self.store.get_credentials(user.tenant_id, user.id).await?;
        self.after_first_factor(
            user,
            creds,
            vec!["email".into()],
            SessionMode::parse(mode),
            device_label,
            meta,
        )
        .await
    }

    /// Sets a new password with an emailed reset link; every session of the user ends and
    /// any lock lifts.
    pub async fn complete_password_reset(
        &self,
        token: &str,
        new_password: SecretString,
        meta: &RequestMeta,
    ) -> AuthResult<()> {
        let bad = || invalid_link(Code::InvalidResetToken);
        let (hash, user) = self
            .peek_for_user(TokenPurpose::PasswordReset, token, bad)
            .await?;
        self.redeem_with_new_password(
            TokenPurpose::PasswordReset,
            &hash,
            &user,
            new_password,
            actions::PASSWORD_RESET,
            bad,
            meta,
        )
        .await?;
        // Receiving the link proved the address.
        self.store
            .mark_email_verified(
                user.tenant_id,
                user.id,
                &user.email,
                &meta.audit(Actor::User(user.id)),
            )
            .await?;
        self.notify_password_changed(&user).await;
        Ok(())
    }

    /// Marks an address verified with its emailed link.
    pub async fn verify_email(&self, token: &str, meta: &RequestMeta) -> AuthResult<()> {
        let token = self
            .consume(
                TokenPurpose::EmailVerification,
                token,
                Code::InvalidVerificationToken,
            )
            .await?;
        let (Some(user), Some(email)) = (token.user_id, token.email.as_deref()) else {
            return Err(invalid_link(Code::InvalidVerificationToken));
        };
        let verified = self
            .store
            .mark_email_verified(token.tenant_id, user, email, &meta.audit(Actor::User(user)))
            .await?;
        if verified {
            Ok(())
        } else {
            Err(invalid_link(Code::InvalidVerificationToken))
        }
    }

    async fn consume(
        &self,
        purpose: TokenPurpose,
        token: &str,
        code: Code,
    ) -> AuthResult<OneTimeToken> {
        let hash = digest_of(token).ok_or_else(|| invalid_link(code))?;
        self.store
            .consume_one_time_token(purpose, &hash, now())
            .await?
            .ok_or_else(|| invalid_link(code))
    }

    async fn issue_token(
        &self,
        user: &User,
        purpose: TokenPurpose,
        ttl: TimeDelta,
        data: Value,
        events: &[AuditEvent],
    ) -> AuthResult<SecretString> {
        let secret = GeneratedKey::with_prefix("");
        let at = now();
        let token = OneTimeToken {
            hash: secret.hash.clone(),
            tenant_id: user.tenant_id,
            purpose,
            user_id: Some(user.id),
            email: Some(user.email.clone()),
            data,
            created_at: at,
            expires_at: at + ttl,
            used_at: None,
            attempts: 0,
        };
        self.store.create_one_time_token(&token, events).await?;
        Ok(secret.secret)
    }

    async fn notify_password_changed(&self, user: &User) {
        let Ok(tenant) = self.store.get_tenant(user.tenant_id).await else {
            return;
        };
        let message = render(
            MailKind::PasswordChanged,
            &user.email,
            &TemplateContext {
                tenant_name: &tenant.display_name,
                recipient_name: Some(&user.full_name),
                link: None,
                expires_minutes: None,
            },
        );
        let mailer = Arc::clone(&self.mailer);
        tokio::spawn(async move {
            if let Err(e) = mailer.send(message).await {
                warn!(error = %e, "could not send a password-change notice");
            }
        });
    }

    // ------------------------------------------------------------------------------------
    // Registration and invitations
    // ------------------------------------------------------------------------------------

    /// Self-service registration under the tenant's registration mode. An invitation
    /// admits its addressee whatever the mode, and proves the address.
    pub async fn register(
        self: &Arc<Self>,
        req: Registration,
        meta: &RequestMeta,
    ) -> AuthResult<User> {
        let closed = || AuthError::refused(Code::RegistrationClosed);
        let tenant = self.active_tenant(&req.tenant).await?.ok_or_else(closed)?;
        let settings = self.store.get_auth_settings(tenant.id).await?;
        let invitation = match req.invitation_token.as_ref().map(|t| t.expose_secret()) {
            Some(t) => {
                let hash = digest_of(t).ok_or_else(|| invalid_link(Code::InvalidInvitation))?;
                let inv = self
                    .store
                    .peek_one_time_token(TokenPurpose::Invitation, &hash, now())
                    .await?
                    .filter(|i| i.tenant_id == tenant.id)
                    .ok_or_else(|| invalid_link(Code::InvalidInvitation))?;
                let invited = inv.email.as_deref().map(str::to_lowercase);
                if invited.as_deref() != Some(req.new_user.email.normalized().as_str()) {
                    return Err(AuthError::field(
                        "email",
                        "not_invited",
                        "the invitation was sent to another address",
                    ));
                }
                Some(hash)
            }
            None => None,
        };
        let status = match (invitation.is_some(), settings.registration) {
            (true, _) | (false, RegistrationMode::Open) => UserStatus::Active,
            (false, RegistrationMode::Approval) => UserStatus::Pending,
            (false, RegistrationMode::Invite) => {
                return Err(AuthError::refused(Code::InvitationRequired))
            }
            (false, RegistrationMode::Closed) => return Err(closed()),
        };
        let mut new_user = req.new_user;
        new_user.status = status;
        let probe = new_user.clone().into_user(tenant.id, now());
        let hash = self
            .checked_new_hash(&probe, &settings, req.password, false)
            .await?;
        let ctx = meta.audit(Actor::System);
        let user = self
            .store
            .create_user_with_password(
                tenant.id,
                new_user,
                Some(NewPassword {
                    hash,
                    must_change: false,
                    keep_history: settings.password_policy.history,
                }),
                actions::USER_REGISTER,
                &ctx,
            )
            .await?;
        if let Some(hash) = invitation {
            self.store
                .consume_one_time_token(TokenPurpose::Invitation, &hash, now())
                .await?;
            self.store
                .mark_email_verified(tenant.id, user.id, &user.email, &ctx)
                .await?;
        } else {
            self.email_link_later(
                tenant.slug.as_str(),
                &user.email,
                TokenPurpose::EmailVerification,
                meta,
            );
        }
        Ok(user)
    }

    /// Emails a single-use invitation to register.
    pub async fn invite(
        &self,
        tenant: TenantId,
        email: &Email,
        ctx: &AuditContext,
    ) -> AuthResult<Timestamp> {
        let tenant = self.store.get_tenant(tenant).await?;
        let secret = GeneratedKey::with_prefix("");
        let at = now();
        let expires_at = at + self.config.invitation_ttl;
        let event = AuditEvent::record(
            ctx,
            tenant.id,
            actions::AUTH_INVITATION_CREATE,
            EntityRef::none("invitation"),
            (
                None,
                Some(json!({"email": email.as_str(), "expires_at": expires_at})),
            ),
            at,
        );
        self.store
            .create_one_time_token(
                &OneTimeToken {
                    hash: secret.hash.clone(),
                    tenant_id: tenant.id,
                    purpose: TokenPurpose::Invitation,
                    user_id: None,
                    email: Some(email.normalized()),
                    data: json!({}),
                    created_at: at,
                    expires_at,
                    used_at: None,
                    attempts: 0,
                },
                &[event],
            )
            .await?;
        self.send_link(
            &tenant,
            email.as_str(),
            None,
            MailKind::Invitation,
            "register",
            &secret.secret,
            self.config.invitation_ttl,
        )
        .await?;
        Ok(expires_at)
    }

    // ------------------------------------------------------------------------------------
    // Passwords managed by the user or an administrator
    // ------------------------------------------------------------------------------------

    /// Checks a new password against the tenant's policy (and, for an existing user, the
    /// history), and hashes it.
    async fn checked_new_hash(
        &self,
        user: &User,
        settings: &AuthSettings,
        password: SecretString,
        check_history: bool,
    ) -> AuthResult<String> {
        let policy = &settings.password_policy;
        let local = user.email.split('@').next().unwrap_or_default().to_owned();
        let mut inputs: Vec<&str> = vec![&user.email, &local];
        if let Some(u) = &user.username {
            inputs.push(u);
        }
        inputs.extend(user.full_name.split_whitespace());
        let violations = check_policy(policy, password.expose_secret(), &inputs);
        if !violations.is_empty() {
            return Err(AuthError::Validation(
                violations
                    .into_iter()
                    .map(|(code, message)| domain::FieldError::new("password", code, message))
                    .collect(),
            ));
        }
        if check_history && policy.history > 0 {
            let previous = self
                .store
                .password_history(user.tenant_id, user.id, policy.history)
                .await?;
            if !previous.is_empty() && self.hasher.matches_any(password.clone(), previous).await? {
                return Err(AuthError::field(
                    "password",
                    "password_reused",
                    format!(
                        "choose a password different from your last {}",
                        policy.history
                    ),
                ));
            }
        }
        Ok(self.hasher.hash(password).await?)
    }

    /// The hash to store for an administrator-given password.
    async fn admin_hash(
        &self,
        user: &User,
        settings: &AuthSettings,
        input: PasswordInput,
        check_history: bool,
    ) -> AuthResult<String> {
        match input {
            PasswordInput::Plain(p) => {
                self.checked_new_hash(user, settings, p, check_history)
                    .await
            }
            PasswordInput::Imported(raw) => import_hash(&raw)
                .map_err(|m| AuthError::field("password_hash", "unsupported_hash", m)),
        }
    }

    /// Creates a user, with an initial password when given (administrators).
    pub async fn create_user(
        &self,
        tenant: TenantId,
        new: NewUser,
        password: Option<(PasswordInput, bool)>,
        ctx: &AuditContext,
    ) -> AuthResult<User> {
        let password = match password {
            Some((input, must_change)) => {
                let settings = self.store.get_auth_settings(tenant).await?;
                let probe = new.clone().into_user(tenant, now());
                Some(NewPassword {
                    hash: self.admin_hash(&probe, &settings, input, false).await?,
                    must_change,
                    keep_history: settings.password_policy.history,
                })
            }
            None => None,
        };
        self.store
            .create_user_with_password(tenant, new, password, actions::USER_CREATE, ctx)
            .await
    }

    /// Sets a user's password (administrators); every session of the user ends.
    pub async fn set_password(
        &self,
        tenant: TenantId,
        user: UserId,
        input: PasswordInput,
        must_change: bool,
        ctx: &AuditContext,
    ) -> AuthResult<PasswordStatus> {
        let user = self.store.get_user(tenant, user).await?;
        if user.is_deleted() {
            return Err(domain::Error::NotFound { entity: "user" });
        }
        let settings = self.store.get_auth_settings(tenant).await?;
        let hash = self.admin_hash(&user, &settings, input, false).await?;
        let creds = self
            .store
            .set_password(
                tenant,
                user.id,
                NewPassword {
                    hash,
                    must_change,
                    keep_history: settings.password_policy.history,
                },
                Some(RevokeScope::All),
                actions::PASSWORD_SET,
                ctx,
            )
            .await?;
        Ok(PasswordStatus::of(&creds, now()))
    }

    pub async fn password_status(
        &self,
        tenant: TenantId,
        user: UserId,
    ) -> AuthResult<PasswordStatus> {
        let creds = self.store.get_credentials(tenant, user).await?;
        Ok(PasswordStatus::of(&creds, now()))
    }

    /// Changes the caller's own password, given the current one; other sessions end.
    pub async fn change_own_password(
        &self,
        who: &SessionPrincipal,
        current: SecretString,
        new_password: SecretString,
        meta: &RequestMeta,
    ) -> AuthResult<()> {
        let user = self.store.get_user(who.tenant_id, who.user_id).await?;
        let creds = self
            .store
            .get_credentials(who.tenant_id, who.user_id)
            .await?;
        let verification = self
            .hasher
            .verify(current, creds.password_hash.clone())
            .await?;
        if !verification.matched {
            let failures = self.account_failure(&user, "wrong_password", meta).await?;
            tokio::time::sleep(progressive_delay(failures)).await;
            return Err(AuthError::field(
                "current_password",
                "wrong_password",
                "the current password is wrong",
            ));
        }
        let settings = self.store.get_auth_settings(who.tenant_id).await?;
        let hash = self
            .checked_new_hash(&user, &settings, new_password, true)
            .await?;
        self.store
            .set_password(
                who.tenant_id,
                who.user_id,
                NewPassword {
                    hash,
                    must_change: false,
                    keep_history: settings.password_policy.history,
                },
                Some(RevokeScope::AllExcept(who.session_id)),
                actions::PASSWORD_CHANGE,
                &meta.audit(Actor::User(who.user_id)),
            )
            .await?;
        self.notify_password_changed(&user).await;
        Ok(())
    }

    // ------------------------------------------------------------------------------------
    // TOTP
    // ------------------------------------------------------------------------------------

    /// Starts a TOTP enrolment (replacing an unconfirmed one).
    pub async fn enrol_totp(
        &self,
        who: &SessionPrincipal,
        meta: &RequestMeta,
    ) -> AuthResult<TotpEnrolment> {
        let user = self.store.get_user(who.tenant_id, who.user_id).await?;
        let tenant = self.store.get_tenant(who.tenant_id).await?;
        let secret = totp::generate_secret();
        let sealed = self.master.encrypt(&secret, &totp_aad(user.id));
        self.store
            .put_pending_totp(
                who.tenant_id,
                who.user_id,
                sealed,
                &meta.audit(Actor::User(who.user_id)),
            )
            .await?;
        let otpauth_uri = totp::otpauth_uri(&secret, &tenant.display_name, &user.email);
        let qr_svg = totp::qr_svg(&otpauth_uri).map_err(AuthError::internal)?;
        Ok(TotpEnrolment {
            otpauth_uri,
            qr_svg,
        })
    }

    /// Confirms the enrolment with a first code; returns the ten recovery codes, shown once.
    pub async fn confirm_totp(
        &self,
        who: &SessionPrincipal,
        code: &str,
        meta: &RequestMeta,
    ) -> AuthResult<Vec<String>> {
        let pending = self
            .store
            .get_totp(who.tenant_id, who.user_id)
            .await?
            .filter(|t| t.confirmed_at.is_none())
            .ok_or_else(|| AuthError::refused(Code::TotpNotPending))?;
        let secret = self
            .master
            .decrypt(&pending.secret_ciphertext, &totp_aad(who.user_id))?;
        let unix = u64::try_from(now().timestamp()).unwrap_or(0);
        let step = totp::verify_code(&secret, code.trim(), unix).ok_or_else(|| {
            AuthError::field(
                "code",
                "invalid_code",
                "the code does not match; check the device clock",
            )
        })?;
        let codes = totp::generate_recovery_codes();
        let hashes: Vec<KeyHash> = codes
            .iter()
            .map(|c| keyed_digest(&self.recovery_key, c))
            .collect();
        self.store
            .confirm_totp(
                who.tenant_id,
                who.user_id,
                step,
                &hashes,
                &meta.audit(Actor::User(who.user_id)),
            )
            .await?;
        Ok(codes)
    }

    /// Replaces the recovery codes. Needs a session signed in with the second factor.
    pub async fn regenerate_recovery_codes(
        &self,
        who: &SessionPrincipal,
        meta: &RequestMeta,
    ) -> AuthResult<Vec<String>> {
        require_mfa_session(who)?;
        let codes = totp::generate_recovery_codes();
        let hashes: Vec<KeyHash> = codes
            .iter()
            .map(|c| keyed_digest(&self.recovery_key, c))
            .collect();
        self.store
            .replace_recovery_codes(
                who.tenant_id,
                who.user_id,
                &hashes,
                &meta.audit(Actor::User(who.user_id)),
            )
            .await?;
        Ok(codes)
    }

    /// Removes TOTP. Needs a session signed in with the second factor.
    pub async fn remove_totp(&self, who: &SessionPrincipal, meta: &RequestMeta) -> AuthResult<()> {
        require_mfa_session(who)?;
        self.store
            .delete_totp(
                who.tenant_id,
                who.user_id,
                &meta.audit(Actor::User(who.user_id)),
            )
            .await
    }

    // ------------------------------------------------------------------------------------
    // Sessions
    // ------------------------------------------------------------------------------------

    pub async fn sessions(&self, tenant: TenantId, user: UserId) -> AuthResult<Vec<Session>> {
        self.store.list_sessions(tenant, user, now()).await
    }

    pub async fn revoke(
        &self,
        tenant: TenantId,
        user: UserId,
        scope: RevokeScope,
        reason: &str,
        ctx: &AuditContext,
    ) -> AuthResult<u64> {
        self.store
            .revoke_sessions(tenant, user, scope, reason, ctx)
            .await
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
        store.add_signing_key(&key).await?;
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

/// Generates a new signing key that replaces the current one (`portcullis keys rotate`).
pub async fn rotate_signing_key(
    store: &dyn Store,
    master: &MasterKey,
    algorithm: crate::keys::SigningAlgorithm,
) -> AuthResult<domain::auth::SigningKeyRecord> {
    let key = generate_signing_key(algorithm, master, now())?;
    store.add_signing_key(&key).await?;
    Ok(key)
}
