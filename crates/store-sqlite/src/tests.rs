//! Tests of what only this backend has: its triggers, its query plans, its bulk insert
//! speed. Behaviour shared with PostgreSQL is tested by the contract suite in `testkit`.

use std::time::Instant;

use domain::page::PageSize;
use domain::testing;
use domain::time::from_micros;
use domain::users::{DeletedFilter, UserCursor, UserSortField};
use domain::users::{UserSort, UserStatus};
use domain::values::SearchQuery;
use serde_json::Map;
use sqlx::Row;

use super::*;
use crate::users::{user_list_sql, SearchPlan, USER_INSERT_COLS, USER_INSERT_COLUMNS};
use domain::tenants::Tenant;
use domain::time::{now, to_micros};

async fn open() -> (tempfile::TempDir, SqliteStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("test.db"))
        .await
        .unwrap();
    store.migrate().await.unwrap();
    (dir, store)
}

async fn tenant(store: &SqliteStore, slug: &str) -> Tenant {
    testing::tenant(store, slug).await
}

/// `n` users of `tenant` with varied names, departments and sign-in times.
fn users(tenant: TenantId, n: usize) -> Vec<User> {
    let base = now();
    (0..n)
        .map(|i| {
            let first = ["Ada", "Grace", "Alan", "Edsger", "Barbara", "Ken"][i % 6];
            let t = from_micros(to_micros(base) - (i as i64) * 1_000).unwrap();
            User {
                id: UserId::new(),
                tenant_id: tenant,
                email: format!("{}.{i}@example.com", first.to_lowercase()),
                username: (i % 3 != 0).then(|| format!("{}{i}", first.to_lowercase())),
                full_name: format!("{first} Person{i}"),
                phone: None,
                department: Some(["Eng", "Sales", "Ops"][i % 3].to_owned()),
                job_title: Some("Engineer".to_owned()),
                employee_id: Some(format!("E{i:06}")),
                manager_id: None,
                cost_center: None,
                clearance_level: Some((i % 11) as i16),
                language: Some("en".to_owned()),
                avatar_url: None,
                custom_attributes: Map::new(),
                status: UserStatus::ALL[i % UserStatus::ALL.len()],
                last_login_at: (i % 4 != 0).then_some(t),
                created_at: t,
                updated_at: t,
                deleted_at: None,
                version: 1,
            }
        })
        .collect()
}

#[test]
fn seed_statements_stay_within_the_parameter_limit() {
    assert_eq!(USER_INSERT_COLS.split(',').count(), USER_INSERT_COLUMNS);
}

#[tokio::test]
async fn audit_events_are_append_only() {
    let (_dir, store) = open().await;
    tenant(&store, "acme").await;
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM audit_events")
        .fetch_one(&store.writer)
        .await
        .unwrap();
    assert_eq!(n, 1);
    for sql in [
        "UPDATE audit_events SET action = 'forged'",
        "DELETE FROM audit_events",
    ] {
        let err = sqlx::query(sql).execute(&store.writer).await.unwrap_err();
        assert!(err.to_string().contains("append-only"), "{sql}: {err}");
    }
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM audit_events")
        .fetch_one(&store.writer)
        .await
        .unwrap();
    assert_eq!(n, 1);
}

#[tokio::test]
async fn readers_cannot_write() {
    let (_dir, store) = open().await;
    let err = sqlx::query("INSERT INTO tenants (id) VALUES (x'00')")
        .execute(&store.reader)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("readonly"), "{err}");
}

#[tokio::test]
async fn active_user_counter_follows_deletes_and_restores() {
    let (_dir, store) = open().await;
    let t = tenant(&store, "acme").await;
    let seeded = users(t.id, 5);
    testing::seed(&store, t.id, &seeded, None).await;
    let active = || async {
        tenants::user_quota(&mut store.writer.acquire().await.unwrap(), t.id)
            .await
            .unwrap()
            .live_users
    };
    assert_eq!(active().await, 5);
    let at = now();
    testing::put_user(&store, &seeded[0].soft_deleted(at)).await;
    testing::put_user(&store, &seeded[1].soft_deleted(at)).await;
    assert_eq!(active().await, 3);
    let deleted = seeded[0].soft_deleted(at);
    testing::put_user(&store, &deleted.restored(at).unwrap()).await;
    assert_eq!(active().await, 4);
}

/// The plan SQLite picks for a user list, one line per step.
async fn plan(store: &SqliteStore, tenant: TenantId, q: &UserListQuery) -> String {
    let search = match &q.q {
        Some(terms) => Some(users::search_plan(&store.reader, terms).await.unwrap()),
        None => None,
    };
    let mut qb = user_list_sql("EXPLAIN QUERY PLAN ", tenant, q, search).unwrap();
    let rows = qb.build().fetch_all(&store.reader).await.unwrap();
    rows.iter()
        .map(|r| r.try_get::<String, _>("detail").unwrap())
        .collect::<Vec<_>>()
        .join("\n")
}

/// A group's members are counted and listed through their group's index, with statistics
/// or without (a fresh database has none): with `group_members_by_user` the planner would
/// walk every membership of the tenant.
#[tokio::test]
async fn group_members_are_read_by_their_group() {
    let (_dir, store) = open().await;
    let count = crate::authz::COUNT_MEMBERS_SQL.to_owned();
    let list = crate::authz::list_members_sql();
    for analyzed in [false, true] {
        if analyzed {
            sqlx::query("ANALYZE").execute(&store.writer).await.unwrap();
        }
        for sql in [&count, &list] {
            let rows = sqlx::query(&format!("EXPLAIN QUERY PLAN {sql}"))
                .bind(uuid::Uuid::nil())
                .bind(uuid::Uuid::nil())
                .fetch_all(&store.reader)
                .await
                .unwrap();
            let plan: Vec<String> = rows.iter().map(|r| r.get::<String, _>("detail")).collect();
            let plan = plan.join("\n");
            assert!(
                plan.contains("group_members_by_group (tenant_id=? AND group_id=?)"),
                "analyzed={analyzed} {sql}:\n{plan}"
            );
        }
    }
}

#[tokio::test]
async fn every_sort_order_walks_its_index() {
    let (_dir, store) = open().await;
    let a = tenant(&store, "acme").await;
    let b = tenant(&store, "globex").await;
    testing::seed(&store, a.id, &users(a.id, 3000), None).await;
    testing::seed(&store, b.id, &users(b.id, 500), None).await;
    let sample = store
        .list_users(a.id, &UserListQuery::default())
        .await
        .unwrap()
        .items
        .remove(7);

    let mut report = String::new();
    for analyzed in [false, true] {
        if analyzed {
            sqlx::query("ANALYZE").execute(&store.writer).await.unwrap();
        }
        for field in UserSortField::ALL {
            let index = match field {
                UserSortField::Name => "users_by_name",
                UserSortField::Email => "users_by_email",
                UserSortField::Created => "users_by_created",
                UserSortField::LastLogin => "users_by_last_login",
            };
            for descending in [false, true] {
                let sort = UserSort {
                    field: *field,
                    descending,
                };
                for cursor in [None, Some(UserCursor::after(&sample, sort))] {
                    for deleted in [DeletedFilter::Exclude, DeletedFilter::Include] {
                        let q = UserListQuery {
                            sort,
                            after: cursor.clone(),
                            deleted,
                            limit: PageSize::new(Some(50)).unwrap(),
                            ..Default::default()
                        };
                        let p = plan(&store, a.id, &q).await;
                        report.push_str(&format!(
                            "analyzed={analyzed} sort={field}{} cursor={} deleted={deleted:?}:\n  {}\n",
                            if descending { " desc" } else { "" },
                            cursor.is_some(),
                            p.replace('\n', "\n  ")
                        ));
                        assert!(p.contains(index), "{field} {descending}: {p}");
                        assert!(!p.contains("TEMP B-TREE"), "{field} {descending}: {p}");
                        if cursor.is_some() {
                            // The keyset bound is a range on the index, not a filter.
                            assert!(p.contains("(tenant_id=? AND "), "{p}");
                        }
                    }
                }
            }
        }
    }
    // Deleted users come from their partial index, sorted unless by creation.
    for field in UserSortField::ALL {
        for descending in [false, true] {
            let sort = UserSort {
                field: *field,
                descending,
            };
            for cursor in [None, Some(UserCursor::after(&sample, sort))] {
                let q = UserListQuery {
                    sort,
                    after: cursor,
                    deleted: DeletedFilter::Only,
                    ..Default::default()
                };
                let p = plan(&store, a.id, &q).await;
                report.push_str(&format!(
                    "deleted=only sort={field} desc={descending}: {p}\n"
                ));
                assert!(p.contains("USING INDEX users_deleted (tenant_id=?"), "{p}");
                assert_eq!(
                    p.contains("TEMP B-TREE"),
                    *field != UserSortField::Created,
                    "{p}"
                );
            }
        }
    }
    // Search and filters: print the plans for the report.
    let filtered = [
        UserListQuery {
            q: Some(SearchQuery::parse("q", "ada").unwrap()),
            ..Default::default()
        },
        UserListQuery {
            department: Some("Eng".into()),
            sort: UserSort {
                field: UserSortField::Name,
                descending: false,
            },
            ..Default::default()
        },
        UserListQuery {
            status: Some(UserStatus::Active),
            ..Default::default()
        },
        UserListQuery {
            manager_id: Some(sample.id),
            ..Default::default()
        },
    ];
    for q in &filtered {
        let p = plan(&store, a.id, q).await;
        report.push_str(&format!("{q:?}:\n  {}\n", p.replace('\n', "\n  ")));
    }
    eprintln!("{report}");
}

#[tokio::test]
async fn search_uses_the_full_text_index() {
    let (_dir, store) = open().await;
    let a = tenant(&store, "acme").await;
    testing::seed(&store, a.id, &users(a.id, 300), None).await;
    let q = UserListQuery {
        q: Some(SearchQuery::parse("q", "gra person1").unwrap()),
        limit: PageSize::new(Some(200)).unwrap(),
        ..Default::default()
    };
    let p = plan(&store, a.id, &q).await;
    assert!(p.contains("VIRTUAL TABLE INDEX"), "{p}");
    let page = store.list_users(a.id, &q).await.unwrap();
    // Grace is every sixth user from 1; "person1" matches Person1, Person10..19, Person100..199.
    let expected = (0..300)
        .filter(|i| i % 6 == 1 && i.to_string().starts_with('1'))
        .count();
    assert_eq!(page.items.len(), expected);
}

#[tokio::test]
async fn broad_searches_walk_the_sort_index() {
    let (_dir, store) = open().await;
    let a = tenant(&store, "acme").await;
    testing::seed(&store, a.id, &users(a.id, 6_000), None).await;
    // Every user matches "person": more than a collect should gather.
    let broad = UserListQuery {
        q: Some(SearchQuery::parse("q", "person").unwrap()),
        ..Default::default()
    };
    assert_eq!(
        users::search_plan(&store.reader, broad.q.as_ref().unwrap())
            .await
            .unwrap(),
        SearchPlan::Walk
    );
    let p = plan(&store, a.id, &broad).await;
    assert!(p.contains("users_by_created"), "{p}");
    assert!(!p.contains("TEMP B-TREE"), "{p}");
    assert_eq!(
        store.list_users(a.id, &broad).await.unwrap().items.len(),
        50
    );
    // One user in six is a Grace: few enough to collect.
    let narrow = UserListQuery {
        q: Some(SearchQuery::parse("q", "grace").unwrap()),
        ..Default::default()
    };
    assert_eq!(
        users::search_plan(&store.reader, narrow.q.as_ref().unwrap())
            .await
            .unwrap(),
        SearchPlan::Collect
    );
    let p = plan(&store, a.id, &narrow).await;
    assert!(p.contains("VIRTUAL TABLE INDEX"), "{p}");
}

#[tokio::test]
async fn seed_users_is_fast() {
    let (_dir, store) = open().await;
    let a = tenant(&store, "acme").await;
    let total = 20_000;
    let batches: Vec<Vec<User>> = (0..total / 5_000).map(|_| users(a.id, 5_000)).collect();
    // Make the emails unique across batches.
    let batches: Vec<Vec<User>> = batches
        .into_iter()
        .enumerate()
        .map(|(b, us)| {
            us.into_iter()
                .map(|mut u| {
                    u.email = format!("b{b}.{}", u.email);
                    u.username = u.username.map(|n| format!("b{b}{n}"));
                    u
                })
                .collect()
        })
        .collect();
    let start = Instant::now();
    for batch in batches {
        assert_eq!(testing::seed(&store, a.id, &batch, None).await, 5_000);
    }
    let secs = start.elapsed().as_secs_f64();
    eprintln!(
        "seeded {total} users in {secs:.2}s: {:.0} rows/s",
        total as f64 / secs
    );
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users")
        .fetch_one(&store.reader)
        .await
        .unwrap();
    assert_eq!(n, total as i64);
}

/// A tenant of a million users (or `PORTCULLIS_SCALE_USERS`) in batches of 10,000: how fast
/// seeding is and how long the first and a later page take in every sort order. By hand:
/// `cargo test -p portcullis-store-sqlite --release -- --ignored --nocapture scale`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn scale() {
    let total: usize = std::env::var("PORTCULLIS_SCALE_USERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let (_dir, store) = open().await;
    let a = tenant(&store, "acme").await;
    let b = tenant(&store, "globex").await;
    testing::seed(&store, b.id, &users(b.id, 10_000), None).await;

    // Experiments: statements run on the writer first, e.g. `PRAGMA cache_size = -262144`
    // or `DROP INDEX users_by_name`, separated by ';'.
    if let Ok(sql) = std::env::var("PORTCULLIS_SCALE_SQL") {
        for stmt in sql.split(';').filter(|s| !s.trim().is_empty()) {
            sqlx::query(stmt).execute(&store.writer).await.unwrap();
        }
    }
    let batch = 10_000;
    let start = Instant::now();
    let mut lap = Instant::now();
    for n in 0..total / batch {
        if n > 0 && n % 10 == 0 {
            eprintln!(
                "{} users: last 100k at {:.0} rows/s",
                n * batch,
                100_000.0 / lap.elapsed().as_secs_f64()
            );
            lap = Instant::now();
        }
        let us: Vec<User> = users(a.id, batch)
            .into_iter()
            .enumerate()
            .map(|(i, mut u)| {
                // Random-looking emails, as real ones are.
                let k = (n * batch + i) as u64;
                let h = k.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 16;
                u.email = format!("{h:012x}.{k}@example.com");
                u.username = u.username.map(|_| format!("u{k}"));
                u.full_name = format!("{} {h:x}", u.full_name);
                u
            })
            .collect();
        testing::seed(&store, a.id, &us, None).await;
    }
    let secs = start.elapsed().as_secs_f64();
    eprintln!(
        "seeded {total} users in {secs:.1}s: {:.0} rows/s",
        total as f64 / secs
    );

    for field in UserSortField::ALL {
        for descending in [false, true] {
            let sort = UserSort {
                field: *field,
                descending,
            };
            let mut q = UserListQuery {
                sort,
                limit: PageSize::new(Some(50)).unwrap(),
                ..Default::default()
            };
            let t = Instant::now();
            let first = store.list_users(a.id, &q).await.unwrap();
            let first_ms = t.elapsed().as_secs_f64() * 1e3;
            // Ten pages on.
            let mut deep_ms = 0.0;
            for _ in 0..10 {
                let page = store.list_users(a.id, &q).await.unwrap();
                q.after = page
                    .next_cursor
                    .map(|c| UserCursor::decode(&c, sort).unwrap());
                let t = Instant::now();
                store.list_users(a.id, &q).await.unwrap();
                deep_ms = t.elapsed().as_secs_f64() * 1e3;
            }
            assert_eq!(first.items.len(), 50);
            eprintln!("sort {field} desc={descending}: first page {first_ms:.1} ms, later page {deep_ms:.1} ms");
        }
    }
    for (label, q) in [
        (
            "search 'grace 1a'",
            UserListQuery {
                q: Some(SearchQuery::parse("q", "grace 1a").unwrap()),
                ..Default::default()
            },
        ),
        (
            "search 'ada'",
            UserListQuery {
                q: Some(SearchQuery::parse("q", "ada").unwrap()),
                ..Default::default()
            },
        ),
        (
            "department=Eng, sort=name",
            UserListQuery {
                department: Some("Eng".into()),
                sort: UserSort {
                    field: UserSortField::Name,
                    descending: false,
                },
                ..Default::default()
            },
        ),
        (
            "status=blocked",
            UserListQuery {
                status: Some(UserStatus::Blocked),
                ..Default::default()
            },
        ),
        (
            "deleted=only",
            UserListQuery {
                deleted: DeletedFilter::Only,
                ..Default::default()
            },
        ),
    ] {
        let t = Instant::now();
        let page = store.list_users(a.id, &q).await.unwrap();
        eprintln!(
            "{label}: {} items in {:.1} ms",
            page.items.len(),
            t.elapsed().as_secs_f64() * 1e3
        );
    }
    let t = Instant::now();
    let mut one = users(a.id, 1);
    one[0].email = "new@example.com".into();
    testing::seed(&store, a.id, &one, None).await;
    eprintln!("insert one user: {:.1} ms", t.elapsed().as_secs_f64() * 1e3);
}
