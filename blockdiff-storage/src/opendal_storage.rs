//! [`ObjectStorage`] on S3 (and OpenDAL's in-memory service), through
//! Apache OpenDAL.
//!
//! OpenDAL is pinned exactly (`=0.59.5`) and every one of its types stays
//! in this file: its releases change its API, and an upgrade should touch
//! nothing else.
//!
//! # Uploads left by a killed process
//!
//! A streamed write is an S3 multipart upload. A process killed in the
//! middle leaves the upload open: its parts are stored (and billed) but no
//! object is visible, until the upload is aborted or a bucket lifecycle
//! rule (`AbortIncompleteMultipartUpload`) removes it.
//!
//! OpenDAL 0.59.5 cannot list such uploads, nor abort one it did not start:
//! its writer aborts only its own upload (`Writer::abort`), the S3
//! service's `ListMultipartUploads`/`AbortMultipartUpload` calls
//! (`S3Core`) are private to `opendal-service-s3`, and its presigning
//! covers only stat, read, write and delete. So
//! [`OpenDalStorage::abort_incomplete_uploads`] sends these two requests
//! itself: signed by `reqsign-aws-v4` (the signer the S3 service uses,
//! with the same static credentials) and sent through OpenDAL's HTTP
//! transport.

use std::fmt;
use std::io::{self, Read, Write};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use opendal::options::{ListOptions, ReadOptions, ReaderOptions, WriteOptions};
use opendal::{Buffer, ErrorKind as DalErrorKind};

use crate::object_storage::check_key;

use crate::{ObjectEntry, ObjectStorage, ObjectWriter, S3Config, StorageError, StorageErrorKind};

/// The part size of a multipart upload (S3's minimum is 5 MiB).
const WRITE_CHUNK: usize = 8 << 20;
/// Parts uploaded at once.
const WRITE_CONCURRENT: usize = 2;
/// What a writer gathers before handing it to OpenDAL.
const WRITE_STAGE: usize = 1 << 20;
/// The size of each ranged request of a streamed read.
const READ_CHUNK: usize = 4 << 20;
/// Ranged requests of a streamed read in flight at once.
const READ_CONCURRENT: usize = 2;

/// Retries of a request that failed for a transient reason.
const RETRIES: usize = 4;

/// The Tokio runtime OpenDAL's blocking API runs on, owned by the storage
/// (and kept alive by its readers and writers). Dropped without waiting for
/// its threads, so that dropping it never blocks nor panics.
struct OwnedRuntime {
    runtime: Option<tokio::runtime::Runtime>,
    handle: tokio::runtime::Handle,
}

impl OwnedRuntime {
    fn new() -> io::Result<Arc<OwnedRuntime>> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("blockdiff-storage-io")
            .enable_all()
            .build()?;
        let handle = runtime.handle().clone();
        Ok(Arc::new(OwnedRuntime {
            runtime: Some(runtime),
            handle,
        }))
    }

    fn block_on<F: Future>(&self, future: F) -> F::Output {
        self.handle.block_on(future)
    }
}

impl Drop for OwnedRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Where the objects are, for messages.
#[derive(Clone)]
enum Place {
    Memory,
    S3 { bucket: String, prefix: String },
}

impl Place {
    fn describe(&self, key: &str) -> String {
        match self {
            Place::Memory => format!("memory:/{key}"),
            Place::S3 { bucket, prefix } if prefix.is_empty() => format!("s3://{bucket}/{key}"),
            Place::S3 { bucket, prefix } => format!("s3://{bucket}/{prefix}/{key}"),
        }
    }
}

/// What an error's text must never show.
#[derive(Clone, Default)]
struct Secrets(Arc<[String]>);

impl Secrets {
    fn redact(&self, mut text: String) -> String {
        for secret in self.0.iter() {
            if secret.len() >= 4 && text.contains(secret.as_str()) {
                text = text.replace(secret.as_str(), "<redacted>");
            }
        }
        text
    }
}

/// Objects in an S3 bucket under a prefix, or in OpenDAL's in-memory
/// service, through Apache OpenDAL's blocking API.
///
/// - A [`writer`](ObjectStorage::writer) is a multipart upload in 8 MiB
///   parts, two in flight: memory stays bounded whatever the size. An
///   object of one part or less is sent with one `PutObject` at
///   [`finish`](ObjectWriter::finish). [`abort`](ObjectWriter::abort), or
///   dropping the writer unfinished, aborts the upload.
/// - A [`reader`](ObjectStorage::reader) reads in ranged requests of
///   4 MiB, two ahead, each on the version of the object it first saw
///   (`If-Match` on its ETag, where the service supports it): an object
///   replaced meanwhile is an error, never a mix of both.
/// - Requests that fail for a transient reason (a 5xx, throttling, a
///   broken connection) are retried four times with a growing delay.
/// - Errors keep the server's code and message (`AccessDenied`,
///   `InvalidAccessKeyId`, `SignatureDoesNotMatch`, `NoSuchBucket`, …) and
///   never show the secret key. A `HEAD` answer has no body: a
///   [`stat`](ObjectStorage::stat) refused shows only the HTTP status, and
///   one on a missing bucket is a missing object (`None`), as S3 cannot
///   tell them apart there.
///
/// Its methods block the calling thread on a runtime that the storage owns:
/// call them from plain threads (or `spawn_blocking`), never from inside
/// async code.
pub struct OpenDalStorage {
    runtime: Arc<OwnedRuntime>,
    op: opendal::blocking::Operator,
    async_op: opendal::Operator,
    place: Place,
    secrets: Secrets,
    /// For the requests OpenDAL does not offer; `None` in memory.
    raw_s3: Option<RawS3>,
}

impl fmt::Debug for OpenDalStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenDalStorage")
            .field("root", &self.place.describe(""))
            .finish_non_exhaustive()
    }
}

impl OpenDalStorage {
    /// OpenDAL's in-memory service: an empty store that lives as long as
    /// this value (for tests and examples).
    pub fn memory() -> Result<OpenDalStorage, StorageError> {
        Self::build(
            opendal::services::Memory::default(),
            Place::Memory,
            Secrets::default(),
            None,
            crate::s3_config::DEFAULT_TIMEOUT,
        )
    }

    /// The objects of `bucket` under `root_prefix` (`""` for the whole
    /// bucket, else a path without a leading or trailing `/`, as
    /// [`ObjectUrl::prefix`](crate::ObjectUrl::prefix)), reached with
    /// `config`. Nothing is sent yet: a wrong endpoint, bucket or key
    /// shows at the first request.
    pub fn s3(
        config: &S3Config,
        bucket: &str,
        root_prefix: &str,
    ) -> Result<OpenDalStorage, StorageError> {
        let prefix = root_prefix.trim_matches('/').to_string();
        let place = Place::S3 {
            bucket: bucket.to_string(),
            prefix: prefix.clone(),
        };
        let mut secret_list = vec![config.secret_access_key.clone()];
        secret_list.extend(config.session_token.clone());
        let secrets = Secrets(secret_list.into());
        let region = config.region_or_default();

        // The reqwest transport (rustls) as OpenDAL's process-wide default:
        // without the `auto-register-services` feature nothing installs it.
        opendal::install_default();

        let mut builder = opendal::services::S3::default()
            .bucket(bucket)
            .root(&format!("/{prefix}"))
            .region(region)
            .access_key_id(&config.access_key_id)
            .secret_access_key(&config.secret_access_key)
            // Only the credentials given: no environment, no ~/.aws, no
            // instance metadata behind our back.
            .disable_config_load()
            .disable_ec2_metadata();
        if let Some(token) = &config.session_token {
            builder = builder.session_token(token);
        }
        if let Some(endpoint) = &config.endpoint {
            builder = builder.endpoint(endpoint);
        }
        if !config.path_style {
            builder = builder.enable_virtual_host_style();
        }
        let raw_s3 = RawS3::new(config, bucket, &prefix);
        let timeout = config.timeout.unwrap_or(crate::s3_config::DEFAULT_TIMEOUT);
        Self::build(builder, place, secrets, Some(raw_s3), timeout)
    }

    fn build(
        builder: impl opendal::Builder,
        place: Place,
        secrets: Secrets,
        raw_s3: Option<RawS3>,
        timeout: Duration,
    ) -> Result<OpenDalStorage, StorageError> {
        let root = place.describe("");
        let runtime = OwnedRuntime::new().map_err(|e| {
            StorageError::new(
                root.clone(),
                "start the I/O runtime",
                crate::local_dir::io_error_kind(&e),
                e.to_string(),
            )
        })?;
        let setup_error = |e: opendal::Error| {
            let (kind, detail) = describe_dal_error(&e, &secrets);
            StorageError::new(root.clone(), "configure", kind, detail)
        };
        // A request that makes no progress for `timeout` fails as a
        // temporary error (the retry layer, outside it, tries again): a
        // server that stops answering fails the run instead of hanging it.
        let async_op = opendal::Operator::new(builder)
            .map_err(setup_error)?
            .layer(
                opendal::layers::TimeoutLayer::new()
                    .with_timeout(timeout)
                    .with_io_timeout(timeout),
            )
            .layer(
                opendal::layers::RetryLayer::new()
                    .with_max_times(RETRIES)
                    .with_factor(2.0)
                    .with_min_delay(Duration::from_millis(200))
                    .with_max_delay(Duration::from_secs(5))
                    .with_jitter(),
            );
        let op = {
            // The blocking operator takes the runtime of the current context.
            let _context = runtime.handle.enter();
            opendal::blocking::Operator::new(async_op.clone()).map_err(setup_error)?
        };
        Ok(OpenDalStorage {
            runtime,
            op,
            async_op,
            place,
            secrets,
            raw_s3,
        })
    }

    /// The condition that a read sees the version `meta` describes, where
    /// the service can read on a condition.
    fn if_match(&self, meta: &opendal::Metadata) -> Option<String> {
        if self.async_op.info().capability().read_with_if_match {
            meta.etag().map(str::to_string)
        } else {
            None
        }
    }

    fn error(&self, key: &str, action: &'static str, e: &opendal::Error) -> StorageError {
        let (kind, detail) = describe_dal_error(e, &self.secrets);
        StorageError::new(self.describe(key), action, kind, detail)
    }

    fn invalid(&self, key: &str, action: &'static str, detail: String) -> StorageError {
        StorageError::new(
            self.describe(key),
            action,
            StorageErrorKind::Invalid,
            detail,
        )
    }

    /// Aborts the multipart uploads under the root whose keys start with
    /// `prefix` and that were never completed (left by a killed process),
    /// and returns how many were aborted. Their parts are freed; no object
    /// is touched.
    ///
    /// This aborts *every* incomplete upload under the prefix, including
    /// one that another process is sending right now: call it only when
    /// no other writer can be at work there (under the chain's lock).
    /// In memory there are no such uploads: `Ok(0)`.
    ///
    /// Sends `ListMultipartUploads` and `AbortMultipartUpload` requests
    /// itself, since OpenDAL does not offer them (see the module's
    /// documentation); they are not retried.
    pub fn abort_incomplete_uploads(&self, prefix: &str) -> Result<usize, StorageError> {
        let Some(raw) = &self.raw_s3 else {
            return Ok(0);
        };
        if prefix.contains('/') {
            return Err(self.invalid(
                prefix,
                "abort incomplete uploads",
                "a prefix with '/': keys are plain names".to_string(),
            ));
        }
        self.runtime
            .block_on(raw.abort_incomplete(prefix))
            .map_err(|failure| failure.into_error(self, prefix))
    }
}

impl ObjectStorage for OpenDalStorage {
    fn abort_incomplete_uploads(&self, prefix: &str) -> Result<usize, StorageError> {
        // The inherent method, which takes precedence.
        OpenDalStorage::abort_incomplete_uploads(self, prefix)
    }

    fn describe(&self, key: &str) -> String {
        self.place.describe(key)
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectEntry>, StorageError> {
        if prefix.contains('/') {
            return Ok(Vec::new());
        }
        let path = if prefix.is_empty() { "/" } else { prefix };
        let entries = self
            .op
            .list_options(
                path,
                ListOptions {
                    recursive: false,
                    ..Default::default()
                },
            )
            .map_err(|e| self.error(prefix, "list", &e))?;
        let mut list = Vec::with_capacity(entries.len());
        for entry in entries {
            let (key, meta) = entry.into_parts();
            if !key.starts_with(prefix) || check_key(self, &key).is_err() || meta.is_dir() {
                continue;
            }
            let meta = if meta.is_file() && meta.last_modified().is_some() {
                meta
            } else {
                // A service that lists names only (the in-memory one).
                match self.op.stat(&key) {
                    Ok(meta) => meta,
                    Err(e) if e.kind() == DalErrorKind::NotFound => continue,
                    Err(e) => return Err(self.error(&key, "stat", &e)),
                }
            };
            list.push(ObjectEntry {
                size: meta.content_length(),
                modified: meta.last_modified().map(SystemTime::from),
                key,
            });
        }
        list.sort();
        Ok(list)
    }

    fn stat(&self, key: &str) -> Result<Option<u64>, StorageError> {
        check_key(self, key)?;
        match self.op.stat(key) {
            Ok(meta) => Ok(Some(meta.content_length())),
            Err(e) if e.kind() == DalErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.error(key, "stat", &e)),
        }
    }

    fn read_range(&self, key: &str, offset: u64, buf: &mut [u8]) -> Result<(), StorageError> {
        check_key(self, key)?;
        if buf.is_empty() {
            return Ok(());
        }
        let len = u64::try_from(buf.len()).unwrap_or(u64::MAX);
        let end = offset.checked_add(len).ok_or_else(|| {
            self.invalid(
                key,
                "read",
                format!("offset {offset} + {len} bytes overflows"),
            )
        })?;
        let data = self
            .op
            .read_options(
                key,
                ReadOptions {
                    range: (offset..end).into(),
                    ..Default::default()
                },
            )
            .map_err(|e| self.error(key, "read", &e))?;
        let got = copy_into(data, buf);
        if got < buf.len() {
            return Err(self.invalid(
                key,
                "read",
                format!(
                    "cut short: {} bytes at offset {offset} asked, {got} returned",
                    buf.len()
                ),
            ));
        }
        Ok(())
    }

    fn read_small(&self, key: &str, limit: u64) -> Result<Option<Vec<u8>>, StorageError> {
        check_key(self, key)?;
        // Replaced between the stat and the read: read the new one, a few
        // times at most.
        for _ in 0..3 {
            let meta = match self.op.stat(key) {
                Ok(meta) => meta,
                Err(e) if e.kind() == DalErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(self.error(key, "read", &e)),
            };
            let size = meta.content_length();
            if size > limit {
                return Err(self.invalid(
                    key,
                    "read",
                    format!("{size} bytes, more than the {limit} expected at most"),
                ));
            }
            if size == 0 {
                return Ok(Some(Vec::new()));
            }
            let data = match self.op.read_options(
                key,
                ReadOptions {
                    range: (0..size).into(),
                    if_match: self.if_match(&meta),
                    ..Default::default()
                },
            ) {
                Ok(data) => data,
                Err(e) if e.kind() == DalErrorKind::NotFound => return Ok(None),
                Err(e) if e.kind() == DalErrorKind::ConditionNotMatch => continue,
                Err(e) => return Err(self.error(key, "read", &e)),
            };
            if u64::try_from(data.len()).ok() == Some(size) {
                return Ok(Some(data.to_vec()));
            }
            // Cut short: replaced by a shorter object (where the service
            // cannot read on a condition).
        }
        Err(StorageError::new(
            self.describe(key),
            "read",
            StorageErrorKind::Other,
            "the object kept changing while it was read",
        ))
    }

    fn reader(&self, key: &str) -> Result<Box<dyn Read + Send>, StorageError> {
        check_key(self, key)?;
        let meta = self.op.stat(key).map_err(|e| self.error(key, "read", &e))?;
        let if_match = self.if_match(&meta);
        let reader = self
            .op
            .reader_options(
                key,
                ReaderOptions {
                    chunk: Some(READ_CHUNK),
                    concurrent: READ_CONCURRENT,
                    content_length_hint: Some(meta.content_length()),
                    if_match,
                    ..Default::default()
                },
            )
            .map_err(|e| self.error(key, "read", &e))?;
        let inner = reader
            .into_std_read(0..meta.content_length())
            .map_err(|e| self.error(key, "read", &e))?;
        Ok(Box::new(OpenDalReader {
            inner,
            object: self.describe(key),
            secrets: self.secrets.clone(),
            _runtime: self.runtime.clone(),
        }))
    }

    fn writer(&self, key: &str) -> Result<Box<dyn ObjectWriter>, StorageError> {
        check_key(self, key)?;
        let writer = self
            .runtime
            .block_on(self.async_op.writer_options(
                key,
                WriteOptions {
                    chunk: Some(WRITE_CHUNK),
                    concurrent: WRITE_CONCURRENT,
                    ..Default::default()
                },
            ))
            .map_err(|e| self.error(key, "upload", &e))?;
        Ok(Box::new(OpenDalWriter {
            runtime: self.runtime.clone(),
            writer: Some(writer),
            staged: Vec::new(),
            size: 0,
            object: self.describe(key),
            secrets: self.secrets.clone(),
            failed: None,
        }))
    }

    fn put(&self, key: &str, bytes: &[u8]) -> Result<(), StorageError> {
        check_key(self, key)?;
        self.op
            .write(key, bytes.to_vec())
            .map(|_| ())
            .map_err(|e| self.error(key, "upload", &e))
    }

    fn delete(&self, key: &str) -> Result<(), StorageError> {
        check_key(self, key)?;
        match self.op.delete(key) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == DalErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.error(key, "delete", &e)),
        }
    }
}

/// Copies `data` into the start of `buf`; returns how many bytes `data`
/// had (more than `buf.len()` if the service sent too much).
fn copy_into(data: Buffer, buf: &mut [u8]) -> usize {
    let total = data.len();
    let mut at = 0;
    for chunk in data {
        let n = chunk.len().min(buf.len() - at);
        buf[at..at + n].copy_from_slice(&chunk[..n]);
        at += n;
        if at == buf.len() {
            break;
        }
    }
    total
}

/// A streamed read; keeps the runtime alive.
struct OpenDalReader {
    inner: opendal::blocking::StdReader,
    object: String,
    secrets: Secrets,
    _runtime: Arc<OwnedRuntime>,
}

impl Read for OpenDalReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf).map_err(|e| {
            // OpenDAL's error inside: reworded as the storage's errors are.
            let Some(dal) = e
                .get_ref()
                .and_then(|inner| inner.downcast_ref::<opendal::Error>())
            else {
                return e;
            };
            let (kind, detail) = describe_dal_error(dal, &self.secrets);
            io::Error::new(
                io_kind(kind),
                StorageError::new(self.object.clone(), "read", kind, detail),
            )
        })
    }
}

/// A streamed upload.
struct OpenDalWriter {
    runtime: Arc<OwnedRuntime>,
    /// `None` once finished or aborted.
    writer: Option<opendal::Writer>,
    /// Bytes not yet handed to OpenDAL (at most [`WRITE_STAGE`]).
    staged: Vec<u8>,
    size: u64,
    object: String,
    secrets: Secrets,
    /// The error of a failed write: the upload can no longer complete.
    failed: Option<String>,
}

impl OpenDalWriter {
    fn storage_error(&self, action: &'static str, e: &opendal::Error) -> StorageError {
        let (kind, detail) = describe_dal_error(e, &self.secrets);
        StorageError::new(self.object.clone(), action, kind, detail)
    }

    fn closed_error(&self) -> io::Error {
        io::Error::other(format!(
            "{}: the upload was already finished or aborted",
            self.object
        ))
    }

    /// Hands `bytes` to OpenDAL, which uploads a part each time it has
    /// gathered [`WRITE_CHUNK`] bytes.
    fn send(&mut self, bytes: Vec<u8>) -> io::Result<()> {
        if let Some(failed) = &self.failed {
            return Err(io::Error::other(failed.clone()));
        }
        let Some(writer) = self.writer.as_mut() else {
            return Err(self.closed_error());
        };
        let result = self.runtime.block_on(writer.write(Buffer::from(bytes)));
        if let Err(e) = result {
            let error = self.storage_error("upload", &e);
            self.failed = Some(error.to_string());
            return Err(io::Error::new(io_kind(error.kind), error));
        }
        Ok(())
    }

    fn send_staged(&mut self) -> io::Result<()> {
        if self.staged.is_empty() {
            return Ok(());
        }
        let staged = std::mem::take(&mut self.staged);
        self.send(staged)
    }

    fn abort_upload(&mut self) -> Result<(), StorageError> {
        self.staged = Vec::new();
        let Some(mut writer) = self.writer.take() else {
            return Ok(());
        };
        self.runtime
            .block_on(writer.abort())
            .map_err(|e| self.storage_error("abort the upload", &e))
    }

    fn complete(&mut self) -> Result<u64, StorageError> {
        self.send_staged().map_err(|e| {
            StorageError::new(
                self.object.clone(),
                "upload",
                StorageErrorKind::Other,
                e.to_string(),
            )
        })?;
        if let Some(failed) = &self.failed {
            return Err(StorageError::new(
                self.object.clone(),
                "upload",
                StorageErrorKind::Other,
                failed.clone(),
            ));
        }
        let Some(writer) = self.writer.as_mut() else {
            return Err(StorageError::new(
                self.object.clone(),
                "finish",
                StorageErrorKind::Other,
                "the upload was already finished or aborted",
            ));
        };
        let result = self.runtime.block_on(writer.close());
        match result {
            Ok(_) => {
                self.writer = None;
                Ok(self.size)
            }
            Err(e) => Err(self.storage_error("complete the upload", &e)),
        }
    }
}

impl Write for OpenDalWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.writer.is_none() {
            return Err(self.closed_error());
        }
        if self.staged.is_empty() && buf.len() >= WRITE_STAGE {
            self.send(buf.to_vec())?;
        } else {
            let n = buf.len().min(WRITE_STAGE - self.staged.len());
            if self.staged.capacity() == 0 {
                self.staged.reserve_exact(WRITE_STAGE);
            }
            self.staged.extend_from_slice(&buf[..n]);
            if self.staged.len() == WRITE_STAGE {
                self.send_staged()?;
            }
            self.size += u64::try_from(n).unwrap_or(u64::MAX);
            return Ok(n);
        }
        self.size += u64::try_from(buf.len()).unwrap_or(u64::MAX);
        Ok(buf.len())
    }

    /// Does nothing: the bytes become the object only at
    /// [`finish`](ObjectWriter::finish).
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl ObjectWriter for OpenDalWriter {
    fn finish(mut self: Box<Self>) -> Result<u64, StorageError> {
        // On error the upload is aborted when `self` drops.
        self.complete()
    }

    fn abort(mut self: Box<Self>) -> Result<(), StorageError> {
        self.abort_upload()
    }
}

impl Drop for OpenDalWriter {
    fn drop(&mut self) {
        let _ = self.abort_upload();
    }
}

fn io_kind(kind: StorageErrorKind) -> io::ErrorKind {
    match kind {
        StorageErrorKind::NotFound => io::ErrorKind::NotFound,
        StorageErrorKind::PermissionDenied => io::ErrorKind::PermissionDenied,
        StorageErrorKind::NoSpace => io::ErrorKind::StorageFull,
        StorageErrorKind::Invalid => io::ErrorKind::InvalidData,
        StorageErrorKind::Other => io::ErrorKind::Other,
    }
}

/// What the server says when it is full, as far as it can be told.
const NO_SPACE_SIGNS: &[&str] = &[
    "insufficientstorage",
    "insufficient storage",
    "storagefull",
    "no space left",
    "not enough space",
    "quotaexceeded",
    "quota exceeded",
    "disk full",
];

/// The kind and the words of an OpenDAL error: its kind, the server's
/// message (S3's error code and message), the HTTP status, the cause; any
/// secret replaced by `<redacted>`.
fn describe_dal_error(e: &opendal::Error, secrets: &Secrets) -> (StorageErrorKind, String) {
    let status = http_status(&e.to_string());
    let mut detail = e.kind().to_string();
    if e.kind() == DalErrorKind::ConditionNotMatch {
        detail.push_str(": replaced while being read");
    }
    if !e.message().is_empty() {
        detail.push_str(": ");
        detail.push_str(e.message());
    }
    if let Some(status) = status {
        detail.push_str(&format!(" (HTTP {status})"));
    }
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        detail.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    let detail = secrets.redact(detail);
    let lower = detail.to_ascii_lowercase();
    let kind = if status == Some(507) || NO_SPACE_SIGNS.iter().any(|sign| lower.contains(sign)) {
        StorageErrorKind::NoSpace
    } else {
        match e.kind() {
            DalErrorKind::NotFound => StorageErrorKind::NotFound,
            DalErrorKind::PermissionDenied => StorageErrorKind::PermissionDenied,
            DalErrorKind::ConfigInvalid if e.message().contains("NoSuchBucket") => {
                StorageErrorKind::NotFound
            }
            DalErrorKind::RangeNotSatisfied => StorageErrorKind::Invalid,
            _ => StorageErrorKind::Other,
        }
    };
    (kind, detail)
}

/// The HTTP status in an OpenDAL error's text (its `response` context is
/// `Parts { status: 403, … }`).
fn http_status(text: &str) -> Option<u16> {
    let at = text.find("status: ")? + "status: ".len();
    let digits: String = text[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// A failure of a raw S3 request.
enum RawFailure {
    Dal(opendal::Error),
    Http {
        status: u16,
        code: String,
        message: String,
    },
    Other(String),
}

impl RawFailure {
    fn into_error(self, storage: &OpenDalStorage, prefix: &str) -> StorageError {
        let action = "abort incomplete uploads";
        match self {
            RawFailure::Dal(e) => storage.error(prefix, action, &e),
            RawFailure::Http {
                status,
                code,
                message,
            } => {
                let detail = storage
                    .secrets
                    .redact(format!("{code}: {message} (HTTP {status})"));
                let lower = detail.to_ascii_lowercase();
                let kind = if status == 507 || NO_SPACE_SIGNS.iter().any(|s| lower.contains(s)) {
                    StorageErrorKind::NoSpace
                } else if status == 403 {
                    StorageErrorKind::PermissionDenied
                } else if status == 404 {
                    StorageErrorKind::NotFound
                } else {
                    StorageErrorKind::Other
                };
                StorageError::new(storage.describe(prefix), action, kind, detail)
            }
            RawFailure::Other(detail) => StorageError::new(
                storage.describe(prefix),
                action,
                StorageErrorKind::Other,
                storage.secrets.redact(detail),
            ),
        }
    }
}

/// The S3 requests that OpenDAL does not offer, signed with the same
/// credentials.
struct RawS3 {
    /// `https://HOST/BUCKET` (path style) or `https://BUCKET.HOST/`.
    bucket_url: String,
    /// `bucket_url` followed by what precedes an object's key.
    object_base: String,
    /// The keys' prefix in the bucket: `""` or `PREFIX/`.
    root: String,
    signer: reqsign_core::Signer<reqsign_aws_v4::Credential>,
}

/// One page of `ListMultipartUploads`.
#[derive(Default, serde::Deserialize)]
#[serde(default, rename_all = "PascalCase")]
struct ListMultipartUploadsResult {
    is_truncated: bool,
    next_key_marker: String,
    next_upload_id_marker: String,
    #[serde(rename = "Upload")]
    uploads: Vec<MultipartUpload>,
}

#[derive(Default, serde::Deserialize)]
#[serde(default, rename_all = "PascalCase")]
struct MultipartUpload {
    key: String,
    upload_id: String,
}

#[derive(Default, serde::Deserialize)]
#[serde(default, rename_all = "PascalCase")]
struct S3ErrorBody {
    code: String,
    message: String,
}

impl RawS3 {
    fn new(config: &S3Config, bucket: &str, prefix: &str) -> RawS3 {
        let region = config.region_or_default();
        // As OpenDAL's S3 service builds it.
        let endpoint = match &config.endpoint {
            Some(e) if e.starts_with("http") => e.trim_end_matches('/').to_string(),
            Some(e) => format!("https://{}", e.trim_end_matches('/')),
            None => format!("https://s3.{region}.amazonaws.com"),
        };
        let (bucket_url, object_base) = if config.path_style {
            (
                format!("{endpoint}/{bucket}"),
                format!("{endpoint}/{bucket}/"),
            )
        } else {
            let url = endpoint.replacen("//", &format!("//{bucket}."), 1);
            (format!("{url}/"), format!("{url}/"))
        };
        let mut credentials = reqsign_aws_v4::StaticCredentialProvider::new(
            &config.access_key_id,
            &config.secret_access_key,
        );
        if let Some(token) = &config.session_token {
            credentials = credentials.with_session_token(token);
        }
        let signer = reqsign_core::Signer::new(
            reqsign_core::Context::new(),
            credentials,
            reqsign_aws_v4::RequestSigner::new("s3", region),
        );
        RawS3 {
            bucket_url,
            object_base,
            root: if prefix.is_empty() {
                String::new()
            } else {
                format!("{prefix}/")
            },
            signer,
        }
    }

    async fn send(&self, method: http::Method, url: &str) -> Result<(u16, Buffer), RawFailure> {
        let request = http::Request::builder()
            .method(method)
            .uri(url)
            .body(Buffer::new())
            .map_err(|e| RawFailure::Other(format!("bad request URL: {e}")))?;
        let (mut parts, body) = request.into_parts();
        self.signer
            .sign(&mut parts, None)
            .await
            .map_err(|e| RawFailure::Other(format!("signing the request: {e}")))?;
        // As OpenDAL does: the HTTP client sets Host itself.
        parts.headers.remove(http::header::HOST);
        let response = opendal::HttpTransporter::default()
            .send(http::Request::from_parts(parts, body))
            .await
            .map_err(RawFailure::Dal)?;
        Ok((response.status().as_u16(), response.into_body()))
    }

    fn http_failure(status: u16, body: &Buffer) -> RawFailure {
        let text = String::from_utf8_lossy(&body.to_vec()).into_owned();
        let parsed: S3ErrorBody = quick_xml::de::from_str(&text).unwrap_or_default();
        RawFailure::Http {
            status,
            code: parsed.code,
            message: parsed.message,
        }
    }

    async fn abort_incomplete(&self, prefix: &str) -> Result<usize, RawFailure> {
        let key_prefix = format!("{}{prefix}", self.root);
        let mut markers: Option<(String, String)> = None;
        let mut aborted = 0;
        loop {
            let mut url = format!(
                "{}?uploads&prefix={}",
                self.bucket_url,
                query_encode(&key_prefix)
            );
            if let Some((key_marker, upload_marker)) = &markers {
                url.push_str(&format!(
                    "&key-marker={}&upload-id-marker={}",
                    query_encode(key_marker),
                    query_encode(upload_marker)
                ));
            }
            let (status, body) = self.send(http::Method::GET, &url).await?;
            if !(200..300).contains(&status) {
                return Err(Self::http_failure(status, &body));
            }
            let text = String::from_utf8_lossy(&body.to_vec()).into_owned();
            let page: ListMultipartUploadsResult = quick_xml::de::from_str(&text).map_err(|e| {
                RawFailure::Other(format!("unreadable ListMultipartUploads answer: {e}"))
            })?;
            for upload in &page.uploads {
                if !upload.key.starts_with(&key_prefix) {
                    continue;
                }
                let url = format!(
                    "{}{}?uploadId={}",
                    self.object_base,
                    opendal::raw::percent_encode_path(&upload.key),
                    query_encode(&upload.upload_id)
                );
                let (status, body) = self.send(http::Method::DELETE, &url).await?;
                match status {
                    200..=299 => aborted += 1,
                    // Completed or aborted meanwhile.
                    404 => {}
                    _ => return Err(Self::http_failure(status, &body)),
                }
            }
            if !page.is_truncated {
                return Ok(aborted);
            }
            let next = (page.next_key_marker, page.next_upload_id_marker);
            if next.0.is_empty() || markers.as_ref() == Some(&next) {
                // A server that says "more" without saying where: stop
                // rather than loop.
                return Ok(aborted);
            }
            markers = Some(next);
        }
    }
}

/// Percent-encodes a query value as SigV4 expects: everything but
/// `A-Z a-z 0-9 - _ . ~`.
fn query_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_encoding() {
        assert_eq!(query_encode("a-b_c.d~e"), "a-b_c.d~e");
        assert_eq!(query_encode("p/x y+z=é"), "p%2Fx%20y%2Bz%3D%C3%A9");
    }

    #[test]
    fn status_from_error_text() {
        assert_eq!(
            http_status(
                "Unexpected (permanent) at write, context: { response: Parts { status: 507, version: HTTP/1.1 } }"
            ),
            Some(507)
        );
        assert_eq!(http_status("no status here"), None);
    }

    #[test]
    fn dal_errors_map_to_kinds_and_hide_secrets() {
        let secrets = Secrets(vec!["SECRETKEY123".to_string()].into());
        let e = opendal::Error::new(
            DalErrorKind::PermissionDenied,
            "S3Error { code: \"SignatureDoesNotMatch\", message: \"bad SECRETKEY123\" }",
        );
        let (kind, detail) = describe_dal_error(&e, &secrets);
        assert_eq!(kind, StorageErrorKind::PermissionDenied);
        assert!(detail.contains("SignatureDoesNotMatch"), "{detail}");
        assert!(!detail.contains("SECRETKEY123"), "{detail}");

        let e = opendal::Error::new(
            DalErrorKind::ConfigInvalid,
            "S3Error { code: \"NoSuchBucket\" }",
        );
        assert_eq!(
            describe_dal_error(&e, &secrets).0,
            StorageErrorKind::NotFound
        );
        let e = opendal::Error::new(DalErrorKind::NotFound, "");
        assert_eq!(
            describe_dal_error(&e, &secrets).0,
            StorageErrorKind::NotFound
        );
        let e = opendal::Error::new(
            DalErrorKind::Unexpected,
            "S3Error { code: \"XMinioStorageFull\" }",
        );
        assert_eq!(
            describe_dal_error(&e, &secrets).0,
            StorageErrorKind::NoSpace
        );
        let e = opendal::Error::new(DalErrorKind::Unexpected, "x")
            .with_context("response", "Parts { status: 507, version: HTTP/1.1 }");
        let (kind, detail) = describe_dal_error(&e, &secrets);
        assert_eq!(kind, StorageErrorKind::NoSpace);
        assert!(detail.contains("HTTP 507"), "{detail}");
        let e = opendal::Error::new(DalErrorKind::Unexpected, "connection reset");
        assert_eq!(describe_dal_error(&e, &secrets).0, StorageErrorKind::Other);
    }

    #[test]
    fn describes_places() {
        assert_eq!(Place::Memory.describe("k"), "memory:/k");
        let s3 = |prefix: &str| Place::S3 {
            bucket: "b".into(),
            prefix: prefix.into(),
        };
        assert_eq!(s3("").describe("k"), "s3://b/k");
        assert_eq!(s3("p/q").describe("k"), "s3://b/p/q/k");
    }

    #[test]
    fn raw_urls() {
        let config = S3Config {
            endpoint: Some("http://127.0.0.1:3900/".into()),
            region: Some("garage".into()),
            path_style: true,
            access_key_id: "A".into(),
            secret_access_key: "S".into(),
            session_token: None,
            timeout: None,
        };
        let raw = RawS3::new(&config, "bkt", "p/q");
        assert_eq!(raw.bucket_url, "http://127.0.0.1:3900/bkt");
        assert_eq!(raw.object_base, "http://127.0.0.1:3900/bkt/");
        assert_eq!(raw.root, "p/q/");
        let aws = S3Config {
            endpoint: None,
            region: Some("eu-west-3".into()),
            path_style: false,
            ..config
        };
        let raw = RawS3::new(&aws, "bkt", "");
        assert_eq!(raw.bucket_url, "https://bkt.s3.eu-west-3.amazonaws.com/");
        assert_eq!(raw.root, "");
    }

    #[test]
    fn parses_list_multipart_uploads() {
        let xml = r#"<?xml version="1.0" encoding="UTF-8"?>
<ListMultipartUploadsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Bucket>bkt</Bucket><KeyMarker></KeyMarker><UploadIdMarker></UploadIdMarker>
  <NextKeyMarker>p/db.2</NextKeyMarker><NextUploadIdMarker>u2</NextUploadIdMarker>
  <MaxUploads>1000</MaxUploads><IsTruncated>true</IsTruncated>
  <Upload><Key>p/db.1</Key><UploadId>u1</UploadId><Initiated>2024-01-01T00:00:00.000Z</Initiated></Upload>
  <Upload><Key>p/a&amp;b</Key><UploadId>u2</UploadId></Upload>
</ListMultipartUploadsResult>"#;
        let page: ListMultipartUploadsResult = quick_xml::de::from_str(xml).unwrap();
        assert!(page.is_truncated);
        assert_eq!(page.next_key_marker, "p/db.2");
        assert_eq!(page.next_upload_id_marker, "u2");
        let keys: Vec<_> = page
            .uploads
            .iter()
            .map(|u| (u.key.as_str(), u.upload_id.as_str()))
            .collect();
        assert_eq!(keys, [("p/db.1", "u1"), ("p/a&b", "u2")]);

        let empty = r#"<ListMultipartUploadsResult><IsTruncated>false</IsTruncated></ListMultipartUploadsResult>"#;
        let page: ListMultipartUploadsResult = quick_xml::de::from_str(empty).unwrap();
        assert!(!page.is_truncated && page.uploads.is_empty());

        let error = r#"<Error><Code>AccessDenied</Code><Message>Forbidden</Message></Error>"#;
        let parsed: S3ErrorBody = quick_xml::de::from_str(error).unwrap();
        assert_eq!(
            (parsed.code.as_str(), parsed.message.as_str()),
            ("AccessDenied", "Forbidden")
        );
    }
}
