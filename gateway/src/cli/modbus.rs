//! `mrv-gateway modbus`: technician tools for Modbus devices on site.
//!
//! - `read`: ad hoc registers (`-r input:342:f32`, with `scale=`, `unit=`,
//!   `quantity=` to see the value as the gateway would store it) or a whole
//!   profile (`--profile din_meter`, `--profile ./my_meter.toml`), decoded
//!   with units; reads the device refuses are split down to what it
//!   answers, as the poller does;
//! - `scan`: which unit ids answer with data on a TCP host or an RS-485 bus
//!   (exception answers are listed apart: they are not proof of a device);
//! - `sunspec`: the SunSpec model chain of a device, with the common model
//!   (manufacturer, model, serial) and the decoded points.
//!
//! Errors say what failed: connection refused, timeout, or the exception
//! code with its meaning. Each command builds its own current-thread tokio
//! runtime; nothing here touches the gateway's data path.

use crate::modbus::config::{
    Parity, RegisterSection, ValidBus, load_profile, parse_order, parse_table,
    rtu_inter_frame_delay, validate_register,
};
use crate::modbus::decode::{RawValue, decode_raw, decode_value};
use crate::modbus::planner::{PlanLimits, ReadRequest, plan};
use crate::modbus::poll::{execute_refining, wrong_unit_hint};
use crate::modbus::register_map::{ByteOrder, DataType, RegisterDef, RegisterMap, Scale, Table};
use crate::modbus::sunspec::{discover, map_for};
use crate::modbus::transport::{Exception, ModbusReader, ReadError, RegisterReader};
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
    /// A register: TABLE:ADDRESS[:TYPE[:ORDER]][:KEY=VALUE...] with TABLE
    /// one of coils, discrete_inputs, holding, input; TYPE bool, u16
    /// (default), i16, u32, i32, u64, i64, f32, f64, stringN (N registers)
    /// or rawN (N words in hex); ORDER ABCD (default), DCBA, BADC, CDAB.
    /// Keys: type=, order=, scale= (exact decimal, e.g. 0.1), quantity=
    /// (energy, power, voltage, ...) and unit= (W, kWh, V, ...): with a
    /// quantity the value is also shown in base units as the gateway stores
    /// it. Example: -r holding:100:i32:scale=0.1:quantity=power:unit=W.
    /// Repeatable.
    #[arg(short = 'r', long = "register")]
    pub registers: Vec<String>,
    /// A profile name (sunspec, din_meter; looked up in --config-dir) or a
    /// .toml path (relative to the working directory): read and decode all of it.
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
    /// Probe register, TABLE:ADDRESS. A unit counts as found when it answers
    /// with data; exception answers are listed apart (TCP gateways and some
    /// devices answer them for any unit id), so probe a register the device
    /// has (e.g. input:0 on an SDM meter, holding:40000 on SunSpec).
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
#[derive(Debug, Clone, PartialEq)]
struct AdHoc {
    table: Table,
    address: u16,
    /// `None` = raw words.
    data_type: Option<DataType>,
    count: u16,
    order: ByteOrder,
    /// `scale=` without a quantity: shown as raw times scale.
    scale: Option<Scale>,
    /// With `quantity=`: the register as a gateway config would define it.
    def: Option<RegisterDef>,
}

fn parse_adhoc(spec: &str) -> anyhow::Result<AdHoc> {
    let parts: Vec<&str> = spec.split(':').collect();
    if parts.len() < 2 {
        bail!("register {spec:?}: expected TABLE:ADDRESS[:TYPE[:ORDER]][:KEY=VALUE...]");
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
    let (mut ty, mut order_text, mut scale_text, mut quantity, mut unit) =
        (None, None, None, None, None);
    let mut positional = 0;
    for part in &parts[2..] {
        match part.split_once('=') {
            Some(("type", v)) => ty = Some(v),
            Some(("order" | "byte_order", v)) => order_text = Some(v),
            Some(("scale", v)) => scale_text = Some(v),
            Some(("quantity", v)) => quantity = Some(v),
            Some(("unit", v)) => unit = Some(v),
            Some((k, _)) => bail!(
                "register {spec:?}: unknown key {k:?}; use type, order, scale, quantity, unit"
            ),
            None if positional == 0 => {
                ty = Some(part);
                positional += 1;
            }
            None if positional == 1 => {
                order_text = Some(part);
                positional += 1;
            }
            None => bail!(
                "register {spec:?}: {part:?}: after TYPE and ORDER give KEY=VALUE (scale=0.1, unit=W, ...)"
            ),
        }
    }
    let ty = ty.unwrap_or(if table.is_bits() { "bool" } else { "u16" });
    let (data_type, count) = if let Some(n) = ty.strip_prefix("raw") {
        let n: u16 = if n.is_empty() {
            1
        } else {
            n.parse()
                .with_context(|| format!("register {spec:?}: write rawN, N words"))?
        };
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
    let order = match order_text {
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
    let scale_value = match scale_text {
        Some(t) => Some(
            t.parse::<f64>()
                .with_context(|| format!("register {spec:?}: scale {t:?} is not a number"))?,
        ),
        None => None,
    };
    let scale = match scale_value {
        Some(x) => Some(Scale::from_decimal(x).with_context(|| {
            format!(
                "register {spec:?}: scale {x} is not usable: a non-zero decimal with at most 9 decimal places"
            )
        })?),
        None => None,
    };
    let def = match quantity {
        None if unit.is_some() => {
            bail!("register {spec:?}: unit= needs quantity= (e.g. quantity=power:unit=W)")
        }
        None => None,
        Some(q) => {
            if data_type.is_none() || matches!(data_type, Some(DataType::String(_))) {
                bail!("register {spec:?}: quantity= needs a numeric TYPE");
            }
            let section = RegisterSection {
                name: "cli".into(),
                function: table.name().into(),
                address,
                data_type: ty.into(),
                length: None,
                byte_order: order_text.map(str::to_string),
                scale: scale_value,
                unit: unit.map(str::to_string),
                offset: 0,
                scale_factor_address: None,
                quantity: q.into(),
                kind: None,
                rollover_bits: None,
                min: None,
                max: None,
            };
            Some(
                validate_register(&section)
                    .map_err(|e| anyhow::anyhow!("register {spec:?}: {}: {}", e.key, e.problem))?,
            )
        }
    };
    Ok(AdHoc {
        table,
        address,
        data_type,
        count,
        order,
        scale,
        def,
    })
}

/// `raw * scale` as an exact decimal (scales have power-of-ten denominators).
fn scaled_text(raw: &RawValue, scale: Scale) -> String {
    use mrv_shared::conversion::Decimal;
    let d = match raw {
        RawValue::Bool(b) => Decimal::int(i128::from(*b)),
        RawValue::Int(i) => Decimal::int(*i),
        RawValue::Float32(x) => match Decimal::from_f32(*x) {
            Ok(d) => d,
            Err(e) => return format!("cannot scale: {e}"),
        },
        RawValue::Float(x) => match Decimal::from_f64(*x) {
            Ok(d) => d,
            Err(e) => return format!("cannot scale: {e}"),
        },
        RawValue::Text(_) => return "cannot scale text".into(),
    };
    let den_digits = {
        let mut n = 0u32;
        let mut d = scale.den;
        while d > 1 && d % 10 == 0 {
            d /= 10;
            n += 1;
        }
        if d != 1 {
            return format!("{}", d as f64 * scale.as_f64());
        }
        n
    };
    let Some(m) = d.mantissa.checked_mul(i128::from(scale.num)) else {
        return "too large to scale".into();
    };
    let frac = d.frac_digits + den_digits;
    let neg = m < 0;
    let digits = m.unsigned_abs().to_string();
    let frac = usize::try_from(frac).unwrap_or(usize::MAX);
    let text = if frac == 0 {
        digits
    } else if digits.len() > frac {
        let (i, f) = digits.split_at(digits.len() - frac);
        format!("{i}.{f}")
    } else {
        format!("0.{}{digits}", "0".repeat(frac - digits.len()))
    };
    let text = if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        text
    };
    if neg { format!("-{text}") } else { text }
}

/// A profile reference the CLI resolves: names in `config_dir`, paths
/// relative to the working directory.
fn cli_profile(
    reference: &str,
    config_dir: &std::path::Path,
) -> anyhow::Result<crate::modbus::config::ValidProfile> {
    let is_path = reference.ends_with(".toml") || reference.contains('/');
    let dir = if is_path {
        std::path::Path::new(".")
    } else {
        config_dir
    };
    load_profile(
        reference,
        dir,
        std::path::Path::new("<command line>"),
        "--profile",
    )
    .map_err(|e| anyhow::anyhow!("{e}"))
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
    let profile = match &a.profile {
        Some(p) => Some(cli_profile(p, &a.config_dir)?),
        None => None,
    };
    let mut reader = a.link.connect(a.unit).await?;
    writeln!(out, "{}", a.link.describe(a.unit))?;
    let mut failures = 0;
    let mut unavailable = 0;
    let mut answers = Vec::new();
    for r in &adhoc {
        let req = ReadRequest {
            table: r.table,
            start: r.address,
            count: r.count,
        };
        let label = format!("{} {}", r.table, r.address);
        let result = reader.read(req).await;
        match &result {
            Err(e) => {
                failures += 1;
                writeln!(out, "  {label:<16} ERROR {e}")?;
            }
            Ok(words) => match r.data_type {
                None => {
                    let hex: Vec<String> = words.iter().map(|w| format!("{w:#06x}")).collect();
                    writeln!(out, "  {label:<16} {}", hex.join(" "))?;
                }
                Some(t) => match decode_raw(t, r.order, words) {
                    Ok(v) => {
                        let mut line = format!("  {label:<16} {t:<10} {v}");
                        if let (Some(sc), None) = (r.scale, &r.def) {
                            line.push_str(&format!(
                                "  x {} = {}",
                                sc.as_f64(),
                                scaled_text(&v, sc)
                            ));
                        }
                        if let Some(def) = &r.def {
                            line.push_str("  -> ");
                            line.push_str(&base_unit_text(def, words, None));
                        }
                        writeln!(out, "{line}")?;
                    }
                    Err(e) => writeln!(out, "  {label:<16} {t:<10} cannot decode: {e}")?,
                },
            },
        }
        answers.push(result);
    }
    if let Some(hint) = wrong_unit_hint(&answers, a.unit) {
        writeln!(out, "  note: {hint}")?;
    }
    if let Some(profile) = profile {
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
        unavailable += print_map(&mut reader, &map, a.unit, out).await?;
    }
    reader.disconnect().await;
    match (failures, unavailable) {
        (0, 0) => Ok(()),
        (f, 0) => bail!("{f} read(s) failed"),
        (0, u) => bail!("{u} value(s) unavailable"),
        (f, u) => bail!("{f} read(s) failed, {u} value(s) unavailable"),
    }
}

/// One value as the gateway stores it: the display form with the exact
/// base-unit value beside it, and its flags.
fn base_unit_text(def: &RegisterDef, words: &[u16], sf: Option<u16>) -> String {
    match decode_value(def, words, sf) {
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
    }
}

/// Reads a map (splitting reads the device refuses, as the poller does) and
/// prints every value (in display units, with the exact base-unit value
/// beside it); returns the number of values that could not be read. Also
/// behind the diagnostics page's probe form.
pub(crate) async fn print_map<W: Write + ?Sized>(
    reader: &mut ModbusReader,
    map: &RegisterMap,
    unit: u8,
    out: &mut W,
) -> anyhow::Result<usize> {
    let spans = map.spans();
    let p0 = plan(&spans, &map.unreadable, PlanLimits::default())
        .map_err(|e| anyhow::anyhow!("the map cannot be read: {e}"))?;
    let refined = execute_refining(reader, &spans, &p0, 0).await;
    let p = refined.plan.clone().unwrap_or(p0);
    let results = refined.results;
    writeln!(
        out,
        "  {} values in {} requests",
        map.registers.len(),
        p.requests.len()
    )?;
    for s in &refined.split {
        writeln!(out, "  (refused, read in smaller parts: {s})")?;
    }
    if let Some(hint) = wrong_unit_hint(&results, unit) {
        writeln!(out, "  note: {hint}")?;
    }
    let n = map.registers.len();
    let mut sf_span = n;
    let mut unavailable = 0;
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
            (Err(e), _) | (_, Err(e)) => {
                unavailable += 1;
                format!("unavailable: {e}")
            }
            (Ok(w), Ok(sf)) => {
                let t = base_unit_text(def, &w, sf);
                if t.starts_with("unavailable") {
                    unavailable += 1;
                }
                t
            }
        };
        writeln!(out, "  {:<28} {line}", def.name.as_str())?;
    }
    Ok(unavailable)
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
    let mut exceptions: Vec<(u8, Exception)> = Vec::new();
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
                    "  unit {unit:>3}: answers with data ({} = {:#06x})",
                    probe.address, w[0]
                )?;
                found.push(unit);
            }
            // 0x0A/0x0B come from a TCP gateway: the unit itself did not answer.
            Err(ReadError::Exception(x)) if matches!(x.0, 0x0A | 0x0B) => {}
            Err(ReadError::Exception(x)) => {
                writeln!(
                    out,
                    "  unit {unit:>3}: answers with {x}, no data (not counted)"
                )?;
                exceptions.push((unit, x));
            }
            Err(e @ (ReadError::Timeout(_) | ReadError::Link(_) | ReadError::Unreachable(_))) => {
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
    writeln!(out, "{} unit(s) answer with data: {found:?}", found.len())?;
    if !exceptions.is_empty() {
        let units: Vec<u8> = exceptions.iter().map(|(u, _)| *u).collect();
        writeln!(
            out,
            "{} unit(s) answer only with exceptions: {units:?}; an exception is not proof of a \
             device (TCP gateways and some devices answer for any unit id): probe a register \
             the device has with --probe",
            units.len()
        )?;
        let all_same = exceptions.windows(2).all(|w| w[0].1 == w[1].1);
        if units.len() > 1 && all_same && found.is_empty() {
            writeln!(
                out,
                "  every one answers {}: most likely one device or gateway answering for every unit id",
                exceptions[0].1
            )?;
        }
    }
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
            let unavailable = print_map(&mut reader, &map, a.unit, out).await?;
            if unavailable > 0 {
                bail!("{unavailable} value(s) unavailable");
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
                order: ByteOrder::CDAB,
                scale: None,
                def: None,
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

    #[test]
    fn adhoc_specs_take_type_scale_quantity_and_unit_as_keys() {
        let a = parse_adhoc("holding:100:type=i32:scale=0.1:quantity=power:unit=W").expect("valid");
        assert_eq!((a.data_type, a.count), (Some(DataType::I32), 2));
        let def = a.def.expect("a quantity makes a definition");
        assert_eq!(def.scale, Scale { num: 100, den: 1 });
        let words = [(-15_003_i32 >> 16) as u16, -15_003_i32 as u16];
        assert!(base_unit_text(&def, &words, None).ends_with("(-1500300 mW)"));
        let b = parse_adhoc("input:12:f32:ABCD:scale=0.001").expect("valid");
        assert_eq!(b.scale, Some(Scale { num: 1, den: 1000 }));
        assert_eq!(
            scaled_text(&RawValue::Float32(1500.25), Scale { num: 1, den: 1000 }),
            "1.50025"
        );
        assert_eq!(
            scaled_text(&RawValue::Int(-15), Scale { num: 1, den: 10 }),
            "-1.5"
        );
        assert_eq!(
            scaled_text(&RawValue::Int(7), Scale { num: 1, den: 1000 }),
            "0.007"
        );
        let e = parse_adhoc("holding:0:i32:quantity=power").expect_err("power needs a unit");
        assert!(e.to_string().contains("mW"), "{e}");
        assert!(parse_adhoc("holding:0:unit=W").is_err());
        assert!(parse_adhoc("holding:0:i16:ABCD:extra").is_err());
        assert!(parse_adhoc("holding:0:colour=red").is_err());
    }
}
