//! The one place that decides what a dump writes: its diff format, block
//! size and hash, from what was asked for and what the previous generation
//! fixes (a chain keeps all three). The tools map their options to a
//! request; [`resolve_format`] picks the format before anything is
//! written, [`resolve_dump`] the block size and hash once the previous
//! digest is open.

use std::io::Read;
use std::path::Path;

use archive_format::{BlockSize, DigestFormat, DigestReader, Fingerprint, HashAlgorithm};

use crate::block::{BlockHashKey, HashFn};
use crate::dump::DumpOptions;
use crate::progress::{Notice, Progress};
use crate::store::{DiffFormat, DiffLocation};
use crate::{Error, Result};

/// What the previous generation of a chain says of its format.
#[derive(Debug, Clone, Copy)]
pub enum PreviousFormat<'a> {
    /// Its diff, as a store finds it: the exact format.
    Diff(&'a DiffLocation),
    /// Its digest alone (`blockdiff-dump --old-digest`): the format's kind.
    Digest {
        /// Legacy or v2.
        format: DigestFormat,
        /// The digest.
        path: &'a Path,
    },
}

/// The diff format a dump writes: `requested`, or the previous
/// generation's (a new chain's default is v2 with zstd level 1). A request
/// for another kind of format than the chain's is refused, since a chain
/// keeps one format.
pub fn resolve_format(
    requested: Option<DiffFormat>,
    previous: Option<PreviousFormat<'_>>,
) -> Result<DiffFormat> {
    let same_kind = |a: DiffFormat, b: DigestFormat| {
        matches!(
            (a, b),
            (DiffFormat::Legacy(_), DigestFormat::Legacy)
                | (DiffFormat::V2 { .. }, DigestFormat::V2)
        )
    };
    match (requested, previous) {
        (requested, None) => Ok(requested.unwrap_or_default()),
        (None, Some(PreviousFormat::Diff(last))) => Ok(last.format),
        (None, Some(PreviousFormat::Digest { format, .. })) => Ok(match format {
            DigestFormat::Legacy => DiffFormat::Legacy(archive_format::Compression::None),
            DigestFormat::V2 => DiffFormat::default(),
        }),
        (Some(r), Some(PreviousFormat::Diff(last)))
            if same_kind(r, last.format.digest_format()) =>
        {
            Ok(r)
        }
        (Some(r), Some(PreviousFormat::Diff(last))) => Err(Error::Chain {
            path: last.path.clone(),
            detail: format!(
                "this chain is {} but {r} was asked for; a chain keeps one format (use a new backup name to switch)",
                last.format
            ),
        }),
        (Some(r), Some(PreviousFormat::Digest { format, .. })) if same_kind(r, format) => Ok(r),
        (Some(r), Some(PreviousFormat::Digest { format, path })) => Err(Error::Chain {
            path: path.to_owned(),
            detail: format!(
                "the previous digest is {format:?} but this dump writes {:?}: a chain keeps one format (start a new backup name to change it)",
                r.digest_format()
            ),
        }),
    }
}

/// The hash function of a chain hashed with `algorithm`, given the
/// options' key: a keyed (encrypted) chain needs the key, an unkeyed one
/// refuses it. `path` names the digest that fixed the algorithm.
fn hash_function(
    algorithm: HashAlgorithm,
    key: Option<&BlockHashKey>,
    path: &Path,
) -> Result<HashFn> {
    HashFn::with_key(algorithm, key).ok_or_else(|| Error::Chain {
        path: path.to_owned(),
        detail: if key.is_none() {
            "this chain is encrypted (its block hashes are keyed): give its key".into()
        } else {
            format!("this chain is not encrypted (its block hashes are {algorithm}), and a key was given: an encrypted backup needs a new chain")
        },
    })
}

/// Picks the block size and hash of a dump that writes `sink_format`: the
/// previous digest's when there is one (with a notice when the options
/// asked for others), else the options' (MD5 for a legacy digest).
///
/// Returns them with the previous digest's fingerprint, the parent of a v2
/// chain (`None` for a new chain and for the legacy format).
pub(crate) fn resolve_dump<P: Read>(
    options: &DumpOptions,
    previous: Option<&DigestReader<P>>,
    sink_format: DigestFormat,
    progress: &mut dyn Progress,
) -> Result<(BlockSize, HashFn, Option<Fingerprint>)> {
    let Some(prev) = previous else {
        let hash = match (sink_format, &options.hash_key) {
            (DigestFormat::Legacy, None) => HashFn::Md5,
            (DigestFormat::Legacy, Some(_)) => {
                return Err(Error::InvalidOption(
                    "the legacy format cannot be encrypted: an encrypted chain is v2".into(),
                ));
            }
            (DigestFormat::V2, key) => {
                HashFn::with_key(options.hash, key.as_ref()).ok_or_else(|| {
                    Error::InvalidOption(match key {
                        Some(_) => format!(
                            "an encrypted chain hashes its blocks with blake3-keyed, not {}",
                            options.hash
                        ),
                        None => "blake3-keyed block hashes need the chain's key".into(),
                    })
                })?
            }
        };
        return Ok((options.block_size, hash, None));
    };
    if prev.spec().format != sink_format {
        return Err(Error::Chain {
            path: prev.path().to_owned(),
            detail: format!(
                "the previous digest is {:?} but this dump writes {:?}: a chain keeps one format (start a new backup name to change it)",
                prev.spec().format,
                sink_format
            ),
        });
    }
    if prev.block_size() != options.block_size {
        progress.notice(Notice::BlockSizeFromDigest {
            digest: prev.path().to_owned(),
            requested: options.block_size,
            used: prev.block_size(),
        });
    }
    if sink_format == DigestFormat::V2 && prev.algorithm() != options.hash {
        progress.notice(Notice::HashFromDigest {
            digest: prev.path().to_owned(),
            requested: options.hash,
            used: prev.algorithm(),
        });
    }
    let parent = match sink_format {
        DigestFormat::V2 => Some(prev.fingerprint().ok_or_else(|| Error::Chain {
            path: prev.path().to_owned(),
            detail: "a v2 previous digest must be a regular file (its fingerprint is read from its end)".into(),
        })?),
        DigestFormat::Legacy => None,
    };
    let hash = match sink_format {
        DigestFormat::V2 => {
            hash_function(prev.algorithm(), options.hash_key.as_ref(), prev.path())?
        }
        DigestFormat::Legacy => HashFn::Md5,
    };
    Ok((prev.block_size(), hash, parent))
}

#[cfg(test)]
mod tests {
    use super::*;
    use archive_format::{Compression, FrameCompression};

    fn diff(format: DiffFormat) -> DiffLocation {
        DiffLocation {
            path: "db.3".into(),
            format,
            generation: 3,
            sealed: false,
        }
    }

    #[test]
    fn a_chain_keeps_its_format_and_a_new_one_takes_the_request() {
        let gzip = DiffFormat::Legacy(Compression::Gzip);
        let stored = DiffFormat::V2 {
            compression: FrameCompression::None,
            level: 0,
        };
        // A new chain: the request, else v2.
        assert_eq!(resolve_format(None, None).unwrap(), DiffFormat::default());
        assert_eq!(resolve_format(Some(gzip), None).unwrap(), gzip);
        // A chain: its own format, or a request of the same kind.
        let last = diff(gzip);
        assert_eq!(
            resolve_format(None, Some(PreviousFormat::Diff(&last))).unwrap(),
            gzip
        );
        let plain = DiffFormat::Legacy(Compression::None);
        assert_eq!(
            resolve_format(Some(plain), Some(PreviousFormat::Diff(&last))).unwrap(),
            plain
        );
        let e = resolve_format(Some(stored), Some(PreviousFormat::Diff(&last)))
            .unwrap_err()
            .to_string();
        assert!(e.contains("db.3: this chain is legacy+gzip but v2"), "{e}");
        // From a digest alone, the kind: legacy stays legacy (plain).
        let legacy_digest = PreviousFormat::Digest {
            format: DigestFormat::Legacy,
            path: Path::new("db.3.md5"),
        };
        assert_eq!(resolve_format(None, Some(legacy_digest)).unwrap(), plain);
        assert_eq!(
            resolve_format(Some(gzip), Some(legacy_digest)).unwrap(),
            gzip
        );
        let e = resolve_format(Some(stored), Some(legacy_digest))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("db.3.md5")
                && e.contains("the previous digest is Legacy but this dump writes V2"),
            "{e}"
        );
        let v2_digest = PreviousFormat::Digest {
            format: DigestFormat::V2,
            path: Path::new("db.3.digest"),
        };
        assert_eq!(
            resolve_format(None, Some(v2_digest)).unwrap(),
            DiffFormat::default()
        );
        assert_eq!(
            resolve_format(Some(stored), Some(v2_digest)).unwrap(),
            stored
        );
    }
}
