//! The storage contract: one set of cases, run against every backend through
//! `Arc<dyn Store>`, so that SQLite and PostgreSQL are interchangeable behind the API.
//!
//! Each case gets a fresh database: a file in a temporary directory for SQLite, a fresh
//! schema for PostgreSQL. The PostgreSQL variants need `PORTCULLIS_TEST_DATABASE_URL`
//! (e.g. `postgres://postgres@127.0.0.1:5432/test`); without it they are skipped, except
//! under CI (`CI` set), where a missing database is a failure.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashSet;
use std::fmt::Debug;

use domain::api_keys::{KeyHash, NewApiKey};
use domain::audit::{actions, Actor, ActorType, AuditContext, AuditEvent, AuditQuery};
use domain::page::{decode_cursor, PageSize};
use domain::patch::Patch;
use domain::tenants::{
    MaxUsers, NewTenant, Plan, Tenant, TenantListQuery, TenantPatch, TenantSlug, TenantStatus,
};
use domain::time::{from_micros, now, to_micros, truncate, Timestamp};
use domain::users::{
    DeletedFilter, NewUser, SortValue, User, UserCursor, UserListQuery, UserPatch, UserSort,
    UserSortField, UserStatus,
};
use domain::values::{
    AvatarUrl, ClearanceLevel, DisplayName, Email, JsonObject, Label, Language, Phone, SearchQuery,
    Username,
};
use domain::{ApiKeyId, AuditEventId, Code, Error, TenantId, UserId};
use portcullis_testkit::fixtures::{new_tenant, new_user, with_username};
use portcullis_testkit::rig::Rig;
use portcullis_testkit::rig_tests;
use serde_json::{json, Value};
use uuid::Uuid;

rig_tests!(
    case_backend_basics,
    case_tenant_create_get_and_duplicate_slug,
    case_tenant_update,
    case_tenant_list_pages_newest_first,
    case_api_key_lifecycle,
    case_user_round_trip,
    case_seeded_user_round_trip,
    case_email_and_username_unique_per_tenant,
    case_tenant_isolation,
    case_manager_must_be_live_user_of_same_tenant,
    case_manager_cycles_are_refused,
    case_if_match_precondition,
    case_soft_delete_and_restore,
    case_quota,
    case_failed_mutations_change_nothing,
    case_audit_trail,
    case_list_users_every_sort_walks_all_pages,
    case_list_users_filters,
    case_search,
    case_seed_users,
    case_seed_users_refuses_foreign_managers,
    case_search_past_the_sorted_walk,
);

// ------------------------------------------------------------------------------------------
// Helpers
// ------------------------------------------------------------------------------------------

fn ctx() -> AuditContext {
    AuditContext {
        actor: Actor::ApiKey(ApiKeyId::from_uuid(Uuid::from_u128(0xA11CE))),
        ip: Some("203.0.113.7".into()),
        user_agent: Some("contract-test/1.0".into()),
        request_id: Some("req-contract-1".into()),
    }
}

fn ts(us: i64) -> Timestamp {
    from_micros(us).unwrap()
}

/// 2023-11-14T22:13:20Z plus `us` microseconds.
fn at(us: i64) -> Timestamp {
    ts(1_700_000_000_000_000 + us)
}

async fn tenant(store: &Rig, slug: &str) -> Tenant {
    store.create_tenant(new_tenant(slug), &ctx()).await.unwrap()
}

fn object(v: Value) -> JsonObject {
    JsonObject::parse("custom_attributes", v.as_object().unwrap().clone()).unwrap()
}

async fn user(store: &Rig, tenant: TenantId, email: &str, name: &str) -> User {
    store
        .create_user(tenant, new_user(email, name), &ctx())
        .await
        .unwrap()
}

/// A user row for `seed_users`, every optional field empty.
fn seed_user(tenant: TenantId, email: &str, full_name: &str, created: Timestamp) -> User {
    User {
        id: UserId::new(),
        tenant_id: tenant,
        email: email.to_owned(),
        username: None,
        full_name: full_name.to_owned(),
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
        created_at: created,
        updated_at: created,
        deleted_at: None,
        version: 1,
    }
}

fn set_manager(m: Option<UserId>) -> UserPatch {
    UserPatch {
        manager_id: match m {
            Some(id) => Patch::Set(id),
            None => Patch::Clear,
        },
        ..Default::default()
    }
}

fn rename(name: &str) -> UserPatch {
    UserPatch {
        full_name: Some(DisplayName::parse("full_name", name).unwrap()),
        ..Default::default()
    }
}

fn err<T: Debug>(r: domain::Result<T>) -> Error {
    match r {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(e) => e,
    }
}

fn assert_field_error(e: &Error, field: &str, code: &str) {
    match e {
        Error::Validation(errors) => assert!(
            errors.iter().any(|f| f.field == field && f.code == code),
            "expected {field}/{code}, got {errors:?}"
        ),
        other => panic!("expected a validation error {field}/{code}, got {other:?}"),
    }
}

fn assert_not_found(e: &Error, entity: &str) {
    assert!(
        matches!(e, Error::NotFound { entity: got } if *got == entity),
        "expected {entity} not found, got {e:?}"
    );
}

fn limit(n: u32) -> PageSize {
    PageSize::new(Some(n)).unwrap()
}

/// Every user `base` selects, walking the pages of `page_size` through their cursors.
async fn walk_users(
    store: &Rig,
    tenant: TenantId,
    base: &UserListQuery,
    page_size: u32,
) -> Vec<User> {
    let mut q = base.clone();
    q.limit = limit(page_size);
    q.after = None;
    let mut all = Vec::new();
    loop {
        let page = store.list_users(tenant, &q).await.unwrap();
        assert!(page.items.len() <= page_size as usize);
        let more = page.next_cursor.is_some();
        if more {
            assert_eq!(
                page.items.len(),
                page_size as usize,
                "a short page must be the last"
            );
        }
        all.extend(page.items);
        match page.next_cursor {
            Some(c) => q.after = Some(UserCursor::decode(&c, q.sort).unwrap()),
            None => break,
        }
        assert!(all.len() <= 100_000, "paging does not end");
    }
    all
}

async fn list_all_users(store: &Rig, tenant: TenantId, q: UserListQuery) -> Vec<User> {
    walk_users(store, tenant, &q, 200).await
}

fn names(users: &[User]) -> Vec<String> {
    let mut n: Vec<String> = users.iter().map(|u| u.full_name.clone()).collect();
    n.sort();
    n
}

/// Every audit event of `tenant` that `base` selects, walking the pages.
async fn walk_events(
    store: &Rig,
    tenant: TenantId,
    base: &AuditQuery,
    page_size: u32,
) -> Vec<AuditEvent> {
    let mut q = base.clone();
    q.limit = limit(page_size);
    q.before_id = None;
    let mut all = Vec::new();
    loop {
        let page = store.list_audit_events(tenant, &q).await.unwrap();
        assert!(page.items.len() <= page_size as usize);
        all.extend(page.items);
        match page.next_cursor {
            Some(c) => q.before_id = Some(decode_cursor::<AuditEventId>(&c).unwrap()),
            None => break,
        }
        assert!(all.len() <= 100_000, "paging does not end");
    }
    all
}

async fn all_events(store: &Rig, tenant: TenantId) -> Vec<AuditEvent> {
    walk_events(store, tenant, &AuditQuery::default(), 200).await
}

async fn all_tenants(store: &Rig, status: Option<TenantStatus>, page: u32) -> Vec<Tenant> {
    let mut q = TenantListQuery {
        status,
        limit: limit(page),
        after: None,
    };
    let mut all = Vec::new();
    loop {
        let p = store.list_tenants(&q).await.unwrap();
        all.extend(p.items);
        match p.next_cursor {
            Some(c) => q.after = Some(decode_cursor::<TenantId>(&c).unwrap()),
            None => break,
        }
        assert!(all.len() <= 10_000, "paging does not end");
    }
    all
}

// ------------------------------------------------------------------------------------------
// Cases
// ------------------------------------------------------------------------------------------

async fn case_backend_basics(store: Rig) {
    store.migrate().await.unwrap();
    // Migrating twice is harmless.
    store.migrate().await.unwrap();
    store.ping().await.unwrap();
    assert!(["sqlite", "postgres"].contains(&store.backend()));
    let stats = store.pool_stats();
    assert!(stats.max >= 1);
    assert!(
        stats.idle <= stats.size && stats.size <= stats.max,
        "{stats:?}"
    );
}

async fn case_tenant_create_get_and_duplicate_slug(store: Rig) {
    store.migrate().await.unwrap();
    let s = &store;
    let trial = ts(to_micros(now()) + 14 * 86_400_000_000 + 123_457);
    let new = NewTenant {
        plan: Plan::Free,
        trial_ends_at: Some(trial),
        settings: object(
            json!({ "theme": "dark", "limits": { "n": 3, "f": 2.5 }, "tags": ["a", "b"] }),
        ),
        ..new_tenant("acme")
    };
    let before = now();
    let t = s.create_tenant(new, &ctx()).await.unwrap();
    assert_eq!(t.slug, "acme");
    assert_eq!(t.display_name, "Tenant acme");
    assert_eq!(t.status, TenantStatus::Active);
    assert_eq!(t.plan, Plan::Free);
    assert_eq!(t.max_users, Some(100), "the free plan's default quota");
    assert_eq!(t.trial_ends_at, Some(trial));
    assert!(t.created_at >= before && t.created_at == t.updated_at);
    assert_eq!(s.get_tenant(t.id).await.unwrap(), t);
    let slug = TenantSlug::parse("slug", "acme").unwrap();
    assert_eq!(s.get_tenant_by_slug(&slug).await.unwrap(), t);

    // An explicit quota wins over the plan's; enterprise has none.
    let pro = s
        .create_tenant(
            NewTenant {
                plan: Plan::Pro,
                max_users: Some(MaxUsers::parse("max_users", 7).unwrap()),
                ..new_tenant("pro-co")
            },
            &ctx(),
        )
        .await
        .unwrap();
    assert_eq!(pro.max_users, Some(7));
    assert_eq!(tenant(s, "big-co").await.max_users, None);

    let e = err(s.create_tenant(new_tenant("acme"), &ctx()).await);
    assert!(
        matches!(
            e,
            Error::Refused {
                code: Code::SlugTaken,
                ref fields,
                ..
            } if fields.as_slice() == ["slug"]
        ),
        "{e:?}"
    );
    assert_eq!(all_tenants(s, None, 50).await.len(), 3);

    assert_not_found(&err(s.get_tenant(TenantId::new()).await), "tenant");
    let missing = TenantSlug::parse("slug", "nobody").unwrap();
    assert_not_found(&err(s.get_tenant_by_slug(&missing).await), "tenant");

    // The creation is audited in the new tenant.
    let events = all_events(s, t.id).await;
    assert_eq!(events.len(), 1);
    let ev = &events[0];
    assert_eq!(ev.tenant_id, t.id);
    assert_eq!(ev.action, actions::TENANT_CREATE);
    assert_eq!(ev.entity_type, "tenant");
    assert_eq!(ev.entity_id, Some(t.id.into_uuid()));
    assert_eq!(ev.before, None);
    assert_eq!(ev.after, Some(serde_json::to_value(&t).unwrap()));
}

async fn case_tenant_update(store: Rig) {
    store.migrate().await.unwrap();
    let s = &store;
    let t = s
        .create_tenant(
            NewTenant {
                plan: Plan::Free,
                ..new_tenant("acme")
            },
            &ctx(),
        )
        .await
        .unwrap();

    let patch = TenantPatch {
        display_name: Some(DisplayName::parse("display_name", "Acme Corp").unwrap()),
        plan: Some(Plan::Pro),
        settings: Some(object(json!({ "locale": "en-GB" }))),
        trial_ends_at: Patch::Set(at(42)),
        ..Default::default()
    };
    let u = s
        .update_tenant(t.id, patch, actions::TENANT_UPDATE, &ctx())
        .await
        .unwrap();
    assert_eq!(u.display_name, "Acme Corp");
    assert_eq!(u.plan, Plan::Pro);
    assert_eq!(
        u.max_users,
        Some(10_000),
        "a new plan brings its default quota"
    );
    assert_eq!(u.trial_ends_at, Some(at(42)));
    assert_eq!(u.settings, *object(json!({ "locale": "en-GB" })).as_map());
    assert_eq!(u.created_at, t.created_at);
    assert!(u.updated_at >= t.updated_at);
    assert_eq!(s.get_tenant(t.id).await.unwrap(), u);

    let patch = TenantPatch {
        max_users: Patch::Clear,
        trial_ends_at: Patch::Clear,
        ..Default::default()
    };
    let c = s
        .update_tenant(t.id, patch, actions::TENANT_UPDATE, &ctx())
        .await
        .unwrap();
    assert_eq!(c.max_users, None);
    assert_eq!(c.trial_ends_at, None);
    // Deactivating changes the status alone.
    let suspend = TenantPatch {
        status: Some(TenantStatus::Suspended),
        ..Default::default()
    };
    let d = s
        .update_tenant(t.id, suspend, actions::TENANT_DEACTIVATE, &ctx())
        .await
        .unwrap();
    assert_eq!(d.status, TenantStatus::Suspended);
    assert_eq!(
        d,
        Tenant {
            status: TenantStatus::Suspended,
            updated_at: d.updated_at,
            ..c.clone()
        }
    );
    assert_eq!(s.get_tenant(t.id).await.unwrap(), d);

    let e = err(s
        .update_tenant(
            TenantId::new(),
            TenantPatch::default(),
            actions::TENANT_UPDATE,
            &ctx(),
        )
        .await);
    assert_not_found(&e, "tenant");

    let events = all_events(s, t.id).await;
    let got: Vec<&str> = events.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(
        got,
        [
            actions::TENANT_DEACTIVATE,
            actions::TENANT_UPDATE,
            actions::TENANT_UPDATE,
            actions::TENANT_CREATE
        ]
    );
    assert_eq!(events[2].before, Some(serde_json::to_value(&t).unwrap()));
    assert_eq!(events[2].after, Some(serde_json::to_value(&u).unwrap()));
    assert_eq!(events[1].before, Some(serde_json::to_value(&u).unwrap()));
    assert_eq!(events[1].after, Some(serde_json::to_value(&c).unwrap()));
    assert_eq!(events[0].before, Some(serde_json::to_value(&c).unwrap()));
    assert_eq!(events[0].after, Some(serde_json::to_value(&d).unwrap()));
}

async fn case_tenant_list_pages_newest_first(store: Rig) {
    store.migrate().await.unwrap();
    let s = &store;
    let mut created = Vec::new();
    for i in 0..8 {
        created.push(tenant(s, &format!("tenant-{i}")).await);
    }
    for t in created.iter().step_by(3) {
        let patch = TenantPatch {
            status: Some(TenantStatus::Suspended),
            ..Default::default()
        };
        s.update_tenant(t.id, patch, actions::TENANT_DEACTIVATE, &ctx())
            .await
            .unwrap();
    }

    let mut newest_first: Vec<TenantId> = created.iter().map(|t| t.id).collect();
    newest_first.reverse();
    for page in [1, 3, 8, 50] {
        let got: Vec<TenantId> = all_tenants(s, None, page)
            .await
            .iter()
            .map(|t| t.id)
            .collect();
        assert_eq!(got, newest_first, "page size {page}");
    }

    let first = s
        .list_tenants(&TenantListQuery {
            status: None,
            limit: limit(8),
            after: None,
        })
        .await
        .unwrap();
    assert_eq!(first.items.len(), 8);
    assert_eq!(first.next_cursor, None, "no cursor when nothing follows");

    let suspended: Vec<TenantId> = all_tenants(s, Some(TenantStatus::Suspended), 2)
        .await
        .iter()
        .map(|t| t.id)
        .collect();
    let expected: Vec<TenantId> = newest_first
        .iter()
        .copied()
        .filter(|id| created.iter().step_by(3).any(|t| t.id == *id))
        .collect();
    assert_eq!(suspended, expected);
    assert_eq!(all_tenants(s, Some(TenantStatus::Active), 2).await.len(), 5);
}

async fn case_api_key_lifecycle(store: Rig) {
    store.migrate().await.unwrap();
    let s = &store;
    let a = tenant(s, "acme").await;
    let b = tenant(s, "globex").await;
    let new = NewApiKey {
        name: Label::parse("name", "CI deploy").unwrap(),
        platform_admin: true,
    };
    let (key, generated) = s.create_api_key(a.id, new, &ctx()).await.unwrap();
    let hash = generated.hash.clone();
    assert_eq!(
        KeyHash::of(generated.expose()),
        hash,
        "only the digest is kept"
    );
    assert_eq!(key.tenant_id, a.id);
    assert_eq!(key.name, "CI deploy");
    assert_eq!(key.prefix, generated.prefix);
    assert!(generated.expose().starts_with(&key.prefix));
    assert!(key.platform_admin);
    assert_eq!(key.revoked_at, None);

    let auth = s.authenticate_api_key(&hash).await.unwrap().unwrap();
    assert_eq!(auth.key, key);
    assert_eq!(auth.tenant_status, TenantStatus::Active);
    assert!(s
        .authenticate_api_key(&KeyHash::of("pcs_unknown"))
        .await
        .unwrap()
        .is_none());

    let new_b = NewApiKey {
        name: Label::parse("name", "reader").unwrap(),
        platform_admin: false,
    };
    let (key_b, generated_b) = s.create_api_key(b.id, new_b, &ctx()).await.unwrap();
    let hash_b = generated_b.hash.clone();
    let (second, _) = s
        .create_api_key(
            a.id,
            NewApiKey {
                name: Label::parse("name", "second").unwrap(),
                platform_admin: false,
            },
            &ctx(),
        )
        .await
        .unwrap();

    // Listing is tenant-scoped and newest first.
    assert_eq!(
        s.list_api_keys(a.id).await.unwrap(),
        vec![second.clone(), key.clone()]
    );
    assert_eq!(s.list_api_keys(b.id).await.unwrap(), vec![key_b.clone()]);
    assert!(s.list_api_keys(TenantId::new()).await.unwrap().is_empty());

    // Another tenant cannot revoke the key, nor can an unknown id be revoked.
    assert_not_found(
        &err(s.revoke_api_key(b.id, key.id, &ctx()).await),
        "api_key",
    );
    assert_not_found(
        &err(s.revoke_api_key(a.id, ApiKeyId::new(), &ctx()).await),
        "api_key",
    );
    assert!(s.authenticate_api_key(&hash).await.unwrap().is_some());

    let revoked = s.revoke_api_key(a.id, key.id, &ctx()).await.unwrap();
    assert!(revoked.revoked_at.is_some());
    assert_eq!(
        revoked,
        domain::api_keys::ApiKey {
            revoked_at: revoked.revoked_at,
            ..key.clone()
        },
        "revoking returns the key, revoked"
    );
    assert!(s.authenticate_api_key(&hash).await.unwrap().is_none());
    // Revoking twice: the key is gone as far as clients are concerned.
    assert_not_found(
        &err(s.revoke_api_key(a.id, key.id, &ctx()).await),
        "api_key",
    );
    let listed = s.list_api_keys(a.id).await.unwrap();
    assert_eq!(listed, vec![second, revoked.clone()]);

    // A suspended tenant's key still authenticates, reporting the tenant's status.
    let patch = TenantPatch {
        status: Some(TenantStatus::Suspended),
        ..Default::default()
    };
    s.update_tenant(b.id, patch, actions::TENANT_DEACTIVATE, &ctx())
        .await
        .unwrap();
    let auth_b = s.authenticate_api_key(&hash_b).await.unwrap().unwrap();
    assert_eq!(auth_b.key, key_b);
    assert_eq!(auth_b.tenant_status, TenantStatus::Suspended);

    // Keys of an unknown tenant cannot be created.
    let e = err(s
        .create_api_key(
            TenantId::new(),
            NewApiKey {
                name: Label::parse("name", "x").unwrap(),
                platform_admin: false,
            },
            &ctx(),
        )
        .await
        .map(|(key, _)| key));
    assert_not_found(&e, "tenant");

    // Audited, with the key (never its hash) as the entity.
    let q = AuditQuery {
        entity_id: Some(key.id.into_uuid()),
        ..Default::default()
    };
    let events = walk_events(s, a.id, &q, 50).await;
    let got: Vec<&str> = events.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(got, [actions::API_KEY_REVOKE, actions::API_KEY_CREATE]);
    assert_eq!(events[1].after, Some(serde_json::to_value(&key).unwrap()));
    assert_eq!(events[0].before, Some(serde_json::to_value(&key).unwrap()));
    assert_eq!(
        events[0].after,
        Some(serde_json::to_value(&revoked).unwrap())
    );
    for ev in &events {
        assert_eq!(ev.entity_type, "api_key");
        assert!(!ev
            .after
            .as_ref()
            .unwrap()
            .to_string()
            .contains(hash.as_str()));
    }
}

async fn case_user_round_trip(store: Rig) {
    store.migrate().await.unwrap();
    let s = &store;
    let t = tenant(s, "acme").await;
    let boss = user(s, t.id, "boss@acme.test", "The Boss").await;
    let attrs = json!({
        "floor": 3,
        "badge": -17,
        "ratio": 2.5,
        "remote": true,
        "nothing": null,
        "nick": "Zoë \"Z\" ☃",
        "skills": ["rust", "sql", 42],
        "nested": { "deep": { "deeper": [1, { "x": "y" }] } }
    });
    let new = NewUser {
        email: Email::parse("email", "Ada.Lovelace@Example.COM").unwrap(),
        username: Some(Username::parse("username", "Countess_Ada").unwrap()),
        full_name: DisplayName::parse("full_name", "Ada Lovelace").unwrap(),
        phone: Some(Phone::parse("phone", "+44 20 7946 0958").unwrap()),
        department: Some(Label::parse("department", "Analytical Engines").unwrap()),
        job_title: Some(Label::parse("job_title", "Programmer").unwrap()),
        employee_id: Some(Label::parse("employee_id", "E-0001").unwrap()),
        manager_id: Some(boss.id),
        cost_center: Some(Label::parse("cost_center", "CC-42").unwrap()),
        clearance_level: Some(ClearanceLevel::parse("clearance_level", 7).unwrap()),
        language: Some(Language::parse("language", "en-gb").unwrap()),
        avatar_url: Some(
            AvatarUrl::parse("avatar_url", "https://cdn.example.com/ada.png").unwrap(),
        ),
        custom_attributes: object(attrs.clone()),
        status: UserStatus::Pending,
    };
    let before = now();
    let u = s.create_user(t.id, new, &ctx()).await.unwrap();
    assert_eq!(u.tenant_id, t.id);
    assert_eq!(
        u.email, "Ada.Lovelace@Example.COM",
        "the email is kept as written"
    );
    assert_eq!(u.username.as_deref(), Some("Countess_Ada"));
    assert_eq!(u.manager_id, Some(boss.id));
    assert_eq!(u.clearance_level, Some(7));
    assert_eq!(Value::Object(u.custom_attributes.clone()), attrs);
    assert_eq!(u.status, UserStatus::Pending);
    assert_eq!(u.version, 1);
    assert_eq!(u.last_login_at, None);
    assert_eq!(u.deleted_at, None);
    assert!(u.created_at >= before && u.updated_at == u.created_at);
    assert_eq!(truncate(u.created_at), u.created_at, "whole microseconds");

    // Every field reads back equal, timestamps to the microsecond.
    assert_eq!(s.get_user(t.id, u.id).await.unwrap(), u);
    let listed = list_all_users(s, t.id, UserListQuery::default()).await;
    assert_eq!(listed, vec![boss.clone(), u.clone()]);

    // An update that changes every field reads back equal too.
    let patch = UserPatch {
        email: Some(Email::parse("email", "ada@engines.example").unwrap()),
        username: Patch::Clear,
        full_name: Some(DisplayName::parse("full_name", "Augusta Ada King").unwrap()),
        phone: Patch::Clear,
        department: Patch::Set(Label::parse("department", "Poetical Science").unwrap()),
        job_title: Patch::Clear,
        employee_id: Patch::Set(Label::parse("employee_id", "E-0002").unwrap()),
        manager_id: Patch::Clear,
        cost_center: Patch::Clear,
        clearance_level: Patch::Set(ClearanceLevel::parse("clearance_level", 0).unwrap()),
        language: Patch::Set(Language::parse("language", "fr").unwrap()),
        avatar_url: Patch::Clear,
        custom_attributes: Some(object(json!({ "replaced": "entirely" }))),
        status: Some(UserStatus::Active),
    };
    let v = s
        .update_user(t.id, u.id, patch, Some(1), &ctx())
        .await
        .unwrap();
    assert_eq!(v.email, "ada@engines.example");
    assert_eq!(v.username, None);
    assert_eq!(v.full_name, "Augusta Ada King");
    assert_eq!(v.phone, None);
    assert_eq!(v.department.as_deref(), Some("Poetical Science"));
    assert_eq!(v.manager_id, None);
    assert_eq!(v.clearance_level, Some(0));
    assert_eq!(v.language.as_deref(), Some("fr"));
    assert_eq!(
        Value::Object(v.custom_attributes.clone()),
        json!({ "replaced": "entirely" })
    );
    assert_eq!(v.status, UserStatus::Active);
    assert_eq!(v.version, 2);
    assert_eq!(v.created_at, u.created_at);
    assert!(v.updated_at >= u.updated_at);
    assert_eq!(s.get_user(t.id, u.id).await.unwrap(), v);

    // An empty patch still counts as a change.
    let w = s
        .update_user(t.id, u.id, UserPatch::default(), None, &ctx())
        .await
        .unwrap();
    assert_eq!(w.version, 3);
    assert_eq!(s.get_user(t.id, u.id).await.unwrap(), w);

    assert_not_found(&err(s.get_user(t.id, UserId::new()).await), "user");
    let e = err(s
        .create_user(TenantId::new(), new_user("x@y.test", "X"), &ctx())
        .await);
    assert_not_found(&e, "tenant");
}

async fn case_seeded_user_round_trip(store: Rig) {
    store.migrate().await.unwrap();
    let s = &store;
    let t = tenant(s, "acme").await;
    let boss = seed_user(t.id, "boss@acme.test", "Boss", at(1));
    let mut u = seed_user(t.id, "Grace@Acme.test", "Grace Hopper", at(123_456_789));
    u.username = Some("Amazing.Grace".into());
    u.phone = Some("+1 555 0100".into());
    u.department = Some("Navy".into());
    u.job_title = Some("Rear Admiral".into());
    u.employee_id = Some("N-1906".into());
    u.manager_id = Some(boss.id);
    u.cost_center = Some("USN".into());
    u.clearance_level = Some(10);
    u.language = Some("en-US".into());
    u.avatar_url = Some("https://example.com/grace.jpg".into());
    u.custom_attributes = json!({ "bugs_found": 1, "ratio": 0.125 })
        .as_object()
        .unwrap()
        .clone();
    u.status = UserStatus::Suspended;
    // Sub-millisecond digits everywhere: stored to the microsecond.
    u.last_login_at = Some(at(987_654_321));
    u.updated_at = at(555_555_555);
    u.version = 17;
    let mut gone = seed_user(t.id, "gone@acme.test", "Gone Person", at(2));
    gone.deleted_at = Some(at(3_000_001));
    gone.version = 4;
    let n = s
        .seed_users(t.id, vec![boss.clone(), u.clone(), gone.clone()], &ctx())
        .await
        .unwrap();
    assert_eq!(n, 3);
    assert_eq!(s.get_user(t.id, u.id).await.unwrap(), u);
    assert_eq!(s.get_user(t.id, boss.id).await.unwrap(), boss);
    assert_eq!(s.get_user(t.id, gone.id).await.unwrap(), gone);
    let q = UserListQuery {
        deleted: DeletedFilter::Include,
        ..Default::default()
    };
    assert_eq!(list_all_users(s, t.id, q).await, vec![boss, gone, u]);
}

async fn case_email_and_username_unique_per_tenant(store: Rig) {
    store.migrate().await.unwrap();
    let s = &store;
    let a = tenant(s, "acme").await;
    let b = tenant(s, "globex").await;
    let alice = s
        .create_user(
            a.id,
            with_username(new_user("Alice@Example.com", "Alice"), "Alice.W"),
            &ctx(),
        )
        .await
        .unwrap();

    let e = err(s
        .create_user(a.id, new_user("alice@EXAMPLE.COM", "Other"), &ctx())
        .await);
    assert!(
        matches!(
            e,
            Error::Refused {
                code: Code::EmailTaken,
                ref fields,
                ..
            } if fields.as_slice() == ["email"]
        ),
        "{e:?}"
    );
    let e = err(s
        .create_user(
            a.id,
            with_username(new_user("bob@example.com", "Bob"), "ALICE.w"),
            &ctx(),
        )
        .await);
    assert!(
        matches!(
            e,
            Error::Refused {
                code: Code::UsernameTaken,
                ref fields,
                ..
            } if fields.as_slice() == ["username"]
        ),
        "{e:?}"
    );

    // Users without a username do not collide.
    user(s, a.id, "carol@example.com", "Carol").await;
    user(s, a.id, "dave@example.com", "Dave").await;

    // The same email and username are free in another tenant.
    let other = s
        .create_user(
            b.id,
            with_username(new_user("ALICE@example.com", "Alice B"), "alice.w"),
            &ctx(),
        )
        .await
        .unwrap();
    assert_eq!(other.tenant_id, b.id);

    // Updates hit the same rules.
    let bob = user(s, a.id, "bob@example.com", "Bob").await;
    let patch = UserPatch {
        email: Some(Email::parse("email", "ALICE@example.COM").unwrap()),
        ..Default::default()
    };
    let e = err(s.update_user(a.id, bob.id, patch, None, &ctx()).await);
    assert!(
        matches!(
            e,
            Error::Refused {
                code: Code::EmailTaken,
                ..
            }
        ),
        "{e:?}"
    );
    let patch = UserPatch {
        username: Patch::Set(Username::parse("username", "alice.W").unwrap()),
        ..Default::default()
    };
    let e = err(s.update_user(a.id, bob.id, patch, None, &ctx()).await);
    assert!(
        matches!(
            e,
            Error::Refused {
                code: Code::UsernameTaken,
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(s.get_user(a.id, bob.id).await.unwrap(), bob);

    // Changing the case of one's own email is no conflict.
    let patch = UserPatch {
        email: Some(Email::parse("email", "ALICE@example.com").unwrap()),
        ..Default::default()
    };
    let alice2 = s
        .update_user(a.id, alice.id, patch, None, &ctx())
        .await
        .unwrap();
    assert_eq!(alice2.email, "ALICE@example.com");

    // A soft-deleted user keeps their email and username (so they can be restored).
    s.delete_user(a.id, alice.id, None, &ctx()).await.unwrap();
    let e = err(s
        .create_user(a.id, new_user("alice@example.com", "Alice 2"), &ctx())
        .await);
    assert!(
        matches!(
            e,
            Error::Refused {
                code: Code::EmailTaken,
                ..
            }
        ),
        "{e:?}"
    );
    let e = err(s
        .create_user(
            a.id,
            with_username(new_user("al@example.com", "Al"), "alice.w"),
            &ctx(),
        )
        .await);
    assert!(
        matches!(
            e,
            Error::Refused {
                code: Code::UsernameTaken,
                ..
            }
        ),
        "{e:?}"
    );

    // Seeding is held to the same rules.
    let dup = seed_user(a.id, "BOB@example.com", "Bob again", at(0));
    let e = err(s.seed_users(a.id, vec![dup], &ctx()).await);
    assert!(
        matches!(
            e,
            Error::Refused {
                code: Code::EmailTaken,
                ..
            }
        ),
        "{e:?}"
    );
}

async fn case_tenant_isolation(store: Rig) {
    store.migrate().await.unwrap();
    let s = &store;
    let a = tenant(s, "acme").await;
    let b = tenant(s, "globex").await;
    let mine = user(s, a.id, "me@acme.test", "Me").await;
    let theirs = user(s, b.id, "them@globex.test", "Them").await;
    let their_gone = user(s, b.id, "gone@globex.test", "Gone").await;
    s.delete_user(b.id, their_gone.id, None, &ctx())
        .await
        .unwrap();
    let their_gone = s.get_user(b.id, their_gone.id).await.unwrap();

    // Tenant A cannot see, change, delete or restore tenant B's users.
    assert_not_found(&err(s.get_user(a.id, theirs.id).await), "user");
    assert_not_found(
        &err(s
            .update_user(a.id, theirs.id, rename("Hacked"), None, &ctx())
            .await),
        "user",
    );
    assert_not_found(
        &err(s.delete_user(a.id, theirs.id, None, &ctx()).await),
        "user",
    );
    assert_not_found(
        &err(s.restore_user(a.id, their_gone.id, &ctx()).await),
        "user",
    );
    assert_not_found(&err(s.get_user(a.id, their_gone.id).await), "user");

    for deleted in [
        DeletedFilter::Exclude,
        DeletedFilter::Include,
        DeletedFilter::Only,
    ] {
        for field in UserSortField::ALL {
            let q = UserListQuery {
                deleted,
                sort: UserSort {
                    field: *field,
                    descending: false,
                },
                ..Default::default()
            };
            let ids: Vec<UserId> = list_all_users(s, a.id, q)
                .await
                .iter()
                .map(|u| u.id)
                .collect();
            let expected = if deleted == DeletedFilter::Only {
                vec![]
            } else {
                vec![mine.id]
            };
            assert_eq!(ids, expected);
        }
    }
    let q = UserListQuery {
        q: Some(SearchQuery::parse("q", "them").unwrap()),
        deleted: DeletedFilter::Include,
        ..Default::default()
    };
    assert!(list_all_users(s, a.id, q).await.is_empty());
    let q = UserListQuery {
        manager_id: Some(theirs.id),
        ..Default::default()
    };
    assert!(list_all_users(s, a.id, q).await.is_empty());

    // Nor make them managers of its own users.
    let e = err(s
        .create_user(
            a.id,
            NewUser {
                manager_id: Some(theirs.id),
                ..new_user("x@acme.test", "X")
            },
            &ctx(),
        )
        .await);
    assert_field_error(&e, "manager_id", "unknown_manager");
    let e = err(s
        .update_user(a.id, mine.id, set_manager(Some(theirs.id)), None, &ctx())
        .await);
    assert_field_error(&e, "manager_id", "unknown_manager");

    // B's data is untouched, and A's trail holds nothing of B.
    assert_eq!(s.get_user(b.id, theirs.id).await.unwrap(), theirs);
    assert_eq!(s.get_user(b.id, their_gone.id).await.unwrap(), their_gone);
    let b_user_ids = [theirs.id.into_uuid(), their_gone.id.into_uuid()];
    for ev in all_events(s, a.id).await {
        assert_eq!(ev.tenant_id, a.id);
        assert!(
            !ev.entity_id.is_some_and(|id| b_user_ids.contains(&id)),
            "{ev:?}"
        );
    }
    let q = AuditQuery {
        entity_id: Some(theirs.id.into_uuid()),
        ..Default::default()
    };
    assert!(walk_events(s, a.id, &q, 10).await.is_empty());
    assert_eq!(walk_events(s, b.id, &q, 10).await.len(), 1);
}

async fn case_manager_must_be_live_user_of_same_tenant(store: Rig) {
    store.migrate().await.unwrap();
    let s = &store;
    let t = tenant(s, "acme").await;
    let boss = user(s, t.id, "boss@acme.test", "Boss").await;
    let former = user(s, t.id, "former@acme.test", "Former Boss").await;
    s.delete_user(t.id, former.id, None, &ctx()).await.unwrap();

    for manager in [UserId::new(), former.id] {
        let e = err(s
            .create_user(
                t.id,
                NewUser {
                    manager_id: Some(manager),
                    ..new_user("x@acme.test", "X")
                },
                &ctx(),
            )
            .await);
        assert_field_error(&e, "manager_id", "unknown_manager");
    }
    let worker = s
        .create_user(
            t.id,
            NewUser {
                manager_id: Some(boss.id),
                ..new_user("worker@acme.test", "Worker")
            },
            &ctx(),
        )
        .await
        .unwrap();
    assert_eq!(worker.manager_id, Some(boss.id));

    for manager in [UserId::new(), former.id] {
        let e = err(s
            .update_user(t.id, worker.id, set_manager(Some(manager)), None, &ctx())
            .await);
        assert_field_error(&e, "manager_id", "unknown_manager");
    }
    assert_eq!(s.get_user(t.id, worker.id).await.unwrap(), worker);

    let cleared = s
        .update_user(t.id, worker.id, set_manager(None), None, &ctx())
        .await
        .unwrap();
    assert_eq!(cleared.manager_id, None);
    let again = s
        .update_user(t.id, worker.id, set_manager(Some(boss.id)), None, &ctx())
        .await
        .unwrap();
    assert_eq!(again.manager_id, Some(boss.id));

    // Deleting a manager later does not touch their reports.
    s.delete_user(t.id, boss.id, None, &ctx()).await.unwrap();
    assert_eq!(s.get_user(t.id, worker.id).await.unwrap(), again);
    // Unrelated updates of a report whose manager was deleted still work.
    let renamed = s
        .update_user(t.id, worker.id, rename("Worker Renamed"), None, &ctx())
        .await
        .unwrap();
    assert_eq!(renamed.manager_id, Some(boss.id));
}

async fn case_manager_cycles_are_refused(store: Rig) {
    store.migrate().await.unwrap();
    let s = &store;
    let t = tenant(s, "acme").await;
    let a = user(s, t.id, "a@acme.test", "A").await;
    let b = s
        .create_user(
            t.id,
            NewUser {
                manager_id: Some(a.id),
                ..new_user("b@acme.test", "B")
            },
            &ctx(),
        )
        .await
        .unwrap();
    let c = s
        .create_user(
            t.id,
            NewUser {
                manager_id: Some(b.id),
                ..new_user("c@acme.test", "C")
            },
            &ctx(),
        )
        .await
        .unwrap();
    let d = user(s, t.id, "d@acme.test", "D").await;
    let events_before = all_events(s, t.id).await.len();

    // a → b → c (c reports to b, b to a): a may not report to c, b, or itself.
    for (who, manager) in [
        (a.id, c.id),
        (a.id, b.id),
        (b.id, c.id),
        (a.id, a.id),
        (c.id, c.id),
    ] {
        let e = err(s
            .update_user(t.id, who, set_manager(Some(manager)), None, &ctx())
            .await);
        assert_field_error(&e, "manager_id", "manager_cycle");
    }
    assert_eq!(s.get_user(t.id, a.id).await.unwrap(), a);
    assert_eq!(s.get_user(t.id, b.id).await.unwrap(), b);
    assert_eq!(s.get_user(t.id, c.id).await.unwrap(), c);
    assert_eq!(all_events(s, t.id).await.len(), events_before);

    // Legal moves: c reports to a directly; a reports to d; then d may not report to c.
    let c2 = s
        .update_user(t.id, c.id, set_manager(Some(a.id)), None, &ctx())
        .await
        .unwrap();
    assert_eq!(c2.manager_id, Some(a.id));
    s.update_user(t.id, a.id, set_manager(Some(d.id)), None, &ctx())
        .await
        .unwrap();
    let e = err(s
        .update_user(t.id, d.id, set_manager(Some(c.id)), None, &ctx())
        .await);
    assert_field_error(&e, "manager_id", "manager_cycle");
    // Setting the manager one already has is fine.
    s.update_user(t.id, c.id, set_manager(Some(a.id)), None, &ctx())
        .await
        .unwrap();
}

async fn case_if_match_precondition(store: Rig) {
    store.migrate().await.unwrap();
    let s = &store;
    let t = tenant(s, "acme").await;
    let u = user(s, t.id, "u@acme.test", "Original").await;
    assert_eq!(u.version, 1);

    let e = err(s
        .update_user(t.id, u.id, rename("Stale"), Some(7), &ctx())
        .await);
    assert!(
        matches!(
            e,
            Error::PreconditionFailed {
                entity: "user",
                expected: 7,
                current: 1
            }
        ),
        "{e:?}"
    );
    assert_eq!(s.get_user(t.id, u.id).await.unwrap(), u);

    let v2 = s
        .update_user(t.id, u.id, rename("Second"), Some(1), &ctx())
        .await
        .unwrap();
    assert_eq!(v2.version, 2);
    let e = err(s
        .update_user(t.id, u.id, rename("Lost update"), Some(1), &ctx())
        .await);
    assert!(
        matches!(
            e,
            Error::PreconditionFailed {
                expected: 1,
                current: 2,
                ..
            }
        ),
        "{e:?}"
    );
    let e = err(s.delete_user(t.id, u.id, Some(1), &ctx()).await);
    assert!(
        matches!(
            e,
            Error::PreconditionFailed {
                expected: 1,
                current: 2,
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(s.get_user(t.id, u.id).await.unwrap(), v2);

    let deleted = s.delete_user(t.id, u.id, Some(2), &ctx()).await.unwrap();
    assert_eq!(deleted.version, 3);
    let events = all_events(s, t.id).await;
    let got: Vec<&str> = events.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(
        got,
        [
            actions::USER_DELETE,
            actions::USER_UPDATE,
            actions::USER_CREATE,
            actions::TENANT_CREATE
        ]
    );
}

async fn case_soft_delete_and_restore(store: Rig) {
    store.migrate().await.unwrap();
    let s = &store;
    let t = tenant(s, "acme").await;
    let keep = user(s, t.id, "keep@acme.test", "Keep").await;
    let u = user(s, t.id, "u@acme.test", "Leaving").await;

    let d = s.delete_user(t.id, u.id, None, &ctx()).await.unwrap();
    assert!(d.deleted_at.is_some());
    assert_eq!(d.version, 2);
    assert_eq!(d.updated_at, d.deleted_at.unwrap());
    assert_eq!(
        s.get_user(t.id, u.id).await.unwrap(),
        d,
        "get shows deleted users"
    );

    let ids = |users: Vec<User>| users.iter().map(|u| u.id).collect::<Vec<_>>();
    assert_eq!(
        ids(list_all_users(s, t.id, UserListQuery::default()).await),
        [keep.id]
    );
    let q = |deleted| UserListQuery {
        deleted,
        ..Default::default()
    };
    assert_eq!(
        ids(list_all_users(s, t.id, q(DeletedFilter::Include)).await),
        [keep.id, u.id]
    );
    assert_eq!(
        ids(list_all_users(s, t.id, q(DeletedFilter::Only)).await),
        [u.id]
    );

    assert_not_found(&err(s.delete_user(t.id, u.id, None, &ctx()).await), "user");
    assert_not_found(
        &err(s.delete_user(t.id, u.id, Some(2), &ctx()).await),
        "user",
    );
    assert_not_found(
        &err(s
            .update_user(t.id, u.id, rename("Ghost"), None, &ctx())
            .await),
        "user",
    );
    assert_not_found(
        &err(s.delete_user(t.id, UserId::new(), None, &ctx()).await),
        "user",
    );
    assert_not_found(
        &err(s.restore_user(t.id, UserId::new(), &ctx()).await),
        "user",
    );

    let r = s.restore_user(t.id, u.id, &ctx()).await.unwrap();
    assert_eq!(r.deleted_at, None);
    assert_eq!(r.version, 3);
    assert!(r.updated_at >= d.updated_at);
    assert_eq!(
        User {
            updated_at: u.updated_at,
            version: 1,
            ..r.clone()
        },
        u,
        "restoring brings back the user as it was"
    );
    assert_eq!(s.get_user(t.id, u.id).await.unwrap(), r);
    assert_eq!(
        ids(list_all_users(s, t.id, UserListQuery::default()).await),
        [keep.id, u.id]
    );

    let e = err(s.restore_user(t.id, u.id, &ctx()).await);
    assert!(
        matches!(
            e,
            Error::Refused {
                code: Code::NotDeleted,
                ref fields,
                ..
            } if fields.is_empty()
        ),
        "{e:?}"
    );
    let e = err(s.restore_user(t.id, keep.id, &ctx()).await);
    assert!(
        matches!(
            e,
            Error::Refused {
                code: Code::NotDeleted,
                ..
            }
        ),
        "{e:?}"
    );
}

async fn case_quota(store: Rig) {
    store.migrate().await.unwrap();
    let s = &store;
    let t = s
        .create_tenant(
            NewTenant {
                plan: Plan::Free,
                max_users: Some(MaxUsers::parse("max_users", 2).unwrap()),
                ..new_tenant("tiny")
            },
            &ctx(),
        )
        .await
        .unwrap();
    let u1 = user(s, t.id, "one@tiny.test", "One").await;
    user(s, t.id, "two@tiny.test", "Two").await;

    let e = err(s
        .create_user(t.id, new_user("three@tiny.test", "Three"), &ctx())
        .await);
    match &e {
        Error::Refused {
            code: Code::QuotaExceeded,
            reason: Some(reason),
            ..
        } => {
            assert_eq!(
                reason["max_users"], 2,
                "the reason names the limit: {reason}"
            );
        }
        other => panic!("expected QuotaExceeded, got {other:?}"),
    }

    // Deleted users do not count.
    s.delete_user(t.id, u1.id, None, &ctx()).await.unwrap();
    let three = user(s, t.id, "three@tiny.test", "Three").await;
    let e = err(s.restore_user(t.id, u1.id, &ctx()).await);
    assert!(
        matches!(
            e,
            Error::Refused {
                code: Code::QuotaExceeded,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(s.get_user(t.id, u1.id).await.unwrap().is_deleted());

    // Raising the quota lets the restore through.
    let patch = TenantPatch {
        max_users: Patch::Set(MaxUsers::parse("max_users", 3).unwrap()),
        ..Default::default()
    };
    s.update_tenant(t.id, patch, actions::TENANT_UPDATE, &ctx())
        .await
        .unwrap();
    s.restore_user(t.id, u1.id, &ctx()).await.unwrap();
    let e = err(s
        .create_user(t.id, new_user("four@tiny.test", "Four"), &ctx())
        .await);
    assert!(
        matches!(
            e,
            Error::Refused {
                code: Code::QuotaExceeded,
                ..
            }
        ),
        "{e:?}"
    );

    // Lowering it below the current count refuses new users but keeps the existing ones.
    let patch = TenantPatch {
        max_users: Patch::Set(MaxUsers::parse("max_users", 1).unwrap()),
        ..Default::default()
    };
    s.update_tenant(t.id, patch, actions::TENANT_UPDATE, &ctx())
        .await
        .unwrap();
    let e = err(s
        .create_user(t.id, new_user("five@tiny.test", "Five"), &ctx())
        .await);
    assert!(
        matches!(
            e,
            Error::Refused {
                code: Code::QuotaExceeded,
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(
        list_all_users(s, t.id, UserListQuery::default())
            .await
            .len(),
        3
    );
    // Updating and deleting are not creating: allowed over quota.
    s.update_user(t.id, three.id, rename("Three Renamed"), None, &ctx())
        .await
        .unwrap();
    s.delete_user(t.id, three.id, None, &ctx()).await.unwrap();

    // Seeding (the data generator) is not held to the quota.
    let batch = (0..3)
        .map(|i| seed_user(t.id, &format!("seed{i}@tiny.test"), "Seed", at(i)))
        .collect();
    assert_eq!(s.seed_users(t.id, batch, &ctx()).await.unwrap(), 3);

    // Unlimited.
    let patch = TenantPatch {
        max_users: Patch::Clear,
        ..Default::default()
    };
    s.update_tenant(t.id, patch, actions::TENANT_UPDATE, &ctx())
        .await
        .unwrap();
    user(s, t.id, "five@tiny.test", "Five").await;
}

async fn case_failed_mutations_change_nothing(store: Rig) {
    store.migrate().await.unwrap();
    let s = &store;
    let t = s
        .create_tenant(
            NewTenant {
                max_users: Some(MaxUsers::parse("max_users", 3).unwrap()),
                ..new_tenant("acme")
            },
            &ctx(),
        )
        .await
        .unwrap();
    let boss = user(s, t.id, "boss@acme.test", "Boss").await;
    let u = s
        .create_user(
            t.id,
            NewUser {
                manager_id: Some(boss.id),
                ..with_username(new_user("u@acme.test", "U"), "uuu")
            },
            &ctx(),
        )
        .await
        .unwrap();
    let gone = user(s, t.id, "gone@acme.test", "Gone").await;
    let gone = s.delete_user(t.id, gone.id, None, &ctx()).await.unwrap();
    let users_before = list_all_users(
        s,
        t.id,
        UserListQuery {
            deleted: DeletedFilter::Include,
            ..Default::default()
        },
    )
    .await;
    let events_before = all_events(s, t.id).await;
    let tenants_before = all_tenants(s, None, 50).await;

    // Each of these fails, for a different reason.
    let failures: Vec<Error> = vec![
        err(s
            .create_user(t.id, new_user("U@acme.test", "Dup"), &ctx())
            .await),
        err(s
            .create_user(
                t.id,
                with_username(new_user("v@acme.test", "V"), "UUU"),
                &ctx(),
            )
            .await),
        err(s
            .create_user(
                t.id,
                NewUser {
                    manager_id: Some(gone.id),
                    ..new_user("w@acme.test", "W")
                },
                &ctx(),
            )
            .await),
        err(s
            .update_user(t.id, u.id, rename("Stale"), Some(99), &ctx())
            .await),
        err(s
            .update_user(t.id, boss.id, set_manager(Some(u.id)), None, &ctx())
            .await),
        err(s
            .update_user(
                t.id,
                u.id,
                UserPatch {
                    email: Some(Email::parse("email", "BOSS@acme.test").unwrap()),
                    full_name: Some(DisplayName::parse("full_name", "Renamed Too").unwrap()),
                    ..Default::default()
                },
                None,
                &ctx(),
            )
            .await),
        err(s.delete_user(t.id, u.id, Some(99), &ctx()).await),
        err(s.delete_user(t.id, gone.id, None, &ctx()).await),
        err(s.restore_user(t.id, u.id, &ctx()).await),
        err(s
            .seed_users(
                t.id,
                vec![
                    seed_user(t.id, "fresh@acme.test", "Fresh", at(0)),
                    seed_user(t.id, "boss@ACME.test", "Dup Boss", at(0)),
                ],
                &ctx(),
            )
            .await),
        err(s.create_tenant(new_tenant("acme"), &ctx()).await),
        err(s.revoke_api_key(t.id, ApiKeyId::new(), &ctx()).await),
    ];
    assert_eq!(failures.len(), 12);

    // The quota: fill it, then fail.
    let last = user(s, t.id, "last@acme.test", "Last").await;
    let events_mid = all_events(s, t.id).await;
    err(s
        .create_user(t.id, new_user("over@acme.test", "Over"), &ctx())
        .await);
    err(s.restore_user(t.id, gone.id, &ctx()).await);
    assert_eq!(all_events(s, t.id).await, events_mid);

    let mut users_after = list_all_users(
        s,
        t.id,
        UserListQuery {
            deleted: DeletedFilter::Include,
            ..Default::default()
        },
    )
    .await;
    users_after.retain(|x| x.id != last.id);
    assert_eq!(users_after, users_before);
    let mut events_after = all_events(s, t.id).await;
    events_after.retain(|e| e.entity_id != Some(last.id.into_uuid()));
    assert_eq!(events_after, events_before);
    assert_eq!(all_tenants(s, None, 50).await, tenants_before);
    // The failed seed inserted nothing, not even its valid rows.
    let q = UserListQuery {
        q: Some(SearchQuery::parse("q", "fresh").unwrap()),
        deleted: DeletedFilter::Include,
        ..Default::default()
    };
    assert!(list_all_users(s, t.id, q).await.is_empty());
}

async fn case_audit_trail(store: Rig) {
    store.migrate().await.unwrap();
    let s = &store;
    let t = tenant(s, "acme").await;
    let other = tenant(s, "globex").await;
    // A signed-in administrator makes one of the changes.
    let admin = user(s, t.id, "admin@acme.test", "Admin").await.id;
    let admin_role = s
        .list_roles(t.id)
        .await
        .unwrap()
        .into_iter()
        .find(|r| r.name == "admin")
        .unwrap();
    s.assign_role(t.id, admin, admin_role.id, None, &ctx())
        .await
        .unwrap();
    let by_user = AuditContext {
        actor: Actor::User(admin),
        ip: Some("2001:db8::1".into()),
        user_agent: None,
        request_id: Some("req-user-1".into()),
    };
    let created = s
        .create_user(t.id, new_user("a@acme.test", "Audited"), &ctx())
        .await
        .unwrap();
    let updated = s
        .update_user(t.id, created.id, rename("Audited Again"), None, &by_user)
        .await
        .unwrap();
    let deleted = s
        .delete_user(t.id, created.id, None, &AuditContext::system())
        .await
        .unwrap();
    let restored = s.restore_user(t.id, created.id, &ctx()).await.unwrap();
    let bystander = user(s, t.id, "b@acme.test", "Bystander").await;
    user(s, other.id, "x@globex.test", "Elsewhere").await;

    let q = AuditQuery {
        entity_id: Some(created.id.into_uuid()),
        ..Default::default()
    };
    let events = walk_events(s, t.id, &q, 50).await;
    let got: Vec<&str> = events.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(
        got,
        [
            actions::USER_RESTORE,
            actions::USER_DELETE,
            actions::USER_UPDATE,
            actions::USER_CREATE
        ],
        "newest first"
    );
    let [restore_ev, delete_ev, update_ev, create_ev] = &events[..] else {
        unreachable!()
    };
    for ev in &events {
        assert_eq!(ev.tenant_id, t.id);
        assert_eq!(ev.entity_type, "user");
        assert_eq!(ev.entity_id, Some(created.id.into_uuid()));
    }
    assert_eq!(create_ev.before, None);
    assert_eq!(create_ev.after, Some(created.to_audit_json()));
    assert_eq!(create_ev.occurred_at, created.created_at);
    assert_eq!(update_ev.before, Some(created.to_audit_json()));
    assert_eq!(update_ev.after, Some(updated.to_audit_json()));
    assert_eq!(delete_ev.before, Some(updated.to_audit_json()));
    assert_eq!(delete_ev.after, Some(deleted.to_audit_json()));
    assert_eq!(restore_ev.before, Some(deleted.to_audit_json()));
    assert_eq!(restore_ev.after, Some(restored.to_audit_json()));

    // The circumstances of each change.
    let c = ctx();
    assert_eq!(create_ev.actor_type, ActorType::ApiKey);
    assert_eq!(create_ev.actor_id, Some(Uuid::from_u128(0xA11CE)));
    assert_eq!(create_ev.ip, c.ip);
    assert_eq!(create_ev.user_agent, c.user_agent);
    assert_eq!(create_ev.request_id, c.request_id);
    assert_eq!(update_ev.actor_type, ActorType::User);
    assert_eq!(update_ev.actor_id, Some(admin.into_uuid()));
    assert_eq!(update_ev.ip.as_deref(), Some("2001:db8::1"));
    assert_eq!(update_ev.user_agent, None);
    assert_eq!(update_ev.request_id.as_deref(), Some("req-user-1"));
    assert_eq!(delete_ev.actor_type, ActorType::System);
    assert_eq!(delete_ev.actor_id, None);
    assert_eq!(delete_ev.ip, None);

    // Filters.
    let all = all_events(s, t.id).await;
    assert_eq!(
        all.len(),
        8,
        "tenant.create, the admin's create and role, four on the user, the bystander's create"
    );
    let tid = t.id;
    let pick = |q: AuditQuery| async move { walk_events(s, tid, &q, 2).await };
    let only = |pred: &dyn Fn(&AuditEvent) -> bool| -> Vec<AuditEvent> {
        all.iter().filter(|e| pred(e)).cloned().collect()
    };
    assert_eq!(
        pick(AuditQuery {
            action: Some(actions::USER_CREATE.into()),
            ..Default::default()
        })
        .await,
        only(&|e| e.action == actions::USER_CREATE)
    );
    assert_eq!(
        pick(AuditQuery {
            actor_id: Some(admin.into_uuid()),
            ..Default::default()
        })
        .await,
        vec![update_ev.clone()]
    );
    assert_eq!(
        pick(AuditQuery {
            actor_type: Some(ActorType::System),
            ..Default::default()
        })
        .await,
        vec![delete_ev.clone()]
    );
    assert_eq!(
        pick(AuditQuery {
            actor_type: Some(ActorType::ApiKey),
            ..Default::default()
        })
        .await,
        only(&|e| e.actor_type == ActorType::ApiKey)
    );
    assert_eq!(
        pick(AuditQuery {
            entity_type: Some("tenant".into()),
            ..Default::default()
        })
        .await,
        only(&|e| e.entity_type == "tenant")
    );
    assert_eq!(
        pick(AuditQuery {
            entity_type: Some("user".into()),
            entity_id: Some(bystander.id.into_uuid()),
            ..Default::default()
        })
        .await
        .len(),
        1
    );
    assert_eq!(
        pick(AuditQuery {
            entity_type: Some("user".into()),
            action: Some(actions::USER_DELETE.into()),
            actor_type: Some(ActorType::System),
            ..Default::default()
        })
        .await,
        vec![delete_ev.clone()]
    );
    assert!(pick(AuditQuery {
        action: Some("user.nonexistent".into()),
        ..Default::default()
    })
    .await
    .is_empty());

    // Time range: since is inclusive, until exclusive.
    let since = update_ev.occurred_at;
    let until = restore_ev.occurred_at;
    assert_eq!(
        pick(AuditQuery {
            since: Some(since),
            until: Some(until),
            ..Default::default()
        })
        .await,
        only(&|e| e.occurred_at >= since && e.occurred_at < until)
    );
    assert!(pick(AuditQuery {
        since: Some(since),
        until: Some(until),
        ..Default::default()
    })
    .await
    .contains(update_ev));

    // Paging: every page size yields the same newest-first sequence.
    let mut ids: Vec<AuditEventId> = all.iter().map(|e| e.id).collect();
    let mut sorted = ids.clone();
    sorted.sort();
    sorted.reverse();
    assert_eq!(ids, sorted, "newest (largest id) first");
    for page in [1, 2, 5, 7, 8, 9] {
        let got: Vec<AuditEventId> = walk_events(s, t.id, &AuditQuery::default(), page)
            .await
            .iter()
            .map(|e| e.id)
            .collect();
        assert_eq!(got, ids, "page size {page}");
    }
    let first = s
        .list_audit_events(
            t.id,
            &AuditQuery {
                limit: limit(8),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(first.items.len(), 8);
    assert_eq!(first.next_cursor, None);
    // Continuing from an event yields those strictly older.
    ids.drain(..3);
    let rest = s
        .list_audit_events(
            t.id,
            &AuditQuery {
                before_id: Some(all[2].id),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(rest.items.iter().map(|e| e.id).collect::<Vec<_>>(), ids);
}

/// The key of `u` in `field` order, for sorting in Rust as the backends must.
fn rust_key(u: &User, field: UserSortField) -> (String, i64) {
    let sort = UserSort {
        field,
        descending: false,
    };
    match UserCursor::after(u, sort).value {
        SortValue::Text(s) => (s, 0),
        SortValue::Micros(m) => (String::new(), m),
    }
}

async fn case_list_users_every_sort_walks_all_pages(store: Rig) {
    store.migrate().await.unwrap();
    let s = &store;
    let t = tenant(s, "acme").await;
    let other = tenant(s, "globex").await;
    // Names with ties (also ties after lower-casing), non-ASCII, and mixed case; creation
    // and sign-in times with ties; some never signed in (they sort as 0).
    let names = [
        "alice",
        "Alice",
        "ALICE",
        "bob",
        "Bob",
        "Émile",
        "émile",
        "Zoë",
        "zoe",
        "Zed",
        "Ærøskøbing",
        "李雷",
        "O'Brien",
        "o'brien",
        "Mc Donald",
        "mcdonald",
        "Yusuf",
        "yusuf",
        "Ümit",
        "umit",
        "Carol",
        "carol",
        "Dave",
        "dave",
        "Eve",
        "eve",
        "Ángel",
        "angel",
        "Zara",
        "zara",
        "Gone One",
        "Gone Two",
    ];
    let mut users = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let i = i as i64;
        let mut u = seed_user(
            t.id,
            &format!("User{:02}@Example.test", 31 - i),
            name,
            at((i % 7) * 1_000),
        );
        u.last_login_at = match i % 5 {
            0 => None,
            1 => Some(at(50_000)),
            _ => Some(at(i * 333)),
        };
        if name.starts_with("Gone") {
            u.deleted_at = Some(at(99_999));
        }
        users.push(u);
    }
    s.seed_users(t.id, users.clone(), &ctx()).await.unwrap();
    // Noise in another tenant.
    let noise = (0..5)
        .map(|i| seed_user(other.id, &format!("n{i}@globex.test"), "alice", at(i)))
        .collect();
    s.seed_users(other.id, noise, &ctx()).await.unwrap();

    let live: Vec<User> = users.iter().filter(|u| !u.is_deleted()).cloned().collect();
    assert_eq!(live.len(), 30);
    for field in UserSortField::ALL {
        for descending in [false, true] {
            let sort = UserSort {
                field: *field,
                descending,
            };
            for (deleted, pool) in [
                (DeletedFilter::Exclude, &live),
                (DeletedFilter::Include, &users),
            ] {
                let mut expected = pool.clone();
                expected.sort_by_key(|u| (rust_key(u, *field), u.id));
                if descending {
                    expected.reverse();
                }
                let expected: Vec<UserId> = expected.iter().map(|u| u.id).collect();
                let base = UserListQuery {
                    sort,
                    deleted,
                    ..Default::default()
                };
                for page in [7, 1, 30, 200] {
                    let got = walk_users(s, t.id, &base, page).await;
                    let got_ids: Vec<UserId> = got.iter().map(|u| u.id).collect();
                    assert_eq!(got_ids, expected, "sort {sort:?}, {deleted:?}, page {page}");
                    let unique: HashSet<UserId> = got_ids.iter().copied().collect();
                    assert_eq!(unique.len(), got_ids.len(), "no duplicates");
                }
            }
        }
    }

    // Pages of 7 over 30 users: 7, 7, 7, 7, 2 with a cursor on all but the last.
    let mut q = UserListQuery {
        limit: limit(7),
        ..Default::default()
    };
    let mut sizes = Vec::new();
    loop {
        let page = s.list_users(t.id, &q).await.unwrap();
        sizes.push(page.items.len());
        match page.next_cursor {
            Some(c) => q.after = Some(UserCursor::decode(&c, q.sort).unwrap()),
            None => break,
        }
    }
    assert_eq!(sizes, [7, 7, 7, 7, 2]);

    // A page that ends exactly at the last user has no cursor.
    let page = s
        .list_users(
            t.id,
            &UserListQuery {
                limit: limit(30),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(page.items.len(), 30);
    assert_eq!(page.next_cursor, None);
}

async fn case_list_users_filters(store: Rig) {
    store.migrate().await.unwrap();
    let s = &store;
    let t = tenant(s, "acme").await;
    let boss = seed_user(t.id, "boss@acme.test", "Boss", at(0));
    let mut users = vec![boss.clone()];
    for i in 0..24i64 {
        let mut u = seed_user(
            t.id,
            &format!("u{i}@acme.test"),
            &format!("User {i}"),
            at(i * 10),
        );
        u.status = [
            UserStatus::Active,
            UserStatus::Suspended,
            UserStatus::Pending,
        ][(i % 3) as usize];
        u.department = match i % 4 {
            0 => Some("Engineering".into()),
            1 => Some("Sales".into()),
            2 => Some("engineering".into()),
            _ => None,
        };
        u.manager_id = (i % 2 == 0).then_some(boss.id);
        if i % 6 == 5 {
            u.deleted_at = Some(at(1_000_000));
        }
        users.push(u);
    }
    s.seed_users(t.id, users.clone(), &ctx()).await.unwrap();
    let (tid, boss_id) = (t.id, boss.id);

    let check = |q: UserListQuery, pred: Box<dyn Fn(&User) -> bool>| {
        let users = users.clone();
        async move {
            let mut expected: Vec<UserId> = users
                .iter()
                .filter(|u| {
                    let deleted_ok = match q.deleted {
                        DeletedFilter::Exclude => !u.is_deleted(),
                        DeletedFilter::Include => true,
                        DeletedFilter::Only => u.is_deleted(),
                    };
                    deleted_ok && pred(u)
                })
                .map(|u| u.id)
                .collect();
            expected.sort_by_key(|id| {
                let u = users.iter().find(|u| u.id == *id).unwrap();
                (u.created_at, u.id)
            });
            assert!(
                !expected.is_empty() || q.status == Some(UserStatus::Blocked),
                "{q:?}"
            );
            let got: Vec<UserId> = walk_users(s, tid, &q, 4)
                .await
                .iter()
                .map(|u| u.id)
                .collect();
            assert_eq!(got, expected, "{q:?}");
        }
    };

    check(
        UserListQuery {
            status: Some(UserStatus::Suspended),
            ..Default::default()
        },
        Box::new(|u| u.status == UserStatus::Suspended),
    )
    .await;
    check(
        UserListQuery {
            status: Some(UserStatus::Blocked),
            ..Default::default()
        },
        Box::new(|_| false),
    )
    .await;
    // Department is an exact, case-sensitive match.
    check(
        UserListQuery {
            department: Some("Engineering".into()),
            ..Default::default()
        },
        Box::new(|u| u.department.as_deref() == Some("Engineering")),
    )
    .await;
    check(
        UserListQuery {
            manager_id: Some(boss.id),
            ..Default::default()
        },
        Box::new(move |u| u.manager_id == Some(boss_id)),
    )
    .await;
    // created_after is inclusive, created_before exclusive.
    check(
        UserListQuery {
            created_after: Some(at(50)),
            created_before: Some(at(150)),
            ..Default::default()
        },
        Box::new(|u| u.created_at >= at(50) && u.created_at < at(150)),
    )
    .await;
    check(
        UserListQuery {
            created_after: Some(at(200)),
            deleted: DeletedFilter::Include,
            ..Default::default()
        },
        Box::new(|u| u.created_at >= at(200)),
    )
    .await;
    check(
        UserListQuery {
            deleted: DeletedFilter::Only,
            ..Default::default()
        },
        Box::new(|_| true),
    )
    .await;
    // Everything at once.
    check(
        UserListQuery {
            status: Some(UserStatus::Active),
            department: Some("Engineering".into()),
            manager_id: Some(boss.id),
            created_after: Some(at(1)),
            created_before: Some(at(230)),
            deleted: DeletedFilter::Include,
            ..Default::default()
        },
        Box::new(move |u| {
            u.status == UserStatus::Active
                && u.department.as_deref() == Some("Engineering")
                && u.manager_id == Some(boss_id)
                && u.created_at >= at(1)
                && u.created_at < at(230)
        }),
    )
    .await;

    // Filters combine with every sort order and its cursor.
    for field in UserSortField::ALL {
        for descending in [false, true] {
            let sort = UserSort {
                field: *field,
                descending,
            };
            let q = UserListQuery {
                department: Some("Engineering".into()),
                sort,
                ..Default::default()
            };
            let mut expected: Vec<&User> = users
                .iter()
                .filter(|u| !u.is_deleted() && u.department.as_deref() == Some("Engineering"))
                .collect();
            expected.sort_by_key(|u| (rust_key(u, *field), u.id));
            if descending {
                expected.reverse();
            }
            let expected: Vec<UserId> = expected.iter().map(|u| u.id).collect();
            let got: Vec<UserId> = walk_users(s, t.id, &q, 2)
                .await
                .iter()
                .map(|u| u.id)
                .collect();
            assert_eq!(got, expected, "{sort:?}");
        }
    }
}

async fn case_search(store: Rig) {
    store.migrate().await.unwrap();
    let s = &store;
    let t = tenant(s, "acme").await;
    let other = tenant(s, "globex").await;
    let mk = |email: &str, name: &str, username: Option<&str>, dept: &str| NewUser {
        username: username.map(|u| Username::parse("username", u).unwrap()),
        department: Some(Label::parse("department", dept).unwrap()),
        ..new_user(email, name)
    };
    let fixtures = [
        mk(
            "ada.lovelace@analytical.org",
            "Ada Lovelace",
            Some("countess"),
            "Math",
        ),
        mk(
            "grace.hopper@navy.mil",
            "Grace Hopper",
            Some("amazing_grace"),
            "Navy",
        ),
        mk("alan@bletchley.uk", "Alan Turing", Some("enigma"), "Math"),
        mk(
            "asmith@example.com",
            "Adaline Smith",
            Some("adaline"),
            "Sales",
        ),
        mk(
            "z.angstrom@example.com",
            "Zoë Ångström",
            Some("zed42"),
            "Physics",
        ),
        mk("EWD@UTexas.edu", "Edsger W. Dijkstra", None, "CS"),
        mk(
            "riona@example.ie",
            "Ríona O'Brien-Smythe",
            Some("rob"),
            "Sales",
        ),
    ];
    for f in fixtures {
        s.create_user(t.id, f, &ctx()).await.unwrap();
    }
    // The same names in another tenant must never show up.
    s.create_user(
        other.id,
        mk("ada@other.test", "Ada Other", Some("ada"), "Math"),
        &ctx(),
    )
    .await
    .unwrap();

    let search = |q: &str| UserListQuery {
        q: Some(SearchQuery::parse("q", q).unwrap()),
        ..Default::default()
    };
    let find = |q: UserListQuery| async move { names(&list_all_users(s, t.id, q).await) };
    let expect = |v: &[&str]| {
        let mut v: Vec<String> = v.iter().map(|s| s.to_string()).collect();
        v.sort();
        v
    };

    // Prefixes of first names, last names, usernames, email local parts and domains.
    assert_eq!(
        find(search("ada")).await,
        expect(&["Ada Lovelace", "Adaline Smith"])
    );
    assert_eq!(find(search("lovel")).await, expect(&["Ada Lovelace"]));
    assert_eq!(find(search("hopper")).await, expect(&["Grace Hopper"]));
    assert_eq!(find(search("countess")).await, expect(&["Ada Lovelace"]));
    assert_eq!(find(search("enig")).await, expect(&["Alan Turing"]));
    assert_eq!(find(search("amaz")).await, expect(&["Grace Hopper"]));
    assert_eq!(find(search("asmi")).await, expect(&["Adaline Smith"]));
    assert_eq!(find(search("ewd")).await, expect(&["Edsger W. Dijkstra"]));
    assert_eq!(find(search("bletchley")).await, expect(&["Alan Turing"]));
    assert_eq!(find(search("analytic")).await, expect(&["Ada Lovelace"]));
    assert_eq!(find(search("utex")).await, expect(&["Edsger W. Dijkstra"]));
    // A whole email is its words.
    assert_eq!(
        find(search("grace.hopper@navy.mil")).await,
        expect(&["Grace Hopper"])
    );
    // Words are runs of letters and digits: '_', '\'', '-', '.', '@' separate them.
    assert_eq!(
        find(search("brien")).await,
        expect(&["Ríona O'Brien-Smythe"])
    );
    assert_eq!(
        find(search("smythe")).await,
        expect(&["Ríona O'Brien-Smythe"])
    );
    assert_eq!(
        find(search("sm")).await,
        expect(&["Adaline Smith", "Ríona O'Brien-Smythe"])
    );
    assert_eq!(find(search("zed4")).await, expect(&["Zoë Ångström"]));
    // A term must be a prefix of a word, not any substring.
    assert!(find(search("race")).await.is_empty());
    assert!(find(search("velace")).await.is_empty());
    assert!(find(search("42")).await.is_empty());
    // All terms are required (in any order and field).
    assert_eq!(find(search("ada smith")).await, expect(&["Adaline Smith"]));
    assert_eq!(find(search("smith ada")).await, expect(&["Adaline Smith"]));
    assert_eq!(
        find(search("ada countess lovelace")).await,
        expect(&["Ada Lovelace"])
    );
    assert!(find(search("ada hopper")).await.is_empty());
    // Case does not matter, on either side.
    assert_eq!(find(search("LOVELACE")).await, expect(&["Ada Lovelace"]));
    assert_eq!(
        find(search("utexas EDU")).await,
        expect(&["Edsger W. Dijkstra"])
    );
    assert_eq!(find(search("ZOË")).await, expect(&["Zoë Ångström"]));
    assert_eq!(find(search("ångs")).await, expect(&["Zoë Ångström"]));
    // Diacritics are kept: `zoe` is not a prefix of `zoë`.
    assert!(find(search("zoe")).await.is_empty());
    assert_eq!(find(search("rí")).await, expect(&["Ríona O'Brien-Smythe"]));

    // Combined with filters.
    let mut q = search("ada");
    q.department = Some("Math".into());
    assert_eq!(find(q).await, expect(&["Ada Lovelace"]));
    let mut q = search("a");
    q.department = Some("Math".into());
    assert_eq!(find(q).await, expect(&["Ada Lovelace", "Alan Turing"]));
    let mut q = search("a");
    q.status = Some(UserStatus::Suspended);
    assert!(find(q).await.is_empty());

    // Combined with every sort and the cursor: pages of 2 in order.
    let expected_a = expect(&[
        "Ada Lovelace",
        "Adaline Smith",
        "Alan Turing",
        "Grace Hopper",
        "Zoë Ångström",
    ]);
    for field in UserSortField::ALL {
        for descending in [false, true] {
            let mut q = search("a");
            q.sort = UserSort {
                field: *field,
                descending,
            };
            let got = walk_users(s, t.id, &q, 2).await;
            assert_eq!(names(&got), expected_a, "{:?}", q.sort);
            let mut sorted = got.clone();
            sorted.sort_by_key(|u| (rust_key(u, *field), u.id));
            if descending {
                sorted.reverse();
            }
            assert_eq!(got, sorted, "{:?}", q.sort);
        }
    }

    // The index follows updates and deletes.
    let alan = list_all_users(s, t.id, search("alan")).await.remove(0);
    let patch = UserPatch {
        email: Some(Email::parse("email", "turing@kings.cam.ac.uk").unwrap()),
        full_name: Some(DisplayName::parse("full_name", "Alan Mathison Turing").unwrap()),
        username: Patch::Clear,
        ..Default::default()
    };
    s.update_user(t.id, alan.id, patch, None, &ctx())
        .await
        .unwrap();
    assert_eq!(
        find(search("mathison")).await,
        expect(&["Alan Mathison Turing"])
    );
    assert_eq!(
        find(search("kings")).await,
        expect(&["Alan Mathison Turing"])
    );
    assert!(find(search("bletchley")).await.is_empty());
    assert!(find(search("enigma")).await.is_empty());
    // Updating other fields keeps the user findable.
    let patch = UserPatch {
        job_title: Patch::Set(Label::parse("job_title", "Mathematician").unwrap()),
        ..Default::default()
    };
    s.update_user(t.id, alan.id, patch, None, &ctx())
        .await
        .unwrap();
    assert_eq!(
        find(search("turing")).await,
        expect(&["Alan Mathison Turing"])
    );

    let adaline = list_all_users(s, t.id, search("adaline")).await.remove(0);
    s.delete_user(t.id, adaline.id, None, &ctx()).await.unwrap();
    assert_eq!(find(search("ada")).await, expect(&["Ada Lovelace"]));
    let mut q = search("ada");
    q.deleted = DeletedFilter::Only;
    assert_eq!(find(q).await, expect(&["Adaline Smith"]));
    let mut q = search("ada");
    q.deleted = DeletedFilter::Include;
    assert_eq!(find(q).await, expect(&["Ada Lovelace", "Adaline Smith"]));
    s.restore_user(t.id, adaline.id, &ctx()).await.unwrap();
    assert_eq!(
        find(search("ada")).await,
        expect(&["Ada Lovelace", "Adaline Smith"])
    );

    // Seeded users are searchable too.
    let seeded = seed_user(t.id, "seeded.person@example.com", "Seedling Person", at(0));
    s.seed_users(t.id, vec![seeded], &ctx()).await.unwrap();
    assert_eq!(find(search("seedl")).await, expect(&["Seedling Person"]));
}

async fn case_seed_users(store: Rig) {
    store.migrate().await.unwrap();
    let s = &store;
    let t = tenant(s, "acme").await;
    let managers: Vec<User> = (0..10)
        .map(|i| {
            seed_user(
                t.id,
                &format!("m{i}@acme.test"),
                &format!("Manager {i}"),
                at(i),
            )
        })
        .collect();
    let n = 2_500;
    let mut batch: Vec<User> = (0..n)
        .map(|i| {
            let mut u = seed_user(
                t.id,
                &format!("person{i}@acme.test"),
                &format!("Person {i:04}"),
                at(1_000 + i),
            );
            u.username = Some(format!("person_{i}"));
            u.status = UserStatus::ALL[(i as usize) % UserStatus::ALL.len()];
            u
        })
        .collect();
    // Managers may come later in the same batch.
    for (i, u) in batch.iter_mut().enumerate() {
        u.manager_id = Some(managers[i % managers.len()].id);
    }
    batch.extend(managers.iter().cloned());
    let inserted = s.seed_users(t.id, batch, &ctx()).await.unwrap();
    assert_eq!(inserted, n as u64 + 10);

    let all = list_all_users(s, t.id, UserListQuery::default()).await;
    assert_eq!(all.len(), n as usize + 10);
    let q = UserListQuery {
        manager_id: Some(managers[3].id),
        ..Default::default()
    };
    assert_eq!(list_all_users(s, t.id, q).await.len(), (n as usize) / 10);
    let q = UserListQuery {
        q: Some(SearchQuery::parse("q", "person 0042").unwrap()),
        ..Default::default()
    };
    assert_eq!(names(&list_all_users(s, t.id, q).await), ["Person 0042"]);

    // One audit event for the batch.
    let q = AuditQuery {
        action: Some(actions::USER_SEED.into()),
        ..Default::default()
    };
    let events = walk_events(s, t.id, &q, 10).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].after, Some(json!({ "count": n + 10 })));
    assert_eq!(events[0].entity_type, "user");
    assert_eq!(events[0].entity_id, None);
    assert_eq!(
        all_events(s, t.id).await.len(),
        2,
        "tenant.create and user.seed"
    );

    // An empty batch is fine.
    assert_eq!(s.seed_users(t.id, Vec::new(), &ctx()).await.unwrap(), 0);

    // Seeded users behave like any other.
    let u = &all[0];
    let renamed = s
        .update_user(t.id, u.id, rename("Renamed"), Some(u.version), &ctx())
        .await
        .unwrap();
    assert_eq!(renamed.version, u.version + 1);

    let nowhere = TenantId::new();
    let stray = seed_user(nowhere, "stray@nowhere.test", "Stray", at(0));
    let e = err(s.seed_users(nowhere, vec![stray], &ctx()).await);
    assert_not_found(&e, "tenant");
}

/// Seeding holds managers to the tenant like every other write: a batch naming a manager
/// that is not a user of the tenant (in the database or the batch) is refused as a whole.
async fn case_seed_users_refuses_foreign_managers(store: Rig) {
    store.migrate().await.unwrap();
    let s = &store;
    let t = tenant(s, "acme").await;
    let other = tenant(s, "globex").await;
    let foreigner = user(s, other.id, "f@globex.test", "Foreigner").await;
    for manager in [UserId::new(), foreigner.id] {
        let fine = seed_user(t.id, "fine@acme.test", "Fine", at(0));
        let mut orphan = seed_user(t.id, "orphan@acme.test", "Orphan", at(0));
        orphan.manager_id = Some(manager);
        let e = err(s.seed_users(t.id, vec![fine, orphan], &ctx()).await);
        assert_field_error(&e, "manager_id", "unknown_manager");
        let q = UserListQuery {
            deleted: DeletedFilter::Include,
            ..Default::default()
        };
        assert!(list_all_users(s, t.id, q).await.is_empty());
    }
}

/// Search stays exact when more users match than a backend inspects in sort order before it
/// switches strategy (the PostgreSQL store walks the sort index for a while, then falls
/// back to the search index): every page of every sort equals a filter done in Rust.
async fn case_search_past_the_sorted_walk(store: Rig) {
    store.migrate().await.unwrap();
    const FIRST: [&str; 12] = [
        "Ada", "Grace", "Alan", "Édith", "Linus", "Barbara", "Ken", "Margaret", "Dennis",
        "Frances", "Zoë", "Niklaus",
    ];
    const LAST: [&str; 10] = [
        "Lovelace", "Hopper", "Turing", "Piaf", "Torvalds", "Liskov", "Thompson", "Hamilton",
        "Ritchie", "Allen",
    ];
    let t = tenant(&store, "acme").await;
    let base = to_micros(now()) - 10_000_000_000;
    let users: Vec<User> = (0..6_500)
        .map(|i| {
            let (first, last) = (FIRST[i % FIRST.len()], LAST[(i / 7) % LAST.len()]);
            let email = format!(
                "{}.{}{i}@example.com",
                first.to_lowercase(),
                last.to_lowercase()
            );
            seed_user(
                t.id,
                &email,
                &format!("{first} {last}"),
                ts(base + i as i64 * 1_000),
            )
        })
        .collect();
    store.seed_users(t.id, users.clone(), &ctx()).await.unwrap();
    let words = |u: &User| -> Vec<String> {
        [u.full_name.as_str(), u.email.as_str()]
            .iter()
            .flat_map(|s| {
                s.split(|c: char| !c.is_alphanumeric())
                    .map(str::to_lowercase)
            })
            .filter(|w| !w.is_empty())
            .collect()
    };
    for raw in ["zoë", "zo 9", "ada", "niklaus allen 99", "e"] {
        let sq = SearchQuery::parse("q", raw).unwrap();
        let matching: Vec<&User> = users
            .iter()
            .filter(|u| {
                let w = words(u);
                sq.terms()
                    .iter()
                    .all(|t| w.iter().any(|w| w.starts_with(t.as_str())))
            })
            .collect();
        for (field, descending) in [
            (UserSortField::Name, false),
            (UserSortField::Name, true),
            (UserSortField::Email, false),
            (UserSortField::Created, true),
        ] {
            let sort = UserSort { field, descending };
            let mut expect: Vec<(SortValue, UserId)> = matching
                .iter()
                .map(|u| {
                    let c = UserCursor::after(u, sort);
                    (c.value, c.id)
                })
                .collect();
            expect.sort_by(|a, b| {
                match (&a.0, &b.0) {
                    (SortValue::Text(x), SortValue::Text(y)) => x.as_bytes().cmp(y.as_bytes()),
                    (SortValue::Micros(x), SortValue::Micros(y)) => x.cmp(y),
                    _ => unreachable!(),
                }
                .then(a.1.cmp(&b.1))
            });
            if descending {
                expect.reverse();
            }
            let expect: Vec<UserId> = expect.into_iter().map(|(_, id)| id).collect();
            let q = UserListQuery {
                q: Some(sq.clone()),
                sort,
                ..Default::default()
            };
            let got: Vec<UserId> = list_all_users(&store, t.id, q)
                .await
                .iter()
                .map(|u| u.id)
                .collect();
            assert_eq!(got.len(), expect.len(), "{raw} {sort:?}");
            assert!(got == expect, "{raw} {sort:?}: order differs");
        }
    }
}
