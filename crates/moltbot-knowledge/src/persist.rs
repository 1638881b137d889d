//! The small binary container shared by the index files.
//!
//! Layout: `magic (8 bytes) | version u32 | payload | total length u64 | crc32 u32`, all
//! little-endian. The trailer's length catches truncation before the checksum is even
//! computed, and the CRC catches bit rot and partial overwrites. Files are written to a
//! temporary sibling and renamed into place, so a crash never leaves a half-written index
//! under the real name. Loading is one sequential `read` of the whole file, then a parse of
//! the buffer: no `mmap` (the workspace denies `unsafe`), but a plain read of a flat file is
//! close to disk speed.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::index::IndexError;

const TRAILER: usize = 12;

pub(crate) struct ByteWriter {
    buf: Vec<u8>,
    out: Option<(PathBuf, std::io::BufWriter<std::fs::File>)>,
    hasher: crc32fast::Hasher,
    written: u64,
    err: Option<std::io::Error>,
    // For writers made with `new`, the path is only known at `finish`.
    pending: bool,
}

impl ByteWriter {
    /// A writer that buffers everything until `finish(path)`; for small files.
    pub(crate) fn new(magic: &[u8; 8], version: u32) -> Self {
        let mut w = Self {
            buf: Vec::new(),
            out: None,
            hasher: crc32fast::Hasher::new(),
            written: 0,
            err: None,
            pending: true,
        };
        w.bytes(magic);
        w.u32(version);
        w
    }

    /// A writer that streams to `path`'s temporary sibling as it goes; for large files.
    pub(crate) fn create(path: &Path, magic: &[u8; 8], version: u32) -> Result<Self, IndexError> {
        let tmp = tmp_path(path);
        let file = std::fs::File::create(&tmp).map_err(|source| IndexError::Io {
            path: tmp.clone(),
            source,
        })?;
        let mut w = Self {
            buf: Vec::with_capacity(1 << 16),
            out: Some((tmp, std::io::BufWriter::with_capacity(1 << 20, file))),
            hasher: crc32fast::Hasher::new(),
            written: 0,
            err: None,
            pending: false,
        };
        w.bytes(magic);
        w.u32(version);
        Ok(w)
    }

    fn flush_buf(&mut self) {
        if self.pending || self.buf.is_empty() {
            return;
        }
        if let Some((_, out)) = self.out.as_mut() {
            if self.err.is_none() {
                if let Err(e) = out.write_all(&self.buf) {
                    self.err = Some(e);
                }
            }
        }
        self.buf.clear();
    }

    pub(crate) fn bytes(&mut self, b: &[u8]) {
        self.hasher.update(b);
        self.written += b.len() as u64;
        self.buf.extend_from_slice(b);
        if !self.pending && self.buf.len() >= 1 << 16 {
            self.flush_buf();
        }
    }

    pub(crate) fn u8(&mut self, v: u8) {
        self.bytes(&[v]);
    }

    pub(crate) fn u32(&mut self, v: u32) {
        self.bytes(&v.to_le_bytes());
    }

    pub(crate) fn u64(&mut self, v: u64) {
        self.bytes(&v.to_le_bytes());
    }

    pub(crate) fn u64s(&mut self, v: &[u64]) {
        let mut tmp = Vec::with_capacity(8 * 8192);
        for chunk in v.chunks(8192) {
            tmp.clear();
            for x in chunk {
                tmp.extend_from_slice(&x.to_le_bytes());
            }
            self.bytes(&tmp);
        }
    }

    pub(crate) fn u32s(&mut self, v: impl Iterator<Item = u32>) {
        let mut tmp = Vec::with_capacity(4 * 16384);
        for x in v {
            tmp.extend_from_slice(&x.to_le_bytes());
            if tmp.len() >= 4 * 16384 {
                self.bytes(&tmp);
                tmp.clear();
            }
        }
        self.bytes(&tmp);
    }

    pub(crate) fn f32s(&mut self, v: &[f32]) {
        let mut tmp = Vec::with_capacity(4 * 16384);
        for chunk in v.chunks(16384) {
            tmp.clear();
            for x in chunk {
                tmp.extend_from_slice(&x.to_le_bytes());
            }
            self.bytes(&tmp);
        }
    }

    /// Writes the trailer and renames the temporary file onto `path`.
    pub(crate) fn finish(mut self, path: &Path) -> Result<(), IndexError> {
        let total = self.written + TRAILER as u64;
        self.u64(total);
        let crc = self.hasher.clone().finalize();
        self.buf.extend_from_slice(&crc.to_le_bytes());
        let io = |source| IndexError::Io {
            path: path.to_path_buf(),
            source,
        };
        if self.pending {
            let tmp = tmp_path(path);
            std::fs::write(&tmp, &self.buf).map_err(io)?;
            return std::fs::rename(&tmp, path).map_err(io);
        }
        self.flush_buf();
        if let Some(e) = self.err.take() {
            return Err(io(e));
        }
        let Some((tmp, out)) = self.out.take() else {
            return Ok(());
        };
        let file = out.into_inner().map_err(|e| io(e.into_error()))?;
        file.sync_all().map_err(io)?;
        drop(file);
        std::fs::rename(&tmp, path).map_err(io)
    }
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".tmp");
    path.with_file_name(name)
}

pub(crate) struct ByteReader {
    path: PathBuf,
    data: Vec<u8>,
    pos: usize,
    end: usize,
}

impl ByteReader {
    /// Reads the whole file and checks magic, version, length and checksum.
    pub(crate) fn open(path: &Path, magic: &[u8; 8], version: u32) -> Result<Self, IndexError> {
        let data = std::fs::read(path).map_err(|source| IndexError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let corrupt = |reason: String| IndexError::Corrupt {
            path: path.to_path_buf(),
            reason,
        };
        if data.len() < 12 + TRAILER {
            return Err(corrupt(format!(
                "file is {} bytes, shorter than the smallest index file ({} bytes)",
                data.len(),
                12 + TRAILER
            )));
        }
        if &data[..8] != magic {
            return Err(corrupt(format!(
                "wrong magic bytes {:?}, expected {:?}",
                String::from_utf8_lossy(&data[..8]),
                String::from_utf8_lossy(magic)
            )));
        }
        let found = u32::from_le_bytes([data[8], data[9], data[10], data[11]]);
        if found != version {
            return Err(corrupt(format!(
                "format version {found} is not supported, this build reads version {version}"
            )));
        }
        let n = data.len();
        let mut len_bytes = [0u8; 8];
        len_bytes.copy_from_slice(&data[n - 12..n - 4]);
        let recorded = u64::from_le_bytes(len_bytes);
        if recorded != n as u64 {
            return Err(corrupt(format!(
                "file is {n} bytes but its trailer records {recorded} (truncated or appended to)"
            )));
        }
        let stored_crc = u32::from_le_bytes([data[n - 4], data[n - 3], data[n - 2], data[n - 1]]);
        let actual = crc32fast::hash(&data[..n - 4]);
        if stored_crc != actual {
            return Err(corrupt(format!(
                "checksum mismatch: stored {stored_crc:#010x}, computed {actual:#010x}"
            )));
        }
        Ok(Self {
            path: path.to_path_buf(),
            data,
            pos: 12,
            end: n - TRAILER,
        })
    }

    pub(crate) fn corrupt(&self, reason: String) -> IndexError {
        IndexError::Corrupt {
            path: self.path.clone(),
            reason,
        }
    }

    fn take(&mut self, len: usize) -> Result<&[u8], IndexError> {
        let stop = self.pos.checked_add(len).filter(|s| *s <= self.end);
        let Some(stop) = stop else {
            return Err(self.corrupt(format!(
                "payload ends at byte {} but {len} more bytes were expected at byte {}",
                self.end, self.pos
            )));
        };
        let s = &self.data[self.pos..stop];
        self.pos = stop;
        Ok(s)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, IndexError> {
        Ok(self.take(1)?[0])
    }

    pub(crate) fn u32(&mut self) -> Result<u32, IndexError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub(crate) fn u64(&mut self) -> Result<u64, IndexError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    /// A count or size field, refused when above `limit`.
    pub(crate) fn len_field(&mut self, name: &str, limit: u64) -> Result<usize, IndexError> {
        let v = self.u64()?;
        if v > limit {
            return Err(self.corrupt(format!("`{name}` must be at most {limit}, got {v}")));
        }
        usize::try_from(v).map_err(|_| self.corrupt(format!("`{name}` {v} does not fit in memory")))
    }

    fn byte_len(&self, count: usize, width: usize) -> Result<usize, IndexError> {
        count
            .checked_mul(width)
            .ok_or_else(|| self.corrupt(format!("array of {count} items overflows")))
    }

    pub(crate) fn u64s(&mut self, count: usize) -> Result<Vec<u64>, IndexError> {
        let len = self.byte_len(count, 8)?;
        let b = self.take(len)?;
        Ok(b.chunks_exact(8)
            .map(|c| {
                let mut a = [0u8; 8];
                a.copy_from_slice(c);
                u64::from_le_bytes(a)
            })
            .collect())
    }

    pub(crate) fn u32s(&mut self, count: usize) -> Result<Vec<u32>, IndexError> {
        let len = self.byte_len(count, 4)?;
        let b = self.take(len)?;
        Ok(b.chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }

    pub(crate) fn bytes(&mut self, count: usize) -> Result<Vec<u8>, IndexError> {
        Ok(self.take(count)?.to_vec())
    }

    pub(crate) fn f32s(&mut self, count: usize) -> Result<Vec<f32>, IndexError> {
        let len = self.byte_len(count, 4)?;
        let b = self.take(len)?;
        Ok(b.chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }

    pub(crate) fn expect_end(&self) -> Result<(), IndexError> {
        if self.pos != self.end {
            return Err(self.corrupt(format!(
                "{} unexpected bytes after the payload",
                self.end - self.pos
            )));
        }
        Ok(())
    }
}
