//! The first run as a new user meets it: `xx setup` tests each provider's key against the
//! provider before saving it (scripted with flags, and answered on a real terminal through
//! tmux), and the next `xx` launch works with no other step; a launch with no usable
//! provider says to run `xx setup`; a key changed in the shell reaches the running gateway.

mod support;

use std::os::unix::fs::PermissionsExt as _;

use support::fake_upstream::{AGENT_TIMEOUT, FakeUpstream};
use support::gateway::free_port;
use support::tmux::{Tmux, tmux_available};
use support::{Clutch, agent_available};

/// A sandbox whose gateway, started by `xx` on demand, listens on a port of its own; its
/// supervisor is stopped when the test ends.
struct FirstRun {
    clutch: Clutch,
}

impl FirstRun {
    fn new() -> FirstRun {
        let clutch = Clutch::new().config(&format!(
            "# my own comment, kept by setup\n[gateway]\nurl = \"http://127.0.0.1:{}\"\n",
            free_port()
        ));
        FirstRun { clutch }
    }

    fn config(&self) -> String {
        std::fs::read_to_string(self.clutch.clutch_home.path().join("config/config.toml")).unwrap()
    }

    /// A headless Claude Code turn through the gateway; None when Claude Code is missing.
    fn claude_turn(&self, env: &[(&str, &str)]) -> Option<support::Output> {
        if !agent_available("claude") {
            return None;
        }
        let mut run = self
            .clutch
            .xx(&["cIp", "-p", "say pong"])
            .env("IS_SANDBOX", "1")
            .timeout(AGENT_TIMEOUT);
        for (name, value) in env {
            run = run.env(name, value);
        }
        Some(run.output())
    }
}

impl Drop for FirstRun {
    fn drop(&mut self) {
        let _ = std::process::Command::new(env!("CARGO_BIN_EXE_proxies"))
            .arg("down")
            .env("CLUTCH_HOME", self.clutch.clutch_home.path())
            .output();
    }
}

#[test]
fn scripted_setup_keeps_the_provider_that_accepts_its_key_and_the_next_launch_works() {
    let good = FakeUpstream::start("PONG-FROM-GOOD");
    good.require_key("good-key");
    let bad = FakeUpstream::start("never");
    bad.require_key("the-right-key");
    let first = FirstRun::new();

    // Before setup: the default profile has nothing to reach, and the launch says so.
    if agent_available("claude") {
        let refused = first.claude_turn(&[]).unwrap();
        assert_eq!(refused.code, Some(2), "{refused}");
        assert!(
            refused.stderr.contains("OPENROUTER_API_KEY is not set")
                && refused.stderr.contains("Run `xx setup`"),
            "{refused}"
        );
    }

    let setup = first
        .clutch
        .xx(&[
            "setup",
            "--provider",
            &format!("good={}/v1", good.url()),
            "--provider",
            &format!("bad={}/v1", bad.url()),
        ])
        .env("GOOD_API_KEY", "good-key")
        .env("BAD_API_KEY", "a-wrong-key")
        .output();
    setup.assert_ok();
    assert!(
        setup
            .stdout
            .contains(&format!("testing good at {}/v1 … ok", good.url())),
        "{setup}"
    );
    assert!(
        setup
            .stdout
            .contains("not saved: it refused the key (HTTP 401: Incorrect API key provided.)"),
        "{setup}"
    );
    assert!(setup.stdout.contains("Now run: xx c"), "{setup}");
    assert!(!setup.stdout.contains("a-wrong-key") && !setup.stdout.contains("good-key"));
    let config = first.config();
    assert!(
        config.starts_with("# my own comment, kept by setup\n"),
        "{config}"
    );
    assert!(
        config.contains("[providers.good]") && config.contains("key_env = \"GOOD_API_KEY\""),
        "{config}"
    );
    assert!(!config.contains("[providers.bad]"), "{config}");
    let profile = std::fs::read_to_string(
        first
            .clutch
            .clutch_home
            .path()
            .join("config/profiles/default.toml"),
    )
    .unwrap();
    assert!(profile.contains("model = \"good|fake-model\""), "{profile}");

    // The launch: the gateway starts on demand and the agent's turn reaches the good
    // provider with its key.
    let Some(turn) = first.claude_turn(&[("GOOD_API_KEY", "good-key")]) else {
        return;
    };
    turn.assert_ok();
    assert!(turn.stdout.contains("PONG-FROM-GOOD"), "{turn}");
    assert!(good.model_calls().iter().any(|c| c.mentions("say pong")));
    assert!(bad.model_calls().is_empty());
}

#[test]
fn interactive_setup_on_a_terminal_tests_a_pasted_key_and_keeps_it_private() {
    if !tmux_available() {
        return;
    }
    let good = FakeUpstream::start("PONG-FROM-PASTED");
    good.require_key("pasted-good-key");
    let first = FirstRun::new();
    let env = format!(
        "PATH={} HOME={} CLUTCH_HOME={} TERM=xterm WRONG_KEY_VAR=a-wrong-key",
        std::env::var("PATH").unwrap_or_default(),
        first.clutch.user_home.path().display(),
        first.clutch.clutch_home.path().display(),
    );
    let tmux = Tmux::start("setup", env, 120, 40);
    tmux.window("setup", &format!("{} setup", env!("CARGO_BIN_EXE_xx")));
    let menu = tmux.wait_for("setup", "Which ones?");
    let other = menu
        .lines()
        .find(|l| l.contains("Another OpenAI-compatible server"))
        .and_then(|l| l.split_whitespace().next())
        .expect("the menu offers another server")
        .to_string();
    tmux.run(&["send-keys", "-t", ":setup", &other, "Enter"]);
    tmux.wait_for("setup", "A short name for it");
    tmux.run(&["send-keys", "-t", ":setup", "good", "Enter"]);
    tmux.wait_for("setup", "Its base URL");
    tmux.run(&[
        "send-keys",
        "-t",
        ":setup",
        &format!("{}/v1", good.url()),
        "Enter",
    ]);
    tmux.wait_for("setup", "Its key");
    // First a variable holding a wrong key, then a pasted right one.
    tmux.run(&["send-keys", "-t", ":setup", "$WRONG_KEY_VAR", "Enter"]);
    tmux.wait_for("setup", "Paste another key for good");
    tmux.run(&["send-keys", "-t", ":setup", "pasted-good-key", "Enter"]);
    let done = tmux.wait_for("setup", "Now run:");
    assert!(done.contains("it refused the key (HTTP 401"), "{done}");
    assert!(
        !done.contains("pasted-good-key") && !done.contains("a-wrong-key"),
        "keys are not echoed:\n{done}"
    );

    let secrets = first.clutch.clutch_home.path().join("config/secrets.toml");
    let mode = std::fs::metadata(&secrets).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let text = std::fs::read_to_string(&secrets).unwrap();
    assert!(text.contains("good = \"pasted-good-key\""), "{text}");
    assert!(!first.config().contains("pasted-good-key"));

    // No variable set anywhere: the key comes from the secrets file.
    let Some(turn) = first.claude_turn(&[]) else {
        return;
    };
    turn.assert_ok();
    assert!(turn.stdout.contains("PONG-FROM-PASTED"), "{turn}");
}

#[test]
fn a_key_changed_in_the_shell_reaches_the_running_gateway() {
    let fake = FakeUpstream::start("PONG-WITH-NEW-KEY");
    fake.require_key("new-key");
    let first = FirstRun::new();
    let config = first.config();
    std::fs::write(
        first.clutch.clutch_home.path().join("config/config.toml"),
        format!(
            "{config}\n[providers.corp]\nbase_url = \"{}/v1\"\nformat = \"chat\"\nkey_env = \"CORP_API_KEY\"\n",
            fake.url()
        ),
    )
    .unwrap();
    std::fs::create_dir_all(first.clutch.clutch_home.path().join("config/profiles")).unwrap();
    std::fs::write(
        first
            .clutch
            .clutch_home
            .path()
            .join("config/profiles/default.toml"),
        "[tiers.big]\nmodel = \"corp|m\"\n[tiers.middle]\nmodel = \"corp|m\"\n[tiers.small]\nmodel = \"corp|m\"\n",
    )
    .unwrap();
    // The gateway starts with the old key in its environment.
    let up = std::process::Command::new(env!("CARGO_BIN_EXE_proxies"))
        .arg("up")
        .env("CLUTCH_HOME", first.clutch.clutch_home.path())
        .env("CORP_API_KEY", "old-key")
        .output()
        .unwrap();
    assert!(up.status.success(), "{up:?}");

    // The launch hands this shell's key to the gateway, and says so.
    let Some(turn) = first.claude_turn(&[("CORP_API_KEY", "new-key")]) else {
        return;
    };
    turn.assert_ok();
    assert!(
        turn.stderr.contains(
            "the running gateway had another value for CORP_API_KEY; it uses this shell's now"
        ),
        "{turn}"
    );
    assert!(turn.stdout.contains("PONG-WITH-NEW-KEY"), "{turn}");
    assert!(!turn.stderr.contains("new-key") && !turn.stderr.contains("old-key"));

    // The same key again: nothing to hand over, nothing said.
    let again = first.claude_turn(&[("CORP_API_KEY", "new-key")]).unwrap();
    again.assert_ok();
    assert!(!again.stderr.contains("another value"), "{again}");
}
