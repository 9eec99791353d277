//! cargo and rustc: errors kept whole; each warning kept as its message and location, the
//! same message at many places said once; progress lines and passing tests counted.

use super::lines::{Out, collapse, is_vital, thousands};
use indexmap::IndexMap;

const PROGRESS: [&str; 14] = [
    "Compiling ",
    "Checking ",
    "Downloaded ",
    "Downloading ",
    "Documenting ",
    "Fresh ",
    "Updating ",
    "Locking ",
    "Adding ",
    "Blocking ",
    "Installing ",
    "Installed ",
    "Packaging ",
    "Verifying ",
];

pub fn filter(lines: &[&str], out: &mut Out) {
    let mut warnings: IndexMap<&str, Vec<&str>> = IndexMap::new();
    let mut kept: Vec<String> = Vec::with_capacity(lines.len() / 4);
    let mut progress: Vec<&str> = Vec::new();
    let mut passed = 0usize;
    let mut ignored = 0usize;
    let mut i = 0;
    let flush_progress = |progress: &mut Vec<&str>, kept: &mut Vec<String>| {
        if progress.len() > 3 {
            let verb = progress[0].split_whitespace().next().unwrap_or("");
            let names: Vec<&str> = progress
                .iter()
                .filter_map(|l| l.split_whitespace().nth(1))
                .take(4)
                .collect();
            kept.push(format!(
                "[clutch: {} progress lines: {verb} {}, …]",
                thousands(progress.len()),
                names.join(", ")
            ));
        } else {
            kept.extend(progress.iter().map(|l| l.to_string()));
        }
        progress.clear();
    };
    let flush_tests = |passed: &mut usize, ignored: &mut usize, kept: &mut Vec<String>| {
        if *passed + *ignored > 0 {
            kept.push(format!(
                "[clutch: {} passing and {} ignored tests not listed]",
                thousands(*passed),
                thousands(*ignored)
            ));
        }
        *passed = 0;
        *ignored = 0;
    };
    while i < lines.len() {
        let line = lines[i];
        let trimmed = line.trim_start();
        if PROGRESS.iter().any(|p| trimmed.starts_with(p)) && !is_vital(line)
            || trimmed.starts_with("Running `")
        {
            progress.push(trimmed);
            i += 1;
            continue;
        }
        flush_progress(&mut progress, &mut kept);
        if line.starts_with("test ") && !line.starts_with("test result:") {
            if line.ends_with(" ... ok") {
                passed += 1;
                i += 1;
                continue;
            }
            if line.ends_with(" ... ignored") || line.contains(" ... ignored, ") {
                ignored += 1;
                i += 1;
                continue;
            }
        }
        if line.starts_with("test result:") {
            flush_tests(&mut passed, &mut ignored, &mut kept);
        }
        let diagnostic = line.starts_with("warning") || line.starts_with("error");
        if diagnostic {
            let end = block_end(lines, i);
            let block = &lines[i..end];
            let summary = line.contains(" generated ") && line.contains(" warning")
                || line.starts_with("error: could not compile")
                || line.starts_with("error: aborting")
                || line.starts_with("warning: build failed")
                || end == i + 1;
            if line.starts_with("warning") && !summary {
                let location = block
                    .iter()
                    .find_map(|l| l.trim_start().strip_prefix("--> "))
                    .unwrap_or("");
                warnings.entry(line).or_default().push(location);
                i = end;
                continue;
            }
            if line.starts_with("error") && !summary {
                flush_warnings(&mut warnings, &mut kept);
                kept.extend(block.iter().map(|l| l.to_string()));
                i = end;
                continue;
            }
            flush_warnings(&mut warnings, &mut kept);
            kept.push(line.to_string());
            i += 1;
            continue;
        }
        if trimmed.starts_with("Finished ") || line.starts_with("test result:") {
            flush_warnings(&mut warnings, &mut kept);
        }
        kept.push(line.to_string());
        i += 1;
    }
    flush_progress(&mut progress, &mut kept);
    flush_tests(&mut passed, &mut ignored, &mut kept);
    flush_warnings(&mut warnings, &mut kept);
    let refs: Vec<&str> = kept.iter().map(String::as_str).collect();
    collapse(&refs, out);
}

/// A diagnostic runs to the blank line that ends it (or the next diagnostic or progress line).
fn block_end(lines: &[&str], start: usize) -> usize {
    let mut end = start + 1;
    while end < lines.len() {
        let line = lines[end];
        if line.trim().is_empty() {
            return end + 1;
        }
        let trimmed = line.trim_start();
        if line.starts_with("warning")
            || line.starts_with("error")
            || (line.len() != trimmed.len() && PROGRESS.iter().any(|p| trimmed.starts_with(p)))
            || trimmed.starts_with("Finished ")
        {
            return end;
        }
        end += 1;
    }
    end
}

fn flush_warnings(warnings: &mut IndexMap<&str, Vec<&str>>, kept: &mut Vec<String>) {
    for (message, locations) in warnings.drain(..) {
        let places: Vec<&str> = locations.into_iter().filter(|l| !l.is_empty()).collect();
        match places.len() {
            0 => kept.push(message.to_string()),
            1 => {
                kept.push(message.to_string());
                kept.push(format!("  --> {}", places[0]));
            }
            n => {
                kept.push(format!("{message} [{n} places]"));
                for chunk in places.chunks(6) {
                    kept.push(format!("  --> {}", chunk.join(", ")));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::compress::lines::split;

    fn run(text: &str) -> String {
        let mut out = Out::with_capacity(64);
        filter(&split(text), &mut out);
        out.into_string()
    }

    #[test]
    fn warnings_fold_by_message_and_the_error_stays_whole() {
        let mut text = String::from("    Checking clutch v0.1.0\n");
        for i in 0..3 {
            text.push_str(&format!(
                "warning: this could be a `const fn`\n  --> src/a.rs:{i}:5\n   |\n{i}  | fn f() {{}}\n   |\n   = help: see https://rust-lang.github.io\n\n"
            ));
        }
        text.push_str("error[E0308]: mismatched types\n --> src/b.rs:7:9\n  |\n7 |     \"x\"\n  |     ^^^ expected `u32`\n\n");
        text.push_str("warning: `clutch` (lib) generated 3 warnings\nerror: could not compile `clutch` (lib) due to 1 previous error\n");
        let out = run(&text);
        assert!(out.contains("warning: this could be a `const fn` [3 places]\n  --> src/a.rs:0:5, src/a.rs:1:5, src/a.rs:2:5"), "{out}");
        assert!(out.contains("error[E0308]: mismatched types\n --> src/b.rs:7:9\n  |\n7 |     \"x\"\n  |     ^^^ expected `u32`"));
        assert!(out.contains("generated 3 warnings"));
        assert!(!out.contains("help: see"));
    }

    #[test]
    fn passing_tests_are_counted_and_failures_kept() {
        let mut text = String::from("running 40 tests\n");
        for i in 0..39 {
            text.push_str(&format!("test case_{i} ... ok\n"));
        }
        text.push_str("test broken ... FAILED\n\nfailures:\n\n---- broken stdout ----\nthread 'broken' panicked at src/lib.rs:9:5:\nassertion `left == right` failed\n  left: 1\n right: 2\n\nfailures:\n    broken\n\ntest result: FAILED. 39 passed; 1 failed; 0 ignored\n");
        let out = run(&text);
        assert!(out.contains("test broken ... FAILED"));
        assert!(out.contains("[clutch: 39 passing and 0 ignored tests not listed]"));
        assert!(out.contains(
            "panicked at src/lib.rs:9:5:\nassertion `left == right` failed\n  left: 1\n right: 2"
        ));
        assert!(!out.contains("case_3"));
    }
}
