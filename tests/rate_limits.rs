//! Rate limits and the cascade: a 429 limits the (key, model) it names, so the next free
//! model of the same provider answers; a spent quota cools the whole key; when nothing is
//! left but cooling candidates a short `Retry-After` is waited out and a long one is answered
//! at once as a 429 in the caller's shape; and no rate limit ever touches a breaker.

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::fake_upstream::{FakeUpstream, Reply};
use support::gateway::{TestGateway, admin_agent, configure};

struct Setup {
    _home: tempfile::TempDir,
    gateway: TestGateway,
    upstream: FakeUpstream,
    agent: ureq::Agent,
}

/// One OpenRouter-like chat provider with `keys`, and a middle tier of `tier` models.
fn setup(keys: &[&str], tier: &[&str]) -> Setup {
    let home = tempfile::tempdir().unwrap();
    let upstream = FakeUpstream::start("answered");
    let keys: Vec<String> = keys.iter().map(|k| format!("\"{k}\"")).collect();
    configure(
        home.path(),
        &format!(
            "[gateway]\nauto_start = false\nretries = 1\nfirst_byte_timeout_secs = 5\n\
             [providers.openrouter]\nbase_url = \"{}/v1\"\nformat = \"chat\"\napi_keys = [{}]\n",
            upstream.url(),
            keys.join(", ")
        ),
        &[(
            "default",
            &format!(
                "[tiers.middle]\nmodel = \"openrouter|{}\"\ncascade = [{}]\n",
                tier[0],
                tier[1..]
                    .iter()
                    .map(|m| format!("\"openrouter|{m}\""))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )],
    );
    let gateway = TestGateway::start(home.path());
    let agent = admin_agent(home.path());
    Setup {
        _home: home,
        gateway,
        upstream,
        agent,
    }
}

fn limited(retry_after: u64, message: &str) -> Reply {
    Reply::Error {
        status: 429,
        body: json!({"error": {"message": message, "code": 429}}).to_string(),
        retry_after: Some(retry_after),
    }
}

impl Setup {
    /// An Anthropic-shaped call; returns status, Retry-After and body.
    fn call(&self) -> (u16, Option<String>, String) {
        let body = json!({"model": "claude-sonnet-x", "max_tokens": 20,
            "messages": [{"role": "user", "content": "hello"}]});
        self.post("/v1/messages", &body)
    }

    fn post(&self, path: &str, body: &Value) -> (u16, Option<String>, String) {
        let mut response = self
            .agent
            .post(&format!("{}{path}", self.gateway.url))
            .send(body.to_string())
            .unwrap();
        let retry_after = response
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_string());
        (
            response.status().as_u16(),
            retry_after,
            response.body_mut().read_to_string().unwrap(),
        )
    }

    fn get(&self, path: &str) -> Value {
        let mut response = self
            .agent
            .get(&format!("{}{path}", self.gateway.url))
            .call()
            .unwrap();
        serde_json::from_str(&response.body_mut().read_to_string().unwrap()).unwrap()
    }

    /// The models the upstream was asked for, in order.
    fn models_called(&self) -> Vec<String> {
        self.upstream
            .model_calls()
            .iter()
            .filter_map(|r| r.model())
            .collect()
    }

    fn keys_used(&self) -> Vec<String> {
        self.upstream
            .model_calls()
            .iter()
            .filter_map(|r| r.header("authorization").map(str::to_string))
            .collect()
    }
}

#[test]
fn a_429_on_one_free_model_leaves_the_next_model_of_the_same_key_usable() {
    let s = setup(&["or-key"], &["busy-model:free", "other-model:free"]);
    s.upstream.script_model(
        "busy-model:free",
        [limited(20, "Rate limit exceeded: free-models-per-min")],
    );
    for request in 1..=3 {
        let (status, _, body) = s.call();
        assert_eq!(status, 200, "request {request}: {body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["content"][0]["text"], "answered", "request {request}");
    }
    // busy-model was asked once; for the rest of its Retry-After only other-model was.
    assert_eq!(
        s.models_called(),
        [
            "busy-model:free",
            "other-model:free",
            "other-model:free",
            "other-model:free"
        ]
    );
    let keys = s.get("/api/keys");
    let key = &keys["openrouter"][0];
    assert_eq!(
        key["cooling_remaining_s"], 0.0,
        "the key is not cooling: {keys}"
    );
    let busy = &key["models"]["busy-model:free"];
    assert_eq!(busy["rule"], "retry_after", "{keys}");
    assert!(
        busy["cooling_remaining_s"].as_f64().unwrap() > 15.0,
        "{keys}"
    );
    // A rate limit is not a fault: no breaker moved.
    let breakers = s.get("/api/breakers");
    for breaker in breakers["breakers"].as_array().unwrap() {
        assert_eq!(breaker["total_failures"], 0, "{breakers}");
    }
}

#[test]
fn a_short_retry_after_on_the_only_candidate_is_waited_out_and_answered() {
    let s = setup(&["k"], &["only-model"]);
    s.upstream
        .script_model("only-model", [limited(1, "slow down")]);
    let started = Instant::now();
    let (status, _, body) = s.call();
    assert_eq!(status, 200, "{body}");
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "the gateway waited for the Retry-After: {:?}",
        started.elapsed()
    );
    assert_eq!(s.models_called(), ["only-model", "only-model"]);
}

#[test]
fn a_long_retry_after_is_answered_at_once_as_a_429_in_each_protocols_shape() {
    let s = setup(&["k"], &["only-model", "second-model"]);
    s.upstream
        .script_model("only-model", [limited(30, "per-model limit")]);
    s.upstream
        .script_model("second-model", [limited(40, "per-model limit")]);
    let started = Instant::now();
    let (status, retry_after, body) = s.call();
    assert_eq!(status, 429, "{body}");
    assert!(started.elapsed() < Duration::from_secs(3), "no long wait");
    let seconds: u64 = retry_after.expect("Retry-After").parse().unwrap();
    assert!(
        (28..=30).contains(&seconds),
        "the soonest candidate's: {seconds}"
    );
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["error"]["type"], "rate_limit_error", "{body}");
    let message = v["error"]["message"].as_str().unwrap();
    assert!(message.contains("rate-limited"), "{message}");
    assert!(
        message.contains("model only-model on key 1 cools"),
        "{message}"
    );
    assert_eq!(s.models_called().len(), 2);

    // Every inbound protocol, now with both candidates cooling: no upstream call, a 429 each.
    let chat = json!({"model": "gpt-x", "messages": [{"role": "user", "content": "hi"}]});
    let responses = json!({"model": "gpt-x", "input": "hi"});
    let gemini = json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}]});
    let anthropic = json!({"model": "claude-sonnet-x", "max_tokens": 5, "stream": true,
        "messages": [{"role": "user", "content": "hi"}]});
    for (path, body, check) in [
        ("/v1/messages", anthropic, "/error/type"),
        ("/v1/chat/completions", chat.clone(), "/error/message"),
        ("/v1/responses", responses, "/error/message"),
        (
            "/v1beta/models/gemini-x:generateContent",
            gemini,
            "/error/status",
        ),
    ] {
        let (status, retry_after, text) = s.post(path, &body);
        assert_eq!(status, 429, "{path}: {text}");
        let seconds: u64 = retry_after.expect("Retry-After").parse().unwrap();
        assert!((1..=30).contains(&seconds), "{path}: {seconds}");
        let v: Value = serde_json::from_str(&text).unwrap();
        assert!(v.pointer(check).is_some(), "{path}: {text}");
        if path.contains("gemini") {
            assert_eq!(v["error"]["status"], "RESOURCE_EXHAUSTED", "{text}");
        }
    }
    assert_eq!(
        s.models_called().len(),
        2,
        "cooling candidates were not called"
    );
}

#[test]
fn an_insufficient_quota_429_cools_the_whole_key_and_the_next_key_is_used() {
    let s = setup(&["first-key", "second-key"], &["m1", "m2"]);
    s.upstream.script_model(
        "m1",
        [Reply::Error {
            status: 429,
            body: json!({"error": {"message": "You exceeded your current quota, please check your plan and billing details.",
                "type": "insufficient_quota", "code": "insufficient_quota"}})
            .to_string(),
            retry_after: None,
        }],
    );
    let (status, _, body) = s.call();
    assert_eq!(status, 200, "{body}");
    // The next call, for any model, avoids the spent key.
    let (status, _, body) = s.call();
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        s.keys_used(),
        ["Bearer first-key", "Bearer second-key", "Bearer second-key"]
    );
    let keys = s.get("/api/keys");
    assert_eq!(keys["openrouter"][0]["rule"], "quota_exhausted", "{keys}");
    assert!(
        keys["openrouter"][0]["cooling_remaining_s"]
            .as_f64()
            .unwrap()
            > 60.0,
        "{keys}"
    );
}

#[test]
fn a_rate_limit_reported_inside_a_200_never_counts_against_the_breaker() {
    let s = setup(&["k"], &["m1", "m2"]);
    let error_200 = Reply::Raw {
        status: 200,
        content_type: "application/json".into(),
        body: json!({"error": {"message": "Rate limit exceeded", "code": 429}}).to_string(),
    };
    // Translated: an Anthropic client, a chat upstream.
    s.upstream.script_model("m1", [error_200]);
    let (status, _, body) = s.call();
    assert_eq!(status, 200, "{body}");
    let breakers = s.get("/api/breakers");
    for breaker in breakers["breakers"].as_array().unwrap() {
        assert_eq!(breaker["total_failures"], 0, "{breakers}");
    }
    assert_eq!(s.models_called(), ["m1", "m2"]);
}
