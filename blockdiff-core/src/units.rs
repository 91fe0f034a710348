//! Byte counts with binary units, as typed on a command line: shared by
//! [`BlockSize`](crate::BlockSize) and [`parse_rate`](crate::parse_rate).

use crate::{Error, Result};

/// Parses `16384`, `16k`, `16KiB`, `1M`, `1MiB`, `2G` or `2GiB` (binary
/// multiples: `1k` is 1024 bytes; the case of the unit does not matter).
/// `what` names the value in error messages ("block size").
pub(crate) fn parse_binary_size(s: &str, what: &str) -> Result<u64> {
    let t = s.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(digits);
    let not_a_number = || Error::InvalidOption(format!("{what} {s:?} is not a number"));
    if num.is_empty() {
        return Err(not_a_number());
    }
    let shift = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        _ => {
            return Err(Error::InvalidOption(format!(
                "{what} {s:?}: unknown unit {unit:?} (use K, M or G, binary multiples)"
            )));
        }
    };
    let n: u64 = num.parse().map_err(|_| not_a_number())?;
    n.checked_mul(1 << shift)
        .ok_or_else(|| Error::InvalidOption(format!("{what} {s:?} is too large")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_units() {
        let p = |s| parse_binary_size(s, "size").unwrap();
        assert_eq!(p("0"), 0);
        assert_eq!(p("512"), 512);
        assert_eq!(p("512B"), 512);
        assert_eq!(p("4k"), 4096);
        assert_eq!(p("4KiB"), 4096);
        assert_eq!(p("60M"), 60 << 20);
        assert_eq!(p(" 2g "), 2 << 30);
        let e = |s| parse_binary_size(s, "size").unwrap_err().to_string();
        assert_eq!(
            e("4x"),
            "invalid option: size \"4x\": unknown unit \"x\" (use K, M or G, binary multiples)"
        );
        assert_eq!(e("M"), "invalid option: size \"M\" is not a number");
        assert_eq!(e("-1"), "invalid option: size \"-1\" is not a number");
        assert_eq!(
            e("99999999999999999999"),
            "invalid option: size \"99999999999999999999\" is not a number"
        );
        assert_eq!(
            e("99999999999G"),
            "invalid option: size \"99999999999G\" is too large"
        );
    }
}
