//! Insertion: level assignment, neighbour selection and the two-way linking of a new node.

use std::sync::atomic::Ordering;

use super::search::Scratch;
use super::{Hnsw, MAX_LEVEL};
use crate::index::Scored;

/// SplitMix64: a tiny, well-mixed hash used as a stateless random source.
pub(super) fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The level of the node in `slot`: geometric with ratio `1/m`, capped at `MAX_LEVEL`.
pub(super) fn level_for(seed: u64, slot: u64, m: usize) -> usize {
    let r = splitmix64(seed ^ splitmix64(slot));
    // 53 random bits to a uniform in (0, 1].
    let u = ((r >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
    let ml = 1.0 / (m as f64).ln();
    let level = (-u.ln() * ml).floor();
    (level as usize).min(MAX_LEVEL)
}

impl Hnsw {
    /// Links the already-stored node `q` into the graph. Safe to run for many nodes at once
    /// from different threads: list writes hold the owning node's mutex, reads are atomic.
    pub(super) fn link(&self, q: u32) {
        let q_level = self.levels[q as usize] as usize;
        let Some((mut cur, top)) = self.entry_point() else {
            let _guard = self.entry_lock.lock();
            if self.entry_point().is_none() {
                self.entry
                    .store(((q_level as u64) << 32) | q as u64, Ordering::Release);
                return;
            }
            drop(_guard);
            return self.link(q);
        };
        let qv = self.vec_of(q);
        let mut cur_dist = self.metric.distance(qv, self.vec_of(cur));
        for level in (q_level + 1..=top).rev() {
            (cur, cur_dist) = self.greedy(qv, cur, cur_dist, level);
        }
        Scratch::with(|scratch| {
            for level in (0..=q_level.min(top)).rev() {
                let found = self.beam(
                    qv,
                    Scored {
                        dist: cur_dist,
                        id: cur,
                    },
                    self.params.ef_construction,
                    level,
                    scratch,
                    |s| s != q,
                );
                if let Some(best) = found.first() {
                    cur = best.id;
                    cur_dist = best.dist;
                }
                // A new node keeps as many links as its list holds (2·M at level 0, as faiss
                // does; hnswlib keeps M and lets back-links fill the rest). On 1M×384 this
                // raised recall@10 at ef 64 from 0.933 to 0.974 for 3% more build time.
                let chosen = self.select(&found, self.capacity(level));
                self.write_list(q, level, chosen.clone());
                for c in &chosen {
                    self.add_back_link(c.id, q, c.dist, level);
                }
            }
        });
        if q_level > top {
            let _guard = self.entry_lock.lock();
            let still_higher = self.entry_point().is_none_or(|(_, t)| q_level > t);
            if still_higher {
                self.entry
                    .store(((q_level as u64) << 32) | q as u64, Ordering::Release);
            }
        }
    }

    /// The neighbour-selection heuristic of the HNSW paper: walk candidates from nearest to
    /// farthest and keep one only if it is closer to the base than to every one kept so far.
    /// This spreads links in different directions and keeps clusters connected.
    pub(super) fn select(&self, sorted: &[Scored<u32>], m: usize) -> Vec<Scored<u32>> {
        if sorted.len() <= m {
            return sorted.to_vec();
        }
        let mut kept: Vec<Scored<u32>> = Vec::with_capacity(m);
        for c in sorted {
            if kept.len() >= m {
                break;
            }
            let cv = self.vec_of(c.id);
            let diverse = kept
                .iter()
                .all(|k| self.metric.distance(cv, self.vec_of(k.id)) >= c.dist);
            if diverse {
                kept.push(*c);
            }
        }
        kept
    }

    fn capacity(&self, level: usize) -> usize {
        if level == 0 {
            self.m0
        } else {
            self.params.m
        }
    }

    /// Sets `node`'s list at `level` to `chosen`. Another thread may already have linked
    /// back to `node` on this level (it became reachable from the level above); such links
    /// are merged in rather than overwritten.
    fn write_list(&self, node: u32, level: usize, chosen: Vec<Scored<u32>>) {
        let _guard = self.locks[node as usize].lock();
        let block = self.block(node, level);
        let cap = block.len() - 1;
        let existing = (block[0].load(Ordering::Acquire) as usize).min(cap);
        let list = if existing == 0 {
            chosen
        } else {
            let nv = self.vec_of(node);
            let mut all = chosen;
            for x in &block[1..=existing] {
                let id = x.load(Ordering::Relaxed);
                if all.iter().all(|c| c.id != id) {
                    all.push(Scored {
                        dist: self.metric.distance(nv, self.vec_of(id)),
                        id,
                    });
                }
            }
            all.sort_unstable();
            self.select(&all, cap)
        };
        let n = list.len().min(cap);
        for (i, c) in list.iter().take(n).enumerate() {
            block[1 + i].store(c.id, Ordering::Relaxed);
        }
        block[0].store(n as u32, Ordering::Release);
    }

    /// Adds `q` to `node`'s list at `level`, re-selecting the list when it is full.
    fn add_back_link(&self, node: u32, q: u32, dist: f32, level: usize) {
        let _guard = self.locks[node as usize].lock();
        let block = self.block(node, level);
        let cap = self.capacity(level);
        let n = (block[0].load(Ordering::Acquire) as usize).min(cap);
        if block[1..=n].iter().any(|x| x.load(Ordering::Relaxed) == q) {
            return;
        }
        if n < cap {
            block[1 + n].store(q, Ordering::Relaxed);
            block[0].store(n as u32 + 1, Ordering::Release);
            return;
        }
        let nv = self.vec_of(node);
        let mut cands: Vec<Scored<u32>> = Vec::with_capacity(n + 1);
        cands.push(Scored { dist, id: q });
        for x in &block[1..=n] {
            let id = x.load(Ordering::Relaxed);
            cands.push(Scored {
                dist: self.metric.distance(nv, self.vec_of(id)),
                id,
            });
        }
        cands.sort_unstable();
        let chosen = self.select(&cands, cap);
        for (i, c) in chosen.iter().enumerate() {
            block[1 + i].store(c.id, Ordering::Relaxed);
        }
        block[0].store(chosen.len() as u32, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_are_geometric() {
        let n = 100_000u64;
        let above0 = (0..n).filter(|s| level_for(7, *s, 16) > 0).count() as f64;
        // Expected fraction 1/16.
        assert!((above0 / n as f64 - 1.0 / 16.0).abs() < 0.01, "{above0}");
    }
}
