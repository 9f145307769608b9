//! The OpenAPI document is the contract: schemathesis (pinned in
//! `contract/requirements.lock`, installed by `contract/schemathesis.sh` on first use) runs
//! every check over every operation of the real server, on both backends, once with a
//! platform-admin API key and once with a signed-in administrator's access token, and must
//! find nothing: every status an operation answers is documented, every schema-valid
//! request is accepted, every invalid one refused, every response matches its schema.

use std::path::PathBuf;

use portcullis_testkit::{backend_tests, signed_in_to, TestApp};
use serde_json::json;

backend_tests!(schemathesis_finds_nothing_with_a_key_or_a_token);

const PW: &str = "Xq7!mBv2#kLp9zRw";

async fn schemathesis_finds_nothing_with_a_key_or_a_token(app: TestApp) {
    let key = app.admin_key.clone();
    let res = app
        .create_user(
            &key,
            json!({"email": "contract@example.com", "full_name": "Contract", "password": PW}),
        )
        .await;
    let user = res["id"].as_str().expect("user id").to_owned();
    let roles = app.get("/api/v1/roles", &key).await;
    assert_eq!(roles.status, 200, "{}", roles.text);
    let admin = roles
        .body
        .as_array()
        .expect("roles")
        .iter()
        .find(|r| r["name"] == "admin")
        .expect("the admin role")["id"]
        .as_str()
        .expect("role id")
        .to_owned();
    let res = app
        .post(
            &format!("/api/v1/users/{user}/roles"),
            &key,
            &json!({"role_id": admin}),
        )
        .await;
    assert_eq!(res.status, 201, "{}", res.text);
    let (token, _) = signed_in_to(&app, "default", "contract@example.com", PW).await;

    run(&app, &key, "API key").await;
    run(&app, &token, "user token").await;
}

async fn run(app: &TestApp, credential: &str, what: &str) {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../contract/schemathesis.sh");
    let out = tokio::process::Command::new("bash")
        .arg(&script)
        .arg(&app.base_url)
        .arg(credential)
        .kill_on_drop(true)
        .output()
        .await
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "schemathesis ({:?}, {what}) found failures:\n{stdout}\n{stderr}",
        app.backend
    );
}
