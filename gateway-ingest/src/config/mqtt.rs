//! `[mqtt]`: where frames come in.
//!
//! `mode = "embedded"` (default) runs the gateway's own MQTT endpoint
//! ([`crate::endpoint`]) so a site needs one binary; `mode = "external"`
//! connects to a site broker such as mosquitto.

use super::ConfigError;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Which broker the gateway uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum BrokerMode {
    /// The gateway's own MQTT endpoint (devices connect to the gateway).
    #[default]
    Embedded,
    /// An external broker (mosquitto, ...).
    External,
}

/// A username/password the embedded endpoint accepts. `Debug` never shows the
/// password.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct MqttUser {
    /// Username.
    pub username: String,
    /// Password (keep the config file 0600; never logged).
    pub password: String,
    /// Bind this account to one device: it may then publish only on
    /// `mrv/<site>/<device>/up` and subscribe only to `mrv/<site>/<device>/ack`.
    /// Unset: a site account (any device of the site).
    #[serde(default)]
    pub device: Option<String>,
}

impl std::fmt::Debug for MqttUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MqttUser")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("device", &self.device)
            .finish()
    }
}

/// `[mqtt]` as written. `Debug` never shows the password.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MqttSection {
    /// `embedded` (default) or `external`.
    pub mode: BrokerMode,
    /// Embedded endpoint: address to listen on for devices (plain TCP).
    /// Default `127.0.0.1:1883`; a site opens it to the field network
    /// explicitly.
    pub listen: SocketAddr,
    /// Embedded endpoint: accounts devices log in with. Empty = no login
    /// needed (only allowed on loopback).
    pub users: Vec<MqttUser>,
    /// Embedded endpoint: also listen with TLS here (e.g. `0.0.0.0:8883`);
    /// needs `tls_cert_file` and `tls_key_file`.
    pub tls_listen: Option<SocketAddr>,
    /// Embedded endpoint: TLS certificate chain, PEM.
    pub tls_cert_file: Option<PathBuf>,
    /// Embedded endpoint: TLS private key, PEM.
    pub tls_key_file: Option<PathBuf>,
    /// Embedded endpoint: most device connections open at once; further
    /// connections are closed at accept and counted.
    pub max_connections: usize,
    /// Embedded endpoint: most publishes per connection awaiting their
    /// durable outcome (MQTT 5 Receive Maximum); at the limit the connection
    /// is not read until PUBACKs went out.
    pub receive_maximum: u16,
    /// No longer used (it sized the former embedded broker's ring); accepted
    /// so old config files load, with a warning.
    pub retention_bytes: Option<usize>,
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
    /// Memory for the `[[mapping]]` dedup keys of all mappings, bytes
    /// (default 1 MiB; `docs/MAPPING.md` §4 says what it covers). Beyond
    /// it the keys nearest to expiry are dropped (counted); keys whose
    /// write is pending never are.
    pub mapping_dedup_memory_bytes: usize,
}

impl Default for MqttSection {
    fn default() -> Self {
        Self {
            mode: BrokerMode::Embedded,
            listen: SocketAddr::from(([127, 0, 0, 1], 1883)),
            users: Vec::new(),
            tls_listen: None,
            tls_cert_file: None,
            tls_key_file: None,
            max_connections: 1024,
            receive_maximum: 100,
            retention_bytes: None,
            host: "127.0.0.1".into(),
            port: 1883,
            username: None,
            password: None,
            ca_file: None,
            client_id: "mrv-gateway".into(),
            max_payload_bytes: mrv_shared::wire::MAX_FRAME_BYTES,
            quarantine_len: 64,
            accept_unknown_devices: false,
            mapping_dedup_memory_bytes: crate::mapping::dedup_memory::DEFAULT_BUDGET_BYTES,
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
    /// Embedded endpoint listen address.
    pub listen: SocketAddr,
    /// Embedded endpoint accounts.
    pub users: Vec<MqttUser>,
    /// Embedded endpoint TLS listener.
    pub tls: Option<crate::endpoint::TlsSettings>,
    /// Embedded endpoint connection limit.
    pub max_connections: usize,
    /// Embedded endpoint in-flight publishes per connection.
    pub receive_maximum: u16,
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
    /// See [`MqttSection::mapping_dedup_memory_bytes`].
    pub mapping_dedup_memory_bytes: usize,
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
    /// Checks the section and resolves it (paths relative to `base`, the
    /// config file's directory) into the settings the gateway runs with.
    pub fn validate(&self, file: &Path, base: &Path) -> Result<MqttConfig, ConfigError> {
        let err = |key: &str, p: &str| ConfigError::new(file, format!("mqtt.{key}"), p);
        if self.client_id.is_empty() || self.client_id.len() > 64 {
            return Err(err("client_id", "must be 1 to 64 characters"));
        }
        if self.max_payload_bytes < 64 || self.max_payload_bytes > mrv_shared::wire::MAX_FRAME_BYTES
        {
            return Err(err("max_payload_bytes", "must be between 64 and 65536"));
        }
        if self.retention_bytes.is_some() {
            tracing::warn!(file = %file.display(), "mqtt.retention_bytes is no longer used (the embedded endpoint keeps no message ring); remove it");
        }
        if self.max_connections == 0 {
            return Err(err("max_connections", "must be at least 1"));
        }
        if self.receive_maximum == 0 {
            return Err(err("receive_maximum", "must be between 1 and 65535"));
        }
        for (i, u) in self.users.iter().enumerate() {
            if u.username.is_empty() || u.password.is_empty() {
                return Err(err(
                    &format!("users[{i}]"),
                    "username and password must not be empty",
                ));
            }
            if let Some(d) = &u.device
                && let Err(e) = mrv_shared::ids::DeviceId::new(d)
            {
                return Err(err(
                    &format!("users[{i}].device"),
                    &format!("not a device id: {e}"),
                ));
            }
            if self.users[..i].iter().any(|o| o.username == u.username) {
                return Err(err(&format!("users[{i}].username"), "appears twice"));
            }
        }
        let tls = match (&self.tls_listen, &self.tls_cert_file, &self.tls_key_file) {
            (None, None, None) => None,
            (Some(listen), Some(cert), Some(key)) => Some(crate::endpoint::TlsSettings {
                listen: *listen,
                cert_file: base.join(cert),
                key_file: base.join(key),
            }),
            _ => {
                return Err(err(
                    "tls_listen",
                    "tls_listen, tls_cert_file and tls_key_file go together",
                ));
            }
        };
        let (host, port, credentials) = match self.mode {
            BrokerMode::Embedded => {
                let exposed = !self.listen.ip().is_loopback()
                    || tls.as_ref().is_some_and(|t| !t.listen.ip().is_loopback());
                if exposed && self.users.is_empty() {
                    return Err(err(
                        "users",
                        "the embedded endpoint listens on a non-loopback address without any [[mqtt.users]]; add accounts for devices",
                    ));
                }
                if self.username.is_some() || self.ca_file.is_some() {
                    return Err(err("mode", "username/ca_file are for mode = \"external\""));
                }
                // (Embedded: the gateway has no client connection of its own.)
                let creds = None;
                let host = if self.listen.ip().is_unspecified() {
                    "127.0.0.1".to_string()
                } else {
                    self.listen.ip().to_string()
                };
                (host, self.listen.port(), creds)
            }
            BrokerMode::External => {
                if tls.is_some() || !self.users.is_empty() {
                    return Err(err(
                        "mode",
                        "users and tls_* are for mode = \"embedded\"; the external broker checks its own clients",
                    ));
                }
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
        if !(64 << 10..=1 << 30).contains(&self.mapping_dedup_memory_bytes) {
            return Err(err(
                "mapping_dedup_memory_bytes",
                "must be between 65536 (64 KiB) and 1073741824 (1 GiB)",
            ));
        }
        Ok(MqttConfig {
            mode: self.mode,
            listen: self.listen,
            users: self.users.clone(),
            tls,
            max_connections: self.max_connections,
            receive_maximum: self.receive_maximum,
            host,
            port,
            credentials,
            ca_file: self.ca_file.as_ref().map(|p| base.join(p)),
            client_id: self.client_id.clone(),
            max_payload_bytes: self.max_payload_bytes,
            quarantine_len: self.quarantine_len,
            accept_unknown_devices: self.accept_unknown_devices,
            mapping_dedup_memory_bytes: self.mapping_dedup_memory_bytes,
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
                device: None,
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
            users: Vec::new(),
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
