//! Routing: every tier and scene, the priority between scenes, tool-call models, exact maps,
//! the launcher's tier letters, context-window filtering, and the real Claude Code request
//! shapes (opus main calls, haiku background calls) landing on the intended tiers.

use std::collections::BTreeMap;

use clutch::config::ProviderConfig;
use clutch::gateway::ir::Request;
use clutch::gateway::proto::{self, Protocol};
use clutch::gateway::route::{Plan, Profile, Ranked, Scene, Target, plan};
use serde_json::{Value, json};

const PROFILE: &str = r#"
default_tier = "middle"
long_context_threshold = 5000
toolcall_models = ["tools|caller"]
[tiers.big]
model = "p|big"
cascade = ["p|big-2", "q|big-3"]
[tiers.middle]
model = "p|middle"
cascade = ["q|middle-2"]
[tiers.small]
model = "p|small"
[families]
"*opus*" = "big"
"*sonnet*" = "middle"
"*haiku*" = "small"
[model_map]
"gpt-6.1-sol" = "q|mapped"
[scenes]
long_context = "p|long"
background = "small"
web_search = "p|search"
think = "big"
image = "p|vision"
"#;

fn providers() -> BTreeMap<String, ProviderConfig> {
    let text = r#"
        [providers.p]
        base_url = "http://127.0.0.1:1"
        format = "chat"
        models."small-window" = { context_window = 6000 }
        models."big" = { context_window = 200000 }
        [providers.q]
        base_url = "http://127.0.0.1:2"
        format = "chat"
        [providers.tools]
        base_url = "http://127.0.0.1:3"
        format = "chat"
    "#;
    let config: clutch::config::Config = clutch::config::parse_toml(text, "test").unwrap();
    let mut all = config.all_providers();
    all.retain(|name, _| ["p", "q", "tools", "openrouter"].contains(&name.as_str()));
    all
}

fn profile(extra: &str) -> Profile {
    clutch::config::parse_toml(&format!("{PROFILE}{extra}"), "profile").unwrap()
}

fn anthropic(body: Value) -> Request {
    proto::decode_request(Protocol::Anthropic, body.to_string().as_bytes(), None).unwrap()
}

fn ids(plan: &Plan) -> Vec<String> {
    plan.candidates
        .iter()
        .map(|t| format!("{}|{}", t.provider, t.model))
        .collect()
}

fn route(profile: &Profile, request: &Request) -> Plan {
    plan(
        profile,
        request,
        request.estimate_tokens(),
        false,
        &providers(),
        Ranked::default(),
    )
    .unwrap()
}

#[test]
fn families_pick_tiers_and_their_cascades() {
    let p = profile("");
    let base = |model: &str| {
        anthropic(
            json!({"model": model, "max_tokens": 1000, "messages": [{"role": "user", "content": "hi"}]}),
        )
    };
    let opus = route(&p, &base("claude-opus-5-5"));
    assert_eq!((opus.tier.as_deref(), opus.scene), (Some("big"), None));
    assert_eq!(ids(&opus), ["p|big", "p|big-2", "q|big-3"]);
    assert_eq!(
        ids(&route(&p, &base("claude-sonnet-4"))),
        ["p|middle", "q|middle-2"]
    );
    assert_eq!(
        ids(&route(&p, &base("some-unknown-model"))),
        ["p|middle", "q|middle-2"],
        "the default tier"
    );
    let haiku = route(&p, &base("claude-haiku-4-5"));
    assert_eq!(
        (haiku.scene, ids(&haiku)),
        (Some(Scene::Background), vec!["p|small".to_string()])
    );
}

#[test]
fn each_scene_and_their_priority() {
    let p = profile("");
    let big_text = "word ".repeat(5000);
    let image = json!({"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}});
    let search_tool = json!({"name": "web_search", "input_schema": {"type": "object"}});
    let other_tool = json!({"name": "read_file", "input_schema": {"type": "object"}});
    let think = json!({"type": "enabled", "budget_tokens": 2048});
    let request = |content: Value, tools: Vec<Value>, thinking: Option<Value>, max_tokens: u64| {
        let mut body = json!({"model": "claude-sonnet-4", "max_tokens": max_tokens, "messages": [{"role": "user", "content": content}], "tools": tools});
        if let Some(t) = thinking {
            body["thinking"] = t;
        }
        anthropic(body)
    };
    let cases: Vec<(&str, Request, Scene, &str)> = vec![
        (
            "long context",
            request(json!(big_text), vec![], None, 1000),
            Scene::LongContext,
            "p|long",
        ),
        (
            "background (small max_tokens)",
            request(json!("hi"), vec![], None, 100),
            Scene::Background,
            "p|small",
        ),
        (
            "web search",
            request(json!("hi"), vec![search_tool.clone()], None, 1000),
            Scene::WebSearch,
            "p|search",
        ),
        (
            "think",
            request(json!("hi"), vec![], Some(think.clone()), 4000),
            Scene::Think,
            "p|big",
        ),
        (
            "image",
            request(
                json!([{"type": "text", "text": "what is this"}, image.clone()]),
                vec![],
                None,
                1000,
            ),
            Scene::Image,
            "p|vision",
        ),
        (
            "tool call",
            request(json!("hi"), vec![other_tool.clone()], None, 1000),
            Scene::ToolCall,
            "tools|caller",
        ),
        // Priority: long context beats everything; background beats web search; web search
        // beats think; think beats image; image beats tool calls.
        (
            "long context over all",
            request(
                json!([{"type": "text", "text": big_text.clone()}, image.clone()]),
                vec![search_tool.clone()],
                Some(think.clone()),
                100,
            ),
            Scene::LongContext,
            "p|long",
        ),
        (
            "background over web search",
            request(json!("hi"), vec![search_tool.clone()], None, 100),
            Scene::Background,
            "p|small",
        ),
        (
            "web search over think",
            request(
                json!("hi"),
                vec![search_tool.clone()],
                Some(think.clone()),
                4000,
            ),
            Scene::WebSearch,
            "p|search",
        ),
        (
            "think over image",
            request(json!([image.clone()]), vec![], Some(think.clone()), 4000),
            Scene::Think,
            "p|big",
        ),
        (
            "image over tool call",
            request(json!([image.clone()]), vec![other_tool.clone()], None, 1000),
            Scene::Image,
            "p|vision",
        ),
    ];
    for (name, request, scene, first) in cases {
        let plan = route(&p, &request);
        assert_eq!(plan.scene, Some(scene), "{name}");
        assert_eq!(ids(&plan)[0], first, "{name}: {:?}", ids(&plan));
    }
    // Tool-call models come first, then the tier's own chain.
    let plan = route(&p, &request(json!("hi"), vec![other_tool], None, 1000));
    assert_eq!(ids(&plan), ["tools|caller", "p|middle", "q|middle-2"]);
}

#[test]
fn explicit_models_win_and_bypass_keeps_the_requested_model() {
    let p = profile("");
    let req = |model: &str| {
        anthropic(
            json!({"model": model, "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}),
        )
    };
    assert_eq!(
        ids(&route(&p, &req("gpt-6.1-sol")))[0],
        "q|mapped",
        "model_map"
    );
    assert_eq!(
        ids(&route(&p, &req("q|exact")))[0],
        "q|exact",
        "provider|model"
    );
    // The launcher's tier letters pass the tier's model with -m: `xx cipd` asks for it.
    assert_eq!(
        ids(&route(&p, &req("deepseek/deepseek-v4-flash")))[0],
        "openrouter|deepseek/deepseek-v4-flash"
    );
    assert_eq!(
        ids(&route(&p, &req("big")))[0],
        "p|big",
        "a model a provider lists"
    );
    let request = req("claude-opus-5-5");
    let bypass = plan(
        &p,
        &request,
        request.estimate_tokens(),
        true,
        &providers(),
        Ranked::default(),
    )
    .unwrap();
    assert_eq!(
        bypass.candidates,
        [Target {
            provider: "openrouter".into(),
            model: "claude-opus-5-5".into()
        }]
    );
}

#[test]
fn candidates_whose_context_window_is_too_small_are_skipped() {
    let p = profile("[tiers.tiny]\nmodel = \"p|small-window\"\ncascade = [\"p|big\"]\n");
    let mut p = p;
    p.default_tier = "tiny".into();
    p.long_context_threshold = 1_000_000;
    let request = anthropic(
        json!({"model": "x", "max_tokens": 1000, "messages": [{"role": "user", "content": "w ".repeat(4000)}]}),
    );
    let plan = route(&p, &request);
    assert_eq!(
        ids(&plan),
        ["p|big"],
        "about 2000 tokens plus the 4096 reserve exceed 90% of 6000"
    );
    assert_eq!(
        plan.too_small,
        [Target {
            provider: "p".into(),
            model: "small-window".into()
        }]
    );
    let short = anthropic(
        json!({"model": "x", "max_tokens": 1000, "messages": [{"role": "user", "content": "hi"}]}),
    );
    assert_eq!(
        ids(&route(&p, &short)),
        ["p|small-window", "p|big"],
        "a short request fits"
    );
}

#[test]
fn real_claude_code_requests_land_on_the_intended_tiers() {
    let p = profile("");
    let main: Value =
        serde_json::from_str(include_str!("fixtures/claude_code_main_request.json")).unwrap();
    let request = anthropic(main.clone());
    assert_eq!(request.model, "claude-opus-5-5");
    let plan = route(&p, &request);
    // Adaptive thinking and 12 tools: the think scene sends the opus call to the big tier.
    assert_eq!(plan.tier.as_deref(), Some("big"));
    assert_eq!(ids(&plan)[0], "p|big");
    // Its background calls use haiku with a small budget: the small tier.
    let mut background = main;
    background["model"] = json!("claude-haiku-4-5-20251001");
    background["max_tokens"] = json!(512);
    background.as_object_mut().unwrap().remove("thinking");
    background.as_object_mut().unwrap().remove("tools");
    let plan = route(&p, &anthropic(background));
    assert_eq!(
        (plan.scene, ids(&plan)),
        (Some(Scene::Background), vec!["p|small".to_string()])
    );
}

/// A snapshot ranking `free`: `q|ranked-1` (no tools), `q|ranked-2` and `p|ranked-3` (tools).
fn snapshot() -> clutch::gateway::scan::snapshot::Snapshot {
    let candidate = |provider: &str, model: &str, fitness: f64, tools: bool| {
        json!({"model_id": model, "provider": provider, "api_model": format!("{provider}|{model}"),
               "fitness": fitness, "price_blended": 0.0, "has_tools": tools})
    };
    serde_json::from_value(json!({
        "schema_version": "1.0.0",
        "generated_at": "2026-12-03T00:00:00Z",
        "blocklist": ["*banned*"],
        "slots": {"free": {"label": "Best free", "eval_mode": "free", "best": null, "candidates": [
            candidate("q", "ranked-1", 90.0, false),
            candidate("q", "banned-model", 85.0, true),
            candidate("q", "ranked-2", 80.0, true),
            candidate("p", "ranked-3", 70.0, true),
            candidate("nowhere", "unknown-provider", 60.0, true),
        ]}}
    }))
    .unwrap()
}

#[test]
fn a_scan_entry_stands_for_the_snapshots_ranked_models_of_its_kind() {
    let p = profile("").tap_cascade("middle", &["scan:free"]);
    let snapshot = snapshot();
    let ranked = Ranked {
        snapshot: Some(&snapshot),
        blocklist: &[],
        missing: None,
    };
    let plain = anthropic(json!({"model": "claude-sonnet-4", "max_tokens": 1000,
        "messages": [{"role": "user", "content": "hi"}]}));
    let found = plan(&p, &plain, 10, false, &providers(), ranked).unwrap();
    assert_eq!(
        ids(&found),
        ["p|middle", "q|ranked-1", "q|ranked-2", "p|ranked-3"],
        "three ranked models by default, the snapshot's blocklist applied, unknown providers left out"
    );
    // With tools offered, only tool-capable ranked models (and the profile's tool model).
    let with_tools = anthropic(json!({"model": "claude-sonnet-4", "max_tokens": 1000,
        "messages": [{"role": "user", "content": "hi"}],
        "tools": [{"name": "Bash", "input_schema": {"type": "object"}}]}));
    let found = plan(&p, &with_tools, 10, false, &providers(), ranked).unwrap();
    assert_eq!(
        ids(&found),
        ["tools|caller", "p|middle", "q|ranked-2", "p|ranked-3"]
    );
    let two = profile("").tap_cascade("middle", &["scan:free:1"]);
    let found = plan(&two, &plain, 10, false, &providers(), ranked).unwrap();
    assert_eq!(ids(&found), ["p|middle", "q|ranked-1"]);
}

#[test]
fn the_blocklist_applies_to_every_candidate_and_says_so_when_nothing_is_left() {
    let p = profile("");
    let blocklist = vec!["p|middle".to_string(), "*-2".to_string()];
    let ranked = Ranked {
        snapshot: None,
        blocklist: &blocklist,
        missing: None,
    };
    let plain = anthropic(json!({"model": "claude-sonnet-4", "max_tokens": 1000,
        "messages": [{"role": "user", "content": "hi"}]}));
    let error = plan(&p, &plain, 10, false, &providers(), ranked).unwrap_err();
    assert!(
        error.message.contains("blocklist") && error.message.contains("p|middle, q|middle-2"),
        "{}",
        error.message
    );
    let explicit = anthropic(json!({"model": "q|other", "max_tokens": 1000,
        "messages": [{"role": "user", "content": "hi"}]}));
    let found = plan(&p, &explicit, 10, false, &providers(), ranked).unwrap();
    assert_eq!(ids(&found), ["q|other"]);
}

#[test]
fn a_profile_of_only_scan_entries_without_a_snapshot_names_the_reason() {
    let mut p = profile("");
    p.tiers.get_mut("middle").unwrap().model = "scan:free".into();
    p.tiers.get_mut("middle").unwrap().cascade.clear();
    let ranked = Ranked {
        snapshot: None,
        blocklist: &[],
        missing: Some("routing_snapshot.json is stale: generated 80.0 hours ago"),
    };
    let plain = anthropic(json!({"model": "claude-sonnet-4", "max_tokens": 1000,
        "messages": [{"role": "user", "content": "hi"}]}));
    let error = plan(&p, &plain, 10, false, &providers(), ranked).unwrap_err();
    assert!(error.message.contains("is stale"), "{}", error.message);
    assert!(
        clutch::gateway::route::scan_reference("scan:cheap")
            .unwrap()
            .is_err()
    );
    assert!(
        clutch::gateway::route::scan_reference("scan:free:99")
            .unwrap()
            .is_err()
    );
}

trait TapCascade {
    fn tap_cascade(self, tier: &str, cascade: &[&str]) -> Self;
}

impl TapCascade for Profile {
    /// The profile with `tier`'s cascade replaced.
    fn tap_cascade(mut self, tier: &str, cascade: &[&str]) -> Profile {
        self.tiers.get_mut(tier).unwrap().cascade = cascade.iter().map(|c| c.to_string()).collect();
        self
    }
}
