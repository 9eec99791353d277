//! The agent spec: one TOML file per agent in `agents/`, describing everything the launcher
//! needs to know about that CLI as data: binary, API protocol, how to point it at the gateway,
//! flags, and an argv template per mode. Adding an agent is adding a file.
//!
//! Templates are lists of strings. An element that is exactly `@bypass`, `@route`, `@model` or
//! `@extra` splices a list in (possibly empty); `{name}` inside an element substitutes a value
//! (`{prompt}`, `{session}`, `{model}`, `{route_model}`, `{gateway}`, `{gateway_origin}`,
//! `{key}`, `{key_env}`, `{profile}`, `{files_dir}`, `{file:name}`). Only a lower-case name in
//! braces is a placeholder, so JSON and JavaScript braces in file templates pass through.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The wire protocol an agent speaks to its model provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    /// Anthropic Messages (`/v1/messages`).
    Anthropic,
    /// OpenAI Chat Completions (`/v1/chat/completions`).
    Chat,
    /// OpenAI Responses (`/v1/responses`).
    Responses,
    /// Gemini (`/v1beta/models/{model}:streamGenerateContent`).
    Gemini,
}

impl Protocol {
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Anthropic => "anthropic",
            Protocol::Chat => "chat",
            Protocol::Responses => "responses",
            Protocol::Gemini => "gemini",
        }
    }
}

/// One agent CLI.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AgentSpec {
    /// Short identifier, also the file name (`claude` for `agents/claude.toml`).
    pub name: String,
    /// The first letter of a short code.
    pub letter: char,
    /// What people call it ("Claude Code").
    pub display_name: String,
    /// The executable looked up on PATH.
    pub binary: String,
    /// Other names the same executable is known by, tried in order after `binary`.
    #[serde(default)]
    pub alt_binaries: Vec<String>,
    /// The command that installs it, shown when the binary is missing.
    pub install: String,
    /// The version these facts were measured against; absent means the spec is unverified.
    #[serde(default)]
    pub verified: Option<String>,
    /// Where the facts come from, or what is known to be uncertain.
    #[serde(default)]
    pub notes: Option<String>,
    /// Arguments that print the version.
    #[serde(default = "default_version_args")]
    pub version_args: Vec<String>,
    /// The API the agent speaks on the gateway routes.
    pub protocol: Protocol,
    /// The gateway profile (`/p/<profile>`) the agent uses unless told otherwise.
    pub profile: String,
    /// The approval-bypass flag.
    #[serde(default)]
    pub bypass: Bypass,
    /// How a model is passed on the direct route (`["--model", "{model}"]`); empty: no flag.
    #[serde(default)]
    pub model_args: Vec<String>,
    /// Argv templates for every mode the agent supports.
    pub modes: Modes,
    /// How to point the agent at the gateway (proxy and bypass routes).
    pub gateway: GatewayRoute,
    /// What to remove from the environment on the direct route.
    #[serde(default)]
    pub direct: DirectRoute,
}

fn default_version_args() -> Vec<String> {
    vec!["--version".into()]
}

/// The approval-bypass flag and its known refusals.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Bypass {
    /// Arguments that turn approvals off; empty when the agent has no prompts to bypass.
    #[serde(default)]
    pub args: Vec<String>,
    /// The agent refuses these arguments when run as root.
    #[serde(default)]
    pub refused_as_root: bool,
    /// An environment variable that lifts the root refusal when set (`IS_SANDBOX` for Claude).
    #[serde(default)]
    pub root_override_env: Option<String>,
}

/// Argv templates, one per mode. A missing template means the agent cannot do that.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Modes {
    /// A new interactive session.
    pub init: Vec<String>,
    /// A new interactive session that starts with a first prompt.
    #[serde(default)]
    pub init_prompt: Option<Vec<String>>,
    /// Continue the most recent session, interactively.
    #[serde(default, rename = "continue")]
    pub continue_: Option<Vec<String>>,
    /// The agent's session picker.
    #[serde(default)]
    pub resume: Option<Vec<String>>,
    /// Resume the session `{session}`, interactively.
    #[serde(default)]
    pub resume_id: Option<Vec<String>>,
    /// Arguments that give a new interactive session the id `{session}` (a UUID clutch picks),
    /// so a session lost in a crash can be resumed by id rather than by "the latest one here".
    #[serde(default)]
    pub session_id: Option<Vec<String>>,
    /// Run `{prompt}` in a new session and exit.
    #[serde(default)]
    pub headless: Option<Vec<String>>,
    /// Run `{prompt}` in the most recent session and exit.
    #[serde(default)]
    pub headless_continue: Option<Vec<String>>,
    /// Run `{prompt}` in session `{session}` and exit.
    #[serde(default)]
    pub headless_resume_id: Option<Vec<String>>,
}

/// How the agent is pointed at the gateway.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayRoute {
    /// Variables to set (values are templates).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Inherited variables to remove because they would conflict or leak a real key.
    #[serde(default)]
    pub unset: Vec<String>,
    /// Arguments spliced in at `@route`.
    #[serde(default)]
    pub args: Vec<String>,
    /// How the model is passed on gateway routes; defaults to `model_args` when a model is set.
    #[serde(default)]
    pub model_args: Option<Vec<String>>,
    /// The model name the agent asks the gateway for when none is chosen (`{route_model}`);
    /// needed by agents that will not start without a model in their provider config.
    #[serde(default)]
    pub default_model: Option<String>,
    /// Files clutch writes (under its own directories) before launch.
    #[serde(default)]
    pub files: Vec<FileSpec>,
}

/// A file clutch writes for the agent.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FileSpec {
    /// Referenced from templates as `{file:NAME}`.
    pub name: String,
    /// Path relative to this agent's clutch-owned files directory (a template).
    pub path: String,
    /// Contents (a template).
    pub content: String,
    /// The file holds the gateway key: written with mode 0600.
    #[serde(default)]
    pub secret: bool,
}

/// What the direct route removes.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DirectRoute {
    /// Variables that would redirect this agent away from its own provider.
    #[serde(default)]
    pub unset: Vec<String>,
}

impl AgentSpec {
    /// Parse and check one spec file; `origin` names it in errors.
    pub fn from_toml(text: &str, origin: &str) -> Result<AgentSpec, crate::config::ConfigError> {
        let spec: AgentSpec = crate::config::parse_toml(text, origin)?;
        spec.check(origin)?;
        Ok(spec)
    }

    fn check(&self, origin: &str) -> Result<(), crate::config::ConfigError> {
        let invalid = |field: &str, why: String| crate::config::ConfigError::Invalid {
            origin: origin.to_string(),
            field: field.to_string(),
            message: why,
        };
        if !self.letter.is_ascii_lowercase() {
            return Err(invalid(
                "letter",
                format!("`{}` must be one lower-case ASCII letter", self.letter),
            ));
        }
        if self.name.is_empty()
            || !self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-')
        {
            return Err(invalid(
                "name",
                "must be non-empty and use only letters, digits and `-`".into(),
            ));
        }
        let files: Vec<&str> = self.gateway.files.iter().map(|f| f.name.as_str()).collect();
        for (mode, template) in self.templates() {
            for element in template {
                if element.starts_with('@')
                    && !matches!(element.as_str(), "@bypass" | "@route" | "@model" | "@extra")
                {
                    return Err(invalid(
                        &format!("modes.{mode}"),
                        format!("unknown splice `{element}` (use @bypass, @route, @model, @extra)"),
                    ));
                }
            }
        }
        for template in self.gateway.env.values().chain(&self.gateway.args) {
            for file in referenced_files(template) {
                if !files.contains(&file) {
                    return Err(invalid(
                        "gateway",
                        format!("`{{file:{file}}}` names no [[gateway.files]] entry"),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Every mode template, with its name.
    pub fn templates(&self) -> Vec<(&'static str, &Vec<String>)> {
        let m = &self.modes;
        let mut out = vec![("init", &m.init)];
        let optional = [
            ("init_prompt", &m.init_prompt),
            ("continue", &m.continue_),
            ("resume", &m.resume),
            ("resume_id", &m.resume_id),
            ("headless", &m.headless),
            ("headless_continue", &m.headless_continue),
            ("headless_resume_id", &m.headless_resume_id),
            ("session_id", &m.session_id),
        ];
        out.extend(
            optional
                .into_iter()
                .filter_map(|(n, t)| t.as_ref().map(|t| (n, t))),
        );
        out
    }

    /// All executable names to look for, preferred first.
    pub fn binaries(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.binary.as_str()).chain(self.alt_binaries.iter().map(String::as_str))
    }
}

fn referenced_files(template: &str) -> impl Iterator<Item = &str> {
    template.match_indices("{file:").filter_map(|(at, _)| {
        let rest = &template[at + 6..];
        rest.find('}').map(|end| &rest[..end])
    })
}
