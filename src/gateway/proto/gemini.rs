//! Gemini (`/v1beta/models/{model}:generateContent` and `:streamGenerateContent`): what
//! Gemini CLI speaks. The model is in the path, function calls may carry no id (ids are made
//! up and matched back by name), and parameter schemas may use the upper-case OpenAPI types.

use serde_json::{Map, Value, json};

use super::json::{self, arguments_object};
use super::{StreamDecoder, StreamEncoder};
use crate::gateway::ir::{
    self, ApiError, ErrorKind, ImageSource, Message, Part, Reasoning, Role, StopReason,
    StreamEvent, Tool, ToolCall, ToolChoice, ToolKind, ToolResult, Usage,
};
use crate::gateway::sse;

// ---------------------------------------------------------------- requests

pub fn decode_request(body: &[u8], model: &str) -> Result<ir::Request, ApiError> {
    let v = json::parse(body)?;
    let config = v.get("generationConfig").cloned().unwrap_or(Value::Null);
    let mut request = ir::Request {
        model: model.to_string(),
        max_tokens: json::u64_at(&config, "maxOutputTokens", "generationConfig.")?,
        temperature: json::f64_at(&config, "temperature", "generationConfig.")?,
        top_p: json::f64_at(&config, "topP", "generationConfig.")?,
        stop: json::strings_at(&config, "stopSequences", "generationConfig.")?,
        stream_usage: true,
        ..Default::default()
    };
    if let Some(system) = v.get("systemInstruction").or(v.get("system_instruction")) {
        for part in system["parts"].as_array().map(Vec::as_slice).unwrap_or(&[]) {
            if let Some(text) = part["text"].as_str() {
                request.system.push(text.into());
            }
        }
    }
    // Calls have no ids in older Gemini turns: number them and answer by name, oldest first.
    let mut open_calls: Vec<(String, String)> = Vec::new();
    let mut counter = 0usize;
    for (i, content) in json::array_at(&v, "contents", "")?.iter().enumerate() {
        let path = format!("contents[{i}].");
        let role = match json::str_at(content, "role", &path)? {
            Some("model") => Role::Assistant,
            _ => Role::User,
        };
        let mut parts = Vec::new();
        for (j, part) in json::array_at(content, "parts", &path)?.iter().enumerate() {
            let at = format!("{path}parts[{j}].");
            if let Some(text) = json::str_at(part, "text", &at)? {
                if part["thought"].as_bool() == Some(true) {
                    parts.push(Part::Thinking {
                        text: text.into(),
                        signature: part["thoughtSignature"].as_str().map(str::to_string),
                    });
                } else {
                    parts.push(Part::Text { text: text.into() });
                }
            } else if let Some(data) = part.get("inlineData").or(part.get("inline_data")) {
                parts.push(Part::Image {
                    source: ImageSource::Base64 {
                        media_type: data["mimeType"]
                            .as_str()
                            .or(data["mime_type"].as_str())
                            .unwrap_or("image/png")
                            .to_string(),
                        data: json::req_str(data, "data", &format!("{at}inlineData."))?.to_string(),
                    },
                });
            } else if let Some(file) = part.get("fileData") {
                parts.push(Part::Image {
                    source: ImageSource::Url {
                        url: json::req_str(file, "fileUri", &format!("{at}fileData."))?.to_string(),
                    },
                });
            } else if let Some(call) = part.get("functionCall") {
                let name = json::req_str(call, "name", &format!("{at}functionCall."))?.to_string();
                let id = call["id"].as_str().map_or_else(
                    || {
                        counter += 1;
                        format!("call_{counter}")
                    },
                    str::to_string,
                );
                open_calls.push((id.clone(), name.clone()));
                parts.push(Part::ToolCall(ToolCall {
                    id,
                    name,
                    arguments: call
                        .get("args")
                        .map_or_else(|| "{}".into(), Value::to_string),
                    kind: ToolKind::Function,
                    signature: part["thoughtSignature"].as_str().map(str::to_string),
                }));
            } else if let Some(response) = part.get("functionResponse") {
                let name =
                    json::req_str(response, "name", &format!("{at}functionResponse."))?.to_string();
                let call_id = match response["id"].as_str() {
                    Some(id) => {
                        open_calls.retain(|(open, _)| open != id);
                        id.to_string()
                    }
                    None => match open_calls.iter().position(|(_, n)| *n == name) {
                        Some(at) => open_calls.remove(at).0,
                        None => format!("call_{name}"),
                    },
                };
                let body = &response["response"];
                let (text, is_error) = match (
                    body.get("error"),
                    body.get("output").or(body.get("content")),
                ) {
                    (Some(error), _) => (value_text(error), true),
                    (None, Some(output)) => (value_text(output), false),
                    (None, None) => (body.to_string(), false),
                };
                parts.push(Part::ToolResult(ToolResult {
                    call_id,
                    name: Some(name),
                    content: vec![Part::Text { text: text.into() }],
                    is_error,
                }));
            }
        }
        request.messages.push(Message { role, parts });
    }
    for tool in json::array_at(&v, "tools", "")? {
        for (i, decl) in tool["functionDeclarations"]
            .as_array()
            .or(tool["function_declarations"].as_array())
            .map(Vec::as_slice)
            .unwrap_or(&[])
            .iter()
            .enumerate()
        {
            let at = format!("tools.functionDeclarations[{i}].");
            let parameters = match (decl.get("parametersJsonSchema"), decl.get("parameters")) {
                (Some(schema), _) => schema.clone(),
                (None, Some(schema)) => lower_types(schema),
                (None, None) => json!({"type": "object", "properties": {}}),
            };
            request.tools.push(Tool {
                name: json::req_str(decl, "name", &at)?.to_string(),
                description: json::str_at(decl, "description", &at)?.map(Into::into),
                parameters: parameters.into(),
                kind: ToolKind::Function,
                namespace: None,
            });
        }
    }
    if let Some(mode) = v
        .pointer("/toolConfig/functionCallingConfig/mode")
        .and_then(Value::as_str)
    {
        let allowed = v
            .pointer("/toolConfig/functionCallingConfig/allowedFunctionNames/0")
            .and_then(Value::as_str);
        request.tool_choice = Some(match (mode, allowed) {
            ("NONE", _) => ToolChoice::None,
            ("ANY", Some(name)) => ToolChoice::Tool(name.to_string()),
            ("ANY", None) => ToolChoice::Required,
            _ => ToolChoice::Auto,
        });
    }
    if let Some(thinking) = config.get("thinkingConfig") {
        let budget = thinking["thinkingBudget"]
            .as_i64()
            .filter(|b| *b > 0)
            .map(|b| b as u64);
        let effort = thinking["thinkingLevel"].as_str().map(str::to_lowercase);
        if budget.is_some() || effort.is_some() {
            request.reasoning = Some(Reasoning {
                effort,
                budget_tokens: budget,
            });
        }
    }
    if let Some(schema) = config.get("responseJsonSchema") {
        request.json_schema = Some(schema.clone());
    } else if let Some(schema) = config.get("responseSchema") {
        request.json_schema = Some(lower_types(schema));
    }
    Ok(request)
}

fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// OpenAPI-style `"type": "STRING"` to JSON Schema's `"string"`, recursively.
pub fn lower_types(schema: &Value) -> Value {
    match schema {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    let v = match (k.as_str(), v) {
                        ("type", Value::String(t)) => json!(t.to_lowercase()),
                        _ => lower_types(v),
                    };
                    (k.clone(), v)
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(lower_types).collect()),
        other => other.clone(),
    }
}

/// What Gemini accepts in place of a function call's thought signature when the call has
/// none: it came from another provider, or through a client whose protocol has nowhere to keep
/// it. Gemini 3 refuses such a history with a 400 ("Function call is missing a
/// thought_signature") otherwise; Google documents this value for exactly this case.
const SKIP_SIGNATURE_VALIDATION: &str = "skip_thought_signature_validator";

/// Whether `model` checks the thought signatures of the function calls in a history.
fn requires_call_signatures(model: &str) -> bool {
    let model = model.rsplit('/').next().unwrap_or(model);
    model.starts_with("gemini-") && !model.starts_with("gemini-1") && !model.starts_with("gemini-2")
}

/// A `functionCall` part, with the call's thought signature (or, for a model that insists on
/// one, the documented stand-in).
fn function_call_part(call: &ir::ToolCall, signature_required: bool) -> Value {
    let args = if call.kind == ToolKind::Custom {
        json!({"input": call.arguments})
    } else {
        arguments_object(&call.arguments)
    };
    let mut part = json!({"functionCall": {"id": call.id, "name": call.name, "args": args}});
    match &call.signature {
        Some(signature) => part["thoughtSignature"] = json!(signature),
        None if signature_required => part["thoughtSignature"] = json!(SKIP_SIGNATURE_VALIDATION),
        None => {}
    }
    part
}

pub fn encode_request(request: &ir::Request, model: &str) -> Value {
    let signature_required = requires_call_signatures(model);
    let mut out = Map::new();
    let mut contents: Vec<Value> = Vec::new();
    for message in &request.messages {
        let role = if message.role == Role::Assistant {
            "model"
        } else {
            "user"
        };
        let mut parts: Vec<Value> = Vec::new();
        for part in &message.parts {
            match part {
                Part::Text { text } if message.role == Role::System => {
                    parts.push(json!({"text": format!("[system] {text}")}))
                }
                Part::Text { text } => parts.push(json!({"text": text})),
                Part::Image {
                    source: ImageSource::Base64 { media_type, data },
                } => parts.push(json!({"inlineData": {"mimeType": media_type, "data": data}})),
                Part::Image {
                    source: ImageSource::Url { url },
                } => parts.push(json!({"fileData": {"fileUri": url}})),
                Part::Thinking { text, signature } => {
                    let mut p = json!({"text": text, "thought": true});
                    if let Some(s) = signature {
                        p["thoughtSignature"] = json!(s);
                    }
                    parts.push(p);
                }
                Part::RedactedThinking { .. } => {}
                Part::ToolCall(call) => parts.push(function_call_part(call, signature_required)),
                Part::ToolResult(result) => {
                    let name = result
                        .name
                        .clone()
                        .unwrap_or_else(|| result.call_id.clone());
                    let key = if result.is_error { "error" } else { "output" };
                    parts.push(json!({"functionResponse": {"id": result.call_id, "name": name, "response": {key: result.text()}}}));
                }
            }
        }
        if parts.is_empty() {
            continue;
        }
        match contents.last_mut() {
            Some(last) if last["role"] == role => last["parts"]
                .as_array_mut()
                .expect("built as array")
                .extend(parts),
            _ => contents.push(json!({"role": role, "parts": parts})),
        }
    }
    out.insert("contents".into(), Value::Array(contents));
    if !request.system.is_empty() {
        let parts: Vec<Value> = request.system.iter().map(|t| json!({"text": t})).collect();
        out.insert("systemInstruction".into(), json!({"parts": parts}));
    }
    if !request.tools.is_empty() {
        let decls: Vec<Value> = request
            .tools
            .iter()
            .map(|t| json!({"name": t.name, "description": t.description.clone().unwrap_or_default(), "parametersJsonSchema": t.parameters}))
            .collect();
        out.insert("tools".into(), json!([{"functionDeclarations": decls}]));
    }
    if let Some(choice) = &request.tool_choice {
        let config = match choice {
            ToolChoice::Auto => json!({"mode": "AUTO"}),
            ToolChoice::None => json!({"mode": "NONE"}),
            ToolChoice::Required => json!({"mode": "ANY"}),
            ToolChoice::Tool(name) => json!({"mode": "ANY", "allowedFunctionNames": [name]}),
        };
        out.insert(
            "toolConfig".into(),
            json!({"functionCallingConfig": config}),
        );
    }
    let mut config = Map::new();
    if let Some(max) = request.max_tokens {
        config.insert("maxOutputTokens".into(), json!(max));
    }
    if let Some(t) = request.temperature {
        config.insert("temperature".into(), json!(t));
    }
    if let Some(p) = request.top_p {
        config.insert("topP".into(), json!(p));
    }
    if !request.stop.is_empty() {
        config.insert("stopSequences".into(), json!(request.stop));
    }
    if let Some(reasoning) = &request.reasoning {
        config.insert(
            "thinkingConfig".into(),
            json!({"thinkingBudget": reasoning.budget_or_from_effort(), "includeThoughts": true}),
        );
    }
    if let Some(schema) = &request.json_schema {
        config.insert("responseMimeType".into(), json!("application/json"));
        config.insert("responseJsonSchema".into(), schema.clone());
    }
    if !config.is_empty() {
        out.insert("generationConfig".into(), Value::Object(config));
    }
    Value::Object(out)
}

// ---------------------------------------------------------------- responses

fn stop_from(reason: &str) -> StopReason {
    match reason {
        "MAX_TOKENS" => StopReason::MaxTokens,
        "SAFETY" | "RECITATION" | "PROHIBITED_CONTENT" | "BLOCKLIST" | "SPII" => {
            StopReason::ContentFilter
        }
        _ => StopReason::EndTurn,
    }
}

fn stop_name(stop: StopReason) -> &'static str {
    match stop {
        StopReason::MaxTokens => "MAX_TOKENS",
        StopReason::ContentFilter => "SAFETY",
        _ => "STOP",
    }
}

fn usage_from(u: &Value) -> Usage {
    let n = |k: &str| u.get(k).and_then(Value::as_u64).unwrap_or(0);
    Usage {
        input_tokens: n("promptTokenCount"),
        output_tokens: n("candidatesTokenCount").saturating_add(n("thoughtsTokenCount")),
        cache_read_tokens: n("cachedContentTokenCount"),
        cache_write_tokens: 0,
        reasoning_tokens: n("thoughtsTokenCount"),
    }
}

fn usage_wire(u: &Usage) -> Value {
    json!({"promptTokenCount": u.input_tokens, "candidatesTokenCount": u.output_tokens.saturating_sub(u.reasoning_tokens),
        "thoughtsTokenCount": u.reasoning_tokens, "cachedContentTokenCount": u.cache_read_tokens,
        "totalTokenCount": u.input_tokens.saturating_add(u.output_tokens)})
}

/// Parts of one candidate, with made-up ids for calls that have none.
fn candidate_parts(candidate: &Value, counter: &mut usize) -> Vec<Part> {
    let mut parts = Vec::new();
    for part in candidate
        .pointer("/content/parts")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
    {
        if let Some(text) = part["text"].as_str() {
            if part["thought"].as_bool() == Some(true) {
                parts.push(Part::Thinking {
                    text: text.into(),
                    signature: part["thoughtSignature"].as_str().map(str::to_string),
                });
            } else if !text.is_empty() {
                parts.push(Part::Text { text: text.into() });
            }
        } else if let Some(call) = part.get("functionCall") {
            *counter += 1;
            parts.push(Part::ToolCall(ToolCall {
                id: call["id"]
                    .as_str()
                    .map_or_else(|| format!("call_{counter}"), str::to_string),
                name: call["name"].as_str().unwrap_or_default().to_string(),
                arguments: call
                    .get("args")
                    .map_or_else(|| "{}".into(), Value::to_string),
                kind: ToolKind::Function,
                signature: part["thoughtSignature"].as_str().map(str::to_string),
            }));
        }
    }
    parts
}

pub fn decode_response(body: &[u8]) -> Result<ir::Response, ApiError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::upstream(format!("upstream answered with invalid JSON: {e}")))?;
    if let Some(error) = v.get("error") {
        return Err(decode_error_value(error));
    }
    let candidate = v
        .pointer("/candidates/0")
        .ok_or_else(|| ApiError::upstream("upstream answered with no candidates"))?;
    let mut counter = 0;
    let parts = candidate_parts(candidate, &mut counter);
    let mut stop = stop_from(candidate["finishReason"].as_str().unwrap_or("STOP"));
    if parts.iter().any(|p| matches!(p, Part::ToolCall(_))) && stop == StopReason::EndTurn {
        stop = StopReason::ToolUse;
    }
    Ok(ir::Response {
        id: v["responseId"].as_str().unwrap_or("gemini").to_string(),
        model: v["modelVersion"].as_str().unwrap_or_default().to_string(),
        parts,
        stop,
        usage: usage_from(&v["usageMetadata"]),
    })
}

fn encode_parts(parts: &[Part]) -> Vec<Value> {
    parts
        .iter()
        .filter_map(|p| match p {
            Part::Text { text } => Some(json!({"text": text})),
            Part::Thinking { text, signature } => {
                let mut v = json!({"text": text, "thought": true});
                if let Some(s) = signature {
                    v["thoughtSignature"] = json!(s);
                }
                Some(v)
            }
            Part::ToolCall(call) => Some(function_call_part(call, false)),
            _ => None,
        })
        .collect()
}

pub fn encode_response(response: &ir::Response) -> Value {
    json!({
        "candidates": [{"content": {"role": "model", "parts": encode_parts(&response.parts)},
            "finishReason": stop_name(response.stop), "index": 0}],
        "usageMetadata": usage_wire(&response.usage),
        "modelVersion": response.model,
        "responseId": response.id,
    })
}

// ---------------------------------------------------------------- errors

fn status_name(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::InvalidRequest | ErrorKind::RequestTooLarge => "INVALID_ARGUMENT",
        ErrorKind::Authentication => "UNAUTHENTICATED",
        ErrorKind::Permission => "PERMISSION_DENIED",
        ErrorKind::NotFound => "NOT_FOUND",
        ErrorKind::RateLimit => "RESOURCE_EXHAUSTED",
        ErrorKind::Overloaded => "UNAVAILABLE",
        ErrorKind::Timeout => "DEADLINE_EXCEEDED",
        ErrorKind::Api => "INTERNAL",
    }
}

pub fn error_body(error: &ApiError) -> Value {
    json!({"error": {"code": super::error_status(super::Protocol::Gemini, error), "message": error.message, "status": status_name(error.kind)}})
}

pub fn stream_error(error: &ApiError, out: &mut Vec<u8>) {
    sse::write_json(out, None, &error_body(error));
}

fn decode_error_value(error: &Value) -> ApiError {
    let status = error["code"].as_u64().unwrap_or(500) as u16;
    let kind = ErrorKind::from_status(status);
    ApiError {
        status: kind.status(),
        kind,
        message: error["message"]
            .as_str()
            .unwrap_or("upstream error")
            .to_string(),
        retry_after: None,
    }
}

// ---------------------------------------------------------------- streams

/// Upstream Gemini SSE -> IR. Each chunk is a whole response fragment.
#[derive(Default)]
pub struct Decoder {
    started: bool,
    calls: usize,
    saw_tool: bool,
    complete: bool,
}

impl StreamDecoder for Decoder {
    fn event(&mut self, event: &sse::Event) -> Result<Vec<StreamEvent>, ApiError> {
        let data = event.data.trim();
        if data.is_empty() || data == "[DONE]" {
            return Ok(Vec::new());
        }
        let v: Value = serde_json::from_str(data)
            .map_err(|e| ApiError::upstream(format!("upstream sent a malformed chunk: {e}")))?;
        if let Some(error) = v.get("error") {
            self.complete = true;
            return Err(decode_error_value(error));
        }
        let mut out = Vec::new();
        if !self.started {
            self.started = true;
            out.push(StreamEvent::Start {
                id: v["responseId"].as_str().unwrap_or("gemini").to_string(),
                model: v["modelVersion"].as_str().unwrap_or_default().to_string(),
            });
        }
        let Some(candidate) = v.pointer("/candidates/0") else {
            if let Some(usage) = v.get("usageMetadata") {
                out.push(StreamEvent::Usage(usage_from(usage)));
            }
            return Ok(out);
        };
        let first_call = self.calls;
        for part in candidate_parts(candidate, &mut self.calls) {
            match part {
                Part::Text { text } => out.push(StreamEvent::TextDelta {
                    text: text.into_string(),
                }),
                Part::Thinking { text, signature } => {
                    if !text.is_empty() {
                        out.push(StreamEvent::ThinkingDelta {
                            text: text.into_string(),
                        });
                    }
                    if let Some(signature) = signature {
                        out.push(StreamEvent::ThinkingSignature { signature });
                    }
                }
                Part::ToolCall(call) => {
                    self.saw_tool = true;
                    let index = first_call
                        + out
                            .iter()
                            .filter(|e| matches!(e, StreamEvent::ToolCallStart { .. }))
                            .count();
                    out.push(StreamEvent::ToolCallStart {
                        index,
                        id: call.id,
                        name: call.name,
                        kind: ToolKind::Function,
                    });
                    out.push(StreamEvent::ToolCallDelta {
                        index,
                        arguments: call.arguments,
                    });
                }
                _ => {}
            }
        }
        if let Some(usage) = v.get("usageMetadata") {
            out.push(StreamEvent::Usage(usage_from(usage)));
        }
        if let Some(reason) = candidate["finishReason"].as_str() {
            self.complete = true;
            let mut stop = stop_from(reason);
            if self.saw_tool && stop == StopReason::EndTurn {
                stop = StopReason::ToolUse;
            }
            out.push(StreamEvent::Stop(stop));
        }
        Ok(out)
    }

    fn complete(&self) -> bool {
        self.complete
    }
}

/// IR -> Gemini SSE for the client. Calls are sent whole: Gemini has no argument deltas.
#[derive(Default)]
pub struct Encoder {
    model: String,
    id: String,
    calls: super::PendingCalls,
    usage: Usage,
    done: bool,
}

impl Encoder {
    fn chunk(&self, out: &mut Vec<u8>, parts: Vec<Value>, finish: Option<StopReason>) {
        let mut candidate = json!({"content": {"role": "model", "parts": parts}, "index": 0});
        let mut data = json!({"modelVersion": self.model, "responseId": self.id});
        if let Some(stop) = finish {
            candidate["finishReason"] = json!(stop_name(stop));
            data["usageMetadata"] = usage_wire(&self.usage);
        }
        data["candidates"] = json!([candidate]);
        sse::write_json(out, None, &data);
    }

    fn flush_calls(&mut self, out: &mut Vec<u8>) {
        if self.calls.is_empty() {
            return;
        }
        let parts: Vec<Value> = self
            .calls
            .take()
            .into_iter()
            .map(|c| json!({"functionCall": {"id": c.id, "name": c.name, "args": arguments_object(&c.arguments)}}))
            .collect();
        self.chunk(out, parts, None);
    }
}

impl StreamEncoder for Encoder {
    fn event(&mut self, event: &StreamEvent, out: &mut Vec<u8>) {
        if self.done {
            return;
        }
        match event {
            StreamEvent::Start { id, model } => {
                self.id = id.clone();
                self.model = model.clone();
            }
            StreamEvent::Usage(usage) => self.usage.merge(usage),
            StreamEvent::TextDelta { text } => {
                self.flush_calls(out);
                self.chunk(out, vec![json!({"text": text})], None);
            }
            StreamEvent::ThinkingDelta { text } => {
                self.flush_calls(out);
                self.chunk(out, vec![json!({"text": text, "thought": true})], None);
            }
            StreamEvent::ThinkingSignature { signature } => {
                self.chunk(
                    out,
                    vec![json!({"text": "", "thought": true, "thoughtSignature": signature})],
                    None,
                );
            }
            StreamEvent::ToolCallStart {
                index, id, name, ..
            } => self.calls.start(*index, id, name),
            StreamEvent::ToolCallDelta { index, arguments } => {
                self.calls.append(*index, arguments);
            }
            StreamEvent::Stop(stop) => {
                self.flush_calls(out);
                self.chunk(out, Vec::new(), Some(*stop));
                self.done = true;
            }
        }
    }

    fn error(&mut self, error: &ApiError, out: &mut Vec<u8>) {
        if !self.done {
            self.done = true;
            stream_error(error, out);
        }
    }
}
