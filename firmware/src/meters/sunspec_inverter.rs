//! A simulated PV inverter with a SunSpec map.
//!
//! Layout (holding registers, 0-based protocol addresses):
//!
//! | address | content |
//! |---|---|
//! | 40000-40001 | `SunS` marker |
//! | 40002 | model 1 (common), L = 66: Mn, Md, Opt, Vr, SN, DA |
//! | 40070 | model 103 (three-phase inverter), L = 50 |
//! | 40122 | model 203 (wye meter at the grid connection), L = 105 |
//! | 40229 | model 64100 (vendor, L = 4): unknown to gateways, to be skipped |
//! | 40235 | end marker `0xFFFF`, L = 0 |
//!
//! Model 103 points written (offsets from 40072): A (0) with A_SF -2,
//! PhVphA (8) with V_SF -1, W (12) with W_SF 0, Hz (14) with Hz_SF -2,
//! WH acc32 (22-23) with WH_SF 0, DCW (29) with DCW_SF 0, TmpCab (31) with
//! Tmp_SF -1, St (36) = 4 (MPPT) or 2 (sleeping). Unimplemented points hold
//! the SunSpec "not implemented" value (0x8000 / 0xFFFF).
//!
//! Model 203 points written (offsets from 40124): A (0) with A_SF -2, PhV (5)
//! with V_SF -1, Hz (14) with Hz_SF -2, W (16) with W_SF 0 (positive =
//! export), TotWhExp acc32 (36-37), TotWhImp acc32 (44-45), TotWh_SF (52) 0.
//!
//! Physics: AC power = peak * [`super::solar_factor`]; the energy counter
//! integrates power over simulated time and only grows. The meter sees the
//! inverter's power minus a constant site load (`load_w`): export when
//! positive, import when negative; both counters only grow.

use super::{Model, RegisterBank, string_words};

/// Inverter settings.
#[derive(Debug, Clone)]
pub struct InverterParams {
    /// Peak AC power, W (at most 32767: the W register is an i16).
    pub peak_w: u16,
    /// Energy counter at start, Wh.
    pub initial_wh: u32,
    /// Cloud noise seed.
    pub seed: u64,
    /// Serial number (model 1 `SN`).
    pub serial: String,
    /// Site load behind the meter, W.
    pub load_w: u16,
}

impl Default for InverterParams {
    fn default() -> Self {
        InverterParams {
            peak_w: 5000,
            initial_wh: 1_000_000,
            seed: 1,
            serial: "SIM-INV-0001".to_string(),
            load_w: 300,
        }
    }
}

/// Base address of the SunSpec map.
pub const BASE: u16 = 40000;
/// Address of model 103's ID register.
pub const INVERTER_MODEL: u16 = 40070;
/// Address of model 203's ID register.
pub const METER_MODEL: u16 = 40122;

pub(super) struct Inverter {
    p: InverterParams,
    energy_wh: f64,
    export_wh: f64,
    import_wh: f64,
    last_s: Option<f64>,
}

impl Inverter {
    pub(super) fn new(p: InverterParams) -> Self {
        Inverter {
            energy_wh: f64::from(p.initial_wh),
            export_wh: f64::from(p.initial_wh) * 0.8,
            import_wh: 50_000.0,
            p,
            last_s: None,
        }
    }
}

fn acc32(x: f64) -> [u16; 2] {
    let v = x as u64 as u32;
    [(v >> 16) as u16, v as u16]
}

impl Model for Inverter {
    fn update(&mut self, now_s: f64, bank: &mut RegisterBank) {
        let factor = super::solar_factor(now_s, self.p.seed);
        let power_w = f64::from(self.p.peak_w) * factor;
        let net_w = power_w - f64::from(self.p.load_w);
        if let Some(last) = self.last_s {
            let dt = (now_s - last).max(0.0);
            self.energy_wh += power_w * dt / 3600.0;
            if net_w >= 0.0 {
                self.export_wh += net_w * dt / 3600.0;
            } else {
                self.import_wh -= net_w * dt / 3600.0;
            }
        }
        self.last_s = Some(now_s);
        let h = &mut bank.holding;
        RegisterBank::put(h, BASE, &[0x5375, 0x6E53]);
        // Model 1, common.
        RegisterBank::put(h, 40002, &[1, 66]);
        RegisterBank::put(h, 40004, &string_words("MRV Simulations", 16));
        RegisterBank::put(h, 40020, &string_words("PV-Inverter-5k", 16));
        RegisterBank::put(h, 40036, &string_words("", 8));
        RegisterBank::put(h, 40044, &string_words("1.0.0", 8));
        RegisterBank::put(h, 40052, &string_words(&self.p.serial, 16));
        RegisterBank::put(h, 40068, &[1, 0x8000]);
        // Model 103, inverter: 50 data registers, not implemented by default.
        RegisterBank::put(h, INVERTER_MODEL, &[103, 50]);
        let d = INVERTER_MODEL + 2;
        RegisterBank::put(h, d, &[0xFFFF; 50]);
        let voltage = 230.0;
        let current = power_w / (3.0 * voltage);
        let wh = self.energy_wh as u64 as u32;
        let sf = |x: i16| x as u16;
        RegisterBank::put(h, d, &[(current * 100.0).round() as u16]);
        RegisterBank::put(h, d + 4, &[sf(-2)]);
        RegisterBank::put(h, d + 8, &[(voltage * 10.0) as u16]);
        RegisterBank::put(h, d + 11, &[sf(-1)]);
        RegisterBank::put(h, d + 12, &[power_w.round() as i16 as u16, 0]);
        RegisterBank::put(h, d + 14, &[5000, sf(-2)]);
        RegisterBank::put(h, d + 16, &[0x8000, 0x8000]);
        RegisterBank::put(h, d + 22, &[(wh >> 16) as u16, wh as u16, 0]);
        RegisterBank::put(h, d + 29, &[(power_w * 1.03).round() as i16 as u16, 0]);
        RegisterBank::put(h, d + 31, &[(300.0 + 150.0 * factor) as i16 as u16]);
        RegisterBank::put(h, d + 35, &[sf(-1)]);
        RegisterBank::put(h, d + 36, &[if factor > 0.0 { 4 } else { 2 }]);
        // Model 203, wye meter: 105 data registers, not implemented by default.
        RegisterBank::put(h, METER_MODEL, &[203, 105]);
        let m = METER_MODEL + 2;
        RegisterBank::put(h, m, &[0x8000; 105]);
        RegisterBank::put(h, m, &[(net_w.abs() / voltage * 100.0).round() as u16]);
        RegisterBank::put(h, m + 4, &[sf(-2)]);
        RegisterBank::put(h, m + 5, &[(voltage * 10.0) as u16]);
        RegisterBank::put(h, m + 13, &[sf(-1)]);
        RegisterBank::put(h, m + 14, &[5000, sf(-2)]);
        RegisterBank::put(h, m + 16, &[net_w.round() as i16 as u16]);
        RegisterBank::put(h, m + 20, &[0]);
        RegisterBank::put(h, m + 36, &acc32(self.export_wh));
        RegisterBank::put(h, m + 38, &[0; 6]);
        RegisterBank::put(h, m + 44, &acc32(self.import_wh));
        RegisterBank::put(h, m + 46, &[0; 6]);
        RegisterBank::put(h, m + 52, &[0]);
        // A vendor model gateways do not know, then the end marker.
        RegisterBank::put(h, 40229, &[64100, 4, 0xABCD, 1, 2, 3]);
        RegisterBank::put(h, 40235, &[0xFFFF, 0]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn energy_only_grows_and_power_follows_the_sun() {
        let mut inv = Inverter::new(InverterParams::default());
        let mut bank = RegisterBank::default();
        let noon = 12.0 * 3600.0;
        inv.update(noon, &mut bank);
        let w = bank.holding[&(INVERTER_MODEL + 2 + 12)] as i16;
        assert!(w > 0, "{w}");
        let e0 = inv.energy_wh;
        inv.update(noon + 3600.0, &mut bank);
        assert!(inv.energy_wh > e0);
        let hi = bank.holding[&(INVERTER_MODEL + 2 + 22)];
        let lo = bank.holding[&(INVERTER_MODEL + 2 + 23)];
        assert_eq!((u32::from(hi) << 16) | u32::from(lo), inv.energy_wh as u32);
        inv.update(noon + 12.0 * 3600.0, &mut bank);
        assert_eq!(bank.holding[&(INVERTER_MODEL + 2 + 12)], 0);
        assert_eq!(bank.holding[&40000], 0x5375);
        assert_eq!(bank.holding[&40235], 0xFFFF);
        assert_eq!(bank.holding[&METER_MODEL], 203);
    }
}
