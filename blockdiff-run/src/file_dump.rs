//! [`FileDump`]: a dump outside any store, as the original
//! `blockdiff_dump`: a file or standard input against an old digest, to a
//! diff and a new digest, each written whole or not at all.

use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use blockdiff_core::{
    BlockSize, DigestReader, DigestWriter, DumpOptions, DumpReport, DumpSource, FormatSink,
    PreviousFormat, Progress, dump, resolve_format,
};

use crate::output_file::OutputFile;
use crate::{FormatChoice, PoliteOptions, RunError};

/// A dump of `source` (standard input when `None`) against `old_digest`,
/// writing the diff to `output` (standard output when `None`) and the new
/// digest to `new_digest`. The format, block size and hash follow the old
/// digest's unless asked for; a full dump is v2.
#[derive(Debug, Clone)]
pub struct FileDump {
    /// The file or device to read; `None` (or `-`): standard input.
    pub source: Option<PathBuf>,
    /// The previous generation's digest: only blocks whose hash differs
    /// from it are written.
    pub old_digest: Option<PathBuf>,
    /// Where the new digest goes.
    pub new_digest: Option<PathBuf>,
    /// Where the diff goes; `None`: the standard output given to
    /// [`FileDump::run`].
    pub output: Option<PathBuf>,
    /// Block size of a full dump.
    pub block_size: BlockSize,
    /// The format asked for.
    pub format: FormatChoice,
    /// Rate limit, priorities, page cache.
    pub polite: PoliteOptions,
    /// Generation number recorded (`None`: the old digest's plus one, or 1).
    pub generation: Option<u64>,
    /// Hash and compression threads (0: one per core).
    pub threads: usize,
    /// Map the source's chunks rather than `pread` them.
    pub map_source: bool,
}

/// Small writes (legacy records, digest entries, headers) are gathered; a
/// write at least this large (most v2 frames) goes to the file as it is,
/// without a copy through the buffer.
fn buffered(place: &OutputFile) -> BufWriter<&std::fs::File> {
    BufWriter::with_capacity(128 << 10, place.file())
}

/// True when the error comes from a closed pipe (standard output read by
/// `head`, say).
fn broken_pipe(err: &RunError) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cause {
        if e.downcast_ref::<io::Error>()
            .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
        {
            return true;
        }
        cause = e.source();
    }
    false
}

impl FileDump {
    /// Runs the dump, reading `stdin` and writing `stdout` where no path
    /// is given. Nothing is committed unless the whole dump is: the diff is
    /// renamed into place first, then the new digest (a new digest never
    /// exists without its diff).
    pub fn run(
        &self,
        stdin: impl Read + Send,
        stdout: impl Write,
        progress: &mut dyn Progress,
    ) -> Result<DumpReport, RunError> {
        // First: the dump's threads inherit them from this one.
        self.polite.apply_priorities()?;
        let mut previous = self
            .old_digest
            .as_deref()
            .map(DigestReader::open)
            .transpose()
            .map_err(blockdiff_core::Error::from)?;
        let format = resolve_format(
            self.format.requested()?,
            previous.as_ref().map(|p| PreviousFormat::Digest {
                format: p.spec().format,
                path: p.path(),
            }),
        )?;
        let mut options = DumpOptions {
            block_size: self.block_size,
            hash: self.format.hash_for(Some(format)),
            generation: self
                .generation
                .unwrap_or_else(|| previous.as_ref().map_or(1, |p| p.spec().generation + 1)),
            threads: self.threads,
            map_source: self.map_source,
            ..DumpOptions::default()
        };
        self.polite.fill_dump_options(&mut options);
        options.validate()?;
        let source: DumpSource<Box<dyn Read + Send + '_>> = match &self.source {
            Some(p) if p.as_os_str() != "-" => DumpSource::open(p)?.boxed(),
            _ => DumpSource::stream(stdin, "standard input").boxed(),
        };

        // Opened before reading anything: a path that cannot be written
        // fails the run at once.
        let out_place = self.output.as_deref().map(OutputFile::open).transpose()?;
        let digest_place = self
            .new_digest
            .as_deref()
            .map(OutputFile::open)
            .transpose()?;
        let (out, out_name): (Box<dyn Write + '_>, &Path) = match (&out_place, &self.output) {
            (Some(place), Some(p)) => (Box::new(buffered(place)), p),
            _ => (Box::new(stdout), Path::new("standard output")),
        };
        let (digest_out, digest_name): (Box<dyn Write>, PathBuf) =
            match (&digest_place, &self.new_digest) {
                (Some(place), Some(p)) => (Box::new(buffered(place)), p.clone()),
                _ => (Box::new(io::sink()), PathBuf::from("(no digest)")),
            };
        let mut digest = DigestWriter::new(digest_out, digest_name);
        let written = (|| -> Result<DumpReport, RunError> {
            let out = format.stream_compression().writer(out);
            let mut sink = FormatSink::new(format, out, out_name);
            let report = dump(
                source,
                previous.as_mut(),
                &mut sink,
                &mut digest,
                &options,
                progress,
            )?;
            sink.into_inner()?.finish().map_err(|e| RunError::Output {
                path: out_name.to_owned(),
                what: "cannot write",
                source: Some(e),
            })?;
            Ok(report)
        })();
        drop(digest);
        let report = written.map_err(|e| RunError::DumpFailed {
            // The temporary files go with their places; X of --new-digest
            // X is left as it was.
            stdout_closed: self.output.is_none() && broken_pipe(&e),
            not_written: self.new_digest.clone(),
            source: Box::new(e),
        })?;
        // The diff first: a new digest never exists without its diff.
        if let Some(place) = out_place {
            place.commit()?;
        }
        if let Some(place) = digest_place {
            place.commit()?;
        }
        Ok(report)
    }
}
