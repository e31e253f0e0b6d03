//! The PostgreSQL archive: any number of stateless receiver processes on
//! one database.
//!
//! ## Schema (version 3, created at first connect; a version 1 database
//! gets the ledger tables and its reports indexed in them at connect; a
//! version 1 or 2 database gets the (empty) registry tables)
//!
//! ```text
//! meta(key PK, value)                          schema_version, log_origin, log_verifier
//! gateways(id PK, head text, head_seq, reports, readings)
//!                                              head: JSON StoredHead of the last accepted report
//! reports(gateway, seq, PK(gateway, seq), report_id UNIQUE, hash bytea UNIQUE, kid,
//!         period_start_ms, period_end_ms, readings, log_index UNIQUE, accepted_ms, bytes bytea)
//! kids(kid PK, gateway)                        which gateway a key signs for
//! equivocations(offered_hash PK, gateway, seq, stored_hash, time_ms, evidence bytea)
//! log_nodes(level, idx, PK(level, idx), hash)  every complete subtree of the log
//! log_head(id = 1 PK, size, frontier bytea, checkpoint text)
//! ledger_reports(gateway, seq, PK -> reports, project, site, period_start_ms, period_end_ms,
//!         entry text)                          JSON LedgerEntry (crate::ledger); indexed by
//!                                              (project, period_start_ms) and, for pages in
//!                                              order, (project, site, gateway, seq)
//! ledger_calculations(gateway, seq, calc_id, PK, methodology, re, pe, er, bindings,
//!         completeness, excluded)              exact amounts as text, the rest JSON
//! ledger_events(gateway, seq, idx, PK, time_ms, kind, device, first_seq, last_seq, detail)
//! registry_head(id = 1 PK, seq)                the audit trail's last seq (serialises changes)
//! registry_gateways(id PK, site, project, doc) JSON GatewayRecord (crate::registry)
//! registry_kids(kid PK, gateway)               every enrolled key id, forever
//! registry_sites(site PK, doc)                 JSON SiteDevices
//! registry_audit(seq PK, time_ms, actor, record)
//!                                              JSON AuditRecord, append-only
//! ```
//!
//! ## A registry change: one transaction
//!
//! ```text
//! SELECT registry_head FOR UPDATE                      -- one change at a time
//! SELECT the gateway's / site's doc FOR UPDATE         -- waits for uploads holding it FOR SHARE
//! SELECT head_seq FROM gateways                        -- last seq accepted before a revocation
//! apply (pure), UPSERT doc, INSERT registry_kids, INSERT registry_audit, UPDATE registry_head; COMMIT
//! ```
//!
//! ## One transaction per offered report
//!
//! ```text
//! INSERT gateways(id) ON CONFLICT DO NOTHING; SELECT head ... FOR UPDATE   -- one decider per gateway
//! SELECT registry docs of the kid's owner, the gateway, the site FOR SHARE -- registry::admit
//! SELECT hash FROM reports WHERE (gateway, seq); SELECT gateway FROM kids  -- the ChainView
//! decide()                                                                  -- pure
//! accepted:     bind the kid (upsert, re-checked), SELECT log_head FOR UPDATE,
//!               INSERT report, INSERT ledger rows, INSERT completed nodes, UPDATE log_head (new signed
//!               checkpoint), UPDATE gateways head; COMMIT
//! equivocation: INSERT equivocations (evidence); COMMIT
//! otherwise:    ROLLBACK (nothing stored)
//! ```
//!
//! ## Group commit
//!
//! [`Archive::commit`] queues the verified report; one task per receiver
//! takes every report waiting (at most [`MAX_GROUP`]) and runs the steps
//! above for all of them in **one** transaction: gateway rows locked in
//! (gateway, seq) order, each report's registry re-check and decision
//! (reports of one gateway in one group see each other), then the log head
//! locked once, every accepted report appended, one new checkpoint, one
//! commit (one fsync). Every accepted report of the group gets its receipt
//! against that checkpoint. A group whose transaction fails stores nothing
//! and is committed again one report at a time. While a group commits, the
//! next one gathers, so the log head lock and the fsync are paid once per
//! group rather than once per report.
//!
//! Locks are always taken in the order gateway row, registry rows, log
//! head (uploads) and registry head, registry rows (changes, which take no
//! other lock), so two transactions never deadlock. The log head lock is held only from the
//! report insert to commit: acceptances of different gateways serialise
//! only there. A receiver killed mid-transaction leaves nothing (the
//! database rolls it back): the database never holds a half-accepted
//! report, and every accepted report has its log entry in the same commit.

use super::decision::{ChainView, Decision, StoredHead, decide};
use super::{
    Admission, Archive, ArchiveError, ChainStatus, Entry, Flag, ItemResult, ItemStatus, LogIdentity,
};
use crate::ledger::{self, LedgerCalculation, LedgerEntry, LedgerKey, LedgerQuery};
use crate::registry::{
    AuditRecord, Change, GatewayRecord, Registry, RegistryError, RegistryView, SiteDevices, rfc3339,
};
use deadpool_postgres::{GenericClient, Manager, ManagerConfig, Pool, RecyclingMethod};
use mrv_shared::report::merkle::Hash;
use mrv_shared::report::verify::ChainHead;
use mrv_shared::report::{VerifiedReport, hex};
use mrv_shared::tlog::receipt::{ConsistencyProof, Receipt, hex_hashes, parse_hash};
use mrv_shared::tlog::tree::{
    Frontier, NodeId, consistency_ranges, entry_leaf_hash, hash_ranges, inclusion_ranges, nodes_for,
};
use std::collections::BTreeMap;
use tokio_postgres::NoTls;

/// The schema version this code writes and reads.
pub const SCHEMA_VERSION: &str = "3";

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS meta (key text PRIMARY KEY, value text NOT NULL);
CREATE TABLE IF NOT EXISTS gateways (
    id text PRIMARY KEY,
    head text,
    head_seq bigint NOT NULL DEFAULT 0,
    reports bigint NOT NULL DEFAULT 0,
    readings bigint NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS reports (
    gateway text NOT NULL,
    seq bigint NOT NULL,
    report_id text NOT NULL UNIQUE,
    hash bytea NOT NULL UNIQUE,
    kid text NOT NULL,
    period_start_ms bigint NOT NULL,
    period_end_ms bigint NOT NULL,
    readings bigint NOT NULL,
    log_index bigint NOT NULL UNIQUE,
    accepted_ms bigint NOT NULL,
    bytes bytea NOT NULL,
    PRIMARY KEY (gateway, seq)
);
CREATE TABLE IF NOT EXISTS kids (kid text PRIMARY KEY, gateway text NOT NULL);
CREATE TABLE IF NOT EXISTS equivocations (
    offered_hash bytea PRIMARY KEY,
    gateway text NOT NULL,
    seq bigint NOT NULL,
    stored_hash bytea NOT NULL,
    time_ms bigint NOT NULL,
    evidence bytea NOT NULL
);
CREATE INDEX IF NOT EXISTS equivocations_gateway ON equivocations (gateway, seq);
CREATE TABLE IF NOT EXISTS log_nodes (
    level smallint NOT NULL,
    idx bigint NOT NULL,
    hash bytea NOT NULL,
    PRIMARY KEY (level, idx)
);
CREATE TABLE IF NOT EXISTS log_head (
    id int PRIMARY KEY CHECK (id = 1),
    size bigint NOT NULL,
    frontier bytea NOT NULL,
    checkpoint text NOT NULL
);
CREATE TABLE IF NOT EXISTS ledger_reports (
    gateway text NOT NULL,
    seq bigint NOT NULL,
    project text NOT NULL,
    site text NOT NULL,
    period_start_ms bigint NOT NULL,
    period_end_ms bigint NOT NULL,
    entry text NOT NULL,
    PRIMARY KEY (gateway, seq),
    FOREIGN KEY (gateway, seq) REFERENCES reports (gateway, seq)
);
CREATE INDEX IF NOT EXISTS ledger_reports_period ON ledger_reports (project, period_start_ms);
CREATE INDEX IF NOT EXISTS ledger_reports_order ON ledger_reports (project, site, gateway, seq);
CREATE TABLE IF NOT EXISTS ledger_calculations (
    gateway text NOT NULL,
    seq bigint NOT NULL,
    calc_id text NOT NULL,
    methodology text NOT NULL,
    re text NOT NULL,
    pe text NOT NULL,
    er text NOT NULL,
    bindings text NOT NULL,
    completeness text NOT NULL,
    excluded text NOT NULL,
    PRIMARY KEY (gateway, seq, calc_id),
    FOREIGN KEY (gateway, seq) REFERENCES reports (gateway, seq)
);
CREATE TABLE IF NOT EXISTS ledger_events (
    gateway text NOT NULL,
    seq bigint NOT NULL,
    idx int NOT NULL,
    time_ms bigint NOT NULL,
    kind text NOT NULL,
    device text,
    first_seq bigint,
    last_seq bigint,
    detail text NOT NULL,
    PRIMARY KEY (gateway, seq, idx),
    FOREIGN KEY (gateway, seq) REFERENCES reports (gateway, seq)
);
CREATE TABLE IF NOT EXISTS registry_head (id int PRIMARY KEY CHECK (id = 1), seq bigint NOT NULL);
INSERT INTO registry_head (id, seq) VALUES (1, 0) ON CONFLICT DO NOTHING;
CREATE TABLE IF NOT EXISTS registry_gateways (
    id text PRIMARY KEY,
    site text NOT NULL,
    project text NOT NULL,
    doc text NOT NULL
);
CREATE TABLE IF NOT EXISTS registry_kids (kid text PRIMARY KEY, gateway text NOT NULL);
CREATE TABLE IF NOT EXISTS registry_sites (site text PRIMARY KEY, doc text NOT NULL);
CREATE TABLE IF NOT EXISTS registry_audit (
    seq bigint PRIMARY KEY,
    time_ms bigint NOT NULL,
    actor text NOT NULL,
    record text NOT NULL
);
"#;

/// Arbitrary constant key of the advisory lock that serialises schema
/// creation among receivers starting at once.
const MIGRATION_LOCK: i64 = 0x6d72_765f_7363_6831;

fn json_text<T: serde::Serialize + ?Sized>(v: &T) -> String {
    serde_json::to_string(v).expect("ledger records serialise")
}

fn db(e: impl std::fmt::Display) -> ArchiveError {
    ArchiveError::Database(e.to_string())
}

fn i64_of(n: u64, what: &str) -> Result<i64, ArchiveError> {
    i64::try_from(n).map_err(|_| ArchiveError::Corrupt {
        what: what.to_string(),
        why: format!("{n} does not fit a bigint"),
    })
}

fn u64_of(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

fn hash_of(b: &[u8], what: &str) -> Result<Hash, ArchiveError> {
    b.try_into().map_err(|_| ArchiveError::Corrupt {
        what: what.to_string(),
        why: format!("a hash of {} bytes", b.len()),
    })
}

fn frontier_of(size: i64, bytes: &[u8]) -> Result<Frontier, ArchiveError> {
    let hashes: Vec<Hash> = bytes
        .chunks_exact(32)
        .map(|c| c.try_into().expect("chunks of 32"))
        .collect();
    Frontier::from_parts(u64_of(size), hashes).ok_or_else(|| ArchiveError::Corrupt {
        what: String::from("log_head"),
        why: String::from("frontier does not match the size"),
    })
}

/// The PostgreSQL archive (see the module doc). Cheap to clone.
#[derive(Clone)]
pub struct PgArchive {
    pool: Pool,
    identity: LogIdentity,
    /// The group-commit queue (see [`PgArchive::commit_batch`]).
    queue: tokio::sync::mpsc::Sender<Job>,
    /// Transactions the group commit ran, and the reports in them.
    groups: std::sync::Arc<[std::sync::atomic::AtomicU64; 2]>,
}

/// One verified report waiting for the group commit.
struct Job {
    bytes: Vec<u8>,
    v: VerifiedReport,
    now_ms: u64,
    trust: std::sync::Arc<crate::verification::Trust>,
    key: crate::registry::KeySource,
    reply: tokio::sync::oneshot::Sender<Result<ItemResult, ArchiveError>>,
}

/// Most reports committed in one transaction.
pub const MAX_GROUP: usize = 64;

/// A decision of the group commit's first phase, kept for its second.
struct Accepted {
    job: usize,
    head: ChainHead,
}

impl std::fmt::Debug for PgArchive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgArchive")
            .field("origin", &self.identity.origin())
            .finish_non_exhaustive()
    }
}

impl PgArchive {
    /// Connects (a pool of at most `pool` connections), creates the schema
    /// if needed, and checks that the log in the database is this key's.
    pub async fn connect(
        url: &str,
        pool: usize,
        identity: LogIdentity,
    ) -> Result<PgArchive, ArchiveError> {
        let cfg: tokio_postgres::Config = url.parse().map_err(db)?;
        let mgr = Manager::from_config(
            cfg,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(mgr)
            .max_size(pool.max(1))
            .build()
            .map_err(db)?;
        let (queue, rx) = tokio::sync::mpsc::channel(4 * MAX_GROUP);
        let a = PgArchive {
            pool,
            identity,
            queue,
            groups: Default::default(),
        };
        a.migrate().await?;
        tokio::spawn(a.clone().group_commits(rx));
        Ok(a)
    }

    async fn migrate(&self) -> Result<(), ArchiveError> {
        let mut c = self.pool.get().await.map_err(db)?;
        let tx = c.transaction().await.map_err(db)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await
            .map_err(db)?;
        tx.batch_execute(SCHEMA).await.map_err(db)?;
        let meta: BTreeMap<String, String> = tx
            .query("SELECT key, value FROM meta", &[])
            .await
            .map_err(db)?
            .into_iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        let verifier = self.identity.verifier().to_string();
        match meta.get("schema_version") {
            None => {
                tx.execute(
                    "INSERT INTO meta (key, value) VALUES ('schema_version', $1), ('log_origin', $2), ('log_verifier', $3)",
                    &[&SCHEMA_VERSION, &self.identity.origin(), &verifier],
                )
                .await
                .map_err(db)?;
                let empty = self.identity.sign(0, Frontier::new().root());
                tx.execute(
                    "INSERT INTO log_head (id, size, frontier, checkpoint) VALUES (1, 0, ''::bytea, $1)",
                    &[&empty],
                )
                .await
                .map_err(db)?;
            }
            Some(v) if v == SCHEMA_VERSION || v == "1" || v == "2" => {
                if meta.get("log_verifier") != Some(&verifier) {
                    return Err(ArchiveError::Corrupt {
                        what: String::from("meta.log_verifier"),
                        why: format!(
                            "the database's log is signed by {:?}, this receiver's key is {verifier:?}: every receiver of one database must use the same log key",
                            meta.get("log_verifier")
                        ),
                    });
                }
                if v != SCHEMA_VERSION {
                    // The registry tables were created above (empty).
                    tx.execute(
                        "UPDATE meta SET value = $1 WHERE key = 'schema_version'",
                        &[&SCHEMA_VERSION],
                    )
                    .await
                    .map_err(db)?;
                }
                if v == "1" {
                    // Version 1 had no ledger: index every stored report.
                    let rows = tx
                        .query(
                            "SELECT gateway, seq, bytes FROM reports ORDER BY gateway, seq",
                            &[],
                        )
                        .await
                        .map_err(db)?;
                    for r in &rows {
                        let what =
                            format!("reports {} seq {}", r.get::<_, &str>(0), r.get::<_, i64>(1));
                        let v = super::file::parse_stored(r.get(2), &what)?;
                        Self::insert_ledger(&tx, &ledger::entry_of(&v)).await?;
                    }
                    tx.execute(
                        "UPDATE meta SET value = $1 WHERE key = 'schema_version'",
                        &[&SCHEMA_VERSION],
                    )
                    .await
                    .map_err(db)?;
                    tracing::info!(
                        reports = rows.len(),
                        "database schema 1 -> {SCHEMA_VERSION}: ledger indexed"
                    );
                }
            }
            Some(v) => {
                return Err(ArchiveError::Corrupt {
                    what: String::from("meta.schema_version"),
                    why: format!("database schema {v}, this receiver knows {SCHEMA_VERSION}"),
                });
            }
        }
        tx.commit().await.map_err(db)
    }

    /// Writes the log nodes an append completed (`done`) and moves the log
    /// head to `frontier`, with a checkpoint signed for its size (inside
    /// the acceptance's transaction, which holds the head's row lock).
    /// Returns the new size and checkpoint. One report or a whole group.
    async fn advance_log(
        &self,
        c: &impl GenericClient,
        done: &[(NodeId, Hash)],
        frontier: &Frontier,
    ) -> Result<(u64, String), ArchiveError> {
        let levels: Vec<i16> = done.iter().map(|(id, _)| i16::from(id.level)).collect();
        let idxs: Vec<i64> = done
            .iter()
            .map(|(id, _)| i64_of(id.index, "node index"))
            .collect::<Result<_, _>>()?;
        let hashes: Vec<&[u8]> = done.iter().map(|(_, h)| h.as_slice()).collect();
        let nodes = c
            .prepare_cached(
                "INSERT INTO log_nodes (level, idx, hash) \
                 SELECT * FROM unnest($1::smallint[], $2::bigint[], $3::bytea[])",
            )
            .await
            .map_err(db)?;
        c.execute(&nodes, &[&levels, &idxs, &hashes])
            .await
            .map_err(db)?;
        let size = frontier.size();
        let checkpoint = self.identity.sign(size, frontier.root());
        let flat: Vec<u8> = frontier.hashes().concat();
        let upd = c
            .prepare_cached(
                "UPDATE log_head SET size = $1, frontier = $2, checkpoint = $3 WHERE id = 1",
            )
            .await
            .map_err(db)?;
        c.execute(&upd, &[&i64_of(size, "log size")?, &flat, &checkpoint])
            .await
            .map_err(db)?;
        Ok((size, checkpoint))
    }

    /// Writes the ledger rows of `e` (inside the acceptance's transaction).
    async fn insert_ledger(c: &impl GenericClient, e: &LedgerEntry) -> Result<(), ArchiveError> {
        let seq = i64_of(e.seq, "seq")?;
        let q = c
            .prepare_cached(
                "INSERT INTO ledger_reports (gateway, seq, project, site, period_start_ms, \
                 period_end_ms, entry) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .await
            .map_err(db)?;
        c.execute(
            &q,
            &[
                &e.gateway,
                &seq,
                &e.project,
                &e.site,
                &i64_of(e.period_start_ms, "period")?,
                &i64_of(e.period_end_ms, "period")?,
                &json_text(e),
            ],
        )
        .await
        .map_err(db)?;
        if !e.calculations.is_empty() {
            let col = |f: &dyn Fn(&LedgerCalculation) -> String| -> Vec<String> {
                e.calculations.iter().map(f).collect()
            };
            let q = c
                .prepare_cached(
                    "INSERT INTO ledger_calculations (gateway, seq, calc_id, methodology, re, pe, er, \
                     bindings, completeness, excluded) SELECT $1, $2, * FROM \
                     unnest($3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], \
                     $9::text[], $10::text[])",
                )
                .await
                .map_err(db)?;
            c.execute(
                &q,
                &[
                    &e.gateway,
                    &seq,
                    &col(&|x| x.id.clone()),
                    &col(&|x| x.methodology.name().to_string()),
                    &col(&|x| x.re.clone()),
                    &col(&|x| x.pe.clone()),
                    &col(&|x| x.er.clone()),
                    &col(&|x| json_text(&x.bindings)),
                    &col(&|x| json_text(&x.completeness)),
                    &col(&|x| json_text(&x.excluded)),
                ],
            )
            .await
            .map_err(db)?;
        }
        if !e.events.is_empty() {
            let idx: Vec<i32> = (0..e.events.len())
                .map(|i| i32::try_from(i).unwrap_or(i32::MAX))
                .collect();
            let time: Vec<i64> = e
                .events
                .iter()
                .map(|x| i64_of(x.time_ms, "event time"))
                .collect::<Result<_, _>>()?;
            let kind: Vec<&str> = e.events.iter().map(|x| x.kind.name()).collect();
            let device: Vec<Option<&str>> = e
                .events
                .iter()
                .map(|x| x.device.as_ref().map(|d| d.as_str()))
                .collect();
            let first: Vec<Option<i64>> = e
                .events
                .iter()
                .map(|x| x.seqs.as_ref().map(|s| i64_of(s.first, "seq")).transpose())
                .collect::<Result<_, _>>()?;
            let last: Vec<Option<i64>> = e
                .events
                .iter()
                .map(|x| x.seqs.as_ref().map(|s| i64_of(s.last, "seq")).transpose())
                .collect::<Result<_, _>>()?;
            let detail: Vec<&str> = e.events.iter().map(|x| x.detail.as_str()).collect();
            let q = c
                .prepare_cached(
                    "INSERT INTO ledger_events (gateway, seq, idx, time_ms, kind, device, first_seq, \
                     last_seq, detail) SELECT $1, $2, * FROM unnest($3::int[], $4::bigint[], \
                     $5::text[], $6::text[], $7::bigint[], $8::bigint[], $9::text[])",
                )
                .await
                .map_err(db)?;
            c.execute(
                &q,
                &[
                    &e.gateway, &seq, &idx, &time, &kind, &device, &first, &last, &detail,
                ],
            )
            .await
            .map_err(db)?;
        }
        Ok(())
    }

    /// Fetches the stored nodes `ids`.
    async fn nodes(
        c: &impl GenericClient,
        ids: &[NodeId],
    ) -> Result<BTreeMap<NodeId, Hash>, ArchiveError> {
        if ids.is_empty() {
            return Ok(BTreeMap::new());
        }
        let levels: Vec<i16> = ids.iter().map(|i| i16::from(i.level)).collect();
        let idxs: Vec<i64> = ids
            .iter()
            .map(|i| i64_of(i.index, "node index"))
            .collect::<Result<_, _>>()?;
        let rows = c
            .query(
                "SELECT n.level, n.idx, n.hash FROM log_nodes n \
                 JOIN unnest($1::smallint[], $2::bigint[]) AS q(level, idx) \
                 ON n.level = q.level AND n.idx = q.idx",
                &[&levels, &idxs],
            )
            .await
            .map_err(db)?;
        let mut out = BTreeMap::new();
        for r in rows {
            let level: i16 = r.get(0);
            let idx: i64 = r.get(1);
            let hash: &[u8] = r.get(2);
            out.insert(
                NodeId {
                    level: u8::try_from(level).unwrap_or(u8::MAX),
                    index: u64_of(idx),
                },
                hash_of(hash, "log_nodes.hash")?,
            );
        }
        Ok(out)
    }

    /// The proof hashes of `ranges` from the database.
    async fn proof(
        c: &impl GenericClient,
        ranges: &[(u64, u64)],
    ) -> Result<Vec<Hash>, ArchiveError> {
        let nodes = Self::nodes(c, &nodes_for(ranges)).await?;
        hash_ranges(ranges, &nodes).ok_or_else(|| ArchiveError::Corrupt {
            what: String::from("log_nodes"),
            why: String::from("a node of the tree is missing"),
        })
    }

    /// A receipt for the report `hash` at `index` against the current head.
    async fn receipt_at(
        c: &impl GenericClient,
        hash: &Hash,
        index: u64,
    ) -> Result<Receipt, ArchiveError> {
        let row = c
            .query_one("SELECT size, checkpoint FROM log_head WHERE id = 1", &[])
            .await
            .map_err(db)?;
        let size = u64_of(row.get(0));
        let checkpoint: String = row.get(1);
        let proof = Self::proof(c, &inclusion_ranges(index, size)).await?;
        Ok(Receipt {
            report_hash: hex(hash),
            log_index: index,
            tree_size: size,
            inclusion_proof: hex_hashes(&proof),
            checkpoint,
        })
    }

    /// The registry view for `kid`, `gateway`, `site`; with `lock`, the
    /// rows read are share-locked until the transaction ends (a change
    /// waits for it, and it waits for a change in progress).
    async fn view_in(
        c: &impl GenericClient,
        kid: &str,
        gateway: &str,
        site: &str,
        lock: bool,
    ) -> Result<RegistryView, ArchiveError> {
        // One round trip; with `lock`, each sub-select share-locks its row.
        let (share_g, share) = if lock {
            (" FOR SHARE OF g", " FOR SHARE")
        } else {
            ("", "")
        };
        let q = c
            .prepare_cached(&format!(
                "SELECT (SELECT g.doc FROM registry_kids k JOIN registry_gateways g ON g.id = k.gateway \
                 WHERE k.kid = $1{share_g}), \
                 (SELECT doc FROM registry_gateways WHERE id = $2{share}), \
                 (SELECT doc FROM registry_sites WHERE site = $3{share})"
            ))
            .await
            .map_err(db)?;
        let row = c
            .query_one(&q, &[&kid, &gateway, &site])
            .await
            .map_err(db)?;
        let kid_owner = row
            .get::<_, Option<&str>>(0)
            .map(|t| doc::<GatewayRecord>(t, "registry_gateways"))
            .transpose()?;
        let claimed = row
            .get::<_, Option<&str>>(1)
            .map(|t| doc::<GatewayRecord>(t, "registry_gateways"))
            .transpose()?;
        let site = row
            .get::<_, Option<&str>>(2)
            .map(|t| doc::<SiteDevices>(t, "registry_sites"))
            .transpose()?;
        Ok(RegistryView {
            kid_owner,
            claimed,
            site,
        })
    }

    async fn registry_change_tx(
        &self,
        change: &Change,
        actor: &str,
        now_ms: u64,
    ) -> Result<Result<AuditRecord, RegistryError>, ArchiveError> {
        let mut c = self.pool.get().await.map_err(db)?;
        let tx = c.transaction().await.map_err(db)?;
        let head: i64 = tx
            .query_one("SELECT seq FROM registry_head WHERE id = 1 FOR UPDATE", &[])
            .await
            .map_err(db)?
            .get(0);
        let mut part = Registry::default();
        let mut last_seq = 0;
        if let Some(g) = change.gateway() {
            if let Some(r) = tx
                .query_opt(
                    "SELECT doc FROM registry_gateways WHERE id = $1 FOR UPDATE",
                    &[&g],
                )
                .await
                .map_err(db)?
            {
                part.gateways
                    .insert(g.to_string(), doc(r.get(0), "registry_gateways")?);
            }
            // After the lock: every upload that read the record before
            // this change has committed (it held the row FOR SHARE).
            last_seq = tx
                .query_opt("SELECT head_seq FROM gateways WHERE id = $1", &[&g])
                .await
                .map_err(db)?
                .map_or(0, |r| u64_of(r.get(0)));
        }
        if let Some(site) = change.site()
            && let Some(r) = tx
                .query_opt(
                    "SELECT doc FROM registry_sites WHERE site = $1 FOR UPDATE",
                    &[&site],
                )
                .await
                .map_err(db)?
        {
            part.sites
                .insert(site.to_string(), doc(r.get(0), "registry_sites")?);
        }
        let taken = match change.new_kid() {
            Some(k) => tx
                .query_opt("SELECT 1 FROM registry_kids WHERE kid = $1", &[&k])
                .await
                .map_err(db)?
                .is_some(),
            None => false,
        };
        let (normal, last_seq_accepted) = match part.apply(change, actor, now_ms, last_seq, taken) {
            Ok(x) => x,
            Err(e) => {
                tx.rollback().await.map_err(db)?;
                return Ok(Err(e));
            }
        };
        if let Some(g) = change.gateway() {
            let rec = &part.gateways[g];
            tx.execute(
                "INSERT INTO registry_gateways (id, site, project, doc) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (id) DO UPDATE SET doc = EXCLUDED.doc",
                &[&g, &rec.site, &rec.project, &json_text(rec)],
            )
            .await
            .map_err(db)?;
            for k in &rec.keys {
                tx.execute(
                    "INSERT INTO registry_kids (kid, gateway) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                    &[&k.kid(), &g],
                )
                .await
                .map_err(db)?;
            }
        }
        if let Some(site) = change.site() {
            tx.execute(
                "INSERT INTO registry_sites (site, doc) VALUES ($1, $2) \
                 ON CONFLICT (site) DO UPDATE SET doc = EXCLUDED.doc",
                &[&site, &json_text(&part.sites[site])],
            )
            .await
            .map_err(db)?;
        }
        let record = AuditRecord {
            seq: u64_of(head) + 1,
            time: rfc3339(now_ms),
            time_ms: now_ms,
            actor: actor.to_string(),
            change: normal,
            last_seq_accepted,
        };
        tx.execute(
            "INSERT INTO registry_audit (seq, time_ms, actor, record) VALUES ($1, $2, $3, $4)",
            &[
                &(head + 1),
                &i64_of(now_ms, "time")?,
                &actor,
                &json_text(&record),
            ],
        )
        .await
        .map_err(db)?;
        tx.execute(
            "UPDATE registry_head SET seq = $1 WHERE id = 1",
            &[&(head + 1)],
        )
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(Ok(record))
    }

    async fn commit_tx(
        &self,
        bytes: &[u8],
        v: &VerifiedReport,
        now_ms: u64,
        admission: &Admission<'_>,
    ) -> Result<ItemResult, ArchiveError> {
        let gw = v.gateway();
        let seq = i64_of(v.seq(), "seq")?;
        let mut c = self.pool.get().await.map_err(db)?;
        let tx = c.transaction().await.map_err(db)?;
        let ins = tx
            .prepare_cached("INSERT INTO gateways (id) VALUES ($1) ON CONFLICT DO NOTHING")
            .await
            .map_err(db)?;
        tx.execute(&ins, &[&gw]).await.map_err(db)?;
        let lock = tx
            .prepare_cached("SELECT head FROM gateways WHERE id = $1 FOR UPDATE")
            .await
            .map_err(db)?;
        let head: Option<String> = tx.query_one(&lock, &[&gw]).await.map_err(db)?.get(0);
        let view = Self::view_in(&tx, &v.kid, gw, v.report.header.site.as_str(), true).await?;
        if let Err(r) = crate::registry::admit(&view, admission.trust, v, admission.key) {
            tx.rollback().await.map_err(db)?;
            return Ok(ItemResult::rejected(Some(v), r.reason, r.detail));
        }
        let head: Option<ChainHead> = match head {
            None => None,
            Some(text) => {
                let s: StoredHead =
                    serde_json::from_str(&text).map_err(|e| ArchiveError::Corrupt {
                        what: format!("gateways.head of {gw}"),
                        why: e.to_string(),
                    })?;
                Some(ChainHead::try_from(s).map_err(|e| ArchiveError::Corrupt {
                    what: format!("gateways.head of {gw}"),
                    why: e.to_string(),
                })?)
            }
        };
        let at_seq = tx
            .prepare_cached(
                "SELECT hash, report_id, log_index FROM reports WHERE gateway = $1 AND seq = $2",
            )
            .await
            .map_err(db)?;
        let stored = tx.query_opt(&at_seq, &[&gw, &seq]).await.map_err(db)?;
        let stored_at_seq = match &stored {
            Some(r) => Some(hash_of(r.get::<_, &[u8]>(0), "reports.hash")?),
            None => None,
        };
        let kid_q = tx
            .prepare_cached("SELECT gateway FROM kids WHERE kid = $1")
            .await
            .map_err(db)?;
        let kid_gateway: Option<String> = tx
            .query_opt(&kid_q, &[&v.kid])
            .await
            .map_err(db)?
            .map(|r| r.get(0));
        let view = ChainView {
            head,
            stored_at_seq,
            kid_gateway,
        };
        match decide(&view, v) {
            Decision::Duplicate => {
                let row = stored.expect("a duplicate is stored");
                let index = u64_of(row.get(2));
                let report_id: String = row.get(1);
                let receipt = Self::receipt_at(&tx, &v.hash, index).await?;
                tx.rollback().await.map_err(db)?;
                Ok(ItemResult::stored(
                    ItemStatus::Duplicate,
                    &report_id,
                    v.seq(),
                    receipt,
                ))
            }
            Decision::Equivocation { stored } => {
                let flag = Flag::equivocation(v, &stored, now_ms);
                tx.execute(
                    "INSERT INTO equivocations (offered_hash, gateway, seq, stored_hash, time_ms, evidence) \
                     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (offered_hash) DO NOTHING",
                    &[
                        &v.hash.as_slice(),
                        &gw,
                        &seq,
                        &stored.as_slice(),
                        &i64_of(now_ms, "time")?,
                        &bytes,
                    ],
                )
                .await
                .map_err(db)?;
                tx.commit().await.map_err(db)?;
                tracing::error!(gateway = %gw, seq = v.seq(), stored = %flag.stored_hash, offered = %flag.offered_hash,
                    "EQUIVOCATION: gateway signed two different reports with one seq; rejected and flagged");
                Ok(ItemResult::equivocation(v))
            }
            Decision::Reject { reason, detail } => {
                tx.rollback().await.map_err(db)?;
                Ok(ItemResult::rejected(Some(v), reason, detail))
            }
            Decision::Accept { head, bind_kid } => {
                if bind_kid {
                    let bound: String = tx
                        .query_one(
                            "INSERT INTO kids (kid, gateway) VALUES ($1, $2) \
                             ON CONFLICT (kid) DO UPDATE SET kid = EXCLUDED.kid RETURNING gateway",
                            &[&v.kid, &gw],
                        )
                        .await
                        .map_err(db)?
                        .get(0);
                    if bound != gw {
                        // Another gateway's first report with this key won the race.
                        tx.rollback().await.map_err(db)?;
                        return Ok(ItemResult::rejected(
                            Some(v),
                            "kid_gateway_mismatch",
                            format!("key {:?} signs for gateway {bound:?}, not {gw:?}", v.kid),
                        ));
                    }
                }
                let log = tx
                    .prepare_cached("SELECT size, frontier FROM log_head WHERE id = 1 FOR UPDATE")
                    .await
                    .map_err(db)?;
                let row = tx.query_one(&log, &[]).await.map_err(db)?;
                let mut frontier = frontier_of(row.get(0), row.get(1))?;
                let index = frontier.size();
                let mut known = frontier.known_nodes();
                let done = frontier.append(entry_leaf_hash(&v.hash));
                let insert = tx
                    .prepare_cached(
                        "INSERT INTO reports (gateway, seq, report_id, hash, kid, period_start_ms, \
                         period_end_ms, readings, log_index, accepted_ms, bytes) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                    )
                    .await
                    .map_err(db)?;
                let p = v.report.header.period;
                tx.execute(
                    &insert,
                    &[
                        &gw,
                        &seq,
                        &v.id(),
                        &v.hash.as_slice(),
                        &v.kid,
                        &i64_of(p.start_ms, "period")?,
                        &i64_of(p.end_ms, "period")?,
                        &i64_of(v.report.readings.count, "readings")?,
                        &i64_of(index, "log index")?,
                        &i64_of(now_ms, "time")?,
                        &bytes,
                    ],
                )
                .await
                .map_err(db)?;
                Self::insert_ledger(&tx, &ledger::entry_of(v)).await?;
                let (size, checkpoint) = self.advance_log(&tx, &done, &frontier).await?;
                let stored_head =
                    serde_json::to_string(&StoredHead::from(&head)).expect("a head serialises");
                let upd_gw = tx
                    .prepare_cached(
                        "UPDATE gateways SET head = $2, head_seq = $3, reports = reports + 1, \
                         readings = readings + $4 WHERE id = $1",
                    )
                    .await
                    .map_err(db)?;
                tx.execute(
                    &upd_gw,
                    &[
                        &gw,
                        &stored_head,
                        &seq,
                        &i64_of(v.report.readings.count, "readings")?,
                    ],
                )
                .await
                .map_err(db)?;
                tx.commit().await.map_err(db)?;
                known.extend(done);
                let proof = hash_ranges(&inclusion_ranges(index, size), &known)
                    .expect("the last leaf's path lies in the old frontier");
                Ok(ItemResult::stored(
                    ItemStatus::Accepted,
                    v.id(),
                    v.seq(),
                    Receipt {
                        report_hash: v.hash_hex(),
                        log_index: index,
                        tree_size: size,
                        inclusion_proof: hex_hashes(&proof),
                        checkpoint,
                    },
                ))
            }
        }
    }

    /// The group-commit loop: takes every report waiting (at most
    /// [`MAX_GROUP`]) and commits them in one transaction, so the log head
    /// is locked, and the commit fsynced, once per group instead of once
    /// per report. Ends when every [`PgArchive`] clone is dropped.
    async fn group_commits(self, mut rx: tokio::sync::mpsc::Receiver<Job>) {
        // Holding a sender here would keep the loop alive forever: the
        // loop's own clone must not count.
        let PgArchive {
            pool,
            identity,
            queue,
            groups,
        } = self;
        drop(queue);
        let me = PgArchive {
            pool,
            identity,
            queue: tokio::sync::mpsc::channel(1).0,
            groups,
        };
        while let Some(first) = rx.recv().await {
            let mut jobs = vec![first];
            while jobs.len() < MAX_GROUP {
                match rx.try_recv() {
                    Ok(j) => jobs.push(j),
                    Err(_) => break,
                }
            }
            me.groups[0].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            me.groups[1].fetch_add(jobs.len() as u64, std::sync::atomic::Ordering::Relaxed);
            let results = if jobs.len() == 1 {
                vec![me.commit_job(&jobs[0]).await]
            } else {
                match me.commit_batch(&jobs).await {
                    Ok(r) => r.into_iter().map(Ok).collect(),
                    Err(e) => {
                        // Nothing of the group was stored: one by one.
                        tracing::warn!(error = %e, reports = jobs.len(), "group commit failed; committing one by one");
                        let mut out = Vec::with_capacity(jobs.len());
                        for j in &jobs {
                            out.push(me.commit_job(j).await);
                        }
                        out
                    }
                }
            };
            for (j, r) in jobs.into_iter().zip(results) {
                let _ = j.reply.send(r);
            }
        }
    }

    /// Commits one queued report in a transaction of its own (a lone job,
    /// or each job of a group whose commit failed).
    async fn commit_job(&self, j: &Job) -> Result<ItemResult, ArchiveError> {
        let admission = Admission {
            trust: &j.trust,
            key: &j.key,
        };
        self.commit_tx(&j.bytes, &j.v, j.now_ms, &admission).await
    }

    /// Commits a group of reports in one transaction (the module doc's
    /// steps, for each report in (gateway, seq) order, with one log head
    /// update). `Err`: nothing was stored.
    async fn commit_batch(&self, jobs: &[Job]) -> Result<Vec<ItemResult>, ArchiveError> {
        let mut order: Vec<usize> = (0..jobs.len()).collect();
        order.sort_by(|&a, &b| {
            (jobs[a].v.gateway(), jobs[a].v.seq()).cmp(&(jobs[b].v.gateway(), jobs[b].v.seq()))
        });
        let mut results: Vec<Option<ItemResult>> = vec![None; jobs.len()];
        let mut c = self.pool.get().await.map_err(db)?;
        let tx = c.transaction().await.map_err(db)?;
        // Phase 1: lock each gateway, re-check the registry, decide.
        let mut heads: BTreeMap<String, Option<ChainHead>> = BTreeMap::new();
        let mut stored_in_group: BTreeMap<(String, u64), Hash> = BTreeMap::new();
        let mut kids_in_group: BTreeMap<String, String> = BTreeMap::new();
        let mut accepted: Vec<Accepted> = Vec::new();
        let mut duplicates: Vec<(usize, String, u64)> = Vec::new();
        for &i in &order {
            let j = &jobs[i];
            let v = &j.v;
            let gw = v.gateway().to_string();
            if !super::file::safe_gateway(&gw) {
                results[i] = Some(ItemResult::rejected(
                    Some(v),
                    "malformed",
                    format!("gateway id {gw:?} is not a valid id"),
                ));
                continue;
            }
            let seq = i64_of(v.seq(), "seq")?;
            if !heads.contains_key(&gw) {
                let ins = tx
                    .prepare_cached("INSERT INTO gateways (id) VALUES ($1) ON CONFLICT DO NOTHING")
                    .await
                    .map_err(db)?;
                tx.execute(&ins, &[&gw]).await.map_err(db)?;
                let lock = tx
                    .prepare_cached("SELECT head FROM gateways WHERE id = $1 FOR UPDATE")
                    .await
                    .map_err(db)?;
                let text: Option<String> = tx.query_one(&lock, &[&gw]).await.map_err(db)?.get(0);
                let head = match text {
                    None => None,
                    Some(t) => {
                        let sh: StoredHead = doc(&t, "gateways.head")?;
                        Some(ChainHead::try_from(sh).map_err(|e| ArchiveError::Corrupt {
                            what: format!("gateways.head of {gw}"),
                            why: e.to_string(),
                        })?)
                    }
                };
                heads.insert(gw.clone(), head);
            }
            let view = Self::view_in(&tx, &v.kid, &gw, v.report.header.site.as_str(), true).await?;
            if let Err(r) = crate::registry::admit(&view, &j.trust, v, &j.key) {
                results[i] = Some(ItemResult::rejected(Some(v), r.reason, r.detail));
                continue;
            }
            let stored_at_seq = match stored_in_group.get(&(gw.clone(), v.seq())) {
                Some(h) => Some(*h),
                None => {
                    let at_seq = tx
                        .prepare_cached(
                            "SELECT hash, report_id, log_index FROM reports WHERE gateway = $1 AND seq = $2",
                        )
                        .await
                        .map_err(db)?;
                    match tx.query_opt(&at_seq, &[&gw, &seq]).await.map_err(db)? {
                        Some(r) => {
                            let h = hash_of(r.get::<_, &[u8]>(0), "reports.hash")?;
                            if h == v.hash {
                                duplicates.push((i, r.get(1), u64_of(r.get(2))));
                            }
                            Some(h)
                        }
                        None => None,
                    }
                }
            };
            let kid_gateway = match kids_in_group.get(&v.kid) {
                Some(g) => Some(g.clone()),
                None => {
                    let kid_q = tx
                        .prepare_cached("SELECT gateway FROM kids WHERE kid = $1")
                        .await
                        .map_err(db)?;
                    tx.query_opt(&kid_q, &[&v.kid])
                        .await
                        .map_err(db)?
                        .map(|r| r.get(0))
                }
            };
            let view = ChainView {
                head: heads[&gw].clone(),
                stored_at_seq,
                kid_gateway,
            };
            match decide(&view, v) {
                Decision::Duplicate => {
                    if !duplicates.iter().any(|(d, _, _)| *d == i) {
                        // The same bytes twice in one group: the second is a
                        // duplicate of the first (answered after the commit).
                        duplicates.push((i, v.id().to_string(), u64::MAX));
                    }
                }
                Decision::Equivocation { stored } => {
                    tx.execute(
                        "INSERT INTO equivocations (offered_hash, gateway, seq, stored_hash, time_ms, evidence) \
                         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (offered_hash) DO NOTHING",
                        &[
                            &v.hash.as_slice(),
                            &gw,
                            &seq,
                            &stored.as_slice(),
                            &i64_of(j.now_ms, "time")?,
                            &j.bytes,
                        ],
                    )
                    .await
                    .map_err(db)?;
                    tracing::error!(gateway = %gw, seq = v.seq(),
                        "EQUIVOCATION: gateway signed two different reports with one seq; rejected and flagged");
                    results[i] = Some(ItemResult::equivocation(v));
                }
                Decision::Reject { reason, detail } => {
                    results[i] = Some(ItemResult::rejected(Some(v), reason, detail));
                }
                Decision::Accept { head, bind_kid } => {
                    if bind_kid && !kids_in_group.contains_key(&v.kid) {
                        let bound: String = tx
                            .query_one(
                                "INSERT INTO kids (kid, gateway) VALUES ($1, $2) \
                                 ON CONFLICT (kid) DO UPDATE SET kid = EXCLUDED.kid RETURNING gateway",
                                &[&v.kid, &gw],
                            )
                            .await
                            .map_err(db)?
                            .get(0);
                        if bound != gw {
                            results[i] = Some(ItemResult::rejected(
                                Some(v),
                                "kid_gateway_mismatch",
                                format!("key {:?} signs for gateway {bound:?}, not {gw:?}", v.kid),
                            ));
                            continue;
                        }
                    }
                    kids_in_group.insert(v.kid.clone(), gw.clone());
                    stored_in_group.insert((gw.clone(), v.seq()), v.hash);
                    heads.insert(gw.clone(), Some(head.clone()));
                    accepted.push(Accepted { job: i, head });
                }
            }
        }
        // Phase 2: the log, once for the group.
        let mut receipts_for: Vec<(usize, u64)> = Vec::new();
        let mut tree: Option<(u64, String, BTreeMap<NodeId, Hash>)> = None;
        if !accepted.is_empty() {
            let log = tx
                .prepare_cached("SELECT size, frontier FROM log_head WHERE id = 1 FOR UPDATE")
                .await
                .map_err(db)?;
            let row = tx.query_one(&log, &[]).await.map_err(db)?;
            let mut frontier = frontier_of(row.get(0), row.get(1))?;
            let mut known = frontier.known_nodes();
            let insert = tx
                .prepare_cached(
                    "INSERT INTO reports (gateway, seq, report_id, hash, kid, period_start_ms, \
                     period_end_ms, readings, log_index, accepted_ms, bytes) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                )
                .await
                .map_err(db)?;
            let mut done_all: Vec<(NodeId, Hash)> = Vec::new();
            let mut last_head: BTreeMap<String, (i64, String)> = BTreeMap::new();
            let mut readings: BTreeMap<String, i64> = BTreeMap::new();
            for a in &accepted {
                let j = &jobs[a.job];
                let v = &j.v;
                let index = frontier.size();
                done_all.extend(frontier.append(entry_leaf_hash(&v.hash)));
                let p = v.report.header.period;
                tx.execute(
                    &insert,
                    &[
                        &v.gateway(),
                        &i64_of(v.seq(), "seq")?,
                        &v.id(),
                        &v.hash.as_slice(),
                        &v.kid,
                        &i64_of(p.start_ms, "period")?,
                        &i64_of(p.end_ms, "period")?,
                        &i64_of(v.report.readings.count, "readings")?,
                        &i64_of(index, "log index")?,
                        &i64_of(j.now_ms, "time")?,
                        &j.bytes,
                    ],
                )
                .await
                .map_err(db)?;
                Self::insert_ledger(&tx, &ledger::entry_of(v)).await?;
                last_head.insert(
                    v.gateway().to_string(),
                    (
                        i64_of(v.seq(), "seq")?,
                        serde_json::to_string(&StoredHead::from(&a.head))
                            .expect("a head serialises"),
                    ),
                );
                *readings.entry(v.gateway().to_string()).or_default() +=
                    i64_of(v.report.readings.count, "readings")?;
                receipts_for.push((a.job, index));
            }
            let (size, checkpoint) = self.advance_log(&tx, &done_all, &frontier).await?;
            let upd_gw = tx
                .prepare_cached(
                    "UPDATE gateways SET head = $2, head_seq = $3, reports = reports + $5, \
                     readings = readings + $4 WHERE id = $1",
                )
                .await
                .map_err(db)?;
            for (gw, (seq, head)) in &last_head {
                let n = accepted
                    .iter()
                    .filter(|a| jobs[a.job].v.gateway() == gw)
                    .count() as i64;
                tx.execute(&upd_gw, &[gw, head, seq, &readings[gw], &n])
                    .await
                    .map_err(db)?;
            }
            known.extend(done_all);
            tree = Some((size, checkpoint, known));
        }
        tx.commit().await.map_err(db)?;
        // The answers below may need a connection of their own: give this
        // one back first (a pool of one would wait for itself).
        drop(c);
        // Receipts of the accepted, against the group's checkpoint.
        if let Some((size, checkpoint, known)) = &tree {
            for (i, index) in receipts_for {
                let v = &jobs[i].v;
                let proof = match hash_ranges(&inclusion_ranges(index, *size), known) {
                    Some(p) => p,
                    None => {
                        let c = self.pool.get().await.map_err(db)?;
                        Self::proof(&c, &inclusion_ranges(index, *size)).await?
                    }
                };
                results[i] = Some(ItemResult::stored(
                    ItemStatus::Accepted,
                    v.id(),
                    v.seq(),
                    Receipt {
                        report_hash: v.hash_hex(),
                        log_index: index,
                        tree_size: *size,
                        inclusion_proof: hex_hashes(&proof),
                        checkpoint: checkpoint.clone(),
                    },
                ));
            }
        }
        // Duplicates: receipts against the tree as it is now.
        for (i, _, _) in duplicates {
            if results[i].is_none() {
                results[i] = self.duplicate(jobs[i].v.hash).await?;
            }
        }
        results
            .into_iter()
            .enumerate()
            .map(|(i, r)| {
                r.ok_or_else(|| ArchiveError::Corrupt {
                    what: String::from("group commit"),
                    why: format!("report {} got no answer", jobs[i].v.id()),
                })
            })
            .collect()
    }

    /// Commit transactions run by this process's group commit, and the
    /// reports they held (their ratio is the mean group size).
    pub fn group_stats(&self) -> (u64, u64) {
        (
            self.groups[0].load(std::sync::atomic::Ordering::Relaxed),
            self.groups[1].load(std::sync::atomic::Ordering::Relaxed),
        )
    }

    /// Bytes the database occupies (`pg_database_size`), for benchmarks.
    pub async fn database_bytes(&self) -> Result<u64, ArchiveError> {
        let c = self.pool.get().await.map_err(db)?;
        let n: i64 = c
            .query_one("SELECT pg_database_size(current_database())", &[])
            .await
            .map_err(db)?
            .get(0);
        Ok(u64_of(n))
    }
}

fn doc<T: serde::de::DeserializeOwned>(text: &str, table: &str) -> Result<T, ArchiveError> {
    serde_json::from_str(text).map_err(|e| ArchiveError::Corrupt {
        what: table.to_string(),
        why: e.to_string(),
    })
}

fn flag_of(r: &tokio_postgres::Row) -> Flag {
    Flag {
        gateway: r.get(0),
        seq: u64_of(r.get(1)),
        stored_hash: hex(r.get::<_, &[u8]>(2)),
        offered_hash: hex(r.get::<_, &[u8]>(3)),
        time_ms: u64_of(r.get(4)),
        reason: String::from("equivocation"),
    }
}

const FLAG_COLUMNS: &str = "gateway, seq, stored_hash, offered_hash, time_ms";

impl Archive for PgArchive {
    async fn duplicate(&self, hash: Hash) -> Result<Option<ItemResult>, ArchiveError> {
        let c = self.pool.get().await.map_err(db)?;
        let q = c
            .prepare_cached("SELECT report_id, seq, log_index FROM reports WHERE hash = $1")
            .await
            .map_err(db)?;
        let Some(row) = c.query_opt(&q, &[&hash.as_slice()]).await.map_err(db)? else {
            return Ok(None);
        };
        let report_id: String = row.get(0);
        let receipt = Self::receipt_at(&c, &hash, u64_of(row.get(2))).await?;
        Ok(Some(ItemResult::stored(
            ItemStatus::Duplicate,
            &report_id,
            u64_of(row.get(1)),
            receipt,
        )))
    }

    async fn commit(
        &self,
        bytes: &[u8],
        v: &VerifiedReport,
        now_ms: u64,
        admission: &Admission<'_>,
    ) -> Result<ItemResult, ArchiveError> {
        if !super::file::safe_gateway(v.gateway()) {
            return Ok(ItemResult::rejected(
                Some(v),
                "malformed",
                format!("gateway id {:?} is not a valid id", v.gateway()),
            ));
        }
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job = Job {
            bytes: bytes.to_vec(),
            v: v.clone(),
            now_ms,
            trust: admission.trust.clone(),
            key: admission.key.clone(),
            reply,
        };
        if self.queue.send(job).await.is_err() {
            return Err(ArchiveError::Database(String::from(
                "the group-commit task has stopped",
            )));
        }
        answer.await.unwrap_or_else(|_| {
            Err(ArchiveError::Database(String::from(
                "the group-commit task dropped a report",
            )))
        })
    }

    async fn registry_view(
        &self,
        kid: &str,
        gateway: &str,
        site: &str,
    ) -> Result<RegistryView, ArchiveError> {
        let c = self.pool.get().await.map_err(db)?;
        Self::view_in(&c, kid, gateway, site, false).await
    }

    async fn registry_change(
        &self,
        change: &Change,
        actor: &str,
        now_ms: u64,
    ) -> Result<Result<AuditRecord, RegistryError>, ArchiveError> {
        self.registry_change_tx(change, actor, now_ms).await
    }

    async fn registry(&self) -> Result<Registry, ArchiveError> {
        let c = self.pool.get().await.map_err(db)?;
        let mut r = Registry::default();
        for row in c
            .query("SELECT id, doc FROM registry_gateways ORDER BY id", &[])
            .await
            .map_err(db)?
        {
            r.gateways
                .insert(row.get(0), doc(row.get(1), "registry_gateways")?);
        }
        for row in c
            .query("SELECT site, doc FROM registry_sites ORDER BY site", &[])
            .await
            .map_err(db)?
        {
            r.sites
                .insert(row.get(0), doc(row.get(1), "registry_sites")?);
        }
        Ok(r)
    }

    async fn registry_history(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<AuditRecord>, ArchiveError> {
        let c = self.pool.get().await.map_err(db)?;
        c.query(
            "SELECT record FROM registry_audit WHERE seq > $1 ORDER BY seq LIMIT $2",
            &[
                &i64_of(after.min(i64::MAX as u64), "after")?,
                // "All of them" (usize::MAX, as the statement asks) is
                // more than any table holds: the largest bigint.
                &i64_of((limit as u64).min(i64::MAX as u64), "limit")?,
            ],
        )
        .await
        .map_err(db)?
        .iter()
        .map(|r| doc(r.get(0), "registry_audit"))
        .collect()
    }

    async fn fetch(&self, report_id: &str) -> Result<Option<Vec<u8>>, ArchiveError> {
        let c = self.pool.get().await.map_err(db)?;
        Ok(c.query_opt(
            "SELECT bytes FROM reports WHERE report_id = $1",
            &[&report_id],
        )
        .await
        .map_err(db)?
        .map(|r| r.get(0)))
    }

    async fn receipt(&self, report_id: &str) -> Result<Option<Receipt>, ArchiveError> {
        let c = self.pool.get().await.map_err(db)?;
        let Some(row) = c
            .query_opt(
                "SELECT hash, log_index FROM reports WHERE report_id = $1",
                &[&report_id],
            )
            .await
            .map_err(db)?
        else {
            return Ok(None);
        };
        let hash = hash_of(row.get::<_, &[u8]>(0), "reports.hash")?;
        Self::receipt_at(&c, &hash, u64_of(row.get(1)))
            .await
            .map(Some)
    }

    async fn gateways(&self) -> Result<Vec<String>, ArchiveError> {
        let c = self.pool.get().await.map_err(db)?;
        Ok(c.query("SELECT id FROM gateways ORDER BY id", &[])
            .await
            .map_err(db)?
            .into_iter()
            .map(|r| r.get(0))
            .collect())
    }

    async fn chain_status(&self, gateway: &str) -> Result<Option<ChainStatus>, ArchiveError> {
        let c = self.pool.get().await.map_err(db)?;
        let Some(row) = c
            .query_opt(
                "SELECT head, reports, readings FROM gateways WHERE id = $1",
                &[&gateway],
            )
            .await
            .map_err(db)?
        else {
            return Ok(None);
        };
        let head: Option<StoredHead> = row
            .get::<_, Option<String>>(0)
            .map(|t| serde_json::from_str(&t))
            .transpose()
            .map_err(|e| ArchiveError::Corrupt {
                what: format!("gateways.head of {gateway}"),
                why: e.to_string(),
            })?;
        let flags = c
            .query(
                &format!(
                    "SELECT {FLAG_COLUMNS} FROM equivocations WHERE gateway = $1 ORDER BY seq, time_ms"
                ),
                &[&gateway],
            )
            .await
            .map_err(db)?;
        Ok(Some(ChainStatus {
            gateway: gateway.to_string(),
            reports: u64_of(row.get(1)),
            head_seq: head.as_ref().map_or(0, |h| h.seq),
            head_hash: head.as_ref().map(|h| h.hash.clone()),
            head_period_end_ms: head.as_ref().map(|h| h.period_end_ms),
            readings: u64_of(row.get(2)),
            equivocations: flags.iter().map(flag_of).collect(),
        }))
    }

    async fn list(
        &self,
        gateway: &str,
        after: u64,
        limit: usize,
    ) -> Result<Option<Vec<Entry>>, ArchiveError> {
        let c = self.pool.get().await.map_err(db)?;
        let known = c
            .query_opt("SELECT 1 FROM gateways WHERE id = $1", &[&gateway])
            .await
            .map_err(db)?;
        if known.is_none() {
            return Ok(None);
        }
        let rows = c
            .query(
                "SELECT seq, report_id, hash, octet_length(bytes), period_start_ms, period_end_ms, \
                 readings, log_index FROM reports WHERE gateway = $1 AND seq > $2 ORDER BY seq LIMIT $3",
                &[
                    &gateway,
                    &i64_of(after.min(i64::MAX as u64), "after")?,
                    &i64_of(limit as u64, "limit")?,
                ],
            )
            .await
            .map_err(db)?;
        Ok(Some(
            rows.iter()
                .map(|r| Entry {
                    seq: u64_of(r.get(0)),
                    report_id: r.get(1),
                    hash: hex(r.get::<_, &[u8]>(2)),
                    bytes: u64_of(i64::from(r.get::<_, i32>(3))),
                    period_start_ms: u64_of(r.get(4)),
                    period_end_ms: u64_of(r.get(5)),
                    readings: u64_of(r.get(6)),
                    log_index: u64_of(r.get(7)),
                })
                .collect(),
        ))
    }

    async fn flags(&self) -> Result<Vec<Flag>, ArchiveError> {
        let c = self.pool.get().await.map_err(db)?;
        Ok(c.query(
            &format!("SELECT {FLAG_COLUMNS} FROM equivocations ORDER BY gateway, seq, time_ms"),
            &[],
        )
        .await
        .map_err(db)?
        .iter()
        .map(flag_of)
        .collect())
    }

    async fn evidence(&self, offered_hash: &str) -> Result<Option<Vec<u8>>, ArchiveError> {
        let Ok(h) = parse_hash(offered_hash) else {
            return Ok(None);
        };
        let c = self.pool.get().await.map_err(db)?;
        Ok(c.query_opt(
            "SELECT evidence FROM equivocations WHERE offered_hash = $1",
            &[&h.as_slice()],
        )
        .await
        .map_err(db)?
        .map(|r| r.get(0)))
    }

    async fn checkpoint(&self) -> Result<String, ArchiveError> {
        let c = self.pool.get().await.map_err(db)?;
        Ok(
            c.query_one("SELECT checkpoint FROM log_head WHERE id = 1", &[])
                .await
                .map_err(db)?
                .get(0),
        )
    }

    async fn consistency(&self, old: u64, new: u64) -> Result<ConsistencyProof, ArchiveError> {
        let c = self.pool.get().await.map_err(db)?;
        let size: i64 = c
            .query_one("SELECT size FROM log_head WHERE id = 1", &[])
            .await
            .map_err(db)?
            .get(0);
        let size = u64_of(size);
        if old > new || new > size {
            return Err(ArchiveError::Log(format!(
                "no consistency proof from {old} to {new}: the log has {size} entries"
            )));
        }
        let proof = Self::proof(&c, &consistency_ranges(old, new)).await?;
        Ok(ConsistencyProof {
            old_size: old,
            new_size: new,
            proof: hex_hashes(&proof),
        })
    }

    async fn ledger(&self, q: &LedgerQuery) -> Result<Vec<LedgerEntry>, ArchiveError> {
        let c = self.pool.get().await.map_err(db)?;
        let rows = c
            .query(
                "SELECT gateway, seq, entry FROM ledger_reports WHERE project = $1 \
                 AND ($2::text IS NULL OR site = $2) AND period_start_ms < $4 AND period_end_ms > $3 \
                 ORDER BY site, gateway, seq",
                &[
                    &q.project,
                    &q.site,
                    &i64_of(q.from_ms, "from")?,
                    &i64_of(q.to_ms, "to")?,
                ],
            )
            .await
            .map_err(db)?;
        rows.iter().map(ledger_entry_of).collect()
    }

    async fn ledger_page(
        &self,
        q: &LedgerQuery,
        after: Option<&LedgerKey>,
        limit: usize,
    ) -> Result<Vec<LedgerEntry>, ArchiveError> {
        let c = self.pool.get().await.map_err(db)?;
        let (from, to) = (i64_of(q.from_ms, "from")?, i64_of(q.to_ms, "to")?);
        let limit = i64_of(limit as u64, "limit")?;
        // The (project, site, gateway, seq) index gives the order and the
        // start of each page.
        let rows = match after {
            None => {
                c.query(
                    "SELECT gateway, seq, entry FROM ledger_reports WHERE project = $1 \
                     AND ($2::text IS NULL OR site = $2) AND period_start_ms < $4 AND period_end_ms > $3 \
                     ORDER BY project, site, gateway, seq LIMIT $5",
                    &[&q.project, &q.site, &from, &to, &limit],
                )
                .await
            }
            Some(k) => {
                c.query(
                    "SELECT gateway, seq, entry FROM ledger_reports WHERE project = $1 \
                     AND ($2::text IS NULL OR site = $2) AND period_start_ms < $4 AND period_end_ms > $3 \
                     AND (project, site, gateway, seq) > ($1, $6, $7, $8) \
                     ORDER BY project, site, gateway, seq LIMIT $5",
                    &[
                        &q.project,
                        &q.site,
                        &from,
                        &to,
                        &limit,
                        &k.site,
                        &k.gateway,
                        &i64_of(k.seq, "seq")?,
                    ],
                )
                .await
            }
        }
        .map_err(db)?;
        rows.iter().map(ledger_entry_of).collect()
    }
}

/// The ledger entry of a `gateway, seq, entry` row of `ledger_reports`.
fn ledger_entry_of(r: &tokio_postgres::Row) -> Result<LedgerEntry, ArchiveError> {
    serde_json::from_str(r.get(2)).map_err(|e| ArchiveError::Corrupt {
        what: format!(
            "ledger_reports {} seq {}",
            r.get::<_, &str>(0),
            r.get::<_, i64>(1)
        ),
        why: e.to_string(),
    })
}
