//! Reading a chunk of the source through a memory map, guarded against
//! `SIGBUS`.
//!
//! A hashing thread maps its chunk of a regular file (block devices are read
//! with `pread`: see `DumpOptions::map_source`)
//! ([`ChunkMap::new`], `MAP_POPULATE`), hashes the blocks where they lie in
//! the page cache, copies out only those that changed (or, for a v2 diff,
//! compresses them from the map; the guard is checked after the last
//! read), and unmaps it. No copy into a buffer is made for an unchanged block, which is most of the
//! work of an incremental dump: measured against `pread` of 128 KiB pieces
//! (which already keeps the copy in the L2 cache), the scan of an
//! unchanged file takes about a quarter less CPU time. Mapping one chunk
//! at a time keeps the mapped (resident) part of the source to the chunks
//! in flight.
//!
//! A file that shrinks while it is mapped, or a device that fails a read,
//! would kill the process with `SIGBUS` when the missing page is touched.
//! The guard turns that into an error instead: every mapping is registered
//! in a fixed table of address ranges ([`SLOTS`]), and a process-wide
//! `SIGBUS` handler (installed once, the first time a chunk is mapped)
//! that finds the faulting address in a registered range maps a page of
//! zeros over it, marks the range as faulted, and returns; the hashing
//! thread sees the mark once it has hashed the chunk and fails the dump
//! ([`ChunkMap::faulted`]), so the zeros are never kept. A fault at any
//! other address goes to the handler that was installed before (or, if
//! there was none, kills the process as it would have).

use std::fs::File;
use std::io;
use std::sync::Once;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// Mappings that can be guarded at once: more than the hashing threads
/// [`DumpOptions::validate`](super::DumpOptions::validate) allows on most
/// machines; a chunk that finds no free slot is read with `pread`.
const SLOT_COUNT: usize = 256;

/// One guarded address range; `start == 0` is a free slot.
struct Slot {
    /// Claimed by a mapping (set before the range, cleared after it).
    used: AtomicBool,
    start: AtomicUsize,
    end: AtomicUsize,
    faulted: AtomicBool,
}

#[allow(clippy::declare_interior_mutable_const)] // only to build SLOTS
const FREE: Slot = Slot {
    used: AtomicBool::new(false),
    start: AtomicUsize::new(0),
    end: AtomicUsize::new(0),
    faulted: AtomicBool::new(false),
};

/// The guarded ranges, read by the signal handler with atomics only.
static SLOTS: [Slot; SLOT_COUNT] = [FREE; SLOT_COUNT];

/// The `SIGBUS` action before ours, for faults that are not ours.
static mut PREVIOUS: Option<libc::sigaction> = None;
static INSTALL: Once = Once::new();
static INSTALLED: AtomicBool = AtomicBool::new(false);

fn page_size() -> usize {
    // SAFETY: sysconf only reads a constant of the system.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(n).ok().filter(|&n| n > 0).unwrap_or(4096)
}

/// Installs the handler, once per process. False if that failed (then
/// nothing is mapped).
fn install() -> bool {
    INSTALL.call_once(|| {
        // SAFETY: a zeroed sigaction is a valid "no handler" value; the
        // handler below only uses async-signal-safe calls (mmap,
        // sigaction) and atomics; PREVIOUS is written here, before the
        // handler can run, and only read afterwards.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_sigbus as *const () as usize;
            action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
            libc::sigemptyset(&raw mut action.sa_mask);
            let mut previous: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(libc::SIGBUS, &raw const action, &raw mut previous) == 0 {
                PREVIOUS = Some(previous);
                INSTALLED.store(true, Ordering::Release);
            }
        }
    });
    INSTALLED.load(Ordering::Acquire)
}

extern "C" fn on_sigbus(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo for an SA_SIGINFO handler.
    let addr = unsafe { (*info).si_addr() } as usize;
    for slot in &SLOTS {
        let start = slot.start.load(Ordering::Acquire);
        if start == 0 || addr < start || addr >= slot.end.load(Ordering::Acquire) {
            continue;
        }
        let page = addr & !(page_size() - 1);
        // SAFETY: replaces one page of a mapping this module made (the
        // range is registered only while it is mapped) with zeros.
        let zeros = unsafe {
            libc::mmap(
                page as *mut libc::c_void,
                page_size(),
                libc::PROT_READ,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                -1,
                0,
            )
        };
        if zeros != libc::MAP_FAILED {
            slot.faulted.store(true, Ordering::Release);
            return;
        }
        break;
    }
    // Not ours (or the page could not be replaced): what would have
    // happened without this handler.
    // SAFETY: PREVIOUS was set before this handler was installed.
    let previous = unsafe { *std::ptr::addr_of!(PREVIOUS) };
    match previous {
        Some(p) if p.sa_sigaction != libc::SIG_DFL && p.sa_sigaction != libc::SIG_IGN => {
            // SAFETY: calling the previous handler as the kernel would
            // have, with the signature its flags declare.
            unsafe {
                if p.sa_flags & libc::SA_SIGINFO != 0 {
                    let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
                        std::mem::transmute(p.sa_sigaction);
                    f(sig, info, ctx);
                } else {
                    let f: extern "C" fn(libc::c_int) = std::mem::transmute(p.sa_sigaction);
                    f(sig);
                }
            }
        }
        _ => {
            // Back to the default action: returning re-runs the faulting
            // access, which now kills the process as usual.
            // SAFETY: a zeroed sigaction with SIG_DFL (0) is the default.
            unsafe {
                let mut default: libc::sigaction = std::mem::zeroed();
                default.sa_sigaction = libc::SIG_DFL;
                libc::sigaction(libc::SIGBUS, &raw const default, std::ptr::null_mut());
            }
        }
    }
}

/// A chunk of the source, mapped read-only and guarded.
pub(super) struct ChunkMap {
    map: memmap2::Mmap,
    slot: &'static Slot,
}

impl ChunkMap {
    /// Maps `len` bytes of `file` from `offset` (populated at once).
    /// `Ok(None)` when it cannot be guarded (no handler, no free slot): the
    /// caller reads instead.
    pub(super) fn new(file: &File, offset: u64, len: usize) -> io::Result<Option<Self>> {
        if len == 0 || !install() {
            return Ok(None);
        }
        let Some(slot) = SLOTS.iter().find(|s| {
            s.used
                .compare_exchange(false, true, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        }) else {
            return Ok(None);
        };
        // SAFETY: a read-only private view of the source; a page the file
        // loses while it is mapped faults with SIGBUS, which the guard
        // registered below turns into zeros and a mark that fails the dump.
        let map = match unsafe {
            memmap2::MmapOptions::new()
                .offset(offset)
                .len(len)
                .populate()
                .map(file)
        } {
            Ok(map) => map,
            Err(e) => {
                slot.used.store(false, Ordering::Release);
                return Err(e);
            }
        };
        // The whole mapping, from the page below the data (memmap2 aligns
        // the offset down).
        let data = map.as_ptr() as usize;
        let start = data & !(page_size() - 1);
        slot.faulted.store(false, Ordering::Relaxed);
        slot.end.store(data + len, Ordering::Release);
        slot.start.store(start.max(1), Ordering::Release);
        // The pages may already have faulted while populating: populate
        // does not fault, so nothing is lost by registering after it.
        Ok(Some(ChunkMap { map, slot }))
    }

    /// The chunk's bytes (zeros where a page could not be read: see
    /// [`faulted`](Self::faulted)).
    pub(super) fn bytes(&self) -> &[u8] {
        &self.map
    }

    /// Whether a page of the chunk could not be read (the file shrank, or
    /// the device failed): its bytes are not the source's.
    pub(super) fn faulted(&self) -> bool {
        self.slot.faulted.load(Ordering::Acquire)
    }
}

impl Drop for ChunkMap {
    fn drop(&mut self) {
        // Unregistered before the mapping goes (the map field drops after
        // this body): nothing touches it in between.
        self.slot.start.store(0, Ordering::Release);
        self.slot.end.store(0, Ordering::Release);
        self.slot.used.store(false, Ordering::Release);
    }
}
