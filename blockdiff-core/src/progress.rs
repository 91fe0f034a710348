use std::fmt;
use std::path::PathBuf;

use archive_format::{BlockSize, HashAlgorithm};

/// Something a user should know that is not an error.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Notice {
    /// The previous digest was made with another block size than the one
    /// asked for; a chain keeps one block size, so the digest's wins.
    BlockSizeFromDigest {
        /// The digest file.
        digest: PathBuf,
        /// The block size asked for.
        requested: BlockSize,
        /// The block size used (the digest's).
        used: BlockSize,
    },
    /// The previous digest uses another hash algorithm than the one asked
    /// for; a chain keeps one algorithm, so the digest's wins.
    HashFromDigest {
        /// The digest file.
        digest: PathBuf,
        /// The algorithm asked for.
        requested: HashAlgorithm,
        /// The algorithm used (the digest's).
        used: HashAlgorithm,
    },
    /// A generation's metadata file could not be used (a restore goes on
    /// without the facts it would give: it only adds checks).
    UnusableMetadata {
        /// The metadata file.
        path: PathBuf,
        /// What is wrong with it.
        detail: String,
    },
    /// Leftovers of an interrupted earlier run were removed.
    RemovedLeftover {
        /// The file removed.
        path: PathBuf,
    },
    /// Uploads that an interrupted earlier run started and never completed
    /// were aborted (their parts freed; no object was touched).
    AbortedUploads {
        /// Where: the chain's name.
        chain: PathBuf,
        /// How many.
        count: usize,
    },
}

impl fmt::Display for Notice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Notice::BlockSizeFromDigest {
                digest,
                requested,
                used,
            } => write!(
                f,
                "{}: block size is {used}, not the {requested} asked for; using {used} (a chain keeps one block size)",
                digest.display()
            ),
            Notice::HashFromDigest {
                digest,
                requested,
                used,
            } => write!(
                f,
                "{}: hash is {used}, not the {requested} asked for; using {used} (a chain keeps one hash)",
                digest.display()
            ),
            Notice::UnusableMetadata { path, detail } => write!(
                f,
                "{}: ignored ({detail}); the restore goes on without the source size it records",
                path.display()
            ),
            Notice::RemovedLeftover { path } => {
                write!(f, "removed {} left by an interrupted run", path.display())
            }
            Notice::AbortedUploads { chain, count } => write!(
                f,
                "aborted {count} incomplete upload{} of {} left by an interrupted run",
                if *count == 1 { "" } else { "s" },
                chain.display()
            ),
        }
    }
}

/// Receives progress and notices from long operations. Every method has a
/// default that does nothing, so an implementation picks what it needs.
pub trait Progress {
    /// A notice for the user.
    fn notice(&mut self, _notice: Notice) {}
    /// `bytes` more of the source were processed (dump) or written (restore).
    fn advance(&mut self, _bytes: u64) {}
    /// Asked after every chunk of a dump and once more just before a backup
    /// commits its generation. `Some(reason)` stops the run with
    /// [`Error::Stopped`](crate::Error::Stopped): nothing of the new
    /// generation is committed. This is how a caller stops a run on a signal,
    /// or because the snapshot being read overflowed.
    fn should_stop(&mut self) -> Option<String> {
        None
    }
    /// Asked once, after the dump and just before a backup commits its
    /// generation: the place for a check too slow to make after every
    /// chunk (has the snapshot overflowed?). `Some(reason)` stops the run
    /// as [`Progress::should_stop`] does. By default, asks `should_stop`.
    fn before_commit(&mut self) -> Option<String> {
        self.should_stop()
    }
    /// Called when a run reaches a named step of a commit or clean-up
    /// (`"backup:rename-ver"`, `"restore:rename-target"`, …; each
    /// operation documents its steps). It changes nothing by itself: it
    /// lets a caller log where a run is, and lets the tests stop a run at a
    /// known step (the tools' `BLOCKDIFF_TEST_STOP_AT` hook) instead of
    /// guessing with a timer. A wrapping progress forwards it.
    fn at_step(&mut self, _step: &'static str) {}
}

/// A borrowed progress is a progress: everything goes to it.
impl<P: Progress + ?Sized> Progress for &mut P {
    fn notice(&mut self, notice: Notice) {
        (**self).notice(notice);
    }
    fn advance(&mut self, bytes: u64) {
        (**self).advance(bytes);
    }
    fn should_stop(&mut self) -> Option<String> {
        (**self).should_stop()
    }
    fn before_commit(&mut self) -> Option<String> {
        (**self).before_commit()
    }
    fn at_step(&mut self, step: &'static str) {
        (**self).at_step(step);
    }
}

/// A [`Progress`] that ignores everything.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl Progress for NoProgress {}
