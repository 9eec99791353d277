//! Search hits and path listings: every file named, hits grouped under their file and
//! capped, paths grouped by directory.

use super::lines::{Out, thousands, truncate};
use indexmap::IndexMap;

/// Hits shown per file; the rest are listed by line number.
const HITS_PER_FILE: usize = 6;

/// `path:line:text` (grep -n, rg -n), `path:text`, or `line:text` for one file.
pub fn hits(lines: &[&str], out: &mut Out) {
    let mut files: IndexMap<&str, Vec<(&str, &str)>> = IndexMap::new();
    let mut other: Vec<&str> = Vec::new();
    for line in lines {
        match split_hit(line) {
            Some((path, number, text)) => files.entry(path).or_default().push((number, text)),
            None if line.trim().is_empty() || *line == "--" => {}
            None => other.push(line),
        }
    }
    for line in other.iter().take(40) {
        out.line(&truncate(line, 200));
    }
    if other.len() > 40 {
        out.omitted(
            "",
            format_args!("{} other lines", thousands(other.len() - 40)),
        );
    }
    let many = files.len() > 1;
    for (path, hits) in &files {
        if many || !path.is_empty() {
            out.line(&format!("{path} ({} hits)", hits.len()));
        }
        for (number, text) in hits.iter().take(HITS_PER_FILE) {
            let text = truncate(text.trim(), 160);
            if number.is_empty() {
                out.line(&format!("  {text}"));
            } else {
                out.line(&format!("  {number}: {text}"));
            }
        }
        if hits.len() > HITS_PER_FILE {
            let numbers: Vec<&str> = hits[HITS_PER_FILE..]
                .iter()
                .map(|(n, _)| *n)
                .filter(|n| !n.is_empty())
                .take(30)
                .collect();
            let more = hits.len() - HITS_PER_FILE;
            if numbers.is_empty() {
                out.omitted("  ", format_args!("{} more hits", thousands(more)));
            } else {
                let ellipsis = if more > numbers.len() { ", …" } else { "" };
                out.omitted(
                    "  ",
                    format_args!(
                        "{} more hits at lines {}{ellipsis}",
                        thousands(more),
                        numbers.join(", ")
                    ),
                );
            }
        }
    }
}

fn split_hit(line: &str) -> Option<(&str, &str, &str)> {
    let (first, rest) = line.split_once(':')?;
    if first.is_empty() || first.contains("  ") {
        return None;
    }
    if first.bytes().all(|b| b.is_ascii_digit()) {
        return Some(("", first, rest));
    }
    if first.contains(' ') && !first.contains('/') {
        return None;
    }
    match rest.split_once(':') {
        Some((number, text))
            if !number.is_empty() && number.bytes().all(|b| b.is_ascii_digit()) =>
        {
            Some((first, number, text))
        }
        _ => Some((first, "", rest)),
    }
}

/// One path a line (find, fd, rg --files, git ls-files, ls, ls -l, ls -R): grouped by
/// directory, names kept, long listings' permissions and owners dropped.
pub fn listing(lines: &[&str], out: &mut Out) {
    let mut dirs: IndexMap<String, Vec<String>> = IndexMap::new();
    let mut other: Vec<&str> = Vec::new();
    let mut section = String::new();
    for line in lines {
        let line = line.trim_end();
        if line.is_empty() {
            continue;
        }
        // ls -R: "dir:" starts a section.
        if line.ends_with(':') && !line.contains(' ') {
            section = line.trim_end_matches(':').to_string();
            continue;
        }
        if line.starts_with("total ") {
            other.push(line);
            continue;
        }
        let name = long_listing_name(line).unwrap_or(line);
        if name.is_empty() {
            continue;
        }
        if name.contains("  ") {
            other.push(line);
            continue;
        }
        let path = if section.is_empty() {
            name.to_string()
        } else {
            format!("{section}/{name}")
        };
        let path = path.strip_prefix("./").unwrap_or(&path).to_string();
        let (dir, file) = match path.rsplit_once('/') {
            Some((dir, file)) if !file.is_empty() => (dir.to_string(), file.to_string()),
            _ => (String::new(), path.clone()),
        };
        dirs.entry(dir).or_default().push(file);
    }
    for line in &other {
        out.line(line);
    }
    for (dir, names) in &dirs {
        let label = if dir.is_empty() { "." } else { dir };
        let header = format!("{label}/ ({}): ", names.len());
        let mut line = header.clone();
        for (i, name) in names.iter().enumerate() {
            if line.len() + name.len() > 160 && line.len() > header.len() {
                out.line(&line);
                line = " ".repeat(4);
            }
            line.push_str(name);
            if i + 1 < names.len() {
                line.push_str(", ");
            }
        }
        out.line(&line);
    }
}

/// `drwxr-xr-x  2 user group 4096 Dec  3 10:00 name` → `name` (links keep their target).
fn long_listing_name(line: &str) -> Option<&str> {
    let kind = line.chars().next()?;
    if !matches!(kind, 'd' | '-' | 'l' | 'c' | 'b' | 's' | 'p')
        || line.len() < 11
        || !line.as_bytes()[1..10]
            .iter()
            .all(|b| matches!(*b, b'r' | b'w' | b'x' | b'-' | b's' | b'S' | b't' | b'T'))
    {
        return None;
    }
    // Eight fields before the name: mode, links, owner, group, size, month, day, time.
    let mut rest = line;
    for _ in 0..8 {
        rest = rest.trim_start();
        let end = rest.find(' ')?;
        rest = &rest[end..];
    }
    let name = rest.trim_start();
    if name == "." || name == ".." {
        return Some("");
    }
    Some(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::compress::lines::split;

    fn run(f: fn(&[&str], &mut Out), text: &str) -> String {
        let mut out = Out::with_capacity(64);
        f(&split(text), &mut out);
        out.into_string()
    }

    #[test]
    fn hits_group_under_their_file() {
        let mut text = String::new();
        for i in 1..=9 {
            text.push_str(&format!("src/a.rs:{i}:fn a{i}() {{}}\n"));
        }
        text.push_str("src/b.rs:4:fn b() {}\n");
        let out = run(hits, &text);
        assert!(
            out.starts_with("src/a.rs (9 hits)\n  1: fn a1() {}\n"),
            "{out}"
        );
        assert!(out.contains(
            "  [clutch: 3 more hits at lines 7, 8, 9]\nsrc/b.rs (1 hits)\n  4: fn b() {}"
        ));
    }

    #[test]
    fn listings_group_by_directory() {
        let text = "./src/a.rs\n./src/b.rs\n./tests/c.rs\n";
        assert_eq!(run(listing, text), "src/ (2): a.rs, b.rs\ntests/ (1): c.rs");
        let long = "total 8\ndrwxr-xr-x  2 me me 4096 Dec  3 10:00 .\ndrwxr-xr-x  2 me me 4096 Dec  3 10:00 accepts\n-rw-r--r--  1 me me  120 Dec  3 10:00 a file.txt\n";
        let out = run(listing, long);
        assert!(
            out.contains("accepts") && out.contains("a file.txt"),
            "{out}"
        );
    }
}
