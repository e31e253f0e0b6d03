//! [`App`]: the device application. Pure logic over a flash journal; the
//! caller brings time, sensor readings, acks and an [`Uplink`].
//!
//! Lifecycle: [`App::boot`] replays the journal and persists boot+1. The
//! sampling loop calls [`App::record`] for each channel value (no
//! allocation: samples go into a fixed-capacity buffer), then
//! [`App::seal`] when [`App::ready`]: the samples become a frame with the
//! next sequence number, signed with the device key, encoded, and written
//! to flash together with the counters before anything is sent.
//! [`App::service`] hands due frames to the uplink (all unsent ones after a
//! (re)connect, and any unacked for `ack_timeout_ms`); [`App::on_ack`]
//! persists the gateway's ack and drops acked frames.
//!
//! Invariants:
//! - sequence numbers are gap-free from 1 across reboots: a number is used
//!   only once its frame is durable; a torn write reuses nothing that was
//!   ever sent;
//! - a frame leaves the outbox only after an ack for it is durable;
//! - after `SeqRegressed`, frames at or below the gateway's `acked_seq` are
//!   re-signed with numbers after it; each copy names its origin so that a
//!   power cut mid-way neither loses nor duplicates a frame;
//! - when the outbox holds `max_outbox` frames (or the flash is full) new
//!   samples are dropped and counted, never old frames.

use crate::storage::journal::{FrameRef, Journal, JournalError, N_COUNTERS, Snapshot};
use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;
use ed25519_dalek::SigningKey;
use embedded_storage::nor_flash::NorFlash;
use mrv_shared::ids::{DeviceId, SiteId};
use mrv_shared::reading::{Channel, Quality, Sample};
#[cfg(feature = "json-frames")]
use mrv_shared::wire::json;
use mrv_shared::wire::signature::sign_frame;
use mrv_shared::wire::{Ack, AckStatus, Frame, binary};

/// The link to the gateway (MQTT over a radio, Ethernet, ...).
///
/// `send` queues one encoded frame for publication QoS 1 on the device's up
/// topic; an error means "not now" and the app retries later. Acks travel
/// the other way and are handed to [`App::on_ack`] by the caller.
pub trait Uplink {
    /// Why a frame could not be queued.
    type Error;
    /// Queues `payload` (frame `seq`) for transmission.
    fn send(&mut self, seq: u64, payload: &[u8]) -> Result<(), Self::Error>;
}

/// Frame encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// Compact binary (`mrv_shared::wire::binary`).
    Binary,
    /// JSON (`mrv_shared::wire::json`); needs the `json-frames` feature
    /// (the host simulator has it, the board images leave it out).
    Json,
}

/// Application settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppConfig {
    /// Samples per frame (>= 1, <= the pending capacity `P`).
    pub samples_per_frame: usize,
    /// Unacked frames kept before new samples are dropped.
    pub max_outbox: usize,
    /// Re-send a frame unacked for this long, ms.
    pub ack_timeout_ms: u64,
    /// Wire encoding.
    pub encoding: Encoding,
    /// The device clock is synchronised wall time: frames carry a base
    /// time. Without it frames have none and the gateway stamps receipt
    /// time (sample offsets stay relative to the frame's first sample).
    pub has_wall_clock: bool,
}

/// Who the device is.
#[derive(Debug, Clone)]
pub struct Identity {
    /// Site.
    pub site: SiteId,
    /// Device.
    pub device: DeviceId,
    /// Firmware version string (<= 32 bytes).
    pub firmware: String,
    /// Ed25519 key; `None` sends unsigned frames.
    pub key: Option<SigningKey>,
}

/// Application errors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AppError<E: core::fmt::Debug> {
    /// The flash journal failed.
    #[error("journal: {0}")]
    Journal(#[from] JournalError<E>),
    /// `record` with the pending buffer full (seal first).
    #[error("pending sample buffer is full")]
    PendingFull,
    /// A stored frame no longer decodes (flash corruption).
    #[error("stored frame {0} does not decode")]
    StoredFrame(u64),
    /// Bad configuration.
    #[error("bad app config: {0}")]
    Config(&'static str),
}

/// Counters of what the app did since boot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AppStats {
    /// Frames sealed.
    pub produced: u64,
    /// First transmissions.
    pub sent: u64,
    /// Re-transmissions.
    pub resent: u64,
    /// Uplink refusals.
    pub refused: u64,
    /// Samples dropped (outbox or flash full).
    pub dropped_samples: u64,
    /// Acks handled.
    pub acks: u64,
    /// Frames renumbered after `SeqRegressed`.
    pub renumbered: u64,
    /// Highest acked seq seen.
    pub highest_acked: u64,
    /// Last ack status.
    pub last_status: Option<AckStatus>,
}

/// What one [`App::service`] call did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServiceReport {
    /// First transmissions.
    pub sent: u64,
    /// Re-transmissions.
    pub resent: u64,
    /// Frames the uplink refused (retried later).
    pub refused: u64,
}

#[derive(Debug, Clone, Copy, Default)]
struct SendState {
    sent_at: Option<u64>,
    ever: bool,
}

type Res<T, F> = Result<T, AppError<<F as embedded_storage::nor_flash::ErrorType>::Error>>;

/// The device application over flash `F`, with room for `P` pending samples.
#[derive(Debug)]
pub struct App<F, const P: usize> {
    journal: Journal<F>,
    id: Identity,
    cfg: AppConfig,
    channels: Vec<Channel>,
    snap: Snapshot,
    pending: heapless::Vec<Sample, P>,
    pending_base: Option<u64>,
    send: BTreeMap<u64, SendState>,
    buf: Vec<u8>,
    stats: AppStats,
}

impl<F: NorFlash, const P: usize> App<F, P> {
    /// Replays the journal in `sectors` sectors at `base` of `flash` and
    /// persists the incremented boot counter.
    pub fn boot(
        flash: F,
        base: u32,
        sectors: u32,
        id: Identity,
        cfg: AppConfig,
        channels: Vec<Channel>,
    ) -> Res<Self, F> {
        if cfg.samples_per_frame == 0 || cfg.samples_per_frame > P {
            return Err(AppError::Config("samples_per_frame must be 1..=P"));
        }
        if cfg!(not(feature = "json-frames")) && cfg.encoding == Encoding::Json {
            return Err(AppError::Config(
                "JSON frames need the json-frames feature (images leave it out: serde_json is large)",
            ));
        }
        if channels.is_empty() || channels.len() > 255 {
            return Err(AppError::Config("1 to 255 channels"));
        }
        let mut journal = Journal::open(flash, base, sectors)?;
        let mut snap = *journal.snapshot();
        snap.boot = snap.boot.wrapping_add(1);
        journal.write_state(snap)?;
        Ok(Self {
            journal,
            id,
            cfg,
            channels,
            snap,
            pending: heapless::Vec::new(),
            pending_base: None,
            send: BTreeMap::new(),
            buf: Vec::new(),
            stats: AppStats::default(),
        })
    }

    /// Boot counter of this run.
    pub fn boot_count(&self) -> u32 {
        self.snap.boot
    }
    /// Next sequence number.
    pub fn next_seq(&self) -> u64 {
        self.snap.next_seq
    }
    /// Highest durable acked seq.
    pub fn acked_seq(&self) -> u64 {
        self.snap.acked_seq
    }
    /// Frames not yet acked.
    pub fn outbox_len(&self) -> usize {
        self.journal.frames().len()
    }
    /// Sequence numbers in the outbox, ascending.
    pub fn outbox_seqs(&self) -> impl Iterator<Item = u64> + '_ {
        self.journal.frames().iter().map(|f| f.seq)
    }
    /// Counters since boot.
    pub fn stats(&self) -> &AppStats {
        &self.stats
    }
    /// Persistent counter `i` (restored at boot).
    pub fn counter(&self, i: usize) -> u64 {
        self.snap.counters[i % N_COUNTERS]
    }
    /// Sets persistent counter `i`; it is written with the next record.
    pub fn set_counter(&mut self, i: usize, v: u64) {
        self.snap.counters[i % N_COUNTERS] = v;
    }
    /// The channel table frames carry.
    pub fn channels(&self) -> &[Channel] {
        &self.channels
    }
    /// Erase counts per journal sector.
    pub fn erase_counts(&self) -> impl Iterator<Item = u32> + '_ {
        self.journal.erase_counts()
    }

    /// Adds one sample (the sampling path: no allocation).
    pub fn record(
        &mut self,
        channel: u8,
        value: i64,
        quality: Quality,
        device_time_ms: u64,
    ) -> Res<(), F> {
        let base = *self.pending_base.get_or_insert(device_time_ms);
        let offset_ms = u32::try_from(device_time_ms.saturating_sub(base)).unwrap_or(u32::MAX);
        self.pending
            .push(Sample {
                channel,
                offset_ms,
                value,
                quality,
            })
            .map_err(|_| AppError::PendingFull)
    }

    /// True when enough samples are pending for a frame.
    pub fn ready(&self) -> bool {
        self.pending.len() >= self.cfg.samples_per_frame
    }

    fn drop_pending(&mut self) {
        self.stats.dropped_samples += self.pending.len() as u64;
        self.pending.clear();
        self.pending_base = None;
    }

    fn encode(&self, frame: &mut Frame) -> Vec<u8> {
        if let Some(k) = &self.id.key {
            sign_frame(frame, k);
        }
        match self.cfg.encoding {
            Encoding::Binary => binary::encode_frame(frame),
            #[cfg(feature = "json-frames")]
            Encoding::Json => json::encode_frame(frame),
            // Refused by `boot`.
            #[cfg(not(feature = "json-frames"))]
            Encoding::Json => binary::encode_frame(frame),
        }
    }

    /// Seals the pending samples into a durable frame; returns its seq, or
    /// `None` if nothing was pending or the samples had to be dropped
    /// because the outbox or the flash is full.
    pub fn seal(&mut self) -> Res<Option<u64>, F> {
        if self.pending.is_empty() {
            return Ok(None);
        }
        if self.outbox_len() >= self.cfg.max_outbox {
            self.drop_pending();
            return Ok(None);
        }
        let seq = self.snap.next_seq;
        let mut frame = Frame {
            site: self.id.site.clone(),
            device: self.id.device.clone(),
            seq,
            boot: self.snap.boot,
            firmware: self.id.firmware.clone(),
            base_time_ms: self.pending_base.filter(|_| self.cfg.has_wall_clock),
            channels: self.channels.clone(),
            samples: self.pending.iter().copied().collect(),
            signature: None,
        };
        let bytes = self.encode(&mut frame);
        if !self.journal.has_room_for_frame(bytes.len()) {
            self.drop_pending();
            return Ok(None);
        }
        let snap = Snapshot {
            next_seq: seq + 1,
            ..self.snap
        };
        self.journal.append_frame(snap, seq, seq, &bytes)?;
        self.snap = snap;
        self.pending.clear();
        self.pending_base = None;
        self.stats.produced += 1;
        Ok(Some(seq))
    }

    /// Writes the counters now (a periodic checkpoint between frames).
    pub fn checkpoint(&mut self) -> Res<(), F> {
        self.journal.write_state(self.snap)?;
        Ok(())
    }

    /// Changes the re-send timeout.
    pub fn set_ack_timeout(&mut self, ms: u64) {
        self.cfg.ack_timeout_ms = ms;
    }

    /// Marks every unacked frame as due (after a (re)connect).
    pub fn on_connected(&mut self) {
        for s in self.send.values_mut() {
            s.sent_at = None;
        }
    }

    /// Hands due frames to the uplink, oldest first; stops at the first
    /// refusal.
    pub fn service<U: Uplink>(&mut self, up: &mut U, now_ms: u64) -> Res<ServiceReport, F> {
        let mut rep = ServiceReport::default();
        // The outbox is sorted by seq: forget send state of frames that
        // left. No copy of the outbox: it may hold hundreds of frames and
        // the heap is small.
        let frames = self.journal.frames();
        self.send
            .retain(|seq, _| frames.binary_search_by_key(seq, |r| r.seq).is_ok());
        for i in 0..self.journal.frames().len() {
            let r = self.journal.frames()[i];
            let st = self.send.entry(r.seq).or_default();
            let due = match st.sent_at {
                None => true,
                Some(t) => now_ms.saturating_sub(t) >= self.cfg.ack_timeout_ms,
            };
            if !due {
                continue;
            }
            let again = st.ever;
            let mut buf = core::mem::take(&mut self.buf);
            self.journal.read_frame(&r, &mut buf)?;
            let ok = up.send(r.seq, &buf).is_ok();
            self.buf = buf;
            if !ok {
                rep.refused += 1;
                self.stats.refused += 1;
                break;
            }
            let st = self.send.entry(r.seq).or_default();
            st.sent_at = Some(now_ms);
            st.ever = true;
            if again {
                rep.resent += 1;
                self.stats.resent += 1;
            } else {
                rep.sent += 1;
                self.stats.sent += 1;
            }
        }
        Ok(rep)
    }

    /// Applies a gateway ack (durably). Returns the number of frames
    /// renumbered (after `SeqRegressed`).
    pub fn on_ack(&mut self, ack: Ack) -> Res<u64, F> {
        self.stats.acks += 1;
        self.stats.last_status = Some(ack.status);
        self.stats.highest_acked = self.stats.highest_acked.max(ack.acked_seq);
        // Only a renumbering needs the list of stale frames. An ordinary ack
        // allocates nothing: it typically arrives when the outbox (and the
        // heap) is at its fullest, e.g. one ack for 512 frames after an
        // outage, which ran the F411-sized heap out of memory when this
        // list was built for every ack.
        if ack.status == AckStatus::SeqRegressed {
            let stale: Vec<FrameRef> = self
                .journal
                .frames()
                .iter()
                .filter(|f| f.seq <= ack.acked_seq)
                .copied()
                .collect();
            if !stale.is_empty() {
                return self.renumber(ack.acked_seq, &stale);
            }
        }
        let mut snap = self.snap;
        snap.acked_seq = snap.acked_seq.max(ack.acked_seq);
        snap.next_seq = snap.next_seq.max(snap.acked_seq + 1);
        if snap != self.snap {
            self.journal.write_state(snap)?;
            self.snap = snap;
        }
        Ok(0)
    }

    fn renumber(&mut self, acked: u64, stale: &[FrameRef]) -> Res<u64, F> {
        let top = self
            .journal
            .frames()
            .iter()
            .map(|f| f.seq)
            .max()
            .unwrap_or(0);
        let mut seq = acked.max(top).max(self.snap.next_seq - 1);
        let mut buf = Vec::new();
        for r in stale {
            self.journal.read_frame(r, &mut buf)?;
            let decoded = match self.cfg.encoding {
                Encoding::Binary => binary::decode_frame_exact(&buf),
                #[cfg(feature = "json-frames")]
                Encoding::Json => json::decode_frame(&buf),
                #[cfg(not(feature = "json-frames"))]
                Encoding::Json => binary::decode_frame_exact(&buf),
            };
            let mut frame = decoded.map_err(|_| AppError::StoredFrame(r.seq))?;
            seq += 1;
            frame.seq = seq;
            let bytes = self.encode(&mut frame);
            // Until the state below is written, acked_seq stays as it was:
            // the origin field is what retires the old copy.
            let snap = Snapshot {
                next_seq: seq + 1,
                ..self.snap
            };
            self.journal.append_frame(snap, seq, r.seq, &bytes)?;
            self.snap = snap;
            self.send.remove(&r.seq);
        }
        let snap = Snapshot {
            acked_seq: self.snap.acked_seq.max(acked),
            ..self.snap
        };
        self.journal.write_state(snap)?;
        self.snap = snap;
        self.stats.renumbered += stale.len() as u64;
        Ok(stale.len() as u64)
    }

    /// The flash, e.g. to arm a simulated power cut.
    pub fn flash_mut(&mut self) -> &mut F {
        self.journal.flash_mut()
    }

    /// Stops the app and gives the flash back (a power cut, in the sim).
    pub fn into_flash(self) -> F {
        self.journal.into_flash()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::storage::ram_flash::RamFlash;
    use mrv_shared::ids::ChannelId;
    use mrv_shared::quantity::{Quantity, ValueKind};
    use mrv_shared::wire::signature::verify_frame;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    const SECTORS: u32 = 6;

    fn id() -> Identity {
        Identity {
            site: SiteId::new("site").unwrap(),
            device: DeviceId::new("pv-1").unwrap(),
            firmware: "test".into(),
            key: Some(SigningKey::from_bytes(&[3; 32])),
        }
    }

    fn cfg(spf: usize) -> AppConfig {
        AppConfig {
            samples_per_frame: spf,
            max_outbox: 64,
            ack_timeout_ms: 1000,
            encoding: Encoding::Binary,
            has_wall_clock: true,
        }
    }

    fn channels() -> Vec<Channel> {
        std::vec![Channel {
            id: ChannelId::new("energy").unwrap(),
            quantity: Quantity::Energy,
            kind: ValueKind::Counter,
        }]
    }

    fn boot(
        flash: RamFlash,
    ) -> Result<App<RamFlash, 16>, AppError<crate::storage::ram_flash::RamFlashError>> {
        App::boot(flash, 0, SECTORS, id(), cfg(2), channels())
    }

    /// An uplink that is a real, simple gateway model: it stores frames
    /// by seq (verifying the signature) and can refuse.
    #[derive(Default)]
    struct Gateway {
        stored: BTreeMap<u64, Frame>,
        received: Vec<u64>,
        refuse: bool,
    }
    impl Uplink for Gateway {
        type Error = ();
        fn send(&mut self, seq: u64, payload: &[u8]) -> Result<(), ()> {
            if self.refuse {
                return Err(());
            }
            let f = binary::decode_frame_exact(payload).unwrap();
            assert_eq!(f.seq, seq);
            verify_frame(&f, &SigningKey::from_bytes(&[3; 32]).verifying_key()).unwrap();
            self.received.push(seq);
            self.stored.insert(seq, f);
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

    #[test]
    fn frames_flow_and_boot_counter_and_counters_persist() {
        let mut app = boot(RamFlash::new(SECTORS as usize)).unwrap();
        assert_eq!(app.boot_count(), 1);
        let mut gw = Gateway::default();
        for i in 0..6u64 {
            app.set_counter(0, i * 7);
            app.record(0, (i * 7) as i64, Quality::GOOD, 1000 * i)
                .unwrap();
            if app.ready() {
                app.seal().unwrap();
            }
        }
        assert_eq!(app.outbox_len(), 3);
        let r = app.service(&mut gw, 0).unwrap();
        assert_eq!(r.sent, 3);
        app.on_ack(gw.ack()).unwrap();
        assert_eq!(app.outbox_len(), 0);
        let app = boot(app.into_flash()).unwrap();
        assert_eq!(app.boot_count(), 2);
        assert_eq!(app.next_seq(), 4);
        assert_eq!(app.acked_seq(), 3);
        assert_eq!(app.counter(0), 35);
        assert_eq!(gw.stored[&2].samples[1].offset_ms, 1000);
    }

    #[test]
    fn unacked_frames_are_resent_after_the_timeout_and_on_reconnect() {
        let mut app = boot(RamFlash::new(SECTORS as usize)).unwrap();
        let mut gw = Gateway::default();
        app.record(0, 1, Quality::GOOD, 0).unwrap();
        app.record(0, 2, Quality::GOOD, 1).unwrap();
        app.seal().unwrap();
        assert_eq!(app.service(&mut gw, 0).unwrap().sent, 1);
        assert_eq!(app.service(&mut gw, 999).unwrap(), ServiceReport::default());
        assert_eq!(app.service(&mut gw, 1000).unwrap().resent, 1);
        app.on_connected();
        assert_eq!(app.service(&mut gw, 1001).unwrap().resent, 1);
        gw.refuse = true;
        app.on_connected();
        assert_eq!(app.service(&mut gw, 1002).unwrap().refused, 1);
        assert_eq!(gw.received, [1, 1, 1]);
    }

    #[test]
    fn a_full_outbox_drops_new_samples_not_old_frames() {
        let mut app: App<RamFlash, 16> = App::boot(
            RamFlash::new(SECTORS as usize),
            0,
            SECTORS,
            id(),
            AppConfig {
                max_outbox: 2,
                ..cfg(1)
            },
            channels(),
        )
        .unwrap();
        for i in 0..4 {
            app.record(0, i, Quality::GOOD, 0).unwrap();
            app.seal().unwrap();
        }
        assert_eq!(app.outbox_seqs().collect::<Vec<_>>(), [1, 2]);
        assert_eq!(app.stats().dropped_samples, 2);
        assert_eq!(app.next_seq(), 3);
    }

    #[test]
    fn seq_regressed_renumbers_after_the_gateway_seq() {
        let mut app = boot(RamFlash::new(SECTORS as usize)).unwrap();
        for i in 0..4 {
            app.record(0, i, Quality::GOOD, 0).unwrap();
            if app.ready() {
                app.seal().unwrap();
            }
        }
        let n = app
            .on_ack(Ack {
                acked_seq: 50,
                status: AckStatus::SeqRegressed,
            })
            .unwrap();
        assert_eq!(n, 2);
        assert_eq!(app.outbox_seqs().collect::<Vec<_>>(), [51, 52]);
        assert_eq!(app.next_seq(), 53);
        let app = boot(app.into_flash()).unwrap();
        assert_eq!(app.outbox_seqs().collect::<Vec<_>>(), [51, 52]);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Sample(i64),
        Service,
        Ack,
        Reconnect,
        Wait(u16),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0i64..1000).prop_map(Op::Sample),
            2 => Just(Op::Service),
            2 => Just(Op::Ack),
            1 => Just(Op::Reconnect),
            1 => (0u16..3000).prop_map(Op::Wait),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// The application against a gateway model and a flash that loses
        /// power at random points (and reboots): no frame is lost, none is
        /// duplicated under two seqs, seqs are gap-free, boots count up.
        #[test]
        fn power_cuts_lose_no_frame_and_duplicate_none(
            ops in proptest::collection::vec(op(), 1..150),
            cuts in proptest::collection::vec(0usize..4000, 0..4),
        ) {
            let mut flash = RamFlash::new(SECTORS as usize);
            let mut gw = Gateway::default();
            let mut now = 0u64;
            let mut cuts = cuts.into_iter();
            let mut boots = 0u32;
            let mut sealed_values: BTreeMap<u64, Vec<i64>> = BTreeMap::new();
            flash.power_on();
            let mut app = boot(flash).unwrap();
            boots += 1;
            prop_assert_eq!(app.boot_count(), boots);
            let mut armed = false;
            for op in ops {
                if !armed && let Some(c) = cuts.next() {
                    // Arm the next cut at a random distance.
                    app.flash_mut().cut_power_after(c);
                    armed = true;
                }
                let r: Result<(), AppError<_>> = (|| {
                    match op {
                        Op::Sample(v) => {
                            app.record(0, v, Quality::GOOD, now)?;
                            if app.ready() {
                                let vals: Vec<i64> = app.pending.iter().map(|s| s.value).collect();
                                if let Some(seq) = app.seal()? {
                                    sealed_values.insert(seq, vals);
                                }
                            }
                        }
                        Op::Service => { app.service(&mut gw, now)?; }
                        Op::Ack => { app.on_ack(gw.ack())?; }
                        Op::Reconnect => app.on_connected(),
                        Op::Wait(ms) => now += u64::from(ms),
                    }
                    Ok(())
                })();
                if r.is_err() {
                    // Power cut: reboot from what the flash holds.
                    let mut f = app.into_flash();
                    prop_assert!(f.is_dead());
                    f.power_on();
                    app = boot(f).map_err(|e| TestCaseError::fail(alloc::format!("{e:?}")))?;
                    boots += 1;
                    armed = false;
                    prop_assert_eq!(app.boot_count(), boots);
                }
            }
            // Drain: power stays on, deliver everything.
            let mut f = app.into_flash();
            f.power_on();
            let mut app = boot(f).unwrap();
            for _ in 0..200 {
                app.on_connected();
                app.service(&mut gw, now).unwrap();
                app.on_ack(gw.ack()).unwrap();
                if app.outbox_len() == 0 { break; }
            }
            prop_assert_eq!(app.outbox_len(), 0);
            // Gap-free 1..=n at the gateway, every durable frame delivered
            // with its own samples, no two seqs carrying the same samples
            // twice from one seal.
            let seqs: Vec<u64> = gw.stored.keys().copied().collect();
            let n = seqs.len() as u64;
            prop_assert_eq!(seqs, (1..=n).collect::<Vec<_>>());
            prop_assert_eq!(app.next_seq(), n + 1);
            for (seq, vals) in &sealed_values {
                // A seal whose frame was torn never returned Some; every
                // Some(seq) must be stored with exactly these values.
                let got: Vec<i64> = gw.stored[seq].samples.iter().map(|s| s.value).collect();
                prop_assert_eq!(&got, vals);
            }
            let boots_seen: BTreeSet<u32> = gw.stored.values().map(|f| f.boot).collect();
            prop_assert!(boots_seen.iter().all(|b| *b <= boots + 1));
        }
    }
}
