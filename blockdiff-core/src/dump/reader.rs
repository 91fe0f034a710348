//! The reading stage of a dump: the reader thread places the source's
//! chunks in order, each with the previous digest's hashes for its blocks,
//! and reads a stream source into them; a source read by position is read
//! on the hashing threads instead, through [`PositionalSource`].

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::Path;

use archive_format::{BlockSize, DigestReader, read_full};
use crossbeam_channel::{Receiver, Sender};

use super::DumpSource;
use super::workers::Chunk;
use crate::rate::RateLimiter;
use crate::{Error, Result};

/// The reading stage, run on a thread of its own: what it reads the
/// source's chunks with.
pub(super) struct ChunkReader<'a, R, P> {
    /// The source (its handle for positional reads taken out: the hashing
    /// threads read with that).
    pub(super) source: DumpSource<R>,
    /// The previous digest, whose hashes go with the chunks' blocks.
    pub(super) previous: Option<&'a mut DigestReader<P>>,
    /// The source's size when the hashing threads read the chunks by
    /// position: the reader then only places them. `None`: the reader
    /// reads the source into the chunks itself, as a stream.
    pub(super) by_position: Option<u64>,
    /// Bytes in a chunk, whole blocks: the size of a chunk's buffer.
    pub(super) read_size: usize,
    /// The block size.
    pub(super) block_size: BlockSize,
    /// The read rate limit, paid here for a source read here.
    pub(super) limiter: &'a RateLimiter,
}

impl<R: Read, P: Read> ChunkReader<'_, R, P> {
    /// Runs the reader: takes a free chunk from `free_rx`, gives it its
    /// sequence number, offset and length (reading its bytes, for a
    /// stream) and the previous digest's hashes for its blocks, and sends
    /// it to the hashing threads on `work_tx`, until the source ends. Then
    /// reads the previous digest to its end, which checks it. Returns early,
    /// with `Ok`, when the writer has stopped (a channel is closed), or with
    /// the first error reading the source or the previous digest.
    pub(super) fn run<O>(
        self,
        free_rx: Receiver<Chunk<O>>,
        work_tx: Sender<Chunk<O>>,
    ) -> Result<()> {
        let ChunkReader {
            source,
            mut previous,
            by_position,
            read_size,
            block_size,
            limiter,
        } = self;
        let bs = block_size.bytes();
        let DumpSource {
            mut reader, name, ..
        } = source;
        let mut offset = 0u64;
        for seq in 0.. {
            let Ok(mut chunk) = free_rx.recv() else {
                return Ok(());
            };
            // With positional reads the worker fills the chunk; here only
            // its place is decided.
            let len = match by_position {
                Some(total) => (total - offset).min(read_size as u64) as usize,
                None => {
                    let len = read_full(&mut reader, &mut chunk.buf).map_err(|source| {
                        Error::SourceRead {
                            path: name.clone(),
                            offset,
                            source,
                        }
                    })?;
                    // Paid after the read, for the bytes it returned:
                    // the next read waits.
                    limiter.acquire(len as u64);
                    len
                }
            };
            chunk.unread = by_position.is_some();
            // A chunk read by position counts what its hashing thread reads.
            chunk.read = if chunk.unread { 0 } else { len as u64 };
            if len == 0 {
                break;
            }
            chunk.previous.clear();
            if let Some(prev) = previous.as_deref_mut() {
                for _ in 0..len.div_ceil(bs) {
                    match prev.next_entry()? {
                        Some(h) => chunk.previous.push(h),
                        None => break,
                    }
                }
            }
            (chunk.seq, chunk.offset, chunk.len) = (seq, offset, len);
            if work_tx.send(chunk).is_err() {
                return Ok(());
            }
            offset += len as u64;
            if len < read_size {
                break;
            }
        }
        // Read what is left of the previous digest: its length, and a
        // v2 digest's fingerprint, are checked at its end.
        if let Some(prev) = previous {
            prev.finish()?;
        }
        Ok(())
    }
}

/// A source read by position on the hashing threads.
#[derive(Clone, Copy)]
pub(super) struct PositionalSource<'a> {
    pub(super) file: &'a File,
    /// Its size when the dump began.
    pub(super) total: u64,
    pub(super) name: &'a Path,
    pub(super) limiter: &'a RateLimiter,
    /// Read through a memory map
    /// ([`DumpOptions::map_source`](super::DumpOptions::map_source)).
    pub(super) map: bool,
}

impl PositionalSource<'_> {
    /// The error for a chunk at `offset` of which a mapped page could not
    /// be read: the file shrank (named with where it ends now), or the
    /// device failed.
    pub(super) fn unreadable(&self, offset: u64) -> Error {
        match self.file.metadata() {
            Ok(meta) if meta.is_file() && meta.len() < self.total => Error::SourceSizeChanged {
                path: self.name.to_owned(),
                expected: self.total,
                read: meta.len(),
            },
            _ => Error::SourceRead {
                path: self.name.to_owned(),
                offset,
                source: std::io::Error::from_raw_os_error(libc::EIO),
            },
        }
    }

    /// Fills `buf` from `offset`; the file ending before that is
    /// [`Error::SourceSizeChanged`] naming where it ended.
    pub(super) fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        let mut filled = 0;
        while filled < buf.len() {
            let at = offset + filled as u64;
            match self.file.read_at(&mut buf[filled..], at) {
                // The file shrank since its size was taken: say so, with
                // where it ended and the size it had.
                Ok(0) => {
                    return Err(Error::SourceSizeChanged {
                        path: self.name.to_owned(),
                        expected: self.total,
                        read: at,
                    });
                }
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(source) => {
                    return Err(Error::SourceRead {
                        path: self.name.to_owned(),
                        offset: at,
                        source,
                    });
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::fs::File;
    use std::io;

    use archive_format::{DigestReader, DigestWriter, FrameCompression};

    use crate::dump::{DumpOptions, DumpSource, V2Sink, dump};
    use crate::progress::NoProgress;

    #[test]
    fn a_source_that_shrinks_during_the_dump_names_where_it_ended() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk.img");
        std::fs::write(&path, vec![7u8; 3 << 20]).unwrap();
        let source = DumpSource::open(&path).unwrap();
        // Cut after the size was taken, as a live file shrinking would.
        File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(1536 << 10)
            .unwrap();
        let mut sink = V2Sink::new(Vec::new(), "out", FrameCompression::None, 0);
        let mut digest = DigestWriter::new(io::sink(), "digest");
        let options = DumpOptions {
            threads: 1,
            ..DumpOptions::default()
        };
        let err = dump(
            source,
            None::<&mut DigestReader<&[u8]>>,
            &mut sink,
            &mut digest,
            &options,
            &mut NoProgress,
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            err,
            format!(
                "{}: size changed during the dump: expected 3145728 bytes, read 1572864 (back up a snapshot, not a live file)",
                path.display()
            )
        );
    }
}
