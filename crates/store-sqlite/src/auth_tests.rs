//! Tests of the SQLite authentication store that compile with this crate alone: the
//! invariants of [`domain::AuthStore`] in short (the full cross-backend contract is
//! `testkit/tests/auth_store_contract.rs`), and what only this backend has: its schema's
//! constraints and its query plans.

use std::sync::Arc;
use std::time::Duration;

use chrono::TimeDelta;
use domain::api_keys::KeyHash;
use domain::audit::{actions, AuditContext, AuditQuery};
use domain::auth::{
    Credentials, LockoutPolicy, NewPassword, NewSession, OneTimeToken, RefreshOutcome, RevokeScope,
    Session, SessionKind, SigningKeyRecord, TokenPurpose,
};
use domain::ids::{SessionId, TenantId, UserId};
use domain::page::PageSize;
use domain::tenants::{NewTenant, Plan, Tenant, TenantSlug};
use domain::time::now;
use domain::users::{NewUser, User, UserPatch, UserStatus};
use domain::values::{DisplayName, Email, JsonObject, Username};
use domain::{AuthStore, Store};
use serde_json::json;
use sqlx::Row;

use crate::auth::{
    find_browser_session_sql, list_sessions_sql, INVALIDATE_EARLIER_TOKENS_SQL,
    PASSWORD_HISTORY_SQL,
};
use crate::SqliteStore;

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

async fn tenant(store: &SqliteStore, slug: &str) -> Tenant {
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

fn new_user(email: &str, username: Option<&str>) -> NewUser {
    NewUser {
        email: Email::parse("email", email).unwrap(),
        username: username.map(|u| Username::parse("username", u).unwrap()),
        full_name: DisplayName::parse("full_name", "Some One").unwrap(),
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

fn pw(hash: &str, keep_history: u32) -> NewPassword {
    NewPassword {
        hash: hash.to_owned(),
        must_change: false,
        keep_history,
    }
}

async fn user(store: &SqliteStore, t: TenantId, email: &str) -> User {
    store
        .create_user_with_password(
            t,
            new_user(email, None),
            Some(pw("h0", 5)),
            actions::USER_CREATE,
            &ctx(),
        )
        .await
        .unwrap()
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

async fn count_actions(store: &SqliteStore, t: TenantId, action: &str) -> usize {
    let q = AuditQuery {
        action: Some(action.to_owned()),
        limit: PageSize::new(Some(200)).unwrap(),
        ..Default::default()
    };
    store.list_audit_events(t, &q).await.unwrap().items.len()
}

fn ott(t: TenantId, u: Option<UserId>, secret: &str, purpose: TokenPurpose) -> OneTimeToken {
    let created = now();
    OneTimeToken {
        hash: KeyHash::of(secret),
        tenant_id: t,
        purpose,
        user_id: u,
        email: None,
        data: json!({"k": 1}),
        created_at: created,
        expires_at: created + TimeDelta::minutes(10),
        used_at: None,
        attempts: 0,
    }
}

#[tokio::test]
async fn passwords_logins_and_history() {
    let (_dir, store) = open().await;
    let t = tenant(&store, "acme").await;
    let u = store
        .create_user_with_password(
            t.id,
            new_user("Ada@Example.com", Some("Ada.L")),
            Some(pw("h1", 2)),
            actions::USER_REGISTER,
            &ctx(),
        )
        .await
        .unwrap();
    for login in ["ada@example.com", " ADA@EXAMPLE.COM ", "ada.l", "ADA.L"] {
        let (found, c) = store.find_login(t.id, login).await.unwrap().unwrap();
        assert_eq!(found.id, u.id, "{login}");
        assert_eq!(c.password_hash.as_deref(), Some("h1"));
    }
    assert!(store.find_login(t.id, "ada").await.unwrap().is_none());
    assert_eq!(count_actions(&store, t.id, actions::USER_REGISTER).await, 1);

    // A user created without a password reads as empty credentials.
    let plain = store
        .create_user(t.id, new_user("plain@example.com", None), &ctx())
        .await
        .unwrap();
    assert_eq!(
        store.get_credentials(t.id, plain.id).await.unwrap(),
        Credentials::empty(t.id, plain.id)
    );
    assert_eq!(count_actions(&store, t.id, actions::USER_CREATE).await, 1);

    for h in ["h2", "h3"] {
        store
            .set_password(t.id, u.id, pw(h, 2), None, actions::PASSWORD_SET, &ctx())
            .await
            .unwrap();
    }
    assert_eq!(
        store.password_history(t.id, u.id, 10).await.unwrap(),
        vec!["h3".to_owned(), "h2".to_owned()]
    );
    assert!(store
        .rehash_password(t.id, u.id, "h3", "h3b")
        .await
        .unwrap());
    assert!(!store
        .rehash_password(t.id, u.id, "h3", "h3c")
        .await
        .unwrap());
    assert_eq!(
        store.password_history(t.id, u.id, 1).await.unwrap(),
        vec!["h3b".to_owned()]
    );

    // Deleted users cannot sign in.
    store.delete_user(t.id, u.id, None, &ctx()).await.unwrap();
    assert!(store
        .find_login(t.id, "ada@example.com")
        .await
        .unwrap()
        .is_none());
    assert!(store.get_credentials(t.id, u.id).await.is_err());
}

#[tokio::test]
async fn failures_lock_and_a_sign_in_clears_the_counters() {
    let (_dir, store) = open().await;
    let t = tenant(&store, "acme").await;
    let u = user(&store, t.id, "u@acme.test").await;
    let policy = LockoutPolicy::default();
    let mut last = None;
    for _ in 0..5 {
        last = Some(
            store
                .record_login_failure(t.id, u.id, &policy, "bad_password", &ctx())
                .await
                .unwrap(),
        );
    }
    let locked = last.unwrap();
    assert!(locked.locked);
    // A failure while locked keeps the lock as it is.
    let again = store
        .record_login_failure(t.id, u.id, &policy, "locked", &ctx())
        .await
        .unwrap();
    assert!(!again.locked);
    assert_eq!(again.locked_until, locked.locked_until);
    assert_eq!(
        count_actions(&store, t.id, actions::AUTH_LOGIN_FAILURE).await,
        6
    );
    assert_eq!(count_actions(&store, t.id, actions::USER_LOCK).await, 1);

    // Counters are reset by a sign-in; the user's version does not move.
    let u2 = user(&store, t.id, "v@acme.test").await;
    for _ in 0..3 {
        store
            .record_login_failure(t.id, u2.id, &policy, "bad_password", &ctx())
            .await
            .unwrap();
    }
    token_session(&store, t.id, u2.id, "r").await;
    let c = store.get_credentials(t.id, u2.id).await.unwrap();
    assert_eq!((c.failed_count, c.failed_window_start), (0, None));
    let reread = store.get_user(t.id, u2.id).await.unwrap();
    assert!(reread.last_login_at.is_some());
    assert_eq!(reread.version, u2.version);
    assert_eq!(count_actions(&store, t.id, actions::AUTH_LOGIN).await, 1);
}

#[tokio::test]
async fn an_expired_lock_is_recorded_as_lifted() {
    let (_dir, store) = open().await;
    let t = tenant(&store, "acme").await;
    let u = user(&store, t.id, "u@acme.test").await;
    let policy = LockoutPolicy {
        duration: TimeDelta::milliseconds(20),
        ..LockoutPolicy::default()
    };
    for _ in 0..5 {
        store
            .record_login_failure(t.id, u.id, &policy, "bad_password", &ctx())
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(60)).await;
    let tr = store
        .record_login_failure(t.id, u.id, &policy, "bad_password", &ctx())
        .await
        .unwrap();
    assert!(tr.unlocked);
    assert_eq!(count_actions(&store, t.id, actions::USER_UNLOCK).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_token_rotates_once() {
    let (_dir, store) = open().await;
    let store = Arc::new(store);
    let t = tenant(&store, "acme").await;
    let u = user(&store, t.id, "u@acme.test").await;

    let s = token_session(&store, t.id, u.id, "r1").await;
    let at = now();
    let out = store
        .rotate_refresh_token(&KeyHash::of("r1"), &KeyHash::of("r2"), at, &ctx())
        .await
        .unwrap();
    assert!(matches!(out, RefreshOutcome::Rotated(ref r) if r.last_seen_at == at));
    let out = store
        .rotate_refresh_token(&KeyHash::of("r1"), &KeyHash::of("r3"), at, &ctx())
        .await
        .unwrap();
    assert!(
        matches!(out, RefreshOutcome::Reused(ref r) if r.revoke_reason.as_deref() == Some("refresh_token_reuse"))
    );
    assert!(!store
        .get_session(t.id, s.id)
        .await
        .unwrap()
        .is_active(now()));
    // The current token of the revoked session is invalid; the used one stays a reuse,
    // without a second revocation.
    assert_eq!(
        store
            .rotate_refresh_token(&KeyHash::of("r2"), &KeyHash::of("r4"), at, &ctx())
            .await
            .unwrap(),
        RefreshOutcome::Invalid
    );
    assert_eq!(
        store
            .rotate_refresh_token(&KeyHash::of("r1"), &KeyHash::of("r5"), now(), &ctx())
            .await
            .unwrap(),
        RefreshOutcome::Reused(store.get_session(t.id, s.id).await.unwrap())
    );
    assert_eq!(
        count_actions(&store, t.id, actions::SESSION_REVOKE).await,
        1
    );

    // Two presentations at once: one rotation, one reuse.
    for round in 0..10 {
        let first = format!("race-{round}");
        token_session(&store, t.id, u.id, &first).await;
        let tasks: Vec<_> = (0..2)
            .map(|i| {
                let store = store.clone();
                let presented = KeyHash::of(&first);
                let next = KeyHash::of(&format!("{first}-{i}"));
                tokio::spawn(async move {
                    store
                        .rotate_refresh_token(&presented, &next, now(), &ctx())
                        .await
                        .unwrap()
                })
            })
            .collect();
        let mut rotated = 0;
        for task in tasks {
            match task.await.unwrap() {
                RefreshOutcome::Rotated(_) => rotated += 1,
                RefreshOutcome::Reused(_) => {}
                RefreshOutcome::Invalid => panic!("round {round}: invalid"),
            }
        }
        assert_eq!(rotated, 1, "round {round}");
    }
}

#[tokio::test]
async fn revocation_scopes_and_user_status() {
    let (_dir, store) = open().await;
    let t = tenant(&store, "acme").await;
    let u = user(&store, t.id, "u@acme.test").await;
    let v = user(&store, t.id, "v@acme.test").await;
    let s1 = token_session(&store, t.id, u.id, "a").await;
    let s2 = token_session(&store, t.id, u.id, "b").await;
    let sv = token_session(&store, t.id, v.id, "c").await;

    assert!(store
        .revoke_sessions(t.id, u.id, RevokeScope::One(sv.id), "logout", &ctx())
        .await
        .is_err());
    assert_eq!(
        store
            .revoke_sessions(t.id, u.id, RevokeScope::AllExcept(s2.id), "x", &ctx())
            .await
            .unwrap(),
        1
    );
    let listed: Vec<_> = store
        .list_sessions(t.id, u.id, now())
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(listed, vec![s2.id]);
    assert!(!store
        .get_session(t.id, s1.id)
        .await
        .unwrap()
        .is_active(now()));

    // Blocking ends the remaining session; renaming a blocked user revokes nothing more.
    store
        .update_user(
            t.id,
            u.id,
            UserPatch {
                status: Some(UserStatus::Blocked),
                ..Default::default()
            },
            None,
            &ctx(),
        )
        .await
        .unwrap();
    let s2 = store.get_session(t.id, s2.id).await.unwrap();
    assert_eq!(s2.revoke_reason.as_deref(), Some("user_blocked"));
    assert_eq!(
        count_actions(&store, t.id, actions::SESSION_REVOKE).await,
        2
    );

    store.delete_user(t.id, v.id, None, &ctx()).await.unwrap();
    let sv = store.get_session(t.id, sv.id).await.unwrap();
    assert_eq!(sv.revoke_reason.as_deref(), Some("user_deleted"));
}

#[tokio::test]
async fn one_time_tokens_are_single_use() {
    let (_dir, store) = open().await;
    let t = tenant(&store, "acme").await;
    let u = user(&store, t.id, "u@acme.test").await;
    let first = ott(t.id, Some(u.id), "one", TokenPurpose::PasswordReset);
    store.create_one_time_token(&first, &[]).await.unwrap();
    let second = ott(t.id, Some(u.id), "two", TokenPurpose::PasswordReset);
    store.create_one_time_token(&second, &[]).await.unwrap();
    let h1 = KeyHash::of("one");
    let h2 = KeyHash::of("two");
    let at = now();
    assert!(store
        .peek_one_time_token(TokenPurpose::PasswordReset, &h1, at)
        .await
        .unwrap()
        .is_none());
    assert_eq!(
        store
            .peek_one_time_token(TokenPurpose::PasswordReset, &h2, at)
            .await
            .unwrap(),
        Some(second.clone())
    );
    assert!(store
        .consume_one_time_token(TokenPurpose::PasswordReset, &h2, second.expires_at)
        .await
        .unwrap()
        .is_none());
    assert!(store
        .consume_one_time_token(TokenPurpose::PasswordReset, &h2, at)
        .await
        .unwrap()
        .is_some());
    assert!(store
        .consume_one_time_token(TokenPurpose::PasswordReset, &h2, at)
        .await
        .unwrap()
        .is_none());

    let mfa = ott(t.id, Some(u.id), "mfa", TokenPurpose::MfaChallenge);
    store.create_one_time_token(&mfa, &[]).await.unwrap();
    let hm = KeyHash::of("mfa");
    store
        .fail_one_time_token(TokenPurpose::MfaChallenge, &hm, 2)
        .await
        .unwrap();
    assert_eq!(
        store
            .peek_one_time_token(TokenPurpose::MfaChallenge, &hm, at)
            .await
            .unwrap()
            .unwrap()
            .attempts,
        1
    );
    store
        .fail_one_time_token(TokenPurpose::MfaChallenge, &hm, 2)
        .await
        .unwrap();
    assert!(store
        .peek_one_time_token(TokenPurpose::MfaChallenge, &hm, at)
        .await
        .unwrap()
        .is_none());
}

#[tokio::test]
async fn totp_steps_and_recovery_codes() {
    let (_dir, store) = open().await;
    let t = tenant(&store, "acme").await;
    let u = user(&store, t.id, "u@acme.test").await;
    store
        .put_pending_totp(t.id, u.id, vec![1, 2, 3], &ctx())
        .await
        .unwrap();
    assert!(!store.use_totp_step(t.id, u.id, 5).await.unwrap());
    store
        .confirm_totp(
            t.id,
            u.id,
            10,
            &[KeyHash::of("a"), KeyHash::of("b")],
            &ctx(),
        )
        .await
        .unwrap();
    assert!(
        store
            .get_credentials(t.id, u.id)
            .await
            .unwrap()
            .totp_enabled
    );
    assert!(store
        .put_pending_totp(t.id, u.id, vec![4], &ctx())
        .await
        .is_err());
    assert!(!store.use_totp_step(t.id, u.id, 10).await.unwrap());
    assert!(store.use_totp_step(t.id, u.id, 11).await.unwrap());
    assert!(store
        .use_recovery_code(t.id, u.id, &KeyHash::of("a"), &ctx())
        .await
        .unwrap());
    assert!(!store
        .use_recovery_code(t.id, u.id, &KeyHash::of("a"), &ctx())
        .await
        .unwrap());
    assert_eq!(store.count_recovery_codes(t.id, u.id).await.unwrap(), 1);
    store.delete_totp(t.id, u.id, &ctx()).await.unwrap();
    assert_eq!(store.count_recovery_codes(t.id, u.id).await.unwrap(), 0);
    assert!(
        !store
            .get_credentials(t.id, u.id)
            .await
            .unwrap()
            .totp_enabled
    );
}

#[tokio::test]
async fn a_new_signing_key_retires_the_current_one() {
    let (_dir, store) = open().await;
    let key = |kid: &str| SigningKeyRecord {
        kid: kid.to_owned(),
        algorithm: "EdDSA".into(),
        private_key_ciphertext: vec![7; 48],
        public_jwk: json!({"kid": kid}),
        created_at: now(),
        retired_at: None,
    };
    let k1 = key("k1");
    store.add_signing_key(&k1).await.unwrap();
    let k2 = key("k2");
    store.add_signing_key(&k2).await.unwrap();
    let keys = store.list_signing_keys().await.unwrap();
    assert_eq!(keys.len(), 2);
    assert_eq!(keys[0], k2);
    assert_eq!(keys[1].retired_at, Some(k2.created_at));
}

#[tokio::test]
async fn another_tenant_reaches_nothing() {
    let (_dir, store) = open().await;
    let a = tenant(&store, "acme").await;
    let b = tenant(&store, "globex").await;
    let u = user(&store, a.id, "u@acme.test").await;
    let s = token_session(&store, a.id, u.id, "r").await;
    assert!(store.get_credentials(b.id, u.id).await.is_err());
    assert!(store.get_session(b.id, s.id).await.is_err());
    assert!(store
        .list_sessions(b.id, u.id, now())
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        store
            .revoke_sessions(b.id, u.id, RevokeScope::All, "x", &ctx())
            .await
            .unwrap(),
        0
    );
    assert!(store.touch_session(b.id, s.id, now()).await.is_err());
    assert!(store
        .find_login(b.id, "u@acme.test")
        .await
        .unwrap()
        .is_none());
    assert!(store
        .get_session(a.id, s.id)
        .await
        .unwrap()
        .is_active(now()));
}

#[tokio::test]
async fn browser_sessions_are_found_by_their_cookie() {
    let (_dir, store) = open().await;
    let t = tenant(&store, "acme").await;
    let u = user(&store, t.id, "u@acme.test").await;
    let s = store
        .create_session(
            NewSession {
                session: session(t.id, u.id, SessionKind::Browser),
                refresh_hash: None,
                cookie_hash: Some(KeyHash::of("cookie")),
                csrf_hash: Some(KeyHash::of("csrf")),
            },
            &ctx(),
        )
        .await
        .unwrap();
    let found = store
        .find_browser_session(&KeyHash::of("cookie"), now())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.session, s);
    assert_eq!(found.csrf_hash, KeyHash::of("csrf"));
    assert!(store
        .find_browser_session(&KeyHash::of("cookie"), s.expires_at)
        .await
        .unwrap()
        .is_none());
}

// --- what only this backend has ---

#[tokio::test]
async fn credentials_cannot_outlive_the_schema_rules() {
    let (_dir, store) = open().await;
    let t = tenant(&store, "acme").await;
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
