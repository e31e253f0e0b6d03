//! One task per RS-485 bus (Modbus RTU): the bus is a shared half-duplex
//! medium, so its devices are polled one request at a time, in schedule
//! order, with the required silence between frames.
//!
//! Invariants:
//! - at most one request is on the wire at a time, and a new request starts
//!   no sooner than [`ValidBus::inter_frame_delay`] after the end of the
//!   previous exchange (3.5 character times by default);
//! - each device has its own unit id, timeout, retries and interval
//!   ([`Schedule`] staggers equal intervals across the bus);
//! - a dead device costs the bus at most `(retries + 1) * timeout` per poll
//!   (the rest of its poll is skipped, see `poll::execute`), never the
//!   others' polls: they keep their grid slots (missed slots are skipped,
//!   not burst);
//! - if the serial port cannot be opened (unplugged adapter), every due
//!   device yields an all-unavailable frame and the port is reopened with
//!   backoff.

use super::config::{Parity, ValidBus, ValidDevice};
use super::planner::ReadRequest;
use super::poll::DevicePoller;
use super::schedule::Schedule;
use super::tcp_task::{Backoff, Sinks};
use super::transport::{ModbusReader, ReadError, RegisterReader};
use mrv_shared::ids::SiteId;
use std::time::Duration;
use tokio::time::Instant;
use tokio_modbus::Slave;
use tokio_serial::SerialPortBuilderExt;

/// Opens the bus's serial port as a Modbus RTU client.
pub fn open(bus: &ValidBus, timeout: Duration) -> Result<ModbusReader, ReadError> {
    let parity = match bus.parity {
        Parity::None => tokio_serial::Parity::None,
        Parity::Even => tokio_serial::Parity::Even,
        Parity::Odd => tokio_serial::Parity::Odd,
    };
    let stop_bits = if bus.stop_bits == 2 {
        tokio_serial::StopBits::Two
    } else {
        tokio_serial::StopBits::One
    };
    let data_bits = if bus.data_bits == 7 {
        tokio_serial::DataBits::Seven
    } else {
        tokio_serial::DataBits::Eight
    };
    let port = tokio_serial::new(bus.path.to_string_lossy(), bus.baud)
        .parity(parity)
        .stop_bits(stop_bits)
        .data_bits(data_bits)
        .open_native_async()
        .map_err(|e| {
            ReadError::Unreachable(format!(
                "cannot open serial port {}: {e}",
                bus.path.display()
            ))
        })?;
    let ctx = tokio_modbus::client::rtu::attach_slave(port, Slave(1));
    Ok(ModbusReader::new(ctx, timeout))
}

/// The bus link as one device sees it: addresses the device's unit, waits
/// the inter-frame silence, reopens the port after I/O faults.
#[derive(Debug)]
struct BusReader<'a> {
    bus: &'a ValidBus,
    port: &'a mut Option<ModbusReader>,
    backoff: &'a mut Backoff,
    last_exchange: &'a mut Option<Instant>,
    epoch: Instant,
    unit: u8,
    timeout: Duration,
}

impl RegisterReader for BusReader<'_> {
    async fn read(&mut self, req: ReadRequest) -> Result<Vec<u16>, ReadError> {
        if self.port.is_none() {
            let now = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
            if !self.backoff.may_try(now) {
                return Err(ReadError::Unreachable(format!(
                    "serial port {} unavailable; reopening with backoff",
                    self.bus.path.display(),
                )));
            }
            match open(self.bus, self.timeout) {
                Ok(p) => {
                    self.backoff.succeeded();
                    *self.port = Some(p);
                }
                Err(e) => {
                    self.backoff.failed(now);
                    return Err(e);
                }
            }
        }
        if let Some(t) = *self.last_exchange {
            tokio::time::sleep_until(t + self.bus.inter_frame_delay).await;
        }
        let port = self.port.as_mut().expect("opened above");
        port.set_unit(self.unit);
        port.set_timeout(self.timeout);
        let r = port.read(req).await;
        *self.last_exchange = Some(Instant::now());
        if let Err(ReadError::Link(_)) = &r {
            // An I/O or framing fault: reopen the port (this also discards
            // whatever garbage is in the receive buffer).
            *self.port = None;
        }
        r
    }
}

/// Runs one bus and its devices until the writer closes.
pub async fn run(site: SiteId, bus: ValidBus, devices: Vec<ValidDevice>, sinks: Sinks) {
    if devices.is_empty() {
        return;
    }
    let intervals: Vec<u64> = devices
        .iter()
        .map(|d| u64::try_from(d.poll_interval.as_millis()).unwrap_or(u64::MAX))
        .collect();
    let mut schedule = Schedule::new(&intervals, 0);
    let mut pollers: Vec<DevicePoller> = devices
        .into_iter()
        .map(|d| DevicePoller::new(site.clone(), d))
        .collect();
    let mut port: Option<ModbusReader> = None;
    // Reopen the port at the latest every half of the shortest interval.
    let mut backoff = Backoff::with_ceiling(intervals.iter().min().copied().unwrap_or(1000) / 2);
    let mut last_exchange: Option<Instant> = None;
    let epoch = Instant::now();
    let elapsed = || u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
    loop {
        let (idx, due) = schedule.next().expect("at least one device");
        tokio::time::sleep_until(epoch + Duration::from_millis(due)).await;
        let poller = &mut pollers[idx];
        let now_ms = sinks.clock.now_ms();
        let mut reader = BusReader {
            bus: &bus,
            port: &mut port,
            backoff: &mut backoff,
            last_exchange: &mut last_exchange,
            epoch,
            unit: poller.device().unit,
            timeout: poller.device().timeout,
        };
        let out = poller.poll(&mut reader, now_ms, &sinks.status).await;
        if !sinks.deliver(out, now_ms).await {
            return;
        }
        schedule.completed(idx, elapsed());
    }
}
