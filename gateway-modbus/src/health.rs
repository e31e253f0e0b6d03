//! A polled device's health, from its polls: **up** (every value answered),
//! **degraded** (some values answered), **down** (no value), and the
//! transitions between them. Pure: [`HealthTracker::on_poll`] takes one
//! poll's outcome and `now_ms` and returns the [`Transition`], if any, that
//! the poller turns into exactly one event and one log line.
//!
//! Invariants:
//! - a transition happens when the state changes, or when the state stays
//!   degraded/down but its set of problems changes (another register
//!   refused, a timeout becoming "connection refused"); never on a poll that
//!   repeats the previous one, so a device failing the same way for a day
//!   costs one event, not 8640;
//! - the first poll after start gives an event only when it is not up;
//!   coming back to up is `modbus_recovered`, with how long it was not up;
//! - the event kind names the first problem's cause (`modbus_exception`,
//!   `modbus_timeout`, `modbus_unreachable`, `modbus_link_error`) and its
//!   detail starts with the new state (`degraded: 6 of 8 values ...`,
//!   `down: ...`), so events alone tell the story.

use mrv_shared::event::{Event, EventKind};
use mrv_shared::ids::DeviceId;
use serde::{Deserialize, Serialize};

/// What a device's last poll says about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    /// Every configured value was read.
    Up,
    /// Some values were read, others are unavailable.
    Degraded,
    /// No value was read (the device, the link or every register failed).
    Down,
}

impl Health {
    /// `up`, `degraded` or `down`.
    pub fn name(self) -> &'static str {
        match self {
            Health::Up => "up",
            Health::Degraded => "degraded",
            Health::Down => "down",
        }
    }

    /// The state of a poll that read `good` of `total` values.
    pub fn of(good: usize, total: usize) -> Health {
        if total > 0 && good == total {
            Health::Up
        } else if good > 0 {
            Health::Degraded
        } else {
            Health::Down
        }
    }
}

/// A failure worth reporting.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Problem {
    /// The cause: `ModbusException`, `ModbusTimeout`, `ModbusUnreachable`
    /// or `ModbusLinkError`.
    pub kind: EventKind,
    /// What failed, e.g. `holding 40070+50: exception 0x02 (...)`.
    pub detail: String,
}

/// One poll, as the health tracker sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PollOutcome {
    /// Values configured (channels of the frame).
    pub total: usize,
    /// Values read (not unavailable).
    pub good: usize,
    /// Names of the unavailable values, in map order.
    pub unavailable: Vec<String>,
    /// The poll's failures, in request order.
    pub problems: Vec<Problem>,
}

/// A change worth one event and one log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    /// State before (`None`: first poll since start).
    pub from: Option<Health>,
    /// State now.
    pub to: Health,
    /// The event to record.
    pub event: Event,
}

/// Per-device health across polls (see the module doc).
#[derive(Debug, Clone, Default)]
pub struct HealthTracker {
    state: Option<Health>,
    since_ms: u64,
    problems: Vec<Problem>,
    unavailable: Vec<String>,
}

impl HealthTracker {
    /// A tracker that has seen no poll.
    pub fn new() -> Self {
        Self::default()
    }

    /// The current state and since when (gateway ms).
    pub fn state(&self) -> Option<(Health, u64)> {
        self.state.map(|s| (s, self.since_ms))
    }

    /// Takes one poll's outcome at `now_ms`.
    pub fn on_poll(
        &mut self,
        device: &DeviceId,
        now_ms: u64,
        outcome: &PollOutcome,
    ) -> Option<Transition> {
        let to = Health::of(outcome.good, outcome.total);
        let from = self.state;
        let same_state = from == Some(to);
        let same_failures =
            self.problems == outcome.problems && self.unavailable == outcome.unavailable;
        let was_since = self.since_ms;
        if !same_state {
            self.since_ms = now_ms;
        }
        self.state = Some(to);
        self.problems = outcome.problems.clone();
        self.unavailable = outcome.unavailable.clone();
        if same_state && (to == Health::Up || same_failures) {
            return None;
        }
        if from.is_none() && to == Health::Up {
            return None;
        }
        let problems = outcome
            .problems
            .iter()
            .map(|p| p.detail.as_str())
            .collect::<Vec<_>>()
            .join("; ");
        let (kind, detail) = match to {
            Health::Up => (
                EventKind::ModbusRecovered,
                format!(
                    "up: all {} values answered again after {} s {}",
                    outcome.total,
                    now_ms.saturating_sub(was_since) / 1000,
                    from.map_or("unknown", Health::name)
                ),
            ),
            Health::Degraded => (
                outcome
                    .problems
                    .first()
                    .map_or(EventKind::ModbusException, |p| p.kind),
                format!(
                    "degraded: {} of {} values answered; unavailable: {}{}{}",
                    outcome.good,
                    outcome.total,
                    outcome.unavailable.join(", "),
                    if problems.is_empty() { "" } else { "; " },
                    problems
                ),
            ),
            Health::Down => (
                outcome
                    .problems
                    .first()
                    .map_or(EventKind::ModbusException, |p| p.kind),
                format!(
                    "down: no value answered{}{}",
                    if problems.is_empty() { "" } else { ": " },
                    problems
                ),
            ),
        };
        Some(Transition {
            from,
            to,
            event: Event {
                time_ms: now_ms,
                kind,
                device: Some(device.clone()),
                seqs: None,
                detail,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev() -> DeviceId {
        DeviceId::new("meter-1").expect("valid")
    }

    fn outcome(good: usize, total: usize, problems: &[(EventKind, &str)]) -> PollOutcome {
        PollOutcome {
            total,
            good,
            unavailable: (good..total).map(|i| format!("v{i}")).collect(),
            problems: problems
                .iter()
                .map(|(kind, detail)| Problem {
                    kind: *kind,
                    detail: (*detail).to_string(),
                })
                .collect(),
        }
    }

    #[test]
    fn six_of_eight_values_is_degraded_not_down() {
        assert_eq!(Health::of(6, 8), Health::Degraded);
        assert_eq!(Health::of(0, 8), Health::Down);
        assert_eq!(Health::of(8, 8), Health::Up);
        assert_eq!(Health::of(0, 0), Health::Down);
    }

    #[test]
    fn a_steady_failure_costs_one_event_and_recovery_one_more() {
        let mut h = HealthTracker::new();
        let x = (EventKind::ModbusException, "holding 200+1: exception 0x02");
        assert_eq!(h.on_poll(&dev(), 0, &outcome(8, 8, &[])), None);
        let t = h
            .on_poll(&dev(), 10_000, &outcome(6, 8, &[x]))
            .expect("up -> degraded");
        assert_eq!((t.from, t.to), (Some(Health::Up), Health::Degraded));
        assert_eq!(t.event.kind, EventKind::ModbusException);
        assert!(
            t.event.detail.starts_with(
                "degraded: 6 of 8 values answered; unavailable: v6, v7; holding 200+1"
            ),
            "{}",
            t.event.detail
        );
        for i in 2..100 {
            assert_eq!(h.on_poll(&dev(), i * 10_000, &outcome(6, 8, &[x])), None);
        }
        let t = h
            .on_poll(&dev(), 1_000_000, &outcome(8, 8, &[]))
            .expect("degraded -> up");
        assert_eq!(t.event.kind, EventKind::ModbusRecovered);
        assert_eq!(
            t.event.detail,
            "up: all 8 values answered again after 990 s degraded"
        );
        assert_eq!(h.state(), Some((Health::Up, 1_000_000)));
    }

    #[test]
    fn a_new_cause_while_down_is_a_transition_with_its_kind() {
        let mut h = HealthTracker::new();
        let t = h
            .on_poll(
                &dev(),
                0,
                &outcome(0, 2, &[(EventKind::ModbusTimeout, "timeout: 1s")]),
            )
            .expect("first poll down");
        assert_eq!((t.from, t.to), (None, Health::Down));
        assert_eq!(t.event.kind, EventKind::ModbusTimeout);
        assert_eq!(t.event.detail, "down: no value answered: timeout: 1s");
        let t = h
            .on_poll(
                &dev(),
                1000,
                &outcome(
                    0,
                    2,
                    &[(EventKind::ModbusUnreachable, "connection refused")],
                ),
            )
            .expect("cause changed");
        assert_eq!(t.event.kind, EventKind::ModbusUnreachable);
        assert_eq!(h.state(), Some((Health::Down, 0)), "still down since 0");
    }
}
