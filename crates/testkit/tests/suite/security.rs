//! The security rules, each as the attack it stops, over HTTP on SQLite and PostgreSQL.
//! Every case is named after what it proves; the rules themselves live once, in the
//! services (docs/authorization.md and docs/authentication.md list them).

use std::time::Duration;

use chrono::{SecondsFormat, TimeDelta, Utc};
use portcullis_testkit::{
    access, backend_tests, login, login_in, signed_in_to, spawn_app_with, test_config, Backend,
    TestApp, TestResponse,
};
use reqwest::Method;
use serde_json::{json, Value};

use crate::api_auth::{step_now, totp_secret};

backend_tests!(
    a_manager_cannot_take_over_a_suspended_administrator,
    reactivating_a_user_needs_update_at_scope_all,
    own_password_changes_need_the_current_password,
    only_keys_and_create_all_holders_store_a_password_hash,
    imported_hashes_above_the_cost_bounds_are_refused,
    fields_decisions_read_are_changed_only_with_update_all,
    a_department_creator_sets_no_security_field_and_no_password,
    nobody_changes_their_own_roles_or_groups,
    a_grant_never_outlives_the_granters_own,
    only_platform_keys_and_super_admins_manage_a_super_admin,
    a_permit_policy_widens_no_list_and_unlocks_no_security_field,
    groups_and_roles_named_by_policies_need_policies_update,
    scoped_permissions_on_collections_are_refused,
    metric_labels_stay_bounded,
    emailed_links_die_when_the_address_changes,
    a_suspended_tenant_stops_tokens_and_pending_steps,
    removals_check_outranking,
    the_last_super_admin_gets_no_expiry,
    failed_sign_ins_are_audited_as_anonymous_without_the_login,
    key_rotation_is_audited,
);

/// The parallel-guessing cases need the per-IP failure limit off (every test client is
/// 127.0.0.1), so that only the account's own limits stand between the guesses and the
/// password.
mod parallel {
    use super::*;

    async fn app(backend: Backend) -> Option<TestApp> {
        let mut config = test_config();
        config.auth.ip_failure_limit = 0;
        spawn_app_with(backend, config).await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite_parallel_wrong_passwords_get_no_more_attempts_than_the_policy() {
        let app = app(Backend::Sqlite).await.expect("sqlite app");
        parallel_wrong_passwords_get_no_more_attempts_than_the_policy(app).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_parallel_wrong_passwords_get_no_more_attempts_than_the_policy() {
        if let Some(app) = app(Backend::Postgres).await {
            parallel_wrong_passwords_get_no_more_attempts_than_the_policy(app).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite_parallel_wrong_mfa_codes_get_no_more_attempts_than_the_policy() {
        let app = app(Backend::Sqlite).await.expect("sqlite app");
        parallel_wrong_mfa_codes_get_no_more_attempts_than_the_policy(app).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_parallel_wrong_mfa_codes_get_no_more_attempts_than_the_policy() {
        if let Some(app) = app(Backend::Postgres).await {
            parallel_wrong_mfa_codes_get_no_more_attempts_than_the_policy(app).await;
        }
    }
}

const PW: &str = "vX9#mQ2!pLr7@tZk";
const PW2: &str = "Yh4$wN8^cBq1&eJs";
/// The platform-wide super administrator role (`domain::authz::SUPER_ADMIN_ROLE_ID`).
const SUPER_ADMIN: &str = "00000000-0000-7000-8000-000000000001";
/// A bcrypt hash (cost 5) of "U*U", from the OpenBSD test vectors.
const BCRYPT: &str = "$2a$05$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW";

// --- helpers ---------------------------------------------------------------------------

fn id_of(v: &Value) -> String {
    v["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no id: {v}"))
        .to_owned()
}

/// The elements of a list answer, whether a bare array or a page with `items`.
fn items(res: &TestResponse) -> Vec<Value> {
    assert_eq!(res.status, 200, "{}", res.text);
    match &res.body {
        Value::Array(a) => a.clone(),
        other => other["items"].as_array().cloned().unwrap_or_default(),
    }
}

/// A user of the caller's tenant; returns its id.
async fn user(app: &TestApp, key: &str, email: &str, department: Option<&str>) -> String {
    let mut body = json!({"email": email, "full_name": "Someone", "password": PW});
    if let Some(d) = department {
        body["department"] = json!(d);
    }
    id_of(&app.create_user(key, body).await)
}

/// A user of `tenant` with a password, signed in; returns (id, access token).
async fn signed_user(
    app: &TestApp,
    key: &str,
    tenant: &str,
    email: &str,
    department: Option<&str>,
) -> (String, String) {
    let id = user(app, key, email, department).await;
    let (token, _) = signed_in_to(app, tenant, email, PW).await;
    (id, token)
}

async fn role(app: &TestApp, key: &str, name: &str, permissions: &[&str]) -> String {
    let res = app
        .post(
            "/api/v1/roles",
            key,
            &json!({"name": name, "display_name": name, "permissions": permissions}),
        )
        .await;
    assert_eq!(res.status, 201, "{}", res.text);
    id_of(&res.body)
}

async fn role_id(app: &TestApp, key: &str, name: &str) -> String {
    let res = app.get("/api/v1/roles", key).await;
    items(&res)
        .iter()
        .find(|r| r["name"] == name)
        .map(id_of)
        .unwrap_or_else(|| panic!("no role {name}"))
}

async fn assign(
    app: &TestApp,
    key: &str,
    user: &str,
    role: &str,
    expires_at: Option<chrono::DateTime<Utc>>,
) -> TestResponse {
    let mut body = json!({"role_id": role});
    if let Some(t) = expires_at {
        body["expires_at"] = json!(t.to_rfc3339_opts(SecondsFormat::Secs, true));
    }
    app.post(&format!("/api/v1/users/{user}/roles"), key, &body)
        .await
}

async fn assign_ok(app: &TestApp, key: &str, user: &str, role: &str) {
    let res = assign(app, key, user, role, None).await;
    assert_eq!(res.status, 201, "{}", res.text);
}

async fn group(app: &TestApp, key: &str, name: &str) -> String {
    let res = app
        .post(
            "/api/v1/groups",
            key,
            &json!({"name": name, "display_name": name}),
        )
        .await;
    assert_eq!(res.status, 201, "{}", res.text);
    id_of(&res.body)
}

async fn add_members(app: &TestApp, key: &str, group: &str, users: &[&str]) -> TestResponse {
    app.post(
        &format!("/api/v1/groups/{group}/members"),
        key,
        &json!({"user_ids": users, "role_in_group": "member"}),
    )
    .await
}

async fn patch(app: &TestApp, key: &str, user: &str, body: Value) -> TestResponse {
    app.patch(&format!("/api/v1/users/{user}"), key, &body)
        .await
}

async fn set_password(app: &TestApp, key: &str, user: &str, body: Value) -> TestResponse {
    app.send(
        Method::PUT,
        &format!("/api/v1/users/{user}/password"),
        Some(key),
        Some(&body),
        &[],
    )
    .await
}

async fn public_post(app: &TestApp, path: &str, body: Value) -> TestResponse {
    app.send(Method::POST, path, None, Some(&body), &[]).await
}

/// The events of the admin key's tenant with this action, newest first.
async fn events(app: &TestApp, action: &str) -> Vec<Value> {
    let res = app
        .get(
            &format!("/api/v1/audit-events?action={action}&limit=200"),
            &app.admin_key,
        )
        .await;
    items(&res)
}

/// Waits for the emailed link of `purpose` to `to` and returns its token.
async fn mailed_token(app: &TestApp, to: &str, count: usize) -> String {
    for _ in 0..200 {
        let sent = app.mailer.messages().iter().filter(|m| m.to == to).count();
        if sent >= count {
            let link = app.mailer.last_link_to(to).expect("a link");
            return link
                .split("token=")
                .nth(1)
                .and_then(|t| t.split('&').next())
                .expect("token")
                .to_owned();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no message {count} to {to}");
}

// --- 1. managing a user is judged against the rights they would hold if active -----------

async fn a_manager_cannot_take_over_a_suspended_administrator(app: TestApp) {
    let key = app.admin_key.clone();
    let manager = role_id(&app, &key, "manager").await;
    let admin = role_id(&app, &key, "admin").await;
    let (mgr, mgr_token) = signed_user(&app, &key, "default", "mgr@acme.test", Some("Sales")).await;
    assign_ok(&app, &key, &mgr, &manager).await;
    let boss = user(&app, &key, "boss@acme.test", Some("Sales")).await;
    assign_ok(&app, &key, &boss, &admin).await;
    // Suspended, the administrator holds no rights today: the manager is still refused,
    // because of the rights the account would have back once active.
    assert_eq!(
        patch(&app, &key, &boss, json!({"status": "suspended"}))
            .await
            .status,
        200
    );
    set_password(&app, &mgr_token, &boss, json!({"password": PW2}))
        .await
        .assert_problem(403, "target_outranks_caller");
    patch(
        &app,
        &mgr_token,
        &boss,
        json!({"phone": "+44 20 7946 0100"}),
    )
    .await
    .assert_problem(403, "target_outranks_caller");
    // The old password still works once an administrator reactivates the account.
    patch(&app, &key, &boss, json!({"status": "active"})).await;
    access(&login(&app, "boss@acme.test", PW).await);
}

async fn reactivating_a_user_needs_update_at_scope_all(app: TestApp) {
    let key = app.admin_key.clone();
    let manager = role_id(&app, &key, "manager").await;
    let (mgr, mgr_token) = signed_user(&app, &key, "default", "mgr@acme.test", Some("Sales")).await;
    assign_ok(&app, &key, &mgr, &manager).await;
    let sam = user(&app, &key, "sam@acme.test", Some("Sales")).await;
    // A department manager may block…
    assert_eq!(
        patch(&app, &mgr_token, &sam, json!({"status": "suspended"}))
            .await
            .status,
        200
    );
    // …but bringing an account back needs users:update at scope all.
    let res = patch(&app, &mgr_token, &sam, json!({"status": "active"})).await;
    res.assert_problem(403, "security_field");
    assert_eq!(res.error_fields(), vec!["status"]);
    let got = app.get(&format!("/api/v1/users/{sam}"), &key).await;
    assert_eq!(got.body["status"], "suspended");
    assert_eq!(
        patch(&app, &key, &sam, json!({"status": "active"}))
            .await
            .status,
        200
    );
}

// --- 2. passwords --------------------------------------------------------------------

async fn own_password_changes_need_the_current_password(app: TestApp) {
    let key = app.admin_key.clone();
    let (me, token) = signed_user(&app, &key, "default", "ann@acme.test", None).await;
    // The `user` role may update its own record, but not its password this way.
    set_password(&app, &token, &me, json!({"password": PW2}))
        .await
        .assert_problem(403, "use_me_password");
    set_password(&app, &token, &me, json!({"password_hash": BCRYPT}))
        .await
        .assert_problem(403, "use_me_password");
    access(&login(&app, "ann@acme.test", PW).await);
    // Through /me, with the current password.
    let wrong = app
        .post(
            "/api/v1/me/password",
            &token,
            &json!({"current_password": "not-it", "new_password": PW2}),
        )
        .await;
    wrong.assert_problem(422, "validation_failed");
    assert_eq!(wrong.body["errors"][0]["code"], "wrong_password");
    let res = app
        .post(
            "/api/v1/me/password",
            &token,
            &json!({"current_password": PW, "new_password": PW2}),
        )
        .await;
    assert_eq!(res.status, 204, "{}", res.text);
}

async fn only_keys_and_create_all_holders_store_a_password_hash(app: TestApp) {
    let key = app.admin_key.clone();
    let hr = role(
        &app,
        &key,
        "hr",
        &[
            "users:create:department",
            "users:read:department",
            "users:update:department",
        ],
    )
    .await;
    let (h, hr_token) = signed_user(&app, &key, "default", "hr@acme.test", Some("Sales")).await;
    assign_ok(&app, &key, &h, &hr).await;
    let sam = user(&app, &key, "sam@acme.test", Some("Sales")).await;
    // A hash skips the password policy and history: not for a department's HR.
    set_password(&app, &hr_token, &sam, json!({"password_hash": BCRYPT}))
        .await
        .assert_problem(403, "password_hash_forbidden");
    let res = app
        .post(
            "/api/v1/users",
            &hr_token,
            &json!({"email": "new@acme.test", "full_name": "New", "department": "Sales",
                    "password_hash": BCRYPT}),
        )
        .await;
    assert_eq!(res.status, 403, "{}", res.text);
    // An API key imports.
    assert_eq!(
        set_password(&app, &key, &sam, json!({"password_hash": BCRYPT}))
            .await
            .status,
        200
    );
    access(&login(&app, "sam@acme.test", "U*U").await);
}

async fn imported_hashes_above_the_cost_bounds_are_refused(app: TestApp) {
    let key = app.admin_key.clone();
    let salt_and_hash = "c29tZXNhbHQ$CTFhFdXPJO1aFaMaO6Mm5c8y7cJHAph8ArZWb2GRPPc";
    for (i, hash) in [
        format!("$argon2id$v=19$m=1048576,t=20,p=1${salt_and_hash}"),
        format!("$argon2id$v=19$m=65536,t=5,p=1${salt_and_hash}"),
        "$2b$15$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW".to_owned(),
        "pbkdf2_sha256$10000000$seasalt$FQCNpiZpTb0zub+HBsH6TOwyRxJ19FwvjbweatNmK/Y=".to_owned(),
    ]
    .iter()
    .enumerate()
    {
        let res = app
            .post(
                "/api/v1/users",
                &key,
                &json!({"email": format!("costly{i}@acme.test"), "full_name": "C",
                        "password_hash": hash}),
            )
            .await;
        res.assert_problem(422, "validation_failed");
        assert_eq!(res.body["errors"][0]["code"], "hash_too_costly", "{hash}");
    }
    // Nothing was created.
    let list = app.get("/api/v1/users?q=costly0", &key).await;
    assert!(items(&list).is_empty(), "{}", list.text);
}

// --- 3. security fields ----------------------------------------------------------------

async fn fields_decisions_read_are_changed_only_with_update_all(app: TestApp) {
    let key = app.admin_key.clone();
    let (me, token) = signed_user(&app, &key, "default", "ann@acme.test", Some("Sales")).await;
    for (field, body) in [
        ("department", json!({"department": "Board"})),
        ("job_title", json!({"job_title": "CFO"})),
        ("email", json!({"email": "ann@elsewhere.test"})),
        (
            "custom_attributes",
            json!({"custom_attributes": {"gdpr_consent": true}}),
        ),
        ("clearance_level", json!({"clearance_level": 9})),
    ] {
        let res = patch(&app, &token, &me, body).await;
        res.assert_problem(403, "security_field");
        assert_eq!(res.error_fields(), vec![field]);
    }
    // /me refuses those it knows of, whatever the tenant asks of its users.
    for field in ["department", "job_title"] {
        app.patch("/api/v1/me", &token, &json!({field: "x"}))
            .await
            .assert_problem(403, "field_not_self_service");
    }
    let got = app.get(&format!("/api/v1/users/{me}"), &key).await;
    assert_eq!(got.body["department"], "Sales");
    assert_eq!(got.body["custom_attributes"], json!({}));
    // A tenant cannot ask its users to fill a field decisions read.
    let res = app
        .send(
            Method::PUT,
            "/api/v1/settings/auth",
            Some(&key),
            Some(&json!({"profile_fields": ["job_title"]})),
            &[],
        )
        .await;
    res.assert_problem(422, "validation_failed");
    assert_eq!(res.body["errors"][0]["code"], "security_profile_field");
}

async fn a_department_creator_sets_no_security_field_and_no_password(app: TestApp) {
    let key = app.admin_key.clone();
    let hr = role(
        &app,
        &key,
        "hr",
        &["users:create:department", "users:read:department"],
    )
    .await;
    let (h, hr_token) = signed_user(&app, &key, "default", "hr@acme.test", Some("Sales")).await;
    assign_ok(&app, &key, &h, &hr).await;
    let boss = user(&app, &key, "boss@acme.test", Some("Sales")).await;
    let base = json!({"email": "new@acme.test", "full_name": "New", "department": "Sales"});
    for (field, value) in [
        ("clearance_level", json!(9)),
        ("manager_id", json!(boss)),
        ("status", json!("active")),
        ("job_title", json!("CFO")),
        ("custom_attributes", json!({"gdpr_consent": true})),
    ] {
        let mut body = base.clone();
        body[field] = value;
        let res = app.post("/api/v1/users", &hr_token, &body).await;
        res.assert_problem(403, "security_field");
        assert_eq!(res.error_fields(), vec![field]);
    }
    // A known password would let the creator sign in as the new user.
    let mut body = base.clone();
    body["password"] = json!(PW);
    let res = app.post("/api/v1/users", &hr_token, &body).await;
    res.assert_problem(403, "forbidden");
    assert_eq!(res.error_fields(), vec!["password"]);
    // Without them, the creation goes through (as `pending`, invited by email).
    let res = app.post("/api/v1/users", &hr_token, &base).await;
    assert_eq!(res.status, 201, "{}", res.text);
}

// --- 4. own assignments and time-bound grants ------------------------------------------

async fn nobody_changes_their_own_roles_or_groups(app: TestApp) {
    let key = app.admin_key.clone();
    let admin = role_id(&app, &key, "admin").await;
    let (me, token) = signed_user(&app, &key, "default", "adm@acme.test", None).await;
    assign_ok(&app, &key, &me, &admin).await;
    let reader = role(&app, &key, "reader", &["users:read:all"]).await;
    assign(&app, &token, &me, &reader, None)
        .await
        .assert_problem(403, "own_assignment");
    app.delete(&format!("/api/v1/users/{me}/roles/{admin}"), &token)
        .await
        .assert_problem(403, "own_assignment");
    let g = group(&app, &key, "team").await;
    add_members(&app, &token, &g, &[&me])
        .await
        .assert_problem(403, "own_assignment");
    assert_eq!(add_members(&app, &key, &g, &[&me]).await.status, 200);
    app.delete(&format!("/api/v1/groups/{g}/members/{me}"), &token)
        .await
        .assert_problem(403, "own_assignment");
    // Others they may change.
    let other = user(&app, &key, "other@acme.test", None).await;
    assert_eq!(
        assign(&app, &token, &other, &reader, None).await.status,
        201
    );
}

async fn a_grant_never_outlives_the_granters_own(app: TestApp) {
    let key = app.admin_key.clone();
    let admin = role_id(&app, &key, "admin").await;
    let (temp, token) = signed_user(&app, &key, "default", "temp@acme.test", None).await;
    let week = Utc::now() + TimeDelta::days(7);
    let res = assign(&app, &key, &temp, &admin, Some(week)).await;
    assert_eq!(res.status, 201, "{}", res.text);
    // Not permanent by re-assigning it to oneself…
    assign(&app, &token, &temp, &admin, None)
        .await
        .assert_problem(403, "own_assignment");
    // …nor by handing it on for longer than one holds it.
    let friend = user(&app, &key, "friend@acme.test", None).await;
    assign(&app, &token, &friend, &admin, None)
        .await
        .assert_problem(403, "grant_outlives_granter");
    assign(
        &app,
        &token,
        &friend,
        &admin,
        Some(week + TimeDelta::days(30)),
    )
    .await
    .assert_problem(403, "grant_outlives_granter");
    // Within one's own time it is granted.
    let res = assign(
        &app,
        &token,
        &friend,
        &admin,
        Some(Utc::now() + TimeDelta::days(3)),
    )
    .await;
    assert_eq!(res.status, 201, "{}", res.text);
    // Nor by adding what one holds for a week to a role everyone holds for good.
    let everyone = role_id(&app, &key, "user").await;
    let res = app
        .put(
            &format!("/api/v1/roles/{everyone}/permissions"),
            &token,
            &json!({"add": ["users:update:all"]}),
        )
        .await;
    res.assert_problem(403, "grant_outlives_granter");
    let perms = app.get(&format!("/api/v1/roles/{everyone}"), &key).await;
    assert!(!perms.text.contains("users:update:all"), "{}", perms.text);
}

// --- 5. the super administrator ----------------------------------------------------------

async fn only_platform_keys_and_super_admins_manage_a_super_admin(app: TestApp) {
    let key = app.admin_key.clone();
    let root = user(&app, &key, "root@acme.test", None).await;
    assign_ok(&app, &key, &root, SUPER_ADMIN).await;
    // A tenant key of the same tenant, and the tenant's administrator.
    let (_, tenant_key) =
        portcullis::keys::create_api_key(&app.services, "default", "tenant-key", false)
            .await
            .unwrap();
    let tenant_key = tenant_key.expose().to_owned();
    let admin = role_id(&app, &key, "admin").await;
    let (a, admin_token) = signed_user(&app, &key, "default", "adm@acme.test", None).await;
    assign_ok(&app, &key, &a, &admin).await;
    for caller in [&tenant_key, &admin_token] {
        patch(&app, caller, &root, json!({"phone": "+44 20 7946 0101"}))
            .await
            .assert_problem(403, "super_admin_required");
        set_password(&app, caller, &root, json!({"password": PW2}))
            .await
            .assert_problem(403, "super_admin_required");
        app.delete(&format!("/api/v1/users/{root}"), caller)
            .await
            .assert_problem(403, "super_admin_required");
    }
    assert_eq!(
        patch(&app, &key, &root, json!({"phone": "+44 20 7946 0102"}))
            .await
            .status,
        200
    );
}

async fn the_last_super_admin_gets_no_expiry(app: TestApp) {
    let key = app.admin_key.clone();
    let root = user(&app, &key, "root@acme.test", None).await;
    assign_ok(&app, &key, &root, SUPER_ADMIN).await;
    let soon = Utc::now() + TimeDelta::days(1);
    let res = assign(&app, &key, &root, SUPER_ADMIN, Some(soon)).await;
    res.assert_problem(422, "validation_failed");
    assert_eq!(res.body["errors"][0]["code"], "super_admin_no_expiry");
    // With another permanent holder, an expiry is fine.
    let second = user(&app, &key, "second@acme.test", None).await;
    assign_ok(&app, &key, &second, SUPER_ADMIN).await;
    let res = assign(&app, &key, &root, SUPER_ADMIN, Some(soon)).await;
    assert_eq!(
        res.status, 200,
        "an existing assignment changes: {}",
        res.text
    );
}

// --- 6. policies widen no list -----------------------------------------------------------

async fn a_permit_policy_widens_no_list_and_unlocks_no_security_field(app: TestApp) {
    let key = app.admin_key.clone();
    let (me, token) = signed_user(&app, &key, "default", "pat@acme.test", Some("Sales")).await;
    user(&app, &key, "sue@acme.test", Some("Sales")).await;
    user(&app, &key, "eve@acme.test", Some("Eng")).await;
    // Pat holds no role at all: only the policies below let Pat read or update anyone, so
    // every decision about Pat is a policy's permit.
    let plain = role_id(&app, &key, "user").await;
    let res = app
        .delete(&format!("/api/v1/users/{me}/roles/{plain}"), &key)
        .await;
    assert_eq!(res.status, 200, "{}", res.text);
    for (name, source) in [
        (
            "anyone_reads_users",
            r#"permit(principal, action == Action::"users:read", resource);"#,
        ),
        (
            "sales_update_sales",
            r#"permit(principal, action == Action::"users:update", resource) when { resource has department && resource.department == "Sales" };"#,
        ),
    ] {
        let res = app
            .post(
                "/api/v1/policies",
                &key,
                &json!({"name": name, "active": true, "source": source}),
            )
            .await;
        assert_eq!(res.status, 201, "{}", res.text);
    }
    // A permit reaches what it was asked about: the list is Pat's own record, not the
    // tenant's.
    let list = app.get("/api/v1/users", &token).await;
    assert_eq!(list.status, 200, "{}", list.text);
    let ids: Vec<String> = items(&list).iter().map(id_of).collect();
    assert_eq!(ids, vec![me.clone()], "{}", list.text);
    // A plain field is Pat's to change under the permit; a field decisions read is not.
    let res = patch(&app, &token, &me, json!({"phone": "+44 20 7946 0102"})).await;
    assert_eq!(res.status, 200, "{}", res.text);
    patch(&app, &token, &me, json!({"department": "Board"}))
        .await
        .assert_problem(403, "security_field");
    let got = app.get(&format!("/api/v1/users/{me}"), &key).await;
    assert_eq!(got.body["department"], "Sales");
}

// --- 7. names policies rely on -------------------------------------------------------------

async fn groups_and_roles_named_by_policies_need_policies_update(app: TestApp) {
    let key = app.admin_key.clone();
    let auditors = group(&app, &key, "auditors").await;
    let plain = group(&app, &key, "plain").await;
    let oncall = role(&app, &key, "oncall", &["users:read:all"]).await;
    let res = app
        .post(
            "/api/v1/policies",
            &key,
            &json!({"name": "auditors_never_delete", "active": true,
                    "source": "forbid(principal in Group::\"auditors\", action == Action::\"users:delete\", resource);"}),
        )
        .await;
    assert_eq!(res.status, 201, "{}", res.text);
    let res = app
        .post(
            "/api/v1/policies",
            &key,
            &json!({"name": "oncall_exports", "active": true,
                    "source": "permit(principal in Role::\"oncall\", action == Action::\"users:export\", resource);"}),
        )
        .await;
    assert_eq!(res.status, 201, "{}", res.text);
    let keeper = role(
        &app,
        &key,
        "keeper",
        &[
            "groups:read:all",
            "groups:update:all",
            "groups:assign:all",
            "roles:read:all",
            "roles:update:all",
            "roles:assign:all",
            "users:read:all",
            "users:export:all",
        ],
    )
    .await;
    let (k, token) = signed_user(&app, &key, "default", "keeper@acme.test", None).await;
    assign_ok(&app, &key, &k, &keeper).await;
    let someone = user(&app, &key, "someone@acme.test", None).await;
    // Renaming or changing the membership of what a policy names is a policy change.
    app.patch(
        &format!("/api/v1/groups/{auditors}"),
        &token,
        &json!({"name": "former_auditors"}),
    )
    .await
    .assert_problem(403, "policy_referenced");
    add_members(&app, &token, &auditors, &[&someone])
        .await
        .assert_problem(403, "policy_referenced");
    app.patch(
        &format!("/api/v1/roles/{oncall}"),
        &token,
        &json!({"name": "offcall"}),
    )
    .await
    .assert_problem(403, "policy_referenced");
    assign(&app, &token, &someone, &oncall, None)
        .await
        .assert_problem(403, "policy_referenced");
    // What no policy names is theirs to change.
    assert_eq!(
        app.patch(
            &format!("/api/v1/groups/{plain}"),
            &token,
            &json!({"name": "renamed"})
        )
        .await
        .status,
        200
    );
    assert_eq!(
        add_members(&app, &token, &plain, &[&someone]).await.status,
        200
    );
}

async fn scoped_permissions_on_collections_are_refused(app: TestApp) {
    let key = app.admin_key.clone();
    for permission in [
        "policies:create:own",
        "roles:update:department",
        "groups:create:own",
    ] {
        let res = app
            .post(
                "/api/v1/roles",
                &key,
                &json!({"name": "scoped", "display_name": "Scoped", "permissions": [permission]}),
            )
            .await;
        res.assert_problem(422, "validation_failed");
        assert_eq!(
            res.body["errors"][0]["code"], "scope_not_applicable",
            "{permission}: {}",
            res.text
        );
    }
}

// --- 8. metrics ------------------------------------------------------------------------

async fn metric_labels_stay_bounded(app: TestApp) {
    let http = reqwest::Client::new();
    for i in 0..5 {
        let method = Method::from_bytes(format!("XM{i}").as_bytes()).unwrap();
        http.request(method, app.url("/api/v1/users"))
            .send()
            .await
            .unwrap();
    }
    let body = http
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!body.contains("XM"), "{body}");
    assert!(body.contains("method=\"OTHER\""), "{body}");
}

// --- 9. links, suspension, outranking, the audit trail -----------------------------------

async fn emailed_links_die_when_the_address_changes(app: TestApp) {
    let key = app.admin_key.clone();
    let u = user(&app, &key, "link@acme.test", None).await;
    public_post(
        &app,
        "/api/v1/auth/magic-link",
        json!({"tenant": "default", "email": "link@acme.test"}),
    )
    .await;
    let magic = mailed_token(&app, "link@acme.test", 1).await;
    public_post(
        &app,
        "/api/v1/auth/password-reset",
        json!({"tenant": "default", "email": "link@acme.test"}),
    )
    .await;
    let reset = mailed_token(&app, "link@acme.test", 2).await;
    assert_eq!(
        patch(&app, &key, &u, json!({"email": "moved@acme.test"}))
            .await
            .status,
        200
    );
    // Whoever still reads the old mailbox gets nothing from those links.
    public_post(
        &app,
        "/api/v1/auth/magic-link/confirm",
        json!({"token": magic}),
    )
    .await
    .assert_problem(400, "invalid_magic_link");
    public_post(
        &app,
        "/api/v1/auth/password-reset/confirm",
        json!({"token": reset, "password": PW2}),
    )
    .await
    .assert_problem(400, "invalid_reset_token");
    access(&login(&app, "moved@acme.test", PW).await);
}

async fn a_suspended_tenant_stops_tokens_and_pending_steps(app: TestApp) {
    let (tenant, acme_key) = app.create_tenant("acme", json!({})).await;
    user(&app, &acme_key, "ann@acme.test", None).await;
    let res = login_in(&app, "acme", "ann@acme.test", PW).await;
    let token = access(&res);
    let refresh = res.body["refresh_token"].as_str().unwrap().to_owned();
    public_post(
        &app,
        "/api/v1/auth/magic-link",
        json!({"tenant": "acme", "email": "ann@acme.test"}),
    )
    .await;
    let magic = mailed_token(&app, "ann@acme.test", 1).await;

    let res = app
        .delete(&format!("/api/v1/tenants/{tenant}"), &app.admin_key)
        .await;
    assert_eq!(res.status, 200, "{}", res.text);

    assert_eq!(app.get("/api/v1/me", &token).await.status, 401);
    app.get("/api/v1/users", &acme_key)
        .await
        .assert_problem(403, "tenant_suspended");
    public_post(
        &app,
        "/api/v1/auth/refresh",
        json!({"refresh_token": refresh}),
    )
    .await
    .assert_problem(401, "invalid_refresh_token");
    public_post(
        &app,
        "/api/v1/auth/magic-link/confirm",
        json!({"token": magic}),
    )
    .await
    .assert_problem(400, "invalid_magic_link");
    login_in(&app, "acme", "ann@acme.test", PW)
        .await
        .assert_problem(401, "invalid_credentials");
}

async fn removals_check_outranking(app: TestApp) {
    let key = app.admin_key.clone();
    let admin = role_id(&app, &key, "admin").await;
    let remover = role(
        &app,
        &key,
        "remover",
        &[
            "users:read:all",
            "roles:read:all",
            "roles:assign:all",
            "groups:read:all",
            "groups:assign:all",
            "groups:update:all",
            "groups:delete:all",
            "roles:update:all",
            "roles:delete:all",
        ],
    )
    .await;
    let (r, token) = signed_user(&app, &key, "default", "remover@acme.test", None).await;
    assign_ok(&app, &key, &r, &remover).await;
    let boss = user(&app, &key, "boss@acme.test", None).await;
    assign_ok(&app, &key, &boss, &admin).await;
    let g = group(&app, &key, "board").await;
    assert_eq!(add_members(&app, &key, &g, &[&boss]).await.status, 200);
    let res = app
        .post(
            &format!("/api/v1/groups/{g}/roles"),
            &key,
            &json!({"role_id": admin}),
        )
        .await;
    assert_eq!(res.status, 201, "{}", res.text);
    // Taking away is judged like giving: someone who could not give it cannot take it.
    app.delete(&format!("/api/v1/users/{boss}/roles/{admin}"), &token)
        .await
        .assert_problem(403, "target_outranks_caller");
    app.delete(&format!("/api/v1/groups/{g}/members/{boss}"), &token)
        .await
        .assert_problem(403, "target_outranks_caller");
    app.delete(&format!("/api/v1/groups/{g}/roles/{admin}"), &token)
        .await
        .assert_problem(403, "cannot_grant_unheld");
    // Deleting, deactivating or moving the group takes its roles from every member.
    app.delete(&format!("/api/v1/groups/{g}"), &token)
        .await
        .assert_problem(403, "cannot_grant_unheld");
    app.patch(
        &format!("/api/v1/groups/{g}"),
        &token,
        &json!({"active": false}),
    )
    .await
    .assert_problem(403, "cannot_grant_unheld");
    let held = app.get(&format!("/api/v1/users/{boss}/roles"), &key).await;
    assert!(held.text.contains(&admin), "{}", held.text);
    // Removing a role's permissions, or the role, takes them from every holder.
    let elevated = role(&app, &key, "elevated", &["users:update:all"]).await;
    app.put(
        &format!("/api/v1/roles/{elevated}/permissions"),
        &token,
        &json!({"remove": ["users:update:all"]}),
    )
    .await
    .assert_problem(403, "cannot_grant_unheld");
    app.delete(&format!("/api/v1/roles/{elevated}"), &token)
        .await
        .assert_problem(403, "cannot_grant_unheld");
    let kept = app.get(&format!("/api/v1/roles/{elevated}"), &key).await;
    assert_eq!(kept.status, 200, "{}", kept.text);
    assert!(kept.text.contains("users:update:all"), "{}", kept.text);
}

async fn failed_sign_ins_are_audited_as_anonymous_without_the_login(app: TestApp) {
    let key = app.admin_key.clone();
    let victim = user(&app, &key, "victim@acme.test", None).await;
    login(&app, "victim@acme.test", "wrong-guess")
        .await
        .assert_problem(401, "invalid_credentials");
    login(&app, "ghost-login-typed@acme.test", "whatever")
        .await
        .assert_problem(401, "invalid_credentials");
    let failures = events(&app, "auth.login_failure").await;
    assert_eq!(failures.len(), 2, "{failures:?}");
    let (unknown, known) = (&failures[0], &failures[1]);
    assert_eq!(known["actor_type"], "anonymous");
    assert_eq!(known["actor_id"], Value::Null);
    assert_eq!(known["entity_type"], "user");
    assert_eq!(known["entity_id"], victim.as_str());
    assert_eq!(known["after"], json!({"reason": "wrong_password"}));
    assert_eq!(unknown["actor_type"], "anonymous");
    assert_eq!(unknown["entity_id"], Value::Null);
    assert!(!unknown.to_string().contains("ghost"), "{unknown}");
}

async fn key_rotation_is_audited(app: TestApp) {
    let (_, acme_key) = app.create_tenant("acme", json!({})).await;
    let operator = portcullis_services::Actor::operator();
    app.services
        .rotate_signing_key(&operator, portcullis_auth::keys::SigningAlgorithm::EdDSA)
        .await
        .unwrap();
    // Every tenant's tokens are signed with the platform keys: each trail records it.
    for key in [&app.admin_key, &acme_key] {
        let res = app
            .get("/api/v1/audit-events?action=signing_key.rotate", key)
            .await;
        let found = items(&res);
        assert_eq!(found.len(), 1, "{}", res.text);
        assert_eq!(found[0]["actor_type"], "system");
    }
}

// --- 10. parallel guesses --------------------------------------------------------------------

/// The failures counted and the sign-ins that got to check the password.
async fn reasons(app: &TestApp) -> Vec<String> {
    events(app, "auth.login_failure")
        .await
        .iter()
        .map(|e| e["after"]["reason"].as_str().unwrap_or_default().to_owned())
        .collect()
}

async fn parallel_wrong_passwords_get_no_more_attempts_than_the_policy(app: TestApp) {
    user(&app, &app.admin_key, "target@acme.test", None).await;
    // 49 wrong guesses and the right password, all at once.
    let attempts = (0..50).map(|i| {
        let pw = if i == 37 {
            PW.to_owned()
        } else {
            format!("guess-{i}")
        };
        let app = &app;
        async move { login(app, "target@acme.test", &pw).await }
    });
    let answers = futures::future::join_all(attempts).await;
    let accepted = answers.iter().filter(|r| r.status == 200).count();
    for r in answers.iter().filter(|r| r.status != 200) {
        r.assert_problem(401, "invalid_credentials");
    }
    let reasons = reasons(&app).await;
    let checked = reasons.iter().filter(|r| *r == "wrong_password").count();
    // Five attempts (the lockout threshold) were checked, at most: the others never got to
    // the password, whatever it was.
    assert!(
        checked + accepted <= 5,
        "checked {checked}, accepted {accepted}: {reasons:?}"
    );
    assert_eq!(reasons.len(), 50 - accepted, "{reasons:?}");
}

async fn parallel_wrong_mfa_codes_get_no_more_attempts_than_the_policy(app: TestApp) {
    use portcullis_auth::totp::code_at;
    user(&app, &app.admin_key, "mfa@acme.test", None).await;
    let token = access(&login(&app, "mfa@acme.test", PW).await);
    let res = app.post("/api/v1/me/mfa/totp", &token, &json!({})).await;
    assert_eq!(res.status, 200, "{}", res.text);
    let secret = totp_secret(res.body["otpauth_uri"].as_str().unwrap());
    let res = app
        .post(
            "/api/v1/me/mfa/totp/confirm",
            &token,
            &json!({"code": code_at(&secret, step_now())}),
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.text);
    let challenge = login(&app, "mfa@acme.test", PW).await;
    let mfa_token = challenge.body["mfa_token"].as_str().unwrap().to_owned();
    let valid: Vec<String> = (-1..=1).map(|d| code_at(&secret, step_now() + d)).collect();
    let wrong: Vec<String> = (0..50)
        .map(|i| format!("{:06}", 100_000 + i * 17))
        .filter(|c| !valid.contains(c))
        .collect();
    let attempts = wrong.iter().map(|code| {
        let (app, mfa_token) = (&app, &mfa_token);
        async move {
            public_post(
                app,
                "/api/v1/auth/mfa",
                json!({"mfa_token": mfa_token, "code": code}),
            )
            .await
        }
    });
    let answers = futures::future::join_all(attempts).await;
    assert!(answers.iter().all(|r| r.status == 400), "{answers:?}");
    let checked = reasons(&app)
        .await
        .iter()
        .filter(|r| *r == "wrong_mfa_code")
        .count();
    // One challenge gives five tries, however many arrive at once.
    assert!(checked <= 5, "{checked} codes were checked");
    assert!(checked >= 1);
}
