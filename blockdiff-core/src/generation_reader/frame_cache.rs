//! The decompressed v2 frames a [`GenerationReader`](super::GenerationReader)
//! read lately, bounded in bytes, the least recently used dropped first;
//! each remembers which of its blocks were already checked against the
//! digest.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use crate::Result;

/// A frame's decompressed payload and which of its blocks were checked.
#[derive(Debug)]
pub(crate) struct LoadedFrame {
    pub(crate) payload: Vec<u8>,
    /// One bit per block of the payload (by `offset / block_size`).
    checked: Vec<AtomicU64>,
}

impl LoadedFrame {
    pub(crate) fn new(payload: Vec<u8>, block_size: u32) -> Self {
        let blocks = payload.len().div_ceil(block_size.max(1) as usize);
        LoadedFrame {
            payload,
            checked: (0..blocks.div_ceil(64))
                .map(|_| AtomicU64::new(0))
                .collect(),
        }
    }

    /// Whether block `slot` of the payload was checked.
    pub(crate) fn is_checked(&self, slot: usize) -> bool {
        self.checked
            .get(slot / 64)
            .is_some_and(|w| w.load(Ordering::Relaxed) & (1 << (slot % 64)) != 0)
    }

    /// Records that block `slot` matched the digest.
    pub(crate) fn set_checked(&self, slot: usize) {
        if let Some(w) = self.checked.get(slot / 64) {
            w.fetch_or(1 << (slot % 64), Ordering::Relaxed);
        }
    }
}

/// A frame: loaded once by the first reader that needs it; the others
/// wait for it. A failed load is not kept (the next reader tries again and
/// reports its own error).
#[derive(Debug, Default)]
struct Slot {
    frame: Mutex<Option<Arc<LoadedFrame>>>,
}

#[derive(Debug)]
struct Entry {
    slot: Arc<Slot>,
    last_use: u64,
    bytes: usize,
}

#[derive(Debug, Default)]
struct State {
    entries: HashMap<(u32, u32), Entry>,
    clock: u64,
    bytes: usize,
}

/// Frames by (diff, frame), at most `budget` bytes of payload (and always
/// the one in use).
#[derive(Debug)]
pub(crate) struct FrameCache {
    state: Mutex<State>,
    budget: usize,
}

impl FrameCache {
    pub(crate) fn new(budget: usize) -> Self {
        FrameCache {
            state: Mutex::default(),
            budget,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Frame `key` if it is here and loaded (one being loaded by another
    /// reader is not waited for).
    pub(crate) fn peek(&self, key: (u32, u32)) -> Option<Arc<LoadedFrame>> {
        let slot = {
            let mut state = self.lock();
            state.clock += 1;
            let now = state.clock;
            let entry = state.entries.get_mut(&key)?;
            entry.last_use = now;
            Arc::clone(&entry.slot)
        };
        let held = match slot.frame.try_lock() {
            Ok(held) => held,
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return None,
        };
        held.as_ref().map(Arc::clone)
    }

    /// Frame `key`, loaded by `load` if it is not here.
    pub(crate) fn get(
        &self,
        key: (u32, u32),
        load: impl FnOnce() -> Result<LoadedFrame>,
    ) -> Result<Arc<LoadedFrame>> {
        let slot = {
            let mut state = self.lock();
            state.clock += 1;
            let now = state.clock;
            let entry = state.entries.entry(key).or_insert_with(|| Entry {
                slot: Arc::default(),
                last_use: now,
                bytes: 0,
            });
            entry.last_use = now;
            Arc::clone(&entry.slot)
        };
        let mut held = slot.frame.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(frame) = held.as_ref() {
            return Ok(Arc::clone(frame));
        }
        let frame = Arc::new(load()?);
        *held = Some(Arc::clone(&frame));
        drop(held);
        let mut state = self.lock();
        if let Some(entry) = state.entries.get_mut(&key)
            && Arc::ptr_eq(&entry.slot, &slot)
            && entry.bytes == 0
        {
            entry.bytes = frame.payload.len();
            state.bytes += frame.payload.len();
        }
        while state.bytes > self.budget && state.entries.len() > 1 {
            let Some(oldest) = state
                .entries
                .iter()
                .filter(|(k, _)| **k != key)
                .min_by_key(|(_, e)| e.last_use)
                .map(|(k, _)| *k)
            else {
                break;
            };
            if let Some(gone) = state.entries.remove(&oldest) {
                state.bytes -= gone.bytes;
            }
        }
        Ok(frame)
    }

    /// Bytes of payload held (for tests).
    #[cfg(test)]
    pub(crate) fn bytes(&self) -> usize {
        self.lock().bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[test]
    fn frames_are_loaded_once_and_the_oldest_dropped_past_the_budget() {
        let cache = FrameCache::new(250);
        let loads = Cell::new(0);
        let load = |n: u8| {
            loads.set(loads.get() + 1);
            Ok(LoadedFrame::new(vec![n; 100], 10))
        };
        for i in 0..3u32 {
            assert_eq!(
                cache.get((0, i), || load(i as u8)).unwrap().payload[0],
                i as u8
            );
        }
        assert_eq!(loads.get(), 3);
        assert!(cache.bytes() <= 250);
        // Frame 0 was the oldest: dropped. Frame 2 is still here.
        cache.get((0, 2), || load(9)).unwrap();
        assert_eq!(loads.get(), 3);
        cache.get((0, 0), || load(0)).unwrap();
        assert_eq!(loads.get(), 4);
        // A frame here is seen without loading; one that is not, is not.
        assert_eq!(cache.peek((0, 2)).unwrap().payload[0], 2);
        assert!(cache.peek((0, 1)).is_none());
        assert_eq!(loads.get(), 4);
        // A failed load is not kept.
        let e = cache.get((1, 0), || Err(crate::Error::InvalidOption("x".into())));
        assert!(e.is_err());
        assert_eq!(cache.get((1, 0), || load(7)).unwrap().payload[0], 7);
    }

    #[test]
    fn checked_bits_are_per_block() {
        let f = LoadedFrame::new(vec![0; 1000], 10);
        assert!(!f.is_checked(70));
        f.set_checked(70);
        assert!(f.is_checked(70) && !f.is_checked(69) && !f.is_checked(71));
        f.set_checked(5000);
        assert!(!f.is_checked(5000));
    }
}
