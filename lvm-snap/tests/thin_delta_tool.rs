//! `ThinDelta` against the real `thin_delta` (thin-provisioning-tools):
//! pool metadata written by `thin_restore` from a model of two thin
//! devices (an older snapshot and a newer one that shares, remaps, adds and
//! discards chunks), read back by `thin_delta`, parsed, and compared with
//! the chunks the model changed. No device-mapper is needed: both tools
//! work on a metadata file. `scripts/services-setup.sh` installs them.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::process::Command;

use lvm_snap::ThinDelta;

/// A small deterministic generator (xorshift), so that a failure repeats.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The metadata XML of a pool holding `left` and `right` (virtual chunk →
/// data block), as `thin_dump` writes it.
fn metadata_xml(
    chunk_sectors: u64,
    data_blocks: u64,
    devices: &[(u64, &BTreeMap<u64, u64>)],
) -> String {
    let mut xml = format!(
        "<superblock uuid=\"\" time=\"1\" transaction=\"2\" flags=\"0\" version=\"2\" data_block_size=\"{chunk_sectors}\" nr_data_blocks=\"{data_blocks}\">\n"
    );
    for (id, map) in devices {
        writeln!(
            xml,
            "  <device dev_id=\"{id}\" mapped_blocks=\"{}\" transaction=\"0\" creation_time=\"0\" snap_time=\"1\">",
            map.len()
        )
        .unwrap();
        for (virt, data) in *map {
            writeln!(
                xml,
                "    <single_mapping origin_block=\"{virt}\" data_block=\"{data}\" time=\"0\"/>"
            )
            .unwrap();
        }
        xml.push_str("  </device>\n");
    }
    xml.push_str("</superblock>\n");
    xml
}

fn tool(name: &str) -> String {
    for dir in ["/usr/sbin", "/sbin", "/usr/bin"] {
        let path = format!("{dir}/{name}");
        if std::path::Path::new(&path).exists() {
            return path;
        }
    }
    panic!(
        "{name} is missing: run scripts/services-setup.sh (it installs thin-provisioning-tools)"
    );
}

fn run_thin_delta(dir: &std::path::Path, xml: &str, left: u64, right: u64) -> (String, String) {
    let xml_path = dir.join("meta.xml");
    let meta = dir.join("meta.bin");
    std::fs::write(&xml_path, xml).unwrap();
    std::fs::File::create(&meta)
        .unwrap()
        .set_len(8 << 20)
        .unwrap();
    let restored = Command::new(tool("thin_restore"))
        .arg("-i")
        .arg(&xml_path)
        .arg("-o")
        .arg(&meta)
        .output()
        .unwrap();
    assert!(
        restored.status.success(),
        "thin_restore: {}",
        String::from_utf8_lossy(&restored.stderr)
    );
    let command = format!(
        "thin_delta --snap1 {left} --snap2 {right} {}",
        meta.display()
    );
    let out = Command::new(tool("thin_delta"))
        .args(["--snap1", &left.to_string(), "--snap2", &right.to_string()])
        .arg(&meta)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "thin_delta: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (String::from_utf8(out.stdout).unwrap(), command)
}

#[test]
fn the_changed_chunks_are_exactly_those_the_pool_remapped_added_or_discarded() {
    let dir = tempfile::tempdir().unwrap();
    let chunks = 4096u64;
    for seed in 1..=6u64 {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ seed);
        // The older snapshot: most chunks mapped, in runs.
        let mut left = BTreeMap::new();
        let mut next_data = 0u64;
        for virt in 0..chunks {
            if rng.below(10) < 8 {
                left.insert(virt, next_data);
                next_data += 1;
            }
        }
        // The newer one shares the older one's blocks, except where the
        // origin was written (a new data block), grew, or was discarded.
        let mut right = left.clone();
        let mut changed = std::collections::BTreeSet::new();
        let writes = 1 + rng.below(chunks / 20);
        for _ in 0..writes {
            // Clustered writes now and then, as a file system makes them.
            let start = rng.below(chunks);
            let run = if rng.below(4) == 0 {
                1 + rng.below(40)
            } else {
                1
            };
            for virt in start..(start + run).min(chunks) {
                match rng.below(10) {
                    0 => {
                        if right.remove(&virt).is_some() || left.contains_key(&virt) {
                            changed.insert(virt);
                        }
                    }
                    _ => {
                        right.insert(virt, next_data);
                        next_data += 1;
                        changed.insert(virt);
                    }
                }
            }
        }
        // A chunk discarded and then rewritten is changed; one unmapped in
        // both is not.
        changed.retain(|virt| left.get(virt) != right.get(virt));
        let xml = metadata_xml(128, next_data + 16, &[(1, &left), (2, &right)]);
        let (out, command) = run_thin_delta(dir.path(), &xml, 1, 2);
        let delta = ThinDelta::parse(&out, 1, 2, &command).unwrap();
        assert_eq!(delta.chunk_bytes, 64 << 10);
        let got: Vec<u64> = delta
            .changed
            .iter()
            .flat_map(|r| r.begin..r.begin + r.length)
            .collect();
        let want: Vec<u64> = changed.into_iter().collect();
        assert_eq!(got, want, "seed {seed}");
        assert_eq!(delta.changed_bytes(), want.len() as u64 * (64 << 10));
    }
}

#[test]
fn identical_devices_differ_nowhere() {
    let dir = tempfile::tempdir().unwrap();
    let map: BTreeMap<u64, u64> = (0..100).map(|v| (v, v)).collect();
    let xml = metadata_xml(256, 200, &[(3, &map), (5, &map)]);
    let (out, command) = run_thin_delta(dir.path(), &xml, 3, 5);
    let delta = ThinDelta::parse(&out, 3, 5, &command).unwrap();
    assert_eq!(delta.chunk_bytes, 128 << 10);
    assert!(delta.changed.is_empty(), "{delta:?}");
    // Asked about other devices than the output names: refused.
    let err = ThinDelta::parse(&out, 3, 6, &command)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("a diff of devices 3 and 5, not 3 and 6"),
        "{err}"
    );
}
