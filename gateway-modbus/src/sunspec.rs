//! SunSpec: discovery of the model chain and the register map it implies.
//!
//! Format (SunSpec Information Model Specification): holding registers from
//! a base address (40000, 0 or 50000) start with the marker `SunS`
//! (`0x5375 0x6E53`), then a chain of models, each `ID`, `L` (length in
//! registers, not counting ID and L) and `L` data registers, ending with
//! `ID = 0xFFFF`. Model 1 (common) carries manufacturer, model, options,
//! version and serial as strings.
//!
//! Pure parts: [`is_marker`], [`common_from_words`], [`map_for`] (from the
//! discovered chain and the profile to a [`RegisterMap`] with absolute
//! addresses, scale-factor registers included). I/O part: [`discover`],
//! generic over [`RegisterReader`].
//!
//! Invariants: unknown models are listed but skipped; a chain that runs
//! past address 65535 or longer than [`MAX_MODELS`] stops with an error
//! rather than looping; channel names are `<prefix>_<point>`, with `_2`,
//! `_3`, ... for the second and later models of the same family.

use super::decode::{RawValue, decode_raw};
use super::planner::ReadRequest;
use super::register_map::{
    ByteOrder, DataType, Limits, RegisterDef, RegisterMap, Scale, Sentinel, Table,
};
use super::transport::{ReadError, RegisterReader};
use mrv_shared::ids::ChannelId;
use mrv_shared::quantity::{Quantity, ValueKind};

/// The marker registers: "SunS".
pub const MARKER: [u16; 2] = [0x5375, 0x6E53];
/// End-of-chain model id.
pub const END_ID: u16 = 0xFFFF;
/// Most models walked before giving up.
pub const MAX_MODELS: usize = 64;

/// A point of a model the profile decodes.
#[derive(Debug, Clone, PartialEq)]
pub struct PointProfile {
    /// Channel name suffix.
    pub name: String,
    /// Offset from the first data register.
    pub offset: u16,
    /// Encoding (big-endian, as SunSpec requires).
    pub data_type: DataType,
    /// Offset of its scale-factor register.
    pub scale_factor_offset: Option<u16>,
    /// Static unit conversion.
    pub scale: Scale,
    /// Quantity.
    pub quantity: Quantity,
    /// Kind.
    pub kind: ValueKind,
    /// Plausibility limits.
    pub limits: Limits,
}

/// A model family the profile decodes.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelProfile {
    /// Model ids sharing the layout.
    pub ids: Vec<u16>,
    /// Channel name prefix.
    pub prefix: String,
    /// Points.
    pub points: Vec<PointProfile>,
}

/// A validated SunSpec profile.
#[derive(Debug, Clone, PartialEq)]
pub struct SunSpecProfile {
    /// Where to look for the marker.
    pub base_addresses: Vec<u16>,
    /// Decoded model families.
    pub models: Vec<ModelProfile>,
}

/// One model of a device's chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DiscoveredModel {
    /// Model id.
    pub id: u16,
    /// Address of its ID register.
    pub address: u16,
    /// Its length `L` (data registers).
    pub length: u16,
}

impl DiscoveredModel {
    /// Address of the first data register.
    pub fn data_start(&self) -> u32 {
        u32::from(self.address) + 2
    }
}

/// Model 1 strings.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CommonInfo {
    /// Manufacturer (`Mn`).
    pub manufacturer: String,
    /// Model (`Md`).
    pub model: String,
    /// Options (`Opt`).
    pub options: String,
    /// Version (`Vr`).
    pub version: String,
    /// Serial number (`SN`).
    pub serial: String,
}

/// What discovery found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discovery {
    /// Base address of the marker.
    pub base: u16,
    /// The chain, in order (the common model first).
    pub models: Vec<DiscoveredModel>,
    /// Model 1 content, if present.
    pub common: Option<CommonInfo>,
}

/// Why discovery failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DiscoveryError {
    /// No base address holds the marker.
    #[error("no SunS marker at any of {0:?}")]
    NoMarker(Vec<u16>),
    /// The chain runs past the address space or is implausibly long.
    #[error("model chain broken at address {0}: {1}")]
    BrokenChain(u32, &'static str),
    /// The link failed (timeout, connection), so nothing can be concluded.
    #[error("{0}")]
    Read(#[from] ReadError),
}

/// True when two registers are the `SunS` marker.
pub fn is_marker(words: &[u16]) -> bool {
    words == MARKER
}

/// Decodes model 1's data registers (at least 64 of them).
pub fn common_from_words(data: &[u16]) -> Option<CommonInfo> {
    let text = |from: usize, len: u16| -> String {
        let end = from + usize::from(len);
        data.get(from..end)
            .and_then(|w| decode_raw(DataType::String(len), ByteOrder::ABCD, w).ok())
            .map(|v| match v {
                RawValue::Text(s) => s,
                other => other.to_string(),
            })
            .unwrap_or_default()
    };
    if data.len() < 64 {
        return None;
    }
    Some(CommonInfo {
        manufacturer: text(0, 16),
        model: text(16, 16),
        options: text(32, 8),
        version: text(40, 8),
        serial: text(48, 16),
    })
}

/// The register map for a discovered chain: the points of every model the
/// profile knows, at absolute addresses. Returns the map and the ids of
/// the models it skipped (unknown to the profile; the common model 1 is
/// not reported as skipped). Points that lie beyond a model's length (an
/// older, shorter model revision) are left out.
pub fn map_for(profile: &SunSpecProfile, chain: &[DiscoveredModel]) -> (RegisterMap, Vec<u16>) {
    let mut map = RegisterMap::default();
    let mut skipped = Vec::new();
    let mut seen: Vec<(usize, u32)> = Vec::new();
    for m in chain {
        let Some((fi, fam)) = profile
            .models
            .iter()
            .enumerate()
            .find(|(_, f)| f.ids.contains(&m.id))
        else {
            if m.id != 1 {
                skipped.push(m.id);
            }
            continue;
        };
        let n = match seen.iter_mut().find(|(i, _)| *i == fi) {
            Some((_, c)) => {
                *c += 1;
                *c
            }
            None => {
                seen.push((fi, 1));
                1
            }
        };
        for p in &fam.points {
            let end = u32::from(p.offset) + u32::from(p.data_type.width());
            if end > u32::from(m.length) || p.scale_factor_offset.is_some_and(|s| s >= m.length) {
                continue;
            }
            let Some(def) = point_def(fam, p, m, n) else {
                continue;
            };
            map.registers.push(def);
        }
    }
    (map, skipped)
}

/// Channel name of a point for the `n`-th model of its family.
pub fn channel_name(prefix: &str, point: &str, n: u32) -> String {
    if n <= 1 {
        format!("{prefix}_{point}")
    } else {
        format!("{prefix}_{point}_{n}")
    }
}

fn point_def(
    fam: &ModelProfile,
    p: &PointProfile,
    m: &DiscoveredModel,
    n: u32,
) -> Option<RegisterDef> {
    let address = u16::try_from(m.data_start() + u32::from(p.offset)).ok()?;
    let scale_factor_at = match p.scale_factor_offset {
        Some(o) => Some(u16::try_from(m.data_start() + u32::from(o)).ok()?),
        None => None,
    };
    Some(RegisterDef {
        name: ChannelId::new(&channel_name(&fam.prefix, &p.name, n)).ok()?,
        table: Table::Holding,
        address,
        data_type: p.data_type,
        order: ByteOrder::ABCD,
        scale: p.scale,
        scale_factor_at,
        offset: 0,
        quantity: p.quantity,
        kind: p.kind,
        rollover_bits: if p.kind == ValueKind::Counter {
            p.data_type.int_bits()
        } else {
            None
        },
        limits: p.limits,
        sentinel: Sentinel::SunSpec,
    })
}

/// The channel table a device has before discovery when its config names
/// the models it expects (`sunspec_models`): one model of each, laid out
/// as if it started at address 0 (addresses are replaced at discovery).
pub fn expected_map(profile: &SunSpecProfile, model_ids: &[u16]) -> RegisterMap {
    let chain: Vec<DiscoveredModel> = model_ids
        .iter()
        .map(|&id| DiscoveredModel {
            id,
            address: 0,
            length: u16::MAX - 2,
        })
        .collect();
    map_for(profile, &chain).0
}

fn hr(start: u32, count: u16) -> Result<ReadRequest, DiscoveryError> {
    let s = u16::try_from(start)
        .map_err(|_| DiscoveryError::BrokenChain(start, "address past 65535"))?;
    if start + u32::from(count) > 65536 {
        return Err(DiscoveryError::BrokenChain(start, "address past 65535"));
    }
    Ok(ReadRequest {
        table: Table::Holding,
        start: s,
        count,
    })
}

/// Finds the marker and walks the chain. An exception at a base address
/// means "not here" (the next base is tried); a timeout or link fault ends
/// discovery with that error.
pub async fn discover<R: RegisterReader>(
    reader: &mut R,
    bases: &[u16],
) -> Result<Discovery, DiscoveryError> {
    let mut found = None;
    for &base in bases {
        match reader.read(hr(u32::from(base), 2)?).await {
            Ok(w) if is_marker(&w) => {
                found = Some(base);
                break;
            }
            Ok(_) | Err(ReadError::Exception(_)) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    let base = found.ok_or_else(|| DiscoveryError::NoMarker(bases.to_vec()))?;
    let mut models = Vec::new();
    let mut addr = u32::from(base) + 2;
    let mut common = None;
    loop {
        if models.len() >= MAX_MODELS {
            return Err(DiscoveryError::BrokenChain(addr, "more than 64 models"));
        }
        let head = match reader.read(hr(addr, 2)?).await {
            Ok(h) => h,
            // Some devices end the chain with an exception instead of 0xFFFF.
            Err(ReadError::Exception(_)) if !models.is_empty() => break,
            Err(e) => return Err(e.into()),
        };
        let (id, length) = (head[0], head[1]);
        if id == END_ID {
            break;
        }
        let m = DiscoveredModel {
            id,
            address: u16::try_from(addr).expect("hr() checked the address"),
            length,
        };
        if id == 1
            && length >= 64
            && let Ok(data) = reader.read(hr(m.data_start(), 64)?).await
        {
            common = common_from_words(&data);
        }
        models.push(m);
        addr = m.data_start() + u32::from(length);
        if addr > 65534 {
            return Err(DiscoveryError::BrokenChain(addr, "chain runs past 65535"));
        }
    }
    Ok(Discovery {
        base,
        models,
        common,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::Exception;
    use std::collections::BTreeMap;

    /// A device that is a plain register array (a real, simple model of a
    /// Modbus server): unmapped addresses answer exception 2.
    struct Bank(BTreeMap<u16, u16>);

    impl RegisterReader for Bank {
        async fn read(&mut self, req: ReadRequest) -> Result<Vec<u16>, ReadError> {
            (0..req.count)
                .map(|i| {
                    self.0
                        .get(&(req.start + i))
                        .copied()
                        .ok_or(ReadError::Exception(Exception(2)))
                })
                .collect()
        }
    }

    fn chain_bank(base: u16, models: &[(u16, u16)]) -> Bank {
        let mut b = BTreeMap::new();
        let mut a = base;
        for w in MARKER {
            b.insert(a, w);
            a += 1;
        }
        for &(id, len) in models {
            b.insert(a, id);
            b.insert(a + 1, len);
            for i in 0..len {
                b.insert(a + 2 + i, 0);
            }
            a += 2 + len;
        }
        b.insert(a, END_ID);
        b.insert(a + 1, 0);
        Bank(b)
    }

    fn profile() -> SunSpecProfile {
        let text = include_str!("../../config/profiles/sunspec.toml");
        crate::config::parse_profile(text, std::path::Path::new("sunspec.toml"))
            .expect("shipped profile is valid")
            .sunspec
            .expect("has a sunspec section")
    }

    #[tokio::test]
    async fn discovery_tries_each_base_and_walks_the_chain() {
        let mut bank = chain_bank(50000, &[(1, 66), (103, 50), (999, 10), (203, 105)]);
        let d = discover(&mut bank, &[40000, 0, 50000])
            .await
            .expect("found");
        assert_eq!(d.base, 50000);
        let ids: Vec<u16> = d.models.iter().map(|m| m.id).collect();
        assert_eq!(ids, [1, 103, 999, 203]);
        assert_eq!(d.models[1].address, 50002 + 68);
        assert_eq!(d.common, Some(CommonInfo::default()));
    }

    #[tokio::test]
    async fn no_marker_is_an_error_naming_the_bases() {
        let mut bank = Bank(BTreeMap::new());
        assert_eq!(
            discover(&mut bank, &[40000, 0]).await,
            Err(DiscoveryError::NoMarker(vec![40000, 0]))
        );
    }

    #[test]
    fn the_classic_layout_puts_inverter_power_at_40084() {
        // SunS at 40000, common model L=66 at 40002, inverter 103 at 40070.
        let chain = [
            DiscoveredModel {
                id: 1,
                address: 40002,
                length: 66,
            },
            DiscoveredModel {
                id: 103,
                address: 40070,
                length: 50,
            },
            DiscoveredModel {
                id: 64000,
                address: 40122,
                length: 10,
            },
        ];
        let (map, skipped) = map_for(&profile(), &chain);
        assert_eq!(skipped, [64000]);
        let p = map
            .registers
            .iter()
            .find(|r| r.name.as_str() == "inverter_ac_power")
            .expect("power point");
        assert_eq!((p.address, p.scale_factor_at), (40084, Some(40085)));
        let e = map
            .registers
            .iter()
            .find(|r| r.name.as_str() == "inverter_ac_energy")
            .expect("energy point");
        assert_eq!((e.address, e.scale_factor_at), (40094, Some(40096)));
        assert_eq!(e.kind, ValueKind::Counter);
    }

    #[test]
    fn a_second_meter_gets_numbered_channels() {
        let chain = [
            DiscoveredModel {
                id: 201,
                address: 2,
                length: 105,
            },
            DiscoveredModel {
                id: 203,
                address: 109,
                length: 105,
            },
        ];
        let (map, _) = map_for(&profile(), &chain);
        assert!(
            map.registers
                .iter()
                .any(|r| r.name.as_str() == "meter_power")
        );
        let p2 = map
            .registers
            .iter()
            .find(|r| r.name.as_str() == "meter_power_2")
            .expect("second meter");
        assert_eq!(p2.address, 111 + 16);
    }

    #[test]
    fn common_model_strings_decode() {
        let mut data = vec![0u16; 66];
        data[0] = u16::from_be_bytes(*b"MR");
        data[1] = u16::from_be_bytes(*b"V\0");
        data[48] = u16::from_be_bytes(*b"SN");
        data[49] = u16::from_be_bytes(*b"1 ");
        let c = common_from_words(&data).expect("long enough");
        assert_eq!(c.manufacturer, "MRV");
        assert_eq!(c.serial, "SN1");
    }
}
