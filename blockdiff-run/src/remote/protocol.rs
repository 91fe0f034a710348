//! The agent's streams: packets on the two directions of one ssh channel.
//!
//! Every packet is `[kind: u8][length: u32 little-endian][payload]`. A
//! stream starts with a [`PacketKind::Hello`] packet holding [`GREETING`]
//! and ends with [`PacketKind::End`]; a stream that stops before `End` is
//! cut short: a dump that is not committed, a request that is not run.
//!
//! To the agent (its stdin): the request, the previous digest, the end.
//! From the agent (its stdout): log lines, progress, the diff and the new
//! digest interleaved, then the report and the end, or an error.
//!
//! A restore goes both ways: to the agent, the restore request, generation
//! K's digest and an end; from the agent, the ranges of its target that
//! differ ([`PacketKind::Needs`]); to the agent, those ranges' blocks
//! ([`PacketKind::Blocks`]) and an end; from the agent, its report and the
//! end, or an error.

use std::io::{self, Read, Write};
use std::sync::{Arc, Mutex};

/// The payload of the first packet: names the protocol and its version.
pub const GREETING: &[u8] = b"blockdiff-agent protocol 2";

/// The largest payload a packet may carry. A reader refuses larger ones
/// before allocating.
pub const MAX_PAYLOAD: usize = 1 << 20;

/// What a packet carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketKind {
    /// [`GREETING`], first.
    Hello,
    /// Bytes of the diff, in order.
    Diff,
    /// Bytes of the new digest, in order.
    Digest,
    /// The dump request ([`AgentRequest`](super::AgentRequest), JSON),
    /// first on the agent's input.
    Request,
    /// A log line: `LEVEL\tMESSAGE` (`info`, `warning`, `error`).
    Log,
    /// How far the dump is: the source's size (`u64::MAX` when unknown)
    /// and the bytes read so far, both u64 little-endian.
    Progress,
    /// The dump's figures and the run's facts
    /// ([`AgentReport`](super::AgentReport), JSON).
    Report,
    /// The dump failed: the error line.
    Error,
    /// The stream is complete.
    End,
    /// A restore request ([`RestoreRequest`](super::RestoreRequest),
    /// JSON), first on the agent's input instead of a dump request; the
    /// digest of the generation follows.
    Restore,
    /// From the agent restoring: the byte ranges of the target that
    /// differ, as pairs of u64 little-endian (start, end); an empty one
    /// ends the list.
    Needs,
    /// To the agent restoring: the offset (u64 little-endian) and the
    /// bytes of the generation there, whole blocks.
    Blocks,
}

impl PacketKind {
    /// The kind's byte on the wire.
    pub(crate) fn byte(self) -> u8 {
        match self {
            PacketKind::Hello => b'H',
            PacketKind::Diff => b'D',
            PacketKind::Digest => b'G',
            PacketKind::Request => b'Q',
            PacketKind::Log => b'L',
            PacketKind::Progress => b'P',
            PacketKind::Report => b'R',
            PacketKind::Error => b'E',
            PacketKind::End => b'Z',
            PacketKind::Restore => b'T',
            PacketKind::Needs => b'N',
            PacketKind::Blocks => b'B',
        }
    }

    fn from_byte(b: u8) -> Option<Self> {
        Some(match b {
            b'H' => PacketKind::Hello,
            b'D' => PacketKind::Diff,
            b'G' => PacketKind::Digest,
            b'Q' => PacketKind::Request,
            b'L' => PacketKind::Log,
            b'P' => PacketKind::Progress,
            b'R' => PacketKind::Report,
            b'E' => PacketKind::Error,
            b'Z' => PacketKind::End,
            b'T' => PacketKind::Restore,
            b'N' => PacketKind::Needs,
            b'B' => PacketKind::Blocks,
            _ => return None,
        })
    }
}

/// Writes packets to one stream from any thread (the dump, the fill
/// monitor and the quiescers all send). Cheap to clone.
pub struct PacketWriter<W> {
    inner: Arc<Mutex<W>>,
}

impl<W> Clone for PacketWriter<W> {
    fn clone(&self) -> Self {
        PacketWriter {
            inner: self.inner.clone(),
        }
    }
}

impl<W: Write> PacketWriter<W> {
    /// Packets to `inner`, starting with the greeting.
    pub fn new(inner: W) -> io::Result<Self> {
        let writer = PacketWriter {
            inner: Arc::new(Mutex::new(inner)),
        };
        writer.send(PacketKind::Hello, GREETING)?;
        Ok(writer)
    }

    /// Sends `payload` as one or more packets of `kind`.
    pub fn send(&self, kind: PacketKind, payload: &[u8]) -> io::Result<()> {
        let mut inner = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut pieces = payload.chunks(MAX_PAYLOAD).peekable();
        if pieces.peek().is_none() {
            return write_packet(&mut *inner, kind, &[]);
        }
        for piece in pieces {
            write_packet(&mut *inner, kind, piece)?;
        }
        Ok(())
    }

    /// Flushes the stream.
    pub fn flush(&self) -> io::Result<()> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .flush()
    }

    /// A [`Write`] whose bytes go out as packets of `kind`, buffered into
    /// packets of up to 256 KiB.
    pub fn channel(&self, kind: PacketKind) -> ChannelWriter<W> {
        ChannelWriter {
            packets: self.clone(),
            kind,
            buf: Vec::with_capacity(CHANNEL_BUFFER),
        }
    }
}

const CHANNEL_BUFFER: usize = 256 << 10;

/// Writes one packet (a payload of at most [`MAX_PAYLOAD`] bytes).
pub(crate) fn write_packet(w: &mut impl Write, kind: PacketKind, payload: &[u8]) -> io::Result<()> {
    let mut header = [0u8; 5];
    header[0] = kind.byte();
    header[1..].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    w.write_all(&header)?;
    w.write_all(payload)
}

/// A [`PacketKind::Progress`] payload.
pub fn progress_payload(total: Option<u64>, done: u64) -> [u8; 16] {
    let mut p = [0u8; 16];
    p[..8].copy_from_slice(&total.unwrap_or(u64::MAX).to_le_bytes());
    p[8..].copy_from_slice(&done.to_le_bytes());
    p
}

/// Reads a [`PacketKind::Progress`] payload: (total, done).
pub fn parse_progress(payload: &[u8]) -> Option<(Option<u64>, u64)> {
    let total = u64::from_le_bytes(payload.get(..8)?.try_into().ok()?);
    let done = u64::from_le_bytes(payload.get(8..16)?.try_into().ok()?);
    Some(((total != u64::MAX).then_some(total), done))
}

/// One channel of a [`PacketWriter`].
pub struct ChannelWriter<W: Write> {
    packets: PacketWriter<W>,
    kind: PacketKind,
    buf: Vec<u8>,
}

impl<W: Write> Write for ChannelWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.buf.len() + data.len() > CHANNEL_BUFFER {
            self.flush_buffer()?;
        }
        if data.len() >= CHANNEL_BUFFER {
            self.packets.send(self.kind, data)?;
        } else {
            self.buf.extend_from_slice(data);
        }
        Ok(data.len())
    }

    /// Sends what is buffered (the stream itself is flushed by
    /// [`PacketWriter::flush`]).
    fn flush(&mut self) -> io::Result<()> {
        self.flush_buffer()
    }
}

impl<W: Write> ChannelWriter<W> {
    fn flush_buffer(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            self.packets.send(self.kind, &self.buf)?;
            self.buf.clear();
        }
        Ok(())
    }
}

/// Reads packets, refusing oversized or unknown ones and a stream that
/// does not start with the greeting.
pub struct PacketReader<R> {
    inner: R,
    offset: u64,
    greeted: bool,
}

impl<R: Read> PacketReader<R> {
    /// Packets from `inner`.
    pub fn new(inner: R) -> Self {
        PacketReader {
            inner,
            offset: 0,
            greeted: false,
        }
    }

    /// Bytes read so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The next packet; `Ok(None)` at the end of the stream (which, before
    /// an [`PacketKind::End`] packet, means the agent or the connection
    /// died).
    pub fn next_packet(&mut self) -> io::Result<Option<(PacketKind, Vec<u8>)>> {
        let mut header = [0u8; 5];
        let mut got = 0;
        while got < header.len() {
            match self.inner.read(&mut header[got..]) {
                Ok(0) if got == 0 => return Ok(None),
                Ok(0) => return Err(self.bad("the stream ends inside a packet header")),
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        let start = self.offset;
        let Some(kind) = PacketKind::from_byte(header[0]) else {
            return Err(self.bad(&format!(
                "byte {start}: {:?} is not a packet kind{}",
                header[0] as char,
                if self.greeted {
                    ""
                } else {
                    " (the remote side printed something else: is a shell startup file writing to stdout?)"
                }
            )));
        };
        let len = u32::from_le_bytes(header[1..].try_into().expect("4 bytes")) as usize;
        if len > MAX_PAYLOAD {
            return Err(self.bad(&format!(
                "byte {start}: a packet of {len} bytes is over the limit of {MAX_PAYLOAD}"
            )));
        }
        let mut payload = vec![0u8; len];
        self.inner.read_exact(&mut payload).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                self.bad(&format!("byte {start}: the stream ends inside a packet"))
            } else {
                e
            }
        })?;
        self.offset += 5 + len as u64;
        if !self.greeted {
            if kind != PacketKind::Hello || payload != GREETING {
                return Err(self.bad(
                    "the stream does not start with the agent's greeting (an agent of another version, or a remote shell startup file writing to stdout?)",
                ));
            }
            self.greeted = true;
            return self.next_packet();
        }
        Ok(Some((kind, payload)))
    }

    fn bad(&self, detail: &str) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, detail.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Returns one byte per read, as a slow pipe may.
    struct OneByte<'a>(&'a [u8]);

    impl Read for OneByte<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            match (self.0.split_first(), buf.is_empty()) {
                (Some((b, rest)), false) => {
                    buf[0] = *b;
                    self.0 = rest;
                    Ok(1)
                }
                _ => Ok(0),
            }
        }
    }

    fn sample(diff_bytes: usize) -> Vec<u8> {
        let packets = PacketWriter::new(Vec::new()).unwrap();
        let mut diff = packets.channel(PacketKind::Diff);
        diff.write_all(&vec![7u8; diff_bytes]).unwrap();
        diff.write_all(b"tail").unwrap();
        diff.flush().unwrap();
        packets.send(PacketKind::Log, b"info\thello").unwrap();
        packets.send(PacketKind::End, b"").unwrap();
        drop(diff);
        Arc::try_unwrap(packets.inner)
            .ok()
            .unwrap()
            .into_inner()
            .unwrap()
    }

    #[test]
    fn packets_round_trip_through_a_one_byte_reader() {
        let bytes = sample(300_000);
        let mut reader = PacketReader::new(OneByte(&bytes));
        let mut diff = Vec::new();
        let mut kinds = Vec::new();
        while let Some((kind, payload)) = reader.next_packet().unwrap() {
            if kind == PacketKind::Diff {
                diff.extend_from_slice(&payload);
            }
            kinds.push(kind);
        }
        assert_eq!(diff.len(), 300_004);
        assert!(diff.ends_with(b"tail"));
        assert_eq!(kinds.last(), Some(&PacketKind::End));
        assert!(kinds.contains(&PacketKind::Log));
        assert_eq!(reader.offset(), bytes.len() as u64);
    }

    #[test]
    fn a_cut_stream_is_an_error_or_ends_before_end() {
        let bytes = sample(3000);
        for cut in 0..bytes.len() {
            let mut reader = PacketReader::new(&bytes[..cut]);
            let mut ended = false;
            loop {
                match reader.next_packet() {
                    Ok(Some((PacketKind::End, _))) => ended = true,
                    Ok(Some(_)) => {}
                    Ok(None) | Err(_) => break,
                }
            }
            assert!(!ended, "a stream cut at {cut} looked complete");
        }
    }

    #[test]
    fn garbage_before_the_greeting_and_oversized_packets_are_refused() {
        let mut motd = b"Welcome to host!\n".to_vec();
        motd.extend_from_slice(&sample(10));
        let e = PacketReader::new(&motd[..]).next_packet().unwrap_err();
        assert!(e.to_string().contains("shell startup file"), "{e}");

        let mut big = sample(10)[..5 + GREETING.len()].to_vec();
        big.push(b'D');
        big.extend_from_slice(&u32::MAX.to_le_bytes());
        let e = PacketReader::new(&big[..]).next_packet().unwrap_err();
        assert!(e.to_string().contains("over the limit"), "{e}");
    }
}
