//! Which blocks of a thin volume changed between two of its snapshots, as
//! the pool's metadata tells: `thin_delta` over a reserved metadata
//! snapshot, its XML parsed into changed chunk ranges.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use command_runner::{CommandLine, CommandOutput};

use crate::lvm::{LvPath, Lvm, command_failed};
use crate::{Error, Result};

/// A run of pool chunks (of [`ThinDelta::chunk_bytes`] each) in which two
/// thin devices differ: mapped to other data, mapped in one only, or
/// unmapped (discarded) in one only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkRange {
    /// The first chunk.
    pub begin: u64,
    /// How many chunks.
    pub length: u64,
}

/// What `thin_delta` reports between an older thin device (`left`) and a
/// newer one (`right`): the pool's chunk size and the chunks that differ,
/// sorted and merged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThinDelta {
    /// The pool's chunk size in bytes (`data_block_size` × 512).
    pub chunk_bytes: u64,
    /// The older device's thin id.
    pub left: u64,
    /// The newer device's thin id.
    pub right: u64,
    /// The chunks that differ, in order, none overlapping or touching.
    pub changed: Vec<ChunkRange>,
}

/// The range elements of `thin_delta`'s output that mean "differs"; a
/// `same` range does not, and any other element is refused rather than
/// guessed at (a newer `thin_delta` could add one that matters).
const CHANGED_ELEMENTS: [&str; 3] = ["different", "right_only", "left_only"];

impl ThinDelta {
    /// Parses `thin_delta`'s XML (without `--verbose`) for devices `left`
    /// and `right`. Anything unexpected is [`Error::Parse`] naming
    /// `command`: an unknown element, a missing or malformed attribute, a
    /// `diff` of other devices, ranges out of order, a chunk count that
    /// overflows.
    pub fn parse(xml: &str, left: u64, right: u64, command: &str) -> Result<ThinDelta> {
        let bad = |detail: String| Error::Parse {
            command: command.to_owned(),
            detail,
        };
        let mut chunk_bytes = None;
        let mut saw_diff = false;
        let mut changed: Vec<ChunkRange> = Vec::new();
        let mut next_free = 0u64;
        for tag in tags(xml).map_err(&bad)? {
            if tag.closing {
                continue;
            }
            match tag.name {
                "superblock" => {
                    let sectors = tag.number("data_block_size").map_err(&bad)?;
                    let bytes = sectors
                        .checked_mul(512)
                        .filter(|b| *b > 0)
                        .ok_or_else(|| bad(format!("data_block_size {sectors} is not a size")))?;
                    chunk_bytes = Some(bytes);
                }
                "diff" => {
                    let (l, r) = (tag.number("left"), tag.number("right"));
                    if (l.as_ref().ok(), r.as_ref().ok()) != (Some(&left), Some(&right)) {
                        return Err(bad(format!(
                            "a diff of devices {} and {}, not {left} and {right}",
                            tag.attr("left").unwrap_or("?"),
                            tag.attr("right").unwrap_or("?")
                        )));
                    }
                    saw_diff = true;
                }
                "same" => {
                    // A `same` range still advances the order check.
                    let end = range_end(&tag).map_err(&bad)?;
                    next_free = next_free.max(end.1);
                }
                name if CHANGED_ELEMENTS.contains(&name) => {
                    if !saw_diff {
                        return Err(bad(format!("<{name}> outside a <diff>")));
                    }
                    let (begin, end) = range_end(&tag).map_err(&bad)?;
                    if begin < next_free {
                        return Err(bad(format!(
                            "ranges out of order: <{name}> begins at chunk {begin}, before chunk {next_free}"
                        )));
                    }
                    next_free = end;
                    match changed.last_mut() {
                        Some(last) if last.begin + last.length == begin => {
                            last.length += end - begin;
                        }
                        _ => changed.push(ChunkRange {
                            begin,
                            length: end - begin,
                        }),
                    }
                }
                other => return Err(bad(format!("unexpected element <{other}>"))),
            }
        }
        let chunk_bytes = chunk_bytes.ok_or_else(|| bad("no <superblock>".into()))?;
        if !saw_diff {
            return Err(bad("no <diff>".into()));
        }
        Ok(ThinDelta {
            chunk_bytes,
            left,
            right,
            changed,
        })
    }

    /// The changed bytes of the volume as `(offset, length)` ranges, in
    /// order (a changed chunk is changed in every byte, as far as anyone
    /// can tell from the metadata).
    pub fn byte_ranges(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.changed.iter().map(|r| {
            (
                r.begin.saturating_mul(self.chunk_bytes),
                r.length.saturating_mul(self.chunk_bytes),
            )
        })
    }

    /// Bytes in changed chunks.
    pub fn changed_bytes(&self) -> u64 {
        self.byte_ranges()
            .fold(0u64, |sum, (_, len)| sum.saturating_add(len))
    }
}

/// `begin` and `begin + length` of a range element.
fn range_end(tag: &Tag<'_>) -> std::result::Result<(u64, u64), String> {
    let begin = tag.number("begin")?;
    let length = tag.number("length")?;
    let end = begin
        .checked_add(length)
        .filter(|_| length > 0)
        .ok_or_else(|| format!("<{}> of {length} chunks at {begin}", tag.name))?;
    Ok((begin, end))
}

/// One XML tag: its name and its attributes' text.
struct Tag<'a> {
    name: &'a str,
    closing: bool,
    attrs: Vec<(&'a str, &'a str)>,
}

impl<'a> Tag<'a> {
    fn attr(&self, key: &str) -> Option<&'a str> {
        self.attrs.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
    }

    fn number(&self, key: &str) -> std::result::Result<u64, String> {
        let text = self
            .attr(key)
            .ok_or_else(|| format!("<{}> without {key}", self.name))?;
        text.parse()
            .map_err(|_| format!("<{}> {key}=\"{text}\" is not a number", self.name))
    }
}

/// The tags of the small XML dialect `thin_delta` writes: elements with
/// double-quoted attributes, no text content, no entities, no comments.
fn tags(xml: &str) -> std::result::Result<Vec<Tag<'_>>, String> {
    let mut out = Vec::new();
    let mut rest = xml;
    loop {
        let trimmed = rest.trim_start();
        if trimmed.is_empty() {
            return Ok(out);
        }
        let Some(body) = trimmed.strip_prefix('<') else {
            let text: String = trimmed.chars().take(40).collect();
            return Err(format!("text outside a tag: '{text}'"));
        };
        let end = body.find('>').ok_or("a tag that does not end")?;
        let (inner, after) = (&body[..end], &body[end + 1..]);
        rest = after;
        let (closing, inner) = match inner.strip_prefix('/') {
            Some(i) => (true, i),
            None => (false, inner.strip_suffix('/').unwrap_or(inner)),
        };
        let inner = inner.trim();
        let name_end = inner.find(char::is_whitespace).unwrap_or(inner.len());
        let (name, mut attrs_text) = (&inner[..name_end], &inner[name_end..]);
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(format!("a tag named '{name}'"));
        }
        let mut attrs = Vec::new();
        loop {
            attrs_text = attrs_text.trim_start();
            if attrs_text.is_empty() {
                break;
            }
            let (key, value_and_rest) = attrs_text
                .split_once("=\"")
                .ok_or_else(|| format!("<{name}> with a malformed attribute"))?;
            let (value, after) = value_and_rest
                .split_once('"')
                .ok_or_else(|| format!("<{name}> with an unterminated attribute"))?;
            attrs.push((key.trim(), value));
            attrs_text = after;
        }
        out.push(Tag {
            name,
            closing,
            attrs,
        });
    }
}

/// A thin pool, asked which chunks differ between two of its devices.
#[derive(Debug, Clone)]
pub struct ThinPool {
    lvm: Lvm,
    path: LvPath,
    lock_dir: PathBuf,
}

/// What `lvs` says about a thin pool: its chunk size and fill.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ThinPoolStatus {
    /// The chunk size in bytes: the unit of the pool's mappings.
    pub chunk_bytes: u64,
    /// Percent of the data space used.
    pub data_percent: f64,
    /// Percent of the metadata space used.
    pub metadata_percent: f64,
}

/// The device-mapper name of an LV: `vg-lv`, every `-` in either name
/// doubled.
fn dm_name(path: &LvPath) -> String {
    format!(
        "{}-{}",
        path.vg.replace('-', "--"),
        path.lv.replace('-', "--")
    )
}

impl ThinPool {
    /// The pool `path`. A metadata snapshot is reserved under a lock file
    /// in `/run/lock`, so that two runs on this host never hold it at once.
    pub fn new(lvm: &Lvm, path: LvPath) -> ThinPool {
        ThinPool {
            lvm: lvm.clone(),
            path,
            lock_dir: PathBuf::from("/run/lock"),
        }
    }

    /// The same pool with its lock file in `dir` (tests).
    pub fn with_lock_dir(mut self, dir: impl Into<PathBuf>) -> ThinPool {
        self.lock_dir = dir.into();
        self
    }

    /// The pool, `vg/pool`.
    pub fn path(&self) -> &LvPath {
        &self.path
    }

    /// Its chunk size and fill (`lvs -o chunk_size,data_percent,metadata_percent`).
    pub fn status(&self) -> Result<ThinPoolStatus> {
        let fields = "chunk_size,data_percent,metadata_percent";
        let row = self.lvm.lv_fields(&self.path, fields)?;
        let percent = |key: &str| -> Result<f64> {
            let text = row.text(key)?;
            text.trim()
                .parse()
                .map_err(|_| row.bad(format!("{key} is '{text}'")))
        };
        Ok(ThinPoolStatus {
            chunk_bytes: row.number("chunk_size")?,
            data_percent: percent("data_percent")?,
            metadata_percent: percent("metadata_percent")?,
        })
    }

    /// Which chunks differ between thin devices `left` (the older) and
    /// `right`: reserves a metadata snapshot of the live pool (`dmsetup
    /// message VG-POOL-tpool 0 reserve_metadata_snap`), runs `thin_delta -m
    /// --snap1 LEFT --snap2 RIGHT` on the pool's metadata device, and
    /// releases the snapshot on every path. A reservation that a killed
    /// run of this host left behind (recorded in the lock file) is
    /// released first.
    pub fn delta(&self, left: u64, right: u64) -> Result<ThinDelta> {
        let guard = MetadataSnapshot::reserve(self)?;
        let meta = PathBuf::from(format!("/dev/mapper/{}_tmeta", dm_name(&self.path)));
        let inv = CommandLine::new(
            "thin_delta",
            [
                "-m".to_owned(),
                "--snap1".to_owned(),
                left.to_string(),
                "--snap2".to_owned(),
                right.to_string(),
                meta.display().to_string(),
            ],
        );
        let out = self.lvm.run(&inv);
        let released = guard.release();
        let out = out?;
        released?;
        ThinDelta::parse(&out.stdout_text(), left, right, &inv.to_string())
    }

    /// Sends `message` to the pool's device-mapper target; a failure is
    /// returned, with the command line, not an error.
    fn tpool_message(&self, message: &str) -> Result<(CommandLine, CommandOutput)> {
        let device = format!("{}-tpool", dm_name(&self.path));
        let inv = CommandLine::new("dmsetup", ["message", &device, "0", message]);
        let out = self.lvm.run_unchecked(&inv)?;
        Ok((inv, out))
    }

    fn lock_path(&self) -> PathBuf {
        self.lock_dir
            .join(format!("blockdiff-thin-{}.lock", dm_name(&self.path)))
    }
}

/// The marker a reservation leaves in the pool's lock file until released.
const RESERVED: &[u8] = b"metadata snapshot reserved\n";

/// A reserved metadata snapshot of a thin pool, held with the pool's lock
/// file: released on drop (best effort) or by [`release`](Self::release).
struct MetadataSnapshot<'a> {
    pool: &'a ThinPool,
    lock: File,
    released: bool,
}

impl<'a> MetadataSnapshot<'a> {
    fn reserve(pool: &'a ThinPool) -> Result<MetadataSnapshot<'a>> {
        let path = pool.lock_path();
        let mut lock = open_lock(&path)?;
        let io = |op, source| Error::Io {
            path: path.clone(),
            op,
            source,
        };
        let mut marker = Vec::new();
        lock.read_to_end(&mut marker)
            .map_err(|e| io("reading", e))?;
        if marker == RESERVED {
            // A run of this host reserved it and died before releasing it.
            // If the pool was restarted since, there is none to release,
            // and the failure says nothing.
            pool.tpool_message("release_metadata_snap")?;
        }
        let (inv, out) = pool.tpool_message("reserve_metadata_snap")?;
        if !out.success() {
            return Err(command_failed(&inv, &out));
        }
        lock.set_len(0).map_err(|e| io("truncating", e))?;
        lock.seek(SeekFrom::Start(0))
            .and_then(|_| lock.write_all(RESERVED))
            .and_then(|()| lock.sync_data())
            .map_err(|e| io("writing", e))?;
        Ok(MetadataSnapshot {
            pool,
            lock,
            released: false,
        })
    }

    fn release(mut self) -> Result<()> {
        self.released = true;
        self.release_now()
    }

    fn release_now(&mut self) -> Result<()> {
        let (inv, out) = self.pool.tpool_message("release_metadata_snap")?;
        if !out.success() {
            return Err(command_failed(&inv, &out));
        }
        let _ = self.lock.set_len(0);
        Ok(())
    }
}

impl Drop for MetadataSnapshot<'_> {
    fn drop(&mut self) {
        if !self.released {
            let _ = self.release_now();
        }
    }
}

/// Opens (creating, 0600, never through a symlink) and locks the pool's
/// lock file, waiting for another run of this host to finish with it.
fn open_lock(path: &Path) -> Result<File> {
    let io = |op, source| Error::Io {
        path: path.to_owned(),
        op,
        source,
    };
    // A minimal system (a rescue shell, a VM) may lack /run/lock.
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| io("creating the directory of", e))?;
    }
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| io("opening", e))?;
    // /run/lock is writable by everyone: a file another user made there
    // could make this run release someone else's metadata snapshot.
    let meta = file.metadata().map_err(|e| io("checking", e))?;
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    if meta.uid() != euid || !meta.is_file() {
        return Err(io(
            "using",
            std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                format!("it is not a regular file owned by uid {euid}"),
            ),
        ));
    }
    loop {
        // SAFETY: flock on a descriptor this function owns.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
        if rc == 0 {
            return Ok(file);
        }
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::Interrupted {
            return Err(io("locking", err));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use command_runner::{CommandOutput, RecordingRunner};
    use std::sync::Arc;

    const DELTA: &str = r#"<superblock uuid="" time="1" transaction="2" data_block_size="128" nr_data_blocks="1000">
  <diff left="1" right="2">
    <same begin="0" length="3"/>
    <different begin="3" length="1"/>
    <right_only begin="4" length="2"/>
    <same begin="6" length="4"/>
    <left_only begin="20" length="2"/>
  </diff>
</superblock>
"#;

    #[test]
    fn changed_ranges_are_merged_and_scaled_to_bytes() {
        let delta = ThinDelta::parse(DELTA, 1, 2, "thin_delta").unwrap();
        assert_eq!(delta.chunk_bytes, 64 << 10);
        assert_eq!(
            delta.changed,
            [
                ChunkRange {
                    begin: 3,
                    length: 3
                },
                ChunkRange {
                    begin: 20,
                    length: 2
                }
            ]
        );
        let bytes: Vec<_> = delta.byte_ranges().collect();
        assert_eq!(bytes, [(3 << 16, 3 << 16), (20 << 16, 2 << 16)]);
        assert_eq!(delta.changed_bytes(), 5 << 16);
    }

    #[test]
    fn anything_unexpected_is_refused() {
        let cases = [
            (
                DELTA.replace("left=\"1\"", "left=\"7\""),
                "a diff of devices 7 and 2",
            ),
            (
                DELTA.replace("right_only", "moved"),
                "unexpected element <moved>",
            ),
            (DELTA.replace("begin=\"20\"", "begin=\"2\""), "out of order"),
            (
                DELTA.replace("length=\"1\"", "length=\"x\""),
                "not a number",
            ),
            (DELTA.replace("length=\"1\"", "length=\"0\""), "of 0 chunks"),
            (
                DELTA.replace("begin=\"20\"", "begin=\"18446744073709551615\""),
                "chunks at",
            ),
            (
                DELTA.replace(" data_block_size=\"128\"", ""),
                "without data_block_size",
            ),
            (
                DELTA.replace("<diff left=\"1\" right=\"2\">", ""),
                "outside a <diff>",
            ),
            ("no current metadata snap".to_owned(), "text outside a tag"),
            (String::new(), "no <superblock>"),
            (DELTA[..60].to_owned(), "does not end"),
        ];
        for (xml, want) in cases {
            let err = ThinDelta::parse(&xml, 1, 2, "thin_delta")
                .unwrap_err()
                .to_string();
            assert!(
                err.starts_with("cannot parse the output of `thin_delta`") && err.contains(want),
                "{want}: {err}"
            );
        }
    }

    #[test]
    fn the_metadata_snapshot_is_released_on_every_path() {
        let dir = tempfile::tempdir().unwrap();
        for (thin_delta_ok, want_ok) in [(true, true), (false, false)] {
            let runner = Arc::new(RecordingRunner::strict());
            runner.reply("dmsetup", CommandOutput::ok(""));
            if thin_delta_ok {
                runner.reply("thin_delta", CommandOutput::ok(DELTA));
            } else {
                runner.reply(
                    "thin_delta",
                    CommandOutput::failed(1, "no current metadata snap\n"),
                );
            }
            let lvm = Lvm::with_runner(runner.clone());
            let pool = ThinPool::new(&lvm, "my-vg/pool".parse().unwrap()).with_lock_dir(dir.path());
            let result = pool.delta(1, 2);
            assert_eq!(result.is_ok(), want_ok, "{result:?}");
            assert_eq!(
                runner.calls(),
                [
                    "dmsetup message my--vg-pool-tpool 0 reserve_metadata_snap",
                    "thin_delta -m --snap1 1 --snap2 2 /dev/mapper/my--vg-pool_tmeta",
                    "dmsetup message my--vg-pool-tpool 0 release_metadata_snap",
                ]
            );
            let marker = std::fs::read(dir.path().join("blockdiff-thin-my--vg-pool.lock")).unwrap();
            assert!(marker.is_empty(), "the lock file still says reserved");
        }
    }

    #[test]
    fn a_reservation_a_killed_run_left_is_released_first() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("blockdiff-thin-vg0-pool.lock"), RESERVED).unwrap();
        let runner = Arc::new(RecordingRunner::strict());
        runner.reply("dmsetup", CommandOutput::ok(""));
        runner.reply("thin_delta", CommandOutput::ok(DELTA));
        let lvm = Lvm::with_runner(runner.clone());
        let pool = ThinPool::new(&lvm, "vg0/pool".parse().unwrap()).with_lock_dir(dir.path());
        pool.delta(1, 2).unwrap();
        assert_eq!(
            runner.calls()[..2],
            [
                "dmsetup message vg0-pool-tpool 0 release_metadata_snap",
                "dmsetup message vg0-pool-tpool 0 reserve_metadata_snap",
            ]
        );
    }

    #[test]
    fn a_failed_reservation_is_an_error_and_nothing_runs() {
        let dir = tempfile::tempdir().unwrap();
        let runner = Arc::new(RecordingRunner::strict());
        runner.reply(
            "dmsetup",
            CommandOutput::failed(
                1,
                "device-mapper: message ioctl on vg0-pool-tpool failed: Device or resource busy\n",
            ),
        );
        let lvm = Lvm::with_runner(runner.clone());
        let pool = ThinPool::new(&lvm, "vg0/pool".parse().unwrap()).with_lock_dir(dir.path());
        let err = pool.delta(1, 2).unwrap_err().to_string();
        assert!(
            err.contains("reserve_metadata_snap") && err.contains("busy"),
            "{err}"
        );
        assert_eq!(runner.calls().len(), 1);
    }
}
