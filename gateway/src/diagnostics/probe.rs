//! The Modbus probe behind the diagnostics form: one read of a register
//! range from a Modbus TCP device, optionally decoded with a profile.
//!
//! Nothing is stored and no poller is disturbed (a separate connection).
//! A device exception is reported as an answer ("the device said no"),
//! kept apart from timeouts and link errors, as the poller does.

use super::api::{ProbeRequest, ProbeResult};
use crate::modbus::config::{load_profile, parse_table};
use crate::modbus::decode::{decode_raw, to_base_units};
use crate::modbus::planner::ReadRequest;
use crate::modbus::transport::{ModbusReader, RegisterReader};
use std::path::Path;
use std::time::{Duration, Instant};

/// Per-request timeout of a probe.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

fn failed(error: String, started: Instant) -> ProbeResult {
    ProbeResult {
        words: Vec::new(),
        decoded: Vec::new(),
        error: Some(error),
        elapsed_ms: started.elapsed().as_millis() as u64,
    }
}

/// Runs a probe; `config_dir` anchors profile names (`profiles/<name>.toml`,
/// else a built-in profile).
pub async fn probe(req: &ProbeRequest, config_dir: &Path) -> ProbeResult {
    let started = Instant::now();
    if !(1..=125).contains(&req.count) {
        return failed("count must be 1 to 125".into(), started);
    }
    let Some(table) = parse_table(&req.table) else {
        return failed(format!("unknown table {:?}", req.table), started);
    };
    let profile = match &req.profile {
        Some(p) if !p.trim().is_empty() => {
            match load_profile(p.trim(), config_dir, Path::new("<probe>"), "profile") {
                Ok(p) => Some(p),
                Err(e) => return failed(format!("profile: {}", e.problem), started),
            }
        }
        _ => None,
    };
    let addr = match tokio::net::lookup_host(req.address.as_str()).await {
        Ok(mut a) => match a.next() {
            Some(a) => a,
            None => return failed(format!("{}: no address", req.address), started),
        },
        Err(e) => return failed(format!("{}: {e}", req.address), started),
    };
    let connect = tokio_modbus::client::tcp::connect_slave(addr, tokio_modbus::Slave(req.unit));
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
    let words = reader
        .read(ReadRequest {
            table,
            start: req.start,
            count: req.count,
        })
        .await;
    reader.disconnect().await;
    let words = match words {
        Ok(w) => w,
        Err(e) => return failed(e.to_string(), started),
    };
    let mut decoded = Vec::new();
    if let Some(p) = profile {
        let end = u32::from(req.start) + u32::from(req.count);
        for r in p.map.registers.iter().filter(|r| r.table == table) {
            let first = u32::from(r.address);
            let last = first + u32::from(r.data_type.width());
            if first < u32::from(req.start) || last > end {
                continue;
            }
            let at = (first - u32::from(req.start)) as usize;
            let slice = &words[at..at + usize::from(r.data_type.width())];
            let text = match decode_raw(r.data_type, r.order, slice)
                .and_then(|raw| to_base_units(&raw, r.scale, r.offset))
            {
                Ok(c) => format!(
                    "{} @{} = {} {}{}",
                    r.name,
                    r.address,
                    c.value,
                    r.quantity.unit(),
                    if c.rounded { " (rounded)" } else { "" }
                ),
                Err(e) => format!("{} @{}: {e}", r.name, r.address),
            };
            let note = if r.scale_factor_at.is_some() {
                " (scale-factor register not applied)"
            } else {
                ""
            };
            decoded.push(format!("{text}{note}"));
        }
        if decoded.is_empty() {
            decoded.push("no profile register lies wholly in the range".into());
        }
    }
    ProbeResult {
        words,
        decoded,
        error: None,
        elapsed_ms: started.elapsed().as_millis() as u64,
    }
}
