//! Authentication entities and their rules: tenant sign-in settings, password credentials
//! and the account-lock state machine, sessions, single-use tokens, TOTP enrolments and
//! signing keys. The services in `portcullis-auth` drive them; the stores persist them.

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::api_keys::KeyHash;
use crate::code::Code;
use crate::error::{Error, FieldError};
use crate::ids::{SessionId, TenantId, UserId};
use crate::tenants::string_enum;
use crate::time::Timestamp;

string_enum!(
    /// Who may create an account in a tenant by themselves.
    RegistrationMode {
        Open => "open",
        Approval => "approval",
        Invite => "invite",
        Closed => "closed",
    }
);

string_enum!(
    /// Profile fields a tenant can ask its users to fill in (progressive profiling).
    ProfileField {
        Username => "username",
        Phone => "phone",
        Department => "department",
        JobTitle => "job_title",
        EmployeeId => "employee_id",
        CostCenter => "cost_center",
        Language => "language",
        AvatarUrl => "avatar_url",
    }
);

impl ProfileField {
    /// Whether decisions read this field : only an
    /// administrator fills it, so a tenant cannot ask its users for it.
    pub fn is_security(self) -> bool {
        matches!(self, ProfileField::Department | ProfileField::JobTitle)
    }

    /// Whether `user` still lacks this field.
    pub fn is_missing(self, user: &crate::users::User) -> bool {
        match self {
            ProfileField::Username => user.username.is_none(),
            ProfileField::Phone => user.phone.is_none(),
            ProfileField::Department => user.department.is_none(),
            ProfileField::JobTitle => user.job_title.is_none(),
            ProfileField::EmployeeId => user.employee_id.is_none(),
            ProfileField::CostCenter => user.cost_center.is_none(),
            ProfileField::Language => user.language.is_none(),
            ProfileField::AvatarUrl => user.avatar_url.is_none(),
        }
    }
}

/// Longest password anyone may choose: argon2 cost does not depend on it, but a bound keeps
/// requests small and is what every policy promises its users.
pub const MAX_PASSWORD_LENGTH: u32 = 128;

/// A tenant's password rules.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct PasswordPolicy {
    /// Fewest characters (Unicode scalar values), 8–128; default 12.
    pub min_length: u32,
    /// Most characters, `min_length`–128; default 128.
    pub max_length: u32,
    /// Lowest accepted strength estimate, 0 (anything) – 4 (very strong); default 3.
    pub min_strength: u8,
    /// How many previous passwords may not be reused, 0–24; default 5.
    pub history: u32,
    /// Days after which a password must be changed; none (default) means never.
    pub expiry_days: Option<u32>,
}

impl Default for PasswordPolicy {
    fn default() -> Self {
        Self {
            min_length: 12,
            max_length: MAX_PASSWORD_LENGTH,
            min_strength: 3,
            history: 5,
            expiry_days: None,
        }
    }
}

impl PasswordPolicy {
    pub fn validate(&self) -> Result<(), Vec<FieldError>> {
        let mut errors = Vec::new();
        if !(8..=MAX_PASSWORD_LENGTH).contains(&self.min_length) {
            errors.push(FieldError::new(
                "password_policy.min_length",
                "out_of_range",
                "must be between 8 and 128",
            ));
        }
        if self.max_length < self.min_length || self.max_length > MAX_PASSWORD_LENGTH {
            errors.push(FieldError::new(
                "password_policy.max_length",
                "out_of_range",
                "must be between min_length and 128",
            ));
        }
        if self.min_strength > 4 {
            errors.push(FieldError::new(
                "password_policy.min_strength",
                "out_of_range",
                "must be between 0 and 4",
            ));
        }
        if self.history > 24 {
            errors.push(FieldError::new(
                "password_policy.history",
                "out_of_range",
                "must be between 0 and 24",
            ));
        }
        if matches!(self.expiry_days, Some(d) if d == 0 || d > 3650) {
            errors.push(FieldError::new(
                "password_policy.expiry_days",
                "out_of_range",
                "must be between 1 and 3650",
            ));
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    /// Whether a password set at `changed_at` has expired by `now`.
    pub fn is_expired(&self, changed_at: Option<Timestamp>, now: Timestamp) -> bool {
        match (self.expiry_days, changed_at) {
            (Some(days), Some(at)) => now >= at + TimeDelta::days(i64::from(days)),
            _ => false,
        }
    }
}

/// A tenant's sign-in settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSettings {
    /// Who may register: `open`, `approval` (accounts start `pending`), `invite` (a
    /// single-use invitation is required) or `closed` (default: administrators create
    /// accounts).
    pub registration: RegistrationMode,
    /// Whether a password sign-in needs a verified email address; default false.
    pub require_verified_email: bool,
    pub password_policy: PasswordPolicy,
    /// Fields the tenant wants every user to fill in; the login answer lists those still
    /// missing.
    pub profile_fields: Vec<ProfileField>,
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            registration: RegistrationMode::Closed,
            require_verified_email: false,
            password_policy: PasswordPolicy::default(),
            profile_fields: Vec::new(),
        }
    }
}

impl AuthSettings {
    pub fn validate(&self) -> Result<(), Error> {
        let mut errors = self.password_policy.validate().err().unwrap_or_default();
        let mut seen = std::collections::HashSet::new();
        if self.profile_fields.iter().any(|f| !seen.insert(*f)) {
            errors.push(FieldError::new(
                "profile_fields",
                "duplicate",
                "lists a field twice",
            ));
        }
        if self.profile_fields.iter().any(|f| f.is_security()) {
            errors.push(FieldError::rule(
                "profile_fields",
                Code::SecurityProfileField,
            ));
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(Error::Validation(errors))
        }
    }

    /// The profile fields `user` has not filled in yet, in the tenant's order (security
    /// fields a tenant asked for before they were refused are left to administrators).
    pub fn missing_profile_fields(&self, user: &crate::users::User) -> Vec<ProfileField> {
        self.profile_fields
            .iter()
            .copied()
            .filter(|f| !f.is_security() && f.is_missing(user))
            .collect()
    }
}

/// When failed sign-ins lock an account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockoutPolicy {
    /// Failures within `window` that lock the account.
    pub threshold: u32,
    pub window: TimeDelta,
    /// How long the lock lasts; it lifts by itself.
    pub duration: TimeDelta,
}

impl Default for LockoutPolicy {
    fn default() -> Self {
        Self {
            threshold: 5,
            window: TimeDelta::minutes(15),
            duration: TimeDelta::minutes(15),
        }
    }
}

/// A user's credentials and sign-in state. Every user has one (a user without a password
/// has `password_hash: None`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub tenant_id: TenantId,
    pub user_id: UserId,
    /// A PHC string (argon2id), or an imported foreign hash until the next sign-in.
    pub password_hash: Option<String>,
    pub password_changed_at: Option<Timestamp>,
    pub must_change_password: bool,
    pub email_verified_at: Option<Timestamp>,
    /// Failures counted in the current window.
    pub failed_count: u32,
    pub failed_window_start: Option<Timestamp>,
    pub locked_until: Option<Timestamp>,
    /// Whether a confirmed TOTP enrolment exists.
    pub totp_enabled: bool,
}

impl Credentials {
    /// The state of a user who never signed in and has no password.
    pub fn empty(tenant_id: TenantId, user_id: UserId) -> Self {
        Self {
            tenant_id,
            user_id,
            password_hash: None,
            password_changed_at: None,
            must_change_password: false,
            email_verified_at: None,
            failed_count: 0,
            failed_window_start: None,
            locked_until: None,
            totp_enabled: false,
        }
    }

    pub fn is_locked(&self, now: Timestamp) -> bool {
        matches!(self.locked_until, Some(until) if until > now)
    }

    /// Takes one sign-in attempt before any secret is checked, so that parallel guesses
    /// cannot outrun the counter: `None` while the account is locked or its window already
    /// holds `threshold` attempts; otherwise the counters with this attempt counted (as a
    /// failure until [`Credentials::after_success`] clears them). An expired lock is cleared
    /// here (`unlocked`) and starts a fresh window.
    pub fn reserve_attempt(
        &self,
        policy: &LockoutPolicy,
        now: Timestamp,
    ) -> Option<LockTransition> {
        if self.is_locked(now) {
            return None;
        }
        let expired_lock = self.locked_until.is_some();
        let in_window = matches!(
            self.failed_window_start,
            Some(start) if now - start < policy.window
        ) && !expired_lock;
        let (count, start) = if in_window {
            (self.failed_count, self.failed_window_start)
        } else {
            (0, Some(now))
        };
        if count >= policy.threshold {
            return None;
        }
        Some(LockTransition {
            failed_count: count.saturating_add(1),
            failed_window_start: start,
            locked_until: None,
            locked: false,
            unlocked: expired_lock,
        })
    }

    /// The lock state once a reserved attempt turned out wrong: the account locks when its
    /// window holds `threshold` failures. A failure while locked does not extend the lock: an
    /// attacker who keeps guessing cannot keep a victim out beyond one lock period after
    /// they stop, and every lock lifts by itself.
    pub fn after_failure(&self, policy: &LockoutPolicy, now: Timestamp) -> LockTransition {
        let unchanged = LockTransition {
            failed_count: self.failed_count,
            failed_window_start: self.failed_window_start,
            locked_until: self.locked_until,
            locked: false,
            unlocked: false,
        };
        if self.is_locked(now) || self.failed_count < policy.threshold {
            return unchanged;
        }
        LockTransition {
            failed_count: 0,
            failed_window_start: None,
            locked_until: Some(now + policy.duration),
            locked: true,
            unlocked: false,
        }
    }

    /// The counters once a reserved attempt turned out right: it no longer counts (the
    /// sign-in may still stop at a later step; a completed one clears everything, see
    /// [`Credentials::after_success`]).
    pub fn after_right_attempt(&self) -> LockTransition {
        LockTransition {
            failed_count: self.failed_count.saturating_sub(1),
            failed_window_start: self.failed_window_start,
            locked_until: self.locked_until,
            locked: false,
            unlocked: false,
        }
    }

    /// The lock state after a successful sign-in: counters reset; `unlocked` tells whether
    /// an expired lock is being cleared (recorded in the audit trail).
    pub fn after_success(&self, now: Timestamp) -> LockTransition {
        LockTransition {
            failed_count: 0,
            failed_window_start: None,
            locked_until: None,
            locked: false,
            unlocked: matches!(self.locked_until, Some(until) if until <= now),
        }
    }
}

/// New values of the lock columns, and what happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockTransition {
    pub failed_count: u32,
    pub failed_window_start: Option<Timestamp>,
    pub locked_until: Option<Timestamp>,
    /// The account has just been locked (audit `user.lock`).
    pub locked: bool,
    /// An expired lock has just been cleared (audit `user.unlock`).
    pub unlocked: bool,
}

/// A new password to store: its hash and how it was set.
#[derive(Debug, Clone)]
pub struct NewPassword {
    pub hash: String,
    pub must_change: bool,
    /// How many previous hashes to keep for the reuse check (the policy's `history`).
    pub keep_history: u32,
}

/// Which of a user's sessions to revoke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevokeScope {
    One(SessionId),
    AllExcept(SessionId),
    All,
}

string_enum!(
    /// How a session is carried: bearer tokens (access + refresh) or a browser cookie.
    SessionKind { Token => "token", Browser => "browser" }
);

/// A server-side sign-in session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Session {
    pub id: SessionId,
    pub tenant_id: TenantId,
    pub user_id: UserId,
    pub kind: SessionKind,
    pub device_label: Option<String>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    /// Authentication methods used (RFC 8176 values: `pwd`, `otp`, `mfa`, `email`…).
    pub amr: Vec<String>,
    /// 1 for a single factor, 2 when a second factor was presented.
    pub mfa_level: u8,
    pub created_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
    /// The session ends at this time whatever its activity.
    pub expires_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub revoke_reason: Option<String>,
}

impl Session {
    pub fn is_active(&self, now: Timestamp) -> bool {
        self.revoked_at.is_none() && self.expires_at > now
    }
}

/// A session to create with the secrets that reach it: the refresh token of a token
/// session, the cookie and CSRF secrets of a browser session (hashes only).
#[derive(Debug, Clone)]
pub struct NewSession {
    pub session: Session,
    pub refresh_hash: Option<KeyHash>,
    pub cookie_hash: Option<KeyHash>,
    pub csrf_hash: Option<KeyHash>,
}

/// What presenting a refresh token led to.
#[derive(Debug, Clone, PartialEq)]
pub enum RefreshOutcome {
    /// The token was current: it is now used and `new` replaces it.
    Rotated(Session),
    /// The token had already been used: the whole session is now revoked.
    Reused(Session),
    /// Unknown token, or its session is revoked or expired.
    Invalid,
}

/// A browser session found by its cookie, with its CSRF hash.
#[derive(Debug, Clone)]
pub struct BrowserSession {
    pub session: Session,
    pub csrf_hash: KeyHash,
}

string_enum!(
    /// The purpose of a single-use token.
    TokenPurpose {
        MagicLink => "magic_link",
        PasswordReset => "password_reset",
        EmailVerification => "email_verification",
        Invitation => "invitation",
        MfaChallenge => "mfa_challenge",
        // A sign-in that must set a new password before it gets a session.
        PasswordChange => "password_change",
    }
);

/// A single-use secret sent to someone (by email) or handed back for a second step. Only
/// its hash is stored.
#[derive(Debug, Clone, PartialEq)]
pub struct OneTimeToken {
    pub hash: KeyHash,
    pub tenant_id: TenantId,
    pub purpose: TokenPurpose,
    pub user_id: Option<UserId>,
    /// The address the token was sent to (verification, invitation).
    pub email: Option<String>,
    /// Purpose-specific data (e.g. the authentication methods already passed).
    pub data: Value,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
    pub used_at: Option<Timestamp>,
    /// Failed attempts against it (MFA challenges).
    pub attempts: u32,
}

/// A TOTP enrolment; the secret is encrypted under the master key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TotpCredential {
    pub tenant_id: TenantId,
    pub user_id: UserId,
    pub secret_ciphertext: Vec<u8>,
    pub confirmed_at: Option<Timestamp>,
    /// The last time step accepted; a code of this step or earlier is a replay.
    pub last_used_step: i64,
    pub created_at: Timestamp,
}

/// A token-signing key. The private key is encrypted under the master key.
#[derive(Debug, Clone, PartialEq)]
pub struct SigningKeyRecord {
    pub kid: String,
    /// `EdDSA` or `ES256`.
    pub algorithm: String,
    pub private_key_ciphertext: Vec<u8>,
    /// The public JWK as published in the JWKS.
    pub public_jwk: Value,
    pub created_at: Timestamp,
    /// When it stopped signing; it stays published until the tokens it signed expire.
    pub retired_at: Option<Timestamp>,
}

/// The password state an administrator sees.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct PasswordStatus {
    pub has_password: bool,
    pub password_changed_at: Option<DateTime<Utc>>,
    pub must_change_password: bool,
    pub email_verified: bool,
    pub mfa_enabled: bool,
    pub locked_until: Option<DateTime<Utc>>,
}

impl PasswordStatus {
    pub fn of(c: &Credentials, now: Timestamp) -> Self {
        Self {
            has_password: c.password_hash.is_some(),
            password_changed_at: c.password_changed_at,
            must_change_password: c.must_change_password,
            email_verified: c.email_verified_at.is_some(),
            mfa_enabled: c.totp_enabled,
            locked_until: c.locked_until.filter(|u| *u > now),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds() -> Credentials {
        Credentials::empty(TenantId::new(), UserId::new())
    }

    fn apply(c: &mut Credentials, t: LockTransition) {
        c.failed_count = t.failed_count;
        c.failed_window_start = t.failed_window_start;
        c.locked_until = t.locked_until;
    }

    /// One wrong attempt: reserved, then confirmed as a failure.
    fn fail(c: &mut Credentials, p: &LockoutPolicy, at: Timestamp) -> Option<LockTransition> {
        let reserved = c.reserve_attempt(p, at)?;
        apply(c, reserved);
        let t = c.after_failure(p, at);
        apply(c, t);
        Some(LockTransition {
            unlocked: reserved.unlocked,
            ..t
        })
    }

    #[test]
    fn five_failures_lock_and_the_lock_lifts_by_itself() {
        let p = LockoutPolicy::default();
        let mut c = creds();
        let t0 = crate::time::now();
        for i in 0..4 {
            let t = fail(&mut c, &p, t0 + TimeDelta::seconds(i)).unwrap();
            assert!(!t.locked);
        }
        assert_eq!(c.failed_count, 4);
        let t = fail(&mut c, &p, t0 + TimeDelta::seconds(5)).unwrap();
        assert!(t.locked);
        assert!(c.is_locked(t0 + TimeDelta::minutes(10)));
        // No attempt while locked: nothing is checked, and the lock is not extended.
        assert_eq!(c.reserve_attempt(&p, t0 + TimeDelta::minutes(14)), None);
        assert!(!c.is_locked(t0 + TimeDelta::minutes(16)));
        // The first attempt after the lock starts a fresh window and records the unlock.
        let t = fail(&mut c, &p, t0 + TimeDelta::minutes(16)).unwrap();
        assert!(t.unlocked && !t.locked);
        assert_eq!(c.failed_count, 1);
    }

    #[test]
    fn attempts_are_taken_before_checking() {
        // Six attempts at once: five get a slot, the sixth none, whatever their outcome.
        let p = LockoutPolicy::default();
        let mut c = creds();
        let t0 = crate::time::now();
        for _ in 0..5 {
            let r = c.reserve_attempt(&p, t0).unwrap();
            apply(&mut c, r);
        }
        assert_eq!(c.reserve_attempt(&p, t0), None);
        // One of them was right: the counters clear and attempts open again.
        let ok = c.after_success(t0);
        apply(&mut c, ok);
        assert!(c.reserve_attempt(&p, t0).is_some());
    }

    #[test]
    fn failures_outside_the_window_start_over() {
        let p = LockoutPolicy::default();
        let mut c = creds();
        let t0 = crate::time::now();
        for i in 0..4 {
            fail(&mut c, &p, t0 + TimeDelta::minutes(i * 5)).unwrap();
        }
        // 0, 5, 10 in one window; 15 starts a new one.
        assert_eq!(c.failed_count, 1);
    }

    #[test]
    fn policy_bounds_are_checked() {
        let bad = PasswordPolicy {
            min_length: 4,
            max_length: 200,
            min_strength: 9,
            history: 99,
            expiry_days: Some(0),
        };
        assert_eq!(bad.validate().err().map(|e| e.len()), Some(5));
        assert!(PasswordPolicy::default().validate().is_ok());
    }
}
