//! The schedules in contrib/ work as written: the systemd units pass
//! `systemd-analyze verify`, and the exact commands of the unit and of the
//! cron line, with only their paths moved to a temporary directory, back up
//! into this month's chain and prune the old ones.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use blockdiff_core::{ChainPeriod, GenerationStore};

use common::{BACKUP, PRUNE, text};

fn contrib(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../contrib")
        .join(path)
}

fn read(path: &str) -> String {
    fs::read_to_string(contrib(path)).unwrap()
}

/// Where the tests' binaries are, standing in for /usr/local/bin.
fn bin_dir() -> PathBuf {
    let dir = Path::new(BACKUP).parent().unwrap().to_owned();
    assert_eq!(Path::new(PRUNE).parent().unwrap(), dir);
    dir
}

/// A backup setting in a temporary directory: contrib/default/blockdiff
/// with /var/backup and /srv/mysql.img moved into it, old chains
/// `db-202001` to `db-202003`, and a source file.
struct Setting {
    dir: tempfile::TempDir,
    env_file: PathBuf,
}

impl Setting {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_str().unwrap();
        let defaults = read("default/blockdiff");
        assert!(defaults.contains("BLOCKDIFF_NAME=\"/var/backup/db\""));
        assert!(defaults.contains("BLOCKDIFF_SOURCE=\"/srv/mysql.img\""));
        let env = defaults
            .replace("/var/backup/", &format!("{root}/"))
            .replace("/srv/mysql.img", &format!("{root}/disk.img"));
        let env_file = dir.path().join("default-blockdiff");
        fs::write(&env_file, env).unwrap();
        fs::write(dir.path().join("disk.img"), vec![7u8; 50_000]).unwrap();
        for key in ["202001", "202002", "202003"] {
            let o = Command::new(BACKUP)
                .arg(dir.path().join(format!("db-{key}")))
                .arg(dir.path().join("disk.img"))
                .arg("--quiet")
                .output()
                .unwrap();
            assert!(o.status.success(), "{}", text(&o.stderr));
        }
        Setting { dir, env_file }
    }

    /// After one nightly run (BLOCKDIFF_KEEP is 3): this month's chain has
    /// a generation, the oldest chain is gone.
    fn check_one_run(&self) {
        let base = self.dir.path().join("db");
        let chain = ChainPeriod::Monthly.chain_name(&base, blockdiff_run::local_today().unwrap());
        assert_eq!(
            GenerationStore::new(&chain).current_generation().unwrap(),
            Some(1),
            "{}",
            chain.display()
        );
        let mut vers: Vec<String> = fs::read_dir(self.dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|f| f.ends_with(".ver"))
            .collect();
        vers.sort();
        let current = format!("{}.ver", chain.file_name().unwrap().to_str().unwrap());
        assert_eq!(vers, ["db-202002.ver", "db-202003.ver", current.as_str()]);
        assert!(!self.dir.path().join("db-202001.1").exists());
    }
}

/// `KEY="value"` lines of an environment file, quotes removed (as both
/// systemd's EnvironmentFile= and sh read them).
fn parse_env(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (k, v) = l
                .split_once('=')
                .unwrap_or_else(|| panic!("not KEY=value: {l}"));
            assert!(
                k.bytes().all(|b| b.is_ascii_uppercase() || b == b'_'),
                "{l}"
            );
            let v = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(v);
            (k.to_owned(), v.to_owned())
        })
        .collect()
}

/// `KEY=value` settings of a unit file's section.
fn unit_section(text: &str, section: &str) -> Vec<(String, String)> {
    let mut current = String::new();
    let mut out = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            current = name.to_owned();
        } else if current == section {
            let (k, v) = line.split_once('=').unwrap();
            out.push((k.to_owned(), v.to_owned()));
        }
    }
    out
}

/// A unit's command line as systemd expands it: words split on spaces,
/// `${X}` one word, `$X` split into words.
fn expand_exec(line: &str, env: &BTreeMap<String, String>) -> Vec<String> {
    let mut words = Vec::new();
    for word in line.split_whitespace() {
        assert!(
            !word.contains(['"', '\'', '\\', ';']),
            "unexpected quoting: {line}"
        );
        if let Some(name) = word.strip_prefix("${").and_then(|w| w.strip_suffix('}')) {
            words.push(env[name].clone());
        } else if let Some(name) = word.strip_prefix('$') {
            words.extend(env[name].split_whitespace().map(String::from));
        } else {
            assert!(!word.contains('$'), "{word}");
            words.push(word.to_owned());
        }
    }
    words
}

fn run_words(words: &[String]) -> Output {
    let program = words[0]
        .strip_prefix("/usr/local/bin/")
        .unwrap_or_else(|| panic!("not in /usr/local/bin: {}", words[0]));
    Command::new(bin_dir().join(program))
        .args(&words[1..])
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn systemd_unit_commands_work_as_written() {
    let unit = read("systemd/blockdiff-backup.service");
    let service = unit_section(&unit, "Service");
    let get = |key: &str| -> Vec<&str> {
        service
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    };
    assert_eq!(get("Type"), ["oneshot"]);
    // Priorities through the tool's flags, which lower them only once the
    // snapshot is taken: Nice=/IOSchedulingClass= would slow the freeze.
    assert!(get("IOSchedulingClass").is_empty() && get("Nice").is_empty());
    assert!(
        get("ExecStart")[0].contains("--nice 10 --ionice idle"),
        "{:?}",
        get("ExecStart")
    );
    assert_eq!(get("EnvironmentFile"), ["/etc/default/blockdiff"]);
    let start = get("ExecStart");
    let post = get("ExecStartPost");
    assert_eq!((start.len(), post.len()), (1, 1));
    assert!(start[0].contains("--chain monthly") && start[0].contains("--quiet"));
    assert!(post[0].contains("blockdiff-prune") && post[0].contains("--keep"));

    let setting = Setting::new();
    let env = parse_env(&fs::read_to_string(&setting.env_file).unwrap());
    for line in [start[0], post[0]] {
        let o = run_words(&expand_exec(line, &env));
        assert!(o.status.success(), "{line}: {}", text(&o.stderr));
        // --quiet: a journal line only when something is wrong.
        assert!(
            o.stdout.is_empty() && o.stderr.is_empty(),
            "{line}: {}{}",
            text(&o.stdout),
            text(&o.stderr)
        );
    }
    setting.check_one_run();

    let timer = read("systemd/blockdiff-backup.timer");
    let t = unit_section(&timer, "Timer");
    assert!(t.iter().any(|(k, _)| k == "OnCalendar"), "{timer}");
    assert!(unit_section(&timer, "Install").contains(&("WantedBy".into(), "timers.target".into())));
}

/// The one chain `db` after nightly runs on one day: the generations the
/// retention of contrib/default/blockdiff keeps (the last of the day), the
/// last one restoring to the disk.
fn check_forever(setting: &Setting, runs: u64) {
    let store = GenerationStore::new(setting.dir.path().join("db"));
    assert_eq!(store.current_generation().unwrap(), Some(runs));
    assert_eq!(
        blockdiff_core::chain_generations(&store, None).unwrap(),
        [runs]
    );
    let target = setting.dir.path().join("restored");
    blockdiff_core::RestorePlan::new(&store, &blockdiff_core::RestoreOptions::default())
        .unwrap()
        .execute(&target, &mut blockdiff_core::NoProgress)
        .unwrap();
    assert!(fs::read(&target).unwrap() == fs::read(setting.dir.path().join("disk.img")).unwrap());
}

/// Changes the disk of `setting` before night `night`.
fn change_disk(setting: &Setting, night: u64) {
    let path = setting.dir.path().join("disk.img");
    let mut disk = fs::read(&path).unwrap();
    let at = (night as usize * 9_000) % disk.len();
    disk[at] = night as u8;
    fs::write(&path, disk).unwrap();
}

#[test]
fn systemd_forever_unit_commands_work_as_written() {
    let unit = read("systemd/blockdiff-backup-forever.service");
    let service = unit_section(&unit, "Service");
    let get = |key: &str| -> Vec<&str> {
        service
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    };
    assert_eq!(get("Type"), ["oneshot"]);
    assert_eq!(get("EnvironmentFile"), ["/etc/default/blockdiff"]);
    let start = get("ExecStart");
    let post = get("ExecStartPost");
    assert_eq!((start.len(), post.len()), (1, 1));
    assert!(!start[0].contains("--chain") && start[0].contains("--nice 10 --ionice idle"));
    assert!(post[0].contains("blockdiff-prune") && post[0].contains("$BLOCKDIFF_RETENTION"));

    let setting = Setting::new();
    let env = parse_env(&fs::read_to_string(&setting.env_file).unwrap());
    assert!(env["BLOCKDIFF_RETENTION"].contains("--keep-daily"));
    for night in 1..=3 {
        change_disk(&setting, night);
        for line in [start[0], post[0]] {
            let o = run_words(&expand_exec(line, &env));
            assert!(o.status.success(), "{line}: {}", text(&o.stderr));
            assert!(
                o.stdout.is_empty() && o.stderr.is_empty(),
                "{line}: {}{}",
                text(&o.stdout),
                text(&o.stderr)
            );
        }
    }
    check_forever(&setting, 3);
    let timer = read("systemd/blockdiff-backup-forever.timer");
    assert!(
        unit_section(&timer, "Timer")
            .iter()
            .any(|(k, _)| k == "OnCalendar")
    );
}

#[test]
fn systemd_units_pass_systemd_analyze_verify() {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("skipped: systemd-analyze is not installed (Debian package systemd)");
        return;
    }
    // The units with their paths where this test has them: verify checks
    // that the commands are executable.
    let dir = tempfile::tempdir().unwrap();
    let env_file = dir.path().join("default-blockdiff");
    fs::copy(contrib("default/blockdiff"), &env_file).unwrap();
    let bin = format!("{}/", bin_dir().display());
    let mut units = Vec::new();
    for name in [
        "blockdiff-backup.service",
        "blockdiff-backup.timer",
        "blockdiff-backup-forever.service",
        "blockdiff-backup-forever.timer",
    ] {
        let text = read(&format!("systemd/{name}"))
            .replace("/usr/local/bin/", &bin)
            .replace("/etc/default/blockdiff", env_file.to_str().unwrap());
        let path = dir.path().join(name);
        fs::write(&path, text).unwrap();
        units.push(path);
    }
    let o = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .args(&units)
        .output()
        .unwrap();
    let err = text(&o.stderr);
    assert!(o.status.success(), "{err}");
    // Unknown keys and bad values are only warnings: none may name ours.
    let ours: Vec<&str> = err.lines().filter(|l| l.contains("blockdiff")).collect();
    assert!(ours.is_empty(), "{err}");
}

/// Checks one cron time field: `*`, numbers in range, lists, ranges, steps.
fn check_cron_field(field: &str, min: u32, max: u32) {
    for part in field.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => (r, Some(s)),
            None => (part, None),
        };
        if let Some(s) = step {
            assert!(s.parse::<u32>().unwrap() > 0, "{field}");
        }
        if range == "*" {
            continue;
        }
        let (a, b) = range.split_once('-').unwrap_or((range, range));
        let (a, b): (u32, u32) = (a.parse().unwrap(), b.parse().unwrap());
        assert!(min <= a && a <= b && b <= max, "{field} not in {min}-{max}");
    }
}

/// The variables and the job lines of contrib/cron/blockdiff; with
/// `commented`, the alternative job that the file shows commented out.
fn cron_jobs(commented: bool) -> (BTreeMap<String, String>, Vec<String>) {
    let cron = read("cron/blockdiff");
    let mut vars = BTreeMap::new();
    let mut jobs = Vec::new();
    for line in cron.lines().map(str::trim) {
        if line.is_empty() {
            continue;
        }
        if let Some(job) = line.strip_prefix('#') {
            if commented && job.starts_with(|c: char| c.is_ascii_digit()) {
                jobs.push(job.to_owned());
            }
            continue;
        }
        match line.split_once('=') {
            Some((k, v)) if !k.contains(char::is_whitespace) => {
                vars.insert(k.to_owned(), v.to_owned());
            }
            _ if !commented => jobs.push(line.to_owned()),
            _ => {}
        }
    }
    (vars, jobs)
}

/// Checks a job line's fields and runs its command as cron would, with
/// paths moved into `setting`.
fn run_cron_job(vars: &BTreeMap<String, String>, job: &str, setting: &Setting) -> String {
    let fields: Vec<&str> = job.splitn(7, char::is_whitespace).collect();
    assert_eq!(fields.len(), 7, "5 time fields, a user, a command: {job}");
    for (field, (min, max)) in fields[..5]
        .iter()
        .zip([(0, 59), (0, 23), (1, 31), (1, 12), (0, 7)])
    {
        check_cron_field(field, min, max);
    }
    assert_eq!(fields[5], "root");
    let command = fields[6];
    // cron turns % into a newline.
    assert!(!command.contains('%'), "{command}");
    assert!(command.contains("--quiet"));
    assert_eq!(vars.get("SHELL").map(String::as_str), Some("/bin/sh"));
    let bin = format!("{}/", bin_dir().display());
    let moved = command
        .replace("/etc/default/blockdiff", setting.env_file.to_str().unwrap())
        .replace("/usr/local/bin/", &bin);
    // As cron runs it: the file's SHELL and PATH, little else.
    let o = Command::new(&vars["SHELL"])
        .arg("-c")
        .arg(&moved)
        .env_clear()
        .env("PATH", &vars["PATH"])
        .env("HOME", setting.dir.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(o.status.success(), "{moved}: {}", text(&o.stderr));
    // Cron mails any output: a successful night has none.
    assert!(
        o.stdout.is_empty() && o.stderr.is_empty(),
        "{}{}",
        text(&o.stdout),
        text(&o.stderr)
    );
    command.to_owned()
}

#[test]
fn cron_line_works_as_written() {
    let (vars, jobs) = cron_jobs(false);
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    let setting = Setting::new();
    let command = run_cron_job(&vars, &jobs[0], &setting);
    assert!(command.contains("--chain monthly"));
    setting.check_one_run();
}

#[test]
fn cron_forever_line_works_as_written() {
    let (vars, jobs) = cron_jobs(true);
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    let setting = Setting::new();
    for night in 1..=3 {
        change_disk(&setting, night);
        let command = run_cron_job(&vars, &jobs[0], &setting);
        assert!(!command.contains("--chain") && command.contains("$BLOCKDIFF_RETENTION"));
    }
    check_forever(&setting, 3);
}
