//! [`AgentBinary`]: the dump helper copied to remote hosts, checked and
//! installed there by its SHA-256.

use std::io::Read;
use std::path::{Path, PathBuf};

use command_runner::{CommandLine, CommandRunner};
use sha2::{Digest, Sha256};

use crate::RunError;

/// The file name of the agent beside the tools.
pub const AGENT_NAME: &str = "blockdiff-agent";

/// The local agent executable that is copied to remote hosts: where it is,
/// its SHA-256 and whether it is statically linked.
#[derive(Debug, Clone)]
pub struct AgentBinary {
    path: PathBuf,
    sha256: String,
    is_static: bool,
}

impl AgentBinary {
    /// The agent at `explicit`, else at `$BLOCKDIFF_AGENT`, else
    /// `blockdiff-agent` beside the running executable. It must be an
    /// x86-64 Linux executable.
    pub fn locate(explicit: Option<&Path>) -> Result<Self, RunError> {
        let path = match (explicit, std::env::var_os("BLOCKDIFF_AGENT")) {
            (Some(p), _) => p.to_owned(),
            (None, Some(p)) if !p.is_empty() => PathBuf::from(p),
            _ => std::env::current_exe()
                .map_err(|source| RunError::Io {
                    op: "find the running executable",
                    path: "/proc/self/exe".into(),
                    source,
                })?
                .with_file_name(AGENT_NAME),
        };
        Self::load(&path)
    }

    /// Reads and checks the agent at `path`.
    pub fn load(path: &Path) -> Result<Self, RunError> {
        let bytes = std::fs::read(path).map_err(|source| RunError::AgentUnreadable {
            path: path.to_owned(),
            source,
        })?;
        let is_static =
            elf_is_static_x86_64(&bytes).map_err(|detail| RunError::AgentNotUsable {
                path: path.to_owned(),
                detail,
            })?;
        Ok(AgentBinary {
            path: path.to_owned(),
            sha256: hex(&Sha256::digest(&bytes)),
            is_static,
        })
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Its SHA-256, in hex.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// Whether it runs without a dynamic loader (and so on any x86-64
    /// Linux host, whatever its C library).
    pub fn is_static(&self) -> bool {
        self.is_static
    }

    /// Makes sure the agent is on the host, in the private directory
    /// `${XDG_CACHE_HOME:-$HOME/.cache}/blockdiff` (mode 0700) as
    /// `blockdiff-agent-SHA256`: reused when present with the right hash,
    /// else copied over the connection into a temporary file, checked and
    /// renamed into place. Uploads left by interrupted runs are removed.
    pub fn install(
        &self,
        host: &dyn CommandRunner,
        name: &str,
    ) -> Result<InstalledAgent, RunError> {
        let out = run_script(
            host,
            name,
            "preparing the agent directory",
            PREPARE,
            &[&self.sha256],
            None,
        )?;
        let text = String::from_utf8_lossy(&out);
        let mut words = text.split_whitespace();
        let (state, machine, remote_path) = (words.next(), words.next(), words.next());
        // `ready` or `missing`, the machine, the path: anything else is a
        // shell that printed something of its own (a banner, a profile).
        let (Some(state @ ("ready" | "missing")), Some(machine), Some(remote_path)) =
            (state, machine, remote_path)
        else {
            return Err(RunError::RemoteHost {
                host: name.to_owned(),
                detail: format!(
                    "unexpected answer from {name} while preparing the agent: {text:?}"
                ),
            });
        };
        if machine != "x86_64" {
            return Err(RunError::RemoteHost {
                host: name.to_owned(),
                detail: format!(
                    "{name} is a {machine} machine; the agent is built for x86_64 only"
                ),
            });
        }
        let uploaded = state == "missing";
        if uploaded {
            run_script(
                host,
                name,
                "copying the agent",
                UPLOAD,
                &[&self.sha256],
                Some(&self.path),
            )?;
        }
        Ok(InstalledAgent {
            path: remote_path.to_owned(),
            uploaded,
        })
    }
}

/// Runs `script` with `/bin/sh` on `host` (called `name`), `args` as
/// `$1…`, the file `input` (if any) on its stdin; returns its standard
/// output, or fails with its stderr unless it exits 0.
fn run_script(
    host: &dyn CommandRunner,
    name: &str,
    what: &'static str,
    script: &str,
    args: &[&str],
    input: Option<&Path>,
) -> Result<Vec<u8>, RunError> {
    let words = ["-c", script, "blockdiff"]
        .into_iter()
        .chain(args.iter().copied());
    let command = CommandLine::new("/bin/sh", words);
    let mut stdout = Vec::new();
    let mut collect = |out: &mut dyn Read| out.read_to_end(&mut stdout).map(drop);
    let out = match input {
        None => host.run_streaming(&command, None, &mut collect),
        Some(path) => {
            let mut file = std::fs::File::open(path).map_err(|source| RunError::Io {
                op: "cannot open",
                path: path.to_owned(),
                source,
            })?;
            host.run_streaming(&command, Some(&mut file), &mut collect)
        }
    }
    .map_err(|source| RunError::RemoteSpawn {
        what,
        host: name.to_owned(),
        source,
    })?;
    if !out.success() {
        return Err(RunError::RemoteStep {
            what,
            host: name.to_owned(),
            status: out.status_text(),
            stderr: match out.stderr_line() {
                s if s.is_empty() => "no message".to_owned(),
                s => s,
            },
        });
    }
    Ok(stdout)
}

/// The agent on a remote host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstalledAgent {
    /// Its absolute path there.
    pub path: String,
    /// Whether this run copied it (`false`: an earlier copy was reused).
    pub uploaded: bool,
}

/// Creates the private directory, removes leftovers of interrupted runs
/// (uploads, `run.PID` directories whose agent is gone) and agents unused
/// for 30 days, and says whether agent `$1` is there.
const PREPARE: &str = r#"set -eu
umask 077
dir="${XDG_CACHE_HOME:-$HOME/.cache}/blockdiff"
mkdir -p "$dir"
chmod 700 "$dir"
cd "$dir"
for f in .upload.* run.*; do
  [ -e "$f" ] || continue
  kill -0 "${f##*.}" 2>/dev/null || rm -rf -- "$f"
done
find . -maxdepth 1 -name 'blockdiff-agent-*' ! -name "blockdiff-agent-$1" -mtime +30 -exec rm -f {} + 2>/dev/null || true
agent="$dir/blockdiff-agent-$1"
if [ -f "$agent" ] && [ -x "$agent" ] && [ "$(sha256sum < "$agent")" = "$1  -" ]; then
  touch "$agent"
  echo "ready $(uname -m) $agent"
else
  echo "missing $(uname -m) $agent"
fi
"#;

/// Receives the agent on stdin into a temporary file, checks its SHA-256
/// against `$1` and renames it into place.
const UPLOAD: &str = r#"set -eu
umask 077
dir="${XDG_CACHE_HOME:-$HOME/.cache}/blockdiff"
tmp="$dir/.upload.$$"
trap 'rm -f -- "$tmp"' EXIT
cat > "$tmp"
sum=$(sha256sum < "$tmp")
if [ "$sum" != "$1  -" ]; then
  echo "the copied agent's SHA-256 is ${sum%% *}, not $1" >&2
  exit 3
fi
chmod 700 "$tmp"
mv -f -- "$tmp" "$dir/blockdiff-agent-$1"
"#;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether `elf` is a statically linked x86-64 executable (no `PT_INTERP`);
/// an error if it is not an x86-64 ELF executable at all.
fn elf_is_static_x86_64(elf: &[u8]) -> Result<bool, &'static str> {
    let u16_at = |o: usize| elf.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u32_at = |o: usize| {
        elf.get(o..o + 4)
            .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
    };
    let u64_at = |o: usize| {
        elf.get(o..o + 8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
    };
    if elf.get(..4) != Some(b"\x7fELF") || elf.get(4) != Some(&2) || elf.get(5) != Some(&1) {
        return Err("not a 64-bit little-endian ELF file");
    }
    if u16_at(0x12) != Some(62) {
        return Err("not an x86-64 executable");
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38))
    else {
        return Err("truncated ELF header");
    };
    for i in 0..u64::from(phnum) {
        let at = phoff
            .checked_add(i * u64::from(phentsize))
            .and_then(|o| usize::try_from(o).ok())
            .and_then(u32_at);
        match at {
            Some(3) => return Ok(false), // PT_INTERP: needs the dynamic loader
            Some(_) => {}
            None => return Err("truncated ELF program headers"),
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_test_binary_is_an_x86_64_elf_and_text_is_not() {
        let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        // Test binaries are dynamically linked unless built with crt-static.
        let linked_static = elf_is_static_x86_64(&me).unwrap();
        assert_eq!(linked_static, cfg!(target_feature = "crt-static"));
        let e = elf_is_static_x86_64(b"#!/bin/sh\necho hi\n").unwrap_err();
        assert!(e.contains("not a 64-bit"), "{e}");
        let e = elf_is_static_x86_64(&me[..0x30]).unwrap_err();
        assert!(e.contains("truncated"), "{e}");
    }

    #[test]
    fn the_agent_is_reused_by_hash_or_copied_and_checked() {
        use command_runner::{CommandOutput, RecordingRunner};

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("blockdiff-agent");
        std::fs::write(&path, b"not really an agent").unwrap();
        let agent = AgentBinary {
            path: path.clone(),
            sha256: hex(&Sha256::digest(b"not really an agent")),
            is_static: true,
        };
        let remote_path = format!("/root/.cache/blockdiff/blockdiff-agent-{}", agent.sha256);
        // Already there: nothing is copied.
        let host = RecordingRunner::strict();
        host.reply(
            "/bin/sh -c",
            CommandOutput::ok(format!("ready x86_64 {remote_path}\n")),
        );
        let installed = agent.install(&host, "db1").unwrap();
        assert_eq!(
            installed,
            InstalledAgent {
                path: remote_path.clone(),
                uploaded: false
            }
        );
        assert_eq!(host.calls().len(), 1);
        assert!(host.inputs().is_empty());
        // Missing: copied over the connection, its hash for the script to
        // check.
        let host = RecordingRunner::strict();
        host.reply(
            "/bin/sh -c",
            CommandOutput::ok(format!("missing x86_64 {remote_path}\n")),
        );
        host.reply("/bin/sh -c", CommandOutput::ok(""));
        let installed = agent.install(&host, "db1").unwrap();
        assert!(installed.uploaded);
        let calls = host.calls();
        assert_eq!(calls.len(), 2);
        assert!(
            calls.iter().all(|c| c.ends_with(&agent.sha256)),
            "{calls:?}"
        );
        assert_eq!(host.inputs(), [b"not really an agent".to_vec()]);
        // A copy that fails its check on the host fails the install,
        // naming the host and the step.
        let host = RecordingRunner::strict();
        host.reply(
            "/bin/sh -c",
            CommandOutput::ok(format!("missing x86_64 {remote_path}\n")),
        );
        host.reply(
            "/bin/sh -c",
            CommandOutput::failed(3, "the copied agent's SHA-256 is 00, not ff\n"),
        );
        let e = agent.install(&host, "db1").unwrap_err().to_string();
        assert!(
            e.starts_with(
                "copying the agent on db1 failed (exited with status 3): the copied agent's SHA-256"
            ),
            "{e}"
        );
        // Another machine, or an answer that makes no sense: refused.
        for (answer, expected) in [
            ("ready aarch64 /x\n", "db1 is a aarch64 machine"),
            ("Welcome to db1!\n", "unexpected answer from db1"),
        ] {
            let host = RecordingRunner::strict();
            host.reply("/bin/sh -c", CommandOutput::ok(answer));
            let e = agent.install(&host, "db1").unwrap_err().to_string();
            assert!(e.contains(expected), "{answer}: {e}");
        }
    }

    #[test]
    fn the_remote_scripts_are_valid_sh() {
        for script in [PREPARE, UPLOAD] {
            let ok = std::process::Command::new("sh")
                .args(["-n", "-c", script])
                .status()
                .unwrap();
            assert!(ok.success(), "{script}");
        }
    }
}
