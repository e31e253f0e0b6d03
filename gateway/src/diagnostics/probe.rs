//! The Modbus probe behind the diagnostics form: one read of a register
//! range from a Modbus TCP device, and/or a whole profile decoded (with
//! SunSpec discovery for SunSpec profiles), as `mrv-gateway modbus read
//! --profile` prints it (the same code: [`crate::cli::modbus::print_map`]).
//!
//! The form offers the configured Modbus TCP devices ([`targets`]); picking
//! one probes it with its configured address, unit and register map.
//!
//! Nothing is stored and no poller is disturbed (a separate connection).
//! A device exception is reported as an answer ("the device said no"),
//! kept apart from timeouts and link errors, as the poller does.

use super::api::{ProbeRequest, ProbeResult};
use crate::config::GatewayConfig;
use crate::modbus::config::{Link, load_profile, parse_table};
use crate::modbus::planner::ReadRequest;
use crate::modbus::register_map::RegisterMap;
use crate::modbus::sunspec::{SunSpecProfile, discover, map_for};
use crate::modbus::transport::{ModbusReader, RegisterReader};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::{Duration, Instant};

/// Per-request timeout of a probe.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// A configured device the form offers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeTarget {
    /// Device id.
    pub id: String,
    /// `host:port`.
    pub address: String,
    /// Unit id.
    pub unit: u8,
    /// Its profile name (from the config file), if any.
    pub profile: Option<String>,
    /// It is a SunSpec device (discovery runs before decoding).
    pub sunspec: bool,
}

/// The configured Modbus TCP devices (RTU devices share a bus with their
/// poller and are not offered).
pub fn targets(config: &GatewayConfig) -> Vec<ProbeTarget> {
    config
        .modbus
        .devices
        .iter()
        .filter_map(|d| match &d.link {
            Link::Tcp { host, port } => Some(ProbeTarget {
                id: d.id.to_string(),
                address: format!("{host}:{port}"),
                unit: d.unit,
                profile: config
                    .file
                    .modbus
                    .devices
                    .iter()
                    .find(|s| s.id == d.id.as_str())
                    .and_then(|s| s.profile.clone()),
                sunspec: d.sunspec.is_some(),
            }),
            Link::Rtu { .. } => None,
        })
        .collect()
}

fn failed(error: String, started: Instant) -> ProbeResult {
    ProbeResult {
        words: Vec::new(),
        decoded: Vec::new(),
        error: Some(error),
        elapsed_ms: started.elapsed().as_millis() as u64,
    }
}

/// Runs a probe; `config_dir` anchors profile names (`profiles/<name>.toml`,
/// else a built-in profile). With `req.device` naming a configured TCP
/// device, its address, unit and map are used. `count = 0` skips the raw
/// read (decode only).
pub async fn probe(req: &ProbeRequest, config_dir: &Path, config: &GatewayConfig) -> ProbeResult {
    let started = Instant::now();
    let configured = req
        .device
        .as_deref()
        .filter(|d| !d.trim().is_empty())
        .map(|d| {
            config
                .modbus
                .devices
                .iter()
                .find(|x| x.id.as_str() == d.trim())
                .ok_or_else(|| format!("no configured Modbus device {:?}", d.trim()))
        })
        .transpose();
    let configured = match configured {
        Ok(c) => c,
        Err(e) => return failed(e, started),
    };
    let (address, unit) = match configured.map(|d| (&d.link, d.unit)) {
        Some((Link::Tcp { host, port }, unit)) => (format!("{host}:{port}"), unit),
        Some((Link::Rtu { .. }, _)) => {
            return failed(
                "this device is on an RTU bus its poller holds: use `mrv-gateway modbus read` with the gateway stopped".into(),
                started,
            );
        }
        None => (req.address.trim().to_string(), req.unit),
    };
    if req.count > 125 {
        return failed("count must be 0 to 125 (0: decode only)".into(), started);
    }
    let Some(table) = parse_table(&req.table) else {
        return failed(format!("unknown table {:?}", req.table), started);
    };
    // What to decode: the configured device's map, else the named profile.
    let mut decode: Option<(RegisterMap, Option<SunSpecProfile>)> =
        configured.map(|d| (d.map.clone(), d.sunspec.clone()));
    if let Some(p) = req
        .profile
        .as_deref()
        .map(str::trim)
        .filter(|p| !p.is_empty())
    {
        match load_profile(p, config_dir, Path::new("<probe>"), "profile") {
            Ok(p) => decode = Some((p.map, p.sunspec)),
            Err(e) => return failed(format!("profile: {}", e.problem), started),
        }
    }
    if req.count == 0 && decode.is_none() {
        return failed(
            "nothing to do: give a count of registers or a profile".into(),
            started,
        );
    }
    let addr = match tokio::net::lookup_host(address.as_str()).await {
        Ok(mut a) => match a.next() {
            Some(a) => a,
            None => return failed(format!("{address}: no address"), started),
        },
        Err(e) => return failed(format!("{address}: {e}"), started),
    };
    let connect = tokio_modbus::client::tcp::connect_slave(addr, tokio_modbus::Slave(unit));
    let ctx = match tokio::time::timeout(PROBE_TIMEOUT, connect).await {
        Ok(Ok(ctx)) => ctx,
        Ok(Err(e)) => {
            return failed(
                format!("link error: cannot connect to {addr}: {e}"),
                started,
            );
        }
        Err(_) => {
            return failed(
                format!("timeout: no connection to {addr} within {PROBE_TIMEOUT:?}"),
                started,
            );
        }
    };
    let mut reader = ModbusReader::new(ctx, PROBE_TIMEOUT);
    let mut words = Vec::new();
    if req.count > 0 {
        match reader
            .read(ReadRequest {
                table,
                start: req.start,
                count: req.count,
            })
            .await
        {
            Ok(w) => words = w,
            Err(e) => {
                reader.disconnect().await;
                return failed(e.to_string(), started);
            }
        }
    }
    let mut decoded = Vec::new();
    let mut error = None;
    if let Some((mut map, sunspec)) = decode {
        if let Some(ss) = &sunspec {
            match discover(&mut reader, &ss.base_addresses).await {
                Ok(d) => {
                    decoded.push(format!("SunSpec marker at {}", d.base));
                    if let Some(c) = &d.common {
                        decoded.push(format!(
                            "manufacturer {:?}, model {:?}, version {:?}, serial {:?}",
                            c.manufacturer, c.model, c.version, c.serial
                        ));
                    }
                    let (m, skipped) = map_for(ss, &d.models);
                    if !skipped.is_empty() {
                        decoded.push(format!(
                            "SunSpec models not decoded (not in the profile): {skipped:?}"
                        ));
                    }
                    map.registers.extend(m.registers);
                }
                Err(e) => error = Some(format!("SunSpec discovery: {e}")),
            }
        }
        if !map.registers.is_empty() {
            let mut out: Vec<u8> = Vec::new();
            match crate::cli::modbus::print_map(&mut reader, &map, req.unit, &mut out).await {
                Ok(failures) => {
                    decoded.extend(
                        String::from_utf8_lossy(&out)
                            .lines()
                            .map(|l| l.trim().to_string()),
                    );
                    if failures > 0 && error.is_none() {
                        error = Some(format!("{failures} read(s) of the map failed"));
                    }
                }
                Err(e) => error = Some(e.to_string()),
            }
        } else if error.is_none() {
            decoded.push("the profile has no register to decode".into());
        }
    }
    reader.disconnect().await;
    ProbeResult {
        words,
        decoded,
        error,
        elapsed_ms: started.elapsed().as_millis() as u64,
    }
}
