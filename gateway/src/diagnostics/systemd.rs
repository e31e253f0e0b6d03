//! systemd integration (`Type=notify`, `WatchdogSec=`): readiness and
//! watchdog pings through `sd_notify`.
//!
//! Both are harmless without systemd: with no `NOTIFY_SOCKET` the calls do
//! nothing. The watchdog pings at half the interval systemd asks for
//! (`WATCHDOG_USEC`), and only while the gateway is healthy: each ping is
//! preceded by a liveness check (the buffer answers its stats, i.e. its lock
//! is not stuck), so a wedged gateway stops pinging and systemd restarts it.

use crate::runtime::GatewayState;
use std::time::Duration;
use tokio::sync::watch;

/// Tells systemd the gateway is ready (`READY=1` and a status line).
pub fn notify_ready(status: &str) {
    let r = sd_notify::notify(
        false,
        &[
            sd_notify::NotifyState::Ready,
            sd_notify::NotifyState::Status(status),
        ],
    );
    if let Err(e) = r {
        tracing::warn!(error = %e, "could not notify systemd of readiness");
    }
}

/// Tells systemd the gateway is stopping.
pub fn notify_stopping() {
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
}

/// The ping interval systemd asks for (half of `WATCHDOG_USEC`), if any.
pub fn watchdog_interval() -> Option<Duration> {
    watchdog_interval_from(
        std::env::var("WATCHDOG_USEC").ok().as_deref(),
        std::env::var("WATCHDOG_PID").ok().as_deref(),
        std::process::id(),
    )
}

/// As `sd_watchdog_enabled(3)`: `WATCHDOG_USEC` must be a positive number;
/// when `WATCHDOG_PID` is set it must be this process.
pub fn watchdog_interval_from(usec: Option<&str>, pid: Option<&str>, me: u32) -> Option<Duration> {
    let usec: u64 = usec?.trim().parse().ok().filter(|u| *u > 0)?;
    if let Some(p) = pid
        && p.trim().parse::<u32>().ok() != Some(me)
    {
        return None;
    }
    Some(Duration::from_micros(usec / 2).max(Duration::from_millis(100)))
}

/// Pings the watchdog until shutdown while the gateway is alive. Returns at
/// once when systemd asked for no watchdog.
pub async fn run_watchdog(state: GatewayState, mut shutdown: watch::Receiver<bool>) {
    let Some(every) = watchdog_interval() else {
        return;
    };
    tracing::info!(
        interval_ms = every.as_millis() as u64,
        "systemd watchdog enabled"
    );
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => {
                if *shutdown.borrow() { return; }
            }
        }
        let buffer = state.buffer.clone();
        let alive =
            tokio::time::timeout(every, tokio::task::spawn_blocking(move || buffer.stats()))
                .await
                .is_ok_and(|r| r.is_ok());
        if alive {
            let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Watchdog]);
        } else {
            tracing::error!("buffer did not answer; withholding the systemd watchdog ping");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watchdog_interval_is_half_the_usec_and_respects_the_pid() {
        let d = |u, p| watchdog_interval_from(u, p, 42);
        assert_eq!(d(Some("30000000"), None), Some(Duration::from_secs(15)));
        assert_eq!(
            d(Some("30000000"), Some("42")),
            Some(Duration::from_secs(15))
        );
        assert_eq!(d(Some("30000000"), Some("43")), None);
        assert_eq!(d(Some("0"), None), None);
        assert_eq!(d(Some("x"), None), None);
        assert_eq!(d(None, None), None);
        assert_eq!(d(Some("1000"), None), Some(Duration::from_millis(100)));
    }
}
