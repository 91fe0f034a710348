//! One backup run: lock, dump against the previous digest, commit.

use std::io::Read;
use std::path::Path;

use archive_format::Compression;

use crate::digest::{DigestReader, DigestWriter};
use crate::dump::{DumpOptions, DumpReport, LegacySink, dump};
use crate::progress::Progress;
use crate::store::GenerationStore;
use crate::{Error, Result};

/// How a backup runs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BackupOptions {
    /// The dump's options (block size, threads).
    pub dump: DumpOptions,
    /// Compression of the new generation's diff.
    pub compression: Compression,
}

/// What a backup did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupReport {
    /// The generation committed.
    pub generation: u64,
    /// The dump's figures.
    pub dump: DumpReport,
    /// Bytes of the diff file on disk (after compression).
    pub diff_bytes: u64,
}

/// Backs `source` up as the next generation of `store`.
///
/// Takes the store's lock (failing at once if another run holds it), dumps
/// against the previous generation's digest, and commits crash-safely. On
/// any error nothing of the new generation is left and every committed
/// generation is untouched.
///
/// ```
/// use blockdiff_core::{BackupOptions, GenerationStore, NoProgress, backup};
///
/// let dir = tempfile::tempdir()?;
/// let store = GenerationStore::new(dir.path().join("db"));
/// let image = vec![7u8; 100_000];
/// let first = backup(&store, &image[..], "image".as_ref(), &BackupOptions::default(), &mut NoProgress)?;
/// assert_eq!((first.generation, first.dump.changed_blocks), (1, 7));
/// let second = backup(&store, &image[..], "image".as_ref(), &BackupOptions::default(), &mut NoProgress)?;
/// assert_eq!((second.generation, second.dump.changed_blocks), (2, 0));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn backup<R: Read + Send>(
    store: &GenerationStore,
    source: R,
    source_name: &Path,
    options: &BackupOptions,
    progress: &mut dyn Progress,
) -> Result<BackupReport> {
    let lock = store.lock()?;
    let mut pending = store.begin(&lock, options.compression, progress)?;
    let mut previous = match pending.previous_digest() {
        Some(path) => Some(DigestReader::open(path).map_err(|e| match e {
            Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                Error::MissingGeneration {
                    path: path.to_owned(),
                    generation: pending.generation() - 1,
                    reason: "its digest is needed for an incremental backup".into(),
                }
            }
            other => other,
        })?),
        None => None,
    };
    let diff_path = pending.diff_path().to_owned();
    let digest_path = pending.digest_path().to_owned();
    let report = {
        let (diff, digest) = pending.writers();
        let mut sink = LegacySink::new(diff, &diff_path);
        let mut digest = DigestWriter::new(digest, &digest_path);
        let report = dump(
            source,
            source_name,
            previous.as_mut(),
            &mut sink,
            &mut digest,
            &options.dump,
            progress,
        )?;
        sink.finish()?;
        digest.finish()?;
        report
    };
    let generation = pending.commit()?;
    let diff_bytes = std::fs::metadata(&diff_path).map(|m| m.len()).unwrap_or(0);
    Ok(BackupReport {
        generation,
        dump: report,
        diff_bytes,
    })
}
