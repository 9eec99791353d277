//! Tool results condensed in a request after it is decoded and before it is routed and
//! translated: Anthropic `tool_result`, chat `role: tool`, Responses `function_call_output`,
//! Gemini `functionResponse`. The decoded request says where the results are and which call
//! (so which command) each answers; each result's text is then found in the body as it
//! arrived and only those bytes are replaced, so a same-protocol upstream still gets
//! everything else (cache_control, thinking signatures, unknown fields) byte for byte, and
//! the decoded request is patched to match, so translation needs no second decode.

use std::collections::HashMap;
use std::ops::Range;

use serde::Deserialize;

use super::{Condensed, Input, Settings};
use crate::gateway::ir::{Part, Request, Text};

/// The body with its tool results condensed, and what that saved.
#[derive(Debug)]
pub struct Rewritten {
    pub body: Vec<u8>,
    pub condensed: usize,
    pub tokens_saved: u64,
}

/// What a tool call said: its name and, for shell tools, the command.
struct Call {
    name: String,
    command: Option<String>,
}

/// Condense the tool results of `request` (decoded from `body`) in both; `condense` is
/// [`compress`](super::compress) or a memo of it. `None` when nothing changed. A result
/// whose text cannot be found in the body as it was decoded (a client that escapes
/// differently from the decoder) is left as it is.
pub fn rewrite(
    body: &[u8],
    request: &mut Request,
    settings: &Settings,
    condense: &dyn Fn(&Input, &Settings) -> Option<std::sync::Arc<Condensed>>,
) -> Option<Rewritten> {
    // Most requests carry no result long enough: a walk over the parts, nothing more.
    let long = request
        .messages
        .iter()
        .flat_map(|m| &m.parts)
        .any(|part| match part {
            Part::ToolResult(result) => result
                .content
                .iter()
                .any(|p| matches!(p, Part::Text { text } if text.json_len() >= settings.min_bytes)),
            _ => false,
        });
    if !long {
        return None;
    }
    let mut calls: HashMap<String, Call> = HashMap::new();
    for part in request.messages.iter().flat_map(|m| &m.parts) {
        if let Part::ToolCall(call) = part {
            calls.insert(
                call.id.clone(),
                Call {
                    name: call.name.clone(),
                    // A freeform shell tool (Codex's `exec`) sends the command itself.
                    command: command_of(&call.arguments).or_else(|| {
                        let freeform = !call.arguments.trim_start().starts_with('{');
                        let shell = ["exec", "shell", "bash"]
                            .iter()
                            .any(|n| call.name.to_ascii_lowercase().contains(n));
                        (freeform && shell).then(|| call.arguments.clone())
                    }),
                },
            );
        }
    }
    let mut edits: Vec<(Range<usize>, String)> = Vec::new();
    let mut saved = 0u64;
    let mut cursor = 0;
    for part in request.messages.iter_mut().flat_map(|m| &mut m.parts) {
        let Part::ToolResult(result) = part else {
            continue;
        };
        let call = calls.get(&result.call_id);
        for content in &mut result.content {
            let Part::Text { text } = content else {
                continue;
            };
            if text.json_len() < settings.min_bytes {
                continue;
            }
            let literal = text.json_literal();
            let needle = literal.as_bytes();
            // Results come in body order; the search goes on from the last one found.
            let Some(start) = memchr::memmem::find(&body[cursor..], needle)
                .map(|at| cursor + at)
                .or_else(|| memchr::memmem::find(body, needle))
            else {
                continue;
            };
            let output = text.as_str();
            let input = Input {
                output: &output,
                command: call.and_then(|c| c.command.as_deref()),
                tool: call.map(|c| c.name.as_str()),
                is_error: result.is_error,
            };
            let Some(condensed) = condense(&input, settings) else {
                continue;
            };
            if edits
                .iter()
                .any(|(r, _)| r.start < start + needle.len() && start < r.end)
            {
                continue;
            }
            saved += condensed.tokens_saved(&output);
            edits.push((
                start..start + needle.len(),
                serde_json::Value::from(condensed.text.as_str()).to_string(),
            ));
            cursor = start + needle.len();
            drop(literal);
            *text = Text::from(condensed.text.clone());
        }
    }
    if edits.is_empty() {
        return None;
    }
    edits.sort_by_key(|(range, _)| range.start);
    let mut out = Vec::with_capacity(body.len());
    let mut at = 0;
    for (range, text) in &edits {
        out.extend_from_slice(&body[at..range.start]);
        out.extend_from_slice(text.as_bytes());
        at = range.end;
    }
    out.extend_from_slice(&body[at..]);
    // The model's place in the body moves by what changed before it.
    if let Some(span) = request.model_span.0.clone() {
        let shift: isize = edits
            .iter()
            .filter(|(range, _)| range.end <= span.start)
            .map(|(range, text)| text.len() as isize - range.len() as isize)
            .sum();
        request.model_span.0 = (!edits
            .iter()
            .any(|(r, _)| r.start < span.end && span.start < r.end))
        .then(|| {
            span.start.checked_add_signed(shift).unwrap_or(0)
                ..span.end.checked_add_signed(shift).unwrap_or(0)
        });
    }
    Some(Rewritten {
        body: out,
        condensed: edits.len(),
        tokens_saved: saved,
    })
}

/// The command a shell tool ran, from its arguments: `command` or `cmd`, a string or an
/// argv (`["bash", "-lc", "cargo test"]` gives `cargo test`).
fn command_of(arguments: &str) -> Option<String> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Words {
        One(String),
        Many(Vec<String>),
    }
    #[derive(Deserialize)]
    struct Arguments {
        command: Option<Words>,
        cmd: Option<Words>,
    }
    let parsed: Arguments = serde_json::from_str(arguments).ok()?;
    match parsed.command.or(parsed.cmd)? {
        Words::One(command) => Some(command),
        Words::Many(words) => {
            let shell = words.first().is_some_and(|w| {
                ["bash", "sh", "zsh"].contains(&w.rsplit('/').next().unwrap_or(w))
            });
            if shell && words.len() >= 3 {
                words.last().cloned()
            } else {
                Some(words.join(" "))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::proto::{Protocol, decode_request};
    use std::sync::Arc;

    fn run(protocol: Protocol, body: &serde_json::Value) -> Option<serde_json::Value> {
        let bytes = serde_json::to_vec(body).unwrap();
        let settings = Settings::default();
        let condense = |input: &Input, settings: &Settings| {
            crate::gateway::compress::compress(input, settings).map(Arc::new)
        };
        let mut request = decode_request(protocol, &bytes, Some("m")).unwrap();
        let out = rewrite(&bytes, &mut request, &settings, &condense)?;
        assert!(out.condensed > 0 && out.tokens_saved > 0);
        // The patched request is what the new body decodes to.
        let again = decode_request(protocol, &out.body, Some("m")).unwrap();
        assert_eq!(
            serde_json::to_value(&request).unwrap(),
            serde_json::to_value(&again).unwrap()
        );
        if let Some(span) = request.model_span.0.clone() {
            assert_eq!(&out.body[span], b"\"m\"");
        }
        Some(serde_json::from_slice(&out.body).unwrap())
    }

    fn test_output() -> String {
        let mut text = String::from("running 300 tests\n");
        for i in 0..300 {
            text.push_str(&format!("test module::case_{i} ... ok\n"));
        }
        text.push_str("test result: ok. 300 passed; 0 failed\n");
        text
    }

    #[test]
    fn anthropic_results_condense_in_place_and_nothing_else_moves() {
        let body = serde_json::json!({
            "model": "m",
            "messages": [
                {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "Bash", "input": {"command": "cargo test"}}]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "t1", "content": test_output(), "cache_control": {"type": "ephemeral"}},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}}
                ]}
            ]
        });
        let out = run(Protocol::Anthropic, &body).unwrap();
        let result = &out["messages"][1]["content"][0];
        let text = result["content"].as_str().unwrap();
        assert!(text.contains("test result: ok. 300 passed"), "{text}");
        assert!(text.contains("[clutch: 300 passing and 0 ignored tests not listed]"));
        assert_eq!(result["tool_use_id"], "t1");
        assert_eq!(result["cache_control"]["type"], "ephemeral");
        assert_eq!(
            out["messages"][1]["content"][1],
            body["messages"][1]["content"][1]
        );
        assert_eq!(out["messages"][0], body["messages"][0]);
    }

    #[test]
    fn every_protocol_finds_its_results_and_their_commands() {
        let chat = serde_json::json!({"model": "m", "messages": [
            {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "shell", "arguments": "{\"command\":[\"bash\",\"-lc\",\"cargo test\"]}"}}]},
            {"role": "tool", "tool_call_id": "c1", "content": test_output()}
        ]});
        let out = run(Protocol::Chat, &chat).unwrap();
        assert!(
            out["messages"][1]["content"]
                .as_str()
                .unwrap()
                .contains("tests not listed")
        );
        let responses = serde_json::json!({"model": "m", "input": [
            {"type": "function_call", "call_id": "r1", "name": "shell", "arguments": "{\"command\":[\"cargo\",\"test\"]}"},
            {"type": "function_call_output", "call_id": "r1", "output": test_output()}
        ]});
        let out = run(Protocol::Responses, &responses).unwrap();
        assert!(
            out["input"][1]["output"]
                .as_str()
                .unwrap()
                .contains("tests not listed")
        );
        let gemini = serde_json::json!({"contents": [
            {"role": "model", "parts": [{"functionCall": {"name": "run_shell_command", "args": {"command": "cargo test"}}}]},
            {"role": "user", "parts": [{"functionResponse": {"name": "run_shell_command", "response": {"output": test_output()}}}]}
        ]});
        let out = run(Protocol::Gemini, &gemini).unwrap();
        let text = out["contents"][1]["parts"][0]["functionResponse"]["response"]["output"]
            .as_str()
            .unwrap();
        assert!(text.contains("tests not listed"));
        assert_eq!(
            command_of("{\"cmd\":\"git status\"}").as_deref(),
            Some("git status")
        );
    }

    #[test]
    fn requests_without_a_long_result_are_left_alone() {
        let body = serde_json::json!({"model": "m", "messages": [{"role": "user", "content": test_output()}]});
        assert!(run(Protocol::Anthropic, &body).is_none());
    }
}
