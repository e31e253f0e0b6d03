//! `[diagnostics]`: where the local web page, the JSON API and `/metrics`
//! listen, and the token that guards them.
//!
//! Invariants (checked by [`DiagnosticsSection::validate`] before anything runs):
//! - the default listen address is loopback (`127.0.0.1:8080`, away from
//!   MQTT's 1883), so a fresh install exposes nothing to the network;
//! - a non-loopback listen address without a token is a [`ConfigError`]
//!   naming `diagnostics.token`: the gateway refuses to start and says why;
//! - the token is held in a [`Token`] whose `Debug`/`Display` never print it,
//!   so it cannot reach a log line, a page or a bundle by accident.

use crate::config::ConfigError;
use serde::Deserialize;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Default port of the diagnostics page (MQTT uses 1883).
pub const DEFAULT_PORT: u16 = 8080;

/// Shortest token accepted, in bytes.
pub const MIN_TOKEN_LEN: usize = 16;

/// `[diagnostics]` as written. `Debug` prints the token as `<redacted>`.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DiagnosticsSection {
    /// Serve the page, API and `/metrics` at all. Default `true`.
    pub enabled: bool,
    /// Address to listen on. Default `127.0.0.1:8080` (loopback only). Any
    /// other address requires `token` or `token_file`.
    pub listen: SocketAddr,
    /// Bearer token required on every request (header `Authorization:
    /// Bearer <token>`, or the cookie set by the login form). At least 16
    /// characters. Prefer `token_file` so the config can be shared.
    pub token: Option<String>,
    /// File holding the token (first line; relative to the config file).
    pub token_file: Option<PathBuf>,
    /// A device whose last frame is older than this is shown as stale, s.
    pub stale_after_s: u64,
    /// Live values kept per channel for the charts, s (default one hour).
    pub chart_window_s: u64,
    /// Memory for the charts of every channel together, bytes (default
    /// 2 MiB): raw points and the 1 h / 24 h / 7 d buckets share it
    /// equally per channel; what does not fit is dropped, oldest first,
    /// and drawn as "not kept" (the readings stay in the buffer).
    pub chart_memory_bytes: usize,
    /// Log lines kept in memory for the page and `diag bundle`.
    pub log_lines: usize,
}

impl fmt::Debug for DiagnosticsSection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DiagnosticsSection")
            .field("enabled", &self.enabled)
            .field("listen", &self.listen)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("token_file", &self.token_file)
            .field("stale_after_s", &self.stale_after_s)
            .field("chart_window_s", &self.chart_window_s)
            .field("chart_memory_bytes", &self.chart_memory_bytes)
            .field("log_lines", &self.log_lines)
            .finish()
    }
}

impl Default for DiagnosticsSection {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], DEFAULT_PORT)),
            token: None,
            token_file: None,
            stale_after_s: 300,
            chart_window_s: 3600,
            chart_memory_bytes: super::state::DEFAULT_CHART_MEMORY_BYTES,
            log_lines: 500,
        }
    }
}

/// A diagnostics access token. Never printed: `Debug` and `Display` show
/// `<redacted>`.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    /// Wraps a token (no checks; see [`DiagnosticsSection::validate`]).
    pub fn new(token: impl Into<String>) -> Self {
        Self(token.into())
    }

    /// The secret itself, for comparison and for the log scrubber only.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Compares in time independent of where the first difference is.
    pub fn matches(&self, candidate: &str) -> bool {
        let a = self.0.as_bytes();
        let b = candidate.as_bytes();
        let mut diff = a.len() ^ b.len();
        for (i, x) in a.iter().enumerate() {
            let y = b.get(i).copied().unwrap_or(0);
            diff |= usize::from(x ^ y);
        }
        diff == 0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Validated diagnostics settings.
#[derive(Debug, Clone)]
pub struct ValidDiagnosticsConfig {
    /// Serve at all.
    pub enabled: bool,
    /// Listen address (port 0 = any free port; the bound address is reported).
    pub listen: SocketAddr,
    /// Required token, if any.
    pub token: Option<Token>,
    /// Staleness threshold.
    pub stale_after: Duration,
    /// Chart window.
    pub chart_window: Duration,
    /// Chart memory budget, bytes.
    pub chart_memory_bytes: usize,
    /// In-memory log lines.
    pub log_lines: usize,
}

impl ValidDiagnosticsConfig {
    /// Loopback-only settings without a token on `listen` (tests, demo).
    pub fn loopback(listen: SocketAddr) -> Self {
        Self {
            enabled: true,
            listen,
            token: None,
            stale_after: Duration::from_secs(300),
            chart_window: Duration::from_secs(3600),
            chart_memory_bytes: super::state::DEFAULT_CHART_MEMORY_BYTES,
            log_lines: 500,
        }
    }
}

impl DiagnosticsSection {
    /// Checks the section; `file` names the config file in errors and its
    /// directory anchors a relative `token_file`.
    pub fn validate(&self, file: &Path) -> Result<ValidDiagnosticsConfig, ConfigError> {
        let base = file.parent().unwrap_or(Path::new("."));
        let token = match (&self.token, &self.token_file) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::new(
                    file,
                    "diagnostics.token",
                    "set either `token` or `token_file`, not both",
                ));
            }
            (Some(t), None) => Some(check_token(file, "diagnostics.token", t.trim())?),
            (None, Some(p)) => {
                let path = base.join(p);
                let text = std::fs::read_to_string(&path).map_err(|e| {
                    ConfigError::new(
                        file,
                        "diagnostics.token_file",
                        format!("cannot read {}: {e}", path.display()),
                    )
                })?;
                let first = text.lines().next().unwrap_or("").trim();
                Some(check_token(file, "diagnostics.token_file", first)?)
            }
            (None, None) => None,
        };
        if self.enabled && !self.listen.ip().is_loopback() && token.is_none() {
            return Err(ConfigError::new(
                file,
                "diagnostics.token",
                format!(
                    "diagnostics.listen = {} is not a loopback address, so the page would be \
                     reachable from the network: set diagnostics.token (or token_file), or \
                     listen on 127.0.0.1",
                    self.listen
                ),
            ));
        }
        if self.stale_after_s == 0 {
            return Err(ConfigError::new(
                file,
                "diagnostics.stale_after_s",
                "must be at least 1",
            ));
        }
        if !(60..=86_400).contains(&self.chart_window_s) {
            return Err(ConfigError::new(
                file,
                "diagnostics.chart_window_s",
                "must be between 60 and 86400",
            ));
        }
        if !(MIN_CHART_MEMORY_BYTES..=MAX_CHART_MEMORY_BYTES).contains(&self.chart_memory_bytes) {
            return Err(ConfigError::new(
                file,
                "diagnostics.chart_memory_bytes",
                format!(
                    "must be between {MIN_CHART_MEMORY_BYTES} (64 KiB) and {MAX_CHART_MEMORY_BYTES} (1 GiB)"
                ),
            ));
        }
        Ok(ValidDiagnosticsConfig {
            enabled: self.enabled,
            listen: self.listen,
            token,
            stale_after: Duration::from_secs(self.stale_after_s),
            chart_window: Duration::from_secs(self.chart_window_s),
            chart_memory_bytes: self.chart_memory_bytes,
            log_lines: self.log_lines.clamp(10, 100_000),
        })
    }
}

/// Smallest `chart_memory_bytes`.
const MIN_CHART_MEMORY_BYTES: usize = 64 << 10;
/// Largest `chart_memory_bytes`.
const MAX_CHART_MEMORY_BYTES: usize = 1 << 30;

fn check_token(file: &Path, key: &str, token: &str) -> Result<Token, ConfigError> {
    if token.len() < MIN_TOKEN_LEN {
        return Err(ConfigError::new(
            file,
            key,
            format!("the token must be at least {MIN_TOKEN_LEN} characters"),
        ));
    }
    if token.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(ConfigError::new(
            file,
            key,
            "the token must not contain spaces or control characters",
        ));
    }
    Ok(Token::new(token))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(listen: &str, token: Option<&str>) -> DiagnosticsSection {
        DiagnosticsSection {
            listen: listen.parse().expect("test address"),
            token: token.map(str::to_string),
            ..DiagnosticsSection::default()
        }
    }

    #[test]
    fn default_is_loopback_without_token() {
        let v = DiagnosticsSection::default()
            .validate(Path::new("g.toml"))
            .expect("default is valid");
        assert!(v.listen.ip().is_loopback());
        assert_eq!(v.listen.port(), DEFAULT_PORT);
        assert!(v.token.is_none());
    }

    #[test]
    fn non_loopback_without_token_is_refused_naming_the_key() {
        let e = section("0.0.0.0:8080", None)
            .validate(Path::new("g.toml"))
            .expect_err("must refuse");
        assert_eq!(e.key, "diagnostics.token");
        assert!(e.problem.contains("not a loopback"), "{}", e.problem);
    }

    #[test]
    fn non_loopback_with_token_is_accepted() {
        let v = section("0.0.0.0:8080", Some("0123456789abcdef-long"))
            .validate(Path::new("g.toml"))
            .expect("valid");
        assert!(v.token.is_some());
    }

    #[test]
    fn short_token_is_refused() {
        let e = section("127.0.0.1:8080", Some("short"))
            .validate(Path::new("g.toml"))
            .expect_err("must refuse");
        assert_eq!(e.key, "diagnostics.token");
    }

    #[test]
    fn token_file_is_read_relative_to_the_config() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("tok"), "abcdefghijklmnopqrstuvwxyz\n").expect("write");
        let s = DiagnosticsSection {
            listen: "0.0.0.0:1".parse().expect("addr"),
            token_file: Some("tok".into()),
            ..DiagnosticsSection::default()
        };
        let v = s.validate(&dir.path().join("g.toml")).expect("valid");
        assert!(
            v.token
                .expect("token")
                .matches("abcdefghijklmnopqrstuvwxyz")
        );
    }

    #[test]
    fn the_section_as_written_never_prints_its_token() {
        let s = section("127.0.0.1:1", Some("super-secret-token-value"));
        let d = format!("{s:?}");
        assert!(
            !d.contains("super-secret") && d.contains("<redacted>"),
            "{d}"
        );
    }

    #[test]
    fn token_never_prints() {
        let t = Token::new("super-secret-token-value");
        assert!(!format!("{t:?} {t}").contains("super-secret"));
        assert!(t.matches("super-secret-token-value"));
        assert!(!t.matches("super-secret-token-valuE"));
        assert!(!t.matches("super-secret-token-value-and-more"));
        assert!(!t.matches(""));
    }
}
