//! The storage interface. Two implementations (`store-sqlite`, `store-postgres`), one
//! contract test suite. Every method that touches tenant data takes the `TenantId`, so
//! isolation is a property of the API, not of each caller's diligence.
//!
//! Stores hold queries, not rules: reads are [`Store`] methods; changes run in a [`Tx`],
//! whose primitives the services compose (load what a rule needs, write what it decided,
//! record the change), so that each rule is written once above both backends. What a
//! backend still guarantees by itself is the integrity of what it writes: uniqueness
//! (emails, usernames, slugs, names), foreign keys within a tenant, the atomicity of the
//! sign-in steps of [`AuthStore`](crate::AuthStore), and an append-only audit trail.

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use uuid::Uuid;

use crate::api_keys::{ApiKey, ApiKeyAuth, KeyHash};
use crate::audit::{Actor, AuditEvent, AuditQuery};
use crate::auth::{
    AuthSettings, Credentials, LockTransition, NewPassword, RevokeScope, TokenPurpose,
};
use crate::authz::{
    Group, GroupMember, GroupMemberRole, Permission, PermissionKey, Policy, Role, RoleAssignment,
};
use crate::error::Result;
use crate::events::{Event, Position};
use crate::ids::{ApiKeyId, GroupId, PolicyId, RoleId, SessionId, TenantId, UserId};
use crate::page::Page;
use crate::tenants::{Tenant, TenantListQuery, TenantSlug};
use crate::time::Timestamp;
use crate::users::{User, UserListQuery};

/// Connection-pool figures for the metrics endpoint.
#[derive(Debug, Clone, Copy, Default)]
pub struct PoolStats {
    pub size: u32,
    pub idle: u32,
    pub max: u32,
}

#[async_trait]
pub trait Store:
    crate::auth_store::AuthStore + crate::authz_store::AuthzStore + Send + Sync + 'static
{
    /// `sqlite` or `postgres`.
    fn backend(&self) -> &'static str;

    /// Applies pending migrations.
    async fn migrate(&self) -> Result<()>;

    /// Checks that the database answers.
    async fn ping(&self) -> Result<()>;

    fn pool_stats(&self) -> PoolStats;

    /// Begins a write transaction.
    async fn begin(&self) -> Result<Box<dyn Tx>>;

    // --- tenants (platform scope) ---

    async fn get_tenant(&self, id: TenantId) -> Result<Tenant>;
    async fn get_tenant_by_slug(&self, slug: &TenantSlug) -> Result<Tenant>;
    async fn list_tenants(&self, q: &TenantListQuery) -> Result<Page<Tenant>>;

    // --- API keys ---

    /// Finds a non-revoked key by its hash, with its tenant's status. Not tenant-scoped by
    /// design: the key is what names the tenant.
    async fn authenticate_api_key(&self, hash: &KeyHash) -> Result<Option<ApiKeyAuth>>;
    async fn list_api_keys(&self, tenant: TenantId) -> Result<Vec<ApiKey>>;

    // --- users ---

    /// A user, deleted or not.
    async fn get_user(&self, tenant: TenantId, id: UserId) -> Result<User>;
    async fn list_users(&self, tenant: TenantId, q: &UserListQuery) -> Result<Page<User>>;

    // --- audit and events ---

    async fn list_audit_events(&self, tenant: TenantId, q: &AuditQuery)
        -> Result<Page<AuditEvent>>;
    /// The position after which events not yet final may still appear: a reader starting
    /// here misses nothing committed later.
    async fn outbox_head(&self) -> Result<Position>;
    /// Up to `limit` events after `after`, in commit order; only events whose position is
    /// final (nothing can commit before them any more).
    async fn read_outbox(&self, after: Position, limit: u32) -> Result<Vec<Event>>;
    /// Deletes events that occurred before `before`, except those a saved cursor has not
    /// passed yet; how many.
    async fn prune_outbox(&self, before: Timestamp) -> Result<u64>;
    /// Where `consumer` saved it had read up to (`None`: never saved).
    async fn outbox_cursor(&self, consumer: &str) -> Result<Option<Position>>;
    /// Saves `consumer`'s position, after it handled every event up to it: a consumer
    /// that restarts resumes there (delivery is at least once), and pruning keeps what it
    /// has not read.
    async fn save_outbox_cursor(&self, consumer: &str, position: Position) -> Result<()>;
}

/// The kinds of tenant entity whose names are unique in their tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Named {
    Role,
    Group,
    Policy,
}

/// A holder of the super administrator role whose holding counts: a current assignment
/// of an active, non-deleted user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SuperAdminHolder {
    pub tenant: TenantId,
    pub user: UserId,
    pub expires_at: Option<Timestamp>,
}

/// A tenant's user quota as a change that adds a user must see it: `max_users` (none:
/// unlimited) and, when there is a maximum, the count of non-deleted users. A backend
/// that serialises with row locks keeps the count valid until the commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserQuota {
    pub max_users: Option<i64>,
    pub live_users: i64,
}

impl UserQuota {
    /// Whether one more non-deleted user fits.
    pub fn has_room(&self) -> bool {
        self.max_users.is_none_or(|max| self.live_users < max)
    }
}

/// A write transaction: the primitives the services' rules are written with. Methods load
/// what a rule needs (locking it where the backend locks rows), write what the rule
/// decided, and [`Tx::record`] writes the audit record and the outbox event of a change.
/// Nothing is visible to others until [`Tx::commit`]; dropping the transaction rolls it
/// back. Every method is scoped by tenant; none judges anything but the integrity of
/// what it writes (uniqueness of emails, usernames and slugs is the database's).
///
/// Serialisation: SQLite has one writer, so a transaction sees nothing change under it.
/// PostgreSQL serialises with locks that each change takes first: [`Tx::lock_authz`]
/// (the tenant's authorization version, bumped) for every change that feeds decisions,
/// then [`Tx::lock_super_admins`] when a super administrator may lose the role, then rows.
#[async_trait]
pub trait Tx: Send {
    /// Commits, answering the events of the changes recorded.
    async fn commit(self: Box<Self>) -> Result<Vec<Event>>;

    /// Writes the audit record of a change and its event (the outbox row).
    async fn record(&mut self, event: &AuditEvent) -> Result<()>;
    /// Writes the audit records and events of several changes, in order (what a bulk
    /// operation records: one per item, in as few statements as the backend allows).
    async fn record_all(&mut self, events: &[AuditEvent]) -> Result<()>;

    // --- serialisation ---

    /// Increments the tenant's authorization version (decision caches reload) and, on
    /// backends that lock, holds the tenant's authorization changes until the commit.
    async fn lock_authz(&mut self, tenant: TenantId) -> Result<()>;
    /// Holds, platform-wide, the changes that can take the super administrator role from
    /// a holder, until the commit.
    async fn lock_super_admins(&mut self) -> Result<()>;

    // --- tenants and API keys ---

    /// Inserts a tenant (`slug_taken` when the slug is used).
    async fn insert_tenant(&mut self, tenant: &Tenant) -> Result<()>;
    /// The tenant, locked for update; `NotFound` when unknown.
    async fn tenant_for_update(&mut self, id: TenantId) -> Result<Tenant>;
    async fn put_tenant(&mut self, tenant: &Tenant) -> Result<()>;
    /// Revokes every active session of the tenant's users; how many.
    async fn revoke_tenant_sessions(
        &mut self,
        tenant: TenantId,
        reason: &str,
        at: Timestamp,
    ) -> Result<u64>;
    async fn insert_api_key(&mut self, key: &ApiKey, hash: &KeyHash) -> Result<()>;
    async fn api_key_for_update(
        &mut self,
        tenant: TenantId,
        id: ApiKeyId,
    ) -> Result<Option<ApiKey>>;
    async fn put_api_key(&mut self, key: &ApiKey) -> Result<()>;

    // --- users ---

    /// The tenant's quota for one more user; `NotFound` for an unknown tenant.
    async fn user_quota(&mut self, tenant: TenantId) -> Result<UserQuota>;
    /// A user, deleted or not, locked for update.
    async fn user_for_update(&mut self, tenant: TenantId, id: UserId) -> Result<Option<User>>;
    /// Whether the tenant has this user, not deleted.
    async fn user_is_live(&mut self, tenant: TenantId, id: UserId) -> Result<bool>;
    /// Those of `ids` that the tenant has, not deleted (one lookup for a bulk operation).
    async fn live_users(&mut self, tenant: TenantId, ids: &[UserId]) -> Result<HashSet<UserId>>;
    /// Whether `user` is `manager` or above it in `manager`'s chain.
    async fn manager_chain_reaches(
        &mut self,
        tenant: TenantId,
        manager: UserId,
        user: UserId,
    ) -> Result<bool>;
    /// Inserts a user (`email_taken`, `username_taken`).
    async fn insert_user(&mut self, user: &User) -> Result<()>;
    /// Writes every mutable column of the user (`email_taken`, `username_taken`).
    async fn put_user(&mut self, user: &User) -> Result<()>;
    /// Inserts many users at once for the data generator (rows go to `tenant`), each with
    /// `role` when given; every `manager_id` must name a user of the tenant (in the batch
    /// or stored) or nothing is inserted (`manager_id`/`unknown_manager`).
    async fn insert_users(
        &mut self,
        tenant: TenantId,
        users: &[User],
        role: Option<RoleId>,
        at: Timestamp,
    ) -> Result<u64>;

    // --- credentials and sessions ---

    /// The user's credentials (empty ones for a user who has none), locked until commit;
    /// `NotFound("user")` for an unknown or deleted user.
    async fn credentials_for_update(
        &mut self,
        tenant: TenantId,
        user: UserId,
    ) -> Result<Credentials>;
    /// Writes the failure counters and lock of the user's credentials.
    async fn put_lock_state(
        &mut self,
        tenant: TenantId,
        user: UserId,
        state: &LockTransition,
    ) -> Result<()>;
    /// Stores the user's first password (with its history entry).
    async fn insert_password(
        &mut self,
        tenant: TenantId,
        user: UserId,
        password: &NewPassword,
        at: Timestamp,
    ) -> Result<()>;
    /// Sets or clears when the user's email was verified.
    async fn set_email_verified(
        &mut self,
        tenant: TenantId,
        user: UserId,
        at: Option<Timestamp>,
    ) -> Result<()>;
    /// Uses up the user's unused single-use tokens of these purposes; how many.
    async fn void_tokens(
        &mut self,
        tenant: TenantId,
        user: UserId,
        purposes: &[TokenPurpose],
        at: Timestamp,
    ) -> Result<u64>;
    /// Revokes the user's active sessions in `scope`, answering their ids (the caller
    /// records each).
    async fn revoke_sessions(
        &mut self,
        tenant: TenantId,
        user: UserId,
        scope: RevokeScope,
        reason: &str,
        at: Timestamp,
    ) -> Result<Vec<SessionId>>;
    /// The tenant's sign-in settings (the defaults when never set), locked for update.
    async fn auth_settings_for_update(&mut self, tenant: TenantId) -> Result<AuthSettings>;
    async fn put_auth_settings(&mut self, tenant: TenantId, settings: &AuthSettings) -> Result<()>;

    // --- authorization: names, permissions, roles, assignments ---

    /// Whether another role, group or policy of the tenant (not `except`) has the name.
    async fn name_taken(
        &mut self,
        kind: Named,
        tenant: TenantId,
        name: &str,
        except: Option<Uuid>,
    ) -> Result<bool>;
    /// The tenant's own permissions.
    async fn custom_permissions(&mut self, tenant: TenantId) -> Result<Vec<PermissionKey>>;
    /// Defines a permission; false when it exists.
    async fn insert_permission(&mut self, tenant: TenantId, p: &Permission) -> Result<bool>;
    /// A role of the tenant, or the super administrator role, with its permissions.
    async fn role(&mut self, tenant: TenantId, id: RoleId) -> Result<Option<Role>>;
    /// The tenant's role of this name.
    async fn role_named(&mut self, tenant: TenantId, name: &str) -> Result<Option<Role>>;
    /// Inserts a role with its permissions.
    async fn insert_role(&mut self, role: &Role) -> Result<()>;
    /// Writes a role's fields and replaces its permissions.
    async fn put_role(&mut self, role: &Role) -> Result<()>;
    /// Deletes a role with its permissions, assignments and group grants.
    async fn delete_role(&mut self, tenant: TenantId, id: RoleId) -> Result<()>;
    async fn assignment(
        &mut self,
        tenant: TenantId,
        user: UserId,
        role: RoleId,
    ) -> Result<Option<RoleAssignment>>;
    /// Inserts the assignment, or updates its expiry.
    async fn put_assignment(&mut self, tenant: TenantId, a: &RoleAssignment) -> Result<()>;
    async fn delete_assignment(
        &mut self,
        tenant: TenantId,
        user: UserId,
        role: RoleId,
    ) -> Result<()>;
    /// Every holder whose super administrator role counts at `now`, platform-wide.
    async fn super_admin_holders(&mut self, now: Timestamp) -> Result<Vec<SuperAdminHolder>>;

    // --- groups ---

    async fn group(&mut self, tenant: TenantId, id: GroupId) -> Result<Option<Group>>;
    /// The parent of every group of the tenant.
    async fn group_parents(
        &mut self,
        tenant: TenantId,
    ) -> Result<HashMap<GroupId, Option<GroupId>>>;
    async fn group_has_children(&mut self, tenant: TenantId, id: GroupId) -> Result<bool>;
    async fn insert_group(&mut self, group: &Group) -> Result<()>;
    async fn put_group(&mut self, group: &Group) -> Result<()>;
    /// Deletes a group with its memberships and role grants.
    async fn delete_group(&mut self, tenant: TenantId, id: GroupId) -> Result<()>;
    /// A membership, whatever the user's state.
    async fn member(
        &mut self,
        tenant: TenantId,
        group: GroupId,
        user: UserId,
    ) -> Result<Option<GroupMember>>;
    /// Every member of the group, whatever their state (what `max_members` limits).
    async fn count_members(&mut self, tenant: TenantId, group: GroupId) -> Result<i64>;
    /// Those of `users` who are members of the group, whatever their state.
    async fn members_among(
        &mut self,
        tenant: TenantId,
        group: GroupId,
        users: &[UserId],
    ) -> Result<HashSet<UserId>>;
    /// Adds members (none of them one already); answers the memberships as stored, by
    /// user.
    async fn insert_members(
        &mut self,
        tenant: TenantId,
        group: GroupId,
        users: &[UserId],
        role_in_group: GroupMemberRole,
        by: Actor,
        at: Timestamp,
    ) -> Result<HashMap<UserId, GroupMember>>;
    async fn put_member_role(
        &mut self,
        tenant: TenantId,
        group: GroupId,
        user: UserId,
        role_in_group: GroupMemberRole,
    ) -> Result<()>;
    async fn delete_member(&mut self, tenant: TenantId, group: GroupId, user: UserId)
        -> Result<()>;
    /// Roles granted to the group itself.
    async fn group_roles(&mut self, tenant: TenantId, group: GroupId) -> Result<Vec<Role>>;
    /// Grants a role to a group; false when already granted.
    async fn insert_group_role(
        &mut self,
        tenant: TenantId,
        group: GroupId,
        role: RoleId,
        at: Timestamp,
    ) -> Result<bool>;
    /// Takes a role from a group; false when it was not granted.
    async fn delete_group_role(
        &mut self,
        tenant: TenantId,
        group: GroupId,
        role: RoleId,
    ) -> Result<bool>;

    // --- policies ---

    async fn policy(&mut self, tenant: TenantId, id: PolicyId) -> Result<Option<Policy>>;
    /// Inserts a policy and the first entry of its history.
    async fn insert_policy(&mut self, policy: &Policy, by: Actor) -> Result<()>;
    /// Writes a policy and adds its new version to the history.
    async fn put_policy(&mut self, policy: &Policy, by: Actor) -> Result<()>;
    /// Deletes a policy with its history.
    async fn delete_policy(&mut self, tenant: TenantId, id: PolicyId) -> Result<()>;
}
