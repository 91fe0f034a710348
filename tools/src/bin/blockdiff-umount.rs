//! `blockdiff-umount`: undoes a `blockdiff-mount`, in reverse.

use std::path::PathBuf;
use std::process::ExitCode;

use blockdiff_export::{DEFAULT_STATE_DIR, unmount};
use blockdiff_tools::run_main;
use clap::Parser;
use command_runner::LocalRunner;

const EXAMPLES: &str = "\
Examples:
  blockdiff-umount /mnt/restore

Unmounts the file system mounted with --fs, detaches its loop device,
unmounts the FUSE file system and waits for its server to end, then
forgets the mount. It works after a crash or kill -9 of the server too.
A mount point still in use (a shell's current directory, an open file)
is an error naming it, and nothing is undone; leave it and run again.

Exit status: 0 unmounted, 1 failure, 2 usage error.";

/// Unmount a generation mounted with blockdiff-mount.
#[derive(Debug, Parser)]
#[command(name = "blockdiff-umount", version, after_help = EXAMPLES)]
struct Args {
    /// The mount point given to blockdiff-mount
    dir: PathBuf,

    /// Where blockdiff-mount recorded the mount
    #[arg(long, value_name = "DIR", default_value = DEFAULT_STATE_DIR, env = "BLOCKDIFF_MOUNT_STATE")]
    state_dir: PathBuf,

    /// Say nothing on success
    #[arg(short, long)]
    quiet: bool,
}

fn main() -> ExitCode {
    run_main("blockdiff-umount", run)
}

fn run(args: Args) -> anyhow::Result<()> {
    let report = unmount(
        &args.dir,
        &args.state_dir,
        &LocalRunner::new().with_env("LC_ALL", "C"),
    )?;
    if !args.quiet {
        let mut done = Vec::new();
        if report.fs_unmounted {
            done.push("file system unmounted".to_owned());
        }
        for l in &report.loops_detached {
            done.push(format!("{} detached", l.display()));
        }
        if report.fuse_unmounted {
            done.push("image unmounted".to_owned());
        }
        if report.server_was_dead {
            done.push("its server had died".to_owned());
        }
        eprintln!(
            "blockdiff-umount: {}: {}",
            args.dir.display(),
            if done.is_empty() {
                "nothing was mounted; forgotten".to_owned()
            } else {
                done.join(", ")
            }
        );
    }
    Ok(())
}
