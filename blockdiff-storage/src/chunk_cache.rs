//! Positional reads of a chain's objects by ranged GETs of whole chunks,
//! kept for the reads nearby: [`ChunkedObject`] and the [`ChunkCache`]
//! its chain shares.
//!
//! A restore reads a v2 diff frame by frame: hundreds of reads of some
//! KiB each, advancing through each object. One GET per frame pays an
//! object store's latency per frame (Garage's is about 40 ms per request on
//! loopback, a delayed ACK); so a read fetches the aligned chunk around it
//! (256 KiB to 8 MiB, by object size) and the next reads of that object
//! are served from memory. Once an object is read in order (two chunks in
//! a row), its next chunk is fetched in the background while the current
//! one is used (up to two ahead), as `rclone cat` streams. Memory is bounded: the cache
//! holds at most [`CACHE_BYTES`] of chunks, the oldest dropped first.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::sync::{Arc, Mutex, OnceLock};

use archive_format::ReadAt;

use crate::ObjectStorage;

/// The most bytes of chunks kept, for all the objects of a chain.
pub(crate) const CACHE_BYTES: usize = 64 << 20;
/// The largest chunk.
const MAX_CHUNK: u64 = 8 << 20;
/// The smallest chunk.
const MIN_CHUNK: u64 = 256 << 10;
/// Chunks fetched ahead in the background at once, for a whole chain.
const MAX_PREFETCH: usize = 3;
/// How far ahead of a read in order chunks are fetched.
const PREFETCH_AHEAD: u64 = 2;
/// A read at least this large bypasses the cache (one GET of its own).
const DIRECT_READ: usize = 16 << 20;

/// A chunk: fetched once (by a reader or in the background), then shared.
#[derive(Default)]
struct Slot {
    bytes: OnceLock<Result<Arc<[u8]>, String>>,
}

#[derive(Default)]
struct State {
    slots: HashMap<(Arc<str>, u64), Arc<Slot>>,
    /// Oldest first.
    order: VecDeque<((Arc<str>, u64), usize)>,
    bytes: usize,
    prefetching: usize,
}

/// The chunks of a chain's objects that were read, bounded to
/// [`CACHE_BYTES`]. Shared by the clones of an
/// [`ObjectChain`](crate::ObjectChain).
#[derive(Default)]
pub(crate) struct ChunkCache {
    state: Mutex<State>,
}

impl std::fmt::Debug for ChunkCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f.debug_struct("ChunkCache")
            .field("chunks", &state.slots.len())
            .field("bytes", &state.bytes)
            .finish()
    }
}

impl ChunkCache {
    /// The slot of chunk `index` of `key`, and whether it was just made
    /// (the caller fetches it).
    fn slot(&self, key: &Arc<str>, index: u64, len: usize) -> (Arc<Slot>, bool) {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let id = (Arc::clone(key), index);
        if let Some(slot) = state.slots.get(&id) {
            return (Arc::clone(slot), false);
        }
        let slot = Arc::new(Slot::default());
        state.slots.insert(id.clone(), Arc::clone(&slot));
        state.order.push_back((id, len));
        state.bytes += len;
        // Readers still holding an evicted chunk keep it until they are done.
        while state.bytes > CACHE_BYTES && state.order.len() > 1 {
            let Some((old, old_len)) = state.order.pop_front() else {
                break;
            };
            state.slots.remove(&old);
            state.bytes -= old_len;
        }
        (slot, true)
    }

    fn contains(&self, key: &Arc<str>, index: u64) -> bool {
        let state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        state.slots.contains_key(&(Arc::clone(key), index))
    }

    /// Forgets a chunk whose fetch failed, so that the next read tries
    /// again.
    fn forget(&self, key: &Arc<str>, index: u64) {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let id = (Arc::clone(key), index);
        if state.slots.remove(&id).is_some()
            && let Some(pos) = state.order.iter().position(|(k, _)| *k == id)
            && let Some((_, len)) = state.order.remove(pos)
        {
            state.bytes -= len;
        }
    }

    /// Forgets every chunk of object `key`, which was just replaced.
    pub(crate) fn forget_object(&self, key: &str) {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        state.slots.retain(|(k, _), _| &**k != key);
        let mut freed = 0;
        state.order.retain(|((k, _), len)| {
            let gone = &**k == key;
            if gone {
                freed += len;
            }
            !gone
        });
        state.bytes -= freed;
    }

    /// Takes a background fetch's place, if one is free.
    fn start_prefetch(&self) -> bool {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if state.prefetching >= MAX_PREFETCH {
            return false;
        }
        state.prefetching += 1;
        true
    }

    fn end_prefetch(&self) {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        state.prefetching = state.prefetching.saturating_sub(1);
    }
}

/// One object of `storage`, `size` bytes long, read through `cache`.
pub(crate) struct ChunkedObject {
    storage: Arc<dyn ObjectStorage>,
    key: Arc<str>,
    size: u64,
    chunk: u64,
    cache: Arc<ChunkCache>,
}

impl ChunkedObject {
    pub(crate) fn new(
        storage: Arc<dyn ObjectStorage>,
        key: &str,
        size: u64,
        cache: Arc<ChunkCache>,
    ) -> Self {
        // About an eighth of the object, so that a small generation of a
        // long chain does not hold much of the budget.
        let chunk = (size / 8).next_power_of_two().clamp(MIN_CHUNK, MAX_CHUNK);
        ChunkedObject {
            storage,
            key: Arc::from(key),
            size,
            chunk,
            cache,
        }
    }

    fn chunk_len(&self, index: u64) -> usize {
        let start = index * self.chunk;
        // At most MAX_CHUNK: fits a usize.
        (self.size - start).min(self.chunk) as usize
    }

    fn fetch(
        storage: &dyn ObjectStorage,
        key: &str,
        start: u64,
        len: usize,
    ) -> Result<Arc<[u8]>, String> {
        let mut buf = vec![0u8; len];
        storage
            .read_range(key, start, &mut buf)
            .map_err(|e| e.to_string())?;
        Ok(Arc::from(buf))
    }

    /// Chunk `index`, fetched now if no one has.
    fn chunk(&self, index: u64) -> io::Result<Arc<[u8]>> {
        let len = self.chunk_len(index);
        let (slot, _) = self.cache.slot(&self.key, index, len);
        if index > 0 && self.cache.contains(&self.key, index - 1) {
            // Read in order: fetch the next chunks meanwhile.
            let chunks = self.size.div_ceil(self.chunk);
            for next in index + 1..(index + 1 + PREFETCH_AHEAD).min(chunks) {
                self.prefetch(next);
            }
        }
        let start = index * self.chunk;
        let result = slot
            .bytes
            .get_or_init(|| Self::fetch(self.storage.as_ref(), &self.key, start, len));
        match result {
            Ok(bytes) => Ok(Arc::clone(bytes)),
            Err(_) => {
                // A failed fetch (perhaps a background one) is not kept:
                // this reader tries once more itself, and reports its own
                // error.
                self.cache.forget(&self.key, index);
                Self::fetch(self.storage.as_ref(), &self.key, start, len).map_err(io::Error::other)
            }
        }
    }

    fn prefetch(&self, index: u64) {
        let len = self.chunk_len(index);
        if self.cache.contains(&self.key, index) || !self.cache.start_prefetch() {
            return;
        }
        let (slot, new) = self.cache.slot(&self.key, index, len);
        if !new {
            self.cache.end_prefetch();
            return;
        }
        let storage = Arc::clone(&self.storage);
        let key = Arc::clone(&self.key);
        let cache = Arc::clone(&self.cache);
        let start = index * self.chunk;
        let spawned = std::thread::Builder::new()
            .name("blockdiff-prefetch".into())
            .spawn(move || {
                slot.bytes
                    .get_or_init(|| Self::fetch(storage.as_ref(), &key, start, len));
                cache.end_prefetch();
            });
        if spawned.is_err() {
            // No thread: the reader fetches it when it gets there.
            self.cache.end_prefetch();
        }
    }
}

impl ReadAt for ChunkedObject {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        if offset >= self.size || buf.is_empty() {
            return Ok(0);
        }
        let n = (self.size - offset).min(buf.len() as u64) as usize;
        let buf = &mut buf[..n];
        if n >= DIRECT_READ {
            self.storage
                .read_range(&self.key, offset, buf)
                .map_err(|e| io::Error::other(e.to_string()))?;
            return Ok(n);
        }
        let mut done = 0;
        while done < n {
            let at = offset + done as u64;
            let index = at / self.chunk;
            let chunk = self.chunk(index)?;
            let within = (at - index * self.chunk) as usize;
            let take = (chunk.len() - within).min(n - done);
            buf[done..done + take].copy_from_slice(&chunk[within..within + take]);
            done += take;
        }
        Ok(n)
    }

    fn size(&self) -> io::Result<u64> {
        Ok(self.size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::OpenDalStorage;

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 % 251) as u8).collect()
    }

    #[test]
    fn reads_anywhere_match_the_object_and_memory_stays_bounded() {
        let storage: Arc<dyn ObjectStorage> = Arc::new(OpenDalStorage::memory().unwrap());
        let cache = Arc::new(ChunkCache::default());
        let mut objects = Vec::new();
        for (i, len) in [0usize, 1, 300_000, 5 << 20, 40 << 20]
            .into_iter()
            .enumerate()
        {
            let data = pattern(len + i);
            let key = format!("db.{i}");
            storage.put(&key, &data).unwrap();
            objects.push((
                ChunkedObject::new(
                    Arc::clone(&storage),
                    &key,
                    data.len() as u64,
                    Arc::clone(&cache),
                ),
                data,
            ));
        }
        // In order, in odd pieces, across chunk boundaries; then backwards
        // and past the end.
        for (object, data) in &objects {
            let mut at = 0;
            let mut piece = 1;
            while at < data.len() {
                let mut buf = vec![0u8; piece];
                let n = object.read_at(&mut buf, at as u64).unwrap();
                assert_eq!(n, piece.min(data.len() - at));
                assert!(buf[..n] == data[at..at + n], "at {at}");
                at += n;
                piece = piece * 3 % 1_000_003 + 7;
            }
            let mut buf = vec![0u8; 10];
            assert_eq!(object.read_at(&mut buf, data.len() as u64).unwrap(), 0);
            if data.len() > 100 {
                let mut buf = vec![0u8; 100];
                object.read_at(&mut buf, 0).unwrap();
                assert!(buf == data[..100]);
            }
        }
        // A read larger than the direct threshold.
        let (object, data) = &objects[4];
        let mut buf = vec![0u8; DIRECT_READ + 5];
        object.read_at(&mut buf, 3).unwrap();
        assert!(buf[..] == data[3..3 + DIRECT_READ + 5]);
        // Wait for background fetches, then check the bound.
        while cache.state.lock().unwrap().prefetching > 0 {
            std::thread::yield_now();
        }
        assert!(cache.state.lock().unwrap().bytes <= CACHE_BYTES);
    }

    #[test]
    fn a_missing_object_is_an_error_each_time() {
        let storage: Arc<dyn ObjectStorage> = Arc::new(OpenDalStorage::memory().unwrap());
        let object = ChunkedObject::new(storage, "gone", 1000, Arc::default());
        let mut buf = [0u8; 10];
        assert!(object.read_at(&mut buf, 0).is_err());
        assert!(object.read_at(&mut buf, 0).is_err());
    }
}
