//! The invariants of [`AuthStore`] on PostgreSQL: lockout, refresh rotation and reuse
//! (concurrent presentations included), single-use tokens, TOTP steps and recovery codes,
//! session revocation when a user is blocked or deleted, and tenant isolation.
//!
//! Each test works in a fresh schema of the database named by
//! `PORTCULLIS_TEST_DATABASE_URL`; without it they are skipped (with a message).

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use chrono::TimeDelta;
use domain::api_keys::KeyHash;
use domain::audit::{actions, Actor, AuditContext, AuditEvent, AuditQuery, EntityRef};
use domain::auth::{
    AuthSettings, LockoutPolicy, NewPassword, NewSession, OneTimeToken, RefreshOutcome,
    RegistrationMode, RevokeScope, Session, SessionKind, SigningKeyRecord, TokenPurpose,
};
use domain::page::PageSize;
use domain::patch::Patch;
use domain::tenants::{MaxUsers, NewTenant, Plan, Tenant, TenantSlug};
use domain::time::now;
use domain::users::{NewUser, User, UserPatch, UserStatus};
use domain::values::{DisplayName, Email, JsonObject, Username};
use domain::Code;
use domain::{AuthStore, Error, SessionId, Store, TenantId, Timestamp, UserId};
use futures::FutureExt;
use serde_json::json;
use uuid::Uuid;

use crate::PgStore;

const URL_VAR: &str = "PORTCULLIS_TEST_DATABASE_URL";

/// Runs `case` against a migrated store in a fresh schema, dropped afterwards whatever the
/// outcome.
pub(crate) async fn run<F, Fut>(case: F)
where
    F: FnOnce(PgStore) -> Fut,
    Fut: Future<Output = ()>,
{
    let url = match std::env::var(URL_VAR) {
        Ok(url) if !url.is_empty() => url,
        _ => {
            eprintln!("skipping: {URL_VAR} is not set");
            return;
        }
    };
    let schema = format!("auth_{}", Uuid::now_v7().simple());
    let store = PgStore::connect_in_schema(&url, &schema, 4).await.unwrap();
    store.migrate().await.unwrap();
    let outcome = AssertUnwindSafe(case(store.clone())).catch_unwind().await;
    store.close().await;
    PgStore::drop_schema(&url, &schema).await.unwrap();
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

fn ctx() -> AuditContext {
    AuditContext {
        actor: Actor::System,
        ip: Some("198.51.100.4".into()),
        user_agent: Some("auth-test/1".into()),
        request_id: None,
    }
}

async fn tenant(store: &PgStore, slug: &str, max_users: Option<i64>) -> Tenant {
    let new = NewTenant {
        slug: TenantSlug::parse("slug", slug).unwrap(),
        display_name: DisplayName::parse("display_name", slug).unwrap(),
        plan: Plan::Enterprise,
        max_users: max_users.map(|n| MaxUsers::parse("max_users", n).unwrap()),
        trial_ends_at: None,
        settings: JsonObject::default(),
    };
    store.create_tenant(new, &ctx()).await.unwrap()
}

fn new_user(email: &str, username: Option<&str>) -> NewUser {
    NewUser {
        email: Email::parse("email", email).unwrap(),
        username: username.map(|u| Username::parse("username", u).unwrap()),
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

fn password(hash: &str, keep: u32) -> NewPassword {
    NewPassword {
        hash: hash.into(),
        must_change: false,
        keep_history: keep,
    }
}

async fn user(store: &PgStore, tenant: TenantId, email: &str) -> User {
    store
        .create_user_with_password(
            tenant,
            new_user(email, None),
            Some(password("$argon2id$initial", 5)),
            actions::USER_CREATE,
            &ctx(),
        )
        .await
        .unwrap()
}

fn hash(s: &str) -> KeyHash {
    KeyHash::of(s)
}

fn session_of(u: &User, kind: SessionKind, lifetime: TimeDelta) -> Session {
    let t = now();
    Session {
        id: SessionId::new(),
        tenant_id: u.tenant_id,
        user_id: u.id,
        kind,
        device_label: Some("laptop".into()),
        ip: Some("192.0.2.1".into()),
        user_agent: Some("browser/1".into()),
        amr: vec!["pwd".into()],
        mfa_level: 1,
        created_at: t,
        last_seen_at: t,
        expires_at: t + lifetime,
        revoked_at: None,
        revoke_reason: None,
    }
}

/// A token session of `u` whose refresh token is `refresh`.
async fn token_session(store: &PgStore, u: &User, refresh: &str) -> Session {
    let new = NewSession {
        session: session_of(u, SessionKind::Token, TimeDelta::days(1)),
        refresh_hash: Some(hash(refresh)),
        cookie_hash: None,
        csrf_hash: None,
    };
    store.create_session(new, &ctx()).await.unwrap()
}

async fn events(store: &PgStore, tenant: TenantId, action: &str) -> Vec<AuditEvent> {
    let q = AuditQuery {
        action: Some(action.into()),
        limit: PageSize::new(Some(200)).unwrap(),
        ..Default::default()
    };
    store.list_audit_events(tenant, &q).await.unwrap().items
}

fn err<T: std::fmt::Debug>(r: domain::Result<T>) -> Error {
    match r {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(e) => e,
    }
}

fn token(t: &Tenant, u: Option<&User>, secret: &str, purpose: TokenPurpose) -> OneTimeToken {
    let created = now();
    OneTimeToken {
        hash: hash(secret),
        tenant_id: t.id,
        purpose,
        user_id: u.map(|u| u.id),
        email: u.map(|u| u.email.clone()),
        data: json!({ "amr": ["pwd"] }),
        created_at: created,
        expires_at: created + TimeDelta::minutes(15),
        used_at: None,
        attempts: 0,
    }
}

#[tokio::test]
async fn lockout_locks_lifts_and_is_audited() {
    run(|store| async move {
        let t = tenant(&store, "lockout", None).await;
        let u = user(&store, t.id, "ada@example.com").await;
        let policy = LockoutPolicy {
            threshold: 3,
            window: TimeDelta::minutes(15),
            duration: TimeDelta::milliseconds(400),
        };
        for i in 1..=2 {
            let tr = store
                .record_login_failure(t.id, u.id, &policy, "bad_password", &ctx())
                .await
                .unwrap();
            assert!(!tr.locked && !tr.unlocked);
            assert_eq!(tr.failed_count, i);
        }
        let tr = store
            .record_login_failure(t.id, u.id, &policy, "bad_password", &ctx())
            .await
            .unwrap();
        assert!(tr.locked);
        let c = store.get_credentials(t.id, u.id).await.unwrap();
        assert!(c.is_locked(now()));
        assert_eq!(c.locked_until, tr.locked_until);

        // A failure during the lock neither extends it nor locks again.
        let during = store
            .record_login_failure(t.id, u.id, &policy, "locked", &ctx())
            .await
            .unwrap();
        assert!(!during.locked && !during.unlocked);
        assert_eq!(during.locked_until, tr.locked_until);

        let failures = events(&store, t.id, actions::AUTH_LOGIN_FAILURE).await;
        assert_eq!(failures.len(), 4);
        assert_eq!(failures[0].after, Some(json!({ "reason": "locked" })));
        assert_eq!(failures[0].entity_id, Some(u.id.into_uuid()));
        assert_eq!(events(&store, t.id, actions::USER_LOCK).await.len(), 1);

        // After the lock lifts, a successful sign-in clears it and records the unlock.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let before = store.get_user(t.id, u.id).await.unwrap();
        let s = token_session(&store, &u, "r1").await;
        let c = store.get_credentials(t.id, u.id).await.unwrap();
        assert_eq!(
            (c.failed_count, c.failed_window_start, c.locked_until),
            (0, None, None)
        );
        assert_eq!(events(&store, t.id, actions::USER_UNLOCK).await.len(), 1);
        let after = store.get_user(t.id, u.id).await.unwrap();
        assert_eq!(after.last_login_at, Some(s.created_at));
        assert_eq!(after.version, before.version);
        let logins = events(&store, t.id, actions::AUTH_LOGIN).await;
        assert_eq!(logins.len(), 1);
        assert_eq!(logins[0].entity_id, Some(s.id.into_uuid()));
        assert_eq!(
            logins[0].after,
            Some(json!({ "amr": ["pwd"], "kind": "token" }))
        );

        // Locked again, and the first failure after it expires records the unlock.
        for _ in 0..3 {
            store
                .record_login_failure(t.id, u.id, &policy, "bad_password", &ctx())
                .await
                .unwrap();
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let tr = store
            .record_login_failure(t.id, u.id, &policy, "bad_password", &ctx())
            .await
            .unwrap();
        assert!(tr.unlocked && !tr.locked);
        assert_eq!(tr.failed_count, 1);
        assert_eq!(events(&store, t.id, actions::USER_UNLOCK).await.len(), 2);
        assert_eq!(events(&store, t.id, actions::USER_LOCK).await.len(), 2);

        // A user without a credentials row gets one; unknown users are NotFound.
        let bare = store
            .create_user(t.id, new_user("bare@example.com", None), &ctx())
            .await
            .unwrap();
        let tr = store
            .record_login_failure(t.id, bare.id, &policy, "bad_password", &ctx())
            .await
            .unwrap();
        assert_eq!(tr.failed_count, 1);
        let e = err(store
            .record_login_failure(t.id, UserId::new(), &policy, "x", &ctx())
            .await);
        assert!(matches!(e, Error::NotFound { entity: "user" }));
    })
    .await;
}

#[tokio::test]
async fn refresh_tokens_rotate_once_and_reuse_revokes() {
    run(|store| async move {
        let t = tenant(&store, "refresh", None).await;
        let u = user(&store, t.id, "ada@example.com").await;
        let s = token_session(&store, &u, "a").await;

        let later = now() + TimeDelta::seconds(5);
        let mut c = ctx();
        c.ip = Some("203.0.113.9".into());
        c.user_agent = None;
        let RefreshOutcome::Rotated(r) = store
            .rotate_refresh_token(&hash("a"), &hash("b"), later, &c)
            .await
            .unwrap()
        else {
            panic!("expected a rotation");
        };
        assert_eq!(r.id, s.id);
        assert_eq!(r.last_seen_at, later);
        assert_eq!(r.ip.as_deref(), Some("203.0.113.9"));
        assert_eq!(r.user_agent.as_deref(), Some("browser/1"));
        assert!(matches!(
            store
                .rotate_refresh_token(&hash("b"), &hash("c"), now(), &ctx())
                .await
                .unwrap(),
            RefreshOutcome::Rotated(_)
        ));
        assert!(events(&store, t.id, actions::SESSION_REVOKE)
            .await
            .is_empty());

        // Presenting a used token revokes the session.
        let RefreshOutcome::Reused(r) = store
            .rotate_refresh_token(&hash("a"), &hash("x"), now(), &ctx())
            .await
            .unwrap()
        else {
            panic!("expected a reuse");
        };
        assert_eq!(r.revoke_reason.as_deref(), Some("refresh_token_reuse"));
        let stored = store.get_session(t.id, s.id).await.unwrap();
        assert_eq!(stored, r);
        let revokes = events(&store, t.id, actions::SESSION_REVOKE).await;
        assert_eq!(revokes.len(), 1);
        assert_eq!(
            revokes[0].after,
            Some(json!({ "reason": "refresh_token_reuse" }))
        );
        // The current token of a revoked session and an unknown token are invalid; a used
        // one is still a reuse, which leaves the revocation as it was.
        for presented in ["c", "unknown"] {
            assert_eq!(
                store
                    .rotate_refresh_token(&hash(presented), &hash("y"), now(), &ctx())
                    .await
                    .unwrap(),
                RefreshOutcome::Invalid
            );
        }
        assert_eq!(
            store
                .rotate_refresh_token(&hash("b"), &hash("y"), now(), &ctx())
                .await
                .unwrap(),
            RefreshOutcome::Reused(stored)
        );
        assert_eq!(events(&store, t.id, actions::SESSION_REVOKE).await.len(), 1);

        // An expired session's token is invalid, and stays unused.
        let expired = token_session(&store, &u, "e").await;
        let after_expiry = expired.expires_at + TimeDelta::seconds(1);
        assert_eq!(
            store
                .rotate_refresh_token(&hash("e"), &hash("f"), after_expiry, &ctx())
                .await
                .unwrap(),
            RefreshOutcome::Invalid
        );
        assert!(matches!(
            store
                .rotate_refresh_token(&hash("e"), &hash("f"), now(), &ctx())
                .await
                .unwrap(),
            RefreshOutcome::Rotated(_)
        ));
    })
    .await;
}

#[tokio::test]
async fn concurrent_presentations_rotate_exactly_once() {
    run(|store| async move {
        let t = tenant(&store, "race", None).await;
        let u = user(&store, t.id, "ada@example.com").await;
        for i in 0..25 {
            let s = token_session(&store, &u, &format!("t{i}")).await;
            let presented = hash(&format!("t{i}"));
            let (n1, n2) = (hash(&format!("n{i}a")), hash(&format!("n{i}b")));
            let c = ctx();
            let (a, b) = tokio::join!(
                store.rotate_refresh_token(&presented, &n1, now(), &c),
                store.rotate_refresh_token(&presented, &n2, now(), &c),
            );
            let outcomes = [a.unwrap(), b.unwrap()];
            let rotated = outcomes
                .iter()
                .filter(|o| matches!(o, RefreshOutcome::Rotated(_)))
                .count();
            let reused = outcomes
                .iter()
                .filter(|o| matches!(o, RefreshOutcome::Reused(_)))
                .count();
            assert_eq!((rotated, reused), (1, 1), "round {i}: {outcomes:?}");
            assert!(store
                .get_session(t.id, s.id)
                .await
                .unwrap()
                .revoked_at
                .is_some());
        }
        assert_eq!(
            events(&store, t.id, actions::SESSION_REVOKE).await.len(),
            25
        );
    })
    .await;
}

#[tokio::test]
async fn browser_sessions_and_revocation_scopes() {
    run(|store| async move {
        let t = tenant(&store, "browser", None).await;
        let u = user(&store, t.id, "ada@example.com").await;
        let b = store
            .create_session(
                NewSession {
                    session: session_of(&u, SessionKind::Browser, TimeDelta::hours(8)),
                    refresh_hash: None,
                    cookie_hash: Some(hash("cookie")),
                    csrf_hash: Some(hash("csrf")),
                },
                &ctx(),
            )
            .await
            .unwrap();
        let found = store
            .find_browser_session(&hash("cookie"), now())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(found.session, b);
        assert_eq!(found.csrf_hash, hash("csrf"));
        assert!(store
            .find_browser_session(&hash("other"), now())
            .await
            .unwrap()
            .is_none());
        assert!(store
            .find_browser_session(&hash("cookie"), b.expires_at)
            .await
            .unwrap()
            .is_none());
        let seen = now() + TimeDelta::minutes(1);
        store.touch_session(t.id, b.id, seen).await.unwrap();
        assert_eq!(
            store.get_session(t.id, b.id).await.unwrap().last_seen_at,
            seen
        );

        let s2 = token_session(&store, &u, "r2").await;
        let s3 = token_session(&store, &u, "r3").await;
        let listed: Vec<SessionId> = store
            .list_sessions(t.id, u.id, now())
            .await
            .unwrap()
            .iter()
            .map(|s| s.id)
            .collect();
        assert_eq!(listed, vec![s3.id, s2.id, b.id]);

        let e = err(store
            .revoke_sessions(
                t.id,
                u.id,
                RevokeScope::One(SessionId::new()),
                "logout",
                &ctx(),
            )
            .await);
        assert!(matches!(e, Error::NotFound { entity: "session" }));
        let n = store
            .revoke_sessions(t.id, u.id, RevokeScope::One(b.id), "logout", &ctx())
            .await
            .unwrap();
        assert_eq!(n, 1);
        assert!(store
            .find_browser_session(&hash("cookie"), now())
            .await
            .unwrap()
            .is_none());
        let e = err(store
            .revoke_sessions(t.id, u.id, RevokeScope::One(b.id), "logout", &ctx())
            .await);
        assert!(matches!(e, Error::NotFound { entity: "session" }));
        let n = store
            .revoke_sessions(
                t.id,
                u.id,
                RevokeScope::AllExcept(s3.id),
                "logout_others",
                &ctx(),
            )
            .await
            .unwrap();
        assert_eq!(n, 1);
        let listed = store.list_sessions(t.id, u.id, now()).await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].id, s3.id);
        let revokes = events(&store, t.id, actions::SESSION_REVOKE).await;
        assert_eq!(revokes.len(), 2);
        assert_eq!(revokes[0].entity_id, Some(s2.id.into_uuid()));
        assert_eq!(revokes[0].after, Some(json!({ "reason": "logout_others" })));
        let stored = store.get_session(t.id, b.id).await.unwrap();
        assert_eq!(stored.revoke_reason.as_deref(), Some("logout"));
    })
    .await;
}

#[tokio::test]
async fn one_time_tokens_are_single_use() {
    run(|store| async move {
        let t = tenant(&store, "tokens", None).await;
        let u = user(&store, t.id, "ada@example.com").await;
        let issued = AuditEvent::record(
            &ctx(),
            t.id,
            actions::AUTH_MAGIC_LINK_REQUEST,
            EntityRef::user(u.id),
            (None, None),
            now(),
        );
        let first = token(&t, Some(&u), "m1", TokenPurpose::MagicLink);
        store
            .create_one_time_token(&first, std::slice::from_ref(&issued))
            .await
            .unwrap();
        assert_eq!(
            events(&store, t.id, actions::AUTH_MAGIC_LINK_REQUEST)
                .await
                .len(),
            1
        );
        let peeked = store
            .peek_one_time_token(TokenPurpose::MagicLink, &hash("m1"), now())
            .await
            .unwrap();
        assert_eq!(peeked, Some(first.clone()));
        // The purpose is part of the lookup.
        assert!(store
            .consume_one_time_token(TokenPurpose::PasswordReset, &hash("m1"), now())
            .await
            .unwrap()
            .is_none());
        let consumed = store
            .consume_one_time_token(TokenPurpose::MagicLink, &hash("m1"), now())
            .await
            .unwrap()
            .unwrap();
        assert!(consumed.used_at.is_some());
        assert_eq!(consumed.data, json!({ "amr": ["pwd"] }));
        assert!(store
            .consume_one_time_token(TokenPurpose::MagicLink, &hash("m1"), now())
            .await
            .unwrap()
            .is_none());

        // A new token of the purpose invalidates the user's earlier ones, not others.
        let reset = token(&t, Some(&u), "p1", TokenPurpose::PasswordReset);
        store.create_one_time_token(&reset, &[]).await.unwrap();
        store
            .create_one_time_token(&token(&t, Some(&u), "m2", TokenPurpose::MagicLink), &[])
            .await
            .unwrap();
        store
            .create_one_time_token(&token(&t, Some(&u), "m3", TokenPurpose::MagicLink), &[])
            .await
            .unwrap();
        assert!(store
            .peek_one_time_token(TokenPurpose::MagicLink, &hash("m2"), now())
            .await
            .unwrap()
            .is_none());
        assert!(store
            .peek_one_time_token(TokenPurpose::PasswordReset, &hash("p1"), now())
            .await
            .unwrap()
            .is_some());

        // Never after it expires.
        let at_expiry = reset.expires_at;
        assert!(store
            .consume_one_time_token(TokenPurpose::PasswordReset, &hash("p1"), at_expiry)
            .await
            .unwrap()
            .is_none());

        // Failed attempts use it up.
        let mut challenge = token(&t, Some(&u), "c1", TokenPurpose::MfaChallenge);
        challenge.user_id = Some(u.id);
        store.create_one_time_token(&challenge, &[]).await.unwrap();
        store
            .fail_one_time_token(TokenPurpose::MfaChallenge, &hash("c1"), 2)
            .await
            .unwrap();
        let left = store
            .peek_one_time_token(TokenPurpose::MfaChallenge, &hash("c1"), now())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(left.attempts, 1);
        store
            .fail_one_time_token(TokenPurpose::MfaChallenge, &hash("c1"), 2)
            .await
            .unwrap();
        assert!(store
            .consume_one_time_token(TokenPurpose::MfaChallenge, &hash("c1"), now())
            .await
            .unwrap()
            .is_none());

        // Of concurrent consumptions, one succeeds.
        let invite = token(&t, None, "i1", TokenPurpose::Invitation);
        store.create_one_time_token(&invite, &[]).await.unwrap();
        let i1 = hash("i1");
        let (a, b) = tokio::join!(
            store.consume_one_time_token(TokenPurpose::Invitation, &i1, now()),
            store.consume_one_time_token(TokenPurpose::Invitation, &i1, now()),
        );
        assert_eq!(
            [a.unwrap(), b.unwrap()]
                .iter()
                .filter(|t| t.is_some())
                .count(),
            1
        );
    })
    .await;
}

#[tokio::test]
async fn totp_steps_and_recovery_codes_are_used_once() {
    run(|store| async move {
        let t = tenant(&store, "totp", None).await;
        let u = user(&store, t.id, "ada@example.com").await;
        assert!(store.get_totp(t.id, u.id).await.unwrap().is_none());
        let e = err(store
            .confirm_totp(t.id, u.id, 100, &[hash("a")], &ctx())
            .await);
        assert!(matches!(
            e,
            Error::Refused {
                code: Code::TotpNotPending,
                ..
            }
        ));
        store
            .put_pending_totp(t.id, u.id, vec![1, 2, 3], &ctx())
            .await
            .unwrap();
        // Restarting a pending enrolment replaces the secret.
        store
            .put_pending_totp(t.id, u.id, vec![4, 5, 6], &ctx())
            .await
            .unwrap();
        let pending = store.get_totp(t.id, u.id).await.unwrap().unwrap();
        assert_eq!(pending.secret_ciphertext, vec![4, 5, 6]);
        assert!(pending.confirmed_at.is_none());
        assert!(!store.use_totp_step(t.id, u.id, 100).await.unwrap());
        assert!(
            !store
                .get_credentials(t.id, u.id)
                .await
                .unwrap()
                .totp_enabled
        );

        store
            .confirm_totp(t.id, u.id, 100, &[hash("a"), hash("b")], &ctx())
            .await
            .unwrap();
        assert!(
            store
                .get_credentials(t.id, u.id)
                .await
                .unwrap()
                .totp_enabled
        );
        let e = err(store.put_pending_totp(t.id, u.id, vec![7], &ctx()).await);
        assert!(matches!(
            e,
            Error::Refused {
                code: Code::TotpAlreadyEnrolled,
                ..
            }
        ));
        let e = err(store.confirm_totp(t.id, u.id, 101, &[], &ctx()).await);
        assert!(matches!(
            e,
            Error::Refused {
                code: Code::TotpNotPending,
                ..
            }
        ));

        // The confirming step, and every earlier one, is a replay.
        assert!(!store.use_totp_step(t.id, u.id, 100).await.unwrap());
        assert!(!store.use_totp_step(t.id, u.id, 99).await.unwrap());
        assert!(store.use_totp_step(t.id, u.id, 101).await.unwrap());
        assert!(!store.use_totp_step(t.id, u.id, 101).await.unwrap());
        let (a, b) = tokio::join!(
            store.use_totp_step(t.id, u.id, 102),
            store.use_totp_step(t.id, u.id, 102),
        );
        assert!(a.unwrap() ^ b.unwrap());

        assert_eq!(store.count_recovery_codes(t.id, u.id).await.unwrap(), 2);
        assert!(store
            .use_recovery_code(t.id, u.id, &hash("a"), &ctx())
            .await
            .unwrap());
        assert!(!store
            .use_recovery_code(t.id, u.id, &hash("a"), &ctx())
            .await
            .unwrap());
        assert_eq!(store.count_recovery_codes(t.id, u.id).await.unwrap(), 1);
        assert_eq!(
            events(&store, t.id, actions::MFA_RECOVERY_CODE_USE)
                .await
                .len(),
            1
        );
        store
            .replace_recovery_codes(t.id, u.id, &[hash("c"), hash("d"), hash("e")], &ctx())
            .await
            .unwrap();
        assert_eq!(store.count_recovery_codes(t.id, u.id).await.unwrap(), 3);
        assert!(!store
            .use_recovery_code(t.id, u.id, &hash("b"), &ctx())
            .await
            .unwrap());

        store.delete_totp(t.id, u.id, &ctx()).await.unwrap();
        assert!(store.get_totp(t.id, u.id).await.unwrap().is_none());
        assert_eq!(store.count_recovery_codes(t.id, u.id).await.unwrap(), 0);
        let e = err(store.delete_totp(t.id, u.id, &ctx()).await);
        assert!(matches!(e, Error::NotFound { .. }));
        let e = err(store
            .replace_recovery_codes(t.id, u.id, &[hash("f")], &ctx())
            .await);
        assert!(matches!(
            e,
            Error::Refused {
                code: Code::TotpNotEnrolled,
                ..
            }
        ));
        for action in [
            actions::MFA_TOTP_ENROL,
            actions::MFA_TOTP_CONFIRM,
            actions::MFA_RECOVERY_CODES_REGENERATE,
            actions::MFA_TOTP_REMOVE,
        ] {
            assert!(!events(&store, t.id, action).await.is_empty(), "{action}");
        }
    })
    .await;
}

#[tokio::test]
async fn blocking_or_deleting_a_user_revokes_their_sessions() {
    run(|store| async move {
        let t = tenant(&store, "revoke", None).await;
        let cases = [
            (UserStatus::Blocked, "user_blocked"),
            (UserStatus::Suspended, "user_suspended"),
            (UserStatus::Inactive, "user_inactive"),
        ];
        for (i, (status, reason)) in cases.into_iter().enumerate() {
            let u = user(&store, t.id, &format!("u{i}@example.com")).await;
            let bystander = user(&store, t.id, &format!("b{i}@example.com")).await;
            let kept = token_session(&store, &bystander, &format!("k{i}")).await;
            let s1 = token_session(&store, &u, &format!("a{i}")).await;
            let s2 = token_session(&store, &u, &format!("b{i}")).await;
            let patch = UserPatch {
                status: Some(status),
                ..Default::default()
            };
            store
                .update_user(t.id, u.id, patch, None, &ctx())
                .await
                .unwrap();
            for s in [s1.id, s2.id] {
                let s = store.get_session(t.id, s).await.unwrap();
                assert!(s.revoked_at.is_some());
                assert_eq!(s.revoke_reason.as_deref(), Some(reason));
            }
            assert!(store
                .list_sessions(t.id, u.id, now())
                .await
                .unwrap()
                .is_empty());
            assert!(store
                .get_session(t.id, kept.id)
                .await
                .unwrap()
                .revoked_at
                .is_none());
            // No new session while the status lasts.
            let e = err(store
                .create_session(
                    NewSession {
                        session: session_of(&u, SessionKind::Token, TimeDelta::days(1)),
                        refresh_hash: Some(hash(&format!("z{i}"))),
                        cookie_hash: None,
                        csrf_hash: None,
                    },
                    &ctx(),
                )
                .await);
            assert!(matches!(e, Error::Refused { .. }));
            assert_eq!(
                store
                    .rotate_refresh_token(&hash(&format!("a{i}")), &hash("n"), now(), &ctx())
                    .await
                    .unwrap(),
                RefreshOutcome::Invalid
            );
        }
        assert_eq!(events(&store, t.id, actions::SESSION_REVOKE).await.len(), 6);

        // Other changes leave the sessions alone.
        let u = user(&store, t.id, "del@example.com").await;
        let s = token_session(&store, &u, "d1").await;
        let rename = UserPatch {
            username: Patch::Set(Username::parse("username", "del").unwrap()),
            ..Default::default()
        };
        store
            .update_user(t.id, u.id, rename, None, &ctx())
            .await
            .unwrap();
        assert!(store
            .get_session(t.id, s.id)
            .await
            .unwrap()
            .revoked_at
            .is_none());

        store.delete_user(t.id, u.id, None, &ctx()).await.unwrap();
        let s = store.get_session(t.id, s.id).await.unwrap();
        assert_eq!(s.revoke_reason.as_deref(), Some("user_deleted"));
        assert_eq!(events(&store, t.id, actions::SESSION_REVOKE).await.len(), 7);
        let e = err(store.get_credentials(t.id, u.id).await);
        assert!(matches!(e, Error::NotFound { entity: "user" }));
        assert!(store
            .find_login(t.id, "del@example.com")
            .await
            .unwrap()
            .is_none());
    })
    .await;
}

#[tokio::test]
async fn passwords_history_and_email_verification() {
    run(|store| async move {
        let t = tenant(&store, "passwords", None).await;
        let u = store
            .create_user_with_password(
                t.id,
                new_user("Ada.Lovelace@Example.com", Some("Ada_L")),
                Some(NewPassword {
                    hash: "h1".into(),
                    must_change: true,
                    keep_history: 2,
                }),
                actions::USER_REGISTER,
                &ctx(),
            )
            .await
            .unwrap();
        assert_eq!(events(&store, t.id, actions::USER_REGISTER).await.len(), 1);
        for login in [
            "ada.lovelace@example.com",
            "ADA.LOVELACE@EXAMPLE.COM",
            "ada_l",
        ] {
            let (found, c) = store.find_login(t.id, login).await.unwrap().unwrap();
            assert_eq!(found, u);
            assert_eq!(c.password_hash.as_deref(), Some("h1"));
            assert!(c.must_change_password && c.password_changed_at.is_some());
        }
        assert!(store.find_login(t.id, "nobody").await.unwrap().is_none());

        let s1 = token_session(&store, &u, "s1").await;
        let s2 = token_session(&store, &u, "s2").await;
        let c = store
            .set_password(
                t.id,
                u.id,
                password("h2", 2),
                Some(RevokeScope::AllExcept(s1.id)),
                actions::PASSWORD_CHANGE,
                &ctx(),
            )
            .await
            .unwrap();
        assert_eq!(c.password_hash.as_deref(), Some("h2"));
        assert!(!c.must_change_password);
        assert!(store
            .get_session(t.id, s1.id)
            .await
            .unwrap()
            .revoked_at
            .is_none());
        let s2 = store.get_session(t.id, s2.id).await.unwrap();
        assert_eq!(s2.revoke_reason.as_deref(), Some("password_change"));
        let changes = events(&store, t.id, actions::PASSWORD_CHANGE).await;
        assert_eq!(changes.len(), 1);
        assert!(!changes[0]
            .after
            .as_ref()
            .unwrap()
            .to_string()
            .contains("h2"));

        store
            .set_password(
                t.id,
                u.id,
                password("h3", 2),
                None,
                actions::PASSWORD_SET,
                &ctx(),
            )
            .await
            .unwrap();
        assert_eq!(
            store.password_history(t.id, u.id, 10).await.unwrap(),
            vec!["h3", "h2"]
        );
        assert_eq!(
            store.password_history(t.id, u.id, 1).await.unwrap(),
            vec!["h3"]
        );

        assert!(!store
            .rehash_password(t.id, u.id, "h2", "h2b")
            .await
            .unwrap());
        assert!(store
            .rehash_password(t.id, u.id, "h3", "h3b")
            .await
            .unwrap());
        assert_eq!(
            store
                .get_credentials(t.id, u.id)
                .await
                .unwrap()
                .password_hash
                .as_deref(),
            Some("h3b")
        );
        assert_eq!(
            store.password_history(t.id, u.id, 10).await.unwrap(),
            vec!["h3b", "h2"]
        );

        // A password change clears failures and the lock.
        let policy = LockoutPolicy {
            threshold: 1,
            ..LockoutPolicy::default()
        };
        store
            .record_login_failure(t.id, u.id, &policy, "bad_password", &ctx())
            .await
            .unwrap();
        assert!(store
            .get_credentials(t.id, u.id)
            .await
            .unwrap()
            .is_locked(now()));
        let c = store
            .set_password(
                t.id,
                u.id,
                password("h4", 2),
                None,
                actions::PASSWORD_RESET,
                &ctx(),
            )
            .await
            .unwrap();
        assert!(!c.is_locked(now()));

        assert!(!store
            .mark_email_verified(t.id, u.id, "someone.else@example.com", &ctx())
            .await
            .unwrap());
        assert!(store
            .get_credentials(t.id, u.id)
            .await
            .unwrap()
            .email_verified_at
            .is_none());
        assert!(store
            .mark_email_verified(t.id, u.id, "ADA.lovelace@example.COM", &ctx())
            .await
            .unwrap());
        assert!(store
            .get_credentials(t.id, u.id)
            .await
            .unwrap()
            .email_verified_at
            .is_some());
        let first = store
            .get_credentials(t.id, u.id)
            .await
            .unwrap()
            .email_verified_at;
        // Again: still verified from the first time, not recorded twice.
        assert!(store
            .mark_email_verified(t.id, u.id, "ada.lovelace@example.com", &ctx())
            .await
            .unwrap());
        assert_eq!(
            store
                .get_credentials(t.id, u.id)
                .await
                .unwrap()
                .email_verified_at,
            first
        );
        assert_eq!(
            events(&store, t.id, actions::USER_EMAIL_VERIFY).await.len(),
            1
        );
    })
    .await;
}

#[tokio::test]
async fn creation_with_a_password_respects_the_quota_and_managers() {
    run(|store| async move {
        let t = tenant(&store, "quota", Some(1)).await;
        user(&store, t.id, "first@example.com").await;
        let e = err(store
            .create_user_with_password(
                t.id,
                new_user("second@example.com", None),
                Some(password("h", 1)),
                actions::USER_REGISTER,
                &ctx(),
            )
            .await);
        assert!(matches!(
            e,
            Error::Refused {
                code: Code::QuotaExceeded,
                ..
            }
        ));
        assert!(store
            .find_login(t.id, "second@example.com")
            .await
            .unwrap()
            .is_none());

        let open = tenant(&store, "open", None).await;
        let mut managed = new_user("managed@example.com", None);
        managed.manager_id = Some(UserId::new());
        let e = err(store
            .create_user_with_password(
                open.id,
                managed,
                Some(password("h", 1)),
                actions::USER_CREATE,
                &ctx(),
            )
            .await);
        assert!(matches!(e, Error::Validation(_)));
        user(&store, open.id, "dup@example.com").await;
        let e = err(store
            .create_user_with_password(
                open.id,
                new_user("DUP@example.com", None),
                Some(password("h", 1)),
                actions::USER_CREATE,
                &ctx(),
            )
            .await);
        assert!(matches!(
            e,
            Error::Refused {
                code: Code::EmailTaken,
                ..
            }
        ));
        let e = err(store
            .create_user_with_password(
                TenantId::new(),
                new_user("x@example.com", None),
                Some(password("h", 1)),
                actions::USER_CREATE,
                &ctx(),
            )
            .await);
        assert!(matches!(e, Error::NotFound { entity: "tenant" }));
    })
    .await;
}

#[tokio::test]
async fn tenants_are_isolated() {
    run(|store| async move {
        let a = tenant(&store, "tenant-a", None).await;
        let b = tenant(&store, "tenant-b", None).await;
        let u = user(&store, a.id, "ada@example.com").await;
        let s = token_session(&store, &u, "ra").await;
        store
            .put_pending_totp(a.id, u.id, vec![1], &ctx())
            .await
            .unwrap();
        store
            .confirm_totp(a.id, u.id, 10, &[hash("code")], &ctx())
            .await
            .unwrap();

        assert!(store
            .find_login(b.id, "ada@example.com")
            .await
            .unwrap()
            .is_none());
        assert!(matches!(
            err(store.get_credentials(b.id, u.id).await),
            Error::NotFound { .. }
        ));
        assert!(matches!(
            err(store.get_session(b.id, s.id).await),
            Error::NotFound { .. }
        ));
        assert!(matches!(
            err(store.touch_session(b.id, s.id, now()).await),
            Error::NotFound { .. }
        ));
        assert!(store
            .list_sessions(b.id, u.id, now())
            .await
            .unwrap()
            .is_empty());
        assert!(matches!(
            err(store
                .revoke_sessions(b.id, u.id, RevokeScope::One(s.id), "x", &ctx())
                .await),
            Error::NotFound { .. }
        ));
        assert_eq!(
            store
                .revoke_sessions(b.id, u.id, RevokeScope::All, "x", &ctx())
                .await
                .unwrap(),
            0
        );
        assert!(matches!(
            err(store
                .set_password(
                    b.id,
                    u.id,
                    password("h", 1),
                    None,
                    actions::PASSWORD_SET,
                    &ctx()
                )
                .await),
            Error::NotFound { .. }
        ));
        assert!(store
            .password_history(b.id, u.id, 5)
            .await
            .unwrap()
            .is_empty());
        assert!(!store
            .rehash_password(b.id, u.id, "$argon2id$initial", "x")
            .await
            .unwrap());
        assert!(matches!(
            err(store
                .record_login_failure(b.id, u.id, &LockoutPolicy::default(), "x", &ctx())
                .await),
            Error::NotFound { .. }
        ));
        assert!(matches!(
            err(store
                .mark_email_verified(b.id, u.id, &u.email, &ctx())
                .await),
            Error::NotFound { .. }
        ));
        assert!(store.get_totp(b.id, u.id).await.unwrap().is_none());
        assert!(!store.use_totp_step(b.id, u.id, 11).await.unwrap());
        assert!(!store
            .use_recovery_code(b.id, u.id, &hash("code"), &ctx())
            .await
            .unwrap());
        assert_eq!(store.count_recovery_codes(b.id, u.id).await.unwrap(), 0);
        assert!(matches!(
            err(store.delete_totp(b.id, u.id, &ctx()).await),
            Error::NotFound { .. }
        ));
        assert!(matches!(
            err(store.put_pending_totp(b.id, u.id, vec![2], &ctx()).await),
            Error::NotFound { .. }
        ));
        let mut foreign = token(&b, Some(&u), "f1", TokenPurpose::MagicLink);
        foreign.tenant_id = b.id;
        assert!(matches!(
            err(store.create_one_time_token(&foreign, &[]).await),
            Error::NotFound { .. }
        ));
        let mut other = session_of(&u, SessionKind::Token, TimeDelta::days(1));
        other.tenant_id = b.id;
        let e = err(store
            .create_session(
                NewSession {
                    session: other,
                    refresh_hash: None,
                    cookie_hash: None,
                    csrf_hash: None,
                },
                &ctx(),
            )
            .await);
        assert!(matches!(e, Error::NotFound { entity: "user" }));

        // Nothing of tenant A changed, and tenant B's trail is its own.
        assert!(store
            .get_session(a.id, s.id)
            .await
            .unwrap()
            .revoked_at
            .is_none());
        assert_eq!(store.count_recovery_codes(a.id, u.id).await.unwrap(), 1);
        assert!(store.use_totp_step(a.id, u.id, 11).await.unwrap());
        assert!(events(&store, b.id, actions::SESSION_REVOKE)
            .await
            .is_empty());
        assert!(events(&store, b.id, actions::AUTH_LOGIN).await.is_empty());
    })
    .await;
}

#[tokio::test]
async fn settings_signing_keys_and_audit_events() {
    run(|store| async move {
        let t = tenant(&store, "settings", None).await;
        assert_eq!(
            store.get_auth_settings(t.id).await.unwrap(),
            AuthSettings::default()
        );
        let settings = AuthSettings {
            registration: RegistrationMode::Open,
            require_verified_email: true,
            ..AuthSettings::default()
        };
        let stored = store
            .put_auth_settings(t.id, &settings, &ctx())
            .await
            .unwrap();
        assert_eq!(stored, settings);
        assert_eq!(store.get_auth_settings(t.id).await.unwrap(), settings);
        let ev = events(&store, t.id, actions::TENANT_AUTH_SETTINGS_UPDATE).await;
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].before.as_ref().unwrap()["registration"], "closed");
        assert_eq!(ev[0].after.as_ref().unwrap()["registration"], "open");
        let e = err(store
            .put_auth_settings(TenantId::new(), &settings, &ctx())
            .await);
        assert!(matches!(e, Error::NotFound { entity: "tenant" }));
        let e = err(store.get_auth_settings(TenantId::new()).await);
        assert!(matches!(e, Error::NotFound { entity: "tenant" }));

        assert!(store.list_signing_keys().await.unwrap().is_empty());
        let key = |kid: &str, at: Timestamp| SigningKeyRecord {
            kid: kid.into(),
            algorithm: "EdDSA".into(),
            private_key_ciphertext: vec![9, 9],
            public_jwk: json!({ "kty": "OKP", "kid": kid }),
            created_at: at,
            retired_at: None,
        };
        let t1 = now();
        let t2 = t1 + TimeDelta::seconds(1);
        store.add_signing_key(&key("k1", t1)).await.unwrap();
        store.add_signing_key(&key("k2", t2)).await.unwrap();
        let keys = store.list_signing_keys().await.unwrap();
        assert_eq!(keys.len(), 2);
        assert_eq!(keys[0], key("k2", t2));
        assert_eq!(keys[1].kid, "k1");
        assert_eq!(keys[1].retired_at, Some(t2));
        assert!(matches!(
            err(store.add_signing_key(&key("k2", t2)).await),
            Error::Internal(_)
        ));

        let unknown = |i: u128| {
            let mut c = ctx();
            c.request_id = Some(format!("req-{i}"));
            AuditEvent::record(
                &c,
                t.id,
                actions::AUTH_LOGIN_FAILURE,
                EntityRef::none("login"),
                (None, Some(json!({ "reason": "unknown_login" }))),
                now(),
            )
        };
        let batch: Vec<AuditEvent> = (0..3).map(unknown).collect();
        store.append_audit_events(&batch).await.unwrap();
        store.append_audit_events(&[]).await.unwrap();
        let listed = events(&store, t.id, actions::AUTH_LOGIN_FAILURE).await;
        assert_eq!(listed.len(), 3);
        assert_eq!(listed[0], batch[2]);
    })
    .await;
}
