//! Users: their rows, the quota as a creation sees it, the manager chain, bulk seeding,
//! and the keyset-paginated list with its search plans.

use std::collections::HashSet;

use domain::store::UserQuota;
use domain::users::{DeletedFilter, SortValue, User, UserCursor, UserListQuery, UserSortField};
use domain::{Error, Page, Result, RoleId, TenantId, Timestamp, UserId};
use sqlx::postgres::PgArguments;
use sqlx::query::Query;
use sqlx::types::Json;
use sqlx::{PgConnection, Postgres, QueryBuilder};
use uuid::Uuid;

use crate::error::{db, invalid_cursor, write};
use crate::rows::{self, search_lexemes, search_tsquery, USER_COLUMNS};
use crate::PgStore;

/// The sort key of `sort=last_login`; must match the expression of
/// `users_tenant_last_login_idx` exactly for the index to serve it.
const LAST_LOGIN_KEY: &str = "COALESCE(last_login_at, '1970-01-01 00:00:00+00'::timestamptz)";

/// The columns a user row is written with, in the order [`bind_user`] binds them; `search`
/// is computed from the ninth parameter.
const INSERT_USER: &str = "INSERT INTO users (id, tenant_id, email, email_lower, username, \
     username_lower, full_name, name_sort, search, phone, department, job_title, employee_id, \
     manager_id, cost_center, clearance_level, language, avatar_url, custom_attributes, status, \
     last_login_at, created_at, updated_at, deleted_at, version) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, array_to_tsvector(string_to_array($9, ' ')), $10, $11, $12, $13, \
     $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24, $25)";

const UPDATE_USER: &str = "UPDATE users SET email = $3, email_lower = $4, username = $5, \
     username_lower = $6, full_name = $7, name_sort = $8, search = array_to_tsvector(string_to_array($9, ' ')), \
     phone = $10, department = $11, job_title = $12, employee_id = $13, manager_id = $14, \
     cost_center = $15, clearance_level = $16, language = $17, avatar_url = $18, \
     custom_attributes = $19, status = $20, last_login_at = $21, created_at = $22, \
     updated_at = $23, deleted_at = $24, version = $25 \
     WHERE id = $1 AND tenant_id = $2";

/// Rows per statement when seeding.
const SEED_BATCH: usize = 5_000;

fn bind_user<'q>(
    q: Query<'q, Postgres, PgArguments>,
    u: &'q User,
) -> Query<'q, Postgres, PgArguments> {
    q.bind(u.id.into_uuid())
        .bind(u.tenant_id.into_uuid())
        .bind(&u.email)
        .bind(u.email_normalized())
        .bind(u.username.as_deref())
        .bind(u.username_normalized())
        .bind(&u.full_name)
        .bind(u.name_sort_key())
        .bind(search_lexemes(u))
        .bind(u.phone.as_deref())
        .bind(u.department.as_deref())
        .bind(u.job_title.as_deref())
        .bind(u.employee_id.as_deref())
        .bind(u.manager_id.map(UserId::into_uuid))
        .bind(u.cost_center.as_deref())
        .bind(u.clearance_level)
        .bind(u.language.as_deref())
        .bind(u.avatar_url.as_deref())
        .bind(Json(&u.custom_attributes))
        .bind(u.status.as_str())
        .bind(u.last_login_at)
        .bind(u.created_at)
        .bind(u.updated_at)
        .bind(u.deleted_at)
        .bind(u.version)
}

async fn insert_user(conn: &mut PgConnection, u: &User) -> Result<()> {
    bind_user(sqlx::query(INSERT_USER), u)
        .execute(conn)
        .await
        .map_err(write)?;
    Ok(())
}

/// Writes every column of `u` (which belongs to the tenant named in it).
async fn write_user(conn: &mut PgConnection, u: &User) -> Result<()> {
    bind_user(sqlx::query(UPDATE_USER), u)
        .execute(conn)
        .await
        .map_err(write)?;
    Ok(())
}

/// The tenant's quota as a creation sees it (`domain::store::UserQuota`). A tenant with a
/// maximum has its row locked (NO KEY UPDATE) until the transaction ends before its users
/// are counted, which serialises the quota checks of the tenant (and tenant updates) so
/// that the count cannot be overtaken; a tenant without one is neither locked nor counted,
/// so that creating its users does not serialise.
pub(crate) async fn quota(conn: &mut PgConnection, tenant: TenantId) -> Result<UserQuota> {
    let max: Option<Option<i64>> =
        sqlx::query_scalar("SELECT max_users FROM tenants WHERE id = $1")
            .bind(tenant.into_uuid())
            .fetch_optional(&mut *conn)
            .await
            .map_err(db)?;
    if max.ok_or(Error::NotFound { entity: "tenant" })?.is_none() {
        return Ok(UserQuota {
            max_users: None,
            live_users: 0,
        });
    }
    let max: Option<i64> =
        sqlx::query_scalar("SELECT max_users FROM tenants WHERE id = $1 FOR NO KEY UPDATE")
            .bind(tenant.into_uuid())
            .fetch_one(&mut *conn)
            .await
            .map_err(db)?;
    let live_users: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM users WHERE tenant_id = $1 AND deleted_at IS NULL",
    )
    .bind(tenant.into_uuid())
    .fetch_one(&mut *conn)
    .await
    .map_err(db)?;
    Ok(UserQuota {
        max_users: max,
        live_users,
    })
}

/// A user of the tenant, deleted or not, locked until the transaction ends.
pub(crate) async fn load_for_update(
    conn: &mut PgConnection,
    tenant: TenantId,
    id: UserId,
) -> Result<Option<User>> {
    let sql =
        format!("SELECT {USER_COLUMNS} FROM users WHERE tenant_id = $1 AND id = $2 FOR UPDATE");
    let row = sqlx::query(&sql)
        .bind(tenant.into_uuid())
        .bind(id.into_uuid())
        .fetch_optional(conn)
        .await
        .map_err(db)?;
    row.as_ref().map(rows::user).transpose()
}

/// Whether the tenant has the user, not deleted (a key share lock keeps it so until the
/// transaction ends).
pub(crate) async fn is_live(conn: &mut PgConnection, tenant: TenantId, id: UserId) -> Result<bool> {
    let found: Option<i32> = sqlx::query_scalar(
        "SELECT 1 FROM users WHERE tenant_id = $1 AND id = $2 AND deleted_at IS NULL FOR KEY SHARE",
    )
    .bind(tenant.into_uuid())
    .bind(id.into_uuid())
    .fetch_optional(conn)
    .await
    .map_err(db)?;
    Ok(found.is_some())
}

/// Those of `ids` that the tenant has, not deleted, held against deletion until the commit.
/// The ids are looked up by primary key first: with `tenant_id` beside them, a planner
/// misled by stale statistics (a tenant that just grew) would walk the tenant's index, every
/// user of it.
pub(crate) async fn live_among(
    conn: &mut PgConnection,
    tenant: TenantId,
    ids: &[UserId],
) -> Result<HashSet<UserId>> {
    let ids: Vec<Uuid> = ids.iter().map(|u| u.into_uuid()).collect();
    let found: Vec<Uuid> = sqlx::query_scalar(
        "WITH c AS MATERIALIZED (SELECT id FROM users WHERE id = ANY($2)) \
         SELECT u.id FROM users u JOIN c ON c.id = u.id \
         WHERE u.tenant_id = $1 AND u.deleted_at IS NULL FOR KEY SHARE OF u",
    )
    .bind(tenant.into_uuid())
    .bind(&ids)
    .fetch_all(conn)
    .await
    .map_err(db)?;
    Ok(found.into_iter().map(UserId::from_uuid).collect())
}

/// Whether walking up from `manager` reaches `user`. UNION (not UNION ALL) discards rows
/// already seen, so the walk ends even if the data held a cycle already.
pub(crate) async fn manager_chain_reaches(
    conn: &mut PgConnection,
    tenant: TenantId,
    manager: UserId,
    user: UserId,
) -> Result<bool> {
    sqlx::query_scalar(
        "WITH RECURSIVE chain (id, manager_id) AS ( \
             SELECT id, manager_id FROM users WHERE tenant_id = $1 AND id = $2 \
           UNION \
             SELECT u.id, u.manager_id FROM chain c \
             JOIN users u ON u.tenant_id = $1 AND u.id = c.manager_id \
         ) \
         SELECT EXISTS (SELECT 1 FROM chain WHERE id = $3)",
    )
    .bind(tenant.into_uuid())
    .bind(manager.into_uuid())
    .bind(user.into_uuid())
    .fetch_one(conn)
    .await
    .map_err(db)
}

pub(crate) async fn insert(conn: &mut PgConnection, u: &User) -> Result<()> {
    insert_user(conn, u).await
}

pub(crate) async fn put(conn: &mut PgConnection, u: &User) -> Result<()> {
    write_user(conn, u).await
}

/// Inserts many users (see `domain::store::Tx::insert_users`), in batches of one statement
/// each, giving each `role`.
pub(crate) async fn insert_many(
    conn: &mut PgConnection,
    tenant: TenantId,
    users: &[User],
    role: Option<RoleId>,
    at: Timestamp,
) -> Result<u64> {
    check_seeded_managers(conn, tenant, users).await?;
    let mut inserted = 0;
    for batch in users.chunks(SEED_BATCH) {
        inserted += seed_batch(conn, tenant, batch).await?;
        if let Some(role) = role {
            let ids: Vec<Uuid> = batch.iter().map(|u| u.id.into_uuid()).collect();
            sqlx::query(
                "INSERT INTO user_roles (tenant_id, user_id, role_id, assigned_by_type, \
                 assigned_by, assigned_at, expires_at) \
                 SELECT $1, u, $2, 'system', NULL, $3, NULL FROM UNNEST($4::uuid[]) AS u",
            )
            .bind(tenant.into_uuid())
            .bind(role.into_uuid())
            .bind(at)
            .bind(&ids)
            .execute(&mut *conn)
            .await
            .map_err(db)?;
        }
    }
    Ok(inserted)
}

/// Rows a search walks in sort order before it collects its matches from the index instead.
const SEARCH_WALK: i64 = 5_000;

/// Estimated matches up to which a search sorted by name or email collects its matches
/// from the index rather than walking the sort order first.
const SEARCH_COLLECT: f64 = 5_000.0;

/// How a user list is ordered and where it continues.
struct ListPlan {
    /// The SQL of the sort key.
    key: &'static str,
    /// Whether ties on the key are broken by id (all keys but the unique email).
    tie_break: bool,
    descending: bool,
    cursor: Option<(CursorValue, UserId)>,
}

enum CursorValue {
    Text(String),
    Time(domain::Timestamp),
}

impl ListPlan {
    fn new(q: &UserListQuery) -> Result<Self> {
        let (key, text_key) = match q.sort.field {
            UserSortField::Name => ("name_sort", true),
            UserSortField::Email => ("email_lower", true),
            UserSortField::Created => ("created_at", false),
            UserSortField::LastLogin => (LAST_LOGIN_KEY, false),
        };
        let cursor = match &q.after {
            None => None,
            Some(c) => {
                if c.sort != q.sort {
                    return Err(invalid_cursor());
                }
                let v = match (&c.value, text_key) {
                    (SortValue::Text(v), true) => CursorValue::Text(v.clone()),
                    (SortValue::Micros(us), false) => CursorValue::Time(
                        domain::time::from_micros(*us).ok_or_else(invalid_cursor)?,
                    ),
                    _ => return Err(invalid_cursor()),
                };
                Some((v, c.id))
            }
        };
        Ok(Self {
            key,
            // email_lower is unique within a tenant (deleted users included), so it needs
            // no id tie-break, and the unique index serves the order on its own.
            tie_break: q.sort.field != UserSortField::Email,
            descending: q.sort.descending,
            cursor,
        })
    }

    /// ` WHERE` with the tenant, the filters, the cursor and (with `search`) the search.
    fn push_where(
        &self,
        qb: &mut QueryBuilder<'_, Postgres>,
        tenant: TenantId,
        q: &UserListQuery,
        search: bool,
    ) {
        qb.push(" WHERE tenant_id = ").push_bind(tenant.into_uuid());
        match q.deleted {
            DeletedFilter::Exclude => {
                qb.push(" AND deleted_at IS NULL");
            }
            DeletedFilter::Include => {}
            DeletedFilter::Only => {
                qb.push(" AND deleted_at IS NOT NULL");
            }
        }
        if let Some(v) = q.status {
            qb.push(" AND status = ").push_bind(v.as_str());
        }
        if let Some(v) = &q.department {
            qb.push(" AND department = ").push_bind(v.clone());
        }
        if let Some(v) = q.manager_id {
            qb.push(" AND manager_id = ").push_bind(v.into_uuid());
        }
        if let Some(v) = q.id {
            qb.push(" AND id = ").push_bind(v.into_uuid());
        }
        if let Some(v) = q.created_after {
            qb.push(" AND created_at >= ").push_bind(v);
        }
        if let Some(v) = q.created_before {
            qb.push(" AND created_at < ").push_bind(v);
        }
        if search {
            self.push_search(qb, q, " AND ");
        }
        if let Some((value, id)) = &self.cursor {
            let op = if self.descending { " < " } else { " > " };
            qb.push(" AND ");
            if self.tie_break {
                qb.push("(").push(self.key).push(", id)").push(op).push("(");
            } else {
                qb.push(self.key).push(op);
            }
            match value {
                CursorValue::Text(v) => qb.push_bind(v.clone()),
                CursorValue::Time(t) => qb.push_bind(*t),
            };
            if self.tie_break {
                qb.push(", ").push_bind(id.into_uuid()).push(")");
            }
        }
    }

    /// The search condition, if the list has one, after `glue`.
    fn push_search(&self, qb: &mut QueryBuilder<'_, Postgres>, q: &UserListQuery, glue: &str) {
        if let Some(s) = &q.q {
            qb.push(glue)
                .push("search @@ ")
                .push_bind(search_tsquery(s.terms()))
                .push("::tsquery");
        }
    }

    /// ` ORDER BY` the sort key (named `key` in this query) and the id.
    fn push_order(&self, qb: &mut QueryBuilder<'_, Postgres>, key: &str) {
        let dir = if self.descending { " DESC" } else { " ASC" };
        qb.push(" ORDER BY ").push(key).push(dir);
        if self.tie_break {
            qb.push(", id").push(dir);
        }
    }
}

impl PgStore {
    pub(crate) async fn get_user_impl(&self, tenant: TenantId, id: UserId) -> Result<User> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE tenant_id = $1 AND id = $2");
        let row = sqlx::query(&sql)
            .bind(tenant.into_uuid())
            .bind(id.into_uuid())
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?
            .ok_or(Error::NotFound { entity: "user" })?;
        rows::user(&row)
    }

    pub(crate) async fn list_users_impl(
        &self,
        tenant: TenantId,
        q: &UserListQuery,
    ) -> Result<Page<User>> {
        let limit = q.limit.get() as usize;
        let plan = ListPlan::new(q)?;
        // A search page is the first matches in sort order. When matches are common, they
        // are found quickly by walking the sort order and testing each row; when they are
        // rare, by collecting all of them from the GIN index and sorting those. The planner
        // chooses well from its estimate of the matches, except that it assumes them to be
        // spread evenly over the sort order: for the name and email orders they are not (a
        // name search matches users that sort together), and a walk it expects to be short
        // can cross most of the tenant. For those orders the choice is made here: rare
        // matches (by the planner's estimate) are collected; otherwise the walk is bounded
        // to SEARCH_WALK rows, and if they do not fill the page the matches are collected.
        let correlated =
            q.q.is_some() && matches!(q.sort.field, UserSortField::Name | UserSortField::Email);
        let fetched = if !correlated {
            let mut qb = QueryBuilder::<Postgres>::new("SELECT ");
            qb.push(USER_COLUMNS).push(" FROM users");
            plan.push_where(&mut qb, tenant, q, true);
            plan.push_order(&mut qb, plan.key);
            qb.push(" LIMIT ").push_bind(limit as i64 + 1);
            self.fetch_users(qb).await?
        } else if self.estimate_matches(tenant, q, &plan).await? <= SEARCH_COLLECT {
            self.collect_matches(tenant, q, &plan, limit).await?
        } else {
            let walked = self.walk_matches(tenant, q, &plan, limit).await?;
            if walked.len() > limit {
                walked
            } else {
                self.collect_matches(tenant, q, &plan, limit).await?
            }
        };
        let mut items = fetched;
        let next_cursor = if items.len() > limit {
            items.truncate(limit);
            items.last().map(|u| UserCursor::after(u, q.sort).encode())
        } else {
            None
        };
        Ok(Page { items, next_cursor })
    }

    /// The planner's estimate of the users a list matches (filters, cursor and search).
    async fn estimate_matches(
        &self,
        tenant: TenantId,
        q: &UserListQuery,
        plan: &ListPlan,
    ) -> Result<f64> {
        let mut qb = QueryBuilder::<Postgres>::new("EXPLAIN (FORMAT JSON) SELECT 1 FROM users");
        plan.push_where(&mut qb, tenant, q, true);
        let explained: Json<serde_json::Value> = qb
            .build_query_scalar()
            .persistent(false)
            .fetch_one(&self.pool)
            .await
            .map_err(db)?;
        Ok(explained.0[0]["Plan"]["Plan Rows"]
            .as_f64()
            .unwrap_or(f64::INFINITY))
    }

    /// The first matches in sort order, by testing the rows in sort order; at most
    /// SEARCH_WALK rows are tested, so the page may come back short.
    async fn walk_matches(
        &self,
        tenant: TenantId,
        q: &UserListQuery,
        plan: &ListPlan,
        limit: usize,
    ) -> Result<Vec<User>> {
        let mut qb = QueryBuilder::<Postgres>::new("SELECT ");
        qb.push(USER_COLUMNS)
            .push(" FROM (SELECT ")
            .push(USER_COLUMNS)
            .push(", search, ")
            .push(plan.key)
            .push(" AS sort_key FROM users");
        plan.push_where(&mut qb, tenant, q, false);
        plan.push_order(&mut qb, plan.key);
        qb.push(" LIMIT ").push_bind(SEARCH_WALK).push(") w");
        plan.push_search(&mut qb, q, " WHERE ");
        plan.push_order(&mut qb, "sort_key");
        qb.push(" LIMIT ").push_bind(limit as i64 + 1);
        self.fetch_users(qb).await
    }

    /// The first matches in sort order, by collecting every match (from the GIN index, as
    /// the planner sees fit) and sorting them.
    async fn collect_matches(
        &self,
        tenant: TenantId,
        q: &UserListQuery,
        plan: &ListPlan,
        limit: usize,
    ) -> Result<Vec<User>> {
        let mut qb = QueryBuilder::<Postgres>::new("WITH m AS MATERIALIZED (SELECT ");
        qb.push(USER_COLUMNS)
            .push(", ")
            .push(plan.key)
            .push(" AS sort_key FROM users");
        plan.push_where(&mut qb, tenant, q, true);
        qb.push(") SELECT ").push(USER_COLUMNS).push(" FROM m");
        plan.push_order(&mut qb, "sort_key");
        qb.push(" LIMIT ").push_bind(limit as i64 + 1);
        self.fetch_users(qb).await
    }

    async fn fetch_users(&self, mut qb: QueryBuilder<'_, Postgres>) -> Result<Vec<User>> {
        // Unnamed statements are planned with the actual values (the cursor's position, a
        // filter's selectivity), which a cached generic plan could not take into account.
        qb.build()
            .persistent(false)
            .fetch_all(&self.pool)
            .await
            .map_err(db)?
            .iter()
            .map(rows::user)
            .collect()
    }
}

/// Checks that every manager a seeded user names is a user of the tenant: one of the batch,
/// or one already stored (deleted or not: seeded data may hold deleted managers).
async fn check_seeded_managers(
    conn: &mut PgConnection,
    tenant: TenantId,
    users: &[User],
) -> Result<()> {
    let own: HashSet<UserId> = users.iter().map(|u| u.id).collect();
    let mut outside: Vec<Uuid> = users
        .iter()
        .filter_map(|u| u.manager_id)
        .filter(|m| !own.contains(m))
        .map(UserId::into_uuid)
        .collect();
    if outside.is_empty() {
        return Ok(());
    }
    outside.sort_unstable();
    outside.dedup();
    let found: i64 =
        sqlx::query_scalar("SELECT count(*) FROM users WHERE tenant_id = $1 AND id = ANY($2)")
            .bind(tenant.into_uuid())
            .bind(&outside)
            .fetch_one(conn)
            .await
            .map_err(db)?;
    if found != outside.len() as i64 {
        return Err(Error::rule("manager_id", domain::Code::UnknownManager));
    }
    Ok(())
}

/// Inserts one batch of seeded users with a single statement: one array per column,
/// zipped back into rows by `UNNEST`. Every row goes to `tenant`, whatever it names.
async fn seed_batch(conn: &mut PgConnection, tenant: TenantId, users: &[User]) -> Result<u64> {
    let n = users.len();
    let mut ids = Vec::with_capacity(n);
    let mut emails = Vec::with_capacity(n);
    let mut emails_lower = Vec::with_capacity(n);
    let mut usernames = Vec::with_capacity(n);
    let mut usernames_lower = Vec::with_capacity(n);
    let mut full_names = Vec::with_capacity(n);
    let mut name_sorts = Vec::with_capacity(n);
    let mut searches = Vec::with_capacity(n);
    let mut phones = Vec::with_capacity(n);
    let mut departments = Vec::with_capacity(n);
    let mut job_titles = Vec::with_capacity(n);
    let mut employee_ids = Vec::with_capacity(n);
    let mut managers = Vec::with_capacity(n);
    let mut cost_centers = Vec::with_capacity(n);
    let mut clearances = Vec::with_capacity(n);
    let mut languages = Vec::with_capacity(n);
    let mut avatars = Vec::with_capacity(n);
    let mut attrs = Vec::with_capacity(n);
    let mut statuses = Vec::with_capacity(n);
    let mut last_logins = Vec::with_capacity(n);
    let mut created = Vec::with_capacity(n);
    let mut updated = Vec::with_capacity(n);
    let mut deleted = Vec::with_capacity(n);
    let mut versions = Vec::with_capacity(n);
    for u in users {
        ids.push(u.id.into_uuid());
        emails.push(u.email.as_str());
        emails_lower.push(u.email_normalized());
        usernames.push(u.username.as_deref());
        usernames_lower.push(u.username_normalized());
        full_names.push(u.full_name.as_str());
        name_sorts.push(u.name_sort_key());
        searches.push(search_lexemes(u));
        phones.push(u.phone.as_deref());
        departments.push(u.department.as_deref());
        job_titles.push(u.job_title.as_deref());
        employee_ids.push(u.employee_id.as_deref());
        managers.push(u.manager_id.map(UserId::into_uuid));
        cost_centers.push(u.cost_center.as_deref());
        clearances.push(u.clearance_level);
        languages.push(u.language.as_deref());
        avatars.push(u.avatar_url.as_deref());
        attrs.push(Json(&u.custom_attributes));
        statuses.push(u.status.as_str());
        last_logins.push(u.last_login_at);
        created.push(u.created_at);
        updated.push(u.updated_at);
        deleted.push(u.deleted_at);
        versions.push(u.version);
    }
    let done = sqlx::query(
        "INSERT INTO users (id, tenant_id, email, email_lower, username, username_lower, \
         full_name, name_sort, search, phone, department, job_title, employee_id, manager_id, \
         cost_center, clearance_level, language, avatar_url, custom_attributes, status, \
         last_login_at, created_at, updated_at, deleted_at, version) \
         SELECT id, $1, email, email_lower, username, username_lower, full_name, name_sort, \
         array_to_tsvector(string_to_array(search, ' ')), phone, department, job_title, employee_id, manager_id, \
         cost_center, clearance_level, language, avatar_url, custom_attributes, status, \
         last_login_at, created_at, updated_at, deleted_at, version \
         FROM UNNEST($2::uuid[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], \
         $8::text[], $9::text[], $10::text[], $11::text[], $12::text[], $13::text[], \
         $14::uuid[], $15::text[], $16::int2[], $17::text[], $18::text[], $19::jsonb[], \
         $20::text[], $21::timestamptz[], $22::timestamptz[], $23::timestamptz[], \
         $24::timestamptz[], $25::int8[]) \
         AS t (id, email, email_lower, username, username_lower, full_name, name_sort, search, \
         phone, department, job_title, employee_id, manager_id, cost_center, clearance_level, \
         language, avatar_url, custom_attributes, status, last_login_at, created_at, \
         updated_at, deleted_at, version)",
    )
    .bind(tenant.into_uuid())
    .bind(ids)
    .bind(emails)
    .bind(emails_lower)
    .bind(usernames)
    .bind(usernames_lower)
    .bind(full_names)
    .bind(name_sorts)
    .bind(searches)
    .bind(phones)
    .bind(departments)
    .bind(job_titles)
    .bind(employee_ids)
    .bind(managers)
    .bind(cost_centers)
    .bind(clearances)
    .bind(languages)
    .bind(avatars)
    .bind(attrs)
    .bind(statuses)
    .bind(last_logins)
    .bind(created)
    .bind(updated)
    .bind(deleted)
    .bind(versions)
    .execute(conn)
    .await
    .map_err(write)?;
    Ok(done.rows_affected())
}
