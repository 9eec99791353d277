//! The canonical request, response and stream-event model every protocol converts to and
//! from, so each protocol needs one decoder, one encoder and one stream translator (2N
//! converters, not N²).
//!
//! Conventions: tool results live in user messages as parts (as in Anthropic's model);
//! tool-call arguments are JSON text; usage counts the whole prompt in `input_tokens` and the
//! cache buckets separately (Anthropic's `input_tokens` is derived on encode).

use std::borrow::Cow;

use serde::Serialize;
use serde_json::Value;
use serde_json::value::RawValue;

/// A model call, whatever protocol it arrived in.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Request {
    pub model: String,
    /// System prompt blocks, in order.
    pub system: Vec<Text>,
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
    /// Where the body's top-level `model` value lies, when the decoder saw it: forwarding
    /// then replaces those bytes without reading the body again.
    #[serde(skip)]
    pub model_span: ModelSpan,
}

/// A byte range in the request body. It says where something was written, not what was
/// asked, so any two are equal: requests decoded by different paths still compare equal.
#[derive(Debug, Clone, Default)]
pub struct ModelSpan(pub Option<std::ops::Range<usize>>);

impl PartialEq for ModelSpan {
    fn eq(&self, _: &ModelSpan) -> bool {
        true
    }
}

impl ModelSpan {
    /// The span of `value` (a string literal borrowed from `body`) within `body`.
    pub fn of(body: &[u8], value: &RawValue) -> ModelSpan {
        let start = value.get().as_ptr() as usize - body.as_ptr() as usize;
        ModelSpan(Some(start..start + value.get().len()))
    }
}

impl Request {
    /// About four characters a token, over everything the model reads: system, messages,
    /// tool calls and results, and tool schemas; a typical image counts 1600 tokens.
    pub fn estimate_tokens(&self) -> u64 {
        let mut chars: usize = self.system.iter().map(Text::len).sum();
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
                + tool.description.as_ref().map_or(0, Text::len)
                + tool.parameters.json_text().len();
        }
        (chars as u64).div_ceil(4).max(1)
    }

    /// About how many bytes the request takes written as JSON, to size the buffer it is
    /// written into (without it the buffer is copied as it doubles, several times over).
    pub fn json_size_hint(&self) -> usize {
        fn parts_len(parts: &[Part]) -> usize {
            parts
                .iter()
                .map(|part| {
                    32 + match part {
                        Part::Text { text } | Part::Thinking { text, .. } => text.json_len(),
                        Part::ToolCall(call) => 2 * call.arguments.len() + 64,
                        Part::ToolResult(result) => parts_len(&result.content) + 64,
                        Part::Image { source } => match source {
                            ImageSource::Base64 { data, .. } => data.len(),
                            ImageSource::Url { url } => url.len(),
                        },
                        Part::RedactedThinking { data } => data.len(),
                    }
                })
                .sum()
        }
        let system: usize = self.system.iter().map(Text::json_len).sum();
        let messages: usize = self.messages.iter().map(|m| 32 + parts_len(&m.parts)).sum();
        let tools: usize = self
            .tools
            .iter()
            .map(|t| {
                64 + t.name.len()
                    + t.description.as_ref().map_or(0, Text::json_len)
                    + t.parameters.json_text().len()
            })
            .sum();
        512 + system + messages + tools
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
        text: Text,
    },
    Image {
        source: ImageSource,
    },
    /// Model reasoning; never shown as visible text.
    Thinking {
        text: Text,
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
    /// The reasoning signature the provider put on the call (Gemini's `thoughtSignature`),
    /// to be handed back with it: Gemini 3 refuses a history whose calls lack one.
    pub signature: Option<String>,
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
    pub fn text(&self) -> Text {
        Text::join(
            self.content.iter().filter_map(|p| match p {
                Part::Text { text } => Some(text),
                _ => None,
            }),
            "\n",
        )
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Tool {
    pub name: String,
    pub description: Option<Text>,
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

/// Text in a request or an answer: a prompt, a message, a tool result, a tool's description.
///
/// A decoder that reads JSON keeps it as the JSON string it arrived as, quotes and escapes
/// included, so that writing it out again is a copy. Most of an agent's 50 KB turn is text
/// passed on unchanged, and unescaping it only to escape it again was the largest cost of a
/// translation. It is unescaped only when something reads it ([`Text::as_str`]).
#[derive(Clone)]
pub struct Text(TextRepr);

#[derive(Clone)]
enum TextRepr {
    Plain(String),
    /// A JSON string literal, `"..."`.
    Json(Box<RawValue>),
}

impl Text {
    /// Text from a JSON value, if it is a string that stands for text. (A JSON parser takes
    /// a lone UTF-16 surrogate escape inside a value it is not asked to read; as text it is
    /// invalid, and refused here as when reading the string.)
    pub fn from_json(raw: Box<RawValue>) -> Option<Text> {
        let literal = raw.get();
        if !literal.starts_with('"')
            || has_unicode_escape(literal) && serde_json::from_str::<String>(literal).is_err()
        {
            return None;
        }
        Some(Text(TextRepr::Json(raw)))
    }

    /// About how many bytes the text takes written as JSON (exact for text kept as JSON).
    pub fn json_len(&self) -> usize {
        match &self.0 {
            TextRepr::Plain(text) => text.len() + 2,
            TextRepr::Json(raw) => raw.get().len(),
        }
    }

    /// Text a JSON parser could borrow from its input (so it had no escapes there): the text
    /// in quotes is its literal, and is kept as that. A short text is kept plain: escaping a
    /// few bytes again costs less than building and checking a literal.
    pub fn quoting(text: &str) -> Text {
        const WORTH_QUOTING: usize = 256;
        if text.len() < WORTH_QUOTING || memchr::memchr2(b'"', b'\\', text.as_bytes()).is_some() {
            return text.into();
        }
        RawValue::from_string(format!("\"{text}\""))
            .ok()
            .and_then(Text::from_json)
            .unwrap_or_else(|| text.into())
    }

    /// The text as a JSON string literal, quotes included: as it arrived when it was kept so.
    pub fn json_literal(&self) -> Cow<'_, str> {
        match &self.0 {
            TextRepr::Plain(text) => Cow::Owned(serde_json::Value::from(text.as_str()).to_string()),
            TextRepr::Json(raw) => Cow::Borrowed(raw.get()),
        }
    }

    /// The text itself, unescaped (borrowed when there was nothing to unescape).
    pub fn as_str(&self) -> Cow<'_, str> {
        match &self.0 {
            TextRepr::Plain(text) => Cow::Borrowed(text),
            TextRepr::Json(raw) => {
                let inner = json_inner(raw);
                if has_escape(inner) {
                    Cow::Owned(serde_json::from_str(raw.get()).expect("a JSON string literal"))
                } else {
                    Cow::Borrowed(inner)
                }
            }
        }
    }

    pub fn into_string(self) -> String {
        match self.0 {
            TextRepr::Plain(text) => text,
            TextRepr::Json(_) => self.as_str().into_owned(),
        }
    }

    pub fn is_empty(&self) -> bool {
        match &self.0 {
            TextRepr::Plain(text) => text.is_empty(),
            TextRepr::Json(raw) => json_inner(raw).is_empty(),
        }
    }

    /// The length in bytes of the text once unescaped, counted without unescaping it.
    pub fn len(&self) -> usize {
        match &self.0 {
            TextRepr::Plain(text) => text.len(),
            TextRepr::Json(raw) => unescaped_len(json_inner(raw)),
        }
    }

    /// The texts one after another with `separator` between them, still as JSON when they
    /// were: joining system blocks or tool-result parts does not unescape them.
    pub fn join<'a>(texts: impl IntoIterator<Item = &'a Text>, separator: &str) -> Text {
        let mut texts = texts.into_iter().peekable();
        let Some(first) = texts.next() else {
            return Text::default();
        };
        if texts.peek().is_none() {
            return first.clone();
        }
        let separator = escaped(separator);
        let mut literal = String::with_capacity(first.len() + 64);
        literal.push('"');
        for (i, text) in std::iter::once(first).chain(texts).enumerate() {
            if i > 0 {
                literal.push_str(&separator);
            }
            match &text.0 {
                TextRepr::Plain(plain) => literal.push_str(&escaped(plain)),
                TextRepr::Json(raw) => literal.push_str(json_inner(raw)),
            }
        }
        literal.push('"');
        Text(TextRepr::Json(
            RawValue::from_string(literal).expect("joined JSON strings are a JSON string"),
        ))
    }
}

// `str::contains` and `find` with a char scan byte by byte; memchr's SIMD scan is several
// times faster over the kilobytes of an agent's prompt.
fn has_escape(inner: &str) -> bool {
    memchr::memchr(b'\\', inner.as_bytes()).is_some()
}

/// Whether a JSON string literal may hold a `\u` escape (an escaped backslash before a `u`
/// also counts; the caller then reads the string to be sure).
fn has_unicode_escape(literal: &str) -> bool {
    let bytes = literal.as_bytes();
    memchr::memchr_iter(b'\\', bytes).any(|at| bytes.get(at + 1) == Some(&b'u'))
}

/// The characters between the quotes of a JSON string literal.
fn json_inner(raw: &RawValue) -> &str {
    let literal = raw.get();
    &literal[1..literal.len() - 1]
}

/// `text` escaped as the inside of a JSON string.
fn escaped(text: &str) -> String {
    let literal = serde_json::to_string(text).expect("a string serialises");
    literal[1..literal.len() - 1].to_string()
}

/// The length in bytes of the inside of a JSON string literal once unescaped.
fn unescaped_len(inner: &str) -> usize {
    let bytes = inner.as_bytes();
    let (mut len, mut at) = (0, 0);
    while let Some(found) = memchr::memchr(b'\\', &bytes[at..]) {
        len += found;
        at += found;
        if bytes.get(at + 1) == Some(&b'u') {
            let unit = |i: usize| {
                inner
                    .get(i..i + 4)
                    .and_then(|hex| u32::from_str_radix(hex, 16).ok())
            };
            let code = unit(at + 2).unwrap_or(0xFFFD);
            if (0xD800..0xDC00).contains(&code) && inner[at + 6..].starts_with("\\u") {
                (len, at) = (len + 4, at + 12);
            } else {
                len += char::from_u32(code).map_or(3, char::len_utf8);
                at += 6;
            }
        } else {
            (len, at) = (len + 1, at + 2);
        }
    }
    len + bytes.len().saturating_sub(at)
}

impl Default for Text {
    fn default() -> Text {
        Text(TextRepr::Plain(String::new()))
    }
}

impl From<String> for Text {
    fn from(text: String) -> Text {
        Text(TextRepr::Plain(text))
    }
}

impl From<&str> for Text {
    fn from(text: &str) -> Text {
        Text(TextRepr::Plain(text.to_string()))
    }
}

/// Equal when the texts are, however each was escaped.
impl PartialEq for Text {
    fn eq(&self, other: &Text) -> bool {
        self.as_str() == other.as_str()
    }
}

impl std::fmt::Debug for Text {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&*self.as_str(), f)
    }
}

impl std::fmt::Display for Text {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.as_str())
    }
}

/// Written as a JSON string; text kept as JSON is copied as it is.
impl Serialize for Text {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match &self.0 {
            TextRepr::Plain(text) => serializer.serialize_str(text),
            TextRepr::Json(raw) => raw.serialize(serializer),
        }
    }
}

/// Read from JSON text as the string literal it is, without unescaping; anything but a
/// string is an error.
impl<'de> serde::Deserialize<'de> for Text {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Text, D::Error> {
        let raw = Box::<RawValue>::deserialize(d)?;
        Text::from_json(raw).ok_or_else(|| serde::de::Error::custom("expected a string"))
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
