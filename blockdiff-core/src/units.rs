//! Byte counts with binary units, as typed on a command line, for
//! [`parse_rate`](crate::parse_rate): archive-format's parser (the one
//! [`BlockSize`](crate::BlockSize) parses with), its errors reported as
//! [`Error::InvalidOption`](crate::Error::InvalidOption).

use crate::Result;

/// Parses `16384`, `16k`, `16KiB`, `1M`, `1MiB`, `2G` or `2GiB` (binary
/// multiples: `1k` is 1024 bytes; the case of the unit does not matter).
/// `what` names the value in error messages ("rate").
pub(crate) fn parse_binary_size(s: &str, what: &str) -> Result<u64> {
    Ok(archive_format::parse_binary_size(s, what)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// archive-format's parser, whose own tests cover the units; here,
    /// that its errors are invalid options.
    #[test]
    fn binary_units_and_their_errors_as_options() {
        assert_eq!(parse_binary_size(" 4KiB ", "size").unwrap(), 4096);
        let e = |s| parse_binary_size(s, "size").unwrap_err().to_string();
        assert_eq!(
            e("4x"),
            "invalid option: size \"4x\": unknown unit \"x\" (use K, M or G, binary multiples)"
        );
        assert_eq!(
            e("99999999999G"),
            "invalid option: size \"99999999999G\" is too large"
        );
    }
}
