//! The upload state machine (pure, time passed in): which reports to send
//! next, when, and what a classified answer means for delivery.
//!
//! The task ([`super::task`]) asks [`UploadMachine::next`] what to do, does
//! the I/O, classifies the answer ([`super::classify`]) and feeds the
//! [`Outcome`] back through [`UploadMachine::on_outcome`], which returns the
//! [`Action`]s to carry out (mark delivered, raise or clear an alarm).
//!
//! ## Invariants
//!
//! - **Strictly in chain order.** A batch is always `delivered_upto + 1 ..=
//!   min(head, delivered_upto + batch_limit)`; nothing after a report is
//!   sent before the backend confirmed it.
//! - **Delivered only when confirmed.** `MarkDelivered(n)` is emitted only
//!   for an `n` the backend confirmed (accepted or "already have it"), and
//!   never goes backwards.
//! - **A rejected report is never skipped.** A permanent rejection blocks
//!   the chain at that report: it raises an alarm once, is kept, and is
//!   offered again every `backoff_max_ms` (an operator may fix the
//!   backend, e.g. register the key), until accepted.
//! - **Backoff.** After `n` consecutive transient failures the next attempt
//!   waits a uniformly random time in `[0, min(max, base * 2^(n-1))]`
//!   (full jitter; the randomness is passed in), or the backend's
//!   `Retry-After` when it gave one (capped at [`MAX_RETRY_AFTER_MS`]).
//!   Any progress resets the count.
//! - `413` halves the batch limit (down to 1; a single report that is too
//!   large is a permanent rejection).
//! - **Failover.** With several backend endpoints (stateless receivers of
//!   one backend), a transient failure moves to the next endpoint and
//!   retries at once, until every endpoint failed in a row; only then does
//!   the machine back off (and the exponent counts such rounds, not single
//!   failures). Success sticks to the endpoint that answered. Nothing else
//!   changes: the batch is the same, so a report stored by an endpoint that
//!   died before answering is answered `duplicate` by the next one.

use super::classify::{Outcome, Verdict};

/// Longest `Retry-After` honoured (a backend asking for more gets this).
pub const MAX_RETRY_AFTER_MS: u64 = 6 * 3600 * 1000;

/// Tuning of the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MachineConfig {
    /// Most reports per batch.
    pub batch_size: usize,
    /// Backoff base, ms.
    pub backoff_base_ms: u64,
    /// Backoff ceiling, ms (also the re-offer interval of a rejected report).
    pub backoff_max_ms: u64,
    /// Number of backend endpoints to fail over between (at least 1).
    pub endpoints: usize,
}

/// A run of consecutive reports to upload in one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Batch {
    /// First seq.
    pub from: u64,
    /// Last seq (inclusive).
    pub to: u64,
}

impl Batch {
    /// The seqs, in order.
    pub fn seqs(&self) -> Vec<u64> {
        (self.from..=self.to).collect()
    }
    /// Number of reports.
    pub fn len(&self) -> usize {
        (self.to + 1 - self.from) as usize
    }
    /// Never true (a batch has at least one report).
    pub fn is_empty(&self) -> bool {
        false
    }
}

/// What the task should do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Upload this batch.
    Send(Batch),
    /// Nothing before this time (Unix ms).
    WaitUntil(u64),
    /// Nothing to upload until new reports arrive.
    Idle,
    /// A batch is in flight; wait for its outcome.
    Busy,
}

/// A report the backend refused, blocking the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// The report.
    pub seq: u64,
    /// HTTP status.
    pub status: u16,
    /// Stable short reason.
    pub reason: String,
    /// Detail.
    pub detail: String,
    /// First refused at (Unix ms).
    pub since_ms: u64,
    /// Times refused.
    pub count: u64,
}

/// What the task must carry out after an outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Every report up to this seq is confirmed: record it durably, move
    /// the buffer's delivered cursor, allow pruning.
    MarkDelivered(u64),
    /// A report was refused for the first time: log at error level, count
    /// it in metrics, show it in diagnostics.
    Alarm(Rejection),
    /// A previously refused report was accepted after all.
    AlarmCleared(u64),
    /// Next attempt not before this time; `why` is the failure.
    RetryAt {
        /// Unix ms.
        at_ms: u64,
        /// The failure.
        why: String,
    },
}

/// The upload state machine (see the module doc).
#[derive(Debug, Clone)]
pub struct UploadMachine {
    cfg: MachineConfig,
    delivered_upto: u64,
    head: u64,
    batch_limit: usize,
    in_flight: Option<Batch>,
    failures: u32,
    not_before_ms: u64,
    rejected: Option<Rejection>,
    last_error: Option<String>,
    endpoint: usize,
    failed_in_round: usize,
    rounds_failed: u32,
}

impl UploadMachine {
    /// A machine starting from the store's `delivered_upto` and `head`.
    pub fn new(cfg: MachineConfig, delivered_upto: u64, head: u64) -> UploadMachine {
        UploadMachine {
            batch_limit: cfg.batch_size.max(1),
            cfg,
            delivered_upto,
            head: head.max(delivered_upto),
            in_flight: None,
            failures: 0,
            not_before_ms: 0,
            rejected: None,
            last_error: None,
            endpoint: 0,
            failed_in_round: 0,
            rounds_failed: 0,
        }
    }

    /// The endpoint (index into the configured URLs) to send to.
    pub fn endpoint(&self) -> usize {
        self.endpoint
    }

    /// New reports were stored: the head is now `head`.
    pub fn set_head(&mut self, head: u64) {
        self.head = self.head.max(head);
    }

    /// Highest confirmed seq.
    pub fn delivered_upto(&self) -> u64 {
        self.delivered_upto
    }

    /// Reports waiting for confirmation.
    pub fn backlog(&self) -> u64 {
        self.head - self.delivered_upto
    }

    /// The report blocking the chain, if one was refused.
    pub fn rejected(&self) -> Option<&Rejection> {
        self.rejected.as_ref()
    }

    /// The last failure, cleared by progress.
    pub fn last_error(&self) -> Option<&str> {
        self.last_error.as_deref()
    }

    /// When the next attempt may start (0: now), while there is a backlog.
    pub fn not_before_ms(&self) -> u64 {
        self.not_before_ms
    }

    /// Consecutive transient failures.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// What to do at `now_ms`. `Send` marks the batch in flight until
    /// [`UploadMachine::on_outcome`].
    pub fn next(&mut self, now_ms: u64) -> Next {
        if self.in_flight.is_some() {
            return Next::Busy;
        }
        if self.head <= self.delivered_upto {
            return Next::Idle;
        }
        if now_ms < self.not_before_ms {
            return Next::WaitUntil(self.not_before_ms);
        }
        let from = self.delivered_upto + 1;
        let to = self.head.min(self.delivered_upto + self.batch_limit as u64);
        let b = Batch { from, to };
        self.in_flight = Some(b);
        Next::Send(b)
    }

    /// Feeds the outcome of the in-flight batch. `random` is a uniformly
    /// random number (the jitter source).
    pub fn on_outcome(&mut self, outcome: Outcome, now_ms: u64, random: u64) -> Vec<Action> {
        let Some(batch) = self.in_flight.take() else {
            return Vec::new();
        };
        let mut actions = Vec::new();
        if let Some(upto) = outcome.confirmed_upto
            && upto > self.delivered_upto
            && upto <= batch.to
        {
            self.delivered_upto = upto;
            self.failures = 0;
            self.failed_in_round = 0;
            self.rounds_failed = 0;
            self.last_error = None;
            actions.push(Action::MarkDelivered(upto));
            if let Some(r) = &self.rejected
                && r.seq <= upto
            {
                actions.push(Action::AlarmCleared(r.seq));
                self.rejected = None;
            }
        }
        match outcome.verdict {
            Verdict::Done => {
                self.not_before_ms = 0;
                self.failed_in_round = 0;
                self.rounds_failed = 0;
                if self.batch_limit < self.cfg.batch_size {
                    // Grow back gradually after a 413.
                    self.batch_limit = (self.batch_limit * 2).min(self.cfg.batch_size);
                }
            }
            Verdict::Retry {
                retry_after_ms,
                why,
            } => {
                self.failures = self.failures.saturating_add(1);
                let endpoints = self.cfg.endpoints.max(1);
                self.endpoint = (self.endpoint + 1) % endpoints;
                self.failed_in_round += 1;
                let delay = if self.failed_in_round < endpoints {
                    // Another endpoint has not been tried yet: at once.
                    0
                } else {
                    self.failed_in_round = 0;
                    self.rounds_failed = self.rounds_failed.saturating_add(1);
                    match retry_after_ms {
                        Some(ra) => ra.min(MAX_RETRY_AFTER_MS),
                        None => self.jittered(random),
                    }
                };
                self.not_before_ms = now_ms.saturating_add(delay);
                self.last_error = Some(why.clone());
                actions.push(Action::RetryAt {
                    at_ms: self.not_before_ms,
                    why,
                });
            }
            Verdict::TooLarge if self.batch_limit > 1 => {
                let sent = batch.len().min(self.batch_limit);
                self.batch_limit = (sent / 2).max(1);
                self.not_before_ms = 0;
            }
            Verdict::TooLarge => {
                self.reject(
                    Verdict::Rejected {
                        seq: self.delivered_upto + 1,
                        status: 413,
                        reason: String::from("too_large"),
                        detail: String::from("a single report exceeds the backend's limit"),
                    },
                    now_ms,
                    &mut actions,
                );
            }
            v @ Verdict::Rejected { .. } => self.reject(v, now_ms, &mut actions),
        }
        actions
    }

    fn reject(&mut self, v: Verdict, now_ms: u64, actions: &mut Vec<Action>) {
        let Verdict::Rejected {
            seq,
            status,
            reason,
            detail,
        } = v
        else {
            return;
        };
        // A rejection always concerns the first unconfirmed report (the
        // chain cannot move past it); anything else is the backend's bug,
        // and still blocks here.
        let seq = if seq == self.delivered_upto + 1 {
            seq
        } else {
            self.delivered_upto + 1
        };
        match &mut self.rejected {
            Some(r) if r.seq == seq && r.reason == reason => {
                r.count += 1;
                r.detail = detail.clone();
            }
            _ => {
                let r = Rejection {
                    seq,
                    status,
                    reason: reason.clone(),
                    detail: detail.clone(),
                    since_ms: now_ms,
                    count: 1,
                };
                actions.push(Action::Alarm(r.clone()));
                self.rejected = Some(r);
            }
        }
        self.not_before_ms = now_ms.saturating_add(self.cfg.backoff_max_ms);
        let why = format!("report {seq} refused: {reason} (HTTP {status}): {detail}");
        self.last_error = Some(why.clone());
        actions.push(Action::RetryAt {
            at_ms: self.not_before_ms,
            why,
        });
    }

    fn jittered(&self, random: u64) -> u64 {
        let exp = self.rounds_failed.saturating_sub(1).min(40);
        let cap = self
            .cfg
            .backoff_base_ms
            .saturating_mul(1u64 << exp)
            .min(self.cfg.backoff_max_ms);
        random % (cap + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::{TransportFailure, classify_transport};
    use proptest::prelude::*;

    const CFG: MachineConfig = MachineConfig {
        batch_size: 3,
        backoff_base_ms: 100,
        backoff_max_ms: 10_000,
        endpoints: 1,
    };

    fn done(upto: u64) -> Outcome {
        Outcome {
            confirmed_upto: Some(upto),
            verdict: Verdict::Done,
        }
    }

    #[test]
    fn a_backlog_is_drained_in_batches_in_chain_order() {
        let mut m = UploadMachine::new(CFG, 0, 7);
        assert_eq!(m.next(0), Next::Send(Batch { from: 1, to: 3 }));
        assert_eq!(m.next(0), Next::Busy);
        assert_eq!(m.on_outcome(done(3), 0, 0), vec![Action::MarkDelivered(3)]);
        assert_eq!(m.next(0), Next::Send(Batch { from: 4, to: 6 }));
        m.on_outcome(done(6), 0, 0);
        assert_eq!(m.next(0), Next::Send(Batch { from: 7, to: 7 }));
        m.on_outcome(done(7), 0, 0);
        assert_eq!(m.next(0), Next::Idle);
        m.set_head(8);
        assert_eq!(m.next(0), Next::Send(Batch { from: 8, to: 8 }));
    }

    #[test]
    fn a_batch_sent_only_in_part_continues_where_it_stopped() {
        let mut m = UploadMachine::new(CFG, 0, 7);
        assert_eq!(m.next(0), Next::Send(Batch { from: 1, to: 3 }));
        // The task sent 1..=2 only (byte cap); both confirmed.
        assert_eq!(m.on_outcome(done(2), 0, 0), vec![Action::MarkDelivered(2)]);
        assert_eq!(m.next(0), Next::Send(Batch { from: 3, to: 5 }));
    }

    #[test]
    fn transient_failures_back_off_exponentially_with_full_jitter() {
        let mut m = UploadMachine::new(CFG, 0, 1);
        let mut caps = Vec::new();
        for _ in 0..10 {
            assert!(matches!(m.next(1_000_000), Next::Send(_)));
            // The largest random value shows the cap.
            m.on_outcome(
                classify_transport(TransportFailure::Connect, "refused"),
                1_000_000,
                u64::MAX - 1,
            );
            caps.push(m.not_before_ms() - 1_000_000);
            assert_eq!(m.next(1_000_000), Next::WaitUntil(m.not_before_ms()));
            m.not_before_ms = 0;
        }
        assert!(caps.iter().all(|&c| c <= 10_000), "{caps:?}");
        let mut m = UploadMachine::new(CFG, 0, 1);
        m.next(0);
        m.on_outcome(classify_transport(TransportFailure::Timeout, "t"), 0, 7);
        // 7 mod (cap 100 + 1).
        assert_eq!(m.not_before_ms(), 7);
    }

    #[test]
    fn retry_after_is_honoured() {
        let mut m = UploadMachine::new(CFG, 0, 2);
        m.next(0);
        let acts = m.on_outcome(
            Outcome {
                confirmed_upto: None,
                verdict: Verdict::Retry {
                    retry_after_ms: Some(5000),
                    why: String::from("503"),
                },
            },
            1000,
            0,
        );
        assert!(matches!(acts[0], Action::RetryAt { at_ms: 6000, .. }));
        assert_eq!(m.next(5999), Next::WaitUntil(6000));
        assert_eq!(m.next(6000), Next::Send(Batch { from: 1, to: 2 }));
    }

    #[test]
    fn a_refused_report_blocks_the_chain_alarms_once_and_is_offered_again() {
        let mut m = UploadMachine::new(CFG, 0, 5);
        m.next(0);
        let refuse = |seq| Outcome {
            confirmed_upto: Some(seq - 1),
            verdict: Verdict::Rejected {
                seq,
                status: 422,
                reason: String::from("bad_signature"),
                detail: String::new(),
            },
        };
        let acts = m.on_outcome(refuse(2), 0, 0);
        assert_eq!(acts[0], Action::MarkDelivered(1));
        assert!(matches!(&acts[1], Action::Alarm(r) if r.seq == 2));
        assert_eq!(m.next(1), Next::WaitUntil(10_000));
        assert_eq!(m.next(10_000), Next::Send(Batch { from: 2, to: 4 }));
        let acts = m.on_outcome(refuse(2), 10_000, 0);
        assert!(
            !acts.iter().any(|a| matches!(a, Action::Alarm(_))),
            "{acts:?}"
        );
        assert_eq!(m.rejected().map(|r| r.count), Some(2));
        assert_eq!(m.delivered_upto(), 1);
        m.next(20_000);
        let acts = m.on_outcome(done(4), 20_000, 0);
        assert_eq!(
            acts,
            vec![Action::MarkDelivered(4), Action::AlarmCleared(2)]
        );
        assert!(m.rejected().is_none());
    }

    #[test]
    fn a_failing_endpoint_is_left_for_the_next_at_once_and_backoff_waits_for_a_full_round() {
        let cfg = MachineConfig {
            endpoints: 3,
            ..CFG
        };
        let mut m = UploadMachine::new(cfg, 0, 4);
        let fail = || classify_transport(TransportFailure::Connect, "refused");
        assert_eq!(
            (m.next(0), m.endpoint()),
            (Next::Send(Batch { from: 1, to: 3 }), 0)
        );
        m.on_outcome(fail(), 0, u64::MAX - 1);
        // Same batch, next endpoint, no wait.
        assert_eq!(
            (m.next(0), m.endpoint()),
            (Next::Send(Batch { from: 1, to: 3 }), 1)
        );
        m.on_outcome(fail(), 0, u64::MAX - 1);
        assert_eq!(
            (m.next(0), m.endpoint()),
            (Next::Send(Batch { from: 1, to: 3 }), 2)
        );
        m.on_outcome(fail(), 0, u64::MAX - 1);
        // All three failed: back off (first round: up to the base).
        assert_eq!(m.next(0), Next::WaitUntil(m.not_before_ms()));
        assert!(
            (1..=100).contains(&m.not_before_ms()),
            "{}",
            m.not_before_ms()
        );
        assert_eq!(m.endpoint(), 0);
        // Endpoint 0 answers: it sticks.
        assert!(matches!(m.next(1_000), Next::Send(_)));
        assert_eq!(
            m.on_outcome(done(3), 1_000, 0),
            vec![Action::MarkDelivered(3)]
        );
        assert_eq!(
            (m.next(1_000), m.endpoint()),
            (Next::Send(Batch { from: 4, to: 4 }), 0)
        );
        // 503 with Retry-After on one endpoint: try the next one first.
        let busy = Outcome {
            confirmed_upto: None,
            verdict: Verdict::Retry {
                retry_after_ms: Some(60_000),
                why: String::from("503"),
            },
        };
        m.on_outcome(busy, 1_000, 0);
        assert_eq!(
            (m.next(1_000), m.endpoint()),
            (Next::Send(Batch { from: 4, to: 4 }), 1)
        );
    }

    #[test]
    fn too_large_halves_the_batch_and_a_single_report_too_large_is_refused() {
        let cfg = MachineConfig {
            batch_size: 8,
            ..CFG
        };
        let mut m = UploadMachine::new(cfg, 0, 20);
        let tl = || Outcome {
            confirmed_upto: None,
            verdict: Verdict::TooLarge,
        };
        assert_eq!(m.next(0), Next::Send(Batch { from: 1, to: 8 }));
        m.on_outcome(tl(), 0, 0);
        assert_eq!(m.next(0), Next::Send(Batch { from: 1, to: 4 }));
        m.on_outcome(tl(), 0, 0);
        m.next(0);
        m.on_outcome(tl(), 0, 0);
        assert_eq!(m.next(0), Next::Send(Batch { from: 1, to: 1 }));
        let acts = m.on_outcome(tl(), 0, 0);
        assert!(matches!(&acts[0], Action::Alarm(r) if r.status == 413 && r.seq == 1));
    }

    /// A backend model: stores in order, answers duplicates, may fail in
    /// each of the ways the network and a server fail.
    #[derive(Debug, Clone)]
    enum Fault {
        None,
        RefusedBeforeStore,
        StoredThenLost,
        StoredHalfThen503,
        Unavailable(u64),
        Refuse,
    }

    fn fault() -> impl Strategy<Value = Fault> {
        prop_oneof![
            4 => Just(Fault::None),
            1 => Just(Fault::RefusedBeforeStore),
            1 => Just(Fault::StoredThenLost),
            1 => Just(Fault::StoredHalfThen503),
            1 => (0u64..20_000).prop_map(Fault::Unavailable),
            1 => Just(Fault::Refuse),
        ]
    }

    proptest! {
        #[test]
        fn against_a_faulty_backend_every_report_is_stored_once_in_order_and_delivery_never_runs_ahead(
            faults in proptest::collection::vec((fault(), any::<u64>(), 0u64..3), 1..80),
            batch in 1usize..6,
            endpoints in 1usize..4,
        ) {
            let cfg = MachineConfig { batch_size: batch, backoff_base_ms: 10, backoff_max_ms: 5000, endpoints };
            let mut head = 2u64;
            let mut m = UploadMachine::new(cfg, 0, head);
            let mut stored: Vec<u64> = Vec::new();
            let mut now = 0u64;
            let mut durable_delivered = 0u64;
            let mut steps = faults.into_iter().chain(std::iter::repeat_n((Fault::None, 0, 0), 400));
            let mut alarms = 0;
            for _ in 0..1000 {
                let Some((f, rnd, new)) = steps.next() else { break };
                head += new;
                m.set_head(head);
                match m.next(now) {
                    Next::Idle => { if new == 0 && stored.len() as u64 == head { break } continue; }
                    Next::Busy => prop_assert!(false, "nothing in flight between steps"),
                    Next::WaitUntil(t) => { prop_assert!(t > now); now = t; continue; }
                    Next::Send(b) => {
                        prop_assert_eq!(b.from, m.delivered_upto() + 1);
                        prop_assert!(b.len() <= batch);
                        prop_assert!(b.to <= head);
                        let store = |stored: &mut Vec<u64>, upto: u64| {
                            for s in b.from..=upto {
                                if !stored.contains(&s) {
                                    assert_eq!(s, stored.len() as u64 + 1, "stored in order");
                                    stored.push(s);
                                }
                            }
                        };
                        let outcome = match f {
                            Fault::None => { store(&mut stored, b.to); done(b.to) }
                            Fault::RefusedBeforeStore => classify_transport(TransportFailure::Connect, "x"),
                            Fault::StoredThenLost => { store(&mut stored, b.to); classify_transport(TransportFailure::Timeout, "x") }
                            Fault::StoredHalfThen503 => {
                                let mid = b.from + (b.len() as u64 - 1) / 2;
                                store(&mut stored, mid);
                                Outcome { confirmed_upto: Some(mid), verdict: Verdict::Retry { retry_after_ms: None, why: String::from("503") } }
                            }
                            Fault::Unavailable(ms) => Outcome { confirmed_upto: None, verdict: Verdict::Retry { retry_after_ms: Some(ms), why: String::from("503") } },
                            Fault::Refuse => Outcome { confirmed_upto: None, verdict: Verdict::Rejected { seq: b.from, status: 422, reason: String::from("r"), detail: String::new() } },
                        };
                        for a in m.on_outcome(outcome, now, rnd) {
                            match a {
                                Action::MarkDelivered(n) => {
                                    prop_assert!(n > durable_delivered);
                                    prop_assert!(stored.len() as u64 >= n, "delivered only what the backend holds");
                                    durable_delivered = n;
                                }
                                Action::Alarm(_) => alarms += 1,
                                _ => {}
                            }
                        }
                        now += 1;
                    }
                }
            }
            prop_assert_eq!(&stored, &(1..=stored.len() as u64).collect::<Vec<_>>());
            prop_assert_eq!(durable_delivered, head, "everything delivered once faults stop (alarms: {})", alarms);
        }
    }
}
