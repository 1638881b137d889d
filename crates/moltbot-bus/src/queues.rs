//! One FIFO per session: a session's turns run one after another in topic order, turns of
//! different sessions run in parallel. A session's worker task exists only while it has
//! work, so idle sessions cost nothing.

use futures::FutureExt;
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};

pub struct SessionQueues<J> {
    queues: Mutex<HashMap<String, VecDeque<J>>>,
}

impl<J: Send + 'static> SessionQueues<J> {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            queues: Mutex::new(HashMap::new()),
        })
    }

    /// Queue `job` behind the session's earlier jobs; `run` is called for each job in
    /// order, on a task that ends when the session's queue is empty.
    pub fn push<F, Fut>(self: &Arc<Self>, session: &str, job: J, run: F)
    where
        F: Fn(J) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        {
            let mut queues = self.queues.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(q) = queues.get_mut(session) {
                // A worker runs this session: it will take the job.
                q.push_back(job);
                return;
            }
            queues.insert(session.to_string(), VecDeque::new());
        }
        let this = self.clone();
        let session = session.to_string();
        tokio::spawn(async move {
            let mut next = Some(job);
            while let Some(job) = next.take() {
                // A job that panics must not wedge the session: the next one still runs.
                if AssertUnwindSafe(run(job)).catch_unwind().await.is_err() {
                    tracing::error!(%session, "a queued job panicked; going on with the next");
                }
                let mut queues = this.queues.lock().unwrap_or_else(|p| p.into_inner());
                match queues.get_mut(&session).and_then(VecDeque::pop_front) {
                    Some(j) => next = Some(j),
                    None => {
                        queues.remove(&session);
                    }
                }
            }
        });
    }

    /// Sessions with a running worker.
    pub fn active(&self) -> usize {
        self.queues.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_session_runs_in_order_and_sessions_in_parallel() {
        let q = SessionQueues::new();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel();
        for i in 0..20u64 {
            let session = format!("s{}", i % 2);
            let log = log.clone();
            let done = done_tx.clone();
            q.push(&session, i, move |i| {
                let (log, done) = (log.clone(), done.clone());
                async move {
                    // Later jobs sleep less: only the queue keeps them in order.
                    tokio::time::sleep(Duration::from_millis(20 - i)).await;
                    log.lock().unwrap().push(i);
                    let _ = done.send(());
                }
            });
        }
        for _ in 0..20 {
            done_rx.recv().await.unwrap();
        }
        let log = log.lock().unwrap().clone();
        for parity in 0..2 {
            let seen: Vec<u64> = log.iter().copied().filter(|i| i % 2 == parity).collect();
            let mut sorted = seen.clone();
            sorted.sort();
            assert_eq!(seen, sorted, "session s{parity} ran out of order");
        }
        // Workers end with their queues.
        for _ in 0..50 {
            if q.active() == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(q.active(), 0);
    }

    #[tokio::test]
    async fn a_panicking_job_does_not_stop_its_session() {
        let q = SessionQueues::new();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        for i in 0..3u32 {
            let tx = tx.clone();
            q.push("s", i, move |i| {
                let tx = tx.clone();
                async move {
                    assert_ne!(i, 1, "job 1 fails");
                    let _ = tx.send(i);
                }
            });
        }
        assert_eq!(rx.recv().await, Some(0));
        assert_eq!(rx.recv().await, Some(2));
    }
}
