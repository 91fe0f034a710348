//! The writing stage of a dump, on the calling thread: begins the sink and
//! the digest, hands them the hashed chunks in source order, drops the
//! source's pages from the cache behind them, counts the [`DumpReport`],
//! and ends them.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use archive_format::{DigestSpec, DigestWriter, UNKNOWN_SIZE};
use crossbeam_channel::{Receiver, Sender};

use super::tracked::TrackedChanges;
use super::workers::{Chunk, Done};
use super::{ChunkEncoder, DiffSink, DumpPlan, DumpReport, DumpedChunk};
use crate::progress::Progress;
use crate::{Error, Result};

/// What the sink's encoder makes of a chunk on the hashing threads.
type Encoded<S> = <<S as DiffSink>::Encoder as ChunkEncoder>::Output;

/// Begins the sink and the digest with `plan`, before any chunk; returns
/// the sink's encoder, for the hashing threads.
pub(super) fn begin_outputs<S: DiffSink, D: Write>(
    plan: &DumpPlan,
    sink: &mut S,
    digest: &mut DigestWriter<D>,
) -> Result<S::Encoder> {
    let encoder = sink.begin(plan)?;
    digest.begin(&DigestSpec {
        format: sink.digest_format(),
        algorithm: plan.hash,
        block_size: plan.block_size,
        generation: plan.generation,
        source_size: plan.source_size.unwrap_or(UNKNOWN_SIZE),
    })?;
    Ok(encoder)
}

/// The ordered writer, run on the calling thread: where the hashed chunks
/// go, in source order.
pub(super) struct OrderedWriter<'a, S, D: Write> {
    /// The dump's plan: block size and hash.
    pub(super) plan: &'a DumpPlan,
    /// Receives each chunk with its changed blocks.
    pub(super) sink: &'a mut S,
    /// Receives every block's hash.
    pub(super) digest: &'a mut DigestWriter<D>,
    /// Drops the source's pages from the cache behind the writer
    /// ([`DumpOptions::drop_cache`](super::DumpOptions::drop_cache)).
    pub(super) cache: Option<CacheDropper<'a>>,
    /// Tracked changes to check the changed blocks against
    /// ([`DumpOptions::verify_tracked`](super::DumpOptions::verify_tracked)).
    pub(super) verify: Option<&'a TrackedChanges>,
    /// Told of each chunk written; asked whether to stop.
    pub(super) progress: &'a mut dyn Progress,
}

impl<S: DiffSink, D: Write> OrderedWriter<'_, S, D> {
    /// Runs the writer: takes the hashed chunks from `done_rx`, which come
    /// in any order, and in source order writes each to the sink and its
    /// hashes to the digest, counts it into the report, drops its pages
    /// from the cache, reports progress, and gives the chunk back to the
    /// reader on `free_tx`. Returns the report (the sink and the digest not
    /// yet ended: [`end_outputs`]) once `done_rx` is closed and empty, or
    /// the first error in source order (a hashing thread's, the sink's, the
    /// digest's) or [`Error::Stopped`] at once; the caller then drops the
    /// channels, which stops the other stages.
    pub(super) fn run(
        self,
        done_rx: &Receiver<Done<Encoded<S>>>,
        free_tx: &Sender<Chunk<Encoded<S>>>,
    ) -> Result<DumpReport> {
        let OrderedWriter {
            plan,
            sink,
            digest,
            mut cache,
            verify,
            progress,
        } = self;
        let block_size = plan.block_size;
        let bs = block_size.bytes();
        let mut report = DumpReport {
            block_size: block_size.get(),
            hash: plan.hash,
            ..DumpReport::default()
        };
        let mut waiting: BTreeMap<u64, Result<Chunk<Encoded<S>>>> = BTreeMap::new();
        let mut next_seq = 0u64;
        for (seq, chunk) in done_rx {
            waiting.insert(seq, chunk);
            while let Some(chunk) = waiting.remove(&next_seq) {
                let chunk = chunk?;
                next_seq += 1;
                let view = DumpedChunk {
                    offset: chunk.offset,
                    first_block: chunk.offset / bs as u64,
                    data: &chunk.buf[..chunk.len],
                    block_size,
                    changed: &chunk.changed,
                    zero: &chunk.zero,
                };
                sink.write_chunk(&view, &chunk.encoded)?;
                for (i, h) in chunk.hashes.iter().enumerate() {
                    digest.push(h)?;
                    if chunk.changed[i] {
                        report.changed_blocks += 1;
                        report.changed_bytes += view.block(i).len() as u64;
                        report.zero_blocks += u64::from(chunk.zero[i]);
                        let start = chunk.offset + (i * bs) as u64;
                        let end = start + view.block(i).len() as u64;
                        if verify.is_some_and(|t| !t.touches(start, end)) {
                            report.untracked_changes += 1;
                            report.first_untracked.get_or_insert(start);
                        }
                    }
                }
                report.blocks += chunk.hashes.len() as u64;
                report.source_bytes += chunk.len as u64;
                report.read_bytes += chunk.read;
                if let Some(cache) = &mut cache {
                    cache.drop_to(chunk.offset + chunk.len as u64)?;
                }
                progress.advance(chunk.len as u64);
                if let Some(reason) = progress.should_stop() {
                    return Err(Error::Stopped { reason });
                }
                // The reader may have stopped already; the chunk is
                // then simply dropped.
                let _ = free_tx.send(chunk);
            }
        }
        Ok(report)
    }
}

/// Ends the sink and the digest once every chunk is written and the reader
/// has finished: checks that the source had the size it was planned with
/// (`source_name` names it in the error), writes the digest's trailer and
/// the sink's, and returns `report` with the new digest's fingerprint.
pub(super) fn end_outputs<S: DiffSink, D: Write>(
    mut report: DumpReport,
    plan: &DumpPlan,
    source_name: PathBuf,
    sink: &mut S,
    digest: &mut DigestWriter<D>,
) -> Result<DumpReport> {
    if let Some(expected) = plan.source_size
        && expected != report.source_bytes
    {
        return Err(Error::SourceSizeChanged {
            path: source_name,
            expected,
            read: report.source_bytes,
        });
    }
    report.fingerprint = digest.end(report.source_bytes)?;
    sink.end(report.source_bytes, report.fingerprint)?;
    Ok(report)
}

/// Drops the source's pages from the page cache behind the writer, a chunk
/// at a time: where the last drop ended, and what it needs to drop more.
pub(super) struct CacheDropper<'a> {
    file: &'a File,
    /// The source's size.
    total: Option<u64>,
    /// The source's name, for errors.
    name: &'a Path,
    /// Where the previous drop ended.
    dropped_to: u64,
}

impl<'a> CacheDropper<'a> {
    /// Drops the pages of `file` (a source of size `total`, named `name`),
    /// none yet.
    pub(super) fn new(file: &'a File, total: Option<u64>, name: &'a Path) -> Self {
        CacheDropper {
            file,
            total,
            name,
            dropped_to: 0,
        }
    }

    /// Drops the cached pages up to `end`, once every chunk before `end` is
    /// hashed and written ([`drop_cached`]).
    fn drop_to(&mut self, end: u64) -> Result<()> {
        drop_cached(self.file, self.dropped_to, end, self.total, self.name)?;
        self.dropped_to = end;
        Ok(())
    }
}

/// The largest folio (run of pages cached as one) the page cache makes:
/// 2 MiB, a huge page, on x86-64. Folios are aligned to their size in the
/// file.
const LARGEST_FOLIO: u64 = 2 << 20;

/// Drops the source's cached pages up to `end`, once every chunk before
/// `end` is hashed; `dropped_to` is where the previous call ended.
///
/// `POSIX_FADV_DONTNEED` drops a folio only when the range covers it whole,
/// and the page cache holds large folios (up to 2 MiB; a file written
/// recently is cached that way), so a chunk's exact range would leave every
/// folio that straddles a chunk boundary, which with 1 MiB chunks and
/// 2 MiB folios is all of them. The range therefore starts at the folio
/// boundary below the previous end, and the last chunk's covers the whole
/// file (any larger folio left behind, too).
fn drop_cached(
    file: &File,
    dropped_to: u64,
    end: u64,
    total: Option<u64>,
    name: &Path,
) -> Result<()> {
    let (from, len) = match total {
        // The last chunk: the whole file (len 0 is "to the end").
        Some(total) if end >= total => (0, 0),
        _ => {
            let from = dropped_to - dropped_to % LARGEST_FOLIO;
            (from, end - from)
        }
    };
    let (Ok(from), Ok(len)) = (libc::off_t::try_from(from), libc::off_t::try_from(len)) else {
        return Ok(());
    };
    // SAFETY: posix_fadvise only reads its integer arguments; the
    // descriptor is open for as long as `file` is borrowed.
    let r = unsafe { libc::posix_fadvise(file.as_raw_fd(), from, len, libc::POSIX_FADV_DONTNEED) };
    // posix_fadvise returns the error number instead of setting errno.
    match r {
        0 => Ok(()),
        errno => Err(Error::Io {
            path: name.to_owned(),
            op: "drop the source's pages from the cache (posix_fadvise)",
            source: std::io::Error::from_raw_os_error(errno),
        }),
    }
}
