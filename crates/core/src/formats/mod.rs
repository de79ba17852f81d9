//! Payload formats devices and agents send, parsed into [`Point`]s.
//!
//! * [`json`]: Tributary's JSON, `{"ts": .., "values": {..}}` or an array of those;
//! * [`senml`]: SenML JSON (RFC 8428);
//! * [`cbor`]: the same two in CBOR (`application/cbor`, SenML CBOR);
//! * [`lineproto`]: InfluxDB line protocol, for tenant ingest tokens.
//!
//! Every parser is total: any input yields points or a [`ParseError`] that
//! names where the problem is (a line, a record, a field). None panics,
//! allocates without bound, or accepts more than the [`Limits`] allow.
//!
//! [`Limits`]: crate::Limits

use std::collections::BTreeMap;

use crate::model::{Point, ValidationError};

pub mod cbor;
pub mod json;
pub mod lineproto;
pub mod senml;

/// A parse or validation failure that says where it happened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{location}: {message}")]
pub struct ParseError {
    /// Where: `line 3`, `record 2`, `values.temp`, `body`.
    pub location: String,
    /// What is wrong, or what was expected there, as a sentence for users.
    pub message: String,
    /// True when the input is refused only for exceeding a size or count limit
    /// (HTTP 413 rather than 400).
    pub too_large: bool,
}

impl ParseError {
    /// Input the client must correct (HTTP 400).
    pub fn new(location: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            location: location.into(),
            message: message.into(),
            too_large: false,
        }
    }

    /// Input over a size or count limit, that the client may split (HTTP 413).
    pub fn too_large(location: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            location: location.into(),
            message: message.into(),
            too_large: true,
        }
    }
}

/// Points for one device, with labels taken from the payload (line-protocol tags).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DeviceBatch {
    /// The device id, validated.
    pub device: String,
    /// Labels of the device, validated: the tags other than the device tag.
    pub labels: BTreeMap<String, String>,
    /// The device's points, validated, in payload order.
    pub points: Vec<Point>,
}

impl ParseError {
    /// A refusal by one of the model's validation rules, at `location`.
    pub(crate) fn invalid(location: impl Into<String>, err: &ValidationError) -> Self {
        Self::new(location, err.to_string())
    }
}

/// Converts the text of a JSON number (`-12.5e3`) to a whole number of
/// `10^-scale` units, rounding half away from zero, without going through
/// binary floating point: `decimal_to_scaled("1.276020076001e9", 9)` is
/// exactly `1_276_020_076_001_000_000` (nanoseconds), where an `f64` would be
/// off by tens of nanoseconds.
///
/// Returns `None` for text that is not a JSON number, or a result that does
/// not fit an `i128`. Significant digits after the 38th are ignored.
pub(crate) fn decimal_to_scaled(text: &str, scale: u32) -> Option<i128> {
    const MAX_DIGITS: u32 = 38;
    let b = text.as_bytes();
    let mut i = 0;
    let negative = b.first() == Some(&b'-');
    if negative {
        i = 1;
    }
    let mut mantissa: i128 = 0;
    let mut kept = 0u32;
    let mut exp10: i64 = 0;
    let mut push = |d: u8, fraction: bool| {
        if mantissa == 0 && d == 0 {
            if fraction {
                exp10 -= 1;
            }
        } else if kept < MAX_DIGITS {
            mantissa = mantissa * 10 + i128::from(d);
            kept += 1;
            if fraction {
                exp10 -= 1;
            }
        } else if !fraction {
            exp10 += 1;
        }
    };
    let int_start = i;
    while let Some(d) = b.get(i).filter(|c| c.is_ascii_digit()) {
        push(d - b'0', false);
        i += 1;
    }
    if i == int_start {
        return None;
    }
    if b.get(i) == Some(&b'.') {
        i += 1;
        let frac_start = i;
        while let Some(d) = b.get(i).filter(|c| c.is_ascii_digit()) {
            push(d - b'0', true);
            i += 1;
        }
        if i == frac_start {
            return None;
        }
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        let exp_negative = match b.get(i) {
            Some(b'-') => {
                i += 1;
                true
            }
            Some(b'+') => {
                i += 1;
                false
            }
            _ => false,
        };
        let exp_start = i;
        let mut exp: i64 = 0;
        while let Some(d) = b.get(i).filter(|c| c.is_ascii_digit()) {
            // Saturate: anything beyond a few hundred is out of range anyway.
            exp = (exp * 10 + i64::from(d - b'0')).min(1_000_000);
            i += 1;
        }
        if i == exp_start {
            return None;
        }
        exp10 += if exp_negative { -exp } else { exp };
    }
    if i != b.len() {
        return None;
    }
    if mantissa == 0 {
        return Some(0);
    }
    let e = exp10 + i64::from(scale);
    let magnitude = if e >= 0 {
        let e = u32::try_from(e).ok().filter(|e| *e <= MAX_DIGITS)?;
        mantissa.checked_mul(10i128.pow(e))?
    } else if e < -i64::from(MAX_DIGITS) {
        // mantissa < 10^38, so the quotient is below 0.1: rounds to zero.
        0
    } else {
        let divisor = 10i128.pow(u32::try_from(-e).ok()?);
        let (q, r) = (mantissa / divisor, mantissa % divisor);
        if r >= divisor - r { q + 1 } else { q }
    };
    Some(if negative { -magnitude } else { magnitude })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_scale_exactly() {
        assert_eq!(
            decimal_to_scaled("1.276020076001e+09", 9),
            Some(1_276_020_076_001_000_000)
        );
        assert_eq!(
            decimal_to_scaled("1700000000123.456", 6),
            Some(1_700_000_000_123_456_000)
        );
        assert_eq!(decimal_to_scaled("0", 9), Some(0));
        assert_eq!(decimal_to_scaled("-0.0", 9), Some(0));
        assert_eq!(decimal_to_scaled("-5", 9), Some(-5_000_000_000));
        assert_eq!(decimal_to_scaled("0.02", 9), Some(20_000_000));
        assert_eq!(decimal_to_scaled("1E3", 0), Some(1000));
        assert_eq!(
            decimal_to_scaled("25e-1", 0),
            Some(3),
            "2.5 rounds half away from zero"
        );
        assert_eq!(decimal_to_scaled("-25e-1", 0), Some(-3));
        assert_eq!(decimal_to_scaled("0.0000000004", 9), Some(0));
        assert_eq!(decimal_to_scaled("0.0000000005", 9), Some(1));
        assert_eq!(decimal_to_scaled("1e-999999999999", 9), Some(0));
        assert_eq!(decimal_to_scaled("1e999999999999", 9), None);
        assert_eq!(
            decimal_to_scaled("1e30", 9),
            None,
            "beyond i128 after scaling"
        );
        assert_eq!(
            decimal_to_scaled("123456789012345678901234567890123456789012345", 0),
            None,
            "45 integer digits overflow"
        );
        for bad in [
            "", "-", ".5", "1.", "1e", "1e+", "abc", "1.5x", "--1", "+1", "0x10",
        ] {
            assert_eq!(decimal_to_scaled(bad, 9), None, "{bad:?}");
        }
    }
}
