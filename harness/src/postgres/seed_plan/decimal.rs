//! Exact decimals for the planner: the query's numeric literals and the values beside them, compared and
//! printed without the rounding of floats.

use std::cmp::Ordering;
use std::fmt;

/// Numeric literals the planner computes with exactly: at most this many digits after the point, and an
/// absolute value below 10^20 (so two of them compare inside an i128).
pub(super) const MAX_SCALE: u32 = 18;
const MAX_MANTISSA: i128 = 100_000_000_000_000_000_000;

/// An exact decimal: `mantissa / 10^scale`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decimal {
    mantissa: i128,
    scale: u32,
}

impl Decimal {
    pub const fn from_int(n: i128) -> Self {
        Self {
            mantissa: n,
            scale: 0,
        }
    }

    pub(super) fn new(mantissa: i128, scale: u32) -> Option<Self> {
        let mut d = Self { mantissa, scale };
        while d.scale > 0 && d.mantissa % 10 == 0 {
            d.mantissa /= 10;
            d.scale -= 1;
        }
        (d.scale <= MAX_SCALE && d.mantissa.abs() < MAX_MANTISSA).then_some(d)
    }

    /// PostgreSQL's numeric literal forms: `12`, `12.5`, `.5`, `1e3`, `1.5E-2`.
    pub(super) fn parse(text: &str) -> Option<Self> {
        let (num, exp) = match text.find(['e', 'E']) {
            Some(i) => (&text[..i], text[i + 1..].parse::<i32>().ok()?),
            None => (text, 0),
        };
        let (int, frac) = num.split_once('.').unwrap_or((num, ""));
        if (int.is_empty() && frac.is_empty())
            || !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit())
        {
            return None;
        }
        let digits = format!("{int}{frac}");
        let digits = digits.trim_start_matches('0');
        if digits.len() > 38 {
            return None;
        }
        let mut mantissa: i128 = if digits.is_empty() {
            0
        } else {
            digits.parse().ok()?
        };
        let mut scale = i64::try_from(frac.len()).ok()? - i64::from(exp);
        while scale < 0 {
            mantissa = mantissa.checked_mul(10)?;
            scale += 1;
        }
        // Trailing zeros beyond MAX_SCALE (`1.50000000000000000000`) are still exact.
        while scale > i64::from(MAX_SCALE) && mantissa % 10 == 0 {
            mantissa /= 10;
            scale -= 1;
        }
        Self::new(mantissa, u32::try_from(scale).ok()?)
    }

    fn rescaled(self, scale: u32) -> Option<i128> {
        self.mantissa
            .checked_mul(10i128.checked_pow(scale.checked_sub(self.scale)?)?)
    }

    pub(super) fn compare(self, other: Self) -> Ordering {
        let s = self.scale.max(other.scale);
        // Both scales are at most MAX_SCALE and both mantissas below MAX_MANTISSA: this cannot overflow.
        match (self.rescaled(s), other.rescaled(s)) {
            (Some(a), Some(b)) => a.cmp(&b),
            _ => Ordering::Equal,
        }
    }

    pub(super) fn checked_add(self, other: Self) -> Option<Self> {
        let s = self.scale.max(other.scale);
        Self::new(self.rescaled(s)?.checked_add(other.rescaled(s)?)?, s)
    }

    pub(super) fn neg(self) -> Self {
        Self {
            mantissa: -self.mantissa,
            scale: self.scale,
        }
    }

    /// `(self + other) / 2`, exact (one more digit after the point).
    pub(super) fn midpoint(self, other: Self) -> Option<Self> {
        let s = self.scale.max(other.scale);
        let sum = self.rescaled(s)?.checked_add(other.rescaled(s)?)?;
        Self::new(sum.checked_mul(5)?, s + 1)
    }

    pub(super) fn integer(self) -> Option<i128> {
        (self.scale == 0).then_some(self.mantissa)
    }

    /// `self * n`, exact.
    pub(super) fn checked_mul_int(self, n: i128) -> Option<Self> {
        Self::new(self.mantissa.checked_mul(n)?, self.scale)
    }
}

impl fmt::Display for Decimal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.scale == 0 {
            return write!(f, "{}", self.mantissa);
        }
        let sign = if self.mantissa < 0 { "-" } else { "" };
        let digits = format!(
            "{:0>width$}",
            self.mantissa.unsigned_abs(),
            width = self.scale as usize + 1
        );
        let (int, frac) = digits.split_at(digits.len() - self.scale as usize);
        write!(f, "{sign}{int}.{frac}")
    }
}
