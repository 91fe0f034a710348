//! Fuzzes the sealed-file readers of encrypted chains
//! (archive-format/FORMAT.md §10): `SealedHeader::parse`,
//! `ChainKeys::for_header`, `SealedFile` (by offset) and `SealedReader`
//! (front to back), with the published test key (bytes 0x00..0x1f) that
//! sealed `testdata/v2-encrypted`.
//!
//! Two checks per input:
//! - **as a file**: any bytes are opened and read both ways; nothing may
//!   panic, and when both readers accept the whole file they must return
//!   the same plaintext (and the by-offset reader the same bytes at any
//!   offset);
//! - **as damage**: the input's tail is sealed as a plaintext with the test
//!   key, then changed as its first bytes say (a byte flipped, the file
//!   cut, a byte inserted, two segments swapped); every changed file must
//!   be refused by both readers, never read as other plaintext, and the
//!   unchanged one must read back exactly.
#![no_main]

use std::io::{Read, Write};
use std::path::Path;
use std::sync::OnceLock;

use archive_format::{
    ChainKey, ChainKeys, KeySecret, ReadAt, SEALED_HEADER_LEN, SealedContent, SealedFile,
    SealedHeader, SealedReader, SealedWriter,
};
use libfuzzer_sys::fuzz_target;

fn secret() -> KeySecret {
    let mut key = [0u8; 32];
    for (i, b) in key.iter_mut().enumerate() {
        *b = i as u8;
    }
    KeySecret::Key(ChainKey::from_bytes(key))
}

/// One chain of the test key, made once (its identity is random).
fn chain() -> &'static ChainKeys {
    static KEYS: OnceLock<ChainKeys> = OnceLock::new();
    KEYS.get_or_init(|| ChainKeys::new_chain(&secret()).expect("keys"))
}

const PATH: &str = "fuzz.sealed";

/// Reads the whole file by offset (in reads of `step` bytes).
fn read_at_all(f: &SealedFile<Vec<u8>>, step: usize) -> Option<Vec<u8>> {
    let len = usize::try_from(f.plain_len()).ok()?;
    let mut out = vec![0u8; len];
    let mut at = 0;
    while at < len {
        let end = (at + step).min(len);
        match f.read_at(&mut out[at..end], at as u64) {
            Ok(0) => panic!("a read at {at} of {len} returned nothing"),
            Ok(n) => at += n,
            Err(_) => return None,
        }
    }
    Some(out)
}

/// The plaintext of `data` read front to back, `None` if refused.
fn read_stream(data: &[u8], keys: &ChainKeys, content: SealedContent) -> Option<Vec<u8>> {
    let mut input = data;
    let (header, _) = SealedReader::read_header(&mut input, Path::new(PATH)).ok()?;
    let header = header?;
    let mut r = SealedReader::new(input, &header, keys, content, None, PATH).ok()?;
    let mut out = Vec::new();
    r.read_to_end(&mut out).ok()?;
    Some(out)
}

/// The plaintext of `data` read by offset, `None` if refused.
fn read_file(data: &[u8], keys: &ChainKeys, content: SealedContent) -> Option<Vec<u8>> {
    let f = SealedFile::open(data.to_vec(), keys, content, None, PATH).ok()?;
    let all = read_at_all(&f, 4096)?;
    // Unaligned reads agree with aligned ones.
    let odd = read_at_all(&f, 1000)?;
    assert_eq!(all, odd, "reads of 4096 and of 1000 bytes disagree");
    Some(all)
}

/// Any bytes, as a file of the test key's chains.
fn as_file(data: &[u8]) {
    let Ok(header) = SealedHeader::parse(data, Path::new(PATH)) else {
        return;
    };
    // Costs are bounded by the parser; keep the fuzzer fast all the same.
    if let archive_format::KeyDerivation::Argon2id { memory_kib, iterations, .. } = header.derivation
        && u64::from(memory_kib) * u64::from(iterations) > 64 << 10
    {
        return;
    }
    let Ok(keys) = ChainKeys::for_header(&secret(), &header, Path::new(PATH)) else {
        return;
    };
    let by_offset = read_file(data, &keys, header.content);
    let by_stream = read_stream(data, &keys, header.content);
    if let (Some(a), Some(b)) = (&by_offset, &by_stream) {
        assert_eq!(a, b, "the two readers disagree");
    }
    // A file that the stream reads whole is one that opens.
    if by_stream.is_some() {
        assert!(by_offset.is_some(), "a file read as a stream failed by offset");
    }
}

/// The input's tail sealed, then damaged as its first bytes say.
fn as_damage(data: &[u8]) {
    if data.len() < 4 {
        return;
    }
    let (how, at, value, plain) = (data[0], u16::from_le_bytes([data[1], data[2]]), data[3], &data[4..]);
    // Small segments, so that short inputs make several.
    let keys = chain();
    let mut header = keys.header_with_salt(SealedContent::Diff, 7, [how; 32]);
    header.segment_size = 4096;
    let mut w = SealedWriter::with_header(Vec::new(), keys, &header).expect("header");
    w.write_all(plain).expect("seal");
    let file = w.finish().expect("finish");
    assert_eq!(read_file(&file, keys, SealedContent::Diff).as_deref(), Some(plain));
    assert_eq!(read_stream(&file, keys, SealedContent::Diff).as_deref(), Some(plain));

    let mut bad = file.clone();
    let i = usize::from(at) % bad.len();
    match how % 4 {
        0 => bad[i] ^= value.max(1),
        1 => bad.truncate(i),
        2 => bad.insert(i, value),
        _ => {
            // Two segments swapped, when there are two.
            let stride = 4096 + 16;
            let body = bad.len() - SEALED_HEADER_LEN;
            if body < 2 * stride {
                return;
            }
            let a = SEALED_HEADER_LEN;
            let b = SEALED_HEADER_LEN + stride;
            let first = bad[a..a + stride].to_vec();
            let second = bad[b..b + stride].to_vec();
            if first == second {
                return;
            }
            bad[a..a + stride].copy_from_slice(&second);
            bad[b..b + stride].copy_from_slice(&first);
        }
    }
    assert!(
        read_file(&bad, keys, SealedContent::Diff).is_none(),
        "damage {how} at {i} read by offset"
    );
    assert!(
        read_stream(&bad, keys, SealedContent::Diff).is_none(),
        "damage {how} at {i} read as a stream"
    );
}

fuzz_target!(|data: &[u8]| {
    as_file(data);
    // A header with its CRC recomputed reaches the checks behind it.
    if data.len() >= SEALED_HEADER_LEN {
        let mut fixed = data.to_vec();
        let crc = crc32fast::hash(&fixed[..124]);
        fixed[124..128].copy_from_slice(&crc.to_le_bytes());
        if fixed != data {
            as_file(&fixed);
        }
    }
    as_damage(data);
});
