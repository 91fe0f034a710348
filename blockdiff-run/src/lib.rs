//! Running a blockdiff backup: everything between the command line and the
//! engine (`blockdiff-core`).
//!
//! - [`BackupRun`] backs up a [`BackupSource`] (a file, a device, an LV
//!   through a snapshot, or any of them on another host) into a chain, with
//!   the plain options of [`BackupRunOptions`]: [`FormatChoice`],
//!   [`ConsistencyOptions`] (snapshot, quiescers, freeze limit) and
//!   [`PoliteOptions`] (rate limit, niceness, I/O class, page cache).
//! - [`SourceReader`] makes a source consistent for a dump step: quiesces
//!   services, takes and watches the snapshot, catches termination
//!   signals, and undoes all of it on every path. LVM goes through the
//!   `CommandRunner` seam of [`lvm_snap::Lvm`].
//! - Changed-block tracking of thin volumes: [`ChainTracking`] (a chain's
//!   tag and the base its last generation recorded, [`TrackingBase`]),
//!   [`plan_tracked_read`] (the pool's changes since the base, or why the
//!   whole volume is read), [`TrackingRecord`] (`tracking.*` in the
//!   metadata). [`SourceReader::with_tracking`] does it around a snapshot.
//! - [`remote`]: the agent protocol ([`remote::AgentRequest`],
//!   [`remote::AgentReport`], packets), the backup host's side
//!   ([`remote::RemoteBackup`]) and the agent's ([`remote::serve_agent`]);
//!   a restore onto a target on the agent's host
//!   ([`remote::RemoteRestore`], [`remote::RestoreRequest`]).
//! - [`FileDump`]: a dump outside any store (`blockdiff-dump`), its
//!   outputs written whole or not at all.
//! - [`RunFacts`] (`NAME.N.meta.json`), [`RunSummary`] (`--json`),
//!   [`RunLog`] (leveled lines to a sink), [`ProgressDisplay`] (a progress
//!   bar, or nothing), [`RunError`].
//!
//! Nothing here prints or exits: lines go to the caller's [`RunLog`] sink,
//! progress to its [`ProgressDisplay`], failures come back as [`RunError`].
//!
//! ```
//! use blockdiff_run::{
//!     BackupRun, BackupRunOptions, BackupSource, ConsistencyOptions, FormatChoice, NoDisplay,
//!     PoliteOptions, RemoteOptions, RunLog, SourceSpec,
//! };
//! use blockdiff_storage::{LockOptions, StorageOptions};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let image = dir.path().join("disk.img");
//! std::fs::write(&image, vec![7u8; 1 << 20])?;
//! let options = BackupRunOptions {
//!     block_size: "16k".parse()?,
//!     threads: 1,
//!     format: FormatChoice::default(),
//!     consistency: ConsistencyOptions::default(),
//!     polite: PoliteOptions::default(),
//!     remote: RemoteOptions::default(),
//!     // A local NAME; `s3://BUCKET/PREFIX/NAME` would use these.
//!     storage: StorageOptions::default(),
//!     lock: LockOptions::default(),
//!     // Some(ChainEncryption) would encrypt the chain.
//!     encryption: None,
//! };
//! let log = RunLog::discard();
//! let run = BackupRun { options: &options, log: &log, display: &NoDisplay, step_hook: |_| {} };
//! let source = BackupSource::Local(SourceSpec::Path(image));
//! let (report, facts) =
//!     run.back_up(&dir.path().join("disk"), &source, "now".into(), &mut None)?;
//! assert_eq!(report.generation, 1);
//! assert_eq!(report.dump.source_bytes, 1 << 20);
//! assert_eq!(facts.to_metadata()["generation"], "1");
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]

mod backup_run;
mod clock;
mod each;
mod error;
mod error_line;
mod facts;
mod file_dump;
mod log;
mod options;
mod output_file;
mod progress_display;
pub mod remote;
mod run_summary;
mod source_list;
mod source_reader;
mod thin_tracking;

pub use backup_run::{BackupRun, BackupRunOptions, BackupSource, RemoteOptions};
pub use clock::{local_date, local_today, timestamp};
pub use each::{back_up_each, each_chain_name, groups_to_serialize};
pub use error::{Result, RunError};
pub use error_line::error_line;
pub use facts::RunFacts;
pub use file_dump::FileDump;
pub use log::{LogLevel, RunLog, log_line};
pub use options::{ConsistencyOptions, FormatChoice, FormatKind, PoliteOptions};
pub use progress_display::{NoDisplay, ProgressDisplay};
pub use remote::ProtocolError;
pub use run_summary::{RunSummary, SummaryClock};
pub use source_list::{ListedSource, parse_source_list};
pub use source_reader::{DumpStep, SourceReader, SourceSpec};
pub use thin_tracking::{
    ChainTracking, ScanKind, TrackedRead, TrackingBase, TrackingOptions, TrackingRecord,
    apply_tracked, plan_tracked_read,
};

#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeExample;
