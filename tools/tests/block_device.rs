//! Restore onto a real block device (a loop device): the source size is
//! respected and nothing is ever written past the device's end. Needs root
//! and loop devices, as CI has; set BLOCKDIFF_SKIP_LOOP=1 to skip where
//! there are none.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{BACKUP, RESTORE, run, stderr};

/// A loop device over a file, detached on drop.
struct Loop {
    dev: PathBuf,
    backing: PathBuf,
}

impl Loop {
    fn new(backing: &Path, size: usize, fill: u8) -> Loop {
        fs::write(backing, vec![fill; size]).unwrap();
        let out = Command::new("losetup")
            .args(["-f", "--show"])
            .arg(backing)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "losetup failed (root and loop devices are needed; BLOCKDIFF_SKIP_LOOP=1 skips): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let dev = PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
        Loop {
            dev,
            backing: backing.to_owned(),
        }
    }

    fn contents(&self) -> Vec<u8> {
        // Read through the device, as a user would.
        fs::read(&self.dev).unwrap()
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.dev).status();
        let _ = fs::remove_file(&self.backing);
    }
}

fn restore(name: &Path, target: &Path) -> Output {
    run(RESTORE, &[&target, &"--from", &name])
}

#[test]
fn restore_to_a_block_device_respects_its_end() {
    if std::env::var_os("BLOCKDIFF_SKIP_LOOP").is_some() {
        eprintln!("skipped: BLOCKDIFF_SKIP_LOOP is set");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let name = dir.path().join("vol");
    let src = dir.path().join("source");
    // 64 full blocks of 16 KiB and a short last block of 5000 bytes.
    let data: Vec<u8> = (0..(1 << 20) + 5000)
        .map(|i: usize| (i * 7 % 251) as u8)
        .collect();
    fs::write(&src, &data).unwrap();
    let o = Command::new(BACKUP).arg(&name).arg(&src).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));

    // Too small even for the first byte of the last block: refused before
    // anything is written.
    let small = Loop::new(&dir.path().join("small.img"), 1 << 20, 0xab);
    let o = restore(&name, &small.dev);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(
        e.contains(&format!("{}: device is 1048576 bytes", small.dev.display())),
        "{e}"
    );
    assert!(
        small.contents().iter().all(|&b| b == 0xab),
        "nothing may be written"
    );

    // Holds all but the tail of the last block: stops there, says so.
    let short = Loop::new(&dir.path().join("short.img"), (1 << 20) + 4096, 0xab);
    let o = restore(&name, &short.dev);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(
        e.contains(
            "device is 1052672 bytes, the source needs 1053576; nothing was written past its end"
        ),
        "{e}"
    );

    // Larger than the source: restored exactly, the rest untouched.
    let big = Loop::new(&dir.path().join("big.img"), (1 << 20) + 16384, 0xab);
    let o = restore(&name, &big.dev);
    assert!(o.status.success(), "{}", stderr(&o));
    let got = big.contents();
    assert_eq!(&got[..data.len()], &data[..]);
    assert!(
        got[data.len()..].iter().all(|&b| b == 0xab),
        "bytes past the source were written"
    );
}
