//! One poll of one device: execute the plan ([`execute`], refining it where
//! the device refuses a multi-register read: [`execute_refining`]), turn the
//! answers into a frame ([`assemble`], pure), and keep the per-device state
//! between polls ([`DevicePoller`]: SunSpec discovery, the current plan, the
//! device's health).
//!
//! Invariants:
//! - a poll yields exactly one [`Frame`] with one sample per configured
//!   register, in map order; a register whose request failed (exception,
//!   timeout, link fault), whose scale factor failed, or that does not decode
//!   has `Quality::UNAVAILABLE` and value 0: never the previous value; a
//!   value the decoder had to round to its base unit has `Quality::ROUNDED`;
//! - `seq` is 0 (the durable writer assigns the next gap-free number) and
//!   `base_time_ms` is the gateway clock at the start of the poll;
//! - a read of several registers that the device refuses with "illegal data
//!   address"/"illegal data value" is bisected (in the same poll) until every
//!   refused read is one value: a readable neighbour of an unreadable
//!   register is never left unavailable, whether a gap or a wanted value is
//!   the culprit; the refined plan is kept (logged once);
//! - after a link fault that survives the retries, the remaining requests
//!   of that poll are not sent (a dead device costs one timeout per retry
//!   per poll, not one per request);
//! - health (up / degraded / down, [`super::health`]) changes give exactly
//!   one event and one log line (WARN when worse, INFO when back up); every
//!   poll is counted in the status.

use super::config::ValidDevice;
use super::decode::decode_value;
use super::health::{Health, HealthTracker, PollOutcome, Transition};
use super::planner::{Plan, ReadRequest, bisect_request, plan};
use super::register_map::{RegisterMap, Table};
use super::status::{ModbusStatus, PollRecord};
use super::sunspec::{Discovery, discover, expected_map, map_for};
use super::transport::{Exception, ReadError, RegisterReader};
use mrv_shared::event::{Event, EventKind};
use mrv_shared::ids::{DeviceId, SiteId};
use mrv_shared::quantity::Quantity;
use mrv_shared::reading::{Channel, Quality, Sample};
use mrv_shared::wire::Frame;

pub use super::health::Problem;

/// Firmware string of gateway-polled Modbus frames.
pub const FIRMWARE: &str = "modbus";

/// Sends one request, retrying link faults and "busy" exceptions `retries`
/// times ([`ReadError::is_retryable`]).
async fn read_one<R: RegisterReader>(
    reader: &mut R,
    req: ReadRequest,
    retries: u8,
) -> Result<Vec<u16>, ReadError> {
    let mut attempt = 0;
    loop {
        match reader.read(req).await {
            Err(e) if e.is_retryable() && attempt < retries => attempt += 1,
            other => return other,
        }
    }
}

/// Executes `plan`, retrying link faults and "busy" exceptions `retries`
/// times per request ([`ReadError::is_retryable`]).
/// Returns one result per request.
pub async fn execute<R: RegisterReader>(
    reader: &mut R,
    plan: &Plan,
    retries: u8,
) -> Vec<Result<Vec<u16>, ReadError>> {
    let mut out = Vec::with_capacity(plan.requests.len());
    let mut dead: Option<ReadError> = None;
    for req in &plan.requests {
        if let Some(e) = &dead {
            out.push(Err(e.clone()));
            continue;
        }
        let result = read_one(reader, *req, retries).await;
        if let Err(e) = &result
            && e.is_link_fault()
        {
            dead = Some(e.clone());
        }
        out.push(result);
    }
    out
}

/// What [`execute_refining`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refined {
    /// The plan the results belong to: `Some` when refusals refined it.
    pub plan: Option<Plan>,
    /// One result per request of that plan (or of the original one).
    pub results: Vec<Result<Vec<u16>, ReadError>>,
    /// The refused reads that were split, as `table start+count: error`.
    pub split: Vec<String>,
}

fn refused_range(r: &Result<Vec<u16>, ReadError>) -> bool {
    matches!(r, Err(ReadError::Exception(x)) if x.refuses_range())
}

/// Executes `plan` and, while the device refuses a request that holds
/// several groups of registers with "illegal data address" or "illegal data
/// value", bisects it ([`bisect_request`]) and reads the halves, until every
/// refused request is a single value. Only the new halves are read; a link
/// fault stops the refinement (the results keep the failure). `spans` must
/// be what `plan` was made from.
pub async fn execute_refining<R: RegisterReader>(
    reader: &mut R,
    spans: &[(Table, u16, u16)],
    plan: &Plan,
    retries: u8,
) -> Refined {
    let mut results: Vec<Option<Result<Vec<u16>, ReadError>>> = execute(reader, plan, retries)
        .await
        .into_iter()
        .map(Some)
        .collect();
    let mut current = plan.clone();
    let mut split = Vec::new();
    loop {
        // Bisect every splittable refused request (highest index first, so
        // the indices of the others stay valid).
        let refused: Vec<usize> = (0..current.requests.len())
            .rev()
            .filter(|&ri| results[ri].as_ref().is_some_and(refused_range))
            .collect();
        let mut changed = false;
        for ri in refused {
            if let Some(next) = bisect_request(&current, spans, ri) {
                let req = current.requests[ri];
                if let Some(Err(e)) = &results[ri] {
                    split.push(format!("{} {}+{}: {e}", req.table, req.start, req.count));
                }
                current = next;
                results.splice(ri..=ri, [None, None]);
                changed = true;
            }
        }
        if !changed {
            break;
        }
        let mut dead = false;
        for (req, slot) in current.requests.iter().zip(results.iter_mut()) {
            if slot.is_none() {
                let r = read_one(reader, *req, retries).await;
                dead = r.as_ref().is_err_and(ReadError::is_link_fault);
                *slot = Some(r);
                if dead {
                    break;
                }
            }
        }
        if dead {
            // Fill what was not read with the fault and stop refining.
            let fault = results
                .iter()
                .flatten()
                .find_map(|r| r.as_ref().err().filter(|e| e.is_link_fault()).cloned())
                .expect("a link fault was just recorded");
            for r in &mut results {
                if r.is_none() {
                    *r = Some(Err(fault.clone()));
                }
            }
            break;
        }
    }
    let results = results
        .into_iter()
        .map(|r| r.expect("every request was read or marked failed"))
        .collect();
    Refined {
        plan: (current != *plan).then_some(current),
        results,
        split,
    }
}

fn kind_of(e: &ReadError) -> EventKind {
    match e {
        ReadError::Exception(_) => EventKind::ModbusException,
        ReadError::Timeout(_) => EventKind::ModbusTimeout,
        ReadError::Unreachable(_) => EventKind::ModbusUnreachable,
        ReadError::Link(_) => EventKind::ModbusLinkError,
    }
}

/// When every request of a poll was answered with an exception that a wrong
/// unit id typically causes ([`Exception::suggests_wrong_unit`]), the hint
/// to add to the problem. Pure.
pub fn wrong_unit_hint(results: &[Result<Vec<u16>, ReadError>], unit: u8) -> Option<String> {
    let mut first: Option<Exception> = None;
    for r in results {
        match r {
            Err(ReadError::Exception(x)) if x.suggests_wrong_unit() => {
                first.get_or_insert(*x);
            }
            _ => return None,
        }
    }
    first.map(|x| {
        format!(
            "every read answered exception {:#04x}: the unit id may be wrong (configured unit {unit};              a device or TCP gateway answers like this when nothing usable is at that unit id)",
            x.0
        )
    })
}

/// Builds the frame of one poll from the per-request results. Pure.
///
/// Problems: one per failed request (one link fault per poll: the requests
/// after it were not sent), then one per value that was read but does not
/// decode (`ModbusBadValue`).
///
/// # Panics
/// If `results` does not have one entry per request of `plan`, or `plan`
/// was not made from `map.spans()` (caller bugs).
pub fn assemble(
    site: &SiteId,
    device: &DeviceId,
    map: &RegisterMap,
    plan: &Plan,
    results: &[Result<Vec<u16>, ReadError>],
    now_ms: u64,
) -> (Option<Frame>, Vec<Problem>) {
    assert_eq!(results.len(), plan.requests.len(), "one result per request");
    let mut problems: Vec<Problem> = Vec::new();
    let mut link_reported = false;
    for (req, r) in plan.requests.iter().zip(results) {
        if let Err(e) = r {
            // One link fault per poll: the requests after it were not sent.
            if e.is_link_fault() {
                if link_reported {
                    continue;
                }
                link_reported = true;
            }
            problems.push(Problem {
                kind: kind_of(e),
                detail: format!("{} {}+{}: {e}", req.table, req.start, req.count),
            });
        }
    }
    // Slice of the words of span `i`.
    let words_of = |i: usize, start: u16, count: u16| -> Result<&[u16], ()> {
        let ri = plan.placement[i];
        let req = &plan.requests[ri];
        let words = results[ri].as_ref().map_err(|_| ())?;
        let from = usize::from(start - req.start);
        words.get(from..from + usize::from(count)).ok_or(())
    };
    let n = map.registers.len();
    let mut channels = Vec::with_capacity(n);
    let mut samples = Vec::with_capacity(n);
    let mut sf_span = n;
    for (i, def) in map.registers.iter().enumerate() {
        channels.push(Channel {
            id: def.name.clone(),
            quantity: def.quantity,
            kind: def.kind,
        });
        let sf = match def.scale_factor_at {
            Some(a) => {
                let s = words_of(sf_span, a, 1).map(|w| Some(w[0]));
                sf_span += 1;
                s
            }
            None => Ok(None),
        };
        let decoded = match (words_of(i, def.address, def.data_type.width()), sf) {
            (Ok(w), Ok(sf)) => match decode_value(def, w, sf) {
                Ok(c) => Some(c),
                Err(e) => {
                    problems.push(Problem {
                        kind: EventKind::ModbusBadValue,
                        detail: format!("{} ({} {}): {e}", def.name, def.table, def.address),
                    });
                    None
                }
            },
            _ => None,
        };
        let (value, quality) = match decoded {
            None => (0, Quality::UNAVAILABLE),
            Some(c) => {
                let q = if c.rounded {
                    Quality::ROUNDED
                } else {
                    Quality::GOOD
                };
                let v = c.value;
                if def.quantity == Quantity::Status && !(0..=1).contains(&v) {
                    (0, Quality::UNAVAILABLE.with(Quality::OUT_OF_RANGE))
                } else if !def.limits.contains(v) {
                    (v, q.with(Quality::OUT_OF_RANGE))
                } else {
                    (v, q)
                }
            }
        };
        samples.push(Sample {
            channel: u8::try_from(i).expect("validated maps have at most 255 registers"),
            offset_ms: 0,
            value,
            quality,
        });
    }
    if samples.is_empty() {
        return (None, problems);
    }
    let frame = Frame {
        site: site.clone(),
        device: device.clone(),
        seq: 0,
        boot: 0,
        firmware: FIRMWARE.to_string(),
        base_time_ms: Some(now_ms),
        channels,
        samples,
        signature: None,
    };
    (Some(frame), problems)
}

/// A frame with every channel of `map` unavailable (the device could not be
/// asked at all); `None` for an empty map.
pub fn unavailable_frame(
    site: &SiteId,
    device: &DeviceId,
    map: &RegisterMap,
    now_ms: u64,
) -> Option<Frame> {
    if map.registers.is_empty() {
        return None;
    }
    let channels: Vec<Channel> = map
        .registers
        .iter()
        .map(|d| Channel {
            id: d.name.clone(),
            quantity: d.quantity,
            kind: d.kind,
        })
        .collect();
    let samples = (0..channels.len())
        .map(|i| Sample {
            channel: u8::try_from(i).expect("validated maps have at most 255 registers"),
            offset_ms: 0,
            value: 0,
            quality: Quality::UNAVAILABLE,
        })
        .collect();
    Some(Frame {
        site: site.clone(),
        device: device.clone(),
        seq: 0,
        boot: 0,
        firmware: FIRMWARE.to_string(),
        base_time_ms: Some(now_ms),
        channels,
        samples,
        signature: None,
    })
}

/// Values read and unavailable in a poll's frame (`UNAVAILABLE` samples).
fn outcome_of(frame: Option<&Frame>, problems: Vec<Problem>) -> PollOutcome {
    let Some(f) = frame else {
        return PollOutcome {
            total: 0,
            good: 0,
            unavailable: Vec::new(),
            problems,
        };
    };
    let unavailable: Vec<String> = f
        .samples
        .iter()
        .filter(|s| s.quality.contains(Quality::UNAVAILABLE))
        .filter_map(|s| f.channels.get(usize::from(s.channel)))
        .map(|c| c.id.to_string())
        .collect();
    PollOutcome {
        total: f.samples.len(),
        good: f.samples.len() - unavailable.len(),
        unavailable,
        problems,
    }
}

/// What one poll produced.
#[derive(Debug, Clone, PartialEq)]
pub struct PollOutput {
    /// The frame (none only for a SunSpec device never discovered and
    /// without `sunspec_models`).
    pub frame: Option<Frame>,
    /// Events to record: at most one, for a health transition.
    pub events: Vec<Event>,
    /// True when the link failed (TCP tasks reconnect, SunSpec rediscovers).
    pub link_fault: bool,
    /// The health after this poll.
    pub health: Health,
}

/// Per-device state across polls.
#[derive(Debug)]
pub struct DevicePoller {
    site: SiteId,
    device: ValidDevice,
    /// The map and plan in force (fixed maps: from the config; SunSpec:
    /// after discovery), refined where the device refused reads.
    current: Option<(RegisterMap, Plan)>,
    discovery: Option<Discovery>,
    health: HealthTracker,
    /// The device's state was logged at least once.
    announced: bool,
}

impl DevicePoller {
    /// A poller for `device`; fixed maps are planned at once.
    pub fn new(site: SiteId, device: ValidDevice) -> Self {
        let current = if device.sunspec.is_none() {
            let p = plan(&device.map.spans(), &device.map.unreadable, device.limits)
                .expect("config validation planned this map");
            Some((device.map.clone(), p))
        } else {
            None
        };
        DevicePoller {
            site,
            device,
            current,
            discovery: None,
            health: HealthTracker::new(),
            announced: false,
        }
    }

    /// The device's config.
    pub fn device(&self) -> &ValidDevice {
        &self.device
    }

    /// The SunSpec discovery in force, if any.
    pub fn discovery(&self) -> Option<&Discovery> {
        self.discovery.as_ref()
    }

    /// The plan in force, if any.
    pub fn plan(&self) -> Option<&Plan> {
        self.current.as_ref().map(|(_, p)| p)
    }

    /// Runs SunSpec discovery if needed. Returns a problem when it failed.
    async fn ensure_map<R: RegisterReader>(
        &mut self,
        reader: &mut R,
    ) -> Result<(), (Problem, bool)> {
        if self.current.is_some() {
            return Ok(());
        }
        let Some(profile) = &self.device.sunspec else {
            return Ok(());
        };
        match discover(reader, &profile.base_addresses).await {
            Ok(d) => {
                let (mut map, _skipped) = map_for(profile, &d.models);
                map.registers
                    .extend(self.device.map.registers.iter().cloned());
                map.unreadable = self.device.map.unreadable.clone();
                map.registers.truncate(255);
                let p = plan(&map.spans(), &map.unreadable, self.device.limits).map_err(|e| {
                    (
                        Problem {
                            kind: EventKind::ModbusException,
                            detail: format!("SunSpec map cannot be read: {e}"),
                        },
                        false,
                    )
                })?;
                self.current = Some((map, p));
                self.discovery = Some(d);
                Ok(())
            }
            Err(e) => {
                let (kind, link) = match &e {
                    super::sunspec::DiscoveryError::Read(r) => (kind_of(r), r.is_link_fault()),
                    _ => (EventKind::ModbusException, false),
                };
                Err((
                    Problem {
                        kind,
                        detail: format!("SunSpec discovery: {e}"),
                    },
                    link,
                ))
            }
        }
    }

    /// Feeds the poll to the health tracker, logs a transition, records the
    /// status, and returns the transition's event.
    fn conclude(
        &mut self,
        status: &ModbusStatus,
        now_ms: u64,
        outcome: &PollOutcome,
        error_kind: Option<&'static str>,
        requests: usize,
    ) -> (Vec<Event>, Health) {
        let id = self.device.id.clone();
        let transition = self.health.on_poll(&id, now_ms, outcome);
        let (health, since) = self.health.state().expect("the tracker has seen this poll");
        if let Some(t) = &transition {
            log_transition(&id, t);
            self.announced = true;
        } else if !self.announced {
            // Start-up, straight to up: one line, no event.
            tracing::info!(device = %id, values = outcome.total, requests, "Modbus device up");
            self.announced = true;
        }
        status.record(
            &id,
            PollRecord {
                now_ms,
                outcome,
                error_kind,
                requests,
                health: (health, since),
            },
        );
        (transition.map(|t| t.event).into_iter().collect(), health)
    }

    /// Polls the device once at gateway time `now_ms`.
    pub async fn poll<R: RegisterReader>(
        &mut self,
        reader: &mut R,
        now_ms: u64,
        status: &ModbusStatus,
    ) -> PollOutput {
        let id = self.device.id.clone();
        if let Err((problem, link_fault)) = self.ensure_map(reader).await {
            let fallback = self.device.sunspec.as_ref().and_then(|p| {
                (!self.device.sunspec_models.is_empty())
                    .then(|| expected_map(p, &self.device.sunspec_models))
            });
            let frame = fallback.and_then(|m| unavailable_frame(&self.site, &id, &m, now_ms));
            let label = if link_fault {
                kind_label(problem.kind)
            } else {
                "discovery"
            };
            let outcome = outcome_of(frame.as_ref(), vec![problem]);
            let (events, health) = self.conclude(status, now_ms, &outcome, Some(label), 0);
            return PollOutput {
                frame,
                events,
                link_fault,
                health,
            };
        }
        let (map, plan) = self.current.as_ref().expect("ensure_map set it");
        let spans = map.spans();
        let refined = execute_refining(reader, &spans, plan, self.device.retries).await;
        if let Some(p) = refined.plan {
            tracing::info!(
                device = %id,
                refused = %refined.split.join("; "),
                requests = p.requests.len(),
                "the device refused multi-register reads; reading in smaller requests from now on"
            );
            let map = map.clone();
            self.current = Some((map, p));
        }
        let results = refined.results;
        let (map, plan) = self.current.as_ref().expect("set above");
        let link_fault = results
            .iter()
            .any(|r| r.as_ref().is_err_and(ReadError::is_link_fault));
        let (frame, mut problems) = assemble(&self.site, &id, map, plan, &results, now_ms);
        if let (Some(hint), Some(p)) = (
            wrong_unit_hint(&results, self.device.unit),
            problems.first_mut(),
        ) {
            p.detail = format!("{}; {hint}", p.detail);
        }
        let error_kind = problems.first().map(|p| kind_label(p.kind));
        let requests = plan.requests.len();
        if link_fault && self.device.sunspec.is_some() {
            // The device may come back with another firmware: rediscover.
            self.current = None;
        }
        let outcome = outcome_of(frame.as_ref(), problems);
        let (events, health) = self.conclude(status, now_ms, &outcome, error_kind, requests);
        PollOutput {
            frame,
            events,
            link_fault,
            health,
        }
    }
}

/// One log line per health transition: WARN when the device got worse or
/// changed how it fails, INFO when it is back up.
fn log_transition(device: &DeviceId, t: &Transition) {
    let from = t.from.map_or("unknown", Health::name);
    if t.to == Health::Up {
        tracing::info!(device = %device, from, event = t.event.kind.name(), "Modbus device {}", t.event.detail);
    } else {
        tracing::warn!(device = %device, from, event = t.event.kind.name(), "Modbus device {}", t.event.detail);
    }
}

/// The status counter label of a problem kind.
fn kind_label(kind: EventKind) -> &'static str {
    match kind {
        EventKind::ModbusTimeout => "timeout",
        EventKind::ModbusUnreachable => "unreachable",
        EventKind::ModbusLinkError => "link",
        EventKind::ModbusBadValue => "bad_value",
        _ => "exception",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::planner::{PlanLimits, ReadRequest};
    use crate::register_map::{ByteOrder, DataType, Limits, RegisterDef, Scale, Sentinel, Table};
    use crate::transport::Exception;
    use mrv_shared::ids::ChannelId;
    use mrv_shared::quantity::ValueKind;
    use std::time::Duration;

    fn reg(name: &str, address: u16, data_type: DataType) -> RegisterDef {
        RegisterDef {
            name: ChannelId::new(name).expect("valid"),
            table: Table::Holding,
            address,
            data_type,
            order: ByteOrder::ABCD,
            scale: Scale::ONE,
            scale_factor_at: None,
            offset: 0,
            quantity: Quantity::Power,
            kind: ValueKind::Instant,
            rollover_bits: None,
            limits: Limits::default(),
            sentinel: Sentinel::None,
        }
    }

    fn ids() -> (SiteId, DeviceId) {
        (
            SiteId::new("site").expect("valid"),
            DeviceId::new("dev").expect("valid"),
        )
    }

    #[test]
    fn a_failed_request_makes_only_its_registers_unavailable() {
        let mut map = RegisterMap::default();
        map.registers.push(reg("a", 0, DataType::U16));
        map.registers.push(reg("b", 1, DataType::U32));
        let mut far = reg("c", 500, DataType::I16);
        far.limits = Limits {
            min: Some(0),
            max: None,
        };
        map.registers.push(far);
        let p = plan(&map.spans(), &[], PlanLimits::default()).expect("plannable");
        assert_eq!(p.requests.len(), 2);
        let results = vec![Err(ReadError::Exception(Exception(2))), Ok(vec![0xFFFF])];
        let (site, dev) = ids();
        let (frame, problems) = assemble(&site, &dev, &map, &p, &results, 1234);
        let f = frame.expect("a frame");
        f.validate_with_seq();
        assert_eq!(f.base_time_ms, Some(1234));
        assert_eq!(f.samples[0].quality, Quality::UNAVAILABLE);
        assert_eq!(f.samples[1].quality, Quality::UNAVAILABLE);
        assert_eq!((f.samples[0].value, f.samples[1].value), (0, 0));
        assert_eq!(f.samples[2].value, -1);
        assert_eq!(f.samples[2].quality, Quality::OUT_OF_RANGE);
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].kind, EventKind::ModbusException);
        assert!(
            problems[0]
                .detail
                .starts_with("holding 0+3: exception 0x02")
        );
    }

    /// A device that is a plain register array: unmapped addresses answer
    /// exception 2 (as many real meters do for holes in their map).
    struct Bank(std::collections::BTreeMap<u16, u16>, usize);

    impl RegisterReader for Bank {
        async fn read(&mut self, req: ReadRequest) -> Result<Vec<u16>, ReadError> {
            self.1 += 1;
            (0..req.count)
                .map(|i| {
                    self.0
                        .get(&(req.start + i))
                        .copied()
                        .ok_or(ReadError::Exception(Exception(2)))
                })
                .collect()
        }
    }

    #[tokio::test]
    async fn a_refused_gap_is_split_once_and_never_read_again() {
        let text = r#"
[[modbus.devices]]
id = "holes"
host = "127.0.0.1"
[[modbus.devices.registers]]
name = "a"
function = "holding"
address = 0
type = "u16"
quantity = "count"
[[modbus.devices.registers]]
name = "b"
function = "holding"
address = 3
type = "u16"
quantity = "count"
"#;
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config");
        let cfg = crate::config::parse_section(text, &dir.join("g.toml"))
            .expect("parses")
            .validate(&dir)
            .expect("valid");
        let (site, _) = ids();
        let mut poller = DevicePoller::new(site, cfg.devices[0].clone());
        // Address 1 and 2 do not exist: the coalesced read 0..4 is refused.
        let mut bank = Bank([(0, 10), (3, 13)].into_iter().collect(), 0);
        let status = ModbusStatus::new();
        let out = poller.poll(&mut bank, 0, &status).await;
        let f = out.frame.expect("frame");
        assert_eq!(
            f.samples
                .iter()
                .map(|s| (s.value, s.quality))
                .collect::<Vec<_>>(),
            [(10, Quality::GOOD), (13, Quality::GOOD)]
        );
        assert!(out.events.is_empty(), "{:?}", out.events);
        assert_eq!(bank.1, 3, "one refused read, then two exact reads");
        assert_eq!(poller.plan().expect("plan").requests.len(), 2);
        let out = poller.poll(&mut bank, 1, &status).await;
        assert!(
            out.frame
                .expect("frame")
                .samples
                .iter()
                .all(|s| s.quality.is_good())
        );
        assert_eq!(bank.1, 5, "the split plan stays");
    }

    fn poller_for(text: &str) -> DevicePoller {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config");
        let cfg = crate::config::parse_section(text, &dir.join("g.toml"))
            .expect("parses")
            .validate(&dir)
            .expect("valid");
        DevicePoller::new(ids().0, cfg.devices[0].clone())
    }

    fn u16_reg(name: &str, address: u16) -> String {
        format!(
            "[[modbus.devices.registers]]\nname = \"{name}\"\nfunction = \"holding\"\naddress = {address}\ntype = \"u16\"\nquantity = \"count\"\n"
        )
    }

    #[tokio::test]
    async fn a_refused_read_beside_an_unreadable_register_is_split_down_to_what_answers() {
        // a, b, c adjacent (no gap): b does not exist. The one coalesced read
        // 0..3 is refused; bisection finds that a and c answer.
        let text = format!(
            "[[modbus.devices]]\nid = \"m\"\nhost = \"127.0.0.1\"\n{}{}{}",
            u16_reg("a", 0),
            u16_reg("hole_1", 1),
            u16_reg("c", 2)
        );
        let mut poller = poller_for(&text);
        assert_eq!(poller.plan().expect("plan").requests.len(), 1);
        let mut bank = Bank([(0, 10), (2, 12)].into_iter().collect(), 0);
        let status = ModbusStatus::new();
        let out = poller.poll(&mut bank, 0, &status).await;
        let f = out.frame.expect("frame");
        assert_eq!(
            f.samples
                .iter()
                .map(|s| (s.value, s.quality))
                .collect::<Vec<_>>(),
            [
                (10, Quality::GOOD),
                (0, Quality::UNAVAILABLE),
                (12, Quality::GOOD)
            ]
        );
        // 0..3 refused; 0..2 refused, 2..3 ok; 0..1 ok, 1..2 refused.
        assert_eq!(bank.1, 5);
        assert_eq!(out.health, Health::Degraded);
        assert_eq!(out.events.len(), 1);
        assert_eq!(out.events[0].kind, EventKind::ModbusException);
        assert!(
            out.events[0].detail.starts_with(
                "degraded: 2 of 3 values answered; unavailable: hole_1; holding 1+1: exception 0x02"
            ),
            "{}",
            out.events[0].detail
        );
        let st = status
            .device(&DeviceId::new("m").expect("id"))
            .expect("status");
        assert_eq!(
            (st.values_good, st.values_total, st.polls_degraded),
            (2, 3, 1)
        );
        assert_eq!(st.unavailable, ["hole_1"]);
        // The refined plan stays: three reads per poll, no new event.
        let out = poller.poll(&mut bank, 1, &status).await;
        assert_eq!(bank.1, 8);
        assert!(out.events.is_empty());
        assert_eq!(poller.plan().expect("plan").requests.len(), 3);
    }

    #[tokio::test]
    async fn every_read_answering_0x04_says_the_unit_id_may_be_wrong() {
        let text = format!(
            "[[modbus.devices]]\nid = \"m\"\nhost = \"127.0.0.1\"\nunit = 3\n{}{}",
            u16_reg("a", 0),
            u16_reg("b", 300)
        );
        let mut poller = poller_for(&text);
        let mut s = Script {
            answers: vec![
                Err(ReadError::Exception(Exception(4))),
                Err(ReadError::Exception(Exception(4))),
            ],
            calls: 0,
        };
        let status = ModbusStatus::new();
        let out = poller.poll(&mut s, 0, &status).await;
        assert_eq!(out.health, Health::Down);
        let detail = &out.events[0].detail;
        assert!(
            detail.starts_with("down: no value answered: holding 0+1: exception 0x04"),
            "{detail}"
        );
        assert!(
            detail.contains("the unit id may be wrong (configured unit 3"),
            "{detail}"
        );
        // One failing request among good ones is not a unit id problem.
        let ok = [Ok(vec![1]), Err(ReadError::Exception(Exception(4)))];
        assert_eq!(wrong_unit_hint(&ok, 3), None);
    }

    #[tokio::test]
    async fn a_refused_connection_is_unreachable_and_recovery_is_one_event() {
        let text = format!(
            "[[modbus.devices]]\nid = \"m\"\nhost = \"127.0.0.1\"\n{}",
            u16_reg("a", 0)
        );
        let mut poller = poller_for(&text);
        let refused = ReadError::Unreachable("connection refused by 127.0.0.1:1502".into());
        let mut s = Script {
            // One retry per poll (the default): two polls of two attempts.
            answers: vec![
                Err(refused.clone()),
                Err(refused.clone()),
                Err(refused.clone()),
                Err(refused),
                Ok(vec![5]),
            ],
            calls: 0,
        };
        let status = ModbusStatus::new();
        let out = poller.poll(&mut s, 1_000, &status).await;
        assert_eq!(out.events[0].kind, EventKind::ModbusUnreachable);
        assert!(out.link_fault);
        let out = poller.poll(&mut s, 11_000, &status).await;
        assert!(out.events.is_empty(), "same failure, no new event");
        let out = poller.poll(&mut s, 21_000, &status).await;
        assert_eq!(out.health, Health::Up);
        assert_eq!(out.events.len(), 1);
        assert_eq!(out.events[0].kind, EventKind::ModbusRecovered);
        assert_eq!(
            out.events[0].detail,
            "up: all 1 values answered again after 20 s down"
        );
        let st = status
            .device(&DeviceId::new("m").expect("id"))
            .expect("status");
        assert_eq!(st.problem, None, "the old error is gone at once");
        assert_eq!(st.errors.get("unreachable"), Some(&2));
    }

    #[test]
    fn an_undecodable_value_is_a_bad_value_problem() {
        let mut map = RegisterMap::default();
        let mut f = reg("f", 0, DataType::F32);
        f.quantity = Quantity::Count;
        map.registers.push(f);
        let p = plan(&map.spans(), &[], PlanLimits::default()).expect("plannable");
        let (site, dev) = ids();
        let (frame, problems) = assemble(&site, &dev, &map, &p, &[Ok(vec![0x7FC0, 0])], 0);
        assert_eq!(
            frame.expect("frame").samples[0].quality,
            Quality::UNAVAILABLE
        );
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].kind, EventKind::ModbusBadValue);
        assert_eq!(
            problems[0].detail,
            "f (holding 0): the register holds NaN (not a number)"
        );
    }

    trait ValidateWithSeq {
        fn validate_with_seq(&self);
    }
    impl ValidateWithSeq for Frame {
        /// Frames leave with seq 0; the writer numbers them. Check the rest.
        fn validate_with_seq(&self) {
            let mut f = self.clone();
            f.seq = 1;
            f.validate().expect("frame rules hold");
        }
    }

    #[test]
    fn scale_factor_registers_are_read_and_applied() {
        let mut map = RegisterMap::default();
        let mut w = reg("w", 10, DataType::I16);
        w.scale_factor_at = Some(11);
        map.registers.push(w);
        let p = plan(&map.spans(), &[], PlanLimits::default()).expect("plannable");
        assert_eq!(
            p.requests,
            [ReadRequest {
                table: Table::Holding,
                start: 10,
                count: 2
            }]
        );
        let (site, dev) = ids();
        let (frame, problems) = assemble(&site, &dev, &map, &p, &[Ok(vec![123, 1])], 0);
        assert!(problems.is_empty());
        assert_eq!(frame.expect("frame").samples[0].value, 1230);
    }

    /// Answers from a script; counts calls.
    struct Script {
        answers: Vec<Result<Vec<u16>, ReadError>>,
        calls: usize,
    }
    impl RegisterReader for Script {
        async fn read(&mut self, _req: ReadRequest) -> Result<Vec<u16>, ReadError> {
            self.calls += 1;
            self.answers.remove(0)
        }
    }

    #[tokio::test]
    async fn a_dead_link_is_retried_then_the_rest_of_the_poll_is_skipped() {
        let t = ReadError::Timeout(Duration::from_millis(1));
        let mut s = Script {
            answers: vec![Err(t.clone()), Err(t.clone())],
            calls: 0,
        };
        let p = Plan {
            requests: vec![
                ReadRequest {
                    table: Table::Holding,
                    start: 0,
                    count: 1,
                };
                3
            ],
            placement: vec![],
        };
        let r = execute(&mut s, &p, 1).await;
        assert_eq!(s.calls, 2);
        assert_eq!(r, vec![Err(t.clone()), Err(t.clone()), Err(t)]);
    }

    #[tokio::test]
    async fn a_busy_device_is_asked_again() {
        let busy = ReadError::Exception(Exception(6));
        let mut s = Script {
            answers: vec![Err(busy), Ok(vec![5])],
            calls: 0,
        };
        let p = Plan {
            requests: vec![ReadRequest {
                table: Table::Holding,
                start: 0,
                count: 1,
            }],
            placement: vec![],
        };
        assert_eq!(execute(&mut s, &p, 1).await, vec![Ok(vec![5])]);
        assert_eq!(s.calls, 2);
    }

    #[tokio::test]
    async fn exceptions_are_not_retried_and_do_not_stop_the_poll() {
        let x = ReadError::Exception(Exception(2));
        let mut s = Script {
            answers: vec![Err(x.clone()), Ok(vec![7])],
            calls: 0,
        };
        let p = Plan {
            requests: vec![
                ReadRequest {
                    table: Table::Holding,
                    start: 0,
                    count: 1,
                };
                2
            ],
            placement: vec![],
        };
        let r = execute(&mut s, &p, 3).await;
        assert_eq!(s.calls, 2);
        assert_eq!(r, vec![Err(x), Ok(vec![7])]);
    }
}
