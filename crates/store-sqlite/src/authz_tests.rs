//! Tests of what only the SQLite authorization store has: the plans of the reads the
//! decision engine makes on a cache miss, the back-fill of default roles after migrating an
//! older database, and the manager-chain walk over seeded data. The behaviour shared with
//! PostgreSQL is the contract suite `testkit/tests/authz_store_contract.rs`.

use domain::audit::{actions, ActorType, AuditQuery};
use domain::authz::{default_roles, AvailableUsersQuery, USER_ROLE};
use domain::ids::{GroupId, TenantId, UserId};
use domain::page::PageSize;
use domain::tenants::Tenant;
use domain::testing;
use domain::time::now;
use domain::users::{User, UserStatus};
use domain::values::SearchQuery;
use domain::{AuthzStore, Store};
use serde_json::Map;
use sqlx::Row;

use crate::authz::{
    available_users_sql, tenant_roles_sql, MANAGER_CHAIN_SQL, PRINCIPAL_GROUPS_SQL,
    SUPER_ADMIN_HOLDERS_SQL, TENANT_ROLE_PERMISSIONS_SQL,
};
use crate::users::SearchPlan;
use crate::SqliteStore;

async fn open() -> (tempfile::TempDir, SqliteStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("authz.db"))
        .await
        .unwrap();
    store.migrate().await.unwrap();
    (dir, store)
}

async fn tenant(store: &SqliteStore, slug: &str) -> Tenant {
    testing::tenant(store, slug).await
}

fn seed_user(tenant: TenantId, i: usize, manager: Option<UserId>) -> User {
    let at = now();
    User {
        id: UserId::new(),
        tenant_id: tenant,
        email: format!("user{i}@example.com"),
        username: None,
        full_name: format!("User {i}"),
        phone: None,
        department: Some(["Eng", "Sales", "Ops"][i % 3].to_owned()),
        job_title: None,
        employee_id: None,
        manager_id: manager,
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

async fn plan_of(store: &SqliteStore, sql: &str, params: usize) -> String {
    let explain = format!("EXPLAIN QUERY PLAN {sql}");
    let mut q = sqlx::query(&explain);
    for _ in 0..params {
        q = q.bind(None::<i64>);
    }
    let rows = q.fetch_all(&store.reader).await.unwrap();
    rows.iter()
        .map(|r| r.try_get::<String, _>("detail").unwrap())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Whether a plan reads a whole table or index (`SCAN t ...`) rather than searching a range
/// of an index; the only scans allowed are of the manager-chain CTE (`c`, `chain`) and of a
/// constant row.
fn scans_a_table(plan: &str) -> bool {
    plan.lines().any(|l| {
        let mut words = l.split_whitespace();
        words.next() == Some("SCAN")
            && !words
                .next()
                .is_some_and(|t| ["CONSTANT", "c", "chain"].contains(&t))
    })
}

#[tokio::test]
async fn engine_reads_use_their_indexes() {
    let (_dir, store) = open().await;
    let cases = [
        (tenant_roles_sql(), 2, "roles"),
        (
            TENANT_ROLE_PERMISSIONS_SQL.to_owned(),
            2,
            "role_permissions",
        ),
        (PRINCIPAL_GROUPS_SQL.to_owned(), 2, "group_members_by_user"),
        (MANAGER_CHAIN_SQL.to_owned(), 3, "users_by_tenant_id"),
        (SUPER_ADMIN_HOLDERS_SQL.to_owned(), 2, "user_roles_by_role"),
        (
            "SELECT id, name, parent_id, active FROM groups WHERE tenant_id = ? ORDER BY name"
                .to_owned(),
            1,
            "groups",
        ),
        (
            "SELECT group_id, role_id FROM group_roles WHERE tenant_id = ? \
             ORDER BY group_id, role_id"
                .to_owned(),
            1,
            "group_roles_by_tenant",
        ),
    ];
    for (sql, params, index) in cases {
        let plan = plan_of(&store, &sql, params).await;
        assert!(plan.contains(index), "{sql}\n{plan}");
        assert!(!scans_a_table(&plan), "{sql}\n{plan}");
    }
}

#[tokio::test]
async fn available_users_walk_the_index_they_name() {
    let (_dir, store) = open().await;
    let t = tenant(&store, "acme").await;
    let g = GroupId::new();
    let q = |search: Option<&str>, department: Option<&str>| AvailableUsersQuery {
        search: search.map(|s| SearchQuery::parse("search", s).unwrap()),
        department: department.map(str::to_owned),
        limit: 20,
    };
    for (query, plan, index) in [
        (q(None, None), None, "users_by_name"),
        (q(None, Some("Eng")), None, "users_by_department"),
        (
            q(Some("ada"), None),
            Some(SearchPlan::Walk),
            "users_by_name",
        ),
        (
            q(Some("ada"), Some("Eng")),
            Some(SearchPlan::Walk),
            "users_by_department",
        ),
        (
            q(Some("ada"), None),
            Some(SearchPlan::Collect),
            "VIRTUAL TABLE INDEX",
        ),
    ] {
        let mut qb = available_users_sql("EXPLAIN QUERY PLAN ", t.id, g, &query, plan);
        let rows = qb.build().fetch_all(&store.reader).await.unwrap();
        let p = rows
            .iter()
            .map(|r| r.try_get::<String, _>("detail").unwrap())
            .collect::<Vec<_>>()
            .join("\n");
        assert!(p.contains(index), "{query:?} {plan:?}\n{p}");
        // Membership is tested through the membership key, never by a scan.
        assert!(p.contains("sqlite_autoindex_group_members_1"), "{p}");
    }
}

#[tokio::test]
async fn migrating_gives_older_tenants_their_default_roles_once() {
    let (_dir, store) = open().await;
    let t = tenant(&store, "acme").await;
    let other = tenant(&store, "globex").await;
    let users: Vec<User> = (0..5).map(|i| seed_user(t.id, i, None)).collect();
    testing::seed(&store, t.id, &users, None).await;
    let other_roles = store.list_roles(other.id).await.unwrap();

    // The tenant as a database from before authorization would hold it: no roles at all
    // (their assignments go with them).
    sqlx::query("DELETE FROM roles WHERE tenant_id = ?")
        .bind(t.id.into_uuid())
        .execute(&store.writer)
        .await
        .unwrap();
    assert_eq!(store.list_roles(t.id).await.unwrap().len(), 1);
    let v0 = store.authz_version(t.id).await.unwrap();

    store.migrate().await.unwrap();
    let roles = store.list_roles(t.id).await.unwrap();
    let names: Vec<&str> = roles.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["super_admin", "admin", "manager", "user"]);
    for (r, d) in roles[1..].iter().zip(default_roles()) {
        assert_eq!(r.permissions, d.permissions, "{}", r.name);
    }
    let user_role = roles.iter().find(|r| r.name == USER_ROLE).unwrap();
    for u in &users {
        let held = store.list_user_roles(t.id, u.id).await.unwrap();
        assert_eq!(held.len(), 1);
        assert_eq!(held[0].role_id, user_role.id);
        assert_eq!(held[0].assigned_by_type, ActorType::System);
    }
    assert!(store.authz_version(t.id).await.unwrap() > v0);
    let q = AuditQuery {
        action: Some(actions::ROLE_CREATE.into()),
        limit: PageSize::new(Some(50)).unwrap(),
        ..Default::default()
    };
    let events = store.list_audit_events(t.id, &q).await.unwrap().items;
    assert_eq!(events.len(), 3);
    assert!(events.iter().all(|e| e.actor_type == ActorType::System));
    // The other tenant, which had its roles, is untouched.
    assert_eq!(store.list_roles(other.id).await.unwrap(), other_roles);

    // One role missing: only it comes back, and the users keep what they hold.
    sqlx::query("DELETE FROM roles WHERE tenant_id = ? AND name = 'manager'")
        .bind(t.id.into_uuid())
        .execute(&store.writer)
        .await
        .unwrap();
    store.migrate().await.unwrap();
    let again = store.list_roles(t.id).await.unwrap();
    assert_eq!(again.len(), 4);
    assert_eq!(
        again.iter().find(|r| r.name == USER_ROLE).unwrap().id,
        user_role.id
    );
    for u in &users {
        assert_eq!(store.list_user_roles(t.id, u.id).await.unwrap().len(), 1);
    }

    // Nothing is missing: migrating changes nothing.
    let v = store.authz_version(t.id).await.unwrap();
    store.migrate().await.unwrap();
    assert_eq!(store.list_roles(t.id).await.unwrap(), again);
    assert_eq!(store.authz_version(t.id).await.unwrap(), v);
}

#[tokio::test]
async fn a_manager_cycle_in_seeded_data_ends_the_chain() {
    let (_dir, store) = open().await;
    let t = tenant(&store, "acme").await;
    // a → b → c → a: seeded rows are only checked to name users of the tenant.
    let mut a = seed_user(t.id, 0, None);
    let mut b = seed_user(t.id, 1, None);
    let c = seed_user(t.id, 2, Some(a.id));
    a.manager_id = Some(b.id);
    b.manager_id = Some(c.id);
    testing::seed(&store, t.id, &[a.clone(), b.clone(), c.clone()], None).await;
    let p = store.load_principal(t.id, a.id).await.unwrap().unwrap();
    assert_eq!(p.manager_chain, vec![b.id, c.id]);
}
