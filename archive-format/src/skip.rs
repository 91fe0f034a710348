use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};

/// A reader that can move forward without handing the skipped bytes to the
/// caller.
///
/// Restore skips the data of every block that a newer generation already
/// provided. On a plain file that is a seek (only the record headers are
/// read); on a decompressor or a pipe the bytes are read and dropped, which
/// is what the default method does.
pub trait SkipRead: Read {
    /// Moves `n` bytes forward, or to the end of the stream if it is nearer.
    /// Returns how many bytes were skipped.
    fn skip_bytes(&mut self, n: u64) -> io::Result<u64> {
        io::copy(&mut self.take(n), &mut io::sink())
    }
}

impl SkipRead for File {
    fn skip_bytes(&mut self, n: u64) -> io::Result<u64> {
        let meta = self.metadata()?;
        if !meta.is_file() {
            // Pipes and devices: fall back to reading.
            return io::copy(&mut self.take(n), &mut io::sink());
        }
        let here = self.stream_position()?;
        let step = n.min(meta.len().saturating_sub(here));
        self.seek(SeekFrom::Current(step as i64))?;
        Ok(step)
    }
}

impl SkipRead for &[u8] {
    fn skip_bytes(&mut self, n: u64) -> io::Result<u64> {
        let step = n.min(self.len() as u64) as usize;
        *self = &self[step..];
        Ok(step as u64)
    }
}

impl<T: AsRef<[u8]>> SkipRead for io::Cursor<T> {
    fn skip_bytes(&mut self, n: u64) -> io::Result<u64> {
        let len = self.get_ref().as_ref().len() as u64;
        let step = n.min(len.saturating_sub(self.position()));
        self.set_position(self.position() + step);
        Ok(step)
    }
}

impl SkipRead for io::Stdin {}
impl<A: Read, B: Read> SkipRead for io::Chain<A, B> {}
impl SkipRead for io::StdinLock<'_> {}
impl<R: Read> SkipRead for flate2::read::MultiGzDecoder<R> {}
impl<R: SkipRead + ?Sized> SkipRead for Box<R> {
    fn skip_bytes(&mut self, n: u64) -> io::Result<u64> {
        (**self).skip_bytes(n)
    }
}
impl<R: SkipRead + ?Sized> SkipRead for &mut R {
    fn skip_bytes(&mut self, n: u64) -> io::Result<u64> {
        (**self).skip_bytes(n)
    }
}

/// Reads until `buf` is full or the stream ends; returns the bytes read.
/// Retries on `Interrupted`, so a reader that returns one byte at a time
/// works.
pub fn read_full<R: Read + ?Sized>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn file_skip_seeks_and_stops_at_end() {
        let mut f = tempfile_in_target();
        f.write_all(&[7u8; 100]).unwrap();
        f.seek(SeekFrom::Start(10)).unwrap();
        assert_eq!(f.skip_bytes(50).unwrap(), 50);
        assert_eq!(f.skip_bytes(50).unwrap(), 40);
        assert_eq!(f.skip_bytes(5).unwrap(), 0);
    }

    fn tempfile_in_target() -> File {
        let path = std::env::temp_dir().join(format!("archive-format-skip-{}", std::process::id()));
        let f = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        std::fs::remove_file(&path).unwrap();
        f
    }

    #[test]
    fn slice_and_cursor_skip() {
        let mut s: &[u8] = &[1, 2, 3];
        assert_eq!(s.skip_bytes(2).unwrap(), 2);
        assert_eq!(s, &[3]);
        let mut c = io::Cursor::new(vec![0u8; 4]);
        assert_eq!(c.skip_bytes(9).unwrap(), 4);
    }
}
