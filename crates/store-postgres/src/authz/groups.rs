//! Transaction primitives of groups, their members and the roles granted to them.

use std::collections::{HashMap, HashSet};

use domain::audit::Actor;
use domain::authz::{Group, GroupMember, GroupMemberRole, Role};
use domain::{GroupId, Result, RoleId, TenantId, Timestamp, UserId};
use sqlx::types::Json;
use sqlx::PgConnection;
use uuid::Uuid;

use super::{execute_by, fetch_member, find_by, list_by};
use crate::error::{db, write};
use crate::rows::{self, GROUP_COLUMNS, MEMBER_COLUMNS, ROLE_COLUMNS};

pub(crate) async fn find(
    conn: &mut PgConnection,
    tenant: TenantId,
    id: GroupId,
) -> Result<Option<Group>> {
    let sql = format!("SELECT {GROUP_COLUMNS} FROM groups g WHERE g.tenant_id = $1 AND g.id = $2");
    find_by(
        conn,
        &sql,
        &[tenant.into_uuid(), id.into_uuid()],
        rows::group,
    )
    .await
}

pub(crate) async fn parents(
    conn: &mut PgConnection,
    tenant: TenantId,
) -> Result<HashMap<GroupId, Option<GroupId>>> {
    let found: Vec<(Uuid, Option<Uuid>)> =
        sqlx::query_as("SELECT id, parent_id FROM groups WHERE tenant_id = $1")
            .bind(tenant.into_uuid())
            .fetch_all(conn)
            .await
            .map_err(db)?;
    Ok(found
        .into_iter()
        .map(|(id, parent)| (GroupId::from_uuid(id), parent.map(GroupId::from_uuid)))
        .collect())
}

pub(crate) async fn has_children(
    conn: &mut PgConnection,
    tenant: TenantId,
    id: GroupId,
) -> Result<bool> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM groups WHERE tenant_id = $1 AND parent_id = $2)",
    )
    .bind(tenant.into_uuid())
    .bind(id.into_uuid())
    .fetch_one(conn)
    .await
    .map_err(db)
}

pub(crate) async fn insert(conn: &mut PgConnection, g: &Group) -> Result<()> {
    sqlx::query(
        "INSERT INTO groups (id, tenant_id, name, display_name, description, group_type, \
         parent_id, max_members, active, settings, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
    )
    .bind(g.id.into_uuid())
    .bind(g.tenant_id.into_uuid())
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
    .execute(conn)
    .await
    .map_err(write)?;
    Ok(())
}

pub(crate) async fn put(conn: &mut PgConnection, g: &Group) -> Result<()> {
    sqlx::query(
        "UPDATE groups SET name = $3, display_name = $4, description = $5, group_type = $6, \
         parent_id = $7, max_members = $8, active = $9, settings = $10, updated_at = $11 \
         WHERE tenant_id = $1 AND id = $2",
    )
    .bind(g.tenant_id.into_uuid())
    .bind(g.id.into_uuid())
    .bind(&g.name)
    .bind(&g.display_name)
    .bind(g.description.as_deref())
    .bind(g.group_type.as_str())
    .bind(g.parent_id.map(GroupId::into_uuid))
    .bind(g.max_members)
    .bind(g.active)
    .bind(Json(&g.settings))
    .bind(g.updated_at)
    .execute(conn)
    .await
    .map_err(write)?;
    Ok(())
}

pub(crate) async fn delete(conn: &mut PgConnection, tenant: TenantId, id: GroupId) -> Result<()> {
    for sql in [
        "DELETE FROM group_members WHERE tenant_id = $1 AND group_id = $2",
        "DELETE FROM group_roles WHERE tenant_id = $1 AND group_id = $2",
        "DELETE FROM groups WHERE tenant_id = $1 AND id = $2",
    ] {
        execute_by(&mut *conn, sql, &[tenant.into_uuid(), id.into_uuid()]).await?;
    }
    Ok(())
}

pub(crate) async fn find_member(
    conn: &mut PgConnection,
    tenant: TenantId,
    group: GroupId,
    user: UserId,
) -> Result<Option<GroupMember>> {
    fetch_member(conn, tenant, group, user).await
}

/// Every member, whatever their state (what `max_members` limits).
pub(crate) async fn count_members(
    conn: &mut PgConnection,
    tenant: TenantId,
    group: GroupId,
) -> Result<i64> {
    sqlx::query_scalar("SELECT count(*) FROM group_members WHERE tenant_id = $1 AND group_id = $2")
        .bind(tenant.into_uuid())
        .bind(group.into_uuid())
        .fetch_one(conn)
        .await
        .map_err(db)
}

/// Those of `users` who are members of the group.
pub(crate) async fn members_among(
    conn: &mut PgConnection,
    tenant: TenantId,
    group: GroupId,
    users: &[UserId],
) -> Result<HashSet<UserId>> {
    let ids: Vec<Uuid> = users.iter().map(|u| u.into_uuid()).collect();
    let found: Vec<Uuid> = sqlx::query_scalar(
        "SELECT user_id FROM group_members \
         WHERE tenant_id = $1 AND group_id = $2 AND user_id = ANY($3)",
    )
    .bind(tenant.into_uuid())
    .bind(group.into_uuid())
    .bind(&ids)
    .fetch_all(conn)
    .await
    .map_err(db)?;
    Ok(found.into_iter().map(UserId::from_uuid).collect())
}

/// Adds the members in one statement, and reads them back in one.
pub(crate) async fn insert_members(
    conn: &mut PgConnection,
    tenant: TenantId,
    group: GroupId,
    users: &[UserId],
    role_in_group: GroupMemberRole,
    by: Actor,
    at: Timestamp,
) -> Result<HashMap<UserId, GroupMember>> {
    if users.is_empty() {
        return Ok(HashMap::new());
    }
    let ids: Vec<Uuid> = users.iter().map(|u| u.into_uuid()).collect();
    sqlx::query(
        "INSERT INTO group_members (tenant_id, group_id, user_id, role_in_group, joined_at, \
         added_by_type, added_by) SELECT $1, $2, u, $4, $5, $6, $7 FROM UNNEST($3::uuid[]) AS u",
    )
    .bind(tenant.into_uuid())
    .bind(group.into_uuid())
    .bind(&ids)
    .bind(role_in_group.as_str())
    .bind(at)
    .bind(by.actor_type().as_str())
    .bind(by.id())
    .execute(&mut *conn)
    .await
    .map_err(write)?;
    let sql = format!(
        "SELECT {MEMBER_COLUMNS} FROM group_members m JOIN users u ON u.id = m.user_id \
         WHERE m.tenant_id = $1 AND m.group_id = $2 AND m.user_id = ANY($3)"
    );
    let rows = sqlx::query(&sql)
        .bind(tenant.into_uuid())
        .bind(group.into_uuid())
        .bind(&ids)
        .fetch_all(&mut *conn)
        .await
        .map_err(db)?;
    rows.iter()
        .map(|r| rows::member(r).map(|m| (m.user_id, m)))
        .collect()
}

pub(crate) async fn put_member_role(
    conn: &mut PgConnection,
    tenant: TenantId,
    group: GroupId,
    user: UserId,
    role_in_group: GroupMemberRole,
) -> Result<()> {
    sqlx::query(
        "UPDATE group_members SET role_in_group = $4 \
         WHERE tenant_id = $1 AND group_id = $2 AND user_id = $3",
    )
    .bind(tenant.into_uuid())
    .bind(group.into_uuid())
    .bind(user.into_uuid())
    .bind(role_in_group.as_str())
    .execute(conn)
    .await
    .map_err(write)?;
    Ok(())
}

pub(crate) async fn delete_member(
    conn: &mut PgConnection,
    tenant: TenantId,
    group: GroupId,
    user: UserId,
) -> Result<()> {
    execute_by(
        &mut *conn,
        "DELETE FROM group_members WHERE tenant_id = $1 AND group_id = $2 AND user_id = $3",
        &[tenant.into_uuid(), group.into_uuid(), user.into_uuid()],
    )
    .await?;
    Ok(())
}

/// The roles granted to the group itself, by priority then name.
pub(crate) async fn roles(
    conn: &mut PgConnection,
    tenant: TenantId,
    group: GroupId,
) -> Result<Vec<Role>> {
    let sql = format!(
        "SELECT {ROLE_COLUMNS} FROM group_roles gr JOIN roles r ON r.id = gr.role_id \
         WHERE gr.tenant_id = $1 AND gr.group_id = $2 ORDER BY r.priority DESC, r.name"
    );
    list_by(
        conn,
        &sql,
        &[tenant.into_uuid(), group.into_uuid()],
        rows::role,
    )
    .await
}

pub(crate) async fn insert_role(
    conn: &mut PgConnection,
    tenant: TenantId,
    group: GroupId,
    role: RoleId,
    at: Timestamp,
) -> Result<bool> {
    let inserted = sqlx::query(
        "INSERT INTO group_roles (tenant_id, group_id, role_id, granted_at) \
         VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
    )
    .bind(tenant.into_uuid())
    .bind(group.into_uuid())
    .bind(role.into_uuid())
    .bind(at)
    .execute(conn)
    .await
    .map_err(write)?
    .rows_affected();
    Ok(inserted == 1)
}

pub(crate) async fn delete_role(
    conn: &mut PgConnection,
    tenant: TenantId,
    group: GroupId,
    role: RoleId,
) -> Result<bool> {
    let removed = execute_by(
        &mut *conn,
        "DELETE FROM group_roles WHERE tenant_id = $1 AND group_id = $2 AND role_id = $3",
        &[tenant.into_uuid(), group.into_uuid(), role.into_uuid()],
    )
    .await?;
    Ok(removed == 1)
}
