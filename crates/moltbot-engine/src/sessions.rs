//! Per-session ordering and the hot history cache.
//!
//! Each live session has one [`SessionSlot`]: an async mutex whose guard both serialises
//! turns of that session and holds its recent history. Sessions are kept in an LRU map; a
//! slot that is in use (a turn holds it) is never evicted, so two turns of one session can
//! never run at once even under cache pressure. The cache is bounded twice: by the number
//! of sessions and by the approximate bytes of their histories (long messages in many
//! sessions must not grow memory without limit).

use moltbot_core::ChatMessage;
use std::collections::VecDeque;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Recent messages of one session, oldest first; `None` until loaded from the store.
pub type History = Option<VecDeque<ChatMessage>>;

#[derive(Default)]
pub struct SessionSlot {
    pub history: tokio::sync::Mutex<History>,
    /// Approximate heap bytes of `history`, as last reported with [`SessionMap::account`].
    bytes: AtomicUsize,
}

/// Approximate heap bytes a history holds.
pub fn history_bytes(h: &VecDeque<ChatMessage>) -> usize {
    h.iter()
        .map(|m| m.content.len() + std::mem::size_of::<ChatMessage>())
        .sum()
}

pub struct SessionMap {
    // std Mutex: held only for map lookups, never across an `.await`.
    map: Mutex<lru::LruCache<String, Arc<SessionSlot>>>,
    capacity: usize,
    budget_bytes: usize,
    total_bytes: AtomicUsize,
}

impl SessionMap {
    pub fn new(capacity: usize) -> Self {
        Self::with_budget(capacity, usize::MAX)
    }

    pub fn with_budget(capacity: usize, budget_bytes: usize) -> Self {
        let capacity = capacity.max(1);
        Self {
            map: Mutex::new(lru::LruCache::unbounded()),
            capacity,
            budget_bytes,
            total_bytes: AtomicUsize::new(0),
        }
    }

    /// Record the new size of a slot's history; evicts idle sessions, least recently used
    /// first, while the total is over the budget. The caller holds `slot`, so it stays.
    pub fn account(&self, slot: &SessionSlot, bytes: usize) {
        let old = slot.bytes.swap(bytes, Ordering::Relaxed);
        let total = self.total_bytes.fetch_add(bytes, Ordering::Relaxed) + bytes - old;
        self.total_bytes.fetch_sub(old, Ordering::Relaxed);
        if total > self.budget_bytes {
            let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
            self.evict_idle(&mut map, |m, freed| {
                m.len() <= 1 || total.saturating_sub(freed) <= self.budget_bytes
            });
        }
    }

    /// Approximate bytes held by all cached histories.
    pub fn total_bytes(&self) -> usize {
        self.total_bytes.load(Ordering::Relaxed)
    }

    /// Pop idle slots from the least recently used end until `done` says enough.
    fn evict_idle(
        &self,
        map: &mut lru::LruCache<String, Arc<SessionSlot>>,
        done: impl Fn(&lru::LruCache<String, Arc<SessionSlot>>, usize) -> bool,
    ) {
        let idle: Vec<String> = map
            .iter()
            .rev()
            .filter(|(_, s)| Arc::strong_count(s) == 1)
            .map(|(k, _)| k.clone())
            .collect();
        let mut freed = 0;
        for k in idle {
            if done(map, freed) {
                break;
            }
            if let Some(s) = map.pop(&k) {
                let b = s.bytes.load(Ordering::Relaxed);
                freed += b;
                self.total_bytes.fetch_sub(b, Ordering::Relaxed);
            }
        }
    }

    /// The slot of `id`, created if absent. Marks it most recently used.
    pub fn slot(&self, id: &str) -> Arc<SessionSlot> {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = map.get(id) {
            return s.clone();
        }
        let slot = Arc::new(SessionSlot::default());
        map.put(id.to_string(), slot.clone());
        if map.len() > self.capacity {
            // Evict least recently used slots that no turn holds.
            self.evict_idle(&mut map, |m, _| m.len() <= self.capacity);
        }
        slot
    }

    /// Forget a session's cached history (after it was deleted or compacted).
    pub fn forget(&self, id: &str) {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if map.peek(id).is_some_and(|s| Arc::strong_count(s) == 1) {
            if let Some(s) = map.pop(id) {
                self.total_bytes
                    .fetch_sub(s.bytes.load(Ordering::Relaxed), Ordering::Relaxed);
            }
        }
    }

    /// Forget every cached history no turn is using (their sessions may have moved on
    /// elsewhere: another replica ran turns of them).
    pub fn forget_idle(&self) {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        self.evict_idle(&mut map, |_, _| false);
    }

    pub fn len(&self) -> usize {
        self.map.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Its size and bounds, for `/health`: `(sessions, limit, bytes, budget_bytes)`.
    pub fn usage(&self) -> (usize, usize, usize, usize) {
        (
            self.len(),
            self.capacity,
            self.total_bytes(),
            self.budget_bytes,
        )
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Default for SessionMap {
    fn default() -> Self {
        Self::new(NonZeroUsize::MIN.get())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_idle_but_keeps_busy_slots() {
        let map = SessionMap::new(2);
        let busy = map.slot("a");
        map.slot("b");
        map.slot("c");
        map.slot("d");
        // "a" is held, so it survives although it is the least recently used.
        assert!(Arc::ptr_eq(&busy, &map.slot("a")));
        assert!(map.len() <= 3);
    }

    #[test]
    fn byte_budget_evicts_idle_histories() {
        let map = SessionMap::with_budget(100, 1000);
        for id in ["a", "b", "c"] {
            let s = map.slot(id);
            map.account(&s, 400);
        }
        // 1200 > 1000: the least recently used idle slot ("a") went.
        assert!(map.total_bytes() <= 1000, "{}", map.total_bytes());
        assert_eq!(map.len(), 2);
        let held = map.slot("b");
        map.account(&held, 5000);
        // Over budget but only the held slot is left after evicting idle ones.
        assert_eq!(map.len(), 1);
        assert_eq!(map.total_bytes(), 5000);
        map.account(&held, 10);
        assert_eq!(map.total_bytes(), 10);
    }
}
