//! `blockdiff-nbd`: any generation of a backup served read-only over NBD
//! (through Debian's nbdkit and blockdiff's plugin), for qemu, qemu-img
//! and the kernel's nbd-client.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::Context;
use blockdiff_nbdkit::PLUGIN_NAME;
use blockdiff_tools::{KeyArgs, StorageArgs, UsageError, run_main};
use clap::Parser;

const EXAMPLES: &str = "\
Examples:
  # Boot a VM from last night's backup while the real restore runs
  # (writes go to a temporary overlay, never to the backup):
  blockdiff-nbd /var/backup/web --socket /run/web.nbd &
  qemu-system-x86_64 -m 2G -drive file=nbd+unix:///?socket=/run/web.nbd,format=raw,snapshot=on

  # Convert generation 12 to qcow2, the server stopping when done:
  blockdiff-nbd /var/backup/web -g 12 --socket /tmp/web.nbd \\
      --run 'qemu-img convert -O qcow2 \"$uri\" /tmp/web-12.qcow2'

  # Attach it as a block device (nbd kernel module):
  blockdiff-nbd /var/backup/web --listen 127.0.0.1:10809 &
  nbd-client -readonly 127.0.0.1 10809 /dev/nbd0 -N ''

The export is read-only and never changes; any export name is accepted.
Every block is checked against the generation's digest before it is sent:
a damaged block is an I/O error (EIO) to exactly the requests that touch
it, logged on standard error with the file and offset; it is never sent
wrongly. Without --socket or --listen the server listens on
127.0.0.1:10809, loopback only; give --listen 0.0.0.0:10809 to serve
other hosts (NBD has no authentication without TLS: prefer an ssh tunnel).

blockdiff-nbd runs nbdkit (Debian's nbdkit package) with the plugin
libblockdiff_nbdkit.so, found beside this program, in ../lib/blockdiff/
or where $BLOCKDIFF_NBDKIT_PLUGIN says. It serves until stopped (Ctrl-C,
SIGTERM), or with --run until the command ends, with its exit status.

Exit status: 0 success, 1 failure (no such generation, a wrong key, a
damaged index: said before serving), 2 usage error.";

/// Serve a generation of a blockdiff backup read-only over NBD.
#[derive(Debug, Parser)]
#[command(name = "blockdiff-nbd", version, after_help = EXAMPLES)]
struct Args {
    /// Path prefix of the backup's files, e.g. /var/backup/db, or
    /// s3://BUCKET/PREFIX/NAME on an object store
    name: PathBuf,

    /// The generation to serve (default: the last committed one)
    #[arg(short = 'g', long = "generation", value_name = "K")]
    generation: Option<u64>,

    /// Serve on this Unix socket (created; clients use
    /// nbd+unix:///?socket=PATH)
    #[arg(long, value_name = "PATH", conflicts_with = "listen")]
    socket: Option<PathBuf>,

    /// Serve on this TCP address, HOST:PORT or PORT (default
    /// 127.0.0.1:10809)
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,

    /// Run this shell command once the server is ready, with $uri (and
    /// $unixsocket or $port) naming the export, then stop the server; the
    /// exit status is the command's
    #[arg(long, value_name = "CMD")]
    run: Option<String>,

    /// Most decompressed data kept in memory for nearby reads (binary
    /// units: 64M = 64 MiB)
    #[arg(long, value_name = "SIZE", default_value = "64M")]
    cache_size: String,

    #[command(flatten)]
    storage: StorageArgs,

    #[command(flatten)]
    key: KeyArgs,
}

fn main() -> ExitCode {
    run_main("blockdiff-nbd", run)
}

/// Where the plugin is: `$BLOCKDIFF_NBDKIT_PLUGIN`, else beside this
/// program (also in cargo's `deps/` there, as a development build puts it),
/// else in `../lib/blockdiff/`.
fn plugin_path() -> anyhow::Result<PathBuf> {
    const FILE: &str = "libblockdiff_nbdkit.so";
    if let Some(p) = std::env::var_os("BLOCKDIFF_NBDKIT_PLUGIN").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        anyhow::ensure!(
            p.is_file(),
            "the nbdkit plugin {} (BLOCKDIFF_NBDKIT_PLUGIN) does not exist",
            p.display()
        );
        return Ok(p);
    }
    let exe = std::env::current_exe().context("find this program")?;
    let dir = exe.parent().unwrap_or(Path::new("/"));
    let candidates = [
        dir.join(FILE),
        dir.join("deps").join(FILE),
        dir.join("../lib/blockdiff").join(FILE),
    ];
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .with_context(|| {
            format!(
                "the nbdkit plugin {FILE} is not beside {} nor in ../lib/blockdiff/ (build it with cargo build -p blockdiff-nbdkit, or set BLOCKDIFF_NBDKIT_PLUGIN)",
                exe.display()
            )
        })
}

/// `HOST:PORT`, `[V6]:PORT` or `PORT` as nbdkit's `-i HOST -p PORT`.
fn listen_args(addr: &str) -> anyhow::Result<Vec<String>> {
    let bad = || UsageError(format!("--listen takes HOST:PORT or PORT, not {addr:?}"));
    let (host, port) = match addr.rsplit_once(':') {
        Some((h, p)) => (h.trim_start_matches('[').trim_end_matches(']'), p),
        None => ("127.0.0.1", addr),
    };
    let port: u16 = port.parse().map_err(|_| bad())?;
    if host.is_empty() {
        return Err(bad().into());
    }
    Ok(vec![
        "-i".into(),
        host.into(),
        "-p".into(),
        port.to_string(),
    ])
}

/// nbdkit leaves its socket behind when it ends and will not bind over
/// it: a socket no server listens on is removed. Anything else at `path`
/// is refused, never removed.
fn remove_stale_socket(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::FileTypeExt;
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return Ok(());
    };
    anyhow::ensure!(
        meta.file_type().is_socket(),
        "{} exists and is not a socket; give --socket a new path",
        path.display()
    );
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => anyhow::bail!("{}: a server is listening there already", path.display()),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => std::fs::remove_file(path)
            .with_context(|| format!("remove the stale socket {}", path.display())),
        Err(e) => Err(e).with_context(|| {
            format!(
                "{}: cannot tell whether a server listens there",
                path.display()
            )
        }),
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    let cache_bytes = archive_format::parse_binary_size(&args.cache_size, "--cache-size")
        .map_err(|e| UsageError(e.to_string()))?;
    let plugin = plugin_path()?;
    let mut command = Command::new("nbdkit");
    command.args(["--foreground", "--readonly", "--exportname", ""]);
    match (&args.socket, &args.listen) {
        (Some(socket), _) => {
            remove_stale_socket(socket)?;
            command.arg("-U").arg(socket);
        }
        (None, listen) => {
            command.args(listen_args(listen.as_deref().unwrap_or("127.0.0.1:10809"))?);
        }
    }
    if let Some(run) = &args.run {
        command.args(["--run", run]);
    }
    command.arg(&plugin);
    let param = |key: &str, value: &std::ffi::OsStr| {
        let mut p = OsString::from(format!("{key}="));
        p.push(value);
        p
    };
    command.arg(param("chain", args.name.as_os_str()));
    if let Some(g) = args.generation {
        command.arg(format!("generation={g}"));
    }
    command.arg(format!("cache-size={cache_bytes}"));
    if let Some(f) = &args.key.key_file {
        command.arg(param("key-file", f.as_os_str()));
    }
    if let Some(f) = &args.key.passphrase_file {
        command.arg(param("passphrase-file", f.as_os_str()));
    }
    let storage = args.storage.to_options();
    for (key, value) in [
        ("endpoint", storage.endpoint.map(OsString::from)),
        ("region", storage.region.map(OsString::from)),
        ("profile", storage.profile.map(OsString::from)),
        ("cache-dir", storage.cache_dir.map(PathBuf::into_os_string)),
        (
            "timeout",
            storage.timeout_secs.map(|t| t.to_string().into()),
        ),
    ] {
        if let Some(v) = value {
            command.arg(param(key, &v));
        }
    }
    // The socket (and anything nbdkit creates) is this user's alone: a
    // backup is never more readable than its source.
    // SAFETY: umask cannot fail and touches no memory.
    unsafe { libc::umask(0o077) };
    // nbdkit takes over this process: its exit status is ours.
    let error = command.exec();
    Err(anyhow::anyhow!(
        "cannot run nbdkit (Debian's nbdkit package) for the {PLUGIN_NAME} plugin: {error}"
    ))
}
