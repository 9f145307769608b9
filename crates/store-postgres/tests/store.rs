//! Exercises `PgStore` against a local PostgreSQL (PORTCULLIS_TEST_DATABASE_URL, default
//! postgres://postgres@127.0.0.1:5432/test), each test in a fresh schema.

mod common;

use std::collections::HashSet;

use common::*;
use domain::api_keys::{KeyHash, NewApiKey};
use domain::audit::{actions, AuditQuery};
use domain::page::PageSize;
use domain::patch::Patch;
use domain::tenants::{Plan, TenantListQuery, TenantPatch, TenantStatus};
use domain::users::{DeletedFilter, User, UserListQuery, UserPatch, UserSort, UserSortField, UserStatus};
use domain::values::{DisplayName, Email, SearchQuery, Username};
use domain::{Error, Store, TenantId, UserId};

#[tokio::test]
async fn tenants_and_api_keys() {
    let db = TestDb::new().await;
    let s = &db.store;
    let a = tenant(s, "acme").await;
    let err = s
        .create_tenant(new_tenant("acme", Plan::Free, None), &ctx())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Conflict { code: "slug_taken", field: Some("slug"), .. }), "{err:?}");
    assert_eq!(s.get_tenant(a.id).await.unwrap(), a);
    let slug = domain::tenants::TenantSlug::parse("slug", "acme").unwrap();
    assert_eq!(s.get_tenant_by_slug(&slug).await.unwrap(), a);
    assert!(matches!(
        s.get_tenant(TenantId::new()).await,
        Err(Error::NotFound { entity: "tenant" })
    ));

    let mut ids = vec![a.id];
    for i in 0..4 {
        ids.push(tenant(s, &format!("t{i}")).await.id);
    }
    ids.reverse();
    let mut seen = vec![];
    let mut after = None;
    loop {
        let page = s
            .list_tenants(&TenantListQuery {
                status: None,
                limit: PageSize::new(Some(2)).unwrap(),
                after,
            })
            .await
            .unwrap();
        seen.extend(page.items.iter().map(|t| t.id));
        match page.next_cursor {
            Some(c) => after = Some(domain::page::decode_cursor(&c).unwrap()),
            None => break,
        }
    }
    assert_eq!(seen, ids);

    let patch = TenantPatch {
        status: Some(TenantStatus::Suspended),
        plan: Some(Plan::Free),
        ..Default::default()
    };
    let t = s
        .update_tenant(a.id, patch, actions::TENANT_DEACTIVATE, &ctx())
        .await
        .unwrap();
    assert_eq!(t.status, TenantStatus::Suspended);
    assert_eq!(t.max_users, Some(100));
    assert_eq!(s.get_tenant(a.id).await.unwrap(), t);
    let suspended = s
        .list_tenants(&TenantListQuery {
            status: Some(TenantStatus::Suspended),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(suspended.items, vec![t.clone()]);
    assert!(matches!(
        s.update_tenant(TenantId::new(), TenantPatch::default(), actions::TENANT_UPDATE, &ctx())
            .await,
        Err(Error::NotFound { entity: "tenant" })
    ));

    // API keys.
    let b = tenant(s, "beta").await;
    let hash = KeyHash::of("pcs_secret");
    let key = s
        .create_api_key(
            a.id,
            NewApiKey { name: label("ci"), platform_admin: true },
            &hash,
            "pcs_abcdef",
            &ctx(),
        )
        .await
        .unwrap();
    let auth = s.authenticate_api_key(&hash).await.unwrap().unwrap();
    assert_eq!(auth.key, key);
    assert_eq!(auth.tenant_status, TenantStatus::Suspended);
    assert!(s.authenticate_api_key(&KeyHash::of("nope")).await.unwrap().is_none());
    assert_eq!(s.list_api_keys(a.id).await.unwrap(), vec![key.clone()]);
    assert!(s.list_api_keys(b.id).await.unwrap().is_empty());
    assert!(matches!(
        s.revoke_api_key(b.id, key.id, &ctx()).await,
        Err(Error::NotFound { entity: "api_key" })
    ));
    let revoked = s.revoke_api_key(a.id, key.id, &ctx()).await.unwrap();
    assert!(revoked.revoked_at.is_some());
    assert!(matches!(
        s.revoke_api_key(a.id, key.id, &ctx()).await,
        Err(Error::NotFound { entity: "api_key" })
    ));
    assert!(s.authenticate_api_key(&hash).await.unwrap().is_none());
    assert!(matches!(
        s.create_api_key(
            TenantId::new(),
            NewApiKey { name: label("x"), platform_admin: false },
            &KeyHash::of("k2"),
            "pcs_k2",
            &ctx()
        )
        .await,
        Err(Error::NotFound { entity: "tenant" })
    ));

    let events = s.list_audit_events(a.id, &AuditQuery::default()).await.unwrap();
    let acts: Vec<_> = events.items.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(
        acts,
        [actions::API_KEY_REVOKE, actions::API_KEY_CREATE, actions::TENANT_DEACTIVATE, actions::TENANT_CREATE]
    );
    assert_eq!(events.items[3].after.as_ref().unwrap()["slug"], "acme");
    db.finish().await;
}

#[tokio::test]
async fn user_lifecycle() {
    let db = TestDb::new().await;
    let s = &db.store;
    let t = tenant(s, "acme").await;
    let other = tenant(s, "other").await;

    let u = s
        .create_user(t.id, new_user("Ada@Example.com", Some("Ada"), "Ada Lovelace"), &ctx())
        .await
        .unwrap();
    assert_eq!(s.get_user(t.id, u.id).await.unwrap(), u);
    assert!(matches!(s.get_user(other.id, u.id).await, Err(Error::NotFound { entity: "user" })));

    let dup = s
        .create_user(t.id, new_user("ada@EXAMPLE.com", None, "Other"), &ctx())
        .await
        .unwrap_err();
    assert!(matches!(dup, Error::Conflict { code: "email_taken", field: Some("email"), .. }), "{dup:?}");
    let dup = s
        .create_user(t.id, new_user("x@example.com", Some("ADA"), "Other"), &ctx())
        .await
        .unwrap_err();
    assert!(matches!(dup, Error::Conflict { code: "username_taken", field: Some("username"), .. }));
    // Another tenant may reuse both.
    s.create_user(other.id, new_user("ada@example.com", Some("ada"), "Ada Two"), &ctx())
        .await
        .unwrap();

    // Managers: unknown, other tenant's.
    let mut nu = new_user("b@example.com", None, "Bob");
    nu.manager_id = Some(UserId::new());
    let e = s.create_user(t.id, nu.clone(), &ctx()).await.unwrap_err();
    assert!(matches!(&e, Error::Validation(f) if f[0].code == "unknown_manager"), "{e:?}");
    let foreign = s
        .create_user(other.id, new_user("f@example.com", None, "Foreign"), &ctx())
        .await
        .unwrap();
    nu.manager_id = Some(foreign.id);
    assert!(s.create_user(t.id, nu.clone(), &ctx()).await.is_err());
    nu.manager_id = Some(u.id);
    let b = s.create_user(t.id, nu, &ctx()).await.unwrap();
    let mut nc = new_user("c@example.com", None, "Carol");
    nc.manager_id = Some(b.id);
    let c = s.create_user(t.id, nc, &ctx()).await.unwrap();

    // Cycle: u -> manager c (c -> b -> u).
    let cyc = UserPatch {
        manager_id: Patch::Set(c.id),
        ..Default::default()
    };
    let e = s.update_user(t.id, u.id, cyc, None, &ctx()).await.unwrap_err();
    assert!(matches!(&e, Error::Validation(f) if f[0].code == "manager_cycle"), "{e:?}");
    let own = UserPatch {
        manager_id: Patch::Set(u.id),
        ..Default::default()
    };
    assert!(matches!(
        s.update_user(t.id, u.id, own, None, &ctx()).await,
        Err(Error::Validation(_))
    ));

    // Update with versions.
    let patch = UserPatch {
        email: Some(Email::parse("email", "Ada.L@Example.com").unwrap()),
        username: Patch::Set(Username::parse("username", "lovelace").unwrap()),
        full_name: Some(DisplayName::parse("full_name", "Augusta Ada King").unwrap()),
        department: Patch::Set(label("Math")),
        ..Default::default()
    };
    let e = s
        .update_user(t.id, u.id, patch.clone(), Some(7), &ctx())
        .await
        .unwrap_err();
    assert!(matches!(e, Error::PreconditionFailed { entity: "user", expected: 7, current: 1 }));
    let u2 = s.update_user(t.id, u.id, patch, Some(1), &ctx()).await.unwrap();
    assert_eq!(u2.version, 2);
    assert_eq!(u2.email, "Ada.L@Example.com");
    assert_eq!(s.get_user(t.id, u.id).await.unwrap(), u2);
    // The old email is free again; the new one is taken.
    s.create_user(t.id, new_user("ada@example.com", Some("ada"), "New Ada"), &ctx())
        .await
        .unwrap();
    let clash = UserPatch {
        email: Some(Email::parse("email", "ADA.l@example.com").unwrap()),
        ..Default::default()
    };
    assert!(matches!(
        s.update_user(t.id, b.id, clash, None, &ctx()).await,
        Err(Error::Conflict { code: "email_taken", .. })
    ));
    // Search follows the update.
    let found = s
        .list_users(
            t.id,
            &UserListQuery {
                q: Some(SearchQuery::parse("q", "augus").unwrap()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(found.items.iter().map(|u| u.id).collect::<Vec<_>>(), vec![u.id]);

    // Delete / restore.
    assert!(matches!(
        s.delete_user(t.id, u.id, Some(1), &ctx()).await,
        Err(Error::PreconditionFailed { current: 2, .. })
    ));
    let d = s.delete_user(t.id, u.id, Some(2), &ctx()).await.unwrap();
    assert!(d.deleted_at.is_some());
    assert_eq!(d.version, 3);
    assert!(matches!(s.delete_user(t.id, u.id, None, &ctx()).await, Err(Error::NotFound { .. })));
    assert!(matches!(
        s.update_user(t.id, u.id, UserPatch::default(), None, &ctx()).await,
        Err(Error::NotFound { entity: "user" })
    ));
    assert_eq!(s.get_user(t.id, u.id).await.unwrap(), d);
    // A deleted user cannot become a manager.
    let to_deleted = UserPatch {
        manager_id: Patch::Set(u.id),
        ..Default::default()
    };
    let e = s.update_user(t.id, c.id, to_deleted, None, &ctx()).await.unwrap_err();
    assert!(matches!(&e, Error::Validation(f) if f[0].code == "unknown_manager"), "{e:?}");
    // It keeps its email.
    assert!(matches!(
        s.create_user(t.id, new_user("ada.l@example.com", None, "X"), &ctx()).await,
        Err(Error::Conflict { code: "email_taken", .. })
    ));
    let r = s.restore_user(t.id, u.id, &ctx()).await.unwrap();
    assert!(r.deleted_at.is_none());
    assert_eq!(r.version, 4);
    assert!(matches!(
        s.restore_user(t.id, u.id, &ctx()).await,
        Err(Error::Conflict { code: "not_deleted", field: None, .. })
    ));
    assert!(matches!(
        s.restore_user(other.id, u.id, &ctx()).await,
        Err(Error::NotFound { entity: "user" })
    ));

    let ev = s
        .list_audit_events(
            t.id,
            &AuditQuery {
                entity_id: Some(u.id.into_uuid()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let acts: Vec<_> = ev.items.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(
        acts,
        [actions::USER_RESTORE, actions::USER_DELETE, actions::USER_UPDATE, actions::USER_CREATE]
    );
    assert_eq!(ev.items[2].before.as_ref().unwrap()["version"], 1);
    assert_eq!(ev.items[2].after.as_ref().unwrap()["version"], 2);
    // Audit pagination.
    let page = s
        .list_audit_events(
            t.id,
            &AuditQuery {
                limit: PageSize::new(Some(3)).unwrap(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let cursor: domain::AuditEventId =
        domain::page::decode_cursor(page.next_cursor.as_deref().unwrap()).unwrap();
    let next = s
        .list_audit_events(
            t.id,
            &AuditQuery {
                limit: PageSize::new(Some(3)).unwrap(),
                before_id: Some(cursor),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(next.items[0].id < page.items[2].id);

    // The trail is append-only.
    let upd = sqlx::query("UPDATE audit_events SET action = 'x'").execute(s.pool()).await;
    assert!(upd.is_err());
    let del = sqlx::query("DELETE FROM audit_events").execute(s.pool()).await;
    assert!(del.is_err());
    db.finish().await;
}

#[tokio::test]
async fn quota() {
    let db = TestDb::new().await;
    let s = &db.store;
    let t = s
        .create_tenant(new_tenant("small", Plan::Free, Some(2)), &ctx())
        .await
        .unwrap();
    let a = s.create_user(t.id, new_user("a@example.com", None, "A"), &ctx()).await.unwrap();
    s.create_user(t.id, new_user("b@example.com", None, "B"), &ctx()).await.unwrap();
    let e = s
        .create_user(t.id, new_user("c@example.com", None, "C"), &ctx())
        .await
        .unwrap_err();
    assert!(matches!(&e, Error::QuotaExceeded { message } if message.contains("free") && message.contains('2')), "{e:?}");
    s.delete_user(t.id, a.id, None, &ctx()).await.unwrap();
    let c = s.create_user(t.id, new_user("c@example.com", None, "C"), &ctx()).await.unwrap();
    assert!(matches!(s.restore_user(t.id, a.id, &ctx()).await, Err(Error::QuotaExceeded { .. })));
    s.delete_user(t.id, c.id, None, &ctx()).await.unwrap();
    s.restore_user(t.id, a.id, &ctx()).await.unwrap();
    // Concurrent creations never overshoot.
    let t2 = s
        .create_tenant(new_tenant("race", Plan::Free, Some(5)), &ctx())
        .await
        .unwrap();
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let s = s.clone();
            tokio::spawn(async move {
                s.create_user(t2.id, new_user(&format!("u{i}@example.com"), None, "U"), &ctx())
                    .await
            })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        if t.await.unwrap().is_ok() {
            ok += 1;
        }
    }
    assert_eq!(ok, 5);
    // Unknown tenant.
    assert!(matches!(
        s.create_user(TenantId::new(), new_user("z@example.com", None, "Z"), &ctx()).await,
        Err(Error::NotFound { entity: "tenant" })
    ));
    db.finish().await;
}

/// The expected order of `users` in `sort`, as the domain defines it.
fn sorted(mut users: Vec<User>, sort: UserSort) -> Vec<UserId> {
    users.sort_by(|a, b| {
        let ka = domain::users::UserCursor::after(a, sort);
        let kb = domain::users::UserCursor::after(b, sort);
        let ord = match (&ka.value, &kb.value) {
            (domain::users::SortValue::Text(x), domain::users::SortValue::Text(y)) => {
                x.as_bytes().cmp(y.as_bytes())
            }
            (domain::users::SortValue::Micros(x), domain::users::SortValue::Micros(y)) => x.cmp(y),
            _ => unreachable!(),
        }
        .then(a.id.cmp(&b.id));
        if sort.descending {
            ord.reverse()
        } else {
            ord
        }
    });
    users.into_iter().map(|u| u.id).collect()
}

async fn all_pages(s: &impl Store, tenant: TenantId, mut q: UserListQuery) -> Vec<UserId> {
    let mut out = vec![];
    loop {
        let page = s.list_users(tenant, &q).await.unwrap();
        assert!(page.items.len() <= q.limit.get() as usize);
        out.extend(page.items.iter().map(|u| u.id));
        match page.next_cursor {
            Some(c) => q.after = Some(domain::users::UserCursor::decode(&c, q.sort).unwrap()),
            None => break,
        }
    }
    out
}

#[tokio::test]
async fn listing_sorting_filters_and_search() {
    let db = TestDb::new().await;
    let s = &db.store;
    let t = tenant(s, "acme").await;
    let other = tenant(s, "other").await;
    let boss = seeded_user(t.id, 0, None);
    let mut users = vec![boss.clone()];
    for i in 1..400 {
        users.push(seeded_user(t.id, i, if i % 7 == 0 { Some(boss.id) } else { None }));
    }
    // Ties in every sort key.
    users[5].full_name = users[6].full_name.clone();
    users[7].created_at = users[8].created_at;
    users[9].last_login_at = None;
    users[10].last_login_at = None;
    assert_eq!(s.seed_users(t.id, users.clone(), &ctx()).await.unwrap(), 400);
    let foreign: Vec<User> = (400..450).map(|i| seeded_user(other.id, i, None)).collect();
    s.seed_users(other.id, foreign, &ctx()).await.unwrap();
    let seed_ev = s
        .list_audit_events(t.id, &AuditQuery { action: Some(actions::USER_SEED.into()), ..Default::default() })
        .await
        .unwrap();
    assert_eq!(seed_ev.items[0].after.as_ref().unwrap()["count"], 400);

    // Delete a few.
    let mut deleted = HashSet::new();
    for u in users.iter().skip(3).step_by(50) {
        s.delete_user(t.id, u.id, None, &ctx()).await.unwrap();
        deleted.insert(u.id);
    }
    let stored: Vec<User> = {
        let mut v = vec![];
        for u in &users {
            v.push(s.get_user(t.id, u.id).await.unwrap());
        }
        v
    };
    assert_eq!(stored[1].email, users[1].email);
    assert_eq!(stored[1].custom_attributes, users[1].custom_attributes);
    assert_eq!(stored[1].created_at, users[1].created_at);
    let live: Vec<User> = stored.iter().filter(|u| !deleted.contains(&u.id)).cloned().collect();

    for field in UserSortField::ALL {
        for descending in [false, true] {
            let sort = UserSort { field: *field, descending };
            let q = UserListQuery {
                sort,
                limit: PageSize::new(Some(37)).unwrap(),
                ..Default::default()
            };
            assert_eq!(all_pages(s, t.id, q.clone()).await, sorted(live.clone(), sort), "{sort:?}");
            let q = UserListQuery { deleted: DeletedFilter::Include, ..q };
            assert_eq!(all_pages(s, t.id, q.clone()).await, sorted(stored.clone(), sort), "{sort:?}");
            let q = UserListQuery { deleted: DeletedFilter::Only, ..q };
            let only: Vec<User> = stored.iter().filter(|u| deleted.contains(&u.id)).cloned().collect();
            assert_eq!(all_pages(s, t.id, q).await, sorted(only, sort), "{sort:?}");
        }
    }

    // Filters, combined with a sort.
    let dept = live[1].department.clone().unwrap();
    let sort = UserSort { field: UserSortField::Name, descending: true };
    let q = UserListQuery {
        status: Some(UserStatus::Active),
        department: Some(dept.clone()),
        sort,
        limit: PageSize::new(Some(3)).unwrap(),
        ..Default::default()
    };
    let expect: Vec<User> = live
        .iter()
        .filter(|u| u.status == UserStatus::Active && u.department.as_deref() == Some(&dept))
        .cloned()
        .collect();
    assert!(!expect.is_empty());
    assert_eq!(all_pages(s, t.id, q).await, sorted(expect, sort));

    let q = UserListQuery { manager_id: Some(boss.id), ..Default::default() };
    let expect: Vec<User> = live.iter().filter(|u| u.manager_id == Some(boss.id)).cloned().collect();
    assert_eq!(all_pages(s, t.id, q).await, sorted(expect, UserSort::default()));

    let mid = live[20].created_at;
    let q = UserListQuery { created_after: Some(mid), ..Default::default() };
    let expect: Vec<User> = live.iter().filter(|u| u.created_at >= mid).cloned().collect();
    assert_eq!(all_pages(s, t.id, q).await, sorted(expect, UserSort::default()));
    let q = UserListQuery { created_before: Some(mid), ..Default::default() };
    let expect: Vec<User> = live.iter().filter(|u| u.created_at < mid).cloned().collect();
    assert_eq!(all_pages(s, t.id, q).await, sorted(expect, UserSort::default()));

    // Search: every term a prefix of a word of the name, username or email.
    fn words(u: &User) -> Vec<String> {
        [u.full_name.as_str(), u.username.as_deref().unwrap_or(""), u.email.as_str()]
            .iter()
            .flat_map(|s| s.split(|c: char| !c.is_alphanumeric()).map(str::to_lowercase))
            .filter(|w| !w.is_empty())
            .collect()
    }
    for raw in ["ada", "LOVE", "édi", "zoë hop", "example", "ada 1", "grace hopper 12", "xyz", "torvalds_1"] {
        let sq = SearchQuery::parse("q", raw).unwrap();
        let expect: Vec<User> = live
            .iter()
            .filter(|u| {
                let w = words(u);
                sq.terms().iter().all(|t| w.iter().any(|w| w.starts_with(t.as_str())))
            })
            .cloned()
            .collect();
        for field in [UserSortField::Email, UserSortField::LastLogin] {
            let sort = UserSort { field, descending: false };
            let q = UserListQuery {
                q: Some(sq.clone()),
                sort,
                limit: PageSize::new(Some(11)).unwrap(),
                ..Default::default()
            };
            assert_eq!(all_pages(s, t.id, q).await, sorted(expect.clone(), sort), "{raw}");
        }
    }

    // A cursor of another sort is refused.
    let page = s
        .list_users(t.id, &UserListQuery { limit: PageSize::new(Some(1)).unwrap(), ..Default::default() })
        .await
        .unwrap();
    let c = domain::users::UserCursor::decode(&page.next_cursor.unwrap(), UserSort::default()).unwrap();
    let bad = UserListQuery {
        sort: UserSort { field: UserSortField::Name, descending: false },
        after: Some(c),
        ..Default::default()
    };
    assert!(matches!(s.list_users(t.id, &bad).await, Err(Error::Validation(_))));

    // Seeding a duplicate fails as a whole.
    let mut dup = seeded_user(t.id, 1000, None);
    dup.email = users[1].email.to_uppercase();
    let fresh = seeded_user(t.id, 1001, None);
    let e = s.seed_users(t.id, vec![fresh.clone(), dup], &ctx()).await.unwrap_err();
    assert!(matches!(e, Error::Conflict { code: "email_taken", .. }), "{e:?}");
    assert!(s.get_user(t.id, fresh.id).await.is_err());
    db.finish().await;
}
