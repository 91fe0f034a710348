//! Unit and property tests of the legacy stream.

use std::io::{self, Read};

use proptest::prelude::*;

use crate::*;

/// A reader that hands out one byte per call, as a slow pipe may.
#[derive(Clone, Copy)]
struct OneByte<'a>(&'a [u8]);

impl Read for OneByte<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.0.is_empty() || buf.is_empty() {
            return Ok(0);
        }
        buf[0] = self.0[0];
        self.0 = &self.0[1..];
        Ok(1)
    }
}
impl SkipRead for OneByte<'_> {}

/// A writer that accepts at most one byte per call.
struct OneByteWriter(Vec<u8>);
impl io::Write for OneByteWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        self.0.push(buf[0]);
        Ok(1)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// (offset, data) of every record.
type Records = Vec<(u64, Vec<u8>)>;

fn read_all<R: Read>(r: R) -> Result<(u32, Records)> {
    let mut r = LegacyReader::new(r)?;
    let mut buf = Vec::new();
    let mut out = Vec::new();
    while let Some(h) = r.read_record(&mut buf)? {
        out.push((h.block_offset, buf.clone()));
    }
    Ok((r.block_size(), out))
}

#[test]
fn layout_matches_the_original() {
    let mut w = LegacyWriter::new(Vec::new(), 4).unwrap();
    w.write_record(0x1_0000_0004, b"wxyz").unwrap();
    let bytes = w.finish().unwrap();
    assert_eq!(
        bytes,
        [4, 0, 0, 0, 4, 0, 0, 0, 1, 0, 0, 0, b'w', b'x', b'y', b'z']
    );
}

#[test]
fn one_byte_at_a_time_both_ways() {
    let mut w = LegacyWriter::new(OneByteWriter(Vec::new()), 3).unwrap();
    w.write_record(0, b"abc").unwrap();
    w.write_record(6, b"d").unwrap();
    let bytes = w.finish().unwrap().0;
    let (bs, recs) = read_all(OneByte(&bytes)).unwrap();
    assert_eq!(bs, 3);
    assert_eq!(recs, vec![(0, b"abc".to_vec()), (6, b"d".to_vec())]);
}

#[test]
fn skip_data_reports_lengths_and_keeps_position() {
    let mut w = LegacyWriter::new(Vec::new(), 4).unwrap();
    w.write_record(0, b"aaaa").unwrap();
    w.write_record(8, b"bb").unwrap();
    let bytes = w.finish().unwrap();
    for slow in [false, true] {
        let src: Box<dyn SkipRead> = if slow {
            Box::new(OneByte(&bytes))
        } else {
            Box::new(&bytes[..])
        };
        let mut r = LegacyReader::new(src).unwrap();
        assert_eq!(r.next_record().unwrap().unwrap().block_offset, 0);
        assert_eq!(r.skip_data().unwrap(), 4);
        let h = r.next_record().unwrap().unwrap();
        assert_eq!((h.block_offset, h.stream_offset), (8, 16));
        assert_eq!(r.skip_data().unwrap(), 2);
        assert!(r.next_record().unwrap().is_none());
        assert_eq!(r.position(), bytes.len() as u64);
    }
}

#[test]
fn unread_data_is_consumed_by_next_record() {
    let mut w = LegacyWriter::new(Vec::new(), 2).unwrap();
    w.write_record(0, b"aa").unwrap();
    w.write_record(2, b"bb").unwrap();
    let bytes = w.finish().unwrap();
    let mut r = LegacyReader::new(&bytes[..]).unwrap();
    r.next_record().unwrap();
    assert_eq!(r.next_record().unwrap().unwrap().block_offset, 2);
}

#[test]
fn errors_name_the_offset() {
    // Header cut short.
    let e = LegacyReader::new(&[1u8, 0][..]).unwrap_err();
    assert!(
        matches!(
            e,
            ArchiveError::Truncated {
                offset: 0,
                got: 2,
                ..
            }
        ),
        "{e}"
    );
    // Block size zero and too large.
    assert!(matches!(
        LegacyReader::new(&[0u8; 4][..]).unwrap_err(),
        ArchiveError::BlockSize { .. }
    ));
    let huge = (MAX_BLOCK_SIZE + 1).to_le_bytes();
    assert!(matches!(
        LegacyReader::new(&huge[..]).unwrap_err(),
        ArchiveError::BlockSize { .. }
    ));
    // A record header cut after 3 bytes.
    let mut bytes = 4u32.to_le_bytes().to_vec();
    bytes.extend_from_slice(&[0, 0, 0]);
    let e = read_all(&bytes[..]).unwrap_err();
    assert!(
        matches!(
            e,
            ArchiveError::Truncated {
                offset: 4,
                got: 3,
                need: 8,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("offset 4"), "{e}");
    // A header with no data.
    let mut bytes = 4u32.to_le_bytes().to_vec();
    bytes.extend_from_slice(&[0; 8]);
    assert!(matches!(
        read_all(&bytes[..]).unwrap_err(),
        ArchiveError::EmptyRecord { offset: 4 }
    ));
    // A misaligned offset, as when a short block is followed by more records.
    let mut bytes = 4u32.to_le_bytes().to_vec();
    bytes.extend_from_slice(&[0; 8]);
    bytes.extend_from_slice(b"ab");
    bytes.extend_from_slice(&[0; 8]);
    bytes.extend_from_slice(b"cdef");
    let e = read_all(&bytes[..]).unwrap_err();
    assert_eq!(e.offset(), Some(16), "{e}");
    // A misaligned block offset.
    let mut bytes = 4u32.to_le_bytes().to_vec();
    bytes.extend_from_slice(&[2, 0, 0, 0, 0, 0, 0, 0]);
    bytes.extend_from_slice(b"abcd");
    let e = read_all(&bytes[..]).unwrap_err();
    assert!(
        matches!(
            e,
            ArchiveError::Misaligned {
                offset: 4,
                block_offset: 2,
                ..
            }
        ),
        "{e}"
    );
    // An offset beyond the source size limit.
    let mut bytes = 4u32.to_le_bytes().to_vec();
    bytes.extend_from_slice(&u64::MAX.wrapping_sub(3).to_le_bytes());
    bytes.extend_from_slice(b"abcd");
    assert!(matches!(
        read_all(&bytes[..]).unwrap_err(),
        ArchiveError::OffsetTooLarge { .. }
    ));
}

#[test]
fn records_must_come_in_increasing_order() {
    let mut bytes = 4u32.to_le_bytes().to_vec();
    for off in [8u64, 4] {
        bytes.extend_from_slice(&off.to_le_bytes());
        bytes.extend_from_slice(b"abcd");
    }
    let e = read_all(&bytes[..]).unwrap_err();
    assert!(
        matches!(
            e,
            ArchiveError::OutOfOrder {
                offset: 16,
                block_offset: 4,
                previous: 8
            }
        ),
        "{e}"
    );
    // A repeated block is out of order too.
    let mut bytes = 4u32.to_le_bytes().to_vec();
    for _ in 0..2 {
        bytes.extend_from_slice(&0u64.to_le_bytes());
        bytes.extend_from_slice(b"abcd");
    }
    assert!(matches!(
        read_all(&bytes[..]).unwrap_err(),
        ArchiveError::OutOfOrder { .. }
    ));
}

#[test]
fn no_block_size_makes_a_stream_look_like_gzip() {
    let e = LegacyWriter::new(Vec::new(), 0x088B1F).unwrap_err();
    assert!(e.to_string().contains("559903"), "{e}");
    assert_eq!(&0x088B1Fu32.to_le_bytes()[..3], &[0x1f, 0x8b, 0x08]);
}

#[test]
fn writer_rejects_what_the_format_cannot_hold() {
    let mut w = LegacyWriter::new(Vec::new(), 4).unwrap();
    assert!(w.write_record(2, b"abcd").is_err());
    assert!(w.write_record(0, b"").is_err());
    assert!(w.write_record(0, b"abcde").is_err());
    w.write_record(4, b"abcd").unwrap();
    assert!(w.write_record(4, b"abcd").is_err(), "a block once only");
    assert!(w.write_record(0, b"abcd").is_err(), "in increasing order");
    w.write_record(8, b"ab").unwrap();
    assert!(
        w.write_record(12, b"abcd").is_err(),
        "nothing after a short block"
    );
    assert!(LegacyWriter::new(Vec::new(), 0).is_err());
}

#[test]
fn gzip_round_trip_and_detection() {
    let mut w = LegacyWriter::new(Compression::Gzip.writer(Vec::new()), 4).unwrap();
    w.write_record(0, b"abcd").unwrap();
    let gz = w.finish().unwrap().finish().unwrap();
    assert_eq!(Compression::detect(&gz), Compression::Gzip);
    assert_eq!(
        Compression::detect(&16384u32.to_le_bytes()),
        Compression::None
    );
    let (_, recs) = read_all(Compression::Gzip.reader(&gz[..])).unwrap();
    assert_eq!(recs, vec![(0, b"abcd".to_vec())]);
    // Sniffing works byte by byte, for both kinds.
    let (c, r) = Compression::sniff(OneByte(&gz)).unwrap();
    assert_eq!(c, Compression::Gzip);
    assert_eq!(read_all(r).unwrap().1, recs);
    let mut plain = LegacyWriter::new(Vec::new(), 4).unwrap();
    plain.write_record(0, b"abcd").unwrap();
    let plain = plain.finish().unwrap();
    let (c, r) = Compression::sniff(OneByte(&plain)).unwrap();
    assert_eq!(c, Compression::None);
    assert_eq!(read_all(r).unwrap().1, recs);
    assert_eq!(Compression::sniff(&[][..]).unwrap().0, Compression::None);
    // A corrupt gzip member is an I/O error with an offset, not a panic.
    let mut bad = gz.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0xff;
    bad.truncate(bad.len() - 3);
    assert!(read_all(Compression::Gzip.reader(&bad[..])).is_err());
}

fn records_strategy() -> impl Strategy<Value = (u32, Records)> {
    (1u32..64).prop_flat_map(|bs| {
        let block = proptest::collection::vec(any::<u8>(), bs as usize);
        let recs = proptest::collection::btree_map(0u64..1000, block, 0..20);
        let tail = proptest::option::of(proptest::collection::vec(any::<u8>(), 1..=bs as usize));
        (Just(bs), recs, tail).prop_map(|(bs, recs, tail)| {
            // Records in increasing block order, as blockdiff writes them.
            let mut out: Records = recs
                .into_iter()
                .map(|(i, d)| (i * u64::from(bs), d))
                .collect();
            if let Some(t) = tail {
                out.push((1000 * u64::from(bs), t));
            }
            (bs, out)
        })
    })
}

proptest! {
    #[test]
    fn round_trip((bs, recs) in records_strategy(), gzip in any::<bool>()) {
        let c = if gzip { Compression::Gzip } else { Compression::None };
        let mut w = LegacyWriter::new(c.writer(Vec::new()), bs).unwrap();
        for (off, data) in &recs {
            w.write_record(*off, data).unwrap();
        }
        let bytes = w.finish().unwrap().finish().unwrap();
        let (got_bs, got) = read_all(c.reader(&bytes[..])).unwrap();
        prop_assert_eq!(got_bs, bs);
        prop_assert_eq!(got, recs);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512), small_bs in 1u32..32) {
        let mut data = small_bs.to_le_bytes().to_vec();
        data.extend_from_slice(&bytes);
        let _ = read_all(&data[..]);
        let _ = read_all(&bytes[..]);
        let mut r = match LegacyReader::new(OneByte(&data)) { Ok(r) => r, Err(_) => return Ok(()) };
        while let Ok(Some(_)) = r.next_record() {
            if r.skip_data().is_err() { break; }
        }
    }

    #[test]
    fn truncation_is_an_error_or_a_prefix((bs, recs) in records_strategy(), cut in any::<prop::sample::Index>()) {
        let mut w = LegacyWriter::new(Vec::new(), bs).unwrap();
        for (off, data) in &recs {
            w.write_record(*off, data).unwrap();
        }
        let bytes = w.finish().unwrap();
        let cut = cut.index(bytes.len() + 1);
        // A cut stream either errors or yields a prefix of the records whose
        // last one may be shortened: never invented data.
        if let Ok((_, got)) = read_all(&bytes[..cut]) {
            prop_assert!(got.len() <= recs.len());
            for (i, (off, data)) in got.iter().enumerate() {
                prop_assert_eq!(*off, recs[i].0);
                prop_assert!(recs[i].1.starts_with(data));
            }
        }
    }
}
