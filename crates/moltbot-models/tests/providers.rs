//! The HTTP providers and the failover against real loopback servers (`moltbot-fakes`) that
//! speak the OpenAI and Anthropic wire formats.

use futures::StreamExt;
use moltbot_core::config::{AnthropicConfig, OpenAiConfig};
use moltbot_core::model::{
    collect, ChatChunk, ChatMessage, ChatModel, ChatRequest, FinishReason, ModelError, Role, Usage,
};
use moltbot_core::Secret;
use moltbot_fakes::{FakeAnthropic, FakeOpenAi};
use moltbot_models::providers::anthropic::AnthropicProvider;
use moltbot_models::providers::failover::Failover;
use moltbot_models::providers::openai::OpenAiProvider;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

const OPENAI_KEY: &str = "sk-test-openai";
const ANTHROPIC_KEY: &str = "sk-ant-test";

fn openai_config(base_url: String) -> OpenAiConfig {
    OpenAiConfig {
        base_url,
        api_key: Some(Secret::new(OPENAI_KEY)),
        model: "gpt-test".into(),
        timeout_secs: 10,
        max_retries: 2,
    }
}

fn anthropic_config(base_url: String) -> AnthropicConfig {
    AnthropicConfig {
        base_url,
        api_key: Some(Secret::new(ANTHROPIC_KEY)),
        model: "claude-test".into(),
        timeout_secs: 10,
        max_retries: 2,
    }
}

fn openai(fake: &FakeOpenAi) -> OpenAiProvider {
    OpenAiProvider::new(&openai_config(fake.base_url())).expect("valid config")
}

fn anthropic(fake: &FakeAnthropic) -> AnthropicProvider {
    AnthropicProvider::new(&anthropic_config(fake.base_url())).expect("valid config")
}

fn ask(text: &str) -> ChatRequest {
    ChatRequest {
        messages: vec![ChatMessage::new(Role::User, text)],
        ..ChatRequest::default()
    }
}

async fn run(model: &dyn ChatModel, request: ChatRequest) -> Vec<Result<ChatChunk, ModelError>> {
    model
        .stream(request, CancellationToken::new())
        .collect()
        .await
}

fn texts(items: &[Result<ChatChunk, ModelError>]) -> Vec<&str> {
    items
        .iter()
        .filter_map(|c| match c {
            Ok(ChatChunk::Text(t)) => Some(t.as_str()),
            _ => None,
        })
        .collect()
}

/// A loopback address nothing listens on.
fn closed_port_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    format!("http://{addr}/v1")
}

// ---------------------------------------------------------------------------------------------
// OpenAI

#[tokio::test]
async fn openai_streams_text_in_pieces_then_usage_then_finish() {
    let fake = FakeOpenAi::start().await;
    let model = openai(&fake);
    assert_eq!(model.id(), "openai/gpt-test");

    let items = run(&model, ask("hello there")).await;
    let pieces = texts(&items);
    assert!(pieces.len() > 1, "expected several deltas, got {pieces:?}");
    assert_eq!(pieces.concat(), "echo: hello there");
    let tail: Vec<_> = items.iter().rev().take(2).collect();
    assert!(matches!(tail[0], Ok(ChatChunk::Finish(FinishReason::Stop))));
    assert!(matches!(
        tail[1],
        Ok(ChatChunk::Usage(Usage {
            prompt_tokens: 2,
            completion_tokens: 3
        }))
    ));
    assert_eq!(fake.requests(), 1);
}

#[tokio::test]
async fn openai_sends_sampling_fields_tools_and_the_bearer_key() {
    let fake = FakeOpenAi::builder()
        .require_api_key(OPENAI_KEY)
        .start()
        .await;
    let tool = json!({"type": "function", "function": {"name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}});
    let request = ChatRequest {
        messages: vec![
            ChatMessage::new(Role::System, "Be brief."),
            ChatMessage::new(Role::User, "hi"),
        ],
        max_tokens: Some(50),
        temperature: Some(0.5),
        top_p: Some(0.25),
        seed: Some(7),
        stop: vec!["END".into()],
        tools: vec![tool.clone()],
        top_k: Some(20),
        ..ChatRequest::default()
    };
    let answer = collect(&openai(&fake), request, CancellationToken::new())
        .await
        .expect("answer");
    assert_eq!(answer.text, "echo: hi");

    let sent = fake.last_request().expect("a request was recorded");
    assert_eq!(
        sent.header("authorization"),
        Some(format!("Bearer {OPENAI_KEY}").as_str())
    );
    let body = sent.json();
    assert_eq!(body["model"], "gpt-test");
    assert_eq!(body["stream"], true);
    assert_eq!(body["stream_options"]["include_usage"], true);
    assert_eq!(body["max_tokens"], 50);
    assert_eq!(body["temperature"], 0.5);
    assert_eq!(body["top_p"], 0.25);
    assert_eq!(body["top_k"], 20);
    assert!(
        body.get("repetition_penalty").is_none(),
        "unset fields are not sent"
    );
    assert_eq!(body["seed"], 7);
    assert_eq!(body["stop"], json!(["END"]));
    assert_eq!(body["tools"], json!([tool]));
    assert_eq!(
        body["messages"],
        json!([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}])
    );
}

#[tokio::test]
async fn openai_without_a_key_sends_no_authorization_and_omits_unset_fields() {
    let fake = FakeOpenAi::start().await;
    let mut config = openai_config(fake.base_url());
    config.api_key = None;
    let model = OpenAiProvider::new(&config).expect("valid config");
    collect(&model, ask("hi"), CancellationToken::new())
        .await
        .expect("answer");
    let sent = fake.last_request().expect("recorded");
    assert_eq!(sent.header("authorization"), None);
    let body = sent.json();
    for field in [
        "max_tokens",
        "temperature",
        "top_p",
        "seed",
        "stop",
        "tools",
    ] {
        assert!(body.get(field).is_none(), "{field} should be left out");
    }
}

#[tokio::test]
async fn openai_tool_call_deltas_are_assembled() {
    let fake = FakeOpenAi::builder()
        .tool_call("get_weather", r#"{"city":"Berlin","unit":"celsius"}"#)
        .start()
        .await;
    let model = openai(&fake);
    let items = run(&model, ask("weather in Berlin?")).await;
    let fragments = items
        .iter()
        .filter(|c| matches!(c, Ok(ChatChunk::ToolCall(_))))
        .count();
    assert!(fragments > 2, "expected fragments, got {fragments}");

    let answer = collect(&model, ask("weather in Berlin?"), CancellationToken::new())
        .await
        .expect("answer");
    assert_eq!(answer.finish_reason, Some(FinishReason::ToolCalls));
    assert_eq!(answer.text, "");
    assert_eq!(answer.tool_calls.len(), 1);
    let call = &answer.tool_calls[0];
    assert_eq!(call.index, 0);
    assert_eq!(call.id.as_deref(), Some("call_fake_2"));
    assert_eq!(call.name.as_deref(), Some("get_weather"));
    let arguments: Value = serde_json::from_str(&call.arguments).expect("arguments are JSON");
    assert_eq!(arguments, json!({"city": "Berlin", "unit": "celsius"}));
}

#[tokio::test]
async fn openai_length_finish_is_reported() {
    let fake = FakeOpenAi::start().await;
    let mut request = ask("a long question");
    request.max_tokens = Some(2);
    let answer = collect(&openai(&fake), request, CancellationToken::new())
        .await
        .expect("answer");
    assert_eq!(answer.text, "echo: a");
    assert_eq!(answer.finish_reason, Some(FinishReason::Length));
}

#[tokio::test]
async fn openai_retries_a_429_after_retry_after() {
    let fake = FakeOpenAi::builder()
        .fail_first(1, 429)
        .retry_after(1)
        .start()
        .await;
    let started = Instant::now();
    let answer = collect(&openai(&fake), ask("hi"), CancellationToken::new())
        .await
        .expect("the retry succeeds");
    assert_eq!(answer.text, "echo: hi");
    assert_eq!(fake.requests(), 2);
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After was not honoured: {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn openai_retries_5xx_with_backoff() {
    let fake = FakeOpenAi::builder().fail_first(2, 503).start().await;
    let answer = collect(&openai(&fake), ask("hi"), CancellationToken::new())
        .await
        .expect("the third attempt succeeds");
    assert_eq!(answer.text, "echo: hi");
    assert_eq!(fake.requests(), 3);
}

#[tokio::test]
async fn openai_gives_up_after_max_retries_with_the_upstream_body() {
    let fake = FakeOpenAi::builder().fail_first(100, 500).start().await;
    let mut config = openai_config(fake.base_url());
    config.max_retries = 1;
    let model = OpenAiProvider::new(&config).expect("valid config");
    let err = collect(&model, ask("hi"), CancellationToken::new())
        .await
        .expect_err("every attempt fails");
    match err {
        ModelError::Upstream { status, body } => {
            assert_eq!(status, 500);
            assert!(body.contains("injected failure"), "{body}");
        }
        other => panic!("expected Upstream, got {other:?}"),
    }
    assert_eq!(fake.requests(), 2);
}

#[tokio::test]
async fn openai_client_errors_are_not_retried() {
    let fake = FakeOpenAi::builder()
        .require_api_key("another-key")
        .start()
        .await;
    let err = collect(&openai(&fake), ask("hi"), CancellationToken::new())
        .await
        .expect_err("wrong key");
    assert!(
        matches!(err, ModelError::Upstream { status: 401, .. }),
        "{err:?}"
    );
    assert!(!err.to_string().contains(OPENAI_KEY));
    assert_eq!(fake.requests(), 1);
}

#[tokio::test]
async fn openai_times_out_without_retrying() {
    let fake = FakeOpenAi::builder()
        .delay(Duration::from_secs(5))
        .start()
        .await;
    let mut config = openai_config(fake.base_url());
    config.timeout_secs = 1;
    let model = OpenAiProvider::new(&config).expect("valid config");
    // Had the timeout not fired, the fake would answer after 5 s and this would succeed.
    let err = collect(&model, ask("hi"), CancellationToken::new())
        .await
        .expect_err("the fake is too slow");
    assert!(matches!(err, ModelError::Timeout(_)), "{err:?}");
    assert_eq!(fake.requests(), 1);
}

#[tokio::test]
async fn openai_timeout_covers_a_slow_stream() {
    // Headers come at once but the events trickle in for longer than the budget.
    let fake = FakeOpenAi::builder()
        .chunk_delay(Duration::from_millis(400))
        .start()
        .await;
    let mut config = openai_config(fake.base_url());
    config.timeout_secs = 1;
    let model = OpenAiProvider::new(&config).expect("valid config");
    let items = run(&model, ask("one two three four five six")).await;
    assert!(
        matches!(items.last(), Some(Err(ModelError::Timeout(_)))),
        "{items:?}"
    );
}

#[tokio::test]
async fn openai_does_not_retry_once_text_was_sent() {
    let fake = FakeOpenAi::builder().break_after_chunks(1).start().await;
    let items = run(&openai(&fake), ask("hello there")).await;
    assert_eq!(texts(&items).len(), 1);
    assert!(
        matches!(items.last(), Some(Err(ModelError::Connect(_)))),
        "{items:?}"
    );
    assert_eq!(fake.requests(), 1);
}

#[tokio::test]
async fn cancellation_stops_the_stream_and_frees_the_connection() {
    let fake = FakeOpenAi::builder()
        .chunk_delay(Duration::from_millis(200))
        .start()
        .await;
    let model = openai(&fake);
    let cancel = CancellationToken::new();
    let mut stream = model.stream(ask("a fairly long question to answer"), cancel.clone());
    let first = stream.next().await;
    assert!(matches!(first, Some(Ok(ChatChunk::Text(_)))), "{first:?}");

    cancel.cancel();
    // The very next item is the cancellation, not more text from the still-running answer.
    let next = stream.next().await;
    assert!(matches!(next, Some(Err(ModelError::Cancelled))), "{next:?}");
    assert!(stream.next().await.is_none());

    // The server notices the closed connection at its next write.
    let deadline = Instant::now() + Duration::from_secs(3);
    while fake.aborted_streams() == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(fake.aborted_streams(), 1);
    assert_eq!(fake.completed_streams(), 0);
}

#[tokio::test]
async fn an_already_cancelled_request_ends_at_once() {
    let fake = FakeOpenAi::start().await;
    let cancel = CancellationToken::new();
    cancel.cancel();
    let items: Vec<_> = openai(&fake).stream(ask("hi"), cancel).collect().await;
    assert!(
        matches!(items[..], [Err(ModelError::Cancelled)]),
        "{items:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Anthropic

#[tokio::test]
async fn anthropic_streams_text_with_the_system_prompt_at_top_level() {
    let fake = FakeAnthropic::builder()
        .require_api_key(ANTHROPIC_KEY)
        .start()
        .await;
    let model = anthropic(&fake);
    assert_eq!(model.id(), "anthropic/claude-test");
    let request = ChatRequest {
        messages: vec![
            ChatMessage::new(Role::System, "You are terse."),
            ChatMessage::new(Role::User, "hello there"),
        ],
        ..ChatRequest::default()
    };
    let items = run(&model, request).await;
    let pieces = texts(&items);
    assert!(pieces.len() > 1, "expected several deltas, got {pieces:?}");
    assert_eq!(pieces.concat(), "echo: hello there");
    assert!(items.iter().any(|c| matches!(
        c,
        Ok(ChatChunk::Usage(Usage {
            prompt_tokens: 5,
            completion_tokens: 3
        }))
    )));
    assert!(matches!(
        items.last(),
        Some(Ok(ChatChunk::Finish(FinishReason::Stop)))
    ));

    let sent = fake.last_request().expect("recorded");
    assert_eq!(sent.header("x-api-key"), Some(ANTHROPIC_KEY));
    assert_eq!(sent.header("anthropic-version"), Some("2023-06-01"));
    let body = sent.json();
    assert_eq!(body["system"], "You are terse.");
    assert_eq!(
        body["messages"],
        json!([{"role": "user", "content": "hello there"}])
    );
    assert_eq!(body["max_tokens"], 1024);
    assert_eq!(body["stream"], true);
}

#[tokio::test]
async fn anthropic_tool_use_blocks_become_tool_calls() {
    let fake = FakeAnthropic::builder()
        .tool_call("get_weather", r#"{"city":"Paris"}"#)
        .start()
        .await;
    let answer = collect(
        &anthropic(&fake),
        ask("weather in Paris?"),
        CancellationToken::new(),
    )
    .await
    .expect("answer");
    assert_eq!(answer.text, "Calling get_weather.");
    assert_eq!(answer.finish_reason, Some(FinishReason::ToolCalls));
    assert_eq!(answer.tool_calls.len(), 1);
    let call = &answer.tool_calls[0];
    // The tool_use block is content block 1, but tool calls are numbered from 0.
    assert_eq!(call.index, 0);
    assert_eq!(call.id.as_deref(), Some("toolu_fake_1"));
    assert_eq!(call.name.as_deref(), Some("get_weather"));
    assert_eq!(call.arguments, r#"{"city":"Paris"}"#);
}

#[tokio::test]
async fn anthropic_max_tokens_maps_to_length() {
    let fake = FakeAnthropic::start().await;
    let mut request = ask("a long question");
    request.max_tokens = Some(2);
    let answer = collect(&anthropic(&fake), request, CancellationToken::new())
        .await
        .expect("answer");
    assert_eq!(answer.text, "echo: a");
    assert_eq!(answer.finish_reason, Some(FinishReason::Length));
    assert_eq!(
        fake.last_request().expect("recorded").json()["max_tokens"],
        2
    );
}

#[tokio::test]
async fn anthropic_retries_when_overloaded() {
    let fake = FakeAnthropic::builder().fail_first(1, 529).start().await;
    let answer = collect(&anthropic(&fake), ask("hi"), CancellationToken::new())
        .await
        .expect("the retry succeeds");
    assert_eq!(answer.text, "echo: hi");
    assert_eq!(fake.requests(), 2);
}

// ---------------------------------------------------------------------------------------------
// Failover

fn failover(first: OpenAiConfig, second: &FakeAnthropic) -> Failover {
    let first: Arc<dyn ChatModel> = Arc::new(OpenAiProvider::new(&first).expect("valid config"));
    let second: Arc<dyn ChatModel> = Arc::new(anthropic(second));
    Failover::new(vec![first, second])
}

#[tokio::test]
async fn failover_moves_to_anthropic_on_500() {
    let first = FakeOpenAi::builder().fail_first(100, 500).start().await;
    let second = FakeAnthropic::builder()
        .reply("answered by anthropic")
        .start()
        .await;
    let mut config = openai_config(first.base_url());
    config.max_retries = 0;
    let model = failover(config, &second);
    assert_eq!(
        model.id(),
        "failover(openai/gpt-test,anthropic/claude-test)"
    );

    let answer = collect(&model, ask("hi"), CancellationToken::new())
        .await
        .expect("the second provider answers");
    assert_eq!(answer.text, "answered by anthropic");
    assert_eq!(first.requests(), 1);
    assert_eq!(second.requests(), 1);
}

#[tokio::test]
async fn failover_moves_on_when_the_connection_is_refused() {
    let second = FakeAnthropic::builder()
        .reply("answered by anthropic")
        .start()
        .await;
    let mut config = openai_config(closed_port_url());
    config.max_retries = 1;
    let model = failover(config, &second);
    let answer = collect(&model, ask("hi"), CancellationToken::new())
        .await
        .expect("the second provider answers");
    assert_eq!(answer.text, "answered by anthropic");
    assert_eq!(second.requests(), 1);
}

#[tokio::test]
async fn failover_passes_an_error_through_once_text_was_streamed() {
    let first = FakeOpenAi::builder().break_after_chunks(1).start().await;
    let second = FakeAnthropic::start().await;
    let model = failover(openai_config(first.base_url()), &second);
    let items = run(&model, ask("hello there")).await;
    assert_eq!(texts(&items).len(), 1);
    assert!(
        matches!(items.last(), Some(Err(ModelError::Connect(_)))),
        "{items:?}"
    );
    assert_eq!(second.requests(), 0);
}

#[tokio::test]
async fn failover_does_not_move_on_client_errors() {
    let first = FakeOpenAi::builder().fail_first(1, 400).start().await;
    let second = FakeAnthropic::start().await;
    let model = failover(openai_config(first.base_url()), &second);
    let err = collect(&model, ask("hi"), CancellationToken::new())
        .await
        .expect_err("a bad request is not another provider's job");
    assert!(
        matches!(err, ModelError::Upstream { status: 400, .. }),
        "{err:?}"
    );
    assert_eq!(second.requests(), 0);
}

#[tokio::test]
async fn failover_reports_the_last_error_when_all_fail() {
    let first = FakeOpenAi::builder().fail_first(100, 500).start().await;
    let second = FakeAnthropic::builder().fail_first(100, 529).start().await;
    let mut config = openai_config(first.base_url());
    config.max_retries = 0;
    let mut second_config = anthropic_config(second.base_url());
    second_config.max_retries = 0;
    let model = Failover::new(vec![
        Arc::new(OpenAiProvider::new(&config).expect("valid config")),
        Arc::new(AnthropicProvider::new(&second_config).expect("valid config")),
    ]);
    let err = collect(&model, ask("hi"), CancellationToken::new())
        .await
        .expect_err("both fail");
    assert!(
        matches!(err, ModelError::Upstream { status: 529, .. }),
        "{err:?}"
    );
    assert_eq!((first.requests(), second.requests()), (1, 1));
}

// ---------------------------------------------------------------------------------------------
// The fakes' non-streaming side, used by other crates' tests and the load generator.

#[tokio::test]
async fn fake_openai_answers_plain_requests_and_lists_models() {
    let fake = FakeOpenAi::start().await;
    let client = reqwest::Client::new();
    let models: Value = client
        .get(format!("{}/models", fake.base_url()))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(models["data"][0]["id"], "fake-model");

    let completion: Value = client
        .post(format!("{}/chat/completions", fake.base_url()))
        .json(&json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(completion["choices"][0]["message"]["content"], "echo: hi");
    assert_eq!(completion["choices"][0]["finish_reason"], "stop");
}

#[tokio::test]
async fn fake_anthropic_requires_its_headers() {
    let fake = FakeAnthropic::start().await;
    let client = reqwest::Client::new();
    let body = json!({"model": "m", "max_tokens": 10,
                      "messages": [{"role": "user", "content": "hi"}]});
    let url = format!("{}/v1/messages", fake.base_url());
    let refused = client.post(&url).json(&body).send().await.expect("send");
    assert_eq!(refused.status(), 401);

    let message: Value = client
        .post(&url)
        .header("x-api-key", "k")
        .header("anthropic-version", "2023-06-01")
        .json(&body)
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(message["content"][0]["text"], "echo: hi");
    assert_eq!(message["stop_reason"], "end_turn");
}
