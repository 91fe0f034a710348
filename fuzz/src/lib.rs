//! What the fuzz targets share: [`Trickle`], a reader as slow and
//! interrupted as a pipe can be.

use std::io::{self, Read};

use archive_format::SkipRead;

/// A reader that returns at most one byte per call and fails every other
/// call with `Interrupted`, which a parser must retry.
pub struct Trickle<'a> {
    rest: &'a [u8],
    interrupt: bool,
}

impl<'a> Trickle<'a> {
    /// A trickle of `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Trickle {
            rest: data,
            interrupt: false,
        }
    }
}

impl Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.interrupt = !self.interrupt;
        if self.interrupt {
            return Err(io::ErrorKind::Interrupted.into());
        }
        match (self.rest.split_first(), buf.first_mut()) {
            (Some((&b, rest)), Some(slot)) => {
                *slot = b;
                self.rest = rest;
                Ok(1)
            }
            _ => Ok(0),
        }
    }
}

impl SkipRead for Trickle<'_> {}
