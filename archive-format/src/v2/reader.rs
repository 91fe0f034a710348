use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;

pub use super::frame::Frame;
use super::frame::{FrameDecompressor, parse_frame_header};
use super::{
    DiffHeader, DiffSummary, END_MAGIC, EXTENT_LEN, Extent, ExtentKind, FOOTER_LEN,
    FRAME_ENTRY_LEN, FRAME_HEADER_LEN, FRAME_MAGIC, FrameEntry, HEADER_LEN, INDEX_HEADER_LEN,
    INDEX_MAGIC, MAX_FRAME_EXTENTS, MAX_FRAME_LEN, MAX_INDEX_LEN, UNKNOWN_SIZE, check_crc, corrupt,
    data_len, decode_frame, max_stored_len, u32_at, u64_at,
};
use crate::skip::read_growing;
use crate::{ArchiveError, Limits, Result, read_full};

/// Positional reads, as a file or a byte buffer allows.
pub trait ReadAt {
    /// Reads up to `buf.len()` bytes at `offset`.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
    /// The length of the whole.
    fn size(&self) -> io::Result<u64>;
}

impl ReadAt for File {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        FileExt::read_at(self, buf, offset)
    }
    fn size(&self) -> io::Result<u64> {
        Ok(self.metadata()?.len())
    }
}

impl ReadAt for [u8] {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(self.len());
        let n = buf.len().min(self.len() - start);
        buf[..n].copy_from_slice(&self[start..start + n]);
        Ok(n)
    }
    fn size(&self) -> io::Result<u64> {
        Ok(self.len() as u64)
    }
}

impl ReadAt for Vec<u8> {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.as_slice().read_at(buf, offset)
    }
    fn size(&self) -> io::Result<u64> {
        Ok(self.len() as u64)
    }
}

impl<T: ReadAt + ?Sized> ReadAt for &T {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        (**self).read_at(buf, offset)
    }
    fn size(&self) -> io::Result<u64> {
        (**self).size()
    }
}

impl<T: ReadAt + ?Sized> ReadAt for Box<T> {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        (**self).read_at(buf, offset)
    }
    fn size(&self) -> io::Result<u64> {
        (**self).size()
    }
}

impl<T: ReadAt + ?Sized> ReadAt for std::sync::Arc<T> {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        (**self).read_at(buf, offset)
    }
    fn size(&self) -> io::Result<u64> {
        (**self).size()
    }
}

/// Reads exactly `buf.len()` bytes at `offset`, retrying short and
/// interrupted reads; a source that ends first is an `UnexpectedEof`
/// error saying so.
pub fn fill_at<F: ReadAt + ?Sized>(src: &F, mut buf: &mut [u8], mut offset: u64) -> io::Result<()> {
    while !buf.is_empty() {
        match src.read_at(buf, offset) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the file ended early (it shrank while read?)",
                ));
            }
            Ok(n) => {
                buf = &mut buf[n..];
                offset += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn read_exact_at<F: ReadAt + ?Sized>(
    src: &F,
    buf: &mut [u8],
    offset: u64,
    what: &str,
) -> Result<()> {
    let mut done = 0;
    while done < buf.len() {
        match src.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => {
                return Err(corrupt(
                    what,
                    offset,
                    format!("file ends after {done} of {} bytes", buf.len()),
                ));
            }
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(source) => {
                return Err(ArchiveError::Io {
                    offset: offset + done as u64,
                    source,
                });
            }
        }
    }
    Ok(())
}

/// The parsed, checked index of a diff file.
#[derive(Debug, Clone, Default)]
struct Index {
    summary: DiffSummary,
    frames: Vec<FrameEntry>,
    extents: Vec<Extent>,
    /// Index into `extents` of each frame's first extent.
    first_extent: Vec<usize>,
}

/// Parses the index at `index_offset` (its bytes in `b`), checking it
/// against the header and itself.
fn parse_index(b: &[u8], index_offset: u64, header: &DiffHeader, limits: &Limits) -> Result<Index> {
    let what = "index";
    if b.len() < INDEX_HEADER_LEN || b[0..4] != INDEX_MAGIC {
        return Err(corrupt(what, index_offset, "bad index magic"));
    }
    if b[4..8] != [0; 4] {
        return Err(corrupt(
            what,
            index_offset,
            "reserved index bytes are not zero",
        ));
    }
    let frame_count = u64_at(b, 8);
    let extent_count = u64_at(b, 16);
    let expected = frame_count
        .checked_mul(FRAME_ENTRY_LEN as u64)
        .zip(extent_count.checked_mul(EXTENT_LEN as u64))
        .and_then(|(f, e)| f.checked_add(e))
        .and_then(|n| n.checked_add(INDEX_HEADER_LEN as u64));
    if expected != Some(b.len() as u64) {
        return Err(corrupt(
            what,
            index_offset,
            format!(
                "{frame_count} frames and {extent_count} extents do not fit an index of {} bytes",
                b.len()
            ),
        ));
    }
    let mut fingerprint = [0u8; 32];
    fingerprint.copy_from_slice(&b[64..96]);
    let summary = DiffSummary {
        source_size: u64_at(b, 24),
        data_blocks: u64_at(b, 32),
        zero_blocks: u64_at(b, 40),
        raw_bytes: u64_at(b, 48),
        stored_bytes: u64_at(b, 56),
        fingerprint,
    };
    let source_size = summary.source_size;
    if source_size > limits.max_source_size {
        return Err(corrupt(
            what,
            index_offset + 24,
            format!("source size {source_size} is beyond the limit"),
        ));
    }
    if header.source_size != UNKNOWN_SIZE && header.source_size != source_size {
        return Err(corrupt(
            what,
            index_offset + 24,
            format!(
                "source size {source_size} differs from the header's {}",
                header.source_size
            ),
        ));
    }
    let bs = header.block_size;
    let blocks_in_source = source_size.div_ceil(u64::from(bs));

    // Both counts were checked against the index's length, read in full:
    // these allocations are bounded by its bytes.
    let mut index = Index {
        summary,
        frames: Vec::with_capacity(frame_count as usize),
        extents: Vec::with_capacity(extent_count as usize),
        first_extent: Vec::with_capacity(frame_count as usize),
    };
    let mut at = INDEX_HEADER_LEN;
    let mut next_offset = HEADER_LEN as u64;
    let mut total_extents = 0u64;
    let mut stored = 0u64;
    for i in 0..frame_count {
        let e = &b[at..at + FRAME_ENTRY_LEN];
        let f = FrameEntry {
            offset: u64_at(e, 0),
            len: u32_at(e, 8),
            extents: u32_at(e, 12),
        };
        let min_len = FRAME_HEADER_LEN as u64 + u64::from(f.extents) * EXTENT_LEN as u64;
        // The limits of a frame header (§1 of FORMAT.md) bound the entry
        // too, before a reader allocates `len` bytes to read the frame.
        if f.extents > MAX_FRAME_EXTENTS || u64::from(f.len) > min_len + max_stored_len() {
            return Err(corrupt(
                what,
                index_offset + at as u64,
                format!(
                    "frame {i} entry ({} bytes, {} extents) is beyond the limits of a frame (at most {MAX_FRAME_EXTENTS} extents and {MAX_FRAME_LEN} bytes)",
                    f.len, f.extents
                ),
            ));
        }
        if f.offset != next_offset || f.extents == 0 || u64::from(f.len) < min_len {
            return Err(corrupt(
                what,
                index_offset + at as u64,
                format!(
                    "frame {i} entry (offset {}, {} bytes, {} extents) does not follow the previous frame",
                    f.offset, f.len, f.extents
                ),
            ));
        }
        next_offset += u64::from(f.len);
        stored += u64::from(f.len) - min_len;
        index.first_extent.push(total_extents as usize);
        total_extents += u64::from(f.extents);
        index.frames.push(f);
        at += FRAME_ENTRY_LEN;
    }
    if next_offset != index_offset {
        return Err(corrupt(
            what,
            index_offset,
            format!("frames end at offset {next_offset}, not where the index starts"),
        ));
    }
    if total_extents != extent_count {
        return Err(corrupt(
            what,
            index_offset + 16,
            format!("frames hold {total_extents} extents, the index lists {extent_count}"),
        ));
    }
    let (mut data_blocks, mut zero_blocks, mut raw) = (0u64, 0u64, 0u64);
    for _ in 0..extent_count {
        let e = Extent::decode(&b[at..at + EXTENT_LEN], what, index_offset + at as u64)?;
        if index
            .extents
            .last()
            .is_some_and(|p: &Extent| e.first_block < p.end_block())
        {
            return Err(corrupt(
                what,
                index_offset + at as u64,
                "extents overlap or are out of order",
            ));
        }
        if e.end_block() > blocks_in_source {
            return Err(corrupt(
                what,
                index_offset + at as u64,
                format!(
                    "extent ends at block {} but the source has {blocks_in_source} blocks",
                    e.end_block()
                ),
            ));
        }
        match e.kind {
            ExtentKind::Data => {
                data_blocks += u64::from(e.blocks);
                raw += data_len(e.first_block, u64::from(e.blocks), bs, source_size);
            }
            ExtentKind::Zero => zero_blocks += u64::from(e.blocks),
        }
        index.extents.push(e);
        at += EXTENT_LEN;
    }
    let s = &index.summary;
    if (data_blocks, zero_blocks, raw, stored)
        != (s.data_blocks, s.zero_blocks, s.raw_bytes, s.stored_bytes)
    {
        return Err(corrupt(
            what,
            index_offset + 32,
            "the counts disagree with the frames and extents",
        ));
    }
    Ok(index)
}

/// Parses the footer; returns the index's offset, length and CRC.
fn parse_footer(f: &[u8; FOOTER_LEN], offset: u64, file_len: u64) -> Result<(u64, u64, u32)> {
    if f[24..32] != END_MAGIC {
        return Err(ArchiveError::MissingTrailer { len: file_len });
    }
    check_crc("footer", offset, u32_at(f, 20), &[&f[..20]])?;
    let index_offset = u64_at(f, 0);
    let index_len = u64_at(f, 8);
    if index_len > MAX_INDEX_LEN
        || index_offset.checked_add(index_len) != Some(offset)
        || index_offset < HEADER_LEN as u64
    {
        return Err(corrupt(
            "footer",
            offset,
            format!(
                "index at offset {index_offset} of {index_len} bytes does not end where the footer starts"
            ),
        ));
    }
    Ok((index_offset, index_len, u32_at(f, 16)))
}

/// A v2 diff file opened for random access: header and index read and
/// checked at open, frames read on demand. This is how restore fetches
/// only the blocks it needs.
///
/// ```
/// use archive_format::{DiffFile, DiffHeader, DiffWriter, Frame, FrameBuilder, FrameCompressor, FrameCompression, FrameDecompressor, HashAlgorithm};
///
/// let header = DiffHeader {
///     block_size: 4, source_size: 10, generation: 1, hash: HashAlgorithm::Blake3,
///     compression: FrameCompression::Zstd, level: 1, created_secs: 0, created_nanos: 0, parent: [0; 32],
///     folded_parent: 0,
/// };
/// let mut w = DiffWriter::new(Vec::new(), header)?;
/// let mut frame = FrameBuilder::new();
/// frame.push_data(0, b"abcd")?;
/// frame.push_zero(1)?;
/// frame.push_data(2, b"ef")?;
/// let mut bytes = Vec::new();
/// let meta = frame.encode(&mut FrameCompressor::new(FrameCompression::Zstd, 1)?, &mut bytes)?;
/// w.append_frame(&bytes, &meta)?;
/// let file = w.finish(10, [7; 32])?;
///
/// let diff = DiffFile::open(file)?;
/// assert_eq!(diff.summary().data_blocks, 2);
/// let mut out = Frame::default();
/// diff.read_frame(0, &mut out, &mut FrameDecompressor::default())?;
/// assert_eq!(out.payload, b"abcdef");
/// # Ok::<(), archive_format::ArchiveError>(())
/// ```
#[derive(Debug)]
pub struct DiffFile<F> {
    src: F,
    header: DiffHeader,
    index: Index,
}

impl<F: ReadAt> DiffFile<F> {
    /// Opens with the default [`Limits`].
    pub fn open(src: F) -> Result<Self> {
        Self::open_with_limits(src, &Limits::default())
    }

    /// Reads and checks the header, footer and index.
    pub fn open_with_limits(src: F, limits: &Limits) -> Result<Self> {
        let len = src
            .size()
            .map_err(|source| ArchiveError::Io { offset: 0, source })?;
        let mut h = [0u8; HEADER_LEN];
        if len < HEADER_LEN as u64 {
            return Err(ArchiveError::Truncated {
                what: "the v2 header",
                offset: 0,
                got: len,
                need: HEADER_LEN as u64,
            });
        }
        read_exact_at(&src, &mut h, 0, "header")?;
        let header = DiffHeader::decode(&h, limits)?;
        if len < (HEADER_LEN + INDEX_HEADER_LEN + FOOTER_LEN) as u64 {
            return Err(ArchiveError::MissingTrailer { len });
        }
        let footer_at = len - FOOTER_LEN as u64;
        let mut f = [0u8; FOOTER_LEN];
        read_exact_at(&src, &mut f, footer_at, "footer")?;
        let (index_offset, index_len, index_crc) = parse_footer(&f, footer_at, len)?;
        let mut ib = vec![0u8; index_len as usize];
        read_exact_at(&src, &mut ib, index_offset, "index")?;
        check_crc("index", index_offset, index_crc, &[&ib])?;
        let index = parse_index(&ib, index_offset, &header, limits)?;
        Ok(DiffFile { src, header, index })
    }

    /// The header.
    pub fn header(&self) -> &DiffHeader {
        &self.header
    }

    /// The index's summary.
    pub fn summary(&self) -> &DiffSummary {
        &self.index.summary
    }

    /// Where each frame is.
    pub fn frames(&self) -> &[FrameEntry] {
        &self.index.frames
    }

    /// All extents, in block order.
    pub fn extents(&self) -> &[Extent] {
        &self.index.extents
    }

    /// The extents of frame `i`.
    pub fn frame_extents(&self, i: usize) -> &[Extent] {
        let start = self.index.first_extent[i];
        &self.index.extents[start..start + self.index.frames[i].extents as usize]
    }

    /// Reads, checks (CRC first) and decompresses frame `i` into `frame`.
    /// `decompressor` is a reusable context.
    pub fn read_frame(
        &self,
        i: usize,
        frame: &mut Frame,
        decompressor: &mut FrameDecompressor,
    ) -> Result<()> {
        let mut bytes = Vec::new();
        self.read_frame_bytes(i, &mut bytes)?;
        self.decode_frame_bytes(i, &bytes, frame, decompressor)
    }

    /// Reads `buf.len()` bytes of frame `i`'s payload, from payload offset
    /// `at`, straight from the file when the frame is stored uncompressed
    /// (compression 0), without reading the rest of the frame: `Ok(true)`.
    /// A compressed frame gives `Ok(false)` and reads nothing but its
    /// header (read it whole with [`read_frame`](Self::read_frame)).
    ///
    /// The frame's header is checked (magic, limits, its length and extent
    /// count against the index) and the range against its payload length,
    /// but the frame CRC covers the whole frame and is **not** checked: the
    /// caller must check the bytes itself, as a generation reader checks
    /// each block against the digest's hash before using it.
    pub fn read_stored_payload(&self, i: usize, at: u64, buf: &mut [u8]) -> Result<bool> {
        let entry = self.index.frames[i];
        let what = format!("frame {i}");
        let mut hdr = [0u8; FRAME_HEADER_LEN];
        read_exact_at(&self.src, &mut hdr, entry.offset, &what)?;
        let lens = parse_frame_header(&hdr, &what, entry.offset)?;
        if lens.total() != u64::from(entry.len) || lens.extents != entry.extents {
            return Err(corrupt(
                what,
                entry.offset,
                format!(
                    "its header says {} bytes and {} extents, the index {} bytes and {} extents",
                    lens.total(),
                    lens.extents,
                    entry.len,
                    entry.extents
                ),
            ));
        }
        if lens.compression != super::FrameCompression::None {
            return Ok(false);
        }
        let end = at.checked_add(buf.len() as u64);
        if end.is_none_or(|end| end > u64::from(lens.raw)) {
            return Err(corrupt(
                what,
                entry.offset,
                format!(
                    "{} bytes at payload offset {at} asked for, beyond its payload of {} bytes",
                    buf.len(),
                    lens.raw
                ),
            ));
        }
        let payload =
            entry.offset + FRAME_HEADER_LEN as u64 + u64::from(lens.extents) * EXTENT_LEN as u64;
        read_exact_at(&self.src, buf, payload + at, &what)?;
        Ok(true)
    }

    /// Reads frame `i`'s raw bytes (for decoding on another thread with
    /// [`decode_frame_bytes`](Self::decode_frame_bytes)).
    pub fn read_frame_bytes(&self, i: usize, bytes: &mut Vec<u8>) -> Result<()> {
        let entry = self.index.frames[i];
        bytes.resize(entry.len as usize, 0);
        read_exact_at(&self.src, bytes, entry.offset, &format!("frame {i}"))
    }

    /// Checks and decodes frame `i` from its raw bytes.
    pub fn decode_frame_bytes(
        &self,
        i: usize,
        bytes: &[u8],
        frame: &mut Frame,
        decompressor: &mut FrameDecompressor,
    ) -> Result<()> {
        let entry = self.index.frames[i];
        let what = format!("frame {i}");
        decode_frame(
            bytes,
            &what,
            entry.offset,
            self.header.block_size,
            self.index.summary.source_size,
            decompressor,
            frame,
        )?;
        if frame.extents != self.frame_extents(i) {
            return Err(corrupt(what, entry.offset, "extents differ from the index"));
        }
        Ok(())
    }
}

/// Reads a v2 diff front to back, as from a pipe: frames one by one, then
/// the index, which must agree with the frames seen, and the footer.
#[derive(Debug)]
pub struct StreamReader<R> {
    inner: R,
    header: DiffHeader,
    limits: Limits,
    pos: u64,
    seen_frames: Vec<FrameEntry>,
    seen_extents: Vec<Extent>,
    bytes: Vec<u8>,
    decompressor: FrameDecompressor,
    summary: Option<DiffSummary>,
    /// Payload bytes of the frames read.
    seen_raw: u64,
    /// The last frame read ended in a short block.
    short_tail: bool,
}

impl<R: Read> StreamReader<R> {
    /// Reads the header.
    pub fn new(inner: R) -> Result<Self> {
        Self::with_limits(inner, Limits::default())
    }

    /// Reads the header, checking it against `limits`.
    pub fn with_limits(mut inner: R, limits: Limits) -> Result<Self> {
        let mut h = [0u8; HEADER_LEN];
        let got = read_full(&mut inner, &mut h)
            .map_err(|source| ArchiveError::Io { offset: 0, source })?;
        if got < HEADER_LEN {
            return Err(ArchiveError::Truncated {
                what: "the v2 header",
                offset: 0,
                got: got as u64,
                need: HEADER_LEN as u64,
            });
        }
        let header = DiffHeader::decode(&h, &limits)?;
        Ok(StreamReader {
            inner,
            header,
            limits,
            pos: HEADER_LEN as u64,
            seen_frames: Vec::new(),
            seen_extents: Vec::new(),
            bytes: Vec::new(),
            decompressor: FrameDecompressor::default(),
            summary: None,
            seen_raw: 0,
            short_tail: false,
        })
    }

    /// The header.
    pub fn header(&self) -> &DiffHeader {
        &self.header
    }

    /// The index's summary, once [`next_frame`](Self::next_frame) returned
    /// false.
    pub fn summary(&self) -> Option<&DiffSummary> {
        self.summary.as_ref()
    }

    /// Reads exactly `n` more bytes onto `self.bytes`, growing it only as
    /// bytes arrive (a lying length cannot make it allocate).
    fn read_more(&mut self, n: u64, what: &'static str, start: u64) -> Result<()> {
        // Every caller bounds `n` by a limit of FORMAT.md §1 first (a
        // frame's or the index's length): it fits in memory's address
        // space, and the buffer grows only as the bytes come.
        let want = usize::try_from(n).unwrap_or(usize::MAX);
        let got = read_growing(&mut self.inner, &mut self.bytes, want).map_err(|source| {
            ArchiveError::Io {
                offset: self.pos,
                source,
            }
        })?;
        self.pos += got as u64;
        if (got as u64) < n {
            return Err(ArchiveError::Truncated {
                what,
                offset: start,
                got: got as u64,
                need: n,
            });
        }
        Ok(())
    }

    /// Reads the next frame into `frame`; returns false after the index and
    /// footer were read and checked.
    pub fn next_frame(&mut self, frame: &mut Frame) -> Result<bool> {
        if self.summary.is_some() {
            return Ok(false);
        }
        let start = self.pos;
        self.bytes.clear();
        self.read_more(4, "a frame or the index", start)
            .map_err(|e| match e {
                ArchiveError::Truncated { got: 0, .. } => {
                    ArchiveError::MissingTrailer { len: start }
                }
                e => e,
            })?;
        if self.bytes[..4] == FRAME_MAGIC {
            let what = format!("frame {}", self.seen_frames.len());
            self.read_more((FRAME_HEADER_LEN - 4) as u64, "a frame header", start)?;
            let hdr: &[u8; FRAME_HEADER_LEN] = self.bytes[..FRAME_HEADER_LEN]
                .try_into()
                .expect("read above");
            let lens = parse_frame_header(hdr, &what, start)?;
            self.read_more(lens.total() - FRAME_HEADER_LEN as u64, "a frame", start)?;
            let size = self.header.source_size;
            decode_frame(
                &self.bytes,
                &what,
                start,
                self.header.block_size,
                size,
                &mut self.decompressor,
                frame,
            )?;
            if let (Some(prev), Some(first)) = (self.seen_extents.last(), frame.extents.first())
                && first.first_block < prev.end_block()
            {
                return Err(corrupt(
                    what,
                    start,
                    "frame's extents overlap the previous frame's",
                ));
            }
            // With an unknown source size a frame may end in a short block;
            // that block is the source's last, so no frame may follow it.
            let full: u64 = frame
                .extents
                .iter()
                .filter(|e| e.kind == ExtentKind::Data)
                .map(|e| u64::from(e.blocks) * u64::from(self.header.block_size))
                .sum();
            if self.short_tail {
                return Err(corrupt(
                    what,
                    start,
                    "follows a frame that ended the source with a short block",
                ));
            }
            self.short_tail = (frame.payload.len() as u64) < full;
            self.seen_raw += frame.payload.len() as u64;
            self.seen_frames.push(FrameEntry {
                offset: start,
                len: self.bytes.len() as u32,
                extents: frame.extents.len() as u32,
            });
            self.seen_extents.extend_from_slice(&frame.extents);
            return Ok(true);
        }
        if self.bytes[..4] != INDEX_MAGIC {
            return Err(corrupt(
                "stream",
                start,
                "neither a frame nor the index follows",
            ));
        }
        self.read_more((INDEX_HEADER_LEN - 4) as u64, "the index header", start)?;
        let frames = u64_at(&self.bytes, 8);
        let extents = u64_at(&self.bytes, 16);
        let rest = frames
            .checked_mul(FRAME_ENTRY_LEN as u64)
            .zip(extents.checked_mul(EXTENT_LEN as u64))
            .and_then(|(a, b)| a.checked_add(b))
            .filter(|n| *n <= MAX_INDEX_LEN)
            .ok_or_else(|| corrupt("index", start, "index too large"))?;
        self.read_more(rest, "the index", start)?;
        let index = parse_index(&self.bytes, start, &self.header, &self.limits)?;
        if index.frames != self.seen_frames
            || index.extents != self.seen_extents
            || index.summary.raw_bytes != self.seen_raw
        {
            return Err(corrupt(
                "index",
                start,
                "the index does not describe the frames read",
            ));
        }
        let index_crc = crc32fast::hash(&self.bytes);
        let footer_at = self.pos;
        self.bytes.clear();
        self.read_more(FOOTER_LEN as u64, "the footer", footer_at)
            .map_err(|_| ArchiveError::MissingTrailer { len: footer_at })?;
        let f: [u8; FOOTER_LEN] = self.bytes[..FOOTER_LEN].try_into().expect("read above");
        let (index_offset, _, stored_crc) =
            parse_footer(&f, footer_at, footer_at + FOOTER_LEN as u64)?;
        if index_offset != start {
            return Err(corrupt("footer", footer_at, "does not point at the index"));
        }
        if stored_crc != index_crc {
            return Err(ArchiveError::Checksum {
                what: "index".into(),
                offset: start,
                stored: stored_crc,
                computed: index_crc,
            });
        }
        let mut probe = [0u8; 1];
        if read_full(&mut self.inner, &mut probe).map_err(|source| ArchiveError::Io {
            offset: self.pos,
            source,
        })? != 0
        {
            return Err(corrupt("stream", self.pos, "bytes follow the end marker"));
        }
        self.summary = Some(index.summary);
        Ok(false)
    }
}
