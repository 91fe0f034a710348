//! fsfreeze on a real ext4 file system on a loop device: a write blocks
//! while the file system is frozen and completes after the thaw. Needs
//! root, losetup, mkfs.ext4 and loop devices; skipped with a message
//! otherwise, or with BLOCKDIFF_SKIP_LOOP=1.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use quiesce::QuiesceStack;

struct LoopMount {
    device: String,
    mount_point: PathBuf,
}

impl Drop for LoopMount {
    fn drop(&mut self) {
        let _ = Command::new("fsfreeze")
            .arg("-u")
            .arg(&self.mount_point)
            .status();
        let _ = Command::new("umount").arg(&self.mount_point).status();
        let _ = Command::new("losetup").args(["-d", &self.device]).status();
    }
}

fn run(program: &str, args: &[&str]) -> Result<String, String> {
    let output = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("{program}: {e}"))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
    } else {
        Err(format!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

fn mount_ext4(image: &Path, mount_point: &Path) -> Result<LoopMount, String> {
    run("mkfs.ext4", &["-q", "-F", &image.display().to_string()])?;
    let device = run(
        "losetup",
        &["--find", "--show", &image.display().to_string()],
    )?;
    let mounted = LoopMount {
        device: device.clone(),
        mount_point: mount_point.to_path_buf(),
    };
    run("mount", &[&device, &mount_point.display().to_string()])?;
    Ok(mounted)
}

#[test]
fn a_write_blocks_while_the_file_system_is_frozen() {
    if std::env::var_os("BLOCKDIFF_SKIP_LOOP").is_some() {
        eprintln!("fsfreeze test skipped: BLOCKDIFF_SKIP_LOOP is set");
        return;
    }
    if !common::is_root()
        || common::find_program("losetup").is_none()
        || common::find_program("mkfs.ext4").is_none()
    {
        eprintln!("fsfreeze test skipped: needs root, losetup and mkfs.ext4");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("ext4.img");
    fs::File::create(&image).unwrap().set_len(32 << 20).unwrap();
    let mount_point = dir.path().join("mnt");
    fs::create_dir(&mount_point).unwrap();
    let mounted = match mount_ext4(&image, &mount_point) {
        Ok(mounted) => mounted,
        Err(error) => {
            eprintln!("fsfreeze test skipped: cannot mount an ext4 loop device: {error}");
            return;
        }
    };

    let (log, _lines) = common::collecting_logger();
    let mut stack = QuiesceStack::from_spec_strings(
        &[format!("fsfreeze:{}", mounted.mount_point.display())],
        log,
    )
    .unwrap();
    let written = Arc::new(AtomicBool::new(false));
    let mut writer = None;
    let frozen = stack
        .run_frozen(|_| {
            let done = Arc::clone(&written);
            let file = mounted.mount_point.join("written-while-frozen");
            writer = Some(thread::spawn(move || {
                fs::write(&file, b"data").unwrap();
                done.store(true, Ordering::SeqCst);
                Instant::now()
            }));
            thread::sleep(Duration::from_millis(500));
            (written.load(Ordering::SeqCst), Instant::now())
        })
        .unwrap();
    let (written_while_frozen, thawed_after) = frozen.value;
    assert!(
        !written_while_frozen,
        "the write completed on a frozen file system"
    );
    let finished = writer.unwrap().join().unwrap();
    assert!(finished >= thawed_after);
    assert_eq!(
        fs::read(mounted.mount_point.join("written-while-frozen")).unwrap(),
        b"data"
    );

    // Not a mount point: a clear error, nothing frozen.
    let mut stack = QuiesceStack::from_spec_strings(
        &[format!("fsfreeze:{}", dir.path().display())],
        quiesce::Logger::discard(),
    )
    .unwrap();
    let error = stack.run_frozen(|_| ()).unwrap_err();
    assert!(error.to_string().contains("not a mount point"), "{error}");
}
