//! S0 pulse counter for energy meters and water flow meters.
//!
//! An S0 output is an opto-coupled switch that closes for 30-90 ms per
//! unit of energy (or volume). [`PulseCounter`] samples a digital input
//! (`embedded_hal::digital::InputPin`) from the sampling loop, debounces it
//! and counts one pulse per debounced activation. [`PulseScale`] turns a
//! pulse total into the quantity's base unit with integer arithmetic.
//!
//! Invariants: the pulse total never decreases (it wraps only after 2^64
//! pulses); a pin read error leaves the count and the debouncer unchanged.

use super::debounce::{Debouncer, Edge};
use embedded_hal::digital::InputPin;

/// Meter constant: `pulses_per_unit` pulses per display unit, and
/// `base_per_unit` base units (Wh, mL) per display unit.
///
/// A 1000 imp/kWh energy meter is `{ pulses_per_unit: 1000, base_per_unit:
/// 1000 }` (1 Wh per pulse); a water meter with one pulse per 10 L is
/// `{ pulses_per_unit: 1, base_per_unit: 10_000 }` (display unit 10 L).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PulseScale {
    /// Pulses per display unit (the meter constant); at least 1.
    pub pulses_per_unit: u32,
    /// Base units per display unit.
    pub base_per_unit: u32,
}

impl PulseScale {
    /// Base units for a pulse total, rounded down (exact for totals that
    /// are whole multiples of the meter constant).
    pub fn to_base(self, pulses: u64) -> i64 {
        let num = u128::from(pulses) * u128::from(self.base_per_unit);
        let v = num / u128::from(self.pulses_per_unit.max(1));
        i64::try_from(v).unwrap_or(i64::MAX)
    }
}

/// Counts debounced pulses on one input.
#[derive(Debug)]
pub struct PulseCounter<P> {
    pin: P,
    debounce: Debouncer,
    active_low: bool,
    pulses: u64,
}

impl<P: InputPin> PulseCounter<P> {
    /// A counter on `pin` starting at `pulses` (restored from flash).
    /// `active_low`: the S0 switch pulls the input low when closed (the
    /// usual wiring with a pull-up). `threshold`: debounce samples.
    pub fn new(pin: P, active_low: bool, threshold: u8, pulses: u64) -> Self {
        Self {
            pin,
            debounce: Debouncer::new(false, threshold),
            active_low,
            pulses,
        }
    }

    /// Samples the input once; returns true when this sample completed a
    /// new pulse (a debounced activation).
    pub fn poll(&mut self) -> Result<bool, P::Error> {
        let raw = self.pin.is_high()? != self.active_low;
        let counted = self.debounce.update(raw) == Some(Edge::Rising);
        if counted {
            self.pulses = self.pulses.wrapping_add(1);
        }
        Ok(counted)
    }

    /// Pulses counted since the meter was installed.
    pub fn pulses(&self) -> u64 {
        self.pulses
    }

    /// The pin (e.g. for a simulator to drive it).
    pub fn pin_mut(&mut self) -> &mut P {
        &mut self.pin
    }

    /// Gives the pin back.
    pub fn release(self) -> P {
        self.pin
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use embedded_hal_mock::eh1::digital::{Mock, State, Transaction};

    #[test]
    fn meter_constants_convert_exactly() {
        let kwh1000 = PulseScale {
            pulses_per_unit: 1000,
            base_per_unit: 1000,
        };
        assert_eq!(kwh1000.to_base(12_345), 12_345);
        let kwh800 = PulseScale {
            pulses_per_unit: 800,
            base_per_unit: 1000,
        };
        assert_eq!(kwh800.to_base(800), 1000);
        assert_eq!(kwh800.to_base(4), 5);
        let water = PulseScale {
            pulses_per_unit: 1,
            base_per_unit: 10_000,
        };
        assert_eq!(water.to_base(3), 30_000);
        assert_eq!(water.to_base(u64::MAX), i64::MAX);
    }

    /// A pin that replays raw levels (a real, simple model, not a mock).
    struct Levels(std::vec::IntoIter<bool>);
    impl embedded_hal::digital::ErrorType for Levels {
        type Error = core::convert::Infallible;
    }
    impl InputPin for Levels {
        fn is_high(&mut self) -> Result<bool, Self::Error> {
            Ok(self.0.next().unwrap_or(true))
        }
        fn is_low(&mut self) -> Result<bool, Self::Error> {
            self.is_high().map(|h| !h)
        }
    }

    proptest::proptest! {
        #[test]
        fn the_count_never_decreases_and_grows_by_at_most_one_per_activation(
            raw in proptest::collection::vec(proptest::prelude::any::<bool>(), 0..400),
            start in 0u64..1_000_000,
            threshold in 1u8..5,
        ) {
            let n = raw.len();
            let mut c = PulseCounter::new(Levels(raw.into_iter()), true, threshold, start);
            let mut last = c.pulses();
            for _ in 0..n {
                let counted = c.poll().unwrap();
                proptest::prop_assert_eq!(c.pulses(), last + u64::from(counted));
                last = c.pulses();
            }
            // At most one pulse per `2 * threshold` samples (on + off).
            proptest::prop_assert!(last - start <= (n as u64) / u64::from(threshold) / 2 + 1);
        }

        #[test]
        fn scaling_is_monotonic_and_exact_on_whole_units(
            a in 0u64..1_000_000_000,
            b in 0u64..1_000_000_000,
            ppu in 1u32..10_000,
            bpu in 1u32..100_000,
        ) {
            let s = PulseScale { pulses_per_unit: ppu, base_per_unit: bpu };
            let (lo, hi) = (a.min(b), a.max(b));
            proptest::prop_assert!(s.to_base(lo) <= s.to_base(hi));
            let units = lo / u64::from(ppu);
            proptest::prop_assert_eq!(
                s.to_base(units * u64::from(ppu)),
                (units * u64::from(bpu)) as i64
            );
        }
    }

    #[test]
    fn counts_one_pulse_per_debounced_activation_on_an_active_low_input() {
        use State::{High, Low};
        // idle high, bounce low-high, then a clean low of 3 samples, release.
        let levels = [High, Low, High, Low, Low, Low, Low, High, High, High];
        let tx: std::vec::Vec<_> = levels.iter().map(|s| Transaction::get(*s)).collect();
        let mut pin = Mock::new(&tx);
        let mut c = PulseCounter::new(pin.clone(), true, 3, 41);
        let counted: std::vec::Vec<bool> = (0..levels.len()).map(|_| c.poll().unwrap()).collect();
        assert_eq!(counted.iter().filter(|b| **b).count(), 1);
        assert!(counted[5]);
        assert_eq!(c.pulses(), 42);
        c.release();
        pin.done();
    }
}
