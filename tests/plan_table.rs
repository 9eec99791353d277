//! Every agent × mode × route, plus tier, model, session, prompt, profile and extra-argument
//! variants, planned with a fixed environment and snapshotted. A change to any agent's
//! command line shows up here as a reviewable diff.

use std::collections::BTreeMap;
use std::path::PathBuf;

use clutch::agent::Registry;
use clutch::agent::plan::{self, Context, LaunchRequest};
use clutch::code;
use clutch::config::Config;
use serde_json::{Value, json};

const MODES: &[char] = &['i', 'c', 'r', 's', 'n', 'I', 'C', 'R'];
const ROUTES: &[char] = &['p', 'b', 'd'];

fn config() -> Config {
    let text = r#"
        [tiers]
        d = "deepseek/deepseek-v4-flash"
        [selectors]
        free = "nvidia/nemotron-3-super-120b-a12b:free"
        [slots.1]
        model = "anthropic/claude-sonnet-4.5"
        profile = "work"
    "#;
    clutch::config::parse_toml(text, "test config").unwrap()
}

fn inherited_env() -> BTreeMap<String, String> {
    [
        ("PATH", "/usr/bin"),
        ("NO_PROXY", "corp.example"),
        ("ANTHROPIC_BASE_URL", "http://elsewhere.example"),
        ("ANTHROPIC_API_KEY", "sk-ant-real"),
        ("OPENAI_BASE_URL", "http://elsewhere.example/v1"),
        ("GOOGLE_API_KEY", "real-google-key"),
        ("OPENCODE_CONFIG_CONTENT", "{}"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// Plan one launch and reduce it to what a reader checks: the command, the environment
/// changes, the files, the notices; or the error text.
fn plan_one(
    registry: &Registry,
    config: &Config,
    env: &BTreeMap<String, String>,
    is_root: bool,
    text: &str,
    request: LaunchRequest,
) -> Value {
    let code = match code::parse(text, &registry.letters()) {
        Ok(code) => code,
        Err(err) => return json!({ "error": err.to_string() }),
    };
    let spec = registry.by_letter(code.agent).unwrap();
    let ctx = Context {
        config,
        config_path: "/home/u/.config/clutch/config.toml".into(),
        files_dir: PathBuf::from("/home/u/.local/state/clutch/agent-files"),
        is_root,
        env,
        snapshot: Err("no model-scan snapshot yet; run `xx scan refresh`".into()),
    };
    let request = LaunchRequest {
        code: Some(code),
        ..request
    };
    match plan::build(spec, &request, &ctx) {
        Ok(plan) => {
            let mut value = json!({
                "command": std::iter::once(plan.program.clone()).chain(plan.argv.clone()).collect::<Vec<_>>(),
                "env_set": plan.env_set,
                "env_unset": plan.env_unset,
            });
            if !plan.files.is_empty() {
                value["files"] = json!(plan
                    .files
                    .iter()
                    .map(|f| json!({"path": f.path, "mode": format!("{:o}", f.mode), "contents": f.contents}))
                    .collect::<Vec<_>>());
            }
            if !plan.notices.is_empty() {
                value["notices"] = json!(plan.notices);
            }
            value
        }
        Err(err) => json!({ "error": err.to_string() }),
    }
}

/// What each mode needs to be valid.
fn minimal_request(mode: char) -> LaunchRequest {
    LaunchRequest {
        prompt: mode
            .is_ascii_uppercase()
            .then(|| "say pong".to_string())
            .or((mode == 'n').then(|| "say pong".to_string())),
        session: matches!(mode, 's' | 'R')
            .then(|| "0f8c2b1e-5d6a-4c3b-9e7f-1a2b3c4d5e6f".to_string()),
        ..LaunchRequest::default()
    }
}

#[test]
fn every_agent_mode_and_route() {
    let registry = Registry::builtin().unwrap();
    let config = config();
    let env = inherited_env();
    for (spec, _) in registry.iter() {
        let mut table = serde_json::Map::new();
        let letter = spec.letter;
        for mode in MODES {
            for route in ROUTES {
                let text = format!("{letter}{mode}{route}");
                let value = plan_one(
                    &registry,
                    &config,
                    &env,
                    false,
                    &text,
                    minimal_request(*mode),
                );
                table.insert(text, value);
            }
        }
        let variants: Vec<(String, LaunchRequest)> = vec![
            (format!("{letter}i"), LaunchRequest::default()),
            (format!("{letter}ipd"), LaunchRequest::default()),
            (format!("{letter}if"), LaunchRequest::default()),
            (format!("{letter}i1"), LaunchRequest::default()),
            (
                format!("{letter}ip -m some/model"),
                LaunchRequest {
                    model: Some("some/model".into()),
                    ..Default::default()
                },
            ),
            (
                format!("{letter}id -m some/model"),
                LaunchRequest {
                    model: Some("some/model".into()),
                    ..Default::default()
                },
            ),
            (
                format!("{letter}ipd -m beats/tier"),
                LaunchRequest {
                    model: Some("beats/tier".into()),
                    ..Default::default()
                },
            ),
            (
                format!("{letter}rp -s abc123"),
                LaunchRequest {
                    session: Some("abc123".into()),
                    ..Default::default()
                },
            ),
            (
                format!("{letter}ip -p 'first prompt'"),
                LaunchRequest {
                    prompt: Some("first prompt".into()),
                    ..Default::default()
                },
            ),
            (
                format!("{letter}Ip --profile work -- --extra-flag value"),
                LaunchRequest {
                    prompt: Some("say pong".into()),
                    profile: Some("work".into()),
                    extra: vec!["--extra-flag".into(), "value".into()],
                    ..Default::default()
                },
            ),
            (
                format!("{letter}ip -- --extra-flag"),
                LaunchRequest {
                    extra: vec!["--extra-flag".into()],
                    ..Default::default()
                },
            ),
        ];
        for (label, request) in variants {
            let text = label.split(' ').next().unwrap().to_string();
            table.insert(
                label,
                plan_one(&registry, &config, &env, false, &text, request),
            );
        }
        insta::assert_json_snapshot!(spec.name.clone(), Value::Object(table));
    }
}

#[test]
fn bypass_refused_as_root_is_left_out_with_a_notice() {
    let registry = Registry::builtin().unwrap();
    let config = config();
    let env = inherited_env();
    let plan = plan_one(
        &registry,
        &config,
        &env,
        true,
        "cip",
        LaunchRequest::default(),
    );
    let command = plan["command"].as_array().unwrap();
    assert!(
        !command
            .iter()
            .any(|a| a == "--dangerously-skip-permissions"),
        "{plan}"
    );
    let notice = plan["notices"][0].as_str().unwrap();
    assert!(
        notice.contains("refuses `--dangerously-skip-permissions` when run as root"),
        "{notice}"
    );
    assert!(notice.contains("IS_SANDBOX=1"), "{notice}");

    let mut sandbox = env.clone();
    sandbox.insert("IS_SANDBOX".into(), "1".into());
    let plan = plan_one(
        &registry,
        &config,
        &sandbox,
        true,
        "cip",
        LaunchRequest::default(),
    );
    assert!(
        plan["command"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a == "--dangerously-skip-permissions")
    );
    assert!(plan.get("notices").is_none());
}

#[test]
fn direct_route_scrubs_redirects_and_keys_a_parent_launch_injected() {
    let registry = Registry::builtin().unwrap();
    let config = config();
    let mut env = inherited_env();
    env.insert(
        "ANTHROPIC_AUTH_TOKEN".into(),
        clutch::config::LOOPBACK_KEY.into(),
    );
    env.insert(
        "CLUTCH_GATEWAY_KEY".into(),
        clutch::config::LOOPBACK_KEY.into(),
    );
    let plan = plan_one(
        &registry,
        &config,
        &env,
        false,
        "cid",
        LaunchRequest::default(),
    );
    let unset: Vec<&str> = plan["env_unset"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    for name in [
        "ANTHROPIC_BASE_URL",
        "OPENAI_BASE_URL",
        "ANTHROPIC_AUTH_TOKEN",
        "CLUTCH_GATEWAY_KEY",
    ] {
        assert!(unset.contains(&name), "{name} not unset: {unset:?}");
    }
    // The user's own key is what a direct launch needs.
    assert!(!unset.contains(&"ANTHROPIC_API_KEY"));
    assert!(plan["env_set"].as_object().unwrap().is_empty());
}

#[test]
fn a_configured_token_is_masked_in_the_dry_run_command() {
    let registry = Registry::builtin().unwrap();
    let config: Config =
        clutch::config::parse_toml("[gateway]\ntoken = \"tok-secret-123\"\n", "test").unwrap();
    let env = inherited_env();
    let ctx = Context {
        config: &config,
        config_path: "c".into(),
        files_dir: PathBuf::from("/f"),
        is_root: false,
        env: &env,
        snapshot: Err("no snapshot".into()),
    };
    for letter in ['c', 'x', 'e', 'q', 'o', 'p', 'h'] {
        let code = code::parse(&format!("{letter}ip"), &registry.letters()).unwrap();
        let spec = registry.by_letter(letter).unwrap();
        let request = LaunchRequest {
            code: Some(code),
            ..Default::default()
        };
        let plan = plan::build(spec, &request, &ctx).unwrap();
        let shown = clutch::launch::render_command(&plan);
        assert!(!shown.contains("tok-secret-123"), "{letter}: {shown}");
        let injected = plan.env_set.values().any(|v| v.contains("tok-secret-123"))
            || plan
                .files
                .iter()
                .any(|f| f.contents.contains("tok-secret-123"));
        assert!(injected, "{letter}: the token must reach the agent");
        assert!(
            plan.files
                .iter()
                .filter(|f| f.contents.contains("tok-secret-123"))
                .all(|f| f.mode == 0o600)
        );
    }
}

#[test]
fn user_override_replaces_a_builtin_and_adds_an_agent_without_rust() {
    let dir = tempfile::tempdir().unwrap();
    let claude = include_str!("../agents/claude.toml")
        .replace("binary = \"claude\"", "binary = \"my-claude\"");
    std::fs::write(dir.path().join("claude.toml"), claude).unwrap();
    let kilo = r#"
        name = "kilo"
        letter = "k"
        display_name = "Kilo"
        binary = "kilo"
        install = "npm install -g kilo"
        protocol = "chat"
        profile = "kilo"
        [modes]
        init = ["@route", "@extra"]
        continue = ["-c", "@route"]
        [gateway]
        env.OPENAI_BASE_URL = "{gateway}/v1"
    "#;
    std::fs::write(dir.path().join("kilo.toml"), kilo).unwrap();
    let registry = Registry::load(dir.path()).unwrap();
    assert_eq!(registry.by_letter('c').unwrap().binary, "my-claude");
    let plan = plan_one(
        &registry,
        &config(),
        &inherited_env(),
        false,
        "kcp",
        LaunchRequest::default(),
    );
    assert_eq!(plan["command"], json!(["kilo", "-c"]));
    assert_eq!(
        plan["env_set"]["OPENAI_BASE_URL"],
        "http://127.0.0.1:8082/p/kilo/v1"
    );
}

#[test]
fn bad_agent_files_name_the_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let text = "name = \"z\"\nletter = \"z\"\ndisplay_name = \"Z\"\nbinary = \"z\"\ninstall = \"x\"\nprotocol = \"chat\"\nprofile = \"z\"\nflavour = 1\n[modes]\ninit = []\n[gateway]\n";
    std::fs::write(dir.path().join("z.toml"), text).unwrap();
    let err = Registry::load(dir.path()).unwrap_err().to_string();
    assert!(err.contains("z.toml:8:1"), "{err}");
    assert!(err.contains("unknown key `flavour`"), "{err}");

    std::fs::write(
        dir.path().join("z.toml"),
        text.replace("flavour = 1\n", "letter2 = 1\n")
            .replace("letter = \"z\"", "letter = \"c\"")
            .replace("letter2 = 1\n", ""),
    )
    .unwrap();
    let err = Registry::load(dir.path()).unwrap_err().to_string();
    assert!(err.contains("`c` is already used by Claude Code"), "{err}");
}
