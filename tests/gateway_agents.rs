//! The real agents, launched by `xx` in headless mode, through the in-process gateway to a
//! fake upstream that speaks a different protocol than the agent. Each completes a text turn;
//! Claude Code and Codex also complete a tool turn (the fake asks for a tool call, the agent
//! runs it, the next request carries the result, the fake answers).

mod support;

use std::time::Duration;

use serde_json::json;
use support::fake_upstream::{AGENT_TIMEOUT, FakeUpstream, Protocol, Recorded, Reply};
use support::gateway::{TestGateway, route_everything_to};
use support::{Clutch, agent_available};

struct Setup {
    clutch: Clutch,
    fake: FakeUpstream,
    _gateway: TestGateway,
}

fn setup(upstream_format: &str, answer: &str) -> Setup {
    let clutch = Clutch::new();
    let fake = FakeUpstream::start(answer);
    let home = clutch.clutch_home.path();
    route_everything_to(home, "http://127.0.0.1:9", &fake.url(), upstream_format);
    let gateway = TestGateway::start(home);
    route_everything_to(home, &gateway.url, &fake.url(), upstream_format);
    Setup {
        clutch,
        fake,
        _gateway: gateway,
    }
}

fn expected_protocol(format: &str) -> Protocol {
    match format {
        "chat" => Protocol::Chat,
        "anthropic" => Protocol::Anthropic,
        "responses" => Protocol::Responses,
        _ => Protocol::Gemini,
    }
}

fn text_turn(letter: &str, binary: &str, upstream_format: &str) {
    if !agent_available(binary) {
        return;
    }
    let answer = format!("VIA-GATEWAY-{}", binary.to_uppercase());
    let s = setup(upstream_format, &answer);
    let output = s
        .clutch
        .xx(&[&format!("{letter}Ip"), "-p", "say pong"])
        .env("IS_SANDBOX", "1")
        .timeout(AGENT_TIMEOUT)
        .output();
    let calls: Vec<Recorded> = s.fake.model_calls();
    let call = calls
        .iter()
        .find(|r| r.mentions("say pong"))
        .unwrap_or_else(|| {
            panic!(
                "the upstream never saw the prompt: {:#?}\n{output}",
                s.fake.requests()
            )
        });
    assert_eq!(
        call.protocol,
        expected_protocol(upstream_format),
        "{output}"
    );
    assert!(
        call.header("authorization")
            .is_some_and(|v| v.contains("upstream-secret-key"))
            || call.header("x-api-key") == Some("upstream-secret-key")
            || call.header("x-goog-api-key") == Some("upstream-secret-key"),
        "the provider's own key must be used: {:?}",
        call.headers
    );
    assert!(
        call.model().is_some_and(|m| m.starts_with("fake-")),
        "routed model: {:?}",
        call.model()
    );
    output.assert_ok();
    assert!(
        output.stdout.contains(&answer),
        "the agent must print the answer\n{output}"
    );
}

#[test]
fn claude_code_over_a_chat_upstream() {
    text_turn("c", "claude", "chat");
}

#[test]
fn codex_over_a_chat_upstream() {
    text_turn("x", "codex", "chat");
}

#[test]
fn gemini_cli_over_a_chat_upstream() {
    text_turn("e", "gemini", "chat");
}

#[test]
fn qwen_code_over_an_anthropic_upstream() {
    text_turn("q", "qwen", "anthropic");
}

#[test]
fn opencode_over_a_responses_upstream() {
    text_turn("o", "opencode", "responses");
}

#[test]
fn pi_over_a_gemini_upstream() {
    text_turn("p", "pi", "gemini");
}

#[test]
fn hermes_over_an_anthropic_upstream() {
    text_turn("h", "hermes", "anthropic");
}

/// The fake asks for `tool` with `arguments`; the agent must run it and send the result
/// (containing `expect_in_result`) back, then print the final answer.
fn tool_turn(
    letter: &str,
    binary: &str,
    tool: &str,
    arguments: serde_json::Value,
    expect_in_result: &str,
) {
    if !agent_available(binary) {
        return;
    }
    let s = setup("chat", "FINAL-ANSWER-AFTER-TOOL");
    s.fake.script([Reply::ToolCall {
        name: tool.into(),
        arguments,
    }]);
    let output = s
        .clutch
        .xx(&[&format!("{letter}Ip"), "-p", "use the tool, then say done"])
        .env("IS_SANDBOX", "1")
        .timeout(AGENT_TIMEOUT)
        .output();
    let result = s
        .fake
        .wait_for(Duration::from_secs(1), |r| {
            r.protocol == Protocol::Chat
                && r.body["messages"].as_array().is_some_and(|m| {
                    m.iter().any(|m| {
                        m["role"] == "tool" && m["content"].to_string().contains(expect_in_result)
                    })
                })
        })
        .unwrap_or_else(|| {
            panic!(
                "no request carried the tool result: {:#?}\n{output}",
                s.fake
                    .model_calls()
                    .iter()
                    .map(|r| &r.body["messages"])
                    .collect::<Vec<_>>()
            )
        });
    let tool_message = result.body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["role"] == "tool")
        .unwrap()
        .clone();
    assert_eq!(
        tool_message["tool_call_id"], "call_fake_1",
        "{tool_message}"
    );
    output.assert_ok();
    assert!(
        output.stdout.contains("FINAL-ANSWER-AFTER-TOOL"),
        "{output}"
    );
}

#[test]
fn claude_code_tool_turn_over_a_chat_upstream() {
    tool_turn(
        "c",
        "claude",
        "Bash",
        json!({"command": "echo tool-ran-$((6*7))", "description": "print a marker"}),
        "tool-ran-42",
    );
}

#[test]
fn codex_tool_turn_over_a_chat_upstream() {
    // Codex's `exec` is a freeform tool: the chat upstream sees it as a one-string function.
    tool_turn(
        "x",
        "codex",
        "exec",
        json!({"input": "text('tool-ran-' + (6*7))"}),
        "tool-ran-42",
    );
}
