//! The damaged-store sweep: small chains of three generations in each
//! format (v2; legacy; legacy with gzip), and for every file of the chain
//! (diffs, digests, `NAME.ver`) single-byte flips and truncations, each
//! applied to a fresh copy of the chain. After each damage, with the real
//! tools:
//!
//! - `blockdiff-restore -g K` of every generation the damage can reach: a
//!   restore that exits 0 wrote exactly generation K's source bytes;
//! - `blockdiff-restore --verify-only -g 3`: exit 0 only if generation 3
//!   truly restores correctly;
//! - `blockdiff-backup` of a new source, then `blockdiff-restore` of the
//!   generation it made: no file of a committed generation is altered or
//!   removed; a backup that exits 0 made a generation that restores to
//!   exactly the new source, unless a diff of the chain was damaged (a
//!   backup reads the digest, not the diffs), and then a restore that
//!   exits 0 still wrote exactly the new source. (A backup reads
//!   `NAME.ver` and the last digest: this step runs after every damage to
//!   those and to generation 3's files, and after every 4th damage to the
//!   older files.)
//!
//! Every tool exits 0 or 1: a panic or a signal is a failure too.
//!
//! Which damages: every truncation length and every byte flip of files up
//! to 96 bytes; in larger files, every position within the first 48 and
//! the last 64 bytes (headers, trailers, footers, index), every 7th
//! position in between, and every truncation length that is a multiple of
//! 16 or 4 more (entry boundaries of both digest formats). Set
//! `BLOCKDIFF_DAMAGE_FULL=1` to flip every byte and try every truncation
//! (minutes). The flip mask rotates through 0x01, 0x80, 0xFF and 0x10 by
//! position; files of up to 8 bytes (`NAME.ver`) get all four at every
//! position. Each file is also removed, alone. The chains use 16-byte blocks and a 100-byte source (six full
//! blocks and a short one), so that every file is a few hundred bytes.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::{BACKUP, RESTORE, noise, stderr};

/// The source of each generation, 1 to 4 (4 is the one the backup after
/// the damage writes).
fn sources() -> [Vec<u8>; 4] {
    let g1 = noise(100, 11);
    let mut g2 = g1.clone();
    g2[16..32].copy_from_slice(&noise(16, 22));
    g2[64..70].copy_from_slice(b"second");
    let mut g3 = g2.clone();
    g3[32..48].fill(0);
    g3[96..100].copy_from_slice(b"tail");
    let mut g4 = g3.clone();
    g4[0..16].copy_from_slice(&noise(16, 44));
    [g1, g2, g3, g4]
}

#[derive(Clone, Copy, Debug)]
enum Format {
    V2,
    Legacy,
    LegacyGzip,
}

impl Format {
    fn args(self) -> &'static [&'static str] {
        match self {
            Format::V2 => &["--format", "v2"],
            Format::Legacy => &["--format", "legacy"],
            Format::LegacyGzip => &["--format", "legacy", "--gzip"],
        }
    }
}

fn quiet(cmd: &mut Command) -> std::process::Output {
    cmd.stdin(Stdio::null()).output().unwrap()
}

fn backup(name: &Path, source: &Path, extra: &[&str]) -> std::process::Output {
    quiet(
        Command::new(BACKUP)
            .args(["-q", "--block-size", "16"])
            .args(extra)
            .arg(name)
            .arg(source),
    )
}

/// Makes the pristine chain `dir/n` (three generations) and returns the
/// chain's files: (file name, generation it belongs to, 0 for `n.ver`).
fn make_chain(dir: &Path, format: Format, sources: &[Vec<u8>; 4]) -> Vec<(String, u64)> {
    let name = dir.join("n");
    let src = dir.join("source");
    for (i, s) in sources[..3].iter().enumerate() {
        fs::write(&src, s).unwrap();
        let o = backup(&name, &src, format.args());
        assert!(o.status.success(), "backup {}: {}", i + 1, stderr(&o));
    }
    fs::remove_file(&src).unwrap();
    let mut files = Vec::new();
    for e in fs::read_dir(dir).unwrap() {
        let f = e.unwrap().file_name().into_string().unwrap();
        if f == "n.ver" {
            files.push((f, 0));
            continue;
        }
        // n.K, n.K.gz, n.K.md5, n.K.digest; not n.lock nor n.K.meta.json
        // (which no restore reads).
        let rest = f.strip_prefix("n.").unwrap_or("");
        let mut parts = rest.split('.');
        let Some(k) = parts.next().and_then(|k| k.parse::<u64>().ok()) else {
            continue;
        };
        if matches!(parts.next(), None | Some("gz" | "md5" | "digest")) {
            files.push((f, k));
        }
    }
    files.sort();
    let diffs = files
        .iter()
        .filter(|(f, k)| *k > 0 && !f.ends_with(".md5") && !f.ends_with(".digest"))
        .count();
    assert_eq!(files.len(), 7, "{files:?}");
    assert_eq!(diffs, 3, "{files:?}");
    files
}

#[derive(Clone, Copy, Debug)]
enum Damage {
    Flip { at: usize, mask: u8 },
    Truncate { len: usize },
    Remove,
}

impl std::fmt::Display for Damage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Damage::Flip { at, mask } => write!(f, "byte {at} xor {mask:#04x}"),
            Damage::Truncate { len } => write!(f, "truncated to {len} bytes"),
            Damage::Remove => f.write_str("removed"),
        }
    }
}

const MASKS: [u8; 4] = [0x01, 0x80, 0xFF, 0x10];

/// The damages tried on a file of `len` bytes (see the module's doc).
fn damages(len: usize, full: bool) -> Vec<Damage> {
    let sampled = |p: usize| full || len <= 96 || p < 48 || p + 64 >= len || p.is_multiple_of(7);
    // Files of a few bytes (NAME.ver) get every mask at every position.
    let masks = |at: usize| {
        if len <= 8 {
            MASKS.to_vec()
        } else {
            vec![MASKS[at % MASKS.len()]]
        }
    };
    let mut out: Vec<Damage> = (0..len)
        .filter(|&p| sampled(p))
        .flat_map(|at| {
            masks(at)
                .into_iter()
                .map(move |mask| Damage::Flip { at, mask })
        })
        .collect();
    out.push(Damage::Remove);
    out.extend(
        (0..len)
            .filter(|&l| sampled(l) || l.is_multiple_of(16) || l % 16 == 4)
            .map(|len| Damage::Truncate { len }),
    );
    out
}

fn copy_chain(from: &Path, to: &Path) {
    if to.exists() {
        fs::remove_dir_all(to).unwrap();
    }
    fs::create_dir(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

fn apply(path: &Path, damage: Damage) {
    let mut bytes = fs::read(path).unwrap();
    match damage {
        Damage::Flip { at, mask } => bytes[at] ^= mask,
        Damage::Truncate { len } => bytes.truncate(len),
        Damage::Remove => return fs::remove_file(path).unwrap(),
    }
    fs::write(path, bytes).unwrap();
}

/// Every file of `dir` but those a backup may rewrite, with its bytes.
fn committed_files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| {
            let n = e.file_name();
            n != "n.ver" && n != "n.lock" && n != "source" && n != "out"
        })
        .map(|e| {
            (
                e.file_name().into_string().unwrap(),
                fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    out.sort();
    out
}

/// How a tool ended: 0, 1, or a failure of its own (panic, signal).
fn status_ok(s: ExitStatus) -> Result<bool, String> {
    match s.code() {
        Some(0) => Ok(true),
        Some(1) => Ok(false),
        Some(c) => Err(format!("exit status {c}")),
        None => Err(format!("killed by a signal ({s:?})")),
    }
}

/// Restores generation `k` (or the last) of `dir/n` into `dir/out`;
/// `Ok(Some(bytes))` when it exited 0.
fn restore(dir: &Path, k: Option<u64>) -> Result<Option<Vec<u8>>, String> {
    let out = dir.join("out");
    let _ = fs::remove_file(&out);
    let mut cmd = Command::new(RESTORE);
    cmd.arg(&out).arg("--from").arg(dir.join("n")).arg("-q");
    if let Some(k) = k {
        cmd.args(["-g", &k.to_string()]);
    }
    let o = quiet(&mut cmd);
    let ok = status_ok(o.status).map_err(|e| format!("{e}: {}", stderr(&o)))?;
    Ok(ok.then(|| fs::read(&out).unwrap_or_default()))
}

/// Runs every check after one damage; returns the violations.
fn check(
    dir: &Path,
    sources: &[Vec<u8>; 4],
    file: &str,
    gen_of_file: u64,
    with_backup: bool,
) -> Vec<String> {
    let mut bad = Vec::new();
    let is_diff = gen_of_file > 0 && !file.ends_with(".md5") && !file.ends_with(".digest");

    // Restores of every generation the damage can reach (generation K
    // reads generations K..1, and every generation reads NAME.ver).
    let first = gen_of_file.max(1);
    let mut last_restores = false;
    for k in first..=3 {
        match restore(dir, Some(k)) {
            Err(e) => bad.push(format!("restore -g {k}: {e}")),
            Ok(Some(got)) if got != sources[k as usize - 1] => bad.push(format!(
                "restore -g {k} exited 0 but wrote {} bytes that differ from generation {k}'s source",
                got.len()
            )),
            Ok(Some(_)) => last_restores = k == 3,
            Ok(None) => {}
        }
    }

    // --verify-only of generation 3: it may vouch for it only if it
    // restores exactly (checked just above).
    let o = quiet(
        Command::new(RESTORE)
            .args(["--verify-only", "-q", "-g", "3", "--from"])
            .arg(dir.join("n")),
    );
    match status_ok(o.status) {
        Err(e) => bad.push(format!("verify-only: {e}: {}", stderr(&o))),
        Ok(true) if !last_restores => bad.push(
            "verify-only -g 3 exited 0 but generation 3 does not restore to its source".into(),
        ),
        Ok(_) => {}
    }
    if !with_backup {
        return bad;
    }

    // The next backup, then a restore of what it made.
    let before = committed_files(dir);
    let src = dir.join("source");
    fs::write(&src, &sources[3]).unwrap();
    let o = backup(&dir.join("n"), &src, &[]);
    let backed_up = match status_ok(o.status) {
        Err(e) => {
            bad.push(format!("backup: {e}: {}", stderr(&o)));
            false
        }
        Ok(ok) => ok,
    };
    let after = committed_files(dir);
    for (name, bytes) in &before {
        match after.iter().find(|(n, _)| n == name) {
            None => bad.push(format!("the backup removed {name}")),
            Some((_, now)) if now != bytes => bad.push(format!("the backup altered {name}")),
            Some(_) => {}
        }
    }
    if backed_up {
        match restore(dir, Some(4)) {
            Err(e) => bad.push(format!("restore -g 4 after the backup: {e}")),
            Ok(Some(got)) if got != sources[3] => bad.push(
                "the backup exited 0; restore -g 4 exited 0 with bytes that differ from its source"
                    .into(),
            ),
            Ok(Some(_)) => {}
            Ok(None) if !is_diff => bad.push(
                "the backup exited 0 but the generation it made does not restore (no diff was damaged)"
                    .into(),
            ),
            Ok(None) => {}
        }
    }
    bad
}

fn sweep(format: Format) {
    let full = std::env::var_os("BLOCKDIFF_DAMAGE_FULL").is_some_and(|v| v == "1");
    // tmpfs when there is one: the tools fsync every commit.
    let base = if Path::new("/dev/shm").is_dir() {
        tempfile::tempdir_in("/dev/shm").unwrap()
    } else {
        tempfile::tempdir().unwrap()
    };
    let sources = sources();
    let pristine = base.path().join("pristine");
    fs::create_dir(&pristine).unwrap();
    let files = make_chain(&pristine, format, &sources);

    let mut work: Vec<(String, u64, Damage)> = Vec::new();
    for (file, k) in &files {
        let len = fs::metadata(pristine.join(file)).unwrap().len() as usize;
        for d in damages(len, full) {
            work.push((file.clone(), *k, d));
        }
    }
    let next = AtomicUsize::new(0);
    let failures = Mutex::new(Vec::new());
    let workers = std::thread::available_parallelism()
        .map_or(2, std::num::NonZero::get)
        .clamp(2, 8);
    std::thread::scope(|s| {
        for w in 0..workers {
            let (work, next, failures, sources, pristine) =
                (&work, &next, &failures, &sources, &pristine);
            let scratch: PathBuf = base.path().join(format!("w{w}"));
            s.spawn(move || {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some((file, k, damage)) = work.get(i) else {
                        break;
                    };
                    copy_chain(pristine, &scratch);
                    apply(&scratch.join(file), *damage);
                    // A backup reads NAME.ver and the last generation's
                    // digest: after damage to those (and generation 3's
                    // diff) it always runs; after damage elsewhere, on
                    // every 4th damage.
                    let with_backup = full || *k == 0 || *k == 3 || i % 4 == 0;
                    for v in check(&scratch, sources, file, *k, with_backup) {
                        failures
                            .lock()
                            .unwrap()
                            .push(format!("{file}, {damage}: {v}"));
                    }
                }
            });
        }
    });
    let mut failures = failures.into_inner().unwrap();
    failures.sort();
    assert!(
        failures.is_empty(),
        "{format:?}: {} of {} damages broke the invariant:\n{}",
        failures.len(),
        work.len(),
        failures.join("\n")
    );
    eprintln!("{format:?}: {} damages, all handled", work.len());
}

#[test]
fn damaged_v2_chains_never_restore_wrong_bytes_nor_lose_a_generation() {
    sweep(Format::V2);
}

#[test]
fn damaged_legacy_chains_never_restore_wrong_bytes_nor_lose_a_generation() {
    sweep(Format::Legacy);
}

#[test]
fn damaged_gzip_legacy_chains_never_restore_wrong_bytes_nor_lose_a_generation() {
    sweep(Format::LegacyGzip);
}
