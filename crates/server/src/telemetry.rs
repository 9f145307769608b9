//! Logging: `tracing` to stderr, as text or JSON lines, filtered by the configured level.
//! Text is coloured only on a terminal: a log file or journald gets no escape codes.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::{Config, LogFormat};

/// Installs the global subscriber. The CLI's one-shot commands log only warnings so that
/// their stdout stays machine-readable.
pub fn init(config: &Config, quiet: bool) {
    let level = if quiet {
        "warn"
    } else {
        config.log_level.as_str()
    };
    let filter = EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let _ = match config.log_format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}
