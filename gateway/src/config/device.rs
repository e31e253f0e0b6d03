//! `[[devices]]`: the devices a site has, their metadata for reports
//! (serial, meter class, calibration) and their public keys.
//!
//! A device with `public_key` must send frames signed by that key; a device
//! without one is a third-party unsigned device and its readings are marked
//! unsigned in reports.

use super::ConfigError;
use base64::Engine;
use ed25519_dalek::VerifyingKey;
use mrv_shared::ids::DeviceId;
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
}

impl DeviceInfo {
    /// Key id of the device key: the base64url public key itself (short and
    /// self-describing for Ed25519).
    pub fn key_id(&self) -> Option<String> {
        self.public_key
            .map(|k| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(k.as_bytes()))
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
                for (k, v) in [("calibrated_on", &c.calibrated_on), ("due", &c.due)] {
                    if !is_iso_date(v) {
                        return Err(ConfigError::new(
                            file,
                            key(&format!("calibration.{k}")),
                            "must be a date YYYY-MM-DD",
                        ));
                    }
                }
            }
            let info = DeviceInfo {
                id: id.clone(),
                kind: s.kind,
                serial: s.serial.clone(),
                meter_class: s.meter_class.clone(),
                calibration: s.calibration.clone(),
                public_key,
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

fn is_iso_date(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_bad_key_and_duplicate_ids() {
        let s = |id: &str, pk: Option<&str>| DeviceSection {
            id: id.into(),
            kind: DeviceKind::SolarMeter,
            serial: String::new(),
            meter_class: String::new(),
            calibration: None,
            public_key: pk.map(String::from),
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
