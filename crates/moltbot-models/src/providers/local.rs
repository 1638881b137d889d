//! The embedded model: a GGUF file run in process by llama.cpp (through `llama-cpp-2`).
//!
//! # How a request flows
//! [`LocalModel::stream`] runs on the async side and only queues a job: the queue is bounded
//! and a full queue is refused at once with [`ModelError::Unavailable`]. One worker thread
//! (a plain `std::thread`, so forward passes never block the async workers) owns the model and
//! its llama.cpp context, takes jobs one at a time, and sends text back through a tokio channel
//! that the caller's stream reads.
//!
//! The worker checks, before every token, whether the request was cancelled or its stream was
//! dropped (the client went away); either stops the decode loop, and the KV cache is cleared
//! before the next job.
//!
//! # Logging
//! llama.cpp prints a lot while loading. Its messages are routed into `tracing` under the
//! target [`LLAMA_LOG_TARGET`], keeping llama.cpp's own levels (the loader's chatter is
//! `info`). The logging setup should lower that target, e.g. with [`LLAMA_LOG_DIRECTIVE`],
//! unless running verbose.

mod text;

use moltbot_core::config::LocalModelConfig;
use moltbot_core::{
    ChatChunk, ChatMessage, ChatModel, ChatRequest, ChunkStream, FinishReason, ModelError, Usage,
};
use text::TextAssembler;

use futures::StreamExt;
use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::{LlamaChatMessage, LlamaChatTemplate, LlamaModel};
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;
use std::num::NonZeroU32;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Completion length when the request does not say.
pub const DEFAULT_MAX_TOKENS: u32 = 256;
/// Sampling temperature when the request does not say (0 would mean greedy).
const DEFAULT_TEMPERATURE: f32 = 0.7;
/// Nucleus mass when the request does not say.
const DEFAULT_TOP_P: f32 = 0.95;
/// Fixed guard rails under temperature sampling, as llama.cpp's own defaults: they cut the
/// long tail of junk tokens that small models otherwise pick now and then.
const SAMPLE_TOP_K: i32 = 40;
const SAMPLE_MIN_P: f32 = 0.05;
/// Repetition penalty over the last tokens generated (1.0 would be off).
const REPEAT_PENALTY: f32 = 1.15;
const REPEAT_LAST_N: i32 = 64;

/// Tokens handed to llama.cpp per prompt-evaluation call. Cancellation is checked between
/// calls, so this bounds how long a cancelled long prompt keeps the worker busy.
const PROMPT_BATCH: u32 = 512;
/// Chunks buffered between the worker and the caller's stream.
const CHUNK_BUFFER: usize = 64;
/// A prompt longer than this many bytes per context token cannot fit; refuse it before
/// spending time tokenizing it.
const MAX_PROMPT_BYTES_PER_TOKEN: usize = 64;

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

/// A GGUF model running in this process. Cheap to share behind an `Arc`; dropping it stops the
/// worker thread once the jobs already queued are done.
pub struct LocalModel {
    id: String,
    /// Tokens generated since load, across all requests.
    generated: Arc<AtomicU64>,
    jobs: std_mpsc::SyncSender<Job>,
    queue_capacity: usize,
    context_size: u32,
    threads: usize,
}

impl std::fmt::Debug for LocalModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalModel")
            .field("id", &self.id)
            .field("context_size", &self.context_size)
            .field("threads", &self.threads)
            .finish_non_exhaustive()
    }
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
        let params = LlamaContextParams::default()
            .with_n_ctx(NonZeroU32::new(context_size))
            .with_n_batch(PROMPT_BATCH)
            .with_n_ubatch(PROMPT_BATCH)
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
        let generated = Arc::new(AtomicU64::new(0));
        let counter = generated.clone();
        std::thread::Builder::new()
            .name("llama-worker".to_string())
            .spawn(move || worker_main(model, params, format, jobs_rx, ready_tx, counter))
            .map_err(|e| {
                ModelError::Unavailable(format!("cannot start the local model's thread: {e}"))
            })?;
        let context_size = ready_rx.recv().map_err(|_| {
            ModelError::Unavailable("the local model's thread stopped while starting".into())
        })??;

        tracing::info!(
            model = %id,
            context_size,
            threads,
            queue = queue_capacity,
            "local model loaded"
        );
        Ok(LocalModel {
            generated,
            id,
            jobs: jobs_tx,
            queue_capacity,
            context_size,
            threads,
        })
    }

    /// The context window in tokens (prompt and completion together).
    pub fn context_size(&self) -> u32 {
        self.context_size
    }

    /// Threads used for prompt evaluation and decoding.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Tokens generated since the model was loaded, over all requests. Shows whether a
    /// cancelled request really stopped the decode loop.
    pub fn tokens_generated(&self) -> u64 {
        self.generated.load(Ordering::Relaxed)
    }
}

impl ChatModel for LocalModel {
    fn id(&self) -> &str {
        &self.id
    }

    fn stream(&self, request: ChatRequest, cancel: CancellationToken) -> ChunkStream {
        let (tx, rx) = mpsc::channel(CHUNK_BUFFER);
        let job = Job {
            request,
            cancel: cancel.clone(),
            out: tx,
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
        receive(rx, cancel).boxed()
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

struct Job {
    request: ChatRequest,
    cancel: CancellationToken,
    out: mpsc::Sender<Result<ChatChunk, ModelError>>,
}

/// Where a job's output goes, and whether anyone still wants it.
struct Sink {
    out: mpsc::Sender<Result<ChatChunk, ModelError>>,
    cancel: CancellationToken,
}

impl Sink {
    /// The request was cancelled or its stream dropped: stop working on it.
    fn abandoned(&self) -> bool {
        self.cancel.is_cancelled() || self.out.is_closed()
    }

    /// Deliver one item; `false` when nobody listens any more. Waits (politely, checking for
    /// cancellation) while the caller's buffer is full, so a slow reader slows generation
    /// down instead of growing memory.
    #[must_use = "false means the caller is gone and work should stop"]
    fn send(&self, item: Result<ChatChunk, ModelError>) -> bool {
        let mut item = item;
        loop {
            match self.out.try_send(item) {
                Ok(()) => return true,
                Err(mpsc::error::TrySendError::Closed(_)) => return false,
                Err(mpsc::error::TrySendError::Full(back)) => {
                    if self.cancel.is_cancelled() {
                        return false;
                    }
                    item = back;
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
        }
    }
}

/// How messages become the prompt text.
enum PromptFormat {
    /// The chat template stored in the GGUF metadata, applied by llama.cpp.
    Model(LlamaChatTemplate),
    /// `<|im_start|>role\ncontent<|im_end|>` (ChatML), for models without a usable template.
    ChatMl,
}

impl PromptFormat {
    fn for_model(model: &LlamaModel) -> PromptFormat {
        let template = match model.chat_template(None) {
            Ok(t) => t,
            Err(e) => {
                tracing::info!(cause = %e, "model has no chat template; using ChatML");
                return PromptFormat::ChatMl;
            }
        };
        // llama.cpp recognises templates by their shape and refuses ones it does not know;
        // find out now rather than on every request.
        let probe = [
            LlamaChatMessage::new("system".into(), "s".into()),
            LlamaChatMessage::new("user".into(), "u".into()),
        ];
        let probe: Result<Vec<_>, _> = probe.into_iter().collect();
        match probe.map(|msgs| model.apply_chat_template(&template, &msgs, true)) {
            Ok(Ok(_)) => PromptFormat::Model(template),
            Ok(Err(e)) => {
                tracing::warn!(cause = %e, "llama.cpp cannot apply the model's chat template; using ChatML");
                PromptFormat::ChatMl
            }
            // "s" and "u" hold no NUL byte, so building the probe cannot fail; fall back anyway.
            Err(_) => PromptFormat::ChatMl,
        }
    }

    fn render(&self, model: &LlamaModel, messages: &[ChatMessage]) -> String {
        if let PromptFormat::Model(template) = self {
            // llama.cpp takes C strings: a NUL byte in user text would cut it short. Drop them.
            let chat: Result<Vec<_>, _> = messages
                .iter()
                .map(|m| {
                    LlamaChatMessage::new(m.role.as_str().to_string(), without_nul(&m.content))
                })
                .collect();
            match chat.map(|chat| model.apply_chat_template(template, &chat, true)) {
                Ok(Ok(prompt)) => return prompt,
                Ok(Err(e)) => tracing::warn!(cause = %e, "chat template failed; using ChatML"),
                Err(e) => tracing::warn!(cause = %e, "chat template failed; using ChatML"),
            }
        }
        chatml(messages)
    }
}

fn without_nul(s: &str) -> String {
    s.replace('\0', "")
}

fn chatml(messages: &[ChatMessage]) -> String {
    let mut out = String::new();
    for m in messages {
        out.push_str("<|im_start|>");
        out.push_str(m.role.as_str());
        out.push('\n');
        out.push_str(&without_nul(&m.content));
        out.push_str("<|im_end|>\n");
    }
    out.push_str("<|im_start|>assistant\n");
    out
}

/// Sampling settings of one request, validated.
struct Sampling {
    max_tokens: u32,
    /// 0 means greedy.
    temperature: f32,
    top_p: f32,
    seed: u32,
    stop: Vec<String>,
}

impl Sampling {
    fn from_request(req: &ChatRequest) -> Result<Sampling, ModelError> {
        let max_tokens = req.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS);
        if max_tokens == 0 {
            return Err(ModelError::InvalidRequest(
                "`max_tokens` must be at least 1, got 0".into(),
            ));
        }
        let temperature = req.temperature.unwrap_or(DEFAULT_TEMPERATURE);
        if !temperature.is_finite() || temperature < 0.0 {
            return Err(ModelError::InvalidRequest(format!(
                "`temperature` must be a number >= 0, got {temperature}"
            )));
        }
        let top_p = req.top_p.unwrap_or(DEFAULT_TOP_P);
        if !(top_p > 0.0 && top_p <= 1.0) {
            return Err(ModelError::InvalidRequest(format!(
                "`top_p` must be above 0 and at most 1, got {top_p}"
            )));
        }
        // llama.cpp seeds are 32-bit and u32::MAX asks it for a random seed.
        let seed = match req.seed {
            Some(s) => match (s ^ (s >> 32)) as u32 {
                u32::MAX => u32::MAX - 1,
                folded => folded,
            },
            None => u32::MAX,
        };
        Ok(Sampling {
            max_tokens,
            temperature,
            top_p,
            seed,
            stop: req.stop.iter().filter(|s| !s.is_empty()).cloned().collect(),
        })
    }

    fn sampler(&self, n_vocab: i32) -> LlamaSampler {
        // A mild penalty on recently generated tokens: small models (SmolLM2-135M) otherwise
        // fall into loops, greedy decoding most of all. Per-request penalties come with the
        // decoding work of issue 5.
        let penalties = LlamaSampler::penalties(n_vocab, REPEAT_LAST_N, REPEAT_PENALTY, 0.0, 0.0);
        if self.temperature == 0.0 {
            return LlamaSampler::chain_simple([penalties, LlamaSampler::greedy()]);
        }
        LlamaSampler::chain_simple([
            penalties,
            LlamaSampler::top_k(SAMPLE_TOP_K),
            LlamaSampler::top_p(self.top_p, 1),
            LlamaSampler::min_p(SAMPLE_MIN_P, 1),
            LlamaSampler::temp(self.temperature),
            LlamaSampler::dist(self.seed),
        ])
    }
}

/// The worker thread: owns the model, its context and a reusable batch.
fn worker_main(
    model: LlamaModel,
    params: LlamaContextParams,
    format: PromptFormat,
    jobs: std_mpsc::Receiver<Job>,
    ready: std_mpsc::SyncSender<Result<u32, ModelError>>,
    generated: Arc<AtomicU64>,
) {
    let ctx = match backend().and_then(|b| {
        model.new_context(b, params).map_err(|e| {
            ModelError::Unavailable(format!(
                "llama.cpp cannot create a context for the model ({e}); \
                 hint: lower `model.local.context_size`"
            ))
        })
    }) {
        Ok(ctx) => ctx,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let n_batch = ctx.n_batch().max(1);
    let mut engine = Engine {
        model: &model,
        ctx,
        batch: LlamaBatch::new(n_batch as usize, 1),
        format,
        generated,
    };
    if ready.send(Ok(engine.ctx.n_ctx())).is_err() {
        return; // the loader gave up waiting
    }
    // Ends when the `LocalModel` (the only sender) is dropped and the queue is empty.
    while let Ok(job) = jobs.recv() {
        engine.run(job);
    }
    tracing::debug!("local model worker stopped");
}

struct Engine<'m> {
    model: &'m LlamaModel,
    ctx: LlamaContext<'m>,
    batch: LlamaBatch<'static>,
    format: PromptFormat,
    generated: Arc<AtomicU64>,
}

/// How a generation ended, when it did not fail.
enum Outcome {
    Finished(FinishReason, Usage),
    Abandoned,
}

impl Engine<'_> {
    fn run(&mut self, job: Job) {
        let sink = Sink {
            out: job.out,
            cancel: job.cancel,
        };
        if sink.abandoned() {
            return; // gave up while queued
        }
        self.ctx.reset_timings();
        let result = self.generate(&job.request, &sink);

        // Forget this conversation. This is where a later prefix / per-session KV cache hooks
        // in: keep the cells of a shared prefix (`kv_cache_seq_rm(0, Some(prefix_len), None)`)
        // and remember which tokens they hold, instead of clearing everything.
        self.ctx.clear_kv_cache();

        let timings = self.ctx.timings();
        tracing::debug!(
            prompt_tokens = timings.n_p_eval(),
            prompt_ms = timings.t_p_eval_ms(),
            decoded_tokens = timings.n_eval(),
            decode_ms = timings.t_eval_ms(),
            "local generation done"
        );

        match result {
            Ok(Outcome::Finished(reason, usage)) => {
                if sink.send(Ok(ChatChunk::Usage(usage))) {
                    let _ = sink.send(Ok(ChatChunk::Finish(reason)));
                }
            }
            Ok(Outcome::Abandoned) => {
                // Nobody listens, unless the token fired while the stream is still open: then
                // say so (the caller's stream usually has already).
                let _ = sink.send(Err(ModelError::Cancelled));
            }
            Err(e) => {
                let _ = sink.send(Err(e));
            }
        }
    }

    fn generate(&mut self, request: &ChatRequest, sink: &Sink) -> Result<Outcome, ModelError> {
        let sampling = Sampling::from_request(request)?;
        if request.messages.is_empty() {
            return Err(ModelError::InvalidRequest(
                "`messages` must hold at least one message, got 0".into(),
            ));
        }
        let n_ctx = self.ctx.n_ctx() as usize;
        let prompt = self.format.render(self.model, &request.messages);
        if prompt.len() > n_ctx * MAX_PROMPT_BYTES_PER_TOKEN {
            return Err(ModelError::InvalidRequest(format!(
                "the prompt is {} bytes, far more than the local model's context window of \
                 {n_ctx} tokens holds (`model.local.context_size`)",
                prompt.len()
            )));
        }
        let tokens = self.tokenize(&prompt);
        // At least one token of room must remain for the answer.
        if tokens.len() >= n_ctx {
            return Err(ModelError::InvalidRequest(format!(
                "the prompt is {} tokens but the local model's context window is {n_ctx} tokens \
                 (`model.local.context_size`), and the answer needs room too\nhint: shorten the \
                 conversation or raise the context size",
                tokens.len()
            )));
        }
        if tokens.is_empty() {
            return Err(ModelError::InvalidRequest(
                "the prompt is empty after applying the chat template".into(),
            ));
        }

        if !self.eval_prompt(&tokens, sink)? {
            return Ok(Outcome::Abandoned);
        }

        let model = self.model;
        let vocab = model.vocab();
        let mut sampler = sampling.sampler(model.n_vocab());
        let mut text = TextAssembler::new(sampling.stop.clone());
        // The answer may not run past the context window either.
        let limit = (sampling.max_tokens as usize).min(n_ctx - tokens.len());
        let mut generated = 0usize;
        let mut logits_at = self.batch.n_tokens() - 1;
        let mut pos = tokens.len();

        let reason = loop {
            if sink.abandoned() {
                return Ok(Outcome::Abandoned);
            }
            let token = sampler.sample(&self.ctx, logits_at);
            if vocab.is_eog(token) {
                break FinishReason::Stop;
            }
            generated += 1;
            self.generated.fetch_add(1, Ordering::Relaxed);
            let piece = vocab.token_to_piece(token, false, None);
            let (out, stopped) = text.push(&piece);
            if !out.is_empty() && !sink.send(Ok(ChatChunk::Text(out))) {
                return Ok(Outcome::Abandoned);
            }
            if stopped {
                break FinishReason::Stop;
            }
            if generated >= limit {
                break FinishReason::Length;
            }
            self.batch.clear();
            self.batch
                .add(token, pos_i32(pos)?, &[0], true)
                .map_err(|e| engine_error("cannot queue a token", e))?;
            self.ctx
                .decode(&mut self.batch)
                .map_err(|e| engine_error("decoding failed", e))?;
            pos += 1;
            logits_at = 0;
        };

        let rest = text.finish();
        if !rest.is_empty() && !sink.send(Ok(ChatChunk::Text(rest))) {
            return Ok(Outcome::Abandoned);
        }
        let usage = Usage {
            prompt_tokens: u32::try_from(tokens.len()).unwrap_or(u32::MAX),
            completion_tokens: u32::try_from(generated).unwrap_or(u32::MAX),
        };
        Ok(Outcome::Finished(reason, usage))
    }

    fn tokenize(&self, prompt: &str) -> Vec<LlamaToken> {
        let vocab = self.model.vocab();
        // `add_special` lets llama.cpp add BOS when the model wants one; templates that
        // already start with BOS would then get it twice, which degrades answers.
        let mut tokens = vocab.tokenize(prompt.as_bytes(), true, true);
        let bos = vocab.bos();
        if tokens.len() >= 2 && tokens[0] == bos && tokens[1] == bos {
            tokens.remove(0);
        }
        tokens
    }

    /// Feed the prompt in batches, asking for logits of the last token only. `Ok(false)`
    /// when the request was abandoned in between.
    fn eval_prompt(&mut self, tokens: &[LlamaToken], sink: &Sink) -> Result<bool, ModelError> {
        let n_batch = (self.ctx.n_batch() as usize).max(1);
        let last = tokens.len() - 1;
        for (i, chunk) in tokens.chunks(n_batch).enumerate() {
            if sink.abandoned() {
                return Ok(false);
            }
            self.batch.clear();
            for (j, &token) in chunk.iter().enumerate() {
                let pos = i * n_batch + j;
                self.batch
                    .add(token, pos_i32(pos)?, &[0], pos == last)
                    .map_err(|e| engine_error("cannot queue a prompt token", e))?;
            }
            self.ctx
                .decode(&mut self.batch)
                .map_err(|e| engine_error("prompt evaluation failed", e))?;
        }
        Ok(true)
    }
}

fn pos_i32(pos: usize) -> Result<i32, ModelError> {
    i32::try_from(pos)
        .map_err(|_| ModelError::InvalidRequest(format!("token position {pos} is out of range")))
}

fn engine_error(what: &str, e: impl std::fmt::Display) -> ModelError {
    ModelError::Unavailable(format!("local model: {what}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use moltbot_core::Role;

    #[test]
    fn sampling_is_validated_with_the_field_and_value() {
        let mut req = ChatRequest {
            max_tokens: Some(0),
            ..ChatRequest::default()
        };
        let err = Sampling::from_request(&req).err().map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("`max_tokens`") && e.contains("got 0")));
        req.max_tokens = None;
        req.top_p = Some(1.5);
        let err = Sampling::from_request(&req).err().map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("`top_p`") && e.contains("1.5")));
        req.top_p = None;
        req.temperature = Some(f32::NAN);
        assert!(Sampling::from_request(&req).is_err());
        req.temperature = Some(0.0);
        req.stop = vec![String::new(), "x".into()];
        let s = Sampling::from_request(&req).ok();
        assert!(s.is_some_and(|s| s.max_tokens == DEFAULT_MAX_TOKENS && s.stop == ["x"]));
    }

    #[test]
    fn chatml_fallback_ends_with_the_assistant_turn() {
        let p = chatml(&[
            ChatMessage::new(Role::System, "be brief"),
            ChatMessage::new(Role::User, "hi\0"),
        ]);
        assert_eq!(
            p,
            "<|im_start|>system\nbe brief<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n\
             <|im_start|>assistant\n"
        );
    }

    #[test]
    fn context_size_never_exceeds_training() {
        assert_eq!(choose_context_size(4096, 8192), 4096);
        assert_eq!(choose_context_size(16384, 8192), 8192);
        assert_eq!(choose_context_size(0, 2048), 2048);
        assert_eq!(choose_context_size(1024, 0), 1024);
    }
}
