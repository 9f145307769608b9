//! Authentication storage ([`AuthStore`]): tenant sign-in settings, password credentials
//! and the account-lock state, sessions and refresh-token rotation, single-use tokens, TOTP
//! enrolments with their recovery codes, and the platform's token-signing keys.
//!
//! Lock order, so that concurrent transactions cannot deadlock: the user row, then the
//! credentials row, then sessions. A user who may not sign in keeps no session: blocking
//! or deleting a user (in `users`) locks the user row and revokes the sessions, and
//! `create_session` updates that row first, so one of the two always sees the other.

use std::sync::LazyLock;

use async_trait::async_trait;
use domain::api_keys::KeyHash;
use domain::audit::{actions, AuditContext, AuditEvent, EntityRef};
use domain::auth::{
    AuthSettings, BrowserSession, Credentials, LockTransition, NewPassword, NewSession,
    OneTimeToken, RefreshOutcome, RevokeScope, Session, SigningKeyRecord, TokenPurpose,
    TotpCredential,
};
use domain::auth_store::AuthStore;
use domain::time::truncate;
use domain::users::{User, UserStatus};
use domain::Code;
use domain::{Error, Result, SessionId, TenantId, Timestamp, UserId};
use serde_json::{json, Value};
use sqlx::types::Json;
use sqlx::{PgConnection, Row};

use crate::error::{conflict, corrupt, db, write};
use crate::rows::{
    self, CREDENTIAL_COLUMNS, ONE_TIME_TOKEN_COLUMNS, SESSION_COLUMNS, SIGNING_KEY_COLUMNS,
    TOTP_COLUMNS, USER_COLUMNS,
};
use crate::{audit, PgStore};

/// The revocation reason of sessions whose refresh token was presented twice.
const REFRESH_TOKEN_REUSE: &str = "refresh_token_reuse";

/// The revocation reason of sessions ended by a password change.
const PASSWORD_CHANGE: &str = "password_change";

/// Rotates a refresh token in one statement (the hot path: one round trip, atomic by
/// itself). `$1` the presented hash, `$2` the new one, `$3` now, `$4`/`$5` the client's ip
/// and user agent (NULL: keep). The presented token is marked used only if it is unused
/// and its session active; the row lock taken by that update makes a concurrent
/// presentation of the same token wait and then find it used. No row: the token is not
/// current (see `rotate_refresh_token`).
static ROTATE: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH used AS ( \
           UPDATE refresh_tokens r SET used_at = $3 FROM sessions s \
           WHERE r.hash = $1 AND r.used_at IS NULL AND s.id = r.session_id \
             AND s.revoked_at IS NULL AND s.expires_at > $3 \
           RETURNING r.session_id), \
         touched AS ( \
           UPDATE sessions SET last_seen_at = $3, ip = COALESCE($4, ip), \
             user_agent = COALESCE($5, user_agent) \
           WHERE id = (SELECT session_id FROM used) AND revoked_at IS NULL AND expires_at > $3 \
           RETURNING {SESSION_COLUMNS}), \
         n AS (INSERT INTO refresh_tokens (hash, session_id, created_at, used_at) \
           SELECT $2, id, $3, NULL FROM touched) \
         SELECT {SESSION_COLUMNS} FROM touched"
    )
});

fn user_not_found() -> Error {
    Error::NotFound { entity: "user" }
}

fn session_not_found() -> Error {
    Error::NotFound { entity: "session" }
}

/// The statuses that may not sign in; their users keep no session.
fn may_not_sign_in(status: UserStatus) -> bool {
    status != UserStatus::Active
}

/// Checks that `user` is a non-deleted user of `tenant`, and keeps it so until the
/// transaction ends (`KEY SHARE` conflicts with the row lock of an update or deletion).
async fn lock_live_user(conn: &mut PgConnection, tenant: TenantId, user: UserId) -> Result<()> {
    let found: Option<i32> = sqlx::query_scalar(
        "SELECT 1 FROM users WHERE tenant_id = $1 AND id = $2 AND deleted_at IS NULL \
         FOR KEY SHARE",
    )
    .bind(tenant.into_uuid())
    .bind(user.into_uuid())
    .fetch_optional(conn)
    .await
    .map_err(db)?;
    found.map(|_| ()).ok_or_else(user_not_found)
}

/// The credentials of a non-deleted user (`NotFound` otherwise).
async fn read_credentials(
    conn: &mut PgConnection,
    tenant: TenantId,
    user: UserId,
) -> Result<Credentials> {
    let sql = format!(
        "SELECT {CREDENTIAL_COLUMNS} FROM users u LEFT JOIN user_credentials c \
         ON c.tenant_id = u.tenant_id AND c.user_id = u.id \
         WHERE u.tenant_id = $1 AND u.id = $2 AND u.deleted_at IS NULL"
    );
    let row = sqlx::query(&sql)
        .bind(tenant.into_uuid())
        .bind(user.into_uuid())
        .fetch_optional(conn)
        .await
        .map_err(db)?
        .ok_or_else(user_not_found)?;
    rows::credentials(&row, tenant, user)
}

/// Makes `p` the user's password (clearing failure counters and any lock) and adds it to
/// the history, in the caller's transaction. The caller has checked the user.
pub(crate) async fn store_password(
    conn: &mut PgConnection,
    tenant: TenantId,
    user: UserId,
    p: &NewPassword,
    now: Timestamp,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO user_credentials (tenant_id, user_id, password_hash, password_changed_at, \
         must_change_password, failed_count, failed_window_start, locked_until) \
         VALUES ($1, $2, $3, $4, $5, 0, NULL, NULL) \
         ON CONFLICT (tenant_id, user_id) DO UPDATE SET \
           password_hash = EXCLUDED.password_hash, \
           password_changed_at = EXCLUDED.password_changed_at, \
           must_change_password = EXCLUDED.must_change_password, \
           failed_count = 0, failed_window_start = NULL, locked_until = NULL",
    )
    .bind(tenant.into_uuid())
    .bind(user.into_uuid())
    .bind(&p.hash)
    .bind(now)
    .bind(p.must_change)
    .execute(&mut *conn)
    .await
    .map_err(write)?;
    if p.keep_history > 0 {
        sqlx::query(
            "INSERT INTO password_history (tenant_id, user_id, hash, created_at) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(tenant.into_uuid())
        .bind(user.into_uuid())
        .bind(&p.hash)
        .bind(now)
        .execute(&mut *conn)
        .await
        .map_err(write)?;
    }
    sqlx::query(
        "DELETE FROM password_history WHERE tenant_id = $1 AND user_id = $2 AND id NOT IN \
         (SELECT id FROM password_history WHERE tenant_id = $1 AND user_id = $2 \
          ORDER BY id DESC LIMIT $3)",
    )
    .bind(tenant.into_uuid())
    .bind(user.into_uuid())
    .bind(i64::from(p.keep_history))
    .execute(conn)
    .await
    .map_err(db)?;
    Ok(())
}

fn revoke_event(
    ctx: &AuditContext,
    tenant: TenantId,
    id: SessionId,
    reason: &str,
    now: Timestamp,
) -> AuditEvent {
    AuditEvent::record(
        ctx,
        tenant,
        actions::SESSION_REVOKE,
        EntityRef::session(id),
        (None, Some(json!({ "reason": reason }))),
        now,
    )
}

/// Revokes the active sessions of `user` in `scope` with `reason`, in the caller's
/// transaction; returns their ids. With `audited`, writes one `session.revoke` event for
/// each. A session revoked concurrently is neither revoked again nor audited twice: the
/// update waits for the other transaction and then finds it revoked.
pub(crate) async fn revoke_in_scope(
    conn: &mut PgConnection,
    tenant: TenantId,
    user: UserId,
    scope: RevokeScope,
    reason: &str,
    now: Timestamp,
    audited: Option<&AuditContext>,
) -> Result<Vec<SessionId>> {
    const REVOKE: &str = "UPDATE sessions SET revoked_at = $3, revoke_reason = $4 \
         WHERE tenant_id = $1 AND user_id = $2 AND revoked_at IS NULL AND expires_at > $3";
    let (sql, other) = match scope {
        RevokeScope::All => (format!("{REVOKE} RETURNING id"), None),
        RevokeScope::One(id) => (format!("{REVOKE} AND id = $5 RETURNING id"), Some(id)),
        RevokeScope::AllExcept(id) => (format!("{REVOKE} AND id <> $5 RETURNING id"), Some(id)),
    };
    let mut q = sqlx::query_scalar::<_, uuid::Uuid>(&sql)
        .bind(tenant.into_uuid())
        .bind(user.into_uuid())
        .bind(now)
        .bind(reason);
    if let Some(id) = other {
        q = q.bind(id.into_uuid());
    }
    let ids: Vec<SessionId> = q
        .fetch_all(&mut *conn)
        .await
        .map_err(db)?
        .into_iter()
        .map(SessionId::from_uuid)
        .collect();
    if let Some(ctx) = audited {
        let events: Vec<AuditEvent> = ids
            .iter()
            .map(|id| revoke_event(ctx, tenant, *id, reason, now))
            .collect();
        audit::insert_all(conn, &events).await?;
    }
    Ok(ids)
}

/// Replaces the user's recovery codes, in the caller's transaction.
async fn replace_codes(
    conn: &mut PgConnection,
    tenant: TenantId,
    user: UserId,
    hashes: &[KeyHash],
    now: Timestamp,
) -> Result<()> {
    sqlx::query("DELETE FROM recovery_codes WHERE tenant_id = $1 AND user_id = $2")
        .bind(tenant.into_uuid())
        .bind(user.into_uuid())
        .execute(&mut *conn)
        .await
        .map_err(db)?;
    let hashes: Vec<&str> = hashes.iter().map(KeyHash::as_str).collect();
    sqlx::query(
        "INSERT INTO recovery_codes (tenant_id, user_id, hash, created_at, used_at) \
         SELECT $1, $2, h, $4, NULL FROM UNNEST($3::text[]) AS h \
         ON CONFLICT (tenant_id, user_id, hash) DO NOTHING",
    )
    .bind(tenant.into_uuid())
    .bind(user.into_uuid())
    .bind(&hashes)
    .bind(now)
    .execute(conn)
    .await
    .map_err(write)?;
    Ok(())
}

fn mfa_event(
    ctx: &AuditContext,
    tenant: TenantId,
    user: UserId,
    action: &str,
    after: Option<Value>,
    now: Timestamp,
) -> AuditEvent {
    AuditEvent::record(
        ctx,
        tenant,
        action,
        EntityRef::user(user),
        (None, after),
        now,
    )
}

#[async_trait]
impl AuthStore for PgStore {
    async fn get_auth_settings(&self, tenant: TenantId) -> Result<AuthSettings> {
        // The tenant row tells an unknown tenant (NotFound) from one that never set its
        // settings (the defaults).
        let stored: Option<Option<Json<Value>>> = sqlx::query_scalar(
            "SELECT s.settings FROM tenants t \
             LEFT JOIN tenant_auth_settings s ON s.tenant_id = t.id WHERE t.id = $1",
        )
        .bind(tenant.into_uuid())
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        match stored {
            None => Err(Error::NotFound { entity: "tenant" }),
            Some(None) => Ok(AuthSettings::default()),
            Some(Some(Json(v))) => serde_json::from_value(v.clone())
                .map_err(|_| corrupt("auth settings", &v.to_string())),
        }
    }

    async fn find_login(
        &self,
        tenant: TenantId,
        login: &str,
    ) -> Result<Option<(User, Credentials)>> {
        // Usernames cannot contain '@', so at most one user matches; the email match would
        // win if both did.
        let sql = format!(
            "SELECT u.*, {CREDENTIAL_COLUMNS} FROM \
               (SELECT {USER_COLUMNS}, email_lower = $2 AS by_email FROM users \
                WHERE tenant_id = $1 AND (email_lower = $2 OR username_lower = $2) \
                  AND deleted_at IS NULL) u \
             LEFT JOIN user_credentials c ON c.tenant_id = u.tenant_id AND c.user_id = u.id \
             ORDER BY u.by_email DESC LIMIT 1"
        );
        let row = sqlx::query(&sql)
            .bind(tenant.into_uuid())
            .bind(login.to_lowercase())
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        let Some(row) = row else {
            return Ok(None);
        };
        let user = rows::user(&row)?;
        let creds = rows::credentials(&row, tenant, user.id)?;
        Ok(Some((user, creds)))
    }

    async fn get_credentials(&self, tenant: TenantId, user: UserId) -> Result<Credentials> {
        let mut conn = self.pool.acquire().await.map_err(db)?;
        read_credentials(&mut conn, tenant, user).await
    }

    async fn set_password(
        &self,
        tenant: TenantId,
        user: UserId,
        password: NewPassword,
        revoke: Option<RevokeScope>,
        action: &'static str,
        ctx: &AuditContext,
    ) -> Result<Credentials> {
        let now = domain::time::now();
        let mut tx = self.pool.begin().await.map_err(db)?;
        lock_live_user(&mut tx, tenant, user).await?;
        store_password(&mut tx, tenant, user, &password, now).await?;
        // The trait asks for one audit event: the revoked sessions are listed in it rather
        // than recorded one by one. A scope naming no active session of the user revokes
        // nothing; the password change stands.
        let revoked = match revoke {
            Some(scope) => {
                revoke_in_scope(&mut tx, tenant, user, scope, PASSWORD_CHANGE, now, None).await?
            }
            None => Vec::new(),
        };
        let creds = read_credentials(&mut tx, tenant, user).await?;
        let ev = AuditEvent::record(
            ctx,
            tenant,
            action,
            EntityRef::user(user),
            (
                None,
                Some(json!({
                    "must_change_password": password.must_change,
                    "revoked_sessions": revoked,
                })),
            ),
            now,
        );
        audit::insert(&mut tx, &ev).await?;
        tx.commit().await.map_err(db)?;
        Ok(creds)
    }

    async fn password_history(
        &self,
        tenant: TenantId,
        user: UserId,
        limit: u32,
    ) -> Result<Vec<String>> {
        sqlx::query_scalar(
            "SELECT hash FROM password_history WHERE tenant_id = $1 AND user_id = $2 \
             ORDER BY id DESC LIMIT $3",
        )
        .bind(tenant.into_uuid())
        .bind(user.into_uuid())
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(db)
    }

    async fn rehash_password(
        &self,
        tenant: TenantId,
        user: UserId,
        old_hash: &str,
        new_hash: &str,
    ) -> Result<bool> {
        // The history entry of the same password is re-hashed too, so that the reuse check
        // does not depend on an outdated (possibly foreign) hash format.
        let replaced: i64 = sqlx::query_scalar(
            "WITH c AS (UPDATE user_credentials SET password_hash = $4 \
               WHERE tenant_id = $1 AND user_id = $2 AND password_hash = $3 RETURNING 1), \
             h AS (UPDATE password_history SET hash = $4 \
               WHERE tenant_id = $1 AND user_id = $2 AND hash = $3 \
                 AND EXISTS (SELECT 1 FROM c)) \
             SELECT count(*) FROM c",
        )
        .bind(tenant.into_uuid())
        .bind(user.into_uuid())
        .bind(old_hash)
        .bind(new_hash)
        .fetch_one(&self.pool)
        .await
        .map_err(db)?;
        Ok(replaced == 1)
    }

    async fn mark_email_verified(
        &self,
        tenant: TenantId,
        user: UserId,
        email: &str,
        ctx: &AuditContext,
    ) -> Result<bool> {
        let now = domain::time::now();
        let mut tx = self.pool.begin().await.map_err(db)?;
        // KEY SHARE: the email cannot change until the commit.
        let current: String = sqlx::query_scalar(
            "SELECT email_lower FROM users WHERE tenant_id = $1 AND id = $2 \
             AND deleted_at IS NULL FOR KEY SHARE",
        )
        .bind(tenant.into_uuid())
        .bind(user.into_uuid())
        .fetch_optional(&mut *tx)
        .await
        .map_err(db)?
        .ok_or_else(user_not_found)?;
        if current != email.trim().to_lowercase() {
            return Ok(false);
        }
        // An address verified before stays verified from the first time, and is not
        // recorded again (no row returned).
        let verified: Option<i32> = sqlx::query_scalar(
            "INSERT INTO user_credentials (tenant_id, user_id, email_verified_at) \
             VALUES ($1, $2, $3) ON CONFLICT (tenant_id, user_id) \
             DO UPDATE SET email_verified_at = EXCLUDED.email_verified_at \
             WHERE user_credentials.email_verified_at IS NULL \
             RETURNING 1",
        )
        .bind(tenant.into_uuid())
        .bind(user.into_uuid())
        .bind(now)
        .fetch_optional(&mut *tx)
        .await
        .map_err(write)?;
        if verified.is_none() {
            return Ok(true);
        }
        let ev = AuditEvent::record(
            ctx,
            tenant,
            actions::USER_EMAIL_VERIFY,
            EntityRef::user(user),
            (None, Some(json!({ "email": current }))),
            now,
        );
        audit::insert(&mut tx, &ev).await?;
        tx.commit().await.map_err(db)?;
        Ok(true)
    }

    async fn create_session(&self, new: NewSession, ctx: &AuditContext) -> Result<Session> {
        let now = domain::time::now();
        let mut s = new.session;
        s.created_at = truncate(s.created_at);
        s.last_seen_at = truncate(s.last_seen_at);
        s.expires_at = truncate(s.expires_at);
        s.revoked_at = s.revoked_at.map(truncate);
        let (tenant, user) = (s.tenant_id, s.user_id);
        let mut tx = self.pool.begin().await.map_err(db)?;
        // First the user row (its lock is held until the commit): a concurrent block or
        // deletion either commits before, and the session is refused, or waits and then
        // revokes it. The version is not bumped: signing in is not an edit of the user.
        let status: String = sqlx::query_scalar(
            "UPDATE users SET last_login_at = $3 \
             WHERE tenant_id = $1 AND id = $2 AND deleted_at IS NULL RETURNING status",
        )
        .bind(tenant.into_uuid())
        .bind(user.into_uuid())
        .bind(s.created_at)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db)?
        .ok_or_else(user_not_found)?;
        let status: UserStatus = status
            .parse()
            .map_err(|_| corrupt("user status", &status))?;
        if may_not_sign_in(status) {
            return Err(Error::refused(Code::UserNotActive));
        }
        // Likewise a suspension of the tenant: a step begun before it ends with nothing.
        let tenant_status: String =
            sqlx::query_scalar("SELECT status FROM tenants WHERE id = $1 FOR SHARE")
                .bind(tenant.into_uuid())
                .fetch_one(&mut *tx)
                .await
                .map_err(db)?;
        if tenant_status != "active" {
            return Err(Error::refused(Code::TenantSuspended));
        }

        let mut events = Vec::with_capacity(2);
        let lock_state = sqlx::query(
            "SELECT failed_count, failed_window_start, locked_until FROM user_credentials \
             WHERE tenant_id = $1 AND user_id = $2 FOR UPDATE",
        )
        .bind(tenant.into_uuid())
        .bind(user.into_uuid())
        .fetch_optional(&mut *tx)
        .await
        .map_err(db)?;
        if let Some(row) = lock_state {
            let failed_count: i32 = row.try_get("failed_count").map_err(db)?;
            let current = Credentials {
                failed_count: u32::try_from(failed_count).unwrap_or(0),
                failed_window_start: row.try_get("failed_window_start").map_err(db)?,
                locked_until: row.try_get("locked_until").map_err(db)?,
                ..Credentials::empty(tenant, user)
            };
            if current.failed_count != 0
                || current.failed_window_start.is_some()
                || current.locked_until.is_some()
            {
                let t = current.after_success(now);
                sqlx::query(
                    "UPDATE user_credentials SET failed_count = $3, failed_window_start = $4, \
                     locked_until = $5 WHERE tenant_id = $1 AND user_id = $2",
                )
                .bind(tenant.into_uuid())
                .bind(user.into_uuid())
                .bind(i32::try_from(t.failed_count).unwrap_or(i32::MAX))
                .bind(t.failed_window_start)
                .bind(t.locked_until)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
                if t.unlocked {
                    events.push(AuditEvent::record(
                        ctx,
                        tenant,
                        actions::USER_UNLOCK,
                        EntityRef::user(user),
                        (Some(json!({ "locked_until": current.locked_until })), None),
                        now,
                    ));
                }
            }
        }

        sqlx::query(
            "INSERT INTO sessions (id, tenant_id, user_id, kind, device_label, ip, user_agent, \
             amr, mfa_level, created_at, last_seen_at, expires_at, revoked_at, revoke_reason, \
             cookie_hash, csrf_hash) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)",
        )
        .bind(s.id.into_uuid())
        .bind(tenant.into_uuid())
        .bind(user.into_uuid())
        .bind(s.kind.as_str())
        .bind(s.device_label.as_deref())
        .bind(s.ip.as_deref())
        .bind(s.user_agent.as_deref())
        .bind(&s.amr)
        .bind(i16::from(s.mfa_level))
        .bind(s.created_at)
        .bind(s.last_seen_at)
        .bind(s.expires_at)
        .bind(s.revoked_at)
        .bind(s.revoke_reason.as_deref())
        .bind(new.cookie_hash.as_ref().map(KeyHash::as_str))
        .bind(new.csrf_hash.as_ref().map(KeyHash::as_str))
        .execute(&mut *tx)
        .await
        .map_err(write)?;
        if let Some(refresh) = &new.refresh_hash {
            sqlx::query(
                "INSERT INTO refresh_tokens (hash, session_id, created_at, used_at) \
                 VALUES ($1, $2, $3, NULL)",
            )
            .bind(refresh.as_str())
            .bind(s.id.into_uuid())
            .bind(s.created_at)
            .execute(&mut *tx)
            .await
            .map_err(write)?;
        }
        events.push(AuditEvent::record(
            ctx,
            tenant,
            actions::AUTH_LOGIN,
            EntityRef::session(s.id),
            (None, Some(json!({ "amr": s.amr, "kind": s.kind }))),
            now,
        ));
        audit::insert_all(&mut tx, &events).await?;
        tx.commit().await.map_err(db)?;
        Ok(s)
    }

    async fn get_session(&self, tenant: TenantId, id: SessionId) -> Result<Session> {
        let sql =
            format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE tenant_id = $1 AND id = $2");
        let row = sqlx::query(&sql)
            .bind(tenant.into_uuid())
            .bind(id.into_uuid())
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?
            .ok_or_else(session_not_found)?;
        rows::session(&row)
    }

    async fn list_sessions(
        &self,
        tenant: TenantId,
        user: UserId,
        now: Timestamp,
    ) -> Result<Vec<Session>> {
        let now = truncate(now);
        let sql = format!(
            "SELECT {SESSION_COLUMNS} FROM sessions \
             WHERE tenant_id = $1 AND user_id = $2 AND revoked_at IS NULL AND expires_at > $3 \
             ORDER BY created_at DESC, id DESC"
        );
        sqlx::query(&sql)
            .bind(tenant.into_uuid())
            .bind(user.into_uuid())
            .bind(now)
            .fetch_all(&self.pool)
            .await
            .map_err(db)?
            .iter()
            .map(rows::session)
            .collect()
    }

    async fn revoke_sessions(
        &self,
        tenant: TenantId,
        user: UserId,
        scope: RevokeScope,
        reason: &str,
        ctx: &AuditContext,
    ) -> Result<u64> {
        let now = domain::time::now();
        let mut tx = self.pool.begin().await.map_err(db)?;
        let ids = revoke_in_scope(&mut tx, tenant, user, scope, reason, now, Some(ctx)).await?;
        if matches!(scope, RevokeScope::One(_)) && ids.is_empty() {
            return Err(session_not_found());
        }
        tx.commit().await.map_err(db)?;
        Ok(ids.len() as u64)
    }

    async fn rotate_refresh_token(
        &self,
        presented: &KeyHash,
        new: &KeyHash,
        now: Timestamp,
        ctx: &AuditContext,
    ) -> Result<RefreshOutcome> {
        // Stored times have whole microseconds (`domain::time`): so do the ones written here.
        let now = truncate(now);
        let rotated = sqlx::query(ROTATE.as_str())
            .bind(presented.as_str())
            .bind(new.as_str())
            .bind(now)
            .bind(ctx.ip.as_deref())
            .bind(ctx.user_agent.as_deref())
            .fetch_optional(&self.pool)
            .await
            .map_err(write)?;
        if let Some(row) = rotated {
            return Ok(RefreshOutcome::Rotated(rows::session(&row)?));
        }

        // Not current: unknown, its session inactive, or already used (a reuse). The session
        // row is locked, so that of concurrent reuses only one revokes and audits.
        let mut tx = self.pool.begin().await.map_err(db)?;
        let sql = format!(
            "SELECT {SESSION_COLUMNS}, \
               (SELECT used_at FROM refresh_tokens WHERE hash = $1) AS token_used_at \
             FROM sessions WHERE id = (SELECT session_id FROM refresh_tokens WHERE hash = $1) \
             FOR UPDATE"
        );
        let Some(row) = sqlx::query(&sql)
            .bind(presented.as_str())
            .fetch_optional(&mut *tx)
            .await
            .map_err(db)?
        else {
            return Ok(RefreshOutcome::Invalid);
        };
        let session = rows::session(&row)?;
        let used_at: Option<Timestamp> = row.try_get("token_used_at").map_err(db)?;
        if used_at.is_none() {
            // Unused but not rotated above: its session is revoked or expired.
            return Ok(RefreshOutcome::Invalid);
        }
        // A used token presented again: whoever holds it, the session is compromised. One
        // already revoked stays as it was.
        if session.revoked_at.is_some() {
            return Ok(RefreshOutcome::Reused(session));
        }
        let sql = format!(
            "UPDATE sessions SET revoked_at = $2, revoke_reason = $3 WHERE id = $1 \
             RETURNING {SESSION_COLUMNS}"
        );
        let row = sqlx::query(&sql)
            .bind(session.id.into_uuid())
            .bind(now)
            .bind(REFRESH_TOKEN_REUSE)
            .fetch_one(&mut *tx)
            .await
            .map_err(db)?;
        let revoked = rows::session(&row)?;
        let ev = revoke_event(ctx, revoked.tenant_id, revoked.id, REFRESH_TOKEN_REUSE, now);
        audit::insert(&mut tx, &ev).await?;
        tx.commit().await.map_err(db)?;
        Ok(RefreshOutcome::Reused(revoked))
    }

    async fn find_browser_session(
        &self,
        cookie: &KeyHash,
        now: Timestamp,
    ) -> Result<Option<BrowserSession>> {
        let now = truncate(now);
        let sql = format!(
            "SELECT {SESSION_COLUMNS}, csrf_hash FROM sessions \
             WHERE cookie_hash = $1 AND revoked_at IS NULL AND expires_at > $2"
        );
        let Some(row) = sqlx::query(&sql)
            .bind(cookie.as_str())
            .bind(now)
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?
        else {
            return Ok(None);
        };
        let session = rows::session(&row)?;
        let csrf: Option<String> = row.try_get("csrf_hash").map_err(db)?;
        let csrf = csrf.ok_or_else(|| corrupt("CSRF hash of session", &session.id.to_string()))?;
        Ok(Some(BrowserSession {
            session,
            csrf_hash: KeyHash::from_hex(csrf),
        }))
    }

    async fn touch_session(&self, tenant: TenantId, id: SessionId, now: Timestamp) -> Result<()> {
        let now = truncate(now);
        let done =
            sqlx::query("UPDATE sessions SET last_seen_at = $3 WHERE tenant_id = $1 AND id = $2")
                .bind(tenant.into_uuid())
                .bind(id.into_uuid())
                .bind(now)
                .execute(&self.pool)
                .await
                .map_err(db)?;
        if done.rows_affected() == 0 {
            return Err(session_not_found());
        }
        Ok(())
    }

    async fn create_one_time_token(
        &self,
        token: &OneTimeToken,
        events: &[AuditEvent],
    ) -> Result<()> {
        let tenant = token.tenant_id;
        let mut tx = self.pool.begin().await.map_err(db)?;
        if let Some(user) = token.user_id {
            lock_live_user(&mut tx, tenant, user).await?;
            sqlx::query(
                "UPDATE one_time_tokens SET used_at = $4 \
                 WHERE tenant_id = $1 AND user_id = $2 AND purpose = $3 AND used_at IS NULL",
            )
            .bind(tenant.into_uuid())
            .bind(user.into_uuid())
            .bind(token.purpose.as_str())
            .bind(token.created_at)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        }
        sqlx::query(
            "INSERT INTO one_time_tokens (hash, purpose, tenant_id, user_id, email, data, \
             created_at, expires_at, used_at, attempts) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(token.hash.as_str())
        .bind(token.purpose.as_str())
        .bind(tenant.into_uuid())
        .bind(token.user_id.map(UserId::into_uuid))
        .bind(token.email.as_deref())
        .bind(Json(&token.data))
        .bind(token.created_at)
        .bind(token.expires_at)
        .bind(token.used_at)
        .bind(i32::try_from(token.attempts).unwrap_or(i32::MAX))
        .execute(&mut *tx)
        .await
        .map_err(write)?;
        audit::insert_all(&mut tx, events).await?;
        tx.commit().await.map_err(db)?;
        Ok(())
    }

    async fn consume_one_time_token(
        &self,
        purpose: TokenPurpose,
        hash: &KeyHash,
        now: Timestamp,
    ) -> Result<Option<OneTimeToken>> {
        let now = truncate(now);
        // One statement: of concurrent consumptions, the first marks it used and the others
        // wait for its row lock and then find it used.
        let sql = format!(
            "UPDATE one_time_tokens SET used_at = $3 \
             WHERE hash = $1 AND purpose = $2 AND used_at IS NULL AND expires_at > $3 \
             RETURNING {ONE_TIME_TOKEN_COLUMNS}"
        );
        sqlx::query(&sql)
            .bind(hash.as_str())
            .bind(purpose.as_str())
            .bind(now)
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?
            .as_ref()
            .map(rows::one_time_token)
            .transpose()
    }

    async fn peek_one_time_token(
        &self,
        purpose: TokenPurpose,
        hash: &KeyHash,
        now: Timestamp,
    ) -> Result<Option<OneTimeToken>> {
        let now = truncate(now);
        let sql = format!(
            "SELECT {ONE_TIME_TOKEN_COLUMNS} FROM one_time_tokens \
             WHERE hash = $1 AND purpose = $2 AND used_at IS NULL AND expires_at > $3"
        );
        sqlx::query(&sql)
            .bind(hash.as_str())
            .bind(purpose.as_str())
            .bind(now)
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?
            .as_ref()
            .map(rows::one_time_token)
            .transpose()
    }

    async fn reserve_token_attempt(
        &self,
        purpose: TokenPurpose,
        hash: &KeyHash,
        max_attempts: u32,
        now: Timestamp,
    ) -> Result<bool> {
        // One statement, which locks the row: parallel attempts are counted one by one.
        let done = sqlx::query(
            "UPDATE one_time_tokens SET attempts = attempts + 1 \
             WHERE hash = $1 AND purpose = $2 AND used_at IS NULL AND expires_at > $3 \
             AND attempts < $4",
        )
        .bind(hash.as_str())
        .bind(purpose.as_str())
        .bind(now)
        .bind(i64::from(max_attempts))
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(done.rows_affected() == 1)
    }

    async fn get_totp(&self, tenant: TenantId, user: UserId) -> Result<Option<TotpCredential>> {
        let sql = format!(
            "SELECT {TOTP_COLUMNS} FROM totp_credentials WHERE tenant_id = $1 AND user_id = $2"
        );
        sqlx::query(&sql)
            .bind(tenant.into_uuid())
            .bind(user.into_uuid())
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?
            .as_ref()
            .map(rows::totp)
            .transpose()
    }

    async fn put_pending_totp(
        &self,
        tenant: TenantId,
        user: UserId,
        secret_ciphertext: Vec<u8>,
        ctx: &AuditContext,
    ) -> Result<()> {
        let now = domain::time::now();
        let mut tx = self.pool.begin().await.map_err(db)?;
        lock_live_user(&mut tx, tenant, user).await?;
        // Inserts, or restarts a pending enrolment; a confirmed one is left alone (no row).
        let written: Option<i32> = sqlx::query_scalar(
            "INSERT INTO totp_credentials (tenant_id, user_id, secret_ciphertext, confirmed_at, \
             last_used_step, created_at) VALUES ($1, $2, $3, NULL, 0, $4) \
             ON CONFLICT (tenant_id, user_id) DO UPDATE SET \
               secret_ciphertext = EXCLUDED.secret_ciphertext, last_used_step = 0, \
               created_at = EXCLUDED.created_at \
             WHERE totp_credentials.confirmed_at IS NULL \
             RETURNING 1",
        )
        .bind(tenant.into_uuid())
        .bind(user.into_uuid())
        .bind(&secret_ciphertext)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await
        .map_err(write)?;
        if written.is_none() {
            return Err(conflict(Code::TotpAlreadyEnrolled, None));
        }
        let ev = mfa_event(ctx, tenant, user, actions::MFA_TOTP_ENROL, None, now);
        audit::insert(&mut tx, &ev).await?;
        tx.commit().await.map_err(db)?;
        Ok(())
    }

    async fn confirm_totp(
        &self,
        tenant: TenantId,
        user: UserId,
        step: i64,
        recovery_hashes: &[KeyHash],
        ctx: &AuditContext,
    ) -> Result<()> {
        let now = domain::time::now();
        let mut tx = self.pool.begin().await.map_err(db)?;
        let done = sqlx::query(
            "UPDATE totp_credentials SET confirmed_at = $3, last_used_step = $4 \
             WHERE tenant_id = $1 AND user_id = $2 AND confirmed_at IS NULL",
        )
        .bind(tenant.into_uuid())
        .bind(user.into_uuid())
        .bind(now)
        .bind(step)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        if done.rows_affected() == 0 {
            return Err(conflict(Code::TotpNotPending, None));
        }
        replace_codes(&mut tx, tenant, user, recovery_hashes, now).await?;
        let after = json!({ "recovery_codes": recovery_hashes.len() });
        let ev = mfa_event(
            ctx,
            tenant,
            user,
            actions::MFA_TOTP_CONFIRM,
            Some(after),
            now,
        );
        audit::insert(&mut tx, &ev).await?;
        tx.commit().await.map_err(db)?;
        Ok(())
    }

    async fn use_totp_step(&self, tenant: TenantId, user: UserId, step: i64) -> Result<bool> {
        // One statement: of two concurrent uses of a step, the second waits for the row lock
        // and then finds the step no longer later than the last one.
        let done = sqlx::query(
            "UPDATE totp_credentials SET last_used_step = $3 \
             WHERE tenant_id = $1 AND user_id = $2 AND confirmed_at IS NOT NULL \
               AND last_used_step < $3",
        )
        .bind(tenant.into_uuid())
        .bind(user.into_uuid())
        .bind(step)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(done.rows_affected() == 1)
    }

    async fn use_recovery_code(
        &self,
        tenant: TenantId,
        user: UserId,
        hash: &KeyHash,
        ctx: &AuditContext,
    ) -> Result<bool> {
        let now = domain::time::now();
        let mut tx = self.pool.begin().await.map_err(db)?;
        let done = sqlx::query(
            "UPDATE recovery_codes SET used_at = $4 \
             WHERE tenant_id = $1 AND user_id = $2 AND hash = $3 AND used_at IS NULL",
        )
        .bind(tenant.into_uuid())
        .bind(user.into_uuid())
        .bind(hash.as_str())
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        if done.rows_affected() == 0 {
            return Ok(false);
        }
        let ev = mfa_event(ctx, tenant, user, actions::MFA_RECOVERY_CODE_USE, None, now);
        audit::insert(&mut tx, &ev).await?;
        tx.commit().await.map_err(db)?;
        Ok(true)
    }

    async fn replace_recovery_codes(
        &self,
        tenant: TenantId,
        user: UserId,
        hashes: &[KeyHash],
        ctx: &AuditContext,
    ) -> Result<()> {
        let now = domain::time::now();
        let mut tx = self.pool.begin().await.map_err(db)?;
        // FOR SHARE: the enrolment cannot be removed (or confirmed) until the commit.
        let enrolled: Option<i32> = sqlx::query_scalar(
            "SELECT 1 FROM totp_credentials WHERE tenant_id = $1 AND user_id = $2 \
             AND confirmed_at IS NOT NULL FOR SHARE",
        )
        .bind(tenant.into_uuid())
        .bind(user.into_uuid())
        .fetch_optional(&mut *tx)
        .await
        .map_err(db)?;
        if enrolled.is_none() {
            return Err(conflict(Code::TotpNotEnrolled, None));
        }
        replace_codes(&mut tx, tenant, user, hashes, now).await?;
        let after = json!({ "recovery_codes": hashes.len() });
        let ev = mfa_event(
            ctx,
            tenant,
            user,
            actions::MFA_RECOVERY_CODES_REGENERATE,
            Some(after),
            now,
        );
        audit::insert(&mut tx, &ev).await?;
        tx.commit().await.map_err(db)?;
        Ok(())
    }

    async fn count_recovery_codes(&self, tenant: TenantId, user: UserId) -> Result<u32> {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM recovery_codes \
             WHERE tenant_id = $1 AND user_id = $2 AND used_at IS NULL",
        )
        .bind(tenant.into_uuid())
        .bind(user.into_uuid())
        .fetch_one(&self.pool)
        .await
        .map_err(db)?;
        Ok(u32::try_from(n).unwrap_or(u32::MAX))
    }

    async fn delete_totp(&self, tenant: TenantId, user: UserId, ctx: &AuditContext) -> Result<()> {
        let now = domain::time::now();
        let mut tx = self.pool.begin().await.map_err(db)?;
        let done =
            sqlx::query("DELETE FROM totp_credentials WHERE tenant_id = $1 AND user_id = $2")
                .bind(tenant.into_uuid())
                .bind(user.into_uuid())
                .execute(&mut *tx)
                .await
                .map_err(db)?;
        if done.rows_affected() == 0 {
            return Err(Error::NotFound { entity: "totp" });
        }
        sqlx::query("DELETE FROM recovery_codes WHERE tenant_id = $1 AND user_id = $2")
            .bind(tenant.into_uuid())
            .bind(user.into_uuid())
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        let ev = mfa_event(ctx, tenant, user, actions::MFA_TOTP_REMOVE, None, now);
        audit::insert(&mut tx, &ev).await?;
        tx.commit().await.map_err(db)?;
        Ok(())
    }

    async fn list_signing_keys(&self) -> Result<Vec<SigningKeyRecord>> {
        let sql = format!(
            "SELECT {SIGNING_KEY_COLUMNS} FROM signing_keys ORDER BY created_at DESC, kid DESC"
        );
        sqlx::query(&sql)
            .fetch_all(&self.pool)
            .await
            .map_err(db)?
            .iter()
            .map(rows::signing_key)
            .collect()
    }

    async fn add_signing_key(&self, key: &SigningKeyRecord, events: &[AuditEvent]) -> Result<()> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        // Key additions are serialised (the mode conflicts with itself, not with readers),
        // so that two concurrent ones cannot leave two current keys.
        sqlx::query("LOCK TABLE signing_keys IN SHARE ROW EXCLUSIVE MODE")
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        sqlx::query("UPDATE signing_keys SET retired_at = $1 WHERE retired_at IS NULL")
            .bind(key.created_at)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        sqlx::query(
            "INSERT INTO signing_keys (kid, algorithm, private_key_ciphertext, public_jwk, \
             created_at, retired_at) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&key.kid)
        .bind(&key.algorithm)
        .bind(&key.private_key_ciphertext)
        .bind(Json(&key.public_jwk))
        .bind(key.created_at)
        .bind(key.retired_at)
        .execute(&mut *tx)
        .await
        .map_err(write)?;
        audit::insert_all(&mut tx, events).await?;
        tx.commit().await.map_err(db)?;
        Ok(())
    }

    async fn prune_auth_records(&self, before: Timestamp) -> Result<u64> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        let mut deleted = 0;
        for sql in [
            "DELETE FROM refresh_tokens WHERE session_id IN (SELECT id FROM sessions \
             WHERE expires_at < $1 OR revoked_at < $1)",
            "DELETE FROM sessions WHERE expires_at < $1 OR revoked_at < $1",
            "DELETE FROM one_time_tokens WHERE expires_at < $1",
        ] {
            deleted += sqlx::query(sql)
                .bind(before)
                .execute(&mut *tx)
                .await
                .map_err(db)?
                .rows_affected();
        }
        tx.commit().await.map_err(db)?;
        Ok(deleted)
    }

    async fn append_audit_events(&self, events: &[AuditEvent]) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await.map_err(db)?;
        audit::insert_all(&mut tx, events).await?;
        tx.commit().await.map_err(db)?;
        Ok(())
    }
}

// --- transaction primitives (see `crate::tx`) ---

pub(crate) async fn set_email_verified(
    conn: &mut PgConnection,
    tenant: TenantId,
    user: UserId,
    at: Option<Timestamp>,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO user_credentials (tenant_id, user_id, email_verified_at, failed_count) \
         VALUES ($1, $2, $3, 0) ON CONFLICT (tenant_id, user_id) \
         DO UPDATE SET email_verified_at = EXCLUDED.email_verified_at",
    )
    .bind(tenant.into_uuid())
    .bind(user.into_uuid())
    .bind(at)
    .execute(conn)
    .await
    .map_err(write)?;
    Ok(())
}

pub(crate) async fn void_tokens(
    conn: &mut PgConnection,
    tenant: TenantId,
    user: UserId,
    purposes: &[TokenPurpose],
    at: Timestamp,
) -> Result<u64> {
    let purposes: Vec<&str> = purposes.iter().map(|p| p.as_str()).collect();
    let done = sqlx::query(
        "UPDATE one_time_tokens SET used_at = $4 WHERE tenant_id = $1 AND user_id = $2 \
         AND purpose = ANY($3) AND used_at IS NULL",
    )
    .bind(tenant.into_uuid())
    .bind(user.into_uuid())
    .bind(&purposes)
    .bind(at)
    .execute(conn)
    .await
    .map_err(db)?;
    Ok(done.rows_affected())
}

/// The tenant's settings, locked: a tenant that never set them gets a row of the defaults
/// so that there is one to lock (an unknown tenant fails the foreign key: `NotFound`).
pub(crate) async fn settings_for_update(
    conn: &mut PgConnection,
    tenant: TenantId,
) -> Result<AuthSettings> {
    sqlx::query(
        "INSERT INTO tenant_auth_settings (tenant_id, settings, updated_at) \
         VALUES ($1, $2, $3) ON CONFLICT (tenant_id) DO NOTHING",
    )
    .bind(tenant.into_uuid())
    .bind(Json(AuthSettings::default()))
    .bind(domain::time::now())
    .execute(&mut *conn)
    .await
    .map_err(write)?;
    let Json(v): Json<Value> = sqlx::query_scalar(
        "SELECT settings FROM tenant_auth_settings WHERE tenant_id = $1 FOR UPDATE",
    )
    .bind(tenant.into_uuid())
    .fetch_one(conn)
    .await
    .map_err(db)?;
    serde_json::from_value(v.clone()).map_err(|_| corrupt("auth settings", &v.to_string()))
}

pub(crate) async fn put_settings(
    conn: &mut PgConnection,
    tenant: TenantId,
    settings: &AuthSettings,
) -> Result<()> {
    sqlx::query(
        "UPDATE tenant_auth_settings SET settings = $2, updated_at = $3 WHERE tenant_id = $1",
    )
    .bind(tenant.into_uuid())
    .bind(Json(settings))
    .bind(domain::time::now())
    .execute(conn)
    .await
    .map_err(write)?;
    Ok(())
}

/// The user's credentials, the row locked until commit (created empty first, so that a
/// user without a password has one to lock).
pub(crate) async fn credentials_for_update(
    conn: &mut PgConnection,
    tenant: TenantId,
    user: UserId,
) -> Result<Credentials> {
    sqlx::query(
        "INSERT INTO user_credentials (tenant_id, user_id) \
         SELECT tenant_id, id FROM users \
         WHERE tenant_id = $1 AND id = $2 AND deleted_at IS NULL \
         ON CONFLICT (tenant_id, user_id) DO NOTHING",
    )
    .bind(tenant.into_uuid())
    .bind(user.into_uuid())
    .execute(&mut *conn)
    .await
    .map_err(write)?;
    let sql = format!(
        "SELECT {CREDENTIAL_COLUMNS} FROM user_credentials c \
         JOIN users u ON u.tenant_id = c.tenant_id AND u.id = c.user_id \
         WHERE c.tenant_id = $1 AND c.user_id = $2 AND u.deleted_at IS NULL \
         FOR UPDATE OF c"
    );
    let row = sqlx::query(&sql)
        .bind(tenant.into_uuid())
        .bind(user.into_uuid())
        .fetch_optional(&mut *conn)
        .await
        .map_err(db)?
        .ok_or_else(user_not_found)?;
    rows::credentials(&row, tenant, user)
}

pub(crate) async fn put_lock_state(
    conn: &mut PgConnection,
    tenant: TenantId,
    user: UserId,
    state: &LockTransition,
) -> Result<()> {
    sqlx::query(
        "UPDATE user_credentials SET failed_count = $3, failed_window_start = $4, \
         locked_until = $5 WHERE tenant_id = $1 AND user_id = $2",
    )
    .bind(tenant.into_uuid())
    .bind(user.into_uuid())
    .bind(i32::try_from(state.failed_count).unwrap_or(i32::MAX))
    .bind(state.failed_window_start)
    .bind(state.locked_until)
    .execute(&mut *conn)
    .await
    .map_err(db)?;
    Ok(())
}
