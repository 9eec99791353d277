//! The four wire protocols. Each module owns its wire types and provides one decoder and one
//! encoder for requests and responses, a stream decoder (upstream SSE -> IR events) and a
//! stream encoder (IR events -> client SSE), and its error shape. This module dispatches on
//! [`Protocol`].

pub mod anthropic;
pub mod chat;
pub mod gemini;
pub mod responses;

use serde_json::Value;

use super::ir::{self, ApiError, StreamEvent};
use super::sse;
pub use crate::agent::Protocol;

/// `T` from a JSON object only: derived impls would also take a positional array.
pub struct Object<T>(pub T);

impl<'de, T: serde::Deserialize<'de>> serde::Deserialize<'de> for Object<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor<T>(std::marker::PhantomData<T>);
        impl<'de, T: serde::Deserialize<'de>> serde::de::Visitor<'de> for Visitor<T> {
            type Value = Object<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<Object<T>, A::Error> {
                T::deserialize(serde::de::value::MapAccessDeserializer::new(map)).map(Object)
            }
        }
        d.deserialize_map(Visitor(std::marker::PhantomData))
    }
}

/// A JSON value kept as its text, null included (`#[serde(default, deserialize_with)]` on
/// an `Option`, so that only a missing field is `None`, as `Value::get` sees it).
pub(crate) fn some_raw<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Box<serde_json::value::RawValue>>, D::Error> {
    serde::Deserialize::deserialize(d).map(Some)
}

/// A typed decoder's `model`: the string, and where its value lies in `body` (`None` when it
/// is not a string, which the `Value` path refuses too).
pub(crate) fn model_of(
    body: &[u8],
    raw: &serde_json::value::RawValue,
) -> Option<(String, ir::ModelSpan)> {
    let model = serde_json::from_str::<String>(raw.get()).ok()?;
    Some((model, ir::ModelSpan::of(body, raw)))
}

/// A content field that is either one string or a list of items (blocks, parts). A long
/// string without escapes is kept as the JSON it arrived as, so it is written out again
/// without being escaped twice.
pub enum TextOrList<T> {
    Text(ir::Text),
    List(Vec<T>),
}

impl<'de, T: serde::Deserialize<'de>> serde::Deserialize<'de> for TextOrList<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor<T>(std::marker::PhantomData<T>);
        impl<'de, T: serde::Deserialize<'de>> serde::de::Visitor<'de> for Visitor<T> {
            type Value = TextOrList<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string or a list")
            }
            fn visit_borrowed_str<E: serde::de::Error>(
                self,
                text: &'de str,
            ) -> Result<Self::Value, E> {
                Ok(TextOrList::Text(ir::Text::quoting(text)))
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Self::Value, E> {
                Ok(TextOrList::Text(text.into()))
            }
            fn visit_string<E: serde::de::Error>(self, text: String) -> Result<Self::Value, E> {
                Ok(TextOrList::Text(text.into()))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Self::Value, A::Error> {
                let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(4));
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(TextOrList::List(items))
            }
        }
        d.deserialize_any(Visitor(std::marker::PhantomData))
    }
}

/// A content field that is most often one long string (a command's output, a file): taken
/// as JSON text first and kept as it arrived, escapes and all; the rarer list is then read
/// from that text. A list is scanned twice that way, so content that is usually a list stays
/// a [`TextOrList`].
pub struct MostlyText<T>(pub TextOrList<T>);

impl<'de, T: serde::Deserialize<'de>> serde::Deserialize<'de> for MostlyText<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error as _;
        let raw = <&'de serde_json::value::RawValue>::deserialize(d)?;
        if raw.get().starts_with('[') {
            let items = serde_json::from_str(raw.get()).map_err(D::Error::custom)?;
            return Ok(MostlyText(TextOrList::List(items)));
        }
        ir::Text::from_json(raw.to_owned())
            .map(|text| MostlyText(TextOrList::Text(text)))
            .ok_or_else(|| D::Error::custom("expected a string or a list"))
    }
}

/// Turns an upstream's SSE events into IR events.
pub trait StreamDecoder: Send {
    /// One upstream event; an `Err` is an error the upstream reported in the stream.
    fn event(&mut self, event: &sse::Event) -> Result<Vec<StreamEvent>, ApiError>;
    /// Whether the upstream has sent its protocol's complete terminal sequence.
    fn complete(&self) -> bool;
    /// Whether the upstream sent its protocol's closing event (`[DONE]`, `message_stop`,
    /// `response.completed`): nothing after it can change the answer, so the client's stream
    /// ends there even if the upstream leaves its body open. Gemini has no such event.
    fn finished(&self) -> bool {
        false
    }
    /// The upstream closed: anything owed (a stop implied by what was seen) is returned.
    fn finish(&mut self) -> Vec<StreamEvent> {
        Vec::new()
    }
}

/// Turns IR events into the client's SSE.
pub trait StreamEncoder: Send {
    /// Appends the client's events for `event` to `out`.
    fn event(&mut self, event: &StreamEvent, out: &mut Vec<u8>);
    /// A failure after the stream started: a protocol-correct error and the end of stream.
    fn error(&mut self, error: &ApiError, out: &mut Vec<u8>);
}

/// Tool calls held back until they are complete, for clients whose protocol cannot stream
/// them interleaved (Anthropic) or at all (Gemini).
#[derive(Debug, Default)]
pub struct PendingCalls {
    calls: Vec<PendingCall>,
}

#[derive(Debug)]
pub struct PendingCall {
    pub index: usize,
    pub id: String,
    pub name: String,
    pub arguments: String,
}

impl PendingCalls {
    pub fn start(&mut self, index: usize, id: &str, name: &str) {
        self.calls.push(PendingCall {
            index,
            id: id.to_string(),
            name: name.to_string(),
            arguments: String::new(),
        });
    }

    /// Arguments for the latest call with the upstream's `index`.
    pub fn append(&mut self, index: usize, arguments: &str) {
        if let Some(call) = self.calls.iter_mut().rev().find(|c| c.index == index) {
            call.arguments.push_str(arguments);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.calls.is_empty()
    }

    pub fn take(&mut self) -> Vec<PendingCall> {
        std::mem::take(&mut self.calls)
    }
}

/// Decode a client request body.
///
/// Anthropic, Chat and Responses each have two decoders. A typed one, on owned wire types,
/// takes the requests agents send and keeps their text as the JSON it arrived as. Whatever it
/// does not take (every malformed request among them) goes to a `Value` one, whose errors name
/// the field. Property tests hold the two to the same answers (`decode_request_both`).
pub fn decode_request(
    protocol: Protocol,
    body: &[u8],
    path_model: Option<&str>,
) -> Result<ir::Request, ApiError> {
    let mut request = match protocol {
        Protocol::Anthropic => anthropic::decode_request(body),
        Protocol::Chat => chat::decode_request(body),
        Protocol::Responses => responses::decode_request(body),
        Protocol::Gemini => gemini::decode_request(body, path_model.unwrap_or_default()),
    }?;
    request.link_tool_names();
    Ok(request)
}

/// Encode a request for an upstream of `protocol`, asking for `model`.
pub fn encode_request(protocol: Protocol, request: &ir::Request, model: &str) -> Value {
    match protocol {
        Protocol::Anthropic => anthropic::encode_request(request, model),
        Protocol::Chat => chat::encode_request(request, model),
        Protocol::Responses => responses::encode_request(request, model),
        Protocol::Gemini => gemini::encode_request(request, model),
    }
}

/// The upstream request body for `request` in `protocol`, as bytes ready to send.
pub fn encode_request_bytes(protocol: Protocol, request: &ir::Request, model: &str) -> Vec<u8> {
    match protocol {
        Protocol::Chat => chat::encode_request_bytes(request, model),
        _ => serde_json::to_vec(&encode_request(protocol, request, model))
            .expect("a JSON value serialises"),
    }
}

/// Decode an upstream's non-streaming answer.
pub fn decode_response(protocol: Protocol, body: &[u8]) -> Result<ir::Response, ApiError> {
    match protocol {
        Protocol::Anthropic => anthropic::decode_response(body),
        Protocol::Chat => chat::decode_response(body),
        Protocol::Responses => responses::decode_response(body),
        Protocol::Gemini => gemini::decode_response(body),
    }
}

/// Encode an answer for a client of `protocol`.
pub fn encode_response(
    protocol: Protocol,
    response: &ir::Response,
    request: &ir::Request,
) -> Value {
    match protocol {
        Protocol::Anthropic => anthropic::encode_response(response),
        Protocol::Chat => chat::encode_response(response),
        Protocol::Responses => responses::encode_response(response, request),
        Protocol::Gemini => gemini::encode_response(response),
    }
}

/// [`encode_response`] as the bytes of the client's body.
pub fn encode_response_bytes(
    protocol: Protocol,
    response: &ir::Response,
    request: &ir::Request,
) -> Vec<u8> {
    match protocol {
        Protocol::Anthropic => serde_json::to_vec(&anthropic::Answer::new(response)),
        _ => serde_json::to_vec(&encode_response(protocol, response, request)),
    }
    .expect("an answer serialises")
}

pub fn stream_decoder(protocol: Protocol) -> Box<dyn StreamDecoder> {
    match protocol {
        Protocol::Anthropic => Box::new(anthropic::Decoder::default()),
        Protocol::Chat => Box::new(chat::Decoder::default()),
        Protocol::Responses => Box::new(responses::Decoder::default()),
        Protocol::Gemini => Box::new(gemini::Decoder::default()),
    }
}

pub fn stream_encoder(protocol: Protocol, request: &ir::Request) -> Box<dyn StreamEncoder> {
    match protocol {
        Protocol::Anthropic => Box::new(anthropic::Encoder::default()),
        Protocol::Chat => Box::new(chat::Encoder::new(request)),
        Protocol::Responses => Box::new(responses::Encoder::new(request)),
        Protocol::Gemini => Box::new(gemini::Encoder::default()),
    }
}

/// The client's error body for `error`, in its protocol's shape.
pub fn error_body(protocol: Protocol, error: &ApiError) -> Value {
    match protocol {
        Protocol::Anthropic => anthropic::error_body(error),
        Protocol::Chat | Protocol::Responses => chat::error_body(error),
        Protocol::Gemini => gemini::error_body(error),
    }
}

/// The HTTP status a client of `protocol` gets for `error`.
pub fn error_status(protocol: Protocol, error: &ApiError) -> u16 {
    match (protocol, error.status) {
        // 529 is Anthropic's own; other clients' SDKs know 503.
        (Protocol::Anthropic, status) => status,
        (_, 529) => 503,
        (_, status) => status,
    }
}

/// The message an upstream put in its error body, whatever its shape; the body itself (or its
/// start) when it is not JSON, e.g. an HTML error page.
pub fn upstream_error_message(body: &[u8]) -> String {
    if let Ok(value) = serde_json::from_slice::<Value>(body) {
        let candidates = [
            value.pointer("/error/message"),
            value.pointer("/message"),
            value.pointer("/error"),
            value.pointer("/detail"),
        ];
        for candidate in candidates.into_iter().flatten() {
            if let Some(text) = candidate.as_str() {
                return text.to_string();
            }
        }
        return value.to_string();
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        return "(empty body)".into();
    }
    let flat: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.len() > 300 {
        let mut end = 300;
        while !flat.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}…", &flat[..end])
    } else {
        flat
    }
}

/// The error frames (and end of stream) for a stream that fails after it started, for a
/// client of `protocol`; used for forwarded streams, which have no encoder of their own.
pub fn stream_error(protocol: Protocol, error: &ApiError, out: &mut Vec<u8>) {
    match protocol {
        Protocol::Anthropic => anthropic::stream_error(error, out),
        Protocol::Chat => chat::stream_error(error, out),
        Protocol::Responses => responses::stream_error(error, 0, out),
        Protocol::Gemini => gemini::stream_error(error, out),
    }
}

/// Helpers for reading JSON with errors that name the field.
pub(crate) mod json {
    use serde_json::Value;

    use crate::gateway::ir::ApiError;

    pub fn parse(body: &[u8]) -> Result<Value, ApiError> {
        let value: Value = serde_json::from_slice(body)
            .map_err(|e| ApiError::invalid(format!("the request body is not valid JSON: {e}")))?;
        if !value.is_object() {
            return Err(ApiError::invalid("the request body must be a JSON object"));
        }
        Ok(value)
    }

    pub fn str_at<'a>(
        value: &'a Value,
        key: &str,
        path: &str,
    ) -> Result<Option<&'a str>, ApiError> {
        match value.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(ApiError::invalid(format!("{path}{key}: expected a string"))),
        }
    }

    pub fn req_str<'a>(value: &'a Value, key: &str, path: &str) -> Result<&'a str, ApiError> {
        str_at(value, key, path)?.ok_or_else(|| ApiError::invalid(format!("{path}{key}: required")))
    }

    pub fn u64_at(value: &Value, key: &str, path: &str) -> Result<Option<u64>, ApiError> {
        match value.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => as_count(v).map(Some).ok_or_else(|| {
                ApiError::invalid(format!("{path}{key}: expected a non-negative number"))
            }),
        }
    }

    /// A non-negative number as a count (a float is cut to a whole number).
    fn as_count(v: &Value) -> Option<u64> {
        v.as_u64()
            .or_else(|| v.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64))
    }

    /// A typed decoder's optional count: `None` when [`u64_at`] would refuse it.
    pub fn count(value: Option<Value>) -> Option<Option<u64>> {
        match value {
            None | Some(Value::Null) => Some(None),
            Some(v) => as_count(&v).map(Some),
        }
    }

    /// A typed decoder's optional number: `None` when [`f64_at`] would refuse it.
    pub fn number(value: Option<Value>) -> Option<Option<f64>> {
        match value {
            None | Some(Value::Null) => Some(None),
            Some(v) => v.as_f64().map(Some),
        }
    }

    pub fn f64_at(value: &Value, key: &str, path: &str) -> Result<Option<f64>, ApiError> {
        match value.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| ApiError::invalid(format!("{path}{key}: expected a number"))),
        }
    }

    pub fn bool_at(value: &Value, key: &str, path: &str) -> Result<Option<bool>, ApiError> {
        match value.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(ApiError::invalid(format!(
                "{path}{key}: expected true or false"
            ))),
        }
    }

    pub fn array_at<'a>(value: &'a Value, key: &str, path: &str) -> Result<&'a [Value], ApiError> {
        match value.get(key) {
            None | Some(Value::Null) => Ok(&[]),
            Some(Value::Array(items)) => Ok(items),
            Some(_) => Err(ApiError::invalid(format!("{path}{key}: expected an array"))),
        }
    }

    /// A string or a list of strings (stop sequences).
    pub fn strings_at(value: &Value, key: &str, path: &str) -> Result<Vec<String>, ApiError> {
        match value.get(key) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::String(s)) => Ok(vec![s.clone()]),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| {
                    v.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| ApiError::invalid(format!("{path}{key}: expected strings")))
                })
                .collect(),
            Some(_) => Err(ApiError::invalid(format!(
                "{path}{key}: expected a string or a list"
            ))),
        }
    }

    /// Tool-call arguments as JSON text: a string is kept, an object is serialised.
    pub fn arguments_text(value: Option<&Value>) -> String {
        match value {
            None | Some(Value::Null) => "{}".into(),
            Some(Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
        }
    }

    /// JSON text back into an object; anything unparsable is wrapped so nothing is lost.
    pub fn arguments_object(text: &str) -> Value {
        if text.trim().is_empty() {
            return Value::Object(Default::default());
        }
        match serde_json::from_str::<Value>(text) {
            Ok(value @ Value::Object(_)) => value,
            Ok(other) => serde_json::json!({ "input": other }),
            Err(_) => serde_json::json!({ "input": text }),
        }
    }
}
