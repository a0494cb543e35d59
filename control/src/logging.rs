//! Daemon logs (tracing + tracing-subscriber) on standard error: levels, `RUST_LOG`-style
//! filters, and one JSON object per line for DaemonSet logs. Standard output stays the
//! command's (tables, CNI results).

use std::io::IsTerminal;
use tracing_subscriber::EnvFilter;

/// How log lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// `TIME LEVEL TARGET: message`, for people.
    #[default]
    Text,
    /// One JSON object per line (`timestamp`, `level`, `target`, `message`), for log collectors.
    Json,
}

/// A log filter that does not parse.
#[derive(Debug, thiserror::Error)]
#[error("log level {filter:?}: {source} (give a level such as info or debug, or directives such as info,control::kube=debug)")]
pub struct LogLevelError {
    filter: String,
    source: tracing_subscriber::filter::ParseError,
}

/// The filter: `level` when given (a level or `RUST_LOG`-style directives), else `RUST_LOG`,
/// else `default`.
pub fn filter(level: Option<&str>, default: &str) -> Result<EnvFilter, LogLevelError> {
    let text = match level {
        Some(l) => l.to_string(),
        None => std::env::var(EnvFilter::DEFAULT_ENV)
            .ok()
            .filter(|v| !v.trim().is_empty())
            .unwrap_or_else(|| default.to_string()),
    };
    EnvFilter::builder()
        .parse(&text)
        .map_err(|source| LogLevelError {
            filter: text,
            source,
        })
}

/// Installs the process's logger, writing to standard error. Call once, first thing.
pub fn init(level: Option<&str>, format: LogFormat, default: &str) -> Result<(), LogLevelError> {
    let filter = filter(level, default)?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // A second logger (e.g. tests calling this twice) keeps the first: not an error.
    let _ = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .try_init(),
    };
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_level_or_directives_parse_and_nonsense_is_refused() {
        assert!(filter(Some("debug"), "info").is_ok());
        assert!(filter(Some("info,control::kube=debug"), "info").is_ok());
        let e = filter(Some("loud=="), "info").unwrap_err().to_string();
        assert!(e.contains("loud==") && e.contains("give a level"), "{e}");
    }
}
