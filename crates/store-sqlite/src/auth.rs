//! The SQLite implementation of [`domain::AuthStore`]: tenant sign-in settings, credentials
//! and the lock state, password history, sessions and refresh tokens, single-use tokens,
//! TOTP enrolments with recovery codes, and the platform's signing keys.
//!
//! As in the rest of the store, every mutation runs in one transaction on the single writer
//! connection together with its audit events, so a read-then-write (a refresh rotation, a
//! lock transition) never interleaves with another writer; the decisive writes are also
//! conditional (`... WHERE used_at IS NULL`), so that they stay single-use even if a second
//! process ever opened the file.

use std::str::FromStr;

use async_trait::async_trait;
use domain::api_keys::KeyHash;
use domain::audit::{actions, AuditContext, AuditEvent, EntityRef};
use domain::auth::{
    AuthSettings, BrowserSession, Credentials, LockTransition, NewPassword, NewSession,
    OneTimeToken, RefreshOutcome, RevokeScope, Session, SessionKind, SigningKeyRecord,
    TokenPurpose, TotpCredential,
};
use domain::ids::{SessionId, TenantId, UserId};
use domain::time::{now, to_micros, truncate, Timestamp};
use domain::users::User;
use domain::Code;
use domain::{AuthStore, Error};
use serde_json::{json, Value};
use sqlx::sqlite::{SqliteConnection, SqliteRow};
use sqlx::{QueryBuilder, Row, Sqlite};

use crate::audit::insert as insert_audit;
use crate::error::{corrupt, db_err, Result};
use crate::rows::{opt_ts, ts, user_from_row, USER_COLS};
use crate::SqliteStore;

/// The user, not deleted, else `NotFound`.
async fn load_live_user(
    conn: &mut SqliteConnection,
    tenant: TenantId,
    user: UserId,
    _: Option<i64>,
) -> Result<User> {
    match crate::users::load(conn, tenant, user).await? {
        Some(u) if !u.is_deleted() => Ok(u),
        _ => Err(Error::NotFound { entity: "user" }),
    }
}

/// The tenant must exist.
async fn load_tenant(
    conn: &mut SqliteConnection,
    tenant: TenantId,
) -> Result<domain::tenants::Tenant> {
    crate::tenants::load(conn, tenant).await
}

// --- rows ---

fn get<'r, T>(row: &'r SqliteRow, col: &str) -> Result<T>
where
    T: sqlx::Decode<'r, Sqlite> + sqlx::Type<Sqlite>,
{
    row.try_get(col).map_err(db_err)
}

fn count_u32(n: i64) -> Result<u32> {
    u32::try_from(n).map_err(|_| corrupt(format_args!("count {n}")))
}

/// A SHA-256 digest read back from a `*_hash` column.
fn stored_hash(hex: String) -> Result<KeyHash> {
    if hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        Ok(KeyHash::from_hex(hex))
    } else {
        Err(corrupt("a stored digest is not 64 lower-case hex digits"))
    }
}

const SESSION_COLS: &str = "id, tenant_id, user_id, kind, device_label, ip, user_agent, amr, \
     mfa_level, created_at, last_seen_at, expires_at, revoked_at, revoke_reason";

fn session_from_row(row: &SqliteRow) -> Result<Session> {
    let kind: String = get(row, "kind")?;
    let amr: String = get(row, "amr")?;
    let mfa_level: i64 = get(row, "mfa_level")?;
    Ok(Session {
        id: SessionId::from_uuid(get(row, "id")?),
        tenant_id: TenantId::from_uuid(get(row, "tenant_id")?),
        user_id: UserId::from_uuid(get(row, "user_id")?),
        kind: SessionKind::from_str(&kind).map_err(corrupt)?,
        device_label: get(row, "device_label")?,
        ip: get(row, "ip")?,
        user_agent: get(row, "user_agent")?,
        amr: serde_json::from_str(&amr).map_err(|e| corrupt(format_args!("amr: {e}")))?,
        mfa_level: u8::try_from(mfa_level)
            .map_err(|_| corrupt(format_args!("mfa level {mfa_level}")))?,
        created_at: ts(get(row, "created_at")?)?,
        last_seen_at: ts(get(row, "last_seen_at")?)?,
        expires_at: ts(get(row, "expires_at")?)?,
        revoked_at: opt_ts(get(row, "revoked_at")?)?,
        revoke_reason: get(row, "revoke_reason")?,
    })
}

const OTT_COLS: &str =
    "purpose, tenant_id, user_id, email, data, created_at, expires_at, used_at, attempts";

/// A single-use token row; `hash` is the one it was found by.
fn ott_from_row(row: &SqliteRow, hash: &KeyHash) -> Result<OneTimeToken> {
    let purpose: String = get(row, "purpose")?;
    let data: String = get(row, "data")?;
    Ok(OneTimeToken {
        hash: hash.clone(),
        tenant_id: TenantId::from_uuid(get(row, "tenant_id")?),
        purpose: TokenPurpose::from_str(&purpose).map_err(corrupt)?,
        user_id: get::<Option<uuid::Uuid>>(row, "user_id")?.map(UserId::from_uuid),
        email: get(row, "email")?,
        data: serde_json::from_str(&data).map_err(|e| corrupt(format_args!("data: {e}")))?,
        created_at: ts(get(row, "created_at")?)?,
        expires_at: ts(get(row, "expires_at")?)?,
        used_at: opt_ts(get(row, "used_at")?)?,
        attempts: count_u32(get(row, "attempts")?)?,
    })
}

const TOTP_COLS: &str =
    "tenant_id, user_id, secret_ciphertext, confirmed_at, last_used_step, created_at";

fn totp_from_row(row: &SqliteRow) -> Result<TotpCredential> {
    Ok(TotpCredential {
        tenant_id: TenantId::from_uuid(get(row, "tenant_id")?),
        user_id: UserId::from_uuid(get(row, "user_id")?),
        secret_ciphertext: get(row, "secret_ciphertext")?,
        confirmed_at: opt_ts(get(row, "confirmed_at")?)?,
        last_used_step: get(row, "last_used_step")?,
        created_at: ts(get(row, "created_at")?)?,
    })
}

const SIGNING_KEY_COLS: &str =
    "kid, algorithm, private_key_ciphertext, public_jwk, created_at, retired_at";

fn signing_key_from_row(row: &SqliteRow) -> Result<SigningKeyRecord> {
    let jwk: String = get(row, "public_jwk")?;
    Ok(SigningKeyRecord {
        kid: get(row, "kid")?,
        algorithm: get(row, "algorithm")?,
        private_key_ciphertext: get(row, "private_key_ciphertext")?,
        public_jwk: serde_json::from_str(&jwk)
            .map_err(|e| corrupt(format_args!("public JWK: {e}")))?,
        created_at: ts(get(row, "created_at")?)?,
        retired_at: opt_ts(get(row, "retired_at")?)?,
    })
}

/// The session as stored: timestamps at the microsecond precision the columns keep.
fn stored_session(s: Session) -> Session {
    Session {
        created_at: truncate(s.created_at),
        last_seen_at: truncate(s.last_seen_at),
        expires_at: truncate(s.expires_at),
        revoked_at: s.revoked_at.map(truncate),
        ..s
    }
}

// --- statements whose plans the tests check ---

pub(crate) fn list_sessions_sql() -> String {
    format!(
        "SELECT {SESSION_COLS} FROM sessions WHERE tenant_id = ? AND user_id = ? \
         AND revoked_at IS NULL AND expires_at > ? ORDER BY created_at DESC, id DESC"
    )
}

pub(crate) fn find_browser_session_sql() -> String {
    format!(
        "SELECT {SESSION_COLS}, csrf_hash FROM sessions WHERE cookie_hash = ? \
         AND kind = 'browser' AND revoked_at IS NULL AND expires_at > ?"
    )
}

pub(crate) const PASSWORD_HISTORY_SQL: &str = "SELECT password_hash FROM password_history \
     WHERE tenant_id = ? AND user_id = ? ORDER BY seq DESC LIMIT ?";

pub(crate) const INVALIDATE_EARLIER_TOKENS_SQL: &str = "UPDATE one_time_tokens SET used_at = ? \
     WHERE tenant_id = ? AND user_id = ? AND purpose = ? AND used_at IS NULL";

// --- shared steps, run on the caller's connection (the writer's transaction) ---

/// The credentials of `user`, empty when the user has no row. Does not check the user.
async fn load_credentials(
    conn: &mut SqliteConnection,
    tenant: TenantId,
    user: UserId,
) -> Result<Credentials> {
    let row = sqlx::query(
        "SELECT c.password_hash, c.password_changed_at, c.must_change_password, \
         c.email_verified_at, c.failed_count, c.failed_window_start, c.locked_until, \
         EXISTS (SELECT 1 FROM totp_credentials t WHERE t.tenant_id = ?1 AND t.user_id = ?2 \
                 AND t.confirmed_at IS NOT NULL) AS totp_enabled \
         FROM (SELECT 1) LEFT JOIN credentials c ON c.tenant_id = ?1 AND c.user_id = ?2",
    )
    .bind(tenant.into_uuid())
    .bind(user.into_uuid())
    .fetch_one(&mut *conn)
    .await
    .map_err(db_err)?;
    Ok(Credentials {
        tenant_id: tenant,
        user_id: user,
        password_hash: get(&row, "password_hash")?,
        password_changed_at: opt_ts(get(&row, "password_changed_at")?)?,
        must_change_password: get::<Option<bool>>(&row, "must_change_password")?.unwrap_or(false),
        email_verified_at: opt_ts(get(&row, "email_verified_at")?)?,
        failed_count: count_u32(get::<Option<i64>>(&row, "failed_count")?.unwrap_or(0))?,
        failed_window_start: opt_ts(get(&row, "failed_window_start")?)?,
        locked_until: opt_ts(get(&row, "locked_until")?)?,
        totp_enabled: get(&row, "totp_enabled")?,
    })
}

/// Writes the credentials row (creating it if missing); `totp_enabled` is derived, not
/// stored.
async fn write_credentials(conn: &mut SqliteConnection, c: &Credentials) -> Result<()> {
    sqlx::query(
        "INSERT INTO credentials (tenant_id, user_id, password_hash, password_changed_at, \
         must_change_password, email_verified_at, failed_count, failed_window_start, \
         locked_until) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) \
         ON CONFLICT (tenant_id, user_id) DO UPDATE SET \
         password_hash = excluded.password_hash, \
         password_changed_at = excluded.password_changed_at, \
         must_change_password = excluded.must_change_password, \
         email_verified_at = excluded.email_verified_at, \
         failed_count = excluded.failed_count, \
         failed_window_start = excluded.failed_window_start, \
         locked_until = excluded.locked_until",
    )
    .bind(c.tenant_id.into_uuid())
    .bind(c.user_id.into_uuid())
    .bind(&c.password_hash)
    .bind(c.password_changed_at.map(to_micros))
    .bind(c.must_change_password)
    .bind(c.email_verified_at.map(to_micros))
    .bind(i64::from(c.failed_count))
    .bind(c.failed_window_start.map(to_micros))
    .bind(c.locked_until.map(to_micros))
    .execute(&mut *conn)
    .await
    .map_err(db_err)?;
    Ok(())
}

/// The user's credentials for a sign-in attempt (the writer connection serialises them).
pub(crate) async fn credentials_for_update(
    conn: &mut SqliteConnection,
    tenant: TenantId,
    user: UserId,
) -> Result<Credentials> {
    load_live_user(conn, tenant, user, None).await?;
    load_credentials(conn, tenant, user).await
}

pub(crate) async fn put_lock_state(
    conn: &mut SqliteConnection,
    tenant: TenantId,
    user: UserId,
    state: &LockTransition,
) -> Result<()> {
    let mut c = load_credentials(conn, tenant, user).await?;
    apply_lock(&mut c, state);
    write_credentials(conn, &c).await
}

fn apply_lock(c: &mut Credentials, t: &LockTransition) {
    c.failed_count = t.failed_count;
    c.failed_window_start = t.failed_window_start;
    c.locked_until = t.locked_until;
}

/// Makes `password` the current one and adds it to the history, keeping the newest
/// `keep_history` entries. Counters and lock are cleared.
pub(crate) async fn store_password(
    conn: &mut SqliteConnection,
    tenant: TenantId,
    user: UserId,
    password: &NewPassword,
    now: Timestamp,
) -> Result<Credentials> {
    let mut c = load_credentials(conn, tenant, user).await?;
    c.password_hash = Some(password.hash.clone());
    c.password_changed_at = Some(now);
    c.must_change_password = password.must_change;
    c.failed_count = 0;
    c.failed_window_start = None;
    c.locked_until = None;
    write_credentials(conn, &c).await?;
    if password.keep_history > 0 {
        sqlx::query(
            "INSERT INTO password_history (tenant_id, user_id, password_hash, created_at) \
             VALUES (?, ?, ?, ?)",
        )
        .bind(tenant.into_uuid())
        .bind(user.into_uuid())
        .bind(&password.hash)
        .bind(to_micros(now))
        .execute(&mut *conn)
        .await
        .map_err(db_err)?;
    }
    sqlx::query(
        "DELETE FROM password_history WHERE tenant_id = ?1 AND user_id = ?2 AND seq NOT IN ( \
             SELECT seq FROM password_history WHERE tenant_id = ?1 AND user_id = ?2 \
             ORDER BY seq DESC LIMIT ?3)",
    )
    .bind(tenant.into_uuid())
    .bind(user.into_uuid())
    .bind(i64::from(password.keep_history))
    .execute(&mut *conn)
    .await
    .map_err(db_err)?;
    Ok(c)
}

/// Revokes the active sessions of `user` in `scope` (`One` naming no active session of the
/// user revokes nothing) and returns their ids, oldest first. With `audit`, writes one
/// `session.revoke` per session.
pub(crate) async fn revoke_user_sessions(
    conn: &mut SqliteConnection,
    tenant: TenantId,
    user: UserId,
    scope: RevokeScope,
    reason: &str,
    now: Timestamp,
    audit: Option<&AuditContext>,
) -> Result<Vec<SessionId>> {
    let mut qb: QueryBuilder<'_, Sqlite> = QueryBuilder::new("UPDATE sessions SET revoked_at = ");
    qb.push_bind(to_micros(now))
        .push(", revoke_reason = ")
        .push_bind(reason.to_owned())
        .push(" WHERE tenant_id = ")
        .push_bind(tenant.into_uuid())
        .push(" AND user_id = ")
        .push_bind(user.into_uuid())
        .push(" AND revoked_at IS NULL AND expires_at > ")
        .push_bind(to_micros(now));
    match scope {
        RevokeScope::One(id) => {
            qb.push(" AND id = ").push_bind(id.into_uuid());
        }
        RevokeScope::AllExcept(id) => {
            qb.push(" AND id <> ").push_bind(id.into_uuid());
        }
        RevokeScope::All => {}
    }
    qb.push(" RETURNING id");
    let rows = qb.build().fetch_all(&mut *conn).await.map_err(db_err)?;
    let mut ids = rows
        .iter()
        .map(|r| get(r, "id").map(SessionId::from_uuid))
        .collect::<Result<Vec<_>>>()?;
    // Ids are time-ordered (UUID v7): the events follow the sessions' creation order.
    ids.sort();
    if let Some(ctx) = audit {
        for id in &ids {
            let ev = AuditEvent::record(
                ctx,
                tenant,
                actions::SESSION_REVOKE,
                EntityRef::session(*id),
                (None, Some(json!({ "reason": reason }))),
                now,
            );
            insert_audit(conn, &ev).await?;
        }
    }
    Ok(ids)
}

async fn load_session(
    conn: &mut SqliteConnection,
    tenant: TenantId,
    id: SessionId,
) -> Result<Session> {
    let row = sqlx::query(&format!(
        "SELECT {SESSION_COLS} FROM sessions WHERE tenant_id = ? AND id = ?"
    ))
    .bind(tenant.into_uuid())
    .bind(id.into_uuid())
    .fetch_optional(&mut *conn)
    .await
    .map_err(db_err)?
    .ok_or(Error::NotFound { entity: "session" })?;
    session_from_row(&row)
}

async fn confirmed_totp_exists(
    conn: &mut SqliteConnection,
    tenant: TenantId,
    user: UserId,
) -> Result<bool> {
    let row = sqlx::query(
        "SELECT EXISTS (SELECT 1 FROM totp_credentials WHERE tenant_id = ? AND user_id = ? \
         AND confirmed_at IS NOT NULL) AS confirmed",
    )
    .bind(tenant.into_uuid())
    .bind(user.into_uuid())
    .fetch_one(&mut *conn)
    .await
    .map_err(db_err)?;
    get(&row, "confirmed")
}

async fn replace_codes(
    conn: &mut SqliteConnection,
    tenant: TenantId,
    user: UserId,
    hashes: &[KeyHash],
) -> Result<()> {
    sqlx::query("DELETE FROM recovery_codes WHERE tenant_id = ? AND user_id = ?")
        .bind(tenant.into_uuid())
        .bind(user.into_uuid())
        .execute(&mut *conn)
        .await
        .map_err(db_err)?;
    for h in hashes {
        sqlx::query(
            "INSERT INTO recovery_codes (tenant_id, user_id, code_hash, used_at) \
             VALUES (?, ?, ?, NULL) ON CONFLICT DO NOTHING",
        )
        .bind(tenant.into_uuid())
        .bind(user.into_uuid())
        .bind(h.as_str())
        .execute(&mut *conn)
        .await
        .map_err(db_err)?;
    }
    Ok(())
}

fn user_event(
    ctx: &AuditContext,
    tenant: TenantId,
    user: UserId,
    action: &str,
    (before, after): (Option<Value>, Option<Value>),
    now: Timestamp,
) -> AuditEvent {
    AuditEvent::record(
        ctx,
        tenant,
        action,
        EntityRef::user(user),
        (before, after),
        now,
    )
}

#[async_trait]
impl AuthStore for SqliteStore {
    // --- tenant settings ---

    async fn get_auth_settings(&self, tenant: TenantId) -> domain::Result<AuthSettings> {
        let row = sqlx::query(
            "SELECT s.settings FROM tenants t LEFT JOIN auth_settings s ON s.tenant_id = t.id \
             WHERE t.id = ?",
        )
        .bind(tenant.into_uuid())
        .fetch_optional(&self.reader)
        .await
        .map_err(db_err)?
        .ok_or(Error::NotFound { entity: "tenant" })?;
        match get::<Option<String>>(&row, "settings")? {
            Some(text) => {
                serde_json::from_str(&text).map_err(|e| corrupt(format_args!("auth settings: {e}")))
            }
            None => Ok(AuthSettings::default()),
        }
    }

    // --- users with credentials ---

    async fn find_login(
        &self,
        tenant: TenantId,
        login: &str,
    ) -> domain::Result<Option<(User, Credentials)>> {
        let key = login.trim().to_lowercase();
        let mut tx = self.reader.begin().await.map_err(db_err)?;
        // Emails contain '@' and usernames cannot, so at most one user matches; the order
        // only makes that explicit.
        let row = sqlx::query(&format!(
            "SELECT {USER_COLS} FROM users WHERE tenant_id = ?1 AND deleted_at IS NULL \
             AND (email_lower = ?2 OR username_lower = ?2) \
             ORDER BY email_lower = ?2 DESC LIMIT 1"
        ))
        .bind(tenant.into_uuid())
        .bind(&key)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_err)?;
        let Some(row) = row else {
            return Ok(None);
        };
        let user = user_from_row(&row)?;
        let creds = load_credentials(&mut tx, tenant, user.id).await?;
        tx.commit().await.map_err(db_err)?;
        Ok(Some((user, creds)))
    }

    async fn get_credentials(&self, tenant: TenantId, user: UserId) -> domain::Result<Credentials> {
        let mut tx = self.reader.begin().await.map_err(db_err)?;
        load_live_user(&mut tx, tenant, user, None).await?;
        let creds = load_credentials(&mut tx, tenant, user).await?;
        tx.commit().await.map_err(db_err)?;
        Ok(creds)
    }

    async fn set_password(
        &self,
        tenant: TenantId,
        user: UserId,
        password: NewPassword,
        revoke: Option<RevokeScope>,
        action: &'static str,
        ctx: &AuditContext,
    ) -> domain::Result<Credentials> {
        let now = now();
        let mut tx = self.writer.begin().await.map_err(db_err)?;
        load_live_user(&mut tx, tenant, user, None).await?;
        let creds = store_password(&mut tx, tenant, user, &password, now).await?;
        let revoked = match revoke {
            Some(scope) => {
                revoke_user_sessions(&mut tx, tenant, user, scope, "password_change", now, None)
                    .await?
            }
            None => Vec::new(),
        };
        let ev = user_event(
            ctx,
            tenant,
            user,
            action,
            (
                None,
                Some(json!({
                    "must_change_password": password.must_change,
                    "revoked_sessions": revoked,
                })),
            ),
            now,
        );
        insert_audit(&mut tx, &ev).await?;
        tx.commit().await.map_err(db_err)?;
        Ok(creds)
    }

    async fn password_history(
        &self,
        tenant: TenantId,
        user: UserId,
        limit: u32,
    ) -> domain::Result<Vec<String>> {
        sqlx::query_scalar(PASSWORD_HISTORY_SQL)
            .bind(tenant.into_uuid())
            .bind(user.into_uuid())
            .bind(i64::from(limit))
            .fetch_all(&self.reader)
            .await
            .map_err(db_err)
    }

    async fn rehash_password(
        &self,
        tenant: TenantId,
        user: UserId,
        old_hash: &str,
        new_hash: &str,
    ) -> domain::Result<bool> {
        let mut tx = self.writer.begin().await.map_err(db_err)?;
        let done = sqlx::query(
            "UPDATE credentials SET password_hash = ?1 \
             WHERE tenant_id = ?2 AND user_id = ?3 AND password_hash = ?4",
        )
        .bind(new_hash)
        .bind(tenant.into_uuid())
        .bind(user.into_uuid())
        .bind(old_hash)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        if done.rows_affected() != 1 {
            return Ok(false);
        }
        // The history holds the same password: keep its newest entry equal to the current
        // hash, and foreign hashes out of it.
        sqlx::query(
            "UPDATE password_history SET password_hash = ?1 \
             WHERE tenant_id = ?2 AND user_id = ?3 AND password_hash = ?4",
        )
        .bind(new_hash)
        .bind(tenant.into_uuid())
        .bind(user.into_uuid())
        .bind(old_hash)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        Ok(true)
    }

    async fn mark_email_verified(
        &self,
        tenant: TenantId,
        user: UserId,
        email: &str,
        ctx: &AuditContext,
    ) -> domain::Result<bool> {
        let now = now();
        let mut tx = self.writer.begin().await.map_err(db_err)?;
        let u = load_live_user(&mut tx, tenant, user, None).await?;
        if u.email_normalized() != email.trim().to_lowercase() {
            return Ok(false);
        }
        let mut creds = load_credentials(&mut tx, tenant, user).await?;
        if creds.email_verified_at.is_some() {
            return Ok(true);
        }
        creds.email_verified_at = Some(now);
        write_credentials(&mut tx, &creds).await?;
        let ev = user_event(
            ctx,
            tenant,
            user,
            actions::USER_EMAIL_VERIFY,
            (None, Some(json!({ "email": u.email }))),
            now,
        );
        insert_audit(&mut tx, &ev).await?;
        tx.commit().await.map_err(db_err)?;
        Ok(true)
    }

    // --- sessions ---

    async fn create_session(&self, new: NewSession, ctx: &AuditContext) -> domain::Result<Session> {
        let now = now();
        let s = stored_session(new.session);
        let (tenant, user) = (s.tenant_id, s.user_id);
        let mut tx = self.writer.begin().await.map_err(db_err)?;
        let live = load_live_user(&mut tx, tenant, user, None).await?;
        // Re-checked inside the write transaction: a block committed between the sign-in's
        // checks and this insert must not leave a live session behind.
        if live.status != domain::users::UserStatus::Active {
            return Err(Error::refused(Code::UserNotActive));
        }
        // Likewise a suspension of the tenant: a step begun before it ends with nothing.
        if load_tenant(&mut tx, tenant).await?.status != domain::tenants::TenantStatus::Active {
            return Err(Error::refused(Code::TenantSuspended));
        }
        let amr = serde_json::to_string(&s.amr).map_err(Error::internal)?;
        sqlx::query(
            "INSERT INTO sessions (id, tenant_id, user_id, kind, device_label, ip, user_agent, \
             amr, mfa_level, created_at, last_seen_at, expires_at, revoked_at, revoke_reason, \
             cookie_hash, csrf_hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(s.id.into_uuid())
        .bind(tenant.into_uuid())
        .bind(user.into_uuid())
        .bind(s.kind.as_str())
        .bind(&s.device_label)
        .bind(&s.ip)
        .bind(&s.user_agent)
        .bind(amr)
        .bind(i64::from(s.mfa_level))
        .bind(to_micros(s.created_at))
        .bind(to_micros(s.last_seen_at))
        .bind(to_micros(s.expires_at))
        .bind(s.revoked_at.map(to_micros))
        .bind(&s.revoke_reason)
        .bind(new.cookie_hash.as_ref().map(KeyHash::as_str))
        .bind(new.csrf_hash.as_ref().map(KeyHash::as_str))
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        if let Some(refresh) = &new.refresh_hash {
            sqlx::query(
                "INSERT INTO refresh_tokens (hash, tenant_id, session_id, created_at, used_at) \
                 VALUES (?, ?, ?, ?, NULL)",
            )
            .bind(refresh.as_str())
            .bind(tenant.into_uuid())
            .bind(s.id.into_uuid())
            .bind(to_micros(s.created_at))
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        }

        // The sign-in succeeded: counters reset, an expired lock is cleared.
        let mut creds = load_credentials(&mut tx, tenant, user).await?;
        let t = creds.after_success(s.created_at);
        let counted = creds.failed_count != 0
            || creds.failed_window_start.is_some()
            || creds.locked_until.is_some();
        if counted {
            let before_lock = creds.locked_until;
            apply_lock(&mut creds, &t);
            write_credentials(&mut tx, &creds).await?;
            if t.unlocked {
                let ev = user_event(
                    ctx,
                    tenant,
                    user,
                    actions::USER_UNLOCK,
                    (Some(json!({ "locked_until": before_lock })), None),
                    now,
                );
                insert_audit(&mut tx, &ev).await?;
            }
        }
        // Signing in is not an edit of the user: neither version nor updated_at move.
        sqlx::query("UPDATE users SET last_login_at = ? WHERE tenant_id = ? AND id = ?")
            .bind(to_micros(s.created_at))
            .bind(tenant.into_uuid())
            .bind(user.into_uuid())
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        let ev = AuditEvent::record(
            ctx,
            tenant,
            actions::AUTH_LOGIN,
            EntityRef::session(s.id),
            (None, Some(json!({ "amr": s.amr, "kind": s.kind }))),
            now,
        );
        insert_audit(&mut tx, &ev).await?;
        tx.commit().await.map_err(db_err)?;
        Ok(s)
    }

    async fn get_session(&self, tenant: TenantId, id: SessionId) -> domain::Result<Session> {
        let mut conn = self.reader.acquire().await.map_err(db_err)?;
        load_session(&mut conn, tenant, id).await
    }

    async fn list_sessions(
        &self,
        tenant: TenantId,
        user: UserId,
        now: Timestamp,
    ) -> domain::Result<Vec<Session>> {
        let rows = sqlx::query(&list_sessions_sql())
            .bind(tenant.into_uuid())
            .bind(user.into_uuid())
            .bind(to_micros(now))
            .fetch_all(&self.reader)
            .await
            .map_err(db_err)?;
        rows.iter().map(session_from_row).collect()
    }

    async fn revoke_sessions(
        &self,
        tenant: TenantId,
        user: UserId,
        scope: RevokeScope,
        reason: &str,
        ctx: &AuditContext,
    ) -> domain::Result<u64> {
        let now = now();
        let mut tx = self.writer.begin().await.map_err(db_err)?;
        let ids =
            revoke_user_sessions(&mut tx, tenant, user, scope, reason, now, Some(ctx)).await?;
        if matches!(scope, RevokeScope::One(_)) && ids.is_empty() {
            return Err(Error::NotFound { entity: "session" });
        }
        tx.commit().await.map_err(db_err)?;
        Ok(ids.len() as u64)
    }

    async fn rotate_refresh_token(
        &self,
        presented: &KeyHash,
        new: &KeyHash,
        now: Timestamp,
        ctx: &AuditContext,
    ) -> domain::Result<RefreshOutcome> {
        let now = truncate(now);
        let mut tx = self.writer.begin().await.map_err(db_err)?;
        // The common case in three statements: claim the token if it is unused and its
        // session active (the conditional update decides between two presentations), touch
        // the session, store the successor. Each statement is a hop to the single writer's
        // thread, so fewer of them is more rotations per second.
        let claimed = sqlx::query(
            "UPDATE refresh_tokens SET used_at = ?1 WHERE hash = ?2 AND used_at IS NULL \
             AND EXISTS (SELECT 1 FROM sessions s WHERE s.tenant_id = refresh_tokens.tenant_id \
             AND s.id = refresh_tokens.session_id AND s.revoked_at IS NULL \
             AND s.expires_at > ?1) RETURNING tenant_id, session_id",
        )
        .bind(to_micros(now))
        .bind(presented.as_str())
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_err)?;
        if let Some(row) = claimed {
            let tenant = TenantId::from_uuid(get(&row, "tenant_id")?);
            let session_id = SessionId::from_uuid(get(&row, "session_id")?);
            let row = sqlx::query(&format!(
                "UPDATE sessions SET last_seen_at = ?, ip = COALESCE(?, ip), \
                 user_agent = COALESCE(?, user_agent) WHERE tenant_id = ? AND id = ? \
                 RETURNING {SESSION_COLS}"
            ))
            .bind(to_micros(now))
            .bind(&ctx.ip)
            .bind(&ctx.user_agent)
            .bind(tenant.into_uuid())
            .bind(session_id.into_uuid())
            .fetch_one(&mut *tx)
            .await
            .map_err(db_err)?;
            let rotated = session_from_row(&row)?;
            sqlx::query(
                "INSERT INTO refresh_tokens (hash, tenant_id, session_id, created_at, used_at) \
                 VALUES (?, ?, ?, ?, NULL)",
            )
            .bind(new.as_str())
            .bind(tenant.into_uuid())
            .bind(session_id.into_uuid())
            .bind(to_micros(now))
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
            tx.commit().await.map_err(db_err)?;
            return Ok(RefreshOutcome::Rotated(rotated));
        }

        // Unknown, used, or of an ended session: decide which.
        let row =
            sqlx::query("SELECT tenant_id, session_id, used_at FROM refresh_tokens WHERE hash = ?")
                .bind(presented.as_str())
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_err)?;
        let Some(row) = row else {
            return Ok(RefreshOutcome::Invalid);
        };
        let tenant = TenantId::from_uuid(get(&row, "tenant_id")?);
        let session_id = SessionId::from_uuid(get(&row, "session_id")?);
        let used = get::<Option<i64>>(&row, "used_at")?.is_some();
        let session = load_session(&mut tx, tenant, session_id).await?;

        if !used {
            // Unused but not claimed above: its session has ended. (With the single writer
            // the token cannot have been claimed in between; the update below stays as the
            // guard all the same.)
            if !session.is_active(now) {
                return Ok(RefreshOutcome::Invalid);
            }
            // The conditional update decides: of two presentations, one claims the token.
            let claimed = sqlx::query(
                "UPDATE refresh_tokens SET used_at = ? WHERE hash = ? AND used_at IS NULL",
            )
            .bind(to_micros(now))
            .bind(presented.as_str())
            .execute(&mut *tx)
            .await
            .map_err(db_err)?
            .rows_affected()
                == 1;
            if claimed {
                sqlx::query(
                    "INSERT INTO refresh_tokens (hash, tenant_id, session_id, created_at, \
                     used_at) VALUES (?, ?, ?, ?, NULL)",
                )
                .bind(new.as_str())
                .bind(tenant.into_uuid())
                .bind(session_id.into_uuid())
                .bind(to_micros(now))
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
                let rotated = Session {
                    last_seen_at: now,
                    ip: ctx.ip.clone().or(session.ip),
                    user_agent: ctx.user_agent.clone().or(session.user_agent),
                    ..session
                };
                sqlx::query(
                    "UPDATE sessions SET last_seen_at = ?, ip = ?, user_agent = ? \
                     WHERE tenant_id = ? AND id = ?",
                )
                .bind(to_micros(rotated.last_seen_at))
                .bind(&rotated.ip)
                .bind(&rotated.user_agent)
                .bind(tenant.into_uuid())
                .bind(session_id.into_uuid())
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
                tx.commit().await.map_err(db_err)?;
                return Ok(RefreshOutcome::Rotated(rotated));
            }
        }

        // A used token presented again: whoever holds it, the session is compromised.
        if session.revoked_at.is_some() {
            return Ok(RefreshOutcome::Reused(session));
        }
        let reason = "refresh_token_reuse";
        sqlx::query(
            "UPDATE sessions SET revoked_at = ?, revoke_reason = ? \
             WHERE tenant_id = ? AND id = ? AND revoked_at IS NULL",
        )
        .bind(to_micros(now))
        .bind(reason)
        .bind(tenant.into_uuid())
        .bind(session_id.into_uuid())
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        let ev = AuditEvent::record(
            ctx,
            tenant,
            actions::SESSION_REVOKE,
            EntityRef::session(session_id),
            (None, Some(json!({ "reason": reason }))),
            now,
        );
        insert_audit(&mut tx, &ev).await?;
        tx.commit().await.map_err(db_err)?;
        Ok(RefreshOutcome::Reused(Session {
            revoked_at: Some(now),
            revoke_reason: Some(reason.to_owned()),
            ..session
        }))
    }

    async fn find_browser_session(
        &self,
        cookie: &KeyHash,
        now: Timestamp,
    ) -> domain::Result<Option<BrowserSession>> {
        let row = sqlx::query(&find_browser_session_sql())
            .bind(cookie.as_str())
            .bind(to_micros(now))
            .fetch_optional(&self.reader)
            .await
            .map_err(db_err)?;
        let Some(row) = row else {
            return Ok(None);
        };
        // A browser session without a CSRF secret cannot accept a state-changing request.
        let Some(csrf) = get::<Option<String>>(&row, "csrf_hash")? else {
            return Ok(None);
        };
        Ok(Some(BrowserSession {
            session: session_from_row(&row)?,
            csrf_hash: stored_hash(csrf)?,
        }))
    }

    async fn touch_session(
        &self,
        tenant: TenantId,
        id: SessionId,
        now: Timestamp,
    ) -> domain::Result<()> {
        let done =
            sqlx::query("UPDATE sessions SET last_seen_at = ? WHERE tenant_id = ? AND id = ?")
                .bind(to_micros(now))
                .bind(tenant.into_uuid())
                .bind(id.into_uuid())
                .execute(&self.writer)
                .await
                .map_err(db_err)?;
        if done.rows_affected() == 1 {
            Ok(())
        } else {
            Err(Error::NotFound { entity: "session" })
        }
    }

    // --- single-use tokens ---

    async fn create_one_time_token(
        &self,
        token: &OneTimeToken,
        events: &[AuditEvent],
    ) -> domain::Result<()> {
        let tenant = token.tenant_id;
        let mut tx = self.writer.begin().await.map_err(db_err)?;
        load_tenant(&mut tx, tenant).await?;
        if let Some(user) = token.user_id {
            load_live_user(&mut tx, tenant, user, None).await?;
            sqlx::query(INVALIDATE_EARLIER_TOKENS_SQL)
                .bind(to_micros(token.created_at))
                .bind(tenant.into_uuid())
                .bind(user.into_uuid())
                .bind(token.purpose.as_str())
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
        }
        sqlx::query(
            "INSERT INTO one_time_tokens (hash, purpose, tenant_id, user_id, email, data, \
             created_at, expires_at, used_at, attempts) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(token.hash.as_str())
        .bind(token.purpose.as_str())
        .bind(tenant.into_uuid())
        .bind(token.user_id.map(UserId::into_uuid))
        .bind(&token.email)
        .bind(token.data.to_string())
        .bind(to_micros(token.created_at))
        .bind(to_micros(token.expires_at))
        .bind(token.used_at.map(to_micros))
        .bind(i64::from(token.attempts))
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        for ev in events {
            insert_audit(&mut tx, ev).await?;
        }
        tx.commit().await.map_err(db_err)?;
        Ok(())
    }

    async fn consume_one_time_token(
        &self,
        purpose: TokenPurpose,
        hash: &KeyHash,
        now: Timestamp,
    ) -> domain::Result<Option<OneTimeToken>> {
        // One statement: the check and the consumption cannot be separated.
        let row = sqlx::query(&format!(
            "UPDATE one_time_tokens SET used_at = ?1 WHERE hash = ?2 AND purpose = ?3 \
             AND used_at IS NULL AND expires_at > ?1 RETURNING {OTT_COLS}"
        ))
        .bind(to_micros(now))
        .bind(hash.as_str())
        .bind(purpose.as_str())
        .fetch_optional(&self.writer)
        .await
        .map_err(db_err)?;
        row.map(|r| ott_from_row(&r, hash)).transpose()
    }

    async fn peek_one_time_token(
        &self,
        purpose: TokenPurpose,
        hash: &KeyHash,
        now: Timestamp,
    ) -> domain::Result<Option<OneTimeToken>> {
        let row = sqlx::query(&format!(
            "SELECT {OTT_COLS} FROM one_time_tokens WHERE hash = ? AND purpose = ? \
             AND used_at IS NULL AND expires_at > ?"
        ))
        .bind(hash.as_str())
        .bind(purpose.as_str())
        .bind(to_micros(now))
        .fetch_optional(&self.reader)
        .await
        .map_err(db_err)?;
        row.map(|r| ott_from_row(&r, hash)).transpose()
    }

    async fn reserve_token_attempt(
        &self,
        purpose: TokenPurpose,
        hash: &KeyHash,
        max_attempts: u32,
        now: Timestamp,
    ) -> domain::Result<bool> {
        // One statement: the check and the count cannot be separated.
        let done = sqlx::query(
            "UPDATE one_time_tokens SET attempts = attempts + 1 \
             WHERE hash = ?1 AND purpose = ?2 AND used_at IS NULL AND expires_at > ?3 \
             AND attempts < ?4",
        )
        .bind(hash.as_str())
        .bind(purpose.as_str())
        .bind(to_micros(now))
        .bind(i64::from(max_attempts))
        .execute(&self.writer)
        .await
        .map_err(db_err)?;
        Ok(done.rows_affected() == 1)
    }

    // --- TOTP and recovery codes ---

    async fn get_totp(
        &self,
        tenant: TenantId,
        user: UserId,
    ) -> domain::Result<Option<TotpCredential>> {
        let row = sqlx::query(&format!(
            "SELECT {TOTP_COLS} FROM totp_credentials WHERE tenant_id = ? AND user_id = ?"
        ))
        .bind(tenant.into_uuid())
        .bind(user.into_uuid())
        .fetch_optional(&self.reader)
        .await
        .map_err(db_err)?;
        row.as_ref().map(totp_from_row).transpose()
    }

    async fn put_pending_totp(
        &self,
        tenant: TenantId,
        user: UserId,
        secret_ciphertext: Vec<u8>,
        ctx: &AuditContext,
    ) -> domain::Result<()> {
        let now = now();
        let mut tx = self.writer.begin().await.map_err(db_err)?;
        load_live_user(&mut tx, tenant, user, None).await?;
        if confirmed_totp_exists(&mut tx, tenant, user).await? {
            return Err(Error::refused(Code::TotpAlreadyEnrolled));
        }
        sqlx::query(
            "INSERT INTO totp_credentials (tenant_id, user_id, secret_ciphertext, \
             confirmed_at, last_used_step, created_at) VALUES (?, ?, ?, NULL, 0, ?) \
             ON CONFLICT (tenant_id, user_id) DO UPDATE SET \
             secret_ciphertext = excluded.secret_ciphertext, confirmed_at = NULL, \
             last_used_step = 0, created_at = excluded.created_at",
        )
        .bind(tenant.into_uuid())
        .bind(user.into_uuid())
        .bind(secret_ciphertext)
        .bind(to_micros(now))
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        let ev = user_event(
            ctx,
            tenant,
            user,
            actions::MFA_TOTP_ENROL,
            (None, None),
            now,
        );
        insert_audit(&mut tx, &ev).await?;
        tx.commit().await.map_err(db_err)?;
        Ok(())
    }

    async fn confirm_totp(
        &self,
        tenant: TenantId,
        user: UserId,
        step: i64,
        recovery_hashes: &[KeyHash],
        ctx: &AuditContext,
    ) -> domain::Result<()> {
        let now = now();
        let mut tx = self.writer.begin().await.map_err(db_err)?;
        let done = sqlx::query(
            "UPDATE totp_credentials SET confirmed_at = ?, last_used_step = ? \
             WHERE tenant_id = ? AND user_id = ? AND confirmed_at IS NULL",
        )
        .bind(to_micros(now))
        .bind(step)
        .bind(tenant.into_uuid())
        .bind(user.into_uuid())
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        if done.rows_affected() != 1 {
            return Err(Error::refused(Code::TotpNotPending));
        }
        replace_codes(&mut tx, tenant, user, recovery_hashes).await?;
        let ev = user_event(
            ctx,
            tenant,
            user,
            actions::MFA_TOTP_CONFIRM,
            (
                None,
                Some(json!({ "recovery_codes": recovery_hashes.len() })),
            ),
            now,
        );
        insert_audit(&mut tx, &ev).await?;
        tx.commit().await.map_err(db_err)?;
        Ok(())
    }

    async fn use_totp_step(
        &self,
        tenant: TenantId,
        user: UserId,
        step: i64,
    ) -> domain::Result<bool> {
        let done = sqlx::query(
            "UPDATE totp_credentials SET last_used_step = ?1 WHERE tenant_id = ?2 \
             AND user_id = ?3 AND confirmed_at IS NOT NULL AND last_used_step < ?1",
        )
        .bind(step)
        .bind(tenant.into_uuid())
        .bind(user.into_uuid())
        .execute(&self.writer)
        .await
        .map_err(db_err)?;
        Ok(done.rows_affected() == 1)
    }

    async fn use_recovery_code(
        &self,
        tenant: TenantId,
        user: UserId,
        hash: &KeyHash,
        ctx: &AuditContext,
    ) -> domain::Result<bool> {
        let now = now();
        let mut tx = self.writer.begin().await.map_err(db_err)?;
        let done = sqlx::query(
            "UPDATE recovery_codes SET used_at = ? WHERE tenant_id = ? AND user_id = ? \
             AND code_hash = ? AND used_at IS NULL",
        )
        .bind(to_micros(now))
        .bind(tenant.into_uuid())
        .bind(user.into_uuid())
        .bind(hash.as_str())
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        if done.rows_affected() != 1 {
            return Ok(false);
        }
        let left: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM recovery_codes WHERE tenant_id = ? AND user_id = ? \
             AND used_at IS NULL",
        )
        .bind(tenant.into_uuid())
        .bind(user.into_uuid())
        .fetch_one(&mut *tx)
        .await
        .map_err(db_err)?;
        let ev = user_event(
            ctx,
            tenant,
            user,
            actions::MFA_RECOVERY_CODE_USE,
            (None, Some(json!({ "remaining": left }))),
            now,
        );
        insert_audit(&mut tx, &ev).await?;
        tx.commit().await.map_err(db_err)?;
        Ok(true)
    }

    async fn replace_recovery_codes(
        &self,
        tenant: TenantId,
        user: UserId,
        hashes: &[KeyHash],
        ctx: &AuditContext,
    ) -> domain::Result<()> {
        let now = now();
        let mut tx = self.writer.begin().await.map_err(db_err)?;
        if !confirmed_totp_exists(&mut tx, tenant, user).await? {
            return Err(Error::refused(Code::TotpNotEnrolled));
        }
        replace_codes(&mut tx, tenant, user, hashes).await?;
        let ev = user_event(
            ctx,
            tenant,
            user,
            actions::MFA_RECOVERY_CODES_REGENERATE,
            (None, Some(json!({ "recovery_codes": hashes.len() }))),
            now,
        );
        insert_audit(&mut tx, &ev).await?;
        tx.commit().await.map_err(db_err)?;
        Ok(())
    }

    async fn count_recovery_codes(&self, tenant: TenantId, user: UserId) -> domain::Result<u32> {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM recovery_codes WHERE tenant_id = ? AND user_id = ? \
             AND used_at IS NULL",
        )
        .bind(tenant.into_uuid())
        .bind(user.into_uuid())
        .fetch_one(&self.reader)
        .await
        .map_err(db_err)?;
        count_u32(n)
    }

    async fn delete_totp(
        &self,
        tenant: TenantId,
        user: UserId,
        ctx: &AuditContext,
    ) -> domain::Result<()> {
        let now = now();
        let mut tx = self.writer.begin().await.map_err(db_err)?;
        let row = sqlx::query(
            "DELETE FROM totp_credentials WHERE tenant_id = ? AND user_id = ? \
             RETURNING confirmed_at",
        )
        .bind(tenant.into_uuid())
        .bind(user.into_uuid())
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_err)?
        .ok_or(Error::NotFound { entity: "totp" })?;
        let confirmed = get::<Option<i64>>(&row, "confirmed_at")?.is_some();
        sqlx::query("DELETE FROM recovery_codes WHERE tenant_id = ? AND user_id = ?")
            .bind(tenant.into_uuid())
            .bind(user.into_uuid())
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        let ev = user_event(
            ctx,
            tenant,
            user,
            actions::MFA_TOTP_REMOVE,
            (Some(json!({ "confirmed": confirmed })), None),
            now,
        );
        insert_audit(&mut tx, &ev).await?;
        tx.commit().await.map_err(db_err)?;
        Ok(())
    }

    // --- signing keys (platform-wide) ---

    async fn list_signing_keys(&self) -> domain::Result<Vec<SigningKeyRecord>> {
        let rows = sqlx::query(&format!(
            "SELECT {SIGNING_KEY_COLS} FROM signing_keys ORDER BY created_at DESC, kid DESC"
        ))
        .fetch_all(&self.reader)
        .await
        .map_err(db_err)?;
        rows.iter().map(signing_key_from_row).collect()
    }

    async fn add_signing_key(
        &self,
        key: &SigningKeyRecord,
        events: &[AuditEvent],
    ) -> domain::Result<()> {
        let mut tx = self.writer.begin().await.map_err(db_err)?;
        sqlx::query("UPDATE signing_keys SET retired_at = ? WHERE retired_at IS NULL")
            .bind(to_micros(key.created_at))
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        sqlx::query(&format!(
            "INSERT INTO signing_keys ({SIGNING_KEY_COLS}) VALUES (?, ?, ?, ?, ?, ?)"
        ))
        .bind(&key.kid)
        .bind(&key.algorithm)
        .bind(&key.private_key_ciphertext)
        .bind(key.public_jwk.to_string())
        .bind(to_micros(key.created_at))
        .bind(key.retired_at.map(to_micros))
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        for ev in events {
            insert_audit(&mut tx, ev).await?;
        }
        tx.commit().await.map_err(db_err)?;
        Ok(())
    }

    async fn prune_auth_records(&self, before: Timestamp) -> domain::Result<u64> {
        let cut = to_micros(before);
        let mut tx = self.writer.begin().await.map_err(db_err)?;
        let mut deleted = 0;
        for sql in [
            "DELETE FROM refresh_tokens WHERE session_id IN (SELECT id FROM sessions \
             WHERE expires_at < ?1 OR revoked_at < ?1)",
            "DELETE FROM sessions WHERE expires_at < ?1 OR revoked_at < ?1",
            "DELETE FROM one_time_tokens WHERE expires_at < ?1",
        ] {
            deleted += sqlx::query(sql)
                .bind(cut)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?
                .rows_affected();
        }
        tx.commit().await.map_err(db_err)?;
        Ok(deleted)
    }

    // --- audit ---

    async fn append_audit_events(&self, events: &[AuditEvent]) -> domain::Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        let mut tx = self.writer.begin().await.map_err(db_err)?;
        for ev in events {
            insert_audit(&mut tx, ev).await?;
        }
        tx.commit().await.map_err(db_err)?;
        Ok(())
    }
}

// --- transaction primitives (see `crate::tx`) ---

pub(crate) async fn set_email_verified(
    conn: &mut SqliteConnection,
    tenant: TenantId,
    user: UserId,
    at: Option<Timestamp>,
) -> Result<()> {
    let mut c = load_credentials(conn, tenant, user).await?;
    c.email_verified_at = at;
    write_credentials(conn, &c).await
}

pub(crate) async fn void_tokens(
    conn: &mut SqliteConnection,
    tenant: TenantId,
    user: UserId,
    purposes: &[TokenPurpose],
    at: Timestamp,
) -> Result<u64> {
    let mut voided = 0;
    for p in purposes {
        voided += sqlx::query(INVALIDATE_EARLIER_TOKENS_SQL)
            .bind(to_micros(at))
            .bind(tenant.into_uuid())
            .bind(user.into_uuid())
            .bind(p.as_str())
            .execute(&mut *conn)
            .await
            .map_err(db_err)?
            .rows_affected();
    }
    Ok(voided)
}

pub(crate) async fn load_settings(
    conn: &mut SqliteConnection,
    tenant: TenantId,
) -> Result<AuthSettings> {
    load_tenant(conn, tenant).await?;
    let text =
        sqlx::query_scalar::<_, String>("SELECT settings FROM auth_settings WHERE tenant_id = ?")
            .bind(tenant.into_uuid())
            .fetch_optional(&mut *conn)
            .await
            .map_err(db_err)?;
    match text {
        Some(text) => {
            serde_json::from_str(&text).map_err(|e| corrupt(format_args!("auth settings: {e}")))
        }
        None => Ok(AuthSettings::default()),
    }
}

pub(crate) async fn put_settings(
    conn: &mut SqliteConnection,
    tenant: TenantId,
    settings: &AuthSettings,
) -> Result<()> {
    let text = serde_json::to_string(settings).map_err(Error::internal)?;
    sqlx::query(
        "INSERT INTO auth_settings (tenant_id, settings, updated_at) VALUES (?, ?, ?) \
         ON CONFLICT (tenant_id) DO UPDATE SET settings = excluded.settings, \
         updated_at = excluded.updated_at",
    )
    .bind(tenant.into_uuid())
    .bind(text)
    .bind(to_micros(now()))
    .execute(&mut *conn)
    .await
    .map_err(db_err)?;
    Ok(())
}
