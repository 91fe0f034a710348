//! `blockdiff-lvm`: the LVM side of backups: blockdiff snapshots listed
//! and cleaned up, and partitions inside logical volumes (Xen domU disks)
//! mounted read-only from a snapshot for a file-level backup tool.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, anyhow};
use blockdiff_tools::{UsageError, parse_snapshot_size, run_main};
use clap::{Args as ClapArgs, Parser, Subcommand};
use disk_partitions::{DEFAULT_STATE_DIR, MountOptions, PartitionMounter, SnapshotState};
use lvm_snap::{LvPath, Lvm, SnapshotOptions, SnapshotSize, VolumePattern};

const NAME: &str = "blockdiff-lvm";

const EXAMPLES: &str = "\
Examples:
  blockdiff-lvm mount vg0/domu-web /mnt/backup/web        # its only Linux partition, read-only
  rsync -a /mnt/backup/web/ backuphost:/srv/web/          # the file-level backup
  blockdiff-lvm umount /mnt/backup/web                    # unmount, detach, remove the snapshot

  blockdiff-lvm mount vg0/domu-db /mnt/db --partition 2 --snapshot-size 1G
  blockdiff-lvm mount --each 'vg0/domu-*' --under /mnt/backup   # /mnt/backup/domu-web, …
  blockdiff-lvm umount --each 'vg0/domu-*' --under /mnt/backup

  blockdiff-lvm snapshots            # blockdiff snapshots: origin, fill, owner, what holds them
  blockdiff-lvm cleanup --dry-run    # what a crash left behind
  blockdiff-lvm cleanup vg0          # remove it

How a mount works: a snapshot of the volume (tagged blockdiff and
blockdiff-mount), its MBR or GPT read to find the partition's offset, a loop
device at that offset, `fsck -y` on it (replaying an unclean ext3/ext4
journal into the snapshot, so the files are as after a clean unmount), and
`mount -o ro`. A state file in --state-dir (named after the mount point)
records each step, so that `umount`, run later by another process, undoes
them in reverse; a failing mount undoes its steps at once. Suited to a
backup system's run-before and run-after hooks.

Without --partition, the volume's only Linux-filesystem partition is
mounted, or the whole volume if it has no partition table. --each mounts
every LV of the VG whose name matches the pattern (* and ?; snapshots and
thin pools left out) at DIR/LVNAME, creating that directory; one failing
volume does not stop the others.

`cleanup` removes snapshots whose creating process is gone, except those
recorded as mounted and those still open.

Exit status: 0 success, 1 failure (with --each: any volume failed), 2 usage
error.";

const MOUNT_EXAMPLES: &str = "\
Examples:
  blockdiff-lvm mount vg0/domu-web /mnt/backup/web
  blockdiff-lvm mount vg0/domu-db /mnt/db --partition 5 --snapshot-size 512M
  blockdiff-lvm mount vg0/domu-xfs /mnt/xfs -o nouuid
  blockdiff-lvm mount --each 'vg0/domu-*' --under /mnt/backup

Each step is printed on stderr (fsck's report included); a failing step
undoes the ones before it. See `blockdiff-lvm --help` for how it works.";

const UMOUNT_EXAMPLES: &str = "\
Examples:
  blockdiff-lvm umount /mnt/backup/web
  blockdiff-lvm umount --each 'vg0/domu-*' --under /mnt/backup

Steps already undone are skipped, so a failed umount can be run again.";

/// LVM snapshots for backups: list and clean up blockdiff snapshots, and
/// mount a partition inside a logical volume read-only from a snapshot.
#[derive(Debug, Parser)]
#[command(name = NAME, version, after_help = EXAMPLES)]
struct Args {
    #[command(subcommand)]
    command: Command,

    /// Directory of the mount state files
    #[arg(long, global = true, value_name = "DIR", default_value = DEFAULT_STATE_DIR)]
    state_dir: PathBuf,

    /// Print nothing but errors (and the `snapshots` listing)
    #[arg(short, long, global = true)]
    quiet: bool,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// List blockdiff snapshots: origin, fill, owner pid and whether it
    /// runs, and what holds each (a mount, a running owner) or `stale`
    Snapshots {
        /// Only this volume group
        vg: Option<String>,
    },
    /// Remove stale snapshots: those whose creating process is gone, not
    /// mounted partitions' and not open ones
    Cleanup {
        /// Only this volume group
        vg: Option<String>,
        /// Only print what would be removed
        #[arg(long)]
        dry_run: bool,
    },
    /// Snapshot VG/LV and mount one of its partitions read-only at DIR
    #[command(after_help = MOUNT_EXAMPLES)]
    Mount(MountArgs),
    /// Unmount what `mount` mounted at DIR and remove its snapshot
    #[command(alias = "unmount", after_help = UMOUNT_EXAMPLES)]
    Umount(UmountArgs),
}

#[derive(Debug, ClapArgs)]
struct MountArgs {
    /// The logical volume, VG/LV or /dev/VG/LV
    #[arg(required_unless_present = "each", conflicts_with = "each")]
    lv: Option<String>,

    /// The mount point (an existing directory)
    #[arg(required_unless_present = "each")]
    dir: Option<PathBuf>,

    /// Mount every LV matching VG/PATTERN (* and ? in the LV name) at
    /// UNDER/LVNAME
    #[arg(long, value_name = "VG/PATTERN", requires = "under")]
    each: Option<String>,

    /// The directory under which --each mounts
    #[arg(long, value_name = "DIR", requires = "each")]
    under: Option<PathBuf>,

    /// The partition number, as Linux numbers them (logical ones from 5)
    /// [default: the only Linux filesystem, or the whole LV without a
    /// partition table]
    #[arg(short, long, value_name = "N")]
    partition: Option<u32>,

    /// Snapshot size: a percentage of the origin (15%) or a size (512M, 2G)
    #[arg(long, value_name = "SIZE", default_value = "15%", value_parser = parse_snapshot_size)]
    snapshot_size: SnapshotSize,

    /// Mount options beside ro, comma-separated (nouuid for XFS)
    #[arg(short = 'o', long, value_name = "OPTS", value_delimiter = ',')]
    options: Vec<String>,
}

#[derive(Debug, ClapArgs)]
struct UmountArgs {
    /// The mount point given to `mount`
    #[arg(required_unless_present = "each", conflicts_with = "each")]
    dir: Option<PathBuf>,

    /// Unmount every LV matching VG/PATTERN mounted under --under
    #[arg(long, value_name = "VG/PATTERN", requires = "under")]
    each: Option<String>,

    /// The directory given to `mount --each --under`
    #[arg(long, value_name = "DIR", requires = "each")]
    under: Option<PathBuf>,
}

fn main() -> ExitCode {
    run_main(NAME, run)
}

/// Prints progress lines on stderr unless quiet.
struct Reporter {
    quiet: bool,
}

impl Reporter {
    fn line(&self, text: &str) {
        if !self.quiet {
            blockdiff_tools::errln!("{NAME}: {text}");
        }
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    let lvm = Lvm::local();
    let mounter = PartitionMounter::new(&lvm).with_state_dir(&args.state_dir);
    let report = Reporter { quiet: args.quiet };
    match args.command {
        Command::Snapshots { vg } => list_snapshots(&mounter, vg.as_deref()),
        Command::Cleanup { vg, dry_run } => {
            cleanup(&lvm, &mounter, vg.as_deref(), dry_run, &report)
        }
        Command::Mount(m) => mount(&lvm, &mounter, m, &report),
        Command::Umount(u) => umount(&mounter, u, &report),
    }
}

fn list_snapshots(mounter: &PartitionMounter, vg: Option<&str>) -> anyhow::Result<()> {
    let statuses = mounter.snapshot_statuses(vg)?;
    if statuses.is_empty() {
        blockdiff_tools::outln!("no blockdiff snapshots")?;
        return Ok(());
    }
    let rows: Vec<[String; 5]> = statuses
        .iter()
        .map(|s| {
            let lv = &s.snapshot.lv;
            let fill = if lv.is_invalid_snapshot() {
                "invalid".to_owned()
            } else {
                lv.data_percent
                    .map_or("-".to_owned(), |p| format!("{p:.1}%"))
            };
            let owner = match s.snapshot.pid {
                Some(pid) if s.snapshot.owner_running => format!("{pid} (running)"),
                Some(pid) => format!("{pid} (gone)"),
                None => "-".to_owned(),
            };
            [
                lv.path.to_string(),
                lv.origin.clone().unwrap_or_default(),
                fill,
                owner,
                s.state.to_string(),
            ]
        })
        .collect();
    let header = ["SNAPSHOT", "ORIGIN", "FILL", "OWNER PID", "STATE"].map(str::to_owned);
    let mut widths = [0usize; 5];
    for row in std::iter::once(&header).chain(&rows) {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    for row in std::iter::once(&header).chain(&rows) {
        let line: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, w)| format!("{cell:w$}"))
            .collect();
        blockdiff_tools::outln!("{}", line.join("  ").trim_end())?;
    }
    Ok(())
}

fn cleanup(
    lvm: &Lvm,
    mounter: &PartitionMounter,
    vg: Option<&str>,
    dry_run: bool,
    report: &Reporter,
) -> anyhow::Result<()> {
    let stale: Vec<_> = mounter
        .snapshot_statuses(vg)?
        .into_iter()
        .filter(|s| s.state == SnapshotState::Stale)
        .collect();
    if stale.is_empty() {
        report.line("no stale snapshots");
        return Ok(());
    }
    let mut failed = Vec::new();
    for s in &stale {
        let lv = &s.snapshot.lv;
        let why = format!(
            "snapshot of {} made by pid {}, which is gone",
            lv.origin.as_deref().unwrap_or("?"),
            s.snapshot
                .pid
                .map_or("(unknown)".to_owned(), |p| p.to_string())
        );
        if dry_run {
            report.line(&format!("would remove {} ({why})", lv.path));
            continue;
        }
        match lvm.remove(&lv.path) {
            Ok(()) => report.line(&format!("removed {} ({why})", lv.path)),
            Err(e) => {
                blockdiff_tools::errln!("{NAME}: error: {}: {e}", lv.path);
                failed.push(lv.path.to_string());
            }
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(anyhow!(
            "{} of {} stale snapshots could not be removed ({})",
            failed.len(),
            stale.len(),
            failed.join(", ")
        ))
    }
}

fn mount(
    lvm: &Lvm,
    mounter: &PartitionMounter,
    args: MountArgs,
    report: &Reporter,
) -> anyhow::Result<()> {
    let mut options = MountOptions {
        partition: args.partition,
        snapshot: SnapshotOptions {
            size: args.snapshot_size,
            ..SnapshotOptions::default()
        },
        mount_options: args.options.into_iter().filter(|o| !o.is_empty()).collect(),
        create_mount_point: false,
    };
    if let (Some(pattern), Some(under)) = (&args.each, &args.under) {
        let pattern = VolumePattern::parse(pattern).map_err(|e| UsageError(e.to_string()))?;
        options.create_mount_point = true;
        let volumes = pattern.select_from(lvm)?.volumes;
        if volumes.is_empty() {
            return Err(anyhow!("no logical volume matches {pattern}"));
        }
        return for_each(&volumes, "mount", report, |lv| {
            let dir = under.join(&lv.lv);
            mount_one(mounter, lv, &dir, &options, report)
        });
    }
    let (Some(lv), Some(dir)) = (&args.lv, &args.dir) else {
        return Err(UsageError("give VG/LV and DIR, or --each and --under".into()).into());
    };
    let lv: LvPath = lv
        .parse()
        .map_err(|e: lvm_snap::Error| UsageError(e.to_string()))?;
    mount_one(mounter, &lv, dir, &options, report)
}

fn mount_one(
    mounter: &PartitionMounter,
    lv: &LvPath,
    dir: &Path,
    options: &MountOptions,
    report: &Reporter,
) -> anyhow::Result<()> {
    let mounted = mounter
        .mount(lv, dir, options, &mut |step| {
            report.line(&format!("{lv}: {step}"));
        })
        .with_context(|| format!("mounting {lv} at {} failed", dir.display()))?;
    report.line(&format!(
        "{lv}: mounted read-only at {}; `{NAME} umount {}` undoes it",
        mounted.mount_point.display(),
        mounted.mount_point.display()
    ));
    Ok(())
}

fn umount(mounter: &PartitionMounter, args: UmountArgs, report: &Reporter) -> anyhow::Result<()> {
    if let (Some(pattern), Some(under)) = (&args.each, &args.under) {
        let pattern = VolumePattern::parse(pattern).map_err(|e| UsageError(e.to_string()))?;
        let under =
            std::fs::canonicalize(under).with_context(|| format!("finding {}", under.display()))?;
        // The recorded mounts, not the LVs: an LV removed since still has
        // its snapshot and mount undone.
        let mounts: Vec<_> = mounter
            .mounts()?
            .into_iter()
            .filter(|m| pattern.matches(&m.origin) && m.mount_point == under.join(&m.origin.lv))
            .collect();
        if mounts.is_empty() {
            report.line(&format!(
                "nothing of {pattern} is mounted under {}",
                under.display()
            ));
            return Ok(());
        }
        let origins: Vec<LvPath> = mounts.iter().map(|m| m.origin.clone()).collect();
        return for_each(&origins, "unmount", report, |lv| {
            umount_one(mounter, &under.join(&lv.lv), report)
        });
    }
    let Some(dir) = &args.dir else {
        return Err(UsageError("give DIR, or --each and --under".into()).into());
    };
    umount_one(mounter, dir, report)
}

fn umount_one(mounter: &PartitionMounter, dir: &Path, report: &Reporter) -> anyhow::Result<()> {
    let what = dir.display().to_string();
    let unmounted = mounter
        .unmount(dir, &mut |step| report.line(&format!("{what}: {step}")))
        .with_context(|| format!("unmounting {what} failed"))?;
    report.line(&format!(
        "{what}: done ({} no longer mounted)",
        unmounted.origin
    ));
    Ok(())
}

/// Runs `one` for every volume, going on after a failure (printed at
/// once); fails at the end if any failed.
fn for_each(
    volumes: &[LvPath],
    verb: &str,
    report: &Reporter,
    mut one: impl FnMut(&LvPath) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let mut failed = Vec::new();
    for lv in volumes {
        if let Err(e) = one(lv) {
            blockdiff_tools::errln!("{NAME}: error: {}", blockdiff_tools::error_line(&e));
            failed.push(lv.to_string());
        }
    }
    report.line(&format!(
        "{verb}: {} of {} volumes succeeded",
        volumes.len() - failed.len(),
        volumes.len()
    ));
    if failed.is_empty() {
        Ok(())
    } else {
        Err(anyhow!(
            "could not {verb} {} of {} volumes: {}",
            failed.len(),
            volumes.len(),
            failed.join(", ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Args::command().debug_assert();
        let parse = |line: &[&str]| Args::try_parse_from([NAME].iter().chain(line));
        let a = parse(&[
            "mount",
            "vg0/a",
            "/mnt/a",
            "-p",
            "2",
            "--snapshot-size",
            "512M",
        ])
        .unwrap();
        let Command::Mount(m) = a.command else {
            panic!()
        };
        assert_eq!(m.partition, Some(2));
        assert_eq!(m.snapshot_size, SnapshotSize::Bytes(512 << 20));
        assert_eq!(a.state_dir, Path::new(DEFAULT_STATE_DIR));
        assert!(parse(&["mount", "--each", "vg0/domu-*", "--under", "/mnt"]).is_ok());
        assert!(parse(&["umount", "/mnt/a", "--state-dir", "/tmp/s", "-q"]).is_ok());
        assert!(parse(&["umount", "--each", "vg0/domu-*", "--under", "/mnt"]).is_ok());
        assert!(parse(&["cleanup", "vg0", "--dry-run"]).is_ok());
        // Usage errors.
        for bad in [
            &["mount", "vg0/a"][..],
            &["mount", "--each", "vg0/*"],
            &["mount", "vg0/a", "/mnt", "--each", "vg0/*", "--under", "/m"],
            &["mount", "vg0/a", "/mnt", "--snapshot-size", "200%"],
            &["umount"],
            &["umount", "--under", "/mnt"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }
}
