//! The agent's side of a restore over ssh: receives generation K's digest,
//! compares its target with it (or, for a full restore, asks for
//! everything), sends the ranges that differ, writes the blocks that come
//! back once each matches the digest, syncs, and reads the target again to
//! verify it.

use std::fs::File;
use std::io::{BufWriter, Read, Write};

use blockdiff_core::{DeltaTarget, DeltaTargetOptions, DumpOptions, Error, NoProgress};

use super::agent::{ForwardProgress, RunDir};
use super::protocol::{PacketKind, PacketReader, PacketWriter};
use super::request::{PROTOCOL_VERSION, ProtocolError, receive_digest};
use super::restore_request::{
    RestoreAgentReport, RestoreMode, RestoreRequest, needs_payloads, parse_blocks,
};
use crate::{RunError, RunLog};

/// The steps of the agent's restore, for the step hook: the target
/// compared (the needs sent), the first blocks written, all written and
/// synced.
pub const RESTORE_AGENT_STEPS: [&str; 3] = [
    "restore-agent:compared",
    "restore-agent:wrote-first",
    "restore-agent:synced",
];

/// Serves one restore (its request already read from `input`).
pub(super) fn serve_restore<I: Read, W: Write>(
    request: RestoreRequest,
    mut input: PacketReader<I>,
    packets: &PacketWriter<W>,
    log: &RunLog,
    run_dirs: &std::path::Path,
    step_hook: fn(&str),
) -> Result<RestoreAgentReport, RunError> {
    request.polite.apply_priorities()?;
    let run_dir = RunDir::create(run_dirs)?;
    let digest_path = run_dir.path.join("restore.digest");
    {
        let io_error = |source| RunError::Io {
            op: "receive the generation's digest into",
            path: digest_path.clone(),
            source,
        };
        let mut file = BufWriter::new(File::create(&digest_path).map_err(io_error)?);
        receive_digest(&mut input, &mut file)
            .and_then(|_| file.flush())
            .map_err(io_error)?;
    }
    let key = request.block_hash_key().map_err(|detail| ProtocolError {
        what: "restore request",
        detail,
    })?;
    let target_path = &request.target;
    let mut target = DeltaTarget::open(
        target_path,
        &digest_path,
        key,
        request.size,
        &DeltaTargetOptions {
            force: request.force,
            resize: request.resize,
            create: true,
        },
    )?;
    let restored = restore_onto(&mut target, &request, input, packets, log, step_hook);
    match restored {
        Ok(report) => Ok(report),
        Err(e) => {
            if let Err(removal) = target.abandon() {
                log.warning(format_args!("{removal}"));
            }
            Err(e)
        }
    }
}

/// Compares `target`, asks for what differs, writes it, syncs and
/// verifies.
fn restore_onto<I: Read, W: Write>(
    target: &mut DeltaTarget,
    request: &RestoreRequest,
    mut input: PacketReader<I>,
    packets: &PacketWriter<W>,
    log: &RunLog,
    step_hook: fn(&str),
) -> Result<RestoreAgentReport, RunError> {
    let target_path = &request.target;
    let stdin_error = |op, source| RunError::Io {
        op,
        path: "standard input".into(),
        source,
    };
    if target.created() {
        log.info(format_args!(
            "{} did not exist: created (mode 0600); every block of the generation that is not all zeros is sent",
            target_path.display()
        ));
    }
    let mut reading = DumpOptions {
        threads: request.threads,
        ..DumpOptions::default()
    };
    request.polite.fill_dump_options(&mut reading);
    let size = request.size;
    let ranges = match request.mode {
        RestoreMode::Delta => {
            let mut inner = NoProgress;
            let mut progress = ForwardProgress::new(&mut inner, packets, Some(size));
            target.differing(&reading, &mut progress)?
        }
        RestoreMode::Full if size == 0 => Vec::new(),
        RestoreMode::Full => vec![(0, size)],
    };
    let needed: u64 = ranges.iter().map(|(start, end)| end - start).sum();
    log.info(format_args!(
        "{}: {needed} of {size} bytes differ from generation {}, in {} range(s)",
        target_path.display(),
        request.generation,
        ranges.len()
    ));
    if request.keep_before && needed > 0 {
        keep_before(request, needed, log)?;
    }
    let sent = needs_payloads(&ranges)
        .iter()
        .try_for_each(|p| packets.send(PacketKind::Needs, p))
        .and_then(|()| packets.send(PacketKind::Needs, &[]))
        .and_then(|()| packets.flush());
    sent.map_err(|e| stdin_error("write the ranges to", e))?;
    step_hook(RESTORE_AGENT_STEPS[0]);
    let written = receive_blocks(&mut input, target, &ranges, step_hook)
        .and_then(|()| target.sync().map_err(RunError::from));
    if let Err(e) = written {
        return Err(match target.bytes_written() {
            0 => e,
            written => RunError::PartlyRestored {
                target: target_path.display().to_string(),
                generation: request.generation,
                written,
                source: Box::new(e),
            },
        });
    }
    step_hook(RESTORE_AGENT_STEPS[2]);
    let verified = if request.verify {
        let left = target.differing(&reading, &mut NoProgress)?;
        if let Some(&(offset, _)) = left.first() {
            return Err(RunError::Core(Error::TargetDiffers {
                path: target_path.clone(),
                generation: request.generation,
                offset,
            }));
        }
        true
    } else {
        false
    };
    Ok(RestoreAgentReport {
        version: PROTOCOL_VERSION,
        bytes_compared: if request.mode == RestoreMode::Delta {
            size
        } else {
            0
        },
        ranges: ranges.len() as u64,
        bytes_written: target.bytes_written(),
        created: target.created(),
        verified,
    })
}

/// Takes a snapshot of the target LV, sized for the bytes about to be
/// written (thick; a thin one shares its pool), and keeps it as the
/// volume's state before the restore.
fn keep_before(request: &RestoreRequest, needed: u64, log: &RunLog) -> Result<(), RunError> {
    let Some(lv) = &request.lvm else {
        return Ok(());
    };
    let origin: lvm_snap::LvPath = lv.parse()?;
    let lvm = lvm_snap::Lvm::local();
    // Each written block's old contents, copied once, and the snapshot's
    // own metadata.
    let size = lvm_snap::SnapshotSize::Bytes(needed + needed / 10 + (4 << 20));
    let snapshot = lvm_snap::Snapshot::create(
        &lvm,
        &origin,
        &lvm_snap::SnapshotOptions {
            size,
            extra_tags: Vec::new(),
        },
    )?;
    let kept = snapshot.keep_as_before()?;
    log.info(format_args!(
        "kept {kept}: {origin} as it was before this restore (lvconvert --merge {kept} undoes the restore; lvremove {kept} drops it)"
    ));
    Ok(())
}

/// Writes the blocks that come until the end packet: each inside the
/// ranges asked for, in order, every byte of them sent.
fn receive_blocks<I: Read>(
    input: &mut PacketReader<I>,
    target: &mut DeltaTarget,
    ranges: &[(u64, u64)],
    step_hook: fn(&str),
) -> Result<(), RunError> {
    let bad = |detail: String| {
        RunError::Protocol(ProtocolError {
            what: "blocks",
            detail,
        })
    };
    // The next byte expected: in range `at`, at offset `next`.
    let mut at = 0;
    let mut next = ranges.first().map_or(0, |r| r.0);
    loop {
        let packet = input.next_packet().map_err(|source| RunError::Io {
            op: "read the blocks from",
            path: "standard input".into(),
            source,
        })?;
        match packet {
            Some((PacketKind::Blocks, payload)) => {
                let (offset, data) = parse_blocks(&payload)?;
                let end = offset + data.len() as u64;
                let Some(&(_, range_end)) = ranges.get(at) else {
                    return Err(bad(format!(
                        "bytes at {offset} after every range asked for"
                    )));
                };
                if offset != next || end > range_end || data.is_empty() {
                    return Err(bad(format!(
                        "{} bytes at {offset}, where {next}-{range_end} was expected",
                        data.len()
                    )));
                }
                let first = target.bytes_written() == 0;
                target.write_checked(offset, data)?;
                if first {
                    step_hook(RESTORE_AGENT_STEPS[1]);
                }
                next = end;
                if next == range_end {
                    at += 1;
                    next = ranges.get(at).map_or(next, |r| r.0);
                }
            }
            Some((PacketKind::End, _)) if at == ranges.len() => return Ok(()),
            Some((PacketKind::End, _)) => {
                return Err(bad(format!(
                    "the blocks ended at offset {next}, before every range asked for was sent"
                )));
            }
            Some((kind, _)) => return Err(bad(format!("a {kind:?} packet among the blocks"))),
            None => {
                return Err(RunError::Io {
                    op: "read the blocks from",
                    path: "standard input".into(),
                    source: std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        format!(
                            "the input ended at offset {next}: the backup host or the connection is gone"
                        ),
                    ),
                });
            }
        }
    }
}
