//! [`Ratio`]: exact rational numbers for emission calculations.
//!
//! Invariants: the denominator is always positive and `gcd(num, den) == 1`,
//! so equal values have equal representations (and equal text forms).
//! Arithmetic is checked: an overflow of `i128` is an error, never a wrap.
//!
//! Text forms (used in reports):
//! - exact: `"num/den"` (or just `"num"` when `den == 1`), parsed back by
//!   [`Ratio::parse_exact`];
//! - decimal parameters: `"0.5000"`, `"-12"`, `"28"`, parsed by
//!   [`Ratio::parse_decimal`] (no exponent, no `+`, at most 30 digits);
//! - [`Ratio::to_decimal_floor`]: a fixed number of decimals, rounded toward
//!   negative infinity (never overstates a reduction).

use alloc::format;
use alloc::string::String;
use core::cmp::Ordering;
use core::fmt;

/// Why a number could not be parsed or computed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RatioError {
    /// The text is not a decimal or `num/den` form.
    #[error("not a number: {0:?}")]
    Parse(String),
    /// A denominator of zero.
    #[error("division by zero")]
    DivisionByZero,
    /// An intermediate value does not fit in 128 bits.
    #[error("arithmetic overflow")]
    Overflow,
}

/// An exact rational number `num / den` (see the module doc for invariants).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ratio {
    num: i128,
    den: i128,
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

impl Ratio {
    /// Zero.
    pub const ZERO: Ratio = Ratio { num: 0, den: 1 };
    /// One.
    pub const ONE: Ratio = Ratio { num: 1, den: 1 };

    /// `num / den`, reduced.
    pub fn new(num: i128, den: i128) -> Result<Ratio, RatioError> {
        if den == 0 {
            return Err(RatioError::DivisionByZero);
        }
        let g = gcd(num, den).max(1);
        let (mut n, mut d) = (num / g, den / g);
        if d < 0 {
            n = n.checked_neg().ok_or(RatioError::Overflow)?;
            d = d.checked_neg().ok_or(RatioError::Overflow)?;
        }
        Ok(Ratio { num: n, den: d })
    }

    /// An integer.
    pub fn int(n: i128) -> Ratio {
        Ratio { num: n, den: 1 }
    }

    /// Numerator (sign carrier).
    pub fn num(self) -> i128 {
        self.num
    }

    /// Denominator (always positive).
    pub fn den(self) -> i128 {
        self.den
    }

    /// Parses a plain decimal such as `"0.5000"` or `"-3"`.
    pub fn parse_decimal(s: &str) -> Result<Ratio, RatioError> {
        let err = || RatioError::Parse(String::from(s));
        let (neg, body) = match s.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, s),
        };
        let (int_part, frac_part) = match body.split_once('.') {
            Some((i, f)) => (i, f),
            None => (body, ""),
        };
        if int_part.is_empty()
            || (body.contains('.') && frac_part.is_empty())
            || !int_part.bytes().all(|b| b.is_ascii_digit())
            || !frac_part.bytes().all(|b| b.is_ascii_digit())
            || int_part.len() + frac_part.len() > 30
        {
            return Err(err());
        }
        let mut num: i128 = 0;
        for b in int_part.bytes().chain(frac_part.bytes()) {
            num = num * 10 + i128::from(b - b'0');
        }
        let den = 10i128.pow(frac_part.len() as u32);
        Ratio::new(if neg { -num } else { num }, den)
    }

    /// Parses the exact form written by [`fmt::Display`]: `"n"` or `"n/d"`.
    pub fn parse_exact(s: &str) -> Result<Ratio, RatioError> {
        let err = || RatioError::Parse(String::from(s));
        let parse_int = |t: &str| -> Result<i128, RatioError> {
            let digits = t.strip_prefix('-').unwrap_or(t);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(err());
            }
            t.parse::<i128>().map_err(|_| err())
        };
        match s.split_once('/') {
            Some((n, d)) => Ratio::new(parse_int(n)?, parse_int(d)?),
            None => Ok(Ratio::int(parse_int(s)?)),
        }
    }

    /// `self + other`.
    pub fn checked_add(self, other: Ratio) -> Result<Ratio, RatioError> {
        let g = gcd(self.den, other.den).max(1);
        let a = self
            .num
            .checked_mul(other.den / g)
            .ok_or(RatioError::Overflow)?;
        let b = other
            .num
            .checked_mul(self.den / g)
            .ok_or(RatioError::Overflow)?;
        let den = (self.den / g)
            .checked_mul(other.den)
            .ok_or(RatioError::Overflow)?;
        Ratio::new(a.checked_add(b).ok_or(RatioError::Overflow)?, den)
    }

    /// `self - other`.
    pub fn checked_sub(self, other: Ratio) -> Result<Ratio, RatioError> {
        self.checked_add(Ratio {
            num: other.num.checked_neg().ok_or(RatioError::Overflow)?,
            den: other.den,
        })
    }

    /// `self * other`.
    pub fn checked_mul(self, other: Ratio) -> Result<Ratio, RatioError> {
        // Cross-reduce first to keep intermediates small.
        let g1 = gcd(self.num, other.den).max(1);
        let g2 = gcd(other.num, self.den).max(1);
        let num = (self.num / g1)
            .checked_mul(other.num / g2)
            .ok_or(RatioError::Overflow)?;
        let den = (self.den / g2)
            .checked_mul(other.den / g1)
            .ok_or(RatioError::Overflow)?;
        Ratio::new(num, den)
    }

    /// `self / other`.
    pub fn checked_div(self, other: Ratio) -> Result<Ratio, RatioError> {
        if other.num == 0 {
            return Err(RatioError::DivisionByZero);
        }
        self.checked_mul(Ratio {
            num: other.den,
            den: other.num,
        })
        .and_then(|r| Ratio::new(r.num, r.den))
    }

    /// Largest integer `<= self`.
    pub fn floor(self) -> i128 {
        self.num.div_euclid(self.den)
    }

    /// `self` with `decimals` digits after the point, rounded toward negative
    /// infinity, e.g. `"12.345678"`.
    pub fn to_decimal_floor(self, decimals: u32) -> Result<String, RatioError> {
        let scale = 10i128.checked_pow(decimals).ok_or(RatioError::Overflow)?;
        let scaled = self
            .num
            .checked_mul(scale)
            .ok_or(RatioError::Overflow)?
            .div_euclid(self.den);
        let neg = scaled < 0;
        let abs = scaled.unsigned_abs();
        let int_part = abs / scale as u128;
        let frac = abs % scale as u128;
        let sign = if neg { "-" } else { "" };
        if decimals == 0 {
            return Ok(format!("{sign}{int_part}"));
        }
        Ok(format!(
            "{sign}{int_part}.{frac:0width$}",
            width = decimals as usize
        ))
    }
}

impl PartialOrd for Ratio {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Ratio {
    fn cmp(&self, other: &Self) -> Ordering {
        // Denominators are positive, so cross-multiplication keeps the order.
        // Fall back to floor comparison on overflow (only for huge values).
        match (
            self.num.checked_mul(other.den),
            other.num.checked_mul(self.den),
        ) {
            (Some(a), Some(b)) => a.cmp(&b),
            _ => self.floor().cmp(&other.floor()),
        }
    }
}

impl fmt::Display for Ratio {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.den == 1 {
            write!(f, "{}", self.num)
        } else {
            write!(f, "{}/{}", self.num, self.den)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    #[test]
    fn decimals_parse_exactly_and_reduce() {
        assert_eq!(
            Ratio::parse_decimal("0.5000").expect("test vector is valid"),
            Ratio::new(1, 2).expect("test vector is valid")
        );
        assert_eq!(
            Ratio::parse_decimal("-12").expect("test vector is valid"),
            Ratio::int(-12)
        );
        assert_eq!(
            Ratio::parse_decimal("0.716")
                .expect("test vector is valid")
                .to_string(),
            "179/250"
        );
        for bad in ["", ".5", "5.", "1e3", "+1", "1.2.3", "abc", "--1"] {
            assert!(Ratio::parse_decimal(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn exact_text_round_trips() {
        let r = Ratio::new(-10, 4).expect("test vector is valid");
        assert_eq!(r.to_string(), "-5/2");
        assert_eq!(Ratio::parse_exact("-5/2").expect("test vector is valid"), r);
        assert_eq!(
            Ratio::parse_exact("7").expect("test vector is valid"),
            Ratio::int(7)
        );
        assert!(Ratio::parse_exact("1/0").is_err());
        assert!(Ratio::parse_exact("1/").is_err());
    }

    #[test]
    fn arithmetic_and_floor_round_toward_negative_infinity() {
        let a = Ratio::new(1, 3).expect("test vector is valid");
        let b = Ratio::new(1, 6).expect("test vector is valid");
        assert_eq!(
            a.checked_add(b).expect("test vector is valid"),
            Ratio::new(1, 2).expect("test vector is valid")
        );
        assert_eq!(a.checked_sub(b).expect("test vector is valid"), b);
        assert_eq!(
            a.checked_mul(b).expect("test vector is valid"),
            Ratio::new(1, 18).expect("test vector is valid")
        );
        assert_eq!(
            a.checked_div(b).expect("test vector is valid"),
            Ratio::int(2)
        );
        assert_eq!(Ratio::new(-1, 2).expect("test vector is valid").floor(), -1);
        assert_eq!(Ratio::new(7, 2).expect("test vector is valid").floor(), 3);
        assert_eq!(
            a.to_decimal_floor(6).expect("test vector is valid"),
            "0.333333"
        );
        assert_eq!(
            Ratio::new(-1, 3)
                .expect("test vector is valid")
                .to_decimal_floor(3)
                .expect("test vector is valid"),
            "-0.334"
        );
        assert_eq!(
            Ratio::int(5)
                .to_decimal_floor(0)
                .expect("test vector is valid"),
            "5"
        );
        assert!(a.checked_div(Ratio::ZERO).is_err());
        assert!(Ratio::int(i128::MAX).checked_add(Ratio::ONE).is_err());
    }
}
