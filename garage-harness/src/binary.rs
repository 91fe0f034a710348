//! Where the Garage binary is.

use std::env;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::HarnessError;

/// The Garage version scripts/garage-setup.sh builds, which names its cache
/// directory.
pub const GARAGE_VERSION: &str = "2.5.0";

/// The Garage program.
#[derive(Debug, Clone, Copy)]
pub struct Garage;

impl Garage {
    /// The Garage binary to run, the first of:
    ///
    /// 1. `$BLOCKDIFF_GARAGE`, when set (an error if it is not a file: a
    ///    path given on purpose is not silently replaced by another);
    /// 2. `$GARAGE_HOME/bin/garage` when `GARAGE_HOME` is set, else
    ///    `${XDG_CACHE_HOME:-~/.cache}/blockdiff/garage-2.5.0/bin/garage`,
    ///    where scripts/garage-setup.sh builds it;
    /// 3. `garage` on `PATH`.
    ///
    /// # Errors
    ///
    /// [`HarnessError::BinaryNotFound`], naming every place looked at and
    /// saying to run scripts/garage-setup.sh.
    pub fn binary() -> Result<PathBuf, HarnessError> {
        Self::binary_from(|name| env::var_os(name))
    }

    fn binary_from(var: impl Fn(&str) -> Option<OsString>) -> Result<PathBuf, HarnessError> {
        let set = |name: &str| var(name).filter(|value| !value.is_empty());
        if let Some(explicit) = set("BLOCKDIFF_GARAGE") {
            let path = PathBuf::from(explicit);
            return if is_file(&path) {
                Ok(path)
            } else {
                Err(HarnessError::BinaryNotFound { tried: vec![path] })
            };
        }
        let mut tried = Vec::new();
        let home = set("GARAGE_HOME").map(PathBuf::from).or_else(|| {
            set("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .or_else(|| set("HOME").map(|home| Path::new(&home).join(".cache")))
                .map(|cache| {
                    cache
                        .join("blockdiff")
                        .join(format!("garage-{GARAGE_VERSION}"))
                })
        });
        if let Some(home) = home {
            let path = home.join("bin").join("garage");
            if is_file(&path) {
                return Ok(path);
            }
            tried.push(path);
        }
        if let Some(path_var) = var("PATH") {
            for dir in env::split_paths(&path_var) {
                let path = dir.join("garage");
                if is_file(&path) {
                    return Ok(path);
                }
            }
        }
        tried.push(PathBuf::from("garage on PATH"));
        Err(HarnessError::BinaryNotFound { tried })
    }
}

fn is_file(path: &Path) -> bool {
    path.metadata().is_ok_and(|meta| meta.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::fs;

    fn lookup(vars: &[(&str, &Path)]) -> Result<PathBuf, HarnessError> {
        let vars: HashMap<String, OsString> = vars
            .iter()
            .map(|(name, value)| ((*name).to_owned(), value.as_os_str().to_owned()))
            .collect();
        Garage::binary_from(|name| vars.get(name).cloned())
    }

    #[test]
    fn explicit_path_wins_and_must_exist() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("my-garage");
        fs::write(&bin, b"").unwrap();
        assert_eq!(lookup(&[("BLOCKDIFF_GARAGE", &bin)]).unwrap(), bin);

        let missing = dir.path().join("missing");
        let error = lookup(&[("BLOCKDIFF_GARAGE", &missing), ("PATH", dir.path())]).unwrap_err();
        let message = error.to_string();
        assert!(message.contains("missing"), "{message}");
        assert!(message.contains("scripts/garage-setup.sh"), "{message}");
    }

    #[test]
    fn cache_then_path() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("home");
        let cached = home.join(".cache/blockdiff/garage-2.5.0/bin/garage");
        let on_path = dir.path().join("bin");
        fs::create_dir_all(&on_path).unwrap();
        fs::write(on_path.join("garage"), b"").unwrap();

        assert_eq!(
            lookup(&[("HOME", &home), ("PATH", &on_path)]).unwrap(),
            on_path.join("garage")
        );
        fs::create_dir_all(cached.parent().unwrap()).unwrap();
        fs::write(&cached, b"").unwrap();
        assert_eq!(
            lookup(&[("HOME", &home), ("PATH", &on_path)]).unwrap(),
            cached
        );

        let garage_home = dir.path().join("gh");
        fs::create_dir_all(garage_home.join("bin")).unwrap();
        fs::write(garage_home.join("bin/garage"), b"").unwrap();
        assert_eq!(
            lookup(&[("HOME", &home), ("GARAGE_HOME", &garage_home)]).unwrap(),
            garage_home.join("bin/garage")
        );
    }

    #[test]
    fn nothing_found_names_the_setup_script() {
        let dir = tempfile::tempdir().unwrap();
        let error = lookup(&[("HOME", dir.path()), ("PATH", dir.path())]).unwrap_err();
        let message = error.to_string();
        assert!(
            message.contains(".cache/blockdiff/garage-2.5.0/bin/garage"),
            "{message}"
        );
        assert!(message.contains("garage on PATH"), "{message}");
        assert!(message.contains("run scripts/garage-setup.sh"), "{message}");
    }
}
