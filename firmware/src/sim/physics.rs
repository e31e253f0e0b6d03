//! Physical models of the simulated sites: what the sensors would see.
//!
//! Each model is a plain value stepped with `step(model_time_s, dt_s, rng)`:
//! time comes in as an argument, randomness through the caller's RNG, so a
//! seeded run is reproducible. Models keep cumulative quantities (energy,
//! water, gas) as `f64` totals in base units; the device turns them into
//! meter pulses or counter registers.
//!
//! Model time is seconds since local midnight of the simulated site's first
//! day (it may exceed one day; the models use it modulo 86 400).
//!
//! - [`SolarPlant`]: sun elevation (a half sine from 06:00 to 18:00) times a
//!   cloud factor that random-walks between 0.2 and 1.0.
//! - [`IrrigationPump`]: a solar pump that runs on a schedule (07:00-11:00,
//!   13:00-17:00) when there is enough sun; power and flow follow the sun.
//! - [`Digester`]: gas production with a daily cycle around a daily total,
//!   a CH4 fraction that random-walks between 50 % and 65 %, and a flare
//!   whose flame is lit while gas flows.
//! - [`PaddyField`]: alternate wetting and drying (AWD): the water level in
//!   the field tube falls by evapotranspiration and percolation until it
//!   reaches -150 mm, then the field is re-flooded to +50 mm.

use rand::Rng;

const DAY_S: f64 = 86_400.0;

/// Sun intensity 0..1 at a time of day: a half sine from 06:00 to 18:00.
pub fn sun_elevation(model_time_s: f64) -> f64 {
    let h = (model_time_s.rem_euclid(DAY_S)) / 3600.0;
    if (6.0..18.0).contains(&h) {
        (core::f64::consts::PI * (h - 6.0) / 12.0).sin()
    } else {
        0.0
    }
}

/// A PV plant behind an S0 energy meter.
#[derive(Debug, Clone)]
pub struct SolarPlant {
    /// Peak AC power, W.
    pub peak_w: f64,
    /// Cloud factor, 0.2 (overcast) to 1.0 (clear).
    pub cloud: f64,
    /// Energy delivered so far, Wh.
    pub energy_wh: f64,
    /// Power at the last step, W.
    pub power_w: f64,
}

impl SolarPlant {
    /// A plant of `peak_w` under a clear sky with a zero energy total.
    pub fn new(peak_w: f64) -> Self {
        Self {
            peak_w,
            cloud: 1.0,
            energy_wh: 0.0,
            power_w: 0.0,
        }
    }

    /// Advances the plant by `dt_s` seconds ending at `model_time_s`.
    pub fn step(&mut self, model_time_s: f64, dt_s: f64, rng: &mut impl Rng) {
        self.cloud = (self.cloud + rng.gen_range(-0.05..0.05)).clamp(0.2, 1.0);
        self.power_w = self.peak_w * sun_elevation(model_time_s) * self.cloud;
        self.energy_wh += self.power_w * dt_s / 3600.0;
    }
}

/// A solar irrigation pump with an energy meter and a water flow meter.
#[derive(Debug, Clone)]
pub struct IrrigationPump {
    /// Rated pump power, W.
    pub rated_w: f64,
    /// Flow at rated power, mL/s.
    pub rated_flow_ml_s: f64,
    /// Energy consumed so far, Wh.
    pub energy_wh: f64,
    /// Water pumped so far, mL.
    pub water_ml: f64,
    /// Whether the pump ran during the last step.
    pub running: bool,
}

impl IrrigationPump {
    /// A 2.2 kW pump delivering 8 L/s at rated power.
    pub fn new() -> Self {
        Self {
            rated_w: 2200.0,
            rated_flow_ml_s: 8000.0,
            energy_wh: 0.0,
            water_ml: 0.0,
            running: false,
        }
    }

    /// True when the schedule allows the pump to run at this time of day.
    pub fn scheduled(model_time_s: f64) -> bool {
        let h = model_time_s.rem_euclid(DAY_S) / 3600.0;
        (7.0..11.0).contains(&h) || (13.0..17.0).contains(&h)
    }

    /// Advances the pump by `dt_s` seconds ending at `model_time_s`.
    pub fn step(&mut self, model_time_s: f64, dt_s: f64, rng: &mut impl Rng) {
        let sun = sun_elevation(model_time_s) * rng.gen_range(0.9..1.0);
        self.running = Self::scheduled(model_time_s) && sun > 0.25;
        if self.running {
            self.energy_wh += self.rated_w * sun * dt_s / 3600.0;
            self.water_ml += self.rated_flow_ml_s * sun * dt_s;
        }
    }
}

impl Default for IrrigationPump {
    fn default() -> Self {
        Self::new()
    }
}

/// A biogas digester with a gas flow meter, a CH4 analyser and a flare.
#[derive(Debug, Clone)]
pub struct Digester {
    /// Mean production, mL per day.
    pub daily_ml: f64,
    /// Gas produced so far, mL.
    pub gas_ml: f64,
    /// CH4 fraction, 0.01 vol%.
    pub ch4_centi_pct: f64,
    /// Whether the flare flame is lit.
    pub flame: bool,
    /// Biogas temperature at the flow meter, 0.01 degC.
    pub temp_centi_c: f64,
    /// Biogas absolute pressure at the flow meter, Pa.
    pub pressure_pa: f64,
}

impl Digester {
    /// A household-to-farm digester making 30 m3 of biogas a day.
    pub fn new() -> Self {
        Self {
            daily_ml: 30.0e6,
            gas_ml: 0.0,
            ch4_centi_pct: 5800.0,
            flame: false,
            temp_centi_c: 3500.0,
            pressure_pa: 102_800.0,
        }
    }

    /// Advances the digester by `dt_s` seconds ending at `model_time_s`.
    pub fn step(&mut self, model_time_s: f64, dt_s: f64, rng: &mut impl Rng) {
        // Warmer afternoons digest faster: +-20 % around the mean.
        let h = model_time_s.rem_euclid(DAY_S) / 3600.0;
        let daily_cycle = 1.0 + 0.2 * (core::f64::consts::PI * (h - 8.0) / 12.0).sin();
        let rate_ml_s = self.daily_ml / DAY_S * daily_cycle;
        self.gas_ml += rate_ml_s * dt_s;
        self.ch4_centi_pct =
            (self.ch4_centi_pct + rng.gen_range(-20.0..20.0)).clamp(5000.0, 6500.0);
        self.flame = rate_ml_s > 0.0;
        // Mesophilic gas, a little warmer in the afternoon; a slight
        // overpressure that rises with the production rate.
        self.temp_centi_c = 3500.0 + 300.0 * (daily_cycle - 1.0) / 0.2;
        self.pressure_pa = 101_325.0 + 1_500.0 * daily_cycle + rng.gen_range(-20.0..20.0);
    }
}

impl Default for Digester {
    fn default() -> Self {
        Self::new()
    }
}

/// A rice paddy under alternate wetting and drying, seen by a field tube.
#[derive(Debug, Clone)]
pub struct PaddyField {
    /// Water level relative to the soil surface, mm (negative below).
    pub level_mm: f64,
    /// True while the field is being re-flooded.
    pub flooding: bool,
}

impl PaddyField {
    /// Drying rate (evapotranspiration + percolation), mm per day.
    pub const DRY_MM_PER_DAY: f64 = 10.0;
    /// Re-flooding rate, mm per hour.
    pub const FLOOD_MM_PER_H: f64 = 100.0;
    /// Safe-AWD threshold that triggers irrigation, mm.
    pub const REFLOOD_AT_MM: f64 = -150.0;
    /// Level a re-flooding stops at, mm.
    pub const FLOODED_MM: f64 = 50.0;

    /// A freshly flooded field.
    pub fn new() -> Self {
        Self {
            level_mm: Self::FLOODED_MM,
            flooding: false,
        }
    }

    /// Advances the field by `dt_s` seconds.
    pub fn step(&mut self, _model_time_s: f64, dt_s: f64, rng: &mut impl Rng) {
        if self.flooding {
            self.level_mm += Self::FLOOD_MM_PER_H * dt_s / 3600.0;
            if self.level_mm >= Self::FLOODED_MM {
                self.flooding = false;
            }
        } else {
            let jitter = rng.gen_range(0.8..1.2);
            self.level_mm -= Self::DRY_MM_PER_DAY * jitter * dt_s / DAY_S;
            if self.level_mm <= Self::REFLOOD_AT_MM {
                self.flooding = true;
            }
        }
    }
}

impl Default for PaddyField {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn solar_plant_produces_by_day_and_not_by_night() {
        let mut rng = StdRng::seed_from_u64(1);
        let mut pv = SolarPlant::new(50_000.0);
        pv.step(2.0 * 3600.0, 3600.0, &mut rng);
        assert_eq!(pv.energy_wh, 0.0);
        pv.step(12.0 * 3600.0, 3600.0, &mut rng);
        assert!(
            pv.energy_wh > 9_000.0 && pv.energy_wh <= 50_000.0,
            "{}",
            pv.energy_wh
        );
    }

    #[test]
    fn paddy_dries_to_the_threshold_then_refloods() {
        let mut rng = StdRng::seed_from_u64(2);
        let mut f = PaddyField::new();
        let mut min = f64::MAX;
        let mut reflooded = false;
        for _ in 0..(40 * 24) {
            f.step(0.0, 3600.0, &mut rng);
            min = min.min(f.level_mm);
            if f.flooding {
                reflooded = true;
            }
        }
        assert!(reflooded);
        assert!(min < -140.0 && min > -160.0, "{min}");
    }

    #[test]
    fn pump_runs_only_on_schedule_with_sun() {
        let mut rng = StdRng::seed_from_u64(3);
        let mut p = IrrigationPump::new();
        p.step(12.0 * 3600.0, 60.0, &mut rng);
        assert!(!p.running);
        p.step(9.0 * 3600.0, 60.0, &mut rng);
        assert!(p.running && p.water_ml > 0.0);
    }
}
