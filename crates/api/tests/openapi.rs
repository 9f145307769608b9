//! The generated OpenAPI document is checked in: any API change shows up as a reviewable
//! diff of `snapshots/openapi__openapi.snap`. Update with `INSTA_UPDATE=always cargo test`
//! (or `cargo insta review`) after an intended change.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[test]
fn openapi() {
    let doc = serde_json::to_value(portcullis_api::openapi()).unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    insta::assert_json_snapshot!(doc);
}

#[test]
fn every_operation_documents_its_errors_as_problems() {
    let doc = serde_json::to_value(portcullis_api::openapi()).unwrap();
    let paths = doc["paths"].as_object().unwrap();
    assert!(paths.contains_key("/api/v1/users/{id}/restore"));
    assert!(paths.contains_key("/api/v1/tenants/{id}"));
    assert!(paths.contains_key("/api/v1/audit-events"));
    for p in [
        "/api/v1/auth/login",
        "/api/v1/me",
        "/api/v1/me/mfa/totp",
        "/.well-known/jwks.json",
    ] {
        assert!(paths.contains_key(p), "{p} is not documented");
    }
    for (path, ops) in paths {
        for (method, op) in ops.as_object().unwrap() {
            // Sign-in endpoints are public (logout excepted): they are how a credential is
            // obtained. Everything else under /api/ needs one.
            let public = path.starts_with("/api/v1/auth/") && path != "/api/v1/auth/logout";
            if public {
                assert!(op["security"].is_null(), "{method} {path} should be public");
            } else if path.starts_with("/api/") {
                assert!(op["security"].is_array(), "{method} {path} has no security");
            }
            for (status, res) in op["responses"].as_object().unwrap() {
                if status.starts_with('4') || status.starts_with('5') {
                    assert!(
                        res["content"]["application/problem+json"].is_object(),
                        "{method} {path} {status} is not a problem"
                    );
                }
            }
        }
    }
}
