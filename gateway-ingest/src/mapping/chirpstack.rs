//! ChirpStack v4 MQTT integration events (JSON marshaler) for a
//! `format = "chirpstack_v4"` mapping: the event envelope and the pure
//! per-device frame-counter tracker.
//!
//! ChirpStack publishes each event on
//! `application/<applicationId>/device/<devEui>/event/<type>`, JSON per the
//! Protobuf JSON mapping of `integration.proto` (camelCase member names;
//! members with their default value, e.g. `fCnt` 0, may be left out, so an
//! absent `fCnt` is 0 by that mapping, not a guess). Used members:
//! - `up`: `deduplicationId`, `time`, `deviceInfo.devEui`, `devAddr`,
//!   `fCnt`, `object` (the device-profile codec's output; absent when the
//!   profile has no codec or the codec failed);
//! - `join`: `deduplicationId`, `deviceInfo.devEui`, `devAddr`;
//! - `log`: `deviceInfo.devEui`, `level`, `code` (`UPLINK_CODEC`, ...),
//!   `description`, `context.deduplication_id` (ChirpStack publishes the
//!   codec's `log` before the `up` of the same uplink).
//!
//! [`FcntTracker`] invariants (per mapping and devEui):
//! - the *epoch* starts at 0 when the gateway first hears the device and
//!   goes up by one on a `join`, on a `devAddr` different from the last one
//!   seen, or on an `fCnt` below the last one seen (an ABP device reset, or a
//!   join the gateway did not see): each is one [`SessionReset`];
//! - within an epoch, an `fCnt` above the next expected one means the
//!   uplinks in between were lost: one [`UplinksLost`] with the range; the
//!   first uplink after a join is expected to be `fCnt` 0; after a start or
//!   an unexplained reset nothing is known about the next count, so no loss
//!   is claimed;
//! - an `fCnt` equal to the last one is the same uplink again (a redelivery
//!   or a re-offer after a refusal); the stage's (devEui, epoch, fCnt) key
//!   says whether it was already stored; it changes nothing here;
//! - [`FcntTracker::judge`] does not change state; [`FcntTracker::commit`]
//!   applies a judgement, so a duplicate leaves the tracker untouched.
//!
//! The tracker is in memory: after a gateway restart a device starts a new
//! epoch 0 and no loss is counted across the restart (documented in
//! `docs/LORAWAN.md`).

use serde_json::Value;
use std::collections::HashMap;

/// Most devices tracked at once (oldest-heard dropped first beyond it).
pub const MAX_DEVICES: usize = 100_000;

/// The ChirpStack event type, from the topic's last level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// `up`: an uplink with data.
    Up,
    /// `join`: the device (re)joined (OTAA).
    Join,
    /// `log`: a device-related log entry (codec errors and others).
    Log,
    /// `status`, `ack`, `txack`, `location`, `integration`: not data here.
    Other,
}

impl EventType {
    /// The event type of `topic` (`application/../event/<type>`).
    pub fn of_topic(topic: &str) -> EventType {
        match topic.rsplit('/').next().unwrap_or("") {
            "up" => EventType::Up,
            "join" => EventType::Join,
            "log" => EventType::Log,
            _ => EventType::Other,
        }
    }
}

/// The members of an event this module uses, read from the JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// `deviceInfo.devEui` (lower-cased hex).
    pub dev_eui: String,
    /// `deduplicationId` (`up`, `join`), or `context.deduplication_id` /
    /// `deduplicationId` (`log`).
    pub dedup_id: Option<String>,
    /// `devAddr`, when given.
    pub dev_addr: Option<String>,
    /// `fCnt` (`up`; absent = 0 per the Protobuf JSON mapping).
    pub fcnt: u32,
}

/// Why an envelope could not be read: a member and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvelopeError {
    /// `missing_path` or `bad_envelope`.
    pub reason: &'static str,
    /// What and where.
    pub detail: String,
}

fn string_at<'v>(v: &'v Value, path: &[&str]) -> Option<&'v Value> {
    path.iter().try_fold(v, |v, k| v.get(*k))
}

impl Envelope {
    /// Reads the envelope of an event of type `ty`.
    pub fn read(v: &Value, ty: EventType) -> Result<Envelope, EnvelopeError> {
        let dev_eui = match string_at(v, &["deviceInfo", "devEui"]) {
            Some(Value::String(s)) if s.len() == 16 && s.bytes().all(|b| b.is_ascii_hexdigit()) => {
                s.to_ascii_lowercase()
            }
            Some(other) => {
                return Err(EnvelopeError {
                    reason: "bad_envelope",
                    detail: format!(
                        "$.deviceInfo.devEui is {other}, not an EUI-64 (16 hex digits)"
                    ),
                });
            }
            None => {
                return Err(EnvelopeError {
                    reason: "missing_path",
                    detail: "$.deviceInfo.devEui matches nothing".into(),
                });
            }
        };
        let text = |path: &[&str]| match string_at(v, path) {
            Some(Value::String(s)) if !s.is_empty() => Ok(Some(s.clone())),
            None | Some(Value::Null) => Ok(None),
            Some(other) => Err(EnvelopeError {
                reason: "bad_envelope",
                detail: format!("$.{} is {other}, not a string", path.join(".")),
            }),
        };
        let dedup_id = match ty {
            EventType::Log => {
                text(&["context", "deduplication_id"])?.or(text(&["deduplicationId"])?)
            }
            _ => text(&["deduplicationId"])?,
        };
        if ty == EventType::Up && dedup_id.is_none() {
            return Err(EnvelopeError {
                reason: "missing_path",
                detail: "$.deduplicationId matches nothing (ChirpStack v4 sets it on every uplink)"
                    .into(),
            });
        }
        let dev_addr = text(&["devAddr"])?.map(|a| a.to_ascii_lowercase());
        let fcnt = match v.get("fCnt") {
            None => 0,
            Some(Value::Number(n)) => {
                n.as_u64()
                    .and_then(|n| u32::try_from(n).ok())
                    .ok_or_else(|| EnvelopeError {
                        reason: "bad_envelope",
                        detail: format!("$.fCnt is {n}, not a 32-bit unsigned frame counter"),
                    })?
            }
            Some(other) => {
                return Err(EnvelopeError {
                    reason: "bad_envelope",
                    detail: format!("$.fCnt is {other}, not a number"),
                });
            }
        };
        Ok(Envelope {
            dev_eui,
            dedup_id,
            dev_addr,
            fcnt,
        })
    }
}

/// Why an epoch ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetCause {
    /// ChirpStack reported a join.
    Join,
    /// The uplink came from another device address.
    DevAddrChange,
    /// The frame counter went below the last one seen.
    FcntBackwards,
}

impl ResetCause {
    /// Stable name (first word of the event detail).
    pub fn name(self) -> &'static str {
        match self {
            ResetCause::Join => "join",
            ResetCause::DevAddrChange => "dev_addr_change",
            ResetCause::FcntBackwards => "fcnt_backwards",
        }
    }
}

/// A new epoch began.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionReset {
    /// Cause.
    pub cause: ResetCause,
    /// The new epoch.
    pub epoch: u32,
    /// Last fCnt of the old epoch, if any uplink was seen in it.
    pub last_fcnt: Option<u32>,
    /// The fCnt that started the new epoch (`None` for a join: no uplink yet).
    pub fcnt: Option<u32>,
    /// Device address before.
    pub old_dev_addr: Option<String>,
    /// Device address now.
    pub dev_addr: Option<String>,
}

/// Uplinks lost within an epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UplinksLost {
    /// Epoch.
    pub epoch: u32,
    /// First lost fCnt.
    pub first: u32,
    /// Last lost fCnt.
    pub last: u32,
    /// When the uplink before the loss was heard (Unix ms), if one was.
    pub after_ms: Option<u64>,
    /// When the uplink after the loss was heard (Unix ms).
    pub until_ms: u64,
}

impl UplinksLost {
    /// Number of uplinks lost.
    pub fn count(&self) -> u64 {
        u64::from(self.last) - u64::from(self.first) + 1
    }
}

#[derive(Debug, Clone, Default)]
struct Session {
    epoch: u32,
    dev_addr: Option<String>,
    last_fcnt: Option<u32>,
    /// The next fCnt expected, when known (after an uplink, or 0 after a join).
    expected: Option<u32>,
    last_ms: Option<u64>,
    heard_ms: u64,
    device: String,
    uplinks_lost: u64,
    resets: u64,
}

/// One device's session as the technician sees it (diagnostics).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SessionView {
    /// Mapping id.
    pub mapping: String,
    /// Device id (as last mapped).
    pub device: String,
    /// devEui.
    pub dev_eui: String,
    /// Current epoch (since the gateway started).
    pub epoch: u32,
    /// Last device address seen.
    pub dev_addr: Option<String>,
    /// Last fCnt taken in this epoch (none right after a join).
    pub last_fcnt: Option<u32>,
    /// When the last uplink or join was heard, Unix ms.
    pub last_heard_ms: u64,
    /// Uplinks lost since the gateway started.
    pub uplinks_lost: u64,
    /// Epochs started since the gateway started (joins included).
    pub resets: u64,
}

/// What an uplink means for its device's session (see the module doc).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Judgement {
    /// The epoch the uplink belongs to.
    pub epoch: u32,
    /// A new epoch begins with this uplink.
    pub reset: Option<SessionReset>,
    /// Uplinks lost before this one.
    pub lost: Option<UplinksLost>,
    dev_eui: String,
    dev_addr: Option<String>,
    fcnt: u32,
    time_ms: u64,
}

/// The per-device frame-counter sessions of one stage.
#[derive(Debug, Default)]
pub struct FcntTracker {
    sessions: HashMap<(usize, String), Session>,
}

impl FcntTracker {
    /// Judges an uplink of `dev_eui` (mapping `mapping`) with `fcnt` from
    /// `dev_addr`, heard at `time_ms`; changes nothing.
    pub fn judge(
        &self,
        mapping: usize,
        dev_eui: &str,
        dev_addr: Option<&str>,
        fcnt: u32,
        time_ms: u64,
    ) -> Judgement {
        let mut j = Judgement {
            epoch: 0,
            reset: None,
            lost: None,
            dev_eui: dev_eui.to_string(),
            dev_addr: dev_addr.map(str::to_string),
            fcnt,
            time_ms,
        };
        let Some(s) = self.sessions.get(&(mapping, dev_eui.to_string())) else {
            return j;
        };
        j.epoch = s.epoch;
        let addr_changed = matches!((&s.dev_addr, dev_addr), (Some(a), Some(b)) if a != b);
        let backwards = s.last_fcnt.is_some_and(|l| fcnt < l);
        if addr_changed || backwards {
            j.epoch = s.epoch.saturating_add(1);
            j.reset = Some(SessionReset {
                cause: if addr_changed {
                    ResetCause::DevAddrChange
                } else {
                    ResetCause::FcntBackwards
                },
                epoch: j.epoch,
                last_fcnt: s.last_fcnt,
                fcnt: Some(fcnt),
                old_dev_addr: s.dev_addr.clone(),
                dev_addr: j.dev_addr.clone(),
            });
            return j;
        }
        if let Some(e) = s.expected
            && fcnt > e
            && s.last_fcnt != Some(fcnt)
        {
            j.lost = Some(UplinksLost {
                epoch: s.epoch,
                first: e,
                last: fcnt - 1,
                after_ms: s.last_ms,
                until_ms: time_ms,
            });
        }
        j
    }

    /// Applies a judgement (the uplink of `device` is taken, stored or
    /// quarantined).
    pub fn commit(&mut self, mapping: usize, j: &Judgement, device: &str) {
        self.make_room();
        let s = self
            .sessions
            .entry((mapping, j.dev_eui.clone()))
            .or_default();
        s.device = device.to_string();
        s.uplinks_lost += j.lost.as_ref().map_or(0, UplinksLost::count);
        s.resets += u64::from(j.reset.is_some());
        s.epoch = j.epoch;
        if j.dev_addr.is_some() {
            s.dev_addr = j.dev_addr.clone();
        }
        if s.last_fcnt.is_none_or(|l| j.fcnt >= l) || j.reset.is_some() {
            s.last_fcnt = Some(j.fcnt);
            s.expected = j.fcnt.checked_add(1);
            s.last_ms = Some(j.time_ms);
        }
        s.heard_ms = j.time_ms;
    }

    /// A join of `dev_eui` with `dev_addr` at `time_ms`: a new epoch whose
    /// first uplink is expected to be fCnt 0.
    pub fn join(
        &mut self,
        mapping: usize,
        dev_eui: &str,
        device: &str,
        dev_addr: Option<&str>,
        time_ms: u64,
    ) -> SessionReset {
        self.make_room();
        let s = self
            .sessions
            .entry((mapping, dev_eui.to_string()))
            .or_default();
        let was_heard = s.last_fcnt.is_some() || s.dev_addr.is_some();
        let reset = SessionReset {
            cause: ResetCause::Join,
            epoch: if was_heard {
                s.epoch.saturating_add(1)
            } else {
                s.epoch
            },
            last_fcnt: s.last_fcnt,
            fcnt: None,
            old_dev_addr: s.dev_addr.clone(),
            dev_addr: dev_addr.map(str::to_string),
        };
        *s = Session {
            epoch: reset.epoch,
            dev_addr: reset.dev_addr.clone(),
            last_fcnt: None,
            expected: Some(0),
            last_ms: None,
            heard_ms: time_ms,
            device: device.to_string(),
            uplinks_lost: s.uplinks_lost,
            resets: s.resets + 1,
        };
        reset
    }

    /// Every session, by device then devEui; `mapping_id` names mapping
    /// indexes.
    pub fn views(&self, mapping_id: impl Fn(usize) -> String) -> Vec<SessionView> {
        let mut v: Vec<SessionView> = self
            .sessions
            .iter()
            .map(|((m, eui), s)| SessionView {
                mapping: mapping_id(*m),
                device: s.device.clone(),
                dev_eui: eui.clone(),
                epoch: s.epoch,
                dev_addr: s.dev_addr.clone(),
                last_fcnt: s.last_fcnt,
                last_heard_ms: s.heard_ms,
                uplinks_lost: s.uplinks_lost,
                resets: s.resets,
            })
            .collect();
        v.sort_by(|a, b| (&a.device, &a.dev_eui).cmp(&(&b.device, &b.dev_eui)));
        v
    }

    /// Devices tracked.
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    /// True when no device is tracked.
    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    fn make_room(&mut self) {
        if self.sessions.len() < MAX_DEVICES {
            return;
        }
        if let Some(k) = self
            .sessions
            .iter()
            .min_by_key(|(_, s)| s.heard_ms)
            .map(|(k, _)| k.clone())
        {
            self.sessions.remove(&k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn up(t: &mut FcntTracker, addr: &str, fcnt: u32, ms: u64) -> Judgement {
        let j = t.judge(0, "a1", Some(addr), fcnt, ms);
        t.commit(0, &j, "dev-a1");
        j
    }

    #[test]
    fn a_jump_within_an_epoch_is_lost_uplinks_and_a_repeat_changes_nothing() {
        let mut t = FcntTracker::default();
        let j = up(&mut t, "0a", 10, 1_000);
        assert_eq!((j.epoch, &j.reset, &j.lost), (0, &None, &None));
        assert_eq!(up(&mut t, "0a", 11, 2_000).lost, None);
        let again = t.judge(0, "a1", Some("0a"), 11, 2_500);
        assert_eq!((again.epoch, again.reset, again.lost), (0, None, None));
        let j = up(&mut t, "0a", 14, 5_000);
        assert_eq!(
            j.lost,
            Some(UplinksLost {
                epoch: 0,
                first: 12,
                last: 13,
                after_ms: Some(2_000),
                until_ms: 5_000
            })
        );
        assert_eq!(j.lost.expect("lost").count(), 2);
    }

    #[test]
    fn a_join_starts_an_epoch_expecting_fcnt_0_and_a_fall_or_new_address_starts_one_too() {
        let mut t = FcntTracker::default();
        // A join before any uplink is heard starts epoch 0.
        assert_eq!(t.join(0, "a1", "dev-a1", Some("0a"), 0).epoch, 0);
        up(&mut t, "0a", 0, 1_000);
        up(&mut t, "0a", 1, 2_000);
        let r = t.join(0, "a1", "dev-a1", Some("0b"), 3_000);
        assert_eq!(
            (r.cause, r.epoch, r.last_fcnt),
            (ResetCause::Join, 1, Some(1))
        );
        // After the join fCnt 0 is expected: 2 means 0 and 1 were lost.
        let j = up(&mut t, "0b", 2, 4_000);
        assert_eq!(j.epoch, 1);
        let lost = j.lost.expect("lost after join");
        assert_eq!((lost.first, lost.last, lost.after_ms), (0, 1, None));
        // fCnt going backwards without a join: a new epoch, no loss claimed.
        let j = up(&mut t, "0b", 0, 5_000);
        let r = j.reset.expect("reset");
        assert_eq!(
            (r.cause, r.epoch, r.last_fcnt, r.fcnt),
            (ResetCause::FcntBackwards, 2, Some(2), Some(0))
        );
        assert_eq!(j.lost, None);
        assert_eq!(up(&mut t, "0b", 1, 6_000).epoch, 2);
        // Another device address (a join the gateway missed): a new epoch.
        let j = up(&mut t, "0c", 7, 7_000);
        assert_eq!(
            j.reset.map(|r| (r.cause, r.epoch)),
            Some((ResetCause::DevAddrChange, 3))
        );
        assert_eq!(j.lost, None);
        // Another device is tracked apart.
        assert_eq!(t.judge(0, "b2", Some("0c"), 7, 8_000).epoch, 0);
        // What the technician sees: 2 joins + 2 resets, 2 uplinks lost.
        let v = t.views(|_| "m".into());
        assert_eq!(v.len(), 1);
        assert_eq!(
            (
                v[0].device.as_str(),
                v[0].epoch,
                v[0].last_fcnt,
                v[0].uplinks_lost,
                v[0].resets
            ),
            ("dev-a1", 3, Some(7), 2, 4)
        );
    }

    #[test]
    fn envelopes_are_read_as_the_protobuf_json_mapping_writes_them() {
        let v: Value = serde_json::from_str(
            r#"{"deduplicationId":"d-1","deviceInfo":{"devEui":"0101010101010101"},"devAddr":"00189440","fCnt":7}"#,
        )
        .expect("json");
        let e = Envelope::read(&v, EventType::Up).expect("envelope");
        assert_eq!(
            (
                e.dev_eui.as_str(),
                e.dedup_id.as_deref(),
                e.dev_addr.as_deref(),
                e.fcnt
            ),
            ("0101010101010101", Some("d-1"), Some("00189440"), 7)
        );
        // fCnt 0 is the default value: the mapping may leave it out.
        let v: Value = serde_json::from_str(
            r#"{"deduplicationId":"d","deviceInfo":{"devEui":"A84041000181C0D3"}}"#,
        )
        .expect("json");
        let e = Envelope::read(&v, EventType::Up).expect("ok");
        assert_eq!((e.fcnt, e.dev_eui.as_str()), (0, "a84041000181c0d3"));
        let v: Value =
            serde_json::from_str(r#"{"deduplicationId":"d","deviceInfo":{"devEui":"a8404100"}}"#)
                .expect("json");
        assert_eq!(
            Envelope::read(&v, EventType::Up).expect_err("short").reason,
            "bad_envelope"
        );
        let v: Value =
            serde_json::from_str(r#"{"deviceInfo":{"devEui":"a84041000181c0d3"},"fCnt":1}"#)
                .expect("json");
        assert_eq!(
            Envelope::read(&v, EventType::Up)
                .expect_err("no dedup id")
                .reason,
            "missing_path"
        );
        let v: Value = serde_json::from_str(
            r#"{"deduplicationId":"d","deviceInfo":{"devEui":"a84041000181c0d3"},"fCnt":-1}"#,
        )
        .expect("json");
        assert_eq!(
            Envelope::read(&v, EventType::Up)
                .expect_err("negative")
                .reason,
            "bad_envelope"
        );
        let v: Value = serde_json::from_str(
            r#"{"deviceInfo":{"devEui":"a84041000181c0d3"},"level":"ERROR","code":"UPLINK_CODEC","context":{"deduplication_id":"d-9"}}"#,
        )
        .expect("json");
        assert_eq!(
            Envelope::read(&v, EventType::Log)
                .expect("log")
                .dedup_id
                .as_deref(),
            Some("d-9")
        );
        assert_eq!(
            EventType::of_topic("application/x/device/ab/event/up"),
            EventType::Up
        );
        assert_eq!(
            EventType::of_topic("application/x/device/ab/event/status"),
            EventType::Other
        );
    }
}
