//! Picks a dump's block size and hash algorithm: the previous digest's when
//! there is one (a chain keeps them), else the options'.

use std::io::Read;

use archive_format::{BlockSize, DigestFormat, DigestReader, Fingerprint, HashAlgorithm};

use super::DumpOptions;
use crate::progress::{Notice, Progress};
use crate::{Error, Result};

/// Picks the block size and hash: the previous digest's when there is one.
///
/// Returns them with the previous digest's fingerprint, the parent of a v2
/// chain (`None` for a new chain and for the legacy format).
pub(super) fn resolve<P: Read>(
    options: &DumpOptions,
    previous: Option<&DigestReader<P>>,
    sink_format: DigestFormat,
    progress: &mut dyn Progress,
) -> Result<(BlockSize, HashAlgorithm, Option<Fingerprint>)> {
    let Some(prev) = previous else {
        let hash = match sink_format {
            DigestFormat::Legacy => HashAlgorithm::Md5,
            DigestFormat::V2 => options.hash,
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
    Ok((prev.block_size(), prev.algorithm(), parent))
}
