use std::io::Write;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use archive_format::{
    DiffHeader, DiffWriter, DigestFormat, Fingerprint, FrameBuilder, FrameCompression,
    FrameCompressor, FrameMeta, LegacyWriter, UNKNOWN_SIZE,
};

use super::{ChunkEncoder, DiffSink, DumpPlan, DumpedChunk};
use crate::error::ArchiveContext;
use crate::{Error, Result};

/// The encoder of sinks that need no work on the hashing threads.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoEncoding;

impl ChunkEncoder for NoEncoding {
    type State = ();
    type Output = ();
    fn state(&self) -> Result<()> {
        Ok(())
    }
    fn encode(&self, _: &mut (), _: &DumpedChunk<'_>, _: &mut ()) -> Result<()> {
        Ok(())
    }
}

#[derive(Debug)]
enum State<W, A> {
    Pending(W),
    Writing(A),
    Finished(W),
    Poisoned,
}

pub(super) fn misuse(what: &str) -> Error {
    Error::InvalidOption(format!("diff sink {what}"))
}

/// A [`DiffSink`] that writes the original blockdiff's diff stream to `W`:
/// every changed block as a record, zero or not.
#[derive(Debug)]
pub struct LegacySink<W: Write> {
    state: State<W, LegacyWriter<W>>,
    path: PathBuf,
}

impl<W: Write> LegacySink<W> {
    /// A sink writing to `inner`; `path` names it in errors (`-` for stdout).
    pub fn new(inner: W, path: impl Into<PathBuf>) -> Self {
        LegacySink {
            state: State::Pending(inner),
            path: path.into(),
        }
    }

    /// Returns the underlying writer once the dump has ended (or if it
    /// never began).
    pub fn into_inner(self) -> Result<W> {
        match self.state {
            State::Pending(w) | State::Finished(w) => Ok(w),
            _ => Err(misuse("taken before the dump ended")),
        }
    }
}

impl<W: Write> DiffSink for LegacySink<W> {
    type Encoder = NoEncoding;

    fn digest_format(&self) -> DigestFormat {
        DigestFormat::Legacy
    }

    fn begin(&mut self, plan: &DumpPlan) -> Result<NoEncoding> {
        match std::mem::replace(&mut self.state, State::Poisoned) {
            State::Pending(w) => {
                self.state = State::Writing(
                    LegacyWriter::new(w, plan.block_size.get()).in_file(&self.path)?,
                );
                Ok(NoEncoding)
            }
            _ => Err(misuse("begun twice")),
        }
    }

    fn write_chunk(&mut self, chunk: &DumpedChunk<'_>, _: &()) -> Result<()> {
        let State::Writing(w) = &mut self.state else {
            return Err(misuse("written before it began"));
        };
        for (i, changed) in chunk.changed.iter().enumerate() {
            if *changed {
                let offset = chunk.offset + (i * chunk.block_size.bytes()) as u64;
                w.write_record(offset, chunk.block(i)).in_file(&self.path)?;
            }
        }
        Ok(())
    }

    fn end(&mut self, _: u64, _: Option<Fingerprint>) -> Result<()> {
        match std::mem::replace(&mut self.state, State::Poisoned) {
            State::Writing(w) => {
                self.state = State::Finished(w.finish().in_file(&self.path)?);
                Ok(())
            }
            _ => Err(misuse("ended before it began")),
        }
    }
}

/// Source bytes one v2 frame covers at most: a chunk longer than this
/// (the default chunk is 16 MiB mapped, 4 MiB read, for fewer, longer
/// maps and reads) is
/// encoded as several frames, so that a restore still reads, decompresses
/// and assembles 1 MiB at a time (see `OutputWindow` in restore), whatever
/// the read size.
pub(crate) const FRAME_SPAN: usize = 1 << 20;

/// Builds and compresses the v2 frames of a chunk (one per `FRAME_SPAN`
/// of it that changed), on the hashing threads.
#[derive(Debug, Clone, Copy)]
pub struct V2Encoder {
    compression: FrameCompression,
    level: i32,
}

/// A chunk encoded as v2 frames (none when no block changed): their bytes,
/// back to back, and each one's description.
#[derive(Debug, Default)]
pub struct V2Frame {
    bytes: Vec<u8>,
    frames: Vec<FrameMeta>,
}

/// A hashing thread's state for [`V2Encoder`]: its compression context,
/// its frame, and a buffer for payloads that must be gathered.
#[derive(Debug)]
pub struct V2EncoderState {
    compressor: FrameCompressor,
    builder: FrameBuilder,
    /// The byte ranges of a frame's data blocks, adjacent ones merged.
    runs: Vec<(usize, usize)>,
    gathered: Vec<u8>,
}

impl ChunkEncoder for V2Encoder {
    type State = V2EncoderState;
    type Output = V2Frame;

    fn state(&self) -> Result<Self::State> {
        let compressor = FrameCompressor::new(self.compression, self.level).in_file("zstd")?;
        Ok(V2EncoderState {
            compressor,
            builder: FrameBuilder::new(),
            runs: Vec::new(),
            gathered: Vec::new(),
        })
    }

    fn encode(
        &self,
        state: &mut Self::State,
        chunk: &DumpedChunk<'_>,
        out: &mut V2Frame,
    ) -> Result<()> {
        out.bytes.clear();
        out.frames.clear();
        let span = (FRAME_SPAN / chunk.block_size.bytes()).max(1);
        let blocks = chunk.changed.len();
        let mut first = 0;
        while first < blocks {
            let end = (first + span).min(blocks);
            encode_frame(state, chunk, first..end, out)?;
            first = end;
        }
        Ok(())
    }
}

/// Appends to `out` the frame of the changed blocks among `blocks` of
/// `chunk` (indexes in the chunk), if any changed.
fn encode_frame(
    state: &mut V2EncoderState,
    chunk: &DumpedChunk<'_>,
    blocks: std::ops::Range<usize>,
    out: &mut V2Frame,
) -> Result<()> {
    let V2EncoderState {
        compressor,
        builder,
        runs,
        gathered,
    } = state;
    builder.clear();
    // Usually the data blocks make one run, compressed from the chunk as it
    // is; several runs are gathered into one payload first.
    runs.clear();
    let bs = chunk.block_size.bytes();
    for i in blocks {
        if !chunk.changed[i] {
            continue;
        }
        let block = chunk.first_block + i as u64;
        if chunk.zero[i] {
            builder.push_zero(block).in_file("frame")?;
            continue;
        }
        let (start, len) = (i * bs, chunk.block(i).len());
        builder.push_data_len(block, len).in_file("frame")?;
        match runs.last_mut() {
            Some(run) if run.1 == start => run.1 = start + len,
            _ => runs.push((start, start + len)),
        }
    }
    if builder.is_empty() {
        return Ok(());
    }
    let payload = match runs.as_slice() {
        [] => &[][..],
        [(start, end)] => &chunk.data[*start..*end],
        _ => {
            gathered.clear();
            for (start, end) in runs.iter() {
                gathered.extend_from_slice(&chunk.data[*start..*end]);
            }
            &gathered[..]
        }
    };
    let meta = builder
        .encode_payload(payload, compressor, &mut out.bytes)
        .in_file("frame")?;
    out.frames.push(meta);
    Ok(())
}

/// A [`DiffSink`] that writes a v2 diff file to `W`: changed blocks
/// coalesced into extents, all-zero blocks as zero extents, frames of up to
/// 1 MiB of the source compressed on the hashing threads, and the index at the
/// end.
#[derive(Debug)]
pub struct V2Sink<W: Write> {
    state: State<W, DiffWriter<W>>,
    path: PathBuf,
    compression: FrameCompression,
    level: i32,
}

impl<W: Write> V2Sink<W> {
    /// A sink writing to `inner` with zstd at `level` (or storing, with
    /// [`FrameCompression::None`]); `path` names it in errors.
    pub fn new(
        inner: W,
        path: impl Into<PathBuf>,
        compression: FrameCompression,
        level: i32,
    ) -> Self {
        V2Sink {
            state: State::Pending(inner),
            path: path.into(),
            compression,
            level,
        }
    }

    /// Returns the underlying writer once the dump has ended (or if it
    /// never began).
    pub fn into_inner(self) -> Result<W> {
        match self.state {
            State::Pending(w) | State::Finished(w) => Ok(w),
            _ => Err(misuse("taken before the dump ended")),
        }
    }
}

impl<W: Write> DiffSink for V2Sink<W> {
    type Encoder = V2Encoder;

    fn digest_format(&self) -> DigestFormat {
        DigestFormat::V2
    }

    /// The blocks were compressed on the hashing threads.
    fn reads_data(&self) -> bool {
        false
    }

    fn begin(&mut self, plan: &DumpPlan) -> Result<V2Encoder> {
        let State::Pending(w) = std::mem::replace(&mut self.state, State::Poisoned) else {
            return Err(misuse("begun twice"));
        };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let header = DiffHeader {
            block_size: plan.block_size.get(),
            source_size: plan.source_size.unwrap_or(UNKNOWN_SIZE),
            generation: plan.generation,
            hash: plan.hash,
            compression: self.compression,
            level: self.level.clamp(i8::MIN.into(), i8::MAX.into()) as i8,
            created_secs: now.as_secs() as i64,
            created_nanos: now.subsec_nanos(),
            parent: plan.parent.unwrap_or([0; 32]),
            folded_parent: 0,
        };
        self.state = State::Writing(DiffWriter::new(w, header).in_file(&self.path)?);
        Ok(V2Encoder {
            compression: self.compression,
            level: self.level,
        })
    }

    fn write_chunk(&mut self, _: &DumpedChunk<'_>, encoded: &V2Frame) -> Result<()> {
        let State::Writing(w) = &mut self.state else {
            return Err(misuse("written before it began"));
        };
        let mut at = 0;
        for meta in &encoded.frames {
            let len = meta.len as usize;
            w.append_frame(&encoded.bytes[at..at + len], meta)
                .in_file(&self.path)?;
            at += len;
        }
        Ok(())
    }

    fn end(&mut self, source_size: u64, fingerprint: Option<Fingerprint>) -> Result<()> {
        let State::Writing(w) = std::mem::replace(&mut self.state, State::Poisoned) else {
            return Err(misuse("ended before it began"));
        };
        let fp = fingerprint.ok_or_else(|| misuse("ended without the digest's fingerprint"))?;
        self.state = State::Finished(w.finish(source_size, fp).in_file(&self.path)?);
        Ok(())
    }
}

/// A [`DiffSink`] that writes nothing and collects the byte ranges of the
/// blocks that differ: `--against`, comparing a file with a digest.
#[derive(Debug, Default)]
pub struct ChangedRanges {
    format: Option<DigestFormat>,
    ranges: Vec<(u64, u64)>,
}

impl ChangedRanges {
    /// A collector for a chain whose digests are of `format`.
    pub fn new(format: DigestFormat) -> Self {
        ChangedRanges {
            format: Some(format),
            ranges: Vec::new(),
        }
    }

    /// The differing byte ranges `[start, end)`, adjacent blocks merged.
    pub fn ranges(&self) -> &[(u64, u64)] {
        &self.ranges
    }
}

impl DiffSink for ChangedRanges {
    type Encoder = NoEncoding;

    fn digest_format(&self) -> DigestFormat {
        self.format.unwrap_or(DigestFormat::V2)
    }

    /// Only which blocks changed, not their bytes.
    fn reads_data(&self) -> bool {
        false
    }

    fn begin(&mut self, _: &DumpPlan) -> Result<NoEncoding> {
        Ok(NoEncoding)
    }

    fn write_chunk(&mut self, chunk: &DumpedChunk<'_>, _: &()) -> Result<()> {
        let bs = chunk.block_size.bytes() as u64;
        for (i, changed) in chunk.changed.iter().enumerate() {
            if !*changed {
                continue;
            }
            let start = chunk.offset + i as u64 * bs;
            let end = start + chunk.block(i).len() as u64;
            match self.ranges.last_mut() {
                Some(last) if last.1 == start => last.1 = end,
                _ => self.ranges.push((start, end)),
            }
        }
        Ok(())
    }

    fn end(&mut self, _: u64, _: Option<Fingerprint>) -> Result<()> {
        Ok(())
    }
}
