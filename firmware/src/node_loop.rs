//! [`Node`]: the main loop of the MRV sensor node, over generic drivers;
//! every board image runs this one (the STM32F411 image on real pins, the
//! QEMU mps2-an386 image on [`crate::emulated_sensors`]).
//!
//! Hardware it expects (see [`NODE_HARDWARE`]): an S0 output of a
//! 1000 imp/kWh energy meter and a pump run contact on two digital inputs
//! (active low), an ADS1115 whose input 0 measures a 4-20 mA level probe
//! (-300..+200 mm) over a 150 ohm shunt, a biogas analyser on a UART, and a
//! network co-processor on another UART speaking [`crate::serial_link`].
//!
//! Each pass of the image's loop calls [`Node::step`] with the time (the
//! board owns the clock) and hands every received byte to
//! [`Node::on_analyser_byte`] / [`Node::on_modem_byte`]:
//! - the S0 input and the contact are polled every pass (debounced);
//! - every `fast_period_ms` the level probe and the contact are read into
//!   per-channel aggregators (mean, max);
//! - every `sample_period_ms` each channel's value goes into the [`App`];
//!   when enough samples are pending a frame is sealed (signed, written to
//!   flash), and due frames go to the modem;
//! - a partial ack frame older than `link_idle_ms` is dropped and counted.
//!
//! Nothing here allocates except what [`App::seal`] and [`App::service`]
//! do; errors are counted in [`NodeStats`], never silently dropped, and
//! never stop the loop (a flash error is retried on the next pass).

use crate::app::{App, ServiceReport};
use crate::drivers::ads1115::{self, Ads1115, LoopScale, LoopState};
use crate::drivers::ch4_uart::FrameParser;
use crate::drivers::contact::Contact;
use crate::drivers::pulse::{PulseCounter, PulseScale};
use crate::sampling::{Aggregation, Aggregator, Schedule};
use crate::serial_link::{AckParser, LinkCounters, SerialUplink};
use alloc::vec;
use alloc::vec::Vec;
use embedded_hal::delay::DelayNs;
use embedded_hal::digital::InputPin;
use embedded_hal::i2c::I2c;
use embedded_io::Write;
use embedded_storage::nor_flash::NorFlash;
use mrv_shared::ids::ChannelId;
use mrv_shared::quantity::{Quantity, ValueKind};
use mrv_shared::reading::{Channel, Quality};

/// The node's sensors and their scaling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeHardware {
    /// Energy meter S0 output.
    pub energy: PulseScale,
    /// Level probe, mm at 4 and 20 mA.
    pub level: LoopScale,
    /// Level probe shunt, milliohm.
    pub shunt_milliohm: u32,
    /// ADS1115 input of the level probe.
    pub level_input: u8,
    /// Debounce threshold of the digital inputs, polls.
    pub debounce: u8,
}

/// The hardware both images have (the QEMU rig emulates the same).
pub const NODE_HARDWARE: NodeHardware = NodeHardware {
    energy: PulseScale {
        pulses_per_unit: 1000,
        base_per_unit: 1000,
    },
    level: LoopScale {
        at_4ma: -300,
        at_20ma: 200,
    },
    shunt_milliohm: 150_000,
    level_input: 0,
    debounce: 3,
};

/// Index of the energy counter in the channel table and in the app's
/// persistent counters.
pub const ENERGY_CHANNEL: u8 = 0;

/// The channel table frames carry: `energy` (Wh counter), `run` (status),
/// `level` (mm), `ch4` (0.01 vol%).
pub fn node_channels() -> Vec<Channel> {
    let ch = |id: &str, quantity, kind| Channel {
        id: ChannelId::new(id).expect("channel names here are valid ids"),
        quantity,
        kind,
    };
    vec![
        ch("energy", Quantity::Energy, ValueKind::Counter),
        ch("run", Quantity::Status, ValueKind::Instant),
        ch("level", Quantity::WaterLevel, ValueKind::Instant),
        ch("ch4", Quantity::Ch4Fraction, ValueKind::Instant),
    ]
}

/// Loop timing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeTiming {
    /// One value per channel into the app every this many ms.
    pub sample_period_ms: u64,
    /// Level and contact readings folded into the period's value every
    /// this many ms.
    pub fast_period_ms: u64,
    /// A partial ack frame with no byte for this long is dropped.
    pub link_idle_ms: u64,
}

/// What went wrong since boot (the loop goes on after each).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NodeStats {
    /// Loop passes.
    pub passes: u64,
    /// Sample periods closed.
    pub periods: u64,
    /// Samples the app refused (pending buffer full: a seal kept failing).
    pub record_errors: u64,
    /// Seals that failed (flash).
    pub seal_errors: u64,
    /// Service calls that failed (flash read).
    pub service_errors: u64,
    /// Acks that could not be applied (flash write; the next ack retries).
    pub ack_errors: u64,
    /// Level probe reads that failed on the bus.
    pub level_bus_errors: u64,
    /// Analyser readings decoded.
    pub analyser_readings: u64,
}

/// What one [`Node::step`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StepOutcome {
    /// A sample period closed.
    pub sampled: bool,
    /// The seq of the frame sealed in this step.
    pub sealed: Option<u64>,
    /// Frames handed to the modem.
    pub service: ServiceReport,
}

/// The node: app, drivers and loop state.
pub struct Node<F, PE, PR, I2C, D, W, const P: usize> {
    app: App<F, P>,
    hw: NodeHardware,
    timing: NodeTiming,
    energy: PulseCounter<PE>,
    run: Contact<PR>,
    adc: Ads1115<I2C, D>,
    uplink: SerialUplink<W>,
    acks: AckParser,
    last_modem_byte_ms: u64,
    ch4_parser: FrameParser,
    ch4: Option<u16>,
    schedule: Schedule,
    fast: Schedule,
    level_agg: Aggregator,
    run_agg: Aggregator,
    stats: NodeStats,
}

impl<F, PE, PR, I2C, D, W, const P: usize> Node<F, PE, PR, I2C, D, W, P>
where
    F: NorFlash,
    PE: InputPin,
    PR: InputPin,
    I2C: I2c,
    D: DelayNs,
    W: Write,
{
    /// A node around a booted `app` (its energy counter continues from the
    /// journal's pulse total).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        app: App<F, P>,
        hw: NodeHardware,
        timing: NodeTiming,
        energy_pin: PE,
        run_pin: PR,
        adc: Ads1115<I2C, D>,
        modem_tx: W,
    ) -> Self {
        let pulses = app.counter(usize::from(ENERGY_CHANNEL));
        Self {
            energy: PulseCounter::new(energy_pin, true, hw.debounce, pulses),
            run: Contact::new(run_pin, true, hw.debounce),
            adc,
            uplink: SerialUplink::new(modem_tx),
            acks: AckParser::new(),
            last_modem_byte_ms: 0,
            ch4_parser: FrameParser::new(),
            ch4: None,
            schedule: Schedule::new(timing.sample_period_ms),
            fast: Schedule::new(timing.fast_period_ms),
            level_agg: Aggregator::new(Aggregation::Mean),
            run_agg: Aggregator::new(Aggregation::Max),
            stats: NodeStats::default(),
            app,
            hw,
            timing,
        }
    }

    /// The application.
    pub fn app(&self) -> &App<F, P> {
        &self.app
    }

    /// What the modem link discarded.
    pub fn link_counters(&self) -> &LinkCounters {
        self.acks.counters()
    }

    /// Analyser frames the parser rejected.
    pub fn analyser_rejected(&self) -> u32 {
        self.ch4_parser.rejected
    }

    /// Loop counters.
    pub fn stats(&self) -> &NodeStats {
        &self.stats
    }

    /// Pulses counted (the energy meter's S0 total).
    pub fn pulses(&self) -> u64 {
        self.energy.pulses()
    }

    /// A byte from the biogas analyser's UART.
    pub fn on_analyser_byte(&mut self, b: u8) {
        if let Some(Ok(r)) = self.ch4_parser.push(b) {
            self.ch4 = Some(r.ch4_centi_pct);
            self.stats.analyser_readings += 1;
        }
    }

    /// A byte from the modem's UART at `now_ms`; an ack is applied at once.
    pub fn on_modem_byte(&mut self, b: u8, now_ms: u64) {
        self.last_modem_byte_ms = now_ms;
        if let Some(ack) = self.acks.push(b)
            && self.app.on_ack(ack).is_err()
        {
            self.stats.ack_errors += 1;
        }
    }

    /// One pass: poll, sample, seal, send.
    pub fn step(&mut self, now_ms: u64) -> StepOutcome {
        let sampled = self.sample(now_ms);
        let sealed = if sampled { self.seal_if_ready() } else { None };
        let service = self.service(now_ms);
        StepOutcome {
            sampled,
            sealed,
            service,
        }
    }

    /// Polls the inputs; closes the sample period when due. Returns true
    /// when a period closed (samples went into the app).
    pub fn sample(&mut self, now_ms: u64) -> bool {
        self.stats.passes += 1;
        // Infallible on every board we have; an error reads as no edge.
        let _ = self.energy.poll();
        let _ = self.run.poll();
        if self.acks.in_frame()
            && now_ms.saturating_sub(self.last_modem_byte_ms) > self.timing.link_idle_ms
        {
            self.acks.line_idle();
        }
        if self.fast.due(now_ms) {
            self.read_fast();
        }
        if !self.schedule.due(now_ms) {
            return false;
        }
        self.stats.periods += 1;
        let level = self.level_agg.take().unwrap_or((0, Quality::UNAVAILABLE));
        let run_status = self.run_agg.take().unwrap_or((0, Quality::UNAVAILABLE));
        let ch4 = match self.ch4.take() {
            Some(v) => (i64::from(v), Quality::GOOD),
            None => (0, Quality::UNAVAILABLE),
        };
        let pulses = self.energy.pulses();
        let samples = [
            (self.hw.energy.to_base(pulses), Quality::GOOD),
            run_status,
            level,
            ch4,
        ];
        self.app.set_counter(usize::from(ENERGY_CHANNEL), pulses);
        for (i, (v, q)) in samples.into_iter().enumerate() {
            if self.app.record(i as u8, v, q, now_ms).is_err() {
                self.stats.record_errors += 1;
            }
        }
        true
    }

    fn read_fast(&mut self) {
        self.run_agg
            .add(i64::from(self.run.is_active()), Quality::GOOD);
        let scale = self.hw.level;
        match self
            .adc
            .read_loop_microamps(self.hw.level_input, self.hw.shunt_milliohm)
        {
            Ok(ua) => match ads1115::classify_loop(ua) {
                LoopState::Ok => self.level_agg.add(scale.to_value(ua), Quality::GOOD),
                LoopState::UnderRange | LoopState::OverRange => self.level_agg.add(
                    scale.to_value(ua).clamp(scale.at_4ma, scale.at_20ma),
                    Quality::OUT_OF_RANGE,
                ),
                LoopState::Open | LoopState::Short => self
                    .level_agg
                    .add(0, Quality::OUT_OF_RANGE.with(Quality::UNAVAILABLE)),
            },
            Err(_) => {
                self.stats.level_bus_errors += 1;
                self.level_agg.add(0, Quality::UNAVAILABLE);
            }
        }
    }

    /// Seals a frame when enough samples are pending; returns its seq.
    pub fn seal_if_ready(&mut self) -> Option<u64> {
        if !self.app.ready() {
            return None;
        }
        match self.app.seal() {
            Ok(seq) => seq,
            Err(_) => {
                self.stats.seal_errors += 1;
                None
            }
        }
    }

    /// Hands due frames to the modem.
    pub fn service(&mut self, now_ms: u64) -> ServiceReport {
        match self.app.service(&mut self.uplink, now_ms) {
            Ok(r) => r,
            Err(_) => {
                self.stats.service_errors += 1;
                ServiceReport::default()
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::app::{AppConfig, Encoding, Identity};
    use crate::drivers::ads1115::DEFAULT_ADDRESS;
    use crate::drivers::ch4_uart::{BiogasReading, encode};
    use crate::emulated_sensors::{Ads1115Model, NoDelay, RigClock, SquareWavePin};
    use crate::serial_link::{LinkDecode, TYPE_PUBLISH, decode_link_frame, encode_ack_frame};
    use crate::storage::ram_flash::RamFlash;
    use ed25519_dalek::SigningKey;
    use mrv_shared::ids::{DeviceId, SiteId};
    use mrv_shared::wire::signature::verify_frame;
    use mrv_shared::wire::{Ack, AckStatus, binary};

    struct Wire(std::vec::Vec<u8>);
    impl embedded_io::ErrorType for Wire {
        type Error = core::convert::Infallible;
    }
    impl Write for Wire {
        fn write(&mut self, buf: &[u8]) -> Result<usize, Self::Error> {
            self.0.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> Result<(), Self::Error> {
            Ok(())
        }
    }

    #[test]
    fn the_loop_samples_the_rig_seals_signed_frames_and_applies_acks() {
        let key = SigningKey::from_bytes(&[9; 32]);
        let app: App<RamFlash, 16> = App::boot(
            RamFlash::new(3),
            0,
            3,
            Identity {
                site: SiteId::new("s").unwrap(),
                device: DeviceId::new("n").unwrap(),
                firmware: "t".into(),
                key: Some(key.clone()),
            },
            AppConfig {
                samples_per_frame: 8,
                max_outbox: 16,
                ack_timeout_ms: 10_000,
                encoding: Encoding::Binary,
                has_wall_clock: false,
            },
            node_channels(),
        )
        .unwrap();
        let clock = RigClock::new();
        let mut adc = Ads1115Model::new(DEFAULT_ADDRESS, 150_000);
        adc.loop_ua[0] = 12_000;
        let mut node = Node::new(
            app,
            NODE_HARDWARE,
            NodeTiming {
                sample_period_ms: 100,
                fast_period_ms: 10,
                link_idle_ms: 5,
            },
            SquareWavePin::new(&clock, 20, 5, true),
            SquareWavePin::new(&clock, 1000, 600, true),
            Ads1115::new(adc, NoDelay, DEFAULT_ADDRESS),
            Wire(std::vec::Vec::new()),
        );
        let (ch4, n) = encode(&BiogasReading {
            ch4_centi_pct: 5500,
            flow_ml_min: None,
        });
        let mut sealed = std::vec::Vec::new();
        for ms in 0..=400 {
            clock.set(ms);
            if ms % 50 == 0 {
                for b in &ch4[..n] {
                    node.on_analyser_byte(*b);
                }
            }
            for _ in 0..3 {
                sealed.extend(node.step(ms).sealed);
            }
        }
        assert_eq!(sealed, [1, 2]);
        let wire = core::mem::take(&mut node.uplink.uart_mut().0);
        let mut frames = std::vec::Vec::new();
        let mut buf = &wire[..];
        while let LinkDecode::Frame { payload, used, .. } =
            decode_link_frame(buf, TYPE_PUBLISH, 4096)
        {
            frames.push(binary::decode_frame_exact(payload).unwrap());
            buf = &buf[used..];
        }
        assert!(buf.is_empty());
        assert_eq!(frames.len(), 2);
        let f = &frames[1];
        verify_frame(f, &key.verifying_key()).unwrap();
        let of = |ch: u8| -> std::vec::Vec<i64> {
            f.samples
                .iter()
                .filter(|s| s.channel == ch)
                .map(|s| s.value)
                .collect()
        };
        // 12 mA = -50 mm; 55.00 % CH4; the pump runs 60 % of the time;
        // a pulse every 20 ms (1 Wh each), counted continuously.
        assert_eq!(of(2), [-50, -50]);
        assert_eq!(of(3), [5500, 5500]);
        assert_eq!(of(1), [1, 1]);
        assert_eq!(of(0), [10, 15]);
        // An ack (with noise and a cut frame first) drops them from the outbox.
        for b in [1u8, 2, 3] {
            node.on_modem_byte(b, 401);
        }
        let ack = encode_ack_frame(&Ack {
            acked_seq: 2,
            status: AckStatus::Ok,
        });
        for b in &ack[..7] {
            node.on_modem_byte(*b, 401);
        }
        node.step(410);
        for b in ack {
            node.on_modem_byte(b, 411);
        }
        assert_eq!(node.app().outbox_len(), 0);
        assert_eq!(node.link_counters().noise_bytes, 3);
        assert_eq!(node.link_counters().truncated, 1);
        assert_eq!(node.stats().record_errors + node.stats().seal_errors, 0);
    }
}
