//! Identifiers: [`SiteId`], [`DeviceId`], [`ChannelId`].
//!
//! Invariant: 1 to 32 bytes of `[A-Za-z0-9_.-]`. That keeps them safe inside
//! MQTT topics (no `/`, `+`, `#`), file names, sled keys and URLs, and small
//! enough to carry in every frame.

use alloc::string::String;
use core::fmt;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Longest identifier, in bytes.
pub const MAX_ID_LEN: usize = 32;

/// Why a string is not a valid identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// The string was empty.
    #[error("identifier is empty")]
    Empty,
    /// The string was longer than [`MAX_ID_LEN`] bytes.
    #[error("identifier is {0} bytes long, at most {MAX_ID_LEN} allowed")]
    TooLong(usize),
    /// The string had a character outside `[A-Za-z0-9_.-]`.
    #[error("identifier has the character {0:?}; only A-Z a-z 0-9 _ . - are allowed")]
    BadChar(char),
}

/// Checks the identifier rules; used by every id type.
pub fn validate_id(s: &str) -> Result<(), IdError> {
    if s.is_empty() {
        return Err(IdError::Empty);
    }
    if s.len() > MAX_ID_LEN {
        return Err(IdError::TooLong(s.len()));
    }
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')))
    {
        return Err(IdError::BadChar(c));
    }
    Ok(())
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(String);

        impl $name {
            /// Validates and wraps `s`.
            pub fn new(s: &str) -> Result<Self, IdError> {
                validate_id(s)?;
                Ok(Self(String::from(s)))
            }
            /// The identifier as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), self.0)
            }
        }

        impl core::str::FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::new(s)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                validate_id(&s).map_err(serde::de::Error::custom)?;
                Ok(Self(s))
            }
        }
    };
}

id_type!(
    /// A project site (one gateway serves one site).
    SiteId
);
id_type!(
    /// A device at a site: a firmware node, a Modbus meter, a third-party sensor.
    DeviceId
);
id_type!(
    /// A channel of a device, e.g. `energy`, `flow`, `level`, `ch4`.
    ChannelId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_names_and_rejects_topic_wildcards() {
        assert!(DeviceId::new("pv-meter_01.a").is_ok());
        assert_eq!(DeviceId::new(""), Err(IdError::Empty));
        assert_eq!(DeviceId::new("a/b"), Err(IdError::BadChar('/')));
        assert_eq!(DeviceId::new("a+"), Err(IdError::BadChar('+')));
        assert_eq!(DeviceId::new("#"), Err(IdError::BadChar('#')));
        assert_eq!(SiteId::new(&"x".repeat(33)), Err(IdError::TooLong(33)));
    }

    #[test]
    fn deserialising_an_invalid_id_fails() {
        let r: Result<ChannelId, _> = serde_json::from_str("\"bad id\"");
        assert!(r.is_err());
    }
}
