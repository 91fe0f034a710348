//! An encrypted chain's secret and keys, as a store uses them: every file
//! of the chain is sealed (FORMAT.md §10), and a store given a
//! [`ChainEncryption`] refuses a plain file as it refuses a damaged one.

use std::fmt;
use std::io::{Read, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};

use archive_format::{
    ARGON2_DEFAULT, ArchiveError, ChainKeys, KeySecret, ReadAt, SealedContent, SealedFile,
    SealedHeader, SealedReader, SealedWriter,
};

use crate::block::BlockHashKey;
use crate::{Error, Result};

/// The secret of an encrypted chain (a key or a passphrase) and, once a
/// file of the chain was opened or the chain started, its keys. Cloning
/// shares the keys, so that a passphrase is stretched once per run.
#[derive(Clone)]
pub struct ChainEncryption {
    secret: KeySecret,
    cost: (u32, u32, u32),
    keys: Arc<Mutex<Option<ChainKeys>>>,
}

impl fmt::Debug for ChainEncryption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChainEncryption")
            .field("secret", &self.secret)
            .finish_non_exhaustive()
    }
}

impl ChainEncryption {
    /// Encryption with `secret`: a new chain is started with it, an
    /// existing one is opened with it.
    pub fn new(secret: KeySecret) -> Self {
        ChainEncryption {
            secret,
            cost: ARGON2_DEFAULT,
            keys: Arc::new(Mutex::new(None)),
        }
    }

    /// The Argon2id cost `(memory KiB, passes, lanes)` with which a new
    /// chain stretches a passphrase (default [`ARGON2_DEFAULT`]); an
    /// existing chain keeps the cost it records.
    pub fn with_argon2_cost(mut self, cost: (u32, u32, u32)) -> Self {
        self.cost = cost;
        self
    }

    fn cached(&self) -> Option<ChainKeys> {
        self.keys.lock().ok().and_then(|k| k.clone())
    }

    fn remember(&self, keys: &ChainKeys) {
        if let Ok(mut k) = self.keys.lock() {
            *k = Some(keys.clone());
        }
    }

    /// The keys of the chain whose file `path` has `header`: derived from
    /// the secret the first time (a wrong key is [`Error::WrongKey`] for
    /// `chain`), checked against the header after.
    pub fn keys_for(&self, header: &SealedHeader, path: &Path, chain: &Path) -> Result<ChainKeys> {
        let named = |e: ArchiveError| match e {
            ArchiveError::WrongKey { path } => Error::WrongKey {
                chain: chain.to_owned(),
                path,
            },
            other => Error::from(other),
        };
        if let Some(keys) = self.cached() {
            keys.check(header, path).map_err(named)?;
            return Ok(keys);
        }
        let keys = ChainKeys::for_header(&self.secret, header, path).map_err(named)?;
        self.remember(&keys);
        Ok(keys)
    }

    /// The keys of a new chain: a new chain identity (and for a
    /// passphrase, a new salt).
    pub fn start_chain(&self) -> Result<ChainKeys> {
        let keys = ChainKeys::new_chain_with_cost(&self.secret, self.cost)?;
        self.remember(&keys);
        Ok(keys)
    }

    /// The key of the chain's block hashes, once its keys are known.
    pub fn block_hash_key(&self) -> Option<BlockHashKey> {
        self.cached().map(|k| BlockHashKey(*k.block_hash_key()))
    }

    /// Opens a sealed file of the chain, read by offset: checks its
    /// header (the chain, the key, what it holds and its generation) and
    /// its end. A plain file is refused.
    pub fn open_at<R: ReadAt>(
        &self,
        inner: R,
        content: SealedContent,
        generation: u64,
        path: &Path,
        chain: &Path,
    ) -> Result<SealedFile<R>> {
        let Some(header) = SealedHeader::read_at(&inner, path)? else {
            return Err(not_sealed(path, chain));
        };
        let keys = self.keys_for(&header, path, chain)?;
        Ok(SealedFile::open(
            inner,
            &keys,
            content,
            Some(generation),
            path,
        )?)
    }

    /// Opens a sealed file of the chain read front to back.
    pub fn open_stream<R: Read>(
        &self,
        mut inner: R,
        content: SealedContent,
        generation: u64,
        path: &Path,
        chain: &Path,
    ) -> Result<SealedReader<R>> {
        let (header, _) = SealedReader::read_header(&mut inner, path)?;
        let Some(header) = header else {
            return Err(not_sealed(path, chain));
        };
        let keys = self.keys_for(&header, path, chain)?;
        Ok(SealedReader::new(
            inner,
            &header,
            &keys,
            content,
            Some(generation),
            path,
        )?)
    }

    /// Starts a sealed file of the chain (whose keys must be known:
    /// opened or started).
    pub fn create<W: Write>(
        &self,
        inner: W,
        content: SealedContent,
        generation: u64,
        path: &Path,
    ) -> Result<SealedWriter<W>> {
        let keys = self.cached().ok_or_else(|| Error::Chain {
            path: path.to_owned(),
            detail: "the chain's keys are not known yet (internal: no file of it was opened)"
                .into(),
        })?;
        Ok(SealedWriter::new(inner, &keys, content, generation)?)
    }
}

/// A plain file where an encrypted chain's file should be.
pub(crate) fn not_sealed(path: &Path, chain: &Path) -> Error {
    Error::Chain {
        path: path.to_owned(),
        detail: format!(
            "is not encrypted, but a key was given for chain {}: an encrypted chain's files are all sealed (a plain file put in its place, or the chain is not encrypted)",
            chain.display()
        ),
    }
}

/// A sealed file read without a key.
pub(crate) fn needs_key(path: &Path, chain: &Path) -> Error {
    Error::Chain {
        path: path.to_owned(),
        detail: format!(
            "chain {} is encrypted: give its key (--key-file, --passphrase-file or BLOCKDIFF_PASSPHRASE)",
            chain.display()
        ),
    }
}

/// Opens a committed file of chain `chain` read by offset, as any store
/// does: with `encryption`, a sealed file is checked (its chain, the key,
/// what it holds, its generation and its end) and read as its plaintext,
/// and a plain one is refused; without, a sealed file is refused with an
/// error that asks for the key.
pub fn open_chain_file<R: ReadAt + Send + Sync + 'static>(
    encryption: Option<&ChainEncryption>,
    inner: R,
    content: SealedContent,
    generation: u64,
    path: &Path,
    chain: &Path,
) -> Result<Box<dyn ReadAt + Send + Sync>> {
    match encryption {
        Some(enc) => Ok(Box::new(
            enc.open_at(inner, content, generation, path, chain)?,
        )),
        None => {
            if SealedHeader::read_at(&inner, path)?.is_some() {
                return Err(needs_key(path, chain));
            }
            Ok(Box::new(inner))
        }
    }
}

/// The plaintext of a small file of chain `chain` read whole (metadata):
/// with `encryption`, `bytes` must be a sealed file of that chain and
/// generation; without, a sealed one is refused. At most `limit` bytes of
/// plaintext are kept.
pub fn unseal_chain_file(
    encryption: Option<&ChainEncryption>,
    bytes: Vec<u8>,
    content: SealedContent,
    generation: u64,
    path: &Path,
    chain: &Path,
    limit: u64,
) -> Result<Vec<u8>> {
    let sealed = archive_format::is_sealed(&bytes);
    match (encryption, sealed) {
        (Some(enc), true) => {
            let mut plain = Vec::new();
            enc.open_stream(
                std::io::Cursor::new(bytes),
                content,
                generation,
                path,
                chain,
            )?
            .take(limit)
            .read_to_end(&mut plain)
            .map_err(|e| crate::store::sealed_read_error(path, e))?;
            Ok(plain)
        }
        (Some(_), false) => Err(not_sealed(path, chain)),
        (None, true) => Err(needs_key(path, chain)),
        (None, false) => {
            let mut bytes = bytes;
            bytes.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
            Ok(bytes)
        }
    }
}

/// A file a store writes: plain, or sealed when its chain is encrypted.
/// [`finish`](Self::finish) seals the last segment; a sealed file dropped
/// unfinished is refused by every reader as cut short.
pub enum StoreWriter<W: Write> {
    /// A plain chain's file.
    Plain(W),
    /// An encrypted chain's file.
    Sealed(Box<SealedWriter<W>>),
}

impl<W: Write> StoreWriter<W> {
    /// A writer of generation `generation`'s file `path` (for messages)
    /// holding `content`: sealed with the keys of `encryption` (which must
    /// be known: a file of the chain opened, or the chain started), else
    /// plain.
    pub fn new(
        encryption: Option<&ChainEncryption>,
        inner: W,
        content: SealedContent,
        generation: u64,
        path: &Path,
    ) -> Result<Self> {
        Ok(match encryption {
            Some(enc) => {
                StoreWriter::Sealed(Box::new(enc.create(inner, content, generation, path)?))
            }
            None => StoreWriter::Plain(inner),
        })
    }

    /// Seals the last segment of a sealed file; returns the inner writer.
    pub fn finish(self) -> std::io::Result<W> {
        match self {
            StoreWriter::Plain(w) => Ok(w),
            StoreWriter::Sealed(s) => (*s).finish(),
        }
    }
}

impl<W: Write> Write for StoreWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            StoreWriter::Plain(w) => w.write(buf),
            StoreWriter::Sealed(s) => s.write(buf),
        }
    }
    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        match self {
            StoreWriter::Plain(w) => w.write_all(buf),
            StoreWriter::Sealed(s) => s.write_all(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            StoreWriter::Plain(w) => w.flush(),
            StoreWriter::Sealed(s) => s.flush(),
        }
    }
}

impl<W: Write> fmt::Debug for StoreWriter<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StoreWriter::Plain(_) => "StoreWriter::Plain",
            StoreWriter::Sealed(_) => "StoreWriter::Sealed",
        })
    }
}
