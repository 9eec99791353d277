//! The real agent CLIs, launched by `xx` in headless mode on the proxy route, with the gateway
//! URL pointed at a scripted fake upstream that speaks each agent's protocol. Each test checks
//! that the agent's request arrived (path, protocol, model) and that the agent printed the
//! fake's answer; Claude Code and Codex also continue and resume by id.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::fake_upstream::{AGENT_TIMEOUT, FakeUpstream, Protocol};
use support::{Clutch, agent_available};

struct Case {
    letter: &'static str,
    binary: &'static str,
    profile: &'static str,
    path_suffix: &'static str,
    protocol: Protocol,
    model: Option<&'static str>,
    /// The credential the agent presents; Hermes' environment-only route cannot carry a key.
    credential: &'static str,
}

/// Launch `xx <letter>Ip -p …` and check the request and the printed answer.
fn headless_turn(case: &Case) {
    if !agent_available(case.binary) {
        return;
    }
    let answer = format!("PONG-{}-7F3A", case.binary.to_uppercase());
    let fake = FakeUpstream::start(&answer);
    let clutch = Clutch::new().gateway_at(&fake.url());
    let code = format!("{}Ip", case.letter);
    let output = clutch
        .xx(&[&code, "-p", "say pong"])
        .env("IS_SANDBOX", "1")
        .timeout(AGENT_TIMEOUT)
        .output();
    let prefix = format!("/p/{}/", case.profile);
    let call = fake
        .model_calls()
        .into_iter()
        .find(|r| {
            r.path.starts_with(&prefix)
                && r.path
                    .split('?')
                    .next()
                    .unwrap()
                    .ends_with(case.path_suffix)
        })
        .unwrap_or_else(|| {
            panic!(
                "no {} request under {prefix}: {:#?}\n{output}",
                case.path_suffix,
                fake.requests()
            )
        });
    assert_eq!(call.protocol, case.protocol, "{output}");
    if let Some(model) = case.model {
        assert_eq!(call.model().as_deref(), Some(model), "{output}");
    }
    assert!(
        call.mentions("say pong"),
        "the prompt must reach the upstream: {}",
        call.body
    );
    let key = case.credential;
    let presented = ["authorization", "x-api-key", "x-goog-api-key"]
        .iter()
        .filter_map(|h| call.header(h))
        .any(|v| v.trim_start_matches("Bearer ") == key);
    assert!(
        presented,
        "the gateway key must arrive as the agent's credential: {:?}",
        call.headers
    );
    output.assert_ok();
    assert!(
        output.stdout.contains(&answer),
        "the agent must print the fake's answer\n{output}"
    );
}

#[test]
fn claude_code_headless_turn() {
    headless_turn(&Case {
        letter: "c",
        binary: "claude",
        profile: "claude",
        path_suffix: "/v1/messages",
        protocol: Protocol::Anthropic,
        model: None,
        credential: clutch::config::LOOPBACK_KEY,
    });
}

#[test]
fn codex_headless_turn() {
    headless_turn(&Case {
        letter: "x",
        binary: "codex",
        profile: "codex",
        path_suffix: "/v1/responses",
        protocol: Protocol::Responses,
        model: None,
        credential: clutch::config::LOOPBACK_KEY,
    });
}

#[test]
fn gemini_cli_headless_turn() {
    headless_turn(&Case {
        letter: "e",
        binary: "gemini",
        profile: "gemini",
        path_suffix: ":streamGenerateContent",
        protocol: Protocol::Gemini,
        model: None,
        credential: clutch::config::LOOPBACK_KEY,
    });
}

#[test]
fn qwen_code_headless_turn() {
    headless_turn(&Case {
        letter: "q",
        binary: "qwen",
        profile: "qwen",
        path_suffix: "/v1/chat/completions",
        protocol: Protocol::Chat,
        model: Some("auto"),
        credential: clutch::config::LOOPBACK_KEY,
    });
}

#[test]
fn opencode_headless_turn() {
    headless_turn(&Case {
        letter: "o",
        binary: "opencode",
        profile: "opencode",
        path_suffix: "/v1/chat/completions",
        protocol: Protocol::Chat,
        model: Some("auto"),
        credential: clutch::config::LOOPBACK_KEY,
    });
}

#[test]
fn pi_headless_turn() {
    headless_turn(&Case {
        letter: "p",
        binary: "pi",
        profile: "pi",
        path_suffix: "/v1/chat/completions",
        protocol: Protocol::Chat,
        model: Some("auto"),
        credential: clutch::config::LOOPBACK_KEY,
    });
}

#[test]
fn hermes_headless_turn() {
    headless_turn(&Case {
        letter: "h",
        binary: "hermes",
        profile: "hermes",
        path_suffix: "/v1/chat/completions",
        protocol: Protocol::Chat,
        model: Some("auto"),
        credential: "no-key-required",
    });
}

#[test]
fn claude_code_tier_model_reaches_the_upstream() {
    if !agent_available("claude") {
        return;
    }
    let fake = FakeUpstream::start("PONG-TIER");
    let clutch = Clutch::new().config(&format!(
        "[gateway]\nurl = \"{}\"\nauto_start = false\n[tiers]\nd = \"deepseek/deepseek-v4-flash\"\n",
        fake.url()
    ));
    let output = clutch
        .xx(&["cIpd", "say", "pong"])
        .env("IS_SANDBOX", "1")
        .timeout(AGENT_TIMEOUT)
        .output();
    output.assert_ok();
    let call = fake
        .model_calls()
        .into_iter()
        .find(|r| r.mentions("say pong"))
        .unwrap_or_else(|| panic!("{output}"));
    assert_eq!(call.model().as_deref(), Some("deepseek/deepseek-v4-flash"));
    assert!(output.stdout.contains("PONG-TIER"), "{output}");
}

/// The JSON line of a `--output-format json` / `--json` run that carries the session id.
fn find_id(stdout: &str, keys: &[&str]) -> String {
    for line in stdout.lines() {
        let Ok(value) = serde_json::from_str::<Value>(line.trim()) else {
            continue;
        };
        for key in keys {
            if let Some(id) = value.get(*key).and_then(Value::as_str) {
                return id.to_string();
            }
        }
    }
    panic!("no {keys:?} in output:\n{stdout}");
}

/// Three turns: new (learning the session id), continue, resume by id. Each later request
/// must carry the earlier prompts as history.
fn continue_and_resume(letter: &str, binary: &str, json_args: &[&str], id_keys: &[&str]) {
    if !agent_available(binary) {
        return;
    }
    let fake = FakeUpstream::start("ACK");
    let clutch = Clutch::new().gateway_at(&fake.url());
    let run = |code: String, extra: &[&str]| {
        let mut args = vec![code.as_str()];
        args.extend_from_slice(extra);
        clutch
            .xx(&args)
            .env("IS_SANDBOX", "1")
            .timeout(AGENT_TIMEOUT)
            .output()
    };
    let mut first_args = vec!["-p", "first turn alpha", "--"];
    first_args.extend_from_slice(json_args);
    let first = run(format!("{letter}Ip"), &first_args);
    first.assert_ok();
    let id = find_id(&first.stdout, id_keys);

    let second = run(format!("{letter}Cp"), &["-p", "second turn bravo"]);
    second.assert_ok();
    let call = fake
        .wait_for(Duration::from_secs(1), |r| {
            r.mentions("second turn bravo") && r.protocol != Protocol::Other
        })
        .unwrap_or_else(|| panic!("no second turn request\n{second}"));
    assert!(
        call.mentions("first turn alpha"),
        "continue must carry the history: {}",
        call.body
    );

    // Resume the first session by id: its history has the first turn but may lack the second
    // only if the agent forks; either way the first turn must be there.
    let third = run(
        format!("{letter}Rp"),
        &["-s", &id, "-p", "third turn charlie"],
    );
    third.assert_ok();
    let call = fake
        .wait_for(Duration::from_secs(1), |r| {
            r.mentions("third turn charlie") && r.protocol != Protocol::Other
        })
        .unwrap_or_else(|| panic!("no third turn request\n{third}"));
    assert!(
        call.mentions("first turn alpha"),
        "resume by id must carry the history: {}",
        call.body
    );
    assert!(third.stdout.contains("ACK"), "{third}");
}

#[test]
fn claude_code_continue_and_resume_by_id() {
    continue_and_resume("c", "claude", &["--output-format", "json"], &["session_id"]);
}

#[test]
fn codex_continue_and_resume_by_id() {
    continue_and_resume("x", "codex", &["--json"], &["thread_id"]);
}
