//! Exact conversion of a value, as a device or payload states it, into the
//! integer base unit of its [`Quantity`](crate::quantity::Quantity).
//!
//! A [`Conversion`] is an exact rational `num / den`: a unit's factor to the
//! base unit (W to mW is 1000, ppm to 0.01 vol% is 1/100, see
//! [`Quantity::units`](crate::quantity::Quantity::units)) composed with a
//! device's scale (`0.1`, a SunSpec `10^sf`). Inputs are exact too: integers
//! ([`Conversion::apply_int`]) and decimals ([`Decimal`],
//! [`Conversion::apply_decimal`]). A binary float (an IEEE 754 register, a
//! JSON number with a fraction) is taken as the **shortest decimal that
//! reads back as the same float** ([`Decimal::from_f32`],
//! [`Decimal::from_f64`]): an `f32` register holding 230.1 V is 230.1 V,
//! i.e. 230100 mV, not 230.100006 V; for every decimal written with at most
//! 6 (f32) or 15 (f64) significant digits this is the number as written.
//!
//! ## Rounding rule (normative)
//!
//! The exact rational result is rounded to the nearest integer, halves away
//! from zero (`2.5 -> 3`, `-2.5 -> -3`). When the exact result was not
//! already an integer, [`Converted::rounded`] is true and the producer sets
//! [`Quality::ROUNDED`](crate::reading::Quality::ROUNDED) on the sample, so a
//! value that lost resolution says so in the buffer, the report and the
//! diagnostics. Nothing is truncated, and nothing is rounded without the
//! flag. A result outside `i64` is an error ([`ConversionError::Overflow`]),
//! never a saturated number.

use alloc::format;

/// Why a value could not be converted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ConversionError {
    /// The result (or an intermediate product) does not fit an `i64`.
    #[error("value out of the i64 range after conversion")]
    Overflow,
    /// NaN or an infinity.
    #[error("not a finite number")]
    NotFinite,
}

/// A converted value: the integer in base units and whether it was rounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Converted {
    /// Value in base units.
    pub value: i64,
    /// True when the exact result had a fraction that the rounding rule
    /// removed (the sample must carry `Quality::ROUNDED`).
    pub rounded: bool,
}

/// An exact decimal `mantissa * 10^-frac_digits`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decimal {
    /// All digits, signed.
    pub mantissa: i128,
    /// Digits after the decimal point (at most 340 for an `f64`).
    pub frac_digits: u32,
}

impl Decimal {
    /// An integer.
    pub fn int(v: i128) -> Decimal {
        Decimal {
            mantissa: v,
            frac_digits: 0,
        }
    }

    /// The shortest decimal that reads back as `x` (an `f64`).
    pub fn from_f64(x: f64) -> Result<Decimal, ConversionError> {
        if !x.is_finite() {
            return Err(ConversionError::NotFinite);
        }
        // Rust's `Display` for floats prints the shortest round-trip digits
        // and never uses exponent notation.
        Decimal::parse_plain(&format!("{x}")).ok_or(ConversionError::Overflow)
    }

    /// The shortest decimal that reads back as `x` (an `f32`): the number an
    /// `f32` register holds as its device meant it.
    pub fn from_f32(x: f32) -> Result<Decimal, ConversionError> {
        if !x.is_finite() {
            return Err(ConversionError::NotFinite);
        }
        Decimal::parse_plain(&format!("{x}")).ok_or(ConversionError::Overflow)
    }

    /// Parses `[-]digits[.digits]` (no exponent); `None` when the digits do
    /// not fit an `i128` or the text is not of that form.
    pub fn parse_plain(s: &str) -> Option<Decimal> {
        let (neg, body) = match s.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, s),
        };
        let (int, frac) = match body.split_once('.') {
            Some((i, f)) => (i, f),
            None => (body, ""),
        };
        if int.is_empty() || !int.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        if !frac.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        // Trailing zeros of the fraction carry no value.
        let frac = frac.trim_end_matches('0');
        let mut m: i128 = 0;
        for b in int.bytes().chain(frac.bytes()) {
            m = m.checked_mul(10)?.checked_add(i128::from(b - b'0'))?;
        }
        Some(Decimal {
            mantissa: if neg { -m } else { m },
            frac_digits: u32::try_from(frac.len()).ok()?,
        })
    }
}

/// An exact factor `num / den` (`den > 0`, reduced).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Conversion {
    /// Numerator (sign of the factor).
    pub num: i128,
    /// Denominator, positive.
    pub den: i128,
}

fn gcd(mut a: i128, mut b: i128) -> i128 {
    a = a.abs();
    b = b.abs();
    while b != 0 {
        let t = a % b;
        a = b;
        b = t;
    }
    a
}

impl Conversion {
    /// The identity.
    pub const ONE: Conversion = Conversion { num: 1, den: 1 };

    /// `num / den`, reduced; `None` for `den == 0` or `num == 0`.
    pub fn new(num: i128, den: i128) -> Option<Conversion> {
        if den == 0 || num == 0 {
            return None;
        }
        let (num, den) = if den < 0 { (-num, -den) } else { (num, den) };
        let g = gcd(num, den);
        Some(Conversion {
            num: num / g,
            den: den / g,
        })
    }

    /// `self * other`; `None` if it does not stay representable.
    pub fn then(self, other: Conversion) -> Option<Conversion> {
        // Cross-reduce first to keep the products small.
        let g1 = gcd(self.num, other.den);
        let g2 = gcd(other.num, self.den);
        let num = (self.num / g1).checked_mul(other.num / g2)?;
        let den = (self.den / g2).checked_mul(other.den / g1)?;
        Conversion::new(num, den)
    }

    /// `self * 10^exp`; `None` if it does not stay representable.
    pub fn then_pow10(self, exp: i32) -> Option<Conversion> {
        let p = 10_i128.checked_pow(exp.unsigned_abs())?;
        let f = if exp >= 0 {
            Conversion::new(p, 1)?
        } else {
            Conversion::new(1, p)?
        };
        self.then(f)
    }

    /// Converts an integer.
    pub fn apply_int(self, raw: i128) -> Result<Converted, ConversionError> {
        let n = raw.checked_mul(self.num).ok_or(ConversionError::Overflow)?;
        round_ratio(n, self.den)
    }

    /// Converts a decimal.
    pub fn apply_decimal(self, d: Decimal) -> Result<Converted, ConversionError> {
        let n = d
            .mantissa
            .checked_mul(self.num)
            .ok_or(ConversionError::Overflow)?;
        match 10_i128
            .checked_pow(d.frac_digits)
            .and_then(|p| p.checked_mul(self.den))
        {
            Some(den) => round_ratio(n, den),
            // More than 38 fractional digits: the value is far below one
            // base unit per unit of `num` (an f64 has at most 17 significant
            // digits), so the exact result is not an integer and rounds to 0
            // unless `num` is astronomically large, which `new` callers
            // never build; report the rounding.
            None if d.mantissa == 0 => Ok(Converted {
                value: 0,
                rounded: false,
            }),
            None => Ok(Converted {
                value: 0,
                rounded: true,
            }),
        }
    }
}

/// `n / d` rounded half away from zero (`d > 0`).
fn round_ratio(n: i128, d: i128) -> Result<Converted, ConversionError> {
    let q = n / d;
    let r = n % d;
    let v = if r != 0 && r.unsigned_abs() >= d.unsigned_abs() - r.unsigned_abs() {
        // 2|r| >= d without overflowing.
        q + n.signum()
    } else {
        q
    };
    Ok(Converted {
        value: i64::try_from(v).map_err(|_| ConversionError::Overflow)?,
        rounded: r != 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conv(num: i128, den: i128) -> Conversion {
        Conversion::new(num, den).expect("non-zero")
    }

    #[test]
    fn watts_with_a_fraction_are_exact_milliwatts() {
        let w_to_mw = conv(1000, 1);
        let d = Decimal::from_f32(-1500.25).expect("finite");
        assert_eq!(
            w_to_mw.apply_decimal(d),
            Ok(Converted {
                value: -1_500_250,
                rounded: false
            })
        );
    }

    #[test]
    fn floats_are_taken_as_their_shortest_decimal() {
        // 230.1f32 is 230.100006103515625 in binary; the device meant 230.1.
        let d = Decimal::from_f32(230.1).expect("finite");
        assert_eq!(
            d,
            Decimal {
                mantissa: 2301,
                frac_digits: 1
            }
        );
        assert_eq!(
            conv(1000, 1).apply_decimal(d),
            Ok(Converted {
                value: 230_100,
                rounded: false
            })
        );
        // 0.1 + 0.2 in f64 is 0.30000000000000004: that is what it says.
        let d = Decimal::from_f64(0.1 + 0.2).expect("finite");
        assert_eq!(d.frac_digits, 17);
        assert_eq!(Decimal::from_f64(1e21).expect("finite").frac_digits, 0);
        assert_eq!(Decimal::from_f64(f64::NAN), Err(ConversionError::NotFinite));
    }

    #[test]
    fn a_fraction_below_the_base_unit_rounds_half_away_from_zero_and_says_so() {
        let kwh = conv(1000, 1);
        let cases = [
            ("1234.5675", 1_234_568, true),
            ("1234.5674", 1_234_567, true),
            ("-0.0005", -1, true),
            ("-0.0004", 0, true),
            ("12.5", 12_500, false),
            ("0", 0, false),
        ];
        for (text, value, rounded) in cases {
            let d = Decimal::parse_plain(text).expect("plain decimal");
            assert_eq!(
                kwh.apply_decimal(d),
                Ok(Converted { value, rounded }),
                "{text}"
            );
        }
        assert_eq!(
            conv(1, 10).apply_int(-15),
            Ok(Converted {
                value: -2,
                rounded: true
            })
        );
        assert_eq!(
            conv(1, 10).apply_int(20),
            Ok(Converted {
                value: 2,
                rounded: false
            })
        );
    }

    #[test]
    fn composition_reduces_and_overflow_is_an_error() {
        assert_eq!(conv(1, 10).then(conv(1000, 1)), Some(conv(100, 1)));
        assert_eq!(conv(1, 1).then_pow10(-2), Some(conv(1, 100)));
        assert_eq!(
            conv(1000, 1).apply_int(i128::from(i64::MAX)),
            Err(ConversionError::Overflow)
        );
        assert_eq!(Conversion::new(0, 1), None);
        assert_eq!(Decimal::parse_plain("1e5"), None);
        assert_eq!(Decimal::parse_plain("-"), None);
        assert_eq!(
            Decimal::parse_plain("-12.500"),
            Some(Decimal {
                mantissa: -125,
                frac_digits: 1
            })
        );
    }

    #[test]
    fn tiny_values_round_to_zero_with_the_flag() {
        let d = Decimal::from_f64(1e-300).expect("finite");
        assert_eq!(
            conv(1000, 1).apply_decimal(d),
            Ok(Converted {
                value: 0,
                rounded: true
            })
        );
    }

    proptest::proptest! {
        #[test]
        fn integer_conversion_matches_i128_arithmetic(
            raw in -(1_i64 << 40)..(1_i64 << 40),
            num in -1000_i64..1000,
            den_exp in 0_u32..6,
        ) {
            proptest::prop_assume!(num != 0);
            let den = 10_i128.pow(den_exp);
            let c = conv(i128::from(num), den);
            let exact = i128::from(raw) * i128::from(num);
            let q = exact / den;
            let r = exact % den;
            let want = if 2 * r.abs() >= den { q + exact.signum() } else { q };
            proptest::prop_assert_eq!(
                c.apply_int(i128::from(raw)),
                Ok(Converted { value: i64::try_from(want).expect("fits"), rounded: r != 0 })
            );
        }

        #[test]
        fn every_f32_decimal_reads_back_as_the_same_f32(x in proptest::prelude::any::<f32>()) {
            proptest::prop_assume!(x.is_finite() && x.abs() < 1e30);
            let d = Decimal::from_f32(x).expect("finite");
            let back = d.mantissa as f64 / 10f64.powi(i32::try_from(d.frac_digits).expect("small"));
            // Same f32 (the shortest digits identify it).
            proptest::prop_assert!(d.frac_digits > 30 || (back as f32) == x, "{x} -> {d:?}");
        }
    }
}
