use std::path::PathBuf;

use blockdiff_storage::StorageOptions;
use clap::Args;

/// The `--help` heading of these options.
const HEADING: &str = "Object storage (for NAME = s3://BUCKET/PREFIX/NAME)";

/// How an `s3://` chain is reached. Credentials are never options: they
/// come from `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY` (and
/// `AWS_SESSION_TOKEN`), else from the profile of `~/.aws/credentials`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Args)]
pub struct StorageArgs {
    /// S3 endpoint, such as http://127.0.0.1:3900 (default: $AWS_ENDPOINT_URL, else AWS)
    ///
    /// The S3 API endpoint of the object store: http://HOST:PORT for a
    /// self-hosted one (Garage, Ceph RGW, MinIO), with path-style requests.
    /// Default: $AWS_ENDPOINT_URL, else Amazon S3 itself.
    #[arg(long, value_name = "URL", help_heading = HEADING)]
    pub endpoint: Option<String>,

    /// S3 region (default: $AWS_REGION, the profile's region, else us-east-1)
    #[arg(long, value_name = "REGION", help_heading = HEADING)]
    pub region: Option<String>,

    /// Profile of ~/.aws/credentials to use (default: $AWS_PROFILE, else default)
    ///
    /// The profile of ~/.aws/credentials (or $AWS_SHARED_CREDENTIALS_FILE)
    /// whose keys are used when $AWS_ACCESS_KEY_ID is not set.
    #[arg(long, value_name = "NAME", help_heading = HEADING)]
    pub profile: Option<String>,

    /// Where digests of s3:// chains are cached (default ~/.cache/blockdiff)
    ///
    /// An incremental backup reads the previous generation's digest from
    /// this local cache instead of downloading it; a copy that is missing
    /// or not the one the store committed is fetched again. Default:
    /// $XDG_CACHE_HOME/blockdiff, else ~/.cache/blockdiff.
    #[arg(long, value_name = "DIR", help_heading = HEADING)]
    pub cache_dir: Option<PathBuf>,

    /// Give up on a request that makes no progress for SECONDS (default 60)
    ///
    /// A request to the object store (or one step of an upload or a
    /// download) that makes no progress for SECONDS is abandoned and
    /// retried, four times, before the run fails: a server that stops
    /// answering fails the run (exit 1, nothing committed) instead of
    /// hanging it.
    #[arg(long, value_name = "SECONDS", help_heading = HEADING,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout: Option<u64>,
}

impl StorageArgs {
    /// The library's options.
    pub fn to_options(&self) -> StorageOptions {
        StorageOptions {
            endpoint: self.endpoint.clone(),
            region: self.region.clone(),
            profile: self.profile.clone(),
            cache_dir: self.cache_dir.clone(),
            timeout_secs: self.timeout,
        }
    }
}
