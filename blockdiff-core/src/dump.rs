//! The diff engine: source + optional previous digest → changed blocks + new
//! digest, hashed on every core.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::thread;

use archive_format::LegacyWriter;
use crossbeam_channel as channel;

use crate::block::{BlockHash, BlockSize, hash_blocks};
use crate::digest::{DigestReader, DigestWriter};
use archive_format::read_full;

use crate::error::ArchiveContext;
use crate::progress::{Notice, Progress};
use crate::{Error, Result};

/// Receives the blocks a dump found changed, in increasing offset order.
pub trait BlockSink {
    /// Called once, before any block, with the block size in use.
    fn begin(&mut self, block_size: BlockSize) -> Result<()>;
    /// One changed block; `data` is the block size long except for the
    /// source's last block.
    fn write_block(&mut self, offset: u64, data: &[u8]) -> Result<()>;
}

/// A [`BlockSink`] that writes the legacy diff stream to `W`.
#[derive(Debug)]
pub struct LegacySink<W: Write> {
    state: SinkState<W>,
    path: PathBuf,
}

#[derive(Debug)]
enum SinkState<W: Write> {
    Pending(W),
    Writing(LegacyWriter<W>),
    Poisoned,
}

impl<W: Write> LegacySink<W> {
    /// A sink writing to `inner`; `path` names it in errors (`-` for stdout).
    pub fn new(inner: W, path: impl Into<PathBuf>) -> Self {
        LegacySink {
            state: SinkState::Pending(inner),
            path: path.into(),
        }
    }

    /// Bytes of diff written so far.
    pub fn bytes_written(&self) -> u64 {
        match &self.state {
            SinkState::Writing(w) => w.position(),
            _ => 0,
        }
    }

    /// Flushes and returns the underlying writer. A sink that never began
    /// (no dump ran) returns it untouched.
    pub fn finish(self) -> Result<W> {
        match self.state {
            SinkState::Pending(w) => Ok(w),
            SinkState::Writing(w) => w.finish().in_file(&self.path),
            SinkState::Poisoned => {
                Err(Error::InvalidOption("diff sink used after an error".into()))
            }
        }
    }
}

impl<W: Write> BlockSink for LegacySink<W> {
    fn begin(&mut self, block_size: BlockSize) -> Result<()> {
        match std::mem::replace(&mut self.state, SinkState::Poisoned) {
            SinkState::Pending(w) => {
                self.state =
                    SinkState::Writing(LegacyWriter::new(w, block_size.get()).in_file(&self.path)?);
                Ok(())
            }
            _ => Err(Error::InvalidOption("diff sink begun twice".into())),
        }
    }

    fn write_block(&mut self, offset: u64, data: &[u8]) -> Result<()> {
        match &mut self.state {
            SinkState::Writing(w) => w.write_record(offset, data).in_file(&self.path),
            _ => Err(Error::InvalidOption(
                "diff sink written before begin".into(),
            )),
        }
    }
}

/// How a dump runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DumpOptions {
    /// Block size for a full dump. An incremental dump uses the previous
    /// digest's block size (with a [`Notice`] when they differ).
    pub block_size: BlockSize,
    /// Hash worker threads; 0 means one per core.
    pub threads: usize,
    /// Bytes read from the source at a time (rounded to whole blocks).
    pub read_size: usize,
}

impl Default for DumpOptions {
    fn default() -> Self {
        DumpOptions {
            block_size: BlockSize::DEFAULT,
            threads: 0,
            read_size: 4 << 20,
        }
    }
}

impl DumpOptions {
    fn worker_count(&self) -> usize {
        match self.threads {
            0 => thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }
}

/// What a dump did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DumpReport {
    /// The block size used.
    pub block_size: u32,
    /// Bytes read from the source: its size.
    pub source_bytes: u64,
    /// Blocks in the source.
    pub blocks: u64,
    /// Blocks written to the diff.
    pub changed_blocks: u64,
    /// Bytes of block data written to the diff.
    pub changed_bytes: u64,
}

/// A run of consecutive blocks read from the source.
struct Chunk {
    seq: u64,
    offset: u64,
    buf: Vec<u8>,
    len: usize,
    hashes: Vec<BlockHash>,
}

/// Picks the block size: the previous digest's when there is one.
fn resolve_block_size<P: Read>(
    requested: BlockSize,
    previous: Option<&DigestReader<P>>,
    progress: &mut dyn Progress,
) -> BlockSize {
    match previous {
        Some(prev) if prev.block_size() != requested => {
            progress.notice(Notice::BlockSizeFromDigest {
                digest: prev.path().to_owned(),
                requested,
                used: prev.block_size(),
            });
            prev.block_size()
        }
        Some(prev) => prev.block_size(),
        None => requested,
    }
}

/// Runs a dump: reads `source` (named `source_name` in errors) to its end,
/// hashes every block on all cores, writes the blocks whose hash differs
/// from `previous` (or all of them without one) to `sink` and every hash to
/// `digest`.
///
/// The block size is `options.block_size`, or the previous digest's (with a
/// [`Notice`] when they differ); `sink` and `digest` are begun with it.
/// Memory is bounded by a few read buffers per worker, whatever the source
/// size.
pub fn dump<R, P, S, D>(
    source: R,
    source_name: &Path,
    mut previous: Option<&mut DigestReader<P>>,
    sink: &mut S,
    digest: &mut DigestWriter<D>,
    options: &DumpOptions,
    progress: &mut dyn Progress,
) -> Result<DumpReport>
where
    R: Read + Send,
    P: Read,
    S: BlockSink + ?Sized,
    D: Write,
{
    let block_size = resolve_block_size(options.block_size, previous.as_deref(), progress);
    let bs = block_size.bytes();
    let read_size = (options.read_size.max(bs) / bs) * bs;
    let workers = options.worker_count().max(1);
    let pool_size = workers * 2 + 2;
    sink.begin(block_size)?;
    digest.begin(block_size)?;

    let (free_tx, free_rx) = channel::bounded::<Vec<u8>>(pool_size);
    let (work_tx, work_rx) = channel::bounded::<Chunk>(pool_size);
    let (done_tx, done_rx) = channel::bounded::<Chunk>(pool_size);
    for _ in 0..pool_size {
        free_tx
            .send(vec![0u8; read_size])
            .expect("receiver is alive");
    }

    let mut report = DumpReport {
        block_size: block_size.get(),
        ..DumpReport::default()
    };
    thread::scope(|scope| -> Result<DumpReport> {
        let reader = scope.spawn(move || -> Result<()> {
            let mut source = source;
            let mut offset = 0u64;
            for seq in 0.. {
                let Ok(mut buf) = free_rx.recv() else {
                    return Ok(());
                };
                let len = read_full(&mut source, &mut buf).map_err(|source| Error::SourceRead {
                    path: source_name.to_owned(),
                    offset,
                    source,
                })?;
                if len == 0 {
                    return Ok(());
                }
                let chunk = Chunk {
                    seq,
                    offset,
                    buf,
                    len,
                    hashes: Vec::new(),
                };
                if work_tx.send(chunk).is_err() {
                    return Ok(());
                }
                offset += len as u64;
                if len < read_size {
                    return Ok(());
                }
            }
            Ok(())
        });
        for _ in 0..workers {
            let work_rx = work_rx.clone();
            let done_tx = done_tx.clone();
            scope.spawn(move || {
                for mut chunk in work_rx {
                    hash_blocks(&chunk.buf[..chunk.len], block_size, &mut chunk.hashes);
                    if done_tx.send(chunk).is_err() {
                        return;
                    }
                }
            });
        }
        drop(work_rx);
        drop(done_tx);

        // In-order writer, on this thread.
        let written = (|| -> Result<()> {
            let mut waiting: BTreeMap<u64, Chunk> = BTreeMap::new();
            let mut next_seq = 0u64;
            for chunk in &done_rx {
                waiting.insert(chunk.seq, chunk);
                while let Some(chunk) = waiting.remove(&next_seq) {
                    next_seq += 1;
                    let data = &chunk.buf[..chunk.len];
                    for (i, (block, hash)) in data.chunks(bs).zip(&chunk.hashes).enumerate() {
                        let unchanged = match previous.as_deref_mut() {
                            Some(prev) => prev.next_entry()?.as_ref() == Some(hash),
                            None => false,
                        };
                        if !unchanged {
                            sink.write_block(chunk.offset + (i * bs) as u64, block)?;
                            report.changed_blocks += 1;
                            report.changed_bytes += block.len() as u64;
                        }
                        digest.push(hash)?;
                    }
                    report.blocks += chunk.hashes.len() as u64;
                    report.source_bytes += chunk.len as u64;
                    progress.advance(chunk.len as u64);
                    // The reader may have stopped already; the buffer is then
                    // simply dropped.
                    let _ = free_tx.send(chunk.buf);
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
        written?;
        Ok(report)
    })
}
