//! OpenAI Chat Completions (`/v1/chat/completions`): what Qwen Code, OpenCode, Pi and Hermes
//! speak, and what most cheap providers serve.

use memchr::memmem;
use std::collections::HashMap;
use std::sync::LazyLock;

use serde_json::{Value, json};

use super::json::{self, arguments_text};
use super::{StreamDecoder, StreamEncoder};
use crate::gateway::ir::{
    self, ApiError, ErrorKind, ImageSource, Message, Part, Reasoning, Role, StopReason,
    StreamEvent, Tool, ToolCall, ToolChoice, ToolKind, ToolResult, Usage,
};
use crate::gateway::sse;

/// The schema a freeform (custom) tool gets when it must be offered as a function.
pub fn custom_tool_schema() -> Value {
    json!({"type": "object", "properties": {"input": {"type": "string", "description": "The raw input for the tool."}}, "required": ["input"]})
}

/// A custom tool's raw input, from function arguments `{"input": "..."}`.
pub fn custom_input(arguments: &str) -> String {
    match serde_json::from_str::<Value>(arguments) {
        Ok(v) => match v.get("input") {
            Some(Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
            None => arguments.to_string(),
        },
        Err(_) => arguments.to_string(),
    }
}

// ---------------------------------------------------------------- requests

pub fn decode_request(body: &[u8]) -> Result<ir::Request, ApiError> {
    inbound::decode(body).map_or_else(|| decode_request_value(body), Ok)
}

/// A system or developer message: part of the system prompt until the conversation starts,
/// then a system message where it stands.
fn push_system(request: &mut ir::Request, text: ir::Text, seen_conversation: bool) {
    if seen_conversation {
        request.messages.push(Message {
            role: Role::System,
            parts: vec![Part::Text { text }],
        });
    } else {
        request.system.push(text);
    }
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
        max_tokens: json::u64_at(&v, "max_completion_tokens", "")?.or(json::u64_at(
            &v,
            "max_tokens",
            "",
        )?),
        temperature: json::f64_at(&v, "temperature", "")?,
        top_p: json::f64_at(&v, "top_p", "")?,
        stop: json::strings_at(&v, "stop", "")?,
        stream: json::bool_at(&v, "stream", "")?.unwrap_or(false),
        parallel_tool_calls: json::bool_at(&v, "parallel_tool_calls", "")?,
        stream_usage: v
            .pointer("/stream_options/include_usage")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        ..Default::default()
    };
    let mut names: HashMap<String, String> = HashMap::new();
    let mut seen_conversation = false;
    for (i, message) in json::array_at(&v, "messages", "")?.iter().enumerate() {
        let path = format!("messages[{i}].");
        let role = json::req_str(message, "role", &path)?;
        match role {
            "system" | "developer" => push_system(
                &mut request,
                text_of(message.get("content"), &format!("{path}content"))?,
                seen_conversation,
            ),
            "user" => {
                seen_conversation = true;
                let parts = decode_user_content(message.get("content"), &format!("{path}content"))?;
                request.messages.push(Message {
                    role: Role::User,
                    parts,
                });
            }
            "assistant" => {
                seen_conversation = true;
                let mut parts = Vec::new();
                for key in ["reasoning_content", "reasoning"] {
                    if let Some(text) = json::str_at(message, key, &path)?.filter(|t| !t.is_empty())
                    {
                        parts.push(Part::Thinking {
                            text: text.into(),
                            signature: None,
                        });
                        break;
                    }
                }
                match message.get("content") {
                    None | Some(Value::Null) => {}
                    content => {
                        let text = text_of(content, &format!("{path}content"))?;
                        if !text.is_empty() {
                            parts.push(Part::Text { text });
                        }
                    }
                }
                for (j, call) in json::array_at(message, "tool_calls", &path)?
                    .iter()
                    .enumerate()
                {
                    let at = format!("{path}tool_calls[{j}].");
                    let function = call
                        .get("function")
                        .ok_or_else(|| ApiError::invalid(format!("{at}function: required")))?;
                    let id = json::req_str(call, "id", &at)?.to_string();
                    let name =
                        json::req_str(function, "name", &format!("{at}function."))?.to_string();
                    names.insert(id.clone(), name.clone());
                    parts.push(Part::ToolCall(ToolCall {
                        id,
                        name,
                        arguments: arguments_text(function.get("arguments")),
                        kind: ToolKind::Function,
                        signature: None,
                    }));
                }
                request.messages.push(Message {
                    role: Role::Assistant,
                    parts,
                });
            }
            "tool" | "function" => {
                let call_id = json::str_at(message, "tool_call_id", &path)?
                    .or(json::str_at(message, "name", &path)?)
                    .ok_or_else(|| ApiError::invalid(format!("{path}tool_call_id: required")))?
                    .to_string();
                let content =
                    decode_user_content(message.get("content"), &format!("{path}content"))?;
                push_tool_result(&mut request.messages, &names, call_id, content);
            }
            other => {
                return Err(ApiError::invalid(format!(
                    "{path}role: unknown role `{other}`"
                )));
            }
        }
    }
    for (i, tool) in json::array_at(&v, "tools", "")?.iter().enumerate() {
        let path = format!("tools[{i}].");
        match json::str_at(tool, "type", &path)? {
            Some("function") | None => {
                let f = tool
                    .get("function")
                    .ok_or_else(|| ApiError::invalid(format!("{path}function: required")))?;
                let at = format!("{path}function.");
                request.tools.push(Tool {
                    name: json::req_str(f, "name", &at)?.to_string(),
                    description: json::str_at(f, "description", &at)?.map(Into::into),
                    parameters: f
                        .get("parameters")
                        .cloned()
                        .unwrap_or_else(|| json!({"type": "object", "properties": {}}))
                        .into(),
                    kind: ToolKind::Function,
                    namespace: None,
                });
            }
            Some("custom") => {
                let c = tool.get("custom").unwrap_or(tool);
                request.tools.push(Tool {
                    name: json::req_str(c, "name", &path)?.to_string(),
                    description: json::str_at(c, "description", &path)?.map(Into::into),
                    parameters: custom_tool_schema().into(),
                    kind: ToolKind::Custom,
                    namespace: None,
                });
            }
            Some(_) => {}
        }
    }
    request.tool_choice = tool_choice_of(v.get("tool_choice"))?;
    let effort = json::str_at(&v, "reasoning_effort", "")?.map(str::to_string);
    request.reasoning = reasoning_of(effort, v.get("reasoning"));
    if let Some(schema) = v.pointer("/response_format/json_schema/schema") {
        request.json_schema = Some(schema.clone());
    }
    Ok(request)
}

/// `tool_choice`: a mode, or `{"function": {"name": ...}}` naming the one tool to call.
fn tool_choice_of(value: Option<&Value>) -> Result<Option<ToolChoice>, ApiError> {
    Ok(match value {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(match s.as_str() {
            "none" => ToolChoice::None,
            "required" => ToolChoice::Required,
            _ => ToolChoice::Auto,
        }),
        Some(obj) => Some(ToolChoice::Tool(
            obj.pointer("/function/name")
                .and_then(Value::as_str)
                .ok_or_else(|| ApiError::invalid("tool_choice.function.name: required"))?
                .to_string(),
        )),
    })
}

/// The reasoning asked for: `reasoning_effort`, or OpenRouter's `reasoning` object with an
/// effort or a token budget.
fn reasoning_of(effort: Option<String>, reasoning: Option<&Value>) -> Option<Reasoning> {
    let effort = effort.or_else(|| {
        reasoning
            .and_then(|r| r.pointer("/effort"))
            .and_then(Value::as_str)
            .map(str::to_string)
    });
    let budget = reasoning
        .and_then(|r| r.pointer("/max_tokens"))
        .and_then(Value::as_u64);
    (effort.is_some() || budget.is_some()).then_some(Reasoning {
        effort,
        budget_tokens: budget,
    })
}

/// A tool message's result, named after the call it answers. Consecutive tool messages
/// answer one assistant turn, so they are kept together in one user message.
fn push_tool_result(
    messages: &mut Vec<Message>,
    names: &HashMap<String, String>,
    call_id: String,
    content: Vec<Part>,
) {
    let result = Part::ToolResult(ToolResult {
        name: names.get(&call_id).cloned(),
        call_id,
        content,
        is_error: false,
    });
    match messages.last_mut() {
        Some(last)
            if last.role == Role::User
                && last.parts.iter().all(|p| matches!(p, Part::ToolResult(_))) =>
        {
            last.parts.push(result)
        }
        _ => messages.push(Message {
            role: Role::User,
            parts: vec![result],
        }),
    }
}

/// Text of a string-or-parts content field.
fn text_of(content: Option<&Value>, path: &str) -> Result<ir::Text, ApiError> {
    let parts = decode_user_content(content, path)?;
    let texts = parts.iter().filter_map(|p| match p {
        Part::Text { text } => Some(text),
        _ => None,
    });
    Ok(ir::Text::join(texts, "\n"))
}

fn decode_user_content(content: Option<&Value>, path: &str) -> Result<Vec<Part>, ApiError> {
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
                    Some("text") | Some("input_text") | Some("output_text") => {
                        parts.push(Part::Text {
                            text: json::req_str(item, "text", &at)?.into(),
                        })
                    }
                    Some("image_url") => {
                        let url = match item.get("image_url") {
                            Some(Value::String(s)) => s.as_str(),
                            Some(obj) => json::req_str(obj, "url", &format!("{at}image_url."))?,
                            None => {
                                return Err(ApiError::invalid(format!("{at}image_url: required")));
                            }
                        };
                        parts.push(Part::Image {
                            source: ImageSource::from_url(url),
                        });
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

/// Owned wire types for the requests chat agents send on every turn: one pass, no `Value`
/// tree per message, text and tool schemas kept as the JSON they arrived as. Whatever they
/// do not take (an unexpected type, a missing required field, a custom tool) makes
/// [`decode`] give up, and the `Value` path takes over; a request both paths accept decodes
/// the same.
mod inbound {
    use std::collections::HashMap;

    use serde::Deserialize;
    use serde_json::Value;
    use serde_json::value::RawValue;

    use super::{push_system, push_tool_result, reasoning_of, tool_choice_of};
    use crate::gateway::ir::{
        self, ImageSource, Message, Part, Role, Schema, Text, Tool, ToolCall, ToolKind,
    };
    use crate::gateway::proto::json::{arguments_text, count, number};
    use crate::gateway::proto::{Object, TextOrList, model_of, some_raw};

    #[derive(Deserialize)]
    struct Request<'a> {
        #[serde(borrow)]
        model: Option<&'a RawValue>,
        max_completion_tokens: Option<Value>,
        max_tokens: Option<Value>,
        temperature: Option<Value>,
        top_p: Option<Value>,
        stop: Option<Value>,
        stream: Option<bool>,
        parallel_tool_calls: Option<bool>,
        stream_options: Option<Value>,
        messages: Option<Vec<Object<WireMessage>>>,
        tools: Option<Vec<Object<WireTool>>>,
        tool_choice: Option<Value>,
        reasoning_effort: Option<String>,
        reasoning: Option<Value>,
        response_format: Option<Value>,
    }

    #[derive(Deserialize)]
    struct WireMessage {
        role: Option<String>,
        content: Option<Content>,
        reasoning_content: Option<Text>,
        reasoning: Option<Text>,
        tool_calls: Option<Vec<Object<WireCall>>>,
        tool_call_id: Option<String>,
        name: Option<String>,
    }

    type Content = TextOrList<Object<ContentPart>>;

    #[derive(Deserialize)]
    struct ContentPart {
        #[serde(rename = "type")]
        kind: Option<String>,
        text: Option<Text>,
        image_url: Option<ImageUrl>,
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum ImageUrl {
        Url(String),
        Object { url: String },
    }

    #[derive(Deserialize)]
    struct WireCall {
        id: Option<String>,
        function: Option<Object<WireFunction>>,
    }

    #[derive(Deserialize)]
    struct WireFunction {
        name: Option<String>,
        arguments: Option<Value>,
    }

    #[derive(Deserialize)]
    struct WireTool {
        #[serde(rename = "type")]
        kind: Option<String>,
        function: Option<Object<ToolFunction>>,
    }

    #[derive(Deserialize)]
    struct ToolFunction {
        name: Option<String>,
        description: Option<Text>,
        /// Kept even when null, as the `Value` path does; as JSON text, never taken apart.
        #[serde(default, deserialize_with = "some_raw")]
        parameters: Option<Box<RawValue>>,
    }

    /// `None` when the `Value` path would refuse it (`json::strings_at`).
    fn strings(value: Option<Value>) -> Option<Vec<String>> {
        match value {
            None | Some(Value::Null) => Some(Vec::new()),
            Some(Value::String(s)) => Some(vec![s]),
            Some(Value::Array(items)) => items
                .into_iter()
                .map(|v| match v {
                    Value::String(s) => Some(s),
                    _ => None,
                })
                .collect(),
            Some(_) => None,
        }
    }

    pub fn decode(body: &[u8]) -> Option<ir::Request> {
        let Object(wire): Object<Request> =
            serde_json::from_str(std::str::from_utf8(body).ok()?).ok()?;
        let (model, model_span) = model_of(body, wire.model?)?;
        let max_completion_tokens = count(wire.max_completion_tokens)?;
        let max_tokens = count(wire.max_tokens)?;
        let mut request = ir::Request {
            model,
            model_span,
            max_tokens: max_completion_tokens.or(max_tokens),
            temperature: number(wire.temperature)?,
            top_p: number(wire.top_p)?,
            stop: strings(wire.stop)?,
            stream: wire.stream.unwrap_or(false),
            parallel_tool_calls: wire.parallel_tool_calls,
            stream_usage: wire
                .stream_options
                .as_ref()
                .and_then(|o| o.pointer("/include_usage"))
                .and_then(Value::as_bool)
                .unwrap_or(false),
            ..Default::default()
        };
        let mut names: HashMap<String, String> = HashMap::new();
        let mut seen_conversation = false;
        for Object(message) in wire.messages.unwrap_or_default() {
            match message.role?.as_str() {
                "system" | "developer" => {
                    push_system(&mut request, text_of(message.content)?, seen_conversation)
                }
                "user" => {
                    seen_conversation = true;
                    request.messages.push(Message {
                        role: Role::User,
                        parts: parts_of(message.content)?,
                    });
                }
                "assistant" => {
                    seen_conversation = true;
                    let mut parts = Vec::new();
                    let thinking = [message.reasoning_content, message.reasoning]
                        .into_iter()
                        .flatten()
                        .find(|text| !text.is_empty());
                    if let Some(text) = thinking {
                        parts.push(Part::Thinking {
                            text,
                            signature: None,
                        });
                    }
                    if message.content.is_some() {
                        let text = text_of(message.content)?;
                        if !text.is_empty() {
                            parts.push(Part::Text { text });
                        }
                    }
                    for Object(call) in message.tool_calls.unwrap_or_default() {
                        let Object(function) = call.function?;
                        let (id, name) = (call.id?, function.name?);
                        names.insert(id.clone(), name.clone());
                        parts.push(Part::ToolCall(ToolCall {
                            id,
                            name,
                            arguments: arguments_text(function.arguments.as_ref()),
                            kind: ToolKind::Function,
                            signature: None,
                        }));
                    }
                    request.messages.push(Message {
                        role: Role::Assistant,
                        parts,
                    });
                }
                "tool" | "function" => {
                    let call_id = message.tool_call_id.or(message.name)?;
                    let content = parts_of(message.content)?;
                    push_tool_result(&mut request.messages, &names, call_id, content);
                }
                _ => return None,
            }
        }
        for Object(tool) in wire.tools.unwrap_or_default() {
            match tool.kind.as_deref() {
                Some("function") | None => {
                    let Object(function) = tool.function?;
                    request.tools.push(Tool {
                        name: function.name?,
                        description: function.description,
                        parameters: match function.parameters {
                            Some(raw) => Schema::from_raw(raw),
                            None => serde_json::json!({"type": "object", "properties": {}}).into(),
                        },
                        kind: ToolKind::Function,
                        namespace: None,
                    });
                }
                // A custom tool is left to the `Value` path.
                Some("custom") => return None,
                Some(_) => {}
            }
        }
        request.tool_choice = tool_choice_of(wire.tool_choice.as_ref()).ok()?;
        request.reasoning = reasoning_of(wire.reasoning_effort, wire.reasoning.as_ref());
        request.json_schema = wire
            .response_format
            .as_ref()
            .and_then(|f| f.pointer("/json_schema/schema"))
            .cloned();
        Some(request)
    }

    /// A string-or-parts content field as parts (`decode_user_content`).
    fn parts_of(content: Option<Content>) -> Option<Vec<Part>> {
        let items = match content {
            None => return Some(Vec::new()),
            Some(TextOrList::Text(text)) => return Some(vec![Part::Text { text }]),
            Some(TextOrList::List(items)) => items,
        };
        let mut parts = Vec::with_capacity(items.len());
        for Object(item) in items {
            match item.kind.as_deref() {
                Some("text" | "input_text" | "output_text") => {
                    parts.push(Part::Text { text: item.text? })
                }
                Some("image_url") => {
                    let url = match item.image_url? {
                        ImageUrl::Url(url) | ImageUrl::Object { url } => url,
                    };
                    parts.push(Part::Image {
                        source: ImageSource::from_url(&url),
                    });
                }
                _ => {}
            }
        }
        Some(parts)
    }

    /// The text of a string-or-parts content field, parts joined by lines (`text_of`).
    fn text_of(content: Option<Content>) -> Option<Text> {
        let parts = parts_of(content)?;
        let texts = parts.iter().filter_map(|p| match p {
            Part::Text { text } => Some(text),
            _ => None,
        });
        Some(Text::join(texts, "\n"))
    }
}

pub fn encode_request(request: &ir::Request, model: &str) -> Value {
    serde_json::to_value(out::request(request, model)).expect("plain data serialises")
}

/// The upstream body as bytes, written straight from the IR (no `Value` tree in between).
pub fn encode_request_bytes(request: &ir::Request, model: &str) -> Vec<u8> {
    let mut body = Vec::with_capacity(request.json_size_hint());
    serde_json::to_writer(&mut body, &out::request(request, model)).expect("plain data serialises");
    body
}

/// Outbound wire types that borrow from the IR, so a request is serialised without copying
/// its text into an intermediate tree.
mod out {
    use std::borrow::Cow;

    use serde::Serialize;
    use serde_json::{Value, json};

    use crate::gateway::ir::{self, Part, Role, Text, ToolChoice, ToolKind};

    #[derive(Serialize)]
    pub struct Request<'a> {
        model: &'a str,
        messages: Vec<Message<'a>>,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        tools: Vec<Tool<'a>>,
        #[serde(skip_serializing_if = "Option::is_none")]
        parallel_tool_calls: Option<bool>,
        #[serde(skip_serializing_if = "Option::is_none")]
        tool_choice: Option<Value>,
        #[serde(skip_serializing_if = "Option::is_none")]
        max_tokens: Option<u64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        temperature: Option<f64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        top_p: Option<f64>,
        #[serde(skip_serializing_if = "<[String]>::is_empty")]
        stop: &'a [String],
        #[serde(skip_serializing_if = "Option::is_none")]
        reasoning_effort: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        response_format: Option<Value>,
        stream: bool,
        #[serde(skip_serializing_if = "Option::is_none")]
        stream_options: Option<Value>,
    }

    #[derive(Serialize)]
    struct Message<'a> {
        role: &'static str,
        /// Always written: `null` for an assistant turn with only tool calls.
        content: Option<Content<'a>>,
        #[serde(skip_serializing_if = "Option::is_none")]
        tool_call_id: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        reasoning_content: Option<Text>,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        tool_calls: Vec<ToolCall<'a>>,
    }

    impl<'a> Message<'a> {
        fn text(role: &'static str, text: Cow<'a, Text>) -> Message<'a> {
            Message {
                role,
                content: Some(Content::Text(text)),
                tool_call_id: None,
                reasoning_content: None,
                tool_calls: Vec::new(),
            }
        }
    }

    #[derive(Serialize)]
    #[serde(untagged)]
    enum Content<'a> {
        Text(Cow<'a, Text>),
        Parts(Vec<ContentPart<'a>>),
    }

    #[derive(Serialize)]
    #[serde(tag = "type", rename_all = "snake_case")]
    enum ContentPart<'a> {
        Text { text: &'a Text },
        ImageUrl { image_url: ImageUrl },
    }

    #[derive(Serialize)]
    struct ImageUrl {
        url: String,
    }

    #[derive(Serialize)]
    struct ToolCall<'a> {
        id: &'a str,
        #[serde(rename = "type")]
        kind: &'static str,
        function: FunctionCall<'a>,
    }

    #[derive(Serialize)]
    struct FunctionCall<'a> {
        name: &'a str,
        arguments: Cow<'a, str>,
    }

    #[derive(Serialize)]
    struct Tool<'a> {
        #[serde(rename = "type")]
        kind: &'static str,
        function: Function<'a>,
    }

    #[derive(Serialize)]
    struct Function<'a> {
        name: &'a str,
        parameters: &'a ir::Schema,
        #[serde(skip_serializing_if = "Option::is_none")]
        description: Option<&'a Text>,
    }

    pub fn request<'a>(request: &'a ir::Request, model: &'a str) -> Request<'a> {
        let mut messages = Vec::new();
        if !request.system.is_empty() {
            messages.push(Message::text(
                "system",
                Cow::Owned(Text::join(&request.system, "\n\n")),
            ));
        }
        for message in &request.messages {
            match message.role {
                Role::System => {
                    let text = joined_text(&message.parts);
                    if !text.is_empty() {
                        messages.push(Message::text("system", text));
                    }
                }
                Role::User => user(&message.parts, &mut messages),
                Role::Assistant => {
                    let text = joined_text(&message.parts);
                    let thinking: Vec<&Text> = message
                        .parts
                        .iter()
                        .filter_map(|p| match p {
                            Part::Thinking { text, .. } if !text.is_empty() => Some(text),
                            _ => None,
                        })
                        .collect();
                    let tool_calls: Vec<ToolCall> = message
                        .parts
                        .iter()
                        .filter_map(|p| match p {
                            Part::ToolCall(call) => Some(ToolCall {
                                id: &call.id,
                                kind: "function",
                                function: FunctionCall {
                                    name: &call.name,
                                    arguments: if call.kind == ToolKind::Custom {
                                        Cow::Owned(json!({"input": call.arguments}).to_string())
                                    } else {
                                        Cow::Borrowed(&call.arguments)
                                    },
                                },
                            }),
                            _ => None,
                        })
                        .collect();
                    if text.is_empty() && tool_calls.is_empty() && thinking.is_empty() {
                        continue;
                    }
                    messages.push(Message {
                        role: "assistant",
                        content: (!text.is_empty()).then_some(Content::Text(text)),
                        tool_call_id: None,
                        reasoning_content: (!thinking.is_empty())
                            .then(|| Text::join(thinking, "\n")),
                        tool_calls,
                    });
                }
            }
        }
        let tools: Vec<Tool> = request
            .tools
            .iter()
            .map(|t| Tool {
                kind: "function",
                function: Function {
                    name: &t.name,
                    parameters: &t.parameters,
                    description: t.description.as_ref(),
                },
            })
            .collect();
        Request {
            model,
            messages,
            parallel_tool_calls: request.parallel_tool_calls.filter(|_| !tools.is_empty()),
            tools,
            tool_choice: request.tool_choice.as_ref().map(|choice| match choice {
                ToolChoice::Auto => json!("auto"),
                ToolChoice::None => json!("none"),
                ToolChoice::Required => json!("required"),
                ToolChoice::Tool(name) => json!({"type": "function", "function": {"name": name}}),
            }),
            max_tokens: request.max_tokens,
            temperature: request.temperature,
            top_p: request.top_p,
            stop: &request.stop,
            reasoning_effort: request
                .reasoning
                .as_ref()
                .map(ir::Reasoning::effort_or_from_budget),
            response_format: request.json_schema.as_ref().map(|schema| {
                json!({"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}})
            }),
            stream: request.stream,
            stream_options: request
                .stream
                .then(|| json!({"include_usage": true})),
        }
    }

    /// The text parts joined (borrowed when there is just one).
    pub(super) fn joined_text(parts: &[Part]) -> Cow<'_, Text> {
        let texts: Vec<&Text> = parts
            .iter()
            .filter_map(|p| match p {
                Part::Text { text } => Some(text),
                _ => None,
            })
            .collect();
        match texts.as_slice() {
            [only] => Cow::Borrowed(*only),
            _ => Cow::Owned(Text::join(texts, "")),
        }
    }

    /// A user turn: tool results become `tool` messages first (they must follow the
    /// assistant's calls), then the text and images beside them as a user message, so
    /// nothing is dropped.
    fn user<'a>(parts: &'a [Part], messages: &mut Vec<Message<'a>>) {
        let mut content: Vec<ContentPart> = Vec::new();
        for part in parts {
            match part {
                Part::ToolResult(result) => {
                    let mut text = result.text();
                    if result.is_error && !text.as_str().starts_with("Error") {
                        text = Text::join([&Text::from("Error: "), &text], "");
                    }
                    let mut message = Message::text("tool", Cow::Owned(text));
                    message.tool_call_id = Some(&result.call_id);
                    messages.push(message);
                    for inner in &result.content {
                        if let Part::Image { source } = inner {
                            content.push(ContentPart::ImageUrl {
                                image_url: ImageUrl {
                                    url: source.to_url(),
                                },
                            });
                        }
                    }
                }
                Part::Text { text } => content.push(ContentPart::Text { text }),
                Part::Image { source } => content.push(ContentPart::ImageUrl {
                    image_url: ImageUrl {
                        url: source.to_url(),
                    },
                }),
                _ => {}
            }
        }
        if content.is_empty() {
            return;
        }
        let texts: Option<Vec<&Text>> = content
            .iter()
            .map(|c| match c {
                ContentPart::Text { text } => Some(*text),
                ContentPart::ImageUrl { .. } => None,
            })
            .collect();
        messages.push(match texts {
            Some(texts) if texts.len() == 1 => Message::text("user", Cow::Borrowed(texts[0])),
            Some(texts) => Message::text("user", Cow::Owned(Text::join(texts, "\n"))),
            None => Message {
                role: "user",
                content: Some(Content::Parts(content)),
                tool_call_id: None,
                reasoning_content: None,
                tool_calls: Vec::new(),
            },
        });
    }
}

// ---------------------------------------------------------------- responses

fn stop_from(reason: Option<&str>) -> Option<StopReason> {
    Some(match reason? {
        "length" => StopReason::MaxTokens,
        "tool_calls" | "function_call" => StopReason::ToolUse,
        "content_filter" => StopReason::ContentFilter,
        _ => StopReason::EndTurn,
    })
}

fn stop_name(stop: StopReason) -> &'static str {
    match stop {
        StopReason::EndTurn | StopReason::StopSequence => "stop",
        StopReason::MaxTokens => "length",
        StopReason::ToolUse => "tool_calls",
        StopReason::ContentFilter => "content_filter",
    }
}

fn usage_from(u: &Value) -> Usage {
    // `Value::pointer` parses its path (and unescapes `~`) on every call; these are fixed.
    let n = |path: &[&str]| {
        path.iter()
            .try_fold(u, |v, key| v.get(key))
            .and_then(Value::as_u64)
            .unwrap_or(0)
    };
    Usage {
        input_tokens: n(&["prompt_tokens"]),
        output_tokens: n(&["completion_tokens"]),
        cache_read_tokens: n(&["prompt_tokens_details", "cached_tokens"])
            .max(n(&["prompt_cache_hit_tokens"])),
        cache_write_tokens: n(&["prompt_tokens_details", "cache_write_tokens"]),
        reasoning_tokens: n(&["completion_tokens_details", "reasoning_tokens"]),
    }
}

fn usage_wire(u: &Usage) -> Value {
    json!({
        "prompt_tokens": u.input_tokens, "completion_tokens": u.output_tokens,
        "total_tokens": u.input_tokens.saturating_add(u.output_tokens),
        "prompt_tokens_details": {"cached_tokens": u.cache_read_tokens},
        "completion_tokens_details": {"reasoning_tokens": u.reasoning_tokens},
    })
}

pub fn decode_response(body: &[u8]) -> Result<ir::Response, ApiError> {
    if let Some(response) = decode_response_typed(body) {
        return Ok(response);
    }
    decode_response_value(body)
}

/// Whether a body may hold an `"error"` key: such bodies (rare) take the `Value` path, which
/// reads an error object of any shape. Text that merely mentions it costs only the slower path.
fn mentions_error(body: &[u8]) -> bool {
    static ERROR_KEY: LazyLock<memmem::Finder<'static>> =
        LazyLock::new(|| memmem::Finder::new(b"\"error\""));
    ERROR_KEY.find(body).is_some()
}

/// The common answer through borrowing wire types; `None` (an error body, an unusual shape,
/// no choices) leaves it to the `Value` path, which reads every shape and names what is wrong.
fn decode_response_typed(body: &[u8]) -> Option<ir::Response> {
    if mentions_error(body) {
        return None;
    }
    // Reading from a `str` checks UTF-8 once for the whole body instead of once per string.
    let super::Object(completion) =
        serde_json::from_str::<super::Object<wire::Completion>>(std::str::from_utf8(body).ok()?)
            .ok()?;
    let super::Object(choice) = completion.choices?.into_iter().next()?;
    let message = choice.message.map(|m| m.0).unwrap_or_default();
    let mut parts = Vec::new();
    let thinking = [&message.reasoning_content, &message.reasoning]
        .into_iter()
        .flatten()
        .find(|text| !text.is_empty());
    if let Some(text) = thinking {
        parts.push(Part::Thinking {
            text: (**text).into(),
            signature: None,
        });
    }
    if let Some(text) = message.content.filter(|t| !t.is_empty()) {
        parts.push(Part::Text {
            text: (*text).into(),
        });
    }
    for super::Object(call) in message.tool_calls.unwrap_or_default() {
        let function = call.function.map(|f| f.0).unwrap_or_default();
        parts.push(Part::ToolCall(ToolCall {
            id: call.id.as_deref().unwrap_or("call").to_string(),
            name: function.name.unwrap_or_default().into_owned(),
            arguments: function
                .arguments
                .map_or_else(|| "{}".to_string(), wire::Str::into_owned),
            kind: ToolKind::Function,
            signature: None,
        }));
    }
    let has_calls = parts.iter().any(|p| matches!(p, Part::ToolCall(_)));
    let mut stop = stop_from(choice.finish_reason.as_deref()).unwrap_or_default();
    if has_calls && stop == StopReason::EndTurn {
        stop = StopReason::ToolUse;
    }
    Some(ir::Response {
        id: completion.id.as_deref().unwrap_or("chatcmpl").to_string(),
        model: completion.model.unwrap_or_default().into_owned(),
        parts,
        stop,
        usage: completion
            .usage
            .as_ref()
            .map(|usage| usage.0.to_ir())
            .unwrap_or_default(),
    })
}

/// The `Value` path alone (the property tests compare it with the typed path).
#[doc(hidden)]
pub fn decode_response_value(body: &[u8]) -> Result<ir::Response, ApiError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::upstream(format!("upstream answered with invalid JSON: {e}")))?;
    if let Some(error) = v.get("error") {
        return Err(decode_error_value(error, 500));
    }
    let choice = v
        .get("choices")
        .and_then(|choices| choices.get(0))
        .ok_or_else(|| ApiError::upstream("upstream answered with no choices"))?;
    let message = &choice["message"];
    let mut parts = Vec::new();
    for key in ["reasoning_content", "reasoning"] {
        if let Some(text) = message[key].as_str().filter(|t| !t.is_empty()) {
            parts.push(Part::Thinking {
                text: text.into(),
                signature: None,
            });
            break;
        }
    }
    if let Some(text) = message["content"].as_str().filter(|t| !t.is_empty()) {
        parts.push(Part::Text { text: text.into() });
    }
    for call in message["tool_calls"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[])
    {
        parts.push(Part::ToolCall(ToolCall {
            id: call["id"].as_str().unwrap_or("call").to_string(),
            name: call
                .pointer("/function/name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            arguments: arguments_text(call.pointer("/function/arguments")),
            kind: ToolKind::Function,
            signature: None,
        }));
    }
    let has_calls = parts.iter().any(|p| matches!(p, Part::ToolCall(_)));
    let mut stop = stop_from(choice["finish_reason"].as_str()).unwrap_or_default();
    if has_calls && stop == StopReason::EndTurn {
        stop = StopReason::ToolUse;
    }
    Ok(ir::Response {
        id: v["id"].as_str().unwrap_or("chatcmpl").to_string(),
        model: v["model"].as_str().unwrap_or_default().to_string(),
        parts,
        stop,
        usage: usage_from(&v["usage"]),
    })
}

pub fn encode_response(response: &ir::Response) -> Value {
    let text = out::joined_text(&response.parts);
    let mut message = json!({"role": "assistant", "content": if text.is_empty() { Value::Null } else { json!(text) }});
    let thinking: Vec<&ir::Text> = response
        .parts
        .iter()
        .filter_map(|p| match p {
            Part::Thinking { text, .. } => Some(text),
            _ => None,
        })
        .collect();
    if !thinking.is_empty() {
        message["reasoning_content"] = json!(ir::Text::join(thinking, "\n"));
    }
    let calls: Vec<Value> = response
        .parts
        .iter()
        .filter_map(|p| match p {
            Part::ToolCall(c) => Some(json!({"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}})),
            _ => None,
        })
        .collect();
    if !calls.is_empty() {
        message["tool_calls"] = Value::Array(calls);
    }
    json!({
        "id": response.id, "object": "chat.completion", "created": now(), "model": response.model,
        "choices": [{"index": 0, "message": message, "finish_reason": stop_name(response.stop)}],
        "usage": usage_wire(&response.usage),
    })
}

pub(crate) fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

// ---------------------------------------------------------------- errors

fn error_type(kind: ErrorKind) -> (&'static str, &'static str) {
    match kind {
        ErrorKind::InvalidRequest => ("invalid_request_error", "invalid_request"),
        ErrorKind::Authentication => ("authentication_error", "invalid_api_key"),
        ErrorKind::Permission => ("permission_error", "permission_denied"),
        ErrorKind::NotFound => ("not_found_error", "not_found"),
        ErrorKind::RequestTooLarge => ("invalid_request_error", "request_too_large"),
        ErrorKind::RateLimit => ("rate_limit_error", "rate_limit_exceeded"),
        ErrorKind::Overloaded => ("server_error", "overloaded"),
        ErrorKind::Timeout => ("server_error", "timeout"),
        ErrorKind::Api => ("server_error", "server_error"),
    }
}

/// OpenAI's error shape, shared by Chat Completions and Responses.
pub fn error_body(error: &ApiError) -> Value {
    let (kind, code) = error_type(error.kind);
    json!({"error": {"message": error.message, "type": kind, "param": null, "code": code}})
}

pub fn stream_error(error: &ApiError, out: &mut Vec<u8>) {
    sse::write_json(out, None, &error_body(error));
    sse::write(out, None, "[DONE]");
}

fn decode_error_value(error: &Value, status: u16) -> ApiError {
    let message = error
        .get("message")
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| error.to_string());
    let status = error
        .get("code")
        .and_then(Value::as_u64)
        .map_or(status, |c| c as u16);
    let kind = ErrorKind::from_status(status);
    ApiError {
        status: kind.status(),
        kind,
        message,
        retry_after: None,
    }
}

// ---------------------------------------------------------------- streams

/// Upstream chat SSE -> IR.
#[derive(Default)]
pub struct Decoder {
    started: bool,
    tools: std::collections::HashSet<usize>,
    stop: Option<StopReason>,
    saw_tool: bool,
    complete: bool,
    /// Decode every chunk through the `Value` path (for the test that holds both paths equal).
    value_only: bool,
}

/// Borrowing wire types for the chunks that make up nearly every stream, and for whole
/// answers: one pass, no tree, text borrowed when it has no escapes. A body they do not take
/// (another type in a field, an error) goes through the `Value` path, which decodes anything
/// the same or more leniently.
mod wire {
    use std::borrow::Cow;

    use serde::Deserialize;

    use crate::gateway::proto::Object;

    /// A string borrowed from the body when it has no escapes. A `Cow` field borrows only
    /// when it is the field's whole type; inside an `Option` serde always copies it
    /// (serde-rs/serde#2016), which cost every chunk an allocation per string.
    #[derive(Deserialize, Default)]
    #[serde(transparent)]
    pub struct Str<'a>(#[serde(borrow)] pub Cow<'a, str>);

    impl std::ops::Deref for Str<'_> {
        type Target = str;
        fn deref(&self) -> &str {
            &self.0
        }
    }

    impl Str<'_> {
        pub fn into_owned(self) -> String {
            self.0.into_owned()
        }
    }

    #[derive(Deserialize)]
    pub struct Chunk<'a> {
        #[serde(borrow)]
        pub id: Option<Str<'a>>,
        #[serde(borrow)]
        pub model: Option<Str<'a>>,
        #[serde(borrow)]
        pub choices: Option<Vec<Object<Choice<'a>>>>,
        pub usage: Option<Object<Usage>>,
    }

    /// Usage counts; a count of another type (a float, a string) makes the body take the
    /// `Value` path, which reads it as 0.
    #[derive(Deserialize)]
    pub struct Usage {
        prompt_tokens: Option<u64>,
        completion_tokens: Option<u64>,
        prompt_cache_hit_tokens: Option<u64>,
        // `Object`: a derived struct also reads a list (`[5]`), which the `Value` path reads
        // as no details.
        prompt_tokens_details: Option<Object<PromptDetails>>,
        completion_tokens_details: Option<Object<CompletionDetails>>,
    }

    #[derive(Deserialize)]
    struct PromptDetails {
        cached_tokens: Option<u64>,
        cache_write_tokens: Option<u64>,
    }

    #[derive(Deserialize)]
    struct CompletionDetails {
        reasoning_tokens: Option<u64>,
    }

    impl Usage {
        /// The same reading as `usage_from` on the `Value` path.
        pub fn to_ir(&self) -> crate::gateway::ir::Usage {
            let prompt = self.prompt_tokens_details.as_ref().map(|d| &d.0);
            crate::gateway::ir::Usage {
                input_tokens: self.prompt_tokens.unwrap_or(0),
                output_tokens: self.completion_tokens.unwrap_or(0),
                cache_read_tokens: prompt
                    .and_then(|d| d.cached_tokens)
                    .unwrap_or(0)
                    .max(self.prompt_cache_hit_tokens.unwrap_or(0)),
                cache_write_tokens: prompt.and_then(|d| d.cache_write_tokens).unwrap_or(0),
                reasoning_tokens: self
                    .completion_tokens_details
                    .as_ref()
                    .and_then(|d| d.0.reasoning_tokens)
                    .unwrap_or(0),
            }
        }
    }

    #[derive(Deserialize)]
    pub struct Choice<'a> {
        #[serde(borrow)]
        pub delta: Option<Object<Message<'a>>>,
        #[serde(borrow)]
        pub finish_reason: Option<Str<'a>>,
    }

    /// A non-streamed answer: a chunk whose choices hold a whole `message`.
    #[derive(Deserialize)]
    pub struct Completion<'a> {
        #[serde(borrow)]
        pub id: Option<Str<'a>>,
        #[serde(borrow)]
        pub model: Option<Str<'a>>,
        #[serde(borrow)]
        pub choices: Option<Vec<Object<AnswerChoice<'a>>>>,
        pub usage: Option<Object<Usage>>,
    }

    #[derive(Deserialize)]
    pub struct AnswerChoice<'a> {
        #[serde(borrow)]
        pub message: Option<Object<Message<'a>>>,
        #[serde(borrow)]
        pub finish_reason: Option<Str<'a>>,
    }

    /// A chunk's `delta`, or an answer's `message`.
    #[derive(Deserialize, Default)]
    pub struct Message<'a> {
        #[serde(borrow)]
        pub reasoning_content: Option<Str<'a>>,
        #[serde(borrow)]
        pub reasoning: Option<Str<'a>>,
        #[serde(borrow)]
        pub content: Option<Str<'a>>,
        #[serde(borrow)]
        pub tool_calls: Option<Vec<Object<Call<'a>>>>,
    }

    #[derive(Deserialize)]
    pub struct Call<'a> {
        pub index: Option<u64>,
        #[serde(borrow)]
        pub id: Option<Str<'a>>,
        #[serde(borrow)]
        pub function: Option<Object<Function<'a>>>,
    }

    #[derive(Deserialize, Default)]
    pub struct Function<'a> {
        #[serde(borrow)]
        pub name: Option<Str<'a>>,
        #[serde(borrow)]
        pub arguments: Option<Str<'a>>,
    }
}

impl Decoder {
    #[doc(hidden)]
    pub fn value_only() -> Decoder {
        Decoder {
            value_only: true,
            ..Decoder::default()
        }
    }

    fn start(&mut self, id: Option<&str>, model: Option<&str>, out: &mut Vec<StreamEvent>) {
        if !self.started {
            self.started = true;
            out.push(StreamEvent::Start {
                id: id.unwrap_or("chatcmpl").to_string(),
                model: model.unwrap_or_default().to_string(),
            });
        }
    }

    /// Reasoning (from whichever of its two fields a provider uses) and visible text.
    fn text(thinking: [Option<&str>; 2], content: Option<&str>, out: &mut Vec<StreamEvent>) {
        if let Some(text) = thinking.into_iter().flatten().find(|t| !t.is_empty()) {
            out.push(StreamEvent::ThinkingDelta {
                text: text.to_string(),
            });
        }
        if let Some(text) = content.filter(|t| !t.is_empty()) {
            out.push(StreamEvent::TextDelta {
                text: text.to_string(),
            });
        }
    }

    /// A tool call's first piece opens it; every piece may carry arguments.
    fn tool_call(
        &mut self,
        index: usize,
        id: Option<&str>,
        name: Option<&str>,
        arguments: Option<&str>,
        out: &mut Vec<StreamEvent>,
    ) {
        if self.tools.insert(index) {
            self.saw_tool = true;
            out.push(StreamEvent::ToolCallStart {
                index,
                id: id.map_or_else(|| format!("call_{index}"), str::to_string),
                name: name.unwrap_or_default().to_string(),
                kind: ToolKind::Function,
            });
        }
        if let Some(arguments) = arguments.filter(|a| !a.is_empty()) {
            out.push(StreamEvent::ToolCallDelta {
                index,
                arguments: arguments.to_string(),
            });
        }
    }

    /// A chunk through the borrowing wire types; `None` leaves it to the `Value` path.
    fn typed(&mut self, data: &str) -> Option<Vec<StreamEvent>> {
        // An error object (rare) takes the `Value` path, which reads any shape of it.
        if self.value_only || mentions_error(data.as_bytes()) {
            return None;
        }
        let super::Object(chunk) = serde_json::from_str::<super::Object<wire::Chunk>>(data).ok()?;
        let mut out = Vec::new();
        self.start(chunk.id.as_deref(), chunk.model.as_deref(), &mut out);
        for super::Object(choice) in chunk.choices.unwrap_or_default() {
            let delta = choice.delta.map(|d| d.0).unwrap_or_default();
            let thinking = [
                delta.reasoning_content.as_deref(),
                delta.reasoning.as_deref(),
            ];
            Self::text(thinking, delta.content.as_deref(), &mut out);
            for (position, super::Object(call)) in
                delta.tool_calls.unwrap_or_default().into_iter().enumerate()
            {
                let function = call.function.map(|f| f.0);
                let function = function.as_ref();
                self.tool_call(
                    call.index.map_or(position, |i| i as usize),
                    call.id.as_deref(),
                    function.and_then(|f| f.name.as_deref()),
                    function.and_then(|f| f.arguments.as_deref()),
                    &mut out,
                );
            }
            if let Some(stop) = stop_from(choice.finish_reason.as_deref()) {
                self.stop = Some(stop);
            }
        }
        if let Some(super::Object(usage)) = &chunk.usage {
            out.push(StreamEvent::Usage(usage.to_ir()));
        }
        Some(out)
    }

    fn stop_event(&self) -> StreamEvent {
        let mut stop = self.stop.unwrap_or_default();
        if self.saw_tool && stop == StopReason::EndTurn {
            stop = StopReason::ToolUse;
        }
        StreamEvent::Stop(stop)
    }
}

impl StreamDecoder for Decoder {
    fn event(&mut self, event: &sse::Event) -> Result<Vec<StreamEvent>, ApiError> {
        let data = event.data.trim();
        let mut out = Vec::new();
        if data == "[DONE]" {
            if !self.complete {
                self.complete = true;
                out.push(self.stop_event());
            }
            return Ok(out);
        }
        if data.is_empty() {
            return Ok(out);
        }
        if let Some(events) = self.typed(data) {
            return Ok(events);
        }
        let v: Value = serde_json::from_str(data)
            .map_err(|e| ApiError::upstream(format!("upstream sent a malformed chunk: {e}")))?;
        if let Some(error) = v.get("error") {
            self.complete = true;
            return Err(decode_error_value(error, 500));
        }
        self.start(v["id"].as_str(), v["model"].as_str(), &mut out);
        for choice in v["choices"].as_array().map(Vec::as_slice).unwrap_or(&[]) {
            let delta = &choice["delta"];
            let thinking = [
                delta["reasoning_content"].as_str(),
                delta["reasoning"].as_str(),
            ];
            Self::text(thinking, delta["content"].as_str(), &mut out);
            for (position, call) in delta["tool_calls"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or(&[])
                .iter()
                .enumerate()
            {
                self.tool_call(
                    call["index"].as_u64().map_or(position, |i| i as usize),
                    call["id"].as_str(),
                    call.pointer("/function/name").and_then(Value::as_str),
                    call.pointer("/function/arguments").and_then(Value::as_str),
                    &mut out,
                );
            }
            if let Some(stop) = stop_from(choice["finish_reason"].as_str()) {
                self.stop = Some(stop);
            }
        }
        if v.get("usage").is_some_and(|u| !u.is_null()) {
            out.push(StreamEvent::Usage(usage_from(&v["usage"])));
        }
        Ok(out)
    }

    fn complete(&self) -> bool {
        // `[DONE]` is optional: a finish reason already completes the answer.
        self.complete || self.stop.is_some()
    }

    /// Only `[DONE]` closes a chat stream: the usage chunk comes after the finish reason.
    fn finished(&self) -> bool {
        self.complete
    }

    fn finish(&mut self) -> Vec<StreamEvent> {
        if !self.complete && self.stop.is_some() {
            self.complete = true;
            return vec![self.stop_event()];
        }
        Vec::new()
    }
}

/// IR -> chat SSE for the client.
pub struct Encoder {
    id: String,
    model: String,
    created: u64,
    started: bool,
    include_usage: bool,
    usage: Usage,
    tool_index: HashMap<usize, usize>,
    done: bool,
}

impl Encoder {
    pub fn new(request: &ir::Request) -> Encoder {
        Encoder {
            id: "chatcmpl-clutch".into(),
            model: request.model.clone(),
            created: now(),
            started: false,
            include_usage: request.stream_usage,
            usage: Usage::default(),
            tool_index: HashMap::new(),
            done: false,
        }
    }

    fn chunk(&self, out: &mut Vec<u8>, delta: Value, finish: Option<&str>) {
        let data = json!({"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
        sse::write_json(out, None, &data);
    }

    fn ensure_started(&mut self, out: &mut Vec<u8>) {
        if !self.started {
            self.started = true;
            self.chunk(out, json!({"role": "assistant", "content": ""}), None);
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
                self.chunk(out, json!({"content": text}), None);
            }
            StreamEvent::ThinkingDelta { text } => {
                self.ensure_started(out);
                self.chunk(out, json!({"reasoning_content": text}), None);
            }
            StreamEvent::ThinkingSignature { .. } => {}
            StreamEvent::ToolCallStart {
                index, id, name, ..
            } => {
                self.ensure_started(out);
                let ours = self.tool_index.len();
                self.tool_index.insert(*index, ours);
                self.chunk(
                    out,
                    json!({"tool_calls": [{"index": ours, "id": id, "type": "function", "function": {"name": name, "arguments": ""}}]}),
                    None,
                );
            }
            StreamEvent::ToolCallDelta { index, arguments } => {
                if let Some(ours) = self.tool_index.get(index).copied() {
                    self.chunk(out, json!({"tool_calls": [{"index": ours, "function": {"arguments": arguments}}]}), None);
                }
            }
            StreamEvent::Stop(stop) => {
                self.ensure_started(out);
                self.chunk(out, json!({}), Some(stop_name(*stop)));
                if self.include_usage {
                    let data = json!({"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                        "model": self.model, "choices": [], "usage": usage_wire(&self.usage)});
                    sse::write_json(out, None, &data);
                }
                sse::write(out, None, "[DONE]");
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
    use std::borrow::Cow;

    use super::wire;

    #[test]
    fn chunk_strings_without_escapes_are_borrowed_not_copied() {
        let data = r#"{"id":"c1","model":"m","choices":[{"delta":{"content":"hi"},"finish_reason":"stop"}]}"#;
        let chunk: wire::Chunk = serde_json::from_str(data).unwrap();
        let choice = &chunk.choices.as_ref().unwrap()[0].0;
        let content = &choice.delta.as_ref().unwrap().0.content;
        for text in [&chunk.id, &chunk.model, content, &choice.finish_reason] {
            assert!(matches!(text.as_ref().unwrap().0, Cow::Borrowed(_)));
        }
        let escaped: wire::Chunk = serde_json::from_str(r#"{"id":"c\n1"}"#).unwrap();
        assert_eq!(&*escaped.id.unwrap(), "c\n1");
    }
}
