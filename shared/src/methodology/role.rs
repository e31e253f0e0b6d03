//! Methodology inputs: the *roles* a measured series can play in a
//! calculation, which quantity and value kinds each role takes, which
//! methodologies use it, and (for energy) which measured direction it may
//! come from.
//!
//! A site's configuration binds each role to a (device, channel); the
//! report carries the bindings and every verifier recomputes from them. No
//! calculator ever picks series by quantity alone (a site's energy series
//! include pump consumption and grid import, which must never be credited
//! as generation).
//!
//! | methodology | role | quantity | kinds | side | required |
//! |---|---|---|---|---|---|
//! | solar_pv | `generation` | energy | counter, delta | RE | one of generation/export, or more |
//! | solar_pv | `export` | energy | counter, delta | RE | (see generation) |
//! | solar_pv | `import` | energy | counter, delta | PE | optional |
//! | solar_pv | `consumption` | energy | counter, delta | PE | optional |
//! | solar_pump | `pump_energy` | energy | counter, delta | RE | one or more |
//! | solar_pump | `grid_import` | energy | counter, delta | PE | optional |
//! | solar_pump | `water_volume` | water_volume | counter, delta | info | optional |
//! | biogas_digester | `gas_volume` | gas_volume | counter, delta | RE | one per group |
//! | biogas_digester | `ch4_fraction` | ch4_fraction | instant | pairing | one per group |
//! | biogas_digester | `temperature` | temperature | instant | pairing | one per group |
//! | biogas_digester | `pressure` | pressure | instant | pairing | one per group |
//! | biogas_digester | `flame` | status | instant | pairing | at most one per group |
//! | rice_awd | `water_level` | water_level | instant | RE/PE | one or more (one per tube) |
//!
//! Energy directions ([`EnergyFlow`]) are declared per channel in the
//! gateway configuration (device kinds and Modbus profiles give defaults);
//! [`Role::accepts_flow`] says which a role takes, so configuration checks
//! can refuse, say, a pump's consumption bound as PV generation.

use super::MethodologyKind;
use crate::quantity::{Quantity, ValueKind};
use serde::{Deserialize, Serialize};

/// What a bound series is to a calculation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Solar PV: electricity generated (RE side).
    Generation,
    /// Solar PV: electricity fed to the grid (RE side).
    Export,
    /// Solar PV: electricity drawn from the grid (PE side).
    Import,
    /// Solar PV: auxiliary consumption of the plant (PE side).
    Consumption,
    /// Solar pump: electricity delivered to the pump by the solar system (RE side).
    PumpEnergy,
    /// Solar pump: electricity the pump drew from the grid (PE side).
    GridImport,
    /// Solar pump: water pumped (reported, not credited).
    WaterVolume,
    /// Digester: biogas volume at actual conditions.
    GasVolume,
    /// Digester: CH4 fraction of the biogas.
    Ch4Fraction,
    /// Digester: biogas temperature.
    Temperature,
    /// Digester: biogas absolute pressure.
    Pressure,
    /// Digester: flame present (flare) status.
    Flame,
    /// Rice AWD: water level in one field tube.
    WaterLevel,
}

/// Which side of the calculation a role feeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Counted toward reference emissions (credit).
    Reference,
    /// Subtracted (project emissions).
    Project,
    /// Paired with a credited series (digester CH4, T, p, flame).
    Pairing,
    /// Reported only.
    Info,
}

/// The measured direction of an energy channel, as declared in the
/// gateway configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EnergyFlow {
    /// Produced by a generator (PV inverter or generation meter).
    Generation,
    /// Used by a load (pump, auxiliaries).
    Consumption,
    /// Drawn from the grid at a connection point.
    Import,
    /// Fed to the grid at a connection point.
    Export,
    /// A bidirectional net register (import minus export or its reverse):
    /// never credited.
    Net,
}

impl EnergyFlow {
    /// Stable name.
    pub fn name(self) -> &'static str {
        match self {
            EnergyFlow::Generation => "generation",
            EnergyFlow::Consumption => "consumption",
            EnergyFlow::Import => "import",
            EnergyFlow::Export => "export",
            EnergyFlow::Net => "net",
        }
    }
}

/// How many bindings of a role a calculation needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// At least one binding of this role or of its `alternative`.
    AtLeastOne,
    /// Any number.
    Optional,
    /// Exactly one per group.
    OnePerGroup,
    /// At most one per group.
    AtMostOnePerGroup,
}

/// A role as one methodology uses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoleSpec {
    /// The role.
    pub role: Role,
    /// How many bindings are needed.
    pub need: Need,
    /// For [`Need::AtLeastOne`]: another role that satisfies the need too.
    pub alternative: Option<Role>,
}

const fn spec(role: Role, need: Need, alternative: Option<Role>) -> RoleSpec {
    RoleSpec {
        role,
        need,
        alternative,
    }
}

const PV: &[RoleSpec] = &[
    spec(Role::Generation, Need::AtLeastOne, Some(Role::Export)),
    spec(Role::Export, Need::Optional, None),
    spec(Role::Import, Need::Optional, None),
    spec(Role::Consumption, Need::Optional, None),
];
const PUMP: &[RoleSpec] = &[
    spec(Role::PumpEnergy, Need::AtLeastOne, None),
    spec(Role::GridImport, Need::Optional, None),
    spec(Role::WaterVolume, Need::Optional, None),
];
const DIGESTER: &[RoleSpec] = &[
    spec(Role::GasVolume, Need::OnePerGroup, None),
    spec(Role::Ch4Fraction, Need::OnePerGroup, None),
    spec(Role::Temperature, Need::OnePerGroup, None),
    spec(Role::Pressure, Need::OnePerGroup, None),
    spec(Role::Flame, Need::AtMostOnePerGroup, None),
];
const AWD: &[RoleSpec] = &[spec(Role::WaterLevel, Need::AtLeastOne, None)];

impl MethodologyKind {
    /// The roles this calculator takes.
    pub fn roles(self) -> &'static [RoleSpec] {
        match self {
            MethodologyKind::SolarPv => PV,
            MethodologyKind::SolarPump => PUMP,
            MethodologyKind::BiogasDigester => DIGESTER,
            MethodologyKind::RiceAwd => AWD,
        }
    }

    /// The spec of `role` in this calculator, if it takes it.
    pub fn role(self, role: Role) -> Option<RoleSpec> {
        self.roles().iter().copied().find(|s| s.role == role)
    }
}

impl Role {
    /// Every role.
    pub const ALL: [Role; 13] = [
        Role::Generation,
        Role::Export,
        Role::Import,
        Role::Consumption,
        Role::PumpEnergy,
        Role::GridImport,
        Role::WaterVolume,
        Role::GasVolume,
        Role::Ch4Fraction,
        Role::Temperature,
        Role::Pressure,
        Role::Flame,
        Role::WaterLevel,
    ];

    /// Stable snake_case name, as in JSON and config.
    pub fn name(self) -> &'static str {
        match self {
            Role::Generation => "generation",
            Role::Export => "export",
            Role::Import => "import",
            Role::Consumption => "consumption",
            Role::PumpEnergy => "pump_energy",
            Role::GridImport => "grid_import",
            Role::WaterVolume => "water_volume",
            Role::GasVolume => "gas_volume",
            Role::Ch4Fraction => "ch4_fraction",
            Role::Temperature => "temperature",
            Role::Pressure => "pressure",
            Role::Flame => "flame",
            Role::WaterLevel => "water_level",
        }
    }

    /// The quantity a series bound to this role must have.
    pub fn quantity(self) -> Quantity {
        match self {
            Role::Generation
            | Role::Export
            | Role::Import
            | Role::Consumption
            | Role::PumpEnergy
            | Role::GridImport => Quantity::Energy,
            Role::WaterVolume => Quantity::WaterVolume,
            Role::GasVolume => Quantity::GasVolume,
            Role::Ch4Fraction => Quantity::Ch4Fraction,
            Role::Temperature => Quantity::Temperature,
            Role::Pressure => Quantity::Pressure,
            Role::Flame => Quantity::Status,
            Role::WaterLevel => Quantity::WaterLevel,
        }
    }

    /// The value kinds a series bound to this role may have.
    pub fn kinds(self) -> &'static [ValueKind] {
        match self.quantity() {
            Quantity::Energy | Quantity::WaterVolume | Quantity::GasVolume => {
                &[ValueKind::Counter, ValueKind::Delta]
            }
            _ => &[ValueKind::Instant],
        }
    }

    /// Which side of the calculation it feeds.
    pub fn side(self) -> Side {
        match self {
            Role::Generation | Role::Export | Role::PumpEnergy | Role::GasVolume => Side::Reference,
            Role::Import | Role::Consumption | Role::GridImport => Side::Project,
            Role::Ch4Fraction | Role::Temperature | Role::Pressure | Role::Flame => Side::Pairing,
            Role::WaterVolume => Side::Info,
            Role::WaterLevel => Side::Reference,
        }
    }

    /// Whether an energy channel measuring `flow` may be bound to this
    /// role (non-energy roles accept any; a net register is never bound).
    pub fn accepts_flow(self, flow: EnergyFlow) -> bool {
        match self {
            Role::Generation => matches!(flow, EnergyFlow::Generation | EnergyFlow::Export),
            Role::Export => flow == EnergyFlow::Export,
            Role::Import | Role::GridImport => flow == EnergyFlow::Import,
            Role::Consumption => matches!(flow, EnergyFlow::Consumption | EnergyFlow::Import),
            Role::PumpEnergy => flow == EnergyFlow::Consumption,
            _ => true,
        }
    }

    /// The directions [`Role::accepts_flow`] takes, for messages.
    pub fn accepted_flows(self) -> &'static [EnergyFlow] {
        match self {
            Role::Generation => &[EnergyFlow::Generation, EnergyFlow::Export],
            Role::Export => &[EnergyFlow::Export],
            Role::Import | Role::GridImport => &[EnergyFlow::Import],
            Role::Consumption => &[EnergyFlow::Consumption, EnergyFlow::Import],
            Role::PumpEnergy => &[EnergyFlow::Consumption],
            _ => &[],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_json_and_every_role_belongs_to_one_methodology() {
        for r in Role::ALL {
            let json = serde_json::to_string(&r).expect("serialises");
            assert_eq!(json, alloc::format!("\"{}\"", r.name()));
            let users = [
                MethodologyKind::SolarPv,
                MethodologyKind::SolarPump,
                MethodologyKind::BiogasDigester,
                MethodologyKind::RiceAwd,
            ]
            .iter()
            .filter(|m| m.role(r).is_some())
            .count();
            assert_eq!(users, 1, "{r:?}");
        }
    }

    #[test]
    fn consumption_is_never_generation() {
        assert!(!Role::Generation.accepts_flow(EnergyFlow::Consumption));
        assert!(!Role::Generation.accepts_flow(EnergyFlow::Import));
        assert!(!Role::Generation.accepts_flow(EnergyFlow::Net));
        assert!(Role::PumpEnergy.accepts_flow(EnergyFlow::Consumption));
        assert!(!Role::Import.accepts_flow(EnergyFlow::Export));
    }
}
