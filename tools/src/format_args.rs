use blockdiff_core::{DiffFormat, HashAlgorithm};
use blockdiff_run::{FormatChoice, FormatKind};
use clap::{Args, ValueEnum};

use crate::UsageError;

/// The diff formats, as named on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FormatName {
    /// Checked, zstd-compressed, indexed (the default for new chains)
    V2,
    /// The original blockdiff's stream and .md5 digest
    Legacy,
}

/// The options that choose how a diff is written, shared by the tools that
/// write one.
#[derive(Debug, Clone, Args)]
pub struct FormatArgs {
    /// Diff format [default: v2 for a new chain; an existing chain keeps its
    /// own]
    #[arg(long, value_enum)]
    pub format: Option<FormatName>,

    /// zstd level of a v2 diff (1 fastest to 19; 0 stores blocks
    /// uncompressed) [default: 1]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(i32).range(0..=19))]
    pub zstd_level: Option<i32>,

    /// Compress a legacy diff with gzip (as the original's -z)
    #[arg(short = 'z', long)]
    pub gzip: bool,

    /// Block hash of a new chain: blake3 (fast) or md5 (the only one legacy
    /// digests hold) [default: blake3 for v2]
    #[arg(long, value_name = "ALGORITHM", value_parser = parse_hash)]
    pub hash: Option<HashAlgorithm>,
}

fn parse_hash(s: &str) -> Result<HashAlgorithm, String> {
    s.parse()
}

impl FormatArgs {
    /// The choice these arguments make.
    pub fn to_choice(&self) -> FormatChoice {
        FormatChoice {
            format: self.format.map(|f| match f {
                FormatName::V2 => FormatKind::V2,
                FormatName::Legacy => FormatKind::Legacy,
            }),
            zstd_level: self.zstd_level,
            gzip: self.gzip,
            hash: self.hash,
        }
    }

    /// The format asked for, if any (`None`: follow the chain), checked for
    /// options that do not go together ([`FormatChoice::requested`]).
    pub fn requested(&self) -> Result<Option<DiffFormat>, UsageError> {
        self.to_choice()
            .requested()
            .map_err(|e| UsageError(e.to_string()))
    }

    /// The hash for a new chain ([`FormatChoice::hash_for`]).
    pub fn hash_for(&self, format: Option<DiffFormat>) -> HashAlgorithm {
        self.to_choice().hash_for(format)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use blockdiff_core::{Compression, FrameCompression};
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        f: FormatArgs,
    }

    fn req(args: &[&str]) -> Result<Option<DiffFormat>, String> {
        let t = T::try_parse_from(std::iter::once("t").chain(args.iter().copied()))
            .map_err(|e| e.to_string())?;
        t.f.requested().map_err(|e| e.0)
    }

    #[test]
    fn formats_from_options() {
        assert_eq!(req(&[]).unwrap(), None);
        assert_eq!(
            req(&["-z"]).unwrap(),
            Some(DiffFormat::Legacy(Compression::Gzip))
        );
        assert_eq!(
            req(&["--format", "legacy"]).unwrap(),
            Some(DiffFormat::Legacy(Compression::None))
        );
        assert_eq!(
            req(&["--format", "v2"]).unwrap(),
            Some(DiffFormat::default())
        );
        assert_eq!(
            req(&["--zstd-level", "0"]).unwrap(),
            Some(DiffFormat::V2 {
                compression: FrameCompression::None,
                level: 0
            })
        );
        assert!(req(&["--format", "v2", "-z"]).is_err());
        assert!(req(&["--format", "legacy", "--zstd-level", "3"]).is_err());
        assert!(req(&["--format", "legacy", "--hash", "blake3"]).is_err());
        assert!(req(&["--zstd-level", "20"]).is_err());
    }
}
