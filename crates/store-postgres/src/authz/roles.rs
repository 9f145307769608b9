//! Transaction primitives of permissions, roles and role assignments.

use domain::authz::{Permission, PermissionKey, Role, RoleAssignment, SUPER_ADMIN_ROLE_ID};
use domain::store::SuperAdminHolder;
use domain::{Result, RoleId, TenantId, Timestamp, UserId};
use sqlx::{PgConnection, Row};

use super::{execute_by, fetch_role, insert_role, insert_role_permissions};
use crate::error::{db, write};
use crate::rows::{self, ROLE_COLUMNS};

pub(crate) use super::fetch_assignment as find_assignment;

pub(crate) async fn custom_permission_keys(
    conn: &mut PgConnection,
    tenant: TenantId,
) -> Result<Vec<PermissionKey>> {
    let found: Vec<(String, String, String)> =
        sqlx::query_as("SELECT resource, action, scope FROM permissions WHERE tenant_id = $1")
            .bind(tenant.into_uuid())
            .fetch_all(conn)
            .await
            .map_err(db)?;
    found
        .into_iter()
        .map(|(r, a, s)| {
            PermissionKey::parse("permission", &format!("{r}:{a}:{s}"))
                .map_err(|e| crate::error::corrupt("permission", &e.message))
        })
        .collect()
}

pub(crate) async fn insert_permission(
    conn: &mut PgConnection,
    tenant: TenantId,
    p: &Permission,
) -> Result<bool> {
    let inserted = sqlx::query(
        "INSERT INTO permissions (tenant_id, resource, action, scope, description, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
    )
    .bind(tenant.into_uuid())
    .bind(&p.resource)
    .bind(&p.action)
    .bind(p.scope.as_str())
    .bind(&p.description)
    .bind(p.created_at)
    .execute(conn)
    .await
    .map_err(write)?
    .rows_affected();
    Ok(inserted == 1)
}

pub(crate) async fn find(
    conn: &mut PgConnection,
    tenant: TenantId,
    id: RoleId,
) -> Result<Option<Role>> {
    fetch_role(conn, tenant, id).await
}

pub(crate) async fn find_named(
    conn: &mut PgConnection,
    tenant: TenantId,
    name: &str,
) -> Result<Option<Role>> {
    let sql = format!("SELECT {ROLE_COLUMNS} FROM roles r WHERE r.tenant_id = $1 AND r.name = $2");
    let row = sqlx::query(&sql)
        .bind(tenant.into_uuid())
        .bind(name)
        .fetch_optional(conn)
        .await
        .map_err(db)?;
    row.as_ref().map(rows::role).transpose()
}

pub(crate) async fn insert(conn: &mut PgConnection, role: &Role) -> Result<()> {
    insert_role(conn, role).await
}

pub(crate) async fn put(conn: &mut PgConnection, r: &Role) -> Result<()> {
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
    .execute(&mut *conn)
    .await
    .map_err(write)?;
    execute_by(
        &mut *conn,
        "DELETE FROM role_permissions WHERE role_id = $1",
        &[r.id.into_uuid()],
    )
    .await?;
    insert_role_permissions(conn, r.id, &r.permissions).await
}

pub(crate) async fn delete(conn: &mut PgConnection, tenant: TenantId, id: RoleId) -> Result<()> {
    for sql in [
        "DELETE FROM user_roles WHERE tenant_id = $1 AND role_id = $2",
        "DELETE FROM group_roles WHERE tenant_id = $1 AND role_id = $2",
        // role_permissions go with the role (ON DELETE CASCADE).
        "DELETE FROM roles WHERE tenant_id = $1 AND id = $2",
    ] {
        execute_by(&mut *conn, sql, &[tenant.into_uuid(), id.into_uuid()]).await?;
    }
    Ok(())
}

pub(crate) async fn put_assignment(
    conn: &mut PgConnection,
    tenant: TenantId,
    a: &RoleAssignment,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO user_roles (tenant_id, user_id, role_id, assigned_by_type, assigned_by, \
         assigned_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7) \
         ON CONFLICT (tenant_id, user_id, role_id) DO UPDATE SET expires_at = EXCLUDED.expires_at",
    )
    .bind(tenant.into_uuid())
    .bind(a.user_id.into_uuid())
    .bind(a.role_id.into_uuid())
    .bind(a.assigned_by_type.as_str())
    .bind(a.assigned_by)
    .bind(a.assigned_at)
    .bind(a.expires_at)
    .execute(conn)
    .await
    .map_err(write)?;
    Ok(())
}

pub(crate) async fn delete_assignment(
    conn: &mut PgConnection,
    tenant: TenantId,
    user: UserId,
    role: RoleId,
) -> Result<()> {
    execute_by(
        &mut *conn,
        "DELETE FROM user_roles WHERE tenant_id = $1 AND user_id = $2 AND role_id = $3",
        &[tenant.into_uuid(), user.into_uuid(), role.into_uuid()],
    )
    .await?;
    Ok(())
}

/// The platform's active holders of the super administrator role (see
/// `domain::store::SuperAdminHolder`). The caller holds `lock_super_admins` when the
/// answer decides a change.
pub(crate) async fn super_admin_holders(
    conn: &mut PgConnection,
    now: Timestamp,
) -> Result<Vec<SuperAdminHolder>> {
    let rows = sqlx::query(
        "SELECT a.tenant_id, a.user_id, a.expires_at FROM user_roles a \
         JOIN users u ON u.tenant_id = a.tenant_id AND u.id = a.user_id \
         WHERE a.role_id = $1 AND (a.expires_at IS NULL OR a.expires_at > $2) \
         AND u.status = 'active' AND u.deleted_at IS NULL",
    )
    .bind(SUPER_ADMIN_ROLE_ID.into_uuid())
    .bind(now)
    .fetch_all(conn)
    .await
    .map_err(db)?;
    rows.iter()
        .map(|r| {
            Ok(SuperAdminHolder {
                tenant: TenantId::from_uuid(r.try_get("tenant_id").map_err(db)?),
                user: UserId::from_uuid(r.try_get("user_id").map_err(db)?),
                expires_at: r.try_get("expires_at").map_err(db)?,
            })
        })
        .collect()
}
