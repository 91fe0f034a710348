//! The LVM commands this crate needs, with their JSON reports parsed.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

use serde_json::Value;

use crate::{Error, Result};
use command_runner::{CommandError, CommandLine, CommandOutput, CommandRunner, LocalRunner};

/// A logical volume's name within its volume group: `vg/lv`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LvPath {
    /// The volume group.
    pub vg: String,
    /// The logical volume.
    pub lv: String,
}

impl LvPath {
    /// `vg/lv`, checking both names as LVM would.
    pub fn new(vg: &str, lv: &str) -> Result<Self> {
        for (kind, name) in [("volume group", vg), ("logical volume", lv)] {
            let ok = !name.is_empty()
                && name.len() <= 127
                && !name.starts_with('-')
                && name != "."
                && name != ".."
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"+_.-".contains(&b));
            if !ok {
                return Err(Error::Invalid(format!(
                    "'{name}' is not a valid {kind} name (letters, digits and + _ . - only)"
                )));
            }
        }
        Ok(LvPath {
            vg: vg.to_owned(),
            lv: lv.to_owned(),
        })
    }

    /// The device node, `/dev/vg/lv`.
    pub fn device(&self) -> PathBuf {
        PathBuf::from(format!("/dev/{}/{}", self.vg, self.lv))
    }
}

impl FromStr for LvPath {
    type Err = Error;

    /// Accepts `vg/lv` and `/dev/vg/lv`.
    fn from_str(s: &str) -> Result<Self> {
        let rest = s.strip_prefix("/dev/").unwrap_or(s);
        match rest.split_once('/') {
            Some((vg, lv)) if !lv.contains('/') => LvPath::new(vg, lv),
            _ => Err(Error::Invalid(format!(
                "'{s}' is not a logical volume: write VG/LV or /dev/VG/LV"
            ))),
        }
    }
}

impl fmt::Display for LvPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.vg, self.lv)
    }
}

/// What `lvs` says about one logical volume.
#[derive(Debug, Clone, PartialEq)]
pub struct LogicalVolume {
    /// Its name.
    pub path: LvPath,
    /// `lv_attr`, e.g. `owi-a-s---` (see lvs(8)).
    pub attr: String,
    /// Size in bytes.
    pub size: u64,
    /// The origin, for a snapshot.
    pub origin: Option<String>,
    /// The thin pool, for a thin volume.
    pub pool: Option<String>,
    /// `data_percent`: how full a snapshot or thin pool is.
    pub data_percent: Option<f64>,
    /// Its tags.
    pub tags: Vec<String>,
}

impl LogicalVolume {
    fn attr_char(&self, i: usize) -> char {
        self.attr.chars().nth(i).unwrap_or('-')
    }

    /// A snapshot (thick or thin).
    pub fn is_snapshot(&self) -> bool {
        self.origin.is_some() || matches!(self.attr_char(0), 's' | 'S')
    }

    /// A thin volume (in a thin pool).
    pub fn is_thin(&self) -> bool {
        self.attr_char(0) == 'V'
    }

    /// A thin pool.
    pub fn is_thin_pool(&self) -> bool {
        self.attr_char(0) == 't'
    }

    /// A thick snapshot that overflowed: LVM dropped it.
    pub fn is_invalid_snapshot(&self) -> bool {
        matches!(self.attr_char(4), 'I' | 'S')
    }

    /// Open: something (a mount, a reader) holds its device.
    pub fn is_open(&self) -> bool {
        self.attr_char(5) == 'o'
    }

    /// Active (its device node exists).
    pub fn is_active(&self) -> bool {
        self.attr_char(4) == 'a'
    }
}

/// What `vgs` says about one volume group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeGroup {
    /// Its name.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// Free bytes.
    pub free: u64,
    /// The extent size in bytes: every LV is a whole number of extents.
    pub extent_size: u64,
}

/// Runs LVM commands through a [`CommandRunner`]. Cheap to clone.
#[derive(Clone)]
pub struct Lvm {
    runner: Arc<dyn CommandRunner>,
}

impl fmt::Debug for Lvm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Lvm")
    }
}

impl Default for Lvm {
    fn default() -> Self {
        Lvm::local()
    }
}

const LV_FIELDS: &str = "lv_name,vg_name,lv_attr,lv_size,origin,pool_lv,data_percent,lv_tags";

impl Lvm {
    /// LVM on this host: commands run with `LC_ALL=C` (so that numbers
    /// and messages parse the same everywhere) and LVM's warnings about
    /// inherited file descriptors turned off.
    pub fn local() -> Self {
        Lvm::with_runner(Arc::new(
            LocalRunner::new()
                .with_env("LC_ALL", "C")
                .with_env("LVM_SUPPRESS_FD_WARNINGS", "1"),
        ))
    }

    /// LVM through `runner`.
    pub fn with_runner(runner: Arc<dyn CommandRunner>) -> Self {
        Lvm { runner }
    }

    /// The runner, for commands beside LVM's (`sync`, `losetup`, `mount`).
    pub fn runner(&self) -> &Arc<dyn CommandRunner> {
        &self.runner
    }

    /// Runs a command and fails unless it exits with 0.
    pub fn run(&self, invocation: &CommandLine) -> Result<CommandOutput> {
        let out = self.run_unchecked(invocation)?;
        if out.success() {
            Ok(out)
        } else {
            Err(command_failed(invocation, &out))
        }
    }

    /// Runs a command; a failing exit status is returned, not an error.
    pub fn run_unchecked(&self, invocation: &CommandLine) -> Result<CommandOutput> {
        self.runner
            .run(invocation)
            .map_err(|source| CommandError::spawn(invocation, source).into())
    }

    /// Flushes the page cache of every filesystem (`sync`), so that a
    /// snapshot taken next holds what has been written.
    pub fn sync(&self) -> Result<()> {
        self.run(&CommandLine::new("sync", [""; 0])).map(drop)
    }

    /// Runs an LVM report command (`lvs`, `vgs`) in JSON with sizes in
    /// bytes, returning the rows of `kind` (`lv`, `vg`). A missing volume or
    /// group is [`Error::NotFound`] naming `what`.
    fn report(
        &self,
        command: &str,
        fields: &str,
        target: Option<&str>,
        kind: &str,
        what: impl Fn() -> String,
    ) -> Result<(CommandLine, Vec<Value>)> {
        let mut args = vec![
            "--reportformat",
            "json",
            "--units",
            "b",
            "--nosuffix",
            "-o",
            fields,
        ];
        args.extend(target);
        let inv = CommandLine::new(command, args);
        let out = self.run_unchecked(&inv)?;
        if !out.success() {
            if target.is_some() && is_not_found(&out) {
                return Err(Error::NotFound { what: what() });
            }
            return Err(command_failed(&inv, &out));
        }
        let rows = report_rows(&inv, &out.stdout, kind)?;
        Ok((inv, rows))
    }

    /// Every logical volume, of one volume group or of all.
    pub fn list(&self, vg: Option<&str>) -> Result<Vec<LogicalVolume>> {
        let what = || format!("volume group {}", vg.unwrap_or_default());
        let (inv, rows) = self.report("lvs", LV_FIELDS, vg, "lv", what)?;
        rows.iter().map(|row| parse_lv(&inv, row)).collect()
    }

    /// One logical volume.
    pub fn lv(&self, path: &LvPath) -> Result<LogicalVolume> {
        let what = || format!("logical volume {path}");
        let target = path.to_string();
        let (inv, rows) = self.report("lvs", LV_FIELDS, Some(&target), "lv", what)?;
        match rows.as_slice() {
            [row] => parse_lv(&inv, row),
            [] => Err(Error::NotFound { what: what() }),
            _ => Err(Error::Parse {
                command: inv.to_string(),
                detail: format!("{} rows for one volume", rows.len()),
            }),
        }
    }

    /// A thin volume's (or thin snapshot's) device id in its pool
    /// (`lvs -o thin_id`): what `thin_delta` names it by.
    pub fn thin_id(&self, path: &LvPath) -> Result<u64> {
        let row = self.lv_fields(path, "thin_id")?;
        match row.text("thin_id")?.as_str() {
            "" => Err(row.bad(format!("{path} is not a thin volume (it has no thin_id)"))),
            _ => row.number("thin_id"),
        }
    }

    /// The report fields `fields` of one logical volume.
    pub(crate) fn lv_fields(&self, path: &LvPath, fields: &str) -> Result<ReportRow> {
        let what = || format!("logical volume {path}");
        let target = path.to_string();
        let (inv, rows) = self.report("lvs", fields, Some(&target), "lv", what)?;
        match <[Value; 1]>::try_from(rows) {
            Ok([row]) => Ok(ReportRow { inv, row }),
            Err(rows) => Err(Error::Parse {
                command: inv.to_string(),
                detail: format!("{} rows for one volume", rows.len()),
            }),
        }
    }

    /// One volume group.
    pub fn vg(&self, name: &str) -> Result<VolumeGroup> {
        let what = || format!("volume group {name}");
        let fields = "vg_name,vg_size,vg_free,vg_extent_size";
        let (inv, rows) = self.report("vgs", fields, Some(name), "vg", what)?;
        let [row] = rows.as_slice() else {
            return Err(Error::NotFound { what: what() });
        };
        let num = |key: &str| number_field(&inv, row, key);
        Ok(VolumeGroup {
            name: text_field(&inv, row, "vg_name")?,
            size: num("vg_size")?,
            free: num("vg_free")?,
            extent_size: num("vg_extent_size")?.max(1),
        })
    }

    /// Removes a logical volume (`lvremove -f`). A device that is briefly
    /// busy (udev probing a new node) is tried again a few times.
    pub fn remove(&self, path: &LvPath) -> Result<()> {
        let inv = CommandLine::new("lvremove", ["-f", "-y", &path.to_string()]);
        let mut attempt = 0;
        loop {
            let out = self.run_unchecked(&inv)?;
            if out.success() {
                return Ok(());
            }
            attempt += 1;
            let busy = out.stderr_line().contains("in use");
            if !busy || attempt >= 5 {
                return Err(command_failed(&inv, &out));
            }
            std::thread::sleep(std::time::Duration::from_millis(200 * attempt));
        }
    }
}

/// One row of an LVM report, with the command that printed it (for
/// errors).
pub(crate) struct ReportRow {
    inv: CommandLine,
    row: Value,
}

impl ReportRow {
    /// A field's text.
    pub(crate) fn text(&self, key: &str) -> Result<String> {
        text_field(&self.inv, &self.row, key)
    }

    /// A field that is a whole number (of bytes, with `--units b`).
    pub(crate) fn number(&self, key: &str) -> Result<u64> {
        number_field(&self.inv, &self.row, key)
    }

    /// A [`Error::Parse`] about this report.
    pub(crate) fn bad(&self, detail: String) -> Error {
        Error::Parse {
            command: self.inv.to_string(),
            detail,
        }
    }
}

pub(crate) fn command_failed(inv: &CommandLine, out: &CommandOutput) -> Error {
    CommandError::failed(inv, out).into()
}

fn is_not_found(out: &CommandOutput) -> bool {
    let err = out.stderr_line();
    err.contains("not found") || err.contains("Failed to find")
}

/// The rows of an LVM JSON report (`{"report": [{"lv": [...]}]}`).
fn report_rows(inv: &CommandLine, stdout: &[u8], kind: &str) -> Result<Vec<Value>> {
    let bad = |detail: String| Error::Parse {
        command: inv.to_string(),
        detail,
    };
    let json: Value = serde_json::from_slice(stdout).map_err(|e| bad(format!("not JSON: {e}")))?;
    let reports = json
        .get("report")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("no \"report\" array".into()))?;
    let mut rows = Vec::new();
    for report in reports {
        if let Some(list) = report.get(kind).and_then(Value::as_array) {
            rows.extend(list.iter().cloned());
        }
    }
    Ok(rows)
}

fn text_field(inv: &CommandLine, row: &Value, key: &str) -> Result<String> {
    row.get(key)
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| Error::Parse {
            command: inv.to_string(),
            detail: format!("no field {key}"),
        })
}

fn number_field(inv: &CommandLine, row: &Value, key: &str) -> Result<u64> {
    let text = text_field(inv, row, key)?;
    text.trim().parse().map_err(|_| Error::Parse {
        command: inv.to_string(),
        detail: format!("{key} is '{text}', not a number of bytes"),
    })
}

fn parse_lv(inv: &CommandLine, row: &Value) -> Result<LogicalVolume> {
    let opt = |key: &str| -> Result<Option<String>> {
        let v = text_field(inv, row, key)?;
        Ok(Some(v).filter(|v| !v.is_empty()))
    };
    let data_percent = match opt("data_percent")? {
        None => None,
        Some(p) => Some(p.trim().parse::<f64>().map_err(|_| Error::Parse {
            command: inv.to_string(),
            detail: format!("data_percent is '{p}', not a number"),
        })?),
    };
    let path = LvPath {
        vg: text_field(inv, row, "vg_name")?,
        lv: text_field(inv, row, "lv_name")?,
    };
    Ok(LogicalVolume {
        path,
        attr: text_field(inv, row, "lv_attr")?,
        size: number_field(inv, row, "lv_size")?,
        origin: opt("origin")?,
        pool: opt("pool_lv")?,
        data_percent,
        tags: opt("lv_tags")?
            .map(|t| t.split(',').map(str::to_owned).collect())
            .unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use command_runner::{CommandOutput, RecordingRunner};

    /// `lvs` output as LVM 2.03 prints it for a VG with an origin, a thick
    /// snapshot, a thin pool and a thin volume.
    pub(crate) const LVS: &str = r#"  {
      "report": [
          {
              "lv": [
                  {"lv_name":"data", "vg_name":"vg0", "lv_attr":"owi-aos---", "lv_size":"67108864", "origin":"", "pool_lv":"", "data_percent":"", "lv_tags":""},
                  {"lv_name":"data-blockdiff-77-1", "vg_name":"vg0", "lv_attr":"swi-I-s---", "lv_size":"8388608", "origin":"data", "pool_lv":"", "data_percent":"100.00", "lv_tags":"blockdiff,blockdiff-pid-77"},
                  {"lv_name":"pool", "vg_name":"vg0", "lv_attr":"twi-aotz--", "lv_size":"33554432", "origin":"", "pool_lv":"", "data_percent":"12.50", "lv_tags":""},
                  {"lv_name":"thin", "vg_name":"vg0", "lv_attr":"Vwi-a-tz--", "lv_size":"16777216", "origin":"", "pool_lv":"pool", "data_percent":"3.10", "lv_tags":""}
              ]
          }
      ]
  }
"#;

    #[test]
    fn lv_paths_parse_and_refuse_bad_names() {
        let p: LvPath = "/dev/vg0/data".parse().unwrap();
        assert_eq!((p.vg.as_str(), p.lv.as_str()), ("vg0", "data"));
        assert_eq!(p.device(), PathBuf::from("/dev/vg0/data"));
        assert_eq!("vg0/data".parse::<LvPath>().unwrap(), p);
        for bad in [
            "data",
            "vg0/",
            "/dev/vg0/a/b",
            "vg0/a b",
            "vg0/-x",
            "vg;rm/x",
        ] {
            let err = bad.parse::<LvPath>().unwrap_err().to_string();
            assert!(err.contains('\''), "{bad}: {err}");
        }
    }

    #[test]
    fn lvs_report_is_parsed() {
        let runner = Arc::new(RecordingRunner::strict());
        runner.on("lvs", |_| CommandOutput::ok(LVS));
        let lvm = Lvm::with_runner(runner.clone());
        let lvs = lvm.list(Some("vg0")).unwrap();
        assert_eq!(lvs.len(), 4);
        assert!(!lvs[0].is_snapshot() && lvs[0].is_active());
        assert_eq!(lvs[0].size, 64 << 20);
        let snap = &lvs[1];
        assert!(snap.is_snapshot() && snap.is_invalid_snapshot());
        assert_eq!(snap.origin.as_deref(), Some("data"));
        assert_eq!(snap.data_percent, Some(100.0));
        assert_eq!(snap.tags, ["blockdiff", "blockdiff-pid-77"]);
        assert!(lvs[2].is_thin_pool());
        assert!(lvs[3].is_thin() && !lvs[3].is_snapshot());
        assert_eq!(lvs[3].pool.as_deref(), Some("pool"));
        assert_eq!(
            runner.calls(),
            [
                "lvs --reportformat json --units b --nosuffix -o lv_name,vg_name,lv_attr,lv_size,origin,pool_lv,data_percent,lv_tags vg0"
            ]
        );
    }

    #[test]
    fn missing_volumes_and_failures_are_clear() {
        let runner = Arc::new(RecordingRunner::strict());
        runner.on("lvs", |_| {
            CommandOutput::failed(5, "  Failed to find logical volume \"vg0/nope\"\n")
        });
        runner.on("vgs", |_| {
            CommandOutput::failed(5, "  Volume group \"vgx\" not found\n")
        });
        runner.on("lvremove", |_| {
            CommandOutput::failed(5, "  Logical volume vg0/x contains a filesystem in use.\n")
        });
        let lvm = Lvm::with_runner(runner.clone());
        let err = lvm.lv(&"vg0/nope".parse().unwrap()).unwrap_err();
        assert_eq!(err.to_string(), "logical volume vg0/nope not found");
        assert_eq!(
            lvm.vg("vgx").unwrap_err().to_string(),
            "volume group vgx not found"
        );
        let err = lvm
            .remove(&"vg0/x".parse().unwrap())
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("`lvremove -f -y vg0/x` exited with status 5: Logical volume vg0/x contains a filesystem in use."),
            "{err}"
        );
        // A busy device is tried five times.
        assert_eq!(
            runner
                .calls()
                .iter()
                .filter(|c| c.starts_with("lvremove"))
                .count(),
            5
        );
    }

    #[test]
    fn garbage_output_is_a_parse_error() {
        let runner = Arc::new(RecordingRunner::strict());
        runner.on("lvs", |_| CommandOutput::ok("  WARNING: something\n"));
        let err = Lvm::with_runner(runner).list(None).unwrap_err().to_string();
        assert!(err.starts_with("cannot parse the output of `lvs"), "{err}");
    }
}
