//! Line tools every filter shares: terminal clean-up, the lines that must always survive,
//! runs of near-identical lines collapsed with a count, and a long middle elided.

use std::borrow::Cow;

/// The condensed text as it is built, a line at a time.
pub struct Out {
    text: String,
}

impl Out {
    pub fn with_capacity(bytes: usize) -> Out {
        Out {
            text: String::with_capacity(bytes),
        }
    }

    pub fn line(&mut self, line: &str) {
        self.text.push_str(line);
        self.text.push('\n');
    }

    /// A line that says what was left out.
    pub fn omitted(&mut self, indent: &str, what: std::fmt::Arguments) {
        self.text.push_str(indent);
        self.text.push_str("[clutch: ");
        std::fmt::Write::write_fmt(&mut self.text, what).expect("writing to a String");
        self.text.push_str("]\n");
    }

    pub fn into_string(mut self) -> String {
        while self.text.ends_with('\n') {
            self.text.pop();
        }
        self.text
    }
}

/// Terminal noise removed: ANSI escapes, and lines a carriage return overwrote (a progress
/// bar keeps only what was last drawn).
pub fn clean(text: &str) -> Cow<'_, str> {
    if !text.bytes().any(|b| b == 0x1b || b == b'\r') {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    for line in text.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        let line = match line.rfind('\r') {
            Some(at) => &line[at + 1..],
            None => line,
        };
        strip_ansi(line, &mut out);
        out.push('\n');
    }
    out.pop();
    Cow::Owned(out)
}

fn strip_ansi(line: &str, out: &mut String) {
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\x1b' {
            out.push(c);
            continue;
        }
        match chars.next() {
            // CSI: parameters, then one final byte in @..~
            Some('[') => {
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
            // OSC: up to BEL or ESC \
            Some(']') => {
                while let Some(c) = chars.next() {
                    if c == '\x07' {
                        break;
                    }
                    if c == '\x1b' {
                        chars.next();
                        break;
                    }
                }
            }
            _ => {}
        }
    }
}

pub fn split(text: &str) -> Vec<&str> {
    if text.is_empty() {
        return Vec::new();
    }
    text.strip_suffix('\n')
        .unwrap_or(text)
        .split('\n')
        .collect()
}

pub fn count(text: &str) -> usize {
    if text.is_empty() {
        0
    } else {
        memchr::memchr_iter(b'\n', text.as_bytes()).count() + 1
    }
}

const VITAL: [&str; 24] = [
    "error",
    "Error",
    "ERROR",
    "warning",
    "Warning",
    "WARN",
    "FAIL",
    "Fail",
    "fail",
    "panicked",
    "Traceback",
    "Exception",
    "exception",
    "fatal",
    "FATAL",
    "Abort",
    "abort",
    "denied",
    "No such file",
    "not found",
    "xit code",
    "xit status",
    "assert",
    "Assert",
];

/// A line no generic pass may drop or fold into a count: it reports a problem or an exit.
pub fn is_vital(line: &str) -> bool {
    // Every marker holds one of these bytes; most lines hold none of the words.
    let bytes = line.as_bytes();
    if memchr::memchr3(b'r', b'R', b'a', bytes).is_none()
        && memchr::memchr3(b'i', b'I', b'x', bytes).is_none()
    {
        return false;
    }
    VITAL.iter().any(|word| line.contains(word))
}

/// A vital line, or a diagnostic's place (`--> src/x.rs:3:5`): never folded.
fn is_kept(line: &str) -> bool {
    is_vital(line) || line.trim_start().starts_with("--> ")
}

/// What a line looks like with its particulars masked: lines of one shape differ only in
/// names and numbers (`Compiling serde v1.0.1`, `npm http fetch GET 200 … 12ms`).
fn shape(line: &str) -> (usize, u64, u64, usize) {
    let indent = line.len() - line.trim_start().len();
    let mut tokens = line.split_whitespace();
    let first = tokens.next().map_or(0, mask_hash);
    let mut count = usize::from(first != 0);
    let mut last = 0;
    for token in tokens {
        last = mask_hash(token);
        count += 1;
    }
    (indent, first, last, count.min(8))
}

/// A hash of `token` with its digits and hex runs treated as equal.
fn mask_hash(token: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut previous_digit = false;
    for b in token.bytes() {
        let b = if b.is_ascii_digit() { b'0' } else { b };
        if b == b'0' && previous_digit {
            continue;
        }
        previous_digit = b == b'0';
        hash = (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

fn is_progress(line: &str) -> bool {
    [
        '█', '░', '▓', '━', '⣿', '⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏',
    ]
    .iter()
    .any(|c| line.contains(*c))
        || (line.contains("[=") && line.contains(">"))
}

/// The fallback for any output: progress bars dropped, repeated lines and runs of
/// near-identical lines collapsed with a count, repeated blocks (a recursion's traceback
/// frames) folded.
pub fn generic(lines: &[&str], out: &mut Out) {
    let kept: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|line| is_vital(line) || !is_progress(line))
        .collect();
    collapse(&kept, out);
}

/// Runs of the same line, of lines of one shape, and repeated blocks of up to four lines,
/// each folded into its first lines and a count. Vital lines are never folded.
pub fn collapse(lines: &[&str], out: &mut Out) {
    let shapes: Vec<(usize, u64, u64, usize)> = lines.iter().map(|l| shape(l)).collect();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        if line.trim().is_empty() {
            // Runs of blank lines become one.
            let mut j = i + 1;
            while j < lines.len() && lines[j].trim().is_empty() {
                j += 1;
            }
            out.line("");
            i = j;
            continue;
        }
        // A block of 2..=4 lines repeated at least three times in a row.
        if let Some((period, times)) = repeated_block(lines, i) {
            for line in &lines[i..i + period] {
                out.line(line);
            }
            out.omitted(
                indent_of(line),
                format_args!("the {period} lines above repeated {} more times", times - 1),
            );
            i += period * times;
            continue;
        }
        let mut j = i + 1;
        while j < lines.len() && lines[j] == line {
            j += 1;
        }
        if j - i >= 2 {
            out.line(line);
            out.omitted(
                indent_of(line),
                format_args!("the line above repeated {} more times", j - i - 1),
            );
            i = j;
            continue;
        }
        if !is_kept(line) {
            let mut j = i + 1;
            while j < lines.len() && shapes[j] == shapes[i] && !is_kept(lines[j]) {
                j += 1;
            }
            if j - i >= 6 {
                out.line(lines[i]);
                out.line(lines[i + 1]);
                out.omitted(
                    indent_of(line),
                    format_args!("{} similar lines", thousands(j - i - 3)),
                );
                out.line(lines[j - 1]);
                i = j;
                continue;
            }
        }
        out.line(line);
        i += 1;
    }
}

fn repeated_block(lines: &[&str], at: usize) -> Option<(usize, usize)> {
    for period in 2..=4 {
        if at + period * 3 > lines.len() {
            return None;
        }
        let block = &lines[at..at + period];
        if block.iter().all(|l| l.trim().is_empty()) || block.windows(2).all(|w| w[0] == w[1]) {
            continue;
        }
        let mut times = 1;
        while at + period * (times + 1) <= lines.len()
            && &lines[at + period * times..at + period * (times + 1)] == block
        {
            times += 1;
        }
        if times >= 3 {
            return Some((period, times));
        }
    }
    None
}

pub fn indent_of(line: &str) -> &str {
    &line[..line.len() - line.trim_start().len()]
}

/// More than `max` lines: the first and last stay, and of the middle only vital lines (and
/// the line after each, which usually says where or why).
pub fn elide_middle(lines: &[&str], out: &mut Out, max: usize) {
    if lines.len() <= max {
        for line in lines {
            out.line(line);
        }
        return;
    }
    let head = max / 2;
    let tail = max / 4;
    for line in &lines[..head] {
        out.line(line);
    }
    let middle = &lines[head..lines.len() - tail];
    let mut skipped = 0;
    let mut keep_next = false;
    for line in middle {
        let vital = is_kept(line);
        if vital || keep_next {
            if skipped > 0 {
                out.omitted("", format_args!("{} lines omitted", thousands(skipped)));
                skipped = 0;
            }
            keep_next = vital && !keep_next;
            out.line(line);
        } else {
            skipped += 1;
        }
    }
    if skipped > 0 {
        out.omitted("", format_args!("{} lines omitted", thousands(skipped)));
    }
    for line in &lines[lines.len() - tail..] {
        out.line(line);
    }
}

pub fn thousands(n: usize) -> String {
    super::thousands(n)
}

/// Cut a line past `max` characters (on a character boundary), saying how much went.
pub fn truncate(line: &str, max: usize) -> Cow<'_, str> {
    if line.len() <= max {
        return Cow::Borrowed(line);
    }
    let mut end = max;
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!(
        "{}… [clutch: {} more characters]",
        &line[..end],
        line.len() - end
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(f: fn(&[&str], &mut Out), text: &str) -> String {
        let lines = split(text);
        let mut out = Out::with_capacity(64);
        f(&lines, &mut out);
        out.into_string()
    }

    #[test]
    fn escapes_and_overwritten_progress_go() {
        assert_eq!(
            clean("\x1b[1m\x1b[32mok\x1b[0m\r\n10%\r50%\r100% done\nend"),
            "ok\n100% done\nend"
        );
        assert!(matches!(clean("plain\ntext"), Cow::Borrowed(_)));
    }

    #[test]
    fn runs_fold_but_vital_lines_stay() {
        let mut text = String::new();
        for i in 0..50 {
            text.push_str(&format!(
                "npm http fetch GET 200 https://r.example/p{i} 12ms\n"
            ));
        }
        text.push_str("npm ERR! code E404\n");
        let out = run(generic, &text);
        assert!(out.contains("[clutch: 47 similar lines]"), "{out}");
        assert!(out.contains("p49 12ms"));
        assert!(out.ends_with("npm ERR! code E404"));
    }

    #[test]
    fn repeated_frames_fold_into_one_block() {
        let mut text = String::from("Traceback (most recent call last):\n");
        for _ in 0..30 {
            text.push_str("  File \"x.py\", line 5, in go\n    return go(n - 1)\n");
        }
        text.push_str("RecursionError: maximum recursion depth exceeded\n");
        let out = run(generic, &text);
        assert!(
            out.contains("[clutch: the 2 lines above repeated 29 more times]"),
            "{out}"
        );
        assert!(out.ends_with("RecursionError: maximum recursion depth exceeded"));
    }

    #[test]
    fn a_long_middle_keeps_its_vital_lines() {
        let mut lines: Vec<String> = (0..1000).map(|i| format!("line {i}")).collect();
        lines[500] = "error: the one that matters".into();
        let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
        let mut out = Out::with_capacity(64);
        elide_middle(&refs, &mut out, 100);
        let out = out.into_string();
        assert!(out.contains("error: the one that matters\nline 501\n"));
        assert_eq!(count(&out), 50 + 25 + 2 + 2);
    }
}
