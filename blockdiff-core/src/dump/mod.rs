//! The diff engine: source + optional previous digest → changed blocks (to
//! a [`DiffSink`]) + new digest, hashed and encoded on every core.

mod format_sink;
mod mapped;
mod sink;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, FileTypeExt};
use std::path::{Path, PathBuf};
use std::thread;

use archive_format::{
    BlockHash, BlockSize, DigestFormat, DigestReader, DigestSpec, DigestWriter, Fingerprint,
    HashAlgorithm, UNKNOWN_SIZE, read_full,
};
use crossbeam_channel as channel;

pub use format_sink::{FormatEncoded, FormatEncoder, FormatEncoderState, FormatSink};
pub use sink::{ChangedRanges, LegacySink, NoEncoding, V2Encoder, V2EncoderState, V2Frame, V2Sink};

use crate::block::BlockHasher;
use crate::error::IoContext;
use crate::progress::{Notice, Progress};
use crate::rate::RateLimiter;
use crate::{Error, Result};
use mapped::ChunkMap;

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
    /// digest's block size (with a [`Notice`] when they differ).
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
        let mut file = File::open(path).ctx(path, "open source")?;
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
    /// Bytes read from the source: its size.
    pub source_bytes: u64,
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

/// A run of consecutive blocks in flight through the pipeline.
struct Chunk<O> {
    seq: u64,
    offset: u64,
    buf: Vec<u8>,
    len: usize,
    /// The bytes are still to be read, by position, on a hashing thread.
    unread: bool,
    previous: Vec<BlockHash>,
    hashes: Vec<BlockHash>,
    changed: Vec<bool>,
    zero: Vec<bool>,
    encoded: O,
}

/// Picks the block size and hash: the previous digest's when there is one.
fn resolve<P: Read>(
    options: &DumpOptions,
    previous: Option<&DigestReader<P>>,
    sink_format: DigestFormat,
    progress: &mut dyn Progress,
) -> Result<(BlockSize, HashAlgorithm, Option<Fingerprint>)> {
    let Some(prev) = previous else {
        let hash = match sink_format {
            DigestFormat::Legacy => HashAlgorithm::Md5,
            DigestFormat::V2 => options.hash,
        };
        return Ok((options.block_size, hash, None));
    };
    if prev.spec().format != sink_format {
        return Err(Error::Chain {
            path: prev.path().to_owned(),
            detail: format!(
                "the previous digest is {:?} but this dump writes {:?}: a chain keeps one format (start a new backup name to change it)",
                prev.spec().format,
                sink_format
            ),
        });
    }
    if prev.block_size() != options.block_size {
        progress.notice(Notice::BlockSizeFromDigest {
            digest: prev.path().to_owned(),
            requested: options.block_size,
            used: prev.block_size(),
        });
    }
    if sink_format == DigestFormat::V2 && prev.algorithm() != options.hash {
        progress.notice(Notice::HashFromDigest {
            digest: prev.path().to_owned(),
            requested: options.hash,
            used: prev.algorithm(),
        });
    }
    let parent = match sink_format {
        DigestFormat::V2 => Some(prev.fingerprint().ok_or_else(|| Error::Chain {
            path: prev.path().to_owned(),
            detail: "a v2 previous digest must be a regular file (its fingerprint is read from its end)".into(),
        })?),
        DigestFormat::Legacy => None,
    };
    Ok((prev.block_size(), prev.algorithm(), parent))
}

/// Runs a dump: reads `source` to its end, hashes every block on all cores,
/// hands the chunks in order to `sink` (which writes the blocks that differ
/// from `previous`, or all without it) and writes every hash to `digest`.
///
/// Block size and hash algorithm are the previous digest's when there is
/// one (with a [`Notice`] if the options differ). Memory is bounded by a
/// few chunks per worker, whatever the source size. On success the sink and
/// the digest have been ended (trailers written, flushed).
///
/// The threads that read and hash are started by this call and inherit the
/// calling thread's niceness and I/O priority: set those first
/// ([`set_nice`](crate::set_nice), [`IoPriority::apply`](crate::IoPriority::apply)).
pub fn dump<R, P, S, D>(
    mut source: DumpSource<R>,
    mut previous: Option<&mut DigestReader<P>>,
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
    let (block_size, hash, parent) =
        resolve(options, previous.as_deref(), sink.digest_format(), progress)?;
    let plan = DumpPlan {
        block_size,
        hash,
        generation: options.generation,
        source_size: source.size,
        parent,
    };
    let encoder = sink.begin(&plan)?;
    digest.begin(&DigestSpec {
        format: sink.digest_format(),
        algorithm: hash,
        block_size,
        generation: options.generation,
        source_size: source.size.unwrap_or(UNKNOWN_SIZE),
    })?;
    let hasher = BlockHasher::new(hash, block_size);
    let bs = block_size.bytes();
    // The sink reads the changed blocks' bytes itself (legacy): they are
    // copied into the chunk. Otherwise (v2) a mapped chunk is encoded where
    // it lies.
    let keep_data = sink.reads_data();
    let map_source = options.map_source && source.mappable && source.size.is_some();
    // Whether the chunks will be mapped: a chunk is mapped when it has
    // previous hashes to compare with, or when its bytes need not be kept.
    let mapped = map_source && (previous.is_some() || !keep_data);
    let read_size = match options.read_size {
        0 if mapped => MAPPED_CHUNK,
        0 => READ_CHUNK,
        n => n,
    };
    let read_size = (read_size.max(bs) / bs) * bs;
    let blocks_per_chunk = read_size / bs;
    let workers = options.worker_count().max(1);
    let pool_size = workers * 2 + 2;
    let mut states = Vec::with_capacity(workers);
    for _ in 0..workers {
        states.push(encoder.state()?);
    }

    type Encoded<S> = <<S as DiffSink>::Encoder as ChunkEncoder>::Output;
    let (free_tx, free_rx) = channel::bounded::<Chunk<Encoded<S>>>(pool_size);
    let (work_tx, work_rx) = channel::bounded::<Chunk<Encoded<S>>>(pool_size);
    // Results carry their sequence number, so that an error is reported in
    // source order too: the first failing chunk, whichever thread saw its
    // error first.
    let (done_tx, done_rx) = channel::bounded::<(u64, Result<Chunk<Encoded<S>>>)>(pool_size);
    for _ in 0..pool_size {
        free_tx
            .send(Chunk {
                seq: 0,
                offset: 0,
                buf: vec![0u8; read_size],
                len: 0,
                unread: false,
                previous: Vec::with_capacity(blocks_per_chunk),
                hashes: Vec::with_capacity(blocks_per_chunk),
                changed: Vec::with_capacity(blocks_per_chunk),
                zero: Vec::with_capacity(blocks_per_chunk),
                encoded: Default::default(),
            })
            .expect("receiver is alive");
    }

    let mut report = DumpReport {
        block_size: block_size.get(),
        hash,
        ..DumpReport::default()
    };
    let source_name = source.name.clone();
    let encoder = &encoder;
    let hasher = &hasher;
    let total = source.size;
    let positional_file = source.positional.take();
    let positional = positional_file.as_ref();
    let limiter = RateLimiter::new(options.max_rate.unwrap_or(0), read_size as u64);
    let limiter = &limiter;
    // The file whose cache is dropped behind the hashing (never a stream).
    let drop_cache = positional.filter(|_| options.drop_cache && total.is_some());
    thread::scope(|scope| -> Result<()> {
        let reader = scope.spawn(move || -> Result<()> {
            let DumpSource {
                mut reader, name, ..
            } = source;
            let mut offset = 0u64;
            for seq in 0.. {
                let Ok(mut chunk) = free_rx.recv() else {
                    return Ok(());
                };
                // With positional reads the worker fills the chunk; here only
                // its place is decided.
                let len = match (positional, total) {
                    (Some(_), Some(total)) => (total - offset).min(read_size as u64) as usize,
                    _ => {
                        let len = read_full(&mut reader, &mut chunk.buf).map_err(|source| {
                            Error::SourceRead {
                                path: name.clone(),
                                offset,
                                source,
                            }
                        })?;
                        // Paid after the read, for the bytes it returned:
                        // the next read waits.
                        limiter.acquire(len as u64);
                        len
                    }
                };
                chunk.unread = positional.is_some() && total.is_some();
                if len == 0 {
                    break;
                }
                chunk.previous.clear();
                if let Some(prev) = previous.as_deref_mut() {
                    for _ in 0..len.div_ceil(bs) {
                        match prev.next_entry()? {
                            Some(h) => chunk.previous.push(h),
                            None => break,
                        }
                    }
                }
                (chunk.seq, chunk.offset, chunk.len) = (seq, offset, len);
                if work_tx.send(chunk).is_err() {
                    return Ok(());
                }
                offset += len as u64;
                if len < read_size {
                    break;
                }
            }
            // Read what is left of the previous digest: its length, and a
            // v2 digest's fingerprint, are checked at its end.
            if let Some(prev) = previous {
                prev.finish()?;
            }
            Ok(())
        });
        for mut state in states {
            let work_rx = work_rx.clone();
            let done_tx = done_tx.clone();
            let source_name = &source_name;
            scope.spawn(move || {
                // This thread's read buffer: one piece, kept in its core's cache.
                let mut piece = Vec::new();
                for mut chunk in work_rx {
                    let source = positional.map(|file| PositionalSource {
                        file,
                        total: total.unwrap_or(0),
                        name: source_name,
                        limiter,
                        map: map_source,
                    });
                    let result = scan_chunk(
                        &mut chunk, source, &mut piece, block_size, hasher, keep_data,
                    )
                    .and_then(|map| {
                        let data = map.as_ref().filter(|_| !keep_data).map(ChunkMap::bytes);
                        encode_chunk(&mut chunk, data, block_size, encoder, &mut state)?;
                        // A page the file lost while the chunk was hashed,
                        // copied or encoded from the map read as zeros:
                        // neither the hashes nor the frames are the
                        // source's. Checked once, after the last read.
                        match (&map, source) {
                            (Some(map), Some(source)) if map.faulted() => {
                                Err(source.unreadable(chunk.offset))
                            }
                            _ => Ok(()),
                        }
                    });
                    let seq = chunk.seq;
                    if done_tx.send((seq, result.map(|()| chunk))).is_err() {
                        return;
                    }
                }
            });
        }
        drop(work_rx);
        drop(done_tx);

        // In-order writer, on this thread.
        let written = (|| -> Result<()> {
            let mut waiting: BTreeMap<u64, Result<Chunk<Encoded<S>>>> = BTreeMap::new();
            let mut next_seq = 0u64;
            let mut dropped_to = 0u64;
            for (seq, chunk) in &done_rx {
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
                        }
                    }
                    report.blocks += chunk.hashes.len() as u64;
                    report.source_bytes += chunk.len as u64;
                    if let Some(file) = drop_cache {
                        let end = chunk.offset + chunk.len as u64;
                        drop_cached(file, dropped_to, end, total, &source_name)?;
                        dropped_to = end;
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
            Ok(())
        })();
        // Unblock the reader and workers if the writer stopped early.
        drop(free_tx);
        drop(done_rx);
        let read = reader
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p));
        read?;
        written
    })?;
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

/// Bytes a hashing thread reads from a positional source at a time (whole
/// blocks, at least one): a piece small enough that the buffer it is read
/// into stays in the core's L2 cache (512 KiB on the machines this was
/// measured on), so that the kernel's copy out of the page cache and the
/// hash that follows it run at cache speed instead of DRAM speed. A chunk
/// of 1 MiB read whole into a pool of chunk buffers (the design before)
/// costs a DRAM write-allocate per byte, and its throughput fell to a
/// quarter on a day when memory bandwidth was shared.
const SCAN_PIECE: usize = 128 << 10;

/// A source read by position on the hashing threads.
#[derive(Clone, Copy)]
struct PositionalSource<'a> {
    file: &'a File,
    /// Its size when the dump began.
    total: u64,
    name: &'a Path,
    limiter: &'a RateLimiter,
    /// Read through a memory map ([`DumpOptions::map_source`]).
    map: bool,
}

impl PositionalSource<'_> {
    /// The error for a chunk at `offset` of which a mapped page could not
    /// be read: the file shrank (named with where it ends now), or the
    /// device failed.
    fn unreadable(&self, offset: u64) -> Error {
        match self.file.metadata() {
            Ok(meta) if meta.is_file() && meta.len() < self.total => Error::SourceSizeChanged {
                path: self.name.to_owned(),
                expected: self.total,
                read: meta.len(),
            },
            _ => Error::SourceRead {
                path: self.name.to_owned(),
                offset,
                source: std::io::Error::from_raw_os_error(libc::EIO),
            },
        }
    }

    /// Fills `buf` from `offset`; the file ending before that is
    /// [`Error::SourceSizeChanged`] naming where it ended.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        let mut filled = 0;
        while filled < buf.len() {
            let at = offset + filled as u64;
            match self.file.read_at(&mut buf[filled..], at) {
                // The file shrank since its size was taken: say so, with
                // where it ended and the size it had.
                Ok(0) => {
                    return Err(Error::SourceSizeChanged {
                        path: self.name.to_owned(),
                        expected: self.total,
                        read: at,
                    });
                }
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(source) => {
                    return Err(Error::SourceRead {
                        path: self.name.to_owned(),
                        offset: at,
                        source,
                    });
                }
            }
        }
        Ok(())
    }
}

/// Hashes a chunk's blocks, comparing each with the previous digest's, and
/// leaves the bytes of every changed block in `chunk.buf` for the sink.
///
/// A chunk the reader left unread is read here, once the rate limit allows
/// it: through a guarded memory map of the chunk (see [`mapped`]), the
/// blocks hashed where they lie and only the changed ones copied, or, when
/// mapping is off or impossible, by position one [`SCAN_PIECE`] at a time. A piece whose
/// blocks have previous hashes to compare with is read into `piece` (this
/// thread's buffer, which stays in cache) and hashed there; only the blocks
/// that changed are copied into the chunk. A piece beyond the previous
/// digest (every block of a full dump) is all kept, so it is read straight
/// into the chunk and hashed while it is still in cache.
fn scan_chunk<O>(
    chunk: &mut Chunk<O>,
    source: Option<PositionalSource<'_>>,
    piece: &mut Vec<u8>,
    block_size: BlockSize,
    hasher: &BlockHasher,
    keep_data: bool,
) -> Result<Option<ChunkMap>> {
    chunk.hashes.clear();
    chunk.changed.clear();
    chunk.zero.clear();
    let bs = block_size.bytes();
    let Some(source) = source.filter(|_| chunk.unread) else {
        hash_kept(chunk, 0, chunk.len, bs, hasher);
        return Ok(None);
    };
    source.limiter.acquire(chunk.len as u64);
    // Mapped where there are previous hashes to compare with, or where the
    // changed blocks need not be copied out (the sink does not read them:
    // they are encoded from the map). A chunk whose blocks are all copied
    // (a full legacy dump) gains nothing from the map but its set-up and
    // tear-down, and is read straight into the chunk.
    if source.map && (!chunk.previous.is_empty() || !keep_data) {
        // A source that cannot be mapped (or guarded) is read instead.
        // The map is returned so that the caller checks its guard after
        // the encoder's reads too.
        if let Ok(Some(map)) = ChunkMap::new(source.file, chunk.offset, chunk.len) {
            hash_read(chunk, 0, map.bytes(), bs, hasher, keep_data);
            return Ok(Some(map));
        }
    }
    let piece_len = (SCAN_PIECE / bs).max(1) * bs;
    let mut at = 0;
    while at < chunk.len {
        let len = piece_len.min(chunk.len - at);
        let first = at / bs;
        let offset = chunk.offset + at as u64;
        if chunk.previous.len() <= first {
            source.read_exact_at(&mut chunk.buf[at..at + len], offset)?;
            hash_kept(chunk, at, len, bs, hasher);
        } else {
            if piece.len() < piece_len {
                piece.resize(piece_len, 0);
            }
            let bytes = &mut piece[..len];
            source.read_exact_at(bytes, offset)?;
            hash_read(chunk, at, bytes, bs, hasher, true);
        }
        at += len;
    }
    Ok(None)
}

/// Hashes `bytes`, the chunk's source from byte `at` as read outside the
/// chunk (a map, a piece), comparing each block with the previous digest's
/// and copying into the chunk only the blocks that changed (with `copy`).
fn hash_read<O>(
    chunk: &mut Chunk<O>,
    at: usize,
    bytes: &[u8],
    bs: usize,
    hasher: &BlockHasher,
    copy: bool,
) {
    let first = at / bs;
    for (j, block) in bytes.chunks(bs).enumerate() {
        let (h, zero) = hasher.hash(block);
        let changed = chunk.previous.get(first + j) != Some(&h);
        if changed && copy {
            let start = at + j * bs;
            chunk.buf[start..start + block.len()].copy_from_slice(block);
        }
        chunk.changed.push(changed);
        chunk.hashes.push(h);
        chunk.zero.push(zero);
    }
}

/// Hashes the blocks of `chunk.buf[at..at + len]`, which are in the chunk
/// already, comparing each with the previous digest's.
fn hash_kept<O>(chunk: &mut Chunk<O>, at: usize, len: usize, bs: usize, hasher: &BlockHasher) {
    let first = at / bs;
    for (j, block) in chunk.buf[at..at + len].chunks(bs).enumerate() {
        let (h, zero) = hasher.hash(block);
        chunk
            .changed
            .push(chunk.previous.get(first + j) != Some(&h));
        chunk.hashes.push(h);
        chunk.zero.push(zero);
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

/// Runs the sink's encoder (v2: compression) over a scanned chunk, whose
/// bytes are `data` (its map) or else in `chunk.buf`.
fn encode_chunk<E: ChunkEncoder>(
    chunk: &mut Chunk<E::Output>,
    data: Option<&[u8]>,
    block_size: BlockSize,
    encoder: &E,
    state: &mut E::State,
) -> Result<()> {
    let view = DumpedChunk {
        offset: chunk.offset,
        first_block: chunk.offset / block_size.bytes() as u64,
        data: data.unwrap_or(&chunk.buf[..chunk.len]),
        block_size,
        changed: &chunk.changed,
        zero: &chunk.zero,
    };
    encoder.encode(state, &view, &mut chunk.encoded)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::progress::NoProgress;
    use archive_format::FrameCompression;
    use std::io;

    #[test]
    fn a_source_that_shrinks_during_the_dump_names_where_it_ended() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk.img");
        std::fs::write(&path, vec![7u8; 3 << 20]).unwrap();
        let source = DumpSource::open(&path).unwrap();
        // Cut after the size was taken, as a live file shrinking would.
        File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(1536 << 10)
            .unwrap();
        let mut sink = V2Sink::new(Vec::new(), "out", FrameCompression::None, 0);
        let mut digest = DigestWriter::new(io::sink(), "digest");
        let options = DumpOptions {
            threads: 1,
            ..DumpOptions::default()
        };
        let err = dump(
            source,
            None::<&mut DigestReader<&[u8]>>,
            &mut sink,
            &mut digest,
            &options,
            &mut NoProgress,
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            err,
            format!(
                "{}: size changed during the dump: expected 3145728 bytes, read 1572864 (back up a snapshot, not a live file)",
                path.display()
            )
        );
    }

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
