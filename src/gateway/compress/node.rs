//! npm, node and JavaScript test runners (mocha, jest, vitest, node --test): failures, their
//! assertion messages and the project's own stack frames kept; passing tests, suites with
//! nothing left in them, dependency frames and deduped tree entries counted.

use super::lines::{Out, collapse, is_vital, thousands};

pub fn filter(lines: &[&str], out: &mut Out) {
    let mut kept: Vec<String> = Vec::with_capacity(lines.len() / 2);
    let mut passed = 0usize;
    let mut frames = 0usize;
    let mut deduped = 0usize;
    for line in lines {
        let trimmed = line.trim_start();
        if is_pass(trimmed) {
            passed += 1;
            continue;
        }
        if trimmed.starts_with("at ")
            && (trimmed.contains("node_modules/")
                || trimmed.contains("node:internal")
                || trimmed.contains("(node:"))
        {
            frames += 1;
            continue;
        }
        if frames > 0 {
            kept.push(format!(
                "{}[clutch: {} dependency frames]",
                super::lines::indent_of(line),
                frames
            ));
            frames = 0;
        }
        if line.ends_with(" deduped") && !is_vital(line) {
            deduped += 1;
            continue;
        }
        kept.push(line.to_string());
    }
    if frames > 0 {
        kept.push(format!("[clutch: {frames} dependency frames]"));
    }
    if passed > 0 {
        kept = drop_empty_suites(kept);
        kept.insert(
            0,
            format!("[clutch: {} passing tests not listed]", thousands(passed)),
        );
    }
    if deduped > 0 {
        kept.push(format!(
            "[clutch: {} deduped entries not listed]",
            thousands(deduped)
        ));
    }
    let refs: Vec<&str> = kept.iter().map(String::as_str).collect();
    collapse(&refs, out);
}

fn is_pass(trimmed: &str) -> bool {
    trimmed.starts_with('✔')
        || trimmed.starts_with('✓')
        || trimmed.starts_with('√')
        || (trimmed.starts_with("ok ") && trimmed[3..].starts_with(|c: char| c.is_ascii_digit()))
        || trimmed.starts_with("PASS ")
}

/// A suite title whose tests all passed is left with nothing under it: it goes too, and so
/// does a parent left empty by its children (one pass from the end decides children first).
fn drop_empty_suites(lines: Vec<String>) -> Vec<String> {
    let indent = |l: &str| l.len() - l.trim_start().len();
    let mut keep = vec![true; lines.len()];
    // The failures' details come after the `N failing` line: all of it stays.
    let details = lines
        .iter()
        .position(|l| {
            let t = l.trim();
            t.ends_with(" failing") && t.starts_with(|c: char| c.is_ascii_digit())
        })
        .unwrap_or(lines.len());
    let mut next_kept = (details..lines.len()).find(|j| !lines[*j].trim().is_empty());
    for i in (0..details).rev() {
        let line = &lines[i];
        let trimmed = line.trim();
        if trimmed.is_empty() {
            continue;
        }
        let title = !is_vital(line)
            && indent(line) > 0
            && !trimmed.starts_with(|c: char| c.is_ascii_digit())
            && !trimmed.starts_with("at ")
            && !trimmed.starts_with("[clutch");
        if title && next_kept.is_none_or(|j| indent(&lines[j]) <= indent(line)) {
            keep[i] = false;
            continue;
        }
        next_kept = Some(i);
    }
    lines
        .into_iter()
        .zip(keep)
        .filter_map(|(l, k)| k.then_some(l))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::compress::lines::split;

    #[test]
    fn mocha_keeps_the_failure_and_its_own_frames() {
        let text = "\n  app\n    .get()\n      ✔ should work (5ms)\n      ✔ should also work\n    .post()\n      1) should fail\n\n  2 passing (10ms)\n  1 failing\n\n  1) app\n       .post()\n         should fail:\n     AssertionError: expected 'tobi' to equal 'loki'\n      at Context.<anonymous> (test/app.js:12:5)\n      at process.processImmediate (node:internal/timers:478:21)\n";
        let mut out = Out::with_capacity(64);
        filter(&split(text), &mut out);
        let out = out.into_string();
        assert!(!out.contains(".get()"), "{out}");
        assert!(out.contains("    .post()\n      1) should fail"));
        assert!(out.contains("AssertionError: expected 'tobi' to equal 'loki'\n      at Context.<anonymous> (test/app.js:12:5)\n[clutch: 1 dependency frames]"));
        assert!(out.starts_with("[clutch: 2 passing tests not listed]"));
    }
}
