//! # Time synchronisation state: what the clock daemon says
//!
//! A report's header states the gateway clock's `source` and its
//! `last_sync_ms` (docs/REPORT-FORMAT.md §4.2). The gateway does not set
//! the clock itself; the host's daemon does, and this module reads what
//! that daemon says, every [`CHECK_EVERY`]:
//!
//! - **chrony**: `chronyc -c -n tracking` (CSV, no DNS lookups; `-h
//!   <socket>` when `[report] chrony_socket` is set). Its reference time is
//!   the last measurement the clock was corrected from: `last_sync_ms`.
//!   `Leap status` `Not synchronised` means no source is selected.
//! - **systemd-timesyncd**: `timedatectl show` (`NTPSynchronized=yes|no`,
//!   the kernel's view) and the mtime of `/run/systemd/timesync/synchronized`,
//!   which timesyncd touches at every successful synchronisation
//!   (systemd-timesyncd(8)): `last_sync_ms`.
//!
//! `[report] time_sync` picks one (`chrony`, `timesyncd`), `auto` (chrony if
//! `chronyc` answers, else timesyncd if `timedatectl` does), or `off`.
//! The parsers are pure functions of the tools' output ([`parse_chronyc_tracking`],
//! [`parse_timedatectl_show`]); the task [`run_time_sync_watch`] runs the
//! tools (with a timeout) and publishes the latest [`SyncState`] in a
//! [`TimeSyncStatus`]; a failed read keeps the previous state and is shown.
//!
//! Invariant: the report header's clock is filled from the latest state
//! read before the report is built: `last_sync_ms` from the daemon (never
//! from the gateway's own clock), and `source` = `unsynced` whenever the
//! daemon says the clock is not synchronised (else the configured
//! `clock_source`). Without a daemon (or `off`) both stay as configured:
//! `last_sync_ms` null.

use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;

/// How often the daemon is asked.
pub const CHECK_EVERY: Duration = Duration::from_secs(30);
/// How long one query of a tool may take.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(5);
/// The file systemd-timesyncd touches at each successful synchronisation.
pub const TIMESYNCD_SYNCHRONIZED: &str = "/run/systemd/timesync/synchronized";

/// Which daemon to read (`[report] time_sync`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeSyncMode {
    /// chrony if `chronyc` answers, else timesyncd if `timedatectl` does.
    #[default]
    Auto,
    /// chrony only.
    Chrony,
    /// systemd-timesyncd only.
    Timesyncd,
    /// Read nothing: `last_sync_ms` stays null.
    Off,
}

/// The daemon a state came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Daemon {
    /// chronyd.
    Chrony,
    /// systemd-timesyncd.
    Timesyncd,
}

/// What the daemon says about the clock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SyncState {
    /// Who said it.
    pub daemon: Daemon,
    /// The clock is synchronised to a source.
    pub synchronized: bool,
    /// When it was last corrected from a source, Unix ms (`None`: never).
    pub last_sync_ms: Option<u64>,
    /// The source (chrony: reference name or address; `None` if unknown).
    pub reference: Option<String>,
    /// The source's stratum + 1 (chrony), if known.
    pub stratum: Option<u8>,
    /// chrony's estimate of the system clock's offset from true time, ns
    /// (positive: the clock is fast).
    pub offset_ns: Option<i64>,
}

/// Why the daemon's state could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimeSyncError {
    /// The tool could not be run or timed out.
    #[error("{tool}: {why}")]
    Tool {
        /// The command.
        tool: &'static str,
        /// What went wrong (not found, exit status and stderr, timeout).
        why: String,
    },
    /// The tool's output is not what its documented format says.
    #[error("{tool} output, {field}: {why}")]
    Format {
        /// The command.
        tool: &'static str,
        /// Which field.
        field: &'static str,
        /// What is wrong, with the text.
        why: String,
    },
}

const CHRONYC: &str = "chronyc -c tracking";
const TIMEDATECTL: &str = "timedatectl show";

fn bad(tool: &'static str, field: &'static str, why: String) -> TimeSyncError {
    TimeSyncError::Format { tool, field, why }
}

/// `seconds.fraction` (up to 9 fraction digits) as Unix ms, exactly.
fn seconds_to_ms(text: &str) -> Option<u64> {
    let (s, frac) = text.split_once('.').unwrap_or((text, ""));
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if frac.len() > 9 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let ms_digits = format!("{frac:0<3}");
    let ms: u64 = ms_digits[..3].parse().ok()?;
    s.parse::<u64>().ok()?.checked_mul(1000)?.checked_add(ms)
}

/// Decimal seconds (sign allowed) as ns, exactly (up to 9 fraction digits).
fn seconds_to_ns(text: &str) -> Option<i64> {
    let (neg, t) = match text.strip_prefix('-') {
        Some(t) => (true, t),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let (s, frac) = t.split_once('.').unwrap_or((t, ""));
    if s.is_empty() || frac.len() > 9 || !s.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let ns = s
        .parse::<i64>()
        .ok()?
        .checked_mul(1_000_000_000)?
        .checked_add(format!("{frac:0<9}").parse::<i64>().ok()?)?;
    Some(if neg { -ns } else { ns })
}

/// Parses `chronyc -c tracking` (one CSV line of 14 fields: reference ID,
/// reference name, stratum, reference time, system time offset, last
/// offset, RMS offset, frequency, residual frequency, skew, root delay,
/// root dispersion, update interval, leap status). The CSV system time is
/// negative when the clock is fast (chronyc's own text says "0.000001403
/// seconds fast of NTP time" for the captured `-0.000001403` below).
pub fn parse_chronyc_tracking(text: &str) -> Result<SyncState, TimeSyncError> {
    let line = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    let f: Vec<&str> = line.trim_end().split(',').collect();
    if f.len() != 14 {
        return Err(bad(
            CHRONYC,
            "fields",
            format!(
                "expected 14 comma-separated fields, got {}: {line:?}",
                f.len()
            ),
        ));
    }
    let stratum: u8 = f[2]
        .parse()
        .map_err(|_| bad(CHRONYC, "stratum", format!("{:?} is not a number", f[2])))?;
    let ref_ms = seconds_to_ms(f[3]).ok_or_else(|| {
        bad(
            CHRONYC,
            "reference time",
            format!("{:?} is not seconds", f[3]),
        )
    })?;
    let offset_ns = seconds_to_ns(f[4])
        .ok_or_else(|| bad(CHRONYC, "system time", format!("{:?} is not seconds", f[4])))?;
    let synchronized = match f[13] {
        "Normal" | "Insert second" | "Delete second" => true,
        "Not synchronised" => false,
        other => {
            return Err(bad(
                CHRONYC,
                "leap status",
                format!("unknown value {other:?}"),
            ));
        }
    };
    Ok(SyncState {
        daemon: Daemon::Chrony,
        synchronized,
        last_sync_ms: (ref_ms > 0).then_some(ref_ms),
        reference: (!f[1].is_empty()).then(|| f[1].to_string()),
        stratum: (stratum > 0).then_some(stratum),
        offset_ns: synchronized.then_some(-offset_ns),
    })
}

/// Parses `timedatectl show` (`Key=value` lines) for `NTPSynchronized`.
pub fn parse_timedatectl_show(text: &str) -> Result<bool, TimeSyncError> {
    let value = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("NTPSynchronized="))
        .ok_or_else(|| {
            bad(
                TIMEDATECTL,
                "NTPSynchronized",
                String::from("no NTPSynchronized= line"),
            )
        })?;
    match value {
        "yes" => Ok(true),
        "no" => Ok(false),
        other => Err(bad(
            TIMEDATECTL,
            "NTPSynchronized",
            format!("{other:?} is neither yes nor no"),
        )),
    }
}

/// The timesyncd state from `timedatectl show` and the mtime of
/// [`TIMESYNCD_SYNCHRONIZED`] (Unix ms, `None` if the file is absent).
pub fn timesyncd_state(
    show: &str,
    synchronized_mtime_ms: Option<u64>,
) -> Result<SyncState, TimeSyncError> {
    Ok(SyncState {
        daemon: Daemon::Timesyncd,
        synchronized: parse_timedatectl_show(show)?,
        last_sync_ms: synchronized_mtime_ms,
        reference: None,
        stratum: None,
        offset_ns: None,
    })
}

/// The header clock for a report: `(source, last_sync_ms)` from the
/// configured source and the latest state (see the module invariant).
pub fn header_clock(configured_source: &str, state: Option<&SyncState>) -> (String, Option<u64>) {
    match state {
        Some(s) if !s.synchronized => (String::from("unsynced"), s.last_sync_ms),
        Some(s) => (configured_source.to_string(), s.last_sync_ms),
        None => (configured_source.to_string(), None),
    }
}

/// Where to read from (validated `[report]` settings).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimeSyncConfig {
    /// Which daemon.
    pub mode: TimeSyncMode,
    /// chronyd's command socket (`chronyc -h`); `None`: chronyc's default.
    pub chrony_socket: Option<PathBuf>,
}

async fn run_tool(
    tool: &'static str,
    program: &str,
    args: &[&std::ffi::OsStr],
) -> Result<String, TimeSyncError> {
    let err = |why: String| TimeSyncError::Tool { tool, why };
    let child = tokio::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(QUERY_TIMEOUT, child)
        .await
        .map_err(|_| err(format!("no answer within {} s", QUERY_TIMEOUT.as_secs())))?
        .map_err(|e| err(format!("cannot run {program}: {e}")))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(err(format!(
            "{}: {}",
            out.status,
            format!("{} {}", stdout.trim(), stderr.trim()).trim()
        )));
    }
    Ok(stdout)
}

/// Asks chronyd (`chronyc -c -n tracking`, through `socket` if given).
pub async fn query_chrony(socket: Option<&Path>) -> Result<SyncState, TimeSyncError> {
    let mut args: Vec<&std::ffi::OsStr> = Vec::new();
    if let Some(s) = socket {
        args.push(std::ffi::OsStr::new("-h"));
        args.push(s.as_os_str());
    }
    for a in ["-c", "-n", "tracking"] {
        args.push(std::ffi::OsStr::new(a));
    }
    parse_chronyc_tracking(&run_tool(CHRONYC, "chronyc", &args).await?)
}

/// Asks systemd-timesyncd's side: `timedatectl show` and the mtime of
/// [`TIMESYNCD_SYNCHRONIZED`].
pub async fn query_timesyncd() -> Result<SyncState, TimeSyncError> {
    let show = run_tool(TIMEDATECTL, "timedatectl", &[std::ffi::OsStr::new("show")]).await?;
    let mtime = std::fs::metadata(TIMESYNCD_SYNCHRONIZED)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_millis() as u64);
    timesyncd_state(&show, mtime)
}

/// One reading according to `cfg` (`Ok(None)`: `off`).
pub async fn query(cfg: &TimeSyncConfig) -> Result<Option<SyncState>, TimeSyncError> {
    match cfg.mode {
        TimeSyncMode::Off => Ok(None),
        TimeSyncMode::Chrony => query_chrony(cfg.chrony_socket.as_deref()).await.map(Some),
        TimeSyncMode::Timesyncd => query_timesyncd().await.map(Some),
        TimeSyncMode::Auto => match query_chrony(cfg.chrony_socket.as_deref()).await {
            Ok(s) => Ok(Some(s)),
            Err(chrony) => match query_timesyncd().await {
                Ok(s) => Ok(Some(s)),
                Err(timesyncd) => Err(TimeSyncError::Tool {
                    tool: "time sync",
                    why: format!("no clock daemon answers ({chrony}; {timesyncd})"),
                }),
            },
        },
    }
}

/// The latest reading, shared by the watch task, the report builder and
/// diagnostics. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct TimeSyncStatus(Arc<Mutex<TimeSyncReport>>);

/// What [`TimeSyncStatus`] holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TimeSyncReport {
    /// The latest state read (kept when a later read fails).
    pub state: Option<SyncState>,
    /// Why the latest read failed, if it did.
    pub error: Option<String>,
    /// When the daemon was last asked (Unix ms, system clock).
    pub checked_ms: Option<u64>,
}

impl TimeSyncStatus {
    /// The latest reading.
    pub fn get(&self) -> TimeSyncReport {
        self.0.lock().expect("time sync status lock").clone()
    }

    /// The latest state, if any.
    pub fn state(&self) -> Option<SyncState> {
        self.get().state
    }

    fn set(&self, r: Result<Option<SyncState>, TimeSyncError>) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let mut g = self.0.lock().expect("time sync status lock");
        g.checked_ms = Some(now);
        match r {
            Ok(s) => {
                g.state = s;
                g.error = None;
            }
            Err(e) => g.error = Some(e.to_string()),
        }
    }

    /// Reads once now (the runtime calls it before the first report).
    pub async fn refresh(&self, cfg: &TimeSyncConfig) {
        self.set(query(cfg).await);
    }
}

/// Reads the daemon every [`CHECK_EVERY`] until `shutdown`, logging
/// changes of "synchronised" and of the error once each.
pub async fn run_time_sync_watch(
    cfg: TimeSyncConfig,
    status: TimeSyncStatus,
    mut shutdown: watch::Receiver<bool>,
) {
    if cfg.mode == TimeSyncMode::Off {
        return;
    }
    let mut last: Option<(Option<bool>, Option<String>)> = None;
    loop {
        status.refresh(&cfg).await;
        let r = status.get();
        let now = (r.state.as_ref().map(|s| s.synchronized), r.error.clone());
        if last.as_ref() != Some(&now) {
            match (&r.state, &r.error) {
                (_, Some(e)) => {
                    tracing::warn!(error = %e, "cannot read the clock daemon's synchronisation state; reports keep the last one known")
                }
                (Some(s), None) if s.synchronized => {
                    tracing::info!(daemon = ?s.daemon, reference = ?s.reference, "the clock is synchronised")
                }
                (Some(s), None) => {
                    tracing::warn!(daemon = ?s.daemon, "the clock daemon says the clock is NOT synchronised; reports say source \"unsynced\"")
                }
                (None, None) => {}
            }
            last = Some(now);
        }
        tokio::select! {
            _ = tokio::time::sleep(CHECK_EVERY) => {}
            r = shutdown.changed() => if r.is_err() || *shutdown.borrow() { return },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Captured from chrony 4.3 (Debian 12), `chronyc -c tracking`, a client
    // chronyd (-x) synchronised to a second chronyd on 127.0.0.1.
    const CHRONY_SYNCED: &str = "7F000001,127.0.0.1,9,1796177426.801233328,-0.000001403,0.000000011,0.000000339,-0.137,0.006,1.039,0.000008493,0.000001168,0.1,Normal\n";
    // Same chronyd version, its only server not answering.
    const CHRONY_UNSYNCED: &str = "00000000,,0,0.000000000,0.000000000,0.000000000,0.000000000,0.000,0.000,0.000,1.000000000,1.000000000,0.0,Not synchronised\n";

    #[test]
    fn a_synchronised_chrony_gives_its_reference_time_as_the_last_sync() {
        let s = parse_chronyc_tracking(CHRONY_SYNCED).expect("parses");
        assert_eq!(
            s,
            SyncState {
                daemon: Daemon::Chrony,
                synchronized: true,
                last_sync_ms: Some(1_796_177_426_801),
                reference: Some(String::from("127.0.0.1")),
                stratum: Some(9),
                offset_ns: Some(1_403),
            }
        );
        assert_eq!(
            header_clock("ntp", Some(&s)),
            (String::from("ntp"), Some(1_796_177_426_801))
        );
    }

    #[test]
    fn an_unsynchronised_chrony_has_no_last_sync_and_makes_the_source_unsynced() {
        let s = parse_chronyc_tracking(CHRONY_UNSYNCED).expect("parses");
        assert!(!s.synchronized);
        assert_eq!(
            (s.last_sync_ms, s.reference.as_deref(), s.stratum),
            (None, None, None)
        );
        assert_eq!(
            header_clock("ntp", Some(&s)),
            (String::from("unsynced"), None)
        );
        assert_eq!(header_clock("gps", None), (String::from("gps"), None));
    }

    #[test]
    fn leap_seconds_pending_are_still_synchronised() {
        let t = CHRONY_SYNCED.replace("Normal", "Insert second");
        assert!(parse_chronyc_tracking(&t).expect("parses").synchronized);
    }

    #[test]
    fn malformed_chrony_output_names_the_field() {
        let cases = [
            ("", "fields"),
            ("506 Cannot talk to daemon", "fields"),
            (&*CHRONY_SYNCED.replace(",9,", ",nine,"), "stratum"),
            (
                &*CHRONY_SYNCED.replace("1796177426.801233328", "yesterday"),
                "reference time",
            ),
            (
                &*CHRONY_SYNCED.replace("1796177426.801233328", "1.1234567891"),
                "reference time",
            ),
            (&*CHRONY_SYNCED.replace("-0.000001403", "x"), "system time"),
            (&*CHRONY_SYNCED.replace("Normal", "Unknown"), "leap status"),
        ];
        for (text, field) in cases {
            match parse_chronyc_tracking(text) {
                Err(TimeSyncError::Format { field: f, .. }) => assert_eq!(f, field, "{text:?}"),
                other => panic!("{text:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn seconds_are_converted_exactly() {
        assert_eq!(
            seconds_to_ms("1796177426.801233328"),
            Some(1_796_177_426_801)
        );
        assert_eq!(seconds_to_ms("5"), Some(5_000));
        assert_eq!(seconds_to_ms("5.1"), Some(5_100));
        assert_eq!(seconds_to_ms("-5.1"), None);
        assert_eq!(seconds_to_ns("-0.000001403"), Some(-1_403));
        assert_eq!(seconds_to_ns("+1.5"), Some(1_500_000_000));
        assert_eq!(seconds_to_ns("1e3"), None);
    }

    // Shaped like `timedatectl show` (systemd's `Key=value` properties of
    // timedated; not captured here: this machine runs no systemd).
    const TIMEDATECTL_SHOW: &str = "Timezone=Etc/UTC\nLocalRTC=no\nCanNTP=yes\nNTP=yes\nNTPSynchronized=yes\nTimeUSec=Wed 2026-12-02 02:10:26 UTC\nRTCTimeUSec=Wed 2026-12-02 02:10:26 UTC\n";

    #[test]
    fn timesyncd_takes_the_kernel_view_and_the_synchronized_files_mtime() {
        let s = timesyncd_state(TIMEDATECTL_SHOW, Some(1_796_177_400_000)).expect("parses");
        assert!(s.synchronized);
        assert_eq!(s.last_sync_ms, Some(1_796_177_400_000));
        let s = timesyncd_state(
            &TIMEDATECTL_SHOW.replace("NTPSynchronized=yes", "NTPSynchronized=no"),
            None,
        )
        .expect("parses");
        assert_eq!((s.synchronized, s.last_sync_ms), (false, None));
        assert!(matches!(
            parse_timedatectl_show("Timezone=UTC\n"),
            Err(TimeSyncError::Format {
                field: "NTPSynchronized",
                ..
            })
        ));
        assert!(parse_timedatectl_show("NTPSynchronized=maybe").is_err());
    }
}
