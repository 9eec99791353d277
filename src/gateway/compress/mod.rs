//! Tool-output compression: fewer tokens for the outputs coding agents resend every turn,
//! with nothing a model needs lost and the provider's prompt cache intact.
//!
//! [`compress`] is a pure function of one output and the command that produced it: never of
//! its place in the conversation, the turn, the time or other messages. A conversation's
//! prefix therefore compresses to the same bytes on every turn and the prompt cache keeps
//! hitting (the bug of the systems we replace: windows of "the last N messages" rewrote
//! history differently each turn). What is kept, always: error and warning lines with their
//! locations, failing tests and their assertion messages, paths, line numbers, branch names,
//! commit ids, summary and count lines, exit status. A condensed output ends with one line
//! naming the original in the recall store ([`store`]), so `xx recall <id>` brings it back.
//!
//! The gateway applies it to the tool results of a decoded request ([`body`]); `xx compress`
//! runs it on stdin.

pub mod body;
mod build;
mod cargo;
pub mod cli;
mod detect;
mod git;
mod json;
mod lines;
mod node;
mod python;
mod search;
pub mod store;

pub use detect::Kind;
use lines::Out;

/// When and how much to condense. Part of the pure function's input: the same settings give
/// the same bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Outputs shorter than this (bytes) are left alone.
    pub min_bytes: usize,
    /// A file read is kept verbatim up to this size: the agent may edit it next with an
    /// exact-match tool.
    pub read_max_bytes: usize,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            min_bytes: 2048,
            read_max_bytes: 96 * 1024,
        }
    }
}

/// One tool output and what is known of where it came from.
#[derive(Debug, Clone, Copy, Default)]
pub struct Input<'a> {
    pub output: &'a str,
    /// The shell command that produced it, when the tool call says.
    pub command: Option<&'a str>,
    /// The tool's name (`Bash`, `Read`, `shell`, `read_file`…).
    pub tool: Option<&'a str>,
    /// The agent marked the result as an error: only a long uniform middle is elided.
    pub is_error: bool,
}

/// A condensed output.
#[derive(Debug, Clone, PartialEq)]
pub struct Condensed {
    /// The text to send instead, ending with the recall line.
    pub text: String,
    /// The recall id: the start of the original's SHA-256, in hex.
    pub id: String,
    pub kind: Kind,
}

impl Condensed {
    /// About how many tokens it saves against `original` (four bytes a token).
    pub fn tokens_saved(&self, original: &str) -> u64 {
        (original.len().saturating_sub(self.text.len()) / 4) as u64
    }
}

/// Condense `input`, or `None` when it is short, already compact, the output of `xx recall`
/// itself, or a file read of a size to keep verbatim.
pub fn compress(input: &Input, settings: &Settings) -> Option<Condensed> {
    let output = input.output;
    if output.len() < settings.min_bytes.max(256) {
        return None;
    }
    if input.command.is_some_and(detect::is_recall) {
        return None;
    }
    let cleaned = lines::clean(output);
    let kind = detect::kind(input.command, input.tool, &cleaned);
    if kind == Kind::Read && cleaned.len() <= settings.read_max_bytes {
        return None;
    }
    let all: Vec<&str> = lines::split(&cleaned);
    let mut out = Out::with_capacity(output.len() / 3);
    if input.is_error || kind == Kind::Read {
        lines::elide_middle(&all, &mut out, 400);
    } else {
        let mut first = Out::with_capacity(output.len() / 2);
        match kind {
            Kind::Cargo => cargo::filter(&all, &mut first),
            Kind::Git => git::filter(input.command, &all, &mut first),
            Kind::Search => search::hits(&all, &mut first),
            Kind::Listing => search::listing(&all, &mut first),
            Kind::Pytest | Kind::Pip | Kind::Lint => python::filter(kind, &all, &mut first),
            Kind::Node => node::filter(&all, &mut first),
            Kind::Build => build::filter(&all, &mut first),
            Kind::Json => {
                if !json::filter(&cleaned, &mut first) {
                    lines::generic(&all, &mut first);
                }
            }
            Kind::Log | Kind::Generic | Kind::Read => lines::generic(&all, &mut first),
        }
        let condensed = first.into_string();
        let again = lines::split(&condensed);
        match kind {
            // Every line left names a commit, a path or a changed line.
            Kind::Git | Kind::Search | Kind::Listing => {
                for line in again {
                    out.line(line);
                }
            }
            // Whatever else a filter left long is trimmed the same way everywhere.
            _ => lines::elide_middle(&again, &mut out, 600),
        }
    }
    let body = out.into_string();
    let id = store::id_of(output);
    let recall = recall_line(all.len(), lines::count(&body), &id);
    // Worth it only when it saves a fifth and more than the recall line costs.
    if body.len() + recall.len() + 1 > output.len() * 4 / 5 {
        return None;
    }
    let mut text = body;
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(&recall);
    Some(Condensed { text, id, kind })
}

/// Memoised results past this many are forgotten all at once (the memo only saves work).
const MEMO_MAX: usize = 8192;

/// The gateway's side of compression: [`compress`] behind a memo (a conversation resends
/// the same outputs every turn), and the recall store each new original goes to.
pub struct Compressor {
    store: store::Store,
    memo: std::sync::Mutex<std::collections::HashMap<u64, Memo>>,
}

struct Memo {
    len: usize,
    condensed: Option<std::sync::Arc<Condensed>>,
}

impl Compressor {
    pub fn new(store: store::Store) -> Compressor {
        Compressor {
            store,
            memo: std::sync::Mutex::new(std::collections::HashMap::new()),
        }
    }

    pub fn store(&self) -> &store::Store {
        &self.store
    }

    /// Condense the tool results of `request`, decoded from `body`: the new body, with the
    /// request patched to match (`None`: nothing to condense). `keys` are removed from
    /// originals before they are stored.
    pub fn rewrite(
        &self,
        body: &[u8],
        request: &mut crate::gateway::ir::Request,
        settings: &Settings,
        keys: &[String],
    ) -> Option<body::Rewritten> {
        let condense = |input: &Input, settings: &Settings| {
            let key = memo_key(input, settings);
            if let Some(hit) = self
                .memo
                .lock()
                .ok()?
                .get(&key)
                .filter(|m| m.len == input.output.len())
            {
                return hit.condensed.clone();
            }
            let condensed = compress(input, settings).map(std::sync::Arc::new);
            if let Some(c) = &condensed
                && let Err(error) = self.store.put(&c.id, input.output, keys)
            {
                // The condensed form still goes: its recall line then finds nothing, which
                // `xx recall` explains.
                tracing::warn!(%error, dir = %self.store.dir().display(), "cannot keep a condensed output's original");
            }
            if let Ok(mut memo) = self.memo.lock() {
                if memo.len() >= MEMO_MAX {
                    memo.clear();
                }
                memo.insert(
                    key,
                    Memo {
                        len: input.output.len(),
                        condensed: condensed.clone(),
                    },
                );
            }
            condensed
        };
        body::rewrite(body, request, settings, &condense)
    }
}

fn memo_key(input: &Input, settings: &Settings) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::hash::DefaultHasher::new();
    input.output.hash(&mut hasher);
    input.command.hash(&mut hasher);
    input.tool.hash(&mut hasher);
    input.is_error.hash(&mut hasher);
    settings.min_bytes.hash(&mut hasher);
    settings.read_max_bytes.hash(&mut hasher);
    hasher.finish()
}

/// The one line that says what was condensed and how to get it back.
pub fn recall_line(lines: usize, kept: usize, id: &str) -> String {
    format!(
        "[clutch: {} lines condensed to {}, full output: xx recall {id}]",
        thousands(lines),
        thousands(kept)
    )
}

fn thousands(n: usize) -> String {
    crate::gateway::usage::report::thousands(n as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(output: &str, command: Option<&str>) -> Option<Condensed> {
        compress(
            &Input {
                output,
                command,
                ..Input::default()
            },
            &Settings::default(),
        )
    }

    #[test]
    fn short_outputs_and_recall_are_left_alone() {
        assert!(run("a few bytes", Some("ls")).is_none());
        let long = "same line here\n".repeat(500);
        assert!(run(&long, Some("xx recall 0123456789ab")).is_none());
        let condensed = run(&long, None).expect("repeated lines condense");
        assert!(condensed.text.len() < 400, "{}", condensed.text);
        assert!(condensed.text.ends_with(&format!(
            "[clutch: 500 lines condensed to 2, full output: xx recall {}]",
            condensed.id
        )));
    }

    #[test]
    fn the_same_output_always_condenses_to_the_same_bytes() {
        let text: String = (0..800)
            .map(|i| format!("test gateway::case_{i} ... ok\n"))
            .collect();
        let a = run(&text, Some("cargo test")).unwrap();
        let b = run(&text, Some("cargo test")).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn thousands_are_grouped() {
        assert_eq!(thousands(7), "7");
        assert_eq!(thousands(1204), "1,204");
        assert_eq!(thousands(1234567), "1,234,567");
    }
}
