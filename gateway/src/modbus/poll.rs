//! One poll of one device: execute the plan ([`execute`]), turn the answers
//! into a frame ([`assemble`], pure), and keep the per-device state between
//! polls ([`DevicePoller`]: SunSpec discovery, the current plan, which
//! failure was last reported).
//!
//! Invariants:
//! - a poll yields exactly one [`Frame`] with one sample per configured
//!   register, in map order; a register whose request failed (exception,
//!   timeout, link fault), whose scale factor failed, or that does not decode
//!   has `Quality::UNAVAILABLE` and value 0: never the previous value; a
//!   value the decoder had to round to its base unit has `Quality::ROUNDED`;
//! - `seq` is 0 (the durable writer assigns the next gap-free number) and
//!   `base_time_ms` is the gateway clock at the start of the poll;
//! - after a link fault that survives the retries, the remaining requests
//!   of that poll are not sent (a dead device costs one timeout per retry
//!   per poll, not one per request);
//! - failure events are edge-triggered: an event is sent when the set of
//!   failures of a poll differs from the previous poll's (first failure,
//!   change of failure, not on every repetition); every failure is counted
//!   in the status.

use super::config::ValidDevice;
use super::decode::decode_value;
use super::planner::{Plan, plan, split_request};
use super::register_map::RegisterMap;
use super::status::ModbusStatus;
use super::sunspec::{Discovery, discover, expected_map, map_for};
use super::transport::{ReadError, RegisterReader};
use mrv_shared::event::{Event, EventKind};
use mrv_shared::ids::{DeviceId, SiteId};
use mrv_shared::quantity::Quantity;
use mrv_shared::reading::{Channel, Quality, Sample};
use mrv_shared::wire::Frame;

/// Firmware string of gateway-polled Modbus frames.
pub const FIRMWARE: &str = "modbus";

/// A failure worth an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// `ModbusException` or `ModbusTimeout`.
    pub kind: EventKind,
    /// What failed, e.g. `holding 40070+50: exception 0x02 (...)`.
    pub detail: String,
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
        let mut attempt = 0;
        let result = loop {
            match reader.read(*req).await {
                Err(e) if e.is_retryable() && attempt < retries => attempt += 1,
                other => break other,
            }
        };
        if let Err(e) = &result {
            if e.is_link_fault() {
                dead = Some(e.clone());
            }
        }
        out.push(result);
    }
    out
}

fn kind_of(e: &ReadError) -> EventKind {
    match e {
        ReadError::Exception(_) => EventKind::ModbusException,
        ReadError::Timeout(_) | ReadError::Link(_) => EventKind::ModbusTimeout,
    }
}

/// Builds the frame of one poll from the per-request results. Pure.
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
            (Ok(w), Ok(sf)) => decode_value(def, w, sf).ok(),
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

/// What one poll produced.
#[derive(Debug, Clone, PartialEq)]
pub struct PollOutput {
    /// The frame (none only for a SunSpec device never discovered and
    /// without `sunspec_models`).
    pub frame: Option<Frame>,
    /// Events to record (edge-triggered, see the module doc).
    pub events: Vec<Event>,
    /// True when the link failed (TCP tasks reconnect, SunSpec rediscovers).
    pub link_fault: bool,
}

/// Per-device state across polls.
#[derive(Debug)]
pub struct DevicePoller {
    site: SiteId,
    device: ValidDevice,
    /// The map and plan in force (fixed maps: from the config; SunSpec:
    /// after discovery).
    current: Option<(RegisterMap, Plan)>,
    discovery: Option<Discovery>,
    last_problems: Vec<Problem>,
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
            last_problems: Vec::new(),
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

    fn events_for(&mut self, problems: Vec<Problem>, now_ms: u64) -> Vec<Event> {
        if problems == self.last_problems {
            return Vec::new();
        }
        let events = problems
            .iter()
            .map(|p| Event {
                time_ms: now_ms,
                kind: p.kind,
                device: Some(self.device.id.clone()),
                seqs: None,
                detail: p.detail.clone(),
            })
            .collect();
        self.last_problems = problems;
        events
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
                let link =
                    matches!(&e, super::sunspec::DiscoveryError::Read(r) if r.is_link_fault());
                let kind = if link {
                    EventKind::ModbusTimeout
                } else {
                    EventKind::ModbusException
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
            status.record_poll(
                &id,
                now_ms,
                Some((&problem.detail, label(problem.kind, link_fault))),
                0,
            );
            let events = self.events_for(vec![problem], now_ms);
            return PollOutput {
                frame,
                events,
                link_fault,
            };
        }
        let (map, plan) = self.current.as_ref().expect("ensure_map set it");
        let mut results = execute(reader, plan, self.device.retries).await;
        if let Some(split) = split_refused_gaps(&map.spans(), plan, &results) {
            tracing::info!(
                device = %id,
                requests = split.requests.len(),
                "a coalesced read was refused (illegal data address); reading without gaps from now on"
            );
            results = execute(reader, &split, self.device.retries).await;
            let map = map.clone();
            self.current = Some((map, split));
        }
        let (map, plan) = self.current.as_ref().expect("set above");
        let link_fault = results
            .iter()
            .any(|r| r.as_ref().is_err_and(ReadError::is_link_fault));
        let (frame, problems) = assemble(&self.site, &id, map, plan, &results, now_ms);
        let first = results.iter().find_map(|r| r.as_ref().err());
        status.record_poll(
            &id,
            now_ms,
            first.map(|e| (problems[0].detail.as_str(), e.label())),
            plan.requests.len(),
        );
        if link_fault && self.device.sunspec.is_some() {
            // The device may come back with another firmware: rediscover.
            self.current = None;
        }
        let events = self.events_for(problems, now_ms);
        PollOutput {
            frame,
            events,
            link_fault,
        }
    }
}

/// When a request holding several spans was refused with "illegal data
/// address", the plan with every such request split (see
/// [`split_request`]); `None` when nothing is to split.
pub fn split_refused_gaps(
    spans: &[(super::register_map::Table, u16, u16)],
    plan: &Plan,
    results: &[Result<Vec<u16>, ReadError>],
) -> Option<Plan> {
    let refused: Vec<usize> = results
        .iter()
        .enumerate()
        .filter(|(ri, r)| {
            matches!(r, Err(ReadError::Exception(x)) if x.0 == 0x02) && {
                let req = plan.requests[*ri];
                // Worth splitting when the request reads more than its spans.
                let covered: u32 = {
                    let mut m: Vec<(u32, u32)> = (0..spans.len())
                        .filter(|&i| plan.placement[i] == *ri)
                        .map(|i| {
                            (
                                u32::from(spans[i].1),
                                u32::from(spans[i].1) + u32::from(spans[i].2),
                            )
                        })
                        .collect();
                    m.sort_unstable();
                    let mut total = 0;
                    let mut end = 0;
                    for (a, b) in m {
                        let a = a.max(end);
                        if b > a {
                            total += b - a;
                        }
                        end = end.max(b);
                    }
                    total
                };
                covered < u32::from(req.count)
            }
        })
        .map(|(ri, _)| ri)
        .collect();
    if refused.is_empty() {
        return None;
    }
    let mut p = plan.clone();
    for &ri in refused.iter().rev() {
        p = split_request(&p, spans, ri);
    }
    Some(p)
}

fn label(kind: EventKind, link: bool) -> &'static str {
    match (kind, link) {
        (_, true) => "link",
        (EventKind::ModbusException, _) => "exception",
        _ => "discovery",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modbus::planner::{PlanLimits, ReadRequest};
    use crate::modbus::register_map::{
        ByteOrder, DataType, Limits, RegisterDef, Scale, Sentinel, Table,
    };
    use crate::modbus::transport::Exception;
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
        let cfg = crate::modbus::config::parse_section(text, &dir.join("g.toml"))
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
