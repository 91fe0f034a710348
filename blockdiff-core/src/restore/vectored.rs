//! One positional write of several buffers (`pwritev`), finished however
//! short the system's writes are.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

/// Buffers per `pwritev` call at most (Linux's `IOV_MAX`).
const IOV_MAX: usize = 1024;

/// Writes `bufs`, one after the other, at `offset` of `file`: as few
/// `pwritev` calls as the writes the system takes allow, with no copy of
/// the buffers into one.
pub(super) fn write_all_at(file: &File, offset: u64, bufs: &[&[u8]]) -> io::Result<()> {
    let fd = file.as_raw_fd();
    write_all_with(offset, bufs, |offset, iov| {
        let offset = libc::off_t::try_from(offset)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "offset too large"))?;
        // SAFETY: every entry of `iov` points into a live buffer of `bufs`
        // (or its remaining part) of the length it gives, and pwritev only
        // reads them.
        let n = unsafe { libc::pwritev(fd, iov.as_ptr(), iov.len() as libc::c_int, offset) };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    })
}

/// The loop of [`write_all_at`], over any positional vectored write
/// `write(offset, iov)` that returns how many bytes it took: interrupted
/// calls are repeated, a short write goes on from the first byte not
/// written, a write of nothing is an error.
fn write_all_with(
    mut offset: u64,
    bufs: &[&[u8]],
    mut write: impl FnMut(u64, &[libc::iovec]) -> io::Result<usize>,
) -> io::Result<()> {
    let mut iov: Vec<libc::iovec> = bufs
        .iter()
        .filter(|b| !b.is_empty())
        .map(|b| libc::iovec {
            iov_base: b.as_ptr().cast_mut().cast(),
            iov_len: b.len(),
        })
        .collect();
    let mut first = 0;
    while first < iov.len() {
        let end = iov.len().min(first + IOV_MAX);
        let mut n = match write(offset, &iov[first..end]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        offset += n as u64;
        while n > 0 {
            let v = &mut iov[first];
            if n >= v.iov_len {
                n -= v.iov_len;
                first += 1;
            } else {
                // SAFETY: `n` < the entry's length: the rest of the same
                // buffer.
                v.iov_base = unsafe { v.iov_base.cast::<u8>().add(n) }.cast();
                v.iov_len -= n;
                n = 0;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `write_all_with` against a file image in memory whose writes
    /// take at most `most` bytes (and fail once with EINTR first), and
    /// returns the image and the number of calls.
    fn short_writes(bufs: &[&[u8]], offset: u64, most: usize) -> (Vec<u8>, usize) {
        let mut image = vec![0xeeu8; offset as usize];
        let mut calls = 0;
        write_all_with(offset, bufs, |at, iov| {
            calls += 1;
            if calls == 1 {
                return Err(io::ErrorKind::Interrupted.into());
            }
            assert!(iov.len() <= IOV_MAX);
            let mut taken = 0;
            for v in iov {
                // SAFETY: the test's own buffers, as write_all_with made them.
                let b = unsafe { std::slice::from_raw_parts(v.iov_base.cast::<u8>(), v.iov_len) };
                let b = &b[..b.len().min(most - taken)];
                let at = at as usize + taken;
                if image.len() < at + b.len() {
                    image.resize(at + b.len(), 0xee);
                }
                image[at..at + b.len()].copy_from_slice(b);
                taken += b.len();
                if taken == most {
                    break;
                }
            }
            Ok(taken)
        })
        .unwrap();
        (image, calls)
    }

    #[test]
    fn short_and_interrupted_writes_are_finished_in_order() {
        let a: Vec<u8> = (0..100u8).collect();
        let b: Vec<u8> = (100..107u8).collect();
        let c: Vec<u8> = (107..250u8).collect();
        let bufs: [&[u8]; 4] = [&a, &[], &b, &c];
        let want: Vec<u8> = [vec![0xee; 5], a.clone(), b.clone(), c.clone()].concat();
        for most in [1, 3, 7, 99, 100, 101, 250, 1000] {
            let (image, calls) = short_writes(&bufs, 5, most);
            assert_eq!(image, want, "writes of at most {most} bytes");
            assert_eq!(
                calls,
                1 + 250usize.div_ceil(most),
                "writes of at most {most}"
            );
        }
    }

    #[test]
    fn more_buffers_than_one_call_takes_go_in_several_calls() {
        let blocks: Vec<Vec<u8>> = (0..2500u32).map(|i| i.to_le_bytes().to_vec()).collect();
        let bufs: Vec<&[u8]> = blocks.iter().map(Vec::as_slice).collect();
        let (image, calls) = short_writes(&bufs, 0, usize::MAX);
        assert_eq!(image, blocks.concat());
        // One EINTR, then IOV_MAX buffers per call.
        assert_eq!(calls, 1 + 2500usize.div_ceil(IOV_MAX));
    }

    #[test]
    fn a_write_of_nothing_fails() {
        let e = write_all_with(0, &[b"abc"], |_, _| Ok(0)).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WriteZero);
    }

    #[test]
    fn a_real_file_gets_the_buffers_at_the_offset() {
        let dir = tempfile::tempdir().unwrap();
        let file = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(dir.path().join("f"))
            .unwrap();
        write_all_at(&file, 3, &[b"ab", b"", b"cde"]).unwrap();
        assert_eq!(std::fs::read(dir.path().join("f")).unwrap(), b"\0\0\0abcde");
    }
}
