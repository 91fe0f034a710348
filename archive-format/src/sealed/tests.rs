use super::*;

use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use proptest::prelude::*;

use crate::error::ArchiveError;
use crate::v2::ReadAt;

/// Small segments, so that a few kilobytes make several of them.
const SEG: u32 = 4096;

fn key(byte: u8) -> KeySecret {
    KeySecret::Key(ChainKey::from_bytes([byte; 32]))
}

fn chain(byte: u8) -> ChainKeys {
    ChainKeys::new_chain(&key(byte)).unwrap()
}

fn header(keys: &ChainKeys, content: SealedContent, generation: u64, salt: u8) -> SealedHeader {
    let mut h = keys.header_with_salt(content, generation, [salt; 32]);
    h.segment_size = SEG;
    h
}

fn seal(keys: &ChainKeys, h: &SealedHeader, plain: &[u8]) -> Vec<u8> {
    let mut w = SealedWriter::with_header(Vec::new(), keys, h).unwrap();
    w.write_all(plain).unwrap();
    w.finish().unwrap()
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 9) as u8)
        .collect()
}

fn open(
    file: Vec<u8>,
    keys: &ChainKeys,
    content: SealedContent,
    generation: Option<u64>,
) -> crate::Result<SealedFile<Vec<u8>>> {
    SealedFile::open(file, keys, content, generation, "chain.2.diff")
}

/// Reads a whole sealed file by offset, in reads of `step` bytes.
fn read_all_at(f: &SealedFile<Vec<u8>>, step: usize) -> io::Result<Vec<u8>> {
    let mut out = vec![0u8; f.plain_len() as usize];
    let mut at = 0;
    while at < out.len() {
        let end = (at + step).min(out.len());
        let n = f.read_at(&mut out[at..end], at as u64)?;
        assert!(n > 0);
        at += n;
    }
    Ok(out)
}

/// Reads a whole sealed file front to back.
fn read_stream(file: &[u8], keys: &ChainKeys, generation: Option<u64>) -> crate::Result<Vec<u8>> {
    let mut input = file;
    let path = Path::new("chain.2.diff");
    let (h, _) = SealedReader::read_header(&mut input, path)?;
    let Some(h) = h else {
        return Err(ArchiveError::InvalidValue {
            detail: "not sealed".into(),
        });
    };
    let mut r = SealedReader::new(input, &h, keys, SealedContent::Diff, generation, path)?;
    let mut out = Vec::new();
    r.read_to_end(&mut out).map_err(|e| ArchiveError::Io {
        offset: 0,
        source: e,
    })?;
    Ok(out)
}

/// The sizes at and around segment boundaries.
fn sizes() -> Vec<usize> {
    let s = SEG as usize;
    vec![0, 1, s - 1, s, s + 1, 2 * s, 3 * s + 5]
}

#[test]
fn round_trip_by_offset_and_by_stream() {
    let keys = chain(1);
    for len in sizes() {
        let plain = pattern(len, 7);
        let h = header(&keys, SealedContent::Diff, 2, 9);
        let file = seal(&keys, &h, &plain);
        let segments = len.div_ceil(SEG as usize).max(1);
        assert_eq!(
            file.len(),
            SEALED_HEADER_LEN + len + segments * TAG_LEN,
            "{len} bytes"
        );
        let f = open(file.clone(), &keys, SealedContent::Diff, Some(2)).unwrap();
        assert_eq!(f.plain_len(), len as u64);
        assert_eq!(f.header(), &h);
        for step in [1, 100, SEG as usize, 3 * SEG as usize + 17] {
            assert_eq!(
                read_all_at(&f, step).unwrap(),
                plain,
                "{len} bytes by {step}"
            );
        }
        // Reads past the end return nothing.
        let mut b = [0u8; 4];
        assert_eq!(f.read_at(&mut b, len as u64).unwrap(), 0);
        assert_eq!(read_stream(&file, &keys, Some(2)).unwrap(), plain);
    }
}

/// Writes accepting one byte at a time, and reads returning one byte at a
/// time, give the same file and plaintext.
#[test]
fn short_writes_and_short_reads() {
    struct OneByte<T>(T);
    impl Write for OneByte<Vec<u8>> {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.extend_from_slice(&b[..b.len().min(1)]);
            Ok(b.len().min(1))
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    impl Read for OneByte<&[u8]> {
        fn read(&mut self, b: &mut [u8]) -> io::Result<usize> {
            if b.is_empty() || self.0.is_empty() {
                return Ok(0);
            }
            b[0] = self.0[0];
            self.0 = &self.0[1..];
            Ok(1)
        }
    }
    impl ReadAt for OneByte<Vec<u8>> {
        fn read_at(&self, b: &mut [u8], offset: u64) -> io::Result<usize> {
            let n = b.len().min(1);
            self.0.read_at(&mut b[..n], offset)
        }
        fn size(&self) -> io::Result<u64> {
            Ok(self.0.len() as u64)
        }
    }
    let keys = chain(1);
    let plain = pattern(2 * SEG as usize + 3, 1);
    let h = header(&keys, SealedContent::Digest, 5, 2);
    let mut w = SealedWriter::with_header(OneByte(Vec::new()), &keys, &h).unwrap();
    for piece in plain.chunks(777) {
        w.write_all(piece).unwrap();
    }
    let file = w.finish().unwrap().0;
    assert_eq!(file, seal(&keys, &h, &plain));

    let f = SealedFile::open(
        OneByte(file.clone()),
        &keys,
        SealedContent::Digest,
        Some(5),
        "x",
    )
    .unwrap();
    let mut out = vec![0u8; plain.len()];
    let mut at = 0;
    while at < out.len() {
        at += f.read_at(&mut out[at..], at as u64).unwrap();
    }
    assert_eq!(out, plain);

    let mut input = OneByte(&file[..]);
    let (h2, _) = SealedReader::read_header(&mut input, Path::new("x")).unwrap();
    let mut r = SealedReader::new(
        input,
        &h2.unwrap(),
        &keys,
        SealedContent::Digest,
        Some(5),
        "x",
    )
    .unwrap();
    let mut out = Vec::new();
    r.read_to_end(&mut out).unwrap();
    assert_eq!(out, plain);
}

#[test]
fn two_files_of_one_chain_share_nothing_but_the_chain() {
    let keys = chain(0xa5);
    let plain = pattern(1000, 3);
    let a = seal(&keys, &header(&keys, SealedContent::Diff, 2, 1), &plain);
    let b = seal(&keys, &header(&keys, SealedContent::Diff, 2, 2), &plain);
    assert_ne!(a[SEALED_HEADER_LEN..], b[SEALED_HEADER_LEN..]);
    // The random salts of new_header differ from file to file.
    let h1 = keys.new_header(SealedContent::Diff, 2).unwrap();
    let h2 = keys.new_header(SealedContent::Diff, 2).unwrap();
    assert_ne!(h1.file_salt, h2.file_salt);
    // Neither the key nor the plaintext appears in the file.
    assert!(a.windows(32).all(|w| w != [0xa5u8; 32]));
    assert!(a.windows(64).all(|w| w != &plain[..64]));
}

/// Every byte of a three-segment file flipped in turn: refused at open or
/// at read, by both readers, and never read as other plaintext.
#[test]
fn every_flipped_byte_is_refused() {
    let keys = chain(1);
    let plain = pattern(2 * SEG as usize + 100, 4);
    let file = seal(&keys, &header(&keys, SealedContent::Diff, 2, 5), &plain);
    for at in 0..file.len() {
        let mut bad = file.clone();
        bad[at] ^= 0x40;
        let by_offset = open(bad.clone(), &keys, SealedContent::Diff, Some(2)).and_then(|f| {
            read_all_at(&f, 1000).map_err(|e| ArchiveError::Io {
                offset: 0,
                source: e,
            })
        });
        assert!(by_offset.is_err(), "flip at {at} read by offset");
        let by_stream = read_stream(&bad, &keys, Some(2));
        assert!(by_stream.is_err(), "flip at {at} read as a stream");
    }
}

/// The error of a flipped body byte names the file and its segment's
/// offset, and says tampering, not a wrong key.
#[test]
fn damage_is_named_with_file_and_offset() {
    let keys = chain(1);
    let plain = pattern(3 * SEG as usize, 4);
    let mut file = seal(&keys, &header(&keys, SealedContent::Diff, 2, 5), &plain);
    let seg1 = SEALED_HEADER_LEN + SEG as usize + TAG_LEN;
    file[seg1 + 10] ^= 1;
    let f = open(file, &keys, SealedContent::Diff, Some(2)).unwrap();
    let mut buf = [0u8; 10];
    f.read_at(&mut buf, 5).unwrap();
    let err = f.read_at(&mut buf, u64::from(SEG) + 5).unwrap_err();
    let text = format!("{}", err.get_ref().unwrap());
    assert!(text.contains("chain.2.diff"), "{text}");
    assert!(text.contains(&format!("{seg1}")), "{text}");
    assert!(text.contains("segment 1"), "{text}");
    let inner = err
        .into_inner()
        .unwrap()
        .downcast::<ArchiveError>()
        .unwrap();
    assert!(matches!(*inner, ArchiveError::Tampered { segment: 1, .. }));
}

#[test]
fn segments_swapped_or_moved_are_refused() {
    let keys = chain(1);
    let plain = pattern(3 * SEG as usize, 6);
    let h = header(&keys, SealedContent::Diff, 2, 5);
    let file = seal(&keys, &h, &plain);
    let stride = SEG as usize + TAG_LEN;
    let seg = |f: &[u8], i: usize| {
        f[SEALED_HEADER_LEN + i * stride..SEALED_HEADER_LEN + (i + 1) * stride].to_vec()
    };
    let rebuild = |segs: &[Vec<u8>], head: &[u8]| {
        let mut out = head.to_vec();
        for s in segs {
            out.extend_from_slice(s);
        }
        out
    };
    let head = &file[..SEALED_HEADER_LEN];
    let (s0, s1, s2) = (seg(&file, 0), seg(&file, 1), seg(&file, 2));

    // Swapped within the file.
    let swapped = rebuild(&[s1.clone(), s0.clone(), s2.clone()], head);
    let f = open(swapped.clone(), &keys, SealedContent::Diff, Some(2)).unwrap();
    assert!(read_all_at(&f, 4096).is_err());
    assert!(read_stream(&swapped, &keys, Some(2)).is_err());

    // The last segment put first, a middle one put last.
    let moved = rebuild(&[s2.clone(), s1.clone(), s0.clone()], head);
    assert!(open(moved.clone(), &keys, SealedContent::Diff, Some(2)).is_err());
    assert!(read_stream(&moved, &keys, Some(2)).is_err());

    // A segment from another generation's file (its own header kept).
    let other = seal(&keys, &header(&keys, SealedContent::Diff, 3, 6), &plain);
    let mixed = rebuild(&[s0.clone(), seg(&other, 1), s2.clone()], head);
    let f = open(mixed.clone(), &keys, SealedContent::Diff, Some(2)).unwrap();
    assert!(read_all_at(&f, 4096).is_err());
    assert!(read_stream(&mixed, &keys, Some(2)).is_err());

    // The same plaintext and position in a file of another chain with the
    // same key.
    let keys2 = ChainKeys::new_chain(&key(1)).unwrap();
    let foreign = seal(&keys2, &header(&keys2, SealedContent::Diff, 2, 5), &plain);
    let mixed = rebuild(&[s0, seg(&foreign, 1), s2], head);
    let f = open(mixed.clone(), &keys, SealedContent::Diff, Some(2)).unwrap();
    assert!(read_all_at(&f, 4096).is_err());
    assert!(read_stream(&mixed, &keys, Some(2)).is_err());
}

/// A file cut at any length, segment boundaries included, is refused when
/// opened, and as a stream before its end is reached.
#[test]
fn every_truncation_is_refused() {
    let keys = chain(1);
    let plain = pattern(2 * SEG as usize + 50, 8);
    let file = seal(&keys, &header(&keys, SealedContent::Diff, 2, 5), &plain);
    let stride = SEG as usize + TAG_LEN;
    for len in 0..file.len() {
        let cut = file[..len].to_vec();
        let opened = open(cut.clone(), &keys, SealedContent::Diff, Some(2));
        let err = match opened {
            Ok(_) => panic!("a file cut to {len} bytes was opened"),
            Err(e) => e,
        };
        let boundary = len > SEALED_HEADER_LEN && (len - SEALED_HEADER_LEN).is_multiple_of(stride);
        if boundary {
            assert!(
                format!("{err}").contains("cut short"),
                "cut at the boundary {len}: {err}"
            );
        }
        if len >= SEALED_HEADER_LEN {
            assert!(
                read_stream(&cut, &keys, Some(2)).is_err(),
                "stream cut to {len}"
            );
        }
    }
}

#[test]
fn wrong_key_is_told_apart_from_damage() {
    let keys = chain(1);
    let h = header(&keys, SealedContent::Diff, 2, 5);
    let file = seal(&keys, &h, b"hello");
    // The same chain with another key: what a reader gets from its header.
    let parsed = SealedHeader::parse(&file, Path::new("c.2.diff")).unwrap();
    let err = ChainKeys::for_header(&key(2), &parsed, Path::new("c.2.diff")).unwrap_err();
    assert!(matches!(err, ArchiveError::WrongKey { .. }), "{err}");
    let right = ChainKeys::for_header(&key(1), &parsed, Path::new("c.2.diff")).unwrap();
    let f = open(file.clone(), &right, SealedContent::Diff, Some(2)).unwrap();
    assert_eq!(read_all_at(&f, 100).unwrap(), b"hello");
    // A passphrase for a key-file chain says which is needed.
    let err = ChainKeys::for_header(
        &KeySecret::Passphrase(zeroize::Zeroizing::new(b"pw".to_vec())),
        &parsed,
        Path::new("c.2.diff"),
    )
    .unwrap_err();
    assert!(format!("{err}").contains("key file"), "{err}");
}

#[test]
fn a_file_in_another_files_place_is_refused() {
    let keys = chain(1);
    let diff = seal(&keys, &header(&keys, SealedContent::Diff, 2, 5), b"x");
    // Another generation's file under this generation's name.
    let err = open(diff.clone(), &keys, SealedContent::Diff, Some(3))
        .err()
        .unwrap();
    assert!(format!("{err}").contains("generation 2"), "{err}");
    // A diff in the digest's place.
    let err = open(diff.clone(), &keys, SealedContent::Digest, Some(2))
        .err()
        .unwrap();
    assert!(format!("{err}").contains("holds a diff"), "{err}");
    // A file of another chain.
    let other = chain(1);
    let err = open(diff.clone(), &other, SealedContent::Diff, Some(2))
        .err()
        .unwrap();
    assert!(format!("{err}").contains("another chain"), "{err}");
    // A plain file in an encrypted chain.
    let err = open(b"plain bytes".to_vec(), &keys, SealedContent::Diff, Some(2))
        .err()
        .unwrap();
    assert!(format!("{err}").contains("not encrypted"), "{err}");
}

#[test]
fn passphrase_chains_open_with_the_passphrase_only() {
    let pass = |p: &[u8]| KeySecret::Passphrase(zeroize::Zeroizing::new(p.to_vec()));
    let keys = ChainKeys::new_chain_with_cost(&pass(b"correct horse"), (64, 1, 1)).unwrap();
    let KeyDerivation::Argon2id {
        memory_kib, salt, ..
    } = keys.derivation()
    else {
        panic!("not a passphrase chain");
    };
    assert_eq!(memory_kib, 64);
    assert_ne!(salt, [0; 16]);
    let file = seal(&keys, &header(&keys, SealedContent::Metadata, 1, 1), b"{}");
    let parsed = SealedHeader::parse(&file, Path::new("m")).unwrap();
    let again = ChainKeys::for_header(&pass(b"correct horse"), &parsed, Path::new("m")).unwrap();
    assert_eq!(again.block_hash_key(), keys.block_hash_key());
    let f = SealedFile::open(file, &again, SealedContent::Metadata, Some(1), "m").unwrap();
    assert_eq!(f.plain_len(), 2);
    let err = ChainKeys::for_header(&pass(b"wrong horse"), &parsed, Path::new("m")).unwrap_err();
    assert!(matches!(err, ArchiveError::WrongKey { .. }), "{err}");
    let err = ChainKeys::for_header(&key(1), &parsed, Path::new("m")).unwrap_err();
    assert!(format!("{err}").contains("passphrase"), "{err}");
    // A cost above what readers accept is refused when the chain starts.
    assert!(ChainKeys::new_chain_with_cost(&pass(b"x"), (4 << 20, 1, 1)).is_err());
}

#[test]
fn the_block_hash_key_depends_on_key_and_chain() {
    let a = chain(1);
    let b = chain(1);
    let c = chain(2);
    assert_ne!(a.block_hash_key(), b.block_hash_key());
    assert_ne!(a.block_hash_key(), c.block_hash_key());
    assert_ne!(a.block_hash_key(), &[1u8; 32]);
}

#[test]
fn a_header_with_out_of_range_fields_is_refused() {
    let keys = chain(1);
    let good = header(&keys, SealedContent::Diff, 2, 5).encode();
    let path = Path::new("h");
    assert!(SealedHeader::parse(&good, path).is_ok());
    assert!(SealedHeader::parse(&good[..100], path).is_err());
    let recrc = |mut h: [u8; SEALED_HEADER_LEN]| {
        let crc = crc32fast::hash(&h[..124]);
        h[124..].copy_from_slice(&crc.to_le_bytes());
        h
    };
    for (at, value) in [
        (8, 2u8),
        (10, 64),
        (12, 9),
        (13, 2),
        (14, 3),
        (15, 1),
        (17, 0x30),
        (19, 1),
        (121, 1),
    ] {
        let mut h = good;
        h[at] = value;
        let h = recrc(h);
        assert!(
            SealedHeader::parse(&h, path).is_err(),
            "byte {at} = {value}"
        );
    }
    // Argon2id costs above the limits are refused before any stretching.
    let pass = KeySecret::Passphrase(zeroize::Zeroizing::new(b"p".to_vec()));
    let pkeys = ChainKeys::new_chain_with_cost(&pass, (64, 1, 1)).unwrap();
    let mut h = header(&pkeys, SealedContent::Diff, 2, 5).encode();
    h[20..24].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(SealedHeader::parse(&recrc(h), path).is_err());
}

#[test]
fn key_files_are_private_and_never_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("chain.key");
    let k = ChainKey::generate().unwrap();
    write_key_file(&path, &k).unwrap();
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert_eq!(read_key_file(&path).unwrap().as_bytes(), k.as_bytes());
    // Never overwritten.
    let err = write_key_file(&path, &ChainKey::generate().unwrap()).unwrap_err();
    assert!(format!("{err}").contains("already exists"), "{err}");
    assert_eq!(read_key_file(&path).unwrap().as_bytes(), k.as_bytes());
    // Nor through a symbolic link, dangling or not.
    let link = dir.path().join("link.key");
    std::os::unix::fs::symlink(dir.path().join("elsewhere"), &link).unwrap();
    assert!(write_key_file(&link, &k).is_err());
    assert!(!dir.path().join("elsewhere").exists());
    // Readable by the group: refused, with the fix.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
    let err = read_key_file(&path).unwrap_err();
    assert!(format!("{err}").contains("chmod 600"), "{err}");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    // Damaged, empty or foreign files.
    for (name, text) in [
        ("empty", "# nothing\n"),
        ("short", "blockdiff-key-v1:abcd\n"),
        (
            "two",
            "blockdiff-key-v1:00000000000000000000000000000000000000000000000000000000000000aa\nblockdiff-key-v1:00000000000000000000000000000000000000000000000000000000000000bb\n",
        ),
        ("ssh", "-----BEGIN OPENSSH PRIVATE KEY-----\n"),
    ] {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(read_key_file(&p).is_err(), "{name}");
    }
    // A directory is not a key file.
    assert!(read_key_file(dir.path()).is_err());
}

#[test]
fn passphrase_files_give_their_first_line() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("pass");
    std::fs::write(&p, "s3cret phrase\r\nignored\n").unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(&read_passphrase_file(&p).unwrap()[..], b"s3cret phrase");
    std::fs::write(&p, "\n").unwrap();
    assert!(read_passphrase_file(&p).is_err());
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o604)).unwrap();
    assert!(read_passphrase_file(&p).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Any plaintext written in any pieces reads back whole, by offset at
    /// any position and as a stream.
    #[test]
    fn any_plaintext_round_trips(
        plain in proptest::collection::vec(any::<u8>(), 0..20_000),
        pieces in proptest::collection::vec(1usize..5000, 1..8),
        reads in proptest::collection::vec((0u64..21_000, 1usize..9000), 1..8),
    ) {
        let keys = chain(3);
        let h = header(&keys, SealedContent::Diff, 7, 1);
        let mut w = SealedWriter::with_header(Vec::new(), &keys, &h).unwrap();
        let mut rest = &plain[..];
        let mut i = 0;
        while !rest.is_empty() {
            let n = pieces[i % pieces.len()].min(rest.len());
            w.write_all(&rest[..n]).unwrap();
            rest = &rest[n..];
            i += 1;
        }
        prop_assert_eq!(w.bytes_written(), (SEALED_HEADER_LEN + plain.len().saturating_sub(1) / SEG as usize * (SEG as usize + TAG_LEN)) as u64);
        let file = w.finish().unwrap();
        let f = open(file.clone(), &keys, SealedContent::Diff, Some(7)).unwrap();
        for (at, len) in reads {
            let mut buf = vec![0u8; len];
            let n = f.read_at(&mut buf, at).unwrap();
            let start = (at as usize).min(plain.len());
            let end = (at as usize + len).min(plain.len());
            prop_assert_eq!(&buf[..n], &plain[start..end]);
        }
        prop_assert_eq!(read_stream(&file, &keys, Some(7)).unwrap(), plain);
    }

    /// Any damage (a byte changed, bytes cut, bytes inserted) is an error,
    /// never other plaintext.
    #[test]
    fn any_damage_is_an_error(
        len in 0usize..12_000,
        at in any::<prop::sample::Index>(),
        kind in 0u8..3,
        value in 1u8..=255,
    ) {
        let keys = chain(4);
        let plain = pattern(len, 2);
        let file = seal(&keys, &header(&keys, SealedContent::Diff, 2, 3), &plain);
        let i = at.index(file.len());
        let mut bad = file.clone();
        match kind {
            0 => bad[i] ^= value,
            1 => bad.truncate(i),
            _ => bad.insert(i, value),
        }
        let by_offset = open(bad.clone(), &keys, SealedContent::Diff, Some(2))
            .and_then(|f| read_all_at(&f, 3000).map_err(|e| ArchiveError::Io { offset: 0, source: e }));
        prop_assert!(by_offset.is_err());
        prop_assert!(read_stream(&bad, &keys, Some(2)).is_err());
    }
}

/// The worked example of FORMAT.md §10.7: the chain in
/// `testdata/v2-encrypted`, sealed with the published test key (bytes
/// 0x00..0x1f): its header fields, derived keys and first plaintext bytes
/// are those the specification states.
#[test]
fn the_worked_example_opens_with_the_published_key() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/v2-encrypted");
    let mut test_key = [0u8; 32];
    for (i, b) in test_key.iter_mut().enumerate() {
        *b = i as u8;
    }
    let secret = KeySecret::Key(ChainKey::from_bytes(test_key));
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let path = dir.join("chain.1.digest");
    let bytes = std::fs::read(&path).unwrap();
    let header = SealedHeader::parse(&bytes, &path).unwrap();
    assert_eq!(header.content, SealedContent::Digest);
    assert_eq!(header.generation, 1);
    assert_eq!(header.segment_size, SEGMENT_SIZE);
    assert_eq!(header.derivation, KeyDerivation::KeyFile);
    // The key check: BLAKE3 derive_key("blockdiff sealed v1 key check",
    // key ‖ chain id), first 16 bytes.
    let mut h = blake3::Hasher::new_derive_key("blockdiff sealed v1 key check");
    h.update(&test_key);
    h.update(&header.chain_id);
    assert_eq!(h.finalize().as_bytes()[..16], header.key_check);
    // The file key: derive_key("blockdiff sealed v1 file key", key ‖ salt).
    let mut h = blake3::Hasher::new_derive_key("blockdiff sealed v1 file key");
    h.update(&test_key);
    h.update(&header.file_salt);
    let file_key = *h.finalize().as_bytes();
    // Segment 0 (the only one) opened by hand: nonce 0 with the final
    // flag, the 128 header bytes as associated data.
    let unbound = ring::aead::UnboundKey::new(&ring::aead::AES_256_GCM, &file_key).unwrap();
    let key = ring::aead::LessSafeKey::new(unbound);
    let mut segment = bytes[SEALED_HEADER_LEN..].to_vec();
    let plain = key
        .open_in_place(
            super::nonce(0, true),
            ring::aead::Aad::from(&bytes[..SEALED_HEADER_LEN]),
            &mut segment,
        )
        .unwrap();
    assert_eq!(&plain[..8], crate::DIGEST_MAGIC);
    assert_eq!(plain.len(), 1752);
    assert_eq!(plain[32], 3, "keyed BLAKE3");
    assert_eq!(hex(&header.chain_id), "15771efc8b0f558a77152300dad52fd5");
    assert_eq!(hex(&header.key_check), "02e4efab1224caad78dccd4d36ab135e");
    assert_eq!(
        hex(&file_key),
        "1fa80f6261c91c9033561a5554c393af9374e135f04335267c9dc460339842c0"
    );
    assert_eq!(hex(&plain[..16]), "894244470d0a1a0a0200400000100000");
    // Through the library, with the keys read from the header.
    let keys = ChainKeys::for_header(&secret, &header, &path).unwrap();
    let f = SealedFile::open(bytes, &keys, SealedContent::Digest, Some(1), &path).unwrap();
    assert_eq!(f.plain_len(), (segment.len() - TAG_LEN) as u64);
}
