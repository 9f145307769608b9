//! Authorization over HTTP, on SQLite and PostgreSQL: the permission catalogue, roles and
//! their permissions, time-bound assignments, nested groups and their members, Cedar
//! policies, the check API with its explanations, enforcement on the administrative
//! endpoints (scope, 403 problem+json, 404 across tenants), the super administrator and
//! its last holder, no self-escalation, cache invalidation after each kind of change, the
//! audit trail, and concurrent membership additions.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::{SecondsFormat, Utc};
use portcullis_testkit::{backend_tests, signed_in_to, TestApp, TestResponse};
use reqwest::Method;
use serde_json::{json, Value};

backend_tests!(
    default_roles_and_role_crud,
    custom_permissions_in_roles_and_checks,
    plain_user_reaches_only_their_own_record,
    manager_reaches_only_their_department,
    roles_inherited_through_three_levels_of_groups,
    every_change_is_seen_by_the_next_check,
    time_bound_role_expires,
    forbid_overrides_permit_and_policies_are_validated,
    example_policies_are_accepted_and_decide,
    last_super_admin_is_protected,
    no_self_escalation,
    groups_crud_counts_tree_and_cycles,
    bulk_add_reports_each_item,
    member_role_change_removal_and_available_users,
    check_api_validation_batches_and_own_scope,
    authz_changes_are_audited_with_before_and_after,
    concurrent_additions_never_exceed_max_members,
);

const PW: &str = "vX9#mQ2!pLr7@tZk";
/// The platform-wide super administrator role (`domain::authz::SUPER_ADMIN_ROLE_ID`).
const SUPER_ADMIN: &str = "00000000-0000-7000-8000-000000000001";
/// A well-formed id that names nothing.
const NOBODY: &str = "01890000-0000-7000-8000-00000000dead";

// --- helpers -------------------------------------------------------------------------

fn id_of(v: &Value) -> String {
    v["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no id in {v}"))
        .to_owned()
}

/// The elements of a list answer, whether it is a bare array or a page with `items`.
fn items(res: &TestResponse) -> Vec<Value> {
    match &res.body {
        Value::Array(a) => a.clone(),
        Value::Object(o) => o
            .get("items")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_else(|| panic!("not a list: {}", res.text)),
        _ => panic!("not a list: {}", res.text),
    }
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect()
}

fn set<I: IntoIterator<Item = S>, S: Into<String>>(it: I) -> BTreeSet<String> {
    it.into_iter().map(Into::into).collect()
}

/// Creates a user (no password) through `key`; returns its id.
async fn user(app: &TestApp, key: &str, email: &str, department: Option<&str>) -> String {
    let full_name = email.split('@').next().unwrap();
    let mut body = json!({"email": email, "full_name": full_name});
    if let Some(d) = department {
        body["department"] = json!(d);
    }
    id_of(&app.create_user(key, body).await)
}

/// Creates a user with a password through `key` and signs them in to `tenant`; returns
/// (id, access token).
async fn signed_user(
    app: &TestApp,
    key: &str,
    tenant: &str,
    email: &str,
    department: Option<&str>,
) -> (String, String) {
    let full_name = email.split('@').next().unwrap();
    let mut body = json!({"email": email, "full_name": full_name, "password": PW});
    if let Some(d) = department {
        body["department"] = json!(d);
    }
    let id = id_of(&app.create_user(key, body).await);
    let (token, _) = signed_in_to(app, tenant, email, PW).await;
    (id, token)
}

/// Creates a custom role with these permissions; returns its id.
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

/// The id of the tenant's role with this name.
async fn role_id(app: &TestApp, key: &str, name: &str) -> String {
    let res = app.get("/api/v1/roles", key).await;
    assert_eq!(res.status, 200, "{}", res.text);
    items(&res)
        .iter()
        .find(|r| r["name"] == name)
        .map(id_of)
        .unwrap_or_else(|| panic!("no role {name}: {}", res.text))
}

async fn assign(app: &TestApp, key: &str, user: &str, role: &str) -> TestResponse {
    app.post(
        &format!("/api/v1/users/{user}/roles"),
        key,
        &json!({"role_id": role}),
    )
    .await
}

async fn assign_ok(app: &TestApp, key: &str, user: &str, role: &str) {
    let res = assign(app, key, user, role).await;
    assert_eq!(res.status, 201, "{}", res.text);
}

async fn unassign(app: &TestApp, key: &str, user: &str, role: &str) -> TestResponse {
    app.delete(&format!("/api/v1/users/{user}/roles/{role}"), key)
        .await
}

/// Creates a group; returns its id.
async fn group(app: &TestApp, key: &str, name: &str, parent: Option<&str>) -> String {
    let res = app
        .post(
            "/api/v1/groups",
            key,
            &json!({"name": name, "display_name": name, "parent_id": parent}),
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

async fn add_member_ok(app: &TestApp, key: &str, group: &str, user: &str) {
    let res = add_members(app, key, group, &[user]).await;
    assert_eq!(res.status, 200, "{}", res.text);
}

async fn patch_ok(app: &TestApp, key: &str, path: &str, body: Value) -> Value {
    let res = app.patch(path, key, &body).await;
    assert_eq!(res.status, 200, "{path} {body}: {}", res.text);
    res.body
}

async fn delete_ok(app: &TestApp, key: &str, path: &str) {
    let res = app.delete(path, key).await;
    assert_eq!(res.status, 200, "{path}: {}", res.text);
}

/// `POST /api/v1/authz/check`, asserting a 200; returns the answer.
async fn check(app: &TestApp, key: &str, body: Value) -> Value {
    let res = app.post("/api/v1/authz/check", key, &body).await;
    assert_eq!(res.status, 200, "{body}: {}", res.text);
    assert!(res.body["reason"].is_string(), "{}", res.text);
    res.body
}

/// May `principal` do `action` (`resource:action`) on the collection of that resource?
async fn decide(app: &TestApp, key: &str, principal: &str, action: &str) -> Value {
    decide_in(app, key, principal, action, json!({})).await
}

async fn decide_in(
    app: &TestApp,
    key: &str,
    principal: &str,
    action: &str,
    context: Value,
) -> Value {
    let kind = action.split(':').next().unwrap();
    check(
        app,
        key,
        json!({"principal": principal, "action": action, "resource": {"type": kind},
               "context": context}),
    )
    .await
}

#[track_caller]
fn assert_allowed(d: &Value, kind: &str) {
    assert_eq!(d["allowed"], true, "{d}");
    assert_eq!(d["decision"]["kind"], kind, "{d}");
}

#[track_caller]
fn assert_denied(d: &Value, kind: &str) {
    assert_eq!(d["allowed"], false, "{d}");
    assert_eq!(d["decision"]["kind"], kind, "{d}");
}

async fn create_policy(app: &TestApp, key: &str, name: &str, source: &str) -> Value {
    let res = app
        .post(
            "/api/v1/policies",
            key,
            &json!({"name": name, "description": format!("{name} (test)"), "source": source,
                    "active": true}),
        )
        .await;
    assert_eq!(res.status, 201, "{source}: {}", res.text);
    res.body
}

async fn my_permissions(app: &TestApp, token: &str) -> Value {
    let res = app.get("/api/v1/me/permissions", token).await;
    assert_eq!(res.status, 200, "{}", res.text);
    res.body
}

/// The newest audit event with this action (of the caller's tenant).
async fn last_event(app: &TestApp, key: &str, action: &str) -> Value {
    let res = app
        .get(&format!("/api/v1/audit-events?action={action}"), key)
        .await;
    assert_eq!(res.status, 200, "{}", res.text);
    items(&res)
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("no {action} event"))
}

fn rfc3339(t: chrono::DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

// --- roles and permissions -----------------------------------------------------------

async fn default_roles_and_role_crud(app: TestApp) {
    let (_, key) = app.create_tenant("acme", json!({})).await;
    let res = app.get("/api/v1/roles", &key).await;
    assert_eq!(res.status, 200, "{}", res.text);
    let roles = items(&res);
    let names: Vec<&str> = roles.iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        ["super_admin", "admin", "manager", "user"],
        "{}",
        res.text
    );
    for r in &roles {
        assert_eq!(r["role_type"], "system", "{r}");
        assert_eq!(r["active"], true, "{r}");
    }
    assert_eq!(roles[0]["id"], SUPER_ADMIN);
    assert!(roles[0]["tenant_id"].is_null());
    assert_eq!(roles[0]["priority"], 1000);
    assert!(strings(&roles[1]["permissions"]).contains(&"users:delete:all".to_owned()));
    assert!(
        !strings(&roles[1]["permissions"])
            .iter()
            .any(|p| p.starts_with("tenants:")),
        "a tenant's admin cannot manage tenants: {}",
        roles[1]
    );
    assert!(strings(&roles[2]["permissions"]).contains(&"users:read:department".to_owned()));
    assert_eq!(
        strings(&roles[3]["permissions"]),
        [
            "directory:read:all",
            "sessions:delete:own",
            "sessions:read:own",
            "users:read:own",
            "users:update:own"
        ]
    );

    // Create, read, update, list, delete a custom role.
    let res = app
        .post(
            "/api/v1/roles",
            &key,
            &json!({"name": "auditor", "display_name": "Auditor", "description": "Reads the trail",
                    "priority": 20, "permissions": ["users:read:all", "audit_logs:read:all"]}),
        )
        .await;
    assert_eq!(res.status, 201, "{}", res.text);
    let auditor = res.body.clone();
    let aid = id_of(&auditor);
    assert_eq!(auditor["role_type"], "custom");
    assert_eq!(auditor["active"], true);
    assert!(auditor["tenant_id"].is_string());
    assert_eq!(
        strings(&auditor["permissions"]),
        ["audit_logs:read:all", "users:read:all"]
    );
    let got = app.get(&format!("/api/v1/roles/{aid}"), &key).await;
    assert_eq!(got.status, 200, "{}", got.text);
    assert_eq!(got.body, auditor);
    let names: Vec<String> = items(&app.get("/api/v1/roles", &key).await)
        .iter()
        .map(|r| r["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        names,
        ["super_admin", "admin", "manager", "auditor", "user"]
    );
    app.post(
        "/api/v1/roles",
        &key,
        &json!({"name": "auditor", "display_name": "Again"}),
    )
    .await
    .assert_problem(409, "role_name_taken");
    let bad = app
        .post(
            "/api/v1/roles",
            &key,
            &json!({"name": "Not Valid", "display_name": "X", "permissions": ["users:read"]}),
        )
        .await;
    bad.assert_problem(422, "validation_failed");
    assert!(
        bad.error_fields().contains(&"name".to_owned()),
        "{}",
        bad.text
    );
    assert!(
        bad.error_fields()
            .iter()
            .any(|f| f.starts_with("permissions")),
        "{}",
        bad.text
    );
    let upd = patch_ok(
        &app,
        &key,
        &format!("/api/v1/roles/{aid}"),
        json!({"display_name": "Auditors", "priority": 5, "name": "reviewer"}),
    )
    .await;
    assert_eq!(upd["display_name"], "Auditors");
    assert_eq!(upd["name"], "reviewer");
    assert_eq!(upd["priority"], 5);
    assert_eq!(upd["permissions"], auditor["permissions"]);

    // Permissions: add and remove in one change.
    let res = app
        .send(
            Method::PUT,
            &format!("/api/v1/roles/{aid}/permissions"),
            Some(&key),
            Some(
                &json!({"add": ["groups:read:all", "sessions:read:department"],
                         "remove": ["users:read:all", "roles:read:all"]}),
            ),
            &[],
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.text);
    let expected = [
        "audit_logs:read:all",
        "groups:read:all",
        "sessions:read:department",
    ];
    assert_eq!(strings(&res.body["permissions"]), expected);
    let got = app
        .get(&format!("/api/v1/roles/{aid}/permissions"), &key)
        .await;
    assert_eq!(got.status, 200, "{}", got.text);
    assert_eq!(strings(&got.body), expected);

    // Unknown or malformed permissions: 422 naming them, and nothing changes.
    for (body, field) in [
        (json!({"add": ["widgets:read:all"]}), "add"),
        (json!({"add": ["roles:read:all", "users:read"]}), "add[1]"),
        (
            json!({"add": ["roles:read:all", "users:read:everything"]}),
            "add[1]",
        ),
        (
            json!({"add": ["roles:read:all"], "remove": ["nope"]}),
            "remove[0]",
        ),
        (json!({"add": ["tenants:read:all"]}), "add"),
    ] {
        let res = app
            .send(
                Method::PUT,
                &format!("/api/v1/roles/{aid}/permissions"),
                Some(&key),
                Some(&body),
                &[],
            )
            .await;
        res.assert_problem(422, "validation_failed");
        assert!(
            res.error_fields().iter().any(|f| f.starts_with(field)),
            "{body}: {}",
            res.text
        );
        let got = app
            .get(&format!("/api/v1/roles/{aid}/permissions"), &key)
            .await;
        assert_eq!(strings(&got.body), expected, "{body} changed the role");
    }

    // System roles keep their name and cannot be deleted; the super administrator role
    // cannot change at all.
    let admin = id_of(&roles[1]);
    app.patch(
        &format!("/api/v1/roles/{admin}"),
        &key,
        &json!({"name": "boss"}),
    )
    .await
    .assert_problem(403, "system_role");
    app.delete(&format!("/api/v1/roles/{admin}"), &key)
        .await
        .assert_problem(403, "system_role");
    app.patch(
        &format!("/api/v1/roles/{SUPER_ADMIN}"),
        &key,
        &json!({"display_name": "God"}),
    )
    .await
    .assert_problem(403, "super_admin_immutable");
    app.delete(&format!("/api/v1/roles/{SUPER_ADMIN}"), &key)
        .await
        .assert_problem(403, "super_admin_immutable");
    app.send(
        Method::PUT,
        &format!("/api/v1/roles/{SUPER_ADMIN}/permissions"),
        Some(&key),
        Some(&json!({"add": ["users:read:all"]})),
        &[],
    )
    .await
    .assert_problem(403, "super_admin_immutable");
    let names_after: Vec<String> = items(&app.get("/api/v1/roles", &key).await)
        .iter()
        .map(|r| r["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        names_after,
        ["super_admin", "admin", "manager", "user", "reviewer"]
    );

    // Another tenant's role is not there.
    for res in [
        app.get(&format!("/api/v1/roles/{aid}"), &app.admin_key)
            .await,
        app.patch(
            &format!("/api/v1/roles/{aid}"),
            &app.admin_key,
            &json!({"display_name": "Mine"}),
        )
        .await,
        app.delete(&format!("/api/v1/roles/{aid}"), &app.admin_key)
            .await,
    ] {
        res.assert_problem(404, "not_found");
    }

    let res = app.delete(&format!("/api/v1/roles/{aid}"), &key).await;
    assert_eq!(res.status, 200, "{}", res.text);
    app.get(&format!("/api/v1/roles/{aid}"), &key)
        .await
        .assert_problem(404, "not_found");
}

async fn custom_permissions_in_roles_and_checks(app: TestApp) {
    let key = app.admin_key.clone();
    let res = app
        .post(
            "/api/v1/permissions",
            &key,
            &json!({"permission": "document:read:all", "description": "Read documents"}),
        )
        .await;
    assert_eq!(res.status, 201, "{}", res.text);
    assert_eq!(res.body["permission"], "document:read:all");
    assert_eq!(res.body["resource"], "document");
    assert_eq!(res.body["action"], "read");
    assert_eq!(res.body["scope"], "all");
    assert_eq!(res.body["built_in"], false);
    app.post(
        "/api/v1/permissions",
        &key,
        &json!({"permission": "document:read:all"}),
    )
    .await
    .assert_problem(409, "permission_exists");
    for (raw, code) in [
        ("users:frobnicate:all", "built_in_resource"),
        ("roles:read:all", "built_in_resource"),
        ("document:read", "invalid_permission"),
        ("Document:read:all", "invalid_permission"),
    ] {
        let res = app
            .post("/api/v1/permissions", &key, &json!({"permission": raw}))
            .await;
        res.assert_problem(422, "validation_failed");
        assert_eq!(res.body["errors"][0]["field"], "permission", "{}", res.text);
        assert_eq!(res.body["errors"][0]["code"], code, "{}", res.text);
    }
    let catalogue = items(&app.get("/api/v1/permissions", &key).await);
    let find = |p: &str| catalogue.iter().find(|e| e["permission"] == p).cloned();
    assert_eq!(find("users:read:all").unwrap()["built_in"], true);
    assert_eq!(find("document:read:all").unwrap()["built_in"], false);
    assert!(find("users:frobnicate:all").is_none());

    // A role can carry only a known permission.
    let before = items(&app.get("/api/v1/roles", &key).await).len();
    app.post(
        "/api/v1/roles",
        &key,
        &json!({"name": "writer", "display_name": "Writer", "permissions": ["document:write:all"]}),
    )
    .await
    .assert_problem(422, "validation_failed");
    assert_eq!(items(&app.get("/api/v1/roles", &key).await).len(), before);

    let reader = role(&app, &key, "reader", &["document:read:all"]).await;
    let u = user(&app, &key, "reader@example.com", None).await;
    let d = check(
        &app,
        &key,
        json!({"principal": u, "action": "document:read", "resource": {"type": "document", "id": "d-1"}}),
    )
    .await;
    assert_denied(&d, "no_permission");
    assign_ok(&app, &key, &u, &reader).await;
    let d = check(
        &app,
        &key,
        json!({"principal": u, "action": "document:read", "resource": {"type": "document", "id": "d-1"}}),
    )
    .await;
    assert_allowed(&d, "permission");
    assert_eq!(d["decision"]["permission"], "document:read:all");
    assert_eq!(d["decision"]["role_id"], reader.as_str());
    assert_eq!(d["decision"]["role_name"], "reader");
    assert!(d["decision"]["via_group_id"].is_null(), "{d}");
    assert_eq!(d["scope"], "all");
    // An action nobody defined is an invalid question; once defined, it is a plain no.
    let res = app
        .post(
            "/api/v1/authz/check",
            &key,
            &json!({"principal": u, "action": "document:write", "resource": {"type": "document"}}),
        )
        .await;
    res.assert_problem(422, "validation_failed");
    assert_eq!(res.body["errors"][0]["field"], "action", "{}", res.text);
    assert_eq!(
        res.body["errors"][0]["code"], "unknown_action",
        "{}",
        res.text
    );
    let res = app
        .post(
            "/api/v1/permissions",
            &key,
            &json!({"permission": "document:write:own"}),
        )
        .await;
    assert_eq!(res.status, 201, "{}", res.text);
    assert_denied(
        &decide(&app, &key, &u, "document:write").await,
        "no_permission",
    );
    // The new permission can now be put in a role.
    let res = app
        .send(
            Method::PUT,
            &format!("/api/v1/roles/{reader}/permissions"),
            Some(&key),
            Some(&json!({"add": ["document:write:own"]})),
            &[],
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.text);
    let d = check(
        &app,
        &key,
        json!({"principal": u, "action": "document:write",
               "resource": {"type": "document", "id": "d-2", "attributes": {"owner": u}}}),
    )
    .await;
    assert_allowed(&d, "permission");
    assert_eq!(d["scope"], "own");
    let d = check(
        &app,
        &key,
        json!({"principal": u, "action": "document:write",
               "resource": {"type": "document", "id": "d-3", "attributes": {"owner": NOBODY}}}),
    )
    .await;
    assert_denied(&d, "out_of_scope");
}

// --- enforcement on the administrative endpoints -------------------------------------

async fn plain_user_reaches_only_their_own_record(app: TestApp) {
    let key = app.admin_key.clone();
    let (me, token) = signed_user(&app, &key, "default", "ann@example.com", None).await;
    let other = user(&app, &key, "bob@example.com", None).await;
    let (_, acme_key) = app.create_tenant("acme", json!({})).await;
    let foreign = user(&app, &acme_key, "far@example.com", None).await;

    let perms = my_permissions(&app, &token).await;
    assert_eq!(perms["super_admin"], false);
    assert_eq!(
        strings(&perms["permissions"]),
        [
            "directory:read:all",
            "sessions:delete:own",
            "sessions:read:own",
            "users:read:own",
            "users:update:own"
        ]
    );

    // Administrative endpoints: 403 problem+json with the reason.
    for (method, path, body) in [
        (Method::GET, "/api/v1/roles".to_owned(), None),
        (Method::GET, "/api/v1/permissions".to_owned(), None),
        (Method::GET, "/api/v1/groups".to_owned(), None),
        (Method::GET, "/api/v1/policies".to_owned(), None),
        (Method::GET, "/api/v1/audit-events".to_owned(), None),
        (Method::GET, "/api/v1/settings/auth".to_owned(), None),
        (
            Method::POST,
            "/api/v1/users".to_owned(),
            Some(json!({"email": "new@example.com", "full_name": "New"})),
        ),
        (
            Method::POST,
            "/api/v1/roles".to_owned(),
            Some(json!({"name": "mine", "display_name": "Mine"})),
        ),
        (
            Method::POST,
            "/api/v1/groups".to_owned(),
            Some(json!({"name": "mine", "display_name": "Mine"})),
        ),
        (
            Method::POST,
            format!("/api/v1/users/{me}/roles"),
            Some(json!({"role_id": SUPER_ADMIN})),
        ),
        (
            Method::POST,
            "/api/v1/authz/check".to_owned(),
            Some(json!({"principal": me, "action": "users:read", "resource": {"type": "users"}})),
        ),
        (Method::DELETE, format!("/api/v1/users/{other}"), None),
    ] {
        let res = app
            .send(method.clone(), &path, Some(&token), body.as_ref(), &[])
            .await;
        assert_eq!(res.status, 403, "{method} {path}: {}", res.text);
        assert_eq!(
            res.header("content-type"),
            Some("application/problem+json"),
            "{method} {path}"
        );
        assert_eq!(
            res.body["code"], "forbidden",
            "{method} {path}: {}",
            res.text
        );
    }
    let res = app.get("/api/v1/roles", &token).await;
    res.assert_problem(403, "forbidden");
    assert_eq!(res.body["reason"]["kind"], "no_permission", "{}", res.text);
    let admin = role_id(&app, &key, "admin").await;
    assign(&app, &token, &me, &admin)
        .await
        .assert_problem(403, "forbidden");

    // Their own record: readable and (except the security fields) writable.
    let res = app.get(&format!("/api/v1/users/{me}"), &token).await;
    assert_eq!(res.status, 200, "{}", res.text);
    assert_eq!(res.body["email"], "ann@example.com");
    let res = app
        .patch(
            &format!("/api/v1/users/{me}"),
            &token,
            &json!({"phone": "+44 20 7946 0001"}),
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.text);
    for (field, body) in [
        ("department", json!({"department": "Board"})),
        ("clearance_level", json!({"clearance_level": 9})),
        ("manager_id", json!({"manager_id": other})),
        ("job_title", json!({"job_title": "Poet"})),
        ("email", json!({"email": "ann2@example.com"})),
        (
            "custom_attributes",
            json!({"custom_attributes": {"gdpr_consent": true}}),
        ),
    ] {
        let res = app
            .patch(&format!("/api/v1/users/{me}"), &token, &body)
            .await;
        res.assert_problem(403, "security_field");
        assert_eq!(res.error_fields(), vec![field]);
    }
    let list = app.get("/api/v1/users", &token).await;
    assert_eq!(list.status, 200, "{}", list.text);
    let ids: Vec<String> = items(&list).iter().map(id_of).collect();
    assert_eq!(ids, std::slice::from_ref(&me));
    // Filters still apply to what the caller reaches: their own record does not match.
    for filter in [
        "?department=Board",
        "?status=blocked",
        "?q=bob",
        "?deleted=only",
    ] {
        let list = app.get(&format!("/api/v1/users{filter}"), &token).await;
        assert_eq!(list.status, 200, "{}", list.text);
        assert!(items(&list).is_empty(), "{filter}: {}", list.text);
    }

    // Someone else's: 403 (out of scope); another tenant's: 404.
    let res = app.get(&format!("/api/v1/users/{other}"), &token).await;
    res.assert_problem(403, "forbidden");
    assert_eq!(res.body["reason"]["kind"], "out_of_scope", "{}", res.text);
    app.patch(
        &format!("/api/v1/users/{other}"),
        &token,
        &json!({"job_title": "Victim"}),
    )
    .await
    .assert_problem(403, "forbidden");
    app.get(&format!("/api/v1/users/{foreign}"), &token)
        .await
        .assert_problem(404, "not_found");
    app.get(&format!("/api/v1/users/{foreign}"), &key)
        .await
        .assert_problem(404, "not_found");
    let got = app.get(&format!("/api/v1/users/{other}"), &key).await;
    assert_ne!(got.body["job_title"], "Victim");
}

async fn manager_reaches_only_their_department(app: TestApp) {
    let key = app.admin_key.clone();
    let (mgr, token) = signed_user(&app, &key, "default", "mia@example.com", Some("Sales")).await;
    let s1 = user(&app, &key, "sam@example.com", Some("Sales")).await;
    let e1 = user(&app, &key, "eve@example.com", Some("Engineering")).await;
    let _nobody = user(&app, &key, "ned@example.com", None).await;
    let manager = role_id(&app, &key, "manager").await;
    assign_ok(&app, &key, &mgr, &manager).await;

    let list = app.get("/api/v1/users", &token).await;
    assert_eq!(list.status, 200, "{}", list.text);
    assert_eq!(
        set(items(&list).iter().map(id_of)),
        set([mgr.clone(), s1.clone()])
    );
    let list = app
        .get("/api/v1/users?department=Engineering", &token)
        .await;
    assert_eq!(list.status, 200, "{}", list.text);
    assert!(items(&list).is_empty(), "{}", list.text);

    assert_eq!(
        app.get(&format!("/api/v1/users/{s1}"), &token).await.status,
        200
    );
    let res = app.get(&format!("/api/v1/users/{e1}"), &token).await;
    res.assert_problem(403, "forbidden");
    assert_eq!(res.body["reason"]["kind"], "out_of_scope", "{}", res.text);
    assert_eq!(
        res.body["reason"]["permission"], "users:read:department",
        "{}",
        res.text
    );

    // Updates within the department, but not of the department itself nor of any other
    // field decisions read.
    let res = app
        .patch(
            &format!("/api/v1/users/{s1}"),
            &token,
            &json!({"phone": "+44 20 7946 0002"}),
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.text);
    for (target, body, code) in [
        (&s1, json!({"department": "Engineering"}), "security_field"),
        (&s1, json!({"job_title": "Closer"}), "security_field"),
        (&mgr, json!({"department": "Engineering"}), "security_field"),
        (&e1, json!({"phone": "+44 20 7946 0003"}), "forbidden"),
    ] {
        app.patch(&format!("/api/v1/users/{target}"), &token, &body)
            .await
            .assert_problem(403, code);
    }
    let got = app.get(&format!("/api/v1/users/{s1}"), &key).await;
    assert_eq!(got.body["department"], "Sales");

    // An administrator moves Sam: the manager stops reaching him at once.
    patch_ok(
        &app,
        &key,
        &format!("/api/v1/users/{s1}"),
        json!({"department": "Engineering"}),
    )
    .await;
    app.get(&format!("/api/v1/users/{s1}"), &token)
        .await
        .assert_problem(403, "forbidden");
    let list = app.get("/api/v1/users", &token).await;
    assert_eq!(set(items(&list).iter().map(id_of)), set([mgr.clone()]));
}

// --- groups and inheritance ----------------------------------------------------------

async fn roles_inherited_through_three_levels_of_groups(app: TestApp) {
    let key = app.admin_key.clone();
    let auditor = role(&app, &key, "auditor", &["audit_logs:read:all"]).await;
    let top = group(&app, &key, "top", None).await;
    let mid = group(&app, &key, "mid", Some(&top)).await;
    let bottom = group(&app, &key, "bottom", Some(&mid)).await;
    let (u, token) = signed_user(&app, &key, "default", "ivy@example.com", None).await;
    add_member_ok(&app, &key, &bottom, &u).await;
    assert_denied(
        &decide(&app, &key, &u, "audit_logs:read").await,
        "no_permission",
    );
    app.get("/api/v1/audit-events", &token)
        .await
        .assert_problem(403, "forbidden");

    let res = app
        .post(
            &format!("/api/v1/groups/{top}/roles"),
            &key,
            &json!({"role_id": auditor}),
        )
        .await;
    assert_eq!(res.status, 201, "{}", res.text);
    let res = app.get(&format!("/api/v1/groups/{top}/roles"), &key).await;
    assert_eq!(res.status, 200, "{}", res.text);
    assert_eq!(
        items(&res).iter().map(id_of).collect::<Vec<_>>(),
        std::slice::from_ref(&auditor)
    );
    let res = app
        .get(&format!("/api/v1/groups/{bottom}/roles"), &key)
        .await;
    assert!(
        items(&res).is_empty(),
        "only the group's own roles: {}",
        res.text
    );

    let inherited = |d: &Value| {
        assert_allowed(d, "permission");
        assert_eq!(d["decision"]["role_id"], auditor.as_str(), "{d}");
        assert_eq!(d["decision"]["role_name"], "auditor", "{d}");
        assert_eq!(d["decision"]["via_group_id"], top.as_str(), "{d}");
        assert_eq!(d["decision"]["via_group_name"], "top", "{d}");
        assert_eq!(d["decision"]["permission"], "audit_logs:read:all", "{d}");
    };
    inherited(&decide(&app, &key, &u, "audit_logs:read").await);
    let perms = my_permissions(&app, &token).await;
    assert!(
        strings(&perms["permissions"]).contains(&"audit_logs:read:all".to_owned()),
        "{perms}"
    );
    let grant = perms["grants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["permission"] == "audit_logs:read:all")
        .unwrap_or_else(|| panic!("{perms}"))
        .clone();
    assert_eq!(grant["via_group_id"], top.as_str());
    assert_eq!(grant["role_name"], "auditor");
    // The endpoints honour it too.
    assert_eq!(app.get("/api/v1/audit-events", &token).await.status, 200);

    // Removing the membership: the very next check denies; adding it back allows.
    delete_ok(&app, &key, &format!("/api/v1/groups/{bottom}/members/{u}")).await;
    assert_denied(
        &decide(&app, &key, &u, "audit_logs:read").await,
        "no_permission",
    );
    app.get("/api/v1/audit-events", &token)
        .await
        .assert_problem(403, "forbidden");
    add_member_ok(&app, &key, &bottom, &u).await;
    inherited(&decide(&app, &key, &u, "audit_logs:read").await);

    // Cutting the chain (mid becomes a root), then restoring it.
    patch_ok(
        &app,
        &key,
        &format!("/api/v1/groups/{mid}"),
        json!({"parent_id": null}),
    )
    .await;
    assert_denied(
        &decide(&app, &key, &u, "audit_logs:read").await,
        "no_permission",
    );
    patch_ok(
        &app,
        &key,
        &format!("/api/v1/groups/{mid}"),
        json!({"parent_id": top}),
    )
    .await;
    inherited(&decide(&app, &key, &u, "audit_logs:read").await);
    // Moving the bottom group straight under the top keeps the grant.
    patch_ok(
        &app,
        &key,
        &format!("/api/v1/groups/{bottom}"),
        json!({"parent_id": top}),
    )
    .await;
    inherited(&decide(&app, &key, &u, "audit_logs:read").await);
    patch_ok(
        &app,
        &key,
        &format!("/api/v1/groups/{bottom}"),
        json!({"parent_id": mid}),
    )
    .await;

    // An inactive group in the chain passes nothing on.
    patch_ok(
        &app,
        &key,
        &format!("/api/v1/groups/{mid}"),
        json!({"active": false}),
    )
    .await;
    assert_denied(
        &decide(&app, &key, &u, "audit_logs:read").await,
        "no_permission",
    );
    patch_ok(
        &app,
        &key,
        &format!("/api/v1/groups/{mid}"),
        json!({"active": true}),
    )
    .await;
    inherited(&decide(&app, &key, &u, "audit_logs:read").await);

    // Revoking the group's role.
    delete_ok(&app, &key, &format!("/api/v1/groups/{top}/roles/{auditor}")).await;
    assert_denied(
        &decide(&app, &key, &u, "audit_logs:read").await,
        "no_permission",
    );
    let perms = my_permissions(&app, &token).await;
    assert!(
        !strings(&perms["permissions"]).contains(&"audit_logs:read:all".to_owned()),
        "{perms}"
    );
    app.delete(&format!("/api/v1/groups/{top}/roles/{auditor}"), &key)
        .await
        .assert_problem(404, "not_found");
}

async fn every_change_is_seen_by_the_next_check(app: TestApp) {
    let key = app.admin_key.clone();
    let r = role(&app, &key, "auditor", &["audit_logs:read:all"]).await;
    let u = user(&app, &key, "una@example.com", None).await;
    let risky = json!({"risk_score": 80});
    let calm = json!({"risk_score": 10});
    // Each check below follows a check that filled the cache.
    assert_denied(
        &decide(&app, &key, &u, "audit_logs:read").await,
        "no_permission",
    );

    // Assignment.
    assign_ok(&app, &key, &u, &r).await;
    assert_allowed(
        &decide(&app, &key, &u, "audit_logs:read").await,
        "permission",
    );

    // Role permission change.
    let put = |add: Vec<&'static str>, remove: Vec<&'static str>| {
        let (app, key, r) = (&app, key.clone(), r.clone());
        async move {
            let res = app
                .send(
                    Method::PUT,
                    &format!("/api/v1/roles/{r}/permissions"),
                    Some(&key),
                    Some(&json!({"add": add, "remove": remove})),
                    &[],
                )
                .await;
            assert_eq!(res.status, 200, "{}", res.text);
        }
    };
    put(vec![], vec!["audit_logs:read:all"]).await;
    assert_denied(
        &decide(&app, &key, &u, "audit_logs:read").await,
        "no_permission",
    );
    put(vec!["audit_logs:read:all"], vec![]).await;
    assert_allowed(
        &decide(&app, &key, &u, "audit_logs:read").await,
        "permission",
    );

    // Role deactivation.
    let role_path = format!("/api/v1/roles/{r}");
    patch_ok(&app, &key, &role_path, json!({"active": false})).await;
    assert_denied(
        &decide(&app, &key, &u, "audit_logs:read").await,
        "no_permission",
    );
    patch_ok(&app, &key, &role_path, json!({"active": true})).await;
    assert_allowed(
        &decide(&app, &key, &u, "audit_logs:read").await,
        "permission",
    );

    // Policy creation, update (deactivation, change of source), deletion.
    let p = create_policy(
        &app,
        &key,
        "no_risky_audit",
        r#"forbid(principal, action == Action::"audit_logs:read", resource) when { context.risk_score > 50 };"#,
    )
    .await;
    let pid = id_of(&p);
    let d = decide_in(&app, &key, &u, "audit_logs:read", risky.clone()).await;
    assert_denied(&d, "policy_forbid");
    assert_eq!(d["decision"]["policy_id"], pid.as_str());
    assert_allowed(
        &decide_in(&app, &key, &u, "audit_logs:read", calm.clone()).await,
        "permission",
    );
    let policy_path = format!("/api/v1/policies/{pid}");
    patch_ok(&app, &key, &policy_path, json!({"active": false})).await;
    assert_allowed(
        &decide_in(&app, &key, &u, "audit_logs:read", risky.clone()).await,
        "permission",
    );
    patch_ok(&app, &key, &policy_path, json!({"active": true})).await;
    assert_denied(
        &decide_in(&app, &key, &u, "audit_logs:read", risky.clone()).await,
        "policy_forbid",
    );
    patch_ok(
        &app,
        &key,
        &policy_path,
        json!({"source": r#"forbid(principal, action == Action::"audit_logs:read", resource) when { context.risk_score > 90 };"#}),
    )
    .await;
    assert_allowed(
        &decide_in(&app, &key, &u, "audit_logs:read", risky.clone()).await,
        "permission",
    );
    assert_denied(
        &decide_in(&app, &key, &u, "audit_logs:read", json!({"risk_score": 95})).await,
        "policy_forbid",
    );
    delete_ok(&app, &key, &policy_path).await;
    assert_allowed(
        &decide_in(&app, &key, &u, "audit_logs:read", json!({"risk_score": 95})).await,
        "permission",
    );

    // The user's status.
    let user_path = format!("/api/v1/users/{u}");
    patch_ok(&app, &key, &user_path, json!({"status": "blocked"})).await;
    let d = decide(&app, &key, &u, "audit_logs:read").await;
    assert_denied(&d, "principal_inactive");
    assert_eq!(d["decision"]["status"], "blocked");
    patch_ok(&app, &key, &user_path, json!({"status": "active"})).await;
    assert_allowed(
        &decide(&app, &key, &u, "audit_logs:read").await,
        "permission",
    );

    // Unassignment.
    let res = unassign(&app, &key, &u, &r).await;
    assert_eq!(res.status, 200, "{}", res.text);
    assert_denied(
        &decide(&app, &key, &u, "audit_logs:read").await,
        "no_permission",
    );

    // Membership addition (with a role on the group), group deactivation.
    let g = group(&app, &key, "auditors", None).await;
    let res = app
        .post(
            &format!("/api/v1/groups/{g}/roles"),
            &key,
            &json!({"role_id": r}),
        )
        .await;
    assert_eq!(res.status, 201, "{}", res.text);
    assert_denied(
        &decide(&app, &key, &u, "audit_logs:read").await,
        "no_permission",
    );
    add_member_ok(&app, &key, &g, &u).await;
    assert_allowed(
        &decide(&app, &key, &u, "audit_logs:read").await,
        "permission",
    );
    patch_ok(
        &app,
        &key,
        &format!("/api/v1/groups/{g}"),
        json!({"active": false}),
    )
    .await;
    assert_denied(
        &decide(&app, &key, &u, "audit_logs:read").await,
        "no_permission",
    );
    patch_ok(
        &app,
        &key,
        &format!("/api/v1/groups/{g}"),
        json!({"active": true}),
    )
    .await;
    assert_allowed(
        &decide(&app, &key, &u, "audit_logs:read").await,
        "permission",
    );

    // Role deletion takes it from the group's members.
    delete_ok(&app, &key, &role_path).await;
    assert_denied(
        &decide(&app, &key, &u, "audit_logs:read").await,
        "no_permission",
    );

    // Deletion of the user.
    delete_ok(&app, &key, &user_path).await;
    assert_denied(
        &decide(&app, &key, &u, "audit_logs:read").await,
        "principal_deleted",
    );
}

async fn time_bound_role_expires(app: TestApp) {
    let key = app.admin_key.clone();
    let r = role(&app, &key, "temporary", &["audit_logs:read:all"]).await;
    let (u, token) = signed_user(&app, &key, "default", "tim@example.com", None).await;
    let path = format!("/api/v1/users/{u}/roles");

    for (expires_at, code) in [
        (
            rfc3339(Utc::now() - chrono::TimeDelta::minutes(1)),
            "in_the_past",
        ),
        (
            rfc3339(Utc::now() + chrono::TimeDelta::days(4000)),
            "too_far",
        ),
        ("tomorrow".to_owned(), "invalid_timestamp"),
    ] {
        let res = app
            .post(
                &path,
                &key,
                &json!({"role_id": r, "expires_at": expires_at}),
            )
            .await;
        res.assert_problem(422, "validation_failed");
        assert_eq!(res.body["errors"][0]["field"], "expires_at", "{}", res.text);
        assert_eq!(res.body["errors"][0]["code"], code, "{}", res.text);
    }

    let expires = Utc::now() + chrono::TimeDelta::seconds(3);
    let res = app
        .post(
            &path,
            &key,
            &json!({"role_id": r, "expires_at": rfc3339(expires)}),
        )
        .await;
    assert_eq!(res.status, 201, "{}", res.text);
    assert!(res.body["expires_at"].is_string(), "{}", res.text);
    assert_eq!(res.body["role_name"], "temporary");
    assert_eq!(res.body["assigned_by_type"], "api_key");
    assert_allowed(
        &decide(&app, &key, &u, "audit_logs:read").await,
        "permission",
    );
    let perms = my_permissions(&app, &token).await;
    let grant = perms["grants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["permission"] == "audit_logs:read:all")
        .unwrap_or_else(|| panic!("{perms}"))
        .clone();
    assert!(grant["expires_at"].is_string(), "{grant}");
    // Judged at the time of the question.
    let later = rfc3339(expires + chrono::TimeDelta::seconds(1));
    assert_denied(
        &decide_in(&app, &key, &u, "audit_logs:read", json!({"time": later})).await,
        "no_permission",
    );

    let wait = (expires - Utc::now()).to_std().unwrap_or_default() + Duration::from_millis(300);
    tokio::time::sleep(wait).await;
    assert_denied(
        &decide(&app, &key, &u, "audit_logs:read").await,
        "no_permission",
    );
    let perms = my_permissions(&app, &token).await;
    assert!(
        !strings(&perms["permissions"]).contains(&"audit_logs:read:all".to_owned()),
        "{perms}"
    );
    app.get("/api/v1/audit-events", &token)
        .await
        .assert_problem(403, "forbidden");
    // The expired assignment is still listed, with its expiry.
    let res = app.get(&path, &key).await;
    assert_eq!(res.status, 200, "{}", res.text);
    let held = items(&res);
    let a = held.iter().find(|a| a["role_id"] == r.as_str()).unwrap();
    assert!(a["expires_at"].is_string());

    // Giving it again changes the expiry (200): allowed again.
    let res = app
        .post(
            &path,
            &key,
            &json!({"role_id": r, "expires_at": rfc3339(Utc::now() + chrono::TimeDelta::hours(1))}),
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.text);
    assert_allowed(
        &decide(&app, &key, &u, "audit_logs:read").await,
        "permission",
    );
}

// --- policies ------------------------------------------------------------------------

async fn forbid_overrides_permit_and_policies_are_validated(app: TestApp) {
    let key = app.admin_key.clone();
    let res = app
        .post(
            "/api/v1/permissions",
            &key,
            &json!({"permission": "document:read:all"}),
        )
        .await;
    assert_eq!(res.status, 201, "{}", res.text);
    let reader = role(&app, &key, "reader", &["document:read:all"]).await;
    let holder = user(&app, &key, "holder@example.com", None).await;
    let guest = user(&app, &key, "guest@example.com", None).await;
    let stranger = user(&app, &key, "stranger@example.com", None).await;
    assign_ok(&app, &key, &holder, &reader).await;
    let ask = |who: &str, risk: i64| {
        json!({"principal": who, "action": "document:read",
               "resource": {"type": "document", "id": "doc-1"},
               "context": {"risk_score": risk}})
    };

    let forbid = create_policy(
        &app,
        &key,
        "no_risky_reads",
        r#"forbid(principal, action == Action::"document:read", resource) when { context.risk_score > 50 };"#,
    )
    .await;
    assert_eq!(forbid["effect"], "forbid");
    assert_eq!(forbid["version"], 1);
    assert_eq!(forbid["active"], true);
    let fid = id_of(&forbid);
    let d = check(&app, &key, ask(&holder, 80)).await;
    assert_denied(&d, "policy_forbid");
    assert_eq!(d["decision"]["policy_id"], fid.as_str());
    assert_eq!(d["decision"]["policy_name"], "no_risky_reads");
    assert!(d["scope"].is_null(), "{d}");
    assert_allowed(&check(&app, &key, ask(&holder, 20)).await, "permission");

    // A permit lets in someone no role allows; the forbid still wins over it.
    assert_denied(&check(&app, &key, ask(&guest, 0)).await, "no_permission");
    let permit = create_policy(
        &app,
        &key,
        "guest_reads",
        &format!(
            r#"permit(principal == User::"{guest}", action == Action::"document:read", resource);"#
        ),
    )
    .await;
    assert_eq!(permit["effect"], "permit");
    let d = check(&app, &key, ask(&guest, 0)).await;
    assert_allowed(&d, "policy_permit");
    assert_eq!(d["decision"]["policy_id"], id_of(&permit).as_str());
    assert_eq!(d["scope"], "all");
    assert_denied(&check(&app, &key, ask(&guest, 80)).await, "policy_forbid");
    assert_denied(&check(&app, &key, ask(&stranger, 0)).await, "no_permission");

    // Invalid policies: 422 naming the error; nothing stored.
    let count = items(&app.get("/api/v1/policies", &key).await).len();
    assert_eq!(count, 2);
    for (name, source, needle) in [
        ("broken", "permit(principal, action, resource) when {", ""),
        (
            "shoe_size",
            r#"permit(principal, action, resource) when { principal.shoe_size > 3 };"#,
            "shoe_size",
        ),
        (
            "two_statements",
            "permit(principal, action, resource);\nforbid(principal, action, resource);",
            "",
        ),
        (
            "unknown_action",
            r#"permit(principal, action == Action::"spaceship:launch", resource);"#,
            "spaceship:launch",
        ),
    ] {
        let res = app
            .post(
                "/api/v1/policies",
                &key,
                &json!({"name": name, "source": source, "active": true}),
            )
            .await;
        res.assert_problem(422, "validation_failed");
        let e = &res.body["errors"][0];
        assert_eq!(e["field"], "source", "{name}: {}", res.text);
        assert_eq!(e["code"], "invalid_policy", "{name}: {}", res.text);
        let message = e["message"].as_str().unwrap_or_default();
        assert!(!message.is_empty(), "{name}: {}", res.text);
        assert!(message.contains(needle), "{name}: {}", res.text);
    }
    let res = app
        .post(
            "/api/v1/policies",
            &key,
            &json!({"name": "empty", "source": "  ", "active": true}),
        )
        .await;
    res.assert_problem(422, "validation_failed");
    assert_eq!(res.body["errors"][0]["field"], "source", "{}", res.text);
    assert_eq!(items(&app.get("/api/v1/policies", &key).await).len(), count);
    app.post(
        "/api/v1/policies",
        &key,
        &json!({"name": "guest_reads", "source": "permit(principal, action, resource);"}),
    )
    .await
    .assert_problem(409, "policy_name_taken");

    // Versions, ETags and If-Match.
    let path = format!("/api/v1/policies/{fid}");
    let got = app.get(&path, &key).await;
    assert_eq!(got.status, 200, "{}", got.text);
    assert_eq!(got.header("etag"), Some("\"1\""));
    assert_eq!(got.body["source"], forbid["source"]);
    let relaxed = r#"forbid(principal, action == Action::"document:read", resource) when { context.risk_score > 70 };"#;
    let res = app
        .send(
            Method::PATCH,
            &path,
            Some(&key),
            Some(&json!({"source": relaxed})),
            &[("if-match", "\"1\"")],
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.text);
    assert_eq!(res.body["version"], 2);
    assert_eq!(res.header("etag"), Some("\"2\""));
    let res = app
        .send(
            Method::PATCH,
            &path,
            Some(&key),
            Some(&json!({"source": forbid["source"]})),
            &[("if-match", "\"1\"")],
        )
        .await;
    res.assert_problem(412, "precondition_failed");
    let res = app
        .patch(
            &path,
            &key,
            &json!({"source": "forbid(principal, action, resource) when { principal.nope };"}),
        )
        .await;
    res.assert_problem(422, "validation_failed");
    let got = app.get(&path, &key).await;
    assert_eq!(got.body["version"], 2);
    assert_eq!(got.body["source"], relaxed);
    assert_allowed(&check(&app, &key, ask(&holder, 60)).await, "permission");
    assert_denied(&check(&app, &key, ask(&holder, 80)).await, "policy_forbid");

    let res = app.get(&format!("{path}/versions"), &key).await;
    assert_eq!(res.status, 200, "{}", res.text);
    let versions = items(&res);
    assert_eq!(
        versions
            .iter()
            .map(|v| v["version"].clone())
            .collect::<Vec<_>>(),
        [json!(2), json!(1)],
        "{}",
        res.text
    );
    assert_eq!(versions[0]["source"], relaxed);
    assert_eq!(versions[1]["source"], forbid["source"]);

    // The schema, for authors.
    let res = app.get("/api/v1/policies/schema", &key).await;
    assert_eq!(res.status, 200, "{}", res.text);
    let schema = res.body["schema"].as_str().unwrap_or_default();
    for needle in ["risk_score", "document:read", "clearance_level"] {
        assert!(schema.contains(needle), "{needle}: {}", res.text);
    }

    // Another tenant does not see them.
    let (_, acme) = app.create_tenant("acme", json!({})).await;
    app.get(&path, &acme).await.assert_problem(404, "not_found");
    assert!(items(&app.get("/api/v1/policies", &acme).await).is_empty());

    let res = app.delete(&path, &key).await;
    assert_eq!(res.status, 200, "{}", res.text);
    app.get(&path, &key).await.assert_problem(404, "not_found");
    assert_allowed(&check(&app, &key, ask(&holder, 99)).await, "permission");
}

fn example_policies() -> Vec<(String, String)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/policies");
    let mut out: Vec<(String, String)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "cedar"))
        .map(|p| {
            (
                p.file_stem().unwrap().to_str().unwrap().to_owned(),
                std::fs::read_to_string(&p).unwrap(),
            )
        })
        .collect();
    out.sort();
    out
}

async fn example_policies_are_accepted_and_decide(app: TestApp) {
    let key = app.admin_key.clone();
    let examples = example_policies();
    let names: Vec<&str> = examples.iter().map(|(n, _)| n.as_str()).collect();
    for expected in [
        "working_hours",
        "business_days",
        "reports_to",
        "in_org_tree",
        "risk_below",
        "trusted_device",
        "gdpr_consented",
        "data_classified",
    ] {
        assert!(
            names.contains(&expected),
            "docs/policies/{expected}.cedar missing"
        );
    }
    // Each is accepted as written (inactive, so that they do not interfere).
    let mut ids = std::collections::HashMap::new();
    for (name, source) in &examples {
        let res = app
            .post(
                "/api/v1/policies",
                &key,
                &json!({"name": name, "source": source, "active": false}),
            )
            .await;
        assert_eq!(res.status, 201, "docs/policies/{name}.cedar: {}", res.text);
        assert_eq!(res.body["active"], false);
        ids.insert(name.clone(), id_of(&res.body));
    }

    // A role allows reading users and documents; the example decides on top of it.
    let res = app
        .post(
            "/api/v1/permissions",
            &key,
            &json!({"permission": "document:read:all"}),
        )
        .await;
    assert_eq!(res.status, 201, "{}", res.text);
    let r = role(
        &app,
        &key,
        "reader",
        &[
            "users:read:all",
            "users:update:all",
            "users:export:all",
            "document:read:all",
        ],
    )
    .await;
    let u = id_of(
        &app.create_user(
            &key,
            json!({"email": "cleo@example.com", "full_name": "Cleo", "clearance_level": 3,
                   "department": "Research"}),
        )
        .await,
    );
    assign_ok(&app, &key, &u, &r).await;
    let activate = |name: &str, active: bool| {
        let path = format!("/api/v1/policies/{}", ids[name]);
        let (app, key) = (&app, key.clone());
        async move {
            patch_ok(app, &key, &path, json!({"active": active})).await;
        }
    };

    // working_hours: changing users inside hours is allowed, outside it is forbidden
    // whatever the roles; other actions are not concerned.
    activate("working_hours", true).await;
    let at = |time: &str, action: &str| {
        json!({"principal": u, "action": action,
               "resource": {"type": "users", "id": NOBODY},
               "context": {"time": time}})
    };
    // A Wednesday.
    let inside = check(&app, &key, at("2025-06-11T10:30:00+02:00", "users:update")).await;
    assert_allowed(&inside, "permission");
    for time in [
        "2025-06-11T23:30:00+02:00",
        "2025-06-11T08:59:00+02:00",
        "2025-06-11T17:00:00+02:00",
    ] {
        let outside = check(&app, &key, at(time, "users:update")).await;
        assert_denied(&outside, "policy_forbid");
        assert_eq!(
            outside["decision"]["policy_id"],
            ids["working_hours"].as_str()
        );
        assert_eq!(outside["decision"]["policy_name"], "working_hours");
    }
    // The hour is the local hour of the time given: 21:30 UTC is 09:30 in Auckland.
    let local = check(&app, &key, at("2025-06-12T09:30:00+12:00", "users:update")).await;
    assert_allowed(&local, "permission");
    let utc = check(&app, &key, at("2025-06-11T21:30:00Z", "users:update")).await;
    assert_denied(&utc, "policy_forbid");
    let read = check(&app, &key, at("2025-06-11T23:30:00+02:00", "users:read")).await;
    assert_allowed(&read, "permission");
    activate("working_hours", false).await;
    let d = check(&app, &key, at("2025-06-11T23:30:00+02:00", "users:update")).await;
    assert_allowed(&d, "permission");

    // business_days: exports on a Saturday are forbidden, on a Friday allowed.
    activate("business_days", true).await;
    let d = check(&app, &key, at("2025-06-14T10:00:00+02:00", "users:export")).await;
    assert_denied(&d, "policy_forbid");
    let d = check(&app, &key, at("2025-06-13T10:00:00+02:00", "users:export")).await;
    assert_allowed(&d, "permission");
    activate("business_days", false).await;

    // data_classified: a resource classified above the principal's clearance is refused.
    activate("data_classified", true).await;
    let doc = |classification: i64| {
        json!({"principal": u, "action": "document:read",
               "resource": {"type": "document", "id": "d-2",
                            "attributes": {"classification": classification}}})
    };
    for c in [0, 2, 3] {
        let d = check(&app, &key, doc(c)).await;
        assert_eq!(
            d["allowed"], true,
            "classification {c} with clearance 3: {d}"
        );
    }
    let unclassified = json!({"principal": u, "action": "document:read",
                              "resource": {"type": "document", "id": "d-3"}});
    assert_allowed(&check(&app, &key, unclassified).await, "permission");
    for c in [4, 9] {
        let d = check(&app, &key, doc(c)).await;
        assert_denied(&d, "policy_forbid");
        assert_eq!(d["decision"]["policy_id"], ids["data_classified"].as_str());
    }
    // Raising the clearance is seen at once.
    patch_ok(
        &app,
        &key,
        &format!("/api/v1/users/{u}"),
        json!({"clearance_level": 9}),
    )
    .await;
    assert_eq!(check(&app, &key, doc(9)).await["allowed"], true);
    activate("data_classified", false).await;
}

// --- the super administrator ---------------------------------------------------------

async fn last_super_admin_is_protected(app: TestApp) {
    let key = app.admin_key.clone();
    let (root, root_token) = signed_user(&app, &key, "default", "root@example.com", None).await;
    let second = user(&app, &key, "second@example.com", None).await;
    let (admin_user, admin_token) =
        signed_user(&app, &key, "default", "admin@example.com", None).await;
    let admin = role_id(&app, &key, "admin").await;
    assign_ok(&app, &key, &admin_user, &admin).await;
    let (_, acme_key) = app.create_tenant("acme", json!({})).await;
    let acme_user = user(&app, &acme_key, "acme@example.com", None).await;

    // Nobody below a platform administrator gives the role.
    assign(&app, &acme_key, &acme_user, SUPER_ADMIN)
        .await
        .assert_problem(403, "super_admin_required");
    assign(&app, &admin_token, &second, SUPER_ADMIN)
        .await
        .assert_problem(403, "super_admin_required");
    assign(&app, &admin_token, &admin_user, SUPER_ADMIN)
        .await
        .assert_problem(403, "own_assignment");
    app.get("/api/v1/tenants", &root_token)
        .await
        .assert_problem(403, "platform_admin_required");

    // The platform-admin key does.
    let res = assign(&app, &key, &root, SUPER_ADMIN).await;
    assert_eq!(res.status, 201, "{}", res.text);
    assert_eq!(res.body["role_name"], "super_admin");
    let res = app.get("/api/v1/tenants", &root_token).await;
    assert_eq!(res.status, 200, "{}", res.text);
    let perms = my_permissions(&app, &root_token).await;
    assert_eq!(perms["super_admin"], true, "{perms}");
    assert_allowed(
        &decide(&app, &key, &root, "users:delete").await,
        "super_admin",
    );
    assert_eq!(
        app.get("/api/v1/audit-events", &root_token).await.status,
        200
    );

    // The only holder keeps it: no unassignment, block, suspension or deletion.
    unassign(&app, &key, &root, SUPER_ADMIN)
        .await
        .assert_problem(409, "last_super_admin");
    for status in ["blocked", "suspended", "inactive"] {
        app.patch(
            &format!("/api/v1/users/{root}"),
            &key,
            &json!({"status": status}),
        )
        .await
        .assert_problem(409, "last_super_admin");
    }
    app.delete(&format!("/api/v1/users/{root}"), &key)
        .await
        .assert_problem(409, "last_super_admin");
    // A tenant administrator cannot take it away either.
    unassign(&app, &admin_token, &root, SUPER_ADMIN)
        .await
        .assert_problem(403, "super_admin_required");
    assert_eq!(app.get("/api/v1/tenants", &root_token).await.status, 200);
    let res = app.get(&format!("/api/v1/users/{root}"), &key).await;
    assert_eq!(res.body["status"], "active");
    assert!(res.body["deleted_at"].is_null());

    // A super administrator gives it to a second user; then one of them can go.
    let res = assign(&app, &root_token, &second, SUPER_ADMIN).await;
    assert_eq!(res.status, 201, "{}", res.text);
    let res = unassign(&app, &key, &root, SUPER_ADMIN).await;
    assert_eq!(res.status, 200, "{}", res.text);
    app.get("/api/v1/tenants", &root_token)
        .await
        .assert_problem(403, "platform_admin_required");
    assert_eq!(
        my_permissions(&app, &root_token).await["super_admin"],
        false
    );
    // Now the second is the last one.
    app.delete(&format!("/api/v1/users/{second}"), &key)
        .await
        .assert_problem(409, "last_super_admin");
    app.patch(
        &format!("/api/v1/users/{second}"),
        &key,
        &json!({"status": "blocked"}),
    )
    .await
    .assert_problem(409, "last_super_admin");
    let res = assign(&app, &key, &root, SUPER_ADMIN).await;
    assert_eq!(res.status, 201, "{}", res.text);
    let res = app.delete(&format!("/api/v1/users/{second}"), &key).await;
    assert_eq!(res.status, 200, "{}", res.text);
    // A deleted holder does not count: root is the last again.
    unassign(&app, &key, &root, SUPER_ADMIN)
        .await
        .assert_problem(409, "last_super_admin");
}

async fn no_self_escalation(app: TestApp) {
    let key = app.admin_key.clone();
    let assigner = role(
        &app,
        &key,
        "assigner",
        &[
            "roles:assign:all",
            "roles:read:all",
            "roles:update:all",
            "roles:create:all",
            "users:read:all",
        ],
    )
    .await;
    let deleter = role(&app, &key, "deleter", &["users:delete:all"]).await;
    let reader = role(&app, &key, "reader", &["users:read:all"]).await;
    let admin = role_id(&app, &key, "admin").await;
    let (u, token) = signed_user(&app, &key, "default", "esc@example.com", None).await;
    let v = user(&app, &key, "vic@example.com", None).await;
    assign_ok(&app, &key, &u, &assigner).await;

    // Not to themselves, whatever the role…
    for role in [&deleter, &admin, &reader] {
        assign(&app, &token, &u, role)
            .await
            .assert_problem(403, "own_assignment");
    }
    // …and to others only what they hold, naming what they lack.
    let res = assign(&app, &token, &v, &deleter).await;
    res.assert_problem(403, "cannot_grant_unheld");
    assert_eq!(
        res.body["reason"]["missing"],
        json!(["users:delete:all"]),
        "{}",
        res.text
    );
    // Nor by adding the permission to a role they hold, or by making a new role.
    app.send(
        Method::PUT,
        &format!("/api/v1/roles/{assigner}/permissions"),
        Some(&token),
        Some(&json!({"add": ["users:delete:all"]})),
        &[],
    )
    .await
    .assert_problem(403, "cannot_grant_unheld");
    app.post(
        "/api/v1/roles",
        &token,
        &json!({"name": "sneaky", "display_name": "Sneaky", "permissions": ["users:delete:all"]}),
    )
    .await
    .assert_problem(403, "cannot_grant_unheld");
    // Wider scope than held is also refused.
    app.send(
        Method::PUT,
        &format!("/api/v1/roles/{assigner}/permissions"),
        Some(&token),
        Some(&json!({"add": ["sessions:read:all"]})),
        &[],
    )
    .await
    .assert_problem(403, "cannot_grant_unheld");
    let res = app.get(&format!("/api/v1/users/{u}/roles"), &token).await;
    assert_eq!(res.status, 200, "{}", res.text);
    let held = set(items(&res)
        .iter()
        .map(|a| a["role_id"].as_str().unwrap().to_owned()));
    assert!(
        !held.contains(&deleter) && !held.contains(&admin),
        "{}",
        res.text
    );
    assert_denied(
        &decide(&app, &key, &u, "users:delete").await,
        "no_permission",
    );
    let got = app.get(&format!("/api/v1/roles/{assigner}"), &key).await;
    assert!(!strings(&got.body["permissions"]).contains(&"users:delete:all".to_owned()));

    // What they hold, they can give.
    let res = assign(&app, &token, &v, &reader).await;
    assert_eq!(res.status, 201, "{}", res.text);
    assert_eq!(res.body["assigned_by_type"], "user");
    assert_eq!(res.body["assigned_by"], u.as_str());
}

// --- groups --------------------------------------------------------------------------

async fn groups_crud_counts_tree_and_cycles(app: TestApp) {
    let key = app.admin_key.clone();
    let res = app
        .post(
            "/api/v1/groups",
            &key,
            &json!({"name": "engineering", "display_name": "Engineering",
                    "description": "Builders", "group_type": "department",
                    "settings": {"color": "blue"}}),
        )
        .await;
    assert_eq!(res.status, 201, "{}", res.text);
    let eng = res.body.clone();
    let eng_id = id_of(&eng);
    assert_eq!(eng["group_type"], "department");
    assert!(eng["parent_id"].is_null());
    assert_eq!(eng["active"], true);
    assert_eq!(eng["settings"]["color"], "blue");
    let res = app
        .post(
            "/api/v1/groups",
            &key,
            &json!({"name": "backend", "display_name": "Backend", "group_type": "team",
                    "parent_id": eng_id, "max_members": 10}),
        )
        .await;
    assert_eq!(res.status, 201, "{}", res.text);
    let backend = id_of(&res.body);
    assert_eq!(res.body["max_members"], 10);
    assert_eq!(res.body["parent_id"], eng_id.as_str());
    let frontend = group(&app, &key, "frontend", Some(&eng_id)).await;
    let platform = group(&app, &key, "platform", Some(&backend)).await;
    let sales = group(&app, &key, "sales", None).await;

    // Refusals.
    app.post(
        "/api/v1/groups",
        &key,
        &json!({"name": "backend", "display_name": "Again"}),
    )
    .await
    .assert_problem(409, "group_name_taken");
    for (body, field) in [
        (
            json!({"name": "x", "display_name": "X", "group_type": "squad"}),
            "group_type",
        ),
        (json!({"name": "Bad Name", "display_name": "X"}), "name"),
        (
            json!({"name": "x", "display_name": "X", "parent_id": NOBODY}),
            "parent_id",
        ),
        (
            json!({"name": "x", "display_name": "X", "parent_id": "nope"}),
            "parent_id",
        ),
        (
            json!({"name": "x", "display_name": "X", "max_members": -1}),
            "max_members",
        ),
    ] {
        let res = app.post("/api/v1/groups", &key, &body).await;
        assert_eq!(res.status, 422, "{body}: {}", res.text);
        assert!(
            res.error_fields().contains(&field.to_owned()) || res.text.contains(field),
            "{body}: {}",
            res.text
        );
    }

    // Counts: a blocked member counts only in member_count.
    let a = user(&app, &key, "a@example.com", None).await;
    let b = user(&app, &key, "b@example.com", None).await;
    let c = user(&app, &key, "c@example.com", None).await;
    let res = add_members(&app, &key, &backend, &[a.as_str(), b.as_str(), c.as_str()]).await;
    assert_eq!(res.status, 200, "{}", res.text);
    patch_ok(
        &app,
        &key,
        &format!("/api/v1/users/{c}"),
        json!({"status": "blocked"}),
    )
    .await;
    let list = app.get("/api/v1/groups", &key).await;
    assert_eq!(list.status, 200, "{}", list.text);
    let groups = items(&list);
    assert_eq!(
        groups
            .iter()
            .map(|g| g["name"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["backend", "engineering", "frontend", "platform", "sales"]
    );
    let backend_row = groups.iter().find(|g| g["id"] == backend.as_str()).unwrap();
    assert_eq!(backend_row["member_count"], 3, "{backend_row}");
    assert_eq!(backend_row["active_member_count"], 2, "{backend_row}");
    let eng_row = groups.iter().find(|g| g["id"] == eng_id.as_str()).unwrap();
    assert_eq!(eng_row["member_count"], 0, "{eng_row}");
    let one = app.get(&format!("/api/v1/groups/{backend}"), &key).await;
    assert_eq!(one.status, 200, "{}", one.text);
    assert_eq!(one.body["member_count"], 3);
    assert_eq!(one.body["active_member_count"], 2);
    assert_eq!(one.body["name"], "backend");

    // The tree.
    let tree_names = |tree: &Value| -> Value {
        fn walk(nodes: &Value) -> Value {
            Value::Array(
                nodes
                    .as_array()
                    .unwrap_or_else(|| panic!("not a list of nodes: {nodes}"))
                    .iter()
                    .map(|n| json!([n["name"], walk(&n["children"])]))
                    .collect(),
            )
        }
        walk(tree)
    };
    let tree = app.get("/api/v1/groups/tree", &key).await;
    assert_eq!(tree.status, 200, "{}", tree.text);
    let shape = json!([
        [
            "engineering",
            [["backend", [["platform", []]]], ["frontend", []]]
        ],
        ["sales", []]
    ]);
    let tree_body = tree.body.get("items").cloned().unwrap_or(tree.body.clone());
    assert_eq!(tree_names(&tree_body), shape, "{}", tree.text);
    let backend_node = &tree_body[0]["children"][0];
    assert_eq!(backend_node["member_count"], 3, "{}", tree.text);
    assert_eq!(backend_node["active_member_count"], 2, "{}", tree.text);

    // Cycles are refused, naming parent_id; nothing changes.
    for (g, parent) in [
        (&eng_id, &platform),
        (&eng_id, &backend),
        (&backend, &backend),
        (&backend, &platform),
    ] {
        let res = app
            .patch(
                &format!("/api/v1/groups/{g}"),
                &key,
                &json!({"parent_id": parent}),
            )
            .await;
        res.assert_problem(422, "validation_failed");
        assert_eq!(res.body["errors"][0]["field"], "parent_id", "{}", res.text);
        assert_eq!(res.body["errors"][0]["code"], "cycle", "{}", res.text);
    }
    let res = app
        .patch(
            &format!("/api/v1/groups/{backend}"),
            &key,
            &json!({"parent_id": NOBODY}),
        )
        .await;
    res.assert_problem(422, "validation_failed");
    assert_eq!(res.body["errors"][0]["field"], "parent_id", "{}", res.text);
    let tree = app.get("/api/v1/groups/tree", &key).await;
    let tree_body = tree.body.get("items").cloned().unwrap_or(tree.body.clone());
    assert_eq!(tree_names(&tree_body), shape, "{}", tree.text);

    // Update and reparent.
    let upd = patch_ok(
        &app,
        &key,
        &format!("/api/v1/groups/{frontend}"),
        json!({"parent_id": backend, "display_name": "Front end", "description": "UI"}),
    )
    .await;
    assert_eq!(upd["display_name"], "Front end");
    assert_eq!(upd["parent_id"], backend.as_str());
    let tree = app.get("/api/v1/groups/tree", &key).await;
    let tree_body = tree.body.get("items").cloned().unwrap_or(tree.body.clone());
    assert_eq!(
        tree_names(&tree_body),
        json!([
            [
                "engineering",
                [["backend", [["frontend", []], ["platform", []]]]]
            ],
            ["sales", []]
        ]),
        "{}",
        tree.text
    );
    app.patch(
        &format!("/api/v1/groups/{sales}"),
        &key,
        &json!({"name": "engineering"}),
    )
    .await
    .assert_problem(409, "group_name_taken");

    // Deletion: not with children; a leaf goes with its memberships.
    app.delete(&format!("/api/v1/groups/{eng_id}"), &key)
        .await
        .assert_problem(409, "group_has_children");
    app.delete(&format!("/api/v1/groups/{backend}"), &key)
        .await
        .assert_problem(409, "group_has_children");
    let res = app
        .delete(&format!("/api/v1/groups/{platform}"), &key)
        .await;
    assert_eq!(res.status, 200, "{}", res.text);
    app.get(&format!("/api/v1/groups/{platform}"), &key)
        .await
        .assert_problem(404, "not_found");

    // Another tenant sees none of it.
    let (_, acme) = app.create_tenant("acme", json!({})).await;
    assert!(items(&app.get("/api/v1/groups", &acme).await).is_empty());
    for res in [
        app.get(&format!("/api/v1/groups/{backend}"), &acme).await,
        app.patch(
            &format!("/api/v1/groups/{backend}"),
            &acme,
            &json!({"display_name": "Mine"}),
        )
        .await,
        app.get(&format!("/api/v1/groups/{backend}/members"), &acme)
            .await,
        app.delete(&format!("/api/v1/groups/{sales}"), &acme).await,
    ] {
        res.assert_problem(404, "not_found");
    }
    // Nor may a group of one tenant become the parent of another's.
    let acme_group = group(&app, &acme, "acme-root", None).await;
    let res = app
        .patch(
            &format!("/api/v1/groups/{acme_group}"),
            &acme,
            &json!({"parent_id": sales}),
        )
        .await;
    res.assert_problem(422, "validation_failed");
    assert_eq!(res.body["errors"][0]["field"], "parent_id", "{}", res.text);
}

/// The user ids of a bulk add's `successful` list (members or bare ids).
fn successful_ids(body: &Value) -> Vec<String> {
    body["successful"]
        .as_array()
        .unwrap_or_else(|| panic!("no successful list: {body}"))
        .iter()
        .map(|s| {
            s.as_str()
                .or_else(|| s["user_id"].as_str())
                .unwrap_or_else(|| panic!("{s}"))
                .to_owned()
        })
        .collect()
}

async fn bulk_add_reports_each_item(app: TestApp) {
    let key = app.admin_key.clone();
    let res = app
        .post(
            "/api/v1/groups",
            &key,
            &json!({"name": "crew", "display_name": "Crew", "max_members": 4}),
        )
        .await;
    assert_eq!(res.status, 201, "{}", res.text);
    let g = id_of(&res.body);
    let existing = user(&app, &key, "old@example.com", None).await;
    let a = user(&app, &key, "a@example.com", None).await;
    let b = user(&app, &key, "b@example.com", None).await;
    let c = user(&app, &key, "c@example.com", None).await;
    let d = user(&app, &key, "d@example.com", None).await;
    let gone = user(&app, &key, "gone@example.com", None).await;
    delete_ok(&app, &key, &format!("/api/v1/users/{gone}")).await;
    let (_, acme) = app.create_tenant("acme", json!({})).await;
    let foreign = user(&app, &acme, "far@example.com", None).await;
    add_member_ok(&app, &key, &g, &existing).await;

    let request = [
        a.as_str(),
        "not-a-uuid",
        a.as_str(),
        NOBODY,
        foreign.as_str(),
        existing.as_str(),
        gone.as_str(),
        b.as_str(),
        c.as_str(),
        d.as_str(),
    ];
    let res = app
        .post(
            &format!("/api/v1/groups/{g}/members"),
            &key,
            &json!({"user_ids": request, "role_in_group": "owner"}),
        )
        .await;
    assert_eq!(res.status, 207, "{}", res.text);
    assert_eq!(successful_ids(&res.body), [a.clone(), b.clone(), c.clone()]);
    let failed: Vec<(String, String)> = res.body["failed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            assert!(f["error"].as_str().is_some_and(|e| !e.is_empty()), "{f}");
            (
                f["user_id"].as_str().unwrap().to_owned(),
                f["code"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let expected: Vec<(String, String)> = [
        ("not-a-uuid", "invalid_id"),
        (a.as_str(), "duplicate"),
        (NOBODY, "user_not_found"),
        (foreign.as_str(), "user_not_found"),
        (existing.as_str(), "already_member"),
        (gone.as_str(), "user_not_found"),
        (d.as_str(), "group_full"),
    ]
    .iter()
    .map(|(u, c)| ((*u).to_owned(), (*c).to_owned()))
    .collect();
    // Compared sorted: the order of failures is not part of the contract.
    let (mut failed, mut expected) = (failed, expected);
    failed.sort();
    expected.sort();
    assert_eq!(failed, expected, "{}", res.text);
    assert_eq!(
        res.body["summary"],
        json!({"total": 10, "successful_count": 3, "failed_count": 7}),
        "{}",
        res.text
    );
    // The successful ones really are members, with the requested role in the group.
    let members = app.get(&format!("/api/v1/groups/{g}/members"), &key).await;
    assert_eq!(members.status, 200, "{}", members.text);
    let members = items(&members);
    assert_eq!(
        set(members
            .iter()
            .map(|m| m["user_id"].as_str().unwrap().to_owned())),
        set([existing.clone(), a.clone(), b.clone(), c.clone()])
    );
    for m in &members {
        let expected = if m["user_id"] == existing.as_str() {
            "member"
        } else {
            "owner"
        };
        assert_eq!(m["role_in_group"], expected, "{m}");
        assert!(m["email"].is_string(), "{m}");
    }
    let one = app.get(&format!("/api/v1/groups/{g}"), &key).await;
    assert_eq!(one.body["member_count"], 4, "{}", one.text);

    // All valid: 200, nothing failed.
    let roomy = group(&app, &key, "roomy", None).await;
    let res = add_members(&app, &key, &roomy, &[a.as_str(), b.as_str(), d.as_str()]).await;
    assert_eq!(res.status, 200, "{}", res.text);
    assert_eq!(successful_ids(&res.body), [a.clone(), b.clone(), d.clone()]);
    assert_eq!(res.body["failed"], json!([]));
    assert_eq!(
        res.body["summary"],
        json!({"total": 3, "successful_count": 3, "failed_count": 0})
    );
    // All failing: still a 207 with details, never a 500.
    let res = add_members(&app, &key, &roomy, &[a.as_str(), NOBODY]).await;
    assert_eq!(res.status, 207, "{}", res.text);
    assert_eq!(
        res.body["summary"],
        json!({"total": 2, "successful_count": 0, "failed_count": 2})
    );

    // Refusals of the request as a whole.
    add_members(&app, &key, NOBODY, &[a.as_str()])
        .await
        .assert_problem(404, "not_found");
    add_members(&app, &acme, &g, &[foreign.as_str()])
        .await
        .assert_problem(404, "not_found");
    let res = app
        .post(
            &format!("/api/v1/groups/{roomy}/members"),
            &key,
            &json!({"user_ids": [c], "role_in_group": "boss"}),
        )
        .await;
    assert_eq!(res.status, 422, "{}", res.text);
    let res = app
        .post(
            &format!("/api/v1/groups/{roomy}/members"),
            &key,
            &json!({"user_ids": [], "role_in_group": "member"}),
        )
        .await;
    assert_eq!(res.status, 422, "{}", res.text);
}

async fn member_role_change_removal_and_available_users(app: TestApp) {
    let key = app.admin_key.clone();
    let new = |email: &str, name: &str, dept: &str| {
        let (app, key) = (&app, key.clone());
        let body = json!({"email": email, "full_name": name, "department": dept});
        async move { id_of(&app.create_user(&key, body).await) }
    };
    let alice = new("alice@example.com", "Alice Archer", "Sales").await;
    let alan = new("alan@example.com", "Alan Turing", "Engineering").await;
    let bob = new("bob@example.com", "Bob Builder", "Sales").await;
    let carol = new("carol@example.com", "Carol Member", "Sales").await;
    let gone = new("algone@example.com", "Al Gone", "Sales").await;
    delete_ok(&app, &key, &format!("/api/v1/users/{gone}")).await;
    let g = group(&app, &key, "club", None).await;
    add_member_ok(&app, &key, &g, &carol).await;

    // Change a member's role in the group.
    let path = format!("/api/v1/groups/{g}/members/{carol}");
    let res = app
        .send(
            Method::PUT,
            &path,
            Some(&key),
            Some(&json!({"role_in_group": "manager"})),
            &[],
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.text);
    assert_eq!(res.body["role_in_group"], "manager");
    assert_eq!(res.body["user_id"], carol.as_str());
    let members = items(&app.get(&format!("/api/v1/groups/{g}/members"), &key).await);
    assert_eq!(members.len(), 1);
    assert_eq!(members[0]["role_in_group"], "manager");
    assert_eq!(members[0]["department"], "Sales");
    let res = app
        .send(
            Method::PUT,
            &path,
            Some(&key),
            Some(&json!({"role_in_group": "boss"})),
            &[],
        )
        .await;
    assert_eq!(res.status, 422, "{}", res.text);
    app.send(
        Method::PUT,
        &format!("/api/v1/groups/{g}/members/{bob}"),
        Some(&key),
        Some(&json!({"role_in_group": "owner"})),
        &[],
    )
    .await
    .assert_problem(404, "not_found");

    // Available users: not deleted, not members; search by name or email, department.
    let avail = |query: &str| {
        let (app, key, g) = (&app, key.clone(), g.clone());
        let query = query.to_owned();
        async move {
            let res = app
                .get(&format!("/api/v1/groups/{g}/available-users{query}"), &key)
                .await;
            assert_eq!(res.status, 200, "{query}: {}", res.text);
            items(&res)
                .iter()
                .map(|u| u["email"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        set(avail("").await),
        set(["alice@example.com", "alan@example.com", "bob@example.com"])
    );
    assert_eq!(
        set(avail("?search=al").await),
        set(["alice@example.com", "alan@example.com"])
    );
    assert_eq!(
        set(avail("?search=turing").await),
        set(["alan@example.com"])
    );
    assert_eq!(
        set(avail("?department=Sales").await),
        set(["alice@example.com", "bob@example.com"])
    );
    assert_eq!(
        avail("?search=al&department=Sales").await,
        ["alice@example.com"]
    );
    assert_eq!(avail("?limit=1").await.len(), 1);
    for bad in ["?limit=0", "?limit=1000", "?search=%20"] {
        let res = app
            .get(&format!("/api/v1/groups/{g}/available-users{bad}"), &key)
            .await;
        assert_eq!(res.status, 400, "{bad}: {}", res.text);
    }

    // Removal.
    let res = app.delete(&path, &key).await;
    assert_eq!(res.status, 200, "{}", res.text);
    assert!(items(&app.get(&format!("/api/v1/groups/{g}/members"), &key).await).is_empty());
    app.delete(&path, &key)
        .await
        .assert_problem(404, "not_found");
    assert!(avail("?department=Sales")
        .await
        .contains(&"carol@example.com".to_owned()));
    let _ = alice;
    let _ = alan;
}

// --- the check API -------------------------------------------------------------------

async fn check_api_validation_batches_and_own_scope(app: TestApp) {
    let key = app.admin_key.clone();
    let r = role(&app, &key, "auditor", &["audit_logs:read:all"]).await;
    let u = user(&app, &key, "u@example.com", None).await;
    assign_ok(&app, &key, &u, &r).await;
    let (_, acme) = app.create_tenant("acme", json!({})).await;
    let foreign = user(&app, &acme, "far@example.com", None).await;

    let q = |principal: &str, action: &str| {
        json!({"principal": principal, "action": action,
               "resource": {"type": action.split(':').next().unwrap()}})
    };
    for (body, field) in [
        (q("nope", "users:read"), "principal"),
        (q(&u, "widget:zap"), "action"),
        (q(&u, "users"), "action"),
        (q(&u, "users:read:all"), "action"),
        (
            json!({"principal": u, "action": "users:read", "resource": {"type": ""}}),
            "resource.type",
        ),
        (
            json!({"principal": u, "action": "users:read", "resource": {"type": "users"},
                   "context": {"time": "yesterday"}}),
            "context.time",
        ),
        (
            json!({"principal": u, "action": "users:read", "resource": {"type": "users"},
                   "context": {"risk_score": 101}}),
            "context.risk_score",
        ),
        (
            json!({"principal": u, "action": "users:read", "resource": {"type": "users"},
                   "context": {"ip": "999.1.1.1"}}),
            "context.ip",
        ),
        (
            json!({"principal": u, "action": "users:read",
                   "resource": {"type": "users", "attributes": {"nested": {"a": 1}}}}),
            "resource.attributes.nested",
        ),
    ] {
        let res = app.post("/api/v1/authz/check", &key, &body).await;
        res.assert_problem(422, "validation_failed");
        assert!(
            res.error_fields().contains(&field.to_owned()),
            "{body}: {}",
            res.text
        );
    }
    // Unknown principals are a plain "no", also another tenant's user.
    for who in [NOBODY, foreign.as_str()] {
        assert_denied(
            &check(&app, &key, q(who, "users:read")).await,
            "principal_not_found",
        );
    }
    // Explanations in one sentence.
    let d = check(&app, &key, q(&u, "audit_logs:read")).await;
    assert!(d["reason"].as_str().unwrap().contains("auditor"), "{d}");

    // Batches: in order, up to 100, an invalid question named.
    let batch = json!({"checks": [
        q(&u, "audit_logs:read"),
        q(&u, "users:delete"),
        {"principal": u, "action": "users:read", "resource": {"type": "users", "id": u}},
        {"principal": u, "action": "users:read", "resource": {"type": "users", "id": NOBODY}},
        q(NOBODY, "users:read"),
    ]});
    let res = app.post("/api/v1/authz/check-batch", &key, &batch).await;
    assert_eq!(res.status, 200, "{}", res.text);
    let results = res.body["results"].as_array().unwrap();
    let kinds: Vec<(bool, &str)> = results
        .iter()
        .map(|r| {
            (
                r["allowed"].as_bool().unwrap(),
                r["decision"]["kind"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            (true, "permission"),
            (false, "no_permission"),
            (true, "permission"),
            (false, "out_of_scope"),
            (false, "principal_not_found"),
        ],
        "{}",
        res.text
    );
    assert_eq!(results[2]["scope"], "own");
    let many: Vec<Value> = (0..101).map(|_| q(&u, "users:read")).collect();
    let res = app
        .post("/api/v1/authz/check-batch", &key, &json!({"checks": many}))
        .await;
    res.assert_problem(422, "validation_failed");
    assert!(
        res.error_fields().contains(&"checks".to_owned()),
        "{}",
        res.text
    );
    let hundred: Vec<Value> = (0..100).map(|_| q(&u, "audit_logs:read")).collect();
    let res = app
        .post(
            "/api/v1/authz/check-batch",
            &key,
            &json!({"checks": hundred}),
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.text);
    assert_eq!(res.body["results"].as_array().unwrap().len(), 100);
    let res = app
        .post("/api/v1/authz/check-batch", &key, &json!({"checks": []}))
        .await;
    res.assert_problem(422, "validation_failed");
    let res = app
        .post(
            "/api/v1/authz/check-batch",
            &key,
            &json!({"checks": [q(&u, "users:read"), q(&u, "users:read"), q(&u, "widget:zap")]}),
        )
        .await;
    res.assert_problem(422, "validation_failed");
    assert!(
        res.error_fields().contains(&"checks[2].action".to_owned()),
        "{}",
        res.text
    );

    // authz:check:own: a user may ask about themself only.
    let own = role(&app, &key, "self_checker", &["authz:check:own"]).await;
    let (w, token) = signed_user(&app, &key, "default", "w@example.com", None).await;
    let (_, plain) = signed_user(&app, &key, "default", "p@example.com", None).await;
    app.post("/api/v1/authz/check", &token, &q(&w, "users:read"))
        .await
        .assert_problem(403, "forbidden");
    assign_ok(&app, &key, &w, &own).await;
    let res = app
        .post("/api/v1/authz/check", &token, &q(&w, "users:read"))
        .await;
    assert_eq!(res.status, 200, "{}", res.text);
    assert_eq!(res.body["allowed"], true, "{}", res.text);
    app.post("/api/v1/authz/check", &token, &q(&u, "users:read"))
        .await
        .assert_problem(403, "forbidden");
    app.post(
        "/api/v1/authz/check-batch",
        &token,
        &json!({"checks": [q(&w, "users:read"), q(&u, "users:read")]}),
    )
    .await
    .assert_problem(403, "forbidden");
    let res = app
        .post(
            "/api/v1/authz/check-batch",
            &token,
            &json!({"checks": [q(&w, "users:read"), q(&w, "users:delete")]}),
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.text);
    app.post("/api/v1/authz/check", &plain, &q(&u, "users:read"))
        .await
        .assert_problem(403, "forbidden");
    // An API key asks about anyone of its tenant, but not about another tenant's users.
    let res = app
        .post("/api/v1/authz/check", &acme, &q(&u, "users:read"))
        .await;
    assert_eq!(res.status, 200, "{}", res.text);
    assert_denied(&res.body, "principal_not_found");
}

// --- audit ---------------------------------------------------------------------------

async fn authz_changes_are_audited_with_before_and_after(app: TestApp) {
    let key = app.admin_key.clone();
    let u = user(&app, &key, "aud@example.com", None).await;

    let res = app
        .post(
            "/api/v1/permissions",
            &key,
            &json!({"permission": "invoice:approve:department"}),
        )
        .await;
    assert_eq!(res.status, 201, "{}", res.text);
    let e = last_event(&app, &key, "permission.create").await;
    assert_eq!(e["entity_type"], "permission");
    assert!(
        e["after"]
            .to_string()
            .contains("invoice:approve:department"),
        "{e}"
    );

    let r = role(&app, &key, "auditor", &["audit_logs:read:all"]).await;
    let e = last_event(&app, &key, "role.create").await;
    assert_eq!(e["entity_type"], "role");
    assert_eq!(e["entity_id"], r.as_str());
    assert!(e["before"].is_null(), "{e}");
    assert_eq!(e["after"]["name"], "auditor");
    assert_eq!(e["actor_type"], "api_key");

    patch_ok(
        &app,
        &key,
        &format!("/api/v1/roles/{r}"),
        json!({"display_name": "Auditors"}),
    )
    .await;
    let e = last_event(&app, &key, "role.update").await;
    assert_eq!(e["entity_id"], r.as_str());
    assert_eq!(e["before"]["display_name"], "auditor");
    assert_eq!(e["after"]["display_name"], "Auditors");

    let res = app
        .send(
            Method::PUT,
            &format!("/api/v1/roles/{r}/permissions"),
            Some(&key),
            Some(&json!({"add": ["groups:read:all"]})),
            &[],
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.text);
    let e = last_event(&app, &key, "role.permissions.update").await;
    assert_eq!(e["entity_id"], r.as_str());
    assert!(!e["before"].to_string().contains("groups:read:all"), "{e}");
    assert!(e["after"].to_string().contains("groups:read:all"), "{e}");

    assign_ok(&app, &key, &u, &r).await;
    let e = last_event(&app, &key, "role.assign").await;
    assert_eq!(e["entity_type"], "user");
    assert_eq!(e["entity_id"], u.as_str());
    assert_eq!(e["after"]["role_id"], r.as_str());
    let res = unassign(&app, &key, &u, &r).await;
    assert_eq!(res.status, 200, "{}", res.text);
    let e = last_event(&app, &key, "role.unassign").await;
    assert_eq!(e["entity_id"], u.as_str());
    assert_eq!(e["before"]["role_id"], r.as_str());

    let g = group(&app, &key, "auditors", None).await;
    let e = last_event(&app, &key, "group.create").await;
    assert_eq!(e["entity_type"], "group");
    assert_eq!(e["entity_id"], g.as_str());
    assert_eq!(e["after"]["name"], "auditors");
    patch_ok(
        &app,
        &key,
        &format!("/api/v1/groups/{g}"),
        json!({"display_name": "Auditors"}),
    )
    .await;
    let e = last_event(&app, &key, "group.update").await;
    assert_eq!(e["before"]["display_name"], "auditors");
    assert_eq!(e["after"]["display_name"], "Auditors");
    add_member_ok(&app, &key, &g, &u).await;
    let e = last_event(&app, &key, "group.member.add").await;
    assert_eq!(e["entity_type"], "group");
    assert_eq!(e["entity_id"], g.as_str());
    assert_eq!(e["after"]["user_id"], u.as_str());
    let res = app
        .send(
            Method::PUT,
            &format!("/api/v1/groups/{g}/members/{u}"),
            Some(&key),
            Some(&json!({"role_in_group": "owner"})),
            &[],
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.text);
    let e = last_event(&app, &key, "group.member.update").await;
    assert_eq!(e["before"]["role_in_group"], "member");
    assert_eq!(e["after"]["role_in_group"], "owner");
    let res = app
        .post(
            &format!("/api/v1/groups/{g}/roles"),
            &key,
            &json!({"role_id": r}),
        )
        .await;
    assert_eq!(res.status, 201, "{}", res.text);
    let e = last_event(&app, &key, "group.role.grant").await;
    assert_eq!(e["entity_id"], g.as_str());
    assert_eq!(e["after"]["role_id"], r.as_str());
    delete_ok(&app, &key, &format!("/api/v1/groups/{g}/roles/{r}")).await;
    let e = last_event(&app, &key, "group.role.revoke").await;
    assert_eq!(e["entity_id"], g.as_str());
    assert_eq!(e["before"]["role_id"], r.as_str());
    delete_ok(&app, &key, &format!("/api/v1/groups/{g}/members/{u}")).await;
    let e = last_event(&app, &key, "group.member.remove").await;
    assert_eq!(e["before"]["user_id"], u.as_str());
    delete_ok(&app, &key, &format!("/api/v1/groups/{g}")).await;
    let e = last_event(&app, &key, "group.delete").await;
    assert_eq!(e["before"]["name"], "auditors");

    let p = create_policy(
        &app,
        &key,
        "calm_only",
        r#"forbid(principal, action, resource) when { context.risk_score > 90 };"#,
    )
    .await;
    let pid = id_of(&p);
    let e = last_event(&app, &key, "policy.create").await;
    assert_eq!(e["entity_type"], "policy");
    assert_eq!(e["entity_id"], pid.as_str());
    assert_eq!(e["after"]["source"], p["source"]);
    patch_ok(
        &app,
        &key,
        &format!("/api/v1/policies/{pid}"),
        json!({"active": false}),
    )
    .await;
    let e = last_event(&app, &key, "policy.update").await;
    assert_eq!(e["before"]["version"], 1);
    assert_eq!(e["after"]["version"], 2);
    assert_eq!(e["before"]["active"], true);
    assert_eq!(e["after"]["active"], false);
    delete_ok(&app, &key, &format!("/api/v1/policies/{pid}")).await;
    let e = last_event(&app, &key, "policy.delete").await;
    assert_eq!(e["before"]["name"], "calm_only");

    delete_ok(&app, &key, &format!("/api/v1/roles/{r}")).await;
    let e = last_event(&app, &key, "role.delete").await;
    assert_eq!(e["before"]["name"], "auditor");
}

// --- concurrency ---------------------------------------------------------------------

async fn concurrent_additions_never_exceed_max_members(app: TestApp) {
    let key = app.admin_key.clone();
    let mut users = Vec::new();
    for i in 0..24 {
        users.push(user(&app, &key, &format!("c{i}@example.com"), None).await);
    }
    let res = app
        .post(
            "/api/v1/groups",
            &key,
            &json!({"name": "tight", "display_name": "Tight", "max_members": 5}),
        )
        .await;
    assert_eq!(res.status, 201, "{}", res.text);
    let g = id_of(&res.body);

    // One user per request, all at once.
    let answers = futures::future::join_all(users[..16].iter().map(|u| {
        let (app, key, g) = (&app, &key, &g);
        async move { add_members(app, key, g, &[u.as_str()]).await }
    }))
    .await;
    let mut added = 0;
    for res in &answers {
        match res.status.as_u16() {
            200 => added += 1,
            207 => assert_eq!(res.body["failed"][0]["code"], "group_full", "{}", res.text),
            other => panic!("{other}: {}", res.text),
        }
    }
    assert_eq!(added, 5);
    let members = items(&app.get(&format!("/api/v1/groups/{g}/members"), &key).await);
    assert_eq!(members.len(), 5);

    // Batches at once into a fresh group.
    let res = app
        .post(
            "/api/v1/groups",
            &key,
            &json!({"name": "roomier", "display_name": "Roomier", "max_members": 7}),
        )
        .await;
    let g2 = id_of(&res.body);
    let answers = futures::future::join_all(users.chunks(6).map(|chunk| {
        let ids: Vec<&str> = chunk.iter().map(String::as_str).collect();
        let (app, key, g2) = (&app, key.clone(), g2.clone());
        async move { add_members(app, &key, &g2, &ids).await }
    }))
    .await;
    let added: i64 = answers
        .iter()
        .map(|r| {
            assert!(matches!(r.status.as_u16(), 200 | 207), "{}", r.text);
            r.body["summary"]["successful_count"].as_i64().unwrap()
        })
        .sum();
    assert_eq!(added, 7);
    let one = app.get(&format!("/api/v1/groups/{g2}"), &key).await;
    assert_eq!(one.body["member_count"], 7, "{}", one.text);
    assert_eq!(
        items(&app.get(&format!("/api/v1/groups/{g2}/members"), &key).await).len(),
        7
    );
}
