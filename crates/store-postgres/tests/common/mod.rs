#![allow(dead_code)]

use domain::audit::AuditContext;
use domain::tenants::{MaxUsers, NewTenant, Plan, Tenant, TenantSlug};
use domain::users::{NewUser, User, UserStatus};
use domain::values::{DisplayName, Email, JsonObject, Label, Username};
use domain::{Store, TenantId, UserId};
use portcullis_store_postgres::PgStore;

pub fn url() -> String {
    std::env::var("PORTCULLIS_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// A store in a fresh schema; call `finish` at the end of the test to drop it.
pub struct TestDb {
    pub store: PgStore,
    pub schema: String,
}

impl TestDb {
    pub async fn new() -> Self {
        let schema = format!("t_pgstore_{}", uuid::Uuid::now_v7().simple());
        let store = PgStore::connect_in_schema(&url(), &schema, 5).await.unwrap();
        store.migrate().await.unwrap();
        Self { store, schema }
    }

    pub async fn finish(self) {
        self.store.close().await;
        PgStore::drop_schema(&url(), &self.schema).await.unwrap();
    }
}

pub fn ctx() -> AuditContext {
    AuditContext::system()
}

pub fn new_tenant(slug: &str, plan: Plan, max_users: Option<i64>) -> NewTenant {
    NewTenant {
        slug: TenantSlug::parse("slug", slug).unwrap(),
        display_name: DisplayName::parse("display_name", &format!("Tenant {slug}")).unwrap(),
        plan,
        max_users: max_users.map(|n| MaxUsers::parse("max_users", n).unwrap()),
        trial_ends_at: None,
        settings: JsonObject::default(),
    }
}

pub async fn tenant(store: &PgStore, slug: &str) -> Tenant {
    store
        .create_tenant(new_tenant(slug, Plan::Enterprise, None), &ctx())
        .await
        .unwrap()
}

pub fn new_user(email: &str, username: Option<&str>, name: &str) -> NewUser {
    NewUser {
        email: Email::parse("email", email).unwrap(),
        username: username.map(|u| Username::parse("username", u).unwrap()),
        full_name: DisplayName::parse("full_name", name).unwrap(),
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

pub fn label(s: &str) -> Label {
    Label::parse("label", s).unwrap()
}

/// A generated user for seeding: deterministic in `i`.
pub fn seeded_user(tenant: TenantId, i: usize, manager: Option<UserId>) -> User {
    const FIRST: [&str; 12] = [
        "Ada", "Grace", "Alan", "Édith", "Linus", "Barbara", "Ken", "Margaret", "Dennis", "Frances",
        "Zoë", "Niklaus",
    ];
    const LAST: [&str; 10] = [
        "Lovelace", "Hopper", "Turing", "Piaf", "Torvalds", "Liskov", "Thompson", "Hamilton",
        "Ritchie", "Allen",
    ];
    const DEPTS: [&str; 20] = [
        "Engineering", "Sales", "Marketing", "Finance", "Legal", "Support", "Research", "Design",
        "Operations", "HR", "IT", "Security", "Product", "Data", "QA", "Facilities", "Procurement",
        "Training", "Strategy", "Communications",
    ];
    const STATUSES: [UserStatus; 5] = [
        UserStatus::Active,
        UserStatus::Active,
        UserStatus::Pending,
        UserStatus::Blocked,
        UserStatus::Inactive,
    ];
    // Spread the values with a multiplicative hash so that sort orders differ.
    let h = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let first = FIRST[(h % 12) as usize];
    let last = LAST[((h >> 8) % 10) as usize];
    let now = domain::time::now();
    let created = now - chrono::TimeDelta::seconds(((h >> 16) % 100_000_000) as i64);
    let last_login = if (h >> 40) % 3 == 0 {
        None
    } else {
        Some(created + chrono::TimeDelta::seconds(((h >> 24) % 1_000_000) as i64))
    };
    User {
        id: UserId::new(),
        tenant_id: tenant,
        email: format!("{}.{}{i}@Example.com", first.to_lowercase(), last.to_lowercase()),
        username: if i % 4 == 0 { None } else { Some(format!("{}_{i}", last.to_lowercase())) },
        full_name: format!("{first} {last} {}", i % 997),
        phone: Some(format!("+1 555 {:07}", i)),
        department: Some(DEPTS[((h >> 32) % 20) as usize].to_owned()),
        job_title: Some("Engineer".to_owned()),
        employee_id: Some(format!("E{i:08}")),
        manager_id: manager,
        cost_center: None,
        clearance_level: Some(((h >> 48) % 11) as i16),
        language: Some("en".to_owned()),
        avatar_url: None,
        custom_attributes: serde_json::json!({ "n": i }).as_object().cloned().unwrap(),
        status: STATUSES[((h >> 44) % 5) as usize],
        last_login_at: last_login.map(domain::time::truncate),
        created_at: domain::time::truncate(created),
        updated_at: now,
        deleted_at: None,
        version: 1,
    }
}
