//! The device application against mocked hardware (embedded-hal-mock: an
//! S0 input and an ADS1115 on I2C) and a RAM NOR flash that loses power in
//! the middle of a frame write. After the reboot the pulse counter resumes
//! from flash, sequence numbers continue without a gap, and the gateway
//! model ends up with every durable frame exactly once, with an energy
//! counter that never goes backwards.
#![allow(clippy::unwrap_used)]

use ed25519_dalek::SigningKey;
use embedded_hal_mock::eh1::delay::NoopDelay;
use embedded_hal_mock::eh1::digital::{Mock as PinMock, State, Transaction as PinTx};
use embedded_hal_mock::eh1::i2c::{Mock as I2cMock, Transaction as I2cTx};
use mrv_firmware::app::{App, AppConfig, Encoding, Identity, Uplink};
use mrv_firmware::drivers::ads1115::{
    self, Ads1115, DEFAULT_ADDRESS, LoopScale, LoopState, REG_CONFIG, REG_CONVERSION,
};
use mrv_firmware::drivers::pulse::{PulseCounter, PulseScale};
use mrv_firmware::storage::ram_flash::RamFlash;
use mrv_shared::ids::{ChannelId, DeviceId, SiteId};
use mrv_shared::quantity::{Quantity, ValueKind};
use mrv_shared::reading::{Channel, Quality};
use mrv_shared::wire::signature::verify_frame;
use mrv_shared::wire::{Ack, AckStatus, Frame, binary};
use std::collections::BTreeMap;

const SECTORS: u32 = 4;
const POLLS: usize = 8;
/// Per period the S0 line shows two debounced pulses (active low).
const PERIOD_LEVELS: [State; POLLS] = [
    State::High,
    State::Low,
    State::Low,
    State::High,
    State::High,
    State::Low,
    State::Low,
    State::High,
];
const TUBE: LoopScale = LoopScale {
    at_4ma: -300,
    at_20ma: 200,
};
const ENERGY: PulseScale = PulseScale {
    pulses_per_unit: 1000,
    base_per_unit: 1000,
};

fn adc_read(raw: i16) -> Vec<I2cTx> {
    vec![
        I2cTx::write(DEFAULT_ADDRESS, vec![REG_CONFIG, 0xC3, 0x83]),
        I2cTx::write_read(DEFAULT_ADDRESS, vec![REG_CONFIG], vec![0xC3, 0x83]),
        I2cTx::write_read(
            DEFAULT_ADDRESS,
            vec![REG_CONVERSION],
            raw.to_be_bytes().to_vec(),
        ),
    ]
}

fn boot(flash: RamFlash) -> App<RamFlash, 8> {
    App::boot(
        flash,
        0,
        SECTORS,
        Identity {
            site: SiteId::new("site").unwrap(),
            device: DeviceId::new("pump-7").unwrap(),
            firmware: "test".into(),
            key: Some(SigningKey::from_bytes(&[9; 32])),
        },
        AppConfig {
            samples_per_frame: 4,
            max_outbox: 100,
            ack_timeout_ms: 10_000,
            encoding: Encoding::Binary,
            has_wall_clock: true,
        },
        vec![
            Channel {
                id: ChannelId::new("energy").unwrap(),
                quantity: Quantity::Energy,
                kind: ValueKind::Counter,
            },
            Channel {
                id: ChannelId::new("level").unwrap(),
                quantity: Quantity::WaterLevel,
                kind: ValueKind::Instant,
            },
        ],
    )
    .unwrap()
}

#[derive(Default)]
struct Gateway {
    stored: BTreeMap<u64, Frame>,
}

impl Uplink for Gateway {
    type Error = ();
    fn send(&mut self, seq: u64, payload: &[u8]) -> Result<(), ()> {
        let f = binary::decode_frame_exact(payload).unwrap();
        assert_eq!(f.seq, seq);
        verify_frame(&f, &SigningKey::from_bytes(&[9; 32]).verifying_key()).unwrap();
        assert!(
            self.stored
                .insert(seq, f.clone())
                .is_none_or(|old| old == f),
            "seq {seq} re-used for different content"
        );
        Ok(())
    }
}

impl Gateway {
    fn ack(&self) -> Ack {
        let mut hi = 0;
        while self.stored.contains_key(&(hi + 1)) {
            hi += 1;
        }
        Ack {
            acked_seq: hi,
            status: AckStatus::Ok,
        }
    }
}

/// One sampling period: poll the S0 input, read the probe, record, seal.
/// Returns false when the flash lost power.
fn period(
    app: &mut App<RamFlash, 8>,
    s0: &mut PulseCounter<PinMock>,
    adc: &mut Ads1115<I2cMock, NoopDelay>,
    t: u64,
) -> bool {
    for _ in 0..POLLS {
        s0.poll().unwrap();
    }
    let ua = adc.read_loop_microamps(0, 150_000).unwrap();
    let level = match ads1115::classify_loop(ua) {
        LoopState::Ok => (TUBE.to_value(ua), Quality::GOOD),
        _ => (0, Quality::OUT_OF_RANGE.with(Quality::UNAVAILABLE)),
    };
    app.set_counter(0, s0.pulses());
    app.record(0, ENERGY.to_base(s0.pulses()), Quality::GOOD, t)
        .unwrap();
    app.record(1, level.0, level.1, t).unwrap();
    !app.ready() || app.seal().is_ok()
}

#[test]
fn power_loss_mid_write_keeps_counters_seqs_and_outbox_consistent() {
    const BEFORE: usize = 6;
    const AFTER: usize = 6;
    // Expectations for the whole run (both boots share the mocks).
    let pin_tx: Vec<PinTx> = (0..BEFORE + AFTER)
        .flat_map(|_| PERIOD_LEVELS.iter().map(|s| PinTx::get(*s)))
        .collect();
    let mut i2c_tx = Vec::new();
    for p in 0..BEFORE + AFTER {
        // 12 mA (level -50 mm), except one period with the probe unplugged.
        i2c_tx.extend(adc_read(if p == 3 { 0 } else { 14_400 }));
    }
    let mut pin = PinMock::new(&pin_tx);
    let mut i2c = I2cMock::new(&i2c_tx);

    let mut gw = Gateway::default();
    let mut app = boot(RamFlash::new(SECTORS as usize));
    assert_eq!(app.boot_count(), 1);
    let mut s0 = PulseCounter::new(pin.clone(), true, 2, app.counter(0));
    let mut adc = Ads1115::new(i2c.clone(), NoopDelay::new(), DEFAULT_ADDRESS);
    let mut t = 1_764_115_200_000u64;
    let mut lost = false;
    for p in 0..BEFORE {
        if p == 2 {
            // Deliver what exists so far, durably acked.
            app.service(&mut gw, t).unwrap();
            app.on_ack(gw.ack()).unwrap();
        }
        if p == BEFORE - 1 {
            // The power fails 40 bytes into the next flash write: the frame
            // being sealed in this period is torn.
            app.flash_mut().cut_power_after(40);
        }
        if !period(&mut app, &mut s0, &mut adc, t) {
            lost = true;
        }
        t += 1000;
    }
    assert!(lost, "the armed cut hit a frame write");
    let pulses_before_cut = s0.pulses();
    let sealed_before = app.next_seq() - 1;
    let mut flash = app.into_flash();
    assert!(flash.is_dead());
    flash.power_on();
    s0.release();
    adc.release();

    // Reboot from flash.
    let mut app = boot(flash);
    assert_eq!(app.boot_count(), 2);
    assert_eq!(
        app.next_seq(),
        sealed_before + 1,
        "torn frame's seq is reused, nothing skipped"
    );
    let restored = app.counter(0);
    assert!(restored <= pulses_before_cut);
    assert!(
        restored >= pulses_before_cut - 4,
        "at most the torn frame's pulses are lost"
    );
    let mut s0 = PulseCounter::new(pin.clone(), true, 2, restored);
    let mut adc = Ads1115::new(i2c.clone(), NoopDelay::new(), DEFAULT_ADDRESS);
    for _ in 0..AFTER {
        assert!(period(&mut app, &mut s0, &mut adc, t));
        t += 1000;
    }
    app.on_connected();
    app.service(&mut gw, t).unwrap();
    app.on_ack(gw.ack()).unwrap();
    assert_eq!(app.outbox_len(), 0);
    s0.release();
    adc.release();
    pin.done();
    i2c.done();

    // Gap-free, one copy each, counter monotonic, quality carried.
    let seqs: Vec<u64> = gw.stored.keys().copied().collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
    assert_eq!(seqs.len() as u64, app.next_seq() - 1);
    let energy: Vec<i64> = gw
        .stored
        .values()
        .flat_map(|f| f.samples.iter().filter(|s| s.channel == 0).map(|s| s.value))
        .collect();
    assert!(energy.windows(2).all(|w| w[0] <= w[1]), "{energy:?}");
    let boots: Vec<u32> = gw.stored.values().map(|f| f.boot).collect();
    assert!(boots.contains(&1) && boots.contains(&2));
    let levels: Vec<(i64, Quality)> = gw
        .stored
        .values()
        .flat_map(|f| {
            f.samples
                .iter()
                .filter(|s| s.channel == 1)
                .map(|s| (s.value, s.quality))
        })
        .collect();
    assert!(levels.contains(&(-50, Quality::GOOD)));
    assert!(levels.contains(&(0, Quality::OUT_OF_RANGE.with(Quality::UNAVAILABLE))));
}
