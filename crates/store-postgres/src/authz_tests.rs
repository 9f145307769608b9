//! What [`AuthzStore`] on PostgreSQL does beyond the shared contract: the backfill of
//! default roles by `migrate`, the `user` role of users seeded in several batches, the lock
//! order of user and authorization writes (no deadlock), and the bound on a manager chain
//! that loops.
//!
//! Each test works in a fresh schema of the database named by
//! `PORTCULLIS_TEST_DATABASE_URL`; without it they are skipped (with a message).

use std::time::Duration;

use domain::audit::{actions, Actor, AuditContext, AuditQuery};
use domain::authz::{
    default_roles, GroupMemberRole, GroupType, NewGroup, NewRole, Role, ADMIN_ROLE, MANAGER_ROLE,
    USER_ROLE,
};
use domain::page::PageSize;
use domain::tenants::{NewTenant, Plan, Tenant, TenantSlug};
use domain::time::now;
use domain::users::{NewUser, User, UserPatch, UserStatus};
use domain::values::{DisplayName, Email, Identifier, JsonObject};
use domain::{AuthzStore, Store, TenantId, UserId};
use uuid::Uuid;

use crate::auth_tests::run;
use crate::PgStore;

fn ctx() -> AuditContext {
    AuditContext {
        actor: Actor::System,
        ip: None,
        user_agent: Some("authz-test/1".into()),
        request_id: None,
    }
}

async fn tenant(store: &PgStore, slug: &str) -> Tenant {
    let new = NewTenant {
        slug: TenantSlug::parse("slug", slug).unwrap(),
        display_name: DisplayName::parse("display_name", slug).unwrap(),
        plan: Plan::Enterprise,
        max_users: None,
        trial_ends_at: None,
        settings: JsonObject::default(),
    };
    store.create_tenant(new, &ctx()).await.unwrap()
}

fn new_user(email: &str) -> NewUser {
    NewUser {
        email: Email::parse("email", email).unwrap(),
        username: None,
        full_name: DisplayName::parse("full_name", "Test User").unwrap(),
        phone: None,
        department: None,
        job_title: None,
        employee_id: None,
        manager_id: None,
        cost_center: None,
        clearance_level: None,
        language: None,
        avatar_url: None,
        custom_attributes: JsonObject::default(),
        status: UserStatus::Active,
    }
}

async fn user(store: &PgStore, tenant: TenantId, email: &str) -> User {
    store
        .create_user(tenant, new_user(email), &ctx())
        .await
        .unwrap()
}

fn seed_user(tenant: TenantId, i: usize) -> User {
    let at = now();
    User {
        id: UserId::new(),
        tenant_id: tenant,
        email: format!("seed{i}@example.com"),
        username: None,
        full_name: format!("Seeded {i}"),
        phone: None,
        department: None,
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
        created_at: at,
        updated_at: at,
        deleted_at: None,
        version: 1,
    }
}

async fn role_named(store: &PgStore, tenant: TenantId, name: &str) -> Option<Role> {
    store
        .list_roles(tenant)
        .await
        .unwrap()
        .into_iter()
        .find(|r| r.name == name)
}

/// How many users of the tenant hold `role` directly.
async fn holders(store: &PgStore, tenant: TenantId, role: &Role) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM user_roles WHERE tenant_id = $1 AND role_id = $2")
        .bind(tenant.into_uuid())
        .bind(role.id.into_uuid())
        .fetch_one(store.pool())
        .await
        .unwrap()
}

async fn exec(store: &PgStore, sql: &str, tenant: TenantId) {
    sqlx::query(sql)
        .bind(tenant.into_uuid())
        .execute(store.pool())
        .await
        .unwrap();
}

#[tokio::test]
async fn migrate_backfills_missing_default_roles_once() {
    run(|store| async move {
        // `old` stands for a tenant created before authorization existed: no roles, no
        // assignments, no version. `partial` lacks only its manager role.
        let old = tenant(&store, "old").await;
        let partial = tenant(&store, "partial").await;
        let live = user(&store, old.id, "live@example.com").await;
        let gone = user(&store, old.id, "gone@example.com").await;
        store
            .delete_user(old.id, gone.id, None, &ctx())
            .await
            .unwrap();
        store
            .seed_users(old.id, vec![seed_user(old.id, 1)], &ctx())
            .await
            .unwrap();
        let other = user(&store, partial.id, "p@example.com").await;
        exec(
            &store,
            "DELETE FROM user_roles WHERE tenant_id = $1",
            old.id,
        )
        .await;
        exec(&store, "DELETE FROM roles WHERE tenant_id = $1", old.id).await;
        exec(
            &store,
            "DELETE FROM authz_versions WHERE tenant_id = $1",
            old.id,
        )
        .await;
        exec(
            &store,
            "DELETE FROM roles WHERE tenant_id = $1 AND name = 'manager'",
            partial.id,
        )
        .await;
        let partial_user_role = role_named(&store, partial.id, USER_ROLE).await.unwrap();
        let partial_version = store.authz_version(partial.id).await.unwrap();
        assert_eq!(store.authz_version(old.id).await.unwrap(), 0);

        store.migrate().await.unwrap();

        let roles = store.list_roles(old.id).await.unwrap();
        for d in default_roles() {
            let r = roles.iter().find(|r| r.name == d.name).unwrap();
            assert_eq!(r.permissions, d.permissions);
            assert_eq!(r.tenant_id, Some(old.id));
        }
        // Every user of the tenant holds the new `user` role, the deleted one included.
        let user_role = role_named(&store, old.id, USER_ROLE).await.unwrap();
        assert_eq!(holders(&store, old.id, &user_role).await, 3);
        for u in [live.id, gone.id] {
            let held = store.list_user_roles(old.id, u).await.unwrap();
            assert_eq!(held.len(), 1);
            assert_eq!(held[0].role_name, USER_ROLE);
        }
        assert!(store.authz_version(old.id).await.unwrap() > 0);
        let q = AuditQuery {
            action: Some(actions::ROLE_CREATE.into()),
            limit: PageSize::new(Some(10)).unwrap(),
            ..Default::default()
        };
        let events = store.list_audit_events(old.id, &q).await.unwrap().items;
        assert_eq!(events.len(), 3);
        assert!(events.iter().all(|e| e.actor_id.is_none()));

        // The partial tenant gets its manager back and nothing else changes.
        assert!(role_named(&store, partial.id, MANAGER_ROLE).await.is_some());
        assert_eq!(
            role_named(&store, partial.id, USER_ROLE).await.unwrap(),
            partial_user_role
        );
        assert!(store.authz_version(partial.id).await.unwrap() > partial_version);
        let held = store.list_user_roles(partial.id, other.id).await.unwrap();
        assert_eq!(held.len(), 1);

        // Idempotent.
        let before: Vec<Vec<Role>> = vec![
            store.list_roles(old.id).await.unwrap(),
            store.list_roles(partial.id).await.unwrap(),
        ];
        let versions = (
            store.authz_version(old.id).await.unwrap(),
            store.authz_version(partial.id).await.unwrap(),
        );
        store.migrate().await.unwrap();
        let after: Vec<Vec<Role>> = vec![
            store.list_roles(old.id).await.unwrap(),
            store.list_roles(partial.id).await.unwrap(),
        ];
        assert_eq!(before, after);
        assert_eq!(
            versions,
            (
                store.authz_version(old.id).await.unwrap(),
                store.authz_version(partial.id).await.unwrap(),
            )
        );
        assert_eq!(holders(&store, old.id, &user_role).await, 3);
    })
    .await;
}

#[tokio::test]
async fn seeded_users_hold_the_user_role_across_batches() {
    run(|store| async move {
        let t = tenant(&store, "seeded").await;
        // More than one batch of SEED_BATCH (5,000).
        let n = 5_003;
        let users: Vec<User> = (0..n).map(|i| seed_user(t.id, i)).collect();
        assert_eq!(
            store.seed_users(t.id, users, &ctx()).await.unwrap(),
            n as u64
        );
        let user_role = role_named(&store, t.id, USER_ROLE).await.unwrap();
        assert_eq!(holders(&store, t.id, &user_role).await, n as i64);
        let admin = role_named(&store, t.id, ADMIN_ROLE).await.unwrap();
        assert_eq!(holders(&store, t.id, &admin).await, 0);
    })
    .await;
}

/// User writes lock the user row after the tenant's authorization version, like every
/// authorization write; sign-ins lock the user row alone. Racing all of them on one user
/// must neither deadlock nor fail.
#[tokio::test]
async fn user_and_authorization_writes_do_not_deadlock() {
    run(|store| async move {
        let t = tenant(&store, "race").await;
        let u = user(&store, t.id, "u@example.com").await;
        let role = store
            .create_role(
                t.id,
                NewRole {
                    name: Identifier::parse("name", "oncall").unwrap(),
                    display_name: DisplayName::parse("display_name", "On call").unwrap(),
                    description: None,
                    priority: 5,
                    active: true,
                    permissions: Vec::new(),
                },
                &ctx(),
            )
            .await
            .unwrap();
        let g = store
            .create_group(
                t.id,
                NewGroup {
                    name: Identifier::parse("name", "team").unwrap(),
                    display_name: DisplayName::parse("display_name", "Team").unwrap(),
                    description: None,
                    group_type: GroupType::Team,
                    parent_id: None,
                    max_members: None,
                    active: true,
                    settings: JsonObject::default(),
                },
                &ctx(),
            )
            .await
            .unwrap();
        let rounds = 20;
        let mut tasks = Vec::new();
        for i in 0..rounds {
            let s = store.clone();
            tasks.push(tokio::spawn(async move {
                let patch = UserPatch {
                    full_name: Some(DisplayName::parse("full_name", &format!("Name {i}")).unwrap()),
                    ..Default::default()
                };
                s.update_user(t.id, u.id, patch, None, &ctx())
                    .await
                    .map(|_| ())
            }));
            let s = store.clone();
            tasks.push(tokio::spawn(async move {
                if i % 2 == 0 {
                    s.assign_role(t.id, u.id, role.id, None, &ctx())
                        .await
                        .map(|_| ())
                } else {
                    match s.unassign_role(t.id, u.id, role.id, &ctx()).await {
                        Err(domain::Error::NotFound { .. }) => Ok(()),
                        other => other.map(|_| ()),
                    }
                }
            }));
            let s = store.clone();
            tasks.push(tokio::spawn(async move {
                if i % 2 == 0 {
                    s.add_group_members(t.id, g.id, vec![u.id], GroupMemberRole::Member, &ctx())
                        .await
                        .map(|_| ())
                } else {
                    match s.remove_group_member(t.id, g.id, u.id, &ctx()).await {
                        Err(domain::Error::NotFound { .. }) => Ok(()),
                        other => other.map(|_| ()),
                    }
                }
            }));
            let s = store.clone();
            tasks.push(tokio::spawn(async move {
                // A sign-in's write: the user row alone.
                sqlx::query("UPDATE users SET last_login_at = $3 WHERE tenant_id = $1 AND id = $2")
                    .bind(t.id.into_uuid())
                    .bind(u.id.into_uuid())
                    .bind(now())
                    .execute(s.pool())
                    .await
                    .map(|_| ())
                    .map_err(crate::error::db)
            }));
            let s = store.clone();
            tasks.push(tokio::spawn(async move {
                s.load_principal(t.id, u.id).await.map(|_| ())
            }));
        }
        let all = futures::future::join_all(tasks);
        let results = tokio::time::timeout(Duration::from_secs(60), all)
            .await
            .expect("no deadlock");
        for r in results {
            r.unwrap().unwrap();
        }
        let v = store.authz_version(t.id).await.unwrap();
        assert!(v >= i64::from(rounds), "{v}");
    })
    .await;
}

#[tokio::test]
async fn a_looping_manager_chain_is_cut_at_64() {
    run(|store| async move {
        let t = tenant(&store, "loop").await;
        let a = user(&store, t.id, "a@example.com").await;
        let b = user(&store, t.id, "b@example.com").await;
        // Written around the store's cycle check, as a damaged database could hold it.
        for (u, m) in [(a.id, b.id), (b.id, a.id)] {
            sqlx::query("UPDATE users SET manager_id = $3 WHERE tenant_id = $1 AND id = $2")
                .bind(t.id.into_uuid())
                .bind(u.into_uuid())
                .bind(m.into_uuid())
                .execute(store.pool())
                .await
                .unwrap();
        }
        let p = store.load_principal(t.id, a.id).await.unwrap().unwrap();
        assert_eq!(p.manager_chain.len(), 64);
        assert_eq!(p.manager_chain[0], b.id);
        assert_eq!(p.manager_chain[1], a.id);
        assert_eq!(p.assignments.len(), 1);
        assert_eq!(p.assignments[0].role_name, USER_ROLE);

        // Another tenant's id names nobody here.
        let other = tenant(&store, "other").await;
        assert!(store
            .load_principal(other.id, a.id)
            .await
            .unwrap()
            .is_none());
        assert!(store
            .load_principal(t.id, UserId::from_uuid(Uuid::now_v7()))
            .await
            .unwrap()
            .is_none());
    })
    .await;
}
