//! Run-status and flame-detection contacts: a debounced digital input.
//!
//! A pump contactor's auxiliary contact says "running"; a flame detector's
//! relay says "flame present". Both are dry contacts read through an
//! `embedded_hal::digital::InputPin`. The sampling loop calls
//! [`Contact::poll`] at its tick; the debounced level is the status value
//! (0 or 1) a frame carries.
//!
//! Invariant: a pin read error leaves the debounced level unchanged and is
//! returned to the caller, which flags the sample `UNAVAILABLE`.

use super::debounce::{Debouncer, Edge};
use embedded_hal::digital::InputPin;

/// A debounced contact input.
#[derive(Debug)]
pub struct Contact<P> {
    pin: P,
    debounce: Debouncer,
    active_low: bool,
}

impl<P: InputPin> Contact<P> {
    /// A contact on `pin`, inactive at start. `active_low`: a closed
    /// contact pulls the input low.
    pub fn new(pin: P, active_low: bool, threshold: u8) -> Self {
        Self {
            pin,
            debounce: Debouncer::new(false, threshold),
            active_low,
        }
    }

    /// Samples the input once; returns the debounced state and the edge,
    /// if this sample changed it.
    pub fn poll(&mut self) -> Result<(bool, Option<Edge>), P::Error> {
        let raw = self.pin.is_high()? != self.active_low;
        let edge = self.debounce.update(raw);
        Ok((self.debounce.level(), edge))
    }

    /// The debounced state.
    pub fn is_active(&self) -> bool {
        self.debounce.level()
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
    fn flame_contact_turns_on_and_off_after_the_debounce() {
        use State::{High, Low};
        let levels = [High, High, Low, High, High, Low, Low];
        let tx: std::vec::Vec<_> = levels.iter().map(|s| Transaction::get(*s)).collect();
        let mut pin = Mock::new(&tx);
        let mut c = Contact::new(pin.clone(), false, 2);
        let got: std::vec::Vec<_> = (0..levels.len()).map(|_| c.poll().unwrap()).collect();
        assert_eq!(got[0], (false, None));
        assert_eq!(got[1], (true, Some(Edge::Rising)));
        assert_eq!(got[2], (true, None));
        assert_eq!(got[6], (false, Some(Edge::Falling)));
        assert!(!c.is_active());
        c.release();
        pin.done();
    }
}
