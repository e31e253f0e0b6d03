//! Admission of one MQTT payload (pure): topic, size, decoding, device
//! registry and device signature. Either an [`Admitted`] frame or a
//! [`Rejection`] with a stable reason label (a counter name) and a detail
//! that names what is wrong.

use crate::config::DeviceRegistry;
use mrv_shared::ids::{DeviceId, SiteId};
use mrv_shared::wire::{DecodeError, Frame, binary, json, signature, topic};

pub use mrv_shared::wire::WireFormat;

/// A frame that may be written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admitted {
    /// The decoded frame.
    pub frame: Frame,
    /// The form it came in.
    pub format: WireFormat,
    /// True when its device signature was verified.
    pub signature_verified: bool,
}

/// Why a payload was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// Stable label, used as the counter name.
    pub reason: &'static str,
    /// The device, when it could be told (from the topic or the frame).
    pub device: Option<DeviceId>,
    /// What exactly is wrong.
    pub detail: String,
}

/// What admission checks against.
#[derive(Debug, Clone, Copy)]
pub struct AdmissionRules<'a> {
    /// This gateway's site.
    pub site: &'a SiteId,
    /// Registered devices.
    pub registry: &'a DeviceRegistry,
    /// Largest payload accepted.
    pub max_payload_bytes: usize,
    /// Accept devices missing from the registry (unsigned, unregistered).
    pub accept_unknown_devices: bool,
}

/// Decides whether a payload received on `topic_name` may be written.
pub fn admit(
    rules: &AdmissionRules<'_>,
    topic_name: &str,
    payload: &[u8],
) -> Result<Admitted, Rejection> {
    let reject = |reason, device: Option<&DeviceId>, detail: String| Rejection {
        reason,
        device: device.cloned(),
        detail,
    };
    let (site, device) = topic::parse_up_topic(topic_name)
        .map_err(|e| reject("bad_topic", None, format!("{e}: {topic_name:?}")))?;
    if &site != rules.site {
        return Err(reject(
            "wrong_site",
            Some(&device),
            format!(
                "topic site {site} is not this gateway's site {}",
                rules.site
            ),
        ));
    }
    if payload.len() > rules.max_payload_bytes {
        return Err(reject(
            "oversized",
            Some(&device),
            format!(
                "{} bytes, at most {} accepted",
                payload.len(),
                rules.max_payload_bytes
            ),
        ));
    }
    let (decoded, format) = match payload.first() {
        Some(b'M') => (binary::decode_frame_exact(payload), WireFormat::Binary),
        Some(b'{') => (json::decode_frame(payload), WireFormat::Json),
        Some(b) if b.is_ascii_whitespace() => (json::decode_frame(payload), WireFormat::Json),
        Some(_) => (binary::decode_frame_exact(payload), WireFormat::Binary),
        None => return Err(reject("empty", Some(&device), "empty payload".into())),
    };
    let frame = decoded.map_err(|e| match e {
        DecodeError::Incomplete { needed } => reject(
            "truncated",
            Some(&device),
            format!("payload ends early: at least {needed} more bytes expected"),
        ),
        DecodeError::Invalid(why) => reject(why.label(), Some(&device), why.to_string()),
    })?;
    if frame.site != site {
        return Err(reject(
            "wrong_site",
            Some(&device),
            format!("frame says site {}, topic says {site}", frame.site),
        ));
    }
    if frame.device != device {
        return Err(reject(
            "device_mismatch",
            Some(&device),
            format!("frame says device {}, topic says {device}", frame.device),
        ));
    }
    let signature_verified = match rules.registry.get(&device) {
        None if rules.accept_unknown_devices => false,
        None => {
            return Err(reject(
                "unknown_device",
                Some(&device),
                format!("device {device} is not in [[devices]]"),
            ));
        }
        Some(info) => match info.public_key {
            None => false,
            Some(key) => match signature::verify_frame(&frame, &key) {
                Ok(()) => true,
                Err(signature::SignatureError::Missing) => {
                    return Err(reject(
                        "missing_signature",
                        Some(&device),
                        "device has a registered key but the frame is unsigned".into(),
                    ));
                }
                Err(signature::SignatureError::Mismatch) => {
                    return Err(reject(
                        "bad_signature",
                        Some(&device),
                        format!(
                            "signature of frame seq {} does not verify with the registered key",
                            frame.seq
                        ),
                    ));
                }
            },
        },
    };
    Ok(Admitted {
        frame,
        format,
        signature_verified,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{DeviceKind, DeviceSection};
    use base64::Engine;
    use ed25519_dalek::SigningKey;
    use std::path::Path;

    fn registry(key: Option<&SigningKey>) -> DeviceRegistry {
        let pk = key.map(|k| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(k.verifying_key().as_bytes())
        });
        DeviceRegistry::from_sections(
            &[DeviceSection {
                id: "pv-01".into(),
                kind: DeviceKind::SolarMeter,
                serial: String::new(),
                meter_class: String::new(),
                calibration: None,
                public_key: pk,
                channels: Vec::new(),
            }],
            Path::new("t"),
        )
        .unwrap()
    }

    fn frame_json(device: &str, site: &str) -> Vec<u8> {
        format!(
            r#"{{"v":1,"site":"{site}","device":"{device}","seq":1,"readings":[{{"channel":"e","quantity":"energy","value":5}}]}}"#
        )
        .into_bytes()
    }

    fn check(reg: &DeviceRegistry, topic: &str, payload: &[u8]) -> Result<Admitted, Rejection> {
        let site = SiteId::new("s").unwrap();
        let rules = AdmissionRules {
            site: &site,
            registry: reg,
            max_payload_bytes: 4096,
            accept_unknown_devices: false,
        };
        admit(&rules, topic, payload)
    }

    #[test]
    fn admits_a_good_unsigned_json_frame() {
        let a = check(&registry(None), "mrv/s/pv-01/up", &frame_json("pv-01", "s")).unwrap();
        assert_eq!(a.format, WireFormat::Json);
        assert!(!a.signature_verified);
    }

    #[test]
    fn rejects_with_reasons_naming_the_problem() {
        let reg = registry(None);
        let r = |t: &str, p: &[u8]| check(&reg, t, p).unwrap_err().reason;
        assert_eq!(r("mrv/s/pv-01/down", b"x"), "bad_topic");
        assert_eq!(
            r("mrv/other/pv-01/up", &frame_json("pv-01", "other")),
            "wrong_site"
        );
        assert_eq!(
            r("mrv/s/pv-02/up", &frame_json("pv-02", "s")),
            "unknown_device"
        );
        assert_eq!(
            r("mrv/s/pv-01/up", &frame_json("pv-02", "s")),
            "device_mismatch"
        );
        assert_eq!(r("mrv/s/pv-01/up", &vec![b'{'; 5000]), "oversized");
        assert_eq!(r("mrv/s/pv-01/up", b""), "empty");
        assert_eq!(r("mrv/s/pv-01/up", b"MF\x01"), "truncated");
        assert_eq!(r("mrv/s/pv-01/up", b"\x00\x01garbage"), "bad_magic");
        assert_eq!(r("mrv/s/pv-01/up", b"{\"v\":1}"), "bad_json");
    }

    #[test]
    fn verifies_device_signatures() {
        let key = SigningKey::from_bytes(&[4; 32]);
        let reg = registry(Some(&key));
        let mut f = json::decode_frame(&frame_json("pv-01", "s")).unwrap();
        assert_eq!(
            check(&reg, "mrv/s/pv-01/up", &binary::encode_frame(&f))
                .unwrap_err()
                .reason,
            "missing_signature"
        );
        signature::sign_frame(&mut f, &key);
        let ok = check(&reg, "mrv/s/pv-01/up", &binary::encode_frame(&f)).unwrap();
        assert!(ok.signature_verified);
        f.samples[0].value = 6;
        assert_eq!(
            check(&reg, "mrv/s/pv-01/up", &binary::encode_frame(&f))
                .unwrap_err()
                .reason,
            "bad_signature"
        );
    }
}
