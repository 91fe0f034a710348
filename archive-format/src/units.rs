//! Byte counts with binary units, as typed on a command line: shared by
//! [`BlockSize`](crate::BlockSize)'s `FromStr` and the engine's read rates.

use crate::{ArchiveError, Result};

/// Parses `16384`, `16k`, `16KiB`, `1M`, `1MiB`, `2G` or `2GiB` (binary
/// multiples: `1k` is 1024 bytes; the case of the unit does not matter).
/// `what` names the value in error messages ("block size"); errors are
/// [`ArchiveError::InvalidValue`].
///
/// ```
/// assert_eq!(archive_format::parse_binary_size("4k", "size")?, 4096);
/// # Ok::<(), archive_format::ArchiveError>(())
/// ```
pub fn parse_binary_size(s: &str, what: &str) -> Result<u64> {
    let invalid = |detail: String| ArchiveError::InvalidValue { detail };
    let t = s.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(digits);
    let not_a_number = || invalid(format!("{what} {s:?} is not a number"));
    if num.is_empty() {
        return Err(not_a_number());
    }
    let shift = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        _ => {
            return Err(invalid(format!(
                "{what} {s:?}: unknown unit {unit:?} (use K, M or G, binary multiples)"
            )));
        }
    };
    let n: u64 = num.parse().map_err(|_| not_a_number())?;
    n.checked_mul(1 << shift)
        .ok_or_else(|| invalid(format!("{what} {s:?} is too large")))
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
            "size \"4x\": unknown unit \"x\" (use K, M or G, binary multiples)"
        );
        assert_eq!(e("M"), "size \"M\" is not a number");
        assert_eq!(e("-1"), "size \"-1\" is not a number");
        assert_eq!(
            e("99999999999999999999"),
            "size \"99999999999999999999\" is not a number"
        );
        assert_eq!(e("99999999999G"), "size \"99999999999G\" is too large");
    }
}
