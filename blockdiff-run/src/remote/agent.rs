//! The agent's side of a remote backup: reads the request and the
//! previous digest from its input, reads the source consistently, and
//! streams the diff, the new digest, its log, progress and report back as
//! packets.

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use blockdiff_core::{
    DigestReader, DigestWriter, DumpOptions, Error, FormatSink, Notice, Progress, dump,
};

use super::protocol::{PacketKind, PacketReader, PacketWriter, progress_payload};
use super::request::{AgentReport, AgentRequest, PROTOCOL_VERSION, receive_digest};
use super::restore_agent::serve_restore;
use super::restore_request::RestoreRequest;
use crate::{LogLevel, RunError, RunFacts, RunLog, SourceReader, apply_tracked, error_line};

/// Serves one dump or restore: reads the request (and the previous
/// digest, or for a restore the generation's digest and then its blocks)
/// from `input`, writes packets to `output`, and returns whether the work
/// succeeded. Every failure is sent as a [`PacketKind::Error`] packet;
/// one that cannot be sent (the backup host is gone) has nobody to tell.
/// `run_dirs` is the private directory where `run.PID` keeps the previous
/// digest while the dump reads it; `step_hook` is called at each step.
pub fn serve_agent<I: Read, W: Write + Send + 'static>(
    input: I,
    output: W,
    run_dirs: &Path,
    step_hook: fn(&str),
) -> io::Result<bool> {
    let packets = PacketWriter::new(output)?;
    let sender = packets.clone();
    let log = RunLog::new(move |level: LogLevel, message: &str| {
        let _ = sender.send(
            PacketKind::Log,
            format!("{}\t{message}", level.name()).as_bytes(),
        );
        let _ = sender.flush();
    });
    let mut input = PacketReader::new(input);
    let outcome = match read_job(&mut input) {
        Ok(Job::Dump(request)) => {
            dump_request(request, input, &packets, log, run_dirs, step_hook).map(|r| r.encode())
        }
        Ok(Job::Restore(request)) => {
            serve_restore(request, input, &packets, &log, run_dirs, step_hook).map(|r| r.encode())
        }
        Err(e) => Err(e),
    };
    match outcome {
        Ok(report) => {
            packets.send(PacketKind::Report, &report)?;
            packets.send(PacketKind::End, b"")?;
            packets.flush()?;
            Ok(true)
        }
        Err(e) => {
            packets.send(PacketKind::Error, error_line(&e).as_bytes())?;
            packets.flush()?;
            Ok(false)
        }
    }
}

/// What the backup host asks of the agent.
enum Job {
    /// A dump of a source.
    Dump(AgentRequest),
    /// A restore onto a target.
    Restore(RestoreRequest),
}

/// Reads the first packet of the input: a dump or a restore request.
fn read_job<I: Read>(input: &mut PacketReader<I>) -> Result<Job, RunError> {
    let stdin_error = |source| RunError::Io {
        op: "read the request from",
        path: "standard input".into(),
        source,
    };
    match input.next_packet().map_err(stdin_error)? {
        Some((PacketKind::Request, payload)) => Ok(Job::Dump(AgentRequest::decode(&payload)?)),
        Some((PacketKind::Restore, payload)) => Ok(Job::Restore(RestoreRequest::decode(&payload)?)),
        Some((kind, _)) => Err(stdin_error(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("the input starts with a {kind:?} packet, not a request"),
        ))),
        None => Err(stdin_error(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the input ended before the request",
        ))),
    }
}

fn dump_request<I: Read, W: Write>(
    request: AgentRequest,
    mut input: PacketReader<I>,
    packets: &PacketWriter<W>,
    log: RunLog,
    run_dirs: &Path,
    step_hook: fn(&str),
) -> Result<AgentReport, RunError> {
    let stdin_error = |source| RunError::Io {
        op: "read the request from",
        path: "standard input".into(),
        source,
    };
    let spec = request.source.to_spec()?;
    let format = request.format.requested()?.unwrap_or_default();
    let mut options = DumpOptions {
        block_size: request.block_size()?,
        hash: request.format.hash_for(Some(format)),
        generation: request.generation,
        threads: request.threads,
        hash_key: request.block_hash_key()?,
        ..DumpOptions::default()
    };
    request.polite.fill_dump_options(&mut options);
    // Before any snapshot is taken.
    options.validate()?;
    // A v2 digest is read from both ends, so the one sent on stdin is kept
    // in a private run directory until the dump is done.
    let run_dir = if request.previous {
        Some(RunDir::create(run_dirs)?)
    } else {
        None
    };
    let previous_path = run_dir
        .as_ref()
        .map(|d| d.path.join("previous.digest"))
        .unwrap_or_default();
    if request.previous {
        let io_error = |op, source| RunError::Io {
            op,
            path: previous_path.clone(),
            source,
        };
        let file = File::create(&previous_path).map_err(|e| io_error("create", e))?;
        let mut file = BufWriter::new(file);
        receive_digest(&mut input, &mut file)
            .and_then(|_| file.flush())
            .map_err(|e| io_error("receive the previous digest into", e))?;
    } else {
        receive_digest(&mut input, &mut io::sink()).map_err(stdin_error)?;
    }
    let mut reader = SourceReader::new(&spec, &request.consistency, log.clone())?
        .with_priorities(&request.polite)
        .with_step_hook(step_hook);
    if let Some(chain) = &request.tracking {
        reader = reader.with_tracking(chain.clone());
    }
    let mut facts = RunFacts::default();
    // Set when tracked changes could not be used after all.
    let fallback = std::cell::RefCell::new(None);
    let dump_report = reader.read(
        &spec,
        &mut facts,
        Box::new(|source, tracked, progress| {
            let mut options = options.clone();
            let reason = apply_tracked(tracked, request.generation, &mut options);
            if let Some(reason) = &reason {
                log.warning(format_args!("tracking: reading the whole volume: {reason}"));
            }
            *fallback.borrow_mut() = reason;
            let mut progress = ForwardProgress::new(progress, packets, source.size());
            let progress: &mut dyn Progress = &mut progress;
            let mut previous = if request.previous {
                Some(DigestReader::open(&previous_path)?)
            } else {
                None
            };
            let mut diff = packets.channel(PacketKind::Diff);
            let mut digest = packets.channel(PacketKind::Digest);
            let mut digest_writer = DigestWriter::new(&mut digest, "the new digest");
            // A gzipped legacy diff is gzipped on the backup host, as it
            // is written: the stream goes as the sink writes it.
            let report = dump(
                source,
                previous.as_mut(),
                &mut FormatSink::new(format, &mut diff, "the diff stream"),
                &mut digest_writer,
                &options,
                progress,
            )?;
            drop(digest_writer);
            let flushed = diff.flush().and_then(|()| digest.flush());
            flushed.map_err(|e| Error::Io {
                path: "standard output".into(),
                op: "write",
                source: e,
            })?;
            if let Some(reason) = progress.before_commit() {
                return Err(Error::Stopped { reason });
            }
            Ok(report)
        }),
    )?;
    if let Some(record) = &mut facts.tracking {
        record.complete(&dump_report, fallback.into_inner(), &log);
    }
    drop(run_dir);
    Ok(AgentReport {
        version: PROTOCOL_VERSION,
        dump: dump_report,
        facts,
    })
}

/// `run.PID` in the agent's private directory: this run's temporary
/// files, removed when the run ends (and by the next run's preparation if
/// this one was killed).
pub(super) struct RunDir {
    pub(super) path: PathBuf,
}

impl RunDir {
    pub(super) fn create(parent: &Path) -> Result<Self, RunError> {
        let path = parent.join(format!("run.{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .map_err(|source| RunError::Io {
                op: "create the run directory",
                path: path.clone(),
                source,
            })?;
        Ok(RunDir { path })
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Passes the dump's progress to the backup host (a packet every 4 MiB, for
/// its progress bar) and everything else to the inner progress.
pub(super) struct ForwardProgress<'a, W: Write> {
    inner: &'a mut dyn Progress,
    packets: &'a PacketWriter<W>,
    total: Option<u64>,
    done: u64,
    sent: u64,
}

impl<'a, W: Write> ForwardProgress<'a, W> {
    pub(super) fn new(
        inner: &'a mut dyn Progress,
        packets: &'a PacketWriter<W>,
        total: Option<u64>,
    ) -> Self {
        let _ = packets.send(PacketKind::Progress, &progress_payload(total, 0));
        ForwardProgress {
            inner,
            packets,
            total,
            done: 0,
            sent: 0,
        }
    }
}

impl<W: Write> Progress for ForwardProgress<'_, W> {
    fn notice(&mut self, notice: Notice) {
        self.inner.notice(notice);
    }

    fn advance(&mut self, bytes: u64) {
        self.done += bytes;
        if self.done - self.sent >= 4 << 20 {
            self.sent = self.done;
            let _ = self.packets.send(
                PacketKind::Progress,
                &progress_payload(self.total, self.done),
            );
        }
        self.inner.advance(bytes);
    }

    fn should_stop(&mut self) -> Option<String> {
        self.inner.should_stop()
    }

    fn before_commit(&mut self) -> Option<String> {
        self.inner.before_commit()
    }

    fn at_step(&mut self, step: &'static str) {
        self.inner.at_step(step);
    }
}
