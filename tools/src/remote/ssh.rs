//! One multiplexed ssh connection per run.

use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// How to reach remote hosts: the ssh program and its `-o` options.
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

/// Quotes `word` for a POSIX shell: it reaches the command as one argument,
/// byte for byte, whatever it holds (spaces, quotes, `$(…)`, newlines).
pub fn shell_quote(word: &str) -> String {
    let mut quoted = String::with_capacity(word.len() + 2);
    quoted.push('\'');
    for c in word.chars() {
        if c == '\'' {
            quoted.push_str("'\\''");
        } else {
            quoted.push(c);
        }
    }
    quoted.push('\'');
    quoted
}

/// A command line for the remote login shell that runs `script` with
/// `/bin/sh`, its positional parameters `$1…` being `args`, each quoted.
/// Going through `/bin/sh` explicitly makes the script independent of the
/// remote user's login shell.
pub fn sh_command(script: &str, args: &[&str]) -> String {
    let mut line = format!("exec /bin/sh -c {} blockdiff", shell_quote(script));
    for a in args {
        line.push(' ');
        line.push_str(&shell_quote(a));
    }
    line
}

/// An ssh master connection to one host; every remote step runs over it
/// (`ControlMaster`), so a run authenticates once. Dropping it closes the
/// connection; the master also dies with this process (`PR_SET_PDEATHSIG`).
pub struct SshSession {
    destination: String,
    options: SshOptions,
    control: PathBuf,
    _dir: tempfile::TempDir,
    master: Child,
}

impl std::fmt::Debug for SshSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SshSession({})", self.destination)
    }
}

impl SshSession {
    /// Connects to `destination` (`[user@]host`) and waits until the
    /// master connection is up.
    pub fn connect(destination: &str, options: &SshOptions) -> anyhow::Result<Self> {
        if destination.is_empty() || destination.starts_with('-') {
            bail!("'{destination}' is not a host to connect to");
        }
        let dir = tempfile::Builder::new()
            .prefix("blockdiff-ssh-")
            .tempdir()
            .context("create a directory for the ssh control socket")?;
        let control = dir.path().join("control");
        let log = dir.path().join("master.log");
        let log_file = std::fs::File::create(&log).context("create the ssh log")?;
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
        let master = command
            .spawn()
            .with_context(|| format!("cannot run {}", options.program.display()))?;
        let mut session = SshSession {
            destination: destination.to_owned(),
            options: options.clone(),
            control,
            _dir: dir,
            master,
        };
        let deadline = Instant::now() + options.connect_timeout + Duration::from_secs(5);
        loop {
            if let Some(status) = session.master.try_wait()? {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                bail!(
                    "ssh to {destination} failed ({status}): {}",
                    one_line(&text, "no message")
                );
            }
            if session.control.exists() && session.check() {
                return Ok(session);
            }
            if Instant::now() > deadline {
                bail!(
                    "ssh to {destination}: no connection after {:?}",
                    options.connect_timeout
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The host, as given.
    pub fn destination(&self) -> &str {
        &self.destination
    }

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

    /// A command that runs `remote_line` (for the remote login shell) over
    /// the master connection.
    pub fn command(&self, remote_line: &str) -> Command {
        let mut command = self.base();
        command.arg("--").arg(&self.destination).arg(remote_line);
        command
    }

    /// Runs `script` with `/bin/sh` on the host, `args` as `$1…`, feeding
    /// `input` to its stdin; fails with its stderr unless it exits 0.
    pub fn run_script(
        &self,
        what: &str,
        script: &str,
        args: &[&str],
        input: Option<&Path>,
    ) -> anyhow::Result<Output> {
        let mut command = self.command(&sh_command(script, args));
        command.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = match input {
            None => command.stdin(Stdio::null()).spawn(),
            Some(_) => command.stdin(Stdio::piped()).spawn(),
        }
        .with_context(|| format!("cannot run {}", self.options.program.display()))?;
        let feeder = match (input, child.stdin.take()) {
            (Some(path), Some(mut stdin)) => {
                let path = path.to_owned();
                Some(std::thread::spawn(move || -> std::io::Result<()> {
                    let mut file = std::fs::File::open(&path)?;
                    std::io::copy(&mut file, &mut stdin)?;
                    stdin.flush()
                }))
            }
            _ => None,
        };
        let output = child.wait_with_output()?;
        if let Some(feeder) = feeder {
            let _ = feeder.join();
        }
        if !output.status.success() {
            bail!(
                "{what} on {} failed ({}): {}",
                self.destination,
                output.status,
                one_line(&String::from_utf8_lossy(&output.stderr), "no message")
            );
        }
        Ok(output)
    }
}

impl Drop for SshSession {
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

/// The last non-empty lines of `text` joined on one line.
pub(crate) fn one_line(text: &str, empty: &str) -> String {
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    if lines.is_empty() {
        return empty.to_owned();
    }
    lines[lines.len().saturating_sub(3)..].join("; ")
}

/// Reads all of `r` into a string, lossily.
pub(crate) fn read_lossy(mut r: impl Read) -> String {
    let mut bytes = Vec::new();
    let _ = r.read_to_end(&mut bytes);
    String::from_utf8_lossy(&bytes).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_words_reach_the_shell_unchanged() {
        let nasty = [
            "plain",
            "with space",
            "it's",
            "$(touch /tmp/pwned) `id` ${HOME}",
            "a\nnewline",
            "'",
            "",
            "\\ \" ; | & > <",
        ];
        for word in nasty {
            let line = sh_command("printf %s \"$1\"", &[word]);
            let out = Command::new("sh").arg("-c").arg(&line).output().unwrap();
            assert!(out.status.success(), "{line}");
            assert_eq!(String::from_utf8(out.stdout).unwrap(), word, "{line}");
        }
    }

    #[test]
    fn one_line_keeps_the_last_lines() {
        assert_eq!(one_line("\n a \n\nb\nc\nd\n", "-"), "b; c; d");
        assert_eq!(one_line("  \n", "nothing"), "nothing");
    }
}
