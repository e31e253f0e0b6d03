//! Diagnostics state of the Modbus pollers: per device the last poll, the
//! last success, the last error and error counts by kind.
//!
//! [`ModbusStatus`] is a cheap clonable handle; pollers write it, the
//! diagnostics API reads [`ModbusStatus::snapshot`]. It never feeds the data
//! path (readings travel as frames, failures as events).

use mrv_shared::ids::DeviceId;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// One device's state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DeviceStatus {
    /// Gateway time of the last poll (Unix ms).
    pub last_poll_ms: Option<u64>,
    /// Gateway time of the last poll without any failure.
    pub last_success_ms: Option<u64>,
    /// The last failure, as text (exception with its meaning, timeout, ...).
    pub last_error: Option<String>,
    /// Polls done.
    pub polls: u64,
    /// Polls with at least one failure, by kind (`exception`, `timeout`,
    /// `link`, `discovery`).
    pub errors: BTreeMap<String, u64>,
    /// Read requests per poll in the current plan.
    pub requests_per_poll: usize,
}

/// Shared handle to every device's [`DeviceStatus`].
#[derive(Debug, Clone, Default)]
pub struct ModbusStatus(Arc<Mutex<BTreeMap<DeviceId, DeviceStatus>>>);

impl ModbusStatus {
    /// An empty status.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records one poll; `error` is the first failure's text and kind label.
    pub fn record_poll(
        &self,
        device: &DeviceId,
        now_ms: u64,
        error: Option<(&str, &'static str)>,
        requests: usize,
    ) {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let s = map.entry(device.clone()).or_default();
        s.last_poll_ms = Some(now_ms);
        s.polls += 1;
        if requests > 0 {
            s.requests_per_poll = requests;
        }
        match error {
            None => s.last_success_ms = Some(now_ms),
            Some((text, kind)) => {
                s.last_error = Some(text.to_string());
                *s.errors.entry(kind.to_string()).or_default() += 1;
            }
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

    #[test]
    fn polls_and_errors_are_counted_per_kind() {
        let s = ModbusStatus::new();
        let d = DeviceId::new("m1").expect("valid");
        s.record_poll(&d, 10, None, 2);
        s.record_poll(&d, 20, Some(("timeout", "timeout")), 2);
        s.record_poll(&d, 30, Some(("timeout", "timeout")), 2);
        let st = s.device(&d).expect("recorded");
        assert_eq!(st.polls, 3);
        assert_eq!(st.last_success_ms, Some(10));
        assert_eq!(st.last_poll_ms, Some(30));
        assert_eq!(st.errors.get("timeout"), Some(&2));
        assert_eq!(st.requests_per_poll, 2);
    }
}
