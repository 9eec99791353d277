//! `xx` as a user meets it: bad codes and options are refused with the valid choices and exit
//! code 2, a missing agent names its package, config mistakes name file, line and key, the
//! dry run prints a pasteable command, and a real launch execs the agent (a stand-in script
//! that records what it was given) with its exit code passed through.

mod support;

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use support::Clutch;

fn refused(clutch: &Clutch, args: &[&str], expected: &[&str]) {
    let output = clutch.xx(args).output();
    assert_eq!(output.code, Some(2), "xx {args:?} must exit 2\n{output}");
    for text in expected {
        assert!(
            output.stderr.contains(text),
            "xx {args:?}: missing {text:?}\n{output}"
        );
    }
}

#[test]
fn invalid_codes_list_the_valid_choices() {
    let clutch = Clutch::new();
    refused(
        &clutch,
        &["zip"],
        &[
            "`z` is not an agent letter",
            "c Claude Code",
            "e Gemini CLI",
            "h Hermes",
        ],
    );
    refused(
        &clutch,
        &["cz"],
        &["`z` is not a mode letter", "i init", "C R = headless"],
    );
    refused(
        &clutch,
        &["c"],
        &["too short", "agents:", "modes:", "routes:", "tiers:"],
    );
    refused(&clutch, &["cipdd"], &["too long"]);
    refused(
        &clutch,
        &["cizz"],
        &["`z` is not a route letter", "p proxy"],
    );
    refused(
        &clutch,
        &["ciz"],
        &["neither a route nor a tier letter", "tiers:"],
    );
    refused(&clutch, &["cipz"], &["`z` is not a tier letter", "m best"]);
    refused(
        &clutch,
        &["cibd"],
        &["tier `d` needs the proxy route", "-m <model>"],
    );
    refused(&clutch, &["cidm"], &["tier `m` needs the proxy route"]);
}

#[test]
fn invalid_option_combinations_say_what_fits() {
    let clutch = Clutch::new();
    refused(
        &clutch,
        &["cIp"],
        &["headless modes need a prompt", "--stdin"],
    );
    refused(
        &clutch,
        &["cs"],
        &["mode `s` needs the session id", "xx cs -s <id>"],
    );
    refused(
        &clutch,
        &["ci", "-s", "abc"],
        &["-s/--session only goes with a resume mode"],
    );
    refused(
        &clutch,
        &["cR", "-p", "x"],
        &["a headless resume needs the session id"],
    );
    refused(
        &clutch,
        &["cI", "-p", "x", "more", "words"],
        &["give the prompt one way only"],
    );
    refused(
        &clutch,
        &["cc", "-p", "x"],
        &[
            "a prompt with an interactive continue is not supported",
            "`cC`",
        ],
    );
    refused(
        &clutch,
        &["er"],
        &["Gemini CLI cannot show a session picker", "xx es -s <id>"],
    );
    refused(
        &clutch,
        &["hi", "-p", "x"],
        &["Hermes cannot start an interactive session with a first prompt"],
    );
    refused(&clutch, &["ac"], &["Ante cannot continue the last session"]);
    refused(
        &clutch,
        &["cip", "-m", "has space"],
        &["-m/--model", "not a usable model name"],
    );
    refused(
        &clutch,
        &["cip", "--profile", "../etc"],
        &["--profile", "not a profile name"],
    );
    refused(
        &clutch,
        &["cipd"],
        &[
            "tier `d` (a named tier) is not set",
            "[tiers]",
            "config.toml",
        ],
    );
    refused(
        &clutch,
        &["cipm"],
        &["tier `m`", "no model-scan snapshot", "[selectors]"],
    );
    // The shipped aliases `ccc` (xx ccf) and `hsr` (xx hcf) until model-scan has run.
    for alias_code in ["ccf", "hcf"] {
        refused(
            &clutch,
            &[alias_code],
            &[
                "tier `f`",
                "no model-scan snapshot",
                "free = \"<model>\"",
                "-m <model>",
            ],
        );
    }
    refused(&clutch, &["cip3"], &["tier `3`", "[slots.3]"]);
    refused(&clutch, &["cip", "--bogus"], &["--bogus"]);
}

#[test]
fn no_arguments_prints_help_with_examples() {
    let clutch = Clutch::new();
    let output = clutch.xx(&[]).output();
    output.assert_ok();
    assert!(output.stdout.contains("Examples:"), "{output}");
    assert!(output.stdout.contains("xx cip"), "{output}");
    let output = clutch.xx(&["--help"]).output();
    output.assert_ok();
    assert!(output.stdout.contains("Exit codes:"), "{output}");
}

#[test]
fn config_mistakes_name_file_line_and_key() {
    let clutch = Clutch::new()
        .config("[gateway]\nurl = \"http://127.0.0.1:9\"\n\n[launcher]\nbypas = false\n");
    let output = clutch.xx(&["cip", "-n"]).output();
    assert_eq!(output.code, Some(2), "{output}");
    assert!(output.stderr.contains("config.toml:5:1"), "{output}");
    assert!(output.stderr.contains("unknown key `bypas`"), "{output}");
    assert!(
        output.stderr.contains("bypass"),
        "the valid keys are listed: {output}"
    );

    let clutch = Clutch::new().config("[gateway]\ntoken = \"${CLUTCH_TEST_UNSET_TOKEN}\"\n");
    let output = clutch.xx(&["cip", "-n"]).output();
    assert_eq!(output.code, Some(2), "{output}");
    assert!(output.stderr.contains("config.toml:2"), "{output}");
    assert!(
        output.stderr.contains("CLUTCH_TEST_UNSET_TOKEN is not set"),
        "{output}"
    );

    let clutch = Clutch::new().config("[tiers]\nx = \"a/b\"\n");
    let output = clutch.xx(&["cip", "-n"]).output();
    assert_eq!(output.code, Some(2), "{output}");
    assert!(
        output
            .stderr
            .contains("`tiers.x` is not a named tier letter"),
        "{output}"
    );
}

#[test]
fn env_references_expand_and_tokens_stay_masked() {
    let clutch = Clutch::new()
        .config("[gateway]\nurl = \"http://127.0.0.1:${GW_PORT}\"\ntoken = \"${GW_TOKEN}\"\n");
    let output = clutch
        .xx(&["cip", "-n"])
        .env("GW_PORT", "9123")
        .env("GW_TOKEN", "very-secret-token")
        .output();
    output.assert_ok();
    assert!(
        output
            .stdout
            .contains("ANTHROPIC_BASE_URL=http://127.0.0.1:9123/p/claude"),
        "{output}"
    );
    assert!(
        output.stdout.contains("ANTHROPIC_AUTH_TOKEN='****'"),
        "{output}"
    );
    assert!(
        !output.stdout.contains("very-secret-token")
            && !output.stderr.contains("very-secret-token")
    );
    assert!(!clutch.state_dir().exists(), "a dry run writes nothing");
}

#[test]
fn missing_agent_binary_names_the_package_to_install() {
    let clutch = Clutch::new();
    let empty = tempfile::tempdir().unwrap();
    let output = clutch.xx(&["xip"]).env("PATH", empty.path()).output();
    assert_eq!(output.code, Some(127), "{output}");
    assert!(output.stderr.contains("Codex is not installed"), "{output}");
    assert!(
        output.stderr.contains("npm install -g @openai/codex"),
        "{output}"
    );
}

/// A stand-in agent: a script that records its argv and environment, then exits 7.
fn stand_in(clutch: &Clutch) -> std::path::PathBuf {
    let bin = clutch.workdir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let record = clutch.workdir.path().join("record");
    let script = format!(
        "#!/bin/sh\n{{ printf 'argv:'; for a in \"$@\"; do printf ' [%s]' \"$a\"; done; echo; env; }} > '{}'\nexit 7\n",
        record.display()
    );
    let path = bin.join("standin-agent");
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    let agents = clutch.clutch_home.path().join("config/agents");
    std::fs::create_dir_all(&agents).unwrap();
    let spec = include_str!("../agents/claude.toml")
        .replace("binary = \"claude\"", "binary = \"standin-agent\"");
    std::fs::write(agents.join("claude.toml"), spec).unwrap();
    bin
}

fn path_with(dir: &Path) -> String {
    format!(
        "{}:{}",
        dir.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

#[test]
fn a_launch_execs_the_agent_with_its_plan_and_passes_the_exit_code_through() {
    // A real gateway, so the launch finds it healthy and goes ahead.
    let clutch = Clutch::new();
    let gateway = support::gateway::TestGateway::start(clutch.clutch_home.path());
    let clutch = clutch.config(&format!(
        "[gateway]\nurl = \"{}\"\nauto_start = false\n",
        gateway.url
    ));
    let bin = stand_in(&clutch);
    let output = clutch
        .xx(&["cIp", "--stdin", "--", "--extra", "two words"])
        .env("PATH", path_with(&bin))
        .env("IS_SANDBOX", "1")
        .env("OPENROUTER_API_KEY", "sk-or-test")
        .env("ANTHROPIC_API_KEY", "sk-real-user-key")
        .env("NO_PROXY", "corp.example")
        .stdin("prompt from stdin\n")
        .output();
    assert_eq!(
        output.code,
        Some(7),
        "the agent's exit code is xx's\n{output}"
    );
    let record = std::fs::read_to_string(clutch.workdir.path().join("record")).unwrap();
    let settings = clutch
        .state_dir()
        .join("agent-files/claude/settings-claude.json");
    assert!(
        record.starts_with(&format!(
            "argv: [--dangerously-skip-permissions] [--settings] [{}] [--extra] [two words] [-p] [prompt from stdin]\n",
            settings.display()
        )),
        "{record}"
    );
    assert!(
        record.contains(&format!("\nANTHROPIC_BASE_URL={}/p/claude\n", gateway.url)),
        "{record}"
    );
    assert!(
        record.contains("\nNO_PROXY=corp.example,127.0.0.1,localhost,::1\n"),
        "{record}"
    );
    assert!(
        !record.contains("sk-real-user-key"),
        "the user's real key must not reach the gateway route"
    );
    let mode = std::fs::metadata(&settings).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "a file holding the gateway key is private");
    let dir_mode = std::fs::metadata(settings.parent().unwrap())
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(dir_mode, 0o700);
    let contents = std::fs::read_to_string(&settings).unwrap();
    let json: serde_json::Value = serde_json::from_str(&contents).unwrap();
    assert_eq!(
        json["env"]["ANTHROPIC_BASE_URL"],
        format!("{}/p/claude", gateway.url)
    );
    assert!(
        !clutch.user_home.path().join(".claude").exists(),
        "the user's agent config is never touched"
    );
}

#[test]
fn the_direct_route_removes_inherited_redirects() {
    let clutch = Clutch::new();
    let bin = stand_in(&clutch);
    let output = clutch
        .xx(&["cid"])
        .env("PATH", path_with(&bin))
        .env("IS_SANDBOX", "1")
        .env("ANTHROPIC_BASE_URL", "http://somewhere.example")
        .env("OPENAI_BASE_URL", "http://somewhere.example/v1")
        .env("ANTHROPIC_API_KEY", "sk-user-key")
        .output();
    assert_eq!(output.code, Some(7), "{output}");
    let record = std::fs::read_to_string(clutch.workdir.path().join("record")).unwrap();
    assert!(
        record.starts_with("argv: [--dangerously-skip-permissions]\n"),
        "{record}"
    );
    assert!(!record.contains("BASE_URL="), "{record}");
    assert!(
        record.contains("\nANTHROPIC_API_KEY=sk-user-key\n"),
        "direct keeps the user's own key"
    );
}

#[test]
fn root_refusal_is_explained_before_the_agent_starts() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: only meaningful as root");
        return;
    }
    let clutch = Clutch::new();
    let bin = stand_in(&clutch);
    let output = clutch.xx(&["cid"]).env("PATH", path_with(&bin)).output();
    assert_eq!(output.code, Some(7), "{output}");
    assert!(
        output
            .stderr
            .contains("refuses `--dangerously-skip-permissions` when run as root"),
        "{output}"
    );
    let record = std::fs::read_to_string(clutch.workdir.path().join("record")).unwrap();
    assert!(record.starts_with("argv:\n"), "{record}");
    // Claude Code lifts the refusal for IS_SANDBOX=1 only; any other value still refuses.
    for value in ["yes", "true", "2"] {
        let output = clutch
            .xx(&["cid"])
            .env("PATH", path_with(&bin))
            .env("IS_SANDBOX", value)
            .output();
        assert!(
            output.stderr.contains("set IS_SANDBOX=1 to allow it"),
            "IS_SANDBOX={value}: {output}"
        );
    }
}

#[test]
fn agents_lists_every_letter_with_its_spec_state() {
    let clutch = Clutch::new();
    let output = clutch
        .xx(&["agents"])
        .timeout(std::time::Duration::from_secs(60))
        .output();
    output.assert_ok();
    for (letter, name) in [
        ('c', "claude"),
        ('x', "codex"),
        ('e', "gemini"),
        ('q', "qwen"),
        ('o', "opencode"),
        ('p', "pi"),
        ('h', "hermes"),
        ('a', "ante"),
        ('g', "antigravity"),
    ] {
        let line = output
            .stdout
            .lines()
            .find(|l| l.starts_with(&format!("{letter} ")))
            .unwrap_or_else(|| panic!("no line for {letter}\n{output}"));
        assert!(line.contains(name), "{line}");
        let installed = which::which(if name == "antigravity" { "agy" } else { name }).is_ok();
        assert_eq!(line.contains(" not installed "), !installed, "{line}");
        if matches!(name, "ante" | "antigravity") {
            assert!(line.ends_with("unverified"), "{line}");
        } else {
            assert!(line.contains("verified on "), "{line}");
        }
    }
}

#[test]
fn doctor_says_where_each_providers_key_comes_from_and_which_ones_matter() {
    let clutch = Clutch::new().config(
        "[gateway]\nurl = \"http://127.0.0.1:9\"\n[providers.corp]\nbase_url = \"https://corp.example/v1\"\nformat = \"chat\"\nkey_env = \"CORP_API_KEY\"\n",
    );
    let output = clutch
        .xx(&["doctor"])
        .env("OPENROUTER_API_KEY", "sk-or-secret-value")
        .timeout(std::time::Duration::from_secs(60))
        .output();
    assert!(
        output
            .stdout
            .contains("openrouter   key from OPENROUTER_API_KEY (set)  [default profile]"),
        "{output}"
    );
    assert!(
        output
            .stdout
            .contains("corp         no key: from CORP_API_KEY (not set)\n"),
        "{output}"
    );
    assert!(!output.stdout.contains("sk-or-secret-value"));
    assert!(
        !output.stdout.contains("reaches no usable provider"),
        "{output}"
    );

    // With no key at all the default profile is stuck, and doctor says what to do.
    let stuck = clutch
        .xx(&["doctor"])
        .timeout(std::time::Duration::from_secs(60))
        .output();
    assert_eq!(stuck.code, Some(1), "{stuck}");
    assert!(
        stuck
            .stdout
            .contains("the default profile reaches no usable provider: run `xx setup`"),
        "{stuck}"
    );
    assert!(
        output.stdout.contains("http://127.0.0.1:9/health: down"),
        "{output}"
    );
    assert!(output.stdout.contains("config.toml: valid"), "{output}");
}

#[test]
fn peeking_or_attaching_to_a_session_that_is_not_there_says_so() {
    let clutch = Clutch::new();
    for args in [["peek", "nosuch"], ["attach", "nosuch"]] {
        let output = clutch.xx(&args).output();
        assert_eq!(output.code, Some(2), "{output}");
        assert!(output.stderr.contains("no session `nosuch`"), "{output}");
        assert!(!output.stderr.contains("os error"), "{output}");
    }
}

#[test]
fn listing_commands_speak_json_when_asked() {
    let clutch = Clutch::new().config("[gateway]\nauto_start = false\n");
    for args in [["agents", "--json"], ["doctor", "--json"], ["ls", "--json"]] {
        let output = clutch
            .xx(&args)
            .timeout(std::time::Duration::from_secs(60))
            .output();
        let value: serde_json::Value = serde_json::from_str(&output.stdout)
            .unwrap_or_else(|e| panic!("{args:?} is not JSON ({e}): {output}"));
        match args[0] {
            "agents" => assert_eq!(value.as_array().unwrap().len(), 9, "{value}"),
            "doctor" => {
                assert_eq!(value["config"]["state"], "valid", "{value}");
                let openrouter = value["providers"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|p| p["name"] == "openrouter")
                    .unwrap_or_else(|| panic!("{value}"));
                assert_eq!(openrouter["usable"], false, "{value}");
                assert_eq!(openrouter["in_default_profile"], true, "{value}");
                assert!(
                    openrouter["state"]
                        .as_str()
                        .unwrap()
                        .contains("OPENROUTER_API_KEY (not set)"),
                    "{value}"
                );
                assert!(value["gateway"]["up"].is_boolean(), "{value}");
            }
            _ => assert_eq!(value, serde_json::json!([])),
        }
    }
}

/// The first ```toml block in the README after `heading`.
fn readme_toml_after(heading: &str) -> String {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let after = &readme[readme.find(heading).unwrap()..];
    let start = after.find("```toml\n").unwrap() + "```toml\n".len();
    after[start..start + after[start..].find("```").unwrap()].to_string()
}

/// The sample config a new user copies from the README.
fn readme_sample_config() -> String {
    readme_toml_after("## Config")
}

/// `proxies config check` for `clutch`'s config, with no DeepSeek key in the environment.
fn config_check(clutch: &Clutch) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_proxies"))
        .args(["config", "check"])
        .env_remove("DEEPSEEK_API_KEY")
        .env("CLUTCH_HOME", clutch.clutch_home.path())
        .output()
        .unwrap()
}

#[test]
fn the_readme_sample_config_is_valid_with_no_keys_set() {
    let clutch = Clutch::new().config(&readme_sample_config());
    let check = config_check(&clutch);
    assert_eq!(
        check.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let doctor = clutch
        .xx(&["doctor", "--json"])
        .timeout(std::time::Duration::from_secs(60))
        .output();
    let report: serde_json::Value = serde_json::from_str(&doctor.stdout).unwrap();
    assert_eq!(report["config"]["state"], "valid", "{report}");
    // The README's one-provider profile works with its sample config.
    let profile = readme_toml_after("To send every role to one provider");
    let profiles = clutch.clutch_home.path().join("config/profiles");
    std::fs::create_dir_all(&profiles).unwrap();
    std::fs::write(profiles.join("default.toml"), profile).unwrap();
    let check = config_check(&clutch);
    assert_eq!(
        check.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    // A slot naming a profile that does not exist is refused at load, not on first use.
    let wrong = readme_sample_config().replace("profile = \"default\"", "profile = \"work\"");
    let clutch = Clutch::new().config(&wrong);
    let check = config_check(&clutch);
    let stderr = String::from_utf8_lossy(&check.stderr);
    assert_eq!(check.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("slots.1.profile") && stderr.contains("no routing profile `work`"),
        "{stderr}"
    );
}

#[test]
fn every_agent_spec_cites_docs_agents_md_which_names_its_verified_version() {
    let root = env!("CARGO_MANIFEST_DIR");
    let docs = std::fs::read_to_string(format!("{root}/docs/agents.md")).unwrap();
    for entry in std::fs::read_dir(format!("{root}/agents"))
        .unwrap()
        .flatten()
    {
        let text = std::fs::read_to_string(entry.path()).unwrap();
        let spec: toml::Value = toml::from_str(&text).unwrap();
        let name = spec["display_name"].as_str().unwrap();
        assert!(
            text.contains("docs/agents.md") && !text.contains("shared/reference"),
            "{} must cite docs/agents.md, a file in the repo",
            entry.path().display()
        );
        let row = match spec.get("verified").and_then(|v| v.as_str()) {
            Some(version) => format!(
                "| {name} (`{}`, {version}) |",
                spec["letter"].as_str().unwrap()
            ),
            None => format!(
                "| {name} (`{}`, unverified) |",
                spec["letter"].as_str().unwrap()
            ),
        };
        assert!(docs.contains(&row), "docs/agents.md has no row `{row}`");
    }
}

#[test]
fn agent_versions_come_from_stderr_too_and_are_asked_again_only_when_the_binary_changes() {
    let clutch = Clutch::new();
    let bin = clutch.workdir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let calls = clutch.workdir.path().join("version-calls");
    // Pi prints its version on stderr.
    let script = |version: &str| {
        format!(
            "#!/bin/sh\necho called >> '{}'\necho {version} >&2\n",
            calls.display()
        )
    };
    let program = bin.join("standin-pi");
    let install = |version: &str| {
        let temp = bin.join("new");
        std::fs::write(&temp, script(version)).unwrap();
        std::fs::set_permissions(&temp, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        std::fs::rename(&temp, &program).unwrap();
    };
    install("0.73.1");
    let agents = clutch.clutch_home.path().join("config/agents");
    std::fs::create_dir_all(&agents).unwrap();
    let spec =
        include_str!("../agents/pi.toml").replace("binary = \"pi\"", "binary = \"standin-pi\"");
    std::fs::write(agents.join("pi.toml"), spec).unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let pi_line = |output: &support::Output| {
        output
            .stdout
            .lines()
            .find(|l| l.starts_with("p "))
            .unwrap_or_default()
            .to_string()
    };
    let count = || {
        std::fs::read_to_string(&calls)
            .unwrap_or_default()
            .lines()
            .count()
    };

    let first = clutch.xx(&["agents"]).env("PATH", &path).output();
    assert!(pi_line(&first).contains("0.73.1"), "{first}");
    assert_eq!(count(), 1);
    let second = clutch.xx(&["agents"]).env("PATH", &path).output();
    assert!(pi_line(&second).contains("0.73.1"), "{second}");
    assert_eq!(count(), 1, "an unchanged binary is not asked again");

    install("0.74.0-updated");
    let third = clutch.xx(&["agents"]).env("PATH", &path).output();
    assert!(pi_line(&third).contains("0.74.0-updated"), "{third}");
    assert_eq!(count(), 2);
}

#[test]
fn no_color_turns_off_color_on_a_terminal() {
    if !support::tmux::tmux_available() {
        return;
    }
    let clutch = Clutch::new();
    let env = format!(
        "PATH={} HOME={} CLUTCH_HOME={} TERM=xterm-256color",
        std::env::var("PATH").unwrap_or_default(),
        clutch.user_home.path().display(),
        clutch.clutch_home.path().display()
    );
    let tmux = support::tmux::Tmux::start("nocolor", env, 120, 60);
    for (binary, name) in [
        (env!("CARGO_BIN_EXE_xx"), "xx"),
        (env!("CARGO_BIN_EXE_proxies"), "proxies"),
    ] {
        for no_color in [false, true] {
            let window = format!("{name}-{no_color}");
            let prefix = if no_color { "NO_COLOR=1 " } else { "" };
            tmux.window(
                &window,
                &format!("sh -c '{prefix}{binary} --help; echo HELP-DONE; sleep 30'"),
            );
            tmux.wait_for(&window, "HELP-DONE");
            let screen = tmux.run(&["capture-pane", "-e", "-p", "-t", &format!(":{window}")]);
            let colored = screen.contains("\x1b[");
            assert_eq!(
                colored, !no_color,
                "{name} --help with NO_COLOR={no_color}: {screen:?}"
            );
        }
    }
}
