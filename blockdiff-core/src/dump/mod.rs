//! The diff engine: source + optional previous digest → changed blocks (to
//! a [`DiffSink`]) + new digest, hashed and encoded on every core.
//!
//! [`dump`] runs a pipeline of three stages, each in its module, connected
//! by bounded channels through which a fixed pool of chunk buffers
//! circulates:
//!
//! - `reader`: one thread places the source's chunks in order with the
//!   previous digest's hashes (and reads a stream source into them);
//! - `workers`: the hashing threads read each chunk of a positional source,
//!   hash its blocks and run the sink's encoder over it;
//! - `writer`: the calling thread hands the chunks in source order to the
//!   sink and their hashes to the digest, and counts the [`DumpReport`].
//!
//! [`crate::resolve`] picks the block size and hash against the previous digest.

mod format_sink;
mod mapped;
mod reader;
mod sink;
mod tracked;
mod workers;
mod writer;

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread;

use archive_format::{
    BlockSize, DigestFormat, DigestReader, DigestWriter, Fingerprint, HashAlgorithm,
};
use crossbeam_channel as channel;

pub use format_sink::{FormatEncoded, FormatEncoder, FormatEncoderState, FormatSink};
pub use sink::{ChangedRanges, LegacySink, NoEncoding, V2Encoder, V2EncoderState, V2Frame, V2Sink};
pub use tracked::TrackedChanges;

use crate::block::{BlockHashKey, BlockHasher};
use crate::error::IoContext;
use crate::progress::Progress;
use crate::rate::RateLimiter;
use crate::resolve::resolve_dump;
use crate::{Error, Result};
use reader::{ChunkReader, PositionalSource};
use workers::{Chunk, Done, HashStage};
use writer::{CacheDropper, OrderedWriter};

/// What a sink learns before the first block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DumpPlan {
    /// The block size in use.
    pub block_size: BlockSize,
    /// The hash algorithm in use.
    pub hash: HashAlgorithm,
    /// The generation being written.
    pub generation: u64,
    /// The source's size, if known before reading it.
    pub source_size: Option<u64>,
    /// Fingerprint of the previous generation's digest (v2 chains).
    pub parent: Option<Fingerprint>,
}

/// One chunk of the source after hashing: consecutive blocks, with which
/// of them changed and which are all zero.
#[derive(Debug, Clone, Copy)]
pub struct DumpedChunk<'a> {
    /// Byte offset of the chunk in the source.
    pub offset: u64,
    /// Index of its first block.
    pub first_block: u64,
    /// The chunk's bytes (the last block may be short). Only the bytes of
    /// the blocks marked [`changed`](Self::changed) are the source's: the
    /// dump copies an unchanged block nowhere once it is hashed, so the
    /// rest is whatever the buffer held before.
    pub data: &'a [u8],
    /// The block size.
    pub block_size: BlockSize,
    /// Per block: differs from the previous digest (or there is none).
    pub changed: &'a [bool],
    /// Per block: all bytes zero.
    pub zero: &'a [bool],
}

impl<'a> DumpedChunk<'a> {
    /// The bytes of block `i` of the chunk (the source's only if it
    /// [`changed`](Self::changed)).
    pub fn block(&self, i: usize) -> &'a [u8] {
        let bs = self.block_size.bytes();
        let start = i * bs;
        &self.data[start..(start + bs).min(self.data.len())]
    }
}

/// Work done for a sink on the hashing threads, before the chunk reaches
/// the sink in order: compressing, for v2.
pub trait ChunkEncoder: Sync {
    /// Per-thread state (a compression context).
    type State: Send;
    /// What [`encode`](Self::encode) produces for the sink.
    type Output: Send + Default;
    /// A new per-thread state.
    fn state(&self) -> Result<Self::State>;
    /// Encodes one chunk into `out`.
    fn encode(
        &self,
        state: &mut Self::State,
        chunk: &DumpedChunk<'_>,
        out: &mut Self::Output,
    ) -> Result<()>;
}

/// Receives a dump's chunks in source order: the blocks that changed.
pub trait DiffSink {
    /// The work this sink has done on the hashing threads.
    type Encoder: ChunkEncoder;
    /// The digest format that goes with this diff format.
    fn digest_format(&self) -> DigestFormat;
    /// Called once, before any chunk.
    fn begin(&mut self, plan: &DumpPlan) -> Result<Self::Encoder>;
    /// Whether [`write_chunk`](Self::write_chunk) reads the changed
    /// blocks' bytes (`DumpedChunk::data`); true unless the sink says
    /// otherwise. A sink whose encoder takes all it needs from them on the
    /// hashing threads (v2 compresses them there) returns false: the dump
    /// then hashes and encodes a mapped chunk where it lies in the page
    /// cache and copies no byte of it, and `data` in `write_chunk` holds
    /// none of the source's bytes (only its length is the chunk's).
    fn reads_data(&self) -> bool {
        true
    }
    /// One chunk, in order, with what the encoder made of it.
    fn write_chunk(
        &mut self,
        chunk: &DumpedChunk<'_>,
        encoded: &<Self::Encoder as ChunkEncoder>::Output,
    ) -> Result<()>;
    /// The source ended after `source_size` bytes; `fingerprint` is the new
    /// digest's (v2).
    fn end(&mut self, source_size: u64, fingerprint: Option<Fingerprint>) -> Result<()>;
}

/// How a dump runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DumpOptions {
    /// Block size for a new chain. An incremental dump uses the previous
    /// digest's block size (with a [`Notice`](crate::Notice) when they differ).
    pub block_size: BlockSize,
    /// Hash algorithm for a new chain; a chain keeps its algorithm.
    pub hash: HashAlgorithm,
    /// The generation number written into v2 headers.
    pub generation: u64,
    /// Hash worker threads; 0 means one per core.
    pub threads: usize,
    /// Bytes of the source in one chunk (rounded to whole blocks): the unit
    /// handed to a hashing thread and to the sink. 0, the default, chooses:
    /// [`MAPPED_CHUNK`] (16 MiB) for a source read through a memory map,
    /// [`READ_CHUNK`] (4 MiB) for one read into the chunk. A v2
    /// frame covers 1 MiB of it at most, so the diff is the same whatever
    /// the chunk size. A source read by position is read a 128 KiB piece
    /// at a time within the chunk, into a buffer that stays in the core's
    /// cache, or mapped a chunk at a time; only the changed blocks are
    /// copied into the chunk, so a larger chunk costs memory only where
    /// blocks changed. Each mapped chunk costs a map, its unmapping, and its
    /// passage between the threads. Measured on an unchanged 1 GiB file in
    /// the page cache, the mapped scan took 0.19-0.23 s with 4 MiB chunks
    /// and 0.24-0.27 s with 1 MiB; on 2 GiB, 0.36-0.39 s with 16 MiB
    /// chunks against 0.39-0.43 s with 4 MiB (same runs). Read with
    /// `pread`, 16 MiB chunks were no faster than 4 MiB, and they are
    /// filled: there the chunk stays at 4 MiB.
    pub read_size: usize,
    /// Most bytes per second read from the source, like `pv -L`; `None` or
    /// 0 is unlimited. A token bucket shared by every thread that reads
    /// ([`RateLimiter`]): after a pause, at most one chunk or a quarter of a
    /// second's worth (the larger) is read at once.
    pub max_rate: Option<u64>,
    /// Drop what was read from the page cache
    /// (`posix_fadvise(POSIX_FADV_DONTNEED)` behind the hashing: once a
    /// chunk and all before it are hashed, on its range, widened down to the
    /// 2 MiB boundary below the previous chunk's end so that the large folios
    /// straddling chunk boundaries go too; the whole file after the last
    /// chunk), so that a backup does not evict the host's working set. Only
    /// for a source read by position (a file or block device opened with
    /// [`DumpSource::open`]); a stream source (a pipe, standard input) has no
    /// file to advise and is read as it is.
    pub drop_cache: bool,
    /// Read a regular file opened with [`DumpSource::open`] through a
    /// memory map, one chunk at a time, hashing each block where it lies in
    /// the page cache and copying out only the changed ones (on by
    /// default). For a sink that does not read the blocks itself
    /// ([`DiffSink::reads_data`]: v2) nothing is copied: the changed
    /// blocks are compressed from the map too, full dumps included. A file
    /// that shrinks while it is mapped is caught (a guarded `SIGBUS`) and
    /// fails the dump like a failed read. Off, and
    /// always for block devices, the chunks are read with `pread`, 128 KiB
    /// at a time into a per-thread buffer that stays in the L2 cache: a
    /// snapshot that LVM invalidates mid-read fails its reads with EIO,
    /// which `pread` reports at once, while page faults on it were seen to
    /// hang the VM test of a snapshot overflow (tests/vm/12).
    pub map_source: bool,
    /// The key of keyed block hashes: an encrypted chain's
    /// ([`HashAlgorithm::Blake3Keyed`], which `hash` must then name for a
    /// new chain). A chain whose digest is keyed needs it; one whose digest
    /// is not refuses it.
    pub hash_key: Option<BlockHashKey>,
    /// Read only the blocks these changes touch (and any beyond the
    /// previous digest); every other block keeps the previous digest's
    /// hash without being read. Needs the previous digest and a source
    /// opened with [`DumpSource::open`] (read by position, never mapped);
    /// [`dump`] refuses it otherwise. See [`TrackedChanges`] for what the
    /// dump then trusts.
    pub tracked: Option<Arc<TrackedChanges>>,
    /// With [`tracked`](Self::tracked): read and hash every block anyway
    /// (a full scan), and count in [`DumpReport::untracked_changes`] the
    /// blocks that changed where no tracked range touches them, which
    /// proves the tracking right or wrong.
    pub verify_tracked: bool,
}

impl Default for DumpOptions {
    fn default() -> Self {
        DumpOptions {
            block_size: BlockSize::DEFAULT,
            hash: HashAlgorithm::Blake3,
            generation: 1,
            threads: 0,
            read_size: 0,
            max_rate: None,
            drop_cache: false,
            map_source: true,
            hash_key: None,
            tracked: None,
            verify_tracked: false,
        }
    }
}

/// The chunk of a source read through a memory map, when
/// [`DumpOptions::read_size`] is 0: only the changed blocks of a mapped
/// chunk are copied into memory of the dump's (none with a v2 diff).
pub const MAPPED_CHUNK: usize = 16 << 20;

/// The chunk of a source read into memory, when [`DumpOptions::read_size`]
/// is 0.
pub const READ_CHUNK: usize = 4 << 20;

/// Most hashing threads per core [`DumpOptions::validate`] accepts: more
/// only costs memory (each thread keeps about two chunks in flight).
pub const MAX_THREADS_PER_CORE: usize = 8;

fn cores() -> usize {
    thread::available_parallelism().map_or(1, std::num::NonZero::get)
}

impl DumpOptions {
    /// The most threads [`threads`](Self::threads) may ask for on this
    /// machine: eight per core.
    pub fn max_threads() -> usize {
        cores().saturating_mul(MAX_THREADS_PER_CORE)
    }

    /// Checks the options that come from a command line: a thread count
    /// above [`max_threads`](Self::max_threads) is
    /// [`Error::TooManyThreads`] (each thread holds chunk buffers, so
    /// `--threads 100000` would abort on memory). [`dump`] calls it first.
    pub fn validate(&self) -> Result<()> {
        let max = Self::max_threads();
        if self.threads > max {
            return Err(Error::TooManyThreads {
                requested: self.threads,
                max,
            });
        }
        Ok(())
    }

    fn worker_count(&self) -> usize {
        match self.threads {
            0 => cores(),
            n => n,
        }
    }

    /// Bytes in a chunk: [`read_size`](Self::read_size), or by default
    /// [`MAPPED_CHUNK`] for chunks that will be `mapped` and [`READ_CHUNK`]
    /// for the others, in whole blocks of `block_size` (at least one).
    fn chunk_size(&self, block_size: BlockSize, mapped: bool) -> usize {
        let bs = block_size.bytes();
        let read_size = match self.read_size {
            0 if mapped => MAPPED_CHUNK,
            0 => READ_CHUNK,
            n => n,
        };
        (read_size.max(bs) / bs) * bs
    }
}

/// The source of a dump: a reader, its name for messages, and its size
/// when known in advance (files and block devices).
///
/// A source opened with [`DumpSource::open`] is also read with positional
/// reads: each hashing thread reads its own chunk, so reading runs on every
/// core too.
#[derive(Debug)]
pub struct DumpSource<R> {
    reader: R,
    name: PathBuf,
    size: Option<u64>,
    positional: Option<File>,
    /// A regular file: read through a memory map when
    /// [`DumpOptions::map_source`] asks for it.
    mappable: bool,
}

impl<R> DumpSource<R> {
    /// A source of known size; one that then yields another number of
    /// bytes fails the dump.
    pub fn new(reader: R, name: impl Into<PathBuf>, size: u64) -> Self {
        DumpSource {
            reader,
            name: name.into(),
            size: Some(size),
            positional: None,
            mappable: false,
        }
    }

    /// A source of unknown size, such as a pipe.
    pub fn stream(reader: R, name: impl Into<PathBuf>) -> Self {
        DumpSource {
            reader,
            name: name.into(),
            size: None,
            positional: None,
            mappable: false,
        }
    }

    /// Its name in messages.
    pub fn name(&self) -> &Path {
        &self.name
    }

    /// Its size, if known before reading.
    pub fn size(&self) -> Option<u64> {
        self.size
    }
}

impl<'a, R: Read + Send + 'a> DumpSource<R> {
    /// The same source behind a boxed reader, so that files and pipes can
    /// share one type.
    pub fn boxed(self) -> DumpSource<Box<dyn Read + Send + 'a>> {
        DumpSource {
            reader: Box::new(self.reader),
            name: self.name,
            size: self.size,
            positional: self.positional,
            mappable: self.mappable,
        }
    }
}

impl<R: Read> DumpSource<R> {
    /// The same source, of which at most `limit` bytes are read: its first
    /// `limit` bytes, or all of it if shorter (a pipe or a character device
    /// such as `/dev/zero` never ends; a disk may be far larger than what
    /// it is compared with).
    pub fn limited(self, limit: u64) -> DumpSource<std::io::Take<R>> {
        DumpSource {
            reader: self.reader.take(limit),
            name: self.name,
            size: self.size.map(|s| s.min(limit)),
            positional: self.positional,
            mappable: self.mappable,
        }
    }
}

impl DumpSource<File> {
    /// Opens a file or block device, learning its size.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let file = File::open(path).ctx(path, "open source")?;
        Self::from_file(file, path)
    }

    /// A file or block device already open for reading (named `path` in
    /// messages), read from its start: the caller opened it its own way,
    /// say without following a link.
    pub fn from_file(mut file: File, path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let meta = file.metadata().ctx(path, "stat source")?;
        let size = if meta.is_file() {
            Some(meta.len())
        } else if meta.file_type().is_block_device() {
            let size = file
                .seek(SeekFrom::End(0))
                .ctx(path, "find the device's size")?;
            file.seek(SeekFrom::Start(0)).ctx(path, "seek")?;
            Some(size)
        } else {
            None
        };
        let positional = match size {
            Some(_) => Some(
                file.try_clone()
                    .ctx(path, "duplicate the source's handle")?,
            ),
            None => None,
        };
        Ok(DumpSource {
            reader: file,
            name: path.to_owned(),
            size,
            positional,
            mappable: meta.is_file(),
        })
    }
}

impl<'a> DumpSource<&'a [u8]> {
    /// A source in memory.
    pub fn from_bytes(bytes: &'a [u8], name: impl Into<PathBuf>) -> Self {
        DumpSource::new(bytes, name, bytes.len() as u64)
    }
}

/// What a dump did. Its serde form (the agent's report to the backup
/// host) names the hash (`"blake3"`) and leaves out the fingerprint, which
/// the receiving side reads from the digest it wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct DumpReport {
    /// The block size used.
    pub block_size: u32,
    /// The hash algorithm used.
    #[serde(with = "crate::hash_name")]
    pub hash: HashAlgorithm,
    /// The source's size.
    pub source_bytes: u64,
    /// Bytes read from the source: its size, unless tracked changes
    /// ([`DumpOptions::tracked`]) left blocks unread.
    #[serde(default)]
    pub read_bytes: u64,
    /// With [`DumpOptions::verify_tracked`]: blocks that changed where the
    /// tracked changes said nothing had (0 when the tracking was right).
    #[serde(default)]
    pub untracked_changes: u64,
    /// The offset of the first of those blocks.
    #[serde(default)]
    pub first_untracked: Option<u64>,
    /// Blocks in the source.
    pub blocks: u64,
    /// Blocks that changed (written as data or recorded as zero).
    pub changed_blocks: u64,
    /// Bytes of the changed blocks.
    pub changed_bytes: u64,
    /// Changed blocks that are all zero.
    pub zero_blocks: u64,
    /// Fingerprint of the new digest (v2).
    #[serde(skip)]
    pub fingerprint: Option<Fingerprint>,
}

/// Runs a dump: reads `source` to its end, hashes every block on all cores,
/// hands the chunks in order to `sink` (which writes the blocks that differ
/// from `previous`, or all without it) and writes every hash to `digest`.
///
/// Block size and hash algorithm are the previous digest's when there is
/// one (with a [`Notice`](crate::Notice) if the options differ). Memory is
/// bounded by a few chunks per worker, whatever the source size. On success
/// the sink and the digest have been ended (trailers written, flushed).
///
/// The threads that read and hash are started by this call and inherit the
/// calling thread's niceness and I/O priority: set those first
/// ([`set_nice`](crate::set_nice), [`IoPriority::apply`](crate::IoPriority::apply)).
pub fn dump<R, P, S, D>(
    mut source: DumpSource<R>,
    previous: Option<&mut DigestReader<P>>,
    sink: &mut S,
    digest: &mut DigestWriter<D>,
    options: &DumpOptions,
    progress: &mut dyn Progress,
) -> Result<DumpReport>
where
    R: Read + Send,
    P: Read + Send,
    S: DiffSink,
    D: Write,
{
    options.validate()?;
    let (tracked, verify) = match options.tracked.as_deref() {
        Some(changes) if options.verify_tracked => (None, Some(changes)),
        other => (other, None),
    };
    if tracked.is_some() && (previous.is_none() || source.positional.is_none()) {
        return Err(Error::InvalidOption(format!(
            "{}: reading only tracked changes needs the previous digest and a file or device read by position",
            source.name.display()
        )));
    }
    let (block_size, hash, parent) =
        resolve_dump(options, previous.as_deref(), sink.digest_format(), progress)?;
    let plan = DumpPlan {
        block_size,
        hash: hash.algorithm(),
        generation: options.generation,
        source_size: source.size,
        parent,
    };
    let encoder = writer::begin_outputs(&plan, sink, digest)?;
    let hasher = BlockHasher::new(hash, block_size);
    // The sink reads the changed blocks' bytes itself (legacy): they are
    // copied into the chunk. Otherwise (v2) a mapped chunk is encoded where
    // it lies.
    let keep_data = sink.reads_data();
    let map_source =
        options.map_source && source.mappable && source.size.is_some() && tracked.is_none();
    // Whether the chunks will be mapped: a chunk is mapped when it has
    // previous hashes to compare with, or when its bytes need not be kept.
    let mapped = map_source && (previous.is_some() || !keep_data);
    let read_size = options.chunk_size(block_size, mapped);
    let workers = options.worker_count().max(1);
    let mut states = Vec::with_capacity(workers);
    for _ in 0..workers {
        states.push(encoder.state()?);
    }

    let source_name = source.name.clone();
    let total = source.size;
    let positional_file = source.positional.take();
    let positional = positional_file.as_ref();
    let limiter = RateLimiter::new(options.max_rate.unwrap_or(0), read_size as u64);
    let reader = ChunkReader {
        source,
        previous,
        by_position: total.filter(|_| positional.is_some()),
        read_size,
        block_size,
        limiter: &limiter,
    };
    let hashing = HashStage {
        encoder: &encoder,
        hasher: &hasher,
        block_size,
        keep_data,
        source: positional.map(|file| PositionalSource {
            file,
            total: total.unwrap_or(0),
            name: &source_name,
            limiter: &limiter,
            map: map_source,
        }),
        tracked,
    };
    let writer = OrderedWriter {
        plan: &plan,
        sink,
        digest,
        // The file whose cache is dropped behind the hashing (never a stream).
        cache: positional
            .filter(|_| options.drop_cache && total.is_some())
            .map(|file| CacheDropper::new(file, total, &source_name)),
        verify,
        progress,
    };
    let report = run_pipeline(workers * 2 + 2, reader, &hashing, states, writer)?;
    writer::end_outputs(report, &plan, source_name, sink, digest)
}

/// Runs the three stages of a dump at once: `reader` on a thread of its
/// own, `hashing` on one thread per encoder state of `states`, and `writer`
/// on this thread. `pool_size` chunk buffers (of the reader's chunk size)
/// circulate from the writer back to the reader through channels of
/// `pool_size` each: free → reader → hashing → writer → free, so that
/// memory is bounded whatever the source's size.
///
/// Returns the writer's report (the sink and the digest not yet ended), or
/// the first error: the reader's, else the writer's (which carries the
/// hashing threads' errors, in source order). When the writer stops early
/// its channels are dropped, which stops the reader and the hashing
/// threads; every thread is joined before this returns.
fn run_pipeline<R, P, E, S, D>(
    pool_size: usize,
    reader: ChunkReader<'_, R, P>,
    hashing: &HashStage<'_, E>,
    states: Vec<E::State>,
    writer: OrderedWriter<'_, S, D>,
) -> Result<DumpReport>
where
    R: Read + Send,
    P: Read + Send,
    E: ChunkEncoder,
    S: DiffSink<Encoder = E>,
    D: Write,
{
    let read_size = reader.read_size;
    let blocks_per_chunk = read_size / reader.block_size.bytes();
    let (free_tx, free_rx) = channel::bounded::<Chunk<E::Output>>(pool_size);
    let (work_tx, work_rx) = channel::bounded::<Chunk<E::Output>>(pool_size);
    // Results carry their sequence number, so that an error is reported in
    // source order too: the first failing chunk, whichever thread saw its
    // error first.
    let (done_tx, done_rx) = channel::bounded::<Done<E::Output>>(pool_size);
    for _ in 0..pool_size {
        free_tx
            .send(Chunk {
                seq: 0,
                offset: 0,
                buf: vec![0u8; read_size],
                len: 0,
                unread: false,
                read: 0,
                previous: Vec::with_capacity(blocks_per_chunk),
                hashes: Vec::with_capacity(blocks_per_chunk),
                changed: Vec::with_capacity(blocks_per_chunk),
                zero: Vec::with_capacity(blocks_per_chunk),
                encoded: Default::default(),
            })
            .expect("receiver is alive");
    }

    thread::scope(|scope| -> Result<DumpReport> {
        let reading = scope.spawn(move || reader.run(free_rx, work_tx));
        for state in states {
            let work_rx = work_rx.clone();
            let done_tx = done_tx.clone();
            scope.spawn(move || hashing.run(state, work_rx, done_tx));
        }
        drop(work_rx);
        drop(done_tx);

        // In-order writer, on this thread.
        let written = writer.run(&done_rx, &free_tx);
        // Unblock the reader and workers if the writer stopped early.
        drop(free_tx);
        drop(done_rx);
        let read = reading
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p));
        read?;
        written
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::progress::NoProgress;
    use archive_format::FrameCompression;
    use std::io;

    #[test]
    fn an_absurd_thread_count_is_refused_before_any_allocation() {
        let options = DumpOptions {
            threads: 100_000,
            ..DumpOptions::default()
        };
        let err = options.validate().unwrap_err();
        assert!(
            matches!(err, Error::TooManyThreads { requested: 100_000, max } if max == DumpOptions::max_threads()),
            "{err}"
        );
        let fine = DumpOptions {
            threads: DumpOptions::max_threads(),
            ..DumpOptions::default()
        };
        fine.validate().unwrap();
        let mut sink = V2Sink::new(Vec::new(), "out", FrameCompression::None, 0);
        let mut digest = DigestWriter::new(io::sink(), "digest");
        let err = dump(
            DumpSource::from_bytes(&[0u8; 10], "mem"),
            None::<&mut DigestReader<&[u8]>>,
            &mut sink,
            &mut digest,
            &options,
            &mut NoProgress,
        )
        .unwrap_err();
        assert!(matches!(err, Error::TooManyThreads { .. }), "{err}");
    }
}
