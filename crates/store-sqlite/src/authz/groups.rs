//! Transaction primitives of groups, their members and the roles granted to them.

use std::collections::{HashMap, HashSet};

use domain::audit::Actor;
use domain::authz::{Group, GroupMember, GroupMemberRole, Role};
use domain::ids::{GroupId, RoleId, TenantId, UserId};
use domain::time::{to_micros, Timestamp};
use sqlx::sqlite::SqliteConnection;
use sqlx::{QueryBuilder, Sqlite};
use uuid::Uuid;

use super::{
    count_members as count, execute_by, exists_by, find_by, find_member as member, group_from_row,
    group_parents, group_roles, member_from_row, write_group, GROUP_COLS, MEMBER_SELECT,
};
use crate::error::{db_err, Result};
use crate::rows::object_text;
use crate::users::{push_in_ids, ID_BATCH};

pub(crate) async fn find(
    conn: &mut SqliteConnection,
    tenant: TenantId,
    id: GroupId,
) -> Result<Option<Group>> {
    let sql = format!("SELECT {GROUP_COLS} FROM groups WHERE tenant_id = ? AND id = ?");
    find_by(
        conn,
        &sql,
        &[tenant.into_uuid(), id.into_uuid()],
        group_from_row,
    )
    .await
}

pub(crate) async fn parents(
    conn: &mut SqliteConnection,
    tenant: TenantId,
) -> Result<HashMap<GroupId, Option<GroupId>>> {
    group_parents(conn, tenant).await
}

pub(crate) async fn has_children(
    conn: &mut SqliteConnection,
    tenant: TenantId,
    id: GroupId,
) -> Result<bool> {
    exists_by(
        &mut *conn,
        "SELECT 1 FROM groups WHERE tenant_id = ? AND parent_id = ?",
        &[tenant.into_uuid(), id.into_uuid()],
    )
    .await
}

pub(crate) async fn insert(conn: &mut SqliteConnection, g: &Group) -> Result<()> {
    sqlx::query(
        "INSERT INTO groups (id, tenant_id, name, display_name, description, group_type, \
         parent_id, max_members, active, settings, created_at, updated_at) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(g.id.into_uuid())
    .bind(g.tenant_id.into_uuid())
    .bind(&g.name)
    .bind(&g.display_name)
    .bind(&g.description)
    .bind(g.group_type.as_str())
    .bind(g.parent_id.map(GroupId::into_uuid))
    .bind(g.max_members)
    .bind(g.active)
    .bind(object_text(&g.settings))
    .bind(to_micros(g.created_at))
    .bind(to_micros(g.updated_at))
    .execute(&mut *conn)
    .await
    .map_err(db_err)?;
    Ok(())
}

pub(crate) async fn put(conn: &mut SqliteConnection, g: &Group) -> Result<()> {
    write_group(conn, g).await
}

/// Its memberships and role grants go with it (ON DELETE CASCADE).
pub(crate) async fn delete(
    conn: &mut SqliteConnection,
    tenant: TenantId,
    id: GroupId,
) -> Result<()> {
    execute_by(
        &mut *conn,
        "DELETE FROM groups WHERE tenant_id = ? AND id = ?",
        &[tenant.into_uuid(), id.into_uuid()],
    )
    .await?;
    Ok(())
}

pub(crate) async fn find_member(
    conn: &mut SqliteConnection,
    tenant: TenantId,
    group: GroupId,
    user: UserId,
) -> Result<Option<GroupMember>> {
    member(conn, tenant, group, user).await
}

pub(crate) async fn count_members(
    conn: &mut SqliteConnection,
    tenant: TenantId,
    group: GroupId,
) -> Result<i64> {
    count(conn, tenant, group).await
}

/// Those of `users` who are members of the group.
pub(crate) async fn members_among(
    conn: &mut SqliteConnection,
    tenant: TenantId,
    group: GroupId,
    users: &[UserId],
) -> Result<HashSet<UserId>> {
    let mut found = HashSet::new();
    for batch in users.chunks(ID_BATCH) {
        let mut qb =
            QueryBuilder::<Sqlite>::new("SELECT user_id FROM group_members WHERE tenant_id = ");
        qb.push_bind(tenant.into_uuid());
        qb.push(" AND group_id = ");
        qb.push_bind(group.into_uuid());
        qb.push(" AND");
        push_in_ids(&mut qb, "user_id", batch);
        let ids: Vec<Uuid> = qb
            .build_query_scalar()
            .fetch_all(&mut *conn)
            .await
            .map_err(db_err)?;
        found.extend(ids.into_iter().map(UserId::from_uuid));
    }
    Ok(found)
}

/// Adds the members a batch per statement, and reads them back likewise.
pub(crate) async fn insert_members(
    conn: &mut SqliteConnection,
    tenant: TenantId,
    group: GroupId,
    users: &[UserId],
    role_in_group: GroupMemberRole,
    by: Actor,
    at: Timestamp,
) -> Result<HashMap<UserId, GroupMember>> {
    let mut by_user: HashMap<UserId, GroupMember> = HashMap::with_capacity(users.len());
    for batch in users.chunks(ID_BATCH) {
        let mut qb = QueryBuilder::<Sqlite>::new(
            "INSERT INTO group_members (tenant_id, group_id, user_id, role_in_group, \
             joined_at, added_by_type, added_by) ",
        );
        qb.push_values(batch, |mut b, user| {
            b.push_bind(tenant.into_uuid())
                .push_bind(group.into_uuid())
                .push_bind(user.into_uuid())
                .push_bind(role_in_group.as_str())
                .push_bind(to_micros(at))
                .push_bind(by.actor_type().as_str())
                .push_bind(by.id());
        });
        qb.build().execute(&mut *conn).await.map_err(db_err)?;
        let mut qb = QueryBuilder::<Sqlite>::new(format!("{MEMBER_SELECT} WHERE m.tenant_id = "));
        qb.push_bind(tenant.into_uuid());
        qb.push(" AND m.group_id = ");
        qb.push_bind(group.into_uuid());
        qb.push(" AND");
        push_in_ids(&mut qb, "m.user_id", batch);
        let rows = qb.build().fetch_all(&mut *conn).await.map_err(db_err)?;
        for row in &rows {
            let m = member_from_row(row)?;
            by_user.insert(m.user_id, m);
        }
    }
    Ok(by_user)
}

pub(crate) async fn put_member_role(
    conn: &mut SqliteConnection,
    tenant: TenantId,
    group: GroupId,
    user: UserId,
    role_in_group: GroupMemberRole,
) -> Result<()> {
    sqlx::query(
        "UPDATE group_members SET role_in_group = ? \
         WHERE tenant_id = ? AND group_id = ? AND user_id = ?",
    )
    .bind(role_in_group.as_str())
    .bind(tenant.into_uuid())
    .bind(group.into_uuid())
    .bind(user.into_uuid())
    .execute(&mut *conn)
    .await
    .map_err(db_err)?;
    Ok(())
}

pub(crate) async fn delete_member(
    conn: &mut SqliteConnection,
    tenant: TenantId,
    group: GroupId,
    user: UserId,
) -> Result<()> {
    execute_by(
        &mut *conn,
        "DELETE FROM group_members WHERE tenant_id = ? AND group_id = ? AND user_id = ?",
        &[tenant.into_uuid(), group.into_uuid(), user.into_uuid()],
    )
    .await?;
    Ok(())
}

pub(crate) async fn roles(
    conn: &mut SqliteConnection,
    tenant: TenantId,
    group: GroupId,
) -> Result<Vec<Role>> {
    group_roles(conn, tenant, group).await
}

pub(crate) async fn insert_role(
    conn: &mut SqliteConnection,
    tenant: TenantId,
    group: GroupId,
    role: RoleId,
    at: Timestamp,
) -> Result<bool> {
    let inserted = sqlx::query(
        "INSERT INTO group_roles (tenant_id, group_id, role_id, granted_at) \
         VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
    )
    .bind(tenant.into_uuid())
    .bind(group.into_uuid())
    .bind(role.into_uuid())
    .bind(to_micros(at))
    .execute(&mut *conn)
    .await
    .map_err(db_err)?
    .rows_affected();
    Ok(inserted == 1)
}

pub(crate) async fn delete_role(
    conn: &mut SqliteConnection,
    tenant: TenantId,
    group: GroupId,
    role: RoleId,
) -> Result<bool> {
    let removed = execute_by(
        &mut *conn,
        "DELETE FROM group_roles WHERE tenant_id = ? AND group_id = ? AND role_id = ?",
        &[tenant.into_uuid(), group.into_uuid(), role.into_uuid()],
    )
    .await?;
    Ok(removed == 1)
}
