//! Hot reload: `POST /api/reload` and a changed file (or SIGHUP) in a real gateway process
//! switch routes; an invalid new config is rejected with its error and the old one stays; a
//! request already in flight finishes on the config it started with.

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::fake_upstream::{FakeUpstream, Reply};
use support::gateway::{TestGateway, admin_agent, configure, http_agent};

fn write(home: &std::path::Path, a: &FakeUpstream, b: &FakeUpstream, target: &str, extra: &str) {
    let config = format!(
        "[gateway]\nauto_start = false\n{extra}[providers.a]\nbase_url = \"{}/v1\"\nformat = \"chat\"\n[providers.b]\nbase_url = \"{}/v1\"\nformat = \"chat\"\n",
        a.url(),
        b.url()
    );
    configure(
        home,
        &config,
        &[(
            "default",
            &format!("[tiers.middle]\nmodel = \"{target}\"\n"),
        )],
    );
}

fn ask(url: &str) -> (u16, String) {
    let agent = http_agent();
    let body =
        json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]});
    let mut response = agent
        .post(&format!("{url}/v1/messages"))
        .send(body.to_string())
        .unwrap();
    let status = response.status().as_u16();
    let text = response.body_mut().read_to_string().unwrap();
    let answer = serde_json::from_str::<Value>(&text)
        .ok()
        .and_then(|v| v["content"][0]["text"].as_str().map(str::to_string));
    (status, answer.unwrap_or(text))
}

#[test]
fn reload_switches_routes_and_rejects_a_bad_config() {
    let home = tempfile::tempdir().unwrap();
    let (a, b) = (FakeUpstream::start("from-a"), FakeUpstream::start("from-b"));
    write(home.path(), &a, &b, "a|m", "");
    let gateway = TestGateway::start(home.path());
    assert_eq!(ask(&gateway.url), (200, "from-a".to_string()));

    // A request in flight when the config changes finishes where it started.
    a.script([Reply::Delay {
        millis: 700,
        then: Box::new(Reply::Text("slow-from-a".into())),
    }]);
    let url = gateway.url.clone();
    let in_flight = std::thread::spawn(move || ask(&url));
    let waited = Instant::now();
    while a.model_calls().len() < 2 {
        assert!(
            waited.elapsed() < Duration::from_secs(5),
            "the slow request never reached a"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    write(home.path(), &a, &b, "b|m", "");
    let agent = admin_agent(home.path());
    let mut reloaded = agent
        .post(&format!("{}/api/reload", gateway.url))
        .send("")
        .unwrap();
    assert_eq!(
        reloaded.status().as_u16(),
        200,
        "{}",
        reloaded.body_mut().read_to_string().unwrap()
    );
    assert_eq!(
        ask(&gateway.url),
        (200, "from-b".to_string()),
        "new requests use the new route"
    );
    assert_eq!(
        in_flight.join().unwrap(),
        (200, "slow-from-a".to_string()),
        "the in-flight request finished on the old one"
    );

    // An invalid config is rejected with its error; the old one stays in force.
    std::fs::write(
        home.path().join("config/profiles/default.toml"),
        "[tiers.middle]\nmodel = \"nowhere|m\"\n",
    )
    .unwrap();
    let mut rejected = agent
        .post(&format!("{}/api/reload", gateway.url))
        .send("")
        .unwrap();
    assert_eq!(rejected.status().as_u16(), 400);
    let text = rejected.body_mut().read_to_string().unwrap();
    assert!(
        text.contains("reload rejected") && text.contains("provider `nowhere`"),
        "{text}"
    );
    assert_eq!(ask(&gateway.url), (200, "from-b".to_string()));
}

#[test]
fn a_running_gateway_picks_up_a_changed_config_file() {
    let home = tempfile::tempdir().unwrap();
    let (a, b) = (FakeUpstream::start("from-a"), FakeUpstream::start("from-b"));
    write(home.path(), &a, &b, "a|m", "");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_xx"))
        .args(["gateway", "--listen", &format!("127.0.0.1:{port}")])
        .env("CLUTCH_HOME", home.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let started = Instant::now();
    while ureq::get(&format!("{url}/health")).call().is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "gateway did not start"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(ask(&url).1, "from-a");
    write(home.path(), &a, &b, "b|m", "");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
    let changed = Instant::now();
    while ask(&url).1 != "from-b" {
        assert!(
            changed.elapsed() < Duration::from_secs(5),
            "the new config never took effect"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn a_reload_applies_new_breaker_settings() {
    let home = tempfile::tempdir().unwrap();
    let (a, b) = (FakeUpstream::start("from-a"), FakeUpstream::start("from-b"));
    write(home.path(), &a, &b, "a|m", "");
    let gateway = TestGateway::start(home.path());
    let admin = admin_agent(home.path());
    let breakers = || -> Value {
        let mut response = admin
            .get(&format!("{}/api/breakers", gateway.url))
            .call()
            .unwrap();
        serde_json::from_str(&response.body_mut().read_to_string().unwrap()).unwrap()
    };
    assert_eq!(breakers()["threshold"], 3);
    write(
        home.path(),
        &a,
        &b,
        "a|m",
        "breaker_threshold = 1\nbreaker_cooldown_secs = 7\n",
    );
    let mut reloaded = admin
        .post(&format!("{}/api/reload", gateway.url))
        .send("")
        .unwrap();
    assert_eq!(
        reloaded.status(),
        200,
        "{}",
        reloaded.body_mut().read_to_string().unwrap()
    );
    let now = breakers();
    assert_eq!(
        (now["threshold"].clone(), now["cooldown_s"].clone()),
        (json!(1), json!(7))
    );
}
