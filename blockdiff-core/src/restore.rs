//! Restore: replay a chain of generations onto a file or block device,
//! writing every block once, and check it against the digest.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::{FileExt, FileTypeExt};
use std::path::{Path, PathBuf};

use archive_format::{
    Compression, DIFF_MAGIC, DiffFile, ExtentKind, Frame, FrameDecompressor, HashAlgorithm,
    LegacyReader, SkipRead, StreamReader, data_len, read_full,
};

use crate::block::{BlockHasher, BlockSize, is_zero};
use crate::digest::{DigestFile, DigestFormat};
use crate::error::{ArchiveContext, IoContext};
use crate::progress::Progress;
use crate::store::{DiffFormat, DiffLocation, GenerationStore};
use crate::{Error, Result};

/// How a chain is restored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreOptions {
    /// The generation to restore; `None` for the last committed one.
    pub generation: Option<u64>,
    /// Check every block against the generation's digest (on by default).
    /// Without it a truncated or corrupt legacy diff goes unnoticed.
    pub verify: bool,
}

impl Default for RestoreOptions {
    fn default() -> Self {
        RestoreOptions {
            generation: None,
            verify: true,
        }
    }
}

/// What a restore (or a verification) did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RestoreReport {
    /// The generation restored (0 for a single stream).
    pub generation: u64,
    /// Size of the restored image in bytes.
    pub source_size: u64,
    /// Blocks written (or left as holes).
    pub blocks: u64,
    /// Bytes written to the target.
    pub bytes_written: u64,
    /// All-zero blocks left as holes in a sparse target file.
    pub holes: u64,
    /// Whether every block was checked against the digest.
    pub verified: bool,
    /// v2 frames read and checked.
    pub frames_read: u64,
    /// v2 frames not needed, so not read.
    pub frames_skipped: u64,
}

/// The generations of a chain, newest first.
#[derive(Debug)]
enum Chain {
    Legacy(Vec<DiffLocation>),
    V2(Vec<(DiffLocation, DiffFile<File>)>),
}

/// A validated plan to restore one generation: the chain K..1 newest first,
/// its block size, and the digest of K.
///
/// Executing it reads generation K, then K-1, … 1, and writes each block
/// only from the newest generation that has it: restoring generation 30
/// writes as much as restoring generation 1. Legacy diffs are read record by
/// record, seeking past blocks a newer generation provided; v2 diffs are
/// read through their index, and a frame none of whose blocks is needed is
/// not read at all. A v2 chain whose fingerprints do not link is refused
/// before anything is written.
///
/// ```
/// use blockdiff_core::{BackupOptions, DumpSource, GenerationStore, NoProgress, RestoreOptions, RestorePlan, backup};
///
/// let dir = tempfile::tempdir()?;
/// let store = GenerationStore::new(dir.path().join("db"));
/// let mut image = vec![1u8; 50_000];
/// backup(&store, DumpSource::from_bytes(&image, "image"), &BackupOptions::default(), &mut NoProgress)?;
/// image[20_000] = 2;
/// backup(&store, DumpSource::from_bytes(&image, "image"), &BackupOptions::default(), &mut NoProgress)?;
///
/// let plan = RestorePlan::new(&store, &RestoreOptions::default())?;
/// assert_eq!(plan.generation(), 2);
/// let target = dir.path().join("restored.img");
/// let report = plan.execute(&target, &mut NoProgress)?;
/// assert_eq!(report.source_size, 50_000);
/// assert_eq!(std::fs::read(&target)?, image);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct RestorePlan {
    generation: u64,
    chain: Chain,
    block_size: BlockSize,
    hash: HashAlgorithm,
    /// Exact source size, when the chain says (v2).
    source_size: Option<u64>,
    digest: Option<DigestFile>,
}

fn open_legacy(diff: &DiffLocation) -> Result<LegacyReader<Box<dyn SkipRead + Send>>> {
    let file = File::open(&diff.path).ctx(&diff.path, "open")?;
    let compression = match diff.format {
        DiffFormat::Legacy(c) => c,
        DiffFormat::V2 { .. } => Compression::None,
    };
    LegacyReader::new(compression.reader(file)).in_file(&diff.path)
}

fn chain_error(path: &Path, detail: String) -> Error {
    Error::Chain {
        path: path.to_owned(),
        detail,
    }
}

impl RestorePlan {
    /// Checks that generations 1..=K and the digest of K exist and agree,
    /// before anything is written.
    pub fn new(store: &GenerationStore, options: &RestoreOptions) -> Result<Self> {
        let ver = store.ver_path();
        let current = store
            .current_generation()?
            .ok_or_else(|| Error::MissingGeneration {
                path: ver.clone(),
                generation: options.generation.unwrap_or(1),
                reason: "there is no backup under this name (no .ver file)".into(),
            })?;
        let generation = options.generation.unwrap_or(current);
        if generation == 0 || generation > current {
            return Err(Error::MissingGeneration {
                path: store.diff_path(generation, DiffFormat::Legacy(Compression::None)),
                generation,
                reason: format!("it is not committed: {} says {current}", ver.display()),
            });
        }
        let mut diffs = Vec::new();
        for g in (1..=generation).rev() {
            let diff = store.find_diff(g).map_err(|e| match e {
                Error::MissingGeneration { path, generation: missing, .. } => Error::MissingGeneration {
                    path,
                    generation: missing,
                    reason: format!("restoring generation {generation} needs every generation from 1 to {generation}"),
                },
                other => other,
            })?;
            diffs.push(diff);
        }
        let newest_format = diffs[0].format.digest_format();
        if let Some(other) = diffs
            .iter()
            .find(|d| d.format.digest_format() != newest_format)
        {
            return Err(chain_error(
                &other.path,
                format!(
                    "is {} but generation {generation} ({}) is {}: a chain keeps one format (is one of them damaged or cut short?)",
                    other.format,
                    diffs[0].path.display(),
                    diffs[0].format
                ),
            ));
        }
        let digest = if options.verify {
            let (path, _) = store.find_digest(generation).map_err(|e| match e {
                Error::MissingGeneration { path, .. } => Error::MissingGeneration {
                    path,
                    generation,
                    reason:
                        "its digest checks the restore (restore without checking with --no-verify)"
                            .into(),
                },
                other => other,
            })?;
            Some(DigestFile::open(&path)?)
        } else {
            None
        };
        let mut plan = match newest_format {
            DigestFormat::Legacy => Self::legacy_chain(generation, diffs, digest)?,
            DigestFormat::V2 => Self::v2_chain(generation, diffs, digest)?,
        };
        if let Some(d) = &plan.digest
            && d.spec().format != newest_format
        {
            return Err(chain_error(
                d.path(),
                format!(
                    "is a {:?} digest but the chain is {:?}",
                    d.spec().format,
                    newest_format
                ),
            ));
        }
        plan.hash = plan
            .digest
            .as_ref()
            .map_or(plan.hash, |d| d.spec().algorithm);
        Ok(plan)
    }

    fn legacy_chain(
        generation: u64,
        diffs: Vec<DiffLocation>,
        digest: Option<DigestFile>,
    ) -> Result<Self> {
        let mut block_size = digest.as_ref().map(|d| d.block_size());
        for diff in &diffs {
            let bs = BlockSize::new(open_legacy(diff)?.block_size())?;
            match block_size {
                None => block_size = Some(bs),
                Some(expected) if expected != bs => {
                    return Err(chain_error(
                        &diff.path,
                        format!(
                            "block size is {bs} but the chain up to generation {generation} uses {expected}; a chain keeps one block size"
                        ),
                    ));
                }
                Some(_) => {}
            }
        }
        Ok(RestorePlan {
            generation,
            chain: Chain::Legacy(diffs),
            block_size: block_size.unwrap_or_default(),
            hash: HashAlgorithm::Md5,
            source_size: None,
            digest,
        })
    }

    fn v2_chain(
        generation: u64,
        diffs: Vec<DiffLocation>,
        digest: Option<DigestFile>,
    ) -> Result<Self> {
        let mut chain = Vec::with_capacity(diffs.len());
        for (loc, g) in diffs.into_iter().zip((1..=generation).rev()) {
            let file = File::open(&loc.path).ctx(&loc.path, "open")?;
            let diff = DiffFile::open(file).in_file(&loc.path)?;
            if diff.header().generation != g {
                return Err(chain_error(
                    &loc.path,
                    format!(
                        "says it is generation {}, not {g}",
                        diff.header().generation
                    ),
                ));
            }
            chain.push((loc, diff));
        }
        let (newest_loc, newest) = &chain[0];
        let (bs, hash) = (newest.header().block_size, newest.header().hash);
        for (i, (loc, diff)) in chain.iter().enumerate() {
            let h = diff.header();
            if h.block_size != bs || h.hash != hash {
                return Err(chain_error(
                    &loc.path,
                    format!(
                        "uses block size {} and {}, but generation {generation} uses {bs} and {hash}: a chain keeps one block size and hash",
                        h.block_size, h.hash
                    ),
                ));
            }
            // The parent of generation g is generation g-1, next in the list.
            let parent = chain
                .get(i + 1)
                .map_or([0; 32], |(_, p)| p.summary().fingerprint);
            if h.parent != parent {
                return Err(chain_error(
                    &loc.path,
                    format!(
                        "its parent fingerprint does not match generation {}'s digest: it belongs to another chain",
                        h.generation.saturating_sub(1)
                    ),
                ));
            }
        }
        let source_size = newest.summary().source_size;
        if let Some(d) = &digest {
            if d.spec().algorithm != hash {
                return Err(chain_error(
                    d.path(),
                    format!(
                        "holds {} hashes but {} says {hash}",
                        d.spec().algorithm,
                        newest_loc.path.display()
                    ),
                ));
            }
            if d.fingerprint() != Some(newest.summary().fingerprint) {
                return Err(chain_error(
                    d.path(),
                    format!(
                        "fingerprint does not match {}: the digest and diff are of different runs",
                        newest_loc.path.display()
                    ),
                ));
            }
            if d.source_size() != Some(source_size) {
                return Err(chain_error(
                    d.path(),
                    format!(
                        "describes another source size than {}",
                        newest_loc.path.display()
                    ),
                ));
            }
        }
        Ok(RestorePlan {
            generation,
            chain: Chain::V2(chain),
            block_size: BlockSize::new(bs)?,
            hash,
            source_size: Some(source_size),
            digest,
        })
    }

    /// The generation this plan restores.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The chain's block size.
    pub fn block_size(&self) -> BlockSize {
        self.block_size
    }

    /// The number of blocks of the restored image, when known before
    /// reading the chain (a v2 chain, or with the digest).
    pub fn block_count(&self) -> Option<u64> {
        match (self.source_size, &self.digest) {
            (Some(size), _) => Some(self.block_size.blocks_in(size)),
            (None, Some(d)) => Some(d.entries()),
            (None, None) => None,
        }
    }

    /// Writes the image to `target`.
    ///
    /// A regular file is written as a new sparse file beside it and renamed
    /// over it at the end, so a failed restore leaves an existing file
    /// untouched. A block device is written in place, never past its end.
    pub fn execute(mut self, target: &Path, progress: &mut dyn Progress) -> Result<RestoreReport> {
        let mut out = Target::open(target, true)?;
        if let (Some(n), Some(size)) = (self.block_count(), out.device_size) {
            let need = self.source_size.unwrap_or(if n == 0 {
                0
            } else {
                self.block_size.offset_of(n - 1) + 1
            });
            if size < need {
                return Err(Error::TargetTooSmall {
                    path: target.to_owned(),
                    need,
                    have: size,
                });
            }
        }
        let report = self.replay(&mut out, false, progress)?;
        out.finish(report.source_size)?;
        Ok(report)
    }

    /// Checks the chain without writing anything: every frame CRC and
    /// trailer of every generation (all frames, needed or not), the digest's
    /// fingerprint, and that the replayed content hashes to the digest of
    /// generation K.
    pub fn verify(mut self, progress: &mut dyn Progress) -> Result<RestoreReport> {
        let Some(digest) = &self.digest else {
            return Err(Error::InvalidOption(
                "verification needs the digest of the generation".into(),
            ));
        };
        digest.verify()?;
        self.replay(&mut Target::discard(), true, progress)
    }

    /// Replays the chain newest first into `out`. With `check_all`, every
    /// block of every generation is read and checked, needed or not.
    fn replay(
        &mut self,
        out: &mut Target,
        check_all: bool,
        progress: &mut dyn Progress,
    ) -> Result<RestoreReport> {
        let block_count = self.block_count();
        let mut written = BlockSet::new(block_count);
        let mut report = RestoreReport {
            generation: self.generation,
            verified: self.digest.is_some(),
            ..RestoreReport::default()
        };
        let zero_hash = BlockHasher::new(self.hash, self.block_size);
        let mut checker = BlockChecker {
            digest: self.digest.as_mut(),
            hasher: &zero_hash,
        };
        let mut end = 0u64;
        match &self.chain {
            Chain::Legacy(diffs) => {
                let bs = self.block_size;
                let mut buf = Vec::with_capacity(bs.bytes());
                for diff in diffs {
                    let mut reader = open_legacy(diff)?;
                    while let Some(rec) = reader.next_record().in_file(&diff.path)? {
                        let index = rec.block_offset / u64::from(bs.get());
                        let beyond = block_count.is_some_and(|n| index >= n);
                        if (beyond || written.contains(index)) && !check_all {
                            // A newer generation has it, or the source shrank.
                            reader.skip_data().in_file(&diff.path)?;
                            continue;
                        }
                        let len = reader.read_data(&mut buf).in_file(&diff.path)?;
                        if beyond || written.contains(index) {
                            continue;
                        }
                        if let Some(n) = block_count
                            && len < bs.bytes()
                            && index + 1 != n
                        {
                            return Err(chain_error(
                                &diff.path,
                                format!(
                                    "record at stream offset {}: short block at offset {} is not the source's last block",
                                    rec.stream_offset, rec.block_offset
                                ),
                            ));
                        }
                        checker.check(index, &buf, &diff.path, rec.stream_offset)?;
                        out.put(rec.block_offset, &buf, &mut report)?;
                        written.insert(index);
                        end = end.max(rec.block_offset + len as u64);
                        progress.advance(len as u64);
                    }
                }
            }
            Chain::V2(diffs) => {
                let n = block_count.unwrap_or(0);
                let bs = self.block_size;
                let zero_block = vec![0u8; bs.bytes()];
                let mut frame = Frame::default();
                let mut decompressor = FrameDecompressor::default();
                for (loc, diff) in diffs {
                    let size = diff.summary().source_size;
                    for i in 0..diff.frames().len() {
                        let needed = diff.frame_extents(i).iter().any(|e| {
                            (e.first_block..e.end_block().min(n)).any(|b| !written.contains(b))
                        });
                        if !needed && !check_all {
                            report.frames_skipped += 1;
                            continue;
                        }
                        diff.read_frame(i, &mut frame, &mut decompressor)
                            .in_file(&loc.path)?;
                        report.frames_read += 1;
                        let stream_offset = diff.frames()[i].offset;
                        let mut at = 0usize;
                        for e in &frame.extents {
                            for b in e.first_block..e.end_block() {
                                let len = data_len(b, 1, bs.get(), size) as usize;
                                let data: &[u8] = match e.kind {
                                    ExtentKind::Data => {
                                        at += len;
                                        &frame.payload[at - len..at]
                                    }
                                    ExtentKind::Zero => &zero_block[..len],
                                };
                                if b >= n || written.contains(b) {
                                    continue;
                                }
                                checker.check(b, data, &loc.path, stream_offset)?;
                                let offset = bs.offset_of(b);
                                out.put(offset, data, &mut report)?;
                                written.insert(b);
                                end = end.max(offset + len as u64);
                                progress.advance(len as u64);
                            }
                        }
                    }
                }
            }
        }
        if let Some(n) = block_count
            && (self.digest.is_some() || self.source_size.is_some())
        {
            let (count, first) = written.missing_below(n);
            if count > 0 {
                let path = match (&self.digest, &self.chain) {
                    (Some(d), _) => d.path().to_owned(),
                    (None, Chain::V2(diffs)) => diffs[0].0.path.clone(),
                    (None, Chain::Legacy(diffs)) => diffs[0].path.clone(),
                };
                return Err(Error::MissingBlocks {
                    digest: path,
                    count,
                    first_offset: self.block_size.offset_of(first),
                });
            }
        }
        report.source_size = self.source_size.unwrap_or(end);
        Ok(report)
    }
}

/// Checks restored blocks against the digest of the generation restored.
struct BlockChecker<'a> {
    digest: Option<&'a mut DigestFile>,
    hasher: &'a BlockHasher,
}

impl BlockChecker<'_> {
    fn check(&mut self, index: u64, data: &[u8], from: &Path, stream_offset: u64) -> Result<()> {
        let Some(digest) = self.digest.as_deref_mut() else {
            return Ok(());
        };
        if digest.entry(index)? != Some(self.hasher.hash(data).0) {
            return Err(Error::Mismatch {
                path: from.to_owned(),
                block_offset: index * u64::from(digest.block_size().get()),
                stream_offset,
                digest: digest.path().to_owned(),
            });
        }
        Ok(())
    }
}

/// Applies one diff stream to `target` in place, as the original
/// `blockdiff_merge` did: every block is written where it belongs. The
/// stream's kind is recognised from its first bytes: a legacy stream, plain
/// or gzip-compressed, or a v2 diff (whose frames are CRC-checked before
/// they are written, and whose index gives the exact source size).
///
/// When a legacy stream ends with a short block, that block's end is the
/// source's end and a regular file target is cut there. Nothing in a legacy
/// stream reveals a stream truncated at a record boundary; restore from a
/// store ([`RestorePlan`]) checks against the digest instead.
pub fn apply_stream<R: Read + Send>(
    mut input: R,
    input_name: &Path,
    target: &Path,
    progress: &mut dyn Progress,
) -> Result<RestoreReport> {
    let mut head = [0u8; 8];
    let got = read_full(&mut input, &mut head).ctx(input_name, "read")?;
    let whole = io::Cursor::new(head[..got].to_vec()).chain(input);
    let mut out = Target::open(target, false)?;
    let mut report = RestoreReport::default();
    if head[..got] == DIFF_MAGIC {
        let mut reader = StreamReader::new(whole).in_file(input_name)?;
        let (bs, header_size) = (reader.header().block_size, reader.header().source_size);
        let zero_block = vec![0u8; bs as usize];
        let mut frame = Frame::default();
        let mut last_end = 0u64;
        while reader.next_frame(&mut frame).in_file(input_name)? {
            let mut at = 0usize;
            for e in &frame.extents {
                for b in e.first_block..e.end_block() {
                    let full = data_len(b, 1, bs, header_size) as usize;
                    let offset = b * u64::from(bs);
                    let data = match e.kind {
                        // A short last block of a source of unknown size
                        // takes what is left of the payload.
                        ExtentKind::Data => {
                            let len = full.min(frame.payload.len() - at);
                            at += len;
                            &frame.payload[at - len..at]
                        }
                        ExtentKind::Zero => &zero_block[..full.min(bs as usize)],
                    };
                    out.put(offset, data, &mut report)?;
                    last_end = last_end.max(offset + data.len() as u64);
                    progress.advance(data.len() as u64);
                }
            }
        }
        let size = reader.summary().map_or(last_end, |s| s.source_size);
        report.source_size = size;
        out.finish(size)?;
        return Ok(report);
    }
    let compression = Compression::detect(&head[..got]);
    let mut reader = LegacyReader::new(compression.reader(whole)).in_file(input_name)?;
    let bs = reader.block_size() as usize;
    let mut buf = Vec::with_capacity(bs);
    let mut short_end = None;
    while let Some(rec) = reader.read_record(&mut buf).in_file(input_name)? {
        out.put(rec.block_offset, &buf, &mut report)?;
        report.source_size = report.source_size.max(rec.block_offset + buf.len() as u64);
        if buf.len() < bs {
            short_end = Some(rec.block_offset + buf.len() as u64);
        }
        progress.advance(buf.len() as u64);
    }
    let current = out.current_len()?;
    let end = short_end.unwrap_or(current.max(report.source_size));
    report.source_size = end;
    out.finish(end)?;
    Ok(report)
}

/// The file or device a restore writes to (or nothing, to verify).
struct Target {
    file: Option<File>,
    path: PathBuf,
    /// For a fresh file: the temporary name, renamed over `path` at the end.
    tmp: Option<PathBuf>,
    /// For a block device: its size.
    device_size: Option<u64>,
    finished: bool,
}

impl Target {
    /// Opens `path`. With `fresh`, a regular file is written anew beside it
    /// (all-zero blocks become holes); without, it is updated in place.
    fn open(path: &Path, fresh: bool) -> Result<Target> {
        let meta = match fs::metadata(path) {
            Ok(m) => Some(m),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e).ctx(path, "stat"),
        };
        if let Some(m) = &meta
            && m.file_type().is_block_device()
        {
            let mut file = OpenOptions::new()
                .write(true)
                .open(path)
                .ctx(path, "open device")?;
            let size = file.seek(SeekFrom::End(0)).ctx(path, "find device size")?;
            return Ok(Target {
                file: Some(file),
                path: path.to_owned(),
                tmp: None,
                device_size: Some(size),
                finished: false,
            });
        }
        if let Some(m) = &meta
            && !m.is_file()
        {
            return Err(Error::InvalidOption(format!(
                "{}: restore target must be a regular file or a block device",
                path.display()
            )));
        }
        if fresh {
            let mut name = path.file_name().unwrap_or_default().to_owned();
            name.push(".blockdiff-partial");
            let tmp = path.with_file_name(name);
            let file = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(&tmp)
                .ctx(&tmp, "create")?;
            return Ok(Target {
                file: Some(file),
                path: path.to_owned(),
                tmp: Some(tmp),
                device_size: None,
                finished: false,
            });
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .ctx(path, "open")?;
        Ok(Target {
            file: Some(file),
            path: path.to_owned(),
            tmp: None,
            device_size: None,
            finished: false,
        })
    }

    /// A target that drops what it is given: verification.
    fn discard() -> Target {
        Target {
            file: None,
            path: PathBuf::from("(verification)"),
            tmp: None,
            device_size: None,
            finished: true,
        }
    }

    /// Writes one block and counts it in `report`.
    fn put(&mut self, offset: u64, data: &[u8], report: &mut RestoreReport) -> Result<()> {
        if self.write_block(offset, data)? {
            report.bytes_written += data.len() as u64;
        } else {
            report.holes += 1;
        }
        report.blocks += 1;
        Ok(())
    }

    fn write_path(&self) -> &Path {
        self.tmp.as_deref().unwrap_or(&self.path)
    }

    fn current_len(&self) -> Result<u64> {
        match (self.device_size, &self.file) {
            (Some(size), _) => Ok(size),
            (None, Some(f)) => Ok(f.metadata().ctx(self.write_path(), "stat")?.len()),
            (None, None) => Ok(0),
        }
    }

    /// Writes one block; returns false if it was left as a hole.
    fn write_block(&mut self, offset: u64, data: &[u8]) -> Result<bool> {
        let end = offset + data.len() as u64;
        if let Some(size) = self.device_size
            && end > size
        {
            return Err(Error::TargetTooSmall {
                path: self.path.clone(),
                need: end,
                have: size,
            });
        }
        let Some(file) = &self.file else {
            return Ok(true);
        };
        if self.tmp.is_some() && is_zero(data) {
            return Ok(false);
        }
        file.write_all_at(data, offset)
            .map_err(|source| Error::Io {
                path: self.write_path().to_owned(),
                op: "write",
                source,
            })?;
        Ok(true)
    }

    /// Sets a file's size to `size`, syncs, and renames a fresh file into
    /// place.
    fn finish(mut self, size: u64) -> Result<()> {
        let Some(file) = &self.file else {
            return Ok(());
        };
        if self.device_size.is_none() {
            file.set_len(size).ctx(self.write_path(), "set size")?;
        }
        file.sync_all().ctx(self.write_path(), "fsync")?;
        if let Some(tmp) = &self.tmp {
            fs::rename(tmp, &self.path).ctx(&self.path, "rename restored image into place")?;
            if let Some(dir) = self.path.parent().filter(|p| !p.as_os_str().is_empty()) {
                File::open(dir)
                    .and_then(|d| d.sync_all())
                    .ctx(dir, "fsync directory")?;
            }
        }
        self.finished = true;
        Ok(())
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        if let (false, Some(tmp)) = (self.finished, &self.tmp) {
            let _ = fs::remove_file(tmp);
        }
    }
}

/// The set of block indexes already written: a dense bitmap when the
/// block count is known, else a sparse one whose memory follows the blocks
/// actually seen, whatever their offsets.
#[derive(Debug)]
enum BlockSet {
    Dense(Vec<u64>),
    Sparse(HashMap<u64, u64>),
}

impl BlockSet {
    fn new(blocks: Option<u64>) -> Self {
        match blocks {
            Some(n) => BlockSet::Dense(vec![0; n.div_ceil(64) as usize]),
            None => BlockSet::Sparse(HashMap::new()),
        }
    }

    fn word(&self, w: u64) -> u64 {
        match self {
            BlockSet::Dense(v) => v.get(w as usize).copied().unwrap_or(0),
            BlockSet::Sparse(m) => m.get(&w).copied().unwrap_or(0),
        }
    }

    fn contains(&self, index: u64) -> bool {
        self.word(index / 64) & (1 << (index % 64)) != 0
    }

    fn insert(&mut self, index: u64) {
        let bit = 1 << (index % 64);
        match self {
            BlockSet::Dense(v) => {
                if let Some(w) = v.get_mut((index / 64) as usize) {
                    *w |= bit;
                }
            }
            BlockSet::Sparse(m) => *m.entry(index / 64).or_default() |= bit,
        }
    }

    /// How many of the indexes `0..n` are absent, and the first of them.
    fn missing_below(&self, n: u64) -> (u64, u64) {
        let mut count = 0;
        let mut first = None;
        for w in 0..n.div_ceil(64) {
            let bits_here = (n - w * 64).min(64);
            let mask = if bits_here == 64 {
                u64::MAX
            } else {
                (1u64 << bits_here) - 1
            };
            let absent = !self.word(w) & mask;
            if absent != 0 {
                count += u64::from(absent.count_ones());
                first.get_or_insert(w * 64 + u64::from(absent.trailing_zeros()));
            }
        }
        (count, first.unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_set_counts_missing() {
        for dense in [true, false] {
            block_set_case(BlockSet::new(dense.then_some(200)), dense);
        }
    }

    fn block_set_case(mut s: BlockSet, dense: bool) {
        for i in [0, 1, 2, 64, 65, 130] {
            s.insert(i);
        }
        assert!(s.contains(64) && !s.contains(3));
        assert_eq!(s.missing_below(3), (0, 0));
        assert_eq!(s.missing_below(4), (1, 3));
        assert_eq!(s.missing_below(131), (131 - 6, 3));
        s.insert(1 << 50);
        assert_eq!(
            s.contains(1 << 50),
            !dense,
            "a dense set ignores blocks beyond its count"
        );
    }
}
