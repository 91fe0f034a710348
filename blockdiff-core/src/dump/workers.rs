//! The hashing stage of a dump, on every hashing thread: reads a chunk the
//! reader left unread (by position, or through a memory map), hashes its
//! blocks against the previous digest's, keeps the bytes of the changed
//! ones, and runs the sink's encoder over it.

use archive_format::{BlockHash, BlockSize};
use crossbeam_channel::{Receiver, Sender};

use super::mapped::ChunkMap;
use super::reader::PositionalSource;
use super::tracked::{TrackedChanges, scan_tracked};
use super::{ChunkEncoder, DumpedChunk};
use crate::Result;
use crate::block::BlockHasher;

/// A run of consecutive blocks in flight through the pipeline.
pub(super) struct Chunk<O> {
    pub(super) seq: u64,
    pub(super) offset: u64,
    pub(super) buf: Vec<u8>,
    pub(super) len: usize,
    /// The bytes are still to be read, by position, on a hashing thread.
    pub(super) unread: bool,
    /// Bytes of the source read for this chunk (fewer than its length when
    /// tracked changes let blocks go unread).
    pub(super) read: u64,
    pub(super) previous: Vec<BlockHash>,
    pub(super) hashes: Vec<BlockHash>,
    pub(super) changed: Vec<bool>,
    pub(super) zero: Vec<bool>,
    pub(super) encoded: O,
}

/// What a hashing thread hands the writer: the chunk's sequence number, so
/// that an error is reported in source order too, and the chunk or the
/// error that stopped it.
pub(super) type Done<O> = (u64, Result<Chunk<O>>);

/// The hashing stage: what every hashing thread reads, hashes and encodes
/// a chunk with, the same for every chunk (shared by reference).
pub(super) struct HashStage<'a, E> {
    /// The sink's encoder (v2: compression).
    pub(super) encoder: &'a E,
    /// Hashes one block.
    pub(super) hasher: &'a BlockHasher,
    /// The block size.
    pub(super) block_size: BlockSize,
    /// Copy the bytes of the changed blocks into the chunk for the sink
    /// ([`DiffSink::reads_data`](super::DiffSink::reads_data)).
    pub(super) keep_data: bool,
    /// The source, read by position here into the chunks the reader marked
    /// unread; `None` when the reader reads every chunk.
    pub(super) source: Option<PositionalSource<'a>>,
    /// Read only the blocks these changes touch
    /// ([`DumpOptions::tracked`](super::DumpOptions::tracked)).
    pub(super) tracked: Option<&'a TrackedChanges>,
}

impl<E: ChunkEncoder> HashStage<'_, E> {
    /// Runs one hashing thread: takes the chunks the reader placed from
    /// `work_rx`, reads (if unread), hashes and encodes each (with `state`,
    /// this thread's encoder state), and sends it, or the error that
    /// stopped it, with its sequence number to the writer on `done_tx`.
    /// Returns when the reader is done (`work_rx` is closed and empty) or
    /// the writer has stopped (`done_tx` is closed).
    pub(super) fn run(
        &self,
        mut state: E::State,
        work_rx: Receiver<Chunk<E::Output>>,
        done_tx: Sender<Done<E::Output>>,
    ) {
        let HashStage {
            encoder,
            hasher,
            block_size,
            keep_data,
            source,
            tracked,
        } = *self;
        // This thread's read buffer: one piece, kept in its core's cache.
        let mut piece = Vec::new();
        for mut chunk in work_rx {
            let result = scan_chunk(
                &mut chunk, source, tracked, &mut piece, block_size, hasher, keep_data,
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
    }
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

/// Hashes a chunk's blocks, comparing each with the previous digest's, and
/// leaves the bytes of every changed block in `chunk.buf` for the sink.
///
/// A chunk the reader left unread is read here, once the rate limit allows
/// it: through a guarded memory map of the chunk (see
/// [`mapped`](super::mapped)), the blocks hashed where they lie and only
/// the changed ones copied, or, when mapping is off or impossible, by
/// position one [`SCAN_PIECE`] at a time. A piece whose blocks have
/// previous hashes to compare with is read into `piece` (this
/// thread's buffer, which stays in cache) and hashed there; only the blocks
/// that changed are copied into the chunk. A piece beyond the previous
/// digest (every block of a full dump) is all kept, so it is read straight
/// into the chunk and hashed while it is still in cache.
fn scan_chunk<O>(
    chunk: &mut Chunk<O>,
    source: Option<PositionalSource<'_>>,
    tracked: Option<&TrackedChanges>,
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
    let piece_len = (SCAN_PIECE / bs).max(1) * bs;
    if let Some(changes) = tracked {
        chunk.read = scan_tracked(chunk, source, changes, piece, piece_len, block_size, hasher)?;
        return Ok(None);
    }
    chunk.read = chunk.len as u64;
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
pub(super) fn hash_read<O>(
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
