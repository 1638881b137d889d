//! The decision router end to end over `/api/v1/chat`, and the knowledge routes, with the
//! real MiniLM encoder, the built-in intents pack, a real knowledge store on disk and the
//! fake OpenAI server standing in for the model.

use crate::context::{Options, TestContext};
use moltbot_core::config::{Grounding, RouterConfig};
use moltbot_core::Encoder;
use moltbot_engine::DialogueRouter;
use moltbot_knowledge::Knowledge;
use moltbot_understand::{Dataset, IntentModel, MiniLm, ModelConfig, Precision, Understanding};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

fn encoder_dir() -> Option<PathBuf> {
    match std::env::var_os("MOLTBOT_TEST_ENCODER").filter(|v| !v.is_empty()) {
        Some(dir) => Some(PathBuf::from(dir)),
        None if std::env::var_os("CI").is_some() => {
            panic!("MOLTBOT_TEST_ENCODER must name the encoder folder in CI")
        }
        None => {
            eprintln!("MOLTBOT_TEST_ENCODER is not set; skipping a test that needs the encoder");
            None
        }
    }
}

type Loaded = (Arc<dyn Encoder>, Arc<Understanding>);

/// The encoder and the built-in intent model, made once per test binary.
fn understanding() -> Option<Loaded> {
    static CELL: OnceLock<Option<Loaded>> = OnceLock::new();
    CELL.get_or_init(|| {
        let dir = encoder_dir()?;
        let encoder: Arc<dyn Encoder> =
            Arc::new(MiniLm::load(&dir, Precision::F32).expect("load the encoder"));
        let data = Dataset::builtin().expect("built-in intents");
        let (model, _) = IntentModel::train(&data, Some(&encoder), ModelConfig::default())
            .expect("train the built-in pack");
        let u = Arc::new(Understanding::new(Some(encoder.clone()), model, None));
        Some((encoder, u))
    })
    .clone()
}

const HANDBOOK: &str = "# Employee handbook\n\n## Vacation\n\nEvery employee gets 31 days of paid \
vacation per calendar year. Vacation requests are approved by your team lead in the HR portal.\n\n\
## Expenses\n\nTravel expenses are reimbursed within 14 days after you upload the receipts.\n";

struct Routed {
    ctx: TestContext,
    knowledge: Arc<Knowledge>,
}

async fn start(router: RouterConfig) -> Option<Routed> {
    start_with(router, "From the passages: 31 days [1].").await
}

async fn start_with(router: RouterConfig, model_reply: &'static str) -> Option<Routed> {
    let (encoder, u) = understanding()?;
    let ctx = TestContext::with(Options {
        fake_reply: Some(model_reply),
        ..Options::default()
    })
    .await;
    let dir = ctx.state.config().data.resolved_dir().join("knowledge");
    let knowledge = Arc::new(Knowledge::open(&dir, encoder).expect("open the store"));
    let _ = ctx.state.inner.understanding.set(u.clone());
    let _ = ctx.state.inner.knowledge.set(knowledge.clone());
    let router = DialogueRouter::new(Some(u), Some(knowledge.clone()), router, 0.6);
    ctx.state.engine().set_router(Arc::new(router));
    Some(Routed { ctx, knowledge })
}

async fn chat(ctx: &TestContext, session: &str, message: &str) -> Value {
    let body = json!({"session_id": session, "message": message});
    ctx.post_ok("/api/v1/chat", &body).await
}

#[tokio::test]
async fn templates_answer_common_turns_without_the_model() {
    let Some(Routed { ctx, .. }) = start(RouterConfig::default()).await else {
        return;
    };
    let out = chat(&ctx, "s-greet", "hello there!").await;
    assert_eq!(out["route"]["route"], "template", "{out}");
    assert_eq!(out["route"]["intent"], "greeting", "{out}");
    assert_eq!(out["reply"], "Hello! How can I help you today?");
    assert_eq!(out["model"], "moltbot-router");
    assert!(out["route"]["confidence"].as_f64().unwrap() >= 0.6, "{out}");

    let out = chat(&ctx, "s-greet", "现在几点了？").await;
    assert_eq!(out["route"]["intent"], "ask_time", "{out}");
    assert!(
        out["reply"].as_str().unwrap().starts_with("现在是"),
        "{out}"
    );
    assert_eq!(ctx.fake.requests(), 0, "no turn so far needed the model");

    // Both sides of the template turns are in the session's history.
    let s = ctx.get_json("/api/v1/sessions/s-greet").await;
    let messages = s["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 4, "{s}");
    assert_eq!(messages[1]["content"], "Hello! How can I help you today?");

    // The recorder is shared by every test of this binary: at least these two turns.
    let metrics = ctx.metrics().await;
    let counted: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix(r#"moltbot_route_total{route="template",reason="template"} "#))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    assert!(counted >= 2.0, "{metrics}");
    // The built-in pack is too small to learn an exit threshold: its turns run the whole
    // model.
    let full: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix(r#"moltbot_understand_total{path="full"} "#))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    assert!(full >= 2.0, "{metrics}");
}

#[tokio::test]
async fn open_ended_and_follow_up_turns_go_to_the_model() {
    let Some(Routed { ctx, .. }) = start(RouterConfig::default()).await else {
        return;
    };
    let out = chat(
        &ctx,
        "s-model",
        "Write a short limerick about a cat who learns to play the cello",
    )
    .await;
    assert_eq!(out["route"]["route"], "model", "{out}");
    assert_eq!(out["reply"], "From the passages: 31 days [1].");
    assert_eq!(ctx.fake.requests(), 1);
    // "yes" after the model asked something belongs to the conversation, not to a canned
    // "Got it.".
    let out = chat(&ctx, "s-model", "yes").await;
    assert_eq!(out["route"]["route"], "model", "{out}");
    assert_eq!(out["route"]["reason"], "in_conversation", "{out}");
    assert_eq!(ctx.fake.requests(), 2);
    // Telling the assistant about yourself is memory, not "who are you".
    for (session, text) in [("s-ada", "My name is Ada."), ("s-ada", "What is my name?")] {
        let out = chat(&ctx, session, text).await;
        assert_eq!(out["route"]["route"], "model", "{text}: {out}");
    }
    // A turn longer than the template limit goes to the model even if it opens with hello.
    let long = format!(
        "hello, {}",
        "I need help planning a trip through Portugal. ".repeat(6)
    );
    let out = chat(&ctx, "s-long", &long).await;
    assert_eq!(out["route"]["route"], "model", "{out}");
}

#[tokio::test]
async fn document_questions_are_grounded_and_cited() {
    let Some(Routed { ctx, knowledge }) = start(RouterConfig::default()).await else {
        return;
    };
    // Before any document: the model answers alone.
    let out = chat(&ctx, "s-kb0", "How many vacation days do employees get?").await;
    assert_eq!(out["route"]["route"], "model", "{out}");

    let ingested = ctx
        .post_ok(
            "/api/v1/knowledge/ingest",
            &json!({"source": "handbook.md", "text": HANDBOOK}),
        )
        .await;
    assert!(ingested["chunks"].as_u64().unwrap() >= 1, "{ingested}");
    assert!(knowledge.chunk_count() >= 1);

    let before = ctx.fake.requests();
    let out = chat(&ctx, "s-kb", "How many vacation days do employees get?").await;
    assert_eq!(out["route"]["route"], "knowledge", "{out}");
    assert_eq!(out["route"]["grounding"], "model", "{out}");
    let citations = out["route"]["citations"].as_array().unwrap();
    assert_eq!(citations[0]["index"], 1);
    assert_eq!(citations[0]["source"], "handbook.md", "{out}");
    assert!(
        citations[0]["heading"]
            .as_str()
            .unwrap()
            .contains("Vacation"),
        "{out}"
    );
    assert!(citations[0]["chunk_id"].is_u64());
    assert_eq!(ctx.fake.requests(), before + 1);
    // The reply names its sources under the model's text.
    let reply = out["reply"].as_str().unwrap();
    assert!(
        reply.starts_with("From the passages: 31 days [1]."),
        "{reply}"
    );
    assert!(reply.contains("\n\nSources: [1] handbook.md › "), "{reply}");
    // The model saw the passage, numbered, in its system message.
    let sent = ctx.fake.last_request().unwrap().json();
    let system = sent["messages"][0]["content"].as_str().unwrap();
    assert!(system.starts_with("You are a test assistant."), "{system}");
    assert!(system.contains("[1] handbook.md"), "{system}");
    assert!(system.contains("31 days of paid vacation"), "{system}");
    // The passages are not stored as part of the conversation.
    let s = ctx.get_json("/api/v1/sessions/s-kb").await;
    assert_eq!(s["messages"].as_array().unwrap().len(), 2, "{s}");
    assert!(!s.to_string().contains("HR portal"), "{s}");

    // An intent that asks the documents searches them even when phrased loosely.
    let out = chat(
        &ctx,
        "s-kb2",
        "what do my documents say about expense reimbursement",
    )
    .await;
    assert_eq!(out["route"]["route"], "knowledge", "{out}");
    assert_eq!(out["route"]["reason"], "knowledge_intent", "{out}");
    assert!(
        out["route"]["citations"].to_string().contains("Expenses"),
        "{out}"
    );
}

#[tokio::test]
async fn a_model_reply_that_ignores_the_passages_is_followed_by_them() {
    let Some(Routed { ctx, knowledge }) =
        start_with(RouterConfig::default(), "The answer is 3.").await
    else {
        return;
    };
    knowledge.add_text("handbook.md", HANDBOOK).unwrap();
    let out = chat(&ctx, "s-weak", "How many vacation days do employees get?").await;
    assert_eq!(out["route"]["grounding"], "model_then_quotes", "{out}");
    let reply = out["reply"].as_str().unwrap();
    assert!(
        reply.starts_with("The answer is 3.\n\nFrom your documents:"),
        "{reply}"
    );
    assert!(reply.contains("31 days of paid vacation"), "{reply}");
    assert!(reply.contains("Sources: [1] handbook.md"), "{reply}");
}

/// The reply the embedded 135M model once gave in CI: the passage's words around a belief
/// of its own. The passages follow it, and the request was sampled at the grounded
/// temperature.
#[tokio::test]
async fn a_model_reply_that_drifts_from_the_passages_is_followed_by_them() {
    let Some(Routed { ctx, knowledge }) = start_with(
        RouterConfig::default(),
        "The number of vacation days a employee can get per year varies depending on the \
         company's policies. Some companies offer more than 31, while others may have fewer \
         or no paid vacation days at all.",
    )
    .await
    else {
        return;
    };
    knowledge.add_text("handbook.md", HANDBOOK).unwrap();
    let out = chat(&ctx, "s-drift", "How many vacation days do employees get?").await;
    assert_eq!(out["route"]["route"], "knowledge", "{out}");
    assert_eq!(out["route"]["grounding"], "model_then_quotes", "{out}");
    let reply = out["reply"].as_str().unwrap();
    assert!(reply.contains("31 days of paid vacation"), "{reply}");
    let sent = ctx.fake.last_request().unwrap().json();
    let t = sent["temperature"].as_f64().unwrap();
    assert!((t - 0.2).abs() < 1e-6, "grounded temperature: {sent}");

    // A caller's own temperature wins.
    let body = json!({"session_id": "s-drift2", "message": "How many vacation days do employees get?",
                      "temperature": 0.9});
    let _ = ctx.post_ok("/api/v1/chat", &body).await;
    let sent = ctx.fake.last_request().unwrap().json();
    let t = sent["temperature"].as_f64().unwrap();
    assert!((t - 0.9).abs() < 1e-6, "caller's temperature: {sent}");
}

#[tokio::test]
async fn extractive_answers_need_no_model() {
    let cfg = RouterConfig {
        grounding: Grounding::Extractive,
        ..RouterConfig::default()
    };
    let Some(Routed { ctx, knowledge }) = start(cfg).await else {
        return;
    };
    knowledge.add_text("handbook.md", HANDBOOK).unwrap();
    let out = chat(&ctx, "s-ex", "How many vacation days do employees get?").await;
    assert_eq!(out["route"]["route"], "knowledge", "{out}");
    assert_eq!(out["route"]["grounding"], "extractive", "{out}");
    let reply = out["reply"].as_str().unwrap();
    assert!(reply.starts_with("From your documents:"), "{reply}");
    assert!(reply.contains("31 days of paid vacation"), "{reply}");
    assert!(reply.contains("Sources: [1] handbook.md"), "{reply}");
    assert_eq!(ctx.fake.requests(), 0);
}

#[tokio::test]
async fn knowledge_routes_search_list_remove_and_reject_bad_input() {
    let Some(Routed { ctx, .. }) = start(RouterConfig::default()).await else {
        return;
    };
    for (source, text) in [
        ("handbook.md", HANDBOOK),
        (
            "router.txt",
            "The router admin password is printed under the device.",
        ),
    ] {
        let body = json!({"source": source, "text": text});
        ctx.post_ok("/api/v1/knowledge/ingest", &body).await;
    }
    let found: Value = ctx
        .post_ok(
            "/api/v1/knowledge/search",
            &json!({"query": "where is the router password", "k": 2}),
        )
        .await;
    assert_eq!(found["hits"][0]["source"], "router.txt", "{found}");
    assert!(
        found["hits"][0]["vector_score"].as_f64().unwrap() > 0.3,
        "{found}"
    );
    // Filtered to one source.
    let found: Value = ctx
        .post_ok(
            "/api/v1/knowledge/search",
            &json!({"query": "password", "sources": ["handbook.md"], "mode": "keyword"}),
        )
        .await;
    assert!(
        found["hits"]
            .as_array()
            .unwrap()
            .iter()
            .all(|h| h["source"] == "handbook.md"),
        "{found}"
    );
    let list = ctx.get_json("/api/v1/knowledge").await;
    assert_eq!(list["sources"].as_array().unwrap().len(), 2, "{list}");

    ctx.post_ok("/api/v1/knowledge/remove", &json!({"source": "router.txt"}))
        .await;
    let resp = ctx
        .post("/api/v1/knowledge/remove")
        .json(&json!({"source": "router.txt"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let list = ctx.get_json("/api/v1/knowledge").await;
    assert_eq!(list["sources"].as_array().unwrap().len(), 1, "{list}");

    for (path, body, needle) in [
        (
            "/api/v1/knowledge/search",
            json!({"query": "  "}),
            "`query`",
        ),
        (
            "/api/v1/knowledge/search",
            json!({"query": "x", "k": 0}),
            "k",
        ),
        (
            "/api/v1/knowledge/search",
            json!({"query": "x", "mode": "fuzzy"}),
            "`mode`",
        ),
        (
            "/api/v1/knowledge/ingest",
            json!({"source": "", "text": "x"}),
            "`source`",
        ),
        (
            "/api/v1/knowledge/search",
            json!({"query": "x", "extra": 1}),
            "extra",
        ),
    ] {
        let resp = ctx.post(path).json(&body).send().await.unwrap();
        assert_eq!(resp.status(), 400, "{body}");
        let err: Value = resp.json().await.unwrap();
        assert!(err.to_string().contains(needle), "{body} → {err}");
    }
}

#[tokio::test]
async fn understand_classifies_a_batch_in_order_and_checks_its_bounds() {
    let Some(Routed { ctx, .. }) = start(RouterConfig::default()).await else {
        return;
    };
    let texts = [
        "hello there",
        "what's the date today",
        "thanks a lot",
        "现在几点了",
    ];
    let v = ctx
        .post_ok("/api/v1/understand", &json!({ "texts": texts }))
        .await;
    let fines: Vec<&str> = v["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["fine"].as_str().unwrap())
        .collect();
    assert_eq!(fines, ["greeting", "ask_date", "thanks", "ask_time"], "{v}");
    // The batch agrees with one-by-one classification.
    for (t, fine) in texts.iter().zip(&fines) {
        let one: Value = ctx
            .post_ok("/api/v1/understand", &json!({ "text": t }))
            .await;
        assert_eq!(one["fine"], *fine, "{t}");
    }
    let many = vec!["hi"; 257];
    for (body, needle) in [
        (json!({"texts": many}), "between 1 and 256 strings, got 257"),
        (json!({"texts": []}), "got 0"),
        (
            json!({"text": "hi", "texts": ["hi"]}),
            "exactly one of `text`",
        ),
        (
            json!({"texts": ["hi", " "]}),
            "`texts[1]` must not be empty",
        ),
    ] {
        let resp = ctx
            .post("/api/v1/understand")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "{body}");
        let err: Value = resp.json().await.unwrap();
        assert!(err.to_string().contains(needle), "{err}");
    }
}

/// Requests meant for the model, none of which a canned template may answer. (Held out:
/// nothing like them is in the built-in pack.)
const OPEN_ENDED: &[&str] = &[
    "What is the capital of France?",
    "Count to three.",
    "Explain how a transistor works in simple terms",
    "Translate 'good morning' into Spanish",
    "Can you help me write an email to my landlord about the broken heater?",
    "Summarize the plot of Hamlet in two sentences",
    "What's 17 times 23?",
    "Give me three ideas for a birthday party",
    "Why is the sky blue?",
    "Write a python function that reverses a string",
    "How do I make a sourdough starter?",
    "Tell me a joke about penguins",
    "What are the pros and cons of electric cars?",
    "Recommend a good science fiction book",
    "How long does it take to boil an egg?",
    "请帮我写一首关于秋天的诗",
    "解释一下什么是机器学习",
    "北京到上海有多远？",
    "What should I cook for dinner tonight with chicken and rice?",
    "Is it safe to run a marathon with a cold?",
];

#[tokio::test]
async fn open_ended_requests_never_get_a_canned_reply() {
    let Some(Routed { ctx, .. }) = start(RouterConfig::default()).await else {
        return;
    };
    let mut canned = Vec::new();
    for (i, text) in OPEN_ENDED.iter().enumerate() {
        let out = chat(&ctx, &format!("s-open-{i}"), text).await;
        if out["route"]["route"] == "template" {
            canned.push(format!("{text} → {}", out["route"]));
        }
    }
    assert!(canned.is_empty(), "answered by a template: {canned:#?}");
}

#[tokio::test]
async fn openai_session_turns_carry_the_route_plain_and_streamed() {
    let Some(Routed { ctx, .. }) = start(RouterConfig::default()).await else {
        return;
    };
    let plain: Value = ctx
        .post_ok(
            "/v1/chat/completions",
            &json!({"model": "moltbot", "user": "oa-1",
            "messages": [{"role": "user", "content": "hello there!"}]}),
        )
        .await;
    assert_eq!(plain["route"]["route"], "template", "{plain}");
    assert_eq!(
        plain["choices"][0]["message"]["content"],
        "Hello! How can I help you today?"
    );
    let body = ctx
        .post("/v1/chat/completions")
        .json(&json!({"model": "moltbot", "user": "oa-2", "stream": true,
            "messages": [{"role": "user", "content": "hello there!"}]}))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let chunks: Vec<Value> = body
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "Hello! How can I help you today?");
    let last = chunks.last().unwrap();
    assert_eq!(last["choices"][0]["finish_reason"], "stop", "{last}");
    assert_eq!(last["route"]["intent"], "greeting", "{last}");
    assert_eq!(ctx.fake.requests(), 0);
}

/// The real encoder, counting the texts it is asked to encode.
struct Counting {
    inner: Arc<dyn Encoder>,
    texts: std::sync::atomic::AtomicUsize,
}

impl Encoder for Counting {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn dim(&self) -> usize {
        self.inner.dim()
    }
    fn max_tokens(&self) -> usize {
        self.inner.max_tokens()
    }
    fn encode(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, moltbot_core::EncodeError> {
        self.texts
            .fetch_add(texts.len(), std::sync::atomic::Ordering::SeqCst);
        self.inner.encode(texts)
    }
}

#[tokio::test]
async fn a_turn_is_encoded_once_for_understanding_and_retrieval() {
    let Some((encoder, u)) = understanding() else {
        return;
    };
    let counting = Arc::new(Counting {
        inner: encoder,
        texts: Default::default(),
    });
    let shared: Arc<dyn Encoder> = counting.clone();
    let ctx = TestContext::with(Options {
        fake_reply: Some("From the passages: 31 days [1]."),
        ..Options::default()
    })
    .await;
    let dir = ctx.state.config().data.resolved_dir().join("knowledge");
    let knowledge = Arc::new(Knowledge::open(&dir, shared.clone()).expect("open the store"));
    knowledge.add_text("handbook.md", HANDBOOK).unwrap();
    let counted = Arc::new(Understanding::new(Some(shared), (*u.model()).clone(), None));
    let router = DialogueRouter::new(
        Some(counted),
        Some(knowledge.clone()),
        RouterConfig::default(),
        0.6,
    );
    ctx.state.engine().set_router(Arc::new(router));
    let read = || counting.texts.load(std::sync::atomic::Ordering::SeqCst);

    let before = read();
    let out = chat(&ctx, "s-once", "How many vacation days do employees get?").await;
    assert_eq!(out["route"]["route"], "knowledge", "{out}");
    assert_eq!(
        read() - before,
        1,
        "the turn's vector from understanding is reused by the knowledge search"
    );
}
