//! Real Garage nodes for tests and benchmarks that need S3.
//!
//! [Garage](https://garagehq.deuxfleurs.fr) is an S3-compatible distributed
//! object store. This crate starts it for real, on loopback, from the binary
//! that scripts/garage-setup.sh builds ([`Garage::binary`]):
//!
//! - [`GarageCluster::start_single`]: one node, `replication_factor = 1`;
//! - [`GarageCluster::start`]: several nodes (three usually), one zone each
//!   (`dc1`, `dc2`, `dc3`), `replication_factor = 3`, consistency mode
//!   `consistent`, connected, with the layout applied.
//!
//! Either way every node uses the sqlite metadata engine and free ports,
//! logs to `DIR/nodeN/garage.log`, and the cluster has one access key
//! ([`GarageCluster::access_key_id`], [`GarageCluster::secret_access_key`])
//! and one bucket ([`GarageCluster::bucket`]) that the key may read, write
//! and own. A start returns once every node sees all the others up and a
//! signed S3 request lists the bucket on each node: no fixed sleeps, only
//! bounded polls whose timeouts show the node's log.
//!
//! A test then talks S3 to [`GarageCluster::endpoint`] (region
//! [`GarageCluster::region`]), or runs rclone with
//! [`GarageCluster::rclone_env`] (remote `garage:`); it counts requests per
//! S3 operation from the nodes' Prometheus metrics
//! ([`GarageCluster::request_count`]), and kills and restarts nodes
//! ([`GarageCluster::kill`], [`GarageCluster::restart`]): each returns once
//! the running nodes agree on who is up (Garage alone may take 15 s to see
//! a killed peer, 30 s to reconnect to a restarted one, so the harness
//! nudges them through the admin API meanwhile).
//!
//! Nodes die with the test process (`PR_SET_PDEATHSIG`), even when it
//! panics or is killed, and when the [`GarageCluster`] is dropped.
//!
//! ```no_run
//! # fn main() -> Result<(), garage_harness::HarnessError> {
//! let dir = tempfile::tempdir().unwrap();
//! let cluster = garage_harness::GarageCluster::start(dir.path(), 3)?;
//! let status = cluster
//!     .rclone()
//!     .args(["copyto", "/etc/hostname", &format!("garage:{}/hostname", cluster.bucket())])
//!     .status()
//!     .unwrap();
//! assert!(status.success());
//! assert_eq!(cluster.request_count("PutObject")?, 1);
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]

mod binary;
mod cluster;
mod error;
mod http;
mod rclone;
mod spawn;

pub use binary::{GARAGE_VERSION, Garage};
pub use cluster::{BUCKET, ClusterHealth, GarageCluster, REGION, S3_REQUEST_COUNTER};
pub use error::HarnessError;
pub use rclone::{RCLONE_REMOTE, RcloneEnv};
