//! The storage interface. One trait, two implementations (`store-sqlite`, `store-postgres`),
//! one contract test suite. Every method that touches tenant data takes the `TenantId`, so
//! isolation is a property of the API, not of each caller's diligence. Every mutation runs
//! in one transaction together with its audit event: it happens entirely or not at all.
//!
//! Invariants each backend enforces inside the transaction:
//! - email and username are unique per tenant, case-insensitively (soft-deleted users keep
//!   theirs, so that they can be restored) → `Error::Conflict` naming the field;
//! - a manager is a non-deleted user of the same tenant and the manager chain has no cycle
//!   → `Error::Validation` on `manager_id`;
//! - creating or restoring a user respects the tenant's `max_users` → `Error::QuotaExceeded`;
//! - `expected_version` (from `If-Match`) must equal the current version →
//!   `Error::PreconditionFailed`;
//! - suspending a tenant (`update_tenant` to `suspended`) revokes every session of its
//!   users (reason `tenant_suspended`).

use async_trait::async_trait;

use crate::api_keys::{ApiKey, ApiKeyAuth, KeyHash, NewApiKey};
use crate::audit::{AuditContext, AuditEvent, AuditQuery};
use crate::error::Result;
use crate::ids::{ApiKeyId, TenantId, UserId};
use crate::page::Page;
use crate::tenants::{NewTenant, Tenant, TenantListQuery, TenantPatch, TenantSlug};
use crate::users::{NewUser, User, UserListQuery, UserPatch};

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

    // --- tenants (platform scope) ---

    async fn create_tenant(&self, new: NewTenant, ctx: &AuditContext) -> Result<Tenant>;
    async fn get_tenant(&self, id: TenantId) -> Result<Tenant>;
    async fn get_tenant_by_slug(&self, slug: &TenantSlug) -> Result<Tenant>;
    async fn list_tenants(&self, q: &TenantListQuery) -> Result<Page<Tenant>>;
    /// Applies `patch`; the audit action is `action` (update or deactivate).
    async fn update_tenant(
        &self,
        id: TenantId,
        patch: TenantPatch,
        action: &'static str,
        ctx: &AuditContext,
    ) -> Result<Tenant>;

    // --- API keys ---

    async fn create_api_key(
        &self,
        tenant: TenantId,
        new: NewApiKey,
        hash: &KeyHash,
        prefix: &str,
        ctx: &AuditContext,
    ) -> Result<ApiKey>;
    /// Finds a non-revoked key by its hash. Not tenant-scoped by design: the key is what
    /// names the tenant.
    async fn authenticate_api_key(&self, hash: &KeyHash) -> Result<Option<ApiKeyAuth>>;
    async fn list_api_keys(&self, tenant: TenantId) -> Result<Vec<ApiKey>>;
    /// Revokes a key; an unknown, another tenant's or an already revoked key is `NotFound`.
    async fn revoke_api_key(
        &self,
        tenant: TenantId,
        id: ApiKeyId,
        ctx: &AuditContext,
    ) -> Result<ApiKey>;

    // --- users ---

    async fn create_user(&self, tenant: TenantId, new: NewUser, ctx: &AuditContext)
        -> Result<User>;
    /// Inserts many users in large batches for the data generator: uniqueness is still
    /// enforced, and every `manager_id` must name a user of the same tenant (in the batch or
    /// already stored) or nothing is inserted (`manager_id`/`unknown_manager`); the quota
    /// is not enforced. Rows go to `tenant` whatever their `tenant_id` says. One audit
    /// event records the batch.
    async fn seed_users(
        &self,
        tenant: TenantId,
        users: Vec<User>,
        ctx: &AuditContext,
    ) -> Result<u64>;
    /// A user, deleted or not.
    async fn get_user(&self, tenant: TenantId, id: UserId) -> Result<User>;
    async fn list_users(&self, tenant: TenantId, q: &UserListQuery) -> Result<Page<User>>;
    async fn update_user(
        &self,
        tenant: TenantId,
        id: UserId,
        patch: UserPatch,
        expected_version: Option<i64>,
        ctx: &AuditContext,
    ) -> Result<User>;
    /// Soft-deletes a user (a deleted user is `NotFound` here).
    async fn delete_user(
        &self,
        tenant: TenantId,
        id: UserId,
        expected_version: Option<i64>,
        ctx: &AuditContext,
    ) -> Result<User>;
    /// Undoes a soft delete (a user that is not deleted is a `Conflict`).
    async fn restore_user(&self, tenant: TenantId, id: UserId, ctx: &AuditContext) -> Result<User>;

    // --- audit ---

    async fn list_audit_events(&self, tenant: TenantId, q: &AuditQuery)
        -> Result<Page<AuditEvent>>;
}
