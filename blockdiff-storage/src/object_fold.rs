//! Folding on an object store ([`FoldableChain`] for [`ObjectChain`]):
//! an object store has no rename, so the switch is a copy, made safe by
//! an intent that says how to recognise its result.
//!
//! 1. The new diff of generation K is uploaded as `NAME.K.fold.tmp` (a
//!    multipart upload: it exists whole or not at all) and checked by
//!    ranged reads against K's digest.
//! 2. The intent `NAME.fold` is written: K, its new parent, the
//!    generations folded, and the new diff's size and the BLAKE3 of its
//!    first and last 4 KiB as stored (its header always differs from the
//!    old diff's: its parent changed; a sealed diff's nonces are new).
//! 3. The switch: the temporary is copied to `NAME.K` (again one upload,
//!    completed atomically), then removed.
//! 4. The folded generations' objects are removed, then the intent.
//!
//! A kill anywhere leaves an intent that the next prune or backup reads
//! under the lock: if `NAME.K` is the new diff (or the temporary is gone,
//! which happens only after the copy), the fold is finished; otherwise it
//! is undone (the temporary and the intent removed). Either way every
//! kept generation restores as before.

use std::io::{BufWriter, Read, Write};
use std::path::PathBuf;

use blockdiff_core::{
    Compression, DiffFormat, DigestFormat, Error, FoldGroup, FoldReport, FoldableChain,
    GenerationSource, Notice, PreparedFold, Progress, Result, SealedContent, StoreWriter,
    chain_generations,
};
use serde::{Deserialize, Serialize};

use crate::object_backup::{LockOptions, ObjectLock};
use crate::object_chain::{ObjectChain, core_error};
use crate::{ObjectStorage, ObjectWriter};

/// Bytes at each end of the new diff whose hash the intent records.
const MARK_BYTES: u64 = 4096;
/// Most bytes of an intent read.
const MAX_INTENT: u64 = 1 << 20;

/// The intent `NAME.fold` of a fold on an object store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct ObjectFoldIntent {
    /// The generation kept, whose diff is replaced.
    generation: u64,
    /// Its parent after the fold; `None` when it becomes the base.
    parent: Option<u64>,
    /// The generations folded into it, whose objects go once it is
    /// switched.
    folded: Vec<u64>,
    /// The new diff's size as stored.
    new_size: u64,
    /// BLAKE3 (hex) of the new diff's first and last [`MARK_BYTES`] as
    /// stored.
    new_mark: String,
}

impl ObjectChain {
    /// `NAME.fold`: the intent of a fold in progress.
    pub fn fold_intent_key(&self) -> String {
        self.key(".fold")
    }

    /// `NAME.K.fold.tmp`: the new diff of generation K before the switch.
    pub fn fold_tmp_key(&self, generation: u64) -> String {
        self.key(&format!(".{generation}.fold.tmp"))
    }
}

/// The size and mark of object `key`, `None` if it does not exist.
fn mark(storage: &dyn ObjectStorage, key: &str) -> Result<Option<(u64, String)>> {
    let Some(size) = storage.stat(key).map_err(core_error)? else {
        return Ok(None);
    };
    let mut hasher = blake3::Hasher::new();
    let head = size.min(MARK_BYTES);
    let mut buf = vec![0u8; head as usize];
    storage.read_range(key, 0, &mut buf).map_err(core_error)?;
    hasher.update(&buf);
    let tail_at = size.saturating_sub(MARK_BYTES);
    buf.resize((size - tail_at) as usize, 0);
    storage
        .read_range(key, tail_at, &mut buf)
        .map_err(core_error)?;
    hasher.update(&buf);
    Ok(Some((size, hasher.finalize().to_hex().to_string())))
}

/// Object `from` copied to `to` as one upload: `to` is replaced whole when
/// the upload completes, or not at all.
fn copy_object(storage: &dyn ObjectStorage, from: &str, to: &str) -> Result<u64> {
    let mut reader = storage.reader(from).map_err(core_error)?;
    let mut writer = storage.writer(to).map_err(core_error)?;
    let mut buf = vec![0u8; 8 << 20];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(source) => {
                let _ = writer.abort();
                return Err(Error::Io {
                    path: PathBuf::from(storage.describe(from)),
                    op: "read",
                    source,
                });
            }
        };
        if let Err(source) = writer.write_all(&buf[..n]) {
            let _ = writer.abort();
            return Err(Error::Io {
                path: PathBuf::from(storage.describe(to)),
                op: "upload",
                source,
            });
        }
    }
    writer.finish().map_err(core_error)
}

/// Every object a generation may have, in any format.
fn generation_objects(chain: &ObjectChain, g: u64) -> [String; 5] {
    [
        chain.diff_key(g, DiffFormat::Legacy(Compression::None)),
        chain.diff_key(g, DiffFormat::Legacy(Compression::Gzip)),
        chain.digest_key(g, DigestFormat::V2),
        chain.digest_key(g, DigestFormat::Legacy),
        chain.metadata_key(g),
    ]
}

/// The key of generation `g`'s v2 diff (the only format folded).
fn v2_diff_key(chain: &ObjectChain, g: u64) -> String {
    chain.diff_key(g, DiffFormat::Legacy(Compression::None))
}

/// Removes the folded generations' objects (none that the chain still
/// links to), their cached digests, the temporary, and then the intent.
fn finish(
    chain: &ObjectChain,
    intent: &ObjectFoldIntent,
    progress: &mut dyn Progress,
) -> Result<u64> {
    let storage = chain.storage();
    let held = chain_generations(chain, chain.current_generation()?)?;
    if let Some(g) = intent.folded.iter().find(|g| held.contains(g)) {
        return Err(Error::Chain {
            path: chain.display_of(&chain.fold_intent_key()),
            detail: format!(
                "names generation {g} as folded, but the chain still links to it: nothing was removed; look at the chain with blockdiff-info, then remove this object"
            ),
        });
    }
    let tmp = chain.fold_tmp_key(intent.generation);
    storage.delete(&tmp).map_err(core_error)?;
    chain.forget_object(&tmp);
    progress.at_step("fold:synced-switch");
    let mut removed = 0;
    for &g in &intent.folded {
        for key in generation_objects(chain, g) {
            if let Some(size) = storage.stat(&key).map_err(core_error)? {
                storage.delete(&key).map_err(core_error)?;
                chain.forget_object(&key);
                removed += size;
            }
            let cached = chain.cache().path(&key);
            crate::object_chain::remove_file_if_present(&cached).map_err(|source| Error::Io {
                path: cached,
                op: "remove cached digest",
                source,
            })?;
        }
    }
    progress.at_step("fold:removed-folded");
    storage
        .delete(&chain.fold_intent_key())
        .map_err(core_error)?;
    Ok(removed)
}

/// The `NAME.N.fold.tmp` objects.
fn fold_temporaries(chain: &ObjectChain) -> Result<Vec<String>> {
    let prefix = chain.key(".");
    Ok(chain
        .storage()
        .list(&prefix)
        .map_err(core_error)?
        .into_iter()
        .map(|e| e.key)
        .filter(|k| {
            k.strip_prefix(&prefix)
                .and_then(|r| r.strip_suffix(".fold.tmp"))
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        })
        .collect())
}

/// Finishes or undoes what a fold killed under the lock left (the caller
/// holds it); see the module's overview. Returns whether an interrupted
/// fold was found.
pub(crate) fn recover_interrupted_fold(
    chain: &ObjectChain,
    progress: &mut dyn Progress,
) -> Result<bool> {
    let storage = chain.storage();
    let intent_key = chain.fold_intent_key();
    let raw = storage
        .read_small(&intent_key, MAX_INTENT)
        .map_err(core_error)?;
    let intent = raw
        .as_ref()
        .map(|text| serde_json::from_slice::<ObjectFoldIntent>(text).ok());
    if let Some(Some(i)) = &intent {
        let tmp = chain.fold_tmp_key(i.generation);
        let switched = storage.stat(&tmp).map_err(core_error)?.is_none()
            || mark(storage.as_ref(), &v2_diff_key(chain, i.generation))?
                == Some((i.new_size, i.new_mark.clone()));
        if switched {
            progress.at_step("fold:recover-finish");
            chain.forget_object(&v2_diff_key(chain, i.generation));
            finish(chain, i, progress)?;
            progress.notice(Notice::RemovedLeftover {
                path: chain.display_of(&intent_key),
            });
            return Ok(true);
        }
    }
    // Not switched, or an intent that vouches for nothing: undone, the
    // intent first (a temporary without an intent is never taken for a
    // switched fold).
    if intent.is_some() {
        storage.delete(&intent_key).map_err(core_error)?;
        progress.notice(Notice::RemovedLeftover {
            path: chain.display_of(&intent_key),
        });
    }
    for tmp in fold_temporaries(chain)? {
        storage.delete(&tmp).map_err(core_error)?;
        chain.forget_object(&tmp);
        progress.notice(Notice::RemovedLeftover {
            path: chain.display_of(&tmp),
        });
    }
    Ok(intent.is_some())
}

/// Removes the temporary (and the intent, first) of a fold that failed
/// before its switch.
struct Unswitched<'a> {
    chain: &'a ObjectChain,
    tmp: String,
    intent: bool,
    armed: bool,
}

impl Drop for Unswitched<'_> {
    fn drop(&mut self) {
        if self.armed {
            if self.intent {
                let _ = self.chain.storage().delete(&self.chain.fold_intent_key());
            }
            let _ = self.chain.storage().delete(&self.tmp);
            self.chain.forget_object(&self.tmp);
        }
    }
}

/// Folds `group` on `chain`, whose lock the caller holds.
fn fold_objects(
    chain: &ObjectChain,
    group: &FoldGroup,
    cache_bytes: usize,
    progress: &mut dyn Progress,
) -> Result<FoldReport> {
    let storage = chain.storage();
    let k = group.into;
    let fold = PreparedFold::new(chain, group, cache_bytes)?;
    let diff_key = v2_diff_key(chain, k);
    let size_of =
        |key: &str| -> Result<u64> { Ok(storage.stat(key).map_err(core_error)?.unwrap_or(0)) };
    let mut read_bytes = 0;
    for l in fold.diffs() {
        read_bytes += size_of(&v2_diff_key(chain, l.generation))?;
    }
    let old_diff_bytes = size_of(&diff_key)?;

    let tmp = chain.fold_tmp_key(k);
    let tmp_path = chain.display_of(&tmp);
    storage.delete(&tmp).map_err(core_error)?;
    chain.forget_object(&tmp);
    let mut guard = Unswitched {
        chain,
        tmp: tmp.clone(),
        intent: false,
        armed: true,
    };
    let upload = storage.writer(&tmp).map_err(core_error)?;
    let out = StoreWriter::new(
        chain.encryption(),
        BufWriter::with_capacity(1 << 20, upload),
        SealedContent::Diff,
        k,
        &tmp_path,
    )?;
    let (out, stats) = fold.write(out, &tmp_path, progress)?;
    let upload: Box<dyn ObjectWriter> = out
        .finish()
        .and_then(|w| w.into_inner().map_err(std::io::IntoInnerError::into_error))
        .map_err(|source| Error::Io {
            path: tmp_path.clone(),
            op: "upload",
            source,
        })?;
    upload.finish().map_err(core_error)?;
    progress.at_step("fold:synced-diff");

    let mut digest = chain.open_digest(k)?;
    fold.check(
        chain.open_object(&tmp, SealedContent::Diff, k)?,
        &tmp_path,
        &mut digest,
    )?;
    drop(fold);

    let (new_size, new_mark) =
        mark(storage.as_ref(), &tmp)?.ok_or_else(|| Error::MissingGeneration {
            path: tmp_path.clone(),
            generation: k,
            reason: "the folded diff just uploaded disappeared".into(),
        })?;
    let intent = ObjectFoldIntent {
        generation: k,
        parent: group.parent,
        folded: group.folded.clone(),
        new_size,
        new_mark,
    };
    let text = serde_json::to_vec(&intent).map_err(|e| Error::Chain {
        path: chain.display_of(&chain.fold_intent_key()),
        detail: format!("cannot encode the intent: {e}"),
    })?;
    storage
        .put(&chain.fold_intent_key(), &text)
        .map_err(core_error)?;
    guard.intent = true;
    progress.at_step("fold:wrote-intent");

    // From here on the fold is finished, by this run or the next one.
    guard.armed = false;
    let copied = copy_object(storage.as_ref(), &tmp, &diff_key);
    chain.forget_object(&diff_key);
    // On an error NAME.K is whole, old or new: the next run tells which.
    copied?;
    progress.at_step("fold:switched");
    let removed_bytes = finish(chain, &intent, progress)?;
    progress.at_step("fold:done");
    Ok(FoldReport {
        group: group.clone(),
        read_bytes,
        old_diff_bytes,
        new_diff_bytes: new_size,
        removed_bytes,
        blocks: stats.blocks,
        raw_bytes: stats.raw_bytes,
    })
}

impl FoldableChain for ObjectChain {
    fn lock_for_fold(&self, wait: bool) -> Result<Box<dyn Send + '_>> {
        Ok(Box::new(ObjectLock::take(
            self,
            &LockOptions {
                break_lock: false,
                wait,
            },
        )?))
    }

    fn recover_interrupted_fold(&self, progress: &mut dyn Progress) -> Result<bool> {
        recover_interrupted_fold(self, progress)
    }

    fn fold(
        &self,
        group: &FoldGroup,
        cache_bytes: usize,
        progress: &mut dyn Progress,
    ) -> Result<FoldReport> {
        fold_objects(self, group, cache_bytes, progress)
    }
}
