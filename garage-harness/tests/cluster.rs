//! Real Garage clusters, driven with rclone. These tests need the Garage
//! binary (scripts/garage-setup.sh builds it; `BLOCKDIFF_GARAGE` names it)
//! and rclone: without them they fail, saying so.

use std::fs;
use std::path::Path;
use std::process::Output;
use std::time::Instant;

use garage_harness::GarageCluster;

fn start(dir: &Path, nodes: usize) -> GarageCluster {
    let started = Instant::now();
    let cluster = GarageCluster::start(dir, nodes).unwrap_or_else(|error| panic!("{error}"));
    eprintln!(
        "{nodes} node(s) up in {:.2} s",
        started.elapsed().as_secs_f64()
    );
    cluster
}

/// Runs rclone against the cluster (one try, no retries: a failure shows).
fn rclone(cluster: &GarageCluster, args: &[&str]) -> Output {
    let output = cluster
        .rclone()
        .args(["--retries", "1", "--low-level-retries", "1"])
        .args(args)
        .output()
        .unwrap_or_else(|error| panic!("cannot run rclone (is it installed?): {error}"));
    assert!(
        output.status.success(),
        "rclone {args:?} failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// `len` bytes that differ from one file to the next (`seed`) and do not
/// compress.
fn contents(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut bytes = Vec::with_capacity(len + 8);
    while bytes.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        bytes.extend_from_slice(&state.to_le_bytes());
    }
    bytes.truncate(len);
    bytes
}

fn put(cluster: &GarageCluster, dir: &Path, key: &str, bytes: &[u8]) {
    let local = dir.join(key);
    fs::write(&local, bytes).unwrap();
    let remote = format!("garage:{}/{key}", cluster.bucket());
    rclone(cluster, &["copyto", local.to_str().unwrap(), &remote]);
}

fn get(cluster: &GarageCluster, key: &str) -> Vec<u8> {
    rclone(
        cluster,
        &["cat", &format!("garage:{}/{key}", cluster.bucket())],
    )
    .stdout
}

#[test]
fn single_node_round_trip_and_request_counts() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = start(&dir.path().join("garage"), 1);
    assert_eq!(cluster.node_count(), 1);
    assert_eq!(cluster.replication_factor(), 1);
    assert_eq!(cluster.region(), "garage");
    assert!(cluster.endpoint().starts_with("http://127.0.0.1:"));
    assert_eq!(cluster.s3_endpoint_of(0).unwrap(), cluster.endpoint());
    assert!(cluster.s3_endpoint_of(1).is_err());
    assert_eq!(cluster.access_key_id().len(), 26);
    assert!(cluster.access_key_id().starts_with("GK"));
    assert_eq!(cluster.secret_access_key().len(), 64);

    let puts = cluster.request_count("PutObject").unwrap();
    let gets = cluster.request_count("GetObject").unwrap();
    let bytes = contents(20 << 20, 1);
    let started = Instant::now();
    put(&cluster, dir.path(), "twenty-mib", &bytes);
    let read = get(&cluster, "twenty-mib");
    eprintln!(
        "20 MiB written and read in {:.2} s",
        started.elapsed().as_secs_f64()
    );
    assert!(
        read == bytes,
        "read back {} bytes, not the 20 MiB written",
        read.len()
    );

    assert_eq!(cluster.request_count("PutObject").unwrap(), puts + 1);
    assert_eq!(cluster.request_count("GetObject").unwrap(), gets + 1);
    assert!(
        fs::read_to_string(cluster.log_path(0).unwrap())
            .unwrap()
            .contains("garage-harness: node 0 starting")
    );
}

#[test]
fn three_nodes_serve_with_one_down_and_take_it_back() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = start(&dir.path().join("garage"), 3);
    assert_eq!(cluster.node_count(), 3);
    assert_eq!(cluster.replication_factor(), 3);
    let health = cluster.cluster_health(1).unwrap();
    assert_eq!(
        (health.status.as_str(), health.storage_nodes_up),
        ("healthy", 3)
    );

    let first = contents(4 << 20, 2);
    put(&cluster, dir.path(), "first", &first);

    let started = Instant::now();
    cluster.kill(2).unwrap_or_else(|error| panic!("{error}"));
    assert!(!cluster.is_running(2));
    let health = cluster.cluster_health(0).unwrap();
    assert_eq!(
        (health.status.as_str(), health.storage_nodes_up),
        ("degraded", 2)
    );
    assert!(
        get(&cluster, "first") == first,
        "first object changed with node 2 down"
    );
    eprintln!(
        "node 2 killed and the object read in {:.2} s",
        started.elapsed().as_secs_f64()
    );
    assert!(cluster.kill(2).is_err());

    let started = Instant::now();
    cluster.restart(2).unwrap_or_else(|error| panic!("{error}"));
    assert!(cluster.is_running(2));
    eprintln!(
        "node 2 restarted in {:.2} s",
        started.elapsed().as_secs_f64()
    );
    let health = cluster.cluster_health(2).unwrap();
    assert_eq!(
        (health.status.as_str(), health.storage_nodes_up),
        ("healthy", 3)
    );

    let second = contents(4 << 20, 3);
    put(&cluster, dir.path(), "second", &second);
    assert!(get(&cluster, "second") == second);
    // rclone talks to node 0 only, never killed: both uploads are counted.
    assert_eq!(cluster.request_count("PutObject").unwrap(), 2);
}
