use std::path::{Path, PathBuf};

use crate::error::{IoContext, Result};

/// The mount table.
pub(crate) const PROC_MOUNTS: &str = "/proc/mounts";

/// One line of `/proc/mounts`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Mount {
    pub(crate) mount_point: PathBuf,
    pub(crate) fs_type: String,
}

/// Reads the mount table.
pub(crate) fn read_mounts() -> Result<Vec<Mount>> {
    let text = std::fs::read_to_string(PROC_MOUNTS).ctx(PROC_MOUNTS, "read")?;
    Ok(parse_mounts(&text))
}

/// Parses `/proc/mounts` text (octal escapes such as `\040` for a space
/// decoded).
pub(crate) fn parse_mounts(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let _device = fields.next()?;
            let mount_point = PathBuf::from(unescape(fields.next()?));
            let fs_type = fields.next()?.to_string();
            Some(Mount {
                mount_point,
                fs_type,
            })
        })
        .collect()
}

fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let value =
                (bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0');
            out.push(value);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether `path` is a mount point in `mounts`.
pub(crate) fn is_mount_point(mounts: &[Mount], path: &Path) -> bool {
    mounts.iter().any(|mount| mount.mount_point == path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_unescapes() {
        let mounts = parse_mounts(
            "cgroup2 /sys/fs/cgroup/unified cgroup2 rw 0 0\n/dev/loop0 /mnt/my\\040data ext4 rw 0 0\n",
        );
        assert_eq!(mounts[0].fs_type, "cgroup2");
        assert_eq!(mounts[1].mount_point, PathBuf::from("/mnt/my data"));
        assert!(is_mount_point(&mounts, Path::new("/mnt/my data")));
    }
}
