//! The authentication storage contract ([`domain::AuthStore`]): one set of cases, run
//! against every backend through `Arc<dyn Store>`, so that both keep the invariants listed
//! on the trait identically.
//!
//! Each case gets a fresh database: a file in a temporary directory for SQLite, a fresh
//! schema for PostgreSQL. The PostgreSQL variants need `PORTCULLIS_TEST_DATABASE_URL`
//! (e.g. `postgres://postgres@127.0.0.1:5432/test`); without it they are skipped, except
//! under CI (`CI` set), where a missing database is a failure.
//!
//! Choices this contract fixes where the trait leaves room (both backends follow them):
//! - `get_auth_settings` / `put_auth_settings` of an unknown tenant: `NotFound("tenant")`;
//! - user-scoped writes and `get_credentials` / `mark_email_verified` of an unknown or
//!   deleted user (or one of another tenant): `NotFound("user")`; reads that return lists,
//!   options or counts (`password_history`, `get_totp`, `count_recovery_codes`,
//!   `list_sessions`) return an empty answer instead;
//! - `set_password` with `RevokeScope::One` naming no active session of the user revokes
//!   nothing (the password change still succeeds); it writes exactly one event `action`,
//!   whose `after` lists the revoked sessions (`revoked_sessions`);
//! - `rehash_password` also rewrites the matching history entry, so that the newest
//!   history entry stays the current hash;
//! - `mark_email_verified` of an already verified address answers `true` and keeps the
//!   first verification time, without another event;
//! - `rotate_refresh_token` with a used token whose session is already revoked answers
//!   `Reused` and leaves the revocation as it was (no second event);
//! - `touch_session` of an unknown session (or one of another tenant): `NotFound("session")`;
//! - `delete_totp` without an enrolment: `NotFound("totp")`;
//! - the status change of `update_user` revokes sessions only when the status changes to
//!   `blocked` / `suspended` / `inactive` (reasons `user_blocked`, `user_suspended`,
//!   `user_inactive`); `delete_user` with reason `user_deleted`; one `session.revoke` event
//!   per session, `after` `{"reason": …}`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fmt::Debug;

use chrono::TimeDelta;
use domain::api_keys::KeyHash;
use domain::audit::{actions, Actor, AuditContext, AuditEvent, AuditQuery, EntityRef};
use domain::auth::{
    AuthSettings, Credentials, LockTransition, NewPassword, NewSession, OneTimeToken,
    PasswordPolicy, ProfileField, RefreshOutcome, RegistrationMode, RevokeScope, Session,
    SessionKind, SigningKeyRecord, TokenPurpose,
};
use domain::page::{decode_cursor, PageSize};
use domain::tenants::{MaxUsers, NewTenant, Plan, Tenant};
use domain::time::{now, Timestamp};
use domain::users::{NewUser, User, UserPatch, UserStatus};
use domain::values::{DisplayName, Email};
use domain::{ApiKeyId, AuditEventId, Code, Error, SessionId, TenantId, UserId};
use portcullis_testkit::fixtures::{new_tenant, new_user, with_username};
use portcullis_testkit::rig::Rig;
use portcullis_testkit::rig_tests;
use serde_json::{json, Value};
use uuid::Uuid;

rig_tests!(
    case_prune_removes_only_what_ended,
    case_auth_settings_default_and_round_trip,
    case_create_user_with_password_and_find_login,
    case_create_user_with_password_keeps_user_rules,
    case_set_password_history_and_revocation,
    case_rehash_only_when_old_hash_matches,
    case_lock_state_round_trips,
    case_mark_email_verified,
    case_create_session_resets_counters_and_sets_last_login,
    case_refresh_rotation,
    case_concurrent_rotation_rotates_once,
    case_browser_sessions,
    case_list_and_revoke_sessions,
    case_blocking_and_deleting_revoke_sessions,
    case_one_time_tokens,
    case_one_time_token_attempts_and_concurrent_consume,
    case_totp_and_recovery_codes,
    case_signing_keys,
    case_append_audit_events,
    case_auth_tenant_isolation,
);

// ------------------------------------------------------------------------------------------
// Helpers
// ------------------------------------------------------------------------------------------

fn ctx() -> AuditContext {
    AuditContext {
        actor: Actor::ApiKey(ApiKeyId::from_uuid(Uuid::from_u128(0xA11CE))),
        ip: Some("203.0.113.7".into()),
        user_agent: Some("contract-test/1.0".into()),
        request_id: Some("req-auth-contract".into()),
    }
}

/// The context of a request that carries no client details.
fn bare_ctx() -> AuditContext {
    AuditContext::system()
}

async fn tenant(store: &Rig, slug: &str) -> Tenant {
    store.create_tenant(new_tenant(slug), &ctx()).await.unwrap()
}

async fn user(store: &Rig, tenant: TenantId, email: &str, name: &str) -> User {
    store
        .create_user(tenant, new_user(email, name), &ctx())
        .await
        .unwrap()
}

fn pw(hash: &str, keep_history: u32) -> NewPassword {
    NewPassword {
        hash: hash.to_owned(),
        must_change: false,
        keep_history,
    }
}

/// A user with the password hash `hash`.
async fn user_with_password(store: &Rig, tenant: TenantId, email: &str, hash: &str) -> User {
    store
        .create_user_with_password(
            tenant,
            new_user(email, "With Password"),
            Some(pw(hash, 5)),
            actions::USER_CREATE,
            &ctx(),
        )
        .await
        .unwrap()
}

fn status(s: UserStatus) -> UserPatch {
    UserPatch {
        status: Some(s),
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

fn assert_not_found(e: &Error, entity: &str) {
    assert!(
        matches!(e, Error::NotFound { entity: got } if *got == entity),
        "expected {entity} not found, got {e:?}"
    );
}

fn assert_conflict(e: &Error, code: &str) {
    assert!(
        matches!(e, Error::Refused { code: got, .. } if got.as_str() == code),
        "expected conflict {code}, got {e:?}"
    );
}

fn limit(n: u32) -> PageSize {
    PageSize::new(Some(n)).unwrap()
}

/// Every audit event of `tenant` that `base` selects, newest first.
async fn events(store: &Rig, tenant: TenantId, base: &AuditQuery) -> Vec<AuditEvent> {
    let mut q = base.clone();
    q.limit = limit(200);
    q.before_id = None;
    let mut all = Vec::new();
    loop {
        let page = store.list_audit_events(tenant, &q).await.unwrap();
        all.extend(page.items);
        match page.next_cursor {
            Some(c) => q.before_id = Some(decode_cursor::<AuditEventId>(&c).unwrap()),
            None => break,
        }
        assert!(all.len() <= 100_000, "paging does not end");
    }
    all
}

/// Events of `tenant` with `action`, newest first.
async fn events_with(store: &Rig, tenant: TenantId, action: &str) -> Vec<AuditEvent> {
    let q = AuditQuery {
        action: Some(action.to_owned()),
        ..Default::default()
    };
    events(store, tenant, &q).await
}

/// Events of `tenant` about the entity `id`, newest first.
async fn events_about(store: &Rig, tenant: TenantId, id: Uuid) -> Vec<AuditEvent> {
    let q = AuditQuery {
        entity_id: Some(id),
        ..Default::default()
    };
    events(store, tenant, &q).await
}

/// A session of `user` created at `created` (truncated to microseconds), valid 30 days.
fn session_at(tenant: TenantId, user: UserId, kind: SessionKind, created: Timestamp) -> Session {
    Session {
        id: SessionId::new(),
        tenant_id: tenant,
        user_id: user,
        kind,
        device_label: Some("Laptop".into()),
        ip: Some("198.51.100.1".into()),
        user_agent: Some("Firefox/130".into()),
        amr: vec!["pwd".into()],
        mfa_level: 1,
        created_at: created,
        last_seen_at: created,
        expires_at: created + TimeDelta::days(30),
        revoked_at: None,
        revoke_reason: None,
    }
}

/// A token session with the refresh token `refresh`, created now.
async fn token_session(store: &Rig, tenant: TenantId, user: UserId, refresh: &str) -> Session {
    let s = session_at(tenant, user, SessionKind::Token, now());
    store
        .create_session(
            NewSession {
                session: s,
                refresh_hash: Some(KeyHash::of(refresh)),
                cookie_hash: None,
                csrf_hash: None,
            },
            &ctx(),
        )
        .await
        .unwrap()
}

/// A browser session with the cookie secret `cookie` and the CSRF secret `csrf`.
async fn browser_session(
    store: &Rig,
    tenant: TenantId,
    user: UserId,
    cookie: &str,
    csrf: &str,
) -> Session {
    let s = session_at(tenant, user, SessionKind::Browser, now());
    store
        .create_session(
            NewSession {
                session: s,
                refresh_hash: None,
                cookie_hash: Some(KeyHash::of(cookie)),
                csrf_hash: Some(KeyHash::of(csrf)),
            },
            &ctx(),
        )
        .await
        .unwrap()
}

async fn is_active(store: &Rig, tenant: TenantId, id: SessionId) -> bool {
    store
        .get_session(tenant, id)
        .await
        .unwrap()
        .is_active(now())
}

async fn revoke_reason(store: &Rig, tenant: TenantId, id: SessionId) -> Option<String> {
    let s = store.get_session(tenant, id).await.unwrap();
    assert_eq!(s.revoke_reason.is_some(), s.revoked_at.is_some(), "{s:?}");
    s.revoke_reason
}

fn ott(
    tenant: TenantId,
    purpose: TokenPurpose,
    user: Option<UserId>,
    secret: &str,
    created: Timestamp,
    ttl: TimeDelta,
) -> OneTimeToken {
    OneTimeToken {
        hash: KeyHash::of(secret),
        tenant_id: tenant,
        purpose,
        user_id: user,
        email: None,
        data: json!({}),
        created_at: created,
        expires_at: created + ttl,
        used_at: None,
        attempts: 0,
    }
}

fn contains_text(v: &Option<Value>, needle: &str) -> bool {
    v.as_ref().is_some_and(|v| v.to_string().contains(needle))
}

// ------------------------------------------------------------------------------------------
// Cases
// ------------------------------------------------------------------------------------------

async fn case_auth_settings_default_and_round_trip(store: Rig) {
    let s = &store;
    let a = tenant(s, "acme").await;
    let b = tenant(s, "globex").await;
    assert_eq!(
        s.get_auth_settings(a.id).await.unwrap(),
        AuthSettings::default()
    );

    let custom = AuthSettings {
        registration: RegistrationMode::Approval,
        require_verified_email: true,
        password_policy: PasswordPolicy {
            min_length: 14,
            max_length: 100,
            min_strength: 4,
            history: 12,
            expiry_days: Some(90),
        },
        profile_fields: vec![ProfileField::EmployeeId, ProfileField::Phone],
    };
    assert_eq!(
        s.put_auth_settings(a.id, &custom, &ctx()).await.unwrap(),
        custom
    );
    assert_eq!(s.get_auth_settings(a.id).await.unwrap(), custom);
    // Another tenant keeps the defaults.
    assert_eq!(
        s.get_auth_settings(b.id).await.unwrap(),
        AuthSettings::default()
    );

    // Replacing again: the event records before and after.
    let open = AuthSettings {
        registration: RegistrationMode::Open,
        ..AuthSettings::default()
    };
    s.put_auth_settings(a.id, &open, &ctx()).await.unwrap();
    assert_eq!(s.get_auth_settings(a.id).await.unwrap(), open);
    let evs = events_with(s, a.id, actions::TENANT_AUTH_SETTINGS_UPDATE).await;
    assert_eq!(evs.len(), 2);
    let (latest, first) = (&evs[0], &evs[1]);
    assert_eq!(latest.entity_type, "tenant");
    assert_eq!(latest.entity_id, Some(a.id.into_uuid()));
    assert_eq!(latest.before, Some(serde_json::to_value(&custom).unwrap()));
    assert_eq!(latest.after, Some(serde_json::to_value(&open).unwrap()));
    assert_eq!(
        first.before,
        Some(serde_json::to_value(AuthSettings::default()).unwrap())
    );
    assert_eq!(first.after, Some(serde_json::to_value(&custom).unwrap()));
    assert_eq!(first.ip.as_deref(), Some("203.0.113.7"));
    assert!(events_with(s, b.id, actions::TENANT_AUTH_SETTINGS_UPDATE)
        .await
        .is_empty());

    // An unknown tenant has no settings.
    let ghost = TenantId::new();
    assert_not_found(&err(s.get_auth_settings(ghost).await), "tenant");
    assert_not_found(
        &err(s.put_auth_settings(ghost, &open, &ctx()).await),
        "tenant",
    );
}

async fn case_create_user_with_password_and_find_login(store: Rig) {
    let s = &store;
    let a = tenant(s, "acme").await;
    let b = tenant(s, "globex").await;
    let before = now();
    let ada = s
        .create_user_with_password(
            a.id,
            with_username(new_user("Ada@Example.com", "Ada Lovelace"), "Ada.L"),
            Some(NewPassword {
                hash: "$argon2id$v=19$secret-hash-1".into(),
                must_change: true,
                keep_history: 5,
            }),
            actions::USER_REGISTER,
            &ctx(),
        )
        .await
        .unwrap();
    let after = now();
    assert_eq!(s.get_user(a.id, ada.id).await.unwrap(), ada);

    let creds = s.get_credentials(a.id, ada.id).await.unwrap();
    assert_eq!(creds.tenant_id, a.id);
    assert_eq!(creds.user_id, ada.id);
    assert_eq!(
        creds.password_hash.as_deref(),
        Some("$argon2id$v=19$secret-hash-1")
    );
    let changed = creds.password_changed_at.unwrap();
    assert!(before <= changed && changed <= after, "{changed}");
    assert!(creds.must_change_password);
    assert_eq!(creds.email_verified_at, None);
    assert_eq!(creds.failed_count, 0);
    assert_eq!(creds.failed_window_start, None);
    assert_eq!(creds.locked_until, None);
    assert!(!creds.totp_enabled);
    assert_eq!(
        s.password_history(a.id, ada.id, 10).await.unwrap(),
        vec!["$argon2id$v=19$secret-hash-1".to_owned()]
    );

    // One creation event with the given action, and no hash anywhere in the trail.
    let evs = events_about(s, a.id, ada.id.into_uuid()).await;
    assert_eq!(evs.len(), 1, "{evs:?}");
    assert_eq!(evs[0].action, actions::USER_REGISTER);
    assert_eq!(evs[0].entity_type, "user");
    assert_eq!(evs[0].before, None);
    assert_eq!(evs[0].after, Some(ada.to_audit_json()));
    for ev in events(s, a.id, &AuditQuery::default()).await {
        assert!(!contains_text(&ev.before, "secret-hash"), "{ev:?}");
        assert!(!contains_text(&ev.after, "secret-hash"), "{ev:?}");
    }

    // Found by email or username, case-insensitively, with the credentials.
    for login in [
        "Ada@Example.com",
        "ada@example.com",
        "ADA@EXAMPLE.COM",
        "Ada.L",
        "ada.l",
        "ADA.L",
    ] {
        let (u, c) = s
            .find_login(a.id, login)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{login} not found"));
        assert_eq!(u, ada, "{login}");
        assert_eq!(c, creds, "{login}");
    }
    for login in ["ada", "ada@example", "nobody@example.com", ""] {
        assert!(
            s.find_login(a.id, login).await.unwrap().is_none(),
            "{login}"
        );
    }
    // Not in another tenant.
    assert!(s
        .find_login(b.id, "ada@example.com")
        .await
        .unwrap()
        .is_none());

    // A user without a password has empty credentials, whether created with or without.
    let plain = user(s, a.id, "plain@example.com", "Plain").await;
    let nopw = s
        .create_user_with_password(
            a.id,
            new_user("nopw@example.com", "No Password"),
            None,
            actions::USER_CREATE,
            &ctx(),
        )
        .await
        .unwrap();
    for u in [&plain, &nopw] {
        assert_eq!(
            s.get_credentials(a.id, u.id).await.unwrap(),
            Credentials::empty(a.id, u.id)
        );
        let (found, c) = s.find_login(a.id, &u.email).await.unwrap().unwrap();
        assert_eq!(found.id, u.id);
        assert_eq!(c, Credentials::empty(a.id, u.id));
        assert!(s.password_history(a.id, u.id, 5).await.unwrap().is_empty());
        let evs = events_about(s, a.id, u.id.into_uuid()).await;
        assert_eq!(evs.len(), 1);
        assert_eq!(evs[0].action, actions::USER_CREATE);
    }

    // Deleted users cannot sign in and have no credentials.
    s.delete_user(a.id, ada.id, None, &ctx()).await.unwrap();
    assert!(s
        .find_login(a.id, "ada@example.com")
        .await
        .unwrap()
        .is_none());
    assert!(s.find_login(a.id, "ada.l").await.unwrap().is_none());
    assert_not_found(&err(s.get_credentials(a.id, ada.id).await), "user");
    // Nor does anyone unknown, or another tenant's user.
    assert_not_found(&err(s.get_credentials(a.id, UserId::new()).await), "user");
    assert_not_found(&err(s.get_credentials(b.id, plain.id).await), "user");
}

async fn case_create_user_with_password_keeps_user_rules(store: Rig) {
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
    let one = user_with_password(s, t.id, "one@tiny.test", "h-one").await;

    // Uniqueness: nothing of the refused user is stored.
    let e = err(s
        .create_user_with_password(
            t.id,
            new_user("ONE@tiny.test", "Dup"),
            Some(pw("h-dup", 5)),
            actions::USER_REGISTER,
            &ctx(),
        )
        .await);
    assert_conflict(&e, "email_taken");
    let (found, c) = s.find_login(t.id, "one@tiny.test").await.unwrap().unwrap();
    assert_eq!(found.id, one.id);
    assert_eq!(c.password_hash.as_deref(), Some("h-one"));
    assert_eq!(
        s.password_history(t.id, one.id, 10).await.unwrap(),
        vec!["h-one".to_owned()]
    );
    assert!(events_with(s, t.id, actions::USER_REGISTER)
        .await
        .is_empty());

    // The manager must be a live user of the tenant.
    let e = err(s
        .create_user_with_password(
            t.id,
            NewUser {
                manager_id: Some(UserId::new()),
                ..new_user("two@tiny.test", "Two")
            },
            Some(pw("h-two", 5)),
            actions::USER_CREATE,
            &ctx(),
        )
        .await);
    match &e {
        Error::Validation(fields) => assert!(
            fields
                .iter()
                .any(|f| f.field == "manager_id" && f.code == "unknown_manager"),
            "{fields:?}"
        ),
        other => panic!("expected unknown_manager, got {other:?}"),
    }
    assert!(s.find_login(t.id, "two@tiny.test").await.unwrap().is_none());

    // The quota.
    user_with_password(s, t.id, "two@tiny.test", "h-two").await;
    let e = err(s
        .create_user_with_password(
            t.id,
            new_user("three@tiny.test", "Three"),
            Some(pw("h-three", 5)),
            actions::USER_REGISTER,
            &ctx(),
        )
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
    assert!(s
        .find_login(t.id, "three@tiny.test")
        .await
        .unwrap()
        .is_none());

    // An unknown tenant.
    assert_not_found(
        &err(s
            .create_user_with_password(
                TenantId::new(),
                new_user("x@tiny.test", "X"),
                Some(pw("h", 5)),
                actions::USER_CREATE,
                &ctx(),
            )
            .await),
        "tenant",
    );

    // `keep_history` 0 keeps no history, but the password is current.
    let t2 = tenant(s, "nohistory").await;
    let u = s
        .create_user_with_password(
            t2.id,
            new_user("u@nohistory.test", "U"),
            Some(pw("h-u", 0)),
            actions::USER_CREATE,
            &ctx(),
        )
        .await
        .unwrap();
    let c = s.get_credentials(t2.id, u.id).await.unwrap();
    assert_eq!(c.password_hash.as_deref(), Some("h-u"));
    assert!(s
        .password_history(t2.id, u.id, 10)
        .await
        .unwrap()
        .is_empty());
}

async fn case_set_password_history_and_revocation(store: Rig) {
    let s = &store;
    let t = tenant(s, "acme").await;
    let u = user_with_password(s, t.id, "u@acme.test", "h1").await;
    let other = user_with_password(s, t.id, "o@acme.test", "o1").await;
    let s1 = token_session(s, t.id, u.id, "r1").await;
    let s2 = token_session(s, t.id, u.id, "r2").await;
    let s3 = browser_session(s, t.id, u.id, "c3", "x3").await;
    let so = token_session(s, t.id, other.id, "ro").await;
    let first = s.get_credentials(t.id, u.id).await.unwrap();

    // Lock the account, then change the password: the lock goes.
    write_lock_state(s, t.id, u.id, locked_for(TimeDelta::minutes(15)))
        .await
        .unwrap();
    assert!(s
        .get_credentials(t.id, u.id)
        .await
        .unwrap()
        .is_locked(now()));

    let c = s
        .set_password(
            t.id,
            u.id,
            NewPassword {
                hash: "h2".into(),
                must_change: true,
                keep_history: 3,
            },
            Some(RevokeScope::AllExcept(s1.id)),
            actions::PASSWORD_CHANGE,
            &ctx(),
        )
        .await
        .unwrap();
    assert_eq!(c, s.get_credentials(t.id, u.id).await.unwrap());
    assert_eq!(c.password_hash.as_deref(), Some("h2"));
    assert!(c.must_change_password);
    assert!(c.password_changed_at.unwrap() >= first.password_changed_at.unwrap());
    assert_eq!(c.failed_count, 0);
    assert_eq!(c.failed_window_start, None);
    assert_eq!(c.locked_until, None);
    assert!(is_active(s, t.id, s1.id).await);
    for sid in [s2.id, s3.id] {
        assert_eq!(
            revoke_reason(s, t.id, sid).await.as_deref(),
            Some("password_change")
        );
    }
    assert!(is_active(s, t.id, so.id).await, "another user's session");
    assert_eq!(
        s.password_history(t.id, u.id, 10).await.unwrap(),
        vec!["h2".to_owned(), "h1".to_owned()]
    );

    // Exactly one event of the action, without any hash.
    let evs = events_with(s, t.id, actions::PASSWORD_CHANGE).await;
    assert_eq!(evs.len(), 1);
    assert_eq!(evs[0].entity_type, "user");
    assert_eq!(evs[0].entity_id, Some(u.id.into_uuid()));
    assert!(!contains_text(&evs[0].before, "h1") && !contains_text(&evs[0].after, "\"h2\""));

    // History is trimmed to `keep_history`, newest first.
    for h in ["h3", "h4"] {
        s.set_password(t.id, u.id, pw(h, 3), None, actions::PASSWORD_SET, &ctx())
            .await
            .unwrap();
    }
    assert_eq!(
        s.password_history(t.id, u.id, 10).await.unwrap(),
        vec!["h4".to_owned(), "h3".to_owned(), "h2".to_owned()]
    );
    assert_eq!(
        s.password_history(t.id, u.id, 2).await.unwrap(),
        vec!["h4".to_owned(), "h3".to_owned()]
    );
    let c = s.get_credentials(t.id, u.id).await.unwrap();
    assert!(!c.must_change_password);
    // Without a scope no session is revoked.
    assert!(is_active(s, t.id, s1.id).await);
    assert_eq!(events_with(s, t.id, actions::PASSWORD_SET).await.len(), 2);

    s.set_password(
        t.id,
        u.id,
        pw("h5", 1),
        None,
        actions::PASSWORD_RESET,
        &ctx(),
    )
    .await
    .unwrap();
    assert_eq!(
        s.password_history(t.id, u.id, 10).await.unwrap(),
        vec!["h5".to_owned()]
    );
    // The other user's history is their own.
    assert_eq!(
        s.password_history(t.id, other.id, 10).await.unwrap(),
        vec!["o1".to_owned()]
    );

    // `One` revokes that session only; `All` every session.
    let s4 = token_session(s, t.id, u.id, "r4").await;
    s.set_password(
        t.id,
        u.id,
        pw("h6", 5),
        Some(RevokeScope::One(s4.id)),
        actions::PASSWORD_RESET,
        &ctx(),
    )
    .await
    .unwrap();
    assert_eq!(
        revoke_reason(s, t.id, s4.id).await.as_deref(),
        Some("password_change")
    );
    assert!(is_active(s, t.id, s1.id).await);
    // `One` naming another user's session leaves it alone.
    s.set_password(
        t.id,
        u.id,
        pw("h7", 5),
        Some(RevokeScope::One(so.id)),
        actions::PASSWORD_RESET,
        &ctx(),
    )
    .await
    .unwrap();
    assert!(is_active(s, t.id, so.id).await);
    s.set_password(
        t.id,
        u.id,
        pw("h8", 5),
        Some(RevokeScope::All),
        actions::PASSWORD_RESET,
        &ctx(),
    )
    .await
    .unwrap();
    assert!(s.list_sessions(t.id, u.id, now()).await.unwrap().is_empty());
    assert!(is_active(s, t.id, so.id).await);
    assert_eq!(events_with(s, t.id, actions::PASSWORD_RESET).await.len(), 4);

    // Unknown and deleted users.
    assert_not_found(
        &err(s
            .set_password(
                t.id,
                UserId::new(),
                pw("x", 5),
                None,
                actions::PASSWORD_SET,
                &ctx(),
            )
            .await),
        "user",
    );
    s.delete_user(t.id, other.id, None, &ctx()).await.unwrap();
    assert_not_found(
        &err(s
            .set_password(
                t.id,
                other.id,
                pw("x", 5),
                None,
                actions::PASSWORD_SET,
                &ctx(),
            )
            .await),
        "user",
    );
}

async fn case_rehash_only_when_old_hash_matches(store: Rig) {
    let s = &store;
    let t = tenant(s, "acme").await;
    let b = tenant(s, "globex").await;
    let u = user_with_password(s, t.id, "u@acme.test", "$bcrypt$old").await;
    let events_before = events(s, t.id, &AuditQuery::default()).await.len();

    assert!(s
        .rehash_password(t.id, u.id, "$bcrypt$old", "$argon2id$new")
        .await
        .unwrap());
    let c = s.get_credentials(t.id, u.id).await.unwrap();
    assert_eq!(c.password_hash.as_deref(), Some("$argon2id$new"));
    assert_eq!(
        s.password_history(t.id, u.id, 5).await.unwrap(),
        vec!["$argon2id$new".to_owned()]
    );

    // A stale old hash (a concurrent change won) changes nothing.
    assert!(!s
        .rehash_password(t.id, u.id, "$bcrypt$old", "$argon2id$other")
        .await
        .unwrap());
    assert_eq!(
        s.get_credentials(t.id, u.id)
            .await
            .unwrap()
            .password_hash
            .as_deref(),
        Some("$argon2id$new")
    );
    // Nor can another tenant rehash it, or anyone rehash a user without a password.
    assert!(!s
        .rehash_password(b.id, u.id, "$argon2id$new", "$argon2id$evil")
        .await
        .unwrap());
    let plain = user(s, t.id, "p@acme.test", "Plain").await;
    assert!(!s
        .rehash_password(t.id, plain.id, "", "$argon2id$x")
        .await
        .unwrap());
    assert_eq!(
        s.get_credentials(t.id, plain.id).await.unwrap(),
        Credentials::empty(t.id, plain.id)
    );
    assert_eq!(
        s.get_credentials(t.id, u.id)
            .await
            .unwrap()
            .password_hash
            .as_deref(),
        Some("$argon2id$new")
    );

    // Not audited: only the creation of `plain` was added.
    assert_eq!(
        events(s, t.id, &AuditQuery::default()).await.len(),
        events_before + 1
    );
}

/// Writes a sign-in's counters through the transaction primitives, as the services do;
/// returns the credentials as they were.
async fn write_lock_state(
    s: &Rig,
    tenant: TenantId,
    user: UserId,
    state: LockTransition,
) -> domain::Result<Credentials> {
    let mut tx = s.begin().await?;
    let before = tx.credentials_for_update(tenant, user).await?;
    tx.put_lock_state(tenant, user, &state).await?;
    tx.commit().await?;
    Ok(before)
}

fn locked_for(duration: TimeDelta) -> LockTransition {
    LockTransition {
        failed_count: 0,
        failed_window_start: None,
        locked_until: Some(now() + duration),
        locked: true,
        unlocked: false,
    }
}

/// The counters and the lock round-trip through `credentials_for_update` and
/// `put_lock_state` (the rules that move them are the services'); nothing else of the
/// credentials changes, and unknown or deleted users are not found.
async fn case_lock_state_round_trips(store: Rig) {
    let s = &store;
    let t = tenant(s, "acme").await;
    let u = user_with_password(s, t.id, "u@acme.test", "h").await;
    let start = now();
    let counted = LockTransition {
        failed_count: 3,
        failed_window_start: Some(start),
        locked_until: None,
        locked: false,
        unlocked: false,
    };
    let before = write_lock_state(s, t.id, u.id, counted).await.unwrap();
    assert_eq!(before.failed_count, 0);
    let c = s.get_credentials(t.id, u.id).await.unwrap();
    assert_eq!(c.failed_count, 3);
    assert_eq!(c.failed_window_start, Some(start));
    assert_eq!(c.password_hash.as_deref(), Some("h"));
    let lock = locked_for(TimeDelta::minutes(15));
    let before = write_lock_state(s, t.id, u.id, lock).await.unwrap();
    assert_eq!(before.failed_count, 3);
    let c = s.get_credentials(t.id, u.id).await.unwrap();
    assert_eq!(c.locked_until, lock.locked_until);
    assert_eq!(c.failed_count, 0);
    assert!(c.is_locked(now()));
    // A session clears the counters and the lock.
    token_session(s, t.id, u.id, "r").await;
    let c = s.get_credentials(t.id, u.id).await.unwrap();
    assert_eq!((c.failed_count, c.locked_until), (0, None));

    // A user without a credentials row has one to count on.
    let plain = user(s, t.id, "p@acme.test", "Plain").await;
    write_lock_state(s, t.id, plain.id, counted).await.unwrap();
    let c = s.get_credentials(t.id, plain.id).await.unwrap();
    assert_eq!(c.failed_count, 3);
    assert_eq!(c.password_hash, None);

    // Unknown, deleted and foreign users.
    let other = tenant(s, "globex").await;
    assert_not_found(
        &err(write_lock_state(s, t.id, UserId::new(), counted).await),
        "user",
    );
    assert_not_found(
        &err(write_lock_state(s, other.id, u.id, counted).await),
        "user",
    );
    s.delete_user(t.id, plain.id, None, &ctx()).await.unwrap();
    assert_not_found(
        &err(write_lock_state(s, t.id, plain.id, counted).await),
        "user",
    );
}

async fn case_mark_email_verified(store: Rig) {
    let s = &store;
    let t = tenant(s, "acme").await;
    let u = user_with_password(s, t.id, "Ada@Example.com", "h").await;
    let plain = user(s, t.id, "plain@example.com", "Plain").await;

    assert!(!s
        .mark_email_verified(t.id, u.id, "someone@else.com", &ctx())
        .await
        .unwrap());
    assert_eq!(
        s.get_credentials(t.id, u.id)
            .await
            .unwrap()
            .email_verified_at,
        None
    );
    assert!(events_with(s, t.id, actions::USER_EMAIL_VERIFY)
        .await
        .is_empty());

    let before = now();
    assert!(s
        .mark_email_verified(t.id, u.id, "ada@EXAMPLE.com", &ctx())
        .await
        .unwrap());
    let at = s
        .get_credentials(t.id, u.id)
        .await
        .unwrap()
        .email_verified_at
        .unwrap();
    assert!(at >= before && at <= now());
    let evs = events_with(s, t.id, actions::USER_EMAIL_VERIFY).await;
    assert_eq!(evs.len(), 1);
    assert_eq!(evs[0].entity_id, Some(u.id.into_uuid()));
    // The password is untouched.
    assert_eq!(
        s.get_credentials(t.id, u.id)
            .await
            .unwrap()
            .password_hash
            .as_deref(),
        Some("h")
    );

    // Again: still verified, from the first time, no second event.
    assert!(s
        .mark_email_verified(t.id, u.id, "Ada@Example.com", &ctx())
        .await
        .unwrap());
    assert_eq!(
        s.get_credentials(t.id, u.id)
            .await
            .unwrap()
            .email_verified_at,
        Some(at)
    );
    assert_eq!(
        events_with(s, t.id, actions::USER_EMAIL_VERIFY).await.len(),
        1
    );

    // A user without a credentials row.
    assert!(s
        .mark_email_verified(t.id, plain.id, "plain@example.com", &ctx())
        .await
        .unwrap());
    let c = s.get_credentials(t.id, plain.id).await.unwrap();
    assert!(c.email_verified_at.is_some());
    assert_eq!(c.password_hash, None);

    // The email changed since the link was sent.
    let changed = s
        .update_user(
            t.id,
            plain.id,
            UserPatch {
                email: Some(Email::parse("email", "new@example.com").unwrap()),
                ..Default::default()
            },
            None,
            &ctx(),
        )
        .await
        .unwrap();
    assert!(!s
        .mark_email_verified(t.id, changed.id, "plain@example.com", &ctx())
        .await
        .unwrap());

    assert_not_found(
        &err(s
            .mark_email_verified(t.id, UserId::new(), "x@example.com", &ctx())
            .await),
        "user",
    );
}

async fn case_create_session_resets_counters_and_sets_last_login(store: Rig) {
    let s = &store;
    let t = tenant(s, "acme").await;
    let b = tenant(s, "globex").await;
    let u = user_with_password(s, t.id, "u@acme.test", "h").await;
    let counted = LockTransition {
        failed_count: 3,
        failed_window_start: Some(now()),
        locked_until: None,
        locked: false,
        unlocked: false,
    };
    write_lock_state(s, t.id, u.id, counted).await.unwrap();
    assert_eq!(s.get_credentials(t.id, u.id).await.unwrap().failed_count, 3);

    let before = now();
    let mut sess = session_at(t.id, u.id, SessionKind::Token, now());
    sess.amr = vec!["pwd".into(), "otp".into(), "mfa".into()];
    sess.mfa_level = 2;
    sess.device_label = None;
    let created = s
        .create_session(
            NewSession {
                session: sess.clone(),
                refresh_hash: Some(KeyHash::of("refresh-1")),
                cookie_hash: None,
                csrf_hash: None,
            },
            &ctx(),
        )
        .await
        .unwrap();
    let after = now();
    assert_eq!(created, sess);
    assert_eq!(s.get_session(t.id, sess.id).await.unwrap(), sess);

    let c = s.get_credentials(t.id, u.id).await.unwrap();
    assert_eq!(c.failed_count, 0);
    assert_eq!(c.failed_window_start, None);
    assert_eq!(c.locked_until, None);
    assert_eq!(c.password_hash.as_deref(), Some("h"));

    // The last sign-in is recorded without making a new version of the user.
    let reread = s.get_user(t.id, u.id).await.unwrap();
    let last = reread.last_login_at.unwrap();
    assert!(before <= last && last <= after, "{last}");
    assert_eq!(reread.version, u.version);
    assert_eq!(reread.updated_at, u.updated_at);

    let logins = events_with(s, t.id, actions::AUTH_LOGIN).await;
    assert_eq!(logins.len(), 1);
    assert_eq!(logins[0].entity_type, "session");
    assert_eq!(logins[0].entity_id, Some(sess.id.into_uuid()));
    let after_json = logins[0].after.clone().unwrap();
    assert_eq!(after_json["amr"], json!(["pwd", "otp", "mfa"]));
    assert_eq!(after_json["kind"], json!("token"));
    // No lock was cleared.
    assert!(events_with(s, t.id, actions::USER_UNLOCK).await.is_empty());

    // Not for unknown users, deleted users or another tenant's users.
    let ghost = session_at(t.id, UserId::new(), SessionKind::Token, now());
    assert_not_found(
        &err(s
            .create_session(
                NewSession {
                    session: ghost,
                    refresh_hash: None,
                    cookie_hash: None,
                    csrf_hash: None,
                },
                &ctx(),
            )
            .await),
        "user",
    );
    let cross = session_at(b.id, u.id, SessionKind::Token, now());
    assert_not_found(
        &err(s
            .create_session(
                NewSession {
                    session: cross.clone(),
                    refresh_hash: None,
                    cookie_hash: None,
                    csrf_hash: None,
                },
                &ctx(),
            )
            .await),
        "user",
    );
    assert_not_found(&err(s.get_session(b.id, cross.id).await), "session");
    assert_not_found(&err(s.get_session(b.id, sess.id).await), "session");
    assert_not_found(&err(s.get_session(t.id, SessionId::new()).await), "session");
}

async fn case_refresh_rotation(store: Rig) {
    let s = &store;
    let t = tenant(s, "acme").await;
    let u = user_with_password(s, t.id, "u@acme.test", "h").await;
    let sess = token_session(s, t.id, u.id, "r1").await;
    let t1 = sess.created_at + TimeDelta::seconds(60);

    let client = AuditContext {
        ip: Some("192.0.2.9".into()),
        user_agent: Some("App/2.0".into()),
        ..ctx()
    };
    let rotated = match s
        .rotate_refresh_token(&KeyHash::of("r1"), &KeyHash::of("r2"), t1, &client)
        .await
        .unwrap()
    {
        RefreshOutcome::Rotated(r) => r,
        other => panic!("expected Rotated, got {other:?}"),
    };
    assert_eq!(rotated.id, sess.id);
    assert_eq!(rotated.last_seen_at, t1);
    assert_eq!(rotated.ip.as_deref(), Some("192.0.2.9"));
    assert_eq!(rotated.user_agent.as_deref(), Some("App/2.0"));
    assert_eq!(rotated.created_at, sess.created_at);
    assert_eq!(rotated.expires_at, sess.expires_at);
    assert_eq!(s.get_session(t.id, sess.id).await.unwrap(), rotated);

    // Without client details the stored ones stay.
    let t2 = t1 + TimeDelta::seconds(60);
    let rotated = match s
        .rotate_refresh_token(&KeyHash::of("r2"), &KeyHash::of("r3"), t2, &bare_ctx())
        .await
        .unwrap()
    {
        RefreshOutcome::Rotated(r) => r,
        other => panic!("expected Rotated, got {other:?}"),
    };
    assert_eq!(rotated.last_seen_at, t2);
    assert_eq!(rotated.ip.as_deref(), Some("192.0.2.9"));
    assert_eq!(rotated.user_agent.as_deref(), Some("App/2.0"));

    // Presenting a used token revokes the whole session.
    let reused = match s
        .rotate_refresh_token(&KeyHash::of("r1"), &KeyHash::of("r4"), t2, &ctx())
        .await
        .unwrap()
    {
        RefreshOutcome::Reused(r) => r,
        other => panic!("expected Reused, got {other:?}"),
    };
    assert_eq!(reused.id, sess.id);
    assert!(reused.revoked_at.is_some());
    assert_eq!(reused.revoke_reason.as_deref(), Some("refresh_token_reuse"));
    assert_eq!(s.get_session(t.id, sess.id).await.unwrap(), reused);
    let revokes = events_with(s, t.id, actions::SESSION_REVOKE).await;
    assert_eq!(revokes.len(), 1);
    assert_eq!(revokes[0].entity_type, "session");
    assert_eq!(revokes[0].entity_id, Some(sess.id.into_uuid()));
    assert_eq!(
        revokes[0].after,
        Some(json!({"reason": "refresh_token_reuse"}))
    );

    // The current token of a revoked session is invalid; the token offered with the reuse
    // was never stored; unknown tokens are invalid.
    for presented in ["r3", "r4", "never-issued"] {
        assert_eq!(
            s.rotate_refresh_token(&KeyHash::of(presented), &KeyHash::of("r5"), t2, &ctx())
                .await
                .unwrap(),
            RefreshOutcome::Invalid,
            "{presented}"
        );
    }
    // A used token of a revoked session is still a reuse; the revocation stays as it was.
    match s
        .rotate_refresh_token(&KeyHash::of("r2"), &KeyHash::of("r6"), t2, &ctx())
        .await
        .unwrap()
    {
        RefreshOutcome::Reused(r) => assert_eq!(r, reused),
        other => panic!("expected Reused, got {other:?}"),
    }
    assert_eq!(events_with(s, t.id, actions::SESSION_REVOKE).await.len(), 1);

    // An expired session's token is invalid.
    let short = token_session(s, t.id, u.id, "short-1").await;
    let late = short.expires_at + TimeDelta::seconds(1);
    assert_eq!(
        s.rotate_refresh_token(
            &KeyHash::of("short-1"),
            &KeyHash::of("short-2"),
            late,
            &ctx()
        )
        .await
        .unwrap(),
        RefreshOutcome::Invalid
    );
    // …and still current while it lasts.
    assert!(matches!(
        s.rotate_refresh_token(
            &KeyHash::of("short-1"),
            &KeyHash::of("short-2"),
            short.created_at + TimeDelta::seconds(1),
            &ctx()
        )
        .await
        .unwrap(),
        RefreshOutcome::Rotated(_)
    ));
    // A browser session has no refresh token.
    let br = browser_session(s, t.id, u.id, "cookie", "csrf").await;
    assert_eq!(
        s.rotate_refresh_token(&KeyHash::of("cookie"), &KeyHash::of("x"), now(), &ctx())
            .await
            .unwrap(),
        RefreshOutcome::Invalid
    );
    assert!(is_active(s, t.id, br.id).await);
}

async fn case_concurrent_rotation_rotates_once(store: Rig) {
    let t = tenant(&store, "acme").await;
    let u = user_with_password(&store, t.id, "u@acme.test", "h").await;
    for round in 0..8 {
        let first = format!("race-{round}");
        let sess = token_session(&store, t.id, u.id, &first).await;
        let tasks: Vec<_> = (0..2)
            .map(|i| {
                let store = store.clone();
                let presented = KeyHash::of(&first);
                let next = KeyHash::of(&format!("race-{round}-next-{i}"));
                tokio::spawn(async move {
                    store
                        .rotate_refresh_token(&presented, &next, now(), &ctx())
                        .await
                        .unwrap()
                })
            })
            .collect();
        let mut rotated = 0;
        let mut reused = 0;
        for task in tasks {
            match task.await.unwrap() {
                RefreshOutcome::Rotated(_) => rotated += 1,
                RefreshOutcome::Reused(r) => {
                    assert!(r.revoked_at.is_some());
                    reused += 1;
                }
                RefreshOutcome::Invalid => panic!("a presented current token is not invalid"),
            }
        }
        assert_eq!((rotated, reused), (1, 1), "round {round}");
        assert_eq!(
            revoke_reason(&store, t.id, sess.id).await.as_deref(),
            Some("refresh_token_reuse")
        );
    }
}

async fn case_browser_sessions(store: Rig) {
    let s = &store;
    let t = tenant(s, "acme").await;
    let u = user_with_password(s, t.id, "u@acme.test", "h").await;
    let br = browser_session(s, t.id, u.id, "cookie-1", "csrf-1").await;
    let tok = token_session(s, t.id, u.id, "refresh-1").await;

    let found = s
        .find_browser_session(&KeyHash::of("cookie-1"), now())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.session, br);
    assert_eq!(found.csrf_hash, KeyHash::of("csrf-1"));
    for wrong in ["cookie-2", "csrf-1", "refresh-1"] {
        assert!(
            s.find_browser_session(&KeyHash::of(wrong), now())
                .await
                .unwrap()
                .is_none(),
            "{wrong}"
        );
    }
    // Not once it expired.
    assert!(s
        .find_browser_session(&KeyHash::of("cookie-1"), br.expires_at)
        .await
        .unwrap()
        .is_none());

    // Touching moves `last_seen_at` only.
    let seen = br.created_at + TimeDelta::seconds(30);
    s.touch_session(t.id, br.id, seen).await.unwrap();
    let touched = s.get_session(t.id, br.id).await.unwrap();
    assert_eq!(
        touched,
        Session {
            last_seen_at: seen,
            ..br.clone()
        }
    );
    let found = s
        .find_browser_session(&KeyHash::of("cookie-1"), now())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.session.last_seen_at, seen);
    s.touch_session(t.id, tok.id, seen).await.unwrap();
    assert_eq!(
        s.get_session(t.id, tok.id).await.unwrap().last_seen_at,
        seen
    );
    assert_not_found(
        &err(s.touch_session(t.id, SessionId::new(), seen).await),
        "session",
    );

    // Not once revoked.
    s.revoke_sessions(t.id, u.id, RevokeScope::One(br.id), "logout", &ctx())
        .await
        .unwrap();
    assert!(s
        .find_browser_session(&KeyHash::of("cookie-1"), now())
        .await
        .unwrap()
        .is_none());
}

async fn case_list_and_revoke_sessions(store: Rig) {
    let s = &store;
    let t = tenant(s, "acme").await;
    let b = tenant(s, "globex").await;
    let u = user_with_password(s, t.id, "u@acme.test", "h").await;
    let v = user_with_password(s, t.id, "v@acme.test", "h").await;
    let s1 = token_session(s, t.id, u.id, "r1").await;
    let s2 = browser_session(s, t.id, u.id, "c2", "x2").await;
    let s3 = token_session(s, t.id, u.id, "r3").await;
    let sv = token_session(s, t.id, v.id, "rv").await;
    // An expired session is not listed.
    let old = session_at(t.id, u.id, SessionKind::Token, now() - TimeDelta::days(31));
    s.create_session(
        NewSession {
            session: old.clone(),
            refresh_hash: None,
            cookie_hash: None,
            csrf_hash: None,
        },
        &ctx(),
    )
    .await
    .unwrap();

    let ids = |list: Vec<Session>| list.into_iter().map(|x| x.id).collect::<Vec<_>>();
    assert_eq!(
        ids(s.list_sessions(t.id, u.id, now()).await.unwrap()),
        vec![s3.id, s2.id, s1.id]
    );
    assert_eq!(s.list_sessions(t.id, u.id, now()).await.unwrap()[1], s2);
    assert!(s
        .list_sessions(t.id, u.id, s1.expires_at + TimeDelta::days(1))
        .await
        .unwrap()
        .is_empty());

    // `One` must name an active session of this user.
    for other in [sv.id, SessionId::new(), old.id] {
        assert_not_found(
            &err(s
                .revoke_sessions(t.id, u.id, RevokeScope::One(other), "logout", &ctx())
                .await),
            "session",
        );
    }
    assert!(is_active(s, t.id, sv.id).await);
    assert_eq!(
        s.revoke_sessions(t.id, u.id, RevokeScope::One(s1.id), "logout", &ctx())
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        revoke_reason(s, t.id, s1.id).await.as_deref(),
        Some("logout")
    );
    assert_not_found(
        &err(s
            .revoke_sessions(t.id, u.id, RevokeScope::One(s1.id), "logout", &ctx())
            .await),
        "session",
    );
    assert_eq!(
        ids(s.list_sessions(t.id, u.id, now()).await.unwrap()),
        vec![s3.id, s2.id]
    );

    assert_eq!(
        s.revoke_sessions(t.id, u.id, RevokeScope::AllExcept(s3.id), "others", &ctx())
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        ids(s.list_sessions(t.id, u.id, now()).await.unwrap()),
        vec![s3.id]
    );
    assert_eq!(
        s.revoke_sessions(t.id, u.id, RevokeScope::All, "everything", &ctx())
            .await
            .unwrap(),
        1
    );
    assert!(s.list_sessions(t.id, u.id, now()).await.unwrap().is_empty());
    assert_eq!(
        s.revoke_sessions(t.id, u.id, RevokeScope::All, "everything", &ctx())
            .await
            .unwrap(),
        0
    );
    // The expired session was not revoked.
    assert_eq!(revoke_reason(s, t.id, old.id).await, None);
    // The other user's session lives on.
    assert_eq!(
        ids(s.list_sessions(t.id, v.id, now()).await.unwrap()),
        vec![sv.id]
    );

    // One event per revoked session, with the reason.
    let revokes = events_with(s, t.id, actions::SESSION_REVOKE).await;
    assert_eq!(revokes.len(), 3);
    let expect = [(s3.id, "everything"), (s2.id, "others"), (s1.id, "logout")];
    for (ev, (id, reason)) in revokes.iter().zip(expect) {
        assert_eq!(ev.entity_type, "session");
        assert_eq!(ev.entity_id, Some(id.into_uuid()));
        assert_eq!(ev.after, Some(json!({ "reason": reason })));
        assert_eq!(ev.tenant_id, t.id);
    }

    // Another tenant sees and revokes nothing.
    assert!(s.list_sessions(b.id, v.id, now()).await.unwrap().is_empty());
    assert_eq!(
        s.revoke_sessions(b.id, v.id, RevokeScope::All, "x", &ctx())
            .await
            .unwrap(),
        0
    );
    assert_not_found(
        &err(s
            .revoke_sessions(b.id, v.id, RevokeScope::One(sv.id), "x", &ctx())
            .await),
        "session",
    );
    assert!(is_active(s, t.id, sv.id).await);
}

async fn case_blocking_and_deleting_revoke_sessions(store: Rig) {
    let s = &store;
    let t = tenant(s, "acme").await;
    let bystander = user_with_password(s, t.id, "by@acme.test", "h").await;
    let sb = token_session(s, t.id, bystander.id, "rb").await;

    for (st, reason) in [
        (UserStatus::Blocked, "user_blocked"),
        (UserStatus::Suspended, "user_suspended"),
        (UserStatus::Inactive, "user_inactive"),
    ] {
        let u = user_with_password(s, t.id, &format!("{reason}@acme.test"), "h").await;
        let r = format!("{reason}-refresh");
        let s1 = token_session(s, t.id, u.id, &r).await;
        let s2 = browser_session(s, t.id, u.id, &format!("{reason}-cookie"), "x").await;
        // A change that keeps the status leaves the sessions alone.
        s.update_user(t.id, u.id, rename("Renamed"), None, &ctx())
            .await
            .unwrap();
        assert!(is_active(s, t.id, s1.id).await);

        s.update_user(t.id, u.id, status(st), None, &ctx())
            .await
            .unwrap();
        for sid in [s1.id, s2.id] {
            assert_eq!(revoke_reason(s, t.id, sid).await.as_deref(), Some(reason));
        }
        assert!(s.list_sessions(t.id, u.id, now()).await.unwrap().is_empty());
        assert_eq!(
            s.rotate_refresh_token(&KeyHash::of(&r), &KeyHash::of("n"), now(), &ctx())
                .await
                .unwrap(),
            RefreshOutcome::Invalid
        );
        assert!(s
            .find_browser_session(&KeyHash::of(&format!("{reason}-cookie")), now())
            .await
            .unwrap()
            .is_none());
        let evs: Vec<_> = events_with(s, t.id, actions::SESSION_REVOKE)
            .await
            .into_iter()
            .filter(|e| e.after == Some(json!({ "reason": reason })))
            .collect();
        assert_eq!(evs.len(), 2, "{reason}");
    }

    let u = user_with_password(s, t.id, "gone@acme.test", "h").await;
    let s1 = token_session(s, t.id, u.id, "gone-1").await;
    let s2 = token_session(s, t.id, u.id, "gone-2").await;
    s.revoke_sessions(t.id, u.id, RevokeScope::One(s2.id), "logout", &ctx())
        .await
        .unwrap();
    s.delete_user(t.id, u.id, None, &ctx()).await.unwrap();
    assert_eq!(
        revoke_reason(s, t.id, s1.id).await.as_deref(),
        Some("user_deleted")
    );
    // An already revoked session keeps its reason.
    assert_eq!(
        revoke_reason(s, t.id, s2.id).await.as_deref(),
        Some("logout")
    );
    let evs: Vec<_> = events_with(s, t.id, actions::SESSION_REVOKE)
        .await
        .into_iter()
        .filter(|e| e.after == Some(json!({"reason": "user_deleted"})))
        .collect();
    assert_eq!(evs.len(), 1);
    assert_eq!(evs[0].entity_id, Some(s1.id.into_uuid()));

    assert!(is_active(s, t.id, sb.id).await, "other users keep theirs");
}

async fn case_one_time_tokens(store: Rig) {
    let s = &store;
    let t = tenant(s, "acme").await;
    let u = user_with_password(s, t.id, "u@acme.test", "h").await;
    let v = user_with_password(s, t.id, "v@acme.test", "h").await;
    let t0 = now();
    let hour = TimeDelta::hours(1);

    let mut reset = ott(
        t.id,
        TokenPurpose::PasswordReset,
        Some(u.id),
        "reset-1",
        t0,
        hour,
    );
    reset.email = Some("u@acme.test".into());
    reset.data = json!({"next": "/account"});
    let ev = AuditEvent::record(
        &ctx(),
        t.id,
        actions::AUTH_PASSWORD_RESET_REQUEST,
        EntityRef::user(u.id),
        (None, None),
        t0,
    );
    s.create_one_time_token(&reset, std::slice::from_ref(&ev))
        .await
        .unwrap();
    assert_eq!(
        events_with(s, t.id, actions::AUTH_PASSWORD_RESET_REQUEST).await,
        vec![ev]
    );

    let h = KeyHash::of("reset-1");
    assert_eq!(
        s.peek_one_time_token(TokenPurpose::PasswordReset, &h, t0)
            .await
            .unwrap(),
        Some(reset.clone())
    );
    // Peeking does not consume; the purpose must match; expiry is exclusive.
    assert!(s
        .peek_one_time_token(TokenPurpose::PasswordReset, &h, t0)
        .await
        .unwrap()
        .is_some());
    assert!(s
        .peek_one_time_token(TokenPurpose::MagicLink, &h, t0)
        .await
        .unwrap()
        .is_none());
    assert!(s
        .consume_one_time_token(TokenPurpose::MagicLink, &h, t0)
        .await
        .unwrap()
        .is_none());
    assert!(s
        .peek_one_time_token(TokenPurpose::PasswordReset, &h, reset.expires_at)
        .await
        .unwrap()
        .is_none());

    // Consumed once.
    let used_at = t0 + TimeDelta::seconds(5);
    let consumed = s
        .consume_one_time_token(TokenPurpose::PasswordReset, &h, used_at)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        consumed,
        OneTimeToken {
            used_at: Some(used_at),
            ..reset.clone()
        }
    );
    assert!(s
        .consume_one_time_token(TokenPurpose::PasswordReset, &h, used_at)
        .await
        .unwrap()
        .is_none());
    assert!(s
        .peek_one_time_token(TokenPurpose::PasswordReset, &h, used_at)
        .await
        .unwrap()
        .is_none());

    // Never after it expires.
    let magic = ott(
        t.id,
        TokenPurpose::MagicLink,
        Some(u.id),
        "magic-1",
        t0,
        TimeDelta::minutes(15),
    );
    s.create_one_time_token(&magic, &[]).await.unwrap();
    assert!(s
        .consume_one_time_token(
            TokenPurpose::MagicLink,
            &KeyHash::of("magic-1"),
            magic.expires_at
        )
        .await
        .unwrap()
        .is_none());
    assert!(s
        .consume_one_time_token(
            TokenPurpose::MagicLink,
            &KeyHash::of("magic-1"),
            magic.expires_at - TimeDelta::microseconds(1)
        )
        .await
        .unwrap()
        .is_some());

    // A new token of a purpose invalidates the user's earlier unused ones of that purpose
    // only.
    let r2 = ott(
        t.id,
        TokenPurpose::PasswordReset,
        Some(u.id),
        "reset-2",
        t0,
        hour,
    );
    let m2 = ott(
        t.id,
        TokenPurpose::MagicLink,
        Some(u.id),
        "magic-2",
        t0,
        hour,
    );
    let rv = ott(
        t.id,
        TokenPurpose::PasswordReset,
        Some(v.id),
        "reset-v",
        t0,
        hour,
    );
    for tok in [&r2, &m2, &rv] {
        s.create_one_time_token(tok, &[]).await.unwrap();
    }
    let r3 = ott(
        t.id,
        TokenPurpose::PasswordReset,
        Some(u.id),
        "reset-3",
        t0,
        hour,
    );
    s.create_one_time_token(&r3, &[]).await.unwrap();
    let valid = |secret: &'static str, purpose: TokenPurpose| {
        let store = store.clone();
        async move {
            store
                .peek_one_time_token(purpose, &KeyHash::of(secret), t0)
                .await
                .unwrap()
                .is_some()
        }
    };
    assert!(!valid("reset-2", TokenPurpose::PasswordReset).await);
    assert!(valid("reset-3", TokenPurpose::PasswordReset).await);
    assert!(valid("magic-2", TokenPurpose::MagicLink).await);
    assert!(valid("reset-v", TokenPurpose::PasswordReset).await);
    assert!(s
        .consume_one_time_token(TokenPurpose::PasswordReset, &KeyHash::of("reset-2"), t0)
        .await
        .unwrap()
        .is_none());

    // A token for an address rather than a user (an invitation).
    let mut invite = ott(
        t.id,
        TokenPurpose::Invitation,
        None,
        "invite-1",
        t0,
        TimeDelta::days(7),
    );
    invite.email = Some("new@acme.test".into());
    invite.data = json!({"roles": ["member"], "invited_by": u.id});
    s.create_one_time_token(&invite, &[]).await.unwrap();
    let invite2 = OneTimeToken {
        hash: KeyHash::of("invite-2"),
        email: Some("other@acme.test".into()),
        ..invite.clone()
    };
    s.create_one_time_token(&invite2, &[]).await.unwrap();
    assert_eq!(
        s.peek_one_time_token(TokenPurpose::Invitation, &KeyHash::of("invite-1"), t0)
            .await
            .unwrap(),
        Some(invite.clone())
    );
    assert!(valid("invite-2", TokenPurpose::Invitation).await);
}

async fn case_one_time_token_attempts_and_concurrent_consume(store: Rig) {
    let s = &store;
    let t = tenant(s, "acme").await;
    let u = user_with_password(s, t.id, "u@acme.test", "h").await;
    let t0 = now();
    let mut mfa = ott(
        t.id,
        TokenPurpose::MfaChallenge,
        Some(u.id),
        "mfa-1",
        t0,
        TimeDelta::minutes(5),
    );
    mfa.data = json!({"amr": ["pwd"]});
    s.create_one_time_token(&mfa, &[]).await.unwrap();
    let h = KeyHash::of("mfa-1");

    let reserve = |purpose: TokenPurpose, hash: KeyHash| {
        let store = store.clone();
        async move {
            store
                .reserve_token_attempt(purpose, &hash, 3, t0)
                .await
                .unwrap()
        }
    };
    for n in 1..=2u32 {
        assert!(reserve(TokenPurpose::MfaChallenge, h.clone()).await);
        let seen = s
            .peek_one_time_token(TokenPurpose::MfaChallenge, &h, t0)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(seen.attempts, n);
        assert_eq!(seen.used_at, None);
    }
    // Another purpose does not count.
    assert!(!reserve(TokenPurpose::MagicLink, h.clone()).await);
    assert_eq!(
        s.peek_one_time_token(TokenPurpose::MfaChallenge, &h, t0)
            .await
            .unwrap()
            .unwrap()
            .attempts,
        2
    );
    // The third attempt is the last one: the token can still be consumed by it, but no
    // fourth attempt is given.
    assert!(reserve(TokenPurpose::MfaChallenge, h.clone()).await);
    assert!(!reserve(TokenPurpose::MfaChallenge, h.clone()).await);
    // An unknown token gives no attempt.
    assert!(!reserve(TokenPurpose::MfaChallenge, KeyHash::of("nope")).await);
    // Consumed, a token gives no more attempts.
    assert!(s
        .consume_one_time_token(TokenPurpose::MfaChallenge, &h, t0)
        .await
        .unwrap()
        .is_some());
    assert!(!reserve(TokenPurpose::MfaChallenge, h.clone()).await);
    // Parallel attempts at a fresh token take exactly `max_attempts`.
    let fresh = ott(
        t.id,
        TokenPurpose::MfaChallenge,
        Some(u.id),
        "mfa-2",
        t0,
        TimeDelta::minutes(5),
    );
    s.create_one_time_token(&fresh, &[]).await.unwrap();
    let tasks: Vec<_> = (0..20)
        .map(|_| tokio::spawn(reserve(TokenPurpose::MfaChallenge, KeyHash::of("mfa-2"))))
        .collect();
    let mut taken = 0;
    for task in tasks {
        if task.await.unwrap() {
            taken += 1;
        }
    }
    assert_eq!(taken, 3);

    // Of concurrent consumptions exactly one succeeds.
    for round in 0..8 {
        let secret = format!("race-{round}");
        let tok = ott(
            t.id,
            TokenPurpose::MagicLink,
            Some(u.id),
            &secret,
            t0,
            TimeDelta::minutes(5),
        );
        store.create_one_time_token(&tok, &[]).await.unwrap();
        let tasks: Vec<_> = (0..2)
            .map(|_| {
                let store = store.clone();
                let h = KeyHash::of(&secret);
                tokio::spawn(async move {
                    store
                        .consume_one_time_token(TokenPurpose::MagicLink, &h, t0)
                        .await
                        .unwrap()
                })
            })
            .collect();
        let mut wins = 0;
        for task in tasks {
            if task.await.unwrap().is_some() {
                wins += 1;
            }
        }
        assert_eq!(wins, 1, "round {round}");
    }
}

async fn case_totp_and_recovery_codes(store: Rig) {
    let s = &store;
    let t = tenant(s, "acme").await;
    let b = tenant(s, "globex").await;
    let u = user_with_password(s, t.id, "u@acme.test", "h").await;
    let codes = |names: &[&str]| names.iter().map(|n| KeyHash::of(n)).collect::<Vec<_>>();

    assert_eq!(s.get_totp(t.id, u.id).await.unwrap(), None);
    assert_eq!(s.count_recovery_codes(t.id, u.id).await.unwrap(), 0);
    assert_conflict(
        &err(s.confirm_totp(t.id, u.id, 1, &codes(&["a"]), &ctx()).await),
        "totp_not_pending",
    );
    assert_conflict(
        &err(s
            .replace_recovery_codes(t.id, u.id, &codes(&["a"]), &ctx())
            .await),
        "totp_not_enrolled",
    );
    assert_not_found(&err(s.delete_totp(t.id, u.id, &ctx()).await), "totp");

    // A pending enrolment, restartable, not yet enabled.
    s.put_pending_totp(t.id, u.id, b"secret-one".to_vec(), &ctx())
        .await
        .unwrap();
    s.put_pending_totp(t.id, u.id, b"secret-two".to_vec(), &ctx())
        .await
        .unwrap();
    let pending = s.get_totp(t.id, u.id).await.unwrap().unwrap();
    assert_eq!(pending.tenant_id, t.id);
    assert_eq!(pending.user_id, u.id);
    assert_eq!(pending.secret_ciphertext, b"secret-two".to_vec());
    assert_eq!(pending.confirmed_at, None);
    assert!(!s.get_credentials(t.id, u.id).await.unwrap().totp_enabled);
    assert!(!s.use_totp_step(t.id, u.id, 1_000).await.unwrap());
    assert_conflict(
        &err(s
            .replace_recovery_codes(t.id, u.id, &codes(&["a"]), &ctx())
            .await),
        "totp_not_enrolled",
    );

    // Confirmed with the step of the first code.
    s.confirm_totp(t.id, u.id, 100, &codes(&["a", "b", "c"]), &ctx())
        .await
        .unwrap();
    let confirmed = s.get_totp(t.id, u.id).await.unwrap().unwrap();
    assert!(confirmed.confirmed_at.is_some());
    assert_eq!(confirmed.last_used_step, 100);
    assert_eq!(confirmed.secret_ciphertext, b"secret-two".to_vec());
    assert!(s.get_credentials(t.id, u.id).await.unwrap().totp_enabled);
    let (_, c) = s.find_login(t.id, "u@acme.test").await.unwrap().unwrap();
    assert!(c.totp_enabled);
    assert_eq!(s.count_recovery_codes(t.id, u.id).await.unwrap(), 3);
    assert_conflict(
        &err(s
            .confirm_totp(t.id, u.id, 101, &codes(&["z"]), &ctx())
            .await),
        "totp_not_pending",
    );
    assert_conflict(
        &err(s
            .put_pending_totp(t.id, u.id, b"secret-three".to_vec(), &ctx())
            .await),
        "totp_already_enrolled",
    );

    // Each step at most once, and only forwards.
    assert!(!s.use_totp_step(t.id, u.id, 100).await.unwrap());
    assert!(!s.use_totp_step(t.id, u.id, 99).await.unwrap());
    assert!(s.use_totp_step(t.id, u.id, 101).await.unwrap());
    assert!(!s.use_totp_step(t.id, u.id, 101).await.unwrap());
    assert!(s.use_totp_step(t.id, u.id, 105).await.unwrap());
    assert!(!s.use_totp_step(t.id, u.id, 103).await.unwrap());
    assert_eq!(
        s.get_totp(t.id, u.id)
            .await
            .unwrap()
            .unwrap()
            .last_used_step,
        105
    );

    // Recovery codes, each once.
    assert!(s
        .use_recovery_code(t.id, u.id, &KeyHash::of("a"), &ctx())
        .await
        .unwrap());
    assert!(!s
        .use_recovery_code(t.id, u.id, &KeyHash::of("a"), &ctx())
        .await
        .unwrap());
    assert!(!s
        .use_recovery_code(t.id, u.id, &KeyHash::of("zzz"), &ctx())
        .await
        .unwrap());
    assert_eq!(s.count_recovery_codes(t.id, u.id).await.unwrap(), 2);
    assert_eq!(
        events_with(s, t.id, actions::MFA_RECOVERY_CODE_USE)
            .await
            .len(),
        1
    );

    // Replaced: the old ones stop working.
    s.replace_recovery_codes(t.id, u.id, &codes(&["d", "e", "f", "g"]), &ctx())
        .await
        .unwrap();
    assert_eq!(s.count_recovery_codes(t.id, u.id).await.unwrap(), 4);
    assert!(!s
        .use_recovery_code(t.id, u.id, &KeyHash::of("b"), &ctx())
        .await
        .unwrap());
    assert!(s
        .use_recovery_code(t.id, u.id, &KeyHash::of("d"), &ctx())
        .await
        .unwrap());
    assert_eq!(s.count_recovery_codes(t.id, u.id).await.unwrap(), 3);

    // Another tenant reaches none of it.
    assert_eq!(s.get_totp(b.id, u.id).await.unwrap(), None);
    assert!(!s.use_totp_step(b.id, u.id, 10_000).await.unwrap());
    assert!(!s
        .use_recovery_code(b.id, u.id, &KeyHash::of("e"), &ctx())
        .await
        .unwrap());
    assert_eq!(s.count_recovery_codes(b.id, u.id).await.unwrap(), 0);
    assert_not_found(&err(s.delete_totp(b.id, u.id, &ctx()).await), "totp");
    assert_eq!(s.count_recovery_codes(t.id, u.id).await.unwrap(), 3);

    // Removed with its codes.
    s.delete_totp(t.id, u.id, &ctx()).await.unwrap();
    assert_eq!(s.get_totp(t.id, u.id).await.unwrap(), None);
    assert_eq!(s.count_recovery_codes(t.id, u.id).await.unwrap(), 0);
    assert!(!s.get_credentials(t.id, u.id).await.unwrap().totp_enabled);
    assert!(!s
        .use_recovery_code(t.id, u.id, &KeyHash::of("e"), &ctx())
        .await
        .unwrap());
    assert_not_found(&err(s.delete_totp(t.id, u.id, &ctx()).await), "totp");
    // A new enrolment can start.
    s.put_pending_totp(t.id, u.id, b"secret-four".to_vec(), &ctx())
        .await
        .unwrap();
    s.delete_totp(t.id, u.id, &ctx()).await.unwrap();

    // The trail, on the user, without secrets.
    for (action, n) in [
        (actions::MFA_TOTP_ENROL, 3),
        (actions::MFA_TOTP_CONFIRM, 1),
        (actions::MFA_RECOVERY_CODE_USE, 2),
        (actions::MFA_RECOVERY_CODES_REGENERATE, 1),
        (actions::MFA_TOTP_REMOVE, 2),
    ] {
        let evs = events_with(s, t.id, action).await;
        assert_eq!(evs.len(), n, "{action}");
        for ev in evs {
            assert_eq!(ev.entity_type, "user");
            assert_eq!(ev.entity_id, Some(u.id.into_uuid()));
            assert!(!contains_text(&ev.after, "secret-"), "{ev:?}");
            assert!(!contains_text(&ev.before, "secret-"), "{ev:?}");
        }
    }

    // Unknown users.
    assert_not_found(
        &err(s
            .put_pending_totp(t.id, UserId::new(), b"s".to_vec(), &ctx())
            .await),
        "user",
    );
    assert_not_found(
        &err(s.put_pending_totp(b.id, u.id, b"s".to_vec(), &ctx()).await),
        "user",
    );
}

async fn case_signing_keys(store: Rig) {
    let s = &store;
    // The services made the first key when they started.
    let started = s.list_signing_keys().await.unwrap();
    assert_eq!(started.len(), 1);
    let k0 = started[0].clone();
    assert_eq!(k0.retired_at, None);
    let base = k0.created_at + TimeDelta::hours(1);
    let at = |secs: i64| base + TimeDelta::seconds(secs);
    let key = |kid: &str, alg: &str, created: Timestamp| SigningKeyRecord {
        kid: kid.to_owned(),
        algorithm: alg.to_owned(),
        private_key_ciphertext: format!("cipher-{kid}").into_bytes(),
        public_jwk: json!({"kty": "OKP", "crv": "Ed25519", "kid": kid, "x": "abc"}),
        created_at: created,
        retired_at: None,
    };
    let k1 = key("k1", "EdDSA", at(0));
    s.add_signing_key(&k1, &[]).await.unwrap();
    let k0_retired = SigningKeyRecord {
        retired_at: Some(at(0)),
        ..k0.clone()
    };
    assert_eq!(
        s.list_signing_keys().await.unwrap(),
        vec![k1.clone(), k0_retired.clone()]
    );

    let k2 = key("k2", "ES256", at(100));
    s.add_signing_key(&k2, &[]).await.unwrap();
    let k1_retired = SigningKeyRecord {
        retired_at: Some(at(100)),
        ..k1.clone()
    };
    assert_eq!(
        s.list_signing_keys().await.unwrap(),
        vec![k2.clone(), k1_retired.clone(), k0_retired.clone()]
    );

    let k3 = key("k3", "EdDSA", at(200));
    s.add_signing_key(&k3, &[]).await.unwrap();
    // A key retires once: k1 keeps its first retirement.
    assert_eq!(
        s.list_signing_keys().await.unwrap(),
        vec![
            k3.clone(),
            SigningKeyRecord {
                retired_at: Some(at(200)),
                ..k2.clone()
            },
            k1_retired,
            k0_retired,
        ]
    );
    // A kid is unique.
    assert!(s
        .add_signing_key(&key("k3", "EdDSA", at(300)), &[])
        .await
        .is_err());
    assert_eq!(s.list_signing_keys().await.unwrap()[0], k3);
}

async fn case_append_audit_events(store: Rig) {
    let s = &store;
    let t = tenant(s, "acme").await;
    let t0 = now();
    let e1 = AuditEvent::record(
        &ctx(),
        t.id,
        actions::AUTH_LOGIN_FAILURE,
        EntityRef::none("user"),
        (
            None,
            Some(json!({"reason": "unknown_login", "login": "who@acme.test"})),
        ),
        t0,
    );
    let e2 = AuditEvent::record(
        &ctx(),
        t.id,
        actions::SESSION_REVOKE,
        EntityRef::session(SessionId::new()),
        (None, None),
        t0 + TimeDelta::seconds(1),
    );
    s.append_audit_events(&[e1.clone(), e2.clone()])
        .await
        .unwrap();
    s.append_audit_events(&[]).await.unwrap();
    assert_eq!(
        events_with(s, t.id, actions::AUTH_LOGIN_FAILURE).await,
        vec![e1]
    );
    assert_eq!(
        events_with(s, t.id, actions::SESSION_REVOKE).await,
        vec![e2]
    );
}

async fn case_auth_tenant_isolation(store: Rig) {
    let s = &store;
    let a = tenant(s, "acme").await;
    let b = tenant(s, "globex").await;
    let u = user_with_password(s, a.id, "shared@example.com", "ha").await;
    // B has a user with the same email, and its own state.
    let ub = user_with_password(s, b.id, "shared@example.com", "hb").await;
    let sa = token_session(s, a.id, u.id, "ra").await;
    let sb = token_session(s, b.id, ub.id, "rb").await;
    s.put_pending_totp(a.id, u.id, b"sa".to_vec(), &ctx())
        .await
        .unwrap();
    s.confirm_totp(a.id, u.id, 1, &[KeyHash::of("code")], &ctx())
        .await
        .unwrap();
    let creds_a = s.get_credentials(a.id, u.id).await.unwrap();

    // B's view of "shared@example.com" is B's own user.
    let (found, c) = s
        .find_login(b.id, "shared@example.com")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.id, ub.id);
    assert_eq!(c.password_hash.as_deref(), Some("hb"));
    assert!(!c.totp_enabled);

    // B names A's user or session: nothing found, nothing changed.
    assert_not_found(&err(s.get_credentials(b.id, u.id).await), "user");
    assert_not_found(
        &err(s
            .set_password(
                b.id,
                u.id,
                pw("evil", 5),
                Some(RevokeScope::All),
                actions::PASSWORD_SET,
                &ctx(),
            )
            .await),
        "user",
    );
    assert_not_found(
        &err(write_lock_state(s, b.id, u.id, locked_for(TimeDelta::minutes(1))).await),
        "user",
    );
    assert_not_found(
        &err(s
            .mark_email_verified(b.id, u.id, "shared@example.com", &ctx())
            .await),
        "user",
    );
    assert!(s.password_history(b.id, u.id, 10).await.unwrap().is_empty());
    assert!(!s.rehash_password(b.id, u.id, "ha", "evil").await.unwrap());
    assert_not_found(&err(s.get_session(b.id, sa.id).await), "session");
    assert!(s.list_sessions(b.id, u.id, now()).await.unwrap().is_empty());
    assert_not_found(
        &err(s
            .revoke_sessions(b.id, u.id, RevokeScope::One(sa.id), "x", &ctx())
            .await),
        "session",
    );
    assert_eq!(
        s.revoke_sessions(b.id, u.id, RevokeScope::All, "x", &ctx())
            .await
            .unwrap(),
        0
    );
    assert_not_found(&err(s.touch_session(b.id, sa.id, now()).await), "session");
    assert_eq!(s.get_totp(b.id, u.id).await.unwrap(), None);
    assert_eq!(s.count_recovery_codes(b.id, u.id).await.unwrap(), 0);
    assert!(!s.use_totp_step(b.id, u.id, 50).await.unwrap());

    // A is untouched.
    assert_eq!(s.get_credentials(a.id, u.id).await.unwrap(), creds_a);
    assert_eq!(
        s.password_history(a.id, u.id, 10).await.unwrap(),
        vec!["ha".to_owned()]
    );
    assert_eq!(s.get_session(a.id, sa.id).await.unwrap(), sa);
    assert_eq!(s.count_recovery_codes(a.id, u.id).await.unwrap(), 1);
    assert!(s.get_totp(a.id, u.id).await.unwrap().is_some());
    assert!(is_active(s, b.id, sb.id).await);

    // Every event of A concerns A; B's trail holds nothing of A's user or session.
    for ev in events(s, a.id, &AuditQuery::default()).await {
        assert_eq!(ev.tenant_id, a.id);
    }
    for ev in events(s, b.id, &AuditQuery::default()).await {
        assert_eq!(ev.tenant_id, b.id);
        assert_ne!(ev.entity_id, Some(u.id.into_uuid()), "{ev:?}");
        assert_ne!(ev.entity_id, Some(sa.id.into_uuid()), "{ev:?}");
    }

    // Lookups by a secret's hash return the row's own tenant.
    let found = match s
        .rotate_refresh_token(&KeyHash::of("rb"), &KeyHash::of("rb2"), now(), &ctx())
        .await
        .unwrap()
    {
        RefreshOutcome::Rotated(r) => r,
        other => panic!("expected Rotated, got {other:?}"),
    };
    assert_eq!(found.tenant_id, b.id);
    assert_eq!(found.user_id, ub.id);
}

async fn case_prune_removes_only_what_ended(store: Rig) {
    let s = &store;
    let t = tenant(s, "acme").await;
    let u = user_with_password(s, t.id, "u@acme.test", "h").await;
    let ended = token_session(s, t.id, u.id, "ended-1").await;
    let live = token_session(s, t.id, u.id, "live-1").await;
    s.revoke_sessions(t.id, u.id, RevokeScope::One(ended.id), "logout", &ctx())
        .await
        .unwrap();
    let at = now();
    let expired = ott(
        t.id,
        TokenPurpose::MagicLink,
        Some(u.id),
        "old-link",
        at - TimeDelta::hours(2),
        TimeDelta::minutes(15),
    );
    let valid = ott(
        t.id,
        TokenPurpose::PasswordReset,
        Some(u.id),
        "new-link",
        at,
        TimeDelta::minutes(15),
    );
    s.create_one_time_token(&expired, &[]).await.unwrap();
    s.create_one_time_token(&valid, &[]).await.unwrap();

    // Nothing ended before an hour ago: nothing goes.
    assert_eq!(
        s.prune_auth_records(at - TimeDelta::hours(3))
            .await
            .unwrap(),
        0
    );
    // The revoked session (with its refresh token) and the expired link go.
    let deleted = s
        .prune_auth_records(at + TimeDelta::seconds(1))
        .await
        .unwrap();
    assert_eq!(deleted, 3);
    assert!(matches!(
        s.get_session(t.id, ended.id).await,
        Err(Error::NotFound { .. })
    ));
    assert_eq!(
        s.rotate_refresh_token(&KeyHash::of("ended-1"), &KeyHash::of("x"), now(), &ctx())
            .await
            .unwrap(),
        RefreshOutcome::Invalid
    );
    // The live session and the valid link stay and work.
    assert!(s.get_session(t.id, live.id).await.unwrap().is_active(now()));
    assert!(matches!(
        s.rotate_refresh_token(
            &KeyHash::of("live-1"),
            &KeyHash::of("live-2"),
            now(),
            &ctx()
        )
        .await
        .unwrap(),
        RefreshOutcome::Rotated(_)
    ));
    assert!(s
        .peek_one_time_token(TokenPurpose::PasswordReset, &KeyHash::of("new-link"), now())
        .await
        .unwrap()
        .is_some());
}
