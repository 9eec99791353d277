//! Model-scan against scripted fake providers: an OpenRouter-shaped list with prices and
//! capabilities, an Ollama-shaped server found as a local server, a provider that refuses the
//! key, a slow one, and a model that fails the tool probe. Then the consumers (the tier
//! letters, a profile's `scan:free`, a new or refused snapshot without a restart), the
//! supervisor's refresh job, and the ledger sinking a failing model.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::Clutch;
use support::fake_upstream::{FakeUpstream, Reply};
use support::gateway::{ProcessGateway, TestGateway, admin_agent, configure, http_agent};

const DAY: u64 = 86_400;

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// An OpenRouter-shaped entry.
fn openrouter_model(
    id: &str,
    price: (&str, &str),
    context: u64,
    age_days: u64,
    parameters: &[&str],
) -> Value {
    json!({
        "id": id, "name": id, "created": now_secs() - age_days * DAY, "context_length": context,
        "pricing": {"prompt": price.0, "completion": price.1},
        "top_provider": {"max_completion_tokens": 16384},
        "architecture": {"input_modalities": ["text"]},
        "supported_parameters": parameters,
    })
}

/// The fakes of the first test, and a config that uses them.
struct Providers {
    openrouter: FakeUpstream,
    ollama: FakeUpstream,
    refuser: FakeUpstream,
    slow: FakeUpstream,
}

fn providers() -> Providers {
    let openrouter = FakeUpstream::start("1 2 3 4 5 6 7 8 9 10");
    openrouter.require_key("sk-or-good");
    openrouter.set_listing(
        json!({"data": [
            openrouter_model("vendor/coder:free", ("0", "0"), 262_144, 10, &["tools", "tool_choice", "structured_outputs"]),
            openrouter_model("vendor/chatty:free", ("0", "0"), 131_072, 20, &["tools", "tool_choice"]),
            openrouter_model("vendor/old:free", ("0", "0"), 32_768, 700, &["max_tokens"]),
            openrouter_model("vendor/premium", ("0.000003", "0.000015"), 200_000, 30, &["tools", "reasoning", "structured_outputs"]),
            openrouter_model("vendor/cheap", ("0.0000001", "0.0000004"), 128_000, 30, &["tools"]),
        ]}),
        None,
    );
    openrouter.make_capable("vendor/coder:free");
    openrouter.make_capable("vendor/old:free");
    // vendor/chatty:free lists tools but answers every request with text.
    let ollama = FakeUpstream::start("1 2 3");
    ollama.set_listing(
        json!({"object": "list", "data": [
            {"id": "qwen3-coder:latest", "object": "model", "created": now_secs() - 5 * DAY, "owned_by": "library"}
        ]}),
        None,
    );
    ollama.make_capable("qwen3-coder:latest");
    let refuser = FakeUpstream::start("never");
    refuser.require_key("the-right-key");
    let slow = FakeUpstream::start("late");
    slow.set_listing(
        json!({"data": [{"id": "slow-model"}]}),
        Some(Duration::from_secs(6)),
    );
    Providers {
        openrouter,
        ollama,
        refuser,
        slow,
    }
}

fn config(p: &Providers, scan: &str) -> String {
    format!(
        r#"[gateway]
auto_start = false

[providers.openrouter]
base_url = "{}/v1"
format = "chat"
api_key = "sk-or-good"

[providers.refuser]
base_url = "{}/v1"
format = "chat"
api_key = "sk-wrong"

[providers.slow]
base_url = "{}/v1"
format = "chat"
api_key = "sk-slow"

[scan]
timeout_secs = 2
local = {{ local = "{}/v1" }}
{scan}
"#,
        p.openrouter.url(),
        p.refuser.url(),
        p.slow.url(),
        p.ollama.url(),
    )
}

fn ranked(snapshot: &Value, kind: &str) -> Vec<String> {
    snapshot["slots"][kind]["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["api_model"].as_str().unwrap().to_string())
        .collect()
}

fn refresh(clutch: &Clutch) -> Value {
    let out = clutch
        .xx(&["scan", "refresh", "--json"])
        .timeout(Duration::from_secs(60))
        .output();
    out.assert_ok();
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out}"))
}

#[test]
fn a_refresh_lists_probes_within_its_limits_and_ranks_by_the_formula() {
    let p = providers();
    let clutch = Clutch::new().config(&config(&p, "max_probes = 3\nconcurrency = 2"));
    let started = Instant::now();
    let snapshot = refresh(&clutch);
    // The slow provider's list is given up on at scan.timeout_secs, not waited for.
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );

    let health = &snapshot["provider_health"];
    assert_eq!(health["openrouter"], "ok", "{snapshot:#}");
    assert_eq!(
        health["local"], "ok",
        "the Ollama-shaped server is found: {snapshot:#}"
    );
    assert_eq!(health["refuser"], "down");
    assert_eq!(health["slow"], "down");
    let notes = &snapshot["provider_notes"];
    assert!(
        notes["refuser"]
            .as_str()
            .unwrap()
            .contains("refused the key"),
        "{notes}"
    );
    assert!(
        notes["slow"]
            .as_str()
            .unwrap()
            .contains("no model list within 2 s"),
        "{notes}"
    );
    assert!(
        !notes.to_string().contains("sk-wrong"),
        "no key in the notes"
    );
    assert_eq!(
        snapshot["local_servers"]["local"].as_str().unwrap(),
        format!("{}/v1", p.ollama.url())
    );

    // Probe limits: three models, free ones only, three small requests each at most.
    assert_eq!(snapshot["stats"]["models_listed"], 6);
    assert_eq!(snapshot["stats"]["models_probed"], 3);
    let probed: Vec<String> = p
        .openrouter
        .model_calls()
        .iter()
        .chain(p.ollama.model_calls().iter())
        .filter_map(|r| r.model())
        .collect();
    assert!(probed.len() <= 9, "{probed:?}");
    let mut distinct = probed.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 3, "{distinct:?}");
    assert!(
        distinct
            .iter()
            .all(|m| m.ends_with(":free") || m.starts_with("qwen3")),
        "free-only mode probes no paid model: {distinct:?}"
    );
    assert!(p.refuser.model_calls().is_empty() && p.slow.model_calls().is_empty());

    // The ranking, as docs/model-scan.md says.
    let free = ranked(&snapshot, "free");
    assert!(
        !free
            .iter()
            .any(|m| m.contains("premium") || m.contains("cheap")),
        "{free:?}"
    );
    let position = |list: &[String], model: &str| list.iter().position(|m| m == model);
    assert!(
        position(&free, "openrouter|vendor/coder:free")
            < position(&free, "openrouter|vendor/old:free"),
        "tools, a larger context and recency rank the coder above the old model: {free:?}"
    );
    let tool = ranked(&snapshot, "tool");
    assert!(
        !tool.contains(&"openrouter|vendor/chatty:free".to_string()),
        "a model that fails the tool probe is no tool candidate: {tool:?}"
    );
    assert!(
        tool.contains(&"openrouter|vendor/coder:free".to_string()),
        "{tool:?}"
    );
    assert!(
        !tool.contains(&"openrouter|vendor/old:free".to_string()),
        "{tool:?}"
    );
    assert_eq!(
        ranked(&snapshot, "best")[0],
        "openrouter|vendor/premium",
        "the strongest (priciest) listed model is the best"
    );
    assert!(
        ranked(&snapshot, "reasoning")
            .iter()
            .all(|m| !m.contains("old"))
    );
    let coder = snapshot["slots"]["tool"]["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["model_id"] == "vendor/coder:free")
        .unwrap();
    assert_eq!(coder["tool_probe"], "pass");
    assert_eq!(coder["price_blended"], 0.0);
    assert!(coder["ttft_ms"].is_u64(), "{coder}");

    // The same ranking as a table.
    let out = clutch.xx(&["scan", "show", "free"]).output();
    out.assert_ok();
    assert!(out.stdout.contains("openrouter|vendor/coder:free"), "{out}");
    assert!(out.stdout.contains("provider refuser: down"), "{out}");
    // Only one provider, by hand.
    let out = clutch
        .xx(&["scan", "refresh", "--provider", "refuser"])
        .output();
    out.assert_ok();
    assert!(out.stdout.contains("0 models listed"), "{out}");
    let out = clutch
        .xx(&["scan", "refresh", "--provider", "nope"])
        .output();
    assert_eq!(out.code, Some(2), "{out}");
    assert!(out.stderr.contains("--provider nope"), "{out}");
}

/// A snapshot whose `free` ranking is `models`, generated `age_secs` ago.
fn snapshot_with(models: &[(&str, &str)], age_secs: u64) -> Value {
    let generated = std::time::SystemTime::now() - Duration::from_secs(age_secs);
    let candidates: Vec<Value> = models
        .iter()
        .enumerate()
        .map(|(i, (provider, model))| {
            json!({"model_id": model, "provider": provider, "api_model": format!("{provider}|{model}"),
                   "fitness": 90.0 - i as f64, "price_blended": 0.0, "has_tools": true})
        })
        .collect();
    let slot = json!({"label": "Best free", "eval_mode": "free", "best": candidates.first(), "candidates": candidates});
    json!({
        "schema_version": "1.0.0",
        "generated_at": humantime::format_rfc3339_seconds(generated).to_string(),
        "scan_id": 1,
        "provider_health": {"fake": "ok"},
        "slots": {"free": slot.clone(), "best": slot},
    })
}

fn write_snapshot(home: &Path, snapshot: &str) {
    let dir = home.join("state/scan");
    std::fs::create_dir_all(&dir).unwrap();
    let temporary = dir.join("snapshot.tmp");
    std::fs::write(&temporary, snapshot).unwrap();
    std::fs::rename(temporary, dir.join("routing_snapshot.json")).unwrap();
}

/// Send one small request; the model the fake was asked for.
fn served_model(gateway: &str, fake: &FakeUpstream) -> String {
    let before = fake.model_calls().len();
    let response = http_agent()
        .post(&format!("{gateway}/v1/messages"))
        .send(
            json!({"model": "claude-sonnet-4", "max_tokens": 50,
                "messages": [{"role": "user", "content": "hi"}]})
            .to_string(),
        )
        .unwrap();
    assert_eq!(response.status(), 200);
    fake.model_calls()[before].model().unwrap()
}

#[test]
fn the_tier_letters_and_scan_entries_follow_the_snapshot_and_a_refused_one_leaves_the_last_good() {
    let fake = FakeUpstream::start("hello");
    let port = support::gateway::free_port();
    let gateway = format!("http://127.0.0.1:{port}");
    let clutch = Clutch::new();
    let home = clutch.clutch_home.path();
    configure(
        home,
        &format!(
            "[gateway]\nurl = \"{gateway}\"\nauto_start = false\n\n[providers.fake]\nbase_url = \"{}/v1\"\nformat = \"chat\"\napi_key = \"k\"\n\n[scan]\nlocal_servers = false\nmax_age_hours = 24\n",
            fake.url()
        ),
        &[(
            "default",
            "default_tier = \"middle\"\n[tiers.middle]\nmodel = \"scan:free:1\"\ncascade = [\"fake|static-fallback\"]\n[tiers.big]\nmodel = \"fake|big\"\n[tiers.small]\nmodel = \"fake|small\"\n[families]\n\"*sonnet*\" = \"middle\"\n",
        )],
    );
    // No snapshot yet: the letter falls back to [selectors] with a notice, or says what to do.
    let out = clutch.xx(&["cipf", "--dry-run"]).output();
    assert_eq!(out.code, Some(2), "{out}");
    assert!(out.stderr.contains("xx scan refresh"), "{out}");

    write_snapshot(
        home,
        &snapshot_with(
            &[("fake", "ranked-one:free"), ("fake", "ranked-two:free")],
            60,
        )
        .to_string(),
    );
    let out = clutch.xx(&["cipf", "--dry-run"]).output();
    out.assert_ok();
    assert!(out.stderr.contains("model=fake|ranked-one:free"), "{out}");
    assert!(
        out.stdout.contains("fake|ranked-one:free"),
        "the model reaches the agent's argv: {out}"
    );

    let mut process = ProcessGateway::start_at(home, port);
    assert_eq!(served_model(&gateway, &fake), "ranked-one:free");

    // A new snapshot is picked up without a restart.
    write_snapshot(
        home,
        &snapshot_with(&[("fake", "ranked-two:free")], 10).to_string(),
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    while served_model(&gateway, &fake) != "ranked-two:free" {
        assert!(
            Instant::now() < deadline,
            "the new snapshot was not picked up"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // A corrupt one, then a stale one: the last good one stays in force, and the gateway says why.
    let admin = admin_agent(home);
    for (bad, why) in [
        (
            "{\"schema_version\": \"1.0.0\", \"generated_at\": ",
            "is not a routing snapshot",
        ),
        (
            &snapshot_with(&[("fake", "stale:free")], 30 * 3600).to_string()[..],
            "is stale",
        ),
        (
            &json!({"schema_version": "2.0.0", "generated_at": "2026-12-03T00:00:00Z"}).to_string()
                [..],
            "schema_version 2.0.0",
        ),
    ] {
        write_snapshot(home, bad);
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let text = admin
                .get(&format!("{gateway}/api/scan"))
                .call()
                .unwrap()
                .body_mut()
                .read_to_string()
                .unwrap();
            let scan: Value = serde_json::from_str(&text).unwrap();
            if scan["refused"].as_str().is_some_and(|r| r.contains(why)) {
                assert_eq!(scan["best"]["free"], "fake|ranked-two:free", "{scan}");
                break;
            }
            assert!(
                Instant::now() < deadline,
                "not refused with `{why}`: {scan}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        assert_eq!(served_model(&gateway, &fake), "ranked-two:free");
        let out = clutch.xx(&["scan", "show"]).output();
        assert_eq!(out.code, Some(1), "{out}");
        assert!(out.stderr.contains(why), "{out}");
    }
    assert!(process.alive());
}

#[test]
fn the_supervisor_runs_the_refresh_job_on_its_interval_records_failures_and_never_overlaps() {
    let fake = FakeUpstream::start("1 2 3");
    // Each listing takes a second, so a run is long enough to be caught running.
    fake.set_listing(
        json!({"data": [{"id": "m:free"}]}),
        Some(Duration::from_millis(1500)),
    );
    let port = support::gateway::free_port();
    let clutch = Clutch::new();
    let home = clutch.clutch_home.path();
    let blocker = home.join("blocker");
    std::fs::write(&blocker, "a file where the snapshot's directory should be").unwrap();
    let config = |snapshot: &str| {
        format!(
            "[gateway]\nurl = \"http://127.0.0.1:{port}\"\n\n[providers.fake]\nbase_url = \"{}/v1\"\nformat = \"chat\"\napi_key = \"k\"\n\n[scan]\nlocal_servers = false\ninterval_hours = 0.001\n{snapshot}",
            fake.url()
        )
    };
    // First the snapshot cannot be written: the job's runs fail and say why.
    configure(
        home,
        &config(&format!("snapshot = \"{}/snap.json\"\n", blocker.display())),
        &[],
    );
    let proxies = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_proxies"))
            .args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("CLUTCH_HOME", home)
            .env("HOME", clutch.user_home.path())
            .output()
            .unwrap();
        support::Output {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    };
    proxies(&["up"]).assert_ok();
    struct Down<'a>(&'a dyn Fn(&[&str]) -> support::Output);
    impl Drop for Down<'_> {
        fn drop(&mut self) {
            (self.0)(&["down"]);
        }
    }
    let _down = Down(&proxies);
    let job = |wanted: &dyn Fn(&Value) -> bool| -> Value {
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            let out = proxies(&["status", "--json"]);
            let status: Value = serde_json::from_str(&out.stdout).unwrap_or_default();
            let job = status["jobs"]
                .as_array()
                .and_then(|jobs| jobs.iter().find(|j| j["name"] == "scan-refresh"))
                .cloned()
                .unwrap_or_default();
            if wanted(&job) {
                return job;
            }
            assert!(
                Instant::now() < deadline,
                "job never got there: {job}\n{out}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let failed = job(&|j| j["failures"].as_u64().unwrap_or(0) >= 1);
    assert_eq!(failed["last_result"], "failed", "{failed}");
    assert!(
        failed["last_message"].as_str().unwrap().contains("blocker"),
        "{failed}"
    );
    let text = proxies(&["status"]).stdout;
    assert!(text.contains("job scan-refresh: every 3s"), "{text}");

    // Fixed: the next runs succeed, on the interval.
    std::fs::remove_file(&blocker).unwrap();
    configure(home, &config(""), &[]);
    let ok = job(&|j| j["last_result"] == "ok");
    let runs = ok["runs"].as_u64().unwrap();
    assert!(
        ok["last_message"]
            .as_str()
            .unwrap()
            .contains("1 models listed"),
        "{ok}"
    );
    assert!(ok["next_run"].as_u64().unwrap() > ok["last_finished"].as_u64().unwrap());
    // While a run is in progress, a refresh by hand is refused, not run beside it.
    job(&|j| j["running"] == true);
    let out = clutch.xx(&["scan", "refresh"]).output();
    assert_eq!(out.code, Some(2), "{out}");
    assert!(
        out.stderr.contains("another model-scan refresh is running"),
        "{out}"
    );
    let later = job(&|j| j["runs"].as_u64().unwrap_or(0) > runs && j["last_result"] == "ok");
    assert!(later["runs"].as_u64().unwrap() > runs);
    let text = proxies(&["status"]).stdout;
    assert!(
        text.contains("last run") && text.contains(": ok (model-scan:"),
        "{text}"
    );
    // One listing per run: runs never overlapped.
    let listings = fake
        .requests()
        .iter()
        .filter(|r| r.path.ends_with("/models"))
        .count() as u64;
    let total = later["runs"].as_u64().unwrap();
    assert!(
        listings <= total + 1,
        "{listings} listings for {total} runs"
    );
}

#[test]
fn a_model_with_many_recorded_failures_drops_in_rank_on_the_next_refresh() {
    let fake = FakeUpstream::start("1 2 3 4 5");
    let listing = json!({"data": [
        openrouter_model("lab/first:free", ("0", "0"), 262_144, 5, &["tools"]),
        openrouter_model("lab/second:free", ("0", "0"), 131_072, 5, &["tools"]),
    ]});
    fake.set_listing(listing, None);
    let clutch = Clutch::new();
    let home = clutch.clutch_home.path();
    configure(
        home,
        &format!(
            "[gateway]\nauto_start = false\nretries = 0\nbreaker_threshold = 1000\n\n[providers.lab]\nbase_url = \"{}/v1\"\nformat = \"chat\"\napi_key = \"k\"\n\n[scan]\nlocal_servers = false\nmax_probes = 0\n",
            fake.url()
        ),
        &[(
            "default",
            "default_tier = \"middle\"\n[tiers.middle]\nmodel = \"lab|lab/first:free\"\ncascade = [\"lab|lab/second:free\"]\n[tiers.big]\nmodel = \"lab|x\"\n[tiers.small]\nmodel = \"lab|y\"\n",
        )],
    );
    let before = refresh(&clutch);
    assert_eq!(
        ranked(&before, "free")[..2],
        ["lab|lab/first:free", "lab|lab/second:free"]
    );
    // Real traffic: the first model fails every call, the cascade's second answers.
    {
        let gateway = TestGateway::start(home);
        for _ in 0..12 {
            fake.script_model(
                "lab/first:free",
                [Reply::Error {
                    status: 500,
                    body: json!({"error": {"message": "overloaded"}}).to_string(),
                    retry_after: None,
                }],
            );
            let response = http_agent()
                .post(&format!("{}/v1/messages", gateway.url))
                .send(
                    json!({"model": "claude-sonnet-4", "max_tokens": 50,
                        "messages": [{"role": "user", "content": "hi"}]})
                    .to_string(),
                )
                .unwrap();
            assert_eq!(response.status(), 200);
        }
        // The ledger is written off the request path: wait for its twelve rows.
        let deadline = Instant::now() + Duration::from_secs(10);
        let db = home.join("state/usage.db");
        while rusqlite::Connection::open(&db)
            .and_then(|c| c.query_row("SELECT COUNT(*) FROM requests", [], |r| r.get::<_, i64>(0)))
            .unwrap_or(0)
            < 12
        {
            assert!(
                Instant::now() < deadline,
                "the ledger never held the 12 requests"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let after = refresh(&clutch);
    assert_eq!(
        ranked(&after, "free")[..2],
        ["lab|lab/second:free", "lab|lab/first:free"],
        "{:#}",
        after["slots"]["free"]
    );
    let first = after["slots"]["free"]["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["model_id"] == "lab/first:free")
        .unwrap();
    assert_eq!(first["live_requests"], 12);
    assert_eq!(first["live_error_rate"], 1.0);
}
