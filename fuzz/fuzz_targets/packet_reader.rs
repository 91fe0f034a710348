//! Fuzzes `blockdiff_run::remote::protocol::PacketReader`, the reader of
//! the remote agent's streams (`[kind: u8][length: u32 LE][payload]`
//! packets after a greeting). The bytes come over ssh from another host,
//! so they are untrusted: any input must give packets, the end or an
//! error, never a panic and never a payload over `MAX_PAYLOAD` (the reader
//! must refuse a larger length before allocating).
//!
//! The packets returned, re-encoded after the greeting, must be exactly the
//! bytes the reader consumed (`offset()`), and a reader that gets one byte
//! per call, interrupted in between, must return the same packets and end
//! the same way.
#![no_main]

use std::io::Read;

use blockdiff_fuzz::Trickle;
use blockdiff_run::remote::protocol::{GREETING, MAX_PAYLOAD, PacketKind, PacketReader};
use libfuzzer_sys::fuzz_target;

/// Inputs up to this length are also read one byte per call.
const TRICKLE_MAX: usize = 4096;

/// The kind's byte on the wire (protocol.rs), written out again here so
/// that the fuzzer checks the reader against an independent list. The
/// `match` is exhaustive: a new kind fails to compile until it is listed.
fn kind_byte(kind: PacketKind) -> u8 {
    match kind {
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

/// Every packet read, then how the stream ended (`None`: clean end, else
/// the error's message), and the reader's final offset.
fn read_all<R: Read>(inner: R) -> (Vec<(PacketKind, Vec<u8>)>, Option<String>, u64) {
    let mut reader = PacketReader::new(inner);
    let mut packets = Vec::new();
    let end = loop {
        match reader.next_packet() {
            Ok(Some(p)) => {
                assert!(
                    p.1.len() <= MAX_PAYLOAD,
                    "a payload of {} bytes, over the limit of {MAX_PAYLOAD}",
                    p.1.len()
                );
                packets.push(p);
            }
            Ok(None) => break None,
            Err(e) => break Some(e.to_string()),
        }
    };
    (packets, end, reader.offset())
}

fuzz_target!(|data: &[u8]| {
    let (packets, end, offset) = read_all(data);

    // What was returned is what was consumed: the greeting, then the
    // packets, byte for byte.
    if !packets.is_empty() || (end.is_none() && offset > 0) {
        let mut wire = vec![b'H'];
        wire.extend_from_slice(&(GREETING.len() as u32).to_le_bytes());
        wire.extend_from_slice(GREETING);
        for (kind, payload) in &packets {
            wire.push(kind_byte(*kind));
            wire.extend_from_slice(&(payload.len() as u32).to_le_bytes());
            wire.extend_from_slice(payload);
        }
        assert_eq!(offset, wire.len() as u64, "offset() and the packets read");
        assert!(
            data.starts_with(&wire),
            "the packets returned are not the input's bytes"
        );
    }
    // A clean end is exactly the end of the input.
    if end.is_none() {
        assert_eq!(
            offset,
            data.len() as u64,
            "clean end before the input's end"
        );
    }

    if data.len() <= TRICKLE_MAX {
        let (t_packets, t_end, t_offset) = read_all(Trickle::new(data));
        assert_eq!(packets, t_packets, "one-byte reader's packets differ");
        assert_eq!(end, t_end, "one-byte reader ended differently");
        assert_eq!(offset, t_offset, "one-byte reader's offset differs");
    }
});
