//! Which rejections get a log line (pure, time-injected).
//!
//! A broken or hostile device can send thousands of bad payloads a second;
//! every one is counted and quarantined, but logging each would bury
//! everything else a technician needs to read. Per (device, reason) at most
//! [`LINES_PER_WINDOW`] lines are logged per [`WINDOW_MS`]; the first line
//! after a window with suppressed lines says how many were suppressed.
//!
//! Invariant: the state is bounded (oldest keys are dropped beyond
//! [`MAX_KEYS`]), so the limiter itself cannot be used to exhaust memory.

use std::collections::HashMap;

/// Window length, ms.
pub const WINDOW_MS: u64 = 60_000;
/// Lines logged per (device, reason) per window.
pub const LINES_PER_WINDOW: u32 = 5;
/// Most (device, reason) keys tracked.
pub const MAX_KEYS: usize = 4096;

/// What to do with one rejection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogDecision {
    /// Log it; `suppressed` lines of the same key were not logged before it.
    Log {
        /// Lines suppressed in earlier windows since the last logged line.
        suppressed: u64,
    },
    /// Do not log it (it is still counted and quarantined).
    Suppress,
}

#[derive(Debug, Clone, Copy)]
struct Window {
    start_ms: u64,
    logged: u32,
    suppressed: u64,
}

/// The limiter.
#[derive(Debug, Default)]
pub struct RejectLog {
    windows: HashMap<(String, &'static str), Window>,
}

impl RejectLog {
    /// Decides for a rejection of `device` (or `""`) for `reason` at `now_ms`.
    pub fn decide(&mut self, device: &str, reason: &'static str, now_ms: u64) -> LogDecision {
        if self.windows.len() >= MAX_KEYS
            && !self.windows.contains_key(&(device.to_string(), reason))
        {
            // Drop the stalest key to stay bounded.
            if let Some(oldest) = self
                .windows
                .iter()
                .min_by_key(|(_, w)| w.start_ms)
                .map(|(k, _)| k.clone())
            {
                self.windows.remove(&oldest);
            }
        }
        let w = self
            .windows
            .entry((device.to_string(), reason))
            .or_insert(Window {
                start_ms: now_ms,
                logged: 0,
                suppressed: 0,
            });
        if now_ms.saturating_sub(w.start_ms) >= WINDOW_MS {
            w.start_ms = now_ms;
            w.logged = 0;
        }
        if w.logged < LINES_PER_WINDOW {
            w.logged += 1;
            let suppressed = std::mem::take(&mut w.suppressed);
            LogDecision::Log { suppressed }
        } else {
            w.suppressed += 1;
            LogDecision::Suppress
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_a_few_per_window_then_reports_what_was_suppressed() {
        let mut l = RejectLog::default();
        let decisions: Vec<_> = (0..8).map(|i| l.decide("d", "bad_magic", i)).collect();
        assert_eq!(decisions[..5], [LogDecision::Log { suppressed: 0 }; 5]);
        assert_eq!(decisions[5..], [LogDecision::Suppress; 3]);
        // Another device or reason has its own budget.
        assert_eq!(
            l.decide("e", "bad_magic", 10),
            LogDecision::Log { suppressed: 0 }
        );
        assert_eq!(
            l.decide("d", "oversized", 10),
            LogDecision::Log { suppressed: 0 }
        );
        // Next window: logged again, with the count of what was hidden.
        assert_eq!(
            l.decide("d", "bad_magic", WINDOW_MS + 7),
            LogDecision::Log { suppressed: 3 }
        );
    }

    #[test]
    fn state_stays_bounded() {
        let mut l = RejectLog::default();
        for i in 0..(MAX_KEYS as u64 + 100) {
            l.decide(&format!("dev{i}"), "bad_magic", i);
        }
        assert!(l.windows.len() <= MAX_KEYS);
    }
}
