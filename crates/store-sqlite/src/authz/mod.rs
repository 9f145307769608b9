//! Authorization data on SQLite: the reads of [`domain::AuthzStore`] (what the decision
//! engine loads on a cache miss, in one read transaction — a WAL snapshot — each statement
//! an indexed lookup or range; the lists the API shows), the rows and statements the
//! transaction primitives of `roles`, `groups` and `policies` share, the per-tenant
//! authorization version, and the backfill of default roles at migration.

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use domain::audit::{actions, ActorType, AuditContext, AuditEvent, EntityRef};
use domain::authz::{
    default_roles, AvailableUsersQuery, Group, GroupMember, GroupMemberRole, GroupNode,
    GroupSummary, GroupType, Permission, PermissionKey, Policy, PolicyEffect, PolicyVersion,
    PrincipalData, Role, RoleAssignment, RoleType, Scope, TenantAuthzData, SUPER_ADMIN_ROLE_ID,
    SUPER_ADMIN_ROLE_NAME, USER_ROLE,
};
use domain::ids::{GroupId, PolicyId, RoleId, TenantId, UserId};
use domain::store::Named;
use domain::time::{now, to_micros};
use domain::users::{User, UserStatus};
use domain::{AuthzStore, Error};
use serde_json::{json, Value};
use sqlx::query::Query;
use sqlx::sqlite::{SqliteArguments, SqliteConnection, SqliteExecutor, SqliteRow};
use sqlx::{QueryBuilder, Sqlite};
use uuid::Uuid;

use crate::error::{corrupt, db_err, Result};
use crate::rows::{
    get, json_object, object_text, opt_ts, parse_enum, ts, user_from_row, USER_COLS,
};
use crate::users::{fts_match, search_plan, SearchPlan};
use crate::SqliteStore;

pub(crate) mod groups;
pub(crate) mod policies;
pub(crate) mod roles;
mod rows;

pub(crate) use rows::*;

/// How far up the management chain a principal's managers are followed.
pub(crate) const MAX_MANAGER_CHAIN: usize = 64;

// --- statements whose plans the tests check ---

/// The tenant's roles and the platform's super administrator role.
pub(crate) fn tenant_roles_sql() -> String {
    format!(
        "SELECT {ROLE_COLS} FROM roles WHERE tenant_id = ?1 \
         UNION ALL SELECT {ROLE_COLS} FROM roles WHERE id = ?2 \
         ORDER BY priority DESC, name"
    )
}

/// The permissions of the tenant's roles and of the super administrator role.
pub(crate) const TENANT_ROLE_PERMISSIONS_SQL: &str =
    "SELECT role_id, resource, action, scope FROM role_permissions \
     WHERE role_id IN (SELECT id FROM roles WHERE tenant_id = ?1) OR role_id = ?2";

pub(crate) const PRINCIPAL_GROUPS_SQL: &str =
    "SELECT group_id FROM group_members WHERE tenant_id = ? AND user_id = ?";

pub(crate) const MANAGER_CHAIN_SQL: &str = "WITH RECURSIVE chain(id, depth) AS ( \
         SELECT ?2, 1 \
         UNION ALL \
         SELECT u.manager_id, c.depth + 1 FROM chain c \
         JOIN users u ON u.tenant_id = ?1 AND u.id = c.id \
         WHERE u.manager_id IS NOT NULL AND c.depth < ?3 \
     ) SELECT id FROM chain ORDER BY depth";

/// The platform's active holders of the super administrator role (see
/// `roles::super_admin_holders`).
pub(crate) const SUPER_ADMIN_HOLDERS_SQL: &str = "SELECT a.tenant_id, a.user_id, a.expires_at \
     FROM user_roles a JOIN users u ON u.tenant_id = a.tenant_id AND u.id = a.user_id \
     WHERE a.role_id = ?1 AND (a.expires_at IS NULL OR a.expires_at > ?2) \
     AND u.status = 'active' AND u.deleted_at IS NULL";

// --- statements keyed by ids alone (most of them here) ---

/// `sql` with `ids` bound to its parameters in order.
pub(crate) fn keyed<'q>(sql: &'q str, ids: &[Uuid]) -> Query<'q, Sqlite, SqliteArguments<'q>> {
    ids.iter().fold(sqlx::query(sql), |q, id| q.bind(*id))
}

/// The row `sql` selects by `ids`, read by `from_row`.
pub(crate) async fn find_by<'c, T>(
    conn: impl SqliteExecutor<'c>,
    sql: &str,
    ids: &[Uuid],
    from_row: fn(&SqliteRow) -> Result<T>,
) -> Result<Option<T>> {
    let row = keyed(sql, ids).fetch_optional(conn).await.map_err(db_err)?;
    row.as_ref().map(from_row).transpose()
}

/// The rows `sql` selects by `ids`, read by `from_row`.
pub(crate) async fn list_by<'c, T>(
    conn: impl SqliteExecutor<'c>,
    sql: &str,
    ids: &[Uuid],
    from_row: fn(&SqliteRow) -> Result<T>,
) -> Result<Vec<T>> {
    let rows = keyed(sql, ids).fetch_all(conn).await.map_err(db_err)?;
    rows.iter().map(from_row).collect()
}

/// Whether `sql` selects a row by `ids`.
pub(crate) async fn exists_by<'c>(
    conn: impl SqliteExecutor<'c>,
    sql: &str,
    ids: &[Uuid],
) -> Result<bool> {
    let row = keyed(sql, ids).fetch_optional(conn).await.map_err(db_err)?;
    Ok(row.is_some())
}

/// Runs the write `sql` by `ids`; the number of rows it changed.
pub(crate) async fn execute_by<'c>(
    conn: impl SqliteExecutor<'c>,
    sql: &str,
    ids: &[Uuid],
) -> Result<u64> {
    let done = keyed(sql, ids).execute(conn).await.map_err(db_err)?;
    Ok(done.rows_affected())
}

// --- shared steps, run on the caller's connection (the writer's transaction) ---

/// Whether another entity of `kind` of the tenant (not `except`) has the name. The super
/// administrator's name is never free for a role: that role is listed with every tenant's.
pub(crate) async fn name_taken(
    conn: &mut SqliteConnection,
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
        "SELECT id FROM {table} WHERE tenant_id = ? AND name = ?"
    ))
    .bind(tenant.into_uuid())
    .bind(name)
    .fetch_optional(&mut *conn)
    .await
    .map_err(db_err)?;
    Ok(id.is_some_and(|id| Some(id) != except))
}

/// Increments the tenant's authorization version (from 0 when it has none yet).
pub(crate) async fn bump_version(conn: &mut SqliteConnection, tenant: TenantId) -> Result<()> {
    sqlx::query(
        "INSERT INTO authz_versions (tenant_id, version) VALUES (?, 1) \
         ON CONFLICT (tenant_id) DO UPDATE SET version = version + 1",
    )
    .bind(tenant.into_uuid())
    .execute(&mut *conn)
    .await
    .map_err(db_err)?;
    Ok(())
}

/// Fills in the (sorted) permissions of `roles`.
pub(crate) async fn attach_permissions(
    conn: &mut SqliteConnection,
    roles: &mut [Role],
) -> Result<()> {
    if roles.is_empty() {
        return Ok(());
    }
    let mut qb: QueryBuilder<'_, Sqlite> = QueryBuilder::new(
        "SELECT role_id, resource, action, scope FROM role_permissions WHERE role_id IN (",
    );
    let mut ids = qb.separated(", ");
    for r in roles.iter() {
        ids.push_bind(r.id.into_uuid());
    }
    qb.push(")");
    let rows = qb.build().fetch_all(&mut *conn).await.map_err(db_err)?;
    let mut by_role = group_permissions(&rows)?;
    for r in roles.iter_mut() {
        r.permissions = by_role.remove(&r.id).unwrap_or_default();
    }
    Ok(())
}

/// Permission rows (`role_id, resource, action, scope`) by role, each list sorted.
pub(crate) fn group_permissions(rows: &[SqliteRow]) -> Result<HashMap<RoleId, Vec<PermissionKey>>> {
    let mut by_role: HashMap<RoleId, Vec<PermissionKey>> = HashMap::new();
    for row in rows {
        let role = RoleId::from_uuid(get(row, "role_id")?);
        by_role.entry(role).or_default().push(permission_key(row)?);
    }
    for keys in by_role.values_mut() {
        keys.sort();
    }
    Ok(by_role)
}

/// The tenant's roles and the super administrator role, with their permissions, by
/// priority (highest first) then name.
pub(crate) async fn tenant_roles(
    conn: &mut SqliteConnection,
    tenant: TenantId,
) -> Result<Vec<Role>> {
    let ids = [tenant.into_uuid(), SUPER_ADMIN_ROLE_ID.into_uuid()];
    let mut roles = list_by(&mut *conn, &tenant_roles_sql(), &ids, role_from_row).await?;
    let perms = keyed(TENANT_ROLE_PERMISSIONS_SQL, &ids)
        .fetch_all(&mut *conn)
        .await
        .map_err(db_err)?;
    let mut by_role = group_permissions(&perms)?;
    for r in &mut roles {
        r.permissions = by_role.remove(&r.id).unwrap_or_default();
    }
    Ok(roles)
}

/// A role of the tenant, or the super administrator role, with its permissions.
pub(crate) async fn find_role(
    conn: &mut SqliteConnection,
    tenant: TenantId,
    id: RoleId,
) -> Result<Option<Role>> {
    let sql =
        format!("SELECT {ROLE_COLS} FROM roles WHERE id = ?1 AND (tenant_id = ?2 OR id = ?3)");
    let ids = [
        id.into_uuid(),
        tenant.into_uuid(),
        SUPER_ADMIN_ROLE_ID.into_uuid(),
    ];
    let Some(role) = find_by(&mut *conn, &sql, &ids, role_from_row).await? else {
        return Ok(None);
    };
    let mut role = [role];
    attach_permissions(conn, &mut role).await?;
    let [role] = role;
    Ok(Some(role))
}

pub(crate) async fn load_role(
    conn: &mut SqliteConnection,
    tenant: TenantId,
    id: RoleId,
) -> Result<Role> {
    find_role(conn, tenant, id)
        .await?
        .ok_or(Error::NotFound { entity: "role" })
}

pub(crate) async fn insert_role_permissions(
    conn: &mut SqliteConnection,
    role: RoleId,
    keys: &[PermissionKey],
) -> Result<()> {
    for k in keys {
        sqlx::query(
            "INSERT INTO role_permissions (role_id, resource, action, scope) \
             VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
        )
        .bind(role.into_uuid())
        .bind(k.resource())
        .bind(k.action())
        .bind(k.scope().as_str())
        .execute(&mut *conn)
        .await
        .map_err(db_err)?;
    }
    Ok(())
}

pub(crate) async fn insert_role(conn: &mut SqliteConnection, r: &Role) -> Result<()> {
    sqlx::query(
        "INSERT INTO roles (id, tenant_id, name, display_name, description, role_type, \
         priority, active, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(r.id.into_uuid())
    .bind(r.tenant_id.map(TenantId::into_uuid))
    .bind(&r.name)
    .bind(&r.display_name)
    .bind(&r.description)
    .bind(r.role_type.as_str())
    .bind(r.priority)
    .bind(r.active)
    .bind(to_micros(r.created_at))
    .bind(to_micros(r.updated_at))
    .execute(&mut *conn)
    .await
    .map_err(db_err)?;
    insert_role_permissions(conn, r.id, &r.permissions).await
}

/// Gives each tenant any default role it lacks (by name), and a newly given `user` role to
/// all of that tenant's users; idempotent. Run after the migrations, for tenants created
/// before roles existed. Each role given is audited as created by the system.
pub(crate) async fn backfill_default_roles(conn: &mut SqliteConnection) -> Result<()> {
    let now = now();
    let ctx = AuditContext::system();
    for d in default_roles() {
        let tenants = sqlx::query_scalar::<_, Uuid>(
            "SELECT id FROM tenants t WHERE NOT EXISTS \
             (SELECT 1 FROM roles r WHERE r.tenant_id = t.id AND r.name = ?) ORDER BY id",
        )
        .bind(d.name)
        .fetch_all(&mut *conn)
        .await
        .map_err(db_err)?;
        for tenant in tenants.into_iter().map(TenantId::from_uuid) {
            let role = d.into_role(tenant, now);
            insert_role(conn, &role).await?;
            let mut after = role.to_audit_json();
            if d.name == USER_ROLE {
                let given = sqlx::query(
                    "INSERT INTO user_roles (tenant_id, user_id, role_id, assigned_by_type, \
                     assigned_by, assigned_at, expires_at) \
                     SELECT tenant_id, id, ?2, 'system', NULL, ?3, NULL FROM users \
                     WHERE tenant_id = ?1 ON CONFLICT DO NOTHING",
                )
                .bind(tenant.into_uuid())
                .bind(role.id.into_uuid())
                .bind(to_micros(now))
                .execute(&mut *conn)
                .await
                .map_err(db_err)?
                .rows_affected();
                if let Value::Object(m) = &mut after {
                    m.insert("given_to_existing_users".into(), json!(given));
                }
            }
            let ev = AuditEvent::record(
                &ctx,
                tenant,
                actions::ROLE_CREATE,
                EntityRef::role(role.id),
                (None, Some(after)),
                now,
            );
            crate::audit::insert(conn, &ev).await?;
            bump_version(conn, tenant).await?;
        }
    }
    Ok(())
}

pub(crate) async fn find_assignment(
    conn: &mut SqliteConnection,
    tenant: TenantId,
    user: UserId,
    role: RoleId,
) -> Result<Option<RoleAssignment>> {
    let sql =
        format!("{ASSIGNMENT_SELECT} WHERE a.tenant_id = ? AND a.user_id = ? AND a.role_id = ?");
    let ids = [tenant.into_uuid(), user.into_uuid(), role.into_uuid()];
    find_by(conn, &sql, &ids, assignment_from_row).await
}

/// The parent of every group of the tenant.
pub(crate) async fn group_parents(
    conn: &mut SqliteConnection,
    tenant: TenantId,
) -> Result<HashMap<GroupId, Option<GroupId>>> {
    let rows = sqlx::query("SELECT id, parent_id FROM groups WHERE tenant_id = ?")
        .bind(tenant.into_uuid())
        .fetch_all(&mut *conn)
        .await
        .map_err(db_err)?;
    rows.iter()
        .map(|r| {
            Ok((
                GroupId::from_uuid(get(r, "id")?),
                get::<Option<Uuid>>(r, "parent_id")?.map(GroupId::from_uuid),
            ))
        })
        .collect()
}

pub(crate) async fn write_group(conn: &mut SqliteConnection, g: &Group) -> Result<()> {
    sqlx::query(
        "UPDATE groups SET name = ?, display_name = ?, description = ?, group_type = ?, \
         parent_id = ?, max_members = ?, active = ?, settings = ?, updated_at = ? \
         WHERE tenant_id = ? AND id = ?",
    )
    .bind(&g.name)
    .bind(&g.display_name)
    .bind(&g.description)
    .bind(g.group_type.as_str())
    .bind(g.parent_id.map(GroupId::into_uuid))
    .bind(g.max_members)
    .bind(g.active)
    .bind(object_text(&g.settings))
    .bind(to_micros(g.updated_at))
    .bind(g.tenant_id.into_uuid())
    .bind(g.id.into_uuid())
    .execute(&mut *conn)
    .await
    .map_err(db_err)?;
    Ok(())
}

/// A membership, whatever the user's state.
pub(crate) async fn find_member(
    conn: &mut SqliteConnection,
    tenant: TenantId,
    group: GroupId,
    user: UserId,
) -> Result<Option<GroupMember>> {
    let sql = format!("{MEMBER_SELECT} WHERE m.tenant_id = ? AND m.group_id = ? AND m.user_id = ?");
    let ids = [tenant.into_uuid(), group.into_uuid(), user.into_uuid()];
    find_by(conn, &sql, &ids, member_from_row).await
}

/// Counts a group's members; like [`list_members_sql`], it walks `group_members_by_group`
/// (a test checks the plans).
pub(crate) const COUNT_MEMBERS_SQL: &str =
    "SELECT count(*) FROM group_members WHERE tenant_id = ? AND group_id = ?";

/// A group's members in the order they joined. Members added together share their join
/// time: they follow the order they were added in (the row id).
pub(crate) fn list_members_sql() -> String {
    format!(
        "{MEMBER_SELECT} WHERE m.tenant_id = ? AND m.group_id = ? ORDER BY m.joined_at, m.rowid"
    )
}

/// Every member of the group, whatever the user's state (what `max_members` limits).
pub(crate) async fn count_members(
    conn: &mut SqliteConnection,
    tenant: TenantId,
    group: GroupId,
) -> Result<i64> {
    sqlx::query_scalar(COUNT_MEMBERS_SQL)
        .bind(tenant.into_uuid())
        .bind(group.into_uuid())
        .fetch_one(&mut *conn)
        .await
        .map_err(db_err)
}

/// The roles granted to the group itself, by priority then name.
pub(crate) async fn group_roles(
    conn: &mut SqliteConnection,
    tenant: TenantId,
    group: GroupId,
) -> Result<Vec<Role>> {
    let sql = format!(
        "SELECT {ROLE_COLS} FROM roles WHERE id IN \
         (SELECT role_id FROM group_roles WHERE tenant_id = ? AND group_id = ?) \
         ORDER BY priority DESC, name"
    );
    let ids = [tenant.into_uuid(), group.into_uuid()];
    let mut roles = list_by(&mut *conn, &sql, &ids, role_from_row).await?;
    attach_permissions(conn, &mut roles).await?;
    Ok(roles)
}

/// The users a manager chain names, nearest first: the walk stops at a user seen before
/// (a cycle in seeded data) and after `MAX_MANAGER_CHAIN` levels.
pub(crate) fn manager_chain(user: UserId, ids: Vec<Uuid>) -> Vec<UserId> {
    let mut seen = HashSet::from([user]);
    let mut chain = Vec::new();
    for id in ids.into_iter().map(UserId::from_uuid) {
        if chain.len() == MAX_MANAGER_CHAIN || !seen.insert(id) {
            break;
        }
        chain.push(id);
    }
    chain
}

#[async_trait]
impl AuthzStore for SqliteStore {
    // --- what the decision engine reads ---

    async fn authz_version(&self, tenant: TenantId) -> domain::Result<i64> {
        let v: Option<i64> =
            sqlx::query_scalar("SELECT version FROM authz_versions WHERE tenant_id = ?")
                .bind(tenant.into_uuid())
                .fetch_optional(&self.reader)
                .await
                .map_err(db_err)?;
        Ok(v.unwrap_or(0))
    }

    async fn authz_versions(&self) -> domain::Result<Vec<(TenantId, i64)>> {
        let rows = sqlx::query("SELECT tenant_id, version FROM authz_versions ORDER BY tenant_id")
            .fetch_all(&self.reader)
            .await
            .map_err(db_err)?;
        rows.iter()
            .map(|r| {
                Ok((
                    TenantId::from_uuid(get(r, "tenant_id")?),
                    get(r, "version")?,
                ))
            })
            .collect()
    }

    async fn load_tenant_authz(&self, tenant: TenantId) -> domain::Result<TenantAuthzData> {
        let t = [tenant.into_uuid()];
        // One read transaction: every statement sees the same WAL snapshot.
        let mut tx = self.reader.begin().await.map_err(db_err)?;
        let version: Option<i64> = sqlx::query_scalar(
            "SELECT COALESCE(v.version, 0) FROM tenants t \
             LEFT JOIN authz_versions v ON v.tenant_id = t.id WHERE t.id = ?",
        )
        .bind(tenant.into_uuid())
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_err)?;
        let version = version.ok_or(Error::NotFound { entity: "tenant" })?;
        let roles = tenant_roles(&mut tx, tenant).await?;
        let groups = list_by(
            &mut *tx,
            "SELECT id, name, parent_id, active FROM groups WHERE tenant_id = ? ORDER BY name",
            &t,
            |r| {
                Ok(GroupNode {
                    id: GroupId::from_uuid(get(r, "id")?),
                    name: get(r, "name")?,
                    parent_id: get::<Option<Uuid>>(r, "parent_id")?.map(GroupId::from_uuid),
                    active: get(r, "active")?,
                })
            },
        )
        .await?;
        let group_roles = list_by(
            &mut *tx,
            "SELECT group_id, role_id FROM group_roles WHERE tenant_id = ? \
             ORDER BY group_id, role_id",
            &t,
            |r| {
                Ok((
                    GroupId::from_uuid(get(r, "group_id")?),
                    RoleId::from_uuid(get(r, "role_id")?),
                ))
            },
        )
        .await?;
        let sql = format!(
            "SELECT {POLICY_COLS} FROM policies WHERE tenant_id = ? AND active = 1 ORDER BY name"
        );
        let policies = list_by(&mut *tx, &sql, &t, policy_from_row).await?;
        let sql = format!("SELECT {PERMISSION_COLS} FROM permissions WHERE tenant_id = ?");
        let mut custom_permissions = list_by(&mut *tx, &sql, &t, permission_from_row).await?;
        custom_permissions.sort_by(|a, b| a.permission.cmp(&b.permission));
        tx.commit().await.map_err(db_err)?;
        Ok(TenantAuthzData {
            version,
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
    ) -> domain::Result<Option<PrincipalData>> {
        let ids = [tenant.into_uuid(), user.into_uuid()];
        let mut tx = self.reader.begin().await.map_err(db_err)?;
        let sql = format!("SELECT {USER_COLS} FROM users WHERE tenant_id = ? AND id = ?");
        let Some(u) = find_by(&mut *tx, &sql, &ids, user_from_row).await? else {
            return Ok(None);
        };
        let manager_chain = match u.manager_id {
            Some(m) => {
                let depth = i64::try_from(MAX_MANAGER_CHAIN).unwrap_or(i64::MAX);
                let ids: Vec<Uuid> = sqlx::query_scalar(MANAGER_CHAIN_SQL)
                    .bind(tenant.into_uuid())
                    .bind(m.into_uuid())
                    .bind(depth)
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(db_err)?;
                manager_chain(user, ids)
            }
            None => Vec::new(),
        };
        let sql = format!("{ASSIGNMENT_SELECT} WHERE a.tenant_id = ? AND a.user_id = ?");
        let assignments = list_by(&mut *tx, &sql, &ids, assignment_from_row).await?;
        let groups = sqlx::query_scalar::<_, Uuid>(PRINCIPAL_GROUPS_SQL)
            .bind(tenant.into_uuid())
            .bind(user.into_uuid())
            .fetch_all(&mut *tx)
            .await
            .map_err(db_err)?
            .into_iter()
            .map(GroupId::from_uuid)
            .collect();
        tx.commit().await.map_err(db_err)?;
        Ok(Some(PrincipalData {
            user: u,
            manager_chain,
            assignments,
            groups,
        }))
    }

    // --- permissions ---

    async fn list_custom_permissions(&self, tenant: TenantId) -> domain::Result<Vec<Permission>> {
        let sql = format!("SELECT {PERMISSION_COLS} FROM permissions WHERE tenant_id = ?");
        let mut out = list_by(
            &self.reader,
            &sql,
            &[tenant.into_uuid()],
            permission_from_row,
        )
        .await?;
        out.sort_by(|a, b| a.permission.cmp(&b.permission));
        Ok(out)
    }

    // --- roles ---

    async fn list_roles(&self, tenant: TenantId) -> domain::Result<Vec<Role>> {
        let mut tx = self.reader.begin().await.map_err(db_err)?;
        let roles = tenant_roles(&mut tx, tenant).await?;
        tx.commit().await.map_err(db_err)?;
        Ok(roles)
    }

    async fn get_role(&self, tenant: TenantId, id: RoleId) -> domain::Result<Role> {
        let mut tx = self.reader.begin().await.map_err(db_err)?;
        let role = load_role(&mut tx, tenant, id).await?;
        tx.commit().await.map_err(db_err)?;
        Ok(role)
    }

    // --- assignments ---

    async fn list_user_roles(
        &self,
        tenant: TenantId,
        user: UserId,
    ) -> domain::Result<Vec<RoleAssignment>> {
        let ids = [tenant.into_uuid(), user.into_uuid()];
        let mut tx = self.reader.begin().await.map_err(db_err)?;
        let sql = "SELECT 1 FROM users WHERE tenant_id = ? AND id = ?";
        if !exists_by(&mut *tx, sql, &ids).await? {
            return Err(Error::NotFound { entity: "user" });
        }
        let sql = format!(
            "{ASSIGNMENT_SELECT} WHERE a.tenant_id = ? AND a.user_id = ? \
             ORDER BY r.priority DESC, r.name"
        );
        let assignments = list_by(&mut *tx, &sql, &ids, assignment_from_row).await?;
        tx.commit().await.map_err(db_err)?;
        Ok(assignments)
    }

    // --- groups ---

    async fn list_groups(&self, tenant: TenantId) -> domain::Result<Vec<GroupSummary>> {
        let sql = format!("{} ORDER BY name", group_summary_sql(""));
        list_by(
            &self.reader,
            &sql,
            &[tenant.into_uuid()],
            group_summary_from_row,
        )
        .await
    }

    async fn get_group(&self, tenant: TenantId, id: GroupId) -> domain::Result<GroupSummary> {
        let sql = group_summary_sql(" AND id = ?");
        let ids = [tenant.into_uuid(), id.into_uuid()];
        find_by(&self.reader, &sql, &ids, group_summary_from_row)
            .await?
            .ok_or(Error::NotFound { entity: "group" })
    }

    async fn list_group_members(
        &self,
        tenant: TenantId,
        group: GroupId,
    ) -> domain::Result<Vec<GroupMember>> {
        let mut tx = self.reader.begin().await.map_err(db_err)?;
        groups::find(&mut tx, tenant, group)
            .await?
            .ok_or(Error::NotFound { entity: "group" })?;
        let ids = [tenant.into_uuid(), group.into_uuid()];
        let members = list_by(&mut *tx, &list_members_sql(), &ids, member_from_row).await?;
        tx.commit().await.map_err(db_err)?;
        Ok(members)
    }

    async fn available_users(
        &self,
        tenant: TenantId,
        group: GroupId,
        q: &AvailableUsersQuery,
    ) -> domain::Result<Vec<User>> {
        let search = match &q.search {
            Some(terms) => Some(search_plan(&self.reader, terms).await?),
            None => None,
        };
        let mut tx = self.reader.begin().await.map_err(db_err)?;
        groups::find(&mut tx, tenant, group)
            .await?
            .ok_or(Error::NotFound { entity: "group" })?;
        let mut qb = available_users_sql("", tenant, group, q, search);
        let rows = qb.build().fetch_all(&mut *tx).await.map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        rows.iter().map(user_from_row).collect()
    }

    async fn list_group_roles(
        &self,
        tenant: TenantId,
        group: GroupId,
    ) -> domain::Result<Vec<Role>> {
        let mut tx = self.reader.begin().await.map_err(db_err)?;
        groups::find(&mut tx, tenant, group)
            .await?
            .ok_or(Error::NotFound { entity: "group" })?;
        let roles = group_roles(&mut tx, tenant, group).await?;
        tx.commit().await.map_err(db_err)?;
        Ok(roles)
    }

    // --- policies ---

    async fn list_policies(&self, tenant: TenantId) -> domain::Result<Vec<Policy>> {
        let sql = format!("SELECT {POLICY_COLS} FROM policies WHERE tenant_id = ? ORDER BY name");
        list_by(&self.reader, &sql, &[tenant.into_uuid()], policy_from_row).await
    }

    async fn get_policy(&self, tenant: TenantId, id: PolicyId) -> domain::Result<Policy> {
        let mut conn = self.reader.acquire().await.map_err(db_err)?;
        policies::find(&mut conn, tenant, id)
            .await?
            .ok_or(Error::NotFound { entity: "policy" })
    }

    async fn list_policy_versions(
        &self,
        tenant: TenantId,
        id: PolicyId,
    ) -> domain::Result<Vec<PolicyVersion>> {
        let mut tx = self.reader.begin().await.map_err(db_err)?;
        policies::find(&mut tx, tenant, id)
            .await?
            .ok_or(Error::NotFound { entity: "policy" })?;
        let sql = format!(
            "SELECT {POLICY_VERSION_COLS} FROM policy_versions \
             WHERE tenant_id = ? AND policy_id = ? ORDER BY version DESC"
        );
        let ids = [tenant.into_uuid(), id.into_uuid()];
        let versions = list_by(&mut *tx, &sql, &ids, policy_version_from_row).await?;
        tx.commit().await.map_err(db_err)?;
        Ok(versions)
    }
}

/// The SQL of an `available-users` search: the tenant's non-deleted users outside the
/// group, filtered, by name. `prefix` is empty, or `EXPLAIN QUERY PLAN ` in tests.
///
/// The index is named as for user lists: a search with few full-text matches collects them
/// (`NOT INDEXED` still allows the rowid lookups of the matches); a department reads its
/// own index; otherwise the name index is walked in order, skipping members, until `limit`
/// users are found.
pub(crate) fn available_users_sql(
    prefix: &str,
    tenant: TenantId,
    group: GroupId,
    q: &AvailableUsersQuery,
    search: Option<SearchPlan>,
) -> QueryBuilder<'static, Sqlite> {
    let index = match (search, &q.department) {
        (Some(SearchPlan::Collect), _) => " NOT INDEXED",
        (_, Some(_)) => " INDEXED BY users_by_department",
        _ => " INDEXED BY users_by_name",
    };
    let mut qb: QueryBuilder<'static, Sqlite> = QueryBuilder::new(format!(
        "{prefix}SELECT {USER_COLS} FROM users{index} WHERE tenant_id = "
    ));
    qb.push_bind(tenant.into_uuid())
        .push(" AND deleted_at IS NULL AND NOT EXISTS (SELECT 1 FROM group_members m WHERE m.group_id = ")
        .push_bind(group.into_uuid())
        .push(" AND m.user_id = users.id)");
    if let Some(d) = &q.department {
        qb.push(" AND department = ").push_bind(d.clone());
    }
    if let Some(search) = &q.search {
        qb.push(" AND seq IN (SELECT rowid FROM users_fts WHERE users_fts MATCH ")
            .push_bind(fts_match(search.terms()))
            .push(")");
    }
    qb.push(" ORDER BY name_sort, id LIMIT ")
        .push_bind(i64::from(q.limit));
    qb
}
