//! Authorization rows: the columns each query selects and how a row becomes a domain
//! value (roles, permissions, groups, members, assignments, policies and their versions).

use super::*;

pub(crate) const ROLE_COLS: &str =
    "id, tenant_id, name, display_name, description, role_type, priority, \
     active, created_at, updated_at";

/// A role without its permissions (see `attach_permissions`).
pub(crate) fn role_from_row(row: &SqliteRow) -> Result<Role> {
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

pub(crate) fn permission_key(row: &SqliteRow) -> Result<PermissionKey> {
    let resource: String = get(row, "resource")?;
    let action: String = get(row, "action")?;
    let scope = parse_enum::<Scope>(&get::<String>(row, "scope")?)?;
    PermissionKey::new(&resource, &action, scope)
        .map_err(|e| corrupt(format_args!("permission: {}", e.message)))
}

pub(crate) const PERMISSION_COLS: &str = "resource, action, scope, description, created_at";

pub(crate) fn permission_from_row(row: &SqliteRow) -> Result<Permission> {
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

pub(crate) const GROUP_COLS: &str = "id, tenant_id, name, display_name, description, group_type, \
     parent_id, max_members, active, settings, created_at, updated_at";

pub(crate) fn group_from_row(row: &SqliteRow) -> Result<Group> {
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
pub(crate) fn group_summary_sql(filter: &str) -> String {
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

pub(crate) fn group_summary_from_row(row: &SqliteRow) -> Result<GroupSummary> {
    Ok(GroupSummary {
        group: group_from_row(row)?,
        member_count: get(row, "member_count")?,
        active_member_count: get(row, "active_member_count")?,
    })
}

/// Members with the user fields shown with them; `m` is the membership, `u` the user.
pub(crate) const MEMBER_SELECT: &str = "SELECT m.group_id, m.user_id, u.email, u.full_name, \
     u.department, u.job_title, u.status, m.role_in_group, m.joined_at, m.added_by_type, \
     m.added_by FROM group_members m JOIN users u ON u.tenant_id = m.tenant_id \
     AND u.id = m.user_id";

pub(crate) fn member_from_row(row: &SqliteRow) -> Result<GroupMember> {
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
pub(crate) const ASSIGNMENT_SELECT: &str = "SELECT a.user_id, a.role_id, r.name AS role_name, \
     a.assigned_by_type, a.assigned_by, a.assigned_at, a.expires_at \
     FROM user_roles a JOIN roles r ON r.id = a.role_id";

pub(crate) fn assignment_from_row(row: &SqliteRow) -> Result<RoleAssignment> {
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

pub(crate) const POLICY_COLS: &str =
    "id, tenant_id, name, description, effect, source, active, version, \
     created_at, updated_at";

pub(crate) fn policy_from_row(row: &SqliteRow) -> Result<Policy> {
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

pub(crate) const POLICY_VERSION_COLS: &str =
    "policy_id, version, name, effect, source, active, changed_at, changed_by_type, changed_by";

pub(crate) fn policy_version_from_row(row: &SqliteRow) -> Result<PolicyVersion> {
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
