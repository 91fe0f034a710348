//! Sealed files: a file of an encrypted chain, encrypted and authenticated
//! in segments with AES-256-GCM (FORMAT.md §10).

mod header;
mod key_file;
mod keys;
mod reader;
mod writer;

pub use header::{
    KeyDerivation, SEALED_HEADER_LEN, SEALED_MAGIC, SEGMENT_SIZE, SealedContent, SealedHeader,
    TAG_LEN, is_sealed,
};
pub use key_file::{parse_key_hex, read_key_file, read_passphrase_file, write_key_file};
pub use keys::{ARGON2_DEFAULT, ChainKey, ChainKeys, KeySecret};
pub use reader::{SealedFile, SealedReader};
pub use writer::SealedWriter;

use ring::aead::Nonce;

/// The nonce of segment `index`: its number, and whether it is the last.
fn nonce(index: u64, last: bool) -> Nonce {
    let mut n = [0u8; 12];
    n[..8].copy_from_slice(&index.to_le_bytes());
    n[8] = u8::from(last);
    Nonce::assume_unique_for_key(n)
}

#[cfg(test)]
mod tests;
