//! The chain decision, pure: given what the archive holds for one gateway
//! (its head, the report stored at the offered seq, the gateway the key is
//! bound to) and a verified report, decide: duplicate, equivocation,
//! rejection, or acceptance with the new head.
//!
//! Both archives take this decision under their own exclusion (the file
//! archive's mutex; PostgreSQL's row lock on the gateway, in the
//! transaction that then stores the report), so two receivers racing on one
//! gateway see each other's accepted report and never both accept.
//!
//! [`StoredHead`] is the head's serialised form (the PostgreSQL archive
//! keeps it in the gateway's row).

use mrv_shared::ids::DeviceId;
use mrv_shared::report::merkle::Hash;
use mrv_shared::report::model::Point;
use mrv_shared::report::verify::{ChainHead, check_link};
use mrv_shared::report::{ReportError, VerifiedReport};
use serde::{Deserialize, Serialize};

/// What the archive holds that the decision on one report needs.
#[derive(Debug, Clone, Default)]
pub struct ChainView {
    /// The gateway's head (`None`: nothing accepted yet).
    pub head: Option<ChainHead>,
    /// Hash of the report already stored at the offered seq, if any.
    pub stored_at_seq: Option<Hash>,
    /// The gateway the report's key id signs for, if bound.
    pub kid_gateway: Option<String>,
}

/// The verdict on one offered, verified report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// These exact bytes are stored at this seq.
    Duplicate,
    /// Other bytes are stored at this seq: the gateway signed two reports
    /// with one seq. Rejected, flagged, the offered bytes kept as evidence.
    Equivocation {
        /// Hash of the stored report.
        stored: Hash,
    },
    /// Not stored.
    Reject {
        /// Stable short reason.
        reason: &'static str,
        /// Detail.
        detail: String,
    },
    /// Store it; the gateway's head becomes `head`.
    Accept {
        /// The new head.
        head: ChainHead,
        /// True when the key id was not bound yet (bind it to this gateway).
        bind_kid: bool,
    },
}

/// Decides on `v` given `view` (see the module doc).
pub fn decide(view: &ChainView, v: &VerifiedReport) -> Decision {
    if let Some(stored) = view.stored_at_seq {
        return if stored == v.hash {
            Decision::Duplicate
        } else {
            Decision::Equivocation { stored }
        };
    }
    if let Some(bound) = &view.kid_gateway
        && bound != v.gateway()
    {
        return Decision::Reject {
            reason: "kid_gateway_mismatch",
            detail: format!(
                "key {:?} signs for gateway {bound:?}, not {:?}",
                v.kid,
                v.gateway()
            ),
        };
    }
    if let Err(e) = check_link(view.head.as_ref(), v, false) {
        return Decision::Reject {
            reason: e.label(),
            detail: e.to_string(),
        };
    }
    Decision::Accept {
        head: ChainHead::of(v, view.head.as_ref()),
        bind_kid: view.kid_gateway.is_none(),
    }
}

/// Serialised [`ChainHead`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoredHead {
    /// Seq.
    pub seq: u64,
    /// Hex hash.
    pub hash: String,
    /// Period end.
    pub period_end_ms: u64,
    /// Counter last values: `[device, channel, point]`.
    pub counters: Vec<(DeviceId, String, Point)>,
    /// Each device's last accounted frame seq: `[device, seq]`.
    #[serde(default)]
    pub positions: Vec<(DeviceId, u64)>,
    /// Rice AWD end states by calculation id.
    #[serde(default)]
    pub awd: Vec<(
        String,
        std::collections::BTreeMap<String, mrv_shared::methodology::awd::AwdState>,
    )>,
}

impl From<&ChainHead> for StoredHead {
    fn from(h: &ChainHead) -> StoredHead {
        StoredHead {
            seq: h.seq,
            hash: mrv_shared::report::hex(&h.hash),
            period_end_ms: h.period_end_ms,
            counters: h
                .counters
                .iter()
                .map(|((d, c), p)| (d.clone(), c.clone(), *p))
                .collect(),
            positions: h.positions.iter().map(|(d, s)| (d.clone(), *s)).collect(),
            awd: h.awd.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        }
    }
}

impl TryFrom<StoredHead> for ChainHead {
    type Error = ReportError;
    fn try_from(s: StoredHead) -> Result<ChainHead, ReportError> {
        let hash = mrv_shared::tlog::receipt::parse_hash(&s.hash)
            .map_err(|e| ReportError::Malformed(e.to_string()))?;
        Ok(ChainHead {
            seq: s.seq,
            hash,
            period_end_ms: s.period_end_ms,
            counters: s
                .counters
                .into_iter()
                .map(|(d, c, p)| ((d, c), p))
                .collect(),
            positions: s.positions.into_iter().collect(),
            awd: s.awd.into_iter().collect(),
        })
    }
}
