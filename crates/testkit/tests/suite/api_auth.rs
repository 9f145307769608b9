//! Authentication over HTTP, on SQLite and PostgreSQL: password sign-in, tokens and their
//! independent verification, refresh rotation and reuse detection, sessions, TOTP and
//! recovery codes, magic links, password reset, registration modes, invitations, imported
//! hashes, browser sessions with CSRF, and the attacks: wrong passwords, enumeration,
//! lockout, replayed codes, reused tokens and links, cross-tenant sign-in, saturation.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use base64::Engine;
use portcullis_testkit::{
    access, backend_tests, login, login_in, signed_in, spawn_app_with, test_config,
    user_with_password, Backend, TestApp, TestResponse,
};
use reqwest::Method;
use serde_json::{json, Value};

backend_tests!(
    password_login_tokens_and_me,
    tokens_verify_with_an_independent_jose_library,
    refresh_rotates_and_reuse_revokes_the_session,
    failures_do_not_reveal_accounts,
    cross_tenant_login_is_refused,
    totp_enrolment_login_replay_and_recovery_codes,
    magic_link_signs_in_once_and_reveals_nothing,
    password_reset_checks_policy_and_revokes_sessions,
    registration_modes_verification_and_invitations,
    sessions_listed_and_revoked_by_user_and_admin,
    blocking_or_deleting_a_user_ends_sessions,
    suspending_a_tenant_ends_its_sessions,
    must_change_password_is_honoured_at_login,
    imported_foreign_hashes_sign_in_and_are_rehashed,
    browser_session_cookie_needs_csrf,
    password_policy_and_history,
    profile_and_progressive_profiling,
    credentials_are_kept_to_their_endpoints,
    auth_settings_validated_and_audited,
);

const PW: &str = "vX9#mQ2!pLr7@tZk";
const PW2: &str = "Yh4$wN8^cBq1&eJs";
const PW3: &str = "Rf6*uT3%gDk9!mWa";

async fn public_post(app: &TestApp, path: &str, body: Value) -> TestResponse {
    app.send(Method::POST, path, None, Some(&body), &[]).await
}

/// The `token` parameter of the link in the last message to `to`.
fn link_token(app: &TestApp, to: &str) -> String {
    let link = app
        .mailer
        .last_link_to(to)
        .unwrap_or_else(|| panic!("no link mailed to {to}"));
    link.split("token=")
        .nth(1)
        .unwrap()
        .split('&')
        .next()
        .unwrap()
        .to_owned()
}

/// Waits for a background email (links are sent after the answer).
async fn wait_for_mail(app: &TestApp, to: &str, count: usize) {
    for _ in 0..100 {
        if app.mailer.messages().iter().filter(|m| m.to == to).count() >= count {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!(
        "expected {count} messages to {to}, got {:?}",
        app.mailer.messages()
    );
}

async fn audit_actions(app: &TestApp) -> Vec<String> {
    let res = app
        .get("/api/v1/audit-events?limit=200", &app.admin_key)
        .await;
    assert_eq!(res.status, 200, "{}", res.text);
    res.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap().to_owned())
        .collect()
}

async fn password_login_tokens_and_me(app: TestApp) {
    let user = user_with_password(&app, "Ada@Example.com", Some("ada"), PW).await;
    for name in ["ada@example.com", "ADA@example.COM", "ada", "Ada"] {
        let res = login(&app, name, PW).await;
        assert_eq!(res.status, 200, "{name}: {}", res.text);
        assert_eq!(res.body["token_type"], "Bearer");
        assert_eq!(res.body["expires_in"], 600);
        assert_eq!(res.body["mfa_required"], false);
        assert!(res.body["refresh_token"]
            .as_str()
            .unwrap()
            .starts_with("pcr_"));
    }
    let token = access(&login(&app, "ada", PW).await);
    let me = app.get("/api/v1/me", &token).await;
    assert_eq!(me.status, 200, "{}", me.text);
    assert_eq!(me.body["user"]["id"], user["id"]);
    assert_eq!(me.body["mfa_enabled"], false);
    // The login is recorded: last_login_at and the audit trail (with the client's UA).
    let u = app
        .get(
            &format!("/api/v1/users/{}", user["id"].as_str().unwrap()),
            &app.admin_key,
        )
        .await;
    assert!(u.body["last_login_at"].is_string(), "{}", u.text);
    let events = app
        .get("/api/v1/audit-events?action=auth.login", &app.admin_key)
        .await;
    let first = &events.body["items"][0];
    assert_eq!(first["actor_type"], "user");
    assert_eq!(first["user_agent"], "portcullis-testkit");
    assert!(first["ip"].is_string());
    // Logout ends the session; its token stops working at once on this API.
    let res = app
        .send(Method::POST, "/api/v1/auth/logout", Some(&token), None, &[])
        .await;
    assert_eq!(res.status, 204, "{}", res.text);
    app.get("/api/v1/me", &token)
        .await
        .assert_problem(401, "session_revoked");
    // Garbage tokens are clear 401s.
    app.get("/api/v1/me", "not.a.jwt")
        .await
        .assert_problem(401, "invalid_token");
    let mut forged = token.clone();
    forged.pop();
    app.get("/api/v1/me", &forged)
        .await
        .assert_problem(401, "invalid_token");
}

async fn tokens_verify_with_an_independent_jose_library(app: TestApp) {
    use jwt_simple::prelude::*;
    let user = user_with_password(&app, "jose@example.com", None, PW).await;
    let token = access(&login(&app, "jose@example.com", PW).await);
    let jwks = app
        .send(Method::GET, "/.well-known/jwks.json", None, None, &[])
        .await;
    assert_eq!(jwks.status, 200);
    let key = &jwks.body["keys"][0];
    assert_eq!(key["kty"], "OKP");
    assert_eq!(key["crv"], "Ed25519");
    assert_eq!(key["alg"], "EdDSA");
    let x = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(key["x"].as_str().unwrap())
        .unwrap();
    let public = Ed25519PublicKey::from_bytes(&x).unwrap();
    let tenant = user["tenant_id"].as_str().unwrap();
    let issuer = format!("http://localhost:8080/t/{tenant}");
    let opts = VerificationOptions {
        allowed_issuers: Some(HashSet::from_strings(&[&issuer])),
        allowed_audiences: Some(HashSet::from_strings(&["portcullis"])),
        ..Default::default()
    };
    let claims = public
        .verify_token::<serde_json::Map<String, Value>>(&token, Some(opts))
        .expect("verifies with jwt-simple");
    assert_eq!(claims.subject.as_deref(), user["id"].as_str());
    assert_eq!(claims.custom["tid"], json!(tenant));
    assert!(claims.custom["sid"].is_string());
    assert_eq!(claims.custom["amr"], json!(["pwd"]));
    assert!(claims.jwt_id.is_some());
    let exp = claims.expires_at.unwrap().as_secs();
    let iat = claims.issued_at.unwrap().as_secs();
    assert_eq!(exp - iat, 600);
    // The tenant's issuer publishes the same keys; an unknown tenant is a 404.
    let per_tenant = app
        .send(
            Method::GET,
            &format!("/t/{tenant}/.well-known/jwks.json"),
            None,
            None,
            &[],
        )
        .await;
    assert_eq!(per_tenant.body, jwks.body);
    app.send(
        Method::GET,
        &format!("/t/{}/.well-known/jwks.json", uuid::Uuid::now_v7()),
        None,
        None,
        &[],
    )
    .await
    .assert_problem(404, "not_found");
}

async fn refresh_rotates_and_reuse_revokes_the_session(app: TestApp) {
    user_with_password(&app, "rot@example.com", None, PW).await;
    let (_, r1) = signed_in(&app, "rot@example.com", PW).await;
    let res = public_post(&app, "/api/v1/auth/refresh", json!({"refresh_token": r1})).await;
    assert_eq!(res.status, 200, "{}", res.text);
    let a2 = res.body["access_token"].as_str().unwrap().to_owned();
    let r2 = res.body["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(r1, r2);
    assert_eq!(app.get("/api/v1/me", &a2).await.status, 200);
    // Presenting r1 again: reuse. The whole session is revoked, r2 included.
    public_post(&app, "/api/v1/auth/refresh", json!({"refresh_token": r1}))
        .await
        .assert_problem(401, "refresh_token_reused");
    public_post(&app, "/api/v1/auth/refresh", json!({"refresh_token": r2}))
        .await
        .assert_problem(401, "invalid_refresh_token");
    app.get("/api/v1/me", &a2)
        .await
        .assert_problem(401, "session_revoked");
    assert!(audit_actions(&app)
        .await
        .contains(&"session.revoke".to_owned()));
    // Unknown and malformed tokens.
    public_post(
        &app,
        "/api/v1/auth/refresh",
        json!({"refresh_token": "pcr_nope"}),
    )
    .await
    .assert_problem(401, "invalid_refresh_token");
    public_post(
        &app,
        "/api/v1/auth/refresh",
        json!({"refresh_token": "x".repeat(5000)}),
    )
    .await
    .assert_problem(401, "invalid_refresh_token");
    public_post(&app, "/api/v1/auth/refresh", json!({}))
        .await
        .assert_problem(422, "validation_failed");
    // Two concurrent presentations of one token: one wins, the other is a reuse.
    let (_, r) = signed_in(&app, "rot@example.com", PW).await;
    let (a, b) = tokio::join!(
        public_post(&app, "/api/v1/auth/refresh", json!({"refresh_token": r})),
        public_post(&app, "/api/v1/auth/refresh", json!({"refresh_token": r})),
    );
    let mut statuses = [a.status.as_u16(), b.status.as_u16()];
    statuses.sort();
    assert_eq!(statuses, [200, 401], "{} / {}", a.text, b.text);
}

async fn failures_do_not_reveal_accounts(app: TestApp) {
    user_with_password(&app, "known@example.com", None, PW).await;
    let wrong = login(&app, "known@example.com", "wrong-password-1").await;
    let unknown = login(&app, "nobody@example.com", PW).await;
    let no_tenant = login_in(&app, "no-such-tenant", "known@example.com", PW).await;
    for res in [&wrong, &unknown, &no_tenant] {
        res.assert_problem(401, "invalid_credentials");
    }
    assert_eq!(wrong.body, unknown.body);
    assert_eq!(wrong.body, no_tenant.body);
    let actions = audit_actions(&app).await;
    assert_eq!(
        actions
            .iter()
            .filter(|a| *a == "auth.login_failure")
            .count(),
        2,
        "{actions:?}"
    );
    // Magic-link and reset requests answer the same for both.
    for path in ["/api/v1/auth/magic-link", "/api/v1/auth/password-reset"] {
        let a = public_post(
            &app,
            path,
            json!({"tenant": "default", "email": "known@example.com"}),
        )
        .await;
        let b = public_post(
            &app,
            path,
            json!({"tenant": "default", "email": "nobody@example.com"}),
        )
        .await;
        assert_eq!(a.status, 202);
        assert_eq!((a.status, a.body.clone()), (b.status, b.body.clone()));
    }
    app.services.settle().await;
    assert_eq!(
        app.mailer
            .messages()
            .iter()
            .filter(|m| m.to == "known@example.com")
            .count(),
        2
    );
    assert!(app.mailer.last_to("nobody@example.com").is_none());
}

async fn cross_tenant_login_is_refused(app: TestApp) {
    let (_, key_b) = app.create_tenant("tenant-b", json!({})).await;
    user_with_password(&app, "same@example.com", None, PW).await;
    let res = app
        .post(
            "/api/v1/users",
            &key_b,
            &json!({"email": "same@example.com", "full_name": "B", "password": PW2}),
        )
        .await;
    assert_eq!(res.status, 201, "{}", res.text);
    login_in(&app, "tenant-b", "same@example.com", PW)
        .await
        .assert_problem(401, "invalid_credentials");
    login_in(&app, "default", "same@example.com", PW2)
        .await
        .assert_problem(401, "invalid_credentials");
    let token_b = access(&login_in(&app, "tenant-b", "same@example.com", PW2).await);
    let me = app.get("/api/v1/me", &token_b).await;
    assert_eq!(me.body["user"]["id"], res.body["id"]);
    // Tenant A's administrator cannot see or end tenant B's sessions.
    let b_id = res.body["id"].as_str().unwrap();
    app.get(&format!("/api/v1/users/{b_id}/sessions"), &app.admin_key)
        .await
        .assert_problem(404, "not_found");
    let sid = me.body["session_id"].as_str().unwrap();
    let a_user = app.get("/api/v1/users?q=same", &app.admin_key).await;
    let a_id = a_user.body["items"][0]["id"].as_str().unwrap();
    app.delete(
        &format!("/api/v1/users/{a_id}/sessions/{sid}"),
        &app.admin_key,
    )
    .await
    .assert_problem(404, "not_found");
    assert_eq!(app.get("/api/v1/me", &token_b).await.status, 200);
}

/// The secret of an `otpauth://` URI.
pub(crate) fn totp_secret(uri: &str) -> Vec<u8> {
    let b32 = uri
        .split("secret=")
        .nth(1)
        .unwrap()
        .split('&')
        .next()
        .unwrap();
    base32_decode(b32)
}

fn base32_decode(s: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut bits = 0u64;
    let mut n = 0;
    let mut out = Vec::new();
    for c in s.trim_end_matches('=').bytes() {
        let v = ALPHABET
            .iter()
            .position(|a| *a == c.to_ascii_uppercase())
            .unwrap() as u64;
        bits = (bits << 5) | v;
        n += 5;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
            bits &= (1 << n) - 1;
        }
    }
    out
}

pub(crate) fn step_now() -> i64 {
    chrono::Utc::now().timestamp() / 30
}

async fn totp_enrolment_login_replay_and_recovery_codes(app: TestApp) {
    use portcullis_auth::totp::code_at;
    user_with_password(&app, "mfa@example.com", None, PW).await;
    let token = access(&login(&app, "mfa@example.com", PW).await);
    let res = app.post("/api/v1/me/mfa/totp", &token, &json!({})).await;
    assert_eq!(res.status, 200, "{}", res.text);
    let uri = res.body["otpauth_uri"].as_str().unwrap().to_owned();
    assert!(uri.starts_with("otpauth://totp/"), "{uri}");
    assert!(res.body["qr_svg"].as_str().unwrap().contains("<svg"));
    let secret = totp_secret(&uri);
    // A wrong first code does not confirm.
    let bad = app
        .post(
            "/api/v1/me/mfa/totp/confirm",
            &token,
            &json!({"code": "000000"}),
        )
        .await;
    if code_at(&secret, step_now()) != "000000" {
        bad.assert_problem(422, "validation_failed");
    }
    let step = step_now();
    let res = app
        .post(
            "/api/v1/me/mfa/totp/confirm",
            &token,
            &json!({"code": code_at(&secret, step)}),
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.text);
    let codes: Vec<String> = serde_json::from_value(res.body["recovery_codes"].clone()).unwrap();
    assert_eq!(codes.len(), 10);
    // A second enrolment is refused while one is confirmed.
    app.post("/api/v1/me/mfa/totp", &token, &json!({}))
        .await
        .assert_problem(409, "totp_already_enrolled");

    // Password alone now yields a challenge, not tokens.
    let challenge = login(&app, "mfa@example.com", PW).await;
    assert_eq!(challenge.body["mfa_required"], true, "{}", challenge.text);
    assert!(challenge.body["access_token"].is_null());
    let mfa_token = challenge.body["mfa_token"].as_str().unwrap().to_owned();
    // The confirmation's code (same step) is a replay.
    public_post(
        &app,
        "/api/v1/auth/mfa",
        json!({"mfa_token": mfa_token, "code": code_at(&secret, step)}),
    )
    .await
    .assert_problem(400, "invalid_mfa_code");
    // The next step's code is accepted (±1 step window), once.
    let next = code_at(&secret, step + 1);
    let res = public_post(
        &app,
        "/api/v1/auth/mfa",
        json!({"mfa_token": mfa_token, "code": next}),
    )
    .await;
    let mfa_access = access(&res);
    let me = app.get("/api/v1/me", &mfa_access).await;
    assert_eq!(me.body["mfa_enabled"], true);
    assert_eq!(me.body["recovery_codes_left"], 10, "{}", me.text);
    // The MFA token is spent.
    public_post(
        &app,
        "/api/v1/auth/mfa",
        json!({"mfa_token": mfa_token, "code": next}),
    )
    .await
    .assert_problem(400, "invalid_mfa_token");
    let again = login(&app, "mfa@example.com", PW).await;
    let t2 = again.body["mfa_token"].as_str().unwrap().to_owned();
    public_post(
        &app,
        "/api/v1/auth/mfa",
        json!({"mfa_token": t2, "code": next}),
    )
    .await
    .assert_problem(400, "invalid_mfa_code");
    // A recovery code works once, whatever its case and spacing.
    let code = codes[0].to_uppercase();
    let res = public_post(
        &app,
        "/api/v1/auth/mfa",
        json!({"mfa_token": t2, "code": code}),
    )
    .await;
    assert_eq!(res.status, 200, "{}", res.text);
    let t3 = login(&app, "mfa@example.com", PW).await.body["mfa_token"]
        .as_str()
        .unwrap()
        .to_owned();
    public_post(
        &app,
        "/api/v1/auth/mfa",
        json!({"mfa_token": t3, "code": codes[0]}),
    )
    .await
    .assert_problem(400, "invalid_mfa_code");
    // Regenerating codes and removing TOTP need a session that used the second factor.
    app.post("/api/v1/me/mfa/recovery-codes", &token, &json!({}))
        .await
        .assert_problem(403, "mfa_session_required");
    let res = app
        .post("/api/v1/me/mfa/recovery-codes", &mfa_access, &json!({}))
        .await;
    assert_eq!(res.status, 200, "{}", res.text);
    let fresh: Vec<String> = serde_json::from_value(res.body["recovery_codes"].clone()).unwrap();
    public_post(
        &app,
        "/api/v1/auth/mfa",
        json!({"mfa_token": t3, "code": codes[1]}),
    )
    .await
    .assert_problem(400, "invalid_mfa_code");
    assert_eq!(
        public_post(
            &app,
            "/api/v1/auth/mfa",
            json!({"mfa_token": t3, "code": fresh[0]})
        )
        .await
        .status,
        200
    );
    // Five wrong codes end a challenge.
    let t4 = login(&app, "mfa@example.com", PW).await.body["mfa_token"]
        .as_str()
        .unwrap()
        .to_owned();
    for _ in 0..5 {
        public_post(
            &app,
            "/api/v1/auth/mfa",
            json!({"mfa_token": t4, "code": "zzzzz-zzzzz"}),
        )
        .await;
    }
    public_post(
        &app,
        "/api/v1/auth/mfa",
        json!({"mfa_token": t4, "code": fresh[1]}),
    )
    .await
    .assert_problem(400, "invalid_mfa_token");
    // Wrong codes count towards the account lock like wrong passwords: it is locked now.
    login(&app, "mfa@example.com", PW)
        .await
        .assert_problem(401, "invalid_credentials");
    let actions = audit_actions(&app).await;
    for a in [
        "mfa.totp.enrol",
        "mfa.totp.confirm",
        "mfa.recovery_code.use",
        "mfa.recovery_codes.regenerate",
        "auth.login_failure",
    ] {
        assert!(
            actions.contains(&a.to_owned()),
            "{a} missing from {actions:?}"
        );
    }
    app.delete("/api/v1/me/mfa/totp", &token)
        .await
        .assert_problem(403, "mfa_session_required");
    let res = app.delete("/api/v1/me/mfa/totp", &mfa_access).await;
    assert_eq!(res.status, 204, "{}", res.text);
    assert_eq!(
        app.get("/api/v1/me", &mfa_access).await.body["mfa_enabled"],
        false
    );
    assert!(audit_actions(&app)
        .await
        .contains(&"mfa.totp.remove".to_owned()));
}

async fn magic_link_signs_in_once_and_reveals_nothing(app: TestApp) {
    user_with_password(&app, "magic@example.com", None, PW).await;
    let res = public_post(
        &app,
        "/api/v1/auth/magic-link",
        json!({"tenant": "default", "email": "Magic@Example.com"}),
    )
    .await;
    assert_eq!(res.status, 202, "{}", res.text);
    wait_for_mail(&app, "magic@example.com", 1).await;
    let message = app.mailer.last_to("magic@example.com").unwrap();
    assert!(
        message.subject.to_lowercase().contains("sign"),
        "{}",
        message.subject
    );
    let token = link_token(&app, "magic@example.com");
    let res = public_post(
        &app,
        "/api/v1/auth/magic-link/confirm",
        json!({"token": token}),
    )
    .await;
    let t = access(&res);
    let me = app.get("/api/v1/me", &t).await;
    assert_eq!(me.body["email_verified"], true);
    public_post(
        &app,
        "/api/v1/auth/magic-link/confirm",
        json!({"token": token}),
    )
    .await
    .assert_problem(400, "invalid_magic_link");
    // A newer link replaces an older one.
    public_post(
        &app,
        "/api/v1/auth/magic-link",
        json!({"tenant": "default", "email": "magic@example.com"}),
    )
    .await;
    wait_for_mail(&app, "magic@example.com", 2).await;
    let older = link_token(&app, "magic@example.com");
    public_post(
        &app,
        "/api/v1/auth/magic-link",
        json!({"tenant": "default", "email": "magic@example.com"}),
    )
    .await;
    wait_for_mail(&app, "magic@example.com", 3).await;
    let newer = link_token(&app, "magic@example.com");
    public_post(
        &app,
        "/api/v1/auth/magic-link/confirm",
        json!({"token": older}),
    )
    .await
    .assert_problem(400, "invalid_magic_link");
    assert_eq!(
        public_post(
            &app,
            "/api/v1/auth/magic-link/confirm",
            json!({"token": newer})
        )
        .await
        .status,
        200
    );
    // A changed address is no longer verified.
    let uid = me.body["user"]["id"].as_str().unwrap();
    let res = app
        .patch(
            &format!("/api/v1/users/{uid}"),
            &app.admin_key,
            &json!({"email": "magic2@example.com"}),
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.text);
    assert_eq!(
        app.get("/api/v1/me", &t).await.body["email_verified"],
        false
    );
    // Something that cannot be an address is refused as such: that reveals nothing about
    // accounts, and no link is sent.
    let res = public_post(
        &app,
        "/api/v1/auth/magic-link",
        json!({"tenant": "default", "email": "not-an-email"}),
    )
    .await;
    res.assert_problem(422, "validation_failed");
    assert_eq!(res.error_fields(), ["email"]);
}

async fn password_reset_checks_policy_and_revokes_sessions(app: TestApp) {
    user_with_password(&app, "reset@example.com", None, PW).await;
    let (old_access, old_refresh) = signed_in(&app, "reset@example.com", PW).await;
    public_post(
        &app,
        "/api/v1/auth/password-reset",
        json!({"tenant": "default", "email": "reset@example.com"}),
    )
    .await;
    wait_for_mail(&app, "reset@example.com", 1).await;
    let token = link_token(&app, "reset@example.com");
    // A weak password is refused and the link stays usable.
    let res = public_post(
        &app,
        "/api/v1/auth/password-reset/confirm",
        json!({"token": token, "password": "password"}),
    )
    .await;
    res.assert_problem(422, "validation_failed");
    assert!(res.error_fields().contains(&"password".to_owned()));
    // Reusing the current password is refused by the history rule.
    public_post(
        &app,
        "/api/v1/auth/password-reset/confirm",
        json!({"token": token, "password": PW}),
    )
    .await
    .assert_problem(422, "validation_failed");
    let res = public_post(
        &app,
        "/api/v1/auth/password-reset/confirm",
        json!({"token": token, "password": PW2}),
    )
    .await;
    assert_eq!(res.status, 204, "{}", res.text);
    // Every session ended; the old password no longer works; the new one does.
    app.get("/api/v1/me", &old_access)
        .await
        .assert_problem(401, "session_revoked");
    public_post(
        &app,
        "/api/v1/auth/refresh",
        json!({"refresh_token": old_refresh}),
    )
    .await
    .assert_problem(401, "invalid_refresh_token");
    login(&app, "reset@example.com", PW)
        .await
        .assert_problem(401, "invalid_credentials");
    access(&login(&app, "reset@example.com", PW2).await);
    // The link is single use; a made-up one is refused.
    public_post(
        &app,
        "/api/v1/auth/password-reset/confirm",
        json!({"token": token, "password": PW3}),
    )
    .await
    .assert_problem(400, "invalid_reset_token");
    public_post(
        &app,
        "/api/v1/auth/password-reset/confirm",
        json!({"token": "made-up", "password": PW3}),
    )
    .await
    .assert_problem(400, "invalid_reset_token");
    assert!(audit_actions(&app)
        .await
        .contains(&"password.reset".to_owned()));
}

async fn set_registration(app: &TestApp, mode: &str) {
    let res = app
        .send(
            Method::PUT,
            "/api/v1/settings/auth",
            Some(&app.admin_key),
            Some(&json!({"registration": mode})),
            &[],
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.text);
    assert_eq!(res.body["registration"], mode);
}

async fn registration_modes_verification_and_invitations(app: TestApp) {
    let reg = |email: &str| json!({"tenant": "default", "email": email, "password": PW, "full_name": "New Person"});
    // Closed by default.
    public_post(&app, "/api/v1/auth/register", reg("a@example.com"))
        .await
        .assert_problem(403, "registration_closed");
    public_post(
        &app,
        "/api/v1/auth/register",
        json!({"tenant": "nope", "email": "a@example.com", "password": PW, "full_name": "A"}),
    )
    .await
    .assert_problem(403, "registration_closed");

    set_registration(&app, "open").await;
    let res = public_post(&app, "/api/v1/auth/register", reg("open@example.com")).await;
    assert_eq!(res.status, 201, "{}", res.text);
    assert_eq!(res.body["status"], "active");
    public_post(&app, "/api/v1/auth/register", reg("OPEN@example.com"))
        .await
        .assert_problem(409, "email_taken");
    let weak = public_post(&app, "/api/v1/auth/register", json!({"tenant": "default", "email": "w@example.com", "password": "short", "full_name": "W"})).await;
    weak.assert_problem(422, "validation_failed");
    // The verification link marks the address verified, once.
    wait_for_mail(&app, "open@example.com", 1).await;
    let token = link_token(&app, "open@example.com");
    let t = access(&login(&app, "open@example.com", PW).await);
    assert_eq!(
        app.get("/api/v1/me", &t).await.body["email_verified"],
        false
    );
    assert_eq!(
        public_post(&app, "/api/v1/auth/verify-email", json!({"token": token}))
            .await
            .status,
        204
    );
    assert_eq!(app.get("/api/v1/me", &t).await.body["email_verified"], true);
    public_post(&app, "/api/v1/auth/verify-email", json!({"token": token}))
        .await
        .assert_problem(400, "invalid_verification_token");

    // Approval: the account waits, and cannot sign in even with the right password.
    set_registration(&app, "approval").await;
    let res = public_post(&app, "/api/v1/auth/register", reg("wait@example.com")).await;
    assert_eq!(res.body["status"], "pending", "{}", res.text);
    login(&app, "wait@example.com", PW)
        .await
        .assert_problem(403, "account_pending");
    login(&app, "wait@example.com", PW2)
        .await
        .assert_problem(401, "invalid_credentials");

    // Invite: only with an invitation, sent to that address, used once.
    set_registration(&app, "invite").await;
    public_post(&app, "/api/v1/auth/register", reg("inv@example.com"))
        .await
        .assert_problem(403, "invitation_required");
    let res = app
        .post(
            "/api/v1/invitations",
            &app.admin_key,
            &json!({"email": "Inv@Example.com"}),
        )
        .await;
    assert_eq!(res.status, 201, "{}", res.text);
    let invitation = link_token(&app, "Inv@Example.com");
    let mut body = reg("other@example.com");
    body["invitation_token"] = json!(invitation);
    public_post(&app, "/api/v1/auth/register", body)
        .await
        .assert_problem(422, "validation_failed");
    let mut body = reg("inv@example.com");
    body["invitation_token"] = json!(invitation);
    let res = public_post(&app, "/api/v1/auth/register", body.clone()).await;
    assert_eq!(res.body["status"], "active", "{}", res.text);
    let t = access(&login(&app, "inv@example.com", PW).await);
    assert_eq!(app.get("/api/v1/me", &t).await.body["email_verified"], true);
    body["email"] = json!("inv2@example.com");
    public_post(&app, "/api/v1/auth/register", body)
        .await
        .assert_problem(400, "invalid_invitation");
    // require_verified_email refuses unverified sign-ins.
    let res = app
        .send(
            Method::PUT,
            "/api/v1/settings/auth",
            Some(&app.admin_key),
            Some(&json!({"registration": "open", "require_verified_email": true})),
            &[],
        )
        .await;
    assert_eq!(res.status, 200);
    public_post(&app, "/api/v1/auth/register", reg("unverified@example.com")).await;
    login(&app, "unverified@example.com", PW)
        .await
        .assert_problem(403, "email_not_verified");
    assert!(audit_actions(&app)
        .await
        .contains(&"user.register".to_owned()));
}

async fn sessions_listed_and_revoked_by_user_and_admin(app: TestApp) {
    let user = user_with_password(&app, "s@example.com", None, PW).await;
    let uid = user["id"].as_str().unwrap();
    let (a1, _) = signed_in(&app, "s@example.com", PW).await;
    let (a2, r2) = signed_in(&app, "s@example.com", PW).await;
    let (a3, _) = signed_in(&app, "s@example.com", PW).await;
    let list = app.get("/api/v1/me/sessions", &a1).await;
    let items = list.body.as_array().unwrap();
    assert_eq!(items.len(), 3, "{}", list.text);
    assert_eq!(items.iter().filter(|s| s["current"] == true).count(), 1);
    assert!(items
        .iter()
        .all(|s| s["user_agent"] == "portcullis-testkit" && s["amr"] == json!(["pwd"])));
    // Revoke one by id.
    let s2 = app.get("/api/v1/me", &a2).await.body["session_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        app.delete(&format!("/api/v1/me/sessions/{s2}"), &a1)
            .await
            .status,
        204
    );
    app.get("/api/v1/me", &a2)
        .await
        .assert_problem(401, "session_revoked");
    public_post(&app, "/api/v1/auth/refresh", json!({"refresh_token": r2}))
        .await
        .assert_problem(401, "invalid_refresh_token");
    app.delete(&format!("/api/v1/me/sessions/{s2}"), &a1)
        .await
        .assert_problem(404, "not_found");
    app.delete(
        &format!("/api/v1/me/sessions/{}", uuid::Uuid::now_v7()),
        &a1,
    )
    .await
    .assert_problem(404, "not_found");
    // Revoke all others.
    let res = app.delete("/api/v1/me/sessions", &a1).await;
    assert_eq!(res.body["revoked"], 1, "{}", res.text);
    app.get("/api/v1/me", &a3)
        .await
        .assert_problem(401, "session_revoked");
    assert_eq!(app.get("/api/v1/me", &a1).await.status, 200);
    // The administrator sees and ends them.
    let (_a4, _) = signed_in(&app, "s@example.com", PW).await;
    let res = app
        .get(&format!("/api/v1/users/{uid}/sessions"), &app.admin_key)
        .await;
    assert_eq!(res.body.as_array().unwrap().len(), 2, "{}", res.text);
    let res = app
        .delete(&format!("/api/v1/users/{uid}/sessions"), &app.admin_key)
        .await;
    assert_eq!(res.body["revoked"], 2, "{}", res.text);
    app.get("/api/v1/me", &a1)
        .await
        .assert_problem(401, "session_revoked");
    app.get(
        &format!("/api/v1/users/{}/sessions", uuid::Uuid::now_v7()),
        &app.admin_key,
    )
    .await
    .assert_problem(404, "not_found");
}

async fn blocking_or_deleting_a_user_ends_sessions(app: TestApp) {
    let user = user_with_password(&app, "b@example.com", None, PW).await;
    let uid = user["id"].as_str().unwrap();
    let (a, r) = signed_in(&app, "b@example.com", PW).await;
    let res = app
        .patch(
            &format!("/api/v1/users/{uid}"),
            &app.admin_key,
            &json!({"status": "blocked"}),
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.text);
    app.get("/api/v1/me", &a)
        .await
        .assert_problem(401, "session_revoked");
    public_post(&app, "/api/v1/auth/refresh", json!({"refresh_token": r}))
        .await
        .assert_problem(401, "invalid_refresh_token");
    login(&app, "b@example.com", PW)
        .await
        .assert_problem(403, "account_disabled");
    app.patch(
        &format!("/api/v1/users/{uid}"),
        &app.admin_key,
        &json!({"status": "active"}),
    )
    .await;
    let (a, _) = signed_in(&app, "b@example.com", PW).await;
    assert_eq!(
        app.delete(&format!("/api/v1/users/{uid}"), &app.admin_key)
            .await
            .status,
        200
    );
    app.get("/api/v1/me", &a)
        .await
        .assert_problem(401, "session_revoked");
    login(&app, "b@example.com", PW)
        .await
        .assert_problem(401, "invalid_credentials");
}

async fn suspending_a_tenant_ends_its_sessions(app: TestApp) {
    let (tid, key_b) = app.create_tenant("tenant-s", json!({})).await;
    let res = app
        .post(
            "/api/v1/users",
            &key_b,
            &json!({"email": "s@example.com", "full_name": "S", "password": PW}),
        )
        .await;
    assert_eq!(res.status, 201, "{}", res.text);
    let res = login_in(&app, "tenant-s", "s@example.com", PW).await;
    let (a, r) = (
        access(&res),
        res.body["refresh_token"].as_str().unwrap().to_owned(),
    );
    // Another tenant's sessions are not touched.
    user_with_password(&app, "other@example.com", None, PW).await;
    let (other, _) = signed_in(&app, "other@example.com", PW).await;
    let res = app
        .patch(
            &format!("/api/v1/tenants/{tid}"),
            &app.admin_key,
            &json!({"status": "suspended"}),
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.text);
    app.get("/api/v1/me", &a)
        .await
        .assert_problem(401, "session_revoked");
    public_post(&app, "/api/v1/auth/refresh", json!({"refresh_token": r}))
        .await
        .assert_problem(401, "invalid_refresh_token");
    login_in(&app, "tenant-s", "s@example.com", PW)
        .await
        .assert_problem(401, "invalid_credentials");
    assert_eq!(app.get("/api/v1/me", &other).await.status, 200);
}

async fn must_change_password_is_honoured_at_login(app: TestApp) {
    let user = user_with_password(&app, "m@example.com", None, PW).await;
    let uid = user["id"].as_str().unwrap();
    let (a, _) = signed_in(&app, "m@example.com", PW).await;
    let res = app
        .send(
            Method::PUT,
            &format!("/api/v1/users/{uid}/password"),
            Some(&app.admin_key),
            Some(&json!({"password": PW2, "must_change_password": true})),
            &[],
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.text);
    assert_eq!(res.body["must_change_password"], true);
    assert!(res.body["password_changed_at"].is_string());
    // An administrator's reset ends the sessions.
    app.get("/api/v1/me", &a)
        .await
        .assert_problem(401, "session_revoked");
    let res = login(&app, "m@example.com", PW2).await;
    assert_eq!(res.body["password_change_required"], true, "{}", res.text);
    assert!(res.body["access_token"].is_null());
    let token = res.body["password_change_token"]
        .as_str()
        .unwrap()
        .to_owned();
    public_post(
        &app,
        "/api/v1/auth/password-change",
        json!({"password_change_token": token, "new_password": PW2}),
    )
    .await
    .assert_problem(422, "validation_failed");
    let res = public_post(
        &app,
        "/api/v1/auth/password-change",
        json!({"password_change_token": token, "new_password": PW3}),
    )
    .await;
    access(&res);
    public_post(
        &app,
        "/api/v1/auth/password-change",
        json!({"password_change_token": token, "new_password": PW}),
    )
    .await
    .assert_problem(400, "invalid_password_change_token");
    access(&login(&app, "m@example.com", PW3).await);
    let status = app
        .get(&format!("/api/v1/users/{uid}/password"), &app.admin_key)
        .await;
    assert_eq!(
        status.body["must_change_password"], false,
        "{}",
        status.text
    );
    assert_eq!(status.body["has_password"], true);
}

async fn wait_for_argon2(app: &TestApp, uid: &str) {
    let tenant = app
        .store
        .get_tenant_by_slug(&domain::tenants::TenantSlug::parse("s", "default").unwrap())
        .await
        .unwrap();
    let id = domain::UserId::from_uuid(uid.parse().unwrap());
    for _ in 0..100 {
        let c = app.store.get_credentials(tenant.id, id).await.unwrap();
        if c.password_hash
            .as_deref()
            .unwrap()
            .starts_with("$argon2id$")
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the imported hash was not re-hashed to argon2id");
}

async fn imported_foreign_hashes_sign_in_and_are_rehashed(app: TestApp) {
    use base64::engine::general_purpose::STANDARD;
    let secret = "legacy-password-42";
    let bcrypt_hash = bcrypt::hash(secret, 4).unwrap().replacen("$2b$", "$2y$", 1);
    let mut dk = [0u8; 32];
    pbkdf2::pbkdf2_hmac::<sha2::Sha256>(secret.as_bytes(), b"saltsalt", 1000, &mut dk);
    let django = format!("pbkdf2_sha256$1000$saltsalt${}", STANDARD.encode(dk));
    let mut kc = [0u8; 64];
    pbkdf2::pbkdf2_hmac::<sha2::Sha512>(secret.as_bytes(), b"kcsalt0123456789", 27500, &mut kc);
    let keycloak = json!({"algorithm": "pbkdf2-sha512", "hashIterations": 27500, "salt": STANDARD.encode(b"kcsalt0123456789"), "value": STANDARD.encode(kc)});
    for (email, hash) in [
        ("bcrypt@example.com", json!(bcrypt_hash)),
        ("django@example.com", json!(django)),
        ("keycloak@example.com", keycloak),
    ] {
        let user = app
            .create_user(
                &app.admin_key,
                json!({"email": email, "full_name": "Legacy", "password_hash": hash}),
            )
            .await;
        login(&app, email, "wrong-password")
            .await
            .assert_problem(401, "invalid_credentials");
        access(&login(&app, email, secret).await);
        wait_for_argon2(&app, user["id"].as_str().unwrap()).await;
        // After the re-hash, the same password still signs in.
        access(&login(&app, email, secret).await);
    }
    // Unsupported or both-at-once inputs are clear 422s.
    let res = app
        .post(
            "/api/v1/users",
            &app.admin_key,
            &json!({"email": "x@example.com", "full_name": "X", "password_hash": "plaintext"}),
        )
        .await;
    res.assert_problem(422, "validation_failed");
    assert_eq!(res.error_fields(), vec!["password_hash"]);
    app.post("/api/v1/users", &app.admin_key, &json!({"email": "x@example.com", "full_name": "X", "password": PW, "password_hash": "$2b$04$x"}))
        .await
        .assert_problem(422, "validation_failed");
    let res = app.get("/api/v1/users?q=x", &app.admin_key).await;
    assert!(res.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .all(|u| u["email"] != "x@example.com"));
}

async fn browser_session_cookie_needs_csrf(app: TestApp) {
    user_with_password(&app, "web@example.com", None, PW).await;
    let res = public_post(&app, "/api/v1/auth/login", json!({"tenant": "default", "login": "web@example.com", "password": PW, "session": "browser", "device_label": "Firefox on Linux"})).await;
    assert_eq!(res.status, 200, "{}", res.text);
    assert!(res.body["access_token"].is_null());
    let csrf = res.body["csrf_token"].as_str().unwrap().to_owned();
    let cookies: Vec<&str> = res
        .headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    let session_cookie = cookies
        .iter()
        .find(|c| c.starts_with("portcullis_session="))
        .unwrap();
    assert!(
        session_cookie.contains("HttpOnly") && session_cookie.contains("SameSite=Lax"),
        "{session_cookie}"
    );
    let cookie = session_cookie.split(';').next().unwrap().to_owned();
    let me = app
        .send(
            Method::GET,
            "/api/v1/me",
            None,
            None,
            &[("cookie", &cookie)],
        )
        .await;
    assert_eq!(me.status, 200, "{}", me.text);
    let sessions = app
        .send(
            Method::GET,
            "/api/v1/me/sessions",
            None,
            None,
            &[("cookie", &cookie)],
        )
        .await;
    assert_eq!(sessions.body[0]["device_label"], "Firefox on Linux");
    assert_eq!(sessions.body[0]["kind"], "browser");
    // State-changing requests need the CSRF header.
    let body = json!({"full_name": "Web Person"});
    app.send(
        Method::PATCH,
        "/api/v1/me",
        None,
        Some(&body),
        &[("cookie", &cookie)],
    )
    .await
    .assert_problem(403, "csrf_failed");
    app.send(
        Method::PATCH,
        "/api/v1/me",
        None,
        Some(&body),
        &[("cookie", &cookie), ("x-csrf-token", "wrong")],
    )
    .await
    .assert_problem(403, "csrf_failed");
    let res = app
        .send(
            Method::PATCH,
            "/api/v1/me",
            None,
            Some(&body),
            &[("cookie", &cookie), ("x-csrf-token", &csrf)],
        )
        .await;
    assert_eq!(res.body["user"]["full_name"], "Web Person", "{}", res.text);
    let res = app
        .send(
            Method::POST,
            "/api/v1/auth/logout",
            None,
            None,
            &[("cookie", &cookie), ("x-csrf-token", &csrf)],
        )
        .await;
    assert_eq!(res.status, 204, "{}", res.text);
    assert!(res
        .headers
        .get_all("set-cookie")
        .iter()
        .any(|v| v.to_str().unwrap().contains("Max-Age=0")));
    app.send(
        Method::GET,
        "/api/v1/me",
        None,
        None,
        &[("cookie", &cookie)],
    )
    .await
    .assert_problem(401, "invalid_session");
}

async fn password_policy_and_history(app: TestApp) {
    for (pw, code) in [
        ("short", "too_short"),
        ("password1234", "too_weak"),
        (&"x".repeat(129) as &str, "too_long"),
        ("policy-person-Zq8#", "contains_user_data"),
    ] {
        let res = app
            .post("/api/v1/users", &app.admin_key, &json!({"email": "policy.person@example.com", "username": "policy-person", "full_name": "Policy Person", "password": pw}))
            .await;
        res.assert_problem(422, "validation_failed");
        let codes: Vec<&str> = res.body["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["code"].as_str().unwrap())
            .collect();
        assert!(codes.contains(&code), "{pw}: {codes:?}");
    }
    // None of the refused requests created the user.
    assert_eq!(
        app.get("/api/v1/users?q=policy", &app.admin_key).await.body["items"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
    user_with_password(&app, "hist@example.com", None, PW).await;
    let (a, _) = signed_in(&app, "hist@example.com", PW).await;
    let (other, _) = signed_in(&app, "hist@example.com", PW).await;
    let change =
        |current: &str, new: &str| json!({"current_password": current, "new_password": new});
    let res = app
        .post("/api/v1/me/password", &a, &change("wrong-one", PW2))
        .await;
    res.assert_problem(422, "validation_failed");
    assert_eq!(res.error_fields(), vec!["current_password"]);
    let res = app.post("/api/v1/me/password", &a, &change(PW, PW)).await;
    assert_eq!(
        res.body["errors"][0]["code"], "password_reused",
        "{}",
        res.text
    );
    assert_eq!(
        app.post("/api/v1/me/password", &a, &change(PW, PW2))
            .await
            .status,
        204
    );
    // The other session ended; this one goes on.
    app.get("/api/v1/me", &other)
        .await
        .assert_problem(401, "session_revoked");
    assert_eq!(app.get("/api/v1/me", &a).await.status, 200);
    // The first password is still in the history.
    let res = app.post("/api/v1/me/password", &a, &change(PW2, PW)).await;
    assert_eq!(
        res.body["errors"][0]["code"], "password_reused",
        "{}",
        res.text
    );
    assert!(audit_actions(&app)
        .await
        .contains(&"password.change".to_owned()));
}

async fn profile_and_progressive_profiling(app: TestApp) {
    // Fields that feed decisions are filled by administrators, never asked of users.
    let res = app
        .send(
            Method::PUT,
            "/api/v1/settings/auth",
            Some(&app.admin_key),
            Some(&json!({"profile_fields": ["phone", "department"]})),
            &[],
        )
        .await;
    res.assert_problem(422, "validation_failed");
    assert_eq!(
        res.body["errors"][0]["code"], "security_profile_field",
        "{}",
        res.text
    );
    let res = app
        .send(
            Method::PUT,
            "/api/v1/settings/auth",
            Some(&app.admin_key),
            Some(&json!({"profile_fields": ["phone", "employee_id"]})),
            &[],
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.text);
    user_with_password(&app, "p@example.com", None, PW).await;
    let res = login(&app, "p@example.com", PW).await;
    assert_eq!(
        res.body["missing_profile_fields"],
        json!(["phone", "employee_id"]),
        "{}",
        res.text
    );
    let t = access(&res);
    let res = app
        .patch(
            "/api/v1/me",
            &t,
            &json!({"phone": "+44 20 7946 0000", "employee_id": "E-42"}),
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.text);
    assert_eq!(res.body["missing_profile_fields"], json!([]));
    let res = login(&app, "p@example.com", PW).await;
    assert!(
        res.body.get("missing_profile_fields").is_none(),
        "{}",
        res.text
    );
    // Fields the tenant did not open to users are refused, and nothing changes.
    let res = app
        .patch(
            "/api/v1/me",
            &t,
            &json!({"full_name": "P", "job_title": "Boss"}),
        )
        .await;
    res.assert_problem(403, "field_not_self_service");
    assert_eq!(res.error_fields(), vec!["job_title"]);
    // A field asked for is filled once: changing it afterwards is an administrator's job.
    app.patch("/api/v1/me", &t, &json!({"employee_id": "E-43"}))
        .await
        .assert_problem(403, "field_not_self_service");
    assert_eq!(
        app.get("/api/v1/me", &t).await.body["user"]["full_name"],
        "Test Person"
    );
    app.patch("/api/v1/me", &t, &json!({"status": "active"}))
        .await
        .assert_problem(422, "validation_failed");
    app.patch("/api/v1/me", &t, &json!({"phone": "not a phone"}))
        .await
        .assert_problem(422, "validation_failed");
}

async fn credentials_are_kept_to_their_endpoints(app: TestApp) {
    user_with_password(&app, "k@example.com", None, PW).await;
    let (t, _) = signed_in(&app, "k@example.com", PW).await;
    // A user's token reaches administrative endpoints only as far as their roles allow: the
    // default `user` role reads its own record, nothing else.
    let res = app.get("/api/v1/users", &t).await;
    assert_eq!(res.status.as_u16(), 200, "{}", res.text);
    let items = res.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{}", res.text);
    assert_eq!(items[0]["email"], "k@example.com");
    app.get("/api/v1/roles", &t)
        .await
        .assert_problem(403, "forbidden");
    app.get("/api/v1/tenants", &t)
        .await
        .assert_problem(403, "platform_admin_required");
    app.get("/api/v1/me", &app.admin_key)
        .await
        .assert_problem(403, "user_session_required");
    app.send(Method::GET, "/api/v1/me", None, None, &[])
        .await
        .assert_problem(401, "unauthorized");
    // Bodies are validated like everywhere else.
    app.send(
        Method::POST,
        "/api/v1/auth/login",
        None,
        Some(&json!({"tenant": "default", "login": "k@example.com", "password": PW, "extra": 1})),
        &[],
    )
    .await
    .assert_problem(422, "validation_failed");
    let long = "p".repeat(2000);
    login(&app, "k@example.com", &long)
        .await
        .assert_problem(422, "validation_failed");
}

async fn auth_settings_validated_and_audited(app: TestApp) {
    let res = app.get("/api/v1/settings/auth", &app.admin_key).await;
    assert_eq!(res.body["registration"], "closed");
    assert_eq!(res.body["password_policy"]["min_length"], 12);
    let bad = json!({"password_policy": {"min_length": 4, "history": 99}, "profile_fields": ["phone", "phone"]});
    let res = app
        .send(
            Method::PUT,
            "/api/v1/settings/auth",
            Some(&app.admin_key),
            Some(&bad),
            &[],
        )
        .await;
    res.assert_problem(422, "validation_failed");
    assert_eq!(res.error_fields().len(), 3, "{}", res.text);
    app.send(
        Method::PUT,
        "/api/v1/settings/auth",
        Some(&app.admin_key),
        Some(&json!({"registration": "sometimes"})),
        &[],
    )
    .await
    .assert_problem(422, "validation_failed");
    assert_eq!(
        app.get("/api/v1/settings/auth", &app.admin_key).await.body["registration"],
        "closed"
    );
    set_registration(&app, "open").await;
    assert!(audit_actions(&app)
        .await
        .contains(&"tenant.auth_settings.update".to_owned()));
}

// --- cases that need their own configuration --------------------------------------------

async fn with_config(
    backend: Backend,
    f: impl FnOnce(&mut portcullis::config::Config),
) -> Option<TestApp> {
    let mut config = test_config();
    f(&mut config);
    spawn_app_with(backend, config).await
}

async fn lockout_case(app: TestApp) {
    let user = user_with_password(&app, "lock@example.com", None, PW).await;
    let uid = user["id"].as_str().unwrap();
    for _ in 0..5 {
        login(&app, "lock@example.com", "wrong-guess")
            .await
            .assert_problem(401, "invalid_credentials");
    }
    // Locked: even the right password gets the same answer.
    login(&app, "lock@example.com", PW)
        .await
        .assert_problem(401, "invalid_credentials");
    let status = app
        .get(&format!("/api/v1/users/{uid}/password"), &app.admin_key)
        .await;
    assert!(status.body["locked_until"].is_string(), "{}", status.text);
    assert!(audit_actions(&app).await.contains(&"user.lock".to_owned()));
    // The lock lifts by itself (6 s here), and the unlock is recorded.
    tokio::time::sleep(Duration::from_secs(6)).await;
    access(&login(&app, "lock@example.com", PW).await);
    assert!(audit_actions(&app)
        .await
        .contains(&"user.unlock".to_owned()));
}

async fn ip_rate_limit_case(app: TestApp) {
    let mut limited = None;
    for _ in 0..10 {
        let res = login(&app, "nobody@example.com", PW).await;
        if res.status == 429 {
            limited = Some(res);
            break;
        }
    }
    let res = limited.expect("the per-IP limit answered 429");
    res.assert_problem(429, "rate_limited");
    let retry: u64 = res.header("retry-after").unwrap().parse().unwrap();
    assert!(retry >= 1);
}

async fn saturation_case(app: TestApp) {
    user_with_password(&app, "busy@example.com", None, PW).await;
    let logins = (0..12).map(|_| login(&app, "busy@example.com", PW));
    let results = futures::future::join_all(logins).await;
    let busy: Vec<&TestResponse> = results.iter().filter(|r| r.status == 503).collect();
    assert!(!busy.is_empty(), "a full hashing queue answers 503");
    for r in &busy {
        r.assert_problem(503, "busy");
        assert!(r.header("retry-after").is_some());
    }
    assert!(results.iter().any(|r| r.status == 200));
    // Other endpoints keep answering while hashing is saturated.
    let logins = (0..12).map(|_| login(&app, "busy@example.com", PW));
    let (_, health) = tokio::join!(
        futures::future::join_all(logins),
        app.send(Method::GET, "/healthz", None, None, &[])
    );
    assert_eq!(health.status, 200);
}

macro_rules! configured_tests {
    ($($name:ident => $case:ident, $cfg:expr;)+) => {
        mod configured {
            use super::*;
            $(
                mod $name {
                    use super::*;
                    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                    async fn sqlite() {
                        let app = with_config(Backend::Sqlite, $cfg).await.unwrap();
                        $case(app).await;
                    }
                    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                    async fn postgres() {
                        if let Some(app) = with_config(Backend::Postgres, $cfg).await {
                            $case(app).await;
                        }
                    }
                }
            )+
        }
    };
}

configured_tests! {
    lockout => lockout_case, |c| { c.auth.lockout_duration_seconds = 6; };
    ip_rate_limit => ip_rate_limit_case, |c| { c.auth.ip_requests_per_minute = 20; };
    saturation => saturation_case, |c| {
        c.auth.argon2_memory_kib = 19_456;
        c.auth.argon2_iterations = 2;
        c.auth.hash_threads = 1;
        c.auth.hash_queue = 1;
    };
}
