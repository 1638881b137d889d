//! BM25 keyword search over chunks, stored in a tantivy index directory.
//!
//! Fields: `chunk_id` (u64: indexed for deletes, fast for reading hits back), `source`
//! (raw string, for deletes and the source filter) and `text` (tokenised, not stored: the
//! text lives in the metadata store). The `text` tokenizer, [`MixedTokenizer`], emits
//! words for alphabetic scripts and, for CJK runs (which have no spaces), every character
//! and every pair of adjacent characters. Bigrams give phrase-like precision for Chinese
//! words (most are two characters); unigrams keep one-character queries working. Latin
//! tokens are lower-cased and stemmed (English).
//!
//! Queries are built directly from the same analyzer as a disjunction of term queries, so
//! user input is never parsed as query syntax and cannot fail to parse.

use std::path::{Path, PathBuf};

use parking_lot::Mutex;
use tantivy::collector::TopDocs;
use tantivy::query::{BooleanQuery, Occur, Query, TermQuery};
use tantivy::schema::{
    Field, IndexRecordOption, Schema, TextFieldIndexing, TextOptions, FAST, INDEXED, STORED, STRING,
};
use tantivy::tokenizer::{
    Language, LowerCaser, RemoveLongFilter, Stemmer, TextAnalyzer, Token, TokenStream, Tokenizer,
};
use tantivy::{doc, Index, IndexReader, IndexWriter, ReloadPolicy, TantivyDocument, Term};

use crate::encoder::is_cjk;

const TOKENIZER: &str = "moltbot_mixed";
const WRITER_MEMORY: usize = 32 * 1024 * 1024;

/// Why the keyword index failed.
#[derive(Debug, thiserror::Error)]
pub enum KeywordError {
    /// Tantivy reported an error for the index at `path`.
    #[error("keyword index at {}: {source}", path.display())]
    Index {
        path: PathBuf,
        #[source]
        source: tantivy::TantivyError,
    },
    /// The index folder could not be created.
    #[error("cannot create keyword index folder {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl KeywordError {
    /// Stable name used in metrics labels and JSON error bodies.
    pub fn kind(&self) -> &'static str {
        match self {
            KeywordError::Index { .. } => "keyword_index",
            KeywordError::Io { .. } => "keyword_io",
        }
    }
}

/// Word tokens for alphabetic scripts; unigrams plus bigrams for CJK runs.
#[derive(Debug, Clone, Copy, Default)]
pub struct MixedTokenizer;

impl MixedTokenizer {
    fn split(text: &str) -> Vec<Token> {
        let mut out = Vec::new();
        let push = |from: usize, to: usize, out: &mut Vec<Token>| {
            let position = out.len();
            out.push(Token {
                offset_from: from,
                offset_to: to,
                position,
                text: text[from..to].to_string(),
                position_length: 1,
            });
        };
        let mut word_start: Option<usize> = None;
        let mut prev_cjk: Option<(usize, usize)> = None;
        for (i, c) in text.char_indices() {
            let end = i + c.len_utf8();
            if is_cjk(c) {
                if let Some(s) = word_start.take() {
                    push(s, i, &mut out);
                }
                push(i, end, &mut out);
                if let Some((ps, pe)) = prev_cjk {
                    if pe == i {
                        push(ps, end, &mut out);
                    }
                }
                prev_cjk = Some((i, end));
            } else {
                prev_cjk = None;
                if c.is_alphanumeric() {
                    word_start.get_or_insert(i);
                } else if let Some(s) = word_start.take() {
                    push(s, i, &mut out);
                }
            }
        }
        if let Some(s) = word_start {
            push(s, text.len(), &mut out);
        }
        out
    }
}

/// Stream that owns its tokens, so filters can edit them.
pub struct OwnedStream {
    tokens: Vec<Token>,
    next: usize,
    /// Returned if a caller asks for the token before `advance` (a contract breach we
    /// answer with an empty token rather than a panic).
    empty: Token,
}

impl TokenStream for OwnedStream {
    fn advance(&mut self) -> bool {
        if self.next < self.tokens.len() {
            self.next += 1;
            true
        } else {
            false
        }
    }

    fn token(&self) -> &Token {
        match self.next.checked_sub(1) {
            Some(i) => &self.tokens[i],
            None => &self.empty,
        }
    }

    fn token_mut(&mut self) -> &mut Token {
        match self.next.checked_sub(1) {
            Some(i) => &mut self.tokens[i],
            None => &mut self.empty,
        }
    }
}

impl Tokenizer for MixedTokenizer {
    type TokenStream<'a> = OwnedStream;

    fn token_stream<'a>(&'a mut self, text: &'a str) -> OwnedStream {
        OwnedStream {
            tokens: Self::split(text),
            next: 0,
            empty: Token::default(),
        }
    }
}

fn analyzer() -> TextAnalyzer {
    TextAnalyzer::builder(MixedTokenizer)
        .filter(RemoveLongFilter::limit(64))
        .filter(LowerCaser)
        .filter(Stemmer::new(Language::English))
        .build()
}

/// The analysed terms of `text`, as indexed (for tests and query building).
pub fn analyze(text: &str) -> Vec<String> {
    let mut a = analyzer();
    let mut stream = a.token_stream(text);
    let mut out = Vec::new();
    while stream.advance() {
        out.push(stream.token().text.clone());
    }
    out
}

/// The BM25 index of chunk texts.
pub struct KeywordIndex {
    path: PathBuf,
    reader: IndexReader,
    writer: Mutex<IndexWriter<TantivyDocument>>,
    f_id: Field,
    f_source: Field,
    f_text: Field,
}

impl std::fmt::Debug for KeywordIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeywordIndex")
            .field("path", &self.path)
            .finish()
    }
}

impl KeywordIndex {
    /// Opens the index in `dir`, creating it (and the folder) when missing.
    pub fn open(dir: &Path) -> Result<Self, KeywordError> {
        let err = |source| KeywordError::Index {
            path: dir.to_path_buf(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(|source| KeywordError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let index = if dir.join("meta.json").exists() {
            Index::open_in_dir(dir).map_err(err)?
        } else {
            Index::create_in_dir(dir, schema()).map_err(err)?
        };
        index.tokenizers().register(TOKENIZER, analyzer());
        let schema = index.schema();
        let field = |name: &str| {
            schema.get_field(name).map_err(|_| KeywordError::Index {
                path: dir.to_path_buf(),
                source: tantivy::TantivyError::SchemaError(format!(
                    "field `{name}` is missing; the folder holds an index of another layout"
                )),
            })
        };
        let (f_id, f_source, f_text) = (field("chunk_id")?, field("source")?, field("text")?);
        let writer = index
            .writer_with_num_threads(1, WRITER_MEMORY)
            .map_err(err)?;
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()
            .map_err(err)?;
        Ok(Self {
            path: dir.to_path_buf(),
            reader,
            writer: Mutex::new(writer),
            f_id,
            f_source,
            f_text,
        })
    }

    fn err(&self, source: tantivy::TantivyError) -> KeywordError {
        KeywordError::Index {
            path: self.path.clone(),
            source,
        }
    }

    /// Stages one chunk; visible to searches after [`KeywordIndex::commit`].
    pub fn add(&self, id: u64, source: &str, text: &str) -> Result<(), KeywordError> {
        let w = self.writer.lock();
        w.add_document(doc!(
            self.f_id => id,
            self.f_source => source,
            self.f_text => text,
        ))
        .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Stages the removal of every chunk of `source`.
    pub fn remove_source(&self, source: &str) {
        self.writer
            .lock()
            .delete_term(Term::from_field_text(self.f_source, source));
    }

    /// Stages the removal of one chunk.
    pub fn remove(&self, id: u64) {
        self.writer
            .lock()
            .delete_term(Term::from_field_u64(self.f_id, id));
    }

    /// Makes staged changes durable and visible.
    pub fn commit(&self) -> Result<(), KeywordError> {
        self.writer.lock().commit().map_err(|e| self.err(e))?;
        self.reader.reload().map_err(|e| self.err(e))
    }

    /// Stages the removal of every document (before a rebuild).
    pub fn clear(&self) -> Result<(), KeywordError> {
        self.writer
            .lock()
            .delete_all_documents()
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    /// Drops staged changes.
    pub fn rollback(&self) -> Result<(), KeywordError> {
        self.writer
            .lock()
            .rollback()
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    /// Number of indexed chunks.
    pub fn len(&self) -> u64 {
        self.reader.searcher().num_docs()
    }

    /// True when nothing is indexed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Best `k` chunks for `query` as `(chunk_id, bm25 score)`, restricted to `sources`
    /// when given.
    pub fn search(
        &self,
        query: &str,
        k: usize,
        sources: Option<&[String]>,
    ) -> Result<Vec<(u64, f32)>, KeywordError> {
        let mut terms = analyze(query);
        terms.sort();
        terms.dedup();
        if terms.is_empty() || k == 0 {
            return Ok(Vec::new());
        }
        let should: Vec<(Occur, Box<dyn Query>)> = terms
            .iter()
            .map(|t| {
                let q: Box<dyn Query> = Box::new(TermQuery::new(
                    Term::from_field_text(self.f_text, t),
                    IndexRecordOption::WithFreqs,
                ));
                (Occur::Should, q)
            })
            .collect();
        let mut query: Box<dyn Query> = Box::new(BooleanQuery::new(should));
        if let Some(sources) = sources {
            let any: Vec<(Occur, Box<dyn Query>)> = sources
                .iter()
                .map(|s| {
                    let q: Box<dyn Query> = Box::new(TermQuery::new(
                        Term::from_field_text(self.f_source, s),
                        IndexRecordOption::Basic,
                    ));
                    (Occur::Should, q)
                })
                .collect();
            query = Box::new(BooleanQuery::new(vec![
                (Occur::Must, query),
                (Occur::Must, Box::new(BooleanQuery::new(any))),
            ]));
        }
        let searcher = self.reader.searcher();
        let top = searcher
            .search(&query, &TopDocs::with_limit(k).order_by_score())
            .map_err(|e| self.err(e))?;
        let mut out = Vec::with_capacity(top.len());
        for (score, addr) in top {
            let column = searcher
                .segment_reader(addr.segment_ord)
                .fast_fields()
                .u64("chunk_id")
                .map_err(|e| self.err(e))?;
            if let Some(id) = column.first(addr.doc_id) {
                out.push((id, score));
            }
        }
        Ok(out)
    }
}

fn schema() -> Schema {
    let mut b = Schema::builder();
    b.add_u64_field("chunk_id", INDEXED | STORED | FAST);
    b.add_text_field("source", STRING | STORED);
    let text = TextOptions::default().set_indexing_options(
        TextFieldIndexing::default()
            .set_tokenizer(TOKENIZER)
            .set_index_option(IndexRecordOption::WithFreqsAndPositions),
    );
    b.add_text_field("text", text);
    b.build()
}
