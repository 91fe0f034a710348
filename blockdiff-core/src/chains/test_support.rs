//! Helpers shared by the chains' tests: dates and fake chains on disk.

use std::fs::{self, File};
use std::path::Path;
use std::time::{Duration, SystemTime};

use crate::chains::CivilDate;
use crate::store::GenerationStore;

pub(super) fn date(y: i32, m: u32, d: u32) -> CivilDate {
    CivilDate::new(y, m, d).unwrap()
}

/// A chain `db-KEY` with generations 1..=n (v2 names, meta.json), its
/// `.ver` dated `age_days` ago.
pub(super) fn fake_chain(dir: &Path, key: &str, n: u64, age_days: u64) {
    let store = GenerationStore::new(dir.join(format!("db-{key}")));
    for g in 1..=n {
        fs::write(store.diff_path(g, crate::DiffFormat::default()), b"diff").unwrap();
        fs::write(store.digest_path(g, crate::DigestFormat::V2), b"digest").unwrap();
        fs::write(store.metadata_path(g), b"{}").unwrap();
    }
    fs::write(store.lock_path(), b"").unwrap();
    fs::write(store.ver_path(), format!("{n}\n")).unwrap();
    let when = SystemTime::now() - Duration::from_secs(age_days * 86_400 + 60);
    File::options()
        .write(true)
        .open(store.ver_path())
        .unwrap()
        .set_modified(when)
        .unwrap();
}

pub(super) const LOOK_ALIKES: [&str; 10] = [
    "db.ver",
    "db.1",
    "db-202611.notes",
    "db-backup.ver",
    "db-2026111.ver",
    "db-202613.ver",
    "db-prod-202611.ver",
    "db-202611-old.ver",
    "dbx-202611.ver",
    "other-202611.ver",
];
