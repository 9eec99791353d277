//! git: every commit id, branch, path and changed line's place kept; hints, index lines,
//! far context and message bodies shortened.

use super::lines::{Out, thousands, truncate};

pub fn filter(command: Option<&str>, lines: &[&str], out: &mut Out) {
    let sub = command.and_then(subcommand);
    let first = lines
        .iter()
        .find(|l| !l.trim().is_empty())
        .copied()
        .unwrap_or("");
    let mut kept: Vec<String> = Vec::with_capacity(lines.len() / 3);
    match sub {
        Some("blame") => blame(lines, &mut kept),
        Some("status") => status(lines, &mut kept),
        Some("log") if !first.starts_with("commit ") => oneline(lines, &mut kept),
        _ if first.starts_with("On branch ") || first.starts_with("HEAD detached") => {
            status(lines, &mut kept)
        }
        _ => history(lines, &mut kept),
    }
    // No folding by shape: every commit id, path and changed line stays.
    for line in &kept {
        out.line(line);
    }
}

fn subcommand(command: &str) -> Option<&str> {
    let mut words = command.split_whitespace();
    words.find(|w| *w == "git" || w.ends_with("/git"))?;
    let mut words = words.skip_while(|w| w.starts_with('-'));
    words.next()
}

/// `git status`: the hints go; a long list of paths is kept whole (paths are what it says).
fn status(lines: &[&str], kept: &mut Vec<String>) {
    for line in lines {
        let trimmed = line.trim_start();
        if trimmed.starts_with("(use \"git") || trimmed.starts_with("(commit or discard") {
            continue;
        }
        kept.push(line.to_string());
    }
}

/// `git log --oneline` and the like: one commit a line, each kept, long subjects cut.
fn oneline(lines: &[&str], kept: &mut Vec<String>) {
    for line in lines {
        kept.push(truncate(line, 140).into_owned());
    }
}

/// Logs, shows and diffs: commit headers and subjects, stat lines, file headers, hunk
/// headers and changed lines; a change's context cut to one line each side; a long run of
/// added or removed lines cut to its ends; message bodies to their first lines.
fn history(lines: &[&str], kept: &mut Vec<String>) {
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        if line.starts_with("commit ") {
            kept.push(line.to_string());
            i += 1;
            // Author, Date, Merge…, then the indented message.
            while i < lines.len() && !lines[i].starts_with("    ") && !lines[i].is_empty() {
                kept.push(lines[i].to_string());
                i += 1;
            }
            let start = i;
            while i < lines.len() && (lines[i].starts_with("    ") || lines[i].is_empty()) {
                i += 1;
            }
            message(&lines[start..i], kept);
            continue;
        }
        if line.starts_with("diff --git") || line.starts_with("diff --cc") {
            i = diff_file(lines, i, kept);
            continue;
        }
        kept.push(truncate(line, 240).into_owned());
        i += 1;
    }
}

fn message(lines: &[&str], kept: &mut Vec<String>) {
    let text: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| !l.trim().is_empty())
        .collect();
    kept.push(String::new());
    for line in text.iter().take(2) {
        kept.push(truncate(line, 300).into_owned());
    }
    if text.len() > 2 {
        kept.push(format!(
            "    [clutch: {} more message lines]",
            thousands(text.len() - 2)
        ));
    }
    kept.push(String::new());
}

/// One file of a diff, from its `diff --git` line to the next.
fn diff_file(lines: &[&str], start: usize, kept: &mut Vec<String>) -> usize {
    kept.push(lines[start].to_string());
    let mut i = start + 1;
    // Header: mode, rename, index and ---/+++ lines. The paths are on the diff line.
    while i < lines.len() && !lines[i].starts_with("@@") && !lines[i].starts_with("diff --git") {
        let line = lines[i];
        if !(line.starts_with("index ") || line.starts_with("--- ") || line.starts_with("+++ ")) {
            kept.push(line.to_string());
        }
        i += 1;
    }
    while i < lines.len() && lines[i].starts_with("@@") {
        kept.push(lines[i].to_string());
        i += 1;
        let start = i;
        while i < lines.len()
            && !lines[i].starts_with("@@")
            && !lines[i].starts_with("diff --git")
            && !lines[i].starts_with("commit ")
        {
            i += 1;
        }
        hunk(&lines[start..i], kept);
    }
    i
}

fn hunk(lines: &[&str], kept: &mut Vec<String>) {
    let changed = |l: &str| l.starts_with('+') || l.starts_with('-');
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        if changed(line) {
            let start = i;
            while i < lines.len() && changed(lines[i]) {
                i += 1;
            }
            let run = &lines[start..i];
            if run.len() > 40 {
                for l in &run[..24] {
                    kept.push(truncate(l, 240).into_owned());
                }
                let added = run[24..run.len() - 8]
                    .iter()
                    .filter(|l| l.starts_with('+'))
                    .count();
                let removed = run.len() - 32 - added;
                kept.push(format!(
                    "[clutch: {} more changed lines: {} added, {} removed]",
                    thousands(run.len() - 32),
                    thousands(added),
                    thousands(removed)
                ));
                for l in &run[run.len() - 8..] {
                    kept.push(truncate(l, 240).into_owned());
                }
            } else {
                kept.extend(run.iter().map(|l| truncate(l, 240).into_owned()));
            }
            continue;
        }
        // Context: the line next to a change stays, the rest goes.
        let near = (i > 0 && changed(lines[i - 1])) || lines.get(i + 1).is_some_and(|l| changed(l));
        if near || line.starts_with('\\') {
            kept.push(truncate(line, 240).into_owned());
        }
        i += 1;
    }
}

/// `git blame`: consecutive lines of one commit under one header, the code kept.
fn blame(lines: &[&str], kept: &mut Vec<String>) {
    let mut current = "";
    for line in lines {
        let Some((meta, code)) = line.split_once(") ") else {
            kept.push(line.to_string());
            continue;
        };
        let Some((hash, rest)) = meta.split_once(" (") else {
            kept.push(line.to_string());
            continue;
        };
        let mut words: Vec<&str> = rest.split_whitespace().collect();
        let number = words.pop().unwrap_or("");
        if hash != current {
            current = hash;
            // Author and date, without the time and zone.
            let who: Vec<&str> = words
                .iter()
                .copied()
                .take_while(|w| !w.starts_with(|c: char| c.is_ascii_digit()))
                .collect();
            let date = words
                .iter()
                .find(|w| w.starts_with(|c: char| c.is_ascii_digit()))
                .unwrap_or(&"");
            kept.push(format!("{hash} {} {date}", who.join(" ")));
        }
        kept.push(format!("{number:>5}| {code}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::compress::lines::split;

    fn run(command: &str, text: &str) -> String {
        let mut out = Out::with_capacity(64);
        filter(Some(command), &split(text), &mut out);
        out.into_string()
    }

    #[test]
    fn a_log_keeps_ids_and_subjects() {
        let text = "commit 0123456789abcdef0123456789abcdef01234567\nAuthor: A <a@x>\nDate:   Thu Dec 3 10:00:00 2026 +0000\n\n    Subject line\n\n    Body one\n    Body two\n    Body three\n";
        let out = run("git log", text);
        assert!(out.contains("commit 0123456789abcdef0123456789abcdef01234567"));
        assert!(
            out.contains("    Subject line\n    Body one\n    [clutch: 2 more message lines]"),
            "{out}"
        );
    }

    #[test]
    fn a_diff_keeps_paths_hunks_and_changes() {
        let mut text = String::from(
            "diff --git a/src/x.rs b/src/x.rs\nindex 1..2 100644\n--- a/src/x.rs\n+++ b/src/x.rs\n@@ -1,9 +1,9 @@ fn main\n",
        );
        for i in 0..4 {
            text.push_str(&format!(" far {i}\n"));
        }
        text.push_str(" near\n-old\n+new\n after\n far again\n");
        let out = run("git diff", &text);
        assert_eq!(
            out,
            "diff --git a/src/x.rs b/src/x.rs\n@@ -1,9 +1,9 @@ fn main\n near\n-old\n+new\n after"
        );
    }

    #[test]
    fn blame_groups_lines_by_commit() {
        let text = "abc12345 (Ann Lee 2026-12-01 10:00:00 +0000 1) use x;\nabc12345 (Ann Lee 2026-12-01 10:00:00 +0000 2) use y;\ndef67890 (Bo 2026-11-02 09:00:00 +0000 3) fn z() {}\n";
        assert_eq!(
            run("git blame src/a.rs", text),
            "abc12345 Ann Lee 2026-12-01\n    1| use x;\n    2| use y;\ndef67890 Bo 2026-11-02\n    3| fn z() {}"
        );
    }
}
