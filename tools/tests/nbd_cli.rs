//! `blockdiff-nbd` with real NBD clients: Debian's nbdkit runs the plugin,
//! qemu-img and qemu-io (qemu-utils) read the export over a Unix socket
//! and TCP on loopback.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{BACKUP, RESTORE, run, stderr};

const NBD: &str = env!("CARGO_BIN_EXE_blockdiff-nbd");
const KEY: &str = env!("CARGO_BIN_EXE_blockdiff-key");
const BS: usize = 4096;

/// The byte every block `b` of generation `g` is filled with: each
/// generation changes every fifth block, so the chain's blocks come from
/// several generations.
fn fill(b: usize, g: usize) -> u8 {
    let last = (1..=g)
        .rev()
        .find(|&k| k == 1 || (b + k).is_multiple_of(5))
        .unwrap_or(1);
    ((b * 31 + last * 17) % 251 + 1) as u8
}

fn image(blocks: usize, g: usize) -> Vec<u8> {
    (0..blocks)
        .flat_map(|b| std::iter::repeat_n(fill(b, g), BS))
        .collect()
}

const BLOCKS: usize = 600;

/// Three generations of an image of `BLOCKS` blocks of 4 KiB plus a
/// short last block (whole sectors: qemu rounds an export's size up to
/// 512 bytes), backed up with 4 KiB blocks and `extra` options.
fn chain(dir: &Path, extra: &[&str]) -> (PathBuf, Vec<Vec<u8>>) {
    let name = dir.join("store/vm");
    fs::create_dir_all(name.parent().unwrap()).unwrap();
    let source = dir.join("disk.img");
    let mut images = Vec::new();
    for g in 1..=3 {
        let mut bytes = image(BLOCKS, g);
        bytes.extend_from_slice(&[0xAB; 1024]);
        fs::write(&source, &bytes).unwrap();
        let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![&"-q", &"-b", &"4k"];
        for e in extra {
            args.push(e);
        }
        args.push(&name);
        args.push(&source);
        let o = run(BACKUP, &args);
        assert!(o.status.success(), "{}", stderr(&o));
        images.push(bytes);
    }
    (name, images)
}

fn nbd(args: &[&str], name: &Path, socket: &Path, script: &str) -> Output {
    Command::new(NBD)
        .args(args)
        .arg("--socket")
        .arg(socket)
        .arg("--run")
        .arg(script)
        .arg(name)
        .output()
        .unwrap()
}

#[test]
fn qemu_img_converts_every_generation_to_its_restore() {
    let dir = tempfile::tempdir().unwrap();
    let (name, images) = chain(dir.path(), &[]);
    let socket = dir.path().join("nbd.sock");
    for (i, want) in images.iter().enumerate() {
        let g = (i + 1).to_string();
        let out = dir.path().join(format!("converted-{g}.img"));
        let script = format!("qemu-img convert -f raw \"$uri\" {}", out.display());
        let o = nbd(&["-g", &g], &name, &socket, &script);
        assert!(o.status.success(), "generation {g}: {}", stderr(&o));
        let restored = dir.path().join(format!("restored-{g}.img"));
        let r = run(RESTORE, &[&"-q", &restored, &"--from", &name, &"-g", &g]);
        assert!(r.status.success(), "{}", stderr(&r));
        let converted = fs::read(&out).unwrap();
        assert!(converted == fs::read(&restored).unwrap(), "generation {g}");
        assert!(converted == *want, "generation {g}");
        // The next generation is served on the same socket: the one this
        // server left is stale and replaced.
    }
}

/// `qemu-io` commands reading `count` random ranges inside single blocks
/// of generation 3 and checking each against its fill byte (`read -P`).
fn random_reads(count: usize, seed: u64) -> Vec<String> {
    let mut x = seed | 1;
    (0..count)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let b = (x % BLOCKS as u64) as usize;
            let start = ((x >> 20) % BS as u64) as usize;
            let len = 1 + ((x >> 40) % (BS - start) as u64) as usize;
            format!("read -P {} {} {}", fill(b, 3), b * BS + start, len)
        })
        .collect()
}

fn qemu_io_script(commands: &[String]) -> String {
    let mut script = String::from("qemu-io -r -f raw");
    for c in commands {
        script.push_str(&format!(" -c '{c}'"));
    }
    script.push_str(" \"$uri\"");
    script
}

#[test]
fn qemu_io_random_reads_agree_with_the_image_over_unix_and_tcp() {
    let dir = tempfile::tempdir().unwrap();
    let (name, _) = chain(dir.path(), &[]);
    let script = qemu_io_script(&random_reads(200, 99));
    let o = nbd(&[], &name, &dir.path().join("nbd.sock"), &script);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = common::text(&o.stdout);
    assert_eq!(out.matches("read ").count(), 200, "{out}");
    assert!(!out.contains("Pattern verification failed"), "{out}");

    // The same over TCP on loopback (a port of its own).
    let port = 20000 + std::process::id() % 20000;
    let script = qemu_io_script(&random_reads(50, 7));
    let o = Command::new(NBD)
        .args(["--listen", &format!("127.0.0.1:{port}"), "--run", &script])
        .arg(&name)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let out = common::text(&o.stdout);
    assert_eq!(out.matches("read ").count(), 50, "{out}");
    assert!(!out.contains("Pattern verification failed"), "{out}");
}

#[test]
fn a_damaged_frame_fails_only_the_reads_that_touch_it() {
    let dir = tempfile::tempdir().unwrap();
    let (name, _) = chain(dir.path(), &[]);
    // Generation 1's diff, a byte in a frame that holds data.
    let diff_path = PathBuf::from(format!("{}.1", name.display()));
    let diff = archive_format::DiffFile::open(fs::File::open(&diff_path).unwrap()).unwrap();
    let (frame, blocks): (usize, Vec<u64>) = (0..diff.frames().len())
        .map(|f| {
            let blocks: Vec<u64> = diff
                .frame_extents(f)
                .iter()
                .filter(|e| e.kind == archive_format::ExtentKind::Data)
                .flat_map(|e| e.first_block..e.end_block())
                .collect();
            (f, blocks)
        })
        .find(|(_, b)| !b.is_empty())
        .unwrap();
    let entry = diff.frames()[frame];
    let mut bytes = fs::read(&diff_path).unwrap();
    bytes[(entry.offset + u64::from(entry.len) / 2) as usize] ^= 1;
    fs::write(&diff_path, &bytes).unwrap();
    // A damaged block that generation 1 still provides, and a good block.
    let bad = *blocks
        .iter()
        .find(|&&b| (1..=3).all(|k| fill(b as usize, k) == fill(b as usize, 1)))
        .unwrap();
    let good = (0..BLOCKS as u64).find(|b| !blocks.contains(b)).unwrap();
    let script = format!(
        "qemu-io -r -f raw -c 'read {} 512' \"$uri\"; qemu-io -r -f raw -c 'read -P {} {} 512' \"$uri\"",
        bad * BS as u64,
        fill(good as usize, 3),
        good * BS as u64
    );
    let o = nbd(&[], &name, &dir.path().join("nbd.sock"), &script);
    let out = common::text(&o.stdout) + &stderr(&o);
    assert!(out.contains("Input/output error"), "{out}");
    assert!(
        out.contains("read 512/512 bytes"),
        "the good block reads: {out}"
    );
    // nbdkit's log names the diff.
    assert!(
        stderr(&o).contains(&diff_path.display().to_string()),
        "{}",
        stderr(&o)
    );
}

#[test]
fn an_encrypted_chain_needs_its_key_and_mistakes_are_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("k");
    let o = run(KEY, &[&"new", &key]);
    assert!(o.status.success(), "{}", stderr(&o));
    let key_text = key.to_str().unwrap();
    let (name, images) = chain(dir.path(), &["--encrypt", "--key-file", key_text]);
    let socket = dir.path().join("nbd.sock");
    let out = dir.path().join("out.img");
    let script = format!("qemu-img convert -f raw \"$uri\" {}", out.display());
    let o = nbd(&["--key-file", key_text], &name, &socket, &script);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(fs::read(&out).unwrap() == images[2]);

    for (args, expect) in [(vec![], "give its key"), (vec!["-g", "9"], "generation 9")] {
        let o = nbd(&args, &name, &socket, "true");
        assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
        assert!(stderr(&o).contains(expect), "{}", stderr(&o));
        assert_eq!(stderr(&o).trim_end().lines().count(), 1, "{}", stderr(&o));
    }
    let o = run(NBD, &[&"--listen", &"host:port", &name]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    // Something at --socket that is not a stale socket is left alone.
    let file = dir.path().join("a-file");
    fs::write(&file, b"keep").unwrap();
    let o = nbd(&[], &name, &file, "true");
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("is not a socket"), "{}", stderr(&o));
    assert_eq!(fs::read(&file).unwrap(), b"keep");
    let o = Command::new(NBD)
        .env("BLOCKDIFF_NBDKIT_PLUGIN", dir.path().join("missing.so"))
        .args(["--socket", socket.to_str().unwrap(), "--run", "true"])
        .arg(&name)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("missing.so"), "{}", stderr(&o));
}
