//! RFC 8785 JSON Canonicalization Scheme (JCS): the one byte form of a JSON
//! value that reports are hashed and signed in.
//!
//! Rules implemented: no whitespace; object members sorted by the UTF-16
//! code units of their names; strings escaped as ECMAScript
//! `JSON.stringify` does (`\"`, `\\`, `\b \t \n \f \r`, other controls as
//! `\u00xx` lower-case, everything else literal UTF-8); numbers as
//! ECMAScript `Number.prototype.toString`.
//!
//! Integers: reports carry only integers. An integer that serde_json holds
//! as `i64`/`u64` is written with its exact digits. For |n| <= 2^53 this is
//! exactly JCS; beyond that JCS would round through IEEE-754 while we keep
//! the exact value (no report quantity gets near 2^53, and verifiers check
//! signatures over the stored bytes, never over a re-serialisation).
//! Floats (only in foreign input such as the RFC 8785 test vectors) follow
//! the ECMAScript algorithm via Rust's shortest round-trip digits.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::Write;
use serde_json::Value;

/// Why a value has no canonical form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CanonicalError {
    /// NaN or infinity (not representable in JSON).
    #[error("number is not finite")]
    NotFinite,
    /// The value could not be turned into JSON.
    #[error("cannot serialise: {0}")]
    Serialise(String),
}

/// Canonical bytes of any serialisable value.
pub fn to_canonical_vec<T: serde::Serialize + ?Sized>(v: &T) -> Result<Vec<u8>, CanonicalError> {
    let value =
        serde_json::to_value(v).map_err(|e| CanonicalError::Serialise(alloc::format!("{e}")))?;
    canonicalize(&value)
}

/// Canonical bytes of a JSON value.
pub fn canonicalize(v: &Value) -> Result<Vec<u8>, CanonicalError> {
    let mut out = String::new();
    write_value(&mut out, v)?;
    Ok(out.into_bytes())
}

fn write_value(out: &mut String, v: &Value) -> Result<(), CanonicalError> {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                write!(out, "{i}").expect("writing to a String cannot fail");
            } else if let Some(u) = n.as_u64() {
                write!(out, "{u}").expect("writing to a String cannot fail");
            } else {
                let f = n.as_f64().ok_or(CanonicalError::NotFinite)?;
                write_f64(out, f)?;
            }
        }
        Value::String(s) => write_string(out, s),
        Value::Array(a) => {
            out.push('[');
            for (i, item) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value(out, item)?;
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.encode_utf16().cmp(b.0.encode_utf16()));
            out.push('{');
            for (i, (k, val)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_string(out, k);
                out.push(':');
                write_value(out, val)?;
            }
            out.push('}');
        }
    }
    Ok(())
}

/// Writes `s` as a JCS string literal.
pub fn write_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\u{c}' => out.push_str("\\f"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 => {
                write!(out, "\\u{:04x}", c as u32).expect("writing to a String cannot fail");
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// ECMAScript Number::toString for a finite double.
fn write_f64(out: &mut String, f: f64) -> Result<(), CanonicalError> {
    if !f.is_finite() {
        return Err(CanonicalError::NotFinite);
    }
    if f == 0.0 {
        out.push('0');
        return Ok(());
    }
    if f < 0.0 {
        out.push('-');
    }
    // Shortest round-trip digits: "d.ddddde<exp>".
    let sci = alloc::format!("{:e}", f.abs());
    let (mantissa, exp) = sci.split_once('e').expect("{:e} always has an exponent");
    let exp: i32 = exp.parse().expect("{:e} exponent is an integer");
    let mut digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    tie_to_even(&mut digits, exp, f.abs());
    let k = digits.len() as i32;
    // ECMAScript: value = 0.digits x 10^n.
    let n = exp + 1;
    if k <= n && n <= 21 {
        out.push_str(&digits);
        for _ in 0..(n - k) {
            out.push('0');
        }
    } else if 0 < n && n <= 21 {
        out.push_str(&digits[..n as usize]);
        out.push('.');
        out.push_str(&digits[n as usize..]);
    } else if -6 < n && n <= 0 {
        out.push_str("0.");
        for _ in 0..(-n) {
            out.push('0');
        }
        out.push_str(&digits);
    } else {
        out.push_str(&digits[..1]);
        if k > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        out.push('e');
        out.push(if n > 0 { '+' } else { '-' });
        write!(out, "{}", (n - 1).abs()).expect("writing to a String cannot fail");
    }
    Ok(())
}

/// ECMAScript picks, among shortest digit strings that round-trip, the one
/// closest to the exact value, and the even one on a tie; Rust's shortest
/// formatting rounds a tie up. `digits` (shortest, exponent `exp`) is
/// corrected in that one case, using the exact expansion of `a` (at most
/// 767 significant digits for an f64, so 800 places are exact).
fn tie_to_even(digits: &mut String, exp: i32, a: f64) {
    let exact = alloc::format!("{a:.800e}");
    let Some((m, e)) = exact.split_once('e') else {
        return;
    };
    if e.parse::<i32>() != Ok(exp) {
        return;
    }
    let x: String = m.chars().filter(|c| *c != '.').collect();
    let k = digits.len();
    if x.len() <= k {
        return;
    }
    let rest = &x.as_bytes()[k..];
    if rest[0] != b'5' || rest[1..].iter().any(|b| *b != b'0') {
        return;
    }
    let trunc = &x[..k];
    let last = trunc.as_bytes()[k - 1];
    let chosen = if (last - b'0').is_multiple_of(2) {
        String::from(trunc)
    } else if last != b'9' {
        let mut t = String::from(&trunc[..k - 1]);
        t.push(char::from(last + 1));
        t
    } else {
        return;
    };
    let trimmed = chosen.trim_end_matches('0');
    *digits = String::from(if trimmed.is_empty() { "0" } else { trimmed });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jcs(s: &str) -> String {
        let v: Value = serde_json::from_str(s).expect("test vector is valid");
        String::from_utf8(canonicalize(&v).expect("test vector is valid"))
            .expect("test vector is valid")
    }

    #[test]
    fn sorts_keys_by_utf16_and_drops_whitespace() {
        assert_eq!(
            jcs(r#"{ "b": 1, "a": [true, null, "x"] }"#),
            r#"{"a":[true,null,"x"],"b":1}"#
        );
        // U+1F600 (surrogates D83D DE00) sorts before U+E000 in UTF-16,
        // after it in UTF-8.
        assert_eq!(
            jcs("{\"\u{E000}\":2,\"\u{1F600}\":1}"),
            "{\"\u{1F600}\":1,\"\u{E000}\":2}"
        );
    }

    #[test]
    fn numbers_follow_ecmascript() {
        for (i, o) in [
            ("1E30", "1e+30"),
            ("4.50", "4.5"),
            ("2e-3", "0.002"),
            ("0.000001", "0.000001"),
            ("1e-7", "1e-7"),
            ("-0.0", "0"),
            ("123456789012345680000", "123456789012345680000"),
            ("1e21", "1e+21"),
            ("333333333.33333329", "333333333.3333333"),
            ("9007199254740992", "9007199254740992"),
        ] {
            assert_eq!(jcs(i), o, "{i}");
        }
    }
}
