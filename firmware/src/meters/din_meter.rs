//! A simulated DIN-rail energy meter with the Eastron SDM630 input register
//! layout: IEEE 754 single-precision floats, big-endian (ABCD), two
//! registers each. Input registers 0..=399 exist (unused ones read 0, as on
//! the real meter); reads beyond answer exception 0x02.
//!
//! | address | value | unit |
//! |---|---|---|
//! | 0 | voltage L1 | V |
//! | 6 | current L1 | A |
//! | 12 | active power L1 | W |
//! | 52 | total system power | W |
//! | 70 | frequency | Hz |
//! | 72 | import active energy | kWh |
//! | 74 | export active energy | kWh |
//! | 342 | total active energy | kWh |
//!
//! Physics: a solar irrigation pump's supply: the pump draws `pump_w` while
//! the sun is strong enough (solar factor above 0.2); energy integrates.
//! Voltage is stated to 0.1 V, current to 1 mA and power to 0.01 W, as the
//! real meter's display does (so they are exact in the gateway's mV, mA and
//! mW); energy to 0.001 kWh (1 Wh), as long as the f32 holds that many
//! digits (below 10 000 kWh).

use super::{Model, RegisterBank, f32_words};

/// Meter settings.
#[derive(Debug, Clone)]
pub struct DinMeterParams {
    /// Pump power while running, W.
    pub pump_w: f32,
    /// Import energy at start, kWh.
    pub initial_kwh: f64,
    /// Cloud noise seed.
    pub seed: u64,
}

impl Default for DinMeterParams {
    fn default() -> Self {
        DinMeterParams {
            pump_w: 1500.25,
            initial_kwh: 1234.5,
            seed: 2,
        }
    }
}

pub(super) struct DinMeter {
    p: DinMeterParams,
    import_kwh: f64,
    last_s: Option<f64>,
}

impl DinMeter {
    pub(super) fn new(p: DinMeterParams) -> Self {
        DinMeter {
            import_kwh: p.initial_kwh,
            p,
            last_s: None,
        }
    }
}

impl Model for DinMeter {
    fn update(&mut self, now_s: f64, bank: &mut RegisterBank) {
        let running = super::solar_factor(now_s, self.p.seed) > 0.2;
        let power = if running { self.p.pump_w } else { 0.0 };
        if let Some(last) = self.last_s {
            let dt = (now_s - last).max(0.0);
            self.import_kwh += f64::from(power) * dt / 3_600_000.0;
        }
        self.last_s = Some(now_s);
        let t = &mut bank.input;
        if t.is_empty() {
            RegisterBank::put(t, 0, &[0; 400]);
        }
        let voltage = ((230.0 + (now_s / 60.0).sin() * 2.0) * 10.0).round() / 10.0;
        let voltage = voltage as f32;
        let current = ((f64::from(power) / f64::from(voltage)) * 1000.0).round() / 1000.0;
        RegisterBank::put(t, 0, &f32_words(voltage));
        RegisterBank::put(t, 6, &f32_words(current as f32));
        RegisterBank::put(t, 12, &f32_words(power));
        RegisterBank::put(t, 52, &f32_words(power));
        RegisterBank::put(t, 70, &f32_words(50.0));
        let kwh = ((self.import_kwh * 1000.0).round() / 1000.0) as f32;
        RegisterBank::put(t, 72, &f32_words(kwh));
        RegisterBank::put(t, 74, &f32_words(0.0));
        RegisterBank::put(t, 342, &f32_words(kwh));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f32_at(bank: &RegisterBank, a: u16) -> f32 {
        f32::from_bits((u32::from(bank.input[&a]) << 16) | u32::from(bank.input[&(a + 1)]))
    }

    #[test]
    fn the_pump_runs_by_day_and_energy_accumulates() {
        let mut m = DinMeter::new(DinMeterParams::default());
        let mut bank = RegisterBank::default();
        let noon = 12.0 * 3600.0;
        m.update(noon, &mut bank);
        m.update(noon + 3600.0, &mut bank);
        assert_eq!(f32_at(&bank, 12), 1500.25);
        assert!((f32_at(&bank, 72) - 1236.0).abs() < 0.01);
        assert_eq!(f32_at(&bank, 70), 50.0);
        m.update(noon + 12.0 * 3600.0, &mut bank);
        assert_eq!(f32_at(&bank, 12), 0.0);
        assert_eq!(bank.input.len(), 400);
    }
}
