//! Bounds on what one client, or all of them together, can make the
//! receiver hold or wait for. With these the receiver's memory is bounded
//! whatever arrives: at most `max_connections` connections (more wait in
//! the kernel's accept queue), each with at most `max_header_bytes` of
//! request head; bodies in flight together within `body_budget_bytes`;
//! at most `verify_slots` reports decoded and verified at once, each at
//! most `max_report_bytes`.
//!
//! | threat | bound |
//! |---|---|
//! | slowloris (headers dribbled, or an idle connection) | `header_timeout` closes it; `max_connections` caps how many exist |
//! | slow body | `body_timeout`, answered `408` |
//! | huge body (e.g. 1 GB) | `Content-Length` over `max_body_bytes`: `413` before reading; chunked: cut at the limit, `413` |
//! | gzip bomb | decoded one report at a time; a report over `max_report_bytes` or a batch over `max_decoded_bytes` decoded: `413` |
//! | many large uploads at once | `body_budget_bytes`, waited for at most `budget_wait`, then `503` with `Retry-After` |
//! | many connections (e.g. 10,000) | `max_connections`; each idle one closed after `header_timeout` |

use std::time::Duration;

/// The bounds (see the module doc).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest upload body on the wire.
    pub max_body_bytes: u64,
    /// Largest single report, decoded.
    pub max_report_bytes: u64,
    /// Largest batch, decoded (all its reports).
    pub max_decoded_bytes: u64,
    /// Longest time to receive a whole body.
    pub body_timeout: Duration,
    /// Longest time to receive a request head, and longest idle time
    /// between requests on a kept-alive connection.
    pub header_timeout: Duration,
    /// Largest request head (HTTP/1 read buffer), bytes (at least 8192).
    pub max_header_bytes: usize,
    /// Most connections served at once.
    pub max_connections: usize,
    /// Memory all upload bodies in flight may hold together, bytes.
    pub body_budget_bytes: u64,
    /// How long an upload waits for body budget before `503`.
    pub budget_wait: Duration,
    /// `Retry-After` of a `503 busy`, seconds.
    pub busy_retry_after_secs: u64,
    /// Reports verified at once.
    pub verify_slots: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_body_bytes: 64 << 20,
            max_report_bytes: 64 << 20,
            max_decoded_bytes: 256 << 20,
            body_timeout: Duration::from_secs(120),
            header_timeout: Duration::from_secs(30),
            max_header_bytes: 16 * 1024,
            max_connections: 4096,
            body_budget_bytes: 256 << 20,
            budget_wait: Duration::from_secs(10),
            busy_retry_after_secs: 5,
            verify_slots: std::thread::available_parallelism().map_or(2, |n| n.get()),
        }
    }
}
