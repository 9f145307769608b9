//! What only the PostgreSQL store has: the back-fill of default roles by `migrate`, the
//! `user` role of users seeded in several batches, the bound on a manager chain that
//! loops, and the schema's own guarantees (user references stay in their tenant, the audit
//! trail refuses TRUNCATE). Everything shared with SQLite is the contract suite in `testkit`.
//!
//! Each test works in a fresh schema of the database named by
//! `PORTCULLIS_TEST_DATABASE_URL`; without it they are skipped with a message, except under
//! CI (`CI` set), where a missing database fails them.

use std::future::Future;
use std::panic::AssertUnwindSafe;

use domain::audit::{actions, AuditQuery};
use domain::authz::{default_roles, Role, ADMIN_ROLE, MANAGER_ROLE, USER_ROLE};
use domain::page::PageSize;
use domain::testing;
use domain::time::now;
use domain::users::User;
use domain::{AuthzStore, Store, TenantId, UserId};
use futures::FutureExt;
use uuid::Uuid;

use crate::PgStore;

const URL_VAR: &str = "PORTCULLIS_TEST_DATABASE_URL";

/// Runs `case` against a migrated store in a fresh schema, dropped afterwards whatever the
/// outcome.
async fn run<F, Fut>(case: F)
where
    F: FnOnce(PgStore) -> Fut,
    Fut: Future<Output = ()>,
{
    let url = match std::env::var(URL_VAR) {
        Ok(url) if !url.is_empty() => url,
        _ if std::env::var_os("CI").is_some() => {
            panic!("{URL_VAR} is not set, but CI is: the PostgreSQL tests must run in CI")
        }
        _ => {
            eprintln!("skipping: {URL_VAR} is not set");
            return;
        }
    };
    let schema = format!("store_{}", Uuid::now_v7().simple());
    let store = PgStore::connect_in_schema(&url, &schema, 4)
        .await
        .unwrap_or_else(|e| panic!("cannot reach PostgreSQL at {url}: {e:?}"));
    store.migrate().await.unwrap();
    let outcome = AssertUnwindSafe(case(store.clone())).catch_unwind().await;
    store.close().await;
    PgStore::drop_schema(&url, &schema).await.unwrap();
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

async fn user(store: &PgStore, tenant: TenantId, email: &str) -> User {
    let u = testing::user(tenant, email);
    let role = role_named(store, tenant, USER_ROLE).await.map(|r| r.id);
    testing::seed(store, tenant, std::slice::from_ref(&u), role).await;
    u
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
        let old = testing::tenant(&store, "old").await;
        let partial = testing::tenant(&store, "partial").await;
        let live = user(&store, old.id, "live@example.com").await;
        let gone = user(&store, old.id, "gone@example.com").await;
        testing::put_user(&store, &gone.soft_deleted(now())).await;
        testing::seed(
            &store,
            old.id,
            &[testing::user(old.id, "seed@example.com")],
            None,
        )
        .await;
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
        let t = testing::tenant(&store, "seeded").await;
        // More than one batch of SEED_BATCH (5,000).
        let n = 5_003;
        let users: Vec<User> = (0..n)
            .map(|i| testing::user(t.id, &format!("seed{i}@example.com")))
            .collect();
        let user_role = role_named(&store, t.id, USER_ROLE).await.unwrap();
        assert_eq!(
            testing::seed(&store, t.id, &users, Some(user_role.id)).await,
            n as u64
        );
        assert_eq!(holders(&store, t.id, &user_role).await, n as i64);
        let admin = role_named(&store, t.id, ADMIN_ROLE).await.unwrap();
        assert_eq!(holders(&store, t.id, &admin).await, 0);
    })
    .await;
}

#[tokio::test]
async fn a_looping_manager_chain_is_cut_at_64() {
    run(|store| async move {
        let t = testing::tenant(&store, "loop").await;
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
        let other = testing::tenant(&store, "other").await;
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

#[tokio::test]
async fn the_schema_keeps_user_references_inside_their_tenant() {
    run(|store| async move {
        let a = testing::tenant(&store, "acme").await;
        let b = testing::tenant(&store, "globex").await;
        let ann = user(&store, a.id, "ann@acme.test").await;
        let bob = user(&store, b.id, "bob@globex.test").await;
        // A manager of another tenant.
        let err = sqlx::query("UPDATE users SET manager_id = $3 WHERE tenant_id = $1 AND id = $2")
            .bind(a.id.into_uuid())
            .bind(ann.id.into_uuid())
            .bind(bob.id.into_uuid())
            .execute(store.pool())
            .await
            .unwrap_err();
        assert!(err.to_string().contains("users_manager_fkey"), "{err}");
        // A session, a membership or an assignment for another tenant's user.
        for sql in [
            "INSERT INTO user_credentials (tenant_id, user_id) VALUES ($1, $2)",
            "INSERT INTO user_roles (tenant_id, user_id, role_id, assigned_by_type, assigned_at) \
             VALUES ($1, $2, gen_random_uuid(), 'system', now())",
        ] {
            let err = sqlx::query(sql)
                .bind(a.id.into_uuid())
                .bind(bob.id.into_uuid())
                .execute(store.pool())
                .await
                .unwrap_err();
            assert!(err.to_string().contains("foreign key"), "{sql}: {err}");
        }
    })
    .await;
}

#[tokio::test]
async fn the_audit_trail_refuses_truncate() {
    run(|store| async move {
        testing::tenant(&store, "acme").await;
        let err = sqlx::query("TRUNCATE audit_events")
            .execute(store.pool())
            .await
            .unwrap_err();
        assert!(err.to_string().contains("append-only"), "{err}");
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_events")
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_eq!(n, 1);
    })
    .await;
}
