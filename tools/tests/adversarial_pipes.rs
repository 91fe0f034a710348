//! Adversarial class: closed standard output and standard error, for every
//! tool and output mode. Closed as by `| head -c 0` (the reader is gone
//! before the tool writes: `EPIPE`, made deterministic by closing the read
//! end of the pipe before the tool starts) and as by `>&-` / `2>&-` (the
//! descriptor is closed: `EBADF`).
//!
//! The invariant: no tool panics (exit 101); a command whose work is done
//! (a committed backup, a restore, an executed prune) exits 0 whatever
//! happens to what it prints; a command whose only job is to print exits 1
//! when its output could not be written; a dump whose diff was cut short
//! fails and leaves no new digest.

mod common;

use std::ffi::OsStr;
use std::fs;
use std::io::Read;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::{BACKUP, DUMP, INFO, PRUNE, REPAIR, RESTORE, listing, noise, stderr, text};

const LVM: &str = env!("CARGO_BIN_EXE_blockdiff-lvm");
const AGENT: &str = env!("CARGO_BIN_EXE_blockdiff-agent");

/// How a standard stream is closed.
#[derive(Debug, Clone, Copy)]
enum Closed {
    /// Standard output is a pipe whose reader is gone (`| head -c 0`).
    StdoutPipe,
    /// Standard error is a pipe whose reader is gone.
    StderrPipe,
    /// Standard output is closed (`>&-`).
    StdoutFd,
    /// Standard error is closed (`2>&-`).
    StderrFd,
}

const ALL: [Closed; 4] = [
    Closed::StdoutPipe,
    Closed::StderrPipe,
    Closed::StdoutFd,
    Closed::StderrFd,
];

impl Closed {
    fn stdout_lost(self) -> bool {
        matches!(self, Closed::StdoutPipe)
    }
}

/// A pipe whose read end is already closed: every write to it fails with
/// `EPIPE`, from the first.
fn dead_pipe() -> Stdio {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    writer.into()
}

/// Runs `bin args` with one stream closed as `how` says; the other streams
/// are captured. Stdin is `stdin` or /dev/null.
fn run_closed(how: Closed, bin: &str, args: &[&dyn AsRef<OsStr>], stdin: Option<&Path>) -> Output {
    let mut cmd = match how {
        Closed::StdoutPipe | Closed::StderrPipe => {
            let mut c = Command::new(bin);
            c.args(args.iter().map(std::convert::AsRef::as_ref));
            c
        }
        Closed::StdoutFd | Closed::StderrFd => {
            let redirect = match how {
                Closed::StdoutFd => "exec \"$0\" \"$@\" >&-",
                _ => "exec \"$0\" \"$@\" 2>&-",
            };
            let mut c = Command::new("sh");
            c.arg("-c").arg(redirect).arg(bin);
            c.args(args.iter().map(std::convert::AsRef::as_ref));
            c
        }
    };
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    match how {
        Closed::StdoutPipe => {
            cmd.stdout(dead_pipe());
        }
        Closed::StderrPipe => {
            cmd.stderr(dead_pipe());
        }
        _ => {}
    }
    match stdin {
        Some(p) => cmd.stdin(fs::File::open(p).unwrap()),
        None => cmd.stdin(Stdio::null()),
    };
    cmd.output().unwrap()
}

/// Asserts the run did not panic and exited `code`.
#[track_caller]
fn exits(o: &Output, code: i32, what: &str) {
    let e = stderr(o);
    assert!(!e.contains("panicked"), "{what}: panicked: {e}");
    assert_eq!(o.status.code(), Some(code), "{what}: {e}");
}

/// A store `db` with two generations of `disk.img` (a few blocks).
fn store(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let src = dir.join("disk.img");
    let name = dir.join("db");
    let mut data = noise(40_000, 5);
    for _ in 0..2 {
        data[100] ^= 1;
        fs::write(&src, &data).unwrap();
        let o = Command::new(BACKUP)
            .args(["--quiet", "--block-size", "4k"])
            .arg(&name)
            .arg(&src)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
    }
    (name, src)
}

fn ver(name: &Path) -> String {
    fs::read_to_string(name.with_extension("ver")).unwrap()
}

#[test]
fn help_and_version_of_every_tool_never_panic() {
    for bin in [DUMP, BACKUP, RESTORE, INFO, PRUNE, REPAIR, LVM] {
        for flag in ["--help", "--version"] {
            for how in ALL {
                let o = run_closed(how, bin, &[&flag], None);
                // Printing is their only job: a lost --help is a failure.
                let code = if how.stdout_lost() { 1 } else { 0 };
                exits(&o, code, &format!("{bin} {flag} {how:?}"));
            }
        }
    }
}

#[test]
fn lvm_listing_and_the_agent_never_panic() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("disk.img");
    fs::write(&src, noise(20_000, 6)).unwrap();
    // The agent's input: a request to dump `src`, no previous digest.
    let request = dir.path().join("request");
    let mut input = Vec::new();
    blockdiff_run::remote::AgentInput::<&[u8]>::new(
        &blockdiff_run::remote::AgentRequest {
            version: blockdiff_run::remote::PROTOCOL_VERSION,
            source: blockdiff_run::remote::AgentSource::Path(src.clone()),
            generation: 1,
            block_size: 4096,
            threads: 0,
            format: blockdiff_run::FormatChoice::default(),
            previous: false,
            consistency: blockdiff_run::ConsistencyOptions::default(),
            polite: blockdiff_run::PoliteOptions::default(),
            hash_key: None,
            tracking: None,
        },
        None,
    )
    .read_to_end(&mut input)
    .unwrap();
    fs::write(&request, input).unwrap();
    for how in ALL {
        // Without LVM it fails, with it it lists: either way no panic.
        let o = run_closed(how, LVM, &[&"snapshots"], None);
        let e = stderr(&o);
        assert!(!e.contains("panicked"), "lvm snapshots {how:?}: {e}");
        assert!(matches!(o.status.code(), Some(0 | 1)), "{how:?}: {e}");
        if how.stdout_lost() {
            assert_eq!(o.status.code(), Some(1), "a lost listing fails");
        }
        // The agent's packets are its stdout: lost, the dump failed.
        let o = run_closed(how, AGENT, &[&"serve"], Some(&request));
        let code = if how.stdout_lost() { 1 } else { 0 };
        exits(&o, code, &format!("agent dump {how:?}"));
    }
    for flag in ["--help", "--version"] {
        for how in ALL {
            let o = run_closed(how, AGENT, &[&flag], None);
            assert!(!stderr(&o).contains("panicked"), "agent {flag} {how:?}");
        }
    }
}

#[test]
fn info_fails_without_panicking_when_its_output_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let (name, _) = store(dir.path());
    for json in [false, true] {
        for how in ALL {
            let args: Vec<&dyn AsRef<OsStr>> = if json {
                vec![&"--json", &name]
            } else {
                vec![&name]
            };
            let o = run_closed(how, INFO, &args, None);
            let code = if how.stdout_lost() { 1 } else { 0 };
            exits(&o, code, &format!("info json={json} {how:?}"));
            // `| head`: the reader left on purpose, no message.
            assert!(o.stderr.is_empty() || !how.stdout_lost(), "{}", stderr(&o));
        }
    }
}

#[test]
fn a_committed_backup_exits_0_whatever_happens_to_its_output() {
    let dir = tempfile::tempdir().unwrap();
    let (name, src) = store(dir.path());
    let log = dir.path().join("run.log");
    let mut expected = 2;
    for json in [false, true] {
        for how in ALL {
            fs::write(&src, noise(40_000, expected)).unwrap();
            let mut args: Vec<&dyn AsRef<OsStr>> = vec![&"--log", &log, &name, &src];
            if json {
                args.insert(0, &"--json");
            }
            let o = run_closed(how, BACKUP, &args, None);
            exits(&o, 0, &format!("backup json={json} {how:?}"));
            expected += 1;
            assert_eq!(ver(&name).trim(), expected.to_string(), "{how:?}");
            if json && how.stdout_lost() {
                let logged = fs::read_to_string(&log).unwrap();
                assert!(
                    logged.contains("the --json summary was not printed"),
                    "{logged}"
                );
            }
        }
    }
    assert!(listing(dir.path()).iter().all(|f| !f.contains("tmp")));
}

#[test]
fn restore_and_verify_exit_on_their_work_not_on_their_output() {
    let dir = tempfile::tempdir().unwrap();
    let (name, src) = store(dir.path());
    let want = fs::read(&src).unwrap();
    let target = dir.path().join("restored.img");
    for how in ALL {
        let _ = fs::remove_file(&target);
        let o = run_closed(how, RESTORE, &[&target, &"--from", &name], None);
        exits(&o, 0, &format!("restore {how:?}"));
        assert_eq!(fs::read(&target).unwrap(), want, "{how:?}");

        let o = run_closed(how, RESTORE, &[&"--verify-only", &"--from", &name], None);
        exits(&o, 0, &format!("verify-only {how:?}"));

        // Identical: nothing to list, the verdict is the exit status.
        let o = run_closed(
            how,
            RESTORE,
            &[&"--verify-only", &"--from", &name, &"--against", &src],
            None,
        );
        exits(&o, 0, &format!("--against, same {how:?}"));
    }
    // Differing: the listing is the output; lost or not, the run fails.
    let other = dir.path().join("other.img");
    let mut changed = want.clone();
    changed[10] ^= 1;
    changed[30_000] ^= 1;
    fs::write(&other, &changed).unwrap();
    for how in ALL {
        let o = run_closed(
            how,
            RESTORE,
            &[&"--verify-only", &"--from", &name, &"--against", &other],
            None,
        );
        exits(&o, 1, &format!("--against, different {how:?}"));
        if matches!(how, Closed::StdoutPipe) {
            assert!(
                stderr(&o).contains("differs from generation 2"),
                "{}",
                stderr(&o)
            );
        }
    }
    // A diff stream on stdin.
    let diff = dir.path().join("full.diff");
    let o = Command::new(DUMP)
        .arg("-o")
        .arg(&diff)
        .arg(&src)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    for how in ALL {
        let _ = fs::remove_file(&target);
        let o = run_closed(how, RESTORE, &[&target], Some(&diff));
        exits(&o, 0, &format!("restore from stdin {how:?}"));
        assert_eq!(fs::read(&target).unwrap(), want, "{how:?}");
    }
}

#[test]
fn prune_dry_run_fails_and_executed_prune_succeeds_with_a_closed_stdout() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("disk.img");
    fs::write(&src, noise(10_000, 9)).unwrap();
    let base = dir.path().join("db");
    for key in ["202001", "202002", "202003"] {
        let o = Command::new(BACKUP)
            .arg("--quiet")
            .arg(dir.path().join(format!("db-{key}")))
            .arg(&src)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
    }
    for how in ALL {
        for json in [false, true] {
            let mut args: Vec<&dyn AsRef<OsStr>> = vec![&base, &"--keep", &"1", &"--dry-run"];
            if json {
                args.push(&"--json");
            }
            let o = run_closed(how, PRUNE, &args, None);
            let code = if how.stdout_lost() { 1 } else { 0 };
            exits(&o, code, &format!("prune --dry-run json={json} {how:?}"));
            assert!(
                dir.path().join("db-202001.ver").exists(),
                "a dry run deletes nothing"
            );
        }
    }
    // The real prune deletes, then cannot print: done is done.
    let o = run_closed(
        Closed::StdoutPipe,
        PRUNE,
        &[&base, &"--keep", &"2", &"--json"],
        None,
    );
    exits(&o, 0, "prune --json, stdout closed");
    assert!(!dir.path().join("db-202001.ver").exists());
    let o = run_closed(Closed::StdoutPipe, PRUNE, &[&base, &"--keep", &"1"], None);
    exits(&o, 0, "prune, stdout closed");
    assert!(!dir.path().join("db-202002.ver").exists());
    assert!(dir.path().join("db-202003.ver").exists());
}

#[test]
fn repair_dry_run_fails_and_a_done_repair_succeeds_with_a_closed_stdout() {
    let dir = tempfile::tempdir().unwrap();
    let (name, _src) = store(dir.path());
    let ver_path = dir.path().join("db.ver");
    for how in ALL {
        fs::remove_file(&ver_path).unwrap();
        let o = run_closed(how, REPAIR, &[&name, &"--dry-run"], None);
        let code = if how.stdout_lost() { 1 } else { 0 };
        exits(&o, code, &format!("repair --dry-run {how:?}"));
        assert!(!ver_path.exists(), "a dry run writes nothing");
        // The repair itself is done whatever happens to its report.
        let o = run_closed(how, REPAIR, &[&name], None);
        exits(&o, 0, &format!("repair {how:?}"));
        assert_eq!(ver(&name), "2\n", "{how:?}");
    }
}

#[test]
fn a_dump_cut_short_by_a_closed_pipe_fails_and_writes_no_new_digest() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("disk.img");
    fs::write(&src, noise(300_000, 1)).unwrap();
    let digest = dir.path().join("X");
    for format in ["v2", "legacy"] {
        let o = run_closed(
            Closed::StdoutPipe,
            DUMP,
            &[&"--format", &format, &"--new-digest", &digest, &src],
            None,
        );
        exits(&o, 1, &format!("dump {format} | head -c 0"));
        let e = stderr(&o);
        assert!(e.contains("the diff is incomplete"), "{e}");
        assert!(!digest.exists(), "{format}: no new digest");
        assert_eq!(listing(dir.path()), ["disk.img"], "no temporary file left");
    }
    // An existing digest is left as it was.
    fs::write(&digest, b"previous digest").unwrap();
    let o = run_closed(
        Closed::StdoutPipe,
        DUMP,
        &[&"--new-digest", &digest, &src],
        None,
    );
    exits(&o, 1, "dump over an existing digest");
    assert_eq!(fs::read(&digest).unwrap(), b"previous digest");
    // With -o nothing goes to stdout, and stderr only carries notices:
    // however they are closed, the dump succeeds.
    for how in ALL {
        let out = dir.path().join("d.out");
        let o = run_closed(
            how,
            DUMP,
            &[&"-o", &out, &"--new-digest", &digest, &src],
            None,
        );
        exits(&o, 0, &format!("dump {how:?}"));
        assert!(out.exists() && digest.metadata().unwrap().len() > 100);
    }
}

#[test]
fn a_failed_dump_removes_only_what_it_created() {
    let dir = tempfile::tempdir().unwrap();
    // A directory as the source fails the dump after its outputs are open.
    let bad_source = dir.path().join("a-directory");
    fs::create_dir(&bad_source).unwrap();
    // Links to a character device: never deleted (they were, with the
    // device node itself when named directly).
    let out_link = dir.path().join("out-link");
    let digest_link = dir.path().join("digest-link");
    symlink("/dev/null", &out_link).unwrap();
    symlink("/dev/null", &digest_link).unwrap();
    let o = common::run(
        DUMP,
        &[&"-o", &out_link, &"--new-digest", &digest_link, &bad_source],
    );
    exits(&o, 1, "dump to device links");
    assert!(
        fs::symlink_metadata(&out_link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert!(
        fs::symlink_metadata(&digest_link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert!(Path::new("/dev/null").exists());

    // Existing regular files are left as they were; new ones not created.
    let out = dir.path().join("out");
    let digest = dir.path().join("digest");
    fs::write(&out, b"previous diff").unwrap();
    let o = common::run(DUMP, &[&"-o", &out, &"--new-digest", &digest, &bad_source]);
    exits(&o, 1, "dump over existing files");
    assert_eq!(fs::read(&out).unwrap(), b"previous diff");
    assert!(!digest.exists());
    assert_eq!(
        listing(dir.path()),
        ["a-directory", "digest-link", "out", "out-link"],
        "no temporary file left"
    );

    // Success: new files are private, a replaced file keeps its mode, and a
    // link to a regular file keeps pointing at the (replaced) file.
    let src = dir.path().join("disk.img");
    fs::write(&src, noise(50_000, 2)).unwrap();
    fs::set_permissions(&out, fs::Permissions::from_mode(0o640)).unwrap();
    let linked = dir.path().join("linked-digest");
    symlink("digest", &linked).unwrap();
    fs::write(&digest, b"old").unwrap();
    let o = common::run(DUMP, &[&"-o", &out, &"--new-digest", &linked, &src]);
    exits(&o, 0, "dump");
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&out), 0o640, "a replaced file keeps its mode");
    assert!(
        fs::symlink_metadata(&linked)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert!(
        fs::read(&digest).unwrap().len() > 100,
        "the link's target replaced"
    );
    let fresh = dir.path().join("fresh");
    let o = common::run(DUMP, &[&"-o", &fresh, &src]);
    exits(&o, 0, "dump to a new file");
    assert_eq!(mode(&fresh), 0o600, "new files are private");
    assert!(text(&o.stderr).is_empty());
}

#[test]
fn an_absurd_thread_count_is_a_usage_error_in_every_tool() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("disk.img");
    fs::write(&src, noise(10_000, 4)).unwrap();
    let name = dir.path().join("db");
    let o = common::run(DUMP, &[&"--threads", &"100000", &"-o", &"/dev/null", &src]);
    exits(&o, 2, "dump --threads 100000");
    assert!(
        stderr(&o).contains("--threads 100000 is too many"),
        "{}",
        stderr(&o)
    );
    let o = common::run(BACKUP, &[&"--threads", &"100000", &name, &src]);
    exits(&o, 2, "backup --threads 100000");
    assert!(
        stderr(&o).contains("--threads 100000 is too many"),
        "{}",
        stderr(&o)
    );
    assert!(!name.with_extension("ver").exists(), "nothing committed");
}
