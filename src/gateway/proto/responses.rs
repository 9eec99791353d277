//! OpenAI Responses (`/v1/responses`): what Codex speaks. Codex groups its tools in
//! namespaces (inside an `additional_tools` input item) and offers freeform `custom` tools
//! such as `exec`; both are flattened for other protocols (`<ns>__<name>`, a one-string
//! function) and restored on the way back using the client's own request.

use std::collections::HashMap;

use serde_json::{Map, Value, json};

use super::chat::{custom_input, custom_tool_schema, now};
use super::json::{self, arguments_text};
use super::{StreamDecoder, StreamEncoder};
use crate::gateway::ir::{
    self, ApiError, ErrorKind, ImageSource, Message, Part, Reasoning, Role, StopReason,
    StreamEvent, Tool, ToolCall, ToolChoice, ToolKind, ToolResult, Usage,
};
use crate::gateway::sse;

/// The namespace Codex puts its core tools in; their calls carry the bare name.
const DEFAULT_NAMESPACE: &str = "functions";

fn flat_name(namespace: Option<&str>, name: &str) -> String {
    match namespace {
        Some(ns) if ns != DEFAULT_NAMESPACE => format!("{ns}__{name}"),
        _ => name.to_string(),
    }
}

// ---------------------------------------------------------------- requests

pub fn decode_request(body: &[u8]) -> Result<ir::Request, ApiError> {
    inbound::decode(body).map_or_else(|| decode_request_value(body), Ok)
}

/// Both decoding paths, for tests that hold them to the same answers.
#[doc(hidden)]
pub fn decode_request_both(body: &[u8]) -> (Option<ir::Request>, Result<ir::Request, ApiError>) {
    (inbound::decode(body), decode_request_value(body))
}

fn decode_request_value(body: &[u8]) -> Result<ir::Request, ApiError> {
    let v = json::parse(body)?;
    let mut request = ir::Request {
        model: json::req_str(&v, "model", "")?.to_string(),
        max_tokens: json::u64_at(&v, "max_output_tokens", "")?,
        temperature: json::f64_at(&v, "temperature", "")?,
        top_p: json::f64_at(&v, "top_p", "")?,
        stream: json::bool_at(&v, "stream", "")?.unwrap_or(false),
        parallel_tool_calls: json::bool_at(&v, "parallel_tool_calls", "")?,
        stream_usage: true,
        ..Default::default()
    };
    if let Some(instructions) = json::str_at(&v, "instructions", "")? {
        request.system.push(instructions.into());
    }
    decode_tools(
        json::array_at(&v, "tools", "")?,
        None,
        &mut request.tools,
        "tools",
    )?;
    let mut conversation = Conversation::default();
    match v.get("input") {
        None | Some(Value::Null) => {}
        Some(Value::String(text)) => request.messages.push(Message {
            role: Role::User,
            parts: vec![Part::Text {
                text: text.as_str().into(),
            }],
        }),
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                let path = format!("input[{i}].");
                let kind = json::str_at(item, "type", &path)?.unwrap_or("message");
                match kind {
                    "message" => {
                        let role = json::req_str(item, "role", &path)?;
                        let parts = decode_content(item.get("content"), &format!("{path}content"))?;
                        conversation.message(&mut request, role, parts);
                    }
                    "additional_tools" => decode_tools(
                        json::array_at(item, "tools", &path)?,
                        None,
                        &mut request.tools,
                        &format!("{path}tools"),
                    )?,
                    "reasoning" => push(
                        &mut request.messages,
                        Role::Assistant,
                        vec![reasoning_part(
                            item.get("summary"),
                            item.get("encrypted_content"),
                        )],
                    ),
                    "function_call" | "custom_tool_call" => {
                        let custom = kind == "custom_tool_call";
                        let arguments = if custom {
                            json::str_at(item, "input", &path)?
                                .unwrap_or_default()
                                .to_string()
                        } else {
                            arguments_text(item.get("arguments"))
                        };
                        conversation.call(
                            &mut request,
                            json::str_at(item, "namespace", &path)?,
                            json::req_str(item, "name", &path)?,
                            json::req_str(item, "call_id", &path)?.to_string(),
                            arguments,
                            custom,
                        );
                    }
                    "function_call_output" | "custom_tool_call_output" => {
                        let call_id = json::req_str(item, "call_id", &path)?.to_string();
                        let content = match item.get("output") {
                            Some(Value::String(s)) => vec![Part::Text {
                                text: s.as_str().into(),
                            }],
                            other => decode_content(other, &format!("{path}output"))?,
                        };
                        conversation.output(&mut request, call_id, content);
                    }
                    // Hosted-tool items (web search, image generation…) have no equivalent.
                    _ => {}
                }
            }
        }
        Some(_) => {
            return Err(ApiError::invalid(
                "input: expected a string or a list of items",
            ));
        }
    }
    decode_options(
        &mut request,
        v.get("tool_choice"),
        v.get("reasoning"),
        v.get("text"),
    );
    Ok(request)
}

/// What reading the input items carries from one item to the next.
#[derive(Default)]
struct Conversation {
    /// A system or developer message before the first user or assistant one is part of the
    /// system prompt; after it, it stays a message where it was.
    started: bool,
    /// Call id -> tool name, for naming tool outputs (Gemini needs the name).
    names: HashMap<String, String>,
}

impl Conversation {
    fn message(&mut self, request: &mut ir::Request, role: &str, parts: Vec<Part>) {
        match role {
            "system" | "developer" if !self.started => {
                for part in parts {
                    if let Part::Text { text } = part {
                        request.system.push(text);
                    }
                }
            }
            "system" | "developer" => push(&mut request.messages, Role::System, parts),
            "assistant" => {
                self.started = true;
                push(&mut request.messages, Role::Assistant, parts)
            }
            _ => {
                self.started = true;
                push(&mut request.messages, Role::User, parts)
            }
        }
    }

    /// A `function_call` or (when `custom`) a `custom_tool_call` item.
    fn call(
        &mut self,
        request: &mut ir::Request,
        namespace: Option<&str>,
        name: &str,
        id: String,
        arguments: String,
        custom: bool,
    ) {
        let name = flat_name(namespace, name);
        self.names.insert(id.clone(), name.clone());
        let kind = if custom {
            ToolKind::Custom
        } else {
            ToolKind::Function
        };
        push(
            &mut request.messages,
            Role::Assistant,
            vec![Part::ToolCall(ToolCall {
                id,
                name,
                arguments,
                kind,
                signature: None,
            })],
        );
    }

    /// A `function_call_output` or `custom_tool_call_output` item.
    fn output(&self, request: &mut ir::Request, call_id: String, content: Vec<Part>) {
        let result = ToolResult {
            name: self.names.get(&call_id).cloned(),
            call_id,
            content,
            is_error: false,
        };
        push(
            &mut request.messages,
            Role::User,
            vec![Part::ToolResult(result)],
        );
    }
}

/// A `reasoning` item: its summary texts as one thinking part, signed by its encrypted
/// content. Read leniently: a summary that is not a list is no summary.
fn reasoning_part(summary: Option<&Value>, encrypted_content: Option<&Value>) -> Part {
    let text: Vec<&str> = summary
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
        .iter()
        .filter_map(|s| s["text"].as_str())
        .collect();
    Part::Thinking {
        text: text.join("\n").into(),
        signature: encrypted_content
            .and_then(Value::as_str)
            .map(str::to_string),
    }
}

/// `tool_choice`, `reasoning.effort` and a `text.format` JSON schema.
fn decode_options(
    request: &mut ir::Request,
    tool_choice: Option<&Value>,
    reasoning: Option<&Value>,
    text: Option<&Value>,
) {
    request.tool_choice = match tool_choice {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(match s.as_str() {
            "none" => ToolChoice::None,
            "required" => ToolChoice::Required,
            _ => ToolChoice::Auto,
        }),
        Some(obj) => obj["name"]
            .as_str()
            .map(|n| ToolChoice::Tool(n.to_string())),
    };
    if let Some(effort) = reasoning
        .and_then(|r| r.pointer("/effort"))
        .and_then(Value::as_str)
    {
        request.reasoning = Some(Reasoning {
            effort: Some(effort.to_string()),
            budget_tokens: None,
        });
    }
    if let Some(format) = text.and_then(|t| t.pointer("/format"))
        && format.pointer("/type").and_then(Value::as_str) == Some("json_schema")
    {
        request.json_schema = format.pointer("/schema").cloned();
    }
}

/// Consecutive items of one role belong to one message.
fn push(messages: &mut Vec<Message>, role: Role, parts: Vec<Part>) {
    match messages.last_mut() {
        Some(last) if last.role == role && role != Role::System => last.parts.extend(parts),
        _ => messages.push(Message { role, parts }),
    }
}

fn decode_tools(
    items: &[Value],
    namespace: Option<&str>,
    tools: &mut Vec<Tool>,
    path: &str,
) -> Result<(), ApiError> {
    for (i, tool) in items.iter().enumerate() {
        let at = format!("{path}[{i}].");
        match json::str_at(tool, "type", &at)? {
            Some("function") => tools.push(Tool {
                name: flat_name(namespace, json::req_str(tool, "name", &at)?),
                description: json::str_at(tool, "description", &at)?.map(Into::into),
                parameters: tool
                    .get("parameters")
                    .cloned()
                    .unwrap_or_else(empty_parameters)
                    .into(),
                kind: ToolKind::Function,
                namespace: namespace.map(str::to_string),
            }),
            Some("custom") => tools.push(custom_tool(
                namespace,
                json::req_str(tool, "name", &at)?,
                json::str_at(tool, "description", &at)?,
                tool.get("format"),
            )),
            Some("namespace") => {
                let ns = json::req_str(tool, "name", &at)?;
                decode_tools(
                    json::array_at(tool, "tools", &at)?,
                    Some(ns),
                    tools,
                    &format!("{at}tools"),
                )?;
            }
            // Hosted tools (web_search, file_search…) only the OpenAI service can run.
            _ => {}
        }
    }
    Ok(())
}

fn empty_parameters() -> Value {
    json!({"type": "object", "properties": {}})
}

/// A freeform tool as a function of one string; its grammar, if any, goes in the description.
fn custom_tool(
    namespace: Option<&str>,
    name: &str,
    description: Option<&str>,
    format: Option<&Value>,
) -> Tool {
    let mut description = description.unwrap_or_default().to_string();
    if let Some(grammar) = format
        .and_then(|f| f.pointer("/definition"))
        .and_then(Value::as_str)
    {
        description.push_str("\n\nThe input must match this grammar:\n");
        description.push_str(grammar);
    }
    Tool {
        name: flat_name(namespace, name),
        description: Some(description.into()),
        parameters: custom_tool_schema().into(),
        kind: ToolKind::Custom,
        namespace: namespace.map(str::to_string),
    }
}

/// The content part types that carry text.
fn is_text_part(kind: &str) -> bool {
    matches!(kind, "input_text" | "output_text" | "text" | "summary_text")
}

fn decode_content(content: Option<&Value>, path: &str) -> Result<Vec<Part>, ApiError> {
    match content {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![Part::Text {
            text: s.as_str().into(),
        }]),
        Some(Value::Array(items)) => {
            let mut parts = Vec::new();
            for (i, item) in items.iter().enumerate() {
                let at = format!("{path}[{i}].");
                match json::str_at(item, "type", &at)? {
                    Some(kind) if is_text_part(kind) => parts.push(Part::Text {
                        text: json::req_str(item, "text", &at)?.into(),
                    }),
                    Some("input_image") => {
                        if let Some(url) = json::str_at(item, "image_url", &at)? {
                            parts.push(Part::Image {
                                source: ImageSource::from_url(url),
                            });
                        }
                    }
                    _ => {}
                }
            }
            Ok(parts)
        }
        Some(_) => Err(ApiError::invalid(format!(
            "{path}: expected a string or a list of parts"
        ))),
    }
}

/// The typed request decoder: the text of instructions, messages and tool outputs is kept as
/// the JSON it arrived as, and tool schemas are never taken apart. It mirrors the `Value`
/// path above and gives up (`None`) wherever that path would refuse or read leniently.
mod inbound {
    use serde::Deserialize;
    use serde_json::Value;
    use serde_json::value::RawValue;

    use super::{Conversation, custom_tool, decode_options, empty_parameters, flat_name, push};
    use crate::gateway::ir::{
        self, ImageSource, Message, Part, Role, Schema, Text, Tool, ToolKind,
    };
    use crate::gateway::proto::json::{arguments_text, count, number};
    use crate::gateway::proto::{MostlyText, Object, TextOrList, model_of, some_raw};

    #[derive(Deserialize)]
    struct Request<'a> {
        #[serde(borrow)]
        model: Option<&'a RawValue>,
        max_output_tokens: Option<Value>,
        temperature: Option<Value>,
        top_p: Option<Value>,
        stream: Option<bool>,
        parallel_tool_calls: Option<bool>,
        instructions: Option<Text>,
        tools: Option<Vec<Object<WireTool>>>,
        input: Option<TextOrList<Object<Item>>>,
        tool_choice: Option<Value>,
        reasoning: Option<Value>,
        text: Option<Value>,
    }

    #[derive(Deserialize)]
    struct WireTool {
        #[serde(rename = "type")]
        kind: Option<String>,
        name: Option<String>,
        description: Option<Text>,
        #[serde(default, deserialize_with = "some_raw")]
        parameters: Option<Box<RawValue>>,
        format: Option<Value>,
        tools: Option<Vec<Object<WireTool>>>,
    }

    /// Every input item's fields; which are read depends on its `type`.
    #[derive(Deserialize)]
    struct Item {
        #[serde(rename = "type")]
        kind: Option<String>,
        role: Option<String>,
        content: Option<Content>,
        tools: Option<Vec<Object<WireTool>>>,
        summary: Option<Value>,
        encrypted_content: Option<Value>,
        namespace: Option<String>,
        name: Option<String>,
        call_id: Option<String>,
        input: Option<String>,
        arguments: Option<Value>,
        output: Option<MostlyText<Object<ContentPart>>>,
    }

    type Content = TextOrList<Object<ContentPart>>;

    #[derive(Deserialize)]
    struct ContentPart {
        #[serde(rename = "type")]
        kind: Option<String>,
        text: Option<Text>,
        image_url: Option<String>,
    }

    pub fn decode(body: &[u8]) -> Option<ir::Request> {
        let Object(wire): Object<Request> =
            serde_json::from_str(std::str::from_utf8(body).ok()?).ok()?;
        let (model, model_span) = model_of(body, wire.model?)?;
        let mut request = ir::Request {
            model,
            model_span,
            max_tokens: count(wire.max_output_tokens)?,
            temperature: number(wire.temperature)?,
            top_p: number(wire.top_p)?,
            stream: wire.stream.unwrap_or(false),
            parallel_tool_calls: wire.parallel_tool_calls,
            stream_usage: true,
            ..Default::default()
        };
        request.system.extend(wire.instructions);
        tools_of(wire.tools, None, &mut request.tools)?;
        let mut conversation = Conversation::default();
        match wire.input {
            None => {}
            Some(TextOrList::Text(text)) => request.messages.push(Message {
                role: Role::User,
                parts: vec![Part::Text { text }],
            }),
            Some(TextOrList::List(items)) => {
                for Object(item) in items {
                    let kind = item.kind.as_deref().unwrap_or("message");
                    match kind {
                        "message" => {
                            let parts = parts_of(item.content)?;
                            conversation.message(&mut request, &item.role?, parts);
                        }
                        "additional_tools" => tools_of(item.tools, None, &mut request.tools)?,
                        "reasoning" => push(
                            &mut request.messages,
                            Role::Assistant,
                            vec![super::reasoning_part(
                                item.summary.as_ref(),
                                item.encrypted_content.as_ref(),
                            )],
                        ),
                        "function_call" | "custom_tool_call" => {
                            let custom = kind == "custom_tool_call";
                            let arguments = if custom {
                                item.input.unwrap_or_default()
                            } else {
                                arguments_text(item.arguments.as_ref())
                            };
                            conversation.call(
                                &mut request,
                                item.namespace.as_deref(),
                                &item.name?,
                                item.call_id?,
                                arguments,
                                custom,
                            );
                        }
                        "function_call_output" | "custom_tool_call_output" => {
                            let content = parts_of(item.output.map(|output| output.0))?;
                            conversation.output(&mut request, item.call_id?, content);
                        }
                        _ => {}
                    }
                }
            }
        }
        decode_options(
            &mut request,
            wire.tool_choice.as_ref(),
            wire.reasoning.as_ref(),
            wire.text.as_ref(),
        );
        Some(request)
    }

    fn tools_of(
        tools: Option<Vec<Object<WireTool>>>,
        namespace: Option<&str>,
        out: &mut Vec<Tool>,
    ) -> Option<()> {
        for Object(tool) in tools.unwrap_or_default() {
            match tool.kind.as_deref() {
                Some("function") => out.push(Tool {
                    name: flat_name(namespace, &tool.name?),
                    description: tool.description,
                    parameters: match tool.parameters {
                        Some(raw) => Schema::from_raw(raw),
                        None => empty_parameters().into(),
                    },
                    kind: ToolKind::Function,
                    namespace: namespace.map(str::to_string),
                }),
                Some("custom") => out.push(custom_tool(
                    namespace,
                    &tool.name?,
                    tool.description.as_ref().map(Text::as_str).as_deref(),
                    tool.format.as_ref(),
                )),
                Some("namespace") => tools_of(tool.tools, Some(&tool.name?), out)?,
                _ => {}
            }
        }
        Some(())
    }

    /// A content or output field as parts (`decode_content`).
    fn parts_of(content: Option<Content>) -> Option<Vec<Part>> {
        let items = match content {
            None => return Some(Vec::new()),
            Some(TextOrList::Text(text)) => return Some(vec![Part::Text { text }]),
            Some(TextOrList::List(items)) => items,
        };
        let mut parts = Vec::with_capacity(items.len());
        for Object(item) in items {
            match item.kind.as_deref() {
                Some(kind) if super::is_text_part(kind) => {
                    parts.push(Part::Text { text: item.text? })
                }
                Some("input_image") => {
                    if let Some(url) = item.image_url {
                        parts.push(Part::Image {
                            source: ImageSource::from_url(&url),
                        });
                    }
                }
                _ => {}
            }
        }
        Some(parts)
    }
}

pub fn encode_request(request: &ir::Request, model: &str) -> Value {
    let mut out = Map::new();
    out.insert("model".into(), json!(model));
    if !request.system.is_empty() {
        out.insert(
            "instructions".into(),
            json!(ir::Text::join(&request.system, "\n\n")),
        );
    }
    let mut input: Vec<Value> = Vec::new();
    for message in &request.messages {
        let (role, text_type) = match message.role {
            Role::User => ("user", "input_text"),
            Role::Assistant => ("assistant", "output_text"),
            Role::System => ("developer", "input_text"),
        };
        let mut content: Vec<Value> = Vec::new();
        let flush = |content: &mut Vec<Value>, input: &mut Vec<Value>| {
            if !content.is_empty() {
                input.push(
                    json!({"type": "message", "role": role, "content": std::mem::take(content)}),
                );
            }
        };
        for part in &message.parts {
            match part {
                Part::Text { text } => content.push(json!({"type": text_type, "text": text})),
                Part::Image { source } => {
                    content.push(json!({"type": "input_image", "image_url": source.to_url()}))
                }
                Part::Thinking { text, signature } => {
                    flush(&mut content, &mut input);
                    let mut item = json!({"type": "reasoning", "summary": [{"type": "summary_text", "text": text}]});
                    if let Some(signature) = signature {
                        item["encrypted_content"] = json!(signature);
                    }
                    input.push(item);
                }
                Part::RedactedThinking { .. } => {}
                Part::ToolCall(call) => {
                    flush(&mut content, &mut input);
                    input.push(json!({"type": "function_call", "call_id": call.id, "name": call.name,
                        "arguments": if call.kind == ToolKind::Custom { json!({"input": call.arguments}).to_string() } else { call.arguments.clone() }}));
                }
                Part::ToolResult(result) => {
                    flush(&mut content, &mut input);
                    let mut text = result.text();
                    if result.is_error && !text.as_str().starts_with("Error") {
                        text = ir::Text::join([&"Error: ".into(), &text], "");
                    }
                    input.push(json!({"type": "function_call_output", "call_id": result.call_id, "output": text}));
                }
            }
        }
        flush(&mut content, &mut input);
    }
    out.insert("input".into(), Value::Array(input));
    if !request.tools.is_empty() {
        let tools: Vec<Value> = request
            .tools
            .iter()
            .map(|t| json!({"type": "function", "name": t.name, "description": t.description, "parameters": t.parameters}))
            .collect();
        out.insert("tools".into(), Value::Array(tools));
    }
    if let Some(choice) = &request.tool_choice {
        out.insert(
            "tool_choice".into(),
            match choice {
                ToolChoice::Auto => json!("auto"),
                ToolChoice::None => json!("none"),
                ToolChoice::Required => json!("required"),
                ToolChoice::Tool(name) => json!({"type": "function", "name": name}),
            },
        );
    }
    if let Some(parallel) = request.parallel_tool_calls {
        out.insert("parallel_tool_calls".into(), json!(parallel));
    }
    if let Some(max) = request.max_tokens {
        out.insert("max_output_tokens".into(), json!(max));
    }
    if let Some(t) = request.temperature {
        out.insert("temperature".into(), json!(t));
    }
    if let Some(p) = request.top_p {
        out.insert("top_p".into(), json!(p));
    }
    if let Some(reasoning) = &request.reasoning {
        out.insert(
            "reasoning".into(),
            json!({"effort": reasoning.effort_or_from_budget(), "summary": "auto"}),
        );
    }
    if let Some(schema) = &request.json_schema {
        out.insert(
            "text".into(),
            json!({"format": {"type": "json_schema", "name": "answer", "schema": schema}}),
        );
    }
    out.insert("store".into(), json!(false));
    out.insert("stream".into(), json!(request.stream));
    Value::Object(out)
}

// ---------------------------------------------------------------- responses

fn usage_from(u: &Value) -> Usage {
    let n = |p: &str| u.pointer(p).and_then(Value::as_u64).unwrap_or(0);
    Usage {
        input_tokens: n("/input_tokens"),
        output_tokens: n("/output_tokens"),
        cache_read_tokens: n("/input_tokens_details/cached_tokens"),
        cache_write_tokens: 0,
        reasoning_tokens: n("/output_tokens_details/reasoning_tokens"),
    }
}

fn usage_wire(u: &Usage) -> Value {
    json!({
        "input_tokens": u.input_tokens, "input_tokens_details": {"cached_tokens": u.cache_read_tokens},
        "output_tokens": u.output_tokens, "output_tokens_details": {"reasoning_tokens": u.reasoning_tokens},
        "total_tokens": u.input_tokens.saturating_add(u.output_tokens),
    })
}

fn item_parts(item: &Value, parts: &mut Vec<Part>) {
    match item["type"].as_str() {
        Some("message") => {
            for c in item["content"].as_array().map(Vec::as_slice).unwrap_or(&[]) {
                if let Some(text) = c["text"].as_str() {
                    parts.push(Part::Text { text: text.into() });
                }
            }
        }
        Some("reasoning") => {
            let text: Vec<&str> = item["summary"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or(&[])
                .iter()
                .filter_map(|s| s["text"].as_str())
                .collect();
            parts.push(Part::Thinking {
                text: text.join("\n").into(),
                signature: item["encrypted_content"].as_str().map(str::to_string),
            });
        }
        Some(kind @ ("function_call" | "custom_tool_call")) => {
            let custom = kind == "custom_tool_call";
            parts.push(Part::ToolCall(ToolCall {
                id: item["call_id"].as_str().unwrap_or("call").to_string(),
                name: flat_name(
                    item["namespace"].as_str(),
                    item["name"].as_str().unwrap_or_default(),
                ),
                arguments: if custom {
                    item["input"].as_str().unwrap_or_default().to_string()
                } else {
                    arguments_text(item.get("arguments"))
                },
                kind: if custom {
                    ToolKind::Custom
                } else {
                    ToolKind::Function
                },
                signature: None,
            }));
        }
        _ => {}
    }
}

pub fn decode_response(body: &[u8]) -> Result<ir::Response, ApiError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::upstream(format!("upstream answered with invalid JSON: {e}")))?;
    if let Some(error) = v.get("error").filter(|e| !e.is_null()) {
        let message = error["message"]
            .as_str()
            .unwrap_or("upstream error")
            .to_string();
        return Err(ApiError::new(ErrorKind::Api, message));
    }
    let mut parts = Vec::new();
    for item in v["output"].as_array().map(Vec::as_slice).unwrap_or(&[]) {
        item_parts(item, &mut parts);
    }
    let has_calls = parts.iter().any(|p| matches!(p, Part::ToolCall(_)));
    let stop = if v["status"] == "incomplete" {
        StopReason::MaxTokens
    } else if has_calls {
        StopReason::ToolUse
    } else {
        StopReason::EndTurn
    };
    Ok(ir::Response {
        id: v["id"].as_str().unwrap_or("resp").to_string(),
        model: v["model"].as_str().unwrap_or_default().to_string(),
        parts,
        stop,
        usage: usage_from(&v["usage"]),
    })
}

/// How each tool the client offered must be called back: its kind, and its namespace and
/// bare name when flattened.
struct ClientTools {
    tools: HashMap<String, (ToolKind, Option<String>, String)>,
}

impl ClientTools {
    fn new(request: &ir::Request) -> ClientTools {
        let tools = request
            .tools
            .iter()
            .map(|t| {
                let bare = match &t.namespace {
                    Some(ns) => t
                        .name
                        .strip_prefix(&format!("{ns}__"))
                        .unwrap_or(&t.name)
                        .to_string(),
                    None => t.name.clone(),
                };
                (t.name.clone(), (t.kind, t.namespace.clone(), bare))
            })
            .collect();
        ClientTools { tools }
    }

    /// The output item for a finished call, restored to the client's own tool shape.
    fn item(&self, id: &str, call_id: &str, name: &str, arguments: &str, status: &str) -> Value {
        let (kind, namespace, bare) =
            self.tools
                .get(name)
                .cloned()
                .unwrap_or((ToolKind::Function, None, name.to_string()));
        let mut item = match kind {
            ToolKind::Custom => {
                json!({"type": "custom_tool_call", "id": id, "status": status, "call_id": call_id,
                "name": bare, "input": custom_input(arguments)})
            }
            ToolKind::Function => {
                json!({"type": "function_call", "id": id, "status": status, "call_id": call_id,
                "name": bare, "arguments": arguments})
            }
        };
        if let Some(ns) = namespace.filter(|ns| ns != DEFAULT_NAMESPACE) {
            item["namespace"] = json!(ns);
        }
        item
    }

    fn is_custom(&self, name: &str) -> bool {
        self.tools
            .get(name)
            .is_some_and(|t| t.0 == ToolKind::Custom)
    }
}

fn response_object(
    id: &str,
    model: &str,
    status: &str,
    output: Vec<Value>,
    usage: Option<&Usage>,
) -> Value {
    let mut response = json!({"id": id, "object": "response", "created_at": now(), "status": status, "model": model,
        "output": output, "parallel_tool_calls": true, "tool_choice": "auto", "tools": []});
    if let Some(usage) = usage {
        response["usage"] = usage_wire(usage);
    }
    if status == "incomplete" {
        response["incomplete_details"] = json!({"reason": "max_output_tokens"});
    }
    response
}

pub fn encode_response(response: &ir::Response, request: &ir::Request) -> Value {
    let tools = ClientTools::new(request);
    let mut output = Vec::new();
    let mut text = String::new();
    for (i, part) in response.parts.iter().enumerate() {
        match part {
            Part::Text { text: t } => text.push_str(&t.as_str()),
            Part::Thinking { text: t, signature } => {
                let mut item = json!({"type": "reasoning", "id": format!("rs_{i}"), "summary": [{"type": "summary_text", "text": t}]});
                if let Some(s) = signature {
                    item["encrypted_content"] = json!(s);
                }
                output.push(item);
            }
            Part::ToolCall(call) => output.push(tools.item(
                &format!("fc_{i}"),
                &call.id,
                &call.name,
                &call.arguments,
                "completed",
            )),
            _ => {}
        }
    }
    if !text.is_empty() {
        let message = json!({"type": "message", "id": "msg_clutch", "status": "completed", "role": "assistant",
            "content": [{"type": "output_text", "text": text, "annotations": []}]});
        let at = output
            .iter()
            .position(|i| i["type"] != "reasoning")
            .unwrap_or(output.len());
        output.insert(at, message);
    }
    let status = if response.stop == StopReason::MaxTokens {
        "incomplete"
    } else {
        "completed"
    };
    response_object(
        &response.id,
        &response.model,
        status,
        output,
        Some(&response.usage),
    )
}

// ---------------------------------------------------------------- errors

pub fn stream_error(error: &ApiError, sequence: u64, out: &mut Vec<u8>) {
    let (_, code) = match error.kind {
        ErrorKind::RateLimit => ("rate_limit_error", "rate_limit_exceeded"),
        ErrorKind::InvalidRequest => ("invalid_request_error", "invalid_request"),
        _ => ("server_error", "server_error"),
    };
    let mut response = response_object("resp_clutch", "", "failed", Vec::new(), None);
    response["error"] = json!({"code": code, "message": error.message});
    sse::write_json(
        out,
        Some("response.failed"),
        &json!({"type": "response.failed", "sequence_number": sequence, "response": response}),
    );
}

// ---------------------------------------------------------------- streams

/// Upstream Responses SSE -> IR.
#[derive(Default)]
pub struct Decoder {
    started: bool,
    /// output_index -> arguments seen as deltas
    args_seen: HashMap<usize, bool>,
    text_seen: HashMap<usize, bool>,
    tools_started: std::collections::HashSet<usize>,
    saw_tool: bool,
    complete: bool,
}

impl StreamDecoder for Decoder {
    fn event(&mut self, event: &sse::Event) -> Result<Vec<StreamEvent>, ApiError> {
        let v: Value = serde_json::from_str(&event.data)
            .map_err(|e| ApiError::upstream(format!("upstream sent a malformed event: {e}")))?;
        let kind = v["type"].as_str().or(event.name.as_deref()).unwrap_or("");
        let index = v["output_index"].as_u64().unwrap_or(0) as usize;
        let mut out = Vec::new();
        let start = |this: &mut Decoder, out: &mut Vec<StreamEvent>, response: &Value| {
            if !this.started {
                this.started = true;
                out.push(StreamEvent::Start {
                    id: response["id"].as_str().unwrap_or("resp").to_string(),
                    model: response["model"].as_str().unwrap_or_default().to_string(),
                });
            }
        };
        match kind {
            "response.created" | "response.in_progress" => start(self, &mut out, &v["response"]),
            "response.output_item.added" => {
                start(self, &mut out, &Value::Null);
                let item = &v["item"];
                if let Some(t @ ("function_call" | "custom_tool_call")) = item["type"].as_str() {
                    self.saw_tool = true;
                    self.tools_started.insert(index);
                    out.push(StreamEvent::ToolCallStart {
                        index,
                        id: item["call_id"].as_str().unwrap_or_default().to_string(),
                        name: flat_name(
                            item["namespace"].as_str(),
                            item["name"].as_str().unwrap_or_default(),
                        ),
                        kind: if t == "custom_tool_call" {
                            ToolKind::Custom
                        } else {
                            ToolKind::Function
                        },
                    });
                }
            }
            "response.output_text.delta" => {
                self.text_seen.insert(index, true);
                out.push(StreamEvent::TextDelta {
                    text: v["delta"].as_str().unwrap_or_default().to_string(),
                });
            }
            "response.reasoning_summary_text.delta" | "response.reasoning_text.delta" => {
                out.push(StreamEvent::ThinkingDelta {
                    text: v["delta"].as_str().unwrap_or_default().to_string(),
                });
            }
            "response.function_call_arguments.delta" | "response.custom_tool_call_input.delta" => {
                self.args_seen.insert(index, true);
                out.push(StreamEvent::ToolCallDelta {
                    index,
                    arguments: v["delta"].as_str().unwrap_or_default().to_string(),
                });
            }
            "response.output_item.done" => {
                start(self, &mut out, &Value::Null);
                let item = &v["item"];
                match item["type"].as_str() {
                    // Minimal streams carry everything in the finished item.
                    Some("message") if !self.text_seen.contains_key(&index) => {
                        let mut parts = Vec::new();
                        item_parts(item, &mut parts);
                        for part in parts {
                            if let Part::Text { text } = part {
                                out.push(StreamEvent::TextDelta {
                                    text: text.into_string(),
                                });
                            }
                        }
                    }
                    Some("reasoning") => {
                        if let Some(signature) = item["encrypted_content"].as_str() {
                            out.push(StreamEvent::ThinkingSignature {
                                signature: signature.to_string(),
                            });
                        }
                    }
                    Some(t @ ("function_call" | "custom_tool_call")) => {
                        let custom = t == "custom_tool_call";
                        if self.tools_started.insert(index) {
                            // The `added` event was skipped: start the call here.
                            self.saw_tool = true;
                            out.push(StreamEvent::ToolCallStart {
                                index,
                                id: item["call_id"].as_str().unwrap_or_default().to_string(),
                                name: flat_name(
                                    item["namespace"].as_str(),
                                    item["name"].as_str().unwrap_or_default(),
                                ),
                                kind: if custom {
                                    ToolKind::Custom
                                } else {
                                    ToolKind::Function
                                },
                            });
                        }
                        if !self.args_seen.contains_key(&index) {
                            let arguments = if custom {
                                item["input"].as_str().unwrap_or_default().to_string()
                            } else {
                                arguments_text(item.get("arguments"))
                            };
                            out.push(StreamEvent::ToolCallDelta { index, arguments });
                        }
                    }
                    _ => {}
                }
            }
            "response.completed" | "response.incomplete" => {
                self.complete = true;
                let response = &v["response"];
                start(self, &mut out, response);
                out.push(StreamEvent::Usage(usage_from(&response["usage"])));
                let stop = if kind == "response.incomplete" || response["status"] == "incomplete" {
                    StopReason::MaxTokens
                } else if self.saw_tool {
                    StopReason::ToolUse
                } else {
                    StopReason::EndTurn
                };
                out.push(StreamEvent::Stop(stop));
            }
            "response.failed" | "error" => {
                self.complete = true;
                let message = v
                    .pointer("/response/error/message")
                    .or(v.get("message"))
                    .and_then(Value::as_str)
                    .unwrap_or("upstream failed");
                return Err(ApiError::new(ErrorKind::Api, message));
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

enum Open {
    Text {
        item: usize,
        text: String,
    },
    Reasoning {
        item: usize,
        text: String,
        signature: Option<String>,
    },
}

struct PendingCall {
    output_index: usize,
    call_id: String,
    name: String,
    arguments: String,
}

/// IR -> Responses SSE for the client.
pub struct Encoder {
    tools: ClientTools,
    id: String,
    model: String,
    sequence: u64,
    started: bool,
    open: Option<Open>,
    calls: HashMap<usize, PendingCall>,
    call_order: Vec<usize>,
    output: Vec<Value>,
    usage: Usage,
    done: bool,
}

impl Encoder {
    pub fn new(request: &ir::Request) -> Encoder {
        Encoder {
            tools: ClientTools::new(request),
            id: "resp_clutch".into(),
            model: request.model.clone(),
            sequence: 0,
            started: false,
            open: None,
            calls: HashMap::new(),
            call_order: Vec::new(),
            output: Vec::new(),
            usage: Usage::default(),
            done: false,
        }
    }

    fn emit(&mut self, out: &mut Vec<u8>, kind: &str, mut data: Value) {
        data["type"] = json!(kind);
        data["sequence_number"] = json!(self.sequence);
        self.sequence += 1;
        sse::write_json(out, Some(kind), &data);
    }

    fn ensure_started(&mut self, out: &mut Vec<u8>) {
        if self.started {
            return;
        }
        self.started = true;
        let response = response_object(&self.id, &self.model, "in_progress", Vec::new(), None);
        self.emit(out, "response.created", json!({"response": response}));
        let response = response_object(&self.id, &self.model, "in_progress", Vec::new(), None);
        self.emit(out, "response.in_progress", json!({"response": response}));
    }

    fn next_index(&self) -> usize {
        self.output.len() + usize::from(self.open.is_some()) + self.calls.len()
    }

    fn close_open(&mut self, out: &mut Vec<u8>) {
        match self.open.take() {
            None => {}
            Some(Open::Text { item, text }) => {
                let item_id = format!("msg_{item}");
                self.emit(out, "response.output_text.done", json!({"item_id": item_id, "output_index": item, "content_index": 0, "text": text}));
                let part = json!({"type": "output_text", "text": text, "annotations": []});
                self.emit(out, "response.content_part.done", json!({"item_id": item_id, "output_index": item, "content_index": 0, "part": part}));
                let done = json!({"type": "message", "id": item_id, "status": "completed", "role": "assistant", "content": [part]});
                self.emit(
                    out,
                    "response.output_item.done",
                    json!({"output_index": item, "item": done}),
                );
                self.output.push(done);
            }
            Some(Open::Reasoning {
                item,
                text,
                signature,
            }) => {
                let item_id = format!("rs_{item}");
                self.emit(out, "response.reasoning_summary_text.done", json!({"item_id": item_id, "output_index": item, "summary_index": 0, "text": text}));
                let part = json!({"type": "summary_text", "text": text});
                self.emit(out, "response.reasoning_summary_part.done", json!({"item_id": item_id, "output_index": item, "summary_index": 0, "part": part}));
                let mut done = json!({"type": "reasoning", "id": item_id, "summary": [part]});
                if let Some(signature) = signature {
                    done["encrypted_content"] = json!(signature);
                }
                self.emit(
                    out,
                    "response.output_item.done",
                    json!({"output_index": item, "item": done}),
                );
                self.output.push(done);
            }
        }
    }

    fn flush_calls(&mut self, out: &mut Vec<u8>) {
        for upstream_index in std::mem::take(&mut self.call_order) {
            let Some(call) = self.calls.remove(&upstream_index) else {
                continue;
            };
            let item_id = format!("fc_{}", call.output_index);
            let custom = self.tools.is_custom(&call.name);
            if custom {
                self.emit(out, "response.custom_tool_call_input.done", json!({"item_id": item_id, "output_index": call.output_index, "input": custom_input(&call.arguments)}));
            } else {
                self.emit(out, "response.function_call_arguments.done", json!({"item_id": item_id, "output_index": call.output_index, "arguments": call.arguments}));
            }
            let item = self.tools.item(
                &item_id,
                &call.call_id,
                &call.name,
                &call.arguments,
                "completed",
            );
            self.emit(
                out,
                "response.output_item.done",
                json!({"output_index": call.output_index, "item": item}),
            );
            self.output.push(item);
        }
    }
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
                    if !model.is_empty() {
                        self.model = model.clone();
                    }
                }
            }
            StreamEvent::Usage(usage) => self.usage.merge(usage),
            StreamEvent::TextDelta { text } => {
                self.ensure_started(out);
                if !matches!(self.open, Some(Open::Text { .. })) {
                    self.flush_calls(out);
                    self.close_open(out);
                    let item = self.next_index();
                    let item_id = format!("msg_{item}");
                    self.emit(out, "response.output_item.added", json!({"output_index": item,
                        "item": {"type": "message", "id": item_id, "status": "in_progress", "role": "assistant", "content": []}}));
                    self.emit(
                        out,
                        "response.content_part.added",
                        json!({"item_id": item_id, "output_index": item, "content_index": 0,
                        "part": {"type": "output_text", "text": "", "annotations": []}}),
                    );
                    self.open = Some(Open::Text {
                        item,
                        text: String::new(),
                    });
                }
                if let Some(Open::Text { item, text: buffer }) = &mut self.open {
                    buffer.push_str(text);
                    let item = *item;
                    self.emit(out, "response.output_text.delta", json!({"item_id": format!("msg_{item}"), "output_index": item, "content_index": 0, "delta": text}));
                }
            }
            StreamEvent::ThinkingDelta { .. } | StreamEvent::ThinkingSignature { .. } => {
                self.ensure_started(out);
                if !matches!(self.open, Some(Open::Reasoning { .. })) {
                    self.flush_calls(out);
                    self.close_open(out);
                    let item = self.next_index();
                    let item_id = format!("rs_{item}");
                    self.emit(
                        out,
                        "response.output_item.added",
                        json!({"output_index": item,
                        "item": {"type": "reasoning", "id": item_id, "summary": []}}),
                    );
                    self.emit(
                        out,
                        "response.reasoning_summary_part.added",
                        json!({"item_id": item_id, "output_index": item, "summary_index": 0,
                        "part": {"type": "summary_text", "text": ""}}),
                    );
                    self.open = Some(Open::Reasoning {
                        item,
                        text: String::new(),
                        signature: None,
                    });
                }
                if let Some(Open::Reasoning {
                    item,
                    text,
                    signature,
                }) = &mut self.open
                {
                    let item = *item;
                    match event {
                        StreamEvent::ThinkingDelta { text: delta } => {
                            text.push_str(delta);
                            let delta = delta.clone();
                            self.emit(out, "response.reasoning_summary_text.delta", json!({"item_id": format!("rs_{item}"), "output_index": item, "summary_index": 0, "delta": delta}));
                        }
                        StreamEvent::ThinkingSignature { signature: s } => {
                            *signature = Some(s.clone())
                        }
                        _ => {}
                    }
                }
            }
            StreamEvent::ToolCallStart {
                index, id, name, ..
            } => {
                self.ensure_started(out);
                self.close_open(out);
                let output_index = self.next_index();
                let item_id = format!("fc_{output_index}");
                let item = self.tools.item(&item_id, id, name, "", "in_progress");
                self.emit(
                    out,
                    "response.output_item.added",
                    json!({"output_index": output_index, "item": item}),
                );
                self.calls.insert(
                    *index,
                    PendingCall {
                        output_index,
                        call_id: id.clone(),
                        name: name.clone(),
                        arguments: String::new(),
                    },
                );
                self.call_order.push(*index);
            }
            StreamEvent::ToolCallDelta { index, arguments } => {
                if let Some(call) = self.calls.get_mut(index) {
                    call.arguments.push_str(arguments);
                    // A custom tool's input is only known once its JSON wrapper is complete.
                    if !self.tools.is_custom(&call.name) {
                        let (item_id, output_index) =
                            (format!("fc_{}", call.output_index), call.output_index);
                        self.emit(out, "response.function_call_arguments.delta", json!({"item_id": item_id, "output_index": output_index, "delta": arguments}));
                    }
                }
            }
            StreamEvent::Stop(stop) => {
                self.ensure_started(out);
                self.close_open(out);
                self.flush_calls(out);
                let (kind, status) = if *stop == StopReason::MaxTokens {
                    ("response.completed", "incomplete")
                } else {
                    ("response.completed", "completed")
                };
                let response = response_object(
                    &self.id,
                    &self.model,
                    status,
                    self.output.clone(),
                    Some(&self.usage),
                );
                self.emit(out, kind, json!({"response": response}));
                self.done = true;
            }
        }
    }

    fn error(&mut self, error: &ApiError, out: &mut Vec<u8>) {
        if !self.done {
            self.done = true;
            stream_error(error, self.sequence, out);
        }
    }
}
