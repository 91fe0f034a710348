//! `blockdiff-mount` and `blockdiff-umount` on this machine's real FUSE
//! (`/dev/fuse`, Debian's fuse3) and loop devices: a chain of ext4 images
//! made by mkfs.ext4 from directories the test writes, each generation
//! mounted with --fs and its files compared with what was written then;
//! the image file against a full restore; a damaged frame; partitions;
//! kill -9 of the server; what is refused.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{BACKUP, RESTORE, noise, run, stderr, text};

const MOUNT: &str = env!("CARGO_BIN_EXE_blockdiff-mount");
const UMOUNT: &str = env!("CARGO_BIN_EXE_blockdiff-umount");

/// A test's directories: the store, the state directory, mount points.
struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    fn new() -> Self {
        Setup {
            dir: tempfile::tempdir().unwrap(),
        }
    }
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    fn state(&self) -> PathBuf {
        self.path("state")
    }
    fn mount(&self, args: &[&str], name: &Path, dir: &Path) -> Output {
        fs::create_dir_all(dir).unwrap();
        Command::new(MOUNT)
            .arg("--state-dir")
            .arg(self.state())
            .args(args)
            .arg(name)
            .arg(dir)
            .output()
            .unwrap()
    }
    fn mount_ok(&self, args: &[&str], name: &Path, dir: &Path) {
        let o = self.mount(args, name, dir);
        assert!(
            o.status.success(),
            "blockdiff-mount {args:?}: {}",
            stderr(&o)
        );
    }
    fn umount(&self, dir: &Path) -> Output {
        Command::new(UMOUNT)
            .arg("--state-dir")
            .arg(self.state())
            .arg(dir)
            .output()
            .unwrap()
    }
    /// Unmounts and checks that nothing of the mount is left: no mount
    /// under the test's directory, no loop device on its files, no
    /// server, no state.
    fn umount_clean(&self, dir: &Path) {
        let server = self.server_pid(dir);
        let o = self.umount(dir);
        assert!(o.status.success(), "blockdiff-umount: {}", stderr(&o));
        self.assert_nothing_left();
        if let Some(pid) = server {
            assert!(!alive(pid), "the server {pid} is still running");
        }
    }
    /// The server's pid, from the state file of `dir`.
    fn server_pid(&self, dir: &Path) -> Option<u32> {
        let states = fs::read_dir(self.state()).ok()?;
        for e in states.flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "json") {
                let v: serde_json::Value = serde_json::from_slice(&fs::read(&p).ok()?).ok()?;
                if Path::new(v["dir"].as_str()?) == dir.canonicalize().ok()? {
                    return v["pid"].as_u64().map(|p| p as u32);
                }
            }
        }
        None
    }
    fn assert_nothing_left(&self) {
        let root = self.dir.path().to_string_lossy().into_owned();
        let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert!(
            !mounts.contains(&root),
            "a mount is left: {}",
            mounts
                .lines()
                .filter(|l| l.contains(&root))
                .collect::<Vec<_>>()
                .join("\n")
        );
        let loops = Command::new("losetup")
            .args(["--list", "--noheadings"])
            .output()
            .unwrap();
        let loops = text(&loops.stdout);
        assert!(!loops.contains(&root), "a loop device is left: {loops}");
        let states: Vec<_> = fs::read_dir(self.state())
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| !n.ends_with(".log"))
                    .collect()
            })
            .unwrap_or_default();
        assert!(states.is_empty(), "state left: {states:?}");
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        // A failed test must not leave mounts in a directory being removed.
        if let Ok(states) = fs::read_dir(self.state()) {
            for e in states.flatten() {
                if let Ok(bytes) = fs::read(e.path())
                    && let Ok(v) = serde_json::from_slice::<serde_json::Value>(&bytes)
                    && let Some(dir) = v["dir"].as_str()
                {
                    let _ = self.umount(Path::new(dir));
                }
            }
        }
    }
}

fn alive(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        !s.rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z')
    })
}

/// An ext4 image of `size` bytes holding `files` (path → bytes), made by
/// mkfs.ext4 from a directory, as the same file system would look after
/// the changes.
fn ext4_image(work: &Path, files: &BTreeMap<&str, Vec<u8>>, image: &Path, size: &str) {
    let src = work.join("src");
    let _ = fs::remove_dir_all(&src);
    for (path, bytes) in files {
        let p = src.join(path);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, bytes).unwrap();
    }
    fs::create_dir_all(&src).unwrap();
    let o = Command::new("mkfs.ext4")
        .args([
            "-q",
            "-F",
            "-b",
            "4096",
            "-U",
            "0b9d5f30-2d25-4fb2-9d42-3c6c2a1f7e11",
        ])
        .args(["-E", "hash_seed=3c1d6a4e-7f2b-4a59-8f00-1c2d3e4f5a6b"])
        .arg("-d")
        .arg(&src)
        .arg(image)
        .arg(size)
        .env("E2FSPROGS_FAKE_TIME", "1700000000")
        .output()
        .unwrap();
    assert!(o.status.success(), "mkfs.ext4: {}", stderr(&o));
}

/// The regular files under `dir` (lost+found aside), path → bytes.
fn files_under(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(d) = todo.pop() {
        for e in fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.file_name().is_some_and(|n| n == "lost+found") {
                continue;
            }
            if e.file_type().unwrap().is_dir() {
                todo.push(p);
            } else {
                let rel = p.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
                out.insert(rel, fs::read(&p).unwrap());
            }
        }
    }
    out
}

/// Three generations of an ext4 file system: files added, changed and
/// deleted. Returns the store's name and each generation's files.
fn ext4_chain(setup: &Setup) -> (PathBuf, Vec<BTreeMap<&'static str, Vec<u8>>>) {
    let mut files: BTreeMap<&str, Vec<u8>> = BTreeMap::new();
    files.insert("a.txt", b"generation one\n".to_vec());
    files.insert(
        "d/numbers",
        (0..20_000)
            .flat_map(|i: u32| format!("{i}\n").into_bytes())
            .collect(),
    );
    files.insert("big.bin", noise(700_000, 1));
    let mut generations = vec![files.clone()];
    files.insert("a.txt", b"generation two, longer than before\n".to_vec());
    files.insert("b/new.txt", b"added in two\n".to_vec());
    files.remove("d/numbers");
    generations.push(files.clone());
    let mut big = files["big.bin"].clone();
    big[300_000..310_000].copy_from_slice(&noise(10_000, 3));
    files.insert("big.bin", big);
    files.insert("c/deep/file", noise(5000, 4));
    generations.push(files);
    let name = setup.path("store/vol");
    fs::create_dir_all(name.parent().unwrap()).unwrap();
    let image = setup.path("disk.img");
    for g in &generations {
        ext4_image(setup.dir.path(), g, &image, "24M");
        let o = run(BACKUP, &[&"-q", &name, &image]);
        assert!(o.status.success(), "{}", stderr(&o));
    }
    (name, generations)
}

#[test]
fn every_generation_of_an_ext4_chain_mounts_with_the_files_it_had() {
    let setup = Setup::new();
    let (name, generations) = ext4_chain(&setup);
    let mnt = setup.path("mnt");
    for (i, want) in generations.iter().enumerate() {
        let g = (i + 1).to_string();
        setup.mount_ok(&["-g", &g, "--fs"], &name, &mnt);
        let got = files_under(&mnt);
        let want: BTreeMap<String, Vec<u8>> = want
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect();
        assert_eq!(
            got.keys().collect::<Vec<_>>(),
            want.keys().collect::<Vec<_>>(),
            "generation {g}"
        );
        assert!(got == want, "generation {g}: a file's bytes differ");
        // Read-only all the way down.
        assert!(fs::write(mnt.join("a.txt"), b"x").is_err());
        setup.umount_clean(&mnt);
    }

    // Without --fs: the image file, byte for byte a full restore.
    setup.mount_ok(&["-g", "2"], &name, &mnt);
    assert_eq!(common::listing(&mnt), ["image"]);
    let restored = setup.path("restored.img");
    let o = run(RESTORE, &[&"-q", &restored, &"--from", &name, &"-g", &"2"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(fs::read(mnt.join("image")).unwrap() == fs::read(&restored).unwrap());
    let meta = fs::metadata(mnt.join("image")).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777,
        0o400
    );
    setup.umount_clean(&mnt);
}

#[test]
fn a_damaged_frame_is_an_io_error_on_exactly_its_blocks() {
    let setup = Setup::new();
    let (name, _) = ext4_chain(&setup);
    let mnt = setup.path("mnt");
    let restored = setup.path("restored.img");
    let o = run(RESTORE, &[&"-q", &restored, &"--from", &name, &"-g", &"1"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let want = fs::read(&restored).unwrap();

    // A byte in the middle of a frame of generation 1: its CRC fails.
    let diff_path = PathBuf::from(format!("{}.1", name.display()));
    let diff = archive_format::DiffFile::open(fs::File::open(&diff_path).unwrap()).unwrap();
    let with_data: Vec<usize> = (0..diff.frames().len())
        .filter(|&f| {
            diff.frame_extents(f)
                .iter()
                .any(|e| e.kind == archive_format::ExtentKind::Data)
        })
        .collect();
    let frame = with_data[with_data.len() / 2];
    let entry = diff.frames()[frame];
    let bs = u64::from(diff.header().block_size);
    let damaged: Vec<u64> = diff
        .frame_extents(frame)
        .iter()
        .filter(|e| e.kind == archive_format::ExtentKind::Data)
        .flat_map(|e| e.first_block..e.end_block())
        .collect();
    assert!(!damaged.is_empty());
    let mut bytes = fs::read(&diff_path).unwrap();
    bytes[(entry.offset + u64::from(entry.len) / 2) as usize] ^= 0x40;
    fs::write(&diff_path, &bytes).unwrap();

    setup.mount_ok(&["-g", "1"], &name, &mnt);
    let image = fs::File::open(mnt.join("image")).unwrap();
    let mut failed = Vec::new();
    let mut buf = vec![0u8; bs as usize];
    for b in 0..(want.len() as u64).div_ceil(bs) {
        let start = (b * bs) as usize;
        let n = (want.len() - start).min(bs as usize);
        match image.read_exact_at(&mut buf[..n], b * bs) {
            Ok(()) => assert!(buf[..n] == want[start..start + n], "block {b}: wrong bytes"),
            Err(e) => {
                assert_eq!(e.raw_os_error(), Some(libc::EIO), "block {b}: {e}");
                failed.push(b);
            }
        }
    }
    assert_eq!(failed, damaged, "the blocks that fail are the frame's");
    drop(image);
    // The server's log says which file and where.
    let log: String = fs::read_dir(setup.state())
        .unwrap()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "log"))
        .map(|e| fs::read_to_string(e.path()).unwrap())
        .collect();
    assert!(
        log.contains("read error") && log.contains(&diff_path.display().to_string()),
        "{log}"
    );
    setup.umount_clean(&mnt);
}

/// An MBR image: partition 1 (type 0x83) holding `fs` at 1 MiB.
fn mbr_image(fs_image: &[u8]) -> Vec<u8> {
    let mut image = vec![0u8; 1 << 20];
    let sectors = (fs_image.len() / 512) as u32;
    let entry = &mut image[446..462];
    entry[4] = 0x83;
    entry[8..12].copy_from_slice(&2048u32.to_le_bytes());
    entry[12..16].copy_from_slice(&sectors.to_le_bytes());
    image[510..512].copy_from_slice(&[0x55, 0xAA]);
    image.extend_from_slice(fs_image);
    image
}

#[test]
fn a_partitioned_disk_shows_its_partitions_and_mounts_the_linux_one() {
    let setup = Setup::new();
    let fs_image = setup.path("fs.img");
    let files: BTreeMap<&str, Vec<u8>> = [
        ("etc/hostname", b"domu\n".to_vec()),
        ("var/data", noise(50_000, 9)),
    ]
    .into();
    ext4_image(setup.dir.path(), &files, &fs_image, "8M");
    let fs_bytes = fs::read(&fs_image).unwrap();
    let disk = setup.path("domu.img");
    fs::write(&disk, mbr_image(&fs_bytes)).unwrap();
    let name = setup.path("store/domu");
    fs::create_dir_all(name.parent().unwrap()).unwrap();
    let o = run(BACKUP, &[&"-q", &name, &disk]);
    assert!(o.status.success(), "{}", stderr(&o));

    let mnt = setup.path("mnt");
    setup.mount_ok(&[], &name, &mnt);
    assert_eq!(common::listing(&mnt), ["image", "part1"]);
    assert!(fs::read(mnt.join("part1")).unwrap() == fs_bytes);
    setup.umount_clean(&mnt);

    for fs_arg in ["--fs", "--fs=1"] {
        setup.mount_ok(&[fs_arg], &name, &mnt);
        let got = files_under(&mnt);
        assert_eq!(got["etc/hostname"], b"domu\n");
        assert!(got["var/data"] == files["var/data"]);
        setup.umount_clean(&mnt);
    }
    // A partition it does not have: one line, exit 1, nothing mounted.
    let o = setup.mount(&["--fs", "3"], &name, &mnt);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("no partition 3") && stderr(&o).contains("part1"),
        "{}",
        stderr(&o)
    );
    assert_eq!(stderr(&o).lines().count(), 1, "{}", stderr(&o));
    setup.assert_nothing_left();
}

#[test]
fn a_killed_server_is_cleaned_up_by_umount_and_mistakes_are_refused() {
    let setup = Setup::new();
    let (name, generations) = ext4_chain(&setup);
    let mnt = setup.path("mnt");
    setup.mount_ok(&["--fs"], &name, &mnt);
    // Mounting twice on one directory.
    let o = setup.mount(&["--fs"], &name, &mnt);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("mounted here already"),
        "{}",
        stderr(&o)
    );
    // kill -9 of the server, with the file system and loop device in
    // place: blockdiff-umount still undoes everything.
    let pid = setup
        .server_pid(&mnt)
        .expect("the server's pid is recorded");
    // SAFETY: kill touches no memory.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    let o = setup.umount(&mnt);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("server had died"), "{}", stderr(&o));
    setup.assert_nothing_left();
    // And the directory mounts again.
    setup.mount_ok(&["--fs"], &name, &mnt);
    assert_eq!(
        fs::read(mnt.join("a.txt")).unwrap(),
        generations[2]["a.txt"]
    );
    setup.umount_clean(&mnt);

    // Unmounting what is not mounted; a generation that does not exist; a
    // mount point that does not exist.
    let o = setup.umount(&mnt);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("no blockdiff mount is recorded"),
        "{}",
        stderr(&o)
    );
    let o = setup.mount(&["-g", "9"], &name, &mnt);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("generation 9") || stderr(&o).contains(".9"),
        "{}",
        stderr(&o)
    );
    let o = Command::new(MOUNT)
        .arg("--state-dir")
        .arg(setup.state())
        .arg(&name)
        .arg(setup.path("missing"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("missing"), "{}", stderr(&o));
    let o = run(MOUNT, &[&"--fs", &"x1", &name, &mnt]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    setup.assert_nothing_left();
}
