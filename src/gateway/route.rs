//! Routing profiles (`profiles/*.toml`, selected by `/p/<profile>`) and the step that picks
//! the upstream for a request: exact `model_map` entries, explicit `provider|model`
//! references, models a provider lists, then family patterns (`*opus*`) to a tier.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use super::ir::{ApiError, ErrorKind};
use crate::config::{ConfigError, ProviderConfig, parse_toml};

/// One routing profile.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    #[serde(default)]
    pub description: Option<String>,
    /// The tier for requested models no pattern matches.
    #[serde(default = "default_tier")]
    pub default_tier: String,
    /// Tier name -> its model.
    #[serde(default)]
    pub tiers: BTreeMap<String, TierSpec>,
    /// Glob on the requested model (`*` only, case-insensitive) -> tier name.
    #[serde(default)]
    pub families: BTreeMap<String, String>,
    /// Exact requested model -> `provider|model`.
    #[serde(default)]
    pub model_map: BTreeMap<String, String>,
    /// Scene -> a tier name or a `provider|model`, overriding the family's tier.
    #[serde(default)]
    pub scenes: Scenes,
    /// Models tried first when the request offers tools and no other scene applies.
    #[serde(default)]
    pub toolcall_models: Vec<String>,
    /// Estimated prompt tokens above which the long-context scene applies.
    #[serde(default = "default_long_context")]
    pub long_context_threshold: u64,
    /// Tool-output compression for requests under this profile (over `[compress]`).
    #[serde(default)]
    pub compress: Option<crate::config::CompressOverride>,
}

/// Scene overrides, checked in this order: long context, background, web search, think,
/// image; then tool calls (via `toolcall_models`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenes {
    #[serde(default)]
    pub long_context: Option<String>,
    #[serde(default)]
    pub background: Option<String>,
    #[serde(default)]
    pub web_search: Option<String>,
    #[serde(default)]
    pub think: Option<String>,
    #[serde(default)]
    pub image: Option<String>,
}

fn default_long_context() -> u64 {
    60_000
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TierSpec {
    /// `provider|model`, or a model name a provider lists.
    pub model: String,
    /// Tried in order when the model fails.
    #[serde(default)]
    pub cascade: Vec<String>,
}

fn default_tier() -> String {
    "middle".into()
}

/// Where one request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub provider: String,
    pub model: String,
}

/// All profiles: built in, with the user's `profiles/` dir laid over them.
#[derive(Debug, Clone)]
pub struct Profiles {
    profiles: BTreeMap<String, Profile>,
    /// Profiles the agents' launches name; without a file of their own they use `default`.
    agent_profiles: Vec<String>,
    /// Each profile's file and text, so a mistake found later is reported at its line.
    sources: BTreeMap<String, (String, String)>,
}

impl Profiles {
    pub fn load(user_dir: &Path) -> Result<Profiles, ConfigError> {
        let mut profiles = BTreeMap::new();
        let mut sources = BTreeMap::new();
        for (stem, text) in crate::embedded::BUILTIN_PROFILES {
            let origin = format!("profiles/{stem}.toml (built in)");
            let profile: Profile = parse_toml(text, &origin)?;
            profiles.insert(stem.to_string(), profile);
            sources.insert(stem.to_string(), (origin, text.to_string()));
        }
        if let Ok(entries) = std::fs::read_dir(user_dir) {
            let mut paths: Vec<_> = entries.filter_map(Result::ok).map(|e| e.path()).collect();
            paths.retain(|p| p.extension().is_some_and(|e| e == "toml"));
            paths.sort();
            for path in paths {
                let origin = path.display().to_string();
                let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
                    path: origin.clone(),
                    source,
                })?;
                let profile: Profile = parse_toml(&text, &origin)?;
                let stem = path
                    .file_stem()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned();
                profiles.insert(stem.clone(), profile);
                sources.insert(stem, (origin, text));
            }
        }
        let agent_profiles = crate::agent::Registry::builtin()?
            .iter()
            .map(|(spec, _)| spec.profile.clone())
            .collect();
        Ok(Profiles {
            profiles,
            agent_profiles,
            sources,
        })
    }

    /// Check every reference against the providers, so a typo fails at start-up.
    pub fn check(&self, providers: &BTreeMap<String, ProviderConfig>) -> Result<(), ConfigError> {
        for (name, profile) in &self.profiles {
            let origin_of = |target: &str| match self.sources.get(name) {
                Some((file, text)) => {
                    let line = text
                        .lines()
                        .position(|l| l.contains(&format!("\"{target}\"")))
                        .map_or(1, |i| i + 1);
                    format!("{file}:{line} (profile `{name}`)")
                }
                None => format!("profile `{name}`"),
            };
            let targets = profile
                .tiers
                .iter()
                .map(|(t, spec)| (format!("tiers.{t}.model"), &spec.model))
                .chain(
                    profile
                        .model_map
                        .iter()
                        .map(|(k, v)| (format!("model_map.\"{k}\""), v)),
                );
            let scan_references = profile
                .tiers
                .iter()
                .flat_map(|(t, spec)| {
                    std::iter::once((format!("tiers.{t}.model"), &spec.model)).chain(
                        spec.cascade
                            .iter()
                            .map(move |c| (format!("tiers.{t}.cascade"), c)),
                    )
                })
                .chain(
                    profile
                        .toolcall_models
                        .iter()
                        .map(|m| ("toolcall_models".to_string(), m)),
                );
            for (field, reference) in scan_references {
                if let Some(Err(message)) = scan_reference(reference) {
                    return Err(ConfigError::Invalid {
                        origin: origin_of(reference),
                        field,
                        message,
                    });
                }
            }
            for (field, target) in targets {
                if scan_reference(target).is_some() {
                    continue;
                }
                if let Some((provider, _)) = target.split_once('|')
                    && !providers.contains_key(provider)
                {
                    return Err(ConfigError::Invalid {
                        origin: origin_of(target),
                        field,
                        message: format!(
                            "names provider `{provider}`, which is not configured (known: {})",
                            providers.keys().cloned().collect::<Vec<_>>().join(", ")
                        ),
                    });
                }
            }
            for tier in profile
                .families
                .values()
                .chain(std::iter::once(&profile.default_tier))
            {
                if !profile.tiers.contains_key(tier) {
                    return Err(ConfigError::Invalid {
                        origin: origin_of(tier),
                        field: "families".into(),
                        message: format!("uses tier `{tier}`, which has no [tiers.{tier}] entry"),
                    });
                }
            }
        }
        Ok(())
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &Profile)> {
        self.profiles.iter()
    }

    /// Where profile `name` was read from: its file, or `built in`.
    pub fn origin(&self, name: &str) -> &str {
        self.sources
            .get(name)
            .map_or("built in", |(origin, _)| origin.as_str())
    }

    /// The profile for a `/p/<name>` path; `None` for the plain paths means `default`.
    pub fn get(&self, name: Option<&str>) -> Result<(&str, &Profile), ApiError> {
        let wanted = name.unwrap_or("default");
        if let Some((key, profile)) = self.profiles.get_key_value(wanted) {
            return Ok((key, profile));
        }
        let base = wanted.strip_suffix("-bypass").unwrap_or(wanted);
        if let Some((key, profile)) = self.profiles.get_key_value(base) {
            return Ok((key, profile));
        }
        if self.agent_profiles.iter().any(|p| p == base)
            && let Some((key, profile)) = self.profiles.get_key_value("default")
        {
            return Ok((key, profile));
        }
        Err(ApiError::new(
            ErrorKind::NotFound,
            format!(
                "no routing profile `{wanted}` (known: {}); add profiles/{wanted}.toml to the clutch config dir",
                self.profiles.keys().cloned().collect::<Vec<_>>().join(", ")
            ),
        ))
    }
}

/// `*`-only glob, case-insensitive.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let pattern = pattern.to_lowercase();
    let text = text.to_lowercase();
    let pieces: Vec<&str> = pattern.split('*').collect();
    let mut rest = text.as_str();
    for (i, piece) in pieces.iter().enumerate() {
        if piece.is_empty() {
            continue;
        }
        if i == 0 {
            match rest.strip_prefix(piece) {
                Some(r) => rest = r,
                None => return false,
            }
        } else if i == pieces.len() - 1 {
            return rest.ends_with(piece);
        } else {
            match rest.find(piece) {
                Some(at) => rest = &rest[at + piece.len()..],
                None => return false,
            }
        }
    }
    pieces.last().is_none_or(|p| p.is_empty()) || pieces.len() == 1 && rest.is_empty()
}

/// Which scene overrode the family's tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scene {
    LongContext,
    Background,
    WebSearch,
    Think,
    Image,
    ToolCall,
}

impl Scene {
    pub fn name(self) -> &'static str {
        match self {
            Scene::LongContext => "long_context",
            Scene::Background => "background",
            Scene::WebSearch => "web_search",
            Scene::Think => "think",
            Scene::Image => "image",
            Scene::ToolCall => "tool_call",
        }
    }
}

/// What model-scan adds to a plan: the snapshot in force (its ranked candidates fill
/// `scan:<kind>` entries) and the blocklists (the config's and the snapshot's), which apply to
/// every candidate.
#[derive(Debug, Clone, Copy, Default)]
pub struct Ranked<'a> {
    pub snapshot: Option<&'a crate::gateway::scan::snapshot::Snapshot>,
    pub blocklist: &'a [String],
    /// Why no snapshot is in force, for the error when a plan needs one.
    pub missing: Option<&'a str>,
}

impl Ranked<'_> {
    fn blocked(&self, target: &Target) -> bool {
        crate::gateway::scan::snapshot::blocked(self.blocklist, &target.provider, &target.model)
            || self
                .snapshot
                .is_some_and(|s| s.blocked(&target.provider, &target.model))
    }
}

/// Ranked models a `scan:<kind>` entry stands for when no count is given.
pub const SCAN_DEFAULT_COUNT: usize = 3;

/// `scan:<kind>` or `scan:<kind>:<count>`: None when `reference` is not one, else the kind and
/// count or what is wrong with it.
pub fn scan_reference(reference: &str) -> Option<Result<(crate::code::ScanKind, usize), String>> {
    let rest = reference.strip_prefix("scan:")?;
    let (kind, count) = match rest.split_once(':') {
        Some((kind, count)) => (kind, Some(count)),
        None => (rest, None),
    };
    let Some(kind) = crate::gateway::scan::snapshot::kind_named(kind) else {
        return Some(Err(format!(
            "`{reference}`: `{kind}` is not a model-scan kind (best, free, tool, reasoning, verifier, fast)"
        )));
    };
    let count = match count {
        None => SCAN_DEFAULT_COUNT,
        Some(count) => match count.parse::<usize>() {
            Ok(n) if (1..=20).contains(&n) => n,
            _ => {
                return Some(Err(format!(
                    "`{reference}`: the count after the kind must be a number from 1 to 20"
                )));
            }
        },
    };
    Some(Ok((kind, count)))
}

/// The ordered, de-duplicated upstreams to try for one request.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub tier: Option<String>,
    pub scene: Option<Scene>,
    pub candidates: Vec<Target>,
    /// Candidates left out because their context window cannot hold the request.
    pub too_small: Vec<Target>,
}

const WEB_SEARCH_TOOLS: [&str; 6] = [
    "web_search",
    "search_web",
    "brave_search",
    "exa_search",
    "google_search",
    "perplexity",
];
/// Tokens kept free for the answer when checking context windows.
const CONTEXT_RESERVE: u64 = 4096;

/// The candidates for `request`: an explicit model first (a `model_map` entry, a
/// `provider|model`, or a model a provider lists); else the first scene that applies; else
/// tool-call models when tools are offered; then the tier's model and its cascade.
/// `estimate` is the request's [`estimate_tokens`](crate::gateway::ir::Request::estimate_tokens).
/// `bypass` keeps the requested model and nothing else (the bypass route).
pub fn plan(
    profile: &Profile,
    request: &crate::gateway::ir::Request,
    estimate: u64,
    bypass: bool,
    providers: &BTreeMap<String, ProviderConfig>,
    ranked: Ranked<'_>,
) -> Result<Plan, ApiError> {
    let requested = request.model.as_str();
    let target_of = |reference: &str| -> Result<Target, ApiError> {
        if let Some((provider, model)) = reference.split_once('|') {
            if !providers.contains_key(provider) {
                return Err(ApiError::invalid(format!(
                    "model `{reference}` names provider `{provider}`, which is not configured"
                )));
            }
            return Ok(Target {
                provider: provider.to_string(),
                model: model.to_string(),
            });
        }
        let listed = providers
            .iter()
            .find(|(_, p)| p.models.contains_key(reference));
        let provider = listed.map_or("openrouter", |(name, _)| name.as_str());
        Ok(Target {
            provider: provider.to_string(),
            model: reference.to_string(),
        })
    };
    if bypass {
        return Ok(Plan {
            tier: None,
            scene: None,
            candidates: vec![target_of(requested)?],
            too_small: Vec::new(),
        });
    }
    // An explicit model: a `model_map` entry, a `provider|model`, a model a provider lists, or
    // an `owner/model` id (what the launcher's tier letters and `-m` pass) that no family
    // pattern claims.
    let family_match = profile
        .families
        .iter()
        .any(|(pattern, _)| glob_match(pattern, requested));
    let explicit = profile.model_map.get(requested).cloned().or_else(|| {
        (requested.contains('|')
            || providers.values().any(|p| p.models.contains_key(requested))
            || (requested.contains('/') && !family_match))
            .then(|| requested.to_string())
    });
    let family = profile
        .families
        .iter()
        .find(|(pattern, _)| glob_match(pattern, requested))
        .map_or(profile.default_tier.clone(), |(_, tier)| tier.clone());
    let scenes = &profile.scenes;
    let has_image = request
        .messages
        .iter()
        .flat_map(|m| &m.parts)
        .any(|p| matches!(p, crate::gateway::ir::Part::Image { .. }));
    let web_search = request.tools.iter().any(|t| {
        let name = t.name.to_lowercase();
        WEB_SEARCH_TOOLS.iter().any(|w| name.contains(w))
    });
    let background = family == "small" || request.max_tokens.is_some_and(|m| m <= 256);
    let checks: [(Scene, bool, &Option<String>); 5] = [
        (
            Scene::LongContext,
            estimate > profile.long_context_threshold,
            &scenes.long_context,
        ),
        (Scene::Background, background, &scenes.background),
        (Scene::WebSearch, web_search, &scenes.web_search),
        (Scene::Think, request.reasoning.is_some(), &scenes.think),
        (Scene::Image, has_image, &scenes.image),
    ];
    let mut references: Vec<String> = Vec::new();
    let mut scene = None;
    let mut tier = family.clone();
    match explicit {
        Some(reference) => references.push(reference),
        None => {
            if let Some((found, _, Some(value))) = checks
                .iter()
                .find(|(_, applies, value)| *applies && value.is_some())
            {
                scene = Some(*found);
                if profile.tiers.contains_key(value.as_str()) {
                    tier = value.clone();
                } else {
                    references.push(value.clone());
                }
            } else if !request.tools.is_empty() && !profile.toolcall_models.is_empty() {
                scene = Some(Scene::ToolCall);
                references.extend(profile.toolcall_models.iter().cloned());
            }
        }
    }
    let spec = profile.tiers.get(&tier).ok_or_else(|| {
        ApiError::new(
            ErrorKind::Api,
            format!("the routing profile has no [tiers.{tier}]"),
        )
    })?;
    references.push(spec.model.clone());
    references.extend(spec.cascade.iter().cloned());

    let mut targets: Vec<Target> = Vec::new();
    let mut scan_wanted = false;
    for reference in references {
        match scan_reference(&reference) {
            None => targets.push(target_of(&reference)?),
            Some(Err(message)) => return Err(ApiError::invalid(message)),
            Some(Ok((kind, count))) => {
                scan_wanted = true;
                let Some(snapshot) = ranked.snapshot else {
                    continue;
                };
                // Tool-capable models only when the request offers tools.
                targets.extend(
                    snapshot
                        .ranked(kind)
                        .filter(|c| request.tools.is_empty() || c.has_tools)
                        .filter(|c| providers.contains_key(&c.provider))
                        .take(count)
                        .map(|c| Target {
                            provider: c.provider.clone(),
                            model: c.model_id.clone(),
                        }),
                );
            }
        }
    }
    let mut candidates: Vec<Target> = Vec::new();
    let mut too_small = Vec::new();
    let mut blocked = Vec::new();
    for target in targets {
        if candidates.contains(&target) || too_small.contains(&target) || blocked.contains(&target)
        {
            continue;
        }
        if ranked.blocked(&target) {
            blocked.push(target);
            continue;
        }
        let window = providers
            .get(&target.provider)
            .and_then(|p| p.models.get(&target.model))
            .and_then(|m| m.context_window);
        match window {
            Some(window) if (window as f64 * 0.9) < (estimate + CONTEXT_RESERVE) as f64 => {
                too_small.push(target)
            }
            _ => candidates.push(target),
        }
    }
    let named = |targets: &[Target]| {
        targets
            .iter()
            .map(|t| format!("{}|{}", t.provider, t.model))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if candidates.is_empty() && too_small.is_empty() {
        let why = if !blocked.is_empty() {
            format!(
                "every candidate is on the model-scan blocklist ({}); change scan.blocklist in config.toml or pick another model",
                named(&blocked)
            )
        } else if scan_wanted {
            format!(
                "the routing profile asks for model-scan models and none is ranked: {}",
                ranked
                    .missing
                    .unwrap_or("no model-scan snapshot yet; run `xx scan refresh`")
            )
        } else {
            "the routing profile names no model for this request".to_string()
        };
        return Err(ApiError::new(ErrorKind::Api, why));
    }
    if candidates.is_empty() {
        return Err(ApiError::invalid(format!(
            "the request (about {estimate} tokens) is larger than the context window of every candidate model ({})",
            too_small
                .iter()
                .map(|t| format!("{}|{}", t.provider, t.model))
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    Ok(Plan {
        tier: Some(tier),
        scene,
        candidates,
        too_small,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match("*opus*", "claude-opus-5-5"));
        assert!(glob_match("*OPUS*", "claude-opus"));
        assert!(!glob_match("*opus*", "claude-sonnet"));
        assert!(glob_match("claude-*", "claude-x"));
        assert!(!glob_match("claude-*", "x-claude"));
        assert!(glob_match("*-mini", "gpt-mini"));
        assert!(glob_match("exact", "exact"));
        assert!(!glob_match("exact", "exactly"));
        assert!(glob_match("*", "anything"));
        assert!(glob_match("a*b*c", "a-x-b-y-c"));
        assert!(!glob_match("a*b*c", "a-x-c-y-b"));
    }
}
