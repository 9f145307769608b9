//! Tests of what only the SQLite authentication store has: its schema's constraints and its
//! query plans. The behaviour shared with PostgreSQL is the contract suite in `testkit`.

use chrono::TimeDelta;
use domain::api_keys::KeyHash;
use domain::audit::AuditContext;
use domain::auth::{NewSession, Session, SessionKind};
use domain::ids::{SessionId, TenantId, UserId};
use domain::time::now;
use domain::users::User;
use domain::{AuthStore, Store};
use sqlx::Row;

use crate::auth::{
    find_browser_session_sql, list_sessions_sql, INVALIDATE_EARLIER_TOKENS_SQL,
    PASSWORD_HISTORY_SQL,
};
use crate::SqliteStore;
use domain::testing;

async fn open() -> (tempfile::TempDir, SqliteStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("auth.db"))
        .await
        .unwrap();
    store.migrate().await.unwrap();
    (dir, store)
}

fn ctx() -> AuditContext {
    AuditContext::system()
}

async fn user(store: &SqliteStore, t: TenantId, email: &str) -> User {
    let u = testing::user(t, email);
    testing::seed(store, t, std::slice::from_ref(&u), None).await;
    u
}

fn session(t: TenantId, u: UserId, kind: SessionKind) -> Session {
    let created = now();
    Session {
        id: SessionId::new(),
        tenant_id: t,
        user_id: u,
        kind,
        device_label: None,
        ip: None,
        user_agent: None,
        amr: vec!["pwd".into()],
        mfa_level: 1,
        created_at: created,
        last_seen_at: created,
        expires_at: created + TimeDelta::days(1),
        revoked_at: None,
        revoke_reason: None,
    }
}

async fn token_session(store: &SqliteStore, t: TenantId, u: UserId, refresh: &str) -> Session {
    store
        .create_session(
            NewSession {
                session: session(t, u, SessionKind::Token),
                refresh_hash: Some(KeyHash::of(refresh)),
                cookie_hash: None,
                csrf_hash: None,
            },
            &ctx(),
        )
        .await
        .unwrap()
}

#[tokio::test]
async fn credentials_cannot_outlive_the_schema_rules() {
    let (_dir, store) = open().await;
    let t = testing::tenant(&store, "acme").await;
    // A credentials row needs a user of the same tenant.
    let err = sqlx::query("INSERT INTO credentials (tenant_id, user_id) VALUES (?, ?)")
        .bind(t.id.into_uuid())
        .bind(UserId::new().into_uuid())
        .execute(&store.writer)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("FOREIGN KEY"), "{err}");
    // Two browser sessions cannot share a cookie digest.
    let u = user(&store, t.id, "u@acme.test").await;
    let browser = |cookie: &str| NewSession {
        session: session(t.id, u.id, SessionKind::Browser),
        refresh_hash: None,
        cookie_hash: Some(KeyHash::of(cookie)),
        csrf_hash: Some(KeyHash::of("csrf")),
    };
    store.create_session(browser("c"), &ctx()).await.unwrap();
    assert!(store.create_session(browser("c"), &ctx()).await.is_err());
    // …while token sessions, without a cookie, are many.
    token_session(&store, t.id, u.id, "r1").await;
    token_session(&store, t.id, u.id, "r2").await;
}

/// The plan of `sql` (bound with NULLs: the plan does not depend on the values).
async fn plan_of(store: &SqliteStore, sql: &str, params: usize) -> String {
    let explain = format!("EXPLAIN QUERY PLAN {sql}");
    let mut q = sqlx::query(&explain);
    for _ in 0..params {
        q = q.bind(None::<i64>);
    }
    let rows = q.fetch_all(&store.writer).await.unwrap();
    rows.iter()
        .map(|r| r.try_get::<String, _>("detail").unwrap())
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test]
async fn auth_lookups_use_their_indexes() {
    let (_dir, store) = open().await;
    let cases = [
        (list_sessions_sql(), 3, "sessions_by_user"),
        (find_browser_session_sql(), 2, "sessions_by_cookie"),
        (
            PASSWORD_HISTORY_SQL.to_owned(),
            3,
            "password_history_by_user",
        ),
        (
            INVALIDATE_EARLIER_TOKENS_SQL.to_owned(),
            4,
            "one_time_tokens_unused_by_user",
        ),
    ];
    for (sql, params, index) in cases {
        let plan = plan_of(&store, &sql, params).await;
        assert!(plan.contains(index), "{sql}\n{plan}");
        assert!(!plan.contains("SCAN"), "{sql}\n{plan}");
        assert!(!plan.contains("TEMP B-TREE"), "{sql}\n{plan}");
    }
}
