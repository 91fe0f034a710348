//! `blockdiff-key`: makes the key file of an encrypted chain.

use std::path::PathBuf;
use std::process::ExitCode;

use blockdiff_core::{ChainKey, write_key_file};
use blockdiff_tools::run_main;
use clap::{Parser, Subcommand};

const EXAMPLES: &str = "\
Examples:
  blockdiff-key new /etc/blockdiff/db.key
  blockdiff-backup --encrypt --key-file /etc/blockdiff/db.key /var/backup/db /dev/vg0/db
  blockdiff-restore --key-file /etc/blockdiff/db.key --from /var/backup/db db.img

The key file holds one random 256-bit key, as text:

  blockdiff-key-v1:<64 hexadecimal digits>

It is created with mode 0600 and never overwritten; every tool refuses a
key file that its group or others can read, as ssh refuses such a private
key. Whoever holds it can read every backup made with it; without it no one
can, and nothing can recover the backups. Keep a copy apart from the
backups (printed on paper, or on an offline medium), and do not keep the
only copy on the backup host or in the bucket.

A passphrase works too (--passphrase-file FILE or $BLOCKDIFF_PASSPHRASE on
every tool); it is stretched with Argon2id and needs no key file.

Exit status: 0 success, 1 failure (FILE exists, or cannot be written),
2 usage error.";

/// Make and manage the keys of encrypted chains.
#[derive(Debug, Parser)]
#[command(name = "blockdiff-key", version, after_help = EXAMPLES)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Write a new random key to FILE (mode 0600; an existing FILE is
    /// never overwritten)
    New {
        /// The key file to create
        file: PathBuf,
    },
}

fn run(args: Args) -> anyhow::Result<()> {
    match args.command {
        Command::New { file } => {
            let key = ChainKey::generate()?;
            write_key_file(&file, &key)?;
            blockdiff_tools::errln!(
                "blockdiff-key: wrote a new key to {}; keep a copy apart from the backups: without it they cannot be read",
                file.display()
            );
            Ok(())
        }
    }
}

fn main() -> ExitCode {
    run_main("blockdiff-key", run)
}
