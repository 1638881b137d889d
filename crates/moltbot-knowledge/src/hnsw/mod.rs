//! Our own HNSW (hierarchical navigable small world) graph index.
//!
//! Why not `hnsw_rs` or `instant-distance`? We need four things at once that neither gives
//! us together: (1) a memory layout we control — one flat `Vec<f32>` of padded vectors and
//! one flat array of fixed-size level-0 neighbour lists, so a hop touches two contiguous
//! regions and the file format is those arrays written out as-is; (2) deletes (tombstones
//! filtered out of results, plus compaction) and id filters during search, which
//! `instant-distance` lacks entirely; (3) a versioned, checksummed file that reloads with
//! one sequential read, with no `unsafe` (the workspace denies it); (4) speed at least equal
//! to faiss' HNSW, which `bench/knn` measures in the same run (see `bench/knn/RESULTS.md`).
//!
//! # Structure
//! - Vectors live in `vectors`, each padded with zeros to a multiple of 8 floats (`stride`)
//!   so the distance kernels never take a scalar tail; zeros change neither dot products nor
//!   L2 distances.
//! - Level 0 lists hold up to `m0 = 2 * m` neighbours; upper levels up to `m`. Each list is a
//!   block `[count, n_1, .., n_cap]` of `AtomicU32`. Atomics (relaxed loads are plain moves
//!   on x86) let a parallel build publish links while other threads read them without locks;
//!   writers of one node's lists hold that node's mutex. A new node picks up to the full
//!   list's worth of neighbours on each level (2·M at level 0, as faiss does).
//! - A search asks for the first cache lines of each newly reached neighbour's vector, and
//!   for the next candidate's list, before it needs them (`crate::prefetch`).
//! - Node levels come from a hash of `(seed, slot)`, so a build is reproducible in its
//!   levels whatever the thread count.
//! - Deleted nodes stay in the graph as tombstones (they still route searches) and never
//!   appear in results. When tombstones exceed `compact_ratio` of the nodes the graph is
//!   rebuilt from the live vectors ([`Hnsw::compact`]).
//!
//! Files: `build.rs` (insertion, neighbour selection), `search.rs` (greedy descent, beam
//! search, scratch buffers), `file.rs` (save and load).

mod build;
mod file;
mod search;

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use parking_lot::Mutex;

use crate::index::{check_vector, IdFilter, IndexError, Metric, VectorIndex};

/// Construction and search parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HnswParams {
    /// Neighbours per node on upper levels; level 0 keeps twice as many. 16 is a good default.
    pub m: usize,
    /// Beam width while inserting. Higher builds slower and searches better.
    pub ef_construction: usize,
    /// Beam width for searches that pass `ef = None`.
    pub ef_search: usize,
    /// Seed of the level assignment.
    pub seed: u64,
    /// Fraction of tombstones at which a removal triggers [`Hnsw::compact`] (0 disables).
    pub compact_ratio: f32,
}

impl Default for HnswParams {
    fn default() -> Self {
        Self {
            m: 16,
            ef_construction: 200,
            ef_search: 64,
            seed: 0x6d6f_6c74_626f_7431,
            compact_ratio: 0.3,
        }
    }
}

impl HnswParams {
    fn validate(&self) -> Result<(), IndexError> {
        let bad = |name, rule, value| Err(IndexError::InvalidParam { name, rule, value });
        if !(2..=128).contains(&self.m) {
            return bad("m", "must be between 2 and 128", self.m);
        }
        if self.ef_construction < 1 || self.ef_construction > 100_000 {
            return bad(
                "ef_construction",
                "must be between 1 and 100000",
                self.ef_construction,
            );
        }
        if self.ef_search < 1 || self.ef_search > 100_000 {
            return bad("ef_search", "must be between 1 and 100000", self.ef_search);
        }
        Ok(())
    }
}

/// Most levels a node can have; with m >= 2 the chance of reaching it is below 2^-15.
const MAX_LEVEL: usize = 15;
/// Slots are `u32`; `u32::MAX` is kept free as a marker.
const MAX_NODES: usize = u32::MAX as usize - 1;
const NO_ENTRY: u64 = u64::MAX;

/// An HNSW index. See the module docs for the layout.
pub struct Hnsw {
    params: HnswParams,
    metric: Metric,
    dim: usize,
    stride: usize,
    m0: usize,
    vectors: Vec<f32>,
    ids: Vec<u64>,
    levels: Vec<u8>,
    deleted: Vec<bool>,
    n_deleted: usize,
    slot_of: HashMap<u64, u32>,
    links0: Vec<AtomicU32>,
    upper_off: Vec<u32>,
    upper: Vec<AtomicU32>,
    locks: Vec<Mutex<()>>,
    /// `(level << 32) | slot` of the entry point, or `NO_ENTRY`.
    entry: AtomicU64,
    entry_lock: Mutex<()>,
}

impl std::fmt::Debug for Hnsw {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hnsw")
            .field("params", &self.params)
            .field("metric", &self.metric)
            .field("dim", &self.dim)
            .field("nodes", &self.ids.len())
            .field("deleted", &self.n_deleted)
            .finish()
    }
}

impl Hnsw {
    /// An empty index for vectors of length `dim`.
    pub fn new(dim: usize, metric: Metric, params: HnswParams) -> Result<Self, IndexError> {
        params.validate()?;
        if dim == 0 || dim > 1 << 16 {
            return Err(IndexError::InvalidParam {
                name: "dim",
                rule: "must be between 1 and 65536",
                value: dim,
            });
        }
        Ok(Self {
            params,
            metric,
            dim,
            stride: dim.div_ceil(8) * 8,
            m0: 2 * params.m,
            vectors: Vec::new(),
            ids: Vec::new(),
            levels: Vec::new(),
            deleted: Vec::new(),
            n_deleted: 0,
            slot_of: HashMap::new(),
            links0: Vec::new(),
            upper_off: Vec::new(),
            upper: Vec::new(),
            locks: Vec::new(),
            entry: AtomicU64::new(NO_ENTRY),
            entry_lock: Mutex::new(()),
        })
    }

    /// The parameters the index was built with.
    pub fn params(&self) -> HnswParams {
        self.params
    }

    /// Changes the default beam width of searches.
    pub fn set_ef_search(&mut self, ef: usize) {
        self.params.ef_search = ef.max(1);
    }

    /// Nodes in the graph, tombstones included.
    pub fn node_count(&self) -> usize {
        self.ids.len()
    }

    /// Tombstoned nodes awaiting compaction.
    pub fn deleted_count(&self) -> usize {
        self.n_deleted
    }

    /// Whether `id` is stored and live.
    pub fn contains(&self, id: u64) -> bool {
        self.slot_of.contains_key(&id)
    }

    /// Live ids, in slot order.
    pub fn ids(&self) -> impl Iterator<Item = u64> + '_ {
        self.ids
            .iter()
            .zip(&self.deleted)
            .filter(|(_, d)| !**d)
            .map(|(id, _)| *id)
    }

    /// The stored vector of a live `id` (without padding).
    pub fn vector(&self, id: u64) -> Option<&[f32]> {
        let s = *self.slot_of.get(&id)? as usize;
        Some(&self.vectors[s * self.stride..s * self.stride + self.dim])
    }

    /// Bytes held by the index's arrays (vectors, links, ids, bookkeeping).
    pub fn memory_bytes(&self) -> usize {
        self.vectors.capacity() * 4
            + (self.links0.capacity() + self.upper.capacity() + self.upper_off.capacity()) * 4
            + self.ids.capacity() * 8
            + self.levels.capacity()
            + self.deleted.capacity()
            + self.locks.capacity() * std::mem::size_of::<Mutex<()>>()
            + self.slot_of.capacity() * 16
    }

    /// Inserts many vectors at once, linking them on all rayon threads. `vectors` holds
    /// `ids.len() * dim` floats, row after row. An id already stored (or repeated within the
    /// batch) is replaced; the last occurrence wins.
    pub fn insert_batch(&mut self, ids: &[u64], vectors: &[f32]) -> Result<(), IndexError> {
        if vectors.len() != ids.len() * self.dim {
            return Err(IndexError::DimMismatch {
                expected: ids.len() * self.dim,
                got: vectors.len(),
            });
        }
        for (id, v) in ids.iter().zip(vectors.chunks_exact(self.dim)) {
            check_vector(self.dim, *id, v)?;
        }
        let mut last: HashMap<u64, usize> = HashMap::with_capacity(ids.len());
        for (i, id) in ids.iter().enumerate() {
            last.insert(*id, i);
        }
        if self.ids.len() + last.len() > MAX_NODES {
            return Err(IndexError::Full { limit: MAX_NODES });
        }
        for id in last.keys() {
            self.tombstone(*id);
        }
        let first = self.ids.len();
        self.reserve(last.len());
        for (i, id) in ids.iter().enumerate() {
            if last.get(id) == Some(&i) {
                self.push_node(*id, &vectors[i * self.dim..(i + 1) * self.dim]);
            }
        }
        let end = self.ids.len();
        let mut next = first;
        if self.entry.load(Ordering::Relaxed) == NO_ENTRY && next < end {
            self.link(next as u32);
            next += 1;
        }
        let this = &*self;
        if end - next > 64 {
            use rayon::prelude::*;
            (next..end)
                .into_par_iter()
                .with_min_len(16)
                .for_each(|s| this.link(s as u32));
        } else {
            (next..end).for_each(|s| this.link(s as u32));
        }
        self.maybe_compact();
        Ok(())
    }

    /// Rebuilds the graph from the live vectors, dropping tombstones and freeing their
    /// memory. Slots are renumbered; ids stay.
    pub fn compact(&mut self) {
        let mut fresh = match Hnsw::new(self.dim, self.metric, self.params) {
            Ok(h) => h,
            // Unreachable: these parameters were validated when `self` was made.
            Err(_) => return,
        };
        let live: Vec<u64> = self.ids().collect();
        let mut flat = Vec::with_capacity(live.len() * self.dim);
        for s in 0..self.ids.len() {
            if !self.deleted[s] {
                flat.extend_from_slice(&self.vectors[s * self.stride..s * self.stride + self.dim]);
            }
        }
        // Unreachable error: every vector was checked when it was first inserted.
        if fresh.insert_batch(&live, &flat).is_ok() {
            *self = fresh;
        }
    }

    fn maybe_compact(&mut self) {
        let ratio = self.params.compact_ratio;
        if ratio > 0.0
            && self.n_deleted >= 64
            && self.n_deleted as f32 > ratio * self.ids.len() as f32
        {
            self.compact();
        }
    }

    fn tombstone(&mut self, id: u64) -> bool {
        let Some(s) = self.slot_of.remove(&id) else {
            return false;
        };
        self.deleted[s as usize] = true;
        self.n_deleted += 1;
        true
    }

    fn reserve(&mut self, extra: usize) {
        self.vectors.reserve(extra * self.stride);
        self.ids.reserve(extra);
        self.levels.reserve(extra);
        self.deleted.reserve(extra);
        self.links0.reserve(extra * (self.m0 + 1));
        self.upper_off.reserve(extra);
        self.locks.reserve(extra);
        self.slot_of.reserve(extra);
    }

    /// Appends a node with its vector and empty link lists; linking happens in `link`.
    fn push_node(&mut self, id: u64, v: &[f32]) {
        let slot = self.ids.len();
        let level = build::level_for(self.params.seed, slot as u64, self.params.m);
        self.vectors.extend_from_slice(v);
        self.vectors
            .extend(std::iter::repeat_n(0.0, self.stride - self.dim));
        self.ids.push(id);
        self.levels.push(level as u8);
        self.deleted.push(false);
        self.slot_of.insert(id, slot as u32);
        self.links0
            .extend(std::iter::repeat_with(|| AtomicU32::new(0)).take(self.m0 + 1));
        self.upper_off.push(self.upper.len() as u32);
        self.upper
            .extend(std::iter::repeat_with(|| AtomicU32::new(0)).take(level * (self.params.m + 1)));
        self.locks.push(Mutex::new(()));
    }

    #[inline]
    fn vec_of(&self, slot: u32) -> &[f32] {
        let s = slot as usize * self.stride;
        &self.vectors[s..s + self.stride]
    }

    /// The list block `[count, neighbours..]` of `slot` at `level`.
    #[inline]
    fn block(&self, slot: u32, level: usize) -> &[AtomicU32] {
        if level == 0 {
            let s = slot as usize * (self.m0 + 1);
            &self.links0[s..s + self.m0 + 1]
        } else {
            let w = self.params.m + 1;
            let s = self.upper_off[slot as usize] as usize + (level - 1) * w;
            &self.upper[s..s + w]
        }
    }

    fn entry_point(&self) -> Option<(u32, usize)> {
        let e = self.entry.load(Ordering::Acquire);
        (e != NO_ENTRY).then_some(((e & 0xffff_ffff) as u32, (e >> 32) as usize))
    }

    fn pad_query(&self, query: &[f32]) -> Vec<f32> {
        let mut q = Vec::with_capacity(self.stride);
        q.extend_from_slice(query);
        q.resize(self.stride, 0.0);
        q
    }
}

impl VectorIndex for Hnsw {
    fn dim(&self) -> usize {
        self.dim
    }

    fn metric(&self) -> Metric {
        self.metric
    }

    fn len(&self) -> usize {
        self.ids.len() - self.n_deleted
    }

    fn insert(&mut self, id: u64, vector: &[f32]) -> Result<(), IndexError> {
        self.insert_batch(&[id], vector)
    }

    fn remove(&mut self, id: u64) -> bool {
        let removed = self.tombstone(id);
        if removed {
            self.maybe_compact();
        }
        removed
    }

    fn search(
        &self,
        query: &[f32],
        k: usize,
        ef: Option<usize>,
        filter: Option<IdFilter<'_>>,
    ) -> Result<Vec<(u64, f32)>, IndexError> {
        if query.len() != self.dim {
            return Err(IndexError::DimMismatch {
                expected: self.dim,
                got: query.len(),
            });
        }
        Ok(self.search_knn(query, k, ef.unwrap_or(self.params.ef_search), filter))
    }

    fn save(&self, path: &Path) -> Result<(), IndexError> {
        file::save(self, path)
    }

    fn load(path: &Path) -> Result<Self, IndexError> {
        file::load(path)
    }
}
