//! Server-sent events: an incremental parser that copes with events split across network
//! chunks (and multi-byte characters split with them), and the framing used to write them.
//! Each parsed event keeps its raw bytes so pass-through streams forward them unchanged.

use bytes::{Bytes, BytesMut};

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The `event:` field, when present.
    pub name: Option<String>,
    /// The `data:` lines, joined with `\n`.
    pub data: String,
    /// The event exactly as received, blank-line terminator included.
    pub raw: Bytes,
}

/// Feed it bytes as they arrive; it hands back complete events.
#[derive(Debug, Default)]
pub struct Parser {
    buffer: BytesMut,
    /// Where the current (undispatched) event starts in `buffer`.
    name: Option<String>,
    data: Option<String>,
    consumed: usize,
}

/// Events larger than this are a broken upstream, not a real answer.
pub const MAX_EVENT_BYTES: usize = 16 * 1024 * 1024;

impl Parser {
    pub fn new() -> Parser {
        Parser::default()
    }

    /// Add bytes; returns the events they completed.
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<Event>, String> {
        self.buffer.extend_from_slice(chunk);
        let mut events = Vec::new();
        loop {
            let rest = &self.buffer[self.consumed..];
            let Some(newline) = memchr::memchr(b'\n', rest) else {
                break;
            };
            let mut line = &rest[..newline];
            if line.last() == Some(&b'\r') {
                line = &line[..line.len() - 1];
            }
            let blank = line.is_empty();
            if !blank {
                field(
                    &mut self.name,
                    &mut self.data,
                    &String::from_utf8_lossy(line),
                );
            }
            self.consumed += newline + 1;
            if blank && let Some(event) = self.dispatch() {
                events.push(event);
            }
        }
        if self.consumed > MAX_EVENT_BYTES {
            return Err(format!("an event exceeds {MAX_EVENT_BYTES} bytes"));
        }
        Ok(events)
    }

    /// The stream ended: an event without its blank line still counts.
    pub fn finish(&mut self) -> Option<Event> {
        if self.consumed < self.buffer.len() {
            let rest = String::from_utf8_lossy(&self.buffer[self.consumed..]);
            field(&mut self.name, &mut self.data, rest.trim_end_matches('\r'));
            self.consumed = self.buffer.len();
        }
        self.dispatch()
    }

    /// Whether bytes of an unfinished event are buffered.
    pub fn has_partial(&self) -> bool {
        self.data.is_some() || self.name.is_some() || self.consumed < self.buffer.len()
    }

    fn dispatch(&mut self) -> Option<Event> {
        let raw = self.buffer.split_to(self.consumed).freeze();
        self.consumed = 0;
        let name = self.name.take();
        let data = self.data.take()?;
        Some(Event { name, data, raw })
    }
}

/// One field line of the event being read (comments and unknown fields are skipped).
fn field(name: &mut Option<String>, data: &mut Option<String>, line: &str) {
    if line.starts_with(':') {
        return;
    }
    let (field, value) = match line.split_once(':') {
        Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
        None => (line, ""),
    };
    match field {
        "event" => *name = Some(value.to_string()),
        "data" => match data {
            Some(data) => {
                data.push('\n');
                data.push_str(value);
            }
            None => *data = Some(value.to_string()),
        },
        _ => {}
    }
}

/// `event: <name>\ndata: <data>\n\n`, or only the data line when `name` is None.
pub fn frame(name: Option<&str>, data: &str) -> Bytes {
    let mut out = String::with_capacity(data.len() + 32);
    if let Some(name) = name {
        out.push_str("event: ");
        out.push_str(name);
        out.push('\n');
    }
    for line in data.split('\n') {
        out.push_str("data: ");
        out.push_str(line);
        out.push('\n');
    }
    out.push('\n');
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_split_anywhere_parse_the_same() {
        let text = "event: a\ndata: {\"x\":\"é\"}\n\n: comment\ndata: one\r\ndata: two\r\n\r\ndata: [DONE]\n\n";
        let whole = Parser::new().push(text.as_bytes()).unwrap();
        assert_eq!(whole.len(), 3);
        assert_eq!(whole[0].name.as_deref(), Some("a"));
        assert_eq!(whole[1].data, "one\ntwo");
        for split in 1..text.len() {
            let mut parser = Parser::new();
            let mut events = parser.push(&text.as_bytes()[..split]).unwrap();
            events.extend(parser.push(&text.as_bytes()[split..]).unwrap());
            let got: Vec<_> = events.iter().map(|e| (&e.name, &e.data)).collect();
            let want: Vec<_> = whole.iter().map(|e| (&e.name, &e.data)).collect();
            assert_eq!(got, want, "split at {split}");
        }
        let raw: Vec<u8> = whole.iter().flat_map(|e| e.raw.to_vec()).collect();
        assert_eq!(raw, text.as_bytes(), "raw bytes add up to the input");
    }

    #[test]
    fn an_unterminated_last_event_is_still_delivered() {
        let mut parser = Parser::new();
        assert!(parser.push(b"data: tail").unwrap().is_empty());
        assert!(parser.has_partial());
        assert_eq!(parser.finish().unwrap().data, "tail");
    }
}
