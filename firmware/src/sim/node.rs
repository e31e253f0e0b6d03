//! [`SimNode`]: one simulated device = the firmware [`App`] on simulated
//! hardware, without any network I/O.
//!
//! Each sample tick the physical model advances, drives the simulated
//! peripherals ([`super::hardware`]): S0 pulses on pins, a loop current
//! into the ADS1115, frames into the analyser's UART, contact levels; the
//! firmware drivers read them and the values go through [`App::record`] /
//! [`App::seal`] into the flash journal, exactly as on a board. The flash
//! is a [`SizedRamFlash`] that survives [`SimNode::reboot`]; a power cut
//! ([`SimNode::power_cut`]) may tear the write in progress.
//!
//! Meter constants: PV energy 1000 imp/kWh (1 Wh per pulse), pump energy
//! 1 Wh per pulse and water 1 L per pulse, digester gas 10 L per pulse;
//! paddy tube probe 4-20 mA = -300..+200 mm over a 150 ohm shunt. Solar
//! power is derived from the pulse rate. An unplugged S0 meter is not
//! detectable (its counter just stops), an unplugged probe reads an open
//! loop (`OUT_OF_RANGE | UNAVAILABLE`), a silent analyser `UNAVAILABLE`,
//! an unplugged contact reads inactive. Noise puts glitches on the S0
//! lines (the debouncer removes them), current noise on the loop and
//! garbage bytes on the UART (the frame parser skips them).

use super::hardware::{NoDelay, SimAds1115, SimPin, SimUart};
use super::physics::{Digester, IrrigationPump, PaddyField, SolarPlant};
use super::{DeviceKind, Faults, WireFormat};
use crate::app::{App, AppConfig, AppError, Encoding, Identity, ServiceReport, Uplink};
use crate::drivers::ads1115::{self, Ads1115, LoopScale, LoopState};
use crate::drivers::ch4_uart::{self, BiogasReading, Ch4Analyser};
use crate::drivers::contact::Contact;
use crate::drivers::pulse::{PulseCounter, PulseScale};
use crate::storage::ram_flash::{RamFlashError, SizedRamFlash};
use ed25519_dalek::SigningKey;
use mrv_shared::ids::{ChannelId, DeviceId, SiteId};
use mrv_shared::quantity::{Quantity, ValueKind};
use mrv_shared::reading::{Channel, Quality};
use mrv_shared::wire::{Ack, AckStatus};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::boxed::Box;
use std::string::String;
use std::vec::Vec;

/// Firmware version string the simulated devices report.
pub const SIM_FIRMWARE: &str = concat!("mrv-sim-", env!("CARGO_PKG_VERSION"));
/// Flash sector size of a simulated device.
pub const SIM_SECTOR: usize = 32 * 1024;
/// Most samples per frame a simulated device supports.
pub const SIM_MAX_SAMPLES_PER_FRAME: usize = 1024;
const SIM_PENDING: usize = SIM_MAX_SAMPLES_PER_FRAME + 8;
/// Debounce threshold (samples) of the simulated digital inputs.
const DEBOUNCE: u8 = 2;
const SHUNT_MILLIOHM: u32 = 150_000;
const TUBE: LoopScale = LoopScale {
    at_4ma: -300,
    at_20ma: 200,
};
/// Digester gas temperature transmitter: 0..100 degC over 4-20 mA.
const GAS_TEMP: LoopScale = LoopScale {
    at_4ma: 0,
    at_20ma: 10_000,
};
/// Digester gas pressure transmitter: 80..120 kPa absolute over 4-20 mA.
const GAS_PRESSURE: LoopScale = LoopScale {
    at_4ma: 80_000,
    at_20ma: 120_000,
};

/// The loop current a transmitter of `scale` sends for `value`, uA.
fn loop_current_ua(scale: LoopScale, value: f64) -> f64 {
    4_000.0 + (value - scale.at_4ma as f64) * 16_000.0 / (scale.at_20ma - scale.at_4ma) as f64
}

/// A 4-20 mA reading as a sample: good inside the range, flagged outside,
/// unavailable on an open or shorted loop or a bus error.
fn loop_sample<E>(scale: LoopScale, read: Result<i32, E>) -> (i64, Quality) {
    match read {
        Ok(ua) => {
            let v = scale.to_value(ua);
            match ads1115::classify_loop(ua) {
                LoopState::Ok => (v, Quality::GOOD),
                LoopState::UnderRange | LoopState::OverRange => {
                    (v.clamp(scale.at_4ma, scale.at_20ma), Quality::OUT_OF_RANGE)
                }
                LoopState::Open | LoopState::Short => {
                    (0, Quality::OUT_OF_RANGE.with(Quality::UNAVAILABLE))
                }
            }
        }
        Err(_) => (0, Quality::UNAVAILABLE),
    }
}

type SimFlash = SizedRamFlash<SIM_SECTOR>;
type SimApp = App<SimFlash, SIM_PENDING>;
type SimAppError = AppError<RamFlashError>;

/// Bytes a frame takes on flash at most, estimated: for sizing the
/// simulated flash and checking the config.
pub fn estimated_frame_bytes(format: WireFormat, samples: usize) -> usize {
    match format {
        WireFormat::Binary => 200 + 20 * samples,
        WireFormat::Json => 300 + 130 * samples,
    }
}

/// Flash sectors a device needs for `max_outbox` frames of `samples`.
pub fn flash_sectors(format: WireFormat, samples: usize, max_outbox: usize) -> u32 {
    let rec = estimated_frame_bytes(format, samples) + 80;
    let per_sector = (SIM_SECTOR - 16) / rec;
    let n = max_outbox.div_ceil(per_sector.max(1)) + 3;
    n.clamp(3, crate::storage::journal::MAX_SECTORS as usize) as u32
}

#[derive(Debug, Clone)]
enum Model {
    Solar(SolarPlant),
    Pump(IrrigationPump),
    Digester(Digester),
    Paddy(PaddyField),
}

/// The drivers of one device, over simulated peripherals.
#[derive(Debug)]
struct Board {
    pulses: Vec<(PulseCounter<SimPin>, PulseScale)>,
    /// Pulses the physics has emitted so far, per pulse input.
    emitted: Vec<u64>,
    contact: Option<Contact<SimPin>>,
    adc: Option<Ads1115<SimAds1115, NoDelay>>,
    analyser: Option<Ch4Analyser<SimUart>>,
    last_energy_pulses: u64,
}

fn scales(kind: DeviceKind) -> Vec<PulseScale> {
    let s = |pulses_per_unit, base_per_unit| PulseScale {
        pulses_per_unit,
        base_per_unit,
    };
    match kind {
        DeviceKind::SolarMeter => vec![s(1000, 1000)],
        DeviceKind::IrrigationPump => vec![s(1000, 1000), s(1, 1000)],
        DeviceKind::Digester => vec![s(1, 10_000)],
        DeviceKind::PaddyWaterLevel => vec![],
    }
}

impl Board {
    /// Fresh drivers after a (re)boot; pulse totals restored from flash.
    fn new(kind: DeviceKind, restored: &[u64], emitted: Vec<u64>) -> Self {
        let pulses: Vec<_> = scales(kind)
            .into_iter()
            .enumerate()
            .map(|(i, sc)| {
                let total = restored.get(i).copied().unwrap_or(0);
                (
                    PulseCounter::new(SimPin::new(true), true, DEBOUNCE, total),
                    sc,
                )
            })
            .collect();
        let n = pulses.len();
        let mut emitted = emitted;
        emitted.resize(n, 0);
        let contact = matches!(kind, DeviceKind::IrrigationPump | DeviceKind::Digester)
            .then(|| Contact::new(SimPin::new(true), true, DEBOUNCE));
        let adc = matches!(kind, DeviceKind::PaddyWaterLevel | DeviceKind::Digester).then(|| {
            Ads1115::new(
                SimAds1115::new(ads1115::DEFAULT_ADDRESS, SHUNT_MILLIOHM),
                NoDelay,
                ads1115::DEFAULT_ADDRESS,
            )
        });
        let analyser = (kind == DeviceKind::Digester).then(|| Ch4Analyser::new(SimUart::default()));
        let last_energy_pulses = restored.first().copied().unwrap_or(0);
        Self {
            pulses,
            emitted,
            contact,
            adc,
            analyser,
            last_energy_pulses,
        }
    }
}

/// What [`SimNode::sample`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SampleOutcome {
    /// A frame was sealed with this sequence number.
    pub sealed: Option<u64>,
    /// Samples dropped because the outbox was full.
    pub dropped: u64,
    /// The flash lost power (an armed power cut hit): reboot.
    pub power_lost: bool,
}

/// What [`SimNode::on_ack`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AckOutcome {
    /// Frames renumbered (after `SeqRegressed`).
    pub renumbered: u64,
    /// The flash lost power: reboot.
    pub power_lost: bool,
}

/// One simulated device.
#[derive(Debug)]
pub struct SimNode {
    device: DeviceId,
    kind: DeviceKind,
    max_frames: Option<u64>,
    identity: Identity,
    app_cfg: AppConfig,
    channels: Vec<Channel>,
    sectors: u32,
    app: Option<Box<SimApp>>,
    board: Board,
    model: Model,
    rng: StdRng,
    produced: u64,
    highest_acked: u64,
    last_status: Option<AckStatus>,
}

/// Mean power in mW over `dt_s` seconds in which `wh` Wh were counted:
/// `wh * 3.6e9 / dt_ms`, exact, rounded half away from zero and flagged
/// `ROUNDED` when the division leaves a remainder (see
/// `mrv_shared::conversion`). No interval (first sample): 0 mW, exact.
fn mean_power_mw(wh: i64, dt_s: f64) -> (i64, Quality) {
    let dt_ms = (dt_s * 1000.0).round();
    if dt_ms < 1.0 {
        return (0, Quality::GOOD);
    }
    let per_ms = mrv_shared::conversion::Conversion::new(3_600_000_000, dt_ms as i128)
        .expect("both factors are positive");
    match per_ms.apply_int(i128::from(wh)) {
        Ok(c) if c.rounded => (c.value, Quality::ROUNDED),
        Ok(c) => (c.value, Quality::GOOD),
        Err(_) => (0, Quality::UNAVAILABLE),
    }
}

fn channel_table(kind: DeviceKind) -> Vec<Channel> {
    let ch = |id: &str, quantity, kind| Channel {
        id: ChannelId::new(id).expect("channel names here are valid ids"),
        quantity,
        kind,
    };
    match kind {
        DeviceKind::SolarMeter => vec![
            ch("energy", Quantity::Energy, ValueKind::Counter),
            ch("power", Quantity::Power, ValueKind::Instant),
        ],
        DeviceKind::IrrigationPump => vec![
            ch("energy", Quantity::Energy, ValueKind::Counter),
            ch("water", Quantity::WaterVolume, ValueKind::Counter),
            ch("run", Quantity::Status, ValueKind::Instant),
        ],
        DeviceKind::Digester => vec![
            ch("gas", Quantity::GasVolume, ValueKind::Counter),
            ch("ch4", Quantity::Ch4Fraction, ValueKind::Instant),
            ch("flame", Quantity::Status, ValueKind::Instant),
            ch("temp", Quantity::Temperature, ValueKind::Instant),
            ch("pressure", Quantity::Pressure, ValueKind::Instant),
        ],
        DeviceKind::PaddyWaterLevel => {
            vec![ch("level", Quantity::WaterLevel, ValueKind::Instant)]
        }
    }
}

/// Why a simulated device could not boot.
#[derive(Debug, thiserror::Error)]
#[error("simulated device failed to boot: {0}")]
pub struct BootFailed(String);

impl SimNode {
    /// A device booting for the first time on an erased flash.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        site: SiteId,
        device: DeviceId,
        kind: DeviceKind,
        signing_key: Option<[u8; 32]>,
        format: WireFormat,
        samples_per_frame: usize,
        max_outbox: usize,
        max_frames: Option<u64>,
    ) -> Result<Self, BootFailed> {
        let seed = device
            .as_str()
            .bytes()
            .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x1000_0000_01b3)
            });
        let model = match kind {
            DeviceKind::SolarMeter => Model::Solar(SolarPlant::new(50_000.0)),
            DeviceKind::IrrigationPump => Model::Pump(IrrigationPump::new()),
            DeviceKind::Digester => Model::Digester(Digester::new()),
            DeviceKind::PaddyWaterLevel => Model::Paddy(PaddyField::new()),
        };
        let identity = Identity {
            site,
            device: device.clone(),
            firmware: String::from(SIM_FIRMWARE),
            key: signing_key.map(|k| SigningKey::from_bytes(&k)),
        };
        let app_cfg = AppConfig {
            samples_per_frame,
            max_outbox,
            // The device task decides timing; the app's own timeout is
            // passed per call through `service`.
            ack_timeout_ms: 0,
            encoding: match format {
                WireFormat::Binary => Encoding::Binary,
                WireFormat::Json => Encoding::Json,
            },
            has_wall_clock: true,
        };
        let sectors = flash_sectors(format, samples_per_frame, max_outbox);
        let flash = SimFlash::new(sectors as usize);
        let channels = channel_table(kind);
        let app = App::boot(
            flash,
            0,
            sectors,
            identity.clone(),
            app_cfg,
            channels.clone(),
        )
        .map_err(|e| BootFailed(std::format!("{e}")))?;
        let board = Board::new(kind, &[], Vec::new());
        Ok(Self {
            device,
            kind,
            max_frames,
            identity,
            app_cfg,
            channels,
            sectors,
            app: Some(Box::new(app)),
            board,
            model,
            rng: StdRng::seed_from_u64(seed),
            produced: 0,
            highest_acked: 0,
            last_status: None,
        })
    }

    fn app(&mut self) -> &mut SimApp {
        self.app.as_mut().expect("the app runs between boots")
    }

    /// Device id.
    pub fn device(&self) -> &DeviceId {
        &self.device
    }
    /// Boot counter (from flash).
    pub fn boot(&self) -> u32 {
        self.app.as_ref().map_or(0, |a| a.boot_count())
    }
    /// Next sequence number to be used.
    pub fn next_seq(&self) -> u64 {
        self.app.as_ref().map_or(0, |a| a.next_seq())
    }
    /// Frames sealed since the first boot.
    pub fn produced(&self) -> u64 {
        self.produced
    }
    /// Frames waiting for an ack.
    pub fn outbox_len(&self) -> usize {
        self.app.as_ref().map_or(0, |a| a.outbox_len())
    }
    /// Sequence numbers waiting for an ack.
    pub fn outbox_seqs(&self) -> Vec<u64> {
        self.app
            .as_ref()
            .map(|a| a.outbox_seqs().collect())
            .unwrap_or_default()
    }
    /// Highest `acked_seq` seen.
    pub fn highest_acked(&self) -> u64 {
        self.highest_acked
    }
    /// Status of the last ack.
    pub fn last_status(&self) -> Option<AckStatus> {
        self.last_status
    }
    /// True once `max_frames` frames were produced.
    pub fn finished_producing(&self) -> bool {
        self.max_frames.is_some_and(|m| self.produced >= m)
    }

    /// Cuts the power while the device writes a counter checkpoint: the
    /// flash dies after a random number of bytes (possibly mid-record).
    /// Call [`SimNode::reboot`] next.
    pub fn power_cut(&mut self) {
        let budget = self.rng.gen_range(0..160);
        let app = self.app();
        app.flash_mut().cut_power_after(budget);
        // Either lands, tears, or never starts: all are fine.
        let _ = app.checkpoint();
    }

    /// Restarts the device from what its flash holds: boot counter + 1,
    /// sequence numbers, counters and outbox as persisted; RAM (pending
    /// samples, send times, the pins' queued pulses) is lost.
    pub fn reboot(&mut self) -> Result<(), BootFailed> {
        let app = self.app.take().expect("the app runs between boots");
        let mut flash = app.into_flash();
        flash.power_on();
        let app: SimApp = App::boot(
            flash,
            0,
            self.sectors,
            self.identity.clone(),
            self.app_cfg,
            self.channels.clone(),
        )
        .map_err(|e| BootFailed(std::format!("{e}")))?;
        let restored: Vec<u64> = (0..self.board.pulses.len())
            .map(|i| app.counter(i))
            .collect();
        let emitted = core::mem::take(&mut self.board.emitted);
        self.board = Board::new(self.kind, &restored, emitted);
        self.app = Some(Box::new(app));
        Ok(())
    }

    /// Marks every outbox frame as due (after a reconnect).
    pub fn mark_all_due(&mut self) {
        self.app().on_connected();
    }

    fn step_model(&mut self, t: f64, dt: f64) -> Vec<f64> {
        let rng = &mut self.rng;
        match &mut self.model {
            Model::Solar(m) => {
                m.step(t, dt, rng);
                vec![m.energy_wh]
            }
            Model::Pump(m) => {
                m.step(t, dt, rng);
                vec![m.energy_wh, m.water_ml]
            }
            Model::Digester(m) => {
                m.step(t, dt, rng);
                vec![m.gas_ml]
            }
            Model::Paddy(m) => {
                m.step(t, dt, rng);
                vec![]
            }
        }
    }

    /// Drives the peripherals from the model for one tick.
    fn drive_hardware(&mut self, totals: &[f64], faults: &Faults) {
        let glitches = if faults.noise > 0.0 {
            self.rng
                .gen_range(0..=((faults.noise * 10.0) as u32).max(1))
        } else {
            0
        };
        for (i, (pc, sc)) in self.board.pulses.iter_mut().enumerate() {
            let base_per_pulse = f64::from(sc.base_per_unit) / f64::from(sc.pulses_per_unit);
            let model_pulses = (totals[i] / base_per_pulse).floor().max(0.0) as u64;
            let new = model_pulses.saturating_sub(self.board.emitted[i]);
            self.board.emitted[i] = self.board.emitted[i].max(model_pulses);
            if faults.unplugged {
                continue;
            }
            let pin = pc.pin_mut();
            pin.queue_pulses(new, DEBOUNCE + 1);
            for _ in 0..glitches {
                pin.queue_glitch();
            }
        }
        let (active, ch4, level) = match &self.model {
            Model::Solar(_) => (false, None, None),
            Model::Pump(m) => (m.running, None, None),
            Model::Digester(m) => (m.flame, Some(m.ch4_centi_pct), None),
            Model::Paddy(m) => (false, None, Some(m.level_mm)),
        };
        if let (Some(adc), Model::Digester(m)) = (&mut self.board.adc, &self.model) {
            let noise = |rng: &mut rand::rngs::StdRng| {
                if faults.noise > 0.0 {
                    rng.gen_range(-faults.noise..faults.noise) * 16_000.0
                } else {
                    0.0
                }
            };
            let t = loop_current_ua(GAS_TEMP, m.temp_centi_c) + noise(&mut self.rng);
            let p = loop_current_ua(GAS_PRESSURE, m.pressure_pa) + noise(&mut self.rng);
            let bus = adc.bus_mut();
            bus.loop_ua[0] = if faults.unplugged {
                0
            } else {
                t.round() as i32
            };
            bus.loop_ua[1] = if faults.unplugged {
                0
            } else {
                p.round() as i32
            };
        }
        if let Some(c) = &mut self.board.contact {
            // Active-low contact: closed (active) pulls the input low.
            let pin = c.pin_mut();
            pin.set_idle(faults.unplugged || !active);
            for _ in 0..glitches {
                pin.queue_glitch();
            }
        }
        if let (Some(adc), Some(level)) = (&mut self.board.adc, level) {
            let mut ua = 4_000.0 + (level - TUBE.at_4ma as f64) * 16_000.0 / 500.0;
            if faults.noise > 0.0 {
                ua += self.rng.gen_range(-faults.noise..faults.noise) * 16_000.0;
            }
            adc.bus_mut().loop_ua[0] = if faults.unplugged {
                0
            } else {
                ua.round() as i32
            };
        }
        if let (Some(an), Some(ch4)) = (&mut self.board.analyser, ch4) {
            let uart = an.uart_mut();
            uart.clear();
            if !faults.unplugged {
                for _ in 0..glitches {
                    let junk: u8 = self.rng.r#gen();
                    uart.feed(&[junk]);
                }
                let (b, n) = ch4_uart::encode(&BiogasReading {
                    ch4_centi_pct: ch4.clamp(0.0, 10_000.0).round() as u16,
                    flow_ml_min: None,
                });
                uart.feed(&b[..n]);
            }
        }
    }

    /// Reads every channel through the drivers.
    fn read_channels(&mut self, dt_s: f64) -> Vec<(i64, Quality)> {
        let b = &mut self.board;
        for (pc, _) in &mut b.pulses {
            // Drain the pin's queue, plus one idle read.
            loop {
                let more = pc_queued(pc);
                let _ = pc.poll();
                if !more {
                    break;
                }
            }
        }
        let counter = |b: &Board, i: usize| {
            let (pc, sc) = &b.pulses[i];
            (sc.to_base(pc.pulses()), Quality::GOOD)
        };
        let status = |b: &mut Board| {
            let c = b
                .contact
                .as_mut()
                .expect("kinds with a status have a contact");
            let mut level = false;
            // Drain queued glitches, then long enough to settle.
            while c.pin_mut().queued() > 0 {
                let _ = c.poll();
            }
            for _ in 0..DEBOUNCE {
                level = c.poll().map(|(l, _)| l).unwrap_or(false);
            }
            (i64::from(level), Quality::GOOD)
        };
        match self.kind {
            DeviceKind::SolarMeter => {
                let pulses = b.pulses[0].0.pulses();
                let delta = pulses.saturating_sub(b.last_energy_pulses);
                b.last_energy_pulses = pulses;
                let wh = b.pulses[0].1.to_base(delta);
                vec![counter(b, 0), mean_power_mw(wh, dt_s)]
            }
            DeviceKind::IrrigationPump => {
                let e = counter(b, 0);
                let w = counter(b, 1);
                vec![e, w, status(b)]
            }
            DeviceKind::Digester => {
                let g = counter(b, 0);
                let an = b.analyser.as_mut().expect("a digester has an analyser");
                let ch4 = match an.read_reading() {
                    Ok(r) => (i64::from(r.ch4_centi_pct), Quality::GOOD),
                    Err(_) => (0, Quality::UNAVAILABLE),
                };
                let adc = b.adc.as_mut().expect("a digester has an ADC");
                let t = loop_sample(GAS_TEMP, adc.read_loop_microamps(0, SHUNT_MILLIOHM));
                let p = loop_sample(GAS_PRESSURE, adc.read_loop_microamps(1, SHUNT_MILLIOHM));
                vec![g, ch4, status(b), t, p]
            }
            DeviceKind::PaddyWaterLevel => {
                let adc = b.adc.as_mut().expect("a paddy tube has an ADC");
                vec![loop_sample(
                    TUBE,
                    adc.read_loop_microamps(0, SHUNT_MILLIOHM),
                )]
            }
        }
    }

    /// Takes one sample of every channel at `device_time_ms` (model time
    /// `model_time_s`, `dt_s` after the previous sample) and seals a frame
    /// when enough samples are pending.
    pub fn sample(
        &mut self,
        device_time_ms: u64,
        model_time_s: f64,
        dt_s: f64,
        faults: &Faults,
    ) -> SampleOutcome {
        if self.finished_producing() {
            return SampleOutcome::default();
        }
        let totals = self.step_model(model_time_s, dt_s);
        self.drive_hardware(&totals, faults);
        let values = self.read_channels(dt_s);
        let pulses: Vec<u64> = self
            .board
            .pulses
            .iter()
            .map(|(pc, _)| pc.pulses())
            .collect();
        let app = self.app();
        for (i, p) in pulses.iter().enumerate() {
            app.set_counter(i, *p);
        }
        let dropped_before = app.stats().dropped_samples;
        let mut out = SampleOutcome::default();
        let r: Result<Option<u64>, SimAppError> = (|| {
            for (ch, (v, q)) in values.iter().enumerate() {
                app.record(ch as u8, *v, *q, device_time_ms)?;
            }
            if app.ready() {
                return app.seal();
            }
            Ok(None)
        })();
        out.dropped = app.stats().dropped_samples - dropped_before;
        match r {
            Ok(sealed) => {
                out.sealed = sealed;
                if sealed.is_some() {
                    self.produced += 1;
                }
            }
            Err(e) => {
                tracing::debug!(device = %self.device, error = %e, "flash failed while sampling");
                out.power_lost = true;
            }
        }
        out
    }

    /// Hands due frames to `up` (unsent ones, and those unacked for
    /// `ack_timeout_ms`). `None` means the flash lost power: reboot.
    pub fn service<U: Uplink>(
        &mut self,
        up: &mut U,
        now_ms: u64,
        ack_timeout_ms: u64,
    ) -> Option<ServiceReport> {
        let app = self.app();
        app.set_ack_timeout(ack_timeout_ms);
        app.service(up, now_ms).ok()
    }

    /// Applies a gateway ack.
    pub fn on_ack(&mut self, ack: Ack) -> AckOutcome {
        self.last_status = Some(ack.status);
        self.highest_acked = self.highest_acked.max(ack.acked_seq);
        match self.app().on_ack(ack) {
            Ok(renumbered) => AckOutcome {
                renumbered,
                power_lost: false,
            },
            Err(_) => AckOutcome {
                renumbered: 0,
                power_lost: true,
            },
        }
    }
}

fn pc_queued(pc: &mut PulseCounter<SimPin>) -> bool {
    pc.pin_mut().queued() > 0
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use mrv_shared::wire::binary;
    use mrv_shared::wire::signature::verify_frame;

    fn node(kind: DeviceKind, spf: usize, max_outbox: usize) -> SimNode {
        SimNode::new(
            SiteId::new("s").unwrap(),
            DeviceId::new("d").unwrap(),
            kind,
            Some([5; 32]),
            WireFormat::Binary,
            spf,
            max_outbox,
            None,
        )
        .unwrap()
    }

    fn run(n: &mut SimNode, samples: usize, faults: &Faults) {
        run_at(n, samples, faults, 43_200.0);
    }

    fn run_at(n: &mut SimNode, samples: usize, faults: &Faults, t0: f64) {
        for i in 0..samples {
            let o = n.sample(1000 * i as u64, t0 + 60.0 * i as f64, 60.0, faults);
            assert!(!o.power_lost);
        }
    }

    #[derive(Default)]
    struct Collect(Vec<(u64, Vec<u8>)>);
    impl Uplink for Collect {
        type Error = ();
        fn send(&mut self, seq: u64, payload: &[u8]) -> Result<(), ()> {
            self.0.push((seq, payload.to_vec()));
            Ok(())
        }
    }

    fn frames(n: &mut SimNode) -> Vec<mrv_shared::wire::Frame> {
        let mut up = Collect::default();
        n.mark_all_due();
        n.service(&mut up, 0, 1000).unwrap();
        up.0.iter()
            .map(|(_, p)| binary::decode_frame_exact(p).unwrap())
            .collect()
    }

    #[test]
    fn solar_pulses_become_a_rising_energy_counter_and_power() {
        let mut n = node(DeviceKind::SolarMeter, 2, 100);
        run(&mut n, 5, &Faults::default());
        let fs = frames(&mut n);
        assert_eq!(fs.len(), 5);
        let vk = SigningKey::from_bytes(&[5; 32]).verifying_key();
        assert!(fs.iter().all(|f| verify_frame(f, &vk).is_ok()));
        let energy: Vec<i64> = fs.iter().map(|f| f.samples[0].value).collect();
        assert!(energy.windows(2).all(|w| w[1] > w[0]), "{energy:?}");
        // ~50 kW * 60 s = ~833 Wh per sample at noon, clouds permitting;
        // power is in mW.
        assert!(fs[4].samples[1].value > 5_000_000, "{:?}", fs[4].samples[1]);
        assert!(fs[4].samples[1].quality.is_usable());
    }

    #[test]
    fn mean_power_is_exact_milliwatts_or_flagged() {
        // 1 Wh in 60 s is 60 W exactly.
        assert_eq!(mean_power_mw(1, 60.0), (60_000, Quality::GOOD));
        // 1 Wh in 7 s is 514.285714... W.
        assert_eq!(mean_power_mw(1, 7.0), (514_286, Quality::ROUNDED));
        assert_eq!(mean_power_mw(5, 0.0), (0, Quality::GOOD));
    }

    #[test]
    fn noise_glitches_are_debounced_away() {
        let mut noisy = node(DeviceKind::IrrigationPump, 3, 100);
        let f = Faults {
            noise: 0.5,
            ..Faults::default()
        };
        run_at(&mut noisy, 4, &f, 9.0 * 3600.0);
        // Every pulse the physics emitted was counted, no glitch was.
        for i in 0..2 {
            assert!(noisy.board.emitted[i] > 0);
            assert_eq!(noisy.board.pulses[i].0.pulses(), noisy.board.emitted[i]);
        }
        let fs = frames(&mut noisy);
        // The run contact reads "running" all along despite the glitches.
        assert!(fs.iter().all(|f| f.samples[2].value == 1), "{fs:?}");
        let water: Vec<i64> = fs.iter().map(|f| f.samples[1].value).collect();
        assert_eq!(*water.last().unwrap(), noisy.board.emitted[1] as i64 * 1000);
    }

    #[test]
    fn unplugged_sensors_read_as_the_drivers_detect_them() {
        let f = Faults {
            unplugged: true,
            ..Faults::default()
        };
        let mut paddy = node(DeviceKind::PaddyWaterLevel, 1, 100);
        run(&mut paddy, 1, &f);
        let s = frames(&mut paddy)[0].samples[0];
        assert_eq!(s.value, 0);
        assert!(s.quality.contains(Quality::OUT_OF_RANGE));
        let mut dig = node(DeviceKind::Digester, 3, 100);
        run(&mut dig, 1, &Faults::default());
        run(&mut dig, 1, &f);
        let fs = frames(&mut dig);
        assert!(fs[0].samples[1].quality.is_good());
        assert!(fs[0].samples[1].value > 5_000);
        assert_eq!(fs[1].samples[1].quality, Quality::UNAVAILABLE);
        let mut paddy = node(DeviceKind::PaddyWaterLevel, 1, 100);
        run(&mut paddy, 1, &Faults::default());
        let s = frames(&mut paddy)[0].samples[0];
        assert!(s.quality.is_good() && (40..=51).contains(&s.value), "{s:?}");
    }

    #[test]
    fn reboots_and_power_cuts_keep_numbering_counters_and_outbox() {
        let mut n = node(DeviceKind::SolarMeter, 2, 100);
        run(&mut n, 3, &Faults::default());
        let before = frames(&mut n);
        for _ in 0..5 {
            n.power_cut();
            n.reboot().unwrap();
        }
        assert_eq!(n.boot(), 6);
        run(&mut n, 2, &Faults::default());
        let after = frames(&mut n);
        assert_eq!(
            after.iter().map(|f| f.seq).collect::<Vec<_>>(),
            [1, 2, 3, 4, 5]
        );
        assert_eq!(after[4].boot, 6);
        assert!(after[3].samples[0].value >= before[2].samples[0].value);
    }

    #[test]
    fn acks_drop_frames_and_a_full_outbox_drops_samples() {
        let mut n = node(DeviceKind::PaddyWaterLevel, 1, 2);
        run(&mut n, 3, &Faults::default());
        assert_eq!(n.outbox_len(), 2);
        assert_eq!(n.produced(), 2);
        n.on_ack(Ack {
            acked_seq: 1,
            status: AckStatus::BufferFull,
        });
        run(&mut n, 1, &Faults::default());
        assert_eq!(n.outbox_seqs(), [2, 3]);
        let r = n.on_ack(Ack {
            acked_seq: 100,
            status: AckStatus::SeqRegressed,
        });
        assert_eq!(r.renumbered, 2);
        assert_eq!(n.outbox_seqs(), [101, 102]);
        assert_eq!(n.next_seq(), 103);
    }
}
