//! Set-up for the stores' own tests (feature `testing`): rows written through the
//! transaction primitives, without the services' rules, for tests of SQL plans, triggers,
//! migrations and speed. Everything else is tested through the services. Set-up that
//! fails panics: it is test code.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use serde_json::Map;

use crate::audit::{actions, AuditContext, AuditEvent, EntityRef};
use crate::authz::default_roles;
use crate::ids::{RoleId, TenantId, UserId};
use crate::store::Store;
use crate::tenants::{NewTenant, Plan, Tenant, TenantSlug};
use crate::time::now;
use crate::users::{User, UserStatus};
use crate::values::{DisplayName, JsonObject};

/// A tenant with its default roles and its creation event, as the services create one.
///
/// # Panics
/// When the store refuses (a test set-up failure).
pub async fn tenant(store: &dyn Store, slug: &str) -> Tenant {
    let new = NewTenant {
        slug: TenantSlug::parse("slug", slug).expect("slug"),
        display_name: DisplayName::parse("display_name", slug).expect("display name"),
        plan: Plan::Enterprise,
        max_users: None,
        trial_ends_at: None,
        settings: JsonObject::default(),
    };
    let t = new.into_tenant(now());
    let mut tx = store.begin().await.expect("begin");
    tx.insert_tenant(&t).await.expect("insert tenant");
    tx.lock_authz(t.id).await.expect("lock authz");
    for d in default_roles() {
        tx.insert_role(&d.into_role(t.id, t.created_at))
            .await
            .expect("insert role");
    }
    let created = AuditEvent::record(
        &AuditContext::system(),
        t.id,
        actions::TENANT_CREATE,
        EntityRef::tenant(t.id),
        (None, None),
        t.created_at,
    );
    tx.record(&created).await.expect("record");
    tx.commit().await.expect("commit");
    t
}

/// Inserts users in bulk, each holding `role` when given; how many were inserted.
///
/// # Panics
/// When the store refuses.
pub async fn seed(
    store: &dyn Store,
    tenant: TenantId,
    users: &[User],
    role: Option<RoleId>,
) -> u64 {
    let mut tx = store.begin().await.expect("begin");
    let n = tx
        .insert_users(tenant, users, role, now())
        .await
        .expect("insert users");
    tx.commit().await.expect("commit");
    n
}

/// Writes every mutable column of a changed user.
///
/// # Panics
/// When the store refuses.
pub async fn put_user(store: &dyn Store, user: &User) {
    let mut tx = store.begin().await.expect("begin");
    tx.put_user(user).await.expect("put user");
    tx.commit().await.expect("commit");
}

/// An active user of `tenant` named after `email`, not yet stored.
pub fn user(tenant: TenantId, email: &str) -> User {
    let at = now();
    User {
        id: UserId::new(),
        tenant_id: tenant,
        email: email.to_owned(),
        username: None,
        full_name: email.to_owned(),
        phone: None,
        department: None,
        job_title: None,
        employee_id: None,
        manager_id: None,
        cost_center: None,
        clearance_level: None,
        language: None,
        avatar_url: None,
        custom_attributes: Map::new(),
        status: UserStatus::Active,
        last_login_at: None,
        created_at: at,
        updated_at: at,
        deleted_at: None,
        version: 1,
    }
}
