//! The official Python SDKs (anthropic, openai, google-genai) as clients of the gateway, each
//! against a fake upstream of a different protocol: streaming text, a tool-call round trip,
//! usage values, and upstream 429/500 surfacing as each SDK's own typed error. The checks are
//! in `tests/sdk/sdk_clients.py`; `.ci/install-sdks` makes the virtualenv it runs in.

mod support;

use std::process::Command;

use support::fake_upstream::FakeUpstream;
use support::gateway::{TestGateway, configure};

fn python() -> Option<std::path::PathBuf> {
    let venv = std::env::var("CLUTCH_SDK_PYTHON")
        .ok()
        .map(std::path::PathBuf::from);
    if let Some(python) = venv.filter(|p| p.exists()) {
        return Some(python);
    }
    if std::env::var("CLUTCH_REQUIRE_AGENTS").is_ok_and(|v| v == "1") {
        panic!("CLUTCH_SDK_PYTHON must point at the venv python from .ci/install-sdks");
    }
    eprintln!(
        "skipped: set CLUTCH_SDK_PYTHON to a python with anthropic, openai and google-genai (.ci/install-sdks)"
    );
    None
}

#[test]
fn official_sdks_against_a_different_upstream_protocol() {
    let Some(python) = python() else { return };
    let home = tempfile::tempdir().unwrap();
    let chat = FakeUpstream::start("SDK-PONG");
    let anthropic = FakeUpstream::start("SDK-PONG");
    let gemini = FakeUpstream::start("SDK-PONG");
    let config = format!(
        "[gateway]\nauto_start = false\n[providers.chat]\nbase_url = \"{}/v1\"\nformat = \"chat\"\n\
         [providers.anthropic]\nbase_url = \"{}\"\nformat = \"anthropic\"\n[providers.gemini]\nbase_url = \"{}\"\nformat = \"gemini\"\n",
        chat.url(),
        anthropic.url(),
        gemini.url()
    );
    let profile = |name: &str| format!("[tiers.middle]\nmodel = \"{name}|up\"\n");
    let (chat_p, anthropic_p, gemini_p) =
        (profile("chat"), profile("anthropic"), profile("gemini"));
    configure(
        home.path(),
        &config,
        &[
            ("to-chat", &chat_p),
            ("to-anthropic", &anthropic_p),
            ("to-gemini", &gemini_p),
        ],
    );
    let gateway = TestGateway::start(home.path());
    let output = Command::new(python)
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/sdk/sdk_clients.py"
        ))
        .env("GATEWAY_URL", &gateway.url)
        .env("NO_PROXY", "127.0.0.1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "SDK checks failed\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("all SDK checks passed"), "{stdout}");
    eprintln!("{stdout}");
}
