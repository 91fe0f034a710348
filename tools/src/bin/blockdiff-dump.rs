//! `blockdiff-dump`: the low-level dump, as the original `blockdiff_dump`.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use blockdiff_core::{
    BlockSize, DiffFormat, DigestReader, DigestWriter, DumpOptions, DumpSource, FormatSink, dump,
};
use blockdiff_tools::{
    FormatArgs, PoliteArgs, StderrProgress, UsageError, parse_block_size, run_main,
};
use clap::Parser;
use tempfile::NamedTempFile;

const EXAMPLES: &str = "\
Examples:
  # full dump: every block, and the digest for the next run
  blockdiff-dump --new-digest disk.1.digest -o disk.1 /srv/disk.img

  # incremental dump: only the blocks whose hash differs from disk.1.digest
  blockdiff-dump --old-digest disk.1.digest --new-digest disk.2.digest -o disk.2 /srv/disk.img

  # the original's format, and its file descriptors 5 and 6 through /dev/fd
  blockdiff-dump --format legacy --old-digest /dev/fd/5 --new-digest /dev/fd/6 < disk.img 5< d.1.md5 6> d.2.md5 > d.2

An incremental dump keeps the old digest's format, block size and hash.
blockdiff-restore applies the output. Most users want blockdiff-backup, which
numbers generations and commits them safely.

-o FILE and --new-digest FILE are written beside FILE and renamed over it only
when the whole dump succeeded (new files mode 0600); a device, FIFO or
/dev/fd/N is written in place and never removed.

Exit status: 0 success; 1 failure, including a diff that could not be written
whole (`| head` closed the pipe): the new digest is then not written; 2 usage
error (--threads above 8 per core, a binary diff to a terminal).";

/// Write the blocks of a file or device that changed since a previous digest.
#[derive(Debug, Parser)]
#[command(name = "blockdiff-dump", version, after_help = EXAMPLES)]
struct Args {
    /// File or block device to read [default: standard input]
    source: Option<PathBuf>,

    /// Block size of a full dump: bytes, or with a unit (16k, 1M). An
    /// incremental dump uses the old digest's block size.
    #[arg(short, long, env = "BLOCKSIZE", default_value = "16384", value_parser = parse_block_size)]
    block_size: BlockSize,

    /// Digest of the previous generation: only blocks whose hash differs
    /// from it are written
    #[arg(long, value_name = "FILE", visible_alias = "prev-digest")]
    old_digest: Option<PathBuf>,

    /// Where to write the digest of SOURCE, for the next incremental dump
    #[arg(long, value_name = "FILE")]
    new_digest: Option<PathBuf>,

    /// Write the diff to FILE instead of standard output
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,

    #[command(flatten)]
    format: FormatArgs,

    #[command(flatten)]
    polite: PoliteArgs,

    /// Generation number recorded in a v2 diff and digest [default: the old
    /// digest's plus one, or 1 for a full dump]
    #[arg(long, value_name = "N")]
    generation: Option<u64>,

    /// Hash and compression threads [default: one per core]
    #[arg(long, value_name = "N", default_value_t = 0, hide_default_value = true)]
    threads: usize,

    /// Read SOURCE with pread into a small buffer per thread instead of
    /// through a memory map of each chunk. The map is faster for an
    /// incremental dump (unchanged blocks are hashed where they lie in the
    /// page cache, never copied); this is for comparing the two
    #[arg(long)]
    no_mmap: bool,

    /// Print no notices
    #[arg(short, long)]
    quiet: bool,
}

fn main() -> ExitCode {
    run_main("blockdiff-dump", run)
}

/// Where an output file (`-o`, `--new-digest`) is written, and how it is
/// committed.
enum Place {
    /// A regular file, new or replaced: written to a temporary file created
    /// exclusively beside it (mode 0600, or the replaced file's mode), and
    /// renamed over it only once the whole dump succeeded. On failure the
    /// temporary file is removed and the path is left as it was. A symbolic
    /// link to a regular file is kept: its target is replaced.
    Replace {
        temp: NamedTempFile,
        path: PathBuf,
        mode: Option<fs::Permissions>,
    },
    /// A device node, FIFO, socket or `/dev/fd/N`: written in place and
    /// never removed, whatever happens.
    InPlace(File),
}

/// True for the names of an already open descriptor, which are written in
/// place (`--new-digest /dev/fd/6 6> d.2.md5`).
fn names_a_descriptor(path: &Path) -> bool {
    ["/dev/fd/", "/proc/self/fd/"]
        .iter()
        .any(|dir| path.starts_with(dir))
        || ["/dev/stdout", "/dev/stderr"]
            .iter()
            .any(|name| path == Path::new(name))
}

impl Place {
    fn open(path: &Path) -> anyhow::Result<Place> {
        if names_a_descriptor(path) {
            let f = OpenOptions::new()
                .write(true)
                .truncate(true)
                .open(path)
                .with_context(|| format!("{}: cannot open", path.display()))?;
            return Ok(Place::InPlace(f));
        }
        let (path, mode) = match fs::metadata(path) {
            Ok(m) if m.is_dir() => {
                anyhow::bail!("{}: is a directory: name a file", path.display())
            }
            Ok(m) if !m.is_file() => {
                // A device, FIFO or socket: never truncated into a file,
                // never removed.
                let f = OpenOptions::new()
                    .write(true)
                    .open(path)
                    .with_context(|| format!("{}: cannot open", path.display()))?;
                return Ok(Place::InPlace(f));
            }
            Ok(m) => {
                let real = fs::canonicalize(path)
                    .with_context(|| format!("{}: cannot resolve", path.display()))?;
                (real, Some(m.permissions()))
            }
            // New (or a dangling symbolic link, which the rename replaces
            // rather than writing where it points).
            Err(e) if e.kind() == io::ErrorKind::NotFound => (path.to_owned(), None),
            Err(e) => {
                return Err(e).with_context(|| format!("{}: cannot stat", path.display()));
            }
        };
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let file_name = path.file_name().unwrap_or_default().to_string_lossy();
        let temp = tempfile::Builder::new()
            .prefix(&format!(".{file_name}."))
            .suffix(".blockdiff-tmp")
            .tempfile_in(dir)
            .with_context(|| format!("{}: cannot create", path.display()))?;
        Ok(Place::Replace { temp, path, mode })
    }

    fn file(&self) -> &File {
        match self {
            Place::Replace { temp, .. } => temp.as_file(),
            Place::InPlace(f) => f,
        }
    }

    /// Makes the written file the output: fsync and rename.
    fn commit(self) -> anyhow::Result<()> {
        let Place::Replace { temp, path, mode } = self else {
            return Ok(());
        };
        temp.as_file()
            .sync_all()
            .with_context(|| format!("{}: cannot write (fsync)", path.display()))?;
        if let Some(mode) = mode {
            temp.as_file()
                .set_permissions(mode)
                .with_context(|| format!("{}: cannot set its mode", path.display()))?;
        }
        temp.persist(&path).map_err(|e| e.error).with_context(|| {
            format!(
                "{}: cannot rename the finished file into place",
                path.display()
            )
        })?;
        Ok(())
    }
}

/// Small writes (legacy records, digest entries, headers) are gathered; a
/// write at least this large (most v2 frames) goes to the file as it is,
/// without a copy through the buffer.
fn buffered(place: &Place) -> BufWriter<&File> {
    BufWriter::with_capacity(128 << 10, place.file())
}

/// True when the error comes from a closed pipe (standard output read by
/// `head`, say).
fn broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|c| {
        c.downcast_ref::<io::Error>()
            .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
    })
}

fn run(args: Args) -> anyhow::Result<()> {
    // First: the dump's threads inherit them from this one.
    args.polite.to_options().apply_priorities()?;
    if args.output.is_none() && io::stdout().is_terminal() {
        return Err(UsageError(
            "refusing to write a binary diff to a terminal: redirect standard output or use -o FILE"
                .into(),
        )
        .into());
    }
    let mut previous = args
        .old_digest
        .as_deref()
        .map(DigestReader::open)
        .transpose()?;
    // The format follows the old digest's unless asked for; a new dump is v2.
    let format = match (args.format.requested()?, &previous) {
        (Some(f), _) => f,
        (None, Some(p)) if p.spec().format == blockdiff_core::DigestFormat::Legacy => {
            DiffFormat::Legacy(blockdiff_core::Compression::None)
        }
        (None, _) => DiffFormat::default(),
    };
    let mut options = DumpOptions {
        block_size: args.block_size,
        hash: args.format.hash_for(Some(format)),
        generation: args
            .generation
            .unwrap_or_else(|| previous.as_ref().map_or(1, |p| p.spec().generation + 1)),
        threads: args.threads,
        map_source: !args.no_mmap,
        ..DumpOptions::default()
    };
    args.polite.to_options().fill_dump_options(&mut options);
    options.validate()?;
    let source: DumpSource<Box<dyn Read + Send>> = match &args.source {
        Some(p) if p.as_os_str() != "-" => DumpSource::open(p)?.boxed(),
        _ => DumpSource::stream(io::stdin(), "standard input").boxed(),
    };

    // Opened before reading anything: a path that cannot be written fails
    // the run at once. Nothing is committed unless the whole dump is.
    let out_place = args.output.as_deref().map(Place::open).transpose()?;
    let digest_place = args.new_digest.as_deref().map(Place::open).transpose()?;
    let (out, out_name): (Box<dyn Write>, PathBuf) = match (&out_place, &args.output) {
        (Some(place), Some(p)) => (Box::new(buffered(place)), p.clone()),
        _ => (
            Box::new(io::stdout().lock()),
            PathBuf::from("standard output"),
        ),
    };
    let (digest_out, digest_name): (Box<dyn Write>, PathBuf) =
        match (&digest_place, &args.new_digest) {
            (Some(place), Some(p)) => (Box::new(buffered(place)), p.clone()),
            _ => (Box::new(io::sink()), PathBuf::from("(no digest)")),
        };
    let mut digest = DigestWriter::new(digest_out, digest_name);
    let mut progress = StderrProgress::new("blockdiff-dump", args.quiet);
    let prev = previous.as_mut();
    let written = (|| -> anyhow::Result<()> {
        let out = format.stream_compression().writer(out);
        let mut sink = FormatSink::new(format, out, &out_name);
        dump(
            source,
            prev,
            &mut sink,
            &mut digest,
            &options,
            &mut progress,
        )?;
        sink.into_inner()?
            .finish()
            .with_context(|| format!("{}: cannot write", out_name.display()))?;
        Ok(())
    })();
    drop(digest);
    if let Err(e) = written {
        // The temporary files go with their places; X of --new-digest X is
        // left as it was.
        let not_written = match &args.new_digest {
            Some(p) => format!(" ({} not written)", p.display()),
            None => String::new(),
        };
        if args.output.is_none() && broken_pipe(&e) {
            return Err(e.context(format!(
                "the diff is incomplete: standard output was closed before the dump ended{not_written}"
            )));
        }
        return Err(e.context(format!("dump failed{not_written}")));
    }
    // The diff first: a new digest never exists without its diff.
    if let Some(place) = out_place {
        place.commit()?;
    }
    if let Some(place) = digest_place {
        place.commit()?;
    }
    Ok(())
}
