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
//! Flash (see memory.x): sector 0 holds the vector table, sector 1
//! (offset 0x4000, 16 KiB) the provisioning record written by
//! `mrv-gateway provision` (identity and signing key; erased = unsigned
//! frames as `node-f411`), sectors 2-4 the program, sectors 5-7 (3 x
//! 128 KiB at offset 0x20000) the journal (boot counter, sequence numbers,
//! pulse total, outbox). Reflashing the program leaves sector 1 alone.
//!
//! Loop: `mrv_firmware::node_loop::Node`, the same loop the QEMU image
//! runs: inputs polled every pass, level probe and contact every 100 ms,
//! one sample per channel a second, a frame (signed, written to flash)
//! every 40 samples (10 s), due frames to the modem. The node has no
//! synchronised clock: frames carry no base time and the gateway stamps
//! them on receipt.
#![no_std]
#![no_main]

extern crate alloc;

use alloc::string::String;
use cortex_m_rt::entry;
use embedded_alloc::LlffHeap as Heap;
use embedded_hal_nb::serial::Read as _;
use embedded_storage::nor_flash::ReadNorFlash;
use mrv_firmware::app::{App, AppConfig, Encoding, Identity};
use mrv_firmware::drivers::ads1115::{self, Ads1115};
use mrv_firmware::node_loop::{NODE_HARDWARE, Node, NodeTiming, node_channels};
use mrv_shared::ids::{DeviceId, SiteId};
use mrv_shared::provisioning::{self, RECORD_LEN};
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

const JOURNAL_BASE: u32 = 0x2_0000;
const JOURNAL_SECTORS: u32 = 3;
const TIMING: NodeTiming = NodeTiming {
    sample_period_ms: 1000,
    fast_period_ms: 100,
    link_idle_ms: 50,
};

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

    // Identity and key from the provisioning area; erased = unsigned frames
    // under the built-in identity; a corrupt record stops the node (it
    // must not send under an identity it cannot prove).
    let mut locked = LockedFlash::new(dp.FLASH);
    let mut area = [0u8; RECORD_LEN];
    if ReadNorFlash::read(&mut locked, provisioning::FLASH_OFFSET, &mut area).is_err() {
        halt()
    }
    let (site, device, key) = match provisioning::decode(&area) {
        Ok(Some(p)) => (p.site, p.device, Some(p.key)),
        Ok(None) => (
            SiteId::new("site-a").expect("valid id"),
            DeviceId::new("node-f411").expect("valid id"),
            None,
        ),
        Err(_) => halt(),
    };
    let flash = locked.unlocked();

    let identity = Identity {
        site,
        device,
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
    let app: App<_, 48> = match App::boot(
        flash,
        JOURNAL_BASE,
        JOURNAL_SECTORS,
        identity,
        cfg,
        node_channels(),
    ) {
        Ok(a) => a,
        Err(_) => halt(),
    };

    let energy_pin = gpioa.pa0.into_pull_up_input();
    let run_pin = gpioa.pa1.into_pull_up_input();
    let i2c = I2c::new(
        dp.I2C1,
        (gpiob.pb6, gpiob.pb7),
        Mode::standard(100.kHz()),
        &mut rcc,
    );
    let delay = dp.TIM3.delay_us(&mut rcc);
    let adc = Ads1115::new(i2c, delay, ads1115::DEFAULT_ADDRESS);
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
    let mut node = Node::new(
        app,
        NODE_HARDWARE,
        TIMING,
        energy_pin,
        run_pin,
        adc,
        modem_tx,
    );

    // Free-running millisecond clock from the 32-bit TIM2.
    let mut clock = dp.TIM2.counter_ms(&mut rcc);
    if clock.start(u32::MAX.millis()).is_err() {
        halt()
    }
    let mut last_ticks = clock.now().ticks();
    let mut now_ms: u64 = 0;

    loop {
        let t = clock.now().ticks();
        now_ms += u64::from(t.wrapping_sub(last_ticks));
        last_ticks = t;
        while let Ok(b) = analyser_rx.read() {
            node.on_analyser_byte(b);
        }
        while let Ok(b) = modem_rx.read() {
            node.on_modem_byte(b, now_ms);
        }
        node.step(now_ms);
    }
}
