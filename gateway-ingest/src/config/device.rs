//! `[[devices]]`: the devices a site has, their metadata for reports
//! (serial, meter class, calibration) and their public keys.
//!
//! A device with `public_key` must send frames signed by that key; a device
//! without one is a third-party unsigned device and its readings are marked
//! unsigned in reports.

use super::ConfigError;
use base64::Engine;
use ed25519_dalek::VerifyingKey;
use mrv_shared::ids::{ChannelId, DeviceId};
use mrv_shared::methodology::EnergyFlow;
use mrv_shared::quantity::{Quantity, ValueKind};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// What kind of equipment a device is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceKind {
    /// PV energy meter (S0 pulses or Modbus).
    SolarMeter,
    /// Solar irrigation pump (energy, flow, run status).
    IrrigationPump,
    /// Biogas digester (gas flow, CH4, temperature, pressure, flare).
    Digester,
    /// Paddy field water tube level (AWD).
    PaddyWaterLevel,
    /// A Modbus meter or inverter polled by the gateway.
    ModbusMeter,
    /// Anything else.
    Other,
}

/// Calibration record of a meter.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Calibration {
    /// Certificate reference.
    pub certificate: String,
    /// Date of calibration, `YYYY-MM-DD`.
    pub calibrated_on: String,
    /// Date the calibration expires, `YYYY-MM-DD`.
    pub due: String,
}

/// One `[[devices]]` entry as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceSection {
    /// Device id (as in its MQTT topic).
    pub id: String,
    /// Equipment kind.
    pub kind: DeviceKind,
    /// Manufacturer serial number.
    #[serde(default)]
    pub serial: String,
    /// Meter accuracy class, e.g. `IEC 62053-21 class 1`.
    #[serde(default)]
    pub meter_class: String,
    /// Calibration record, if the meter has one.
    #[serde(default)]
    pub calibration: Option<Calibration>,
    /// Ed25519 public key, 32 bytes base64url (the `x` of its JWK). Frames
    /// must be signed by it. Omit for third-party unsigned devices.
    #[serde(default)]
    pub public_key: Option<String>,
    /// What the device's channels measure, so that report inputs can be
    /// checked before anything runs (see `[report.calculations]`). Needed
    /// for a channel that is bound to a calculation input, unless a Modbus
    /// register map already says its quantity and kind (then only `flow`
    /// for energy, when the device kind gives no default).
    #[serde(default)]
    pub channels: Vec<ChannelDeclaration>,
}

/// One `channels` entry of a `[[devices]]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelDeclaration {
    /// Channel id, as in the device's frames.
    pub id: String,
    /// What it measures (omit when a Modbus register map says it).
    #[serde(default)]
    pub quantity: Option<Quantity>,
    /// `instant`, `counter` or `delta` (omit when a register map says it).
    #[serde(default)]
    pub kind: Option<ValueKind>,
    /// For energy: which direction the meter measures (`generation`,
    /// `consumption`, `import`, `export`, `net`). A solar meter's energy
    /// defaults to `generation`, an irrigation pump's to `consumption`.
    #[serde(default)]
    pub flow: Option<EnergyFlow>,
}

/// What the configuration says one channel measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelFact {
    /// Quantity.
    pub quantity: Quantity,
    /// Value kind, when known.
    pub kind: Option<ValueKind>,
    /// Energy direction, when known.
    pub flow: Option<EnergyFlow>,
}

/// The channels one device is known to have: exact names, and name stems
/// that may carry a `_<n>` instance suffix (SunSpec models repeated in one
/// chain).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChannelFacts {
    exact: BTreeMap<ChannelId, ChannelFact>,
    numbered: BTreeMap<String, ChannelFact>,
}

impl ChannelFacts {
    /// Adds a channel known by its exact id.
    pub fn insert(&mut self, id: ChannelId, fact: ChannelFact) {
        self.exact.insert(id, fact);
    }

    /// Adds a stem: `stem` and `stem_2`, `stem_3`, ... all have `fact`.
    pub fn insert_numbered(&mut self, stem: String, fact: ChannelFact) {
        self.numbered.insert(stem, fact);
    }

    /// What `id` measures, if the configuration says.
    pub fn get(&self, id: &ChannelId) -> Option<ChannelFact> {
        if let Some(f) = self.exact.get(id) {
            return Some(*f);
        }
        let s = id.as_str();
        if let Some(f) = self.numbered.get(s) {
            return Some(*f);
        }
        let (stem, n) = s.rsplit_once('_')?;
        (n.parse::<u32>().is_ok_and(|n| n >= 2))
            .then(|| self.numbered.get(stem).copied())
            .flatten()
    }

    /// Mutable access to an exact entry.
    pub fn get_mut(&mut self, id: &ChannelId) -> Option<&mut ChannelFact> {
        self.exact.get_mut(id)
    }

    /// Every known channel name (stems as written).
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.exact
            .keys()
            .map(ChannelId::as_str)
            .chain(self.numbered.keys().map(String::as_str))
    }
}

impl DeviceKind {
    /// The energy direction of this kind's energy channels, when the kind
    /// implies one.
    pub fn default_energy_flow(self) -> Option<EnergyFlow> {
        match self {
            DeviceKind::SolarMeter => Some(EnergyFlow::Generation),
            DeviceKind::IrrigationPump => Some(EnergyFlow::Consumption),
            _ => None,
        }
    }
}

/// A registered device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    /// Id.
    pub id: DeviceId,
    /// Kind.
    pub kind: DeviceKind,
    /// Serial.
    pub serial: String,
    /// Meter class.
    pub meter_class: String,
    /// Calibration.
    pub calibration: Option<Calibration>,
    /// Public key; `None` = unsigned device.
    pub public_key: Option<VerifyingKey>,
    /// Declared channels.
    pub channels: Vec<ChannelDeclaration>,
}

impl DeviceInfo {
    /// Key id of the device key: its RFC 7638 JWK thumbprint.
    pub fn key_id(&self) -> Option<String> {
        self.public_key
            .as_ref()
            .map(mrv_shared::report::jwk::thumbprint)
    }
}

/// The devices of a site, by id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceRegistry {
    devices: BTreeMap<DeviceId, DeviceInfo>,
}

impl DeviceRegistry {
    /// Validates the `[[devices]]` entries.
    pub fn from_sections(sections: &[DeviceSection], file: &Path) -> Result<Self, ConfigError> {
        let mut devices = BTreeMap::new();
        for (i, s) in sections.iter().enumerate() {
            let key = |k: &str| format!("devices[{i}].{k}");
            let id = DeviceId::new(&s.id)
                .map_err(|e| ConfigError::new(file, key("id"), e.to_string()))?;
            let public_key = match &s.public_key {
                None => None,
                Some(text) => Some(
                    parse_public_key(text)
                        .map_err(|p| ConfigError::new(file, key("public_key"), p))?,
                ),
            };
            if let Some(c) = &s.calibration {
                let mut days = Vec::new();
                for (k, v) in [("calibrated_on", &c.calibrated_on), ("due", &c.due)] {
                    match mrv_shared::report::calc::date_start_ms(v) {
                        Some(d) => days.push(d),
                        None => {
                            return Err(ConfigError::new(
                                file,
                                key(&format!("calibration.{k}")),
                                format!("{v:?} is not a real date YYYY-MM-DD"),
                            ));
                        }
                    }
                }
                if days[0] >= days[1] {
                    return Err(ConfigError::new(
                        file,
                        key("calibration.due"),
                        format!("{} is not after calibrated_on {}", c.due, c.calibrated_on),
                    ));
                }
            }
            for (j, ch) in s.channels.iter().enumerate() {
                if let Err(e) = ChannelId::new(&ch.id) {
                    return Err(ConfigError::new(
                        file,
                        key(&format!("channels[{j}].id")),
                        e.to_string(),
                    ));
                }
                if ch.flow.is_some() && ch.quantity.is_some_and(|q| q != Quantity::Energy) {
                    return Err(ConfigError::new(
                        file,
                        key(&format!("channels[{j}].flow")),
                        "only energy channels have a flow",
                    ));
                }
                if s.channels[..j].iter().any(|o| o.id == ch.id) {
                    return Err(ConfigError::new(
                        file,
                        key(&format!("channels[{j}].id")),
                        format!("channel {} is declared twice", ch.id),
                    ));
                }
            }
            let info = DeviceInfo {
                id: id.clone(),
                kind: s.kind,
                serial: s.serial.clone(),
                meter_class: s.meter_class.clone(),
                calibration: s.calibration.clone(),
                public_key,
                channels: s.channels.clone(),
            };
            if devices.insert(id.clone(), info).is_some() {
                return Err(ConfigError::new(
                    file,
                    key("id"),
                    format!("device {id} is listed twice"),
                ));
            }
        }
        Ok(Self { devices })
    }

    /// Looks a device up.
    pub fn get(&self, id: &DeviceId) -> Option<&DeviceInfo> {
        self.devices.get(id)
    }

    /// All devices in id order.
    pub fn iter(&self) -> impl Iterator<Item = &DeviceInfo> {
        self.devices.values()
    }

    /// Number of devices.
    pub fn len(&self) -> usize {
        self.devices.len()
    }

    /// True when no device is registered.
    pub fn is_empty(&self) -> bool {
        self.devices.is_empty()
    }

    /// Adds or replaces a device (used for devices configured elsewhere, e.g. Modbus).
    pub fn insert(&mut self, info: DeviceInfo) {
        self.devices.insert(info.id.clone(), info);
    }
}

/// Parses a base64url (padded or not) Ed25519 public key.
pub fn parse_public_key(text: &str) -> Result<VerifyingKey, String> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text.trim().trim_end_matches('='))
        .map_err(|_| "not base64url".to_string())?;
    let arr: [u8; 32] = bytes
        .try_into()
        .map_err(|b: Vec<u8>| format!("{} bytes, an Ed25519 public key has 32", b.len()))?;
    VerifyingKey::from_bytes(&arr).map_err(|_| "not a valid Ed25519 point".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn impossible_calibration_dates_are_refused_with_their_key() {
        let mut s = DeviceSection {
            id: "m".into(),
            kind: DeviceKind::SolarMeter,
            serial: String::new(),
            meter_class: String::new(),
            calibration: Some(Calibration {
                certificate: "c".into(),
                calibrated_on: "2026-11-31".into(),
                due: "2028-01-01".into(),
            }),
            public_key: None,
            channels: Vec::new(),
        };
        let e =
            DeviceRegistry::from_sections(std::slice::from_ref(&s), Path::new("f")).unwrap_err();
        assert_eq!(e.key, "devices[0].calibration.calibrated_on");
        assert!(e.problem.contains("not a real date"), "{}", e.problem);
        s.calibration = Some(Calibration {
            certificate: "c".into(),
            calibrated_on: "2026-01-01".into(),
            due: "2027-02-30".into(),
        });
        let e =
            DeviceRegistry::from_sections(std::slice::from_ref(&s), Path::new("f")).unwrap_err();
        assert_eq!(e.key, "devices[0].calibration.due");
    }

    #[test]
    fn rejects_bad_key_and_duplicate_ids() {
        let s = |id: &str, pk: Option<&str>| DeviceSection {
            id: id.into(),
            kind: DeviceKind::SolarMeter,
            serial: String::new(),
            meter_class: String::new(),
            calibration: None,
            public_key: pk.map(String::from),
            channels: Vec::new(),
        };
        let e = DeviceRegistry::from_sections(&[s("a", Some("zz"))], Path::new("f")).unwrap_err();
        assert_eq!(e.key, "devices[0].public_key");
        let e = DeviceRegistry::from_sections(&[s("a", None), s("a", None)], Path::new("f"))
            .unwrap_err();
        assert_eq!(e.key, "devices[1].id");
        let pk = ed25519_dalek::SigningKey::from_bytes(&[3; 32]).verifying_key();
        let text = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(pk.as_bytes());
        let r = DeviceRegistry::from_sections(&[s("a", Some(&text))], Path::new("f")).unwrap();
        assert_eq!(
            r.get(&DeviceId::new("a").unwrap()).unwrap().public_key,
            Some(pk)
        );
    }
}
