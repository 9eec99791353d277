//! Breakers that carry a user through instead of locking them out: a fixed key resets the
//! breakers its wrong predecessor opened; when every candidate's breaker is open the one due
//! soonest is probed, so the first request after an outage succeeds; a provider with no key
//! is skipped with the reason; `proxies breakers` lists and resets them.

mod support;

use serde_json::{Value, json};
use support::fake_upstream::{FakeUpstream, Reply};
use support::gateway::{ProcessGateway, TestGateway, admin_agent, configure};

fn ask(agent: &ureq::Agent, url: &str) -> (u16, String) {
    let body = json!({"model": "claude-sonnet-x", "max_tokens": 9, "messages": [{"role": "user", "content": "hi"}]});
    let mut response = agent
        .post(&format!("{url}/v1/messages"))
        .send(body.to_string())
        .unwrap();
    (
        response.status().as_u16(),
        response.body_mut().read_to_string().unwrap(),
    )
}

fn breakers(agent: &ureq::Agent, url: &str) -> Vec<Value> {
    let text = agent
        .get(&format!("{url}/api/breakers"))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    serde_json::from_str::<Value>(&text).unwrap()["breakers"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn rejected() -> Reply {
    Reply::Error {
        status: 401,
        body: json!({"error": {"message": "invalid key"}}).to_string(),
        retry_after: None,
    }
}

#[test]
fn a_fixed_key_resets_the_breakers_the_wrong_one_opened() {
    let home = tempfile::tempdir().unwrap();
    let fake = FakeUpstream::start("answered");
    let config = |key: &str| {
        format!(
            "[gateway]\nauto_start = false\nbreaker_threshold = 2\n\
             [providers.p]\nbase_url = \"{}/v1\"\nformat = \"chat\"\napi_key = \"{key}\"\n",
            fake.url()
        )
    };
    configure(
        home.path(),
        &config("wrong-key"),
        &[("default", "[tiers.middle]\nmodel = \"p|m\"\n")],
    );
    let gateway = TestGateway::start(home.path());
    let agent = admin_agent(home.path());
    fake.script([rejected(), rejected()]);
    for _ in 0..2 {
        let (status, body) = ask(&agent, &gateway.url);
        assert_eq!(status, 502);
        // The error says where the key comes from and what to do.
        assert!(
            body.contains("its key comes from providers.p.api_key(s) in the clutch config"),
            "{body}"
        );
        assert!(
            body.contains(
                "\"The provider refused the key: fix the key named below or run `xx setup`"
            ),
            "the one thing to do comes first: {body}"
        );
    }
    assert_eq!(breakers(&agent, &gateway.url)[0]["state"], "open");
    configure(home.path(), &config("right-key"), &[]);
    let reload = agent
        .post(&format!("{}/api/reload", gateway.url))
        .send("")
        .unwrap();
    assert_eq!(reload.status().as_u16(), 200);
    assert!(
        breakers(&agent, &gateway.url).is_empty(),
        "the new key starts afresh"
    );
    let (status, body) = ask(&agent, &gateway.url);
    assert_eq!(status, 200, "{body}");
    let last = fake.model_calls().pop().unwrap();
    assert_eq!(last.header("authorization"), Some("Bearer right-key"));
}

#[test]
fn the_first_request_after_an_outage_succeeds_when_every_breaker_is_open() {
    let home = tempfile::tempdir().unwrap();
    let fake = FakeUpstream::start("back again");
    configure(
        home.path(),
        &format!(
            "[gateway]\nauto_start = false\nretries = 1\nbreaker_threshold = 3\nbreaker_cooldown_secs = 600\nbreaker_max_cooldown_secs = 600\n\
             [providers.p]\nbase_url = \"{}/v1\"\nformat = \"chat\"\napi_key = \"k\"\n",
            fake.url()
        ),
        &[("default", "[tiers.middle]\nmodel = \"p|m\"\n")],
    );
    let gateway = TestGateway::start(home.path());
    let agent = admin_agent(home.path());
    let down = || Reply::Error {
        status: 503,
        body: "{}".into(),
        retry_after: None,
    };
    // Two faults (a call and its retry), then a third opens the breaker.
    fake.script([down(), down(), down()]);
    let (status, _) = ask(&agent, &gateway.url);
    assert_eq!(status, 503);
    let (status, body) = ask(&agent, &gateway.url);
    assert!(status >= 500, "{body}");
    assert_eq!(breakers(&agent, &gateway.url)[0]["state"], "open");
    // The provider is healthy again; its breaker would stay open for 10 minutes.
    let calls = fake.model_calls().len();
    let (status, body) = ask(&agent, &gateway.url);
    assert_eq!(status, 200, "probed at once: {body}");
    assert_eq!(fake.model_calls().len(), calls + 1);
    assert_eq!(breakers(&agent, &gateway.url)[0]["state"], "closed");
    // A probe that fails says why the breaker is open, how long and how to clear it.
    fake.script([down(), down(), down(), down()]);
    let _ = ask(&agent, &gateway.url);
    let _ = ask(&agent, &gateway.url);
    let (_, body) = ask(&agent, &gateway.url);
    assert!(
        body.contains("circuit breaker is open for another"),
        "{body}"
    );
    assert!(body.contains("proxies breakers reset p|m"), "{body}");
}

#[test]
fn a_provider_with_no_key_is_skipped_with_the_reason() {
    let home = tempfile::tempdir().unwrap();
    let fake = FakeUpstream::start("from-local");
    configure(
        home.path(),
        &format!(
            "[gateway]\nauto_start = false\n\
             [providers.keyless]\nbase_url = \"{0}/v1\"\nformat = \"chat\"\nkey_env = \"CLUTCH_TEST_NEVER_SET_KEY\"\n\
             [providers.mine]\nbase_url = \"{0}/v1\"\nformat = \"chat\"\n",
            fake.url()
        ),
        &[
            (
                "default",
                "[tiers.middle]\nmodel = \"keyless|m\"\ncascade = [\"mine|m2\"]\n",
            ),
            ("alone", "[tiers.middle]\nmodel = \"keyless|m\"\n"),
        ],
    );
    let gateway = TestGateway::start(home.path());
    let agent = admin_agent(home.path());
    let (status, body) = ask(&agent, &gateway.url);
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        fake.model_calls().len(),
        1,
        "only the provider that can be called was"
    );
    assert!(
        breakers(&agent, &gateway.url)
            .iter()
            .all(|b| b["id"] != "keyless|m")
    );
    let (status, body) = ask(&agent, &format!("{}/p/alone", gateway.url));
    assert_eq!(status, 502, "{body}");
    assert!(
        body.contains("provider `keyless` has no key: CLUTCH_TEST_NEVER_SET_KEY is not set"),
        "{body}"
    );
    assert!(
        body.contains("\"No candidate has a key: run `xx setup`"),
        "{body}"
    );
    assert_eq!(fake.model_calls().len(), 1);
}

#[test]
fn proxies_breakers_lists_and_resets_them() {
    let home = tempfile::tempdir().unwrap();
    let fake = FakeUpstream::start("answered");
    let port = support::gateway::free_port();
    configure(
        home.path(),
        &format!(
            "[gateway]\nurl = \"http://127.0.0.1:{port}\"\nauto_start = false\nbreaker_threshold = 1\nretries = 0\n\
             [providers.p]\nbase_url = \"{}/v1\"\nformat = \"chat\"\napi_key = \"k\"\n",
            fake.url()
        ),
        &[(
            "default",
            "[tiers.middle]\nmodel = \"p|m\"\ncascade = [\"p|m2\"]\n",
        )],
    );
    let gateway = ProcessGateway::start_at(home.path(), port);
    let agent = admin_agent(home.path());
    fake.script([rejected()]);
    assert_eq!(ask(&agent, &gateway.url).0, 200);
    let proxies = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_proxies"))
            .args(args)
            .env("CLUTCH_HOME", home.path())
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (code, text) = proxies(&["breakers"]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("p|m") && text.contains("open"), "{text}");
    let (code, text) = proxies(&["breakers", "--json"]);
    assert_eq!(code, Some(0));
    assert_eq!(
        serde_json::from_str::<Value>(&text).unwrap()["breakers"][0]["id"],
        "p|m"
    );
    let (code, text) = proxies(&["breakers", "reset", "p|m"]);
    assert_eq!(code, Some(0), "{text}");
    assert!(
        breakers(&agent, &gateway.url)
            .iter()
            .all(|b| b["id"] != "p|m")
    );
    let (code, _) = proxies(&["breakers", "reset"]);
    assert_eq!(code, Some(0));
    assert!(breakers(&agent, &gateway.url).is_empty());
}
