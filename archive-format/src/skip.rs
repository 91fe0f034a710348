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

/// The first step by which [`read_growing`] grows a buffer.
const GROW_STEP: usize = 64 << 10;

/// Appends up to `n` bytes of `r` to `buf` and returns how many came: `n`,
/// or fewer if the stream ended first. Retries on `Interrupted`.
///
/// The buffer grows only as bytes arrive (by at most what it already holds,
/// or 64 KiB), and never beyond `buf.len() + n`: a length read from a file
/// that the file does not back cannot make it allocate, and one it does
/// back is allocated exactly. A buffer that is reused keeps its capacity.
pub(crate) fn read_growing<R: Read + ?Sized>(
    r: &mut R,
    buf: &mut Vec<u8>,
    n: usize,
) -> io::Result<usize> {
    let start = buf.len();
    let target = start.saturating_add(n);
    while buf.len() < target {
        let len = buf.len();
        if buf.capacity() == len {
            buf.reserve_exact((len - start).max(GROW_STEP).min(target - len));
        }
        let room = (buf.capacity() - len).min(target - len);
        // Reads into the spare capacity: `take` stops at `room`, so the
        // vector never has to grow (read_to_end retries `Interrupted`).
        let got = Read::take(&mut *r, room as u64).read_to_end(buf)?;
        if got < room {
            break;
        }
    }
    Ok(buf.len() - start)
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
    fn read_growing_allocates_only_what_arrives() {
        // A length of 1 GiB over 10 bytes: 64 KiB at most.
        let mut buf = Vec::new();
        let mut s: &[u8] = &[5u8; 10];
        assert_eq!(read_growing(&mut s, &mut buf, 1 << 30).unwrap(), 10);
        assert_eq!(buf, [5u8; 10]);
        assert!(buf.capacity() <= GROW_STEP, "{}", buf.capacity());

        // Exactly `n`, appended, with the capacity of what was asked.
        let data: Vec<u8> = (0..300_000u32).map(|i| i as u8).collect();
        let mut buf = b"ab".to_vec();
        let mut s = &data[..];
        assert_eq!(read_growing(&mut s, &mut buf, 200_000).unwrap(), 200_000);
        assert_eq!(&buf[..2], b"ab");
        assert_eq!(&buf[2..], &data[..200_000]);
        assert!(buf.capacity() <= 200_002 + 2, "{}", buf.capacity());
        assert_eq!(s.len(), 100_000, "read beyond n");
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
