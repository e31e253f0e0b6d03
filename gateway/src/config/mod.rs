//! Configuration: the TOML file's structs ([`ConfigFile`]) and the validated,
//! typed [`GatewayConfig`] that the rest of the gateway uses.
//!
//! Invariants:
//! - unknown keys are errors (`deny_unknown_fields` on every section), so a
//!   typo never silently falls back to a default;
//! - every error names the file, the line and column where the text has
//!   them, the key path (`mqtt.listen`, `devices[2].public_key`) and the
//!   problem in a plain sentence ([`ConfigError`], [`error_text`]): a typo
//!   of a key gets "did you mean", a value of the wrong type says what to
//!   write instead;
//! - nothing runs before [`load`] has turned the file into a [`GatewayConfig`];
//! - relative paths in the file are relative to the file's directory.
//!
//! Each subsystem with its own settings defines its section type next to its
//! code (e.g. `modbus::config`) and is referenced from [`ConfigFile`].

#[cfg(test)]
mod calculation_tests;
mod error_text;
pub mod preflight;

pub use error_text::{locate_key, plain_problem};

// The device and MQTT sections belong to the ingest crate (they configure
// what it admits and how it listens); the whole file is read here.
pub use mrv_gateway_ingest::config::{
    BrokerMode, Calibration, ChannelDeclaration, ChannelFact, ChannelFacts, DeviceInfo, DeviceKind,
    DeviceRegistry, DeviceSection, MqttConfig, MqttSection, MqttUser, parse_public_key,
};

use mrv_shared::ids::SiteId;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use mrv_shared::config_error::ConfigError;

/// The config file as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// The project site this gateway serves.
    pub site: SiteSection,
    /// This gateway.
    pub gateway: GatewaySection,
    /// MQTT ingest: embedded broker (default) or an external one.
    #[serde(default)]
    pub mqtt: MqttSection,
    /// The durable reading buffer.
    #[serde(default)]
    pub buffer: BufferSection,
    /// Devices allowed to send data, with their metadata and keys.
    #[serde(default)]
    pub devices: Vec<DeviceSection>,
    /// Upload of signed reports to the MRV backend (off without `url`).
    #[serde(default)]
    pub upload: crate::upload::config::UploadSection,
    /// Local diagnostics page, JSON API and `/metrics`.
    #[serde(default)]
    pub diagnostics: crate::diagnostics::config::DiagnosticsSection,
    /// Signed monitoring reports: period, methodology and parameters, key.
    /// Omit the section to run without building reports.
    #[serde(default)]
    pub report: Option<crate::report::config::ReportSection>,
    /// Modbus devices the gateway polls (TCP and RTU buses).
    #[serde(default)]
    pub modbus: crate::modbus::config::ModbusSection,
    /// Third-party MQTT payloads mapped to readings (`[[mapping]]`).
    #[serde(default)]
    pub mapping: Vec<crate::mapping::MappingSection>,
}

/// `[site]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteSection {
    /// Site identifier (1-32 of `A-Za-z0-9_.-`); part of every MQTT topic.
    pub id: String,
    /// Human-readable site name.
    #[serde(default)]
    pub name: String,
    /// JCM project reference, e.g. `TH-JCM-2025-017`.
    #[serde(default)]
    pub project: String,
    /// Methodology reference, e.g. `TH_AM001 ver01.0`.
    #[serde(default)]
    pub methodology: String,
}

/// `[gateway]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewaySection {
    /// Gateway identifier (1-32 of `A-Za-z0-9_.-`).
    pub id: String,
    /// Directory for the buffer, reports and keys (created if missing).
    pub data_dir: PathBuf,
}

/// `[buffer]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BufferSection {
    /// Byte limit of the buffer on disk. At the limit the gateway stops
    /// acking new frames (devices keep them) and raises an alarm.
    pub max_bytes: u64,
    /// sled page cache, bytes (default 1 MiB). Caps the buffer's share of
    /// memory; issue 12's workload sustained 40,000 msg/s with 1 MiB as
    /// with 4 MiB, 1.4 MB less RSS (docs/BENCHMARKS.md).
    pub cache_bytes: u64,
    /// Days to keep readings after every report covering them was delivered.
    pub keep_delivered_days: u32,
    /// Group-commit window, ms: a commit smaller than `max_commit_frames`
    /// waits this long for more frames. 0 (default): no timed wait; frames
    /// that queue while a flush runs share the next one (natural group
    /// commit). A window only lengthens every commit of clients whose
    /// in-flight publishes are all in the batch already (issue 11's bench:
    /// docs/BENCHMARKS.md); it saves flushes only for sparse arrivals.
    pub commit_window_ms: u64,
    /// Most frames in one group commit.
    pub max_commit_frames: usize,
    /// Give up a device's missing frames after it has been sending frames
    /// above the hole for this many minutes (the device lost them for good;
    /// its later frames are otherwise never acked). Each give-up is a
    /// `frames_given_up` event carried into the report. Unset (default):
    /// only an operator gives frames up (`mrv-gateway buffer give-up`).
    pub give_up_after_minutes: Option<u32>,
    /// Free space on the data directory's file system below which new
    /// frames are refused (devices keep them, as with a full buffer), bytes;
    /// what is left is for reports, events and the buffer's own bookkeeping.
    pub min_free_bytes: u64,
    /// Free space below which the gateway raises a disk-space alarm (log,
    /// status, metrics, `disk_space_low` event), bytes; at least `min_free_bytes`.
    pub warn_free_bytes: u64,
}

impl Default for BufferSection {
    fn default() -> Self {
        Self {
            max_bytes: 1 << 30,
            cache_bytes: 1 << 20,
            keep_delivered_days: 30,
            commit_window_ms: 0,
            max_commit_frames: 2048,
            give_up_after_minutes: None,
            min_free_bytes: 64 << 20,
            warn_free_bytes: 256 << 20,
        }
    }
}

/// Validated buffer settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BufferSettings {
    /// Buffer directory (`<data_dir>/buffer`).
    pub path: PathBuf,
    /// See [`BufferSection::max_bytes`].
    pub max_bytes: u64,
    /// See [`BufferSection::cache_bytes`].
    pub cache_bytes: u64,
    /// See [`BufferSection::keep_delivered_days`].
    pub keep_delivered: Duration,
    /// See [`BufferSection::commit_window_ms`].
    pub commit_window: Duration,
    /// See [`BufferSection::max_commit_frames`].
    pub max_commit_frames: usize,
    /// See [`BufferSection::give_up_after_minutes`].
    pub give_up_after: Option<Duration>,
    /// See [`BufferSection::min_free_bytes`].
    pub min_free_bytes: u64,
    /// See [`BufferSection::warn_free_bytes`].
    pub warn_free_bytes: u64,
}

/// Site identity as used in reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteInfo {
    /// Site id.
    pub id: SiteId,
    /// Name.
    pub name: String,
    /// Project reference.
    pub project: String,
    /// Methodology reference.
    pub methodology: String,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Where it was read from.
    pub source: PathBuf,
    /// The site.
    pub site: SiteInfo,
    /// Gateway id.
    pub gateway_id: mrv_shared::ids::DeviceId,
    /// Data directory (absolute or relative to the working directory).
    pub data_dir: PathBuf,
    /// MQTT settings.
    pub mqtt: MqttConfig,
    /// Buffer settings.
    pub buffer: BufferSettings,
    /// Known devices.
    pub devices: DeviceRegistry,
    /// Modbus devices and buses (empty when none are configured).
    pub modbus: crate::modbus::config::ValidModbusConfig,
    /// Third-party MQTT mappings, paths compiled.
    pub mappings: Vec<crate::mapping::ValidMapping>,
    /// Report settings, when reports are built.
    pub report: Option<crate::report::config::ReportSection>,
    /// The calculations reports carry, validated against the devices and
    /// their channels (empty without `[report]`).
    pub calculations: Vec<crate::report::config::CalculationConfig>,
    /// What each device's channels are known to measure (from Modbus maps
    /// and `[[devices]].channels`), by device id.
    pub channel_facts: std::collections::BTreeMap<mrv_shared::ids::DeviceId, ChannelFacts>,
    /// Upload settings, when reports are uploaded.
    pub upload: Option<crate::upload::config::UploadConfig>,
    /// Diagnostics page settings.
    pub diagnostics: crate::diagnostics::config::ValidDiagnosticsConfig,
    /// The file as parsed, for sections validated by their own modules.
    pub file: ConfigFile,
}

/// What the configuration says each device's channels measure: Modbus
/// register maps and SunSpec points (quantity, kind), `[[devices]].channels`
/// declarations (any of quantity, kind, flow; they must agree with a
/// register map), and the device kind's default energy direction.
fn channel_facts(
    devices: &DeviceRegistry,
    modbus: &crate::modbus::config::ValidModbusConfig,
    path: &Path,
) -> Result<std::collections::BTreeMap<mrv_shared::ids::DeviceId, ChannelFacts>, ConfigError> {
    let mut out = std::collections::BTreeMap::new();
    for d in &modbus.devices {
        let facts: &mut ChannelFacts = out.entry(d.id.clone()).or_default();
        for r in &d.map.registers {
            facts.insert(
                r.name.clone(),
                ChannelFact {
                    quantity: r.quantity,
                    kind: Some(r.kind),
                    flow: None,
                },
            );
        }
        if let Some(ss) = &d.sunspec {
            for m in &ss.models {
                for p in &m.points {
                    facts.insert_numbered(
                        crate::modbus::sunspec::channel_name(&m.prefix, &p.name, 1),
                        ChannelFact {
                            quantity: p.quantity,
                            kind: Some(p.kind),
                            flow: None,
                        },
                    );
                }
            }
        }
    }
    for (i, d) in devices.iter().enumerate() {
        let facts = out.entry(d.id.clone()).or_default();
        for (j, c) in d.channels.iter().enumerate() {
            let key = format!("devices[{i}].channels[{j}]");
            let id = mrv_shared::ids::ChannelId::new(&c.id)
                .map_err(|e| ConfigError::new(path, format!("{key}.id"), e.to_string()))?;
            match facts.get(&id) {
                Some(known) => {
                    if c.quantity.is_some_and(|q| q != known.quantity)
                        || c.kind.is_some_and(|k| Some(k) != known.kind)
                    {
                        return Err(ConfigError::new(
                            path,
                            key,
                            format!(
                                "the Modbus register map says {}/{} is {} ({:?}); the declaration disagrees",
                                d.id,
                                id,
                                known.quantity.name(),
                                known.kind
                            ),
                        ));
                    }
                    let flow = c.flow.or(known.flow);
                    let mut fact = known;
                    fact.flow = flow;
                    facts.insert(id, fact);
                }
                None => {
                    let Some(quantity) = c.quantity else {
                        return Err(ConfigError::new(
                            path,
                            format!("{key}.quantity"),
                            format!(
                                "say what {}/{} measures (quantity = \"energy\", ...)",
                                d.id, id
                            ),
                        ));
                    };
                    facts.insert(
                        id,
                        ChannelFact {
                            quantity,
                            kind: c.kind,
                            flow: c.flow,
                        },
                    );
                }
            }
        }
        if let Some(flow) = d.kind.default_energy_flow() {
            let ids: Vec<mrv_shared::ids::ChannelId> = d
                .channels
                .iter()
                .filter_map(|c| mrv_shared::ids::ChannelId::new(&c.id).ok())
                .collect();
            for id in ids {
                if let Some(f) = facts.get_mut(&id)
                    && f.quantity == mrv_shared::quantity::Quantity::Energy
                    && f.flow.is_none()
                {
                    f.flow = Some(flow);
                }
            }
        }
    }
    Ok(out)
}

/// Reads and validates a config file.
pub fn load(path: &Path) -> Result<GatewayConfig, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::new(path, "", format!("cannot read the file: {e}")))?;
    parse(&text, path)
}

/// Parses and validates config text; `path` names it in errors and anchors
/// relative paths.
pub fn parse(text: &str, path: &Path) -> Result<GatewayConfig, ConfigError> {
    let de = toml::de::Deserializer::parse(text).map_err(|e| {
        ConfigError::new(
            path,
            "",
            format!("not valid TOML: {}", e.message().trim_end()),
        )
        .at(e.span().map(|s| error_text::line_col(text, s.start)))
    })?;
    let file: ConfigFile = serde_path_to_error::deserialize(de).map_err(|e| {
        let key = e.path().to_string();
        let key = if key == "." { String::new() } else { key };
        let message = e.inner().message();
        // An unknown key: point at the key itself, not at its table.
        let unknown = message
            .strip_prefix("unknown field `")
            .and_then(|r| r.split('`').next())
            .map(|f| {
                if key.is_empty() {
                    f.to_string()
                } else {
                    format!("{key}.{f}")
                }
            });
        let at = unknown
            .as_deref()
            .and_then(|k| locate_key(text, k))
            .or_else(|| {
                e.inner()
                    .span()
                    .map(|s| error_text::line_col(text, s.start))
            })
            .or_else(|| locate_key(text, &key));
        let problem = plain_problem(&key, message);
        ConfigError::new(path, key, problem).at(at)
    })?;
    validate(file, path).map_err(|e| {
        let at = locate_key(text, &e.key);
        e.at(at)
    })
}

/// Turns a parsed file into a typed config.
pub fn validate(file: ConfigFile, path: &Path) -> Result<GatewayConfig, ConfigError> {
    let base = path.parent().unwrap_or(Path::new("."));
    let site = SiteInfo {
        id: SiteId::new(&file.site.id)
            .map_err(|e| ConfigError::new(path, "site.id", e.to_string()))?,
        name: file.site.name.clone(),
        project: file.site.project.clone(),
        methodology: file.site.methodology.clone(),
    };
    let gateway_id = mrv_shared::ids::DeviceId::new(&file.gateway.id)
        .map_err(|e| ConfigError::new(path, "gateway.id", e.to_string()))?;
    let data_dir = base.join(&file.gateway.data_dir);
    let b = &file.buffer;
    if b.max_bytes < (1 << 20) {
        return Err(ConfigError::new(
            path,
            "buffer.max_bytes",
            "must be at least 1048576 (1 MiB)",
        ));
    }
    if b.cache_bytes < (256 << 10) {
        return Err(ConfigError::new(
            path,
            "buffer.cache_bytes",
            "must be at least 262144 (256 KiB)",
        ));
    }
    if b.max_commit_frames == 0 {
        return Err(ConfigError::new(
            path,
            "buffer.max_commit_frames",
            "must be at least 1",
        ));
    }
    if b.commit_window_ms > 1000 {
        return Err(ConfigError::new(
            path,
            "buffer.commit_window_ms",
            "at most 1000 ms (devices wait for acks)",
        ));
    }
    if b.warn_free_bytes < b.min_free_bytes {
        return Err(ConfigError::new(
            path,
            "buffer.warn_free_bytes",
            "must be at least buffer.min_free_bytes (the alarm comes before frames are refused)",
        ));
    }
    let buffer = BufferSettings {
        path: data_dir.join("buffer"),
        max_bytes: b.max_bytes,
        cache_bytes: b.cache_bytes,
        keep_delivered: Duration::from_secs(u64::from(b.keep_delivered_days) * 86_400),
        commit_window: Duration::from_millis(b.commit_window_ms),
        max_commit_frames: b.max_commit_frames,
        give_up_after: b
            .give_up_after_minutes
            .map(|m| Duration::from_secs(u64::from(m) * 60)),
        min_free_bytes: b.min_free_bytes,
        warn_free_bytes: b.warn_free_bytes,
    };
    if b.give_up_after_minutes == Some(0) {
        return Err(ConfigError::new(
            path,
            "buffer.give_up_after_minutes",
            "must be at least 1 (leave it out to give frames up only by hand)",
        ));
    }
    let mqtt = file.mqtt.validate(path, base)?;
    let mut devices = DeviceRegistry::from_sections(&file.devices, path)?;
    let modbus = file.modbus.validate_in(base, path)?;
    let mappings = crate::mapping::validate_mappings(&file.mapping, path)?;
    for d in &modbus.devices {
        // A polled meter is a device of the site too; `[[devices]]` may
        // describe it (serial, class, calibration), otherwise it is added bare.
        if devices.get(&d.id).is_none() {
            devices.insert(DeviceInfo {
                id: d.id.clone(),
                kind: DeviceKind::ModbusMeter,
                serial: String::new(),
                meter_class: String::new(),
                calibration: None,
                public_key: None,
                channels: Vec::new(),
            });
        }
    }
    let channel_facts = channel_facts(&devices, &modbus, path)?;
    let (report, calculations) = match &file.report {
        None => (None, Vec::new()),
        Some(r) => {
            let records = crate::report::device_records(&devices, r);
            let calcs = r.validate_against(path, &records, &channel_facts)?;
            (Some(r.clone()), calcs)
        }
    };
    let upload = file.upload.validate(path, base)?;
    if upload.is_some() && report.is_none() {
        return Err(ConfigError::new(
            path,
            "upload",
            "uploading needs reports: add a [report] section",
        ));
    }
    let diagnostics = file.diagnostics.validate(path)?;
    Ok(GatewayConfig {
        source: path.to_path_buf(),
        site,
        gateway_id,
        data_dir,
        mqtt,
        buffer,
        calculations,
        channel_facts,
        devices,
        modbus,
        mappings,
        report,
        upload,
        diagnostics,
        file,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[site]
id = "site-a"
[gateway]
id = "gw-1"
data_dir = "data"
"#;

    #[test]
    fn minimal_config_gets_defaults() {
        let c = parse(MINIMAL, Path::new("/etc/mrv/gateway.toml")).unwrap();
        assert_eq!(c.data_dir, Path::new("/etc/mrv/data"));
        assert_eq!(c.buffer.path, Path::new("/etc/mrv/data/buffer"));
        assert_eq!(c.mqtt.mode, BrokerMode::Embedded);
        assert!(c.devices.is_empty());
    }

    #[test]
    fn unknown_key_names_file_and_path() {
        let text = format!("{MINIMAL}\n[buffer]\nmax_byte = 5\n");
        let e = parse(&text, Path::new("g.toml")).unwrap_err();
        assert_eq!(e.file, Path::new("g.toml"));
        assert!(e.key.starts_with("buffer"), "{}", e.key);
        assert!(
            e.problem.contains("unknown key `max_byte`"),
            "{}",
            e.problem
        );
    }

    #[test]
    fn bad_value_names_its_key() {
        let text = MINIMAL.replace("\"site-a\"", "\"site a\"");
        let e = parse(&text, Path::new("g.toml")).unwrap_err();
        assert_eq!(e.key, "site.id");
        let text = format!("{MINIMAL}\n[buffer]\nmax_bytes = \"lots\"\n");
        let e = parse(&text, Path::new("g.toml")).unwrap_err();
        assert_eq!(e.key, "buffer.max_bytes");
    }

    #[test]
    fn syntax_error_says_line_and_column() {
        let e = parse("[site]\nid = \"a\"\nname = \n", Path::new("g.toml")).unwrap_err();
        assert_eq!(e.at.map(|a| a.0), Some(3), "{e}");
        assert!(e.to_string().starts_with("g.toml:3:"), "{e}");
    }

    #[test]
    fn a_typo_of_a_key_gets_did_you_mean_and_its_line() {
        let text = format!("{MINIMAL}\n[buffer]\nmax_byte = 5000000\n");
        let e = parse(&text, Path::new("g.toml")).unwrap_err();
        assert!(e.problem.contains("did you mean `max_bytes`?"), "{e}");
        assert_eq!(e.at, Some((9, 1)), "{e}");
        let text = MINIMAL.replace("data_dir", "datadir");
        let e = parse(&text, Path::new("g.toml")).unwrap_err();
        assert!(e.problem.contains("did you mean `data_dir`?"), "{e}");
    }

    #[test]
    fn a_value_of_the_wrong_type_is_a_plain_sentence() {
        let text = format!("{MINIMAL}\n[buffer]\nmax_commit_frames = \"65536\"\n");
        let e = parse(&text, Path::new("g.toml")).unwrap_err();
        assert_eq!(e.key, "buffer.max_commit_frames");
        assert_eq!(
            e.problem,
            "must be a whole number of 0 or more, but it is text in quotes (\"65536\"): write 65536 without the quotes"
        );
        assert_eq!(e.at, Some((9, 21)), "{e}");
        let text = format!("{MINIMAL}\n[buffer]\nmax_bytes = -1\n");
        let e = parse(&text, Path::new("g.toml")).unwrap_err();
        assert!(
            e.problem.contains("must be a whole number of 0 or more"),
            "{e}"
        );
        let e = parse(
            "[site]\n[gateway]\nid = \"g\"\ndata_dir = \"d\"\n",
            Path::new("g.toml"),
        )
        .unwrap_err();
        assert_eq!(e.problem, "the required key `id` is missing", "{e}");
        assert_eq!(e.at, Some((1, 1)), "{e}");
    }

    #[test]
    fn validation_errors_point_at_their_line() {
        let text = MINIMAL.replace("\"site-a\"", "\"site a\"");
        let e = parse(&text, Path::new("g.toml")).unwrap_err();
        assert_eq!(e.at, Some((3, 1)), "{e}");
    }
}
