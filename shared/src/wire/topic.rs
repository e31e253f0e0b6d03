//! MQTT topic scheme.
//!
//! - `mrv/<site>/<device>/up`: device to gateway, one frame per message
//!   (binary if the payload starts with `"MF"`, JSON if it starts with `{`),
//!   QoS 1.
//! - `mrv/<site>/<device>/ack`: gateway to device, [`super::Ack`] in the form
//!   the device last used, QoS 1, published only after a durable write.
//!
//! Identifiers cannot contain `/`, `+` or `#` (see [`crate::ids`]), so a topic
//! always splits back into the ids it was built from.

use crate::ids::{DeviceId, SiteId};
use alloc::format;
use alloc::string::String;

/// First topic level.
pub const ROOT: &str = "mrv";

/// Topic a device publishes frames on.
pub fn up_topic(site: &SiteId, device: &DeviceId) -> String {
    format!("{ROOT}/{site}/{device}/up")
}

/// Topic a device receives acks on.
pub fn ack_topic(site: &SiteId, device: &DeviceId) -> String {
    format!("{ROOT}/{site}/{device}/ack")
}

/// Filter the gateway subscribes to for one site.
pub fn up_filter(site: &SiteId) -> String {
    format!("{ROOT}/{site}/+/up")
}

/// Why a topic is not an uplink topic of ours.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    /// Not of the form `mrv/<site>/<device>/up`.
    #[error("topic is not of the form mrv/<site>/<device>/up")]
    Shape,
    /// The site or device level is not a valid identifier.
    #[error("topic has an invalid {0} identifier")]
    BadId(&'static str),
}

/// Splits an uplink topic into site and device.
pub fn parse_up_topic(topic: &str) -> Result<(SiteId, DeviceId), TopicError> {
    let mut parts = topic.split('/');
    let (Some(ROOT), Some(site), Some(device), Some("up"), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return Err(TopicError::Shape);
    };
    Ok((
        SiteId::new(site).map_err(|_| TopicError::BadId("site"))?,
        DeviceId::new(device).map_err(|_| TopicError::BadId("device"))?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_and_parses_topics() {
        let s = SiteId::new("site-a").unwrap();
        let d = DeviceId::new("pv-01").unwrap();
        assert_eq!(up_topic(&s, &d), "mrv/site-a/pv-01/up");
        assert_eq!(ack_topic(&s, &d), "mrv/site-a/pv-01/ack");
        assert_eq!(up_filter(&s), "mrv/site-a/+/up");
        assert_eq!(parse_up_topic("mrv/site-a/pv-01/up"), Ok((s, d)));
        assert_eq!(
            parse_up_topic("mrv/site-a/pv-01/ack"),
            Err(TopicError::Shape)
        );
        assert_eq!(
            parse_up_topic("mrv/site-a/pv-01/up/x"),
            Err(TopicError::Shape)
        );
        assert_eq!(
            parse_up_topic("mrv/site a/pv-01/up"),
            Err(TopicError::BadId("site"))
        );
    }
}
