//! `xx shell init <shell>` sourced in real bash, zsh and fish: every alias is defined and
//! expands to its code, every code is one `xx` accepts, and the completion for `xx` is
//! registered.

mod support;

use std::process::Command;

use support::Clutch;

/// (name, expansion) from the bash file, the one the other two shells' files mirror.
fn aliases() -> Vec<(String, String)> {
    include_str!("../shell/xx.bash")
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix("alias ")?;
            let (name, rest) = rest.split_once("='")?;
            let (expansion, _) = rest.split_once('\'')?;
            Some((name.to_string(), expansion.to_string()))
        })
        .collect()
}

fn shell_available(shell: &str) -> bool {
    if which::which(shell).is_ok() {
        return true;
    }
    if std::env::var("CI").is_ok() || std::env::var("CLUTCH_REQUIRE_AGENTS").is_ok() {
        panic!("{shell} is not installed; .ci/run installs it");
    }
    eprintln!("skipped: {shell} is not installed");
    false
}

/// Run `script` in `shell` with `xx` on PATH and a throwaway home.
fn run_in(shell: &str, flags: &[&str], script: &str) -> String {
    let clutch = Clutch::new();
    let xx_dir = std::path::Path::new(env!("CARGO_BIN_EXE_xx"))
        .parent()
        .unwrap();
    let output = Command::new(shell)
        .args(flags)
        .arg(script)
        .env_clear()
        .env("PATH", format!("{}:/usr/bin:/bin", xx_dir.display()))
        .env("HOME", clutch.user_home.path())
        .env("CLUTCH_HOME", clutch.clutch_home.path())
        .env("TERM", "dumb")
        .output()
        .expect("run shell");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        output.status.success(),
        "{shell} failed\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );
    assert!(
        !stderr.contains("error"),
        "{shell} printed errors:\n{stderr}"
    );
    stdout
}

#[test]
fn bash_defines_every_alias_and_the_completion() {
    if !shell_available("bash") {
        return;
    }
    let names: Vec<String> = aliases().into_iter().map(|(n, _)| n).collect();
    let script = format!(
        "eval \"$(xx shell init bash)\"; alias {}; complete -p xx",
        names.join(" ")
    );
    let out = run_in("bash", &["--norc", "--noprofile", "-i", "-c"], &script);
    for (name, expansion) in aliases() {
        assert!(
            out.contains(&format!("alias {name}='{expansion}'\n")),
            "bash: {name}\n{out}"
        );
    }
    let registered = out
        .lines()
        .any(|l| l.starts_with("complete ") && l.contains(" -F _xx") && l.ends_with(" xx"));
    assert!(registered, "{out}");
}

#[test]
fn zsh_defines_every_alias_and_the_completion() {
    if !shell_available("zsh") {
        return;
    }
    let script = "eval \"$(xx shell init zsh)\"; alias; print \"completion=$_comps[xx]\"";
    let out = run_in("zsh", &["-f", "-c"], script);
    for (name, expansion) in aliases() {
        let line = format!("{name}='{expansion}'");
        assert!(out.lines().any(|l| l == line), "zsh: {line}\n{out}");
    }
    assert!(out.contains("completion=_xx"), "{out}");
}

#[test]
fn fish_defines_every_alias_and_the_completion() {
    if !shell_available("fish") {
        return;
    }
    let mut script = String::from("xx shell init fish | source\n");
    for (name, _) in aliases() {
        script.push_str(&format!("functions {name}\n"));
    }
    script.push_str("complete -C 'xx '\n");
    let out = run_in("fish", &["--no-config", "-c"], &script);
    for (name, expansion) in aliases() {
        assert!(
            out.contains(&format!("function {name} ")),
            "fish: {name}\n{out}"
        );
        assert!(
            out.contains(&format!("    {expansion} $argv\n")),
            "fish: {name} -> {expansion}\n{out}"
        );
    }
    for subcommand in ["agents", "doctor", "shell", "completions"] {
        assert!(
            out.lines().any(|l| l.starts_with(subcommand)),
            "fish completion lacks {subcommand}\n{out}"
        );
    }
}

#[test]
fn every_alias_code_is_accepted() {
    let clutch =
        Clutch::new().config("[selectors]\nfree = \"nvidia/nemotron-3-super-120b-a12b:free\"\n");
    for (name, expansion) in aliases() {
        let Some(code) = expansion.strip_prefix("xx ") else {
            assert!(expansion.starts_with("proxies "), "{name}: {expansion}");
            continue;
        };
        let output = clutch.xx(&[code, "--dry-run"]).output();
        assert_eq!(output.code, Some(0), "alias {name} = {expansion}\n{output}");
    }
}

#[test]
fn completions_subcommand_prints_each_shells_script() {
    let clutch = Clutch::new();
    for (shell, marker) in [
        ("bash", "complete -F _xx"),
        ("zsh", "#compdef xx"),
        ("fish", "complete -c xx"),
    ] {
        let output = clutch.xx(&["completions", shell]).output();
        output.assert_ok();
        assert!(output.stdout.contains(marker), "{shell}\n{output}");
    }
}
