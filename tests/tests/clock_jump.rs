//! Clock jumps: the gateway runs on a wall clock that is the system clock
//! plus an offset the test steps by +1 h and back (the system clock itself
//! is shared with everything else on the machine and is not touched); each
//! step is recorded as one `clock_jump` event with the step in ms, and
//! time passing normally records nothing.

use mrv_e2e::TestSite;
use mrv_gateway::clock::{Clock, SystemClock};
use mrv_shared::event::EventKind;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

/// The system clock plus a step the test sets; it can jump like the real one.
#[derive(Default)]
struct SteppedClock(AtomicI64);

impl Clock for SteppedClock {
    fn now_ms(&self) -> u64 {
        SystemClock
            .now_ms()
            .saturating_add_signed(self.0.load(Ordering::SeqCst))
    }
    fn can_jump(&self) -> bool {
        true
    }
}

fn jumps(b: &mrv_gateway::buffer::Buffer) -> Vec<String> {
    b.events_after(None)
        .map(|e| e.expect("event reads").1)
        .filter(|e| e.kind == EventKind::ClockJump)
        .map(|e| e.detail)
        .collect()
}

async fn until_jumps(b: &mrv_gateway::buffer::Buffer, n: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let j = jumps(b);
        if j.len() >= n {
            return j;
        }
        assert!(
            Instant::now() < deadline,
            "{n} clock jumps expected, got {j:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn step_of(detail: &str) -> i64 {
    detail
        .strip_prefix("wall clock stepped by ")
        .and_then(|r| r.strip_suffix(" ms"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unexpected detail {detail:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_of_the_wall_clock_forward_and_back_is_recorded_as_two_clock_jump_events() {
    let site = TestSite::new(1, "");
    let clock = Arc::new(SteppedClock::default());
    let gw = mrv_gateway::runtime::start(site.config(), clock.clone())
        .await
        .expect("gateway starts");
    // Three ticks of time passing normally: nothing.
    tokio::time::sleep(Duration::from_millis(3_200)).await;
    assert_eq!(jumps(&gw.state.buffer), Vec::<String>::new());
    clock.0.store(3_600_000, Ordering::SeqCst);
    let forward = until_jumps(&gw.state.buffer, 1).await;
    clock.0.store(0, Ordering::SeqCst);
    let both = until_jumps(&gw.state.buffer, 2).await;
    assert_eq!(both[0], forward[0]);
    let (f, b) = (step_of(&both[0]), step_of(&both[1]));
    // The step is measured against the monotonic clock between two ticks.
    assert!((f - 3_600_000).abs() < 500, "forward step {f}");
    assert!((b + 3_600_000).abs() < 500, "backward step {b}");
    tokio::time::sleep(Duration::from_millis(2_200)).await;
    assert_eq!(jumps(&gw.state.buffer).len(), 2, "one event per step");
    gw.shutdown().await;
    eprintln!("clock stepped +1 h and back: events {both:?}");
}
