//! Round trips and damage detection of the v2 diff file.

use std::collections::BTreeMap;
use std::io::{self, Read};

use proptest::prelude::*;

use super::*;
use crate::ArchiveError;

/// Changed blocks of a test source: index → Some(bytes) or None for zero.
type Blocks = BTreeMap<u64, Option<Vec<u8>>>;

fn header(block_size: u32, source_size: u64, compression: FrameCompression) -> DiffHeader {
    DiffHeader {
        block_size,
        source_size,
        generation: 3,
        hash: HashAlgorithm::Blake3,
        compression,
        level: 1,
        created_secs: 1_700_000_000,
        created_nanos: 5,
        parent: [9; 32],
        folded_parent: 0,
    }
}

/// Writes `blocks`, starting a new frame every `per_frame` blocks.
fn write(
    bs: u32,
    size: u64,
    blocks: &Blocks,
    per_frame: usize,
    compression: FrameCompression,
    header_size: u64,
) -> Vec<u8> {
    let mut w = DiffWriter::new(Vec::new(), header(bs, header_size, compression)).unwrap();
    let mut c = FrameCompressor::new(compression, 1).unwrap();
    let mut f = FrameBuilder::new();
    let flush = |f: &mut FrameBuilder, w: &mut DiffWriter<Vec<u8>>, c: &mut FrameCompressor| {
        if !f.is_empty() {
            let mut bytes = Vec::new();
            let meta = f.encode(c, &mut bytes).unwrap();
            w.append_frame(&bytes, &meta).unwrap();
            f.clear();
        }
    };
    for (n, (i, data)) in blocks.iter().enumerate() {
        if n % per_frame == 0 {
            flush(&mut f, &mut w, &mut c);
        }
        match data {
            Some(d) => f.push_data(*i, d).unwrap(),
            None => f.push_zero(*i).unwrap(),
        }
    }
    flush(&mut f, &mut w, &mut c);
    w.finish(size, [4; 32]).unwrap()
}

/// Expands a frame back into blocks.
fn blocks_of(frame: &Frame, bs: u32, size: u64, out: &mut Blocks) {
    let mut at = 0usize;
    for e in &frame.extents {
        for b in e.first_block..e.end_block() {
            match e.kind {
                ExtentKind::Zero => {
                    out.insert(b, None);
                }
                ExtentKind::Data => {
                    let len = data_len(b, 1, bs, size) as usize;
                    out.insert(b, Some(frame.payload[at..at + len].to_vec()));
                    at += len;
                }
            }
        }
    }
    assert_eq!(at, frame.payload.len());
}

fn read_random(bytes: &[u8]) -> crate::Result<Blocks> {
    let file = DiffFile::open(bytes.to_vec())?;
    let (bs, size) = (file.header().block_size, file.summary().source_size);
    let mut out = Blocks::new();
    let mut frame = Frame::default();
    let mut d = FrameDecompressor::default();
    for i in 0..file.frames().len() {
        file.read_frame(i, &mut frame, &mut d)?;
        blocks_of(&frame, bs, size, &mut out);
    }
    Ok(out)
}

fn read_stream<R: Read>(r: R) -> crate::Result<Blocks> {
    let mut s = StreamReader::new(r)?;
    let bs = s.header().block_size;
    let mut frames = Vec::new();
    let mut frame = Frame::default();
    while s.next_frame(&mut frame)? {
        frames.push(frame.clone());
    }
    let size = s.summary().unwrap().source_size;
    let mut out = Blocks::new();
    for f in &frames {
        blocks_of(f, bs, size, &mut out);
    }
    Ok(out)
}

struct OneByte<'a>(&'a [u8]);
impl Read for OneByte<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match (self.0.split_first(), buf.first_mut()) {
            (Some((b, rest)), Some(slot)) => {
                *slot = *b;
                self.0 = rest;
                Ok(1)
            }
            _ => Ok(0),
        }
    }
}

/// A random source's changed blocks: (block size, source size, blocks).
fn source_strategy() -> impl Strategy<Value = (u32, u64, Blocks)> {
    (
        prop_oneof![Just(4u32), Just(7), Just(64), Just(512)],
        0u64..40,
    )
        .prop_flat_map(|(bs, nblocks)| {
            let tail = if nblocks == 0 {
                Just(0u64).boxed()
            } else {
                (1..=u64::from(bs)).boxed()
            };
            (
                Just(bs),
                Just(nblocks),
                tail,
                proptest::collection::vec(
                    (any::<bool>(), any::<bool>(), any::<u8>()),
                    nblocks as usize,
                ),
            )
                .prop_map(|(bs, nblocks, tail, picks)| {
                    let size = if nblocks == 0 {
                        0
                    } else {
                        (nblocks - 1) * u64::from(bs) + tail
                    };
                    let mut blocks = Blocks::new();
                    for (i, (changed, zero, seed)) in picks.into_iter().enumerate() {
                        if !changed {
                            continue;
                        }
                        let len = data_len(i as u64, 1, bs, size) as usize;
                        // Repetitive content, so that zstd has something to do.
                        let data = (!zero).then(|| {
                            (0..len)
                                .map(|j| seed.wrapping_add((j / 3) as u8) | 1)
                                .collect()
                        });
                        blocks.insert(i as u64, data);
                    }
                    (bs, size, blocks)
                })
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn round_trip((bs, size, blocks) in source_strategy(), per_frame in 1usize..9, zstd in any::<bool>(), known in any::<bool>()) {
        let c = if zstd { FrameCompression::Zstd } else { FrameCompression::None };
        let bytes = write(bs, size, &blocks, per_frame, c, if known { size } else { UNKNOWN_SIZE });
        prop_assert_eq!(&read_random(&bytes).unwrap(), &blocks);
        prop_assert_eq!(&read_stream(&bytes[..]).unwrap(), &blocks);
        prop_assert_eq!(&read_stream(OneByte(&bytes)).unwrap(), &blocks);
    }

    #[test]
    fn any_flipped_byte_is_detected((bs, size, blocks) in source_strategy(), per_frame in 1usize..5, pick in any::<prop::sample::Index>(), bit in 0u8..8) {
        let bytes = write(bs, size, &blocks, per_frame, FrameCompression::Zstd, size);
        let mut bad = bytes.clone();
        let at = pick.index(bad.len());
        bad[at] ^= 1 << bit;
        let random = read_random(&bad);
        prop_assert!(random.is_err(), "flip at {} of {} went unnoticed (random access)", at, bytes.len());
        prop_assert!(read_stream(&bad[..]).is_err(), "flip at {} went unnoticed (stream)", at);
    }

    #[test]
    fn any_truncation_is_detected((bs, size, blocks) in source_strategy(), per_frame in 1usize..5, pick in any::<prop::sample::Index>()) {
        let bytes = write(bs, size, &blocks, per_frame, FrameCompression::Zstd, size);
        let cut = pick.index(bytes.len());
        prop_assert!(read_random(&bytes[..cut]).is_err(), "cut at {} of {}", cut, bytes.len());
        prop_assert!(read_stream(&bytes[..cut]).is_err(), "cut at {} of {}", cut, bytes.len());
    }

    #[test]
    fn arbitrary_bytes_never_panic(mut bytes in proptest::collection::vec(any::<u8>(), 0..600), valid_header in any::<bool>()) {
        if valid_header && bytes.len() >= HEADER_LEN {
            bytes[..HEADER_LEN].copy_from_slice(&header(16, 100, FrameCompression::Zstd).encode());
        }
        let _ = read_random(&bytes);
        let _ = read_stream(&bytes[..]);
    }
}

#[test]
fn errors_name_the_structure_and_offset() {
    let mut blocks = Blocks::new();
    blocks.insert(0, Some(vec![1; 16]));
    blocks.insert(1, None);
    blocks.insert(2, Some(vec![2; 8]));
    let bytes = write(16, 40, &blocks, 2, FrameCompression::Zstd, 40);
    // A byte of the second frame's payload.
    let file = DiffFile::open(bytes.clone()).unwrap();
    let second = file.frames()[1];
    let mut bad = bytes.clone();
    bad[second.offset as usize + second.len as usize - 1] ^= 0x10;
    let e = read_random(&bad).unwrap_err();
    assert!(matches!(e, ArchiveError::Checksum { .. }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains(&format!("frame 1 at offset {}", second.offset))
            && msg.contains("CRC32 mismatch"),
        "{msg}"
    );
    // A cut file has no end marker.
    let e = DiffFile::open(bytes[..bytes.len() - 1].to_vec()).unwrap_err();
    assert!(matches!(e, ArchiveError::MissingTrailer { .. }), "{e}");
    assert!(e.to_string().contains("truncated"), "{e}");
    let e = read_stream(&bytes[..second.offset as usize]).unwrap_err();
    assert!(matches!(e, ArchiveError::MissingTrailer { .. }), "{e}");
    // A legacy stream is not a v2 file.
    let e = DiffFile::open(16384u32.to_le_bytes().repeat(40)).unwrap_err();
    assert!(e.to_string().contains("bad magic"), "{e}");
}

#[test]
fn writer_refuses_inconsistent_input() {
    let mut f = FrameBuilder::new();
    f.push_data(5, b"abcd").unwrap();
    assert!(f.push_data(5, b"abcd").is_err());
    assert!(f.push_zero(2).is_err());
    // The header's size must match what was read.
    let w = DiffWriter::new(Vec::new(), header(4, 100, FrameCompression::None)).unwrap();
    assert!(w.finish(99, [0; 32]).is_err());
    // An extent beyond the end of the source.
    let mut w =
        DiffWriter::new(Vec::new(), header(4, UNKNOWN_SIZE, FrameCompression::None)).unwrap();
    let mut bytes = Vec::new();
    let meta = f
        .encode(
            &mut FrameCompressor::new(FrameCompression::None, 0).unwrap(),
            &mut bytes,
        )
        .unwrap();
    w.append_frame(&bytes, &meta).unwrap();
    assert!(w.finish(8, [0; 32]).is_err());
}

#[test]
fn a_payload_given_at_encoding_makes_the_same_frame_as_copied_blocks() {
    let text: Vec<u8> = b"some text, some text again, ".repeat(300);
    for compression in [FrameCompression::Zstd, FrameCompression::None] {
        let mut c = FrameCompressor::new(compression, 1).unwrap();
        let (mut copied, mut counted) = (FrameBuilder::new(), FrameBuilder::new());
        // Blocks 3 and 4, zero block 5, then the source's short last block.
        for (block, range) in [(3u64, 0..4096), (4, 4096..8192), (7, 8192..8400)] {
            if block == 7 {
                copied.push_zero(5).unwrap();
                counted.push_zero(5).unwrap();
            }
            copied.push_data(block, &text[range.clone()]).unwrap();
            counted.push_data_len(block, range.len()).unwrap();
        }
        assert_eq!(counted.raw_len(), 8400);
        // Appended after what `out` already holds.
        let (mut a, mut b) = (vec![1, 2, 3], vec![1, 2, 3]);
        let meta_a = copied.encode(&mut c, &mut a).unwrap();
        let meta_b = counted
            .encode_payload(&text[..8400], &mut c, &mut b)
            .unwrap();
        assert_eq!((&a, &meta_a), (&b, &meta_b));
        assert_eq!(meta_a.len as usize, a.len() - 3);
        let mut frame = Frame::default();
        decode_frame(
            &a[3..],
            "frame",
            0,
            4096,
            7 * 4096 + 208,
            &mut FrameDecompressor::default(),
            &mut frame,
        )
        .unwrap();
        assert_eq!(frame.payload, text[..8400]);
        // The payload must be the blocks' length; counted blocks have no
        // bytes for encode.
        assert!(
            counted
                .encode_payload(&text[..8399], &mut c, &mut b)
                .is_err()
        );
        assert!(counted.encode(&mut c, &mut b).is_err());
    }
}

/// `len` bytes that zstd cannot compress (an LCG from `seed`).
fn noise(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed;
    (0..len)
        .map(|_| {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            (x >> 16) as u8
        })
        .collect()
}

#[test]
fn incompressible_frames_are_stored() {
    let mut blocks = Blocks::new();
    blocks.insert(0, Some(noise(4096, 12345)));
    let bytes = write(4096, 4096, &blocks, 1, FrameCompression::Zstd, 4096);
    let file = DiffFile::open(bytes.clone()).unwrap();
    assert_eq!(file.summary().stored_bytes, 4096);
    assert_eq!(read_random(&bytes).unwrap(), blocks);
}

#[test]
fn a_short_block_must_end_the_source_even_when_its_size_is_unknown() {
    // Block 0 short (3 of 4 bytes) in one frame, block 1 full in the next:
    // the totals agree with a 7-byte source, but block 0 cannot be short.
    let mut w =
        DiffWriter::new(Vec::new(), header(4, UNKNOWN_SIZE, FrameCompression::None)).unwrap();
    let mut c = FrameCompressor::new(FrameCompression::None, 0).unwrap();
    for (block, data) in [(0u64, &b"abc"[..]), (1, &b"defg"[..])] {
        let mut f = FrameBuilder::new();
        f.push_data(block, data).unwrap();
        let mut bytes = Vec::new();
        let meta = f.encode(&mut c, &mut bytes).unwrap();
        w.append_frame(&bytes, &meta).unwrap();
    }
    let bytes = w.finish(7, [0; 32]).unwrap();
    let e = read_stream(&bytes[..]).unwrap_err();
    assert!(
        e.to_string().contains("frame 1") && e.to_string().contains("short block"),
        "{e}"
    );
    assert!(read_random(&bytes).is_err());
}

#[test]
fn reserved_header_bytes_must_be_zero() {
    let mut h = header(4, 8, FrameCompression::Zstd).encode();
    h[100] = 1;
    let crc = crc32fast::hash(&h[..HEADER_LEN - 4]);
    h[HEADER_LEN - 4..].copy_from_slice(&crc.to_le_bytes());
    let e = DiffHeader::decode(&h, &crate::Limits::default()).unwrap_err();
    assert!(e.to_string().contains("reserved"), "{e}");
}

#[test]
fn an_extent_near_the_end_of_u64_is_corrupt_not_an_overflow() {
    // Found by the v2_reader fuzz target: a zero extent at block 2^64 - 1
    // of a 2-block source, every checksum valid.
    // fuzz/regressions/v2_reader/extent-end-overflows-u64, as hex.
    let bytes: Vec<u8> = (0..OVERFLOWING_EXTENT.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&OVERFLOWING_EXTENT[i..i + 2], 16).unwrap())
        .collect();
    let bytes = &bytes[..];
    let e = read_random(bytes).unwrap_err();
    assert!(e.to_string().contains("lies beyond any source"), "{e}");
    let e = read_stream(bytes).unwrap_err();
    assert!(e.to_string().contains("lies beyond any source"), "{e}");
}

const OVERFLOWING_EXTENT: &str = concat!(
    "894244460d0a1a0a020080000010000000200000000000000100000000000000020000000000000000000000",
    "0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
    "000000000000000000000000000000000000000000000000000000000000000000000000390030e842444652",
    "00000000010000000000000000000000796b3b0effffffffffffffff01000000010000004244495800000000",
    "0100000000000000010000000000000000200000000000000000000000000000010000000000000000000000",
    "0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
    "80000000000000002800000001000000ffffffffffffffff0100000001000000a80000000000000080000000",
    "00000000176f4a6da96b143442444946454e440a",
);

#[test]
fn the_stored_payload_limit_is_zstd_s_bound_of_the_raw_limit() {
    assert_eq!(
        zstd::zstd_safe::compress_bound(MAX_FRAME_RAW as usize) as u64,
        u64::from(MAX_FRAME_STORED)
    );
    assert_eq!(MAX_FRAME_LEN, 84_148_248);
}

#[test]
fn a_stored_frame_s_payload_is_read_in_place_and_a_compressed_one_is_not() {
    let noise = noise(8192, 777);
    let mut blocks = Blocks::new();
    // Frame 0: a zero block and two blocks of noise (stored as is);
    // frame 1: two blocks of one byte repeated (compressed).
    blocks.insert(0, None);
    blocks.insert(1, Some(noise[..4096].to_vec()));
    blocks.insert(2, Some(noise[4096..].to_vec()));
    blocks.insert(5, Some(vec![7; 4096]));
    blocks.insert(6, Some(vec![8; 4096]));
    let bytes = write(4096, 7 * 4096, &blocks, 3, FrameCompression::Zstd, 7 * 4096);
    let file = DiffFile::open(bytes.clone()).unwrap();
    assert_eq!(file.frames().len(), 2);

    // Any range of the stored payload is its bytes.
    let mut buf = vec![0u8; 4096];
    assert!(file.read_stored_payload(0, 4096, &mut buf).unwrap());
    assert_eq!(buf, noise[4096..]);
    let mut piece = vec![0u8; 100];
    assert!(file.read_stored_payload(0, 10, &mut piece).unwrap());
    assert_eq!(piece, noise[10..110]);
    // Past the payload's end: an error naming the frame, nothing read.
    let err = file.read_stored_payload(0, 4097, &mut buf).unwrap_err();
    assert!(err.to_string().contains("frame 0"), "{err}");
    let err = file
        .read_stored_payload(0, u64::MAX, &mut piece)
        .unwrap_err();
    assert!(err.to_string().contains("beyond its payload"), "{err}");

    // A compressed frame is not read in place.
    let mut untouched = vec![0xaa; 4096];
    assert!(!file.read_stored_payload(1, 0, &mut untouched).unwrap());
    assert_eq!(untouched, vec![0xaa; 4096]);

    // A damaged header (its payload length) is refused; damaged payload
    // bytes are returned as they are (the frame CRC is not checked: the
    // caller checks the bytes against its digest).
    let at = |i: usize| {
        let file = DiffFile::open(bytes.clone()).unwrap();
        file.frames()[i].offset as usize
    };
    let mut bad = bytes.clone();
    bad[at(0) + 12] ^= 1;
    let file = DiffFile::open(bad).unwrap();
    assert!(file.read_stored_payload(0, 0, &mut piece).is_err());
    let mut flipped = bytes.clone();
    let payload = at(0) + FRAME_HEADER_LEN + 2 * EXTENT_LEN;
    flipped[payload + 20] ^= 1;
    let file = DiffFile::open(flipped).unwrap();
    assert!(file.read_stored_payload(0, 10, &mut piece).unwrap());
    assert_eq!(piece[10], noise[20] ^ 1);
}
