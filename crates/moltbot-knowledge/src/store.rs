//! The SQLite side of [`crate::Knowledge`]: sources, chunks (with their vectors) and a few
//! metadata keys. It is the source of truth; the HNSW file and the tantivy folder are
//! derived from it and rebuilt when they disagree with it.

use std::path::{Path, PathBuf};

use rusqlite::{params, Connection, OptionalExtension};

use crate::knowledge::{KnowledgeError, SourceInfo};

const SCHEMA: &str = "
PRAGMA journal_mode = WAL;
PRAGMA synchronous = NORMAL;
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS sources (
    source TEXT PRIMARY KEY,
    hash TEXT NOT NULL,
    bytes INTEGER NOT NULL,
    chunks INTEGER NOT NULL,
    added_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS chunks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    source TEXT NOT NULL,
    heading TEXT NOT NULL,
    text TEXT NOT NULL,
    start INTEGER NOT NULL,
    end INTEGER NOT NULL,
    vector BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS chunks_by_source ON chunks(source);
";

/// A chunk row as stored.
#[derive(Debug, Clone)]
pub(crate) struct ChunkRow {
    pub id: u64,
    pub source: String,
    pub heading: String,
    pub text: String,
    pub start: usize,
    pub end: usize,
}

/// A chunk about to be stored.
pub(crate) struct NewChunk<'a> {
    pub heading: &'a str,
    pub text: &'a str,
    pub start: usize,
    pub end: usize,
    pub vector: &'a [f32],
}

pub(crate) struct Store {
    path: PathBuf,
    conn: Connection,
}

impl Store {
    pub(crate) fn open(path: &Path) -> Result<Self, KnowledgeError> {
        let err = |source| KnowledgeError::Db {
            path: path.to_path_buf(),
            source,
        };
        let conn = Connection::open(path).map_err(err)?;
        conn.execute_batch(SCHEMA).map_err(err)?;
        Ok(Self {
            path: path.to_path_buf(),
            conn,
        })
    }

    fn err(&self, source: rusqlite::Error) -> KnowledgeError {
        KnowledgeError::Db {
            path: self.path.clone(),
            source,
        }
    }

    pub(crate) fn meta(&self, key: &str) -> Result<Option<String>, KnowledgeError> {
        self.conn
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()
            .map_err(|e| self.err(e))
    }

    pub(crate) fn set_meta(&self, key: &str, value: &str) -> Result<(), KnowledgeError> {
        self.conn
            .execute(
                "INSERT INTO meta (key, value) VALUES (?1, ?2)
                 ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                [key, value],
            )
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    /// Bumps and returns the change counter the derived indexes are checked against.
    pub(crate) fn bump_generation(&self) -> Result<u64, KnowledgeError> {
        let g = self.generation()? + 1;
        self.set_meta("generation", &g.to_string())?;
        Ok(g)
    }

    pub(crate) fn generation(&self) -> Result<u64, KnowledgeError> {
        Ok(self
            .meta("generation")?
            .and_then(|v| v.parse().ok())
            .unwrap_or(0))
    }

    pub(crate) fn source_hash(&self, source: &str) -> Result<Option<String>, KnowledgeError> {
        self.conn
            .query_row(
                "SELECT hash FROM sources WHERE source = ?1",
                [source],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    pub(crate) fn chunk_ids_of(&self, source: &str) -> Result<Vec<u64>, KnowledgeError> {
        let mut st = self
            .conn
            .prepare_cached("SELECT id FROM chunks WHERE source = ?1")
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map([source], |r| r.get::<_, i64>(0))
            .map_err(|e| self.err(e))?;
        rows.map(|r| r.map(|v| v as u64).map_err(|e| self.err(e)))
            .collect()
    }

    /// Replaces every chunk of `source` in one transaction; returns the new chunk ids.
    pub(crate) fn replace_source(
        &mut self,
        source: &str,
        hash: &str,
        bytes: u64,
        added_at: u64,
        chunks: &[NewChunk<'_>],
    ) -> Result<Vec<u64>, KnowledgeError> {
        let path = self.path.clone();
        let err = |source| KnowledgeError::Db {
            path: path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(err)?;
        tx.execute("DELETE FROM chunks WHERE source = ?1", [source])
            .map_err(err)?;
        let mut ids = Vec::with_capacity(chunks.len());
        {
            let mut st = tx
                .prepare_cached(
                    "INSERT INTO chunks (source, heading, text, start, end, vector)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )
                .map_err(err)?;
            for c in chunks {
                let blob: Vec<u8> = c.vector.iter().flat_map(|x| x.to_le_bytes()).collect();
                st.execute(params![
                    source,
                    c.heading,
                    c.text,
                    c.start as i64,
                    c.end as i64,
                    blob
                ])
                .map_err(err)?;
                ids.push(tx.last_insert_rowid() as u64);
            }
        }
        tx.execute(
            "INSERT INTO sources (source, hash, bytes, chunks, added_at) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT(source) DO UPDATE SET hash = excluded.hash, bytes = excluded.bytes,
               chunks = excluded.chunks, added_at = excluded.added_at",
            params![source, hash, bytes as i64, chunks.len() as i64, added_at as i64],
        )
        .map_err(err)?;
        tx.commit().map_err(err)?;
        Ok(ids)
    }

    /// Deletes a source and its chunks; returns the removed chunk ids.
    pub(crate) fn remove_source(&mut self, source: &str) -> Result<Vec<u64>, KnowledgeError> {
        let ids = self.chunk_ids_of(source)?;
        let path = self.path.clone();
        let err = |source| KnowledgeError::Db {
            path: path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(err)?;
        tx.execute("DELETE FROM chunks WHERE source = ?1", [source])
            .map_err(err)?;
        tx.execute("DELETE FROM sources WHERE source = ?1", [source])
            .map_err(err)?;
        tx.commit().map_err(err)?;
        Ok(ids)
    }

    pub(crate) fn list(&self) -> Result<Vec<SourceInfo>, KnowledgeError> {
        let mut st = self
            .conn
            .prepare_cached("SELECT source, chunks, bytes, added_at FROM sources ORDER BY source")
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map([], |r| {
                Ok(SourceInfo {
                    source: r.get(0)?,
                    chunks: r.get::<_, i64>(1)? as usize,
                    bytes: r.get::<_, i64>(2)? as u64,
                    added_at: r.get::<_, i64>(3)? as u64,
                })
            })
            .map_err(|e| self.err(e))?;
        rows.map(|r| r.map_err(|e| self.err(e))).collect()
    }

    pub(crate) fn chunk_count(&self) -> Result<u64, KnowledgeError> {
        self.conn
            .query_row("SELECT COUNT(*) FROM chunks", [], |r| r.get::<_, i64>(0))
            .map(|n| n as u64)
            .map_err(|e| self.err(e))
    }

    /// Calls `f(id, source, heading, text, vector)` for every chunk, in id order.
    pub(crate) fn for_each_chunk(
        &self,
        mut f: impl FnMut(u64, &str, &str, &str, Vec<f32>),
    ) -> Result<(), KnowledgeError> {
        let mut st = self
            .conn
            .prepare("SELECT id, source, heading, text, vector FROM chunks ORDER BY id")
            .map_err(|e| self.err(e))?;
        let mut rows = st.query([]).map_err(|e| self.err(e))?;
        while let Some(r) = rows.next().map_err(|e| self.err(e))? {
            let id: i64 = r.get(0).map_err(|e| self.err(e))?;
            let source: String = r.get(1).map_err(|e| self.err(e))?;
            let heading: String = r.get(2).map_err(|e| self.err(e))?;
            let text: String = r.get(3).map_err(|e| self.err(e))?;
            let blob: Vec<u8> = r.get(4).map_err(|e| self.err(e))?;
            let v = blob
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            f(id as u64, &source, &heading, &text, v);
        }
        Ok(())
    }

    pub(crate) fn chunks_by_id(&self, ids: &[u64]) -> Result<Vec<ChunkRow>, KnowledgeError> {
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT id, source, heading, text, start, end FROM chunks WHERE id = ?1",
            )
            .map_err(|e| self.err(e))?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let row = st
                .query_row([*id as i64], |r| {
                    Ok(ChunkRow {
                        id: r.get::<_, i64>(0)? as u64,
                        source: r.get(1)?,
                        heading: r.get(2)?,
                        text: r.get(3)?,
                        start: r.get::<_, i64>(4)? as usize,
                        end: r.get::<_, i64>(5)? as usize,
                    })
                })
                .optional()
                .map_err(|e| self.err(e))?;
            out.extend(row);
        }
        Ok(out)
    }
}
