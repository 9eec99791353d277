//! Anthropic Messages (`/v1/messages`): what Claude Code speaks.

use serde::Serialize;
use serde_json::{Map, Value, json};

use super::json::{self, arguments_object, arguments_text};
use super::{StreamDecoder, StreamEncoder};
use crate::gateway::ir::{
    self, ApiError, ErrorKind, ImageSource, Message, Part, Reasoning, Role, StopReason,
    StreamEvent, Tool, ToolCall, ToolChoice, ToolKind, ToolResult, Usage,
};
use crate::gateway::sse;

// ---------------------------------------------------------------- requests

pub fn decode_request(body: &[u8]) -> Result<ir::Request, ApiError> {
    wire::decode(body).map_or_else(|| decode_request_value(body), Ok)
}

/// Both decoding paths, for tests that hold them to the same answers.
#[doc(hidden)]
pub fn decode_request_both(body: &[u8]) -> (Option<ir::Request>, Result<ir::Request, ApiError>) {
    (wire::decode(body), decode_request_value(body))
}

fn decode_request_value(body: &[u8]) -> Result<ir::Request, ApiError> {
    let v = json::parse(body)?;
    let mut request = ir::Request {
        model: json::req_str(&v, "model", "")?.to_string(),
        max_tokens: json::u64_at(&v, "max_tokens", "")?,
        temperature: json::f64_at(&v, "temperature", "")?,
        top_p: json::f64_at(&v, "top_p", "")?,
        stop: json::strings_at(&v, "stop_sequences", "")?,
        stream: json::bool_at(&v, "stream", "")?.unwrap_or(false),
        stream_usage: true,
        ..Default::default()
    };
    match v.get("system") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => request.system.push(s.as_str().into()),
        Some(Value::Array(blocks)) => {
            for (i, block) in blocks.iter().enumerate() {
                request
                    .system
                    .push(json::req_str(block, "text", &format!("system[{i}]."))?.into());
            }
        }
        Some(_) => {
            return Err(ApiError::invalid(
                "system: expected a string or a list of text blocks",
            ));
        }
    }
    for (i, message) in json::array_at(&v, "messages", "")?.iter().enumerate() {
        let path = format!("messages[{i}].");
        let role = match json::req_str(message, "role", &path)? {
            "user" => Role::User,
            "assistant" => Role::Assistant,
            "system" => Role::System,
            other => {
                return Err(ApiError::invalid(format!(
                    "{path}role: unknown role `{other}`"
                )));
            }
        };
        let parts = decode_content(message.get("content"), &format!("{path}content"))?;
        request.messages.push(Message { role, parts });
    }
    for (i, tool) in json::array_at(&v, "tools", "")?.iter().enumerate() {
        let path = format!("tools[{i}].");
        // Server tools (web search, code execution…) have a `type` and no schema.
        if tool.get("input_schema").is_none() && tool.get("type").is_some() {
            continue;
        }
        request.tools.push(Tool {
            name: json::req_str(tool, "name", &path)?.to_string(),
            description: json::str_at(tool, "description", &path)?.map(Into::into),
            parameters: tool
                .get("input_schema")
                .cloned()
                .unwrap_or_else(|| json!({"type": "object"}))
                .into(),
            kind: ToolKind::Function,
            namespace: None,
        });
    }
    decode_options(
        &mut request,
        v.get("tool_choice"),
        v.get("thinking"),
        v.get("output_config"),
    )?;
    Ok(request)
}

/// `tool_choice`, `thinking` and `output_config`, shared by both decoding paths.
fn decode_options(
    request: &mut ir::Request,
    tool_choice: Option<&Value>,
    thinking: Option<&Value>,
    output_config: Option<&Value>,
) -> Result<(), ApiError> {
    if let Some(choice) = tool_choice.filter(|c| !c.is_null()) {
        request.tool_choice = Some(match json::str_at(choice, "type", "tool_choice.")? {
            Some("auto") => ToolChoice::Auto,
            Some("any") => ToolChoice::Required,
            Some("none") => ToolChoice::None,
            Some("tool") => {
                ToolChoice::Tool(json::req_str(choice, "name", "tool_choice.")?.to_string())
            }
            _ => {
                return Err(ApiError::invalid(
                    "tool_choice.type: expected auto, any, tool or none",
                ));
            }
        });
        if let Some(true) = json::bool_at(choice, "disable_parallel_tool_use", "tool_choice.")? {
            request.parallel_tool_calls = Some(false);
        }
    }
    if let Some(thinking) = thinking.filter(|t| !t.is_null()) {
        let effort = output_config
            .and_then(|c| c.pointer("/effort"))
            .and_then(Value::as_str)
            .map(str::to_string);
        match json::str_at(thinking, "type", "thinking.")? {
            Some("enabled") => {
                request.reasoning = Some(Reasoning {
                    effort,
                    budget_tokens: json::u64_at(thinking, "budget_tokens", "thinking.")?,
                })
            }
            Some("adaptive") => {
                request.reasoning = Some(Reasoning {
                    effort,
                    budget_tokens: None,
                })
            }
            _ => {}
        }
    }
    if let Some(schema) = output_config.and_then(|c| c.pointer("/format/schema")) {
        request.json_schema = Some(schema.clone());
    }
    Ok(())
}

fn decode_content(content: Option<&Value>, path: &str) -> Result<Vec<Part>, ApiError> {
    let blocks = match content {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::String(text)) => {
            return Ok(vec![Part::Text {
                text: text.as_str().into(),
            }]);
        }
        Some(Value::Array(blocks)) => blocks,
        Some(_) => {
            return Err(ApiError::invalid(format!(
                "{path}: expected a string or a list of blocks"
            )));
        }
    };
    let mut parts = Vec::with_capacity(blocks.len());
    for (i, block) in blocks.iter().enumerate() {
        let at = format!("{path}[{i}].");
        let Some(kind) = json::str_at(block, "type", &at)? else {
            return Err(ApiError::invalid(format!("{at}type: required")));
        };
        let part = match kind {
            "text" => Part::Text {
                text: json::req_str(block, "text", &at)?.into(),
            },
            "image" => Part::Image {
                source: decode_image(block, &at)?,
            },
            "thinking" => Part::Thinking {
                text: json::str_at(block, "thinking", &at)?
                    .unwrap_or_default()
                    .into(),
                signature: json::str_at(block, "signature", &at)?.map(str::to_string),
            },
            "redacted_thinking" => Part::RedactedThinking {
                data: json::req_str(block, "data", &at)?.to_string(),
            },
            "tool_use" => Part::ToolCall(ToolCall {
                id: json::req_str(block, "id", &at)?.to_string(),
                name: json::req_str(block, "name", &at)?.to_string(),
                arguments: arguments_text(block.get("input")),
                kind: ToolKind::Function,
                signature: None,
            }),
            "tool_result" => Part::ToolResult(ToolResult {
                call_id: json::req_str(block, "tool_use_id", &at)?.to_string(),
                name: None,
                content: decode_content(block.get("content"), &format!("{at}content"))?
                    .into_iter()
                    .filter(|p| matches!(p, Part::Text { .. } | Part::Image { .. }))
                    .collect(),
                is_error: json::bool_at(block, "is_error", &at)?.unwrap_or(false),
            }),
            "document" => match block.pointer("/source/data").and_then(Value::as_str) {
                Some(text)
                    if block.pointer("/source/type").and_then(Value::as_str) == Some("text") =>
                {
                    Part::Text { text: text.into() }
                }
                _ => continue,
            },
            // Server-tool blocks and future kinds have no equivalent elsewhere.
            _ => continue,
        };
        parts.push(part);
    }
    Ok(parts)
}

fn decode_image(block: &Value, at: &str) -> Result<ImageSource, ApiError> {
    decode_image_source(block.get("source"), at)
}

fn decode_image_source(source: Option<&Value>, at: &str) -> Result<ImageSource, ApiError> {
    let source = source.ok_or_else(|| ApiError::invalid(format!("{at}source: required")))?;
    let path = format!("{at}source.");
    match json::str_at(source, "type", &path)? {
        Some("base64") => Ok(ImageSource::Base64 {
            media_type: json::req_str(source, "media_type", &path)?.to_string(),
            data: json::req_str(source, "data", &path)?.to_string(),
        }),
        Some("url") => Ok(ImageSource::Url {
            url: json::req_str(source, "url", &path)?.to_string(),
        }),
        _ => Err(ApiError::invalid(format!(
            "{path}type: expected base64 or url"
        ))),
    }
}

/// Owned wire types for the request shapes agents send on every turn: they decode in one pass,
/// without a `Value` tree per message and block. Whatever they do not take (an unexpected
/// type, a missing required field) makes [`decode`] give up, and the `Value` path, whose
/// errors name the field, takes over; a request either path accepts decodes the same.
mod wire {
    use serde::{Deserialize, Deserializer};
    use serde_json::Value;
    use serde_json::value::RawValue;

    use crate::gateway::proto::{MostlyText, Object, TextOrList, model_of, some_raw};

    use super::{arguments_text, decode_image_source, decode_options};
    use crate::gateway::ir::{
        self, Message, Part, Role, Schema, Text, Tool, ToolCall, ToolKind, ToolResult,
    };

    #[derive(Deserialize)]
    struct Request<'a> {
        #[serde(borrow)]
        model: Option<&'a RawValue>,
        max_tokens: Option<u64>,
        temperature: Option<f64>,
        top_p: Option<f64>,
        stop_sequences: Option<Value>,
        stream: Option<bool>,
        system: Option<Content>,
        messages: Option<Vec<Object<WireMessage>>>,
        tools: Option<Vec<Object<WireTool>>>,
        tool_choice: Option<Value>,
        thinking: Option<Value>,
        output_config: Option<Value>,
    }

    #[derive(Deserialize)]
    struct WireMessage {
        role: Option<String>,
        content: Option<Content>,
    }

    #[derive(Deserialize)]
    struct WireTool {
        name: Option<String>,
        description: Option<Text>,
        /// Kept even when null, as the `Value` path does; as JSON text, never taken apart.
        #[serde(default, deserialize_with = "some_raw")]
        input_schema: Option<Box<RawValue>>,
        #[serde(default, rename = "type", deserialize_with = "present")]
        has_type: bool,
    }

    #[derive(Deserialize)]
    struct Block {
        #[serde(rename = "type")]
        kind: Option<String>,
        text: Option<Text>,
        id: Option<String>,
        name: Option<String>,
        input: Option<Value>,
        tool_use_id: Option<String>,
        /// A tool result's content.
        content: Option<MostlyText<Object<Block>>>,
        is_error: Option<bool>,
        thinking: Option<Text>,
        signature: Option<String>,
        data: Option<String>,
        source: Option<Value>,
    }

    /// A string, or a list of blocks.
    type Content = TextOrList<Object<Block>>;

    fn present<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
        serde::de::IgnoredAny::deserialize(d).map(|_| true)
    }

    pub fn decode(body: &[u8]) -> Option<ir::Request> {
        let Object(wire): Object<Request> =
            serde_json::from_str(std::str::from_utf8(body).ok()?).ok()?;
        let (model, model_span) = model_of(body, wire.model?)?;
        let mut request = ir::Request {
            model,
            model_span,
            max_tokens: wire.max_tokens,
            temperature: wire.temperature,
            top_p: wire.top_p,
            stop: match wire.stop_sequences {
                None | Some(Value::Null) => Vec::new(),
                Some(Value::String(s)) => vec![s],
                Some(Value::Array(items)) => items
                    .into_iter()
                    .map(|v| match v {
                        Value::String(s) => Some(s),
                        _ => None,
                    })
                    .collect::<Option<_>>()?,
                Some(_) => return None,
            },
            stream: wire.stream.unwrap_or(false),
            stream_usage: true,
            ..Default::default()
        };
        match wire.system {
            None => {}
            Some(TextOrList::Text(text)) => request.system.push(text),
            Some(TextOrList::List(blocks)) => {
                for Object(block) in blocks {
                    request.system.push(block.text?);
                }
            }
        }
        for Object(message) in wire.messages.unwrap_or_default() {
            let role = match message.role?.as_str() {
                "user" => Role::User,
                "assistant" => Role::Assistant,
                "system" => Role::System,
                _ => return None,
            };
            let parts = parts_of(message.content)?;
            request.messages.push(Message { role, parts });
        }
        for Object(tool) in wire.tools.unwrap_or_default() {
            if tool.input_schema.is_none() && tool.has_type {
                continue;
            }
            request.tools.push(Tool {
                name: tool.name?,
                description: tool.description,
                parameters: match tool.input_schema {
                    Some(raw) => Schema::from_raw(raw),
                    None => serde_json::json!({"type": "object"}).into(),
                },
                kind: ToolKind::Function,
                namespace: None,
            });
        }
        decode_options(
            &mut request,
            wire.tool_choice.as_ref(),
            wire.thinking.as_ref(),
            wire.output_config.as_ref(),
        )
        .ok()?;
        Some(request)
    }

    fn parts_of(content: Option<Content>) -> Option<Vec<Part>> {
        let blocks = match content {
            None => return Some(Vec::new()),
            Some(TextOrList::Text(text)) => return Some(vec![Part::Text { text }]),
            Some(TextOrList::List(blocks)) => blocks,
        };
        let mut parts = Vec::with_capacity(blocks.len());
        for Object(block) in blocks {
            let part = match block.kind?.as_str() {
                "text" => Part::Text { text: block.text? },
                "image" => Part::Image {
                    source: decode_image_source(block.source.as_ref(), "").ok()?,
                },
                "thinking" => Part::Thinking {
                    text: block.thinking.unwrap_or_default(),
                    signature: block.signature,
                },
                "redacted_thinking" => Part::RedactedThinking { data: block.data? },
                "tool_use" => Part::ToolCall(ToolCall {
                    id: block.id?,
                    name: block.name?,
                    arguments: arguments_text(block.input.as_ref()),
                    kind: ToolKind::Function,
                    signature: None,
                }),
                "tool_result" => Part::ToolResult(ToolResult {
                    call_id: block.tool_use_id?,
                    name: None,
                    content: parts_of(block.content.map(|c| c.0))?
                        .into_iter()
                        .filter(|p| matches!(p, Part::Text { .. } | Part::Image { .. }))
                        .collect(),
                    is_error: block.is_error.unwrap_or(false),
                }),
                "document" => match block
                    .source
                    .as_ref()
                    .map(|s| (s.get("data"), s.get("type")))
                {
                    Some((Some(Value::String(text)), Some(Value::String(kind))))
                        if kind == "text" =>
                    {
                        Part::Text {
                            text: text.as_str().into(),
                        }
                    }
                    _ => continue,
                },
                _ => continue,
            };
            parts.push(part);
        }
        Some(parts)
    }
}

pub fn encode_request(request: &ir::Request, model: &str) -> Value {
    let mut out = Map::new();
    out.insert("model".into(), json!(model));
    out.insert(
        "max_tokens".into(),
        json!(request.max_tokens.unwrap_or(8192)),
    );
    if !request.system.is_empty() {
        let blocks: Vec<Value> = request
            .system
            .iter()
            .map(|t| json!({"type": "text", "text": t}))
            .collect();
        out.insert("system".into(), Value::Array(blocks));
    }
    // Anthropic wants user/assistant turns; a system message mid-conversation is kept as a
    // system-role message, which the Messages API accepts from Claude Code itself.
    let mut messages: Vec<Value> = Vec::new();
    for message in &request.messages {
        let role = match message.role {
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::System => "system",
        };
        let blocks: Vec<Value> = message.parts.iter().filter_map(encode_part).collect();
        if blocks.is_empty() {
            continue;
        }
        match messages.last_mut() {
            Some(last) if last["role"] == role => {
                last["content"]
                    .as_array_mut()
                    .expect("built as array")
                    .extend(blocks);
            }
            _ => messages.push(json!({"role": role, "content": blocks})),
        }
    }
    out.insert("messages".into(), Value::Array(messages));
    if !request.tools.is_empty() {
        let tools: Vec<Value> = request
            .tools
            .iter()
            .map(|t| {
                let mut tool = json!({"name": t.name, "input_schema": t.parameters});
                if let Some(d) = &t.description {
                    tool["description"] = json!(d);
                }
                tool
            })
            .collect();
        out.insert("tools".into(), Value::Array(tools));
    }
    if let Some(choice) = &request.tool_choice {
        let mut value = match choice {
            ToolChoice::Auto => json!({"type": "auto"}),
            ToolChoice::None => json!({"type": "none"}),
            ToolChoice::Required => json!({"type": "any"}),
            ToolChoice::Tool(name) => json!({"type": "tool", "name": name}),
        };
        if request.parallel_tool_calls == Some(false) {
            value["disable_parallel_tool_use"] = json!(true);
        }
        out.insert("tool_choice".into(), value);
    }
    if let Some(t) = request.temperature {
        out.insert("temperature".into(), json!(t));
    }
    if let Some(p) = request.top_p {
        out.insert("top_p".into(), json!(p));
    }
    if !request.stop.is_empty() {
        out.insert("stop_sequences".into(), json!(request.stop));
    }
    if let Some(reasoning) = &request.reasoning {
        let budget = reasoning.budget_or_from_effort().max(1024);
        out.insert(
            "thinking".into(),
            json!({"type": "enabled", "budget_tokens": budget}),
        );
        let max = request
            .max_tokens
            .unwrap_or(8192)
            .max(budget.saturating_add(1024));
        out.insert("max_tokens".into(), json!(max));
    }
    if let Some(schema) = &request.json_schema {
        out.insert(
            "output_config".into(),
            json!({"format": {"type": "json_schema", "schema": schema}}),
        );
    }
    out.insert("stream".into(), json!(request.stream));
    Value::Object(out)
}

fn encode_part(part: &Part) -> Option<Value> {
    Some(match part {
        Part::Text { text } if text.is_empty() => return None,
        Part::Text { text } => json!({"type": "text", "text": text}),
        Part::Image { source } => json!({"type": "image", "source": image_source(source)}),
        Part::Thinking {
            text,
            signature: Some(signature),
        } => {
            json!({"type": "thinking", "thinking": text, "signature": signature})
        }
        // Thinking from another provider has no Anthropic signature and would be rejected.
        Part::Thinking {
            signature: None, ..
        } => return None,
        Part::RedactedThinking { data } => json!({"type": "redacted_thinking", "data": data}),
        Part::ToolCall(call) => json!({
            "type": "tool_use", "id": call.id, "name": call.name,
            "input": arguments_object(&call.arguments),
        }),
        Part::ToolResult(result) => {
            let content: Vec<Value> = result.content.iter().filter_map(encode_part).collect();
            let mut block =
                json!({"type": "tool_result", "tool_use_id": result.call_id, "content": content});
            if result.is_error {
                block["is_error"] = json!(true);
            }
            block
        }
    })
}

fn image_source(source: &ImageSource) -> Value {
    match source {
        ImageSource::Base64 { media_type, data } => {
            json!({"type": "base64", "media_type": media_type, "data": data})
        }
        ImageSource::Url { url } => json!({"type": "url", "url": url}),
    }
}

// ---------------------------------------------------------------- responses

pub fn decode_response(body: &[u8]) -> Result<ir::Response, ApiError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::upstream(format!("upstream answered with invalid JSON: {e}")))?;
    if v.get("type").and_then(Value::as_str) == Some("error") {
        return Err(decode_error_value(&v, 500));
    }
    let parts = decode_content(v.get("content"), "content")
        .map_err(|e| ApiError::upstream(format!("upstream answer: {}", e.message)))?;
    Ok(ir::Response {
        id: v["id"].as_str().unwrap_or("msg").to_string(),
        model: v["model"].as_str().unwrap_or_default().to_string(),
        parts,
        stop: stop_from(v["stop_reason"].as_str()),
        usage: usage_from(&v["usage"]),
    })
}

fn stop_from(reason: Option<&str>) -> StopReason {
    match reason {
        Some("max_tokens") | Some("model_context_window_exceeded") => StopReason::MaxTokens,
        Some("stop_sequence") => StopReason::StopSequence,
        Some("tool_use") => StopReason::ToolUse,
        Some("refusal") => StopReason::ContentFilter,
        _ => StopReason::EndTurn,
    }
}

fn stop_name(stop: StopReason) -> &'static str {
    match stop {
        StopReason::EndTurn => "end_turn",
        StopReason::MaxTokens => "max_tokens",
        StopReason::StopSequence => "stop_sequence",
        StopReason::ToolUse => "tool_use",
        StopReason::ContentFilter => "refusal",
    }
}

fn usage_from(u: &Value) -> Usage {
    let n = |k: &str| u.get(k).and_then(Value::as_u64).unwrap_or(0);
    let cache_read = n("cache_read_input_tokens");
    let cache_write = n("cache_creation_input_tokens");
    Usage {
        input_tokens: n("input_tokens")
            .saturating_add(cache_read)
            .saturating_add(cache_write),
        output_tokens: n("output_tokens"),
        cache_read_tokens: cache_read,
        cache_write_tokens: cache_write,
        reasoning_tokens: 0,
    }
}

#[derive(Serialize)]
struct UsageWire {
    input_tokens: u64,
    output_tokens: u64,
    cache_read_input_tokens: u64,
    cache_creation_input_tokens: u64,
}

fn usage_wire(u: &Usage) -> UsageWire {
    UsageWire {
        input_tokens: u.anthropic_input(),
        output_tokens: u.output_tokens,
        cache_read_input_tokens: u.cache_read_tokens,
        cache_creation_input_tokens: u.cache_write_tokens,
    }
}

/// A non-streamed answer as the client receives it, serialised without building a `Value`
/// tree: every proxied non-streamed call writes one.
#[derive(Serialize)]
pub struct Answer<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    role: &'static str,
    model: &'a str,
    content: Vec<AnswerBlock<'a>>,
    stop_reason: &'static str,
    stop_sequence: Option<&'a str>,
    usage: UsageWire,
}

#[derive(Serialize)]
#[serde(untagged)]
enum AnswerBlock<'a> {
    Text(TextBlock<'a>),
    Thinking(ThinkingBlock<'a>),
    /// Calls and the rarer blocks, in the same shape a request carries them.
    Other(Value),
}

#[derive(Serialize)]
struct TextBlock<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    text: &'a ir::Text,
}

#[derive(Serialize)]
struct ThinkingBlock<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    thinking: &'a ir::Text,
    signature: &'a str,
}

impl<'a> Answer<'a> {
    pub fn new(response: &'a ir::Response) -> Answer<'a> {
        let content = response
            .parts
            .iter()
            .filter_map(|part| match part {
                Part::Text { text } if !text.is_empty() => {
                    Some(AnswerBlock::Text(TextBlock { kind: "text", text }))
                }
                // Reasoning from other providers is shown as a thinking block without
                // signature only in streams; a stored answer keeps it out of the visible
                // content.
                Part::Thinking { text, signature } => Some(AnswerBlock::Thinking(ThinkingBlock {
                    kind: "thinking",
                    thinking: text,
                    signature: signature.as_deref().unwrap_or_default(),
                })),
                other => encode_part(other).map(AnswerBlock::Other),
            })
            .collect();
        Answer {
            id: &response.id,
            kind: "message",
            role: "assistant",
            model: &response.model,
            content,
            stop_reason: stop_name(response.stop),
            stop_sequence: None,
            usage: usage_wire(&response.usage),
        }
    }
}

pub fn encode_response(response: &ir::Response) -> Value {
    serde_json::to_value(Answer::new(response)).expect("an answer serialises")
}

// ---------------------------------------------------------------- errors

fn error_type(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::InvalidRequest => "invalid_request_error",
        ErrorKind::Authentication => "authentication_error",
        ErrorKind::Permission => "permission_error",
        ErrorKind::NotFound => "not_found_error",
        ErrorKind::RequestTooLarge => "request_too_large",
        ErrorKind::RateLimit => "rate_limit_error",
        ErrorKind::Overloaded => "overloaded_error",
        ErrorKind::Timeout => "timeout_error",
        ErrorKind::Api => "api_error",
    }
}

pub fn error_body(error: &ApiError) -> Value {
    json!({"type": "error", "error": {"type": error_type(error.kind), "message": error.message}})
}

pub fn stream_error(error: &ApiError, out: &mut Vec<u8>) {
    sse::write_json(out, Some("error"), &error_body(error));
}

fn decode_error_value(v: &Value, status: u16) -> ApiError {
    let kind = match v.pointer("/error/type").and_then(Value::as_str) {
        Some("invalid_request_error") => ErrorKind::InvalidRequest,
        Some("authentication_error") => ErrorKind::Authentication,
        Some("permission_error") => ErrorKind::Permission,
        Some("not_found_error") => ErrorKind::NotFound,
        Some("request_too_large") => ErrorKind::RequestTooLarge,
        Some("rate_limit_error") => ErrorKind::RateLimit,
        Some("overloaded_error") => ErrorKind::Overloaded,
        _ => ErrorKind::from_status(status),
    };
    let message = v
        .pointer("/error/message")
        .and_then(Value::as_str)
        .unwrap_or("upstream error");
    ApiError {
        status: if kind == ErrorKind::Overloaded {
            529
        } else {
            kind.status()
        },
        kind,
        message: message.to_string(),
        retry_after: None,
    }
}

// ---------------------------------------------------------------- streams

/// Upstream Anthropic SSE -> IR.
#[derive(Default)]
pub struct Decoder {
    stop: Option<StopReason>,
    usage: Usage,
    complete: bool,
}

impl StreamDecoder for Decoder {
    fn event(&mut self, event: &sse::Event) -> Result<Vec<StreamEvent>, ApiError> {
        let v: Value = serde_json::from_str(&event.data)
            .map_err(|e| ApiError::upstream(format!("upstream sent a malformed event: {e}")))?;
        let kind = v["type"].as_str().or(event.name.as_deref()).unwrap_or("");
        let mut out = Vec::new();
        match kind {
            "message_start" => {
                let message = &v["message"];
                out.push(StreamEvent::Start {
                    id: message["id"].as_str().unwrap_or("msg").to_string(),
                    model: message["model"].as_str().unwrap_or_default().to_string(),
                });
                self.usage.merge(&usage_from(&message["usage"]));
                out.push(StreamEvent::Usage(self.usage));
            }
            "content_block_start" => {
                let block = &v["content_block"];
                let index = v["index"].as_u64().unwrap_or(0) as usize;
                match block["type"].as_str() {
                    Some("text") => {
                        if let Some(text) = block["text"].as_str().filter(|t| !t.is_empty()) {
                            out.push(StreamEvent::TextDelta {
                                text: text.to_string(),
                            });
                        }
                    }
                    Some("thinking") => {
                        if let Some(text) = block["thinking"].as_str().filter(|t| !t.is_empty()) {
                            out.push(StreamEvent::ThinkingDelta {
                                text: text.to_string(),
                            });
                        }
                    }
                    Some("tool_use") => {
                        out.push(StreamEvent::ToolCallStart {
                            index,
                            id: block["id"].as_str().unwrap_or_default().to_string(),
                            name: block["name"].as_str().unwrap_or_default().to_string(),
                            kind: ToolKind::Function,
                        });
                        if let Some(input) = block
                            .get("input")
                            .filter(|i| i.as_object().is_some_and(|o| !o.is_empty()))
                        {
                            out.push(StreamEvent::ToolCallDelta {
                                index,
                                arguments: input.to_string(),
                            });
                        }
                    }
                    _ => {}
                }
            }
            "content_block_delta" => {
                let delta = &v["delta"];
                let index = v["index"].as_u64().unwrap_or(0) as usize;
                match delta["type"].as_str() {
                    Some("text_delta") => out.push(StreamEvent::TextDelta {
                        text: delta["text"].as_str().unwrap_or_default().to_string(),
                    }),
                    Some("thinking_delta") => out.push(StreamEvent::ThinkingDelta {
                        text: delta["thinking"].as_str().unwrap_or_default().to_string(),
                    }),
                    Some("signature_delta") => out.push(StreamEvent::ThinkingSignature {
                        signature: delta["signature"].as_str().unwrap_or_default().to_string(),
                    }),
                    Some("input_json_delta") => out.push(StreamEvent::ToolCallDelta {
                        index,
                        arguments: delta["partial_json"]
                            .as_str()
                            .unwrap_or_default()
                            .to_string(),
                    }),
                    _ => {}
                }
            }
            "message_delta" => {
                if let Some(reason) = v.pointer("/delta/stop_reason").and_then(Value::as_str) {
                    self.stop = Some(stop_from(Some(reason)));
                }
                let mut usage = self.usage;
                let delta = usage_from(&v["usage"]);
                usage.output_tokens = delta.output_tokens.max(usage.output_tokens);
                if v["usage"].get("input_tokens").is_some() {
                    usage.merge(&delta);
                }
                self.usage = usage;
                out.push(StreamEvent::Usage(usage));
            }
            "message_stop" => {
                self.complete = true;
                out.push(StreamEvent::Stop(self.stop.unwrap_or_default()));
            }
            "error" => {
                self.complete = true;
                return Err(decode_error_value(&v, 500));
            }
            _ => {}
        }
        Ok(out)
    }

    fn complete(&self) -> bool {
        self.complete
    }

    fn finished(&self) -> bool {
        self.complete
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Block {
    Text,
    Thinking,
}

/// IR -> Anthropic SSE for the client.
#[derive(Default)]
pub struct Encoder {
    started: bool,
    open: Option<Block>,
    next_index: usize,
    /// Anthropic cannot interleave blocks: calls are sent whole, in order, once complete.
    tools: super::PendingCalls,
    usage: Usage,
    id: String,
    model: String,
    done: bool,
}

impl Encoder {
    fn frame(out: &mut Vec<u8>, name: &str, data: Value) {
        sse::write_json(out, Some(name), &data);
    }

    /// A `content_block_delta` for the open block: the hot path of every streamed answer,
    /// so only the text goes through the serialiser (for its escapes); the rest is fixed
    /// bytes, the same ones a derived `Serialize` would write.
    fn delta(&self, out: &mut Vec<u8>, delta: BlockDelta<'_>) {
        use std::io::Write as _;
        let (kind, field, text) = match delta {
            BlockDelta::Text { text } => ("text_delta", "text", text),
            BlockDelta::Thinking { thinking } => ("thinking_delta", "thinking", thinking),
            BlockDelta::Signature { signature } => ("signature_delta", "signature", signature),
        };
        write!(
            out,
            "event: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"index\":{},\"delta\":{{\"type\":\"{kind}\",\"{field}\":",
            self.next_index
        )
        .expect("writing to a Vec cannot fail");
        serde_json::to_writer(&mut *out, text).expect("a string serialises");
        out.extend_from_slice(b"}}\n\n");
    }

    fn ensure_started(&mut self, out: &mut Vec<u8>) {
        if self.started {
            return;
        }
        self.started = true;
        if self.id.is_empty() {
            self.id = "msg_clutch".into();
        }
        Self::frame(
            out,
            "message_start",
            json!({"type": "message_start", "message": {
            "id": self.id, "type": "message", "role": "assistant", "model": self.model, "content": [],
            "stop_reason": null, "stop_sequence": null, "usage": usage_wire(&self.usage)}}),
        );
    }

    fn close_open(&mut self, out: &mut Vec<u8>) {
        if self.open.take().is_some() {
            Self::frame(
                out,
                "content_block_stop",
                json!({"type": "content_block_stop", "index": self.next_index}),
            );
            self.next_index += 1;
        }
    }

    fn open_block(&mut self, block: Block, out: &mut Vec<u8>) {
        if self.open == Some(block) {
            return;
        }
        self.flush_tools(out);
        self.close_open(out);
        let content = match block {
            Block::Text => json!({"type": "text", "text": ""}),
            Block::Thinking => json!({"type": "thinking", "thinking": "", "signature": ""}),
        };
        Self::frame(
            out,
            "content_block_start",
            json!({"type": "content_block_start", "index": self.next_index, "content_block": content}),
        );
        self.open = Some(block);
    }

    fn flush_tools(&mut self, out: &mut Vec<u8>) {
        if self.tools.is_empty() {
            return;
        }
        self.close_open(out);
        for tool in self.tools.take() {
            let index = self.next_index;
            Self::frame(
                out,
                "content_block_start",
                json!({"type": "content_block_start", "index": index,
                "content_block": {"type": "tool_use", "id": tool.id, "name": tool.name, "input": {}}}),
            );
            // Normalise to one JSON object: upstream fragments may be partial or pretty-printed.
            let arguments = arguments_object(&tool.arguments).to_string();
            Self::frame(
                out,
                "content_block_delta",
                json!({"type": "content_block_delta", "index": index,
                "delta": {"type": "input_json_delta", "partial_json": arguments}}),
            );
            Self::frame(
                out,
                "content_block_stop",
                json!({"type": "content_block_stop", "index": index}),
            );
            self.next_index += 1;
        }
    }
}

enum BlockDelta<'a> {
    Text { text: &'a str },
    Thinking { thinking: &'a str },
    Signature { signature: &'a str },
}

impl StreamEncoder for Encoder {
    fn event(&mut self, event: &StreamEvent, out: &mut Vec<u8>) {
        if self.done {
            return;
        }
        match event {
            StreamEvent::Start { id, model } => {
                if !self.started {
                    self.id = id.clone();
                    self.model = model.clone();
                }
            }
            StreamEvent::Usage(usage) => self.usage.merge(usage),
            StreamEvent::TextDelta { text } => {
                self.ensure_started(out);
                self.open_block(Block::Text, out);
                self.delta(out, BlockDelta::Text { text });
            }
            StreamEvent::ThinkingDelta { text } => {
                self.ensure_started(out);
                self.open_block(Block::Thinking, out);
                self.delta(out, BlockDelta::Thinking { thinking: text });
            }
            StreamEvent::ThinkingSignature { signature } => {
                self.ensure_started(out);
                self.open_block(Block::Thinking, out);
                self.delta(out, BlockDelta::Signature { signature });
            }
            StreamEvent::ToolCallStart {
                index, id, name, ..
            } => {
                self.ensure_started(out);
                self.close_open(out);
                self.tools.start(*index, id, name);
            }
            StreamEvent::ToolCallDelta { index, arguments } => {
                self.tools.append(*index, arguments);
            }
            StreamEvent::Stop(stop) => {
                self.ensure_started(out);
                self.flush_tools(out);
                self.close_open(out);
                Self::frame(
                    out,
                    "message_delta",
                    json!({"type": "message_delta",
                    "delta": {"stop_reason": stop_name(*stop), "stop_sequence": null}, "usage": usage_wire(&self.usage)}),
                );
                Self::frame(out, "message_stop", json!({"type": "message_stop"}));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_written_text_delta_is_one_json_event_with_the_text_escaped() {
        let text = "say \"hi\"\n\t\u{1}\\ é";
        let mut encoder = Encoder::default();
        let mut out = Vec::new();
        encoder.event(&StreamEvent::TextDelta { text: text.into() }, &mut out);
        let written = String::from_utf8(out).unwrap();
        let delta = written
            .split("\n\n")
            .find(|frame| frame.starts_with("event: content_block_delta\n"))
            .unwrap();
        let data = delta
            .strip_prefix("event: content_block_delta\ndata: ")
            .unwrap();
        assert!(!data.contains('\n'));
        assert_eq!(
            serde_json::from_str::<Value>(data).unwrap(),
            json!({"type": "content_block_delta", "index": 0,
                "delta": {"type": "text_delta", "text": text}})
        );
    }
}
