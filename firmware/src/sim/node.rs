//! [`SimNode`]: the logic of one simulated device, without any I/O.
//!
//! It samples a physical model, seals samples into frames with gap-free
//! sequence numbers, signs and encodes them, keeps them in an outbox until
//! acked, and decides what to (re-)send when. Time comes in as arguments
//! (`now_ms`: a monotonic clock in ms; `device_time_ms`: the device's wall
//! clock, which may be skewed). The MQTT task in `device_task` does the I/O.
//!
//! State that a real device keeps in flash (and which therefore survives
//! [`SimNode::reboot`]): boot counter, next sequence number, meter
//! registers, outbox. State in RAM (lost on reboot): samples not yet sealed
//! into a frame, send timestamps.

use super::physics::{Digester, IrrigationPump, PaddyField, SolarPlant};
use super::{DeviceKind, Faults, WireFormat};
use alloc::collections::VecDeque;
use ed25519_dalek::SigningKey;
use mrv_shared::ids::{ChannelId, DeviceId, SiteId};
use mrv_shared::quantity::{Quantity, ValueKind};
use mrv_shared::reading::{Channel, Quality, Sample};
use mrv_shared::wire::signature::sign_frame;
use mrv_shared::wire::{Ack, AckStatus, Frame, binary, json};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::string::String;
use std::vec::Vec;

/// Firmware version string the simulated devices report.
pub const SIM_FIRMWARE: &str = concat!("mrv-sim-", env!("CARGO_PKG_VERSION"));

/// Noise above this relative amplitude flags a sample `SUSPECT`.
const SUSPECT_NOISE: f64 = 0.05;

#[derive(Debug, Clone)]
enum Model {
    Solar(SolarPlant),
    Pump(IrrigationPump),
    Digester(Digester),
    Paddy(PaddyField),
}

/// A frame in the outbox.
#[derive(Debug, Clone)]
pub struct OutFrame {
    /// Its sequence number.
    pub seq: u64,
    /// The frame (kept to re-sign it when renumbered).
    pub frame: Frame,
    /// Encoded payload, as published.
    pub payload: Vec<u8>,
    /// When it was last handed to the MQTT client (`now_ms`), if since boot.
    pub sent_at: Option<u64>,
    /// Whether it was ever sent (a later send is a re-send).
    pub ever_sent: bool,
}

/// What [`SimNode::sample`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SampleOutcome {
    /// A frame was sealed with this sequence number.
    pub sealed: Option<u64>,
    /// Samples dropped because the outbox was full.
    pub dropped: u64,
}

/// What [`SimNode::on_ack`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AckOutcome {
    /// Frames removed from the outbox.
    pub removed: u64,
    /// Frames renumbered (after `SeqRegressed`).
    pub renumbered: u64,
}

/// One simulated device's logic.
#[derive(Debug)]
pub struct SimNode {
    site: SiteId,
    device: DeviceId,
    kind: DeviceKind,
    key: Option<SigningKey>,
    format: WireFormat,
    samples_per_frame: usize,
    max_outbox: usize,
    max_frames: Option<u64>,
    model: Model,
    rng: StdRng,
    // "flash"
    boot: u32,
    next_seq: u64,
    produced: u64,
    /// What the meters counted (pulses lost while unplugged stay lost).
    meters: [f64; 3],
    model_totals: [f64; 3],
    outbox: VecDeque<OutFrame>,
    // RAM
    pending: Vec<Sample>,
    pending_base_ms: Option<u64>,
    highest_acked: u64,
    last_status: Option<AckStatus>,
}

impl SimNode {
    /// A device booting for the first time (boot counter 1, next seq 1).
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
    ) -> Self {
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
        Self {
            site,
            device,
            kind,
            key: signing_key.map(|k| SigningKey::from_bytes(&k)),
            format,
            samples_per_frame,
            max_outbox,
            max_frames,
            model,
            rng: StdRng::seed_from_u64(seed),
            boot: 1,
            next_seq: 1,
            produced: 0,
            meters: [0.0; 3],
            model_totals: [0.0; 3],
            outbox: VecDeque::new(),
            pending: Vec::new(),
            pending_base_ms: None,
            highest_acked: 0,
            last_status: None,
        }
    }

    /// Device id.
    pub fn device(&self) -> &DeviceId {
        &self.device
    }
    /// Boot counter.
    pub fn boot(&self) -> u32 {
        self.boot
    }
    /// Next sequence number to be used.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }
    /// Frames sealed since the first boot.
    pub fn produced(&self) -> u64 {
        self.produced
    }
    /// Frames waiting for an ack.
    pub fn outbox_len(&self) -> usize {
        self.outbox.len()
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

    /// Simulates a power cut and restart: unsealed samples are lost, the
    /// boot counter increments, every outbox frame becomes due.
    pub fn reboot(&mut self) {
        self.boot = self.boot.saturating_add(1);
        self.pending.clear();
        self.pending_base_ms = None;
        for f in &mut self.outbox {
            f.sent_at = None;
        }
    }

    /// Marks every outbox frame as due (after a reconnect).
    pub fn mark_all_due(&mut self) {
        for f in &mut self.outbox {
            f.sent_at = None;
        }
    }

    fn channels(&self) -> Vec<Channel> {
        let ch = |id: &str, quantity, kind| Channel {
            id: ChannelId::new(id).expect("channel names here are valid ids"),
            quantity,
            kind,
        };
        match self.kind {
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
            ],
            DeviceKind::PaddyWaterLevel => {
                vec![ch("level", Quantity::WaterLevel, ValueKind::Instant)]
            }
        }
    }

    fn noisy(&mut self, v: f64, noise: f64) -> (f64, Quality) {
        if noise <= 0.0 {
            return (v, Quality::GOOD);
        }
        let e = self.rng.gen_range(-noise..noise);
        let q = if e.abs() > SUSPECT_NOISE {
            Quality::SUSPECT
        } else {
            Quality::GOOD
        };
        (v * (1.0 + e), q)
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
        for (i, t) in totals.iter().enumerate() {
            let delta = (t - self.model_totals[i]).max(0.0);
            self.model_totals[i] = *t;
            if !faults.unplugged {
                self.meters[i] += delta;
            }
        }
        let values = self.read_values(faults);
        let base = *self.pending_base_ms.get_or_insert(device_time_ms);
        let offset_ms = u32::try_from(device_time_ms.saturating_sub(base)).unwrap_or(u32::MAX);
        for (channel, (value, quality)) in values.into_iter().enumerate() {
            self.pending.push(Sample {
                channel: u8::try_from(channel).expect("at most 3 channels"),
                offset_ms,
                value,
                quality,
            });
        }
        let mut out = SampleOutcome::default();
        if self.pending.len() >= self.samples_per_frame {
            if self.outbox.len() >= self.max_outbox {
                out.dropped = self.pending.len() as u64;
                self.pending.clear();
                self.pending_base_ms = None;
            } else {
                out.sealed = Some(self.seal());
            }
        }
        out
    }

    fn step_model(&mut self, t: f64, dt: f64) -> [f64; 3] {
        let rng = &mut self.rng;
        match &mut self.model {
            Model::Solar(m) => {
                m.step(t, dt, rng);
                [m.energy_wh, 0.0, 0.0]
            }
            Model::Pump(m) => {
                m.step(t, dt, rng);
                [m.energy_wh, m.water_ml, 0.0]
            }
            Model::Digester(m) => {
                m.step(t, dt, rng);
                [m.gas_ml, 0.0, 0.0]
            }
            Model::Paddy(m) => {
                m.step(t, dt, rng);
                [0.0; 3]
            }
        }
    }

    fn read_values(&mut self, faults: &Faults) -> Vec<(i64, Quality)> {
        let n = self.channels().len();
        if faults.unplugged {
            // 4-20 mA loops read an open loop; pulse inputs, UART and
            // contacts read nothing at all.
            let q = if self.kind == DeviceKind::PaddyWaterLevel {
                Quality::OUT_OF_RANGE
            } else {
                Quality::UNAVAILABLE
            };
            return vec![(0, q); n];
        }
        let meters = self.meters;
        let model = self.model.clone();
        match model {
            Model::Solar(m) => {
                let (p, q) = self.noisy(m.power_w, faults.noise);
                vec![
                    (meters[0].floor() as i64, Quality::GOOD),
                    (p.max(0.0).round() as i64, q),
                ]
            }
            Model::Pump(m) => vec![
                (meters[0].floor() as i64, Quality::GOOD),
                (meters[1].floor() as i64, Quality::GOOD),
                (i64::from(m.running), Quality::GOOD),
            ],
            Model::Digester(m) => {
                let (c, q) = self.noisy(m.ch4_centi_pct, faults.noise);
                vec![
                    (meters[0].floor() as i64, Quality::GOOD),
                    (c.clamp(0.0, 10_000.0).round() as i64, q),
                    (i64::from(m.flame), Quality::GOOD),
                ]
            }
            Model::Paddy(m) => {
                // Noise on a level is absolute (mm), scaled to 100 mm.
                let (d, q) = self.noisy(100.0, faults.noise);
                vec![((m.level_mm + d - 100.0).round() as i64, q)]
            }
        }
    }

    fn seal(&mut self) -> u64 {
        let seq = self.next_seq;
        let mut frame = Frame {
            site: self.site.clone(),
            device: self.device.clone(),
            seq,
            boot: self.boot,
            firmware: String::from(SIM_FIRMWARE),
            base_time_ms: self.pending_base_ms.take(),
            channels: self.channels(),
            samples: core::mem::take(&mut self.pending),
            signature: None,
        };
        let payload = self.sign_and_encode(&mut frame);
        self.outbox.push_back(OutFrame {
            seq,
            frame,
            payload,
            sent_at: None,
            ever_sent: false,
        });
        self.next_seq += 1;
        self.produced += 1;
        seq
    }

    fn sign_and_encode(&self, frame: &mut Frame) -> Vec<u8> {
        if let Some(k) = &self.key {
            sign_frame(frame, k);
        }
        match self.format {
            WireFormat::Binary => binary::encode_frame(frame),
            WireFormat::Json => json::encode_frame(frame),
        }
    }

    /// Frames to hand to the MQTT client now: those never sent since boot
    /// or reconnect, and those sent more than `ack_timeout_ms` ago. Each is
    /// marked sent at `now_ms`; the flag tells whether it is a re-send.
    pub fn due(&mut self, now_ms: u64, ack_timeout_ms: u64) -> Vec<(u64, Vec<u8>, bool)> {
        let mut out = Vec::new();
        for f in &mut self.outbox {
            let due = match f.sent_at {
                None => true,
                Some(t) => now_ms.saturating_sub(t) >= ack_timeout_ms,
            };
            if due {
                out.push((f.seq, f.payload.clone(), f.ever_sent));
                f.sent_at = Some(now_ms);
                f.ever_sent = true;
            }
        }
        out
    }

    /// Undoes the "sent" mark of a frame the MQTT client refused to queue.
    pub fn unsend(&mut self, seq: u64) {
        if let Some(f) = self.outbox.iter_mut().find(|f| f.seq == seq) {
            f.sent_at = None;
        }
    }

    /// Applies a gateway ack.
    pub fn on_ack(&mut self, ack: Ack) -> AckOutcome {
        self.last_status = Some(ack.status);
        self.highest_acked = self.highest_acked.max(ack.acked_seq);
        let mut out = AckOutcome::default();
        if ack.status == AckStatus::SeqRegressed
            && self.outbox.front().is_some_and(|f| f.seq <= ack.acked_seq)
        {
            // Our numbers were already used: nothing in the outbox was
            // stored. Renumber it all after acked_seq, in order.
            let mut seq = ack.acked_seq;
            let mut frames = core::mem::take(&mut self.outbox);
            for f in &mut frames {
                seq += 1;
                f.seq = seq;
                f.frame.seq = seq;
                let mut frame = f.frame.clone();
                f.payload = self.sign_and_encode(&mut frame);
                f.frame = frame;
                f.sent_at = None;
            }
            out.renumbered = frames.len() as u64;
            self.outbox = frames;
            self.next_seq = seq + 1;
            return out;
        }
        while self.outbox.front().is_some_and(|f| f.seq <= ack.acked_seq) {
            self.outbox.pop_front();
            out.removed += 1;
        }
        // The gateway may know a higher seq than we ever produced only after
        // a SeqRegressed; never reuse a number it already holds.
        if ack.acked_seq >= self.next_seq {
            self.next_seq = ack.acked_seq + 1;
        }
        out
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use mrv_shared::wire::signature::verify_frame;

    fn node(spf: usize, max_outbox: usize) -> SimNode {
        SimNode::new(
            SiteId::new("s").unwrap(),
            DeviceId::new("d").unwrap(),
            DeviceKind::SolarMeter,
            Some([5; 32]),
            WireFormat::Binary,
            spf,
            max_outbox,
            None,
        )
    }

    fn run(n: &mut SimNode, samples: usize) {
        for i in 0..samples {
            n.sample(
                1000 * i as u64,
                43_200.0 + i as f64,
                1.0,
                &Faults::default(),
            );
        }
    }

    #[test]
    fn frames_are_numbered_gap_free_and_signed() {
        let mut n = node(2, 10);
        run(&mut n, 3);
        assert_eq!(n.outbox_len(), 3);
        let due = n.due(0, 1000);
        assert_eq!(due.iter().map(|d| d.0).collect::<Vec<_>>(), [1, 2, 3]);
        let f = binary::decode_frame_exact(&due[0].1).unwrap();
        let vk = SigningKey::from_bytes(&[5; 32]).verifying_key();
        assert_eq!(verify_frame(&f, &vk), Ok(()));
        assert_eq!(f.samples.len(), 2);
    }

    #[test]
    fn due_resends_only_after_the_timeout() {
        let mut n = node(1, 10);
        run(&mut n, 2);
        assert_eq!(n.due(0, 1000).len(), 2);
        assert!(n.due(999, 1000).is_empty());
        let again = n.due(1000, 1000);
        assert_eq!(again.len(), 2);
        assert!(again.iter().all(|d| d.2));
    }

    #[test]
    fn ack_drops_up_to_acked_seq_and_full_outbox_drops_samples() {
        let mut n = node(1, 2);
        run(&mut n, 3);
        assert_eq!(n.outbox_len(), 2);
        assert_eq!(n.produced(), 2);
        let r = n.on_ack(Ack {
            acked_seq: 1,
            status: AckStatus::BufferFull,
        });
        assert_eq!(r.removed, 1);
        run(&mut n, 1);
        assert_eq!(n.next_seq(), 4);
    }

    #[test]
    fn seq_regressed_renumbers_after_acked_seq() {
        let mut n = node(1, 10);
        run(&mut n, 2);
        let r = n.on_ack(Ack {
            acked_seq: 100,
            status: AckStatus::SeqRegressed,
        });
        assert_eq!(r.renumbered, 2);
        let due = n.due(0, 1000);
        assert_eq!(due.iter().map(|d| d.0).collect::<Vec<_>>(), [101, 102]);
        assert_eq!(binary::decode_frame_exact(&due[1].1).unwrap().seq, 102);
        assert_eq!(n.next_seq(), 103);
        // A late duplicate SeqRegressed changes nothing.
        let r = n.on_ack(Ack {
            acked_seq: 100,
            status: AckStatus::SeqRegressed,
        });
        assert_eq!(r, AckOutcome::default());
    }

    #[test]
    fn reboot_keeps_the_outbox_and_numbering() {
        let mut n = node(2, 10);
        run(&mut n, 3);
        n.due(0, 1000);
        n.reboot();
        assert_eq!(n.boot(), 2);
        run(&mut n, 2);
        let due = n.due(1, 1000);
        assert_eq!(due.iter().map(|d| d.0).collect::<Vec<_>>(), [1, 2, 3, 4, 5]);
        let f5 = binary::decode_frame_exact(&due[4].1).unwrap();
        assert_eq!(f5.boot, 2);
    }
}
