//! The embedded model: a GGUF file run in process by llama.cpp (through `llama-cpp-2`).
//!
//! # How a request flows
//! [`LocalModel::stream`] runs on the async side and only queues a job: the queue is bounded
//! and a full queue is refused at once with [`ModelError::Unavailable`]. One worker thread
//! (a plain `std::thread`, so forward passes never block the async workers) owns the model and
//! its llama.cpp context and runs up to `model.local.parallel` requests at once, decoding them
//! together in one batch per step (continuous batching, `scheduler.rs`). Text goes back
//! through a tokio channel that the caller's stream reads.
//!
//! # KV reuse
//! A finished request's KV cells stay in its slot, so a conversation's next turn only reads
//! what is new; prefixes shared by different conversations (the system prompt) are copied
//! between sequences instead of read again and pinned; a conversation pushed out of its slot
//! is kept in RAM and restored (`kv.rs`). [`LocalModel::stats`] shows what was reused.
//!
//! The worker checks before every step whether each request was cancelled or its stream
//! dropped (the client went away); either ends that request at once.
//!
//! # Layout
//! `scheduler.rs` (the worker loop), `kv.rs` (the KV cache book), `beam.rs` (beam search),
//! `sampling.rs` (request settings and sampler chains), `prompt.rs` (chat templates),
//! `text.rs` (UTF-8 assembly and stop strings).
//!
//! # Logging
//! llama.cpp prints a lot while loading. Its messages are routed into `tracing` under the
//! target [`LLAMA_LOG_TARGET`], keeping llama.cpp's own levels (the loader's chatter is
//! `info`). The logging setup should lower that target, e.g. with [`LLAMA_LOG_DIRECTIVE`],
//! unless running verbose.

mod beam;
mod grammar;
mod kv;
mod prompt;
mod sampling;
mod scheduler;
mod text;
mod tools;

pub use sampling::{DEFAULT_MAX_TOKENS, MAX_BEAM_WIDTH};

use futures::StreamExt;
use kv::ReuseKind;
use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::LlamaModel;
use moltbot_core::config::LocalModelConfig;
use moltbot_core::{ChatChunk, ChatModel, ChatRequest, ChunkStream, ModelError};
use prompt::PromptFormat;
use scheduler::{ContextShape, Job, WorkerSetup};
use std::num::NonZeroU32;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, OnceLock};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Tokens handed to llama.cpp per decode call. Cancellation is checked between calls, so this
/// bounds how long a cancelled long prompt keeps the worker busy, and how long a long prompt
/// holds up the others' next token.
const BATCH_TOKENS: u32 = 512;
/// Chunks buffered between the worker and the caller's stream.
const CHUNK_BUFFER: usize = 64;
/// A prompt longer than this many bytes per context token cannot fit; refuse it before
/// spending time tokenizing it.
const MAX_PROMPT_BYTES_PER_TOKEN: usize = 64;
/// Tokens of idle conversations kept in the KV cache when the RAM tier is on (see
/// `KvBook::with_idle_budget`).
const IDLE_BUDGET_TOKENS: usize = 1024;
/// Scratch sequences for beam search, per slot.
const BEAM_SCRATCH_PER_SLOT: usize = 3;

/// The `tracing` target llama.cpp's messages arrive under.
pub const LLAMA_LOG_TARGET: &str = "llama-cpp-2";
/// A filter directive that keeps llama.cpp's warnings and errors and drops its load chatter.
pub const LLAMA_LOG_DIRECTIVE: &str = "llama-cpp-2=warn";

/// llama.cpp's backend may be initialised once per process; a second `LlamaBackend::init`
/// fails. Every model loaded here shares this one. The error is kept as text so a failed
/// start is reported the same way to every later caller.
static BACKEND: OnceLock<Result<LlamaBackend, String>> = OnceLock::new();

fn backend() -> Result<&'static LlamaBackend, ModelError> {
    BACKEND
        .get_or_init(|| {
            // Before init, so that even the backend's first messages go to tracing, not stderr.
            llama_cpp_2::send_logs_to_tracing(llama_cpp_2::LogOptions::default());
            LlamaBackend::init().map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| ModelError::Unavailable(format!("cannot start llama.cpp: {e}")))
}

/// Counters of the worker, shared with the handle.
#[derive(Debug, Default)]
struct LocalStats {
    generated: AtomicU64,
    prompt_tokens: AtomicU64,
    reused_tokens: AtomicU64,
    /// Requests by what their prompt reused: miss, slot, shared, prefix, restored.
    reuse: [AtomicU64; 5],
    /// Conversations copied to RAM.
    saved: AtomicU64,
    /// Batches decoded.
    steps: AtomicU64,
    /// Times the worker thread recovered from a panic with a fresh context.
    restarts: AtomicU64,
    /// Times the idle cache was compacted after a burst (prefixes moved to its start).
    compactions: AtomicU64,
}

impl LocalStats {
    fn record_admission(&self, kind: ReuseKind, reused: usize, read: usize) {
        let i = match kind {
            ReuseKind::Miss => 0,
            ReuseKind::Slot => 1,
            ReuseKind::Shared => 2,
            ReuseKind::Prefix => 3,
            ReuseKind::Restored => 4,
        };
        self.reuse[i].fetch_add(1, Ordering::Relaxed);
        self.prompt_tokens
            .fetch_add((reused + read) as u64, Ordering::Relaxed);
        self.reused_tokens
            .fetch_add(reused as u64, Ordering::Relaxed);
        let hit = if kind == ReuseKind::Miss {
            "miss"
        } else {
            "hit"
        };
        metrics::counter!("moltbot_local_kv_cache_total", "result" => hit, "source" => kind.as_str())
            .increment(1);
        metrics::counter!("moltbot_local_prompt_tokens_total", "phase" => "reused")
            .increment(reused as u64);
        metrics::counter!("moltbot_local_prompt_tokens_total", "phase" => "read")
            .increment(read as u64);
    }
}

/// What the local model has done since it was loaded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LocalModelStats {
    /// Tokens generated, over all requests.
    pub generated_tokens: u64,
    /// Prompt tokens of all requests.
    pub prompt_tokens: u64,
    /// Prompt tokens whose KV state was reused instead of read.
    pub reused_tokens: u64,
    /// Requests that reused nothing.
    pub misses: u64,
    /// Requests that continued their own slot (usually the conversation's last turn).
    pub slot_hits: u64,
    /// Requests that copied a prefix from another running or idle sequence.
    pub shared_hits: u64,
    /// Requests that started from a pinned prefix.
    pub prefix_hits: u64,
    /// Requests whose conversation was restored from RAM.
    pub restored: u64,
    /// Conversations copied to RAM when their slot was taken.
    pub saved: u64,
    /// Batches decoded.
    pub steps: u64,
    /// Times the worker recovered from a crash (a panic) by starting a fresh context.
    pub worker_restarts: u64,
    /// Idle compactions of the KV cache after bursts of concurrent requests.
    pub compactions: u64,
}

/// A GGUF model running in this process. Cheap to share behind an `Arc`; dropping it stops the
/// worker thread once the jobs already queued are done.
pub struct LocalModel {
    id: String,
    stats: Arc<LocalStats>,
    jobs: std_mpsc::SyncSender<Job>,
    queue_capacity: usize,
    context_size: u32,
    kv_cells: u32,
    parallel: usize,
    threads: usize,
}

impl std::fmt::Debug for LocalModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalModel")
            .field("id", &self.id)
            .field("context_size", &self.context_size)
            .field("kv_cells", &self.kv_cells)
            .field("parallel", &self.parallel)
            .field("threads", &self.threads)
            .finish_non_exhaustive()
    }
}

/// Load `path` with llama.cpp as [`LocalModel::load`] does (weights memory-mapped, no
/// context), then drop it: an error when llama.cpp refuses the file. llama.cpp *aborts the
/// process* on some malformed files instead of returning an error (a `GGML_ASSERT` on the
/// layer count, found by the GGUF fuzz target), so callers that must survive a bad file run
/// this in a child process first (`moltbot models check`). A vocabulary-only load is not
/// enough: it stops before the assert that the fuzzer hit.
pub fn check_file(path: &Path) -> Result<(), ModelError> {
    if !path.is_file() {
        return Err(ModelError::Unavailable(format!(
            "model file {} does not exist",
            path.display()
        )));
    }
    let backend = backend()?;
    LlamaModel::load_from_file(backend, path, &LlamaModelParams::default())
        .map(drop)
        .map_err(|e| {
            ModelError::Unavailable(format!(
                "llama.cpp cannot read {} ({e}); is it a GGUF file?",
                path.display()
            ))
        })
}

impl LocalModel {
    /// Load `path` and start its worker thread.
    ///
    /// `threads` is used for both prompt evaluation and decoding; the caller derives it from
    /// the environment snapshot (`EnvSnapshot::inference_threads`). 0 means all CPUs we may
    /// use. Blocking (reads the file, allocates the KV cache): call it at start-up or from
    /// `spawn_blocking`.
    pub fn load(
        path: &Path,
        cfg: &LocalModelConfig,
        threads: usize,
    ) -> Result<LocalModel, ModelError> {
        if !path.is_file() {
            return Err(ModelError::Unavailable(format!(
                "model file {} does not exist\nhint: run `moltbot models fetch`, or set \
                 `model.local.path` to a GGUF file",
                path.display()
            )));
        }
        let backend = backend()?;
        let model = LlamaModel::load_from_file(backend, path, &LlamaModelParams::default())
            .map_err(|e| {
                ModelError::Unavailable(format!(
                    "llama.cpp cannot load {} ({e}); is it a GGUF file?",
                    path.display()
                ))
            })?;

        let threads = if threads == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            threads
        };
        let context_size = choose_context_size(cfg.context_size, model.n_ctx_train());
        let kv_cells = match cfg.kv_cache_tokens {
            0 => context_size.saturating_mul(2),
            n => n.max(context_size),
        };
        let parallel = cfg.parallel.max(1);
        let prefixes = cfg.prefix_cache_entries;
        let scratch = parallel * BEAM_SCRATCH_PER_SLOT;
        let sequences = parallel + prefixes + scratch;
        // Every running sequence may put one token into a step (beams: one per beam).
        let batch = BATCH_TOKENS.max(u32::try_from(sequences).unwrap_or(u32::MAX));
        let params = LlamaContextParams::default()
            .with_n_ctx(NonZeroU32::new(kv_cells))
            .with_n_batch(batch)
            .with_n_ubatch(batch)
            .with_n_seq_max(u32::try_from(sequences).unwrap_or(u32::MAX))
            // One pool of cells for all sequences: shared prefixes are then copied by
            // reference, and an idle conversation holds only the cells it uses.
            .with_kv_unified(true)
            .with_n_threads(clamp_i32(threads))
            .with_n_threads_batch(clamp_i32(threads))
            .with_no_perf(false);
        let format = PromptFormat::for_model(&model);

        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "model".to_string());
        let id = format!("local/{stem}");

        // Requests wait here in arrival order; the gateway's admission limit bounds them too.
        let queue_capacity = cfg.queue.max(1);
        let (jobs_tx, jobs_rx) = std_mpsc::sync_channel::<Job>(queue_capacity);
        let (ready_tx, ready_rx) = std_mpsc::sync_channel(1);
        let stats = Arc::new(LocalStats::default());
        let setup = WorkerSetup {
            model,
            params,
            format,
            jobs: jobs_rx,
            ready: ready_tx,
            stats: stats.clone(),
            shape: ContextShape {
                slots: parallel,
                prefixes,
                scratch,
                session_cache_bytes: usize::try_from(cfg.session_cache_mb.saturating_mul(1 << 20))
                    .unwrap_or(usize::MAX),
                max_seq_tokens: context_size as usize,
                reuse_kv: cfg.reuse_kv,
                // A few conversations stay warm in the cache; with the RAM tier on, the rest
                // are restored from RAM at a few milliseconds each.
                idle_budget: if cfg.session_cache_mb > 0 {
                    IDLE_BUDGET_TOKENS.min(kv_cells as usize / 4)
                } else {
                    usize::MAX
                },
            },
        };
        std::thread::Builder::new()
            .name("llama-worker".to_string())
            .spawn(move || scheduler::worker_main(setup))
            .map_err(|e| {
                ModelError::Unavailable(format!("cannot start the local model's thread: {e}"))
            })?;
        let kv_cells = ready_rx.recv().map_err(|_| {
            ModelError::Unavailable("the local model's thread stopped while starting".into())
        })??;

        tracing::info!(
            model = %id,
            context_size,
            kv_cells,
            parallel,
            threads,
            queue = queue_capacity,
            "local model loaded"
        );
        Ok(LocalModel {
            stats,
            id,
            jobs: jobs_tx,
            queue_capacity,
            context_size,
            kv_cells,
            parallel,
            threads,
        })
    }

    /// The context window of one request in tokens (prompt and completion together).
    pub fn context_size(&self) -> u32 {
        self.context_size
    }

    /// Threads used for prompt evaluation and decoding.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Requests decoded together.
    pub fn parallel(&self) -> usize {
        self.parallel
    }

    /// Tokens generated since the model was loaded, over all requests. Shows whether a
    /// cancelled request really stopped the decode loop.
    pub fn tokens_generated(&self) -> u64 {
        self.stats.generated.load(Ordering::Relaxed)
    }

    /// Counters since load: tokens, KV reuse by kind, batches.
    pub fn stats(&self) -> LocalModelStats {
        let s = &self.stats;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        LocalModelStats {
            generated_tokens: get(&s.generated),
            prompt_tokens: get(&s.prompt_tokens),
            reused_tokens: get(&s.reused_tokens),
            misses: get(&s.reuse[0]),
            slot_hits: get(&s.reuse[1]),
            shared_hits: get(&s.reuse[2]),
            prefix_hits: get(&s.reuse[3]),
            restored: get(&s.reuse[4]),
            saved: get(&s.saved),
            steps: get(&s.steps),
            worker_restarts: get(&s.restarts),
            compactions: get(&s.compactions),
        }
    }

    /// Make the worker thread panic at its next job, as a bug would. For tests of the
    /// recovery: requests running then fail, queued ones run once a new context is up.
    #[doc(hidden)]
    pub fn crash_worker_for_tests(&self) {
        let (out, _) = mpsc::channel(1);
        let _ = self.jobs.try_send(Job {
            request: ChatRequest::default(),
            prefill: String::new(),
            grammar: None,
            cancel: CancellationToken::new(),
            out,
            crash: true,
        });
    }
}

impl ChatModel for LocalModel {
    fn id(&self) -> &str {
        &self.id
    }

    fn stream(&self, mut request: ChatRequest, cancel: CancellationToken) -> ChunkStream {
        let (tx, rx) = mpsc::channel(CHUNK_BUFFER);
        let tool_mode = tools::prepare(&mut request);
        let job = Job {
            request,
            prefill: tool_mode
                .as_ref()
                .map(|m| m.prefill.clone())
                .unwrap_or_default(),
            grammar: tool_mode.as_ref().and_then(|m| m.grammar.clone()),
            cancel: cancel.clone(),
            out: tx,
            crash: false,
        };
        if let Err(e) = self.jobs.try_send(job) {
            let err = match e {
                std_mpsc::TrySendError::Full(_) => ModelError::Unavailable(format!(
                    "local model busy: {} requests already waiting (`model.local.queue` = \
                     {}); retry shortly",
                    self.queue_capacity, self.queue_capacity
                )),
                std_mpsc::TrySendError::Disconnected(_) => {
                    ModelError::Unavailable("the local model's thread has stopped".into())
                }
            };
            return futures::stream::once(async move { Err(err) }).boxed();
        }
        let stream = receive(rx, cancel).boxed();
        match tool_mode {
            Some(mode) => tools::parse_stream(stream, mode),
            None => stream,
        }
    }
}

/// The caller's side of a job: chunks as the worker sends them, ending after `Finish` or an
/// error. A cancelled token ends the stream at once (the worker notices within a token, as
/// its channel is then closed); dropping the stream has the same effect on the worker.
fn receive(
    mut rx: mpsc::Receiver<Result<ChatChunk, ModelError>>,
    cancel: CancellationToken,
) -> impl futures::Stream<Item = Result<ChatChunk, ModelError>> + Send + 'static {
    async_stream::stream! {
        loop {
            // `yield` stays outside `select!`: the stream macro only rewrites yields it can see.
            let next = tokio::select! {
                biased;
                _ = cancel.cancelled() => None,
                next = rx.recv() => Some(next),
            };
            let Some(next) = next else {
                yield Err(ModelError::Cancelled);
                break;
            };
            match next {
                Some(item) => {
                    let last = matches!(item, Ok(ChatChunk::Finish(_)) | Err(_));
                    yield item;
                    if last {
                        break;
                    }
                }
                None => {
                    yield Err(ModelError::Unavailable(
                        "the local model's thread stopped in the middle of an answer".into(),
                    ));
                    break;
                }
            }
        }
    }
}

fn clamp_i32(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// The configured window, never above what the model was trained for (positions beyond it
/// produce garbage); 0 means the trained size.
fn choose_context_size(configured: u32, trained: u32) -> u32 {
    match (configured, trained) {
        (0, 0) => 4096,
        (0, t) => t,
        (c, 0) => c,
        (c, t) => c.min(t),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_size_never_exceeds_training() {
        assert_eq!(choose_context_size(4096, 8192), 4096);
        assert_eq!(choose_context_size(16384, 8192), 8192);
        assert_eq!(choose_context_size(0, 2048), 2048);
        assert_eq!(choose_context_size(1024, 0), 1024);
    }
}
