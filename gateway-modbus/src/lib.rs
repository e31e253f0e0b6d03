//! # mrv-gateway-modbus: Modbus acquisition
//!
//! Solar inverters, energy meters, pump drives and flow computers polled
//! over Modbus TCP and RTU. On the gateway's data path (see
//! `docs/ARCHITECTURE.md`) this is an ingest source: it feeds the durable
//! writer (`mrv-gateway-buffer`'s `WriteRequest`) beside the MQTT intake. The
//! `mrv-gateway` crate re-exports it as `mrv_gateway::modbus`.
//!
//! Pure core (no I/O, byte-exact and property tests):
//! - [`register_map`]: what a value is (table, address, type, byte order,
//!   scale, quantity, counter, limits);
//! - [`decode`]: words to integer base units;
//! - [`planner`]: coalesces the wanted registers into the fewest reads
//!   (125-register limit, configurable gap, never across unreadable ranges);
//! - [`schedule`]: which device is due when (time injected);
//! - [`health`]: up / degraded / down from each poll, and the transitions
//!   that earn one event and one log line;
//! - [`sunspec`]: marker discovery, model chain, the map a chain implies;
//! - [`poll::assemble`]: one poll's answers to one [`Frame`](mrv_shared::wire::Frame).
//!
//! I/O edge: [`transport`] (the `RegisterReader` trait over tokio-modbus),
//! [`tcp_task`] (one task per TCP device), [`rtu_bus`] (one task per RS-485
//! bus), started by [`spawn_pollers`]. [`config`] holds the `[modbus]` TOML
//! section and profiles; [`status`] the diagnostics state.
//!
//! Data path: each poll of a device becomes one frame (`seq` 0, the durable
//! writer assigns the device's next gap-free number) sent as
//! `WriteRequest::gateway_sequenced`; exceptions and timeouts become
//! samples with `Quality::UNAVAILABLE`; health transitions become events.

pub mod config;
pub mod decode;
pub mod health;
pub mod planner;
pub mod poll;
pub mod register_map;
pub mod rtu_bus;
pub mod schedule;
pub mod status;
pub mod sunspec;
pub mod tcp_task;
pub mod transport;

use config::{Link, ValidModbusConfig};
use mrv_gateway_buffer::write_request::WriteRequest;
use mrv_shared::clock::{Clock, SystemClock};
use mrv_shared::event::Event;
use mrv_shared::ids::SiteId;
use status::ModbusStatus;
use std::sync::Arc;
use tcp_task::Sinks;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Starts one task per TCP device and one per RTU bus (with at least one
/// device). Frames go to `writes`, events to `events`, diagnostics to
/// `status`. Tasks end when `writes` closes. Timestamps come from the
/// system clock; see [`spawn_pollers_with_clock`].
pub async fn spawn_pollers(
    cfg: &ValidModbusConfig,
    site: SiteId,
    writes: mpsc::Sender<WriteRequest>,
    events: mpsc::Sender<Event>,
    status: ModbusStatus,
) -> Vec<JoinHandle<()>> {
    spawn_pollers_with_clock(cfg, site, writes, events, status, Arc::new(SystemClock))
}

/// As [`spawn_pollers`], with the gateway clock given.
pub fn spawn_pollers_with_clock(
    cfg: &ValidModbusConfig,
    site: SiteId,
    writes: mpsc::Sender<WriteRequest>,
    events: mpsc::Sender<Event>,
    status: ModbusStatus,
    clock: Arc<dyn Clock>,
) -> Vec<JoinHandle<()>> {
    let sinks = Sinks {
        writes,
        events,
        status,
        clock,
    };
    let mut handles = Vec::new();
    for d in &cfg.devices {
        if let Link::Tcp { .. } = d.link {
            handles.push(tokio::spawn(tcp_task::run(
                site.clone(),
                d.clone(),
                sinks.clone(),
            )));
        }
    }
    for (i, bus) in cfg.buses.iter().enumerate() {
        let devices: Vec<_> = cfg
            .devices
            .iter()
            .filter(|d| d.link == Link::Rtu { bus: i })
            .cloned()
            .collect();
        if devices.is_empty() {
            continue;
        }
        handles.push(tokio::spawn(rtu_bus::run(
            site.clone(),
            bus.clone(),
            devices,
            sinks.clone(),
        )));
    }
    handles
}
