//! What a backup holds: one line per generation, for `blockdiff-info`, and
//! the comparison of a file with a generation's digest.

use std::io::{self, Read};
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use archive_format::{
    DiffFile, DigestFile, DigestFormat, DigestReader, DigestWriter, HashAlgorithm, LegacyReader,
    UNKNOWN_SIZE,
};

use crate::block::BlockHashKey;
use crate::dump::{ChangedRanges, DumpOptions, DumpSource, dump};
use crate::error::{ArchiveContext, IoContext};
use crate::generation_source::{DiffStream, GenerationSource};
use crate::progress::Progress;
use crate::store::{DiffFormat, GenerationStore};
use crate::{Error, Result};

/// One generation of a backup, as `blockdiff-info` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenerationInfo {
    /// The generation number.
    pub generation: u64,
    /// Its diff file.
    pub diff_path: PathBuf,
    /// Its format.
    pub format: DiffFormat,
    /// When it was made: the v2 header's time, or the legacy diff's mtime.
    pub created: Option<SystemTime>,
    /// Size of the source, exact for v2; a legacy digest only bounds it.
    pub source_size: Option<u64>,
    /// Blocks in the source.
    pub blocks: u64,
    /// The block size.
    pub block_size: u32,
    /// The hash algorithm of its digest.
    pub hash: HashAlgorithm,
    /// The generation this one's blocks are laid over: `generation − 1`
    /// for a backup, an older one when a prune folded those between, and
    /// `None` for a base (generation 1, or the oldest one kept after a
    /// prune folded the generations before it into it).
    pub parent: Option<u64>,
    /// Blocks this generation holds (changed since its parent).
    pub changed_blocks: u64,
    /// Of those, all-zero blocks recorded without data (v2).
    pub zero_blocks: u64,
    /// Bytes of block data before compression.
    pub raw_bytes: u64,
    /// Bytes of the diff file on disk.
    pub diff_bytes: u64,
    /// Bytes of the digest file on disk.
    pub digest_bytes: u64,
}

impl GenerationInfo {
    /// Changed blocks as a percentage of all blocks.
    pub fn changed_percent(&self) -> f64 {
        if self.blocks == 0 {
            0.0
        } else {
            100.0 * self.changed_blocks as f64 / self.blocks as f64
        }
    }

    /// Block data bytes per byte on disk (above 1 when compression helps).
    pub fn compression_ratio(&self) -> f64 {
        if self.diff_bytes == 0 {
            1.0
        } else {
            self.raw_bytes as f64 / self.diff_bytes as f64
        }
    }
}

impl GenerationStore {
    /// Describes every generation of the chain, oldest first.
    pub fn info(&self) -> Result<Vec<GenerationInfo>> {
        chain_info(self)
    }

    /// Describes generation `generation`.
    pub fn generation_info(&self, generation: u64) -> Result<GenerationInfo> {
        generation_info(self, generation)
    }
}

/// Describes every generation in the chain of `source`, oldest first:
/// those a restore can read ([`chain_generations`](crate::chain_generations)),
/// which after a prune are not all the numbers up to the last.
pub fn chain_info(source: &dyn GenerationSource) -> Result<Vec<GenerationInfo>> {
    let current = source
        .current_generation()?
        .ok_or_else(|| Error::MissingGeneration {
            path: source.ver_path(),
            generation: 1,
            reason: "there is no backup under this name (no .ver file)".into(),
        })?;
    let mut held = crate::chain_generations(source, Some(current))?;
    held.reverse();
    held.into_iter()
        .map(|g| generation_info(source, g))
        .collect()
}

/// Describes generation `generation` of `source`. A v2 generation is
/// described from its diff's header and index alone (on an object store,
/// a few ranged reads); a legacy one reads its digest and every record
/// header of its diff.
pub fn generation_info(source: &dyn GenerationSource, generation: u64) -> Result<GenerationInfo> {
    let diff = source.find_diff(generation)?;
    // A missing digest is named in the chain's own format.
    let digest_bytes = source.digest_size(generation)?;
    let bytes = source.open_diff(&diff)?;
    let diff_bytes = bytes.size().ctx(&diff.path, "stat")?;
    let mut info = GenerationInfo {
        generation,
        diff_path: diff.path.clone(),
        format: diff.format,
        created: source.diff_modified(&diff),
        source_size: None,
        blocks: 0,
        block_size: 0,
        hash: HashAlgorithm::Md5,
        parent: generation.checked_sub(1).filter(|&p| p > 0),
        changed_blocks: 0,
        zero_blocks: 0,
        raw_bytes: 0,
        diff_bytes,
        digest_bytes,
    };
    match diff.format {
        DiffFormat::V2 { .. } => {
            let v2 = DiffFile::open(bytes).in_file(&diff.path)?;
            let (h, s) = (v2.header(), v2.summary());
            info.created = Some(
                UNIX_EPOCH
                    + Duration::new(
                        h.created_secs.max(0) as u64,
                        h.created_nanos.min(999_999_999),
                    ),
            );
            info.source_size = Some(s.source_size);
            info.block_size = h.block_size;
            info.blocks = s.source_size.div_ceil(u64::from(h.block_size.max(1)));
            info.hash = h.hash;
            info.parent = h.parent_generation();
            info.changed_blocks = s.data_blocks + s.zero_blocks;
            info.zero_blocks = s.zero_blocks;
            info.raw_bytes = s.raw_bytes;
        }
        DiffFormat::Legacy(compression) => {
            let (digest_path, _) = source.find_digest(generation)?;
            let digest = DigestReader::open(&digest_path)?;
            info.source_size = digest.source_size();
            info.blocks = digest.entries().unwrap_or(0);
            info.block_size = digest.block_size().get();
            info.hash = digest.algorithm();
            let stream = DiffStream::new(bytes, source.stream_read_size());
            let mut r = LegacyReader::new(compression.reader(stream)).in_file(&diff.path)?;
            while r.next_record().in_file(&diff.path)?.is_some() {
                info.raw_bytes += r.skip_data().in_file(&diff.path)?;
                info.changed_blocks += 1;
            }
        }
    }
    Ok(info)
}

/// The outcome of comparing a file or device with a generation's digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Comparison {
    /// The generation compared with.
    pub generation: u64,
    /// The source size the digest records (v2), or `None` (legacy).
    pub expected_size: Option<u64>,
    /// Bytes read from the file.
    pub file_size: u64,
    /// Byte ranges `[start, end)` that differ, in order; past the end of the
    /// shorter of the two counts as differing.
    pub differing: Vec<(u64, u64)>,
}

impl Comparison {
    /// True when the file matches the generation exactly.
    pub fn is_identical(&self) -> bool {
        self.differing.is_empty()
    }
}

/// Compares `source` block by block with the digest of generation
/// `generation` (the last committed one if `None`), on all cores, and lists
/// the byte ranges that differ. Nothing is written.
///
/// The source is read only up to one byte past the generation's size: a
/// longer one differs from the generation's end to its own end. For a
/// source of unknown size (a pipe, a character device such as `/dev/zero`
/// or `/dev/urandom`) that end is not known: its
/// [`Comparison::file_size`] is then the bytes read, one past the
/// generation's size.
pub fn compare_with_generation<R: Read + Send>(
    store: &dyn crate::GenerationSource,
    generation: Option<u64>,
    source: DumpSource<R>,
    threads: usize,
    progress: &mut dyn Progress,
) -> Result<Comparison> {
    let reading = DumpOptions {
        threads,
        ..DumpOptions::default()
    };
    compare_reading_with(store, generation, source, &reading, progress)
}

/// [`compare_with_generation`], the source read as `reading` says (its
/// threads and polite-I/O settings; the block size, hash and generation
/// come from the digest).
pub(crate) fn compare_reading_with<R: Read + Send>(
    store: &dyn crate::GenerationSource,
    generation: Option<u64>,
    source: DumpSource<R>,
    reading: &DumpOptions,
    progress: &mut dyn Progress,
) -> Result<Comparison> {
    let current = store
        .current_generation()?
        .ok_or_else(|| Error::MissingGeneration {
            path: store.ver_path(),
            generation: generation.unwrap_or(1),
            reason: "there is no backup under this name (no .ver file)".into(),
        })?;
    let generation = generation.unwrap_or(current);
    if generation == 0 || generation > current {
        return Err(Error::MissingGeneration {
            path: store.ver_path(),
            generation,
            reason: format!(
                "it is not committed: {} says {current}",
                store.ver_path().display()
            ),
        });
    }
    // Opened by offset for its length and trailer, read in order by the
    // dump (an encrypted chain's decrypted as read).
    let whole = store.open_digest(generation)?;
    let mut comparison =
        compare_with_digest(whole, store.block_hash_key(), source, reading, progress)?;
    comparison.generation = generation;
    Ok(comparison)
}

/// Compares `source` block by block with `digest` (a generation's digest
/// file, legacy or v2; `hash_key` the key of an encrypted chain's keyed
/// hashes), read as `reading` says (its threads and polite-I/O settings;
/// the block size and hash come from the digest), and lists the byte
/// ranges that differ, as [`compare_with_generation`] does. The
/// comparison's `generation` is the one the digest records (0 for a legacy
/// digest, which records none).
pub fn compare_with_digest<R: Read + Send>(
    whole: DigestFile,
    hash_key: Option<BlockHashKey>,
    source: DumpSource<R>,
    reading: &DumpOptions,
    progress: &mut dyn Progress,
) -> Result<Comparison> {
    let format = whole.spec().format;
    let generation = whole.spec().generation;
    let (expected_size, digest_blocks) = (whole.source_size(), whole.entries());
    let mut digest = whole.into_reader()?;
    let spec = *digest.spec();
    let bs = u64::from(spec.block_size.get());
    let expected_end = match (expected_size, format) {
        (Some(size), _) if size != UNKNOWN_SIZE => size,
        _ => digest_blocks.saturating_mul(bs),
    };
    // The source is read one byte past the generation's end at most:
    // enough to know it is longer (a pipe, /dev/zero never ends).
    let full_size = source.size();
    let source = source.limited(expected_end.saturating_add(1));
    let mut sink = ChangedRanges::new(format);
    let mut discard = DigestWriter::new(io::sink(), "(comparison)");
    let options = DumpOptions {
        block_size: spec.block_size,
        hash: spec.algorithm,
        hash_key,
        generation: spec.generation.max(1),
        tracked: None,
        verify_tracked: false,
        ..reading.clone()
    };
    let report = dump(
        source,
        Some(&mut digest),
        &mut sink,
        &mut discard,
        &options,
        progress,
    )?;
    let mut differing = sink.ranges().to_vec();
    // Blocks the digest lists beyond the end of the file are missing.
    let file_blocks = report.blocks;
    if file_blocks < digest_blocks
        || (format == DigestFormat::V2 && report.source_bytes < expected_end)
    {
        let start = report.source_bytes;
        match differing.last_mut() {
            Some(last) if last.1 >= start => last.1 = last.1.max(expected_end),
            _ => differing.push((start, expected_end)),
        }
    }
    // A file or device longer than the generation differs to its end.
    let file_size = full_size.map_or(report.source_bytes, |s| s.max(report.source_bytes));
    if file_size > report.source_bytes
        && let Some(last) = differing.last_mut()
    {
        last.1 = last.1.max(file_size);
    }
    Ok(Comparison {
        generation,
        expected_size,
        file_size,
        differing,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BackupOptions, NoProgress, backup};
    use std::fs;

    #[test]
    fn a_missing_v2_digest_is_named_as_v2() {
        let dir = tempfile::tempdir().unwrap();
        let store = GenerationStore::new(dir.path().join("h"));
        let image = vec![5u8; 10_000];
        let source = DumpSource::from_bytes(&image, "image");
        backup(&store, source, &BackupOptions::default(), &mut NoProgress).unwrap();
        let digest = store.digest_path(1, DigestFormat::V2);
        fs::remove_file(&digest).unwrap();
        let err = store.info().unwrap_err().to_string();
        assert!(err.contains("h.1.digest"), "{err}");
        assert!(!err.contains(".md5"), "{err}");
    }

    #[test]
    fn a_longer_file_is_read_only_past_the_generations_end() {
        let dir = tempfile::tempdir().unwrap();
        let store = GenerationStore::new(dir.path().join("h"));
        let image = vec![3u8; 10_000];
        let source = DumpSource::from_bytes(&image, "image");
        backup(&store, source, &BackupOptions::default(), &mut NoProgress).unwrap();
        let mut longer = image.clone();
        longer.resize(1 << 20, 9);
        let disk = dir.path().join("disk");
        fs::write(&disk, &longer).unwrap();
        let source = DumpSource::open(&disk).unwrap();
        let cmp = compare_with_generation(&store, None, source, 1, &mut NoProgress).unwrap();
        assert_eq!(cmp.file_size, 1 << 20);
        assert_eq!(cmp.differing.last().unwrap().1, 1 << 20);
        fs::write(&disk, &image).unwrap();
        let source = DumpSource::open(&disk).unwrap();
        let cmp = compare_with_generation(&store, None, source, 1, &mut NoProgress).unwrap();
        assert!(cmp.is_identical(), "{:?}", cmp.differing);
    }

    #[test]
    fn comparison_with_an_endless_source_stops_past_the_generations_end() {
        let dir = tempfile::tempdir().unwrap();
        let store = GenerationStore::new(dir.path().join("h"));
        let image = vec![0u8; 10_000];
        let source = DumpSource::from_bytes(&image, "image");
        backup(&store, source, &BackupOptions::default(), &mut NoProgress).unwrap();
        // An endless stream of zeros: equal to the image, then longer.
        let endless = DumpSource::stream(io::repeat(0), "zeros");
        let cmp = compare_with_generation(&store, None, endless, 1, &mut NoProgress).unwrap();
        assert_eq!(cmp.file_size, 10_001);
        assert!(!cmp.is_identical());
        assert_eq!(cmp.differing.last().unwrap().1, 10_001);
    }
}
