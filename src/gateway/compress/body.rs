//! Tool results condensed in a request body as it arrived, before it is decoded, routed and
//! translated: Anthropic `tool_result`, chat `role: tool`, Responses `function_call_output`,
//! Gemini `functionResponse`. Each result's text is found by its place in the body and only
//! those bytes are replaced, so everything else (cache_control, thinking signatures,
//! unknown fields) is forwarded byte for byte, and the call each result answers gives the
//! command that produced it.

use std::borrow::Cow;
use std::collections::HashMap;
use std::ops::Range;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::{Condensed, Input, Settings};
use crate::gateway::proto::Protocol;

/// The body with its tool results condensed, and what that saved.
#[derive(Debug)]
pub struct Rewritten {
    pub body: Vec<u8>,
    pub condensed: usize,
    pub tokens_saved: u64,
}

/// One tool result's text in the body.
struct Site<'a> {
    /// The JSON string literal, quotes included.
    raw: &'a RawValue,
    call_id: Option<Cow<'a, str>>,
    /// Gemini matches results to calls by name.
    name: Option<Cow<'a, str>>,
    is_error: bool,
}

/// What a tool call said: its name and, for shell tools, the command.
struct Call {
    name: String,
    command: Option<String>,
}

/// Condense the tool results of `body`; `condense` is [`compress`](super::compress) or a
/// memo of it. `None` when nothing changed (or the body is not what its protocol expects:
/// the decoder then says why).
pub fn rewrite(
    protocol: Protocol,
    body: &[u8],
    settings: &Settings,
    condense: &dyn Fn(&Input, &Settings) -> Option<std::sync::Arc<Condensed>>,
) -> Option<Rewritten> {
    if body.len() < settings.min_bytes || !mentions_results(protocol, body) {
        return None;
    }
    let mut calls: HashMap<String, Call> = HashMap::new();
    let mut sites: Vec<Site> = Vec::new();
    match protocol {
        Protocol::Anthropic => anthropic(body, &mut calls, &mut sites)?,
        Protocol::Chat => chat(body, &mut calls, &mut sites)?,
        Protocol::Responses => responses(body, &mut calls, &mut sites)?,
        Protocol::Gemini => gemini(body, &mut calls, &mut sites)?,
    }
    let mut edits: Vec<(Range<usize>, String)> = Vec::new();
    let mut saved = 0u64;
    for site in &sites {
        if site.raw.get().len() < settings.min_bytes {
            continue;
        }
        let Ok(text) = serde_json::from_str::<Cow<str>>(site.raw.get()) else {
            continue;
        };
        let key = site.call_id.as_deref().or(site.name.as_deref());
        let call = key.and_then(|k| calls.get(k));
        let input = Input {
            output: &text,
            command: call.and_then(|c| c.command.as_deref()),
            tool: call.map(|c| c.name.as_str()),
            is_error: site.is_error,
        };
        let Some(condensed) = condense(&input, settings) else {
            continue;
        };
        saved += condensed.tokens_saved(&text);
        let start = site.raw.get().as_ptr() as usize - body.as_ptr() as usize;
        edits.push((
            start..start + site.raw.get().len(),
            serde_json::Value::from(condensed.text.as_str()).to_string(),
        ));
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
    Some(Rewritten {
        body: out,
        condensed: edits.len(),
        tokens_saved: saved,
    })
}

/// A cheap look before any parsing: most bodies carry no tool result at all.
fn mentions_results(protocol: Protocol, body: &[u8]) -> bool {
    let needle: &[u8] = match protocol {
        Protocol::Anthropic => b"tool_result",
        Protocol::Chat => b"tool_call_id",
        Protocol::Responses => b"_output",
        Protocol::Gemini => b"functionResponse",
    };
    memchr::memmem::find(body, needle).is_some()
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

fn call(name: &str, arguments: Option<&str>) -> Call {
    Call {
        name: name.to_string(),
        command: arguments.and_then(command_of),
    }
}

/// The text sites of a result's content: a string, or the `text` of each text block.
fn text_sites<'a>(
    content: &'a RawValue,
    call_id: Option<Cow<'a, str>>,
    name: Option<Cow<'a, str>>,
    is_error: bool,
    sites: &mut Vec<Site<'a>>,
) {
    #[derive(Deserialize)]
    struct Block<'a> {
        #[serde(rename = "type", borrow, default)]
        kind: Option<Cow<'a, str>>,
        #[serde(borrow, default)]
        text: Option<&'a RawValue>,
    }
    let raw = content.get();
    if raw.starts_with('"') {
        sites.push(Site {
            raw: content,
            call_id,
            name,
            is_error,
        });
    } else if raw.starts_with('[')
        && let Ok(blocks) = serde_json::from_str::<Vec<Block>>(raw)
    {
        for block in blocks {
            let text_kind = block
                .kind
                .as_deref()
                .is_none_or(|k| k == "text" || k == "input_text" || k == "output_text");
            if let Some(text) = block.text.filter(|t| text_kind && t.get().starts_with('"')) {
                sites.push(Site {
                    raw: text,
                    call_id: call_id.clone(),
                    name: name.clone(),
                    is_error,
                });
            }
        }
    }
}

fn anthropic<'a>(
    body: &'a [u8],
    calls: &mut HashMap<String, Call>,
    sites: &mut Vec<Site<'a>>,
) -> Option<()> {
    #[derive(Deserialize)]
    struct Body<'a> {
        #[serde(borrow)]
        messages: Vec<Message<'a>>,
    }
    #[derive(Deserialize)]
    struct Message<'a> {
        #[serde(borrow)]
        content: &'a RawValue,
    }
    #[derive(Deserialize)]
    struct Block<'a> {
        #[serde(rename = "type", borrow)]
        kind: Cow<'a, str>,
        #[serde(borrow, default)]
        id: Option<Cow<'a, str>>,
        #[serde(borrow, default)]
        name: Option<Cow<'a, str>>,
        #[serde(borrow, default)]
        input: Option<&'a RawValue>,
        #[serde(borrow, default)]
        tool_use_id: Option<Cow<'a, str>>,
        #[serde(borrow, default)]
        content: Option<&'a RawValue>,
        #[serde(default)]
        is_error: Option<bool>,
    }
    let parsed: Body = serde_json::from_slice(body).ok()?;
    for message in parsed.messages {
        if !message.content.get().starts_with('[') {
            continue;
        }
        let blocks: Vec<Block> = serde_json::from_str(message.content.get()).ok()?;
        for block in blocks {
            match block.kind.as_ref() {
                "tool_use" | "server_tool_use" => {
                    if let (Some(id), Some(name)) = (block.id, block.name) {
                        calls.insert(id.into_owned(), call(&name, block.input.map(RawValue::get)));
                    }
                }
                "tool_result" => {
                    if let Some(content) = block.content {
                        text_sites(
                            content,
                            block.tool_use_id,
                            None,
                            block.is_error.unwrap_or(false),
                            sites,
                        );
                    }
                }
                _ => {}
            }
        }
    }
    Some(())
}

fn chat<'a>(
    body: &'a [u8],
    calls: &mut HashMap<String, Call>,
    sites: &mut Vec<Site<'a>>,
) -> Option<()> {
    #[derive(Deserialize)]
    struct Body<'a> {
        #[serde(borrow)]
        messages: Vec<Message<'a>>,
    }
    #[derive(Deserialize)]
    struct Message<'a> {
        #[serde(borrow, default)]
        role: Option<Cow<'a, str>>,
        #[serde(borrow, default)]
        content: Option<&'a RawValue>,
        #[serde(borrow, default)]
        tool_call_id: Option<Cow<'a, str>>,
        #[serde(borrow, default)]
        tool_calls: Option<Vec<ToolCall<'a>>>,
    }
    #[derive(Deserialize)]
    struct ToolCall<'a> {
        #[serde(borrow, default)]
        id: Option<Cow<'a, str>>,
        #[serde(borrow, default)]
        function: Option<Function<'a>>,
    }
    #[derive(Deserialize)]
    struct Function<'a> {
        #[serde(borrow, default)]
        name: Option<Cow<'a, str>>,
        #[serde(borrow, default)]
        arguments: Option<Cow<'a, str>>,
    }
    let parsed: Body = serde_json::from_slice(body).ok()?;
    for message in parsed.messages {
        for tool_call in message.tool_calls.unwrap_or_default() {
            if let (Some(id), Some(function)) = (tool_call.id, tool_call.function) {
                let name = function.name.as_deref().unwrap_or_default();
                calls.insert(id.into_owned(), call(name, function.arguments.as_deref()));
            }
        }
        if message.role.as_deref() == Some("tool")
            && let Some(content) = message.content
        {
            text_sites(content, message.tool_call_id, None, false, sites);
        }
    }
    Some(())
}

fn responses<'a>(
    body: &'a [u8],
    calls: &mut HashMap<String, Call>,
    sites: &mut Vec<Site<'a>>,
) -> Option<()> {
    #[derive(Deserialize)]
    struct Body<'a> {
        #[serde(borrow)]
        input: &'a RawValue,
    }
    #[derive(Deserialize)]
    struct Item<'a> {
        #[serde(rename = "type", borrow, default)]
        kind: Option<Cow<'a, str>>,
        #[serde(borrow, default)]
        call_id: Option<Cow<'a, str>>,
        #[serde(borrow, default)]
        name: Option<Cow<'a, str>>,
        #[serde(borrow, default)]
        arguments: Option<Cow<'a, str>>,
        #[serde(borrow, default)]
        input: Option<Cow<'a, str>>,
        #[serde(borrow, default)]
        action: Option<&'a RawValue>,
        #[serde(borrow, default)]
        output: Option<&'a RawValue>,
    }
    let parsed: Body = serde_json::from_slice(body).ok()?;
    if !parsed.input.get().starts_with('[') {
        return Some(());
    }
    let items: Vec<Item> = serde_json::from_str(parsed.input.get()).ok()?;
    for item in items {
        let id = item.call_id.clone();
        match item.kind.as_deref() {
            Some("function_call") | Some("custom_tool_call") => {
                if let Some(id) = id {
                    let name = item.name.as_deref().unwrap_or_default();
                    let mut found = call(name, item.arguments.as_deref());
                    if found.command.is_none() && name == "exec_command" {
                        found.command = item.input.as_deref().map(str::to_string);
                    }
                    calls.insert(id.into_owned(), found);
                }
            }
            Some("local_shell_call") => {
                if let (Some(id), Some(action)) = (id, item.action) {
                    calls.insert(id.into_owned(), call("local_shell", Some(action.get())));
                }
            }
            Some("function_call_output")
            | Some("custom_tool_call_output")
            | Some("local_shell_call_output") => {
                if let Some(output) = item.output {
                    text_sites(output, item.call_id, None, false, sites);
                }
            }
            _ => {}
        }
    }
    Some(())
}

fn gemini<'a>(
    body: &'a [u8],
    calls: &mut HashMap<String, Call>,
    sites: &mut Vec<Site<'a>>,
) -> Option<()> {
    #[derive(Deserialize)]
    struct Body<'a> {
        #[serde(borrow)]
        contents: Vec<Content<'a>>,
    }
    #[derive(Deserialize)]
    struct Content<'a> {
        #[serde(borrow, default)]
        parts: Vec<Part<'a>>,
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Part<'a> {
        #[serde(borrow, default)]
        function_call: Option<FunctionCall<'a>>,
        #[serde(borrow, default)]
        function_response: Option<FunctionResponse<'a>>,
    }
    #[derive(Deserialize)]
    struct FunctionCall<'a> {
        #[serde(borrow, default)]
        id: Option<Cow<'a, str>>,
        #[serde(borrow)]
        name: Cow<'a, str>,
        #[serde(borrow, default)]
        args: Option<&'a RawValue>,
    }
    #[derive(Deserialize)]
    struct FunctionResponse<'a> {
        #[serde(borrow, default)]
        id: Option<Cow<'a, str>>,
        #[serde(borrow)]
        name: Cow<'a, str>,
        #[serde(borrow, default)]
        response: Option<HashMap<Cow<'a, str>, &'a RawValue>>,
    }
    let parsed: Body = serde_json::from_slice(body).ok()?;
    for content in parsed.contents {
        for part in content.parts {
            if let Some(function) = part.function_call {
                // By id when the client sends ids, and by name (the latest call of it).
                let arguments = function.args.map(RawValue::get);
                if let Some(id) = function.id {
                    calls.insert(id.into_owned(), call(&function.name, arguments));
                }
                calls.insert(function.name.to_string(), call(&function.name, arguments));
            }
            if let Some(function) = part.function_response {
                for (field, value) in function.response.unwrap_or_default() {
                    if ["output", "content", "result", "stdout", "llmContent"]
                        .contains(&field.as_ref())
                    {
                        let key = function.id.clone().or(Some(function.name.clone()));
                        text_sites(value, key, Some(function.name.clone()), false, sites);
                    }
                }
            }
        }
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn run(protocol: Protocol, body: &serde_json::Value) -> Option<serde_json::Value> {
        let bytes = serde_json::to_vec(body).unwrap();
        let settings = Settings::default();
        let condense = |input: &Input, settings: &Settings| {
            crate::gateway::compress::compress(input, settings).map(Arc::new)
        };
        let out = rewrite(protocol, &bytes, &settings, &condense)?;
        assert!(out.condensed > 0 && out.tokens_saved > 0);
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
    fn bodies_without_results_are_not_parsed() {
        let body = serde_json::json!({"model": "m", "messages": [{"role": "user", "content": test_output()}]});
        assert!(run(Protocol::Anthropic, &body).is_none());
    }
}
