//! The backup host's side of a restore over ssh: sends the agent its
//! request and generation K's digest, waits for the ranges its target
//! needs, and sends those ranges' bytes, read from the chain and checked
//! against the digest, over the same connection.

use std::io::{self, BufReader, Read};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};

use blockdiff_core::{GenerationReader, NoProgress, Progress, ReaderOptions};
use blockdiff_storage::ChainLocation;
use command_runner::{CommandLine, CommandRunner};

use super::InstalledAgent;
use super::protocol::{self, GREETING, PacketKind, PacketReader, write_packet};
use super::request::{PROTOCOL_VERSION, ProtocolError, digest_packet, key_hex};
use super::restore_request::{
    BLOCKS_PER_PACKET, RestoreAgentReport, RestoreMode, RestoreRequest, parse_needs,
};
use crate::{LogLevel, PoliteOptions, ProgressDisplay, RunError, RunLog};

/// A file, block device or logical volume on another host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteTarget {
    /// `[user@]host`, as ssh takes it.
    pub destination: String,
    /// The file or device there (for an LV, its device).
    pub path: PathBuf,
    /// The logical volume, when the target is one (`--lvm HOST:VG/LV`).
    pub lvm: Option<lvm_snap::LvPath>,
}

impl RemoteTarget {
    /// The logical volume `lv` on `destination`.
    pub fn lvm(destination: &str, lv: lvm_snap::LvPath) -> Self {
        RemoteTarget {
            destination: destination.to_owned(),
            path: lv.device(),
            lvm: Some(lv),
        }
    }
}

impl std::fmt::Display for RemoteTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.lvm {
            Some(lv) => write!(f, "{}:{lv}", self.destination),
            None => write!(f, "{}:{}", self.destination, self.path.display()),
        }
    }
}

/// How a restore over ssh runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteRestoreOptions {
    /// The generation; `None` for the last committed one.
    pub generation: Option<u64>,
    /// Delta (compare, send what differs) or full (send everything).
    pub mode: RestoreMode,
    /// Threads that hash the target on its host (0: one per core).
    pub threads: usize,
    /// Read the whole target again at the end and compare it.
    pub verify: bool,
    /// Write to a block device that is in use.
    pub force: bool,
    /// Make a regular file of another size the generation's size.
    pub resize: bool,
    /// For an LV target: keep a snapshot of its state before the restore.
    pub keep_before: bool,
}

impl Default for RemoteRestoreOptions {
    fn default() -> Self {
        RemoteRestoreOptions {
            generation: None,
            mode: RestoreMode::Delta,
            threads: 0,
            verify: true,
            force: false,
            resize: false,
            keep_before: false,
        }
    }
}

/// What a restore over ssh did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemoteRestoreReport {
    /// The generation restored.
    pub generation: u64,
    /// Its size in bytes.
    pub source_size: u64,
    /// The agent's figures.
    pub agent: RestoreAgentReport,
    /// Bytes sent to the agent (request, digest, blocks, packet headers).
    pub bytes_sent: u64,
    /// Bytes received from it.
    pub bytes_received: u64,
}

/// A restore onto a target on another host, through the agent there.
pub struct RemoteRestore<'a> {
    /// The connection to the host.
    pub host: &'a dyn CommandRunner,
    /// The agent on the host.
    pub agent: &'a InstalledAgent,
    /// What to write there.
    pub target: &'a RemoteTarget,
    /// Rate limit and priorities for reading the target there.
    pub polite: &'a PoliteOptions,
}

impl RemoteRestore<'_> {
    /// Restores a generation of `chain` onto the target: the chain is
    /// checked and read here, every block checked against the digest
    /// before it is sent; the agent checks each again before writing it.
    /// The agent's log lines come out of `log` prefixed with the host.
    pub fn run(
        &self,
        chain: &ChainLocation,
        options: &RemoteRestoreOptions,
        log: &RunLog,
        display: &dyn ProgressDisplay,
    ) -> Result<RemoteRestoreReport, RunError> {
        let name = self.target.destination.as_str();
        let source = chain.source();
        let reader = Arc::new(GenerationReader::open(
            source,
            &ReaderOptions {
                generation: options.generation,
                ..ReaderOptions::default()
            },
        )?);
        let (generation, size) = (reader.generation(), reader.size());
        let block_size = reader.block_size() as usize;
        // Whole blocks in every packet.
        let piece = BLOCKS_PER_PACKET / block_size * block_size;
        if piece == 0 {
            return Err(RunError::InvalidOption(format!(
                "blocks of {block_size} bytes are too large for a restore over ssh (at most {BLOCKS_PER_PACKET})"
            )));
        }
        let digest = source.open_digest(generation)?;
        let request = RestoreRequest {
            version: PROTOCOL_VERSION,
            target: self.target.path.clone(),
            lvm: self.target.lvm.as_ref().map(ToString::to_string),
            keep_before: options.keep_before,
            generation,
            size,
            mode: options.mode,
            threads: options.threads,
            verify: options.verify,
            force: options.force,
            resize: options.resize,
            polite: self.polite.clone(),
            hash_key: source.block_hash_key().as_ref().map(key_hex),
        };
        let (needs_tx, needs_rx) = mpsc::channel();
        let mut input = RestoreInput {
            pending: Vec::new(),
            at: 0,
            stage: Stage::Digest(digest.into_raw()),
            needs: needs_rx,
            reader: reader.clone(),
            piece,
            sent: Arc::new(AtomicU64::new(0)),
            blocks_sent: Arc::new(AtomicU64::new(0)),
            failure: Arc::new(Mutex::new(None)),
        };
        write_packet(&mut input.pending, PacketKind::Hello, GREETING).expect("writes to memory");
        write_packet(&mut input.pending, PacketKind::Restore, &request.encode())
            .expect("writes to memory");
        let (sent, blocks_sent, failure) = (
            input.sent.clone(),
            input.blocks_sent.clone(),
            input.failure.clone(),
        );
        let label = self.target.to_string();
        let mut state = SessionState::default();
        let mut needs_tx = Some(needs_tx);
        let mut take_packets = |stdout: &mut dyn Read| -> io::Result<()> {
            let result = state.take(stdout, name, size, &mut needs_tx, log, display, &label);
            // The blocks wait for the ranges: without them, no more input.
            needs_tx = None;
            result
        };
        let command = CommandLine::new(&self.agent.path, ["serve"]);
        let ran = self
            .host
            .run_streaming(&command, Some(&mut input), &mut take_packets);
        let bytes_received = state.received;
        if let Some(e) = failure
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
        {
            return Err(self.partly(generation, blocks_sent.load(Ordering::Relaxed), e.into()));
        }
        if let Some(e) = state.refused {
            return Err(self.partly(generation, blocks_sent.load(Ordering::Relaxed), e));
        }
        let out = ran.map_err(|e| RunError::AgentSpawn {
            host: name.to_owned(),
            source: e,
        })?;
        if let Some(message) = state.remote_error {
            return Err(RunError::AgentFailed {
                host: name.to_owned(),
                message,
            });
        }
        let (true, Some(agent)) = (state.ended, state.report) else {
            let lost = RunError::RestoreConnectionLost {
                host: name.to_owned(),
                status: out.status_text(),
                stderr: match out.stderr_line() {
                    s if s.is_empty() => String::new(),
                    s => format!(": {s}"),
                },
            };
            return Err(self.partly(generation, blocks_sent.load(Ordering::Relaxed), lost));
        };
        Ok(RemoteRestoreReport {
            generation,
            source_size: size,
            agent,
            bytes_sent: sent.load(Ordering::Relaxed),
            bytes_received,
        })
    }

    /// `e`, said to have left the target partly written when blocks were
    /// sent.
    fn partly(&self, generation: u64, blocks_sent: u64, e: RunError) -> RunError {
        if blocks_sent == 0 || matches!(e, RunError::PartlyRestored { .. }) {
            return e;
        }
        RunError::PartlyRestored {
            target: self.target.to_string(),
            generation,
            written: blocks_sent,
            source: Box::new(e),
        }
    }
}

/// What the agent's stream said.
#[derive(Default)]
struct SessionState {
    report: Option<RestoreAgentReport>,
    remote_error: Option<String>,
    ended: bool,
    refused: Option<RunError>,
    received: u64,
}

impl SessionState {
    /// Reads the agent's packets until its end: the ranges go to `needs`
    /// once complete, the log to `log`, the comparison's progress to a
    /// bar.
    #[allow(clippy::too_many_arguments)]
    fn take(
        &mut self,
        stdout: &mut dyn Read,
        host: &str,
        size: u64,
        needs: &mut Option<mpsc::Sender<Vec<(u64, u64)>>>,
        log: &RunLog,
        display: &dyn ProgressDisplay,
        label: &str,
    ) -> io::Result<()> {
        let mut reader = PacketReader::new(BufReader::with_capacity(64 << 10, stdout));
        let mut ranges = Vec::new();
        let mut quiet = NoProgress;
        let mut quiet = Some(&mut quiet);
        let mut bar: Option<Box<dyn Progress + '_>> = None;
        let mut shown = 0u64;
        let refuse = |e: RunError| RunError::AgentStream {
            host: host.to_owned(),
            source: Box::new(e),
        };
        let result = loop {
            let packet = match reader.next_packet() {
                Ok(Some(p)) => p,
                Ok(None) => break Ok(()),
                Err(e) => {
                    break Err(refuse(RunError::Io {
                        op: "read",
                        path: "the agent's stream".into(),
                        source: e,
                    }));
                }
            };
            let taken = match packet {
                (PacketKind::Log, bytes) => {
                    let text = String::from_utf8_lossy(&bytes);
                    let (level, message) = text.split_once('\t').unwrap_or(("info", &text));
                    log.log(
                        LogLevel::from_name(level).unwrap_or(LogLevel::Info),
                        format_args!("{host}: {message}"),
                    );
                    Ok(())
                }
                (PacketKind::Progress, bytes) => {
                    if let Some((total, done)) = protocol::parse_progress(&bytes) {
                        if let Some(inner) = quiet.take() {
                            bar = Some(display.show(inner, total, label));
                        }
                        if let Some(bar) = bar.as_mut() {
                            bar.advance(done.saturating_sub(shown));
                        }
                        shown = shown.max(done);
                    }
                    Ok(())
                }
                (PacketKind::Needs, bytes) if bytes.is_empty() => match needs.take() {
                    Some(tx) => {
                        bar = None;
                        // The input is gone only if the run already failed.
                        let _ = tx.send(std::mem::take(&mut ranges));
                        Ok(())
                    }
                    None => Err(RunError::Protocol(ProtocolError {
                        what: "stream",
                        detail: "a second list of ranges".into(),
                    })),
                },
                (PacketKind::Needs, bytes) if needs.is_some() => {
                    parse_needs(&bytes, size, &mut ranges).map_err(RunError::from)
                }
                (PacketKind::Report, bytes) => RestoreAgentReport::decode(&bytes)
                    .map(|r| self.report = Some(r))
                    .map_err(RunError::from),
                (PacketKind::Error, bytes) => {
                    self.remote_error = Some(String::from_utf8_lossy(&bytes).into_owned());
                    Ok(())
                }
                (PacketKind::End, _) => {
                    self.ended = true;
                    Ok(())
                }
                (PacketKind::Hello, _) => Ok(()),
                (kind, _) => Err(RunError::Protocol(ProtocolError {
                    what: "stream",
                    detail: format!("a {kind:?} packet from the agent restoring"),
                })),
            };
            if let Err(e) = taken {
                break Err(refuse(e));
            }
            if self.ended {
                break Ok(());
            }
        };
        self.received = reader.offset();
        match result {
            Ok(()) => Ok(()),
            Err(e) => {
                self.refused = Some(e);
                Err(io::Error::other("the agent's stream was refused"))
            }
        }
    }
}

/// Where the agent's input is.
enum Stage {
    /// Sending generation K's digest.
    Digest(Box<dyn Read + Send>),
    /// Waiting for the ranges the agent needs.
    Needs,
    /// Sending range `range` of `ranges`, from `at`.
    Blocks {
        ranges: Vec<(u64, u64)>,
        range: usize,
        at: u64,
    },
    /// Everything sent.
    Done,
}

/// The agent's input as a [`Read`], for the ssh command's stdin: the
/// greeting and the request, the digest and an end; then, once the
/// ranges have come back, their blocks and an end.
struct RestoreInput {
    pending: Vec<u8>,
    at: usize,
    stage: Stage,
    needs: mpsc::Receiver<Vec<(u64, u64)>>,
    reader: Arc<GenerationReader>,
    /// Bytes of blocks per packet: whole blocks.
    piece: usize,
    sent: Arc<AtomicU64>,
    blocks_sent: Arc<AtomicU64>,
    /// A block of the chain that could not be read or did not match its
    /// digest: the input stops, and the run reports this.
    failure: Arc<Mutex<Option<blockdiff_core::Error>>>,
}

impl RestoreInput {
    /// Refills `pending` with the next packet; false at the end.
    fn refill(&mut self) -> io::Result<bool> {
        self.pending.clear();
        self.at = 0;
        match &mut self.stage {
            Stage::Digest(digest) => {
                if !digest_packet(digest, &mut self.pending)? {
                    write_packet(&mut self.pending, PacketKind::End, b"")?;
                    self.stage = Stage::Needs;
                }
                Ok(true)
            }
            Stage::Needs => match self.needs.recv() {
                Ok(ranges) => {
                    let at = ranges.first().map_or(0, |r| r.0);
                    self.stage = Stage::Blocks {
                        ranges,
                        range: 0,
                        at,
                    };
                    self.refill()
                }
                // The agent failed before it asked: nothing more to send.
                Err(mpsc::RecvError) => {
                    self.stage = Stage::Done;
                    Ok(false)
                }
            },
            Stage::Blocks { ranges, range, at } => {
                let Some(&(_, end)) = ranges.get(*range) else {
                    write_packet(&mut self.pending, PacketKind::End, b"")?;
                    self.stage = Stage::Done;
                    return Ok(true);
                };
                let n = (end - *at).min(self.piece as u64) as usize;
                self.pending.resize(5 + 8 + n, 0);
                self.pending[0] = PacketKind::Blocks.byte();
                self.pending[1..5].copy_from_slice(&((8 + n) as u32).to_le_bytes());
                self.pending[5..13].copy_from_slice(&at.to_le_bytes());
                if let Err(e) = fill_at(&self.reader, &mut self.pending[13..], *at) {
                    let text = e.to_string();
                    *self
                        .failure
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(e);
                    return Err(io::Error::other(text));
                }
                self.blocks_sent.fetch_add(n as u64, Ordering::Relaxed);
                *at += n as u64;
                if *at == end {
                    *range += 1;
                    if let Some(&(start, _)) = ranges.get(*range) {
                        *at = start;
                    }
                }
                Ok(true)
            }
            Stage::Done => Ok(false),
        }
    }
}

/// Fills `buf` from the generation at `offset`.
fn fill_at(reader: &GenerationReader, buf: &mut [u8], offset: u64) -> blockdiff_core::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        let got = reader.read_at(&mut buf[done..], offset + done as u64)?;
        if got == 0 {
            return Err(blockdiff_core::Error::InvalidOption(format!(
                "generation {} ends at offset {}, inside the ranges asked for",
                reader.generation(),
                offset + done as u64
            )));
        }
        done += got;
    }
    Ok(())
}

impl Read for RestoreInput {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.at == self.pending.len() && !self.refill()? {
            return Ok(0);
        }
        let n = buf.len().min(self.pending.len() - self.at);
        buf[..n].copy_from_slice(&self.pending[self.at..self.at + n]);
        self.at += n;
        self.sent.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::path::Path;

    use blockdiff_core::{BackupOptions, DumpOptions, DumpSource, GenerationStore, backup};
    use command_runner::{CommandOutput, StdoutConsumer};

    use crate::remote::serve_agent;

    const BS: usize = 4096;

    /// A host whose agent runs on a thread of this process, its input and
    /// output through pipes: the restore's conversation goes both ways at
    /// once, as over ssh.
    struct PipeHost {
        run_dirs: std::path::PathBuf,
    }

    impl CommandRunner for PipeHost {
        fn run(&self, command: &CommandLine) -> io::Result<CommandOutput> {
            Err(io::Error::other(format!("unexpected command {command}")))
        }

        fn run_streaming(
            &self,
            _: &CommandLine,
            input: Option<&mut (dyn Read + Send)>,
            consume: StdoutConsumer<'_>,
        ) -> io::Result<CommandOutput> {
            let input = input.expect("the request goes on stdin");
            let (agent_in, mut feed) = io::pipe()?;
            let (mut agent_out_read, agent_out) = io::pipe()?;
            let run_dirs = self.run_dirs.clone();
            std::thread::scope(|scope| {
                let agent =
                    scope.spawn(move || serve_agent(agent_in, agent_out, &run_dirs, |_| {}));
                let feeder = scope.spawn(move || io::copy(input, &mut feed));
                let consumed = consume(&mut agent_out_read);
                drop(agent_out_read);
                let ok = agent.join().unwrap();
                let _ = feeder.join();
                consumed?;
                Ok(CommandOutput {
                    status: Some(if ok.unwrap_or(false) { 0 } else { 1 }),
                    stdout: Vec::new(),
                    stderr: Vec::new(),
                })
            })
        }
    }

    /// Backups in blocks of 4 KiB.
    fn four_k_blocks() -> BackupOptions {
        BackupOptions {
            dump: DumpOptions {
                block_size: "4k".parse().unwrap(),
                ..DumpOptions::default()
            },
            format: None,
        }
    }

    /// Damages a diff where its frames' bytes are.
    fn flip_middle_byte(diff: &Path) {
        let mut bytes = fs::read(diff).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0xff;
        fs::write(diff, &bytes).unwrap();
    }

    /// Two generations of a 1 MiB image in `dir` (blocks of 4 KiB).
    fn chain(dir: &Path) -> (GenerationStore, Vec<u8>, Vec<u8>) {
        let store = GenerationStore::new(dir.join("vol"));
        let options = four_k_blocks();
        let one: Vec<u8> = (0..1u32 << 20).map(|i| (i * 31 / 7) as u8).collect();
        let mut two = one.clone();
        two[10 * BS..12 * BS].fill(3);
        for image in [&one, &two] {
            backup(
                &store,
                DumpSource::from_bytes(image, "vol"),
                &options,
                &mut NoProgress,
            )
            .unwrap();
        }
        (store, one, two)
    }

    fn restore(
        dir: &Path,
        store: &GenerationStore,
        target: &Path,
        options: &RemoteRestoreOptions,
    ) -> Result<RemoteRestoreReport, RunError> {
        let host = PipeHost {
            run_dirs: dir.to_owned(),
        };
        let agent = InstalledAgent {
            path: "/root/.cache/blockdiff/blockdiff-agent-0123".into(),
            uploaded: false,
        };
        let target = RemoteTarget {
            destination: "db1".into(),
            path: target.to_owned(),
            lvm: None,
        };
        RemoteRestore {
            host: &host,
            agent: &agent,
            target: &target,
            polite: &PoliteOptions::default(),
        }
        .run(
            &ChainLocation::Local(store.clone()),
            options,
            &RunLog::discard(),
            &crate::NoDisplay,
        )
    }

    #[test]
    fn only_the_damaged_blocks_cross_the_connection() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _, two) = chain(dir.path());
        let target = dir.path().join("disk.img");
        let mut damaged = two.clone();
        for block in [0, 77, 255] {
            damaged[block * BS + 9] ^= 0x40;
        }
        fs::write(&target, &damaged).unwrap();
        let r = restore(
            dir.path(),
            &store,
            &target,
            &RemoteRestoreOptions::default(),
        )
        .unwrap();
        assert_eq!(fs::read(&target).unwrap(), two);
        assert_eq!(r.generation, 2);
        assert_eq!(r.agent.bytes_written, 3 * BS as u64);
        assert_eq!(r.agent.ranges, 3);
        assert!(r.agent.verified && !r.agent.created);
        // The digest (16 bytes per block here, with its header) and three
        // blocks: far less than the image.
        assert!(r.bytes_sent < (1 << 20) / 8, "{} bytes sent", r.bytes_sent);
        assert!(r.bytes_sent > 3 * BS as u64);
        // The agent's run directory is gone.
        assert!(
            fs::read_dir(dir.path()).unwrap().all(|e| !e
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("run."))
        );
    }

    #[test]
    fn a_missing_target_is_created_and_a_full_restore_sends_everything() {
        let dir = tempfile::tempdir().unwrap();
        let (store, one, two) = chain(dir.path());
        let target = dir.path().join("new.img");
        let options = RemoteRestoreOptions {
            generation: Some(1),
            ..RemoteRestoreOptions::default()
        };
        let r = restore(dir.path(), &store, &target, &options).unwrap();
        assert!(r.agent.created);
        assert_eq!(fs::read(&target).unwrap(), one);
        let full = RemoteRestoreOptions {
            mode: RestoreMode::Full,
            ..RemoteRestoreOptions::default()
        };
        let r = restore(dir.path(), &store, &target, &full).unwrap();
        assert_eq!(fs::read(&target).unwrap(), two);
        assert_eq!(r.agent.bytes_written, 1 << 20);
        assert_eq!(r.agent.bytes_compared, 0);
    }

    #[test]
    fn a_refused_target_is_the_agents_error_and_nothing_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _, two) = chain(dir.path());
        let target = dir.path().join("short.img");
        fs::write(&target, &two[..5000]).unwrap();
        let err = restore(
            dir.path(),
            &store,
            &target,
            &RemoteRestoreOptions::default(),
        )
        .unwrap_err();
        assert!(matches!(err, RunError::AgentFailed { .. }), "{err}");
        assert!(err.to_string().contains("--resize"), "{err}");
        assert_eq!(fs::read(&target).unwrap(), &two[..5000]);
    }

    #[test]
    fn a_target_created_by_a_restore_that_wrote_nothing_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let store = GenerationStore::new(dir.path().join("vol"));
        let options = four_k_blocks();
        let one = vec![7u8; 64 * BS];
        let mut two = one.clone();
        // Block 0 changes to bytes that do not compress: generation 2's
        // diff is mostly that frame's payload.
        let mut x = 1u32;
        for b in &mut two[..BS] {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            *b = (x >> 16) as u8;
        }
        for image in [&one, &two] {
            let source = DumpSource::from_bytes(image, "vol");
            backup(&store, source, &options, &mut NoProgress).unwrap();
        }
        let diff = dir.path().join("vol.2");
        flip_middle_byte(&diff);
        // The agent creates the target, asks for everything; the first
        // piece the backup host reads holds the damaged block: nothing is
        // sent, and the empty file goes.
        let target = dir.path().join("new.img");
        let err = restore(
            dir.path(),
            &store,
            &target,
            &RemoteRestoreOptions::default(),
        )
        .unwrap_err();
        assert!(!matches!(err, RunError::PartlyRestored { .. }), "{err}");
        assert!(!target.exists(), "{err}");
    }

    #[test]
    fn a_damaged_chain_stops_the_restore_before_a_wrong_block_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _, two) = chain(dir.path());
        // Generation 2's diff holds blocks 10 and 11: damage it.
        let diff = dir.path().join("vol.2");
        flip_middle_byte(&diff);
        let target = dir.path().join("disk.img");
        let mut damaged = two.clone();
        damaged[10 * BS..12 * BS].fill(9);
        fs::write(&target, &damaged).unwrap();
        assert!(
            restore(
                dir.path(),
                &store,
                &target,
                &RemoteRestoreOptions::default()
            )
            .is_err()
        );
        let now = fs::read(&target).unwrap();
        assert!(
            now[10 * BS..12 * BS] == damaged[10 * BS..12 * BS]
                || now[10 * BS..12 * BS] == two[10 * BS..12 * BS]
        );
    }
}
