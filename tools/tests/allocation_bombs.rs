//! Allocation bombs for the parsers outside archive-format (whose own are
//! in archive-format/tests/allocation_bombs.rs), and the digest readers
//! (archive-format's, as blockdiff-core re-exports and uses them: legacy
//! `NAME.N.md5`, v2 `NAME.N.digest`; streamed, opened, random access) and
//! the remote agent's packet reader. Inputs
//! announce huge sizes (block size, source size, entry count, packet
//! length); each must fail with an error, and no single allocation may
//! exceed the documented limit for that length (plus a small margin).
//!
//! A counting global allocator records the largest single allocation of
//! the test's thread while the parser runs (`peak`).

use std::path::Path;

use blockdiff_core::{DigestFile, DigestReader};
use blockdiff_run::remote::protocol::{GREETING, MAX_PAYLOAD, PacketReader};

#[path = "../../archive-format/tests/support/largest_allocation.rs"]
mod largest_allocation;

use largest_allocation::assert_refused;

const DIGEST_MAGIC: &[u8; 8] = b"\x89BDG\r\n\x1a\n";

/// A v2 digest header (archive-format/FORMAT.md §5.2), BLAKE3.
fn v2_header(block_size: u32, source_size: u64) -> Vec<u8> {
    let mut h = vec![0u8; 64];
    h[..8].copy_from_slice(DIGEST_MAGIC);
    h[8..10].copy_from_slice(&2u16.to_le_bytes());
    h[10..12].copy_from_slice(&64u16.to_le_bytes());
    h[12..16].copy_from_slice(&block_size.to_le_bytes());
    h[16..24].copy_from_slice(&source_size.to_le_bytes());
    h[24..32].copy_from_slice(&1u64.to_le_bytes());
    h[32] = 2;
    h[33] = 32;
    let crc = crc32(&h[..60]);
    h[60..64].copy_from_slice(&crc.to_le_bytes());
    h
}

/// A v2 digest trailer (§5.3) for `entries` entries of a source of
/// `source_size` bytes.
fn v2_trailer(entries: u64, source_size: u64) -> Vec<u8> {
    let mut t = vec![0u8; 56];
    t[..8].copy_from_slice(&entries.to_le_bytes());
    t[8..16].copy_from_slice(&source_size.to_le_bytes());
    let crc = crc32(&t[..48]);
    t[48..52].copy_from_slice(&crc.to_le_bytes());
    t[52..56].copy_from_slice(b"BDG\n");
    t
}

/// CRC-32 (ISO-HDLC), bit by bit: this crate has no CRC dependency.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// Reads every entry of a digest stream.
fn read_stream(bytes: &[u8]) -> blockdiff_core::Result<u64> {
    let mut r = DigestReader::new(bytes, "bomb.digest")?;
    let mut n = 0;
    while r.next_entry()?.is_some() {
        n += 1;
    }
    r.finish()?;
    Ok(n)
}

/// Opens the file as both readers use it, and reads everything.
fn read_file(path: &Path) -> blockdiff_core::Result<u64> {
    let mut f = DigestFile::open(path)?;
    let last = f.entries().saturating_sub(1);
    f.entry(0)?;
    f.entry(last)?;
    f.verify()?;
    let mut r = DigestReader::open(path)?;
    let mut n = 0;
    while r.next_entry()?.is_some() {
        n += 1;
    }
    r.finish()?;
    Ok(n)
}

#[test]
fn a_v2_digest_announcing_2_pow_60_entries_is_refused_without_allocating_for_them() {
    // Block size 1, source size 2^60: 2^60 entries announced, none there.
    let size = 1u64 << 60;
    let mut d = v2_header(1, size);
    d.extend_from_slice(&[7u8; 32 * 3]);
    d.extend_from_slice(&v2_trailer(size, size));
    assert_refused("v2 digest stream, 2^60 entries", 0, || read_stream(&d));

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bomb.digest");
    std::fs::write(&path, &d).unwrap();
    assert_refused("v2 digest file, 2^60 entries", 0, || read_file(&path));

    // The trailer's count is the largest a u64 holds, header unknown size.
    let mut d = v2_header(1, u64::MAX);
    d.extend_from_slice(&v2_trailer(u64::MAX, u64::MAX));
    assert_refused("v2 digest stream, 2^64-1 entries", 0, || read_stream(&d));
    std::fs::write(&path, &d).unwrap();
    assert_refused("v2 digest file, 2^64-1 entries", 0, || read_file(&path));
}

#[test]
fn digest_block_sizes_beyond_the_limit_are_refused_before_allocating() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bomb");
    for bs in [0u32, (16 << 20) + 1, u32::MAX] {
        // Legacy: the block size, then two MD5s.
        let mut d = bs.to_le_bytes().to_vec();
        d.extend_from_slice(&[1u8; 32]);
        assert_refused(&format!("legacy digest, block size {bs}"), 0, || {
            read_stream(&d)
        });
        std::fs::write(&path, &d).unwrap();
        assert_refused(&format!("legacy digest file, block size {bs}"), 0, || {
            read_file(&path)
        });
        // v2.
        let mut d = v2_header(bs, 64);
        d.extend_from_slice(&[1u8; 32]);
        d.extend_from_slice(&v2_trailer(1, 64));
        assert_refused(&format!("v2 digest, block size {bs}"), 0, || {
            read_stream(&d)
        });
        std::fs::write(&path, &d).unwrap();
        assert_refused(&format!("v2 digest file, block size {bs}"), 0, || {
            read_file(&path)
        });
    }
}

#[test]
fn a_legacy_digest_of_16_mib_blocks_reads_in_little_memory() {
    // The largest block size, three entries and a cut one: an error, and
    // nothing allocated for the blocks the entries stand for.
    let mut d = (16u32 << 20).to_le_bytes().to_vec();
    d.extend_from_slice(&[3u8; 16 * 3 + 5]);
    assert_refused("legacy digest, cut entry", 0, || read_stream(&d));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("n.1.md5");
    std::fs::write(&path, &d).unwrap();
    assert_refused("legacy digest file, cut entry", 0, || read_file(&path));
}

/// The agent's greeting packet.
fn greeting() -> Vec<u8> {
    let mut s = vec![b'H'];
    s.extend_from_slice(&(GREETING.len() as u32).to_le_bytes());
    s.extend_from_slice(GREETING);
    s
}

fn read_packets(bytes: &[u8]) -> std::io::Result<usize> {
    let mut r = PacketReader::new(bytes);
    let mut n = 0;
    while r.next_packet()?.is_some() {
        n += 1;
    }
    Ok(n)
}

#[test]
fn agent_packets_announcing_huge_lengths_are_refused_before_allocating() {
    for len in [u32::MAX, MAX_PAYLOAD as u32 + 1] {
        let mut s = greeting();
        s.push(b'D');
        s.extend_from_slice(&len.to_le_bytes());
        s.extend_from_slice(&[0u8; 100]);
        let e = assert_refused(&format!("packet of {len} bytes"), 0, || read_packets(&s));
        assert!(e.contains("over the limit"), "{e}");
    }
    // A greeting that announces 4 GiB: refused before the greeting is read.
    let mut s = vec![b'H'];
    s.extend_from_slice(&u32::MAX.to_le_bytes());
    s.extend_from_slice(GREETING);
    assert_refused("greeting of 4 GiB", 0, || read_packets(&s));

    // At the limit (1 MiB), cut after 100 bytes: at most the limit.
    let mut s = greeting();
    s.push(b'D');
    s.extend_from_slice(&(MAX_PAYLOAD as u32).to_le_bytes());
    s.extend_from_slice(&[0u8; 100]);
    let e = assert_refused("packet of 1 MiB, cut", MAX_PAYLOAD, || read_packets(&s));
    assert!(e.contains("ends inside a packet"), "{e}");
}
