//! The fault matrix: the first candidate (provider `a`, two keys) fails in each way an
//! upstream can, for streaming and non-streaming calls; the test asserts which candidates
//! were tried in which order, what the client received, and the breaker and key state
//! afterwards. Plus routing by tier and scene, with Claude Code's real request shapes.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::fake_upstream::{FakeUpstream, Protocol, Reply};
use support::gateway::{TestGateway, admin_agent, configure};

struct Matrix {
    _home: tempfile::TempDir,
    gateway: TestGateway,
    a: FakeUpstream,
    b: FakeUpstream,
    c: FakeUpstream,
    agent: ureq::Agent,
}

/// Providers `a` (two keys), `b` and `c`, all Chat Completions; the middle tier tries a, then
/// b, then c. `a_url` replaces a's address (for "connection refused").
fn matrix(a_url: Option<&str>) -> Matrix {
    let home = tempfile::tempdir().unwrap();
    let (a, b, c) = (
        FakeUpstream::start("from-a"),
        FakeUpstream::start("from-b"),
        FakeUpstream::start("from-c"),
    );
    let a_base = a_url.map_or_else(|| format!("{}/v1", a.url()), str::to_string);
    let config = format!(
        "[gateway]\nauto_start = false\nfirst_byte_timeout_secs = 1\nidle_timeout_secs = 1\nretries = 1\n\
         [providers.a]\nbase_url = \"{a_base}\"\nformat = \"chat\"\napi_keys = [\"key-a-one\", \"key-a-two\"]\n\
         [providers.b]\nbase_url = \"{}/v1\"\nformat = \"chat\"\napi_key = \"key-b\"\n\
         [providers.c]\nbase_url = \"{}/v1\"\nformat = \"chat\"\napi_key = \"key-c\"\n",
        b.url(),
        c.url()
    );
    configure(
        home.path(),
        &config,
        &[(
            "default",
            "[tiers.middle]\nmodel = \"a|m1\"\ncascade = [\"b|m2\", \"c|m3\"]\n",
        )],
    );
    let gateway = TestGateway::start(home.path());
    let agent = admin_agent(home.path());
    Matrix {
        _home: home,
        gateway,
        a,
        b,
        c,
        agent,
    }
}

impl Matrix {
    fn call(&self, stream: bool) -> (u16, String) {
        let body = json!({"model": "claude-sonnet-x", "max_tokens": 50, "stream": stream, "messages": [{"role": "user", "content": "hello"}]});
        let mut response = self
            .agent
            .post(&format!("{}/v1/messages", self.gateway.url))
            .send(body.to_string())
            .unwrap();
        (
            response.status().as_u16(),
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

    fn breaker(&self, id: &str) -> Value {
        self.get("/api/breakers")["breakers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["id"] == id)
            .cloned()
            .unwrap_or(Value::Null)
    }

    fn calls(&self) -> (usize, usize, usize) {
        let n = |f: &FakeUpstream| {
            f.requests()
                .iter()
                .filter(|r| r.protocol == Protocol::Chat)
                .count()
        };
        (n(&self.a), n(&self.b), n(&self.c))
    }
}

/// The text a client of the Anthropic API reads, from a JSON answer or an event stream.
fn text_of(body: &str) -> String {
    if let Ok(v) = serde_json::from_str::<Value>(body) {
        return v["content"][0]["text"]
            .as_str()
            .unwrap_or_default()
            .to_string();
    }
    let mut parser = clutch::gateway::sse::Parser::new();
    let mut text = String::new();
    for event in parser.push(body.as_bytes()).unwrap() {
        let v: Value = serde_json::from_str(&event.data).unwrap_or(Value::Null);
        if v["delta"]["type"] == "text_delta" {
            text.push_str(v["delta"]["text"].as_str().unwrap());
        }
    }
    text
}

fn raw(status: u16, content_type: &str, body: &str) -> Reply {
    Reply::Raw {
        status,
        content_type: content_type.into(),
        body: body.into(),
    }
}

fn error(status: u16) -> Reply {
    Reply::Error {
        status,
        body: json!({"error": {"message": format!("injected {status}")}}).to_string(),
        retry_after: None,
    }
}

/// One row: the faults `a` answers with (in order), and what must follow.
struct Case {
    name: &'static str,
    faults: Vec<Reply>,
    /// Requests a, b and c receive.
    calls: (usize, usize, usize),
    /// Who answers the client.
    answer: &'static str,
    /// a's breaker afterwards: consecutive faults (None: no breaker entry beyond successes).
    a_faults: u64,
    soft: u64,
}

fn cases(stream: bool) -> Vec<Case> {
    let row = |name, faults, calls, answer, a_faults, soft| Case {
        name,
        faults,
        calls,
        answer,
        a_faults,
        soft,
    };
    let mut cases = vec![
        // 429: the next key of the same provider, which then answers.
        row(
            "429 without Retry-After",
            vec![error(429)],
            (2, 0, 0),
            "from-a",
            0,
            0,
        ),
        row(
            "429 with Retry-After",
            vec![Reply::Error {
                status: 429,
                body: "{}".into(),
                retry_after: Some(30),
            }],
            (2, 0, 0),
            "from-a",
            0,
            0,
        ),
        // Both keys limited: on to b, never looping.
        row(
            "429 on every key",
            vec![error(429), error(429)],
            (2, 1, 0),
            "from-b",
            0,
            0,
        ),
        row(
            "529 overloaded",
            vec![error(529), error(529)],
            (2, 1, 0),
            "from-b",
            0,
            0,
        ),
        // 5xx and timeouts: one retry of a, then b.
        row(
            "500",
            vec![error(500), error(500)],
            (2, 1, 0),
            "from-b",
            2,
            0,
        ),
        row(
            "502",
            vec![error(502), error(502)],
            (2, 1, 0),
            "from-b",
            2,
            0,
        ),
        row(
            "503",
            vec![error(503), error(503)],
            (2, 1, 0),
            "from-b",
            2,
            0,
        ),
        row(
            "500 then recovered on retry",
            vec![error(500)],
            (2, 0, 0),
            "from-a",
            1,
            0,
        ),
        row(
            "timeout before headers",
            vec![
                Reply::Delay {
                    millis: 1500,
                    then: Box::new(Reply::Text("late".into())),
                },
                Reply::Delay {
                    millis: 1500,
                    then: Box::new(Reply::Text("late".into())),
                },
            ],
            (2, 1, 0),
            "from-b",
            2,
            0,
        ),
        // 401 and unknown model: straight to b, counted against a's breaker.
        row("401", vec![error(401)], (1, 1, 0), "from-b", 1, 0),
        row(
            "unknown model (404)",
            vec![error(404)],
            (1, 1, 0),
            "from-b",
            1,
            0,
        ),
        // A 200 with nothing in it: a soft failure, next candidate.
        row(
            "empty 200",
            vec![raw(
                200,
                if stream {
                    "text/event-stream"
                } else {
                    "application/json"
                },
                "",
            )],
            (1, 1, 0),
            "from-b",
            1,
            1,
        ),
    ];
    if stream {
        cases.extend([
            row(
                "stall before the first event",
                vec![
                    Reply::StallStream { millis: 1500 },
                    Reply::StallStream { millis: 1500 },
                ],
                (2, 1, 0),
                "from-b",
                2,
                0,
            ),
            row(
                "SSE error as the first event",
                vec![
                    raw(
                        200,
                        "text/event-stream",
                        "data: {\"error\":{\"message\":\"overloaded\",\"code\":503}}\n\n",
                    ),
                    raw(
                        200,
                        "text/event-stream",
                        "data: {\"error\":{\"message\":\"overloaded\",\"code\":503}}\n\n",
                    ),
                ],
                (2, 1, 0),
                "from-b",
                2,
                0,
            ),
            row(
                "malformed SSE",
                vec![
                    raw(200, "text/event-stream", "data: {nope\n\n"),
                    raw(200, "text/event-stream", "data: {nope\n\n"),
                ],
                (2, 1, 0),
                "from-b",
                2,
                0,
            ),
        ]);
    } else {
        cases.push(row(
            "malformed JSON",
            vec![
                raw(200, "application/json", "{\"choices\": ["),
                raw(200, "application/json", "{\"choices\": ["),
            ],
            (2, 1, 0),
            "from-b",
            2,
            0,
        ));
    }
    cases
}

#[test]
fn every_fault_of_the_first_candidate() {
    for stream in [false, true] {
        for case in cases(stream) {
            let m = matrix(None);
            m.a.script(case.faults.clone());
            let (status, body) = m.call(stream);
            let label = format!("{} (stream={stream})", case.name);
            assert_eq!(status, 200, "{label}: {body}");
            assert_eq!(text_of(&body), case.answer, "{label}: {body}");
            assert_eq!(m.calls(), case.calls, "{label}: requests to a, b, c");
            let breaker = m.breaker("a|m1");
            let faults = breaker["total_failures"].as_u64().unwrap_or(0);
            assert_eq!(faults, case.a_faults, "{label}: a's breaker {breaker}");
            assert_eq!(
                breaker["soft_failures"].as_u64().unwrap_or(0),
                case.soft,
                "{label}: {breaker}"
            );
            if case.name.starts_with("429") {
                let keys = m.get("/api/keys");
                assert_eq!(keys["a"][0]["consecutive_429"], 1, "{label}: {keys}");
                let auth: Vec<String> =
                    m.a.requests()
                        .iter()
                        .filter_map(|r| r.header("authorization").map(str::to_string))
                        .collect();
                assert_eq!(
                    auth,
                    ["Bearer key-a-one", "Bearer key-a-two"],
                    "{label}: rotated to the next key"
                );
                if case.name == "429 with Retry-After" {
                    // The limit cools the model on that key, not the key.
                    let pair = &keys["a"][0]["models"]["m1"];
                    assert!(
                        pair["cooling_remaining_s"].as_f64().unwrap() > 25.0,
                        "{label}: {keys}"
                    );
                    assert_eq!(pair["rule"], "retry_after", "{label}: {keys}");
                    assert_eq!(keys["a"][0]["cooling_remaining_s"], 0.0, "{label}: {keys}");
                }
            }
        }
    }
}

#[test]
fn connection_refused_moves_on_and_a_cut_stream_is_closed_properly() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let m = matrix(Some(&format!("http://{closed}/v1")));
    for stream in [false, true] {
        let (status, body) = m.call(stream);
        assert_eq!(status, 200, "{body}");
        assert_eq!(text_of(&body), "from-b");
    }
    assert_eq!(
        m.breaker("a|m1")["state"],
        "open",
        "four refused connections opened a's breaker"
    );
    // Now a is skipped without a connection attempt.
    let before = m.calls().1;
    let (status, _) = m.call(false);
    assert_eq!(status, 200);
    assert_eq!(m.calls().1, before + 1);
    let reset = m
        .agent
        .post(&format!("{}/api/breakers/a%7Cm1/reset", m.gateway.url))
        .send("")
        .unwrap();
    assert_eq!(reset.status().as_u16(), 200);
    assert_eq!(m.breaker("a|m1"), Value::Null);

    // After the commit point a cut stream is not retried: the client gets what came and a
    // protocol-correct error event.
    let m = matrix(None);
    m.a.script([raw(200, "text/event-stream", "data: {\"id\":\"c\",\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"partial \"}}]}\n\n")]);
    let (status, body) = m.call(true);
    assert_eq!(status, 200);
    assert!(
        body.contains("partial ") && body.contains("event: error"),
        "{body}"
    );
    assert_eq!(m.calls(), (1, 0, 0), "no fallback after the first byte");
}

#[test]
fn when_every_candidate_fails_one_error_lists_each_attempt() {
    let m = matrix(None);
    m.a.script([error(500), error(500)]);
    m.b.script([error(401)]);
    m.c.script([raw(502, "text/html", "<html>bad gateway</html>")]);
    // c gets a retry too.
    m.c.script([raw(502, "text/html", "<html>bad gateway</html>")]);
    let (status, body) = m.call(false);
    assert_eq!(status, 502, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    let message = v["error"]["message"].as_str().unwrap();
    assert!(message.starts_with("all 3 candidates failed"), "{message}");
    for needle in [
        "a|m1: provider `a` answered 500",
        "b|m2: provider `b` rejected the gateway's credentials (401)",
        "c|m3: provider `c` answered 502: <html>bad gateway</html>",
    ] {
        assert!(message.contains(needle), "{message} lacks {needle}");
    }
    assert_eq!(m.calls(), (2, 1, 2));
    // A client error is returned at once, with no cascade.
    let m = matrix(None);
    m.a.script([Reply::Error {
        status: 400,
        body: json!({"error": {"message": "messages: bad shape"}}).to_string(),
        retry_after: None,
    }]);
    let (status, body) = m.call(false);
    assert_eq!(status, 400, "{body}");
    assert_eq!(m.calls(), (1, 0, 0));
    // ...except a context-length error, which moves on to the next candidate.
    let m = matrix(None);
    m.a.script([Reply::Error {
        status: 400,
        body: json!({"error": {"message": "This model's maximum context length is 8192 tokens"}})
            .to_string(),
        retry_after: None,
    }]);
    let (status, body) = m.call(false);
    assert_eq!((status, text_of(&body).as_str()), (200, "from-b"));
}

#[test]
fn breakers_survive_a_gateway_restart() {
    let home = tempfile::tempdir().unwrap();
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let b = FakeUpstream::start("from-b");
    configure(
        home.path(),
        &format!(
            "[gateway]\nretries = 0\n[providers.a]\nbase_url = \"http://{closed}/v1\"\nformat = \"chat\"\n[providers.b]\nbase_url = \"{}/v1\"\nformat = \"chat\"\n",
            b.url()
        ),
        &[(
            "default",
            "[tiers.middle]\nmodel = \"a|m1\"\ncascade = [\"b|m2\"]\n",
        )],
    );
    let agent = admin_agent(home.path());
    let body =
        json!({"model": "x", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]})
            .to_string();
    {
        let gateway = TestGateway::start(home.path());
        for _ in 0..3 {
            agent
                .post(&format!("{}/v1/messages", gateway.url))
                .send(body.clone())
                .unwrap();
        }
    }
    let gateway = TestGateway::start(home.path());
    let mut response = agent
        .get(&format!("{}/api/breakers", gateway.url))
        .call()
        .unwrap();
    let breakers: Value =
        serde_json::from_str(&response.body_mut().read_to_string().unwrap()).unwrap();
    assert_eq!(breakers["breakers"][0]["id"], "a|m1", "{breakers}");
    assert_eq!(breakers["breakers"][0]["state"], "open", "{breakers}");
    let _ = Duration::ZERO;
}
