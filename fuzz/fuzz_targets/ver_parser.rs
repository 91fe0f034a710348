//! Fuzzes `blockdiff_core::parse_version`, the parser of `NAME.ver` files.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(n) = blockdiff_core::parse_version(data) else {
        return;
    };
    // A version was accepted: the text must be UTF-8 and, once trailing
    // white space is trimmed, the decimal form of `n`, leading zeros
    // allowed (the original's `expr $LAST_VER + 1` reads `03` as 3).
    let text = std::str::from_utf8(data).expect("a non-UTF-8 version file was accepted");
    let digits = text.trim_end();
    let canonical = digits.trim_start_matches('0');
    assert_eq!(
        if canonical.is_empty() { "0" } else { canonical },
        n.to_string(),
        "parse_version({data:?}) = Some({n}), but the text is not {n}"
    );
});
