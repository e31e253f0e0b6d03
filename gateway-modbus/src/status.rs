//! Diagnostics state of the Modbus pollers: per device its health (up,
//! degraded, down, see [`super::health`]) and since when, what is wrong now,
//! the last poll, the last success, the last error ever seen, and counts.
//!
//! [`ModbusStatus`] is a cheap clonable handle; pollers write it, the
//! diagnostics API reads [`ModbusStatus::snapshot`]. It never feeds the data
//! path (readings travel as frames, failures as events).
//!
//! Invariant: `problem` describes the last poll only; a poll without any
//! failure clears it at once (the old error stays visible as `last_error`
//! with its time, as history).

use super::health::{Health, PollOutcome};
use mrv_shared::ids::DeviceId;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// One device's state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceStatus {
    /// `up`, `degraded` or `down` after the last poll (absent before it).
    pub state: Option<Health>,
    /// Gateway time the device entered `state` (Unix ms).
    pub state_since_ms: Option<u64>,
    /// Gateway time of the last poll (Unix ms).
    pub last_poll_ms: Option<u64>,
    /// Gateway time of the last poll that read every value.
    pub last_success_ms: Option<u64>,
    /// Gateway time of the last poll that read at least one value.
    pub last_answer_ms: Option<u64>,
    /// What went wrong in the last poll (first failure, with the number of
    /// others); `None` when it had no failure.
    pub problem: Option<String>,
    /// The most recent failure seen, kept after recovery (history).
    pub last_error: Option<String>,
    /// When `last_error` happened.
    pub last_error_ms: Option<u64>,
    /// Values read in the last poll.
    pub values_good: usize,
    /// Values configured (read or not) in the last poll.
    pub values_total: usize,
    /// Names of the values unavailable in the last poll.
    pub unavailable: Vec<String>,
    /// Polls done.
    pub polls: u64,
    /// Polls that read some but not all values.
    pub polls_degraded: u64,
    /// Polls that read no value.
    pub polls_down: u64,
    /// Polls with at least one failure, by the first failure's kind
    /// (`exception`, `timeout`, `unreachable`, `link`, `discovery`).
    pub errors: BTreeMap<String, u64>,
    /// Read requests per poll in the current plan.
    pub requests_per_poll: usize,
}

/// One poll, as the status records it.
#[derive(Debug, Clone, Copy)]
pub struct PollRecord<'a> {
    /// Gateway time of the poll.
    pub now_ms: u64,
    /// Values and failures.
    pub outcome: &'a PollOutcome,
    /// Counter label of the first failure, if any.
    pub error_kind: Option<&'static str>,
    /// Requests of the plan used (0: unchanged).
    pub requests: usize,
    /// Health after the poll and since when.
    pub health: (Health, u64),
}

/// Shared handle to every device's [`DeviceStatus`].
#[derive(Debug, Clone, Default)]
pub struct ModbusStatus(Arc<Mutex<BTreeMap<DeviceId, DeviceStatus>>>);

impl ModbusStatus {
    /// An empty status.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records one poll.
    pub fn record(&self, device: &DeviceId, r: PollRecord<'_>) {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let s = map.entry(device.clone()).or_default();
        let o = r.outcome;
        s.last_poll_ms = Some(r.now_ms);
        s.polls += 1;
        if r.requests > 0 {
            s.requests_per_poll = r.requests;
        }
        s.state = Some(r.health.0);
        s.state_since_ms = Some(r.health.1);
        s.values_good = o.good;
        s.values_total = o.total;
        s.unavailable.clone_from(&o.unavailable);
        match r.health.0 {
            Health::Up => s.last_success_ms = Some(r.now_ms),
            Health::Degraded => s.polls_degraded += 1,
            Health::Down => s.polls_down += 1,
        }
        if o.good > 0 {
            s.last_answer_ms = Some(r.now_ms);
        }
        s.problem = o.problems.first().map(|p| {
            if o.problems.len() > 1 {
                format!("{} (and {} more)", p.detail, o.problems.len() - 1)
            } else {
                p.detail.clone()
            }
        });
        if let Some(p) = &s.problem {
            s.last_error = Some(p.clone());
            s.last_error_ms = Some(r.now_ms);
            let kind = r.error_kind.unwrap_or("exception");
            *s.errors.entry(kind.to_string()).or_default() += 1;
        }
    }

    /// A copy of every device's state.
    pub fn snapshot(&self) -> BTreeMap<DeviceId, DeviceStatus> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// A copy of one device's state.
    pub fn device(&self, device: &DeviceId) -> Option<DeviceStatus> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(device)
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::Problem;
    use mrv_shared::event::EventKind;

    fn outcome(good: usize, total: usize, problem: Option<&str>) -> PollOutcome {
        PollOutcome {
            total,
            good,
            unavailable: (good..total).map(|i| format!("v{i}")).collect(),
            problems: problem
                .map(|d| Problem {
                    kind: EventKind::ModbusTimeout,
                    detail: d.into(),
                })
                .into_iter()
                .collect(),
        }
    }

    #[test]
    fn the_problem_clears_on_the_first_good_poll_and_history_stays() {
        let s = ModbusStatus::new();
        let d = DeviceId::new("m1").expect("valid");
        fn rec(now: u64, o: &PollOutcome, h: (Health, u64)) -> PollRecord<'_> {
            PollRecord {
                now_ms: now,
                outcome: o,
                error_kind: o.problems.first().map(|_| "timeout"),
                requests: 2,
                health: h,
            }
        }
        s.record(&d, rec(10, &outcome(2, 2, None), (Health::Up, 10)));
        let down = outcome(0, 2, Some("timeout"));
        s.record(&d, rec(20, &down, (Health::Down, 20)));
        s.record(&d, rec(30, &down, (Health::Down, 20)));
        let st = s.device(&d).expect("recorded");
        assert_eq!(st.problem.as_deref(), Some("timeout"));
        assert_eq!((st.polls, st.polls_down), (3, 2));
        assert_eq!(st.errors.get("timeout"), Some(&2));
        assert_eq!(st.unavailable, ["v0", "v1"]);
        s.record(&d, rec(40, &outcome(2, 2, None), (Health::Up, 40)));
        let st = s.device(&d).expect("recorded");
        assert_eq!(st.problem, None, "cleared at once");
        assert_eq!(st.last_error.as_deref(), Some("timeout"));
        assert_eq!(st.last_error_ms, Some(30));
        assert_eq!(st.state, Some(Health::Up));
        assert_eq!(st.state_since_ms, Some(40));
        assert_eq!(st.last_success_ms, Some(40));
        assert_eq!(st.requests_per_poll, 2);
    }

    #[test]
    fn a_partly_answering_device_counts_degraded_polls_not_down() {
        let s = ModbusStatus::new();
        let d = DeviceId::new("m1").expect("valid");
        let o = outcome(6, 8, Some("holding 200+1: exception 0x02"));
        for t in 0..23 {
            s.record(
                &d,
                PollRecord {
                    now_ms: t,
                    outcome: &o,
                    error_kind: Some("exception"),
                    requests: 3,
                    health: (Health::Degraded, 0),
                },
            );
        }
        let st = s.device(&d).expect("recorded");
        assert_eq!((st.polls, st.polls_degraded, st.polls_down), (23, 23, 0));
        assert_eq!((st.values_good, st.values_total), (6, 8));
        assert_eq!(st.last_answer_ms, Some(22));
        assert_eq!(st.last_success_ms, None);
    }
}
