//! Transaction primitives of permissions, roles and role assignments.

use domain::authz::{Permission, PermissionKey, Role, RoleAssignment, SUPER_ADMIN_ROLE_ID};
use domain::ids::{RoleId, TenantId, UserId};
use domain::store::SuperAdminHolder;
use domain::time::{to_micros, Timestamp};
use sqlx::sqlite::SqliteConnection;
use uuid::Uuid;

use super::{
    attach_permissions, execute_by, find_role, insert_role, insert_role_permissions,
    permission_key, role_from_row, ROLE_COLS, SUPER_ADMIN_HOLDERS_SQL,
};
use crate::error::{db_err, Result};
use crate::rows::{get, opt_ts};

pub(crate) use super::find_assignment;

pub(crate) async fn custom_permission_keys(
    conn: &mut SqliteConnection,
    tenant: TenantId,
) -> Result<Vec<PermissionKey>> {
    let rows = sqlx::query("SELECT resource, action, scope FROM permissions WHERE tenant_id = ?")
        .bind(tenant.into_uuid())
        .fetch_all(&mut *conn)
        .await
        .map_err(db_err)?;
    rows.iter().map(permission_key).collect()
}

pub(crate) async fn insert_permission(
    conn: &mut SqliteConnection,
    tenant: TenantId,
    p: &Permission,
) -> Result<bool> {
    let inserted = sqlx::query(
        "INSERT INTO permissions (tenant_id, resource, action, scope, description, \
         created_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
    )
    .bind(tenant.into_uuid())
    .bind(&p.resource)
    .bind(&p.action)
    .bind(p.scope.as_str())
    .bind(&p.description)
    .bind(p.created_at.map(to_micros))
    .execute(&mut *conn)
    .await
    .map_err(db_err)?
    .rows_affected();
    Ok(inserted == 1)
}

pub(crate) async fn find(
    conn: &mut SqliteConnection,
    tenant: TenantId,
    id: RoleId,
) -> Result<Option<Role>> {
    find_role(conn, tenant, id).await
}

pub(crate) async fn find_named(
    conn: &mut SqliteConnection,
    tenant: TenantId,
    name: &str,
) -> Result<Option<Role>> {
    let row = sqlx::query(&format!(
        "SELECT {ROLE_COLS} FROM roles WHERE tenant_id = ? AND name = ?"
    ))
    .bind(tenant.into_uuid())
    .bind(name)
    .fetch_optional(&mut *conn)
    .await
    .map_err(db_err)?;
    let Some(role) = row.as_ref().map(role_from_row).transpose()? else {
        return Ok(None);
    };
    let mut role = [role];
    attach_permissions(conn, &mut role).await?;
    let [role] = role;
    Ok(Some(role))
}

pub(crate) async fn insert(conn: &mut SqliteConnection, role: &Role) -> Result<()> {
    insert_role(conn, role).await
}

pub(crate) async fn put(conn: &mut SqliteConnection, r: &Role) -> Result<()> {
    let tenant = r.tenant_id.map(TenantId::into_uuid);
    sqlx::query(
        "UPDATE roles SET name = ?, display_name = ?, description = ?, priority = ?, \
         active = ?, updated_at = ? WHERE tenant_id IS ? AND id = ?",
    )
    .bind(&r.name)
    .bind(&r.display_name)
    .bind(&r.description)
    .bind(r.priority)
    .bind(r.active)
    .bind(to_micros(r.updated_at))
    .bind(tenant)
    .bind(r.id.into_uuid())
    .execute(&mut *conn)
    .await
    .map_err(db_err)?;
    execute_by(
        &mut *conn,
        "DELETE FROM role_permissions WHERE role_id = ?",
        &[r.id.into_uuid()],
    )
    .await?;
    insert_role_permissions(conn, r.id, &r.permissions).await
}

/// Its permissions, assignments and group grants go with it (ON DELETE CASCADE).
pub(crate) async fn delete(
    conn: &mut SqliteConnection,
    tenant: TenantId,
    id: RoleId,
) -> Result<()> {
    execute_by(
        &mut *conn,
        "DELETE FROM roles WHERE tenant_id = ? AND id = ?",
        &[tenant.into_uuid(), id.into_uuid()],
    )
    .await?;
    Ok(())
}

pub(crate) async fn put_assignment(
    conn: &mut SqliteConnection,
    tenant: TenantId,
    a: &RoleAssignment,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO user_roles (tenant_id, user_id, role_id, assigned_by_type, \
         assigned_by, assigned_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?) \
         ON CONFLICT (tenant_id, user_id, role_id) DO UPDATE SET expires_at = excluded.expires_at",
    )
    .bind(tenant.into_uuid())
    .bind(a.user_id.into_uuid())
    .bind(a.role_id.into_uuid())
    .bind(a.assigned_by_type.as_str())
    .bind(a.assigned_by)
    .bind(to_micros(a.assigned_at))
    .bind(a.expires_at.map(to_micros))
    .execute(&mut *conn)
    .await
    .map_err(db_err)?;
    Ok(())
}

pub(crate) async fn delete_assignment(
    conn: &mut SqliteConnection,
    tenant: TenantId,
    user: UserId,
    role: RoleId,
) -> Result<()> {
    execute_by(
        &mut *conn,
        "DELETE FROM user_roles WHERE tenant_id = ? AND user_id = ? AND role_id = ?",
        &[tenant.into_uuid(), user.into_uuid(), role.into_uuid()],
    )
    .await?;
    Ok(())
}

/// Active, non-deleted users of the platform who hold the super administrator role
/// directly and unexpired at `now`.
pub(crate) async fn super_admin_holders(
    conn: &mut SqliteConnection,
    now: Timestamp,
) -> Result<Vec<SuperAdminHolder>> {
    let rows = sqlx::query(SUPER_ADMIN_HOLDERS_SQL)
        .bind(SUPER_ADMIN_ROLE_ID.into_uuid())
        .bind(to_micros(now))
        .fetch_all(&mut *conn)
        .await
        .map_err(db_err)?;
    rows.iter()
        .map(|r| {
            Ok(SuperAdminHolder {
                tenant: TenantId::from_uuid(get::<Uuid>(r, "tenant_id")?),
                user: UserId::from_uuid(get::<Uuid>(r, "user_id")?),
                expires_at: opt_ts(get(r, "expires_at")?)?,
            })
        })
        .collect()
}
