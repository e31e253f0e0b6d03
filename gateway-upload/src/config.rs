//! `[upload]` section of the gateway config: where signed reports go and how
//! the gateway authenticates, and how hard it retries.
//!
//! ```toml
//! [upload]
//! url = "https://mrv.example.org/"   # base URL; reports go to <url>v1/reports
//! fallback_urls = ["https://mrv2.example.org/"]  # other receivers of the same backend
//! log_key = "mrv.example.org/log+1a2b3c4d+AQ..."  # the backend log's note verifier key
//! ca_file = "certs/backend-ca.pem"    # trust only this CA bundle (default: system roots)
//! token_file = "secrets/upload.token" # or token = "..." (bearer)
//! client_cert = "certs/gw.pem"        # mTLS, with client_key
//! client_key = "certs/gw.key"
//! timeout_seconds = 30              # request timeout for a small batch (the floor)
//! timeout_bytes_per_second = 262144  # plus 1 s per this many report bytes in it (0: fixed)
//! batch_size = 50
//! backoff_base_ms = 1000
//! backoff_max_ms = 300000
//! keep_delivered_days = 90
//! backlog_alarm_reports = 48          # alarm limits of the upload backlog
//! backlog_alarm_bytes = 268435456     # (0 switches one off; see upload::backlog)
//! backlog_alarm_minutes = 360
//! ```
//!
//! Invariants after [`UploadSection::validate`]: every URL is `https`
//! (plain `http` only with `allow_plain_http = true`, meant for a receiver
//! on the same host), no URL is given twice, `log_key` parses as a note
//! verifier key, files named exist and parse, the token is not empty,
//! `client_cert` and `client_key` come together, and the numbers are in
//! range. Relative paths are relative to the config file's directory.

use super::backlog::BacklogLimits;
use mrv_shared::config_error::ConfigError;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// `[upload]` as written in the config file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UploadSection {
    /// Upload at all. Default `true` when `url` is set.
    pub enabled: Option<bool>,
    /// Base URL of the MRV backend (`https://host[:port]/[prefix/]`).
    pub url: Option<String>,
    /// Further base URLs of the same backend (stateless receivers sharing
    /// one database), tried in order when the current one fails.
    pub fallback_urls: Vec<String>,
    /// The backend log's note verifier key (`<origin>+<key id>+<key>`, as
    /// `GET /v1/log/key` shows it; take it from the operator, out of band).
    /// With it every receipt's checkpoint signature is checked; without it
    /// receipts are still stored and their proofs checked, but a forged
    /// checkpoint would go unnoticed.
    pub log_key: Option<String>,
    /// Allow an `http://` URL (no TLS). Default `false`.
    pub allow_plain_http: bool,
    /// PEM bundle of the CA(s) the backend certificate must chain to; when
    /// set, only these are trusted. Default: the system's roots.
    pub ca_file: Option<PathBuf>,
    /// Bearer token for `Authorization: Bearer`.
    pub token: Option<String>,
    /// File holding the bearer token (trailing whitespace ignored); not
    /// with `token`.
    pub token_file: Option<PathBuf>,
    /// Client certificate chain (PEM) for mTLS; needs `client_key`.
    pub client_cert: Option<PathBuf>,
    /// Client private key (PEM, PKCS#8 / SEC1 / RSA) for mTLS.
    pub client_key: Option<PathBuf>,
    /// Whole-request timeout for a small batch, seconds (connect, send,
    /// answer): the floor of [`UploadConfig::request_timeout`]. Default 30.
    pub timeout_seconds: u64,
    /// The slowest throughput, in report bytes (uncompressed) per second,
    /// that a request may take before it times out: a request of `b` report
    /// bytes gets `timeout_seconds + b / timeout_bytes_per_second` seconds,
    /// so a large report is not cut off (and re-sent whole) by a receiver
    /// that is slow but working. 0: the timeout is `timeout_seconds` for
    /// every size. Default 262144 (256 KiB/s: 110 s for a 20 MB report).
    pub timeout_bytes_per_second: u64,
    /// Most reports per upload request when draining a backlog. Default 50.
    pub batch_size: usize,
    /// First retry delay ceiling, ms (full jitter: a random delay up to
    /// base * 2^attempt). Default 1000.
    pub backoff_base_ms: u64,
    /// Ceiling of the retry delay, ms. Default 300000 (5 min).
    pub backoff_max_ms: u64,
    /// Days to keep delivered reports on the gateway (audit) before pruning.
    /// Default 90.
    pub keep_delivered_days: u32,
    /// Alarm when this many reports wait for the backend's confirmation
    /// (0: off). Default 48.
    pub backlog_alarm_reports: u64,
    /// Alarm when the reports waiting take this many bytes (0: off).
    /// Default 268435456 (256 MiB).
    pub backlog_alarm_bytes: u64,
    /// Alarm when the oldest waiting report's period ended this many
    /// minutes ago (0: off). Default 360 (6 h).
    pub backlog_alarm_minutes: u64,
}

impl Default for UploadSection {
    fn default() -> Self {
        UploadSection {
            enabled: None,
            url: None,
            fallback_urls: Vec::new(),
            log_key: None,
            allow_plain_http: false,
            ca_file: None,
            token: None,
            token_file: None,
            client_cert: None,
            client_key: None,
            timeout_seconds: 30,
            timeout_bytes_per_second: DEFAULT_TIMEOUT_BYTES_PER_SECOND,
            batch_size: 50,
            backoff_base_ms: 1000,
            backoff_max_ms: 300_000,
            keep_delivered_days: 90,
            backlog_alarm_reports: BacklogLimits::default().reports,
            backlog_alarm_bytes: BacklogLimits::default().bytes,
            backlog_alarm_minutes: BacklogLimits::default().age_ms / 60_000,
        }
    }
}

/// Default of `timeout_bytes_per_second`: 256 KiB/s.
pub const DEFAULT_TIMEOUT_BYTES_PER_SECOND: u64 = 256 * 1024;

/// Validated upload settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadConfig {
    /// Base URL, ending in `/`.
    pub url: String,
    /// Further base URLs of the same backend, each ending in `/`.
    pub fallback_urls: Vec<String>,
    /// The backend log's verifier key (checks receipt signatures).
    pub log_key: Option<mrv_shared::tlog::note::NoteVerifier>,
    /// PEM bytes of the trusted CA bundle (`None`: system roots).
    pub ca_pem: Option<Vec<u8>>,
    /// Bearer token.
    pub token: Option<String>,
    /// Client certificate chain + key, PEM, concatenated (mTLS).
    pub identity_pem: Option<Vec<u8>>,
    /// Whole-request timeout of a small request (the floor).
    pub timeout: Duration,
    /// Report bytes per second a request may take beyond `timeout`
    /// (0: fixed timeout); see [`UploadConfig::request_timeout`].
    pub timeout_bytes_per_second: u64,
    /// Most reports per request.
    pub batch_size: usize,
    /// Backoff base, ms.
    pub backoff_base_ms: u64,
    /// Backoff ceiling, ms.
    pub backoff_max_ms: u64,
    /// How long delivered reports are kept.
    pub keep_delivered: Duration,
    /// Alarm limits of the upload backlog.
    pub backlog_alarm: BacklogLimits,
}

impl UploadConfig {
    /// Every base URL: `url`, then the fallbacks.
    pub fn urls(&self) -> Vec<String> {
        let mut v = vec![self.url.clone()];
        v.extend(self.fallback_urls.iter().cloned());
        v
    }

    /// The whole-request timeout of a request carrying `report_bytes`
    /// (uncompressed report bytes, what the receiver decompresses, hashes
    /// and verifies): `timeout` plus one second per
    /// `timeout_bytes_per_second` bytes, rounded up to the millisecond.
    pub fn request_timeout(&self, report_bytes: u64) -> Duration {
        if self.timeout_bytes_per_second == 0 {
            return self.timeout;
        }
        let extra_ms = u128::from(report_bytes) * 1000;
        let per = u128::from(self.timeout_bytes_per_second);
        let extra_ms = u64::try_from(extra_ms.div_ceil(per)).unwrap_or(u64::MAX);
        self.timeout.saturating_add(Duration::from_millis(extra_ms))
    }

    /// Settings for `url` with every other field at its default (tests, demo).
    pub fn for_url(url: &str) -> UploadConfig {
        let d = UploadSection::default();
        UploadConfig {
            url: with_slash(url),
            fallback_urls: Vec::new(),
            log_key: None,
            ca_pem: None,
            token: None,
            identity_pem: None,
            timeout: Duration::from_secs(d.timeout_seconds),
            timeout_bytes_per_second: d.timeout_bytes_per_second,
            batch_size: d.batch_size,
            backoff_base_ms: d.backoff_base_ms,
            backoff_max_ms: d.backoff_max_ms,
            keep_delivered: Duration::from_secs(u64::from(d.keep_delivered_days) * 86_400),
            backlog_alarm: BacklogLimits::default(),
        }
    }
}

fn with_slash(url: &str) -> String {
    if url.ends_with('/') {
        url.to_string()
    } else {
        format!("{url}/")
    }
}

impl UploadSection {
    /// Turns the section into [`UploadConfig`]; `Ok(None)` when upload is
    /// disabled (no `url`, or `enabled = false`). `file` names the config
    /// file in errors; `base` anchors relative paths.
    pub fn validate(&self, file: &Path, base: &Path) -> Result<Option<UploadConfig>, ConfigError> {
        let err = |key: &str, p: String| ConfigError::new(file, format!("upload.{key}"), p);
        if self.enabled == Some(false) {
            return Ok(None);
        }
        let Some(url) = &self.url else {
            if self.enabled == Some(true) {
                return Err(err("url", String::from("required when upload is enabled")));
            }
            return Ok(None);
        };
        let check_url = |key: &str, url: &str| -> Result<(), ConfigError> {
            let lower = url.to_ascii_lowercase();
            let rest = if let Some(r) = lower.strip_prefix("https://") {
                r
            } else if let Some(r) = lower.strip_prefix("http://") {
                if !self.allow_plain_http {
                    return Err(err(
                        key,
                        String::from(
                            "plain http is refused (reports would travel unencrypted); use https or set allow_plain_http = true",
                        ),
                    ));
                }
                r
            } else {
                return Err(err(key, format!("{url:?} is not an https:// URL")));
            };
            if rest.is_empty() || rest.starts_with('/') {
                return Err(err(key, format!("{url:?} has no host")));
            }
            Ok(())
        };
        check_url("url", url)?;
        let mut seen = vec![with_slash(url)];
        for u in &self.fallback_urls {
            check_url("fallback_urls", u)?;
            if seen.contains(&with_slash(u)) {
                return Err(err("fallback_urls", format!("{u:?} is given twice")));
            }
            seen.push(with_slash(u));
        }
        let log_key = match &self.log_key {
            Some(k) => Some(
                mrv_shared::tlog::note::NoteVerifier::parse(k.trim())
                    .map_err(|e| err("log_key", e.to_string()))?,
            ),
            None => None,
        };
        let read = |key: &str, p: &Path| -> Result<Vec<u8>, ConfigError> {
            let path = base.join(p);
            std::fs::read(&path)
                .map_err(|e| err(key, format!("cannot read {}: {e}", path.display())))
        };
        let ca_pem = match &self.ca_file {
            Some(p) => {
                let pem = read("ca_file", p)?;
                if reqwest::Certificate::from_pem_bundle(&pem).map_or(true, |c| c.is_empty()) {
                    return Err(err(
                        "ca_file",
                        String::from("no PEM certificate found in the file"),
                    ));
                }
                Some(pem)
            }
            None => None,
        };
        let token = match (&self.token, &self.token_file) {
            (Some(_), Some(_)) => {
                return Err(err(
                    "token_file",
                    String::from("give token or token_file, not both"),
                ));
            }
            (Some(t), None) => Some(t.trim().to_string()),
            (None, Some(p)) => {
                let t = read("token_file", p)?;
                Some(
                    String::from_utf8(t)
                        .map_err(|_| err("token_file", String::from("not UTF-8 text")))?
                        .trim()
                        .to_string(),
                )
            }
            (None, None) => None,
        };
        if let Some(t) = &token
            && (t.is_empty() || t.bytes().any(|b| !(0x21..0x7f).contains(&b)))
        {
            return Err(err(
                "token",
                String::from("must be non-empty printable ASCII without spaces"),
            ));
        }
        let identity_pem = match (&self.client_cert, &self.client_key) {
            (Some(c), Some(k)) => {
                let mut pem = read("client_cert", c)?;
                pem.push(b'\n');
                pem.extend(read("client_key", k)?);
                Some(pem)
            }
            (None, None) => None,
            (Some(_), None) => {
                return Err(err("client_key", String::from("required with client_cert")));
            }
            (None, Some(_)) => {
                return Err(err("client_cert", String::from("required with client_key")));
            }
        };
        if !(1..=3600).contains(&self.timeout_seconds) {
            return Err(err("timeout_seconds", String::from("must be 1..=3600")));
        }
        if !(1..=10_000).contains(&self.batch_size) {
            return Err(err("batch_size", String::from("must be 1..=10000")));
        }
        if self.backoff_base_ms == 0 || self.backoff_base_ms > self.backoff_max_ms {
            return Err(err(
                "backoff_base_ms",
                String::from("must be at least 1 and at most backoff_max_ms"),
            ));
        }
        if self.backoff_max_ms > 86_400_000 {
            return Err(err("backoff_max_ms", String::from("at most one day")));
        }
        // Ten years: beyond that a limit means "off"; say so with 0.
        if self.backlog_alarm_minutes > 10 * 366 * 1440 {
            return Err(err(
                "backlog_alarm_minutes",
                String::from("at most ten years (0 switches the age alarm off)"),
            ));
        }
        Ok(Some(UploadConfig {
            url: with_slash(url),
            fallback_urls: seen[1..].to_vec(),
            log_key,
            ca_pem,
            token,
            identity_pem,
            timeout: Duration::from_secs(self.timeout_seconds),
            timeout_bytes_per_second: self.timeout_bytes_per_second,
            batch_size: self.batch_size,
            backoff_base_ms: self.backoff_base_ms,
            backoff_max_ms: self.backoff_max_ms,
            keep_delivered: Duration::from_secs(u64::from(self.keep_delivered_days) * 86_400),
            backlog_alarm: BacklogLimits {
                reports: self.backlog_alarm_reports,
                bytes: self.backlog_alarm_bytes,
                age_ms: self.backlog_alarm_minutes * 60_000,
            },
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(url: &str) -> UploadSection {
        UploadSection {
            url: Some(url.to_string()),
            ..UploadSection::default()
        }
    }

    #[test]
    fn no_url_means_upload_is_off_unless_explicitly_enabled() {
        let f = Path::new("g.toml");
        assert_eq!(
            UploadSection::default().validate(f, Path::new(".")),
            Ok(None)
        );
        let s = UploadSection {
            enabled: Some(true),
            ..UploadSection::default()
        };
        let e = s.validate(f, Path::new(".")).expect_err("url missing");
        assert_eq!(e.key, "upload.url");
    }

    #[test]
    fn plain_http_is_refused_unless_allowed() {
        let f = Path::new("g.toml");
        let e = section("http://127.0.0.1:8080")
            .validate(f, Path::new("."))
            .expect_err("http refused");
        assert!(e.problem.contains("plain http"), "{}", e.problem);
        let mut s = section("http://127.0.0.1:8080");
        s.allow_plain_http = true;
        let c = s.validate(f, Path::new(".")).expect("ok").expect("enabled");
        assert_eq!(c.url, "http://127.0.0.1:8080/");
        assert!(section("ftp://x").validate(f, Path::new(".")).is_err());
        assert!(section("https://").validate(f, Path::new(".")).is_err());
    }

    #[test]
    fn fallback_urls_are_checked_like_the_url_and_the_log_key_must_parse() {
        let f = Path::new("g.toml");
        let mut s = section("https://a.example/");
        s.fallback_urls = vec![
            String::from("https://b.example"),
            String::from("https://c.example/"),
        ];
        let c = s.validate(f, Path::new(".")).expect("ok").expect("enabled");
        assert_eq!(
            c.urls(),
            vec![
                "https://a.example/",
                "https://b.example/",
                "https://c.example/"
            ]
        );
        s.fallback_urls = vec![String::from("http://b.example")];
        let e = s.validate(f, Path::new(".")).expect_err("plain http");
        assert_eq!(e.key, "upload.fallback_urls");
        s.fallback_urls = vec![String::from("https://a.example")];
        let e = s.validate(f, Path::new(".")).expect_err("twice");
        assert_eq!(e.key, "upload.fallback_urls");
        let mut s = section("https://a.example/");
        s.log_key = Some(String::from(
            "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        ));
        let c = s.validate(f, Path::new(".")).expect("ok").expect("enabled");
        assert_eq!(c.log_key.expect("parsed").name(), "PeterNeumann");
        s.log_key = Some(String::from(
            "PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        ));
        let e = s.validate(f, Path::new(".")).expect_err("bad key id");
        assert_eq!(e.key, "upload.log_key");
    }

    #[test]
    fn token_file_is_read_relative_to_the_config_and_trimmed() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("tok"), "s3cret\n").expect("write");
        let mut s = section("https://mrv.example.org");
        s.token_file = Some(PathBuf::from("tok"));
        let c = s
            .validate(Path::new("g.toml"), dir.path())
            .expect("ok")
            .expect("enabled");
        assert_eq!(c.token.as_deref(), Some("s3cret"));
        s.token = Some(String::from("x"));
        let e = s
            .validate(Path::new("g.toml"), dir.path())
            .expect_err("both");
        assert_eq!(e.key, "upload.token_file");
    }

    #[test]
    fn backlog_alarm_limits_have_defaults_and_zero_switches_one_off() {
        let f = Path::new("g.toml");
        let c = section("https://h")
            .validate(f, Path::new("."))
            .expect("ok")
            .expect("enabled");
        assert_eq!(
            c.backlog_alarm,
            BacklogLimits {
                reports: 48,
                bytes: 256 << 20,
                age_ms: 6 * 3_600_000
            }
        );
        let mut s = section("https://h");
        s.backlog_alarm_reports = 0;
        s.backlog_alarm_minutes = 90;
        let c = s.validate(f, Path::new(".")).expect("ok").expect("enabled");
        assert_eq!(
            (c.backlog_alarm.reports, c.backlog_alarm.age_ms),
            (0, 5_400_000)
        );
        s.backlog_alarm_minutes = u64::MAX;
        assert_eq!(
            s.validate(f, Path::new(".")).expect_err("too long").key,
            "upload.backlog_alarm_minutes"
        );
    }

    #[test]
    fn the_request_timeout_is_the_floor_plus_the_bytes_over_the_slowest_throughput() {
        let f = Path::new("g.toml");
        let c = section("https://h")
            .validate(f, Path::new("."))
            .expect("ok")
            .expect("enabled");
        assert_eq!(c.timeout_bytes_per_second, 262_144);
        assert_eq!(c.request_timeout(0), Duration::from_secs(30));
        // The soak's hourly report of 200 devices: 20 MB.
        assert_eq!(
            c.request_timeout(20_000_000),
            Duration::from_millis(30_000 + 76_294)
        );
        assert_eq!(
            c.request_timeout(262_144 * 10),
            Duration::from_secs(40),
            "exact"
        );
        assert_eq!(
            c.request_timeout(1),
            Duration::from_millis(30_001),
            "rounded up, never down"
        );
        let mut s = section("https://h");
        s.timeout_seconds = 5;
        s.timeout_bytes_per_second = 0;
        let c = s.validate(f, Path::new(".")).expect("ok").expect("enabled");
        assert_eq!(c.request_timeout(1 << 30), Duration::from_secs(5), "fixed");
    }

    #[test]
    fn bad_numbers_and_half_mtls_name_their_key() {
        let f = Path::new("g.toml");
        let mut s = section("https://h");
        s.batch_size = 0;
        assert_eq!(
            s.validate(f, Path::new(".")).expect_err("").key,
            "upload.batch_size"
        );
        let mut s = section("https://h");
        s.backoff_base_ms = 10;
        s.backoff_max_ms = 5;
        assert_eq!(
            s.validate(f, Path::new(".")).expect_err("").key,
            "upload.backoff_base_ms"
        );
        let mut s = section("https://h");
        s.client_cert = Some(PathBuf::from("c.pem"));
        assert_eq!(
            s.validate(f, Path::new(".")).expect_err("").key,
            "upload.client_key"
        );
        let mut s = section("https://h");
        s.ca_file = Some(PathBuf::from("/nonexistent/ca.pem"));
        assert_eq!(
            s.validate(f, Path::new(".")).expect_err("").key,
            "upload.ca_file"
        );
    }
}
