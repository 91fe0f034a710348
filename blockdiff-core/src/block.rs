//! Hashing blocks. The value types, [`BlockSize`] and [`BlockHash`], are
//! archive-format's (the digest format holds them); they are re-exported
//! from this crate's root.

use archive_format::{BlockHash, BlockSize, HASH_LEN, HashAlgorithm};
use md5::{Digest, Md5};

/// A block hash function ready to use: an algorithm, with its key when it
/// is keyed (an encrypted chain's [`HashAlgorithm::Blake3Keyed`]).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum HashFn {
    /// MD5.
    Md5,
    /// BLAKE3.
    Blake3,
    /// BLAKE3 in keyed mode with this key.
    Blake3Keyed([u8; 32]),
}

impl std::fmt::Debug for HashFn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.algorithm().name())
    }
}

/// The key of an encrypted chain's keyed BLAKE3 block hashes (derived
/// from the chain key: `ChainKeys::block_hash_key` in archive-format). Its
/// `Debug` shows nothing of it.
#[derive(Clone, PartialEq, Eq)]
pub struct BlockHashKey(pub [u8; 32]);

impl std::fmt::Debug for BlockHashKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BlockHashKey(..)")
    }
}

impl HashFn {
    /// The function of `algorithm` with `key`: a keyed algorithm needs the
    /// key, and a key is used only by a keyed algorithm. `None` when they
    /// do not go together.
    pub fn with_key(algorithm: HashAlgorithm, key: Option<&BlockHashKey>) -> Option<Self> {
        match (algorithm.is_keyed(), key) {
            (true, Some(k)) => Some(HashFn::keyed(&k.0)),
            (false, None) => HashFn::unkeyed(algorithm),
            _ => None,
        }
    }

    /// The function of an unkeyed algorithm; `None` for a keyed one, which
    /// needs [`keyed`](Self::keyed).
    pub fn unkeyed(algorithm: HashAlgorithm) -> Option<Self> {
        match algorithm {
            HashAlgorithm::Md5 => Some(HashFn::Md5),
            HashAlgorithm::Blake3 => Some(HashFn::Blake3),
            HashAlgorithm::Blake3Keyed => None,
        }
    }

    /// Keyed BLAKE3 with `key`.
    pub fn keyed(key: &[u8; 32]) -> Self {
        HashFn::Blake3Keyed(*key)
    }

    /// The algorithm, as digests record it.
    pub fn algorithm(&self) -> HashAlgorithm {
        match self {
            HashFn::Md5 => HashAlgorithm::Md5,
            HashFn::Blake3 => HashAlgorithm::Blake3,
            HashFn::Blake3Keyed(_) => HashAlgorithm::Blake3Keyed,
        }
    }

    /// Hashes one block.
    pub fn hash(&self, data: &[u8]) -> BlockHash {
        let mut h = [0u8; HASH_LEN];
        match self {
            HashFn::Md5 => h[..16].copy_from_slice(&Md5::digest(data)),
            HashFn::Blake3 => h = *blake3::hash(data).as_bytes(),
            HashFn::Blake3Keyed(key) => h = *blake3::keyed_hash(key, data).as_bytes(),
        }
        h
    }
}

/// Hashes one block with an unkeyed algorithm; a keyed algorithm (which
/// needs its key, see [`HashFn`]) gives the all-zero hash, which matches no
/// block's.
pub fn hash_block(algorithm: HashAlgorithm, data: &[u8]) -> BlockHash {
    HashFn::unkeyed(algorithm).map_or([0u8; HASH_LEN], |f| f.hash(data))
}

/// True when every byte of `data` is zero. Reads 64 bytes at a time, so it
/// runs near memory speed on zero blocks and stops at once on others.
pub fn is_zero(data: &[u8]) -> bool {
    let mut chunks = data.chunks_exact(64);
    for c in &mut chunks {
        let mut acc = 0u64;
        for w in c.chunks_exact(8) {
            acc |= u64::from_ne_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]);
        }
        if acc != 0 {
            return false;
        }
    }
    chunks.remainder().iter().all(|&b| b == 0)
}

/// Hashes blocks, with the hash of an all-zero block computed once: a zero
/// block costs a scan, not a hash.
#[derive(Debug, Clone)]
pub struct BlockHasher {
    function: HashFn,
    block_size: BlockSize,
    zero_hash: BlockHash,
}

impl BlockHasher {
    /// A hasher for blocks of `block_size` bytes.
    pub fn new(function: HashFn, block_size: BlockSize) -> Self {
        let zero_hash = function.hash(&vec![0u8; block_size.bytes()]);
        BlockHasher {
            function,
            block_size,
            zero_hash,
        }
    }

    /// The algorithm.
    pub fn algorithm(&self) -> HashAlgorithm {
        self.function.algorithm()
    }

    /// The hash of one block, and whether it is all zero.
    pub fn hash(&self, data: &[u8]) -> (BlockHash, bool) {
        if is_zero(data) {
            if data.len() == self.block_size.bytes() {
                return (self.zero_hash, true);
            }
            return (self.function.hash(data), true);
        }
        (self.function.hash(data), false)
    }
}

/// Hashes consecutive blocks of `data` (the last may be short) into `out`,
/// replacing its contents. This is the hot loop of a dump.
pub fn hash_blocks(
    data: &[u8],
    block_size: BlockSize,
    algorithm: HashAlgorithm,
    out: &mut Vec<BlockHash>,
) {
    out.clear();
    out.extend(
        data.chunks(block_size.bytes())
            .map(|b| hash_block(algorithm, b)),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn md5_of_known_input() {
        // RFC 1321 test vector.
        let h = hash_block(HashAlgorithm::Md5, b"abc");
        let rfc = [
            0x90, 0x01, 0x50, 0x98, 0x3c, 0xd2, 0x4f, 0xb0, 0xd6, 0x96, 0x3f, 0x7d, 0x28, 0xe1,
            0x7f, 0x72,
        ];
        assert_eq!(h[..16], rfc);
        assert_eq!(h[16..], [0; 16]);
        let mut out = Vec::new();
        hash_blocks(
            b"abcabcab",
            BlockSize::new(3).unwrap(),
            HashAlgorithm::Md5,
            &mut out,
        );
        assert_eq!(out.len(), 3);
        assert_eq!(out[0], h);
        assert_eq!(out[2], hash_block(HashAlgorithm::Md5, b"ab"));
        // BLAKE3 test vector: the empty input.
        let e = hash_block(HashAlgorithm::Blake3, b"");
        assert_eq!(e[..4], [0xaf, 0x13, 0x49, 0xb9]);
    }

    #[test]
    fn zero_detection_and_the_zero_hash_shortcut() {
        assert!(is_zero(&[]));
        assert!(is_zero(&[0; 1000]));
        for at in [0, 63, 64, 999] {
            let mut b = vec![0u8; 1000];
            b[at] = 1;
            assert!(!is_zero(&b), "{at}");
        }
        for algo in [HashAlgorithm::Md5, HashAlgorithm::Blake3] {
            let h = BlockHasher::new(
                HashFn::unkeyed(algo).unwrap(),
                BlockSize::new(1000).unwrap(),
            );
            assert_eq!(h.hash(&[0; 1000]), (hash_block(algo, &[0; 1000]), true));
            assert_eq!(h.hash(&[0; 10]), (hash_block(algo, &[0; 10]), true));
            assert_eq!(h.hash(&[1; 10]), (hash_block(algo, &[1; 10]), false));
        }
    }
}
