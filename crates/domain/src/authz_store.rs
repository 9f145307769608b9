//! Reads of authorization data: the permission catalogue, roles, assignments, groups,
//! memberships and policies, and what the decision engine loads. Implemented by both
//! backends; every method is scoped by tenant. Changes go through [`crate::store::Tx`]
//! and the services, which keep the rules (unique names, the group tree, capacity, the
//! last super administrator, the tenant's authorization version).
//!
//! The super administrator role (`SUPER_ADMIN_ROLE_ID`, platform-wide, `tenant_id` null) is
//! listed with every tenant's roles.

use async_trait::async_trait;

use crate::authz::{
    AvailableUsersQuery, GroupMember, GroupSummary, Permission, Policy, PolicyVersion,
    PrincipalData, Role, RoleAssignment, TenantAuthzData,
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

    // --- roles ---

    /// The tenant's roles and the super administrator role, by priority (highest first),
    /// then name.
    async fn list_roles(&self, tenant: TenantId) -> Result<Vec<Role>>;
    async fn get_role(&self, tenant: TenantId, id: RoleId) -> Result<Role>;

    // --- assignments ---

    /// The user's direct assignments, expired ones included.
    async fn list_user_roles(&self, tenant: TenantId, user: UserId) -> Result<Vec<RoleAssignment>>;

    // --- groups ---

    /// Every group of the tenant with its member counts, by name.
    async fn list_groups(&self, tenant: TenantId) -> Result<Vec<GroupSummary>>;
    async fn get_group(&self, tenant: TenantId, id: GroupId) -> Result<GroupSummary>;
    /// Members by join time.
    async fn list_group_members(
        &self,
        tenant: TenantId,
        group: GroupId,
    ) -> Result<Vec<GroupMember>>;
    /// Non-deleted users of the tenant who are not members of the group, by name.
    async fn available_users(
        &self,
        tenant: TenantId,
        group: GroupId,
        q: &AvailableUsersQuery,
    ) -> Result<Vec<User>>;
    /// Roles granted to the group itself (not inherited), by priority then name.
    async fn list_group_roles(&self, tenant: TenantId, group: GroupId) -> Result<Vec<Role>>;

    // --- policies ---

    /// Every policy of the tenant, active or not, by name.
    async fn list_policies(&self, tenant: TenantId) -> Result<Vec<Policy>>;
    async fn get_policy(&self, tenant: TenantId, id: PolicyId) -> Result<Policy>;
    /// Every version of the policy, newest first (the current one included).
    async fn list_policy_versions(
        &self,
        tenant: TenantId,
        id: PolicyId,
    ) -> Result<Vec<PolicyVersion>>;
}
