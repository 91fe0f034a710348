use std::io::Write;

use super::{
    DiffHeader, DiffSummary, END_MAGIC, EXTENT_LEN, Extent, ExtentKind, FOOTER_LEN,
    FRAME_ENTRY_LEN, Fingerprint, FrameEntry, FrameMeta, HEADER_LEN, INDEX_HEADER_LEN, INDEX_MAGIC,
    UNKNOWN_SIZE, data_len,
};
use crate::{ArchiveError, Result};

/// Writes a v2 diff file: the header, then frames encoded by
/// [`FrameBuilder`](super::FrameBuilder) (possibly on other threads), then
/// the index and footer in [`finish`](Self::finish).
///
/// The writer keeps the index in memory: 16 bytes per extent and per frame.
#[derive(Debug)]
pub struct DiffWriter<W: Write> {
    inner: W,
    header: DiffHeader,
    pos: u64,
    frames: Vec<FrameEntry>,
    extents: Vec<Extent>,
    summary: DiffSummary,
}

impl<W: Write> DiffWriter<W> {
    /// Writes the header.
    pub fn new(mut inner: W, header: DiffHeader) -> Result<Self> {
        crate::Limits::default().check_block_size(u64::from(header.block_size), 12)?;
        inner
            .write_all(&header.encode())
            .map_err(|source| ArchiveError::Io { offset: 0, source })?;
        Ok(DiffWriter {
            inner,
            header,
            pos: HEADER_LEN as u64,
            frames: Vec::new(),
            extents: Vec::new(),
            summary: DiffSummary::default(),
        })
    }

    /// The header written.
    pub fn header(&self) -> &DiffHeader {
        &self.header
    }

    /// Bytes written so far.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// The running totals (source size and fingerprint are set by
    /// [`finish`](Self::finish)).
    pub fn summary(&self) -> &DiffSummary {
        &self.summary
    }

    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        let offset = self.pos;
        self.inner
            .write_all(bytes)
            .map_err(|source| ArchiveError::Io { offset, source })?;
        self.pos += bytes.len() as u64;
        Ok(())
    }

    /// Appends one encoded frame. Frames must come in block order.
    pub fn append_frame(&mut self, bytes: &[u8], meta: &FrameMeta) -> Result<()> {
        let first = meta.extents.first().ok_or(ArchiveError::InvalidWrite {
            block_offset: 0,
            reason: "a frame needs at least one extent",
        })?;
        if let Some(prev) = self.extents.last()
            && first.first_block < prev.end_block()
        {
            return Err(ArchiveError::InvalidWrite {
                block_offset: first.first_block * u64::from(self.header.block_size),
                reason: "frames must be appended in increasing block order",
            });
        }
        if bytes.len() != meta.len as usize {
            return Err(ArchiveError::InvalidWrite {
                block_offset: first.first_block * u64::from(self.header.block_size),
                reason: "frame bytes and frame description disagree",
            });
        }
        self.frames.push(FrameEntry {
            offset: self.pos,
            len: meta.len,
            extents: meta.extents.len() as u32,
        });
        self.extents.extend_from_slice(&meta.extents);
        self.summary.data_blocks += meta.data_blocks;
        self.summary.zero_blocks += meta.zero_blocks;
        self.summary.raw_bytes += u64::from(meta.raw_len);
        self.summary.stored_bytes += u64::from(meta.stored_len);
        self.write(bytes)
    }

    /// Writes the index and footer and returns the inner writer, flushed.
    /// `source_size` is the number of bytes the dump read; `fingerprint`
    /// that of the digest written with this diff.
    pub fn finish(mut self, source_size: u64, fingerprint: Fingerprint) -> Result<W> {
        let bs = self.header.block_size;
        let invalid = |reason| ArchiveError::InvalidWrite {
            block_offset: source_size,
            reason,
        };
        if self.header.source_size != UNKNOWN_SIZE && self.header.source_size != source_size {
            return Err(invalid(
                "the source size differs from the one in the header",
            ));
        }
        let blocks = source_size.div_ceil(u64::from(bs));
        if self.extents.last().is_some_and(|e| e.end_block() > blocks) {
            return Err(invalid("an extent lies beyond the end of the source"));
        }
        let raw: u64 = self
            .extents
            .iter()
            .filter(|e| e.kind == ExtentKind::Data)
            .map(|e| data_len(e.first_block, u64::from(e.blocks), bs, source_size))
            .sum();
        if raw != self.summary.raw_bytes {
            return Err(invalid("a short block is not the source's last block"));
        }
        self.summary.source_size = source_size;
        self.summary.fingerprint = fingerprint;

        let index_offset = self.pos;
        let mut index = Vec::with_capacity(
            INDEX_HEADER_LEN
                + self.frames.len() * FRAME_ENTRY_LEN
                + self.extents.len() * EXTENT_LEN,
        );
        index.extend_from_slice(&INDEX_MAGIC);
        index.extend_from_slice(&[0; 4]);
        let s = &self.summary;
        for v in [
            self.frames.len() as u64,
            self.extents.len() as u64,
            s.source_size,
            s.data_blocks,
            s.zero_blocks,
            s.raw_bytes,
            s.stored_bytes,
        ] {
            index.extend_from_slice(&v.to_le_bytes());
        }
        index.extend_from_slice(&s.fingerprint);
        debug_assert_eq!(index.len(), INDEX_HEADER_LEN);
        for f in &self.frames {
            index.extend_from_slice(&f.offset.to_le_bytes());
            index.extend_from_slice(&f.len.to_le_bytes());
            index.extend_from_slice(&f.extents.to_le_bytes());
        }
        for e in &self.extents {
            index.extend_from_slice(&e.encode());
        }
        let index_crc = crc32fast::hash(&index);
        self.write(&index)?;

        let mut footer = [0u8; FOOTER_LEN];
        footer[0..8].copy_from_slice(&index_offset.to_le_bytes());
        footer[8..16].copy_from_slice(&(index.len() as u64).to_le_bytes());
        footer[16..20].copy_from_slice(&index_crc.to_le_bytes());
        let footer_crc = crc32fast::hash(&footer[..20]);
        footer[20..24].copy_from_slice(&footer_crc.to_le_bytes());
        footer[24..32].copy_from_slice(&END_MAGIC);
        self.write(&footer)?;
        let pos = self.pos;
        self.inner.flush().map_err(|source| ArchiveError::Io {
            offset: pos,
            source,
        })?;
        Ok(self.inner)
    }
}
