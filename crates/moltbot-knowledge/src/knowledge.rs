//! [`Knowledge`]: the document store that ties extraction, chunking, embedding, the HNSW
//! index and BM25 together under one folder.
//!
//! Folder layout:
//! - `knowledge.sqlite3` — sources, chunks (text, offsets, heading, vector). The truth.
//! - `vectors.hnsw` — the HNSW index, saved after every change.
//! - `keyword/` — the tantivy BM25 index.
//! - `derived.json` — the change counter both derived indexes were last synced to.
//!
//! On open, if `derived.json` does not match the counter in SQLite (a crash between the
//! steps of a change), or the HNSW file is unreadable, the derived indexes are rebuilt from
//! SQLite without re-encoding anything.
//!
//! Concurrency: searches take a read lock on the vector index and briefly the SQLite mutex
//! (to read hit texts); changes are serialised by a writer mutex and hold the index write
//! lock only while inserting. Encoding runs outside every lock. These are std-style
//! blocking locks, never held across an `.await` (this crate is synchronous).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use moltbot_core::encoder::{EncodeError, Encoder};
use parking_lot::{Mutex, RwLock};
use sha2::{Digest, Sha256};

use crate::bm25::{KeywordError, KeywordIndex};
use crate::chunk::{chunk_text, ChunkOptions};
use crate::extract::{collect_files, extract_file, ExtractError};
use crate::hnsw::{Hnsw, HnswParams};
use crate::index::{IndexError, Metric, VectorIndex};
use crate::store::{NewChunk, Store};

/// Rank constant of reciprocal rank fusion (Cormack et al. use 60).
const RRF_K: f32 = 60.0;

/// Why a knowledge-store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum KnowledgeError {
    /// The encoder failed.
    #[error(transparent)]
    Encode(#[from] EncodeError),
    /// The vector index failed.
    #[error(transparent)]
    Index(#[from] IndexError),
    /// The keyword index failed.
    #[error(transparent)]
    Keyword(#[from] KeywordError),
    /// A document could not be read or extracted.
    #[error(transparent)]
    Extract(#[from] ExtractError),
    /// The metadata database failed.
    #[error("knowledge database {}: {source}", path.display())]
    Db {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    /// A file in the store folder could not be read or written.
    #[error("cannot access {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The store was built with another encoder; its vectors would not be comparable.
    #[error("the store in {} was built with encoder `{stored}`, got `{given}`\nhint: open it with the same encoder, or remove the folder and add the documents again", dir.display())]
    EncoderMismatch {
        dir: PathBuf,
        stored: String,
        given: String,
    },
    /// The encoder returned a vector count or length other than promised.
    #[error("encoder `{name}` returned {got}, expected {expected}")]
    EncoderContract {
        name: String,
        expected: String,
        got: String,
    },
    /// A caller-supplied argument is out of range.
    #[error("`{name}` {rule}, got {value}")]
    InvalidArgument {
        name: &'static str,
        rule: &'static str,
        value: String,
    },
}

impl KnowledgeError {
    /// Stable name used in metrics labels and JSON error bodies.
    pub fn kind(&self) -> &'static str {
        match self {
            KnowledgeError::Encode(e) => e.kind(),
            KnowledgeError::Index(e) => e.kind(),
            KnowledgeError::Keyword(e) => e.kind(),
            KnowledgeError::Extract(e) => e.kind(),
            KnowledgeError::Db { .. } => "knowledge_db",
            KnowledgeError::Io { .. } => "knowledge_io",
            KnowledgeError::EncoderMismatch { .. } => "knowledge_encoder_mismatch",
            KnowledgeError::EncoderContract { .. } => "knowledge_encoder_contract",
            KnowledgeError::InvalidArgument { .. } => "knowledge_invalid_argument",
        }
    }
}

/// Tuning of a store.
#[derive(Debug, Clone, Copy)]
pub struct KnowledgeOptions {
    /// Chunk sizing.
    pub chunk: ChunkOptions,
    /// HNSW parameters (used when the index is first built).
    pub hnsw: HnswParams,
    /// Texts per encoder call.
    pub encode_batch: usize,
}

impl Default for KnowledgeOptions {
    fn default() -> Self {
        Self {
            chunk: ChunkOptions::default(),
            hnsw: HnswParams::default(),
            encode_batch: 32,
        }
    }
}

/// One stored source.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SourceInfo {
    /// The source name: a file's canonical path, or the name given to `add_text`.
    pub source: String,
    /// Number of chunks.
    pub chunks: usize,
    /// Size of the original content in bytes.
    pub bytes: u64,
    /// When it was (last) added, in seconds since the Unix epoch.
    pub added_at: u64,
}

/// What happened to one source in an add.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum AddStatus {
    /// New source.
    Added,
    /// Known source whose content changed; its chunks were replaced.
    Updated,
    /// Known source with the same content hash; nothing was done.
    Unchanged,
}

/// Progress of [`Knowledge::add_path`], reported after each file.
#[derive(Debug, Clone)]
pub struct AddProgress<'a> {
    /// Files handled so far, this one included.
    pub done: usize,
    /// Files found.
    pub total: usize,
    /// The file just handled.
    pub path: &'a Path,
    /// What happened to it, or the error text.
    pub outcome: Result<AddStatus, String>,
}

/// Summary of [`Knowledge::add_path`].
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct AddReport {
    /// Sources added for the first time.
    pub added: Vec<String>,
    /// Sources whose chunks were replaced.
    pub updated: Vec<String>,
    /// Sources skipped because their content hash is unchanged.
    pub unchanged: Vec<String>,
    /// Files that could not be read or extracted, with the reason.
    pub failed: Vec<(String, String)>,
    /// Chunks written.
    pub chunks: usize,
}

/// Which rankings a search uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum SearchMode {
    /// Reciprocal rank fusion of the vector and keyword rankings.
    #[default]
    Hybrid,
    /// Vector (cosine) similarity only.
    Vector,
    /// BM25 only.
    Keyword,
}

/// Search options.
#[derive(Debug, Clone, Default)]
pub struct SearchOptions {
    /// Only chunks of these sources, when given.
    pub sources: Option<Vec<String>>,
    /// Which rankings to use.
    pub mode: SearchMode,
}

/// One search result.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Hit {
    /// The chunk's id.
    pub chunk_id: u64,
    /// Its source.
    pub source: String,
    /// Its heading path, joined with ` > `.
    pub heading: String,
    /// Its text.
    pub text: String,
    /// Byte offset of the chunk in the source's extracted text.
    pub start: usize,
    /// Byte offset one past its end.
    pub end: usize,
    /// Cosine (vector mode), BM25 (keyword mode) or fused RRF score (hybrid); higher is
    /// better.
    pub score: f32,
    /// 1-based rank in the vector ranking, if it was in it.
    pub vector_rank: Option<usize>,
    /// Cosine similarity to the query, if the chunk was in the vector ranking: unlike the
    /// fused score it is comparable across queries, so callers threshold on it.
    pub vector_score: Option<f32>,
    /// 1-based rank in the keyword ranking, if it was in it.
    pub keyword_rank: Option<usize>,
}

struct Vectors {
    index: Hnsw,
    /// Chunk id → source, for source filters.
    source_of: HashMap<u64, Arc<str>>,
}

/// A persistent, thread-safe knowledge store. See the module docs.
pub struct Knowledge {
    dir: PathBuf,
    encoder: Arc<dyn Encoder>,
    opts: KnowledgeOptions,
    store: Mutex<Store>,
    vectors: RwLock<Vectors>,
    keyword: KeywordIndex,
    writer: Mutex<()>,
}

impl std::fmt::Debug for Knowledge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Knowledge")
            .field("dir", &self.dir)
            .field("encoder", &self.encoder.name())
            .finish()
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn embed_text(heading: &str, text: &str) -> String {
    if heading.is_empty() {
        text.to_string()
    } else {
        format!("{heading}\n{text}")
    }
}

impl Knowledge {
    /// Opens (or creates) the store in `dir` with default options.
    pub fn open(dir: impl AsRef<Path>, encoder: Arc<dyn Encoder>) -> Result<Self, KnowledgeError> {
        Self::open_with(dir, encoder, KnowledgeOptions::default())
    }

    /// Opens (or creates) the store in `dir`.
    pub fn open_with(
        dir: impl AsRef<Path>,
        encoder: Arc<dyn Encoder>,
        opts: KnowledgeOptions,
    ) -> Result<Self, KnowledgeError> {
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir).map_err(|source| KnowledgeError::Io {
            path: dir.clone(),
            source,
        })?;
        let store = Store::open(&dir.join("knowledge.sqlite3"))?;
        let given = format!("{}/{}", encoder.name(), encoder.dim());
        // `name/dim`; the same weights at another precision fit the stored vectors.
        let comparable = |s: &str| {
            s.rsplit_once('/')
                .map(|(name, dim)| format!("{}/{dim}", moltbot_core::weights_of(name)))
        };
        match store.meta("encoder")? {
            Some(stored) if comparable(&stored) != comparable(&given) => {
                return Err(KnowledgeError::EncoderMismatch { dir, stored, given })
            }
            Some(_) => {}
            None => store.set_meta("encoder", &given)?,
        }
        let keyword = KeywordIndex::open(&dir.join("keyword"))?;
        let generation = store.generation()?;
        let synced = read_synced(&dir);
        let hnsw_path = dir.join("vectors.hnsw");
        let loaded = if synced == Some(generation) && hnsw_path.exists() {
            match Hnsw::load(&hnsw_path) {
                Ok(h) if h.dim() == encoder.dim() => Some(h),
                Ok(_) => None,
                Err(e) => {
                    tracing::warn!(cause = %e, "vector index unusable; rebuilding from the database");
                    None
                }
            }
        } else {
            None
        };
        let mut source_of = HashMap::new();
        let mut fresh = Hnsw::new(encoder.dim(), Metric::InnerProduct, opts.hnsw)?;
        let mut rebuild_ids = Vec::new();
        let mut rebuild_vecs = Vec::new();
        let rebuild_keyword = synced != Some(generation) || keyword.len() != store.chunk_count()?;
        if rebuild_keyword {
            keyword.clear()?;
        }
        let need_vectors = loaded.is_none();
        let mut dim_error = None;
        store.for_each_chunk(|id, source, heading, text, v| {
            source_of.insert(id, Arc::<str>::from(source));
            if need_vectors {
                if v.len() == encoder.dim() {
                    rebuild_ids.push(id);
                    rebuild_vecs.extend_from_slice(&v);
                } else {
                    dim_error = Some(v.len());
                }
            }
            if rebuild_keyword {
                if let Err(e) = keyword.add(id, source, &embed_text(heading, text)) {
                    tracing::warn!(cause = %e, "cannot re-index chunk {id}");
                }
            }
        })?;
        if let Some(got) = dim_error {
            return Err(KnowledgeError::EncoderContract {
                name: encoder.name().to_string(),
                expected: format!("stored vectors of length {}", encoder.dim()),
                got: format!("a stored vector of length {got}"),
            });
        }
        let index = match loaded {
            Some(h) if h.len() == source_of.len() && source_of.keys().all(|id| h.contains(*id)) => {
                h
            }
            Some(_) => {
                // The file is readable but out of step with the database: rebuild.
                return Self::open_after_reset(dir, encoder, opts, store, keyword);
            }
            None => {
                fresh.insert_batch(&rebuild_ids, &rebuild_vecs)?;
                fresh
            }
        };
        if rebuild_keyword {
            keyword.commit()?;
        }
        let k = Self {
            dir,
            encoder,
            opts,
            store: Mutex::new(store),
            vectors: RwLock::new(Vectors { index, source_of }),
            keyword,
            writer: Mutex::new(()),
        };
        if need_vectors || rebuild_keyword {
            k.persist()?;
        }
        Ok(k)
    }

    fn open_after_reset(
        dir: PathBuf,
        encoder: Arc<dyn Encoder>,
        opts: KnowledgeOptions,
        store: Store,
        keyword: KeywordIndex,
    ) -> Result<Self, KnowledgeError> {
        let path = dir.join("vectors.hnsw");
        std::fs::remove_file(&path).map_err(|source| KnowledgeError::Io { path, source })?;
        drop(store);
        drop(keyword);
        Self::open_with(dir, encoder, opts)
    }

    /// The folder of this store.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Number of chunks stored.
    pub fn chunk_count(&self) -> usize {
        self.vectors.read().index.len()
    }

    fn encode(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, KnowledgeError> {
        let mut out = Vec::with_capacity(texts.len());
        for batch in texts.chunks(self.opts.encode_batch.max(1)) {
            let refs: Vec<&str> = batch.iter().map(String::as_str).collect();
            let vs = self.encoder.encode(&refs)?;
            if vs.len() != refs.len() {
                return Err(KnowledgeError::EncoderContract {
                    name: self.encoder.name().to_string(),
                    expected: format!("{} vectors", refs.len()),
                    got: format!("{}", vs.len()),
                });
            }
            if let Some(bad) = vs.iter().find(|v| v.len() != self.encoder.dim()) {
                return Err(KnowledgeError::EncoderContract {
                    name: self.encoder.name().to_string(),
                    expected: format!("vectors of length {}", self.encoder.dim()),
                    got: format!("a vector of length {}", bad.len()),
                });
            }
            out.extend(vs);
        }
        Ok(out)
    }

    /// Adds a file or every supported file under a folder. Files whose content is unchanged
    /// since they were added are skipped; changed files have their chunks replaced. A file
    /// that cannot be read or extracted is reported in [`AddReport::failed`] and the others
    /// are still added. `progress` is called after each file.
    pub fn add_path(
        &self,
        path: impl AsRef<Path>,
        progress: &mut dyn FnMut(&AddProgress<'_>),
    ) -> Result<AddReport, KnowledgeError> {
        let files = collect_files(path.as_ref())?;
        let mut report = AddReport::default();
        let total = files.len();
        for (i, file) in files.iter().enumerate() {
            let source = std::fs::canonicalize(file)
                .unwrap_or_else(|_| file.clone())
                .to_string_lossy()
                .into_owned();
            let outcome =
                extract_file(file)
                    .map_err(KnowledgeError::from)
                    .and_then(|(bytes, text)| {
                        let hash = hex_sha256(&bytes);
                        self.put(&source, &text, &hash, bytes.len() as u64)
                    });
            let shown = match outcome {
                Ok((status, chunks)) => {
                    report.chunks += chunks;
                    match status {
                        AddStatus::Added => report.added.push(source),
                        AddStatus::Updated => report.updated.push(source),
                        AddStatus::Unchanged => report.unchanged.push(source),
                    }
                    Ok(status)
                }
                Err(e @ (KnowledgeError::Extract(_) | KnowledgeError::InvalidArgument { .. })) => {
                    let msg = e.to_string();
                    report.failed.push((source, msg.clone()));
                    Err(msg)
                }
                Err(e) => return Err(e),
            };
            progress(&AddProgress {
                done: i + 1,
                total,
                path: file,
                outcome: shown,
            });
        }
        Ok(report)
    }

    /// Adds (or replaces) a text under the name `source`; returns what happened and the
    /// number of chunks stored.
    pub fn add_text(&self, source: &str, text: &str) -> Result<(AddStatus, usize), KnowledgeError> {
        if source.is_empty() {
            return Err(KnowledgeError::InvalidArgument {
                name: "source",
                rule: "must not be empty",
                value: "\"\"".into(),
            });
        }
        self.put(
            source,
            text,
            &hex_sha256(text.as_bytes()),
            text.len() as u64,
        )
    }

    fn put(
        &self,
        source: &str,
        text: &str,
        hash: &str,
        bytes: u64,
    ) -> Result<(AddStatus, usize), KnowledgeError> {
        let _w = self.writer.lock();
        let previous = self.store.lock().source_hash(source)?;
        if previous.as_deref() == Some(hash) {
            return Ok((AddStatus::Unchanged, 0));
        }
        let chunks = chunk_text(text, &self.opts.chunk);
        let headings: Vec<String> = chunks.iter().map(|c| c.heading.join(" > ")).collect();
        let inputs: Vec<String> = chunks
            .iter()
            .zip(&headings)
            .map(|(c, h)| embed_text(h, &c.text))
            .collect();
        let vectors = self.encode(&inputs)?;
        let rows: Vec<NewChunk<'_>> = chunks
            .iter()
            .zip(&headings)
            .zip(&vectors)
            .map(|((c, h), v)| NewChunk {
                heading: h,
                text: &c.text,
                start: c.start,
                end: c.end,
                vector: v,
            })
            .collect();
        let (old_ids, new_ids) = {
            let mut store = self.store.lock();
            let old = store.chunk_ids_of(source)?;
            let new = store.replace_source(source, hash, bytes, now_secs(), &rows)?;
            store.bump_generation()?;
            (old, new)
        };
        self.keyword.remove_source(source);
        for (id, input) in new_ids.iter().zip(&inputs) {
            self.keyword.add(*id, source, input)?;
        }
        self.keyword.commit()?;
        {
            let mut v = self.vectors.write();
            for id in &old_ids {
                v.index.remove(*id);
                v.source_of.remove(id);
            }
            let flat: Vec<f32> = vectors.iter().flatten().copied().collect();
            v.index.insert_batch(&new_ids, &flat)?;
            let name: Arc<str> = Arc::from(source);
            for id in &new_ids {
                v.source_of.insert(*id, name.clone());
            }
        }
        self.persist()?;
        let status = if previous.is_some() {
            AddStatus::Updated
        } else {
            AddStatus::Added
        };
        Ok((status, new_ids.len()))
    }

    /// Removes a source; returns how many chunks it had (0 when unknown).
    pub fn remove_source(&self, source: &str) -> Result<usize, KnowledgeError> {
        let _w = self.writer.lock();
        let ids = {
            let mut store = self.store.lock();
            let ids = store.remove_source(source)?;
            store.bump_generation()?;
            ids
        };
        self.keyword.remove_source(source);
        self.keyword.commit()?;
        {
            let mut v = self.vectors.write();
            for id in &ids {
                v.index.remove(*id);
                v.source_of.remove(id);
            }
        }
        self.persist()?;
        Ok(ids.len())
    }

    /// Every source, sorted by name.
    pub fn list(&self) -> Result<Vec<SourceInfo>, KnowledgeError> {
        self.store.lock().list()
    }

    /// Saves the vector index and records that both derived indexes match the database.
    fn persist(&self) -> Result<(), KnowledgeError> {
        let generation = self.store.lock().generation()?;
        self.vectors
            .read()
            .index
            .save(&self.dir.join("vectors.hnsw"))?;
        let path = self.dir.join("derived.json");
        let body = format!("{{\"generation\":{generation}}}\n");
        let tmp = self.dir.join("derived.json.tmp");
        std::fs::write(&tmp, body)
            .and_then(|_| std::fs::rename(&tmp, &path))
            .map_err(|source| KnowledgeError::Io { path, source })
    }

    /// The `k` best chunks for `query`.
    pub fn search(
        &self,
        query: &str,
        k: usize,
        opts: &SearchOptions,
    ) -> Result<Vec<Hit>, KnowledgeError> {
        self.search_with_vector(query, None, k, opts)
    }

    /// The encoder the store's vectors come from.
    pub fn encoder(&self) -> &Arc<dyn Encoder> {
        &self.encoder
    }

    /// [`Knowledge::search`] with the query's vector already computed by this store's
    /// encoder (the router has it from understanding the turn). A vector of the wrong
    /// length is ignored and the query is encoded.
    pub fn search_with_vector(
        &self,
        query: &str,
        query_vector: Option<&[f32]>,
        k: usize,
        opts: &SearchOptions,
    ) -> Result<Vec<Hit>, KnowledgeError> {
        if k == 0 || k > 1000 {
            return Err(KnowledgeError::InvalidArgument {
                name: "k",
                rule: "must be between 1 and 1000",
                value: k.to_string(),
            });
        }
        // Each ranking contributes a deeper list than `k` so fusion can promote chunks
        // that are good in both without being first in either.
        let depth = (k * 4).max(40);
        let sources: Option<HashSet<&str>> = opts
            .sources
            .as_ref()
            .map(|s| s.iter().map(String::as_str).collect());

        let vector_hits: Vec<(u64, f32)> = if opts.mode == SearchMode::Keyword {
            Vec::new()
        } else {
            let encoded;
            let q = match query_vector.filter(|v| v.len() == self.encoder.dim()) {
                Some(v) => v,
                None => {
                    encoded = self.encode(&[query.to_string()])?;
                    encoded.first().map(Vec::as_slice).unwrap_or_default()
                }
            };
            let v = self.vectors.read();
            let filter = |id: u64| {
                sources
                    .as_ref()
                    .is_none_or(|set| v.source_of.get(&id).is_some_and(|s| set.contains(&**s)))
            };
            let f: Option<&dyn Fn(u64) -> bool> = if sources.is_some() {
                Some(&filter)
            } else {
                None
            };
            v.index.search(q, depth, Some(depth.max(64)), f)?
        };
        let keyword_hits: Vec<(u64, f32)> = if opts.mode == SearchMode::Vector {
            Vec::new()
        } else {
            self.keyword.search(query, depth, opts.sources.as_deref())?
        };

        let mut fused: HashMap<u64, Fused> = HashMap::new();
        let lists = [(&vector_hits, true), (&keyword_hits, false)];
        for (hits, is_vector) in lists {
            for (rank, (id, score)) in hits.iter().enumerate() {
                let e = fused.entry(*id).or_default();
                if is_vector {
                    e.vector_rank = Some(rank + 1);
                    e.vector_score = Some(*score);
                } else {
                    e.keyword_rank = Some(rank + 1);
                }
                e.score += match opts.mode {
                    SearchMode::Hybrid => 1.0 / (RRF_K + (rank + 1) as f32),
                    SearchMode::Vector | SearchMode::Keyword => *score,
                };
            }
        }
        let mut ranked: Vec<(u64, Fused)> = fused.into_iter().collect();
        ranked.sort_by(|a, b| b.1.score.total_cmp(&a.1.score).then(a.0.cmp(&b.0)));
        ranked.truncate(k);
        let ids: Vec<u64> = ranked.iter().map(|(id, _)| *id).collect();
        let rows = self.store.lock().chunks_by_id(&ids)?;
        let by_id: HashMap<u64, _> = rows.into_iter().map(|r| (r.id, r)).collect();
        Ok(ranked
            .into_iter()
            .filter_map(|(id, f)| {
                let r = by_id.get(&id)?;
                Some(Hit {
                    chunk_id: id,
                    source: r.source.clone(),
                    heading: r.heading.clone(),
                    text: r.text.clone(),
                    start: r.start,
                    end: r.end,
                    score: f.score,
                    vector_rank: f.vector_rank,
                    vector_score: f.vector_score,
                    keyword_rank: f.keyword_rank,
                })
            })
            .collect())
    }
}

/// A chunk's fused score and its ranks in the two lists.
#[derive(Debug, Default, Clone, Copy)]
struct Fused {
    score: f32,
    vector_rank: Option<usize>,
    vector_score: Option<f32>,
    keyword_rank: Option<usize>,
}

fn hex_sha256(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

fn read_synced(dir: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(dir.join("derived.json")).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v.get("generation")?.as_u64()
}
