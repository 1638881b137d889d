//! Which offsets of a partition may be committed.
//!
//! Turns of different sessions finish out of order, but a Kafka commit says "everything
//! before this offset is done". Per partition we keep the offsets still running; the
//! committable position is the smallest of them, or one past the last offset read when
//! none runs. A replica that dies therefore re-delivers exactly the turns it had not
//! finished (and some it had, which turn ids make harmless).

use std::collections::{BTreeSet, HashMap};

#[derive(Debug, Default)]
struct Partition {
    running: BTreeSet<i64>,
    /// One past the highest offset read.
    next: i64,
    /// The last position handed out for commit.
    committed: i64,
}

#[derive(Debug, Default)]
pub struct Offsets {
    partitions: HashMap<i32, Partition>,
}

impl Offsets {
    /// A partition was assigned: forget what a previous assignment left.
    pub fn assign(&mut self, partition: i32) {
        self.partitions.remove(&partition);
    }

    pub fn revoke(&mut self, partition: i32) {
        self.partitions.remove(&partition);
    }

    /// An offset was read and starts running. An offset below what was already committed,
    /// without a new assignment, means the partition's log started over (a broker that lost
    /// its data and recreated the topic): what was tracked belongs to the old log.
    pub fn start(&mut self, partition: i32, offset: i64) {
        if self
            .partitions
            .get(&partition)
            .is_some_and(|p| offset < p.committed)
        {
            self.partitions.remove(&partition);
        }
        let p = self
            .partitions
            .entry(partition)
            .or_insert_with(|| Partition {
                next: offset,
                committed: offset,
                ..Partition::default()
            });
        p.running.insert(offset);
        p.next = p.next.max(offset + 1);
    }

    /// An offset finished. Returns the new commit position (the next offset to read) when it
    /// moved forward; `None` when an earlier offset still runs, or the offset belongs to an
    /// assignment since revoked.
    pub fn finish(&mut self, partition: i32, offset: i64) -> Option<i64> {
        let p = self.partitions.get_mut(&partition)?;
        if !p.running.remove(&offset) {
            return None;
        }
        let position = p.running.first().copied().unwrap_or(p.next);
        if position > p.committed {
            p.committed = position;
            Some(position)
        } else {
            None
        }
    }

    /// Offsets running now, over all partitions.
    pub fn running(&self) -> usize {
        self.partitions.values().map(|p| p.running.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_that_starts_over_is_tracked_afresh() {
        let mut o = Offsets::default();
        o.start(0, 500);
        assert_eq!(o.finish(0, 500), Some(501));
        // The broker lost the topic: the new log starts at 0 while 500 was committed.
        o.start(0, 0);
        o.start(0, 1);
        assert_eq!(o.running(), 2);
        assert_eq!(o.finish(0, 1), None, "offset 0 still runs");
        assert_eq!(o.finish(0, 0), Some(2));
    }

    #[test]
    fn commits_only_a_finished_prefix() {
        let mut o = Offsets::default();
        for off in 10..14 {
            o.start(0, off);
        }
        assert_eq!(o.finish(0, 12), None, "10 and 11 still run");
        assert_eq!(o.finish(0, 10), Some(11));
        assert_eq!(o.finish(0, 11), Some(13), "12 was done already");
        assert_eq!(o.finish(0, 13), Some(14));
        assert_eq!(o.running(), 0);
        assert_eq!(o.finish(0, 13), None, "a second finish is ignored");
    }

    #[test]
    fn a_revoked_partition_forgets_its_offsets() {
        let mut o = Offsets::default();
        o.start(3, 5);
        o.revoke(3);
        assert_eq!(o.finish(3, 5), None);
        o.assign(3);
        o.start(3, 5);
        assert_eq!(o.finish(3, 5), Some(6));
    }
    // Random interleavings: tests/properties.rs.
}
