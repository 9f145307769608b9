//! The operator CLI, run as the real binary against a temporary data directory.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

fn portcullis(data_dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(args)
        .env("PORTCULLIS_DATA_DIR", data_dir)
        .env_remove("PORTCULLIS_DATABASE_URL")
        .output()
        .expect("run portcullis")
}

fn json(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

#[test]
fn tenants_and_api_keys_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    assert_eq!(
        json(&portcullis(d, &["--json", "migrate"]))["migrated"],
        true
    );
    assert!(d.join("portcullis.db").exists());

    let t = json(&portcullis(
        d,
        &[
            "tenant", "create", "--slug", "acme", "--plan", "pro", "--json",
        ],
    ));
    assert_eq!(t["slug"], "acme");
    assert_eq!(t["max_users"], 10000);
    let list = json(&portcullis(d, &["tenant", "list", "--json"]));
    let slugs: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["slug"].as_str().unwrap())
        .collect();
    assert_eq!(slugs, ["acme", "default"]);

    let dup = portcullis(d, &["tenant", "create", "--slug", "acme"]);
    assert!(!dup.status.success());
    assert!(String::from_utf8_lossy(&dup.stderr).contains("acme"));

    let key = json(&portcullis(
        d,
        &[
            "api-key",
            "create",
            "--tenant",
            "acme",
            "--name",
            "ci",
            "--platform-admin",
            "--json",
        ],
    ));
    let secret = key["key"].as_str().unwrap();
    assert!(secret.starts_with("pcs_"));
    assert_eq!(key["platform_admin"], true);
    // Only the hash is stored: the secret is nowhere in the database file.
    let db = std::fs::read(d.join("portcullis.db")).unwrap();
    let wal = std::fs::read(d.join("portcullis.db-wal")).unwrap_or_default();
    for bytes in [&db, &wal] {
        assert!(!bytes.windows(secret.len()).any(|w| w == secret.as_bytes()));
    }
    let keys = json(&portcullis(
        d,
        &["api-key", "list", "--tenant", "acme", "--json"],
    ));
    assert_eq!(keys.as_array().unwrap().len(), 1);
    assert!(keys[0].get("key").is_none());
    let id = key["id"].as_str().unwrap();
    let revoked = json(&portcullis(
        d,
        &[
            "api-key", "revoke", "--tenant", "acme", "--id", id, "--json",
        ],
    ));
    assert!(revoked["revoked_at"].is_string());
    // Another tenant cannot revoke it (it is not found there).
    let other = portcullis(d, &["api-key", "revoke", "--tenant", "default", "--id", id]);
    assert!(!other.status.success());

    let seeded = json(&portcullis(
        d,
        &[
            "--json", "dev", "seed", "--tenant", "acme", "--users", "250", "--batch", "100",
        ],
    ));
    assert_eq!(seeded["inserted"], 250);
}

#[test]
fn config_check_reports_unknown_keys_and_redacts_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "listen = \"127.0.0.1:9000\"\n[database]\nmax_conections = 3\n",
    )
    .unwrap();
    let out = portcullis(dir.path(), &["config", "check", bad.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("max_conections"), "{err}");

    let good = dir.path().join("good.toml");
    std::fs::write(
        &good,
        "listen = \"127.0.0.1:9000\"\ndatabase_url = \"postgres://app:hunter2@db:5432/portcullis\"\nlog_format = \"json\"\n",
    )
    .unwrap();
    let out = portcullis(
        dir.path(),
        &[
            "--config",
            good.to_str().unwrap(),
            "config",
            "check",
            "--json",
        ],
    );
    let v = json(&out);
    assert_eq!(v["listen"], "127.0.0.1:9000");
    assert_eq!(v["log_format"], "json");
    assert_eq!(v["database_url"], "postgres://app:****@db:5432/portcullis");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("hunter2"));

    let out = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["config", "check"])
        .env("PORTCULLIS_LISTN", "x")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("PORTCULLIS_LISTN"));
}

#[test]
fn serve_starts_on_sqlite_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .arg("serve")
        .env("PORTCULLIS_DATA_DIR", dir.path())
        .env("PORTCULLIS_LISTEN", format!("127.0.0.1:{port}"))
        .env_remove("PORTCULLIS_DATABASE_URL")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut up = false;
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            up = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(up, "server did not start");
    // SIGTERM: the server shuts down cleanly and exits 0.
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let out = child.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(log.contains("listening on http://127.0.0.1"), "{log}");
    assert!(log.contains("created the default tenant"), "{log}");
    assert!(log.contains("stopped"), "{log}");
}
