//! Fuzzes the digest sidecar parsers (archive-format's, re-exported by
//! `blockdiff_core`), legacy and v2:
//! `DigestReader` over a byte stream, and `DigestReader::open` and
//! `DigestFile::open` (with random access and `verify`) over the same bytes
//! written to a file.
//!
//! The target knows both formats (`Layout` below) and predicts from the
//! bytes alone which reads succeed and what they return:
//! - legacy: a u32 block size, then 16-byte MD5s; a full read succeeds
//!   exactly when the block size is valid and the length is 4 + 16·n;
//! - v2 (archive-format/FORMAT.md §5): a 64-byte header with a CRC32 and
//!   zero reserved bytes, n hashes of 16 (MD5) or 32 (BLAKE3) bytes, and a
//!   56-byte trailer (entry count, source size, BLAKE3 fingerprint, CRC32,
//!   end marker); a full read succeeds exactly when the header and trailer
//!   are valid, the length is 64 + n·hash_len + 56 and the fingerprint
//!   matches. Opening a file checks everything but the fingerprint, which
//!   `verify` and a read to the end check.
//!
//! Mutations almost always break the CRCs and the fingerprint, so a v2
//! input is also checked a second time with them recomputed (see
//! `fix_v2`), which lets the fuzzer reach the checks behind them.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use blockdiff_core::{DIGEST_MAGIC, DigestFile, DigestFormat, DigestReader, HashAlgorithm};
use libfuzzer_sys::fuzz_target;

const LEGACY_HEADER: usize = 4;
const V2_HEADER: usize = 64;
const V2_TRAILER: usize = 56;
const V2_END_MAGIC: &[u8; 4] = b"BDG\n";
const FINGERPRINT_TAG: &[u8; 20] = b"blockdiff digest v2\0";
const UNKNOWN_SIZE: u64 = u64::MAX;

/// A scratch file per process (parallel jobs must not share one), in
/// /dev/shm when there is one so that the file never reaches a disk.
fn scratch_path() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let shm = PathBuf::from("/dev/shm");
        let dir = if shm.is_dir() {
            shm
        } else {
            std::env::temp_dir()
        };
        dir.join(format!(
            "blockdiff-fuzz-digest-{}.digest",
            std::process::id()
        ))
    })
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// What a valid header says, as the target reads it from the bytes.
#[derive(Debug, Clone, Copy)]
struct Layout {
    format: DigestFormat,
    header: usize,
    hash: usize,
    algorithm: HashAlgorithm,
    block_size: u32,
    generation: u64,
    source_size: u64,
}

impl Layout {
    /// The layout the header describes, or `None` when it is invalid.
    fn of(data: &[u8]) -> Option<Layout> {
        let bs_ok = |bs: u32| (1..=archive_format::MAX_BLOCK_SIZE).contains(&bs);
        if data.len() >= 8 && data[..8] == DIGEST_MAGIC {
            if data.len() < V2_HEADER {
                return None;
            }
            let h = &data[..V2_HEADER];
            if u32_at(h, 60) != crc32fast::hash(&h[..60])
                || h[8..12] != [2, 0, V2_HEADER as u8, 0]
                || h[34..60].iter().any(|&b| b != 0)
            {
                return None;
            }
            let block_size = u32_at(h, 12);
            let algorithm = match h[32] {
                1 => HashAlgorithm::Md5,
                2 => HashAlgorithm::Blake3,
                _ => return None,
            };
            if !bs_ok(block_size) || usize::from(h[33]) != algorithm.len() {
                return None;
            }
            return Some(Layout {
                format: DigestFormat::V2,
                header: V2_HEADER,
                hash: algorithm.len(),
                algorithm,
                block_size,
                generation: u64_at(h, 24),
                source_size: u64_at(h, 16),
            });
        }
        if data.len() < LEGACY_HEADER || !bs_ok(u32_at(data, 0)) {
            return None;
        }
        Some(Layout {
            format: DigestFormat::Legacy,
            header: LEGACY_HEADER,
            hash: 16,
            algorithm: HashAlgorithm::Md5,
            block_size: u32_at(data, 0),
            generation: 0,
            source_size: UNKNOWN_SIZE,
        })
    }

    fn tail(&self) -> usize {
        match self.format {
            DigestFormat::Legacy => 0,
            DigestFormat::V2 => V2_TRAILER,
        }
    }

    /// How many entries a stream read returns before it ends or fails.
    fn entries_read(&self, len: usize) -> u64 {
        let body = len - self.header;
        if body < self.tail() {
            return 0;
        }
        ((body - self.tail()) / self.hash) as u64
    }

    /// True when the length fits the header: header + hash·n + trailer.
    fn length_fits(&self, len: usize) -> bool {
        let body = len - self.header;
        body >= self.tail() && (body - self.tail()).is_multiple_of(self.hash)
    }

    /// The entry at `index` as the input bytes have it.
    fn entry<'a>(&self, data: &'a [u8], index: u64) -> &'a [u8] {
        let at = self.header + index as usize * self.hash;
        &data[at..at + self.hash]
    }

    /// Checks a returned entry: the input's bytes, zero padded to 32.
    fn check_entry(&self, data: &[u8], index: u64, got: &[u8; 32], who: &str) {
        assert_eq!(
            &got[..self.hash],
            self.entry(data, index),
            "{who}: entry {index}"
        );
        assert!(
            got[self.hash..].iter().all(|&b| b == 0),
            "{who}: entry {index} is not zero padded"
        );
    }
}

/// The fingerprint of a v2 digest: BLAKE3 over a tag, the block size, the
/// algorithm, the generation, the hashes and the source size.
fn fingerprint(header: &[u8], hashes: &[u8], source_size: u64) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(FINGERPRINT_TAG);
    h.update(&header[12..16]);
    h.update(&header[32..33]);
    h.update(&header[24..32]);
    h.update(hashes);
    h.update(&source_size.to_le_bytes());
    *h.finalize().as_bytes()
}

/// What a v2 trailer holds.
#[derive(Debug, Clone, Copy)]
struct Trailer {
    source_size: u64,
    fingerprint: [u8; 32],
    /// The stored fingerprint matches the content.
    fingerprint_ok: bool,
}

/// The trailer of a v2 digest whose length fits its header, when it is
/// valid in everything a file open checks: end marker, CRC, an entry count
/// that matches the length and fits the source size, and a source size
/// that matches the header's.
fn v2_trailer(l: &Layout, data: &[u8]) -> Option<Trailer> {
    let at = data.len() - V2_TRAILER;
    let t = &data[at..];
    if &t[52..56] != V2_END_MAGIC || u32_at(t, 48) != crc32fast::hash(&t[..48]) {
        return None;
    }
    let entries = u64_at(t, 0);
    let source_size = u64_at(t, 8);
    if entries != l.entries_read(data.len())
        || source_size.div_ceil(u64::from(l.block_size)) != entries
        || (l.source_size != UNKNOWN_SIZE && l.source_size != source_size)
    {
        return None;
    }
    let stored: [u8; 32] = t[16..48].try_into().expect("32 bytes");
    Some(Trailer {
        source_size,
        fingerprint: stored,
        fingerprint_ok: fingerprint(&data[..V2_HEADER], &data[V2_HEADER..at], source_size)
            == stored,
    })
}

/// What the bytes are, as the target predicts.
struct Expect {
    layout: Option<Layout>,
    /// A file open succeeds (everything but the fingerprint is valid).
    opens: bool,
    /// A full read succeeds.
    reads: bool,
    /// Entries in a file that opens.
    entries: u64,
    trailer: Option<Trailer>,
}

fn expect(data: &[u8]) -> Expect {
    let layout = Layout::of(data);
    let mut e = Expect {
        layout,
        opens: false,
        reads: false,
        entries: 0,
        trailer: None,
    };
    let Some(l) = layout else { return e };
    if !l.length_fits(data.len()) {
        return e;
    }
    e.entries = l.entries_read(data.len());
    match l.format {
        DigestFormat::Legacy => {
            e.opens = true;
            e.reads = true;
        }
        DigestFormat::V2 => {
            e.trailer = v2_trailer(&l, data);
            e.opens = e.trailer.is_some();
            e.reads = e.trailer.is_some_and(|t| t.fingerprint_ok);
        }
    }
    e
}

/// Checks what a reader or file says of its header and trailer.
fn check_spec(spec: &blockdiff_core::DigestSpec, l: &Layout, who: &str) {
    assert_eq!(spec.format, l.format, "{who}: format");
    assert_eq!(spec.algorithm, l.algorithm, "{who}: algorithm");
    assert_eq!(spec.block_size.get(), l.block_size, "{who}: block size");
    assert_eq!(spec.generation, l.generation, "{who}: generation");
    assert_eq!(spec.source_size, l.source_size, "{who}: source size");
}

fn check(data: &[u8]) {
    let len = data.len();
    let want = expect(data);

    // As a stream: read every entry.
    let full_read = match DigestReader::new(data, "fuzz") {
        Err(e) => {
            assert!(want.layout.is_none(), "a valid header was rejected: {e}");
            false
        }
        Ok(mut r) => {
            let l = want.layout.expect("an invalid header was accepted");
            check_spec(r.spec(), &l, "stream");
            assert_eq!(r.block_size().get(), l.block_size);
            assert_eq!(r.algorithm(), l.algorithm);
            assert_eq!(r.entries(), None, "a stream cannot know its entry count");
            let mut n = 0u64;
            let ok = loop {
                match r.next_entry() {
                    Ok(Some(h)) => {
                        l.check_entry(data, n, &h, "stream");
                        n += 1;
                    }
                    Ok(None) => {
                        assert!(
                            l.length_fits(len),
                            "a full read succeeded on {len} bytes, not {} + {}·n + {}",
                            l.header,
                            l.hash,
                            l.tail()
                        );
                        break true;
                    }
                    Err(_) => break false,
                }
            };
            assert_eq!(n, l.entries_read(len), "entries read before the end");
            if ok {
                // Finished: it stays finished.
                assert_eq!(r.next_entry().ok(), Some(None), "next_entry after the end");
                assert!(r.finish().is_ok(), "finish after the end");
                if l.format == DigestFormat::V2 {
                    let t = want
                        .trailer
                        .expect("read a v2 digest with no valid trailer");
                    assert_eq!(r.fingerprint(), Some(t.fingerprint), "stream fingerprint");
                    assert_eq!(r.source_size(), Some(t.source_size), "stream source size");
                }
            }
            ok
        }
    };
    assert_eq!(full_read, want.reads, "stream read outcome");

    // As a file.
    let path = scratch_path();
    std::fs::write(path, data).expect("write scratch file");

    match DigestReader::open(path) {
        Ok(mut r) => {
            assert!(
                want.opens,
                "open accepted a digest with a bad length or trailer"
            );
            let l = want.layout.expect("checked by opens");
            check_spec(r.spec(), &l, "open");
            assert_eq!(
                r.entries(),
                Some(want.entries),
                "entries() of an opened file"
            );
            assert_eq!(
                r.fingerprint(),
                want.trailer.map(|t| t.fingerprint),
                "fingerprint() of an opened file"
            );
            assert_eq!(
                r.source_size(),
                want.trailer.map(|t| t.source_size),
                "source_size() of an opened file"
            );
            let mut got = 0u64;
            let ok = loop {
                match r.next_entry() {
                    Ok(Some(h)) => {
                        l.check_entry(data, got, &h, "open");
                        got += 1;
                    }
                    Ok(None) => break true,
                    Err(_) => break false,
                }
            };
            assert_eq!(got, want.entries, "entries read from an opened file");
            assert_eq!(ok, want.reads, "reading an opened file to its end");
        }
        Err(_) => assert!(!want.opens, "open rejected a well-formed digest"),
    }

    match DigestFile::open(path) {
        Ok(mut d) => {
            assert!(
                want.opens,
                "DigestFile accepted a digest with a bad length or trailer"
            );
            let l = want.layout.expect("checked by opens");
            let n = want.entries;
            check_spec(d.spec(), &l, "DigestFile");
            assert_eq!(d.entries(), n, "DigestFile::entries");
            assert_eq!(d.block_size().get(), l.block_size);
            assert_eq!(d.fingerprint(), want.trailer.map(|t| t.fingerprint));
            assert_eq!(d.source_size(), want.trailer.map(|t| t.source_size));
            // A few indexes derived from the input (its last bytes), plus
            // the edges and the window boundaries, in an order that moves
            // the window back and forth.
            let mut indexes = vec![0, n.saturating_sub(1), 4095, 4096, n, n + 1, u64::MAX];
            for chunk in data[l.header..].rchunks(8).take(4) {
                let mut b = [0u8; 8];
                b[..chunk.len()].copy_from_slice(chunk);
                indexes.push(u64::from_le_bytes(b) % (n + 2));
            }
            for i in indexes {
                match d.entry(i).expect("entry of a checked file") {
                    Some(h) => {
                        assert!(i < n, "entry {i} returned, beyond {n} entries");
                        l.check_entry(data, i, &h, "DigestFile");
                    }
                    None => assert!(i >= n, "entry {i} missing, of {n}"),
                }
            }
            assert_eq!(d.verify().is_ok(), want.reads, "DigestFile::verify");
        }
        Err(_) => assert!(!want.opens, "DigestFile rejected a well-formed digest"),
    }

    let _ = std::fs::remove_file(path);
}

/// A v2 digest with its header CRC, fingerprint and trailer CRC recomputed
/// (the fingerprint over whatever lies between header and trailer).
fn fix_v2(data: &[u8]) -> Vec<u8> {
    let mut out = data.to_vec();
    if out.len() < V2_HEADER || out[..8] != DIGEST_MAGIC {
        return out;
    }
    let crc = crc32fast::hash(&out[..60]);
    out[60..64].copy_from_slice(&crc.to_le_bytes());
    if out.len() >= V2_HEADER + V2_TRAILER {
        let at = out.len() - V2_TRAILER;
        let source_size = u64_at(&out, at + 8);
        let fp = fingerprint(&out[..V2_HEADER], &out[V2_HEADER..at], source_size);
        out[at + 16..at + 48].copy_from_slice(&fp);
        let crc = crc32fast::hash(&out[at..at + 48]);
        out[at + 48..at + 52].copy_from_slice(&crc.to_le_bytes());
    }
    out
}

fuzz_target!(|data: &[u8]| {
    check(data);
    let fixed = fix_v2(data);
    if fixed != data {
        check(&fixed);
    }
});
