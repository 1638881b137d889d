//! How fast the embedded model runs here: prompt evaluation and decoding, in tokens/s.
//!
//! ```text
//! cargo run -p moltbot-models --example local_speed -- [GGUF] [THREADS] [TOKENS]
//! ```
//! GGUF defaults to `$MOLTBOT_TEST_MODEL`, THREADS to 2, TOKENS to 128. A dev build is
//! enough: the workspace builds dependencies (llama.cpp included) optimised in every profile.
//!
//! Prompt speed is measured on a long prompt with a one-token answer (time to the end of the
//! stream); decode speed is the time between the first and the last piece of a greedy answer
//! to a short prompt, divided by the tokens in between.

use futures::StreamExt;
use moltbot_core::config::LocalModelConfig;
use moltbot_core::{ChatChunk, ChatMessage, ChatModel, ChatRequest, Role, Usage};
use moltbot_models::providers::local::LocalModel;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

struct Run {
    usage: Usage,
    first_piece: Option<Duration>,
    last_piece: Option<Duration>,
    total: Duration,
}

async fn run(model: &LocalModel, req: ChatRequest) -> Run {
    let start = Instant::now();
    let mut stream = model.stream(req, CancellationToken::new());
    let mut out = Run {
        usage: Usage::default(),
        first_piece: None,
        last_piece: None,
        total: Duration::ZERO,
    };
    while let Some(item) = stream.next().await {
        match item {
            Ok(ChatChunk::Text(_)) => {
                let at = start.elapsed();
                out.first_piece.get_or_insert(at);
                out.last_piece = Some(at);
            }
            Ok(ChatChunk::Usage(u)) => out.usage = u,
            Ok(_) => {}
            Err(e) => {
                eprintln!("generation failed: {e}");
                std::process::exit(1);
            }
        }
    }
    out.total = start.elapsed();
    out
}

fn per_second(tokens: u32, d: Duration) -> f64 {
    f64::from(tokens) / d.as_secs_f64().max(1e-9)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut args = std::env::args().skip(1);
    let path = args
        .next()
        .or_else(|| std::env::var("MOLTBOT_TEST_MODEL").ok())
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            eprintln!("usage: local_speed GGUF [THREADS] [TOKENS] (or set MOLTBOT_TEST_MODEL)");
            std::process::exit(2);
        });
    let threads: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(2);
    let tokens: u32 = args.next().and_then(|a| a.parse().ok()).unwrap_or(128);

    let cfg = LocalModelConfig {
        context_size: 2048,
        parallel: 1,
        ..LocalModelConfig::default()
    };
    let started = Instant::now();
    let model = match LocalModel::load(&path, &cfg, threads) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("cannot load {}: {e}", path.display());
            std::process::exit(1);
        }
    };
    println!("model     {} ({threads} threads)", model.id());
    println!(
        "load      {:.0} ms",
        started.elapsed().as_secs_f64() * 1000.0
    );

    let greedy = |text: String, max_tokens: u32| ChatRequest {
        messages: vec![ChatMessage::new(Role::User, text)],
        max_tokens: Some(max_tokens),
        temperature: Some(0.0),
        ..ChatRequest::default()
    };

    // Warm up caches and thread pools once.
    run(&model, greedy("Hello".into(), 4)).await;

    let long_prompt = format!(
        "Summarise the following notes in one word.\n{}",
        "The meeting moved to Thursday; bring the quarterly figures and the draft plan. "
            .repeat(24)
    );
    let prompt = run(&model, greedy(long_prompt, 1)).await;
    println!(
        "prompt    {} tokens in {:.0} ms = {:.0} tok/s",
        prompt.usage.prompt_tokens,
        prompt.total.as_secs_f64() * 1000.0,
        per_second(prompt.usage.prompt_tokens, prompt.total)
    );

    let decode = run(
        &model,
        greedy(
            "Write a long story about a lighthouse keeper.".into(),
            tokens,
        ),
    )
    .await;
    let generated = decode.usage.completion_tokens;
    match (decode.first_piece, decode.last_piece) {
        (Some(first), Some(last)) if generated > 1 => println!(
            "decode    {generated} tokens, {:.1} tok/s after the first (first piece at {:.0} ms)",
            per_second(generated - 1, last.saturating_sub(first)),
            first.as_secs_f64() * 1000.0
        ),
        _ => println!("decode    only {generated} tokens generated; nothing to time"),
    }
}
