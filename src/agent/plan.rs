//! The pure planner: (spec, code, options, config, environment) -> [`LaunchPlan`].
//!
//! No I/O happens here: the environment arrives as data ([`Context`]), files to write are
//! returned in the plan, and everything the user typed is checked before anything runs, so the
//! whole table of agents × modes × routes can be snapshot-tested.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use serde::Serialize;

use super::spec::AgentSpec;
use crate::code::{Action, Code, Route, Tier};
use crate::config::{self, Config};

/// What the user asked for beyond the code: the raw options, not yet resolved.
#[derive(Debug, Clone, Default)]
pub struct LaunchRequest {
    pub code: Option<Code>,
    pub model: Option<String>,
    pub session: Option<String>,
    pub prompt: Option<String>,
    pub profile: Option<String>,
    /// Everything after `--`, handed to the agent untouched.
    pub extra: Vec<String>,
    /// The id to give a new interactive session, for agents that accept one
    /// (`modes.session_id`); held sessions pass one so a crash can resume by id.
    pub new_session_id: Option<String>,
}

/// The facts about the world the planner needs, gathered by the caller.
#[derive(Debug, Clone)]
pub struct Context<'a> {
    pub config: &'a Config,
    /// Shown in hints ("set it in <path>").
    pub config_path: String,
    /// Where clutch writes files for agents.
    pub files_dir: PathBuf,
    pub is_root: bool,
    /// The inherited environment.
    pub env: &'a BTreeMap<String, String>,
    /// The model-scan snapshot the `m f t r v s` letters read, or why there is none.
    pub snapshot: Result<&'a crate::gateway::scan::snapshot::Snapshot, String>,
}

/// A file clutch writes before the agent starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlannedFile {
    pub path: PathBuf,
    pub contents: String,
    /// Unix permission bits; 0600 when the file holds the gateway key.
    pub mode: u32,
}

/// Everything needed to start the agent, decided up front.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LaunchPlan {
    pub agent: String,
    /// The canonical spelling of the code that produced this plan.
    pub code: String,
    /// The executable to look up on PATH.
    pub program: String,
    /// Arguments after the program name.
    pub argv: Vec<String>,
    pub env_set: BTreeMap<String, String>,
    pub env_unset: BTreeSet<String>,
    pub files: Vec<PlannedFile>,
    /// Things the user should know before the agent starts (a refused flag, say).
    pub notices: Vec<String>,
    /// The gateway origin the agent talks to, when the route needs it.
    pub gateway: Option<String>,
    pub model: Option<String>,
    pub profile: Option<String>,
    pub headless: bool,
    /// The agent's own id for the session this plan starts or resumes, when clutch knows it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent_session: Option<String>,
    /// Values to mask whenever the plan is shown.
    #[serde(skip)]
    pub secrets: Vec<String>,
}

/// Why no plan could be made. All of these are the user's to fix (exit code 2).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("{agent} cannot {what}.{hint}")]
    Unsupported {
        agent: String,
        what: String,
        hint: String,
    },
    #[error("{0}")]
    Options(String),
    #[error(
        "tier `{letter}` ({what}) is not set: add {fix} to {config}, \
         or pick a model with -m <model>"
    )]
    UnresolvedTier {
        letter: char,
        what: String,
        fix: String,
        config: String,
    },
    #[error("agent spec `{agent}`: template {template} uses `{placeholder}`, {why}")]
    Spec {
        agent: String,
        template: String,
        placeholder: String,
        why: String,
    },
}

/// Build the plan for `spec` (chosen by `request.code`'s agent letter).
pub fn build(
    spec: &AgentSpec,
    request: &LaunchRequest,
    ctx: &Context<'_>,
) -> Result<LaunchPlan, PlanError> {
    let code = request
        .code
        .ok_or_else(|| PlanError::Options("a short code is required".into()))?;
    check_values(request)?;
    let (template_name, template) = select_template(spec, &code, request)?;

    let mut notices = Vec::new();
    let (model, slot_profile) = resolve_model(&code, request, ctx, &mut notices)?;
    let base_profile = request
        .profile
        .clone()
        .or(slot_profile)
        .or_else(|| {
            ctx.config
                .agents
                .get(&spec.name)
                .and_then(|a| a.profile.clone())
        })
        .unwrap_or_else(|| spec.profile.clone());
    let profile = match code.route {
        Route::Bypass => format!("{base_profile}-bypass"),
        _ => base_profile,
    };

    let key = ctx.config.gateway_key().to_string();
    let origin = ctx
        .config
        .gateway
        .url
        .as_str()
        .trim_end_matches('/')
        .to_string();
    let files_dir = ctx.files_dir.join(&spec.name);
    let route_model = model.clone().or_else(|| spec.gateway.default_model.clone());

    let mut values: BTreeMap<String, String> = BTreeMap::new();
    let mut set = |name: &str, value: Option<&String>| {
        if let Some(value) = value {
            values.insert(name.to_string(), value.clone());
        }
    };
    set("prompt", request.prompt.as_ref());
    set("session", request.session.as_ref());
    set("model", model.as_ref());
    set("route_model", route_model.as_ref());
    set("profile", Some(&profile));
    set("key_env", Some(&KEY_ENV.to_string()));
    set("files_dir", Some(&files_dir.display().to_string()));
    if code.route.uses_gateway() {
        set("gateway_origin", Some(&origin));
        set("gateway", Some(&format!("{origin}/p/{profile}")));
        set("key", Some(&key));
    }

    // Files first: templates refer to them by `{file:NAME}`.
    let mut files = Vec::new();
    if code.route.uses_gateway() {
        for file in &spec.gateway.files {
            let what = format!("gateway.files.{}", file.name);
            let path = Expander {
                agent: &spec.name,
                values: &values,
            }
            .expand(&file.path, &what)?;
            let path = files_dir.join(path);
            values.insert(format!("file:{}", file.name), path.display().to_string());
            let contents = Expander {
                agent: &spec.name,
                values: &values,
            }
            .expand(&file.content, &what)?;
            files.push(PlannedFile {
                path,
                contents,
                mode: if file.secret { 0o600 } else { 0o644 },
            });
        }
    }
    let expander = Expander {
        agent: &spec.name,
        values: &values,
    };

    // Splices.
    let bypass = bypass_args(spec, ctx, &mut notices);
    let mut env_set = BTreeMap::new();
    let mut env_unset = BTreeSet::new();
    let route_args = if code.route.uses_gateway() {
        for (name, value) in &spec.gateway.env {
            env_set.insert(
                name.clone(),
                expander.expand(value, &format!("gateway.env.{name}"))?,
            );
        }
        env_set.insert(KEY_ENV.to_string(), key.clone());
        let no_proxy = merged_no_proxy(ctx.env);
        env_set.insert("NO_PROXY".into(), no_proxy.clone());
        env_set.insert("no_proxy".into(), no_proxy);
        for name in &spec.gateway.unset {
            if ctx.env.contains_key(name) && !env_set.contains_key(name) {
                env_unset.insert(name.clone());
            }
        }
        expander.expand_all(&spec.gateway.args, "gateway.args")?
    } else {
        let redirecting = DIRECT_UNSET.iter().map(|s| s.to_string());
        for name in redirecting.chain(spec.direct.unset.iter().cloned()) {
            if ctx.env.contains_key(&name) {
                env_unset.insert(name);
            }
        }
        // Keys a parent clutch launch injected would only confuse the agent's own provider.
        for (name, value) in ctx.env {
            if value == &key || value == config::LOOPBACK_KEY || name == KEY_ENV {
                env_unset.insert(name.clone());
            }
        }
        Vec::new()
    };
    let model_args = match (code.route.uses_gateway(), &spec.gateway.model_args) {
        (true, Some(args)) if route_model.is_some() => {
            expander.expand_all(args, "gateway.model_args")?
        }
        (true, Some(_)) => Vec::new(),
        _ if model.is_some() => expander.expand_all(&spec.model_args, "model_args")?,
        _ => Vec::new(),
    };
    if model.is_some() && spec.model_args.is_empty() && spec.gateway.model_args.is_none() {
        notices.push(format!(
            "{} has no model flag; the model is chosen by the gateway profile instead",
            spec.display_name
        ));
    }

    let mut argv = Vec::new();
    let mut agent_session = (template_name == "resume_id")
        .then(|| request.session.clone())
        .flatten();
    if let (Some(id), Some(args), "init" | "init_prompt") = (
        &request.new_session_id,
        &spec.modes.session_id,
        template_name,
    ) {
        let mut values = values.clone();
        values.insert("session".into(), id.clone());
        argv.extend(
            Expander {
                agent: &spec.name,
                values: &values,
            }
            .expand_all(args, "modes.session_id")?,
        );
        agent_session = Some(id.clone());
    }
    let mut extra_placed = false;
    for element in template {
        match element.as_str() {
            "@bypass" => argv.extend(bypass.iter().cloned()),
            "@route" => argv.extend(route_args.iter().cloned()),
            "@model" => argv.extend(model_args.iter().cloned()),
            "@extra" => {
                argv.extend(request.extra.iter().cloned());
                extra_placed = true;
            }
            _ => argv.push(expander.expand(element, &format!("modes.{template_name}"))?),
        }
    }
    if !extra_placed {
        argv.extend(request.extra.iter().cloned());
    }

    let secrets = ctx
        .config
        .gateway
        .token
        .iter()
        .map(|t| t.as_str().to_string())
        .collect();
    Ok(LaunchPlan {
        agent: spec.name.clone(),
        code: code.to_string(),
        program: spec.binary.clone(),
        argv,
        env_set,
        env_unset,
        files,
        notices,
        gateway: code.route.uses_gateway().then_some(origin),
        model: if code.route.uses_gateway() {
            route_model
        } else {
            model
        },
        profile: code.route.uses_gateway().then_some(profile),
        headless: code.mode.headless,
        agent_session,
        secrets,
    })
}

/// The variable that carries the gateway key to agents that read it by name.
pub const KEY_ENV: &str = "CLUTCH_GATEWAY_KEY";

/// Variables that send an agent somewhere other than its own provider.
const DIRECT_UNSET: &[&str] = &[
    "ANTHROPIC_BASE_URL",
    "OPENAI_BASE_URL",
    "OPENAI_API_BASE",
    "GOOGLE_GEMINI_BASE_URL",
    "GEMINI_BASE_URL",
    "CUSTOM_BASE_URL",
];

fn check_values(request: &LaunchRequest) -> Result<(), PlanError> {
    if let Some(model) = &request.model {
        config::check_model_name(model)
            .map_err(|why| PlanError::Options(format!("-m/--model: {why}")))?;
    }
    if let Some(profile) = &request.profile
        && (profile.is_empty()
            || !profile
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(PlanError::Options(format!(
            "--profile: `{profile}` is not a profile name (letters, digits, `-`, `_`, `.`)"
        )));
    }
    if let Some(session) = &request.session
        && (session.is_empty()
            || session.starts_with('-')
            || session.chars().any(char::is_whitespace))
    {
        return Err(PlanError::Options(format!(
            "-s/--session: `{session}` is not a session id"
        )));
    }
    if request
        .prompt
        .as_deref()
        .is_some_and(|p| p.trim().is_empty())
    {
        return Err(PlanError::Options(
            "-p/--prompt: the prompt is empty".into(),
        ));
    }
    Ok(())
}

/// Pick the argv template for the code's mode, checking that the options fit it.
fn select_template<'s>(
    spec: &'s AgentSpec,
    code: &Code,
    request: &LaunchRequest,
) -> Result<(&'static str, &'s Vec<String>), PlanError> {
    let m = &spec.modes;
    let has_prompt = request.prompt.is_some();
    let has_session = request.session.is_some();
    let unsupported = |what: &str, hint: &str| PlanError::Unsupported {
        agent: spec.display_name.clone(),
        what: what.to_string(),
        hint: if hint.is_empty() {
            String::new()
        } else {
            format!(" {hint}")
        },
    };
    let letter = spec.letter;
    if has_session && !matches!(code.mode.action, Action::Resume | Action::Session) {
        return Err(PlanError::Options(format!(
            "-s/--session only goes with a resume mode: `{letter}s` (or `{letter}r`) \
             interactive, `{letter}R` headless"
        )));
    }
    let (name, template) = match (code.mode.action, code.mode.headless) {
        (Action::Init, false) if has_prompt => (
            "init_prompt",
            m.init_prompt.as_ref().ok_or_else(|| {
                unsupported(
                    "start an interactive session with a first prompt",
                    &format!("Run it headless with `{letter}I -p …`, or drop the prompt."),
                )
            })?,
        ),
        (Action::Init, false) => ("init", &m.init),
        (action, false) if has_prompt => {
            let what = if action == Action::Continue {
                "continue"
            } else {
                "resume"
            };
            return Err(PlanError::Options(format!(
                "a prompt with an interactive {what} is not supported; use the headless mode \
                 (`{letter}{}`) to send a prompt, or drop it",
                if action == Action::Continue { 'C' } else { 'R' }
            )));
        }
        (Action::Continue, false) => (
            "continue",
            m.continue_.as_ref().ok_or_else(|| {
                unsupported(
                    "continue the last session",
                    "Use `-s <id>` with the `s` mode.",
                )
            })?,
        ),
        (Action::Resume, false) if has_session => (
            "resume_id",
            m.resume_id
                .as_ref()
                .ok_or_else(|| unsupported("resume a session by id", ""))?,
        ),
        (Action::Resume, false) => (
            "resume",
            m.resume.as_ref().ok_or_else(|| {
                unsupported(
                    "show a session picker",
                    &format!("Give the id: `xx {letter}s -s <id>`."),
                )
            })?,
        ),
        (Action::Session, false) => {
            if !has_session {
                return Err(PlanError::Options(format!(
                    "mode `s` needs the session id: `xx {letter}s -s <id>`"
                )));
            }
            (
                "resume_id",
                m.resume_id
                    .as_ref()
                    .ok_or_else(|| unsupported("resume a session by id", ""))?,
            )
        }
        (_, true) if !has_prompt => {
            return Err(PlanError::Options(
                "headless modes need a prompt: -p <text>, words after the code, or --stdin".into(),
            ));
        }
        (Action::Init, true) => (
            "headless",
            m.headless
                .as_ref()
                .ok_or_else(|| unsupported("run headless", ""))?,
        ),
        (Action::Continue, true) => (
            "headless_continue",
            m.headless_continue
                .as_ref()
                .ok_or_else(|| unsupported("continue a session headless", ""))?,
        ),
        (Action::Resume | Action::Session, true) => {
            if !has_session {
                return Err(PlanError::Options(format!(
                    "a headless resume needs the session id (there is no picker without a \
                     terminal): `xx {letter}R -s <id> -p …`"
                )));
            }
            (
                "headless_resume_id",
                m.headless_resume_id
                    .as_ref()
                    .ok_or_else(|| unsupported("resume a session by id headless", ""))?,
            )
        }
    };
    Ok((name, template))
}

/// The model (and, for slots, the profile) chosen by `-m` or the tier letter.
fn resolve_model(
    code: &Code,
    request: &LaunchRequest,
    ctx: &Context<'_>,
    notices: &mut Vec<String>,
) -> Result<(Option<String>, Option<String>), PlanError> {
    let config = ctx.config;
    let tier_pick = match code.tier {
        None => (None, None),
        Some(Tier::Named(letter)) => match config.tiers.get(&letter) {
            Some(model) => (Some(model.as_str().to_string()), None),
            None => {
                return Err(PlanError::UnresolvedTier {
                    letter,
                    what: "a named tier".into(),
                    fix: format!("`{letter} = \"<model>\"` under [tiers]"),
                    config: ctx.config_path.clone(),
                });
            }
        },
        Some(Tier::Scan(kind)) => {
            // Through the gateway a ranked model is named `provider|model`; straight to the
            // agent's own provider, by its id alone.
            let ranked = ctx.snapshot.as_ref().ok().and_then(|s| s.best(kind));
            let why_not = match &ctx.snapshot {
                Ok(_) => format!("the model-scan snapshot ranks no `{}` model", kind.name()),
                Err(why) => why.clone(),
            };
            match (ranked, config.selectors.get(kind.name())) {
                (Some(best), _) if code.route.uses_gateway() => {
                    (Some(best.api_model.clone()), None)
                }
                (Some(best), _) => (Some(best.model_id.clone()), None),
                (None, Some(model)) => {
                    notices.push(format!(
                        "{why_not}; using [selectors] {} = \"{}\"",
                        kind.name(),
                        model.as_str()
                    ));
                    (Some(model.as_str().to_string()), None)
                }
                (None, None) => {
                    return Err(PlanError::UnresolvedTier {
                        letter: code.tier.map_or('?', Tier::letter),
                        what: format!("model-scan `{}`; {why_not}", kind.name()),
                        fix: format!("`{} = \"<model>\"` under [selectors]", kind.name()),
                        config: ctx.config_path.clone(),
                    });
                }
            }
        }
        Some(Tier::Slot(n)) => {
            let digit = char::from(b'0' + n);
            match config.slots.get(&digit) {
                Some(slot) => (
                    slot.model.as_ref().map(|m| m.as_str().to_string()),
                    slot.profile.clone(),
                ),
                None => {
                    return Err(PlanError::UnresolvedTier {
                        letter: digit,
                        what: "a profile slot".into(),
                        fix: format!("a [slots.{digit}] table with `model` and/or `profile`"),
                        config: ctx.config_path.clone(),
                    });
                }
            }
        }
    };
    // `-m` beats the tier's model; a slot's profile still applies.
    Ok((request.model.clone().or(tier_pick.0), tier_pick.1))
}

fn bypass_args(spec: &AgentSpec, ctx: &Context<'_>, notices: &mut Vec<String>) -> Vec<String> {
    if !ctx.config.launcher.bypass || spec.bypass.args.is_empty() {
        return Vec::new();
    }
    let lifted = spec
        .bypass
        .root_override_env
        .as_ref()
        // Exactly `1`: Claude Code 2.1 refuses the flag as root for any other value.
        .is_some_and(|var| ctx.env.get(var).is_some_and(|v| v == "1"));
    if spec.bypass.refused_as_root && ctx.is_root && !lifted {
        let lift = spec
            .bypass
            .root_override_env
            .as_ref()
            .map(|var| format!(" If this machine is a sandbox, set {var}=1 to allow it."))
            .unwrap_or_default();
        notices.push(format!(
            "{} refuses `{}` when run as root, so clutch leaves it out and the agent will ask \
             before acting.{lift}",
            spec.display_name,
            spec.bypass.args.join(" "),
        ));
        return Vec::new();
    }
    spec.bypass.args.clone()
}

/// The inherited `NO_PROXY` plus loopback, so a user's HTTP proxy never sees gateway traffic.
fn merged_no_proxy(env: &BTreeMap<String, String>) -> String {
    let mut hosts: Vec<String> = Vec::new();
    for name in ["NO_PROXY", "no_proxy"] {
        for host in env.get(name).map(String::as_str).unwrap_or("").split(',') {
            let host = host.trim();
            if !host.is_empty() && !hosts.iter().any(|h| h == host) {
                hosts.push(host.to_string());
            }
        }
    }
    for host in ["127.0.0.1", "localhost", "::1"] {
        if !hosts.iter().any(|h| h == host) {
            hosts.push(host.to_string());
        }
    }
    hosts.join(",")
}

/// Substitutes `{name}` placeholders. Only `{` followed by a lower-case name and `}` counts,
/// so JSON braces in file templates pass through untouched.
struct Expander<'a> {
    agent: &'a str,
    values: &'a BTreeMap<String, String>,
}

impl Expander<'_> {
    fn expand(&self, template: &str, what: &str) -> Result<String, PlanError> {
        let mut out = String::with_capacity(template.len());
        let mut rest = template;
        while let Some(start) = rest.find('{') {
            out.push_str(&rest[..start]);
            let after = &rest[start + 1..];
            let name_len = after
                .find('}')
                .filter(|&end| is_placeholder_name(&after[..end]));
            match name_len {
                Some(end) => {
                    let name = &after[..end];
                    let value = self.values.get(name).ok_or_else(|| PlanError::Spec {
                        agent: self.agent.to_string(),
                        template: what.to_string(),
                        placeholder: format!("{{{name}}}"),
                        why: "which has no value here".into(),
                    })?;
                    out.push_str(value);
                    rest = &after[end + 1..];
                }
                None => {
                    out.push('{');
                    rest = after;
                }
            }
        }
        out.push_str(rest);
        Ok(out)
    }

    fn expand_all(&self, templates: &[String], what: &str) -> Result<Vec<String>, PlanError> {
        templates.iter().map(|t| self.expand(t, what)).collect()
    }
}

fn is_placeholder_name(name: &str) -> bool {
    let (head, tail) = name.split_once(':').unwrap_or((name, ""));
    !head.is_empty()
        && head.chars().all(|c| c.is_ascii_lowercase() || c == '_')
        && tail
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}
