//! The SQLite implementation of [`domain::AuthzStore`]: the tenant's own permissions, roles
//! and their permissions, role assignments, nested groups with their members and roles,
//! versioned policies, and the per-tenant authorization version. Also the steps the rest of
//! the store takes for authorization: seeding a tenant's default roles, giving new users
//! the `user` role, bumping the version when a user changes, and protecting the platform's
//! last super administrator.
//!
//! As everywhere in this store, every mutation is one transaction on the single writer
//! connection with its audit events and the version bump, so that the checks made inside
//! it (name uniqueness, cycles, group capacity, the last super administrator) cannot race
//! another writer. The reads the decision engine makes on a cache miss run in one read
//! transaction (a WAL snapshot), each statement an indexed lookup or range.

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use domain::audit::{actions, ActorType, AuditContext, AuditEvent, EntityRef};
use domain::authz::{
    check_deletable, check_no_cycle, default_roles, is_built_in, refuse_super_admin,
    AvailableUsersQuery, DefaultRole, Group, GroupMember, GroupMemberRole, GroupNode, GroupPatch,
    GroupSummary, GroupType, MemberAddFailure, MemberAddResult, NewGroup, NewPermission, NewPolicy,
    NewRole, Permission, PermissionKey, Policy, PolicyEffect, PolicyPatch, PolicyVersion,
    PrincipalData, Role, RoleAssignment, RolePatch, RoleType, Scope, TenantAuthzData,
    SUPER_ADMIN_ROLE_ID, SUPER_ADMIN_ROLE_NAME, USER_ROLE,
};
use domain::ids::{GroupId, PolicyId, RoleId, TenantId, UserId};
use domain::time::{now, to_micros, Timestamp};
use domain::users::{User, UserStatus};
use domain::{AuthzStore, Code, Error, FieldError};
use serde_json::{json, Value};
use sqlx::query::Query;
use sqlx::sqlite::{SqliteArguments, SqliteConnection, SqliteExecutor, SqlitePool, SqliteRow};
use sqlx::{QueryBuilder, Sqlite, Transaction};
use uuid::Uuid;

use crate::convert::{
    corrupt, db_err, get, json_object, object_text, opt_ts, parse_enum, ts, user_from_row, Result,
    USER_COLS,
};
use crate::{fts_match, insert_audit, SearchPlan, SqliteStore};

/// How far up the management chain a principal's managers are followed.
const MAX_MANAGER_CHAIN: usize = 64;

// --- rows ---

const ROLE_COLS: &str = "id, tenant_id, name, display_name, description, role_type, priority, \
     active, created_at, updated_at";

/// A role without its permissions (see `attach_permissions`).
fn role_from_row(row: &SqliteRow) -> Result<Role> {
    Ok(Role {
        id: RoleId::from_uuid(get(row, "id")?),
        tenant_id: get::<Option<Uuid>>(row, "tenant_id")?.map(TenantId::from_uuid),
        name: get(row, "name")?,
        display_name: get(row, "display_name")?,
        description: get(row, "description")?,
        role_type: parse_enum::<RoleType>(&get::<String>(row, "role_type")?)?,
        priority: get(row, "priority")?,
        active: get(row, "active")?,
        permissions: Vec::new(),
        created_at: ts(get(row, "created_at")?)?,
        updated_at: ts(get(row, "updated_at")?)?,
    })
}

fn permission_key(row: &SqliteRow) -> Result<PermissionKey> {
    let resource: String = get(row, "resource")?;
    let action: String = get(row, "action")?;
    let scope = parse_enum::<Scope>(&get::<String>(row, "scope")?)?;
    PermissionKey::new(&resource, &action, scope)
        .map_err(|e| corrupt(format_args!("permission: {}", e.message)))
}

const PERMISSION_COLS: &str = "resource, action, scope, description, created_at";

fn permission_from_row(row: &SqliteRow) -> Result<Permission> {
    let key = permission_key(row)?;
    Ok(Permission {
        resource: key.resource().to_owned(),
        action: key.action().to_owned(),
        scope: key.scope(),
        permission: key,
        description: get(row, "description")?,
        built_in: false,
        created_at: Some(ts(get(row, "created_at")?)?),
    })
}

const GROUP_COLS: &str = "id, tenant_id, name, display_name, description, group_type, \
     parent_id, max_members, active, settings, created_at, updated_at";

fn group_from_row(row: &SqliteRow) -> Result<Group> {
    Ok(Group {
        id: GroupId::from_uuid(get(row, "id")?),
        tenant_id: TenantId::from_uuid(get(row, "tenant_id")?),
        name: get(row, "name")?,
        display_name: get(row, "display_name")?,
        description: get(row, "description")?,
        group_type: parse_enum::<GroupType>(&get::<String>(row, "group_type")?)?,
        parent_id: get::<Option<Uuid>>(row, "parent_id")?.map(GroupId::from_uuid),
        max_members: get(row, "max_members")?,
        active: get(row, "active")?,
        settings: json_object(&get::<String>(row, "settings")?)?,
        created_at: ts(get(row, "created_at")?)?,
        updated_at: ts(get(row, "updated_at")?)?,
    })
}

/// The groups of a tenant with their member counts: every membership (a deleted user stays
/// a member, and is again one if restored), and those of active, non-deleted users. The
/// counts use the membership primary key, one range per group.
fn group_summary_sql(filter: &str) -> String {
    format!(
        "SELECT {GROUP_COLS}, \
         (SELECT count(*) FROM group_members m WHERE m.group_id = groups.id) AS member_count, \
         (SELECT count(*) FROM group_members m JOIN users u \
              ON u.tenant_id = m.tenant_id AND u.id = m.user_id \
          WHERE m.group_id = groups.id AND u.deleted_at IS NULL AND u.status = 'active') \
              AS active_member_count \
         FROM groups WHERE tenant_id = ?{filter}"
    )
}

fn group_summary_from_row(row: &SqliteRow) -> Result<GroupSummary> {
    Ok(GroupSummary {
        group: group_from_row(row)?,
        member_count: get(row, "member_count")?,
        active_member_count: get(row, "active_member_count")?,
    })
}

/// Members with the user fields shown with them; `m` is the membership, `u` the user.
const MEMBER_SELECT: &str = "SELECT m.group_id, m.user_id, u.email, u.full_name, \
     u.department, u.job_title, u.status, m.role_in_group, m.joined_at, m.added_by_type, \
     m.added_by FROM group_members m JOIN users u ON u.tenant_id = m.tenant_id \
     AND u.id = m.user_id";

fn member_from_row(row: &SqliteRow) -> Result<GroupMember> {
    Ok(GroupMember {
        group_id: GroupId::from_uuid(get(row, "group_id")?),
        user_id: UserId::from_uuid(get(row, "user_id")?),
        email: get(row, "email")?,
        full_name: get(row, "full_name")?,
        department: get(row, "department")?,
        job_title: get(row, "job_title")?,
        status: parse_enum::<UserStatus>(&get::<String>(row, "status")?)?,
        role_in_group: parse_enum::<GroupMemberRole>(&get::<String>(row, "role_in_group")?)?,
        joined_at: ts(get(row, "joined_at")?)?,
        added_by_type: parse_enum::<ActorType>(&get::<String>(row, "added_by_type")?)?,
        added_by: get(row, "added_by")?,
    })
}

/// Assignments with the role's name; `a` is the assignment, `r` the role.
const ASSIGNMENT_SELECT: &str = "SELECT a.user_id, a.role_id, r.name AS role_name, \
     a.assigned_by_type, a.assigned_by, a.assigned_at, a.expires_at \
     FROM user_roles a JOIN roles r ON r.id = a.role_id";

fn assignment_from_row(row: &SqliteRow) -> Result<RoleAssignment> {
    Ok(RoleAssignment {
        user_id: UserId::from_uuid(get(row, "user_id")?),
        role_id: RoleId::from_uuid(get(row, "role_id")?),
        role_name: get(row, "role_name")?,
        assigned_by_type: parse_enum::<ActorType>(&get::<String>(row, "assigned_by_type")?)?,
        assigned_by: get(row, "assigned_by")?,
        assigned_at: ts(get(row, "assigned_at")?)?,
        expires_at: opt_ts(get(row, "expires_at")?)?,
    })
}

const POLICY_COLS: &str = "id, tenant_id, name, description, effect, source, active, version, \
     created_at, updated_at";

fn policy_from_row(row: &SqliteRow) -> Result<Policy> {
    Ok(Policy {
        id: PolicyId::from_uuid(get(row, "id")?),
        tenant_id: TenantId::from_uuid(get(row, "tenant_id")?),
        name: get(row, "name")?,
        description: get(row, "description")?,
        effect: parse_enum::<PolicyEffect>(&get::<String>(row, "effect")?)?,
        source: get(row, "source")?,
        active: get(row, "active")?,
        version: get(row, "version")?,
        created_at: ts(get(row, "created_at")?)?,
        updated_at: ts(get(row, "updated_at")?)?,
    })
}

const POLICY_VERSION_COLS: &str =
    "policy_id, version, name, effect, source, active, changed_at, changed_by_type, changed_by";

fn policy_version_from_row(row: &SqliteRow) -> Result<PolicyVersion> {
    Ok(PolicyVersion {
        policy_id: PolicyId::from_uuid(get(row, "policy_id")?),
        version: get(row, "version")?,
        name: get(row, "name")?,
        effect: parse_enum::<PolicyEffect>(&get::<String>(row, "effect")?)?,
        source: get(row, "source")?,
        active: get(row, "active")?,
        changed_at: ts(get(row, "changed_at")?)?,
        changed_by_type: parse_enum::<ActorType>(&get::<String>(row, "changed_by_type")?)?,
        changed_by: get(row, "changed_by")?,
    })
}

fn permission_json(p: &Permission) -> Value {
    serde_json::to_value(p).unwrap_or(Value::Null)
}

fn permission_list_json(keys: &[PermissionKey]) -> Value {
    Value::Array(keys.iter().map(|k| Value::String(k.to_string())).collect())
}

fn group_role_json(role: &Role) -> Value {
    json!({ "role_id": role.id, "role_name": role.name })
}

// --- errors ---

fn name_taken(code: Code) -> Error {
    Error::refused_field(code, "name")
}

fn unknown_role() -> Error {
    Error::rule("role_id", Code::UnknownRole)
}

fn unknown_group() -> Error {
    Error::rule("parent_id", Code::UnknownGroup)
}

fn last_super_admin() -> Error {
    Error::refused(Code::LastSuperAdmin)
}

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

/// Whether an active, non-deleted user other than the one named holds the super
/// administrator role directly, unexpired, anywhere on the platform.
pub(crate) const OTHER_SUPER_ADMIN_SQL: &str = "SELECT EXISTS (SELECT 1 FROM user_roles a \
     JOIN users u ON u.tenant_id = a.tenant_id AND u.id = a.user_id \
     WHERE a.role_id = ?1 AND (a.expires_at IS NULL OR a.expires_at > ?2) \
     AND u.status = 'active' AND u.deleted_at IS NULL \
     AND NOT (a.tenant_id = ?3 AND a.user_id = ?4)) AS other";

// --- statements keyed by ids alone (most of them here) ---

/// `sql` with `ids` bound to its parameters in order.
fn keyed<'q>(sql: &'q str, ids: &[Uuid]) -> Query<'q, Sqlite, SqliteArguments<'q>> {
    ids.iter().fold(sqlx::query(sql), |q, id| q.bind(*id))
}

/// The row `sql` selects by `ids`, read by `from_row`.
async fn find_by<'c, T>(
    conn: impl SqliteExecutor<'c>,
    sql: &str,
    ids: &[Uuid],
    from_row: fn(&SqliteRow) -> Result<T>,
) -> Result<Option<T>> {
    let row = keyed(sql, ids).fetch_optional(conn).await.map_err(db_err)?;
    row.as_ref().map(from_row).transpose()
}

/// The rows `sql` selects by `ids`, read by `from_row`.
async fn list_by<'c, T>(
    conn: impl SqliteExecutor<'c>,
    sql: &str,
    ids: &[Uuid],
    from_row: fn(&SqliteRow) -> Result<T>,
) -> Result<Vec<T>> {
    let rows = keyed(sql, ids).fetch_all(conn).await.map_err(db_err)?;
    rows.iter().map(from_row).collect()
}

/// Whether `sql` selects a row by `ids`.
async fn exists_by<'c>(conn: impl SqliteExecutor<'c>, sql: &str, ids: &[Uuid]) -> Result<bool> {
    let row = keyed(sql, ids).fetch_optional(conn).await.map_err(db_err)?;
    Ok(row.is_some())
}

/// Runs the write `sql` by `ids`; the number of rows it changed.
async fn execute_by<'c>(conn: impl SqliteExecutor<'c>, sql: &str, ids: &[Uuid]) -> Result<u64> {
    let done = keyed(sql, ids).execute(conn).await.map_err(db_err)?;
    Ok(done.rows_affected())
}

/// A table of the tenant's entities that have an id and a name unique in the tenant, with
/// what the lookups of each need.
struct Entities<T> {
    table: &'static str,
    cols: &'static str,
    /// The entity as `NotFound` and the name conflict's message name it.
    entity: &'static str,
    /// The `Conflict` code of a name already taken.
    name_taken: Code,
    from_row: fn(&SqliteRow) -> Result<T>,
}

const GROUPS: Entities<Group> = Entities {
    table: "groups",
    cols: GROUP_COLS,
    entity: "group",
    name_taken: Code::GroupNameTaken,
    from_row: group_from_row,
};

const POLICIES: Entities<Policy> = Entities {
    table: "policies",
    cols: POLICY_COLS,
    entity: "policy",
    name_taken: Code::PolicyNameTaken,
    from_row: policy_from_row,
};

impl<T> Entities<T> {
    /// The tenant's entity with this id, else `NotFound`.
    async fn load(
        &self,
        conn: &mut SqliteConnection,
        tenant: TenantId,
        id: impl Into<Uuid>,
    ) -> Result<T> {
        let sql = format!(
            "SELECT {} FROM {} WHERE tenant_id = ? AND id = ?",
            self.cols, self.table
        );
        find_by(conn, &sql, &[tenant.into_uuid(), id.into()], self.from_row)
            .await?
            .ok_or(Error::NotFound {
                entity: self.entity,
            })
    }

    /// Refuses `name` when an entity of the tenant has it.
    async fn check_name_free(
        &self,
        conn: &mut SqliteConnection,
        tenant: TenantId,
        name: &str,
    ) -> Result<()> {
        let sql = format!(
            "SELECT 1 FROM {} WHERE tenant_id = ? AND name = ?",
            self.table
        );
        let taken = sqlx::query(&sql)
            .bind(tenant.into_uuid())
            .bind(name)
            .fetch_optional(&mut *conn)
            .await
            .map_err(db_err)?;
        match taken {
            Some(_) => Err(name_taken(self.name_taken)),
            None => Ok(()),
        }
    }
}

// --- shared steps, run on the caller's connection (the writer's transaction) ---

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

/// A change of the tenant's authorization data in progress: the writer's transaction, and
/// who makes the change and when, as its audit events record them. It ends with `finish`
/// (or `commit`), which bumps the tenant's version in the same transaction.
struct Mutation<'a> {
    tx: Transaction<'static, Sqlite>,
    tenant: TenantId,
    ctx: &'a AuditContext,
    now: Timestamp,
}

impl<'a> Mutation<'a> {
    async fn begin(
        writer: &SqlitePool,
        tenant: TenantId,
        ctx: &'a AuditContext,
        now: Timestamp,
    ) -> Result<Self> {
        let tx = writer.begin().await.map_err(db_err)?;
        Ok(Mutation {
            tx,
            tenant,
            ctx,
            now,
        })
    }

    /// Records an audit event of the change.
    async fn audit(
        &mut self,
        action: &str,
        entity: EntityRef,
        change: (Option<Value>, Option<Value>),
    ) -> Result<()> {
        let ev = AuditEvent::record(self.ctx, self.tenant, action, entity, change, self.now);
        insert_audit(&mut self.tx, &ev).await
    }

    /// Bumps the tenant's version and commits, once the events are recorded.
    async fn commit(mut self) -> Result<()> {
        bump_version(&mut self.tx, self.tenant).await?;
        self.tx.commit().await.map_err(db_err)
    }

    /// Records the one audit event of the change, bumps the version and commits.
    async fn finish(
        mut self,
        action: &str,
        entity: EntityRef,
        change: (Option<Value>, Option<Value>),
    ) -> Result<()> {
        self.audit(action, entity, change).await?;
        self.commit().await
    }
}

async fn ensure_tenant(conn: &mut SqliteConnection, tenant: TenantId) -> Result<()> {
    let sql = "SELECT 1 FROM tenants WHERE id = ?";
    if exists_by(conn, sql, &[tenant.into_uuid()]).await? {
        Ok(())
    } else {
        Err(Error::NotFound { entity: "tenant" })
    }
}

/// A user of the tenant who is not deleted, else `NotFound` user.
async fn ensure_live_user(
    conn: &mut SqliteConnection,
    tenant: TenantId,
    user: UserId,
) -> Result<()> {
    if live_user_exists(conn, tenant, user).await? {
        Ok(())
    } else {
        Err(Error::NotFound { entity: "user" })
    }
}

async fn live_user_exists(
    conn: &mut SqliteConnection,
    tenant: TenantId,
    user: UserId,
) -> Result<bool> {
    exists_by(
        conn,
        "SELECT 1 FROM users WHERE tenant_id = ? AND id = ? AND deleted_at IS NULL",
        &[tenant.into_uuid(), user.into_uuid()],
    )
    .await
}

/// Fills in the (sorted) permissions of `roles`.
async fn attach_permissions(conn: &mut SqliteConnection, roles: &mut [Role]) -> Result<()> {
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
fn group_permissions(rows: &[SqliteRow]) -> Result<HashMap<RoleId, Vec<PermissionKey>>> {
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
async fn tenant_roles(conn: &mut SqliteConnection, tenant: TenantId) -> Result<Vec<Role>> {
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
async fn find_role(
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

async fn load_role(conn: &mut SqliteConnection, tenant: TenantId, id: RoleId) -> Result<Role> {
    find_role(conn, tenant, id)
        .await?
        .ok_or(Error::NotFound { entity: "role" })
}

/// A role name is free in the tenant when no other role of it has it; the super
/// administrator's name is never free, since that role is listed with every tenant's.
async fn check_role_name_free(
    conn: &mut SqliteConnection,
    tenant: TenantId,
    name: &str,
    except: Option<RoleId>,
) -> Result<()> {
    let taken = name == SUPER_ADMIN_ROLE_NAME
        || sqlx::query("SELECT id FROM roles WHERE tenant_id = ? AND name = ?")
            .bind(tenant.into_uuid())
            .bind(name)
            .fetch_optional(&mut *conn)
            .await
            .map_err(db_err)?
            .map(|row| get::<Uuid>(&row, "id"))
            .transpose()?
            .is_some_and(|id| Some(RoleId::from_uuid(id)) != except);
    if taken {
        Err(name_taken(Code::RoleNameTaken))
    } else {
        Ok(())
    }
}

/// The keys of `keys` that are neither built in nor defined by the tenant.
async fn unknown_permissions(
    conn: &mut SqliteConnection,
    tenant: TenantId,
    keys: &[PermissionKey],
) -> Result<Vec<PermissionKey>> {
    let mut unknown = Vec::new();
    for k in keys {
        if is_built_in(k.resource(), k.action()) {
            continue;
        }
        let found = sqlx::query(
            "SELECT 1 FROM permissions WHERE tenant_id = ? AND resource = ? AND action = ? \
             AND scope = ?",
        )
        .bind(tenant.into_uuid())
        .bind(k.resource())
        .bind(k.action())
        .bind(k.scope().as_str())
        .fetch_optional(&mut *conn)
        .await
        .map_err(db_err)?;
        if found.is_none() {
            unknown.push(k.clone());
        }
    }
    Ok(unknown)
}

/// Refuses permissions that do not exist, naming each under `field`.
async fn check_permissions_exist(
    conn: &mut SqliteConnection,
    tenant: TenantId,
    field: &str,
    keys: &[PermissionKey],
) -> Result<()> {
    let unknown = unknown_permissions(conn, tenant, keys).await?;
    if unknown.is_empty() {
        return Ok(());
    }
    Err(Error::Validation(
        unknown
            .iter()
            .map(|k| {
                FieldError::new(
                    field,
                    "unknown_permission",
                    format!("'{k}' is neither built in nor defined by the tenant"),
                )
            })
            .collect(),
    ))
}

async fn insert_role_permissions(
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

async fn insert_role(conn: &mut SqliteConnection, r: &Role) -> Result<()> {
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

fn default_role(tenant: TenantId, d: &DefaultRole, now: Timestamp) -> Role {
    let mut permissions = d.permissions.clone();
    permissions.sort();
    permissions.dedup();
    Role {
        id: RoleId::new(),
        tenant_id: Some(tenant),
        name: d.name.to_owned(),
        display_name: d.display_name.to_owned(),
        description: Some(d.description.to_owned()),
        role_type: RoleType::System,
        priority: d.priority,
        active: true,
        permissions,
        created_at: now,
        updated_at: now,
    }
}

/// Seeds the default roles into a new tenant (part of `tenant.create`).
pub(crate) async fn seed_default_roles(
    conn: &mut SqliteConnection,
    tenant: TenantId,
    now: Timestamp,
) -> Result<()> {
    for d in default_roles() {
        insert_role(conn, &default_role(tenant, &d, now)).await?;
    }
    Ok(())
}

/// The tenant's `user` role, given to every new user.
async fn user_role_id(conn: &mut SqliteConnection, tenant: TenantId) -> Result<Option<RoleId>> {
    let id = sqlx::query_scalar::<_, Uuid>("SELECT id FROM roles WHERE tenant_id = ? AND name = ?")
        .bind(tenant.into_uuid())
        .bind(USER_ROLE)
        .fetch_optional(&mut *conn)
        .await
        .map_err(db_err)?;
    Ok(id.map(RoleId::from_uuid))
}

/// Gives a new user the tenant's `user` role (part of the user's creation, without an event
/// of its own). The version is left as it is: nothing cached is about a user who did not
/// exist, and no other user's rights depend on a new one.
pub(crate) async fn give_new_user_role(
    conn: &mut SqliteConnection,
    tenant: TenantId,
    user: UserId,
    now: Timestamp,
) -> Result<()> {
    if let Some(role) = user_role_id(conn, tenant).await? {
        sqlx::query(
            "INSERT INTO user_roles (tenant_id, user_id, role_id, assigned_by_type, \
             assigned_by, assigned_at, expires_at) VALUES (?, ?, ?, 'system', NULL, ?, NULL)",
        )
        .bind(tenant.into_uuid())
        .bind(user.into_uuid())
        .bind(role.into_uuid())
        .bind(to_micros(now))
        .execute(&mut *conn)
        .await
        .map_err(db_err)?;
    }
    Ok(())
}

/// Gives every user of `table` (a table of user rows, all of `tenant`) the tenant's `user`
/// role in one statement (part of `seed_users`; see `give_new_user_role`).
pub(crate) async fn give_seeded_users_role(
    conn: &mut SqliteConnection,
    tenant: TenantId,
    table: &str,
    now: Timestamp,
) -> Result<()> {
    if let Some(role) = user_role_id(conn, tenant).await? {
        sqlx::query(&format!(
            "INSERT INTO user_roles (tenant_id, user_id, role_id, assigned_by_type, \
             assigned_by, assigned_at, expires_at) \
             SELECT ?1, id, ?2, 'system', NULL, ?3, NULL FROM {table} ORDER BY rowid"
        ))
        .bind(tenant.into_uuid())
        .bind(role.into_uuid())
        .bind(to_micros(now))
        .execute(&mut *conn)
        .await
        .map_err(db_err)?;
    }
    Ok(())
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
            let role = default_role(tenant, &d, now);
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
            insert_audit(conn, &ev).await?;
            bump_version(conn, tenant).await?;
        }
    }
    Ok(())
}

/// Refuses that `user` stop being an active holder of the super administrator role when no
/// other active, non-deleted user of the platform holds it. Called before a change that
/// takes the role away, makes the user other than active, or deletes them; a user who is
/// not a current holder loses nothing.
pub(crate) async fn check_not_last_super_admin(
    conn: &mut SqliteConnection,
    tenant: TenantId,
    user: UserId,
    now: Timestamp,
) -> Result<()> {
    let holds = sqlx::query(
        "SELECT 1 FROM user_roles a JOIN users u ON u.tenant_id = a.tenant_id \
         AND u.id = a.user_id WHERE a.tenant_id = ?1 AND a.user_id = ?2 AND a.role_id = ?3 \
         AND (a.expires_at IS NULL OR a.expires_at > ?4) \
         AND u.status = 'active' AND u.deleted_at IS NULL",
    )
    .bind(tenant.into_uuid())
    .bind(user.into_uuid())
    .bind(SUPER_ADMIN_ROLE_ID.into_uuid())
    .bind(to_micros(now))
    .fetch_optional(&mut *conn)
    .await
    .map_err(db_err)?
    .is_some();
    if !holds {
        return Ok(());
    }
    let other: bool = sqlx::query_scalar(OTHER_SUPER_ADMIN_SQL)
        .bind(SUPER_ADMIN_ROLE_ID.into_uuid())
        .bind(to_micros(now))
        .bind(tenant.into_uuid())
        .bind(user.into_uuid())
        .fetch_one(&mut *conn)
        .await
        .map_err(db_err)?;
    if other {
        Ok(())
    } else {
        Err(last_super_admin())
    }
}

/// What a change of a user (`update_user`, `delete_user`, `restore_user`) means for
/// authorization, in the caller's transaction before the write: the last super
/// administrator stays active, and decisions about the user are recomputed.
pub(crate) async fn apply_user_change_to_authz(
    conn: &mut SqliteConnection,
    before: &User,
    after: &User,
    now: Timestamp,
) -> Result<()> {
    let was_active = before.status == UserStatus::Active && !before.is_deleted();
    let is_active = after.status == UserStatus::Active && !after.is_deleted();
    if was_active && !is_active {
        check_not_last_super_admin(conn, after.tenant_id, after.id, now).await?;
    }
    bump_version(conn, after.tenant_id).await
}

async fn find_assignment(
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
async fn group_parents(
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

/// A parent is a group of the same tenant that does not descend from `group`.
async fn check_parent(
    conn: &mut SqliteConnection,
    tenant: TenantId,
    group: GroupId,
    parent: Option<GroupId>,
) -> Result<()> {
    let Some(p) = parent else {
        return Ok(());
    };
    let parents = group_parents(conn, tenant).await?;
    if !parents.contains_key(&p) {
        return Err(unknown_group());
    }
    check_no_cycle(group, Some(p), |g| parents.get(&g).copied().flatten())
}

async fn write_group(conn: &mut SqliteConnection, g: &Group) -> Result<()> {
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
async fn find_member(
    conn: &mut SqliteConnection,
    tenant: TenantId,
    group: GroupId,
    user: UserId,
) -> Result<Option<GroupMember>> {
    let sql = format!("{MEMBER_SELECT} WHERE m.tenant_id = ? AND m.group_id = ? AND m.user_id = ?");
    let ids = [tenant.into_uuid(), group.into_uuid(), user.into_uuid()];
    find_by(conn, &sql, &ids, member_from_row).await
}

/// A member of a group of the tenant: `NotFound` group, else `NotFound` group_member.
async fn load_member(
    conn: &mut SqliteConnection,
    tenant: TenantId,
    group: GroupId,
    user: UserId,
) -> Result<GroupMember> {
    GROUPS.load(conn, tenant, group).await?;
    find_member(conn, tenant, group, user)
        .await?
        .ok_or(Error::NotFound {
            entity: "group_member",
        })
}

/// Every member of the group, whatever the user's state (what `max_members` limits).
async fn count_members(
    conn: &mut SqliteConnection,
    tenant: TenantId,
    group: GroupId,
) -> Result<i64> {
    sqlx::query_scalar("SELECT count(*) FROM group_members WHERE tenant_id = ? AND group_id = ?")
        .bind(tenant.into_uuid())
        .bind(group.into_uuid())
        .fetch_one(&mut *conn)
        .await
        .map_err(db_err)
}

/// The roles granted to the group itself, by priority then name.
async fn group_roles(
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

/// Records `p` as it now is in its history.
async fn insert_policy_version(
    conn: &mut SqliteConnection,
    p: &Policy,
    ctx: &AuditContext,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO policy_versions (policy_id, version, tenant_id, name, effect, source, \
         active, changed_at, changed_by_type, changed_by) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(p.id.into_uuid())
    .bind(p.version)
    .bind(p.tenant_id.into_uuid())
    .bind(&p.name)
    .bind(p.effect.as_str())
    .bind(&p.source)
    .bind(p.active)
    .bind(to_micros(p.updated_at))
    .bind(ctx.actor.actor_type().as_str())
    .bind(ctx.actor.id())
    .execute(&mut *conn)
    .await
    .map_err(db_err)?;
    Ok(())
}

/// The users a manager chain names, nearest first: the walk stops at a user seen before
/// (a cycle in seeded data) and after `MAX_MANAGER_CHAIN` levels.
fn manager_chain(user: UserId, ids: Vec<Uuid>) -> Vec<UserId> {
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

    async fn create_permission(
        &self,
        tenant: TenantId,
        new: NewPermission,
        ctx: &AuditContext,
    ) -> domain::Result<Permission> {
        let now = now();
        let key = new.key;
        let p = Permission {
            resource: key.resource().to_owned(),
            action: key.action().to_owned(),
            scope: key.scope(),
            permission: key,
            description: new.description.map(|d| d.into_inner()).unwrap_or_default(),
            built_in: false,
            created_at: Some(now),
        };
        let mut m = Mutation::begin(&self.writer, tenant, ctx, now).await?;
        ensure_tenant(&mut m.tx, tenant).await?;
        let inserted = sqlx::query(
            "INSERT INTO permissions (tenant_id, resource, action, scope, description, \
             created_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
        )
        .bind(tenant.into_uuid())
        .bind(&p.resource)
        .bind(&p.action)
        .bind(p.scope.as_str())
        .bind(&p.description)
        .bind(to_micros(now))
        .execute(&mut *m.tx)
        .await
        .map_err(db_err)?
        .rows_affected();
        if inserted == 0 {
            return Err(Error::refused_field(Code::PermissionExists, "permission"));
        }
        let after = Some(permission_json(&p));
        m.finish(
            actions::PERMISSION_CREATE,
            EntityRef::none("permission"),
            (None, after),
        )
        .await?;
        Ok(p)
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

    async fn create_role(
        &self,
        tenant: TenantId,
        new: NewRole,
        ctx: &AuditContext,
    ) -> domain::Result<Role> {
        let now = now();
        let role = new.into_role(tenant, RoleType::Custom, now);
        let mut m = Mutation::begin(&self.writer, tenant, ctx, now).await?;
        ensure_tenant(&mut m.tx, tenant).await?;
        check_role_name_free(&mut m.tx, tenant, &role.name, None).await?;
        check_permissions_exist(&mut m.tx, tenant, "permissions", &role.permissions).await?;
        insert_role(&mut m.tx, &role).await?;
        let after = Some(role.to_audit_json());
        m.finish(
            actions::ROLE_CREATE,
            EntityRef::role(role.id),
            (None, after),
        )
        .await?;
        Ok(role)
    }

    async fn update_role(
        &self,
        tenant: TenantId,
        id: RoleId,
        patch: RolePatch,
        ctx: &AuditContext,
    ) -> domain::Result<Role> {
        let now = now();
        let mut m = Mutation::begin(&self.writer, tenant, ctx, now).await?;
        let before = load_role(&mut m.tx, tenant, id).await?;
        let after = patch.apply(&before, now)?;
        if after.name != before.name {
            check_role_name_free(&mut m.tx, tenant, &after.name, Some(id)).await?;
        }
        sqlx::query(
            "UPDATE roles SET name = ?, display_name = ?, description = ?, priority = ?, \
             active = ?, updated_at = ? WHERE tenant_id = ? AND id = ?",
        )
        .bind(&after.name)
        .bind(&after.display_name)
        .bind(&after.description)
        .bind(after.priority)
        .bind(after.active)
        .bind(to_micros(now))
        .bind(tenant.into_uuid())
        .bind(id.into_uuid())
        .execute(&mut *m.tx)
        .await
        .map_err(db_err)?;
        let change = (Some(before.to_audit_json()), Some(after.to_audit_json()));
        m.finish(actions::ROLE_UPDATE, EntityRef::role(id), change)
            .await?;
        Ok(after)
    }

    async fn delete_role(
        &self,
        tenant: TenantId,
        id: RoleId,
        ctx: &AuditContext,
    ) -> domain::Result<Role> {
        let mut m = Mutation::begin(&self.writer, tenant, ctx, now()).await?;
        let role = load_role(&mut m.tx, tenant, id).await?;
        check_deletable(&role)?;
        // Its permissions, assignments and group grants go with it (ON DELETE CASCADE).
        let ids = [tenant.into_uuid(), id.into_uuid()];
        execute_by(
            &mut *m.tx,
            "DELETE FROM roles WHERE tenant_id = ? AND id = ?",
            &ids,
        )
        .await?;
        let before = Some(role.to_audit_json());
        m.finish(actions::ROLE_DELETE, EntityRef::role(id), (before, None))
            .await?;
        Ok(role)
    }

    async fn update_role_permissions(
        &self,
        tenant: TenantId,
        id: RoleId,
        add: Vec<PermissionKey>,
        remove: Vec<PermissionKey>,
        ctx: &AuditContext,
    ) -> domain::Result<Role> {
        let now = now();
        let mut m = Mutation::begin(&self.writer, tenant, ctx, now).await?;
        let before = load_role(&mut m.tx, tenant, id).await?;
        refuse_super_admin(&before)?;
        check_permissions_exist(&mut m.tx, tenant, "add", &add).await?;
        insert_role_permissions(&mut m.tx, id, &add).await?;
        for k in &remove {
            sqlx::query(
                "DELETE FROM role_permissions WHERE role_id = ? AND resource = ? \
                 AND action = ? AND scope = ?",
            )
            .bind(id.into_uuid())
            .bind(k.resource())
            .bind(k.action())
            .bind(k.scope().as_str())
            .execute(&mut *m.tx)
            .await
            .map_err(db_err)?;
        }
        sqlx::query("UPDATE roles SET updated_at = ? WHERE tenant_id = ? AND id = ?")
            .bind(to_micros(now))
            .bind(tenant.into_uuid())
            .bind(id.into_uuid())
            .execute(&mut *m.tx)
            .await
            .map_err(db_err)?;
        let after = load_role(&mut m.tx, tenant, id).await?;
        let change = (
            Some(permission_list_json(&before.permissions)),
            Some(permission_list_json(&after.permissions)),
        );
        m.finish(
            actions::ROLE_PERMISSIONS_UPDATE,
            EntityRef::role(id),
            change,
        )
        .await?;
        Ok(after)
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

    async fn assign_role(
        &self,
        tenant: TenantId,
        user: UserId,
        role: RoleId,
        expires_at: Option<DateTime<Utc>>,
        ctx: &AuditContext,
    ) -> domain::Result<(RoleAssignment, bool)> {
        let now = now();
        let expires_at = expires_at.map(domain::time::truncate);
        let mut m = Mutation::begin(&self.writer, tenant, ctx, now).await?;
        ensure_live_user(&mut m.tx, tenant, user).await?;
        let r = find_role(&mut m.tx, tenant, role)
            .await?
            .ok_or_else(unknown_role)?;
        let before = find_assignment(&mut m.tx, tenant, user, role).await?;
        let after = match &before {
            Some(a) => {
                // The service only sets future expiries; should one already be past, the
                // change would take the role away now.
                if role == SUPER_ADMIN_ROLE_ID && expires_at.is_some_and(|t| t <= now) {
                    check_not_last_super_admin(&mut m.tx, tenant, user, now).await?;
                }
                sqlx::query(
                    "UPDATE user_roles SET expires_at = ? \
                     WHERE tenant_id = ? AND user_id = ? AND role_id = ?",
                )
                .bind(expires_at.map(to_micros))
                .bind(tenant.into_uuid())
                .bind(user.into_uuid())
                .bind(role.into_uuid())
                .execute(&mut *m.tx)
                .await
                .map_err(db_err)?;
                RoleAssignment {
                    expires_at,
                    ..a.clone()
                }
            }
            None => {
                let a = RoleAssignment {
                    user_id: user,
                    role_id: role,
                    role_name: r.name.clone(),
                    assigned_by_type: ctx.actor.actor_type(),
                    assigned_by: ctx.actor.id(),
                    assigned_at: now,
                    expires_at,
                };
                sqlx::query(
                    "INSERT INTO user_roles (tenant_id, user_id, role_id, assigned_by_type, \
                     assigned_by, assigned_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                )
                .bind(tenant.into_uuid())
                .bind(user.into_uuid())
                .bind(role.into_uuid())
                .bind(a.assigned_by_type.as_str())
                .bind(a.assigned_by)
                .bind(to_micros(now))
                .bind(expires_at.map(to_micros))
                .execute(&mut *m.tx)
                .await
                .map_err(db_err)?;
                a
            }
        };
        let change = (
            before.as_ref().map(RoleAssignment::to_audit_json),
            Some(after.to_audit_json()),
        );
        m.finish(actions::ROLE_ASSIGN, EntityRef::user(user), change)
            .await?;
        Ok((after, before.is_none()))
    }

    async fn unassign_role(
        &self,
        tenant: TenantId,
        user: UserId,
        role: RoleId,
        ctx: &AuditContext,
    ) -> domain::Result<RoleAssignment> {
        let now = now();
        let mut m = Mutation::begin(&self.writer, tenant, ctx, now).await?;
        let a = find_assignment(&mut m.tx, tenant, user, role)
            .await?
            .ok_or(Error::NotFound {
                entity: "role_assignment",
            })?;
        if role == SUPER_ADMIN_ROLE_ID {
            check_not_last_super_admin(&mut m.tx, tenant, user, now).await?;
        }
        execute_by(
            &mut *m.tx,
            "DELETE FROM user_roles WHERE tenant_id = ? AND user_id = ? AND role_id = ?",
            &[tenant.into_uuid(), user.into_uuid(), role.into_uuid()],
        )
        .await?;
        let before = Some(a.to_audit_json());
        m.finish(
            actions::ROLE_UNASSIGN,
            EntityRef::user(user),
            (before, None),
        )
        .await?;
        Ok(a)
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

    async fn create_group(
        &self,
        tenant: TenantId,
        new: NewGroup,
        ctx: &AuditContext,
    ) -> domain::Result<Group> {
        let now = now();
        let g = new.into_group(tenant, now);
        let mut m = Mutation::begin(&self.writer, tenant, ctx, now).await?;
        ensure_tenant(&mut m.tx, tenant).await?;
        GROUPS.check_name_free(&mut m.tx, tenant, &g.name).await?;
        check_parent(&mut m.tx, tenant, g.id, g.parent_id).await?;
        sqlx::query(
            "INSERT INTO groups (id, tenant_id, name, display_name, description, group_type, \
             parent_id, max_members, active, settings, created_at, updated_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(g.id.into_uuid())
        .bind(tenant.into_uuid())
        .bind(&g.name)
        .bind(&g.display_name)
        .bind(&g.description)
        .bind(g.group_type.as_str())
        .bind(g.parent_id.map(GroupId::into_uuid))
        .bind(g.max_members)
        .bind(g.active)
        .bind(object_text(&g.settings))
        .bind(to_micros(now))
        .bind(to_micros(now))
        .execute(&mut *m.tx)
        .await
        .map_err(db_err)?;
        let after = Some(g.to_audit_json());
        m.finish(actions::GROUP_CREATE, EntityRef::group(g.id), (None, after))
            .await?;
        Ok(g)
    }

    async fn update_group(
        &self,
        tenant: TenantId,
        id: GroupId,
        patch: GroupPatch,
        ctx: &AuditContext,
    ) -> domain::Result<Group> {
        let now = now();
        let mut m = Mutation::begin(&self.writer, tenant, ctx, now).await?;
        let before = GROUPS.load(&mut m.tx, tenant, id).await?;
        let after = patch.apply(&before, now);
        if after.name != before.name {
            GROUPS
                .check_name_free(&mut m.tx, tenant, &after.name)
                .await?;
        }
        if after.parent_id != before.parent_id {
            check_parent(&mut m.tx, tenant, id, after.parent_id).await?;
        }
        write_group(&mut m.tx, &after).await?;
        let change = (Some(before.to_audit_json()), Some(after.to_audit_json()));
        m.finish(actions::GROUP_UPDATE, EntityRef::group(id), change)
            .await?;
        Ok(after)
    }

    async fn delete_group(
        &self,
        tenant: TenantId,
        id: GroupId,
        ctx: &AuditContext,
    ) -> domain::Result<Group> {
        let mut m = Mutation::begin(&self.writer, tenant, ctx, now()).await?;
        let g = GROUPS.load(&mut m.tx, tenant, id).await?;
        let ids = [tenant.into_uuid(), id.into_uuid()];
        let children = "SELECT 1 FROM groups WHERE tenant_id = ? AND parent_id = ?";
        if exists_by(&mut *m.tx, children, &ids).await? {
            return Err(Error::refused(Code::GroupHasChildren));
        }
        // Its memberships and role grants go with it (ON DELETE CASCADE).
        execute_by(
            &mut *m.tx,
            "DELETE FROM groups WHERE tenant_id = ? AND id = ?",
            &ids,
        )
        .await?;
        let before = Some(g.to_audit_json());
        m.finish(actions::GROUP_DELETE, EntityRef::group(id), (before, None))
            .await?;
        Ok(g)
    }

    async fn list_group_members(
        &self,
        tenant: TenantId,
        group: GroupId,
    ) -> domain::Result<Vec<GroupMember>> {
        let mut tx = self.reader.begin().await.map_err(db_err)?;
        GROUPS.load(&mut tx, tenant, group).await?;
        // Members added together share their join time: they follow the order they were
        // added in (the row id).
        let sql = format!(
            "{MEMBER_SELECT} WHERE m.tenant_id = ? AND m.group_id = ? \
             ORDER BY m.joined_at, m.rowid"
        );
        let ids = [tenant.into_uuid(), group.into_uuid()];
        let members = list_by(&mut *tx, &sql, &ids, member_from_row).await?;
        tx.commit().await.map_err(db_err)?;
        Ok(members)
    }

    async fn add_group_members(
        &self,
        tenant: TenantId,
        group: GroupId,
        users: Vec<UserId>,
        role_in_group: GroupMemberRole,
        ctx: &AuditContext,
    ) -> domain::Result<Vec<MemberAddResult>> {
        let now = now();
        let mut m = Mutation::begin(&self.writer, tenant, ctx, now).await?;
        let g = GROUPS.load(&mut m.tx, tenant, group).await?;
        let mut count = count_members(&mut m.tx, tenant, group).await?;
        let mut results = Vec::with_capacity(users.len());
        // Each item is checked before it is written, so that a refused one writes nothing
        // and the others stand.
        for user in users {
            let outcome = if !live_user_exists(&mut m.tx, tenant, user).await? {
                Err(MemberAddFailure::UserNotFound)
            } else if find_member(&mut m.tx, tenant, group, user).await?.is_some() {
                Err(MemberAddFailure::AlreadyMember)
            } else if g.max_members.is_some_and(|max| count >= i64::from(max)) {
                Err(MemberAddFailure::GroupFull)
            } else {
                sqlx::query(
                    "INSERT INTO group_members (tenant_id, group_id, user_id, role_in_group, \
                     joined_at, added_by_type, added_by) VALUES (?, ?, ?, ?, ?, ?, ?)",
                )
                .bind(tenant.into_uuid())
                .bind(group.into_uuid())
                .bind(user.into_uuid())
                .bind(role_in_group.as_str())
                .bind(to_micros(now))
                .bind(ctx.actor.actor_type().as_str())
                .bind(ctx.actor.id())
                .execute(&mut *m.tx)
                .await
                .map_err(db_err)?;
                count += 1;
                let member = find_member(&mut m.tx, tenant, group, user)
                    .await?
                    .ok_or_else(|| Error::internal("a membership just written is missing"))?;
                let after = Some(member.to_audit_json());
                m.audit(
                    actions::GROUP_MEMBER_ADD,
                    EntityRef::group(group),
                    (None, after),
                )
                .await?;
                Ok(member)
            };
            results.push(MemberAddResult {
                user_id: user,
                outcome,
            });
        }
        if results.iter().any(|r| r.outcome.is_ok()) {
            m.commit().await?;
        } else {
            // Nothing changed: the version stays as it was.
            m.tx.commit().await.map_err(db_err)?;
        }
        Ok(results)
    }

    async fn update_group_member(
        &self,
        tenant: TenantId,
        group: GroupId,
        user: UserId,
        role_in_group: GroupMemberRole,
        ctx: &AuditContext,
    ) -> domain::Result<GroupMember> {
        let mut m = Mutation::begin(&self.writer, tenant, ctx, now()).await?;
        let before = load_member(&mut m.tx, tenant, group, user).await?;
        sqlx::query(
            "UPDATE group_members SET role_in_group = ? \
             WHERE tenant_id = ? AND group_id = ? AND user_id = ?",
        )
        .bind(role_in_group.as_str())
        .bind(tenant.into_uuid())
        .bind(group.into_uuid())
        .bind(user.into_uuid())
        .execute(&mut *m.tx)
        .await
        .map_err(db_err)?;
        let after = GroupMember {
            role_in_group,
            ..before.clone()
        };
        let change = (Some(before.to_audit_json()), Some(after.to_audit_json()));
        m.finish(
            actions::GROUP_MEMBER_UPDATE,
            EntityRef::group(group),
            change,
        )
        .await?;
        Ok(after)
    }

    async fn remove_group_member(
        &self,
        tenant: TenantId,
        group: GroupId,
        user: UserId,
        ctx: &AuditContext,
    ) -> domain::Result<GroupMember> {
        let mut m = Mutation::begin(&self.writer, tenant, ctx, now()).await?;
        let member = load_member(&mut m.tx, tenant, group, user).await?;
        execute_by(
            &mut *m.tx,
            "DELETE FROM group_members WHERE tenant_id = ? AND group_id = ? AND user_id = ?",
            &[tenant.into_uuid(), group.into_uuid(), user.into_uuid()],
        )
        .await?;
        let before = Some(member.to_audit_json());
        m.finish(
            actions::GROUP_MEMBER_REMOVE,
            EntityRef::group(group),
            (before, None),
        )
        .await?;
        Ok(member)
    }

    async fn available_users(
        &self,
        tenant: TenantId,
        group: GroupId,
        q: &AvailableUsersQuery,
    ) -> domain::Result<Vec<User>> {
        let search = match &q.search {
            Some(terms) => Some(self.search_plan(terms).await?),
            None => None,
        };
        let mut tx = self.reader.begin().await.map_err(db_err)?;
        GROUPS.load(&mut tx, tenant, group).await?;
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
        GROUPS.load(&mut tx, tenant, group).await?;
        let roles = group_roles(&mut tx, tenant, group).await?;
        tx.commit().await.map_err(db_err)?;
        Ok(roles)
    }

    async fn grant_group_role(
        &self,
        tenant: TenantId,
        group: GroupId,
        role: RoleId,
        ctx: &AuditContext,
    ) -> domain::Result<Role> {
        let now = now();
        let mut m = Mutation::begin(&self.writer, tenant, ctx, now).await?;
        GROUPS.load(&mut m.tx, tenant, group).await?;
        let r = find_role(&mut m.tx, tenant, role)
            .await?
            .ok_or_else(unknown_role)?;
        let inserted = sqlx::query(
            "INSERT INTO group_roles (tenant_id, group_id, role_id, granted_at) \
             VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
        )
        .bind(tenant.into_uuid())
        .bind(group.into_uuid())
        .bind(role.into_uuid())
        .bind(to_micros(now))
        .execute(&mut *m.tx)
        .await
        .map_err(db_err)?
        .rows_affected();
        if inserted == 0 {
            return Err(Error::refused_field(Code::AlreadyGranted, "role_id"));
        }
        let after = Some(group_role_json(&r));
        m.finish(
            actions::GROUP_ROLE_GRANT,
            EntityRef::group(group),
            (None, after),
        )
        .await?;
        Ok(r)
    }

    async fn revoke_group_role(
        &self,
        tenant: TenantId,
        group: GroupId,
        role: RoleId,
        ctx: &AuditContext,
    ) -> domain::Result<Role> {
        let mut m = Mutation::begin(&self.writer, tenant, ctx, now()).await?;
        GROUPS.load(&mut m.tx, tenant, group).await?;
        let not_granted = Error::NotFound {
            entity: "group_role",
        };
        let Some(r) = find_role(&mut m.tx, tenant, role).await? else {
            return Err(not_granted);
        };
        let removed = execute_by(
            &mut *m.tx,
            "DELETE FROM group_roles WHERE tenant_id = ? AND group_id = ? AND role_id = ?",
            &[tenant.into_uuid(), group.into_uuid(), role.into_uuid()],
        )
        .await?;
        if removed == 0 {
            return Err(not_granted);
        }
        let before = Some(group_role_json(&r));
        m.finish(
            actions::GROUP_ROLE_REVOKE,
            EntityRef::group(group),
            (before, None),
        )
        .await?;
        Ok(r)
    }

    // --- policies ---

    async fn list_policies(&self, tenant: TenantId) -> domain::Result<Vec<Policy>> {
        let sql = format!("SELECT {POLICY_COLS} FROM policies WHERE tenant_id = ? ORDER BY name");
        list_by(&self.reader, &sql, &[tenant.into_uuid()], policy_from_row).await
    }

    async fn get_policy(&self, tenant: TenantId, id: PolicyId) -> domain::Result<Policy> {
        let mut conn = self.reader.acquire().await.map_err(db_err)?;
        POLICIES.load(&mut conn, tenant, id).await
    }

    async fn create_policy(
        &self,
        tenant: TenantId,
        new: NewPolicy,
        ctx: &AuditContext,
    ) -> domain::Result<Policy> {
        let now = now();
        let p = new.into_policy(tenant, now);
        let mut m = Mutation::begin(&self.writer, tenant, ctx, now).await?;
        ensure_tenant(&mut m.tx, tenant).await?;
        POLICIES.check_name_free(&mut m.tx, tenant, &p.name).await?;
        sqlx::query(
            "INSERT INTO policies (id, tenant_id, name, description, effect, source, active, \
             version, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(p.id.into_uuid())
        .bind(tenant.into_uuid())
        .bind(&p.name)
        .bind(&p.description)
        .bind(p.effect.as_str())
        .bind(&p.source)
        .bind(p.active)
        .bind(p.version)
        .bind(to_micros(now))
        .bind(to_micros(now))
        .execute(&mut *m.tx)
        .await
        .map_err(db_err)?;
        insert_policy_version(&mut m.tx, &p, ctx).await?;
        let after = Some(p.to_audit_json());
        m.finish(
            actions::POLICY_CREATE,
            EntityRef::policy(p.id),
            (None, after),
        )
        .await?;
        Ok(p)
    }

    async fn update_policy(
        &self,
        tenant: TenantId,
        id: PolicyId,
        patch: PolicyPatch,
        expected_version: Option<i64>,
        ctx: &AuditContext,
    ) -> domain::Result<Policy> {
        let now = now();
        let mut m = Mutation::begin(&self.writer, tenant, ctx, now).await?;
        let before = POLICIES.load(&mut m.tx, tenant, id).await?;
        if let Some(expected) = expected_version {
            if expected != before.version {
                return Err(Error::PreconditionFailed {
                    entity: "policy",
                    expected,
                    current: before.version,
                });
            }
        }
        let after = patch.apply(&before, now);
        if after.name != before.name {
            POLICIES
                .check_name_free(&mut m.tx, tenant, &after.name)
                .await?;
        }
        sqlx::query(
            "UPDATE policies SET name = ?, description = ?, effect = ?, source = ?, \
             active = ?, version = ?, updated_at = ? WHERE tenant_id = ? AND id = ?",
        )
        .bind(&after.name)
        .bind(&after.description)
        .bind(after.effect.as_str())
        .bind(&after.source)
        .bind(after.active)
        .bind(after.version)
        .bind(to_micros(now))
        .bind(tenant.into_uuid())
        .bind(id.into_uuid())
        .execute(&mut *m.tx)
        .await
        .map_err(db_err)?;
        insert_policy_version(&mut m.tx, &after, ctx).await?;
        let change = (Some(before.to_audit_json()), Some(after.to_audit_json()));
        m.finish(actions::POLICY_UPDATE, EntityRef::policy(id), change)
            .await?;
        Ok(after)
    }

    async fn delete_policy(
        &self,
        tenant: TenantId,
        id: PolicyId,
        ctx: &AuditContext,
    ) -> domain::Result<Policy> {
        let mut m = Mutation::begin(&self.writer, tenant, ctx, now()).await?;
        let p = POLICIES.load(&mut m.tx, tenant, id).await?;
        // Its history goes with it (ON DELETE CASCADE); the audit trail keeps the policy.
        let ids = [tenant.into_uuid(), id.into_uuid()];
        execute_by(
            &mut *m.tx,
            "DELETE FROM policies WHERE tenant_id = ? AND id = ?",
            &ids,
        )
        .await?;
        let before = Some(p.to_audit_json());
        m.finish(
            actions::POLICY_DELETE,
            EntityRef::policy(id),
            (before, None),
        )
        .await?;
        Ok(p)
    }

    async fn list_policy_versions(
        &self,
        tenant: TenantId,
        id: PolicyId,
    ) -> domain::Result<Vec<PolicyVersion>> {
        let mut tx = self.reader.begin().await.map_err(db_err)?;
        POLICIES.load(&mut tx, tenant, id).await?;
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
