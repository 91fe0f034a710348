//! The agent protocol's typed packets: the [`AgentRequest`] the backup
//! host sends on the agent's stdin, and the [`AgentReport`] the agent
//! sends back when its dump is complete. Both are JSON in one packet;
//! both sides check the protocol version and every value before acting
//! on it, since either end may be a host the other should not trust.

use std::io::{self, Read};
use std::path::PathBuf;

use blockdiff_core::{BlockHashKey, BlockSize, DumpReport, HashAlgorithm};
use serde::{Deserialize, Serialize};

use super::protocol::{GREETING, MAX_PAYLOAD, PacketKind, PacketReader, write_packet};
use crate::{ChainTracking, ConsistencyOptions, FormatChoice, PoliteOptions, RunFacts, SourceSpec};

/// The version of [`AgentRequest`] and [`AgentReport`]; an agent refuses
/// a request of another version (the backup host then uploads its own
/// agent, which is named by its hash).
pub const PROTOCOL_VERSION: u32 = 2;

/// Why a request or report packet was refused.
#[derive(Debug, thiserror::Error)]
#[error("the agent's {what} is not what this version expects: {detail}")]
pub struct ProtocolError {
    /// `request` or `report`.
    pub what: &'static str,
    /// What is wrong with it.
    pub detail: String,
}

impl ProtocolError {
    fn request(detail: impl Into<String>) -> Self {
        ProtocolError {
            what: "request",
            detail: detail.into(),
        }
    }
}

/// What the agent reads: a path or an LV on its host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AgentSource {
    /// A file or block device, read as it is.
    Path(PathBuf),
    /// A logical volume (`VG/LV`), read through a snapshot.
    Lvm(String),
}

impl AgentSource {
    /// The source of a remote spec; `None` for standard input, which a
    /// remote run cannot read.
    pub fn from_spec(spec: &SourceSpec) -> Option<Self> {
        match spec {
            SourceSpec::Path(p) => Some(AgentSource::Path(p.clone())),
            SourceSpec::Lvm(lv) => Some(AgentSource::Lvm(lv.to_string())),
            SourceSpec::Stdin => None,
        }
    }

    /// The spec the agent reads, the LV name checked.
    pub fn to_spec(&self) -> Result<SourceSpec, ProtocolError> {
        Ok(match self {
            AgentSource::Path(p) if p.as_os_str().is_empty() => {
                return Err(ProtocolError::request("an empty source path"));
            }
            AgentSource::Path(p) => SourceSpec::Path(p.clone()),
            AgentSource::Lvm(lv) => SourceSpec::Lvm(
                lv.parse()
                    .map_err(|e: lvm_snap::Error| ProtocolError::request(e.to_string()))?,
            ),
        })
    }
}

/// A dump request: everything the agent needs, in one packet. The
/// previous digest (when `previous` is true) follows as
/// [`PacketKind::Digest`] packets, then [`PacketKind::End`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentRequest {
    /// [`PROTOCOL_VERSION`].
    pub version: u32,
    /// What to read.
    pub source: AgentSource,
    /// The generation number written into the diff.
    pub generation: u64,
    /// The block size, in bytes.
    pub block_size: u32,
    /// Hash threads (0: one per core).
    pub threads: usize,
    /// The format and hash, exactly as the chain has them.
    pub format: FormatChoice,
    /// Whether the previous generation's digest follows.
    pub previous: bool,
    /// Snapshot and quiescers.
    pub consistency: ConsistencyOptions,
    /// Rate limit, priorities, page cache.
    pub polite: PoliteOptions,
    /// The key of the block hashes of an encrypted chain (64 hex digits),
    /// when the format's hash is keyed BLAKE3: derived from the chain key,
    /// it lets the agent hash blocks as the chain does and nothing else;
    /// the chain key stays on the backup host, which encrypts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash_key: Option<String>,
    /// The chain's changed-block tracking, for an LV source when it is on:
    /// the agent compares its thin snapshot with the chain's base there
    /// and keeps the new one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracking: Option<ChainTracking>,
}

impl AgentRequest {
    /// The key of keyed block hashes, checked: present exactly when the
    /// hash is keyed.
    pub fn block_hash_key(&self) -> Result<Option<BlockHashKey>, ProtocolError> {
        let keyed = self.format.hash.is_some_and(HashAlgorithm::is_keyed);
        match (&self.hash_key, keyed) {
            (None, false) => Ok(None),
            (Some(text), true) => blockdiff_core::parse_key_hex(text)
                .map(|k| Some(BlockHashKey(k)))
                .ok_or_else(|| ProtocolError::request("the block hash key is not 64 hex digits")),
            (None, true) => Err(ProtocolError::request(
                "keyed block hashes without their key",
            )),
            (Some(_), false) => Err(ProtocolError::request(
                "a block hash key for a hash that is not keyed",
            )),
        }
    }

    /// The request as its packet's payload.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a request serialises")
    }

    /// Parses and checks a request packet's payload: the version, the
    /// block size, the source and every option's range.
    pub fn decode(payload: &[u8]) -> Result<Self, ProtocolError> {
        let request: AgentRequest = decode_versioned("request", payload)?;
        request.block_size()?;
        request.block_hash_key()?;
        request.source.to_spec()?;
        request
            .format
            .requested()
            .map_err(|e| ProtocolError::request(e.to_string()))?;
        request
            .consistency
            .check()
            .map_err(|e| ProtocolError::request(e.to_string()))?;
        request
            .polite
            .check()
            .map_err(|e| ProtocolError::request(e.to_string()))?;
        Ok(request)
    }

    /// The block size, checked.
    pub fn block_size(&self) -> Result<BlockSize, ProtocolError> {
        BlockSize::new(self.block_size).map_err(|e| {
            ProtocolError::request(format!(
                "block size {}: {}",
                self.block_size,
                blockdiff_core::Error::from(e)
            ))
        })
    }

    /// Reads the request that starts the agent's input: the greeting, then
    /// one [`PacketKind::Request`] packet. The reader is left before the
    /// digest packets that may follow.
    pub fn read_from<R: Read>(reader: &mut PacketReader<R>) -> io::Result<Self> {
        match reader.next_packet()? {
            Some((PacketKind::Request, payload)) => {
                AgentRequest::decode(&payload).map_err(io::Error::other)
            }
            Some((kind, _)) => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("the input starts with a {kind:?} packet, not the request"),
            )),
            None => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the input ended before the request",
            )),
        }
    }
}

/// The agent's input as a [`Read`]: the greeting, the request, the
/// previous digest (read from `digest` as it is sent) and the end, as
/// packets. The backup host hands it to the ssh command's stdin.
pub struct AgentInput<R> {
    pending: Vec<u8>,
    at: usize,
    digest: Option<R>,
    ended: bool,
}

impl<R: Read> AgentInput<R> {
    /// The input of `request`, with `digest` when the request says one
    /// follows.
    pub fn new(request: &AgentRequest, digest: Option<R>) -> Self {
        let mut pending = Vec::new();
        write_packet(&mut pending, PacketKind::Hello, GREETING).expect("writes to memory");
        write_packet(&mut pending, PacketKind::Request, &request.encode())
            .expect("writes to memory");
        AgentInput {
            pending,
            at: 0,
            digest,
            ended: false,
        }
    }

    /// Refills `pending` with the next packet; false at the end.
    fn refill(&mut self) -> io::Result<bool> {
        self.pending.clear();
        self.at = 0;
        if self.ended {
            return Ok(false);
        }
        if let Some(digest) = &mut self.digest {
            if digest_packet(digest, &mut self.pending)? {
                return Ok(true);
            }
            self.digest = None;
        }
        write_packet(&mut self.pending, PacketKind::End, b"")?;
        self.ended = true;
        Ok(true)
    }
}

/// Reads the next piece of `digest` into `pending` as a
/// [`PacketKind::Digest`] packet; false (and `pending` empty) at the
/// digest's end.
pub(crate) fn digest_packet(digest: &mut impl Read, pending: &mut Vec<u8>) -> io::Result<bool> {
    const PIECE: usize = 256 << 10;
    const _: () = assert!(PIECE <= MAX_PAYLOAD);
    pending.clear();
    pending.resize(5 + PIECE, 0);
    let n = loop {
        match digest.read(&mut pending[5..]) {
            Ok(n) => break n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    };
    if n == 0 {
        pending.clear();
        return Ok(false);
    }
    pending.truncate(5 + n);
    pending[0] = PacketKind::Digest.byte();
    pending[1..5].copy_from_slice(&(n as u32).to_le_bytes());
    Ok(true)
}

impl<R: Read> Read for AgentInput<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.at == self.pending.len() && !self.refill()? {
            return Ok(0);
        }
        let n = buf.len().min(self.pending.len() - self.at);
        buf[..n].copy_from_slice(&self.pending[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// Reads the previous digest that follows a request into `out`, up to the
/// end packet: a stream cut short is an error (the digest would be
/// incomplete).
pub fn receive_digest<R: Read>(
    reader: &mut PacketReader<R>,
    out: &mut impl io::Write,
) -> io::Result<u64> {
    let mut received = 0u64;
    loop {
        match reader.next_packet()? {
            Some((PacketKind::Digest, bytes)) => {
                out.write_all(&bytes)?;
                received += bytes.len() as u64;
            }
            Some((PacketKind::End, _)) => return Ok(received),
            Some((kind, _)) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("a {kind:?} packet in the previous digest"),
                ));
            }
            None => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "the previous digest ends after {received} bytes, before its end packet"
                    ),
                ));
            }
        }
    }
}

/// What the agent sends back once its dump is complete: the dump's
/// figures and the facts of its run (snapshot, fill, freeze window).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentReport {
    /// [`PROTOCOL_VERSION`].
    pub version: u32,
    /// The dump's figures.
    pub dump: DumpReport,
    /// The facts of the run on the agent's host.
    pub facts: RunFacts,
}

impl AgentReport {
    /// The report as its packet's payload.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a report serialises")
    }

    /// Parses a report packet's payload.
    pub fn decode(payload: &[u8]) -> Result<Self, ProtocolError> {
        decode_versioned("report", payload)
    }
}

/// Parses the JSON payload of a `what` packet whose `version` must be
/// [`PROTOCOL_VERSION`]: the version is read first, so that a packet of
/// another version is named as such, not as malformed.
pub(crate) fn decode_versioned<T: serde::de::DeserializeOwned>(
    what: &'static str,
    payload: &[u8],
) -> Result<T, ProtocolError> {
    #[derive(Deserialize)]
    struct Version {
        version: u32,
    }
    let bad = |detail: String| ProtocolError { what, detail };
    let v: Version = serde_json::from_slice(payload).map_err(|e| bad(e.to_string()))?;
    if v.version != PROTOCOL_VERSION {
        return Err(bad(format!(
            "version {}, not {PROTOCOL_VERSION}",
            v.version
        )));
    }
    serde_json::from_slice(payload).map_err(|e| bad(e.to_string()))
}

/// 32 bytes as 64 hex digits.
pub(crate) fn key_hex(key: &BlockHashKey) -> String {
    key.0.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use blockdiff_core::DiffFormat;

    pub(crate) fn sample_request() -> AgentRequest {
        AgentRequest {
            version: PROTOCOL_VERSION,
            source: AgentSource::Lvm("vg0/db".into()),
            generation: 4,
            block_size: 16384,
            threads: 0,
            format: FormatChoice::exactly(DiffFormat::default(), HashAlgorithm::Blake3),
            previous: true,
            consistency: ConsistencyOptions {
                quiesce: vec!["mysql".into(), "cron".into()],
                ..ConsistencyOptions::default()
            },
            polite: PoliteOptions {
                max_rate: Some(60 << 20),
                nice: Some(-5),
                ionice: Some("idle".parse().unwrap()),
                drop_cache: true,
            },
            hash_key: None,
            tracking: None,
        }
    }

    #[test]
    fn a_request_survives_the_trip() {
        let r = sample_request();
        assert_eq!(AgentRequest::decode(&r.encode()).unwrap(), r);
        let plain = AgentRequest {
            source: AgentSource::Path("/srv/db.img".into()),
            previous: false,
            consistency: ConsistencyOptions::default(),
            polite: PoliteOptions::default(),
            ..r
        };
        assert_eq!(AgentRequest::decode(&plain.encode()).unwrap(), plain);
    }

    #[test]
    fn requests_out_of_range_are_refused() {
        let refuse = |r: AgentRequest, why: &str| {
            let e = AgentRequest::decode(&r.encode()).unwrap_err().to_string();
            assert!(e.contains(why), "{why}: {e}");
        };
        let r = sample_request();
        refuse(
            AgentRequest {
                version: 1,
                ..r.clone()
            },
            "version 1",
        );
        refuse(
            AgentRequest {
                block_size: 0,
                ..r.clone()
            },
            "block size 0",
        );
        refuse(
            AgentRequest {
                source: AgentSource::Lvm("no-slash".into()),
                ..r.clone()
            },
            "request",
        );
        let mut bad = r.clone();
        bad.consistency.freeze_limit = -1.0;
        refuse(bad, "--freeze-limit");
        let mut bad = r.clone();
        bad.polite.nice = Some(99);
        refuse(bad, "--nice");
        let mut bad = r.clone();
        bad.format.zstd_level = Some(99);
        refuse(bad, "--zstd-level");
        // Keyed hashes come with their key, and only they.
        let mut keyed = r.clone();
        keyed.format.hash = Some(HashAlgorithm::Blake3Keyed);
        refuse(keyed.clone(), "without their key");
        keyed.hash_key = Some("ab".repeat(31));
        refuse(keyed.clone(), "64 hex digits");
        keyed.hash_key = Some("zz".repeat(32));
        refuse(keyed.clone(), "64 hex digits");
        keyed.hash_key = Some(key_hex(&BlockHashKey([0xab; 32])));
        let ok = AgentRequest::decode(&keyed.encode()).unwrap();
        assert_eq!(ok.block_hash_key().unwrap(), Some(BlockHashKey([0xab; 32])));
        let mut bad = r;
        bad.hash_key = keyed.hash_key;
        refuse(bad, "not keyed");
        for junk in [&b""[..], b"{}", b"[1]", b"{\"version\":2}", b"\xff"] {
            assert!(AgentRequest::decode(junk).is_err());
        }
    }

    /// Reads one byte per call, as a slow pipe may.
    struct OneByte<R>(R);

    impl<R: Read> Read for OneByte<R> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = buf.len().min(1);
            self.0.read(&mut buf[..n])
        }
    }

    #[test]
    fn the_agent_input_carries_the_request_and_the_digest() {
        let r = sample_request();
        // A digest of several packets, and one of none.
        let digest: Vec<u8> = (0..600_000u32).map(|i| (i % 251) as u8).collect();
        for digest in [digest, Vec::new()] {
            let mut wire = Vec::new();
            AgentInput::new(&r, Some(&digest[..]))
                .read_to_end(&mut wire)
                .unwrap();
            for slow in [false, true] {
                let input: Box<dyn Read> = if slow {
                    Box::new(OneByte(&wire[..]))
                } else {
                    Box::new(&wire[..])
                };
                let mut reader = PacketReader::new(input);
                assert_eq!(AgentRequest::read_from(&mut reader).unwrap(), r);
                let mut got = Vec::new();
                let n = receive_digest(&mut reader, &mut got).unwrap();
                assert_eq!(n as usize, digest.len());
                assert_eq!(got, digest);
                assert!(reader.next_packet().unwrap().is_none());
            }
            // Cut anywhere before the end packet, the digest is refused.
            for cut in [wire.len() - 1, wire.len() - 5, wire.len() / 2] {
                let mut reader = PacketReader::new(&wire[..cut]);
                if AgentRequest::read_from(&mut reader).is_ok() {
                    assert!(receive_digest(&mut reader, &mut Vec::new()).is_err());
                }
            }
        }
        // Without a digest: the request, then the end.
        let mut wire = Vec::new();
        AgentInput::<&[u8]>::new(&r, None)
            .read_to_end(&mut wire)
            .unwrap();
        let mut reader = PacketReader::new(&wire[..]);
        AgentRequest::read_from(&mut reader).unwrap();
        assert_eq!(receive_digest(&mut reader, &mut Vec::new()).unwrap(), 0);
    }

    #[test]
    fn a_report_survives_the_trip_and_names_its_hash() {
        let report = AgentReport {
            version: PROTOCOL_VERSION,
            dump: DumpReport {
                block_size: 16384,
                hash: HashAlgorithm::Blake3,
                source_bytes: 10,
                read_bytes: 10,
                untracked_changes: 0,
                first_untracked: None,
                blocks: 1,
                changed_blocks: 1,
                changed_bytes: 10,
                zero_blocks: 0,
                fingerprint: None,
            },
            facts: RunFacts::started_at("now"),
        };
        let bytes = report.encode();
        assert!(
            String::from_utf8_lossy(&bytes).contains("\"hash\":\"blake3\""),
            "{}",
            String::from_utf8_lossy(&bytes)
        );
        assert_eq!(AgentReport::decode(&bytes).unwrap(), report);
        assert!(AgentReport::decode(b"{}").is_err());
        let old = String::from_utf8(bytes)
            .unwrap()
            .replace(&format!("\"version\":{PROTOCOL_VERSION}"), "\"version\":1");
        assert!(AgentReport::decode(old.as_bytes()).is_err());
    }
}
