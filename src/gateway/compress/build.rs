//! make, cmake, ninja and C/C++ compilers: every diagnostic line with its location kept,
//! code frames dropped, compiler command lines and configure checks counted.

use super::lines::{Out, collapse, is_vital, thousands};

const COMPILERS: [&str; 9] = [
    "cc", "gcc", "g++", "c++", "clang", "clang++", "ar", "ld", "ranlib",
];

pub fn filter(lines: &[&str], out: &mut Out) {
    let mut kept: Vec<String> = Vec::with_capacity(lines.len() / 2);
    let mut commands: Vec<&str> = Vec::new();
    let mut checks = 0usize;
    let flush = |commands: &mut Vec<&str>, checks: &mut usize, kept: &mut Vec<String>| {
        if commands.len() > 2 {
            let sources: Vec<&str> = commands
                .iter()
                .filter_map(|c| {
                    c.split_whitespace().find(|w| {
                        [".c", ".cc", ".cpp", ".cxx", ".o", ".a", ".so"]
                            .iter()
                            .any(|ext| w.ends_with(ext))
                            && !w.starts_with('-')
                    })
                })
                .map(|w| w.rsplit('/').next().unwrap_or(w))
                .collect();
            kept.push(format!(
                "[clutch: {} build commands: {}]",
                thousands(commands.len()),
                sources.join(", ")
            ));
        } else {
            kept.extend(commands.iter().map(|c| c.to_string()));
        }
        commands.clear();
        if *checks > 0 {
            kept.push(format!(
                "[clutch: {} configure and progress lines]",
                thousands(*checks)
            ));
            *checks = 0;
        }
    };
    for line in lines {
        let trimmed = line.trim_start();
        if is_frame(line) {
            continue;
        }
        if !is_vital(line) && is_command(trimmed) {
            commands.push(trimmed);
            continue;
        }
        if !is_vital(line) && is_progress(trimmed) {
            checks += 1;
            continue;
        }
        flush(&mut commands, &mut checks, &mut kept);
        kept.push(line.to_string());
    }
    flush(&mut commands, &mut checks, &mut kept);
    let refs: Vec<&str> = kept.iter().map(String::as_str).collect();
    collapse(&refs, out);
}

fn is_command(line: &str) -> bool {
    let first = line.split_whitespace().next().unwrap_or("");
    let program = first.rsplit('/').next().unwrap_or(first);
    COMPILERS.contains(&program)
        || program.ends_with("-gcc")
        || program.ends_with("-g++")
        || (program == "cd"
            && line.contains("&&")
            && (line.contains(" -c ") || line.contains(" -o ")))
}

/// cmake's checks and percent lines, make's directory notes.
fn is_progress(line: &str) -> bool {
    (line.starts_with("-- ")
        && !line.starts_with("-- Configuring done")
        && !line.starts_with("-- Generating done")
        && !line.starts_with("-- Build files"))
        || (line.starts_with('[')
            && line[1..]
                .trim_start()
                .starts_with(|c: char| c.is_ascii_digit())
            && line.contains("%]")
            && !line.contains("Built target"))
        || (line.starts_with("make")
            && (line.contains("Entering directory") || line.contains("Leaving directory")))
        || line.starts_with("Scanning dependencies")
        || line.starts_with("Consolidate compiler")
}

/// gcc and clang code frames: `  12 |   code`, `     |   ^~~~`.
fn is_frame(line: &str) -> bool {
    let trimmed = line.trim_start();
    if line.len() == trimmed.len() {
        return false;
    }
    let digits = trimmed.bytes().take_while(u8::is_ascii_digit).count();
    trimmed[digits..].trim_start().starts_with('|')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::compress::lines::split;

    #[test]
    fn diagnostics_stay_and_commands_are_counted() {
        let text = "cc -std=c99 -c net.c\ncc -std=c99 -c read.c\ncc -std=c99 -c sds.c\nread.c: In function 'f':\nread.c:12:5: warning: unused variable 'x' [-Wunused-variable]\n   12 |     int x;\n      |         ^\nmake: *** [Makefile:10: read.o] Error 1\n";
        let mut out = Out::with_capacity(64);
        filter(&split(text), &mut out);
        assert_eq!(
            out.into_string(),
            "[clutch: 3 build commands: net.c, read.c, sds.c]\nread.c: In function 'f':\nread.c:12:5: warning: unused variable 'x' [-Wunused-variable]\nmake: *** [Makefile:10: read.o] Error 1"
        );
    }
}
