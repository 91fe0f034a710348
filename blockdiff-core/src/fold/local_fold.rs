//! A fold on a local store, crash-safe: the new diff is written beside the
//! old one and checked, an intent naming the fold is made durable, the new
//! diff replaces the old one in one rename (the switch), and only then are
//! the folded generations' files removed. What a killed fold leaves, the
//! next prune or backup finishes (the switch happened) or undoes (it did
//! not): [`recover_interrupted_fold`].

use std::fs;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use archive_format::{Compression, DigestFormat, SealedContent};
use serde::{Deserialize, Serialize};

use crate::error::IoContext;
use crate::progress::{Notice, Progress};
use crate::restore::chain_generations;
use crate::store::{
    DiffFormat, GenerationStore, open_nofollow, remove_if_present, remove_leftover, sync_dir,
};
use crate::{Error, Result};

use super::{FoldGroup, FoldReport, PreparedFold};

/// The intent `NAME.fold`: which generation is being rewritten and which
/// are folded into it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct FoldIntent {
    /// The generation kept, whose diff is replaced.
    generation: u64,
    /// Its parent after the fold; `None` when it becomes the base.
    parent: Option<u64>,
    /// The generations folded into it, whose files go once it is switched.
    folded: Vec<u64>,
}

/// Most bytes of an intent read (a list of a few thousand generations).
const MAX_INTENT: u64 = 1 << 20;

/// Every file of generation `g` a store may hold.
fn generation_file_names(store: &GenerationStore, g: u64) -> [PathBuf; 5] {
    [
        store.diff_path(g, DiffFormat::Legacy(Compression::None)),
        store.diff_path(g, DiffFormat::Legacy(Compression::Gzip)),
        store.digest_path(g, DigestFormat::V2),
        store.digest_path(g, DigestFormat::Legacy),
        store.metadata_path(g),
    ]
}

/// Removes the folded generations' files (none on the chain that
/// `current` links down to), then the intent.
fn finish(store: &GenerationStore, intent: &FoldIntent, progress: &mut dyn Progress) -> Result<()> {
    let current = store.current_generation()?;
    let held = chain_generations(store, current)?;
    for &g in &intent.folded {
        if held.contains(&g) {
            return Err(Error::Chain {
                path: store.fold_intent_path(),
                detail: format!(
                    "names generation {g} as folded, but the chain still links to it: nothing was removed; look at the chain with blockdiff-info, then remove this file"
                ),
            });
        }
    }
    for &g in &intent.folded {
        for path in generation_file_names(store, g) {
            remove_if_present(&path)?;
        }
    }
    sync_dir(&store.dir())?;
    progress.at_step("fold:removed-folded");
    remove_if_present(&store.fold_intent_path())?;
    sync_dir(&store.dir())?;
    Ok(())
}

/// The `NAME.N.fold.tmp` files in the store's directory.
fn fold_temporaries(store: &GenerationStore) -> Result<Vec<PathBuf>> {
    let dir = store.dir();
    let stem = store
        .name()
        .file_name()
        .unwrap_or_default()
        .as_encoded_bytes();
    let mut found = Vec::new();
    let entries = match fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(found),
        Err(e) => return Err(e).ctx(&dir, "read directory"),
    };
    for entry in entries {
        let entry = entry.ctx(&dir, "read directory")?;
        let name = entry.file_name();
        let Some(rest) = name
            .as_encoded_bytes()
            .strip_prefix(stem)
            .and_then(|r| r.strip_prefix(b"."))
            .and_then(|r| r.strip_suffix(b".fold.tmp"))
        else {
            continue;
        };
        if !rest.is_empty() && rest.iter().all(u8::is_ascii_digit) {
            found.push(dir.join(&name));
        }
    }
    Ok(found)
}

/// Finishes or undoes what a fold killed under the lock left, which the
/// caller holds: with no `NAME.N.fold.tmp` of the intent's generation left,
/// the switch was made and the folded generations' files are removed;
/// otherwise nothing was switched, and the new diff and the intent are
/// removed. Temporaries of a fold killed before its intent are removed.
/// Returns whether an interrupted fold was found.
pub(crate) fn recover_interrupted_fold(
    store: &GenerationStore,
    progress: &mut dyn Progress,
) -> Result<bool> {
    let intent_path = store.fold_intent_path();
    let intent = match open_nofollow(&intent_path) {
        Ok(mut file) => {
            let mut text = Vec::new();
            let regular = file.metadata().ctx(&intent_path, "stat")?.is_file();
            if regular {
                (&mut file)
                    .take(MAX_INTENT)
                    .read_to_end(&mut text)
                    .ctx(&intent_path, "read")?;
            }
            Some(serde_json::from_slice::<FoldIntent>(&text).ok())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        // A symbolic link there vouches for nothing.
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => Some(None),
        Err(e) => return Err(e).ctx(&intent_path, "open"),
    };
    let switched = match &intent {
        Some(Some(i)) => !store.fold_tmp_path(i.generation).exists(),
        _ => false,
    };
    if let Some(Some(i)) = &intent
        && switched
    {
        progress.at_step("fold:recover-finish");
        finish(store, i, progress)?;
        progress.notice(Notice::RemovedLeftover { path: intent_path });
        return Ok(true);
    }
    for tmp in fold_temporaries(store)? {
        remove_leftover(tmp, progress)?;
    }
    if intent.is_some() {
        remove_leftover(intent_path, progress)?;
        sync_dir(&store.dir())?;
    }
    Ok(intent.is_some())
}

/// Removes the new diff (and the intent) of a fold that failed before its
/// switch.
struct Unswitched<'a> {
    store: &'a GenerationStore,
    tmp: PathBuf,
    intent: bool,
    armed: bool,
}

impl Drop for Unswitched<'_> {
    fn drop(&mut self) {
        if self.armed {
            let _ = fs::remove_file(&self.tmp);
            if self.intent {
                let _ = fs::remove_file(self.store.fold_intent_path());
            }
            let _ = sync_dir(&self.store.dir());
        }
    }
}

fn file_size(path: &Path) -> u64 {
    fs::symlink_metadata(path).map_or(0, |m| m.len())
}

/// Folds `group` on `store`, whose lock the caller holds (see
/// [`PreparedFold::new`] for what is checked first).
pub(crate) fn fold_local(
    store: &GenerationStore,
    group: &FoldGroup,
    cache_bytes: usize,
    progress: &mut dyn Progress,
) -> Result<FoldReport> {
    let k = group.into;
    let fold = PreparedFold::new(store, group, cache_bytes)?;
    let old_path = fold.diffs()[0].path.clone();
    let read_bytes: u64 = fold.diffs().iter().map(|l| file_size(&l.path)).sum();
    let old_diff_bytes = file_size(&old_path);
    let folded_bytes: u64 = group
        .folded
        .iter()
        .flat_map(|&g| generation_file_names(store, g))
        .map(|p| file_size(&p))
        .sum();

    let tmp = store.fold_tmp_path(k);
    remove_leftover(tmp.clone(), progress)?;
    let mut guard = Unswitched {
        store,
        tmp: tmp.clone(),
        intent: false,
        armed: true,
    };
    let file = store.create_new(&tmp)?;
    let out = store.output(
        BufWriter::with_capacity(128 << 10, file),
        SealedContent::Diff,
        k,
        &tmp,
    )?;
    let (out, stats) = fold.write(out, &tmp, progress)?;
    let file = out
        .finish()
        .and_then(|w| w.into_inner().map_err(std::io::IntoInnerError::into_error))
        .ctx(&tmp, "write")?;
    file.sync_all().ctx(&tmp, "fsync")?;
    drop(file);
    progress.at_step("fold:synced-diff");

    let mut digest = store.open_digest(k)?;
    fold.check(
        store.open_read_at(&tmp, SealedContent::Diff, k)?,
        &tmp,
        &mut digest,
    )?;
    drop(fold);

    let intent = FoldIntent {
        generation: k,
        parent: group.parent,
        folded: group.folded.clone(),
    };
    write_intent(store, &intent)?;
    guard.intent = true;
    progress.at_step("fold:wrote-intent");

    fs::rename(&tmp, &old_path).ctx(&old_path, "rename the folded diff over")?;
    guard.armed = false;
    progress.at_step("fold:switched");
    sync_dir(&store.dir())?;
    progress.at_step("fold:synced-switch");
    finish(store, &intent, progress)?;
    progress.at_step("fold:done");
    Ok(FoldReport {
        group: group.clone(),
        read_bytes,
        removed_bytes: folded_bytes,
        old_diff_bytes,
        new_diff_bytes: file_size(&old_path),
        blocks: stats.blocks,
        raw_bytes: stats.raw_bytes,
    })
}

/// `NAME.fold`, durable before the switch.
fn write_intent(store: &GenerationStore, intent: &FoldIntent) -> Result<()> {
    let path = store.fold_intent_path();
    remove_if_present(&path)?;
    let mut file = store.create_new(&path)?;
    let text = serde_json::to_vec(intent).map_err(|e| Error::Chain {
        path: path.clone(),
        detail: format!("cannot encode the intent: {e}"),
    })?;
    file.write_all(&text).ctx(&path, "write")?;
    file.sync_all().ctx(&path, "fsync")?;
    sync_dir(&store.dir())
}
