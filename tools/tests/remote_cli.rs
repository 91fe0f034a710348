//! `blockdiff-backup HOST:PATH` against a real OpenSSH server (Debian's
//! `openssh-server`, installed by scripts/services-setup.sh) that the tests
//! start on loopback with a generated host key and user key.
//!
//! The agent copied to the "remote" host is `$BLOCKDIFF_AGENT` when set
//! (scripts/test.sh sets it to the static build of scripts/build-agent.sh),
//! else the blockdiff-agent that cargo built for these tests.

mod common;

use std::fs;
use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{
    BACKUP, RESTORE, backup_on_a_pty, listing, noise, restore_generation, run, stderr, text,
};

fn agent() -> PathBuf {
    match std::env::var_os("BLOCKDIFF_AGENT") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from(env!("CARGO_BIN_EXE_blockdiff-agent")),
    }
}

/// A private sshd on 127.0.0.1, and the client options to reach it.
struct Sshd {
    dir: tempfile::TempDir,
    child: Child,
    user: String,
}

impl Sshd {
    /// `None` (with the reason printed) where no sshd can run.
    fn start() -> Option<Sshd> {
        if std::env::var_os("BLOCKDIFF_SKIP_SERVICES").is_some() {
            eprintln!("skipped: BLOCKDIFF_SKIP_SERVICES is set");
            return None;
        }
        let sshd = Path::new("/usr/sbin/sshd");
        if !sshd.exists() {
            eprintln!("skipped: no /usr/sbin/sshd (scripts/services-setup.sh installs it)");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let keygen = |file: &str| {
            let ok = Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                .arg(d.join(file))
                .status()
                .unwrap();
            assert!(ok.success());
        };
        keygen("host_key");
        keygen("id");
        fs::copy(d.join("id.pub"), d.join("authorized_keys")).unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let host_pub = fs::read_to_string(d.join("host_key.pub")).unwrap();
        fs::write(
            d.join("known_hosts"),
            format!("[127.0.0.1]:{port} {host_pub}"),
        )
        .unwrap();
        fs::write(
            d.join("sshd_config"),
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host_key\n\
                 AuthorizedKeysFile {d}/authorized_keys\nPidFile {d}/sshd.pid\n\
                 StrictModes no\nUsePAM no\nPasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n\
                 AcceptEnv XDG_CACHE_HOME BLOCKDIFF_TEST_STOP_AT\nLogLevel VERBOSE\n",
                d = d.display()
            ),
        )
        .unwrap();
        // The privilege separation directory sshd insists on when root.
        let _ = fs::create_dir_all("/run/sshd");
        let log = fs::File::create(d.join("sshd.log")).unwrap();
        let child = Command::new(sshd)
            .args(["-D", "-e", "-f"])
            .arg(d.join("sshd_config"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let user = String::from_utf8(Command::new("id").arg("-un").output().unwrap().stdout)
            .unwrap()
            .trim()
            .to_owned();
        let mut sshd = Sshd { dir, child, user };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = sshd.child.try_wait() {
                panic!("sshd exited ({status}): {}", sshd.log());
            }
            assert!(
                Instant::now() < deadline,
                "sshd did not listen: {}",
                sshd.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        sshd.port_file(port);
        Some(sshd)
    }

    fn port_file(&self, port: u16) {
        fs::write(self.dir.path().join("port"), port.to_string()).unwrap();
    }

    fn port(&self) -> u16 {
        fs::read_to_string(self.dir.path().join("port"))
            .unwrap()
            .parse()
            .unwrap()
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }

    /// The remote user's private directory for the agent (XDG_CACHE_HOME
    /// is sent with SetEnv, so the tests keep out of the real home).
    fn remote_cache(&self) -> PathBuf {
        self.dir.path().join("remote-cache")
    }

    fn source(&self, path: &Path) -> String {
        format!("{}@127.0.0.1:{}", self.user, path.display())
    }

    /// `blockdiff-backup NAME SOURCE ARGS…` with the client options.
    fn backup(&self, name: &Path, source: &str, args: &[&str]) -> Child {
        Command::new(BACKUP)
            .args(self.backup_args(name, source, args))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// The arguments of [`Sshd::backup`].
    fn backup_args(&self, name: &Path, source: &str, args: &[&str]) -> Vec<String> {
        let mut all = vec![name.display().to_string(), source.to_owned()];
        all.extend(self.client_args(""));
        all.extend(args.iter().map(std::string::ToString::to_string));
        all
    }

    /// The agent and the ssh options that reach this server, with `env`
    /// (`NAME=VALUE`, or nothing) set for the agent besides its cache.
    fn client_args(&self, env: &str) -> Vec<String> {
        let d = self.dir.path();
        let options = [
            format!("Port={}", self.port()),
            format!("IdentityFile={}/id", d.display()),
            "IdentitiesOnly=yes".into(),
            format!("UserKnownHostsFile={}/known_hosts", d.display()),
            "StrictHostKeyChecking=yes".into(),
            format!(
                "SetEnv=XDG_CACHE_HOME={} {env}",
                self.remote_cache().display()
            ),
            "LogLevel=ERROR".into(),
        ];
        let mut all = vec!["--agent".into(), agent().display().to_string()];
        for o in options {
            all.extend(["--ssh-option".into(), o]);
        }
        all
    }

    /// `blockdiff-restore TARGET --from NAME ARGS…` with the client
    /// options, and `env` for the agent.
    fn restore(&self, target: &str, name: &Path, args: &[&str], env: &str) -> Child {
        Command::new(RESTORE)
            .arg(target)
            .arg("--from")
            .arg(name)
            .args(self.client_args(env))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    fn backup_ok(&self, name: &Path, source: &str, args: &[&str]) -> String {
        let o = self.backup(name, source, args).wait_with_output().unwrap();
        let err = stderr(&o);
        assert!(o.status.success(), "{err}\nsshd: {}", self.log());
        err
    }

    fn connections(&self) -> usize {
        self.log().matches("Accepted publickey").count()
    }

    /// Agent processes of this server still running.
    fn running_agents(&self) -> Vec<String> {
        let cache = self.remote_cache().display().to_string();
        let out = Command::new("pgrep")
            .args(["-af", &cache])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            // The agent itself (`PID PATH serve`), not the local ssh
            // client whose command line holds the remote command.
            .filter(|l| {
                let mut words = l.split_whitespace().skip(1);
                words
                    .next()
                    .is_some_and(|exe| exe.contains("blockdiff-agent-"))
                    && words.next() == Some("serve")
            })
            .map(str::to_owned)
            .collect()
    }

    /// Files in the agent's directory.
    fn remote_files(&self) -> Vec<String> {
        let mut names: Vec<String> = match fs::read_dir(self.remote_cache().join("blockdiff")) {
            Ok(entries) => entries
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect(),
            Err(_) => Vec::new(),
        };
        names.sort();
        names
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Opens the FIFO once the agent has opened it for reading; fails (rather
/// than hanging) if the run ends first.
fn open_fifo_for_writing(fifo: &Path, run: &mut Child) -> fs::File {
    use std::os::unix::fs::OpenOptionsExt;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(fifo)
        {
            Ok(file) => {
                // Back to blocking writes.
                use std::os::fd::AsRawFd;
                // SAFETY: F_SETFL on a descriptor we own.
                unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETFL, 0) };
                return file;
            }
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) => {
                if let Some(status) = run.try_wait().unwrap() {
                    let mut err = String::new();
                    use std::io::Read;
                    run.stderr.take().unwrap().read_to_string(&mut err).unwrap();
                    panic!("the backup ended ({status}) before reading the pipe: {err}");
                }
                assert!(Instant::now() < deadline, "the agent never opened the pipe");
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("{e}"),
        }
    }
}

fn agent_sha256() -> String {
    let out = Command::new("sha256sum").arg(agent()).output().unwrap();
    String::from_utf8_lossy(&out.stdout)[..64].to_owned()
}

#[test]
fn full_and_incremental_remote_backups_restore_exactly_over_one_connection_each() {
    let Some(sshd) = Sshd::start() else { return };
    let local = tempfile::tempdir().unwrap();
    let remote = tempfile::tempdir().unwrap();
    let src = remote.path().join("disk.img");
    let name = local.path().join("db");
    let mut data = noise(3 << 20, 7);
    data.extend_from_slice(&vec![0u8; 1 << 20]);
    fs::write(&src, &data).unwrap();
    let v1 = data.clone();

    let err = sshd.backup_ok(&name, &sshd.source(&src), &[]);
    assert!(err.contains("copied the agent"), "{err}");
    assert_eq!(sshd.connections(), 1, "{}", sshd.log());
    // The agent sits in a private directory, named by its hash, alone.
    let cache = sshd.remote_cache().join("blockdiff");
    assert_eq!(
        fs::metadata(&cache).unwrap().permissions().mode() & 0o777,
        0o700
    );
    assert_eq!(
        sshd.remote_files(),
        [format!("blockdiff-agent-{}", agent_sha256())]
    );

    for (i, at) in [100_000usize, 2_000_000, 3_500_000].iter().enumerate() {
        data[*at] ^= 0x55 + i as u8;
    }
    fs::write(&src, &data).unwrap();
    let err = sshd.backup_ok(&name, &sshd.source(&src), &[]);
    assert!(err.contains("reusing the agent"), "{err}");
    assert!(err.contains("3 of 256 blocks changed"), "{err}");
    assert_eq!(
        sshd.connections(),
        2,
        "one connection per run: {}",
        sshd.log()
    );

    // A remote source quiesced by a hook: the hook runs on the remote side,
    // and its log lines come back prefixed with the host.
    data[10] ^= 1;
    fs::write(&src, &data).unwrap();
    let marker = remote.path().join("frozen");
    let hook = format!("hook:post-freeze=touch '{}'", marker.display());
    let err = sshd.backup_ok(&name, &sshd.source(&src), &["--quiesce", &hook]);
    assert!(marker.exists(), "{err}");
    assert!(err.contains("@127.0.0.1: "), "{err}");
    let meta = fs::read_to_string(local.path().join("db.3.meta.json")).unwrap();
    assert!(meta.contains("freeze_window_seconds"), "{meta}");

    let out = local.path().join("restored");
    assert!(
        restore_generation(&name, 1, &out) == v1,
        "generation 1 differs"
    );
    assert!(
        restore_generation(&name, 3, &out) == data,
        "generation 3 differs"
    );
    assert_eq!(sshd.remote_files().len(), 1);
    assert!(sshd.running_agents().is_empty());
}

#[test]
fn a_legacy_gzip_chain_works_remotely_too() {
    let Some(sshd) = Sshd::start() else { return };
    let local = tempfile::tempdir().unwrap();
    let remote = tempfile::tempdir().unwrap();
    let src = remote.path().join("disk.img");
    let name = local.path().join("old");
    let mut data = noise(1 << 20, 3);
    fs::write(&src, &data).unwrap();
    sshd.backup_ok(&name, &sshd.source(&src), &["--format", "legacy", "-z"]);
    data[500_000] ^= 0xff;
    fs::write(&src, &data).unwrap();
    sshd.backup_ok(&name, &sshd.source(&src), &[]);
    assert!(local.path().join("old.2.gz").exists());
    assert!(local.path().join("old.2.md5").exists());
    let out = local.path().join("restored");
    assert!(restore_generation(&name, 2, &out) == data);
}

/// An encrypted chain from a remote host, over real ssh: the agent hashes
/// with the derived block-hash key, the backup host seals; the key file
/// stays here, and nothing on the remote side holds it.
#[test]
fn an_encrypted_chain_from_a_remote_host() {
    let Some(sshd) = Sshd::start() else { return };
    let local = tempfile::tempdir().unwrap();
    let remote = tempfile::tempdir().unwrap();
    let key = local.path().join("chain.key");
    let o = Command::new(env!("CARGO_BIN_EXE_blockdiff-key"))
        .arg("new")
        .arg(&key)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let key_text = fs::read_to_string(&key).unwrap();
    let key_hex = key_text
        .lines()
        .last()
        .unwrap()
        .trim_start_matches("blockdiff-key-v1:")
        .to_owned();
    let src = remote.path().join("disk.img");
    let name = local.path().join("db");
    let mut data = noise(2 << 20, 9);
    fs::write(&src, &data).unwrap();
    let v1 = data.clone();
    let k = key.to_str().unwrap();
    sshd.backup_ok(&name, &sshd.source(&src), &["--encrypt", "--key-file", k]);
    data[1_000_000] ^= 0x5a;
    fs::write(&src, &data).unwrap();
    let err = sshd.backup_ok(&name, &sshd.source(&src), &["--encrypt", "--key-file", k]);
    assert!(err.contains("1 of 128 blocks changed"), "{err}");
    for f in ["db.1", "db.2", "db.2.digest", "db.2.meta.json"] {
        let bytes = fs::read(local.path().join(f)).unwrap();
        assert!(blockdiff_core::is_sealed(&bytes), "{f} is not sealed");
    }
    for (g, want) in [(1u64, &v1), (2, &data)] {
        let out = local.path().join(format!("out{g}"));
        let o = run(
            RESTORE,
            &[
                &"--key-file",
                &k,
                &"-g",
                &g.to_string(),
                &"--from",
                &name,
                &out,
            ],
        );
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(fs::read(&out).unwrap() == *want, "generation {g}");
    }
    // The key is nowhere on the remote side.
    for entry in walk(remote.path())
        .into_iter()
        .chain(walk(&sshd.remote_cache()))
    {
        let bytes = fs::read(&entry).unwrap_or_default();
        assert!(
            !bytes
                .windows(key_hex.len())
                .any(|w| w == key_hex.as_bytes()),
            "{} holds the key",
            entry.display()
        );
    }
    assert!(sshd.running_agents().is_empty());
}

/// Every regular file under `dir`.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        match e.file_type() {
            Ok(t) if t.is_dir() => out.extend(walk(&p)),
            Ok(t) if t.is_file() => out.push(p),
            _ => {}
        }
    }
    out
}

#[test]
fn a_path_with_spaces_and_command_substitution_is_read_as_is_and_runs_nothing() {
    let Some(sshd) = Sshd::start() else { return };
    let local = tempfile::tempdir().unwrap();
    let remote = tempfile::tempdir().unwrap();
    let (odd, pwned) = hostile_dir(remote.path());
    let src = odd.join("my disk $HOME.img");
    let data = noise(200_000, 9);
    fs::write(&src, &data).unwrap();
    let name = local.path().join("odd");
    sshd.backup_ok(&name, &sshd.source(&src), &[]);
    let out = local.path().join("restored");
    assert!(restore_generation(&name, 1, &out) == data);
    assert_nothing_ran(
        &pwned,
        &[&odd, remote.path(), local.path(), &sshd.remote_cache()],
    );
}

/// A directory in `parent` whose name holds spaces, quotes and command
/// substitutions that would create a file named by the second value.
fn hostile_dir(parent: &Path) -> (PathBuf, String) {
    let pwned = format!("pwned-{}", std::process::id());
    let odd = parent.join(format!("a dir $(touch {pwned}) `touch {pwned}`; 'q' \"x\""));
    fs::create_dir(&odd).unwrap();
    (odd, pwned)
}

/// No file `pwned` appeared in `dirs`, the home directory, or here:
/// nothing a path held was run.
fn assert_nothing_ran(pwned: &str, dirs: &[&Path]) {
    let home = PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| "/root".into()));
    for dir in dirs.iter().copied().chain([home.as_path(), Path::new(".")]) {
        assert!(!dir.join(pwned).exists(), "{pwned} in {}", dir.display());
    }
}

#[test]
fn a_remote_error_names_the_host_and_commits_nothing() {
    let Some(sshd) = Sshd::start() else { return };
    let local = tempfile::tempdir().unwrap();
    let name = local.path().join("db");
    let missing = local.path().join("no such disk.img");
    let o = sshd
        .backup(&name, &sshd.source(&missing), &[])
        .wait_with_output()
        .unwrap();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("on root@127.0.0.1") || err.contains(&format!("on {}@127.0.0.1", sshd.user)),
        "{err}"
    );
    assert!(err.contains("no such disk.img"), "{err}");
    assert!(!local.path().join("db.ver").exists());
    assert_eq!(listing(local.path()), ["db.lock"]);
}

#[test]
fn a_connection_killed_mid_transfer_commits_nothing_and_leaves_nothing_behind() {
    let Some(sshd) = Sshd::start() else { return };
    let local = tempfile::tempdir().unwrap();
    let remote = tempfile::tempdir().unwrap();
    let name = local.path().join("db");
    let src = remote.path().join("disk.img");
    let data = noise(2 << 20, 5);
    fs::write(&src, &data).unwrap();
    sshd.backup_ok(&name, &sshd.source(&src), &[]);
    let before = listing(local.path());
    let ver = fs::read(local.path().join("db.ver")).unwrap();

    // The second run reads a pipe that the test feeds: half the data, then
    // the connection is cut while the agent waits for the rest.
    let fifo = remote.path().join("feed");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    // Polite I/O applies where the volume is read: on the remote host.
    let run = sshd.backup(
        &name,
        &sshd.source(&fifo),
        &["--nice", "6", "--ionice", "idle", "--max-rate", "512M"],
    );
    let mut run = run;
    let mut feed = open_fifo_for_writing(&fifo, &mut run);
    feed.write_all(&data[..1 << 20]).unwrap();
    // The agent lowers its priorities once the pipe is open, before it
    // reads: wait for that, as observed in /proc (the remote host's polite
    // I/O applies where the volume is read). The agent then reads the first
    // MiB and waits on the pipe for the rest.
    let nice_of = |line: &str| {
        let pid = line
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_owned();
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        stat.rsplit(')')
            .next()
            .and_then(|rest| rest.split_whitespace().nth(16))
            .map(str::to_owned)
    };
    // The request carried --ionice too; the agent sets its niceness, then
    // its I/O class: both are waited for.
    let io_class_of = |line: &str| {
        let pid = line
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_owned();
        let out = Command::new("ionice").args(["-p", &pid]).output().unwrap();
        text(&out.stdout).trim().to_owned()
    };
    common::wait_for("the agent at niceness 6 and I/O class idle", || {
        sshd.running_agents().first().is_some_and(|line| {
            nice_of(line).as_deref() == Some("6") && io_class_of(line) == "idle"
        })
    });
    // Cut the connection: kill sshd's per-connection processes.
    let killed = Command::new("pkill")
        .args(["-KILL", "-P", &sshd.child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success(), "no connection to kill");
    let o = {
        let _ = feed.write_all(&data[1 << 20..]);
        drop(feed);
        run.wait_with_output().unwrap()
    };
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("nothing was committed"), "{err}");
    assert_eq!(listing(local.path()), before, "{err}");
    assert_eq!(fs::read(local.path().join("db.ver")).unwrap(), ver);

    // The agent of the cut run does not linger, and the next run works
    // and leaves nothing but the cached agent.
    common::wait_for("the cut run's agent to end", || {
        sshd.running_agents().is_empty()
    });
    fs::remove_file(&fifo).unwrap();
    sshd.backup_ok(&name, &sshd.source(&src), &[]);
    assert_eq!(
        fs::read_to_string(local.path().join("db.ver"))
            .unwrap()
            .trim(),
        "2"
    );
    assert_eq!(
        sshd.remote_files(),
        [format!("blockdiff-agent-{}", agent_sha256())]
    );
    assert!(sshd.running_agents().is_empty());
    let out = local.path().join("restored");
    assert!(restore_generation(&name, 2, &out) == data);
}

#[test]
fn a_remote_backup_shows_its_progress_bar_on_a_terminal() {
    let Some(sshd) = Sshd::start() else { return };
    let local = tempfile::tempdir().unwrap();
    let remote = tempfile::tempdir().unwrap();
    let src = remote.path().join("big.img");
    fs::write(&src, noise(24 << 20, 11)).unwrap();
    let args = sshd.backup_args(&local.path().join("db"), &sshd.source(&src), &[]);
    let quoted: Vec<String> = args.iter().map(|a| format!("'{a}'")).collect();
    let Some(o) = backup_on_a_pty(100, &quoted.join(" ")) else {
        eprintln!("skipped: no `script` (util-linux) here");
        return;
    };
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{out}");
    // The bar counts the bytes the agent read on the remote host.
    assert!(out.contains("/24.00 MiB") && out.contains("ETA"), "{out:?}");
    assert!(out.contains("backup completed successfully"), "{out:?}");
}

#[test]
fn a_list_of_sources_backs_up_each_chain_jobs_at_a_time_and_names_the_failure() {
    let Some(sshd) = Sshd::start() else { return };
    let local = tempfile::tempdir().unwrap();
    let remote = tempfile::tempdir().unwrap();
    let store = local.path().join("hosts");
    let (web, db, here) = (
        remote.path().join("web.img"),
        remote.path().join("db.img"),
        local.path().join("here.img"),
    );
    fs::write(&web, noise(2 << 20, 1)).unwrap();
    fs::write(&db, noise(3 << 20, 2)).unwrap();
    fs::write(&here, noise(1 << 20, 3)).unwrap();
    let list = format!(
        "# the nightly hosts\nweb {}\n\ndb/main {}\ngone {}\nhere {}\n",
        sshd.source(&web),
        sshd.source(&db),
        sshd.source(&remote.path().join("no such disk")),
        here.display()
    );
    let mut child = Command::new(BACKUP)
        .args(sshd.backup_args(
            &store,
            "--sources=-",
            &["--jobs", "2", "--max-rate", "64M", "--json"],
        ))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(list.as_bytes())
        .unwrap();
    let o = child.wait_with_output().unwrap();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    let last = err.lines().last().unwrap();
    assert!(
        last.contains("could not back up 1 of 4 volumes: gone (") && last.contains("no such disk"),
        "{err}"
    );
    // Three jobs on the remote host, two at a time: each gets half its
    // budget; the local one has all of it.
    assert!(
        err.contains("@127.0.0.1: --max-rate shared by 2 jobs at a time, 33554432 bytes/s each"),
        "{err}"
    );
    assert!(!err.contains("this host: --max-rate shared"), "{err}");
    let json: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let runs = json.as_array().unwrap();
    let ok: Vec<(String, bool)> = runs
        .iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap().to_owned(),
                r["ok"].as_bool().unwrap(),
            )
        })
        .collect();
    let chain = |n: &str| store.join(n).display().to_string();
    assert_eq!(
        ok,
        [
            (chain("web"), true),
            (chain("db/main"), true),
            (chain("gone"), false),
            (chain("here"), true)
        ]
    );
    let out = local.path().join("restored");
    for (name, src) in [("web", &web), ("db/main", &db), ("here", &here)] {
        assert!(
            restore_generation(&store.join(name), 1, &out) == fs::read(src).unwrap(),
            "{name} restores wrongly"
        );
    }
    assert!(!store.join("gone.ver").exists());

    // A bad line stops the run before anything is backed up.
    let bad = local.path().join("bad.list");
    fs::write(
        &bad,
        format!("web {}\n../escape /etc/passwd\n", sshd.source(&web)),
    )
    .unwrap();
    let o = Command::new(BACKUP)
        .args(sshd.backup_args(&store, &format!("--sources={}", bad.display()), &[]))
        .output()
        .unwrap();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("bad.list, line 2: ../escape"), "{err}");
    assert_eq!(
        fs::read_to_string(store.join("web.ver")).unwrap().trim(),
        "1"
    );
}

/// 64 MiB on the "remote" host, 1% of its blocks damaged: the restore of
/// generation 2 makes it byte-identical, writes only the damaged blocks,
/// and sends about 1% of the file plus the digest over one connection; a
/// missing target is created (0600) and sent in full.
#[test]
fn a_remote_restore_sends_only_the_blocks_that_differ() {
    let Some(sshd) = Sshd::start() else { return };
    let local = tempfile::tempdir().unwrap();
    let remote = tempfile::tempdir().unwrap();
    let name = local.path().join("db");
    let src = remote.path().join("disk.img");
    let size = 64usize << 20;
    let bs = 16usize << 10;
    let one = noise(size, 21);
    let mut two = one.clone();
    two[5 * bs..9 * bs].fill(0x11);
    for image in [&one, &two] {
        fs::write(&src, image).unwrap();
        sshd.backup_ok(&name, &sshd.source(&src), &["-q"]);
    }
    let mut damaged = two.clone();
    let blocks = size / bs;
    let hit: Vec<usize> = (0..blocks / 100).map(|i| i * 97 % blocks).collect();
    for &b in &hit {
        damaged[b * bs + 100] ^= 0xff;
    }
    fs::write(&src, &damaged).unwrap();
    let connections = sshd.connections();
    let o = sshd
        .restore(&sshd.source(&src), &name, &["-g", "2", "--json"], "")
        .wait_with_output()
        .unwrap();
    assert!(o.status.success(), "{}\nsshd: {}", stderr(&o), sshd.log());
    assert!(
        fs::read(&src).unwrap() == two,
        "the target differs from generation 2"
    );
    assert_eq!(sshd.connections(), connections + 1, "one connection");
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["mode"], "delta");
    assert_eq!(j["generation"], 2);
    assert_eq!(j["bytes_written"], (hit.len() * bs) as u64);
    assert_eq!(j["verified"], true);
    let sent = j["bytes_sent"].as_u64().unwrap();
    // The damaged blocks (1%), the digest (32 bytes a block: 0.2%) and
    // the packets' headers.
    assert!(sent >= (hit.len() * bs) as u64, "{sent}");
    assert!(
        sent < (size as u64) * 15 / 1000,
        "{sent} bytes sent for {size}"
    );
    assert!(
        stderr(&o).contains("bytes sent over the connection"),
        "{}",
        stderr(&o)
    );

    // No target there: created 0600, every block sent.
    let fresh = remote.path().join("fresh.img");
    let o = sshd
        .restore(
            &sshd.source(&fresh),
            &name,
            &["-g", "1", "--json", "-q"],
            "",
        )
        .wait_with_output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(fs::read(&fresh).unwrap() == one);
    assert_eq!(
        fs::metadata(&fresh).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["created"], true);
    assert_eq!(j["bytes_written"], size as u64);
}

/// A target path with spaces, quotes and command substitutions is
/// written as is and runs nothing there.
#[test]
fn a_remote_restore_to_a_hostile_path_runs_nothing() {
    let Some(sshd) = Sshd::start() else { return };
    let local = tempfile::tempdir().unwrap();
    let remote = tempfile::tempdir().unwrap();
    let name = local.path().join("db");
    let src = remote.path().join("disk.img");
    let data = noise(300_000, 4);
    fs::write(&src, &data).unwrap();
    sshd.backup_ok(&name, &sshd.source(&src), &["-q"]);
    let (odd, pwned) = hostile_dir(remote.path());
    let target = odd.join("restored $HOME.img");
    let o = sshd
        .restore(&sshd.source(&target), &name, &[], "")
        .wait_with_output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(fs::read(&target).unwrap() == data);
    assert_nothing_ran(
        &pwned,
        &[&odd, remote.path(), local.path(), &sshd.remote_cache()],
    );
}

/// The connection cut once the agent has written its first blocks: the
/// error says the target is partly restored and what to do; the same
/// command then completes it.
#[test]
fn a_remote_restore_cut_halfway_says_so_and_a_rerun_completes_it() {
    let Some(sshd) = Sshd::start() else { return };
    let local = tempfile::tempdir().unwrap();
    let remote = tempfile::tempdir().unwrap();
    let name = local.path().join("db");
    let src = remote.path().join("disk.img");
    let data = noise(8 << 20, 8);
    fs::write(&src, &data).unwrap();
    sshd.backup_ok(&name, &sshd.source(&src), &["-q"]);
    // Two damaged stretches of 3 MiB: several packets of blocks.
    let mut damaged = data.clone();
    damaged[..3 << 20].fill(0);
    damaged[5 << 20..].fill(0);
    fs::write(&src, &damaged).unwrap();
    let fifo = remote.path().join("stop.fifo");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let env = format!(
        "BLOCKDIFF_TEST_STOP_AT=restore-agent:wrote-first={}",
        fifo.display()
    );
    let mut run = sshd.restore(&sshd.source(&src), &name, &[], &env);
    // The agent waits at the step, its first blocks written.
    let hold = open_fifo_for_writing(&fifo, &mut run);
    let killed = Command::new("pkill")
        .args(["-KILL", "-P", &sshd.child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success(), "no connection to kill");
    drop(hold);
    let o = run.wait_with_output().unwrap();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("partly restored"), "{err}");
    assert!(err.contains("run the same restore again"), "{err}");
    let partly = fs::read(&src).unwrap();
    assert!(
        partly != damaged && partly != data,
        "the cut restore wrote something, not all"
    );
    common::wait_for("the cut run's agent to end", || {
        sshd.running_agents().is_empty()
    });
    fs::remove_file(&fifo).unwrap();
    let o = sshd
        .restore(&sshd.source(&src), &name, &[], "")
        .wait_with_output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(fs::read(&src).unwrap() == data);
}
