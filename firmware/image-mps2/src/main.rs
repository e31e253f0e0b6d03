//! The MRV sensor node on the Cortex-M4 board QEMU emulates (`mps2-an386`):
//! the same [`Node`] loop, [`App`], drivers, journal and serial link as the
//! STM32F411 image, with the sensors replaced by deterministic sources
//! (`mrv_firmware::emulated_sensors`).
//!
//! Board (QEMU 7.2 `mps2-an386`, Cortex-M4F, 25 MHz peripheral clock):
//! - UART0 (0x40004000): the network co-processor link, framed as in
//!   `mrv_firmware::serial_link`; QEMU connects it to the host bridge
//!   (`mrv-uart-bridge`) with a socket chardev;
//! - UART1 (0x40005000): the console, one line per event (below);
//! - APB timer 0: the clock (25 MHz ticks);
//! - "flash" at 0x0: program and, at 0x4000, the provisioning record
//!   (`mrv_shared::provisioning`, loaded by QEMU's generic loader; the
//!   emulator's RAM reads 0x00 where flash would read 0xFF, so all-zero
//!   counts as erased);
//! - journal: 3 x 128 KiB sectors at 0x21000000 (the board's PSRAM, which
//!   QEMU maps from a host file that the harness creates filled with 0xFF,
//!   as erased flash), so a killed and restarted QEMU is a node that lost
//!   power and boots again.
//!
//! Rig: an S0 pulse every 100 ms (1 Wh each), the pump contact closed for
//! 6 s of every 10 s, a 12.000 mA level loop (-50 mm), a CH4 frame
//! (55.00 %) every 500 ms. Timing: a sample period of 25 ms (the F411: 1 s)
//! and the F411's 40 samples per frame, so a frame every 250 ms.
//!
//! ## Console lines (UART1)
//!
//! Each line is a word, then `key=value` fields separated by spaces:
//! - `calib iterations=N ticks=T`: a two-instruction loop run N times
//!   (2N + a few instructions), for converting ticks to instructions under
//!   `-icount`;
//! - `boot boot= next_seq= acked_seq= outbox= pulses= site= device= key=`
//!   (`key` = the public key, base64url, or `none`);
//! - `seal seq= bytes= ticks=`: a frame sealed (signed, encoded, written
//!   to the journal) and the timer ticks that took;
//! - `send frames= ticks=`: frames handed to the modem UART in one pass;
//! - `stats ms= produced= sent= resent= acks= acked_seq= next_seq=
//!   outbox= dropped= noise= bad_type= bad_length= bad_crc= truncated=
//!   bad_payload= errors= analyser= stack_peak= stack_size= heap_peak=
//!   heap_size= heap_failed=`, every 500 ms;
//! - `halt reason=...` / `panic ...`: the node stopped.
#![no_std]
#![no_main]

extern crate alloc;

mod cmsdk;
mod memory_probe;

use alloc::string::String;
use cmsdk::{Ticks, UART0, UART1, Uart};
use core::fmt::Write as _;
use cortex_m_rt::entry;
use memory_probe::PeakHeap;
use mrv_firmware::app::{App, AppConfig, Encoding, Identity};
use mrv_firmware::drivers::ads1115::{self, Ads1115};
use mrv_firmware::drivers::ch4_uart::BiogasReading;
use mrv_firmware::emulated_sensors::{
    Ads1115Model, AnalyserStream, NoDelay, RigClock, SquareWavePin,
};
use mrv_firmware::node_loop::{NODE_HARDWARE, Node, NodeTiming, node_channels};
use mrv_firmware::storage::slice_flash::SliceFlash;
use mrv_shared::ids::{DeviceId, SiteId};
use mrv_shared::provisioning::{self, RECORD_LEN};

#[global_allocator]
static HEAP: PeakHeap = PeakHeap::empty();
/// The F411 image's heap size.
const HEAP_SIZE: usize = 48 * 1024;

const JOURNAL_ADDR: usize = 0x2100_0000;
const SECTOR: usize = 128 * 1024;
const JOURNAL_SECTORS: u32 = 3;
const TIMING: NodeTiming = NodeTiming {
    sample_period_ms: 25,
    fast_period_ms: 5,
    link_idle_ms: 20,
};
const STATS_EVERY_MS: u64 = 500;
const CALIBRATION_ITERATIONS: u32 = 100_000;

fn console() -> Uart {
    Uart::new(UART1, 115_200)
}

/// Stops the node after saying why.
fn halt(reason: &dyn core::fmt::Display) -> ! {
    let _ = writeln!(console(), "halt reason={reason}");
    loop {
        cortex_m::asm::wfi();
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    let _ = writeln!(console(), "panic {info}");
    loop {
        cortex_m::asm::wfi();
    }
}

/// Runs a loop of exactly two instructions `n` times.
#[inline(never)]
fn calibration_loop(n: u32) {
    // SAFETY: register-only arithmetic and a local branch.
    #[allow(unsafe_code)]
    unsafe {
        core::arch::asm!("1:", "subs {0}, {0}, #1", "bne 1b", inout(reg) n => _, options(nomem, nostack));
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
    memory_probe::paint();
    let mut out = console();
    let mut ticks = Ticks::start();

    let t0 = ticks.now();
    calibration_loop(CALIBRATION_ITERATIONS);
    let t1 = ticks.now();
    let _ = writeln!(
        out,
        "calib iterations={CALIBRATION_ITERATIONS} ticks={}",
        t1 - t0
    );

    let mut area = [0u8; RECORD_LEN];
    // SAFETY: the provisioning area is plain memory of the board's code
    // RAM, never written by this program.
    #[allow(unsafe_code)]
    unsafe {
        core::ptr::copy_nonoverlapping(
            provisioning::FLASH_OFFSET as usize as *const u8,
            area.as_mut_ptr(),
            RECORD_LEN,
        )
    };
    if area.iter().all(|b| *b == 0) {
        // Emulator RAM never written: what erased flash is on a board.
        area.fill(0xFF);
    }
    let (site, device, key) = match provisioning::decode(&area) {
        Ok(Some(p)) => (p.site, p.device, Some(p.key)),
        Ok(None) => (
            SiteId::new("site-a").expect("valid id"),
            DeviceId::new("node-mps2").expect("valid id"),
            None,
        ),
        Err(e) => halt(&e),
    };
    let public = key
        .as_ref()
        .map(|k| mrv_shared::report::jwk::b64(k.verifying_key().as_bytes()))
        .unwrap_or_else(|| String::from("none"));

    // SAFETY: the PSRAM region is used by nothing else; the slice lives
    // as long as the program.
    #[allow(unsafe_code)]
    let journal_mem: &'static mut [u8] = unsafe {
        core::slice::from_raw_parts_mut(JOURNAL_ADDR as *mut u8, SECTOR * JOURNAL_SECTORS as usize)
    };
    let flash: SliceFlash<'static, SECTOR> = SliceFlash::new(journal_mem);

    let identity = Identity {
        site: site.clone(),
        device: device.clone(),
        firmware: String::from(concat!("mrv-mps2-", env!("CARGO_PKG_VERSION"))),
        key,
    };
    let cfg = AppConfig {
        samples_per_frame: 40,
        max_outbox: 512,
        ack_timeout_ms: 2_000,
        encoding: Encoding::Binary,
        has_wall_clock: false,
    };
    let app: App<_, 48> = match App::boot(flash, 0, JOURNAL_SECTORS, identity, cfg, node_channels())
    {
        Ok(a) => a,
        Err(e) => halt(&e),
    };
    let _ = writeln!(
        out,
        "boot boot={} next_seq={} acked_seq={} outbox={} pulses={} site={} device={} key={}",
        app.boot_count(),
        app.next_seq(),
        app.acked_seq(),
        app.outbox_len(),
        app.counter(0),
        site,
        device,
        public
    );

    let clock = RigClock::new();
    let energy_pin = SquareWavePin::new(&clock, 100, 20, true);
    let run_pin = SquareWavePin::new(&clock, 10_000, 6_000, true);
    let mut adc = Ads1115Model::new(ads1115::DEFAULT_ADDRESS, NODE_HARDWARE.shunt_milliohm);
    adc.loop_ua[usize::from(NODE_HARDWARE.level_input)] = 12_000;
    let adc = Ads1115::new(adc, NoDelay, ads1115::DEFAULT_ADDRESS);
    let mut analyser = AnalyserStream::new(
        &clock,
        500,
        BiogasReading {
            ch4_centi_pct: 5500,
            flow_ml_min: None,
        },
    );
    let modem_tx = Uart::new(UART0, 115_200);
    let mut modem_rx = Uart::new(UART0, 115_200);
    let mut node = Node::new(
        app,
        NODE_HARDWARE,
        TIMING,
        energy_pin,
        run_pin,
        adc,
        modem_tx,
    );
    let mut next_stats = STATS_EVERY_MS;

    loop {
        let now_ms = ticks.now() / Ticks::PER_MS;
        clock.set(now_ms);
        while let Some(b) = analyser.next_byte() {
            node.on_analyser_byte(b);
        }
        while let Some(b) = modem_rx.read_byte() {
            node.on_modem_byte(b, now_ms);
        }
        if node.sample(now_ms) {
            let t0 = ticks.now();
            let sealed = node.seal_if_ready();
            let t1 = ticks.now();
            if let Some(seq) = sealed {
                let _ = writeln!(out, "seal seq={seq} ticks={}", t1 - t0);
            }
        }
        let t0 = ticks.now();
        let r = node.service(now_ms);
        let t1 = ticks.now();
        if r.sent + r.resent > 0 {
            let _ = writeln!(out, "send frames={} ticks={}", r.sent + r.resent, t1 - t0);
        }
        if now_ms >= next_stats {
            next_stats = now_ms + STATS_EVERY_MS;
            let a = node.app();
            let s = a.stats();
            let l = node.link_counters();
            let n = node.stats();
            let _ = writeln!(
                out,
                "stats ms={now_ms} produced={} sent={} resent={} acks={} acked_seq={} next_seq={} outbox={} dropped={} noise={} bad_type={} bad_length={} bad_crc={} truncated={} bad_payload={} errors={} analyser={} stack_peak={} stack_size={} heap_peak={} heap_size={HEAP_SIZE} heap_failed={}",
                s.produced,
                s.sent,
                s.resent,
                s.acks,
                a.acked_seq(),
                a.next_seq(),
                a.outbox_len(),
                s.dropped_samples,
                l.noise_bytes,
                l.bad_type,
                l.bad_length,
                l.bad_crc,
                l.truncated,
                l.bad_payload,
                n.record_errors
                    + n.seal_errors
                    + n.service_errors
                    + n.ack_errors
                    + n.level_bus_errors,
                n.analyser_readings,
                memory_probe::stack_peak(),
                memory_probe::stack_size(),
                HEAP.peak(),
                HEAP.failed(),
            );
        }
    }
}
