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
    /// How far past `consumed` the buffer is known to hold no newline, so a long line that
    /// arrives in many chunks is scanned once, not once per chunk.
    scanned: usize,
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
            let Some(newline) = memchr::memchr(b'\n', &rest[self.scanned..]) else {
                self.scanned = rest.len();
                break;
            };
            let newline = newline + self.scanned;
            self.scanned = 0;
            let mut line = &rest[..newline];
            if line.last() == Some(&b'\r') {
                line = &line[..line.len() - 1];
            }
            let blank = line.is_empty();
            if !blank {
                // `from_utf8` checks ASCII a word at a time; the lossy form goes byte by byte.
                let line = match std::str::from_utf8(line) {
                    Ok(line) => std::borrow::Cow::Borrowed(line),
                    Err(_) => String::from_utf8_lossy(line),
                };
                field(&mut self.name, &mut self.data, &line);
            }
            self.consumed += newline + 1;
            if blank && let Some(event) = self.dispatch() {
                events.push(event);
            }
        }
        // What is held is the unfinished event: the lines read so far and the partial one.
        if self.buffer.len() > MAX_EVENT_BYTES {
            self.buffer = BytesMut::new();
            self.consumed = 0;
            self.scanned = 0;
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
            self.scanned = 0;
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

/// Appends `event: <name>\ndata: <data>\n\n` to `out` (only the data lines when `name` is
/// None). Encoders write straight into the buffer that goes to the client, so an event costs
/// no allocation of its own.
pub fn write(out: &mut Vec<u8>, name: Option<&str>, data: &str) {
    write_name(out, name);
    for line in data.split('\n') {
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(line.as_bytes());
        out.extend_from_slice(b"\n");
    }
    out.extend_from_slice(b"\n");
}

/// Appends an event whose data is `data` serialised as JSON: one `data:` line, since JSON
/// text has no raw newlines.
pub fn write_json(out: &mut Vec<u8>, name: Option<&str>, data: &impl serde::Serialize) {
    write_name(out, name);
    out.extend_from_slice(b"data: ");
    serde_json::to_writer(&mut *out, data).expect("event data serialises");
    out.extend_from_slice(b"\n\n");
}

fn write_name(out: &mut Vec<u8>, name: Option<&str>) {
    if let Some(name) = name {
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b"\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_without_end_is_refused_once_it_holds_too_much() {
        let mut parser = Parser::new();
        let chunk = vec![b'x'; 1024 * 1024];
        parser.push(b"data: ").unwrap();
        let mut pushed = 0;
        let error = loop {
            match parser.push(&chunk) {
                Ok(events) => assert!(events.is_empty()),
                Err(error) => break error,
            }
            pushed += chunk.len();
            assert!(pushed <= MAX_EVENT_BYTES + chunk.len(), "never refused");
        };
        assert!(error.contains("exceeds"), "{error}");
        assert!(
            parser.buffer.capacity() <= MAX_EVENT_BYTES,
            "the buffer was let go"
        );
        // Many small events in a row are never refused, whatever their total.
        let mut parser = Parser::new();
        for _ in 0..40 {
            let events = parser
                .push(&[b"data: ", &chunk[..], b"\n\n"].concat())
                .unwrap();
            assert_eq!(events.len(), 1);
        }
    }

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
