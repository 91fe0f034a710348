//! Backing up a remote host over ssh with nothing installed there.
//!
//! The backup host connects once ([`SshRunner`](command_runner::SshRunner),
//! an ssh master that every step shares, behind the
//! [`CommandRunner`](command_runner::CommandRunner) seam), makes sure its
//! static agent is on the host ([`AgentBinary::install`]: copied, checked by
//! SHA-256, reused), and runs `blockdiff-agent serve` there
//! ([`RemoteBackup`]). The agent reads its [`AgentRequest`] and the
//! previous digest from its stdin, reads the volume (snapshot and
//! quiescers included), compresses on the remote side and streams back the
//! diff and the new digest as packets ([`protocol`]), then its
//! [`AgentReport`] ([`serve_agent`]). The backup host writes the packets
//! into the new generation and commits it only after the agent's end
//! packet.
//!
//! A restore goes the other way over the same connection
//! ([`RemoteRestore`]): the agent compares its target with generation K's
//! digest, asks for the ranges that differ, and writes the blocks the
//! backup host sends once each matches the digest.

mod agent;
mod agent_binary;
pub mod protocol;
mod request;
mod restore_agent;
mod restore_request;
mod restore_session;
mod session;

pub use agent::serve_agent;
pub use agent_binary::{AGENT_NAME, AgentBinary, InstalledAgent};
pub use request::{
    AgentInput, AgentReport, AgentRequest, AgentSource, PROTOCOL_VERSION, ProtocolError,
    receive_digest,
};
pub use restore_agent::RESTORE_AGENT_STEPS;
pub use restore_request::{
    BLOCKS_PER_PACKET, RANGES_PER_PACKET, RestoreAgentReport, RestoreMode, RestoreRequest,
    blocks_payload, needs_payloads, parse_blocks, parse_needs,
};
pub use restore_session::{RemoteRestore, RemoteRestoreOptions, RemoteRestoreReport, RemoteTarget};
pub use session::{RemoteBackup, RemoteSource, split_remote};
