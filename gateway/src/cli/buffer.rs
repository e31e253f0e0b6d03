//! `buffer inspect`, `buffer verify` and `buffer dump`: look inside a
//! gateway's durable buffer from the command line (`dump` prints the stored
//! readings themselves, in display units beside the exact values).
//!
//! All are read-only: they never write to the buffer directory. sled 0.34
//! has no read-only mode (opening rewrites a snapshot, may rewrite `conf`
//! and zeroes a torn log tail), so they copy the buffer's files into a
//! private temporary directory (`--scratch`, default the system temp dir;
//! the free space there is checked first) and open the copy. While copying
//! they hold sled's own lock, so they need the gateway to be stopped (a
//! running gateway shows the same figures on its diagnostics page) and a
//! gateway cannot start in the middle of a copy. What a gateway start would
//! repair (see `buffer::sled_files`) is reported, and applied only to the
//! copy. `--data-dir` may point at the gateway data dir (the buffer is
//! `<data_dir>/buffer`) or at the buffer dir itself; a directory that holds
//! no buffer is an error, never created.
//!
//! Both stream: one batch in memory at a time. Progress goes to stderr, as a
//! bar when stderr is a terminal, as plain lines every 10 % with
//! `--progress` when it is not. Output goes to stdout, as text or (`--json`)
//! one JSON document. `verify` exits with status 1 when it finds a problem.

use crate::buffer::{Buffer, BufferConfig, Repair, SeqRanges, VerifyReport, sled_files};
use anyhow::{Context, bail};
use mrv_shared::ids::DeviceId;
use serde_json::json;
use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Arguments of `buffer`.
#[derive(Debug, clap::Args)]
pub struct BufferArgs {
    /// What to do with the buffer.
    #[command(subcommand)]
    pub command: BufferCommand,
}

/// `buffer` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum BufferCommand {
    /// Ranges per device, bytes, cursors, oldest unreported frame.
    Inspect(BufferTarget),
    /// Checksums, decoding, counters and per-device sequence gaps.
    Verify(BufferTarget),
    /// Give up a device's missing frames (they will never arrive), so its
    /// later frames are stored and acked again. Recorded as a
    /// `frames_given_up` event that the next report carries. Works on a
    /// stopped gateway's buffer; for a running gateway use
    /// `POST /api/devices/<id>/give-up` (see docs/PROTOCOL.md).
    GiveUp(GiveUpArgs),
    /// The stored readings, one line each (time, device, channel, value).
    Dump(DumpArgs),
}

/// Arguments of `buffer give-up`.
#[derive(Debug, clap::Args)]
pub struct GiveUpArgs {
    /// Gateway data dir (holding `buffer/`) or the buffer dir itself.
    #[arg(long, env = "MRV_DATA_DIR")]
    pub data_dir: PathBuf,
    /// The device.
    #[arg(long)]
    pub device: String,
    /// Give up every missing seq up to and including this one.
    #[arg(long)]
    pub through: u64,
    /// Why (recorded in the event and in every report that carries it).
    #[arg(long)]
    pub reason: String,
}

/// Arguments of `buffer dump`.
#[derive(Debug, clap::Args)]
pub struct DumpArgs {
    /// Where the buffer is.
    #[command(flatten)]
    pub target: BufferTarget,
    /// Only this device.
    #[arg(long)]
    pub device: Option<String>,
    /// Only this channel.
    #[arg(long)]
    pub channel: Option<String>,
    /// Readings at or after this time: RFC 3339 UTC (`2025-11-26T10:00:00Z`),
    /// Unix ms, or an age (`30m`, `2h`, `7d` ago).
    #[arg(long)]
    pub from: Option<String>,
    /// Readings before this time (same forms as `--from`).
    #[arg(long)]
    pub to: Option<String>,
    /// Stop after this many readings.
    #[arg(long, default_value_t = 1000)]
    pub limit: usize,
}

/// Where the buffer is and how to print.
#[derive(Debug, clap::Args)]
pub struct BufferTarget {
    /// Gateway data dir (holding `buffer/`) or the buffer dir itself.
    #[arg(long, env = "MRV_DATA_DIR")]
    pub data_dir: PathBuf,
    /// Print one JSON document instead of text.
    #[arg(long)]
    pub json: bool,
    /// Show progress on stderr even when it is not a terminal.
    #[arg(long)]
    pub progress: bool,
    /// Where the private copy of the buffer is made (default: the system
    /// temp dir); needs as much free space as the buffer's files take.
    #[arg(long)]
    pub scratch: Option<PathBuf>,
}

/// Runs `buffer inspect` or `buffer verify`.
pub fn run(args: BufferArgs) -> anyhow::Result<()> {
    match args.command {
        BufferCommand::Inspect(t) => inspect(&t),
        BufferCommand::Dump(d) => dump(&d, &mut std::io::stdout().lock()),
        BufferCommand::Verify(t) => {
            let rep = verify(&t)?;
            if !rep.is_ok() {
                bail!("buffer verify found {} problem(s)", rep.problems.len());
            }
            Ok(())
        }
        BufferCommand::GiveUp(g) => give_up(&g),
    }
}

/// `buffer give-up`: see [`BufferCommand::GiveUp`].
pub fn give_up(g: &GiveUpArgs) -> anyhow::Result<()> {
    let device = DeviceId::new(&g.device).with_context(|| format!("device id {:?}", g.device))?;
    if g.reason.trim().is_empty() {
        bail!("--reason must say why the frames are given up");
    }
    // The one buffer command that writes: it opens the buffer itself (the
    // inspection commands only ever read a private copy).
    let path = locate(&g.data_dir)?;
    let b = Buffer::open(BufferConfig {
        path: path.clone(),
        max_bytes: u64::MAX,
        cache_bytes: 16 << 20,
        keep_delivered: Duration::from_secs(u64::MAX / 4),
    })
    .with_context(|| {
        format!(
            "opening the buffer at {} (a running gateway holds it: use POST /api/devices/{}/give-up on its diagnostics API instead)",
            path.display(),
            g.device
        )
    })?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    match b.give_up(
        &device,
        g.through,
        &format!("operator: {}", g.reason.trim()),
        now,
    )? {
        Some(r) => {
            println!(
                "{device}: seqs {}..={} given up (recorded as a frames_given_up event)",
                r.first, r.last
            );
            Ok(())
        }
        None => {
            let acked = b
                .devices()
                .into_iter()
                .find(|d| d.device == device)
                .map(|d| d.acked_seq);
            match acked {
                Some(a) => bail!(
                    "nothing to give up: {device} has every seq up to {a} accounted for (--through {} is not above it)",
                    g.through
                ),
                None => bail!("nothing to give up: --through must be at least 1"),
            }
        }
    }
}

/// The buffer directory under `data_dir` (or `data_dir` itself).
pub fn locate(data_dir: &Path) -> anyhow::Result<PathBuf> {
    let is_sled = |p: &Path| p.join("conf").is_file() && p.join("db").is_file();
    let nested = data_dir.join("buffer");
    if is_sled(&nested) {
        return Ok(nested);
    }
    if is_sled(data_dir) {
        return Ok(data_dir.to_path_buf());
    }
    bail!(
        "no buffer in {} (looked for {} and the dir itself)",
        data_dir.display(),
        nested.display()
    )
}

/// A private, opened copy of a buffer; the original is never written.
struct BufferCopy {
    /// The buffer directory that was copied.
    source: PathBuf,
    /// What a gateway start would repair in `source` (applied to the copy only).
    repairs: Vec<Repair>,
    buf: Buffer,
    // Dropped last: removes the copy.
    _dir: tempfile::TempDir,
}

/// Room kept free beyond the copy itself (sled writes a snapshot and may
/// extend its log while opening the copy).
const COPY_HEADROOM: u64 = 16 << 20;

fn open(t: &BufferTarget) -> anyhow::Result<BufferCopy> {
    let source = locate(&t.data_dir)?;
    // sled's own lock, read-only: no gateway writes while the files are
    // copied (a consistent copy), and none can start meanwhile.
    let lock = sled_files::lock(&source, false, Duration::from_secs(2)).map_err(|e| {
        if e.kind() == std::io::ErrorKind::WouldBlock {
            anyhow::anyhow!(
                "the buffer at {} is in use by a running gateway (it holds the buffer's lock). \
                 Ask the running gateway instead: `mrv-gateway status` (buffer figures), \
                 `mrv-gateway devices`, or its API /api/buffer and the device pages of its \
                 diagnostics listener; or stop it first (`systemctl stop mrv-gateway`) and run this again",
                source.display()
            )
        } else {
            anyhow::Error::new(e).context(format!("locking the buffer at {}", source.display()))
        }
    })?;
    let repairs =
        sled_files::plan(&source).with_context(|| format!("reading {}", source.display()))?;
    let files = copy_list(&source)?;
    let need: u64 = files.iter().map(|(_, len)| len).sum::<u64>() + COPY_HEADROOM;
    let scratch = t.scratch.clone().unwrap_or_else(std::env::temp_dir);
    let free = rustix::fs::statvfs(&scratch)
        .map(|s| s.f_bavail.saturating_mul(s.f_frsize))
        .with_context(|| format!("free space of {}", scratch.display()))?;
    if free < need {
        bail!(
            "a private copy of the buffer needs {} in {}, which has {} free; pass --scratch DIR on a file system with room (the buffer itself is never written)",
            human_bytes(need),
            scratch.display(),
            human_bytes(free)
        );
    }
    let dir = tempfile::Builder::new()
        .prefix("mrv-buffer-copy-")
        .tempdir_in(&scratch)
        .with_context(|| format!("temporary directory in {}", scratch.display()))?;
    let copy = dir.path().join("buffer");
    for (rel, _) in &files {
        let to = copy.join(rel);
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::copy(source.join(rel), &to).with_context(|| {
            format!("copying {} to {}", source.join(rel).display(), to.display())
        })?;
    }
    drop(lock);
    let buf = Buffer::open(BufferConfig {
        path: copy,
        max_bytes: u64::MAX,
        cache_bytes: 16 << 20,
        keep_delivered: Duration::ZERO,
    })
    .with_context(|| format!("opening a copy of the buffer at {}", source.display()))?;
    Ok(BufferCopy {
        source,
        repairs,
        buf,
        _dir: dir,
    })
}

/// Every file of the buffer directory (one level of subdirectories:
/// sled's `blobs/`), relative, with its length.
fn copy_list(dir: &Path) -> anyhow::Result<Vec<(PathBuf, u64)>> {
    let mut out = Vec::new();
    let ls = |d: &Path| std::fs::read_dir(d).with_context(|| format!("listing {}", d.display()));
    for e in ls(dir)? {
        let e = e?;
        let ty = e.file_type()?;
        if ty.is_file() {
            out.push((PathBuf::from(e.file_name()), e.metadata()?.len()));
        } else if ty.is_dir() {
            for f in ls(&e.path())? {
                let f = f?;
                if f.file_type()?.is_file() {
                    out.push((
                        Path::new(&e.file_name()).join(f.file_name()),
                        f.metadata()?.len(),
                    ));
                }
            }
        }
    }
    out.sort();
    Ok(out)
}

fn repairs_json(repairs: &[Repair]) -> serde_json::Value {
    repairs.iter().map(|r| json!(r.to_string())).collect()
}

fn print_repairs(repairs: &[Repair]) {
    for r in repairs {
        println!("  AT NEXT START the gateway repairs: {r}");
    }
}

/// Progress reporting on stderr: a bar on a terminal, lines with `--progress`.
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    lines: bool,
    total: u64,
    what: &'static str,
    next_tenth: u64,
}

impl Progress {
    fn new(total: u64, what: &'static str, forced: bool) -> Self {
        let tty = std::io::stderr().is_terminal();
        let bar = tty.then(|| {
            let b = indicatif::ProgressBar::with_draw_target(
                Some(total),
                indicatif::ProgressDrawTarget::stderr(),
            );
            if let Ok(style) = indicatif::ProgressStyle::with_template(
                "{msg} [{bar:40}] {percent:>3}% {human_pos}/{human_len} ({eta})",
            ) {
                b.set_style(style.progress_chars("=> "));
            }
            b.set_message(what);
            b
        });
        Progress {
            bar,
            lines: forced && !tty,
            total: total.max(1),
            what,
            next_tenth: 1,
        }
    }

    fn set(&mut self, done: u64) {
        if let Some(b) = &self.bar {
            b.set_position(done);
        }
        if self.lines {
            while self.next_tenth <= 10 && done * 10 >= self.total * self.next_tenth {
                eprintln!(
                    "{}: {}% ({done} of {})",
                    self.what,
                    self.next_tenth * 10,
                    self.total
                );
                self.next_tenth += 1;
            }
        }
    }

    fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

/// Per-device view of the kept data, built while streaming.
#[derive(Default)]
struct KeptDevice {
    frames: u64,
    readings: u64,
    seqs: SeqRanges,
    first_received_ms: u64,
    last_received_ms: u64,
}

fn inspect(t: &BufferTarget) -> anyhow::Result<()> {
    let copy = open(t)?;
    let buf = &copy.buf;
    let stats = buf.stats();
    let devices = buf.devices();
    let mut kept: BTreeMap<DeviceId, KeptDevice> = BTreeMap::new();
    let mut progress = Progress::new(stats.frames, "inspect", t.progress);
    let mut damaged = 0u64;
    for (n, item) in buf.scan(None).enumerate() {
        match item {
            Ok(sf) => {
                let k = kept
                    .entry(sf.frame.device.clone())
                    .or_insert_with(|| KeptDevice {
                        first_received_ms: u64::MAX,
                        ..KeptDevice::default()
                    });
                k.frames += 1;
                k.readings += sf.frame.samples.len() as u64;
                k.seqs.insert(sf.frame.seq);
                k.first_received_ms = k.first_received_ms.min(sf.received_ms);
                k.last_received_ms = k.last_received_ms.max(sf.received_ms);
            }
            Err(e) => {
                damaged += 1;
                tracing::warn!(error = %e, "unreadable data while inspecting (run `buffer verify`)");
            }
        }
        if n % 1024 == 0 {
            progress.set(n as u64);
        }
    }
    progress.set(stats.frames);
    progress.finish();

    if t.json {
        let doc = json!({
            "path": copy.source.display().to_string(),
            "repairs_at_next_start": repairs_json(&copy.repairs),
            "bytes": stats.bytes,
            "disk_bytes": stats.disk_bytes,
            "frames": stats.frames,
            "readings": stats.readings,
            "unreported_frames": stats.unreported_frames,
            "unreported_readings": stats.unreported_readings,
            "oldest_unreported_ms": stats.oldest_unreported_ms,
            "last_key": stats.last_key.map(|k| k.to_string()),
            "reported": stats.reported.map(|k| k.to_string()),
            "delivered": stats.delivered.map(|k| k.to_string()),
            "events_delivered": buf.events_delivered(),
            "next_event_id": stats.next_event_id,
            "unreadable_items": damaged,
            "devices": devices.iter().map(|d| {
                let k = kept.get(&d.device);
                json!({
                    "device": d.device.as_str(),
                    "acked_seq": d.acked_seq,
                    "highest_seq": d.highest_seq,
                    "boot": d.boot,
                    "frames_stored": d.frames,
                    "readings_stored": d.readings,
                    "first_received_ms": d.first_received_ms,
                    "last_received_ms": d.last_received_ms,
                    "gaps_above_acked": d.gaps,
                    "kept_frames": k.map_or(0, |k| k.frames),
                    "kept_readings": k.map_or(0, |k| k.readings),
                    "kept_seq_ranges": k.map(|k| k.seqs.ranges().to_vec()).unwrap_or_default(),
                    "kept_first_received_ms": k.map(|k| k.first_received_ms),
                    "kept_last_received_ms": k.map(|k| k.last_received_ms),
                })
            }).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(());
    }

    println!("buffer {}", copy.source.display());
    print_repairs(&copy.repairs);
    println!(
        "  bytes        {} logical, {} on disk",
        human_bytes(stats.bytes),
        human_bytes(stats.disk_bytes)
    );
    println!(
        "  kept         {} frames, {} readings",
        stats.frames, stats.readings
    );
    println!(
        "  unreported   {} frames, {} readings, oldest received {}",
        stats.unreported_frames,
        stats.unreported_readings,
        stats.oldest_unreported_ms.map_or("-".into(), utc_text)
    );
    let key = |k: Option<crate::buffer::FrameKey>| k.map_or("-".into(), |k| k.to_string());
    println!(
        "  cursors      positions of stored frames, as batch:index (batch = one group commit)"
    );
    println!(
        "    reported     {:<12} every frame up to here is in a signed report",
        key(stats.reported)
    );
    println!(
        "    delivered    {:<12} every frame up to here is in a report the backend confirmed \
         (pruned after keep_delivered_days)",
        key(stats.delivered)
    );
    println!(
        "    last stored  {:<12} the newest frame",
        key(stats.last_key)
    );
    println!(
        "  events       next id {}, delivered up to {}",
        stats.next_event_id,
        buf.events_delivered().map_or("-".into(), |i| i.to_string())
    );
    if damaged > 0 {
        println!("  UNREADABLE   {damaged} item(s); run `buffer verify`");
    }
    println!("devices ({})", devices.len());
    for d in &devices {
        println!(
            "  {}  acked {}  highest {}  boot {}  stored {} frames / {} readings  received {} .. {}",
            d.device,
            d.acked_seq,
            d.highest_seq,
            d.boot,
            d.frames,
            d.readings,
            d.first_received_ms.map_or("-".into(), utc_text),
            d.last_received_ms.map_or("-".into(), utc_text),
        );
        if !d.gaps.is_empty() {
            println!("      missing above acked: {}", ranges_text(&d.gaps));
        }
        match kept.get(&d.device) {
            Some(k) => println!(
                "      kept: seqs {}  ({} frames, {} readings, received {} .. {})",
                ranges_text(k.seqs.ranges()),
                k.frames,
                k.readings,
                utc_text(k.first_received_ms),
                utc_text(k.last_received_ms)
            ),
            None => println!("      kept: nothing (all pruned)"),
        }
    }
    Ok(())
}

fn verify(t: &BufferTarget) -> anyhow::Result<VerifyReport> {
    let copy = open(t)?;
    let buf = &copy.buf;
    let total = buf.stats().bytes;
    let mut progress = Progress::new(total, "verify", t.progress);
    let rep = buf.verify(|done| progress.set(done))?;
    progress.finish();
    if t.json {
        let doc = json!({
            "path": copy.source.display().to_string(),
            "repairs_at_next_start": repairs_json(&copy.repairs),
            "ok": rep.is_ok(),
            "batches": rep.batches,
            "frames": rep.frames,
            "readings": rep.readings,
            "bytes": rep.bytes,
            "events": rep.events,
            "devices": rep.devices.iter().map(|d| json!({
                "device": d.device.as_str(),
                "frames": d.frames,
                "seq_ranges": d.ranges,
                "gaps": d.gaps,
            })).collect::<Vec<_>>(),
            "problems": rep.problems.iter().map(|p| json!({
                "key": p.key,
                "problem": p.problem,
            })).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(rep);
    }
    println!(
        "{}: {} batches, {} frames, {} readings, {} events, {}",
        copy.source.display(),
        rep.batches,
        rep.frames,
        rep.readings,
        rep.events,
        human_bytes(rep.bytes)
    );
    for d in &rep.devices {
        let gaps = if d.gaps.is_empty() {
            "no gaps".to_string()
        } else {
            format!("gaps {}", ranges_text(&d.gaps))
        };
        println!(
            "  {}  {} frames, seqs {}, {gaps}",
            d.device,
            d.frames,
            ranges_text(&d.ranges)
        );
    }
    print_repairs(&copy.repairs);
    if rep.is_ok() {
        println!("OK: checksums, frames, counters and bookkeeping agree");
    } else {
        println!("{} PROBLEM(S):", rep.problems.len());
        for p in &rep.problems {
            println!("  {}: {}", p.key, p.problem);
        }
    }
    Ok(rep)
}

/// A time argument: RFC 3339 UTC (`2025-11-26T10:00:00Z`, optional
/// `.fff`), Unix ms (all digits), or an age before `now_ms` (`30s`, `15m`,
/// `2h`, `7d`).
pub fn parse_time(s: &str, now_ms: u64) -> anyhow::Result<u64> {
    let t = s.trim();
    if !t.is_empty() && t.chars().all(|c| c.is_ascii_digit()) {
        return t.parse().context("a Unix time in ms");
    }
    if let Some((n, unit)) = t.split_at_checked(t.len().saturating_sub(1))
        && let (Ok(n), Some(ms)) = (
            n.parse::<u64>(),
            match unit {
                "s" => Some(1_000u64),
                "m" => Some(60_000),
                "h" => Some(3_600_000),
                "d" => Some(86_400_000),
                _ => None,
            },
        )
    {
        return Ok(now_ms.saturating_sub(n.saturating_mul(ms)));
    }
    let bad = || {
        anyhow::anyhow!(
            "{s:?} is not a time: give RFC 3339 UTC (2025-11-26T10:00:00Z), Unix ms, or an age such as 30m, 2h, 7d"
        )
    };
    let t = t.strip_suffix('Z').ok_or_else(bad)?;
    let (date, clock) = t.split_once('T').ok_or_else(bad)?;
    let num = |x: &str| x.parse::<i64>().map_err(|_| bad());
    let d: Vec<&str> = date.split('-').collect();
    let (clock, frac) = clock.split_once('.').unwrap_or((clock, ""));
    let c: Vec<&str> = clock.split(':').collect();
    if d.len() != 3 || c.len() != 3 || frac.len() > 3 || !frac.chars().all(|x| x.is_ascii_digit()) {
        return Err(bad());
    }
    let month =
        time::Month::try_from(u8::try_from(num(d[1])?).map_err(|_| bad())?).map_err(|_| bad())?;
    let date = time::Date::from_calendar_date(
        i32::try_from(num(d[0])?).map_err(|_| bad())?,
        month,
        u8::try_from(num(d[2])?).map_err(|_| bad())?,
    )
    .map_err(|_| bad())?;
    let tod = time::Time::from_hms(
        u8::try_from(num(c[0])?).map_err(|_| bad())?,
        u8::try_from(num(c[1])?).map_err(|_| bad())?,
        u8::try_from(num(c[2])?).map_err(|_| bad())?,
    )
    .map_err(|_| bad())?;
    let ms = if frac.is_empty() {
        0
    } else {
        num(&format!("{frac:0<3}"))?
    };
    let secs = time::PrimitiveDateTime::new(date, tod)
        .assume_utc()
        .unix_timestamp();
    u64::try_from(secs * 1000 + ms).map_err(|_| bad())
}

fn dump(a: &DumpArgs, out: &mut dyn std::io::Write) -> anyhow::Result<()> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let from = a.from.as_deref().map(|s| parse_time(s, now)).transpose()?;
    let to = a.to.as_deref().map(|s| parse_time(s, now)).transpose()?;
    let device = a
        .device
        .as_deref()
        .map(DeviceId::new)
        .transpose()
        .map_err(|e| anyhow::anyhow!("--device: {e}"))?;
    let copy = open(&a.target)?;
    let buf = &copy.buf;
    if let Some(d) = &device
        && !buf.devices().iter().any(|s| &s.device == d)
    {
        let known: Vec<String> = buf.devices().iter().map(|s| s.device.to_string()).collect();
        bail!(
            "no device {d} in the buffer (devices: {})",
            known.join(", ")
        );
    }
    let mut n = 0usize;
    let mut rows = Vec::new();
    'scan: for item in buf.scan(None) {
        let sf = match item {
            Ok(sf) => sf,
            Err(e) => {
                tracing::warn!(error = %e, "unreadable data while dumping (run `buffer verify`)");
                continue;
            }
        };
        if device.as_ref().is_some_and(|d| d != &sf.frame.device) {
            continue;
        }
        for r in sf.frame.readings(sf.received_ms) {
            let t = r.time_ms();
            if from.is_some_and(|f| t < f) || to.is_some_and(|x| t >= x) {
                continue;
            }
            if a.channel
                .as_deref()
                .is_some_and(|c| c != r.channel.as_str())
            {
                continue;
            }
            if n == a.limit {
                if !a.target.json {
                    writeln!(
                        out,
                        "(stopped at --limit {}; narrow with --from/--to or raise --limit)",
                        a.limit
                    )?;
                }
                break 'scan;
            }
            n += 1;
            let quality: Vec<&str> = r.quality.names().collect();
            let shown = if r.quality.is_usable() {
                mrv_shared::display::display(r.quantity, r.value).to_string()
            } else {
                "unavailable".to_string()
            };
            if a.target.json {
                rows.push(json!({
                    "time_ms": t,
                    "device_time": r.device_time_ms.is_some(),
                    "received_ms": r.received_ms,
                    "device": r.device.as_str(),
                    "channel": r.channel.as_str(),
                    "quantity": r.quantity.name(),
                    "value": r.value,
                    "unit": r.quantity.unit(),
                    "display": shown,
                    "quality": quality,
                    "seq": r.seq,
                    "frame": sf.key.to_string(),
                }));
            } else {
                writeln!(
                    out,
                    "{}  {:<16} {:<20} {:>16}  ({} {}){}  seq {}",
                    utc_text(t),
                    r.device.as_str(),
                    r.channel.as_str(),
                    shown,
                    r.value,
                    r.quantity.unit(),
                    if quality.is_empty() {
                        String::new()
                    } else {
                        format!("  [{}]", quality.join("|"))
                    },
                    r.seq
                )?;
            }
        }
    }
    if a.target.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&rows)?)?;
    } else if n == 0 {
        writeln!(out, "no readings match")?;
    }
    Ok(())
}

fn ranges_text(r: &[(u64, u64)]) -> String {
    const SHOWN: usize = 8;
    let mut parts: Vec<String> = r
        .iter()
        .take(SHOWN)
        .map(|&(a, b)| {
            if a == b {
                a.to_string()
            } else {
                format!("{a}-{b}")
            }
        })
        .collect();
    if r.len() > SHOWN {
        parts.push(format!("... ({} ranges)", r.len()));
    }
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join(", ")
    }
}

fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` for Unix ms.
fn utc_text(ms: u64) -> String {
    crate::clock::utc_rfc3339_ms(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_text_formats_known_instants() {
        assert_eq!(utc_text(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(utc_text(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(utc_text(1_764_115_200_000), "2025-11-26T00:00:00.000Z");
    }

    #[test]
    fn times_parse_as_rfc3339_unix_ms_or_ages() {
        let now = 1_764_115_200_000;
        assert_eq!(
            parse_time("2025-11-26T00:00:00Z", now).expect("rfc3339"),
            now
        );
        assert_eq!(
            parse_time("2025-11-26T00:00:01.5Z", now).expect("ms"),
            now + 1500
        );
        assert_eq!(parse_time("1764115200000", now).expect("unix ms"), now);
        assert_eq!(parse_time("2h", now).expect("age"), now - 7_200_000);
        assert_eq!(parse_time("7d", now).expect("age"), now - 7 * 86_400_000);
        let e = parse_time("yesterday", now).expect_err("not a time");
        assert!(e.to_string().contains("RFC 3339"), "{e}");
        assert!(parse_time("2025-13-01T00:00:00Z", now).is_err());
    }

    #[test]
    fn ranges_are_printed_compactly() {
        assert_eq!(ranges_text(&[(1, 5), (7, 7)]), "1-5, 7");
        assert_eq!(ranges_text(&[]), "-");
    }

    fn target(dir: &Path, json: bool) -> BufferTarget {
        BufferTarget {
            data_dir: dir.to_path_buf(),
            json,
            progress: true,
            scratch: None,
        }
    }

    #[test]
    fn inspect_and_verify_read_a_buffer_and_verify_fails_on_damage() {
        use crate::buffer::Incoming;
        use mrv_shared::ids::{ChannelId, SiteId};
        use mrv_shared::quantity::{Quantity, ValueKind};
        use mrv_shared::reading::{Channel, Quality, Sample};
        use mrv_shared::wire::Frame;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("buffer");
        {
            let b = Buffer::open(BufferConfig {
                path: path.clone(),
                max_bytes: u64::MAX,
                cache_bytes: 1 << 20,
                keep_delivered: Duration::ZERO,
            })
            .expect("open");
            let frames = [1u64, 2, 4].map(|seq| Incoming {
                frame: Frame {
                    site: SiteId::new("s").expect("id"),
                    device: DeviceId::new("pv-1").expect("id"),
                    seq,
                    boot: 0,
                    firmware: "fw".into(),
                    base_time_ms: None,
                    channels: vec![Channel {
                        id: ChannelId::new("energy").expect("id"),
                        quantity: Quantity::Energy,
                        kind: ValueKind::Counter,
                    }],
                    samples: vec![Sample {
                        channel: 0,
                        offset_ms: 0,
                        value: seq as i64,
                        quality: Quality::GOOD,
                    }],
                    signature: None,
                },
                received_ms: 1_764_115_200_000 + seq,
            });
            let r = b.append(frames.to_vec()).expect("append");
            assert_eq!(
                r.outcomes[2],
                crate::buffer::AppendOutcome::OutOfOrder,
                "go-back-N: 4 waits for 3"
            );
            let pv = DeviceId::new("pv-1").expect("id");
            b.give_up(&pv, 3, "operator: test", 1_764_115_200_100)
                .expect("give up");
            b.append(vec![frames[2].clone()]).expect("append 4");
            let t = target(dir.path(), false);
            drop(b);
            inspect(&t).expect("inspect text");
            inspect(&target(dir.path(), true)).expect("inspect json");
            let rep = verify(&t).expect("verify");
            assert!(rep.is_ok(), "{:?}", rep.problems);
            assert_eq!(rep.devices[0].gaps, vec![(3, 3)]);
            // The stored values, in display units with the exact value.
            let dump_args = |device: Option<&str>, from: Option<&str>| DumpArgs {
                target: target(dir.path(), false),
                device: device.map(str::to_string),
                channel: None,
                from: from.map(str::to_string),
                to: None,
                limit: 1000,
            };
            let mut out = Vec::new();
            dump(&dump_args(Some("pv-1"), None), &mut out).expect("dump");
            let text = String::from_utf8(out).expect("utf8");
            assert_eq!(text.lines().count(), 3, "{text}");
            assert!(
                text.lines()
                    .next()
                    .is_some_and(|l| l.starts_with("2025-11-26T00:00:00.001Z  pv-1")
                        && l.contains("1 Wh  (1 Wh)")
                        && l.ends_with("seq 1")),
                "{text}"
            );
            let mut out = Vec::new();
            dump(&dump_args(None, Some("2025-11-26T00:00:00.003Z")), &mut out).expect("dump");
            assert_eq!(String::from_utf8(out).expect("utf8").lines().count(), 1);
            let e =
                dump(&dump_args(Some("nope"), None), &mut Vec::new()).expect_err("unknown device");
            assert!(e.to_string().contains("devices: pv-1"), "{e}");
            // While a gateway holds the buffer, say so and point at its API.
            let held = Buffer::open(BufferConfig {
                path: path.clone(),
                max_bytes: u64::MAX,
                cache_bytes: 1 << 20,
                keep_delivered: Duration::ZERO,
            })
            .expect("open");
            let e = open(&t).err().expect("locked");
            assert!(
                e.to_string().contains("in use by a running gateway"),
                "{e:#}"
            );
            assert!(e.to_string().contains("mrv-gateway status"), "{e:#}");
            drop(held);
        }
        // Damage the stored batch behind the buffer's back.
        {
            let db = crate::buffer::open_raw_sled_for_test(&path);
            let tree = db.open_tree("buffer.v1").expect("tree");
            let (k, v) = tree
                .scan_prefix(b"d")
                .next()
                .expect("one batch")
                .expect("read");
            let mut v = v.to_vec();
            v[10] ^= 0x01;
            tree.insert(k, v).expect("insert");
            db.flush().expect("flush");
        }
        let err = run(BufferArgs {
            command: BufferCommand::Verify(target(&path, true)),
        })
        .expect_err("verify must fail on a damaged batch");
        assert!(err.to_string().contains("problem"), "{err}");
    }

    /// Every file under `dir`: name, length, content hash, modification time.
    fn tree_state(dir: &Path) -> Vec<(PathBuf, u64, u32, std::time::SystemTime)> {
        let mut out: Vec<_> = copy_list(dir)
            .expect("list")
            .into_iter()
            .map(|(rel, len)| {
                let p = dir.join(&rel);
                let bytes = std::fs::read(&p).expect("read");
                let mtime = std::fs::metadata(&p)
                    .and_then(|m| m.modified())
                    .expect("mtime");
                (rel, len, crc32fast::hash(&bytes), mtime)
            })
            .collect();
        out.sort();
        out
    }

    #[test]
    fn inspect_and_verify_never_write_to_the_buffer_and_name_the_pending_repair() {
        use crate::buffer::{Incoming, RepairReason};
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("buffer");
        let b = Buffer::open(BufferConfig {
            path: path.clone(),
            max_bytes: u64::MAX,
            cache_bytes: 1 << 20,
            keep_delivered: Duration::ZERO,
        })
        .expect("open");
        use mrv_shared::ids::{ChannelId, SiteId};
        use mrv_shared::quantity::{Quantity, ValueKind};
        use mrv_shared::reading::{Channel, Quality, Sample};
        let frame = mrv_shared::wire::Frame {
            site: SiteId::new("s").expect("id"),
            device: DeviceId::new("pv-1").expect("id"),
            seq: 1,
            boot: 0,
            firmware: "fw".into(),
            base_time_ms: None,
            channels: vec![Channel {
                id: ChannelId::new("energy").expect("id"),
                quantity: Quantity::Energy,
                kind: ValueKind::Counter,
            }],
            samples: vec![Sample {
                channel: 0,
                offset_ms: 0,
                value: 5,
                quality: Quality::GOOD,
            }],
            signature: None,
        };
        b.append(vec![Incoming {
            frame,
            received_ms: 1_764_115_200_000,
        }])
        .expect("append");
        // While a gateway holds the buffer, the commands refuse (and write nothing).
        let before = tree_state(&path);
        let err = verify(&target(dir.path(), true)).expect_err("locked");
        assert!(
            format!("{err:#}").contains("in use by a running gateway"),
            "{err:#}"
        );
        drop(b);
        // What a full disk leaves behind (sled issue 1527).
        std::fs::write(path.join("snap.7FFFFFFFFFFFFFFF.generating"), b"").expect("write");
        let before_cmds = tree_state(&path);
        assert_ne!(before, before_cmds);
        inspect(&target(dir.path(), false)).expect("inspect");
        inspect(&target(dir.path(), true)).expect("inspect json");
        let rep = verify(&target(dir.path(), true)).expect("verify");
        assert!(rep.is_ok(), "{:?}", rep.problems);
        assert_eq!(rep.frames, 1);
        assert_eq!(
            tree_state(&path),
            before_cmds,
            "the commands wrote to the buffer"
        );
        let copy = open(&target(dir.path(), true)).expect("copy");
        assert_eq!(copy.repairs.len(), 1);
        assert_eq!(copy.repairs[0].why, RepairReason::UnfinishedSnapshot);
        drop(copy);
        // A scratch dir without room is refused before anything is copied.
        let mut t = target(dir.path(), true);
        t.scratch = Some(PathBuf::from("/nonexistent-scratch"));
        assert!(verify(&t).is_err());
    }

    #[test]
    fn locate_finds_the_nested_buffer_and_refuses_an_empty_dir() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(locate(dir.path()).is_err());
        let b = Buffer::open(BufferConfig {
            path: dir.path().join("buffer"),
            max_bytes: u64::MAX,
            cache_bytes: 1 << 20,
            keep_delivered: Duration::ZERO,
        })
        .expect("open");
        drop(b);
        assert_eq!(
            locate(dir.path()).expect("nested"),
            dir.path().join("buffer")
        );
        assert_eq!(
            locate(&dir.path().join("buffer")).expect("itself"),
            dir.path().join("buffer")
        );
        assert!(!dir.path().join("nothing").exists());
    }
}
