//! The write transaction ([`domain::store::Tx`]) on the single writer connection: while it
//! is open no other writer runs, so what it reads cannot change under it and the locks of
//! the trait are no-ops here. Each primitive is a function of the capability's module.

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use domain::api_keys::{ApiKey, KeyHash};
use domain::audit::{Actor, AuditEvent};
use domain::auth::{
    AuthSettings, Credentials, LockTransition, NewPassword, RevokeScope, TokenPurpose,
};
use domain::authz::{
    Group, GroupMember, GroupMemberRole, Permission, PermissionKey, Policy, Role, RoleAssignment,
};
use domain::events::Event;
use domain::ids::{ApiKeyId, GroupId, PolicyId, RoleId, SessionId, TenantId, UserId};
use domain::store::{Named, SuperAdminHolder, Tx, UserQuota};
use domain::tenants::Tenant;
use domain::time::Timestamp;
use domain::users::User;
use sqlx::{Sqlite, Transaction};
use uuid::Uuid;

use crate::authz::{groups, policies, roles};
use crate::error::{write_err, Result};
use crate::{api_keys, audit, auth, authz, tenants, users};

pub(crate) struct SqliteTx {
    pub(crate) tx: Transaction<'static, Sqlite>,
    pub(crate) events: Vec<Event>,
}

#[async_trait]
impl Tx for SqliteTx {
    async fn commit(self: Box<Self>) -> Result<Vec<Event>> {
        let SqliteTx { tx, events } = *self;
        // Deferred foreign keys (a seeded batch's managers) are checked here.
        tx.commit().await.map_err(write_err)?;
        Ok(events)
    }

    async fn record(&mut self, event: &AuditEvent) -> Result<()> {
        let e = audit::insert(&mut self.tx, event).await?;
        self.events.push(e);
        Ok(())
    }

    async fn record_all(&mut self, events: &[AuditEvent]) -> Result<()> {
        let written = audit::insert_all(&mut self.tx, events).await?;
        self.events.extend(written);
        Ok(())
    }

    async fn lock_authz(&mut self, tenant: TenantId) -> Result<()> {
        authz::bump_version(&mut self.tx, tenant).await
    }

    async fn lock_super_admins(&mut self) -> Result<()> {
        Ok(())
    }

    async fn insert_tenant(&mut self, tenant: &Tenant) -> Result<()> {
        tenants::insert(&mut self.tx, tenant).await
    }

    async fn tenant_for_update(&mut self, id: TenantId) -> Result<Tenant> {
        tenants::load(&mut self.tx, id).await
    }

    async fn put_tenant(&mut self, tenant: &Tenant) -> Result<()> {
        tenants::put(&mut self.tx, tenant).await
    }

    async fn revoke_tenant_sessions(
        &mut self,
        tenant: TenantId,
        reason: &str,
        at: Timestamp,
    ) -> Result<u64> {
        tenants::revoke_sessions(&mut self.tx, tenant, reason, at).await
    }

    async fn insert_api_key(&mut self, key: &ApiKey, hash: &KeyHash) -> Result<()> {
        api_keys::insert(&mut self.tx, key, hash).await
    }

    async fn api_key_for_update(
        &mut self,
        tenant: TenantId,
        id: ApiKeyId,
    ) -> Result<Option<ApiKey>> {
        api_keys::load(&mut self.tx, tenant, id).await
    }

    async fn put_api_key(&mut self, key: &ApiKey) -> Result<()> {
        api_keys::put(&mut self.tx, key).await
    }

    async fn user_quota(&mut self, tenant: TenantId) -> Result<UserQuota> {
        tenants::user_quota(&mut self.tx, tenant).await
    }

    async fn user_for_update(&mut self, tenant: TenantId, id: UserId) -> Result<Option<User>> {
        users::load(&mut self.tx, tenant, id).await
    }

    async fn user_is_live(&mut self, tenant: TenantId, id: UserId) -> Result<bool> {
        users::is_live(&mut self.tx, tenant, id).await
    }

    async fn live_users(&mut self, tenant: TenantId, ids: &[UserId]) -> Result<HashSet<UserId>> {
        users::live_among(&mut self.tx, tenant, ids).await
    }

    async fn manager_chain_reaches(
        &mut self,
        tenant: TenantId,
        manager: UserId,
        user: UserId,
    ) -> Result<bool> {
        users::manager_chain_reaches(&mut self.tx, tenant, manager, user).await
    }

    async fn insert_user(&mut self, user: &User) -> Result<()> {
        users::insert(&mut self.tx, user).await
    }

    async fn put_user(&mut self, user: &User) -> Result<()> {
        users::put(&mut self.tx, user).await
    }

    async fn insert_users(
        &mut self,
        tenant: TenantId,
        users: &[User],
        role: Option<RoleId>,
        at: Timestamp,
    ) -> Result<u64> {
        users::insert_many(&mut self.tx, tenant, users, role, at).await
    }

    async fn credentials_for_update(
        &mut self,
        tenant: TenantId,
        user: UserId,
    ) -> Result<Credentials> {
        auth::credentials_for_update(&mut self.tx, tenant, user).await
    }

    async fn put_lock_state(
        &mut self,
        tenant: TenantId,
        user: UserId,
        state: &LockTransition,
    ) -> Result<()> {
        auth::put_lock_state(&mut self.tx, tenant, user, state).await
    }

    async fn insert_password(
        &mut self,
        tenant: TenantId,
        user: UserId,
        password: &NewPassword,
        at: Timestamp,
    ) -> Result<()> {
        auth::store_password(&mut self.tx, tenant, user, password, at).await?;
        Ok(())
    }

    async fn set_email_verified(
        &mut self,
        tenant: TenantId,
        user: UserId,
        at: Option<Timestamp>,
    ) -> Result<()> {
        auth::set_email_verified(&mut self.tx, tenant, user, at).await
    }

    async fn void_tokens(
        &mut self,
        tenant: TenantId,
        user: UserId,
        purposes: &[TokenPurpose],
        at: Timestamp,
    ) -> Result<u64> {
        auth::void_tokens(&mut self.tx, tenant, user, purposes, at).await
    }

    async fn revoke_sessions(
        &mut self,
        tenant: TenantId,
        user: UserId,
        scope: RevokeScope,
        reason: &str,
        at: Timestamp,
    ) -> Result<Vec<SessionId>> {
        auth::revoke_user_sessions(&mut self.tx, tenant, user, scope, reason, at, None).await
    }

    async fn auth_settings_for_update(&mut self, tenant: TenantId) -> Result<AuthSettings> {
        auth::load_settings(&mut self.tx, tenant).await
    }

    async fn put_auth_settings(&mut self, tenant: TenantId, settings: &AuthSettings) -> Result<()> {
        auth::put_settings(&mut self.tx, tenant, settings).await
    }

    async fn name_taken(
        &mut self,
        kind: Named,
        tenant: TenantId,
        name: &str,
        except: Option<Uuid>,
    ) -> Result<bool> {
        authz::name_taken(&mut self.tx, kind, tenant, name, except).await
    }

    async fn custom_permissions(&mut self, tenant: TenantId) -> Result<Vec<PermissionKey>> {
        roles::custom_permission_keys(&mut self.tx, tenant).await
    }

    async fn insert_permission(&mut self, tenant: TenantId, p: &Permission) -> Result<bool> {
        roles::insert_permission(&mut self.tx, tenant, p).await
    }

    async fn role(&mut self, tenant: TenantId, id: RoleId) -> Result<Option<Role>> {
        roles::find(&mut self.tx, tenant, id).await
    }

    async fn role_named(&mut self, tenant: TenantId, name: &str) -> Result<Option<Role>> {
        roles::find_named(&mut self.tx, tenant, name).await
    }

    async fn insert_role(&mut self, role: &Role) -> Result<()> {
        roles::insert(&mut self.tx, role).await
    }

    async fn put_role(&mut self, role: &Role) -> Result<()> {
        roles::put(&mut self.tx, role).await
    }

    async fn delete_role(&mut self, tenant: TenantId, id: RoleId) -> Result<()> {
        roles::delete(&mut self.tx, tenant, id).await
    }

    async fn assignment(
        &mut self,
        tenant: TenantId,
        user: UserId,
        role: RoleId,
    ) -> Result<Option<RoleAssignment>> {
        roles::find_assignment(&mut self.tx, tenant, user, role).await
    }

    async fn put_assignment(&mut self, tenant: TenantId, a: &RoleAssignment) -> Result<()> {
        roles::put_assignment(&mut self.tx, tenant, a).await
    }

    async fn delete_assignment(
        &mut self,
        tenant: TenantId,
        user: UserId,
        role: RoleId,
    ) -> Result<()> {
        roles::delete_assignment(&mut self.tx, tenant, user, role).await
    }

    async fn super_admin_holders(&mut self, now: Timestamp) -> Result<Vec<SuperAdminHolder>> {
        roles::super_admin_holders(&mut self.tx, now).await
    }

    async fn group(&mut self, tenant: TenantId, id: GroupId) -> Result<Option<Group>> {
        groups::find(&mut self.tx, tenant, id).await
    }

    async fn group_parents(
        &mut self,
        tenant: TenantId,
    ) -> Result<HashMap<GroupId, Option<GroupId>>> {
        groups::parents(&mut self.tx, tenant).await
    }

    async fn group_has_children(&mut self, tenant: TenantId, id: GroupId) -> Result<bool> {
        groups::has_children(&mut self.tx, tenant, id).await
    }

    async fn insert_group(&mut self, group: &Group) -> Result<()> {
        groups::insert(&mut self.tx, group).await
    }

    async fn put_group(&mut self, group: &Group) -> Result<()> {
        groups::put(&mut self.tx, group).await
    }

    async fn delete_group(&mut self, tenant: TenantId, id: GroupId) -> Result<()> {
        groups::delete(&mut self.tx, tenant, id).await
    }

    async fn member(
        &mut self,
        tenant: TenantId,
        group: GroupId,
        user: UserId,
    ) -> Result<Option<GroupMember>> {
        groups::find_member(&mut self.tx, tenant, group, user).await
    }

    async fn count_members(&mut self, tenant: TenantId, group: GroupId) -> Result<i64> {
        groups::count_members(&mut self.tx, tenant, group).await
    }

    async fn members_among(
        &mut self,
        tenant: TenantId,
        group: GroupId,
        users: &[UserId],
    ) -> Result<HashSet<UserId>> {
        groups::members_among(&mut self.tx, tenant, group, users).await
    }

    async fn insert_members(
        &mut self,
        tenant: TenantId,
        group: GroupId,
        users: &[UserId],
        role_in_group: GroupMemberRole,
        by: Actor,
        at: Timestamp,
    ) -> Result<HashMap<UserId, GroupMember>> {
        groups::insert_members(&mut self.tx, tenant, group, users, role_in_group, by, at).await
    }

    async fn put_member_role(
        &mut self,
        tenant: TenantId,
        group: GroupId,
        user: UserId,
        role_in_group: GroupMemberRole,
    ) -> Result<()> {
        groups::put_member_role(&mut self.tx, tenant, group, user, role_in_group).await
    }

    async fn delete_member(
        &mut self,
        tenant: TenantId,
        group: GroupId,
        user: UserId,
    ) -> Result<()> {
        groups::delete_member(&mut self.tx, tenant, group, user).await
    }

    async fn group_roles(&mut self, tenant: TenantId, group: GroupId) -> Result<Vec<Role>> {
        groups::roles(&mut self.tx, tenant, group).await
    }

    async fn insert_group_role(
        &mut self,
        tenant: TenantId,
        group: GroupId,
        role: RoleId,
        at: Timestamp,
    ) -> Result<bool> {
        groups::insert_role(&mut self.tx, tenant, group, role, at).await
    }

    async fn delete_group_role(
        &mut self,
        tenant: TenantId,
        group: GroupId,
        role: RoleId,
    ) -> Result<bool> {
        groups::delete_role(&mut self.tx, tenant, group, role).await
    }

    async fn policy(&mut self, tenant: TenantId, id: PolicyId) -> Result<Option<Policy>> {
        policies::find(&mut self.tx, tenant, id).await
    }

    async fn insert_policy(&mut self, policy: &Policy, by: Actor) -> Result<()> {
        policies::insert(&mut self.tx, policy, by).await
    }

    async fn put_policy(&mut self, policy: &Policy, by: Actor) -> Result<()> {
        policies::put(&mut self.tx, policy, by).await
    }

    async fn delete_policy(&mut self, tenant: TenantId, id: PolicyId) -> Result<()> {
        policies::delete(&mut self.tx, tenant, id).await
    }
}
