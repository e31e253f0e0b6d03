//! `[mqtt]`: where frames come in.
//!
//! `mode = "embedded"` (default) runs an MQTT broker inside the gateway so a
//! site needs one binary; `mode = "external"` connects to a site broker such
//! as mosquitto.

use super::ConfigError;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Which broker the gateway uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum BrokerMode {
    /// rumqttd inside the gateway process.
    #[default]
    Embedded,
    /// An external broker (mosquitto, ...).
    External,
}

/// A username/password the embedded broker accepts. `Debug` never shows the
/// password.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct MqttUser {
    /// Username.
    pub username: String,
    /// Password (keep the config file 0600; never logged).
    pub password: String,
}

impl std::fmt::Debug for MqttUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MqttUser")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// `[mqtt]` as written. `Debug` never shows the password.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MqttSection {
    /// `embedded` (default) or `external`.
    pub mode: BrokerMode,
    /// Embedded broker: address to listen on for devices. Default
    /// `0.0.0.0:1883` would expose it; we default to `127.0.0.1:1883` and a
    /// site opens it to the field network explicitly.
    pub listen: SocketAddr,
    /// Embedded broker: accounts devices log in with. Empty = no login needed
    /// (only sensible on an isolated field network).
    pub users: Vec<MqttUser>,
    /// Embedded broker: bytes kept per subscription before a slow subscriber
    /// loses messages (rumqttd ring size = segment size x segment count).
    pub retention_bytes: usize,
    /// External broker: host name or address.
    pub host: String,
    /// External broker: port.
    pub port: u16,
    /// External broker: username the gateway logs in with.
    pub username: Option<String>,
    /// External broker: password.
    pub password: Option<String>,
    /// External broker: CA certificate (PEM) to connect with TLS; plain TCP if unset.
    pub ca_file: Option<PathBuf>,
    /// MQTT client id of the gateway's own connection.
    pub client_id: String,
    /// Largest accepted payload, bytes; larger frames are rejected as oversized.
    pub max_payload_bytes: usize,
    /// Rejected payloads kept (raw) for diagnosis.
    pub quarantine_len: usize,
    /// Accept frames from devices not listed in `[[devices]]` (marked
    /// unregistered). Off by default: unknown devices are rejected.
    pub accept_unknown_devices: bool,
}

impl Default for MqttSection {
    fn default() -> Self {
        Self {
            mode: BrokerMode::Embedded,
            listen: SocketAddr::from(([127, 0, 0, 1], 1883)),
            users: Vec::new(),
            retention_bytes: 64 << 20,
            host: "127.0.0.1".into(),
            port: 1883,
            username: None,
            password: None,
            ca_file: None,
            client_id: "mrv-gateway".into(),
            max_payload_bytes: mrv_shared::wire::MAX_FRAME_BYTES,
            quarantine_len: 64,
            accept_unknown_devices: false,
        }
    }
}

impl std::fmt::Debug for MqttSection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MqttSection")
            .field("mode", &self.mode)
            .field("listen", &self.listen)
            .field("users", &self.users)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

/// Validated MQTT settings. `Debug` never shows the password.
#[derive(Clone, PartialEq, Eq)]
pub struct MqttConfig {
    /// Broker mode.
    pub mode: BrokerMode,
    /// Embedded broker listen address.
    pub listen: SocketAddr,
    /// Embedded broker accounts.
    pub users: Vec<MqttUser>,
    /// Embedded broker ring bytes per subscription.
    pub retention_bytes: usize,
    /// Host the gateway's client connects to.
    pub host: String,
    /// Port the gateway's client connects to.
    pub port: u16,
    /// Login of the gateway's client.
    pub credentials: Option<(String, String)>,
    /// CA for TLS to an external broker.
    pub ca_file: Option<PathBuf>,
    /// Client id.
    pub client_id: String,
    /// Payload limit.
    pub max_payload_bytes: usize,
    /// Quarantine length.
    pub quarantine_len: usize,
    /// See [`MqttSection::accept_unknown_devices`].
    pub accept_unknown_devices: bool,
}

impl std::fmt::Debug for MqttConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MqttConfig")
            .field("mode", &self.mode)
            .field("listen", &self.listen)
            .field("users", &self.users)
            .field("host", &self.host)
            .field("port", &self.port)
            .field(
                "credentials",
                &self.credentials.as_ref().map(|(u, _)| (u, "<redacted>")),
            )
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

impl MqttSection {
    pub(super) fn validate(&self, file: &Path, base: &Path) -> Result<MqttConfig, ConfigError> {
        let err = |key: &str, p: &str| ConfigError::new(file, format!("mqtt.{key}"), p);
        if self.client_id.is_empty() || self.client_id.len() > 64 {
            return Err(err("client_id", "must be 1 to 64 characters"));
        }
        if self.max_payload_bytes < 64 || self.max_payload_bytes > mrv_shared::wire::MAX_FRAME_BYTES
        {
            return Err(err("max_payload_bytes", "must be between 64 and 65536"));
        }
        if self.retention_bytes < (1 << 20) {
            return Err(err("retention_bytes", "must be at least 1048576 (1 MiB)"));
        }
        for (i, u) in self.users.iter().enumerate() {
            if u.username.is_empty() || u.password.is_empty() {
                return Err(err(
                    &format!("users[{i}]"),
                    "username and password must not be empty",
                ));
            }
        }
        let (host, port, credentials) = match self.mode {
            BrokerMode::Embedded => {
                if !self.listen.ip().is_loopback() && self.users.is_empty() {
                    return Err(err(
                        "users",
                        "the embedded broker listens on a non-loopback address without any [[mqtt.users]]; add accounts for devices",
                    ));
                }
                if self.username.is_some() || self.ca_file.is_some() {
                    return Err(err("mode", "username/ca_file are for mode = \"external\""));
                }
                // The gateway's own client logs in with the first account.
                let creds = self
                    .users
                    .first()
                    .map(|u| (u.username.clone(), u.password.clone()));
                let host = if self.listen.ip().is_unspecified() {
                    "127.0.0.1".to_string()
                } else {
                    self.listen.ip().to_string()
                };
                (host, self.listen.port(), creds)
            }
            BrokerMode::External => {
                if self.host.is_empty() {
                    return Err(err("host", "must name the external broker"));
                }
                let creds = match (&self.username, &self.password) {
                    (Some(u), Some(p)) => Some((u.clone(), p.clone())),
                    (None, None) => None,
                    _ => return Err(err("password", "username and password go together")),
                };
                (self.host.clone(), self.port, creds)
            }
        };
        Ok(MqttConfig {
            mode: self.mode,
            listen: self.listen,
            users: self.users.clone(),
            retention_bytes: self.retention_bytes,
            host,
            port,
            credentials,
            ca_file: self.ca_file.as_ref().map(|p| base.join(p)),
            client_id: self.client_id.clone(),
            max_payload_bytes: self.max_payload_bytes,
            quarantine_len: self.quarantine_len,
            accept_unknown_devices: self.accept_unknown_devices,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_never_shows_passwords() {
        let section = MqttSection {
            users: vec![MqttUser {
                username: "dev".into(),
                password: "s3cret-pw".into(),
            }],
            password: Some("other-s3cret".into()),
            username: Some("gw".into()),
            ..MqttSection::default()
        };
        let text = format!("{section:?}");
        assert!(
            !text.contains("s3cret") && text.contains("<redacted>"),
            "{text}"
        );
        let cfg = MqttSection {
            mode: BrokerMode::External,
            ..section
        }
        .validate(std::path::Path::new("f"), std::path::Path::new("."))
        .expect("valid");
        let text = format!("{cfg:?}");
        assert!(
            !text.contains("s3cret") && text.contains("<redacted>"),
            "{text}"
        );
    }
}
