//! Credentials, tenants, tenant isolation and the operations endpoints over HTTP, on
//! SQLite and PostgreSQL.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use portcullis_testkit::{backend_tests, TestApp};
use reqwest::Method;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

backend_tests!(
    requests_without_valid_key_are_401,
    revoked_key_and_suspended_tenant_stop_working,
    tenant_management_needs_platform_admin,
    tenant_crud_and_validation,
    tenant_isolation,
    operations_endpoints,
    graceful_shutdown_finishes_in_flight_requests,
);

async fn requests_without_valid_key_are_401(app: TestApp) {
    for (auth, why) in [
        (None, "missing"),
        (Some("Bearer pcs_not-a-real-key"), "unknown"),
        (Some("Basic dXNlcjpwYXNz"), "wrong scheme"),
        (Some("Bearer "), "empty"),
    ] {
        let mut headers = vec![];
        if let Some(a) = auth {
            headers.push(("authorization", a));
        }
        let res = app
            .send(Method::GET, "/api/v1/users", None, None, &headers)
            .await;
        res.assert_problem(401, "unauthorized");
        assert_eq!(res.header("www-authenticate"), Some("Bearer"), "{why}");
    }
    // Auth is checked before the body is looked at.
    let res = app
        .send(
            Method::POST,
            "/api/v1/users",
            None,
            Some(&json!({"bogus": 1})),
            &[],
        )
        .await;
    res.assert_problem(401, "unauthorized");
}

async fn revoked_key_and_suspended_tenant_stop_working(app: TestApp) {
    let (tenant_id, key) = app.create_tenant("acme", json!({})).await;
    assert_eq!(app.get("/api/v1/users", &key).await.status, 200);
    // Suspend the tenant: its keys get 403; reactivate: they work again.
    let res = app
        .delete(&format!("/api/v1/tenants/{tenant_id}"), &app.admin_key)
        .await;
    assert_eq!(res.status, 200, "{}", res.text);
    assert_eq!(res.body["status"], "suspended");
    app.get("/api/v1/users", &key)
        .await
        .assert_problem(403, "tenant_suspended");
    let res = app
        .patch(
            &format!("/api/v1/tenants/{tenant_id}"),
            &app.admin_key,
            &json!({"status": "active"}),
        )
        .await;
    assert_eq!(res.status, 200);
    assert_eq!(app.get("/api/v1/users", &key).await.status, 200);
    // Revoke the key.
    let tid: domain::TenantId = tenant_id.parse().unwrap();
    let keys = app.store.list_api_keys(tid).await.unwrap();
    app.services
        .revoke_api_key(&portcullis_services::Actor::operator(), tid, keys[0].id)
        .await
        .unwrap();
    app.get("/api/v1/users", &key)
        .await
        .assert_problem(401, "unauthorized");
}

async fn tenant_management_needs_platform_admin(app: TestApp) {
    let (tenant_id, key) = app.create_tenant("tenant-a", json!({})).await;
    app.get("/api/v1/tenants", &key)
        .await
        .assert_problem(403, "platform_admin_required");
    app.post(
        "/api/v1/tenants",
        &key,
        &json!({"slug": "x1", "display_name": "X"}),
    )
    .await
    .assert_problem(403, "platform_admin_required");
    app.get(&format!("/api/v1/tenants/{tenant_id}"), &key)
        .await
        .assert_problem(403, "platform_admin_required");
    app.patch(
        &format!("/api/v1/tenants/{tenant_id}"),
        &key,
        &json!({"plan": "pro"}),
    )
    .await
    .assert_problem(403, "platform_admin_required");
    app.delete(&format!("/api/v1/tenants/{tenant_id}"), &key)
        .await
        .assert_problem(403, "platform_admin_required");
}

async fn tenant_crud_and_validation(app: TestApp) {
    let admin = app.admin_key.clone();
    let res = app
        .post(
            "/api/v1/tenants",
            &admin,
            &json!({"slug": "globex", "display_name": "Globex", "plan": "pro",
                    "trial_ends_at": "2027-01-01T00:00:00Z", "settings": {"theme": "dark"}}),
        )
        .await;
    assert_eq!(res.status, 201, "{}", res.text);
    let t = res.body.clone();
    let id = t["id"].as_str().unwrap();
    assert_eq!(t["max_users"], 10000);
    assert_eq!(t["status"], "active");
    assert_eq!(t["settings"], json!({"theme": "dark"}));
    assert_eq!(
        app.get(&format!("/api/v1/tenants/{id}"), &admin).await.body,
        t
    );

    app.post(
        "/api/v1/tenants",
        &admin,
        &json!({"slug": "globex", "display_name": "Again"}),
    )
    .await
    .assert_problem(409, "slug_taken");
    let res = app
        .post(
            "/api/v1/tenants",
            &admin,
            &json!({"slug": "Bad Slug!", "display_name": "", "plan": "platinum"}),
        )
        .await;
    res.assert_problem(422, "validation_failed");
    assert_eq!(res.error_fields(), ["plan"]);
    let res = app
        .post(
            "/api/v1/tenants",
            &admin,
            &json!({"slug": "Bad Slug!", "display_name": "", "max_users": 0}),
        )
        .await;
    let mut fields = res.error_fields();
    fields.sort();
    assert_eq!(fields, ["display_name", "max_users", "slug"]);

    // Changing plan moves the quota to the plan's default unless one is named.
    let res = app
        .patch(
            &format!("/api/v1/tenants/{id}"),
            &admin,
            &json!({"plan": "enterprise"}),
        )
        .await;
    assert!(res.body["max_users"].is_null(), "{}", res.text);
    let res = app
        .patch(
            &format!("/api/v1/tenants/{id}"),
            &admin,
            &json!({"plan": "free", "max_users": 5, "trial_ends_at": null}),
        )
        .await;
    assert_eq!(res.body["max_users"], 5);
    assert!(res.body["trial_ends_at"].is_null());
    assert_eq!(res.body["slug"], "globex");
    app.patch(
        &format!("/api/v1/tenants/{id}"),
        &admin,
        &json!({"slug": "renamed"}),
    )
    .await
    .assert_problem(422, "validation_failed");

    // Listing, paged, newest first; the default tenant exists from first start.
    let page = app.get("/api/v1/tenants?limit=1", &admin).await;
    assert_eq!(page.body["items"][0]["slug"], "globex");
    let cursor = page.body["next_cursor"].as_str().unwrap();
    let page2 = app
        .get(&format!("/api/v1/tenants?limit=1&cursor={cursor}"), &admin)
        .await;
    assert_eq!(page2.body["items"][0]["slug"], "default");
    let suspended = app.get("/api/v1/tenants?status=suspended", &admin).await;
    assert!(suspended.body["items"].as_array().unwrap().is_empty());

    // A platform admin cannot lock itself out.
    let default_id = page2.body["items"][0]["id"].as_str().unwrap();
    app.delete(&format!("/api/v1/tenants/{default_id}"), &admin)
        .await
        .assert_problem(409, "own_tenant");
    app.get(&format!("/api/v1/tenants/{}", uuid::Uuid::now_v7()), &admin)
        .await
        .assert_problem(404, "not_found");

    // Tenant changes are audited in the tenant's trail.
    let (_, globex_key) = {
        let (_, k) = portcullis::keys::create_api_key(&app.services, "globex", "k", false)
            .await
            .unwrap();
        ((), k.expose().to_owned())
    };
    let trail = app
        .get("/api/v1/audit-events?entity_type=tenant", &globex_key)
        .await;
    let actions: Vec<&str> = trail.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["tenant.update", "tenant.update", "tenant.create"]);
}

async fn tenant_isolation(app: TestApp) {
    let (_, key_a) = app.create_tenant("tenant-a", json!({})).await;
    let (_, key_b) = app.create_tenant("tenant-b", json!({})).await;
    let b_user = app
        .create_user(
            &key_b,
            json!({"email": "secret@b.com", "full_name": "B Secret", "department": "X"}),
        )
        .await;
    let b_id = b_user["id"].as_str().unwrap();
    let a_user = app
        .create_user(&key_a, json!({"email": "a@a.com", "full_name": "A"}))
        .await;
    let a_id = a_user["id"].as_str().unwrap();
    let path = format!("/api/v1/users/{b_id}");

    app.get(&path, &key_a)
        .await
        .assert_problem(404, "not_found");
    app.patch(&path, &key_a, &json!({"full_name": "pwned"}))
        .await
        .assert_problem(404, "not_found");
    app.delete(&path, &key_a)
        .await
        .assert_problem(404, "not_found");
    app.send(
        Method::POST,
        &format!("{path}/restore"),
        Some(&key_a),
        None,
        &[],
    )
    .await
    .assert_problem(404, "not_found");
    // Listing and searching never show B's users, whatever the filters.
    for q in [
        "",
        "?q=secret",
        "?department=X",
        "?deleted=include",
        &format!("?manager_id={b_id}"),
    ] {
        let res = app.get(&format!("/api/v1/users{q}"), &key_a).await;
        assert!(!res.text.contains(b_id), "{q}: {}", res.text);
    }
    // B's user cannot become A's user's manager.
    let res = app
        .patch(
            &format!("/api/v1/users/{a_id}"),
            &key_a,
            &json!({"manager_id": b_id}),
        )
        .await;
    res.assert_problem(422, "validation_failed");
    // B's audit trail is invisible to A.
    let res = app
        .get(&format!("/api/v1/audit-events?entity_id={b_id}"), &key_a)
        .await;
    assert!(res.body["items"].as_array().unwrap().is_empty());
    // And B's user is untouched.
    let res = app.get(&path, &key_b).await;
    assert_eq!(res.body, b_user);
    // A tenant key cannot even see A's tenant record through the tenants API.
    app.get("/api/v1/tenants", &key_a)
        .await
        .assert_problem(403, "platform_admin_required");
}

async fn operations_endpoints(app: TestApp) {
    let res = app.send(Method::GET, "/healthz", None, None, &[]).await;
    assert_eq!(res.status, 200);
    assert_eq!(res.body["status"], "ok");
    let res = app.send(Method::GET, "/readyz", None, None, &[]).await;
    assert_eq!(res.status, 200);
    // A request id is generated when absent, echoed when acceptable, replaced when not.
    assert!(res.header("x-request-id").is_some_and(|v| v.len() >= 32));
    let res = app
        .send(
            Method::GET,
            "/healthz",
            None,
            None,
            &[("x-request-id", "abc-123")],
        )
        .await;
    assert_eq!(res.header("x-request-id"), Some("abc-123"));
    let res = app
        .send(
            Method::GET,
            "/healthz",
            None,
            None,
            &[("x-request-id", "bad id\twith tab")],
        )
        .await;
    assert_ne!(res.header("x-request-id"), Some("bad id\twith tab"));

    app.get("/api/v1/users", &app.admin_key).await;
    app.get("/api/v1/users/not-a-uuid", &app.admin_key).await;
    let res = app.send(Method::GET, "/metrics", None, None, &[]).await;
    assert_eq!(res.status, 200);
    assert!(
        res.text.contains(
            r#"portcullis_http_requests_total{method="GET",route="/api/v1/users",status="200"} 1"#
        ),
        "{}",
        res.text
    );
    assert!(
        res.text
            .contains(r#"route="/api/v1/users/{id}",status="404""#),
        "{}",
        res.text
    );
    assert!(
        res.text.contains(&format!(
            "portcullis_password_hash_workers {}",
            std::thread::available_parallelism().unwrap()
        )) && res.text.contains("portcullis_password_hash_queue 0"),
        "{}",
        res.text
    );
    assert!(
        res.text
            .contains("portcullis_http_request_duration_seconds_bucket"),
        "{}",
        res.text
    );
    assert!(
        res.text
            .contains(r#"portcullis_db_pool_connections{state="max"}"#),
        "{}",
        res.text
    );

    let res = app
        .send(Method::GET, "/openapi.json", None, None, &[])
        .await;
    assert_eq!(res.status, 200);
    assert_eq!(res.body["openapi"], "3.1.0");
    assert!(res.body["paths"]["/api/v1/users"]["get"].is_object());
}

/// A request whose body is still arriving when shutdown starts is completed; new
/// connections are refused afterwards.
async fn graceful_shutdown_finishes_in_flight_requests(app: TestApp) {
    let addr = app.base_url.trim_start_matches("http://").to_owned();
    let body = json!({"email": "late@example.com", "full_name": "Late"}).to_string();
    let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /api/v1/users HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        app.admin_key,
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&body.as_bytes()[..10]).await.unwrap();
    // Connections are accepted in the order they arrived: once a later one is answered,
    // the server holds the slow one.
    let res = app.http.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(res.status(), 200);

    let store = app.store.clone();
    let base = app.base_url.clone();
    let stopping = tokio::spawn(app.stop());
    // Shutdown has begun once the listener refuses new connections.
    let mut refused = false;
    for _ in 0..500 {
        if tokio::net::TcpStream::connect(&addr).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(refused, "the server never stopped accepting connections");
    stream.write_all(&body.as_bytes()[10..]).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 201"), "{response}");
    let _db = stopping.await.unwrap();
    // The user was stored, and the server no longer accepts connections.
    let tenant = store
        .get_tenant_by_slug(&domain::tenants::TenantSlug::parse("s", "default").unwrap())
        .await
        .unwrap();
    let page = store
        .list_users(tenant.id, &domain::users::UserListQuery::default())
        .await
        .unwrap();
    assert_eq!(page.items.len(), 1);
    assert!(reqwest::get(format!("{base}/healthz")).await.is_err());
}
