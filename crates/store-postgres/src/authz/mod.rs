//! Authorization data on PostgreSQL: the reads of [`AuthzStore`] (what the decision engine
//! loads, the lists the API shows), the statements the transaction primitives of `roles`,
//! `groups` and `policies` share, the tenant's authorization version and the platform's
//! super administrator lock, and the backfill of default roles at migration.
//!
//! Serialisation: every change that feeds decisions begins with [`bump_version`], which
//! keeps the tenant's `authz_versions` row locked until the commit, so that the checks the
//! services make (parent and cycle, member counts, manager chains) cannot be overtaken and
//! plain reads suffice for them; changes that can take the super administrator role from
//! a holder also take [`lock_super_admins`], a platform-wide advisory lock.
//!
//! Lock order: the tenant's version row, the super administrator lock, then rows (the
//! tenant's quota, users, ...).

pub(crate) mod groups;
pub(crate) mod policies;
pub(crate) mod roles;

use async_trait::async_trait;
use domain::audit::{actions, AuditContext, AuditEvent, EntityRef};
use domain::authz::{
    default_roles, AvailableUsersQuery, GroupMember, GroupNode, GroupSummary, Permission,
    PermissionKey, Policy, PolicyVersion, PrincipalData, Role, RoleAssignment, TenantAuthzData,
    SUPER_ADMIN_ROLE_ID, SUPER_ADMIN_ROLE_NAME, USER_ROLE,
};
use domain::authz_store::AuthzStore;
use domain::store::Named;
use domain::users::User;
use domain::{Error, GroupId, PolicyId, Result, RoleId, TenantId, UserId};
use sqlx::postgres::{PgArguments, PgExecutor, PgPool, PgRow};
use sqlx::query::Query;
use sqlx::{PgConnection, Postgres, QueryBuilder, Row};
use uuid::Uuid;

use crate::error::{db, write};
use crate::rows::{
    self, search_tsquery, ASSIGNMENT_COLUMNS, GROUP_SUMMARY_COLUMNS, MEMBER_COLUMNS,
    PERMISSION_COLUMNS, POLICY_COLUMNS, POLICY_VERSION_COLUMNS, ROLE_COLUMNS, USER_COLUMNS,
};
use crate::{audit, PgStore};

/// The key of the transaction-scoped advisory lock that serialises, platform-wide, the
/// changes that can take the super administrator role from a holder ("PCSA").
pub(crate) const SUPER_ADMIN_LOCK: i64 = 0x5043_5341;

/// The key of the advisory lock under which `migrate` backfills default roles ("PCDR").
pub(crate) const BACKFILL_LOCK: i64 = 0x5043_4452;

/// How deep `load_principal` follows the manager chain.
pub(crate) const MAX_MANAGER_DEPTH: i32 = 64;

// ------------------------------------------------------------------------------------------
// Shared with the rest of the store
// ------------------------------------------------------------------------------------------

/// Increments the tenant's authorization version (creating its row if missing), and keeps
/// the row locked until the transaction ends; first in every authorization change. Does
/// nothing for an unknown tenant: the change that follows fails on its own.
pub(crate) async fn bump_version(conn: &mut PgConnection, tenant: TenantId) -> Result<()> {
    sqlx::query(
        "INSERT INTO authz_versions (tenant_id, version) SELECT id, 1 FROM tenants WHERE id = $1 \
         ON CONFLICT (tenant_id) DO UPDATE SET version = authz_versions.version + 1",
    )
    .bind(tenant.into_uuid())
    .execute(conn)
    .await
    .map_err(db)?;
    Ok(())
}

/// Takes the platform-wide super administrator lock until the transaction ends.
pub(crate) async fn lock_super_admins(conn: &mut PgConnection) -> Result<()> {
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(SUPER_ADMIN_LOCK)
        .execute(conn)
        .await
        .map_err(db)?;
    Ok(())
}

/// Gives every tenant the default roles it lacks (by name), and a newly given `user` role
/// to all of that tenant's users: databases created before authorization existed.
/// Idempotent; two servers starting together take turns.
pub(crate) async fn backfill_default_roles(pool: &PgPool) -> Result<()> {
    let now = domain::time::now();
    let mut tx = pool.begin().await.map_err(db)?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(BACKFILL_LOCK)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
    let names: Vec<&str> = default_roles().iter().map(|d| d.name).collect();
    let missing: Vec<(Uuid, String)> = sqlx::query_as(
        "SELECT t.id, d.name FROM tenants t CROSS JOIN UNNEST($1::text[]) AS d (name) \
         WHERE NOT EXISTS (SELECT 1 FROM roles r WHERE r.tenant_id = t.id AND r.name = d.name) \
         ORDER BY t.id, d.name",
    )
    .bind(&names)
    .fetch_all(&mut *tx)
    .await
    .map_err(db)?;
    if missing.is_empty() {
        return Ok(());
    }
    let ctx = AuditContext::system();
    for (tenant, name) in missing {
        let tenant = TenantId::from_uuid(tenant);
        let Some(d) = default_roles().into_iter().find(|d| d.name == name) else {
            continue;
        };
        bump_version(&mut tx, tenant).await?;
        let role = d.into_role(tenant, now);
        insert_role(&mut tx, &role).await?;
        if role.name == USER_ROLE {
            sqlx::query(
                "INSERT INTO user_roles (tenant_id, user_id, role_id, assigned_by_type, \
                 assigned_by, assigned_at, expires_at) \
                 SELECT $1, id, $2, 'system', NULL, $3, NULL FROM users WHERE tenant_id = $1 \
                 ON CONFLICT (tenant_id, user_id, role_id) DO NOTHING",
            )
            .bind(tenant.into_uuid())
            .bind(role.id.into_uuid())
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(write)?;
        }
        let ev = AuditEvent::record(
            &ctx,
            tenant,
            actions::ROLE_CREATE,
            EntityRef::role(role.id),
            (None, Some(role.to_audit_json())),
            now,
        );
        audit::insert(&mut tx, &ev).await?;
    }
    tx.commit().await.map_err(db)?;
    Ok(())
}

/// Whether another entity of `kind` of the tenant (not `except`) has the name. The super
/// administrator's name is never free for a role: that role is listed with every tenant's.
pub(crate) async fn name_taken(
    conn: &mut PgConnection,
    kind: Named,
    tenant: TenantId,
    name: &str,
    except: Option<Uuid>,
) -> Result<bool> {
    let table = match kind {
        Named::Role if name == SUPER_ADMIN_ROLE_NAME => return Ok(true),
        Named::Role => "roles",
        Named::Group => "groups",
        Named::Policy => "policies",
    };
    let id: Option<Uuid> = sqlx::query_scalar(&format!(
        "SELECT id FROM {table} WHERE tenant_id = $1 AND name = $2"
    ))
    .bind(tenant.into_uuid())
    .bind(name)
    .fetch_optional(conn)
    .await
    .map_err(db)?;
    Ok(id.is_some_and(|id| Some(id) != except))
}

// ------------------------------------------------------------------------------------------
// Statements keyed by ids alone (most of them here), and the transaction of a change
// ------------------------------------------------------------------------------------------

/// `sql` with `ids` bound to `$1`, `$2`, ... in order.
pub(crate) fn keyed<'q>(sql: &'q str, ids: &[Uuid]) -> Query<'q, Postgres, PgArguments> {
    ids.iter().fold(sqlx::query(sql), |q, id| q.bind(*id))
}

/// The row `sql` selects by `ids`, read by `from_row`.
pub(crate) async fn find_by<'c, T>(
    conn: impl PgExecutor<'c>,
    sql: &str,
    ids: &[Uuid],
    from_row: fn(&PgRow) -> Result<T>,
) -> Result<Option<T>> {
    let row = keyed(sql, ids).fetch_optional(conn).await.map_err(db)?;
    row.as_ref().map(from_row).transpose()
}

/// The rows `sql` selects by `ids`, read by `from_row`.
pub(crate) async fn list_by<'c, T>(
    conn: impl PgExecutor<'c>,
    sql: &str,
    ids: &[Uuid],
    from_row: fn(&PgRow) -> Result<T>,
) -> Result<Vec<T>> {
    let rows = keyed(sql, ids).fetch_all(conn).await.map_err(db)?;
    rows.iter().map(from_row).collect()
}

/// Runs the write `sql` by `ids`; the number of rows it changed.
pub(crate) async fn execute_by<'c>(
    conn: impl PgExecutor<'c>,
    sql: &str,
    ids: &[Uuid],
) -> Result<u64> {
    let done = keyed(sql, ids).execute(conn).await.map_err(db)?;
    Ok(done.rows_affected())
}

// ------------------------------------------------------------------------------------------
// Roles and permissions
// ------------------------------------------------------------------------------------------

/// Highest priority first, then by name.
pub(crate) fn sort_roles(roles: &mut [Role]) {
    roles.sort_by(|a, b| {
        b.priority
            .cmp(&a.priority)
            .then_with(|| a.name.cmp(&b.name))
    });
}

/// The permissions as three parallel arrays (resource, action, scope), for `UNNEST`.
pub(crate) fn permission_arrays(keys: &[PermissionKey]) -> (Vec<&str>, Vec<&str>, Vec<&str>) {
    (
        keys.iter().map(PermissionKey::resource).collect(),
        keys.iter().map(PermissionKey::action).collect(),
        keys.iter().map(|k| k.scope().as_str()).collect(),
    )
}

pub(crate) async fn insert_role_permissions(
    conn: &mut PgConnection,
    role: RoleId,
    keys: &[PermissionKey],
) -> Result<()> {
    if keys.is_empty() {
        return Ok(());
    }
    let (resources, actions, scopes) = permission_arrays(keys);
    sqlx::query(
        "INSERT INTO role_permissions (role_id, resource, action, scope) \
         SELECT $1, resource, action, scope \
         FROM UNNEST($2::text[], $3::text[], $4::text[]) AS p (resource, action, scope) \
         ON CONFLICT DO NOTHING",
    )
    .bind(role.into_uuid())
    .bind(&resources)
    .bind(&actions)
    .bind(&scopes)
    .execute(conn)
    .await
    .map_err(write)?;
    Ok(())
}

/// Inserts a role of a tenant with its permissions.
pub(crate) async fn insert_role(conn: &mut PgConnection, r: &Role) -> Result<()> {
    sqlx::query(
        "INSERT INTO roles (id, tenant_id, name, display_name, description, role_type, \
         priority, active, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(r.id.into_uuid())
    .bind(r.tenant_id.map(TenantId::into_uuid))
    .bind(&r.name)
    .bind(&r.display_name)
    .bind(r.description.as_deref())
    .bind(r.role_type.as_str())
    .bind(r.priority)
    .bind(r.active)
    .bind(r.created_at)
    .bind(r.updated_at)
    .execute(&mut *conn)
    .await
    .map_err(write)?;
    insert_role_permissions(conn, r.id, &r.permissions).await
}

/// A role of the tenant, or the super administrator role.
pub(crate) async fn fetch_role(
    conn: &mut PgConnection,
    tenant: TenantId,
    id: RoleId,
) -> Result<Option<Role>> {
    let sql = format!(
        "SELECT {ROLE_COLUMNS} FROM roles r WHERE r.id = $2 AND (r.tenant_id = $1 OR r.id = $3)"
    );
    let ids = [
        tenant.into_uuid(),
        id.into_uuid(),
        SUPER_ADMIN_ROLE_ID.into_uuid(),
    ];
    find_by(conn, &sql, &ids, rows::role).await
}

/// [`fetch_role`], else `NotFound` role.
pub(crate) async fn load_role(
    conn: &mut PgConnection,
    tenant: TenantId,
    id: RoleId,
) -> Result<Role> {
    fetch_role(conn, tenant, id)
        .await?
        .ok_or(Error::NotFound { entity: "role" })
}

/// The tenant's roles and the super administrator role, by priority then name.
pub(crate) async fn fetch_roles(conn: &mut PgConnection, tenant: TenantId) -> Result<Vec<Role>> {
    let sql = format!("SELECT {ROLE_COLUMNS} FROM roles r WHERE r.tenant_id = $1 OR r.id = $2");
    let ids = [tenant.into_uuid(), SUPER_ADMIN_ROLE_ID.into_uuid()];
    let mut roles = list_by(conn, &sql, &ids, rows::role).await?;
    sort_roles(&mut roles);
    Ok(roles)
}

// ------------------------------------------------------------------------------------------
// Assignments
// ------------------------------------------------------------------------------------------

pub(crate) async fn fetch_assignment(
    conn: &mut PgConnection,
    tenant: TenantId,
    user: UserId,
    role: RoleId,
) -> Result<Option<RoleAssignment>> {
    let sql = format!(
        "SELECT {ASSIGNMENT_COLUMNS} FROM user_roles a JOIN roles r ON r.id = a.role_id \
         WHERE a.tenant_id = $1 AND a.user_id = $2 AND a.role_id = $3"
    );
    let ids = [tenant.into_uuid(), user.into_uuid(), role.into_uuid()];
    find_by(conn, &sql, &ids, rows::assignment).await
}

// ------------------------------------------------------------------------------------------
// Groups
// ------------------------------------------------------------------------------------------

pub(crate) async fn fetch_member(
    conn: &mut PgConnection,
    tenant: TenantId,
    group: GroupId,
    user: UserId,
) -> Result<Option<GroupMember>> {
    let sql = format!(
        "SELECT {MEMBER_COLUMNS} FROM group_members m JOIN users u ON u.id = m.user_id \
         WHERE m.tenant_id = $1 AND m.group_id = $2 AND m.user_id = $3"
    );
    let ids = [tenant.into_uuid(), group.into_uuid(), user.into_uuid()];
    find_by(conn, &sql, &ids, rows::member).await
}

// ------------------------------------------------------------------------------------------
// Policies
// ------------------------------------------------------------------------------------------

// ------------------------------------------------------------------------------------------
// The trait
// ------------------------------------------------------------------------------------------

#[async_trait]
impl AuthzStore for PgStore {
    async fn authz_version(&self, tenant: TenantId) -> Result<i64> {
        let v: Option<i64> =
            sqlx::query_scalar("SELECT version FROM authz_versions WHERE tenant_id = $1")
                .bind(tenant.into_uuid())
                .fetch_optional(&self.pool)
                .await
                .map_err(db)?;
        Ok(v.unwrap_or(0))
    }

    async fn authz_versions(&self) -> Result<Vec<(TenantId, i64)>> {
        let rows: Vec<(Uuid, i64)> =
            sqlx::query_as("SELECT tenant_id, version FROM authz_versions ORDER BY tenant_id")
                .fetch_all(&self.pool)
                .await
                .map_err(db)?;
        Ok(rows
            .into_iter()
            .map(|(t, v)| (TenantId::from_uuid(t), v))
            .collect())
    }

    async fn load_tenant_authz(&self, tenant: TenantId) -> Result<TenantAuthzData> {
        let t = tenant.into_uuid();
        let mut tx = self
            .pool
            .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await
            .map_err(db)?;
        let version: Option<i64> =
            sqlx::query_scalar("SELECT version FROM authz_versions WHERE tenant_id = $1")
                .bind(t)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db)?;
        let roles = fetch_roles(&mut tx, tenant).await?;
        let mut groups = Vec::new();
        let mut group_roles = Vec::new();
        let rows = sqlx::query(
            "SELECT g.id, g.name, g.parent_id, g.active, \
             ARRAY(SELECT gr.role_id FROM group_roles gr WHERE gr.group_id = g.id) AS role_ids \
             FROM groups g WHERE g.tenant_id = $1",
        )
        .bind(t)
        .fetch_all(&mut *tx)
        .await
        .map_err(db)?;
        for row in &rows {
            let id = GroupId::from_uuid(row.try_get("id").map_err(db)?);
            let parent: Option<Uuid> = row.try_get("parent_id").map_err(db)?;
            let role_ids: Vec<Uuid> = row.try_get("role_ids").map_err(db)?;
            group_roles.extend(role_ids.into_iter().map(|r| (id, RoleId::from_uuid(r))));
            groups.push(GroupNode {
                id,
                name: row.try_get("name").map_err(db)?,
                parent_id: parent.map(GroupId::from_uuid),
                active: row.try_get("active").map_err(db)?,
            });
        }
        let sql = format!(
            "SELECT {POLICY_COLUMNS} FROM policies WHERE tenant_id = $1 AND active \
             ORDER BY name COLLATE \"C\""
        );
        let policies = list_by(&mut *tx, &sql, &[t], rows::policy).await?;
        let custom_permissions = custom_permissions(&mut tx, tenant).await?;
        tx.commit().await.map_err(db)?;
        Ok(TenantAuthzData {
            version: version.unwrap_or(0),
            roles,
            groups,
            group_roles,
            policies,
            custom_permissions,
        })
    }

    async fn load_principal(
        &self,
        tenant: TenantId,
        user: UserId,
    ) -> Result<Option<PrincipalData>> {
        // One statement, so one snapshot: the user with their manager chain and groups,
        // repeated on one row per direct assignment (one row without any).
        let sql = format!(
            "WITH p AS ( \
               SELECT {USER_COLUMNS}, \
                 ARRAY(WITH RECURSIVE chain (id, manager_id, depth) AS ( \
                     SELECT s.id, s.manager_id, 0 FROM users s \
                     WHERE s.tenant_id = $1 AND s.id = $2 \
                   UNION ALL \
                     SELECT m.id, m.manager_id, c.depth + 1 FROM chain c \
                     JOIN users m ON m.tenant_id = $1 AND m.id = c.manager_id \
                     WHERE c.depth < $3 \
                   ) SELECT id FROM chain WHERE depth > 0 ORDER BY depth) AS manager_chain, \
                 ARRAY(SELECT gm.group_id FROM group_members gm \
                   WHERE gm.tenant_id = $1 AND gm.user_id = $2 ORDER BY gm.group_id) AS group_ids \
               FROM users WHERE tenant_id = $1 AND id = $2) \
             SELECT p.*, a.role_id AS a_role_id, r.name AS a_role_name, \
               a.assigned_by_type AS a_by_type, a.assigned_by AS a_by, \
               a.assigned_at AS a_at, a.expires_at AS a_expires_at \
             FROM p LEFT JOIN user_roles a ON a.tenant_id = $1 AND a.user_id = p.id \
             LEFT JOIN roles r ON r.id = a.role_id \
             ORDER BY a.assigned_at, a.role_id"
        );
        let rows = sqlx::query(&sql)
            .bind(tenant.into_uuid())
            .bind(user.into_uuid())
            .bind(MAX_MANAGER_DEPTH)
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        let Some(first) = rows.first() else {
            return Ok(None);
        };
        let user = rows::user(first)?;
        let chain: Vec<Uuid> = first.try_get("manager_chain").map_err(db)?;
        let groups: Vec<Uuid> = first.try_get("group_ids").map_err(db)?;
        let mut assignments = Vec::new();
        for row in &rows {
            let Some(role_id) = row.try_get::<Option<Uuid>, _>("a_role_id").map_err(db)? else {
                continue;
            };
            let by_type: String = row.try_get("a_by_type").map_err(db)?;
            assignments.push(RoleAssignment {
                user_id: user.id,
                role_id: RoleId::from_uuid(role_id),
                role_name: row.try_get("a_role_name").map_err(db)?,
                assigned_by_type: by_type
                    .parse()
                    .map_err(|_| crate::error::corrupt("actor type", &by_type))?,
                assigned_by: row.try_get("a_by").map_err(db)?,
                assigned_at: row.try_get("a_at").map_err(db)?,
                expires_at: row.try_get("a_expires_at").map_err(db)?,
            });
        }
        Ok(Some(PrincipalData {
            user,
            manager_chain: chain.into_iter().map(UserId::from_uuid).collect(),
            assignments,
            groups: groups.into_iter().map(GroupId::from_uuid).collect(),
        }))
    }

    // --- permissions ---

    async fn list_custom_permissions(&self, tenant: TenantId) -> Result<Vec<Permission>> {
        let mut conn = self.pool.acquire().await.map_err(db)?;
        custom_permissions(&mut conn, tenant).await
    }

    // --- roles ---

    async fn list_roles(&self, tenant: TenantId) -> Result<Vec<Role>> {
        let mut conn = self.pool.acquire().await.map_err(db)?;
        fetch_roles(&mut conn, tenant).await
    }

    async fn get_role(&self, tenant: TenantId, id: RoleId) -> Result<Role> {
        let mut conn = self.pool.acquire().await.map_err(db)?;
        load_role(&mut conn, tenant, id).await
    }

    // --- assignments ---

    /// By role priority (highest first), then role name, like `list_roles`.
    async fn list_user_roles(&self, tenant: TenantId, user: UserId) -> Result<Vec<RoleAssignment>> {
        let mut conn = self.pool.acquire().await.map_err(db)?;
        if !sqlx::query_scalar::<_, bool>(
            "SELECT EXISTS (SELECT 1 FROM users WHERE tenant_id = $1 AND id = $2)",
        )
        .bind(tenant.into_uuid())
        .bind(user.into_uuid())
        .fetch_one(&mut *conn)
        .await
        .map_err(db)?
        {
            return Err(Error::NotFound { entity: "user" });
        }
        let sql = format!(
            "SELECT {ASSIGNMENT_COLUMNS} FROM user_roles a JOIN roles r ON r.id = a.role_id \
             WHERE a.tenant_id = $1 AND a.user_id = $2 \
             ORDER BY r.priority DESC, r.name COLLATE \"C\""
        );
        let ids = [tenant.into_uuid(), user.into_uuid()];
        list_by(&mut *conn, &sql, &ids, rows::assignment).await
    }

    // --- groups ---

    async fn list_groups(&self, tenant: TenantId) -> Result<Vec<GroupSummary>> {
        let sql = format!(
            "SELECT {GROUP_SUMMARY_COLUMNS} FROM groups g WHERE g.tenant_id = $1 \
             ORDER BY g.name COLLATE \"C\""
        );
        list_by(&self.pool, &sql, &[tenant.into_uuid()], rows::group_summary).await
    }

    async fn get_group(&self, tenant: TenantId, id: GroupId) -> Result<GroupSummary> {
        let sql = format!(
            "SELECT {GROUP_SUMMARY_COLUMNS} FROM groups g WHERE g.tenant_id = $1 AND g.id = $2"
        );
        let ids = [tenant.into_uuid(), id.into_uuid()];
        find_by(&self.pool, &sql, &ids, rows::group_summary)
            .await?
            .ok_or(Error::NotFound { entity: "group" })
    }

    async fn list_group_members(
        &self,
        tenant: TenantId,
        group: GroupId,
    ) -> Result<Vec<GroupMember>> {
        let mut conn = self.pool.acquire().await.map_err(db)?;
        groups::find(&mut conn, tenant, group)
            .await?
            .ok_or(Error::NotFound { entity: "group" })?;
        let sql = format!(
            "SELECT {MEMBER_COLUMNS} FROM group_members m JOIN users u ON u.id = m.user_id \
             WHERE m.tenant_id = $1 AND m.group_id = $2 ORDER BY m.joined_at, m.user_id"
        );
        let ids = [tenant.into_uuid(), group.into_uuid()];
        list_by(&mut *conn, &sql, &ids, rows::member).await
    }

    async fn available_users(
        &self,
        tenant: TenantId,
        group: GroupId,
        q: &AvailableUsersQuery,
    ) -> Result<Vec<User>> {
        let mut conn = self.pool.acquire().await.map_err(db)?;
        groups::find(&mut conn, tenant, group)
            .await?
            .ok_or(Error::NotFound { entity: "group" })?;
        let mut qb = QueryBuilder::<Postgres>::new("SELECT ");
        qb.push(USER_COLUMNS)
            .push(" FROM users u WHERE u.tenant_id = ")
            .push_bind(tenant.into_uuid())
            .push(
                " AND u.deleted_at IS NULL AND NOT EXISTS (SELECT 1 FROM group_members m \
                 WHERE m.group_id = ",
            )
            .push_bind(group.into_uuid())
            .push(" AND m.user_id = u.id)");
        if let Some(s) = &q.search {
            qb.push(" AND u.search @@ ")
                .push_bind(search_tsquery(s.terms()))
                .push("::tsquery");
        }
        if let Some(d) = &q.department {
            qb.push(" AND u.department = ").push_bind(d.clone());
        }
        qb.push(" ORDER BY u.name_sort, u.id LIMIT ")
            .push_bind(i64::from(q.limit));
        // Unnamed: planned with the actual search and department.
        qb.build()
            .persistent(false)
            .fetch_all(&mut *conn)
            .await
            .map_err(db)?
            .iter()
            .map(rows::user)
            .collect()
    }

    async fn list_group_roles(&self, tenant: TenantId, group: GroupId) -> Result<Vec<Role>> {
        let mut conn = self.pool.acquire().await.map_err(db)?;
        groups::find(&mut conn, tenant, group)
            .await?
            .ok_or(Error::NotFound { entity: "group" })?;
        let sql = format!(
            "SELECT {ROLE_COLUMNS} FROM group_roles gr JOIN roles r ON r.id = gr.role_id \
             WHERE gr.tenant_id = $1 AND gr.group_id = $2"
        );
        let ids = [tenant.into_uuid(), group.into_uuid()];
        let mut roles = list_by(&mut *conn, &sql, &ids, rows::role).await?;
        sort_roles(&mut roles);
        Ok(roles)
    }

    // --- policies ---

    async fn list_policies(&self, tenant: TenantId) -> Result<Vec<Policy>> {
        let sql = format!(
            "SELECT {POLICY_COLUMNS} FROM policies WHERE tenant_id = $1 ORDER BY name COLLATE \"C\""
        );
        list_by(&self.pool, &sql, &[tenant.into_uuid()], rows::policy).await
    }

    async fn get_policy(&self, tenant: TenantId, id: PolicyId) -> Result<Policy> {
        let mut conn = self.pool.acquire().await.map_err(db)?;
        policies::find(&mut conn, tenant, id)
            .await?
            .ok_or(Error::NotFound { entity: "policy" })
    }

    async fn list_policy_versions(
        &self,
        tenant: TenantId,
        id: PolicyId,
    ) -> Result<Vec<PolicyVersion>> {
        let mut conn = self.pool.acquire().await.map_err(db)?;
        policies::find(&mut conn, tenant, id)
            .await?
            .ok_or(Error::NotFound { entity: "policy" })?;
        let sql = format!(
            "SELECT {POLICY_VERSION_COLUMNS} FROM policy_versions \
             WHERE tenant_id = $1 AND policy_id = $2 ORDER BY version DESC"
        );
        let ids = [tenant.into_uuid(), id.into_uuid()];
        list_by(&mut *conn, &sql, &ids, rows::policy_version).await
    }
}

/// The tenant's own permissions, sorted by key.
pub(crate) async fn custom_permissions(
    conn: &mut PgConnection,
    tenant: TenantId,
) -> Result<Vec<Permission>> {
    let sql = format!("SELECT {PERMISSION_COLUMNS} FROM permissions WHERE tenant_id = $1");
    let mut out = list_by(conn, &sql, &[tenant.into_uuid()], rows::permission).await?;
    out.sort_by(|a, b| a.permission.cmp(&b.permission));
    Ok(out)
}
