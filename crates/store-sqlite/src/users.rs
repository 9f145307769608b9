//! Users: their rows, the manager chain, bulk insertion for the data generator, and the
//! list with its filters, sort orders, keyset pages and full-text search.

use std::collections::HashSet;

use domain::ids::{RoleId, TenantId, UserId};
use domain::page::Page;
use domain::time::{to_micros, Timestamp};
use domain::users::{DeletedFilter, SortValue, User, UserCursor, UserListQuery, UserSortField};
use domain::values::SearchQuery;
use domain::Error;
use sqlx::sqlite::{SqliteConnection, SqlitePool};
use sqlx::{QueryBuilder, Row, Sqlite};

use crate::error::{db_err, write_err, Result};
use crate::rows::{object_text, user_from_row, USER_COLS};
use crate::split_page;

/// Columns of a user row as written (see `USER_INSERT_COLS`).
pub(crate) const USER_INSERT_COLUMNS: usize = 24;
/// Rows per multi-row INSERT when seeding: as many as SQLite's limit of 32,766 bound
/// parameters per statement allows.
const SEED_ROWS_PER_STATEMENT: usize = 32_766 / USER_INSERT_COLUMNS;
const _: () = assert!(SEED_ROWS_PER_STATEMENT * USER_INSERT_COLUMNS <= 32_766);

pub(crate) async fn load(
    conn: &mut SqliteConnection,
    tenant: TenantId,
    id: UserId,
) -> Result<Option<User>> {
    let row = sqlx::query(&format!(
        "SELECT {USER_COLS} FROM users WHERE tenant_id = ? AND id = ?"
    ))
    .bind(tenant.into_uuid())
    .bind(id.into_uuid())
    .fetch_optional(&mut *conn)
    .await
    .map_err(db_err)?;
    row.as_ref().map(user_from_row).transpose()
}

pub(crate) async fn is_live(
    conn: &mut SqliteConnection,
    tenant: TenantId,
    id: UserId,
) -> Result<bool> {
    let live =
        sqlx::query("SELECT 1 FROM users WHERE tenant_id = ? AND id = ? AND deleted_at IS NULL")
            .bind(tenant.into_uuid())
            .bind(id.into_uuid())
            .fetch_optional(&mut *conn)
            .await
            .map_err(db_err)?;
    Ok(live.is_some())
}

/// Ids per `IN (…)` list of the bulk lookups, well under SQLite's 32,766 parameters.
pub(crate) const ID_BATCH: usize = 1_000;

/// Appends `column IN (?, ?, …)` binding each of `ids` (at most [`ID_BATCH`]).
pub(crate) fn push_in_ids(qb: &mut QueryBuilder<'_, Sqlite>, column: &str, ids: &[UserId]) {
    qb.push(format_args!(" {column} IN ("));
    let mut list = qb.separated(", ");
    for id in ids {
        list.push_bind(id.into_uuid());
    }
    qb.push(")");
}

/// Those of `ids` that the tenant has, not deleted.
pub(crate) async fn live_among(
    conn: &mut SqliteConnection,
    tenant: TenantId,
    ids: &[UserId],
) -> Result<HashSet<UserId>> {
    let mut live = HashSet::with_capacity(ids.len());
    for batch in ids.chunks(ID_BATCH) {
        let mut qb = QueryBuilder::<Sqlite>::new("SELECT id FROM users WHERE tenant_id = ");
        qb.push_bind(tenant.into_uuid());
        qb.push(" AND deleted_at IS NULL AND");
        push_in_ids(&mut qb, "id", batch);
        let found: Vec<uuid::Uuid> = qb
            .build_query_scalar()
            .fetch_all(&mut *conn)
            .await
            .map_err(db_err)?;
        live.extend(found.into_iter().map(UserId::from_uuid));
    }
    Ok(live)
}

/// Whether `user` is `manager` or one of the managers above it.
pub(crate) async fn manager_chain_reaches(
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
pub(crate) const USER_INSERT_COLS: &str = "id, tenant_id, email, email_lower, username, \
     username_lower, full_name, name_sort, phone, department, job_title, employee_id, \
     manager_id, cost_center, clearance_level, language, avatar_url, custom_attributes, \
     status, last_login_at, created_at, updated_at, deleted_at, version";

/// Inserts `users` into `tenant` (whatever their `tenant_id` says) with one multi-row
/// statement, into `table`: `users`, or the staging table of `seed_users`.
async fn insert_rows(
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
pub(crate) async fn put(conn: &mut SqliteConnection, u: &User) -> Result<()> {
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

pub(crate) async fn insert(conn: &mut SqliteConnection, u: &User) -> Result<()> {
    insert_rows(conn, "users", u.tenant_id, std::slice::from_ref(u)).await?;
    Ok(())
}

/// Inserts many users in one statement per table, giving each `role` (see
/// `domain::store::Tx::insert_users`). Managers are checked by deferred foreign keys at
/// the commit.
pub(crate) async fn insert_many(
    conn: &mut SqliteConnection,
    tenant: TenantId,
    users: &[User],
    role: Option<RoleId>,
    at: Timestamp,
) -> Result<u64> {
    // Stage the rows in a bare temporary table, then move them in one statement: the
    // full-text index flushes its pending terms at every statement, so one statement
    // writes one segment instead of one per chunk.
    sqlx::query(&format!(
        "CREATE TEMP TABLE IF NOT EXISTS seed_staging AS SELECT {USER_INSERT_COLS} \
         FROM main.users WHERE 0"
    ))
    .execute(&mut *conn)
    .await
    .map_err(db_err)?;
    sqlx::query("DELETE FROM temp.seed_staging")
        .execute(&mut *conn)
        .await
        .map_err(db_err)?;
    for chunk in users.chunks(SEED_ROWS_PER_STATEMENT) {
        insert_rows(conn, "temp.seed_staging", tenant, chunk).await?;
    }
    let inserted = sqlx::query(&format!(
        "INSERT INTO main.users ({USER_INSERT_COLS}) SELECT {USER_INSERT_COLS} \
         FROM temp.seed_staging ORDER BY rowid"
    ))
    .execute(&mut *conn)
    .await
    .map_err(write_err)?
    .rows_affected();
    if let Some(role) = role {
        sqlx::query(
            "INSERT INTO user_roles (tenant_id, user_id, role_id, assigned_by_type, \
             assigned_by, assigned_at, expires_at) \
             SELECT ?1, id, ?2, 'system', NULL, ?3, NULL FROM temp.seed_staging ORDER BY rowid",
        )
        .bind(tenant.into_uuid())
        .bind(role.into_uuid())
        .bind(to_micros(at))
        .execute(&mut *conn)
        .await
        .map_err(db_err)?;
    }
    sqlx::query("DELETE FROM temp.seed_staging")
        .execute(&mut *conn)
        .await
        .map_err(db_err)?;
    Ok(inserted)
}

/// The FTS5 query of a search: every term as a prefix, all of them required. The terms are
/// letters and digits only (see `SearchQuery`), so quoting them is enough.
pub(crate) fn fts_match(terms: &[String]) -> String {
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
pub(crate) enum SearchPlan {
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
pub(crate) fn user_list_sql(
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

/// Chooses how to find a search page from a bounded count of the full-text matches
/// (over all tenants: that is what collecting them costs).
pub(crate) async fn search_plan(reader: &SqlitePool, q: &SearchQuery) -> Result<SearchPlan> {
    let n: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT rowid FROM users_fts WHERE users_fts MATCH ? LIMIT ?)",
    )
    .bind(fts_match(q.terms()))
    .bind(SEARCH_COLLECT_MAX + 1)
    .fetch_one(reader)
    .await
    .map_err(db_err)?;
    Ok(if n > SEARCH_COLLECT_MAX {
        SearchPlan::Walk
    } else {
        SearchPlan::Collect
    })
}

pub(crate) async fn get(reader: &SqlitePool, tenant: TenantId, id: UserId) -> Result<User> {
    let mut conn = reader.acquire().await.map_err(db_err)?;
    load(&mut conn, tenant, id)
        .await?
        .ok_or(Error::NotFound { entity: "user" })
}

pub(crate) async fn list(
    reader: &SqlitePool,
    tenant: TenantId,
    q: &UserListQuery,
) -> Result<Page<User>> {
    let search = match &q.q {
        Some(terms) => Some(search_plan(reader, terms).await?),
        None => None,
    };
    let mut qb = user_list_sql("", tenant, q, search)?;
    let rows = qb.build().fetch_all(reader).await.map_err(db_err)?;
    let items = rows.iter().map(user_from_row).collect::<Result<Vec<_>>>()?;
    let (items, more) = split_page(items, q.limit.get());
    let next_cursor = match items.last() {
        Some(last) if more => Some(UserCursor::after(last, q.sort).encode()),
        _ => None,
    };
    Ok(Page { items, next_cursor })
}
