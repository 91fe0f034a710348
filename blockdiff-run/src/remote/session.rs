//! The backup host's side of a remote backup: sends the agent its
//! request and the previous digest, writes the agent's packets into the
//! new generation, and commits it only after the agent's end packet.

use std::io::{BufReader, Read};

use blockdiff_core::{BackupOptions, BackupReport, NoProgress, PendingBackup, Progress};
use blockdiff_storage::{ChainLocation, LockOptions};
use command_runner::{CommandLine, CommandRunner};

use super::InstalledAgent;
use super::protocol::{self, PacketKind, PacketReader};
use super::request::{AgentInput, AgentReport, AgentRequest, AgentSource, PROTOCOL_VERSION};
use crate::source_reader::RunProgress;
use crate::{
    ChainTracking, ConsistencyOptions, FormatChoice, LogLevel, PoliteOptions, ProgressDisplay,
    RunError, RunFacts, RunLog, SourceSpec,
};

/// Splits `[user@]host:path` into host and path, as scp and rsync read
/// them: a colon before any slash. `./a:b` and `/x/a:b` are local paths.
pub fn split_remote(s: &str) -> Option<(&str, &str)> {
    let (host, path) = s.split_once(':')?;
    if host.is_empty() || host.contains('/') || path.is_empty() {
        return None;
    }
    Some((host, path))
}

/// A source on another host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteSource {
    /// `[user@]host`, as ssh takes it.
    pub destination: String,
    /// What to read there: a file or device, or an LV through a snapshot.
    pub spec: SourceSpec,
}

impl std::fmt::Display for RemoteSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.destination, self.spec)
    }
}

/// A backup of a source on another host, through the agent installed
/// there.
pub struct RemoteBackup<'a> {
    /// The connection to the host.
    pub host: &'a dyn CommandRunner,
    /// The agent on the host.
    pub agent: &'a InstalledAgent,
    /// What to read there.
    pub source: &'a RemoteSource,
    /// Snapshot and quiescers, applied on the host.
    pub consistency: &'a ConsistencyOptions,
    /// Rate limit and priorities, applied on the host.
    pub polite: &'a PoliteOptions,
}

impl RemoteBackup<'_> {
    /// The agent's request for a dump into `prepared`'s generation: the
    /// format, hash and block size the backup decided on, exactly.
    fn request(
        &self,
        prepared: &dyn PendingBackup,
        chain: &ChainLocation,
    ) -> Result<AgentRequest, RunError> {
        let dump = prepared.dump_options();
        let source = AgentSource::from_spec(&self.source.spec).ok_or_else(|| {
            RunError::InvalidOption("a remote source cannot be standard input".into())
        })?;
        Ok(AgentRequest {
            version: PROTOCOL_VERSION,
            source,
            generation: prepared.generation(),
            block_size: dump.block_size.get(),
            threads: dump.threads,
            format: FormatChoice::exactly(prepared.format(), dump.hash),
            previous: prepared.previous_digest().is_some(),
            consistency: self.consistency.clone(),
            polite: self.polite.clone(),
            hash_key: dump.hash_key.as_ref().map(super::request::key_hex),
            // Read under the chain's lock: the base is the current
            // generation's.
            tracking: matches!(self.source.spec, SourceSpec::Lvm(_))
                .then(|| ChainTracking::of(chain)),
        })
    }

    /// Backs the source up into `chain` (local or on an object store): the agent dumps on the host, the
    /// diff and digest stream back, the generation is committed here once
    /// the agent's stream is complete. The agent's log lines come out of
    /// `log` prefixed with the host; its facts join `facts`.
    pub fn run(
        &self,
        chain: &ChainLocation,
        options: &BackupOptions,
        lock: &LockOptions,
        log: &RunLog,
        display: &dyn ProgressDisplay,
        facts: &mut RunFacts,
    ) -> Result<BackupReport, RunError> {
        let source = self.source;
        let name = source.destination.as_str();
        let mut prepared =
            chain.prepare(options, lock, &mut RunProgress::new(log, None, None, None))?;
        let request = self.request(prepared.as_ref(), chain)?;
        let command = CommandLine::new(&self.agent.path, ["serve"]);
        // The previous digest goes up once, after the request, while the
        // dump reads it.
        // An encrypted chain's digest goes as its plaintext: the agent
        // compares block hashes, the backup host alone decrypts and
        // encrypts.
        let previous = prepared
            .open_previous_digest()?
            .map(blockdiff_core::DigestFile::into_raw);
        let mut input = AgentInput::new(&request, previous);
        let (diff_path, digest_path) = prepared.paths();
        let mut quiet_inner = NoProgress;
        let mut quiet_inner = Some(&mut quiet_inner);
        let mut bar: Option<Box<dyn Progress + '_>> = None;
        let mut shown = 0u64;
        let mut report: Option<AgentReport> = None;
        let mut remote_error: Option<String> = None;
        let mut ended = false;
        // Why the stream was refused (the stream is then stopped).
        let mut refused: Option<RunError> = None;
        let label = source.to_string();
        let mut take_packets = |stdout: &mut dyn Read| -> std::io::Result<()> {
            let mut reader = PacketReader::new(BufReader::with_capacity(256 << 10, stdout));
            let refuse = |e: RunError| RunError::AgentStream {
                host: name.to_owned(),
                source: Box::new(e),
            };
            loop {
                let packet = match reader.next_packet() {
                    Ok(Some(p)) => p,
                    Ok(None) => return Ok(()),
                    Err(e) => {
                        refused = Some(refuse(RunError::Io {
                            op: "read",
                            path: "the agent's stream".into(),
                            source: e,
                        }));
                        return Err(std::io::Error::other("the agent's stream was refused"));
                    }
                };
                let (diff, digest) = prepared.writers();
                let written = match packet {
                    (PacketKind::Diff, bytes) => diff.write_all(&bytes).map_err(|e| RunError::Io {
                        op: "write",
                        path: diff_path.clone(),
                        source: e,
                    }),
                    (PacketKind::Digest, bytes) => {
                        digest.write_all(&bytes).map_err(|e| RunError::Io {
                            op: "write",
                            path: digest_path.clone(),
                            source: e,
                        })
                    }
                    (PacketKind::Log, bytes) => {
                        let text = String::from_utf8_lossy(&bytes);
                        let (level, message) = text.split_once('\t').unwrap_or(("info", &text));
                        log.log(
                            LogLevel::from_name(level).unwrap_or(LogLevel::Info),
                            format_args!("{name}: {message}"),
                        );
                        Ok(())
                    }
                    (PacketKind::Progress, bytes) => {
                        if let Some((total, done)) = protocol::parse_progress(&bytes) {
                            if let Some(inner) = quiet_inner.take() {
                                bar = Some(display.show(inner, total, &label));
                            }
                            if let Some(bar) = bar.as_mut() {
                                bar.advance(done.saturating_sub(shown));
                            }
                            shown = shown.max(done);
                        }
                        Ok(())
                    }
                    (PacketKind::Report, bytes) => AgentReport::decode(&bytes)
                        .map(|r| report = Some(r))
                        .map_err(RunError::from),
                    (PacketKind::Error, bytes) => {
                        remote_error = Some(String::from_utf8_lossy(&bytes).into_owned());
                        Ok(())
                    }
                    (PacketKind::End, _) => {
                        ended = true;
                        Ok(())
                    }
                    // Requests and restores' packets are never sent back
                    // by a dumping agent.
                    (
                        kind @ (PacketKind::Request
                        | PacketKind::Restore
                        | PacketKind::Needs
                        | PacketKind::Blocks),
                        _,
                    ) => Err(RunError::Protocol(super::ProtocolError {
                        what: "stream",
                        detail: format!("a {kind:?} packet from the agent"),
                    })),
                    (PacketKind::Hello, _) => Ok(()),
                };
                if let Err(e) = written {
                    refused = Some(refuse(e));
                    return Err(std::io::Error::other("the agent's stream was refused"));
                }
                if ended {
                    return Ok(());
                }
            }
        };
        let ran = self
            .host
            .run_streaming(&command, Some(&mut input), &mut take_packets);
        drop(bar);
        if let Some(e) = refused {
            return Err(e);
        }
        let out = ran.map_err(|e| RunError::AgentSpawn {
            host: name.to_owned(),
            source: e,
        })?;
        if let Some(message) = remote_error {
            return Err(RunError::AgentFailed {
                host: name.to_owned(),
                message,
            });
        }
        let (true, Some(report)) = (ended, report) else {
            return Err(RunError::ConnectionLost {
                host: name.to_owned(),
                status: out.status_text(),
                stderr: match out.stderr_line() {
                    s if s.is_empty() => String::new(),
                    s => format!(": {s}"),
                },
            });
        };
        facts.merge(report.facts);
        Ok(prepared.commit(
            report.dump,
            &facts.to_metadata(),
            &mut RunProgress::new(log, None, None, None),
        )?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use blockdiff_core::GenerationStore;
    use std::io::{self, Write};
    use std::path::{Path, PathBuf};
    use std::sync::{Arc, Mutex};

    use blockdiff_core::{
        BackupOptions, DigestFormat, DumpOptions, DumpReport, DumpSource, NoProgress, backup,
    };
    use command_runner::{CommandOutput, StdoutConsumer};

    use crate::remote::serve_agent;

    /// A `Write` into shared memory, for the agent's packets.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// A host whose agent runs in this process: the backup host's session
    /// talks to the real agent code, through memory instead of ssh.
    /// `cut` keeps only that many bytes of the agent's output, as a
    /// connection that dies would.
    struct LoopbackHost {
        run_dirs: PathBuf,
        cut: Option<usize>,
        calls: Mutex<Vec<String>>,
    }

    impl LoopbackHost {
        fn new(run_dirs: &Path, cut: Option<usize>) -> Self {
            LoopbackHost {
                run_dirs: run_dirs.to_owned(),
                cut,
                calls: Mutex::new(Vec::new()),
            }
        }
    }

    impl CommandRunner for LoopbackHost {
        fn run(&self, command: &CommandLine) -> io::Result<CommandOutput> {
            Err(io::Error::other(format!("unexpected command {command}")))
        }

        fn run_streaming(
            &self,
            command: &CommandLine,
            input: Option<&mut (dyn Read + Send)>,
            consume: StdoutConsumer<'_>,
        ) -> io::Result<CommandOutput> {
            self.calls.lock().unwrap().push(command.to_string());
            let output = Shared::default();
            let ok = serve_agent(
                input.expect("the request goes on stdin"),
                output.clone(),
                &self.run_dirs,
                |_| {},
            )?;
            let mut bytes = output.0.lock().unwrap().clone();
            if let Some(cut) = self.cut {
                bytes.truncate(cut);
            }
            consume(&mut &bytes[..])?;
            Ok(CommandOutput {
                status: Some(if ok && self.cut.is_none() { 0 } else { 255 }),
                stdout: Vec::new(),
                stderr: Vec::new(),
            })
        }
    }

    fn options() -> BackupOptions {
        BackupOptions {
            dump: DumpOptions {
                block_size: "4k".parse().unwrap(),
                threads: 1,
                ..DumpOptions::default()
            },
            format: None,
        }
    }

    fn remote_backup(
        host: &dyn CommandRunner,
        store: &GenerationStore,
        image: &Path,
        facts: &mut RunFacts,
    ) -> Result<BackupReport, RunError> {
        remote_backup_to(host, &ChainLocation::Local(store.clone()), image, facts)
    }

    fn remote_backup_to(
        host: &dyn CommandRunner,
        chain: &ChainLocation,
        image: &Path,
        facts: &mut RunFacts,
    ) -> Result<BackupReport, RunError> {
        let agent = InstalledAgent {
            path: "/home/b/.cache/blockdiff/blockdiff-agent-0123".into(),
            uploaded: false,
        };
        let source = RemoteSource {
            destination: "db1".into(),
            spec: SourceSpec::Path(image.to_owned()),
        };
        RemoteBackup {
            host,
            agent: &agent,
            source: &source,
            consistency: &ConsistencyOptions::default(),
            polite: &PoliteOptions::default(),
        }
        .run(
            chain,
            &options(),
            &LockOptions::default(),
            &RunLog::discard(),
            &crate::NoDisplay,
            facts,
        )
    }

    #[test]
    fn a_remote_backup_commits_what_a_local_one_would() {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("disk.img");
        let mut data: Vec<u8> = (0..1u32 << 20)
            .map(|i| (i / 4096 * 7 + i % 13) as u8)
            .collect();
        std::fs::write(&image, &data).unwrap();
        let remote = GenerationStore::new(dir.path().join("remote"));
        let local = GenerationStore::new(dir.path().join("local"));
        let host = LoopbackHost::new(dir.path(), None);
        for round in 0..2 {
            if round == 1 {
                // Two blocks change.
                data[5000] ^= 1;
                data[900_000] ^= 1;
                std::fs::write(&image, &data).unwrap();
            }
            let mut facts = RunFacts::started_at("then");
            let r = remote_backup(&host, &remote, &image, &mut facts).unwrap();
            let l = backup(
                &local,
                DumpSource::open(&image).unwrap(),
                &options(),
                &mut NoProgress,
            )
            .unwrap();
            assert_eq!(r.generation, round + 1);
            // The agent's report leaves out the fingerprint (the digest
            // written here holds it).
            let local_dump = DumpReport {
                fingerprint: None,
                ..l.dump
            };
            assert_eq!(r.dump, local_dump, "round {round}");
            assert_eq!(r.diff_bytes, l.diff_bytes, "round {round}");
            let digest = |s: &GenerationStore| {
                std::fs::read(s.digest_path(r.generation, DigestFormat::V2)).unwrap()
            };
            assert_eq!(digest(&remote), digest(&local), "round {round}");
            assert_eq!(facts.source.as_deref(), Some(image.to_str().unwrap()));
            let meta = remote.read_metadata(r.generation).unwrap().unwrap();
            assert_eq!(meta["started"], "then");
            assert_eq!(meta["source_size"], (1u32 << 20).to_string());
        }
        assert_eq!(
            *host.calls.lock().unwrap(),
            ["/home/b/.cache/blockdiff/blockdiff-agent-0123 serve"; 2]
        );
        // The agent's run directory is gone.
        assert!(
            std::fs::read_dir(dir.path()).unwrap().all(|e| !e
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("run."))
        );
    }

    /// An encrypted chain backed up from a remote host: the agent hashes
    /// with the chain's keyed hash (sent as a derived key, never the chain
    /// key) and compares with the previous digest's plaintext; the backup
    /// host seals what it commits. The chain restores exactly, and a
    /// local backup of the same image changes the same blocks.
    #[test]
    fn a_remote_backup_of_an_encrypted_chain() {
        use blockdiff_core::{ChainEncryption, ChainKey, KeySecret, RestoreOptions, RestorePlan};
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("disk.img");
        let mut data: Vec<u8> = (0..1u32 << 20)
            .map(|i| (i / 4096 * 7 + i % 13) as u8)
            .collect();
        let enc = || ChainEncryption::new(KeySecret::Key(ChainKey::from_bytes([5; 32])));
        let remote = GenerationStore::new(dir.path().join("remote")).with_encryption(enc());
        let local = GenerationStore::new(dir.path().join("local")).with_encryption(enc());
        let host = LoopbackHost::new(dir.path(), None);
        for round in 0..2u64 {
            if round == 1 {
                data[5000] ^= 1;
                data[900_000] ^= 1;
            }
            std::fs::write(&image, &data).unwrap();
            let mut facts = RunFacts::started_at("then");
            let r = remote_backup(&host, &remote, &image, &mut facts).unwrap();
            let l = backup(
                &local,
                DumpSource::open(&image).unwrap(),
                &options(),
                &mut NoProgress,
            )
            .unwrap();
            assert_eq!(r.generation, round + 1);
            assert_eq!(
                r.dump.changed_blocks, l.dump.changed_blocks,
                "round {round}"
            );
            assert_eq!(r.dump.hash, blockdiff_core::HashAlgorithm::Blake3Keyed);
            let sealed = std::fs::read(remote.digest_path(r.generation, DigestFormat::V2)).unwrap();
            assert!(blockdiff_core::is_sealed(&sealed));
            let out = dir.path().join(format!("out{round}"));
            RestorePlan::new(&remote, &RestoreOptions::default())
                .unwrap()
                .execute(&out, &mut NoProgress)
                .unwrap();
            assert!(std::fs::read(&out).unwrap() == data, "round {round}");
        }
    }

    /// `blockdiff-backup s3://… root@web1:/dev/vg0/www`: the agent's stream
    /// goes through this host into the object store (OpenDAL's in-memory
    /// service here; the real S3 path is the same code, tested against
    /// Garage in `tools/tests/s3_cli.rs`), nothing staged locally but the
    /// digest cache, and every generation restores exactly; plain, and
    /// encrypted (every object sealed on this host).
    #[test]
    fn a_remote_backup_streams_into_an_object_store() {
        use blockdiff_core::{
            ChainEncryption, ChainKey, GenerationSource, KeySecret, RestoreOptions, RestorePlan,
        };
        use blockdiff_storage::{ObjectChain, ObjectStorage, OpenDalStorage};

        for encrypted in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let image = dir.path().join("disk.img");
            let mut data: Vec<u8> = (0..1u32 << 20)
                .map(|i| (i / 4096 * 11 + i % 17) as u8)
                .collect();
            let storage = std::sync::Arc::new(OpenDalStorage::memory().unwrap());
            let mut chain =
                ObjectChain::new(storage.clone(), "www", dir.path().join("cache")).unwrap();
            if encrypted {
                chain = chain.with_encryption(ChainEncryption::new(KeySecret::Key(
                    ChainKey::from_bytes([9; 32]),
                )));
            }
            let location = ChainLocation::Objects(chain.clone());
            let host = LoopbackHost::new(dir.path(), None);
            let mut images = Vec::new();
            for round in 0..2u64 {
                if round == 1 {
                    data[70_000] ^= 1;
                }
                std::fs::write(&image, &data).unwrap();
                let mut facts = RunFacts::started_at("then");
                let r = remote_backup_to(&host, &location, &image, &mut facts).unwrap();
                assert_eq!(r.generation, round + 1);
                assert_eq!(r.dump.changed_blocks, [256, 1][round as usize]);
                images.push(data.clone());
            }
            assert_eq!(chain.current_generation().unwrap(), Some(2));
            let meta = chain.read_metadata(2).unwrap().unwrap();
            assert_eq!(meta["source_size"], (1u32 << 20).to_string());
            for key in ["www.2", "www.2.digest", "www.2.meta.json"] {
                let mut head = [0u8; 8];
                storage.read_range(key, 0, &mut head).unwrap();
                assert_eq!(blockdiff_core::is_sealed(&head), encrypted, "{key}");
            }
            for (i, want) in images.iter().enumerate() {
                let out = dir.path().join(format!("out{i}"));
                RestorePlan::new(
                    &chain,
                    &RestoreOptions {
                        generation: Some(i as u64 + 1),
                        ..RestoreOptions::default()
                    },
                )
                .unwrap()
                .execute(&out, &mut NoProgress)
                .unwrap();
                assert!(
                    std::fs::read(&out).unwrap() == *want,
                    "generation {}",
                    i + 1
                );
            }
        }
    }

    /// The agent's input and output of a small remote backup, as they
    /// cross the wire, are kept in `testdata/agent/`: they seed the fuzz
    /// targets of the packet reader and the request. This test fails when
    /// the protocol changes and the captures were not renewed (run it with
    /// `BLOCKDIFF_BLESS=1` to renew them).
    #[test]
    fn the_agent_captures_in_testdata_are_current() {
        let dir = tempfile::tempdir().unwrap();
        // The source's path is in the captures: a fixed one.
        let image = Path::new("/tmp/blockdiff-agent-capture.img");
        let data: Vec<u8> = (0..64u32 << 10).map(|i| (i / 4096 + i % 7) as u8).collect();
        std::fs::write(image, &data).unwrap();
        let store = GenerationStore::new(dir.path().join("b"));
        /// Records the agent's input and output.
        struct Capturing {
            inner: LoopbackHost,
            input: Mutex<Vec<u8>>,
            output: Mutex<Vec<u8>>,
        }
        impl CommandRunner for Capturing {
            fn run(&self, command: &CommandLine) -> io::Result<CommandOutput> {
                self.inner.run(command)
            }
            fn run_streaming(
                &self,
                command: &CommandLine,
                input: Option<&mut (dyn Read + Send)>,
                consume: StdoutConsumer<'_>,
            ) -> io::Result<CommandOutput> {
                let mut bytes = Vec::new();
                input.unwrap().read_to_end(&mut bytes)?;
                *self.input.lock().unwrap() = bytes.clone();
                let output = &self.output;
                self.inner
                    .run_streaming(command, Some(&mut &bytes[..]), &mut |out| {
                        let mut all = Vec::new();
                        out.read_to_end(&mut all)?;
                        *output.lock().unwrap() = all.clone();
                        consume(&mut &all[..])
                    })
            }
        }
        let host = Capturing {
            inner: LoopbackHost::new(dir.path(), None),
            input: Mutex::default(),
            output: Mutex::default(),
        };
        remote_backup(&host.inner, &store, image, &mut RunFacts::default()).unwrap();
        let mut changed = data;
        changed[10_000] ^= 0xff;
        std::fs::write(image, &changed).unwrap();
        // The second generation, captured: its request carries the digest.
        remote_backup(&host, &store, image, &mut RunFacts::default()).unwrap();
        let _ = std::fs::remove_file(image);
        let captures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/agent");
        if std::env::var_os("BLOCKDIFF_BLESS").is_some() {
            std::fs::create_dir_all(&captures).unwrap();
            std::fs::write(
                captures.join("agent-input.bin"),
                &*host.input.lock().unwrap(),
            )
            .unwrap();
            std::fs::write(
                captures.join("agent-output.bin"),
                &*host.output.lock().unwrap(),
            )
            .unwrap();
        }
        // The digest's header differs from run to run (its chain
        // identity), so the captures are checked for what they must be:
        // streams of the protocol as it is now.
        let renew = "is not a stream of the agent protocol as it is now; renew the captures with BLOCKDIFF_BLESS=1";
        let input = std::fs::read(captures.join("agent-input.bin")).unwrap();
        let mut reader = PacketReader::new(&input[..]);
        let request = AgentRequest::read_from(&mut reader).expect(renew);
        assert!(request.previous, "the captured request carries a digest");
        let mut digest = Vec::new();
        super::super::receive_digest(&mut reader, &mut digest).expect(renew);
        assert!(digest.len() > 64, "agent-input.bin {renew}");
        let output = std::fs::read(captures.join("agent-output.bin")).unwrap();
        let mut reader = PacketReader::new(&output[..]);
        let mut kinds = Vec::new();
        while let Some((kind, payload)) = reader.next_packet().expect(renew) {
            if kind == PacketKind::Report {
                AgentReport::decode(&payload).expect(renew);
            }
            kinds.push(kind);
        }
        for kind in [PacketKind::Diff, PacketKind::Digest, PacketKind::Progress] {
            assert!(
                kinds.contains(&kind),
                "agent-output.bin has no {kind:?}: {renew}"
            );
        }
        assert_eq!(
            kinds[kinds.len() - 2..],
            [PacketKind::Report, PacketKind::End],
            "agent-output.bin {renew}"
        );
    }

    #[test]
    fn a_stream_cut_short_commits_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("disk.img");
        std::fs::write(&image, vec![9u8; 256 << 10]).unwrap();
        let store = GenerationStore::new(dir.path().join("b"));
        // A complete first generation, for the length of a whole stream.
        let whole = LoopbackHost::new(dir.path(), None);
        remote_backup(&whole, &store, &image, &mut RunFacts::default()).unwrap();
        // Incompressible: the stream is longer than the source.
        let mut x = 0x9e37_79b9_u32;
        let noise: Vec<u8> = (0..256 << 10)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect();
        std::fs::write(&image, noise).unwrap();
        for cut in [0, 40, 5000, 200_000, 256 << 10] {
            let host = LoopbackHost::new(dir.path(), Some(cut));
            let e = remote_backup(&host, &store, &image, &mut RunFacts::default()).unwrap_err();
            assert!(
                matches!(
                    e,
                    RunError::ConnectionLost { .. } | RunError::AgentStream { .. }
                ),
                "cut at {cut}: {e}"
            );
            assert_eq!(store.current_generation().unwrap(), Some(1), "cut at {cut}");
        }
        // The agent's failure is reported as its own.
        std::fs::remove_file(&image).unwrap();
        let e = remote_backup(&whole, &store, &image, &mut RunFacts::default()).unwrap_err();
        match &e {
            RunError::AgentFailed { host, message } => {
                assert_eq!(host, "db1");
                assert!(message.contains("disk.img"), "{message}");
            }
            other => panic!("{other}"),
        }
        assert_eq!(store.current_generation().unwrap(), Some(1));
    }

    #[test]
    fn remote_locations_are_told_from_local_paths() {
        assert_eq!(
            split_remote("root@db1:/dev/vg/lv"),
            Some(("root@db1", "/dev/vg/lv"))
        );
        assert_eq!(split_remote("db1:vg0/data"), Some(("db1", "vg0/data")));
        assert_eq!(split_remote("/srv/a:b"), None);
        assert_eq!(split_remote("./a:b"), None);
        assert_eq!(split_remote("image.img"), None);
        assert_eq!(split_remote("host:"), None);
        assert_eq!(split_remote(":path"), None);
    }
}
