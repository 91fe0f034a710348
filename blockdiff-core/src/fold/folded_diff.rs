//! The diff a fold writes: every block that the folded generations and the
//! kept one hold, at its newest version, read through a
//! [`GenerationReader`] of the kept generation (so each is checked against
//! its digest as it is read), in frames like a dump's; and the check of the
//! written file before it replaces anything.

use std::io::Write;
use std::path::Path;

use archive_format::{
    BlockHash, DiffFile, DiffHeader, DiffWriter, ExtentKind, Fingerprint, Frame, FrameBuilder,
    FrameCompressor, FrameDecompressor, ReadAt, data_len,
};

use crate::block::HashFn;
use crate::error::ArchiveContext;
use crate::generation_reader::GenerationReader;
use crate::progress::Progress;
use crate::{DigestFile, Error, Result};

use super::FoldedStats;

/// Bytes of the source that one frame covers at most, as the dump's
/// frames do (a restore runs ahead further on such frames).
const FRAME_SPAN: u64 = 1 << 20;

/// The runs of blocks the new diff must hold: the reader's runs, cut at
/// the kept generation's block count (blocks past it are of older,
/// larger sources and are not part of this generation).
fn wanted_runs(reader: &GenerationReader) -> Vec<(u64, u64, bool)> {
    let bs = u64::from(reader.block_size());
    let blocks = reader.size().div_ceil(bs);
    reader
        .runs()
        .filter(|&(first, _, _)| first < blocks)
        .map(|(first, end, zero)| (first, end.min(blocks), zero))
        .collect()
}

/// Writes to `out` the diff of `header.generation` holding every block of
/// `reader`'s runs (see [`GenerationReader::from_parts`]), with `header`,
/// and the index's `source_size` and `fingerprint` (the kept generation's:
/// its digest does not change). Returns `out` and what was written.
pub(crate) fn write_folded<W: Write>(
    reader: &GenerationReader,
    header: DiffHeader,
    fingerprint: Fingerprint,
    path: &Path,
    out: W,
    progress: &mut dyn Progress,
) -> Result<(W, FoldedStats)> {
    let bs = u64::from(reader.block_size());
    let size = reader.size();
    let span = (FRAME_SPAN / bs).max(1);
    let mut writer = DiffWriter::new(out, header).in_file(path)?;
    let mut compressor =
        FrameCompressor::new(header.compression, i32::from(header.level)).in_file(path)?;
    let mut frame = FrameBuilder::new();
    let mut encoded = Vec::new();
    let mut buf = Vec::new();
    let mut stats = FoldedStats::default();
    let mut frame_of = None;
    let mut flush = |frame: &mut FrameBuilder, writer: &mut DiffWriter<W>| -> Result<()> {
        if frame.is_empty() {
            return Ok(());
        }
        encoded.clear();
        let meta = frame.encode(&mut compressor, &mut encoded).in_file(path)?;
        writer.append_frame(&encoded, &meta).in_file(path)?;
        frame.clear();
        Ok(())
    };
    for (first, end, zero) in wanted_runs(reader) {
        let mut block = first;
        while block < end {
            // Up to the end of the run or of the frame's span.
            let frame_end = (block / span + 1) * span;
            let stop = end.min(frame_end);
            if frame_of != Some(block / span) {
                flush(&mut frame, &mut writer)?;
                frame_of = Some(block / span);
            }
            if zero {
                for b in block..stop {
                    frame.push_zero(b).in_file(path)?;
                }
            } else {
                let len = data_len(block, stop - block, bs as u32, size);
                buf.resize(len as usize, 0);
                let got = reader.read_at(&mut buf, block * bs)?;
                if got as u64 != len {
                    return Err(Error::Chain {
                        path: path.to_owned(),
                        detail: format!(
                            "generation {} ended at {} while its blocks up to {} were being folded",
                            reader.generation(),
                            block * bs + got as u64,
                            block * bs + len
                        ),
                    });
                }
                for (i, b) in (block..stop).enumerate() {
                    let at = i * bs as usize;
                    let piece = &buf[at..(at + bs as usize).min(buf.len())];
                    frame.push_data(b, piece).in_file(path)?;
                }
                stats.raw_bytes += len;
                progress.advance(len);
            }
            stats.blocks += stop - block;
            block = stop;
        }
    }
    flush(&mut frame, &mut writer)?;
    let out = writer.finish(size, fingerprint).in_file(path)?;
    Ok((out, stats))
}

/// Checks the written diff `file` before it replaces anything: it holds
/// exactly the blocks of `reader`'s runs, with `header`, `fingerprint` and
/// the kept generation's size, and every block hashes to `digest`'s entry.
pub(crate) fn check_folded(
    file: Box<dyn ReadAt + Send + Sync>,
    path: &Path,
    reader: &GenerationReader,
    header: &DiffHeader,
    fingerprint: Fingerprint,
    digest: &mut DigestFile,
    hasher: &HashFn,
) -> Result<()> {
    let bad = |detail: String| Error::Chain {
        path: path.to_owned(),
        detail: format!("the folded diff just written does not check: {detail}"),
    };
    let diff = DiffFile::open(file).in_file(path)?;
    if diff.header() != header {
        return Err(bad("its header is not the one written".into()));
    }
    let size = reader.size();
    if diff.summary().fingerprint != fingerprint || diff.summary().source_size != size {
        return Err(bad("its index names another digest or size".into()));
    }
    let bs = reader.block_size();
    let mut want = wanted_runs(reader).into_iter().peekable();
    // The extents, joined, must be the wanted runs, joined.
    let mut cursor: Option<(u64, u64, bool)> = None;
    let mut next_wanted = || -> Option<(u64, u64, bool)> {
        let mut run = want.next()?;
        while let Some(&(f, e, z)) = want.peek() {
            if f != run.1 || z != run.2 {
                break;
            }
            run.1 = e;
            want.next();
        }
        Some(run)
    };
    let mut expected = next_wanted();
    let mut zero_hash: Option<(usize, BlockHash)> = None;
    let mut frame = Frame::default();
    let mut decompressor = FrameDecompressor::default();
    for f in 0..diff.frames().len() {
        diff.read_frame(f, &mut frame, &mut decompressor)
            .in_file(path)?;
        let mut at = 0usize;
        for e in diff.frame_extents(f) {
            let zero = e.kind == ExtentKind::Zero;
            cursor = match cursor {
                Some((first, end, z)) if end == e.first_block && z == zero => {
                    Some((first, e.end_block(), z))
                }
                Some(run) => {
                    if expected != Some(run) {
                        return Err(bad(format!(
                            "it holds blocks {}..{} where the generations folded hold {expected:?}",
                            run.0, run.1
                        )));
                    }
                    expected = next_wanted();
                    Some((e.first_block, e.end_block(), zero))
                }
                None => Some((e.first_block, e.end_block(), zero)),
            };
            for b in e.first_block..e.end_block() {
                let len = data_len(b, 1, bs, size) as usize;
                let entry = digest.entry(b)?.ok_or_else(|| {
                    bad(format!(
                        "block {b} is beyond generation {}'s digest",
                        header.generation
                    ))
                })?;
                let hash = if zero {
                    match zero_hash {
                        Some((l, h)) if l == len => h,
                        _ => {
                            let h = hasher.hash(&vec![0u8; len]);
                            zero_hash = Some((len, h));
                            h
                        }
                    }
                } else {
                    let Some(bytes) = frame.payload.get(at..at + len) else {
                        return Err(bad(format!("frame {f} is shorter than its extents")));
                    };
                    at += len;
                    hasher.hash(bytes)
                };
                if hash != entry {
                    return Err(bad(format!(
                        "block {b} does not hash to generation {}'s digest",
                        header.generation
                    )));
                }
            }
        }
    }
    if let Some(run) = cursor {
        if expected != Some(run) {
            return Err(bad(format!(
                "it holds blocks {}..{} where the generations folded hold {expected:?}",
                run.0, run.1
            )));
        }
        expected = next_wanted();
    }
    if let Some(run) = expected {
        return Err(bad(format!(
            "it lacks blocks {}..{} that the generations folded hold",
            run.0, run.1
        )));
    }
    Ok(())
}
