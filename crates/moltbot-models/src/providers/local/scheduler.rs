//! The worker thread: continuous batching over one llama.cpp context.
//!
//! # One step
//! 1. Take new jobs from the queue while a slot is free (jobs stay in the bounded queue until
//!    then, so the queue limit holds). Each is tokenized and given a slot by the [`KvBook`],
//!    whose plan says which of its prompt's KV cells can be reused (the conversation's last
//!    turn, a shared prefix, a state kept in RAM); only the rest is read.
//! 2. Build one batch: the pending token of every generating request (one per beam for beam
//!    search), then prompt tokens of requests still reading, up to the batch size. A long
//!    prompt is read over several steps while the others keep generating.
//! 3. Decode the batch once, then sample (or advance the beams) for every request whose
//!    logits it produced, and send the new text out.
//!
//! A full KV cache is met by dropping what is idle (warm sessions, after copying them to RAM,
//! then pinned prefixes) and retrying; when nothing idle is left, the newest request fails
//! with a clear error rather than stalling the others.

use super::beam::{top_logprobs, Beam, Cand};
use super::kv::{seq_id, Eviction, KvBook, Plan, Source};
use super::prompt::PromptFormat;
use super::sampling::{Sampling, REPEAT_LAST_N};
use super::text::TextAssembler;
use super::{backend, LocalStats, MAX_PROMPT_BYTES_PER_TOKEN};
use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::context::session::LlamaStateSeqFlags;
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;
use llama_cpp_2::DecodeError;
use moltbot_core::{ChatChunk, ChatRequest, FinishReason, ModelError, Usage};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering;
use std::sync::mpsc as std_mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub(super) struct Job {
    pub request: ChatRequest,
    /// Text the answer starts with, written for the model (a tool call's opening).
    pub prefill: String,
    /// A grammar (GBNF, root `root`) the answer must follow.
    pub grammar: Option<String>,
    pub cancel: CancellationToken,
    pub out: mpsc::Sender<Result<ChatChunk, ModelError>>,
    /// Test hook: the worker panics when it admits this job.
    pub crash: bool,
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

/// Everything the worker is started with.
pub(super) struct WorkerSetup {
    pub model: LlamaModel,
    pub params: LlamaContextParams,
    pub format: PromptFormat,
    pub jobs: std_mpsc::Receiver<Job>,
    pub ready: std_mpsc::SyncSender<Result<u32, ModelError>>,
    pub stats: Arc<LocalStats>,
    pub shape: ContextShape,
}

/// What shapes each new context (the first, and a fresh one after a crash).
pub(super) struct ContextShape {
    /// Requests run at once.
    pub slots: usize,
    /// Pinned prefixes.
    pub prefixes: usize,
    /// Scratch sequences for beam search.
    pub scratch: usize,
    /// RAM for saved conversations.
    pub session_cache_bytes: usize,
    /// Longest sequence (prompt and answer) a request may use.
    pub max_seq_tokens: usize,
    pub reuse_kv: bool,
    /// Tokens idle conversations may keep in the KV cache (the rest wait in RAM).
    pub idle_budget: usize,
}

/// The worker thread's body; returns when the `LocalModel` is dropped and the queue is empty.
///
/// A panic in the decode loop (a bug) must not end local generation for the life of the
/// process: the context is dropped with everything running on it (those requests fail, their
/// senders are gone), and after a pause that doubles from 1 s to 30 s a fresh context
/// serves the queue again. The model weights are kept.
pub(super) fn worker_main(setup: WorkerSetup) {
    let WorkerSetup {
        model,
        params,
        format,
        jobs,
        ready,
        stats,
        shape,
    } = setup;
    let mut ready = Some(ready);
    let mut pause = Duration::from_secs(1);
    loop {
        let started = Instant::now();
        let run = std::panic::catch_unwind(AssertUnwindSafe(|| {
            serve(&model, &params, &format, &jobs, &mut ready, &stats, &shape)
        }));
        let Err(panic) = run else {
            break;
        };
        let why = panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a non-text panic".into());
        if let Some(ready) = ready.take() {
            let _ = ready.send(Err(ModelError::Unavailable(format!(
                "the local model's thread crashed while starting: {why}"
            ))));
            return;
        }
        stats.restarts.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("moltbot_component_restarts_total", "component" => "local_model.worker")
            .increment(1);
        if started.elapsed() > Duration::from_secs(60) {
            pause = Duration::from_secs(1);
        }
        tracing::error!(
            cause = %why,
            retry_in_ms = pause.as_millis() as u64,
            "the local model worker crashed; starting a fresh context"
        );
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_secs(30));
    }
    tracing::debug!("local model worker stopped");
}

/// Create a context and serve jobs on it until the queue closes. The first successful
/// start answers `ready`.
fn serve(
    model: &LlamaModel,
    params: &LlamaContextParams,
    format: &PromptFormat,
    jobs: &std_mpsc::Receiver<Job>,
    ready: &mut Option<std_mpsc::SyncSender<Result<u32, ModelError>>>,
    stats: &Arc<LocalStats>,
    shape: &ContextShape,
) {
    let ctx = match backend().and_then(|b| {
        model.new_context(b, params.clone()).map_err(|e| {
            ModelError::Unavailable(format!(
                "llama.cpp cannot create a context for the model ({e}); \
                 hint: lower `model.local.context_size` or `model.local.kv_cache_tokens`"
            ))
        })
    }) {
        Ok(ctx) => ctx,
        Err(e) => {
            match ready.take() {
                Some(ready) => {
                    let _ = ready.send(Err(e));
                }
                // A restart that cannot get a context: fail what waits, stop.
                None => tracing::error!(cause = %e, "the local model cannot restart"),
            }
            return;
        }
    };
    let n_batch = ctx.n_batch().max(1) as usize;
    let book = if shape.reuse_kv {
        KvBook::new(shape.slots, shape.prefixes, shape.session_cache_bytes)
            .with_idle_budget(shape.idle_budget)
    } else {
        KvBook::without_reuse(shape.slots)
    };
    let first_scratch = book.sequences();
    let mut worker = Worker {
        model,
        ctx,
        batch: LlamaBatch::new(n_batch, 1),
        n_batch,
        format,
        book,
        scratch: (first_scratch..first_scratch + shape.scratch)
            .map(seq_id)
            .collect(),
        running: Vec::new(),
        stats: stats.clone(),
        max_seq_tokens: shape.max_seq_tokens,
        next_id: 0,
        peak_running: 0,
    };
    worker.warm_up();
    if let Some(ready) = ready.take() {
        if ready.send(Ok(worker.ctx.n_ctx())).is_err() {
            return; // the loader gave up waiting
        }
    }
    loop {
        if worker.running.is_empty() {
            worker.compact_when_idle();
            // Idle: wait for work. Ends when the `LocalModel` (the only sender) is dropped.
            match jobs.recv() {
                Ok(job) => worker.admit(job, 0),
                Err(_) => break,
            }
        }
        while worker.book.has_idle_slot() {
            match jobs.try_recv() {
                Ok(job) => {
                    // Other requests that will share the model with this one, for the beam
                    // width: the running ones and one more if the queue is not empty.
                    let others = worker.running.len();
                    worker.admit(job, others);
                }
                Err(_) => break,
            }
        }
        worker.step();
    }
}

/// One running request.
struct Running {
    /// Admission order, to know which is newest.
    id: u64,
    slot: usize,
    sink: Sink,
    prompt: Vec<LlamaToken>,
    /// The next prompt token to read.
    read: usize,
    reused: usize,
    mode: Mode,
    text: TextAssembler,
    limit: usize,
    generated: usize,
    repeat_penalty: f32,
    /// Where this request's logits are in the current batch (plain decoding, and the
    /// prompt's last token for beam search).
    logits_at: Option<i32>,
    /// Prompt tokens put into the current batch.
    queued_prompt: usize,
    /// Whether the pending sampled token is in the current batch.
    fed_pending: bool,
}

enum Mode {
    Sample {
        sampler: LlamaSampler,
        /// Sampled and sent, not yet in the KV cache.
        pending: Option<LlamaToken>,
    },
    Beam(Beam),
}

/// How a request left the running set.
enum End {
    Finished(FinishReason),
    Abandoned,
    Failed(ModelError),
}

struct Worker<'m> {
    model: &'m LlamaModel,
    ctx: LlamaContext<'m>,
    batch: LlamaBatch<'static>,
    n_batch: usize,
    format: &'m PromptFormat,
    book: KvBook<llama_cpp_2::context::session::SeqState>,
    /// Free scratch sequences for beam search.
    scratch: Vec<i32>,
    running: Vec<Running>,
    stats: Arc<LocalStats>,
    max_seq_tokens: usize,
    next_id: u64,
    /// Most requests running at once since the last compaction.
    peak_running: usize,
}

impl Worker<'_> {
    /// One tiny decode at load (as llama.cpp's own tools do): the first real request then
    /// does not pay for the thread pool and buffers being set up. Failure only costs speed.
    fn warm_up(&mut self) {
        let vocab = self.model.vocab();
        let n_vocab = self.model.n_vocab();
        // Models without a BOS (or EOS) token report -1; llama.cpp refuses such tokens.
        let tokens: Vec<LlamaToken> = [vocab.bos(), vocab.eos()]
            .into_iter()
            .filter(|t| (0..n_vocab).contains(&t.0))
            .collect();
        self.batch.clear();
        for (pos, &token) in tokens.iter().enumerate() {
            let last = pos + 1 == tokens.len();
            let Ok(pos) = pos_i32(pos) else { return };
            if self.batch.add(token, pos, &[0], last).is_err() {
                return;
            }
        }
        if tokens.is_empty() {
            return;
        }
        if let Err(e) = self.ctx.decode(&mut self.batch) {
            tracing::debug!(cause = %e, "warm-up decode failed");
        }
        self.clear_seq(0);
        self.batch.clear();
    }

    /// Validate, tokenize and place a new job; failures are answered at once.
    fn admit(&mut self, job: Job, others: usize) {
        assert!(
            !job.crash,
            "injected crash of the local model worker (test hook)"
        );
        let sink = Sink {
            out: job.out,
            cancel: job.cancel,
        };
        if sink.abandoned() {
            return; // gave up while queued
        }
        match self.prepare(&job.request, &job.prefill) {
            Ok((mut sampling, prompt)) => {
                sampling.grammar = job.grammar;
                self.start(sink, sampling, prompt, others)
            }
            Err(e) => {
                let _ = sink.send(Err(e));
            }
        }
    }

    fn prepare(
        &self,
        request: &ChatRequest,
        prefill: &str,
    ) -> Result<(Sampling, Vec<LlamaToken>), ModelError> {
        let sampling = Sampling::from_request(request)?;
        if request.messages.is_empty() {
            return Err(ModelError::InvalidRequest(
                "`messages` must hold at least one message, got 0".into(),
            ));
        }
        let n_ctx = self.max_seq_tokens;
        let mut prompt = self.format.render(self.model, &request.messages);
        prompt.push_str(prefill);
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
        Ok((sampling, tokens))
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

    fn start(&mut self, sink: Sink, sampling: Sampling, prompt: Vec<LlamaToken>, others: usize) {
        let Some(plan) = self.book.plan(&prompt) else {
            // Callers only admit while a slot is free.
            let _ = sink.send(Err(ModelError::Unavailable(
                "local model: no free slot".into(),
            )));
            return;
        };
        let slot = plan.slot;
        let kind = plan.kind;
        let keep = match self.apply_plan(plan, &prompt) {
            Ok(keep) => keep,
            Err(e) => {
                self.book.clear_slot(slot);
                self.book.release(slot);
                let _ = sink.send(Err(e));
                return;
            }
        };
        self.stats.record_admission(kind, keep, prompt.len() - keep);
        // What is idle from now on slows this request and the others down.
        while let Some(eviction) = self.book.admission_excess() {
            self.evict(eviction);
        }

        let limit = (sampling.max_tokens as usize).min(self.max_seq_tokens - prompt.len());
        let width = sampling
            .beam_width(limit, others)
            .min(self.scratch.len() + 1);
        let mode = if width > 1 {
            let mut seqs = vec![seq_id(slot)];
            seqs.extend(self.scratch.drain(self.scratch.len() + 1 - width..));
            Mode::Beam(Beam::new(width, prompt.len(), seqs))
        } else {
            Mode::Sample {
                sampler: sampling.sampler(self.model),
                pending: None,
            }
        };
        self.next_id += 1;
        self.running.push(Running {
            id: self.next_id,
            slot,
            sink,
            prompt,
            read: keep,
            reused: keep,
            mode,
            text: TextAssembler::new(sampling.stop.clone()),
            limit,
            generated: 0,
            repeat_penalty: sampling.repeat_penalty,
            logits_at: None,
            queued_prompt: 0,
            fed_pending: false,
        });
        metrics::gauge!("moltbot_local_running").set(self.running.len() as f64);
    }

    /// Carry out a plan on the KV cache; returns how many prompt tokens the slot holds.
    fn apply_plan(
        &mut self,
        plan: Plan<llama_cpp_2::context::session::SeqState>,
        prompt: &[LlamaToken],
    ) -> Result<usize, ModelError> {
        let seq = seq_id(plan.slot);
        if plan.save_old {
            self.save_to_ram(plan.slot);
        }
        let mut keep = plan.keep;
        match plan.source {
            Source::Nothing => self.clear_seq(seq),
            Source::Own => keep = self.truncate_seq(seq, keep),
            Source::Copy { from } => {
                self.clear_seq(seq);
                self.ctx
                    .copy_kv_cache_seq(from, seq, Some(0), Some(keep as u32))
                    .map_err(|e| engine_error("cannot share cached tokens", e))?;
            }
            Source::Restore { state } => {
                self.clear_seq(seq);
                match self.ctx.state_seq_set(&state, seq) {
                    Ok(()) => keep = self.truncate_seq(seq, keep),
                    Err(e) => {
                        // Not enough free cells, most likely: read the prompt instead.
                        tracing::debug!(cause = %e, "could not restore a saved conversation");
                        self.clear_seq(seq);
                        keep = 0;
                    }
                }
            }
        }
        self.book.set_slot(plan.slot, &prompt[..keep]);
        if let Some(n) = plan.pin.filter(|&n| n <= keep) {
            if let Some(pseq) = self.book.pin(&prompt[..n]) {
                let id = seq_id(pseq);
                self.clear_seq(id);
                if let Err(e) = self.ctx.copy_kv_cache_seq(seq, id, Some(0), Some(n as u32)) {
                    self.book.unpin_seq(pseq);
                    return Err(engine_error("cannot pin a prefix", e));
                }
                metrics::gauge!("moltbot_local_prefix_cache_entries")
                    .set(self.book.pinned() as f64);
            }
        }
        Ok(keep)
    }

    /// Keep the first `keep` cells of `seq`; returns what is kept. Some models cannot drop
    /// part of a sequence: then it is cleared and read again from the start.
    fn truncate_seq(&mut self, seq: i32, keep: usize) -> usize {
        match self.ctx.kv_cache_seq_rm(seq, Some(keep as u32), None) {
            Ok(()) => keep,
            Err(_) => {
                self.clear_seq(seq);
                0
            }
        }
    }

    fn clear_seq(&mut self, seq: i32) {
        // Removing a whole sequence always succeeds.
        let _ = self.ctx.kv_cache_seq_rm(seq, None, None);
    }

    /// Copy an idle slot's or a pinned prefix's KV state to RAM before its cells are dropped.
    fn save_to_ram(&mut self, seq: usize) {
        match self
            .ctx
            .state_seq_get(seq_id(seq), LlamaStateSeqFlags::empty())
        {
            Ok(state) => {
                let bytes = state.byte_len();
                self.book.store(seq, state, bytes);
                self.stats.saved.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => tracing::debug!(cause = %e, "could not save a conversation's KV state"),
        }
        let (n, bytes) = self.book.saved_usage();
        metrics::gauge!("moltbot_local_session_cache_bytes").set(bytes as f64);
        metrics::gauge!("moltbot_local_session_cache_entries").set(n as f64);
    }

    /// Drop one idle thing from the KV cache; `false` when nothing idle is left.
    fn evict_one(&mut self) -> bool {
        match self.book.evict_one() {
            Some(eviction) => {
                self.evict(eviction);
                true
            }
            None => false,
        }
    }

    /// Carry out an eviction the book chose: an idle slot goes to RAM first when asked to.
    fn evict(&mut self, eviction: Eviction) {
        match eviction {
            Eviction::Slot { seq, save } => {
                if save {
                    self.save_to_ram(seq);
                }
                self.clear_seq(seq_id(seq));
                self.book.clear_slot(seq);
            }
            Eviction::Prefix { seq, save } => {
                if save {
                    self.save_to_ram(seq);
                }
                self.book.unpin_seq(seq);
                self.clear_seq(seq_id(seq));
                metrics::gauge!("moltbot_local_prefix_cache_entries")
                    .set(self.book.pinned() as f64);
            }
        }
    }

    /// After a burst of concurrent requests, once nothing runs: the KV cache is rebuilt
    /// packed at its start, with the pinned prefixes and the idle conversations it held.
    ///
    /// Every decode step attends over the cells up to the highest one in use, and new
    /// cells are taken from a moving head, so a burst leaves prefixes and idle
    /// conversations wherever it reached; a lone conversation afterwards pays for that
    /// whole span on every token (turn 20 after the serving benchmark: 430–571 ms, on a
    /// fresh cache 313–337 ms). Their states are copied out, the cache is cleared (which
    /// resets the head) and they are copied back into its first cells: prefixes first, then
    /// conversations, most recently used first, up to half the cache or the idle budget (a
    /// conversation that shared a prefix's cells comes back with its own copy of them). What
    /// does not fit goes to RAM like any evicted content. A request that arrives meanwhile waits
    /// for the copies (milliseconds per thousand tokens).
    fn compact_when_idle(&mut self) {
        if self.peak_running < 2 || !self.book.reuses() {
            return;
        }
        self.peak_running = 0;
        let started = std::time::Instant::now();
        // Up to half the cache, and no more than idle content may keep anyway.
        let room = (usize::try_from(self.ctx.n_ctx()).unwrap_or(usize::MAX) / 2)
            .min(self.book.idle_budget());
        let mut used = 0;
        // (sequence id, tokens, is a prefix, state)
        let mut keep = Vec::new();
        let pinned = self.book.pinned_seqs();
        let idle = self.book.idle_slots();
        for (seq, tokens, prefix) in pinned
            .into_iter()
            .map(|(q, n)| (q, n, true))
            .chain(idle.into_iter().map(|(q, n)| (q, n, false)))
        {
            let copied = (used + tokens <= room)
                .then(|| {
                    self.ctx
                        .state_seq_get(seq_id(seq), LlamaStateSeqFlags::empty())
                        .map_err(|e| tracing::debug!(cause = %e, "could not copy a sequence out"))
                        .ok()
                })
                .flatten();
            match copied {
                Some(state) => {
                    used += tokens;
                    keep.push((seq, tokens, prefix, state));
                }
                None if prefix => {
                    let eviction = self.book.prefix_eviction(seq);
                    self.evict(eviction);
                }
                None => {
                    let eviction = self.book.slot_eviction(seq);
                    self.evict(eviction);
                }
            }
        }
        self.ctx.clear_kv_cache();
        for (seq, tokens, prefix, state) in keep {
            let id = seq_id(seq);
            let restored = self.ctx.state_seq_set(&state, id).is_ok()
                && usize::try_from(self.ctx.kv_cache_seq_pos_max(id) + 1) == Ok(tokens);
            if !restored {
                tracing::debug!(seq, tokens, "could not put a sequence back; it is dropped");
                self.clear_seq(id);
                if prefix {
                    self.book.unpin_seq(seq);
                } else {
                    self.book.clear_slot(seq);
                }
            }
        }
        metrics::gauge!("moltbot_local_prefix_cache_entries").set(self.book.pinned() as f64);
        metrics::counter!("moltbot_local_kv_compactions_total").increment(1);
        self.stats.compactions.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(
            tokens = used,
            ms = started.elapsed().as_secs_f64() * 1e3,
            "KV cache compacted"
        );
    }

    /// Drop requests whose caller went away.
    fn drop_abandoned(&mut self) {
        let mut i = 0;
        while i < self.running.len() {
            if self.running[i].sink.abandoned() {
                self.end(i, End::Abandoned);
            } else {
                i += 1;
            }
        }
    }

    /// One batch: build, decode, sample.
    fn step(&mut self) {
        self.drop_abandoned();
        if self.running.is_empty() {
            return;
        }
        self.peak_running = self.peak_running.max(self.running.len());
        if let Err(e) = self.build_batch() {
            // Only a position out of range can fail here; give up on everything in flight.
            self.fail_all(e);
            return;
        }
        if self.batch.n_tokens() == 0 {
            return;
        }
        loop {
            match self.ctx.decode(&mut self.batch) {
                Ok(()) => break,
                Err(DecodeError::NoKvCacheSlot) => {
                    if self.evict_one() {
                        continue;
                    }
                    // Nothing idle left: the newest request gives way.
                    let newest = (0..self.running.len()).max_by_key(|&i| self.running[i].id);
                    if let Some(i) = newest {
                        let slot = self.running[i].slot;
                        self.clear_seq(seq_id(slot));
                        self.book.clear_slot(slot);
                        self.end(
                            i,
                            End::Failed(ModelError::Unavailable(
                                "the local model's KV cache is full with other requests; \
                                 retry shortly\nhint: raise `model.local.kv_cache_tokens` or \
                                 lower `model.local.parallel`"
                                    .into(),
                            )),
                        );
                    }
                    return; // the next step rebuilds the batch without it
                }
                Err(e) => {
                    self.fail_all(engine_error("decoding failed", e));
                    return;
                }
            }
        }
        self.stats.steps.fetch_add(1, Ordering::Relaxed);
        metrics::histogram!("moltbot_local_batch_tokens").record(f64::from(self.batch.n_tokens()));
        self.after_decode();
    }

    /// Put the next tokens of every running request into the batch. The book learns what
    /// each slot holds only after the decode succeeds (`after_decode`).
    fn build_batch(&mut self) -> Result<(), ModelError> {
        self.batch.clear();
        let mut room = self.n_batch;
        // Generating requests first: one token each (one per live beam).
        for r in &mut self.running {
            r.logits_at = None;
            r.queued_prompt = 0;
            r.fed_pending = false;
            let slot_len = self.book.slot_tokens(r.slot).len();
            match &mut r.mode {
                Mode::Sample {
                    pending: Some(t), ..
                } => {
                    self.batch
                        .add(*t, pos_i32(slot_len)?, &[seq_id(r.slot)], true)
                        .map_err(|e| engine_error("cannot queue a token", e))?;
                    r.logits_at = Some(self.batch.n_tokens() - 1);
                    r.fed_pending = true;
                    room -= 1;
                }
                Mode::Beam(beam) if r.read == r.prompt.len() && !beam.live[0].tokens.is_empty() => {
                    for h in &mut beam.live {
                        let pos = beam.base + h.tokens.len() - 1;
                        let t = h.tokens[h.tokens.len() - 1];
                        self.batch
                            .add(t, pos_i32(pos)?, &[h.seq], true)
                            .map_err(|e| engine_error("cannot queue a token", e))?;
                        h.logits_at = Some(self.batch.n_tokens() - 1);
                        room -= 1;
                    }
                }
                _ => {}
            }
        }
        // Then prompts, oldest first, as much as fits.
        for r in &mut self.running {
            if room == 0 {
                break;
            }
            if r.read == r.prompt.len() {
                continue;
            }
            let n = (r.prompt.len() - r.read).min(room);
            let seq = seq_id(r.slot);
            for pos in r.read..r.read + n {
                let last = pos == r.prompt.len() - 1;
                self.batch
                    .add(r.prompt[pos], pos_i32(pos)?, &[seq], last)
                    .map_err(|e| engine_error("cannot queue a prompt token", e))?;
                if last {
                    r.logits_at = Some(self.batch.n_tokens() - 1);
                }
            }
            r.queued_prompt = n;
            room -= n;
        }
        Ok(())
    }

    /// Record what the decode put into the KV cache, then sample.
    fn after_decode(&mut self) {
        let mut ends = Vec::new();
        for i in 0..self.running.len() {
            self.account(i);
            let end = match self.running[i].mode {
                Mode::Sample { .. } => self.sample(i),
                Mode::Beam(_) => self.beam_step(i),
            };
            if let Some(end) = end {
                ends.push((i, end));
            }
        }
        // Highest index first so the others keep their places.
        for (i, end) in ends.into_iter().rev() {
            self.end(i, end);
        }
    }

    /// Tell the book which tokens of request `i` the last decode put into its slot.
    fn account(&mut self, i: usize) {
        let r = &mut self.running[i];
        if r.queued_prompt > 0 {
            let upto = r.read + r.queued_prompt;
            self.book.extend_slot(r.slot, &r.prompt[r.read..upto]);
            r.read = upto;
            r.queued_prompt = 0;
        }
        if let Mode::Sample { pending, .. } = &mut r.mode {
            if r.fed_pending {
                if let Some(t) = pending.take() {
                    self.book.extend_slot(r.slot, &[t]);
                }
                r.fed_pending = false;
            }
        }
    }

    /// Plain decoding: sample one token for request `i` if the batch gave it logits.
    fn sample(&mut self, i: usize) -> Option<End> {
        let vocab = self.model.vocab();
        let r = &mut self.running[i];
        let at = r.logits_at?;
        let Mode::Sample { sampler, pending } = &mut r.mode else {
            return None;
        };
        let token = sampler.sample(&self.ctx, at);
        if vocab.is_eog(token) {
            return Some(End::Finished(FinishReason::Stop));
        }
        r.generated += 1;
        self.stats.generated.fetch_add(1, Ordering::Relaxed);
        let piece = vocab.token_to_piece(token, false, None);
        let (out, stopped) = r.text.push(&piece);
        if !out.is_empty() && !r.sink.send(Ok(ChatChunk::Text(out))) {
            return Some(End::Abandoned);
        }
        if stopped {
            return Some(End::Finished(FinishReason::Stop));
        }
        if r.generated >= r.limit {
            return Some(End::Finished(FinishReason::Length));
        }
        *pending = Some(token);
        None
    }

    /// Beam search: extend every hypothesis by the best tokens once the batch gave logits.
    fn beam_step(&mut self, i: usize) -> Option<End> {
        let vocab = self.model.vocab();
        let r = &mut self.running[i];
        if r.read < r.prompt.len() {
            return None;
        }
        let root_at = r.logits_at;
        let penalty = r.repeat_penalty;
        let Mode::Beam(beam) = &mut r.mode else {
            return None;
        };
        let mut cands = Vec::new();
        for (p, h) in beam.live.iter().enumerate() {
            let at = if h.tokens.is_empty() {
                root_at
            } else {
                h.logits_at
            };
            let Some(at) = at else {
                return None; // not in this batch
            };
            let logits = self.ctx.get_logits_ith(at);
            let recent = &h.tokens[h.tokens.len().saturating_sub(REPEAT_LAST_N)..];
            for (token, logprob) in top_logprobs(logits, recent, penalty, beam.width) {
                cands.push(Cand {
                    parent: p,
                    token,
                    logprob,
                });
            }
        }
        let copies = beam.advance(cands, |t| vocab.is_eog(t));
        for c in copies {
            let _ = self.ctx.kv_cache_seq_rm(c.to, None, None);
            if let Err(e) = self.ctx.copy_kv_cache_seq(c.from, c.to, None, None) {
                return Some(End::Failed(engine_error("beam search cannot fork", e)));
            }
        }
        let generated = beam.live.first().map_or(0, |h| h.tokens.len());
        self.stats
            .generated
            .fetch_add(beam.live.len().min(1) as u64, Ordering::Relaxed);
        r.generated = generated;
        // The leader can change until the end, so only what every contender starts with
        // is streamed while the search runs; the winner's rest comes at the end.
        let (tokens, ended) = if beam.finished(r.limit) {
            let Some((best, ended)) = beam.best() else {
                return Some(End::Finished(FinishReason::Stop));
            };
            r.generated = best.tokens.len();
            (
                best.tokens[beam.streamed.min(best.tokens.len())..].to_vec(),
                Some(ended),
            )
        } else {
            (beam.take_settled(), None)
        };
        let mut stopped = false;
        let mut out = String::new();
        for t in &tokens {
            let (piece, stop) = r.text.push(&vocab.token_to_piece(*t, false, None));
            out.push_str(&piece);
            if stop {
                stopped = true;
                break;
            }
        }
        if !out.is_empty() && !r.sink.send(Ok(ChatChunk::Text(out))) {
            return Some(End::Abandoned);
        }
        match ended {
            // A stop sequence in the settled part: every contender contains it, so the
            // answer ends there whichever wins.
            None if stopped => {
                r.generated = beam.streamed;
                Some(End::Finished(FinishReason::Stop))
            }
            None => None,
            Some(ended) if ended || stopped => Some(End::Finished(FinishReason::Stop)),
            Some(_) => Some(End::Finished(FinishReason::Length)),
        }
    }

    /// Take request `i` out of the running set and tell its caller how it ended.
    fn end(&mut self, i: usize, end: End) {
        let mut r = self.running.swap_remove(i);
        if let Mode::Beam(beam) = &r.mode {
            self.finish_beam(&r, beam);
        }
        self.book.release(r.slot);
        if !self.book.reuses() {
            // Nothing will be reused: idle cells would only widen every decode's span.
            self.clear_seq(seq_id(r.slot));
            self.book.clear_slot(r.slot);
        }
        while let Some(eviction) = self.book.idle_excess() {
            self.evict(eviction);
        }
        metrics::gauge!("moltbot_local_running").set(self.running.len() as f64);
        match end {
            End::Finished(reason) => {
                let rest = r.text.finish();
                if !rest.is_empty() && !r.sink.send(Ok(ChatChunk::Text(rest))) {
                    return;
                }
                let usage = Usage {
                    prompt_tokens: u32::try_from(r.prompt.len()).unwrap_or(u32::MAX),
                    completion_tokens: u32::try_from(r.generated).unwrap_or(u32::MAX),
                };
                tracing::debug!(
                    prompt_tokens = r.prompt.len(),
                    reused_tokens = r.reused,
                    completion_tokens = r.generated,
                    "local generation done"
                );
                if r.sink.send(Ok(ChatChunk::Usage(usage))) {
                    let _ = r.sink.send(Ok(ChatChunk::Finish(reason)));
                }
            }
            // Nobody listens, unless the token fired while the stream is still open: then
            // say so (the caller's stream usually has already).
            End::Abandoned => {
                let _ = r.sink.send(Err(ModelError::Cancelled));
            }
            End::Failed(e) => {
                let _ = r.sink.send(Err(e));
            }
        }
    }

    /// After a beam search, leave the slot holding the prompt and the best live hypothesis
    /// (for the next turn's reuse) and give the scratch sequences back.
    fn finish_beam(&mut self, r: &Running, beam: &Beam) {
        let slot = seq_id(r.slot);
        if r.read < r.prompt.len() || beam.live.first().is_some_and(|h| h.tokens.is_empty()) {
            // Ended before the search began (abandoned while reading the prompt): the book
            // already knows what the slot holds, and no scratch sequence was written.
            for &s in &beam.seqs[1..] {
                self.scratch.push(s);
            }
            return;
        }
        let best_live = beam.best().filter(|(_, ended)| !ended).map(|(h, _)| h);
        let kept = match best_live {
            Some(h) => {
                if h.seq != slot {
                    self.clear_seq(slot);
                    let _ = self.ctx.copy_kv_cache_seq(h.seq, slot, None, None);
                }
                h.tokens[..h.tokens.len().saturating_sub(1)].to_vec()
            }
            None => {
                let _ = self.ctx.kv_cache_seq_rm(slot, Some(beam.base as u32), None);
                Vec::new()
            }
        };
        self.book
            .set_slot(r.slot, &r.prompt[..beam.base.min(r.prompt.len())]);
        self.book.extend_slot(r.slot, &kept);
        for &s in &beam.seqs[1..] {
            self.clear_seq(s);
            self.scratch.push(s);
        }
    }

    /// A failure that leaves the context in doubt: every running request ends with it and
    /// the slots are emptied.
    fn fail_all(&mut self, e: ModelError) {
        tracing::error!(cause = %e, "local model failed; ending its running requests");
        while !self.running.is_empty() {
            let slot = self.running[0].slot;
            self.clear_seq(seq_id(slot));
            self.book.clear_slot(slot);
            let msg = e.to_string();
            self.end(0, End::Failed(ModelError::Unavailable(msg)));
        }
    }
}

fn pos_i32(pos: usize) -> Result<i32, ModelError> {
    i32::try_from(pos)
        .map_err(|_| ModelError::InvalidRequest(format!("token position {pos} is out of range")))
}

pub(super) fn engine_error(what: &str, e: impl std::fmt::Display) -> ModelError {
    ModelError::Unavailable(format!("local model: {what}: {e}"))
}
