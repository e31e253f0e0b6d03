//! Simulated Modbus TCP meters (feature `sim`): a PV inverter with a
//! SunSpec map ([`sunspec_inverter`]) and a DIN-rail energy meter with
//! IEEE 754 float input registers ([`din_meter`]), served by a tokio-modbus
//! TCP server.
//!
//! Use [`serve`] with a bound listener (tests bind `127.0.0.1:0`); the
//! returned [`MeterHandle`] knows the address, lets a test inject faults
//! (answer slowly, stop answering) and stops the server when dropped.
//!
//! Server behaviour (what a gateway will meet):
//! - only the configured unit id is served; other unit ids get exception
//!   0x0B (gateway target device failed to respond), as a TCP gateway does;
//! - reads of unmapped registers get exception 0x02 (illegal data address);
//!   more than 125 registers, exception 0x03; writes, exception 0x01;
//! - values are computed at each request from the simulation clock, so
//!   counters only ever grow and a faster-than-real clock can be used.

pub mod din_meter;
pub mod sunspec_inverter;

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_modbus::server::tcp::Server;
use tokio_modbus::{ExceptionCode, Request, Response, SlaveRequest};

/// Simulation time: wall time since start, sped up, from a start time.
#[derive(Debug, Clone, Copy)]
pub struct SimClock {
    /// Simulated Unix time (ms) at start.
    pub start_unix_ms: u64,
    /// Simulated seconds per real second.
    pub speedup: f64,
    started: Instant,
}

impl SimClock {
    /// A clock starting at `start_unix_ms`, running `speedup` times real time.
    pub fn new(start_unix_ms: u64, speedup: f64) -> Self {
        SimClock {
            start_unix_ms,
            speedup,
            started: Instant::now(),
        }
    }

    /// A real-time clock starting now.
    pub fn real_time() -> Self {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        SimClock::new(now, 1.0)
    }

    /// Simulated Unix time, seconds.
    pub fn now_s(&self) -> f64 {
        self.start_unix_ms as f64 / 1000.0 + self.started.elapsed().as_secs_f64() * self.speedup
    }
}

/// Which meter to simulate.
#[derive(Debug, Clone)]
pub enum SimMeter {
    /// A SunSpec PV inverter.
    SunSpecInverter(sunspec_inverter::InverterParams),
    /// A DIN-rail energy meter.
    DinMeter(din_meter::DinMeterParams),
}

/// The registers of a simulated device at one instant.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegisterBank {
    /// Holding registers.
    pub holding: BTreeMap<u16, u16>,
    /// Input registers.
    pub input: BTreeMap<u16, u16>,
}

impl RegisterBank {
    /// Writes consecutive words starting at `addr` into `table`.
    pub fn put(table: &mut BTreeMap<u16, u16>, addr: u16, words: &[u16]) {
        for (i, w) in words.iter().enumerate() {
            table.insert(addr + i as u16, *w);
        }
    }
}

/// A meter model: updates its physics and lays out its registers.
trait Model: Send {
    fn update(&mut self, now_s: f64, bank: &mut RegisterBank);
}

/// Injected faults.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Faults {
    /// Answer every request this much later.
    pub delay: Option<Duration>,
    /// Do not answer at all (the client times out).
    pub silent: bool,
}

struct Shared {
    model: Box<dyn Model>,
    bank: RegisterBank,
    clock: SimClock,
    unit: u8,
    faults: Faults,
    requests: u64,
}

/// A running simulated meter.
#[derive(Debug)]
pub struct MeterHandle {
    /// Where it listens.
    pub addr: SocketAddr,
    shared: Arc<Mutex<Shared>>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("unit", &self.unit)
            .finish_non_exhaustive()
    }
}

impl MeterHandle {
    /// Sets the injected faults.
    pub fn set_faults(&self, faults: Faults) {
        lock(&self.shared).faults = faults;
    }

    /// Requests served so far (answered or not).
    pub fn requests(&self) -> u64 {
        lock(&self.shared).requests
    }

    /// The registers as of the last request.
    pub fn bank(&self) -> RegisterBank {
        lock(&self.shared).bank.clone()
    }

    /// Stops the server.
    pub fn stop(self) {
        self.task.abort();
    }
}

impl Drop for MeterHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn lock(m: &Mutex<Shared>) -> std::sync::MutexGuard<'_, Shared> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[derive(Clone)]
struct MeterService {
    shared: Arc<Mutex<Shared>>,
}

type Answer = Result<Option<Response>, ExceptionCode>;

fn read(table: &BTreeMap<u16, u16>, addr: u16, count: u16) -> Result<Vec<u16>, ExceptionCode> {
    if count == 0 || count > 125 {
        return Err(ExceptionCode::IllegalDataValue);
    }
    (0..count)
        .map(|i| {
            addr.checked_add(i)
                .and_then(|a| table.get(&a).copied())
                .ok_or(ExceptionCode::IllegalDataAddress)
        })
        .collect()
}

/// Answers one request against the current bank. Pure given the bank.
fn answer(bank: &RegisterBank, req: &Request<'_>) -> Result<Response, ExceptionCode> {
    match req {
        Request::ReadHoldingRegisters(a, n) => {
            read(&bank.holding, *a, *n).map(Response::ReadHoldingRegisters)
        }
        Request::ReadInputRegisters(a, n) => {
            read(&bank.input, *a, *n).map(Response::ReadInputRegisters)
        }
        _ => Err(ExceptionCode::IllegalFunction),
    }
}

impl tokio_modbus::server::Service for MeterService {
    type Request = SlaveRequest<'static>;
    type Response = Option<Response>;
    type Exception = ExceptionCode;
    type Future = Pin<Box<dyn Future<Output = Answer> + Send>>;

    fn call(&self, req: Self::Request) -> Self::Future {
        let shared = Arc::clone(&self.shared);
        Box::pin(async move {
            let (faults, result) = {
                let mut s = lock(&shared);
                s.requests += 1;
                let faults = s.faults;
                let result = if req.slave != s.unit {
                    Err(ExceptionCode::GatewayTargetDevice)
                } else {
                    let now = s.clock.now_s();
                    let Shared { model, bank, .. } = &mut *s;
                    model.update(now, bank);
                    answer(bank, &req.request)
                };
                (faults, result)
            };
            if faults.silent {
                return Ok(None);
            }
            if let Some(d) = faults.delay {
                tokio::time::sleep(d).await;
            }
            result.map(Some)
        })
    }
}

/// Serves `meter` as unit `unit` on `listener` until the handle is dropped.
pub fn serve(
    listener: TcpListener,
    meter: SimMeter,
    unit: u8,
    clock: SimClock,
) -> std::io::Result<MeterHandle> {
    let addr = listener.local_addr()?;
    let model: Box<dyn Model> = match meter {
        SimMeter::SunSpecInverter(p) => Box::new(sunspec_inverter::Inverter::new(p)),
        SimMeter::DinMeter(p) => Box::new(din_meter::DinMeter::new(p)),
    };
    let mut shared = Shared {
        model,
        bank: RegisterBank::default(),
        clock,
        unit,
        faults: Faults::default(),
        requests: 0,
    };
    let now = shared.clock.now_s();
    let Shared { model, bank, .. } = &mut shared;
    model.update(now, bank);
    let shared = Arc::new(Mutex::new(shared));
    let service = MeterService {
        shared: Arc::clone(&shared),
    };
    let task = tokio::spawn(async move {
        let server = Server::new(listener);
        let on_connected = |stream, _addr| {
            let svc = service.clone();
            async move { Ok(Some((svc, stream))) }
        };
        if let Err(e) = server.serve(&on_connected, |_err| {}).await {
            tracing::warn!("simulated meter on {addr} stopped: {e}");
        }
    });
    Ok(MeterHandle { addr, shared, task })
}

/// Irradiance factor 0..=1 at simulated Unix time `t_s` (UTC solar day,
/// sunrise 06:00, sunset 18:00), times a cloud factor in 0.3..=1 that
/// changes smoothly over minutes (deterministic for a given `seed`).
pub fn solar_factor(t_s: f64, seed: u64) -> f64 {
    let day_s = t_s.rem_euclid(86_400.0);
    let h = day_s / 3600.0;
    let sun = if (6.0..18.0).contains(&h) {
        (std::f64::consts::PI * (h - 6.0) / 12.0).sin()
    } else {
        0.0
    };
    sun * cloud_factor(t_s, seed)
}

/// Smooth value noise in 0.3..=1 with a 5-minute correlation time.
fn cloud_factor(t_s: f64, seed: u64) -> f64 {
    let x = t_s / 300.0;
    let i = x.floor();
    let f = x - i;
    let hash = |k: f64| -> f64 {
        let mut z = (k as i64 as u64) ^ seed.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    };
    let s = f * f * (3.0 - 2.0 * f);
    let n = hash(i) * (1.0 - s) + hash(i + 1.0) * s;
    // Mostly clear sky, sometimes a cloud.
    if n < 0.7 {
        1.0
    } else {
        1.0 - (n - 0.7) / 0.3 * 0.7
    }
}

/// Words of an ASCII string padded with NULs to `regs` registers.
pub fn string_words(s: &str, regs: usize) -> Vec<u16> {
    let mut b = s.as_bytes().to_vec();
    b.resize(regs * 2, 0);
    b.chunks(2)
        .map(|c| u16::from_be_bytes([c[0], c[1]]))
        .collect()
}

/// Words of an f32, big-endian (ABCD).
pub fn f32_words(x: f32) -> [u16; 2] {
    let b = x.to_bits();
    [(b >> 16) as u16, b as u16]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sun_rises_at_six_and_peaks_at_noon() {
        assert_eq!(solar_factor(3.0 * 3600.0, 1), 0.0);
        let noon = solar_factor(12.0 * 3600.0, 1);
        assert!(noon > 0.2 && noon <= 1.0, "{noon}");
        for t in 0..1000 {
            let f = solar_factor(f64::from(t) * 97.0, 7);
            assert!((0.0..=1.0).contains(&f));
        }
    }

    #[test]
    fn reads_of_holes_and_oversized_reads_are_exceptions() {
        let mut bank = RegisterBank::default();
        RegisterBank::put(&mut bank.holding, 10, &[1, 2, 3]);
        assert_eq!(
            answer(&bank, &Request::ReadHoldingRegisters(10, 3)),
            Ok(Response::ReadHoldingRegisters(vec![1, 2, 3]))
        );
        assert_eq!(
            answer(&bank, &Request::ReadHoldingRegisters(10, 4)),
            Err(ExceptionCode::IllegalDataAddress)
        );
        assert_eq!(
            answer(&bank, &Request::ReadHoldingRegisters(10, 126)),
            Err(ExceptionCode::IllegalDataValue)
        );
        assert_eq!(
            answer(&bank, &Request::ReadCoils(0, 1)),
            Err(ExceptionCode::IllegalFunction)
        );
    }
}
