//! How remote hosts are reached: the ssh client, its options and the agent.

use std::path::PathBuf;

use blockdiff_run::RemoteOptions;
use command_runner::SshOptions;

/// How remote hosts are reached: flattened into the tools that read or
/// write on another host over ssh.
#[derive(Debug, Clone, Default, PartialEq, Eq, clap::Args)]
#[command(next_help_heading = "Remote hosts")]
pub struct RemoteArgs {
    /// An ssh option for remote hosts, as ssh -o takes it (Port=2222,
    /// IdentityFile=/root/.ssh/backup); repeatable
    #[arg(long = "ssh-option", value_name = "OPTION")]
    pub ssh_options: Vec<String>,

    /// The ssh client to use
    #[arg(long, value_name = "PROGRAM", default_value = "ssh")]
    pub ssh: PathBuf,

    /// The agent to copy to remote hosts [default: $BLOCKDIFF_AGENT, else
    /// blockdiff-agent beside this program]; build a static one with
    /// scripts/build-agent.sh
    #[arg(long, value_name = "PATH")]
    pub agent: Option<PathBuf>,
}

impl RemoteArgs {
    /// The options these arguments ask for.
    pub fn to_options(&self) -> RemoteOptions {
        RemoteOptions {
            ssh: SshOptions {
                program: self.ssh.clone(),
                options: self.ssh_options.clone(),
                ..SshOptions::default()
            },
            agent: self.agent.clone(),
        }
    }
}
