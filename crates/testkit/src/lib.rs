//! Test kit: `spawn_app(backend)` starts the real Portcullis server in-process on a random
//! port with a fresh database — a temporary SQLite file, or a fresh PostgreSQL schema when
//! `PORTCULLIS_TEST_DATABASE_URL` is set — and returns a small HTTP client for it.
//!
//! PostgreSQL tests are skipped (with a note on stderr) when the variable is unset, except
//! under CI (`CI` set), where a missing PostgreSQL is a failure: CI must never silently
//! skip the PostgreSQL half of the suite.

// Test support: failing loudly on a broken set-up is the point.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use domain::Store;
use portcullis::config::Config;
pub use portcullis_auth::mailer::MemoryMailer;
use portcullis_services::Services;
use reqwest::Method;
use serde_json::Value;
use store_postgres::PgStore;
use store_sqlite::SqliteStore;
use tokio::sync::oneshot;

pub use reqwest::header::HeaderMap;
pub use reqwest::StatusCode;

/// The variable naming the PostgreSQL server for tests.
pub const PG_ENV: &str = "PORTCULLIS_TEST_DATABASE_URL";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The PostgreSQL URL for tests, `None` to skip; panics under CI when it is missing.
pub fn postgres_url() -> Option<String> {
    match std::env::var(PG_ENV) {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var_os("CI").is_some() => {
            panic!("{PG_ENV} is not set, but CI is: the PostgreSQL tests must run in CI")
        }
        _ => {
            eprintln!("note: {PG_ENV} is not set; skipping a PostgreSQL test");
            None
        }
    }
}

/// A fresh, migrated store, and what keeps its database alive until dropped.
pub async fn fresh_store(backend: Backend) -> Option<(Arc<dyn Store>, DbGuard)> {
    match backend {
        Backend::Sqlite => {
            let dir = tempfile::tempdir().expect("temp dir");
            let store = SqliteStore::open(&dir.path().join("test.db"))
                .await
                .expect("open sqlite");
            store.migrate().await.expect("migrate sqlite");
            Some((Arc::new(store), DbGuard::Sqlite(dir)))
        }
        Backend::Postgres => {
            let url = postgres_url()?;
            let schema = format!("t_{}", uuid::Uuid::now_v7().simple());
            let store = PgStore::connect_in_schema(&url, &schema, 8)
                .await
                .unwrap_or_else(|e| panic!("cannot reach PostgreSQL at {url}: {e}"));
            store.migrate().await.expect("migrate postgres");
            Some((Arc::new(store), DbGuard::Postgres { url, schema }))
        }
    }
}

/// Removes the test database when dropped.
pub enum DbGuard {
    Sqlite(tempfile::TempDir),
    Postgres { url: String, schema: String },
}

impl Drop for DbGuard {
    fn drop(&mut self) {
        if let DbGuard::Postgres { url, schema } = self {
            let (url, schema) = (url.clone(), schema.clone());
            // Drop may run inside a runtime; do the async clean-up on a thread of its own.
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build();
                if let Ok(rt) = rt {
                    let _ = rt.block_on(PgStore::drop_schema(&url, &schema));
                }
            })
            .join();
        }
    }
}

/// Runs a storage case against a fresh, migrated store of `backend`; PostgreSQL is
/// skipped or mandatory exactly as for `spawn_app`. The database goes when the case ends,
/// whether it passed or not.
pub async fn with_store<F, Fut>(backend: Backend, case: F)
where
    F: FnOnce(Arc<dyn Store>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let Some((store, _db)) = fresh_store(backend).await else {
        return;
    };
    case(store).await;
}

/// Runs each named `async fn case(store: Arc<dyn Store>)` on SQLite and on PostgreSQL,
/// on a runtime with two workers so that concurrency cases really race.
#[macro_export]
macro_rules! store_tests {
    ($($case:ident),+ $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    $crate::with_store($crate::Backend::Sqlite, super::$case).await;
                }
            )+
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    $crate::with_store($crate::Backend::Postgres, super::$case).await;
                }
            )+
        }
    };
}

pub mod rig;

/// Domain values for storage tests.
pub mod fixtures {
    use domain::tenants::{NewTenant, Plan, TenantSlug};
    use domain::users::{NewUser, UserStatus};
    use domain::values::{DisplayName, Email, JsonObject, Username};

    /// An enterprise tenant (no user quota) named after its slug.
    pub fn new_tenant(slug: &str) -> NewTenant {
        NewTenant {
            slug: TenantSlug::parse("slug", slug).unwrap(),
            display_name: DisplayName::parse("display_name", &format!("Tenant {slug}")).unwrap(),
            plan: Plan::Enterprise,
            max_users: None,
            trial_ends_at: None,
            settings: JsonObject::default(),
        }
    }

    /// An active user with only an email and a name.
    pub fn new_user(email: &str, full_name: &str) -> NewUser {
        NewUser {
            email: Email::parse("email", email).unwrap(),
            username: None,
            full_name: DisplayName::parse("full_name", full_name).unwrap(),
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

    pub fn with_username(mut u: NewUser, username: &str) -> NewUser {
        u.username = Some(Username::parse("username", username).unwrap());
        u
    }
}

/// A running server.
pub struct TestApp {
    pub backend: Backend,
    pub base_url: String,
    pub http: reqwest::Client,
    /// The server's store, for tests that look behind the API (audit rows, outbox).
    pub store: Arc<dyn Store>,
    /// The server's services, for tests that act as the operator (CLI).
    pub services: Arc<Services>,
    /// A platform-admin key of the `default` tenant.
    pub admin_key: String,
    /// Every message the server sent.
    pub mailer: MemoryMailer,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    db: Option<DbGuard>,
}

/// Starts the server; `None` when the backend is not configured (PostgreSQL outside CI).
pub async fn spawn_app(backend: Backend) -> Option<TestApp> {
    spawn_app_with(backend, test_config()).await
}

/// The configuration of test servers: cheap argon2 parameters (the pool, the formats and
/// the flows are the same; only the cost differs), no per-IP request limit (every test
/// client is 127.0.0.1), a fresh master key instead of a file in the data directory.
pub fn test_config() -> Config {
    let mut config = Config::default();
    config.auth.argon2_memory_kib = 1024;
    config.auth.argon2_iterations = 1;
    config.auth.ip_requests_per_minute = 0;
    config.auth.secure_cookies = false;
    // Tests revoke keys through the store and expect the next request to see it; the
    // cache has its own test.
    config.http.api_key_cache_seconds = 0;
    config.auth.master_key = Some(
        secrecy::ExposeSecret::expose_secret(
            &portcullis_auth::keys::MasterKey::generate().to_base64(),
        )
        .to_owned(),
    );
    config
}

/// Starts the server with the given configuration (its listen address and database are
/// replaced by the test's own).
pub async fn spawn_app_with(backend: Backend, config: Config) -> Option<TestApp> {
    let (store, guard) = fresh_store(backend).await?;
    portcullis::app::prepare(store.as_ref())
        .await
        .expect("prepare");
    let mailer = MemoryMailer::new();
    let services =
        portcullis::app::services(store.clone(), &config, Some(Arc::new(mailer.clone())))
            .await
            .expect("services");
    let (_, admin) = portcullis::keys::create_api_key(&services, "default", "test-admin", true)
        .await
        .expect("admin key");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let router = portcullis::app::router(services.clone(), &config);
    let (tx, rx) = oneshot::channel::<()>();
    let server = tokio::spawn(portcullis::app::serve(
        listener,
        router,
        async move {
            let _ = rx.await;
        },
        Duration::from_secs(5),
    ));
    Some(TestApp {
        backend,
        base_url: format!("http://{addr}"),
        http: reqwest::Client::builder()
            .user_agent("portcullis-testkit")
            .build()
            .expect("client"),
        store,
        services,
        admin_key: admin.expose().to_owned(),
        mailer,
        shutdown: Some(tx),
        server: Some(server),
        db: Some(guard),
    })
}

/// A response, with the body parsed as JSON when it is JSON.
#[derive(Debug)]
pub struct TestResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub text: String,
    pub body: Value,
}

impl TestResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts the response is a problem document with this status and code.
    #[track_caller]
    pub fn assert_problem(&self, status: u16, code: &str) -> &Self {
        assert_eq!(self.status.as_u16(), status, "body: {}", self.text);
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json"),
            "body: {}",
            self.text
        );
        assert_eq!(self.body["code"], code, "body: {}", self.text);
        assert_eq!(self.body["status"], status);
        assert_eq!(self.body["type"], format!("urn:portcullis:problem:{code}"));
        self
    }

    /// The fields named in a problem's `errors`.
    pub fn error_fields(&self) -> Vec<String> {
        self.body["errors"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|e| e["field"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// Sends a request with an optional bearer key and JSON body.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> TestResponse {
        let mut req = self.http.request(method, self.url(path));
        if let Some(key) = key {
            req = req.bearer_auth(key);
        }
        if let Some(body) = body {
            req = req.json(body);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let res = req.send().await.expect("request");
        let status = res.status();
        let headers = res.headers().clone();
        let text = res.text().await.expect("body");
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        TestResponse {
            status,
            headers,
            text,
            body,
        }
    }

    pub async fn get(&self, path: &str, key: &str) -> TestResponse {
        self.send(Method::GET, path, Some(key), None, &[]).await
    }

    pub async fn post(&self, path: &str, key: &str, body: &Value) -> TestResponse {
        self.send(Method::POST, path, Some(key), Some(body), &[])
            .await
    }

    pub async fn patch(&self, path: &str, key: &str, body: &Value) -> TestResponse {
        self.send(Method::PATCH, path, Some(key), Some(body), &[])
            .await
    }

    pub async fn put(&self, path: &str, key: &str, body: &Value) -> TestResponse {
        self.send(Method::PUT, path, Some(key), Some(body), &[])
            .await
    }

    pub async fn delete(&self, path: &str, key: &str) -> TestResponse {
        self.send(Method::DELETE, path, Some(key), None, &[]).await
    }

    /// Creates a tenant through the API and a (non-admin) key for it; returns (id, key).
    pub async fn create_tenant(&self, slug: &str, extra: Value) -> (String, String) {
        let mut body =
            serde_json::json!({"slug": slug, "display_name": slug, "plan": "enterprise"});
        if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
            b.extend(e.clone());
        }
        let res = self.post("/api/v1/tenants", &self.admin_key, &body).await;
        assert_eq!(res.status, 201, "{}", res.text);
        let (_, key) = portcullis::keys::create_api_key(&self.services, slug, "test", false)
            .await
            .expect("key");
        (
            res.body["id"].as_str().expect("id").to_owned(),
            key.expose().to_owned(),
        )
    }

    /// Creates a user through the API and returns its JSON.
    pub async fn create_user(&self, key: &str, body: Value) -> Value {
        let res = self.post("/api/v1/users", key, &body).await;
        assert_eq!(res.status, 201, "{}", res.text);
        res.body
    }

    /// Signals shutdown and waits for the server to stop; the returned guard keeps the
    /// database so that the test can inspect it afterwards.
    pub async fn stop(mut self) -> Option<DbGuard> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(h) = self.server.take() {
            h.await.expect("join").expect("server");
        }
        self.db.take()
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Creates a user of the `default` tenant with a password (through the platform-admin key)
/// and returns its JSON.
pub async fn user_with_password(
    app: &TestApp,
    email: &str,
    username: Option<&str>,
    pw: &str,
) -> Value {
    let mut body = serde_json::json!({"email": email, "full_name": "Test Person", "password": pw});
    if let Some(u) = username {
        body["username"] = serde_json::json!(u);
    }
    app.create_user(&app.admin_key, body).await
}

/// `POST /api/v1/auth/login` to the tenant with this slug.
pub async fn login_in(app: &TestApp, tenant: &str, login: &str, pw: &str) -> TestResponse {
    app.send(
        Method::POST,
        "/api/v1/auth/login",
        None,
        Some(&serde_json::json!({"tenant": tenant, "login": login, "password": pw})),
        &[],
    )
    .await
}

/// `POST /api/v1/auth/login` to the `default` tenant.
pub async fn login(app: &TestApp, login: &str, pw: &str) -> TestResponse {
    login_in(app, "default", login, pw).await
}

/// The access token of a successful sign-in.
#[track_caller]
pub fn access(res: &TestResponse) -> String {
    assert_eq!(res.status, 200, "{}", res.text);
    res.body["access_token"]
        .as_str()
        .expect("access_token")
        .to_owned()
}

/// Signs in to the `default` tenant; returns (access token, refresh token).
pub async fn signed_in(app: &TestApp, login_name: &str, pw: &str) -> (String, String) {
    signed_in_to(app, "default", login_name, pw).await
}

/// Signs in to the tenant with this slug; returns (access token, refresh token).
pub async fn signed_in_to(
    app: &TestApp,
    tenant: &str,
    login_name: &str,
    pw: &str,
) -> (String, String) {
    let res = login_in(app, tenant, login_name, pw).await;
    (
        access(&res),
        res.body["refresh_token"]
            .as_str()
            .expect("refresh_token")
            .to_owned(),
    )
}

/// Runs each named `async fn case(app: TestApp)` on SQLite and on PostgreSQL.
#[macro_export]
macro_rules! backend_tests {
    ($($case:ident),+ $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let app = $crate::spawn_app($crate::Backend::Sqlite).await.expect("sqlite app");
                    super::$case(app).await;
                }
            )+
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    if let Some(app) = $crate::spawn_app($crate::Backend::Postgres).await {
                        super::$case(app).await;
                    }
                }
            )+
        }
    };
}
