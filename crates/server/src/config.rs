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
];

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
