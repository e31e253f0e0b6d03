//! # mrv-gateway-upload: reports to the MRV backend
//!
//! Upload: signed reports from the [`mrv_gateway_report::store::ReportStore`] to
//! the MRV backend, idempotently, strictly in chain order, over HTTPS.
//!
//! - [`config`]: the `[upload]` section ([`config::UploadSection`]) and its
//!   validated form ([`config::UploadConfig`]);
//! - [`classify`]: what an HTTP answer (or its absence) means (pure);
//! - [`machine`]: the upload state machine: batches, backoff with full
//!   jitter, `Retry-After`, permanent refusals (pure, time passed in);
//! - [`http`]: the reqwest/rustls uplink and the batch wire format, over
//!   one or several backend endpoints (failover);
//! - [`receipts`]: the backend log's receipts kept beside the reports, and
//!   the consistency watch over its checkpoints;
//! - [`backlog`]: the backlog alarm (reports, bytes, age; pure);
//! - [`task`]: [`task::run_upload_task`], the thin driver that does the I/O
//!   and publishes [`task::UploadStatus`].
//!
//! A report is marked delivered only after the backend confirmed it;
//! delivered reports stay on the gateway for `keep_delivered_days`; buffered
//! readings become prunable only when every report covering them is
//! delivered. A refused report is never deleted or skipped: the chain waits
//! at it and an alarm is raised.

pub mod backlog;
pub mod classify;
pub mod config;
pub mod http;
pub mod machine;
pub mod receipts;
pub mod task;

pub use task::{UploadContext, UploadStatus, run_upload_task};
