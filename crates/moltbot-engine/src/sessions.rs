//! Per-session ordering and the hot history cache.
//!
//! Each live session has one [`SessionSlot`]: an async mutex whose guard both serialises
//! turns of that session and holds its recent history. Sessions are kept in an LRU map; a
//! slot that is in use (a turn holds it) is never evicted, so two turns of one session can
//! never run at once even under cache pressure.

use moltbot_core::ChatMessage;
use std::collections::VecDeque;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

/// Recent messages of one session, oldest first; `None` until loaded from the store.
pub type History = Option<VecDeque<ChatMessage>>;

#[derive(Default)]
pub struct SessionSlot {
    pub history: tokio::sync::Mutex<History>,
}

pub struct SessionMap {
    // std Mutex: held only for map lookups, never across an `.await`.
    map: Mutex<lru::LruCache<String, Arc<SessionSlot>>>,
    capacity: usize,
}

impl SessionMap {
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Self {
            map: Mutex::new(lru::LruCache::unbounded()),
            capacity,
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
            let excess = map.len() - self.capacity;
            let idle: Vec<String> = map
                .iter()
                .rev()
                .filter(|(_, s)| Arc::strong_count(s) == 1)
                .take(excess)
                .map(|(k, _)| k.clone())
                .collect();
            for k in idle {
                map.pop(&k);
            }
        }
        slot
    }

    /// Forget a session's cached history (after it was deleted or compacted).
    pub fn forget(&self, id: &str) {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if map.peek(id).is_some_and(|s| Arc::strong_count(s) == 1) {
            map.pop(id);
        }
    }

    pub fn len(&self) -> usize {
        self.map.lock().unwrap_or_else(|p| p.into_inner()).len()
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
}
