//! The ingest crate's sections of the gateway's config file: the device
//! registry (`[[devices]]`: who may send, with which key and channels) and
//! `[mqtt]` (the embedded endpoint or an external broker). The gateway's
//! `config` module reads the whole file and embeds these; errors are the
//! shared located [`ConfigError`].

mod device;
mod mqtt;

pub use device::{
    Calibration, ChannelDeclaration, ChannelFact, ChannelFacts, DeviceInfo, DeviceKind,
    DeviceRegistry, DeviceSection, parse_public_key,
};
pub use mqtt::{BrokerMode, MqttConfig, MqttSection, MqttUser};
pub use mrv_shared::config_error::ConfigError;
