//! The original blockdiff diff stream.
//!
//! Layout (all integers little-endian):
//!
//! ```text
//! u32 block_size
//! repeated: u32 offset_low, u32 offset_high, block bytes
//! ```
//!
//! Every block is `block_size` long except the source's last block, which may
//! be short and is then the final record. There is no magic, no count and no
//! terminator, so a stream cut exactly at a record boundary, or inside the
//! data of the final record, cannot be told from a complete one by the stream
//! alone: the digest sidecar is what reveals it.

use std::io::{self, Read, Write};

use crate::skip::{SkipRead, read_full, read_growing};
use crate::{ArchiveError, Limits, Result};

/// Length of the stream header (the block size).
pub const HEADER_LEN: u64 = 4;
/// Length of a record header (the block offset).
pub const RECORD_HEADER_LEN: u64 = 8;

/// The first three bytes of a gzip member, which a legacy stream's block
/// size must not spell.
const GZIP_LOOKALIKE: [u8; 3] = [0x1f, 0x8b, 0x08];

/// One record's header, as returned by [`LegacyReader::next_record`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordHeader {
    /// Byte offset of the block in the source.
    pub block_offset: u64,
    /// Offset of the record header in the stream.
    pub stream_offset: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Between records.
    Header,
    /// A header was read; its data has not been consumed yet.
    Data(RecordHeader),
    /// A short block was read: the stream ended there.
    AfterShort,
    /// End of stream reached.
    Done,
}

/// Reads a legacy diff stream record by record.
///
/// The reader never panics and never allocates more than one block, whose
/// size is checked against [`Limits`] first. It works with readers that
/// return one byte at a time.
///
/// ```
/// use archive_format::{LegacyReader, LegacyWriter};
///
/// let mut w = LegacyWriter::new(Vec::new(), 4)?;
/// w.write_record(4, b"abcd")?;
/// w.write_record(8, b"ef")?;
/// let bytes = w.finish()?;
///
/// let mut r = LegacyReader::new(&bytes[..])?;
/// let mut buf = Vec::new();
/// let mut got = Vec::new();
/// while let Some(rec) = r.next_record()? {
///     r.read_data(&mut buf)?;
///     got.push((rec.block_offset, buf.clone()));
/// }
/// assert_eq!(got, vec![(4, b"abcd".to_vec()), (8, b"ef".to_vec())]);
/// # Ok::<(), archive_format::ArchiveError>(())
/// ```
#[derive(Debug)]
pub struct LegacyReader<R> {
    inner: R,
    block_size: u32,
    pos: u64,
    limits: Limits,
    state: State,
    /// The smallest block offset the next record may have.
    next_min: u64,
}

impl<R: Read> LegacyReader<R> {
    /// Reads the stream header with the default [`Limits`].
    pub fn new(inner: R) -> Result<Self> {
        Self::with_limits(inner, Limits::default())
    }

    /// Reads the stream header, checking the block size against `limits`.
    pub fn with_limits(mut inner: R, limits: Limits) -> Result<Self> {
        let mut hdr = [0u8; 4];
        let got = read_full(&mut inner, &mut hdr)
            .map_err(|source| ArchiveError::Io { offset: 0, source })?;
        if got < hdr.len() {
            return Err(ArchiveError::Truncated {
                what: "the stream header (block size)",
                offset: 0,
                got: got as u64,
                need: HEADER_LEN,
            });
        }
        let block_size = limits.check_block_size(u64::from(u32::from_le_bytes(hdr)), 0)?;
        Ok(LegacyReader {
            inner,
            block_size,
            pos: HEADER_LEN,
            limits,
            state: State::Header,
            next_min: 0,
        })
    }

    /// The stream's block size.
    pub fn block_size(&self) -> u32 {
        self.block_size
    }

    /// Bytes of the stream consumed so far.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// Gives the underlying reader back.
    pub fn into_inner(self) -> R {
        self.inner
    }

    fn io_err(&self, source: io::Error) -> ArchiveError {
        ArchiveError::Io {
            offset: self.pos,
            source,
        }
    }

    /// Reads the next record header, or `None` at the end of the stream.
    ///
    /// If the previous record's data was neither read nor skipped, it is
    /// read and dropped first.
    pub fn next_record(&mut self) -> Result<Option<RecordHeader>> {
        if let State::Data(_) = self.state {
            let mut scratch = Vec::new();
            self.read_data(&mut scratch)?;
        }
        match self.state {
            State::Done => return Ok(None),
            // A short block can only have been the final record: reading
            // it stopped at the end of the stream.
            State::AfterShort => {
                self.state = State::Done;
                return Ok(None);
            }
            State::Header | State::Data(_) => {}
        }
        let mut hdr = [0u8; 8];
        let got = read_full(&mut self.inner, &mut hdr).map_err(|e| self.io_err(e))?;
        if got == 0 {
            self.state = State::Done;
            return Ok(None);
        }
        if got < hdr.len() {
            return Err(ArchiveError::Truncated {
                what: "a record header",
                offset: self.pos,
                got: got as u64,
                need: RECORD_HEADER_LEN,
            });
        }
        let low = u32::from_le_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]);
        let high = u32::from_le_bytes([hdr[4], hdr[5], hdr[6], hdr[7]]);
        let block_offset = u64::from(low) | (u64::from(high) << 32);
        let header = RecordHeader {
            block_offset,
            stream_offset: self.pos,
        };
        if !block_offset.is_multiple_of(u64::from(self.block_size)) {
            return Err(ArchiveError::Misaligned {
                offset: self.pos,
                block_offset,
                block_size: self.block_size,
            });
        }
        let end = block_offset.checked_add(u64::from(self.block_size));
        if end.is_none_or(|end| end > self.limits.max_source_size) {
            return Err(ArchiveError::OffsetTooLarge {
                offset: self.pos,
                block_offset,
                max: self.limits.max_source_size,
            });
        }
        if block_offset < self.next_min {
            return Err(ArchiveError::OutOfOrder {
                offset: self.pos,
                block_offset,
                previous: self.next_min - u64::from(self.block_size),
            });
        }
        self.next_min = block_offset + u64::from(self.block_size);
        self.pos += RECORD_HEADER_LEN;
        self.state = State::Data(header);
        Ok(Some(header))
    }

    fn finish_data(&mut self, header: RecordHeader, len: u64) -> Result<()> {
        if len == 0 {
            return Err(ArchiveError::EmptyRecord {
                offset: header.stream_offset,
            });
        }
        self.pos += len;
        self.state = if len < u64::from(self.block_size) {
            State::AfterShort
        } else {
            State::Header
        };
        Ok(())
    }

    /// Reads the current record's data into `buf` (replacing its contents)
    /// and returns its length: the block size, or less for the final block.
    pub fn read_data(&mut self, buf: &mut Vec<u8>) -> Result<usize> {
        let State::Data(header) = self.state else {
            buf.clear();
            return Ok(0);
        };
        let bs = self.block_size as usize;
        let got = if buf.capacity() >= bs {
            buf.resize(bs, 0);
            let got = read_full(&mut self.inner, buf).map_err(|e| self.io_err(e))?;
            buf.truncate(got);
            got
        } else {
            // The block size is checked against the limits, but comes from
            // the stream: the buffer grows only as the block's bytes come.
            buf.clear();
            read_growing(&mut self.inner, buf, bs).map_err(|e| self.io_err(e))?
        };
        self.finish_data(header, got as u64)?;
        Ok(got)
    }

    /// Reads the next record into `buf`: a convenience for
    /// [`next_record`](Self::next_record) followed by
    /// [`read_data`](Self::read_data).
    pub fn read_record(&mut self, buf: &mut Vec<u8>) -> Result<Option<RecordHeader>> {
        let Some(header) = self.next_record()? else {
            return Ok(None);
        };
        self.read_data(buf)?;
        Ok(Some(header))
    }
}

impl<R: SkipRead> LegacyReader<R> {
    /// Skips the current record's data and returns its length. On a plain
    /// file this is a seek, not a read.
    pub fn skip_data(&mut self) -> Result<u64> {
        let State::Data(header) = self.state else {
            return Ok(0);
        };
        let got = self
            .inner
            .skip_bytes(u64::from(self.block_size))
            .map_err(|e| self.io_err(e))?;
        self.finish_data(header, got)?;
        Ok(got)
    }
}

/// Writes a legacy diff stream.
///
/// Records must have block-aligned offsets and `block_size` bytes of data,
/// except one final short block. Call [`finish`](Self::finish) to flush and
/// get the writer back.
#[derive(Debug)]
pub struct LegacyWriter<W: Write> {
    inner: W,
    block_size: u32,
    pos: u64,
    wrote_short: bool,
    next_min: u64,
}

impl<W: Write> LegacyWriter<W> {
    /// Writes the stream header.
    pub fn new(mut inner: W, block_size: u32) -> Result<Self> {
        Limits::default().check_block_size(u64::from(block_size), 0)?;
        if block_size.to_le_bytes()[..3] == GZIP_LOOKALIKE {
            return Err(ArchiveError::InvalidWrite {
                block_offset: 0,
                reason: "block size 559903 would make the stream start like gzip; choose another",
            });
        }
        inner
            .write_all(&block_size.to_le_bytes())
            .map_err(|source| ArchiveError::Io { offset: 0, source })?;
        Ok(LegacyWriter {
            inner,
            block_size,
            pos: HEADER_LEN,
            wrote_short: false,
            next_min: 0,
        })
    }

    /// The stream's block size.
    pub fn block_size(&self) -> u32 {
        self.block_size
    }

    /// Bytes written so far.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// Appends one record.
    pub fn write_record(&mut self, block_offset: u64, data: &[u8]) -> Result<()> {
        let invalid = |reason| {
            Err(ArchiveError::InvalidWrite {
                block_offset,
                reason,
            })
        };
        if self.wrote_short {
            return invalid("a short block was already written, and it must be the last record");
        }
        if !block_offset.is_multiple_of(u64::from(self.block_size)) {
            return invalid("offset is not a multiple of the block size");
        }
        if data.is_empty() || data.len() > self.block_size as usize {
            return invalid("data must be 1 to block-size bytes long");
        }
        if block_offset < self.next_min {
            return invalid("records must come in increasing block order, each block once");
        }
        let mut hdr = [0u8; 8];
        hdr[..4].copy_from_slice(&(block_offset as u32).to_le_bytes());
        hdr[4..].copy_from_slice(&((block_offset >> 32) as u32).to_le_bytes());
        let pos = self.pos;
        let io = |source| ArchiveError::Io {
            offset: pos,
            source,
        };
        self.inner.write_all(&hdr).map_err(io)?;
        self.inner.write_all(data).map_err(io)?;
        self.pos += RECORD_HEADER_LEN + data.len() as u64;
        self.wrote_short = data.len() < self.block_size as usize;
        self.next_min = block_offset + u64::from(self.block_size);
        Ok(())
    }

    /// Flushes and returns the underlying writer.
    pub fn finish(mut self) -> Result<W> {
        let pos = self.pos;
        self.inner.flush().map_err(|source| ArchiveError::Io {
            offset: pos,
            source,
        })?;
        Ok(self.inner)
    }
}
