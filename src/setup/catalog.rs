//! The providers `xx setup` knows by name: where each lives, the protocol it speaks, the
//! variable its key is usually kept in, and the models it gives each tier when the
//! provider lists them. The local model servers it looks for are model-scan's
//! ([`crate::gateway::scan::discover::LOCAL_SERVERS`]).

use crate::agent::Protocol;

pub struct Known {
    pub name: &'static str,
    pub label: &'static str,
    pub base_url: &'static str,
    pub format: Protocol,
    /// Where its key is looked for, in order.
    pub key_vars: &'static [&'static str],
    /// Models for the big, middle and small tiers: an exact id, or the start of one (the
    /// first listed id that starts with it).
    pub tiers: [&'static str; 3],
}

pub const KNOWN: &[Known] = &[
    Known {
        name: "openrouter",
        label: "OpenRouter",
        base_url: "https://openrouter.ai/api/v1",
        format: Protocol::Chat,
        key_vars: &["OPENROUTER_API_KEY"],
        tiers: [
            "qwen/qwen3-coder:free",
            "qwen/qwen3-coder:free",
            "z-ai/glm-4.5-air:free",
        ],
    },
    Known {
        name: "anthropic",
        label: "Anthropic",
        base_url: "https://api.anthropic.com",
        format: Protocol::Anthropic,
        key_vars: &["ANTHROPIC_API_KEY"],
        tiers: ["claude-opus-4", "claude-sonnet-4", "claude-haiku-4"],
    },
    Known {
        name: "openai",
        label: "OpenAI",
        base_url: "https://api.openai.com/v1",
        format: Protocol::Chat,
        key_vars: &["OPENAI_API_KEY"],
        tiers: ["gpt-5", "gpt-5-mini", "gpt-5-nano"],
    },
    Known {
        name: "gemini",
        label: "Gemini",
        base_url: "https://generativelanguage.googleapis.com",
        format: Protocol::Gemini,
        key_vars: &["GEMINI_API_KEY", "GOOGLE_API_KEY"],
        tiers: [
            "gemini-2.5-pro",
            "gemini-2.5-flash",
            "gemini-2.5-flash-lite",
        ],
    },
    Known {
        name: "deepseek",
        label: "DeepSeek",
        base_url: "https://api.deepseek.com/v1",
        format: Protocol::Chat,
        key_vars: &["DEEPSEEK_API_KEY"],
        tiers: ["deepseek-reasoner", "deepseek-chat", "deepseek-chat"],
    },
];

pub fn known(name: &str) -> Option<&'static Known> {
    KNOWN.iter().find(|k| k.name == name)
}

/// The variable a provider's key is kept in: the known one, or `<NAME>_API_KEY`.
pub fn key_var(name: &str) -> String {
    match known(name) {
        Some(k) => k.key_vars[0].to_string(),
        None => format!(
            "{}_API_KEY",
            name.to_ascii_uppercase().replace(['-', '.'], "_")
        ),
    }
}

/// The first of `name`'s key variables that is set, with its value.
pub fn key_from_env(name: &str) -> Option<(String, String)> {
    let vars: Vec<String> = match known(name) {
        Some(k) => k.key_vars.iter().map(|v| v.to_string()).collect(),
        None => vec![key_var(name)],
    };
    vars.into_iter().find_map(|var| {
        let value = std::env::var(&var).ok().filter(|v| !v.trim().is_empty())?;
        Some((var, value.trim().to_string()))
    })
}

/// The model for tier `index` (0 big, 1 middle, 2 small) out of what the provider lists.
pub fn pick_model(name: &str, listed: &[String], index: usize) -> Option<String> {
    if let Some(known) = known(name) {
        let wanted = known.tiers[index];
        if let Some(exact) = listed.iter().find(|m| *m == wanted) {
            return Some(exact.clone());
        }
        if let Some(newest) = listed.iter().find(|m| m.starts_with(wanted)) {
            return Some(newest.clone());
        }
        if listed.is_empty() {
            return Some(wanted.to_string());
        }
        // Free models come and go on OpenRouter; another free one, not a paid one.
        if wanted.ends_with(":free")
            && let Some(free) = listed.iter().find(|m| m.ends_with(":free"))
        {
            return Some(free.clone());
        }
    }
    listed.first().cloned()
}
