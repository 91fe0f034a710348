use super::{
    EXTENT_LEN, Extent, ExtentKind, FRAME_HEADER_LEN, FRAME_MAGIC, FrameCompression,
    MAX_FRAME_EXTENTS, MAX_FRAME_RAW, MAX_FRAME_STORED, check_crc, corrupt, data_len, u32_at,
};
use crate::{ArchiveError, Result};

/// Collects the changed blocks of one frame, coalescing adjacent blocks of
/// the same kind into extents.
///
/// A data block's bytes are either copied in ([`push_data`](Self::push_data),
/// then [`encode`](Self::encode)) or only counted
/// ([`push_data_len`](Self::push_data_len)), the caller then handing the
/// whole payload to [`encode_payload`](Self::encode_payload): a dump whose
/// changed blocks lie side by side in its read buffer compresses them from
/// there, without a copy.
#[derive(Debug, Default, Clone)]
pub struct FrameBuilder {
    extents: Vec<Extent>,
    raw: Vec<u8>,
    /// Bytes of all data blocks pushed, copied into `raw` or not.
    raw_len: usize,
}

impl FrameBuilder {
    /// An empty frame.
    pub fn new() -> Self {
        Self::default()
    }

    /// Empties the frame, keeping its buffers.
    pub fn clear(&mut self) {
        self.extents.clear();
        self.raw.clear();
        self.raw_len = 0;
    }

    /// True when no block was pushed.
    pub fn is_empty(&self) -> bool {
        self.extents.is_empty()
    }

    /// Bytes of block data pushed so far (the payload's length).
    pub fn raw_len(&self) -> usize {
        self.raw_len
    }

    /// The extents pushed so far.
    pub fn extents(&self) -> &[Extent] {
        &self.extents
    }

    fn push(&mut self, block: u64, kind: ExtentKind) -> Result<()> {
        if let Some(last) = self.extents.last_mut() {
            if block < last.end_block() {
                return Err(ArchiveError::InvalidWrite {
                    block_offset: block,
                    reason: "blocks must be pushed in increasing order",
                });
            }
            if block == last.end_block() && last.kind == kind && last.blocks < u32::MAX {
                last.blocks += 1;
                return Ok(());
            }
        }
        self.extents.push(Extent {
            first_block: block,
            blocks: 1,
            kind,
        });
        Ok(())
    }

    fn push_data_block(&mut self, block: u64, len: usize) -> Result<()> {
        if self.raw_len + len > MAX_FRAME_RAW as usize {
            return Err(ArchiveError::InvalidWrite {
                block_offset: block,
                reason: "frame payload would exceed 64 MiB",
            });
        }
        self.push(block, ExtentKind::Data)?;
        self.raw_len += len;
        Ok(())
    }

    /// Adds block `block` with its bytes. Only the source's last block may
    /// be shorter than the block size.
    pub fn push_data(&mut self, block: u64, data: &[u8]) -> Result<()> {
        self.push_data_block(block, data.len())?;
        self.raw.extend_from_slice(data);
        Ok(())
    }

    /// Adds block `block`, of `len` bytes, without its bytes: the frame is
    /// then encoded with [`encode_payload`](Self::encode_payload).
    pub fn push_data_len(&mut self, block: u64, len: usize) -> Result<()> {
        self.push_data_block(block, len)
    }

    /// Adds block `block` as an all-zero block: recorded, not stored.
    pub fn push_zero(&mut self, block: u64) -> Result<()> {
        self.push(block, ExtentKind::Zero)
    }

    /// Appends the encoded frame to `out` and describes it. Every data
    /// block must have been pushed with its bytes.
    pub fn encode(&self, compressor: &mut FrameCompressor, out: &mut Vec<u8>) -> Result<FrameMeta> {
        if self.raw.len() != self.raw_len {
            return Err(ArchiveError::InvalidWrite {
                block_offset: self.extents.first().map_or(0, |e| e.first_block),
                reason: "blocks were pushed without their bytes: encode them with encode_payload",
            });
        }
        self.encode_payload(&self.raw, compressor, out)
    }

    /// Appends the encoded frame to `out` and describes it, with `payload`
    /// as its payload: the bytes of its data blocks, in order (see
    /// [`push_data_len`](Self::push_data_len)). Its length must be that of
    /// the data blocks pushed.
    pub fn encode_payload(
        &self,
        payload: &[u8],
        compressor: &mut FrameCompressor,
        out: &mut Vec<u8>,
    ) -> Result<FrameMeta> {
        let first_block = self.extents.first().map_or(0, |e| e.first_block);
        if payload.len() != self.raw_len {
            return Err(ArchiveError::InvalidWrite {
                block_offset: first_block,
                reason: "the payload's length differs from that of the blocks pushed",
            });
        }
        if self.extents.len() > MAX_FRAME_EXTENTS as usize {
            return Err(ArchiveError::InvalidWrite {
                block_offset: first_block,
                reason: "too many extents in one frame",
            });
        }
        let start = out.len();
        out.reserve(FRAME_HEADER_LEN + self.extents.len() * EXTENT_LEN);
        out.extend_from_slice(&[0u8; FRAME_HEADER_LEN]);
        for e in &self.extents {
            out.extend_from_slice(&e.encode());
        }
        let payload_start = out.len();
        let compression = compressor.compress_into(payload, out)?;
        let stored_len = out.len() - payload_start;
        let hdr = &mut out[start..start + FRAME_HEADER_LEN];
        hdr[0..4].copy_from_slice(&FRAME_MAGIC);
        hdr[4] = compression.id();
        hdr[8..12].copy_from_slice(&(self.extents.len() as u32).to_le_bytes());
        hdr[12..16].copy_from_slice(&(payload.len() as u32).to_le_bytes());
        hdr[16..20].copy_from_slice(&(stored_len as u32).to_le_bytes());
        let mut h = crc32fast::Hasher::new();
        h.update(&out[start..start + 20]);
        h.update(&out[start + FRAME_HEADER_LEN..]);
        let crc = h.finalize();
        out[start + 20..start + 24].copy_from_slice(&crc.to_le_bytes());
        let (mut data_blocks, mut zero_blocks) = (0, 0);
        for e in &self.extents {
            match e.kind {
                ExtentKind::Data => data_blocks += u64::from(e.blocks),
                ExtentKind::Zero => zero_blocks += u64::from(e.blocks),
            }
        }
        Ok(FrameMeta {
            len: (out.len() - start) as u32,
            extents: self.extents.clone(),
            raw_len: payload.len() as u32,
            stored_len: stored_len as u32,
            data_blocks,
            zero_blocks,
        })
    }
}

/// What the index needs to know of an encoded frame.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FrameMeta {
    /// Length of the whole encoded frame.
    pub len: u32,
    /// Its extents.
    pub extents: Vec<Extent>,
    /// Payload bytes before compression.
    pub raw_len: u32,
    /// Payload bytes as stored.
    pub stored_len: u32,
    /// Blocks stored as data.
    pub data_blocks: u64,
    /// Blocks recorded as zero.
    pub zero_blocks: u64,
}

/// A reusable compression context: one per worker thread.
pub struct FrameCompressor {
    compression: FrameCompression,
    zstd: Option<zstd::zstd_safe::CCtx<'static>>,
}

impl std::fmt::Debug for FrameCompressor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameCompressor")
            .field("compression", &self.compression)
            .finish()
    }
}

fn zstd_error(code: usize) -> ArchiveError {
    ArchiveError::Io {
        offset: 0,
        source: std::io::Error::other(zstd::zstd_safe::get_error_name(code)),
    }
}

impl FrameCompressor {
    /// A context compressing with zstd at `level`, or storing.
    pub fn new(compression: FrameCompression, level: i32) -> Result<Self> {
        let zstd = match compression {
            FrameCompression::Zstd => {
                let mut ctx =
                    zstd::zstd_safe::CCtx::try_create().ok_or_else(|| ArchiveError::Io {
                        offset: 0,
                        source: std::io::Error::other("cannot allocate a zstd context"),
                    })?;
                use zstd::zstd_safe::CParameter;
                ctx.set_parameter(CParameter::CompressionLevel(level))
                    .map_err(zstd_error)?;
                if level == 1 {
                    // Level 1 (the default) with a window of 1 MiB, a whole
                    // frame of a dump, where zstd's is 512 KiB: a slightly
                    // better ratio at the same speed. And a match-finder
                    // hash table of 2^13 entries instead of 2^14: it stays
                    // in a core's L1/L2 cache, for 4-6% more speed at a
                    // ratio about 2% lower.
                    ctx.set_parameter(CParameter::WindowLog(20))
                        .map_err(zstd_error)?;
                    ctx.set_parameter(CParameter::HashLog(13))
                        .map_err(zstd_error)?;
                }
                Some(ctx)
            }
            FrameCompression::None => None,
        };
        Ok(FrameCompressor { compression, zstd })
    }

    /// Appends `raw`, compressed, to `out` and returns the compression
    /// used: one zstd frame, written straight into `out`, or `raw` as is
    /// when it is empty or does not shrink.
    fn compress_into(&mut self, raw: &[u8], out: &mut Vec<u8>) -> Result<FrameCompression> {
        let start = out.len();
        if let Some(ctx) = self.zstd.as_mut()
            && !raw.is_empty()
        {
            use zstd::zstd_safe::{
                InBuffer, OutBuffer, ResetDirective, zstd_sys::ZSTD_EndDirective,
            };
            // As ZSTD_compress2 does: a new frame, the whole input at once,
            // with room for the worst case so that it ends in this call.
            ctx.reset(ResetDirective::SessionOnly).map_err(zstd_error)?;
            out.reserve(zstd::zstd_safe::compress_bound(raw.len()));
            let mut input = InBuffer::around(raw);
            let mut output = OutBuffer::around_pos(out, start);
            let left = ctx.compress_stream2(&mut output, &mut input, ZSTD_EndDirective::ZSTD_e_end);
            let done = matches!(left, Ok(0)) && input.pos() == raw.len();
            let stored = output.pos() - start;
            if done && stored < raw.len() {
                return Ok(FrameCompression::Zstd);
            }
            // Not smaller (or, which the bound rules out, not finished):
            // store the payload; the next frame starts a new session.
            out.truncate(start);
            left.map_err(zstd_error)?;
        }
        out.extend_from_slice(raw);
        Ok(FrameCompression::None)
    }
}

/// A reusable decompression context: one per thread that decodes frames.
#[derive(Default)]
pub struct FrameDecompressor {
    zstd: Option<zstd::bulk::Decompressor<'static>>,
}

impl std::fmt::Debug for FrameDecompressor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FrameDecompressor")
    }
}

/// A decoded frame: its extents and its decompressed payload (the data
/// extents' blocks, in order).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Frame {
    /// The frame's extents.
    pub extents: Vec<Extent>,
    /// The data extents' bytes, concatenated.
    pub payload: Vec<u8>,
}

/// Lengths from a frame header, checked against the limits.
pub(super) struct FrameLengths {
    pub compression: FrameCompression,
    pub extents: u32,
    pub raw: u32,
    pub stored: u32,
}

impl FrameLengths {
    pub fn total(&self) -> u64 {
        FRAME_HEADER_LEN as u64
            + u64::from(self.extents) * EXTENT_LEN as u64
            + u64::from(self.stored)
    }
}

pub(super) fn parse_frame_header(
    hdr: &[u8; FRAME_HEADER_LEN],
    what: &str,
    offset: u64,
) -> Result<FrameLengths> {
    if hdr[0..4] != FRAME_MAGIC {
        return Err(corrupt(what, offset, "bad frame magic"));
    }
    let compression = FrameCompression::from_id(hdr[4])
        .ok_or_else(|| corrupt(what, offset, format!("unknown compression {}", hdr[4])))?;
    if hdr[5..8] != [0, 0, 0] {
        return Err(corrupt(what, offset, "reserved frame bytes are not zero"));
    }
    let extents = u32_at(hdr, 8);
    let raw = u32_at(hdr, 12);
    let stored = u32_at(hdr, 16);
    if extents == 0 || extents > MAX_FRAME_EXTENTS {
        return Err(corrupt(
            what,
            offset,
            format!("{extents} extents (allowed: 1 to {MAX_FRAME_EXTENTS})"),
        ));
    }
    if raw > MAX_FRAME_RAW {
        return Err(corrupt(
            what,
            offset,
            format!("payload of {raw} bytes exceeds the 64 MiB limit"),
        ));
    }
    if stored > MAX_FRAME_STORED || (compression == FrameCompression::None && stored != raw) {
        return Err(corrupt(
            what,
            offset,
            format!("stored length {stored} does not fit payload length {raw}"),
        ));
    }
    Ok(FrameLengths {
        compression,
        extents,
        raw,
        stored,
    })
}

/// Decodes one whole frame (`bytes`, found at file offset `offset`): checks
/// its header's lengths against the limits and the frame's length, then its
/// CRC before decoding anything, then its extents against the block size
/// and source size, and decompresses its payload into `frame`.
pub fn decode_frame(
    bytes: &[u8],
    what: &str,
    offset: u64,
    block_size: u32,
    source_size: u64,
    decompressor: &mut FrameDecompressor,
    frame: &mut Frame,
) -> Result<()> {
    let Some(hdr) = bytes.first_chunk::<FRAME_HEADER_LEN>() else {
        return Err(corrupt(what, offset, "shorter than a frame header"));
    };
    let lens = parse_frame_header(hdr, what, offset)?;
    if lens.total() != bytes.len() as u64 {
        return Err(corrupt(
            what,
            offset,
            format!(
                "frame is {} bytes but its header says {}",
                bytes.len(),
                lens.total()
            ),
        ));
    }
    check_crc(
        what,
        offset,
        u32_at(hdr, 20),
        &[&bytes[..20], &bytes[FRAME_HEADER_LEN..]],
    )?;
    let table_end = FRAME_HEADER_LEN + lens.extents as usize * EXTENT_LEN;
    frame.extents.clear();
    let blocks_in_source = source_size.div_ceil(u64::from(block_size));
    let mut expected_raw = 0u64;
    for (i, e) in bytes[FRAME_HEADER_LEN..table_end]
        .chunks_exact(EXTENT_LEN)
        .enumerate()
    {
        let at = offset + (FRAME_HEADER_LEN + i * EXTENT_LEN) as u64;
        let e = Extent::decode(e, what, at)?;
        if frame
            .extents
            .last()
            .is_some_and(|p: &Extent| e.first_block < p.end_block())
        {
            return Err(corrupt(what, at, "extents overlap or are out of order"));
        }
        if e.end_block() > blocks_in_source {
            return Err(corrupt(
                what,
                at,
                format!(
                    "extent ends at block {} but the source has {blocks_in_source} blocks",
                    e.end_block()
                ),
            ));
        }
        if e.kind == ExtentKind::Data {
            expected_raw += data_len(e.first_block, u64::from(e.blocks), block_size, source_size);
        }
        frame.extents.push(e);
    }
    // A source of unknown size (read from a pipe) may end in this frame: its
    // last data block may then be short.
    let short_tail_ok = source_size == super::UNKNOWN_SIZE
        && frame
            .extents
            .last()
            .is_some_and(|e| e.kind == ExtentKind::Data)
        && u64::from(lens.raw) < expected_raw
        && u64::from(lens.raw) > expected_raw - u64::from(block_size);
    if expected_raw != u64::from(lens.raw) && !short_tail_ok {
        return Err(corrupt(
            what,
            offset,
            format!(
                "payload is {} bytes but its data extents need {expected_raw}",
                lens.raw
            ),
        ));
    }
    let stored = &bytes[table_end..];
    frame.payload.clear();
    match lens.compression {
        FrameCompression::None => frame.payload.extend_from_slice(stored),
        FrameCompression::Zstd => {
            if decompressor.zstd.is_none() {
                decompressor.zstd = Some(
                    zstd::bulk::Decompressor::new()
                        .map_err(|source| ArchiveError::Io { offset, source })?,
                );
            }
            let d = decompressor.zstd.as_mut().expect("set just above");
            frame.payload.reserve_exact(lens.raw as usize);
            let n = d
                .decompress_to_buffer(stored, &mut frame.payload)
                .map_err(|e| {
                    corrupt(
                        what,
                        offset,
                        format!("zstd payload does not decompress: {e}"),
                    )
                })?;
            if n != lens.raw as usize {
                return Err(corrupt(
                    what,
                    offset,
                    format!("payload decompresses to {n} bytes, expected {}", lens.raw),
                ));
            }
        }
    }
    Ok(())
}
