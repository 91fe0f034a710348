//! Key files and passphrase files (FORMAT.md §10.6): private to their
//! owner, refused otherwise, as ssh refuses a private key others can read.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use zeroize::Zeroizing;

use super::keys::{ChainKey, hex};
use crate::error::{ArchiveError, Result};

const KEY_PREFIX: &str = "blockdiff-key-v1:";
/// No key or passphrase file is longer than this; checked before reading.
const MAX_SECRET_FILE: u64 = 4096;

fn key_err(path: &Path, detail: impl Into<String>) -> ArchiveError {
    ArchiveError::KeyFile {
        path: path.to_owned(),
        detail: detail.into(),
    }
}

/// Opens a secret file and checks that only its owner can read or write
/// it, and that it is a small regular file.
fn read_private(path: &Path, what: &str) -> Result<Zeroizing<Vec<u8>>> {
    let file = File::open(path).map_err(|e| key_err(path, format!("cannot open {what}: {e}")))?;
    let meta = file
        .metadata()
        .map_err(|e| key_err(path, format!("cannot stat {what}: {e}")))?;
    if !meta.is_file() {
        return Err(key_err(path, format!("{what} is not a regular file")));
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(key_err(
            path,
            format!(
                "{what} is accessible by group or others (mode {mode:04o}); anyone who can read it can read the backups: chmod 600 {}",
                path.display()
            ),
        ));
    }
    if meta.len() > MAX_SECRET_FILE {
        return Err(key_err(
            path,
            format!(
                "{what} is {} bytes, more than {MAX_SECRET_FILE}",
                meta.len()
            ),
        ));
    }
    let mut bytes = Zeroizing::new(Vec::new());
    file.take(MAX_SECRET_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| key_err(path, format!("cannot read {what}: {e}")))?;
    Ok(bytes)
}

/// Reads a key file written by [`write_key_file`] (`blockdiff-key new`).
/// Refuses a file that group or others can access.
pub fn read_key_file(path: &Path) -> Result<ChainKey> {
    let bytes = read_private(path, "the key file")?;
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| key_err(path, "not a blockdiff key file (not text)"))?;
    let mut found = None;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some(hex_key) = line.strip_prefix(KEY_PREFIX) else {
            return Err(key_err(
                path,
                format!(
                    "not a blockdiff key file (a line that is not `{KEY_PREFIX}<64 hex digits>`)"
                ),
            ));
        };
        if found.is_some() {
            return Err(key_err(path, "holds more than one key"));
        }
        found = Some(parse_key_hex(hex_key).ok_or_else(|| {
            key_err(
                path,
                "the key is not 64 hexadecimal digits (the file is damaged)",
            )
        })?);
    }
    found
        .map(ChainKey::from_bytes)
        .ok_or_else(|| key_err(path, "holds no key"))
}

/// A 256-bit key written as 64 hexadecimal digits (as key files hold
/// it); `None` for anything else.
pub fn parse_key_hex(text: &str) -> Option<[u8; 32]> {
    let b = text.as_bytes();
    if b.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in b.chunks_exact(2).enumerate() {
        let digit = |c: u8| (c as char).to_digit(16);
        out[i] = u8::try_from(digit(pair[0])? * 16 + digit(pair[1])?).ok()?;
    }
    Some(out)
}

/// Writes `key` to a new key file, mode 0600, and syncs it. Refuses to
/// replace anything at `path`, a symbolic link included: a key that
/// replaced another would make the other's backups unreadable.
pub fn write_key_file(path: &Path, key: &ChainKey) -> Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                key_err(path, "already exists; a key file is never overwritten")
            } else {
                key_err(path, format!("cannot create the key file: {e}"))
            }
        })?;
    let text = Zeroizing::new(format!(
        "# blockdiff chain key. Whoever holds this file can read every backup made with it;\n\
         # without it no one can. Keep a copy apart from the backups (on paper, or offline).\n\
         {KEY_PREFIX}{}\n",
        hex(key.as_bytes())
    ));
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| key_err(path, format!("cannot write the key file: {e}")))?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        && let Ok(d) = File::open(dir)
    {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Reads a passphrase from the first line of a file (without its line
/// ending). Refuses a file that group or others can access, and an empty
/// passphrase.
pub fn read_passphrase_file(path: &Path) -> Result<Zeroizing<Vec<u8>>> {
    let bytes = read_private(path, "the passphrase file")?;
    let line = bytes.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.is_empty() {
        return Err(key_err(path, "the passphrase is empty"));
    }
    Ok(Zeroizing::new(line.to_vec()))
}
