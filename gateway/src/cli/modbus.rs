//! `mrv-gateway modbus`: technician tools for Modbus devices on site.
//!
//! - `read`: ad hoc registers (`-r input:342:f32`) or a whole profile
//!   (`--profile din_meter`, `--profile sunspec`), decoded with units;
//! - `scan`: which unit ids answer on a TCP host or an RS-485 bus;
//! - `sunspec`: the SunSpec model chain of a device, with the common model
//!   (manufacturer, model, serial) and the decoded points.
//!
//! Errors say what failed: connection refused, timeout, or the exception
//! code with its meaning. Each command builds its own current-thread tokio
//! runtime; nothing here touches the gateway's data path.

use crate::modbus::config::{
    Parity, ValidBus, load_profile, parse_order, parse_table, rtu_inter_frame_delay,
};
use crate::modbus::decode::{decode_raw, decode_value};
use crate::modbus::planner::{PlanLimits, ReadRequest, plan};
use crate::modbus::poll::execute;
use crate::modbus::register_map::{ByteOrder, DataType, RegisterMap, Table};
use crate::modbus::sunspec::{discover, map_for};
use crate::modbus::transport::{ModbusReader, ReadError, RegisterReader};
use crate::modbus::{rtu_bus, tcp_task};
use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

/// `modbus` arguments.
#[derive(Debug, Args)]
pub struct ModbusArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: ModbusCommand,
}

/// `modbus` subcommands.
#[derive(Debug, Subcommand)]
pub enum ModbusCommand {
    /// Read registers ad hoc or by profile and print them decoded.
    Read(ReadArgs),
    /// Find the unit ids that answer on a host or bus.
    Scan(ScanArgs),
    /// Discover and list a device's SunSpec models.
    Sunspec(SunspecArgs),
}

/// How to reach the device(s).
#[derive(Debug, Args, Clone)]
pub struct LinkArgs {
    /// Modbus TCP host (name or address).
    #[arg(long, conflicts_with = "serial")]
    pub host: Option<String>,
    /// Modbus TCP port.
    #[arg(long, default_value_t = 502)]
    pub port: u16,
    /// Modbus RTU serial device, e.g. /dev/ttyUSB0.
    #[arg(long)]
    pub serial: Option<PathBuf>,
    /// RTU baud rate.
    #[arg(long, default_value_t = 9600)]
    pub baud: u32,
    /// RTU parity: none, even, odd.
    #[arg(long, default_value = "none")]
    pub parity: String,
    /// RTU stop bits.
    #[arg(long, default_value_t = 1)]
    pub stop_bits: u8,
    /// Response timeout, ms.
    #[arg(long, default_value_t = 1000)]
    pub timeout_ms: u64,
}

/// `modbus read`.
#[derive(Debug, Args)]
pub struct ReadArgs {
    /// Link.
    #[command(flatten)]
    pub link: LinkArgs,
    /// Unit (slave) id.
    #[arg(long, default_value_t = 1)]
    pub unit: u8,
    /// A register: TABLE:ADDRESS[:TYPE[:ORDER]] with TABLE one of coils,
    /// discrete_inputs, holding, input; TYPE bool, u16 (default), i16, u32,
    /// i32, u64, i64, f32, f64, stringN (N registers) or rawN (N words in
    /// hex); ORDER ABCD (default), DCBA, BADC, CDAB. Repeatable.
    #[arg(short = 'r', long = "register")]
    pub registers: Vec<String>,
    /// A profile name (sunspec, din_meter) or .toml path: read and decode all of it.
    #[arg(long)]
    pub profile: Option<String>,
    /// Directory that profile names are looked up in (`<dir>/profiles/NAME.toml`).
    #[arg(long, default_value = "config")]
    pub config_dir: PathBuf,
}

/// `modbus scan`.
#[derive(Debug, Args)]
pub struct ScanArgs {
    /// Link.
    #[command(flatten)]
    pub link: LinkArgs,
    /// First unit id to try.
    #[arg(long, default_value_t = 1)]
    pub from: u8,
    /// Last unit id to try.
    #[arg(long, default_value_t = 247)]
    pub to: u8,
    /// Probe register, TABLE:ADDRESS (any answer, even an exception, means
    /// the unit is there).
    #[arg(long, default_value = "holding:0")]
    pub probe: String,
}

/// `modbus sunspec`.
#[derive(Debug, Args)]
pub struct SunspecArgs {
    /// Link.
    #[command(flatten)]
    pub link: LinkArgs,
    /// Unit (slave) id.
    #[arg(long, default_value_t = 1)]
    pub unit: u8,
    /// Only list the models, do not read their points.
    #[arg(long)]
    pub no_values: bool,
    /// Directory that the `sunspec` profile is looked up in.
    #[arg(long, default_value = "config")]
    pub config_dir: PathBuf,
}

/// Runs `modbus`, printing to stdout.
pub fn run(args: ModbusArgs) -> anyhow::Result<()> {
    run_to(args, &mut std::io::stdout())
}

/// Runs `modbus`, printing to `out` (tests capture it).
pub fn run_to(args: ModbusArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(async {
        match args.command {
            ModbusCommand::Read(a) => read(a, out).await,
            ModbusCommand::Scan(a) => scan(a, out).await,
            ModbusCommand::Sunspec(a) => sunspec(a, out).await,
        }
    })
}

impl LinkArgs {
    fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms.max(1))
    }

    fn describe(&self, unit: u8) -> String {
        match (&self.host, &self.serial) {
            (Some(h), _) => format!("{h}:{} unit {unit}", self.port),
            (None, Some(p)) => format!("{} @ {} baud, unit {unit}", p.display(), self.baud),
            (None, None) => "nowhere".into(),
        }
    }

    async fn connect(&self, unit: u8) -> anyhow::Result<ModbusReader> {
        match (&self.host, &self.serial) {
            (Some(h), None) => tcp_task::connect(h, self.port, unit, self.timeout())
                .await
                .map_err(|e| anyhow::anyhow!("{}: {e}", self.describe(unit))),
            (None, Some(path)) => {
                let parity = match self.parity.as_str() {
                    "none" => Parity::None,
                    "even" => Parity::Even,
                    "odd" => Parity::Odd,
                    p => bail!("unknown parity {p:?}; use none, even or odd"),
                };
                let bus = ValidBus {
                    id: "cli".into(),
                    path: path.clone(),
                    baud: self.baud,
                    parity,
                    stop_bits: self.stop_bits,
                    data_bits: 8,
                    inter_frame_delay: rtu_inter_frame_delay(self.baud),
                };
                let mut r =
                    rtu_bus::open(&bus, self.timeout()).map_err(|e| anyhow::anyhow!("{e}"))?;
                r.set_unit(unit);
                Ok(r)
            }
            _ => bail!("give --host (Modbus TCP) or --serial (Modbus RTU)"),
        }
    }
}

/// One ad hoc register of `modbus read`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct AdHoc {
    table: Table,
    address: u16,
    /// `None` = raw words.
    data_type: Option<DataType>,
    count: u16,
    order: ByteOrder,
}

fn parse_adhoc(spec: &str) -> anyhow::Result<AdHoc> {
    let parts: Vec<&str> = spec.split(':').collect();
    if parts.len() < 2 || parts.len() > 4 {
        bail!("register {spec:?}: expected TABLE:ADDRESS[:TYPE[:ORDER]]");
    }
    let table = parse_table(parts[0]).with_context(|| {
        format!(
            "register {spec:?}: unknown table {:?}; use coils, discrete_inputs, holding, input",
            parts[0]
        )
    })?;
    let address: u16 = parts[1]
        .parse()
        .with_context(|| format!("register {spec:?}: address must be 0-65535"))?;
    let ty = parts
        .get(2)
        .copied()
        .unwrap_or(if table.is_bits() { "bool" } else { "u16" });
    let (data_type, count) = if let Some(n) = ty.strip_prefix("raw") {
        let n: u16 = n.parse().unwrap_or(1);
        (None, n)
    } else if let Some(n) = ty.strip_prefix("string") {
        let n: u16 = n
            .parse()
            .with_context(|| format!("register {spec:?}: write stringN, N registers"))?;
        (Some(DataType::String(n)), n)
    } else {
        let t = DataType::parse(ty, None)
            .with_context(|| format!("register {spec:?}: unknown type {ty:?}"))?;
        (Some(t), t.width())
    };
    let order = match parts.get(3) {
        Some(o) => {
            parse_order(o).with_context(|| format!("register {spec:?}: unknown order {o:?}"))?
        }
        None => ByteOrder::ABCD,
    };
    if count == 0 || count > table.max_per_read() {
        bail!(
            "register {spec:?}: 1 to {} items per read",
            table.max_per_read()
        );
    }
    Ok(AdHoc {
        table,
        address,
        data_type,
        count,
        order,
    })
}

async fn read(a: ReadArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    if a.registers.is_empty() && a.profile.is_none() {
        bail!("give --register TABLE:ADDRESS[:TYPE[:ORDER]] (repeatable) or --profile NAME");
    }
    let adhoc: Vec<AdHoc> = a
        .registers
        .iter()
        .map(|s| parse_adhoc(s))
        .collect::<anyhow::Result<_>>()?;
    let mut reader = a.link.connect(a.unit).await?;
    writeln!(out, "{}", a.link.describe(a.unit))?;
    let mut failures = 0;
    for r in &adhoc {
        let req = ReadRequest {
            table: r.table,
            start: r.address,
            count: r.count,
        };
        let label = format!("{} {}", r.table, r.address);
        match reader.read(req).await {
            Err(e) => {
                failures += 1;
                writeln!(out, "  {label:<16} ERROR {e}")?;
            }
            Ok(words) => match r.data_type {
                None => {
                    let hex: Vec<String> = words.iter().map(|w| format!("{w:#06x}")).collect();
                    writeln!(out, "  {label:<16} {}", hex.join(" "))?;
                }
                Some(t) => match decode_raw(t, r.order, &words) {
                    Ok(v) => writeln!(out, "  {label:<16} {t:<10} {v}")?,
                    Err(e) => writeln!(out, "  {label:<16} {t:<10} cannot decode: {e}")?,
                },
            },
        }
    }
    if let Some(p) = &a.profile {
        let profile = load_profile(
            p,
            &a.config_dir,
            std::path::Path::new("<command line>"),
            "--profile",
        )
        .map_err(|e| anyhow::anyhow!("{e}"))?;
        let mut map = profile.map.clone();
        if let Some(ss) = &profile.sunspec {
            let d = discover(&mut reader, &ss.base_addresses)
                .await
                .map_err(|e| anyhow::anyhow!("SunSpec discovery: {e}"))?;
            let (m, skipped) = map_for(ss, &d.models);
            if !skipped.is_empty() {
                writeln!(
                    out,
                    "  (SunSpec models skipped, not in the profile: {skipped:?})"
                )?;
            }
            map.registers.extend(m.registers);
        }
        failures += print_map(&mut reader, &map, out).await?;
    }
    reader.disconnect().await;
    if failures > 0 {
        bail!("{failures} read(s) failed");
    }
    Ok(())
}

/// Reads a map and prints every value (in display units, with the exact
/// base-unit value beside it); returns the number of failed requests. Also
/// behind the diagnostics page's probe form.
pub(crate) async fn print_map<W: Write + ?Sized>(
    reader: &mut ModbusReader,
    map: &RegisterMap,
    out: &mut W,
) -> anyhow::Result<usize> {
    let p = plan(&map.spans(), &map.unreadable, PlanLimits::default())
        .map_err(|e| anyhow::anyhow!("the map cannot be read: {e}"))?;
    let results = execute(reader, &p, 0).await;
    let failed = results.iter().filter(|r| r.is_err()).count();
    writeln!(
        out,
        "  {} values in {} requests",
        map.registers.len(),
        p.requests.len()
    )?;
    let n = map.registers.len();
    let mut sf_span = n;
    for (i, def) in map.registers.iter().enumerate() {
        let words_at = |span: usize, start: u16, count: u16| -> Result<Vec<u16>, ReadError> {
            let ri = p.placement[span];
            let req = p.requests[ri];
            let words = results[ri].as_ref().map_err(Clone::clone)?;
            let from = usize::from(start - req.start);
            Ok(words[from..from + usize::from(count)].to_vec())
        };
        let sf = match def.scale_factor_at {
            Some(a) => {
                let w = words_at(sf_span, a, 1).map(|w| Some(w[0]));
                sf_span += 1;
                w
            }
            None => Ok(None),
        };
        let line = match (words_at(i, def.address, def.data_type.width()), sf) {
            (Err(e), _) | (_, Err(e)) => format!("unavailable: {e}"),
            (Ok(w), Ok(sf)) => match decode_value(def, &w, sf) {
                Ok(c) => {
                    let v = c.value;
                    let mut flag = String::new();
                    if c.rounded {
                        flag.push_str("  (rounded to the base unit)");
                    }
                    if !def.limits.contains(v) {
                        flag.push_str("  (out of range)");
                    }
                    format!(
                        "{}  ({v} {}){flag}",
                        mrv_shared::display::display(def.quantity, v),
                        def.quantity.unit()
                    )
                }
                Err(e) => format!("unavailable: {e}"),
            },
        };
        writeln!(out, "  {:<28} {line}", def.name.as_str())?;
    }
    Ok(failed)
}

async fn scan(a: ScanArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let probe = parse_adhoc(&a.probe)?;
    if a.from == 0 || a.from > a.to {
        bail!(
            "unit range {}..={} is empty (unit ids start at 1)",
            a.from,
            a.to
        );
    }
    writeln!(
        out,
        "scanning {} units {}..={} with {} {} (timeout {} ms)",
        a.link.describe(a.from),
        a.from,
        a.to,
        probe.table,
        probe.address,
        a.link.timeout_ms
    )?;
    let mut reader = a.link.connect(a.from).await?;
    let mut found = Vec::new();
    for unit in a.from..=a.to {
        reader.set_unit(unit);
        let req = ReadRequest {
            table: probe.table,
            start: probe.address,
            count: 1,
        };
        match reader.read(req).await {
            Ok(w) => {
                writeln!(
                    out,
                    "  unit {unit:>3}: answers ({} = {:#06x})",
                    probe.address, w[0]
                )?;
                found.push(unit);
            }
            // 0x0A/0x0B come from a TCP gateway: the unit itself did not answer.
            Err(ReadError::Exception(x)) if matches!(x.0, 0x0A | 0x0B) => {}
            Err(ReadError::Exception(x)) => {
                writeln!(out, "  unit {unit:>3}: answers with {x}")?;
                found.push(unit);
            }
            Err(e @ (ReadError::Timeout(_) | ReadError::Link(_))) => {
                if a.link.host.is_some() {
                    // A late answer would confuse the next probe: reconnect.
                    reader = a
                        .link
                        .connect(unit)
                        .await
                        .with_context(|| format!("reconnecting after {e}"))?;
                }
            }
        }
    }
    writeln!(out, "{} unit(s) found: {found:?}", found.len())?;
    Ok(())
}

async fn sunspec(a: SunspecArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let mut reader = a.link.connect(a.unit).await?;
    let profile = load_profile(
        "sunspec",
        &a.config_dir,
        std::path::Path::new("<built-in>"),
        "",
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let ss = profile
        .sunspec
        .context("the sunspec profile has no [sunspec] section")?;
    let d = discover(&mut reader, &ss.base_addresses)
        .await
        .map_err(|e| anyhow::anyhow!("{}: SunSpec discovery: {e}", a.link.describe(a.unit)))?;
    writeln!(
        out,
        "{}: SunS marker at {}",
        a.link.describe(a.unit),
        d.base
    )?;
    if let Some(c) = &d.common {
        writeln!(
            out,
            "  manufacturer {:?}, model {:?}, version {:?}, serial {:?}",
            c.manufacturer, c.model, c.version, c.serial
        )?;
    }
    for m in &d.models {
        let known = m.id == 1 || ss.models.iter().any(|f| f.ids.contains(&m.id));
        writeln!(
            out,
            "  model {:>5} at {:>5}, {:>3} registers{}",
            m.id,
            m.address,
            m.length,
            if known {
                ""
            } else {
                "  (not decoded: skipped)"
            }
        )?;
    }
    if !a.no_values {
        let (map, _) = map_for(&ss, &d.models);
        if !map.registers.is_empty() {
            let failed = print_map(&mut reader, &map, out).await?;
            if failed > 0 {
                bail!("{failed} read(s) failed");
            }
        }
    }
    reader.disconnect().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adhoc_specs_parse_with_defaults() {
        assert_eq!(
            parse_adhoc("input:342:f32:CDAB").expect("valid"),
            AdHoc {
                table: Table::Input,
                address: 342,
                data_type: Some(DataType::F32),
                count: 2,
                order: ByteOrder::CDAB
            }
        );
        let h = parse_adhoc("holding:40000").expect("valid");
        assert_eq!((h.data_type, h.count), (Some(DataType::U16), 1));
        let raw = parse_adhoc("holding:40000:raw10").expect("valid");
        assert_eq!((raw.data_type, raw.count), (None, 10));
        let c = parse_adhoc("coils:3").expect("valid");
        assert_eq!(c.data_type, Some(DataType::Bool));
        assert!(parse_adhoc("holding").is_err());
        assert!(parse_adhoc("holdings:1").is_err());
        assert!(parse_adhoc("holding:1:float").is_err());
        assert!(parse_adhoc("holding:1:raw200").is_err());
    }
}
