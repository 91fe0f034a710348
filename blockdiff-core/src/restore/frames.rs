//! The v2 format's side of a replay ([`ChainReader`]): which frames of a
//! v2 chain to read, and which of their blocks to take, decided from the
//! indexes alone (window by window of the target when there is more than
//! one generation, see [`OutputWindow`]); the frames read, decompressed and
//! hashed on the workers, several small ones per job; their blocks checked
//! and written in the same order, through the window.

use archive_format::{BlockHash, DiffFile, ExtentKind, Frame, FrameDecompressor, data_len};

use crate::error::ArchiveContext;
use crate::generation_source::DiffBytes;
use crate::store::DiffLocation;
use crate::{Error, Result};

use super::block_set::BlockSet;
use super::replay::{ChainReader, JOBS_PER_THREAD, ReplayOutput, ReplayParams};
use super::window::OutputWindow;

/// Most blocks of one v2 frame hashed on a worker. A frame may hold 64 MiB
/// of blocks of a few bytes (a crafted chain): hashes for all of them would
/// take far more memory than the frame, so the blocks of such a frame are
/// hashed by the writer as it checks them, as one thread would.
const FRAME_HASHES: usize = 1 << 16;

/// Job buffers in flight per worker thread for a v2 chain whose frames
/// all span at most [`SHORT_FRAME_SPAN`] (what the dump writes): the
/// workers run further ahead of the writer, whose writes stall now and
/// then (dirty-page throttling). Measured on a 30-generation chain of
/// 1 GiB, cold cache, median of 4: generation 30 took 1.40-1.49 s with 2
/// jobs per thread, 1.26-1.42 s with 8 and 1.31 s with 16; generation 1
/// was unchanged. A job then holds about 1 MiB of frames (at most 64
/// small ones, 4 MiB), so memory stays in the tens of MiB.
const JOBS_PER_THREAD_SHORT_FRAMES: usize = 8;

/// The longest frame span, in bytes of the target, that lets a v2 replay
/// keep [`JOBS_PER_THREAD_SHORT_FRAMES`] jobs per thread in flight.
const SHORT_FRAME_SPAN: u64 = 1 << 20;

/// Frames per job, at most.
const FRAMES_PER_JOB: usize = 64;

/// The largest frame (bytes of data it holds) that may share a job: a
/// larger one is always the first of its job, so that a job's buffers hold
/// at most one large frame and [`FRAMES_PER_JOB`] − 1 small ones.
const SMALL_FRAME: usize = 64 << 10;

/// A range of blocks a v2 frame provides, in the order it is written.
#[derive(Debug, Clone, Copy)]
enum FrameOp {
    /// Blocks `first..end` of a data extent, whose bytes start at `at` in
    /// the frame's payload.
    Data { first: u64, end: u64, at: usize },
    /// Blocks `first..end` of a zero extent.
    Zero { first: u64, end: u64 },
}

/// Frames planned into one job (read, decompressed and hashed by one
/// worker, written in order): small frames, as a long chain's newer
/// generations hold, are taken together, so that the handing of a job to
/// a worker and back is paid once per stretch of frames rather than per
/// frame.
#[derive(Default)]
pub(super) struct FrameJob {
    frames: Vec<PlannedFrame>,
    /// How many of `frames` are planned.
    used: usize,
}

/// What planning the next frame of a job gave.
#[derive(Debug, PartialEq, Eq)]
enum Next {
    Planned,
    /// A large frame, left for the next job.
    Later,
    Done,
}

/// One v2 frame to read: planned on the calling thread, read,
/// decompressed and hashed on a worker, written on the calling thread.
#[derive(Default)]
struct PlannedFrame {
    /// Index in the chain (newest first) of the generation, and the frame.
    diff: usize,
    frame: usize,
    /// Bytes of data the frame holds (its data extents).
    raw: usize,
    /// The window of the target it is planned for (see `OutputWindow`).
    window: u64,
    /// What the frame provides (empty for a frame read only to be checked).
    ops: Vec<FrameOp>,
    /// The frame, read and decompressed.
    frame_data: Frame,
    /// With a digest: the hashes of the data blocks of `ops`, in order,
    /// when the worker computed them (`hashed`).
    hashes: Vec<BlockHash>,
    hashed: bool,
    /// Why the frame could not be read.
    error: Option<Error>,
}

/// A worker's own buffers for reading frames.
#[derive(Default)]
pub(super) struct FrameReader {
    raw: Vec<u8>,
    decompressor: FrameDecompressor,
}

/// A v2 chain, newest first, read frame by frame through its indexes.
pub(super) struct V2Frames<'d> {
    diffs: &'d [(DiffLocation, DiffFile<DiffBytes>)],
    params: ReplayParams<'d>,
    /// Blocks of the restored image (0 when unknown).
    block_count: u64,
    /// With more than one generation the target is assembled a window at
    /// a time (see `OutputWindow`): every generation's frames for the
    /// window, newest first, then the next window. One generation is
    /// written as its frames come, from one window that is the whole
    /// target.
    windowed: bool,
    /// The longest frame's span, in blocks: the window's size, and how
    /// many jobs may be in flight.
    frame_blocks: u64,
}

/// Where the planning of a v2 chain is: the window being planned; the
/// generation and frame looked at in it; for each generation, its first
/// frame not yet planned to its end (a frame that reaches past a window is
/// looked at again in the next), and whether that frame was read already.
pub(super) struct FramePlanner {
    /// Blocks per window (`u64::MAX`: one window, the whole target).
    window_blocks: u64,
    window: u64,
    next_diff: usize,
    next_frame: usize,
    first_unfinished: Vec<usize>,
    straddler_read: Vec<bool>,
    /// Frames not needed, so not read.
    skipped: u64,
}

/// What writing a v2 chain keeps between frames.
pub(super) struct FrameWriter {
    window: OutputWindow,
    /// The data runs of the frame being written that go in the window:
    /// first block, where in the payload, length.
    held_runs: Vec<(u64, usize, usize)>,
    /// A zero block, and its hash (computed once).
    zero_block: Vec<u8>,
    zero_hash: BlockHash,
}

impl<'d> V2Frames<'d> {
    pub(super) fn new(
        diffs: &'d [(DiffLocation, DiffFile<DiffBytes>)],
        params: ReplayParams<'d>,
    ) -> Self {
        let frame_blocks = diffs
            .iter()
            .flat_map(|(_, diff)| {
                (0..diff.frames().len()).map(|i| {
                    let extents = diff.frame_extents(i);
                    let first = extents.first().map_or(0, |e| e.first_block);
                    extents
                        .last()
                        .map_or(0, archive_format::Extent::end_block)
                        .saturating_sub(first)
                })
            })
            .max()
            .unwrap_or(0);
        V2Frames {
            diffs,
            params,
            block_count: params.block_count.unwrap_or(0),
            windowed: diffs.len() > 1,
            frame_blocks,
        }
    }

    /// Plans the next frame into `job` (`Next::Planned`), unless it is
    /// larger than `SMALL_FRAME` and `small_only` (`Next::Later`: it is
    /// left for the next job), or there is none left.
    fn next(
        &self,
        p: &mut FramePlanner,
        job: &mut PlannedFrame,
        written: &mut BlockSet,
        small_only: bool,
    ) -> Next {
        let diffs = self.diffs;
        let n = self.block_count;
        let bs = self.params.block_size;
        let window_blocks = p.window_blocks;
        loop {
            let w0 = p.window.saturating_mul(window_blocks);
            // The last window takes whatever lies beyond: frames past
            // the restored size are still looked at (to be checked).
            let last_window = w0.saturating_add(window_blocks) >= n;
            let w1 = if last_window {
                u64::MAX
            } else {
                w0 + window_blocks
            };
            let Some((_, diff)) = diffs.get(p.next_diff) else {
                if last_window {
                    return Next::Done;
                }
                // On to the next window that a frame starts in (not
                // window by window over a large, sparse target), at
                // most the last.
                let first_left = diffs
                    .iter()
                    .zip(&p.first_unfinished)
                    .filter(|((_, diff), i)| **i < diff.frames().len())
                    .map(|((_, diff), &i)| {
                        diff.frame_extents(i).first().map_or(0, |e| e.first_block)
                    })
                    .min()
                    .unwrap_or(u64::MAX);
                let last = n.saturating_sub(1) / window_blocks;
                p.window = (p.window + 1).max(first_left / window_blocks).min(last);
                (p.next_diff, p.next_frame) = (0, p.first_unfinished[0]);
                continue;
            };
            let starts_here = p.next_frame < diff.frames().len()
                && diff
                    .frame_extents(p.next_frame)
                    .first()
                    .is_none_or(|e| e.first_block < w1);
            if !starts_here {
                p.next_diff += 1;
                p.next_frame = p.first_unfinished.get(p.next_diff).copied().unwrap_or(0);
                continue;
            }
            let i = p.next_frame;
            let extents = diff.frame_extents(i);
            let size = diff.summary().source_size;
            let raw = extents
                .iter()
                .filter(|e| e.kind == ExtentKind::Data)
                .map(|e| data_len(e.first_block, u64::from(e.blocks), bs.get(), size) as usize)
                .fold(0, usize::saturating_add);
            if small_only && raw > SMALL_FRAME {
                return Next::Later;
            }
            p.next_frame += 1;
            let finished = extents.last().is_none_or(|e| e.end_block() <= w1);
            let read_before = p.straddler_read[p.next_diff];
            if finished {
                p.first_unfinished[p.next_diff] = i + 1;
                p.straddler_read[p.next_diff] = false;
            }
            job.ops.clear();
            job.raw = raw;
            let mut at = 0usize;
            for e in extents {
                let from = e.first_block.max(w0);
                let to = e.end_block().min(n).min(w1);
                for (g0, g1) in written.gaps(from, to.max(from)) {
                    job.ops.push(match e.kind {
                        ExtentKind::Zero => FrameOp::Zero { first: g0, end: g1 },
                        ExtentKind::Data => FrameOp::Data {
                            first: g0,
                            end: g1,
                            at: at
                                + data_len(e.first_block, g0 - e.first_block, bs.get(), size)
                                    as usize,
                        },
                    });
                    written.insert_run(g0, g1);
                }
                if e.kind == ExtentKind::Data {
                    at += data_len(e.first_block, u64::from(e.blocks), bs.get(), size) as usize;
                }
            }
            if job.ops.is_empty() {
                // Nothing to take here: read it only to check it
                // (once), or count it as skipped.
                if !finished || read_before {
                    continue;
                }
                if !self.params.check_all {
                    p.skipped += 1;
                    continue;
                }
            } else if !finished {
                p.straddler_read[p.next_diff] = true;
            }
            (job.diff, job.frame, job.window, job.error) = (p.next_diff, i, p.window, None);
            return Next::Planned;
        }
    }

    /// Reads, decompresses and (with a digest, unless it holds more than
    /// [`FRAME_HASHES`] blocks) hashes one planned frame, on a worker.
    fn read_one(&self, reader: &mut FrameReader, job: &mut PlannedFrame) {
        let bs = self.params.block_size;
        let hasher = self.params.hasher;
        job.hashes.clear();
        let (loc, diff) = &self.diffs[job.diff];
        let read = diff
            .read_frame_bytes(job.frame, &mut reader.raw)
            .and_then(|()| {
                diff.decode_frame_bytes(
                    job.frame,
                    &reader.raw,
                    &mut job.frame_data,
                    &mut reader.decompressor,
                )
            })
            .in_file(&loc.path);
        if let Err(e) = read {
            job.error = Some(e);
            return;
        }
        let blocks: u64 = job
            .ops
            .iter()
            .map(|op| match *op {
                FrameOp::Data { first, end, .. } => end - first,
                FrameOp::Zero { .. } => 0,
            })
            .sum();
        job.hashed = self.params.checking && blocks <= FRAME_HASHES as u64;
        if !job.hashed {
            return;
        }
        let size = diff.summary().source_size;
        for op in &job.ops {
            if let FrameOp::Data { first, end, mut at } = *op {
                for b in first..end {
                    let len = data_len(b, 1, bs.get(), size) as usize;
                    let data = &job.frame_data.payload[at..at + len];
                    job.hashes.push(hasher.hash(data).0);
                    at += len;
                }
            }
        }
    }

    /// Checks and writes the blocks of one frame, in order (into the
    /// window, when windowed).
    fn write_one(
        &self,
        w: &mut FrameWriter,
        job: &mut PlannedFrame,
        output: &mut ReplayOutput<'_, '_>,
    ) -> Result<()> {
        let bs = self.params.block_size;
        let windowed = self.windowed;
        let FrameWriter {
            window: window_out,
            held_runs,
            zero_block,
            zero_hash,
        } = w;
        let ReplayOutput {
            checker,
            out,
            report,
            end,
            progress,
        } = output;
        held_runs.clear();
        if let Some(e) = job.error.take() {
            return Err(e);
        }
        report.frames_read += 1;
        if windowed {
            window_out.enter(job.window, out, report, &mut **progress)?;
        }
        let (loc, diff) = &self.diffs[job.diff];
        let size = diff.summary().source_size;
        let stream_offset = diff.frames()[job.frame].offset;
        let mut hashes = job.hashes.iter();
        for op in &job.ops {
            match *op {
                FrameOp::Zero { first: g0, end: g1 } => {
                    // Checked block by block, each full one against
                    // the hash of a zero block, computed once. A fresh
                    // file leaves the run as a hole, with no step per
                    // block when nothing is checked (a crafted diff
                    // may claim 2^32 blocks).
                    if checker.digest.is_some() {
                        for b in g0..g1 {
                            let len = data_len(b, 1, bs.get(), size) as usize;
                            if len == zero_block.len() {
                                let hash = Some(&*zero_hash);
                                checker.check_hash(b, hash, &loc.path, stream_offset)?;
                            } else {
                                let data = &zero_block[..len];
                                checker.check(b, data, &loc.path, stream_offset)?;
                            }
                        }
                    }
                    let bytes = data_len(g0, g1 - g0, bs.get(), size);
                    if out.sparse() {
                        report.blocks += g1 - g0;
                        report.holes += g1 - g0;
                    } else if windowed {
                        window_out.place_zeros(g0, bytes as usize);
                    } else {
                        for b in g0..g1 {
                            let len = data_len(b, 1, bs.get(), size) as usize;
                            let data = &zero_block[..len];
                            out.put(bs.offset_of(b), data, report, &mut **progress)?;
                        }
                    }
                    progress.advance(bytes);
                    let last = g1 - 1;
                    *end = (*end).max(bs.offset_of(last) + data_len(last, 1, bs.get(), size));
                }
                FrameOp::Data {
                    first,
                    end: last,
                    at,
                } => {
                    // Every block of the run is checked, then the run
                    // is written at once.
                    let mut to = at;
                    for b in first..last {
                        let len = data_len(b, 1, bs.get(), size) as usize;
                        let data = &job.frame_data.payload[to..to + len];
                        to += len;
                        if job.hashed {
                            checker.check_hash(b, hashes.next(), &loc.path, stream_offset)?;
                        } else {
                            checker.check(b, data, &loc.path, stream_offset)?;
                        }
                    }
                    let offset = bs.offset_of(first);
                    let run = &job.frame_data.payload[at..to];
                    if windowed {
                        held_runs.push((first, at, run.len()));
                    } else {
                        out.put_run(offset, run, bs.bytes(), report, &mut **progress)?;
                    }
                    *end = (*end).max(offset + run.len() as u64);
                    progress.advance(run.len() as u64);
                }
            }
        }
        // The frame's runs for the window: its payload is held by the
        // window until the window is written, or (past the window's
        // budget) the runs are copied in.
        if !held_runs.is_empty() {
            let payload = &mut job.frame_data.payload;
            match window_out.hold(payload) {
                Some(frame) => {
                    for &(first, at, len) in held_runs.iter() {
                        window_out.place_held(first, frame, at, len);
                    }
                }
                None => {
                    for &(first, at, len) in held_runs.iter() {
                        window_out.place(first, &payload[at..at + len]);
                    }
                }
            }
            held_runs.clear();
        }
        Ok(())
    }
}

/// A v2 chain: which frames to read and which of their blocks to take is
/// decided on the calling thread from the indexes, in order; the frames
/// are read, decompressed and hashed on the workers, several small ones
/// per job; their blocks are checked and written on the calling thread in
/// the same order.
impl ChainReader for V2Frames<'_> {
    type Job = FrameJob;
    type Planner = FramePlanner;
    type Worker = FrameReader;
    type Writer = FrameWriter;

    fn jobs_per_thread(&self) -> usize {
        let span = self
            .frame_blocks
            .saturating_mul(self.params.block_size.bytes() as u64);
        if span <= SHORT_FRAME_SPAN {
            JOBS_PER_THREAD_SHORT_FRAMES
        } else {
            JOBS_PER_THREAD
        }
    }

    fn worker_threads(&self, threads: usize) -> usize {
        threads
    }

    fn start(&self) -> (FramePlanner, FrameWriter) {
        let bs = self.params.block_size;
        let zero_block = vec![0u8; bs.bytes()];
        let zero_hash = self.params.hasher.hash(&zero_block).0;
        let window = OutputWindow::new(bs.bytes(), self.frame_blocks);
        let planner = FramePlanner {
            window_blocks: if self.windowed {
                window.blocks()
            } else {
                u64::MAX
            },
            window: 0,
            next_diff: 0,
            next_frame: 0,
            first_unfinished: vec![0; self.diffs.len()],
            straddler_read: vec![false; self.diffs.len()],
            skipped: 0,
        };
        let writer = FrameWriter {
            window,
            held_runs: Vec::new(),
            zero_block,
            zero_hash,
        };
        (planner, writer)
    }

    fn plan(&self, planner: &mut FramePlanner, job: &mut FrameJob, written: &mut BlockSet) -> bool {
        job.used = 0;
        while job.used < FRAMES_PER_JOB {
            if job.frames.len() == job.used {
                job.frames.push(PlannedFrame::default());
            }
            let frame = &mut job.frames[job.used];
            // Only the first frame of a job may be large.
            if self.next(planner, frame, written, job.used > 0) != Next::Planned {
                break;
            }
            job.used += 1;
            if frame.raw > SMALL_FRAME {
                break;
            }
        }
        job.used > 0
    }

    fn read(&self, reader: &mut FrameReader, job: &mut FrameJob) {
        for frame in &mut job.frames[..job.used] {
            self.read_one(reader, frame);
        }
    }

    fn write(
        &self,
        writer: &mut FrameWriter,
        job: &mut FrameJob,
        output: &mut ReplayOutput<'_, '_>,
    ) -> Result<()> {
        job.frames[..job.used]
            .iter_mut()
            .try_for_each(|frame| self.write_one(writer, frame, output))
    }

    fn finish(
        &self,
        planner: FramePlanner,
        mut writer: FrameWriter,
        output: &mut ReplayOutput<'_, '_>,
    ) -> Result<()> {
        let ReplayOutput {
            out,
            report,
            progress,
            ..
        } = output;
        writer.window.flush(out, report, &mut **progress)?;
        report.frames_skipped += planner.skipped;
        Ok(())
    }
}
