use std::path::PathBuf;

use anyhow::Context;
use blockdiff_core::{ChainEncryption, KeySecret, read_key_file, read_passphrase_file};
use clap::Args;

use crate::UsageError;

/// The `--help` heading of these options.
const HEADING: &str = "Encryption (of a chain made with --encrypt)";

/// The environment variable that may hold a chain's passphrase.
pub const PASSPHRASE_ENV: &str = "BLOCKDIFF_PASSPHRASE";

/// The key of an encrypted chain: a key file, a passphrase file, or the
/// passphrase in `$BLOCKDIFF_PASSPHRASE`. Never a key or passphrase on
/// the command line, where `ps` would show it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Args)]
pub struct KeyArgs {
    /// The chain's key file (made by `blockdiff-key new FILE`, mode 0600)
    ///
    /// The 256-bit key of an encrypted chain. A key file that its group or
    /// others can read is refused. Without the key (or the passphrase) an
    /// encrypted chain cannot be read by anyone: keep a copy of it apart
    /// from the backups.
    #[arg(long, value_name = "FILE", help_heading = HEADING, conflicts_with = "passphrase_file")]
    pub key_file: Option<PathBuf>,

    /// A file whose first line is the chain's passphrase (mode 0600)
    ///
    /// The passphrase is stretched with Argon2id (64 MiB, 3 passes; the
    /// cost and salt are recorded in the chain). Instead of a file, the
    /// passphrase may be in $BLOCKDIFF_PASSPHRASE; --key-file and
    /// --passphrase-file take precedence over it. Given a key, a reader
    /// refuses a plain chain (a plain file in an encrypted chain's place
    /// looks just like one): unset $BLOCKDIFF_PASSPHRASE to read plain
    /// chains.
    #[arg(long, value_name = "FILE", help_heading = HEADING)]
    pub passphrase_file: Option<PathBuf>,
}

impl KeyArgs {
    /// Whether a key file or passphrase file was given (the environment
    /// aside).
    pub fn given(&self) -> bool {
        self.key_file.is_some() || self.passphrase_file.is_some()
    }

    /// The chain's encryption from the options, else from
    /// `$BLOCKDIFF_PASSPHRASE`; `None` when none is given. A key or
    /// passphrase file that cannot be read, or that others can read, is
    /// an error.
    pub fn encryption(&self) -> anyhow::Result<Option<ChainEncryption>> {
        let secret = if let Some(path) = &self.key_file {
            KeySecret::Key(read_key_file(path).context("cannot use the key file")?)
        } else if let Some(path) = &self.passphrase_file {
            KeySecret::Passphrase(
                read_passphrase_file(path).context("cannot use the passphrase file")?,
            )
        } else {
            match std::env::var_os(PASSPHRASE_ENV).filter(|v| !v.is_empty()) {
                Some(p) => KeySecret::Passphrase(p.into_encoded_bytes().into()),
                None => return Ok(None),
            }
        };
        Ok(Some(ChainEncryption::new(secret)))
    }

    /// The encryption of a backup: with `--encrypt`, the key the options
    /// give (one is needed); without, none, and a key option is a usage
    /// error (`$BLOCKDIFF_PASSPHRASE` alone never encrypts a backup).
    pub fn for_backup(&self, encrypt: bool) -> anyhow::Result<Option<ChainEncryption>> {
        if !encrypt {
            if self.given() {
                return Err(UsageError(
                    "--key-file and --passphrase-file are for an encrypted chain: add --encrypt"
                        .into(),
                )
                .into());
            }
            return Ok(None);
        }
        match self.encryption()? {
            Some(e) => Ok(Some(e)),
            None => Err(UsageError(format!(
                "--encrypt needs the chain's key: --key-file FILE (blockdiff-key new FILE makes one), --passphrase-file FILE, or ${PASSPHRASE_ENV}"
            ))
            .into()),
        }
    }
}
