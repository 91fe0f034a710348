//! Fuzzes the digest sidecar parsers of `blockdiff_core`: `DigestReader`
//! over a byte stream, and `DigestReader::open` and `DigestFile::open` (with
//! random access) over the same bytes written to a file.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use blockdiff_core::{DigestFile, DigestReader};
use libfuzzer_sys::fuzz_target;

const HEADER: usize = 4;
const ENTRY: usize = 16;

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
        dir.join(format!("blockdiff-fuzz-digest-{}.md5", std::process::id()))
    })
}

/// The entry at `index` as the input bytes have it.
fn expected(data: &[u8], index: u64) -> &[u8] {
    let at = HEADER + index as usize * ENTRY;
    &data[at..at + ENTRY]
}

fn header_ok(data: &[u8]) -> bool {
    data.len() >= HEADER && {
        let bs = u32::from_le_bytes([data[0], data[1], data[2], data[3]]);
        (1..=archive_format::MAX_BLOCK_SIZE).contains(&bs)
    }
}

fuzz_target!(|data: &[u8]| {
    let len = data.len();
    let well_formed = len >= HEADER && (len - HEADER).is_multiple_of(ENTRY);

    // As a stream: read every entry.
    let full_read = match DigestReader::new(data, "fuzz") {
        Err(_) => {
            assert!(!header_ok(data), "a valid header was rejected");
            None
        }
        Ok(mut r) => {
            assert!(header_ok(data), "an invalid header was accepted");
            assert_eq!(r.block_size().get().to_le_bytes(), data[..4]);
            assert_eq!(r.entries(), None, "a stream cannot know its entry count");
            let mut n = 0u64;
            loop {
                match r.next_entry() {
                    Ok(Some(h)) => {
                        assert_eq!(&h[..], expected(data, n), "entry {n}");
                        n += 1;
                    }
                    Ok(None) => {
                        assert!(
                            (len - HEADER).is_multiple_of(ENTRY),
                            "a full read succeeded on {len} bytes, not 4 + 16·n"
                        );
                        assert_eq!(n, ((len - HEADER) / ENTRY) as u64, "entry count");
                        break Some(n);
                    }
                    Err(_) => {
                        assert!(
                            !(len - HEADER).is_multiple_of(ENTRY),
                            "a 4 + 16·n digest failed to read at entry {n}"
                        );
                        assert_eq!(n, ((len - HEADER) / ENTRY) as u64, "failed early");
                        break None;
                    }
                }
            }
        }
    };
    assert_eq!(
        full_read.is_some(),
        header_ok(data) && well_formed,
        "stream read outcome"
    );

    // As a file.
    let path = scratch_path();
    std::fs::write(path, data).expect("write scratch file");

    match DigestReader::open(path) {
        Ok(mut r) => {
            let n = full_read.expect("open accepted what the stream reader rejects");
            assert_eq!(r.entries(), Some(n), "entries() of an opened file");
            let mut got = 0u64;
            while let Some(h) = r.next_entry().expect("reading a checked file") {
                assert_eq!(&h[..], expected(data, got), "entry {got}");
                got += 1;
            }
            assert_eq!(got, n, "entries read from an opened file");
        }
        Err(_) => assert!(full_read.is_none(), "open rejected a well-formed digest"),
    }

    match DigestFile::open(path) {
        Ok(mut d) => {
            let n = full_read.expect("DigestFile accepted what the stream reader rejects");
            assert_eq!(d.entries(), n, "DigestFile::entries");
            assert_eq!(d.block_size().get().to_le_bytes(), data[..4]);
            // A few indexes derived from the input (its last bytes), plus
            // the edges and the window boundaries, in an order that moves
            // the window back and forth.
            let mut indexes = vec![0, n.saturating_sub(1), 4095, 4096, n, n + 1, u64::MAX];
            for chunk in data[HEADER..].rchunks(8).take(4) {
                let mut b = [0u8; 8];
                b[..chunk.len()].copy_from_slice(chunk);
                indexes.push(u64::from_le_bytes(b) % (n + 2));
            }
            for i in indexes {
                match d.entry(i).expect("entry of a checked file") {
                    Some(h) => {
                        assert!(i < n, "entry {i} returned, beyond {n} entries");
                        assert_eq!(&h[..], expected(data, i), "entry {i}");
                    }
                    None => assert!(i >= n, "entry {i} missing, of {n}"),
                }
            }
        }
        Err(_) => assert!(
            full_read.is_none(),
            "DigestFile rejected a well-formed digest"
        ),
    }

    let _ = std::fs::remove_file(path);
});
