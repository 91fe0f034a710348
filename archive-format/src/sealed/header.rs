//! The 128-byte header of a sealed file (FORMAT.md §10.2).

use std::path::Path;

use crate::error::{ArchiveError, Result};

/// The first 8 bytes of every sealed file: `\x89BDE\r\n\x1a\n`.
pub const SEALED_MAGIC: [u8; 8] = *b"\x89BDE\r\n\x1a\n";
/// The length of a sealed file's header.
pub const SEALED_HEADER_LEN: usize = 128;
/// The length of the authentication tag after each segment.
pub const TAG_LEN: usize = 16;
/// The plaintext bytes of a full segment, as the writer makes them.
pub const SEGMENT_SIZE: u32 = 64 << 10;
/// The smallest and largest segment sizes a reader accepts.
const SEGMENT_RANGE: (u32, u32) = (4 << 10, 1 << 20);

const VERSION: u16 = 1;
const AEAD_AES_256_GCM: u8 = 1;

/// The largest Argon2id cost a reader accepts, checked before the KDF
/// allocates: 1 GiB of memory, 64 passes, 16 lanes.
pub(crate) const ARGON2_MAX: (u32, u32, u32) = (1 << 20, 64, 16);

/// What a sealed file holds: the plaintext is the file the chain would hold
/// unencrypted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SealedContent {
    /// A v2 diff (`NAME.N`).
    Diff,
    /// A v2 digest (`NAME.N.digest`).
    Digest,
    /// A generation's metadata (`NAME.N.meta.json`).
    Metadata,
}

impl SealedContent {
    fn id(self) -> u8 {
        match self {
            SealedContent::Diff => 1,
            SealedContent::Digest => 2,
            SealedContent::Metadata => 3,
        }
    }

    fn from_id(id: u8) -> Option<Self> {
        match id {
            1 => Some(SealedContent::Diff),
            2 => Some(SealedContent::Digest),
            3 => Some(SealedContent::Metadata),
            _ => None,
        }
    }

    /// Its name in messages.
    pub fn name(self) -> &'static str {
        match self {
            SealedContent::Diff => "a diff",
            SealedContent::Digest => "a digest",
            SealedContent::Metadata => "metadata",
        }
    }
}

/// How a chain's key was made: given as a key file, or stretched from a
/// passphrase with Argon2id at the cost recorded here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyDerivation {
    /// A random 256-bit key, from a key file.
    KeyFile,
    /// Argon2id (version 0x13) of a passphrase with this salt and cost.
    Argon2id {
        /// Memory in KiB.
        memory_kib: u32,
        /// Passes.
        iterations: u32,
        /// Lanes.
        lanes: u32,
        /// The chain's salt.
        salt: [u8; 16],
    },
}

impl KeyDerivation {
    /// `key file` or `passphrase`, for messages.
    pub fn name(&self) -> &'static str {
        match self {
            KeyDerivation::KeyFile => "a key file",
            KeyDerivation::Argon2id { .. } => "a passphrase",
        }
    }
}

/// A sealed file's header: which chain, generation and content the file
/// is, how the chain's key is derived, the file's own salt and the key
/// check. All of it is clear text, and all of it is the associated data of
/// every segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedHeader {
    /// What the plaintext is.
    pub content: SealedContent,
    /// Plaintext bytes per full segment.
    pub segment_size: u32,
    /// How the chain key is derived.
    pub derivation: KeyDerivation,
    /// The chain's random identity, the same in every file of the chain.
    pub chain_id: [u8; 16],
    /// The generation the file belongs to.
    pub generation: u64,
    /// The file's random salt, from which its encryption key is derived.
    pub file_salt: [u8; 32],
    /// A keyed value of the chain key: tells a wrong key from damage.
    pub key_check: [u8; 16],
}

fn bad(path: &Path, offset: u64, detail: impl Into<String>) -> ArchiveError {
    ArchiveError::Sealed {
        path: path.to_owned(),
        offset,
        detail: detail.into(),
    }
}

impl SealedHeader {
    /// The 128 bytes of the header.
    pub fn encode(&self) -> [u8; SEALED_HEADER_LEN] {
        let mut h = [0u8; SEALED_HEADER_LEN];
        h[0..8].copy_from_slice(&SEALED_MAGIC);
        h[8..10].copy_from_slice(&VERSION.to_le_bytes());
        h[10..12].copy_from_slice(&(SEALED_HEADER_LEN as u16).to_le_bytes());
        h[12] = self.content.id();
        h[13] = AEAD_AES_256_GCM;
        h[16..20].copy_from_slice(&self.segment_size.to_le_bytes());
        match self.derivation {
            KeyDerivation::KeyFile => h[14] = 1,
            KeyDerivation::Argon2id {
                memory_kib,
                iterations,
                lanes,
                salt,
            } => {
                h[14] = 2;
                h[20..24].copy_from_slice(&memory_kib.to_le_bytes());
                h[24..28].copy_from_slice(&iterations.to_le_bytes());
                h[28..32].copy_from_slice(&lanes.to_le_bytes());
                h[32..48].copy_from_slice(&salt);
            }
        }
        h[48..64].copy_from_slice(&self.chain_id);
        h[64..72].copy_from_slice(&self.generation.to_le_bytes());
        h[72..104].copy_from_slice(&self.file_salt);
        h[104..120].copy_from_slice(&self.key_check);
        let crc = crc32fast::hash(&h[..124]);
        h[124..128].copy_from_slice(&crc.to_le_bytes());
        h
    }

    /// Parses and checks a header; `path` names the file in errors.
    pub fn parse(bytes: &[u8], path: &Path) -> Result<Self> {
        if bytes.len() < 8 || bytes[..8] != SEALED_MAGIC {
            return Err(bad(path, 0, "not a sealed file (no sealed-file magic)"));
        }
        let Some(h) = bytes.get(..SEALED_HEADER_LEN) else {
            return Err(bad(
                path,
                0,
                format!(
                    "truncated: {} bytes, shorter than a sealed header ({SEALED_HEADER_LEN})",
                    bytes.len()
                ),
            ));
        };
        let u16_at = |at: usize| u16::from_le_bytes([h[at], h[at + 1]]);
        let u32_at = |at: usize| u32::from_le_bytes([h[at], h[at + 1], h[at + 2], h[at + 3]]);
        let stored = u32_at(124);
        let computed = crc32fast::hash(&h[..124]);
        if stored != computed {
            return Err(ArchiveError::Checksum {
                what: format!("{}: sealed header", path.display()),
                offset: 0,
                stored,
                computed,
            });
        }
        let version = u16_at(8);
        if version != VERSION {
            return Err(bad(
                path,
                8,
                format!("sealed-file version {version} is not supported (this reader knows 1)"),
            ));
        }
        if usize::from(u16_at(10)) != SEALED_HEADER_LEN {
            return Err(bad(path, 10, "sealed header length is not 128"));
        }
        let content = SealedContent::from_id(h[12])
            .ok_or_else(|| bad(path, 12, format!("unknown content id {}", h[12])))?;
        if h[13] != AEAD_AES_256_GCM {
            return Err(bad(path, 13, format!("unknown AEAD id {}", h[13])));
        }
        if h[15] != 0 || h[120..124] != [0; 4] {
            return Err(bad(path, 15, "reserved bytes are not zero"));
        }
        let segment_size = u32_at(16);
        if !segment_size.is_power_of_two()
            || segment_size < SEGMENT_RANGE.0
            || segment_size > SEGMENT_RANGE.1
        {
            return Err(bad(
                path,
                16,
                format!(
                    "segment size {segment_size} is not a power of two from {} to {}",
                    SEGMENT_RANGE.0, SEGMENT_RANGE.1
                ),
            ));
        }
        let mut salt = [0u8; 16];
        salt.copy_from_slice(&h[32..48]);
        let derivation = match h[14] {
            1 => {
                if h[20..48].iter().any(|&b| b != 0) {
                    return Err(bad(
                        path,
                        20,
                        "passphrase parameters in a file sealed with a key file",
                    ));
                }
                KeyDerivation::KeyFile
            }
            2 => {
                let (memory_kib, iterations, lanes) = (u32_at(20), u32_at(24), u32_at(28));
                let (max_m, max_t, max_p) = ARGON2_MAX;
                if !(1..=max_t).contains(&iterations)
                    || !(1..=max_p).contains(&lanes)
                    || memory_kib < 8 * lanes
                    || memory_kib > max_m
                {
                    return Err(bad(
                        path,
                        20,
                        format!(
                            "Argon2id cost out of range: {memory_kib} KiB, {iterations} passes, {lanes} lanes (at most {max_m} KiB, {max_t} passes, {max_p} lanes)"
                        ),
                    ));
                }
                KeyDerivation::Argon2id {
                    memory_kib,
                    iterations,
                    lanes,
                    salt,
                }
            }
            other => return Err(bad(path, 14, format!("unknown key source {other}"))),
        };
        let mut chain_id = [0u8; 16];
        chain_id.copy_from_slice(&h[48..64]);
        let mut generation = [0u8; 8];
        generation.copy_from_slice(&h[64..72]);
        let mut file_salt = [0u8; 32];
        file_salt.copy_from_slice(&h[72..104]);
        let mut key_check = [0u8; 16];
        key_check.copy_from_slice(&h[104..120]);
        Ok(SealedHeader {
            content,
            segment_size,
            derivation,
            chain_id,
            generation: u64::from_le_bytes(generation),
            file_salt,
            key_check,
        })
    }
}

/// True when `prefix` (a file's first bytes, at least 8) starts a sealed
/// file.
pub fn is_sealed(prefix: &[u8]) -> bool {
    prefix.len() >= SEALED_MAGIC.len() && prefix[..SEALED_MAGIC.len()] == SEALED_MAGIC
}
