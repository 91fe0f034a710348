use super::*;
use crate::HASH_LEN;

/// A stand-in for the hash of block `i` (hashing is blockdiff-core's):
/// distinct per block, filling `algorithm.len()` bytes as a real hash does.
fn hash_of(algorithm: HashAlgorithm, i: usize) -> BlockHash {
    let mut h = [0u8; HASH_LEN];
    let n = algorithm.len();
    h[..n].copy_from_slice(&blake3::hash(&i.to_le_bytes()).as_bytes()[..n]);
    h
}

fn write(spec: DigestSpec, n: usize) -> (Vec<u8>, Option<Fingerprint>) {
    let mut w = DigestWriter::new(Vec::new(), "t.digest");
    w.begin(&spec).unwrap();
    for i in 0..n {
        w.push(&hash_of(spec.algorithm, i)).unwrap();
    }
    let fp = w.end(n as u64 * u64::from(spec.block_size.get())).unwrap();
    (w.into_inner(), fp)
}

fn legacy(n: usize) -> Vec<u8> {
    write(DigestSpec::legacy(BlockSize::new(8).unwrap()), n).0
}

fn v2(algorithm: HashAlgorithm, n: usize) -> (Vec<u8>, Fingerprint) {
    let spec = DigestSpec {
        format: DigestFormat::V2,
        algorithm,
        block_size: BlockSize::new(8).unwrap(),
        generation: 7,
        source_size: n as u64 * 8,
    };
    let (bytes, fp) = write(spec, n);
    (bytes, fp.unwrap())
}

#[test]
fn truncated_legacy_file_is_reported_with_offset() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("x.md5");
    let mut bytes = legacy(3);
    bytes.truncate(bytes.len() - 5);
    std::fs::write(&p, &bytes).unwrap();
    let e = DigestReader::open(&p).unwrap_err().to_string();
    assert!(
        e.contains("x.md5") && e.contains("offset 36") && e.contains("not 4 + 16·n"),
        "{e}"
    );
    let e = DigestFile::open(&p).unwrap_err().to_string();
    assert!(e.contains("offset 36"), "{e}");
    std::fs::write(&p, [1u8, 0]).unwrap();
    let e = DigestReader::open(&p).unwrap_err().to_string();
    assert!(e.contains("too short"), "{e}");
    std::fs::write(&p, [0u8; 4]).unwrap();
    let e = DigestReader::open(&p).unwrap_err().to_string();
    assert!(e.contains("invalid block size 0"), "{e}");
}

#[test]
fn legacy_stream_cut_inside_entry() {
    let bytes = legacy(2);
    let mut r = DigestReader::new(&bytes[..bytes.len() - 1], "s").unwrap();
    assert!(r.next_entry().unwrap().is_some());
    let e = r.next_entry().unwrap_err().to_string();
    assert!(e.contains("offset 20") && e.contains("entry 1"), "{e}");
}

#[test]
fn random_access_across_windows() {
    let dir = tempfile::tempdir().unwrap();
    for (name, bytes, algo) in [
        ("big.md5", legacy(8199), HashAlgorithm::Md5),
        (
            "big.digest",
            v2(HashAlgorithm::Blake3, 8199).0,
            HashAlgorithm::Blake3,
        ),
    ] {
        let p = dir.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        let mut d = DigestFile::open(&p).unwrap();
        assert_eq!(d.entries(), 8199);
        assert_eq!(d.block_size().get(), 8);
        for i in [8198usize, 0, 4096, 4095, 3] {
            assert_eq!(
                d.entry(i as u64).unwrap(),
                Some(hash_of(algo, i)),
                "{name} entry {i}"
            );
        }
        assert_eq!(d.entry(8199).unwrap(), None);
        d.verify().unwrap();
    }
}

#[test]
fn v2_round_trip_with_fingerprint() {
    let dir = tempfile::tempdir().unwrap();
    for algo in [HashAlgorithm::Md5, HashAlgorithm::Blake3] {
        let (bytes, fp) = v2(algo, 100);
        assert_eq!(bytes.len(), 64 + 100 * algo.len() + 56);
        let p = dir.path().join("g.digest");
        std::fs::write(&p, &bytes).unwrap();
        let mut r = DigestReader::open(&p).unwrap();
        assert_eq!(r.spec().format, DigestFormat::V2);
        assert_eq!(
            (r.algorithm(), r.spec().generation, r.entries()),
            (algo, 7, Some(100))
        );
        assert_eq!(r.fingerprint(), Some(fp));
        for i in 0..100usize {
            assert_eq!(r.next_entry().unwrap(), Some(hash_of(algo, i)));
        }
        assert_eq!(r.next_entry().unwrap(), None);
        // Streamed, the trailer is found by look-ahead.
        let mut s = DigestReader::new(&bytes[..], "pipe").unwrap();
        s.finish().unwrap();
        assert_eq!(s.fingerprint(), Some(fp));
    }
}

#[test]
fn v2_damage_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("g.digest");
    let (bytes, _) = v2(HashAlgorithm::Blake3, 10);
    // A flipped hash byte: the fingerprint no longer matches.
    let mut bad = bytes.clone();
    bad[64 + 5 * 32 + 3] ^= 1;
    std::fs::write(&p, &bad).unwrap();
    let mut r = DigestReader::open(&p).unwrap();
    let e = r.finish().unwrap_err().to_string();
    assert!(
        e.contains("g.digest") && e.contains("fingerprint does not match"),
        "{e}"
    );
    assert!(DigestFile::open(&p).unwrap().verify().is_err());
    // A flipped header byte.
    let mut bad = bytes.clone();
    bad[13] ^= 1;
    std::fs::write(&p, &bad).unwrap();
    let e = DigestReader::open(&p).unwrap_err().to_string();
    assert!(e.contains("header CRC32 mismatch"), "{e}");
    // Truncated anywhere.
    for cut in [1, 63, 64, 100, bytes.len() - 56, bytes.len() - 1] {
        std::fs::write(&p, &bytes[..cut]).unwrap();
        assert!(DigestReader::open(&p).is_err(), "cut at {cut}");
        assert!(DigestFile::open(&p).is_err(), "cut at {cut}");
        let streamed = DigestReader::new(&bytes[..cut], "pipe").and_then(|mut r| r.finish());
        assert!(streamed.is_err(), "streamed cut at {cut}");
    }
}

#[test]
fn writer_checks_its_use() {
    let mut w = DigestWriter::new(Vec::new(), "w");
    assert!(w.push(&[0; 32]).is_err());
    let spec = DigestSpec {
        algorithm: HashAlgorithm::Blake3,
        ..DigestSpec::legacy(BlockSize::new(8).unwrap())
    };
    assert!(w.begin(&spec).is_err(), "legacy digests are MD5 only");
    let mut w = DigestWriter::new(Vec::new(), "w");
    w.begin(&DigestSpec::legacy(BlockSize::new(8).unwrap()))
        .unwrap();
    w.push(&[0; 32]).unwrap();
    assert!(w.end(100).is_err(), "one entry cannot describe 100 bytes");
}
