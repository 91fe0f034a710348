//! Helpers shared by the integration tests in `tools/tests/`. Each test
//! file is its own crate and says `mod common;`; it uses only some of
//! these, hence the `dead_code` allowance.

#![allow(dead_code)]

use std::ffi::OsStr;
use std::fs;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const DUMP: &str = env!("CARGO_BIN_EXE_blockdiff-dump");
pub const BACKUP: &str = env!("CARGO_BIN_EXE_blockdiff-backup");
pub const RESTORE: &str = env!("CARGO_BIN_EXE_blockdiff-restore");
pub const INFO: &str = env!("CARGO_BIN_EXE_blockdiff-info");
pub const PRUNE: &str = env!("CARGO_BIN_EXE_blockdiff-prune");
pub const REPAIR: &str = env!("CARGO_BIN_EXE_blockdiff-repair");

/// Runs `bin` with `args` and stdin from /dev/null, and waits for its
/// output.
pub fn run(bin: &str, args: &[&dyn AsRef<OsStr>]) -> Output {
    Command::new(bin)
        .args(args.iter().map(std::convert::AsRef::as_ref))
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// Bytes as text, invalid UTF-8 replaced.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A finished run's stderr as text.
pub fn stderr(o: &Output) -> String {
    text(&o.stderr)
}

/// Pseudo-random bytes from a seed (xorshift), so tests need no data files.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// The names in a directory, sorted.
pub fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

/// Restores generation `k` of the backup `name` into `out` and returns
/// what was restored; the restore must succeed.
pub fn restore_generation(name: &Path, k: u64, out: &Path) -> Vec<u8> {
    let o = run(
        RESTORE,
        &[&out, &"--from", &name, &"--generation", &k.to_string()],
    );
    assert!(o.status.success(), "restore {k}: {}", stderr(&o));
    fs::read(out).unwrap()
}

/// Makes a FIFO at `path`.
pub fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: `c` is a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
}

/// Polls `cond` every 10 ms until it holds; fails after 30 seconds,
/// naming `what` was awaited.
pub fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Runs `blockdiff-backup` with `args` (shell words) under `script`
/// (util-linux), on a pseudo-terminal `cols` columns wide; `None` where
/// `script` is missing.
pub fn backup_on_a_pty(cols: u16, args: &str) -> Option<Output> {
    let shell = format!("stty cols {cols} 2>/dev/null; exec {BACKUP} {args}");
    match Command::new("script")
        .args(["-qec", &shell, "/dev/null"])
        .stdin(Stdio::null())
        .output()
    {
        Ok(o) => Some(o),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => panic!("script: {e}"),
    }
}

/// A run stopped at a named step by the tools' test hook
/// (`BLOCKDIFF_TEST_STOP_AT=STEP=FIFO`): it stays there until
/// [`StoppedRun::kill`] (kill -9, as a crash) or [`StoppedRun::resume`].
pub struct StoppedRun {
    child: std::process::Child,
    writer: Option<fs::File>,
}

impl StoppedRun {
    /// Spawns `cmd` with the hook set to stop it at `step` (the FIFO is
    /// made in `dir`), and returns once the run is at that step. Fails the
    /// test, with the run's stderr, if the run ends without reaching it.
    pub fn start(mut cmd: Command, step: &str, dir: &Path) -> StoppedRun {
        use std::os::unix::fs::OpenOptionsExt;
        let fifo = dir.join(format!("stop-{}.fifo", step.replace(':', "-")));
        let _ = fs::remove_file(&fifo);
        mkfifo(&fifo);
        cmd.env(
            "BLOCKDIFF_TEST_STOP_AT",
            format!("{step}={}", fifo.display()),
        );
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn");
        let start = Instant::now();
        loop {
            // A non-blocking open for writing succeeds only once the run
            // has opened the FIFO for reading, that is, reached the step.
            match fs::OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(&fifo)
            {
                Ok(writer) => {
                    let _ = fs::remove_file(&fifo);
                    return StoppedRun {
                        child,
                        writer: Some(writer),
                    };
                }
                Err(e) if e.raw_os_error() == Some(libc::ENXIO) => {}
                Err(e) => panic!("open {}: {e}", fifo.display()),
            }
            if let Some(status) = child.try_wait().unwrap() {
                let mut err = String::new();
                use std::io::Read;
                let _ = child.stderr.take().unwrap().read_to_string(&mut err);
                panic!("the run ended ({status}) without reaching step {step}: {err}");
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "the run did not reach step {step} in 60 s"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// The run's process id (to send it a signal).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the run where it stands (SIGKILL: no clean-up runs).
    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// Lets the run go on and waits for it to end.
    pub fn resume(mut self) -> Output {
        self.writer = None;
        let child = std::mem::replace(
            &mut self.child,
            Command::new("true").spawn().expect("spawn true"),
        );
        let out = child.wait_with_output().unwrap();
        let _ = self.child.wait();
        out
    }
}
