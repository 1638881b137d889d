//! Dynamic batching: `encode` calls that arrive while the encoder is busy are merged into
//! its next forward pass.
//!
//! The encoder does more sentences per second in a batch than one at a time (packed batches,
//! `packed.rs`: INT8 753 sentences/s at batch 32 against 364 at batch 1 on a 2-core Zen 4),
//! and concurrent single-turn requests are the common case in the gateway. One worker thread
//! owns the forward passes: it takes the oldest waiting call and every call queued behind
//! it (up to [`MAX_TEXTS`] texts), runs them as one batch and hands each caller its own
//! vectors. A call that finds the worker idle runs at once, so nothing waits for a batch to
//! fill; batches form only under load, when callers would have waited anyway. The forward
//! pass threads its matmuls itself, so one worker also keeps concurrent calls from
//! oversubscribing the cores.

use moltbot_core::{EncodeError, Encoder};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};

/// The most texts merged into one pass; a call with at least this many runs on its own
/// thread, outside the queue (a document being ingested does not hold up chat turns).
pub const MAX_TEXTS: usize = 64;

type Reply = Result<Vec<Vec<f32>>, EncodeError>;

struct Job {
    texts: Vec<String>,
    reply: mpsc::SyncSender<Reply>,
}

/// An [`Encoder`] that merges concurrent calls into batches for the encoder it wraps.
pub struct BatchingEncoder {
    inner: Arc<dyn Encoder>,
    queue: mpsc::Sender<Job>,
    /// Calls waiting for the worker (not counting the one it runs).
    queued: Arc<AtomicUsize>,
}

impl std::fmt::Debug for BatchingEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchingEncoder")
            .field("inner", &self.inner.name())
            .finish()
    }
}

impl BatchingEncoder {
    /// Wrap `inner`, starting its worker thread (it ends when this is dropped).
    pub fn new(inner: Arc<dyn Encoder>) -> Self {
        let (queue, jobs) = mpsc::channel::<Job>();
        let queued = Arc::new(AtomicUsize::new(0));
        let worker = (inner.clone(), queued.clone());
        std::thread::Builder::new()
            .name("encoder-batch".into())
            .spawn(move || run(worker.0.as_ref(), &jobs, &worker.1))
            .expect("spawning the encoder's batching thread");
        Self {
            inner,
            queue,
            queued,
        }
    }

    /// Calls waiting behind the one being encoded.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::SeqCst)
    }
}

/// One pass over `texts`, a panic turned into an error so the worker lives on.
fn encode_caught(inner: &dyn Encoder, texts: &[&str]) -> Reply {
    catch_unwind(AssertUnwindSafe(|| inner.encode(texts))).unwrap_or_else(|_| {
        Err(EncodeError::Forward(
            "the encoder panicked on this batch".into(),
        ))
    })
}

fn run(inner: &dyn Encoder, jobs: &mpsc::Receiver<Job>, queued: &AtomicUsize) {
    while let Ok(first) = jobs.recv() {
        queued.fetch_sub(1, Ordering::SeqCst);
        let mut batch = vec![first];
        let mut texts = batch[0].texts.len();
        while texts < MAX_TEXTS {
            let Ok(job) = jobs.try_recv() else { break };
            queued.fetch_sub(1, Ordering::SeqCst);
            texts += job.texts.len();
            batch.push(job);
        }
        let all: Vec<&str> = batch
            .iter()
            .flat_map(|j| j.texts.iter().map(String::as_str))
            .collect();
        match encode_caught(inner, &all) {
            Ok(mut vectors) if vectors.len() == all.len() => {
                for job in batch.iter().rev() {
                    let mine = vectors.split_off(vectors.len() - job.texts.len());
                    let _ = job.reply.send(Ok(mine));
                }
            }
            // One caller's bad input must not fail the others: each runs alone again and
            // gets its own result or error.
            _ if batch.len() > 1 => {
                for job in &batch {
                    let refs: Vec<&str> = job.texts.iter().map(String::as_str).collect();
                    let _ = job.reply.send(encode_caught(inner, &refs));
                }
            }
            other => {
                let _ = batch[0].reply.send(other.and_then(|v| {
                    Err(EncodeError::Forward(format!(
                        "the encoder gave {} vectors for {} texts",
                        v.len(),
                        all.len()
                    )))
                }));
            }
        }
    }
}

impl Encoder for BatchingEncoder {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn dim(&self) -> usize {
        self.inner.dim()
    }

    fn max_tokens(&self) -> usize {
        self.inner.max_tokens()
    }

    /// The wrapped encoder, so code built on a concrete encoder (tuned layers on MiniLM)
    /// finds it through the wrapper.
    fn as_any(&self) -> Option<&dyn std::any::Any> {
        self.inner.as_any()
    }

    fn encode(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EncodeError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        if texts.len() >= MAX_TEXTS {
            return self.inner.encode(texts);
        }
        let (reply, answer) = mpsc::sync_channel(1);
        self.queued.fetch_add(1, Ordering::SeqCst);
        let job = Job {
            texts: texts.iter().map(|t| t.to_string()).collect(),
            reply,
        };
        if self.queue.send(job).is_err() {
            self.queued.fetch_sub(1, Ordering::SeqCst);
            return Err(EncodeError::Forward(
                "the encoder's batching thread has stopped".into(),
            ));
        }
        answer.recv().unwrap_or_else(|_| {
            Err(EncodeError::Forward(
                "the encoder's batching thread has stopped".into(),
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Vectors that name their text, the size of every call it gets, and a gate its first
    /// call waits at; "boom" fails the whole call it is in.
    struct Recorder {
        calls: Mutex<Vec<usize>>,
        gate: Mutex<Option<mpsc::Receiver<()>>>,
    }

    impl Encoder for Recorder {
        fn name(&self) -> &str {
            "recorder"
        }
        fn dim(&self) -> usize {
            2
        }
        fn max_tokens(&self) -> usize {
            16
        }
        fn encode(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EncodeError> {
            let gate = self.gate.lock().unwrap().take();
            if let Some(gate) = gate {
                gate.recv().unwrap();
            }
            self.calls.lock().unwrap().push(texts.len());
            if texts.contains(&"boom") {
                return Err(EncodeError::Tokenize("boom".into()));
            }
            Ok(texts
                .iter()
                .map(|t| vec![t.len() as f32, t.as_bytes()[0] as f32])
                .collect())
        }
    }

    #[test]
    fn calls_queued_behind_a_busy_encoder_share_its_next_pass() {
        let (open, gate) = mpsc::channel();
        let inner = Arc::new(Recorder {
            calls: Mutex::new(Vec::new()),
            gate: Mutex::new(Some(gate)),
        });
        let enc = Arc::new(BatchingEncoder::new(inner.clone()));
        std::thread::scope(|s| {
            let first = {
                let enc = enc.clone();
                s.spawn(move || enc.encode(&["a"]).unwrap())
            };
            // The first call holds the worker at the gate; wait until it has taken it.
            while inner.gate.lock().unwrap().is_some() {
                std::thread::yield_now();
            }
            const WORDS: [&str; 7] = ["bb", "ccc", "boom", "dddd", "e", "ff", "ggg"];
            let words = WORDS;
            let rest: Vec<_> = WORDS
                .iter()
                .map(|w: &&'static str| {
                    let enc = enc.clone();
                    s.spawn(move || enc.encode(&[w, "xyz"]))
                })
                .collect();
            while enc.queued() < words.len() {
                std::thread::yield_now();
            }
            open.send(()).unwrap();
            assert_eq!(first.join().unwrap(), vec![vec![1.0, 97.0]]);
            for (w, h) in words.iter().zip(rest) {
                let got = h.join().unwrap();
                if *w == "boom" {
                    assert_eq!(got.unwrap_err().kind(), "encoder_tokenize");
                } else {
                    let want = vec![
                        vec![w.len() as f32, w.as_bytes()[0] as f32],
                        vec![3.0, 120.0],
                    ];
                    assert_eq!(got.unwrap(), want, "{w}");
                }
            }
        });
        // One call alone, the seven merged (14 texts), which failed on "boom", then each
        // of the seven alone so only "boom"'s caller got the error.
        assert_eq!(
            *inner.calls.lock().unwrap(),
            vec![1, 14, 2, 2, 2, 2, 2, 2, 2]
        );
        assert_eq!(enc.queued(), 0);
    }

    #[test]
    fn a_large_call_runs_outside_the_queue() {
        let inner = Arc::new(Recorder {
            calls: Mutex::new(Vec::new()),
            gate: Mutex::new(None),
        });
        let enc = BatchingEncoder::new(inner.clone());
        let texts: Vec<String> = (0..MAX_TEXTS).map(|i| format!("t{i}")).collect();
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        assert_eq!(enc.encode(&refs).unwrap().len(), MAX_TEXTS);
        assert_eq!(enc.encode(&[]).unwrap().len(), 0);
        assert_eq!(*inner.calls.lock().unwrap(), vec![MAX_TEXTS]);
    }
}
