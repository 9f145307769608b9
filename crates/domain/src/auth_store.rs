//! The storage interface of authentication, a part of [`crate::Store`]. Every method that
//! touches tenant data takes the `TenantId`; lookups by a secret's hash (refresh token,
//! browser cookie, single-use token) are the exception, because the secret is what names
//! the tenant, and they return the tenant with the row.
//!
//! Invariants each backend enforces, each call in one transaction with its audit events:
//! - every user has credentials: a user without a row reads as [`Credentials::empty`];
//! - a refresh token is used at most once: of two concurrent presentations of one token,
//!   one rotates and the other is a reuse that revokes the session;
//! - a single-use token is consumed at most once, and never after it expires;
//! - a TOTP time step is accepted at most once per user (`use_totp_step`), a recovery code
//!   at most once;
//! - a session is created only for an active user of an active tenant, re-checked inside
//!   the transaction that inserts it.
//!
//! What a change of a user means for sign-in (sessions revoked when disabled, the email
//! verification and emailed links voided when the address changes) is the services' rule,
//! written with [`crate::store::Tx`].

use async_trait::async_trait;

use crate::api_keys::KeyHash;
use crate::audit::{AuditContext, AuditEvent};
use crate::auth::{
    AuthSettings, BrowserSession, Credentials, NewPassword, NewSession, OneTimeToken,
    RefreshOutcome, RevokeScope, Session, SigningKeyRecord, TokenPurpose, TotpCredential,
};
use crate::error::Result;
use crate::ids::{SessionId, TenantId, UserId};
use crate::time::Timestamp;
use crate::users::User;

#[async_trait]
pub trait AuthStore: Send + Sync + 'static {
    // --- tenant settings ---

    /// The tenant's settings; the defaults when never set.
    async fn get_auth_settings(&self, tenant: TenantId) -> Result<AuthSettings>;

    // --- users with credentials ---

    /// The non-deleted user whose email or username equals `login`, case-insensitively,
    /// with their credentials.
    async fn find_login(
        &self,
        tenant: TenantId,
        login: &str,
    ) -> Result<Option<(User, Credentials)>>;

    /// A user's credentials (`NotFound` for an unknown or deleted user).
    async fn get_credentials(&self, tenant: TenantId, user: UserId) -> Result<Credentials>;

    /// Stores a new password: it becomes current, joins the history (trimmed to
    /// `keep_history` entries), `password_changed_at` becomes now, failure counters and any
    /// lock are cleared; then the sessions in `revoke` are revoked with reason
    /// `password_change`. One audit event `action` on the user (no hash in it).
    async fn set_password(
        &self,
        tenant: TenantId,
        user: UserId,
        password: NewPassword,
        revoke: Option<RevokeScope>,
        action: &'static str,
        ctx: &AuditContext,
    ) -> Result<Credentials>;

    /// The last `limit` password hashes of the user, newest first (the current one
    /// included).
    async fn password_history(
        &self,
        tenant: TenantId,
        user: UserId,
        limit: u32,
    ) -> Result<Vec<String>>;

    /// Replaces the stored hash with a re-hash of the same password, if it still is
    /// `old_hash` (a concurrent change wins). Not audited: nothing changes for anyone.
    async fn rehash_password(
        &self,
        tenant: TenantId,
        user: UserId,
        old_hash: &str,
        new_hash: &str,
    ) -> Result<bool>;

    /// Marks the address verified if the user's email still equals `email`
    /// (case-insensitively); audit `user.email_verify`. `false` when it changed since.
    async fn mark_email_verified(
        &self,
        tenant: TenantId,
        user: UserId,
        email: &str,
        ctx: &AuditContext,
    ) -> Result<bool>;

    // --- sessions ---

    /// Creates a session after a successful sign-in: refuses a user who is not `active`
    /// (`Forbidden`, `user_not_active`) under the transaction's lock, so a concurrent block
    /// cannot leave a live session behind; inserts it with its secrets, resets
    /// the failure counters (writing `user.unlock` if an expired lock is cleared), sets the
    /// user's `last_login_at`, and writes `auth.login` (entity the session, `after` its
    /// `amr` and kind).
    async fn create_session(&self, new: NewSession, ctx: &AuditContext) -> Result<Session>;

    /// A session by id (revoked or expired ones too).
    async fn get_session(&self, tenant: TenantId, id: SessionId) -> Result<Session>;

    /// Active sessions of a user, newest first.
    async fn list_sessions(
        &self,
        tenant: TenantId,
        user: UserId,
        now: Timestamp,
    ) -> Result<Vec<Session>>;

    /// Revokes the user's active sessions in `scope`; returns how many. `One` naming an
    /// unknown, another user's or an inactive session is `NotFound`. One audit event
    /// `session.revoke` per revoked session, `after` `{"reason": reason}`.
    async fn revoke_sessions(
        &self,
        tenant: TenantId,
        user: UserId,
        scope: RevokeScope,
        reason: &str,
        ctx: &AuditContext,
    ) -> Result<u64>;

    /// Presents a refresh token. If it is the session's current token and the session is
    /// active: marks it used, stores `new` as the current one, sets `last_seen_at` = `now`
    /// (and `ip`/`user_agent` from `ctx` when given) → `Rotated`. If it was already used:
    /// revokes the session (reason `refresh_token_reuse`, audit `session.revoke`) →
    /// `Reused`. Otherwise → `Invalid`.
    async fn rotate_refresh_token(
        &self,
        presented: &KeyHash,
        new: &KeyHash,
        now: Timestamp,
        ctx: &AuditContext,
    ) -> Result<RefreshOutcome>;

    /// The active browser session whose cookie secret hashes to `cookie`.
    async fn find_browser_session(
        &self,
        cookie: &KeyHash,
        now: Timestamp,
    ) -> Result<Option<BrowserSession>>;

    /// Sets `last_seen_at`.
    async fn touch_session(&self, tenant: TenantId, id: SessionId, now: Timestamp) -> Result<()>;

    // --- single-use tokens ---

    /// Stores a token, with audit events of the request that issued it. Issuing a token of
    /// a purpose invalidates the user's earlier unused tokens of the same purpose.
    async fn create_one_time_token(
        &self,
        token: &OneTimeToken,
        events: &[AuditEvent],
    ) -> Result<()>;

    /// Consumes a token: succeeds once, while unused and unexpired.
    async fn consume_one_time_token(
        &self,
        purpose: TokenPurpose,
        hash: &KeyHash,
        now: Timestamp,
    ) -> Result<Option<OneTimeToken>>;

    /// Reads a valid token without consuming it.
    async fn peek_one_time_token(
        &self,
        purpose: TokenPurpose,
        hash: &KeyHash,
        now: Timestamp,
    ) -> Result<Option<OneTimeToken>>;

    /// Takes one attempt at a valid token before what it guards is checked: `true` while
    /// fewer than `max_attempts` were taken, in one statement, so that parallel guesses
    /// cannot take more.
    async fn reserve_token_attempt(
        &self,
        purpose: TokenPurpose,
        hash: &KeyHash,
        max_attempts: u32,
        now: Timestamp,
    ) -> Result<bool>;

    // --- TOTP and recovery codes ---

    async fn get_totp(&self, tenant: TenantId, user: UserId) -> Result<Option<TotpCredential>>;

    /// Starts (or restarts) an enrolment; a confirmed one is a `Conflict`
    /// (`totp_already_enrolled`). Audit `mfa.totp.enrol`.
    async fn put_pending_totp(
        &self,
        tenant: TenantId,
        user: UserId,
        secret_ciphertext: Vec<u8>,
        ctx: &AuditContext,
    ) -> Result<()>;

    /// Confirms the pending enrolment with the step of its first code, and replaces the
    /// recovery codes. `Conflict` (`totp_not_pending`) when there is no pending enrolment.
    /// Audit `mfa.totp.confirm`.
    async fn confirm_totp(
        &self,
        tenant: TenantId,
        user: UserId,
        step: i64,
        recovery_hashes: &[KeyHash],
        ctx: &AuditContext,
    ) -> Result<()>;

    /// Accepts `step` if it is later than the last accepted one (confirmed enrolments only).
    async fn use_totp_step(&self, tenant: TenantId, user: UserId, step: i64) -> Result<bool>;

    /// Uses a recovery code once; audit `mfa.recovery_code.use` when it succeeds.
    async fn use_recovery_code(
        &self,
        tenant: TenantId,
        user: UserId,
        hash: &KeyHash,
        ctx: &AuditContext,
    ) -> Result<bool>;

    /// Replaces all recovery codes; audit `mfa.recovery_codes.regenerate`. `Conflict`
    /// (`totp_not_enrolled`) without a confirmed enrolment.
    async fn replace_recovery_codes(
        &self,
        tenant: TenantId,
        user: UserId,
        hashes: &[KeyHash],
        ctx: &AuditContext,
    ) -> Result<()>;

    /// Unused recovery codes left.
    async fn count_recovery_codes(&self, tenant: TenantId, user: UserId) -> Result<u32>;

    /// Removes the enrolment and the recovery codes; `NotFound` when there is none. Audit
    /// `mfa.totp.remove`.
    async fn delete_totp(&self, tenant: TenantId, user: UserId, ctx: &AuditContext) -> Result<()>;

    // --- signing keys (platform-wide) ---

    /// All signing keys, newest first.
    async fn list_signing_keys(&self) -> Result<Vec<SigningKeyRecord>>;

    /// Adds a key that becomes the current one: every key not yet retired gets
    /// `retired_at` = `key.created_at`; `events` (the rotation's audit records) are written
    /// in the same transaction.
    async fn add_signing_key(&self, key: &SigningKeyRecord, events: &[AuditEvent]) -> Result<()>;

    // --- housekeeping ---

    /// Deletes what can no longer serve: sessions that expired or were revoked before
    /// `before`, with their refresh tokens, and single-use tokens that expired before
    /// `before`. Returns the rows deleted. (Their story stays in the audit trail.)
    async fn prune_auth_records(&self, before: Timestamp) -> Result<u64>;

    // --- audit ---

    /// Appends events that record no change of stored state (e.g. a failed sign-in by an
    /// unknown login, a logout of an already revoked session).
    async fn append_audit_events(&self, events: &[AuditEvent]) -> Result<()>;
}
