//! A fold made ready on any store: the kept generation's chain opened down
//! to the generations folded into it and checked against the plan, the
//! new diff's header, and a [`GenerationReader`] of the group from which
//! the new diff is written and against which it is checked. The store
//! does the rest: where the new diff goes and how it replaces the old one.

use std::io::Write;
use std::path::Path;

use archive_format::{DiffHeader, Fingerprint, ReadAt};

use crate::block::HashFn;
use crate::generation_reader::GenerationReader;
use crate::generation_source::GenerationSource;
use crate::progress::Progress;
use crate::restore::Chain;
use crate::store::DiffLocation;
use crate::{DigestFile, Error, RestoreOptions, RestorePlan, Result};

use super::FoldGroup;
use super::folded_diff::{check_folded, write_folded};

/// What a fold's new diff holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FoldedStats {
    /// Blocks the new diff holds (data and zero).
    pub blocks: u64,
    /// Bytes of block data before compression.
    pub raw_bytes: u64,
}

/// One fold, ready to write its new diff (see the module's overview):
/// built by [`PreparedFold::new`], written by [`write`](Self::write),
/// checked by [`check`](Self::check) before the store switches to it.
pub struct PreparedFold {
    group: FoldGroup,
    reader: GenerationReader,
    header: DiffHeader,
    fingerprint: Fingerprint,
    hasher: HashFn,
    diffs: Vec<DiffLocation>,
}

impl std::fmt::Debug for PreparedFold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreparedFold")
            .field("group", &self.group)
            .field("header", &self.header)
            .finish_non_exhaustive()
    }
}

impl PreparedFold {
    /// Opens generation `group.into` of `source` as a restore does (every
    /// diff of its chain checked), and checks that it links down to
    /// `group.folded` and then to `group.parent`, as the plan said; the
    /// reader keeps at most `cache_bytes` of decompressed frames. A legacy
    /// chain is refused.
    pub fn new(
        source: &dyn GenerationSource,
        group: &FoldGroup,
        cache_bytes: usize,
    ) -> Result<Self> {
        let plan = RestorePlan::new(
            source,
            &RestoreOptions {
                generation: Some(group.into),
                ..RestoreOptions::default()
            },
        )?;
        let mut parts = plan.into_parts();
        let Chain::V2(diffs) = &mut parts.chain else {
            return Err(legacy_refusal(source));
        };
        let linked: Vec<u64> = diffs.iter().skip(1).map(|(l, _)| l.generation).collect();
        if !linked.starts_with(&group.folded) {
            return Err(Error::Chain {
                path: diffs[0].0.path.clone(),
                detail: format!(
                    "links down to generations {linked:?}, not to {:?} as the prune planned; nothing was changed",
                    group.folded
                ),
            });
        }
        diffs.truncate(1 + group.folded.len());
        let (old_loc, old) = &diffs[0];
        let oldest = diffs
            .last()
            .map(|(_, d)| *d.header())
            .unwrap_or(*old.header());
        let header = DiffHeader {
            parent: oldest.parent,
            folded_parent: if oldest.parent == [0; 32] {
                0
            } else {
                oldest.parent_generation().unwrap_or(0)
            },
            ..*old.header()
        };
        if header.parent_generation() != group.parent {
            return Err(Error::Chain {
                path: diffs
                    .last()
                    .map_or(old_loc.path.clone(), |(l, _)| l.path.clone()),
                detail: format!(
                    "links to generation {:?}, not {:?} as the prune planned; nothing was changed",
                    header.parent_generation(),
                    group.parent
                ),
            });
        }
        let fingerprint = old.summary().fingerprint;
        let hasher =
            HashFn::with_key(parts.hash, parts.hash_key.as_ref()).ok_or_else(|| Error::Chain {
                path: old_loc.path.clone(),
                detail: format!("holds {} hashes, which need the chain's key", parts.hash),
            })?;
        let locations = diffs.iter().map(|(l, _)| l.clone()).collect();
        let reader = GenerationReader::from_parts(parts, cache_bytes)?;
        Ok(PreparedFold {
            group: group.clone(),
            reader,
            header,
            fingerprint,
            hasher,
            diffs: locations,
        })
    }

    /// The fold.
    pub fn group(&self) -> &FoldGroup {
        &self.group
    }

    /// The diffs read: the kept generation's first, then the folded
    /// generations', newest first.
    pub fn diffs(&self) -> &[DiffLocation] {
        &self.diffs
    }

    /// The new diff's header: the kept generation's, with the parent of
    /// the oldest generation folded.
    pub fn header(&self) -> &DiffHeader {
        &self.header
    }

    /// Writes the new diff (its plaintext: the store seals it when the
    /// chain is encrypted) to `out`, named `path` in messages; returns
    /// `out` and what it holds. Every block is checked against the kept
    /// generation's digest as it is read.
    pub fn write<W: Write>(
        &self,
        out: W,
        path: &Path,
        progress: &mut dyn Progress,
    ) -> Result<(W, FoldedStats)> {
        write_folded(
            &self.reader,
            self.header,
            self.fingerprint,
            path,
            out,
            progress,
        )
    }

    /// Checks the new diff as written (`written`, its plaintext, named
    /// `path`): the header written, exactly the blocks of the generations
    /// folded and the kept one, each hashing to `digest` (the kept
    /// generation's digest, opened).
    pub fn check(
        &self,
        written: Box<dyn ReadAt + Send + Sync>,
        path: &Path,
        digest: &mut DigestFile,
    ) -> Result<()> {
        check_folded(
            written,
            path,
            &self.reader,
            &self.header,
            self.fingerprint,
            digest,
            &self.hasher,
        )
    }
}

/// The refusal of a legacy chain.
pub(crate) fn legacy_refusal(source: &dyn GenerationSource) -> Error {
    Error::InvalidOption(format!(
        "{}: a chain in the original blockdiff's format cannot be folded (its generations have no parent links, so none can be removed without rewriting every later one); keep it whole, or start a v2 chain (blockdiff-backup --format v2 NAME2 …) and prune whole chains with --keep",
        source.name().display()
    ))
}
