//! The report-format test vectors of `shared/tests/vectors/`
//! (docs/REPORT-FORMAT.md §13): a mixed site (PV meter, unsigned grid
//! meter, irrigation pump, biogas digester, paddy tube) reported over a chain
//! of three periods by the real builder, and a tamper corpus derived from it.
//! Every tampered report is recomputed (Merkle root, series, continuity,
//! calculations) and re-signed with the gateway key, as an insider would, so
//! that only the rule under test can catch it.
//!
//! `MRV_UPDATE_VECTORS=1 cargo test -p mrv-gateway --test report_vectors`
//! rewrites the files; without it the test checks that the builder still
//! produces them byte for byte. The vectors are verified by
//! `shared/tests/report_vectors.rs`, the `verify` CLI, the receiver and the
//! Python verifier.

use ed25519_dalek::SigningKey;
use mrv_gateway::report::builder::{BuildInput, Identity, InputFrame, build};
use mrv_gateway::report::config::CalculationConfig;
use mrv_gateway::report::signer::sign;
use mrv_gateway::report::synthetic::device_key;
use mrv_shared::event::{Event, EventKind, SeqRange};
use mrv_shared::ids::{ChannelId, DeviceId, SiteId};
use mrv_shared::methodology::{MethodologyKind, Param, Params, Role};
use mrv_shared::quantity::{Quantity, ValueKind};
use mrv_shared::reading::{Channel, Quality, Sample};
use mrv_shared::report::calc::{CalculationSpec, calculate};
use mrv_shared::report::continuity::{derive, positions, stated_positions};
use mrv_shared::report::jwk::{Jwk, b64, thumbprint};
use mrv_shared::report::model::*;
use mrv_shared::report::registry::{DeviceRegistry, RegisteredDevice, RegisteredKey};
use mrv_shared::report::series::{compute_series, next_baselines, stated_baselines};
use mrv_shared::report::{Report, hex};
use mrv_shared::wire::Frame;
use mrv_shared::wire::signature::sign_frame;
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// 2026-03-02T00:00:00Z.
const T0: u64 = 1_772_409_600_000;
/// Ten-minute periods.
const PERIOD: u64 = 600_000;
/// One sample a minute.
const IV: u64 = 60_000;
const KID: &str = "gw-vec-01-2026";
const SITE: &str = "vec-site-01";

fn gateway_key() -> SigningKey {
    SigningKey::from_bytes(&[0x5a; 32])
}

fn id(s: &str) -> DeviceId {
    DeviceId::new(s).expect("valid id")
}

fn ch(s: &str, q: Quantity, k: ValueKind) -> Channel {
    Channel {
        id: ChannelId::new(s).expect("valid id"),
        quantity: q,
        kind: k,
    }
}

fn period(n: u64) -> Period {
    Period {
        start_ms: T0 + n * PERIOD,
        end_ms: T0 + (n + 1) * PERIOD,
    }
}

fn identity() -> Identity {
    Identity {
        site: SiteId::new(SITE).expect("valid id"),
        project: String::from("JCM-VEC-0001"),
        methodology_ref: String::from(
            "test vectors (solar_pv, solar_pump, biogas_digester, rice_awd)",
        ),
        gateway: String::from("gw-vec-01"),
        kid: String::from(KID),
    }
}

/// (id, kind, signed, channels).
fn site_devices() -> Vec<(&'static str, &'static str, bool, Vec<Channel>)> {
    use Quantity::*;
    use ValueKind::*;
    vec![
        (
            "digester-1",
            "digester",
            true,
            vec![
                ch("gas", GasVolume, Counter),
                ch("ch4", Ch4Fraction, Instant),
                ch("flame", Status, Instant),
                ch("temp", Temperature, Instant),
                ch("pressure", Pressure, Instant),
            ],
        ),
        (
            "grid-1",
            "modbus_meter",
            false,
            vec![ch("import_energy", Energy, Counter)],
        ),
        (
            "paddy-1",
            "paddy_water_level",
            true,
            vec![ch("level", WaterLevel, Instant)],
        ),
        (
            "pump-1",
            "irrigation_pump",
            true,
            vec![
                ch("energy", Energy, Counter),
                ch("water", WaterVolume, Counter),
                ch("run", Status, Instant),
            ],
        ),
        (
            "pv-1",
            "solar_meter",
            true,
            vec![ch("energy", Energy, Counter), ch("power", Power, Instant)],
        ),
    ]
}

fn device_records() -> Vec<DeviceRecord> {
    site_devices()
        .into_iter()
        .map(|(d, kind, signed, _)| {
            let k = device_key(d).verifying_key();
            DeviceRecord {
                id: id(d),
                kind: String::from(kind),
                serial: format!("SN-{d}"),
                meter_class: String::from("IEC 62053-21 class 1"),
                calibration: (kind == "solar_meter").then(|| Calibration {
                    certificate: String::from("CAL-2026-0042"),
                    calibrated_on: String::from("2026-01-15"),
                    due_on: String::from("2028-01-15"),
                }),
                signing: if signed {
                    Signing::Ed25519 {
                        kid: thumbprint(&k),
                        x: b64(k.as_bytes()),
                    }
                } else {
                    Signing::Unsigned
                },
                sample_interval_ms: Some(IV),
                counter_modulus: Some(1 << 32),
            }
        })
        .collect()
}

fn registry() -> DeviceRegistry {
    DeviceRegistry {
        devices: site_devices()
            .into_iter()
            .map(|(d, _, signed, _)| {
                let k = device_key(d).verifying_key();
                RegisteredDevice {
                    id: id(d),
                    unsigned: !signed,
                    keys: if signed {
                        vec![RegisteredKey {
                            jwk: Jwk::public(&thumbprint(&k), &k),
                            valid_from: Some(String::from("2026-01-01T00:00:00Z")),
                            valid_until: None,
                        }]
                    } else {
                        vec![]
                    },
                }
            })
            .collect(),
    }
}

fn params(pairs: &[(&str, &str, &str)]) -> Params {
    pairs
        .iter()
        .map(|(k, v, u)| {
            (
                k.to_string(),
                Param {
                    value: v.to_string(),
                    unit: u.to_string(),
                    source: String::from("test vector"),
                },
            )
        })
        .collect()
}

fn binding(role: Role, d: &str, c: &str, group: &str) -> Binding {
    Binding {
        role,
        device: id(d),
        channel: ChannelId::new(c).expect("valid id"),
        quantity: role.quantity(),
        group: String::from(group),
    }
}

fn calculations() -> Vec<CalculationConfig> {
    let mut v = vec![
        CalculationConfig {
            id: String::from("biogas"),
            methodology: MethodologyKind::BiogasDigester,
            bindings: vec![
                binding(Role::GasVolume, "digester-1", "gas", "d1"),
                binding(Role::Ch4Fraction, "digester-1", "ch4", "d1"),
                binding(Role::Temperature, "digester-1", "temp", "d1"),
                binding(Role::Pressure, "digester-1", "pressure", "d1"),
                binding(Role::Flame, "digester-1", "flame", "d1"),
            ],
            params: params(&[
                ("gwp_ch4", "28", "tCO2e/tCH4"),
                ("rho_ch4", "0.716", "kg/Nm3"),
                ("destruction_efficiency", "0.9", "1"),
            ]),
        },
        CalculationConfig {
            id: String::from("pump"),
            methodology: MethodologyKind::SolarPump,
            bindings: vec![
                binding(Role::PumpEnergy, "pump-1", "energy", ""),
                binding(Role::WaterVolume, "pump-1", "water", ""),
            ],
            params: params(&[("ef_displaced", "0.8", "tCO2/MWh")]),
        },
        CalculationConfig {
            id: String::from("pv"),
            methodology: MethodologyKind::SolarPv,
            bindings: vec![
                binding(Role::Generation, "pv-1", "energy", ""),
                binding(Role::Import, "grid-1", "import_energy", ""),
            ],
            params: params(&[("ef", "0.5113", "tCO2/MWh")]),
        },
        CalculationConfig {
            id: String::from("rice"),
            methodology: MethodologyKind::RiceAwd,
            bindings: vec![binding(Role::WaterLevel, "paddy-1", "level", "")],
            params: params(&[
                ("area_ha", "2.5", "ha"),
                ("ef_c", "1.19", "kgCH4/ha/day"),
                ("sf_p", "1", "1"),
                ("sf_o", "1", "1"),
                ("sf_w_baseline", "1.00", "1"),
                ("sf_w_single", "0.71", "1"),
                ("sf_w_multiple", "0.55", "1"),
                ("gwp_ch4", "28", "tCO2e/tCH4"),
                ("drainage_min_days", "0.002", "day"),
                ("dry_threshold_mm", "-150", "mm"),
            ]),
        },
    ];
    for c in &mut v {
        c.bindings.sort();
    }
    v
}

/// The value of channel `c` of device `d` at minute `m` since T0.
fn value(d: &str, c: &str, m: u64) -> (i64, Quality) {
    let m = m as i64;
    let good = Quality::GOOD;
    match (d, c) {
        // 2.5 kWh an hour: 41 or 42 Wh a minute.
        ("pv-1", "energy") => (1_000_000 + m * 2500 / 60, good),
        ("pv-1", "power") => (2_500_000 + (m % 7) * 1250, good),
        ("grid-1", "import_energy") => (50_000 + m * 3, good),
        ("pump-1", "energy") => (20_000 + m * 123, good),
        ("pump-1", "water") => (9_000_000 + m * 150_000, good),
        ("pump-1", "run") => (1, good),
        ("digester-1", "gas") => (
            if m == 13 { 0 } else { 400_000_000 + m * 21_000 },
            if m == 13 { Quality::UNAVAILABLE } else { good },
        ),
        ("digester-1", "ch4") => (5800 + (m % 5) * 10, good),
        ("digester-1", "flame") => (i64::from(m != 17), good),
        ("digester-1", "temp") => (3500 + (m % 3) * 5, good),
        ("digester-1", "pressure") => (102_800 + (m % 4) * 7, good),
        // Drains from -100 mm below -150 mm in the second period.
        ("paddy-1", "level") => (-100 - m * 6, good),
        _ => unreachable!("no such channel"),
    }
}

/// The frames of period `n`: every device, one frame of 5 minutes (5
/// samples per channel) twice a period; device-numbered from 1; the grid
/// meter's frames numbered as the gateway numbers polled devices.
fn frames(n: u64) -> Vec<InputFrame> {
    let mut out = Vec::new();
    for (d, _, signed, channels) in site_devices() {
        for half in 0..2u64 {
            let m0 = n * 10 + half * 5;
            let base = T0 + m0 * IV;
            let mut samples = Vec::new();
            for k in 0..5u64 {
                for (ci, c) in channels.iter().enumerate() {
                    let (v, q) = value(d, c.id.as_str(), m0 + k);
                    samples.push(Sample {
                        channel: ci as u8,
                        offset_ms: (k * IV) as u32,
                        value: v,
                        quality: q,
                    });
                }
            }
            let mut frame = Frame {
                site: SiteId::new(SITE).expect("valid id"),
                device: id(d),
                seq: n * 2 + half + 1,
                boot: 1,
                firmware: String::from("vec-fw 1.0"),
                base_time_ms: Some(base),
                channels: channels.clone(),
                samples,
                signature: None,
            };
            if signed {
                sign_frame(&mut frame, &device_key(d));
            }
            out.push(InputFrame {
                frame,
                received_ms: base + 5 * IV - IV + 800,
            });
        }
    }
    out
}

/// What the next report starts from.
#[derive(Clone, Default)]
struct Carry {
    baselines: BTreeMap<(DeviceId, ChannelId), Point>,
    awd: BTreeMap<String, BTreeMap<String, mrv_shared::methodology::awd::AwdState>>,
    positions: BTreeMap<DeviceId, u64>,
    prev_hash: Option<String>,
}

fn build_one(n: u64, frames: Vec<InputFrame>, events: Vec<Event>, carry: &Carry) -> Report {
    let identity = identity();
    let devices = device_records();
    let calcs = calculations();
    build(BuildInput {
        identity: &identity,
        period: period(n),
        seq: n + 1,
        prev_hash: carry
            .prev_hash
            .clone()
            .unwrap_or_else(|| String::from(GENESIS_PREV_HASH)),
        clock: ClockState {
            source: String::from("ntp"),
            last_sync_ms: Some(period(n).start_ms - 30_000),
            max_skew_ms: 3,
        },
        devices: &devices,
        frames,
        events,
        calculations: &calcs,
        baselines: carry.baselines.clone(),
        awd_start: carry.awd.clone(),
        positions: carry.positions.clone(),
        silent_before: BTreeSet::new(),
    })
    .expect("builds")
}

fn advance(carry: &Carry, r: &Report, bytes: &[u8]) -> Carry {
    use sha2::{Digest, Sha256};
    Carry {
        baselines: next_baselines(&carry.baselines, &r.series),
        awd: r
            .calculations
            .iter()
            .filter_map(|c| Some((c.id.clone(), c.awd_end.clone()?)))
            .collect(),
        positions: positions(&r.continuity),
        prev_hash: Some(hex(&Sha256::digest(bytes))),
    }
}

fn signed(r: &Report) -> Vec<u8> {
    sign(r, KID, &gateway_key()).expect("signs").bytes
}

/// The good chain: three reports.
fn good_chain() -> Vec<(Report, Vec<u8>)> {
    let mut carry = Carry::default();
    let mut out = Vec::new();
    for n in 0..3 {
        let events = if n == 0 {
            vec![Event::new(
                T0 + 500,
                EventKind::GatewayStarted,
                None,
                "mrv-gateway 0.1.0",
            )]
        } else {
            vec![]
        };
        let r = build_one(n, frames(n), events, &carry);
        let b = signed(&r);
        carry = advance(&carry, &r, &b);
        out.push((r, b));
    }
    out
}

/// Recomputes everything derived in `r` from its frames, events and stated
/// starting points (baselines, after_seq, awd_start), as an insider with the
/// gateway key would after tampering.
fn recompute(r: &mut Report) {
    r.readings
        .frames
        .sort_by(|a, b| (&a.device, a.seq).cmp(&(&b.device, b.seq)));
    let (count, root) = readings_root(&r.readings.frames);
    r.readings.count = count;
    r.readings.merkle_root = hex(&root);
    for f in &mut r.readings.frames {
        let first = f.samples.first().map(|s| f.sample_time_ms(s.1));
        f.late = first.is_some_and(|t| t < r.header.period.start_ms);
    }
    let before = stated_positions(&r.continuity);
    if let Ok(c) = derive(&before, &r.readings.frames, &r.events) {
        r.continuity = c;
    }
    let baselines = stated_baselines(&r.series);
    r.series = compute_series(&r.readings.frames, &r.devices, &r.header.period, &baselines);
    let period = r.header.period;
    let mut calcs = Vec::new();
    for c in &r.calculations {
        let again = calculate(
            CalculationSpec {
                id: &c.id,
                methodology: c.methodology,
                bindings: &c.bindings,
                params: &c.parameters,
            },
            &r.readings.frames,
            &r.series,
            &r.devices,
            &period,
            c.awd_start.as_ref(),
        );
        match again {
            Ok(a) => calcs.push(a),
            Err(_) => calcs.push(c.clone()),
        }
    }
    r.calculations = calcs;
}

/// Re-signs a frame record of `r` with `key`.
fn resign_frame(r: &Report, f: &mut FrameRecord, key: &SigningKey) {
    let mut frame = Frame {
        site: r.header.site.clone(),
        device: f.device.clone(),
        seq: f.seq,
        boot: f.boot,
        firmware: f.firmware.clone(),
        base_time_ms: f.base_time_ms,
        channels: f.channels.clone(),
        samples: f
            .samples
            .iter()
            .map(|&(channel, offset_ms, value, q)| Sample {
                channel,
                offset_ms,
                value,
                quality: Quality(q),
            })
            .collect(),
        signature: None,
    };
    sign_frame(&mut frame, key);
    f.sig = frame.signature.map(|s| b64(&s));
}

/// Re-chains `reports` from index `from` on: each `prev_hash` is set to the
/// hash of the (possibly altered) previous one, and each is re-signed.
fn rechain(reports: &mut [(Report, Vec<u8>)], from: usize) {
    use sha2::{Digest, Sha256};
    for i in from..reports.len() {
        if i > 0 {
            reports[i].0.header.prev_hash = hex(&Sha256::digest(&reports[i - 1].1));
        }
        reports[i].1 = signed(&reports[i].0);
    }
}

struct Case {
    name: &'static str,
    what: &'static str,
    /// Reports verified in order as one chain.
    files: Vec<Vec<u8>>,
    /// `None` for a good case; else (reason label, index of the file it fails at).
    expect: Option<(&'static str, usize)>,
}

fn drop_frames(r: &mut Report, device: &str, keep: impl Fn(&FrameRecord) -> bool) {
    r.readings
        .frames
        .retain(|f| f.device.as_str() != device || keep(f));
}

fn cases() -> Vec<Case> {
    let chain = good_chain();
    let bytes = |c: &[(Report, Vec<u8>)]| c.iter().map(|x| x.1.clone()).collect::<Vec<_>>();
    let mut out = vec![Case {
        name: "chain",
        what: "three consecutive reports of a mixed site (PV with grid import, pump, biogas digester, paddy tube)",
        files: bytes(&chain),
        expect: None,
    }];
    out.push(Case {
        name: "single",
        what: "the first report alone",
        files: vec![chain[0].1.clone()],
        expect: None,
    });

    // 1. A whole device period removed from report 2 and every figure
    // recomputed; report 3 adjusted to continue after what report 2 claims.
    {
        let mut c = chain.clone();
        drop_frames(&mut c[1].0, "pv-1", |_| false);
        for k in &mut c[1].0.continuity {
            if k.device.as_str() == "pv-1" {
                k.first_seq = None;
                k.last_seq = k.after_seq;
            }
        }
        recompute(&mut c[1].0);
        let pv_last = c[1]
            .0
            .continuity
            .iter()
            .find(|k| k.device.as_str() == "pv-1")
            .map(|k| k.last_seq);
        for k in &mut c[2].0.continuity {
            if k.device.as_str() == "pv-1" {
                k.after_seq = pv_last.expect("pv-1 listed");
            }
        }
        let base = c[1]
            .0
            .series
            .iter()
            .find(|s| s.device.as_str() == "pv-1")
            .and_then(|s| s.counter.as_ref()?.last);
        for s in &mut c[2].0.series {
            if s.device.as_str() == "pv-1"
                && s.channel.as_str() == "energy"
                && let Some(cnt) = &mut s.counter
            {
                cnt.baseline = base.or(chain[0]
                    .0
                    .series
                    .iter()
                    .find(|x| x.device.as_str() == "pv-1" && x.channel.as_str() == "energy")
                    .and_then(|x| x.counter.as_ref()?.last));
            }
        }
        recompute(&mut c[2].0);
        rechain(&mut c, 1);
        out.push(Case {
            name: "frames_removed_device_period",
            what: "pv-1's frames removed from report 2, all recomputed and re-signed; report 3 continues after what report 2 claims",
            files: bytes(&c),
            expect: Some(("continuity_hole", 2)),
        });
    }
    // 2. The last frame of a report removed, the next baseline adjusted.
    {
        let mut c = chain.clone();
        let last = c[1]
            .0
            .readings
            .frames
            .iter()
            .filter(|f| f.device.as_str() == "pv-1")
            .map(|f| f.seq)
            .max()
            .expect("frames");
        drop_frames(&mut c[1].0, "pv-1", |f| f.seq != last);
        for k in &mut c[1].0.continuity {
            if k.device.as_str() == "pv-1" {
                k.last_seq = last - 1;
                k.frames -= 1;
            }
        }
        recompute(&mut c[1].0);
        let base = c[1]
            .0
            .series
            .iter()
            .find(|s| s.device.as_str() == "pv-1" && s.channel.as_str() == "energy")
            .and_then(|s| s.counter.as_ref()?.last);
        for s in &mut c[2].0.series {
            if s.device.as_str() == "pv-1"
                && s.channel.as_str() == "energy"
                && let Some(cnt) = &mut s.counter
            {
                cnt.baseline = base;
            }
        }
        for k in &mut c[2].0.continuity {
            if k.device.as_str() == "pv-1" {
                k.after_seq = last - 1;
            }
        }
        recompute(&mut c[2].0);
        rechain(&mut c, 1);
        out.push(Case {
            name: "last_frame_removed_baseline_adjusted",
            what: "pv-1's last frame of report 2 removed, recomputed; report 3's counter baseline and continuity adjusted to match",
            files: bytes(&c),
            expect: Some(("continuity_hole", 2)),
        });
    }
    // 3. A signed device relabelled unsigned, its data changed.
    {
        let mut r = chain[0].0.clone();
        for d in &mut r.devices {
            if d.id.as_str() == "pv-1" {
                d.signing = Signing::Unsigned;
            }
        }
        for f in &mut r.readings.frames {
            if f.device.as_str() == "pv-1" {
                f.sig = None;
                for s in &mut f.samples {
                    if s.0 == 0 {
                        s.2 *= 2;
                    }
                }
            }
        }
        recompute(&mut r);
        out.push(Case {
            name: "signed_device_relabelled_unsigned",
            what: "pv-1 (registered with a key) listed as unsigned, its energy doubled, recomputed and re-signed",
            files: vec![signed(&r)],
            expect: Some(("device_unsigned_mismatch", 0)),
        });
    }
    // 4. A device missing from the registry.
    {
        let mut r = chain[0].0.clone();
        let mut extra = r
            .devices
            .iter()
            .find(|d| d.id.as_str() == "pv-1")
            .cloned()
            .expect("pv-1");
        extra.id = id("pv-9");
        let k = device_key("pv-9").verifying_key();
        extra.signing = Signing::Ed25519 {
            kid: thumbprint(&k),
            x: b64(k.as_bytes()),
        };
        r.devices.push(extra);
        r.devices.sort_by(|a, b| a.id.cmp(&b.id));
        let mut frames: Vec<FrameRecord> = r
            .readings
            .frames
            .iter()
            .filter(|f| f.device.as_str() == "pv-1")
            .cloned()
            .collect();
        for f in &mut frames {
            f.device = id("pv-9");
            resign_frame(&chain[0].0, f, &device_key("pv-9"));
        }
        r.readings.frames.extend(frames);
        recompute(&mut r);
        out.push(Case {
            name: "device_not_in_registry",
            what: "a device pv-9 the registry does not know, with signed frames, recomputed and re-signed",
            files: vec![signed(&r)],
            expect: Some(("device_not_registered", 0)),
        });
    }
    // 5. A device key swapped and its frames re-signed.
    {
        let mut r = chain[0].0.clone();
        let rogue = SigningKey::from_bytes(&[0x66; 32]);
        for d in &mut r.devices {
            if d.id.as_str() == "pv-1" {
                let k = rogue.verifying_key();
                d.signing = Signing::Ed25519 {
                    kid: thumbprint(&k),
                    x: b64(k.as_bytes()),
                };
            }
        }
        let base = r.clone();
        for f in &mut r.readings.frames {
            if f.device.as_str() == "pv-1" {
                for s in &mut f.samples {
                    if s.0 == 0 {
                        s.2 += 1000;
                    }
                }
                resign_frame(&base, f, &rogue);
            }
        }
        recompute(&mut r);
        out.push(Case {
            name: "device_key_swapped",
            what: "pv-1 listed with another key, its readings raised and its frames re-signed with that key",
            files: vec![signed(&r)],
            expect: Some(("device_key_mismatch", 0)),
        });
    }
    // 6. An impossible calibration date.
    {
        let mut r = chain[0].0.clone();
        for d in &mut r.devices {
            if let Some(c) = &mut d.calibration {
                c.calibrated_on = String::from("2026-11-31");
            }
        }
        out.push(Case {
            name: "impossible_calibration_date",
            what: "pv-1's calibrated_on is 2026-11-31 (November has 30 days)",
            files: vec![signed(&r)],
            expect: Some(("invalid_date", 0)),
        });
    }
    // 7. Consumption bound as generation.
    {
        let mut r = chain[0].0.clone();
        for c in &mut r.calculations {
            if c.id == "pv" {
                c.bindings
                    .push(binding(Role::Generation, "pump-1", "energy", ""));
                c.bindings.sort();
            }
        }
        out.push(Case {
            name: "consumption_bound_as_generation",
            what: "the pump's energy (consumption) added as a PV generation input",
            files: vec![signed(&r)],
            expect: Some(("binding_invalid", 0)),
        });
    }
    // 8. A binding to a device the report does not list.
    {
        let mut r = chain[0].0.clone();
        for c in &mut r.calculations {
            if c.id == "pv" {
                c.bindings
                    .push(binding(Role::Generation, "ghost-1", "energy", ""));
                c.bindings.sort();
            }
        }
        out.push(Case {
            name: "binding_to_nonexistent_device",
            what: "a PV generation input bound to ghost-1/energy, which no device record lists",
            files: vec![signed(&r)],
            expect: Some(("binding_invalid", 0)),
        });
    }
    // 9. A hole explained by a forged event for other seqs.
    {
        let mut r = chain[1].0.clone();
        let first = r
            .readings
            .frames
            .iter()
            .filter(|f| f.device.as_str() == "pv-1")
            .map(|f| f.seq)
            .min()
            .expect("frames");
        drop_frames(&mut r, "pv-1", |f| f.seq != first);
        r.events.push(Event {
            time_ms: r.header.period.start_ms + 1000,
            kind: EventKind::FramesGivenUp,
            device: Some(id("pv-1")),
            seqs: Some(SeqRange {
                first: first + 5,
                last: first + 5,
            }),
            detail: String::from("operator: forged"),
        });
        r.events.sort_by_key(|e| e.time_ms);
        recompute(&mut r);
        let mut c = vec![chain[0].clone(), (r, vec![])];
        rechain(&mut c, 1);
        out.push(Case {
            name: "hole_explained_by_forged_event",
            what: "pv-1's first frame of report 2 removed, a frames_given_up event for another seq added, recomputed",
            files: bytes(&c),
            expect: Some(("continuity_hole", 1)),
        });
    }
    // 10. A give-up event without a seq range.
    {
        let mut r = chain[1].0.clone();
        let first = r
            .readings
            .frames
            .iter()
            .filter(|f| f.device.as_str() == "pv-1")
            .map(|f| f.seq)
            .min()
            .expect("frames");
        drop_frames(&mut r, "pv-1", |f| f.seq != first);
        r.events.push(Event {
            time_ms: r.header.period.start_ms + 1000,
            kind: EventKind::FramesGivenUp,
            device: Some(id("pv-1")),
            seqs: None,
            detail: String::from("operator: forged"),
        });
        r.events.sort_by_key(|e| e.time_ms);
        recompute(&mut r);
        let mut c = vec![chain[0].clone(), (r, vec![])];
        rechain(&mut c, 1);
        out.push(Case {
            name: "give_up_event_without_seqs",
            what: "a frames_given_up event with no seq range, offered as the explanation of a removed frame",
            files: bytes(&c),
            expect: Some(("bad_give_up_event", 1)),
        });
    }
    // 11. A frame given up while present.
    {
        let mut r = chain[1].0.clone();
        let first = r
            .readings
            .frames
            .iter()
            .filter(|f| f.device.as_str() == "pv-1")
            .map(|f| f.seq)
            .min()
            .expect("frames");
        r.events.push(Event {
            time_ms: r.header.period.start_ms + 1000,
            kind: EventKind::FramesGivenUp,
            device: Some(id("pv-1")),
            seqs: Some(SeqRange { first, last: first }),
            detail: String::from("operator: forged"),
        });
        r.events.sort_by_key(|e| e.time_ms);
        let mut c = vec![chain[0].clone(), (r, vec![])];
        rechain(&mut c, 1);
        out.push(Case {
            name: "given_up_frame_present",
            what: "a frames_given_up event over a frame the report carries",
            files: bytes(&c),
            expect: Some(("continuity_repeat", 1)),
        });
    }
    // 12. A report dropped from the chain.
    out.push(Case {
        name: "report_dropped",
        what: "report 2 of 3 missing",
        files: vec![chain[0].1.clone(), chain[2].1.clone()],
        expect: Some(("seq_gap", 1)),
    });
    // 13. ER inflated without recomputation.
    {
        let mut r = chain[0].0.clone();
        for c in &mut r.calculations {
            if c.id == "pv" {
                c.er.exact = String::from("1000");
                c.er.decimal = String::from("1000.000000");
            }
        }
        out.push(Case {
            name: "er_inflated",
            what: "the PV calculation's ER set to 1000 tCO2e and re-signed",
            files: vec![signed(&r)],
            expect: Some(("calculation_mismatch", 0)),
        });
    }
    // 14. A reading altered (device signature and Merkle root).
    {
        let mut r = chain[0].0.clone();
        r.readings.frames[0].samples[0].2 += 1;
        out.push(Case {
            name: "reading_altered",
            what: "one sample value raised by 1 and re-signed (the Merkle root no longer matches)",
            files: vec![signed(&r)],
            expect: Some(("merkle_mismatch", 0)),
        });
        recompute(&mut r);
        out.push(Case {
            name: "reading_altered_recomputed",
            what: "one sample value raised by 1, everything recomputed and re-signed (the device signature no longer matches)",
            files: vec![signed(&r)],
            expect: Some(("device_signature_invalid", 0)),
        });
    }
    // 15. A payload that is not canonical.
    {
        let jws = mrv_shared::report::jws::parse_compact(&chain[0].1).expect("jws");
        let mut text = String::from_utf8(jws.payload.clone()).expect("utf8");
        text.insert(1, ' ');
        let b = mrv_shared::report::jws::sign_compact(text.as_bytes(), KID, &gateway_key());
        out.push(Case {
            name: "non_canonical_payload",
            what: "the report's JSON with one extra space, signed",
            files: vec![b.into_bytes()],
            expect: Some(("malformed", 0)),
        });
    }
    out
}

fn vectors_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/tests/vectors")
}

/// What a conforming verifier finds for a good case: per report, per
/// calculation, the exact ER and the inputs.
fn expectation(case: &Case) -> serde_json::Value {
    match case.expect {
        Some((reason, at)) => json!({
            "what": case.what,
            "reason": reason,
            "file": format!("{:02}.jws", at + 1),
        }),
        None => {
            let reports: Vec<serde_json::Value> = case
                .files
                .iter()
                .map(|b| {
                    let jws = mrv_shared::report::jws::parse_compact(b).expect("jws");
                    let r: Report = serde_json::from_slice(&jws.payload).expect("report");
                    let calcs: serde_json::Map<String, serde_json::Value> = r
                        .calculations
                        .iter()
                        .map(|c| {
                            (
                                c.id.clone(),
                                json!({"er_exact": c.er.exact, "re_exact": c.re.exact, "pe_exact": c.pe.exact, "inputs": c.inputs}),
                            )
                        })
                        .collect();
                    json!({"seq": r.header.seq, "calculations": calcs})
                })
                .collect();
            json!({"what": case.what, "reason": null, "reports": reports})
        }
    }
}

fn write_or_check(path: &Path, bytes: &[u8], update: bool, stale: &mut Vec<PathBuf>) {
    if update {
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, bytes).expect("write");
    } else if std::fs::read(path).ok().as_deref() != Some(bytes) {
        stale.push(path.to_path_buf());
    }
}

#[test]
fn the_vectors_are_what_the_builder_and_the_tamperer_produce() {
    let update = std::env::var_os("MRV_UPDATE_VECTORS").is_some();
    let dir = vectors_dir();
    let mut stale = Vec::new();
    let mut reg = serde_json::to_vec_pretty(&registry()).expect("json");
    reg.push(b'\n');
    write_or_check(&dir.join("registry.json"), &reg, update, &mut stale);
    let mut jwk =
        serde_json::to_vec_pretty(&Jwk::public(KID, &gateway_key().verifying_key())).expect("json");
    jwk.push(b'\n');
    write_or_check(&dir.join("gateway.pub.jwk"), &jwk, update, &mut stale);
    // One frame, byte for byte (docs/REPORT-FORMAT.md §2.2).
    let f = frames(0)
        .into_iter()
        .find(|f| f.frame.device.as_str() == "pv-1")
        .expect("pv-1")
        .frame;
    let signing = mrv_shared::wire::binary::signing_bytes(&f);
    let frame_vec = json!({
        "what": "pv-1's first frame of the good chain: its fields as a report carries them, the signing bytes (binary encoding up to and including the CRC, flag bit 0 set), the device key and the signature",
        "site": SITE,
        "device": f.device,
        "seq": f.seq,
        "boot": f.boot,
        "firmware": f.firmware,
        "base_time_ms": f.base_time_ms,
        "channels": f.channels,
        "samples": f.samples.iter().map(|s| json!([s.channel, s.offset_ms, s.value, s.quality.0])).collect::<Vec<_>>(),
        "signing_bytes_hex": hex(&signing),
        "public_key_x": b64(device_key("pv-1").verifying_key().as_bytes()),
        "signature": f.signature.map(|s| b64(&s)),
    });
    let mut fv = serde_json::to_vec_pretty(&frame_vec).expect("json");
    fv.push(b'\n');
    write_or_check(&dir.join("frame_signed.json"), &fv, update, &mut stale);
    let cases = cases();
    for case in &cases {
        let sub = if case.expect.is_none() {
            "good"
        } else {
            "tamper"
        };
        let cdir = dir.join(sub).join(case.name);
        for (i, b) in case.files.iter().enumerate() {
            write_or_check(
                &cdir.join(format!("{:02}.jws", i + 1)),
                b,
                update,
                &mut stale,
            );
        }
        let mut e = serde_json::to_vec_pretty(&expectation(case)).expect("json");
        e.push(b'\n');
        write_or_check(&cdir.join("expect.json"), &e, update, &mut stale);
    }
    assert!(
        stale.is_empty(),
        "vectors differ from what the builder produces (MRV_UPDATE_VECTORS=1 rewrites them after an intended change): {stale:?}"
    );
}

#[test]
fn every_vector_gets_its_verdict_from_the_reference_verifier() {
    use mrv_shared::report::verify::{Chain, verify_report};
    use mrv_shared::report::{DeviceTrust, KeySet};
    let mut keys = KeySet::new();
    keys.insert(KID, gateway_key().verifying_key());
    let trust = DeviceTrust::Registry(registry().trusted().expect("registry"));
    for case in cases() {
        let mut chain = Chain::new(false);
        let mut got = None;
        for (i, b) in case.files.iter().enumerate() {
            let r = verify_report(b, &keys, &trust).and_then(|v| chain.push(&v));
            if let Err(e) = r {
                got = Some((e.label(), i));
                break;
            }
        }
        assert_eq!(got, case.expect, "{}: {}", case.name, case.what);
    }
}

#[test]
fn the_good_chain_exercises_every_calculator() {
    let chain = good_chain();
    let last = &chain[2].0;
    let by_id: BTreeMap<&str, &Calculation> = last
        .calculations
        .iter()
        .map(|c| (c.id.as_str(), c))
        .collect();
    // PV: generation credited, the grid import subtracted.
    assert_ne!(by_id["pv"].inputs["re_energy_wh"], "0");
    assert_ne!(by_id["pv"].inputs["pe_energy_wh"], "0");
    // Pump and its water.
    assert_ne!(by_id["pump"].inputs["re_energy_wh"], "0");
    assert!(by_id["pump"].inputs.contains_key("water_volume_ml"));
    // Biogas with one unflared minute and one unavailable flow sample.
    assert_ne!(by_id["biogas"].inputs["ch4_normal_ml"], "0");
    // Rice: the tube drained past -150 mm for longer than the minimum.
    assert_eq!(by_id["rice"].inputs["drainage_events:paddy-1/level"], "1");
    assert_ne!(by_id["rice"].er.exact, "0");
    // Continuity from seq 1 to 6 over the chain for every device.
    assert!(
        last.continuity
            .iter()
            .all(|c| c.last_seq == 6 && c.after_seq == 4)
    );
}
