//! The harness's error type.

use std::path::PathBuf;
use std::time::Duration;

/// Why a Garage node or cluster could not be started, reached or measured.
///
/// Errors about one node carry the last lines of its log
/// (`DIR/nodeN/garage.log`), so that a failing test shows what Garage said.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    /// No Garage binary was found.
    #[error(
        "no garage binary found (looked for {}); run scripts/garage-setup.sh \
         (it builds Garage 2.5.0 once and prints the binary's path) and set \
         BLOCKDIFF_GARAGE to that path",
        tried.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
    )]
    BinaryNotFound {
        /// Every place looked at, in order.
        tried: Vec<PathBuf>,
    },

    /// A file or socket operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done, naming the file or address.
        what: String,
        /// The underlying error.
        source: std::io::Error,
    },

    /// A node's process ended on its own.
    #[error("garage node {node} exited ({status}) {when}; last lines of its log:\n{log_tail}")]
    NodeExited {
        /// The node's index.
        node: usize,
        /// How it ended.
        status: String,
        /// When it was noticed (`while starting`, …).
        when: String,
        /// The last lines of the node's log.
        log_tail: String,
    },

    /// Something awaited did not happen in time.
    #[error(
        "timed out after {:.1} s waiting for {what} (last seen: {last}); last lines of node {node}'s log:\n{log_tail}",
        waited.as_secs_f64()
    )]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long it was awaited.
        waited: Duration,
        /// The last observation (an error, a status), to tell why.
        last: String,
        /// The node whose log is shown.
        node: usize,
        /// The last lines of that node's log.
        log_tail: String,
    },

    /// A `garage` command-line invocation failed.
    #[error(
        "`{command}` failed ({status}): {stderr}\nlast lines of node {node}'s log:\n{log_tail}"
    )]
    Command {
        /// The command as typed.
        command: String,
        /// How it ended.
        status: String,
        /// Its standard error (or output, when that is empty).
        stderr: String,
        /// The node it talked to.
        node: usize,
        /// The last lines of that node's log.
        log_tail: String,
    },

    /// An HTTP answer (admin API, metrics, S3) was not the expected one.
    #[error("{what}: {detail}")]
    Http {
        /// The request, naming the address.
        what: String,
        /// What was wrong with the answer.
        detail: String,
    },

    /// There is no node with that index.
    #[error("no garage node {index}: the cluster has {count} node(s)")]
    NoSuchNode {
        /// The index asked for.
        index: usize,
        /// How many nodes the cluster has.
        count: usize,
    },

    /// The node is not running (it was killed), so it cannot do that.
    #[error("garage node {0} is not running (it was killed; restart it first)")]
    NotRunning(usize),

    /// A cluster must have at least one node.
    #[error("a garage cluster needs at least one node")]
    NoNodes,
}

impl HarnessError {
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            what: what.into(),
            source,
        }
    }
}
