//! The canonical request, response and stream-event model every protocol converts to and
//! from, so each protocol needs one decoder, one encoder and one stream translator (2N
//! converters, not N²).
//!
//! Conventions: tool results live in user messages as parts (as in Anthropic's model);
//! tool-call arguments are JSON text; usage counts the whole prompt in `input_tokens` and the
//! cache buckets separately (Anthropic's `input_tokens` is derived on encode).

use serde::Serialize;
use serde_json::Value;

/// A model call, whatever protocol it arrived in.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Request {
    pub model: String,
    /// System prompt blocks, in order.
    pub system: Vec<String>,
    pub messages: Vec<Message>,
    pub tools: Vec<Tool>,
    pub tool_choice: Option<ToolChoice>,
    pub max_tokens: Option<u64>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub stop: Vec<String>,
    pub stream: bool,
    pub reasoning: Option<Reasoning>,
    pub parallel_tool_calls: Option<bool>,
    /// Structured output: the JSON schema the answer must satisfy.
    pub json_schema: Option<Value>,
    /// A Chat Completions client asked for usage in the stream (`stream_options`).
    pub stream_usage: bool,
}

impl Request {
    /// About four characters a token, over everything the model reads: system, messages,
    /// tool calls and results, and tool schemas; a typical image counts 1600 tokens.
    pub fn estimate_tokens(&self) -> u64 {
        let mut chars: usize = self.system.iter().map(String::len).sum();
        for message in &self.messages {
            for part in &message.parts {
                chars += match part {
                    Part::Text { text } | Part::Thinking { text, .. } => text.len(),
                    Part::ToolCall(call) => call.name.len() + call.arguments.len(),
                    Part::ToolResult(result) => result.text().len(),
                    Part::Image { .. } => 6400,
                    Part::RedactedThinking { data } => data.len(),
                };
            }
        }
        for tool in &self.tools {
            chars += tool.name.len()
                + tool.description.as_deref().map_or(0, str::len)
                + tool.parameters.json_text().len();
        }
        (chars as u64).div_ceil(4).max(1)
    }

    /// Give every tool result the name of the call it answers (protocols that match results by
    /// name, like Gemini, need it; others only carry the id).
    pub fn link_tool_names(&mut self) {
        let mut names = std::collections::HashMap::new();
        for message in &mut self.messages {
            for part in &mut message.parts {
                match part {
                    Part::ToolCall(call) => {
                        names.insert(call.id.clone(), call.name.clone());
                    }
                    Part::ToolResult(result) if result.name.is_none() => {
                        result.name = names.get(&result.call_id).cloned();
                    }
                    _ => {}
                }
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    User,
    Assistant,
    /// A system message in the middle of the conversation (Claude Code sends these).
    System,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Message {
    pub role: Role,
    pub parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Part {
    Text {
        text: String,
    },
    Image {
        source: ImageSource,
    },
    /// Model reasoning; never shown as visible text.
    Thinking {
        text: String,
        signature: Option<String>,
    },
    RedactedThinking {
        data: String,
    },
    ToolCall(ToolCall),
    ToolResult(ToolResult),
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ImageSource {
    Base64 { media_type: String, data: String },
    Url { url: String },
}

impl ImageSource {
    /// A `data:` URL for base64 images, the URL itself otherwise.
    pub fn to_url(&self) -> String {
        match self {
            ImageSource::Base64 { media_type, data } => format!("data:{media_type};base64,{data}"),
            ImageSource::Url { url } => url.clone(),
        }
    }

    /// Parses `data:<type>;base64,<data>` back into base64 form.
    pub fn from_url(url: &str) -> ImageSource {
        if let Some(rest) = url.strip_prefix("data:")
            && let Some((media_type, data)) = rest.split_once(";base64,")
        {
            return ImageSource::Base64 {
                media_type: media_type.to_string(),
                data: data.to_string(),
            };
        }
        ImageSource::Url {
            url: url.to_string(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    /// JSON text (for custom tools: the raw input string).
    pub arguments: String,
    pub kind: ToolKind,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ToolResult {
    pub call_id: String,
    /// The called tool's name, when known (Gemini needs it).
    pub name: Option<String>,
    /// Text and image parts.
    pub content: Vec<Part>,
    pub is_error: bool,
}

impl ToolResult {
    /// The text of the result, parts joined.
    pub fn text(&self) -> String {
        let texts: Vec<&str> = self
            .content
            .iter()
            .filter_map(|p| match p {
                Part::Text { text } => Some(text.as_str()),
                _ => None,
            })
            .collect();
        texts.join("\n")
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Tool {
    pub name: String,
    pub description: Option<String>,
    /// JSON schema of the arguments (for custom tools: a one-string `input` object).
    pub parameters: Schema,
    pub kind: ToolKind,
    /// The namespace a Responses client grouped the tool in; `name` is then `<ns>__<name>`.
    pub namespace: Option<String>,
}

/// A JSON schema kept as the JSON text it arrived as. Agents send a dozen or more large tool
/// schemas on every turn and most routes pass them on unchanged, so they are not taken apart
/// into a tree only to be written out again; the properties also keep the client's order.
#[derive(Debug, Clone)]
pub struct Schema(Box<serde_json::value::RawValue>);

impl Schema {
    pub fn from_raw(raw: Box<serde_json::value::RawValue>) -> Schema {
        Schema(raw)
    }

    pub fn to_value(&self) -> Value {
        serde_json::from_str(self.0.get()).expect("a schema holds valid JSON")
    }

    pub fn json_text(&self) -> &str {
        self.0.get()
    }
}

impl From<Value> for Schema {
    fn from(value: Value) -> Schema {
        Schema(serde_json::value::to_raw_value(&value).expect("a JSON value serialises"))
    }
}

/// Equal when they mean the same JSON, whatever the spacing or key order.
impl PartialEq for Schema {
    fn eq(&self, other: &Schema) -> bool {
        self.json_text() == other.json_text() || self.to_value() == other.to_value()
    }
}

impl Serialize for Schema {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

/// A function with JSON arguments, or a freeform tool that takes raw text (Codex's `exec`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ToolKind {
    Function,
    Custom,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", content = "name", rename_all = "snake_case")]
pub enum ToolChoice {
    Auto,
    None,
    Required,
    Tool(String),
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Reasoning {
    /// `low`, `medium`, `high` (or a protocol's other levels).
    pub effort: Option<String>,
    pub budget_tokens: Option<u64>,
}

impl Reasoning {
    /// An effort level for protocols that only take one.
    pub fn effort_or_from_budget(&self) -> String {
        if let Some(effort) = &self.effort {
            return effort.clone();
        }
        match self.budget_tokens {
            Some(b) if b < 4096 => "low".into(),
            Some(b) if b >= 16384 => "high".into(),
            _ => "medium".into(),
        }
    }

    /// A token budget for protocols that only take one.
    pub fn budget_or_from_effort(&self) -> u64 {
        if let Some(budget) = self.budget_tokens {
            return budget;
        }
        match self.effort.as_deref() {
            Some("minimal" | "low") => 2048,
            Some("high" | "xhigh" | "max") => 24576,
            _ => 8192,
        }
    }
}

/// A complete answer.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Response {
    pub id: String,
    pub model: String,
    pub parts: Vec<Part>,
    pub stop: StopReason,
    pub usage: Usage,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    #[default]
    EndTurn,
    MaxTokens,
    StopSequence,
    ToolUse,
    ContentFilter,
}

/// Token counts. `input_tokens` is the whole prompt, cache reads and writes included.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_read_tokens: u64,
    pub cache_write_tokens: u64,
    pub reasoning_tokens: u64,
}

impl Usage {
    /// Anthropic's `input_tokens`: the prompt minus both cache buckets (the three-bucket
    /// invariant Claude Code's context meter relies on).
    pub fn anthropic_input(&self) -> u64 {
        self.input_tokens
            .saturating_sub(self.cache_read_tokens)
            .saturating_sub(self.cache_write_tokens)
    }

    /// Keep the larger of each count: streams report usage piecemeal.
    pub fn merge(&mut self, other: &Usage) {
        self.input_tokens = self.input_tokens.max(other.input_tokens);
        self.output_tokens = self.output_tokens.max(other.output_tokens);
        self.cache_read_tokens = self.cache_read_tokens.max(other.cache_read_tokens);
        self.cache_write_tokens = self.cache_write_tokens.max(other.cache_write_tokens);
        self.reasoning_tokens = self.reasoning_tokens.max(other.reasoning_tokens);
    }
}

/// One step of a streamed answer. Content arrives as deltas on numbered blocks; a block ends
/// when another starts or the stream stops.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum StreamEvent {
    Start {
        id: String,
        model: String,
    },
    TextDelta {
        text: String,
    },
    ThinkingDelta {
        text: String,
    },
    ThinkingSignature {
        signature: String,
    },
    /// A new tool call begins; `index` is the upstream's own numbering of calls.
    ToolCallStart {
        index: usize,
        id: String,
        name: String,
        kind: ToolKind,
    },
    ToolCallDelta {
        index: usize,
        arguments: String,
    },
    Usage(Usage),
    /// The answer is complete.
    Stop(StopReason),
}

/// What went wrong, in terms every protocol can express.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    InvalidRequest,
    Authentication,
    Permission,
    NotFound,
    RequestTooLarge,
    RateLimit,
    Overloaded,
    Timeout,
    Api,
}

impl ErrorKind {
    /// The kind an HTTP status stands for.
    pub fn from_status(status: u16) -> ErrorKind {
        match status {
            400 | 422 => ErrorKind::InvalidRequest,
            401 => ErrorKind::Authentication,
            403 => ErrorKind::Permission,
            404 => ErrorKind::NotFound,
            408 | 504 => ErrorKind::Timeout,
            413 => ErrorKind::RequestTooLarge,
            429 => ErrorKind::RateLimit,
            503 | 529 => ErrorKind::Overloaded,
            _ => ErrorKind::Api,
        }
    }

    /// The status a client sees for this kind.
    pub fn status(self) -> u16 {
        match self {
            ErrorKind::InvalidRequest => 400,
            ErrorKind::Authentication => 401,
            ErrorKind::Permission => 403,
            ErrorKind::NotFound => 404,
            ErrorKind::RequestTooLarge => 413,
            ErrorKind::RateLimit => 429,
            ErrorKind::Overloaded => 503,
            ErrorKind::Timeout => 504,
            ErrorKind::Api => 500,
        }
    }
}

/// An error to report to the client in its own protocol's shape.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ApiError {
    pub status: u16,
    pub kind: ErrorKind,
    pub message: String,
    /// Seconds the client should wait, from an upstream `Retry-After`.
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> ApiError {
        ApiError {
            status: kind.status(),
            kind,
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorKind::InvalidRequest, message)
    }

    /// The upstream misbehaved (unreadable answer, broken stream): a 502.
    pub fn upstream(message: impl Into<String>) -> ApiError {
        ApiError {
            status: 502,
            kind: ErrorKind::Api,
            message: message.into(),
            retry_after: None,
        }
    }
}
