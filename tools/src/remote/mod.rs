//! Backing up a remote host over ssh with nothing installed there.
//!
//! The backup host connects once ([`SshRunner`], an ssh master that every
//! step shares, behind the `CommandRunner` seam), makes sure its static agent is on the host
//! ([`AgentBinary::install`]: copied, checked by SHA-256, reused), and runs
//! `blockdiff-agent dump` there. The agent reads the volume (snapshot and
//! quiescers included), compresses on the remote side and streams back the
//! diff and the new digest as packets ([`protocol`]); the previous digest
//! goes up on its stdin. The backup host writes the packets into the new
//! generation and commits it only after the agent's end packet.

mod agent;
pub mod protocol;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, Read};

use anyhow::{Context, bail};
use blockdiff_core::{
    BackupOptions, BackupReport, DiffFormat, DumpReport, GenerationStore, NoProgress,
    PreparedBackup, Progress,
};
use command_runner::{CommandLine, CommandRunner};

pub use agent::{AGENT_NAME, AgentBinary, InstalledAgent};
pub use command_runner::{SshOptions, SshRunner};

use crate::source_reader::RunProgress;
use crate::{ConsistencyArgs, LogLevel, RunFacts, RunLog, SourceSpec, TerminalProgress};
use protocol::{PacketKind, PacketReader};

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

/// The agent's command-line arguments for a dump of `source` into
/// `prepared`'s generation.
fn agent_args(
    agent: &InstalledAgent,
    source: &RemoteSource,
    prepared: &PreparedBackup,
    consistency: &ConsistencyArgs,
    extra: &[String],
) -> Vec<String> {
    let dump = prepared.dump_options();
    let mut args = vec![agent.path.clone(), "dump".to_owned()];
    match &source.spec {
        SourceSpec::Lvm(lv) => args.push(format!("--lvm={lv}")),
        SourceSpec::Path(p) => args.push(format!("--source={}", p.display())),
        SourceSpec::Stdin => unreachable!("a remote source is never stdin"),
    }
    args.push(format!("--generation={}", prepared.generation()));
    args.push(format!("--block-size={}", dump.block_size.get()));
    args.push(format!("--threads={}", dump.threads));
    match prepared.format() {
        // A gzipped legacy diff is gzipped here, as it is written; its
        // hash is always MD5.
        DiffFormat::Legacy(_) => args.push("--format=legacy".into()),
        DiffFormat::V2 { compression, level } => {
            let level = match compression {
                blockdiff_core::FrameCompression::None => 0,
                blockdiff_core::FrameCompression::Zstd => level,
            };
            args.extend([
                "--format=v2".into(),
                format!("--zstd-level={level}"),
                format!("--hash={}", dump.hash),
            ]);
        }
    }
    if prepared.previous_digest().is_some() {
        args.push("--previous".into());
    }
    args.extend(consistency.to_args());
    args.extend(extra.iter().cloned());
    args
}

/// Backs up `source` on `host` (where `agent` is installed) into `store`:
/// the agent dumps there, the diff and digest stream back, the generation
/// is committed here once the agent's stream is complete. `extra_args` go
/// to the agent as they are (the polite-I/O flags). The agent's log lines
/// come out of `log` prefixed with the host.
#[allow(clippy::too_many_arguments)]
pub fn backup_remote(
    host: &dyn CommandRunner,
    agent: &InstalledAgent,
    store: &GenerationStore,
    options: &BackupOptions,
    source: &RemoteSource,
    consistency: &ConsistencyArgs,
    extra_args: &[String],
    log: &RunLog,
    bars: &TerminalProgress,
    facts: &mut RunFacts,
) -> anyhow::Result<BackupReport> {
    let name = source.destination.as_str();
    let mut prepared =
        PreparedBackup::prepare(store, options, &mut RunProgress::new(log, None, None, None))?;
    let args = agent_args(agent, source, &prepared, consistency, extra_args);
    let command = CommandLine::new(&args[0], &args[1..]);
    // The previous digest goes up once, on the agent's stdin, while the
    // dump reads it.
    let mut previous = match prepared.previous_digest() {
        Some(path) => {
            Some(File::open(path).with_context(|| format!("cannot open {}", path.display()))?)
        }
        None => None,
    };
    let (diff_path, digest_path) = {
        let (a, b) = prepared.paths();
        (a.to_owned(), b.to_owned())
    };
    let mut quiet_inner = NoProgress;
    let mut quiet_inner = Some(&mut quiet_inner);
    let mut bar = None;
    let mut shown = 0u64;
    let mut report: Option<DumpReport> = None;
    let mut remote_error: Option<String> = None;
    let mut ended = false;
    // Why the stream was refused (the stream is then stopped).
    let mut refused: Option<anyhow::Error> = None;
    let mut take_packets = |stdout: &mut dyn Read| -> std::io::Result<()> {
        let mut reader = PacketReader::new(BufReader::with_capacity(256 << 10, stdout));
        loop {
            let packet = match reader.next_packet() {
                Ok(Some(p)) => p,
                Ok(None) => return Ok(()),
                Err(e) => {
                    refused = Some(
                        anyhow::Error::from(e).context(format!("the agent's stream from {name}")),
                    );
                    return Err(std::io::Error::other("the agent's stream was refused"));
                }
            };
            let (diff, digest) = prepared.writers();
            let written = match packet {
                (PacketKind::Diff, bytes) => diff
                    .write_all(&bytes)
                    .with_context(|| format!("write {}", diff_path.display())),
                (PacketKind::Digest, bytes) => digest
                    .write_all(&bytes)
                    .with_context(|| format!("write {}", digest_path.display())),
                (PacketKind::Log, bytes) => {
                    let text = String::from_utf8_lossy(&bytes);
                    let (level, message) = text.split_once('\t').unwrap_or(("info", &text));
                    log.log(
                        LogLevel::from_name(level).unwrap_or(LogLevel::Info),
                        format_args!("{name}: {message}"),
                    );
                    Ok(())
                }
                (PacketKind::Facts, bytes) => parse_facts(&bytes).map(|f| facts.extend(f)),
                (PacketKind::Progress, bytes) => {
                    if let Some((total, done)) = protocol::parse_progress(&bytes) {
                        if let Some(inner) = quiet_inner.take() {
                            bar = Some(bars.wrap(inner, total, &source.to_string()));
                        }
                        if let Some(bar) = bar.as_mut() {
                            bar.advance(done.saturating_sub(shown));
                        }
                        shown = shown.max(done);
                    }
                    Ok(())
                }
                (PacketKind::Report, bytes) => parse_report(&bytes).map(|r| report = Some(r)),
                (PacketKind::Error, bytes) => {
                    remote_error = Some(String::from_utf8_lossy(&bytes).into_owned());
                    Ok(())
                }
                (PacketKind::End, _) => {
                    ended = true;
                    Ok(())
                }
                (PacketKind::Hello, _) => Ok(()),
            };
            if let Err(e) = written {
                refused = Some(e);
                return Err(std::io::Error::other("the agent's stream was refused"));
            }
            if ended {
                return Ok(());
            }
        }
    };
    let input = previous.as_mut().map(|f| f as &mut (dyn Read + Send));
    let ran = host.run_streaming(&command, input, &mut take_packets);
    drop(bar);
    if let Some(e) = refused {
        return Err(e);
    }
    let out = ran.with_context(|| format!("cannot run the agent on {name} over ssh"))?;
    if let Some(e) = remote_error {
        bail!("on {name}: {e}");
    }
    let (true, Some(report)) = (ended, report) else {
        bail!(
            "the connection to {name} ended before the dump was complete (ssh {}{}); nothing was committed",
            out.status_text(),
            match out.stderr_line() {
                s if s.is_empty() => String::new(),
                s => format!(": {s}"),
            }
        );
    };
    Ok(prepared.commit(report, facts, &mut RunProgress::new(log, None, None, None))?)
}

fn parse_facts(bytes: &[u8]) -> anyhow::Result<BTreeMap<String, String>> {
    serde_json::from_slice(bytes).context("the agent's facts are not a JSON object of strings")
}

/// The dump's figures as the agent sends them.
pub fn report_json(report: &DumpReport) -> serde_json::Value {
    serde_json::json!({
        "block_size": report.block_size,
        "hash": report.hash.to_string(),
        "source_bytes": report.source_bytes,
        "blocks": report.blocks,
        "changed_blocks": report.changed_blocks,
        "changed_bytes": report.changed_bytes,
        "zero_blocks": report.zero_blocks,
    })
}

fn parse_report(bytes: &[u8]) -> anyhow::Result<DumpReport> {
    let bad = || anyhow::anyhow!("the agent's report is not what this version expects");
    let v: serde_json::Value = serde_json::from_slice(bytes).map_err(|_| bad())?;
    let n = |k: &str| v.get(k).and_then(serde_json::Value::as_u64).ok_or_else(bad);
    Ok(DumpReport {
        block_size: u32::try_from(n("block_size")?).map_err(|_| bad())?,
        hash: v
            .get("hash")
            .and_then(|h| h.as_str())
            .and_then(|h| h.parse().ok())
            .ok_or_else(bad)?,
        source_bytes: n("source_bytes")?,
        blocks: n("blocks")?,
        changed_blocks: n("changed_blocks")?,
        changed_bytes: n("changed_bytes")?,
        zero_blocks: n("zero_blocks")?,
        ..DumpReport::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn reports_survive_the_trip() {
        let r = DumpReport {
            block_size: 16384,
            hash: blockdiff_core::HashAlgorithm::Blake3,
            source_bytes: 10,
            blocks: 1,
            changed_blocks: 1,
            changed_bytes: 10,
            zero_blocks: 0,
            ..DumpReport::default()
        };
        let bytes = serde_json::to_vec(&report_json(&r)).unwrap();
        assert_eq!(parse_report(&bytes).unwrap(), r);
        assert!(parse_report(b"{}").is_err());
    }
}
