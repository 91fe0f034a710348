//! Writing a sealed file: header, then segments sealed as they fill.

use std::io::{self, Write};

use ring::aead::{Aad, LessSafeKey};

use super::header::{SEALED_HEADER_LEN, SealedContent, SealedHeader};
use super::keys::ChainKeys;
use super::nonce;
use crate::error::Result;

/// Seals what is written to it into a sealed file (FORMAT.md §10): the
/// header at once, each segment when it is full and the next byte arrives,
/// and the last segment, marked final, at [`finish`](Self::finish). A file
/// whose writer was dropped without `finish` has no final segment and is
/// refused by readers as cut short.
pub struct SealedWriter<W: Write> {
    inner: W,
    key: LessSafeKey,
    header: [u8; SEALED_HEADER_LEN],
    segment_size: usize,
    buf: Vec<u8>,
    segment: u64,
    written: u64,
}

impl<W: Write> SealedWriter<W> {
    /// Starts a sealed file of `keys`' chain holding `content` of
    /// `generation`, with a fresh random salt, and writes its header.
    pub fn new(
        inner: W,
        keys: &ChainKeys,
        content: SealedContent,
        generation: u64,
    ) -> Result<Self> {
        let header = keys.new_header(content, generation)?;
        Self::with_header(inner, keys, &header)
            .map_err(|source| crate::ArchiveError::Io { offset: 0, source })
    }

    /// Starts a sealed file with the given header (see
    /// [`ChainKeys::header_with_salt`]) and writes it.
    pub fn with_header(mut inner: W, keys: &ChainKeys, header: &SealedHeader) -> io::Result<Self> {
        let bytes = header.encode();
        inner.write_all(&bytes)?;
        let segment_size = header.segment_size as usize;
        Ok(SealedWriter {
            inner,
            key: keys.file_key(header),
            header: bytes,
            segment_size,
            buf: Vec::with_capacity(segment_size + super::header::TAG_LEN),
            segment: 0,
            written: SEALED_HEADER_LEN as u64,
        })
    }

    /// Bytes written to the inner writer so far.
    pub fn bytes_written(&self) -> u64 {
        self.written
    }

    /// The inner writer.
    pub fn get_ref(&self) -> &W {
        &self.inner
    }

    fn seal(&mut self, last: bool) -> io::Result<()> {
        let tag = self
            .key
            .seal_in_place_separate_tag(
                nonce(self.segment, last),
                Aad::from(&self.header[..]),
                &mut self.buf,
            )
            .map_err(|_| io::Error::other("sealing a segment failed"))?;
        self.buf.extend_from_slice(tag.as_ref());
        self.inner.write_all(&self.buf)?;
        self.written += self.buf.len() as u64;
        self.buf.clear();
        self.segment += 1;
        Ok(())
    }

    /// Seals the last segment and flushes; returns the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.seal(true)?;
        self.inner.flush()?;
        Ok(self.inner)
    }
}

impl<W: Write> Write for SealedWriter<W> {
    fn write(&mut self, mut data: &[u8]) -> io::Result<usize> {
        let n = data.len();
        while !data.is_empty() {
            if self.buf.len() == self.segment_size {
                // More data follows, so this full segment is not the last.
                self.seal(false)?;
            }
            let take = (self.segment_size - self.buf.len()).min(data.len());
            self.buf.extend_from_slice(&data[..take]);
            data = &data[take..];
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}
