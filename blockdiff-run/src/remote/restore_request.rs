//! The typed packets of a restore over ssh: the [`RestoreRequest`] the
//! backup host sends, the ranges the agent needs, the blocks that answer
//! them, and the [`RestoreAgentReport`]. Each side checks what it reads:
//! the other end may be a host it should not trust.

use std::path::PathBuf;

use blockdiff_core::{BlockHashKey, HashAlgorithm};
use serde::{Deserialize, Serialize};

use super::protocol::MAX_PAYLOAD;
use super::request::{ProtocolError, decode_versioned};
use crate::PoliteOptions;

/// Most ranges one [`PacketKind::Needs`](super::protocol::PacketKind::Needs)
/// packet carries.
pub const RANGES_PER_PACKET: usize = MAX_PAYLOAD / 16;

/// Most bytes of blocks in one
/// [`PacketKind::Blocks`](super::protocol::PacketKind::Blocks) packet (its
/// offset beside them).
pub const BLOCKS_PER_PACKET: usize = MAX_PAYLOAD - 8;

/// How the agent treats its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RestoreMode {
    /// Compare the target with the digest and ask for what differs; a
    /// missing target is created and asked for in full.
    Delta,
    /// Ask for every block without reading the target (a missing regular
    /// file is created).
    Full,
}

/// A restore request: everything the agent needs, in one packet. Generation
/// K's digest follows as [`PacketKind::Digest`](super::protocol::PacketKind::Digest)
/// packets, then an end.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RestoreRequest {
    /// [`PROTOCOL_VERSION`](super::PROTOCOL_VERSION).
    pub version: u32,
    /// The file or block device to write on the agent's host (for an LV,
    /// its device, `/dev/VG/LV`).
    pub target: PathBuf,
    /// The target is this logical volume (`VG/LV`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lvm: Option<String>,
    /// Before writing the LV, take a snapshot of it and keep it (tagged
    /// `blockdiff-before`), so that the restore can be undone.
    #[serde(default)]
    pub keep_before: bool,
    /// The generation restored (for messages).
    pub generation: u64,
    /// The generation's size in bytes.
    pub size: u64,
    /// Delta or full.
    pub mode: RestoreMode,
    /// Hash threads (0: one per core).
    pub threads: usize,
    /// Read the whole target again at the end and compare it with the
    /// digest.
    pub verify: bool,
    /// Write to a block device that is in use.
    pub force: bool,
    /// Make a regular file of another size the generation's size.
    pub resize: bool,
    /// Rate limit, priorities, page cache, for reading the target.
    pub polite: PoliteOptions,
    /// The key of an encrypted chain's keyed block hashes (64 hex digits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash_key: Option<String>,
}

impl RestoreRequest {
    /// The request as its packet's payload.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a request serialises")
    }

    /// Parses and checks a restore request packet's payload.
    pub fn decode(payload: &[u8]) -> Result<Self, ProtocolError> {
        let bad = |detail: String| ProtocolError {
            what: "restore request",
            detail,
        };
        let request: RestoreRequest = decode_versioned("restore request", payload)?;
        if request.target.as_os_str().is_empty() {
            return Err(bad("an empty target path".into()));
        }
        request.block_hash_key().map_err(bad)?;
        match (&request.lvm, request.keep_before) {
            (None, true) => return Err(bad("keep_before without an LV".into())),
            (Some(lv), _) => {
                let lv: lvm_snap::LvPath = lv
                    .parse()
                    .map_err(|e: lvm_snap::Error| bad(e.to_string()))?;
                if request.target != lv.device() {
                    return Err(bad(format!(
                        "the target {} is not the device of {lv}",
                        request.target.display()
                    )));
                }
            }
            (None, false) => {}
        }
        request.polite.check().map_err(|e| bad(e.to_string()))?;
        Ok(request)
    }

    /// The key of keyed block hashes, parsed.
    pub fn block_hash_key(&self) -> Result<Option<BlockHashKey>, String> {
        self.hash_key
            .as_deref()
            .map(|text| {
                blockdiff_core::parse_key_hex(text)
                    .map(BlockHashKey)
                    .ok_or_else(|| "hash_key: not 64 hex digits".to_owned())
            })
            .transpose()
    }

    /// Whether `algorithm` needs the key this request carries.
    pub fn fits(&self, algorithm: HashAlgorithm) -> bool {
        algorithm.is_keyed() == self.hash_key.is_some()
    }
}

/// What the agent sends back once its target is restored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreAgentReport {
    /// [`PROTOCOL_VERSION`](super::PROTOCOL_VERSION).
    pub version: u32,
    /// Bytes of the target read and hashed to find what differs.
    pub bytes_compared: u64,
    /// Separate ranges that differed.
    pub ranges: u64,
    /// Bytes written to the target.
    pub bytes_written: u64,
    /// Whether the target was created (it did not exist).
    pub created: bool,
    /// Whether the whole target was read again and matched the digest.
    pub verified: bool,
}

impl RestoreAgentReport {
    /// The report as its packet's payload.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a report serialises")
    }

    /// Parses a restore report packet's payload.
    pub fn decode(payload: &[u8]) -> Result<Self, ProtocolError> {
        decode_versioned("restore report", payload)
    }
}

/// Ranges as the payloads of
/// [`PacketKind::Needs`](super::protocol::PacketKind::Needs) packets (at
/// most [`RANGES_PER_PACKET`] each), without the empty one that ends the
/// list.
pub fn needs_payloads(ranges: &[(u64, u64)]) -> Vec<Vec<u8>> {
    ranges
        .chunks(RANGES_PER_PACKET)
        .map(|chunk| {
            chunk
                .iter()
                .flat_map(|&(start, end)| {
                    let mut pair = [0u8; 16];
                    pair[..8].copy_from_slice(&start.to_le_bytes());
                    pair[8..].copy_from_slice(&end.to_le_bytes());
                    pair
                })
                .collect()
        })
        .collect()
}

/// Adds the ranges of one needs payload to `ranges`, checking that they
/// are non-empty, in order, apart and inside `size`.
pub fn parse_needs(
    payload: &[u8],
    size: u64,
    ranges: &mut Vec<(u64, u64)>,
) -> Result<(), ProtocolError> {
    let bad = |detail: String| ProtocolError {
        what: "list of ranges",
        detail,
    };
    if !payload.len().is_multiple_of(16) {
        return Err(bad(format!(
            "{} bytes is not a number of ranges",
            payload.len()
        )));
    }
    for pair in payload.chunks_exact(16) {
        let start = u64::from_le_bytes(pair[..8].try_into().expect("8 bytes"));
        let end = u64::from_le_bytes(pair[8..].try_into().expect("8 bytes"));
        let after = ranges.last().map_or(0, |r| r.1);
        if start >= end || end > size || (!ranges.is_empty() && start <= after) {
            return Err(bad(format!(
                "the range {start}-{end} is empty, out of order or outside the {size} bytes of the generation"
            )));
        }
        ranges.push((start, end));
    }
    Ok(())
}

/// A [`PacketKind::Blocks`](super::protocol::PacketKind::Blocks) payload:
/// `offset`, then `data`.
pub fn blocks_payload(offset: u64, data: &[u8]) -> Vec<u8> {
    let mut payload = Vec::with_capacity(8 + data.len());
    payload.extend_from_slice(&offset.to_le_bytes());
    payload.extend_from_slice(data);
    payload
}

/// Splits a blocks payload into its offset and bytes.
pub fn parse_blocks(payload: &[u8]) -> Result<(u64, &[u8]), ProtocolError> {
    match payload.split_first_chunk::<8>() {
        Some((offset, data)) => Ok((u64::from_le_bytes(*offset), data)),
        None => Err(ProtocolError {
            what: "blocks",
            detail: format!("a packet of {} bytes has no offset", payload.len()),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote::PROTOCOL_VERSION;

    fn sample() -> RestoreRequest {
        RestoreRequest {
            version: PROTOCOL_VERSION,
            target: "/dev/vg0/db".into(),
            lvm: Some("vg0/db".into()),
            keep_before: true,
            generation: 3,
            size: 1 << 30,
            mode: RestoreMode::Delta,
            threads: 0,
            verify: true,
            force: false,
            resize: false,
            polite: PoliteOptions::default(),
            hash_key: None,
        }
    }

    #[test]
    fn a_request_round_trips_and_a_bad_one_is_refused() {
        let r = sample();
        assert_eq!(RestoreRequest::decode(&r.encode()).unwrap(), r);
        let mut other = sample();
        other.version = 99;
        assert!(RestoreRequest::decode(&other.encode()).is_err());
        let mut empty = sample();
        empty.target = PathBuf::new();
        assert!(RestoreRequest::decode(&empty.encode()).is_err());
        let mut key = sample();
        key.hash_key = Some("not hex".into());
        assert!(RestoreRequest::decode(&key.encode()).is_err());
        let mut other_device = sample();
        other_device.target = "/dev/vg0/www".into();
        assert!(RestoreRequest::decode(&other_device.encode()).is_err());
        let mut no_lv = sample();
        no_lv.lvm = None;
        assert!(RestoreRequest::decode(&no_lv.encode()).is_err());
        no_lv.keep_before = false;
        assert!(RestoreRequest::decode(&no_lv.encode()).is_ok());
        assert!(RestoreRequest::decode(b"{").is_err());
    }

    #[test]
    fn ranges_round_trip_and_bad_ones_are_refused() {
        let ranges: Vec<(u64, u64)> = (0..RANGES_PER_PACKET as u64 + 5)
            .map(|i| (i * 100, i * 100 + 50))
            .collect();
        let payloads = needs_payloads(&ranges);
        assert_eq!(payloads.len(), 2);
        let mut got = Vec::new();
        for p in &payloads {
            parse_needs(p, u64::MAX, &mut got).unwrap();
        }
        assert_eq!(got, ranges);
        for bad in [
            vec![(5, 5)],
            vec![(10, 20), (15, 30)],
            vec![(10, 20), (20, 30)],
            vec![(0, 101)],
        ] {
            let mut got = Vec::new();
            let p = &needs_payloads(&bad)[0];
            assert!(parse_needs(p, 100, &mut got).is_err(), "{bad:?}");
        }
        assert!(parse_needs(&[0; 15], 100, &mut Vec::new()).is_err());
    }

    #[test]
    fn blocks_round_trip() {
        let p = blocks_payload(4096, b"data");
        assert_eq!(parse_blocks(&p).unwrap(), (4096, &b"data"[..]));
        assert!(parse_blocks(&[1, 2, 3]).is_err());
    }
}
