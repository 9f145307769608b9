//! Authorization storage ([`AuthzStore`]): the tenant's own permissions, roles and their
//! permissions, direct role assignments, nested groups with their members and roles, Cedar
//! policies with their history, and what the decision engine loads.
//!
//! Every change starts by incrementing the tenant's `authz_versions` row ([`bump_version`]),
//! which keeps that row locked until the commit: the authorization writes of a tenant (and
//! user updates, deletions and restorations, which bump it too) are serialised, so that the
//! checks they make (parent and cycle, member counts, the last super administrator) cannot
//! be overtaken, and plain reads suffice for them. Changes that can take the super
//! administrator role from its last holder also take [`lock_super_admins`], a platform-wide
//! advisory lock: holders live in every tenant.
//!
//! Lock order: the tenant's version row, the super administrator lock, then rows (the
//! tenant's quota, users, ...).

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use domain::audit::{actions, AuditContext, AuditEvent, EntityRef};
use domain::authz::{
    check_deletable, default_roles, is_built_in, refuse_super_admin, AvailableUsersQuery,
    DefaultRole, Group, GroupMember, GroupMemberRole, GroupNode, GroupPatch, GroupSummary,
    MemberAddFailure, MemberAddResult, NewGroup, NewPermission, NewPolicy, NewRole, Permission,
    PermissionKey, Policy, PolicyPatch, PolicyVersion, PrincipalData, Role, RoleAssignment,
    RolePatch, RoleType, TenantAuthzData, SUPER_ADMIN_ROLE_ID, SUPER_ADMIN_ROLE_NAME, USER_ROLE,
};
use domain::authz_store::AuthzStore;
use domain::users::{User, UserStatus};
use domain::values::Description;
use domain::Code;
use domain::{Error, FieldError, GroupId, PolicyId, Result, RoleId, TenantId, Timestamp, UserId};
use serde_json::{json, Value};
use sqlx::postgres::{PgArguments, PgExecutor, PgPool, PgRow};
use sqlx::query::Query;
use sqlx::types::Json;
use sqlx::{PgConnection, Postgres, QueryBuilder, Row, Transaction};
use uuid::Uuid;

use crate::error::{conflict, db, role_name_taken, unknown_group, unknown_role, write};
use crate::rows::{
    self, search_tsquery, ASSIGNMENT_COLUMNS, GROUP_COLUMNS, GROUP_SUMMARY_COLUMNS, MEMBER_COLUMNS,
    PERMISSION_COLUMNS, POLICY_COLUMNS, POLICY_VERSION_COLUMNS, ROLE_COLUMNS, USER_COLUMNS,
};
use crate::{audit, PgStore};

/// The key of the transaction-scoped advisory lock that serialises, platform-wide, the
/// changes that can take the super administrator role from a holder ("PCSA").
const SUPER_ADMIN_LOCK: i64 = 0x5043_5341;

/// The key of the advisory lock under which `migrate` backfills default roles ("PCDR").
const BACKFILL_LOCK: i64 = 0x5043_4452;

/// How deep `load_principal` follows the manager chain.
const MAX_MANAGER_DEPTH: i32 = 64;

fn group_not_found() -> Error {
    Error::NotFound { entity: "group" }
}

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

/// Refuses to let `user` stop holding the super administrator role (by losing it, being
/// deleted or leaving the active status) when they are its last holder: the last active,
/// non-deleted user of the platform with a current direct assignment. The caller holds
/// [`lock_super_admins`] and has not yet written the change.
pub(crate) async fn check_not_last_super_admin(
    conn: &mut PgConnection,
    tenant: TenantId,
    user: UserId,
    now: Timestamp,
) -> Result<()> {
    let row = sqlx::query(
        "SELECT EXISTS (SELECT 1 FROM user_roles a JOIN users u ON u.id = a.user_id \
           WHERE a.tenant_id = $1 AND a.user_id = $2 AND a.role_id = $3 \
             AND (a.expires_at IS NULL OR a.expires_at > $4) \
             AND u.status = 'active' AND u.deleted_at IS NULL) AS holder, \
         EXISTS (SELECT 1 FROM user_roles a JOIN users u ON u.id = a.user_id \
           WHERE a.role_id = $3 AND (a.expires_at IS NULL OR a.expires_at > $4) \
             AND u.status = 'active' AND u.deleted_at IS NULL \
             AND NOT (a.tenant_id = $1 AND a.user_id = $2)) AS others",
    )
    .bind(tenant.into_uuid())
    .bind(user.into_uuid())
    .bind(SUPER_ADMIN_ROLE_ID.into_uuid())
    .bind(now)
    .fetch_one(conn)
    .await
    .map_err(db)?;
    let holder: bool = row.try_get("holder").map_err(db)?;
    let others: bool = row.try_get("others").map_err(db)?;
    if holder && !others {
        return Err(conflict(Code::LastSuperAdmin, None));
    }
    Ok(())
}

/// Guards a change of `before` (a user row the caller locked) to `after_status` or to
/// deleted: a user who is active now and will not be afterwards may be the last super
/// administrator.
pub(crate) async fn guard_super_admin_loss(
    conn: &mut PgConnection,
    before: &User,
    stays_active: bool,
    now: Timestamp,
) -> Result<()> {
    if before.status == UserStatus::Active && !before.is_deleted() && !stays_active {
        lock_super_admins(conn).await?;
        check_not_last_super_admin(conn, before.tenant_id, before.id, now).await?;
    }
    Ok(())
}

fn default_role(tenant: TenantId, d: DefaultRole, now: Timestamp) -> Role {
    Role {
        id: RoleId::new(),
        tenant_id: Some(tenant),
        name: d.name.to_owned(),
        display_name: d.display_name.to_owned(),
        description: Some(d.description.to_owned()),
        role_type: RoleType::System,
        priority: d.priority,
        active: true,
        permissions: d.permissions,
        created_at: now,
        updated_at: now,
    }
}

/// Creates the default roles of a new tenant, in the caller's transaction, at version 0.
pub(crate) async fn seed_tenant(
    conn: &mut PgConnection,
    tenant: TenantId,
    now: Timestamp,
) -> Result<()> {
    sqlx::query("INSERT INTO authz_versions (tenant_id, version) VALUES ($1, 0)")
        .bind(tenant.into_uuid())
        .execute(&mut *conn)
        .await
        .map_err(write)?;
    for d in default_roles() {
        insert_role(conn, &default_role(tenant, d, now)).await?;
    }
    Ok(())
}

/// Gives `users` (new users of `tenant`) the tenant's `user` role, in the caller's
/// transaction, in one statement.
pub(crate) async fn give_user_role(
    conn: &mut PgConnection,
    tenant: TenantId,
    users: &[Uuid],
    now: Timestamp,
) -> Result<()> {
    if users.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO user_roles (tenant_id, user_id, role_id, assigned_by_type, assigned_by, \
         assigned_at, expires_at) \
         SELECT $1, u.id, r.id, 'system', NULL, $4, NULL \
         FROM roles r CROSS JOIN UNNEST($2::uuid[]) AS u (id) \
         WHERE r.tenant_id = $1 AND r.name = $3 \
         ON CONFLICT (tenant_id, user_id, role_id) DO NOTHING",
    )
    .bind(tenant.into_uuid())
    .bind(users)
    .bind(USER_ROLE)
    .bind(now)
    .execute(conn)
    .await
    .map_err(write)?;
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
        let role = default_role(tenant, d, now);
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

// ------------------------------------------------------------------------------------------
// Statements keyed by ids alone (most of them here), and the transaction of a change
// ------------------------------------------------------------------------------------------

/// `sql` with `ids` bound to `$1`, `$2`, ... in order.
fn keyed<'q>(sql: &'q str, ids: &[Uuid]) -> Query<'q, Postgres, PgArguments> {
    ids.iter().fold(sqlx::query(sql), |q, id| q.bind(*id))
}

/// The row `sql` selects by `ids`, read by `from_row`.
async fn find_by<'c, T>(
    conn: impl PgExecutor<'c>,
    sql: &str,
    ids: &[Uuid],
    from_row: fn(&PgRow) -> Result<T>,
) -> Result<Option<T>> {
    let row = keyed(sql, ids).fetch_optional(conn).await.map_err(db)?;
    row.as_ref().map(from_row).transpose()
}

/// The rows `sql` selects by `ids`, read by `from_row`.
async fn list_by<'c, T>(
    conn: impl PgExecutor<'c>,
    sql: &str,
    ids: &[Uuid],
    from_row: fn(&PgRow) -> Result<T>,
) -> Result<Vec<T>> {
    let rows = keyed(sql, ids).fetch_all(conn).await.map_err(db)?;
    rows.iter().map(from_row).collect()
}

/// Runs the write `sql` by `ids`; the number of rows it changed.
async fn execute_by<'c>(conn: impl PgExecutor<'c>, sql: &str, ids: &[Uuid]) -> Result<u64> {
    let done = keyed(sql, ids).execute(conn).await.map_err(db)?;
    Ok(done.rows_affected())
}

/// A table of the tenant's entities, with what their lookups by id need.
struct Entities<T> {
    /// The table, with the alias its columns name.
    from: &'static str,
    cols: &'static str,
    /// The entity as `NotFound` names it.
    entity: &'static str,
    from_row: fn(&PgRow) -> Result<T>,
}

impl<T> Entities<T> {
    /// The tenant's entity with this id.
    async fn find(
        &self,
        conn: &mut PgConnection,
        tenant: TenantId,
        id: impl Into<Uuid>,
    ) -> Result<Option<T>> {
        let sql = format!(
            "SELECT {} FROM {} WHERE tenant_id = $1 AND id = $2",
            self.cols, self.from
        );
        find_by(conn, &sql, &[tenant.into_uuid(), id.into()], self.from_row).await
    }

    /// The tenant's entity with this id, else `NotFound`.
    async fn load(
        &self,
        conn: &mut PgConnection,
        tenant: TenantId,
        id: impl Into<Uuid>,
    ) -> Result<T> {
        self.find(conn, tenant, id).await?.ok_or(Error::NotFound {
            entity: self.entity,
        })
    }
}

/// A change of the tenant's authorization data in progress: its transaction, which began
/// with [`bump_version`], and who makes the change and when, as its audit events record
/// them.
struct Mutation<'a> {
    tx: Transaction<'static, Postgres>,
    tenant: TenantId,
    ctx: &'a AuditContext,
    now: Timestamp,
}

impl<'a> Mutation<'a> {
    async fn begin(
        pool: &PgPool,
        tenant: TenantId,
        ctx: &'a AuditContext,
        now: Timestamp,
    ) -> Result<Self> {
        let mut tx = pool.begin().await.map_err(db)?;
        bump_version(&mut tx, tenant).await?;
        Ok(Mutation {
            tx,
            tenant,
            ctx,
            now,
        })
    }

    /// An audit event of the change.
    fn event(
        &self,
        action: &str,
        entity: EntityRef,
        change: (Option<Value>, Option<Value>),
    ) -> AuditEvent {
        AuditEvent::record(self.ctx, self.tenant, action, entity, change, self.now)
    }

    /// Records `events` and commits.
    async fn commit(mut self, events: &[AuditEvent]) -> Result<()> {
        audit::insert_all(&mut self.tx, events).await?;
        self.tx.commit().await.map_err(db)
    }

    /// Records the one audit event of the change and commits.
    async fn finish(
        self,
        action: &str,
        entity: EntityRef,
        change: (Option<Value>, Option<Value>),
    ) -> Result<()> {
        let ev = self.event(action, entity, change);
        self.commit(&[ev]).await
    }
}

// ------------------------------------------------------------------------------------------
// Roles and permissions
// ------------------------------------------------------------------------------------------

/// Highest priority first, then by name.
fn sort_roles(roles: &mut [Role]) {
    roles.sort_by(|a, b| {
        b.priority
            .cmp(&a.priority)
            .then_with(|| a.name.cmp(&b.name))
    });
}

/// The permissions as three parallel arrays (resource, action, scope), for `UNNEST`.
fn permission_arrays(keys: &[PermissionKey]) -> (Vec<&str>, Vec<&str>, Vec<&str>) {
    (
        keys.iter().map(PermissionKey::resource).collect(),
        keys.iter().map(PermissionKey::action).collect(),
        keys.iter().map(|k| k.scope().as_str()).collect(),
    )
}

async fn insert_role_permissions(
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
async fn insert_role(conn: &mut PgConnection, r: &Role) -> Result<()> {
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
async fn fetch_role(conn: &mut PgConnection, tenant: TenantId, id: RoleId) -> Result<Option<Role>> {
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
async fn load_role(conn: &mut PgConnection, tenant: TenantId, id: RoleId) -> Result<Role> {
    fetch_role(conn, tenant, id)
        .await?
        .ok_or(Error::NotFound { entity: "role" })
}

/// The tenant's roles and the super administrator role, by priority then name.
async fn fetch_roles(conn: &mut PgConnection, tenant: TenantId) -> Result<Vec<Role>> {
    let sql = format!("SELECT {ROLE_COLUMNS} FROM roles r WHERE r.tenant_id = $1 OR r.id = $2");
    let ids = [tenant.into_uuid(), SUPER_ADMIN_ROLE_ID.into_uuid()];
    let mut roles = list_by(conn, &sql, &ids, rows::role).await?;
    sort_roles(&mut roles);
    Ok(roles)
}

/// Refuses a tenant role named like the super administrator role, which every tenant lists.
fn check_role_name(name: &str) -> Result<()> {
    if name == SUPER_ADMIN_ROLE_NAME {
        return Err(role_name_taken());
    }
    Ok(())
}

/// Refuses permissions that are neither built in nor defined by the tenant, naming each
/// under `field`.
async fn check_permissions_exist(
    conn: &mut PgConnection,
    tenant: TenantId,
    keys: &[PermissionKey],
    field: &str,
) -> Result<()> {
    let custom: Vec<PermissionKey> = keys
        .iter()
        .filter(|k| !is_built_in(k.resource(), k.action()))
        .cloned()
        .collect();
    if custom.is_empty() {
        return Ok(());
    }
    let (resources, actions, scopes) = permission_arrays(&custom);
    let found: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT p.resource, p.action, p.scope FROM permissions p \
         JOIN UNNEST($2::text[], $3::text[], $4::text[]) AS k (resource, action, scope) \
           ON p.resource = k.resource AND p.action = k.action AND p.scope = k.scope \
         WHERE p.tenant_id = $1",
    )
    .bind(tenant.into_uuid())
    .bind(&resources)
    .bind(&actions)
    .bind(&scopes)
    .fetch_all(conn)
    .await
    .map_err(db)?;
    let found: HashSet<(String, String, String)> = found.into_iter().collect();
    let mut unknown: Vec<FieldError> = Vec::new();
    let mut seen = HashSet::new();
    for k in &custom {
        let stored = (
            k.resource().to_owned(),
            k.action().to_owned(),
            k.scope().as_str().to_owned(),
        );
        if !found.contains(&stored) && seen.insert(k.clone()) {
            unknown.push(FieldError::new(
                field,
                "unknown_permission",
                format!("'{k}' is neither built in nor defined by the tenant"),
            ));
        }
    }
    if unknown.is_empty() {
        Ok(())
    } else {
        Err(Error::Validation(unknown))
    }
}

async fn write_role(conn: &mut PgConnection, r: &Role) -> Result<()> {
    sqlx::query(
        "UPDATE roles SET name = $2, display_name = $3, description = $4, priority = $5, \
         active = $6, updated_at = $7 WHERE id = $1",
    )
    .bind(r.id.into_uuid())
    .bind(&r.name)
    .bind(&r.display_name)
    .bind(r.description.as_deref())
    .bind(r.priority)
    .bind(r.active)
    .bind(r.updated_at)
    .execute(conn)
    .await
    .map_err(write)?;
    Ok(())
}

// ------------------------------------------------------------------------------------------
// Assignments
// ------------------------------------------------------------------------------------------

/// Whether the tenant has the user; `live`: and the user is not deleted.
async fn user_exists(
    conn: &mut PgConnection,
    tenant: TenantId,
    user: UserId,
    live: bool,
) -> Result<bool> {
    let sql = if live {
        "SELECT EXISTS (SELECT 1 FROM users WHERE tenant_id = $1 AND id = $2 \
         AND deleted_at IS NULL)"
    } else {
        "SELECT EXISTS (SELECT 1 FROM users WHERE tenant_id = $1 AND id = $2)"
    };
    sqlx::query_scalar(sql)
        .bind(tenant.into_uuid())
        .bind(user.into_uuid())
        .fetch_one(conn)
        .await
        .map_err(db)
}

async fn fetch_assignment(
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

const GROUPS: Entities<Group> = Entities {
    from: "groups g",
    cols: GROUP_COLUMNS,
    entity: "group",
    from_row: rows::group,
};

/// Checks a new parent for `group` (None for a group being created): a group of the tenant
/// that does not descend from `group`.
async fn check_parent(
    conn: &mut PgConnection,
    tenant: TenantId,
    group: Option<GroupId>,
    parent: GroupId,
) -> Result<()> {
    if GROUPS.find(conn, tenant, parent).await?.is_none() {
        return Err(unknown_group());
    }
    let Some(group) = group else {
        return Ok(());
    };
    // Walks up from the new parent; UNION (not UNION ALL) ends the walk even on a cycle.
    let cycle: bool = sqlx::query_scalar(
        "WITH RECURSIVE up (id, parent_id) AS ( \
             SELECT id, parent_id FROM groups WHERE tenant_id = $1 AND id = $2 \
           UNION \
             SELECT g.id, g.parent_id FROM up JOIN groups g ON g.tenant_id = $1 AND g.id = up.parent_id \
         ) \
         SELECT EXISTS (SELECT 1 FROM up WHERE id = $3)",
    )
    .bind(tenant.into_uuid())
    .bind(parent.into_uuid())
    .bind(group.into_uuid())
    .fetch_one(conn)
    .await
    .map_err(db)?;
    if cycle {
        return Err(Error::field(
            "parent_id",
            "cycle",
            "the group would become its own ancestor",
        ));
    }
    Ok(())
}

async fn fetch_member(
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

/// A member of a group of the tenant: `NotFound` group, else `NotFound` group_member.
async fn load_member(
    conn: &mut PgConnection,
    tenant: TenantId,
    group: GroupId,
    user: UserId,
) -> Result<GroupMember> {
    GROUPS.load(conn, tenant, group).await?;
    fetch_member(conn, tenant, group, user)
        .await?
        .ok_or(Error::NotFound {
            entity: "group_member",
        })
}

fn group_role_json(role: &Role) -> Value {
    json!({ "role_id": role.id, "role_name": role.name })
}

/// A user who may be added to a group, as a member row shows them.
struct Candidate {
    email: String,
    full_name: String,
    department: Option<String>,
    job_title: Option<String>,
    status: UserStatus,
}

// ------------------------------------------------------------------------------------------
// Policies
// ------------------------------------------------------------------------------------------

const POLICIES: Entities<Policy> = Entities {
    from: "policies",
    cols: POLICY_COLUMNS,
    entity: "policy",
    from_row: rows::policy,
};

/// Records `p` as it is now in its history.
async fn insert_policy_version(
    conn: &mut PgConnection,
    p: &Policy,
    ctx: &AuditContext,
    now: Timestamp,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO policy_versions (policy_id, version, tenant_id, name, effect, source, \
         active, changed_at, changed_by_type, changed_by) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(p.id.into_uuid())
    .bind(p.version)
    .bind(p.tenant_id.into_uuid())
    .bind(&p.name)
    .bind(p.effect.as_str())
    .bind(&p.source)
    .bind(p.active)
    .bind(now)
    .bind(ctx.actor.actor_type().as_str())
    .bind(ctx.actor.id())
    .execute(conn)
    .await
    .map_err(write)?;
    Ok(())
}

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

    async fn create_permission(
        &self,
        tenant: TenantId,
        new: NewPermission,
        ctx: &AuditContext,
    ) -> Result<Permission> {
        let now = domain::time::now();
        let key = new.key;
        let p = Permission {
            resource: key.resource().to_owned(),
            action: key.action().to_owned(),
            scope: key.scope(),
            permission: key,
            description: new
                .description
                .map(Description::into_inner)
                .unwrap_or_default(),
            built_in: false,
            created_at: Some(now),
        };
        let mut m = Mutation::begin(&self.pool, tenant, ctx, now).await?;
        sqlx::query(
            "INSERT INTO permissions (tenant_id, resource, action, scope, description, \
             created_at) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(tenant.into_uuid())
        .bind(&p.resource)
        .bind(&p.action)
        .bind(p.scope.as_str())
        .bind(&p.description)
        .bind(now)
        .execute(&mut *m.tx)
        .await
        .map_err(write)?;
        m.finish(
            actions::PERMISSION_CREATE,
            EntityRef::none("permission"),
            (None, serde_json::to_value(&p).ok()),
        )
        .await?;
        Ok(p)
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

    async fn create_role(
        &self,
        tenant: TenantId,
        new: NewRole,
        ctx: &AuditContext,
    ) -> Result<Role> {
        let now = domain::time::now();
        let role = new.into_role(tenant, RoleType::Custom, now);
        check_role_name(&role.name)?;
        let mut m = Mutation::begin(&self.pool, tenant, ctx, now).await?;
        check_permissions_exist(&mut m.tx, tenant, &role.permissions, "permissions").await?;
        insert_role(&mut m.tx, &role).await?;
        m.finish(
            actions::ROLE_CREATE,
            EntityRef::role(role.id),
            (None, Some(role.to_audit_json())),
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
    ) -> Result<Role> {
        let now = domain::time::now();
        let mut m = Mutation::begin(&self.pool, tenant, ctx, now).await?;
        let before = load_role(&mut m.tx, tenant, id).await?;
        let after = patch.apply(&before, now)?;
        if after.name != before.name {
            check_role_name(&after.name)?;
        }
        write_role(&mut m.tx, &after).await?;
        m.finish(
            actions::ROLE_UPDATE,
            EntityRef::role(id),
            (Some(before.to_audit_json()), Some(after.to_audit_json())),
        )
        .await?;
        Ok(after)
    }

    async fn delete_role(&self, tenant: TenantId, id: RoleId, ctx: &AuditContext) -> Result<Role> {
        let now = domain::time::now();
        let mut m = Mutation::begin(&self.pool, tenant, ctx, now).await?;
        let role = load_role(&mut m.tx, tenant, id).await?;
        check_deletable(&role)?;
        for sql in [
            "DELETE FROM user_roles WHERE tenant_id = $1 AND role_id = $2",
            "DELETE FROM group_roles WHERE tenant_id = $1 AND role_id = $2",
            // role_permissions go with the role (ON DELETE CASCADE).
            "DELETE FROM roles WHERE tenant_id = $1 AND id = $2",
        ] {
            execute_by(&mut *m.tx, sql, &[tenant.into_uuid(), id.into_uuid()]).await?;
        }
        m.finish(
            actions::ROLE_DELETE,
            EntityRef::role(id),
            (Some(role.to_audit_json()), None),
        )
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
    ) -> Result<Role> {
        let now = domain::time::now();
        let mut m = Mutation::begin(&self.pool, tenant, ctx, now).await?;
        let before = load_role(&mut m.tx, tenant, id).await?;
        refuse_super_admin(&before)?;
        check_permissions_exist(&mut m.tx, tenant, &add, "add").await?;
        insert_role_permissions(&mut m.tx, id, &add).await?;
        if !remove.is_empty() {
            let (resources, actions, scopes) = permission_arrays(&remove);
            sqlx::query(
                "DELETE FROM role_permissions p \
                 USING UNNEST($2::text[], $3::text[], $4::text[]) AS k (resource, action, scope) \
                 WHERE p.role_id = $1 AND p.resource = k.resource AND p.action = k.action \
                   AND p.scope = k.scope",
            )
            .bind(id.into_uuid())
            .bind(&resources)
            .bind(&actions)
            .bind(&scopes)
            .execute(&mut *m.tx)
            .await
            .map_err(db)?;
        }
        sqlx::query("UPDATE roles SET updated_at = $2 WHERE id = $1")
            .bind(id.into_uuid())
            .bind(now)
            .execute(&mut *m.tx)
            .await
            .map_err(db)?;
        let after = load_role(&mut m.tx, tenant, id).await?;
        m.finish(
            actions::ROLE_PERMISSIONS_UPDATE,
            EntityRef::role(id),
            (
                Some(json!({ "permissions": before.permissions })),
                Some(json!({ "permissions": after.permissions })),
            ),
        )
        .await?;
        Ok(after)
    }

    // --- assignments ---

    /// By role priority (highest first), then role name, like `list_roles`.
    async fn list_user_roles(&self, tenant: TenantId, user: UserId) -> Result<Vec<RoleAssignment>> {
        let mut conn = self.pool.acquire().await.map_err(db)?;
        if !user_exists(&mut conn, tenant, user, false).await? {
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

    async fn assign_role(
        &self,
        tenant: TenantId,
        user: UserId,
        role: RoleId,
        expires_at: Option<DateTime<Utc>>,
        ctx: &AuditContext,
    ) -> Result<(RoleAssignment, bool)> {
        let now = domain::time::now();
        let expires_at = expires_at.map(domain::time::truncate);
        let mut m = Mutation::begin(&self.pool, tenant, ctx, now).await?;
        if role == SUPER_ADMIN_ROLE_ID {
            lock_super_admins(&mut m.tx).await?;
        }
        if !user_exists(&mut m.tx, tenant, user, true).await? {
            return Err(Error::NotFound { entity: "user" });
        }
        let r = fetch_role(&mut m.tx, tenant, role)
            .await?
            .ok_or_else(unknown_role)?;
        let before = fetch_assignment(&mut m.tx, tenant, user, role).await?;
        let after = match &before {
            Some(a) => {
                sqlx::query(
                    "UPDATE user_roles SET expires_at = $4 \
                     WHERE tenant_id = $1 AND user_id = $2 AND role_id = $3",
                )
                .bind(tenant.into_uuid())
                .bind(user.into_uuid())
                .bind(role.into_uuid())
                .bind(expires_at)
                .execute(&mut *m.tx)
                .await
                .map_err(db)?;
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
                     assigned_by, assigned_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                )
                .bind(tenant.into_uuid())
                .bind(user.into_uuid())
                .bind(role.into_uuid())
                .bind(a.assigned_by_type.as_str())
                .bind(a.assigned_by)
                .bind(a.assigned_at)
                .bind(a.expires_at)
                .execute(&mut *m.tx)
                .await
                .map_err(write)?;
                a
            }
        };
        m.finish(
            actions::ROLE_ASSIGN,
            EntityRef::user(user),
            (
                before.as_ref().map(RoleAssignment::to_audit_json),
                Some(after.to_audit_json()),
            ),
        )
        .await?;
        Ok((after, before.is_none()))
    }

    async fn unassign_role(
        &self,
        tenant: TenantId,
        user: UserId,
        role: RoleId,
        ctx: &AuditContext,
    ) -> Result<RoleAssignment> {
        let now = domain::time::now();
        let mut m = Mutation::begin(&self.pool, tenant, ctx, now).await?;
        if role == SUPER_ADMIN_ROLE_ID {
            lock_super_admins(&mut m.tx).await?;
        }
        let before = fetch_assignment(&mut m.tx, tenant, user, role)
            .await?
            .ok_or(Error::NotFound {
                entity: "role_assignment",
            })?;
        if role == SUPER_ADMIN_ROLE_ID {
            check_not_last_super_admin(&mut m.tx, tenant, user, now).await?;
        }
        sqlx::query(
            "DELETE FROM user_roles WHERE tenant_id = $1 AND user_id = $2 AND role_id = $3",
        )
        .bind(tenant.into_uuid())
        .bind(user.into_uuid())
        .bind(role.into_uuid())
        .execute(&mut *m.tx)
        .await
        .map_err(db)?;
        m.finish(
            actions::ROLE_UNASSIGN,
            EntityRef::user(user),
            (Some(before.to_audit_json()), None),
        )
        .await?;
        Ok(before)
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
            .ok_or_else(group_not_found)
    }

    async fn create_group(
        &self,
        tenant: TenantId,
        new: NewGroup,
        ctx: &AuditContext,
    ) -> Result<Group> {
        let now = domain::time::now();
        let g = new.into_group(tenant, now);
        let mut m = Mutation::begin(&self.pool, tenant, ctx, now).await?;
        if let Some(parent) = g.parent_id {
            check_parent(&mut m.tx, tenant, None, parent).await?;
        }
        sqlx::query(
            "INSERT INTO groups (id, tenant_id, name, display_name, description, group_type, \
             parent_id, max_members, active, settings, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        )
        .bind(g.id.into_uuid())
        .bind(tenant.into_uuid())
        .bind(&g.name)
        .bind(&g.display_name)
        .bind(g.description.as_deref())
        .bind(g.group_type.as_str())
        .bind(g.parent_id.map(GroupId::into_uuid))
        .bind(g.max_members)
        .bind(g.active)
        .bind(Json(&g.settings))
        .bind(g.created_at)
        .bind(g.updated_at)
        .execute(&mut *m.tx)
        .await
        .map_err(write)?;
        m.finish(
            actions::GROUP_CREATE,
            EntityRef::group(g.id),
            (None, Some(g.to_audit_json())),
        )
        .await?;
        Ok(g)
    }

    async fn update_group(
        &self,
        tenant: TenantId,
        id: GroupId,
        patch: GroupPatch,
        ctx: &AuditContext,
    ) -> Result<Group> {
        let now = domain::time::now();
        let mut m = Mutation::begin(&self.pool, tenant, ctx, now).await?;
        let before = GROUPS.load(&mut m.tx, tenant, id).await?;
        let after = patch.apply(&before, now);
        if after.parent_id != before.parent_id {
            if let Some(parent) = after.parent_id {
                check_parent(&mut m.tx, tenant, Some(id), parent).await?;
            }
        }
        sqlx::query(
            "UPDATE groups SET name = $3, display_name = $4, description = $5, \
             group_type = $6, parent_id = $7, max_members = $8, active = $9, settings = $10, \
             updated_at = $11 WHERE tenant_id = $1 AND id = $2",
        )
        .bind(tenant.into_uuid())
        .bind(id.into_uuid())
        .bind(&after.name)
        .bind(&after.display_name)
        .bind(after.description.as_deref())
        .bind(after.group_type.as_str())
        .bind(after.parent_id.map(GroupId::into_uuid))
        .bind(after.max_members)
        .bind(after.active)
        .bind(Json(&after.settings))
        .bind(after.updated_at)
        .execute(&mut *m.tx)
        .await
        .map_err(write)?;
        m.finish(
            actions::GROUP_UPDATE,
            EntityRef::group(id),
            (Some(before.to_audit_json()), Some(after.to_audit_json())),
        )
        .await?;
        Ok(after)
    }

    async fn delete_group(
        &self,
        tenant: TenantId,
        id: GroupId,
        ctx: &AuditContext,
    ) -> Result<Group> {
        let now = domain::time::now();
        let mut m = Mutation::begin(&self.pool, tenant, ctx, now).await?;
        let group = GROUPS.load(&mut m.tx, tenant, id).await?;
        let has_children: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM groups WHERE tenant_id = $1 AND parent_id = $2)",
        )
        .bind(tenant.into_uuid())
        .bind(id.into_uuid())
        .fetch_one(&mut *m.tx)
        .await
        .map_err(db)?;
        if has_children {
            return Err(conflict(Code::GroupHasChildren, None));
        }
        for sql in [
            "DELETE FROM group_members WHERE tenant_id = $1 AND group_id = $2",
            "DELETE FROM group_roles WHERE tenant_id = $1 AND group_id = $2",
            "DELETE FROM groups WHERE tenant_id = $1 AND id = $2",
        ] {
            execute_by(&mut *m.tx, sql, &[tenant.into_uuid(), id.into_uuid()]).await?;
        }
        m.finish(
            actions::GROUP_DELETE,
            EntityRef::group(id),
            (Some(group.to_audit_json()), None),
        )
        .await?;
        Ok(group)
    }

    async fn list_group_members(
        &self,
        tenant: TenantId,
        group: GroupId,
    ) -> Result<Vec<GroupMember>> {
        let mut conn = self.pool.acquire().await.map_err(db)?;
        GROUPS.load(&mut conn, tenant, group).await?;
        let sql = format!(
            "SELECT {MEMBER_COLUMNS} FROM group_members m JOIN users u ON u.id = m.user_id \
             WHERE m.tenant_id = $1 AND m.group_id = $2 ORDER BY m.joined_at, m.user_id"
        );
        let ids = [tenant.into_uuid(), group.into_uuid()];
        list_by(&mut *conn, &sql, &ids, rows::member).await
    }

    async fn add_group_members(
        &self,
        tenant: TenantId,
        group: GroupId,
        users: Vec<UserId>,
        role_in_group: GroupMemberRole,
        ctx: &AuditContext,
    ) -> Result<Vec<MemberAddResult>> {
        let now = domain::time::now();
        let mut m = Mutation::begin(&self.pool, tenant, ctx, now).await?;
        let g = GROUPS.load(&mut m.tx, tenant, group).await?;
        // Every item is decided up front from three reads (the tenant's writes are
        // serialised, so nothing changes under them), then the additions are made in one
        // statement: a refused item never aborts the transaction.
        let mut ids: Vec<Uuid> = users.iter().map(|u| u.into_uuid()).collect();
        ids.sort_unstable();
        ids.dedup();
        // The ids are looked up by primary key first: with `tenant_id` beside them, a
        // planner misled by stale statistics (a tenant that just grew) walks the tenant's
        // index instead, every user of it.
        let rows = sqlx::query(
            "WITH c AS MATERIALIZED (SELECT id, tenant_id, email, full_name, department, \
               job_title, status, deleted_at FROM users WHERE id = ANY($2)) \
             SELECT id, email, full_name, department, job_title, status FROM c \
             WHERE tenant_id = $1 AND deleted_at IS NULL",
        )
        .bind(tenant.into_uuid())
        .bind(&ids)
        .fetch_all(&mut *m.tx)
        .await
        .map_err(db)?;
        let mut candidates: HashMap<Uuid, Candidate> = HashMap::with_capacity(rows.len());
        for row in &rows {
            let status: String = row.try_get("status").map_err(db)?;
            candidates.insert(
                row.try_get("id").map_err(db)?,
                Candidate {
                    email: row.try_get("email").map_err(db)?,
                    full_name: row.try_get("full_name").map_err(db)?,
                    department: row.try_get("department").map_err(db)?,
                    job_title: row.try_get("job_title").map_err(db)?,
                    status: status
                        .parse()
                        .map_err(|_| crate::error::corrupt("user status", &status))?,
                },
            );
        }
        let mut members: HashSet<Uuid> = sqlx::query_scalar(
            "SELECT user_id FROM group_members WHERE group_id = $1 AND user_id = ANY($2)",
        )
        .bind(group.into_uuid())
        .bind(&ids)
        .fetch_all(&mut *m.tx)
        .await
        .map_err(db)?
        .into_iter()
        .collect();
        let mut count: i64 =
            sqlx::query_scalar("SELECT count(*) FROM group_members WHERE group_id = $1")
                .bind(group.into_uuid())
                .fetch_one(&mut *m.tx)
                .await
                .map_err(db)?;
        let mut results = Vec::with_capacity(users.len());
        let mut added: Vec<Uuid> = Vec::new();
        let mut events = Vec::new();
        for user in users {
            let id = user.into_uuid();
            let outcome = match candidates.get(&id) {
                None => Err(MemberAddFailure::UserNotFound),
                Some(_) if members.contains(&id) => Err(MemberAddFailure::AlreadyMember),
                Some(_) if g.max_members.is_some_and(|max| count >= i64::from(max)) => {
                    Err(MemberAddFailure::GroupFull)
                }
                Some(c) => {
                    let member = GroupMember {
                        group_id: group,
                        user_id: user,
                        email: c.email.clone(),
                        full_name: c.full_name.clone(),
                        department: c.department.clone(),
                        job_title: c.job_title.clone(),
                        status: c.status,
                        role_in_group,
                        joined_at: now,
                        added_by_type: ctx.actor.actor_type(),
                        added_by: ctx.actor.id(),
                    };
                    members.insert(id);
                    count += 1;
                    added.push(id);
                    let after = Some(member.to_audit_json());
                    events.push(m.event(
                        actions::GROUP_MEMBER_ADD,
                        EntityRef::group(group),
                        (None, after),
                    ));
                    Ok(member)
                }
            };
            results.push(MemberAddResult {
                user_id: user,
                outcome,
            });
        }
        if added.is_empty() {
            // Nothing changed: the version stays as it was.
            m.tx.rollback().await.map_err(db)?;
            return Ok(results);
        }
        sqlx::query(
            "INSERT INTO group_members (tenant_id, group_id, user_id, role_in_group, joined_at, \
             added_by_type, added_by) \
             SELECT $1, $2, u, $4, $5, $6, $7 FROM UNNEST($3::uuid[]) AS u",
        )
        .bind(tenant.into_uuid())
        .bind(group.into_uuid())
        .bind(&added)
        .bind(role_in_group.as_str())
        .bind(now)
        .bind(ctx.actor.actor_type().as_str())
        .bind(ctx.actor.id())
        .execute(&mut *m.tx)
        .await
        .map_err(write)?;
        m.commit(&events).await?;
        Ok(results)
    }

    async fn update_group_member(
        &self,
        tenant: TenantId,
        group: GroupId,
        user: UserId,
        role_in_group: GroupMemberRole,
        ctx: &AuditContext,
    ) -> Result<GroupMember> {
        let now = domain::time::now();
        let mut m = Mutation::begin(&self.pool, tenant, ctx, now).await?;
        let before = load_member(&mut m.tx, tenant, group, user).await?;
        sqlx::query(
            "UPDATE group_members SET role_in_group = $4 \
             WHERE tenant_id = $1 AND group_id = $2 AND user_id = $3",
        )
        .bind(tenant.into_uuid())
        .bind(group.into_uuid())
        .bind(user.into_uuid())
        .bind(role_in_group.as_str())
        .execute(&mut *m.tx)
        .await
        .map_err(db)?;
        let after = GroupMember {
            role_in_group,
            ..before.clone()
        };
        m.finish(
            actions::GROUP_MEMBER_UPDATE,
            EntityRef::group(group),
            (Some(before.to_audit_json()), Some(after.to_audit_json())),
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
    ) -> Result<GroupMember> {
        let now = domain::time::now();
        let mut m = Mutation::begin(&self.pool, tenant, ctx, now).await?;
        let before = load_member(&mut m.tx, tenant, group, user).await?;
        execute_by(
            &mut *m.tx,
            "DELETE FROM group_members WHERE tenant_id = $1 AND group_id = $2 AND user_id = $3",
            &[tenant.into_uuid(), group.into_uuid(), user.into_uuid()],
        )
        .await?;
        m.finish(
            actions::GROUP_MEMBER_REMOVE,
            EntityRef::group(group),
            (Some(before.to_audit_json()), None),
        )
        .await?;
        Ok(before)
    }

    async fn available_users(
        &self,
        tenant: TenantId,
        group: GroupId,
        q: &AvailableUsersQuery,
    ) -> Result<Vec<User>> {
        let mut conn = self.pool.acquire().await.map_err(db)?;
        GROUPS.load(&mut conn, tenant, group).await?;
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
        GROUPS.load(&mut conn, tenant, group).await?;
        let sql = format!(
            "SELECT {ROLE_COLUMNS} FROM group_roles gr JOIN roles r ON r.id = gr.role_id \
             WHERE gr.tenant_id = $1 AND gr.group_id = $2"
        );
        let ids = [tenant.into_uuid(), group.into_uuid()];
        let mut roles = list_by(&mut *conn, &sql, &ids, rows::role).await?;
        sort_roles(&mut roles);
        Ok(roles)
    }

    async fn grant_group_role(
        &self,
        tenant: TenantId,
        group: GroupId,
        role: RoleId,
        ctx: &AuditContext,
    ) -> Result<Role> {
        let now = domain::time::now();
        let mut m = Mutation::begin(&self.pool, tenant, ctx, now).await?;
        GROUPS.load(&mut m.tx, tenant, group).await?;
        let r = fetch_role(&mut m.tx, tenant, role)
            .await?
            .ok_or_else(unknown_role)?;
        sqlx::query(
            "INSERT INTO group_roles (tenant_id, group_id, role_id, granted_at) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(tenant.into_uuid())
        .bind(group.into_uuid())
        .bind(role.into_uuid())
        .bind(now)
        .execute(&mut *m.tx)
        .await
        .map_err(write)?;
        m.finish(
            actions::GROUP_ROLE_GRANT,
            EntityRef::group(group),
            (None, Some(group_role_json(&r))),
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
    ) -> Result<Role> {
        let now = domain::time::now();
        let mut m = Mutation::begin(&self.pool, tenant, ctx, now).await?;
        GROUPS.load(&mut m.tx, tenant, group).await?;
        let not_granted = || Error::NotFound {
            entity: "group_role",
        };
        let r = fetch_role(&mut m.tx, tenant, role)
            .await?
            .ok_or_else(not_granted)?;
        let deleted = execute_by(
            &mut *m.tx,
            "DELETE FROM group_roles WHERE tenant_id = $1 AND group_id = $2 AND role_id = $3",
            &[tenant.into_uuid(), group.into_uuid(), role.into_uuid()],
        )
        .await?;
        if deleted == 0 {
            return Err(not_granted());
        }
        m.finish(
            actions::GROUP_ROLE_REVOKE,
            EntityRef::group(group),
            (Some(group_role_json(&r)), None),
        )
        .await?;
        Ok(r)
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
        POLICIES.load(&mut conn, tenant, id).await
    }

    async fn create_policy(
        &self,
        tenant: TenantId,
        new: NewPolicy,
        ctx: &AuditContext,
    ) -> Result<Policy> {
        let now = domain::time::now();
        let p = new.into_policy(tenant, now);
        let mut m = Mutation::begin(&self.pool, tenant, ctx, now).await?;
        sqlx::query(
            "INSERT INTO policies (id, tenant_id, name, description, effect, source, active, \
             version, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(p.id.into_uuid())
        .bind(tenant.into_uuid())
        .bind(&p.name)
        .bind(p.description.as_deref())
        .bind(p.effect.as_str())
        .bind(&p.source)
        .bind(p.active)
        .bind(p.version)
        .bind(p.created_at)
        .bind(p.updated_at)
        .execute(&mut *m.tx)
        .await
        .map_err(write)?;
        insert_policy_version(&mut m.tx, &p, ctx, now).await?;
        m.finish(
            actions::POLICY_CREATE,
            EntityRef::policy(p.id),
            (None, Some(p.to_audit_json())),
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
    ) -> Result<Policy> {
        let now = domain::time::now();
        let mut m = Mutation::begin(&self.pool, tenant, ctx, now).await?;
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
        sqlx::query(
            "UPDATE policies SET name = $3, description = $4, effect = $5, source = $6, \
             active = $7, version = $8, updated_at = $9 WHERE tenant_id = $1 AND id = $2",
        )
        .bind(tenant.into_uuid())
        .bind(id.into_uuid())
        .bind(&after.name)
        .bind(after.description.as_deref())
        .bind(after.effect.as_str())
        .bind(&after.source)
        .bind(after.active)
        .bind(after.version)
        .bind(after.updated_at)
        .execute(&mut *m.tx)
        .await
        .map_err(write)?;
        insert_policy_version(&mut m.tx, &after, ctx, now).await?;
        m.finish(
            actions::POLICY_UPDATE,
            EntityRef::policy(id),
            (Some(before.to_audit_json()), Some(after.to_audit_json())),
        )
        .await?;
        Ok(after)
    }

    async fn delete_policy(
        &self,
        tenant: TenantId,
        id: PolicyId,
        ctx: &AuditContext,
    ) -> Result<Policy> {
        let now = domain::time::now();
        let mut m = Mutation::begin(&self.pool, tenant, ctx, now).await?;
        let p = POLICIES.load(&mut m.tx, tenant, id).await?;
        // Its history goes with it (ON DELETE CASCADE).
        let ids = [tenant.into_uuid(), id.into_uuid()];
        execute_by(
            &mut *m.tx,
            "DELETE FROM policies WHERE tenant_id = $1 AND id = $2",
            &ids,
        )
        .await?;
        m.finish(
            actions::POLICY_DELETE,
            EntityRef::policy(id),
            (Some(p.to_audit_json()), None),
        )
        .await?;
        Ok(p)
    }

    async fn list_policy_versions(
        &self,
        tenant: TenantId,
        id: PolicyId,
    ) -> Result<Vec<PolicyVersion>> {
        let mut conn = self.pool.acquire().await.map_err(db)?;
        POLICIES.load(&mut conn, tenant, id).await?;
        let sql = format!(
            "SELECT {POLICY_VERSION_COLUMNS} FROM policy_versions \
             WHERE tenant_id = $1 AND policy_id = $2 ORDER BY version DESC"
        );
        let ids = [tenant.into_uuid(), id.into_uuid()];
        list_by(&mut *conn, &sql, &ids, rows::policy_version).await
    }
}

/// The tenant's own permissions, sorted by key.
async fn custom_permissions(conn: &mut PgConnection, tenant: TenantId) -> Result<Vec<Permission>> {
    let sql = format!("SELECT {PERMISSION_COLUMNS} FROM permissions WHERE tenant_id = $1");
    let mut out = list_by(conn, &sql, &[tenant.into_uuid()], rows::permission).await?;
    out.sort_by(|a, b| a.permission.cmp(&b.permission));
    Ok(out)
}
