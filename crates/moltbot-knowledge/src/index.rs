//! The [`VectorIndex`] trait, its error type, and [`BruteForce`], the exact index used as the
//! oracle for the HNSW tests and as the fallback for very selective filters.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::distance;
use crate::persist::{ByteReader, ByteWriter};

/// How two vectors are compared. Scores returned by [`VectorIndex::search`] are always
/// "higher is better".
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Metric {
    /// Inner product; on L2-normalised vectors this is the cosine similarity. Score = dot.
    InnerProduct,
    /// Euclidean distance. Score = minus the squared distance.
    L2,
}

impl Metric {
    /// Internal distance, smaller is closer.
    #[inline]
    pub(crate) fn distance(self, a: &[f32], b: &[f32]) -> f32 {
        match self {
            Metric::InnerProduct => -distance::dot(a, b),
            Metric::L2 => distance::l2_squared(a, b),
        }
    }

    /// Internal distances of `q` to four vectors at once (lengths: equal multiples of 8).
    #[inline]
    pub(crate) fn distance_x4(self, q: &[f32], v: [&[f32]; 4]) -> [f32; 4] {
        match self {
            Metric::InnerProduct => distance::dot_x4(q, v).map(|d| -d),
            Metric::L2 => distance::l2_squared_x4(q, v),
        }
    }

    /// Turns an internal distance back into the public score.
    #[inline]
    pub(crate) fn score(self, dist: f32) -> f32 {
        -dist
    }

    pub(crate) fn to_byte(self) -> u8 {
        match self {
            Metric::InnerProduct => 0,
            Metric::L2 => 1,
        }
    }

    pub(crate) fn from_byte(b: u8) -> Option<Metric> {
        match b {
            0 => Some(Metric::InnerProduct),
            1 => Some(Metric::L2),
            _ => None,
        }
    }
}

/// Why an index operation failed.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// A vector or query had the wrong length.
    #[error("vector length must equal the index dimension {expected}, got {got}")]
    DimMismatch { expected: usize, got: usize },
    /// A vector held NaN or infinity.
    #[error("vector for id {id} holds a non-finite value (NaN or infinity)")]
    NonFinite { id: u64 },
    /// A construction parameter is out of range.
    #[error("`{name}` {rule}, got {value}")]
    InvalidParam {
        name: &'static str,
        rule: &'static str,
        value: usize,
    },
    /// The index holds as many vectors as its internal 32-bit slots allow.
    #[error("the index is full: at most {limit} vectors (live plus deleted) fit in one index")]
    Full { limit: usize },
    /// Reading or writing the index file failed.
    #[error("cannot access index file {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file is not an index file of a version this build reads, or it is damaged.
    #[error("index file {} is unusable: {reason}\nhint: delete it and rebuild the index", path.display())]
    Corrupt { path: PathBuf, reason: String },
}

impl IndexError {
    /// Stable name used in metrics labels and JSON error bodies.
    pub fn kind(&self) -> &'static str {
        match self {
            IndexError::DimMismatch { .. } => "index_dim_mismatch",
            IndexError::NonFinite { .. } => "index_non_finite",
            IndexError::InvalidParam { .. } => "index_invalid_param",
            IndexError::Full { .. } => "index_full",
            IndexError::Io { .. } => "index_io",
            IndexError::Corrupt { .. } => "index_corrupt",
        }
    }
}

/// Filter on external ids: `true` keeps the id in the results.
pub type IdFilter<'a> = &'a dyn Fn(u64) -> bool;

/// A nearest-neighbour index over fixed-length `f32` vectors keyed by caller-chosen `u64` ids.
///
/// Mutation takes `&mut self`; `search` takes `&self` and may run from many threads at once.
pub trait VectorIndex: Send + Sync {
    /// Length of every stored vector.
    fn dim(&self) -> usize;
    /// The comparison used for scores.
    fn metric(&self) -> Metric;
    /// Number of live (not deleted) vectors.
    fn len(&self) -> usize;
    /// True when no live vector is stored.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Adds `vector` under `id`; an existing `id` is replaced.
    fn insert(&mut self, id: u64, vector: &[f32]) -> Result<(), IndexError>;
    /// Removes `id`; returns whether it was present.
    fn remove(&mut self, id: u64) -> bool;
    /// The `k` best `(id, score)` pairs, best first. `ef` widens the search of approximate
    /// indexes (ignored by exact ones); `filter` drops ids for which it returns `false`.
    fn search(
        &self,
        query: &[f32],
        k: usize,
        ef: Option<usize>,
        filter: Option<IdFilter<'_>>,
    ) -> Result<Vec<(u64, f32)>, IndexError>;
    /// Writes the index to `path` (replacing it atomically).
    fn save(&self, path: &Path) -> Result<(), IndexError>;
    /// Reads an index written by [`VectorIndex::save`].
    fn load(path: &Path) -> Result<Self, IndexError>
    where
        Self: Sized;
}

pub(crate) fn check_vector(dim: usize, id: u64, v: &[f32]) -> Result<(), IndexError> {
    if v.len() != dim {
        return Err(IndexError::DimMismatch {
            expected: dim,
            got: v.len(),
        });
    }
    if v.iter().any(|x| !x.is_finite()) {
        return Err(IndexError::NonFinite { id });
    }
    Ok(())
}

/// A distance paired with an id, ordered by distance (ties by id) so heaps can hold it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Scored<I = u64> {
    pub dist: f32,
    pub id: I,
}

impl<I: Ord> PartialEq for Scored<I> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == std::cmp::Ordering::Equal
    }
}

impl<I: Ord> Eq for Scored<I> {}

impl<I: Ord> PartialOrd for Scored<I> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl<I: Ord> Ord for Scored<I> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.dist
            .total_cmp(&other.dist)
            .then_with(|| self.id.cmp(&other.id))
    }
}

/// Keeps the `k` smallest `(dist, id)` pairs seen, for exact scans.
pub(crate) fn top_k_exact(k: usize, items: impl Iterator<Item = (f32, u64)>) -> Vec<(f32, u64)> {
    use std::collections::BinaryHeap;
    let mut heap: BinaryHeap<Scored> = BinaryHeap::with_capacity(k + 1);
    if k == 0 {
        return Vec::new();
    }
    for (d, id) in items {
        if heap.len() < k {
            heap.push(Scored { dist: d, id });
        } else if let Some(top) = heap.peek() {
            if d < top.dist {
                heap.pop();
                heap.push(Scored { dist: d, id });
            }
        }
    }
    let mut out: Vec<(f32, u64)> = heap.into_iter().map(|s| (s.dist, s.id)).collect();
    out.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    out
}

const BRUTE_MAGIC: &[u8; 8] = b"MBFLAT\0\0";
const BRUTE_VERSION: u32 = 1;

/// Exact search by scanning every vector. The oracle for tests; fine up to ~100k vectors.
#[derive(Debug, Clone)]
pub struct BruteForce {
    dim: usize,
    metric: Metric,
    ids: Vec<u64>,
    vectors: Vec<f32>,
    slot: HashMap<u64, usize>,
}

impl BruteForce {
    /// An empty index of vectors of length `dim`.
    pub fn new(dim: usize, metric: Metric) -> Result<Self, IndexError> {
        if dim == 0 {
            return Err(IndexError::InvalidParam {
                name: "dim",
                rule: "must be at least 1",
                value: dim,
            });
        }
        Ok(Self {
            dim,
            metric,
            ids: Vec::new(),
            vectors: Vec::new(),
            slot: HashMap::new(),
        })
    }
}

impl VectorIndex for BruteForce {
    fn dim(&self) -> usize {
        self.dim
    }

    fn metric(&self) -> Metric {
        self.metric
    }

    fn len(&self) -> usize {
        self.ids.len()
    }

    fn insert(&mut self, id: u64, vector: &[f32]) -> Result<(), IndexError> {
        check_vector(self.dim, id, vector)?;
        if let Some(&s) = self.slot.get(&id) {
            self.vectors[s * self.dim..(s + 1) * self.dim].copy_from_slice(vector);
            return Ok(());
        }
        self.slot.insert(id, self.ids.len());
        self.ids.push(id);
        self.vectors.extend_from_slice(vector);
        Ok(())
    }

    fn remove(&mut self, id: u64) -> bool {
        let Some(s) = self.slot.remove(&id) else {
            return false;
        };
        let last = self.ids.len() - 1;
        if s != last {
            let moved = self.ids[last];
            self.ids[s] = moved;
            self.vectors
                .copy_within(last * self.dim..(last + 1) * self.dim, s * self.dim);
            self.slot.insert(moved, s);
        }
        self.ids.pop();
        self.vectors.truncate(last * self.dim);
        true
    }

    fn search(
        &self,
        query: &[f32],
        k: usize,
        _ef: Option<usize>,
        filter: Option<IdFilter<'_>>,
    ) -> Result<Vec<(u64, f32)>, IndexError> {
        if query.len() != self.dim {
            return Err(IndexError::DimMismatch {
                expected: self.dim,
                got: query.len(),
            });
        }
        let metric = self.metric;
        let items = self
            .ids
            .iter()
            .zip(self.vectors.chunks_exact(self.dim))
            .filter(|(id, _)| filter.is_none_or(|f| f(**id)))
            .map(|(id, v)| (metric.distance(query, v), *id));
        Ok(top_k_exact(k, items)
            .into_iter()
            .map(|(d, id)| (id, metric.score(d)))
            .collect())
    }

    fn save(&self, path: &Path) -> Result<(), IndexError> {
        let mut w = ByteWriter::new(BRUTE_MAGIC, BRUTE_VERSION);
        w.u8(self.metric.to_byte());
        w.u64(self.dim as u64);
        w.u64(self.ids.len() as u64);
        w.u64s(&self.ids);
        w.f32s(&self.vectors);
        w.finish(path)
    }

    fn load(path: &Path) -> Result<Self, IndexError> {
        let mut r = ByteReader::open(path, BRUTE_MAGIC, BRUTE_VERSION)?;
        let metric_byte = r.u8()?;
        let metric = Metric::from_byte(metric_byte)
            .ok_or_else(|| r.corrupt(format!("unknown metric code {metric_byte}")))?;
        let dim = r.len_field("dim", 1 << 20)?;
        let n = r.len_field("count", 1 << 32)?;
        let ids = r.u64s(n)?;
        let vectors = r.f32s(n * dim)?;
        r.expect_end()?;
        let slot = ids.iter().enumerate().map(|(i, id)| (*id, i)).collect();
        Ok(Self {
            dim,
            metric,
            ids,
            vectors,
            slot,
        })
    }
}
