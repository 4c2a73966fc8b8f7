//! The tracing subscriber both binaries install: human-readable lines on
//! stderr (stdout is kept for the one "listening on" line that tests and
//! scripts read), filtered by `RUST_LOG` (`tracing_subscriber::EnvFilter`
//! syntax, e.g. `RUST_LOG=info,gateway::uplink=debug`), `info` when unset.
//!
//! A `RUST_LOG` that does not parse does not stop the server: the default
//! filter is used and a warning says so, once the subscriber is installed.

use tracing_subscriber::EnvFilter;

/// The filter used when `RUST_LOG` is unset or invalid.
pub const DEFAULT_FILTER: &str = "info";

/// Why logging could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoggingError {
    /// Another global subscriber was installed first (a bug in the binary).
    #[error("a tracing subscriber is already installed")]
    AlreadyInstalled,
}

/// Installs the subscriber with [`DEFAULT_FILTER`] as the default.
pub fn init() -> Result<(), LoggingError> {
    init_with_default(DEFAULT_FILTER)
}

/// Installs the subscriber; `default` is the filter when `RUST_LOG` is
/// unset or invalid (it must itself parse; `info` if it does not).
pub fn init_with_default(default: &str) -> Result<(), LoggingError> {
    let rust_log = std::env::var(EnvFilter::DEFAULT_ENV).ok();
    let (filter, warning) = filter(rust_log.as_deref(), default);
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init()
        .map_err(|_| LoggingError::AlreadyInstalled)?;
    if let Some(w) = warning {
        tracing::warn!("{w}");
    }
    Ok(())
}

/// The filter for a `RUST_LOG` value, and a warning when it was ignored.
fn filter(rust_log: Option<&str>, default: &str) -> (EnvFilter, Option<String>) {
    let fallback =
        || EnvFilter::try_new(default).unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    match rust_log {
        None => (fallback(), None),
        Some(s) => match EnvFilter::try_new(s) {
            Ok(f) => (f, None),
            Err(e) => (
                fallback(),
                Some(format!("RUST_LOG={s:?} ignored ({e}); using {default:?}")),
            ),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rust_log_wins_and_a_bad_one_falls_back_with_a_warning() {
        let (f, w) = filter(None, "info");
        assert_eq!(f.to_string(), "info");
        assert!(w.is_none());
        let (f, w) = filter(Some("warn,gateway=debug"), "info");
        assert!(f.to_string().contains("gateway=debug"), "{f}");
        assert!(w.is_none());
        let (f, w) = filter(Some("gateway=loud"), "info");
        assert_eq!(f.to_string(), "info");
        assert!(w.expect("a warning").contains("gateway=loud"));
        let (f, _) = filter(None, "not a [filter");
        assert_eq!(f.to_string(), "info");
    }
}
