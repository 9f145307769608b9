//! A store with the services over it, for the contract suites: changes go through the
//! services (their rules, one transaction each) as the actor an [`AuditContext`] names,
//! reads go to the store (`Rig` dereferences to it). A context naming an API key acts as a
//! platform-admin key of the tenant the call names; one naming the system acts as the
//! operator; one naming a user acts as that user signed in (their roles decide).
//!
//! The methods keep the shape of the calls the suites make (tenant, change, context), so
//! that one case reads as the rule it checks.

use std::ops::Deref;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use domain::api_keys::{ApiKey, GeneratedKey, NewApiKey};
use domain::audit::{actions, Actor as AuditActor, AuditContext};
use domain::auth::{AuthSettings, NewPassword, SessionKind};
use domain::authz::{
    Group, GroupMember, GroupMemberRole, GroupPatch, MemberAddResult, NewGroup, NewPermission,
    NewPolicy, NewRole, Permission, PermissionKey, Policy, PolicyPatch, Role, RoleAssignment,
    RolePatch,
};
use domain::tenants::{NewTenant, Tenant, TenantPatch};
use domain::users::{NewUser, User, UserPatch};
use domain::{ApiKeyId, GroupId, PolicyId, Result, RoleId, SessionId, Store, TenantId, UserId};
use portcullis_services::{Actor, ActorKind, RequestMeta, Services, SessionPrincipal};

use crate::{fresh_store, Backend, DbGuard, MemoryMailer};

/// A fresh, migrated store and the services over it.
#[derive(Clone)]
pub struct Rig {
    pub store: Arc<dyn Store>,
    pub services: Arc<Services>,
    /// The configuration the services were started with (its master key decrypts the
    /// signing keys: another replica over the same store needs the same).
    pub config: portcullis::config::Config,
}

impl Deref for Rig {
    type Target = dyn Store;
    fn deref(&self) -> &(dyn Store + 'static) {
        self.store.as_ref()
    }
}

/// A rig on a fresh database of `backend`, and what keeps the database alive.
pub async fn fresh_rig(backend: Backend) -> Option<(Rig, DbGuard)> {
    let (store, guard) = fresh_store(backend).await?;
    let config = crate::test_config();
    let services = portcullis::app::start_services(
        store.clone(),
        &config,
        Some(Arc::new(MemoryMailer::new())),
    )
    .await
    .unwrap_or_else(|e| panic!("services: {e}"));
    Some((
        Rig {
            store,
            services,
            config,
        },
        guard,
    ))
}

/// Runs a case against a rig of `backend` (PostgreSQL skipped or mandatory as usual).
pub async fn with_rig<F, Fut>(backend: Backend, case: F)
where
    F: FnOnce(Rig) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let Some((rig, _db)) = fresh_rig(backend).await else {
        return;
    };
    case(rig).await;
}

/// Runs each named `async fn case(rig: Rig)` on SQLite and on PostgreSQL, on a runtime
/// with two workers so that concurrency cases really race.
#[macro_export]
macro_rules! rig_tests {
    ($($case:ident),+ $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    $crate::rig::with_rig($crate::Backend::Sqlite, super::$case).await;
                }
            )+
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    $crate::rig::with_rig($crate::Backend::Postgres, super::$case).await;
                }
            )+
        }
    };
}

/// The actor an audit context names, in `tenant`.
pub fn actor(tenant: TenantId, ctx: &AuditContext) -> Actor {
    let kind = match ctx.actor {
        AuditActor::ApiKey(id) => ActorKind::ApiKey {
            id,
            platform_admin: true,
        },
        AuditActor::System | AuditActor::Anonymous => ActorKind::System,
        AuditActor::User(id) => ActorKind::User(SessionPrincipal {
            tenant_id: tenant,
            user_id: id,
            session_id: SessionId::new(),
            kind: SessionKind::Token,
            amr: vec!["pwd".into()],
            mfa_level: 1,
        }),
    };
    Actor {
        tenant,
        kind,
        meta: RequestMeta {
            ip: ctx.ip.as_deref().and_then(|ip| ip.parse().ok()),
            user_agent: ctx.user_agent.clone(),
            request_id: ctx.request_id.clone(),
        },
    }
}

impl Rig {
    pub async fn create_tenant(&self, new: NewTenant, ctx: &AuditContext) -> Result<Tenant> {
        let a = actor(TenantId::from_uuid(uuid::Uuid::nil()), ctx);
        self.services.create_tenant(&a, new).await
    }

    /// `action` `tenant.deactivate` suspends, anything else updates.
    pub async fn update_tenant(
        &self,
        id: TenantId,
        patch: TenantPatch,
        action: &'static str,
        ctx: &AuditContext,
    ) -> Result<Tenant> {
        let a = actor(TenantId::from_uuid(uuid::Uuid::nil()), ctx);
        if action == actions::TENANT_DEACTIVATE {
            self.services.deactivate_tenant(&a, id).await
        } else {
            self.services.update_tenant(&a, id, patch).await
        }
    }

    pub async fn create_api_key(
        &self,
        tenant: TenantId,
        new: NewApiKey,
        ctx: &AuditContext,
    ) -> Result<(ApiKey, GeneratedKey)> {
        self.services
            .create_api_key(&actor(tenant, ctx), tenant, new)
            .await
    }

    pub async fn revoke_api_key(
        &self,
        tenant: TenantId,
        id: ApiKeyId,
        ctx: &AuditContext,
    ) -> Result<ApiKey> {
        self.services
            .revoke_api_key(&actor(tenant, ctx), tenant, id)
            .await
    }

    pub async fn create_user(
        &self,
        tenant: TenantId,
        new: NewUser,
        ctx: &AuditContext,
    ) -> Result<User> {
        self.services
            .create_user(&actor(tenant, ctx), new, true, None)
            .await
    }

    pub async fn create_user_with_password(
        &self,
        tenant: TenantId,
        new: NewUser,
        password: Option<NewPassword>,
        action: &'static str,
        ctx: &AuditContext,
    ) -> Result<User> {
        self.services
            .create_user_with_password(&actor(tenant, ctx), new, password, action)
            .await
    }

    /// As the operator, whatever `ctx` says (seeding is the operator's).
    pub async fn seed_users(
        &self,
        tenant: TenantId,
        users: Vec<User>,
        ctx: &AuditContext,
    ) -> Result<u64> {
        let mut a = Actor::system(tenant);
        a.meta = actor(tenant, ctx).meta;
        self.services.seed_users(&a, users).await
    }

    pub async fn update_user(
        &self,
        tenant: TenantId,
        id: UserId,
        patch: UserPatch,
        expected_version: Option<i64>,
        ctx: &AuditContext,
    ) -> Result<User> {
        self.services
            .update_user(&actor(tenant, ctx), id, patch, expected_version)
            .await
    }

    pub async fn delete_user(
        &self,
        tenant: TenantId,
        id: UserId,
        expected_version: Option<i64>,
        ctx: &AuditContext,
    ) -> Result<User> {
        self.services
            .delete_user(&actor(tenant, ctx), id, expected_version)
            .await
    }

    pub async fn restore_user(
        &self,
        tenant: TenantId,
        id: UserId,
        ctx: &AuditContext,
    ) -> Result<User> {
        self.services.restore_user(&actor(tenant, ctx), id).await
    }

    pub async fn put_auth_settings(
        &self,
        tenant: TenantId,
        settings: &AuthSettings,
        ctx: &AuditContext,
    ) -> Result<AuthSettings> {
        self.services
            .put_auth_settings(&actor(tenant, ctx), settings.clone())
            .await
    }

    pub async fn create_permission(
        &self,
        tenant: TenantId,
        new: NewPermission,
        ctx: &AuditContext,
    ) -> Result<Permission> {
        self.services
            .create_permission(&actor(tenant, ctx), new)
            .await
    }

    pub async fn create_role(
        &self,
        tenant: TenantId,
        new: NewRole,
        ctx: &AuditContext,
    ) -> Result<Role> {
        self.services.create_role(&actor(tenant, ctx), new).await
    }

    pub async fn update_role(
        &self,
        tenant: TenantId,
        id: RoleId,
        patch: RolePatch,
        ctx: &AuditContext,
    ) -> Result<Role> {
        self.services
            .update_role(&actor(tenant, ctx), id, patch)
            .await
    }

    pub async fn delete_role(
        &self,
        tenant: TenantId,
        id: RoleId,
        ctx: &AuditContext,
    ) -> Result<Role> {
        self.services.delete_role(&actor(tenant, ctx), id).await
    }

    pub async fn update_role_permissions(
        &self,
        tenant: TenantId,
        id: RoleId,
        add: Vec<PermissionKey>,
        remove: Vec<PermissionKey>,
        ctx: &AuditContext,
    ) -> Result<Role> {
        self.services
            .update_role_permissions(&actor(tenant, ctx), id, add, remove)
            .await
    }

    pub async fn assign_role(
        &self,
        tenant: TenantId,
        user: UserId,
        role: RoleId,
        expires_at: Option<DateTime<Utc>>,
        ctx: &AuditContext,
    ) -> Result<(RoleAssignment, bool)> {
        self.services
            .assign_role(&actor(tenant, ctx), user, role, expires_at)
            .await
    }

    pub async fn unassign_role(
        &self,
        tenant: TenantId,
        user: UserId,
        role: RoleId,
        ctx: &AuditContext,
    ) -> Result<RoleAssignment> {
        self.services
            .unassign_role(&actor(tenant, ctx), user, role)
            .await
    }

    pub async fn create_group(
        &self,
        tenant: TenantId,
        new: NewGroup,
        ctx: &AuditContext,
    ) -> Result<Group> {
        self.services.create_group(&actor(tenant, ctx), new).await
    }

    pub async fn update_group(
        &self,
        tenant: TenantId,
        id: GroupId,
        patch: GroupPatch,
        ctx: &AuditContext,
    ) -> Result<Group> {
        self.services
            .update_group(&actor(tenant, ctx), id, patch)
            .await
    }

    pub async fn delete_group(
        &self,
        tenant: TenantId,
        id: GroupId,
        ctx: &AuditContext,
    ) -> Result<Group> {
        self.services.delete_group(&actor(tenant, ctx), id).await
    }

    pub async fn add_group_members(
        &self,
        tenant: TenantId,
        group: GroupId,
        users: Vec<UserId>,
        role_in_group: GroupMemberRole,
        ctx: &AuditContext,
    ) -> Result<Vec<MemberAddResult>> {
        self.services
            .add_members(&actor(tenant, ctx), group, users, role_in_group)
            .await
    }

    pub async fn update_group_member(
        &self,
        tenant: TenantId,
        group: GroupId,
        user: UserId,
        role_in_group: GroupMemberRole,
        ctx: &AuditContext,
    ) -> Result<GroupMember> {
        self.services
            .update_member(&actor(tenant, ctx), group, user, role_in_group)
            .await
    }

    pub async fn remove_group_member(
        &self,
        tenant: TenantId,
        group: GroupId,
        user: UserId,
        ctx: &AuditContext,
    ) -> Result<GroupMember> {
        self.services
            .remove_member(&actor(tenant, ctx), group, user)
            .await
    }

    pub async fn grant_group_role(
        &self,
        tenant: TenantId,
        group: GroupId,
        role: RoleId,
        ctx: &AuditContext,
    ) -> Result<Role> {
        self.services
            .grant_group_role(&actor(tenant, ctx), group, role)
            .await
    }

    pub async fn revoke_group_role(
        &self,
        tenant: TenantId,
        group: GroupId,
        role: RoleId,
        ctx: &AuditContext,
    ) -> Result<Role> {
        self.services
            .revoke_group_role(&actor(tenant, ctx), group, role)
            .await
    }

    pub async fn create_policy(
        &self,
        tenant: TenantId,
        new: NewPolicy,
        ctx: &AuditContext,
    ) -> Result<Policy> {
        self.services.create_policy(&actor(tenant, ctx), new).await
    }

    pub async fn update_policy(
        &self,
        tenant: TenantId,
        id: PolicyId,
        patch: PolicyPatch,
        expected_version: Option<i64>,
        ctx: &AuditContext,
    ) -> Result<Policy> {
        let change = portcullis_services::policies::PolicyChange {
            name: patch.name,
            description: patch.description,
            source: patch.source.map(|(s, _)| s),
            active: patch.active,
        };
        self.services
            .update_policy(&actor(tenant, ctx), id, change, expected_version)
            .await
    }

    pub async fn delete_policy(
        &self,
        tenant: TenantId,
        id: PolicyId,
        ctx: &AuditContext,
    ) -> Result<Policy> {
        self.services.delete_policy(&actor(tenant, ctx), id).await
    }
}
