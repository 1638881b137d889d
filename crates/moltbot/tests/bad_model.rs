//! A malformed GGUF file must not take the gateway down. llama.cpp aborts the process on
//! some of them (`GGML_ASSERT`, here a layer count of 65,537, past its limit of 512: a file
//! the GGUF fuzz target made), so
//! the gateway reads a model file in a child process (`moltbot models check`) before loading
//! it in its own: the bad file is refused with llama.cpp's message, `/health` says the model
//! is down, and the gateway keeps serving.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Gateway(Child);

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A GGUF file the GGUF fuzz target produced (a mutant of `fuzz/seeds/gguf/`): its layer
/// count is 65,537, and llama.cpp aborts on it with `GGML_ASSERT` (checked below).
const ZERO_LAYERS: &[u8] = include_bytes!("fixtures/llama-zero-layers.gguf.bin");

#[test]
fn a_gguf_that_crashes_llama_cpp_is_refused_and_the_gateway_lives() {
    let home = tempfile::tempdir().unwrap();
    let bad = home.path().join("bad.gguf");
    std::fs::write(&bad, ZERO_LAYERS).unwrap();
    let bin = env!("CARGO_BIN_EXE_moltbot");

    // The file really does crash llama.cpp: read in process, it aborts.
    let direct = Command::new(bin)
        .env("HOME", home.path())
        .args(["models", "check"])
        .arg(&bad)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&direct.stderr);
    assert!(
        !direct.status.success() && stderr.contains("GGML_ASSERT"),
        "expected llama.cpp to abort on the file: {:?}\n{stderr}",
        direct.status
    );

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let log = home.path().join("gateway.log");
    let mut gw = Gateway(
        Command::new(bin)
            .env_clear()
            .env("HOME", home.path())
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("MOLTBOT_DATA__DIR", home.path().join("data"))
            .env("MOLTBOT_GATEWAY__PORT", port.to_string())
            .env("MOLTBOT_GATEWAY_TOKEN", "bad-model-test")
            .env("MOLTBOT_UNDERSTANDING__ENCODER", "none")
            .env("MOLTBOT_ROUTER__ENABLED", "false")
            .env("MOLTBOT_KNOWLEDGE__ENABLED", "false")
            .env("MOLTBOT_TOOLS__MEMORY__ENABLED", "false")
            .env("MOLTBOT_MODEL__PROVIDERS", "[\"local\"]")
            .env("MOLTBOT_MODEL__LOCAL__PATH", &bad)
            .arg("gateway")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let health = format!("http://127.0.0.1:{port}/health");
    let deadline = Instant::now() + Duration::from_secs(60);
    let model = loop {
        if let Some(status) = gw.0.try_wait().unwrap() {
            panic!(
                "the gateway died ({status}):\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        let body = get_json(&health);
        if let Some(v) = body {
            if v["components"]["model"]["status"] == "down" {
                break v["components"]["model"].clone();
            }
        }
        assert!(Instant::now() < deadline, "the model never failed");
        std::thread::sleep(Duration::from_millis(100));
    };
    // Still alive and answering after the refusal.
    std::thread::sleep(Duration::from_millis(500));
    assert!(gw.0.try_wait().unwrap().is_none(), "the gateway died");
    assert!(get_json(&health).is_some(), "the gateway stopped answering");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("crashed") && text.contains("GGML_ASSERT"),
        "the log does not say why the model was refused ({model}):\n{text}"
    );
}

/// GET a JSON document over plain HTTP/1.1 (blocking; `None` when nothing answers).
fn get_json(url: &str) -> Option<serde_json::Value> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()?;
    rt.block_on(async {
        let r = reqwest::get(url).await.ok()?;
        r.json().await.ok()
    })
}
