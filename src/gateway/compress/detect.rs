//! What an output is: from the command that produced it when the tool call says, else from
//! the tool's name, else from its first lines.

/// The families of output with a filter of their own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// cargo build/check/clippy/test/doc/fmt, rustc.
    Cargo,
    /// git status/diff/show/log/blame/branch.
    Git,
    /// grep/rg/ag hits: `path:line:text`.
    Search,
    /// find/fd/ls/rg --files/git ls-files: one path a line.
    Listing,
    /// pytest and other Python test runners.
    Pytest,
    /// pip, uv and poetry installs.
    Pip,
    /// mypy, ruff, flake8, pylint, eslint-style diagnostics.
    Lint,
    /// npm/yarn/pnpm, node, mocha/jest/vitest.
    Node,
    /// make, cmake, ninja, C and C++ compilers.
    Build,
    Json,
    Log,
    /// A file read the agent may edit next: kept verbatim unless very large.
    Read,
    Generic,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Cargo => "cargo",
            Kind::Git => "git",
            Kind::Search => "search",
            Kind::Listing => "listing",
            Kind::Pytest => "pytest",
            Kind::Pip => "pip",
            Kind::Lint => "lint",
            Kind::Node => "node",
            Kind::Build => "build",
            Kind::Json => "json",
            Kind::Log => "log",
            Kind::Read => "read",
            Kind::Generic => "generic",
        }
    }
}

/// `xx recall` prints an original on purpose: its output is never condensed again.
pub fn is_recall(command: &str) -> bool {
    command.contains("xx recall") || command.contains("xx\" recall")
}

pub fn kind(command: Option<&str>, tool: Option<&str>, output: &str) -> Kind {
    if let Some(kind) = command.and_then(from_command) {
        return kind;
    }
    if command.is_none()
        && let Some(kind) = tool.and_then(from_tool)
    {
        return kind;
    }
    from_content(output)
}

fn from_tool(tool: &str) -> Option<Kind> {
    let lower = tool.to_ascii_lowercase();
    match lower.as_str() {
        "read" | "read_file" | "readfile" | "view" | "view_file" | "read_many_files" => {
            Some(Kind::Read)
        }
        "glob" | "ls" | "list_directory" | "list" => Some(Kind::Listing),
        "grep" | "search_file_content" => Some(Kind::Search),
        _ => None,
    }
}

/// The program of the command's first stage, past `cd x &&`, variable assignments and
/// wrappers such as `timeout`, `npx` or `python -m`.
fn from_command(command: &str) -> Option<Kind> {
    let command = unwrap_shell(command);
    let stage = command
        .split("&&")
        .map(str::trim)
        .find(|s| !s.starts_with("cd ") && !s.is_empty())?;
    let stage = stage.split(['|', ';']).next().unwrap_or(stage);
    let mut words = stage.split_whitespace().filter(|w| !is_assignment(w));
    let mut program = words.next()?;
    let rest: Vec<&str> = words.collect();
    let mut args = rest.as_slice();
    loop {
        let base = program.rsplit('/').next().unwrap_or(program);
        match base {
            "timeout" | "time" | "sudo" | "nice" | "env" | "npx" | "pnpx" | "bunx" | "uvx"
            | "exec" | "command" => {
                let skip = args.iter().take_while(|a| a.starts_with('-')).count()
                    + usize::from(base == "timeout");
                let (next, more) = args.get(skip..).and_then(<[&str]>::split_first)?;
                program = next;
                args = more;
            }
            "python" | "python3" | "py" | "uv" | "poetry" | "pipenv"
                if args.first() == Some(&"-m") || args.first() == Some(&"run") =>
            {
                let at = usize::from(args.first() == Some(&"-m")) + usize::from(base == "uv");
                let (next, more) = args.get(at.max(1)..).and_then(<[&str]>::split_first)?;
                program = next;
                args = more;
            }
            _ => return Some(from_program(base, args)),
        }
    }
}

/// `bash -lc "cargo test"` and Codex's `["bash", "-lc", "…"]` joined: the inner command.
fn unwrap_shell(command: &str) -> &str {
    let trimmed = command.trim();
    for prefix in ["bash -lc ", "bash -c ", "sh -c ", "zsh -lc ", "zsh -c "] {
        if let Some(inner) = trimmed.strip_prefix(prefix) {
            return inner.trim_matches(|c| c == '\'' || c == '"');
        }
    }
    trimmed
}

fn is_assignment(word: &str) -> bool {
    word.split_once('=').is_some_and(|(name, _)| {
        !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    })
}

fn from_program(program: &str, args: &[&str]) -> Kind {
    let sub = args.iter().find(|a| !a.starts_with('-')).copied();
    match program {
        "cargo" | "rustc" | "cargo-clippy" | "clippy-driver" | "rustfmt" => Kind::Cargo,
        "git" => match sub {
            Some("grep") => Kind::Search,
            Some("ls-files") => Kind::Listing,
            _ => Kind::Git,
        },
        "grep" | "egrep" | "fgrep" | "ag" | "ack" => Kind::Search,
        "rg" if args.contains(&"--files") => Kind::Listing,
        "rg" => Kind::Search,
        "find" | "fd" | "fdfind" | "ls" | "locate" => Kind::Listing,
        "pytest" | "py.test" | "tox" | "nox" | "unittest" => Kind::Pytest,
        "pip" | "pip3" => Kind::Pip,
        "mypy" | "ruff" | "flake8" | "pylint" | "pyright" | "eslint" | "tsc" | "shellcheck"
        | "black" => Kind::Lint,
        "npm" | "yarn" | "pnpm" | "bun" | "node" | "deno" | "jest" | "vitest" | "mocha" => {
            Kind::Node
        }
        "make" | "gmake" | "cmake" | "ninja" | "ctest" | "gcc" | "g++" | "cc" | "c++" | "clang"
        | "clang++" | "meson" => Kind::Build,
        "jq" => Kind::Json,
        "journalctl" | "dmesg" => Kind::Log,
        "cat" | "head" | "tail" | "less" | "more" | "nl" | "bat" => {
            let path = args.iter().rev().find(|a| !a.starts_with('-'));
            match path {
                Some(p) if p.ends_with(".log") || p.contains("/log/") || p.contains("/logs/") => {
                    Kind::Log
                }
                Some(p) if p.ends_with(".json") => Kind::Json,
                _ => Kind::Read,
            }
        }
        _ => Kind::Generic,
    }
}

fn from_content(output: &str) -> Kind {
    let head: Vec<&str> = output
        .lines()
        .filter(|l| !l.trim().is_empty())
        .take(15)
        .collect();
    let Some(first) = head.first() else {
        return Kind::Generic;
    };
    let trimmed = output.trim_start();
    if (trimmed.starts_with('{') || trimmed.starts_with('['))
        && serde_json::from_str::<serde::de::IgnoredAny>(output).is_ok()
    {
        return Kind::Json;
    }
    if first.starts_with("diff --git")
        || first.starts_with("On branch ")
        || first.starts_with("HEAD detached")
        || (first.starts_with("commit ") && first.len() >= 47)
    {
        return Kind::Git;
    }
    let any = |f: &dyn Fn(&str) -> bool| head.iter().any(|l| f(l));
    if any(&|l| {
        let t = l.trim_start();
        t.starts_with("Compiling ")
            || t.starts_with("Checking ")
            || l.starts_with("test result:")
            || (l.starts_with("running ") && l.ends_with(" tests"))
            || l.starts_with("error[E")
    }) {
        return Kind::Cargo;
    }
    if any(&|l| l.contains("test session starts")) {
        return Kind::Pytest;
    }
    if any(&|l| l.trim_start().starts_with('✔') || l.trim_start().starts_with('✓')) {
        return Kind::Node;
    }
    let hits = head.iter().filter(|l| looks_like_hit(l)).count();
    if hits * 2 > head.len() && head.len() >= 4 {
        return Kind::Search;
    }
    Kind::Generic
}

/// `path:12:text` or `path:12: text`.
fn looks_like_hit(line: &str) -> bool {
    let mut parts = line.splitn(3, ':');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(path), Some(number), Some(_)) => {
            !path.is_empty()
                && !path.contains(' ')
                && !number.is_empty()
                && number.bytes().all(|b| b.is_ascii_digit())
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_decides_first() {
        let k = |c: &str| kind(Some(c), None, "");
        assert_eq!(k("cargo clippy --all-targets"), Kind::Cargo);
        assert_eq!(
            k("cd /repo && RUST_LOG=x cargo test 2>&1 | tail -50"),
            Kind::Cargo
        );
        assert_eq!(k("bash -lc 'git diff HEAD~1'"), Kind::Git);
        assert_eq!(k("timeout 60 python -m pytest -x"), Kind::Pytest);
        assert_eq!(k("npx eslint ."), Kind::Lint);
        assert_eq!(k("rg --files src"), Kind::Listing);
        assert_eq!(k("git grep -n foo"), Kind::Search);
        assert_eq!(k("tail -n 200 /var/log/syslog"), Kind::Log);
        assert_eq!(k("cat -n src/main.rs"), Kind::Read);
        assert!(is_recall("xx recall 0123456789ab"));
    }

    #[test]
    fn without_a_command_the_tool_then_the_content_decides() {
        assert_eq!(kind(None, Some("Read"), "fn main() {}"), Kind::Read);
        assert_eq!(kind(None, None, "{\"a\": [1, 2]}"), Kind::Json);
        assert_eq!(kind(None, None, "diff --git a/x b/x\n"), Kind::Git);
        assert_eq!(
            kind(None, None, "running 3 tests\ntest a ... ok\n"),
            Kind::Cargo
        );
        let hits = "src/a.rs:1:fn a\nsrc/a.rs:2:fn b\nsrc/b.rs:3:fn c\nsrc/c.rs:9:fn d\n";
        assert_eq!(kind(None, None, hits), Kind::Search);
        assert_eq!(kind(None, None, "hello\nworld"), Kind::Generic);
    }
}
