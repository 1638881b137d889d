//! Searching the graph: greedy descent through the upper levels, then a beam search at the
//! bottom, with per-thread scratch buffers so a query allocates almost nothing.

use std::cell::RefCell;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::Ordering;

use super::Hnsw;
use crate::index::{top_k_exact, IdFilter, Scored};

/// Cache lines of each newly reached neighbour's vector asked for before its distance is
/// computed. On 1M×384 (`bench/knn`), 1 to 4 lines gave 1.25–1.35x the queries per second
/// of none, and all 24 lines gave nothing: the hardware prefetcher streams the rest of a
/// vector once its start is on the way, and too many hints crowd the fill buffers.
const PREFETCH_LINES: usize = 2;

/// Per-thread buffers reused across searches.
///
/// `marks` is the visited set as a generation-counter array: a node is visited in this
/// search when its mark equals `generation`. Starting a search bumps the generation instead
/// of clearing the array; only on wrap-around (every 65,535 searches) is it zeroed.
pub(super) struct Scratch {
    marks: Vec<u16>,
    generation: u16,
    candidates: BinaryHeap<Reverse<Scored<u32>>>,
    results: BinaryHeap<Scored<u32>>,
    batch: Vec<u32>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::new());
}

impl Scratch {
    fn new() -> Self {
        Self {
            marks: Vec::new(),
            generation: 0,
            candidates: BinaryHeap::new(),
            results: BinaryHeap::new(),
            batch: Vec::new(),
        }
    }

    /// Runs `f` with this thread's scratch. If it is already in use further up the stack (a
    /// filter closure that itself searches), a fresh one is made instead.
    pub(super) fn with<R>(f: impl FnOnce(&mut Scratch) -> R) -> R {
        SCRATCH.with(|cell| match cell.try_borrow_mut() {
            Ok(mut s) => f(&mut s),
            Err(_) => f(&mut Scratch::new()),
        })
    }

    fn start(&mut self, nodes: usize) {
        if self.marks.len() < nodes {
            self.marks.resize(nodes, 0);
        }
        self.generation = self.generation.wrapping_add(1);
        if self.generation == 0 {
            self.marks.fill(0);
            self.generation = 1;
        }
        self.candidates.clear();
        self.results.clear();
    }
}

impl Hnsw {
    /// Greedy walk on one upper level: move to any closer neighbour until none is closer.
    pub(super) fn greedy(
        &self,
        q: &[f32],
        mut cur: u32,
        mut dist: f32,
        level: usize,
    ) -> (u32, f32) {
        loop {
            let block = self.block(cur, level);
            let n = (block[0].load(Ordering::Acquire) as usize).min(block.len() - 1);
            let mut moved = false;
            for x in &block[1..=n] {
                let id = x.load(Ordering::Relaxed);
                let d = self.metric.distance(q, self.vec_of(id));
                if d < dist {
                    dist = d;
                    cur = id;
                    moved = true;
                }
            }
            if !moved {
                return (cur, dist);
            }
        }
    }

    /// Beam search of width `ef` on `level` from `start`. Every reached node is expanded, but
    /// only nodes for which `keep` holds enter the results. Returns results nearest first.
    pub(super) fn beam(
        &self,
        q: &[f32],
        start: Scored<u32>,
        ef: usize,
        level: usize,
        scratch: &mut Scratch,
        keep: impl Fn(u32) -> bool,
    ) -> Vec<Scored<u32>> {
        scratch.start(self.ids.len());
        let Scratch {
            marks,
            generation,
            candidates,
            results,
            batch,
        } = scratch;
        let generation = *generation;
        marks[start.id as usize] = generation;
        candidates.push(Reverse(start));
        if keep(start.id) {
            results.push(start);
        }
        let mut bound = if results.len() >= ef {
            start.dist
        } else {
            f32::INFINITY
        };
        while let Some(Reverse(c)) = candidates.pop() {
            if c.dist > bound {
                break;
            }
            let block = self.block(c.id, level);
            // The next candidate's whole list is needed as soon as this one is done.
            if let Some(Reverse(next)) = candidates.peek() {
                crate::prefetch::slice(self.block(next.id, level), usize::MAX);
            }
            let n = (block[0].load(Ordering::Acquire) as usize).min(block.len() - 1);
            // Gather unvisited neighbours first, asking for their vectors as they are
            // found, then compute the distances in one run: the misses overlap.
            batch.clear();
            for x in &block[1..=n] {
                let id = x.load(Ordering::Relaxed);
                let mark = &mut marks[id as usize];
                if *mark != generation {
                    *mark = generation;
                    batch.push(id);
                    crate::prefetch::slice(self.vec_of(id), PREFETCH_LINES);
                }
            }
            let mut consider = |id: u32, d: f32| {
                if d < bound {
                    candidates.push(Reverse(Scored { dist: d, id }));
                    if keep(id) {
                        results.push(Scored { dist: d, id });
                        if results.len() > ef {
                            results.pop();
                        }
                        if results.len() >= ef {
                            if let Some(top) = results.peek() {
                                bound = top.dist;
                            }
                        }
                    }
                }
            };
            let (quads, rest) = batch.as_chunks::<4>();
            for ids in quads {
                let ds = self.metric.distance_x4(q, ids.map(|id| self.vec_of(id)));
                for (id, d) in ids.iter().zip(ds) {
                    consider(*id, d);
                }
            }
            for &id in rest {
                consider(id, self.metric.distance(q, self.vec_of(id)));
            }
        }
        let mut out: Vec<Scored<u32>> = results.drain().collect();
        out.sort_unstable();
        out
    }

    /// The search behind [`crate::VectorIndex::search`]; `query` has length `dim`.
    pub(super) fn search_knn(
        &self,
        query: &[f32],
        k: usize,
        ef: usize,
        filter: Option<IdFilter<'_>>,
    ) -> Vec<(u64, f32)> {
        let live = self.ids.len() - self.n_deleted;
        if k == 0 || live == 0 {
            return Vec::new();
        }
        let Some((entry, top)) = self.entry_point() else {
            return Vec::new();
        };
        let q = self.pad_query(query);
        let mut cur = entry;
        let mut dist = self.metric.distance(&q, self.vec_of(cur));
        for level in (1..=top).rev() {
            (cur, dist) = self.greedy(&q, cur, dist, level);
        }
        let start = Scored { dist, id: cur };
        let ef = ef.max(k);
        let found = Scratch::with(|s| {
            if filter.is_none() && self.n_deleted == 0 {
                self.beam(&q, start, ef, 0, s, |_| true)
            } else {
                self.beam(&q, start, ef, 0, s, |slot| self.allowed(slot, filter))
            }
        });
        let mut out: Vec<(u64, f32)> = found
            .iter()
            .take(k)
            .map(|c| (self.ids[c.id as usize], self.metric.score(c.dist)))
            .collect();
        if out.len() < k && out.len() < live {
            // Too few results: either the filter is very selective or tombstones cut the
            // graph. An exact scan over the allowed nodes is then both correct and cheap
            // relative to the graph walk that just failed.
            let items = (0..self.ids.len() as u32)
                .filter(|s| self.allowed(*s, filter))
                .map(|s| (self.metric.distance(&q, self.vec_of(s)), s as u64));
            out = top_k_exact(k, items)
                .into_iter()
                .map(|(d, s)| (self.ids[s as usize], self.metric.score(d)))
                .collect();
        }
        out
    }

    #[inline]
    fn allowed(&self, slot: u32, filter: Option<IdFilter<'_>>) -> bool {
        !self.deleted[slot as usize] && filter.is_none_or(|f| f(self.ids[slot as usize]))
    }
}
