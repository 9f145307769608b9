//! Builders of tenant and principal data for the unit tests.

use chrono::Utc;
use domain::audit::ActorType;
use domain::authz::{
    GroupNode, Permission, PermissionKey, Policy, PolicyEffect, PrincipalData, Role,
    RoleAssignment, RoleType, TenantAuthzData, SUPER_ADMIN_ROLE_ID, SUPER_ADMIN_ROLE_NAME,
};
use domain::users::{User, UserStatus};
use domain::{GroupId, PolicyId, RoleId, TenantId, UserId};

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct RoleRef {
    pub id: RoleId,
}

impl RoleRef {
    pub fn super_admin() -> Self {
        Self {
            id: SUPER_ADMIN_ROLE_ID,
        }
    }
}

pub(crate) struct Tenant {
    pub id: TenantId,
    pub data: TenantAuthzData,
}

impl Tenant {
    /// A tenant that only knows the super administrator role.
    pub fn new() -> Self {
        let now = Utc::now();
        let super_admin = Role {
            id: SUPER_ADMIN_ROLE_ID,
            tenant_id: None,
            name: SUPER_ADMIN_ROLE_NAME.into(),
            display_name: "Super administrator".into(),
            description: None,
            role_type: RoleType::System,
            priority: 1000,
            active: true,
            permissions: vec![],
            created_at: now,
            updated_at: now,
        };
        Self {
            id: TenantId::new(),
            data: TenantAuthzData {
                roles: vec![super_admin],
                ..TenantAuthzData::default()
            },
        }
    }

    pub fn data(&self) -> TenantAuthzData {
        self.data.clone()
    }

    pub fn role(&mut self, name: &str, priority: i32, permissions: &[&str]) -> RoleRef {
        let now = Utc::now();
        let mut permissions: Vec<PermissionKey> = permissions
            .iter()
            .map(|p| PermissionKey::parse("p", p).unwrap())
            .collect();
        permissions.sort();
        let role = Role {
            id: RoleId::new(),
            tenant_id: Some(self.id),
            name: name.into(),
            display_name: name.into(),
            description: None,
            role_type: RoleType::Custom,
            priority,
            active: true,
            permissions,
            created_at: now,
            updated_at: now,
        };
        let r = RoleRef { id: role.id };
        self.data.roles.push(role);
        r
    }

    pub fn role_of(&self, r: RoleRef) -> Role {
        self.data
            .roles
            .iter()
            .find(|x| x.id == r.id)
            .cloned()
            .unwrap()
    }

    pub fn set_role_active(&mut self, r: RoleRef, active: bool) {
        for x in &mut self.data.roles {
            if x.id == r.id {
                x.active = active;
            }
        }
    }

    pub fn group(
        &mut self,
        name: &str,
        parent: Option<GroupId>,
        active: bool,
        roles: &[RoleRef],
    ) -> GroupId {
        let id = GroupId::new();
        self.data.groups.push(GroupNode {
            id,
            name: name.into(),
            parent_id: parent,
            active,
        });
        for r in roles {
            self.data.group_roles.push((id, r.id));
        }
        id
    }

    /// Defines an application permission `resource:action:scope`.
    pub fn permission(&mut self, key: &str) {
        let key = PermissionKey::parse("p", key).unwrap();
        let mut p = Permission::built_in(key, "custom".into());
        p.built_in = false;
        p.created_at = Some(Utc::now());
        self.data.custom_permissions.push(p);
    }

    pub fn policy(&mut self, name: &str, source: &str) -> PolicyId {
        let now = Utc::now();
        let effect = if source.trim_start().starts_with("forbid") || source.contains("\nforbid") {
            PolicyEffect::Forbid
        } else {
            PolicyEffect::Permit
        };
        let p = Policy {
            id: PolicyId::new(),
            tenant_id: self.id,
            name: name.into(),
            description: None,
            effect,
            source: source.into(),
            active: true,
            version: 1,
            created_at: now,
            updated_at: now,
        };
        let id = p.id;
        self.data.policies.push(p);
        id
    }

    /// An active user of the tenant with no roles or groups.
    pub fn user(&self, name: &str, department: Option<&str>) -> PrincipalData {
        let now = Utc::now();
        PrincipalData {
            user: User {
                id: UserId::new(),
                tenant_id: self.id,
                email: format!("{name}@example.com"),
                username: None,
                full_name: name.into(),
                phone: None,
                department: department.map(str::to_owned),
                job_title: None,
                employee_id: None,
                manager_id: None,
                cost_center: None,
                clearance_level: None,
                language: None,
                avatar_url: None,
                custom_attributes: serde_json::Map::new(),
                status: UserStatus::Active,
                last_login_at: None,
                created_at: now,
                updated_at: now,
                deleted_at: None,
                version: 1,
            },
            manager_chain: vec![],
            assignments: vec![],
            groups: vec![],
        }
    }
}

pub(crate) fn assignment(
    p: &PrincipalData,
    role: &Role,
    expires_at: Option<chrono::DateTime<Utc>>,
) -> RoleAssignment {
    RoleAssignment {
        user_id: p.user.id,
        role_id: role.id,
        role_name: role.name.clone(),
        assigned_by_type: ActorType::System,
        assigned_by: None,
        assigned_at: Utc::now(),
        expires_at,
    }
}
