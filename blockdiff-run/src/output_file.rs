//! [`OutputFile`]: an output file written whole or not at all: a regular
//! file is written beside its path and renamed over it once complete; a
//! device, FIFO or open descriptor is written in place.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

use tempfile::NamedTempFile;

use crate::RunError;

fn output_error(path: &Path, what: &'static str, source: io::Error) -> RunError {
    RunError::Output {
        path: path.to_owned(),
        what,
        source: Some(source),
    }
}

/// Where an output file (a diff, a digest) is written, and how it is
/// committed.
pub enum OutputFile {
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

impl OutputFile {
    pub fn open(path: &Path) -> Result<OutputFile, RunError> {
        if names_a_descriptor(path) {
            let f = OpenOptions::new()
                .write(true)
                .truncate(true)
                .open(path)
                .map_err(|e| output_error(path, "cannot open", e))?;
            return Ok(OutputFile::InPlace(f));
        }
        let (path, mode) = match fs::metadata(path) {
            Ok(m) if m.is_dir() => {
                return Err(RunError::Output {
                    path: path.to_owned(),
                    what: "is a directory: name a file",
                    source: None,
                });
            }
            Ok(m) if !m.is_file() => {
                // A device, FIFO or socket: never truncated into a file,
                // never removed.
                let f = OpenOptions::new()
                    .write(true)
                    .open(path)
                    .map_err(|e| output_error(path, "cannot open", e))?;
                return Ok(OutputFile::InPlace(f));
            }
            Ok(m) => {
                let real =
                    fs::canonicalize(path).map_err(|e| output_error(path, "cannot resolve", e))?;
                (real, Some(m.permissions()))
            }
            // New (or a dangling symbolic link, which the rename replaces
            // rather than writing where it points).
            Err(e) if e.kind() == io::ErrorKind::NotFound => (path.to_owned(), None),
            Err(e) => {
                return Err(output_error(path, "cannot stat", e));
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
            .map_err(|e| output_error(&path, "cannot create", e))?;
        Ok(OutputFile::Replace { temp, path, mode })
    }

    pub fn file(&self) -> &File {
        match self {
            OutputFile::Replace { temp, .. } => temp.as_file(),
            OutputFile::InPlace(f) => f,
        }
    }

    /// Makes the written file the output: fsync and rename.
    pub fn commit(self) -> Result<(), RunError> {
        let OutputFile::Replace { temp, path, mode } = self else {
            return Ok(());
        };
        temp.as_file()
            .sync_all()
            .map_err(|e| output_error(&path, "cannot write (fsync)", e))?;
        if let Some(mode) = mode {
            temp.as_file()
                .set_permissions(mode)
                .map_err(|e| output_error(&path, "cannot set its mode", e))?;
        }
        temp.persist(&path).map_err(|e| {
            output_error(&path, "cannot rename the finished file into place", e.error)
        })?;
        Ok(())
    }
}
