//! Host simulator: many devices, simulated hardware, a real MQTT broker.
//!
//! [`start`] spawns one task per [`SimDevice`] on the current tokio runtime.
//! Each task owns one MQTT client (client id = device id) and one
//! [`node::SimNode`]: the firmware application ([`crate::app::App`]) with
//! its flash journal on a simulated NOR flash, reading simulated hardware
//! ([`hardware`]) through the real drivers, driven by physical models
//! ([`physics`]). Reboots and power cuts restart the application from its
//! flash, as on a board.
//!
//! Protocol (see `mrv_shared::wire`): each frame is published QoS 1 on
//! `mrv/<site>/<device>/up`; the device subscribes QoS 1 to
//! `mrv/<site>/<device>/ack`. An [`Ack`] drops frames with
//! `seq <= acked_seq`; `BufferFull` keeps the rest for a later retry;
//! `SeqRegressed` renumbers the outbox after `acked_seq`. Everything unacked
//! is re-sent after every (re)connect and after `ack_timeout`.
//!
//! Invariants: per device, sequence numbers are 1, 2, 3, ... without gaps
//! (across reboots); a frame leaves the outbox only through an ack; when the
//! outbox holds `max_outbox` frames the device keeps sampling but drops the
//! samples instead of sealing new frames, and counts them
//! ([`DeviceStats::samples_dropped`]).

mod device_task;
pub mod hardware;
pub mod node;
pub mod physics;

use mrv_shared::ids::{DeviceId, SiteId};
use mrv_shared::wire::AckStatus;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use mrv_shared::wire::Ack;

/// Everything a simulator run needs.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// MQTT broker host (a name or an address; tests use 127.0.0.1).
    pub broker_host: String,
    /// MQTT broker port.
    pub broker_port: u16,
    /// MQTT username and password, if the broker wants them.
    pub credentials: Option<(String, String)>,
    /// The site all devices belong to.
    pub site: SiteId,
    /// The devices to simulate.
    pub devices: Vec<SimDevice>,
    /// How often each device samples all its channels.
    pub sample_interval: Duration,
    /// Samples batched per frame (1 = one sample per message). A device
    /// with several channels takes one sample per channel each interval,
    /// so a frame seals once it holds at least this many samples.
    pub samples_per_frame: usize,
    /// Re-send unacked frames after this long without an ack.
    pub ack_timeout: Duration,
    /// Frames kept unacked before the device stops sealing new frames.
    pub max_outbox: usize,
    /// Encoding of the frames on the wire.
    pub format: WireFormat,
    /// Per device, stop producing after this many frames.
    pub max_frames: Option<u64>,
}

/// One simulated device.
#[derive(Debug, Clone)]
pub struct SimDevice {
    /// Device id (also its MQTT client id).
    pub id: DeviceId,
    /// What it measures.
    pub kind: DeviceKind,
    /// Ed25519 secret key bytes; `None` sends unsigned frames.
    pub signing_key: Option<[u8; 32]>,
    /// Faults at start (change them later with [`SimHandle::set_faults`]).
    pub faults: Faults,
}

/// What a simulated device measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeviceKind {
    /// PV plant energy meter (S0 pulses): `energy` (Wh counter), `power` (mW, the mean over the sample interval).
    SolarMeter,
    /// Solar irrigation pump: `energy` (Wh counter), `water` (mL counter),
    /// `run` (status).
    IrrigationPump,
    /// Biogas digester: `gas` (mL counter), `ch4` (0.01 vol%), `flame` (status).
    Digester,
    /// Paddy field tube: `level` (mm, negative below the soil surface).
    PaddyWaterLevel,
}

impl DeviceKind {
    /// Every kind, for round-robin device mixes.
    pub const ALL: [DeviceKind; 4] = [
        DeviceKind::SolarMeter,
        DeviceKind::IrrigationPump,
        DeviceKind::Digester,
        DeviceKind::PaddyWaterLevel,
    ];
}

/// Frame encoding on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum WireFormat {
    /// The compact binary form (`mrv_shared::wire::binary`).
    #[default]
    Binary,
    /// The JSON form (`mrv_shared::wire::json`).
    Json,
}

/// Faults a device shows; all off by default.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Faults {
    /// The sensors are unplugged, as the drivers see it: S0 meters stop
    /// pulsing (their counters freeze, which no device can detect),
    /// contacts read inactive, the biogas analyser is silent (`ch4`
    /// `UNAVAILABLE`), the level probe reads an open loop (value 0,
    /// `OUT_OF_RANGE | UNAVAILABLE`).
    pub unplugged: bool,
    /// Electrical noise, 0..1: glitches on the S0 and contact lines
    /// (removed by the debouncer), current noise on the 4-20 mA loop
    /// (`noise * 16 mA`), garbage bytes on the analyser UART (skipped by
    /// the frame parser, or costing a reading: `ch4` `UNAVAILABLE`).
    pub noise: f64,
    /// Power cut and reboot after every this many frames produced. The
    /// cut hits while the device writes a counter checkpoint to flash (the
    /// write may be torn at a random byte); pending samples are lost, the
    /// MQTT session drops, the application restarts from its flash journal
    /// with boot + 1; sequence numbers, counters and the outbox survive.
    pub reboot_every_frames: Option<u64>,
    /// Device clock error added to every timestamp, ms.
    pub clock_skew_ms: i64,
    /// Publish a garbage payload on the up topic after every this many frames.
    pub garbage_every_frames: Option<u64>,
    /// The device is switched off: power is cut at once (pending samples in
    /// RAM are lost, as in [`Faults::reboot_every_frames`]), its MQTT
    /// session drops, and it takes no samples while this stays set. When it
    /// is cleared the device boots from its flash (boot + 1) and re-sends
    /// its outbox; the time it was off is missing from its series, which is
    /// what a gap in a report looks like.
    pub powered_off: bool,
}

/// Why the simulator did not start.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The configuration is unusable.
    #[error("invalid simulator config: {0}")]
    Config(String),
}

/// Counters of one device (or, summed, of all devices).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceStats {
    /// Frames sealed (each got a new sequence number).
    pub frames_produced: u64,
    /// First transmissions of frames.
    pub frames_sent: u64,
    /// Re-transmissions (after reconnect, timeout, BufferFull).
    pub frames_resent: u64,
    /// Highest `acked_seq` seen (for totals: the sum over devices).
    pub highest_acked_seq: u64,
    /// Frames in the outbox, not yet acked.
    pub outbox_len: u64,
    /// Status of the last ack received (totals: `None`).
    pub last_ack_status: Option<AckStatus>,
    /// Acks received.
    pub acks_received: u64,
    /// Samples taken but dropped because the outbox was full.
    pub samples_dropped: u64,
    /// Boots (1 after start; +1 per simulated power cut).
    pub boots: u64,
    /// Garbage payloads published (fault injection).
    pub garbage_sent: u64,
    /// Publishes refused by the local MQTT client queue (retried later).
    pub publish_refused: u64,
    /// Frames renumbered after a `SeqRegressed` ack.
    pub frames_renumbered: u64,
    /// Next sequence number the device will use.
    pub next_seq: u64,
    /// Whether the device currently has an MQTT session (totals: count).
    pub connected: u64,
    /// Times the device was switched off ([`Faults::powered_off`]).
    pub power_offs: u64,
}

/// A snapshot of the whole simulator.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SimStats {
    /// Sums over all devices.
    pub totals: DeviceStats,
    /// Per device.
    pub devices: BTreeMap<DeviceId, DeviceStats>,
}

/// State shared between the device tasks and the handle.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) stats: Mutex<BTreeMap<DeviceId, DeviceStats>>,
    /// Bumped after every stats change that may matter to a waiter.
    pub(crate) version: watch::Sender<u64>,
    pub(crate) max_frames: Option<u64>,
}

impl Shared {
    pub(crate) fn update(&self, device: &DeviceId, f: impl FnOnce(&mut DeviceStats)) {
        {
            let mut map = self.stats.lock().expect("stats lock is never poisoned");
            f(map.entry(device.clone()).or_default());
        }
        self.version.send_modify(|v| *v = v.wrapping_add(1));
    }

    fn all_acked(&self) -> bool {
        let map = self.stats.lock().expect("stats lock is never poisoned");
        map.values().all(|s| {
            s.outbox_len == 0 && self.max_frames.is_none_or(|max| s.frames_produced >= max)
        })
    }
}

/// A running simulator.
#[derive(Debug)]
pub struct SimHandle {
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    faults: BTreeMap<DeviceId, watch::Sender<Faults>>,
    tasks: Vec<JoinHandle<()>>,
}

/// Validates `cfg` and spawns one task per device on the current tokio
/// runtime. Does not wait for the broker: devices connect (and reconnect)
/// on their own and keep sampling into their outboxes meanwhile.
pub async fn start(cfg: SimConfig) -> Result<SimHandle, SimError> {
    validate(&cfg)?;
    let stats = cfg
        .devices
        .iter()
        .map(|d| (d.id.clone(), DeviceStats::default()))
        .collect();
    let shared = Arc::new(Shared {
        stats: Mutex::new(stats),
        version: watch::channel(0).0,
        max_frames: cfg.max_frames,
    });
    let (stop, stop_rx) = watch::channel(false);
    let cfg = Arc::new(cfg);
    let mut faults = BTreeMap::new();
    let mut tasks = Vec::new();
    for (index, dev) in cfg.devices.iter().enumerate() {
        let (ftx, frx) = watch::channel(dev.faults.clone());
        faults.insert(dev.id.clone(), ftx);
        tasks.push(tokio::spawn(device_task::run(
            cfg.clone(),
            index,
            shared.clone(),
            frx,
            stop_rx.clone(),
        )));
    }
    Ok(SimHandle {
        shared,
        stop,
        faults,
        tasks,
    })
}

fn validate(cfg: &SimConfig) -> Result<(), SimError> {
    let bad = |s: &str| Err(SimError::Config(s.into()));
    if cfg.devices.is_empty() {
        return bad("no devices");
    }
    let mut ids: Vec<_> = cfg.devices.iter().map(|d| &d.id).collect();
    ids.sort();
    ids.dedup();
    if ids.len() != cfg.devices.len() {
        return bad("device ids must be unique");
    }
    if cfg.samples_per_frame == 0 || cfg.samples_per_frame > node::SIM_MAX_SAMPLES_PER_FRAME {
        return bad("samples_per_frame must be 1 to 1024");
    }
    // A frame (plus its journal record) must fit in one flash sector.
    let max_frame = node::estimated_frame_bytes(cfg.format, cfg.samples_per_frame + 2);
    if max_frame + 100 > node::SIM_SECTOR || max_frame > mrv_shared::wire::MAX_FRAME_BYTES {
        return bad(
            "frames this large do not fit the simulated flash (JSON: at most ~240 samples per frame)",
        );
    }
    if cfg.max_outbox == 0 {
        return bad("max_outbox must be at least 1");
    }
    if cfg.sample_interval.is_zero() || cfg.ack_timeout.is_zero() {
        return bad("sample_interval and ack_timeout must be above zero");
    }
    Ok(())
}

impl SimHandle {
    /// Totals and per-device counters, as of now.
    pub fn stats(&self) -> SimStats {
        let map = self
            .shared
            .stats
            .lock()
            .expect("stats lock is never poisoned")
            .clone();
        let mut totals = DeviceStats::default();
        for s in map.values() {
            totals.frames_produced += s.frames_produced;
            totals.frames_sent += s.frames_sent;
            totals.frames_resent += s.frames_resent;
            totals.highest_acked_seq += s.highest_acked_seq;
            totals.outbox_len += s.outbox_len;
            totals.acks_received += s.acks_received;
            totals.samples_dropped += s.samples_dropped;
            totals.boots += s.boots;
            totals.garbage_sent += s.garbage_sent;
            totals.publish_refused += s.publish_refused;
            totals.frames_renumbered += s.frames_renumbered;
            totals.next_seq += s.next_seq;
            totals.connected += s.connected;
            totals.power_offs += s.power_offs;
        }
        SimStats {
            totals,
            devices: map,
        }
    }

    /// Waits until every produced frame is acked (and, with `max_frames`,
    /// every device has produced all its frames). Wakes on stats changes,
    /// no polling. Returns false on timeout. Without `max_frames` it is
    /// true whenever all outboxes are empty (also before the first frame).
    pub async fn wait_all_acked(&self, timeout: Duration) -> bool {
        let mut rx = self.shared.version.subscribe();
        let wait = async {
            loop {
                if self.shared.all_acked() {
                    return;
                }
                if rx.changed().await.is_err() {
                    return;
                }
            }
        };
        tokio::time::timeout(timeout, wait).await.is_ok() && self.shared.all_acked()
    }

    /// Waits until `pred` holds for the stats (checked after every stats
    /// change, no polling). Returns false on timeout.
    pub async fn wait_for(&self, timeout: Duration, pred: impl Fn(&SimStats) -> bool) -> bool {
        let mut rx = self.shared.version.subscribe();
        let wait = async {
            loop {
                if pred(&self.stats()) {
                    return true;
                }
                if rx.changed().await.is_err() {
                    return pred(&self.stats());
                }
            }
        };
        tokio::time::timeout(timeout, wait).await.unwrap_or(false)
    }

    /// Highest `acked_seq` each device has seen.
    pub fn acked_seqs(&self) -> BTreeMap<DeviceId, u64> {
        self.shared
            .stats
            .lock()
            .expect("stats lock is never poisoned")
            .iter()
            .map(|(d, s)| (d.clone(), s.highest_acked_seq))
            .collect()
    }

    /// Changes a device's faults while it runs. Returns false for an
    /// unknown device.
    pub fn set_faults(&self, device: &DeviceId, faults: Faults) -> bool {
        match self.faults.get(device) {
            Some(tx) => {
                tx.send_replace(faults);
                true
            }
            None => false,
        }
    }

    /// Stops every device (disconnecting from the broker) and waits for
    /// their tasks to end.
    pub async fn stop(self) {
        self.stop.send_replace(true);
        for t in self.tasks {
            // A task that panicked already reported it; nothing to recover.
            let _ = t.await;
        }
    }
}

/// Derives a device's 32-byte Ed25519 secret key from a seed text and its
/// id: `SHA-256(seed || 0x00 || device id)`. For demos and tests, so that a
/// gateway config can list the matching public keys; never for production.
pub fn derive_signing_key(seed: &str, device: &DeviceId) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(seed.as_bytes());
    h.update([0u8]);
    h.update(device.as_str().as_bytes());
    h.finalize().into()
}

/// The public key (32 bytes) that goes with a secret key from
/// [`derive_signing_key`] or [`SimDevice::signing_key`].
pub fn verifying_key_bytes(secret: &[u8; 32]) -> [u8; 32] {
    ed25519_dalek::SigningKey::from_bytes(secret)
        .verifying_key()
        .to_bytes()
}
