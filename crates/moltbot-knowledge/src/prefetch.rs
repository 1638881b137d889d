//! Cache prefetch hints for the graph search.
//!
//! At a million 384-float vectors the index is far larger than the caches, and a search
//! spends most of its time waiting on memory: every expanded node's unvisited neighbours
//! are fresh cache misses. Asking for their vectors as soon as they are known, before the
//! first distance is computed, keeps many misses in flight at once. `safe_arch` wraps the
//! `prefetcht0` instruction safely (a prefetch never faults and changes no state), so the
//! crate stays free of `unsafe`; on other architectures the hints are no-ops.

/// Bytes in a cache line on the CPUs we target.
const LINE: usize = 64;

/// Hints the CPU to bring the first `lines` cache lines of `v` into every cache level.
#[inline(always)]
pub(crate) fn slice<T>(v: &[T], lines: usize) {
    let per_line = (LINE / std::mem::size_of::<T>().max(1)).max(1);
    for x in v.iter().step_by(per_line).take(lines) {
        one(x);
    }
}

#[cfg(all(target_arch = "x86_64", target_feature = "sse"))]
#[inline(always)]
fn one<T>(x: &T) {
    safe_arch::prefetch_t0(x);
}

#[cfg(not(all(target_arch = "x86_64", target_feature = "sse")))]
#[inline(always)]
fn one<T>(_x: &T) {}
