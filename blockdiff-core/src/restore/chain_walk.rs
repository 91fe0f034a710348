//! Which diffs make up generation K: found by walking from K's diff to its
//! parent's, and on to a base (FORMAT.md §7.1). A backup's parent is
//! generation K − 1; a generation into which a prune folded older ones
//! names its parent in its header, and a folded base names none. A legacy
//! chain has no gaps: K, K − 1, … 1.

use archive_format::{DiffFile, DiffHeader, Limits, V2_HEADER_LEN, fill_at};

use crate::error::ArchiveContext;
use crate::generation_source::{DiffBytes, GenerationSource};
use crate::store::{DiffFormat, DiffLocation};
use crate::{Error, Result};

use super::plan::{Chain, chain_error};

/// The diffs of generation `generation`'s chain, newest first, opened
/// (v2: header, index and footer checked). Every diff of a v2 chain says
/// the generation it is stored as; a chain that mixes legacy and v2 diffs,
/// or whose links do not go down to a base, is refused.
pub(crate) fn walk_chain(store: &dyn GenerationSource, generation: u64) -> Result<Chain> {
    let mut legacy = Vec::new();
    let mut v2 = Vec::new();
    let mut g = generation;
    let newest_format = loop {
        let diff = find_needed(store, g, generation)?;
        let bytes = store.open_diff(&diff)?;
        let family = diff.format.digest_format();
        if let Some(first) = legacy
            .first()
            .map(|(l, _): &(DiffLocation, DiffBytes)| l)
            .or(v2.first().map(|(l, _): &(DiffLocation, _)| l))
            && first.format.digest_format() != family
        {
            return Err(chain_error(
                &diff.path,
                format!(
                    "is {} but generation {generation} ({}) is {}: a chain keeps one format (is one of them damaged or cut short?)",
                    diff.format,
                    first.path.display(),
                    first.format
                ),
            ));
        }
        let parent = match diff.format {
            DiffFormat::V2 { .. } => {
                let file = DiffFile::open(bytes).in_file(&diff.path)?;
                let header = *file.header();
                if header.generation != g {
                    return Err(chain_error(
                        &diff.path,
                        format!("says it is generation {}, not {g}", header.generation),
                    ));
                }
                v2.push((diff, file));
                header.parent_generation()
            }
            DiffFormat::Legacy(_) => {
                legacy.push((diff, bytes));
                g.checked_sub(1).filter(|&p| p > 0)
            }
        };
        match parent {
            None => break family,
            Some(0) => {
                let (loc, _) = v2.last().expect("a v2 diff was just pushed");
                return Err(chain_error(
                    &loc.path,
                    "is generation 1 but names a parent: it belongs to another chain".into(),
                ));
            }
            Some(p) => g = p,
        }
    };
    Ok(match newest_format {
        archive_format::DigestFormat::Legacy => Chain::Legacy(legacy),
        archive_format::DigestFormat::V2 => Chain::V2(v2),
    })
}

/// Generation `g`'s diff, which restoring `generation` needs.
fn find_needed(store: &dyn GenerationSource, g: u64, generation: u64) -> Result<DiffLocation> {
    store.find_diff(g).map_err(|e| match e {
        Error::MissingGeneration {
            path,
            generation: missing,
            ..
        } => Error::MissingGeneration {
            path,
            generation: missing,
            reason: if missing == generation {
                "its diff is missing".into()
            } else {
                format!("restoring generation {generation} needs it (its diffs link down to it)")
            },
        },
        other => other,
    })
}

/// The header of a v2 diff: its first bytes only.
fn read_header(diff: &DiffLocation, bytes: &DiffBytes) -> Result<DiffHeader> {
    let mut head = [0u8; V2_HEADER_LEN];
    fill_at(bytes.as_ref(), &mut head, 0).map_err(|source| Error::Io {
        path: diff.path.clone(),
        op: "read",
        source,
    })?;
    DiffHeader::decode(&head, &Limits::default()).in_file(&diff.path)
}

/// The generations in the chain of generation `newest` (the last
/// committed one when `None`), newest first: those a restore can read.
/// A backup adds one at the end; a prune folds some away, and the
/// numbers of the others stay. Only each diff's header is read.
///
/// ```
/// use blockdiff_core::{BackupOptions, DumpSource, GenerationStore, NoProgress, backup, chain_generations};
///
/// let dir = tempfile::tempdir()?;
/// let store = GenerationStore::new(dir.path().join("db"));
/// for byte in 1..=3u8 {
///     backup(&store, DumpSource::from_bytes(&[byte; 10_000], "image"), &BackupOptions::default(), &mut NoProgress)?;
/// }
/// assert_eq!(chain_generations(&store, None)?, [3, 2, 1]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn chain_generations(store: &dyn GenerationSource, newest: Option<u64>) -> Result<Vec<u64>> {
    Ok(chain_headers(store, newest)?
        .into_iter()
        .map(|(g, _)| g)
        .collect())
}

/// The generations in the chain of generation `newest` (the last committed
/// one when `None`), newest first, each with its v2 header (`None` for a
/// legacy diff).
pub(crate) fn chain_headers(
    store: &dyn GenerationSource,
    newest: Option<u64>,
) -> Result<Vec<(u64, Option<DiffHeader>)>> {
    let newest = match newest {
        Some(g) => g,
        None => match store.current_generation()? {
            Some(g) if g > 0 => g,
            _ => return Ok(Vec::new()),
        },
    };
    let mut found = Vec::new();
    let mut g = newest;
    loop {
        let diff = find_needed(store, g, newest)?;
        let parent = match diff.format {
            DiffFormat::V2 { .. } => {
                let bytes = store.open_diff(&diff)?;
                let header = read_header(&diff, &bytes)?;
                if header.generation != g {
                    return Err(chain_error(
                        &diff.path,
                        format!("says it is generation {}, not {g}", header.generation),
                    ));
                }
                found.push((g, Some(header)));
                header.parent_generation()
            }
            DiffFormat::Legacy(_) => {
                found.push((g, None));
                g.checked_sub(1).filter(|&p| p > 0)
            }
        };
        match parent {
            None => return Ok(found),
            Some(0) => {
                return Err(chain_error(
                    &diff.path,
                    "is generation 1 but names a parent: it belongs to another chain".into(),
                ));
            }
            Some(p) => g = p,
        }
    }
}
