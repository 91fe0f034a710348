//! The legacy format's side of a replay ([`ChainReader`]): a chain of the
//! original blockdiff's streams read newest first, record by record, on
//! the calling thread (a stream may be gzip, and is read in order), in
//! batches of records that the workers hash.

use std::path::Path;

use archive_format::{BlockHash, Compression, LegacyReader, RecordHeader, SkipRead};

use crate::error::ArchiveContext;
use crate::generation_source::{DiffBytes, DiffStream};
use crate::store::{DiffFormat, DiffLocation};
use crate::{Error, Result};

use super::block_set::BlockSet;
use super::plan::chain_error;
use super::replay::{ChainReader, JOBS_PER_THREAD, ReplayOutput, ReplayParams};

/// Most bytes of block data in one batch of legacy records handed to a
/// hashing thread (at least one record).
const LEGACY_BATCH_BYTES: usize = 1 << 20;

/// Most records in one batch: with tiny blocks, the records' descriptions
/// and hashes stay small too.
const LEGACY_BATCH_RECORDS: usize = 4096;

/// Opens a legacy diff (plain or gzip, as its name says) and reads its
/// header.
pub(crate) fn open_legacy(
    diff: &DiffLocation,
    bytes: &DiffBytes,
    read_size: usize,
) -> Result<LegacyReader<Box<dyn SkipRead + Send>>> {
    let file = DiffStream::new(bytes.clone(), read_size);
    let compression = match diff.format {
        DiffFormat::Legacy(c) => c,
        DiffFormat::V2 { .. } => Compression::None,
    };
    LegacyReader::new(compression.reader(file)).in_file(&diff.path)
}

/// One record of a [`RecordBatch`].
#[derive(Debug, Clone, Copy)]
struct BatchRecord {
    /// Index in the chain (newest first) of the generation.
    diff: usize,
    header: RecordHeader,
    index: u64,
    /// Where its data is in the batch's `data`.
    start: usize,
    len: usize,
}

/// Consecutive legacy records to write: read on the calling thread, hashed
/// on a worker, written on the calling thread.
#[derive(Default)]
pub(super) struct RecordBatch {
    records: Vec<BatchRecord>,
    /// The records' data, one after the other.
    data: Vec<u8>,
    /// With a digest: the hash of each record's data.
    hashes: Vec<BlockHash>,
    /// What stopped the reading after these records.
    error: Option<Error>,
}

/// A legacy chain, newest first, read into batches of records.
pub(super) struct LegacyBatches<'d> {
    diffs: &'d [(DiffLocation, DiffBytes)],
    read_size: usize,
    /// The file that names the expected blocks, for messages.
    authority: &'d Path,
    params: ReplayParams<'d>,
}

/// Where the reading of a legacy chain is.
pub(super) struct LegacyCursor {
    /// The diff being read (its index is `next_diff - 1`).
    reader: Option<LegacyReader<Box<dyn SkipRead + Send>>>,
    next_diff: usize,
    /// One record's data, as read.
    block: Vec<u8>,
    done: bool,
}

impl<'d> LegacyBatches<'d> {
    pub(super) fn new(
        diffs: &'d [(DiffLocation, DiffBytes)],
        read_size: usize,
        authority: &'d Path,
        params: ReplayParams<'d>,
    ) -> Self {
        LegacyBatches {
            diffs,
            read_size,
            authority,
            params,
        }
    }

    /// Fills `batch` (emptied first) with the next records to write, and
    /// returns whether there is anything to do with it.
    fn next_batch(
        &self,
        cursor: &mut LegacyCursor,
        batch: &mut RecordBatch,
        written: &mut BlockSet,
    ) -> bool {
        batch.records.clear();
        batch.data.clear();
        batch.error = None;
        if cursor.done {
            return false;
        }
        if let Err(e) = self.fill(cursor, batch, written) {
            batch.error = Some(e);
            cursor.done = true;
        }
        !batch.records.is_empty() || batch.error.is_some()
    }

    fn fill(
        &self,
        cursor: &mut LegacyCursor,
        batch: &mut RecordBatch,
        written: &mut BlockSet,
    ) -> Result<()> {
        let bs = self.params.block_size;
        let block_count = self.params.block_count;
        while batch.data.len() < LEGACY_BATCH_BYTES && batch.records.len() < LEGACY_BATCH_RECORDS {
            let Some(reader) = cursor.reader.as_mut() else {
                let Some((diff, bytes)) = self.diffs.get(cursor.next_diff) else {
                    cursor.done = true;
                    return Ok(());
                };
                cursor.reader = Some(open_legacy(diff, bytes, self.read_size)?);
                cursor.next_diff += 1;
                continue;
            };
            let i = cursor.next_diff - 1;
            let diff = &self.diffs[i].0;
            let Some(rec) = reader.next_record().in_file(&diff.path)? else {
                cursor.reader = None;
                continue;
            };
            let index = rec.block_offset / u64::from(bs.get());
            let beyond = block_count.is_some_and(|n| index >= n);
            if beyond && i == 0 {
                // Diff K holds only blocks of generation K's source: a
                // block beyond the digest's count means the digest
                // (legacy: no size) is short.
                return Err(chain_error(
                    self.authority,
                    format!(
                        "lists {} blocks, but {} holds the block at offset {} (record at stream offset {}): the digest is cut short or of another run; nothing was written",
                        block_count.unwrap_or(0),
                        diff.path.display(),
                        rec.block_offset,
                        rec.stream_offset
                    ),
                ));
            }
            if beyond || written.contains(index) {
                if self.params.check_all {
                    reader.read_data(&mut cursor.block).in_file(&diff.path)?;
                } else {
                    // A newer generation has it, or the source shrank.
                    reader.skip_data().in_file(&diff.path)?;
                }
                continue;
            }
            let len = reader.read_data(&mut cursor.block).in_file(&diff.path)?;
            if let Some(n) = block_count
                && len < bs.bytes()
                && index + 1 != n
            {
                return Err(chain_error(
                    &diff.path,
                    format!(
                        "record at stream offset {}: short block at offset {} is not the source's last block",
                        rec.stream_offset, rec.block_offset
                    ),
                ));
            }
            batch.records.push(BatchRecord {
                diff: i,
                header: rec,
                index,
                start: batch.data.len(),
                len,
            });
            batch.data.extend_from_slice(&cursor.block);
            written.insert(index);
        }
        Ok(())
    }
}

/// A legacy chain: its records are read in order on the calling thread,
/// hashed on the workers, checked and written on the calling thread in
/// order.
impl ChainReader for LegacyBatches<'_> {
    type Job = RecordBatch;
    type Planner = LegacyCursor;
    type Worker = ();
    type Writer = ();

    fn jobs_per_thread(&self) -> usize {
        JOBS_PER_THREAD
    }

    fn worker_threads(&self, threads: usize) -> usize {
        // Without a digest there is nothing to hash: all on this thread.
        if self.params.checking { threads } else { 1 }
    }

    fn start(&self) -> (LegacyCursor, ()) {
        let cursor = LegacyCursor {
            reader: None,
            next_diff: 0,
            block: Vec::with_capacity(self.params.block_size.bytes()),
            done: false,
        };
        (cursor, ())
    }

    fn plan(
        &self,
        cursor: &mut LegacyCursor,
        batch: &mut RecordBatch,
        written: &mut BlockSet,
    ) -> bool {
        self.next_batch(cursor, batch, written)
    }

    fn read(&self, (): &mut (), batch: &mut RecordBatch) {
        batch.hashes.clear();
        if self.params.checking {
            let (data, hasher) = (&batch.data, self.params.hasher);
            let hash = |r: &BatchRecord| hasher.hash(&data[r.start..r.start + r.len]).0;
            batch.hashes.extend(batch.records.iter().map(hash));
        }
    }

    fn write(
        &self,
        (): &mut (),
        batch: &mut RecordBatch,
        output: &mut ReplayOutput<'_, '_>,
    ) -> Result<()> {
        let ReplayOutput {
            checker,
            out,
            report,
            end,
            progress,
        } = output;
        for (k, r) in batch.records.iter().enumerate() {
            let data = &batch.data[r.start..r.start + r.len];
            let path = &self.diffs[r.diff].0.path;
            checker.check_hash(r.index, batch.hashes.get(k), path, r.header.stream_offset)?;
            out.put(r.header.block_offset, data, report, &mut **progress)?;
            *end = (*end).max(r.header.block_offset + data.len() as u64);
            progress.advance(data.len() as u64);
        }
        batch.error.take().map_or(Ok(()), Err)
    }

    fn finish(&self, _: LegacyCursor, (): (), _: &mut ReplayOutput<'_, '_>) -> Result<()> {
        Ok(())
    }
}
