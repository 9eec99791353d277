//! `cargo bench --bench gateway -- scan`: one model-scan refresh (`xx scan refresh`, a real
//! process) over a provider listing 300 models, 150 of them free, with `max_probes = 20`,
//! against an in-process fake that answers like a model: 50 ms to the first token, a
//! streamed count, a tool call and a JSON answer. Three runs; reports the median time, the
//! requests the fake received and the requests the snapshot says were sent.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const MODELS: usize = 300;
const PROBES: usize = 20;
const FIRST_TOKEN: Duration = Duration::from_millis(50);

fn listing() -> Value {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let data: Vec<Value> = (0..MODELS)
        .map(|i| {
            let free = i % 2 == 0;
            let price = if free { "0".to_string() } else { format!("{:.9}", (i as f64) * 1e-8) };
            json!({
                "id": if free { format!("lab/model-{i}:free") } else { format!("lab/model-{i}") },
                "created": now - (i as u64) * 86_400,
                "context_length": 8192u64 << (i % 6),
                "pricing": {"prompt": price, "completion": price},
                "supported_parameters": if i % 3 == 0 { vec!["tools", "structured_outputs"] } else { vec!["tools"] },
            })
        })
        .collect();
    json!({"data": data})
}

async fn answer(body: Value, calls: Arc<AtomicUsize>) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    calls.fetch_add(1, Ordering::Relaxed);
    tokio::time::sleep(FIRST_TOKEN).await;
    let model = body["model"].as_str().unwrap_or("m").to_string();
    if body["stream"] == true {
        let mut text = String::new();
        for n in 1..=20 {
            text.push_str(&format!(
                "data: {}\n\n",
                json!({"id": "c", "object": "chat.completion.chunk", "model": model,
                    "choices": [{"index": 0, "delta": {"content": format!("{n} ")}, "finish_reason": null}]})
            ));
        }
        text.push_str(&format!(
            "data: {}\n\ndata: [DONE]\n\n",
            json!({"id": "c", "object": "chat.completion.chunk", "model": model,
                "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 20, "completion_tokens": 20, "total_tokens": 40}})
        ));
        return ([("content-type", "text/event-stream")], text).into_response();
    }
    let message = if body["tools"].is_array() {
        json!({"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function",
            "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]})
    } else {
        json!({"role": "assistant", "content": "{\"answer\": 4}"})
    };
    axum::Json(
        json!({"id": "c", "object": "chat.completion", "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 20, "completion_tokens": 8, "total_tokens": 28}}),
    )
    .into_response()
}

pub async fn run() {
    let listing = Arc::new(listing());
    let calls = Arc::new(AtomicUsize::new(0));
    let listings = Arc::new(AtomicUsize::new(0));
    let app = {
        let (listing, listings, calls) = (listing.clone(), listings.clone(), calls.clone());
        axum::Router::new()
            .route(
                "/v1/models",
                axum::routing::get(move || {
                    let (listing, listings) = (listing.clone(), listings.clone());
                    async move {
                        listings.fetch_add(1, Ordering::Relaxed);
                        axum::Json((*listing).clone())
                    }
                }),
            )
            .route(
                "/v1/chat/completions",
                axum::routing::post(move |axum::Json(body): axum::Json<Value>| {
                    answer(body, calls.clone())
                }),
            )
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(home.path().join("config")).unwrap();
    std::fs::write(
        home.path().join("config/config.toml"),
        format!(
            "[providers.lab]\nbase_url = \"{url}/v1\"\nformat = \"chat\"\napi_key = \"k\"\n\n[scan]\nlocal_servers = false\nmax_probes = {PROBES}\n"
        ),
    )
    .unwrap();
    let mut times = Vec::new();
    let mut rows = Vec::new();
    for _ in 0..3 {
        let (before_calls, before_lists) = (
            calls.load(Ordering::Relaxed),
            listings.load(Ordering::Relaxed),
        );
        let started = Instant::now();
        let home_path = home.path().to_path_buf();
        let output = tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_xx"))
                .args(["scan", "refresh", "--json"])
                .env("CLUTCH_HOME", home_path)
                .env_remove("OPENROUTER_API_KEY")
                .output()
                .unwrap()
        })
        .await
        .unwrap();
        let elapsed = started.elapsed();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let snapshot: Value = serde_json::from_slice(&output.stdout).unwrap();
        let received = calls.load(Ordering::Relaxed) - before_calls
            + listings.load(Ordering::Relaxed)
            - before_lists;
        times.push(elapsed);
        rows.push((
            received,
            snapshot["stats"]["requests_sent"].as_u64().unwrap_or(0),
            snapshot["stats"]["models_listed"].as_u64().unwrap_or(0),
            snapshot["stats"]["models_probed"].as_u64().unwrap_or(0),
        ));
    }
    times.sort();
    println!(
        "model-scan refresh, {MODELS} models listed (150 free), max_probes = {PROBES}, fake answers after {} ms:",
        FIRST_TOKEN.as_millis()
    );
    for ((received, sent, listed, probed), time) in rows.iter().zip(&times) {
        println!(
            "  run: {:.2} s, {listed} listed, {probed} probed, {received} requests received by the fake, {sent} counted by the snapshot",
            time.as_secs_f64()
        );
    }
    println!("  median: {:.2} s", times[1].as_secs_f64());
}
