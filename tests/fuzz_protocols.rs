//! Property tests over the decoders and stream translators: arbitrary bytes, arbitrary JSON,
//! and mutations of real requests and streams never panic, and whatever decodes re-encodes
//! for every upstream. `PROPTEST_CASES` scales the run (CI uses the default; the numbers
//! reported in the issue come from a longer run).

use clutch::gateway::ir::{self, StreamEvent, Text};
use clutch::gateway::proto::{self, Protocol, StreamDecoder as _};
use clutch::gateway::sse;
use proptest::prelude::*;
use serde_json::{Value, json};

const PROTOCOLS: [Protocol; 4] = [
    Protocol::Anthropic,
    Protocol::Chat,
    Protocol::Responses,
    Protocol::Gemini,
];

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        "[a-z_]{0,12}".prop_map(Value::String),
        prop::sample::select(vec![
            "user",
            "assistant",
            "system",
            "tool",
            "model",
            "text",
            "image",
            "tool_use",
            "tool_result",
            "function",
            "function_call",
            "function_call_output",
            "custom_tool_call",
            "message",
            "reasoning",
            "thinking",
            "namespace",
            "additional_tools",
            "input_text",
            "image_url",
            "end_turn",
            "[DONE]"
        ])
        .prop_map(|s| Value::String(s.to_string())),
    ];
    leaf.prop_recursive(5, 64, 8, |inner| {
        let keys = prop::sample::select(vec![
            "model",
            "messages",
            "role",
            "content",
            "type",
            "text",
            "system",
            "tools",
            "tool_choice",
            "input",
            "name",
            "arguments",
            "id",
            "call_id",
            "tool_use_id",
            "tool_calls",
            "function",
            "parameters",
            "input_schema",
            "contents",
            "parts",
            "functionCall",
            "functionResponse",
            "args",
            "response",
            "delta",
            "choices",
            "index",
            "usage",
            "stream",
            "max_tokens",
            "thinking",
            "reasoning",
            "signature",
            "source",
            "data",
            "image_url",
            "url",
            "output",
            "summary",
            "candidates",
            "finishReason",
            "stop_reason",
            "is_error",
            "namespace",
            "instructions",
            "generationConfig",
        ]);
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((keys, inner), 0..8).prop_map(|pairs| Value::Object(
                pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
            )),
        ]
    })
}

/// Real-looking requests for each protocol, which mutations start from.
fn seed_request(protocol: Protocol) -> Value {
    match protocol {
        Protocol::Anthropic => {
            json!({"model": "m", "max_tokens": 5, "system": [{"type": "text", "text": "s"}],
            "tools": [{"name": "t", "input_schema": {"type": "object"}}],
            "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "1", "name": "t", "input": {}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "1", "content": "r"}]}]})
        }
        Protocol::Chat => {
            json!({"model": "m", "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "hi"},
            {"role": "assistant", "tool_calls": [{"id": "1", "type": "function", "function": {"name": "t", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "1", "content": "r"}], "tools": [{"type": "function", "function": {"name": "t"}}]})
        }
        Protocol::Responses => {
            json!({"model": "m", "instructions": "s", "input": [{"type": "message", "role": "user", "content": "hi"},
            {"type": "function_call", "call_id": "1", "name": "t", "arguments": "{}"}, {"type": "function_call_output", "call_id": "1", "output": "r"}],
            "tools": [{"type": "namespace", "name": "ns", "tools": [{"type": "custom", "name": "x"}]}]})
        }
        Protocol::Gemini => json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]},
            {"role": "model", "parts": [{"functionCall": {"name": "t", "args": {}}}]},
            {"role": "user", "parts": [{"functionResponse": {"name": "t", "response": {"output": "r"}}}]}],
            "tools": [{"functionDeclarations": [{"name": "t", "parameters": {"type": "OBJECT"}}]}]}),
    }
}

/// Replace the subtree at a pseudo-random position with `replacement`.
fn mutate(mut value: Value, mut choice: usize, replacement: Value) -> Value {
    fn walk(v: &mut Value, choice: &mut usize, replacement: &Value) -> bool {
        if *choice == 0 {
            *v = replacement.clone();
            return true;
        }
        *choice -= 1;
        match v {
            Value::Object(map) => map.values_mut().any(|c| walk(c, choice, replacement)),
            Value::Array(items) => items.iter_mut().any(|c| walk(c, choice, replacement)),
            _ => false,
        }
    }
    walk(&mut value, &mut choice, &replacement);
    value
}

fn decode_and_reencode(protocol: Protocol, body: &[u8]) {
    if let Ok(request) = proto::decode_request(protocol, body, Some("m")) {
        for target in PROTOCOLS {
            let encoded = proto::encode_request(target, &request, "up");
            assert!(encoded.is_object());
        }
    }
}

/// Push the stream through a decoder for `upstream` and an encoder for every client, in
/// chunks split at `cuts`; errors are fine, panics are not.
fn translate_stream(upstream: Protocol, bytes: &[u8], cuts: &[usize]) {
    let request = clutch::gateway::ir::Request {
        model: "m".into(),
        stream: true,
        stream_usage: true,
        ..Default::default()
    };
    let mut parser = sse::Parser::new();
    let mut decoder = proto::stream_decoder(upstream);
    let mut encoders: Vec<_> = PROTOCOLS
        .iter()
        .map(|p| proto::stream_encoder(*p, &request))
        .collect();
    let mut start = 0;
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    points.push(bytes.len());
    points.sort_unstable();
    let mut events: Vec<StreamEvent> = Vec::new();
    for point in points {
        if point < start {
            continue;
        }
        if let Ok(parsed) = parser.push(&bytes[start..point]) {
            for event in parsed {
                match decoder.event(&event) {
                    Ok(out) => events.extend(out),
                    Err(error) => {
                        for encoder in &mut encoders {
                            encoder.error(&error, &mut Vec::new());
                        }
                    }
                }
            }
        }
        start = point;
    }
    if let Some(event) = parser.finish() {
        let _ = decoder.event(&event).map(|out| events.extend(out));
    }
    events.extend(decoder.finish());
    for encoder in &mut encoders {
        let mut out = Vec::new();
        for event in &events {
            encoder.event(event, &mut out);
        }
        encoder.error(&clutch::gateway::ir::ApiError::upstream("cut"), &mut out);
    }
}

fn event_text() -> impl Strategy<Value = String> {
    let names = prop::sample::select(vec![
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
        "error",
        "response.created",
        "response.output_item.added",
        "response.output_text.delta",
        "response.function_call_arguments.delta",
        "response.custom_tool_call_input.delta",
        "response.output_item.done",
        "response.completed",
        "response.failed",
        "",
    ]);
    (names, json_value(), any::<bool>()).prop_map(|(name, data, done)| {
        let data = if done {
            "[DONE]".to_string()
        } else {
            data.to_string()
        };
        if name.is_empty() {
            format!("data: {data}\n\n")
        } else {
            format!("event: {name}\ndata: {data}\n\n")
        }
    })
}

/// A rich Anthropic request: every block kind and option the typed decoder covers.
fn rich_anthropic_request() -> Value {
    json!({"model": "m", "max_tokens": 5, "temperature": 0.5, "top_p": 1, "stream": true,
        "stop_sequences": ["END"], "system": [{"type": "text", "text": "s", "cache_control": {"type": "ephemeral"}}],
        "tools": [{"name": "t", "description": "d", "input_schema": {"type": "object", "properties": {"a": {"type": "string"}}}},
                  {"type": "web_search_20250305", "name": "web_search"}],
        "tool_choice": {"type": "auto", "disable_parallel_tool_use": true},
        "thinking": {"type": "enabled", "budget_tokens": 1024}, "output_config": {"effort": "high"},
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBOR"}},
                {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "doc"}}]},
            {"role": "assistant", "content": [{"type": "thinking", "thinking": "hmm", "signature": "sig"},
                {"type": "redacted_thinking", "data": "xx"}, {"type": "text", "text": "ok"},
                {"type": "tool_use", "id": "1", "name": "t", "input": {"a": "b"}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "1", "is_error": true,
                "content": [{"type": "text", "text": "r"}, {"type": "image", "source": {"type": "url", "url": "http://x/y.png"}}]},
                {"type": "text", "text": "and also"}]},
            {"role": "system", "content": "mid-conversation note"}]})
}

/// A rich Chat Completions request: every message, part, tool and option the typed decoder
/// covers.
fn rich_chat_request() -> Value {
    json!({"model": "m", "max_completion_tokens": 5.0, "max_tokens": 7, "temperature": 1, "top_p": 0.5,
        "stop": ["END", "STOP"], "stream": true, "stream_options": {"include_usage": true},
        "parallel_tool_calls": false, "reasoning_effort": "high", "reasoning": {"max_tokens": 900},
        "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}},
        "tool_choice": {"type": "function", "function": {"name": "t"}},
        "tools": [{"type": "function", "function": {"name": "t", "description": "d \"quoted\"", "parameters": {"type": "object", "properties": {"b": {"type": "string"}, "a": {"type": "integer"}}}}},
                  {"type": "function", "function": {"name": "bare"}},
                  {"type": "function", "function": {"name": "nulls", "parameters": null}},
                  {"type": "web_search_preview"}],
        "messages": [{"role": "developer", "content": "dev"},
            {"role": "system", "content": [{"type": "text", "text": "s1"}, {"type": "text", "text": "s2"}]},
            {"role": "user", "name": "me", "content": [{"type": "text", "text": "hi\nthere"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBOR", "detail": "low"}},
                {"type": "image_url", "image_url": "http://x/y.png"},
                {"type": "input_audio", "input_audio": {"data": "x", "format": "wav"}}]},
            {"role": "assistant", "reasoning_content": "", "reasoning": "hmm", "content": [{"type": "output_text", "text": "ok"}],
                "tool_calls": [{"id": "1", "type": "function", "function": {"name": "t", "arguments": "{\"a\": 1}"}},
                               {"id": "2", "type": "function", "function": {"name": "bare", "arguments": {"z": [1, 2], "a": null}}},
                               {"id": "3", "type": "function", "function": {"name": "nulls"}}]},
            {"role": "tool", "tool_call_id": "1", "content": "r1"},
            {"role": "tool", "tool_call_id": "2", "content": [{"type": "text", "text": "r2"}]},
            {"role": "function", "name": "3", "content": null},
            {"role": "system", "content": "mid-conversation note"},
            {"role": "assistant", "content": null, "reasoning_content": "deep"},
            {"role": "user", "content": "long ".repeat(80)}]})
}

/// A rich Responses request: every item, part, tool and option the typed decoder covers,
/// in the shapes Codex sends (namespaced and freeform tools, reasoning items, tool outputs).
fn rich_responses_request() -> Value {
    json!({"model": "m", "max_output_tokens": 5.0, "temperature": 1, "top_p": 0.5, "stream": true,
        "parallel_tool_calls": false, "instructions": "be \"brief\"\nplease",
        "reasoning": {"effort": "high", "summary": "auto"}, "store": false, "include": ["reasoning.encrypted_content"],
        "text": {"format": {"type": "json_schema", "name": "x", "schema": {"type": "object"}}},
        "tool_choice": {"type": "function", "name": "t"},
        "tools": [{"type": "function", "name": "t", "description": "d \"quoted\"", "strict": false,
                   "parameters": {"type": "object", "properties": {"b": {"type": "string"}, "a": {"type": "integer"}}}},
                  {"type": "function", "name": "bare"},
                  {"type": "function", "name": "nulls", "parameters": null},
                  {"type": "custom", "name": "apply_patch", "description": "Patch files.",
                   "format": {"type": "grammar", "syntax": "lark", "definition": "start: \"*** Begin Patch\""}},
                  {"type": "custom", "name": "plain"},
                  {"type": "namespace", "name": "agents", "description": "Sub-agents.",
                   "tools": [{"type": "function", "name": "spawn", "parameters": {"type": "object"}},
                             {"type": "custom", "name": "note"}]},
                  {"type": "web_search", "external_web_access": false}],
        "input": [{"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "dev"}]},
            {"role": "system", "content": "sys"},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi\nthere"},
                {"type": "input_image", "image_url": "data:image/png;base64,iVBOR", "detail": "low"},
                {"type": "input_image"},
                {"type": "input_file", "file_id": "f"}]},
            {"type": "additional_tools", "tools": [{"type": "function", "name": "late", "description": "added later"}]},
            {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "first"}, {"type": "summary_text", "text": "second"}],
                "content": null, "encrypted_content": "gAAA"},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "ok", "annotations": []}]},
            {"type": "function_call", "call_id": "1", "name": "t", "arguments": "{\"a\": 1}"},
            {"type": "function_call", "call_id": "2", "namespace": "agents", "name": "spawn", "arguments": {"z": [1, 2]}},
            {"type": "custom_tool_call", "call_id": "3", "name": "apply_patch", "input": "*** Begin Patch\n*** End Patch"},
            {"type": "function_call_output", "call_id": "1", "output": "r1"},
            {"type": "function_call_output", "call_id": "2", "output": [{"type": "input_text", "text": "r2"}]},
            {"type": "custom_tool_call_output", "call_id": "3", "output": null},
            {"type": "web_search_call", "status": "completed", "action": {"type": "search", "query": "q"}},
            {"type": "message", "role": "developer", "content": "mid-conversation note"},
            {"type": "reasoning", "summary": "not a list"},
            {"type": "message", "role": "user", "content": "long ".repeat(80)}]})
}

/// A typed decoder gives up or agrees with its `Value` decoder, never differs; and what it
/// decoded (text kept as the JSON it arrived as) is written for every upstream as the same
/// JSON as what the `Value` path decoded (plain text).
type BothPaths = fn(&[u8]) -> (Option<ir::Request>, Result<ir::Request, ir::ApiError>);

fn typed_and_value_paths_agree(body: &[u8]) {
    paths_agree(clutch::gateway::proto::anthropic::decode_request_both, body)
}

fn paths_agree(both: BothPaths, body: &[u8]) {
    let (typed, value) = both(body);
    if let Some(typed) = typed {
        match value {
            Ok(value) => {
                assert_eq!(typed, value, "{}", String::from_utf8_lossy(body));
                for protocol in PROTOCOLS {
                    let written = |request| {
                        serde_json::from_slice::<Value>(&proto::encode_request_bytes(
                            protocol, request, "m",
                        ))
                        .expect("an encoder writes JSON")
                    };
                    assert_eq!(written(&typed), written(&value), "{protocol:?}");
                }
            }
            Err(err) => panic!(
                "typed path took what the value path refuses ({err:?}): {}",
                String::from_utf8_lossy(body)
            ),
        }
    }
}

/// Chat stream chunks of every kind a provider sends: role, reasoning, text with escapes,
/// parallel tool-call starts and argument pieces, a finish reason, usage.
fn rich_chat_chunks() -> Vec<Value> {
    let chunk = |choices: Value| json!({"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m", "choices": choices});
    vec![
        chunk(
            json!([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": null}]),
        ),
        chunk(json!([{"index": 0, "delta": {"reasoning_content": "think \"hard\"\n"}}])),
        chunk(json!([{"index": 0, "delta": {"reasoning": "more", "content": "Hi \u{e9}\n"}}])),
        chunk(json!([{"index": 0, "delta": {"tool_calls": [
            {"index": 0, "id": "call_a", "type": "function", "function": {"name": "read", "arguments": ""}},
            {"index": 1, "id": "call_b", "type": "function", "function": {"name": "grep", "arguments": "{\"q\""}}]}}])),
        chunk(
            json!([{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": "{\"path\": \"a\"}"}}]}}]),
        ),
        chunk(
            json!([{"index": 0, "delta": {"tool_calls": [{"function": {"arguments": ": 1}"}}]}}]),
        ),
        chunk(json!([{"index": 0, "delta": {}, "finish_reason": "tool_calls"}])),
        json!({"id": "c1", "choices": [], "usage": {"prompt_tokens": 90, "completion_tokens": 9, "prompt_cache_hit_tokens": 30,
            "prompt_tokens_details": {"cached_tokens": 40, "cache_write_tokens": 7},
            "completion_tokens_details": {"reasoning_tokens": 3}}}),
    ]
}

/// The chat stream decoder's borrowing path and its `Value` path give the same events.
fn chunk_paths_agree(chunks: &[String]) {
    let mut typed = proto::chat::Decoder::default();
    let mut value = proto::chat::Decoder::value_only();
    for data in chunks {
        let event = sse::Event {
            name: None,
            data: data.clone(),
            raw: Default::default(),
        };
        assert_eq!(
            typed.event(&event),
            value.event(&event),
            "chunk {data} of {chunks:?}"
        );
        assert_eq!(typed.complete(), value.complete());
    }
    assert_eq!(typed.finish(), value.finish());
}

#[test]
fn the_typed_chat_chunk_decoder_takes_real_chunks() {
    let chunks: Vec<String> = rich_chat_chunks().iter().map(Value::to_string).collect();
    chunk_paths_agree(&chunks);
    let mut decoder = proto::chat::Decoder::default();
    let mut events = Vec::new();
    for data in &chunks {
        let event = sse::Event {
            name: None,
            data: data.clone(),
            raw: Default::default(),
        };
        events.extend(decoder.event(&event).unwrap());
    }
    assert!(
        events
            .iter()
            .any(|e| matches!(e, StreamEvent::ToolCallDelta { index: 1, .. }))
    );
    assert!(
        events
            .iter()
            .any(|e| matches!(e, StreamEvent::TextDelta { text } if text == "Hi é\n"))
    );
}

/// A non-streamed chat answer with every part the typed decoder reads.
fn rich_chat_response() -> Value {
    json!({"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Done \"ok\" \u{e9}\n",
            "reasoning_content": "think", "reasoning": "other",
            "tool_calls": [{"id": "call_a", "type": "function", "function": {"name": "read", "arguments": "{\"path\": \"a\"}"}},
                           {"id": "call_b", "type": "function", "function": {"name": "grep"}}]},
            "finish_reason": "tool_calls"}],
        "usage": {"prompt_tokens": 90, "completion_tokens": 9, "prompt_cache_hit_tokens": 30,
            "prompt_tokens_details": {"cached_tokens": 40, "cache_write_tokens": 7},
            "completion_tokens_details": {"reasoning_tokens": 3}}})
}

/// The chat answer decoder's borrowing path and its `Value` path give the same answer.
fn response_paths_agree(body: &[u8]) {
    assert_eq!(
        proto::chat::decode_response(body),
        proto::chat::decode_response_value(body),
        "{}",
        String::from_utf8_lossy(body)
    );
}

#[test]
fn the_typed_chat_response_decoder_takes_real_answers() {
    let body = rich_chat_response().to_string();
    response_paths_agree(body.as_bytes());
    // Found by the property test: usage details given as a list are no details on both paths.
    let mut listed = rich_chat_response();
    listed["usage"]["completion_tokens_details"] = json!([5]);
    listed["usage"]["prompt_tokens_details"] = json!([40, 7]);
    response_paths_agree(listed.to_string().as_bytes());
    let answer = proto::chat::decode_response(body.as_bytes()).unwrap();
    assert_eq!(answer.parts.len(), 4, "{answer:?}");
    assert_eq!(
        (
            answer.usage.cache_read_tokens,
            answer.usage.cache_write_tokens
        ),
        (40, 7)
    );
    assert_eq!(answer.usage.reasoning_tokens, 3);
}

/// Forwarding replaces the bytes the typed decoder marked as the model's value.
fn model_span_points_at_the_model(body: &[u8], request: &ir::Request) {
    let span = request
        .model_span
        .0
        .clone()
        .expect("the typed path marks the model");
    let written: String = serde_json::from_slice(&body[span]).unwrap();
    assert_eq!(written, request.model);
}

#[test]
fn the_typed_chat_decoder_takes_real_requests() {
    // What a chat agent sends on a long turn: the Claude Code request, as a chat request.
    let claude_code = proto::decode_request(
        Protocol::Anthropic,
        include_bytes!("fixtures/claude_code_main_request.json"),
        None,
    )
    .unwrap();
    let agent_turn = proto::encode_request_bytes(Protocol::Chat, &claude_code, "m");
    for body in [
        rich_chat_request().to_string().into_bytes(),
        seed_request(Protocol::Chat).to_string().into_bytes(),
        agent_turn,
    ] {
        let (typed, value) = proto::chat::decode_request_both(&body);
        let typed = typed.expect("the typed path takes it");
        model_span_points_at_the_model(&body, &typed);
        assert_eq!(typed, value.unwrap());
        paths_agree(proto::chat::decode_request_both, &body);
    }
}

/// Counts from a client or an upstream can be anything a JSON number holds: the largest
/// saturate instead of overflowing (a debug build panicked on `budget + 1024`).
#[test]
fn the_largest_counts_saturate_instead_of_overflowing() {
    let max = u64::MAX;
    let body = json!({"model": "m", "max_tokens": 5, "thinking": {"type": "enabled", "budget_tokens": max},
        "messages": [{"role": "user", "content": "hi"}]})
    .to_string();
    let request = proto::decode_request(Protocol::Anthropic, body.as_bytes(), None).unwrap();
    assert_eq!(
        proto::encode_request(Protocol::Anthropic, &request, "up")["max_tokens"],
        json!(max)
    );
    let answers = [
        (
            Protocol::Anthropic,
            json!({"id": "a", "type": "message", "role": "assistant", "content": [{"type": "text", "text": "hi"}],
            "stop_reason": "end_turn", "usage": {"input_tokens": max, "cache_read_input_tokens": max, "output_tokens": max}}),
        ),
        (
            Protocol::Gemini,
            json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "hi"}]}, "finishReason": "STOP"}],
            "usageMetadata": {"promptTokenCount": max, "candidatesTokenCount": max, "thoughtsTokenCount": max}}),
        ),
    ];
    for (upstream, answer) in answers {
        let response = proto::decode_response(upstream, answer.to_string().as_bytes()).unwrap();
        assert_eq!(
            (response.usage.input_tokens, response.usage.output_tokens),
            (max, max),
            "{upstream:?}"
        );
        for client in PROTOCOLS {
            let written = proto::encode_response(client, &response, &request);
            assert!(written.is_object(), "{upstream:?} -> {client:?}");
        }
    }
}

#[test]
fn the_typed_responses_decoder_takes_real_requests() {
    // What Codex sends: its first request of `codex exec` (0.169.0), and a long tool turn (the
    // Claude Code request as a Responses request).
    let claude_code = proto::decode_request(
        Protocol::Anthropic,
        include_bytes!("fixtures/claude_code_main_request.json"),
        None,
    )
    .unwrap();
    let agent_turn = proto::encode_request_bytes(Protocol::Responses, &claude_code, "m");
    for body in [
        rich_responses_request().to_string().into_bytes(),
        seed_request(Protocol::Responses).to_string().into_bytes(),
        include_bytes!("fixtures/codex_exec_request.json").to_vec(),
        agent_turn,
    ] {
        let (typed, value) = proto::responses::decode_request_both(&body);
        let typed = typed.expect("the typed path takes it");
        model_span_points_at_the_model(&body, &typed);
        assert_eq!(typed, value.unwrap());
        paths_agree(proto::responses::decode_request_both, &body);
    }
}

#[test]
fn the_typed_anthropic_decoder_takes_real_requests() {
    let claude_code = include_str!("fixtures/claude_code_main_request.json");
    for body in [
        rich_anthropic_request().to_string(),
        seed_request(Protocol::Anthropic).to_string(),
        claude_code.to_string(),
    ] {
        let (typed, value) =
            clutch::gateway::proto::anthropic::decode_request_both(body.as_bytes());
        let typed = typed.expect("the typed path takes it");
        model_span_points_at_the_model(body.as_bytes(), &typed);
        assert_eq!(typed, value.unwrap());
    }
}

/// Ways to write `text` as a JSON string: serde_json's, every character as `\u` escapes
/// (surrogate pairs beyond the BMP), and with `/` escaped.
fn spellings(text: &str) -> Vec<String> {
    let mut unicode = String::from("\"");
    for unit in text.encode_utf16() {
        unicode.push_str(&format!("\\u{unit:04x}"));
    }
    unicode.push('"');
    let plain = serde_json::to_string(text).unwrap();
    vec![plain.replace('/', "\\/"), plain, unicode]
}

/// Text kept as JSON reads, measures, joins and writes as the string it stands for.
fn text_behaves_like_its_string(pieces: &[String]) {
    let mut texts = Vec::new();
    for (i, piece) in pieces.iter().enumerate() {
        let spelling = spellings(piece).swap_remove(i % 3);
        let raw = serde_json::value::RawValue::from_string(spelling.clone()).unwrap();
        let text = Text::from_json(raw).expect("a JSON string is text");
        assert_eq!(text.as_str(), piece.as_str(), "{spelling}");
        assert_eq!(text.len(), piece.len(), "{spelling}");
        assert_eq!(text.is_empty(), piece.is_empty());
        assert_eq!(text, Text::from(piece.as_str()));
        assert_eq!(text, Text::quoting(piece));
        let written = serde_json::to_string(&text).unwrap();
        assert_eq!(serde_json::from_str::<String>(&written).unwrap(), *piece);
        texts.push(if i % 4 == 3 {
            Text::from(piece.as_str())
        } else {
            text
        });
    }
    let joined = Text::join(&texts, "\n\"/");
    assert_eq!(joined.as_str(), pieces.join("\n\"/"));
    assert_eq!(joined.len(), pieces.join("\n\"/").len());
    let written = serde_json::to_string(&joined).unwrap();
    assert_eq!(
        serde_json::from_str::<String>(&written).unwrap(),
        pieces.join("\n\"/")
    );
}

#[test]
fn a_lone_surrogate_escape_is_refused_by_both_decoding_paths() {
    for text in [r#""\ud800""#, r#""a\udc00b""#, r#""\ud800\u0041""#] {
        let raw = serde_json::value::RawValue::from_string(text.to_string()).unwrap();
        assert!(Text::from_json(raw).is_none(), "{text}");
        for body in [
            format!(
                r#"{{"model": "m", "max_tokens": 5, "messages": [{{"role": "user", "content": [{{"type": "text", "text": {text}}}]}}]}}"#
            ),
            format!(
                r#"{{"model": "m", "max_tokens": 5, "messages": [{{"role": "user", "content": [{{"type": "tool_result", "tool_use_id": "1", "content": {text}}}]}}]}}"#
            ),
        ] {
            let (typed, value) = proto::anthropic::decode_request_both(body.as_bytes());
            assert!(typed.is_none() && value.is_err(), "{body}");
        }
    }
}

#[test]
fn text_kept_as_json_behaves_like_its_string() {
    let pieces: Vec<String> = [
        "",
        "plain",
        "line\nbreak",
        "tab\tquote\"back\\slash",
        "é ü 中文",
        "emoji 🦀 and 𝄞",
        "\u{1}\u{1f} control",
        "</script>",
        "\u{7f}\u{80}\u{ffff}",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    text_behaves_like_its_string(&pieces);
}

proptest! {
    #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_text_kept_as_json_behaves_like_its_string(pieces in prop::collection::vec(any::<String>(), 0..6)) {
        text_behaves_like_its_string(&pieces);
    }

    #[test]
    fn typed_anthropic_decoding_matches_the_value_path(at in 0usize..80, replacement in json_value(), seed in 0usize..2) {
        let start = if seed == 0 { rich_anthropic_request() } else { seed_request(Protocol::Anthropic) };
        let body = mutate(start, at, replacement).to_string();
        typed_and_value_paths_agree(body.as_bytes());
    }

    #[test]
    fn typed_chat_request_decoding_matches_the_value_path(at in 0usize..120, replacement in json_value(), seed in 0usize..2) {
        let start = if seed == 0 { rich_chat_request() } else { seed_request(Protocol::Chat) };
        let body = mutate(start, at, replacement).to_string();
        paths_agree(proto::chat::decode_request_both, body.as_bytes());
    }

    #[test]
    fn typed_responses_request_decoding_matches_the_value_path(at in 0usize..140, replacement in json_value(), seed in 0usize..2) {
        let start = if seed == 0 { rich_responses_request() } else { seed_request(Protocol::Responses) };
        let body = mutate(start, at, replacement).to_string();
        paths_agree(proto::responses::decode_request_both, body.as_bytes());
    }

    #[test]
    fn typed_chat_chunk_decoding_matches_the_value_path(which in 0usize..8, at in 0usize..24, replacement in json_value(), extra in 0usize..8) {
        let mut chunks: Vec<String> = rich_chat_chunks().iter().map(Value::to_string).collect();
        chunks[which] = mutate(rich_chat_chunks()[which].clone(), at, replacement.clone()).to_string();
        if extra % 2 == 0 {
            chunks.insert(extra, replacement.to_string());
        }
        chunk_paths_agree(&chunks);
    }

    #[test]
    fn typed_chat_response_decoding_matches_the_value_path(at in 0usize..40, replacement in json_value()) {
        let body = mutate(rich_chat_response(), at, replacement).to_string();
        response_paths_agree(body.as_bytes());
    }

    #[test]
    fn arbitrary_bytes_never_panic_a_decoder(bytes in prop::collection::vec(any::<u8>(), 0..512), which in 0usize..4) {
        decode_and_reencode(PROTOCOLS[which], &bytes);
        let _ = proto::decode_response(PROTOCOLS[which], &bytes);
    }

    #[test]
    fn arbitrary_json_never_panics_a_decoder(value in json_value(), which in 0usize..4) {
        let body = value.to_string();
        decode_and_reencode(PROTOCOLS[which], body.as_bytes());
        let _ = proto::decode_response(PROTOCOLS[which], body.as_bytes());
    }

    #[test]
    fn mutated_real_requests_never_panic(which in 0usize..4, at in 0usize..40, replacement in json_value()) {
        let protocol = PROTOCOLS[which];
        let body = mutate(seed_request(protocol), at, replacement).to_string();
        decode_and_reencode(protocol, body.as_bytes());
    }

    #[test]
    fn arbitrary_streams_never_panic_a_translator(
        events in prop::collection::vec(event_text(), 0..12),
        noise in prop::collection::vec(any::<u8>(), 0..64),
        cuts in prop::collection::vec(any::<usize>(), 0..6),
        which in 0usize..4,
    ) {
        let mut bytes = events.concat().into_bytes();
        if noise.len() % 3 == 0 {
            bytes.extend_from_slice(&noise);
        }
        translate_stream(PROTOCOLS[which], &bytes, &cuts);
    }
}
