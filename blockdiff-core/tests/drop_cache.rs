//! `DumpOptions::drop_cache` while a dump runs: what has been hashed
//! leaves the page cache at once, not only at the end, even when the file
//! is cached in large folios that straddle the chunks; what is still to be
//! hashed stays.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::path::Path;

use blockdiff_core::{
    BlockSize, DiffSink, DigestFormat, DigestWriter, DumpOptions, DumpPlan, DumpSource,
    DumpedChunk, Fingerprint, NoEncoding, NoProgress, Result, dump,
};

const MIB: u64 = 1 << 20;
const SIZE: u64 = 32 * MIB;

/// Resident pages of `[from, to)` of a file: `mincore` on a mapping of it.
fn resident(file: &File, from: u64, to: u64) -> usize {
    if to <= from {
        return 0;
    }
    let len = (to - from) as usize;
    // SAFETY: a fresh read-only shared mapping of an open file at a
    // page-aligned offset (callers pass multiples of 1 MiB); its memory is
    // never touched, only its residency queried.
    let map = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            from as libc::off_t,
        )
    };
    assert_ne!(map, libc::MAP_FAILED, "mmap");
    let mut vec = vec![0u8; len.div_ceil(4096)];
    // SAFETY: `map` is a mapping of `len` bytes; `vec` has a byte for each
    // page of it (pages are at least 4 KiB).
    let r = unsafe { libc::mincore(map, len, vec.as_mut_ptr()) };
    // SAFETY: unmaps exactly the mapping made above.
    unsafe { libc::munmap(map, len) };
    assert_eq!(r, 0, "mincore: {}", std::io::Error::last_os_error());
    vec.iter().filter(|&&b| b & 1 == 1).count()
}

/// A sink that, at each chunk, counts the cached pages of the source
/// below the last 2 MiB boundary before the chunk (all hashed: dropped
/// if asked) and beyond 8 MiB past it (not read yet, or read ahead by the
/// other workers but not hashed in order: cached).
struct Watcher {
    file: File,
    /// (chunk offset, cached pages before, cached pages after)
    seen: Vec<(u64, usize, usize)>,
}

impl DiffSink for Watcher {
    type Encoder = NoEncoding;
    fn digest_format(&self) -> DigestFormat {
        DigestFormat::V2
    }
    fn begin(&mut self, _: &DumpPlan) -> Result<NoEncoding> {
        Ok(NoEncoding)
    }
    fn write_chunk(&mut self, chunk: &DumpedChunk<'_>, _: &()) -> Result<()> {
        let before = chunk.offset - chunk.offset % (2 * MIB);
        let after = (chunk.offset + 8 * MIB).min(SIZE);
        self.seen.push((
            chunk.offset,
            resident(&self.file, 0, before),
            resident(&self.file, after, SIZE),
        ));
        Ok(())
    }
    fn end(&mut self, _: u64, _: Option<Fingerprint>) -> Result<()> {
        Ok(())
    }
}

fn is_memory_fs(dir: &Path) -> bool {
    let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: statfs fills the zeroed struct it is given from a valid
    // NUL-terminated path.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    assert_eq!(unsafe { libc::statfs(c.as_ptr(), &raw mut st) }, 0);
    matches!(st.f_type as i64, 0x0102_1994 | 0x8584_58f6) // tmpfs, ramfs
}

fn run(path: &Path, drop_cache: bool) -> Vec<(u64, usize, usize)> {
    // Cache it all first.
    File::open(path)
        .unwrap()
        .read_to_end(&mut Vec::new())
        .unwrap();
    let pages = resident(&File::open(path).unwrap(), 0, SIZE);
    assert_eq!(pages as u64, SIZE / 4096, "the whole source is cached");
    let mut sink = Watcher {
        file: File::open(path).unwrap(),
        seen: Vec::new(),
    };
    let options = DumpOptions {
        block_size: BlockSize::new(64 << 10).unwrap(),
        threads: 2,
        read_size: MIB as usize,
        drop_cache,
        max_rate: Some(1 << 40),
        ..DumpOptions::default()
    };
    let mut digest = DigestWriter::new(std::io::sink(), "digest");
    let report = dump(
        DumpSource::open(path).unwrap(),
        None::<&mut blockdiff_core::DigestReader<File>>,
        &mut sink,
        &mut digest,
        &options,
        &mut NoProgress,
    )
    .unwrap();
    assert_eq!(report.source_bytes, SIZE);
    sink.seen
}

#[test]
fn hashed_ranges_leave_the_cache_during_the_dump() {
    let base = Path::new(env!("CARGO_TARGET_TMPDIR"));
    fs::create_dir_all(base).unwrap();
    let dir = tempfile::tempdir_in(base).unwrap();
    if is_memory_fs(dir.path()) {
        eprintln!(
            "skipped: {} is on a memory file system",
            dir.path().display()
        );
        return;
    }
    let path = dir.path().join("source");
    // Written and synced (dirty pages cannot be dropped): a file written
    // recently is cached in large folios, up to 2 MiB.
    let mut f = File::create(&path).unwrap();
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let data: Vec<u8> = (0..SIZE)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    f.write_all(&data).unwrap();
    f.sync_all().unwrap();

    let seen = run(&path, true);
    assert_eq!(seen.len(), (SIZE / MIB) as usize);
    for &(offset, before, after) in &seen {
        assert!(
            before <= 16,
            "chunk at {offset}: {before} pages of what was hashed are still cached"
        );
        assert!(
            after as u64 == (SIZE - (offset + 8 * MIB).min(SIZE)) / 4096,
            "chunk at {offset}: only {after} pages of what is not hashed yet are cached"
        );
    }
    let file = File::open(&path).unwrap();
    assert_eq!(resident(&file, 0, SIZE), 0, "at the end, nothing is cached");

    // Without the option, everything stays.
    let seen = run(&path, false);
    for &(offset, before, _) in &seen {
        let hashed = (offset - offset % (2 * MIB)) / 4096;
        assert_eq!(before as u64, hashed, "chunk at {offset}");
    }
    assert_eq!(resident(&file, 0, SIZE) as u64, SIZE / 4096);
}
