//! Fuzzes `archive_format::LegacyReader`, the parser of legacy diff streams,
//! directly on the input bytes and through `Compression::sniff` (which
//! gunzips inputs that start with the gzip magic).
//!
//! The same bytes are parsed several ways (reading every block, skipping
//! every block, dropping unread blocks, a reader that returns one byte at a
//! time and is interrupted in between); all must agree, and every record
//! must satisfy the format's invariants (archive-format/FORMAT.md §3.1),
//! among them strictly increasing offsets.
#![no_main]

use std::io;

use archive_format::{Compression, LegacyReader, RecordHeader, SkipRead};
use blockdiff_fuzz::Trickle;
use libfuzzer_sys::fuzz_target;

/// Decompressed bytes the gzip path handles before it stops, so that a
/// small deflate bomb cannot make one run take seconds.
const DECOMPRESSED_CAP: u64 = 8 << 20;

/// Inputs up to this length are also parsed one byte at a time.
const TRICKLE_MAX: usize = 4096;

/// How a parse ended.
#[derive(Debug, PartialEq, Eq)]
enum End {
    /// `next_record` returned `None`.
    Clean,
    /// An error, by its message.
    Error(String),
    /// The gzip path stopped at `DECOMPRESSED_CAP`.
    Capped,
}

/// Everything one parse observed.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    block_size: Option<u32>,
    /// Each record's header and data length.
    records: Vec<(RecordHeader, u64)>,
    end: End,
    /// `position()` when the parse ended.
    position: u64,
}

/// How the data of each record is consumed.
#[derive(Clone, Copy)]
enum Mode {
    /// `read_record`.
    Read,
    /// `next_record`, then `skip_data`.
    Skip,
    /// `next_record` only: the next call reads and drops the data.
    Drop,
}

/// Parses `input` with `mode`. `data_of` receives each record's header and
/// data (for `Mode::Read` only). Stops once `cap` data bytes were consumed.
fn parse<R: SkipRead>(
    input: R,
    mode: Mode,
    cap: u64,
    mut data_of: impl FnMut(&RecordHeader, &[u8], u64),
) -> Outcome {
    let mut r = match LegacyReader::new(input) {
        Ok(r) => r,
        Err(e) => {
            return Outcome {
                block_size: None,
                records: Vec::new(),
                end: End::Error(e.to_string()),
                position: 0,
            };
        }
    };
    let mut records = Vec::new();
    let mut buf = Vec::new();
    let mut total = 0u64;
    let end = loop {
        if total > cap {
            break End::Capped;
        }
        let header = match mode {
            Mode::Read => r.read_record(&mut buf),
            Mode::Skip | Mode::Drop => r.next_record(),
        };
        let header = match header {
            Ok(Some(h)) => h,
            Ok(None) => break End::Clean,
            Err(e) => break End::Error(e.to_string()),
        };
        let len = match mode {
            Mode::Read => {
                data_of(&header, &buf, r.position());
                Ok(buf.len() as u64)
            }
            Mode::Skip => r.skip_data(),
            // The length is not known until the next call: infer it from
            // the position the next header starts at (checked below).
            Mode::Drop => Ok(0),
        };
        match len {
            Ok(len) => {
                total += len;
                records.push((header, len));
            }
            Err(e) => break End::Error(e.to_string()),
        }
    };
    if let Mode::Drop = mode {
        // Fill in the lengths from the positions: each record's data ends
        // where the next header starts, the last one where the parse ended.
        let starts: Vec<u64> = records
            .iter()
            .skip(1)
            .map(|(h, _)| h.stream_offset)
            .chain([r.position()])
            .collect();
        for ((h, len), next) in records.iter_mut().zip(starts) {
            *len = next - (h.stream_offset + 8);
        }
    }
    Outcome {
        block_size: Some(r.block_size()),
        records,
        end,
        position: r.position(),
    }
}

/// The invariants every parse must satisfy, whatever it was given.
fn check_records(o: &Outcome) {
    let Some(bs) = o.block_size else {
        assert!(o.records.is_empty());
        return;
    };
    let bs64 = u64::from(bs);
    assert!(bs >= 1, "block size 0 was accepted");
    for (i, (h, len)) in o.records.iter().enumerate() {
        assert_eq!(
            h.block_offset % bs64,
            0,
            "record {i}: offset {} is not a multiple of the block size {bs}",
            h.block_offset
        );
        if let Some((prev, _)) = i.checked_sub(1).map(|p| &o.records[p]) {
            assert!(
                h.block_offset > prev.block_offset,
                "record {i}: offset {} does not follow the previous record's {}",
                h.block_offset,
                prev.block_offset
            );
        }
        let last = i + 1 == o.records.len();
        if last && o.end != End::Clean {
            // The data of the last record may have failed (e.g. empty).
            assert!(*len <= bs64, "record {i}: {len} bytes > block size {bs}");
            continue;
        }
        assert!(
            (1..=bs64).contains(len),
            "record {i}: data length {len} not in 1..={bs}"
        );
        if *len < bs64 {
            assert!(
                last,
                "record {i} is short ({len} < {bs}) but is not the last record"
            );
            assert_eq!(
                o.end,
                End::Clean,
                "a short record was followed by {:?}",
                o.end
            );
        }
    }
}

/// Invariants of a parse of the plain input bytes: positions are exact.
fn check_positions(o: &Outcome, input: &[u8]) {
    let len = input.len() as u64;
    assert!(
        o.position <= len,
        "position {} > input length {len}",
        o.position
    );
    if o.block_size.is_none() {
        return;
    }
    let mut expect = 4u64;
    for (i, (h, dlen)) in o.records.iter().enumerate() {
        assert_eq!(h.stream_offset, expect, "record {i}: stream offset");
        expect = h.stream_offset + 8 + dlen;
        assert!(
            expect <= len,
            "record {i} ends at {expect} > input length {len}"
        );
    }
    if o.end == End::Clean {
        assert_eq!(o.position, expect, "position after the last record");
        assert_eq!(o.position, len, "a clean end must consume the whole input");
    }
}

fn check_plain_data(input: &[u8]) -> impl FnMut(&RecordHeader, &[u8], u64) + '_ {
    move |h, data, position| {
        let start = h.stream_offset as usize + 8;
        assert_eq!(position, (start + data.len()) as u64, "position after data");
        assert!(
            position <= input.len() as u64,
            "position {position} > input length"
        );
        assert_eq!(
            data,
            &input[start..start + data.len()],
            "record data differs from input"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    // Plain: every block read, compared with the input bytes.
    let read = parse(data, Mode::Read, u64::MAX, check_plain_data(data));
    check_records(&read);
    check_positions(&read, data);

    // The same bytes skipped, dropped, and trickled must give the same parse.
    let skip = parse(data, Mode::Skip, u64::MAX, |_, _, _| {});
    check_records(&skip);
    check_positions(&skip, data);
    assert_eq!(read, skip, "read and skip passes disagree");

    let drop = parse(io::Cursor::new(data), Mode::Drop, u64::MAX, |_, _, _| {});
    check_records(&drop);
    check_positions(&drop, data);
    // Errors in the data of a dropped record surface from next_record, so
    // only the successful part is comparable.
    if read.end == End::Clean {
        assert_eq!(read, drop, "read and drop passes disagree");
    }

    // Byte-at-a-time reading costs two calls per byte: only on small inputs.
    if data.len() <= TRICKLE_MAX {
        let trickle = Trickle::new(data);
        let trickled = parse(trickle, Mode::Read, u64::MAX, check_plain_data(data));
        assert_eq!(read, trickled, "one-byte reader disagrees");
    }

    // Through Compression::sniff, which gunzips when the input starts with
    // the gzip magic.
    let Ok((compression, reader)) = Compression::sniff(data) else {
        panic!("sniff failed on an in-memory slice");
    };
    match compression {
        Compression::None => {
            assert!(!data.starts_with(&[0x1f, 0x8b, 0x08]));
            let sniffed = parse(reader, Mode::Read, u64::MAX, |_, _, _| {});
            assert_eq!(read, sniffed, "sniff (none) disagrees with plain");
        }
        Compression::Gzip => {
            assert!(data.starts_with(&[0x1f, 0x8b, 0x08]));
            let sniffed = parse(reader, Mode::Read, DECOMPRESSED_CAP, |_, _, _| {});
            check_records(&sniffed);
            // A stream that decompressed and parsed cleanly must parse the
            // same when its blocks are skipped (as restore does). Errors may
            // surface at different points for different read sizes, so
            // streams that failed are not decompressed twice.
            if sniffed.end == End::Clean {
                let (_, reader) = Compression::sniff(data).expect("sniff");
                let skipped = parse(reader, Mode::Skip, DECOMPRESSED_CAP, |_, _, _| {});
                check_records(&skipped);
                assert_eq!(sniffed, skipped, "gzip read and skip passes disagree");
            }
        }
    }
});
