//! Storage of authorization data: the permission catalogue, roles, assignments, groups,
//! memberships and policies. Implemented by both backends; every method is scoped by tenant.
//!
//! Invariants each backend enforces inside the transaction of the change:
//! - every mutation here writes its audit event (before/after) and increments the tenant's
//!   authorization version (`authz_version`) in the same transaction, so that a decision
//!   cache can tell that it is stale; so do `update_user`, `delete_user` and `restore_user`
//!   of `Store` (a user's status, department and manager feed decisions);
//! - role names are unique per tenant (`Conflict` `role_name_taken`, field `name`); group
//!   names likewise (`group_name_taken`);
//! - a permission given to a role exists: built in (`authz::is_built_in`) or defined by the
//!   tenant → else `Validation` on `add` with code `unknown_permission`;
//! - the super administrator role (`SUPER_ADMIN_ROLE_ID`, platform-wide, `tenant_id` null)
//!   is listed with every tenant's roles and may be assigned to their users; it cannot be
//!   updated or deleted (`Forbidden` `super_admin_immutable`), and its last holder among
//!   active users of the platform cannot lose it, by unassignment, deletion or a status
//!   other than active (`Conflict` `last_super_admin`);
//! - system roles cannot be deleted (`Forbidden` `system_role`);
//! - a group's parent is a group of the same tenant (`Validation` on `parent_id`,
//!   `unknown_group`) and the tree has no cycle (`Validation` `parent_id`/`cycle`); a group
//!   with children cannot be deleted (`Conflict` `group_has_children`);
//! - `max_members` is respected by additions (per item `GroupFull`);
//! - a role given to a user or group is a role of the tenant or the super administrator
//!   role (`Validation` on `role_id`, `unknown_role`); a user given a role or added to a
//!   group is a non-deleted user of the tenant (`NotFound` user, or per item
//!   `UserNotFound`);
//! - creating a tenant seeds its default roles (`authz::default_roles`), and creating or
//!   registering a user (and `seed_users`) gives the user the tenant's `user` role.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::audit::AuditContext;
use crate::authz::{
    AvailableUsersQuery, Group, GroupMember, GroupMemberRole, GroupPatch, GroupSummary,
    MemberAddResult, NewGroup, NewPermission, NewPolicy, NewRole, Permission, PermissionKey,
    Policy, PolicyPatch, PolicyVersion, PrincipalData, Role, RoleAssignment, RolePatch,
    TenantAuthzData,
};
use crate::error::Result;
use crate::ids::{GroupId, PolicyId, RoleId, TenantId, UserId};
use crate::users::User;

#[async_trait]
pub trait AuthzStore: Send + Sync + 'static {
    // --- what the decision engine reads ---

    /// The tenant's authorization version (0 before any change).
    async fn authz_version(&self, tenant: TenantId) -> Result<i64>;
    /// Every tenant's authorization version, for replicas to notice changes made elsewhere.
    async fn authz_versions(&self) -> Result<Vec<(TenantId, i64)>>;
    /// Roles (with permissions), groups, group roles, active policies and the tenant's own
    /// permissions, read in one consistent snapshot together with the version.
    async fn load_tenant_authz(&self, tenant: TenantId) -> Result<TenantAuthzData>;
    /// The user, their manager chain, direct assignments and direct group memberships; None
    /// when the tenant has no such user (deleted users are returned: they have no rights).
    async fn load_principal(&self, tenant: TenantId, user: UserId)
        -> Result<Option<PrincipalData>>;

    // --- permissions ---

    /// The tenant's own permissions (the built-in ones come from `authz`).
    async fn list_custom_permissions(&self, tenant: TenantId) -> Result<Vec<Permission>>;
    /// Defines an application permission; an existing one is `Conflict`
    /// `permission_exists`. The caller refuses built-in resources.
    async fn create_permission(
        &self,
        tenant: TenantId,
        new: NewPermission,
        ctx: &AuditContext,
    ) -> Result<Permission>;

    // --- roles ---

    /// The tenant's roles and the super administrator role, by priority (highest first),
    /// then name.
    async fn list_roles(&self, tenant: TenantId) -> Result<Vec<Role>>;
    async fn get_role(&self, tenant: TenantId, id: RoleId) -> Result<Role>;
    async fn create_role(&self, tenant: TenantId, new: NewRole, ctx: &AuditContext)
        -> Result<Role>;
    async fn update_role(
        &self,
        tenant: TenantId,
        id: RoleId,
        patch: RolePatch,
        ctx: &AuditContext,
    ) -> Result<Role>;
    /// Deletes a custom role with its assignments and group grants.
    async fn delete_role(&self, tenant: TenantId, id: RoleId, ctx: &AuditContext) -> Result<Role>;
    /// Adds then removes permissions (removing one the role lacks is not an error); one
    /// audit event `role.permissions.update` with the lists before and after.
    async fn update_role_permissions(
        &self,
        tenant: TenantId,
        id: RoleId,
        add: Vec<PermissionKey>,
        remove: Vec<PermissionKey>,
        ctx: &AuditContext,
    ) -> Result<Role>;

    // --- assignments ---

    /// The user's direct assignments, expired ones included.
    async fn list_user_roles(&self, tenant: TenantId, user: UserId) -> Result<Vec<RoleAssignment>>;
    /// Gives the user the role, or changes the expiry of the assignment they already have.
    /// The bool is true when the assignment is new.
    async fn assign_role(
        &self,
        tenant: TenantId,
        user: UserId,
        role: RoleId,
        expires_at: Option<DateTime<Utc>>,
        ctx: &AuditContext,
    ) -> Result<(RoleAssignment, bool)>;
    /// `NotFound` (entity `role_assignment`) when the user does not hold the role directly.
    async fn unassign_role(
        &self,
        tenant: TenantId,
        user: UserId,
        role: RoleId,
        ctx: &AuditContext,
    ) -> Result<RoleAssignment>;

    // --- groups ---

    /// Every group of the tenant with its member counts, by name.
    async fn list_groups(&self, tenant: TenantId) -> Result<Vec<GroupSummary>>;
    async fn get_group(&self, tenant: TenantId, id: GroupId) -> Result<GroupSummary>;
    async fn create_group(
        &self,
        tenant: TenantId,
        new: NewGroup,
        ctx: &AuditContext,
    ) -> Result<Group>;
    async fn update_group(
        &self,
        tenant: TenantId,
        id: GroupId,
        patch: GroupPatch,
        ctx: &AuditContext,
    ) -> Result<Group>;
    /// Deletes a group without children, with its memberships and role grants.
    async fn delete_group(
        &self,
        tenant: TenantId,
        id: GroupId,
        ctx: &AuditContext,
    ) -> Result<Group>;
    /// Members by join time.
    async fn list_group_members(
        &self,
        tenant: TenantId,
        group: GroupId,
    ) -> Result<Vec<GroupMember>>;
    /// Adds each user in order, each on its own (a failure of one does not undo the
    /// others); one audit event per added member. `NotFound` only for the group itself.
    async fn add_group_members(
        &self,
        tenant: TenantId,
        group: GroupId,
        users: Vec<UserId>,
        role_in_group: GroupMemberRole,
        ctx: &AuditContext,
    ) -> Result<Vec<MemberAddResult>>;
    /// `NotFound` (entity `group_member`) when the user is not a member.
    async fn update_group_member(
        &self,
        tenant: TenantId,
        group: GroupId,
        user: UserId,
        role_in_group: GroupMemberRole,
        ctx: &AuditContext,
    ) -> Result<GroupMember>;
    async fn remove_group_member(
        &self,
        tenant: TenantId,
        group: GroupId,
        user: UserId,
        ctx: &AuditContext,
    ) -> Result<GroupMember>;
    /// Non-deleted users of the tenant who are not members of the group, by name.
    async fn available_users(
        &self,
        tenant: TenantId,
        group: GroupId,
        q: &AvailableUsersQuery,
    ) -> Result<Vec<User>>;
    /// Roles granted to the group itself (not inherited), by priority then name.
    async fn list_group_roles(&self, tenant: TenantId, group: GroupId) -> Result<Vec<Role>>;
    /// Grants a role to the group; an existing grant is `Conflict` `already_granted`.
    async fn grant_group_role(
        &self,
        tenant: TenantId,
        group: GroupId,
        role: RoleId,
        ctx: &AuditContext,
    ) -> Result<Role>;
    /// `NotFound` (entity `group_role`) when the group does not have the role.
    async fn revoke_group_role(
        &self,
        tenant: TenantId,
        group: GroupId,
        role: RoleId,
        ctx: &AuditContext,
    ) -> Result<Role>;

    // --- policies ---

    /// Every policy of the tenant, active or not, by name.
    async fn list_policies(&self, tenant: TenantId) -> Result<Vec<Policy>>;
    async fn get_policy(&self, tenant: TenantId, id: PolicyId) -> Result<Policy>;
    /// Names are unique per tenant (`Conflict` `policy_name_taken`).
    async fn create_policy(
        &self,
        tenant: TenantId,
        new: NewPolicy,
        ctx: &AuditContext,
    ) -> Result<Policy>;
    /// `expected_version` as for users (`PreconditionFailed`). Keeps the replaced version
    /// in the history.
    async fn update_policy(
        &self,
        tenant: TenantId,
        id: PolicyId,
        patch: PolicyPatch,
        expected_version: Option<i64>,
        ctx: &AuditContext,
    ) -> Result<Policy>;
    async fn delete_policy(
        &self,
        tenant: TenantId,
        id: PolicyId,
        ctx: &AuditContext,
    ) -> Result<Policy>;
    /// Every version of the policy, newest first (the current one included).
    async fn list_policy_versions(
        &self,
        tenant: TenantId,
        id: PolicyId,
    ) -> Result<Vec<PolicyVersion>>;
}
