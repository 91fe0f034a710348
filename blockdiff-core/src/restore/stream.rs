//! One diff stream applied in place, as the original `blockdiff_merge`
//! did: a legacy stream (plain or gzip) or a v2 diff, read as it comes,
//! every block written where it belongs.

use std::io::{self, Read};
use std::path::Path;

use archive_format::{
    Compression, DIFF_MAGIC, ExtentKind, Frame, LegacyReader, StreamReader, data_len, read_full,
};

use crate::Result;
use crate::error::{ArchiveContext, IoContext};
use crate::progress::Progress;

use super::RestoreReport;
use super::plan::refuse_store_target;
use super::target::Target;

/// Applies one diff stream to `target` in place, as the original
/// `blockdiff_merge` did: every block is written where it belongs. The
/// stream's kind is recognised from its first bytes: a legacy stream, plain
/// or gzip-compressed, or a v2 diff (whose frames are CRC-checked before
/// they are written, and whose index gives the exact source size).
///
/// The target is opened only once the stream's header (and, for a legacy
/// stream, its first record) has been read: input that is not a diff
/// leaves the target as it was. A target that does not exist is written
/// as a new file (0600) through an anonymous temporary, as
/// [`RestorePlan::execute`](super::RestorePlan::execute) does, and appears
/// only when complete; an existing regular file is updated in place; the
/// same targets are refused (symbolic links, files of a store, new files
/// under `/dev`).
///
/// When a legacy stream ends with a short block, that block's end is the
/// source's end and a regular file target is cut there. Nothing in a legacy
/// stream reveals a stream truncated at a record boundary; restore from a
/// store ([`RestorePlan`](super::RestorePlan)) checks against the digest
/// instead.
pub fn apply_stream<R: Read + Send>(
    mut input: R,
    input_name: &Path,
    target: &Path,
    progress: &mut dyn Progress,
) -> Result<RestoreReport> {
    refuse_store_target(None, target)?;
    let mut head = [0u8; 8];
    let got = read_full(&mut input, &mut head).ctx(input_name, "read")?;
    let whole = io::Cursor::new(head[..got].to_vec()).chain(input);
    let mut report = RestoreReport::default();
    if head[..got] == DIFF_MAGIC {
        let mut reader = StreamReader::new(whole).in_file(input_name)?;
        let mut out = Target::open(target, false)?;
        let (bs, header_size) = (reader.header().block_size, reader.header().source_size);
        let zero_block = vec![0u8; bs as usize];
        let mut frame = Frame::default();
        let mut last_end = 0u64;
        while reader.next_frame(&mut frame).in_file(input_name)? {
            let mut at = 0usize;
            for e in &frame.extents {
                if e.kind == ExtentKind::Zero && out.sparse() {
                    // Holes in a new file: no step per block.
                    let last = e.end_block() - 1;
                    let full = data_len(last, 1, bs, header_size).min(u64::from(bs));
                    report.blocks += u64::from(e.blocks);
                    report.holes += u64::from(e.blocks);
                    last_end = last_end.max(last * u64::from(bs) + full);
                    continue;
                }
                for b in e.first_block..e.end_block() {
                    let full = data_len(b, 1, bs, header_size) as usize;
                    let offset = b * u64::from(bs);
                    let data = match e.kind {
                        // A short last block of a source of unknown size
                        // takes what is left of the payload.
                        ExtentKind::Data => {
                            let len = full.min(frame.payload.len() - at);
                            at += len;
                            &frame.payload[at - len..at]
                        }
                        ExtentKind::Zero => &zero_block[..full.min(bs as usize)],
                    };
                    out.put(offset, data, &mut report, progress)?;
                    last_end = last_end.max(offset + data.len() as u64);
                    progress.advance(data.len() as u64);
                }
            }
        }
        let size = reader.summary().map_or(last_end, |s| s.source_size);
        report.source_size = size;
        out.finish(size, progress)?;
        return Ok(report);
    }
    let compression = Compression::detect(&head[..got]);
    let mut reader = LegacyReader::new(compression.reader(whole)).in_file(input_name)?;
    let bs = reader.block_size() as usize;
    let mut buf = Vec::with_capacity(bs);
    let mut short_end = None;
    let mut next = reader.read_record(&mut buf).in_file(input_name)?;
    let mut out = Target::open(target, false)?;
    while let Some(rec) = next {
        out.put(rec.block_offset, &buf, &mut report, progress)?;
        report.source_size = report.source_size.max(rec.block_offset + buf.len() as u64);
        if buf.len() < bs {
            short_end = Some(rec.block_offset + buf.len() as u64);
        }
        progress.advance(buf.len() as u64);
        next = reader.read_record(&mut buf).in_file(input_name)?;
    }
    let current = out.current_len()?;
    let end = short_end.unwrap_or(current.max(report.source_size));
    report.source_size = end;
    out.finish(end, progress)?;
    Ok(report)
}
