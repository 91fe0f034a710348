//! Commands on a remote host, over one multiplexed ssh connection.

use std::fmt;
use std::io::{self, Read};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::runner::{StdoutConsumer, stream_process};
use crate::{CommandError, CommandLine, CommandOutput, CommandRunner};

/// How to reach remote hosts: the ssh client and its `-o` options.
#[derive(Debug, Clone)]
pub struct SshOptions {
    /// The ssh client (`ssh`).
    pub program: PathBuf,
    /// Options passed as `-o OPTION` (`Port=2222`, `IdentityFile=…`).
    pub options: Vec<String>,
    /// How long to wait for the connection.
    pub connect_timeout: Duration,
}

impl Default for SshOptions {
    fn default() -> Self {
        SshOptions {
            program: "ssh".into(),
            options: Vec::new(),
            connect_timeout: Duration::from_secs(60),
        }
    }
}

/// Runs commands on one remote host over an ssh master connection
/// (`ControlMaster`), so that a run authenticates once. Nothing needs to be
/// installed there but a POSIX shell: each command goes to the remote login
/// shell as `exec` and its words, quoted ([`CommandLine::shell_line`]).
///
/// Dropping it closes the connection; the master also dies with this
/// process (`PR_SET_PDEATHSIG`).
pub struct SshRunner {
    destination: String,
    options: SshOptions,
    control: PathBuf,
    _dir: tempfile::TempDir,
    master: Child,
}

impl fmt::Debug for SshRunner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SshRunner({})", self.destination)
    }
}

/// The last non-empty lines (three at most) of `text`, joined on one line.
fn last_lines(text: &str) -> String {
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    lines[lines.len().saturating_sub(3)..].join("; ")
}

impl SshRunner {
    /// Connects to `destination` (`[user@]host`) and waits until the
    /// master connection is up (at most the connect timeout, and 5 s).
    pub fn connect(destination: &str, options: &SshOptions) -> Result<Self, CommandError> {
        let failed = |detail: String| CommandError::Connect {
            destination: destination.to_owned(),
            detail,
        };
        if destination.is_empty() || destination.starts_with('-') {
            return Err(failed("not a host to connect to".into()));
        }
        let dir = tempfile::Builder::new()
            .prefix("blockdiff-ssh-")
            .tempdir()
            .map_err(|e| {
                failed(format!(
                    "cannot create a directory for the control socket: {e}"
                ))
            })?;
        let control = dir.path().join("control");
        let log = dir.path().join("master.log");
        let log_file = std::fs::File::create(&log)
            .map_err(|e| failed(format!("cannot create the ssh log: {e}")))?;
        let mut command = Command::new(&options.program);
        command
            .args(["-M", "-N", "-T", "-S"])
            .arg(&control)
            .args(["-o", "ControlPersist=no", "-o", "BatchMode=yes"])
            .arg("-o")
            .arg(format!(
                "ConnectTimeout={}",
                options.connect_timeout.as_secs().max(1)
            ))
            .args(options.options.iter().flat_map(|o| ["-o", o.as_str()]))
            .arg("--")
            .arg(destination)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file);
        // SAFETY: prctl(PR_SET_PDEATHSIG) is async-signal-safe and touches
        // only the child's own state.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        let master = command.spawn().map_err(|e| {
            CommandError::spawn(
                &CommandLine::new(options.program.to_string_lossy(), [destination]),
                e,
            )
        })?;
        let mut runner = SshRunner {
            destination: destination.to_owned(),
            options: options.clone(),
            control,
            _dir: dir,
            master,
        };
        let deadline = Instant::now() + options.connect_timeout + Duration::from_secs(5);
        loop {
            let ended = runner
                .master
                .try_wait()
                .map_err(|e| failed(format!("cannot wait for ssh: {e}")))?;
            if let Some(status) = ended {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                let said = match last_lines(&text) {
                    s if s.is_empty() => "no message".to_owned(),
                    s => s,
                };
                return Err(failed(format!("ssh failed ({status}): {said}")));
            }
            if runner.control.exists() && runner.check() {
                return Ok(runner);
            }
            if Instant::now() > deadline {
                return Err(failed(format!(
                    "no connection after {:?}",
                    options.connect_timeout
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The host, as given.
    pub fn destination(&self) -> &str {
        &self.destination
    }

    /// ssh over the master connection, with the options.
    fn base(&self) -> Command {
        let mut command = Command::new(&self.options.program);
        command
            .arg("-S")
            .arg(&self.control)
            .args(["-o", "ControlMaster=no", "-o", "BatchMode=yes", "-T"])
            .args(self.options.options.iter().flat_map(|o| ["-o", o.as_str()]));
        command
    }

    fn check(&self) -> bool {
        self.base()
            .args(["-O", "check", "--"])
            .arg(&self.destination)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// ssh running `command` on the host.
    fn remote(&self, command: &CommandLine) -> Command {
        let mut ssh = self.base();
        ssh.arg("--")
            .arg(&self.destination)
            .arg(format!("exec {}", command.shell_line()));
        ssh
    }
}

impl CommandRunner for SshRunner {
    /// Runs `command` on the host. An exit status of 255 is ssh's own
    /// failure (the connection) or the command's.
    fn run(&self, command: &CommandLine) -> io::Result<CommandOutput> {
        Ok(self.remote(command).stdin(Stdio::null()).output()?.into())
    }

    fn run_streaming(
        &self,
        command: &CommandLine,
        input: Option<&mut (dyn Read + Send)>,
        consume: StdoutConsumer<'_>,
    ) -> io::Result<CommandOutput> {
        stream_process(self.remote(command), input, consume)
    }
}

impl Drop for SshRunner {
    fn drop(&mut self) {
        let _ = self
            .base()
            .args(["-O", "exit", "--"])
            .arg(&self.destination)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = self.master.kill();
        let _ = self.master.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_lines_keeps_three() {
        assert_eq!(last_lines("\n a \n\nb\nc\nd\n"), "b; c; d");
        assert_eq!(last_lines("  \n"), "");
    }

    #[test]
    fn a_destination_that_looks_like_an_option_is_refused() {
        let e = SshRunner::connect("-oProxyCommand=x", &SshOptions::default()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "ssh to -oProxyCommand=x: not a host to connect to"
        );
    }

    #[test]
    fn a_master_that_exits_is_reported_with_its_message() {
        // A fake ssh client that fails as ssh does.
        let dir = tempfile::tempdir().unwrap();
        let fake = dir.path().join("ssh");
        std::fs::write(
            &fake,
            "#!/bin/sh\necho 'ssh: connect to host h port 22: Connection refused' >&2\nexit 255\n",
        )
        .unwrap();
        std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .unwrap();
        let options = SshOptions {
            program: fake,
            ..SshOptions::default()
        };
        let e = SshRunner::connect("h", &options).unwrap_err().to_string();
        assert!(
            e.starts_with("ssh to h: ssh failed (exit status: 255): ssh: connect to host h port 22: Connection refused"),
            "{e}"
        );
    }
}
