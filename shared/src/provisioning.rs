//! The device provisioning record: a node's identity and signing key, written
//! once per device into a flash area of its own (not the program's, not the
//! journal's), so that firmware updates keep the device's identity.
//!
//! `mrv-gateway provision` writes it (a binary blob for the flash tool, plus
//! the public JWK for the gateway's device registry); the firmware images
//! read it at boot ([`decode`]). Erased flash (all `0xFF`) means "not
//! provisioned": the node sends unsigned frames under its built-in identity.
//!
//! ## Format (108 bytes, little-endian)
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | magic `"MRVK"` |
//! | 4 | 1 | version, `1` |
//! | 5 | 1 | site id length `S`, 1..=32 |
//! | 6 | 1 | device id length `D`, 1..=32 |
//! | 7 | 1 | reserved, `0` |
//! | 8 | 32 | site id (ASCII, [`crate::ids`] rules), zero padded |
//! | 40 | 32 | device id, zero padded |
//! | 72 | 32 | Ed25519 secret key (the 32-byte seed, RFC 8032) |
//! | 104 | 4 | CRC-32 (IEEE) of bytes `[0, 104)` |
//!
//! Invariants: [`decode`] accepts exactly what [`encode`] produces (ids
//! valid, padding zero, reserved zero, CRC right); anything else is an
//! [`ProvisionError`] naming the field, never a key made of other bytes.
//! Test vector: `shared/tests/vectors/provisioning_record.txt`.

use crate::ids::{DeviceId, IdError, MAX_ID_LEN, SiteId};
use ed25519_dalek::SigningKey;

/// Where the images keep the record: this offset from the start of flash,
/// a sector no program or journal write touches (STM32F411: sector 1,
/// 0x08004000, 16 KiB; the QEMU mps2-an386 image: 0x00004000).
pub const FLASH_OFFSET: u32 = 0x4000;
/// Absolute address of the record on the STM32F411 (flash at 0x08000000).
pub const F411_ADDRESS: u32 = 0x0800_0000 + FLASH_OFFSET;
/// Record magic.
pub const MAGIC: [u8; 4] = *b"MRVK";
/// Format version.
pub const VERSION: u8 = 1;
/// Encoded length.
pub const RECORD_LEN: usize = 108;
const SITE_AT: usize = 8;
const DEVICE_AT: usize = SITE_AT + MAX_ID_LEN;
const KEY_AT: usize = DEVICE_AT + MAX_ID_LEN;
const CRC_AT: usize = KEY_AT + 32;

/// A node's identity and key.
#[derive(Clone, PartialEq, Eq)]
pub struct Provisioning {
    /// Site the node belongs to.
    pub site: SiteId,
    /// The node's device id.
    pub device: DeviceId,
    /// Its frame signing key.
    pub key: SigningKey,
}

impl core::fmt::Debug for Provisioning {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        // Never print the secret.
        f.debug_struct("Provisioning")
            .field("site", &self.site)
            .field("device", &self.device)
            .field("public_key", &self.key.verifying_key().as_bytes())
            .finish()
    }
}

/// Why a provisioning area does not hold a usable record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProvisionError {
    /// Fewer than [`RECORD_LEN`] bytes were given.
    #[error("provisioning record: {0} bytes, {RECORD_LEN} needed")]
    Short(usize),
    /// The area is neither erased nor starts with `"MRVK"`.
    #[error("provisioning record: bad magic {0:02x?}")]
    Magic([u8; 4]),
    /// A version this firmware does not know.
    #[error("provisioning record: version {0}, only {VERSION} is known")]
    Version(u8),
    /// The CRC does not match (torn or corrupted write).
    #[error("provisioning record: CRC {stored:08x} stored, {computed:08x} computed")]
    Crc {
        /// CRC in the record.
        stored: u32,
        /// CRC of its bytes.
        computed: u32,
    },
    /// The site or device id field is not a valid id.
    #[error("provisioning record: {field} id: {error}")]
    Id {
        /// `site` or `device`.
        field: &'static str,
        /// What is wrong with it.
        error: IdError,
    },
    /// Padding or reserved bytes are not zero.
    #[error("provisioning record: non-zero {0}")]
    NonZero(&'static str),
}

/// Encodes a record.
pub fn encode(p: &Provisioning) -> [u8; RECORD_LEN] {
    let mut b = [0u8; RECORD_LEN];
    b[..4].copy_from_slice(&MAGIC);
    b[4] = VERSION;
    let site = p.site.as_str().as_bytes();
    let device = p.device.as_str().as_bytes();
    // Ids are at most MAX_ID_LEN bytes by construction.
    b[5] = site.len() as u8;
    b[6] = device.len() as u8;
    b[SITE_AT..SITE_AT + site.len()].copy_from_slice(site);
    b[DEVICE_AT..DEVICE_AT + device.len()].copy_from_slice(device);
    b[KEY_AT..CRC_AT].copy_from_slice(p.key.as_bytes());
    let crc = crc32fast::hash(&b[..CRC_AT]);
    b[CRC_AT..].copy_from_slice(&crc.to_le_bytes());
    b
}

fn id_field(
    b: &[u8],
    at: usize,
    len: u8,
    field: &'static str,
) -> Result<alloc::string::String, ProvisionError> {
    let len = usize::from(len);
    if len == 0 || len > MAX_ID_LEN {
        return Err(ProvisionError::Id {
            field,
            error: if len == 0 {
                IdError::Empty
            } else {
                IdError::TooLong(len)
            },
        });
    }
    if b[at + len..at + MAX_ID_LEN].iter().any(|x| *x != 0) {
        return Err(ProvisionError::NonZero(field));
    }
    let text = core::str::from_utf8(&b[at..at + len]).map_err(|_| ProvisionError::Id {
        field,
        error: IdError::BadChar(char::REPLACEMENT_CHARACTER),
    })?;
    crate::ids::validate_id(text).map_err(|error| ProvisionError::Id { field, error })?;
    Ok(alloc::string::String::from(text))
}

/// Decodes the provisioning area: `Ok(None)` when it is erased (all
/// `0xFF`), the record when it is valid, else why not.
pub fn decode(area: &[u8]) -> Result<Option<Provisioning>, ProvisionError> {
    if area.len() < RECORD_LEN {
        return Err(ProvisionError::Short(area.len()));
    }
    let b = &area[..RECORD_LEN];
    if b.iter().all(|x| *x == 0xFF) {
        return Ok(None);
    }
    let magic = [b[0], b[1], b[2], b[3]];
    if magic != MAGIC {
        return Err(ProvisionError::Magic(magic));
    }
    if b[4] != VERSION {
        return Err(ProvisionError::Version(b[4]));
    }
    let stored = u32::from_le_bytes([b[CRC_AT], b[CRC_AT + 1], b[CRC_AT + 2], b[CRC_AT + 3]]);
    let computed = crc32fast::hash(&b[..CRC_AT]);
    if stored != computed {
        return Err(ProvisionError::Crc { stored, computed });
    }
    if b[7] != 0 {
        return Err(ProvisionError::NonZero("reserved"));
    }
    let site = id_field(b, SITE_AT, b[5], "site")?;
    let device = id_field(b, DEVICE_AT, b[6], "device")?;
    let mut key = [0u8; 32];
    key.copy_from_slice(&b[KEY_AT..CRC_AT]);
    Ok(Some(Provisioning {
        site: SiteId::new(&site).expect("validated above"),
        device: DeviceId::new(&device).expect("validated above"),
        key: SigningKey::from_bytes(&key),
    }))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn record() -> Provisioning {
        Provisioning {
            site: SiteId::new("site-a").unwrap(),
            device: DeviceId::new("node-7").unwrap(),
            key: SigningKey::from_bytes(&[7; 32]),
        }
    }

    #[test]
    fn a_record_round_trips_and_erased_flash_means_not_provisioned() {
        let b = encode(&record());
        assert_eq!(decode(&b).unwrap(), Some(record()));
        assert_eq!(decode(&[0xFF; 200]).unwrap(), None);
        // Trailing bytes after the record (the rest of the sector) are ignored.
        let mut longer = [0xFFu8; 256];
        longer[..RECORD_LEN].copy_from_slice(&b);
        assert_eq!(decode(&longer).unwrap(), Some(record()));
    }

    #[test]
    fn every_corruption_is_refused_with_the_field_named() {
        let good = encode(&record());
        assert_eq!(decode(&good[..100]), Err(ProvisionError::Short(100)));
        let mut b = good;
        b[0] = b'X';
        assert!(matches!(decode(&b), Err(ProvisionError::Magic(_))));
        // Any flipped bit after the magic and version fails the CRC.
        for i in 5..RECORD_LEN {
            let mut b = good;
            b[i] ^= 0x10;
            assert!(
                matches!(decode(&b), Err(ProvisionError::Crc { .. })),
                "byte {i}"
            );
        }
        // A torn write: the first half programmed, the rest still erased.
        let mut torn = [0xFFu8; RECORD_LEN];
        torn[..50].copy_from_slice(&good[..50]);
        assert!(matches!(decode(&torn), Err(ProvisionError::Crc { .. })));
        // Bad content with a fixed-up CRC is still refused.
        let fix = |mut b: [u8; RECORD_LEN]| {
            let c = crc32fast::hash(&b[..CRC_AT]);
            b[CRC_AT..].copy_from_slice(&c.to_le_bytes());
            b
        };
        let mut b = good;
        b[4] = 2;
        assert_eq!(decode(&fix(b)), Err(ProvisionError::Version(2)));
        let mut b = good;
        b[SITE_AT] = b'/';
        assert!(matches!(
            decode(&fix(b)),
            Err(ProvisionError::Id { field: "site", .. })
        ));
        let mut b = good;
        b[6] = 0;
        assert!(matches!(
            decode(&fix(b)),
            Err(ProvisionError::Id {
                field: "device",
                error: IdError::Empty
            })
        ));
        let mut b = good;
        b[DEVICE_AT + 31] = b'x';
        assert_eq!(decode(&fix(b)), Err(ProvisionError::NonZero("device")));
    }

    #[test]
    fn debug_output_shows_no_secret() {
        let text = alloc::format!("{:?}", record());
        assert!(!text.contains("[7, 7, 7"), "{text}");
    }
}
