//! Users over HTTP: CRUD, partial updates, optimistic concurrency, soft delete, quotas,
//! validation, listing and the audit trail, on SQLite and PostgreSQL.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use portcullis_testkit::{backend_tests, TestApp};
use reqwest::Method;
use serde_json::{json, Value};

backend_tests!(
    create_get_update_delete_restore,
    patch_null_clears_and_absent_keeps,
    if_match_stale_is_412_and_changes_nothing,
    validation_lists_every_field_and_changes_nothing,
    malformed_requests_are_clear_4xx,
    unique_email_and_username_case_insensitive,
    quota_enforced_on_create_and_restore,
    manager_rules,
    list_filters_sort_search_and_cursor,
    list_parameter_errors,
    audit_trail_records_every_mutation,
);

async fn audit_count(app: &TestApp, key: &str) -> usize {
    let res = app.get("/api/v1/audit-events?limit=200", key).await;
    assert_eq!(res.status, 200, "{}", res.text);
    res.body["items"].as_array().unwrap().len()
}

async fn create_get_update_delete_restore(app: TestApp) {
    let key = app.admin_key.clone();
    let res = app
        .post(
            "/api/v1/users",
            &key,
            &json!({
                "email": "Ada@Example.com", "username": "ada", "full_name": "Ada Lovelace",
                "phone": "+44 20 7946 0958", "department": "Engineering", "job_title": "Analyst",
                "employee_id": "E-1", "cost_center": "CC-100", "clearance_level": 3,
                "language": "en-gb", "avatar_url": "https://example.com/ada.png",
                "custom_attributes": {"desk": 12, "tags": ["a"]}
            }),
        )
        .await;
    assert_eq!(res.status, 201, "{}", res.text);
    let user = res.body.clone();
    let id = user["id"].as_str().unwrap().to_owned();
    assert_eq!(
        res.header("location"),
        Some(format!("/api/v1/users/{id}").as_str())
    );
    assert_eq!(res.header("etag"), Some("\"1\""));
    assert_eq!(user["email"], "Ada@Example.com");
    assert_eq!(user["language"], "en-GB");
    assert_eq!(user["status"], "active");
    assert_eq!(user["version"], 1);
    assert_eq!(
        user["custom_attributes"],
        json!({"desk": 12, "tags": ["a"]})
    );

    let got = app.get(&format!("/api/v1/users/{id}"), &key).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.body, user);
    assert_eq!(got.header("etag"), Some("\"1\""));

    let upd = app
        .patch(
            &format!("/api/v1/users/{id}"),
            &key,
            &json!({"job_title": "Lead", "status": "suspended"}),
        )
        .await;
    assert_eq!(upd.status, 200, "{}", upd.text);
    assert_eq!(upd.body["job_title"], "Lead");
    assert_eq!(upd.body["status"], "suspended");
    assert_eq!(upd.body["department"], "Engineering");
    assert_eq!(upd.body["version"], 2);
    assert_eq!(upd.header("etag"), Some("\"2\""));

    let del = app.delete(&format!("/api/v1/users/{id}"), &key).await;
    assert_eq!(del.status, 200, "{}", del.text);
    assert!(del.body["deleted_at"].is_string());
    // A deleted user can still be read (with deleted_at), but not changed or deleted again.
    let got = app.get(&format!("/api/v1/users/{id}"), &key).await;
    assert!(got.body["deleted_at"].is_string());
    app.patch(
        &format!("/api/v1/users/{id}"),
        &key,
        &json!({"job_title": "X"}),
    )
    .await
    .assert_problem(404, "not_found");
    app.delete(&format!("/api/v1/users/{id}"), &key)
        .await
        .assert_problem(404, "not_found");
    let list = app.get("/api/v1/users", &key).await;
    assert!(list.body["items"].as_array().unwrap().is_empty());
    let only = app.get("/api/v1/users?deleted=only", &key).await;
    assert_eq!(only.body["items"][0]["id"], id.as_str());

    let res = app
        .send(
            Method::POST,
            &format!("/api/v1/users/{id}/restore"),
            Some(&key),
            None,
            &[],
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.text);
    assert!(res.body["deleted_at"].is_null());
    let res = app
        .send(
            Method::POST,
            &format!("/api/v1/users/{id}/restore"),
            Some(&key),
            None,
            &[],
        )
        .await;
    res.assert_problem(409, "not_deleted");
    let list = app.get("/api/v1/users", &key).await;
    assert_eq!(list.body["items"].as_array().unwrap().len(), 1);

    // Unknown ids are 404 problems.
    app.get(&format!("/api/v1/users/{}", uuid::Uuid::now_v7()), &key)
        .await
        .assert_problem(404, "not_found");
}

async fn patch_null_clears_and_absent_keeps(app: TestApp) {
    let key = app.admin_key.clone();
    let u = app
        .create_user(&key, json!({"email": "b@example.com", "full_name": "B", "phone": "+1 555 0100 000", "department": "Sales", "username": "bee"}))
        .await;
    let id = u["id"].as_str().unwrap();
    let res = app
        .patch(
            &format!("/api/v1/users/{id}"),
            &key,
            &json!({"phone": null, "username": null}),
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.text);
    assert!(res.body["phone"].is_null());
    assert!(res.body["username"].is_null());
    assert_eq!(res.body["department"], "Sales");
    // Required fields cannot be nulled.
    let res = app
        .patch(
            &format!("/api/v1/users/{id}"),
            &key,
            &json!({"email": null, "full_name": null}),
        )
        .await;
    res.assert_problem(422, "validation_failed");
    let mut fields = res.error_fields();
    fields.sort();
    assert_eq!(fields, ["email", "full_name"]);
}

async fn if_match_stale_is_412_and_changes_nothing(app: TestApp) {
    let key = app.admin_key.clone();
    let u = app
        .create_user(&key, json!({"email": "c@example.com", "full_name": "C"}))
        .await;
    let path = format!("/api/v1/users/{}", u["id"].as_str().unwrap());
    let ok = app
        .send(
            Method::PATCH,
            &path,
            Some(&key),
            Some(&json!({"full_name": "C2"})),
            &[("if-match", "\"1\"")],
        )
        .await;
    assert_eq!(ok.status, 200, "{}", ok.text);
    let before_audit = audit_count(&app, &key).await;
    let stale = app
        .send(
            Method::PATCH,
            &path,
            Some(&key),
            Some(&json!({"full_name": "C3"})),
            &[("if-match", "\"1\"")],
        )
        .await;
    stale.assert_problem(412, "precondition_failed");
    let stale_delete = app
        .send(
            Method::DELETE,
            &path,
            Some(&key),
            None,
            &[("if-match", "W/\"1\"")],
        )
        .await;
    stale_delete.assert_problem(412, "precondition_failed");
    app.send(
        Method::PATCH,
        &path,
        Some(&key),
        Some(&json!({"full_name": "C3"})),
        &[("if-match", "nonsense")],
    )
    .await
    .assert_problem(412, "etag_mismatch");
    // Any other tag matches no version either; naming two versions is ambiguous.
    for (tag, status, code) in [
        ("\"abc\"", 412, "etag_mismatch"),
        ("W/\"x\", \"y\"", 412, "etag_mismatch"),
        ("\"1\", \"2\"", 400, "invalid_if_match"),
    ] {
        app.send(
            Method::PATCH,
            &path,
            Some(&key),
            Some(&json!({"full_name": "C3"})),
            &[("if-match", tag)],
        )
        .await
        .assert_problem(status, code);
    }
    let now = app.get(&path, &key).await;
    assert_eq!(now.body["full_name"], "C2");
    assert_eq!(now.body["version"], 2);
    assert_eq!(audit_count(&app, &key).await, before_audit);
    let star = app
        .send(
            Method::DELETE,
            &path,
            Some(&key),
            None,
            &[("if-match", "*")],
        )
        .await;
    assert_eq!(star.status, 200);
}

async fn validation_lists_every_field_and_changes_nothing(app: TestApp) {
    let key = app.admin_key.clone();
    let res = app
        .post(
            "/api/v1/users",
            &key,
            &json!({"email": "not-an-email", "full_name": "", "username": "a", "phone": "call me",
                    "language": "english please", "avatar_url": "ftp://x", "clearance_level": 99,
                    "manager_id": "nope"}),
        )
        .await;
    res.assert_problem(422, "validation_failed");
    let mut fields = res.error_fields();
    fields.sort();
    assert_eq!(
        fields,
        [
            "avatar_url",
            "clearance_level",
            "email",
            "full_name",
            "language",
            "manager_id",
            "phone",
            "username"
        ]
    );
    let u = app
        .create_user(&key, json!({"email": "d@example.com", "full_name": "D"}))
        .await;
    let before = audit_count(&app, &key).await;
    // One bad field among good ones: nothing is applied.
    let res = app
        .patch(
            &format!("/api/v1/users/{}", u["id"].as_str().unwrap()),
            &key,
            &json!({"full_name": "Changed", "email": "bad"}),
        )
        .await;
    res.assert_problem(422, "validation_failed");
    assert_eq!(res.error_fields(), ["email"]);
    let now = app
        .get(
            &format!("/api/v1/users/{}", u["id"].as_str().unwrap()),
            &key,
        )
        .await;
    assert_eq!(now.body, u);
    assert_eq!(audit_count(&app, &key).await, before);
    let list = app.get("/api/v1/users", &key).await;
    assert_eq!(list.body["items"].as_array().unwrap().len(), 1);
}

async fn malformed_requests_are_clear_4xx(app: TestApp) {
    let key = app.admin_key.clone();
    // Unknown field, named.
    let res = app
        .post(
            "/api/v1/users",
            &key,
            &json!({"email": "e@example.com", "full_name": "E", "nickname": "x"}),
        )
        .await;
    res.assert_problem(422, "validation_failed");
    assert!(
        res.body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("nickname"),
        "{}",
        res.text
    );
    // Bad enum value, with its field.
    let res = app
        .post(
            "/api/v1/users",
            &key,
            &json!({"email": "e@example.com", "full_name": "E", "status": "zombie"}),
        )
        .await;
    res.assert_problem(422, "validation_failed");
    assert_eq!(res.error_fields(), ["status"]);
    // Wrong JSON type.
    let res = app
        .post(
            "/api/v1/users",
            &key,
            &json!({"email": 5, "full_name": "E"}),
        )
        .await;
    res.assert_problem(422, "validation_failed");
    assert_eq!(res.error_fields(), ["email"]);
    // Malformed JSON.
    let res = app
        .http
        .post(app.url("/api/v1/users"))
        .bearer_auth(&key)
        .header("content-type", "application/json")
        .body("{\"email\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    assert_eq!(res.headers()["content-type"], "application/problem+json");
    // Not JSON at all.
    let res = app
        .http
        .post(app.url("/api/v1/users"))
        .bearer_auth(&key)
        .header("content-type", "text/plain")
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 415);
    // Oversize body.
    let big = json!({"email": "e@example.com", "full_name": "E", "custom_attributes": {"x": "y".repeat(2 * 1024 * 1024)}});
    // The server answers before reading the whole body and then closes the connection;
    // `Connection: close` keeps the client from reusing it for the next request (which
    // would otherwise race the close and fail with an incomplete message).
    app.send(
        Method::POST,
        "/api/v1/users",
        Some(&key),
        Some(&big),
        &[("connection", "close")],
    )
    .await
    .assert_problem(413, "payload_too_large");
    // No backend stores U+0000: refused alike, wherever it is, before anything is written.
    let res = app
        .post(
            "/api/v1/users",
            &key,
            &json!({"email": "nul@example.com", "full_name": "Nul",
                    "custom_attributes": {"team": ["ok", "a\u{0}b"]}}),
        )
        .await;
    res.assert_problem(422, "validation_failed");
    assert_eq!(res.error_fields(), ["custom_attributes.team[1]"]);
    app.get("/api/v1/users?department=a%00b", &key)
        .await
        .assert_problem(400, "invalid_request");
    // An id that is not a UUID names nothing.
    app.get("/api/v1/users/not-a-uuid", &key)
        .await
        .assert_problem(404, "not_found");
    // Unknown route and wrong method.
    app.get("/api/v1/nothing", &key)
        .await
        .assert_problem(404, "not_found");
    app.send(
        Method::PUT,
        "/api/v1/users",
        Some(&key),
        Some(&json!({})),
        &[],
    )
    .await
    .assert_problem(405, "method_not_allowed");
    // Nothing was created by any of these.
    let list = app.get("/api/v1/users", &key).await;
    assert!(list.body["items"].as_array().unwrap().is_empty());
}

async fn unique_email_and_username_case_insensitive(app: TestApp) {
    let key = app.admin_key.clone();
    app.create_user(
        &key,
        json!({"email": "f@example.com", "full_name": "F", "username": "Frank"}),
    )
    .await;
    let res = app
        .post(
            "/api/v1/users",
            &key,
            &json!({"email": "F@EXAMPLE.COM", "full_name": "F2"}),
        )
        .await;
    res.assert_problem(409, "email_taken");
    assert_eq!(res.error_fields(), ["email"]);
    let res = app
        .post(
            "/api/v1/users",
            &key,
            &json!({"email": "g@example.com", "full_name": "G", "username": "frank"}),
        )
        .await;
    res.assert_problem(409, "username_taken");
    // The same address is free in another tenant.
    let (_, other) = app.create_tenant("other", json!({})).await;
    app.create_user(
        &other,
        json!({"email": "f@example.com", "full_name": "F", "username": "frank"}),
    )
    .await;
}

async fn quota_enforced_on_create_and_restore(app: TestApp) {
    let (_, key) = app
        .create_tenant("small", json!({"plan": "free", "max_users": 2}))
        .await;
    let a = app
        .create_user(&key, json!({"email": "a@example.com", "full_name": "A"}))
        .await;
    app.create_user(&key, json!({"email": "b@example.com", "full_name": "B"}))
        .await;
    let res = app
        .post(
            "/api/v1/users",
            &key,
            &json!({"email": "c@example.com", "full_name": "C"}),
        )
        .await;
    res.assert_problem(409, "quota_exceeded");
    assert_eq!(res.body["reason"]["max_users"], 2, "{}", res.text);
    let a_path = format!("/api/v1/users/{}", a["id"].as_str().unwrap());
    assert_eq!(app.delete(&a_path, &key).await.status, 200);
    app.create_user(&key, json!({"email": "c@example.com", "full_name": "C"}))
        .await;
    let res = app
        .send(
            Method::POST,
            &format!("{a_path}/restore"),
            Some(&key),
            None,
            &[],
        )
        .await;
    res.assert_problem(409, "quota_exceeded");
}

async fn manager_rules(app: TestApp) {
    let key = app.admin_key.clone();
    let a = app
        .create_user(&key, json!({"email": "a@example.com", "full_name": "A"}))
        .await;
    let a_id = a["id"].as_str().unwrap();
    let b = app
        .create_user(
            &key,
            json!({"email": "b@example.com", "full_name": "B", "manager_id": a_id}),
        )
        .await;
    let b_id = b["id"].as_str().unwrap();
    assert_eq!(b["manager_id"], a_id);
    let c = app
        .create_user(
            &key,
            json!({"email": "c@example.com", "full_name": "C", "manager_id": b_id}),
        )
        .await;
    let c_id = c["id"].as_str().unwrap();
    // a → c would close the loop a ← b ← c.
    let res = app
        .patch(
            &format!("/api/v1/users/{a_id}"),
            &key,
            &json!({"manager_id": c_id}),
        )
        .await;
    res.assert_problem(422, "validation_failed");
    assert_eq!(res.body["errors"][0]["code"], "manager_cycle");
    let res = app
        .patch(
            &format!("/api/v1/users/{a_id}"),
            &key,
            &json!({"manager_id": a_id}),
        )
        .await;
    assert_eq!(res.body["errors"][0]["code"], "manager_cycle");
    // Unknown manager.
    let res = app
        .post("/api/v1/users", &key, &json!({"email": "d@example.com", "full_name": "D", "manager_id": uuid::Uuid::now_v7()}))
        .await;
    res.assert_problem(422, "validation_failed");
    assert_eq!(res.error_fields(), ["manager_id"]);
    // Filter by manager.
    let list = app
        .get(&format!("/api/v1/users?manager_id={b_id}"), &key)
        .await;
    let ids: Vec<&str> = list.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [c_id]);
}

async fn list_filters_sort_search_and_cursor(app: TestApp) {
    let key = app.admin_key.clone();
    let people = [
        ("Zoe Quinn", "zoe@alpha.io", "Sales", "active"),
        ("adam Smith", "adam.smith@beta.io", "Engineering", "active"),
        ("Bella Smithers", "bella@alpha.io", "Engineering", "pending"),
        ("Carl Jones", "carl@gamma.io", "Sales", "blocked"),
        ("Dana Smith", "dana@beta.io", "Engineering", "active"),
    ];
    for (name, email, dept, status) in people {
        app.create_user(
            &key,
            json!({"email": email, "full_name": name, "department": dept, "status": status}),
        )
        .await;
    }
    let names = |res: &portcullis_testkit::TestResponse| -> Vec<String> {
        res.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u["full_name"].as_str().unwrap().to_owned())
            .collect()
    };
    // Name sort is case-insensitive.
    let res = app.get("/api/v1/users?sort=name", &key).await;
    assert_eq!(
        names(&res),
        [
            "adam Smith",
            "Bella Smithers",
            "Carl Jones",
            "Dana Smith",
            "Zoe Quinn"
        ]
    );
    let res = app.get("/api/v1/users?sort=-email", &key).await;
    assert_eq!(
        names(&res),
        [
            "Zoe Quinn",
            "Dana Smith",
            "Carl Jones",
            "Bella Smithers",
            "adam Smith"
        ]
    );
    // Keyset pagination through the cursor.
    let mut seen = Vec::new();
    let mut url = "/api/v1/users?sort=name&limit=2".to_owned();
    loop {
        let res = app.get(&url, &key).await;
        assert_eq!(res.status, 200, "{}", res.text);
        seen.extend(names(&res));
        match res.body["next_cursor"].as_str() {
            Some(c) => url = format!("/api/v1/users?sort=name&limit=2&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(
        seen,
        [
            "adam Smith",
            "Bella Smithers",
            "Carl Jones",
            "Dana Smith",
            "Zoe Quinn"
        ]
    );
    // Filters.
    let res = app
        .get(
            "/api/v1/users?department=Engineering&status=active&sort=name",
            &key,
        )
        .await;
    assert_eq!(names(&res), ["adam Smith", "Dana Smith"]);
    // Search: prefixes of name, email local part and domain words; case-insensitive; AND.
    let res = app.get("/api/v1/users?q=SMITH&sort=name", &key).await;
    assert_eq!(names(&res), ["adam Smith", "Bella Smithers", "Dana Smith"]);
    let res = app.get("/api/v1/users?q=smi%20beta&sort=name", &key).await;
    assert_eq!(names(&res), ["adam Smith", "Dana Smith"]);
    let res = app.get("/api/v1/users?q=alph&sort=name", &key).await;
    assert_eq!(names(&res), ["Bella Smithers", "Zoe Quinn"]);
    let res = app.get("/api/v1/users?q=mith", &key).await;
    assert!(names(&res).is_empty(), "infix is not a prefix match");
    let res = app.get("/api/v1/users?q=smith&status=pending", &key).await;
    assert_eq!(names(&res), ["Bella Smithers"]);
    // Created range.
    let res = app
        .get(
            "/api/v1/users?created_after=2000-01-01T00:00:00Z&created_before=2001-01-01T00:00:00Z",
            &key,
        )
        .await;
    assert!(names(&res).is_empty());
    let res = app
        .get("/api/v1/users?created_after=2000-01-01T00:00:00Z", &key)
        .await;
    assert_eq!(names(&res).len(), 5);
}

async fn list_parameter_errors(app: TestApp) {
    let key = app.admin_key.clone();
    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=201", "limit"),
        ("limit=ten", "limit"),
        ("sort=height", "sort"),
        ("status=zombie", "status"),
        ("manager_id=xyz", "manager_id"),
        ("created_after=yesterday", "created_after"),
        ("cursor=garbage", "cursor"),
        ("deleted=maybe", "deleted"),
        ("q=%21%21", "q"),
    ] {
        let res = app.get(&format!("/api/v1/users?{query}"), &key).await;
        res.assert_problem(400, "invalid_request");
        assert_eq!(res.error_fields(), [field], "{query}: {}", res.text);
    }
    let res = app.get("/api/v1/users?colour=red", &key).await;
    res.assert_problem(400, "invalid_request");
    assert!(res.text.contains("colour"), "{}", res.text);
    // A cursor of one sort order is refused for another.
    for i in 0..3 {
        app.create_user(
            &key,
            json!({"email": format!("u{i}@example.com"), "full_name": format!("U{i}")}),
        )
        .await;
    }
    let res = app.get("/api/v1/users?sort=name&limit=1", &key).await;
    let cursor = res.body["next_cursor"].as_str().unwrap();
    app.get(
        &format!("/api/v1/users?sort=email&limit=1&cursor={cursor}"),
        &key,
    )
    .await
    .assert_problem(400, "invalid_request");
}

async fn audit_trail_records_every_mutation(app: TestApp) {
    let key = app.admin_key.clone();
    let u = app
        .send(
            Method::POST,
            "/api/v1/users",
            Some(&key),
            Some(&json!({"email": "h@example.com", "full_name": "H"})),
            &[("x-request-id", "req-audit-1")],
        )
        .await;
    assert_eq!(u.status, 201);
    assert_eq!(u.header("x-request-id"), Some("req-audit-1"));
    let id = u.body["id"].as_str().unwrap().to_owned();
    app.patch(
        &format!("/api/v1/users/{id}"),
        &key,
        &json!({"full_name": "H2"}),
    )
    .await;
    app.delete(&format!("/api/v1/users/{id}"), &key).await;
    app.send(
        Method::POST,
        &format!("/api/v1/users/{id}/restore"),
        Some(&key),
        None,
        &[],
    )
    .await;

    let res = app
        .get(
            &format!("/api/v1/audit-events?entity_type=user&entity_id={id}"),
            &key,
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.text);
    let items = res.body["items"].as_array().unwrap();
    let actions: Vec<&str> = items
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        ["user.restore", "user.delete", "user.update", "user.create"]
    );
    let create = &items[3];
    assert_eq!(create["actor_type"], "api_key");
    assert!(create["before"].is_null());
    assert_eq!(create["after"]["email"], "h@example.com");
    assert_eq!(create["request_id"], "req-audit-1");
    assert_eq!(create["ip"], "127.0.0.1");
    assert_eq!(create["user_agent"], "portcullis-testkit");
    let update = &items[2];
    assert_eq!(update["before"]["full_name"], "H");
    assert_eq!(update["after"]["full_name"], "H2");
    let actor = create["actor_id"].as_str().unwrap();

    let res = app
        .get(
            &format!("/api/v1/audit-events?action=user.update&actor_id={actor}"),
            &key,
        )
        .await;
    assert_eq!(res.body["items"].as_array().unwrap().len(), 1);
    // Pagination, newest first.
    let page1 = app
        .get(
            &format!("/api/v1/audit-events?entity_id={id}&limit=3"),
            &key,
        )
        .await;
    assert_eq!(page1.body["items"].as_array().unwrap().len(), 3);
    let cursor = page1.body["next_cursor"].as_str().unwrap();
    let page2 = app
        .get(
            &format!("/api/v1/audit-events?entity_id={id}&limit=3&cursor={cursor}"),
            &key,
        )
        .await;
    let rest: Vec<&str> = page2.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(rest, ["user.create"]);
    assert!(page2.body["next_cursor"].is_null());
    // Time range.
    let res = app
        .get("/api/v1/audit-events?until=2000-01-01T00:00:00Z", &key)
        .await;
    assert!(res.body["items"].as_array().unwrap().is_empty());
    // There is no way to change the trail through the API: no event has a path of its
    // own, and the list takes nothing but GET.
    let ev = items[0]["id"].as_str().unwrap();
    for m in [Method::DELETE, Method::PATCH, Method::PUT] {
        let res = app
            .send(
                m.clone(),
                &format!("/api/v1/audit-events/{ev}"),
                Some(&key),
                Some(&json!({})),
                &[],
            )
            .await;
        res.assert_problem(404, "not_found");
        let res = app
            .send(m, "/api/v1/audit-events", Some(&key), Some(&json!({})), &[])
            .await;
        res.assert_problem(405, "method_not_allowed");
    }
    let _: Value = res.body;
}
