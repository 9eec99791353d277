//! The set of known agents: the specs built into the binary, each replaced by a file of the
//! same name in the user's `agents/` config dir, plus any new agents found there.

use std::path::Path;

use super::spec::AgentSpec;
use crate::config::ConfigError;

/// Where a spec came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    BuiltIn,
    User(String),
}

/// All known agents, in letter order.
#[derive(Debug, Clone)]
pub struct Registry {
    agents: Vec<(AgentSpec, Origin)>,
}

impl Registry {
    /// The built-in specs only.
    pub fn builtin() -> Result<Registry, ConfigError> {
        let mut agents = Vec::new();
        for (stem, text) in crate::embedded::BUILTIN_AGENTS {
            let spec = AgentSpec::from_toml(text, &format!("agents/{stem}.toml (built in)"))?;
            agents.push((spec, Origin::BuiltIn));
        }
        Registry::new(agents)
    }

    /// The built-in specs with the user's `dir` laid over them.
    pub fn load(dir: &Path) -> Result<Registry, ConfigError> {
        let mut registry = Registry::builtin()?;
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(registry),
            Err(source) => {
                return Err(ConfigError::Read {
                    path: dir.display().to_string(),
                    source,
                });
            }
        };
        let mut paths: Vec<_> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "toml"))
            .collect();
        paths.sort();
        for path in paths {
            let origin = path.display().to_string();
            let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
                path: origin.clone(),
                source,
            })?;
            let spec = AgentSpec::from_toml(&text, &origin)?;
            let stem = path.file_stem().unwrap_or_default().to_string_lossy();
            if spec.name != stem {
                return Err(ConfigError::Invalid {
                    origin,
                    field: "name".into(),
                    message: format!("is `{}` but the file is named `{stem}.toml`", spec.name),
                });
            }
            registry.agents.retain(|(s, _)| s.name != spec.name);
            registry.agents.push((spec, Origin::User(origin)));
        }
        Registry::new(registry.agents)
    }

    fn new(mut agents: Vec<(AgentSpec, Origin)>) -> Result<Registry, ConfigError> {
        agents.sort_by_key(|(s, _)| s.letter);
        for pair in agents.windows(2) {
            let (a, b) = (&pair[0], &pair[1]);
            if a.0.letter == b.0.letter {
                let origin = match &b.1 {
                    Origin::User(path) => path.clone(),
                    Origin::BuiltIn => format!("agents/{}.toml", b.0.name),
                };
                return Err(ConfigError::Invalid {
                    origin,
                    field: "letter".into(),
                    message: format!(
                        "`{}` is already used by {}; pick a free letter",
                        b.0.letter, a.0.display_name
                    ),
                });
            }
        }
        Ok(Registry { agents })
    }

    pub fn by_letter(&self, letter: char) -> Option<&AgentSpec> {
        self.agents
            .iter()
            .map(|(s, _)| s)
            .find(|s| s.letter == letter)
    }

    pub fn by_name(&self, name: &str) -> Option<&AgentSpec> {
        self.agents.iter().map(|(s, _)| s).find(|s| s.name == name)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&AgentSpec, &Origin)> {
        self.agents.iter().map(|(s, o)| (s, o))
    }

    /// (letter, display name) pairs, for the code parser and its error messages.
    pub fn letters(&self) -> Vec<(char, &str)> {
        self.agents
            .iter()
            .map(|(s, _)| (s.letter, s.display_name.as_str()))
            .collect()
    }
}
