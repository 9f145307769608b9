//! Authorization entities: permissions (`resource:action:scope`), roles, time-bound role
//! assignments, nested groups with their members and roles, and ABAC policies (Cedar source
//! text; parsing and evaluation live in `portcullis-authz`). Also the built-in permission
//! catalogue and the default roles every tenant is given.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Serialize, Serializer};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::audit::ActorType;
use crate::error::FieldError;
use crate::ids::{GroupId, PolicyId, RoleId, TenantId, UserId};
use crate::patch::Patch;
use crate::tenants::string_enum;
use crate::values::{Description, DisplayName, Identifier, JsonObject, SearchQuery};

string_enum!(
    /// How far a permission reaches: the caller's own records, those of their department,
    /// or all of the tenant's.
    Scope { Own => "own", Department => "department", All => "all" }
);

impl Scope {
    /// Wider scopes include narrower ones: `all` ⊇ `department` ⊇ `own`.
    pub fn rank(self) -> u8 {
        match self {
            Scope::Own => 0,
            Scope::Department => 1,
            Scope::All => 2,
        }
    }
}

/// A resource and an action on it, `resource:action` (what a check asks about).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ActionKey {
    resource: String,
    action: String,
}

impl ActionKey {
    pub fn new(resource: &Identifier, action: &Identifier) -> Self {
        Self {
            resource: resource.as_str().to_owned(),
            action: action.as_str().to_owned(),
        }
    }

    /// Parses `resource:action`.
    pub fn parse(field: &str, raw: &str) -> Result<Self, FieldError> {
        let invalid = || {
            FieldError::new(
                field,
                "invalid_action",
                "must be 'resource:action', e.g. 'users:read'",
            )
        };
        let (resource, action) = raw.split_once(':').ok_or_else(invalid)?;
        if !Identifier::is_valid(resource) || !Identifier::is_valid(action) {
            return Err(invalid());
        }
        Ok(Self {
            resource: resource.to_owned(),
            action: action.to_owned(),
        })
    }

    pub fn resource(&self) -> &str {
        &self.resource
    }

    pub fn action(&self) -> &str {
        &self.action
    }

    pub fn with_scope(&self, scope: Scope) -> PermissionKey {
        PermissionKey {
            resource: self.resource.clone(),
            action: self.action.clone(),
            scope,
        }
    }
}

impl fmt::Display for ActionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.resource, self.action)
    }
}

/// A permission, `resource:action:scope`, e.g. `users:read:department`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PermissionKey {
    resource: String,
    action: String,
    scope: Scope,
}

impl PartialOrd for Scope {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Scope {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.rank().cmp(&other.rank())
    }
}

impl PermissionKey {
    pub fn new(resource: &str, action: &str, scope: Scope) -> Result<Self, FieldError> {
        Self::parse(
            "permission",
            &format!("{resource}:{action}:{}", scope.as_str()),
        )
    }

    /// Parses `resource:action:scope`.
    pub fn parse(field: &str, raw: &str) -> Result<Self, FieldError> {
        let invalid = |why: &str| {
            FieldError::new(
                field,
                "invalid_permission",
                format!("'{raw}' is not 'resource:action:scope' ({why})"),
            )
        };
        let mut parts = raw.split(':');
        let (Some(resource), Some(action), Some(scope), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(invalid("three parts separated by ':' are expected"));
        };
        if !Identifier::is_valid(resource) || !Identifier::is_valid(action) {
            return Err(invalid(
                "resource and action are lower-case identifiers like 'users' and 'read'",
            ));
        }
        let scope =
            Scope::from_str(scope).map_err(|_| invalid("scope is own, department or all"))?;
        Ok(Self {
            resource: resource.to_owned(),
            action: action.to_owned(),
            scope,
        })
    }

    pub fn resource(&self) -> &str {
        &self.resource
    }

    pub fn action(&self) -> &str {
        &self.action
    }

    pub fn scope(&self) -> Scope {
        self.scope
    }

    pub fn action_key(&self) -> ActionKey {
        ActionKey {
            resource: self.resource.clone(),
            action: self.action.clone(),
        }
    }
}

impl fmt::Display for PermissionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}",
            self.resource,
            self.action,
            self.scope.as_str()
        )
    }
}

impl Serialize for PermissionKey {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl utoipa::PartialSchema for PermissionKey {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .description(Some(
                "`resource:action:scope`, e.g. `users:read:department`",
            ))
            .examples([Value::String("users:read:department".into())])
            .into()
    }
}

impl utoipa::ToSchema for PermissionKey {}

/// An entry of the permission catalogue: built in, or defined by the tenant.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Permission {
    pub permission: PermissionKey,
    pub resource: String,
    pub action: String,
    pub scope: Scope,
    pub description: String,
    pub built_in: bool,
    /// When a tenant-defined permission was created; none for built-in ones.
    pub created_at: Option<DateTime<Utc>>,
}

impl Permission {
    pub fn built_in(key: PermissionKey, description: String) -> Self {
        Self {
            resource: key.resource.clone(),
            action: key.action.clone(),
            scope: key.scope,
            permission: key,
            description,
            built_in: true,
            created_at: None,
        }
    }
}

/// A validated request to define an application permission.
#[derive(Debug, Clone)]
pub struct NewPermission {
    pub key: PermissionKey,
    pub description: Option<Description>,
}

/// Portcullis's own resources and the actions each offers. Every pair exists at the three
/// scopes. Portcullis's own endpoints narrow by scope where a record has an owner and a
/// department (users, their sessions, passwords and roles; audit events by actor); for the
/// other resources they ask about the collection, which any scope reaches. The check API
/// applies scopes to whatever resource it is asked about.
pub const BUILT_IN_RESOURCES: &[(&str, &[&str], &str)] = &[
    (
        "users",
        &[
            "create", "read", "update", "delete", "block", "approve", "export",
        ],
        "users of the tenant and their credentials",
    ),
    ("sessions", &["read", "delete"], "users' sign-in sessions"),
    (
        "roles",
        &["create", "read", "update", "delete", "assign"],
        "roles, their permissions and who holds them",
    ),
    (
        "groups",
        &["create", "read", "update", "delete", "assign"],
        "groups, their members and their roles",
    ),
    (
        "permissions",
        &["create", "read"],
        "the permission catalogue",
    ),
    (
        "policies",
        &["create", "read", "update", "delete"],
        "ABAC (Cedar) policies",
    ),
    ("authz", &["check"], "asking for authorization decisions"),
    ("settings", &["read", "update"], "the tenant's settings"),
    ("api_keys", &["create", "read", "delete"], "API keys"),
    ("audit_logs", &["read", "export"], "the audit trail"),
    ("approvals", &["read", "approve"], "approval workflows"),
    (
        "tenants",
        &["create", "read", "update", "delete"],
        "tenants of the platform (super administrators only)",
    ),
    ("directory", &["read"], "the tenant's public user directory"),
];

/// Whether `resource:action` is one of Portcullis's own.
pub fn is_built_in(resource: &str, action: &str) -> bool {
    BUILT_IN_RESOURCES
        .iter()
        .any(|(r, actions, _)| *r == resource && actions.contains(&action))
}

/// Whether `resource` is one of Portcullis's own (tenants may not add actions to them).
pub fn is_built_in_resource(resource: &str) -> bool {
    BUILT_IN_RESOURCES.iter().any(|(r, _, _)| *r == resource)
}

/// The built-in catalogue: every built-in `resource:action` at every scope.
pub fn built_in_permissions() -> Vec<Permission> {
    let mut out = Vec::new();
    for (resource, actions, what) in BUILT_IN_RESOURCES {
        for action in *actions {
            for scope in Scope::ALL {
                let key = PermissionKey {
                    resource: (*resource).to_owned(),
                    action: (*action).to_owned(),
                    scope: *scope,
                };
                let reach = match scope {
                    Scope::Own => "the holder's own",
                    Scope::Department => "the holder's department's",
                    Scope::All => "all of the tenant's",
                };
                out.push(Permission::built_in(
                    key,
                    format!("{action} {what} ({reach})"),
                ));
            }
        }
    }
    out
}

string_enum!(
    /// System roles are seeded by Portcullis and cannot be deleted or renamed; custom roles
    /// belong to the tenant.
    RoleType { System => "system", Custom => "custom" }
);

/// The platform-wide super administrator role: holders may do anything in their tenant and
/// manage tenants. It cannot be modified or deleted, nor lose its last holder.
pub const SUPER_ADMIN_ROLE_ID: RoleId =
    RoleId::from_uuid(Uuid::from_u128(0x0000_0000_0000_7000_8000_0000_0000_0001));
pub const SUPER_ADMIN_ROLE_NAME: &str = "super_admin";

/// Names of the roles seeded into every tenant.
pub const ADMIN_ROLE: &str = "admin";
pub const MANAGER_ROLE: &str = "manager";
/// The role every new user of a tenant is given.
pub const USER_ROLE: &str = "user";

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Role {
    pub id: RoleId,
    /// None for the platform-wide super administrator role.
    pub tenant_id: Option<TenantId>,
    pub name: String,
    pub display_name: String,
    pub description: Option<String>,
    pub role_type: RoleType,
    /// Higher wins when roles are ordered for display and explanations.
    pub priority: i32,
    pub active: bool,
    /// Sorted.
    pub permissions: Vec<PermissionKey>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Role {
    pub fn is_super_admin(&self) -> bool {
        self.id == SUPER_ADMIN_ROLE_ID
    }

    pub fn to_audit_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

/// A validated request to create a role.
#[derive(Debug, Clone)]
pub struct NewRole {
    pub name: Identifier,
    pub display_name: DisplayName,
    pub description: Option<Description>,
    pub priority: i32,
    pub active: bool,
    pub permissions: Vec<PermissionKey>,
}

impl NewRole {
    pub fn into_role(self, tenant_id: TenantId, role_type: RoleType, now: DateTime<Utc>) -> Role {
        let mut permissions = self.permissions;
        permissions.sort();
        permissions.dedup();
        Role {
            id: RoleId::new(),
            tenant_id: Some(tenant_id),
            name: self.name.into_inner(),
            display_name: self.display_name.into_inner(),
            description: self.description.map(Description::into_inner),
            role_type,
            priority: self.priority,
            active: self.active,
            permissions,
            created_at: now,
            updated_at: now,
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct RolePatch {
    pub name: Option<Identifier>,
    pub display_name: Option<DisplayName>,
    pub description: Patch<Description>,
    pub priority: Option<i32>,
    pub active: Option<bool>,
}

impl RolePatch {
    /// The role after the patch, or why the patch is refused: the super administrator role
    /// cannot change, and a system role keeps its name.
    pub fn apply(self, role: &Role, now: DateTime<Utc>) -> crate::Result<Role> {
        refuse_super_admin(role)?;
        if let Some(name) = &self.name {
            if role.role_type == RoleType::System && name.as_str() != role.name {
                return Err(crate::Error::refused(crate::Code::SystemRole));
            }
        }
        Ok(Role {
            name: self
                .name
                .map_or_else(|| role.name.clone(), Identifier::into_inner),
            display_name: self
                .display_name
                .map_or_else(|| role.display_name.clone(), DisplayName::into_inner),
            description: self
                .description
                .map_into(Description::into_inner)
                .apply(role.description.clone()),
            priority: self.priority.unwrap_or(role.priority),
            active: self.active.unwrap_or(role.active),
            updated_at: now,
            ..role.clone()
        })
    }
}

/// The super administrator role is immutable.
pub fn refuse_super_admin(role: &Role) -> crate::Result<()> {
    if role.is_super_admin() {
        Err(crate::Error::refused(crate::Code::SuperAdminImmutable))
    } else {
        Ok(())
    }
}

/// Whether a role may be deleted.
pub fn check_deletable(role: &Role) -> crate::Result<()> {
    refuse_super_admin(role)?;
    if role.role_type == RoleType::System {
        return Err(crate::Error::refused(crate::Code::SystemRole));
    }
    Ok(())
}

/// A role held by a user directly.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct RoleAssignment {
    pub user_id: UserId,
    pub role_id: RoleId,
    pub role_name: String,
    pub assigned_by_type: ActorType,
    pub assigned_by: Option<Uuid>,
    pub assigned_at: DateTime<Utc>,
    /// The assignment stops counting at this time (time-bound access).
    pub expires_at: Option<DateTime<Utc>>,
}

impl RoleAssignment {
    pub fn is_current(&self, now: DateTime<Utc>) -> bool {
        self.expires_at.is_none_or(|t| t > now)
    }

    pub fn to_audit_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

string_enum!(
    /// What a group stands for.
    GroupType { Department => "department", Team => "team", Custom => "custom" }
);

string_enum!(
    /// A member's standing within a group.
    GroupMemberRole { Owner => "owner", Manager => "manager", Member => "member" }
);

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Group {
    pub id: GroupId,
    pub tenant_id: TenantId,
    pub name: String,
    pub display_name: String,
    pub description: Option<String>,
    pub group_type: GroupType,
    pub parent_id: Option<GroupId>,
    pub max_members: Option<i32>,
    pub active: bool,
    #[schema(value_type = Object)]
    pub settings: Map<String, Value>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Group {
    pub fn to_audit_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

/// A group with its member counts (for lists and the tree).
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct GroupSummary {
    #[serde(flatten)]
    pub group: Group,
    /// Members, whatever their status.
    pub member_count: i64,
    /// Members whose user is active.
    pub active_member_count: i64,
}

/// A node of the group tree.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct GroupTreeNode {
    #[serde(flatten)]
    pub group: GroupSummary,
    #[schema(no_recursion)]
    pub children: Vec<GroupTreeNode>,
}

/// Arranges groups into their forest, each level sorted by name.
pub fn group_tree(groups: Vec<GroupSummary>) -> Vec<GroupTreeNode> {
    use std::collections::HashMap;
    let known: std::collections::HashSet<GroupId> = groups.iter().map(|g| g.group.id).collect();
    let mut children: HashMap<Option<GroupId>, Vec<GroupSummary>> = HashMap::new();
    for g in groups {
        // A parent outside the list (it cannot happen with a consistent store) makes a root.
        let parent = g.group.parent_id.filter(|p| known.contains(p));
        children.entry(parent).or_default().push(g);
    }
    fn build(
        parent: Option<GroupId>,
        children: &mut HashMap<Option<GroupId>, Vec<GroupSummary>>,
    ) -> Vec<GroupTreeNode> {
        let mut level = children.remove(&parent).unwrap_or_default();
        level.sort_by(|a, b| a.group.name.cmp(&b.group.name));
        level
            .into_iter()
            .map(|g| {
                let id = g.group.id;
                GroupTreeNode {
                    group: g,
                    children: build(Some(id), children),
                }
            })
            .collect()
    }
    build(None, &mut children)
}

#[derive(Debug, Clone)]
pub struct NewGroup {
    pub name: Identifier,
    pub display_name: DisplayName,
    pub description: Option<Description>,
    pub group_type: GroupType,
    pub parent_id: Option<GroupId>,
    pub max_members: Option<i32>,
    pub active: bool,
    pub settings: JsonObject,
}

impl NewGroup {
    pub fn into_group(self, tenant_id: TenantId, now: DateTime<Utc>) -> Group {
        Group {
            id: GroupId::new(),
            tenant_id,
            name: self.name.into_inner(),
            display_name: self.display_name.into_inner(),
            description: self.description.map(Description::into_inner),
            group_type: self.group_type,
            parent_id: self.parent_id,
            max_members: self.max_members,
            active: self.active,
            settings: self.settings.into_map(),
            created_at: now,
            updated_at: now,
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct GroupPatch {
    pub name: Option<Identifier>,
    pub display_name: Option<DisplayName>,
    pub description: Patch<Description>,
    pub group_type: Option<GroupType>,
    pub parent_id: Patch<GroupId>,
    pub max_members: Patch<i32>,
    pub active: Option<bool>,
    /// Replaces the whole object when given.
    pub settings: Option<JsonObject>,
}

impl GroupPatch {
    /// The group after the patch. The store checks the parent (same tenant, no cycle).
    pub fn apply(self, g: &Group, now: DateTime<Utc>) -> Group {
        Group {
            name: self
                .name
                .map_or_else(|| g.name.clone(), Identifier::into_inner),
            display_name: self
                .display_name
                .map_or_else(|| g.display_name.clone(), DisplayName::into_inner),
            description: self
                .description
                .map_into(Description::into_inner)
                .apply(g.description.clone()),
            group_type: self.group_type.unwrap_or(g.group_type),
            parent_id: self.parent_id.apply(g.parent_id),
            max_members: self.max_members.apply(g.max_members),
            active: self.active.unwrap_or(g.active),
            settings: self
                .settings
                .map_or_else(|| g.settings.clone(), JsonObject::into_map),
            updated_at: now,
            ..g.clone()
        }
    }
}

/// Refuses a parent that would make `group` its own ancestor. `parent_of` answers the
/// current parent of a group of the tenant.
pub fn check_no_cycle(
    group: GroupId,
    new_parent: Option<GroupId>,
    parent_of: impl Fn(GroupId) -> Option<GroupId>,
) -> crate::Result<()> {
    let mut at = new_parent;
    let mut steps = 0usize;
    while let Some(g) = at {
        if g == group || steps > 100_000 {
            return Err(FieldError::rule("parent_id", crate::Code::GroupCycle).into());
        }
        at = parent_of(g);
        steps += 1;
    }
    Ok(())
}

/// A member of a group, with the user fields an administrator needs to manage it.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct GroupMember {
    pub group_id: GroupId,
    pub user_id: UserId,
    pub email: String,
    pub full_name: String,
    pub department: Option<String>,
    pub job_title: Option<String>,
    pub status: crate::users::UserStatus,
    pub role_in_group: GroupMemberRole,
    pub joined_at: DateTime<Utc>,
    pub added_by_type: ActorType,
    pub added_by: Option<Uuid>,
}

impl GroupMember {
    pub fn to_audit_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

/// Why one user of a bulk add was not added.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MemberAddFailure {
    /// No such user in the tenant (or the user is deleted).
    UserNotFound,
    AlreadyMember,
    /// The group has reached `max_members`.
    GroupFull,
}

impl MemberAddFailure {
    pub fn message(self) -> &'static str {
        match self {
            MemberAddFailure::UserNotFound => "no such user in this tenant",
            MemberAddFailure::AlreadyMember => "the user is already a member of the group",
            MemberAddFailure::GroupFull => "the group has reached its maximum number of members",
        }
    }
}

/// The outcome of adding one user in a bulk add, in request order.
#[derive(Debug, Clone, PartialEq)]
pub struct MemberAddResult {
    pub user_id: UserId,
    pub outcome: Result<GroupMember, MemberAddFailure>,
}

/// Filters of the `available-users` search: users of the tenant who are not deleted and
/// not yet members of the group.
#[derive(Debug, Clone)]
pub struct AvailableUsersQuery {
    pub search: Option<SearchQuery>,
    pub department: Option<String>,
    /// 1..=100.
    pub limit: u32,
}

string_enum!(
    /// Whether a policy allows or denies. A `forbid` that applies wins over any role.
    PolicyEffect { Permit => "permit", Forbid => "forbid" }
);

/// An ABAC policy: one Cedar `permit` or `forbid` statement.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Policy {
    pub id: PolicyId,
    pub tenant_id: TenantId,
    pub name: String,
    pub description: Option<String>,
    pub effect: PolicyEffect,
    /// The Cedar source of the policy.
    pub source: String,
    pub active: bool,
    /// 1 at creation, incremented by every change; the ETag of the policy.
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Policy {
    pub fn to_audit_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

/// A validated policy (the Cedar source was parsed and validated by the caller).
#[derive(Debug, Clone)]
pub struct NewPolicy {
    pub name: Identifier,
    pub description: Option<Description>,
    pub effect: PolicyEffect,
    pub source: String,
    pub active: bool,
}

impl NewPolicy {
    pub fn into_policy(self, tenant_id: TenantId, now: DateTime<Utc>) -> Policy {
        Policy {
            id: PolicyId::new(),
            tenant_id,
            name: self.name.into_inner(),
            description: self.description.map(Description::into_inner),
            effect: self.effect,
            source: self.source,
            active: self.active,
            version: 1,
            created_at: now,
            updated_at: now,
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct PolicyPatch {
    pub name: Option<Identifier>,
    pub description: Patch<Description>,
    /// A new, validated source and its effect.
    pub source: Option<(String, PolicyEffect)>,
    pub active: Option<bool>,
}

impl PolicyPatch {
    pub fn apply(self, p: &Policy, now: DateTime<Utc>) -> Policy {
        let (source, effect) = self.source.unwrap_or_else(|| (p.source.clone(), p.effect));
        Policy {
            name: self
                .name
                .map_or_else(|| p.name.clone(), Identifier::into_inner),
            description: self
                .description
                .map_into(Description::into_inner)
                .apply(p.description.clone()),
            effect,
            source,
            active: self.active.unwrap_or(p.active),
            version: p.version + 1,
            updated_at: now,
            ..p.clone()
        }
    }
}

/// A past or current version of a policy.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct PolicyVersion {
    pub policy_id: PolicyId,
    pub version: i64,
    pub name: String,
    pub effect: PolicyEffect,
    pub source: String,
    pub active: bool,
    pub changed_at: DateTime<Utc>,
    pub changed_by_type: ActorType,
    pub changed_by: Option<Uuid>,
}

/// What the decision engine needs of a tenant: its roles with their permissions, its group
/// tree with the roles of each group, its active policies and its own permissions.
#[derive(Debug, Clone, Default)]
pub struct TenantAuthzData {
    /// The tenant's authorization version when this was read (see `AuthzStore`).
    pub version: i64,
    /// The tenant's roles and the platform's super administrator role.
    pub roles: Vec<Role>,
    pub groups: Vec<GroupNode>,
    pub group_roles: Vec<(GroupId, RoleId)>,
    /// Active policies only.
    pub policies: Vec<Policy>,
    pub custom_permissions: Vec<Permission>,
}

/// A group as the decision engine sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupNode {
    pub id: GroupId,
    pub name: String,
    pub parent_id: Option<GroupId>,
    pub active: bool,
}

/// What the decision engine needs of one user.
#[derive(Debug, Clone)]
pub struct PrincipalData {
    pub user: crate::users::User,
    /// The user's managers, nearest first (at most 64 levels).
    pub manager_chain: Vec<UserId>,
    /// Direct role assignments, expired ones included (expiry is judged at check time).
    pub assignments: Vec<RoleAssignment>,
    /// Groups the user is a direct member of.
    pub groups: Vec<GroupId>,
}

/// Role assignment limits: at most this far in the future (ten years).
pub const MAX_ASSIGNMENT_DAYS: i64 = 3650;

/// Checks a requested assignment expiry: in the future and at most ten years away.
pub fn check_expiry(
    expires_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Result<(), FieldError> {
    if let Some(t) = expires_at {
        if t <= now {
            return Err(FieldError::new(
                "expires_at",
                "in_the_past",
                "must be in the future",
            ));
        }
        if t > now + chrono::TimeDelta::days(MAX_ASSIGNMENT_DAYS) {
            return Err(FieldError::new(
                "expires_at",
                "too_far",
                "must be at most ten years from now",
            ));
        }
    }
    Ok(())
}

/// A role seeded into every tenant.
pub struct DefaultRole {
    pub name: &'static str,
    pub display_name: &'static str,
    pub description: &'static str,
    pub priority: i32,
    pub permissions: Vec<PermissionKey>,
}

fn keys(list: &[&str]) -> Vec<PermissionKey> {
    let mut out: Vec<PermissionKey> = list
        .iter()
        .filter_map(|s| PermissionKey::parse("permission", s).ok())
        .collect();
    out.sort();
    out
}

/// The roles every tenant starts with: `admin` (everything in the tenant), `manager` (the
/// users of their own department) and `user` (their own profile and the directory).
impl DefaultRole {
    /// The role as a new tenant is given it.
    pub fn into_role(&self, tenant: TenantId, now: DateTime<Utc>) -> Role {
        let mut permissions = self.permissions.clone();
        permissions.sort();
        permissions.dedup();
        Role {
            id: RoleId::new(),
            tenant_id: Some(tenant),
            name: self.name.to_owned(),
            display_name: self.display_name.to_owned(),
            description: Some(self.description.to_owned()),
            role_type: RoleType::System,
            priority: self.priority,
            active: true,
            permissions,
            created_at: now,
            updated_at: now,
        }
    }
}

pub fn default_roles() -> Vec<DefaultRole> {
    let admin: Vec<PermissionKey> = BUILT_IN_RESOURCES
        .iter()
        .filter(|(r, _, _)| *r != "tenants")
        .flat_map(|(r, actions, _)| {
            actions
                .iter()
                .filter_map(move |a| PermissionKey::new(r, a, Scope::All).ok())
        })
        .collect();
    let mut admin = admin;
    admin.sort();
    vec![
        DefaultRole {
            name: ADMIN_ROLE,
            display_name: "Administrator",
            description: "Everything within the tenant",
            priority: 100,
            permissions: admin,
        },
        DefaultRole {
            name: MANAGER_ROLE,
            display_name: "Manager",
            description: "Reads and manages the users of their own department",
            priority: 50,
            permissions: keys(&[
                "users:read:department",
                "users:update:department",
                "users:block:department",
                "users:approve:department",
                "sessions:read:department",
                "sessions:delete:department",
                "groups:read:all",
                "roles:read:all",
                "directory:read:all",
            ]),
        },
        DefaultRole {
            name: USER_ROLE,
            display_name: "User",
            description: "Their own profile and the public directory",
            priority: 10,
            permissions: keys(&[
                "users:read:own",
                "users:update:own",
                "sessions:read:own",
                "sessions:delete:own",
                "directory:read:all",
            ]),
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permission_keys_parse_and_print() {
        let k = PermissionKey::parse("p", "users:read:department").unwrap();
        assert_eq!(k.resource(), "users");
        assert_eq!(k.action(), "read");
        assert_eq!(k.scope(), Scope::Department);
        assert_eq!(k.to_string(), "users:read:department");
        for bad in [
            "",
            "users",
            "users:read",
            "users:read:everything",
            "Users:read:all",
            "users:read:all:x",
            "users::all",
            "1users:read:all",
        ] {
            let e = PermissionKey::parse("p", bad).unwrap_err();
            assert_eq!(e.code, "invalid_permission", "{bad}");
        }
        assert!(ActionKey::parse("a", "users:read").is_ok());
        assert!(ActionKey::parse("a", "users:read:all").is_err());
    }

    #[test]
    fn scopes_are_ordered() {
        assert!(Scope::All > Scope::Department);
        assert!(Scope::Department > Scope::Own);
    }

    #[test]
    fn default_roles_use_only_built_in_permissions() {
        for role in default_roles() {
            assert!(!role.permissions.is_empty());
            for p in &role.permissions {
                assert!(is_built_in(p.resource(), p.action()), "{p}");
            }
        }
        assert_eq!(
            built_in_permissions().len(),
            BUILT_IN_RESOURCES
                .iter()
                .map(|(_, a, _)| a.len() * 3)
                .sum::<usize>()
        );
    }

    #[test]
    fn cycles_are_refused() {
        let a = GroupId::new();
        let b = GroupId::new();
        let c = GroupId::new();
        // c -> b -> a
        let parent = |g: GroupId| {
            if g == c {
                Some(b)
            } else if g == b {
                Some(a)
            } else {
                None
            }
        };
        assert!(check_no_cycle(a, Some(c), parent).is_err());
        assert!(check_no_cycle(a, Some(a), parent).is_err());
        assert!(check_no_cycle(c, Some(a), parent).is_ok());
        assert!(check_no_cycle(a, None, parent).is_ok());
    }
}
