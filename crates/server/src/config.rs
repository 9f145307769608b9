//! Configuration: defaults, overlaid by a TOML file (`--config FILE`), overlaid by
//! `PORTCULLIS_*` environment variables. Unknown keys in the file and unknown
//! `PORTCULLIS_*` variables are errors that name the key, so a typo never silently falls
//! back to a default. (`PORTCULLIS_TEST_*` is reserved for the test suite and ignored.)

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Where the embedded database (and later, generated keys) live.
    pub data_dir: PathBuf,
    /// `postgres://…` or `sqlite://PATH`; default: SQLite at `<data_dir>/portcullis.db`.
    pub database_url: Option<String>,
    pub log_format: LogFormat,
    /// A tracing filter, e.g. `info` or `portcullis=debug,sqlx=warn`.
    pub log_level: String,
    pub database: DatabaseConfig,
    pub http: HttpConfig,
    pub auth: AuthSection,
    pub mail: MailSection,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSection {
    /// Base URL of this server as users reach it: token issuers are `<public_url>/t/<tenant
    /// id>`, and emailed links point under it.
    pub public_url: String,
    /// Base64 of 32 bytes that encrypts signing keys and TOTP secrets at rest. Default: a
    /// key generated into `<data_dir>/master.key` on first start. Replicas sharing a
    /// database must share it.
    pub master_key: Option<String>,
    /// `EdDSA` (Ed25519, default) or `ES256`.
    pub signing_algorithm: String,
    /// Argon2id memory in KiB (OWASP: 19456), iterations (2) and lanes (1).
    pub argon2_memory_kib: u32,
    pub argon2_iterations: u32,
    pub argon2_parallelism: u32,
    /// Password-hashing threads; 0 = one per core.
    pub hash_threads: usize,
    /// Hashing jobs that may wait before sign-ins get 503 with Retry-After.
    pub hash_queue: usize,
    pub access_token_ttl_seconds: u64,
    pub session_ttl_hours: u64,
    /// Failures within the window that lock an account, and for how long.
    pub lockout_threshold: u32,
    pub lockout_window_seconds: u64,
    pub lockout_duration_seconds: u64,
    /// Per-IP request limit of the sign-in endpoints (0 = off).
    pub ip_requests_per_minute: u32,
    /// Failed sign-ins from one IP within the lockout window before it gets 429 (0 = off).
    pub ip_failure_limit: u32,
    pub emails_per_address_per_hour: u32,
    /// `Secure` attribute on session cookies.
    pub secure_cookies: bool,
}

impl Default for AuthSection {
    fn default() -> Self {
        Self {
            public_url: "http://localhost:8080".to_owned(),
            master_key: None,
            signing_algorithm: "EdDSA".to_owned(),
            argon2_memory_kib: 19_456,
            argon2_iterations: 2,
            argon2_parallelism: 1,
            hash_threads: 0,
            hash_queue: 64,
            access_token_ttl_seconds: 600,
            session_ttl_hours: 720,
            lockout_threshold: 5,
            lockout_window_seconds: 900,
            lockout_duration_seconds: 900,
            ip_requests_per_minute: 120,
            ip_failure_limit: 50,
            emails_per_address_per_hour: 5,
            secure_cookies: true,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MailTransport {
    /// Messages go to the log and to `<data_dir>/mail/` (development).
    Dev,
    Smtp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTlsMode {
    /// Implicit TLS (port 465).
    Tls,
    /// STARTTLS, required (port 587).
    Starttls,
    /// Plain text: only for a relay on the same host.
    None,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MailSection {
    pub transport: MailTransport,
    pub from: String,
    pub smtp_host: String,
    pub smtp_port: u16,
    pub smtp_tls: SmtpTlsMode,
    pub smtp_username: Option<String>,
    pub smtp_password: Option<String>,
}

impl Default for MailSection {
    fn default() -> Self {
        Self {
            transport: MailTransport::Dev,
            from: "Portcullis <no-reply@localhost>".to_owned(),
            smtp_host: "localhost".to_owned(),
            smtp_port: 587,
            smtp_tls: SmtpTlsMode::Starttls,
            smtp_username: None,
            smtp_password: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// PostgreSQL pool size.
    pub max_connections: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Largest accepted request body.
    pub max_body_bytes: usize,
    /// How long shutdown waits for in-flight requests.
    pub shutdown_grace_seconds: u64,
    /// How long an authenticated API key is trusted before the database is asked again
    /// (0: every request asks). A revoked key stops working within this time.
    pub api_key_cache_seconds: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("./data"),
            database_url: None,
            log_format: LogFormat::Text,
            log_level: "info".to_owned(),
            database: DatabaseConfig::default(),
            http: HttpConfig::default(),
            auth: AuthSection::default(),
            mail: MailSection::default(),
        }
    }
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            max_connections: 16,
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: 1024 * 1024,
            shutdown_grace_seconds: 30,
            api_key_cache_seconds: 5,
        }
    }
}

/// Which database a configuration selects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseTarget {
    Sqlite(PathBuf),
    Postgres(String),
}

/// Every environment variable the configuration reads.
pub const ENV_VARS: &[&str] = &[
    "PORTCULLIS_LISTEN",
    "PORTCULLIS_DATA_DIR",
    "PORTCULLIS_DATABASE_URL",
    "PORTCULLIS_LOG_FORMAT",
    "PORTCULLIS_LOG_LEVEL",
    "PORTCULLIS_DATABASE_MAX_CONNECTIONS",
    "PORTCULLIS_HTTP_MAX_BODY_BYTES",
    "PORTCULLIS_HTTP_SHUTDOWN_GRACE_SECONDS",
    "PORTCULLIS_HTTP_API_KEY_CACHE_SECONDS",
    "PORTCULLIS_PUBLIC_URL",
    "PORTCULLIS_MASTER_KEY",
    "PORTCULLIS_AUTH_SIGNING_ALGORITHM",
    "PORTCULLIS_AUTH_ARGON2_MEMORY_KIB",
    "PORTCULLIS_AUTH_ARGON2_ITERATIONS",
    "PORTCULLIS_AUTH_ARGON2_PARALLELISM",
    "PORTCULLIS_AUTH_HASH_THREADS",
    "PORTCULLIS_AUTH_HASH_QUEUE",
    "PORTCULLIS_AUTH_ACCESS_TOKEN_TTL_SECONDS",
    "PORTCULLIS_AUTH_SESSION_TTL_HOURS",
    "PORTCULLIS_AUTH_LOCKOUT_THRESHOLD",
    "PORTCULLIS_AUTH_LOCKOUT_WINDOW_SECONDS",
    "PORTCULLIS_AUTH_LOCKOUT_DURATION_SECONDS",
    "PORTCULLIS_AUTH_IP_REQUESTS_PER_MINUTE",
    "PORTCULLIS_AUTH_IP_FAILURE_LIMIT",
    "PORTCULLIS_AUTH_EMAILS_PER_ADDRESS_PER_HOUR",
    "PORTCULLIS_AUTH_SECURE_COOKIES",
    "PORTCULLIS_MAIL_TRANSPORT",
    "PORTCULLIS_MAIL_FROM",
    "PORTCULLIS_MAIL_SMTP_HOST",
    "PORTCULLIS_MAIL_SMTP_PORT",
    "PORTCULLIS_MAIL_SMTP_TLS",
    "PORTCULLIS_MAIL_SMTP_USERNAME",
    "PORTCULLIS_MAIL_SMTP_PASSWORD",
];

/// Parses a value with `FromStr`, or names what was expected.
fn num<T: std::str::FromStr>(key: &str, value: &str, what: &str) -> anyhow::Result<T> {
    value
        .parse()
        .map_err(|_| anyhow::anyhow!("environment variable {key}: must be {what}"))
}

/// Parses a TOML-style enum value (`"dev"`, `"smtp"`…) through serde.
fn enum_value<T: serde::de::DeserializeOwned>(key: &str, value: &str) -> anyhow::Result<T> {
    T::deserialize(serde::de::value::StrDeserializer::<serde::de::value::Error>::new(value))
        .map_err(|e| anyhow::anyhow!("environment variable {key}: {e}"))
}

impl Config {
    /// Loads defaults ← file ← the process environment.
    pub fn load(file: Option<&Path>) -> anyhow::Result<Self> {
        let mut config = match file {
            Some(path) => Self::from_file(path)?,
            None => Self::default(),
        };
        config.apply_env(std::env::vars())?;
        config.validate()?;
        Ok(config)
    }

    pub fn from_file(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        Self::from_toml(&text).with_context(|| format!("invalid config file {}", path.display()))
    }

    pub fn from_toml(text: &str) -> anyhow::Result<Self> {
        toml::from_str(text).map_err(|e| {
            anyhow::anyhow!(
                "{}",
                e.message().trim().to_owned() + &location(text, e.span())
            )
        })
    }

    /// Overlays `PORTCULLIS_*` variables.
    pub fn apply_env(
        &mut self,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> anyhow::Result<()> {
        for (key, value) in vars {
            let Some(name) = key.strip_prefix("PORTCULLIS_") else {
                continue;
            };
            if name.starts_with("TEST_") {
                continue;
            }
            let bad = |what: &str| anyhow::anyhow!("environment variable {key}: {what}");
            match name {
                "LISTEN" => {
                    self.listen = value
                        .parse()
                        .map_err(|_| bad("must be an address like 127.0.0.1:8080"))?
                }
                "DATA_DIR" => self.data_dir = PathBuf::from(value),
                "DATABASE_URL" => self.database_url = Some(value).filter(|v| !v.is_empty()),
                "LOG_FORMAT" => {
                    self.log_format = match value.as_str() {
                        "text" => LogFormat::Text,
                        "json" => LogFormat::Json,
                        _ => return Err(bad("must be text or json")),
                    }
                }
                "LOG_LEVEL" => self.log_level = value,
                "DATABASE_MAX_CONNECTIONS" => {
                    self.database.max_connections = value
                        .parse()
                        .map_err(|_| bad("must be a positive integer"))?
                }
                "HTTP_MAX_BODY_BYTES" => {
                    self.http.max_body_bytes = value
                        .parse()
                        .map_err(|_| bad("must be a positive integer"))?
                }
                "HTTP_SHUTDOWN_GRACE_SECONDS" => {
                    self.http.shutdown_grace_seconds = value
                        .parse()
                        .map_err(|_| bad("must be a non-negative integer"))?
                }
                "HTTP_API_KEY_CACHE_SECONDS" => {
                    self.http.api_key_cache_seconds = value
                        .parse()
                        .map_err(|_| bad("must be a non-negative integer"))?
                }
                "PUBLIC_URL" => self.auth.public_url = value,
                "MASTER_KEY" => self.auth.master_key = Some(value).filter(|v| !v.is_empty()),
                "AUTH_SIGNING_ALGORITHM" => self.auth.signing_algorithm = value,
                "AUTH_ARGON2_MEMORY_KIB" => {
                    self.auth.argon2_memory_kib = num(&key, &value, "a positive integer")?
                }
                "AUTH_ARGON2_ITERATIONS" => {
                    self.auth.argon2_iterations = num(&key, &value, "a positive integer")?
                }
                "AUTH_ARGON2_PARALLELISM" => {
                    self.auth.argon2_parallelism = num(&key, &value, "a positive integer")?
                }
                "AUTH_HASH_THREADS" => {
                    self.auth.hash_threads = num(&key, &value, "a non-negative integer")?
                }
                "AUTH_HASH_QUEUE" => {
                    self.auth.hash_queue = num(&key, &value, "a non-negative integer")?
                }
                "AUTH_ACCESS_TOKEN_TTL_SECONDS" => {
                    self.auth.access_token_ttl_seconds = num(&key, &value, "a positive integer")?
                }
                "AUTH_SESSION_TTL_HOURS" => {
                    self.auth.session_ttl_hours = num(&key, &value, "a positive integer")?
                }
                "AUTH_LOCKOUT_THRESHOLD" => {
                    self.auth.lockout_threshold = num(&key, &value, "a positive integer")?
                }
                "AUTH_LOCKOUT_WINDOW_SECONDS" => {
                    self.auth.lockout_window_seconds = num(&key, &value, "a positive integer")?
                }
                "AUTH_LOCKOUT_DURATION_SECONDS" => {
                    self.auth.lockout_duration_seconds = num(&key, &value, "a positive integer")?
                }
                "AUTH_IP_REQUESTS_PER_MINUTE" => {
                    self.auth.ip_requests_per_minute = num(&key, &value, "a non-negative integer")?
                }
                "AUTH_IP_FAILURE_LIMIT" => {
                    self.auth.ip_failure_limit = num(&key, &value, "a non-negative integer")?
                }
                "AUTH_EMAILS_PER_ADDRESS_PER_HOUR" => {
                    self.auth.emails_per_address_per_hour =
                        num(&key, &value, "a non-negative integer")?
                }
                "AUTH_SECURE_COOKIES" => {
                    self.auth.secure_cookies = num(&key, &value, "true or false")?
                }
                "MAIL_TRANSPORT" => self.mail.transport = enum_value(&key, &value)?,
                "MAIL_FROM" => self.mail.from = value,
                "MAIL_SMTP_HOST" => self.mail.smtp_host = value,
                "MAIL_SMTP_PORT" => self.mail.smtp_port = num(&key, &value, "a port number")?,
                "MAIL_SMTP_TLS" => self.mail.smtp_tls = enum_value(&key, &value)?,
                "MAIL_SMTP_USERNAME" => {
                    self.mail.smtp_username = Some(value).filter(|v| !v.is_empty())
                }
                "MAIL_SMTP_PASSWORD" => {
                    self.mail.smtp_password = Some(value).filter(|v| !v.is_empty())
                }
                _ => bail!(
                    "unknown environment variable {key}; known: {}",
                    ENV_VARS.join(", ")
                ),
            }
        }
        Ok(())
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        if self.database.max_connections == 0 {
            bail!("database.max_connections must be at least 1");
        }
        if self.http.max_body_bytes < 1024 {
            bail!("http.max_body_bytes must be at least 1024");
        }
        if self.http.api_key_cache_seconds > 300 {
            bail!("http.api_key_cache_seconds must be at most 300");
        }
        let a = &self.auth;
        if !(a.public_url.starts_with("http://") || a.public_url.starts_with("https://")) {
            bail!("auth.public_url must be an http:// or https:// URL");
        }
        if self.mail.transport == MailTransport::Dev && !is_loopback_url(&a.public_url) {
            bail!(
                "mail.transport = dev writes sign-in links to the log and to files, so it is \
                 only allowed while auth.public_url is a loopback address (localhost, \
                 127.0.0.1, [::1]); set PORTCULLIS_MAIL_TRANSPORT=smtp and the SMTP settings"
            );
        }
        a.signing_algorithm
            .parse::<portcullis_auth::keys::SigningAlgorithm>()
            .map_err(|_| anyhow::anyhow!("auth.signing_algorithm must be EdDSA or ES256"))?;
        if a.argon2_memory_kib < 8 * a.argon2_parallelism.max(1)
            || a.argon2_iterations == 0
            || a.argon2_parallelism == 0
        {
            bail!("auth.argon2_* parameters are out of range");
        }
        if a.access_token_ttl_seconds < 30 || a.access_token_ttl_seconds > 86_400 {
            bail!("auth.access_token_ttl_seconds must be between 30 and 86400");
        }
        if a.session_ttl_hours == 0
            || a.lockout_threshold == 0
            || a.lockout_window_seconds == 0
            || a.lockout_duration_seconds == 0
        {
            bail!("auth session and lockout settings must be positive");
        }
        if let Some(key) = &a.master_key {
            portcullis_auth::keys::MasterKey::from_base64(key)
                .map_err(|_| anyhow::anyhow!("auth.master_key must be base64 of 32 bytes"))?;
        }
        tracing_subscriber::EnvFilter::try_new(&self.log_level)
            .with_context(|| format!("log_level {:?} is not a valid filter", self.log_level))?;
        self.database_target()?;
        Ok(())
    }

    pub fn database_target(&self) -> anyhow::Result<DatabaseTarget> {
        match self.database_url.as_deref() {
            None => Ok(DatabaseTarget::Sqlite(self.data_dir.join("portcullis.db"))),
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                Ok(DatabaseTarget::Postgres(url.to_owned()))
            }
            Some(url) => match url
                .strip_prefix("sqlite://")
                .or_else(|| url.strip_prefix("sqlite:"))
            {
                Some(path) if !path.is_empty() => Ok(DatabaseTarget::Sqlite(PathBuf::from(path))),
                _ => bail!("database_url must start with postgres://, postgresql:// or sqlite://"),
            },
        }
    }

    /// The effective configuration as TOML, with secrets (database password) redacted.
    pub fn redacted_toml(&self) -> anyhow::Result<String> {
        let mut shown = self.clone();
        shown.database_url = shown.database_url.as_deref().map(redact_url);
        if shown.auth.master_key.is_some() {
            shown.auth.master_key = Some("****".to_owned());
        }
        if shown.mail.smtp_password.is_some() {
            shown.mail.smtp_password = Some("****".to_owned());
        }
        Ok(toml::to_string_pretty(&shown)?)
    }
}

fn location(text: &str, span: Option<std::ops::Range<usize>>) -> String {
    match span {
        Some(span) => {
            let line = text[..span.start.min(text.len())].lines().count().max(1);
            format!(" (line {line})")
        }
        None => String::new(),
    }
}

/// Replaces the password of a URL's user-info with `****`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, tail) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _password)) => format!("{scheme}://{user}:****@{host}{tail}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

impl fmt::Display for DatabaseTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DatabaseTarget::Sqlite(p) => write!(f, "sqlite://{}", p.display()),
            DatabaseTarget::Postgres(url) => f.write_str(&redact_url(url)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_file_key_is_named() {
        let err = Config::from_toml("listen = \"127.0.0.1:1\"\nlisten_port = 3\n").unwrap_err();
        assert!(err.to_string().contains("listen_port"), "{err}");
        let err = Config::from_toml("[http]\nmax_body = 3\n").unwrap_err();
        assert!(err.to_string().contains("max_body"), "{err}");
    }

    #[test]
    fn env_overlays_file_and_unknown_env_is_named() {
        let mut c = Config::from_toml("listen = \"127.0.0.1:1\"\nlog_level = \"debug\"\n").unwrap();
        c.apply_env([
            ("PORTCULLIS_LISTEN".into(), "0.0.0.0:9000".into()),
            ("PORTCULLIS_TEST_DATABASE_URL".into(), "ignored".into()),
            ("OTHER".into(), "x".into()),
        ])
        .unwrap();
        assert_eq!(c.listen.to_string(), "0.0.0.0:9000");
        assert_eq!(c.log_level, "debug");
        let err = c
            .apply_env([("PORTCULLIS_LISTN".into(), "x".into())])
            .unwrap_err();
        assert!(err.to_string().contains("PORTCULLIS_LISTN"), "{err}");
    }

    #[test]
    fn database_targets() {
        let mut c = Config::default();
        assert_eq!(
            c.database_target().unwrap(),
            DatabaseTarget::Sqlite(PathBuf::from("./data/portcullis.db"))
        );
        c.database_url = Some("postgres://u:secret@h:5432/db".into());
        assert!(matches!(
            c.database_target().unwrap(),
            DatabaseTarget::Postgres(_)
        ));
        let shown = c.redacted_toml().unwrap();
        assert!(
            !shown.contains("secret") && shown.contains("u:****@h:5432/db"),
            "{shown}"
        );
        c.database_url = Some("mysql://x".into());
        assert!(c.database_target().is_err());
    }
}

/// Whether `url` (http or https) names this machine: `localhost` (or a name under it), or a
/// loopback address.
fn is_loopback_url(url: &str) -> bool {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .unwrap_or(url);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host_port = authority.rsplit('@').next().unwrap_or_default();
    let host = match host_port.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => host_port.split(':').next().unwrap_or_default(),
    };
    let host = host.to_ascii_lowercase();
    host == "localhost"
        || host.ends_with(".localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod loopback_tests {
    use super::is_loopback_url;

    #[test]
    fn only_this_machine_is_loopback() {
        for url in [
            "http://localhost:8080",
            "http://LOCALHOST",
            "https://app.localhost/x",
            "http://127.0.0.1:3000",
            "http://127.1.2.3",
            "http://[::1]:8080/path",
        ] {
            assert!(is_loopback_url(url), "{url}");
        }
        for url in [
            "https://id.example.com",
            "http://localhost.example.com",
            "http://10.0.0.1",
            "http://[2001:db8::1]:8080",
            "http://127.0.0.1@evil.example",
            "http://evil.example#@localhost",
        ] {
            assert!(!is_loopback_url(url), "{url}");
        }
    }
}
