//! Allocation bombs: inputs that announce huge sizes (a block size, a
//! frame's or the index's length, a source size) without the bytes to back
//! them. Every parser of this crate must refuse them with an error, and
//! never allocate more than the limit FORMAT.md §1 documents for that
//! length (plus a small margin), whatever the input says.
//!
//! A counting global allocator records the largest single allocation each
//! test thread makes while a parser runs (`peak`).

use std::io::{Cursor, Read, Write};

use archive_format::{
    Compression, DIFF_MAGIC, DiffFile, DiffHeader, DiffWriter, Extent, ExtentKind, Frame,
    FrameBuilder, FrameCompression, FrameCompressor, FrameDecompressor, HashAlgorithm,
    LegacyReader, LegacyWriter, MAX_BLOCK_SIZE, MAX_FRAME_LEN, MAX_FRAME_RAW, MAX_INDEX_LEN,
    ReadAt, StreamReader, UNKNOWN_SIZE, V2_HEADER_LEN,
};

#[path = "support/largest_allocation.rs"]
mod largest_allocation;

use largest_allocation::{MARGIN, assert_refused, peak};

// ---------------------------------------------------------------------------
// Legacy streams (FORMAT.md §3.1, §3.2)

/// Reads a whole legacy stream, every block's data.
fn read_legacy<R: Read>(r: R) -> archive_format::Result<()> {
    let mut reader = LegacyReader::new(r)?;
    let mut buf = Vec::new();
    while reader.read_record(&mut buf)?.is_some() {}
    Ok(())
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut w = Compression::Gzip.writer(Vec::new());
    w.write_all(bytes).unwrap();
    w.finish().unwrap()
}

#[test]
fn legacy_stream_block_size_beyond_the_limit_is_refused_before_allocating() {
    for bs in [u32::MAX, MAX_BLOCK_SIZE + 1, 0] {
        let mut s = bs.to_le_bytes().to_vec();
        s.extend_from_slice(&[0u8; 8]);
        s.extend_from_slice(&[1u8; 100]);
        let e = assert_refused(&format!("legacy, block size {bs}"), 0, || {
            read_legacy(&s[..])
        });
        assert!(e.contains("block size"), "{e}");
        let gz = gzip(&s);
        assert_refused(&format!("gzip legacy, block size {bs}"), 0, || {
            read_legacy(Compression::Gzip.reader(&gz[..]))
        });
    }
}

#[test]
fn legacy_stream_announcing_a_16_mib_block_allocates_only_what_comes() {
    // The largest block size, then a record header and no data: the
    // record is empty, an error. The block's buffer grows as bytes come.
    let mut s = MAX_BLOCK_SIZE.to_le_bytes().to_vec();
    s.extend_from_slice(&[0u8; 8]);
    let e = assert_refused("legacy, empty 16 MiB record", 0, || read_legacy(&s[..]));
    assert!(e.contains("no data") || e.contains("empty"), "{e}");
    let gz = gzip(&s);
    assert_refused("gzip legacy, empty 16 MiB record", 0, || {
        read_legacy(Compression::Gzip.reader(&gz[..]))
    });
    let (_, sniffed) = Compression::sniff(&gz[..]).unwrap();
    assert_refused("sniffed gzip legacy, empty 16 MiB record", 0, || {
        read_legacy(sniffed)
    });

    // 100 bytes of a 16 MiB block, then a second record: the short block
    // was the last one, so the second one cannot be; 100 bytes came, and
    // far less than 16 MiB may be allocated.
    let mut s = MAX_BLOCK_SIZE.to_le_bytes().to_vec();
    s.extend_from_slice(&[0u8; 8]);
    s.extend_from_slice(&[7u8; 100]);
    let (result, largest) = peak(|| read_legacy(&s[..]));
    result.expect("one short block is a whole stream");
    assert!(largest <= MARGIN, "allocated {largest} bytes for 100");
}

#[test]
fn legacy_stream_offsets_beyond_the_source_limit_are_refused() {
    let mut s = 4096u32.to_le_bytes().to_vec();
    s.extend_from_slice(&u64::MAX.wrapping_sub(4095).to_le_bytes());
    s.extend_from_slice(&[1u8; 4096]);
    let e = assert_refused("legacy, offset 2^64 - 4096", 0, || read_legacy(&s[..]));
    assert!(e.contains("offset"), "{e}");
}

#[test]
fn gzip_legacy_stream_of_whole_16_mib_blocks_stays_within_one_block() {
    // A real 16 MiB block of zeros (a few KiB of gzip), then a misaligned
    // record: one block's buffer, no more.
    let mut w = LegacyWriter::new(Vec::new(), MAX_BLOCK_SIZE).unwrap();
    w.write_record(0, &vec![0u8; MAX_BLOCK_SIZE as usize])
        .unwrap();
    let mut s = w.finish().unwrap();
    s.extend_from_slice(&1u64.to_le_bytes());
    s.extend_from_slice(&[1u8; 16]);
    let gz = gzip(&s);
    assert!(gz.len() < 100_000);
    let e = assert_refused("gzip legacy, 16 MiB block", MAX_BLOCK_SIZE as usize, || {
        read_legacy(Compression::Gzip.reader(&gz[..]))
    });
    assert!(e.contains("multiple"), "{e}");
}

// ---------------------------------------------------------------------------
// v2 diff files (FORMAT.md §4)

fn header(block_size: u32, source_size: u64) -> DiffHeader {
    DiffHeader {
        block_size,
        source_size,
        generation: 1,
        hash: HashAlgorithm::Blake3,
        compression: FrameCompression::Zstd,
        level: 1,
        created_secs: 0,
        created_nanos: 0,
        parent: [0; 32],
        folded_parent: 0,
    }
}

/// A file of `len` bytes, all zero but for `head` at its start and `tail`
/// at its end, as a sparse file is: an attacker's 600 MiB costs no disk.
struct Sparse {
    len: u64,
    head: Vec<u8>,
    tail: Vec<u8>,
}

impl ReadAt for Sparse {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
        let n = (buf.len() as u64).min(self.len.saturating_sub(offset)) as usize;
        let tail_at = self.len - self.tail.len() as u64;
        for (i, b) in buf[..n].iter_mut().enumerate() {
            let at = offset + i as u64;
            *b = if at < self.head.len() as u64 {
                self.head[at as usize]
            } else if at >= tail_at {
                self.tail[(at - tail_at) as usize]
            } else {
                0
            };
        }
        Ok(n)
    }
    fn size(&self) -> std::io::Result<u64> {
        Ok(self.len)
    }
}

fn extent_bytes(first_block: u64, blocks: u32, kind: u8) -> [u8; 16] {
    let mut e = [0u8; 16];
    e[..8].copy_from_slice(&first_block.to_le_bytes());
    e[8..12].copy_from_slice(&blocks.to_le_bytes());
    e[12] = kind;
    e
}

/// The index and footer of a diff with one frame of `frame_len` bytes at
/// offset 128, holding one data extent of `blocks` blocks from block 0,
/// whose payload is stored uncompressed.
fn index_and_footer(
    frame_len: u32,
    blocks: u32,
    block_size: u32,
    source_size: u64,
) -> (u64, Vec<u8>) {
    let index_offset = V2_HEADER_LEN as u64 + u64::from(frame_len);
    let raw = u64::from(blocks) * u64::from(block_size);
    let mut ix = b"BDIX".to_vec();
    ix.extend_from_slice(&[0u8; 4]);
    for v in [
        1u64,
        1,
        source_size,
        u64::from(blocks),
        0,
        raw,
        u64::from(frame_len) - 40,
    ] {
        ix.extend_from_slice(&v.to_le_bytes());
    }
    ix.extend_from_slice(&[0u8; 32]);
    ix.extend_from_slice(&(V2_HEADER_LEN as u64).to_le_bytes());
    ix.extend_from_slice(&frame_len.to_le_bytes());
    ix.extend_from_slice(&1u32.to_le_bytes());
    ix.extend_from_slice(&extent_bytes(0, blocks, 0));
    let mut footer = Vec::new();
    footer.extend_from_slice(&index_offset.to_le_bytes());
    footer.extend_from_slice(&(ix.len() as u64).to_le_bytes());
    footer.extend_from_slice(&crc32fast::hash(&ix).to_le_bytes());
    let crc = crc32fast::hash(&footer);
    footer.extend_from_slice(&crc.to_le_bytes());
    footer.extend_from_slice(b"BDIFEND\n");
    ix.extend_from_slice(&footer);
    (index_offset + ix.len() as u64, ix)
}

/// Opens `src` and reads every frame.
fn read_diff_file<F: ReadAt>(src: F) -> archive_format::Result<()> {
    let d = DiffFile::open(src)?;
    let mut frame = Frame::default();
    let mut dec = FrameDecompressor::default();
    for i in 0..d.frames().len() {
        d.read_frame(i, &mut frame, &mut dec)?;
    }
    Ok(())
}

/// Streams `bytes` through, every frame.
fn read_stream<R: Read>(r: R) -> archive_format::Result<()> {
    let mut s = StreamReader::new(r)?;
    let mut frame = Frame::default();
    while s.next_frame(&mut frame)? {}
    Ok(())
}

#[test]
fn an_index_announcing_a_512_mib_frame_is_refused_before_reading_it() {
    // Issue 11, item 12: a (sparse) file whose index lists one frame of
    // 512 MiB. The reader allocated all of it before finding it garbage;
    // a frame is at most MAX_FRAME_LEN bytes (FORMAT.md §1).
    let frame_len: u32 = 512 << 20;
    let bs = 4096;
    let source_size = 1 << 30;
    let (len, tail) = index_and_footer(frame_len, frame_len / bs, bs, source_size);
    let file = Sparse {
        len,
        head: header(bs, source_size).encode().to_vec(),
        tail,
    };
    let e = assert_refused("index with a 512 MiB frame", MAX_FRAME_LEN as usize, || {
        read_diff_file(file)
    });
    assert!(e.contains("frame 0"), "{e}");

    // Just over the limit: still refused at open, before the frame is read.
    let frame_len = MAX_FRAME_LEN as u32 + 1;
    let (len, tail) = index_and_footer(frame_len, 16, 1 << 20, 64 << 20);
    let file = Sparse {
        len,
        head: header(1 << 20, 64 << 20).encode().to_vec(),
        tail,
    };
    let (result, largest) = peak(|| DiffFile::open(file).map(|_| ()));
    let e = result.expect_err("a frame over MAX_FRAME_LEN was accepted");
    assert!(e.to_string().contains("limits of a frame"), "{e}");
    assert!(largest <= MARGIN, "allocated {largest} bytes at open");
}

#[test]
fn a_footer_announcing_a_huge_index_is_refused_before_allocating() {
    for index_len in [MAX_INDEX_LEN + 1, 1 << 40, u64::MAX] {
        let len = 4096u64 << 20;
        let index_offset = len - 32 - index_len.min(len - 32 - 128);
        let mut footer = Vec::new();
        footer.extend_from_slice(&index_offset.to_le_bytes());
        footer.extend_from_slice(&index_len.to_le_bytes());
        footer.extend_from_slice(&0u32.to_le_bytes());
        let crc = crc32fast::hash(&footer);
        footer.extend_from_slice(&crc.to_le_bytes());
        footer.extend_from_slice(b"BDIFEND\n");
        let file = Sparse {
            len,
            head: header(4096, 1 << 30).encode().to_vec(),
            tail: footer,
        };
        assert_refused("footer with a huge index", 0, || read_diff_file(file));
    }
}

/// A frame header (no extent table, no payload).
fn frame_header(compression: u8, extents: u32, raw: u32, stored: u32) -> Vec<u8> {
    let mut h = b"BDFR".to_vec();
    h.extend_from_slice(&[compression, 0, 0, 0]);
    h.extend_from_slice(&extents.to_le_bytes());
    h.extend_from_slice(&raw.to_le_bytes());
    h.extend_from_slice(&stored.to_le_bytes());
    h.extend_from_slice(&0u32.to_le_bytes());
    h
}

#[test]
fn a_streamed_frame_header_announcing_huge_lengths_allocates_only_what_comes() {
    let head = header(4096, UNKNOWN_SIZE).encode();
    // Over the limits: refused at the frame header.
    for (compression, extents, raw, stored) in [
        (1, u32::MAX, 16, 16),
        (1, 1, u32::MAX, 16),
        (1, 1, 16, u32::MAX),
        (0, 1, MAX_FRAME_RAW + 1, MAX_FRAME_RAW + 1),
    ] {
        let mut s = head.to_vec();
        s.extend_from_slice(&frame_header(compression, extents, raw, stored));
        s.extend_from_slice(&[0u8; 64]);
        assert_refused("streamed frame over the limits", 0, || read_stream(&s[..]));
    }
    // At the limits (an 84 MiB frame), then 64 bytes and the end: the
    // stream is cut; only what came may be allocated.
    let mut s = head.to_vec();
    s.extend_from_slice(&frame_header(1, 1 << 20, MAX_FRAME_RAW, 67_371_008));
    s.extend_from_slice(&[0u8; 64]);
    let e = assert_refused("streamed 84 MiB frame, cut", 0, || read_stream(&s[..]));
    assert!(e.contains("truncated") || e.contains("ends"), "{e}");
}

#[test]
fn a_streamed_index_announcing_huge_counts_allocates_only_what_comes() {
    let head = header(4096, UNKNOWN_SIZE).encode();
    for (frames, extents) in [
        (u64::MAX, 0),
        (0, u64::MAX),
        (1 << 40, 1 << 40),
        // 16·F + 16·E = 256 MiB exactly: within the limit, but not there.
        (1 << 23, 1 << 23),
    ] {
        let mut s = head.to_vec();
        s.extend_from_slice(b"BDIX\0\0\0\0");
        s.extend_from_slice(&frames.to_le_bytes());
        s.extend_from_slice(&extents.to_le_bytes());
        s.extend_from_slice(&[0u8; 96 - 24]);
        s.extend_from_slice(&[0u8; 100]);
        assert_refused("streamed index with huge counts", 0, || read_stream(&s[..]));
    }
}

#[test]
fn a_zstd_frame_announcing_64_mib_stays_within_the_frame_limit() {
    // A 40-byte zstd payload that claims 64 MiB of raw bytes: a frame may
    // hold that much, no more may be allocated.
    let bs = 1 << 20;
    let size = u64::from(MAX_FRAME_RAW);
    let mut s = header(bs, size).encode().to_vec();
    let mut f = frame_header(1, 1, MAX_FRAME_RAW, 40);
    f.extend_from_slice(&extent_bytes(0, 64, 0));
    f.extend_from_slice(&[0x28, 0xb5, 0x2f, 0xfd]);
    f.extend_from_slice(&[0xAA; 36]);
    let crc = {
        let mut h = crc32fast::Hasher::new();
        h.update(&f[..20]);
        h.update(&f[24..]);
        h.finalize()
    };
    f[20..24].copy_from_slice(&crc.to_le_bytes());
    s.extend_from_slice(&f);
    let e = assert_refused("stream, zstd bomb", MAX_FRAME_RAW as usize, || {
        read_stream(&s[..])
    });
    assert!(e.contains("zstd") || e.contains("decompress"), "{e}");
}

#[test]
fn a_256_byte_diff_of_an_exabyte_source_in_one_byte_blocks_reads_in_little_memory() {
    // Issue 11, item 10 (the archive-format side): source size 2^60,
    // block size 1. The file is valid; reading it must not allocate in
    // proportion to the source's 2^60 blocks.
    let size = 1u64 << 60;
    let mut w = DiffWriter::new(Vec::new(), header(1, size)).unwrap();
    let mut c = FrameCompressor::new(FrameCompression::Zstd, 1).unwrap();
    let mut f = FrameBuilder::new();
    f.push_data(size - 10, b"x").unwrap();
    f.push_zero(size - 1).unwrap();
    let mut bytes = Vec::new();
    let meta = f.encode(&mut c, &mut bytes).unwrap();
    w.append_frame(&bytes, &meta).unwrap();
    let file = w.finish(size, [1; 32]).unwrap();
    assert!(file.len() < 400, "{} bytes", file.len());
    assert_eq!(file[..8], DIFF_MAGIC);

    let ((), largest) = peak(|| read_diff_file(file.clone()).unwrap());
    assert!(largest <= MARGIN, "DiffFile allocated {largest} bytes");
    let ((), largest) = peak(|| read_stream(&file[..]).unwrap());
    assert!(largest <= MARGIN, "StreamReader allocated {largest} bytes");
    let d = DiffFile::open(file.clone()).unwrap();
    assert_eq!(
        d.extents(),
        [
            Extent {
                first_block: size - 10,
                blocks: 1,
                kind: ExtentKind::Data
            },
            Extent {
                first_block: size - 1,
                blocks: 1,
                kind: ExtentKind::Zero
            }
        ]
    );

    // The same header over a source beyond 2^60: refused.
    let mut big = file.clone();
    big[16..24].copy_from_slice(&(size + 1).to_le_bytes());
    let crc = crc32fast::hash(&big[..V2_HEADER_LEN - 4]);
    big[V2_HEADER_LEN - 4..V2_HEADER_LEN].copy_from_slice(&crc.to_le_bytes());
    assert_refused("source beyond 2^60", 0, || read_diff_file(big.clone()));
    assert_refused("source beyond 2^60, streamed", 0, || {
        read_stream(Cursor::new(&big))
    });
}
