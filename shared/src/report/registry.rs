//! The device registry a verifier trusts: for each device id, the Ed25519
//! public keys it signs with (each valid for a period), or an explicit
//! statement that it is a third-party device that does not sign.
//!
//! Verification fails closed against it ([`TrustedDevices::check`]): a
//! device a report lists that the registry does not know (unless the
//! report itself lists it as an `unregistered`, unsigned device, which
//! earns nothing), a listed key
//! that is not one of the device's keys valid over the whole period, a
//! registered signing device that a report lists as unsigned, and a device
//! registered as unsigned that a report lists with a key are all rejected.
//! Keys are compared by their bytes (the JWK `x`), never by `kid`.
//!
//! File format (JSON; `mrv-gateway registry export` writes it from a
//! gateway config):
//!
//! ```json
//! {
//!   "devices": [
//!     {"id": "pv-meter-1", "keys": [
//!       {"jwk": {"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"},
//!        "valid_from": "2026-01-01T00:00:00Z", "valid_until": null}]},
//!     {"id": "grid-meter", "unsigned": true}
//!   ]
//! }
//! ```
//!
//! `valid_from` / `valid_until` are RFC 3339 UTC times or `null` (no
//! bound); a key covers a period `[start, end)` when `valid_from <= start`
//! and `end <= valid_until`.

use super::ReportError;
use super::jwk::{Jwk, unb64};
use super::model::{Period, Report, Signing};
use crate::ids::DeviceId;
use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

/// One key of a device, with its validity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisteredKey {
    /// The public key.
    pub jwk: Jwk,
    /// RFC 3339 time from which the key signs (`None`: always).
    #[serde(default)]
    pub valid_from: Option<String>,
    /// RFC 3339 time from which it no longer signs (`None`: no end).
    #[serde(default)]
    pub valid_until: Option<String>,
}

/// One device of the registry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisteredDevice {
    /// Device id.
    pub id: DeviceId,
    /// A third-party device that does not sign its frames.
    #[serde(default, skip_serializing_if = "core::ops::Not::not")]
    pub unsigned: bool,
    /// Its keys (empty when `unsigned`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<RegisteredKey>,
}

/// The registry file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceRegistry {
    /// Devices, by id (unique).
    pub devices: Vec<RegisteredDevice>,
}

/// A key in checked form.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Key {
    x: [u8; 32],
    from_ms: Option<i128>,
    until_ms: Option<i128>,
}

/// A registry checked and indexed, ready for verification.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedDevices {
    devices: BTreeMap<DeviceId, Option<Vec<Key>>>,
}

/// Unix ms of an RFC 3339 time.
pub fn rfc3339_ms(s: &str) -> Option<i128> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()?;
    Some(t.unix_timestamp_nanos() / 1_000_000)
}

impl DeviceRegistry {
    /// Parses a registry file.
    pub fn from_json(bytes: &[u8]) -> Result<DeviceRegistry, ReportError> {
        serde_json::from_slice(bytes)
            .map_err(|e| ReportError::BadKey(format!("device registry: {e}")))
    }

    /// Checks the registry (ids unique, keys valid Ed25519 points, times
    /// RFC 3339, unsigned devices without keys, signing devices with keys).
    pub fn trusted(&self) -> Result<TrustedDevices, ReportError> {
        let mut devices = BTreeMap::new();
        for d in &self.devices {
            let bad =
                |why: String| ReportError::BadKey(format!("device registry, {}: {why}", d.id));
            let entry = if d.unsigned {
                if !d.keys.is_empty() {
                    return Err(bad(String::from("an unsigned device lists keys")));
                }
                None
            } else {
                if d.keys.is_empty() {
                    return Err(bad(String::from(
                        "no keys (say \"unsigned\": true for a device that does not sign)",
                    )));
                }
                let mut keys = Vec::new();
                for k in &d.keys {
                    let vk = k.jwk.verifying_key().map_err(|e| bad(format!("{e}")))?;
                    let time =
                        |t: &Option<String>, name: &str| -> Result<Option<i128>, ReportError> {
                            match t {
                                None => Ok(None),
                                Some(s) => rfc3339_ms(s).map(Some).ok_or_else(|| {
                                    bad(format!("{name} {s:?} is not an RFC 3339 time"))
                                }),
                            }
                        };
                    keys.push(Key {
                        x: vk.to_bytes(),
                        from_ms: time(&k.valid_from, "valid_from")?,
                        until_ms: time(&k.valid_until, "valid_until")?,
                    });
                }
                Some(keys)
            };
            if devices.insert(d.id.clone(), entry).is_some() {
                return Err(bad(String::from("listed twice")));
            }
        }
        Ok(TrustedDevices { devices })
    }
}

impl TrustedDevices {
    /// Number of devices.
    pub fn len(&self) -> usize {
        self.devices.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.devices.is_empty()
    }

    /// Checks every device `report` lists against the registry (see the
    /// module doc).
    pub fn check(&self, report: &Report) -> Result<(), ReportError> {
        let period = report.header.period;
        for d in &report.devices {
            let Some(entry) = self.devices.get(&d.id) else {
                // A device the gateway itself does not know is listed as
                // `unregistered` and earns nothing; any other unknown device
                // is refused.
                if d.kind == "unregistered" && d.signing == Signing::Unsigned {
                    continue;
                }
                return Err(ReportError::DeviceNotRegistered(d.id.clone()));
            };
            match (entry, &d.signing) {
                (None, Signing::Unsigned) => {}
                (None, Signing::Ed25519 { .. }) => {
                    return Err(ReportError::DeviceKeyNotRegistered(d.id.clone()));
                }
                (Some(_), Signing::Unsigned) => {
                    return Err(ReportError::DeviceUnsignedMismatch(d.id.clone()));
                }
                (Some(keys), Signing::Ed25519 { x, .. }) => {
                    let listed = unb64(x).ok();
                    if !keys
                        .iter()
                        .any(|k| listed.as_deref() == Some(&k.x[..]) && covers(k, &period))
                    {
                        return Err(ReportError::DeviceKeyMismatch(d.id.clone()));
                    }
                }
            }
        }
        Ok(())
    }
}

fn covers(k: &Key, p: &Period) -> bool {
    k.from_ms.is_none_or(|f| f <= i128::from(p.start_ms))
        && k.until_ms.is_none_or(|u| i128::from(p.end_ms) <= u)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_validity() {
        assert_eq!(rfc3339_ms("1970-01-01T00:00:01Z"), Some(1000));
        assert_eq!(rfc3339_ms("2026-02-30T00:00:00Z"), None);
        let k = Key {
            x: [0; 32],
            from_ms: Some(1000),
            until_ms: Some(5000),
        };
        assert!(covers(
            &k,
            &Period {
                start_ms: 1000,
                end_ms: 5000
            }
        ));
        assert!(!covers(
            &k,
            &Period {
                start_ms: 999,
                end_ms: 2000
            }
        ));
        assert!(!covers(
            &k,
            &Period {
                start_ms: 4000,
                end_ms: 5001
            }
        ));
    }
}
