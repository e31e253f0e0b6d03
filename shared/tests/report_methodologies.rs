//! The calculation block end to end for the digester and rice AWD
//! methodologies: frames -> series -> calculation -> a report that
//! `check_contents` recomputes and accepts, and rejects once altered.

use mrv_shared::ids::{ChannelId, DeviceId, SiteId};
use mrv_shared::methodology::awd::AwdState;
use mrv_shared::methodology::{MethodologyKind, Param, Params, Role};
use mrv_shared::quantity::{Quantity, ValueKind};
use mrv_shared::reading::Channel;
use mrv_shared::report::calc::{CalculationSpec, calculate};
use mrv_shared::report::continuity::derive;
use mrv_shared::report::model::*;
use mrv_shared::report::series::compute_series;
use mrv_shared::report::{ReportError, check_contents, hex};
use std::collections::BTreeMap;

const T0: u64 = 1_764_115_200_000;

fn params(pairs: &[(&str, &str)]) -> Params {
    pairs
        .iter()
        .map(|(k, v)| {
            (
                k.to_string(),
                Param {
                    value: v.to_string(),
                    unit: String::new(),
                    source: String::from("test"),
                },
            )
        })
        .collect()
}

fn channel(id: &str, q: Quantity, k: ValueKind) -> Channel {
    Channel {
        id: ChannelId::new(id).expect("valid"),
        quantity: q,
        kind: k,
    }
}

fn device(id: &str, kind: &str, interval: u64) -> DeviceRecord {
    DeviceRecord {
        id: DeviceId::new(id).expect("valid"),
        kind: kind.to_string(),
        serial: String::from("SN1"),
        meter_class: String::new(),
        calibration: None,
        signing: Signing::Unsigned,
        sample_interval_ms: Some(interval),
        counter_modulus: None,
    }
}

fn bind(role: Role, device: &str, channel: &str, group: &str) -> Binding {
    Binding {
        role,
        device: DeviceId::new(device).expect("valid"),
        channel: ChannelId::new(channel).expect("valid"),
        quantity: role.quantity(),
        group: group.to_string(),
    }
}

#[allow(clippy::too_many_arguments)]
fn report(
    kind: MethodologyKind,
    params: Params,
    mut bindings: Vec<Binding>,
    devices: Vec<DeviceRecord>,
    frames: Vec<FrameRecord>,
    period: Period,
    awd_start: Option<BTreeMap<String, AwdState>>,
    before: BTreeMap<DeviceId, u64>,
) -> Report {
    bindings.sort();
    let series = compute_series(&frames, &devices, &period, &BTreeMap::new());
    let calculation = calculate(
        CalculationSpec {
            id: "calc",
            methodology: kind,
            bindings: &bindings,
            params: &params,
        },
        &frames,
        &series,
        &devices,
        &period,
        awd_start.as_ref(),
    )
    .expect("calculates");
    let continuity = derive(&before, &frames, &[]).expect("continuous");
    let (count, root) = readings_root(&frames);
    let r = Report {
        header: Header {
            schema: SCHEMA_VERSION,
            report_id: String::from("gw-000000000001"),
            site: SiteId::new("site").expect("valid"),
            project: String::from("P"),
            methodology: String::from("M"),
            gateway: String::from("gw"),
            kid: String::from("gw"),
            period,
            seq: 1,
            prev_hash: String::from(GENESIS_PREV_HASH),
            clock: ClockState {
                source: String::from("ntp"),
                last_sync_ms: None,
                max_skew_ms: 0,
            },
        },
        devices,
        continuity,
        series,
        readings: Readings {
            count,
            merkle_root: hex(&root),
            frames,
        },
        events: vec![],
        calculations: vec![calculation],
    };
    // The fast canonical writer agrees with the generic one.
    assert_eq!(
        report_canonical(&r).expect("fast"),
        mrv_shared::report::canonical::to_canonical_vec(&r).expect("generic")
    );
    r
}

#[test]
fn digester_credits_flared_intervals_with_full_conditions_only() {
    let period = Period {
        start_ms: T0,
        end_ms: T0 + 600_000,
    };
    let channels = vec![
        channel("gas", Quantity::GasVolume, ValueKind::Delta),
        channel("ch4", Quantity::Ch4Fraction, ValueKind::Instant),
        channel("temp", Quantity::Temperature, ValueKind::Instant),
        channel("press", Quantity::Pressure, ValueKind::Instant),
        channel("flame", Quantity::Status, ValueKind::Instant),
    ];
    let frames: Vec<FrameRecord> = (0..10u64)
        .map(|m| {
            let flame = i64::from(m != 7);
            FrameRecord {
                device: DeviceId::new("skid-1").expect("valid"),
                seq: m + 1,
                boot: 1,
                firmware: String::from("fw"),
                base_time_ms: Some(T0 + m * 60_000),
                received_ms: T0 + m * 60_000 + 100,
                channels: channels.clone(),
                samples: vec![
                    (0, 0, 1_000_000, 0),
                    (1, 0, 6000, 0),
                    (2, 0, 2500, 0),
                    (3, 0, 101_325, 0),
                    (4, 0, flame, 0),
                ],
                sig: None,
                late: false,
            }
        })
        .collect();
    let r = report(
        MethodologyKind::BiogasDigester,
        params(&[
            ("gwp_ch4", "28"),
            ("rho_ch4", "0.716"),
            ("destruction_efficiency", "0.90"),
        ]),
        vec![
            bind(Role::GasVolume, "skid-1", "gas", "skid"),
            bind(Role::Ch4Fraction, "skid-1", "ch4", "skid"),
            bind(Role::Temperature, "skid-1", "temp", "skid"),
            bind(Role::Pressure, "skid-1", "press", "skid"),
            bind(Role::Flame, "skid-1", "flame", "skid"),
        ],
        vec![device("skid-1", "digester", 60_000)],
        frames,
        period,
        None,
        BTreeMap::new(),
    );
    let c = &r.calculations[0];
    assert_eq!(c.inputs["gas_volume_ml"], "10000000");
    assert_eq!(c.inputs["unflared_ml"], "1000000");
    assert_eq!(c.inputs["unpaired_ml"], "0");
    // 9 credited intervals x floor(floor(1e6 x 27315/29815) x 0.6) = 9 x 549 689.
    assert_eq!(c.inputs["ch4_normal_ml"], "4947201");
    // 4.947201 Nm3 x 0.716 kg/Nm3 x 0.9 x 28 / 1000 = 0.08926... t
    assert_eq!(c.er.decimal, "0.089263");
    check_contents(&r).expect("recomputes");
    let mut bad = r.clone();
    bad.calculations[0]
        .inputs
        .insert(String::from("ch4_normal_ml"), String::from("5000000"));
    assert_eq!(
        check_contents(&bad),
        Err(ReportError::CalculationMismatch(String::from(
            "calc: inputs"
        )))
    );
}

#[test]
fn awd_credits_only_after_a_drainage_event_and_carries_state_between_reports() {
    let day = 86_400_000u64;
    let hour = 3_600_000u64;
    let p = params(&[
        ("area_ha", "10"),
        ("ef_c", "1.19"),
        ("sf_p", "1"),
        ("sf_o", "1"),
        ("sf_w_baseline", "1.00"),
        ("sf_w_single", "0.71"),
        ("sf_w_multiple", "0.55"),
        ("gwp_ch4", "28"),
        ("drainage_min_days", "3"),
        ("dry_threshold_mm", "-50"),
    ]);
    let tube = vec![channel("level", Quantity::WaterLevel, ValueKind::Instant)];
    let mut state: Option<BTreeMap<String, AwdState>> = None;
    let mut ers = Vec::new();
    for d in 0..5u64 {
        let period = Period {
            start_ms: T0 + d * day,
            end_ms: T0 + (d + 1) * day,
        };
        // Flooded on day 0, dry from day 1 on.
        let level = if d == 0 { 30 } else { -120 };
        let frames = vec![FrameRecord {
            device: DeviceId::new("tube-1").expect("valid"),
            seq: d + 1,
            boot: 1,
            firmware: String::from("fw"),
            base_time_ms: Some(period.start_ms),
            received_ms: period.end_ms - 1,
            channels: tube.clone(),
            samples: (0..24u32)
                .map(|h| (0u8, h * hour as u32, level, 0u8))
                .collect(),
            sig: None,
            late: false,
        }];
        let before = if d == 0 {
            BTreeMap::new()
        } else {
            BTreeMap::from([(DeviceId::new("tube-1").expect("valid"), d)])
        };
        let r = report(
            MethodologyKind::RiceAwd,
            p.clone(),
            vec![bind(Role::WaterLevel, "tube-1", "level", "")],
            vec![device("tube-1", "paddy_water_level", hour)],
            frames,
            period,
            state.clone(),
            before,
        );
        check_contents(&r).expect("recomputes");
        ers.push(r.calculations[0].er.decimal.clone());
        state = r.calculations[0].awd_end.clone();
    }
    // Dry from day 1 00:00; the spell passes 3 days on day 4 at 01:00: one
    // drainage event, single drainage regime from then on.
    assert_eq!(ers[..4], ["0.000000", "0.000000", "0.000000", "0.000000"]);
    // 10 ha x 1 day x 1.19 x 28 / 1000 x (1.00 - 0.71) = 0.096628 t.
    assert_eq!(ers[4], "0.096628");
    let s = state.expect("state")["tube-1/level"];
    assert_eq!(s.drainage_events, 1);
}

#[test]
fn an_expired_calibration_excludes_the_meter_from_credit() {
    let period = Period {
        start_ms: T0,
        end_ms: T0 + 600_000,
    };
    let mut dev = device("pv-1", "solar_meter", 60_000);
    dev.calibration = Some(Calibration {
        certificate: String::from("C1"),
        calibrated_on: String::from("2020-01-01"),
        due_on: String::from("2025-11-26"),
    });
    let frames = vec![FrameRecord {
        device: DeviceId::new("pv-1").expect("valid"),
        seq: 1,
        boot: 1,
        firmware: String::from("fw"),
        base_time_ms: None,
        received_ms: T0 + 599_000,
        channels: vec![channel("e", Quantity::Energy, ValueKind::Counter)],
        samples: (0..10u32)
            .map(|i| (0u8, i * 60_000, i64::from(i) * 1000, 0u8))
            .collect(),
        sig: None,
        late: false,
    }];
    let r = report(
        MethodologyKind::SolarPv,
        params(&[("ef", "0.5")]),
        vec![bind(Role::Generation, "pv-1", "e", "")],
        vec![dev],
        frames,
        period,
        None,
        BTreeMap::new(),
    );
    assert_eq!(r.calculations[0].excluded.len(), 1);
    assert_eq!(r.calculations[0].excluded[0].reason, "calibration_expired");
    assert_eq!(r.calculations[0].inputs["re_energy_wh"], "0");
    assert_eq!(r.series[0].counter.as_ref().expect("counter").delta, 9000);
    check_contents(&r).expect("recomputes");
}

#[test]
fn consumption_is_subtracted_and_a_silent_subtracted_meter_withholds_the_credit() {
    let period = Period {
        start_ms: T0,
        end_ms: T0 + 600_000,
    };
    let frame = |dev: &str, step: i64| FrameRecord {
        device: DeviceId::new(dev).expect("valid"),
        seq: 1,
        boot: 1,
        firmware: String::from("fw"),
        base_time_ms: Some(T0),
        received_ms: T0 + 599_000,
        channels: vec![channel("e", Quantity::Energy, ValueKind::Counter)],
        samples: (0..10u32)
            .map(|i| (0u8, i * 60_000, i64::from(i) * step, 0u8))
            .collect(),
        sig: None,
        late: false,
    };
    let bindings = vec![
        bind(Role::Generation, "pv-1", "e", ""),
        bind(Role::Import, "grid-1", "e", ""),
    ];
    let devices = vec![
        device("grid-1", "modbus_meter", 60_000),
        device("pv-1", "solar_meter", 60_000),
    ];
    let r = report(
        MethodologyKind::SolarPv,
        params(&[("ef", "0.5")]),
        bindings.clone(),
        devices.clone(),
        vec![frame("grid-1", 100), frame("pv-1", 1000)],
        period,
        None,
        BTreeMap::new(),
    );
    let c = &r.calculations[0];
    assert_eq!(c.inputs["re_energy_wh"], "9000");
    assert_eq!(c.inputs["pe_energy_wh"], "900");
    // (9000 - 900) Wh / 1e6 x 0.5 = 0.00405 t
    assert_eq!(c.er.exact, "81/20000");
    check_contents(&r).expect("recomputes");
    // The grid meter sends nothing: no credit for the period.
    let r = report(
        MethodologyKind::SolarPv,
        params(&[("ef", "0.5")]),
        bindings,
        devices,
        vec![frame("pv-1", 1000)],
        period,
        None,
        BTreeMap::new(),
    );
    let c = &r.calculations[0];
    assert_eq!(c.inputs["re_energy_wh"], "0");
    assert_eq!(c.inputs["withheld_re_energy_wh"], "9000");
    assert_eq!(c.er.exact, "0");
    assert_eq!(c.excluded[0].reason, "subtracted_input_missing");
    check_contents(&r).expect("recomputes");
}

#[test]
fn a_pump_is_never_pv_generation_and_bindings_must_name_listed_devices() {
    let period = Period {
        start_ms: T0,
        end_ms: T0 + 600_000,
    };
    let series = [];
    let devices = vec![device("pump-1", "irrigation_pump", 60_000)];
    let calc = |b: Vec<Binding>| {
        calculate(
            CalculationSpec {
                id: "pv",
                methodology: MethodologyKind::SolarPv,
                bindings: &b,
                params: &params(&[("ef", "0.5")]),
            },
            &[],
            &series,
            &devices,
            &period,
            None,
        )
    };
    let e = calc(vec![bind(Role::Generation, "pump-1", "energy", "")]).unwrap_err();
    assert!(e.to_string().contains("consumption"), "{e}");
    let e = calc(vec![bind(Role::Generation, "ghost", "energy", "")]).unwrap_err();
    assert!(e.to_string().contains("does not list"), "{e}");
    let e = calc(vec![]).unwrap_err();
    assert!(e.to_string().contains("at least one"), "{e}");
}
