//! Encrypted chains as a user runs them: `blockdiff-key new`, `--encrypt`
//! with a key file or a passphrase, every reader taking the same options,
//! and a wrong, missing or exposed key refused in one line, exit 1,
//! nothing written.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use blockdiff_core::ChainPeriod;
use common::{BACKUP, INFO, REPAIR, RESTORE, listing, noise, run, stderr};

const KEY: &str = env!("CARGO_BIN_EXE_blockdiff-key");

/// A run with the environment cleared of a passphrase, plus `env`.
fn run_env(bin: &str, args: &[&dyn AsRef<std::ffi::OsStr>], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(bin);
    c.args(args.iter().map(std::convert::AsRef::as_ref))
        .stdin(Stdio::null())
        .env_remove("BLOCKDIFF_PASSPHRASE");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

fn ok(o: &Output, what: &str) {
    assert!(o.status.success(), "{what}: {}", stderr(o));
}

/// A failure with exit status `code` and one line on stderr containing
/// `expect` (and, for a usage error, the pointer to --help).
fn fails(o: &Output, code: i32, expect: &str, what: &str) {
    let e = stderr(o);
    assert_eq!(o.status.code(), Some(code), "{what}: {e}");
    // A usage error adds a line pointing to --help.
    let lines = if code == 2 { 2 } else { 1 };
    assert_eq!(e.lines().count(), lines, "{what}: {e}");
    assert!(e.contains(expect), "{what}: {e}");
}

fn new_key(path: &Path) {
    ok(&run(KEY, &[&"new", &path]), "blockdiff-key new");
}

#[test]
fn a_key_file_chain_round_trips_through_every_tool() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("chain.key");
    new_key(&key);
    assert_eq!(
        fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // Never overwritten.
    let before = fs::read(&key).unwrap();
    fails(
        &run(KEY, &[&"new", &key]),
        1,
        "already exists",
        "second key",
    );
    assert_eq!(fs::read(&key).unwrap(), before);

    let name = dir.path().join("db");
    let src = dir.path().join("disk.img");
    let mut data = noise(300_000, 1);
    let mut versions = Vec::new();
    for g in 0..3 {
        if g > 0 {
            data[g * 50_000] ^= 0xff;
        }
        fs::write(&src, &data).unwrap();
        ok(
            &run(BACKUP, &[&"--encrypt", &"--key-file", &key, &name, &src]),
            "backup",
        );
        versions.push(data.clone());
    }
    for g in 1..=3u64 {
        let out = dir.path().join(format!("out{g}.img"));
        ok(
            &run(
                RESTORE,
                &[
                    &"--key-file",
                    &key,
                    &"-g",
                    &g.to_string(),
                    &"--from",
                    &name,
                    &out,
                ],
            ),
            "restore",
        );
        assert!(
            fs::read(&out).unwrap() == versions[g as usize - 1],
            "generation {g}"
        );
        ok(
            &run(
                RESTORE,
                &[
                    &"--key-file",
                    &key,
                    &"--verify-only",
                    &"-g",
                    &g.to_string(),
                    &"--from",
                    &name,
                ],
            ),
            "verify",
        );
    }
    // --verify-only --against compares through the keyed hashes.
    let o = run(
        RESTORE,
        &[
            &"--key-file",
            &key,
            &"--verify-only",
            &"--from",
            &name,
            &"--against",
            &src,
        ],
    );
    ok(&o, "against");
    let o = run(INFO, &[&"--key-file", &key, &name]);
    ok(&o, "info");
    assert!(
        common::text(&o.stdout).contains("blake3-keyed"),
        "{}",
        common::text(&o.stdout)
    );
    ok(
        &run(REPAIR, &[&"--key-file", &key, &"--dry-run", &name]),
        "repair",
    );
    // Every file of the chain is sealed.
    for f in listing(dir.path())
        .iter()
        .filter(|f| f.starts_with("db.") && *f != "db.ver" && *f != "db.lock")
    {
        let bytes = fs::read(dir.path().join(f)).unwrap();
        assert!(blockdiff_core::is_sealed(&bytes), "{f} is not sealed");
    }
}

#[test]
fn a_wrong_missing_or_exposed_key_is_one_line_exit_1_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (key, other) = (dir.path().join("a.key"), dir.path().join("b.key"));
    new_key(&key);
    new_key(&other);
    let name = dir.path().join("db");
    let src = dir.path().join("disk.img");
    fs::write(&src, noise(100_000, 2)).unwrap();
    ok(
        &run(BACKUP, &[&"--encrypt", &"--key-file", &key, &name, &src]),
        "backup",
    );
    let before = listing(dir.path());
    let out = dir.path().join("out.img");
    let name_text = name.display().to_string();

    let wrong = format!("wrong key for chain {name_text}");
    fails(
        &run(RESTORE, &[&"--key-file", &other, &"--from", &name, &out]),
        1,
        &wrong,
        "restore, wrong key",
    );
    fails(
        &run(BACKUP, &[&"--encrypt", &"--key-file", &other, &name, &src]),
        1,
        &wrong,
        "backup, wrong key",
    );
    fails(
        &run(INFO, &[&"--key-file", &other, &name]),
        1,
        &wrong,
        "info, wrong key",
    );
    fails(
        &run(RESTORE, &[&"--from", &name, &out]),
        1,
        "is encrypted: give its key",
        "restore, no key",
    );
    fails(
        &run(BACKUP, &[&name, &src]),
        1,
        "is encrypted: give its key",
        "backup, no key",
    );
    fails(
        &run_env(
            RESTORE,
            &[&"--from", &name, &out],
            &[("BLOCKDIFF_PASSPHRASE", "a guess")],
        ),
        1,
        "passphrase",
        "restore, a passphrase for a key-file chain",
    );
    // A key file the group can read is refused before anything is read.
    fs::set_permissions(&key, fs::Permissions::from_mode(0o640)).unwrap();
    fails(
        &run(RESTORE, &[&"--key-file", &key, &"--from", &name, &out]),
        1,
        "chmod 600",
        "exposed key",
    );
    fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).unwrap();
    assert!(!out.exists());
    assert_eq!(
        listing(dir.path()),
        before,
        "a refused run changed the store"
    );
}

#[test]
fn a_passphrase_chain_from_a_file_or_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let pass = dir.path().join("pass");
    fs::write(&pass, "correct horse battery staple\n").unwrap();
    fs::set_permissions(&pass, fs::Permissions::from_mode(0o600)).unwrap();
    let name = dir.path().join("db");
    let src = dir.path().join("disk.img");
    let data = noise(100_000, 3);
    fs::write(&src, &data).unwrap();
    ok(
        &run(
            BACKUP,
            &[&"--encrypt", &"--passphrase-file", &pass, &name, &src],
        ),
        "backup",
    );
    let env = [("BLOCKDIFF_PASSPHRASE", "correct horse battery staple")];
    ok(
        &run_env(BACKUP, &[&"--encrypt", &name, &src], &env),
        "backup from the environment",
    );
    let out = dir.path().join("out.img");
    ok(
        &run_env(RESTORE, &[&"--from", &name, &out], &env),
        "restore",
    );
    assert!(fs::read(&out).unwrap() == data);
    fs::remove_file(&out).unwrap();
    fails(
        &run_env(
            RESTORE,
            &[&"--from", &name, &out],
            &[("BLOCKDIFF_PASSPHRASE", "wrong horse")],
        ),
        1,
        "wrong key for chain",
        "wrong passphrase",
    );
    assert!(!out.exists());
}

#[test]
fn usage_mistakes_exit_2_and_plain_chains_stay_plain() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("k");
    new_key(&key);
    let name = dir.path().join("db");
    let src = dir.path().join("disk.img");
    fs::write(&src, noise(50_000, 4)).unwrap();
    // A key without --encrypt, --encrypt without a key, MD5, legacy.
    fails(
        &run(BACKUP, &[&"--key-file", &key, &name, &src]),
        2,
        "add --encrypt",
        "no --encrypt",
    );
    fails(
        &run_env(BACKUP, &[&"--encrypt", &name, &src], &[]),
        2,
        "--encrypt needs",
        "no key",
    );
    fails(
        &run(
            BACKUP,
            &[
                &"--encrypt",
                &"--key-file",
                &key,
                &"--hash",
                &"md5",
                &name,
                &src,
            ],
        ),
        2,
        "md5",
        "md5",
    );
    fails(
        &run(
            BACKUP,
            &[
                &"--encrypt",
                &"--key-file",
                &key,
                &"--format",
                &"legacy",
                &name,
                &src,
            ],
        ),
        2,
        "legacy",
        "legacy",
    );
    assert!(!dir.path().join("db.ver").exists());
    // $BLOCKDIFF_PASSPHRASE alone never encrypts a backup.
    ok(
        &run_env(BACKUP, &[&name, &src], &[("BLOCKDIFF_PASSPHRASE", "x")]),
        "plain backup",
    );
    assert!(!blockdiff_core::is_sealed(
        &fs::read(dir.path().join("db.1.digest")).unwrap()
    ));
    // A plain chain is not continued encrypted.
    let before = listing(dir.path());
    fails(
        &run(BACKUP, &[&"--encrypt", &"--key-file", &key, &name, &src]),
        1,
        "is not encrypted, but a key was given",
        "plain chain, key",
    );
    assert_eq!(listing(dir.path()), before);
}

/// `--chain monthly` with encryption: each period's chain is encrypted,
/// and restores with the key.
#[test]
fn chain_monthly_encrypted() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("k");
    new_key(&key);
    let base = dir.path().join("db");
    let src = dir.path().join("disk.img");
    let data = noise(80_000, 5);
    fs::write(&src, &data).unwrap();
    let before = ChainPeriod::Monthly.chain_name(&base, blockdiff_run::local_today().unwrap());
    for _ in 0..2 {
        ok(
            &run(
                BACKUP,
                &[
                    &"--encrypt",
                    &"--key-file",
                    &key,
                    &"--chain",
                    &"monthly",
                    &base,
                    &src,
                ],
            ),
            "backup --chain monthly",
        );
    }
    // The period may have changed between the runs (midnight at a month's
    // end): the chain is the one whose NAME.ver exists.
    let after = ChainPeriod::Monthly.chain_name(&base, blockdiff_run::local_today().unwrap());
    let ver = |c: &Path| Path::new(&format!("{}.ver", c.display())).exists();
    let chain = if ver(&after) { after } else { before };
    assert!(ver(&chain), "no chain of the period");
    let out = dir.path().join("out.img");
    ok(
        &run(RESTORE, &[&"--key-file", &key, &"--from", &chain, &out]),
        "restore",
    );
    assert!(fs::read(&out).unwrap() == data);
    assert!(blockdiff_core::is_sealed(
        &fs::read(format!("{}.1.digest", chain.display())).unwrap()
    ));
}
