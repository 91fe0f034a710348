//! An [nbdkit](https://gitlab.com/nbdkit/nbdkit) plugin that serves any
//! generation of a blockdiff chain, read-only, over NBD: what
//! `blockdiff-nbd` runs (`nbdkit --readonly libblockdiff_nbdkit.so
//! chain=NAME generation=K …`).
//!
//! Why nbdkit: it is Debian's well-kept NBD server (the fixed newstyle
//! handshake, `NBD_OPT_GO` and `NBD_OPT_INFO`, structured replies, TCP,
//! Unix sockets and TLS, `--run` for scripts), used by libguestfs and
//! virt-v2v, so blockdiff implements only what is its own: the bytes. The
//! small NBD crates of crates.io do not negotiate `NBD_OPT_GO`, which
//! qemu and the kernel's client use.
//!
//! Each read goes through a [`GenerationReader`]: every block is checked
//! against the generation's digest, and a damaged one is an `EIO` reply
//! to exactly the requests that touch it, with the file and offset in
//! nbdkit's log.
//!
//! Parameters ([`PARAMETERS`]): `chain=NAME` (a path prefix or
//! `s3://BUCKET/PREFIX/NAME`), `generation=K` (default the last),
//! `key-file=FILE` or `passphrase-file=FILE` (or `BLOCKDIFF_PASSPHRASE`
//! in the environment), `cache-size=BYTES`, and for an object store
//! `endpoint=`, `region=`, `profile=`, `cache-dir=`.
#![deny(missing_docs)]

use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use blockdiff_core::{
    ChainEncryption, GenerationReader, KeySecret, ReaderOptions, read_key_file,
    read_passphrase_file,
};
use blockdiff_storage::{ChainLocation, StorageOptions};
use nbdkit::{Error, Result, Server, ThreadModel};

/// The plugin's name, as nbdkit shows it.
pub const PLUGIN_NAME: &str = "blockdiff";

/// The parameters the plugin takes (`KEY=VALUE` after its path).
pub const PARAMETERS: [&str; 10] = [
    "chain",
    "generation",
    "key-file",
    "passphrase-file",
    "cache-size",
    "endpoint",
    "region",
    "profile",
    "cache-dir",
    "timeout",
];

/// The environment variable of a passphrase, as the tools read it.
const PASSPHRASE_ENV: &str = "BLOCKDIFF_PASSPHRASE";

/// What the parameters said.
#[derive(Debug, Default)]
struct Config {
    chain: Option<PathBuf>,
    generation: Option<u64>,
    key_file: Option<PathBuf>,
    passphrase_file: Option<PathBuf>,
    cache_bytes: Option<usize>,
    storage: StorageOptions,
}

static CONFIG: Mutex<Option<Config>> = Mutex::new(None);
static READER: OnceLock<Arc<GenerationReader>> = OnceLock::new();

fn invalid(detail: impl Into<String>) -> Error {
    Error::new(libc::EINVAL, detail.into())
}

/// One connection: the generation's reader, shared.
struct Connection {
    reader: Arc<GenerationReader>,
}

impl Connection {
    fn config(key: &str, value: &str) -> Result<()> {
        let mut guard = CONFIG.lock().unwrap_or_else(PoisonError::into_inner);
        let config = guard.get_or_insert_with(Config::default);
        let number = |what: &str| {
            value
                .parse::<u64>()
                .map_err(|_| invalid(format!("{what}={value:?} is not a whole number")))
        };
        match key {
            "chain" => config.chain = Some(PathBuf::from(value)),
            "generation" => config.generation = Some(number("generation")?),
            "key-file" => config.key_file = Some(PathBuf::from(value)),
            "passphrase-file" => config.passphrase_file = Some(PathBuf::from(value)),
            "cache-size" => {
                config.cache_bytes =
                    Some(usize::try_from(number("cache-size")?).unwrap_or(usize::MAX));
            }
            "endpoint" => config.storage.endpoint = Some(value.to_owned()),
            "region" => config.storage.region = Some(value.to_owned()),
            "profile" => config.storage.profile = Some(value.to_owned()),
            "cache-dir" => config.storage.cache_dir = Some(PathBuf::from(value)),
            "timeout" => config.storage.timeout_secs = Some(number("timeout")?),
            _ => {
                return Err(invalid(format!(
                    "unknown parameter {key:?}; the plugin takes {}",
                    PARAMETERS.join(", ")
                )));
            }
        }
        Ok(())
    }

    fn config_complete() -> Result<()> {
        let guard = CONFIG.lock().unwrap_or_else(PoisonError::into_inner);
        match guard.as_ref() {
            Some(c) if c.chain.is_some() => {
                if c.key_file.is_some() && c.passphrase_file.is_some() {
                    return Err(invalid("give key-file or passphrase-file, not both"));
                }
                Ok(())
            }
            _ => Err(invalid("chain=NAME is missing: the chain to serve")),
        }
    }

    /// Whether the chain is on an object store (`s3://…`).
    fn on_object_store() -> bool {
        let guard = CONFIG.lock().unwrap_or_else(PoisonError::into_inner);
        guard
            .as_ref()
            .and_then(|c| c.chain.as_deref())
            .is_some_and(ChainLocation::is_object_name)
    }

    /// Opens the chain and builds the generation's map.
    fn open_chain() -> Result<GenerationReader> {
        let guard = CONFIG.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(config) = guard.as_ref() else {
            return Err(invalid("not configured"));
        };
        let Some(chain) = &config.chain else {
            return Err(invalid("chain=NAME is missing"));
        };
        let fail = |e: &dyn std::fmt::Display| Error::new(libc::EIO, e.to_string());
        let secret = if let Some(path) = &config.key_file {
            Some(KeySecret::Key(read_key_file(path).map_err(|e| fail(&e))?))
        } else if let Some(path) = &config.passphrase_file {
            Some(KeySecret::Passphrase(
                read_passphrase_file(path).map_err(|e| fail(&e))?,
            ))
        } else {
            std::env::var_os(PASSPHRASE_ENV)
                .filter(|v| !v.is_empty())
                .map(|p| KeySecret::Passphrase(p.into_encoded_bytes().into()))
        };
        let location = ChainLocation::open(chain, &config.storage)
            .map_err(|e| fail(&e))?
            .with_encryption(secret.map(ChainEncryption::new));
        let mut options = ReaderOptions {
            generation: config.generation,
            ..ReaderOptions::default()
        };
        if let Some(bytes) = config.cache_bytes {
            options.cache_bytes = bytes;
        }
        GenerationReader::open(location.source(), &options).map_err(|e| fail(&e))
    }
}

impl Server for Connection {
    fn name() -> &'static str {
        PLUGIN_NAME
    }

    fn description() -> Option<&'static str> {
        Some("a generation of a blockdiff chain, read-only, each block checked against its digest")
    }

    fn config_help() -> Option<&'static str> {
        Some(
            "chain=NAME          the chain (a path prefix, or s3://BUCKET/PREFIX/NAME)\n\
             generation=K        the generation to serve (default: the last)\n\
             key-file=FILE       an encrypted chain's key file\n\
             passphrase-file=FILE  its passphrase (or BLOCKDIFF_PASSPHRASE)\n\
             cache-size=BYTES    decompressed frames kept (default 64 MiB)\n\
             endpoint=URL region=R profile=P cache-dir=DIR timeout=SECS  for s3:// chains",
        )
    }

    fn config(key: &str, value: &str) -> Result<()> {
        Connection::config(key, value)
    }

    fn config_complete() -> Result<()> {
        Connection::config_complete()
    }

    /// Before nbdkit forks (with `--run` the server is a child): a local
    /// chain is opened here, so that a missing chain, a wrong key or a
    /// damaged index stops nbdkit with the error and status 1 before
    /// anything is served.
    fn get_ready() -> Result<()> {
        if Connection::on_object_store() {
            return Ok(());
        }
        let reader = Connection::open_chain()?;
        let _ = READER.set(Arc::new(reader));
        Ok(())
    }

    /// After the fork: a chain on an object store is opened here, since
    /// its client runs threads and pools connections that a fork does not
    /// carry over (a connection opened before it would hang the server).
    fn after_fork() -> Result<()> {
        if READER.get().is_none() {
            let reader = Connection::open_chain()?;
            let _ = READER.set(Arc::new(reader));
        }
        Ok(())
    }

    fn thread_model() -> Result<ThreadModel> {
        // The reader is shared and safe from any thread.
        Ok(ThreadModel::Parallel)
    }

    fn open(_readonly: bool) -> Result<Box<dyn Server>> {
        let reader = READER
            .get()
            .ok_or_else(|| Error::new(libc::EIO, "the chain was not opened"))?;
        Ok(Box::new(Connection {
            reader: Arc::clone(reader),
        }))
    }

    fn get_size(&self) -> Result<i64> {
        i64::try_from(self.reader.size()).map_err(|_| invalid("the image is too large for NBD"))
    }

    fn can_write(&self) -> Result<bool> {
        Ok(false)
    }

    fn can_multi_conn(&self) -> Result<bool> {
        // Read-only and never changing: every connection sees the same.
        Ok(true)
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        let mut done = 0;
        while done < buf.len() {
            match self.reader.read_at(&mut buf[done..], offset + done as u64) {
                Ok(0) => {
                    return Err(Error::new(
                        libc::EIO,
                        format!("read past the end at {offset}"),
                    ));
                }
                Ok(n) => done += n,
                Err(e) => return Err(Error::new(libc::EIO, e.to_string())),
            }
        }
        Ok(())
    }
}

/// nbdkit's entry point (`plugin_init`), in a private module: it is the
/// plugin's C interface, not this crate's Rust one.
mod entry {
    use super::Connection;

    nbdkit::plugin!(Connection {
        config_help,
        config,
        config_complete,
        get_ready,
        after_fork,
        thread_model,
        can_write,
        can_multi_conn
    });
}
