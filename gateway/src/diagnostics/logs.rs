//! The last log lines, kept in memory for the diagnostics page and `diag
//! bundle` (the gateway logs to stderr/journald and writes no log file).
//!
//! [`LogRing`] is a `tracing_subscriber` layer: every event at INFO or
//! above (as the subscriber's filter lets through) becomes one [`LogLine`].
//! Invariants:
//! - at most `capacity` lines; the oldest goes first;
//! - every registered secret ([`LogRing::register_secret`]: tokens,
//!   passwords) is replaced by `<redacted>` before a line is stored, so even
//!   a careless log statement cannot leak one through the page or a bundle;
//! - a line is at most [`MAX_LINE_BYTES`] long.
//!
//! One process-wide ring ([`global`]) is installed by `main.rs`; tests read it
//! through the API.

use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::{Mutex, OnceLock};
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::Context;

/// Longest stored line, bytes.
pub const MAX_LINE_BYTES: usize = 2048;

/// Default capacity of the global ring.
pub const DEFAULT_CAPACITY: usize = 1000;

/// One log line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    /// Wall clock (Unix ms).
    pub time_ms: u64,
    /// `ERROR`, `WARN`, `INFO`, `DEBUG` or `TRACE`.
    pub level: String,
    /// Module path of the event.
    pub target: String,
    /// Message and fields, `message key=value ...`.
    pub message: String,
}

#[derive(Debug, Default)]
struct Inner {
    capacity: usize,
    lines: VecDeque<LogLine>,
    secrets: Vec<String>,
}

/// Bounded in-memory log (see the module doc).
#[derive(Debug)]
pub struct LogRing {
    inner: Mutex<Inner>,
}

impl LogRing {
    /// A ring keeping `capacity` lines.
    pub fn new(capacity: usize) -> Self {
        Self {
            inner: Mutex::new(Inner {
                capacity: capacity.max(1),
                ..Inner::default()
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Changes the capacity (drops the oldest lines if needed).
    pub fn set_capacity(&self, capacity: usize) {
        let mut g = self.lock();
        g.capacity = capacity.max(1);
        while g.lines.len() > g.capacity {
            g.lines.pop_front();
        }
    }

    /// Registers a secret that must never appear in a stored line. Secrets
    /// shorter than 4 bytes are ignored (they would redact ordinary words).
    pub fn register_secret(&self, secret: &str) {
        if secret.len() < 4 {
            return;
        }
        let mut g = self.lock();
        if !g.secrets.iter().any(|s| s == secret) {
            g.secrets.push(secret.to_string());
            // Longest first, so a secret containing another is redacted whole.
            g.secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        }
    }

    /// Stores a line (redacted and cut to [`MAX_LINE_BYTES`]).
    pub fn push(&self, mut line: LogLine) {
        let mut g = self.lock();
        for s in &g.secrets {
            if line.message.contains(s.as_str()) {
                line.message = line.message.replace(s.as_str(), "<redacted>");
            }
        }
        if line.message.len() > MAX_LINE_BYTES {
            let mut cut = MAX_LINE_BYTES;
            while !line.message.is_char_boundary(cut) {
                cut -= 1;
            }
            line.message.truncate(cut);
        }
        if g.lines.len() >= g.capacity {
            g.lines.pop_front();
        }
        g.lines.push_back(line);
    }

    /// The last `limit` lines, oldest first.
    pub fn tail(&self, limit: usize) -> Vec<LogLine> {
        let g = self.lock();
        let skip = g.lines.len().saturating_sub(limit);
        g.lines.iter().skip(skip).cloned().collect()
    }
}

/// The process-wide ring that `main.rs` installs as a layer.
pub fn global() -> &'static LogRing {
    static RING: OnceLock<LogRing> = OnceLock::new();
    RING.get_or_init(|| LogRing::new(DEFAULT_CAPACITY))
}

/// The layer feeding [`global`]; add it to the subscriber in `main.rs`.
pub fn layer() -> RingLayer {
    RingLayer { ring: global() }
}

/// A `tracing_subscriber` layer writing into a [`LogRing`].
#[derive(Debug, Clone, Copy)]
pub struct RingLayer {
    ring: &'static LogRing,
}

struct LineVisitor {
    message: String,
    fields: String,
}

impl Visit for LineVisitor {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            let _ = write!(self.fields, " {}={value}", field.name());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.fields, " {}={value:?}", field.name());
        }
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for RingLayer {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        let meta = event.metadata();
        if *meta.level() > tracing::Level::INFO {
            return;
        }
        let mut v = LineVisitor {
            message: String::new(),
            fields: String::new(),
        };
        event.record(&mut v);
        v.message.push_str(&v.fields);
        let time_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        self.ring.push(LogLine {
            time_ms,
            level: meta.level().to_string(),
            target: meta.target().to_string(),
            message: v.message,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(msg: &str) -> LogLine {
        LogLine {
            time_ms: 1,
            level: "INFO".into(),
            target: "t".into(),
            message: msg.into(),
        }
    }

    #[test]
    fn keeps_the_newest_lines_within_capacity() {
        let r = LogRing::new(3);
        for i in 0..5 {
            r.push(line(&format!("l{i}")));
        }
        let t: Vec<_> = r.tail(10).into_iter().map(|l| l.message).collect();
        assert_eq!(t, ["l2", "l3", "l4"]);
        assert_eq!(r.tail(1)[0].message, "l4");
    }

    #[test]
    fn registered_secrets_are_redacted_before_storing() {
        let r = LogRing::new(10);
        r.register_secret("hunter2-password");
        r.register_secret("abc");
        r.push(line("login with hunter2-password failed for abc"));
        let m = &r.tail(1)[0].message;
        assert_eq!(m, "login with <redacted> failed for abc");
    }

    #[test]
    fn long_lines_are_cut_on_a_char_boundary() {
        let r = LogRing::new(2);
        r.push(line(&"é".repeat(MAX_LINE_BYTES)));
        assert!(r.tail(1)[0].message.len() <= MAX_LINE_BYTES);
    }

    #[test]
    fn the_layer_records_events_with_fields() {
        use tracing_subscriber::prelude::*;
        let ring: &'static LogRing = Box::leak(Box::new(LogRing::new(10)));
        let sub = tracing_subscriber::registry().with(RingLayer { ring });
        tracing::subscriber::with_default(sub, || {
            tracing::info!(device = "pv-01", n = 3, "frame stored");
            tracing::debug!("not kept");
        });
        let t = ring.tail(10);
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].level, "INFO");
        assert_eq!(t[0].message, "frame stored device=pv-01 n=3");
    }
}
