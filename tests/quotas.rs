//! Quotas: a per-request token budget, requests per minute per model (the cascade moves on,
//! or a structured 429 when nothing may take the request), and daily token and cost budgets
//! counted from real usage, globally and per provider.

mod support;

use serde_json::{Value, json};
use support::fake_upstream::FakeUpstream;
use support::gateway::{TestGateway, admin_agent, configure, http_agent};

struct Setup {
    _home: tempfile::TempDir,
    gateway: TestGateway,
    _a: FakeUpstream,
    _b: FakeUpstream,
}

/// Providers a and b (the fakes report 12 prompt + 3 answer tokens per call); the default
/// profile tries a then b, the `only-a` profile only a.
fn setup(quotas: &str) -> Setup {
    let home = tempfile::tempdir().unwrap();
    let (a, b) = (FakeUpstream::start("from-a"), FakeUpstream::start("from-b"));
    let config = format!(
        "[gateway]\nauto_start = false\n[providers.a]\nbase_url = \"{}/v1\"\nformat = \"chat\"\n\
         models.m1 = {{ input_price = 1000.0, output_price = 2000.0 }}\n\
         [providers.b]\nbase_url = \"{}/v1\"\nformat = \"chat\"\n{quotas}",
        a.url(),
        b.url()
    );
    configure(
        home.path(),
        &config,
        &[
            (
                "default",
                "[tiers.middle]\nmodel = \"a|m1\"\ncascade = [\"b|m2\"]\n",
            ),
            ("only-a", "[tiers.middle]\nmodel = \"a|m1\"\n"),
        ],
    );
    let gateway = TestGateway::start(home.path());
    Setup {
        _home: home,
        gateway,
        _a: a,
        _b: b,
    }
}

fn ask(s: &Setup, profile: &str, text: &str) -> (u16, Value, Option<String>) {
    let agent = http_agent();
    let body =
        json!({"model": "m", "max_tokens": 500, "messages": [{"role": "user", "content": text}]});
    let mut response = agent
        .post(&format!("{}/p/{profile}/v1/messages", s.gateway.url))
        .send(body.to_string())
        .unwrap();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    let status = response.status().as_u16();
    let value = serde_json::from_str(&response.body_mut().read_to_string().unwrap()).unwrap();
    (status, value, retry_after)
}

fn answer(v: &Value) -> &str {
    v["content"][0]["text"].as_str().unwrap_or_default()
}

fn assert_quota_429(status: u16, v: &Value, needle: &str) {
    assert_eq!(status, 429, "{v}");
    assert_eq!(v["error"]["type"], "rate_limit_error", "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains(needle),
        "{v}"
    );
}

#[test]
fn a_request_over_the_per_request_budget_is_refused() {
    let s = setup("[quotas]\nrequest_tokens = 100\n");
    assert_eq!(answer(&ask(&s, "default", "short").1), "from-a");
    let (status, v, _) = ask(&s, "default", &"long ".repeat(200));
    assert_quota_429(status, &v, "quotas.request_tokens");
}

#[test]
fn requests_per_minute_move_the_cascade_on_then_refuse() {
    let s = setup("[quotas.models.\"a|m1\"]\nrequests_per_minute = 2\ncooldown_secs = 30\n");
    assert_eq!(answer(&ask(&s, "default", "one").1), "from-a");
    assert_eq!(answer(&ask(&s, "default", "two").1), "from-a");
    assert_eq!(
        answer(&ask(&s, "default", "three").1),
        "from-b",
        "a hit its limit: b answers"
    );
    let (status, v, retry_after) = ask(&s, "only-a", "four");
    assert_quota_429(status, &v, "cooling down");
    assert!(retry_after.is_some());
}

#[test]
fn daily_token_and_cost_budgets_count_real_usage() {
    let s = setup("[quotas]\ndaily_tokens = 40\n");
    assert_eq!(ask(&s, "default", "one").0, 200);
    assert_eq!(ask(&s, "default", "two").0, 200);
    assert_eq!(ask(&s, "default", "three").0, 200);
    let agent = admin_agent(s._home.path());
    let usage: Value = serde_json::from_str(
        &agent
            .get(&format!("{}/api/usage", s.gateway.url))
            .call()
            .unwrap()
            .body_mut()
            .read_to_string()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(usage["today"]["tokens"], 45, "{usage}");
    let (status, v, retry_after) = ask(&s, "default", "four");
    assert_quota_429(status, &v, "quotas.daily_tokens");
    assert!(retry_after.unwrap().parse::<u64>().unwrap() <= 86_400);

    // a's models cost $1000/M prompt and $2000/M answer tokens: one call is $0.018.
    let s = setup("[quotas.providers.a]\ndaily_cost_usd = 0.01\n");
    assert_eq!(answer(&ask(&s, "default", "one").1), "from-a");
    assert_eq!(
        answer(&ask(&s, "default", "two").1),
        "from-b",
        "a spent its budget: b answers"
    );
    let (status, v, _) = ask(&s, "only-a", "three");
    assert_quota_429(status, &v, "daily_cost_usd");
}
