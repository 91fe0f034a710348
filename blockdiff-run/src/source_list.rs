//! `blockdiff-backup --sources FILE`: a list of `NAME SOURCE` lines, one
//! chain each, backed up in one run (`--jobs N` at a time).
//!
//! A line is `NAME SOURCE` or `NAME --lvm [HOST:]VG/LV`: NAME is its
//! first word, SOURCE the rest of the line without the blanks around it
//! (so a path may hold spaces), what the command line takes (a file or
//! device, `[USER@]HOST:PATH`). Blank lines and lines starting with `#`
//! are skipped. NAME is relative to the run's NAME directory; it may not
//! climb out of it (`..`), start at `/`, or appear twice.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use lvm_snap::LvPath;

use crate::remote::{RemoteSource, split_remote};
use crate::{BackupSource, RunError, SourceSpec};

/// The longest list read (lines are short: a million of them is a mistake,
/// not a backup plan).
const MAX_LIST_BYTES: usize = 16 << 20;

/// One line of a `--sources` list: a chain and what to back up into it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedSource {
    /// The chain's name, relative to the run's NAME directory.
    pub name: PathBuf,
    /// What to back up.
    pub source: BackupSource,
    /// Its line in the list (from 1), for messages.
    pub line: usize,
}

impl std::fmt::Display for ListedSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.name.display(), self.source)
    }
}

impl BackupSource {
    /// The host the source is read on (`None`: this one).
    pub fn host(&self) -> Option<&str> {
        match self {
            BackupSource::Local(_) => None,
            BackupSource::Remote(r) => Some(&r.destination),
        }
    }

    /// A source as the command line writes it: a file or device, `-` for
    /// standard input, or `[USER@]HOST:PATH` on another host.
    pub fn parse_path(text: &str) -> BackupSource {
        if text == "-" {
            return BackupSource::Local(SourceSpec::Stdin);
        }
        match split_remote(text) {
            Some((host, path)) => BackupSource::Remote(RemoteSource {
                destination: host.to_owned(),
                spec: SourceSpec::Path(path.into()),
            }),
            None => BackupSource::Local(SourceSpec::Path(text.into())),
        }
    }

    /// An LV read through a snapshot, as `--lvm` takes it: `VG/LV`,
    /// `/dev/VG/LV`, or `[USER@]HOST:VG/LV` on another host.
    pub fn parse_lvm(text: &str) -> Result<BackupSource, RunError> {
        let (host, lv) = match split_remote(text) {
            Some((host, lv)) => (Some(host), lv),
            None => (None, text),
        };
        let lv: LvPath = lv.parse().map_err(RunError::Lvm)?;
        let spec = SourceSpec::Lvm(lv);
        Ok(match host {
            Some(host) => BackupSource::Remote(RemoteSource {
                destination: host.to_owned(),
                spec,
            }),
            None => BackupSource::Local(spec),
        })
    }
}

/// Parses a `--sources` list (`origin` names it in errors: a path, or
/// "standard input"). Every line is checked before anything is backed up:
/// an error names the line and what is wrong with it.
pub fn parse_source_list(text: &str, origin: &str) -> Result<Vec<ListedSource>, RunError> {
    if text.len() > MAX_LIST_BYTES {
        return Err(RunError::InvalidOption(format!(
            "{origin}: a list of sources longer than {MAX_LIST_BYTES} bytes"
        )));
    }
    let mut listed = Vec::new();
    let mut seen: BTreeMap<PathBuf, usize> = BTreeMap::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let bad = |why: String| RunError::InvalidOption(format!("{origin}, line {line}: {why}"));
        let line_text = raw.trim();
        if line_text.is_empty() || line_text.starts_with('#') {
            continue;
        }
        let (name, rest) = line_text
            .split_once(char::is_whitespace)
            .map_or((line_text, ""), |(n, r)| (n, r.trim()));
        let lvm = rest
            .strip_prefix("--lvm")
            .filter(|r| r.is_empty() || r.starts_with(char::is_whitespace))
            .map(str::trim);
        let source = match (rest, lvm) {
            ("", _) => return Err(bad(format!("{name} without a source (NAME SOURCE)"))),
            (_, Some("")) => return Err(bad("--lvm without a volume".into())),
            (_, Some(lv)) => BackupSource::parse_lvm(lv).map_err(|e| bad(e.to_string()))?,
            (source, None) if source.starts_with('-') && source != "-" => {
                return Err(bad(format!(
                    "{source}: only --lvm may follow NAME (write NAME --lvm [HOST:]VG/LV)"
                )));
            }
            (source, None) => BackupSource::parse_path(source),
        };
        if source == BackupSource::Local(SourceSpec::Stdin) {
            return Err(bad("standard input cannot be one of several sources".into()));
        }
        let name = chain_name(name).map_err(bad)?;
        if let Some(first) = seen.insert(name.clone(), line) {
            return Err(bad(format!(
                "{} is already the chain of line {first}",
                name.display()
            )));
        }
        listed.push(ListedSource { name, source, line });
    }
    if listed.is_empty() {
        return Err(RunError::InvalidOption(format!(
            "{origin}: no sources listed (one NAME SOURCE per line)"
        )));
    }
    Ok(listed)
}

/// A listed chain name: relative, within the run's directory.
fn chain_name(text: &str) -> Result<PathBuf, String> {
    let path = Path::new(text);
    let plain = path
        .components()
        .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
    if !plain || path.components().all(|c| c == Component::CurDir) {
        return Err(format!(
            "{text}: a chain's NAME is a relative path inside the run's directory (no /, .., or s3://)"
        ));
    }
    if text.contains("://") {
        return Err(format!(
            "{text}: a chain's NAME is relative to the run's NAME"
        ));
    }
    Ok(path
        .components()
        .filter(|c| *c != Component::CurDir)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lv(text: &str) -> LvPath {
        text.parse().unwrap()
    }

    #[test]
    fn lines_name_chains_and_their_sources() {
        let text = "\
# nightly hosts
web1   root@web1:/dev/vg0/www
db/main --lvm root@db1:vg0/mysql

local  /srv/my data.img  
vm     --lvm vg0/domu-a
";
        let listed = parse_source_list(text, "hosts.list").unwrap();
        assert_eq!(
            listed,
            [
                ListedSource {
                    name: "web1".into(),
                    source: BackupSource::Remote(RemoteSource {
                        destination: "root@web1".into(),
                        spec: SourceSpec::Path("/dev/vg0/www".into()),
                    }),
                    line: 2,
                },
                ListedSource {
                    name: "db/main".into(),
                    source: BackupSource::Remote(RemoteSource {
                        destination: "root@db1".into(),
                        spec: SourceSpec::Lvm(lv("vg0/mysql")),
                    }),
                    line: 3,
                },
                ListedSource {
                    name: "local".into(),
                    source: BackupSource::Local(SourceSpec::Path("/srv/my data.img".into())),
                    line: 5,
                },
                ListedSource {
                    name: "vm".into(),
                    source: BackupSource::Local(SourceSpec::Lvm(lv("vg0/domu-a"))),
                    line: 6,
                },
            ]
        );
        assert_eq!(listed[0].source.host(), Some("root@web1"));
        assert_eq!(listed[2].source.host(), None);
    }

    #[test]
    fn a_bad_line_is_named_and_nothing_is_accepted() {
        let cases = [
            ("a /x\nb\n", "hosts.list, line 2: b without a source"),
            ("a --lvm\n", "hosts.list, line 1: --lvm without a volume"),
            (
                "a --lv vg/x\n",
                "hosts.list, line 1: --lv vg/x: only --lvm may follow",
            ),
            ("a --lvm a b\n", "hosts.list, line 1: "),
            ("a --lvm\tnovg\n", "hosts.list, line 1: "),
            (
                "a -x\n",
                "hosts.list, line 1: -x: only --lvm may follow NAME",
            ),
            ("a -\n", "hosts.list, line 1: standard input cannot be"),
            (
                "../etc /x\n",
                "hosts.list, line 1: ../etc: a chain's NAME is a relative",
            ),
            (
                "/abs /x\n",
                "hosts.list, line 1: /abs: a chain's NAME is a relative",
            ),
            (
                ". /x\n",
                "hosts.list, line 1: .: a chain's NAME is a relative",
            ),
            ("a/../b /x\n", "hosts.list, line 1: a/../b: a chain's NAME"),
            (
                "s3://b/x /x\n",
                "hosts.list, line 1: s3://b/x: a chain's NAME",
            ),
            (
                "a /x\n./a /y\n",
                "hosts.list, line 2: a is already the chain of line 1",
            ),
            ("# nothing\n\n", "hosts.list: no sources listed"),
        ];
        for (text, want) in cases {
            let got = parse_source_list(text, "hosts.list")
                .unwrap_err()
                .to_string();
            assert!(
                got.starts_with(want),
                "{text:?}: {got:?} does not start with {want:?}"
            );
        }
    }

    #[test]
    fn a_list_too_long_is_refused_before_it_is_parsed() {
        let text = "a /x\n".repeat(MAX_LIST_BYTES / 5 + 1);
        let got = parse_source_list(&text, "-").unwrap_err().to_string();
        assert!(got.contains("longer than"), "{got}");
    }
}
