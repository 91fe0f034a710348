//! Keys: the user's secret (a key file's key or a passphrase), the chain
//! key made from it, and the keys derived from that (FORMAT.md §10.3).

use std::fmt;
use std::path::Path;

use ring::aead::{AES_256_GCM, LessSafeKey, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use zeroize::{Zeroize, Zeroizing};

use super::header::{ARGON2_MAX, KeyDerivation, SEGMENT_SIZE, SealedContent, SealedHeader};
use crate::error::{ArchiveError, Result};

const CONTEXT_KEY_CHECK: &str = "blockdiff sealed v1 key check";
const CONTEXT_FILE_KEY: &str = "blockdiff sealed v1 file key";
const CONTEXT_HASH_KEY: &str = "blockdiff sealed v1 block hash key";

/// The Argon2id cost of a new passphrase chain: 64 MiB, 3 passes, 1 lane
/// (RFC 9106's second recommendation, on one lane).
pub const ARGON2_DEFAULT: (u32, u32, u32) = (64 << 10, 3, 1);

/// A 256-bit chain key, wiped from memory when dropped.
#[derive(Clone)]
pub struct ChainKey(Zeroizing<[u8; 32]>);

impl ChainKey {
    /// A new random key, from the operating system's generator.
    pub fn generate() -> Result<Self> {
        let mut k = Zeroizing::new([0u8; 32]);
        random(&mut k[..])?;
        Ok(ChainKey(k))
    }

    /// The key with these bytes (a key file's, or a test key).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        let mut bytes = bytes;
        let key = ChainKey(Zeroizing::new(bytes));
        bytes.zeroize();
        key
    }

    /// The key's bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for ChainKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ChainKey(..)")
    }
}

/// What the user gives to open or start an encrypted chain.
#[derive(Clone)]
pub enum KeySecret {
    /// A key, from a key file.
    Key(ChainKey),
    /// A passphrase, stretched with Argon2id.
    Passphrase(Zeroizing<Vec<u8>>),
}

impl fmt::Debug for KeySecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeySecret::Key(_) => f.write_str("KeySecret::Key(..)"),
            KeySecret::Passphrase(_) => f.write_str("KeySecret::Passphrase(..)"),
        }
    }
}

/// The keys of one encrypted chain: its identity, how its key is derived,
/// the chain key, and the keys derived from it. Made once per chain
/// ([`new_chain`](Self::new_chain) for a new one, [`for_header`](Self::for_header)
/// from any of its files), then used to seal and open every file of it.
#[derive(Clone)]
pub struct ChainKeys {
    chain_id: [u8; 16],
    derivation: KeyDerivation,
    key: ChainKey,
    key_check: [u8; 16],
    hash_key: Zeroizing<[u8; 32]>,
}

impl fmt::Debug for ChainKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChainKeys")
            .field("chain_id", &hex(&self.chain_id))
            .field("derivation", &self.derivation.name())
            .finish_non_exhaustive()
    }
}

impl ChainKeys {
    /// The keys of a new chain: a random chain identity and, for a
    /// passphrase, a random salt and the default cost ([`ARGON2_DEFAULT`]).
    pub fn new_chain(secret: &KeySecret) -> Result<Self> {
        Self::new_chain_with_cost(secret, ARGON2_DEFAULT)
    }

    /// As [`new_chain`](Self::new_chain), with the Argon2id cost
    /// `(memory KiB, passes, lanes)` of a passphrase: a cheaper one for
    /// tests, a dearer one for a backup host with memory to spare. Refused
    /// above the limits every reader enforces.
    pub fn new_chain_with_cost(secret: &KeySecret, cost: (u32, u32, u32)) -> Result<Self> {
        let mut chain_id = [0u8; 16];
        random(&mut chain_id)?;
        let derivation = match secret {
            KeySecret::Key(_) => KeyDerivation::KeyFile,
            KeySecret::Passphrase(_) => {
                let mut salt = [0u8; 16];
                random(&mut salt)?;
                let (memory_kib, iterations, lanes) = cost;
                KeyDerivation::Argon2id {
                    memory_kib,
                    iterations,
                    lanes,
                    salt,
                }
            }
        };
        Self::derive(secret, chain_id, derivation, Path::new("(new chain)"))
    }

    /// The keys of the chain a file belongs to, from its header: the
    /// secret is stretched as the header says and checked against its key
    /// check. A secret of the other kind, or one that does not match, is
    /// [`ArchiveError::WrongKey`] or an error that says which kind the
    /// chain needs; nothing is decrypted.
    pub fn for_header(secret: &KeySecret, header: &SealedHeader, path: &Path) -> Result<Self> {
        let keys = Self::derive(secret, header.chain_id, header.derivation, path)?;
        keys.check(header, path)?;
        Ok(keys)
    }

    fn derive(
        secret: &KeySecret,
        chain_id: [u8; 16],
        derivation: KeyDerivation,
        path: &Path,
    ) -> Result<Self> {
        let key = match (secret, derivation) {
            (KeySecret::Key(k), KeyDerivation::KeyFile) => k.clone(),
            (
                KeySecret::Passphrase(p),
                KeyDerivation::Argon2id {
                    memory_kib,
                    iterations,
                    lanes,
                    salt,
                },
            ) => stretch(p, &salt, memory_kib, iterations, lanes, path)?,
            (given, needed) => {
                let given = match given {
                    KeySecret::Key(_) => "a key file",
                    KeySecret::Passphrase(_) => "a passphrase",
                };
                return Err(ArchiveError::Sealed {
                    path: path.to_owned(),
                    offset: 14,
                    detail: format!(
                        "the chain was encrypted with {}, and {given} was given",
                        needed.name()
                    ),
                });
            }
        };
        let key_check = derive16(CONTEXT_KEY_CHECK, &key, &chain_id);
        let hash_key = Zeroizing::new(derive32(CONTEXT_HASH_KEY, &key, &chain_id));
        Ok(ChainKeys {
            chain_id,
            derivation,
            key,
            key_check,
            hash_key,
        })
    }

    /// Checks that a file's header belongs to this chain and this key:
    /// the same chain identity, derivation and key check.
    pub fn check(&self, header: &SealedHeader, path: &Path) -> Result<()> {
        if header.chain_id != self.chain_id {
            return Err(ArchiveError::Sealed {
                path: path.to_owned(),
                offset: 48,
                detail: format!(
                    "belongs to another chain (chain id {}, expected {})",
                    hex(&header.chain_id),
                    hex(&self.chain_id)
                ),
            });
        }
        if header.derivation != self.derivation {
            return Err(ArchiveError::Sealed {
                path: path.to_owned(),
                offset: 14,
                detail: "its key derivation differs from the rest of its chain".into(),
            });
        }
        if !ring_eq(&header.key_check, &self.key_check) {
            return Err(ArchiveError::WrongKey {
                path: path.to_owned(),
            });
        }
        Ok(())
    }

    /// The chain's random identity.
    pub fn chain_id(&self) -> [u8; 16] {
        self.chain_id
    }

    /// How the chain key is derived.
    pub fn derivation(&self) -> KeyDerivation {
        self.derivation
    }

    /// The key of the per-block hash of an encrypted chain: BLAKE3 in keyed
    /// mode with this key, so that equal blocks in two chains, or a guessed
    /// block, cannot be recognised by their hash.
    pub fn block_hash_key(&self) -> &[u8; 32] {
        &self.hash_key
    }

    /// A new header for a file of this chain, with a fresh random salt.
    pub fn new_header(&self, content: SealedContent, generation: u64) -> Result<SealedHeader> {
        let mut file_salt = [0u8; 32];
        random(&mut file_salt)?;
        Ok(self.header_with_salt(content, generation, file_salt))
    }

    /// A header with the given salt: for worked examples and tests, which
    /// need reproducible files. A salt must never be used twice.
    pub fn header_with_salt(
        &self,
        content: SealedContent,
        generation: u64,
        file_salt: [u8; 32],
    ) -> SealedHeader {
        SealedHeader {
            content,
            segment_size: SEGMENT_SIZE,
            derivation: self.derivation,
            chain_id: self.chain_id,
            generation,
            file_salt,
            key_check: self.key_check,
        }
    }

    /// The AEAD key of the file with this header.
    pub(crate) fn file_key(&self, header: &SealedHeader) -> LessSafeKey {
        let k = Zeroizing::new(derive32(CONTEXT_FILE_KEY, &self.key, &header.file_salt));
        // AES_256_GCM takes exactly 32 bytes, which `k` is.
        let unbound = UnboundKey::new(&AES_256_GCM, &k[..]).unwrap_or_else(|_| unreachable!());
        LessSafeKey::new(unbound)
    }
}

fn stretch(
    passphrase: &[u8],
    salt: &[u8; 16],
    memory_kib: u32,
    iterations: u32,
    lanes: u32,
    path: &Path,
) -> Result<ChainKey> {
    let (max_m, max_t, max_p) = ARGON2_MAX;
    let bad = |detail: String| ArchiveError::Sealed {
        path: path.to_owned(),
        offset: 20,
        detail,
    };
    if memory_kib > max_m || iterations > max_t || lanes > max_p {
        return Err(bad(format!(
            "Argon2id cost out of range: {memory_kib} KiB, {iterations} passes, {lanes} lanes"
        )));
    }
    let params = argon2::Params::new(memory_kib, iterations, lanes, Some(32))
        .map_err(|e| bad(format!("Argon2id parameters: {e}")))?;
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut out = Zeroizing::new([0u8; 32]);
    argon
        .hash_password_into(passphrase, salt, &mut out[..])
        .map_err(|e| bad(format!("Argon2id: {e}")))?;
    Ok(ChainKey(out))
}

fn derive32(context: &str, key: &ChainKey, with: &[u8]) -> [u8; 32] {
    let mut h = blake3::Hasher::new_derive_key(context);
    h.update(key.as_bytes());
    h.update(with);
    *h.finalize().as_bytes()
}

fn derive16(context: &str, key: &ChainKey, with: &[u8]) -> [u8; 16] {
    let full = derive32(context, key, with);
    let mut out = [0u8; 16];
    out.copy_from_slice(&full[..16]);
    out
}

fn ring_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub(crate) fn random(out: &mut [u8]) -> Result<()> {
    SystemRandom::new()
        .fill(out)
        .map_err(|_| ArchiveError::InvalidValue {
            detail: "the operating system's random generator failed".into(),
        })
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
