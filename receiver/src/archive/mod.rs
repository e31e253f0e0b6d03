//! The archive: every accepted report stored verbatim and durably, each
//! gateway's chain state, the equivocation flags with their evidence, and
//! the public log of accepted reports. One interface ([`Archive`]), two
//! stores with the same contract (tested by the same tests,
//! `receiver/tests/archive_contract.rs`):
//!
//! - [`file::FileArchive`]: files under a data directory, one process (the
//!   embedded default: demo, pilot, single site);
//! - [`postgres::PgArchive`]: PostgreSQL, any number of receiver
//!   processes on one database.
//!
//! ## Contract
//!
//! - **Durable before acknowledged.** [`Archive::commit`] returns
//!   `accepted` only once the report, the new chain head and its log entry
//!   are durable together; a crash leaves either all of them or none (the
//!   file archive completes the log at the next open).
//! - **One report per (gateway, seq), forever.** The same bytes again are
//!   `duplicate` (with a receipt); other bytes for a stored seq are an
//!   *equivocation*: rejected, flagged with both hashes, the offered bytes
//!   kept as evidence.
//! - **Chains are gap-free from seq 1**: [`decision::decide`] (sequence,
//!   previous hash, period, counter baselines), after the report was
//!   verified ([`crate::verification`]).
//! - **A key signs for one gateway**: the first accepted report signed with
//!   a key id binds it (`kid_gateway_mismatch` otherwise).
//! - **Serialised per gateway.** The decision and the write happen under an
//!   exclusion per gateway (a mutex; a row lock), so concurrent offers for
//!   one gateway, from one or several receivers, never both accept
//!   conflicting reports.
//! - **Every accepted report is in the log**, in acceptance order; every
//!   `accepted` and `duplicate` answer carries a [`Receipt`] for it.
//! - **Every accepted report is in the ledger** ([`crate::ledger`]), written
//!   in the same atomic step as the acceptance; nothing else is.
//! - **The registry is checked under the same exclusion** ([`crate::registry`]):
//!   [`Archive::commit`] re-runs [`crate::registry::admit`] on the registry
//!   as it is at the decision (a row share lock on the gateway's and the
//!   site's registry rows; the mutex), and a registry change takes the
//!   conflicting exclusive lock, so a change is either before an acceptance
//!   (which then obeys it) or after it.
//! - **Registry changes are durable before answered, and audited**: every
//!   change is appended to the trail ([`crate::registry::AuditRecord`], seq
//!   gap-free from 1) in the same atomic step as the change itself; the
//!   trail is never rewritten.

pub mod decision;
pub mod file;
pub mod postgres;

use crate::ledger::{LedgerEntry, LedgerKey, LedgerQuery};
use crate::registry::{AuditRecord, Change, KeySource, Registry, RegistryError, RegistryView};
use crate::verification::Trust;
use mrv_shared::report::merkle::Hash;
use mrv_shared::report::{VerifiedReport, hex};
use mrv_shared::tlog::TlogError;
use mrv_shared::tlog::checkpoint::Checkpoint;
use mrv_shared::tlog::note::NoteSigner;
use mrv_shared::tlog::receipt::{ConsistencyProof, Receipt};
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::path::PathBuf;

/// Why the archive failed (storage, not the report).
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// File system error.
    #[error("archive {path}: {source}")]
    Io {
        /// Path concerned.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Stored data that does not parse or does not fit together.
    #[error("archive {what}: {why}")]
    Corrupt {
        /// What (a path, a table row).
        what: String,
        /// Why.
        why: String,
    },
    /// The database failed.
    #[error("database: {0}")]
    Database(String),
    /// A question the log cannot answer (sizes out of range).
    #[error("log: {0}")]
    Log(String),
}

/// What happened to one offered report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ItemStatus {
    /// Newly stored.
    Accepted,
    /// These exact bytes were stored before; nothing changed.
    Duplicate,
    /// Not stored; `reason` says why.
    Rejected,
}

/// The answer for one offered report (the wire format of upload results).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemResult {
    /// Report id, when the bytes parsed far enough to have one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report_id: Option<String>,
    /// Report seq, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// Outcome.
    pub status: ItemStatus,
    /// Stable short reason of a rejection (`bad_signature`, `seq_gap`,
    /// `prev_hash_mismatch`, `equivocation`, ... see `docs/openapi.yaml`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Human-readable detail of a rejection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// For `accepted` and `duplicate`: proof that the log holds the report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receipt: Option<Receipt>,
}

impl ItemResult {
    /// A rejection of `v` (or of bytes that did not parse, when `None`).
    pub fn rejected(v: Option<&VerifiedReport>, reason: &str, detail: String) -> ItemResult {
        ItemResult {
            report_id: v.map(|v| v.id().to_string()),
            seq: v.map(VerifiedReport::seq),
            status: ItemStatus::Rejected,
            reason: Some(reason.to_string()),
            detail: Some(detail),
            receipt: None,
        }
    }

    /// An acceptance or duplicate with its receipt.
    pub fn stored(status: ItemStatus, report_id: &str, seq: u64, receipt: Receipt) -> ItemResult {
        ItemResult {
            report_id: Some(report_id.to_string()),
            seq: Some(seq),
            status,
            reason: None,
            detail: None,
            receipt: Some(receipt),
        }
    }

    /// The rejection of an equivocation, flagged.
    pub fn equivocation(v: &VerifiedReport) -> ItemResult {
        ItemResult::rejected(
            Some(v),
            "equivocation",
            format!(
                "seq {} of {} is already stored with different bytes; flagged, evidence kept",
                v.seq(),
                v.gateway()
            ),
        )
    }

    /// True for rejections caused by the chain (sequence, hash, period,
    /// baselines, equivocation) rather than by the report itself.
    pub fn is_chain_conflict(&self) -> bool {
        matches!(
            self.reason.as_deref(),
            Some(
                "seq_gap"
                    | "prev_hash_mismatch"
                    | "replay"
                    | "period_discontinuity"
                    | "baseline_mismatch"
                    | "equivocation"
            )
        )
    }
}

/// An equivocation: a gateway signed two different reports with one seq.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flag {
    /// When it was detected (Unix ms).
    pub time_ms: u64,
    /// Gateway.
    pub gateway: String,
    /// The seq signed twice.
    pub seq: u64,
    /// Always `equivocation`.
    pub reason: String,
    /// Hex SHA-256 of the stored report.
    pub stored_hash: String,
    /// Hex SHA-256 of the offered, different report (its bytes are the
    /// evidence: [`Archive::evidence`]).
    pub offered_hash: String,
}

impl Flag {
    /// The flag for `v` conflicting with the stored report `stored`.
    pub fn equivocation(v: &VerifiedReport, stored: &Hash, now_ms: u64) -> Flag {
        Flag {
            time_ms: now_ms,
            gateway: v.gateway().to_string(),
            seq: v.seq(),
            reason: String::from("equivocation"),
            stored_hash: hex(stored),
            offered_hash: v.hash_hex(),
        }
    }
}

/// One stored report, as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Seq.
    pub seq: u64,
    /// Report id.
    pub report_id: String,
    /// Hex SHA-256 of the stored bytes.
    pub hash: String,
    /// Size of the stored JWS.
    pub bytes: u64,
    /// Period start (Unix ms).
    pub period_start_ms: u64,
    /// Period end (Unix ms).
    pub period_end_ms: u64,
    /// Readings in the report.
    pub readings: u64,
    /// Position in the log.
    pub log_index: u64,
}

impl Entry {
    /// The entry of `v` (`len` stored bytes) at log position `log_index`.
    pub fn of(v: &VerifiedReport, len: usize, log_index: u64) -> Entry {
        Entry {
            seq: v.seq(),
            report_id: v.id().to_string(),
            hash: v.hash_hex(),
            bytes: len as u64,
            period_start_ms: v.report.header.period.start_ms,
            period_end_ms: v.report.header.period.end_ms,
            readings: v.report.readings.count,
            log_index,
        }
    }
}

/// Chain status of one gateway.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainStatus {
    /// Gateway id.
    pub gateway: String,
    /// Reports stored (seq 1 ..= head_seq, gap-free).
    pub reports: u64,
    /// Highest stored seq (0 = none).
    pub head_seq: u64,
    /// Hex hash of the head (the next report's `prev_hash`).
    pub head_hash: Option<String>,
    /// Period end of the head.
    pub head_period_end_ms: Option<u64>,
    /// Readings over all stored reports.
    pub readings: u64,
    /// Equivocations detected for this gateway.
    pub equivocations: Vec<Flag>,
}

/// The log's identity: its origin (checkpoint first line and note key
/// name) and signing key.
#[derive(Debug, Clone)]
pub struct LogIdentity {
    signer: NoteSigner,
}

impl LogIdentity {
    /// The identity `origin` signing with `key`.
    pub fn new(origin: &str, key: ed25519_dalek::SigningKey) -> Result<LogIdentity, TlogError> {
        Ok(LogIdentity {
            signer: NoteSigner::new(origin, key)?,
        })
    }

    /// The origin.
    pub fn origin(&self) -> &str {
        self.signer.verifier().name()
    }

    /// The verifier key (`name+id+key`) auditors and gateways trust.
    pub fn verifier(&self) -> &mrv_shared::tlog::note::NoteVerifier {
        self.signer.verifier()
    }

    /// `text` (newline-terminated, no control characters) as a C2SP signed
    /// note under the log's key (the crediting statement is one). Its
    /// first line must not be the origin, so it can never pass as a
    /// checkpoint.
    pub fn sign_note(&self, text: &str) -> Result<String, TlogError> {
        if text.lines().next() == Some(self.origin()) {
            return Err(TlogError::Malformed(String::from(
                "a note whose first line is the log origin would read as a checkpoint",
            )));
        }
        self.signer.sign(text)
    }

    /// The signed checkpoint of a tree of `size` with `root`.
    pub fn sign(&self, size: u64, root: Hash) -> String {
        Checkpoint {
            origin: self.origin().to_string(),
            size,
            root,
            extensions: Vec::new(),
        }
        .sign(&self.signer)
        .expect("the origin is the signer's name and the text is well-formed")
    }
}

/// What the chain decision re-checks the registry with: the command-line
/// trust and the key the report's signature was verified with.
#[derive(Debug, Clone, Copy)]
pub struct Admission<'a> {
    /// Command-line keys and devices (bootstrap).
    pub trust: &'a std::sync::Arc<Trust>,
    /// The key that verified the signature.
    pub key: &'a KeySource,
}

/// The archive interface (see the module doc). Every method is
/// cancellation-safe in the sense that matters: an abandoned `commit`
/// either happened entirely or not at all.
pub trait Archive: Send + Sync {
    /// The stored report with exactly these bytes (by hash), answered as a
    /// duplicate with its receipt. Cheap: checked before verification.
    fn duplicate(
        &self,
        hash: Hash,
    ) -> impl Future<Output = Result<Option<ItemResult>, ArchiveError>> + Send;

    /// Re-checks the registry ([`crate::registry::admit`]), decides on a
    /// verified report ([`decision::decide`]) and stores it when accepted,
    /// with its log entry; flags an equivocation. `Err` only for storage
    /// failures (then nothing was stored).
    fn commit(
        &self,
        bytes: &[u8],
        v: &VerifiedReport,
        now_ms: u64,
        admission: &Admission<'_>,
    ) -> impl Future<Output = Result<ItemResult, ArchiveError>> + Send;

    /// What the registry says about key id `kid`, gateway `gateway` and
    /// site `site` now (no lock: the commit checks again).
    fn registry_view(
        &self,
        kid: &str,
        gateway: &str,
        site: &str,
    ) -> impl Future<Output = Result<RegistryView, ArchiveError>> + Send;

    /// Applies `change` by `actor` at `now_ms` and appends it to the audit
    /// trail, atomically. The inner `Err`: refused, nothing changed.
    fn registry_change(
        &self,
        change: &Change,
        actor: &str,
        now_ms: u64,
    ) -> impl Future<Output = Result<Result<AuditRecord, RegistryError>, ArchiveError>> + Send;

    /// The whole registry.
    fn registry(&self) -> impl Future<Output = Result<Registry, ArchiveError>> + Send;

    /// Audit records with seq > `after`, at most `limit`, in order.
    fn registry_history(
        &self,
        after: u64,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<AuditRecord>, ArchiveError>> + Send;

    /// The stored bytes of report `report_id`.
    fn fetch(
        &self,
        report_id: &str,
    ) -> impl Future<Output = Result<Option<Vec<u8>>, ArchiveError>> + Send;

    /// A receipt for stored report `report_id` against the current tree.
    fn receipt(
        &self,
        report_id: &str,
    ) -> impl Future<Output = Result<Option<Receipt>, ArchiveError>> + Send;

    /// Gateways with at least one stored report or flag.
    fn gateways(&self) -> impl Future<Output = Result<Vec<String>, ArchiveError>> + Send;

    /// Chain status of `gateway` (`None` if never seen).
    fn chain_status(
        &self,
        gateway: &str,
    ) -> impl Future<Output = Result<Option<ChainStatus>, ArchiveError>> + Send;

    /// Stored reports of `gateway` with seq > `after`, at most `limit`.
    fn list(
        &self,
        gateway: &str,
        after: u64,
        limit: usize,
    ) -> impl Future<Output = Result<Option<Vec<Entry>>, ArchiveError>> + Send;

    /// Every equivocation flag.
    fn flags(&self) -> impl Future<Output = Result<Vec<Flag>, ArchiveError>> + Send;

    /// The offered bytes of a flagged equivocation, by their hex hash.
    fn evidence(
        &self,
        offered_hash: &str,
    ) -> impl Future<Output = Result<Option<Vec<u8>>, ArchiveError>> + Send;

    /// The current signed checkpoint.
    fn checkpoint(&self) -> impl Future<Output = Result<String, ArchiveError>> + Send;

    /// A consistency proof between tree sizes `old <= new <= current`.
    fn consistency(
        &self,
        old: u64,
        new: u64,
    ) -> impl Future<Output = Result<ConsistencyProof, ArchiveError>> + Send;

    /// The ledger entries of the reports of `q`'s project (and site) whose
    /// period overlaps `q`'s ([`LedgerQuery::overlaps`]), in (site,
    /// gateway, seq) order.
    fn ledger(
        &self,
        q: &LedgerQuery,
    ) -> impl Future<Output = Result<Vec<LedgerEntry>, ArchiveError>> + Send;

    /// [`Archive::ledger`]'s answer in pages: at most `limit` of its
    /// entries, the first ones after `after` in (site, gateway, seq) order
    /// (from the start when `None`). An empty page is the end. For answers
    /// too large to hold at once (a year's statement).
    fn ledger_page(
        &self,
        q: &LedgerQuery,
        after: Option<&LedgerKey>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<LedgerEntry>, ArchiveError>> + Send;
}

/// Either store, behind one type (the router holds this).
#[derive(Debug)]
pub enum AnyArchive {
    /// Files.
    File(file::FileArchive),
    /// PostgreSQL.
    Postgres(Box<postgres::PgArchive>),
}

macro_rules! delegate {
    ($self:ident, $a:ident => $e:expr) => {
        match $self {
            AnyArchive::File($a) => $e.await,
            AnyArchive::Postgres($a) => $e.await,
        }
    };
}

impl Archive for AnyArchive {
    async fn duplicate(&self, hash: Hash) -> Result<Option<ItemResult>, ArchiveError> {
        delegate!(self, a => a.duplicate(hash))
    }
    async fn commit(
        &self,
        bytes: &[u8],
        v: &VerifiedReport,
        now_ms: u64,
        admission: &Admission<'_>,
    ) -> Result<ItemResult, ArchiveError> {
        delegate!(self, a => a.commit(bytes, v, now_ms, admission))
    }
    async fn registry_view(
        &self,
        kid: &str,
        gateway: &str,
        site: &str,
    ) -> Result<RegistryView, ArchiveError> {
        delegate!(self, a => a.registry_view(kid, gateway, site))
    }
    async fn registry_change(
        &self,
        change: &Change,
        actor: &str,
        now_ms: u64,
    ) -> Result<Result<AuditRecord, RegistryError>, ArchiveError> {
        delegate!(self, a => a.registry_change(change, actor, now_ms))
    }
    async fn registry(&self) -> Result<Registry, ArchiveError> {
        delegate!(self, a => a.registry())
    }
    async fn registry_history(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<AuditRecord>, ArchiveError> {
        delegate!(self, a => a.registry_history(after, limit))
    }
    async fn fetch(&self, report_id: &str) -> Result<Option<Vec<u8>>, ArchiveError> {
        delegate!(self, a => a.fetch(report_id))
    }
    async fn receipt(&self, report_id: &str) -> Result<Option<Receipt>, ArchiveError> {
        delegate!(self, a => a.receipt(report_id))
    }
    async fn gateways(&self) -> Result<Vec<String>, ArchiveError> {
        delegate!(self, a => a.gateways())
    }
    async fn chain_status(&self, gateway: &str) -> Result<Option<ChainStatus>, ArchiveError> {
        delegate!(self, a => a.chain_status(gateway))
    }
    async fn list(
        &self,
        gateway: &str,
        after: u64,
        limit: usize,
    ) -> Result<Option<Vec<Entry>>, ArchiveError> {
        delegate!(self, a => a.list(gateway, after, limit))
    }
    async fn flags(&self) -> Result<Vec<Flag>, ArchiveError> {
        delegate!(self, a => a.flags())
    }
    async fn evidence(&self, offered_hash: &str) -> Result<Option<Vec<u8>>, ArchiveError> {
        delegate!(self, a => a.evidence(offered_hash))
    }
    async fn checkpoint(&self) -> Result<String, ArchiveError> {
        delegate!(self, a => a.checkpoint())
    }
    async fn consistency(&self, old: u64, new: u64) -> Result<ConsistencyProof, ArchiveError> {
        delegate!(self, a => a.consistency(old, new))
    }
    async fn ledger(&self, q: &LedgerQuery) -> Result<Vec<LedgerEntry>, ArchiveError> {
        delegate!(self, a => a.ledger(q))
    }
    async fn ledger_page(
        &self,
        q: &LedgerQuery,
        after: Option<&LedgerKey>,
        limit: usize,
    ) -> Result<Vec<LedgerEntry>, ArchiveError> {
        delegate!(self, a => a.ledger_page(q, after, limit))
    }
}
