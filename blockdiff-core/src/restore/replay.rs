//! The replay engine: a chain read newest first through its format's
//! [`ChainReader`] on every core ([`ordered::run`]), every block taken
//! from the newest generation that has it, checked against the digest and
//! written once, in order; then what was restored checked against the
//! plan.

use std::path::Path;

use archive_format::{BlockHash, BlockSize, DigestFile};

use crate::block::{BlockHasher, HashFn};
use crate::ordered;
use crate::progress::Progress;
use crate::{Error, Result};

use super::RestoreReport;
use super::block_set::BlockSet;
use super::frames::V2Frames;
use super::legacy_batches::LegacyBatches;
use super::plan::{Chain, RestorePlan, chain_error};
use super::target::Target;

/// Job buffers in flight per worker thread: one being worked on, one
/// waiting (in the queue, or for an earlier job to be written).
pub(super) const JOBS_PER_THREAD: usize = 2;

/// What every format's reader is told of the replay.
#[derive(Clone, Copy)]
pub(super) struct ReplayParams<'a> {
    /// The chain's block size.
    pub(super) block_size: BlockSize,
    /// Blocks of the restored image, when known before reading the chain.
    pub(super) block_count: Option<u64>,
    /// Every block of every generation is read and checked, needed or not.
    pub(super) check_all: bool,
    /// The blocks are checked against a digest, so hashed.
    pub(super) checking: bool,
    /// Hashes a block as the digest does.
    pub(super) hasher: &'a BlockHasher,
}

/// How a replay reads a chain of one diff format: the only part of a
/// replay that knows the format. [`run`] hands jobs (buffers that
/// circulate, reused) between three steps, each with its own state:
///
/// - [`plan`](Self::plan), on the calling thread, in order: the next job,
///   the blocks it provides that no newer generation provided, marked in
///   `written` as they are planned (which generation provides a block
///   depends only on the chain's indexes or record headers, never on the
///   data);
/// - [`read`](Self::read), on a worker: read, decode and hash the job's
///   blocks, keeping any error in the job;
/// - [`write`](Self::write), on the calling thread, in the order planned:
///   check the blocks against the digest and write them, or return the
///   job's error (the first in order wins, whatever the thread count).
///
/// The replay is generic over it: one call per job, the blocks handled in
/// the implementation's own loops.
pub(super) trait ChainReader: Sync {
    /// One job: a batch of records, frames.
    type Job: Send + Default;
    /// Where the planning is in the chain.
    type Planner;
    /// A worker's own buffers.
    type Worker: Default;
    /// What writing keeps between jobs.
    type Writer;

    /// Job buffers in flight per worker thread.
    fn jobs_per_thread(&self) -> usize;

    /// The worker threads to start when `threads` are allowed (1: all on
    /// the calling thread).
    fn worker_threads(&self, threads: usize) -> usize;

    /// The planning and writing states at the start of the chain.
    fn start(&self) -> (Self::Planner, Self::Writer);

    /// Fills `job` with the next blocks to take and marks them in
    /// `written`; false when there is nothing left (not called again).
    fn plan(
        &self,
        planner: &mut Self::Planner,
        job: &mut Self::Job,
        written: &mut BlockSet,
    ) -> bool;

    /// Reads, decodes and hashes `job` (on a worker).
    fn read(&self, worker: &mut Self::Worker, job: &mut Self::Job);

    /// Checks and writes `job`, or returns the error planning or reading
    /// it found.
    fn write(
        &self,
        writer: &mut Self::Writer,
        job: &mut Self::Job,
        output: &mut ReplayOutput<'_, '_>,
    ) -> Result<()>;

    /// Ends a chain every job of which was written.
    fn finish(
        &self,
        planner: Self::Planner,
        writer: Self::Writer,
        output: &mut ReplayOutput<'_, '_>,
    ) -> Result<()>;
}

/// Where a replay's blocks go, on the calling thread: checked, written
/// and counted.
pub(super) struct ReplayOutput<'a, 'p> {
    pub(super) checker: BlockChecker<'a>,
    pub(super) out: &'a mut Target,
    pub(super) report: RestoreReport,
    /// End of the last byte written (legacy: the restored size).
    pub(super) end: u64,
    pub(super) progress: &'p mut dyn Progress,
}

/// Replays the chain `reader` reads into `output`, with `threads` worker
/// threads at most; `written` gets every block taken.
pub(super) fn run<R: ChainReader>(
    reader: &R,
    threads: usize,
    written: &mut BlockSet,
    output: &mut ReplayOutput<'_, '_>,
) -> Result<()> {
    // The jobs that circulate between the calling thread and the workers.
    let spares = (0..threads.max(1) * reader.jobs_per_thread())
        .map(|_| R::Job::default())
        .collect();
    let (mut planner, mut writer) = reader.start();
    ordered::run(
        reader.worker_threads(threads),
        spares,
        |job: &mut R::Job| reader.plan(&mut planner, job, written),
        R::Worker::default,
        |worker, job| reader.read(worker, job),
        |job| reader.write(&mut writer, job, output),
    )?;
    reader.finish(planner, writer, output)
}

impl RestorePlan {
    /// Replays the chain newest first into `out`. With `check_all`, every
    /// block of every generation is read and checked, needed or not.
    pub(super) fn replay(
        &mut self,
        out: &mut Target,
        check_all: bool,
        progress: &mut dyn Progress,
    ) -> Result<RestoreReport> {
        let block_count = self.block_count();
        let authority = self.size_authority();
        let function =
            HashFn::with_key(self.hash, self.hash_key.as_ref()).ok_or_else(|| Error::Chain {
                path: self.metadata_path.clone(),
                detail: format!(
                    "the chain's block hashes are {}, and {}",
                    self.hash,
                    if self.hash_key.is_some() {
                        "a key was given for a chain that is not encrypted"
                    } else {
                        "no key was given (the chain is encrypted)"
                    }
                ),
            })?;
        let hasher = BlockHasher::new(function, self.block_size);
        let verified = self.digest.is_some();
        let threads = self.worker_threads();
        let params = ReplayParams {
            block_size: self.block_size,
            block_count,
            check_all,
            checking: verified,
            hasher: &hasher,
        };
        let mut written = BlockSet::new();
        let mut output = ReplayOutput {
            checker: BlockChecker {
                digest: self.digest.as_mut(),
                hasher: &hasher,
            },
            out,
            report: RestoreReport {
                generation: self.generation,
                verified,
                ..RestoreReport::default()
            },
            end: 0,
            progress,
        };
        // The format's reader, chosen once for the whole chain: the replay
        // is compiled for each, with no dispatch per job or block.
        match &self.chain {
            Chain::Legacy(diffs) => {
                let reader = LegacyBatches::new(diffs, self.stream_read_size, &authority, params);
                run(&reader, threads, &mut written, &mut output)?;
            }
            Chain::V2(diffs) => {
                let reader = V2Frames::new(diffs, params);
                run(&reader, threads, &mut written, &mut output)?;
            }
        }
        let ReplayOutput {
            mut report, end, ..
        } = output;
        if let Some(n) = block_count
            && (self.digest.is_some() || self.source_size.is_some())
        {
            let (count, first) = written.missing_below(n);
            if count > 0 {
                return Err(Error::MissingBlocks {
                    digest: authority,
                    count,
                    first_offset: self.block_size.offset_of(first),
                });
            }
        }
        if let (Chain::Legacy(_), Some(size)) = (&self.chain, self.metadata_size)
            && end != size
        {
            return Err(chain_error(
                &self.metadata_path,
                format!(
                    "says generation {}'s source was {size} bytes, but the chain restores {end}; nothing was written",
                    self.generation
                ),
            ));
        }
        report.source_size = self.source_size.unwrap_or(end);
        Ok(report)
    }
}

/// Checks restored blocks against the digest of the generation restored.
pub(super) struct BlockChecker<'a> {
    /// The digest of the generation restored; `None`: nothing is checked.
    pub(super) digest: Option<&'a mut DigestFile>,
    hasher: &'a BlockHasher,
}

impl BlockChecker<'_> {
    /// Checks block `index`, hashing `data` (as read from `from`, at
    /// `stream_offset`) here.
    // Called per block from the formats' modules: inlined there, as when
    // everything was one module.
    #[inline]
    pub(super) fn check(
        &mut self,
        index: u64,
        data: &[u8],
        from: &Path,
        stream_offset: u64,
    ) -> Result<()> {
        if self.digest.is_none() {
            return Ok(());
        }
        let hash = self.hasher.hash(data).0;
        self.check_hash(index, Some(&hash), from, stream_offset)
    }

    /// Checks block `index`, whose hash a worker computed (`None`: it was
    /// not, which no digest matches).
    #[inline]
    pub(super) fn check_hash(
        &mut self,
        index: u64,
        hash: Option<&BlockHash>,
        from: &Path,
        stream_offset: u64,
    ) -> Result<()> {
        let Some(digest) = self.digest.as_deref_mut() else {
            return Ok(());
        };
        if digest.entry(index)?.as_ref() != hash {
            return Err(Error::Mismatch {
                path: from.to_owned(),
                block_offset: index * u64::from(digest.block_size().get()),
                stream_offset,
                digest: digest.path().to_owned(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    //! The replay over a chain in memory ([`FakeChain`]): what [`run`]
    //! does whatever the format.

    use super::*;
    use crate::progress::NoProgress;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::thread::{self, ThreadId};

    const BS: usize = 4;

    /// The byte that fills block `index` of generation `generation`
    /// (position in the chain, newest first): never zero, so a fresh
    /// file writes every block.
    fn byte(generation: usize, index: u64) -> u8 {
        0x80 | ((generation as u8) << 4) | index as u8
    }

    /// A chain in memory: for each generation, newest first, the indexes
    /// of the blocks it holds.
    struct FakeChain {
        generations: Vec<Vec<u64>>,
        blocks_per_job: usize,
        jobs_per_thread: usize,
        /// The worker threads it asks for (`None`: as many as allowed).
        threads: Option<usize>,
        /// The job (in plan order) whose reading fails.
        unreadable: Option<usize>,
        /// Job 0 is read only once this many jobs are in flight (or after
        /// 10 s): every other job waits for it to be written.
        hold_first_until: Option<usize>,
        caller: ThreadId,
        /// Jobs planned and not yet written, and the most there were.
        in_flight: AtomicUsize,
        most_in_flight: AtomicUsize,
        /// Jobs read off the calling thread.
        read_elsewhere: AtomicUsize,
        /// The jobs in the order written, once the chain is finished.
        finished: Mutex<Option<Vec<usize>>>,
    }

    impl FakeChain {
        fn new(generations: Vec<Vec<u64>>) -> Self {
            FakeChain {
                generations,
                blocks_per_job: 2,
                jobs_per_thread: JOBS_PER_THREAD,
                threads: None,
                unreadable: None,
                hold_first_until: None,
                caller: thread::current().id(),
                in_flight: AtomicUsize::new(0),
                most_in_flight: AtomicUsize::new(0),
                read_elsewhere: AtomicUsize::new(0),
                finished: Mutex::new(None),
            }
        }
    }

    #[derive(Default)]
    struct FakeJob {
        seq: usize,
        /// Block index, and the byte that fills it.
        blocks: Vec<(u64, u8)>,
        data: Vec<u8>,
        error: Option<Error>,
    }

    /// The next job, the generation being planned and the position in it.
    #[derive(Default)]
    struct FakePlanner {
        seq: usize,
        generation: usize,
        at: usize,
    }

    impl ChainReader for FakeChain {
        type Job = FakeJob;
        type Planner = FakePlanner;
        type Worker = ();
        /// The jobs in the order written.
        type Writer = Vec<usize>;

        fn jobs_per_thread(&self) -> usize {
            self.jobs_per_thread
        }

        fn worker_threads(&self, threads: usize) -> usize {
            self.threads.unwrap_or(threads)
        }

        fn start(&self) -> (FakePlanner, Vec<usize>) {
            (FakePlanner::default(), Vec::new())
        }

        fn plan(&self, p: &mut FakePlanner, job: &mut FakeJob, written: &mut BlockSet) -> bool {
            job.blocks.clear();
            job.error = None;
            while job.blocks.len() < self.blocks_per_job {
                let Some(generation) = self.generations.get(p.generation) else {
                    break;
                };
                let Some(&index) = generation.get(p.at) else {
                    (p.generation, p.at) = (p.generation + 1, 0);
                    continue;
                };
                p.at += 1;
                if !written.contains(index) {
                    written.insert(index);
                    job.blocks.push((index, byte(p.generation, index)));
                }
            }
            if job.blocks.is_empty() {
                return false;
            }
            (job.seq, p.seq) = (p.seq, p.seq + 1);
            let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            self.most_in_flight.fetch_max(now, Ordering::SeqCst);
            true
        }

        fn read(&self, (): &mut (), job: &mut FakeJob) {
            if thread::current().id() != self.caller {
                self.read_elsewhere.fetch_add(1, Ordering::SeqCst);
            }
            if let Some(want) = self.hold_first_until
                && job.seq == 0
            {
                let start = std::time::Instant::now();
                while self.in_flight.load(Ordering::SeqCst) < want
                    && start.elapsed() < std::time::Duration::from_secs(10)
                {
                    thread::sleep(std::time::Duration::from_millis(1));
                }
            }
            job.data.clear();
            for &(_, b) in &job.blocks {
                job.data.extend_from_slice(&[b; BS]);
            }
            if self.unreadable == Some(job.seq) {
                let detail = format!("job {} is unreadable", job.seq);
                job.error = Some(chain_error(Path::new("fake"), detail));
            }
        }

        fn write(
            &self,
            order: &mut Vec<usize>,
            job: &mut FakeJob,
            output: &mut ReplayOutput<'_, '_>,
        ) -> Result<()> {
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            order.push(job.seq);
            if let Some(e) = job.error.take() {
                return Err(e);
            }
            for (&(index, _), data) in job.blocks.iter().zip(job.data.chunks(BS)) {
                let offset = index * BS as u64;
                output
                    .out
                    .put(offset, data, &mut output.report, &mut *output.progress)?;
                output.end = output.end.max(offset + BS as u64);
            }
            Ok(())
        }

        fn finish(
            &self,
            _: FakePlanner,
            order: Vec<usize>,
            _: &mut ReplayOutput<'_, '_>,
        ) -> Result<()> {
            *self.finished.lock().unwrap() = Some(order);
            Ok(())
        }
    }

    /// Replays `chain` into `out` with `threads` threads: the result, the
    /// blocks taken, the report and the end written.
    fn replay(
        chain: &FakeChain,
        threads: usize,
        out: &mut Target,
    ) -> (Result<()>, BlockSet, RestoreReport, u64) {
        let hasher = BlockHasher::new(
            crate::block::HashFn::Blake3,
            BlockSize::new(BS as u32).unwrap(),
        );
        let mut written = BlockSet::new();
        let mut output = ReplayOutput {
            checker: BlockChecker {
                digest: None,
                hasher: &hasher,
            },
            out,
            report: RestoreReport::default(),
            end: 0,
            progress: &mut NoProgress,
        };
        let result = run(chain, threads, &mut written, &mut output);
        (result, written, output.report, output.end)
    }

    #[test]
    fn each_block_comes_once_from_the_newest_generation_with_any_thread_count() {
        // Blocks 2 and 5 from generation 3, 0, 4 and 6 from 2 (its block
        // 2 is newer in 3), 1, 3 and 7 from 1.
        let generations = vec![vec![5, 2], vec![0, 2, 4, 6], (0..8).collect()];
        let newest = [1, 2, 0, 2, 1, 0, 1, 2];
        let want: Vec<u8> = (0..8u64)
            .flat_map(|i| [byte(newest[i as usize], i); BS])
            .collect();
        for threads in [1, 2, 3] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("restored");
            let mut out = Target::open(&path, true).unwrap();
            let chain = FakeChain::new(generations.clone());
            let (result, written, report, end) = replay(&chain, threads, &mut out);
            result.unwrap();
            out.finish(end, &mut NoProgress).unwrap();
            assert!(std::fs::read(&path).unwrap() == want, "{threads} threads");
            assert_eq!(written.missing_below(8).0, 0);
            assert_eq!((report.blocks, report.bytes_written), (8, 8 * BS as u64));
            assert_eq!(end, 8 * BS as u64);
            // 4 jobs of 2 blocks, written in the order planned, then the
            // chain finished.
            let order = chain.finished.lock().unwrap().take();
            assert_eq!(order, Some(vec![0, 1, 2, 3]), "{threads} threads");
            let most = chain.most_in_flight.load(Ordering::SeqCst);
            assert!(most <= threads * JOBS_PER_THREAD, "{most} jobs in flight");
            let elsewhere = chain.read_elsewhere.load(Ordering::SeqCst);
            assert_eq!(elsewhere, if threads == 1 { 0 } else { 4 });
        }
    }

    #[test]
    fn jobs_in_flight_stop_at_jobs_per_thread_per_worker_and_are_written_in_order() {
        // Job 0 is read last: the calling thread plans until every job
        // buffer is in flight, and no further; the jobs are still written
        // in the order planned.
        let (threads, per_thread) = (3, 2);
        let mut chain = FakeChain::new(vec![(0..100).collect()]);
        chain.blocks_per_job = 1;
        chain.jobs_per_thread = per_thread;
        chain.hold_first_until = Some(threads * per_thread);
        let (result, _, report, _) = replay(&chain, threads, &mut Target::discard());
        result.unwrap();
        assert_eq!(report.blocks, 100);
        let most = chain.most_in_flight.load(Ordering::SeqCst);
        assert_eq!(most, threads * per_thread);
        let order = chain.finished.lock().unwrap().take();
        assert_eq!(order, Some((0..100).collect()));
    }

    #[test]
    fn a_reader_that_asks_for_one_thread_is_read_on_the_calling_thread() {
        let mut chain = FakeChain::new(vec![(0..20).collect()]);
        chain.threads = Some(1);
        chain.jobs_per_thread = 3;
        let (result, _, report, _) = replay(&chain, 4, &mut Target::discard());
        result.unwrap();
        assert_eq!(report.blocks, 20);
        assert_eq!(chain.read_elsewhere.load(Ordering::SeqCst), 0);
        assert_eq!(chain.most_in_flight.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn the_first_error_in_plan_order_wins_and_the_chain_is_not_finished() {
        for threads in [1, 4] {
            let mut chain = FakeChain::new(vec![(0..40).collect()]);
            chain.unreadable = Some(3);
            let (result, _, report, end) = replay(&chain, threads, &mut Target::discard());
            let err = result.unwrap_err();
            assert!(
                matches!(&err, Error::Chain { detail, .. } if detail == "job 3 is unreadable"),
                "{threads} threads: {err}"
            );
            // Jobs 0 to 2 written, nothing after the error.
            assert_eq!(report.blocks, 6, "{threads} threads");
            assert_eq!(end, 6 * BS as u64);
            assert!(chain.finished.lock().unwrap().is_none());
        }
    }
}
