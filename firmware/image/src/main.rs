//! Example firmware image: an MRV sensor node on an STM32F411 "Black Pill".
//!
//! Wiring (all inputs 3.3 V):
//! - PA0: S0 output of a 1000 imp/kWh energy meter (to GND, internal pull-up);
//! - PA1: pump run-status contact (to GND, internal pull-up);
//! - PB6/PB7: I2C1 SCL/SDA to an ADS1115 (address 0x48); AIN0 measures a
//!   4-20 mA water-level probe (-300..+200 mm) over a 150 ohm shunt;
//! - PA10: USART1 RX from the biogas analyser, 9600 8N1;
//! - PA2/PA3: USART2 TX/RX to the network co-processor (Wi-Fi, cellular or
//!   Ethernet module running the MQTT client), 115200 8N1, framed as in
//!   `mrv_firmware::serial_link`: that module is the uplink behind the
//!   `Uplink` trait.
//!
//! Flash: the program lives in sectors 0-4; the device key is provisioned
//! at offset 0x10000 (sector 4, 32 bytes; erased = unsigned frames); the
//! journal (boot counter, sequence numbers, pulse total, outbox) uses
//! sectors 5-7 (3 x 128 KiB at offset 0x20000).
//!
//! Loop: the S0 input and the contact are polled every pass (debounced),
//! analyser and modem bytes are drained without blocking; every 100 ms the
//! level probe and the contact are read into per-channel aggregators
//! (mean, max); once a second every channel's value goes into the app, a
//! frame is sealed (signed, written to flash) every 40 samples (10 s), and
//! due frames go to the modem. The node has no synchronised clock: frames carry no base
//! time and the gateway stamps them on receipt.
#![no_std]
#![no_main]

extern crate alloc;

use alloc::string::String;
use alloc::vec;
use cortex_m_rt::entry;
use embedded_alloc::LlffHeap as Heap;
use embedded_hal_nb::serial::Read as _;
use embedded_storage::nor_flash::ReadNorFlash;
use mrv_firmware::app::{App, AppConfig, Encoding, Identity};
use mrv_firmware::drivers::ads1115::{self, Ads1115, LoopScale, LoopState};
use mrv_firmware::drivers::ch4_uart::FrameParser;
use mrv_firmware::drivers::contact::Contact;
use mrv_firmware::drivers::pulse::{PulseCounter, PulseScale};
use mrv_firmware::sampling::{Aggregation, Aggregator, Schedule};
use mrv_firmware::serial_link::{AckParser, SerialUplink};
use mrv_shared::ids::{ChannelId, DeviceId, SiteId};
use mrv_shared::quantity::{Quantity, ValueKind};
use mrv_shared::reading::{Channel, Quality};
use panic_halt as _;
use stm32f4xx_hal::flash::{FlashExt, LockedFlash};
use stm32f4xx_hal::i2c::{I2c, Mode};
use stm32f4xx_hal::pac;
use stm32f4xx_hal::prelude::*;
use stm32f4xx_hal::rcc::Config;
use stm32f4xx_hal::serial::config::Config as SerialConfig;

#[global_allocator]
static HEAP: Heap = Heap::empty();
const HEAP_SIZE: usize = 48 * 1024;

const KEY_OFFSET: u32 = 0x1_0000;
const JOURNAL_BASE: u32 = 0x2_0000;
const JOURNAL_SECTORS: u32 = 3;
const SAMPLE_PERIOD_MS: u64 = 1000;
const FAST_PERIOD_MS: u64 = 100;
const SHUNT_MILLIOHM: u32 = 150_000;
const TUBE: LoopScale = LoopScale {
    at_4ma: -300,
    at_20ma: 200,
};
const ENERGY: PulseScale = PulseScale {
    pulses_per_unit: 1000,
    base_per_unit: 1000,
};

fn channel(id: &str, quantity: Quantity, kind: ValueKind) -> Channel {
    Channel {
        id: ChannelId::new(id).expect("channel names here are valid ids"),
        quantity,
        kind,
    }
}

/// Stops here when the node cannot run at all (no flash journal).
fn halt() -> ! {
    loop {
        cortex_m::asm::wfi();
    }
}

#[entry]
fn main() -> ! {
    {
        use core::mem::MaybeUninit;
        static mut HEAP_MEM: [MaybeUninit<u8>; HEAP_SIZE] = [MaybeUninit::uninit(); HEAP_SIZE];
        // SAFETY: called once, before any allocation; HEAP_MEM is used by
        // nothing else.
        #[allow(unsafe_code)]
        unsafe {
            HEAP.init(&raw mut HEAP_MEM as usize, HEAP_SIZE)
        }
    }
    let Some(dp) = pac::Peripherals::take() else {
        halt()
    };
    let mut rcc = dp.RCC.freeze(Config::hse(25.MHz()).sysclk(84.MHz()));
    let gpioa = dp.GPIOA.split(&mut rcc);
    let gpiob = dp.GPIOB.split(&mut rcc);

    // Device key from the provisioning area; erased flash = no key.
    let mut locked = LockedFlash::new(dp.FLASH);
    let mut key = [0u8; 32];
    let key = match ReadNorFlash::read(&mut locked, KEY_OFFSET, &mut key) {
        Ok(()) if key.iter().any(|b| *b != 0xFF) => {
            Some(ed25519_dalek::SigningKey::from_bytes(&key))
        }
        _ => None,
    };
    let flash = locked.unlocked();

    let identity = Identity {
        site: SiteId::new("site-a").expect("valid id"),
        device: DeviceId::new("node-f411").expect("valid id"),
        firmware: String::from(concat!("mrv-f411-", env!("CARGO_PKG_VERSION"))),
        key,
    };
    let cfg = AppConfig {
        samples_per_frame: 40,
        max_outbox: 512,
        ack_timeout_ms: 30_000,
        encoding: Encoding::Binary,
        has_wall_clock: false,
    };
    let channels = vec![
        channel("energy", Quantity::Energy, ValueKind::Counter),
        channel("run", Quantity::Status, ValueKind::Instant),
        channel("level", Quantity::WaterLevel, ValueKind::Instant),
        channel("ch4", Quantity::Ch4Fraction, ValueKind::Instant),
    ];
    let mut app: App<_, 48> = match App::boot(
        flash,
        JOURNAL_BASE,
        JOURNAL_SECTORS,
        identity,
        cfg,
        channels,
    ) {
        Ok(a) => a,
        Err(_) => halt(),
    };

    let mut energy = PulseCounter::new(gpioa.pa0.into_pull_up_input(), true, 3, app.counter(0));
    let mut run = Contact::new(gpioa.pa1.into_pull_up_input(), true, 3);
    let i2c = I2c::new(
        dp.I2C1,
        (gpiob.pb6, gpiob.pb7),
        Mode::standard(100.kHz()),
        &mut rcc,
    );
    let delay = dp.TIM3.delay_us(&mut rcc);
    let mut adc = Ads1115::new(i2c, delay, ads1115::DEFAULT_ADDRESS);
    let Ok(mut analyser_rx) = dp.USART1.rx::<u8>(
        gpioa.pa10,
        SerialConfig::default().baudrate(9600.bps()),
        &mut rcc,
    ) else {
        halt()
    };
    let Ok(modem) = dp.USART2.serial::<u8>(
        (gpioa.pa2, gpioa.pa3),
        SerialConfig::default().baudrate(115_200.bps()),
        &mut rcc,
    ) else {
        halt()
    };
    let (modem_tx, mut modem_rx) = modem.split();
    let mut uplink = SerialUplink::new(modem_tx);
    let mut acks = AckParser::new();
    let mut ch4_parser = FrameParser::new();
    let mut ch4: Option<u16> = None;

    // Free-running millisecond clock from the 32-bit TIM2.
    let mut clock = dp.TIM2.counter_ms(&mut rcc);
    if clock.start(u32::MAX.millis()).is_err() {
        halt()
    }
    let mut last_ticks = clock.now().ticks();
    let mut now_ms: u64 = 0;
    let mut schedule = Schedule::new(SAMPLE_PERIOD_MS);
    let mut fast = Schedule::new(FAST_PERIOD_MS);
    let mut level_agg = Aggregator::new(Aggregation::Mean);
    let mut run_agg = Aggregator::new(Aggregation::Max);

    loop {
        let t = clock.now().ticks();
        now_ms += u64::from(t.wrapping_sub(last_ticks));
        last_ticks = t;

        let _ = energy.poll();
        let _ = run.poll();
        while let Ok(b) = analyser_rx.read() {
            if let Some(Ok(r)) = ch4_parser.push(b) {
                ch4 = Some(r.ch4_centi_pct);
            }
        }
        while let Ok(b) = modem_rx.read() {
            if let Some(ack) = acks.push(b) {
                // A flash error here is retried with the next ack.
                let _ = app.on_ack(ack);
            }
        }

        if fast.due(now_ms) {
            // Ten readings a second, folded into the period's value.
            run_agg.add(i64::from(run.is_active()), Quality::GOOD);
            match adc.read_loop_microamps(0, SHUNT_MILLIOHM) {
                Ok(ua) => match ads1115::classify_loop(ua) {
                    LoopState::Ok => level_agg.add(TUBE.to_value(ua), Quality::GOOD),
                    LoopState::UnderRange | LoopState::OverRange => level_agg.add(
                        TUBE.to_value(ua).clamp(TUBE.at_4ma, TUBE.at_20ma),
                        Quality::OUT_OF_RANGE,
                    ),
                    LoopState::Open | LoopState::Short => {
                        level_agg.add(0, Quality::OUT_OF_RANGE.with(Quality::UNAVAILABLE))
                    }
                },
                Err(_) => level_agg.add(0, Quality::UNAVAILABLE),
            }
        }
        if !schedule.due(now_ms) {
            continue;
        }
        let level = level_agg.take().unwrap_or((0, Quality::UNAVAILABLE));
        let run_status = run_agg.take().unwrap_or((0, Quality::UNAVAILABLE));
        let ch4_sample = match ch4.take() {
            Some(v) => (i64::from(v), Quality::GOOD),
            None => (0, Quality::UNAVAILABLE),
        };
        let samples = [
            (ENERGY.to_base(energy.pulses()), Quality::GOOD),
            run_status,
            level,
            ch4_sample,
        ];
        app.set_counter(0, energy.pulses());
        for (i, (v, q)) in samples.into_iter().enumerate() {
            if app.record(i as u8, v, q, now_ms).is_err() {
                break;
            }
        }
        if app.ready() {
            let _ = app.seal();
        }
        let _ = app.service(&mut uplink, now_ms);
    }
}
