//! pytest, pip and linters (mypy, ruff, flake8, eslint, tsc): failures and diagnostics kept
//! with their locations, passing tests and install progress counted, code frames dropped.

use super::Kind;
use super::lines::{Out, collapse, is_vital, thousands, truncate};
use indexmap::IndexMap;

pub fn filter(kind: Kind, lines: &[&str], out: &mut Out) {
    match kind {
        Kind::Pytest => pytest(lines, out),
        Kind::Pip => pip(lines, out),
        _ => lint(lines, out),
    }
}

fn pytest(lines: &[&str], out: &mut Out) {
    let mut kept: Vec<String> = Vec::with_capacity(lines.len() / 2);
    let mut passed = 0usize;
    let flush = |passed: &mut usize, kept: &mut Vec<String>| {
        if *passed > 0 {
            kept.push(format!(
                "[clutch: {} lines of passing tests not listed]",
                thousands(*passed)
            ));
            *passed = 0;
        }
    };
    for line in lines {
        // Progress: `tests/test_x.py ....s..  [ 12%]`; kept only when something failed.
        if line.ends_with("%]") {
            let body = line
                .rsplit_once('[')
                .map_or(*line, |(body, _)| body)
                .trim_end();
            let marks = body.rsplit_once(' ').map_or(body, |(_, marks)| marks);
            let verbose = body.ends_with(" PASSED")
                || body.ends_with(" SKIPPED")
                || body.ends_with(" XFAIL")
                || body.contains(" SKIPPED (");
            let dots = !marks.is_empty() && marks.bytes().all(|b| matches!(b, b'.' | b's' | b'x'));
            if verbose || dots {
                passed += 1;
                continue;
            }
        }
        flush(&mut passed, &mut kept);
        kept.push(line.to_string());
    }
    flush(&mut passed, &mut kept);
    let refs: Vec<&str> = kept.iter().map(String::as_str).collect();
    collapse(&refs, out);
}

const PIP_PROGRESS: [&str; 20] = [
    "Requirement already satisfied:",
    "Collecting ",
    "Downloading ",
    "Using cached ",
    "Obtaining ",
    "Preparing ",
    "Installing build dependencies",
    "Getting requirements",
    "Building wheels",
    "Building wheel",
    "Building editable",
    "Created wheel",
    "Stored in directory",
    "Checking if build backend",
    "Attempting uninstall",
    "Found existing installation",
    "Uninstalling ",
    "Successfully uninstalled",
    "Processing ",
    "Installing backend dependencies",
];

fn pip(lines: &[&str], out: &mut Out) {
    let mut kept: Vec<String> = Vec::new();
    let mut run: Vec<&str> = Vec::new();
    let flush = |run: &mut Vec<&str>, kept: &mut Vec<String>| {
        if run.len() > 3 {
            kept.push(format!(
                "[clutch: {} progress lines: {} …]",
                thousands(run.len()),
                truncate(run[0], 80)
            ));
        } else {
            kept.extend(run.iter().map(|l| l.to_string()));
        }
        run.clear();
    };
    for line in lines {
        let trimmed = line.trim_start();
        if PIP_PROGRESS.iter().any(|p| trimmed.starts_with(p)) && !is_vital(line) {
            run.push(trimmed);
            continue;
        }
        flush(&mut run, &mut kept);
        kept.push(line.to_string());
    }
    flush(&mut run, &mut kept);
    let refs: Vec<&str> = kept.iter().map(String::as_str).collect();
    collapse(&refs, out);
}

/// Diagnostics a line each (`path:12:5: message`) stay; a message followed by a `-->`
/// location (ruff's and rustc's layout) is kept as message and location, the same message
/// at many places said once; code frames and fix hints go.
pub fn lint(lines: &[&str], out: &mut Out) {
    let mut groups: IndexMap<&str, Vec<&str>> = IndexMap::new();
    let mut kept: Vec<String> = Vec::with_capacity(lines.len() / 2);
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let trimmed = line.trim_start();
        let location = lines
            .get(i + 1)
            .and_then(|next| next.trim_start().strip_prefix("--> "));
        if let Some(location) = location
            && !line.starts_with(' ')
            && !trimmed.is_empty()
        {
            groups.entry(line).or_default().push(location);
            i += 2;
            continue;
        }
        if is_frame(line) || trimmed.starts_with("help: ") || trimmed.starts_with("= help") {
            i += 1;
            continue;
        }
        if !groups.is_empty() {
            if trimmed.is_empty() {
                i += 1;
                continue;
            }
            flush(&mut groups, &mut kept);
            kept.push(String::new());
        }
        kept.push(truncate(line, 400).into_owned());
        i += 1;
    }
    flush(&mut groups, &mut kept);
    // Blank runs become one; nothing folded by shape: each diagnostic is distinct.
    let mut blank = false;
    for line in &kept {
        if line.trim().is_empty() {
            if !blank {
                out.line("");
            }
            blank = true;
        } else {
            out.line(line);
            blank = false;
        }
    }
}

/// A code frame line: `12 |     code`, `   |     ^^^`, or a bare `|`.
fn is_frame(line: &str) -> bool {
    let trimmed = line.trim_start();
    if trimmed.starts_with('|') {
        return true;
    }
    let digits = trimmed.bytes().take_while(u8::is_ascii_digit).count();
    digits > 0 && trimmed[digits..].trim_start().starts_with('|')
}

fn flush(groups: &mut IndexMap<&str, Vec<&str>>, kept: &mut Vec<String>) {
    for (message, places) in groups.drain(..) {
        if places.len() == 1 {
            kept.push(message.to_string());
            kept.push(format!(" --> {}", places[0]));
            continue;
        }
        kept.push(format!("{message} [{} places]", places.len()));
        for chunk in places.chunks(6) {
            kept.push(format!(" --> {}", chunk.join(", ")));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::compress::lines::split;

    fn run(kind: Kind, text: &str) -> String {
        let mut out = Out::with_capacity(64);
        filter(kind, &split(text), &mut out);
        out.into_string()
    }

    #[test]
    fn pytest_keeps_failures_and_counts_the_rest() {
        let text = "testing/test_a.py ........   [ 40%]\ntesting/test_b.py ..F.   [100%]\n\n=== FAILURES ===\n___ test_x ___\n>       assert 2 == 3\nE       assert 2 == 3\n\ntesting/test_b.py:12: AssertionError\nFAILED testing/test_b.py::test_x - assert 2 == 3\n=== 1 failed, 11 passed in 0.10s ===\n";
        let out = run(Kind::Pytest, text);
        assert!(
            out.starts_with(
                "[clutch: 1 lines of passing tests not listed]\ntesting/test_b.py ..F.   [100%]"
            ),
            "{out}"
        );
        assert!(out.contains("E       assert 2 == 3\n\ntesting/test_b.py:12: AssertionError\nFAILED testing/test_b.py::test_x - assert 2 == 3\n=== 1 failed, 11 passed in 0.10s ==="));
    }

    #[test]
    fn ruff_messages_fold_with_their_places() {
        let text = "D100 Missing docstring in public module\n --> src/a.py:1:1\n  |\n1 | import x\n  | ^\n\nD100 Missing docstring in public module\n --> src/b.py:1:1\n  |\n\nFound 2 errors.\n";
        assert_eq!(
            run(Kind::Lint, text),
            "D100 Missing docstring in public module [2 places]\n --> src/a.py:1:1, src/b.py:1:1\n\nFound 2 errors."
        );
    }
}
