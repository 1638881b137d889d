//! Saving and loading an [`Hnsw`] in the container of [`crate::persist`].
//!
//! Payload (version 1): metric u8, dim, m, ef_construction, ef_search, seed, compact ratio
//! (f32 bits), node count, entry (u64, `u64::MAX` when empty); then the arrays as they sit
//! in memory: ids, levels, deleted flags, padded vectors, level-0 blocks, upper blocks.
//! Everything a search relies on for memory safety (link targets, counts, levels, the
//! entry) is re-checked on load, so a crafted file yields an error, never a panic later.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU32, AtomicU64};

use parking_lot::Mutex;

use super::{Hnsw, HnswParams, MAX_LEVEL, MAX_NODES, NO_ENTRY};
use crate::index::{IndexError, Metric};
use crate::persist::{ByteReader, ByteWriter};

const MAGIC: &[u8; 8] = b"MBHNSW\0\0";
const VERSION: u32 = 1;

pub(super) fn save(h: &Hnsw, path: &Path) -> Result<(), IndexError> {
    use std::sync::atomic::Ordering::Relaxed;
    let mut w = ByteWriter::create(path, MAGIC, VERSION)?;
    w.u8(h.metric.to_byte());
    w.u64(h.dim as u64);
    w.u64(h.params.m as u64);
    w.u64(h.params.ef_construction as u64);
    w.u64(h.params.ef_search as u64);
    w.u64(h.params.seed);
    w.u32(h.params.compact_ratio.to_bits());
    w.u64(h.ids.len() as u64);
    w.u64(h.entry.load(Relaxed));
    w.u64s(&h.ids);
    w.bytes(&h.levels);
    let flags: Vec<u8> = h.deleted.iter().map(|d| u8::from(*d)).collect();
    w.bytes(&flags);
    w.f32s(&h.vectors);
    w.u32s(h.links0.iter().map(|a| a.load(Relaxed)));
    w.u64(h.upper.len() as u64);
    w.u32s(h.upper.iter().map(|a| a.load(Relaxed)));
    w.finish(path)
}

pub(super) fn load(path: &Path) -> Result<Hnsw, IndexError> {
    let mut r = ByteReader::open(path, MAGIC, VERSION)?;
    let metric_byte = r.u8()?;
    let metric = Metric::from_byte(metric_byte)
        .ok_or_else(|| r.corrupt(format!("unknown metric code {metric_byte}")))?;
    let dim = r.len_field("dim", 1 << 16)?;
    let params = HnswParams {
        m: r.len_field("m", 128)?,
        ef_construction: r.len_field("ef_construction", 100_000)?,
        ef_search: r.len_field("ef_search", 100_000)?,
        seed: r.u64()?,
        compact_ratio: f32::from_bits(r.u32()?),
    };
    let mut h = Hnsw::new(dim, metric, params)
        .map_err(|e| r.corrupt(format!("header holds invalid parameters: {e}")))?;
    let n = r.len_field("node count", MAX_NODES as u64)?;
    let entry = r.u64()?;
    let ids = r.u64s(n)?;
    let levels = r.bytes(n)?;
    let deleted: Vec<bool> = r.bytes(n)?.into_iter().map(|b| b != 0).collect();
    let vectors = r.f32s(n * h.stride)?;
    let links0 = r.u32s(n * (h.m0 + 1))?;
    let upper_len = r.len_field("upper link count", u32::MAX as u64)?;
    let upper = r.u32s(upper_len)?;
    r.expect_end()?;

    // Structural checks.
    let w = params.m + 1;
    let mut upper_off = Vec::with_capacity(n);
    let mut off = 0usize;
    for (s, l) in levels.iter().enumerate() {
        if *l as usize > MAX_LEVEL {
            return Err(r.corrupt(format!("node {s} has level {l}, above {MAX_LEVEL}")));
        }
        upper_off.push(off as u32);
        off += *l as usize * w;
    }
    if off != upper_len {
        return Err(r.corrupt(format!(
            "levels need {off} upper link slots but the file has {upper_len}"
        )));
    }
    let check_blocks = |data: &[u32], width: usize, what: &str| -> Result<(), IndexError> {
        for (b, block) in data.chunks_exact(width).enumerate() {
            let count = block[0] as usize;
            if count > width - 1 {
                return Err(r.corrupt(format!(
                    "{what} block {b} claims {count} links, capacity is {}",
                    width - 1
                )));
            }
            if let Some(bad) = block[1..=count].iter().find(|x| **x as usize >= n) {
                return Err(r.corrupt(format!(
                    "{what} block {b} links to node {bad}, but there are {n} nodes"
                )));
            }
        }
        Ok(())
    };
    check_blocks(&links0, h.m0 + 1, "level-0")?;
    check_blocks(&upper, w, "upper-level")?;
    if entry != NO_ENTRY {
        let (slot, level) = ((entry & 0xffff_ffff) as usize, (entry >> 32) as usize);
        if slot >= n || levels[slot] as usize != level {
            return Err(r.corrupt(format!("entry point {slot} at level {level} is invalid")));
        }
    } else if n > 0 {
        return Err(r.corrupt(format!("{n} nodes but no entry point")));
    }
    let mut slot_of = HashMap::with_capacity(n);
    let mut n_deleted = 0;
    for (s, (id, d)) in ids.iter().zip(&deleted).enumerate() {
        if *d {
            n_deleted += 1;
        } else if slot_of.insert(*id, s as u32).is_some() {
            return Err(r.corrupt(format!("id {id} is stored twice")));
        }
    }

    h.vectors = vectors;
    h.ids = ids;
    h.levels = levels;
    h.deleted = deleted;
    h.n_deleted = n_deleted;
    h.slot_of = slot_of;
    h.links0 = links0.into_iter().map(AtomicU32::new).collect();
    h.upper = upper.into_iter().map(AtomicU32::new).collect();
    h.upper_off = upper_off;
    h.locks = std::iter::repeat_with(|| Mutex::new(())).take(n).collect();
    h.entry = AtomicU64::new(entry);
    Ok(h)
}
