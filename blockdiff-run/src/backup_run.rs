//! [`BackupRun`]: one backup of a local or remote source into a chain,
//! from the options to the committed generation and its facts.

use std::path::{Path, PathBuf};

use blockdiff_core::{
    BackupOptions, BackupReport, BlockSize, ChainEncryption, DiffFormat, DumpOptions,
    HashAlgorithm, back_up_prepared_with,
};
use blockdiff_storage::{ChainLocation, LockOptions, StorageOptions};
use command_runner::{SshOptions, SshRunner};

use crate::remote::{AgentBinary, InstalledAgent, RemoteBackup, RemoteSource};
use crate::{
    ChainTracking, ConsistencyOptions, FormatChoice, PoliteOptions, ProgressDisplay, RunError,
    RunFacts, RunLog, SourceReader, SourceSpec, apply_tracked, timestamp,
};

/// What a backup reads: a source on this host, or on another one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackupSource {
    /// A file, device, LV or standard input here.
    Local(SourceSpec),
    /// A file, device or LV on a host reached over ssh.
    Remote(RemoteSource),
}

impl std::fmt::Display for BackupSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BackupSource::Local(spec) => spec.fmt(f),
            BackupSource::Remote(remote) => remote.fmt(f),
        }
    }
}

/// How remote hosts are reached.
#[derive(Debug, Clone, Default)]
pub struct RemoteOptions {
    /// The ssh client and its `-o` options.
    pub ssh: SshOptions,
    /// The agent to copy to remote hosts (`None`: `$BLOCKDIFF_AGENT`, else
    /// `blockdiff-agent` beside the running executable).
    pub agent: Option<PathBuf>,
}

impl RemoteOptions {
    /// Connects to `destination` over ssh (one master connection that
    /// every step shares) and puts the agent there (copied, or an earlier
    /// copy reused), saying both in `log`.
    pub fn connect(
        &self,
        destination: &str,
        log: &RunLog,
    ) -> Result<(SshRunner, InstalledAgent), RunError> {
        let agent = AgentBinary::locate(self.agent.as_deref())?;
        if !agent.is_static() {
            log.warning(format_args!(
                "the agent {} is dynamically linked: it runs only on hosts with a compatible C library (scripts/build-agent.sh builds a static one)",
                agent.path().display()
            ));
        }
        log.info(format_args!("connecting to {destination}"));
        let session = SshRunner::connect(destination, &self.ssh)?;
        let installed = agent.install(&session, destination)?;
        log.info(format_args!(
            "{} the agent {destination}:{}",
            if installed.uploaded {
                "copied"
            } else {
                "reusing"
            },
            installed.path
        ));
        Ok((session, installed))
    }
}

/// The options of a backup run.
#[derive(Debug, Clone)]
pub struct BackupRunOptions {
    /// Block size of a new chain (a chain keeps its own).
    pub block_size: BlockSize,
    /// Hash threads (0: one per core).
    pub threads: usize,
    /// The format asked for.
    pub format: FormatChoice,
    /// Snapshot and quiescers.
    pub consistency: ConsistencyOptions,
    /// Rate limit, priorities, page cache.
    pub polite: PoliteOptions,
    /// How remote hosts are reached.
    pub remote: RemoteOptions,
    /// How an object store (an `s3://` name) is reached.
    pub storage: StorageOptions,
    /// How the chain's lock is taken.
    pub lock: LockOptions,
    /// The key of an encrypted chain: a new chain is started encrypted,
    /// an existing one must be encrypted with this key (`None`: a plain
    /// chain).
    pub encryption: Option<ChainEncryption>,
}

impl BackupRunOptions {
    /// The engine's options: the format asked for, the hash of a new chain,
    /// the dump's settings.
    pub fn backup_options(&self) -> Result<BackupOptions, RunError> {
        let format = self.format.requested()?;
        if self.encryption.is_some() {
            if let Some(DiffFormat::Legacy(_)) = format {
                return Err(RunError::InvalidOption(
                    "the legacy format cannot be encrypted: an encrypted chain is v2".into(),
                ));
            }
            if self.format.hash == Some(HashAlgorithm::Md5) {
                return Err(RunError::InvalidOption(
                    "an encrypted chain hashes its blocks with keyed BLAKE3: drop --hash md5"
                        .into(),
                ));
            }
        }
        let mut dump = DumpOptions {
            block_size: self.block_size,
            hash: self.format.hash_for(format),
            threads: self.threads,
            ..DumpOptions::default()
        };
        self.polite.fill_dump_options(&mut dump);
        Ok(BackupOptions { dump, format })
    }
}

/// Runs backups: a source in, a committed generation and its facts out.
/// Lines go to `log`, the dump's progress to `display`.
pub struct BackupRun<'a> {
    /// The options.
    pub options: &'a BackupRunOptions,
    /// The run's log.
    pub log: &'a RunLog,
    /// Where the dump's progress is shown.
    pub display: &'a dyn ProgressDisplay,
    /// Called at each step of the dump and the commit (the tools' test
    /// hook).
    pub step_hook: fn(&str),
}

impl BackupRun<'_> {
    /// Backs `source` up as the next generation of the chain `name`;
    /// `started` is the run's start time, as the summary shows it.
    /// `interrupted` is set when a termination signal stopped the run (an
    /// `--each` run then stops). The generation's facts are in its
    /// `NAME.N.meta.json` and returned with its report.
    pub fn back_up(
        &self,
        name: &Path,
        source: &BackupSource,
        started: String,
        interrupted: &mut Option<&'static str>,
    ) -> Result<(BackupReport, RunFacts), RunError> {
        let failed = |e: RunError| RunError::Backup {
            source_name: source.to_string(),
            name: name.to_owned(),
            source: Box::new(e),
        };
        let options = self.options;
        let store = ChainLocation::open(name, &options.storage)
            .map(|c| c.with_encryption(options.encryption.clone()))
            .map_err(RunError::from)?;
        let log = self.log;
        let mut facts = RunFacts::started_at(started);
        // Mistakes in the options, and an agent that cannot be used, are
        // reported as they are, before anything is done.
        let backup_options = options.backup_options()?;
        let report = match source {
            BackupSource::Local(spec) => {
                let mut reader = SourceReader::new(spec, &options.consistency, log.clone())?
                    .with_priorities(&options.polite)
                    .with_step_hook(self.step_hook);
                if let SourceSpec::Lvm(_) = spec {
                    reader = reader.with_tracking(ChainTracking::of(&store));
                }
                let report = self.local(&store, spec, &mut reader, &backup_options, &mut facts);
                *interrupted = reader.interrupted_by();
                report.map_err(failed)?
            }
            BackupSource::Remote(remote) => {
                facts.host = Some(remote.destination.clone());
                self.remote(&store, remote, &backup_options, &mut facts)
                    .map_err(failed)?
            }
        };
        facts.source = Some(source.to_string());
        self.finish(&store, &report, &mut facts);
        Ok((report, facts))
    }

    fn local(
        &self,
        store: &ChainLocation,
        spec: &SourceSpec,
        reader: &mut SourceReader<'_>,
        backup_options: &BackupOptions,
        facts: &mut RunFacts,
    ) -> Result<BackupReport, RunError> {
        // What is known before the dump goes to the metadata with the
        // commit; the rest (snapshot, freeze window, finish time) is added
        // after it.
        let mut early = facts.clone();
        early.source = Some(spec.to_string());
        let early = early.to_metadata();
        let display = self.display;
        let log = self.log;
        // Set when tracked changes could not be used after all.
        let fallback = std::cell::RefCell::new(None);
        let report = reader.read(
            spec,
            facts,
            Box::new(|source, tracked, progress| {
                let label = source.name().display().to_string();
                let mut progress = display.show(progress, source.size(), &label);
                let prepared = store.prepare(backup_options, &self.options.lock, &mut *progress)?;
                back_up_prepared_with(
                    prepared,
                    source,
                    &early,
                    &mut *progress,
                    |generation, dump| {
                        let reason = apply_tracked(tracked, generation, dump);
                        if let Some(reason) = &reason {
                            log.warning(format_args!(
                                "tracking: reading the whole volume: {reason}"
                            ));
                        }
                        *fallback.borrow_mut() = reason;
                    },
                )
            }),
        )?;
        if let Some(record) = &mut facts.tracking {
            record.complete(&report.dump, fallback.into_inner(), log);
        }
        Ok(report)
    }

    /// Connects to the source's host, puts the agent there and backs up
    /// through it.
    fn remote(
        &self,
        store: &ChainLocation,
        source: &RemoteSource,
        backup_options: &BackupOptions,
        facts: &mut RunFacts,
    ) -> Result<BackupReport, RunError> {
        let options = self.options;
        let log = self.log;
        let (session, installed) = options.remote.connect(&source.destination, log)?;
        RemoteBackup {
            host: &session,
            agent: &installed,
            source,
            consistency: &options.consistency,
            polite: &options.polite,
        }
        .run(
            store,
            backup_options,
            &options.lock,
            log,
            self.display,
            facts,
        )
    }

    /// Records a committed generation's facts and logs it.
    fn finish(&self, store: &ChainLocation, report: &BackupReport, facts: &mut RunFacts) {
        let log = self.log;
        facts.generation = Some(report.generation);
        facts.finished = Some(timestamp());
        // The commit recorded the generation's size; these facts join them.
        if let Err(e) = store.add_metadata(report.generation, &facts.to_metadata()) {
            // The generation is committed and complete; only its facts are
            // lost.
            log.warning(format_args!("{e}"));
        }
        let d = report.dump;
        log.info(format_args!(
            "generation {} of {} ({}, {}): {} of {} blocks changed ({} of {} bytes, {} zero blocks), diff is {} bytes",
            report.generation,
            store.name().display(),
            report.format,
            d.hash,
            d.changed_blocks,
            d.blocks,
            d.changed_bytes,
            d.source_bytes,
            d.zero_blocks,
            report.diff_bytes
        ));
        log.info(format_args!("backup completed successfully"));
    }
}
