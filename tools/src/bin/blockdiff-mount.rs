//! `blockdiff-mount`: any generation of a backup, mounted read-only
//! without restoring it (FUSE); with `--fs`, the file system inside it.

use std::ffi::{OsStr, OsString};
use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::SystemTime;

use anyhow::{Context, bail};
use blockdiff_core::{GenerationReader, ReaderOptions};
use blockdiff_export::{
    DEFAULT_STATE_DIR, FsChoice, GenerationMount, ImageFiles, ImageFs, MountOptions, StateDir,
};
use blockdiff_storage::ChainLocation;
use blockdiff_tools::{KeyArgs, StorageArgs, UsageError, run_main_with};
use clap::Parser;
use command_runner::LocalRunner;

const EXAMPLES: &str = "\
Examples:
  # One file from last Tuesday's backup (generation 12) of a VM's disk:
  blockdiff-mount /var/backup/web -g 12 --fs 1 /mnt/restore
  cp /mnt/restore/etc/nginx/nginx.conf /tmp/
  blockdiff-umount /mnt/restore

  # The image and each partition as files, for any tool that reads images:
  blockdiff-mount /var/backup/web /mnt/web      # /mnt/web/image, /mnt/web/part1, ...
  blockdiff-umount /mnt/web

Without --fs, DIR shows the generation's image as the read-only file
`image`, and each partition of its MBR or GPT as `partN`. With --fs, the
image (or partition N) is attached read-only to a loop device and its file
system mounted read-only on DIR (ext3/ext4 with -o noload and XFS with
-o norecovery: a journal left by the snapshot is not replayed), so files
are browsed and copied with cp.

Every block is checked against the generation's digest before it is
served: a damaged block is an I/O error (EIO) on the reads that touch it,
and is logged; it is never served wrongly. Nothing of the backup is
changed, and nothing is restored first.

blockdiff-mount returns once DIR is ready; a process in the background
serves the files until `blockdiff-umount DIR`, which undoes everything in
reverse (also after a crash or kill -9 of that process). What was mounted is
recorded in --state-dir; the server's log is beside it (DIR's id .log).

Exit status: 0 mounted, 1 failure (nothing is left mounted), 2 usage
error.";

/// Mount a generation of a blockdiff backup read-only, without restoring it.
#[derive(Debug, Parser)]
#[command(name = "blockdiff-mount", version, after_help = EXAMPLES)]
struct Args {
    /// Path prefix of the backup's files, e.g. /var/backup/db, or
    /// s3://BUCKET/PREFIX/NAME on an object store
    name: PathBuf,

    /// The directory to mount on (it must exist; what it holds is hidden
    /// while mounted)
    dir: PathBuf,

    /// The generation to mount (default: the last committed one)
    #[arg(short = 'g', long = "generation", value_name = "K")]
    generation: Option<u64>,

    /// Mount the file system inside the image on DIR instead of showing
    /// the image files: of partition N (`--fs 1`), of the whole image
    /// (`--fs image`), or without a value of the one Linux file system
    /// there is
    #[arg(long, value_name = "PARTITION", num_args = 0..=1, default_missing_value = "auto")]
    fs: Option<String>,

    /// Serve in this process until unmounted, instead of in the background
    #[arg(long)]
    foreground: bool,

    /// Where mounts are recorded for blockdiff-umount
    #[arg(long, value_name = "DIR", default_value = DEFAULT_STATE_DIR, env = "BLOCKDIFF_MOUNT_STATE")]
    state_dir: PathBuf,

    /// Most decompressed data kept in memory for nearby reads (binary
    /// units: 64M = 64 MiB)
    #[arg(long, value_name = "SIZE", default_value = "64M")]
    cache_size: String,

    /// (internal) Report readiness on standard output, then log to a file.
    #[arg(long, hide = true)]
    serve_child: bool,

    #[command(flatten)]
    storage: StorageArgs,

    #[command(flatten)]
    key: KeyArgs,
}

fn main() -> ExitCode {
    run_main_with(
        "blockdiff-mount",
        fs_value_explicit(std::env::args_os()),
        run,
    )
}

/// Whether `arg` is a value of `--fs`: `auto`, `image` or a number.
fn is_fs_value(arg: &OsStr) -> bool {
    arg.to_str().is_some_and(|a| {
        a == "auto" || a == "image" || (!a.is_empty() && a.bytes().all(|b| b.is_ascii_digit()))
    })
}

/// `--fs` takes an optional value: `--fs NAME DIR` must not take NAME for
/// it. A `--fs` not followed by one of its values becomes `--fs=auto`.
fn fs_value_explicit(args: impl Iterator<Item = OsString>) -> Vec<OsString> {
    let args: Vec<OsString> = args.collect();
    let mut out = Vec::with_capacity(args.len());
    let mut options_end = false;
    for (i, arg) in args.iter().enumerate() {
        if arg == "--" {
            options_end = true;
        }
        if !options_end && arg == "--fs" && !args.get(i + 1).is_some_and(|next| is_fs_value(next)) {
            out.push(OsString::from("--fs=auto"));
        } else {
            out.push(arg.clone());
        }
    }
    out
}

fn fs_choice(text: &str) -> anyhow::Result<FsChoice> {
    Ok(match text {
        "auto" => FsChoice::Auto,
        "image" => FsChoice::Image,
        n => FsChoice::Partition(n.parse().map_err(|_| {
            UsageError(format!(
                "--fs takes a partition number, `image` or nothing, not {n:?}"
            ))
        })?),
    })
}

fn run(args: Args) -> anyhow::Result<()> {
    let fs = args.fs.as_deref().map(fs_choice).transpose()?;
    let cache_bytes = archive_format::parse_binary_size(&args.cache_size, "--cache-size")
        .map_err(|e| UsageError(e.to_string()))?;
    if !args.foreground && !args.serve_child {
        return spawn_server();
    }
    let location = ChainLocation::open(&args.name, &args.storage.to_options())?
        .with_encryption(args.key.encryption()?);
    let reader = GenerationReader::open(
        location.source(),
        &ReaderOptions {
            generation: args.generation,
            cache_bytes: usize::try_from(cache_bytes).unwrap_or(usize::MAX),
        },
    )?;
    let generation = reader.generation();
    let time = location
        .source()
        .find_diff(generation)
        .ok()
        .and_then(|d| location.source().diff_modified(&d))
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let image_name = PathBuf::from(format!("{} generation {generation}", args.name.display()));
    let files = ImageFiles::read(&reader, &image_name)?;
    let chain = args.name.display().to_string();
    let image_fs =
        ImageFs::new(Arc::new(reader), files.clone(), time).with_error_log(Arc::new(move |e| {
            let _ = writeln!(std::io::stderr(), "blockdiff-mount: read error: {e}");
        }));
    let mount = GenerationMount::mount(
        image_fs,
        &files,
        &MountOptions {
            dir: args.dir.clone(),
            fs,
            state_dir: args.state_dir.clone(),
            chain: chain.clone(),
            generation,
        },
        Arc::new(LocalRunner::new().with_env("LC_ALL", "C")),
    )?;
    if args.serve_child {
        let log = StateDir::new(&args.state_dir)
            .file(&mount.state().dir)
            .with_extension("log");
        println!("ready {generation} {}", log.display());
        std::io::stdout().flush()?;
        redirect_output(&log)?;
    } else {
        eprintln!(
            "blockdiff-mount: generation {generation} of {chain} mounted on {}; serving until blockdiff-umount {}",
            mount.state().dir.display(),
            mount.state().dir.display()
        );
    }
    mount.wait()?;
    Ok(())
}

/// From here on, standard output and error go to `log` (the terminal may
/// be gone), standard input is /dev/null.
fn redirect_output(log: &std::path::Path) -> anyhow::Result<()> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(log)
        .with_context(|| format!("open {}", log.display()))?;
    let null = std::fs::File::open("/dev/null")?;
    // SAFETY: dup2 on descriptors this process owns; it touches no memory.
    unsafe {
        libc::dup2(null.as_raw_fd(), 0);
        libc::dup2(file.as_raw_fd(), 1);
        libc::dup2(file.as_raw_fd(), 2);
    }
    Ok(())
}

/// Runs this command again as the background server (in a session of its
/// own), and returns once it says the mount is ready; its errors before
/// that reach the terminal, and its exit status is ours.
fn spawn_server() -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("find this program")?;
    let mut command = Command::new(exe);
    command
        .args(std::env::args_os().skip(1))
        .arg("--serve-child")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    // SAFETY: setsid is async-signal-safe; the child runs it before exec.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut command, || {
            libc::setsid();
            Ok(())
        });
    }
    let mut child = command.spawn().context("start the mount's server")?;
    let stdout = child.stdout.take().context("the server's output")?;
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    if let Some(rest) = line.trim_end().strip_prefix("ready ") {
        let (generation, log) = rest.split_once(' ').unwrap_or((rest, ""));
        eprintln!("blockdiff-mount: generation {generation} mounted (server log: {log})");
        return Ok(());
    }
    let status = child.wait()?;
    match status.code() {
        // The server said why on standard error, in one line.
        Some(code) if code != 0 => std::process::exit(code),
        _ => bail!("the mount's server ended without mounting ({status})"),
    }
}
