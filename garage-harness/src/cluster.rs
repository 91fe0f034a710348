//! Garage nodes on loopback: started, set up, measured, killed, restarted.

use std::fmt::Write as _;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use crate::http::{self, Credentials};
use crate::spawn::spawn_tied_to_process;
use crate::{Garage, HarnessError, RcloneEnv};

/// How long a node may take to listen on its ports.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the cluster may take to see every running node and serve S3.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(60);
/// How long one `garage` command-line invocation may take.
const CLI_TIMEOUT: Duration = Duration::from_secs(30);
/// Between two looks at something awaited.
const POLL_INTERVAL: Duration = Duration::from_millis(25);
/// Between two nudges of nodes that do not agree on who is up.
const NUDGE_INTERVAL: Duration = Duration::from_millis(250);
/// For a nudge's request, whose answer does not matter.
const NUDGE_TIMEOUT: Duration = Duration::from_millis(200);
/// For one HTTP request to a node.
const HTTP_TIMEOUT: Duration = Duration::from_secs(5);
/// Fresh ports are tried this many times when another process took one
/// between the harness finding it free and Garage binding it.
const PORT_ATTEMPTS: usize = 5;
/// Lines of a node's log shown in errors.
const LOG_TAIL_LINES: usize = 40;

/// The Prometheus counter of S3 API requests, one series per
/// `api_endpoint` (and, in Garage 2.x, no other label).
pub const S3_REQUEST_COUNTER: &str = "api_s3_request_counter";

/// The S3 region every node is configured with (`[s3_api] s3_region`).
pub const REGION: &str = "garage";
/// The bucket the harness creates.
pub const BUCKET: &str = "blockdiff-test";
/// The name of the key the harness imports.
const KEY_NAME: &str = "blockdiff-harness";
/// The capacity each node is assigned in the layout.
const CAPACITY: &str = "1G";

/// A running Garage cluster on loopback: one node or several, each in its
/// own directory `DIR/nodeN` (`garage.toml`, `garage.log`, `meta/`,
/// `data/`), with one access key and one bucket that the key may read,
/// write and own.
///
/// Dropping it kills every node (SIGKILL) and removes nothing: the
/// directory is the caller's (a `tempfile::TempDir` usually).
#[derive(Debug)]
pub struct GarageCluster {
    dir: PathBuf,
    binary: PathBuf,
    nodes: Vec<Node>,
    replication_factor: usize,
    rpc_secret: String,
    admin_token: String,
    metrics_token: String,
    access_key_id: String,
    secret_access_key: String,
    /// Whether the key and the bucket exist yet (during set-up, health is
    /// awaited before they do).
    bucket_ready: bool,
}

#[derive(Debug)]
struct Node {
    dir: PathBuf,
    rpc_port: u16,
    s3_port: u16,
    admin_port: u16,
    /// The node's full identifier (its public key in hex), once known.
    id: String,
    child: Option<Child>,
}

impl Node {
    fn config(&self) -> PathBuf {
        self.dir.join("garage.toml")
    }

    fn log(&self) -> PathBuf {
        self.dir.join("garage.log")
    }

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, port))
    }
}

/// The cluster's answer to the admin API's `GetClusterHealth`, as seen by one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterHealth {
    /// `healthy`, `degraded` or `unavailable`.
    pub status: String,
    /// Nodes this node is connected to (itself included).
    pub connected_nodes: u64,
    /// Nodes with a storage role in the current layout.
    pub storage_nodes: u64,
    /// Of those, the ones up.
    pub storage_nodes_up: u64,
    /// Partitions of the layout.
    pub partitions: u64,
    /// Partitions with a quorum of their nodes up.
    pub partitions_quorum: u64,
    /// Partitions with all their nodes up.
    pub partitions_all_ok: u64,
}

impl GarageCluster {
    /// Starts one node with `replication_factor = 1`, its layout applied,
    /// a key and a bucket; returns once an S3 request signed with the key
    /// lists the bucket.
    ///
    /// # Errors
    ///
    /// No Garage binary ([`Garage::binary`]), `dir` not writable, a node
    /// that exits or a step that fails or times out (with the node's log
    /// tail).
    pub fn start_single(dir: &Path) -> Result<Self, HarnessError> {
        Self::start(dir, 1)
    }

    /// Starts `nodes` nodes on loopback, each in its own zone (`dc1`,
    /// `dc2`, …) with `replication_factor = min(nodes, 3)` and the
    /// default `consistent` consistency mode, connects them, applies the
    /// layout, imports a key and creates a bucket; returns once every node
    /// sees all the others up, every partition has all its nodes, and a
    /// signed S3 request lists the bucket on every node.
    ///
    /// `start(dir, 3)` is the usual three-zone cluster; `start(dir, 1)` is
    /// [`GarageCluster::start_single`].
    ///
    /// # Errors
    ///
    /// As [`GarageCluster::start_single`]; [`HarnessError::NoNodes`] for
    /// zero nodes.
    pub fn start(dir: &Path, nodes: usize) -> Result<Self, HarnessError> {
        if nodes == 0 {
            return Err(HarnessError::NoNodes);
        }
        let binary = Garage::binary()?;
        let mut cluster = Self {
            dir: dir.to_owned(),
            binary,
            nodes: Vec::with_capacity(nodes),
            replication_factor: nodes.min(3),
            rpc_secret: random_hex(32)?,
            admin_token: random_hex(32)?,
            metrics_token: random_hex(32)?,
            access_key_id: format!("GK{}", random_hex(12)?),
            secret_access_key: random_hex(32)?,
            bucket_ready: false,
        };
        for index in 0..nodes {
            let node_dir = dir.join(format!("node{index}"));
            for sub in ["meta", "data"] {
                let path = node_dir.join(sub);
                fs::create_dir_all(&path)
                    .map_err(|e| HarnessError::io(format!("creating {}", path.display()), e))?;
            }
            cluster.nodes.push(Node {
                dir: node_dir,
                rpc_port: 0,
                s3_port: 0,
                admin_port: 0,
                id: String::new(),
                child: None,
            });
            // From here on, a failure drops `cluster`, which kills the
            // nodes already started.
            cluster.launch_fresh(index)?;
        }
        cluster.set_up()?;
        Ok(cluster)
    }

    /// The nodes' identifiers, the connections, the layout, the key, the
    /// bucket; then the wait for health.
    fn set_up(&mut self) -> Result<(), HarnessError> {
        for index in 0..self.nodes.len() {
            let out = self.cli(index, &["node", "id", "--quiet"])?;
            let id = out.trim().split('@').next().unwrap_or_default().to_owned();
            if id.len() != 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(self.command_error(
                    index,
                    "garage node id --quiet",
                    "exit status: 0",
                    &format!("not a node identifier: {out:?}"),
                ));
            }
            self.nodes[index].id = id;
        }
        // Each node's configuration names the others as bootstrap peers,
        // for a restart; the first start connects them explicitly.
        for index in 0..self.nodes.len() {
            self.write_config(index)?;
        }
        for index in 1..self.nodes.len() {
            let peer = self.peer_address(index);
            self.cli(0, &["node", "connect", &peer])?;
        }
        for index in 0..self.nodes.len() {
            let zone = format!("dc{}", index + 1);
            let id = self.nodes[index].id.clone();
            self.cli(0, &["layout", "assign", "-z", &zone, "-c", CAPACITY, &id])?;
        }
        self.cli(0, &["layout", "apply", "--version", "1"])?;
        self.wait_converged(0)?;
        let (key_id, secret) = (self.access_key_id.clone(), self.secret_access_key.clone());
        self.cli(
            0,
            &["key", "import", "--yes", "-n", KEY_NAME, &key_id, &secret],
        )?;
        self.cli(0, &["bucket", "create", BUCKET])?;
        self.cli(
            0,
            &[
                "bucket", "allow", "--read", "--write", "--owner", BUCKET, "--key", &key_id,
            ],
        )?;
        self.bucket_ready = true;
        self.wait_converged(0)
    }

    /// Starts node `index` for the first time, on fresh free ports, again
    /// on other ports if one was taken meanwhile.
    fn launch_fresh(&mut self, index: usize) -> Result<(), HarnessError> {
        let mut attempt = 1;
        loop {
            let [rpc, s3, admin] = free_ports()?;
            let node = &mut self.nodes[index];
            (node.rpc_port, node.s3_port, node.admin_port) = (rpc, s3, admin);
            self.write_config(index)?;
            self.spawn(
                index,
                &format!("starting (ports rpc {rpc}, s3 {s3}, admin {admin})"),
            )?;
            match self.wait_listening(index) {
                Err(HarnessError::NodeExited { log_tail, .. })
                    if attempt < PORT_ATTEMPTS && log_tail.contains("in use") =>
                {
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    fn write_config(&self, index: usize) -> Result<(), HarnessError> {
        let node = &self.nodes[index];
        let peers: Vec<String> = (0..self.nodes.len())
            .filter(|&other| other != index && !self.nodes[other].id.is_empty())
            .map(|other| toml_string(&self.peer_address(other)))
            .collect();
        let config = format!(
            "# Written by garage-harness.\n\
             metadata_dir = {meta}\n\
             data_dir = {data}\n\
             db_engine = \"sqlite\"\n\
             metadata_fsync = false\n\
             data_fsync = false\n\
             replication_factor = {rf}\n\
             consistency_mode = \"consistent\"\n\
             rpc_secret = \"{rpc_secret}\"\n\
             rpc_bind_addr = \"127.0.0.1:{rpc}\"\n\
             rpc_public_addr = \"127.0.0.1:{rpc}\"\n\
             bootstrap_peers = [{peers}]\n\
             \n\
             [s3_api]\n\
             s3_region = \"{REGION}\"\n\
             api_bind_addr = \"127.0.0.1:{s3}\"\n\
             root_domain = \".s3.garage.localhost\"\n\
             \n\
             [admin]\n\
             api_bind_addr = \"127.0.0.1:{admin}\"\n\
             admin_token = \"{admin_token}\"\n\
             metrics_token = \"{metrics_token}\"\n",
            meta = toml_string(&node.dir.join("meta").to_string_lossy()),
            data = toml_string(&node.dir.join("data").to_string_lossy()),
            rf = self.replication_factor,
            rpc_secret = self.rpc_secret,
            rpc = node.rpc_port,
            peers = peers.join(", "),
            s3 = node.s3_port,
            admin = node.admin_port,
            admin_token = self.admin_token,
            metrics_token = self.metrics_token,
        );
        let path = node.config();
        fs::write(&path, config)
            .map_err(|e| HarnessError::io(format!("writing {}", path.display()), e))
    }

    fn peer_address(&self, index: usize) -> String {
        let node = &self.nodes[index];
        format!("{}@127.0.0.1:{}", node.id, node.rpc_port)
    }

    /// Starts node `index`'s process, its output appended to its log.
    fn spawn(&mut self, index: usize, why: &str) -> Result<(), HarnessError> {
        let node = &mut self.nodes[index];
        let log_path = node.log();
        let open_error = |e| HarnessError::io(format!("opening {}", log_path.display()), e);
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(open_error)?;
        writeln!(log, "==== garage-harness: node {index} {why}")
            .map_err(|e| HarnessError::io(format!("writing {}", log_path.display()), e))?;
        let log_err = log.try_clone().map_err(open_error)?;
        let mut command = Command::new(&self.binary);
        command
            .arg("-c")
            .arg(node.config())
            .arg("server")
            .env("RUST_LOG", "garage=info")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err);
        let child = spawn_tied_to_process(command).map_err(|e| {
            HarnessError::io(
                format!("starting {} for node {index}", self.binary.display()),
                e,
            )
        })?;
        node.child = Some(child);
        Ok(())
    }

    /// Waits until node `index` listens on its three ports.
    fn wait_listening(&mut self, index: usize) -> Result<(), HarnessError> {
        let start = Instant::now();
        let node = &self.nodes[index];
        let ports = [node.rpc_port, node.s3_port, node.admin_port];
        loop {
            self.check_alive(index, "while starting")?;
            let closed = ports.iter().find(|&&port| {
                TcpStream::connect_timeout(&Node::addr(port), HTTP_TIMEOUT).is_err()
            });
            let Some(closed) = closed else {
                return Ok(());
            };
            if start.elapsed() > START_TIMEOUT {
                return Err(self.timeout(
                    index,
                    format!("node {index} to listen on its ports {ports:?}"),
                    start,
                    format!("port {closed} refused connections"),
                ));
            }
            thread::sleep(POLL_INTERVAL);
        }
    }

    /// An error if node `index`'s process has ended.
    fn check_alive(&mut self, index: usize, when: &str) -> Result<(), HarnessError> {
        let node = &mut self.nodes[index];
        let Some(child) = node.child.as_mut() else {
            return Err(HarnessError::NotRunning(index));
        };
        let status = child
            .try_wait()
            .map_err(|e| HarnessError::io(format!("waiting for node {index}"), e))?;
        match status {
            None => Ok(()),
            Some(status) => {
                node.child = None;
                Err(HarnessError::NodeExited {
                    node: index,
                    status: describe_status(status),
                    when: when.to_owned(),
                    log_tail: log_tail(&node.log()),
                })
            }
        }
    }

    /// Waits until the running nodes agree on who is up: each sees exactly
    /// the running nodes up. When the running nodes can form a quorum, also
    /// until every partition has a quorum (all its nodes, when every node
    /// runs) and a signed S3 request lists the bucket on each running node
    /// (once the bucket exists). `log_node` is the node whose log a timeout
    /// shows.
    ///
    /// Garage 2.5 alone can take long to agree (see [`Self::nudge`]), so
    /// the nodes are nudged while they do not.
    fn wait_converged(&mut self, log_node: usize) -> Result<(), HarnessError> {
        let start = Instant::now();
        let running: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| self.nodes[i].child.is_some())
            .collect();
        let all_running = running.len() == self.nodes.len();
        let expected = u64::try_from(running.len()).unwrap_or(u64::MAX);
        // The write quorum of the consistent mode: 2 of 3, 1 of 1.
        let serving = running.len() > self.replication_factor / 2;
        let list = serving && self.bucket_ready;
        let mut last_nudge: Option<Instant> = None;
        loop {
            for &index in &running {
                self.check_alive(index, "while waiting for the cluster to converge")?;
            }
            let last = running.iter().find_map(|&index| {
                let problem = match self.cluster_health(index) {
                    Err(error) => Some(error.to_string()),
                    Ok(health) => {
                        let whole = health.storage_nodes_up == expected
                            && (!serving
                                || (health.partitions > 0
                                    && health.partitions_quorum == health.partitions))
                            && (!all_running
                                || (health.status == "healthy"
                                    && health.partitions_all_ok == health.partitions));
                        (!whole).then(|| format!("{health:?}"))
                    }
                };
                let problem = problem.or_else(|| {
                    list.then(|| self.list_bucket(index).err().map(|e| e.to_string()))
                        .flatten()
                });
                problem.map(|problem| format!("node {index}: {problem}"))
            });
            let Some(last) = last else {
                return Ok(());
            };
            if start.elapsed() > HEALTH_TIMEOUT {
                let what = if serving {
                    format!("the cluster to be healthy with {expected} node(s) up")
                } else {
                    format!("the {expected} running node(s) to see each other, and only them, up")
                };
                return Err(self.timeout(log_node, what, start, last));
            }
            if last_nudge.is_none_or(|at| at.elapsed() >= NUDGE_INTERVAL) {
                self.nudge(&running);
                last_nudge = Some(Instant::now());
            }
            thread::sleep(POLL_INTERVAL);
        }
    }

    /// Hastens what Garage 2.5 does slowly on its own:
    ///
    /// - A node notices that a peer died only when writing to it fails
    ///   (its connection's receive side sees the end of the stream, but
    ///   the connection is closed only when its send side fails): after a
    ///   SIGKILL that may wait for the next ping, up to 15 s, and an S3
    ///   request that picked the dead peer waits as long. Each running
    ///   node is asked (admin API `GetNodeInfo?node=ID`) for the killed
    ///   nodes' information, which makes it write to them; answers are not
    ///   awaited.
    /// - A node that failed to reconnect to a peer retries only 30 s
    ///   later, and a connection the peer opens does not count as up.
    ///   Each running node is asked (admin API `ConnectClusterNodes`, as
    ///   `garage node connect`) to connect to the other running ones.
    fn nudge(&self, running: &[usize]) {
        let bearer = format!("Bearer {}", self.admin_token);
        let headers = [("Authorization", bearer.as_str())];
        for &index in running {
            let addr = Node::addr(self.nodes[index].admin_port);
            let peers: Vec<String> = running
                .iter()
                .filter(|&&other| other != index && !self.nodes[other].id.is_empty())
                .map(|&other| self.peer_address(other))
                .collect();
            if !peers.is_empty() {
                let body = serde_json::Value::from(peers).to_string();
                let path = "/v2/ConnectClusterNodes";
                let _ = http::request(addr, "POST", path, &headers, &body, NUDGE_TIMEOUT);
            }
            for (killed, node) in self.nodes.iter().enumerate() {
                if node.child.is_none() && !node.id.is_empty() && killed != index {
                    let path = format!("/v2/GetNodeInfo?node={}", node.id);
                    let _ = http::request(addr, "GET", &path, &headers, "", NUDGE_TIMEOUT);
                }
            }
        }
    }

    /// The admin API's `GetClusterHealth`, asked of node `index`.
    ///
    /// # Errors
    ///
    /// [`HarnessError::NoSuchNode`]; [`HarnessError::Http`] when the node
    /// does not answer or answers something else.
    pub fn cluster_health(&self, index: usize) -> Result<ClusterHealth, HarnessError> {
        let node = self.node(index)?;
        let what = format!(
            "GetClusterHealth of node {index} (admin API 127.0.0.1:{})",
            node.admin_port
        );
        let bearer = format!("Bearer {}", self.admin_token);
        let body = self.get(
            &what,
            node.admin_port,
            "/v2/GetClusterHealth",
            &[("Authorization", &bearer)],
        )?;
        let json: serde_json::Value =
            serde_json::from_str(&body).map_err(|e| HarnessError::Http {
                what: what.clone(),
                detail: format!("not JSON ({e}): {body}"),
            })?;
        let number = |field: &str| {
            json.get(field)
                .and_then(serde_json::Value::as_u64)
                .ok_or_else(|| HarnessError::Http {
                    what: what.clone(),
                    detail: format!("no number {field} in {body}"),
                })
        };
        Ok(ClusterHealth {
            status: json
                .get("status")
                .and_then(serde_json::Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            connected_nodes: number("connectedNodes")?,
            storage_nodes: number("storageNodes")?,
            storage_nodes_up: number("storageNodesUp")?,
            partitions: number("partitions")?,
            partitions_quorum: number("partitionsQuorum")?,
            partitions_all_ok: number("partitionsAllOk")?,
        })
    }

    /// Lists at most one object of the bucket through node `index`'s S3
    /// API, with a request signed with the key.
    fn list_bucket(&self, index: usize) -> Result<(), HarnessError> {
        let node = self.node(index)?;
        let host = format!("127.0.0.1:{}", node.s3_port);
        let path = format!("/{BUCKET}");
        let query = "list-type=2&max-keys=1";
        let credentials = Credentials {
            access_key_id: &self.access_key_id,
            secret_access_key: &self.secret_access_key,
            region: REGION,
        };
        let signed = http::sign_s3(&credentials, "GET", &host, &path, query, SystemTime::now());
        let headers: Vec<(&str, &str)> = signed
            .iter()
            .map(|(name, value)| (*name, value.as_str()))
            .collect();
        let what = format!("S3 ListObjectsV2 of bucket {BUCKET} on node {index} (http://{host})");
        self.get(&what, node.s3_port, &format!("{path}?{query}"), &headers)
            .map(drop)
    }

    /// GET on one of the node's ports; the body of a 200 answer.
    fn get(
        &self,
        what: &str,
        port: u16,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<String, HarnessError> {
        let answer = http::request(Node::addr(port), "GET", path, headers, "", HTTP_TIMEOUT)
            .map_err(|e| HarnessError::Http {
                what: what.to_owned(),
                detail: e.to_string(),
            })?;
        if answer.status == 200 {
            Ok(answer.body)
        } else {
            Err(HarnessError::Http {
                what: what.to_owned(),
                detail: format!("HTTP status {}: {}", answer.status, answer.body.trim()),
            })
        }
    }

    /// Node `index`'s Prometheus metrics (its admin API's `/metrics`), as
    /// text.
    ///
    /// # Errors
    ///
    /// [`HarnessError::NoSuchNode`], [`HarnessError::NotRunning`],
    /// [`HarnessError::Http`].
    pub fn metrics(&self, index: usize) -> Result<String, HarnessError> {
        let node = self.node(index)?;
        if node.child.is_none() {
            return Err(HarnessError::NotRunning(index));
        }
        let what = format!(
            "metrics of node {index} (http://127.0.0.1:{}/metrics)",
            node.admin_port
        );
        let bearer = format!("Bearer {}", self.metrics_token);
        self.get(
            &what,
            node.admin_port,
            "/metrics",
            &[("Authorization", &bearer)],
        )
    }

    /// How many S3 requests of one kind the running nodes have served:
    /// the sum over them of the [`S3_REQUEST_COUNTER`] series with that
    /// `api_endpoint` label (`"GetObject"`, `"PutObject"`, `"UploadPart"`,
    /// `"HeadObject"`, `"ListObjectsV2"`, …). A killed node's count is
    /// lost with it (and a restarted node counts from zero). The harness's
    /// own readiness checks (start, kill, restart) count as
    /// `"ListObjectsV2"`, one per running node and check.
    ///
    /// # Errors
    ///
    /// [`HarnessError::Http`] when a running node's metrics cannot be read.
    pub fn request_count(&self, api_endpoint: &str) -> Result<u64, HarnessError> {
        let mut total = 0;
        for (index, node) in self.nodes.iter().enumerate() {
            if node.child.is_some() {
                total += counter_sum(
                    &self.metrics(index)?,
                    S3_REQUEST_COUNTER,
                    "api_endpoint",
                    api_endpoint,
                );
            }
        }
        Ok(total)
    }

    /// Kills node `index` (SIGKILL) and reaps it, then waits until every
    /// other running node sees it down (so that requests go to the others
    /// at once, rather than wait for Garage to notice). Its data stay.
    ///
    /// # Errors
    ///
    /// [`HarnessError::NoSuchNode`], [`HarnessError::NotRunning`] (already
    /// killed), [`HarnessError::Io`], and [`HarnessError::Timeout`] when
    /// the others do not see it down in time.
    pub fn kill(&mut self, index: usize) -> Result<(), HarnessError> {
        let node = self.node_mut(index)?;
        let mut child = node.child.take().ok_or(HarnessError::NotRunning(index))?;
        // An error means it has already exited: reaping is what is left.
        let _ = child.kill();
        child
            .wait()
            .map_err(|e| HarnessError::io(format!("waiting for killed node {index}"), e))?;
        match (0..self.nodes.len()).find(|&other| self.nodes[other].child.is_some()) {
            Some(survivor) => self.wait_converged(survivor),
            None => Ok(()),
        }
    }

    /// Starts node `index` again (killing it first if it runs) with the
    /// same configuration, ports and data, and waits until every running
    /// node sees it up and, when the running nodes make a quorum, the
    /// bucket is served again by each.
    ///
    /// # Errors
    ///
    /// [`HarnessError::NoSuchNode`], and as [`GarageCluster::start`].
    pub fn restart(&mut self, index: usize) -> Result<(), HarnessError> {
        if self.node(index)?.child.is_some() {
            self.kill(index)?;
        }
        self.spawn(index, "restarting")?;
        self.wait_listening(index)?;
        self.wait_converged(index)
    }

    /// Whether node `index` runs (it was not killed, or was restarted).
    #[must_use]
    pub fn is_running(&self, index: usize) -> bool {
        self.nodes
            .get(index)
            .is_some_and(|node| node.child.is_some())
    }

    /// The S3 endpoint of node 0, `http://127.0.0.1:PORT`.
    #[must_use]
    pub fn endpoint(&self) -> String {
        self.nodes
            .first()
            .map(|node| format!("http://127.0.0.1:{}", node.s3_port))
            .unwrap_or_default()
    }

    /// The S3 endpoint of node `index`, `http://127.0.0.1:PORT`.
    ///
    /// # Errors
    ///
    /// [`HarnessError::NoSuchNode`].
    pub fn s3_endpoint_of(&self, index: usize) -> Result<String, HarnessError> {
        Ok(format!("http://127.0.0.1:{}", self.node(index)?.s3_port))
    }

    /// The admin API endpoint of node `index`, `http://127.0.0.1:PORT`
    /// (`/metrics`, `/health`, `/v2/...` with [`GarageCluster::admin_token`]).
    ///
    /// # Errors
    ///
    /// [`HarnessError::NoSuchNode`].
    pub fn admin_endpoint_of(&self, index: usize) -> Result<String, HarnessError> {
        Ok(format!("http://127.0.0.1:{}", self.node(index)?.admin_port))
    }

    /// The bearer token of the admin API.
    #[must_use]
    pub fn admin_token(&self) -> &str {
        &self.admin_token
    }

    /// The bearer token of the `/metrics` endpoint.
    #[must_use]
    pub fn metrics_token(&self) -> &str {
        &self.metrics_token
    }

    /// The S3 region, [`REGION`].
    #[must_use]
    pub fn region(&self) -> &str {
        REGION
    }

    /// The access key id (`GK` and 24 hex digits).
    #[must_use]
    pub fn access_key_id(&self) -> &str {
        &self.access_key_id
    }

    /// The secret access key (64 hex digits).
    #[must_use]
    pub fn secret_access_key(&self) -> &str {
        &self.secret_access_key
    }

    /// The bucket, [`BUCKET`], which the key may read, write and own.
    #[must_use]
    pub fn bucket(&self) -> &str {
        BUCKET
    }

    /// How many nodes the cluster has (running or killed).
    #[must_use]
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// The replication factor (1 for one node, 3 for three or more).
    #[must_use]
    pub fn replication_factor(&self) -> usize {
        self.replication_factor
    }

    /// The directory the cluster was started in.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Node `index`'s log, `DIR/nodeN/garage.log`.
    ///
    /// # Errors
    ///
    /// [`HarnessError::NoSuchNode`].
    pub fn log_path(&self, index: usize) -> Result<PathBuf, HarnessError> {
        Ok(self.node(index)?.log())
    }

    /// Node `index`'s configuration, `DIR/nodeN/garage.toml`.
    ///
    /// # Errors
    ///
    /// [`HarnessError::NoSuchNode`].
    pub fn config_path(&self, index: usize) -> Result<PathBuf, HarnessError> {
        Ok(self.node(index)?.config())
    }

    /// Node `index`'s identifier (its public key, 64 hex digits).
    ///
    /// # Errors
    ///
    /// [`HarnessError::NoSuchNode`].
    pub fn node_id(&self, index: usize) -> Result<&str, HarnessError> {
        Ok(&self.node(index)?.id)
    }

    /// A `garage -c DIR/nodeN/garage.toml` command, to run any command of
    /// Garage's CLI against node `index` (add the arguments, then run it).
    ///
    /// # Errors
    ///
    /// [`HarnessError::NoSuchNode`].
    pub fn garage_command(&self, index: usize) -> Result<Command, HarnessError> {
        let mut command = Command::new(&self.binary);
        command
            .arg("-c")
            .arg(self.node(index)?.config())
            .env("RUST_LOG", "garage=warn");
        Ok(command)
    }

    /// The environment that makes rclone's remote `garage:` this cluster
    /// (through node 0), for `rclone copyto FILE garage:BUCKET/KEY` and the
    /// like.
    #[must_use]
    pub fn rclone_env(&self) -> RcloneEnv {
        RcloneEnv::new(
            &self.endpoint(),
            REGION,
            &self.access_key_id,
            &self.secret_access_key,
        )
    }

    /// An `rclone` command with [`GarageCluster::rclone_env`] applied.
    #[must_use]
    pub fn rclone(&self) -> Command {
        let mut command = Command::new("rclone");
        self.rclone_env().apply(&mut command);
        command
    }

    /// Runs `garage -c CONFIG ARGS` against node `index`; its standard
    /// output.
    fn cli(&self, index: usize, args: &[&str]) -> Result<String, HarnessError> {
        let shown =
            format!("garage {}", args.join(" ")).replace(&self.secret_access_key, "<secret>");
        let mut command = self.garage_command(index)?;
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let child = spawn_tied_to_process(command)
            .map_err(|e| HarnessError::io(format!("starting `{shown}`"), e))?;
        let pid = child.id();
        let (send, receive) = mpsc::channel();
        let waiter = thread::spawn(move || {
            let _ = send.send(child.wait_with_output());
        });
        let output = match receive.recv_timeout(CLI_TIMEOUT) {
            Ok(output) => output,
            Err(_) => {
                if let Ok(pid) = libc::pid_t::try_from(pid) {
                    // SAFETY: signalling our own child, not reaped yet (the
                    // waiter thread reaps it after this).
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
                let _ = waiter.join();
                return Err(self.command_error(
                    index,
                    &shown,
                    &format!("killed after {} s", CLI_TIMEOUT.as_secs()),
                    "",
                ));
            }
        };
        let _ = waiter.join();
        let output = output.map_err(|e| HarnessError::io(format!("running `{shown}`"), e))?;
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        if output.status.success() {
            return Ok(stdout);
        }
        let stderr = String::from_utf8_lossy(&output.stderr);
        let said = if stderr.trim().is_empty() {
            stdout.trim()
        } else {
            stderr.trim()
        };
        Err(self.command_error(index, &shown, &describe_status(output.status), said))
    }

    fn command_error(&self, index: usize, command: &str, status: &str, said: &str) -> HarnessError {
        HarnessError::Command {
            command: command.to_owned(),
            status: status.to_owned(),
            stderr: said.to_owned(),
            node: index,
            log_tail: self
                .nodes
                .get(index)
                .map(|n| log_tail(&n.log()))
                .unwrap_or_default(),
        }
    }

    fn timeout(&self, index: usize, what: String, start: Instant, last: String) -> HarnessError {
        HarnessError::Timeout {
            what,
            waited: start.elapsed(),
            last,
            node: index,
            log_tail: self
                .nodes
                .get(index)
                .map(|n| log_tail(&n.log()))
                .unwrap_or_default(),
        }
    }

    fn node(&self, index: usize) -> Result<&Node, HarnessError> {
        let count = self.nodes.len();
        self.nodes
            .get(index)
            .ok_or(HarnessError::NoSuchNode { index, count })
    }

    fn node_mut(&mut self, index: usize) -> Result<&mut Node, HarnessError> {
        let count = self.nodes.len();
        self.nodes
            .get_mut(index)
            .ok_or(HarnessError::NoSuchNode { index, count })
    }
}

impl Drop for GarageCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// Three distinct ports free on 127.0.0.1 right now.
fn free_ports() -> Result<[u16; 3], HarnessError> {
    let bind = || {
        TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|listener| Ok((listener.local_addr()?.port(), listener)))
            .map_err(|e| HarnessError::io("finding a free port on 127.0.0.1", e))
    };
    // All three bound at once, so they differ.
    let (a, _a) = bind()?;
    let (b, _b) = bind()?;
    let (c, _c) = bind()?;
    Ok([a, b, c])
}

/// `bytes` random bytes from the kernel, in hex.
fn random_hex(bytes: usize) -> Result<String, HarnessError> {
    let mut buf = vec![0; bytes];
    File::open("/dev/urandom")
        .and_then(|mut file| file.read_exact(&mut buf))
        .map_err(|e| HarnessError::io("reading /dev/urandom", e))?;
    Ok(http::hex(&buf))
}

/// A TOML basic string.
fn toml_string(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn describe_status(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        _ => status.to_string(),
    }
}

/// The last [`LOG_TAIL_LINES`] lines of a log (its last 64 KiB at most).
pub(crate) fn log_tail(path: &Path) -> String {
    const MAX: u64 = 64 * 1024;
    let read = || -> std::io::Result<String> {
        let mut file = File::open(path)?;
        let len = file.metadata()?.len();
        file.seek(SeekFrom::Start(len.saturating_sub(MAX)))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    };
    match read() {
        Ok(text) => {
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
        }
        Err(error) => format!("(no log at {}: {error})", path.display()),
    }
}

/// The sum of the Prometheus series of `metric` whose label `label` is
/// `value`, in the text exposition format.
pub(crate) fn counter_sum(text: &str, metric: &str, label: &str, value: &str) -> u64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let rest = line.strip_prefix(metric)?;
            let rest = rest.strip_prefix("_total").unwrap_or(rest);
            let rest = rest.strip_prefix('{')?;
            let (labels, sample) = rest.split_once('}')?;
            let matches = labels.split(',').any(|pair| {
                pair.trim().split_once('=').is_some_and(|(name, quoted)| {
                    name == label && quoted.trim_matches('"') == value
                })
            });
            if !matches {
                return None;
            }
            let number = sample.split_whitespace().next()?;
            number.parse::<u64>().ok().or_else(|| {
                let float = number.parse::<f64>().ok()?;
                // Counters are whole and far below 2^53.
                (float.is_finite() && float >= 0.0).then(|| float.round() as u64)
            })
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_sums_one_endpoint() {
        let text = "# HELP api_s3_request_counter Number of API calls\n\
                    # TYPE api_s3_request_counter counter\n\
                    api_s3_request_counter{api_endpoint=\"GetObject\"} 3\n\
                    api_s3_request_counter{api_endpoint=\"GetObjectAcl\"} 100\n\
                    api_s3_request_counter{api_endpoint=\"PutObject\",other=\"x\"} 2\n\
                    api_s3_request_counter{other=\"x\",api_endpoint=\"GetObject\"} 4e0\n\
                    api_s3_error_counter{api_endpoint=\"GetObject\",status_code=\"404\"} 7\n";
        assert_eq!(
            counter_sum(text, S3_REQUEST_COUNTER, "api_endpoint", "GetObject"),
            7
        );
        assert_eq!(
            counter_sum(text, S3_REQUEST_COUNTER, "api_endpoint", "PutObject"),
            2
        );
        assert_eq!(
            counter_sum(text, S3_REQUEST_COUNTER, "api_endpoint", "UploadPart"),
            0
        );
    }

    #[test]
    fn toml_strings_are_escaped() {
        assert_eq!(toml_string("/tmp/a\"b\\c"), "\"/tmp/a\\\"b\\\\c\"");
    }

    #[test]
    fn free_ports_differ() {
        let [a, b, c] = free_ports().unwrap();
        assert!(a != b && b != c && a != c);
    }

    #[test]
    fn random_hex_has_the_length_asked() {
        let hex = random_hex(12).unwrap();
        assert_eq!(hex.len(), 24);
        assert!(hex.bytes().all(|b| b.is_ascii_hexdigit()));
    }
}
