//! `status` and `devices`: the running gateway's state as readable tables
//! (or `--json`), read from its diagnostics API over HTTP.
//!
//! Both talk to the gateway's diagnostics listener. Where it is and the
//! token come from, in this order: `--url` / `--token` (or `MRV_DIAG_URL` /
//! `MRV_DIAG_TOKEN`); the `[diagnostics]` section of `--config` (or
//! `MRV_CONFIG`, default `/etc/mrv-gateway/gateway.toml` when it exists);
//! `http://127.0.0.1:8080` without a token. [`DiagClient`] is shared with
//! `diag bundle`.

use crate::diagnostics::api::{DeviceRow, StatusView};
use crate::diagnostics::config::DEFAULT_PORT;
use crate::diagnostics::page::{age, bytes, utc};
use anyhow::{Context, bail};
use serde::de::DeserializeOwned;
use std::path::{Path, PathBuf};

/// The config file `status`, `devices` and `diag bundle` read when no
/// `--config` is given (and it exists).
pub const DEFAULT_CONFIG: &str = "/etc/mrv-gateway/gateway.toml";

/// Where the gateway's API is and how to get in.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ApiArgs {
    /// Base URL of the gateway's diagnostics listener (default: from the
    /// config's `[diagnostics] listen`, else http://127.0.0.1:8080).
    #[arg(long, env = "MRV_DIAG_URL")]
    pub url: Option<String>,
    /// Access token (default: the config's `diagnostics.token` or `token_file`).
    #[arg(long, env = "MRV_DIAG_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Gateway config file to take the URL and token from (default
    /// /etc/mrv-gateway/gateway.toml when it exists).
    #[arg(short, long, env = "MRV_CONFIG")]
    pub config: Option<PathBuf>,
}

/// The URL and token to use, and where they came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiTarget {
    /// Base URL.
    pub url: String,
    /// Token.
    pub token: Option<String>,
    /// The config file read, if one was.
    pub from_config: Option<PathBuf>,
}

impl ApiArgs {
    /// Resolves flags, config file and defaults (see the module doc).
    pub fn resolve(&self) -> anyhow::Result<ApiTarget> {
        self.resolve_with_default(Path::new(DEFAULT_CONFIG))
    }

    /// [`ApiArgs::resolve`] with another default config path (tests).
    pub fn resolve_with_default(&self, default: &Path) -> anyhow::Result<ApiTarget> {
        let path = match &self.config {
            Some(p) => Some(p.clone()),
            None if self.url.is_none() || self.token.is_none() => {
                default.is_file().then(|| default.to_path_buf())
            }
            None => None,
        };
        let mut target = ApiTarget {
            url: format!("http://127.0.0.1:{DEFAULT_PORT}"),
            token: None,
            from_config: None,
        };
        if let Some(p) = path {
            let c = crate::config::load(&p).with_context(|| {
                format!(
                    "reading the diagnostics address and token from {} (give --url and --token to skip it)",
                    p.display()
                )
            })?;
            let d = &c.diagnostics;
            if !d.enabled {
                bail!(
                    "{}: the diagnostics page is disabled ([diagnostics] enabled = false), so there is no API to ask",
                    p.display()
                );
            }
            let mut addr = d.listen;
            if addr.ip().is_unspecified() {
                addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
            }
            target.url = format!("http://{addr}");
            target.token = d.token.as_ref().map(|t| t.expose().to_string());
            target.from_config = Some(p);
        }
        if let Some(u) = &self.url {
            target.url = u.clone();
        }
        if let Some(t) = &self.token {
            target.token = Some(t.clone());
        }
        Ok(target)
    }

    /// A client for the resolved target.
    pub fn client(&self) -> anyhow::Result<DiagClient> {
        let t = self.resolve()?;
        DiagClient::new(&t.url, t.token)
    }
}

/// Arguments of `status`.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// Gateway API.
    #[command(flatten)]
    pub api: ApiArgs,
    /// Print the API's JSON instead of tables.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `devices`.
#[derive(Debug, clap::Args)]
pub struct DevicesArgs {
    /// Gateway API.
    #[command(flatten)]
    pub api: ApiArgs,
    /// Print the API's JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// An HTTP client for the diagnostics API.
#[derive(Debug, Clone)]
pub struct DiagClient {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl DiagClient {
    /// A client for `base` (e.g. `http://127.0.0.1:8080`).
    pub fn new(base: &str, token: Option<String>) -> anyhow::Result<Self> {
        // One TLS stack everywhere (only used for https:// URLs).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(10))
            .build()
            .context("cannot build the HTTP client")?;
        Ok(Self {
            base: base.trim_end_matches('/').to_string(),
            token,
            http,
        })
    }

    async fn get(&self, path: &str) -> anyhow::Result<reqwest::Response> {
        let url = format!("{}{path}", self.base);
        let mut req = self.http.get(&url);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.with_context(|| {
            format!("cannot reach the gateway at {url} (is it running? see --url or --config)")
        })?;
        match resp.status().as_u16() {
            200..=299 => Ok(resp),
            401 => bail!(
                "{url}: 401 unauthorized: missing or wrong token (see --token, or --config for the gateway's config file)"
            ),
            s => bail!("{url}: HTTP {s}"),
        }
    }

    /// GETs `path` and parses its JSON.
    pub async fn json<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let r = self.get(path).await?;
        r.json()
            .await
            .with_context(|| format!("{path}: unexpected answer"))
    }

    /// GETs `path` as text.
    pub async fn text(&self, path: &str) -> anyhow::Result<String> {
        Ok(self.get(path).await?.text().await?)
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// Lays out rows as a left-aligned text table with a header rule.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(c.chars().count());
            }
        }
    }
    let line = |cells: Vec<String>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            let pad = widths[i].saturating_sub(c.chars().count());
            s.push_str(c);
            if i + 1 < cells.len() {
                s.push_str(&" ".repeat(pad + 2));
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(header.iter().map(|h| h.to_string()).collect());
    out.push_str(&line(widths.iter().map(|w| "-".repeat(*w)).collect()));
    for r in rows {
        out.push_str(&line(r.clone()));
    }
    out
}

/// `s` cut to `max` characters, with `...` when cut.
pub fn cut(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut o: String = s.chars().take(max.saturating_sub(3)).collect();
    o.push_str("...");
    o
}

fn when(ms: Option<u64>, now_ms: u64) -> String {
    ms.map_or_else(
        || "-".into(),
        |t| {
            if t > now_ms {
                format!("{} UTC (in {})", utc(t), age((t - now_ms) / 1000))
            } else {
                format!("{} UTC ({} ago)", utc(t), age((now_ms - t) / 1000))
            }
        },
    )
}

/// A value as a person reads it (the display form; older gateways that send
/// none get the base-unit value).
pub fn value_text(v: &crate::diagnostics::api::ChannelValue) -> String {
    if !v.available {
        "unavailable".into()
    } else if v.display.is_empty() {
        format!("{} {}", v.value, v.unit)
    } else {
        v.display.clone()
    }
}

/// The device table.
pub fn render_devices(rows: &[DeviceRow]) -> String {
    let body: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.id.clone(),
                r.kind.clone(),
                r.status.to_uppercase(),
                r.age_s
                    .map_or_else(|| "never".into(), |a| format!("{} ago", age(a))),
                cut(
                    &r.values
                        .iter()
                        .map(|v| format!("{}={}", v.channel, value_text(v)))
                        .collect::<Vec<_>>()
                        .join(" "),
                    72,
                ),
                if r.quality.is_empty() {
                    "good".into()
                } else {
                    r.quality.join("|")
                },
                r.signature.clone(),
                r.acked_seq.to_string(),
                r.rejects.to_string(),
                r.status_reason.clone(),
            ]
        })
        .collect();
    table(
        &[
            "DEVICE",
            "KIND",
            "STATUS",
            "LAST",
            "VALUES",
            "QUALITY",
            "SIGNATURE",
            "ACKED",
            "REJECTS",
            "WHY",
        ],
        &body,
    )
}

/// The status report: site, devices summary, buffer, ingest, uploads, Modbus.
pub fn render_status(s: &StatusView, rows: &[DeviceRow]) -> String {
    let b = &s.buffer;
    let i = &s.ingest;
    let u = &s.uploads;
    let d = &s.devices;
    let mut out = format!(
        "site      {} ({}) gateway {} v{}, up {}\n\
         devices   {} total: {} ok, {} degraded, {} stale, {} failing, {} silent\n\
         buffer    depth {} frames ({} readings unreported), {} of {} ({:.1} %), oldest unreported {}{}\n\
         ingest    {} messages, {} frames / {} readings stored, {} duplicates, {} rejected, {} refused (full)\n",
        s.site.id,
        s.site.name,
        s.gateway,
        s.version,
        age(s.uptime_s),
        d.total,
        d.ok,
        d.degraded,
        d.stale,
        d.failing,
        d.silent,
        b.depth_frames,
        b.unreported_readings,
        bytes(b.bytes),
        bytes(b.max_bytes),
        b.fill_percent,
        b.oldest_unreported_age_s
            .map_or_else(|| "-".into(), |a| format!("{} ago", age(a))),
        b.alarm
            .as_deref()
            .map(|a| format!("\n          ALARM: {a}"))
            .unwrap_or_default(),
        i.messages,
        i.frames_stored,
        i.readings_stored,
        i.duplicates,
        i.rejects_total,
        i.refused_buffer_full,
    );
    if !s.health.items.is_empty() {
        let parts: Vec<String> = s
            .health
            .items
            .iter()
            .map(|h| format!("{} {}", h.name, h.status.to_uppercase()))
            .collect();
        let mut line = format!(
            "health    {}: {}\n",
            s.health.overall.to_uppercase(),
            parts.join(", ")
        );
        for h in s
            .health
            .items
            .iter()
            .filter(|h| h.status == "warn" || h.status == "fail")
        {
            line.push_str(&format!("          {}: {}\n", h.name, h.detail));
        }
        out = line + &out;
    }
    if !i.rejects.is_empty() {
        let r: Vec<String> = i.rejects.iter().map(|(k, v)| format!("{k}={v}")).collect();
        out.push_str(&format!("          rejects: {}\n", r.join(" ")));
    }
    if let Some(k) = &s.disk {
        out.push_str(&format!(
            "disk      {} free of {} ({}), level {}{}\n",
            k.free_bytes.map_or_else(|| "?".into(), bytes),
            k.total_bytes.map_or_else(|| "?".into(), bytes),
            k.path,
            k.level,
            k.alarm
                .as_deref()
                .or(k.error.as_deref())
                .map(|a| format!("\n          ALARM: {a}"))
                .unwrap_or_default(),
        ));
    }
    if i.write_failures > 0 {
        out.push_str(&format!(
            "          buffer writes failed {} times, reopened {} times, {} frames refused meanwhile\n",
            i.write_failures, i.buffer_reopens, i.refused_unavailable
        ));
    }
    if let Some(a) = &u.report_alarm {
        out.push_str(&format!("          ALARM: {a}\n"));
    }
    if u.reports_configured {
        out.push_str(&format!(
            "reports   newest #{}, backlog {}, delivered up to #{}\n",
            u.head_seq.map_or_else(|| "-".into(), |x| x.to_string()),
            u.backlog.map_or_else(|| "-".into(), |x| x.to_string()),
            u.delivered_upto
                .map_or_else(|| "-".into(), |x| x.to_string()),
        ));
    } else {
        out.push_str("reports   not configured\n");
    }
    match &u.upload {
        Some(serde_json::Value::Object(m)) => {
            let ms = |k: &str| m.get(k).and_then(serde_json::Value::as_u64);
            out.push_str(&format!(
                "upload    to {}: last success {}, failures in a row {}, next retry {}\n",
                m.get("url").and_then(|v| v.as_str()).unwrap_or("?"),
                when(ms("last_success_ms"), s.now_ms),
                ms("consecutive_failures").unwrap_or(0),
                when(ms("next_retry_ms"), s.now_ms),
            ));
            if let Some(e) = m.get("last_error").and_then(|v| v.as_str()) {
                out.push_str(&format!("          last error: {e}\n"));
            }
            if let Some(r) = m.get("rejected").filter(|r| !r.is_null()) {
                out.push_str(&format!(
                    "          ALARM: the backend refused a report: {r}\n"
                ));
            }
        }
        Some(v) => out.push_str(&format!("upload    {v}\n")),
        None => out.push_str("upload    not configured\n"),
    }
    match &s.modbus {
        None => out.push_str("modbus    not configured\n"),
        Some(m) => {
            for (dev, st) in m {
                let state = st.state.as_deref().unwrap_or("not polled yet");
                let since = st
                    .state_since_ms
                    .map(|t| format!(" for {}", age(s.now_ms.saturating_sub(t) / 1000)))
                    .unwrap_or_default();
                out.push_str(&format!(
                    "modbus    {dev}: {}{since}, {}/{} values, {} polls ({} degraded, {} down)\n",
                    state.to_uppercase(),
                    st.values_good,
                    st.values_total,
                    st.polls,
                    st.polls_degraded,
                    st.polls_down,
                ));
                if !st.unavailable.is_empty() {
                    out.push_str(&format!(
                        "          unavailable: {}\n",
                        st.unavailable.join(", ")
                    ));
                }
                if let Some(p) = &st.problem {
                    out.push_str(&format!("          problem: {p}\n"));
                } else if let (Some(e), Some(t)) = (&st.last_error, st.last_error_ms) {
                    out.push_str(&format!(
                        "          last error {} ago: {e}\n",
                        age(s.now_ms.saturating_sub(t) / 1000)
                    ));
                }
            }
        }
    }
    out.push('\n');
    out.push_str(&render_devices(rows));
    out
}

/// Runs `status`.
pub fn run(args: StatusArgs) -> anyhow::Result<()> {
    let c = args.api.client()?;
    runtime()?.block_on(async {
        if args.json {
            let v: serde_json::Value = c.json("/api/status").await?;
            println!("{}", serde_json::to_string_pretty(&v)?);
        } else {
            let s: StatusView = c.json("/api/status").await?;
            let rows: Vec<DeviceRow> = c.json("/api/devices").await?;
            print!("{}", render_status(&s, &rows));
        }
        anyhow::Ok(())
    })
}

/// Runs `devices`.
pub fn run_devices(args: DevicesArgs) -> anyhow::Result<()> {
    let c = args.api.client()?;
    runtime()?.block_on(async {
        if args.json {
            let v: serde_json::Value = c.json("/api/devices").await?;
            println!("{}", serde_json::to_string_pretty(&v)?);
        } else {
            let rows: Vec<DeviceRow> = c.json("/api/devices").await?;
            print!("{}", render_devices(&rows));
        }
        anyhow::Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_url_and_token_come_from_flags_then_the_config_then_defaults() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = dir.path().join("gateway.toml");
        std::fs::write(
            &cfg,
            "[site]\nid = \"s\"\n[gateway]\nid = \"g\"\ndata_dir = \"d\"\n\
             [diagnostics]\nlisten = \"0.0.0.0:9090\"\ntoken = \"0123456789abcdef-token\"\n",
        )
        .expect("write");
        let missing = dir.path().join("none.toml");
        let a = ApiArgs::default();
        let t = a.resolve_with_default(&missing).expect("defaults");
        assert_eq!(t.url, "http://127.0.0.1:8080");
        assert_eq!(t.token, None);
        let t = a.resolve_with_default(&cfg).expect("default config");
        assert_eq!(t.url, "http://127.0.0.1:9090", "unspecified -> loopback");
        assert_eq!(t.token.as_deref(), Some("0123456789abcdef-token"));
        let a = ApiArgs {
            url: Some("http://10.0.0.1:1".into()),
            ..ApiArgs::default()
        };
        let t = a.resolve_with_default(&cfg).expect("flags win");
        assert_eq!(t.url, "http://10.0.0.1:1");
        assert_eq!(t.token.as_deref(), Some("0123456789abcdef-token"));
        let a = ApiArgs {
            config: Some(missing.clone()),
            ..ApiArgs::default()
        };
        let e = a
            .resolve_with_default(&cfg)
            .expect_err("a named config must exist");
        assert!(format!("{e:#}").contains("none.toml"), "{e:#}");
    }

    #[test]
    fn long_cells_are_cut() {
        assert_eq!(cut("abcdef", 5), "ab...");
        assert_eq!(cut("abc", 5), "abc");
    }

    #[test]
    fn table_pads_columns_to_the_widest_cell() {
        let t = table(
            &["A", "BB"],
            &[vec!["xxx".into(), "y".into()], vec!["z".into(), "".into()]],
        );
        assert_eq!(t, "A    BB\n---  --\nxxx  y\nz\n");
    }
}
