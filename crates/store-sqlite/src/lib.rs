//! The SQLite implementation of [`domain::Store`] (its authentication part,
//! [`domain::AuthStore`], lives in `auth`, its authorization part, [`domain::AuthzStore`],
//! in `authz`).
//!
//! One database file in WAL mode, reached through two pools: a writer pool of exactly one
//! connection that every mutation goes through (so a transaction that reads and then writes
//! never meets another writer and never fails with `SQLITE_BUSY` on the lock upgrade), and
//! a reader pool of a few `query_only` connections for everything else, which WAL lets read
//! concurrently with the writer.
//!
//! Every mutation runs in one transaction on the writer together with its audit event, and
//! enforces the invariants listed on [`domain::Store`], [`domain::AuthStore`] and
//! [`domain::AuthzStore`] inside that transaction.

mod auth;
mod authz;
mod convert;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use domain::api_keys::{ApiKey, ApiKeyAuth, KeyHash, NewApiKey};
use domain::audit::{actions, AuditContext, AuditEvent, AuditQuery, EntityRef};
use domain::ids::{ApiKeyId, AuditEventId, TenantId, UserId};
use domain::page::{encode_cursor, Page};
use domain::store::PoolStats;
use domain::tenants::{NewTenant, Tenant, TenantListQuery, TenantPatch, TenantSlug, TenantStatus};
use domain::time::{now, to_micros};
use domain::users::{
    DeletedFilter, NewUser, SortValue, User, UserCursor, UserListQuery, UserPatch, UserSortField,
};
use domain::values::SearchQuery;
use domain::{AuthStore, Error, Store};
use serde_json::json;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};
use sqlx::{QueryBuilder, Row, Sqlite};

use crate::convert::{
    api_key_from_row, audit_from_row, corrupt, db_err, object_text, tenant_from_row,
    unknown_manager, user_from_row, write_err, Result, API_KEY_COLS, AUDIT_COLS, TENANT_COLS,
    USER_COLS,
};

/// Connections of the reader pool.
const READERS: u32 = 4;
/// How long a request waits for a pooled connection before the store reports itself
/// unavailable.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);
/// Columns of a user row as written (see `USER_INSERT_COLS`).
const USER_INSERT_COLUMNS: usize = 24;
/// Rows per multi-row INSERT when seeding: as many as SQLite's limit of 32,766 bound
/// parameters per statement allows.
const SEED_ROWS_PER_STATEMENT: usize = 32_766 / USER_INSERT_COLUMNS;
const _: () = assert!(SEED_ROWS_PER_STATEMENT * USER_INSERT_COLUMNS <= 32_766);

/// The SQLite store. Cheap to clone: the pools are shared.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
}

impl SqliteStore {
    /// Chooses how to find a search page from a bounded count of the full-text matches
    /// (over all tenants: that is what collecting them costs).
    async fn search_plan(&self, q: &SearchQuery) -> domain::Result<SearchPlan> {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM (SELECT rowid FROM users_fts WHERE users_fts MATCH ? LIMIT ?)",
        )
        .bind(fts_match(q.terms()))
        .bind(SEARCH_COLLECT_MAX + 1)
        .fetch_one(&self.reader)
        .await
        .map_err(db_err)?;
        Ok(if n > SEARCH_COLLECT_MAX {
            SearchPlan::Walk
        } else {
            SearchPlan::Collect
        })
    }
}

impl SqliteStore {
    /// Opens (creating if missing) the database file at `path`. Call [`Store::migrate`]
    /// before use.
    pub async fn open(path: &Path) -> domain::Result<SqliteStore> {
        let base = SqliteConnectOptions::new()
            .filename(path)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(5))
            .pragma("temp_store", "MEMORY");

        let writer_opts = base
            .clone()
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            // 64 MiB of page cache: the writer touches every index of a large tenant.
            .pragma("cache_size", "-65536");
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            // An embedded file does not drop connections; a ping per use would be one more
            // hop to the connection's worker thread while holding the only writer.
            .test_before_acquire(false)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(writer_opts)
            .await
            .map_err(db_err)?;

        // The writer has created the file and switched it to WAL (a persistent setting), so
        // the readers need neither.
        let reader_opts = base
            .synchronous(SqliteSynchronous::Normal)
            .pragma("cache_size", "-16384")
            .pragma("query_only", "ON");
        let reader = SqlitePoolOptions::new()
            .max_connections(READERS)
            .min_connections(0)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .test_before_acquire(false)
            .connect_with(reader_opts)
            .await
            .map_err(db_err)?;

        Ok(SqliteStore { writer, reader })
    }

    /// Closes both pools, waiting for connections in use to be returned.
    pub async fn close(&self) {
        self.reader.close().await;
        self.writer.close().await;
    }
}

// --- shared steps of the mutations, run on the writer's transaction ---

async fn insert_audit(conn: &mut SqliteConnection, ev: &AuditEvent) -> Result<()> {
    sqlx::query(
        "INSERT INTO audit_events (id, tenant_id, occurred_at, actor_type, actor_id, action, \
         entity_type, entity_id, \"before\", \"after\", ip, user_agent, request_id) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(ev.id.into_uuid())
    .bind(ev.tenant_id.into_uuid())
    .bind(to_micros(ev.occurred_at))
    .bind(ev.actor_type.as_str())
    .bind(ev.actor_id)
    .bind(&ev.action)
    .bind(&ev.entity_type)
    .bind(ev.entity_id)
    .bind(ev.before.as_ref().map(|v| v.to_string()))
    .bind(ev.after.as_ref().map(|v| v.to_string()))
    .bind(&ev.ip)
    .bind(&ev.user_agent)
    .bind(&ev.request_id)
    .execute(&mut *conn)
    .await
    .map_err(db_err)?;
    Ok(())
}

fn tenant_json(t: &Tenant) -> serde_json::Value {
    serde_json::to_value(t).unwrap_or(serde_json::Value::Null)
}

fn api_key_json(k: &ApiKey) -> serde_json::Value {
    serde_json::to_value(k).unwrap_or(serde_json::Value::Null)
}

/// The tenant and its count of non-deleted users.
async fn load_tenant(conn: &mut SqliteConnection, id: TenantId) -> Result<(Tenant, i64)> {
    let row = sqlx::query(&format!(
        "SELECT {TENANT_COLS}, active_users FROM tenants WHERE id = ?"
    ))
    .bind(id.into_uuid())
    .fetch_optional(&mut *conn)
    .await
    .map_err(db_err)?
    .ok_or(Error::NotFound { entity: "tenant" })?;
    let active: i64 = row.try_get("active_users").map_err(db_err)?;
    Ok((tenant_from_row(&row)?, active))
}

/// Refuses one more non-deleted user when the tenant's quota is reached.
fn check_quota(tenant: &Tenant, active: i64) -> Result<()> {
    match tenant.max_users {
        Some(max) if active >= max => Err(Error::refused(domain::Code::QuotaExceeded)
            .with_reason(serde_json::json!({"max_users": max, "users": active}))),
        _ => Ok(()),
    }
}

async fn load_user(conn: &mut SqliteConnection, tenant: TenantId, id: UserId) -> Result<User> {
    let row = sqlx::query(&format!(
        "SELECT {USER_COLS} FROM users WHERE tenant_id = ? AND id = ?"
    ))
    .bind(tenant.into_uuid())
    .bind(id.into_uuid())
    .fetch_optional(&mut *conn)
    .await
    .map_err(db_err)?
    .ok_or(Error::NotFound { entity: "user" })?;
    user_from_row(&row)
}

/// A user that is not deleted (a deleted one is `NotFound`), checking `If-Match`.
async fn load_live_user(
    conn: &mut SqliteConnection,
    tenant: TenantId,
    id: UserId,
    expected_version: Option<i64>,
) -> Result<User> {
    let user = load_user(conn, tenant, id).await?;
    if user.is_deleted() {
        return Err(Error::NotFound { entity: "user" });
    }
    if let Some(expected) = expected_version {
        if expected != user.version {
            return Err(Error::PreconditionFailed {
                entity: "user",
                expected,
                current: user.version,
            });
        }
    }
    Ok(user)
}

/// A manager must be a non-deleted user of the same tenant.
async fn check_manager_exists(
    conn: &mut SqliteConnection,
    tenant: TenantId,
    manager: UserId,
) -> Result<()> {
    let live =
        sqlx::query("SELECT 1 FROM users WHERE tenant_id = ? AND id = ? AND deleted_at IS NULL")
            .bind(tenant.into_uuid())
            .bind(manager.into_uuid())
            .fetch_optional(&mut *conn)
            .await
            .map_err(db_err)?;
    match live {
        Some(_) => Ok(()),
        None => Err(unknown_manager()),
    }
}

/// Whether `user` is `manager` or one of the managers above it.
async fn manager_chain_reaches(
    conn: &mut SqliteConnection,
    tenant: TenantId,
    manager: UserId,
    user: UserId,
) -> Result<bool> {
    // UNION (not UNION ALL) stops the walk should the stored chain already hold a cycle.
    let row = sqlx::query(
        "WITH RECURSIVE chain(id) AS ( \
             SELECT ?2 \
             UNION \
             SELECT u.manager_id FROM users u JOIN chain c ON u.tenant_id = ?1 AND u.id = c.id \
             WHERE u.manager_id IS NOT NULL \
         ) \
         SELECT EXISTS (SELECT 1 FROM chain WHERE id = ?3) AS reaches",
    )
    .bind(tenant.into_uuid())
    .bind(manager.into_uuid())
    .bind(user.into_uuid())
    .fetch_one(&mut *conn)
    .await
    .map_err(db_err)?;
    row.try_get::<bool, _>("reaches").map_err(db_err)
}

/// The columns a user row is written with.
const USER_INSERT_COLS: &str = "id, tenant_id, email, email_lower, username, \
     username_lower, full_name, name_sort, phone, department, job_title, employee_id, \
     manager_id, cost_center, clearance_level, language, avatar_url, custom_attributes, \
     status, last_login_at, created_at, updated_at, deleted_at, version";

/// Inserts `users` into `tenant` (whatever their `tenant_id` says) with one multi-row
/// statement, into `table`: `users`, or the staging table of `seed_users`.
async fn insert_users(
    conn: &mut SqliteConnection,
    table: &str,
    tenant: TenantId,
    users: &[User],
) -> Result<u64> {
    let mut qb: QueryBuilder<'_, Sqlite> =
        QueryBuilder::new(format!("INSERT INTO {table} ({USER_INSERT_COLS}) "));
    qb.push_values(users, |mut b, u| {
        b.push_bind(u.id.into_uuid())
            .push_bind(tenant.into_uuid())
            .push_bind(u.email.as_str())
            .push_bind(u.email_normalized())
            .push_bind(u.username.as_deref())
            .push_bind(u.username_normalized())
            .push_bind(u.full_name.as_str())
            .push_bind(u.name_sort_key())
            .push_bind(u.phone.as_deref())
            .push_bind(u.department.as_deref())
            .push_bind(u.job_title.as_deref())
            .push_bind(u.employee_id.as_deref())
            .push_bind(u.manager_id.map(UserId::into_uuid))
            .push_bind(u.cost_center.as_deref())
            .push_bind(u.clearance_level.map(i64::from))
            .push_bind(u.language.as_deref())
            .push_bind(u.avatar_url.as_deref())
            .push_bind(object_text(&u.custom_attributes))
            .push_bind(u.status.as_str())
            .push_bind(u.last_login_at.map(to_micros))
            .push_bind(to_micros(u.created_at))
            .push_bind(to_micros(u.updated_at))
            .push_bind(u.deleted_at.map(to_micros))
            .push_bind(u.version);
    });
    let done = qb.build().execute(&mut *conn).await.map_err(write_err)?;
    Ok(done.rows_affected())
}

/// Writes every mutable column of `u` (found by tenant and id).
async fn write_user(conn: &mut SqliteConnection, u: &User) -> Result<()> {
    let done = sqlx::query(
        "UPDATE users SET email = ?, email_lower = ?, username = ?, username_lower = ?, \
         full_name = ?, name_sort = ?, phone = ?, department = ?, job_title = ?, \
         employee_id = ?, manager_id = ?, cost_center = ?, clearance_level = ?, language = ?, \
         avatar_url = ?, custom_attributes = ?, status = ?, last_login_at = ?, \
         updated_at = ?, deleted_at = ?, version = ? \
         WHERE tenant_id = ? AND id = ?",
    )
    .bind(u.email.as_str())
    .bind(u.email_normalized())
    .bind(u.username.as_deref())
    .bind(u.username_normalized())
    .bind(u.full_name.as_str())
    .bind(u.name_sort_key())
    .bind(u.phone.as_deref())
    .bind(u.department.as_deref())
    .bind(u.job_title.as_deref())
    .bind(u.employee_id.as_deref())
    .bind(u.manager_id.map(UserId::into_uuid))
    .bind(u.cost_center.as_deref())
    .bind(u.clearance_level.map(i64::from))
    .bind(u.language.as_deref())
    .bind(u.avatar_url.as_deref())
    .bind(object_text(&u.custom_attributes))
    .bind(u.status.as_str())
    .bind(u.last_login_at.map(to_micros))
    .bind(to_micros(u.updated_at))
    .bind(u.deleted_at.map(to_micros))
    .bind(u.version)
    .bind(u.tenant_id.into_uuid())
    .bind(u.id.into_uuid())
    .execute(&mut *conn)
    .await
    .map_err(write_err)?;
    if done.rows_affected() == 1 {
        Ok(())
    } else {
        Err(Error::NotFound { entity: "user" })
    }
}

/// The FTS5 query of a search: every term as a prefix, all of them required. The terms are
/// letters and digits only (see `SearchQuery`), so quoting them is enough.
fn fts_match(terms: &[String]) -> String {
    terms
        .iter()
        .map(|t| format!("\"{t}\"*"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// How a search page is found. SQLite's planner cannot estimate full-text matches, so the
/// store decides from a bounded count of them (measured at 1M users: driving from the
/// full-text index costs 0.1–13 ms when at most a few thousand users match and 130+ ms
/// when tens of thousands do, where walking the sort index finds a page in ~8 ms).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SearchPlan {
    /// Walk the sort order's index, testing each user against the matches.
    Walk,
    /// Collect every match from the full-text index, then sort them.
    Collect,
}

/// Above this many full-text matches a search walks the sort order instead of collecting.
const SEARCH_COLLECT_MAX: i64 = 5_000;

/// The sort order's index, named so that a walk cannot be planned otherwise.
fn sort_index(field: UserSortField) -> &'static str {
    match field {
        UserSortField::Name => "users_by_name",
        UserSortField::Email => "users_by_email",
        UserSortField::Created => "users_by_created",
        UserSortField::LastLogin => "users_by_last_login",
    }
}

/// The column `sort=field` orders by; each has an index `(tenant_id, column, id)`
/// (`last_login_key` is the generated column `COALESCE(last_login_at, 0)`).
fn sort_column(field: UserSortField) -> &'static str {
    match field {
        UserSortField::Name => "name_sort",
        UserSortField::Email => "email_lower",
        UserSortField::Created => "created_at",
        UserSortField::LastLogin => "last_login_key",
    }
}

fn invalid_cursor() -> Error {
    Error::field(
        "cursor",
        "invalid_cursor",
        "is not a cursor returned by this endpoint for this sort order",
    )
}

/// The SQL of a user list: filters, sort and keyset, all bound.
/// `prefix` is empty, or `EXPLAIN QUERY PLAN ` in tests.
fn user_list_sql(
    prefix: &str,
    tenant: TenantId,
    q: &UserListQuery,
    search: Option<SearchPlan>,
) -> Result<QueryBuilder<'static, Sqlite>> {
    // Deleted users are usually few: find them through their own partial index (and sort
    // them) rather than walk the whole tenant in sort order. A search uses the plan chosen
    // for it.
    let index = match search {
        Some(SearchPlan::Collect) => " NOT INDEXED".to_owned(),
        Some(SearchPlan::Walk) => format!(" INDEXED BY {}", sort_index(q.sort.field)),
        None if q.deleted == DeletedFilter::Only => " INDEXED BY users_deleted".to_owned(),
        None => String::new(),
    };
    let mut qb: QueryBuilder<'static, Sqlite> = QueryBuilder::new(format!(
        "{prefix}SELECT {USER_COLS} FROM users{index} WHERE tenant_id = "
    ));
    qb.push_bind(tenant.into_uuid());
    match q.deleted {
        DeletedFilter::Exclude => {
            qb.push(" AND deleted_at IS NULL");
        }
        DeletedFilter::Only => {
            qb.push(" AND deleted_at IS NOT NULL");
        }
        DeletedFilter::Include => {}
    }
    if let Some(id) = q.id {
        qb.push(" AND id = ").push_bind(id.into_uuid());
    }
    if let Some(s) = q.status {
        qb.push(" AND status = ").push_bind(s.as_str());
    }
    if let Some(d) = &q.department {
        qb.push(" AND department = ").push_bind(d.clone());
    }
    if let Some(m) = q.manager_id {
        qb.push(" AND manager_id = ").push_bind(m.into_uuid());
    }
    if let Some(t) = q.created_after {
        qb.push(" AND created_at >= ").push_bind(to_micros(t));
    }
    if let Some(t) = q.created_before {
        qb.push(" AND created_at < ").push_bind(to_micros(t));
    }
    if let Some(search) = &q.q {
        qb.push(" AND seq IN (SELECT rowid FROM users_fts WHERE users_fts MATCH ")
            .push_bind(fts_match(search.terms()))
            .push(")");
    }

    let key = sort_column(q.sort.field);
    let (cmp, dir) = if q.sort.descending {
        ("<", "DESC")
    } else {
        (">", "ASC")
    };
    if let Some(c) = &q.after {
        if c.sort != q.sort {
            return Err(invalid_cursor());
        }
        qb.push(format_args!(" AND ({key}, id) {cmp} ("));
        match (&c.value, q.sort.field) {
            (SortValue::Text(s), UserSortField::Name | UserSortField::Email) => {
                qb.push_bind(s.clone());
            }
            (SortValue::Micros(us), UserSortField::Created | UserSortField::LastLogin) => {
                qb.push_bind(*us);
            }
            _ => return Err(invalid_cursor()),
        }
        qb.push(", ").push_bind(c.id.into_uuid()).push(")");
    }
    qb.push(format_args!(" ORDER BY {key} {dir}, id {dir} LIMIT "))
        .push_bind(i64::from(q.limit.get()) + 1);
    Ok(qb)
}

/// Cuts the `limit + 1` rows fetched into a page and whether more follow.
fn split_page<T>(mut items: Vec<T>, limit: u32) -> (Vec<T>, bool) {
    let limit = limit as usize;
    let more = items.len() > limit;
    items.truncate(limit);
    (items, more)
}

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn migrate(&self) -> domain::Result<()> {
        sqlx::migrate!("./migrations")
            .run(&self.writer)
            .await
            .map_err(|e| match e {
                sqlx::migrate::MigrateError::Execute(e) => db_err(e),
                other => Error::internal(other),
            })?;
        // Tenants created before authorization existed get their default roles.
        let mut tx = self.writer.begin().await.map_err(db_err)?;
        authz::backfill_default_roles(&mut tx).await?;
        tx.commit().await.map_err(db_err)
    }

    async fn ping(&self) -> domain::Result<()> {
        sqlx::query("SELECT 1")
            .execute(&self.reader)
            .await
            .map_err(db_err)?;
        Ok(())
    }

    fn pool_stats(&self) -> PoolStats {
        let (w, r) = (&self.writer, &self.reader);
        let size = w.size().saturating_add(r.size());
        // sqlx derives the idle count from counters that can be briefly inconsistent while
        // connections move (seen as a near-usize::MAX value): saturate and cap at the size.
        let idle = w.num_idle().saturating_add(r.num_idle());
        PoolStats {
            size,
            idle: u32::try_from(idle).unwrap_or(u32::MAX).min(size),
            max: w.options().get_max_connections() + r.options().get_max_connections(),
        }
    }

    // --- tenants ---

    async fn create_tenant(&self, new: NewTenant, ctx: &AuditContext) -> domain::Result<Tenant> {
        let now = now();
        let t = new.into_tenant(now);
        let mut tx = self.writer.begin().await.map_err(db_err)?;
        sqlx::query(
            "INSERT INTO tenants (id, slug, display_name, status, plan, max_users, \
             trial_ends_at, settings, created_at, updated_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(t.id.into_uuid())
        .bind(&t.slug)
        .bind(&t.display_name)
        .bind(t.status.as_str())
        .bind(t.plan.as_str())
        .bind(t.max_users)
        .bind(t.trial_ends_at.map(to_micros))
        .bind(object_text(&t.settings))
        .bind(to_micros(t.created_at))
        .bind(to_micros(t.updated_at))
        .execute(&mut *tx)
        .await
        .map_err(write_err)?;
        let ev = AuditEvent::record(
            ctx,
            t.id,
            actions::TENANT_CREATE,
            EntityRef::tenant(t.id),
            (None, Some(tenant_json(&t))),
            now,
        );
        insert_audit(&mut tx, &ev).await?;
        // Part of the tenant's creation (its one event), not changes of their own.
        authz::seed_default_roles(&mut tx, t.id, now).await?;
        tx.commit().await.map_err(db_err)?;
        Ok(t)
    }

    async fn get_tenant(&self, id: TenantId) -> domain::Result<Tenant> {
        let row = sqlx::query(&format!("SELECT {TENANT_COLS} FROM tenants WHERE id = ?"))
            .bind(id.into_uuid())
            .fetch_optional(&self.reader)
            .await
            .map_err(db_err)?
            .ok_or(Error::NotFound { entity: "tenant" })?;
        tenant_from_row(&row)
    }

    async fn get_tenant_by_slug(&self, slug: &TenantSlug) -> domain::Result<Tenant> {
        let row = sqlx::query(&format!("SELECT {TENANT_COLS} FROM tenants WHERE slug = ?"))
            .bind(slug.as_str())
            .fetch_optional(&self.reader)
            .await
            .map_err(db_err)?
            .ok_or(Error::NotFound { entity: "tenant" })?;
        tenant_from_row(&row)
    }

    async fn list_tenants(&self, q: &TenantListQuery) -> domain::Result<Page<Tenant>> {
        let mut qb: QueryBuilder<'_, Sqlite> =
            QueryBuilder::new(format!("SELECT {TENANT_COLS} FROM tenants WHERE 1 = 1"));
        if let Some(s) = q.status {
            qb.push(" AND status = ").push_bind(s.as_str());
        }
        if let Some(after) = q.after {
            qb.push(" AND id < ").push_bind(after.into_uuid());
        }
        qb.push(" ORDER BY id DESC LIMIT ")
            .push_bind(i64::from(q.limit.get()) + 1);
        let rows = qb.build().fetch_all(&self.reader).await.map_err(db_err)?;
        let items = rows
            .iter()
            .map(tenant_from_row)
            .collect::<Result<Vec<_>>>()?;
        let (items, more) = split_page(items, q.limit.get());
        let next_cursor = match items.last() {
            Some(last) if more => Some(encode_cursor(&last.id)),
            _ => None,
        };
        Ok(Page { items, next_cursor })
    }

    async fn update_tenant(
        &self,
        id: TenantId,
        patch: TenantPatch,
        action: &'static str,
        ctx: &AuditContext,
    ) -> domain::Result<Tenant> {
        let now = now();
        let mut tx = self.writer.begin().await.map_err(db_err)?;
        let (before, _) = load_tenant(&mut tx, id).await?;
        let after = patch.apply(before.clone(), now);
        sqlx::query(
            "UPDATE tenants SET display_name = ?, status = ?, plan = ?, max_users = ?, \
             trial_ends_at = ?, settings = ?, updated_at = ? WHERE id = ?",
        )
        .bind(&after.display_name)
        .bind(after.status.as_str())
        .bind(after.plan.as_str())
        .bind(after.max_users)
        .bind(after.trial_ends_at.map(to_micros))
        .bind(object_text(&after.settings))
        .bind(to_micros(after.updated_at))
        .bind(id.into_uuid())
        .execute(&mut *tx)
        .await
        .map_err(write_err)?;
        let ev = AuditEvent::record(
            ctx,
            id,
            action,
            EntityRef::tenant(id),
            (Some(tenant_json(&before)), Some(tenant_json(&after))),
            now,
        );
        insert_audit(&mut tx, &ev).await?;
        // A suspended tenant's users are signed out with it (the tenant event records why).
        if before.status != after.status && after.status == TenantStatus::Suspended {
            sqlx::query(
                "UPDATE sessions SET revoked_at = ?, revoke_reason = 'tenant_suspended' \
                 WHERE tenant_id = ? AND revoked_at IS NULL",
            )
            .bind(to_micros(now))
            .bind(id.into_uuid())
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        }
        tx.commit().await.map_err(db_err)?;
        Ok(after)
    }

    // --- API keys ---

    async fn create_api_key(
        &self,
        tenant: TenantId,
        new: NewApiKey,
        hash: &KeyHash,
        prefix: &str,
        ctx: &AuditContext,
    ) -> domain::Result<ApiKey> {
        let now = now();
        let key = ApiKey {
            id: ApiKeyId::new(),
            tenant_id: tenant,
            name: new.name.into_inner(),
            prefix: prefix.to_owned(),
            platform_admin: new.platform_admin,
            created_at: now,
            revoked_at: None,
        };
        let mut tx = self.writer.begin().await.map_err(db_err)?;
        load_tenant(&mut tx, tenant).await?;
        sqlx::query(
            "INSERT INTO api_keys (id, tenant_id, name, prefix, key_hash, platform_admin, \
             created_at, revoked_at) VALUES (?, ?, ?, ?, ?, ?, ?, NULL)",
        )
        .bind(key.id.into_uuid())
        .bind(tenant.into_uuid())
        .bind(&key.name)
        .bind(&key.prefix)
        .bind(hash.as_str())
        .bind(key.platform_admin)
        .bind(to_micros(now))
        .execute(&mut *tx)
        .await
        .map_err(write_err)?;
        let ev = AuditEvent::record(
            ctx,
            tenant,
            actions::API_KEY_CREATE,
            EntityRef::api_key(key.id),
            (None, Some(api_key_json(&key))),
            now,
        );
        insert_audit(&mut tx, &ev).await?;
        tx.commit().await.map_err(db_err)?;
        Ok(key)
    }

    async fn authenticate_api_key(&self, hash: &KeyHash) -> domain::Result<Option<ApiKeyAuth>> {
        let row = sqlx::query(
            "SELECT k.id, k.tenant_id, k.name, k.prefix, k.platform_admin, k.created_at, \
             k.revoked_at, t.status AS tenant_status \
             FROM api_keys k JOIN tenants t ON t.id = k.tenant_id \
             WHERE k.key_hash = ? AND k.revoked_at IS NULL",
        )
        .bind(hash.as_str())
        .fetch_optional(&self.reader)
        .await
        .map_err(db_err)?;
        let Some(row) = row else {
            return Ok(None);
        };
        let status: String = row.try_get("tenant_status").map_err(db_err)?;
        Ok(Some(ApiKeyAuth {
            key: api_key_from_row(&row)?,
            tenant_status: TenantStatus::from_str(&status).map_err(corrupt)?,
        }))
    }

    async fn list_api_keys(&self, tenant: TenantId) -> domain::Result<Vec<ApiKey>> {
        let rows = sqlx::query(&format!(
            "SELECT {API_KEY_COLS} FROM api_keys WHERE tenant_id = ? ORDER BY id DESC"
        ))
        .bind(tenant.into_uuid())
        .fetch_all(&self.reader)
        .await
        .map_err(db_err)?;
        rows.iter().map(api_key_from_row).collect()
    }

    async fn revoke_api_key(
        &self,
        tenant: TenantId,
        id: ApiKeyId,
        ctx: &AuditContext,
    ) -> domain::Result<ApiKey> {
        let now = now();
        let mut tx = self.writer.begin().await.map_err(db_err)?;
        let row = sqlx::query(&format!(
            "SELECT {API_KEY_COLS} FROM api_keys WHERE tenant_id = ? AND id = ?"
        ))
        .bind(tenant.into_uuid())
        .bind(id.into_uuid())
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_err)?
        .ok_or(Error::NotFound { entity: "api_key" })?;
        let before = api_key_from_row(&row)?;
        if before.revoked_at.is_some() {
            // A revoked key is gone as far as clients are concerned.
            return Err(Error::NotFound { entity: "api_key" });
        }
        let after = ApiKey {
            revoked_at: Some(now),
            ..before.clone()
        };
        sqlx::query("UPDATE api_keys SET revoked_at = ? WHERE tenant_id = ? AND id = ?")
            .bind(to_micros(now))
            .bind(tenant.into_uuid())
            .bind(id.into_uuid())
            .execute(&mut *tx)
            .await
            .map_err(write_err)?;
        let ev = AuditEvent::record(
            ctx,
            tenant,
            actions::API_KEY_REVOKE,
            EntityRef::api_key(id),
            (Some(api_key_json(&before)), Some(api_key_json(&after))),
            now,
        );
        insert_audit(&mut tx, &ev).await?;
        tx.commit().await.map_err(db_err)?;
        Ok(after)
    }

    // --- users ---

    async fn create_user(
        &self,
        tenant: TenantId,
        new: NewUser,
        ctx: &AuditContext,
    ) -> domain::Result<User> {
        // The same transaction as a creation with a password, without one.
        self.create_user_with_password(tenant, new, None, actions::USER_CREATE, ctx)
            .await
    }

    async fn seed_users(
        &self,
        tenant: TenantId,
        users: Vec<User>,
        ctx: &AuditContext,
    ) -> domain::Result<u64> {
        let now = now();
        let mut tx = self.writer.begin().await.map_err(db_err)?;
        load_tenant(&mut tx, tenant).await?;
        // Stage the rows in a bare temporary table, then move them in one statement: the
        // full-text index flushes its pending terms at every statement, so one statement
        // writes one segment instead of one per chunk.
        sqlx::query(&format!(
            "CREATE TEMP TABLE IF NOT EXISTS seed_staging AS SELECT {USER_INSERT_COLS} \
             FROM main.users WHERE 0"
        ))
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        sqlx::query("DELETE FROM temp.seed_staging")
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        for chunk in users.chunks(SEED_ROWS_PER_STATEMENT) {
            insert_users(&mut tx, "temp.seed_staging", tenant, chunk).await?;
        }
        let inserted = sqlx::query(&format!(
            "INSERT INTO main.users ({USER_INSERT_COLS}) SELECT {USER_INSERT_COLS} \
             FROM temp.seed_staging ORDER BY rowid"
        ))
        .execute(&mut *tx)
        .await
        .map_err(write_err)?
        .rows_affected();
        authz::give_seeded_users_role(&mut tx, tenant, "temp.seed_staging", now).await?;
        sqlx::query("DELETE FROM temp.seed_staging")
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        let ev = AuditEvent::record(
            ctx,
            tenant,
            actions::USER_SEED,
            EntityRef {
                kind: "user",
                id: None,
            },
            (None, Some(json!({ "count": inserted }))),
            now,
        );
        insert_audit(&mut tx, &ev).await?;
        // Deferred foreign keys (managers) are checked here.
        tx.commit().await.map_err(write_err)?;
        Ok(inserted)
    }

    async fn get_user(&self, tenant: TenantId, id: UserId) -> domain::Result<User> {
        let mut conn = self.reader.acquire().await.map_err(db_err)?;
        load_user(&mut conn, tenant, id).await
    }

    async fn list_users(&self, tenant: TenantId, q: &UserListQuery) -> domain::Result<Page<User>> {
        let search = match &q.q {
            Some(terms) => Some(self.search_plan(terms).await?),
            None => None,
        };
        let mut qb = user_list_sql("", tenant, q, search)?;
        let rows = qb.build().fetch_all(&self.reader).await.map_err(db_err)?;
        let items = rows.iter().map(user_from_row).collect::<Result<Vec<_>>>()?;
        let (items, more) = split_page(items, q.limit.get());
        let next_cursor = match items.last() {
            Some(last) if more => Some(UserCursor::after(last, q.sort).encode()),
            _ => None,
        };
        Ok(Page { items, next_cursor })
    }

    async fn update_user(
        &self,
        tenant: TenantId,
        id: UserId,
        patch: UserPatch,
        expected_version: Option<i64>,
        ctx: &AuditContext,
    ) -> domain::Result<User> {
        let now = now();
        let mut tx = self.writer.begin().await.map_err(db_err)?;
        let before = load_live_user(&mut tx, tenant, id, expected_version).await?;
        let manager_changes = patch.changes_manager();
        let after = patch.apply(before.clone(), now)?;
        if manager_changes {
            if let Some(m) = after.manager_id {
                check_manager_exists(&mut tx, tenant, m).await?;
                if manager_chain_reaches(&mut tx, tenant, m, id).await? {
                    return Err(Error::field(
                        "manager_id",
                        "manager_cycle",
                        "the user is already above this manager in the management chain",
                    ));
                }
            }
        }
        authz::apply_user_change_to_authz(&mut tx, &before, &after, now).await?;
        write_user(&mut tx, &after).await?;
        let ev = AuditEvent::user_change(ctx, actions::USER_UPDATE, Some(&before), &after, now);
        insert_audit(&mut tx, &ev).await?;
        auth::apply_user_change_to_auth(&mut tx, &before, &after, ctx, now).await?;
        tx.commit().await.map_err(write_err)?;
        Ok(after)
    }

    async fn delete_user(
        &self,
        tenant: TenantId,
        id: UserId,
        expected_version: Option<i64>,
        ctx: &AuditContext,
    ) -> domain::Result<User> {
        let now = now();
        let mut tx = self.writer.begin().await.map_err(db_err)?;
        let before = load_live_user(&mut tx, tenant, id, expected_version).await?;
        let after = before.soft_deleted(now);
        authz::apply_user_change_to_authz(&mut tx, &before, &after, now).await?;
        write_user(&mut tx, &after).await?;
        let ev = AuditEvent::user_change(ctx, actions::USER_DELETE, Some(&before), &after, now);
        insert_audit(&mut tx, &ev).await?;
        auth::apply_user_change_to_auth(&mut tx, &before, &after, ctx, now).await?;
        tx.commit().await.map_err(write_err)?;
        Ok(after)
    }

    async fn restore_user(
        &self,
        tenant: TenantId,
        id: UserId,
        ctx: &AuditContext,
    ) -> domain::Result<User> {
        let now = now();
        let mut tx = self.writer.begin().await.map_err(db_err)?;
        let before = load_user(&mut tx, tenant, id).await?;
        let after = before.restored(now)?;
        let (t, active) = load_tenant(&mut tx, tenant).await?;
        check_quota(&t, active)?;
        authz::apply_user_change_to_authz(&mut tx, &before, &after, now).await?;
        write_user(&mut tx, &after).await?;
        let ev = AuditEvent::user_change(ctx, actions::USER_RESTORE, Some(&before), &after, now);
        insert_audit(&mut tx, &ev).await?;
        tx.commit().await.map_err(write_err)?;
        Ok(after)
    }

    // --- audit ---

    async fn list_audit_events(
        &self,
        tenant: TenantId,
        q: &AuditQuery,
    ) -> domain::Result<Page<AuditEvent>> {
        let mut qb: QueryBuilder<'_, Sqlite> = QueryBuilder::new(format!(
            "SELECT {AUDIT_COLS} FROM audit_events WHERE tenant_id = "
        ));
        qb.push_bind(tenant.into_uuid());
        if let Some(a) = q.actor_id {
            qb.push(" AND actor_id = ").push_bind(a);
        }
        if let Some(a) = q.actor_type {
            qb.push(" AND actor_type = ").push_bind(a.as_str());
        }
        if let Some(a) = &q.action {
            qb.push(" AND action = ").push_bind(a.as_str());
        }
        if let Some(e) = &q.entity_type {
            qb.push(" AND entity_type = ").push_bind(e.as_str());
        }
        if let Some(e) = q.entity_id {
            qb.push(" AND entity_id = ").push_bind(e);
        }
        if let Some(t) = q.since {
            qb.push(" AND occurred_at >= ").push_bind(to_micros(t));
        }
        if let Some(t) = q.until {
            qb.push(" AND occurred_at < ").push_bind(to_micros(t));
        }
        if let Some(b) = q.before_id {
            qb.push(" AND id < ").push_bind(b.into_uuid());
        }
        qb.push(" ORDER BY id DESC LIMIT ")
            .push_bind(i64::from(q.limit.get()) + 1);
        let rows = qb.build().fetch_all(&self.reader).await.map_err(db_err)?;
        let items = rows
            .iter()
            .map(audit_from_row)
            .collect::<Result<Vec<_>>>()?;
        let (items, more) = split_page(items, q.limit.get());
        let next_cursor = match items.last() {
            Some(last) if more => Some(encode_cursor::<AuditEventId>(&last.id)),
            _ => None,
        };
        Ok(Page { items, next_cursor })
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod auth_tests;

#[cfg(test)]
mod authz_tests;
