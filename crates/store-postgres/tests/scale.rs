//! Seeds a large tenant into a scratch schema and times the list queries. Not part of the
//! normal run:
//!
//! ```sh
//! PG_SCALE_USERS=1000000 cargo test -p portcullis-store-postgres --test scale -- --ignored --nocapture
//! ```
//!
//! PG_SCALE_SCHEMA names the schema (default `scratch_pgscale`); PG_SCALE_KEEP=1 keeps it
//! for manual EXPLAIN ANALYZE (with `SET search_path = <schema>`).

mod common;

use std::time::{Duration, Instant};

use common::*;
use domain::page::PageSize;
use domain::tenants::Plan;
use domain::users::{UserCursor, UserListQuery, UserSort, UserSortField, UserStatus};
use domain::values::SearchQuery;
use domain::{Store, TenantId, UserId};
use portcullis_store_postgres::PgStore;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

async fn seed(s: &PgStore, tenant: TenantId, n: usize, offset: usize) -> (Duration, Vec<UserId>) {
    let batch = 10_000;
    let mut managers: Vec<UserId> = vec![];
    let mut in_store = Duration::ZERO;
    let mut i = 0;
    while i < n {
        let mut users = Vec::with_capacity(batch);
        for j in i..(i + batch).min(n) {
            let m = if j >= 1000 && j % 3 != 0 { Some(managers[j % 1000]) } else { None };
            let u = seeded_user(tenant, offset + j, m);
            if j < 1000 {
                managers.push(u.id);
            }
            users.push(u);
        }
        let t = Instant::now();
        let k = s.seed_users(tenant, users, &ctx()).await.unwrap();
        in_store += t.elapsed();
        i += k as usize;
        if i % 100_000 == 0 {
            println!("  {i}: last batch {:.0} rows/s", k as f64 / t.elapsed().as_secs_f64());
        }
    }
    (in_store, managers)
}

async fn time_query(s: &PgStore, tenant: TenantId, label: &str, q: &UserListQuery, runs: usize) {
    let mut times = vec![];
    let mut n = 0;
    for _ in 0..runs {
        let t = Instant::now();
        let page = s.list_users(tenant, q).await.unwrap();
        times.push(t.elapsed());
        n = page.items.len();
    }
    times.sort();
    let p = |f: f64| times[((times.len() as f64 * f) as usize).min(times.len() - 1)];
    println!(
        "{label:<40} items={n:<4} p50={:>7.2}ms p99={:>7.2}ms max={:>7.2}ms",
        p(0.5).as_secs_f64() * 1e3,
        p(0.99).as_secs_f64() * 1e3,
        times[times.len() - 1].as_secs_f64() * 1e3
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn scale() {
    let n: usize = env_or("PG_SCALE_USERS", 300_000);
    let schema: String = env_or("PG_SCALE_SCHEMA", "scratch_pgscale".to_owned());
    let keep: bool = env_or("PG_SCALE_KEEP", 0u8) == 1;
    PgStore::drop_schema(&url(), &schema).await.unwrap();
    let s = PgStore::connect_in_schema(&url(), &schema, 1).await.unwrap();
    s.migrate().await.unwrap();
    if std::env::var("PG_SCALE_LOG").is_ok() {
        sqlx::query("SET log_min_duration_statement = 100").execute(s.pool()).await.unwrap();
    }
    let big = s
        .create_tenant(new_tenant("big", Plan::Enterprise, None), &ctx())
        .await
        .unwrap();
    let small = s
        .create_tenant(new_tenant("small", Plan::Enterprise, None), &ctx())
        .await
        .unwrap();

    let (t, managers) = seed(&s, big.id, n, 0).await;
    println!(
        "seeded {n} users in {:.1}s: {:.0} rows/s (store time)",
        t.as_secs_f64(),
        n as f64 / t.as_secs_f64()
    );
    let (t2, _) = seed(&s, small.id, n / 10, n).await;
    println!("seeded {} users in another tenant: {:.0} rows/s", n / 10, (n / 10) as f64 / t2.as_secs_f64());
    sqlx::query("VACUUM ANALYZE users").execute(s.pool()).await.unwrap();

    let limit = PageSize::new(Some(50)).unwrap();
    for field in UserSortField::ALL {
        for descending in [false, true] {
            let sort = UserSort { field: *field, descending };
            let q = UserListQuery { sort, limit, ..Default::default() };
            time_query(&s, big.id, &format!("first page {sort:?}"), &q, 100).await;
            // A deep page: the cursor of the user half way through.
            let mut deep = q.clone();
            let mid = s
                .list_users(big.id, &UserListQuery { limit: PageSize::new(Some(1)).unwrap(), ..q.clone() })
                .await
                .unwrap();
            let first = &mid.items[0];
            let mut probe = first.clone();
            match field {
                UserSortField::Name => probe.full_name = "M".into(),
                UserSortField::Email => probe.email = "m@x.com".into(),
                UserSortField::Created => {
                    probe.created_at = first.created_at
                        + if descending { -chrono::TimeDelta::days(500) } else { chrono::TimeDelta::days(500) }
                }
                UserSortField::LastLogin => {
                    probe.last_login_at = Some(
                        s.get_user(big.id, first.id).await.unwrap().created_at
                            + chrono::TimeDelta::days(if descending { -500 } else { 500 }),
                    )
                }
            }
            deep.after = Some(UserCursor::after(&probe, sort));
            time_query(&s, big.id, &format!("deep page {sort:?}"), &deep, 100).await;
        }
    }
    let q = UserListQuery {
        status: Some(UserStatus::Active),
        department: Some("Engineering".into()),
        limit,
        ..Default::default()
    };
    time_query(&s, big.id, "status+department, sort created", &q, 100).await;
    let q = UserListQuery {
        sort: UserSort { field: UserSortField::Name, descending: false },
        ..q
    };
    time_query(&s, big.id, "status+department, sort name", &q, 100).await;
    let q = UserListQuery { manager_id: Some(managers[7]), limit, ..Default::default() };
    time_query(&s, big.id, "manager", &q, 100).await;
    for raw in ["grace hop", "lovelace 12", "turing", "a", "zoë piaf 99", "nomatch"] {
        for field in [UserSortField::Name, UserSortField::Created] {
            let q = UserListQuery {
                q: Some(SearchQuery::parse("q", raw).unwrap()),
                sort: UserSort { field, descending: false },
                limit,
                ..Default::default()
            };
            time_query(&s, big.id, &format!("q={raw:?} sort {field}"), &q, 30).await;
        }
    }
    let q = UserListQuery {
        deleted: domain::users::DeletedFilter::Only,
        limit,
        ..Default::default()
    };
    time_query(&s, big.id, "deleted=only", &q, 50).await;

    s.close().await;
    if !keep {
        PgStore::drop_schema(&url(), &schema).await.unwrap();
    }
}
